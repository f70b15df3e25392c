"""
Which AMQP client under Twisted: pika 1.x's Twisted adapter (any reactor) or
aio-pika (asyncio only, so Twisted's asyncio reactor), measured on the exchange
pattern the AMQP pool uses.

    python -m benchmarks.amqp_clients [--quick] [--rounds N] [--json FILE]

Each client runs in a process of its own (the reactor is chosen per process),
rounds interleaved, against the broker on 127.0.0.1:5672 (guest/guest):

 1. B{round trip}: publish a persistent message to a headers exchange with
    publisher confirms and the mandatory flag; a consumer in the same process,
    with manual acks, replies through the default exchange to the direct
    reply-to; the publisher receives the reply.  One at a time: p50 and p99.
 2. B{pipelined}: the same with 64 round trips outstanding: messages/s.
 3. B{CPU}: the process's CPU time per round trip in the pipelined run.

Names are unique per run and deleted at the end; the broker is not touched
otherwise.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from typing import Any

URL = "amqp://guest:guest@127.0.0.1:5672/%2F"
CLIENTS = ("pika", "aio-pika")


def _percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))]


# --- pika's Twisted adapter, default reactor --------------------------------------


def _run_pika(serial: int, pipelined: int) -> None:
    import pika
    from pika.adapters.twisted_connection import TwistedProtocolConnection
    from twisted.internet import defer, protocol, task

    async def main(reactor: Any) -> dict[str, float]:
        creator = protocol.ClientCreator(
            reactor,
            TwistedProtocolConnection,
            pika.URLParameters(URL),
            custom_reactor=reactor,
        )
        connection = await creator.connectTCP("127.0.0.1", 5672)
        await connection.ready
        publisher = await connection.channel()
        consumer = await connection.channel()
        exchange = f"adbench.{uuid.uuid4().hex}"
        queue = exchange + ".q"
        await publisher.exchange_declare(exchange, exchange_type="headers")
        await consumer.queue_declare(queue, durable=True)
        await consumer.queue_bind(
            queue, exchange, arguments={"x-match": "all", "k": "s:v"}
        )
        replies, _ = await publisher.basic_consume(
            "amq.rabbitmq.reply-to", auto_ack=True
        )
        await publisher.confirm_delivery()
        work, _ = await consumer.basic_consume(queue, auto_ack=False)
        properties = pika.BasicProperties(
            headers={"k": "s:v"},
            reply_to="amq.rabbitmq.reply-to",
            correlation_id="c",
            delivery_mode=2,
        )

        async def serve() -> None:
            while True:
                message = await work.get()
                await consumer.basic_publish(
                    "",
                    message.properties.reply_to,
                    b"reply",
                    pika.BasicProperties(correlation_id="c"),
                )
                consumer.basic_ack(message.method.delivery_tag)

        server = defer.ensureDeferred(serve())
        server.addErrback(lambda _: None)
        latencies = []
        for _ in range(serial):
            started = time.perf_counter()
            publisher.basic_publish(exchange, "", b"work", properties, mandatory=True)
            await replies.get()
            latencies.append(time.perf_counter() - started)
        cpu, wall = time.process_time(), time.perf_counter()
        sent = 0
        for _ in range(min(64, pipelined)):
            publisher.basic_publish(exchange, "", b"work", properties, mandatory=True)
            sent += 1
        for _ in range(pipelined):
            await replies.get()
            if sent < pipelined:
                publisher.basic_publish(
                    exchange, "", b"work", properties, mandatory=True
                )
                sent += 1
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        await consumer.queue_delete(queue)
        await publisher.exchange_delete(exchange)
        connection.close()
        return _figures(latencies, pipelined, wall, cpu)

    # react() ends the process: the figures are printed before it does.
    task.react(lambda reactor: defer.ensureDeferred(main(reactor)).addCallback(_print))


# --- aio-pika under Twisted's asyncio reactor --------------------------------------


def _run_aio_pika(serial: int, pipelined: int) -> None:
    import asyncio

    from twisted.internet import asyncioreactor

    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    asyncioreactor.install(loop)
    import aio_pika
    from twisted.internet import defer, task

    async def main() -> dict[str, float]:
        connection = await aio_pika.connect(URL)
        publisher = await connection.channel(publisher_confirms=True)
        consumer = await connection.channel()
        exchange_name = f"adbench.{uuid.uuid4().hex}"
        exchange = await publisher.declare_exchange(
            exchange_name, aio_pika.ExchangeType.HEADERS
        )
        queue = await consumer.declare_queue(exchange_name + ".q", durable=True)
        await queue.bind(exchange_name, arguments={"x-match": "all", "k": "s:v"})
        replies: asyncio.Queue[Any] = asyncio.Queue()
        reply_queue = await publisher.get_queue("amq.rabbitmq.reply-to", ensure=False)
        await reply_queue.consume(replies.put, no_ack=True)

        async def on_work(message: Any) -> None:
            await consumer.default_exchange.publish(
                aio_pika.Message(b"reply", correlation_id="c"),
                routing_key=message.reply_to,
            )
            await message.ack()

        await queue.consume(on_work)

        def publish() -> Any:
            return asyncio.ensure_future(
                exchange.publish(
                    aio_pika.Message(
                        b"work",
                        headers={"k": "s:v"},
                        reply_to="amq.rabbitmq.reply-to",
                        correlation_id="c",
                        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                    ),
                    routing_key="",
                    mandatory=True,
                )
            )

        latencies = []
        for _ in range(serial):
            started = time.perf_counter()
            publish()
            await replies.get()
            latencies.append(time.perf_counter() - started)
        cpu, wall = time.process_time(), time.perf_counter()
        sent = 0
        for _ in range(min(64, pipelined)):
            publish()
            sent += 1
        for _ in range(pipelined):
            await replies.get()
            if sent < pipelined:
                publish()
                sent += 1
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        await queue.delete(if_unused=False, if_empty=False)
        await exchange.delete()
        await connection.close()
        return _figures(latencies, pipelined, wall, cpu)

    task.react(
        lambda reactor: defer.Deferred.fromFuture(
            asyncio.ensure_future(main())
        ).addCallback(_print)
    )


def _print(figures: dict[str, float]) -> None:
    print(json.dumps(figures), flush=True)


def _figures(
    latencies: list[float], pipelined: int, wall: float, cpu: float
) -> dict[str, float]:
    return {
        "p50_ms": 1e3 * statistics.median(latencies),
        "p99_ms": 1e3 * _percentile(latencies, 0.99),
        "messages_per_s": pipelined / wall,
        "cpu_us_per_message": 1e6 * cpu / pipelined,
    }


def _one(client: str, serial: int, pipelined: int) -> dict[str, float]:
    """
    Run one client in a fresh process (each needs its own reactor).
    """
    output = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.amqp_clients",
            "--child",
            client,
            "--serial",
            str(serial),
            "--pipelined",
            str(pipelined),
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    ).stdout
    return dict(json.loads(output.strip().splitlines()[-1]))


def versions() -> dict[str, str]:
    """
    The versions measured.
    """
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in ("pika", "aio-pika", "aiormq", "twisted"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "not installed"
    return found


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run")
    parser.add_argument("--rounds", type=int, help="rounds (default 3; 1 quick)")
    parser.add_argument("--json", help="write the figures here")
    parser.add_argument("--child", choices=CLIENTS, help=argparse.SUPPRESS)
    parser.add_argument("--serial", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--pipelined", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        run = _run_pika if args.child == "pika" else _run_aio_pika
        run(args.serial, args.pipelined)
        return {}
    rounds = args.rounds or (1 if args.quick else 3)
    serial, pipelined = (100, 500) if args.quick else (2000, 5000)
    clients = [c for c in CLIENTS if versions()[c] != "not installed"]
    samples: dict[str, list[dict[str, float]]] = {c: [] for c in clients}
    for _ in range(rounds):
        for client in clients:
            samples[client].append(_one(client, serial, pipelined))
    medians = {
        client: {key: statistics.median(s[key] for s in runs) for key in runs[0]}
        for client, runs in samples.items()
    }
    print(f"versions: {versions()}; {rounds} round(s), medians")
    print(f"{'client':<10} {'p50 ms':>8} {'p99 ms':>8} {'msg/s':>9} {'CPU us/msg':>11}")
    for client, m in medians.items():
        print(
            f"{client:<10} {m['p50_ms']:8.3f} {m['p99_ms']:8.3f} "
            f"{m['messages_per_s']:9.0f} {m['cpu_us_per_message']:11.1f}"
        )
    if len(medians) == 2:
        pika, aio = medians["pika"], medians["aio-pika"]
        print(
            f"aio-pika / pika: p50 {aio['p50_ms'] / pika['p50_ms']:.2f}x, "
            f"msg/s {aio['messages_per_s'] / pika['messages_per_s']:.2f}x, "
            f"CPU/msg {aio['cpu_us_per_message'] / pika['cpu_us_per_message']:.2f}x"
        )
    else:
        print("aio-pika is not installed (pip install -e '.[bench]'): pika only")
    print(
        "note: aio-pika needs Twisted's asyncio reactor, installed before anything "
        "imports twisted.internet.reactor: a choice forced on every application"
    )
    figures = {"versions": versions(), "rounds": rounds, "clients": medians}
    if args.json:
        with open(args.json, "w") as out:
            json.dump(figures, out, indent=2)
    return figures


if __name__ == "__main__":
    main()
