"""
The RabbitMQ transport against the machine's real broker on 127.0.0.1:5672:
routing parity between the headers exchange and the dispatcher's own index,
every kind of outcome through a worker host, a host killed mid-event, load
shared between hosts, and the connection cut (and restored) through a loopback
proxy the test controls.

Each test uses a namespace of its own (so exchange and queue names unique to the
run) and deletes what it declared.  The broker itself is never stopped or
reconfigured.  Where no broker is reachable, every test here is skipped with a
message saying so.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import random
import signal
import socket
import sys
import tempfile
import uuid
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from twisted.internet import defer, reactor, utils
from twisted.internet.task import deferLater
from twisted.logger import globalLogPublisher
from twisted.protocols import portforward
from twisted.trial.unittest import SkipTest, TestCase

from actordispatch import ClientTLS, EventDispatcher
from actordispatch._amqp.link import delete_namespace
from actordispatch._amqp.pool import AMQPPool
from actordispatch._amqp.wire import event_headers, queue_name
from actordispatch._amqp.worker import WorkerHost
from actordispatch._core.match import MatchSpec
from actordispatch._local.pool import AmpoulePool
from tests.integration.support import (
    CLI,
    Authority,
    Collector,
    ProcessTestCase,
    free_port,
    wait_until,
)

HOST, PORT = "127.0.0.1", 5672
URL = f"amqp://guest:guest@{HOST}:{PORT}/%2F"
ROOT = Path(__file__).resolve().parents[2]
HANDLERS = "tests.integration.handlers"


def _reachable() -> bool:
    try:
        socket.create_connection((HOST, PORT), timeout=1).close()
    except OSError:
        return False
    return True


BROKER_UP = _reachable()
NO_BROKER = (
    f"!!! NO RABBITMQ BROKER ON {HOST}:{PORT}: the AMQP integration tests did NOT "
    "run !!!"
)


def deferred_test(
    method: Callable[[Any], Coroutine[Any, Any, None]],
) -> Callable[[Any], defer.Deferred[None]]:
    """
    Run an C{async def} test method as trial runs Deferred-returning ones.
    """

    @functools.wraps(method)
    def run(self: Any) -> defer.Deferred[None]:
        return defer.ensureDeferred(method(self))

    return run


class Proxy(portforward.ProxyFactory):
    """
    A loopback TCP proxy to the broker that the test can cut and restore.
    """

    def __init__(self) -> None:
        super().__init__(HOST, PORT)
        self.servers: list[Any] = []
        self.listening: Any = None  # (self.port is the broker's)
        self.number = 0

    def buildProtocol(self, addr: Any) -> Any:
        server = super().buildProtocol(addr)
        self.servers.append(server)
        return server

    def listen(self) -> None:
        self.listening = reactor.listenTCP(self.number, self, interface=HOST)
        self.number = self.listening.getHost().port

    async def cut(self) -> None:
        listening, self.listening = self.listening, None
        await listening.stopListening()
        for server in self.servers:
            if server.transport is not None:
                server.transport.abortConnection()
            if getattr(server, "peer", None) and server.peer.transport is not None:
                server.peer.transport.abortConnection()
        self.servers = []


class AMQPTestCase(TestCase):
    """
    A namespace of the test's own, and cleanup of what it declared.
    """

    timeout = 60

    def setUp(self) -> None:
        if not BROKER_UP:
            print(NO_BROKER, file=sys.stderr)
            raise SkipTest(NO_BROKER)
        self.namespace = f"adtest.{uuid.uuid4().hex[:12]}"
        self.handlers: set[str] = set()
        self.addCleanup(lambda: defer.ensureDeferred(self._delete_topology()))

    async def _delete_topology(self) -> None:
        await delete_namespace(URL, self.namespace, self.handlers, reactor=reactor)

    def pool(self, url: str = URL, **options: Any) -> AMQPPool:
        options.setdefault("default_timeout", 10.0)
        options.setdefault("reply_grace", 5.0)
        return AMQPPool(url, namespace=self.namespace, reactor=reactor, **options)

    async def dispatcher(self, pool: AMQPPool, **options: Any) -> EventDispatcher:
        options.setdefault("phases", ("before", "during"))
        dispatcher = EventDispatcher(
            allowed_match_spec_keywords=("kind", "user", "n"),
            reactor=reactor,
            pool=AmpoulePool(size=1, reactor=reactor),
            **options,
        )
        dispatcher.add_pool("remote", pool)
        await dispatcher.start()
        self.addCleanup(dispatcher.stop)
        return dispatcher

    async def host(self, handlers: list[str], **options: Any) -> WorkerHost:
        self.handlers.update(handlers)
        options.setdefault("pool", AmpoulePool(size=1, reactor=reactor))
        host = WorkerHost(
            URL, handlers, namespace=self.namespace, reactor=reactor, **options
        )
        self.assertTrue(await host.start())
        self.addCleanup(host.stop)
        return host

    async def add(
        self, dispatcher: EventDispatcher, name: str, phase: str, **spec: Any
    ) -> int:
        handler = f"{HANDLERS}:{name}"
        self.handlers.add(handler)
        return await dispatcher.add_event_handler(handler, phase, pool="remote", **spec)

    def spawn_host(self, handlers: list[str], *arguments: str) -> tuple[Any, Collector]:
        """
        A worker host in a process of its own (C{python -m actordispatch
        worker}) with one child, taking one message at a time (unless
        C{arguments} say otherwise), the broker URL in its environment.
        """
        self.handlers.update(handlers)
        collector = Collector()
        env = {
            "PYTHONPATH": os.pathsep.join(p or os.getcwd() for p in sys.path),
            "ACTORDISPATCH_AMQP_URL": URL,
            "PATH": os.environ.get("PATH", ""),
        }
        process = reactor.spawnProcess(
            collector,
            sys.executable,
            [
                sys.executable,
                "-m",
                "actordispatch",
                "worker",
                "--namespace",
                self.namespace,
                "--children",
                "1",
                "--prefetch",
                "1",
                *arguments,
                "--handlers",
                *handlers,
            ],
            env=env,
            path=str(ROOT),
        )

        def kill() -> defer.Deferred[int]:
            if process.pid is not None:
                process.signalProcess("KILL")
            return collector.ended

        self.addCleanup(kill)
        return process, collector


class RoutingParityTests(AMQPTestCase):
    @deferred_test
    async def test_exchange_delivers_to_the_local_set(self) -> None:
        """
        For random match specs and random events, the headers exchange copies
        each event's phase to exactly the queues of the handlers the
        dispatcher's own matching selects: equality as in Python (C{1},
        C{1.0} and C{True} alike, C{"1"} apart), absent keywords unmatched, and
        the phase part of the route.
        """
        rng = random.Random(20261123)
        values = [1, 2, 1.0, True, "1", "x", "y", 2.5]
        keywords = ("kind", "user", "n")
        phases = ("before", "during")
        pool = self.pool()
        await pool.start()
        self.addCleanup(pool.stop)
        registrations = []
        for number in range(24):
            spec = MatchSpec.from_keywords(
                {k: rng.choice(values) for k in keywords if rng.random() < 0.5}
            )
            phase = rng.choice(phases)
            handler = f"parity.h{number}:run"
            self.handlers.add(handler)
            await pool.bind(number, handler, phase, spec)
            registrations.append((handler, phase, spec))
        expected: dict[str, set[int]] = {h: set() for h, _, _ in registrations}
        import pika

        channel = pool._channel
        for event in range(60):
            fired = {k: rng.choice(values) for k in keywords if rng.random() < 0.7}
            phase = rng.choice(phases)
            for handler, bound_phase, spec in registrations:
                if bound_phase == phase and spec.matches(fired):
                    expected[handler].add(event)
            await channel.basic_publish(
                pool.exchange,
                "",
                b"",
                pika.BasicProperties(
                    headers=event_headers(phase, fired), message_id=str(event)
                ),
            )
        reader = await pool._link.connection.channel()
        for handler, received in expected.items():
            got = set()
            while True:
                message = await reader.basic_get(queue_name(self.namespace, handler))
                if message is None:
                    break
                got.add(int(message.properties.message_id))
                reader.basic_ack(message.method.delivery_tag)
            self.assertEqual(got, received, handler)
        self.assertTrue(any(expected.values()), "the random run routed nothing")


class OutcomeTests(AMQPTestCase):
    @deferred_test
    async def test_every_outcome_through_a_worker_host(self) -> None:
        """
        Through the broker and a worker host's own children, a handler's
        value, its exception, its timeout and its child's crash come back as
        the same outcomes a local pool gives, from the host's children; the
        handlers of an event run in their phases, in order.
        """
        names = ["echo", "boom", "hang", "exit_now"]
        host = await self.host([f"{HANDLERS}:{n}" for n in names])
        dispatcher = await self.dispatcher(self.pool())
        await self.add(dispatcher, "echo", "during", kind="a")
        await self.add(dispatcher, "boom", "before", kind="a")
        await self.add(dispatcher, "hang", "during", kind="b", timeout=0.5)
        await self.add(dispatcher, "exit_now", "during", kind="c")
        result = await dispatcher.fire_event({"hello": [1, 2]}, kind="a")
        self.assertEqual(
            [(o.phase, o.handler.split(":")[1], o.status) for o in result.outcomes],
            [("before", "boom", "error"), ("during", "echo", "ok")],
        )
        self.assertEqual(result.outcomes[1].value, {"hello": [1, 2]})
        self.assertEqual(result.outcomes[0].error_type, "ValueError")
        self.assertIn(result.outcomes[1].pid, host.pool.child_pids())
        (timed_out,) = (await dispatcher.fire_event({}, kind="b")).outcomes
        self.assertEqual(
            (timed_out.status, timed_out.error_type),
            ("timeout", "actordispatch.HandlerTimeout"),
        )
        (crashed,) = (await dispatcher.fire_event({}, kind="c")).outcomes
        self.assertEqual(crashed.status, "crashed")
        self.assertEqual(host.answered, 4)

    @deferred_test
    async def test_veto_through_a_worker_host(self) -> None:
        """
        A handler on a worker host returning Veto in a veto phase stops the
        event: its reason crosses the broker, the later phase is skipped.
        """
        from actordispatch import Phase

        await self.host([f"{HANDLERS}:gate", f"{HANDLERS}:echo"])
        dispatcher = await self.dispatcher(
            self.pool(), phases=(Phase("before", veto=True), "during")
        )
        gate = await self.add(dispatcher, "gate", "before", kind="a")
        await self.add(dispatcher, "echo", "during", kind="a")
        result = await dispatcher.fire_event({"veto": "closed today"}, kind="a")
        self.assertEqual(
            [(o.phase, o.status) for o in result.outcomes],
            [("before", "ok"), ("during", "skipped")],
        )
        self.assertEqual(
            (result.vetoed.handler_id, result.vetoed.veto), (gate, "closed today")
        )
        result = await dispatcher.fire_event({}, kind="a")
        self.assertTrue(result.ok, result.failures)
        self.assertIsNone(result.vetoed)

    @deferred_test
    async def test_event_matching_nothing(self) -> None:
        """
        An event that matches no handler of the AMQP pool publishes nothing
        and completes at once with no outcomes; one that matches a local
        handler only runs it locally.
        """
        pool = self.pool()
        dispatcher = await self.dispatcher(pool)
        await self.add(dispatcher, "echo", "during", kind="a")
        await dispatcher.add_event_handler(f"{HANDLERS}:pid", "during", kind="local")
        result = await dispatcher.fire_event({}, kind="z")
        self.assertEqual(result.outcomes, ())
        (local,) = (await dispatcher.fire_event({}, kind="local")).outcomes
        self.assertEqual(local.status, "ok")
        channel = await pool._link.connection.channel()
        frame = await channel.queue_declare(
            queue_name(self.namespace, f"{HANDLERS}:echo"), passive=True
        )
        self.assertEqual(frame.method.message_count, 0)
        self.assertEqual(pool.in_flight, 0)

    @deferred_test
    async def test_no_worker_host_is_a_timeout(self) -> None:
        """
        With no worker host serving a handler, its outcome is C{"timeout"}
        after its timeout plus the pool's reply grace, saying no host replied;
        the message expires from the queue then.
        """
        pool = self.pool(reply_grace=0.5)
        dispatcher = await self.dispatcher(pool)
        await self.add(dispatcher, "echo", "during", kind="a", timeout=0.5)
        (outcome,) = (await dispatcher.fire_event({}, kind="a")).outcomes
        self.assertEqual(
            (outcome.status, outcome.error_type), ("timeout", "actordispatch.NoReply")
        )
        channel = await pool._link.connection.channel()
        queue = queue_name(self.namespace, f"{HANDLERS}:echo")
        for _ in range(40):
            frame = await channel.queue_declare(queue, passive=True)
            if frame.method.message_count == 0:
                break
            await deferLater(reactor, 0.05, lambda: None)
        self.assertEqual(frame.method.message_count, 0)

    @deferred_test
    async def test_unroutable_spec_refused(self) -> None:
        """
        A match spec value the exchange cannot compare as Python does is
        refused at registration with a C{ValueError} naming it.
        """
        dispatcher = await self.dispatcher(self.pool())
        with self.assertRaises(ValueError) as caught:
            await self.add(dispatcher, "echo", "during", kind=("a", "tuple"))
        self.assertIn("cannot be routed by an AMQP pool", str(caught.exception))


class HostFailureTests(AMQPTestCase):
    timeout = 90

    @deferred_test
    async def test_host_killed_mid_event(self) -> None:
        """
        A worker host killed (SIGKILL) while running a handler never
        acknowledged its message: the broker gives it to a second host, which
        runs it again, and the dispatcher records exactly one outcome for the
        handler, the second host's.  (Delivery to hosts is at least once: the
        handler started twice.)
        """
        handler = f"{HANDLERS}:mark_then_sleep"
        process, collector = self.spawn_host([handler])
        pool = self.pool()
        dispatcher = await self.dispatcher(pool)
        await self.add(dispatcher, "mark_then_sleep", "during", kind="a")
        mark = Path(tempfile.mkdtemp()) / "mark"
        self.addCleanup(lambda: mark.unlink(missing_ok=True))
        fired = dispatcher.fire_event({"mark": str(mark), "seconds": 1.5}, kind="a")
        await wait_until(mark.exists, 30, "the first host to start the handler")
        os.kill(process.pid, signal.SIGKILL)
        self.assertEqual(await collector.ended, -signal.SIGKILL)
        second = await self.host([handler])
        result = await fired
        (outcome,) = result.outcomes
        self.assertEqual(outcome.status, "ok")
        self.assertIn(outcome.pid, second.pool.child_pids())
        self.assertEqual(len(mark.read_text().split()), 2)
        await deferLater(reactor, 0.2, lambda: None)
        self.assertEqual(pool.in_flight, 0)

    @deferred_test
    async def test_load_split_between_hosts(self) -> None:
        """
        Two worker hosts consuming the same queue share the work of many
        events in flight: each runs some.
        """
        handler = f"{HANDLERS}:mark_then_sleep"
        first = await self.host([handler], prefetch=1)
        second = await self.host([handler], prefetch=1)
        dispatcher = await self.dispatcher(self.pool(), max_in_flight=16)
        await self.add(dispatcher, "mark_then_sleep", "during", kind="a")
        mark = Path(tempfile.mkdtemp()) / "mark"
        results = await defer.gatherResults(
            [
                dispatcher.fire_event({"mark": str(mark), "seconds": 0.05}, kind="a")
                for _ in range(16)
            ]
        )
        pids = [r.outcomes[0].pid for r in results]
        self.assertTrue(all(r.outcomes[0].status == "ok" for r in results))
        self.assertTrue(set(pids) & set(first.pool.child_pids()))
        self.assertTrue(set(pids) & set(second.pool.child_pids()))
        self.assertEqual(first.answered + second.answered, 16)

    @deferred_test
    async def test_worker_configuration(self) -> None:
        """
        C{actordispatch worker --config} gives the host's children the limits
        and environment of its C{[pool]} table (here: an environment variable
        the handler sees).
        """
        config = Path(tempfile.mkdtemp()) / "worker.toml"
        config.write_text(
            '[worker]\nname = "host-from-config"\n'
            '[pool]\nsize = 2\nchild_env = { FROM_WORKER_CONFIG = "1" }\n'
            "[pool.sandbox]\ncore_dumps = false\n"
        )
        self.spawn_host([f"{HANDLERS}:environment"], "--config", str(config))
        dispatcher = await self.dispatcher(self.pool())
        await self.add(dispatcher, "environment", "during", kind="a")
        (outcome,) = (await dispatcher.fire_event({}, kind="a")).outcomes
        self.assertEqual(outcome.status, "ok")
        self.assertIn("FROM_WORKER_CONFIG", outcome.value)

    @deferred_test
    async def test_worker_command_refuses_unknown_handler(self) -> None:
        """
        C{actordispatch worker} exits with status 1, naming the handler, when
        a handler it should serve cannot be imported.
        """
        process, collector = self.spawn_host([f"{HANDLERS}:no_such_handler"])
        self.assertEqual(await collector.ended, 1)
        self.assertIn(b"no_such_handler", collector.output)


class BrokerOutageTests(AMQPTestCase):
    timeout = 90

    @deferred_test
    async def test_connection_cut_and_restored(self) -> None:
        """
        When the connection to the broker is cut mid-event, the waiting
        invocation ends C{"crashed"} at once (not after its timeout), events
        fired while the broker is unreachable end C{"crashed"} at once too,
        and once the broker is reachable again the pool reconnects, binds its
        handlers again and serves.
        """
        proxy = Proxy()
        proxy.listen()
        self.addCleanup(lambda: proxy.listening and proxy.listening.stopListening())
        handler = f"{HANDLERS}:mark_then_sleep"
        await self.host([handler])
        pool = self.pool(
            f"amqp://guest:guest@{HOST}:{proxy.number}/%2F", default_timeout=30
        )
        dispatcher = await self.dispatcher(pool)
        await self.add(dispatcher, "mark_then_sleep", "during", kind="a")
        mark = Path(tempfile.mkdtemp()) / "mark"
        fired = dispatcher.fire_event({"mark": str(mark), "seconds": 0.5}, kind="a")
        await wait_until(mark.exists, 20, "the host to start the handler")
        started = reactor.seconds()
        await proxy.cut()
        (lost,) = (await fired).outcomes
        self.assertLess(reactor.seconds() - started, 5)
        self.assertEqual(
            (lost.status, lost.error_type),
            ("crashed", "actordispatch.BrokerConnectionLost"),
        )
        await wait_until(lambda: not pool.up, 5, "the pool to notice")
        (down,) = (await dispatcher.fire_event({"mark": str(mark)}, kind="a")).outcomes
        self.assertEqual(
            (down.status, down.error_type),
            ("crashed", "actordispatch.BrokerUnavailable"),
        )
        proxy.listen()
        await wait_until(lambda: pool.up, 20, "the pool to reconnect")
        (back,) = (await dispatcher.fire_event({"mark": str(mark)}, kind="a")).outcomes
        self.assertEqual(back.status, "ok")


class ServeTests(AMQPTestCase, ProcessTestCase):
    """
    C{actordispatch serve} with an AMQP pool declared in its TOML file, as
    real processes: the service, a worker host and a C{fire} client.
    """

    timeout = 90

    def config(self, url: str, amp_port: int | None, pool: str = "") -> str:
        listen = (
            f'[listen]\nendpoints = ["tcp:{amp_port}:interface=127.0.0.1"]'
            if amp_port is not None
            else ""
        )
        return self.write_config(
            f"""
