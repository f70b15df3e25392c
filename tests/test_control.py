"""
Ordering and control within and across phases: C{priority=}, sequential
phases, veto phases, the error policy and C{fire_event(on_error=...)}.  In
memory: a C{Clock} and a fake pool.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from actordispatch import DispatchResult, EventDispatcher, Phase, Veto
from actordispatch.testing import FakePool


def make(*phases: str | Phase, **options: Any) -> tuple[EventDispatcher, FakePool]:
    pool = FakePool()
    dispatcher = EventDispatcher(
        ("kind",), phases, reactor=Clock(), pool=pool, max_in_flight=4, **options
    )
    dispatcher.start()
    return dispatcher, pool


class ControlTestCase(SynchronousTestCase):
    dispatcher: EventDispatcher
    pool: FakePool

    def add(self, phase: str, name: str = "app.h:h", **options: Any) -> int:
        return self.successResultOf(
            self.dispatcher.add_event_handler(name, phase, **options)
        )

    def running(self) -> list[int]:
        return [call.invocation.handler_id for call in self.pool.pending()]

    def answer(self, handler_id: int, value: Any = None) -> None:
        for call in self.pool.pending():
            if call.invocation.handler_id == handler_id:
                call.succeed(value)
                return
        self.fail(f"handler {handler_id} is not running")

    def statuses(self, result: DispatchResult) -> list[tuple[int, str]]:
        return [(o.handler_id, o.status) for o in result.outcomes]


class PriorityTests(ControlTestCase):
    def setUp(self) -> None:
        self.dispatcher, self.pool = make("one")

    def test_order(self) -> None:
        """
        A concurrent phase sends its handlers, and lists their outcomes,
        highest priority first, then in registration order; priority is shown
        by handlers() and explain().
        """
        low = self.add("one", priority=-5)
        plain = self.add("one")
        high = self.add("one", priority=10)
        plain2 = self.add("one")
        d = self.dispatcher.fire_event({}, kind="x")
        self.assertEqual(self.running(), [high, plain, plain2, low])
        for handler_id in (low, plain2, plain, high):
            self.answer(handler_id)
        result = self.successResultOf(d)
        self.assertEqual(
            [o.handler_id for o in result.outcomes], [high, plain, plain2, low]
        )
        self.assertEqual(
            [i.priority for i in self.dispatcher.handlers()], [-5, 0, 10, 0]
        )
        self.assertEqual(
            self.dispatcher.explain(kind="x").runs(), [high, plain, plain2, low]
        )

    def test_mistakes(self) -> None:
        """
        priority must be an int; priority and on_error are reserved names.
        """
        for bad in (1.5, "1", True, None):
            self.assertRaises(
                ValueError,
                self.dispatcher.add_event_handler,
                "app.h:h",
                "one",
                priority=bad,
            )
        for name in ("priority", "on_error"):
            self.assertRaises(ValueError, self.dispatcher.add_match_spec_keyword, name)


class SequentialTests(ControlTestCase):
    def setUp(self) -> None:
        self.dispatcher, self.pool = make(Phase("seq", sequential=True), "after")

    def test_one_after_another(self) -> None:
        """
        A sequential phase runs one handler at a time, in priority order, the
        next starting when the one before has its outcome; then the next phase.
        """
        first = self.add("seq", priority=1)
        second = self.add("seq")
        third = self.add("seq")
        after = self.add("after")
        d = self.dispatcher.fire_event({}, kind="x")
        self.assertEqual(self.running(), [first])
        self.answer(first)
        self.assertEqual(self.running(), [second])
        self.pool.pending()[0].fail()  # a failure does not stop the phase
        self.assertEqual(self.running(), [third])
        self.answer(third)
        self.assertEqual(self.running(), [after])
        self.answer(after)
        self.assertEqual(
            self.statuses(self.successResultOf(d)),
            [(first, "ok"), (second, "error"), (third, "ok"), (after, "ok")],
        )

    def test_removed_while_waiting(self) -> None:
        """
        A handler removed while the one before it runs ends "skipped"; the
        next one runs, and its call stays available.
        """
        first = self.add("seq")
        gone = self.add("seq")
        last = self.add("seq")
        d = self.dispatcher.fire_event({}, kind="x")
        self.successResultOf(self.dispatcher.remove_event_handler(gone))
        self.answer(first)
        self.assertEqual(self.running(), [last])
        self.answer(last)
        self.assertEqual(
            self.statuses(self.successResultOf(d)),
            [(first, "ok"), (gone, "skipped"), (last, "ok")],
        )

    def test_concurrent_events(self) -> None:
        """
        Sequencing is per event: two events in flight each run their first
        handler at once.
        """
        first = self.add("seq")
        self.add("seq")
        self.dispatcher.fire_event({}, kind="x")
        self.dispatcher.fire_event({}, kind="y")
        self.assertEqual(self.running(), [first, first])


class VetoTests(ControlTestCase):
    def setUp(self) -> None:
        self.dispatcher, self.pool = make(
            Phase("check", sequential=True, veto=True), Phase("open", veto=True), "rest"
        )

    def test_veto_in_sequential_phase(self) -> None:
        """
        A veto stops the event: the sequential phase's handlers not run yet
        and every later handler end "skipped", naming the veto; the vetoing
        outcome is ok, with its reason, and is the result's ``vetoed``.
        """
        guard = self.add("check", name="app.h:guard")
        unrun = self.add("check")
        later = self.add("rest", max_calls=1)
        d = self.dispatcher.fire_event({}, kind="x")
        self.answer(guard, Veto("user is banned"))
        result = self.successResultOf(d)
        self.assertEqual(
            self.statuses(result),
            [(guard, "ok"), (unrun, "skipped"), (later, "skipped")],
        )
        self.assertEqual(result.vetoed, result.outcomes[0])
        self.assertEqual(result.outcomes[0].veto, "user is banned")
        skipped = result.outcomes[2]
        self.assertEqual(skipped.error_type, "actordispatch.Vetoed")
        self.assertEqual(
            skipped.error_message,
            f"vetoed by handler {guard} (app.h:guard) in phase 'check': user is banned",
        )
        # A skipped max_calls handler keeps its call for the next event.
        d = self.dispatcher.fire_event({}, kind="x")
        self.answer(guard)
        self.answer(unrun)
        self.assertEqual(self.running(), [later])

    def test_veto_in_concurrent_phase(self) -> None:
        """
        In a concurrent veto phase the other handlers were already running:
        they finish; the later phases are skipped.  The first veto is the one
        named.
        """
        first = self.add("open")
        second = self.add("open")
        later = self.add("rest")
        d = self.dispatcher.fire_event({}, kind="x")
        self.answer(second, Veto("second"))
        self.answer(first, Veto("first"))
        result = self.successResultOf(d)
        self.assertEqual(
            self.statuses(result), [(first, "ok"), (second, "ok"), (later, "skipped")]
        )
        self.assertIn("'open': second", result.outcomes[2].error_message or "")
        self.assertEqual(result.vetoed, result.outcomes[0])  # first in order

    def test_veto_not_allowed(self) -> None:
        """
        A Veto returned in a phase that cannot veto is an error outcome, not
        a silent no-op, and stops nothing by itself.
        """
        stray = self.add("rest")
        d = self.dispatcher.fire_event({}, kind="x")
        self.answer(stray, Veto("no"))
        (outcome,) = self.successResultOf(d).outcomes
        self.assertEqual(outcome.status, "error")
        self.assertEqual(outcome.error_type, "actordispatch.VetoNotAllowed")
        self.assertIsNone(outcome.veto)

    def test_no_veto(self) -> None:
        """
        Without a veto, every phase runs.
        """
        guard = self.add("check")
        later = self.add("rest")
        d = self.dispatcher.fire_event({}, kind="x")
        self.answer(guard, "fine")
        self.answer(later)
        result = self.successResultOf(d)
        self.assertIsNone(result.vetoed)
        self.assertTrue(result.ok)


class ErrorPolicyTests(ControlTestCase):
    def test_phase_abort(self) -> None:
        """
        A failure in a phase with on_error="abort" skips the later phases,
        naming the failed handler; "continue" lets them run.
        """
        self.dispatcher, self.pool = make(
            Phase("a", on_error="abort"), Phase("b", on_error="continue"), "c"
        )
        a = self.add("a")
        b = self.add("b")
        c = self.add("c")
        d = self.dispatcher.fire_event({}, kind="x")
        self.answer(a)
        self.pool.pending()[0].fail("timeout", "actordispatch.HandlerTimeout")
        self.answer(c)
        self.assertEqual(
            self.statuses(self.successResultOf(d)),
            [(a, "ok"), (b, "timeout"), (c, "ok")],
        )
        d = self.dispatcher.fire_event({}, kind="x")
        self.pool.pending()[0].fail()
        result = self.successResultOf(d)
        self.assertEqual(
            self.statuses(result), [(a, "error"), (b, "skipped"), (c, "skipped")]
        )
        self.assertEqual(result.outcomes[1].error_type, "actordispatch.EarlierFailure")
        self.assertIn(
            f"handler {a} (app.h:h) ended 'error' in phase 'a'",
            str(result.outcomes[1].error_message),
        )

    def test_sequential_abort(self) -> None:
        """
        In a sequential phase under "abort", the handlers after the failed one
        are skipped too.
        """
        self.dispatcher, self.pool = make(Phase("s", sequential=True, on_error="abort"))
        first = self.add("s")
        second = self.add("s")
        d = self.dispatcher.fire_event({}, kind="x")
        self.pool.pending()[0].fail("crashed", "actordispatch.ChildCrashed")
        self.assertEqual(
            self.statuses(self.successResultOf(d)),
            [(first, "crashed"), (second, "skipped")],
        )

    def test_fire_event_overrides(self) -> None:
        """
        fire_event(on_error=...) overrides every phase's policy and the
        dispatcher's, for one event; a bad value is refused at once.
        """
        self.dispatcher, self.pool = make(
            Phase("a", on_error="abort"), "b", skip_after_failure=True
        )
        a = self.add("a")
        b = self.add("b")
        d = self.dispatcher.fire_event({}, on_error="continue", kind="x")
        self.pool.pending()[0].fail()
        self.answer(b)
        self.assertEqual(
            self.statuses(self.successResultOf(d)), [(a, "error"), (b, "ok")]
        )
        self.dispatcher2, pool2 = make("a", "b")
        self.dispatcher, self.pool = self.dispatcher2, pool2
        a = self.add("a")
        b = self.add("b")
        d = self.dispatcher.fire_event({}, on_error="abort", kind="x")
        self.pool.pending()[0].fail()
        self.assertEqual(
            self.statuses(self.successResultOf(d)), [(a, "error"), (b, "skipped")]
        )
        self.assertRaises(ValueError, self.dispatcher.fire_event, {}, on_error="stop")

    def test_retries_before_policy(self) -> None:
        """
        The policy judges a handler's final outcome: a timeout that a retry
        turns into ok stops nothing.
        """
        self.dispatcher, self.pool = make(Phase("a", on_error="abort"), "b")
        a = self.add("a", retries=1)
        b = self.add("b")
        d = self.dispatcher.fire_event({}, kind="x")
        self.pool.pending()[0].fail("timeout")
        self.answer(a)
        self.answer(b)
        self.assertEqual(self.statuses(self.successResultOf(d)), [(a, "ok"), (b, "ok")])


class PhaseValueTests(SynchronousTestCase):
    def test_phase_mistakes(self) -> None:
        """
        Phase checks its fields; the dispatcher takes names and Phase values
        and refuses anything else, and duplicate names.
        """
        self.assertRaises(ValueError, Phase, "")
        self.assertRaises(ValueError, Phase, "a", sequential="yes")
        self.assertRaises(ValueError, Phase, "a", on_error="stop")
        self.assertRaises(ValueError, make, Phase("a"), "a")
        self.assertRaises(ValueError, make, 3)
        self.assertRaises(TypeError, Veto, 3)
        dispatcher, _ = make(Phase("a", veto=True), "b")
        self.assertEqual(dispatcher.phases, ("a", "b"))
        self.assertEqual(dispatcher.phase_specs, (Phase("a", veto=True), Phase("b")))

    def test_long_reason(self) -> None:
        """
        A veto's reason is cut to 1,024 characters.
        """
        self.assertEqual(len(Veto("x" * 5000).reason), 1024)
