"""
The dispatcher as a service: under C{twist} and C{twistd -n}, and as
C{actordispatch serve}, started from a TOML file and stopped by SIGTERM (which
drains; a second signal stops at once); configuration errors fail at start
naming the file and the key; the metrics endpoint is scraped over loopback;
C{actordispatch fire} against a service that stops, and interrupted.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

from twisted.internet import defer, reactor, utils
from twisted.web.client import Agent, readBody

from tests.integration.support import (
    CLI,
    ROOT,
    ProcessTestCase,
    free_port,
    wait_until,
)


class ServiceTestCase(ProcessTestCase):
    @defer.inlineCallbacks
    def run_and_stop(self, *args: str, metrics_port: int) -> Any:
        collector = self.spawn(*args)
        yield self.wait_for(collector, b"dispatcher ready")
        response = yield Agent(reactor).request(
            b"GET", f"http://127.0.0.1:{metrics_port}/metrics".encode()
        )
        body = (yield readBody(response)).decode()
        self.assertIn("actordispatch_handlers 1.0", body)
        self.assertIn('actordispatch_children{pool="default"} 1.0', body)
        self.transport.signalProcess("TERM")
        code = yield collector.ended
        self.assertIn(code, (0, -signal.SIGTERM), collector.output.decode()[-3000:])
        self.assertIn(b"dispatcher stopped", collector.output)
        return collector

    def good_config(self, metrics_port: int) -> str:
        return self.write_config(
            f"""
[dispatcher]
keywords = ["event_type", "user", "role"]

[pools.default]
size = 1

[[handlers]]
handler = "actordispatch.examples.user_created:notify_admin"
phase = "during"
match = {{ role = "user" }}

[metrics]
endpoint = "tcp:{metrics_port}:interface=127.0.0.1"
"""
        )


class TwistTests(ServiceTestCase):
    def test_twist(self) -> Any:
        """
        `twist actordispatch --config FILE` starts the pools and handlers, serves
        metrics over loopback, and SIGTERM drains and exits 0.
        """
        port = free_port()
        path = self.good_config(port)
        return self.run_and_stop(
            "-m", "twisted", "actordispatch", "--config", path, metrics_port=port
        )

    def test_twistd(self) -> Any:
        """
        `twistd -n actordispatch --config FILE` does the same.
        """
        port = free_port()
        path = self.good_config(port)
        return self.run_and_stop(
            "-c",
            "from twisted.scripts.twistd import run; run()",
            "-n",
            "--logfile=-",
            "--pidfile=",
            "actordispatch",
            "--config",
            path,
            metrics_port=port,
        )

    def test_serve(self) -> Any:
        """
        `actordispatch serve --config FILE` does the same.
        """
        port = free_port()
        path = self.good_config(port)
        return self.run_and_stop(
            "-c",
            CLI,
            "serve",
            "--config",
            path,
            metrics_port=port,
        )

    @defer.inlineCallbacks
    def test_bad_config(self) -> Any:
        """
        A configuration mistake fails at start, naming the file, the key and
        the problem, with a non-zero exit, under twist and serve alike.
        """
        path = self.write_config(
            '[dispatcher]\nkeywords = ["role"]\n[[handlers]]\n'
            'handler = "a.b:c"\nphase = "durin"\n'
        )
        for args in (
            ("-m", "twisted", "actordispatch", "--config", path),
            (
                "-c",
                CLI,
                "serve",
                "--config",
                path,
            ),
        ):
            collector = self.spawn(*args)
            code = yield collector.ended
            self.assertNotEqual(code, 0)
            self.assertIn(
                f"{path}: handlers[0].phase: unknown phase 'durin'".encode(),
                collector.output,
            )

    @defer.inlineCallbacks
    def test_unimportable_handler(self) -> Any:
        """
        A configured handler no child can import stops the service at start with
        exit status 1, naming the file, the key and the handler.
        """
        path = self.write_config(
            '[dispatcher]\nkeywords = ["role"]\n[pools.default]\nsize = 1\n'
            '[[handlers]]\nhandler = "no_such_module:handler"\nphase = "during"\n'
        )
        collector = self.spawn("-m", "twisted", "actordispatch", "--config", path)
        code = yield collector.ended
        self.assertEqual(code, 1)
        self.assertIn(f"{path}: handlers[0].handler".encode(), collector.output)
        self.assertIn(b"no_such_module:handler", collector.output)


class EndpointTests(ServiceTestCase):
    @defer.inlineCallbacks
    def test_fire_and_handlers_against_serve(self) -> Any:
        """
        `actordispatch fire` fires an event into a running service over its AMP
        endpoint and prints each outcome (exit 0 when all are ok);
        `actordispatch handlers --json` lists the handlers.
        """
        amp_port, metrics_port = free_port(), free_port()
        path = self.write_config(
            f"""
