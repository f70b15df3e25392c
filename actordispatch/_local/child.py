"""
One child process, as the parent sees it.

A L{Child} is spawned with ampoule's conventions (AMP on descriptors 3 and 4, an
C{AMPChild} subclass on the other side; L{ChildConnector} is the process
protocol, our own, so that the parent side never imports ampoule, whose modules
import the global reactor) plus two things of ours:

 - a I{spool}: a memory file (C{memfd}) passed as descriptor 5, where the child
   notes when each batch and each invocation starts and what each finished
   invocation returned (see L{actordispatch.children.spool}).  The parent reads it only
   when it
   must: to time the invocation that is running now, and to keep the outcomes of
   the invocations that finished when the child dies mid-batch;
 - a hardened AMP connection, L{ChildAMP}: a child is not trusted, so boxes are
   capped in size and key count, boxes the protocol never expects from a child
   (answers to nothing, any command but L{FireFollowUp}) and malformed frames
   drop it, and so does a frame left half-sent for C{frame_timeout} seconds.

The child's stdout and stderr are read continuously (a child never blocks on
them) and relayed to the log, capped per batch.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from collections.abc import Callable, Mapping
from time import monotonic
from typing import IO, Any, Protocol

from attrs import define, field, frozen
from twisted.internet.defer import Deferred, succeed
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger
from twisted.protocols import amp
from twisted.python.failure import Failure

from actordispatch._core.errors import ChildEndedError, ProtocolError
from actordispatch._core.sandbox import missing_layers
from actordispatch._local.lifecycle import ChildState
from actordispatch._wire.commands import FireFollowUp
from actordispatch._wire.guarded import GuardedAMP
from actordispatch._wire.pipes import read_more, widen, write_now

_log = Logger()

#: Every bootstrap starts so: the current directory (where handler modules are
#: often found) is searched last, so a source checkout there cannot shadow the
#: installed package.
SEARCH_CWD_LAST = (
    "import sys; sys.path[:] = [*sys.path[1:], sys.path[0]] if sys.path[:1] == ['']"
    " else sys.path; "
)
#: The child's bootstrap: our own entry point (see L{actordispatch.children.main}).
CHILD_BOOTSTRAP = (
    SEARCH_CWD_LAST + "from actordispatch.children.main import main; main()"
)
#: The AMP child class the children run.
CHILD_CLASS = "actordispatch.children.host.HandlerHost"
#: The child's descriptors of the AMP pipes from and to the parent (ampoule's).
TO_CHILD = 3
FROM_CHILD = 4
#: The child's descriptor for the spool.
SPOOL_FD = 5
#: The reactor the children run.
CHILD_REACTOR = "poll"


def child_environment(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """
    The explicit environment of a child: C{PYTHONPATH} from the parent's
    C{sys.path} and C{extra}; nothing else is inherited.
    """
    paths = [p or os.getcwd() for p in sys.path]
    env = {"PYTHONPATH": os.pathsep.join(dict.fromkeys(paths))}
    env.update(extra or {})
    return env


#: What a child's L{FireFollowUp} is handed to: called with the command's
#: arguments, it answers as the command's responder does.
FollowUpSink = Callable[..., "Deferred[dict[str, Any]]"]


class ChildAMP(GuardedAMP):
    """
    The parent's end of one child's AMP connection, hardened against a child
    that lies (see L{GuardedAMP}).  A child answers; the one command it may
    send is L{FireFollowUp}, handed to C{on_follow_up}: any other command
    breaks the protocol.

    @ivar pid: the child's pid.
    """

    pid: int | None = None

    def __init__(
        self,
        reactor: Any,
        on_protocol_error: Callable[[str], None],
        max_box_bytes: int,
        max_box_keys: int,
        frame_timeout: float = 1.0,
        on_follow_up: FollowUpSink | None = None,
    ) -> None:
        super().__init__(
            reactor,
            max_box_bytes=max_box_bytes,
            max_box_keys=max_box_keys,
            frame_timeout=frame_timeout,
        )
        self._on_protocol_error = on_protocol_error
        self._on_follow_up = on_follow_up

    @FireFollowUp.responder
    def fire_follow_up(self, **arguments: Any) -> Deferred[dict[str, Any]]:
        assert self._on_follow_up is not None  # ampBoxReceived checked it
        return self._on_follow_up(**arguments)

    def makeConnection(self, transport: Any) -> None:
        process = getattr(transport, "transport", None)
        self.pid = getattr(process, "pid", None)
        super().makeConnection(transport)

    def ampBoxReceived(self, box: amp.AmpBox) -> None:
        if amp.COMMAND in box and not (
            box[amp.COMMAND] == FireFollowUp.commandName
            and self._on_follow_up is not None
        ):
            raise ProtocolError(
                f"a command from the child ({box[amp.COMMAND][:100]!r}): children "
                "only answer"
            )
        super().ampBoxReceived(box)

    def protocol_broken(self, message: str) -> None:
        # The pool kills the child: its process ending closes the connection.
        _log.error(
            "child {pid} broke the protocol: {message}", pid=self.pid, message=message
        )
        self._on_protocol_error(message)

    def connectionLost(self, reason: Failure) -> None:  # type: ignore[override]
        value = reason.value
        ended = ChildEndedError(
            getattr(value, "exitCode", None), getattr(value, "signal", None), self.pid
        )
        super().connectionLost(Failure(ended))


class ChildConnector(ProcessProtocol):
    """
    The process protocol of a child: the transport of its L{ChildAMP} (AMP
    written to the child's descriptor 3, read from its descriptor 4), with
    the child's stdout and stderr relayed to the log line by line, at most
    C{output_cap} bytes per batch (the rest counted).

    @ivar finished: fires with the reason the process ended.
    """

    disconnecting = False

    def __init__(self, proto: ChildAMP, name: int, output_cap: int) -> None:
        self.amp = proto
        self.name = name
        self.finished: Deferred[Any] = Deferred()
        self.output_cap = output_cap
        self.logged = 0
        self.dropped = 0

    def connectionMade(self) -> None:
        self.amp.makeConnection(self)

    def write(self, data: bytes) -> None:
        # At once, not on the reactor's next turn (see _pipes).
        process: Any = self.transport
        writer = process.pipes.get(TO_CHILD)
        if writer is None:
            return  # the pipe is closed: the child is going
        write_now(writer, data)

    def loseConnection(self) -> None:
        process: Any = self.transport
        process.closeChildFD(TO_CHILD)
        process.closeChildFD(FROM_CHILD)
        process.loseConnection()

    def getPeer(self) -> tuple[str, ...]:
        return ("subprocess",)

    def getHost(self) -> tuple[str, ...]:
        return ("no host",)

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        if childFD == FROM_CHILD:
            self.amp.dataReceived(data)
        else:
            self.errReceived(data)

    def errReceived(self, data: bytes) -> None:
        room = self.output_cap - self.logged
        if room <= 0:
            self.dropped += len(data)
            return
        shown, self.dropped = data[:room], self.dropped + max(0, len(data) - room)
        self.logged += len(shown)
        for line in shown.splitlines():
            _log.info(
                "child {pid} says: {line}",
                pid=self.amp.pid,
                line=line.decode("utf-8", "replace"),
            )

    def reset_output(self) -> None:
        """
        Start a new batch's allowance, reporting what the last one dropped.
        """
        if self.dropped:
            _log.warn(
                "child {pid} wrote {dropped} more bytes of output, not logged",
                pid=self.amp.pid,
                dropped=self.dropped,
            )
        self.logged = self.dropped = 0

    def processEnded(self, status: Failure) -> None:
        self.amp.connectionLost(status)
        self.finished.callback(status.value)


@define(eq=False)
class SpoolView:
    """
    What a child's spool says about the batch numbered C{seq}.

    @ivar started: when the batch started (monotonic seconds), or C{None} if the
        child has not started it.
    @ivar records: C{(end time, record bytes)} for each invocation that finished.
    """

    started: float | None
    records: list[tuple[float, bytes]]


@define(eq=False)
class Child:
    """
    A live (or dying) child process and what the pool knows of it.

    @ivar state: where it is in its life (see L{actordispatch._local.lifecycle});
        change it only with L{transition}.
    """

    number: int
    amp: ChildAMP
    connector: ChildConnector
    process: Any
    spool: IO[bytes]
    ended: Deferred[Any]
    state: ChildState = ChildState.BOOTING
    calls: int = 0
    work: Any = None
    kill_call: Any = None
    #: follow-up events fired by its current batch and not finished yet
    follow_ups: int = 0
    #: of those, how many its handler waits for (the child is then parked)
    waits: int = 0
    sandbox: dict[str, str] = field(factory=dict)
    #: under a trust-domain isolation, the one handler this child serves
    #: (set when it first gets work for a handler; never changed after)
    owner: str | None = None

    @property
    def pid(self) -> int | None:
        return self.amp.pid

    def read_sandbox_report(
        self, report: str | None, expected: tuple[str, ...]
    ) -> None:
        """
        Keep the sandbox layers the child reports (JSON: layer to
        C{"applied"} or why not), and say loudly, every time, which of the
        C{expected} ones are not in force.
        """
        try:
            self.sandbox = dict(json.loads(report or "{}"))
        except ValueError:
            self.sandbox = {}
        missing = missing_layers(self.sandbox, expected=expected)
        if missing:
            _log.critical(
                "child {pid}: sandbox layers NOT in force: {missing}",
                pid=self.pid,
                missing={
                    name: self.sandbox.get(name, "not reported") for name in missing
                },
            )

    def signal(self, signal_number: int) -> None:
        """
        Send C{signal_number} to the child, unless it is gone already.
        """
        try:
            self.process.signalProcess(signal_number)
        except Exception:
            pass

    def read_spool(self, seq: int, cap: int) -> SpoolView:
        """
        Read the spool (at most C{cap} bytes) for batch C{seq}.  Lines that do not
        parse, or a header for another batch, count as nothing written.
        """
        data = os.pread(self.spool.fileno(), cap, 0)
        written = data.find(b"\0")
        if written >= 0:
            data = data[:written]  # zeros: nothing was written there
        lines = data.split(b"\n")
        if len(lines) < 2:
            return SpoolView(None, [])
        try:
            head_seq, head_started = lines[0].split(b" ", 1)
            if int(head_seq) != seq:
                return SpoolView(None, [])
            started = float(head_started)
        except ValueError:
            return SpoolView(None, [])
        records = []
        for line in lines[1:-1]:  # the last piece is unterminated: not finished
            end, _, record = line.partition(b" ")
            try:
                records.append((float(end), record))
            except ValueError:
                break
        return SpoolView(started, records)


def spool_file() -> IO[bytes]:
    """
    A new, empty spool: a memory file where there are memfds (the child maps
    it), else an unlinked temporary file.
    """
    try:
        fd = os.memfd_create("actordispatch-spool", os.MFD_CLOEXEC)
    except (AttributeError, OSError):
        return tempfile.TemporaryFile(prefix="actordispatch-spool-")
    return open(fd, "r+b", buffering=0)


def spawn_child(
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
    spawner: Any = None,
) -> Child:
    """
    Start one child process; it boots in the background.
    """
    spool = spool_file()
    protocol = ChildAMP(
        reactor,
        on_protocol_error,
        max_box_bytes,
        max_box_keys,
        on_follow_up=on_follow_up,
    )
    connector = ChildConnector(protocol, number, output_cap)
    child_config = dict(config, spool_fd=SPOOL_FD)
    args = [
        sys.executable,
        "-c",
        CHILD_BOOTSTRAP,
        json.dumps(child_config),
        CHILD_REACTOR,
        CHILD_CLASS,
    ]
    process = (spawner or reactor).spawnProcess(
        connector,
        sys.executable,
        args,
        env=dict(env),
        childFDs={0: "w", 1: "r", 2: "r", 3: "w", 4: "r", SPOOL_FD: spool.fileno()},
    )
    process.closeStdin()
    for fd in (TO_CHILD, FROM_CHILD):
        pipe = process.pipes.get(fd)
        if pipe is not None:
            widen(pipe.fileno())
    reply = process.pipes.get(FROM_CHILD)
    if reply is not None:
        read_more(reply)
    return Child(number, protocol, connector, process, spool, connector.finished)


class ChildLauncher(Protocol):
    """
    How a pool gets its children, and the clock their spools speak: the seam
    that lets the pool's supervision be driven by fake children (and a
    C{twisted.internet.task.Clock}) in unit tests, real ampoule children
    everywhere else.
    """

    def now(self) -> float:
        """
        The time now, on the clock the children write their spools with.
        """

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
        """
        Start one child; it boots in the background (see L{spawn_child}).
        """

    def stop(self) -> Deferred[None]:
        """
        Release what the launcher holds, once the pool's children have ended.
        """


@frozen
class AmpouleLauncher:
    """
    The real thing: children are processes started by L{spawn_child}, and
    their spools are in C{time.monotonic} seconds (C{CLOCK_MONOTONIC} is one
    clock for every process of the machine).
    """

    def now(self) -> float:
        return monotonic()

    def stop(self) -> Deferred[None]:
        """
        Nothing to stop: the children are the reactor's.
        """
        return succeed(None)

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
        return spawn_child(
            reactor,
            number,
            env=env,
            config=config,
            on_protocol_error=on_protocol_error,
            max_box_bytes=max_box_bytes,
            max_box_keys=max_box_keys,
            output_cap=output_cap,
            on_follow_up=on_follow_up,
        )
