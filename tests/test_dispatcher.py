"""
Unit tests for the dispatcher actor, with an in-memory pool and a Clock: no
processes.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from actordispatch import (
    DispatchResult,
    EventDispatcher,
    EventEncodingError,
    EventTooLargeError,
    HandlerImportError,
    NotRunningError,
    OverloadedError,
)
from actordispatch.interfaces import (
    IBackgroundUtility,
    IEventDispatcher,
    IHandlerPool,
    IJobPool,
)
from actordispatch.testing import FakeCall, FakeJobPool, FakePool

H = "tests.test_dispatcher:module_handler"


def module_handler(event: Any) -> Any:
    """
    A module-level handler (never run here: the fake pool answers).
    """
    return event


def other_handler(event: Any) -> None:
    """
    Another module-level handler.
    """


def make(
    pool: FakePool | None = None,
    phases: tuple[str, ...] = ("before", "during", "after"),
    **kw: Any,
) -> tuple[EventDispatcher, FakePool]:
    pool = pool or FakePool()
    dispatcher = EventDispatcher(
        ("event_type", "user", "role"), phases, reactor=Clock(), pool=pool, **kw
    )
    return dispatcher, pool


def ok_all(call: FakeCall) -> None:
    call.succeed(call.invocation.handler_id)


class ConstructionTests(SynchronousTestCase):
    def test_interfaces(self) -> None:
        """
        The dispatcher provides IEventDispatcher and IBackgroundUtility, and the
        fake pool provides IHandlerPool.
        """
        dispatcher, pool = make()
        self.assertTrue(verifyObject(IEventDispatcher, dispatcher))
        self.assertTrue(verifyObject(IBackgroundUtility, dispatcher))
        self.assertTrue(verifyObject(IHandlerPool, pool))

    def test_reserved_keyword_refused(self) -> None:
        """
        A match keyword that collides with an option of add_event_handler (or
        fire_event's event) is refused at construction.
        """
        for name in ("max_calls", "timeout", "handler", "phase", "event"):
            with self.assertRaises(ValueError) as caught:
                EventDispatcher((name,), reactor=Clock(), pool=FakePool())
            self.assertIn(name, str(caught.exception))

    def test_bad_configuration(self) -> None:
        """
        No phases, duplicate phases, a non-identifier keyword, a bare string of
        keywords, a bad max_in_flight and an order_by that is not a keyword are
        all refused.
        """
        bad: list[dict[str, Any]] = [
            {"allowed_match_spec_keywords": ("a",), "phases": ()},
            {"allowed_match_spec_keywords": ("a",), "phases": ("x", "x")},
            {"allowed_match_spec_keywords": ("not valid",)},
            {"allowed_match_spec_keywords": "abc"},
            {"allowed_match_spec_keywords": ("a",), "max_in_flight": 0},
            {"allowed_match_spec_keywords": ("a",), "order_by": "b"},
        ]
        for kwargs in bad:
            with self.assertRaises(ValueError):
                EventDispatcher(reactor=Clock(), pool=FakePool(), **kwargs)

    def test_default_phases(self) -> None:
        """
        The default phases are before, during, after, in that order.
        """
        dispatcher = EventDispatcher(("a",), reactor=Clock(), pool=FakePool())
        self.assertEqual(dispatcher.phases, ("before", "during", "after"))


class AddRemoveTests(SynchronousTestCase):
    def test_callable_fires_at_once(self) -> None:
        """
        A module-level callable is registered at once, before start, and its
        Deferred fires with its id; the pool is not asked to check it.
        """
        dispatcher, pool = make()
        self.assertEqual(
            self.successResultOf(
                dispatcher.add_event_handler(module_handler, "during")
            ),
            1,
        )
        self.assertEqual(pool.checks, [])
        self.assertEqual(pool.starts, 0)

    def test_unknown_phase_or_keyword_raises_synchronously(self) -> None:
        """
        An unknown phase or keyword raises ValueError at once, and no id is used.
        """
        dispatcher, _ = make()
        with self.assertRaises(ValueError):
            dispatcher.add_event_handler(H, "nope")
        with self.assertRaises(ValueError) as caught:
            dispatcher.add_event_handler(H, "during", colour="red")
        self.assertIn("colour", str(caught.exception))
        self.assertEqual(
            self.successResultOf(dispatcher.add_event_handler(H, "during")), 1
        )

    def test_lambda_refused(self) -> None:
        """
        A lambda cannot run in a child process: ValueError saying so.
        """
        dispatcher, _ = make()
        with self.assertRaises(ValueError) as caught:
            dispatcher.add_event_handler(lambda e: e, "during")
        self.assertIn("cannot run in a child process", str(caught.exception))

    def test_bad_options(self) -> None:
        """
        max_calls must be a positive int and timeout a positive number.
        """
        dispatcher, _ = make()
        for options in (
            {"max_calls": 0},
            {"max_calls": 1.5},
            {"max_calls": True},
            {"timeout": 0},
            {"timeout": -1},
            {"timeout": "1"},
        ):
            with self.assertRaises(ValueError):
                dispatcher.add_event_handler(module_handler, "during", **options)

    def test_unhashable_spec_value(self) -> None:
        """
        A match spec value must be hashable.
        """
        dispatcher, _ = make()
        with self.assertRaises(ValueError):
            dispatcher.add_event_handler(module_handler, "during", user=["bob"])

    def test_name_checked_by_pool(self) -> None:
        """
        A handler given by name is checked by the pool (which starts for it) and
        registered once the check succeeds.
        """
        dispatcher, pool = make(FakePool(importable=[H]))
        self.assertEqual(
            self.successResultOf(dispatcher.add_event_handler(H, "during")), 1
        )
        self.assertEqual(pool.checks, [H])
        self.assertEqual(pool.starts, 1)
        self.assertEqual(dispatcher.stats().handlers, 1)

    def test_unimportable_name_fails(self) -> None:
        """
        A name the pool cannot import fails the Deferred with HandlerImportError
        naming the handler; nothing is registered; its id is not reused.
        """
        dispatcher, _ = make(FakePool(importable=[]))
        failure = self.failureResultOf(
            dispatcher.add_event_handler("no.such:thing", "during"), HandlerImportError
        )
        self.assertIn("no.such:thing", str(failure.value))
        self.assertEqual(dispatcher.stats().handlers, 0)
        self.assertEqual(
            self.successResultOf(
                dispatcher.add_event_handler(module_handler, "during")
            ),
            2,
        )

    def test_malformed_name_raises(self) -> None:
        """
        A string that is not of the form 'pkg.mod:attr' raises ValueError at once.
        """
        dispatcher, _ = make()
        with self.assertRaises(ValueError):
            dispatcher.add_event_handler("not a name", "during")

    def test_remove(self) -> None:
        """
        Removing fires with None; removing again, or an unknown id, fails with
        KeyError; ids are never reused.
        """
        dispatcher, _ = make()
        hid = self.successResultOf(
            dispatcher.add_event_handler(module_handler, "during")
        )
        self.assertIsNone(self.successResultOf(dispatcher.remove_event_handler(hid)))
        self.failureResultOf(dispatcher.remove_event_handler(hid), KeyError)
        self.failureResultOf(dispatcher.remove_event_handler(999), KeyError)
        self.assertEqual(
            self.successResultOf(
                dispatcher.add_event_handler(module_handler, "during")
            ),
            hid + 1,
        )

    def test_match_keywords_change(self) -> None:
        """
        Keywords can be added after construction and removed while no spec uses
        them; a used keyword, an unknown one, or a reserved name is refused.
        """
        dispatcher, _ = make()
        dispatcher.add_match_spec_keyword("tenant")
        hid = self.successResultOf(
            dispatcher.add_event_handler(module_handler, "during", tenant="acme")
        )
        with self.assertRaises(ValueError):
            dispatcher.remove_match_spec_keyword("tenant")
        with self.assertRaises(ValueError):
            dispatcher.remove_match_spec_keyword("nope")
        with self.assertRaises(ValueError):
            dispatcher.add_match_spec_keyword("max_calls")
        self.successResultOf(dispatcher.remove_event_handler(hid))
        dispatcher.remove_match_spec_keyword("tenant")
        self.assertNotIn("tenant", dispatcher.allowed_match_spec_keywords)
        with self.assertRaises(ValueError):
            dispatcher.add_event_handler(module_handler, "during", tenant="acme")


class FireTests(SynchronousTestCase):
    def test_not_running(self) -> None:
        """
        Firing before start, or after stop, fails with NotRunningError; nothing
        reaches the pool.
        """
        dispatcher, pool = make()
        self.successResultOf(dispatcher.add_event_handler(module_handler, "during"))
        self.failureResultOf(dispatcher.fire_event({}), NotRunningError)
        dispatcher.start()
        self.successResultOf(dispatcher.stop())
        self.failureResultOf(dispatcher.fire_event({}), NotRunningError)
        self.assertEqual(pool.calls, [])
        self.assertEqual(dispatcher.stats().accepted, 0)

    def test_bad_keywords(self) -> None:
        """
        A keyword that is not allowed, or an unhashable value, raises ValueError.
        """
        dispatcher, _ = make()
        dispatcher.start()
        with self.assertRaises(ValueError):
            dispatcher.fire_event({}, colour="red")
        with self.assertRaises(ValueError):
            dispatcher.fire_event({}, user=["bob"])

    def test_unencodable_and_too_large(self) -> None:
        """
        An event the codec cannot carry, or one above the cap, fails fire_event
        and is not accepted.
        """
        dispatcher, _ = make(max_event_size=100)
        dispatcher.start()
        self.failureResultOf(dispatcher.fire_event(object()), EventEncodingError)
        self.failureResultOf(dispatcher.fire_event("x" * 200), EventTooLargeError)
        self.assertEqual(dispatcher.stats().accepted, 0)

    def test_no_handlers(self) -> None:
        """
        An event nobody matches finishes at once with an empty, ok result.
        """
        dispatcher, _ = make()
        dispatcher.start()
        result = self.successResultOf(dispatcher.fire_event({}, user="bob"))
        self.assertEqual(result, DispatchResult(()))
        self.assertTrue(result.ok)

    def test_matching(self) -> None:
        """
        Equality on constrained keywords; None constrains nothing; a keyword the
        event lacks does not match a constrained spec; an empty spec matches all.
        """
        dispatcher, pool = make(FakePool(answer=ok_all))
        dispatcher.start()
        add = dispatcher.add_event_handler
        by_role = self.successResultOf(add(module_handler, "during", role="user"))
        wildcard = self.successResultOf(add(module_handler, "during", role=None))
        everyone = self.successResultOf(add(module_handler, "during"))
        bob = self.successResultOf(
            add(module_handler, "during", user="bob", role="user")
        )

        def matched(**keywords: Any) -> list[int]:
            result = self.successResultOf(dispatcher.fire_event({}, **keywords))
            return [o.handler_id for o in result.outcomes]

        self.assertEqual(
            matched(user="bob", role="user"), [by_role, wildcard, everyone, bob]
        )
        self.assertEqual(
            matched(user="eve", role="user"), [by_role, wildcard, everyone]
        )
        self.assertEqual(matched(user="bob"), [wildcard, everyone])
        self.assertEqual(matched(), [wildcard, everyone])

    def test_phases_in_order(self) -> None:
        """
        Every handler of a phase starts together; the next phase starts only
        after each of them has an outcome; outcomes come in phase order, then
        registration order.
        """
        dispatcher, pool = make()
        dispatcher.start()
        after = self.successResultOf(
            dispatcher.add_event_handler(module_handler, "after")
        )
        before1 = self.successResultOf(
            dispatcher.add_event_handler(module_handler, "before")
        )
        before2 = self.successResultOf(
            dispatcher.add_event_handler(other_handler, "before")
        )
        d = dispatcher.fire_event({"n": 1})
        self.assertEqual(
            [c.invocation.handler_id for c in pool.pending()], [before1, before2]
        )
        pool.pending()[1].succeed("second")
        self.assertEqual(len(pool.pending()), 1)
        self.assertNoResult(d)
        pool.pending()[0].succeed("first")
        self.assertEqual([c.invocation.handler_id for c in pool.pending()], [after])
        self.assertEqual(pool.pending()[0].invocation.phase, "after")
        pool.pending()[0].succeed("last")
        result = self.successResultOf(d)
        self.assertEqual(
            [(o.handler_id, o.phase, o.value) for o in result.outcomes],
            [
                (before1, "before", "first"),
                (before2, "before", "second"),
                (after, "after", "last"),
            ],
        )

    def test_event_encoded_once(self) -> None:
        """
        All invocations of one event share the same encoded bytes.
        """
        dispatcher, pool = make()
        dispatcher.start()
        self.successResultOf(dispatcher.add_event_handler(module_handler, "before"))
        self.successResultOf(dispatcher.add_event_handler(other_handler, "before"))
        dispatcher.fire_event({"n": 1})
        first, second = pool.pending()
        self.assertIs(first.invocation.event, second.invocation.event)

    def test_failure_does_not_stop_others(self) -> None:
        """
        A failing handler is an outcome: the other handlers of its phase and the
        later phases still run, and fire_event succeeds.
        """
        dispatcher, pool = make()
        dispatcher.start()
        bad = self.successResultOf(
            dispatcher.add_event_handler(module_handler, "before")
        )
        self.successResultOf(dispatcher.add_event_handler(other_handler, "before"))
        self.successResultOf(dispatcher.add_event_handler(module_handler, "after"))
        d = dispatcher.fire_event({})
        pool.pending()[0].fail("error", "KeyError", "'x'")
        pool.pending()[0].succeed()
        pool.pending()[0].succeed()
        result = self.successResultOf(d)
        self.assertFalse(result.ok)
        self.assertEqual([o.handler_id for o in result.failures], [bad])
        self.assertEqual([o.status for o in result.outcomes], ["error", "ok", "ok"])
        self.assertEqual(result.failures[0].error_type, "KeyError")

    def test_skip_after_failure(self) -> None:
        """
        With skip_after_failure, a failed phase makes later handlers skipped,
        and a skipped max_calls handler keeps its unused call.
        """
        dispatcher, pool = make(skip_after_failure=True)
        dispatcher.start()
        self.successResultOf(dispatcher.add_event_handler(module_handler, "before"))
        later = self.successResultOf(
            dispatcher.add_event_handler(module_handler, "after", max_calls=1)
        )
        d = dispatcher.fire_event({})
        pool.pending()[0].fail("timeout")
        result = self.successResultOf(d)
        self.assertEqual([o.status for o in result.outcomes], ["timeout", "skipped"])
        d = dispatcher.fire_event({})
        pool.pending()[0].succeed()
        self.assertEqual(pool.pending()[0].invocation.handler_id, later)

    def test_removed_after_acceptance_is_skipped(self) -> None:
        """
        A handler removed after the event was accepted, before its phase ran,
        ends "skipped"; one added after acceptance does not run for that event.
        """
        dispatcher, pool = make()
        dispatcher.start()
        self.successResultOf(dispatcher.add_event_handler(module_handler, "before"))
        doomed = self.successResultOf(
            dispatcher.add_event_handler(module_handler, "after")
        )
        d = dispatcher.fire_event({})
        self.successResultOf(dispatcher.remove_event_handler(doomed))
        self.successResultOf(dispatcher.add_event_handler(other_handler, "after"))
        pool.pending()[0].succeed()
        result = self.successResultOf(d)
        self.assertEqual([o.status for o in result.outcomes], ["ok", "skipped"])
        self.assertEqual(result.outcomes[1].handler_id, doomed)
        self.assertEqual(pool.pending(), [])

    def test_max_calls_exact_in_flight(self) -> None:
        """
        With 50 events in flight, a max_calls=7 handler runs for exactly the
        first 7, then is removed (removing it again fails with KeyError).
        """
        dispatcher, pool = make(max_in_flight=50)
        dispatcher.start()
        limited = self.successResultOf(
            dispatcher.add_event_handler(module_handler, "during", max_calls=7)
        )
        self.successResultOf(dispatcher.add_event_handler(other_handler, "during"))
        results = [dispatcher.fire_event({"n": n}) for n in range(50)]
        self.assertEqual(len(pool.pending()), 57)
        for call in pool.pending():
            call.succeed()
        runs = [
            n
            for n, d in enumerate(results)
            if limited in [o.handler_id for o in self.successResultOf(d).outcomes]
        ]
        self.assertEqual(runs, list(range(7)))
        self.failureResultOf(dispatcher.remove_event_handler(limited), KeyError)
        self.assertEqual(dispatcher.stats().handlers, 1)

    def test_serial_by_default(self) -> None:
        """
        By default one event at a time goes through all its phases, in fire
        order.
        """
        dispatcher, pool = make()
        dispatcher.start()
        self.successResultOf(dispatcher.add_event_handler(module_handler, "before"))
        self.successResultOf(dispatcher.add_event_handler(module_handler, "after"))
        first = dispatcher.fire_event({"n": 1})
        second = dispatcher.fire_event({"n": 2})
        self.assertEqual(dispatcher.stats().queued, 1)
        order = []
        while pool.pending():
            call = pool.pending()[0]
            order.append((call.invocation.event, call.invocation.phase))
            call.succeed()
        self.assertEqual(
            order,
            [
                (b'{"n":1}', "before"),
                (b'{"n":1}', "after"),
                (b'{"n":2}', "before"),
                (b'{"n":2}', "after"),
            ],
        )
        self.successResultOf(first)
        self.successResultOf(second)

    def test_max_in_flight(self) -> None:
        """
        max_in_flight=N lets N events run their phases at once; the rest queue.
        """
        dispatcher, pool = make(max_in_flight=3)
        dispatcher.start()
        self.successResultOf(dispatcher.add_event_handler(module_handler, "during"))
        results = [dispatcher.fire_event({"n": n}) for n in range(5)]
        self.assertEqual(len(pool.pending()), 3)
        stats = dispatcher.stats()
        self.assertEqual((stats.in_flight, stats.queued), (3, 2))
        pool.pending()[1].succeed()
        self.assertEqual(len(pool.pending()), 3)
        self.successResultOf(results[1])
        self.assertNoResult(results[0])

    def test_order_by(self) -> None:
        """
        With order_by, events sharing that keyword's value run one after the
        other in fire order, while others run alongside.
        """
        dispatcher, pool = make(max_in_flight=10, order_by="user")
        dispatcher.start()
        self.successResultOf(dispatcher.add_event_handler(module_handler, "during"))
        dispatcher.fire_event({"n": 1}, user="bob")
        dispatcher.fire_event({"n": 2}, user="bob")
        dispatcher.fire_event({"n": 3}, user="eve")
        dispatcher.fire_event({"n": 4})
        dispatcher.fire_event({"n": 5})
        self.assertEqual(
            [c.invocation.event for c in pool.pending()],
            [b'{"n":1}', b'{"n":3}', b'{"n":4}'],
        )
        pool.pending()[0].succeed()
        pool.pending()[1].succeed()
        self.assertEqual(
            [c.invocation.event for c in pool.pending()],
            [b'{"n":3}', b'{"n":2}', b'{"n":5}'],
        )
        for call in pool.pending():
            call.succeed()
        stats = dispatcher.stats()
        self.assertEqual(
            (stats.accepted, stats.finished, stats.in_flight, stats.queued),
            (5, 5, 0, 0),
        )


class LifecycleTests(SynchronousTestCase):
    def test_stop_drains(self) -> None:
        """
        stop() refuses new events at once, lets in-flight and queued events
        finish, then stops the pool; stats hold accepted == finished +
        in_flight + queued throughout.
        """
        dispatcher, pool = make()
        dispatcher.start()
        self.successResultOf(dispatcher.add_event_handler(module_handler, "during"))
        first = dispatcher.fire_event({"n": 1})
        second = dispatcher.fire_event({"n": 2})
        stopped = dispatcher.stop()
        self.assertFalse(dispatcher.running)
        self.failureResultOf(dispatcher.fire_event({"n": 3}), NotRunningError)
        self.assertNoResult(stopped)
        self.assertEqual(pool.stops, 0)
        while pool.pending():
            stats = dispatcher.stats()
            self.assertEqual(
                stats.accepted, stats.finished + stats.in_flight + stats.queued
            )
            pool.pending()[0].succeed()
        self.successResultOf(first)
        self.successResultOf(second)
        self.successResultOf(stopped)
        self.assertEqual(pool.stops, 1)

    def test_restart_keeps_handlers(self) -> None:
        """
        start() after stop() runs again, with the handlers still registered.
        """
        dispatcher, pool = make(FakePool(answer=ok_all))
        dispatcher.start()
        hid = self.successResultOf(
            dispatcher.add_event_handler(module_handler, "during")
        )
        self.successResultOf(dispatcher.stop())
        self.successResultOf(dispatcher.start())
        self.assertTrue(dispatcher.running)
        result = self.successResultOf(dispatcher.fire_event({}))
        self.assertEqual([o.handler_id for o in result.outcomes], [hid])
        self.assertEqual(pool.starts, 2)

    def test_stop_twice(self) -> None:
        """
        A second stop() while the first drains fires when the first does.
        """
        dispatcher, pool = make()
        dispatcher.start()
        self.successResultOf(dispatcher.add_event_handler(module_handler, "during"))
        dispatcher.fire_event({})
        first = dispatcher.stop()
        second = dispatcher.stop()
        self.assertNoResult(second)
        pool.pending()[0].succeed()
        self.successResultOf(first)
        self.successResultOf(second)
        self.assertEqual(pool.stops, 1)

    def test_stop_before_start(self) -> None:
        """
        Stopping a dispatcher that never started succeeds.
        """
        dispatcher, _ = make()
        self.successResultOf(dispatcher.stop())


class OverloadTests(SynchronousTestCase):
    def test_full_queue_fails(self) -> None:
        """
        With max_queue=2, a third queued event fails at once with
        OverloadedError and is not accepted; stats count it as rejected.
        """
        dispatcher, pool = make(max_queue=2)
        dispatcher.start()
        self.successResultOf(dispatcher.add_event_handler(module_handler, "during"))
        running = dispatcher.fire_event({"n": 0})
        queued = [dispatcher.fire_event({"n": n}) for n in (1, 2)]
        self.failureResultOf(dispatcher.fire_event({"n": 3}), OverloadedError)
        stats = dispatcher.stats()
        self.assertEqual((stats.accepted, stats.queued, stats.rejected), (3, 2, 1))
        while pool.pending():
            pool.pending()[0].succeed()
        for d in [running, *queued]:
            self.successResultOf(d)

    def test_full_queue_waits(self) -> None:
        """
        With on_overload="wait", a fire_event on a full queue waits, not
        accepted, until there is room, then runs in fire order.
        """
        dispatcher, pool = make(max_queue=1, on_overload="wait")
        dispatcher.start()
        self.successResultOf(dispatcher.add_event_handler(module_handler, "during"))
        results = [dispatcher.fire_event({"n": n}) for n in range(4)]
        stats = dispatcher.stats()
        self.assertEqual((stats.accepted, stats.queued, stats.waiting), (2, 1, 2))
        seen = []
        while pool.pending():
            call = pool.pending()[0]
            seen.append(call.invocation.event)
            call.succeed()
        self.assertEqual(seen, [b'{"n":%d}' % n for n in range(4)])
        for d in results:
            self.successResultOf(d)

    def test_waiting_events_fail_on_stop(self) -> None:
        """
        Events still waiting for room when stop() is called fail with
        NotRunningError: they were never accepted.
        """
        dispatcher, pool = make(max_queue=0, on_overload="wait")
        dispatcher.start()
        self.successResultOf(dispatcher.add_event_handler(module_handler, "during"))
        running = dispatcher.fire_event({"n": 0})
        waiting = dispatcher.fire_event({"n": 1})
        stopped = dispatcher.stop()
        self.failureResultOf(waiting, NotRunningError)
        pool.pending()[0].succeed()
        self.successResultOf(running)
        self.successResultOf(stopped)


class DrainTimeoutTests(SynchronousTestCase):
    def test_drain_timeout(self) -> None:
        """
        stop(drain_timeout) waits that long for accepted events, then aborts
        the pool (running invocations end "timeout") and skips every
        invocation not started, in flight and queued events alike; each event
        still gets its result and stats balance.
        """
        clock = Clock()
        pool = FakePool()
        dispatcher = EventDispatcher(
            ("user",), ("one", "two"), reactor=clock, pool=pool
        )
        dispatcher.start()
        self.successResultOf(dispatcher.add_event_handler(module_handler, "one"))
        self.successResultOf(dispatcher.add_event_handler(other_handler, "two"))
        first = dispatcher.fire_event({"n": 1})
        second = dispatcher.fire_event({"n": 2})
        stopped = dispatcher.stop(drain_timeout=5)
        clock.advance(4.9)
        self.assertNoResult(stopped)
        clock.advance(0.2)
        self.assertEqual(len(pool.aborts), 1)
        self.assertEqual(
            [o.status for o in self.successResultOf(first).outcomes],
            ["timeout", "skipped"],
        )
        self.assertEqual(
            [o.status for o in self.successResultOf(second).outcomes],
            ["skipped", "skipped"],
        )
        self.successResultOf(stopped)
        stats = dispatcher.stats()
        self.assertEqual(
            (stats.accepted, stats.finished, stats.in_flight, stats.queued),
            (2, 2, 0, 0),
        )
        self.assertEqual(pool.calls[-1].invocation.phase, "one")

    def test_stop_again_shortens_the_drain(self) -> None:
        """
        stop(drain_timeout=...) on a dispatcher already stopping ends the drain
        within that time (0: on the reactor's next turn), but never later than
        a deadline it has already; every stop() Deferred fires once stopped,
        and no timer is left behind.
        """
        for first, then, abort_at in ((None, [10, 20], 10), (None, [0], 0)):
            clock = Clock()
            pool = FakePool()
            dispatcher = EventDispatcher(("user",), ("one",), reactor=clock, pool=pool)
            dispatcher.start()
            self.successResultOf(dispatcher.add_event_handler(module_handler, "one"))
            fired = dispatcher.fire_event({"n": 1})
            stops = [dispatcher.stop(drain_timeout=first)]
            stops += [dispatcher.stop(drain_timeout=t) for t in then]
            if abort_at:
                clock.advance(abort_at - 0.1)
                self.assertEqual(pool.aborts, [])
                clock.advance(0.1)
            else:
                clock.advance(0)
            self.assertEqual(len(pool.aborts), 1)
            (outcome,) = self.successResultOf(fired).outcomes
            self.assertEqual(outcome.status, "timeout")
            for stopped in stops:
                self.successResultOf(stopped)
            self.assertEqual(clock.getDelayedCalls(), [])


class RetryTests(SynchronousTestCase):
    def test_retries_on_crash_and_timeout_only(self) -> None:
        """
        retries=2: a crashed or timed-out invocation runs again, up to 1 + 2
        times in all, with one outcome (the last); an "error" is never retried.
        """
        dispatcher, pool = make()
        dispatcher.start()
        flaky = self.successResultOf(
            dispatcher.add_event_handler(module_handler, "during", retries=2)
        )
        d = dispatcher.fire_event({})
        pool.pending()[0].fail("crashed")
        pool.pending()[0].fail("timeout")
        pool.pending()[0].succeed("third time")
        result = self.successResultOf(d)
        self.assertEqual(
            [(o.handler_id, o.status, o.value) for o in result.outcomes],
            [(flaky, "ok", "third time")],
        )
        self.assertEqual(len(pool.calls), 3)
        d = dispatcher.fire_event({})
        for _ in range(3):
            pool.pending()[0].fail("crashed")
        self.assertEqual(pool.pending(), [])
        self.assertEqual(
            [o.status for o in self.successResultOf(d).outcomes], ["crashed"]
        )
        d = dispatcher.fire_event({})
        pool.pending()[0].fail("error")
        self.assertEqual(pool.pending(), [])
        self.assertEqual(
            [o.status for o in self.successResultOf(d).outcomes], ["error"]
        )

    def test_bad_retries(self) -> None:
        """
        retries must be a non-negative int; "retries" is not a match keyword.
        """
        dispatcher, _ = make()
        for bad in (-1, 1.5, True, "2"):
            with self.assertRaises(ValueError):
                dispatcher.add_event_handler(module_handler, "during", retries=bad)
        with self.assertRaises(ValueError):
            EventDispatcher(("retries",), reactor=Clock(), pool=FakePool())


class PoolSeamTests(SynchronousTestCase):
    def test_handlers_run_in_their_pool(self) -> None:
        """
        A handler added with pool="remote" runs there; the default pool gets
        the others; start() and stop() reach every pool.
        """
        dispatcher, local = make()
        remote = FakePool()
        self.successResultOf(dispatcher.add_pool("remote", remote))
        self.assertEqual(remote.starts, 0)
        dispatcher.start()
        self.assertEqual((local.starts, remote.starts), (1, 1))
        here = self.successResultOf(
            dispatcher.add_event_handler(module_handler, "during")
        )
        there = self.successResultOf(
            dispatcher.add_event_handler(other_handler, "during", pool="remote")
        )
        d = dispatcher.fire_event({})
        self.assertEqual([c.invocation.handler_id for c in local.pending()], [here])
        self.assertEqual([c.invocation.handler_id for c in remote.pending()], [there])
        local.pending()[0].succeed()
        remote.pending()[0].succeed()
        self.assertTrue(self.successResultOf(d).ok)
        self.successResultOf(dispatcher.stop())
        self.assertEqual((local.stops, remote.stops), (1, 1))

    def test_add_pool_while_running_starts_it(self) -> None:
        """
        A pool added while the dispatcher runs starts at once; names are unique
        and "pool" is not a match keyword.
        """
        dispatcher, _ = make()
        dispatcher.start()
        remote = FakePool()
        self.successResultOf(dispatcher.add_pool("remote", remote))
        self.assertEqual(remote.starts, 1)
        with self.assertRaises(ValueError):
            dispatcher.add_pool("remote", FakePool())
        with self.assertRaises(ValueError):
            dispatcher.add_event_handler(module_handler, "during", pool="nowhere")
        with self.assertRaises(ValueError):
            EventDispatcher(("pool",), reactor=Clock(), pool=FakePool())

    def test_remove_pool(self) -> None:
        """
        Removing a pool removes its handlers (planned invocations end skipped)
        and stops it; the default pool cannot be removed.
        """
        dispatcher, local = make()
        remote = FakePool()
        dispatcher.add_pool("remote", remote)
        dispatcher.start()
        self.successResultOf(dispatcher.add_event_handler(module_handler, "before"))
        gone = self.successResultOf(
            dispatcher.add_event_handler(other_handler, "after", pool="remote")
        )
        d = dispatcher.fire_event({})
        self.successResultOf(dispatcher.remove_pool("remote"))
        self.assertEqual(remote.stops, 1)
        local.pending()[0].succeed()
        result = self.successResultOf(d)
        self.assertEqual(
            [(o.handler_id, o.status) for o in result.outcomes][1], (gone, "skipped")
        )
        self.failureResultOf(dispatcher.remove_event_handler(gone), KeyError)
        with self.assertRaises(ValueError):
            dispatcher.remove_pool("default")
        with self.assertRaises(KeyError):
            dispatcher.remove_pool("remote")


class BrokenPool(FakePool):
    """
    A pool that breaks its contract: its Deferred fails instead of firing
    with an outcome.
    """

    def invoke(self, invocation: Any) -> Any:
        from twisted.internet.defer import fail

        return fail(RuntimeError("pool bug"))


class JobSeamTests(SynchronousTestCase):
    """
    Pools of the L{IJobPool} seam are handed a phase's jobs together and
    settle them; other pools get one C{invoke} each.
    """

    def test_interface(self) -> None:
        """
        FakeJobPool and the local ampoule pool provide IJobPool (and so
        IHandlerPool).
        """
        from actordispatch import AmpoulePool

        self.assertTrue(verifyObject(IJobPool, FakeJobPool()))
        self.assertTrue(verifyObject(IJobPool, AmpoulePool(reactor=Clock())))

    def test_phase_submitted_together(self) -> None:
        """
        A phase's three handlers reach the job pool in one submit, the next
        phase's in another; each job settled gives its outcome, in slot order.
        """
        pool = FakeJobPool()
        dispatcher, _ = make(pool)
        dispatcher.start()
        ids = [
            self.successResultOf(dispatcher.add_event_handler(h, "during"))
            for h in (module_handler, other_handler, module_handler)
        ]
        after = self.successResultOf(dispatcher.add_event_handler(H, "after"))
        d = dispatcher.fire_event({})
        self.assertEqual(pool.submits, [3])
        for call in reversed(pool.pending()):
            call.succeed(call.invocation.handler_id)
        self.assertEqual(pool.submits, [3, 1])
        pool.pending()[0].succeed("last")
        result = self.successResultOf(d)
        self.assertEqual(
            [(o.handler_id, o.value) for o in result.outcomes],
            [*((i, i) for i in ids), (after, "last")],
        )

    def test_settled_inside_submit(self) -> None:
        """
        A pool may settle jobs before submit returns (a refusal, or an answer
        at once): every event still gets its result, phases in order.
        """
        dispatcher, pool = make(FakeJobPool(answer=ok_all))
        dispatcher.start()
        for phase in ("before", "during", "after"):
            self.successResultOf(dispatcher.add_event_handler(module_handler, phase))
        results = [self.successResultOf(dispatcher.fire_event({})) for _ in range(3)]
        for result in results:
            self.assertEqual(
                [o.phase for o in result.outcomes], ["before", "during", "after"]
            )
            self.assertTrue(result.ok)
        self.assertEqual(dispatcher.stats().in_flight, 0)

    def test_retry_resubmits_the_job(self) -> None:
        """
        A crashed job with retries left is submitted again, alone; its final
        outcome is the last one.
        """
        dispatcher, pool = make(FakeJobPool())
        dispatcher.start()
        self.successResultOf(
            dispatcher.add_event_handler(module_handler, "during", retries=1)
        )
        d = dispatcher.fire_event({})
        pool.pending()[0].fail("crashed")
        self.assertEqual(pool.submits, [1, 1])
        pool.pending()[0].succeed("again")
        self.assertEqual([o.value for o in self.successResultOf(d).outcomes], ["again"])

    def test_two_pools_one_submit_each(self) -> None:
        """
        A phase whose handlers live in two job pools hands each pool its own
        jobs, in one submit each.
        """
        local = FakeJobPool()
        dispatcher, _ = make(local)
        remote = FakeJobPool()
        dispatcher.add_pool("remote", remote)
        dispatcher.start()
        for pool in ("default", "remote", "default"):
            self.successResultOf(
                dispatcher.add_event_handler(module_handler, "during", pool=pool)
            )
        d = dispatcher.fire_event({})
        self.assertEqual((local.submits, remote.submits), ([2], [1]))
        for call in local.pending() + remote.pending():
            call.succeed()
        self.assertEqual(len(self.successResultOf(d).outcomes), 3)

    def test_broken_pool_still_gives_an_outcome(self) -> None:
        """
        A Deferred pool that fails an invocation instead of answering: the
        invocation ends "crashed", naming the failure, and the failure is
        logged, not left unhandled.
        """
        dispatcher, _ = make(BrokenPool())
        dispatcher.start()
        self.successResultOf(dispatcher.add_event_handler(module_handler, "during"))
        result = self.successResultOf(dispatcher.fire_event({}))
        (outcome,) = result.outcomes
        self.assertEqual(
            (outcome.status, outcome.error_type, outcome.error_message),
            ("crashed", "builtins.RuntimeError", "pool bug"),
        )
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)


class IntrospectionTests(SynchronousTestCase):
    def test_handlers_listing(self) -> None:
        """
        handlers() lists each live handler with its pool, spec, options, call
        and failure counts and latency percentiles over its outcomes.
        """
        dispatcher, pool = make()
        dispatcher.start()
        hid = self.successResultOf(
            dispatcher.add_event_handler(
                module_handler, "during", user="bob", timeout=2
            )
        )
        (info,) = dispatcher.handlers()
        self.assertEqual(
            (info.handler_id, info.phase, info.pool, info.match_spec, info.timeout),
            (hid, "during", "default", {"user": "bob"}, 2.0),
        )
        self.assertEqual((info.calls, info.failures, info.p50), (0, 0, None))
        for n in range(10):
            dispatcher.fire_event({}, user="bob")
            call = pool.pending()[0]
            if n == 9:
                call.fail("crashed")
            else:
                call.succeed(duration=(n + 1) / 100)
        (info,) = dispatcher.handlers()
        self.assertEqual((info.calls, info.failures), (10, 1))
        self.assertEqual(info.p50, 0.05)
        self.assertEqual(info.p99, 0.09)
        self.successResultOf(dispatcher.remove_event_handler(hid))
        self.assertEqual(dispatcher.handlers(), [])


class TraceTests(SynchronousTestCase):
    def test_trace_events(self) -> None:
        """
        With trace=True, structured log events record an event's acceptance,
        each phase's start and end, and each handler's outcome, with their
        fields; without it, none are emitted.
        """
        from twisted.logger import globalLogPublisher

        seen: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(seen.append)
        self.addCleanup(globalLogPublisher.removeObserver, seen.append)
        for trace in (False, True):
            del seen[:]
            dispatcher, pool = make(FakePool(answer=ok_all), trace=trace)
            dispatcher.start()
            self.successResultOf(dispatcher.add_event_handler(module_handler, "during"))
            self.successResultOf(dispatcher.fire_event({}, user="bob"))
            traced = [
                e for e in seen if e.get("log_format", "").startswith("event {event}")
            ]
            if not trace:
                self.assertEqual(traced, [])
                continue
            self.assertEqual(len(traced), 4)
            accepted, started, outcome, done = traced
            self.assertEqual(accepted["keywords"], {"user": "bob"})
            self.assertEqual((started["phase"], started["count"]), ("during", 1))
            self.assertEqual((outcome["handler_id"], outcome["status"]), (1, "ok"))
            self.assertEqual((done["ok"], done["total"]), (1, 1))
