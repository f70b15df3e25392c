"""
The benchmark script runs (a quick smoke run), so it cannot rot.  Nothing here
judges its figures: speed is measured by the benchmark, never asserted in tests.
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


class BenchmarkSmokeTests(TestCase):
    timeout = 120

    @defer.inlineCallbacks
    def test_quick_run(self) -> Any:
        """
        `python -m benchmarks.bench_dispatch --quick --json PATH` exits 0, prints
        the table with every mechanism and the targets, and writes the figures.
        """
        workdir = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, workdir)
        path = Path(workdir) / "figures.json"
        out, err, code = yield utils.getProcessOutputAndValue(
            sys.executable,
            ["-m", "benchmarks.bench_dispatch", "--quick", "--json", str(path)],
            env=dict(os.environ),
            path=str(ROOT),
        )
        text = out.decode()
        self.assertEqual(code, 0, err.decode()[-2000:])
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
        figures = json.loads(path.read_text())
        names = [m["mechanism"] for m in figures["mechanisms"]]
        self.assertIn("dispatcher max_in_flight=64", names)
        self.assertTrue(all(m["events_per_s"] > 0 for m in figures["mechanisms"]))
        self.assertGreater(figures["routing_operators"]["ratio"], 0)
