"""
The parent's side of the fork server (see L{actordispatch.children.forkserver}):
a template process that forks fresh children in a few milliseconds, for pools
whose isolation gives every invocation a new process.

L{ForkServer.spawnProcess} has the signature of
C{IReactorProcess.spawnProcess}, so the code that spawns children takes either
the reactor or a fork server.  It returns a L{ForkedProcess}: a process
transport like the reactor's, whose pipes the parent made and whose pid,
signals (through a pidfd, never a pid that may have been reused) and exit
status come from the template.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import socket
import sys
from collections.abc import Callable, Mapping, Sequence
from time import monotonic
from typing import Any

from attrs import define, field
from twisted.internet import error, process
from twisted.internet.defer import Deferred, succeed
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from actordispatch._local.child import (
    SEARCH_CWD_LAST,
    Child,
    FollowUpSink,
    spawn_child,
)

_log = Logger()

#: How the template starts: its entry point, with the parent's pid.
TEMPLATE_BOOTSTRAP = (
    SEARCH_CWD_LAST + "from actordispatch.children.forkserver import main; main()"
)
#: The descriptors every forked child gets (see the template's C{CHILD_FDS}).
CHILD_FDS = 6
#: The template's end of the control socket.
CONTROL_FD = 3
#: The largest answer from the template.
MAX_ANSWER = 64 * 1024


class ForkServerError(Exception):
    """
    The template could not fork a child, or is gone.
    """


class ForkedProcess(process.Process):
    """
    A child forked by the template: the reactor's own process transport
    (pipes, output, C{processEnded}), except that the template, not this
    process, reaps it and reports how it ended, and that signals go through a
    pidfd.
    """

    def __init__(
        self,
        reactor: Any,
        protocol: Any,
        child_fds: Mapping[int, str | int],
    ) -> None:
        # Not Process.__init__: that forks.  What it sets up, we set up here.
        self._reactor = reactor
        process._BaseProcess.__init__(self, protocol)
        self.pipes: dict[int, Any] = {}
        self.status = None  # type: ignore[assignment]
        self.lostProcess = 0
        self.pid = None
        self.pidfd: int | None = None
        self.pid_known: list[Callable[[int], None]] = []
        self.for_child: list[int] = []
        for number in range(CHILD_FDS):
            kind = child_fds.get(number)
            if isinstance(kind, int):
                self.for_child.append(os.dup(kind))
                continue
            read, write = os.pipe()
            if kind == "w":
                self.for_child.append(read)
                self.pipes[number] = process.ProcessWriter(reactor, self, number, write)
            elif kind == "r":
                self.for_child.append(write)
                self.pipes[number] = process.ProcessReader(reactor, self, number, read)
            else:
                os.close(write)
                self.for_child.append(read)  # nothing to say: EOF at once

    def close_child_ends(self) -> None:
        """
        Close the child's ends of its pipes here (the template has its own).
        """
        for fd in self.for_child:
            os.close(fd)
        self.for_child = []

    def forked(self, pid: int, pidfd: int) -> None:
        """
        The template forked this child.
        """
        self.pid, self.pidfd = pid, pidfd
        for tell in self.pid_known:
            tell(pid)

    def ended(self, code: int | None, signal_number: int | None) -> None:
        """
        The template reaped this child: it exited with C{code}, or was killed by
        C{signal_number}.
        """
        if self.pidfd is not None:
            os.close(self.pidfd)
            self.pidfd = None
        status = (code or 0) << 8 if signal_number is None else signal_number
        self.processEnded(status)

    def reapProcess(self) -> None:
        # The template reaps its children and tells us (see ended).
        pass

    def signalProcess(self, signalID: Any) -> None:
        if signalID in ("HUP", "STOP", "INT", "KILL", "TERM"):
            signalID = getattr(signal, f"SIG{signalID}")
        if self.pidfd is None:
            if self.lostProcess:
                raise error.ProcessExitedAlready()
            # Not forked yet: remember to kill it when it is.
            self.pid_known.append(
                lambda pid: self.signalProcess(signalID)  # noqa: ARG005
            )
            return
        try:
            signal.pidfd_send_signal(self.pidfd, signalID)
        except ProcessLookupError:
            raise error.ProcessExitedAlready() from None


class _TemplateOutput(ProcessProtocol):
    """
    What the template itself writes (it should write nothing but a traceback
    when it fails) goes to the log; its end, to the fork server.
    """

    def __init__(self, on_ended: Callable[[Failure], None]) -> None:
        self._on_ended = on_ended

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        for line in data.splitlines():
            _log.warn("fork server says: {line}", line=line.decode("utf-8", "replace"))

    def processEnded(self, reason: Failure) -> None:
        self._on_ended(reason)


@define(eq=False)
class ForkServer:
    """
    A template process that forks children on request.  Start it with
    L{start} (or let the first L{spawnProcess} start it) and end it with
    L{stop}; a template that dies is started again on the next request, and
    the children it had end (they die with it) as crashed.

    @ivar env: the template's environment, which every child it forks has:
        the C{env} given to L{spawnProcess} is ignored.
    """

    reactor: Any
    env: Mapping[str, str]
    #: mount a private /proc (hidepid=ptraceable) once, in the template, for
    #: the children's hide_processes layer (see L{actordispatch.children.sandbox})
    private_proc: bool = False
    _control: socket.socket | None = field(default=None, init=False)
    _template: Any = field(default=None, init=False)
    _ids: Any = field(factory=itertools.count, init=False)
    _forking: dict[int, ForkedProcess] = field(factory=dict, init=False)
    _running: dict[int, ForkedProcess] = field(factory=dict, init=False)
    _outbox: list[tuple[bytes, list[int], ForkedProcess]] = field(
        factory=list, init=False
    )
    _writing: bool = field(default=False, init=False)
    _stopped: list[Deferred[None]] = field(factory=list, init=False)

    @property
    def pid(self) -> int | None:
        """
        The template's pid, while it runs.
        """
        return None if self._template is None else self._template.pid

    def start(self) -> None:
        """
        Start the template, unless it runs.
        """
        if self._control is not None:
            return
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            output = _TemplateOutput(lambda reason: self._template_ended(template))
            self._template = template = self.reactor.spawnProcess(
                output,
                sys.executable,
                [
                    sys.executable,
                    "-c",
                    TEMPLATE_BOOTSTRAP,
                    str(os.getpid()),
                    *(["--private-proc"] if self.private_proc else []),
                ],
                env=dict(self.env),
                childFDs={0: "w", 1: "r", 2: "r", CONTROL_FD: theirs.fileno()},
            )
        finally:
            theirs.close()
        self._template.closeStdin()
        ours.setblocking(False)
        self._control = ours
        self.reactor.addReader(self)

    def stop(self) -> Deferred[None]:
        """
        End the template (closing its control socket ends it); the children it
        forked die with it.

        @return: fires when the template has ended.
        """
        ended: Deferred[None] = Deferred()
        if self._template is None:
            ended.callback(None)
        else:
            self._stopped.append(ended)
        if self._control is not None:
            self._lost("the fork server was stopped")
        return ended

    def spawnProcess(
        self,
        processProtocol: Any,
        executable: str,
        args: Sequence[str],
        env: Mapping[str, str] | None = None,
        path: str | None = None,
        uid: int | None = None,
        gid: int | None = None,
        usePTY: bool = False,
        childFDs: Mapping[int, str | int] | None = None,
    ) -> ForkedProcess:
        """
        Fork a child that runs C{args[3:]} as the arguments of
        L{actordispatch.children.main.main} (C{args} are those of a child
        started as C{python -c BOOTSTRAP ...}), with descriptors 0 to 5 as
        C{childFDs} says.
        """
        if usePTY or path is not None or uid is not None or gid is not None:
            raise ValueError("a fork server takes no pty, path, uid or gid")
        fds = dict(childFDs or {0: "w", 1: "r", 2: "r"})
        if set(fds) - set(range(CHILD_FDS)):
            raise ValueError(f"a forked child has descriptors 0 to {CHILD_FDS - 1}")
        self.start()
        forked = ForkedProcess(self.reactor, processProtocol, fds)
        ident = next(self._ids)
        self._forking[ident] = forked
        request = json.dumps({"id": ident, "argv": list(args[3:])}).encode()
        self._outbox.append((request, forked.for_child, forked))
        self._flush()
        processProtocol.makeConnection(forked)
        return forked

    # --- the control socket, as a reader and a writer of the reactor ---------------

    def fileno(self) -> int:
        return -1 if self._control is None else self._control.fileno()

    def logPrefix(self) -> str:
        return "ForkServer"

    def connectionLost(self, reason: Failure) -> None:
        if self._control is not None:
            self._lost("the fork server's control socket was lost")

    def _flush(self) -> None:
        while self._outbox and self._control is not None:
            request, fds, forked = self._outbox[0]
            try:
                socket.send_fds(self._control, [request], fds)
            except BlockingIOError:
                if not self._writing:
                    self._writing = True
                    self.reactor.addWriter(self)
                return
            except OSError as failure:
                self._lost(f"cannot reach the fork server: {failure}")
                return
            self._outbox.pop(0)
            forked.close_child_ends()
        if self._writing:
            self._writing = False
            self.reactor.removeWriter(self)

    def doWrite(self) -> None:
        self._flush()

    def doRead(self) -> None:
        while self._control is not None:
            try:
                data, fds, _, _ = socket.recv_fds(self._control, MAX_ANSWER, 1)
            except BlockingIOError:
                return
            except OSError as failure:
                self._lost(f"the fork server's socket failed: {failure}")
                return
            if not data:
                self._lost("the fork server ended")
                return
            self._answer(data, fds)

    def _answer(self, data: bytes, fds: list[int]) -> None:
        try:
            answer = json.loads(data)
        except ValueError:
            answer = {}
        if "id" in answer:
            forked = self._forking.pop(answer["id"], None)
            if forked is None:
                for fd in fds:
                    os.close(fd)
                return
            if "pid" in answer and fds:
                self._running[answer["pid"]] = forked
                forked.forked(answer["pid"], fds[0])
            else:
                for fd in fds:
                    os.close(fd)
                _log.error(
                    "the fork server could not fork: {why}", why=answer.get("error")
                )
                forked.ended(None, signal.SIGKILL)
            return
        forked = self._running.pop(answer.get("pid"), None)
        if forked is not None:
            forked.ended(answer.get("code"), answer.get("signal"))

    def _lost(self, why: str) -> None:
        control, self._control = self._control, None
        if control is None:
            return
        if self._writing:
            self._writing = False
            self.reactor.removeWriter(self)
        self.reactor.removeReader(self)
        control.close()
        for _, _, forked in self._outbox:
            forked.close_child_ends()
        self._outbox.clear()
        # Its children die with it: say so for each, once its pipes close.
        waiting = [*self._forking.values(), *self._running.values()]
        self._forking.clear()
        self._running.clear()
        for forked in waiting:
            try:
                forked.signalProcess(signal.SIGKILL)
            except (error.ProcessExitedAlready, OSError):
                pass
            forked.ended(None, signal.SIGKILL)
        if waiting:
            _log.warn(
                "{why}: {count} children ended with it", why=why, count=len(waiting)
            )

    def _template_ended(self, template: Any) -> None:
        if template is not self._template:
            return  # an earlier template, replaced already
        self._template = None
        if self._control is not None:
            self._lost("the fork server died")
        stopped, self._stopped = self._stopped, []
        for ended in stopped:
            ended.callback(None)


@define(eq=False)
class ForkServerLauncher:
    """
    A pool's children forked by a L{ForkServer} (started on the first child,
    stopped with L{stop}): a fresh child in a few milliseconds, which is what
    makes C{isolation="invocation"} (a new process per invocation) and the
    replacements of C{isolation="handler"} affordable.
    """

    _server: ForkServer | None = field(default=None, init=False)

    def now(self) -> float:
        return monotonic()

    def spawn(
        self,
        reactor: Any,
        number: int,
        *,
        env: Mapping[str, str],
        config: Mapping[str, Any],
        on_protocol_error: Callable[[str], None],
        max_box_bytes: int,
        max_box_keys: int,
        output_cap: int,
        on_follow_up: FollowUpSink | None = None,
    ) -> Child:
        sandbox = dict(config.get("sandbox") or {})
        if self._server is None:
            self._server = ForkServer(
                reactor,
                env,
                private_proc=os.geteuid() == 0 and bool(sandbox.get("hide_processes")),
            )
        server = self._server
        server.start()
        if "parent_pid" in sandbox:
            # The child's parent is the template, which dies with us.
            sandbox["parent_pid"] = server.pid
        if server.private_proc:
            sandbox["private_proc_mounted"] = True
        child = spawn_child(
            reactor,
            number,
            env=env,
            config=dict(config, sandbox=sandbox),
            on_protocol_error=on_protocol_error,
            max_box_bytes=max_box_bytes,
            max_box_keys=max_box_keys,
            output_cap=output_cap,
            on_follow_up=on_follow_up,
            spawner=server,
        )
        forked: ForkedProcess = child.process
        forked.pid_known.append(lambda pid: setattr(child.amp, "pid", pid))
        return child

    def stop(self) -> Deferred[None]:
        """
        End the template (once the pool's children have ended).
        """
        server, self._server = self._server, None
        if server is None:
            return succeed(None)
        return server.stop()
