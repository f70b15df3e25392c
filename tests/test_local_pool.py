"""
Unit tests of the local pool's supervision, batching and deadlines, driven
with fake children (L{tests.fake_children}) on a L{Clock}: no processes, no
sleeping.  The integration tests check the same pool with real children.
"""

from __future__ import annotations

import signal
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from actordispatch._core.errors import FollowUpError, HandlerImportError
from actordispatch._core.invocation import Invocation
from actordispatch._core.result import DispatchResult, HandlerOutcome
from actordispatch._core.sandbox import SandboxProfile
from actordispatch._local.pool import AmpoulePool
from actordispatch._wire.commands import CheckHandler, RunBatch

from .fake_children import FakeChild, FakeChildren


def invocation(name: str = "h", timeout: float | None = None) -> Invocation:
    return Invocation(1, f"mod:{name}", "during", b"{}", timeout)


class PoolTestCase(SynchronousTestCase):
    """
    A pool of fake children on a clock.
    """

    def make_pool(self, **options: Any) -> AmpoulePool:
        self.clock = Clock()
        self.children = FakeChildren(self.clock)
        options.setdefault("size", 1)
        options.setdefault("standby", 0)
        self.pool = AmpoulePool(reactor=self.clock, launcher=self.children, **options)
        return self.pool

    def started(self, **options: Any) -> AmpoulePool:
        """
        A pool started, every child booted (standby ones too).
        """
        pool = self.make_pool(**options)
        ready = pool.start()
        for child in list(self.children.children):
            child.boot()
        self.successResultOf(ready)
        for child in self.children.children[len(pool.child_pids()) :]:
            child.boot()
        return pool

    def invoke(self, *invocations: Invocation) -> list[Any]:
        return [self.pool.invoke(i) for i in invocations]

    def child(self, index: int = 0) -> FakeChild:
        return self.children.children[index]

    def outcome(self, d: Any) -> HandlerOutcome:
        result: HandlerOutcome = self.successResultOf(d)
        return result


class BootTests(PoolTestCase):
    def test_start_boots_size_then_standby(self) -> None:
        """
        C{start} spawns C{size} children and fires once each answered its
        ping; the standby children boot only after that, and stand by.
        """
        pool = self.make_pool(size=2, standby=1)
        ready = pool.start()
        self.assertEqual(len(self.children.children), 2)
        self.assertNoResult(ready)
        self.child(0).boot()
        self.assertNoResult(ready)
        self.child(1).boot()
        self.successResultOf(ready)
        self.assertEqual(len(self.children.children), 3)
        self.assertEqual(pool.child_pids(), [self.child(0).pid, self.child(1).pid])
        self.assertEqual(pool.standby_pids(), [])
        self.child(2).boot()
        self.assertEqual(pool.standby_pids(), [self.child(2).pid])
        self.assertTrue(pool.started)

    def test_start_idempotent(self) -> None:
        """
        Starting a started pool spawns nothing more.
        """
        pool = self.started()
        pool.start()
        self.assertEqual(len(self.children.children), 1)

    def test_boot_failure_backoff(self) -> None:
        """
        Children that die while booting are replaced after a growing delay,
        and once C{max_boot_failures} died in a row, queued work fails fast.
        """
        pool = self.make_pool(max_boot_failures=3)
        pool.start()
        queued = pool.invoke(invocation())
        self.child(0).exit(1)
        self.assertEqual(len(self.children.children), 1)  # not at once
        self.clock.advance(0.05)
        self.assertEqual(len(self.children.children), 1)
        self.clock.advance(0.06)
        self.assertEqual(len(self.children.children), 2)
        self.child(1).exit(1)
        self.clock.advance(0.15)
        self.assertEqual(len(self.children.children), 2)
        self.clock.advance(0.06)
        self.assertEqual(len(self.children.children), 3)
        self.assertNoResult(queued)
        self.child(2).exit(1)
        outcome = self.outcome(queued)
        self.assertEqual(outcome.status, "crashed")
        self.assertEqual(outcome.error_type, "actordispatch.PoolDown")
        # It goes on trying, and a child that boots serves again.
        self.clock.advance(0.4)
        self.child(3).boot()
        d = pool.invoke(invocation())
        self.child(3).run([7])
        self.assertEqual(self.outcome(d).value, 7)


