"""
Fake children for unit tests of the local pool: a launcher (L{FakeChildren})
to pass as C{AmpoulePool(launcher=...)}, whose children are no processes but
objects a test drives by hand, on a L{twisted.internet.task.Clock}.

A fake child keeps the real part that matters to the parent: its spool is a
real spool file, written with the child's own L{SpoolWriter}, so the pool
reads it exactly as it reads a real child's.  What it leaves to the test is
everything a real child decides: when it answers its ping, when each
invocation starts and ends, whether it obeys SIGTERM, when it dies.
"""

from __future__ import annotations

import json
import signal
from collections.abc import Callable, Mapping
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.task import Clock
from twisted.python.failure import Failure

from actordispatch._core.errors import ChildEndedError
from actordispatch._core.sandbox import SandboxProfile
from actordispatch._local.child import Child, spool_file
from actordispatch._wire.commands import CheckHandler, Ping, RunBatch
from actordispatch.children.spool import SpoolWriter

#: The first pid a fake child gets.
FIRST_PID = 1000


class FakeAMP:
    """
    The parent's end of a fake child's AMP connection: it records each call,
    and the test answers them (L{FakeChild.answer}).
    """

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.calls: list[tuple[Any, dict[str, Any], Deferred[Any]]] = []

    def callRemote(self, command: Any, **arguments: Any) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        self.calls.append((command, arguments, d))
        return d


class FakeConnector:
    """
    The process protocol's part the pool uses: output allowances.
    """

    def __init__(self) -> None:
        self.resets = 0

    def reset_output(self) -> None:
        self.resets += 1


class FakeProcess:
    """
    The process transport's part the pool uses: signals, which the fake child
    obeys or not.
    """

    def __init__(self, child: FakeChild) -> None:
        self.child = child
        self.signals: list[int] = []

    def signalProcess(self, number: int) -> None:
        if self.child.exited:
            raise OSError("the process is gone")
        self.signals.append(number)
        if number == signal.SIGKILL or not self.child.ignores_term:
            self.child.clock.callLater(0, self.child.exit, signal=number)


