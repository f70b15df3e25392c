"""
The breakdown benchmark runs (a quick smoke run), so it cannot rot.  Its
figures are not judged: speed is measured by benchmarks, never asserted in
tests.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from twisted.trial.unittest import TestCase

from tests.integration.support import run_quick


class BreakdownSmokeTests(TestCase):
    timeout = 120

    @defer.inlineCallbacks
    def test_quick_run(self) -> Any:
        """
        `python -m benchmarks.breakdown --quick --json PATH` exits 0, prints
        every layer and the profile's shares, and writes them: each layer ran
        events through (events/s above zero) and the shares add up to one.
        """
        text, figures = yield run_quick(self, "benchmarks.breakdown")
        for row in (
            "harness",
            "dispatcher, in-memory pool",
            "AMP RunBatch round trips",
            "local pool, submit",
            "dispatcher, real children",
            "by area",
        ):
            self.assertIn(row, text)
        self.assertEqual(len(figures["layers"]), 5)
        self.assertTrue(all(row["events_per_s"] > 0 for row in figures["layers"]))
        self.assertAlmostEqual(sum(figures["profile_shares"].values()), 1.0)
