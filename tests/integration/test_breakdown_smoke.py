"""
The breakdown benchmark runs (a quick smoke run), so it cannot rot.  Its
figures are not judged: speed is measured by benchmarks, never asserted in
tests.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from twisted.internet import defer, utils
from twisted.trial.unittest import TestCase

ROOT = Path(__file__).resolve().parents[2]


class BreakdownSmokeTests(TestCase):
    timeout = 120

    @defer.inlineCallbacks
    def test_quick_run(self) -> Any:
        """
        `python -m benchmarks.breakdown --quick --json PATH` exits 0, prints
        every layer and the profile's shares, and writes them: each layer ran
        events through (events/s above zero) and the shares add up to one.
        """
        workdir = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, workdir)
        path = Path(workdir) / "breakdown.json"
        out, err, code = yield utils.getProcessOutputAndValue(
            sys.executable,
            ["-m", "benchmarks.breakdown", "--quick", "--json", str(path)],
            env=dict(os.environ),
            path=str(ROOT),
        )
        text = out.decode()
        self.assertEqual(code, 0, err.decode()[-2000:])
        for row in (
            "harness",
            "dispatcher, in-memory pool",
            "AMP RunBatch round trips",
            "local pool, submit",
            "dispatcher, real children",
            "by area",
        ):
            self.assertIn(row, text)
        figures = json.loads(path.read_text())
        self.assertEqual(len(figures["layers"]), 5)
        self.assertTrue(all(row["events_per_s"] > 0 for row in figures["layers"]))
        self.assertAlmostEqual(sum(figures["profile_shares"].values()), 1.0)
