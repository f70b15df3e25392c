"""
Benchmark: what each isolation level (L{SandboxProfile.isolation}) costs, all
measured in one run on the same machine, under the strict sandbox
(C{SandboxProfile.untrusted()}, only the isolation differing).

Rows, each with 2 children and a trivial handler:

 - C{shared}: any handler's invocations share children (today's speed);
 - C{handler}, one handler: its children serve it alone;
 - C{handler}, four handlers taking turns: each change of hands replaces a
   child (forked from the template, not a cold interpreter);
 - C{invocation}: a fresh process per invocation, forked from the template;
 - C{invocation} without the fork server: a cold interpreter per invocation,
   the baseline the fork server is measured against.

Each row is timed twice: serially (one event at a time: latency, p50) and with
64 events in flight (throughput).  The issue's targets for C{"invocation"}:
at least 300 invocations/s with a fresh process each, and p50 at most 10 ms.

Run it: C{python -m benchmarks.bench_isolation [--quick]}.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from typing import Any

from attrs import asdict
from twisted.internet.defer import Deferred, ensureDeferred, gatherResults
from twisted.internet.task import react

from benchmarks.bench_dispatch import Measurement, _measurement

CHILDREN = 2
HANDLERS = 4


async def _run(
    dispatcher: Any, kinds: Sequence[str], count: int, window: int
) -> Measurement:
    """
    Fire C{count} events, the kinds in turn, C{window} at a time; check each.
    """
    latencies: list[float] = []
    started = time.perf_counter()
    fired = 0

    async def one(i: int) -> None:
        begun = time.perf_counter()
        result = await dispatcher.fire_event({"n": i}, kind=kinds[i % len(kinds)])
        if len(result.outcomes) != 1 or not result.ok:
            raise AssertionError(f"expected one ok outcome, got {result!r}")
        latencies.append(time.perf_counter() - begun)

    async def lane() -> None:
        nonlocal fired
        while fired < count:
            i = fired
            fired += 1
            await one(i)

    await gatherResults([ensureDeferred(lane()) for _ in range(window)])
    return _measurement(time.perf_counter() - started, latencies)


async def measure(
    isolation: str, handlers: int, count: int, fork_server: bool | None = None
) -> dict[str, Measurement]:
    """
    Start a dispatcher at C{isolation} with C{handlers} handlers, warm it up,
    then time C{count} events serially and C{count} with 64 in flight.
    """
    from actordispatch import AmpoulePool, EventDispatcher, SandboxProfile

    pool = AmpoulePool(
        size=CHILDREN,
        sandbox=SandboxProfile.untrusted(isolation=isolation),
        fork_server=fork_server,
    )
    dispatcher = EventDispatcher(("kind",), ("during",), pool=pool, max_in_flight=64)
    await dispatcher.start()
    try:
        kinds = [f"k{n}" for n in range(handlers)]
        for n, kind in enumerate(kinds):
            # Different names: different handlers, so different trust domains.
            await dispatcher.add_event_handler(
                f"benchmarks.handlers:noop_{n}", "during", kind=kind
            )
        await _run(dispatcher, kinds, max(8, count // 10), 8)  # warm up
        return {
            "serial": await _run(dispatcher, kinds, count, 1),
            "in_flight": await _run(dispatcher, kinds, count, 64),
        }
    finally:
        await dispatcher.stop()


ROWS = (
    ("shared", "shared", 1, None),
    ("handler, 1 handler", "handler", 1, None),
    (f"handler, {HANDLERS} handlers in turn", "handler", HANDLERS, None),
    ("invocation (fork server)", "invocation", 1, None),
    ("invocation, cold interpreters", "invocation", 1, False),
)


async def main_async(options: argparse.Namespace) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    for label, isolation, handlers, fork_server in ROWS:
        count = options.events
        if fork_server is False:
            count = max(8, count // 20)  # about 0.3 s each: keep it short
        sys.stderr.write(f"measuring {label} ({count} events)...\n")
        figures[label] = await measure(isolation, handlers, count, fork_server)
    return figures


def report(figures: dict[str, Any]) -> None:
    print(
        f"{'isolation':<34} {'serial p50':>11} {'serial ev/s':>12} {'64 in flight':>13}"
    )
    for label, rows in figures.items():
        serial, in_flight = rows["serial"], rows["in_flight"]
        print(
            f"{label:<34} {serial.p50_ms:>8.2f} ms {serial.events_per_s:>12,.0f}"
            f" {in_flight.events_per_s:>10,.0f}/s"
        )
    fresh = figures["invocation (fork server)"]
    cold = figures["invocation, cold interpreters"]
    shared = figures["shared"]
    print()
    print(
        f"fresh process per invocation: {fresh['in_flight'].events_per_s:,.0f}/s "
        f"(target >= 300), p50 {fresh['serial'].p50_ms:.2f} ms (target <= 10); "
        f"{fresh['in_flight'].events_per_s / cold['in_flight'].events_per_s:.1f}x "
        "cold interpreters"
    )
    base = shared["in_flight"].events_per_s
    costs = ", ".join(
        f"{label} {base / rows['in_flight'].events_per_s:.1f}x"
        for label, rows in figures.items()
        if label != "shared"
    )
    print(f"slower than shared children, 64 in flight: {costs}")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.bench_isolation",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    parser.add_argument("--events", type=int, default=600, help="events per timing")
    parser.add_argument("--quick", action="store_true", help="a smoke run")
    parser.add_argument("--json", help="also write the figures here")
    options = parser.parse_args(argv)
    if options.quick:
        options.events = 60

    def run(reactor: Any) -> Deferred[None]:
        async def go() -> None:
            figures = await main_async(options)
            report(figures)
            if options.json:
                with open(options.json, "w") as out:
                    json.dump(
                        {
                            label: {k: asdict(m) for k, m in rows.items()}
                            for label, rows in figures.items()
                        },
                        out,
                        indent=2,
                    )

        return ensureDeferred(go())

    react(run)


if __name__ == "__main__":
    main()