[dispatcher]
keywords = ["kind"]
[pools.default]
size = 1
[pools.remote]
amqp = "{url}"
namespace = "{self.namespace}"
{pool}
[[handlers]]
handler = "{HANDLERS}:echo"
phase = "during"
pool = "remote"
match = {{ kind = "a" }}
{listen}
"""
        )

    @deferred_test
    async def test_serve_registers_on_a_pool_from_toml(self) -> None:
        """
        The service waits for its AMQP pool's first connection before it
        registers the handlers on it (it used to register at once and fail,
        "not connected yet"): it gets ready, and C{actordispatch fire} gets
        the worker host's ok outcome and exits 0.
        """
        self.spawn_host([f"{HANDLERS}:echo"])
        amp_port = free_port()
        server = self.spawn("-c", CLI, "serve", "--config", self.config(URL, amp_port))
        await self.wait_for(server, b"dispatcher ready", 60)
        out, err, code = await utils.getProcessOutputAndValue(
            sys.executable,
            [
                "-c",
                CLI,
                "fire",
                "--connect",
                f"tcp:127.0.0.1:{amp_port}",
                "--json",
                "--event",
                '{"hello": "broker"}',
                "kind=a",
            ],
            env=dict(os.environ),
            path=str(ROOT),
        )
        self.assertEqual(code, 0, (out + err).decode())
        (outcome,) = json.loads(out)["outcomes"]
        self.assertEqual(
            (outcome["status"], outcome["value"]), ("ok", {"hello": "broker"})
        )
        self.transport.signalProcess("TERM")
        self.assertEqual(await server.ended, 0, server.output.decode()[-3000:])

    @deferred_test
    async def test_serve_gives_up_on_an_unreachable_broker(self) -> None:
        """
        When the broker of an AMQP pool cannot be reached within the pool's
        C{start_timeout}, the service fails to start (exit 1) with a line that
        names the file, the pool's broker key and its timeout key, the broker
        and why the last attempt failed.
        """
        unreachable = f"amqp://guest:guest@127.0.0.1:{free_port()}/%2F"
        path = self.config(unreachable, free_port(), "start_timeout = 1")
        server = self.spawn("-c", CLI, "serve", "--config", path)
        self.assertEqual(await server.ended, 1, server.output.decode()[-3000:])
        self.assertIn(
            f"actordispatch serve: {path}: pools.remote.amqp: no connection to the "
            f"broker at amqp://127.0.0.1:".encode(),
            server.output,
        )
        self.assertIn(b"within 1 s (pools.remote.start_timeout): ", server.output)
        self.assertIn(b"Connection refused", server.output)

    @deferred_test
    async def test_serve_interrupted_while_waiting_for_the_broker(self) -> None:
        """
        SIGINT while the service waits for its broker at start stops it
        cleanly (exit 0), saying it stopped before it was ready, not that it
        failed to start or that its start_timeout passed.
        """
        unreachable = f"amqp://guest:guest@127.0.0.1:{free_port()}/%2F"
        path = self.config(unreachable, None, "start_timeout = 600")
        server = self.spawn("-c", CLI, "serve", "--config", path)
        # A few attempts in, the local pool has booted: the service waits
        # for the broker.
        await self.wait_for(server, b"retrying in 1.6s")
        server.transport.signalProcess("INT")
        self.assertEqual(await server.ended, 0, server.output.decode()[-3000:])
        self.assertIn(b"the dispatcher stopped before it was ready", server.output)
        self.assertNotIn(b"within 600 s", server.output)
        self.assertNotIn(b"actordispatch serve:", server.output)


class NamespaceTests(AMQPTestCase):
    @deferred_test
    async def test_delete_namespace(self) -> None:
        """
        delete_namespace removes the exchange and the handlers' queues (they
        outlive their handlers); an unreachable broker is a
        BrokerUnavailableError.
        """
        from actordispatch import BrokerUnavailableError

        pool = self.pool()
        dispatcher = await self.dispatcher(pool)
        handler_id = await self.add(dispatcher, "echo", "during", kind="a")
        await dispatcher.remove_event_handler(handler_id)
        name = queue_name(self.namespace, f"{HANDLERS}:echo")
        channel = await pool._link.connection.channel()
        await channel.queue_declare(name, passive=True)  # still there
        await delete_namespace(URL, self.namespace, self.handlers, reactor=reactor)
        channel = await pool._link.connection.channel()
        with self.assertRaises(Exception) as raised:
            await channel.queue_declare(name, passive=True)
        self.assertIn("NOT_FOUND", str(raised.exception))
        with self.assertRaises(BrokerUnavailableError):
            await delete_namespace(
                "amqp://guest:guest@127.0.0.1:1/%2F", "x", [], reactor=reactor
            )


class CredentialTests(AMQPTestCase):
    @deferred_test
    async def test_password_never_logged(self) -> None:
        """
        A pool whose password the broker refuses logs why it cannot connect,
        naming the broker, but never the password (neither in Twisted's log
        nor through pika's standard-library logging); its invocations end
        C{"crashed"} at once.
        """
        secret = "sekrit-" + uuid.uuid4().hex
        seen: list[str] = []

        def observe(event: dict[str, Any]) -> None:
            from twisted.logger import formatEvent

            seen.append(formatEvent(event))

        class Handler(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                seen.append(record.getMessage())

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)
        handler = Handler(logging.DEBUG)
        pika_log = logging.getLogger("pika")
        pika_log.addHandler(handler)
        level = pika_log.level
        pika_log.setLevel(logging.DEBUG)
        self.addCleanup(pika_log.removeHandler, handler)
        self.addCleanup(pika_log.setLevel, level)
        pool = self.pool(f"amqp://guest:{secret}@{HOST}:{PORT}/%2F")
        dispatcher = await self.dispatcher(pool)
        self.assertFalse(pool.up)
        from actordispatch._core.invocation import Invocation

        outcome = await pool.invoke(Invocation(1, f"{HANDLERS}:echo", "during", b"{}"))
        self.assertEqual(outcome.error_type, "actordispatch.BrokerUnavailable")
        self.assertNotIn(secret, outcome.error_message)
        self.assertTrue(any(f"{HOST}:{PORT}" in line for line in seen))
        self.assertFalse([line for line in seen if secret in line])
        del dispatcher


class TLSTests(AMQPTestCase):
    def tls_endpoint(self, authority: Authority) -> int:
        """
        A loopback TLS endpoint in front of the broker that requires a client
        certificate issued by C{authority}; its port.
        """
        from twisted.internet.ssl import Certificate, PrivateCertificate

        certificate, key = authority.issue("localhost", server=True)
        options = PrivateCertificate.loadPEM(certificate + key).options(
            Certificate.loadPEM(authority.pem)
        )
        port = reactor.listenSSL(
            0, portforward.ProxyFactory(HOST, PORT), options, interface=HOST
        )
        self.addCleanup(port.stopListening)
        return int(port.getHost().port)

    def client_tls(self, authority: Authority, issuer: Authority) -> ClientTLS:
        directory = Path(tempfile.mkdtemp())
        certificate, key = issuer.issue("dispatcher")
        (directory / "ca.pem").write_bytes(authority.pem)
        (directory / "me.pem").write_bytes(certificate)
        (directory / "me.key").write_bytes(key)
        return ClientTLS(
            ca=str(directory / "ca.pem"),
            certificate=str(directory / "me.pem"),
            key=str(directory / "me.key"),
            hostname="localhost",
        )

    @deferred_test
    async def test_client_certificate(self) -> None:
        """
        Over C{amqps://} the pool checks the broker's certificate against its
        CA and presents its own client certificate: through a TLS endpoint
        that requires one from the same CA it connects and serves; with a
        certificate from another CA it is refused, says so at once in its
        outcomes, and keeps retrying.
        """
        authority = Authority("actordispatch test CA")
        port = self.tls_endpoint(authority)
        await self.host([f"{HANDLERS}:echo"])
        pool = self.pool(
            f"amqps://guest:guest@{HOST}:{port}/%2F",
            tls=self.client_tls(authority, authority),
        )
        dispatcher = await self.dispatcher(pool)
        self.assertTrue(pool.up)
        await self.add(dispatcher, "echo", "during", kind="a")
        (outcome,) = (await dispatcher.fire_event("secret", kind="a")).outcomes
        self.assertEqual((outcome.status, outcome.value), ("ok", "secret"))

        refused = self.pool(
            f"amqps://guest:guest@{HOST}:{port}/%2F",
            tls=self.client_tls(authority, Authority("someone else")),
        )
        await refused.start()
        self.addCleanup(refused.stop)
        self.assertFalse(refused.up)
        from actordispatch._core.invocation import Invocation

        outcome = await refused.invoke(
            Invocation(1, f"{HANDLERS}:echo", "during", b"{}")
        )
        self.assertEqual(outcome.error_type, "actordispatch.BrokerUnavailable")


class ExampleTests(AMQPTestCase):
    timeout = 90

    @deferred_test
    async def test_scaleout_example(self) -> None:
        """
        docs/examples/amqp_scaleout.py runs: two worker host processes serve
        the user-created handlers of three events, in their phases, and both
        hosts take part.
        """
        from tests.integration.test_docs_examples import load

        example = load("amqp_scaleout")
        self.handlers.update(example.SERVED)
        lines: list[str] = []
        results = await example.main(
            reactor, URL, namespace=self.namespace, out=lines.append
        )
        self.assertTrue(all(result.ok for result in results))
        self.assertEqual(
            [[o.phase for o in r.outcomes] for r in results],
            [
                ["before", "during", "after"],
                ["before", "after"],
                ["before", "during", "after"],
            ],
        )
        pids = {o.pid for r in results for o in r.outcomes}
        self.assertEqual(len(pids), 2, lines)