class BatchTests(PoolTestCase):
    def test_idle_child_gets_one_at_once(self) -> None:
        """
        An invocation given to an idle pool goes to a child at once, alone.
        """
        self.started()
        (d,) = self.invoke(invocation())
        self.assertEqual(self.child().batch(), ["mod:h"])
        self.child().run([1], duration=0.5)
        outcome = self.outcome(d)
        self.assertEqual(
            (outcome.status, outcome.value, outcome.duration, outcome.pid),
            ("ok", 1, 0.5, self.child().pid),
        )

    def test_waiting_work_goes_in_one_batch(self) -> None:
        """
        Invocations that wait while the child is busy go to it together, in
        one batch, once it is free.
        """
        self.started()
        first, *rest = self.invoke(*(invocation(f"h{n}") for n in range(4)))
        self.assertEqual(self.child().batch(), ["mod:h0"])
        self.child().run([0])
        self.assertEqual(self.outcome(first).value, 0)
        self.assertEqual(self.child().batch(), ["mod:h1", "mod:h2", "mod:h3"])
        self.child().run([1, 2, 3])
        self.assertEqual([self.outcome(d).value for d in rest], [1, 2, 3])
        self.assertEqual(self.pool.queued(), 0)

    def test_max_batch(self) -> None:
        """
        A batch holds at most C{max_batch} invocations.
        """
        self.started(max_batch=2)
        self.pool.submit([])
        self.invoke(*(invocation(f"h{n}") for n in range(4)))
        self.child().run([0])
        self.assertEqual(self.child().batch(), ["mod:h1", "mod:h2"])

    def test_error_record(self) -> None:
        """
        A handler's error, as the child reports it, is its outcome.
        """
        self.started()
        (d,) = self.invoke(invocation())
        self.child().start_batch()
        self.child().answer([{"s": "error", "t": "ValueError", "m": "no", "d": 1}])
        outcome = self.outcome(d)
        self.assertEqual(
            (outcome.status, outcome.error_type, outcome.error_message),
            ("error", "ValueError", "no"),
        )

    def test_recycle_after(self) -> None:
        """
        A child that ran C{recycle_after} invocations is asked to shut down
        after its batch, and a new child takes its place.
        """
        pool = self.started(recycle_after=2)
        self.invoke(invocation(), invocation())
        self.child().run([1])
        self.child().run([2])
        self.assertIn("Shutdown", self.child().commands())
        self.assertEqual(len(self.children.children), 2)
        self.clock.advance(0)
        self.assertTrue(self.child(0).exited)
        self.child(1).boot()
        self.assertEqual(pool.child_pids(), [self.child(1).pid])


