"""
Integration tests of the fork server (L{actordispatch._local.forkserver}) with a
real template process and real forked children speaking AMP.
"""

from __future__ import annotations

import os
import signal
from typing import Any

from twisted.internet import defer, error, reactor
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from actordispatch._core.sandbox import SandboxProfile
from actordispatch._local.child import Child, child_environment, spawn_child
from actordispatch._local.forkserver import ForkServer
from actordispatch._wire.commands import Ping


def _parent_of(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as stat:
        return int(stat.read().rsplit(")", 1)[1].split()[1])


class ForkServerTests(TestCase):
    """
    A fork server forks real children that boot, answer AMP and end as
    ordinary children do.
    """

    timeout = 60

    def setUp(self) -> None:
        self.server = ForkServer(reactor, child_environment())
        self.addCleanup(self.server.stop)

    def spawn(self, number: int = 0, sandbox: SandboxProfile | None = None) -> Child:
        self.server.start()
        profile = sandbox or SandboxProfile()
        child = spawn_child(
            reactor,
            number,
            env={},
            config={
                "max_result_size": 1 << 20,
                "max_reply_size": 1 << 20,
                "sandbox": profile.to_child_config(self.server.pid or 0),
                "fast_pipes": True,
                "preload": [],
            },
            on_protocol_error=self.fail,
            max_box_bytes=2 << 20,
            max_box_keys=1000,
            output_cap=10_000,
            spawner=self.server,
        )
        return child

    @defer.inlineCallbacks
    def test_forked_child_answers(self) -> Any:
        """
        A forked child answers a Ping with its own pid, which is the pid the
        template reported; it is the template's child, not the test's; SIGTERM
        ends it as it ends a spawned child, and signalling it afterwards says
        it is gone.
        """
        child = self.spawn()
        answer = yield child.amp.callRemote(Ping)
        self.assertEqual(answer["pid"], child.process.pid)
        self.assertEqual(_parent_of(answer["pid"]), self.server.pid)
        child.process.signalProcess(signal.SIGTERM)
        reason = yield child.ended
        self.assertIsInstance(reason, (error.ProcessDone, error.ProcessTerminated))
        self.assertRaises(
            error.ProcessExitedAlready, child.process.signalProcess, signal.SIGTERM
        )

    @defer.inlineCallbacks
    def test_many_children_at_once(self) -> Any:
        """
        Twenty children asked for at once all boot, each a process of its own.
        """
        children = [self.spawn(number) for number in range(20)]
        answers = yield defer.gatherResults(
            [child.amp.callRemote(Ping) for child in children]
        )
        self.assertEqual(len({answer["pid"] for answer in answers}), 20)
        for child in children:
            child.process.signalProcess(signal.SIGKILL)
        reasons = yield defer.gatherResults([child.ended for child in children])
        self.assertEqual(
            [reason.signal for reason in reasons], [signal.SIGKILL] * len(children)
        )

    @defer.inlineCallbacks
    def test_untrusted_sandbox_applies(self) -> Any:
        """
        A forked child applies the sandbox it is given, the parent-death signal
        against the template included.
        """
        child = self.spawn(sandbox=SandboxProfile.untrusted())
        answer = yield child.amp.callRemote(Ping)
        self.assertIn('"seccomp:exec": "applied"', answer["sandbox"])
        self.assertIn('"parent_death_signal": "applied"', answer["sandbox"])
        child.process.signalProcess(signal.SIGKILL)
        yield child.ended

    @defer.inlineCallbacks
    def test_children_die_with_the_template(self) -> Any:
        """
        When the template dies, its children die with it and end as killed;
        the next request starts a new template.
        """
        child = self.spawn()
        answer = yield child.amp.callRemote(Ping)
        template = self.server.pid
        assert template is not None
        os.kill(template, signal.SIGKILL)
        reason = yield child.ended
        self.assertEqual(reason.signal, signal.SIGKILL)
        for _ in range(200):  # the kernel's parent-death signal, then the reaper
            try:
                os.kill(answer["pid"], 0)
            except ProcessLookupError:
                break
            yield deferLater(reactor, 0.05, lambda: None)
        else:
            self.fail("the child outlived its template")
        again = self.spawn(1)
        answer = yield again.amp.callRemote(Ping)
        self.assertNotEqual(self.server.pid, template)
        again.process.signalProcess(signal.SIGKILL)
        yield again.ended