class FakeChild:
    """
    One fake child process, driven by the test.

    @ivar ignores_term: whether SIGTERM leaves it running (a hung handler).
    @ivar exited: whether its "process" has ended.
    """

    def __init__(
        self,
        launcher: FakeChildren,
        number: int,
        config: Mapping[str, Any],
        on_protocol_error: Callable[[str], None],
        on_follow_up: Any,
    ) -> None:
        self.launcher = launcher
        self.clock = launcher.clock
        self.number = number
        self.pid = FIRST_PID + number
        self.config = config
        self.on_protocol_error = on_protocol_error
        self.on_follow_up = on_follow_up
        self.ignores_term = False
        self.exited = False
        self.amp = FakeAMP(self.pid)
        self.process = FakeProcess(self)
        self.connector = FakeConnector()
        self.ended: Deferred[Any] = Deferred()
        self.spool = spool_file()
        self.writer = SpoolWriter(self.spool.fileno(), initial_size=4096)
        self.child = Child(
            number,
            self.amp,  # type: ignore[arg-type]
            self.connector,  # type: ignore[arg-type]
            self.process,
            self.spool,
            self.ended,
        )

    # --- what the parent asked ---------------------------------------------------

    def pending(self, command: Any | None = None) -> list[tuple[Any, dict[str, Any]]]:
        """
        The calls not answered yet (of C{command}, if given).
        """
        return [
            (c, a)
            for c, a, d in self.amp.calls
            if not d.called and (command is None or c is command)
        ]

    def _call(self, command: Any) -> tuple[dict[str, Any], Deferred[Any]]:
        for c, arguments, d in self.amp.calls:
            if c is command and not d.called:
                return arguments, d
        raise AssertionError(f"no {command.__name__} call pending on child {self.pid}")

    def commands(self) -> list[str]:
        """
        The names of every command sent to this child, in order.
        """
        return [c.__name__ for c, _, _ in self.amp.calls]

    def batch(self) -> list[str]:
        """
        The handler names of the pending L{RunBatch}.
        """
        arguments, _ = self._call(RunBatch)
        return [handler for handler, _ in json.loads(arguments["batch"])]

    # --- what the child does -----------------------------------------------------

    def boot(self, report: Mapping[str, str] | None = None) -> None:
        """
        Answer the ping: booted, with every sandbox layer asked for applied.
        """
        if report is None:
            report = dict.fromkeys(self.launcher.layers, "applied")
        _, d = self._call(Ping)
        d.callback({"sandbox": json.dumps(dict(report))})

    def start_batch(self, started: float | None = None) -> None:
        """
        Note in the spool that the pending batch started (now, by default).
        """
        arguments, _ = self._call(RunBatch)
        when = self.clock.seconds() if started is None else started
        self.writer.start(arguments["seq"], when)

    def finish(self, record: Mapping[str, Any], ended: float | None = None) -> None:
        """
        Note in the spool that one more invocation finished with C{record}.
        """
        when = self.clock.seconds() if ended is None else ended
        self.writer.line(b"%r %s" % (when, json.dumps(dict(record)).encode()))

    def answer(self, records: list[Mapping[str, Any]], **extra: Any) -> None:
        """
        Answer the pending batch with C{records} (the spool is left as is).
        """
        _, d = self._call(RunBatch)
        d.callback({"records": json.dumps([dict(r) for r in records]).encode()})

    def run(self, values: list[Any], duration: float = 0.0) -> None:
        """
        Run the pending batch at once: each invocation returns its value.
        """
        records = [{"s": "ok", "v": value, "d": duration} for value in values]
        self.start_batch()
        for record in records:
            self.finish(record)
        self.answer(records)

    def check(self, error: Exception | None = None) -> None:
        """
        Answer the pending L{CheckHandler}: imported, or C{error}.
        """
        _, d = self._call(CheckHandler)
        if error is None:
            d.callback({"pid": self.pid})
        else:
            d.errback(error)

    def exit(self, code: int | None = None, signal: int | None = None) -> None:
        """
        The process ends: calls in flight fail as a real child's do, then its
        end is reported.
        """
        if self.exited:
            return
        self.exited = True
        ended = ChildEndedError(code, signal, self.pid)
        for _, _, d in self.amp.calls:
            if not d.called:
                d.errback(Failure(ended))
        if code == 0 and signal is None:
            self.ended.callback(ProcessDone(0))
        else:
            self.ended.callback(ProcessTerminated(code, signal))


class FakeChildren:
    """
    A launcher of fake children on C{clock}: pass it as the pool's
    C{launcher}.  Each child asked to shut down exits on the next turn.

    @ivar children: every fake child launched, in order.
    """

    def __init__(self, clock: Clock, profile: SandboxProfile | None = None) -> None:
        self.clock = clock
        self.layers = (profile or SandboxProfile()).layer_names()
        self.children: list[FakeChild] = []

    def now(self) -> float:
        return self.clock.seconds()

    def stop(self) -> Deferred[None]:
        self.stopped = True
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
        on_follow_up: Any = None,
    ) -> Child:
        fake = FakeChild(self, number, config, on_protocol_error, on_follow_up)
        original = fake.amp.callRemote

        def call(command: Any, **arguments: Any) -> Deferred[Any]:
            d = original(command, **arguments)
            if command.__name__ == "Shutdown":
                self.clock.callLater(0, fake.exit, 0)
            return d

        fake.amp.callRemote = call  # type: ignore[method-assign]
        self.children.append(fake)
        return fake.child

    def alive(self) -> list[FakeChild]:
        """
        The fake children whose process has not ended.
        """
        return [c for c in self.children if not c.exited]

    def by_pid(self, pid: int | None) -> FakeChild:
        """
        The fake child with this pid.
        """
        return next(c for c in self.children if c.pid == pid)