class DeathTests(PoolTestCase):
    def test_death_mid_batch(self) -> None:
        """
        A child dying mid-batch: what the spool says finished keeps its
        outcome, the running invocation ends C{"crashed"}, the rest run on
        the replacement.
        """
        self.started()
        first, *rest = self.invoke(*(invocation(f"h{n}") for n in range(4)))
        self.child().run([0])
        self.child().start_batch()
        self.child().finish({"s": "ok", "v": 1, "d": 0.1})
        self.child().exit(None, signal.SIGSEGV)
        outcomes = [self.outcome(d) for d in rest[:2]]
        self.assertEqual(outcomes[0].value, 1)
        self.assertEqual(outcomes[1].status, "crashed")
        self.assertEqual(outcomes[1].error_type, "actordispatch.ChildCrashed")
        self.assertNoResult(rest[2])
        self.assertEqual(len(self.children.children), 2)
        self.child(1).boot()
        self.assertEqual(self.child(1).batch(), ["mod:h3"])
        self.child(1).run([3])
        self.assertEqual(self.outcome(rest[2]).value, 3)

    def test_idle_death_replaced(self) -> None:
        """
        A child that dies idle is replaced at once.
        """
        pool = self.started()
        self.child().exit(1)
        self.assertEqual(len(self.children.children), 2)
        self.child(1).boot()
        self.assertEqual(pool.child_pids(), [self.child(1).pid])

    def test_standby_takes_over(self) -> None:
        """
        When a serving child dies, a standby child serves at once, and a new
        standby child boots.
        """
        pool = self.started(standby=1)
        self.assertEqual(pool.standby_pids(), [self.child(1).pid])
        (d,) = self.invoke(invocation())
        self.child(0).exit(None, signal.SIGKILL)
        self.assertEqual(self.outcome(d).status, "crashed")
        self.clock.advance(0)
        self.assertEqual(pool.child_pids(), [self.child(1).pid])
        self.assertEqual(len(self.children.children), 3)
        self.child(2).boot()
        self.assertEqual(pool.standby_pids(), [self.child(2).pid])
        d = pool.invoke(invocation())
        self.child(1).run([5])
        self.assertEqual(self.outcome(d).value, 5)

    def test_protocol_error(self) -> None:
        """
        A child breaking the protocol mid-batch is killed at once; its
        running invocation ends C{"crashed"} with a protocol error.
        """
        self.started()
        (d,) = self.invoke(invocation())
        self.child().start_batch()
        self.child().on_protocol_error("garbage")
        outcome = self.outcome(d)
        self.assertEqual(outcome.error_type, "actordispatch.ProtocolError")
        self.assertEqual(self.child().process.signals, [signal.SIGKILL])

    def test_quarantine(self) -> None:
        """
        A handler whose children keep dying is quarantined: its invocations
        end at once without a child.
        """
        pool = self.started(crash_limit=2)
        for n in range(2):
            (d,) = self.invoke(invocation())
            self.child(n).start_batch()
            self.child(n).exit(None, signal.SIGSEGV)
            self.child(n + 1).boot()
        self.assertIn("mod:h", pool.quarantined())
        (d,) = self.invoke(invocation())
        self.assertEqual(self.outcome(d).error_type, "actordispatch.Quarantined")


class TimeoutTests(PoolTestCase):
    def test_timeout_term_then_kill(self) -> None:
        """
        An invocation that overruns its timeout ends C{"timeout"}; its child
        gets SIGTERM, then SIGKILL after C{kill_grace} if it is still there.
        """
        self.started(kill_grace=2.0)
        (d,) = self.invoke(invocation(timeout=5))
        child = self.child()
        child.ignores_term = True
        child.start_batch()
        self.clock.advance(4.9)
        self.assertNoResult(d)
        self.clock.advance(0.1)
        outcome = self.outcome(d)
        self.assertEqual(outcome.status, "timeout")
        self.assertEqual(outcome.error_type, "actordispatch.HandlerTimeout")
        self.assertEqual(child.process.signals, [signal.SIGTERM])
        self.clock.advance(1.9)
        self.assertFalse(child.exited)
        self.clock.advance(0.1)
        self.assertEqual(child.process.signals, [signal.SIGTERM, signal.SIGKILL])
        self.clock.advance(0)
        self.assertTrue(child.exited)

    def test_timeout_from_own_start(self) -> None:
        """
        Each invocation of a batch is timed from its own start, as the spool
        says: the second of a batch may run its full timeout after the first.
        """
        self.started()
        first, *rest = self.invoke(*(invocation(f"h{n}", timeout=5) for n in range(3)))
        self.child().run([0])
        self.child().start_batch()
        self.clock.advance(3)
        self.child().finish({"s": "ok", "v": 1, "d": 3})
        self.clock.advance(4)
        self.assertNoResult(rest[1])
        self.clock.advance(1)
        self.assertEqual(self.outcome(rest[0]).value, 1)
        self.assertEqual(self.outcome(rest[1]).status, "timeout")

    def test_not_started_runs_elsewhere(self) -> None:
        """
        When a child is killed for a timeout, invocations of its batch that
        did not start run on another child.
        """
        self.started()
        first, *rest = self.invoke(*(invocation(f"h{n}", timeout=5) for n in range(3)))
        self.child().run([0])
        self.child().start_batch()
        self.clock.advance(5)
        self.assertEqual(self.outcome(rest[0]).status, "timeout")
        self.clock.advance(0)
        self.child(1).boot()
        self.child(1).run([2])
        self.assertEqual(self.outcome(rest[1]).value, 2)


