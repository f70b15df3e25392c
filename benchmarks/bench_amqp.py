"""
Dispatch through RabbitMQ, beside the local pool in the same run.

    python -m benchmarks.bench_amqp [--quick] [--rounds N] [--json FILE]

The same trivial handler (L{benchmarks.handlers.noop}) behind:

 - the B{local pool} (two children), and
 - an B{AMQP pool} served by B{1, 2 and 4 worker host processes}
   (C{python -m actordispatch worker --children 1}), all on this machine.

For each: throughput with C{max_in_flight=64} (events/s), and the latency of one
event at a time (p50, p99), with the parent's CPU time per event.  Mechanisms are
interleaved in each round; the figures are medians over rounds.  The broker is
the machine's, on 127.0.0.1:5672; names are unique to the run and deleted at the
end.

The worker processes, the broker and the dispatcher share the same two cores
here, so more workers cannot scale as they would across machines: read the
figures as the cost of the broker hop, not as a capacity plan.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import uuid
from collections.abc import Sequence
from typing import Any

from twisted.internet import defer, protocol, task
from twisted.internet.task import deferLater

from actordispatch import AmpoulePool, AMQPPool, EventDispatcher
from actordispatch._amqp.link import delete_namespace
from actordispatch._amqp.wire import queue_name

URL = "amqp://guest:guest@127.0.0.1:5672/%2F"
HANDLER = "benchmarks.handlers:noop"
WORKER_COUNTS = (1, 2, 4)
LOCAL = "local pool"


class _Host(protocol.ProcessProtocol):
    def __init__(self) -> None:
        self.ended: defer.Deferred[None] = defer.Deferred()

    def processEnded(self, reason: Any) -> None:
        self.ended.callback(None)


#: Events fired, unmeasured, before each measurement (connections, children
#: and caches warm up).
WARMUP = 50


def _check(result: Any) -> None:
    """
    A measured event must have run its one handler: a figure made of
    timeouts or crashes would measure the failures.
    """
    if len(result.outcomes) != 1 or not result.ok:
        raise SystemExit(f"a benchmark event did not run its handler: {result!r}")


async def _measure(
    reactor: Any, dispatcher: EventDispatcher, events: int, serial: int
) -> dict[str, float]:
    for n in range(WARMUP):
        _check(await dispatcher.fire_event({"n": n}, kind="bench"))
    latencies = []
    for n in range(serial):
        started = time.perf_counter()
        _check(await dispatcher.fire_event({"n": n}, kind="bench"))
        latencies.append(time.perf_counter() - started)
    cpu, wall = time.process_time(), time.perf_counter()
    results = await defer.gatherResults(
        [dispatcher.fire_event({"n": n}, kind="bench") for n in range(events)]
    )
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    for result in results:
        _check(result)
    ordered = sorted(latencies)
    return {
        "events_per_s": events / wall,
        "p50_ms": 1e3 * statistics.median(latencies),
        "p99_ms": 1e3 * ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))],
        "parent_cpu_us": 1e6 * cpu / events,
    }


async def _consumers(pool: AMQPPool) -> int:
    channel = await pool._link.connection.channel()
    frame = await channel.queue_declare(
        queue_name(pool.namespace, HANDLER), passive=True
    )
    channel.close()
    return int(frame.method.consumer_count)


async def run(reactor: Any, rounds: int, events: int, serial: int) -> dict[str, Any]:
    namespace = f"adbench.{uuid.uuid4().hex[:12]}"
    local = EventDispatcher(
        ("kind",),
        max_in_flight=64,
        reactor=reactor,
        pool=AmpoulePool(size=2, reactor=reactor),
    )
    await local.add_event_handler(HANDLER, "during", kind="bench")
    await local.start()
    remote = EventDispatcher(
        ("kind",),
        max_in_flight=64,
        reactor=reactor,
        pool=AmpoulePool(size=1, reactor=reactor),
    )
    pool = AMQPPool(URL, namespace=namespace, reactor=reactor)
    remote.add_pool("remote", pool)
    await remote.start()
    if not pool.up:
        raise SystemExit(f"no broker at {URL}: {pool._link.last_error}")
    await remote.add_event_handler(HANDLER, "during", pool="remote", kind="bench")
    hosts: list[tuple[Any, _Host]] = []
    env = {
        "ACTORDISPATCH_AMQP_URL": URL,
        "PYTHONPATH": os.pathsep.join(p or os.getcwd() for p in sys.path),
    }
    argv = [sys.executable, "-m", "actordispatch", "worker", "--children", "1"]
    argv += ["--namespace", namespace, "--handlers", HANDLER]

    async def scale(count: int) -> None:
        while len(hosts) < count:
            host = _Host()
            hosts.append(
                (reactor.spawnProcess(host, sys.executable, argv, env=env), host)
            )
        for _ in range(600):
            if await _consumers(pool) >= count:
                return
            await deferLater(reactor, 0.05, lambda: None)
        raise SystemExit(f"{count} worker hosts did not start consuming")

    samples: dict[str, list[dict[str, float]]] = {}
    try:
        for _ in range(rounds):
            samples.setdefault(LOCAL, []).append(
                await _measure(reactor, local, events, serial)
            )
            for count in WORKER_COUNTS:
                await scale(count)
                label = f"RabbitMQ, {count} worker{'s' if count > 1 else ''}"
                samples.setdefault(label, []).append(
                    await _measure(reactor, remote, events, serial)
                )
            # Fewer workers again for the next round's first RabbitMQ point.
            for transport, host in hosts[1:]:
                transport.signalProcess("TERM")
                await host.ended
            del hosts[1:]
    finally:
        await local.stop()
        await remote.stop()
        for transport, host in hosts:
            transport.signalProcess("TERM")
            await host.ended
        await delete_namespace(URL, namespace, [HANDLER], reactor=reactor)
    return {
        label: {key: statistics.median(s[key] for s in runs) for key in runs[0]}
        for label, runs in samples.items()
    }


def report(figures: dict[str, Any], out: Any = print) -> None:
    """
    Print the table: each mechanism beside the local pool.
    """
    base = figures[LOCAL]
    out(
        f"{'mechanism':<22} {'events/s':>9} {'p50 ms':>7} {'p99 ms':>7} "
        f"{'x local ev/s':>12} {'x local p50':>11} {'parent CPU/ev':>13}"
    )
    for label, m in figures.items():
        out(
            f"{label:<22} {m['events_per_s']:9.0f} {m['p50_ms']:7.3f} "
            f"{m['p99_ms']:7.3f} {m['events_per_s'] / base['events_per_s']:11.2f}x "
            f"{m['p50_ms'] / base['p50_ms']:10.2f}x {m['parent_cpu_us']:10.1f} us"
        )
    out(
        "(workers, broker and dispatcher share this machine's cores: more workers "
        "cannot scale here as across machines)"
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run")
    parser.add_argument("--rounds", type=int, help="rounds (default 3; 1 quick)")
    parser.add_argument("--events", type=int, help="events per throughput run")
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args(argv)
    rounds = args.rounds or (1 if args.quick else 3)
    events = args.events or (200 if args.quick else 2000)
    serial = 50 if args.quick else 300

    async def go(reactor: Any) -> None:
        figures = await run(reactor, rounds, events, serial)
        print(f"{rounds} round(s), {events} events pipelined, {serial} serial; medians")
        report(figures)
        if args.json:
            with open(args.json, "w") as out:
                json.dump(figures, out, indent=2)

    task.react(lambda reactor: defer.ensureDeferred(go(reactor)))


if __name__ == "__main__":
    main()
