"""
Integration tests: a real dispatcher with real ampoule children over AMP.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import tempfile
import time
from typing import Any

from twisted.internet import defer, reactor, utils
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from actordispatch import EventDispatcher, HandlerImportError
from actordispatch.examples.user_created import UserEvent
from tests.integration import handlers

H = "tests.integration.handlers:"


class RealChildrenTestCase(TestCase):
    """
    Creates dispatchers with two real children and always stops them.
    """

    timeout = 60

    def dispatcher(self, **kwargs: Any) -> EventDispatcher:
        if "pool" not in kwargs:  # pool_size with pool= is refused
            kwargs.setdefault("pool_size", 2)
        kwargs.setdefault("allowed_match_spec_keywords", ("event_type", "user", "role"))
        dispatcher = EventDispatcher(**kwargs)
        self.addCleanup(dispatcher.stop)
        return dispatcher


class ScenarioTests(RealChildrenTestCase):
    @defer.inlineCallbacks
    def test_readme_scenario(self) -> Any:
        """
        The original README scenario: a handler added by name before start runs
        in a child process (another pid) and receives an equal UserEvent, rebuilt
        as the same namedtuple class.
        """
        d = self.dispatcher()
        hid = yield d.add_event_handler(H + "describe", "during", role="user")
        notify = yield d.add_event_handler(
            "actordispatch.examples.user_created:notify_admin", "during", role="user"
        )
        d.start()
        event = UserEvent("user_created", "bob", "user", "1234")
        result = yield d.fire_event(
            event, event_type="user_created", user="bob", role="user"
        )
        self.assertTrue(result.ok, result)
        described, notified = result.outcomes
        self.assertEqual(described.handler_id, hid)
        self.assertEqual(
            described.value,
            {
                "type": "actordispatch.examples.user_created:UserEvent",
                "fields": event._asdict(),
                "pid": described.pid,
            },
        )
        self.assertNotEqual(described.pid, os.getpid())
        self.assertEqual(notified.handler_id, notify)
        self.assertEqual(notified.value, "admin notified: user bob (1234) user_created")
        self.assertGreater(described.duration, 0)
        listed = {info.handler_id: info for info in d.handlers()}
        self.assertEqual(listed[hid].calls, 1)
        self.assertIn(described.pid, listed[hid].child_pids)
        self.assertEqual(len(listed[hid].child_pids), 2)
        other = yield d.fire_event(event, event_type="user_created", role="admin")
        self.assertEqual(other.outcomes, ())

    @defer.inlineCallbacks
    def test_phase_waits_for_slow_handler(self) -> Any:
        """
        Phase 2 starts only after phase 1's slow handler replied.
        """
        d = self.dispatcher(phases=("first", "second"))
        yield d.start()
        yield d.add_event_handler(H + "slow", "first")
        yield d.add_event_handler(H + "now", "second")
        result = yield d.fire_event({"seconds": 0.5})
        finished, started = (o.value for o in result.outcomes)
        self.assertGreaterEqual(started, finished)
        self.assertGreaterEqual(result.outcomes[0].duration, 0.5)

    @defer.inlineCallbacks
    def test_deep_queue_behind_a_running_event(self) -> Any:
        """
        Behind an event whose handler runs in a child, 20,000 queued events
        that match no handler are all answered once it ends, the counters
        hold, and the next event runs in a child again.
        """
        d = self.dispatcher(max_queue=None)
        yield d.start()
        yield d.add_event_handler(H + "slow", "during", user="slow")
        first = d.fire_event({"seconds": 0.2}, user="slow")
        rest = [d.fire_event({}, user="nobody") for _ in range(20_000)]
        self.assertEqual(d.stats().queued, 20_000)
        results = yield defer.gatherResults([first, *rest])
        self.assertEqual(results[0].outcomes[0].status, "ok")
        self.assertTrue(all(not r.outcomes for r in results[1:]))
        stats = d.stats()
        self.assertEqual((stats.in_flight, stats.queued), (0, 0))
        self.assertEqual(stats.finished, stats.accepted)
        again = yield d.fire_event({"seconds": 0}, user="slow")
        self.assertTrue(again.ok, again)

    @defer.inlineCallbacks
    def test_raising_handler(self) -> Any:
        """
        A raising handler gives an "error" outcome with the child's exception
        type, message and traceback, while the other handlers of its phase and
        the later phases still run.
        """
        d = self.dispatcher()
        yield d.start()
        bad = yield d.add_event_handler(H + "boom", "before")
        yield d.add_event_handler(H + "pid", "before")
        yield d.add_event_handler(H + "pid", "after")
        result = yield d.fire_event({"x": 1})
        self.assertEqual([o.status for o in result.outcomes], ["error", "ok", "ok"])
        (failure,) = result.failures
        self.assertEqual(failure.handler_id, bad)
        self.assertEqual(failure.error_type, "ValueError")
        self.assertEqual(failure.error_message, "boom for {'x': 1}")
        self.assertIn("in boom", failure.traceback)
        self.assertIsNotNone(failure.pid)
        again = yield d.fire_event({"x": 2})
        self.assertEqual([o.status for o in again.outcomes], ["error", "ok", "ok"])

    @defer.inlineCallbacks
    def test_max_calls_exact_with_50_in_flight(self) -> Any:
        """
        max_calls=5 runs exactly five times with 50 events in flight, then the
        handler is gone.
        """
        d = self.dispatcher(max_in_flight=50)
        yield d.start()
        limited = yield d.add_event_handler(H + "echo", "during", max_calls=5)
        yield d.add_event_handler(H + "pid", "during")
        results = yield defer.gatherResults([d.fire_event({"n": n}) for n in range(50)])
        ran = [
            o.value["n"]
            for r in results
            for o in r.outcomes
            if o.handler_id == limited and o.ok
        ]
        self.assertEqual(sorted(ran), [0, 1, 2, 3, 4])
        self.assertTrue(all(r.ok for r in results))
        yield self.assertFailure(d.remove_event_handler(limited), KeyError)

    @defer.inlineCallbacks
    def test_async_handler(self) -> Any:
        """
        An async def handler runs on the child's reactor and its value returns.
        """
        d = self.dispatcher()
        yield d.start()
        yield d.add_event_handler(H + "async_double", "during")
        result = yield d.fire_event({"n": 21})
        self.assertEqual(result.outcomes[0].value, 42)

    @defer.inlineCallbacks
    def test_one_mib_event(self) -> Any:
        """
        A 1 MiB event (over AMP's 64 KiB value limit) and a 1 MiB result make
        the round trip intact.
        """
        d = self.dispatcher()
        yield d.start()
        yield d.add_event_handler(H + "digest", "during")
        yield d.add_event_handler(H + "echo", "after")
        blob = os.urandom(1024 * 1024)
        result = yield d.fire_event({"blob": blob})
        self.assertTrue(result.ok, result.failures)
        digest, echoed = result.outcomes
        self.assertEqual(
            digest.value,
            {"size": len(blob), "sha256": hashlib.sha256(blob).hexdigest()},
        )
        self.assertEqual(echoed.value, {"blob": blob})

    @defer.inlineCallbacks
    def test_sixteen_mib_event(self) -> Any:
        """
        Events of 16 MiB work (chunked over some 350 AMP values).
        """
        d = self.dispatcher(pool_size=1)
        yield d.start()
        yield d.add_event_handler(handlers.digest, "during")
        blob = os.urandom(16 * 1024 * 1024)
        result = yield d.fire_event({"blob": blob})
        self.assertTrue(result.ok, result.failures)
        self.assertEqual(result.outcomes[0].value["size"], len(blob))

    @defer.inlineCallbacks
    def test_fire_before_children_booted(self) -> Any:
        """
        Events fired right after start(), before the children have booted, wait
        for them and run; start()'s Deferred fires once the children answer.
        """
        d = self.dispatcher()
        yield d.add_event_handler(handlers.pid, "during")
        started = d.start()
        results = [d.fire_event({"n": n}) for n in range(3)]
        self.assertFalse(started.called)
        results = yield defer.gatherResults(results)
        self.assertTrue(all(r.ok for r in results))
        yield started

    @defer.inlineCallbacks
    def test_unimportable_handler(self) -> Any:
        """
        A handler name that a child cannot import fails add_event_handler with
        an error naming the handler, before and after start.
        """
        d = self.dispatcher()
        failure = yield self.assertFailure(
            d.add_event_handler("tests.integration.nowhere:handler", "during"),
            HandlerImportError,
        )
        self.assertIn("tests.integration.nowhere:handler", str(failure))
        self.assertIn("No module named", str(failure))
        yield d.start()
        failure = yield self.assertFailure(
            d.add_event_handler(H + "no_such_function", "during"), HandlerImportError
        )
        self.assertIn(H + "no_such_function", str(failure))
        self.assertEqual(d.stats().handlers, 0)

    @defer.inlineCallbacks
    def test_add_and_remove_while_in_flight(self) -> Any:
        """
        Handlers added and removed while events are in flight: each event runs
        the handlers that matched when it was accepted, minus those removed
        before their phase ran (skipped); nothing is lost.
        """
        d = self.dispatcher(max_in_flight=4)
        yield d.start()
        first = yield d.add_event_handler(H + "slow", "before")
        removed = yield d.add_event_handler(H + "pid", "after")
        early = [d.fire_event({"seconds": 0.2}) for _ in range(4)]
        # A callable registers at once (a name would wait for a free child).
        late_handler = yield d.add_event_handler(handlers.pid, "after")
        yield d.remove_event_handler(removed)
        late = yield d.fire_event({"seconds": 0.0})
        early_results = yield defer.gatherResults(early)
        for result in early_results:
            self.assertEqual(
                [(o.handler_id, o.status) for o in result.outcomes],
                [(first, "ok"), (removed, "skipped")],
            )
        self.assertEqual(
            [(o.handler_id, o.status) for o in late.outcomes],
            [(first, "ok"), (late_handler, "ok")],
        )
        stats = d.stats()
        self.assertEqual((stats.accepted, stats.finished), (5, 5))


class IsolationTests(RealChildrenTestCase):
    @defer.inlineCallbacks
    def test_explicit_environment(self) -> Any:
        """
        Children inherit no environment variables but PYTHONPATH and those the
        user passes.
        """
        os.environ["ACTORDISPATCH_TEST_SECRET"] = "hunter2"
        self.addCleanup(os.environ.pop, "ACTORDISPATCH_TEST_SECRET")
        d = self.dispatcher(child_env={"GREETING": "hello"})
        yield d.start()
        yield d.add_event_handler(H + "environment", "during")
        result = yield d.fire_event({})
        names = set(result.outcomes[0].value)
        self.assertNotIn("ACTORDISPATCH_TEST_SECRET", names)
        self.assertIn("GREETING", names)
        self.assertLessEqual(names - {"PYTHONPATH", "GREETING", "LC_CTYPE"}, set())

    @defer.inlineCallbacks
    def test_timeout_kills_child(self) -> Any:
        """
        A handler past its timeout ends "timeout"; its child is killed and a
        fresh one serves the next event.
        """
        d = self.dispatcher(pool_size=1)
        yield d.start()
        stuck = yield d.add_event_handler(H + "hang", "during", timeout=0.5)
        result = yield d.fire_event({})
        (outcome,) = result.outcomes
        self.assertEqual((outcome.handler_id, outcome.status), (stuck, "timeout"))
        self.assertIn("0.5", outcome.error_message)
        yield d.remove_event_handler(stuck)
        yield d.add_event_handler(H + "pid", "during")
        again = yield d.fire_event({})
        self.assertTrue(again.ok, again.failures)
        self.assertNotEqual(again.outcomes[0].pid, outcome.pid)

    @defer.inlineCallbacks
    def test_crash_mid_call(self) -> Any:
        """
        A child that exits mid-call gives a "crashed" outcome naming the exit
        code; the next event is served.
        """
        d = self.dispatcher(pool_size=1)
        yield d.start()
        crasher = yield d.add_event_handler(H + "exit_now", "during", max_calls=1)
        result = yield d.fire_event({})
        (outcome,) = result.outcomes
        self.assertEqual((outcome.handler_id, outcome.status), (crasher, "crashed"))
        self.assertIn("exit code 3", outcome.error_message)
        yield d.add_event_handler(H + "pid", "during")
        again = yield d.fire_event({})
        self.assertTrue(again.ok, again.failures)

    @defer.inlineCallbacks
    def test_replacement_child_is_warm(self) -> Any:
        """
        A child that replaces a dead one imports the pool's registered handlers
        while it boots: its first invocation of a handler whose module takes
        2 s to import does not pay for the import (it takes under half of
        that, a margin no busy machine closes).
        """
        d = self.dispatcher(pool_size=1, allowed_match_spec_keywords=("kind",))
        yield d.start()
        yield d.add_event_handler(
            "tests.integration.slow_import:handler", "during", kind="slow"
        )
        yield d.add_event_handler(H + "exit_now", "during", kind="crash")
        first = yield d.fire_event({}, kind="slow")
        crashed = yield d.fire_event({}, kind="crash")
        self.assertEqual(crashed.outcomes[0].status, "crashed")
        again = yield d.fire_event({}, kind="slow")
        self.assertTrue(again.ok, again.failures)
        self.assertNotEqual(again.outcomes[0].value, first.outcomes[0].value)
        self.assertLess(again.outcomes[0].duration, 1.0)

    @defer.inlineCallbacks
    def test_restart_with_fresh_children(self) -> Any:
        """
        stop() then start() serves again, with new child processes, and the
        handlers still registered.
        """
        d = self.dispatcher(pool_size=1)
        yield d.start()
        yield d.add_event_handler(H + "pid", "during")
        before = yield d.fire_event({})
        yield d.stop()
        yield d.start()
        after = yield d.fire_event({})
        self.assertTrue(after.ok)
        self.assertNotEqual(before.outcomes[0].value, after.outcomes[0].value)


class OperatorTests(RealChildrenTestCase):
    @defer.inlineCallbacks
    def test_operators_route_to_children(self) -> Any:
        """
        Handlers registered with operators run in real children for exactly
        the events their specs accept: In, Not, Glob, Present and Absent.
        """
        from actordispatch import Absent, Glob, In, Not, Present

        d = self.dispatcher()
        yield d.start()
        ids = {}
        for name, spec in [
            ("in", {"role": In("admin", "user")}),
            ("not", {"role": Not("guest")}),
            ("glob", {"user": Glob("b*")}),
            ("present", {"user": Present}),
            ("absent", {"user": Absent}),
            ("not_glob", {"user": Not(Glob("b*"))}),
        ]:
            handler_id = yield d.add_event_handler(H + "pid", "during", **spec)
            ids[handler_id] = name
        expectations = [
            ({"role": "user", "user": "bob"}, {"in", "not", "glob", "present"}),
            ({"role": "guest", "user": "ann"}, {"present", "not_glob"}),
            ({"role": "admin"}, {"in", "not", "absent"}),
            ({}, {"absent"}),
        ]
        for keywords, expected in expectations:
            result = yield d.fire_event({}, **keywords)
            self.assertTrue(result.ok, result.failures)
            self.assertEqual({ids[o.handler_id] for o in result.outcomes}, expected)


class LifetimeTests(RealChildrenTestCase):
    @defer.inlineCallbacks
    def test_expiry_and_owner_removal(self) -> Any:
        """
        With real children: a handler with C{expires=} runs until it expires,
        then no more; C{remove_event_handlers(owner=...)} removes a plugin's
        handlers and leaves the others running.
        """
        d = self.dispatcher()
        yield d.start()
        short = yield d.add_event_handler(H + "pid", "during", expires=0.5)
        plugin = yield d.add_event_handler(H + "pid", "during", owner="plugin")
        core = yield d.add_event_handler(H + "pid", "during")
        first = yield d.fire_event({})
        self.assertEqual(
            [o.handler_id for o in first.outcomes if o.ok], [short, plugin, core]
        )
        yield deferLater(reactor, 0.6, lambda: None)
        removed = yield d.remove_event_handlers(owner="plugin")
        self.assertEqual(removed, 1)
        later = yield d.fire_event({})
        self.assertEqual([o.handler_id for o in later.outcomes if o.ok], [core])


class BatchingTests(RealChildrenTestCase):
    @defer.inlineCallbacks
    def test_phase_shared_out_in_batches(self) -> Any:
        """
        A phase's invocations are handed to the pool together and shared out
        evenly: 20 handlers matching one event, with two idle children, go in
        two AMP calls of 10 (not one alone, another alone, then the rest).
        """
        from actordispatch import AmpoulePool

        pool = AmpoulePool(size=2, standby=0)
        d = self.dispatcher(pool=pool)
        yield d.start()
        for _ in range(20):
            yield d.add_event_handler(H + "pid", "during")
        warm = yield d.fire_event({})
        self.assertTrue(warm.ok)
        before = next(pool._batches._seqs)
        result = yield d.fire_event({})
        self.assertTrue(result.ok)
        self.assertEqual(next(pool._batches._seqs) - before - 1, 2)
        pids = [o.pid for o in result.outcomes]
        self.assertEqual(sorted(pids.count(pid) for pid in set(pids)), [10, 10])


class DemoTests(TestCase):
    timeout = 60

    @defer.inlineCallbacks
    def test_demo_command(self) -> Any:
        """
        `actordispatch demo` runs the scenario with real children and prints each
        outcome with its pid and duration, exiting 0.
        """
        started = time.monotonic()
        out, err, code = yield utils.getProcessOutputAndValue(
            sys.executable,
            [
                "-c",
                "import sys; from actordispatch._service.cli import main; "
                "sys.exit(main(['demo']))",
            ],
            env=dict(os.environ),
        )
        text = out.decode()
        self.assertEqual(code, 0, err.decode())
        self.assertIn("notify_admin", text)
        self.assertIn("PermissionError: guests may not be created: mallory", text)
        self.assertRegex(text, r"pid=\d+ +\d+\.\d+ ms")
        self.assertLess(time.monotonic() - started, 60)


class ControlTests(RealChildrenTestCase):
    @defer.inlineCallbacks
    def test_sequential_priority_and_veto(self) -> Any:
        """
        With real children: a sequential phase runs its handlers one after
        another in priority order (two children are idle, yet they never
        overlap); a handler of a veto phase returning Veto stops the event,
        the rest ending "skipped" with the reason; without a veto every phase
        runs.
        """
        from actordispatch import Phase

        d = self.dispatcher(
            phases=(Phase("check", sequential=True, veto=True), "during"),
        )
        yield d.start()
        low = yield d.add_event_handler(H + "span", "check", priority=-1)
        high = yield d.add_event_handler(H + "span", "check", priority=5)
        guard = yield d.add_event_handler(H + "gate", "check")
        after = yield d.add_event_handler(H + "pid", "during")
        result = yield d.fire_event({})
        self.assertTrue(result.ok, result.failures)
        self.assertEqual(
            [o.handler_id for o in result.outcomes], [high, guard, low, after]
        )
        (high_start, high_end), (low_start, _) = (
            result.outcomes[0].value,
            result.outcomes[2].value,
        )
        self.assertLessEqual(high_end, low_start)
        self.assertLess(high_start, low_start)

        result = yield d.fire_event({"veto": "not today"})
        self.assertEqual(
            [(o.handler_id, o.status) for o in result.outcomes],
            [(high, "ok"), (guard, "ok"), (low, "skipped"), (after, "skipped")],
        )
        self.assertEqual(result.vetoed.handler_id, guard)
        self.assertEqual(result.vetoed.veto, "not today")
        self.assertEqual(
            result.outcomes[3].error_message,
            f"vetoed by handler {guard} ({H}gate) in phase 'check': not today",
        )

    @defer.inlineCallbacks
    def test_error_policy(self) -> Any:
        """
        With real children: a handler raising in an on_error="abort" phase
        skips the later phases; fire_event(on_error="continue") lets them run.
        """
        from actordispatch import Phase

        d = self.dispatcher(phases=(Phase("first", on_error="abort"), "second"))
        yield d.start()
        yield d.add_event_handler(H + "boom", "first")
        yield d.add_event_handler(H + "pid", "second")
        result = yield d.fire_event({})
        self.assertEqual([o.status for o in result.outcomes], ["error", "skipped"])
        self.assertEqual(result.outcomes[1].error_type, "actordispatch.EarlierFailure")
        result = yield d.fire_event({}, on_error="continue")
        self.assertEqual([o.status for o in result.outcomes], ["error", "ok"])


class FollowUpTests(RealChildrenTestCase):
    @defer.inlineCallbacks
    def test_wait_for_own_follow_up_one_child(self) -> Any:
        """
        With one child and one event in flight at a time, a handler waits for
        the result of a follow-up event that needs a child of the same pool:
        its child is parked and a stand-in serves the follow-up.  The
        dispatcher counts both events, and afterwards the pool is back to one
        serving child.
        """
        d = self.dispatcher(
            allowed_match_spec_keywords=("kind",), pool_size=1, max_in_flight=1
        )
        yield d.start()
        asker = yield d.add_event_handler(H + "ask", "during", kind="question")
        yield d.add_event_handler(H + "answer", "during", kind="answer")
        result = yield d.fire_event({"question": "why?"}, kind="question")
        self.assertTrue(result.ok, result.failures)
        (outcome,) = result.outcomes
        self.assertEqual(outcome.handler_id, asker)
        value = outcome.value
        self.assertTrue(value["ok"])
        ((answered,),) = [value["values"]]
        self.assertEqual(answered["answer"], "re: why?")
        self.assertNotEqual(answered["pid"], value["pid"])  # the stand-in
        self.assertEqual(d.stats().accepted, 2)
        self.assertEqual(d.stats().finished, 2)
        pool = d.pools()["default"]
        for _ in range(100):
            if len(pool.child_pids()) == 1:
                break
            yield deferLater(reactor, 0.05, lambda: None)
        self.assertEqual(len(pool.child_pids()), 1)

    @defer.inlineCallbacks
    def test_loop_cut_by_max_depth(self) -> Any:
        """
        A handler that fires, and waits for, the event that reaches itself
        loops; max_depth cuts the chain with FollowUpDepthError, which the
        deepest handler sees, and every level finishes.
        """
        d = self.dispatcher(allowed_match_spec_keywords=("kind",), max_depth=3)
        yield d.start()
        yield d.add_event_handler(H + "recurse", "during", kind="loop")
        result = yield d.fire_event({"level": 0}, kind="loop")
        self.assertTrue(result.ok, result.failures)
        cut = result.outcomes[0].value
        self.assertEqual(cut["cut_at"], 3)
        self.assertEqual(cut["error"], "FollowUpDepthError")
        self.assertIn("depth 4 is past max_depth=3", cut["message"])
        self.assertEqual(d.stats().accepted, 4)

    @defer.inlineCallbacks
    def test_refused_and_fire_and_forget(self) -> Any:
        """
        A follow-up with a keyword that is not allowed is refused with a clear
        FollowUpError; one fired without waiting runs after its handler
        returned; with max_depth=0 follow-ups are refused.
        """
        # Not self.mktemp(): under pytest it makes its directory in the cwd.
        directory = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, directory, True)
        mark = os.path.join(directory, "mark")
        d = self.dispatcher(allowed_match_spec_keywords=("kind",))
        yield d.start()
        yield d.add_event_handler(H + "ask", "during", kind="question")
        yield d.add_event_handler(H + "notify_later", "during", kind="later")
        yield d.add_event_handler(H + "mark_then_sleep", "during", kind="note")
        result = yield d.fire_event(
            {"question": "?", "keywords": {"colour": "red"}}, kind="question"
        )
        refusal = result.outcomes[0].value
        self.assertEqual(refusal["refused"], "FollowUpError")
        self.assertIn("keywords that are not allowed: colour", refusal["message"])
        result = yield d.fire_event({"mark": mark}, kind="later")
        self.assertTrue(result.ok, result.failures)
        for _ in range(100):
            if d.stats().finished == d.stats().accepted:
                break
            yield deferLater(reactor, 0.05, lambda: None)
        with open(mark) as marked:
            self.assertEqual(len(marked.read().split()), 1)

        off = self.dispatcher(allowed_match_spec_keywords=("kind",), max_depth=0)
        yield off.start()
        yield off.add_event_handler(H + "ask", "during", kind="question")
        result = yield off.fire_event({"question": "?"}, kind="question")
        self.assertEqual(result.outcomes[0].value["refused"], "FollowUpError")
