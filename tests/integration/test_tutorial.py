"""
The tutorial (docs/tutorial.rst) is a doctest with real child processes; the
suite runs it so that it cannot rot.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

ROOT = Path(__file__).resolve().parents[2]
TUTORIAL = ROOT / "docs" / "tutorial.rst"

# In a process of its own: the tutorial runs a reactor in a thread (crochet),
# which must not meet the reactor of the process running the tests.
RUN_DOCTEST = """\
import doctest, sys
failed, attempted = doctest.testfile(sys.argv[1], module_relative=False)
print(f"{attempted} examples, {failed} failed")
sys.exit(1 if failed or not attempted else 0)
"""


class TutorialTests(SynchronousTestCase):
    def test_tutorial_doctest_passes(self) -> None:
        """
        Every example of docs/tutorial.rst gives the output the page shows,
        with a real dispatcher and real children, and the run ends on its own
        (the tutorial stops the dispatcher) well within its time limit.
        """
        try:
            finished = subprocess.run(
                [sys.executable, "-c", RUN_DOCTEST, str(TUTORIAL)],
                cwd=ROOT,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=60,
            )
        except subprocess.TimeoutExpired as e:
            self.fail(f"the tutorial did not finish within 60 s:\n{e.stdout}")
        report = f"stdout:\n{finished.stdout}\nstderr:\n{finished.stderr}"
        self.assertEqual(finished.returncode, 0, report)
        self.assertRegex(finished.stdout, r"\b[1-9]\d* examples, 0 failed\n\Z")