[dispatcher]
keywords = ["kind"]
[pools.default]
size = 1
[[handlers]]
handler = "tests.integration.handlers:echo"
phase = "during"
match = {{ kind = "greeting" }}
[listen]
endpoints = ["tcp:{amp_port}:interface=127.0.0.1"]
[metrics]
endpoint = "tcp:{metrics_port}:interface=127.0.0.1"
"""
        )
        server = self.spawn("-c", CLI, "serve", "--config", path)
        yield self.wait_for(server, b"dispatcher ready")
        connect = f"tcp:127.0.0.1:{amp_port}"
        out, err, code = yield utils.getProcessOutputAndValue(
            sys.executable,
            [
                "-c",
                CLI,
                "fire",
                "--connect",
                connect,
                "--event",
                '{"hello": "world"}',
                "kind=greeting",
            ],
            env=dict(os.environ),
            path=str(ROOT),
        )
        self.assertEqual(code, 0, err.decode())
        self.assertIn(b"tests.integration.handlers:echo", out)
        self.assertIn(b'{"hello": "world"}', out)
        out, err, code = yield utils.getProcessOutputAndValue(
            sys.executable,
            ["-c", CLI, "handlers", "--connect", connect, "--json"],
            env=dict(os.environ),
            path=str(ROOT),
        )
        self.assertEqual(code, 0, err.decode())
        (listed,) = json.loads(out)
        self.assertEqual(
            (listed["handler"], listed["match"], listed["calls"]),
            ("tests.integration.handlers:echo", {"kind": "greeting"}, 1),
        )
        self.transport.signalProcess("TERM")
        self.assertEqual((yield server.ended), 0)

    @defer.inlineCallbacks
    def test_plaintext_beyond_loopback_refused(self) -> Any:
        """
        A plaintext TCP endpoint on every interface is refused at start (exit
        1), naming the file and the key, unless the configuration insists.
        """
        path = self.write_config(
            f'[dispatcher]\nkeywords = ["kind"]\n[pools.default]\nsize = 1\n'
            f'[listen]\nendpoints = ["tcp:{free_port()}"]\n'
        )
        collector = self.spawn("-m", "twisted", "actordispatch", "--config", path)
        code = yield collector.ended
        self.assertEqual(code, 1)
        self.assertIn(f"{path}: listen.endpoints[0]".encode(), collector.output)


def _alive(pid: int) -> bool:
    # Whether a process runs (a zombie does not).
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


class SignalTests(ServiceTestCase):
    """
    Signals to C{actordispatch serve} and C{actordispatch fire}, each in a
    process (and session) of its own, with an event whose handler sleeps far
    longer than the test may take.
    """

    @defer.inlineCallbacks
    def slow_event(self, handler: str = "mark_then_sleep", seconds: float = 600) -> Any:
        """
        A service with one handler that records its child's pid in a file,
        then sleeps C{seconds}; a C{fire} client waiting for that event's
        outcomes, once the handler runs.

        @return: a Deferred firing with the service's and the client's
            collectors and the child's pid.
        """
        amp_port = free_port()
        path = self.write_config(
            f"""