class StopTests(PoolTestCase):
    def test_stop(self) -> None:
        """
        C{stop} kills busy children (their running invocations end
        C{"timeout"}) and fires once every child ended.
        """
        pool = self.started(size=2)
        (first,) = self.invoke(invocation())
        a = next(c for c in self.children.children if c.pending(RunBatch))
        b = next(c for c in self.children.children if c is not a)
        second, third = self.invoke(invocation(), invocation())
        a.run([0])
        b.start_batch()
        stopped = pool.stop()
        self.assertNoResult(stopped)
        self.assertEqual(self.outcome(first).value, 0)
        self.assertEqual(self.outcome(second).status, "timeout")
        self.assertEqual(self.outcome(third).status, "timeout")
        self.assertEqual(a.process.signals, [signal.SIGTERM])
        self.clock.advance(0)
        self.successResultOf(stopped)
        self.assertEqual(self.children.alive(), [])
        self.assertFalse(pool.started)

    def test_stop_queued_skipped(self) -> None:
        """
        Work still queued when the pool stops ends C{"skipped"}; an idle
        child is asked to shut down.
        """
        pool = self.make_pool()
        pool.start()
        (d,) = self.invoke(invocation())
        stopped = pool.stop()
        self.assertEqual(self.outcome(d).status, "skipped")
        self.assertIn("Shutdown", self.child().commands())
        self.clock.advance(0)
        self.successResultOf(stopped)


class CheckTests(PoolTestCase):
    def test_check_ok(self) -> None:
        """
        A handler check goes to a child and fires with its pid.
        """
        pool = self.started()
        d = pool.check_handler("mod:h")
        self.assertEqual(self.child().pending(CheckHandler)[0][1], {"handler": "mod:h"})
        self.child().check()
        self.assertEqual(self.successResultOf(d), self.child().pid)

    def test_check_fails(self) -> None:
        """
        A handler the child cannot import fails the check with
        L{HandlerImportError}; the child serves on.
        """
        pool = self.started()
        d = pool.check_handler("mod:h")
        self.child().check(HandlerImportError("no module"))
        self.failureResultOf(d, HandlerImportError)
        (run,) = self.invoke(invocation())
        self.child().run([1])
        self.assertEqual(self.outcome(run).value, 1)

    def test_check_overran(self) -> None:
        """
        A check that takes over C{default_timeout} fails and its child is
        killed.
        """
        pool = self.started(default_timeout=3)
        d = pool.check_handler("mod:h")
        self.clock.advance(3)
        self.failureResultOf(d, HandlerImportError)
        self.assertEqual(self.child().process.signals, [signal.SIGTERM])

    def test_check_waits_for_batch(self) -> None:
        """
        A check queued behind a batch is not put in the batch: it goes once
        the child is free.
        """
        pool = self.started()
        self.invoke(invocation())
        d = pool.check_handler("mod:h")
        self.assertEqual(self.child().pending(CheckHandler), [])
        self.assertEqual(len(self.child().pending(RunBatch)), 1)
        self.child().run([1])
        self.child().check()
        self.assertEqual(self.successResultOf(d), self.child().pid)


class FollowUpTests(PoolTestCase):
    def test_parked_child_gets_stand_in(self) -> None:
        """
        A child whose handler waits for a follow-up event is parked: another
        child serves in its place; once it is back, the stand-in is surplus.
        """
        pool = self.started()
        fired: list[tuple[int, Any]] = []
        results: list[Deferred[Any]] = []

        def sink(depth: int, event: bytes, keywords: Any, on_error: Any) -> Any:
            fired.append((depth, keywords))
            results.append(Deferred())
            return len(fired), results[-1]

        pool.set_follow_ups(sink)
        (d,) = self.invoke(invocation())
        child = self.child()
        ((_, arguments),) = child.pending(RunBatch)
        child.start_batch()
        waited = child.on_follow_up(
            event=b"{}", keywords='{"k": 1}', seq=arguments["seq"], wait=True
        )
        self.assertEqual(fired, [(1, {"k": 1})])
        self.assertEqual(len(self.children.children), 2)  # the stand-in
        self.child(1).boot()
        other = pool.invoke(invocation("other"))
        self.child(1).run([2])
        self.assertEqual(self.outcome(other).value, 2)
        results[0].callback(DispatchResult(outcomes=()))
        self.assertEqual(self.successResultOf(waited)["number"], 1)
        child.run([1])
        self.assertEqual(self.outcome(d).value, 1)
        self.clock.advance(0)
        # One of the two is surplus now, and goes.
        self.assertEqual(len(pool.child_pids()), 1)

    def test_max_waiting(self) -> None:
        """
        Past C{max_waiting} parked children, a waiting follow-up is refused.
        """
        pool = self.started(max_waiting=0)
        pool.set_follow_ups(lambda *arguments: (1, Deferred()))
        self.invoke(invocation())
        ((_, arguments),) = self.child().pending(RunBatch)
        d = self.child().on_follow_up(
            event=b"{}", keywords="{}", seq=arguments["seq"], wait=True
        )
        self.failureResultOf(d, FollowUpError)


