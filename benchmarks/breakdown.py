"""
Where the parent's CPU goes under load: the dispatcher's path measured layer by
layer, each layer with 64 events outstanding, the same trivial handler and two
children, all in one run.

Under load the parent process is what bounds the dispatcher's throughput on a
two-core machine (the children are mostly idle), so this measures the CPU time
the parent spends per event, peeling the path one layer at a time:

 1. B{harness}: the loop that keeps 64 calls outstanding and times them,
    driving calls that have already fired: what every other row pays too.
 2. B{dispatcher, in memory}: C{EventDispatcher} on an in-memory job pool that
    settles each job at once (no processes): checking the keywords, encoding
    the event, routing and planning, the phase, the outcome, the result.
 3. B{AMP round trips}: C{RunBatch} calls straight to two of our children, as
    many invocations per call as the pool sends under load, no pool and no
    dispatcher: AMP, the batch framing and the answer's records, decoded.
 4. B{local pool}: C{AmpoulePool.submit} with real children, one job per event
    (no dispatcher): layer 3 plus the pool's queue, batching, supervision
    bookkeeping and outcomes.
 5. B{dispatcher}: the whole path, C{EventDispatcher(max_in_flight=64)} with
    real children.

The differences between rows are what each layer adds.  Then, for the last
row, a cProfile run groups the parent's own time by module (the profiler's
overhead is spread over every call, so read the shares, not the times), and
the CPU the children spent per event is read from C{/proc}.

Run it from the project root, so that the children can import C{benchmarks}::

    python -m benchmarks.breakdown [--events N] [--rounds R] [--quick]
                                   [--json PATH]

Every figure is the median over the rounds; the rows run interleaved, in a
different order each round.  Nothing here is a pass or a miss: it says where
the time goes.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import json
import os
import pstats
import statistics
import sys
from collections.abc import Awaitable, Callable, Sequence
from time import process_time
from typing import Any

from attrs import define, field, frozen
from twisted.internet.defer import Deferred, DeferredList, ensureDeferred, succeed
from twisted.internet.task import react
from zope.interface import implementer

from benchmarks.bench_dispatch import (
    CHILDREN,
    DISPATCHER_WINDOW,
    _check_dispatch,
    _rotate,
    _start_logging,
    _Window,
    dispatcher_call,
    start_dispatcher,
)
from benchmarks.sweeps import children_cpu_seconds

#: The handler every layer runs.
HANDLER = "benchmarks.handlers:noop"

HARNESS = "harness (calls already fired)"
IN_MEMORY = "dispatcher, in-memory pool"
ROUND_TRIPS = "AMP RunBatch round trips"
POOL = "local pool, submit"
DISPATCHER = "dispatcher, real children"
ROWS = (HARNESS, IN_MEMORY, ROUND_TRIPS, POOL, DISPATCHER)

#: Modules grouped for the profile's shares, by the first prefix that fits
#: (paths of the layer subpackages: docs/architecture.rst).
AREAS = (
    ("actordispatch/_dispatch/", "dispatcher (phases, outcomes, results)"),
    ("actordispatch/_core/phase", "dispatcher (phases, outcomes, results)"),
    ("actordispatch/_core/result", "dispatcher (phases, outcomes, results)"),
    ("actordispatch/_core/registry", "routing and planning"),
    ("actordispatch/_core/match", "routing and planning"),
    ("actordispatch/_wire/codec", "codec"),
    ("actordispatch/_local/child", "child connection (AMP guard, pipes)"),
    ("actordispatch/_wire/guarded", "child connection (AMP guard, pipes)"),
    ("actordispatch/_wire/pipes", "child connection (AMP guard, pipes)"),
    ("actordispatch/_wire/commands", "child connection (AMP guard, pipes)"),
    ("actordispatch/_core/invocation", "local pool"),
    ("actordispatch/_local/", "local pool"),
    ("twisted/protocols/amp", "Twisted AMP"),
    ("twisted/internet/defer", "Twisted Deferreds"),
    ("twisted/internet", "Twisted reactor and pipes"),
    ("benchmarks/", "benchmark harness"),
    ("attrs generated", "attrs __init__ (outcomes, invocations, ...)"),
    ("json/", "JSON decoding (stdlib)"),
    ("~:<built-in method posix.", "system calls (pipe reads and writes)"),
    ("~:<built-in method orjson.", "codec"),
    ("~:<method 'poll'", "waiting in epoll (idle)"),
    ("~:<method 'decode'", "JSON decoding (stdlib)"),
    ("~:", "builtins called from Python (len, isinstance, dict, list...)"),
)


@frozen
class Row:
    """
    One layer's figures for one round.
    """

    events_per_s: float
    parent_cpu_us: float
    child_cpu_us: float | None


@define(eq=False)
class _Job:
    """
    A job for the pool layer: fires C{done} with its outcome.
    """

    invocation: Any
    done: Deferred[Any] = field(factory=Deferred)

    def settle(self, outcome: Any) -> None:
        self.done.callback(outcome)


def _instant_pool() -> Any:
    """
    An in-memory L{IJobPool} settling every job at once with an C{"ok"}
    outcome.
    """
    from actordispatch.interfaces import IJobPool
    from actordispatch.testing import FakePool

    @implementer(IJobPool)
    class InstantPool(FakePool):
        def submit(self, jobs: Sequence[Any]) -> None:
            for job in jobs:
                job.settle(job.invocation.ok(None, duration=1e-6, pid=1))

    return InstantPool()


def _check_outcome(outcome: Any) -> None:
    if outcome.status != "ok":
        raise AssertionError(f"expected an ok outcome, got {outcome!r}")


async def _start_children(reactor: Any, count: int) -> list[Any]:
    """
    C{count} booted children of our own, outside any pool.
    """
    from actordispatch._local.child import child_environment, spawn_child
    from actordispatch._wire.commands import Ping

    children = [
        spawn_child(
            reactor,
            number,
            env=child_environment(),
            config={"report_rss": False, "fast_pipes": True},
            on_protocol_error=lambda message: None,
            max_box_bytes=64 * 1024 * 1024,
            max_box_keys=2048,
            output_cap=64 * 1024,
        )
        for number in range(count)
    ]
    await DeferredList([c.amp.callRemote(Ping) for c in children])
    return children


def _round_trips(children: list[Any], per_call: int) -> Callable[[int], Deferred[Any]]:
    """
    Events through raw C{RunBatch} calls: each child takes C{per_call} events
    per call, one call at a time; a call is made once a child's previous one
    answered and C{per_call} events wait.
    """
    from actordispatch._wire.codec import decode_records, encode_batch, encode_event
    from actordispatch._wire.commands import RunBatch

    waiting: list[tuple[bytes, Deferred[Any]]] = []
    idle = list(children)
    seqs = iter(range(1, 1 << 62))

    def send(child: Any) -> None:
        batch, waiting[:per_call] = waiting[:per_call], []
        payload = encode_batch([(HANDLER, event) for event, _ in batch])

        def answered(answer: dict[str, Any]) -> None:
            records = decode_records(answer["records"], len(batch))
            idle.append(child)
            for (_, done), record in zip(batch, records, strict=True):
                done.callback(record)
            pump()

        child.amp.callRemote(RunBatch, batch=payload, seq=next(seqs)).addCallback(
            answered
        )

    def pump() -> None:
        while idle and len(waiting) >= min(per_call, 1):
            if len(waiting) < per_call and len(idle) < len(children):
                return  # a call answers soon: fill a whole batch first
            send(idle.pop())

    def call(index: int) -> Deferred[Any]:
        done: Deferred[Any] = Deferred()
        waiting.append((encode_event({"n": index}), done))
        pump()
        return done

    return call


def _pool_call(pool: Any) -> Callable[[int], Deferred[Any]]:
    from actordispatch._core.invocation import Invocation
    from actordispatch._wire.codec import encode_event

    def call(index: int) -> Deferred[Any]:
        job = _Job(Invocation(1, HANDLER, "during", encode_event({"n": index})))
        pool.submit((job,))
        return job.done

    return call


async def _timed(
    run: Callable[[int], Awaitable[Any]], count: int, pids: Sequence[int]
) -> Row:
    gc.collect()
    children_before = children_cpu_seconds(pids)
    cpu = process_time()
    measured = await run(count)
    parent = (process_time() - cpu) / count * 1e6
    children_after = children_cpu_seconds(pids)
    child = None
    if children_before is not None and children_after is not None and pids:
        child = (children_after - children_before) / count * 1e6
    return Row(measured.events_per_s, parent, child)


def _drive(call: Callable[[int], Deferred[Any]], check: Callable[[Any], None]) -> Any:
    return lambda count: _Window(call, count, DISPATCHER_WINDOW, check).start()


def _profile_shares(
    call: Callable[[int], Deferred[Any]], count: int
) -> Deferred[dict[str, float]]:
    """
    Profile C{count} events of C{call}; the parent's own time by area, as
    shares of the total.
    """
    profiler = cProfile.Profile()
    gc.collect()
    profiler.enable()
    done = _Window(call, count, DISPATCHER_WINDOW, _check_dispatch).start()

    def shares(_: object) -> dict[str, float]:
        profiler.disable()
        stats = pstats.Stats(profiler)
        by_area: dict[str, float] = {}
        for (filename, _line, name), row in stats.stats.items():  # type: ignore[attr-defined]
            own = row[2]
            where = f"{filename}:{name}".replace(os.sep, "/")
            area = next(
                (label for prefix, label in AREAS if prefix in where),
                "the rest of Python (stdlib)",
            )
            by_area[area] = by_area.get(area, 0.0) + own
        total = sum(by_area.values()) or 1.0
        return {area: t / total for area, t in by_area.items()}

    return done.addCallback(shares)


async def measure(
    reactor: Any, events: int, rounds: int, profile_events: int
) -> dict[str, Any]:
    """
    Start every layer, warm each up, run the interleaved rounds, profile the
    whole path once, stop everything.
    """
    from actordispatch import AmpoulePool, EventDispatcher

    memory = EventDispatcher(
        ("event_type",),
        ("during",),
        pool=_instant_pool(),
        max_in_flight=DISPATCHER_WINDOW,
        reactor=reactor,
    )
    memory.start()
    await memory.add_event_handler(HANDLER, "during", event_type="x")
    pool = AmpoulePool(size=CHILDREN, reactor=reactor)
    await pool.start()
    dispatcher = await start_dispatcher(DISPATCHER_WINDOW)
    children = await _start_children(reactor, CHILDREN)
    # About what the pool sends per call under this load: half the window.
    per_call = DISPATCHER_WINDOW // CHILDREN
    layers: list[tuple[str, Any, Callable[[], Sequence[int]]]] = [
        (HARNESS, _drive(lambda i: succeed(None), lambda _: None), list),
        (IN_MEMORY, _drive(dispatcher_call(memory), _check_dispatch), list),
        (
            ROUND_TRIPS,
            _drive(_round_trips(children, per_call), lambda _: None),
            lambda: [c.pid for c in children],
        ),
        (POOL, _drive(_pool_call(pool), _check_outcome), pool.child_pids),
        (
            DISPATCHER,
            _drive(dispatcher_call(dispatcher), _check_dispatch),
            dispatcher.pools()["default"].child_pids,
        ),
    ]
    results: dict[str, list[Row]] = {name: [] for name in ROWS}
    try:
        for _, run, _ in layers:
            await run(max(200, events // 10))
        for index in range(rounds):
            for name, run, pids in _rotate(layers, index):
                await run(max(50, events // 50))
                results[name].append(await _timed(run, events, pids()))
            print(f"round {index + 1}/{rounds} done", file=sys.stderr, flush=True)
        shares = await _profile_shares(dispatcher_call(dispatcher), profile_events)
    finally:
        for child in children:
            child.signal(9)
        await DeferredList([c.ended for c in children])
        await dispatcher.stop()
        await pool.stop()
        await memory.stop()
    return {"rounds": results, "shares": shares, "per_call": per_call}


def _median(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def report(raw: dict[str, Any], events: int, rounds: int) -> dict[str, Any]:
    """
    Print the layers and the profile's shares; return them as JSON-able data.
    """
    print()
    print(
        f"parent CPU per event, {DISPATCHER_WINDOW} outstanding, {CHILDREN} "
        f"children, {events} events per layer per round, median of {rounds}"
    )
    header = f"{'layer':<34} {'events/s':>10} {'parent us/ev':>13} "
    header += f"{'adds us/ev':>11} {'children us/ev':>15}"
    print(header)
    print("-" * len(header))
    rows = []
    previous = None
    for name in ROWS:
        samples = raw["rounds"][name]
        rate = statistics.median(s.events_per_s for s in samples)
        parent = statistics.median(s.parent_cpu_us for s in samples)
        child = _median([s.child_cpu_us for s in samples])
        # Each layer adds to the one before, except the round trips, which
        # stand beside the in-memory dispatcher: both add to the harness.
        base = {
            IN_MEMORY: HARNESS,
            ROUND_TRIPS: HARNESS,
            POOL: ROUND_TRIPS,
            DISPATCHER: POOL,
        }.get(name)
        adds = None if base is None else parent - previous[base]  # type: ignore[index]
        previous = {**(previous or {}), name: parent}
        rows.append(
            {
                "layer": name,
                "events_per_s": rate,
                "parent_cpu_us_per_event": parent,
                "adds_us_per_event": adds,
                "children_cpu_us_per_event": child,
            }
        )
        print(
            f"{name:<34} {rate:>10,.0f} {parent:>13.2f} "
            f"{'-' if adds is None else format(adds, '.2f'):>11} "
            f"{'-' if child is None else format(child, '.1f'):>15}"
        )
    print(
        f"(round trips: {raw['per_call']} invocations per RunBatch call; 'adds' is "
        "a row's parent CPU less that of the layer it builds on: in-memory "
        "dispatcher and round trips on the harness, pool on round trips, "
        "dispatcher on pool)"
    )
    print()
    print("the whole path under cProfile, the parent's own time by area:")
    shares = sorted(raw["shares"].items(), key=lambda item: -item[1])
    for area, share in shares:
        print(f"  {share * 100:5.1f}%  {area}")
    return {"layers": rows, "profile_shares": dict(shares), "per_call": raw["per_call"]}


def main(argv: Sequence[str] | None = None) -> None:
    """
    Run the breakdown and print it.
    """
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.breakdown",
        description=(__doc__ or "").split("\n\n")[0].strip(),
    )
    parser.add_argument("--events", type=int, default=None)
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--quick", action="store_true", help="a smoke run")
    parser.add_argument("--json", metavar="PATH", help="also write the figures here")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    events = args.events or (500 if args.quick else 20_000)
    rounds = args.rounds or (1 if args.quick else 3)
    _start_logging()

    async def run(reactor: Any) -> None:
        raw = await measure(reactor, events, rounds, min(events, 10_000))
        figures = report(raw, events, rounds)
        if args.json:
            with open(args.json, "w") as f:
                json.dump(figures, f, indent=2)
                f.write("\n")
            print(f"figures written to {args.json}")

    react(lambda reactor: ensureDeferred(run(reactor)))


if __name__ == "__main__":
    main()
