"""
The docs' examples run, with real children, so they cannot rot.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any

from twisted.internet import defer, reactor
from twisted.trial.unittest import TestCase

EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "examples"


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        f"docs_example_{name}", EXAMPLES / f"{name}.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class ReadmeScenarioTests(TestCase):
    timeout = 60

    @defer.inlineCallbacks
    def test_readme_scenario(self) -> Any:
        """
        docs/examples/readme_scenario.py runs the three phases in children and
        prints what notify_admin returned.
        """
        lines: list[str] = []
        result = yield load("readme_scenario").main(reactor, out=lines.append)
        self.assertTrue(result.ok)
        self.assertEqual(
            [o.phase for o in result.outcomes], ["before", "during", "after"]
        )
        self.assertEqual(
            lines[-1],
            "notify_admin (handler 1) said: "
            "'admin notified: user bob (1234) user_created'",
        )


class ControlExampleTests(TestCase):
    timeout = 60

    @defer.inlineCallbacks
    def test_control(self) -> Any:
        """
        docs/examples/control.py: the staff order passes the checks in
        priority order, is placed with its invoice (a follow-up event) and
        reaches the staff; mallory's is vetoed by the first check, bob's empty
        one by the second; explain() named the handlers up front.
        """
        lines: list[str] = []
        staff, mallory, bob = yield load("control").main(reactor, out=lines.append)
        self.assertIn("check: handler 2", lines[0].splitlines()[1])  # priority 10
        self.assertTrue(staff.ok, staff.failures)
        placed = [o for o in staff.outcomes if o.handler.endswith(":place_order")]
        self.assertEqual(placed[0].value["invoice"], "invoice for staff_ann: 13.75")
        self.assertEqual(
            [o.handler.rpartition(":")[2] for o in staff.outcomes],
            [
                "check_customer",
                "check_stock",
                "place_order",
                "notify_staff",
                "check_customer",
            ],
        )
        self.assertEqual(mallory.vetoed.veto, "customer mallory is banned")
        self.assertEqual(
            [o.status for o in mallory.outcomes], ["ok", "skipped", "skipped"]
        )
        self.assertEqual(bob.vetoed.veto, "nothing to ship")
        self.assertIn("  check check_stock    ok      VETO nothing to ship", lines)
