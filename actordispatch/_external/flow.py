"""
Flow control for the AMP endpoint: what a peer that does not read its answers,
or sends commands faster than they are answered, may cost.

L{FlowControlledAMP} is its transport's producer (Twisted's producer/consumer
flow control): while the answers it writes fill the transport's buffer, it
reads nothing more from the peer.  At most C{max_commands} of the peer's
commands are answered at once; later ones are held unanswered, in order, and
past L{MAX_HELD_BYTES} of them the peer is not read either.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from twisted.protocols import amp
from twisted.python.failure import Failure
from zope.interface import implementer

from actordispatch._wire.guarded import GuardedAMP

__all__ = ["MAX_HELD_BYTES", "FlowControlledAMP"]

_log = Logger()

#: Beyond this many bytes of commands held (see
#: L{DispatcherAMPFactory}'s C{max_commands_per_connection}), the peer is not
#: read until some are answered.
MAX_HELD_BYTES = 1024 * 1024


def _box_size(box: amp.AmpBox) -> int:
    return sum(len(key) + len(value) for key, value in box.items())


@implementer(IPushProducer)
class FlowControlledAMP(GuardedAMP):
    """
    A L{GuardedAMP} that bounds what its peer's unanswered commands cost.

    It is its transport's producer: when the answers it writes fill the
    transport's buffer (the peer does not read them), the transport pauses
    it, and it stops reading from the peer until the buffer drains.  At most
    C{max_commands} of the peer's commands are answered at once (running, or
    answered while the buffer is full); later ones are held unanswered, in
    order, and past L{MAX_HELD_BYTES} of them the peer is not read either.
    A command for which L{never_held} says so is never held.

    A command whose arguments do not parse is answered C{BAD_REQUEST}, and
    the peer dropped.

    @param max_commands: commands answered at once.
    """

    def __init__(
        self,
        reactor: Any,
        *,
        max_commands: int,
        max_box_bytes: int,
        max_box_keys: int,
        frame_timeout: float,
    ) -> None:
        super().__init__(
            reactor,
            max_box_bytes=max_box_bytes,
            max_box_keys=max_box_keys,
            frame_timeout=frame_timeout,
        )
        self._max_commands = max_commands
        #: what the peer is called in logs
        self.peer_address = "?"
        # Commands dispatched and not answered yet, answers written while the
        # transport's buffer was full, commands held (with their sizes), and
        # why reading stopped.
        self._commands = 0
        self._unsent = 0
        self._held: deque[tuple[amp.AmpBox, int]] = deque()
        self._held_bytes = 0
        self._running_held = False
        self._writes_full = False
        self._stopped = False
        self._receiving = 0

    def never_held(self, box: amp.AmpBox) -> bool:
        """
        Whether command C{box} must be answered now, however many others
        are: none, here.
        """
        return False

    def dataReceived(self, data: bytes) -> None:
        self._receiving += 1
        try:
            super().dataReceived(data)
        finally:
            self._receiving -= 1

    def stop_answering(self) -> None:
        """
        The connection is going: held commands are never answered, and
        nothing more is read.
        """
        self._stopped = True
        self._held.clear()
        self._held_bytes = 0

    # --- IPushProducer -------------------------------------------------------------

    def pauseProducing(self) -> None:
        """
        The transport's buffer is full (the peer is not reading its answers):
        read nothing more from it until the buffer drains.
        """
        self._writes_full = True
        self._update_reading()

    def resumeProducing(self) -> None:
        """
        The transport's buffer drained: the answers written meanwhile went
        out.  Answer held commands, and read again.
        """
        self._writes_full = False
        self._unsent = 0
        self._run_held()
        self._update_reading()

    def stopProducing(self) -> None:
        """
        The connection is going: nothing more is read or answered.
        """
        self.stop_answering()
        self.paused = True

    # --- reading and holding -------------------------------------------------------

    def _update_reading(self) -> None:
        """
        Stop or resume reading from the peer, as the transport's buffer and
        the commands held say.
        """
        stop = self._writes_full or self._held_bytes >= MAX_HELD_BYTES or self._stopped
        if stop == self.paused or self.transport is None:
            return
        self.paused = stop
        transport: Any = self.transport
        if stop:
            transport.pauseProducing()
            self._cancel_stall()
            return
        transport.resumeProducing()
        if not self._receiving:
            # Boxes already read but not parsed; from inside dataReceived,
            # its own loop goes on with them.
            self.dataReceived(b"")

    def _busy(self) -> bool:
        return self._commands + self._unsent >= self._max_commands

    def ampBoxReceived(self, box: amp.AmpBox) -> None:
        # A command as AMP sees it: a box with an answer's or error's key is
        # one of those, whatever else it has.
        command = amp.COMMAND in box and amp.ANSWER not in box and amp.ERROR not in box
        if command and (self._held or self._busy()) and not self.broken:
            if self.never_held(box):
                super().ampBoxReceived(box)
                return
            size = _box_size(box)
            self._held.append((box, size))
            self._held_bytes += size
            self._update_reading()
            return
        super().ampBoxReceived(box)

    def _run_held(self) -> None:
        """
        Answer held commands while there is room.
        """
        if self._running_held:
            return  # the loop below goes on
        self._running_held = True
        try:
            while (
                self._held
                and not self._busy()
                and not self._stopped
                and not self.broken
            ):
                box, size = self._held.popleft()
                self._held_bytes -= size
                try:
                    super().ampBoxReceived(box)
                except Exception as e:
                    # As GuardedAMP.dataReceived does for the boxes it reads.
                    self._broken(f"{type(e).__name__}: {e}" if str(e) else repr(e))
        finally:
            self._running_held = False
        self._update_reading()

    # --- answering -----------------------------------------------------------------

    def sendBox(self, box: amp.AmpBox) -> None:
        try:
            super().sendBox(box)
        finally:
            if amp.ANSWER in box or amp.ERROR in box:
                self._answered()

    def _answered(self) -> None:
        self._commands -= 1
        if self._writes_full:
            self._unsent += 1
        self._run_held()

    def dispatchCommand(self, box: amp.AmpBox) -> Deferred[Any]:
        # A command whose arguments do not parse fails outside our responders:
        # answer BAD_REQUEST and close, rather than AMP's anonymous UNKNOWN.
        def bad_request(reason: Failure) -> Failure:
            if reason.check(amp.RemoteAmpError):
                return reason
            message = f"{reason.type.__name__}: {reason.getErrorMessage()}"  # type: ignore[union-attr]
            _log.warn(
                "external process at {peer}: bad {command} command: {error}",
                peer=self.peer_address,
                command=box.get(amp.COMMAND, b"?")[:100],
                error=message,
            )
            return Failure(
                amp.RemoteAmpError(b"BAD_REQUEST", message[:1000], fatal=True)
            )

        self._commands += 1
        result: Deferred[Any] = super().dispatchCommand(box)
        result.addErrback(bad_request)
        if amp.ASK not in box:
            # No answer will be sent: it is done when it is.
            result.addBoth(self._no_answer)
        return result

    def _no_answer(self, result: Any) -> None:
        # A command sent without _ask: its failure has no one to go to (AMP
        # would log it as unhandled, with a traceback, and drop the peer).
        # One whose arguments do not parse still drops the peer, as answered
        # BAD_REQUEST does.
        self._commands -= 1
        if isinstance(result, Failure):
            value = result.value
            if isinstance(value, amp.RemoteAmpError) and value.fatal:
                self._broken(f"a command that does not parse: {value.description}")
                return
        self._run_held()
