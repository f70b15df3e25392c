"""
The sweep benchmark runs (a quick smoke run), so it cannot rot.  Nothing here
judges its figures: speed is measured by the benchmark, never asserted in tests.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from twisted.internet import defer, utils
from twisted.trial.unittest import TestCase

ROOT = Path(__file__).resolve().parents[2]


class SweepsSmokeTests(TestCase):
    timeout = 120

    @defer.inlineCallbacks
    def test_quick_run(self) -> Any:
        """
        `python -m benchmarks.sweeps --quick` exits 0 and prints every sweep's
        table, the replacement, 1 MiB and routing figures, and the targets.
        """
        out, err, code = yield utils.getProcessOutputAndValue(
            sys.executable,
            ["-m", "benchmarks.sweeps", "--quick"],
            env=dict(os.environ),
            path=str(ROOT),
        )
        text = out.decode()
        self.assertEqual(code, 0, err.decode()[-2000:])
        for heading in (
            "sweep: number of children",
            "sweep: payload size",
            "sweep: fan-out",
            "sweep: max_in_flight",
            "child replacement",
            "1 MiB event end to end",
            "routing at scale",
            "targets:",
        ):
            self.assertIn(heading, text)
