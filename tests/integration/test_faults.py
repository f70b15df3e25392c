"""
Fault injection with real children: a handler can crash, hang, leak, flood or
lie, and nothing is lost.

Every test checks the "nothing lost" invariant: each accepted event gets one
result with exactly one outcome per handler that matched it, and
C{accepted == finished + in_flight + queued}; and that after C{stop()} the
children are gone and the parent holds no more file descriptors than before.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections import Counter
from collections.abc import Iterable
from typing import Any

from twisted.internet import defer, reactor
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from actordispatch import AmpoulePool, DispatchResult, EventDispatcher
from tests.integration import crash_on_import, faults

F = "tests.integration.faults:"
H = "tests.integration.handlers:"


def open_fds() -> set[int]:
    """
    The parent's open descriptors, less the reactor's self-pipes (its wakers
    hold both ends of a pipe; a pipe to a child has one end here).
    """
    links = {}
    for fd in os.listdir("/proc/self/fd"):
        try:
            links[int(fd)] = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
    ends = Counter(links.values())
    return {
        fd
        for fd, link in links.items()
        if not (link.startswith("pipe:") and ends[link] == 2)
    }


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


class FaultTestCase(TestCase):
    timeout = 60

    def setUp(self) -> None:
        self.fds_before = open_fds()
        self.pids: set[int] = set()
        self.dispatchers: list[EventDispatcher] = []

    def dispatcher(
        self, pool: AmpoulePool | None = None, **kwargs: Any
    ) -> EventDispatcher:
        kwargs.setdefault("allowed_match_spec_keywords", ("kind",))
        kwargs.setdefault("phases", ("during",))
        if pool is None:
            kwargs.setdefault("pool_size", 2)
        d = EventDispatcher(pool=pool, **kwargs)
        self.dispatchers.append(d)
        return d

    def pool(self, **kwargs: Any) -> AmpoulePool:
        kwargs.setdefault("size", 2)
        kwargs.setdefault("kill_grace", 0.5)
        return AmpoulePool(**kwargs)

    def note_pids(self, results: Iterable[DispatchResult]) -> None:
        for result in results:
            self.pids.update(o.pid for o in result.outcomes if o.pid is not None)

    def assertNothingLost(
        self, d: EventDispatcher, results: list[DispatchResult], handlers: int
    ) -> None:
        """
        One outcome per matched handler in every result; the counters balance.
        """
        for result in results:
            self.assertEqual(len(result.outcomes), handlers, result)
        stats = d.stats()
        self.assertEqual(
            stats.accepted, stats.finished + stats.in_flight + stats.queued
        )
        self.assertEqual(stats.accepted, len(results))
        self.note_pids(results)

    @defer.inlineCallbacks
    def tearDown(self) -> Any:
        for d in self.dispatchers:
            pool = d.pools()["default"]
            if isinstance(pool, AmpoulePool):
                self.pids.update(pool.child_pids())
                self.pids.update(pool.standby_pids())
            yield d.stop(drain_timeout=10)
        # Children are reaped: none left behind, no descriptor kept.
        deadline = time.monotonic() + 5
        while any(alive(p) for p in self.pids) and time.monotonic() < deadline:
            yield deferLater(reactor, 0.05, lambda: None)
        self.assertEqual([p for p in self.pids if alive(p)], [])
        leaked = {
            fd: os.readlink(f"/proc/self/fd/{fd}")
            for fd in open_fds() - self.fds_before
            if os.path.exists(f"/proc/self/fd/{fd}")
        }
        self.assertEqual(leaked, {})


class CrashTests(FaultTestCase):
    @defer.inlineCallbacks
    def test_exit_mid_batch(self) -> Any:
        """
        A child exits while running event 37 of 100 (sent in batches): event 37
        ends "crashed" with the exit code, every other event ends ok, each ran
        exactly once, and the pool is back to two children.
        """
        d = self.dispatcher(max_in_flight=100)
        yield d.start()
        yield d.add_event_handler(F + "exit_at", "during")
        results = yield defer.gatherResults(
            [d.fire_event({"n": n, "at": 37}) for n in range(100)]
        )
        self.assertNothingLost(d, results, 1)
        statuses = {n: r.outcomes[0].status for n, r in enumerate(results)}
        self.assertEqual({n for n, s in statuses.items() if s != "ok"}, {37})
        crashed = results[37].outcomes[0]
        self.assertIn("exit code 7", crashed.error_message)
        self.assertEqual(
            [r.outcomes[0].value for n, r in enumerate(results) if n != 37],
            [n for n in range(100) if n != 37],
        )
        self.assertEqual(len(d.pools()["default"].child_pids()), 2)

    @defer.inlineCallbacks
    def test_killed_by_signals(self) -> Any:
        """
        SIGKILL and SIGSEGV mid-call end "crashed" naming the signal, within a
        second; the next event is served by a fresh child.
        """
        d = self.dispatcher(pool_size=1)
        yield d.start()
        yield d.add_event_handler(F + "kill_self", "during", kind="die")
        yield d.add_event_handler(F + "pid", "during", kind="live")
        for number in (signal.SIGKILL, signal.SIGSEGV):
            started = time.monotonic()
            result = yield d.fire_event({"signal": int(number)}, kind="die")
            self.assertLess(time.monotonic() - started, 1.5)
            outcome = result.outcomes[0]
            self.assertEqual(outcome.status, "crashed")
            self.assertIn(f"signal {int(number)}", outcome.error_message)
            after = yield d.fire_event({}, kind="live")
            self.assertTrue(after.ok)
            self.assertNotEqual(after.outcomes[0].value, outcome.pid)
            self.note_pids([result, after])

    @defer.inlineCallbacks
    def test_crash_while_decoding(self) -> Any:
        """
        A child that dies while decoding the event (importing the event's type
        kills it) yields "crashed"; no other handler is affected.
        """
        d = self.dispatcher(
            pool_size=1, child_env={"ACTORDISPATCH_TEST_CRASH_ON_IMPORT": "1"}
        )
        yield d.start()
        yield d.add_event_handler(faults.ok, "during")
        result = yield d.fire_event(crash_on_import.Poison(1))
        self.assertNothingLost(d, [result], 1)
        self.assertEqual(result.outcomes[0].status, "crashed")
        self.assertIn("exit code 13", result.outcomes[0].error_message)
        fine = yield d.fire_event({"x": 1})
        self.assertTrue(fine.ok)

    @defer.inlineCallbacks
    def test_crash_while_encoding(self) -> Any:
        """
        A child that dies while encoding a handler's result yields "crashed".
        """
        d = self.dispatcher(pool_size=1)
        yield d.start()
        yield d.add_event_handler(F + "crash_while_encoding", "during", kind="bad")
        yield d.add_event_handler(F + "ok", "during", kind="good")
        result = yield d.fire_event({}, kind="bad")
        self.assertEqual(result.outcomes[0].status, "crashed")
        self.assertIn("exit code 11", result.outcomes[0].error_message)
        fine = yield d.fire_event({}, kind="good")
        self.assertTrue(fine.ok)
        self.assertNothingLost(d, [result, fine], 1)

    @defer.inlineCallbacks
    def test_crash_at_import_under_load(self) -> Any:
        """
        A handler whose module kills every child importing it: after three
        deaths it is quarantined and its invocations fail fast, only a bounded
        number of children were spawned, and another handler's events all end
        ok.
        """
        pool = self.pool(child_env={"ACTORDISPATCH_TEST_CRASH_ON_IMPORT": "1"})
        d = self.dispatcher(pool=pool, max_in_flight=20)
        yield d.start()
        yield d.add_event_handler(crash_on_import.handler, "during", kind="poison")
        yield d.add_event_handler(faults.ok, "during", kind="fine")
        fired = []
        for n in range(40):
            fired.append(d.fire_event({"n": n}, kind="poison"))
            fired.append(d.fire_event({"n": n}, kind="fine"))
        results = yield defer.gatherResults(fired)
        self.assertNothingLost(d, results, 1)
        poison = [r.outcomes[0] for r in results[0::2]]
        fine = [r.outcomes[0] for r in results[1::2]]
        self.assertTrue(all(o.status == "ok" for o in fine))
        self.assertTrue(all(o.status == "crashed" for o in poison))
        quarantined = [o for o in poison if o.error_type == "actordispatch.Quarantined"]
        self.assertGreaterEqual(len(quarantined), 30)
        self.assertIn(
            crash_on_import.handler.__module__ + ":handler", pool.quarantined()
        )
        self.assertLessEqual(next(pool._supervisor._numbers), 2 + 3 + 3)


class HangTests(FaultTestCase):
    @defer.inlineCallbacks
    def test_busy_loop(self) -> Any:
        """
        A busy loop past its timeout ends "timeout" and its child is killed; the
        next event is served by a fresh child.
        """
        d = self.dispatcher(pool=self.pool(size=1))
        yield d.start()
        yield d.add_event_handler(F + "busy_loop", "during", kind="spin", timeout=0.5)
        yield d.add_event_handler(F + "pid", "during", kind="live")
        result = yield d.fire_event({}, kind="spin")
        self.assertEqual(result.outcomes[0].status, "timeout")
        after = yield d.fire_event({}, kind="live")
        self.assertTrue(after.ok)
        self.assertNotEqual(after.outcomes[0].value, result.outcomes[0].pid)
        self.assertNothingLost(d, [result, after], 1)

    @defer.inlineCallbacks
    def test_ignores_sigterm_in_c_code(self) -> Any:
        """
        A handler that ignores SIGTERM while blocked in C code is killed with
        SIGKILL after the grace period: "timeout", within timeout + grace.
        """
        d = self.dispatcher(pool=self.pool(size=1, kill_grace=0.5))
        yield d.start()
        yield d.add_event_handler(F + "ignore_term_and_block", "during", timeout=0.5)
        started = time.monotonic()
        result = yield d.fire_event({})
        self.assertEqual(result.outcomes[0].status, "timeout")
        self.assertLess(time.monotonic() - started, 3)
        pid = result.outcomes[0].pid
        deadline = time.monotonic() + 3
        while alive(pid) and time.monotonic() < deadline:
            yield deferLater(reactor, 0.05, lambda: None)
        self.assertFalse(alive(pid))
        self.assertNothingLost(d, [result], 1)

    @defer.inlineCallbacks
    def test_future_start_in_spool(self) -> Any:
        """
        Issue 16: a handler that writes a start time far in the future into
        its child's spool, and ignores SIGTERM, is still timed out and its
        child killed: the child's word never extends a deadline.
        """
        d = self.dispatcher(pool=self.pool(size=1, kill_grace=0.5))
        yield d.start()
        # Two handlers, so that the two go in one batch, which has a spool.
        yield d.add_event_handler(F + "future_start", "during", timeout=0.5)
        yield d.add_event_handler(F + "ok", "during")
        result = yield d.fire_event({})
        outcomes = {o.handler: o for o in result.outcomes}
        outcome = outcomes[F + "future_start"]
        self.assertEqual(outcome.status, "timeout", outcome)
        self.assertEqual(outcome.error_type, "actordispatch.HandlerTimeout")
        self.assertEqual(outcomes[F + "ok"].status, "ok")
        deadline = time.monotonic() + 10
        while alive(outcome.pid) and time.monotonic() < deadline:
            yield deferLater(reactor, 0.05, lambda: None)
        self.assertFalse(alive(outcome.pid))
        self.assertNothingLost(d, [result], 2)

    @defer.inlineCallbacks
    def test_stop_returns_despite_a_liar(self) -> Any:
        """
        Issue 16: with a handler running that lies about its start time and
        ignores SIGTERM (its timeout an hour away), C{stop(drain_timeout=...)}
        still returns, after the drain and the kill grace: its event ends with
        an outcome and its child is gone.  (It never returned before.)
        """
        d = self.dispatcher(pool=self.pool(size=1, kill_grace=0.5))
        yield d.start()
        yield d.add_event_handler(F + "future_start", "during", timeout=3600)
        yield d.add_event_handler(F + "ok", "during")
        fired = d.fire_event({})
        pool = d.pools()["default"]
        deadline = time.monotonic() + 30
        while pool.queued() or not pool.child_pids():
            yield deferLater(reactor, 0.05, lambda: None)
            self.assertLess(time.monotonic(), deadline, "the event never started")
        yield deferLater(reactor, 0.5, lambda: None)  # the lie is written
        pids = pool.child_pids()
        stopped = d.stop(drain_timeout=0.5)
        outcome: list[Any] = []
        stopped.addBoth(outcome.append)
        # Bounded generously for a busy machine: the point is that it ends.
        deadline = time.monotonic() + 60
        while not outcome and time.monotonic() < deadline:
            yield deferLater(reactor, 0.1, lambda: None)
        self.assertEqual(outcome, [None], "stop() never returned")
        result = yield fired
        statuses = {o.handler: o.status for o in result.outcomes}
        self.assertIn(statuses[F + "future_start"], ("timeout", "crashed"))
        for pid in pids:
            self.assertFalse(alive(pid))

    @defer.inlineCallbacks
    def test_timeout_counts_own_run_time(self) -> Any:
        """
        In one batch, each invocation's timeout counts from its own start: ten
        0.3 s handlers with a 0.5 s timeout all end ok, though the batch runs
        3 s.
        """
        d = self.dispatcher(pool=self.pool(size=1), max_in_flight=10)
        yield d.start()
        yield d.add_event_handler(F + "late", "during", timeout=0.5)
        results = yield defer.gatherResults(
            [d.fire_event({"after": 0.3}) for _ in range(10)]
        )
        self.assertEqual([r.outcomes[0].status for r in results], ["ok"] * 10)
        self.assertNothingLost(d, results, 1)

    @defer.inlineCallbacks
    def test_late_answer_ignored(self) -> Any:
        """
        An answer that would come after the timeout gives no second outcome: the
        invocation ends "timeout", once.
        """
        d = self.dispatcher(pool=self.pool(size=1))
        yield d.start()
        yield d.add_event_handler(F + "late", "during", timeout=0.3)
        result = yield d.fire_event({"after": 0.6})
        self.assertEqual([o.status for o in result.outcomes], ["timeout"])
        yield deferLater(reactor, 0.5, lambda: None)
        self.assertNothingLost(d, [result], 1)


class ResourceTests(FaultTestCase):
    @defer.inlineCallbacks
    def test_leak_triggers_recycling(self) -> Any:
        """
        A leaking handler pushes its child past max_rss: the child is replaced
        between batches and no event fails.
        """
        d = self.dispatcher(pool=self.pool(size=1, max_rss=150 * 1024 * 1024))
        yield d.start()
        yield d.add_event_handler(F + "leak", "during")
        pids = []
        for _ in range(8):
            result = yield d.fire_event({"mib": 40})
            self.assertTrue(result.ok, result.failures)
            pids.append(result.outcomes[0].pid)
            self.note_pids([result])
        self.assertGreater(len(set(pids)), 1)

    @defer.inlineCallbacks
    def test_recycle_after_calls(self) -> Any:
        """
        recycle_after=5 replaces a child after five invocations, failing none.
        """
        d = self.dispatcher(pool=self.pool(size=1, recycle_after=5))
        yield d.start()
        yield d.add_event_handler(F + "pid", "during")
        results = []
        for _ in range(12):
            results.append((yield d.fire_event({})))
        pids = [r.outcomes[0].value for r in results]
        self.assertTrue(all(r.ok for r in results))
        self.assertEqual(len(set(pids)), 3)
        self.assertNothingLost(d, results, 1)

    @defer.inlineCallbacks
    def test_output_flood(self) -> Any:
        """
        100 MB of stdout/stderr from a handler neither blocks the child nor
        floods the parent's log: the event ends ok.
        """
        from twisted.logger import globalLogPublisher

        lines: list[dict[str, Any]] = []
        observer = lines.append
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)
        d = self.dispatcher(pool=self.pool(size=1, output_cap=16 * 1024))
        yield d.start()
        yield d.add_event_handler(F + "flood_output", "during", timeout=30)
        result = yield d.fire_event({"mib": 100})
        self.assertTrue(result.ok, result.failures)
        said = [
            e for e in lines if e.get("log_format", "").startswith("child {pid} says")
        ]
        self.assertLess(sum(len(e["line"]) for e in said), 17 * 1024)
        self.assertNothingLost(d, [result], 1)

    @defer.inlineCallbacks
    def test_result_over_cap(self) -> Any:
        """
        A result above the cap is an "error" outcome and the child survives.
        """
        d = self.dispatcher(pool=self.pool(size=1, max_result_size=1000))
        yield d.start()
        yield d.add_event_handler(F + "big_result", "during")
        big = yield d.fire_event({"size": 5000})
        small = yield d.fire_event({"size": 10})
        self.assertEqual(
            big.outcomes[0].error_type, "actordispatch.ResultTooLargeError"
        )
        self.assertTrue(small.ok)
        self.assertEqual(big.outcomes[0].pid, small.outcomes[0].pid)
        self.assertNothingLost(d, [big, small], 1)


class ProtocolTests(FaultTestCase):
    @defer.inlineCallbacks
    def check_dropped(self, handler: str, reason: str) -> Any:
        d = self.dispatcher(pool=self.pool(size=1))
        yield d.start()
        yield d.add_event_handler(F + handler, "during", kind="bad", timeout=20)
        yield d.add_event_handler(F + "pid", "during", kind="good")
        started = time.monotonic()
        result = yield d.fire_event({}, kind="bad")
        self.assertLess(time.monotonic() - started, 2.5)
        outcome = result.outcomes[0]
        self.assertEqual(outcome.status, "crashed")
        self.assertEqual(outcome.error_type, "actordispatch.ProtocolError")
        self.assertIn(reason, outcome.error_message)
        after = yield d.fire_event({}, kind="good")
        self.assertTrue(after.ok)
        self.assertNothingLost(d, [result, after], 1)

    def test_garbage(self) -> Any:
        """
        Garbage on the AMP pipe drops the child within a second or so.
        """
        return self.check_dropped("garbage", "protocol error")

    def test_answer_to_nothing(self) -> Any:
        """
        An answer to a question never asked drops the child.
        """
        return self.check_dropped("answer_to_nothing", "protocol error")

    def test_too_many_keys(self) -> Any:
        """
        A box with more keys than the cap drops the child.
        """
        return self.check_dropped("too_many_keys", "keys")

    def test_half_frame(self) -> Any:
        """
        Half a frame, then silence, drops the child after a second.
        """
        return self.check_dropped("half_frame", "incomplete")

    def test_unknown_command(self) -> Any:
        """
        A command other than FireFollowUp from a child drops it.
        """
        return self.check_dropped("unknown_command", "a command from the child")


class ShutdownTests(FaultTestCase):
    @defer.inlineCallbacks
    def test_stop_with_events_in_flight_and_queued(self) -> Any:
        """
        stop(drain_timeout) with a hung event in flight and others queued: the
        hung invocation ends "timeout", the queued events' invocations
        "skipped", every event gets its result and the children are gone.
        """
        d = self.dispatcher(pool=self.pool(size=1))
        yield d.start()
        yield d.add_event_handler(F + "late", "during", timeout=30)
        fired = [d.fire_event({"after": 20}) for _ in range(3)]
        yield deferLater(reactor, 0.3, lambda: None)
        started = time.monotonic()
        yield d.stop(drain_timeout=0.5)
        self.assertLess(time.monotonic() - started, 5)
        results = yield defer.gatherResults(fired)
        self.assertEqual(
            [r.outcomes[0].status for r in results], ["timeout", "skipped", "skipped"]
        )
        self.assertNothingLost(d, results, 1)


class SandboxTests(FaultTestCase):
    @defer.inlineCallbacks
    def test_untrusted_profile_from_inside(self) -> Any:
        """
        With SandboxProfile.untrusted(), each layer is in force as the child
        sees it: limits, no_new_privs, parent-death signal, no network socket,
        a scrubbed environment and only the expected descriptors.
        """
        from actordispatch import SandboxProfile

        d = self.dispatcher(
            pool=self.pool(size=1, sandbox=SandboxProfile.untrusted()),
        )
        yield d.start()
        yield d.add_event_handler(F + "sandbox_state", "during")
        result = yield d.fire_event({})
        self.assertTrue(result.ok, result.failures)
        state = result.outcomes[0].value
        self.assertEqual(state["rlimits"]["address_space"], [2**30, 2**30])
        self.assertEqual(state["rlimits"]["open_files"], [256, 256])
        self.assertEqual(state["rlimits"]["core_size"], [0, 0])
        self.assertTrue(state["no_new_privs"])
        self.assertEqual(state["parent_death_signal"], signal.SIGKILL)
        self.assertTrue(state["inet_socket_denied"])
        self.assertEqual(set(state["environment_names"]) - {"LC_CTYPE"}, {"PYTHONPATH"})
        self.assertEqual(sorted(state["open_fds"])[:6], [0, 1, 2, 3, 4, 5])
        self.assertNothingLost(d, [result], 1)

    @defer.inlineCallbacks
    def test_memory_limit(self) -> Any:
        """
        An allocation above the address-space limit fails in the handler
        ("error", MemoryError) and the child keeps serving.
        """
        from actordispatch import SandboxProfile

        d = self.dispatcher(
            pool=self.pool(size=1, sandbox=SandboxProfile(address_space=512 * 2**20))
        )
        yield d.start()
        yield d.add_event_handler(F + "allocate", "during")
        big = yield d.fire_event({"mib": 768})
        small = yield d.fire_event({"mib": 1})
        self.assertEqual(big.outcomes[0].error_type, "MemoryError")
        self.assertTrue(small.ok)
        self.assertEqual(big.outcomes[0].pid, small.outcomes[0].pid)
        self.assertNothingLost(d, [big, small], 1)

    @defer.inlineCallbacks
    def test_cpu_budget(self) -> Any:
        """
        A child over its CPU budget is killed by the kernel: "crashed" with the
        signal, and a fresh child serves the next event.
        """
        from actordispatch import SandboxProfile

        d = self.dispatcher(
            pool=self.pool(size=1, sandbox=SandboxProfile(cpu_seconds=1))
        )
        yield d.start()
        yield d.add_event_handler(F + "burn_cpu", "during", kind="burn", timeout=30)
        yield d.add_event_handler(F + "pid", "during", kind="live")
        result = yield d.fire_event({}, kind="burn")
        outcome = result.outcomes[0]
        self.assertEqual(outcome.status, "crashed")
        self.assertRegex(outcome.error_message, "signal (9|24)")
        after = yield d.fire_event({}, kind="live")
        self.assertTrue(after.ok)
        self.assertNothingLost(d, [result, after], 1)


PARENT_SCRIPT = """
import os, sys
from twisted.internet import defer, task
from actordispatch import EventDispatcher