class ChildWordTests(PoolTestCase):
    """
    Issue 16: the child's word never extends a deadline.  What a child writes
    in its spool is clamped to what the parent observed, and every batch has
    a hard bound (sent + its timeouts + the kill grace) on the parent's clock.
    """

    def test_future_start_still_times_out(self) -> None:
        """
        A child that reports its invocation started far in the future (and
        ignores SIGTERM) is still timed out on time, from when it was sent.
        """
        self.started(kill_grace=1.0)
        (d,) = self.invoke(invocation(timeout=5))
        child = self.child()
        child.ignores_term = True
        child.start_batch(started=self.clock.seconds() + 1e6)
        self.clock.advance(4.9)
        self.assertNoResult(d)
        self.clock.advance(0.1)
        outcome = self.outcome(d)
        self.assertEqual(outcome.status, "timeout")
        self.assertEqual(outcome.duration, 5.0)
        self.assertEqual(child.process.signals, [signal.SIGTERM])
        self.clock.advance(1.0)
        self.assertEqual(child.process.signals, [signal.SIGTERM, signal.SIGKILL])

    def test_future_end_time_not_believed(self) -> None:
        """
        An end time from the future (the next invocation's start) is not
        believed: the next invocation is timed from when the batch was sent.
        """
        self.started()
        first, *rest = self.invoke(*(invocation(f"h{n}", timeout=5) for n in range(3)))
        self.child().run([0])
        child = self.child()
        child.start_batch()
        self.clock.advance(1)
        child.finish({"s": "ok", "v": 1, "d": 1.0}, ended=self.clock.seconds() + 1e6)
        self.clock.advance(3.9)
        self.assertNoResult(rest[1])
        self.clock.advance(0.1)
        self.assertEqual(self.outcome(rest[0]).value, 1)
        self.assertEqual(self.outcome(rest[1]).status, "timeout")

    def test_start_before_sending_clamped(self) -> None:
        """
        A start time from before the batch was sent counts as its sending
        time: the parent's own observation bounds what a child reports.
        """
        self.started()
        (d,) = self.invoke(invocation(timeout=5))
        self.child().start_batch(started=self.clock.seconds() - 100)
        self.clock.advance(4.9)
        self.assertNoResult(d)
        self.clock.advance(0.1)
        outcome = self.outcome(d)
        self.assertEqual((outcome.status, outcome.duration), ("timeout", 5.0))

    def test_spool_says_done_but_no_answer(self) -> None:
        """
        A child whose spool says every invocation finished, but that never
        answers, is killed at the batch's hard bound; the spool's outcomes
        stand (a child is trusted about its own handlers' results).
        """
        self.started(kill_grace=1.0)
        (d,) = self.invoke(invocation(timeout=5))
        child = self.child()
        child.start_batch()
        child.finish({"s": "ok", "v": 1, "d": 0.1})
        self.clock.advance(5.5)
        self.assertNoResult(d)
        self.clock.advance(0.5)
        self.assertEqual(self.outcome(d).value, 1)
        self.assertEqual(child.process.signals, [signal.SIGTERM])


