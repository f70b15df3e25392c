"""
AMP hardened against a peer that is not trusted: L{GuardedAMP}.

Both of our untrusted peers use it: a child process (L{actordispatch._local.child}) and
an external process connected to the dispatcher's AMP endpoint
(L{actordispatch._external.server}).  AMP itself bounds a key to 255 bytes and a value
to 64 KiB, but not how many keys a box has, so a peer could make us buffer a box
of any size; nor does it notice a frame left half-sent.  Here each box is capped
in bytes and keys, any exception while parsing what the peer sent (a malformed
frame, an answer to a question never asked, a box over a cap) marks the
connection broken, and so does a frame left incomplete for C{frame_timeout}
seconds.  What "broken" then means is the subclass's choice
(L{GuardedAMP.protocol_broken}): kill the child, or drop the connection.
"""

from __future__ import annotations

from typing import Any

from twisted.protocols import amp
from twisted.python.failure import Failure

from actordispatch._core.errors import ProtocolError


class GuardedAMP(amp.AMP):
    """
    An AMP connection that caps what its peer sends and stops reading from it
    at the first protocol error.

    @ivar broken: set once the peer broke the protocol; nothing it sends after
        that is read.
    """

    def __init__(
        self,
        reactor: Any,
        *,
        max_box_bytes: int,
        max_box_keys: int,
        frame_timeout: float,
        locator: Any = None,
    ) -> None:
        super().__init__(locator=locator)
        self._reactor = reactor
        self._max_box_bytes = max_box_bytes
        self._max_box_keys = max_box_keys
        self._frame_timeout = frame_timeout
        self._box_bytes = 0
        self._box_keys = 0
        self._stall: Any = None
        self.broken = False

    def protocol_broken(self, message: str) -> None:
        """
        Called once, when the peer broke the protocol (C{message} says how).
        Subclasses decide what happens to the peer; by default its connection
        is aborted.
        """
        transport: Any = self.transport
        if transport is not None:
            transport.abortConnection()

    # --- caps on what the peer may send --------------------------------------------

    def proto_key(self, string: bytes) -> str:
        if string:
            self._box_keys += 1
            if self._box_keys > self._max_box_keys:
                raise ProtocolError(f"a box with over {self._max_box_keys} keys")
        else:
            self._box_keys = self._box_bytes = 0
        return super().proto_key(string)

    def proto_value(self, string: bytes) -> str:
        self._box_bytes += len(string)
        if self._box_bytes > self._max_box_bytes:
            raise ProtocolError(f"a box of over {self._max_box_bytes} bytes")
        return super().proto_value(string)

    def lengthLimitExceeded(self, length: int) -> None:
        self._broken(f"an AMP key of {length} bytes (the limit is 255)")

    def dataReceived(self, data: bytes) -> None:
        if self.broken:
            return
        try:
            super().dataReceived(data)
        except Exception as e:
            self._broken(f"{type(e).__name__}: {e}" if str(e) else repr(e))
            return
        if self.broken:
            return
        if self.paused:
            # We stopped reading (flow control): what is left unparsed waits
            # for us, not for the peer.
            self._cancel_stall()
            return
        if self._unprocessed or self._currentBox is not None:
            # Half a frame: it must be completed soon.
            if self._stall is None or not self._stall.active():
                self._stall = self._reactor.callLater(
                    self._frame_timeout, self._stalled
                )
            else:
                self._stall.reset(self._frame_timeout)
        elif self._stall is not None and self._stall.active():
            self._stall.cancel()

    def _stalled(self) -> None:
        self._broken(f"a frame left incomplete for {self._frame_timeout:g}s")

    def _broken(self, message: str) -> None:
        if self.broken:
            return
        self.broken = True
        self._cancel_stall()
        self.protocol_broken(message)

    def _cancel_stall(self) -> None:
        if self._stall is not None and self._stall.active():
            self._stall.cancel()

    def connectionLost(self, reason: Failure) -> None:  # type: ignore[override]
        self._cancel_stall()
        super().connectionLost(reason)
