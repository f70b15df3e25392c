"""
A result too big for its cap, or for the child's memory, is refused as an
outcome; it never crashes the child that made it.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from twisted.trial.unittest import TestCase

from actordispatch import EventDispatcher, SandboxProfile

H = "tests.integration.handlers:"


class BigResultTests(TestCase):
    """
    Under C{SandboxProfile.untrusted()} (1 GiB of address space), results far
    above the cap, and results the child has little memory left to encode, end
    as error outcomes, and the same child serves the next event.
    """

    timeout = 120

    def dispatcher(self) -> EventDispatcher:
        dispatcher = EventDispatcher(
            pool_size=1,
            allowed_match_spec_keywords=("kind",),
            sandbox=SandboxProfile.untrusted(),
        )
        self.addCleanup(dispatcher.stop)
        return dispatcher

    @defer.inlineCallbacks
    def test_far_above_the_cap(self) -> Any:
        """
        A 200 MiB result (the cap is 16 MiB) is a C{ResultTooLargeError}
        outcome, not a crash; the child that made it (same pid) serves the
        next event.
        """
        d = self.dispatcher()
        yield d.start()
        yield d.add_event_handler(H + "huge_result", "during", kind="huge")
        result = yield d.fire_event({"mib": 200}, kind="huge")
        [outcome] = result.outcomes
        self.assertEqual(outcome.status, "error")
        self.assertEqual(outcome.error_type, "actordispatch.ResultTooLargeError")
        self.assertIn("above the cap", outcome.error_message)
        after = yield d.fire_event({"mib": 0}, kind="huge")
        self.assertEqual(after.outcomes[0].status, "ok")
        self.assertEqual(after.outcomes[0].pid, outcome.pid)

    @defer.inlineCallbacks
    def test_little_memory_left(self) -> Any:
        """
        A child that holds all of its 1 GiB but 80 MiB and returns 12 MiB (below
        the cap) gets an outcome, ok or a C{MemoryError}, never a crash: the same
        child serves the next event.
        """
        d = self.dispatcher()
        yield d.start()
        yield d.add_event_handler(H + "hoard_then_return", "during", kind="hog")
        result = yield d.fire_event({"mib": 12, "leave_mib": 80}, kind="hog")
        [outcome] = result.outcomes
        self.assertIn(outcome.status, ("ok", "error"), outcome)
        if outcome.status == "error":
            self.assertEqual(outcome.error_type, "builtins.MemoryError")
        else:
            self.assertEqual(len(outcome.value), 12 << 20)
        after = yield d.fire_event({"mib": 0, "leave_mib": 80}, kind="hog")
        self.assertEqual(after.outcomes[0].status, "ok")
        self.assertEqual(after.outcomes[0].pid, outcome.pid)
