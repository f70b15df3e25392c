"""
The replies an L{AMQPPool} waits for: each invocation it published, by its
message's correlation id, until exactly one outcome ends it (a reply, its
timeout, or the end of the connection).  Replies nobody expects (a duplicate
after a redelivery, a reply after a timeout) are counted and ignored.
"""

from __future__ import annotations

from typing import Any

from attrs import define
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from actordispatch._amqp.wire import WireError, decode_reply
from actordispatch._core.invocation import Invocation
from actordispatch._core.result import HandlerOutcome, Status
from actordispatch._wire.outcome_json import outcome_from_json

__all__ = ["Expected", "Replies"]

_log = Logger()


@define(eq=False)
class Expected:
    """
    One invocation published and waiting for its outcome.
    """

    invocation: Invocation
    done: Deferred[HandlerOutcome]
    correlation: str
    sent: float
    timer: Any = None


class Replies:
    """
    The invocations a pool published and waits for, and the replies that end
    them.

    @param name: the pool's name, for logs.
    @param reply_grace: seconds, beyond a handler's timeout, to wait for its
        reply before its outcome is C{"timeout"}.
    @param max_reply_size: cap, in bytes, on one reply.
    @ivar ignored: replies (or outcomes in them) that no invocation was
        waiting for.
    """

    def __init__(
        self, *, reactor: Any, name: str, reply_grace: float, max_reply_size: int
    ) -> None:
        self._reactor = reactor
        self._name = name
        self._reply_grace = reply_grace
        self._max_reply_size = max_reply_size
        self._expected: dict[str, dict[int, Expected]] = {}
        self.ignored = 0

    @property
    def in_flight(self) -> int:
        """
        Invocations published and waiting for their outcomes.
        """
        return sum(len(expected) for expected in self._expected.values())

    def expect(
        self,
        correlation: str,
        expected: dict[int, Expected],
        timeouts: dict[int, float],
    ) -> None:
        """
        Wait for the outcomes of C{expected} (by handler id), published in one
        message: each ends C{"timeout"} after its timeout (in C{timeouts})
        and the reply grace.
        """
        self._expected[correlation] = expected
        for handler_id, timeout in timeouts.items():
            pending = expected[handler_id]
            pending.timer = self._reactor.callLater(
                timeout + self._reply_grace, self._no_reply, pending, timeout
            )

    def waiting(self, correlation: str) -> list[Expected]:
        """
        The invocations of one message that still wait for their outcomes.
        """
        return list(self._expected.get(correlation, {}).values())

    def _no_reply(self, pending: Expected, timeout: float) -> None:
        pending.timer = None
        grace = self._reply_grace
        self.settle(
            pending,
            "timeout",
            "actordispatch.NoReply",
            f"no worker host replied within {timeout + grace:g}s (the "
            f"handler's timeout of {timeout:g}s and reply_grace of "
            f"{grace:g}s); a late reply is ignored",
        )

    # --- reading replies -----------------------------------------------------------

    def consume(self, replies: Any) -> None:
        """
        Read the replies that C{replies} (a pika C{ClosableDeferredQueue})
        brings, one after another, until it closes.
        """
        replies.get().addCallbacks(
            self._replied, lambda reason: None, callbackArgs=(replies,)
        )

    def _replied(self, message: Any, replies: Any) -> None:
        try:
            self._read_reply(message)
        except Exception:
            _log.failure("AMQP pool {name}: a reply could not be read", name=self._name)
        self.consume(replies)

    def _read_reply(self, message: Any) -> None:
        expected = self._expected.get(message.properties.correlation_id)
        if expected is None:
            self.ignored += 1
            return
        try:
            host, records = decode_reply(message.body, self._max_reply_size)
        except WireError as e:
            self.ignored += 1
            _log.warn(
                "AMQP pool {name}: a bad reply: {error}", name=self._name, error=e
            )
            return
        for record in records:
            handler_id = record.get("handler_id") if isinstance(record, dict) else None
            pending = expected.get(handler_id) if isinstance(handler_id, int) else None
            if pending is None:
                self.ignored += 1
                continue
            try:
                outcome = outcome_from_json(record, pending.invocation)
            except ValueError as e:
                self.settle(
                    pending,
                    "crashed",
                    "actordispatch.ProtocolError",
                    f"worker host {host!r} sent a malformed outcome: {e}",
                )
                continue
            self._finish(pending, outcome)

    # --- outcomes ------------------------------------------------------------------

    def settle(
        self, pending: Expected, status: Status, error_type: str, message: str
    ) -> None:
        """
        End C{pending} with an outcome of ours (no reply gave one).
        """
        self._finish(
            pending,
            pending.invocation.outcome(
                status,
                error_type=error_type,
                error_message=message,
                duration=max(0.0, self._reactor.seconds() - pending.sent),
            ),
        )

    def _finish(self, pending: Expected, outcome: HandlerOutcome) -> None:
        if pending.done.called:
            return
        if pending.timer is not None and pending.timer.active():
            pending.timer.cancel()
        pending.timer = None
        expected = self._expected.get(pending.correlation)
        if expected is not None:
            expected.pop(pending.invocation.handler_id, None)
            if not expected:
                del self._expected[pending.correlation]
        pending.done.callback(outcome)

    def end_all(self, status: Status, error_type: str, message: str) -> None:
        """
        End every invocation still waiting for its outcome.
        """
        for expected in list(self._expected.values()):
            for pending in list(expected.values()):
                self.settle(pending, status, error_type, message)