@defer.inlineCallbacks
def main(reactor):
    d = EventDispatcher(("kind",), ("during",), pool_size=2, max_in_flight=2)
    yield d.start()
    yield d.add_event_handler("tests.integration.faults:late", "during", timeout=60)
    d.fire_event({"after": 60})
    d.fire_event({"after": 60})
    pids = d.pools()["default"].child_pids()
    print("CHILDREN", " ".join(map(str, pids)), flush=True)
    yield defer.Deferred()

task.react(main)
"""


class ParentDeathTests(FaultTestCase):
    @defer.inlineCallbacks
    def test_parent_killed_leaves_no_child(self) -> Any:
        """
        A parent killed with SIGKILL while its children are busy leaves no
        child behind: the parent-death signal takes them down.
        """
        from tests.integration.support import ROOT, Collector

        collector = Collector()
        process = reactor.spawnProcess(  # type: ignore[attr-defined]
            collector,
            sys.executable,
            [sys.executable, "-c", PARENT_SCRIPT],
            env=dict(os.environ),
            path=str(ROOT),
        )
        deadline = time.monotonic() + 20
        while b"CHILDREN" not in collector.output:
            self.assertLess(time.monotonic(), deadline, collector.output.decode())
            yield deferLater(reactor, 0.05, lambda: None)
        line = collector.output.split(b"CHILDREN", 1)[1].split(b"\n", 1)[0]
        children = [int(p) for p in line.split()]
        self.assertEqual(len(children), 2)
        self.assertTrue(all(alive(p) for p in children))
        process.signalProcess("KILL")
        yield collector.ended
        deadline = time.monotonic() + 5
        while any(alive(p) for p in children) and time.monotonic() < deadline:
            yield deferLater(reactor, 0.05, lambda: None)
        self.assertEqual([p for p in children if alive(p)], [])


class BootFailureTests(FaultTestCase):
    @defer.inlineCallbacks
    def test_children_that_die_while_booting(self) -> Any:
        """
        A child that dies while it boots (here: its C{children} package raises
        at import) counts as a boot failure: the pool logs each one and
        respawns with a growing delay, and once C{max_boot_failures} have
        happened in a row, a handler check waiting for a child fails at once,
        saying why, instead of waiting for ever; nothing is left behind.
        """
        import shutil
        import tempfile

        from twisted.logger import globalLogPublisher

        from actordispatch import HandlerImportError

        directory = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, directory)
        os.mkdir(os.path.join(directory, "actordispatch"))
        with open(os.path.join(directory, "actordispatch", "__init__.py"), "w") as init:
            init.write("raise SystemExit(7)\n")
        logged: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(logged.append)
        self.addCleanup(globalLogPublisher.removeObserver, logged.append)
        pool = self.pool(
            size=1,
            max_boot_failures=3,
            child_env={"PYTHONSAFEPATH": "1", "PYTHONPATH": directory},
        )
        d = self.dispatcher(pool)
        d.start().addErrback(lambda _: None)
        registered = d.add_event_handler("tests.integration.handlers:pid", "during")
        failure = yield self.assertFailure(registered, HandlerImportError)
        self.assertIn("children keep dying while booting", str(failure))
        self.assertIn("exit code 7", str(failure))
        boots = [
            event
            for event in logged
            if "died while booting" in event.get("log_format", "")
        ]
        self.assertGreaterEqual(len(boots), 3)
        self.assertEqual([event["count"] for event in boots[:3]], [1, 2, 3])


class StandbyTests(FaultTestCase):
    @defer.inlineCallbacks
    def test_standby_takes_over(self) -> Any:
        """
        A pool of one child keeps a booted standby child: when the serving
        child crashes, the standby serves the next event (it is the one that
        was standing by) and a new standby boots; with C{standby=0} none is
        kept.
        """
        pool = self.pool(size=1)
        d = self.dispatcher(pool)
        yield d.start()
        yield d.add_event_handler(F + "pid", "during", kind="live")
        yield d.add_event_handler(F + "exit_at", "during", kind="die")
        yield d.fire_event({}, kind="live")
        for _ in range(100):
            if pool.standby_pids():
                break
            yield deferLater(reactor, 0.05, lambda: None)
        (spare,) = pool.standby_pids()
        (serving,) = pool.child_pids()
        self.pids.update({spare, serving})
        crashed = yield d.fire_event({"n": 1, "at": 1}, kind="die")
        self.assertEqual(crashed.outcomes[0].status, "crashed")
        after = yield d.fire_event({}, kind="live")
        self.assertEqual(after.outcomes[0].value, spare)
        for _ in range(100):
            if pool.standby_pids():
                break
            yield deferLater(reactor, 0.05, lambda: None)
        self.assertNotIn(pool.standby_pids()[0], (spare, serving))
        self.assertEqual(self.pool(size=1, standby=0).standby, 0)
        self.assertRaises(ValueError, self.pool, standby=-1)


class FollowUpFaultTests(FaultTestCase):
    @defer.inlineCallbacks
    def test_forged_and_flooded_follow_ups(self) -> Any:
        """
        A child's follow-up naming a batch it is not running is refused; a
        flood of follow-ups is cut at max_follow_ups; the child keeps serving
        and every accepted follow-up event finishes.
        """
        d = self.dispatcher(pool=self.pool(size=1, max_follow_ups=5))
        yield d.start()
        yield d.add_event_handler(F + "forged_follow_ups", "during", kind="bad")
        yield d.add_event_handler(F + "ok", "during", kind="note")
        result = yield d.fire_event({"flood": 8}, kind="bad")
        self.assertTrue(result.ok, result.failures)
        summary = result.outcomes[0].value
        self.assertIn("no handler of this child is running", summary["forged"])
        self.assertEqual(summary["accepted"], 5)
        self.assertEqual(len(summary["refused"]), 1)
        self.assertIn("max_follow_ups=5", summary["refused"][0])
        for _ in range(100):
            stats = d.stats()
            if stats.finished == stats.accepted == 6:
                break
            yield deferLater(reactor, 0.05, lambda: None)
        self.assertEqual((d.stats().accepted, d.stats().finished), (6, 6))

    @defer.inlineCallbacks
    def test_max_waiting(self) -> Any:
        """
        Past the pool's max_waiting parked children, a handler's waiting
        follow-up is refused with a FollowUpError that says so; every level
        still finishes.
        """
        d = self.dispatcher(pool=self.pool(size=1, max_waiting=1))
        yield d.start()
        yield d.add_event_handler(H + "recurse", "during", kind="loop")
        result = yield d.fire_event({"level": 0}, kind="loop")
        self.assertTrue(result.ok, result.failures)
        cut = result.outcomes[0].value
        self.assertEqual((cut["cut_at"], cut["error"]), (1, "FollowUpError"))
        self.assertIn("max_waiting=1", cut["message"])
        self.assertEqual((d.stats().accepted, d.stats().finished), (2, 2))