[dispatcher]
keywords = ["kind"]
drain_timeout = 60
[pools.default]
size = 1
[[handlers]]
handler = "tests.integration.handlers:{handler}"
phase = "during"
timeout = 120
[listen]
endpoints = ["tcp:{amp_port}:interface=127.0.0.1"]
"""
        )
        server = self.spawn("-c", CLI, "serve", "--config", path)
        yield self.wait_for(server, b"dispatcher ready")
        mark = Path(path).parent / "mark"
        event = json.dumps({"mark": str(mark), "seconds": seconds})
        connect = f"tcp:127.0.0.1:{amp_port}"
        client = self.spawn("-c", CLI, "fire", "--connect", connect, "--event", event)
        yield defer.ensureDeferred(
            wait_until(
                lambda: mark.exists() and mark.read_text().endswith("\n"),
                30,
                "the handler to start in a child",
            )
        )
        return server, client, int(mark.read_text().split()[0])

    @defer.inlineCallbacks
    def test_second_signal_stops_at_once(self) -> Any:
        """
        The first SIGINT to C{serve} logs what it drains and for how long and
        how to stop at once; the second one stops at once: the handler's child
        is killed, the waiting C{fire} client gets the event's outcome (the
        invocation aborted, exit 1) rather than silence, and C{serve} exits
        130 without a traceback.
        """
        server, client, child = yield self.slow_event()
        server.transport.signalProcess("INT")
        yield self.wait_for(
            server, b"draining 1 event, up to 60 s; press Ctrl-C again to stop now"
        )
        server.transport.signalProcess("INT")
        code = yield server.ended
        self.assertEqual(code, 130, server.output.decode()[-3000:])
        self.assertIn(b"SIGINT again: stopping now", server.output)
        self.assertNotIn(b"Traceback", server.output)
        self.assertEqual((yield client.ended), 1, client.output.decode())
        self.assertIn(b"mark_then_sleep", client.output)
        self.assertIn(b"timeout", client.output)
        self.assertIn(b"actordispatch.Aborted", client.output)
        yield defer.ensureDeferred(
            wait_until(lambda: not _alive(child), 30, "the child to be gone")
        )

    @defer.inlineCallbacks
    def test_ctrl_c_reaches_the_children_too(self) -> Any:
        """
        Ctrl-C in a terminal sends SIGINT to the whole process group, the
        children included; they ignore it, so that the drain it starts lets
        a handler waiting on its child's reactor finish: its outcome is ok,
        and C{serve} exits 0.
        """
        server, client, _ = yield self.slow_event("mark_then_wait", 3)
        os.killpg(server.transport.pid, signal.SIGINT)
        yield self.wait_for(server, b"SIGINT: draining 1 event")
        self.assertEqual((yield server.ended), 0, server.output.decode()[-3000:])
        self.assertEqual((yield client.ended), 0, client.output.decode())
        self.assertIn(b"mark_then_wait", client.output)
        self.assertIn(b" ok ", client.output)

    @defer.inlineCallbacks
    def test_fire_when_the_service_goes_away(self) -> Any:
        """
        A C{fire} client whose service dies while it waits says so in one
        line and exits 2.
        """
        server, client, _ = yield self.slow_event()
        server.transport.signalProcess("KILL")
        yield server.ended
        self.assertEqual((yield client.ended), 2, client.output.decode())
        self.assertIn(
            b"actordispatch fire: the service at tcp:127.0.0.1:", client.output
        )
        self.assertIn(b"went away before it answered", client.output)
        self.assertNotIn(b"Traceback", client.output)

    @defer.inlineCallbacks
    def test_interrupted_fire(self) -> Any:
        """
        SIGINT to a C{fire} client waiting for outcomes ends it with exit
        status 130 and a line saying the event may still run.
        """
        server, client, _ = yield self.slow_event()
        client.transport.signalProcess("INT")
        self.assertEqual((yield client.ended), 130, client.output.decode())
        self.assertIn(b"actordispatch fire: interrupted (SIGINT)", client.output)
        self.assertIn(b"may still run", client.output)
        self.assertNotIn(b"Traceback", client.output)