class TrustDomainTests(PoolTestCase):
    """
    Under a trust-domain isolation (L{SandboxProfile.isolation}), a child
    serves one handler for its life, a batch holds one handler's work, and a
    child changes hands only by being replaced.
    """

    def isolated(self, level: str = "handler", **options: Any) -> AmpoulePool:
        return self.started(sandbox=SandboxProfile(isolation=level), **options)

    def test_fresh_children_are_claimed(self) -> None:
        """
        Two handlers, two fresh children: each takes one and keeps it; nobody
        is replaced.
        """
        self.isolated(size=2)
        first = self.invoke(invocation("a"), invocation("b"))
        for n in range(2):
            self.child(n).run([n])
        owners = {o.pid: o.handler for o in map(self.outcome, first)}
        self.assertEqual(sorted(owners.values()), ["mod:a", "mod:b"])
        second = self.invoke(invocation("a"), invocation("b"))
        for n in range(2):
            self.child(n).run([n])
        for d in second:
            outcome = self.outcome(d)
            self.assertEqual(owners[outcome.pid], outcome.handler)
        self.assertEqual(len(self.children.children), 2)

    def test_one_handler_per_batch_and_replace_not_reuse(self) -> None:
        """
        With one child: waiting work of two handlers never shares a batch;
        the second handler gets a fresh child in place of the first one's,
        which is shut down, never handed over.
        """
        self.isolated()
        results = self.invoke(
            invocation("a"), invocation("b"), invocation("a"), invocation("b")
        )
        self.assertEqual(self.child(0).batch(), ["mod:a"])
        self.child(0).run([1])
        # a's child goes on with a's work; b waits for a child of its own.
        self.assertEqual(self.child(0).batch(), ["mod:a"])
        self.child(0).run([3])
        self.assertIn("Shutdown", self.child(0).commands())
        self.assertEqual(len(self.children.children), 2)
        self.child(1).boot()
        self.assertEqual(self.child(1).batch(), ["mod:b", "mod:b"])
        self.child(1).run([2, 4])
        outcomes = [self.outcome(d) for d in results]
        self.assertEqual([o.value for o in outcomes], [1, 2, 3, 4])
        self.assertEqual(
            [o.pid for o in outcomes], [self.child(0).pid, self.child(1).pid] * 2
        )

    def test_check_claims_its_child(self) -> None:
        """
        A handler check imports the handler into a child, which then serves
        that handler only.
        """
        pool = self.isolated()
        d = pool.check_handler("mod:a")
        self.child(0).check()
        self.successResultOf(d)
        (b,) = self.invoke(invocation("b"))
        self.assertNotIn("RunBatch", self.child(0).commands())
        self.assertIn("Shutdown", self.child(0).commands())
        self.child(1).boot()
        self.assertEqual(self.child(1).batch(), ["mod:b"])

    def test_nothing_preloaded(self) -> None:
        """
        Warm handlers are not preloaded into children that may serve another
        handler.
        """
        pool = self.isolated(recycle_after=1)
        pool.warm("mod:a")
        d = pool.check_handler("mod:a")
        self.child(0).check()
        self.successResultOf(d)
        self.invoke(invocation("a"))
        self.child(0).run([1])
        self.child(1).boot()
        self.assertEqual(self.child(1).config["preload"], [])

    def test_invocation_one_use_each(self) -> None:
        """
        Under C{"invocation"}, a child runs one invocation, alone, and is
        killed after it (its outcome is in; a clean exit would cost more than
        the work), a fresh one taking its place.
        """
        self.isolated("invocation")
        first, second = self.invoke(invocation("a"), invocation("a"))
        self.assertEqual(self.child(0).batch(), ["mod:a"])
        self.child(0).run([1])
        self.assertEqual(self.child(0).process.signals, [signal.SIGKILL])
        self.child(1).boot()
        self.assertEqual(self.child(1).batch(), ["mod:a"])
        self.child(1).run([2])
        self.assertEqual(self.outcome(first).pid, self.child(0).pid)
        self.assertEqual(self.outcome(second).pid, self.child(1).pid)
        self.assertEqual(self.child(1).process.signals, [signal.SIGKILL])

    def test_isolation_checked(self) -> None:
        """
        An isolation level that does not exist is refused, naming the levels.
        """
        with self.assertRaises(ValueError) as caught:
            SandboxProfile(isolation="process")
        self.assertIn("shared, handler, invocation", str(caught.exception))
        self.assertEqual(SandboxProfile.untrusted().isolation, "handler")
        self.assertEqual(SandboxProfile().isolation, "shared")
