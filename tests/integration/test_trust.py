"""
Trust domains (issue 16): under C{SandboxProfile.untrusted()}, whose
isolation is C{"handler"}, a hostile handler can affect only its own outcomes,
whatever it does to what shares its child, its batch or its spool; under
C{"invocation"}, one event's data never meets another's.  Each attack is also
run under C{"shared"} isolation, where it succeeds, so that the tests show
they can fail.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Any

from twisted.internet import defer
from twisted.trial.unittest import TestCase

from actordispatch import EventDispatcher, SandboxProfile

D = "tests.integration.domains:"


class TrustDomainTests(TestCase):
    """
    Attackers and victims registered side by side, fired together.
    """

    timeout = 180

    def setUp(self) -> None:
        self.directory = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.directory)
        self.log = os.path.join(self.directory, "victim.log")

    def dispatcher(self, isolation: str, size: int = 2) -> EventDispatcher:
        profile = SandboxProfile.untrusted(
            writable_paths=(self.directory,), isolation=isolation
        )
        # Many events at once, so that invocations wait and share batches
        # where the isolation lets them.
        dispatcher = EventDispatcher(
            ("kind",), ("during",), pool_size=size, max_in_flight=64, sandbox=profile
        )
        self.addCleanup(dispatcher.stop)
        return dispatcher

    @defer.inlineCallbacks
    def fire_both(self, d: EventDispatcher, attacker: str, events: int = 20) -> Any:
        """
        Register C{attacker} and the victim, then fire the attacker's events
        and the victims' at once, interleaved; answer the victims' results.
        """
        yield d.start()
        yield d.add_event_handler(D + attacker, "during", kind="attack")
        yield d.add_event_handler(D + "victim", "during", kind="victim")
        # A slow victim first, so that the rest queue up behind it.
        fired = [d.fire_event({"card": "first", "sleep": 0.3}, kind="victim")]
        for n in range(events):
            fired.append(d.fire_event({}, kind="attack"))
            fired.append(
                d.fire_event(
                    {"card": f"4111-{n:04d}", "n": n, "log": self.log}, kind="victim"
                )
            )
        results = yield defer.gatherResults(fired)
        return results[2::2]

    def assert_genuine(self, d: EventDispatcher, victims: list[Any]) -> None:
        """
        Every victim outcome is the victim's own value, each victim event ran
        exactly once, the victim was not quarantined, and the dispatcher
        serves on.
        """
        for n, result in enumerate(victims):
            [outcome] = result.outcomes
            self.assertEqual(outcome.status, "ok", outcome)
            self.assertEqual(outcome.value["card"], f"4111-{n:04d}")
        with open(self.log) as log:
            runs = sorted(int(line) for line in log)
        self.assertEqual(runs, list(range(len(victims))))
        pool = d.pools()["default"]
        self.assertNotIn(D + "victim", pool.quarantined())

    @defer.inlineCallbacks
    def test_poisoning_stays_home(self) -> Any:
        """
        A handler that rewrites the victim's code in its own child changes
        nothing the victim answers: they never share a child.
        """
        d = self.dispatcher("handler")
        victims = yield self.fire_both(d, "poison")
        self.assert_genuine(d, victims)
        pids = {result.outcomes[0].value["pid"] for result in victims}
        poisoned = yield d.fire_event({}, kind="attack")
        self.assertNotIn(poisoned.outcomes[0].pid, pids)

    @defer.inlineCallbacks
    def test_poisoning_works_when_shared(self) -> Any:
        """
        The contrast: with shared children, the same attack poisons the
        victim (one child, so the attacker surely shares it).
        """
        d = self.dispatcher("shared", size=1)
        victims = yield self.fire_both(d, "poison", events=5)
        cards = {result.outcomes[0].value["card"] for result in victims}
        self.assertIn("POISONED", cards)

    @defer.inlineCallbacks
    def test_forging_stays_home(self) -> Any:
        """
        A handler that writes "ok" records for its whole batch and exits
        forges no victim outcome: batches hold one handler's work.
        """
        d = self.dispatcher("handler")
        victims = yield self.fire_both(d, "forge", events=10)
        self.assert_genuine(d, victims)

    @defer.inlineCallbacks
    def test_erasing_stays_home(self) -> Any:
        """
        A handler that erases its spool and exits makes no victim's finished
        invocation crash, run twice, or be quarantined.
        """
        d = self.dispatcher("handler")
        victims = yield self.fire_both(d, "erase", events=10)
        self.assert_genuine(d, victims)

    @defer.inlineCallbacks
    def test_more_handlers_than_children(self) -> Any:
        """
        One child serves five handlers in turn: each handler's events run in
        children that never ran another handler's (a child is replaced, never
        reused, when it changes hands), and every event has its outcome.
        """
        d = self.dispatcher("handler", size=1)
        yield d.start()
        for k in range(5):
            yield d.add_event_handler(D + f"remember_{k}", "during", kind=f"k{k}")
        results = yield defer.gatherResults(
            [
                d.fire_event({"k": k, "i": i}, kind=f"k{k}")
                for i in range(4)
                for k in range(5)
            ]
        )
        owners: dict[int, set[int]] = {}
        for result in results:
            [outcome] = result.outcomes
            self.assertEqual(outcome.status, "ok", outcome)
            seen = outcome.value["seen"]
            owners.setdefault(outcome.pid, set()).update(e["k"] for e in seen)
        for pid, handlers in owners.items():
            self.assertEqual(len(handlers), 1, f"child {pid} ran {handlers}")

    @defer.inlineCallbacks
    def test_invocation_isolation(self) -> Any:
        """
        Under C{"invocation"}, every invocation runs in a fresh process: a
        handler that keeps what it has seen has only ever seen its own event,
        and no two invocations share a pid.
        """
        d = self.dispatcher("invocation")
        yield d.start()
        yield d.add_event_handler(D + "remember", "during", kind="r")
        results = yield defer.gatherResults(
            [d.fire_event({"i": i}, kind="r") for i in range(30)]
        )
        pids = set()
        for i, result in enumerate(results):
            [outcome] = result.outcomes
            self.assertEqual(outcome.status, "ok", outcome)
            self.assertEqual(outcome.value["seen"], [{"i": i}])
            pids.add(outcome.pid)
        self.assertEqual(len(pids), 30)
