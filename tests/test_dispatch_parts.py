"""
The parts of the dispatcher, each alone: the option rules, the pool
capabilities (declared, checked with C{verifyObject}), the pool table, the
handler book, admission, the phase runner and the stopper; and the facade's
refusal of local-pool options given with C{pool=}.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from actordispatch import EventDispatcher, Phase, Veto
from actordispatch._core.errors import NotRunningError, OverloadedError
from actordispatch._core.options import (
    RESERVED_KEYWORDS,
    OptionError,
    check_expires,
    check_keyword_name,
    check_max_calls,
    check_max_depth,
    check_max_queue,
    check_on_overload,
    check_order_by,
    check_retries,
    check_timeout,
)
from actordispatch._core.phase import phases_of
from actordispatch._core.registry import HandlerRegistry
from actordispatch._core.result import DispatchResult
from actordispatch._dispatch.admission import Admission
from actordispatch._dispatch.book import HandlerBook
from actordispatch._dispatch.delivery import Delivery
from actordispatch._dispatch.keywords import KeywordSet
from actordispatch._dispatch.pools import PoolSet
from actordispatch._dispatch.runner import PhaseRunner
from actordispatch._dispatch.stopping import Lifecycle, Stopper
from actordispatch._service.config import ConfigError, parse_config
from actordispatch.interfaces import (
    IConnectedPool,
    IFollowUpPool,
    IHandlerPool,
    IJobPool,
    IProcessPool,
    ITimedPool,
    IWarmablePool,
)
from actordispatch.testing import FakeJobPool, FakePool


def handler(event: Any) -> None:
    """
    A module-level handler (never run: the fake pools answer).
    """


@implementer(IWarmablePool, IProcessPool, IFollowUpPool)
class CapablePool(FakePool):
    """
    A fake pool with the local pool's optional capabilities.
    """

    size = 2
    default_timeout = 30.0

    def __init__(self) -> None:
        super().__init__()
        self.warmed: list[str] = []
        self.sinks: list[object] = []

    def warm(self, handler: str) -> None:
        self.warmed.append(handler)

    def child_pids(self) -> list[int]:
        return [101, 102]

    def set_follow_ups(self, sink: object) -> None:
        self.sinks.append(sink)


class ProbedPool(FakePool):
    """
    A fake pool with the capabilities' methods but no declaration: it must
    not be used as if it had them.
    """

    def warm(self, handler: str) -> None:
        raise AssertionError("warm() called on a pool that does not declare it")

    def child_pids(self) -> list[int]:
        raise AssertionError("child_pids() called on a pool that does not declare it")

    @property
    def size(self) -> int:
        raise AssertionError("size read on a pool that does not declare it")

    @property
    def default_timeout(self) -> float:
        raise AssertionError("default_timeout read on a pool that does not declare it")

    def set_follow_ups(self, sink: object) -> None:
        raise AssertionError("set_follow_ups() called on an undeclared pool")


class OptionRuleTests(SynchronousTestCase):
    """
    L{actordispatch._core.options}: one set of rules, with messages that name
    the option apart from the problem.
    """

    def test_message_parts(self) -> None:
        """
        An L{OptionError} is a C{ValueError} whose message is the option's
        name and the problem, kept apart for the configuration's messages.
        """
        with self.assertRaises(OptionError) as caught:
            check_retries(-1)
        self.assertIsInstance(caught.exception, ValueError)
        self.assertEqual(caught.exception.option, "retries")
        self.assertEqual(caught.exception.problem, "must be a non-negative int, not -1")
        self.assertEqual(
            str(caught.exception), "retries must be a non-negative int, not -1"
        )

    def test_good_values_returned(self) -> None:
        """
        Each checker returns a good value as it is.
        """
        self.assertEqual(check_retries(2), 2)
        self.assertEqual(check_timeout(0.5), 0.5)
        self.assertIsNone(check_timeout(None))
        self.assertEqual(check_expires(3), 3)
        self.assertEqual(check_max_calls(1), 1)
        self.assertEqual(check_on_overload("wait"), "wait")
        self.assertIsNone(check_max_queue(None))
        self.assertEqual(check_max_depth(0), 0)
        self.assertEqual(check_order_by("user", {"user"}), "user")
        self.assertEqual(check_keyword_name("user"), "user")

    def test_bad_values(self) -> None:
        """
        Bools are not ints, zero is not positive, and names must be allowed.
        """
        for check, value in [
            (check_retries, True),
            (check_max_calls, 0),
            (check_timeout, 0),
            (check_expires, True),
            (check_on_overload, "drop"),
            (check_max_queue, -1),
            (check_max_depth, 1.5),
        ]:
            self.assertRaises(OptionError, check, value)
        self.assertRaises(OptionError, check_order_by, "x", {"user"})
        for name in ("not an id", *sorted(RESERVED_KEYWORDS)):
            self.assertRaises(OptionError, check_keyword_name, name)

    def test_finite_timeout(self) -> None:
        """
        An infinite timeout is a timeout for the dispatcher, not for a peer
        over AMP (C{finite=True}).
        """
        inf = float("inf")
        self.assertEqual(check_timeout(inf), inf)
        self.assertRaises(OptionError, check_timeout, inf, finite=True)
        self.assertRaises(OptionError, check_timeout, float("nan"))

    def test_config_uses_the_rules(self) -> None:
        """
        The TOML configuration reports a value the dispatcher would refuse
        with the dispatcher's rule, against its file and key.
        """
        head = '[dispatcher]\nkeywords = ["user"]\n'
        entry = '[[handlers]]\nhandler = "a.b:c"\nphase = "during"\n'
        for text, where, problem in [
            (head + 'on_overload = "drop"\n', "dispatcher.on_overload", "'fail'"),
            (head + "max_queue = -1\n", "dispatcher.max_queue", "non-negative"),
            (head + entry + "retries = -1\n", "handlers[0].retries", "non-negative"),
            (head + entry + "timeout = 0\n", "handlers[0].timeout", "positive"),
            (head + entry + "max_calls = 0\n", "handlers[0].max_calls", "positive"),
        ]:
            with self.assertRaises(ConfigError) as caught:
                parse_config(text, "app.toml")
            self.assertIn(f"app.toml: {where}: must", str(caught.exception))
            self.assertIn(problem, str(caught.exception))
        with self.assertRaises(ConfigError) as caught:
            parse_config('[dispatcher]\nkeywords = ["phase"]\n', "app.toml")
        self.assertIn("app.toml: dispatcher.keywords[0]:", str(caught.exception))

    def test_phases_of(self) -> None:
        """
        Phases are a non-empty collection of distinct names or L{Phase}s.
        """
        self.assertEqual(phases_of(["a", Phase("b")]), (Phase("a"), Phase("b")))
        for bad in ("during", [], ["a", "a"]):
            self.assertRaises(ValueError, phases_of, bad)


class CapabilityTests(SynchronousTestCase):
    """
    Optional pool capabilities are declared, verified, and only used when
    declared.
    """

    def test_local_pool(self) -> None:
        """
        The local ampoule pool warms, has processes and takes follow-ups.
        """
        from actordispatch import AmpoulePool

        pool = AmpoulePool(size=3, default_timeout=9.0, reactor=Clock())
        for interface in (
            IJobPool,
            IWarmablePool,
            IProcessPool,
            ITimedPool,
            IFollowUpPool,
        ):
            self.assertTrue(verifyObject(interface, pool))
        self.assertEqual((pool.size, pool.default_timeout), (3, 9.0))
        self.assertFalse(IConnectedPool.providedBy(pool))

    def test_amqp_pool(self) -> None:
        """
        The AMQP pool has a connection and (no) processes.
        """
        from actordispatch import AMQPPool

        pool = AMQPPool(
            "amqp://guest:guest@127.0.0.1:5672/", reactor=MemoryReactorClock()
        )
        self.assertTrue(verifyObject(IConnectedPool, pool))
        self.assertTrue(verifyObject(IProcessPool, pool))
        self.assertTrue(verifyObject(ITimedPool, pool))
        self.assertEqual(pool.size, 0)
        self.assertFalse(IWarmablePool.providedBy(pool))

    def test_remote_pool(self) -> None:
        """
        An external peer's pool knows the peer's pid.
        """
        from actordispatch import RemotePool

        pool = RemotePool(self, reactor=Clock(), name="amp:t", default_timeout=4.0)
        self.assertTrue(verifyObject(IProcessPool, pool))
        self.assertTrue(verifyObject(ITimedPool, pool))
        self.assertEqual((pool.size, pool.default_timeout), (1, 4.0))
        self.assertFalse(IFollowUpPool.providedBy(pool))

    def test_fakes(self) -> None:
        """
        The public fakes provide the seams they declare, and no capability.
        """
        self.assertTrue(verifyObject(IHandlerPool, FakePool()))
        self.assertTrue(verifyObject(IJobPool, FakeJobPool()))
        self.assertFalse(IProcessPool.providedBy(FakePool()))

    def test_capable_fake(self) -> None:
        """
        The test's capable fake is a valid example of each capability.
        """
        pool = CapablePool()
        for interface in (IWarmablePool, IProcessPool, ITimedPool, IFollowUpPool):
            self.assertTrue(verifyObject(interface, pool))

    def test_undeclared_capabilities_unused(self) -> None:
        """
        A pool with methods of the capabilities' names but no declaration is
        never warmed, asked for pids, or given follow-ups.
        """
        dispatcher = EventDispatcher(("kind",), reactor=Clock(), pool=ProbedPool())
        dispatcher.start()
        self.successResultOf(dispatcher.add_event_handler(handler, "during"))
        self.assertEqual(dispatcher.handlers()[0].child_pids, ())

    def test_declared_capabilities_used(self) -> None:
        """
        A pool that declares them is given the follow-up sink, warmed for each
        registered handler, and its pids are listed with its handlers.
        """
        pool = CapablePool()
        dispatcher = EventDispatcher(("kind",), reactor=Clock(), pool=pool)
        self.assertEqual(pool.sinks, [dispatcher.fire_follow_up])
        self.successResultOf(dispatcher.add_event_handler(handler, "during"))
        self.assertEqual(pool.warmed, [f"{__name__}:handler"])
        self.assertEqual(tuple(dispatcher.handlers()[0].child_pids), (101, 102))

    def test_worker_prefetch_follows_declared_size(self) -> None:
        """
        A worker host's default prefetch is twice its pool's
        L{IProcessPool.size} when the pool declares it, and 2 when it does
        not, whatever attributes it has.
        """
        from actordispatch._amqp.worker import WorkerHost

        url = "amqp://guest:guest@127.0.0.1:5672/"
        prefetch = {
            type(pool).__name__: WorkerHost(
                url, ["m:h"], pool=pool, reactor=MemoryReactorClock()
            ).prefetch
            for pool in (CapablePool(), ProbedPool())
        }
        self.assertEqual(prefetch, {"CapablePool": 4, "ProbedPool": 2})


class PoolOptionTests(SynchronousTestCase):
    """
    C{pool=} replaces the local pool, so the local pool's options with it
    are refused instead of ignored.
    """

    def test_refused(self) -> None:
        """
        Each local-pool option given with C{pool=} is named in the error.
        """
        with self.assertRaises(ValueError) as caught:
            EventDispatcher(("kind",), reactor=Clock(), pool=FakePool(), pool_size=7)
        self.assertIn("pool_size", str(caught.exception))
        self.assertIn("pool=", str(caught.exception))
        with self.assertRaises(ValueError) as caught:
            EventDispatcher(
                ("kind",),
                reactor=Clock(),
                pool=FakePool(),
                default_timeout=5,
                child_env={"A": "b"},
                max_batch=2,
                recycle_after=3,
                sandbox=object(),  # type: ignore[arg-type]
            )
        for name in ("default_timeout", "child_env", "max_batch", "recycle_after"):
            self.assertIn(name, str(caught.exception))
        self.assertIn("sandbox", str(caught.exception))

    def test_defaults_accepted(self) -> None:
        """
        The options at their defaults (as a caller passing them through
        would) are accepted with C{pool=}.
        """
        EventDispatcher(
            ("kind",),
            reactor=Clock(),
            pool=FakePool(),
            default_timeout=60.0,
            max_batch=64,
            recycle_after=0,
        )


class PoolSetTests(SynchronousTestCase):
    """
    L{PoolSet}: the pool table, which pools were started, follow-up wiring.
    """

    def test_add_and_remove(self) -> None:
        """
        Names are unique and non-empty; the default pool cannot be removed;
        a removed pool that was started is stopped, one that was not is not.
        """
        pools = PoolSet()
        first, second = FakePool(), FakePool()
        pools.add("default", first)
        pools.add("x", second)
        self.assertRaises(ValueError, pools.add, "x", FakePool())
        self.assertRaises(ValueError, pools.add, "", FakePool())
        self.assertRaises(ValueError, pools.removable, "default")
        self.assertRaises(KeyError, pools.removable, "nope")
        self.successResultOf(pools.ensure("x"))
        self.successResultOf(pools.remove("x"))
        self.assertEqual((second.starts, second.stops), (1, 1))
        self.assertNotIn("x", pools)
        self.assertNotIn("x", pools.submitters)

    def test_start_and_stop(self) -> None:
        """
        C{start_all} starts every pool; C{stop_started} stops those started
        since, once.
        """
        pools = PoolSet()
        a, b = FakePool(), FakePool()
        pools.add("default", a)
        pools.add("b", b)
        self.successResultOf(pools.start_all())
        self.successResultOf(pools.stop_started())
        self.successResultOf(pools.stop_started())
        self.assertEqual([(p.starts, p.stops) for p in (a, b)], [(1, 1), (1, 1)])

    def test_follow_ups(self) -> None:
        """
        Only a declared L{IFollowUpPool} is given the sink.
        """
        sink = object()
        pools = PoolSet(follow_ups=sink)  # type: ignore[arg-type]
        capable = CapablePool()
        pools.add("default", capable)
        pools.add("probed", ProbedPool())
        self.assertEqual(capable.sinks, [sink])

    def test_child_pids(self) -> None:
        """
        Pools that are not L{IProcessPool}s have no pids.
        """
        pools = PoolSet()
        pools.add("default", CapablePool())
        pools.add("fake", FakePool())
        self.assertEqual(pools.child_pids(), {"default": [101, 102], "fake": ()})


def _book(running: bool = True) -> tuple[HandlerBook, Clock, FakePool, Lifecycle]:
    clock = Clock()
    pool = FakePool()
    pools = PoolSet()
    pools.add("default", pool)
    state = Lifecycle(running=running)
    book = HandlerBook(("during",), KeywordSet(["kind"]), pools, state, clock)
    return book, clock, pool, state


def _add(book: HandlerBook, name: Any = handler, **options: Any) -> Deferred[int]:
    arguments: dict[str, Any] = {
        "max_calls": None,
        "timeout": None,
        "retries": 0,
        "pool": "default",
        "expires": None,
        "owner": None,
        "priority": 0,
        "match_spec": {},
    }
    arguments.update(options)
    return book.add(name, "during", **arguments)


class HandlerBookTests(SynchronousTestCase):
    """
    L{HandlerBook}: registering, checking, expiry and removal.
    """

    def test_callable_at_once(self) -> None:
        """
        A callable is registered at once; ids are never reused.
        """
        book, _, pool, _ = _book()
        first = self.successResultOf(_add(book))
        self.successResultOf(book.remove(first))
        second = self.successResultOf(_add(book))
        self.assertNotEqual(first, second)
        self.assertEqual(len(book), 1)
        self.assertEqual(pool.checks, [])

    def test_name_checked(self) -> None:
        """
        A name is checked by the pool (started for it) before it goes live;
        a drain waits for the check.
        """
        book, _, pool, _ = _book()
        pool.importable = ["a.b:c"]
        self.successResultOf(_add(book, "a.b:c"))
        self.assertEqual((pool.checks, pool.starts), (["a.b:c"], 1))
        self.failureResultOf(_add(book, "x.y:z"))
        self.assertEqual(len(book), 1)
        self.assertTrue(book.idle())

    def test_options_checked(self) -> None:
        """
        Bad options are refused at once, with the shared rules' messages.
        """
        book, _, _, _ = _book()
        with self.assertRaises(ValueError) as caught:
            _add(book, retries=-1)
        self.assertEqual(
            str(caught.exception), "retries must be a non-negative int, not -1"
        )
        self.assertRaises(ValueError, _add, book, pool="nope")
        self.assertRaises(ValueError, _add, book, match_spec={"other": 1})
        self.assertRaises(ValueError, _add, book, owner=[])

    def test_expiry(self) -> None:
        """
        A handler with C{expires} is removed when its time is up, while the
        dispatcher runs; stopping cancels the timer, starting schedules it
        again.
        """
        book, clock, _, state = _book()
        self.successResultOf(_add(book, expires=10))
        book.cancel_expiries()
        state.running = False
        clock.advance(20)
        self.assertEqual(len(book), 1)
        state.running = True
        book.schedule_expiries()
        self.assertEqual(len(book), 0)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_remove_owned_and_pool(self) -> None:
        """
        Removal by owner counts what it removed; forgetting a pool removes
        its handlers.
        """
        book, _, _, _ = _book()
        self.successResultOf(_add(book, owner="a"))
        self.successResultOf(_add(book, owner="a"))
        self.successResultOf(_add(book, owner="b"))
        self.assertEqual(self.successResultOf(book.remove_owned("a")), 2)
        self.assertRaises(ValueError, book.remove_owned, None)
        book.forget_pool("default")
        self.assertEqual(len(book), 0)
        self.failureResultOf(book.remove(99), KeyError)


class _Runner:
    """
    Stands in for the runner: records the events admission starts.
    """

    def __init__(self) -> None:
        self.started: list[Delivery] = []

    def __call__(self, delivery: Delivery) -> None:
        self.started.append(delivery)


def _admission(**options: Any) -> tuple[Admission, _Runner, Lifecycle]:
    state = Lifecycle(running=True)
    runner = _Runner()
    admission = Admission(
        state,
        KeywordSet(["user"]),
        HandlerRegistry(("during",)),
        Clock(),
        runner,
        max_event_size=1 << 20,
        **options,
    )
    return admission, runner, state


class AdmissionTests(SynchronousTestCase):
    """
    L{Admission}: what is accepted, what waits, and in which order events
    start.
    """

    def test_not_running(self) -> None:
        """
        A stopped dispatcher accepts nothing.
        """
        admission, runner, state = _admission()
        state.running = False
        self.failureResultOf(admission.fire({}, None, {}), NotRunningError)
        self.assertEqual((admission.accepted, runner.started), (0, []))

    def test_max_in_flight(self) -> None:
        """
        Past C{max_in_flight} events queue, and start as others finish.
        """
        admission, runner, _ = _admission(max_in_flight=1)
        done = [admission.fire({"n": n}, None, {}) for n in range(3)]
        self.assertEqual((len(runner.started), admission.queued), (1, 2))
        admission.finish(runner.started[0])
        self.assertIsInstance(self.successResultOf(done[0]), DispatchResult)
        self.assertEqual((len(runner.started), admission.queued), (2, 1))

    def test_overload_fail(self) -> None:
        """
        With a full queue and C{on_overload="fail"}, an event is rejected.
        """
        admission, _, _ = _admission(max_queue=1)
        admission.fire({}, None, {})
        admission.fire({}, None, {})
        self.failureResultOf(admission.fire({}, None, {}), OverloadedError)
        self.assertEqual(admission.rejected, 1)

    def test_overload_wait(self) -> None:
        """
        With C{on_overload="wait"} it waits for room; stopping fails it.
        """
        admission, runner, _ = _admission(max_queue=1, on_overload="wait")
        admission.fire({}, None, {})
        admission.fire({}, None, {})
        waiting = admission.fire({}, None, {})
        self.assertEqual(admission.waiting, 1)
        admission.finish(runner.started[0])
        self.assertEqual((admission.waiting, admission.queued), (0, 1))
        self.assertNoResult(waiting)
        late = admission.fire({}, None, {})
        admission.refuse_waiting()
        self.failureResultOf(late, NotRunningError)

    def test_order_by(self) -> None:
        """
        Events sharing an C{order_by} value run one after the other, others
        alongside.
        """
        admission, runner, _ = _admission(max_in_flight=4, order_by="user")
        for user in ("a", "a", "b"):
            admission.fire({}, None, {"user": user})
        self.assertEqual([d.keywords["user"] for d in runner.started], ["a", "b"])
        admission.finish(runner.started[0])
        self.assertEqual([d.keywords["user"] for d in runner.started], ["a", "b", "a"])


def _runner(
    pool: FakePool, phases: tuple[Phase, ...] = (Phase("during"),), **options: Any
) -> tuple[PhaseRunner, HandlerRegistry, list[Delivery]]:
    pools = PoolSet()
    pools.add("default", pool)
    registry = HandlerRegistry(tuple(p.name for p in phases))
    runner = PhaseRunner(phases, registry, pools.submitters, Lifecycle(), **options)
    finished: list[Delivery] = []
    runner.finish = finished.append
    return runner, registry, finished


def _delivery(registry: HandlerRegistry) -> Delivery:
    return Delivery(b"{}", {}, None, registry.plan({}, lambda: 0.0), Deferred())


def _register(registry: HandlerRegistry, phase: str = "during", **options: Any) -> None:
    from actordispatch._core.match import MatchSpec
    from actordispatch._core.registry import Registration

    registry.register(
        Registration(
            handler_id=registry.new_id(),
            handler="a.b:c",
            phase=phase,
            spec=MatchSpec.from_keywords({}),
            **options,
        )
    )


class PhaseRunnerTests(SynchronousTestCase):
    """
    L{PhaseRunner}: phases in order, outcomes judged, retries, and a loop
    that never recurses.
    """

    def test_outcomes_recorded(self) -> None:
        """
        Every handler of a phase is sent together; the event finishes when
        all settled, with their outcomes in order.
        """
        pool = FakePool()
        runner, registry, finished = _runner(pool)
        _register(registry)
        _register(registry)
        delivery = _delivery(registry)
        runner.run_phase(delivery)
        self.assertEqual(len(pool.calls), 2)
        pool.calls[1].succeed(2)
        self.assertEqual(finished, [])
        pool.calls[0].succeed(1)
        self.assertEqual(finished, [delivery])
        self.assertEqual([o.value for o in delivery.outcomes], [1, 2])

    def test_veto_halts(self) -> None:
        """
        A veto in a phase that may veto skips the later phases' handlers;
        where vetoing is not allowed it is an error.
        """
        pool = FakePool()
        phases = (Phase("check", veto=True), Phase("during"), Phase("after"))
        runner, registry, finished = _runner(pool, phases)
        _register(registry, "check")
        _register(registry, "during")
        _register(registry, "after")
        delivery = _delivery(registry)
        runner.run_phase(delivery)
        pool.calls[0].succeed(Veto("no"))
        self.assertEqual(len(pool.calls), 1)
        self.assertEqual(
            [o.status for o in delivery.outcomes], ["ok", "skipped", "skipped"]
        )
        self.assertEqual(finished, [delivery])

    def test_retry(self) -> None:
        """
        A timed-out invocation with retries left is sent again; one outcome
        is recorded, the last.
        """
        pool = FakePool()
        runner, registry, finished = _runner(pool)
        _register(registry, retries=1)
        delivery = _delivery(registry)
        runner.run_phase(delivery)
        pool.calls[0].fail("timeout")
        self.assertEqual(len(pool.calls), 2)
        pool.calls[1].succeed()
        self.assertEqual([o.status for o in delivery.outcomes], ["ok"])

    def test_loop_not_recursion(self) -> None:
        """
        Twenty thousand events whose handlers settle at once all finish,
        without the stack growing with them.
        """
        pool = FakeJobPool(answer=lambda call: call.succeed())
        runner, registry, finished = _runner(pool)
        _register(registry)
        deliveries = [_delivery(registry) for _ in range(20_000)]

        def next_one(delivery: Delivery) -> None:
            finished.append(delivery)
            if len(finished) < len(deliveries):
                runner.run_phase(deliveries[len(finished)])

        runner.finish = next_one
        runner.run_phase(deliveries[0])
        self.assertEqual(len(finished), 20_000)

    def test_bug_reported(self) -> None:
        """
        A bug while moving an event on is logged and ends that event only.
        """
        pool = FakePool()
        runner, registry, _ = _runner(pool)
        broken: list[Delivery] = []
        runner.broke = lambda delivery, reason: broken.append(delivery)

        def finish(delivery: Delivery) -> None:
            raise RuntimeError("bug")

        runner.finish = finish
        delivery = _delivery(registry)
        runner.run_phase(delivery)
        self.assertEqual(broken, [delivery])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)


def _stopper(
    drain_timeout: float | None = None,
) -> tuple[Stopper, Clock, Admission, FakePool, Lifecycle]:
    clock = Clock()
    pool = FakePool()
    pools = PoolSet()
    pools.add("default", pool)
    state = Lifecycle()
    keywords = KeywordSet(["kind"])
    book = HandlerBook(("during",), keywords, pools, state, clock)
    admission = Admission(
        state,
        keywords,
        book.registry,
        clock,
        lambda delivery: None,
        max_event_size=1024,
    )
    stopper = Stopper(
        state, clock, pools, book, admission, ("during",), drain_timeout=drain_timeout
    )
    return stopper, clock, admission, pool, state


class StopperTests(SynchronousTestCase):
    """
    L{Stopper}: start, stop, drain, and the drain timeout's rules.
    """

    def test_start_stop(self) -> None:
        """
        Start starts the pools; an idle stop ends at once and stops them;
        start after it runs again.
        """
        stopper, _, _, pool, state = _stopper()
        self.successResultOf(stopper.start())
        self.assertTrue(state.running)
        self.successResultOf(stopper.stop())
        self.assertEqual((pool.starts, pool.stops, state.running), (1, 1, False))
        self.successResultOf(stopper.start())

    def test_first_stop_drains(self) -> None:
        """
        With an event in flight, stop waits for it; a second stop fires with
        the first; start meanwhile fails.
        """
        stopper, _, admission, _, state = _stopper()
        stopper.start()
        admission.in_flight = 1
        first, second = stopper.stop(), stopper.stop()
        self.assertNoResult(first)
        self.failureResultOf(stopper.start())
        admission.in_flight = 0
        state.check_drained()
        self.successResultOf(first)
        self.successResultOf(second)

    def test_drain_timeout_shortens(self) -> None:
        """
        A later C{drain_timeout} shortens the drain, never lengthens it; when
        it passes, the pools are aborted.
        """
        stopper, clock, admission, pool, state = _stopper(drain_timeout=10)
        stopper.start()
        admission.in_flight = 1
        done = stopper.stop()
        stopper.stop(drain_timeout=30)
        clock.advance(9)
        self.assertEqual(pool.aborts, [])
        stopper.stop(drain_timeout=0.5)
        clock.advance(0.5)
        self.assertEqual(len(pool.aborts), 1)
        self.assertIn("drain timeout of 0.5s", pool.aborts[0])
        self.assertNoResult(done)
        admission.in_flight = 0
        state.check_drained()
        self.successResultOf(done)
        self.assertEqual(clock.getDelayedCalls(), [])
