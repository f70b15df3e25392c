"""
Issue 16, "follow-up storms": a storm of follow-ups from one handler (its
invocations each firing a follow-up event, most waiting for it) is bounded per
handler, so that it takes at most a few children and delays only that
handler's events.  Driven with fake children on a L{Clock}.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred

from actordispatch._core.errors import FollowUpError
from actordispatch._core.result import DispatchResult
from actordispatch._local.pool import AmpoulePool
from actordispatch._wire.commands import Ping, RunBatch

from .fake_children import FakeChild
from .test_local_pool import PoolTestCase, invocation


class StormTestCase(PoolTestCase):
    """
    A pool whose follow-up events go to a sink that never answers by itself:
    the test finishes them (L{answer}).
    """

    def storm_pool(self, **options: Any) -> AmpoulePool:
        pool = self.started(**options)
        self.fired: list[Deferred[Any]] = []

        def sink(depth: int, event: bytes, keywords: Any, on_error: Any) -> Any:
            self.fired.append(Deferred())
            return len(self.fired), self.fired[-1]

        pool.set_follow_ups(sink)
        return pool

    def fire(self, child: FakeChild, wait: bool = True) -> Deferred[Any]:
        """
        The handler running on C{child} fires a follow-up event.
        """
        ((_, arguments),) = child.pending(RunBatch)
        fired: Deferred[Any] = child.on_follow_up(
            event=b"{}", keywords="{}", seq=arguments["seq"], wait=wait
        )
        return fired

    def answer(self, index: int) -> None:
        """
        The follow-up event fired C{index}-th finishes.
        """
        self.fired[index].callback(DispatchResult(outcomes=()))

    def park_new(self, name: str) -> tuple[FakeChild, Deferred[Any]]:
        """
        An invocation of C{name} goes to a free child (the stand-ins booted
        now), and its handler fires a follow-up and waits: that child is
        parked.
        """
        for child in self.children.alive():
            if child.pending(Ping):
                child.boot()
        before = {id(c) for c in self.children.alive() if c.pending(RunBatch)}
        self.invoke(invocation(name))
        self.clock.advance(0)  # a waiting handler's invocations go next turn
        (running,) = [
            c
            for c in self.children.alive()
            if c.pending(RunBatch) and id(c) not in before
        ]
        waited = self.fire(running)
        self.assertNoResult(waited)
        return running, waited


class PerHandlerWaitingTests(StormTestCase):
    def test_handler_cap(self) -> None:
        """
        Past C{max_waiting_per_handler} children parked for one handler, its
        waiting follow-up is refused at once, naming the option; another
        handler's waiting follow-up is still accepted (and parks), and once
        one of the storming handler's follow-ups is answered it may wait
        again.
        """
        self.storm_pool(max_waiting_per_handler=2)
        self.park_new("storm")
        self.park_new("storm")
        third = self.children.children[-1]
        third.boot()
        self.invoke(invocation("storm"))
        self.clock.advance(0)
        failure = self.failureResultOf(self.fire(third), FollowUpError)
        self.assertIn("max_waiting_per_handler=2", str(failure.value))
        self.assertIn("mod:storm", str(failure.value))
        # The refused handler carries on and ends; its child serves on.
        third.run([None])
        self.assertEqual(len(self.children.children), 3)  # no stand-in for it
        self.park_new("calm")
        self.assertEqual(len(self.children.children), 4)  # a stand-in for calm
        self.answer(0)
        self.child(0).run([1])
        self.park_new("storm")

    def test_zero_never_waits(self) -> None:
        """
        C{max_waiting_per_handler=0}: no handler may wait, but it may still
        fire follow-ups without waiting.
        """
        self.storm_pool(max_waiting_per_handler=0)
        self.invoke(invocation("storm"))
        self.failureResultOf(self.fire(self.child()), FollowUpError)
        self.assertEqual(
            self.successResultOf(self.fire(self.child(), wait=False)), {"number": 1}
        )

    def test_mixed_batch_charged_to_running_handler(self) -> None:
        """
        In a batch of several handlers (queued before any of them waited), a
        follow-up is charged to the handler running (the first its spool
        does not show finished), not to the batch's first one.
        """
        self.storm_pool(max_waiting_per_handler=1)
        self.invoke(invocation("storm"))
        self.invoke(invocation("storm"), invocation("calm"))
        self.assertNoResult(self.fire(self.child(0)))  # parked: a stand-in
        stand_in = self.child(1)
        stand_in.boot()
        self.assertEqual(stand_in.batch(), ["mod:storm", "mod:calm"])
        stand_in.start_batch()
        self.failureResultOf(self.fire(stand_in), FollowUpError)
        stand_in.finish({"s": "ok", "v": None, "d": 0})
        self.assertNoResult(self.fire(stand_in))  # calm's: it waits

    def test_died_parked_holds_slot_till_answered(self) -> None:
        """
        A child that dies parked leaves the pool at once, but its handler's
        follow-up event runs on, and holds the handler's slot until it ends.
        """
        self.storm_pool(max_waiting_per_handler=1)
        parked, waited = self.park_new("storm")
        parked.exit(code=9)
        self.clock.advance(0)
        self.assertNoResult(waited)  # the follow-up event runs on
        stand_in = self.child(1)
        stand_in.boot()
        self.invoke(invocation("storm"))
        self.clock.advance(0)
        self.failureResultOf(self.fire(stand_in), FollowUpError)
        self.answer(0)
        self.successResultOf(waited)  # its answer is for nobody
        self.assertNoResult(self.fire(stand_in))

    def test_options_checked(self) -> None:
        """
        The per-handler limits are ints of 0 or more.
        """
        for name in ("max_waiting_per_handler", "max_follow_ups_per_handler"):
            for bad in (-1, 1.5, True):
                with self.assertRaises(ValueError):
                    self.make_pool(**{name: bad})


class PerHandlerFollowUpTests(StormTestCase):
    def test_running_follow_ups_capped_per_handler(self) -> None:
        """
        Past C{max_follow_ups_per_handler} follow-up events of one handler
        running at once (over all its children, waited for or not), its next
        is refused: a storm cannot fill the pool's shared queue ahead of
        other handlers' work.  Other handlers fire on; once one ends, the
        handler may fire again.
        """
        self.storm_pool(size=2, max_follow_ups_per_handler=3)
        first, second = self.child(0), self.child(1)
        self.invoke(invocation("storm"), invocation("storm"))
        self.successResultOf(self.fire(first, wait=False))
        self.successResultOf(self.fire(second, wait=False))
        self.successResultOf(self.fire(second, wait=False))
        failure = self.failureResultOf(self.fire(first, wait=False), FollowUpError)
        self.assertIn("max_follow_ups_per_handler=3", str(failure.value))
        first.run([None])
        self.invoke(invocation("calm"))
        self.successResultOf(self.fire(first, wait=False))
        self.answer(0)
        first.run([None])
        self.invoke(invocation("storm"))
        self.successResultOf(self.fire(first, wait=False))


class WaiterLaneTests(StormTestCase):
    def test_waiting_handler_never_batched_with_others(self) -> None:
        """
        Once a handler has waited for a follow-up, its invocations wait in
        its own line, out of the shared queue: the others' work goes first,
        batched without them; the line's go alone, each to a child the
        shared queue leaves free.
        """
        pool = self.storm_pool(size=1)
        self.park_new("storm")
        stand_in = self.child(1)
        stand_in.boot()
        lined = self.invoke(invocation("storm"), invocation("storm"))
        self.invoke(invocation("calm"), invocation("calm"), invocation("calm"))
        self.clock.advance(0)
        self.assertEqual(stand_in.batch(), ["mod:calm"])
        self.assertEqual(pool.queued(), 4)
        stand_in.run([None])
        self.assertEqual(stand_in.batch(), ["mod:calm", "mod:calm"])
        stand_in.run([None, None])
        self.assertEqual(stand_in.batch(), ["mod:storm"])
        stand_in.run([1])
        self.assertEqual(stand_in.batch(), ["mod:storm"])
        stand_in.run([2])
        self.assertEqual([self.outcome(d).value for d in lined], [1, 2])
        self.assertEqual(pool.queued(), 0)

    def test_abort_ends_lined_up_jobs(self) -> None:
        """
        Stopping the pool ends the invocations waiting in a line "skipped",
        as it ends the shared queue's.
        """
        pool = self.storm_pool(size=1)
        self.park_new("storm")
        stand_in = self.child(1)
        stand_in.boot()
        self.invoke(invocation("calm"))
        (lined,) = self.invoke(invocation("storm"))
        self.clock.advance(0)
        self.assertEqual(pool.queued(), 1)
        pool.stop()
        self.assertEqual(self.outcome(lined).status, "skipped")
        self.assertEqual(pool.queued(), 0)

    def test_follow_ups_of_a_waiting_handler_lined_up_first(self) -> None:
        """
        The follow-up events a waiting handler fires run in its line, the
        ones it waits for at the front (they bring parked children back):
        the stand-in runs the follow-up before the handler's next invocation.
        """
        pool = self.started()
        answers: list[Deferred[Any]] = []

        def sink(depth: int, event: bytes, keywords: Any, on_error: Any) -> Any:
            answers.append(pool.invoke(invocation("answer")))
            return len(answers), Deferred()

        pool.set_follow_ups(sink)
        self.invoke(invocation("storm"))
        self.assertNoResult(self.fire(self.child(0)))
        (lined,) = self.invoke(invocation("storm"))
        self.clock.advance(0)
        self.assertEqual(pool.queued(), 2)
        stand_in = self.child(1)
        stand_in.boot()
        self.assertEqual(stand_in.batch(), ["mod:answer"])
        stand_in.run(["re"])
        self.assertEqual(self.outcome(answers[0]).value, "re")
        self.assertEqual(stand_in.batch(), ["mod:storm"])
        stand_in.run([2])
        self.assertEqual(self.outcome(lined).value, 2)

    def test_one_idle_child_left_to_the_shared_queue(self) -> None:
        """
        While lined-up work runs on children that are not parked, the lines
        leave one idle child free: an unrelated invocation arriving then goes
        to it at once.
        """
        pool = self.storm_pool(size=3)
        parked, _ = self.park_new("storm")
        self.answer(0)
        parked.run([None])  # the handler waits no more
        self.clock.advance(0)
        serving = len(pool.child_pids())
        for child in self.children.alive():
            if child.pending(Ping):
                child.boot()
        self.invoke(*[invocation("storm") for _ in range(5)])
        self.clock.advance(0)
        busy = [c for c in self.children.alive() if c.pending(RunBatch)]
        self.assertEqual(len(busy), serving - 1)
        self.assertEqual(pool.queued(), 5 - len(busy))
        self.invoke(invocation("calm"))
        (free,) = [
            c for c in self.children.alive() if c.pending(RunBatch) and c not in busy
        ]
        self.assertEqual(free.batch(), ["mod:calm"])
