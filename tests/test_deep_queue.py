"""
A deep queue of events that settle without a child (nothing matches, every
handler used up or removed, a veto or an abort skipping the rest, a pool that
answers at once, a stopped dispatcher) drains in a loop: tens of thousands of
them are all answered, the counters stay true, and the dispatcher keeps
serving.  (Finishing one such event used to start the next from inside its own
call, which recursed until C{RecursionError} after a few hundred.)
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from actordispatch import DispatchResult, EventDispatcher, Phase, Veto
from actordispatch.testing import FakeCall, FakeJobPool, FakePool

#: Far deeper than the interpreter's recursion limit.
DEPTH = max(30_000, sys.getrecursionlimit() * 10)


def handler(event: Any) -> None:
    """
    A module-level handler (never run: the fake pool answers).
    """


def other(event: Any) -> None:
    """
    Another module-level handler.
    """


class _Seams:
    """
    Each test runs on both pool seams: the Deferred one and the job one.
    """

    def pools(self, answer: Callable[[FakeCall], None] | None = None) -> list[Any]:
        return [FakePool(answer=answer), FakeJobPool(answer=answer)]

    def make(
        self, pool: FakePool, clock: Clock | None = None, **kw: Any
    ) -> EventDispatcher:
        kw.setdefault("max_queue", None)
        dispatcher = EventDispatcher(
            ("user", "kind"),
            kw.pop("phases", ("before", "during", "after")),
            reactor=clock or Clock(),
            pool=pool,
            **kw,
        )
        dispatcher.start()
        return dispatcher

    def assert_all_answered(
        self,
        test: SynchronousTestCase,
        dispatcher: EventDispatcher,
        results: list[Deferred[DispatchResult]],
    ) -> list[DispatchResult]:
        answered = [test.successResultOf(d) for d in results]
        stats = dispatcher.stats()
        test.assertEqual(
            stats.accepted, stats.finished + stats.in_flight + stats.queued
        )
        test.assertEqual((stats.in_flight, stats.queued), (0, 0))
        test.assertEqual(stats.finished, stats.accepted)
        return answered


class DeepQueueTests(_Seams, SynchronousTestCase):
    def test_nothing_matches(self) -> None:
        """
        Behind one running event, tens of thousands of queued events that
        match no handler are all answered (with no outcome) once it ends, and
        the next event still runs.
        """
        for pool in self.pools():
            dispatcher = self.make(pool)
            self.successResultOf(
                dispatcher.add_event_handler(handler, "during", user="a")
            )
            first = dispatcher.fire_event({}, user="a")
            rest = [dispatcher.fire_event({}, user="b") for _ in range(DEPTH)]
            self.assertEqual(dispatcher.stats().queued, DEPTH)
            pool.pending()[0].succeed()
            answered = self.assert_all_answered(self, dispatcher, [first, *rest])
            self.assertTrue(all(not r.outcomes for r in answered[1:]))
            again = dispatcher.fire_event({}, user="a")
            pool.pending()[0].succeed()
            self.assertEqual(len(self.successResultOf(again).outcomes), 1)

    def test_nothing_matches_order_by(self) -> None:
        """
        The same with C{order_by} and C{max_in_flight}: events of one key
        chained behind the running one, and of many keys, all drain.
        """
        for pool in self.pools():
            dispatcher = self.make(pool, order_by="user", max_in_flight=4)
            self.successResultOf(
                dispatcher.add_event_handler(handler, "during", kind="slow")
            )
            first = dispatcher.fire_event({}, user="a", kind="slow")
            same_key = [dispatcher.fire_event({}, user="a") for _ in range(DEPTH)]
            many_keys = [dispatcher.fire_event({}, user=str(i)) for i in range(DEPTH)]
            pool.pending()[0].succeed()
            self.assert_all_answered(self, dispatcher, [first, *same_key, *many_keys])

    def test_handlers_used_up(self) -> None:
        """
        Queued events whose handlers' C{max_calls} are all promised to earlier
        events run nothing, and all drain.
        """
        for pool in self.pools():
            dispatcher = self.make(pool)
            self.successResultOf(
                dispatcher.add_event_handler(handler, "during", max_calls=1)
            )
            first = dispatcher.fire_event({})
            rest = [dispatcher.fire_event({}) for _ in range(DEPTH)]
            pool.pending()[0].succeed()
            answered = self.assert_all_answered(self, dispatcher, [first, *rest])
            self.assertEqual(len(answered[0].outcomes), 1)
            self.assertTrue(all(not r.outcomes for r in answered[1:]))

    def test_removed_handler_skipped(self) -> None:
        """
        Queued events planned for handlers that were then removed end with
        those handlers C{"skipped"}, all of them.
        """
        for pool in self.pools():
            dispatcher = self.make(pool)
            ids = [
                self.successResultOf(dispatcher.add_event_handler(h, phase))
                for h, phase in ((handler, "before"), (other, "after"))
            ]
            first = dispatcher.fire_event({})
            rest = [dispatcher.fire_event({}) for _ in range(DEPTH)]
            for handler_id in ids:
                self.successResultOf(dispatcher.remove_event_handler(handler_id))
            pool.pending()[0].succeed()
            answered = self.assert_all_answered(self, dispatcher, [first, *rest])
            self.assertTrue(
                all(
                    [o.status for o in r.outcomes] == ["skipped", "skipped"]
                    for r in answered[1:]
                )
            )

    def test_answered_at_once(self) -> None:
        """
        A pool that answers every invocation inside the call that sends it
        (as a stopped or broken pool does) settles a deep queue of events,
        each through several phases, in a loop.
        """

        def crash_at_once(call: FakeCall) -> None:
            if call.invocation.handler == first_name:
                return  # the first event's handler holds the line
            call.fail("crashed", "actordispatch.PoolDown", "the pool is stopped")

        first_name = f"{__name__}:other"
        for pool in self.pools(crash_at_once):
            dispatcher = self.make(pool)
            for phase in ("before", "after"):
                self.successResultOf(
                    dispatcher.add_event_handler(handler, phase, kind="x")
                )
            self.successResultOf(
                dispatcher.add_event_handler(other, "during", kind="y")
            )
            first = dispatcher.fire_event({}, kind="y")
            rest = [dispatcher.fire_event({}, kind="x") for _ in range(DEPTH)]
            pool.pending()[0].succeed()
            answered = self.assert_all_answered(self, dispatcher, [first, *rest])
            self.assertTrue(
                all(
                    [o.status for o in r.outcomes] == ["crashed"] * 2
                    for r in answered[1:]
                )
            )

    def test_veto_and_abort_skip_the_rest(self) -> None:
        """
        Events halted in their first phase (by a veto, or by a failure under
        C{on_error="abort"}) answered at once skip their later phases' many
        handlers, and a deep queue of them drains.
        """

        def answer(call: FakeCall) -> None:
            if call.invocation.handler == f"{__name__}:other":
                return
            if call.invocation.phase == "check":
                if call.invocation.keywords.get("kind") == "veto":
                    call.succeed(Veto("no"))
                else:
                    call.fail()

        phases = (Phase("check", veto=True), "then")
        for pool in self.pools(answer):
            dispatcher = self.make(pool, phases=phases, skip_after_failure=True)
            self.successResultOf(dispatcher.add_event_handler(handler, "check"))
            for _ in range(3):
                self.successResultOf(dispatcher.add_event_handler(handler, "then"))
            self.successResultOf(dispatcher.add_event_handler(other, "check", user="z"))
            first = dispatcher.fire_event({}, user="z")
            rest = [
                dispatcher.fire_event({}, kind="veto" if i % 2 else "fail")
                for i in range(DEPTH // 2)
            ]
            pool.pending()[0].succeed()
            answered = self.assert_all_answered(self, dispatcher, [first, *rest])
            self.assertTrue(
                all(
                    [o.status for o in r.outcomes[1:]] == ["skipped"] * 3
                    for r in answered[1:]
                )
            )

    def test_waiting_for_room(self) -> None:
        """
        With C{on_overload="wait"} and a queue of one, tens of thousands of
        events waiting for room are accepted and answered one after another.
        """
        for pool in self.pools():
            dispatcher = self.make(pool, max_queue=1, on_overload="wait")
            self.successResultOf(
                dispatcher.add_event_handler(handler, "during", user="a")
            )
            first = dispatcher.fire_event({}, user="a")
            rest = [dispatcher.fire_event({}, user="b") for _ in range(DEPTH)]
            self.assertEqual(dispatcher.stats().waiting, DEPTH - 1)
            pool.pending()[0].succeed()
            self.assert_all_answered(self, dispatcher, [first, *rest])

    def test_drain_timeout_skips_a_deep_queue(self) -> None:
        """
        stop() whose drain timeout passes with a deep queue ends every queued
        event's invocations C{"skipped"} and returns.
        """
        for pool in self.pools():
            clock = Clock()
            dispatcher = self.make(pool, clock)
            self.successResultOf(dispatcher.add_event_handler(handler, "during"))
            first = dispatcher.fire_event({})
            rest = [dispatcher.fire_event({}) for _ in range(DEPTH)]
            stopped = dispatcher.stop(drain_timeout=5)
            clock.advance(5)
            self.successResultOf(stopped)
            answered = self.assert_all_answered(self, dispatcher, [first, *rest])
            self.assertEqual(answered[0].outcomes[0].status, "timeout")
            self.assertTrue(
                all([o.status for o in r.outcomes] == ["skipped"] for r in answered[1:])
            )
