"""
The sweep benchmark runs (a quick smoke run), so it cannot rot.  Nothing here
judges its figures: speed is measured by the benchmark, never asserted in tests.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from twisted.trial.unittest import TestCase

from tests.integration.support import run_quick


class SweepsSmokeTests(TestCase):
    timeout = 120

    @defer.inlineCallbacks
    def test_quick_run(self) -> Any:
        """
        `python -m benchmarks.sweeps --quick` exits 0 and prints every sweep's
        table, the replacement, 1 MiB and routing figures, and the targets.
        """
        text, _ = yield run_quick(self, "benchmarks.sweeps", figures=False)
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
