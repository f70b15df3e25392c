"""
The soak script runs (a quick smoke run), so it cannot rot.  Its checks are
real: a lost or duplicated outcome makes it exit non-zero, and so fails this
test; its figures (events/s) are never judged here.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from twisted.trial.unittest import TestCase

from tests.integration.support import run_quick


class SoakSmokeTests(TestCase):
    timeout = 60

    @defer.inlineCallbacks
    def test_quick_run(self) -> Any:
        """
        `python -m benchmarks.soak --quick` (children crashing, hanging,
        returning oversized results and raising at random) exits 0, prints its
        ledger line with nothing lost or duplicated, and every check passes.
        """
        text, _ = yield run_quick(self, "benchmarks.soak", figures=False)
        ledger = [line for line in text.splitlines() if line.startswith("ledger:")]
        self.assertEqual(len(ledger), 1, text)
        self.assertIn(" lost=0 duplicated=0", ledger[0])
        self.assertNotIn("FAIL", text)
        self.assertIn("soak: PASS", text)
