"""
The codec benchmark runs (a quick smoke run), so it cannot rot.  Its figures
are not judged: speed is measured by benchmarks, never asserted in tests.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from twisted.trial.unittest import TestCase

from tests.integration.support import run_quick


class CodecBenchSmokeTests(TestCase):
    timeout = 120

    @defer.inlineCallbacks
    def test_quick_run(self) -> Any:
        """
        `python -m benchmarks.bench_codec --quick --json PATH` exits 0, prints
        both tables and writes them: every shape timed for every library, the
        standard library agreeing with itself, msgspec (which the codec decodes
        with) agreeing with it on every decode, and the codec's own steps timed
        against the standard library's.
        """
        text, figures = yield run_quick(self, "benchmarks.bench_codec")
        self.assertIn("Libraries", text)
        self.assertIn("The codec as adopted", text)
        self.assertEqual(figures["libraries"], ["json", "orjson", "msgspec"])
        shapes = {row["shape"] for row in figures["rows"]}
        self.assertEqual(
            shapes, {"small", "nested", "text", "blob", "big ints", "records"}
        )
        for row in figures["rows"]:
            self.assertTrue(row["json"]["same"])
            self.assertGreater(row["json"]["us"], 0)
            if row["op"] == "decode":
                self.assertTrue(row["msgspec"]["same"], row["shape"])
        self.assertEqual(len(figures["adopted"]), 11)
        for row in figures["adopted"]:
            self.assertGreater(row["us"], 0)
            self.assertGreater(row["stdlib_us"], 0)
