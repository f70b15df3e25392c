"""
The benchmark script runs (a quick smoke run), so it cannot rot.  Nothing here
judges its figures: speed is measured by the benchmark, never asserted in tests.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from twisted.trial.unittest import TestCase

from tests.integration.support import run_quick


class BenchmarkSmokeTests(TestCase):
    timeout = 120

    @defer.inlineCallbacks
    def test_quick_run(self) -> Any:
        """
        `python -m benchmarks.bench_dispatch --quick --json PATH` exits 0, prints
        the table with every mechanism and the targets, and writes the figures.
        """
        text, figures = yield run_quick(self, "benchmarks.bench_dispatch")
        for row in (
            "dispatcher serial",
            "dispatcher max_in_flight=64",
            "ampoule naive",
            "ProcessPoolExecutor(2)",
            "in-process call",
            "100,000 handlers",
            "routing with operators",
            "targets:",
        ):
            self.assertIn(row, text)
        names = [m["mechanism"] for m in figures["mechanisms"]]
        self.assertIn("dispatcher max_in_flight=64", names)
        self.assertTrue(all(m["events_per_s"] > 0 for m in figures["mechanisms"]))
        self.assertGreater(figures["routing_operators"]["ratio"], 0)
