"""
External processes over AMP, for real: a dispatcher with a real child pool
listens on loopback; C{docs/examples/external_handler.py} runs as separate
processes that serve as handlers and fire events; one is killed mid-event;
TLS with client certificates lets in only the right peers, and AMP's StartTLS
is refused; and a peer that
never reads its answers costs the dispatcher (in a process of its own,
C{tests/integration/amp_server.py}) a bounded amount of memory.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from twisted.internet import defer, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.task import deferLater
from twisted.protocols import amp
from twisted.trial.unittest import SynchronousTestCase, TestCase

from actordispatch import EventDispatcher
from actordispatch._external.listen import TLSServerOptions, listen
from actordispatch._external.wire import ListHandlers
from actordispatch.testing import FakePool
from tests.integration.support import Authority, Collector

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "docs" / "examples" / "external_handler.py"


# --- the tests ------------------------------------------------------------------------


class ExternalTestCase(TestCase):
    timeout = 30

    @defer.inlineCallbacks
    def start_dispatcher(self, **listen_options: Any) -> Any:
        """
        A started dispatcher (one real child) listening on loopback TCP.
        """
        self.dispatcher = EventDispatcher(("kind",), pool_size=1, default_timeout=10)
        self.addCleanup(self.dispatcher.stop)
        yield self.dispatcher.start()
        self.listener = yield listen(
            reactor, self.dispatcher, "tcp:0:interface=127.0.0.1", **listen_options
        )
        self.addCleanup(self.listener.stopListening)
        self.port = self.listener.getHost().port

    def spawn(self, *args: str) -> tuple[Collector, Any]:
        """
        Run the example with C{args}; it is killed at the end of the test.
        """
        collector = Collector()
        transport = reactor.spawnProcess(
            collector,
            sys.executable,
            [sys.executable, str(EXAMPLE), *args],
            env=dict(os.environ),
            path=str(ROOT),
        )

        def kill() -> Any:
            if not collector.ended.called:
                transport.signalProcess("KILL")
                return collector.ended
            return None

        self.addCleanup(kill)
        return collector, transport

    @property
    def endpoint(self) -> str:
        return f"tcp:host=127.0.0.1:port={self.port}"

    @defer.inlineCallbacks
    def wait_for(self, collector: Collector, text: bytes, seconds: float = 10) -> Any:
        deadline = time.monotonic() + seconds
        while text not in collector.output:
            if collector.ended.called or time.monotonic() > deadline:
                self.fail(f"never saw {text!r}; output:\n{collector.output.decode()}")
            yield deferLater(reactor, 0.02, lambda: None)

    @defer.inlineCallbacks
    def wait_end(self, collector: Collector, seconds: float = 10) -> Any:
        deadline = time.monotonic() + seconds
        while not collector.ended.called:
            if time.monotonic() > deadline:
                self.fail(f"did not end; output:\n{collector.output.decode()}")
            yield deferLater(reactor, 0.02, lambda: None)
        code = yield collector.ended
        return code

    @defer.inlineCallbacks
    def serve(self, endpoint: str, name: str = "ext", kind: str = "ext") -> Any:
        collector, transport = self.spawn(
            endpoint, "serve", name, "during", "--match", json.dumps({"kind": kind})
        )
        yield self.wait_for(collector, b"registered ")
        return collector, transport


class ExternalProcessTests(ExternalTestCase):
    @defer.inlineCallbacks
    def test_serves_and_fires(self) -> Any:
        """
        An external process registered as a handler runs the events that match
        it (its pid is in the value), whether they are fired in the dispatcher
        or by another external process, which gets every outcome as JSON.
        """
        yield self.start_dispatcher()
        yield self.dispatcher.add_event_handler(
            "tests.integration.handlers:describe", "during", kind="local"
        )
        _, server = yield self.serve(self.endpoint)
        [info] = [i for i in self.dispatcher.handlers() if i.pool != "default"]
        self.assertRegex(info.handler, r"^external\.conn\d+:ext$")

        result = yield self.dispatcher.fire_event({"hello": "world"}, kind="ext")
        [outcome] = result.outcomes
        self.assertEqual(outcome.status, "ok", outcome)
        self.assertEqual(outcome.value["pid"], server.pid)
        self.assertEqual(outcome.value["event"], {"hello": "world"})
        self.assertEqual(outcome.pid, server.pid)

        firer, _ = self.spawn(
            self.endpoint, "fire", '{"n": 1}', "--keywords", '{"kind": "ext"}'
        )
        local, _ = self.spawn(
            self.endpoint, "fire", '{"n": 2}', "--keywords", '{"kind": "local"}'
        )
        for collector in (firer, local):
            code = yield self.wait_end(collector)
            self.assertEqual(code, 0, collector.output.decode())
        remote_answer = json.loads(firer.output.decode().strip().splitlines()[-1])
        self.assertTrue(remote_answer["ok"])
        self.assertEqual(remote_answer["outcomes"][0]["value"]["pid"], server.pid)
        local_answer = json.loads(local.output.decode().strip().splitlines()[-1])
        [local_outcome] = local_answer["outcomes"]
        self.assertEqual(local_outcome["status"], "ok")
        self.assertEqual(local_outcome["value"]["fields"], {"n": 2})
        pool: Any = self.dispatcher.pools()["default"]
        self.assertIn(local_outcome["pid"], pool.child_pids())

    @defer.inlineCallbacks
    def test_operators(self) -> Any:
        """
        An external process registers with an operator table in its match
        spec (the example's C{--match}); events are routed by it.
        """
        yield self.start_dispatcher()
        collector, server = self.spawn(
            self.endpoint,
            "serve",
            "ops",
            "during",
            "--match",
            json.dumps({"kind": {"in": ["a", "b"]}}),
        )
        yield self.wait_for(collector, b"registered ")
        for kind, runs in (("a", True), ("b", True), ("c", False)):
            result = yield self.dispatcher.fire_event({"k": kind}, kind=kind)
            self.assertEqual([o.pid for o in result.outcomes], [server.pid] * runs)

    @defer.inlineCallbacks
    def test_handler_error(self) -> Any:
        """
        An external handler that raises gives an "error" outcome with its
        exception type, message and traceback.
        """
        yield self.start_dispatcher()
        yield self.serve(self.endpoint)
        result = yield self.dispatcher.fire_event({"fail": "no way"}, kind="ext")
        [outcome] = result.outcomes
        self.assertEqual(outcome.status, "error")
        self.assertEqual(outcome.error_type, "builtins.ValueError")
        self.assertEqual(outcome.error_message, "no way")
        self.assertIn("ValueError", outcome.traceback)

    @defer.inlineCallbacks
    def test_killed_mid_event(self) -> Any:
        """
        Killing the external process while it handles a slow event: that
        invocation ends "crashed" (connection lost) at once, not at its
        timeout, and the process's handlers are removed.
        """
        yield self.start_dispatcher()
        collector, server = yield self.serve(self.endpoint)
        started = time.monotonic()
        fired = self.dispatcher.fire_event({"sleep": 20}, kind="ext")
        yield self.wait_for(collector, b"invoked ")
        server.signalProcess(signal.SIGKILL)
        result = yield fired
        self.assertLess(time.monotonic() - started, 8)
        [outcome] = result.outcomes
        self.assertEqual(outcome.status, "crashed")
        self.assertEqual(outcome.error_type, "actordispatch.ConnectionLost")
        self.assertEqual(self.dispatcher.handlers(), [])
        self.assertEqual(list(self.dispatcher.pools()), ["default"])
        after = yield self.dispatcher.fire_event({}, kind="ext")
        self.assertEqual(after.outcomes, ())


class TLSTests(ExternalTestCase):
    def write(self, directory: Path, name: str, data: bytes) -> str:
        path = directory / name
        path.write_bytes(data)
        return str(path)

    @defer.inlineCallbacks
    def test_client_certificates(self) -> Any:
        """
        With TLS, a peer without a client certificate, one whose certificate
        comes from another CA, and one whose name is not allowed are all
        rejected; a peer with an allowed certificate from the configured CA
        registers and handles events.
        """
        directory = Path(tempfile.mkdtemp())
        self.addCleanup(shutil.rmtree, directory)
        authority, stranger = Authority("clients CA"), Authority("other CA")
        server_cert, server_key = authority.issue("localhost", server=True)
        yield self.start_dispatcher(
            tls=TLSServerOptions(
                server_cert, server_key, authority.pem, allowed_peers={"worker1"}
            )
        )
        roots = directory / "roots"
        roots.mkdir()
        self.write(roots, "ca.pem", authority.pem)
        base = f"tls:localhost:{self.port}:trustRoots={roots}"

        def client(name: str, issuer: Authority) -> str:
            cert, key = issuer.issue(name)
            c = self.write(directory, f"{name}-{id(issuer)}.pem", cert)
            k = self.write(directory, f"{name}-{id(issuer)}.key", key)
            return f"{base}:certificate={c}:privateKey={k}"

        refused = [
            self.spawn(endpoint, "serve", "ext", "during")[0]
            for endpoint in (
                base,
                client("worker1", stranger),
                client("intruder", authority),
            )
        ]
        accepted, server = yield self.serve(client("worker1", authority))
        for collector in refused:
            code = yield self.wait_end(collector)
            self.assertEqual(code, 1, collector.output.decode())
            self.assertNotIn(b"registered", collector.output)
        result = yield self.dispatcher.fire_event({}, kind="ext")
        [outcome] = result.outcomes
        self.assertEqual(outcome.status, "ok", outcome)
        self.assertEqual(outcome.value["pid"], server.pid)


# --- a peer that never reads ------------------------------------------------------

MIB = 1024 * 1024


def amp_box(**values: bytes) -> bytes:
    """
    One AMP box, as bytes on the wire.
    """
    out = b""
    for key, value in values.items():
        name = key.encode()
        out += struct.pack("!H", len(name)) + name
        out += struct.pack("!H", len(value)) + value
    return out + b"\x00\x00"


def read_box(sock: socket.socket) -> dict[bytes, bytes]:
    """
    Read one AMP box from a blocking socket (its timeout bounds the wait).
    """

    def exactly(count: int) -> bytes:
        data = b""
        while len(data) < count:
            chunk = sock.recv(count - len(data))
            if not chunk:
                raise ConnectionError("the dispatcher closed the connection")
            data += chunk
        return data

    box = {}
    while True:
        (length,) = struct.unpack("!H", exactly(2))
        if not length:
            return box
        key = exactly(length)
        (length,) = struct.unpack("!H", exactly(2))
        box[key] = exactly(length)


def rss(pid: int) -> int:
    """
    The resident memory of process C{pid}, in bytes (Linux).
    """
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


class NonReadingPeerTests(SynchronousTestCase):
    """
    A peer that pipelines commands and never reads their answers costs the
    dispatcher a bounded amount of memory: past a cap it stops reading from
    that peer, and serves the others as before.
    """

    BUDGET = 32 * MIB

    def start_server(self, *args: str) -> tuple[subprocess.Popen[bytes], int]:
        server = subprocess.Popen(
            [sys.executable, "-m", "tests.integration.amp_server", *args],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )

        def stop() -> None:
            assert server.stdin is not None
            server.stdin.close()
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
            assert server.stdout is not None
            server.stdout.close()

        self.addCleanup(stop)
        assert server.stdout is not None
        ready, _, _ = select.select([server.stdout], [], [], 30)
        line = server.stdout.readline().decode() if ready else ""
        self.assertTrue(line.startswith("port "), f"the server said {line!r}")
        return server, int(line.split()[1])

    def connect(self, port: int) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", port), timeout=60)
        self.addCleanup(sock.close)
        return sock

    def call(self, sock: socket.socket, **values: bytes) -> dict[bytes, bytes]:
        """
        Send one command and read its answer, which must not be an error.
        """
        sock.sendall(amp_box(_ask=b"1", **values))
        answer = read_box(sock)
        self.assertIn(b"_answer", answer, answer)
        return answer

    def flood(self, port: int, command: bytes, count: int) -> int:
        """
        From a new connection, pipeline C{count} boxes (C{command}: the
        arguments after C{_ask}) and never read: send what the dispatcher
        takes until it is all sent or nothing went for two seconds.

        @return: the number of bytes sent.
        """
        sock = self.connect(port)
        sock.setblocking(False)
        data = b"".join(
            amp_box(_ask=str(i).encode())[:-2] + command for i in range(count)
        )
        sent, idle_since = 0, time.monotonic()
        while sent < len(data) and time.monotonic() - idle_since < 2:
            _, writable, _ = select.select([], [sock], [], 0.2)
            if writable:
                try:
                    sent += sock.send(data[sent : sent + 65536])
                    idle_since = time.monotonic()
                except BlockingIOError:
                    pass
        return sent

    def assert_bounded(self, flood_command: bytes, count: int) -> None:
        """
        Start a dispatcher, warm it up with a well-behaved peer, flood it
        from a peer that never reads, then check with the well-behaved peer
        that it still serves, and that its memory grew by less than the
        budget.
        """
        server, port = self.start_server("--handlers", "256")
        good = self.connect(port)
        for _ in range(3):
            self.call(good, _command=b"ListHandlers")
            self.call(good, _command=b"Fire", event=b"{}", keywords=b'{"kind": "big"}')
        before = rss(server.pid)
        self.assertGreater(self.flood(port, flood_command, count), 0)
        # Round trips behind the flood: by their answers, the dispatcher has
        # read what it was going to read of it, and answered what it could.
        for _ in range(3):
            self.call(good, _command=b"Fire", event=b"{}", keywords=b'{"kind": "big"}')
            self.call(good, _command=b"ListHandlers")
        grown = rss(server.pid) - before
        self.assertLess(
            grown, self.BUDGET, f"the dispatcher grew by {grown / MIB:.0f} MiB"
        )

    def test_list_handlers_flood(self) -> None:
        """
        Thousands of pipelined ListHandlers (each answer some 150 KB) from a
        peer that never reads cost the dispatcher less than 32 MiB.
        """
        command = amp_box(_command=b"ListHandlers")
        self.assert_bounded(command, 2000)

    def test_fire_flood(self) -> None:
        """
        A thousand pipelined Fires whose answers arrive later (each some
        100 KB) from a peer that never reads cost the dispatcher less than
        32 MiB: their answers do not pile up unsent.
        """
        command = amp_box(_command=b"Fire", event=b"{}", keywords=b'{"kind": "big"}')
        self.assert_bounded(command, 1000)


class StartTLSOverTCPTests(TestCase):
    """
    AMP's StartTLS, refused over a real loopback TCP connection, where
    accepting it would switch the reactor's transport to TLS.
    """

    timeout = 30

    @defer.inlineCallbacks
    def test_refused_connection_stays_plaintext(self) -> Any:
        """
        A peer's StartTLS is answered UNHANDLED; the same connection then
        answers ListHandlers, in plaintext.
        """
        dispatcher = EventDispatcher(("kind",), reactor=reactor, pool=FakePool())
        yield dispatcher.start()
        self.addCleanup(dispatcher.stop)
        listener = yield listen(reactor, dispatcher, "tcp:0:interface=127.0.0.1")
        self.addCleanup(listener.stopListening)
        peer = yield connectProtocol(
            TCP4ClientEndpoint(reactor, "127.0.0.1", listener.getHost().port),
            amp.AMP(),
        )
        self.addCleanup(peer.transport.loseConnection)
        # A raw box: Twisted's callRemote(StartTLS) would hold back the
        # client's later commands until TLS starts.
        try:
            yield peer.callRemoteString(b"StartTLS")
        except amp.UnhandledCommand as refused:
            self.assertIn("StartTLS", str(refused))
        else:
            self.fail("StartTLS was accepted")
        answer = yield peer.callRemote(ListHandlers)
        self.assertEqual(json.loads(answer["handlers"]), [])
