"""
Sweeps: how the dispatcher's speed changes with one setting at a time, each
point reported against the naive ampoule baseline measured in the same run,
and drawn.

The machinery, the trivial handler and the naive baseline are those of
L{benchmarks.bench_dispatch} (read it first); so are the method and its
helpers: the points of a sweep run interleaved, in a different order each
round, each after a warm-up, and every figure is the median over the rounds.
The sweeps:

 1. B{children} (1, 2, 3, 4): throughput of C{EventDispatcher(max_in_flight=64)}
    with 64 events outstanding, against the naive pool (one C{doWork} per
    event) of as many children with 100 outstanding.
 2. B{payload} (1 KiB, 16 KiB, 256 KiB, 1 MiB encoded events): end-to-end
    latency of one event at a time (serial dispatcher, two children), against
    the naive pool one call at a time.  The naive command carries its event
    over several AMP keys (L{benchmarks.sweep_handlers.RunNoopChunked}), since
    one AMP value holds 64 KiB at most, and its parent encodes the event with
    orjson, as the dispatcher does.
 3. B{fan-out} (1, 10, 100 handlers matching in one phase): the time one event
    takes to complete, one event at a time, against the naive pool given the
    same number of C{doWork} calls at once for the event.
 4. B{max_in_flight} (1, 4, 16, 64, 256), with as many events outstanding,
    against the naive pool with as many calls outstanding, and with 100 (the
    reference of L{benchmarks.bench_dispatch} and of the throughput target).

For each point: events/s, p50 and p99 latency, the CPU time the parent
process spent per event, the CPU time the children spent per event (their
C{/proc/<pid>/stat} utime + stime before and after; the clock ticks every
10 ms, so it is coarse for short runs) and the parent's resident memory after
the point ran.  The "vs naive" column is events/s over the naive pool's at the
same point for the throughput sweeps, and p50 over the naive pool's p50 for
the latency sweeps.

Then three measurements that are not sweeps:

 - B{child replacement}: a handler ends its child with C{os._exit} after
   noting the time; an event fired right behind it waits for a child.  With
   one child it is served by the replacement: the time from the crash to its
   result is what a crash costs.  With two, the surviving child serves it.
 - B{1 MiB event}: the payload sweep's 1 MiB point, end to end.
 - B{routing at scale}: C{HandlerRegistry.plan()} with 100 and with 100,000
   registered handlers (exact and wildcard specs, 10 matching), as in
   L{benchmarks.bench_dispatch}, plus the parent memory each registered
   handler takes (C{tracemalloc}, and the resident memory's growth).

The issue's targets are printed as PASS or MISS; a miss never makes the exit
status non-zero.  Run it from the project root, so that the children can
import C{benchmarks}::

    python -m benchmarks.sweeps [--quick] [--rounds R] [--only SWEEP]
                                [--json PATH] [--charts DIR]

C{--charts} needs matplotlib (C{pip install actordispatch[bench]}); without
it the charts are skipped with a message.  C{--quick} is a smoke run of a few
seconds, whose figures mean little.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import orjson
from attrs import asdict, frozen
from twisted.internet.defer import Deferred, ensureDeferred, gatherResults
from twisted.internet.task import deferLater, react

from benchmarks.bench_dispatch import (
    AIM_THROUGHPUT,
    BASELINE_WINDOW,
    CHILDREN,
    DISPATCHER_WINDOW,
    ROUTING_MATCHES,
    ROUTING_SIZES,
    TARGET_ROUTING,
    TARGET_SERIAL_P50,
    TARGET_THROUGHPUT,
    Measurement,
    _check_dispatch,
    _check_naive,
    _fmt,
    _median,
    _rotate,
    _start_logging,
    _verdict,
    build_registry,
    dispatcher_call,
    drive,
    naive_call,
    start_dispatcher,
    start_naive_pool,
    summarize,
    time_plan,
    timed,
)
from benchmarks.handlers import RunNoop, noop
from benchmarks.sweep_handlers import NoopChunkedChild, RunNoopChunked

#: The points of each sweep.
CHILDREN_POINTS = (1, 2, 3, 4)
PAYLOAD_POINTS = (1024, 16 * 1024, 256 * 1024, 1024 * 1024)
FANOUT_POINTS = (1, 10, 100)
IN_FLIGHT_POINTS = (1, 4, 16, 64, 256)

#: The issue's targets (the throughput ones are bench_dispatch's).
TARGET_FANOUT = 5.0
TARGET_ONE_MIB_MS = 10.0
TARGET_REPLACEMENT_MS = 50.0

#: The mechanisms of every sweep.
DISPATCHER = "dispatcher"
NAIVE = "naive ampoule"

SWEEPS = ("children", "payload", "fanout", "in_flight")
EXTRAS = ("replacement", "routing")

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


_STARTED = time.perf_counter()


def _progress(message: str) -> None:
    print(
        f"[{time.perf_counter() - _STARTED:6.1f} s] {message}",
        file=sys.stderr,
        flush=True,
    )


# --- what a point measures ------------------------------------------------------------


def children_cpu_seconds(pids: Sequence[int]) -> float | None:
    """
    The CPU time (user + system) the processes C{pids} have used so far, from
    C{/proc/<pid>/stat}, or C{None} if one of them cannot be read.
    """
    ticks = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            return None
        # The fields after the command name, which may hold spaces and ")".
        fields = stat[stat.rfind(b")") + 2 :].split()
        ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / _CLOCK_TICKS


def parent_rss_mib() -> float | None:
    """
    The parent's resident memory now, in MiB (C{None} without C{/proc}).
    """
    try:
        with open("/proc/self/statm", "rb") as f:
            pages = int(f.read().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return pages * _PAGE_SIZE / 2**20


@frozen
class Sample:
    """
    One timed run of one mechanism at one point of a sweep.

    @ivar child_cpu_us: CPU time the children spent per event (microseconds).
    @ivar parent_rss_mib: the parent's resident memory after the run.
    """

    measurement: Measurement
    child_cpu_us: float | None
    parent_rss_mib: float | None


@frozen
class Run:
    """
    One mechanism at one point: C{start(count)} times C{count} events; C{pids()}
    are its children's pids.
    """

    mechanism: str
    point: Any
    start: Callable[[int], Awaitable[Measurement]]
    count: int
    pids: Callable[[], list[int]]


async def sample(run: Run) -> Sample:
    """
    C{run} once, timed as L{benchmarks.bench_dispatch.timed} times it, with its
    children's CPU time and the parent's memory.
    """
    pids = run.pids()
    before = children_cpu_seconds(pids)
    measured = await timed(run.start, run.count)
    after = children_cpu_seconds(pids)
    child_us = None
    if before is not None and after is not None:
        child_us = (after - before) / run.count * 1e6
    return Sample(measured, child_us, parent_rss_mib())


async def run_rounds(
    name: str, runs: list[Run], rounds: int
) -> dict[tuple[str, Any], list[Sample]]:
    """
    Warm every run up, then time each once per round, interleaved, in a
    different order each round, each after a short warm-up of its own.
    """
    for run in runs:  # children boot, caches fill
        await run.start(max(1, run.count // 10))
    samples: dict[tuple[str, Any], list[Sample]] = {}
    for index in range(rounds):
        for run in _rotate(runs, index):
            await run.start(max(1, run.count // 50))
            samples.setdefault((run.mechanism, run.point), []).append(await sample(run))
        _progress(f"{name}: round {index + 1}/{rounds} done")
    return samples


def summarize_samples(samples: Sequence[Sample]) -> dict[str, Any]:
    """
    The median of each figure over the rounds, as JSON-able data.
    """
    m = summarize([s.measurement for s in samples])
    return {
        "events_per_s": m.events_per_s,
        "p50_ms": m.p50_ms,
        "p99_ms": m.p99_ms,
        "parent_cpu_us_per_event": m.parent_cpu_us,
        "child_cpu_us_per_event": _median([s.child_cpu_us for s in samples]),
        "parent_rss_mib": _median([s.parent_rss_mib for s in samples]),
        "rounds": [
            {
                **asdict(s.measurement),
                "child_cpu_us": s.child_cpu_us,
                "parent_rss_mib": s.parent_rss_mib,
            }
            for s in samples
        ],
    }


# --- the mechanisms -------------------------------------------------------------------


def dispatcher_pids(dispatcher: Any) -> Callable[[], list[int]]:
    """
    The pids of a dispatcher's local pool's children.
    """
    return lambda: list(dispatcher.pools()["default"].child_pids())


def naive_pids(pool: Any) -> Callable[[], list[int]]:
    """
    The pids of an ampoule pool's children (its AMP protocol's transport is the
    process protocol, whose transport is the process).
    """
    return lambda: [child.transport.transport.pid for child in pool.processes]


def driven(
    call: Callable[[int], Deferred[Any]], window: int, check: Callable[[Any], None]
) -> Callable[[int], Awaitable[Measurement]]:
    """
    What L{Run.start} is for C{call} driven with C{window} outstanding.
    """
    return lambda count: drive(call, count, window, check)


def check_outcomes(count: int) -> Callable[[Any], None]:
    """
    A check that a result has C{count} outcomes, all C{"ok"}.
    """

    def check(result: Any) -> None:
        if len(result.outcomes) != count or not result.ok:
            raise AssertionError(f"expected {count} ok outcomes, got {result!r}")

    return check


def _check_naive_all(answers: list[Any]) -> None:
    for answer in answers:
        _check_naive(answer)


async def stop_all(dispatchers: Sequence[Any], pools: Sequence[Any]) -> None:
    """
    Stop what a sweep started.
    """
    for dispatcher in dispatchers:
        await dispatcher.stop()
    for pool in pools:
        await pool.stop()


def payload_blob(size: int) -> str:
    """
    A string that makes C{{"n": i, "data": blob}} encode to about C{size} bytes.
    """
    return "x" * max(0, size - len('{"n":100000,"data":""}'))


# --- the sweeps -----------------------------------------------------------------------


@frozen
class Options:
    """
    What to run: see L{parse_options}.
    """

    rounds: int
    scale: float
    children_points: tuple[int, ...]
    in_flight_points: tuple[int, ...]
    replacements: int
    routing_calls: int
    only: tuple[str, ...]
    json_path: str | None
    charts: str | None
    quick: bool

    def count(self, full: int) -> int:
        """
        Events per run for a run of C{full} events in a full sweep.
        """
        return max(10, int(full * self.scale))


async def sweep_children(options: Options) -> dict[tuple[str, Any], list[Sample]]:
    """
    Throughput against the number of children.
    """
    dispatchers: list[Any] = []
    pools: list[Any] = []
    runs = []
    try:
        for n in options.children_points:
            dispatcher = await start_dispatcher(DISPATCHER_WINDOW, children=n)
            dispatchers.append(dispatcher)
            pool = start_naive_pool(children=n)
            pools.append(pool)
            runs.append(
                Run(
                    DISPATCHER,
                    n,
                    driven(
                        dispatcher_call(dispatcher), DISPATCHER_WINDOW, _check_dispatch
                    ),
                    options.count(10_000),
                    dispatcher_pids(dispatcher),
                )
            )
            runs.append(
                Run(
                    NAIVE,
                    n,
                    driven(naive_call(pool), BASELINE_WINDOW, _check_naive),
                    options.count(2_500 * n),
                    naive_pids(pool),
                )
            )
        return await run_rounds("children", runs, options.rounds)
    finally:
        await stop_all(dispatchers, pools)


def _payload_dispatcher_call(
    dispatcher: Any, blob: str
) -> Callable[[int], Deferred[Any]]:
    return lambda i: dispatcher.fire_event({"n": i, "data": blob}, event_type="x")


def _payload_naive_call(pool: Any, blob: str) -> Callable[[int], Deferred[Any]]:
    # Encoded with orjson, as the dispatcher encodes events: the standard
    # library takes ~3 ms for a 1 MiB string, which would measure the codec,
    # not the one-call-per-event design.
    return lambda i: pool.doWork(
        RunNoopChunked, event=orjson.dumps({"n": i, "data": blob})
    )


async def sweep_payload(options: Options) -> dict[tuple[str, Any], list[Sample]]:
    """
    End-to-end latency, one event at a time, against the event's size.
    """
    dispatcher = pool = None
    counts = {1024: 2_000, 16 * 1024: 1_500, 256 * 1024: 300, 1024 * 1024: 120}
    try:
        dispatcher = await start_dispatcher(1)
        pool = start_naive_pool(child=NoopChunkedChild)
        runs = []
        for size in PAYLOAD_POINTS:
            blob = payload_blob(size)
            runs.append(
                Run(
                    DISPATCHER,
                    size,
                    driven(
                        _payload_dispatcher_call(dispatcher, blob), 1, _check_dispatch
                    ),
                    options.count(counts[size]),
                    dispatcher_pids(dispatcher),
                )
            )
            runs.append(
                Run(
                    NAIVE,
                    size,
                    driven(_payload_naive_call(pool, blob), 1, _check_naive),
                    options.count(counts[size]),
                    naive_pids(pool),
                )
            )
        return await run_rounds("payload", runs, options.rounds)
    finally:
        await stop_all(
            [dispatcher] if dispatcher else [], [pool] if pool is not None else []
        )


def _fanout_naive_call(pool: Any, fanout: int) -> Callable[[int], Deferred[Any]]:
    def call(i: int) -> Deferred[Any]:
        event = json.dumps({"n": i}).encode()
        return gatherResults(
            [pool.doWork(RunNoop, event=event) for _ in range(fanout)],
            consumeErrors=True,
        )

    return call


def _fanout_dispatcher_call(
    dispatcher: Any, fanout: int
) -> Callable[[int], Deferred[Any]]:
    return lambda i: dispatcher.fire_event({"n": i}, event_type=f"fanout{fanout}")


async def sweep_fanout(options: Options) -> dict[tuple[str, Any], list[Sample]]:
    """
    Completion time of one event against the handlers it matches in its phase.
    """
    dispatcher = pool = None
    counts = {1: 2_000, 10: 800, 100: 200}
    try:
        dispatcher = await start_dispatcher(1)
        for fanout in FANOUT_POINTS:
            for _ in range(fanout):
                await dispatcher.add_event_handler(
                    noop, "during", event_type=f"fanout{fanout}"
                )
        pool = start_naive_pool()
        runs = []
        for fanout in FANOUT_POINTS:
            runs.append(
                Run(
                    DISPATCHER,
                    fanout,
                    driven(
                        _fanout_dispatcher_call(dispatcher, fanout),
                        1,
                        check_outcomes(fanout),
                    ),
                    options.count(counts[fanout]),
                    dispatcher_pids(dispatcher),
                )
            )
            runs.append(
                Run(
                    NAIVE,
                    fanout,
                    driven(_fanout_naive_call(pool, fanout), 1, _check_naive_all),
                    options.count(counts[fanout]),
                    naive_pids(pool),
                )
            )
        return await run_rounds("fan-out", runs, options.rounds)
    finally:
        await stop_all(
            [dispatcher] if dispatcher else [], [pool] if pool is not None else []
        )


async def sweep_in_flight(options: Options) -> dict[tuple[str, Any], list[Sample]]:
    """
    Throughput and latency against C{max_in_flight}, as many events outstanding.
    """
    dispatchers: list[Any] = []
    pool = None
    try:
        pool = start_naive_pool()
        runs = []
        for window in options.in_flight_points:
            dispatcher = await start_dispatcher(window)
            dispatchers.append(dispatcher)
            runs.append(
                Run(
                    DISPATCHER,
                    window,
                    driven(dispatcher_call(dispatcher), window, _check_dispatch),
                    options.count(2_000 if window == 1 else 10_000),
                    dispatcher_pids(dispatcher),
                )
            )
        for window in (*options.in_flight_points, BASELINE_WINDOW):
            runs.append(
                Run(
                    NAIVE,
                    window,
                    driven(naive_call(pool), window, _check_naive),
                    options.count(2_000 if window == 1 else 6_000),
                    naive_pids(pool),
                )
            )
        return await run_rounds("max_in_flight", runs, options.rounds)
    finally:
        await stop_all(dispatchers, [pool] if pool is not None else [])


# --- child replacement ----------------------------------------------------------------


async def measure_replacement(reactor: Any, options: Options) -> dict[str, Any]:
    """
    For a pool of one child (the next event is served by the standby child
    promoted in its place), of one child without a standby (by a cold
    replacement) and of two (the survivor serves it): seconds from a handler's
    C{os._exit} to the result of the event fired right behind it.
    """
    from actordispatch import AmpoulePool, EventDispatcher

    figures: dict[str, Any] = {}
    for key, size, standby in (
        ("1", 1, 1),
        ("1-cold", 1, 0),
        (str(CHILDREN), CHILDREN, 1),
    ):
        pool = AmpoulePool(
            size=size, standby=standby, crash_limit=10**9, reactor=reactor
        )
        dispatcher = EventDispatcher(
            ("event_type",), ("during",), reactor=reactor, pool=pool
        )
        times: list[float] = []
        noticed: list[float] = []
        replaced = 0
        try:
            await dispatcher.start()
            await dispatcher.add_event_handler(
                "benchmarks.handlers:noop", "during", event_type="x"
            )
            await dispatcher.add_event_handler(
                "benchmarks.sweep_handlers:crash", "during", event_type="crash"
            )
            await dispatcher.fire_event({"n": 0}, event_type="x")  # warm
            with tempfile.TemporaryDirectory() as workdir:
                for index in range(options.replacements):
                    path = str(Path(workdir) / f"crash{index}")
                    served_at: list[float] = []
                    seen_at: list[float] = []
                    crashed = dispatcher.fire_event({"path": path}, event_type="crash")
                    crashed.addCallback(
                        lambda r, at=seen_at: at.append(time.monotonic()) or r
                    )
                    following = dispatcher.fire_event({"n": index}, event_type="x")
                    following.addCallback(
                        lambda r, at=served_at: at.append(time.monotonic()) or r
                    )
                    crash_result = await crashed
                    next_result = await following
                    crashed_at = float(Path(path).read_text())
                    (crash_outcome,) = crash_result.outcomes
                    (next_outcome,) = next_result.outcomes
                    if crash_outcome.status != "crashed" or not next_outcome.ok:
                        raise AssertionError(
                            f"expected a crash then an ok outcome, got "
                            f"{crash_outcome!r} then {next_outcome!r}"
                        )
                    replaced += next_outcome.pid != crash_outcome.pid
                    times.append(served_at[0] - crashed_at)
                    noticed.append(seen_at[0] - crashed_at)
                    # Let the pool be whole again (its standby booted, warm)
                    # before the next crash.
                    for _ in range(200):
                        if len(pool.child_pids()) == size and (
                            len(pool.standby_pids()) == standby
                        ):
                            break
                        await deferLater(reactor, 0.05, lambda: None)
                    await deferLater(reactor, 0.05, lambda: None)
        finally:
            await dispatcher.stop()
        ordered = sorted(times)
        figures[key] = {
            "children": size,
            "standby": standby,
            "repetitions": len(times),
            "served_by_another_pid": replaced,
            "p50_ms": statistics.median(ordered) * 1e3,
            "min_ms": ordered[0] * 1e3,
            "max_ms": ordered[-1] * 1e3,
            "crash_outcome_p50_ms": statistics.median(noticed) * 1e3,
            "seconds": times,
        }
        _progress(f"replacement, pool of {size}, standby {standby} done")
    return figures


# --- routing at scale -----------------------------------------------------------------


def measure_routing(options: Options) -> dict[str, Any]:
    """
    Seconds per C{plan()} and parent bytes per registered handler, for each of
    L{ROUTING_SIZES}.  Memory: the resident memory's growth while building the
    registry, and C{tracemalloc}'s count on a second build (tracing slows the
    build and weighs on the resident memory, so it has its own; not with
    C{--quick}).
    """
    registries = {}
    rss_bytes = {}
    for size in ROUTING_SIZES:
        gc.collect()
        before = parent_rss_mib()
        registries[size] = build_registry(size)
        after = parent_rss_mib()
        rss_bytes[size] = (
            None if before is None or after is None else (after - before) * 2**20 / size
        )
    traced: dict[int, float | None] = dict.fromkeys(ROUTING_SIZES)
    for size in () if options.quick else ROUTING_SIZES:
        gc.collect()
        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
        registry = build_registry(size)
        traced[size] = (tracemalloc.get_traced_memory()[0] - base) / size
        tracemalloc.stop()
        del registry
    seconds: dict[int, list[float]] = {size: [] for size in ROUTING_SIZES}
    for index in range(options.rounds):
        for size in _rotate(list(ROUTING_SIZES), index):
            seconds[size].append(time_plan(registries[size], options.routing_calls))
    _progress("routing done")
    return {
        str(size): {
            "handlers": size,
            "seconds_per_event": statistics.median(seconds[size]),
            "rounds": seconds[size],
            "traced_bytes_per_handler": traced[size],
            "rss_bytes_per_handler": rss_bytes[size],
        }
        for size in ROUTING_SIZES
    }


# --- the run --------------------------------------------------------------------------


def parse_options(argv: Sequence[str]) -> Options:
    """
    The command line.
    """
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.sweeps",
        description=(__doc__ or "").split("\n\n")[0].strip(),
    )
    parser.add_argument(
        "--rounds", type=int, default=None, help="rounds (default 5; 1 with --quick)"
    )
    parser.add_argument(
        "--quick", action="store_true", help="a few seconds: a smoke run, not figures"
    )
    parser.add_argument(
        "--only",
        action="append",
        choices=SWEEPS + EXTRAS,
        help="run only this sweep or measurement (repeatable; default: all)",
    )
    parser.add_argument("--json", metavar="PATH", help="also write the figures here")
    parser.add_argument(
        "--charts", metavar="DIR", help="draw PNG charts here (needs matplotlib)"
    )
    args = parser.parse_args(argv)
    rounds = args.rounds or (1 if args.quick else 5)
    if rounds < 1:
        parser.error("--rounds must be positive")
    return Options(
        rounds=rounds,
        scale=0.02 if args.quick else 1.0,
        # Fewer pools to boot in a smoke run (children boot in ~0.3 s of CPU).
        children_points=(1, 2) if args.quick else CHILDREN_POINTS,
        in_flight_points=(1, DISPATCHER_WINDOW) if args.quick else IN_FLIGHT_POINTS,
        replacements=2 if args.quick else 9,
        routing_calls=20_000 if args.quick else 200_000,
        only=tuple(args.only or SWEEPS + EXTRAS),
        json_path=args.json,
        charts=args.charts,
        quick=args.quick,
    )


async def measure(reactor: Any, options: Options) -> dict[str, Any]:
    """
    Every sweep and measurement asked for, one after the other (each starts
    and stops its own children), the routing last.
    """
    sweeps = {
        "children": sweep_children,
        "payload": sweep_payload,
        "fanout": sweep_fanout,
        "in_flight": sweep_in_flight,
    }
    raw: dict[str, Any] = {}
    for name, sweep in sweeps.items():
        if name in options.only:
            raw[name] = await sweep(options)
    if "replacement" in options.only:
        raw["replacement"] = await measure_replacement(reactor, options)
    if "routing" in options.only:
        raw["routing"] = measure_routing(options)
    return raw


# --- reporting ------------------------------------------------------------------------


@frozen
class SweepTable:
    """
    How to print one sweep.

    @ivar ratio: C{"events_per_s"} (dispatcher over naive) or C{"p50_ms"}.
    """

    name: str
    title: str
    axis: str
    points: tuple[Any, ...]
    ratio: str
    label: Callable[[Any], str]


def _size_label(size: int) -> str:
    return f"{size // 1024 // 1024} MiB" if size >= 2**20 else f"{size // 1024} KiB"


TABLES = {
    "children": SweepTable(
        "children",
        f"sweep: number of children (dispatcher max_in_flight={DISPATCHER_WINDOW}, "
        f"{DISPATCHER_WINDOW} outstanding; naive {BASELINE_WINDOW} outstanding)",
        "children",
        CHILDREN_POINTS,
        "events_per_s",
        str,
    ),
    "payload": SweepTable(
        "payload",
        "sweep: payload size (one event at a time, 2 children)",
        "payload",
        PAYLOAD_POINTS,
        "p50_ms",
        _size_label,
    ),
    "fanout": SweepTable(
        "fanout",
        "sweep: fan-out, handlers matched in one phase (one event at a time, "
        "2 children)",
        "fan-out",
        FANOUT_POINTS,
        "p50_ms",
        str,
    ),
    "in_flight": SweepTable(
        "in_flight",
        "sweep: max_in_flight (as many events outstanding, 2 children; naive with "
        "as many calls outstanding)",
        "in flight",
        (*IN_FLIGHT_POINTS, BASELINE_WINDOW),
        "events_per_s",
        str,
    ),
}


def report_sweep(table: SweepTable, raw: dict[tuple[str, Any], list[Sample]]) -> Any:
    """
    Print one sweep's table; return its rows as JSON-able data.
    """
    figures = {key: summarize_samples(samples) for key, samples in raw.items()}
    ratio_name = "ev/s x naive" if table.ratio == "events_per_s" else "p50/naive"
    print()
    print(table.title)
    header = (
        f"{table.axis:>10} {'mechanism':<14} {'events/s':>10} {'p50 ms':>8} "
        f"{'p99 ms':>8} {ratio_name:>12} {'parent CPU us/ev':>16} "
        f"{'child CPU us/ev':>15} {'parent RSS MiB':>14}"
    )
    print(header)
    print("-" * len(header))
    rows = []
    for point in table.points:
        naive = figures.get((NAIVE, point))
        for mechanism in (DISPATCHER, NAIVE):
            f = figures.get((mechanism, point))
            if f is None:
                continue
            ratio = None
            if mechanism == DISPATCHER and naive is not None:
                ratio = f[table.ratio] / naive[table.ratio]
            rows.append(
                {"point": point, "mechanism": mechanism, "vs_naive": ratio, **f}
            )
            print(
                f"{table.label(point):>10} {mechanism:<14} "
                f"{f['events_per_s']:>10,.0f} {_fmt(f['p50_ms'], 8, '.3f')} "
                f"{_fmt(f['p99_ms'], 8, '.3f')} {_fmt(ratio, 12, '.2f', 'x')} "
                f"{_fmt(f['parent_cpu_us_per_event'], 16, '.1f')} "
                f"{_fmt(f['child_cpu_us_per_event'], 15, '.1f')} "
                f"{_fmt(f['parent_rss_mib'], 14, '.1f')}"
            )
    return rows


def _row(rows: list[dict[str, Any]], mechanism: str, point: Any) -> dict[str, Any]:
    for row in rows:
        if row["mechanism"] == mechanism and row["point"] == point:
            return row
    raise KeyError((mechanism, point))


def report(options: Options, raw: dict[str, Any]) -> dict[str, Any]:
    """
    Print every table and the targets; return everything as JSON-able data.
    """
    print()
    print(
        f"sweeps: median of {options.rounds} round(s); {os.cpu_count()} CPUs; "
        f"Python {platform.python_version()}"
        + ("; --quick: a smoke run, the figures are rough" if options.quick else "")
    )
    out: dict[str, Any] = {
        "config": {
            "rounds": options.rounds,
            "quick": options.quick,
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "measured_on": time.strftime("%Y-%m-%d"),
        },
        "sweeps": {},
    }
    for name in SWEEPS:
        if name in raw:
            out["sweeps"][name] = report_sweep(TABLES[name], raw[name])
    targets: list[tuple[str, str, bool]] = []
    sweeps = out["sweeps"]

    if "in_flight" in sweeps:
        rows = sweeps["in_flight"]
        reference = _row(rows, NAIVE, BASELINE_WINDOW)["events_per_s"]
        throughput = _row(rows, DISPATCHER, DISPATCHER_WINDOW)["events_per_s"]
        speedup = throughput / reference
        for least in (TARGET_THROUGHPUT, AIM_THROUGHPUT):
            targets.append(
                (
                    f"max_in_flight={DISPATCHER_WINDOW} events/s >= {least:g}x naive "
                    f"({BASELINE_WINDOW} outstanding)"
                    + (" [aim]" if least == AIM_THROUGHPUT else ""),
                    f"{speedup:.2f}x",
                    speedup >= least,
                )
            )
        serial = _row(rows, DISPATCHER, 1)["p50_ms"] / _row(rows, NAIVE, 1)["p50_ms"]
        targets.append(
            (
                f"serial one-phase p50 <= {TARGET_SERIAL_P50:g}x naive sequential p50",
                f"{serial:.2f}x",
                serial <= TARGET_SERIAL_P50,
            )
        )
    if "fanout" in sweeps:
        rows = sweeps["fanout"]
        one = _row(rows, DISPATCHER, 1)["p50_ms"]
        hundred = _row(rows, DISPATCHER, 100)["p50_ms"]
        out["fanout_ratio"] = hundred / one
        print()
        print(
            f"fan-out: one event completes in {one:.3f} ms (p50) with 1 handler, "
            f"{hundred:.3f} ms with 100: {hundred / one:.2f}x"
        )
        targets.append(
            (
                f"fan-out 100 completes within {TARGET_FANOUT:g}x of fan-out 1",
                f"{hundred / one:.2f}x",
                hundred / one <= TARGET_FANOUT,
            )
        )
    if "payload" in sweeps:
        row = _row(sweeps["payload"], DISPATCHER, 1024 * 1024)
        naive = _row(sweeps["payload"], NAIVE, 1024 * 1024)
        out["one_mib"] = {"p50_ms": row["p50_ms"], "naive_p50_ms": naive["p50_ms"]}
        print()
        print(
            f"1 MiB event end to end: p50 {row['p50_ms']:.2f} ms, p99 "
            f"{row['p99_ms']:.2f} ms (naive: p50 {naive['p50_ms']:.2f} ms)"
        )
        targets.append(
            (
                f"1 MiB event p50 < {TARGET_ONE_MIB_MS:g} ms",
                f"{row['p50_ms']:.2f} ms",
                row["p50_ms"] < TARGET_ONE_MIB_MS,
            )
        )
    if "replacement" in raw:
        out["replacement"] = raw["replacement"]
        print()
        print("child replacement: from a handler's os._exit to the next event's result")
        for figures in raw["replacement"].values():
            size = figures["children"]
            who = (
                "the surviving child"
                if size > 1
                else "the promoted standby child"
                if figures["standby"]
                else "a cold replacement"
            )
            print(
                f"  pool of {size}, standby {figures['standby']} (served by {who}): "
                f"p50 {figures['p50_ms']:.1f} ms, "
                f"min {figures['min_ms']:.1f} ms, max {figures['max_ms']:.1f} ms "
                f"over {figures['repetitions']} crashes "
                f"({figures['served_by_another_pid']} served by another pid; the "
                f"crash's own outcome came after {figures['crash_outcome_p50_ms']:.1f}"
                " ms, p50)"
            )
        alone = raw["replacement"]["1"]["p50_ms"]
        targets.append(
            (
                f"child replacement < {TARGET_REPLACEMENT_MS:g} ms to the next served "
                "event (pool of 1: served by the standby child promoted in its "
                "place)",
                f"{alone:.1f} ms",
                alone < TARGET_REPLACEMENT_MS,
            )
        )
    if "routing" in raw:
        routing = raw["routing"]
        out["routing"] = routing
        small, large = (routing[str(size)] for size in ROUTING_SIZES)
        ratio = large["seconds_per_event"] / small["seconds_per_event"]
        out["routing_ratio"] = ratio
        print()
        print(
            f"routing at scale: HandlerRegistry.plan(), {ROUTING_MATCHES} matching "
            "handlers, exact and wildcard specs"
        )
        for figures in (small, large):
            rss = figures["rss_bytes_per_handler"]
            print(
                f"  {figures['handlers']:>7,} handlers: "
                f"{figures['seconds_per_event'] * 1e6:6.2f} us/event; "
                f"{_fmt(figures['traced_bytes_per_handler'], 0, ',.0f')} B/handler "
                "traced, "
                f"{_fmt(rss, 0, ',.0f')} B/handler RSS growth"
            )
        print(f"  ratio {ROUTING_SIZES[1]:,} / {ROUTING_SIZES[0]:,}: {ratio:.2f}x")
        targets.append(
            (
                f"routing {ROUTING_SIZES[1]:,} handlers within {TARGET_ROUTING:g}x "
                f"of {ROUTING_SIZES[0]:,}",
                f"{ratio:.2f}x",
                ratio <= TARGET_ROUTING,
            )
        )
    print()
    print("targets:")
    for text, value, ok in targets:
        print(f"  {_verdict(ok)}  {text}: {value}")
    if options.quick:
        print("  (--quick: a smoke run; these figures are rough)")
    out["targets"] = [
        {"target": text, "value": value, "pass": ok} for text, value, ok in targets
    ]
    return out


# --- charts ---------------------------------------------------------------------------


def _series(
    rows: list[dict[str, Any]], mechanism: str, key: str, points: Sequence[Any]
) -> tuple[list[Any], list[float]]:
    xs, ys = [], []
    for point in points:
        try:
            value = _row(rows, mechanism, point)[key]
        except KeyError:
            continue
        if value is not None:
            xs.append(point)
            ys.append(value)
    return xs, ys


def draw_charts(figures: dict[str, Any], directory: str) -> list[str]:
    """
    Draw one PNG per sweep measured into C{directory}; return their paths.
    Without matplotlib, say so and draw nothing.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(
            "charts skipped: matplotlib is not installed "
            "(pip install 'actordispatch[bench]')"
        )
        return []
    Path(directory).mkdir(parents=True, exist_ok=True)
    sweeps = figures["sweeps"]
    note = f"median of {figures['config']['rounds']} round(s), " + (
        f"{figures['config']['cpus']} CPUs, {figures['config']['measured_on']}"
    )
    styles = {
        DISPATCHER: {"marker": "o", "color": "tab:blue", "label": "actordispatch"},
        NAIVE: {
            "marker": "s",
            "color": "tab:gray",
            "linestyle": "--",
            "label": "naive ampoule (one call per event)",
        },
    }
    written = []

    def new(title: str, xlabel: str, ylabel: str) -> Any:
        fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=100)
        ax.set_title(title, fontsize=11)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
        fig.text(0.99, 0.01, note, ha="right", va="bottom", fontsize=7, alpha=0.7)
        return fig, ax

    def save(fig: Any, ax: Any, name: str) -> None:
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = str(Path(directory) / name)
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)

    if "children" in sweeps:
        rows = sweeps["children"]
        fig, ax = new(
            "Throughput vs number of children",
            "children",
            "events/s",
        )
        for mechanism, extra in (
            (DISPATCHER, f" (max_in_flight={DISPATCHER_WINDOW})"),
            (NAIVE, f" ({BASELINE_WINDOW} outstanding)"),
        ):
            style = dict(styles[mechanism])
            style["label"] += extra
            ax.plot(*_series(rows, mechanism, "events_per_s", CHILDREN_POINTS), **style)
        ax.set_xticks(list(CHILDREN_POINTS))
        ax.set_ylim(bottom=0)
        save(fig, ax, "sweep-children.png")

    if "payload" in sweeps:
        rows = sweeps["payload"]
        fig, ax = new(
            "Latency vs payload size (one event at a time)", "encoded event", "ms"
        )
        for mechanism in (DISPATCHER, NAIVE):
            style = dict(styles[mechanism])
            label = style.pop("label")
            ax.plot(
                *_series(rows, mechanism, "p50_ms", PAYLOAD_POINTS),
                label=f"{label}, p50",
                **style,
            )
            style["alpha"] = 0.4
            ax.plot(
                *_series(rows, mechanism, "p99_ms", PAYLOAD_POINTS),
                label=f"{label}, p99",
                **style,
            )
        ax.axhline(
            TARGET_ONE_MIB_MS,
            color="tab:red",
            linewidth=0.8,
            label=f"target for 1 MiB: p50 < {TARGET_ONE_MIB_MS:g} ms",
        )
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(list(PAYLOAD_POINTS), [_size_label(p) for p in PAYLOAD_POINTS])
        save(fig, ax, "sweep-payload.png")

    if "fanout" in sweeps:
        rows = sweeps["fanout"]
        fig, ax = new(
            "Completion time of one event vs fan-out",
            "handlers matched in one phase",
            "ms (p50)",
        )
        for mechanism in (DISPATCHER, NAIVE):
            ax.plot(
                *_series(rows, mechanism, "p50_ms", FANOUT_POINTS), **styles[mechanism]
            )
        one = _row(rows, DISPATCHER, 1)["p50_ms"]
        ax.axhline(
            TARGET_FANOUT * one,
            color="tab:red",
            linewidth=0.8,
            label=f"target: {TARGET_FANOUT:g}x fan-out 1",
        )
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xticks(list(FANOUT_POINTS), [str(p) for p in FANOUT_POINTS])
        save(fig, ax, "sweep-fanout.png")

    if "in_flight" in sweeps:
        rows = sweeps["in_flight"]
        fig, ax = new(
            "Throughput vs max_in_flight (as many outstanding)",
            "max_in_flight / calls outstanding",
            "events/s",
        )
        for mechanism in (DISPATCHER, NAIVE):
            ax.plot(
                *_series(rows, mechanism, "events_per_s", IN_FLIGHT_POINTS),
                **styles[mechanism],
            )
        reference = _row(rows, NAIVE, BASELINE_WINDOW)["events_per_s"]
        ax.axhline(
            TARGET_THROUGHPUT * reference,
            color="tab:red",
            linewidth=0.8,
            label=(
                f"target: {TARGET_THROUGHPUT:g}x naive ({BASELINE_WINDOW} outstanding)"
            ),
        )
        ax.set_xscale("log", base=2)
        ax.set_xticks(list(IN_FLIGHT_POINTS), [str(p) for p in IN_FLIGHT_POINTS])
        ax.set_ylim(bottom=0)
        save(fig, ax, "sweep-in-flight.png")

    for path in written:
        print(f"chart written to {path}")
    return written


# --- entry point ----------------------------------------------------------------------


async def _main(reactor: Any, options: Options) -> None:
    raw = await measure(reactor, options)
    figures = report(options, raw)
    if options.charts:
        draw_charts(figures, options.charts)
    if options.json_path:
        with open(options.json_path, "w") as f:
            json.dump(figures, f, indent=2)
            f.write("\n")
        print(f"figures written to {options.json_path}")


def main(argv: Sequence[str] | None = None) -> None:
    """
    Run the sweeps and print their figures; exits 0 whether or not the targets
    are met.
    """
    options = parse_options(sys.argv[1:] if argv is None else argv)
    _start_logging()
    react(lambda reactor: ensureDeferred(_main(reactor, options)))


if __name__ == "__main__":
    main()
