"""
L{RemotePool}: the L{IHandlerPool} of one external process connected over AMP,
which serves handlers it registered: every invocation becomes an L{Invoke}
call on its connection.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any

from attrs import define, evolve
from twisted.internet import error as net_error
from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger
from twisted.protocols import amp
from twisted.python.failure import Failure
from zope.interface import implementer

from actordispatch._core.invocation import Invocation
from actordispatch._core.result import HandlerOutcome
from actordispatch._core.veto import MAX_VETO_REASON
from actordispatch._external.wire import (
    Invoke,
    RemoteHandlerError,
    _parse_handler_error,
    peer_error_message,
)
from actordispatch._wire.codec import decode_finite, peer_json
from actordispatch.interfaces import IProcessPool, IRoutedPool

_log = Logger()

# --- the pool of one connection ----------------------------------------------------


@define(eq=False)
class _RemoteCall:
    """
    One invocation on its way to an external peer, or waiting for room.
    """

    invocation: Invocation
    done: Deferred[HandlerOutcome]
    sent: float = 0.0
    timer: Any = None


@implementer(IRoutedPool, IProcessPool)
class RemotePool:
    """
    The L{IHandlerPool} of one external process connected over AMP: every
    invocation becomes an L{Invoke} call on its connection.

    It is an L{IRoutedPool} only to learn of every removal of one of its
    handlers (L{unbind}), the dispatcher's own included (C{max_calls} used
    up, expiry): it routes nothing itself, every spec is fine with it.

    At most C{max_in_flight} calls are outstanding at once; more wait in a
    queue of at most C{max_queued}, and an invocation beyond that ends at once
    C{"crashed"} with C{error_type="actordispatch.Overloaded"} (the peer could
    not take it; it never ran).  A handler's timeout counts from the moment
    its call is sent, not while it is queued; past it the outcome is
    C{"timeout"}, the slot is freed and the late answer, if it ever comes, is
    ignored (the dispatcher cannot stop an external process's work).

    @param connection: the AMP connection to the peer (anything with
        C{callRemote}).
    @param reactor: for timeouts.
    @param name: the pool's name in the dispatcher, for logs.
    @param default_timeout: seconds a handler may run when its registration
        set no timeout.
    @param on_protocol_error: called with a reason when the peer answered
        something the protocol forbids (the connection is then dropped).
    @param on_removed: called with the id of each of its handlers the
        dispatcher removes, for whatever reason.
    """

    #: One worker process: the peer (L{IProcessPool.size}).
    size = 1

    def __init__(
        self,
        connection: Any,
        *,
        reactor: Any,
        name: str = "amp",
        default_timeout: float = 60.0,
        max_in_flight: int = 16,
        max_queued: int = 1024,
        on_protocol_error: Any = None,
        on_removed: Any = None,
    ) -> None:
        if max_in_flight < 1 or max_queued < 0:
            raise ValueError("max_in_flight must be >= 1 and max_queued >= 0")
        self._connection = connection
        self._reactor = reactor
        self.name = name
        self.default_timeout = default_timeout
        self.max_in_flight = max_in_flight
        self.max_queued = max_queued
        self._on_protocol_error = on_protocol_error
        self._on_removed = on_removed
        self._in_flight: set[_RemoteCall] = set()
        self._queue: deque[_RemoteCall] = deque()
        self._lost: str | None = None
        self._last_raw: bytes | None = None
        self._last_plain = b""
        self.peer_pid: int | None = None

    @property
    def in_flight(self) -> int:
        """
        Calls sent to the peer and not answered yet (nor timed out).
        """
        return len(self._in_flight)

    def running(self, handler_id: int) -> list[Invocation]:
        """
        The invocations of handler C{handler_id} sent to the peer and not
        answered yet (nor timed out).
        """
        return [
            call.invocation
            for call in self._in_flight
            if call.invocation.handler_id == handler_id
        ]

    @property
    def queued(self) -> int:
        """
        Calls waiting for room under C{max_in_flight}.
        """
        return len(self._queue)

    def child_pids(self) -> tuple[int, ...]:
        """
        The peer's pid, once one of its answers told it.
        """
        return () if self.peer_pid is None else (self.peer_pid,)

    # --- IHandlerPool ------------------------------------------------------------

    def start(self) -> Deferred[None]:
        """
        Nothing to start: the peer is connected already.
        """
        return succeed(None)

    def stop(self) -> Deferred[None]:
        """
        End whatever is left (normally nothing: the dispatcher waited for its
        invocations) as C{"crashed"}; the connection stays, so the dispatcher
        can start again with the same peer.
        """
        self._end_all(
            "crashed",
            "actordispatch.ConnectionLost" if self._lost else "actordispatch.PoolDown",
            self._lost or "the pool stopped",
        )
        return succeed(None)

    def check_handler(self, name: str) -> Deferred[int]:
        """
        Succeed at once: the peer registered the handler, so it serves it.
        """
        return succeed(self.peer_pid or 0)

    # --- IRoutedPool: told of every registration and removal ------------------

    def check_spec(self, phase: str, spec: Any) -> None:
        """
        Every spec will do: the dispatcher routes, this pool only runs.
        """

    def bind(
        self, handler_id: int, handler: str, phase: str, spec: Any
    ) -> Deferred[None]:
        """
        Succeed at once: the peer registered the handler, so it serves it.
        """
        return succeed(None)

    def unbind(self, handler_id: int) -> None:
        """
        The dispatcher removed handler C{handler_id}: say so to C{on_removed}.
        """
        if self._on_removed is not None:
            self._on_removed(handler_id)

    def abort(self, message: str) -> None:
        """
        End every call now: sent ones C{"timeout"} (their answers will be
        ignored), queued ones C{"skipped"}.
        """
        while self._queue:
            call = self._queue.popleft()
            call.done.callback(
                call.invocation.outcome(
                    "skipped",
                    error_type="actordispatch.Aborted",
                    error_message=f"{message} before this ran",
                )
            )
        for call in list(self._in_flight):
            self._settle(
                call,
                call.invocation.outcome(
                    "timeout",
                    error_type="actordispatch.Aborted",
                    error_message=message,
                    duration=self._reactor.seconds() - call.sent,
                ),
                pump=False,
            )

    def invoke(self, invocation: Invocation) -> Deferred[HandlerOutcome]:
        """
        Send C{invocation} to the peer, or queue it.

        @return: a Deferred that always fires with the outcome.
        """
        if self._lost is not None:
            return succeed(
                invocation.outcome(
                    "crashed",
                    error_type="actordispatch.ConnectionLost",
                    error_message=self._lost,
                )
            )
        call = _RemoteCall(invocation, Deferred())
        if len(self._in_flight) < self.max_in_flight:
            self._send(call)
        elif len(self._queue) < self.max_queued:
            self._queue.append(call)
        else:
            _log.warn(
                "{pool}: {queued} calls queued already: {handler} not sent",
                pool=self.name,
                queued=len(self._queue),
                handler=invocation.handler,
            )
            return succeed(
                invocation.outcome(
                    "crashed",
                    error_type="actordispatch.Overloaded",
                    error_message=(
                        f"the external process has {len(self._in_flight)} calls in "
                        f"flight and {len(self._queue)} queued (the caps): this "
                        "invocation was not sent"
                    ),
                )
            )
        return call.done

    # --- the connection's end ----------------------------------------------------

    def mark_lost(self, message: str) -> None:
        """
        The connection is gone: every later invocation, and L{stop}, ends
        C{"crashed"} with C{message}.
        """
        if self._lost is None:
            self._lost = f"connection lost: {message}"

    def connection_lost(self, message: str) -> None:
        """
        The connection is gone: every call in flight or queued, and every later
        invocation, ends C{"crashed"} with C{message}.
        """
        self.mark_lost(message)
        self._end_all("crashed", "actordispatch.ConnectionLost", self._lost or "")

    def _end_all(self, status: Any, error_type: str, message: str) -> None:
        now = self._reactor.seconds()
        calls = [*self._in_flight, *self._queue]
        self._queue.clear()
        for call in calls:
            self._settle(
                call,
                call.invocation.outcome(
                    status,
                    error_type=error_type,
                    error_message=message,
                    duration=now - call.sent if call.sent else 0.0,
                ),
                pump=False,
            )

    # --- calls -------------------------------------------------------------------

    def _plain_event(self, event: bytes) -> bytes:
        """
        The event as a peer reads it (L{peer_json}): the codec's tags for
        tuples, records, dates... become lists, objects and strings, since a
        peer need not know them.  (Every invocation of one event shares its
        bytes: convert once.)
        """
        if b'"__ad__"' not in event:
            return event
        if event is not self._last_raw:
            try:
                plain = peer_json(event)
            except Exception:
                plain = event
            self._last_raw, self._last_plain = event, plain
        return self._last_plain

    def _send(self, call: _RemoteCall) -> None:
        invocation = call.invocation
        timeout = (
            invocation.timeout
            if invocation.timeout is not None
            else self.default_timeout
        )
        call.sent = self._reactor.seconds()
        self._in_flight.add(call)
        call.timer = self._reactor.callLater(timeout, self._timed_out, call, timeout)
        try:
            answer = self._connection.callRemote(
                Invoke,
                handler_id=invocation.handler_id,
                handler=invocation.handler.partition(":")[2],
                phase=invocation.phase,
                event=self._plain_event(invocation.event),
                timeout=float(timeout),
            )
        except Exception as e:
            self._settle(
                call,
                invocation.outcome(
                    "crashed",
                    error_type=f"actordispatch.{type(e).__name__}",
                    error_message=f"could not send the invocation: {e}",
                ),
            )
            return
        answer.addCallbacks(
            self._answered,
            self._failed,
            callbackArgs=(call,),
            errbackArgs=(call,),
        )

    def _timed_out(self, call: _RemoteCall, timeout: float) -> None:
        call.timer = None
        _log.warn(
            "{pool}: {handler} did not answer within {timeout}s",
            pool=self.name,
            handler=call.invocation.handler,
            timeout=timeout,
        )
        self._settle(
            call,
            call.invocation.outcome(
                "timeout",
                error_type="actordispatch.HandlerTimeout",
                error_message=(
                    f"the external process did not answer within {timeout:g}s "
                    "(a late answer is ignored)"
                ),
                duration=self._reactor.seconds() - call.sent,
                pid=self.peer_pid,
            ),
        )

    def _answered(self, response: dict[str, Any], call: _RemoteCall) -> None:
        if call.done.called:
            return  # it timed out or was aborted: the late answer is ignored
        pid = response.get("pid")
        if isinstance(pid, int):
            self.peer_pid = pid
        try:
            value = decode_finite(response["value"])
        except Exception as e:
            self._protocol_error(call, f"an Invoke answer whose value is not JSON: {e}")
            return
        duration = response.get("duration")
        if not (isinstance(duration, float) and math.isfinite(duration)):
            duration = self._reactor.seconds() - call.sent
        veto = response.get("veto")
        self._settle(
            call,
            call.invocation.ok(
                value,
                duration=max(0.0, duration),
                pid=pid if isinstance(pid, int) else self.peer_pid,
                veto=veto[:MAX_VETO_REASON] if isinstance(veto, str) else None,
            ),
        )

    def _failed(self, reason: Failure, call: _RemoteCall) -> None:
        if call.done.called:
            return  # settled already (timeout, abort, connection lost): consumed
        inv = call.invocation
        duration = self._reactor.seconds() - call.sent
        if reason.check(RemoteHandlerError):
            kind, message, tb = _parse_handler_error(str(reason.value))
            outcome = inv.outcome(
                "error", error_type=kind, error_message=message, duration=duration
            )
            outcome = evolve(outcome, traceback=tb, pid=self.peer_pid)
        elif reason.check(amp.RemoteAmpError, amp.UnhandledCommand):
            outcome = inv.outcome(
                "error",
                error_type="actordispatch.RemoteError",
                error_message=peer_error_message(reason.value),  # type: ignore[arg-type]
                duration=duration,
                pid=self.peer_pid,
            )
        elif reason.check(
            net_error.ConnectionLost, net_error.ConnectionDone, amp.ProtocolSwitched
        ):
            outcome = inv.outcome(
                "crashed",
                error_type="actordispatch.ConnectionLost",
                error_message=f"connection lost: {reason.getErrorMessage()}",
                duration=duration,
            )
        else:
            self._protocol_error(
                call, f"a malformed Invoke answer: {reason.getErrorMessage()}"
            )
            return
        self._settle(call, outcome)

    def _protocol_error(self, call: _RemoteCall, message: str) -> None:
        self._settle(
            call,
            call.invocation.outcome(
                "crashed",
                error_type="actordispatch.ProtocolError",
                error_message=message,
                duration=self._reactor.seconds() - call.sent,
            ),
        )
        if self._on_protocol_error is not None:
            self._on_protocol_error(message)

    def _settle(
        self, call: _RemoteCall, outcome: HandlerOutcome, pump: bool = True
    ) -> None:
        if call.done.called:
            return
        if call.timer is not None and call.timer.active():
            call.timer.cancel()
        call.timer = None
        self._in_flight.discard(call)
        # Queued calls take the freed slot before anything the outcome causes.
        if pump:
            self._pump()
        call.done.callback(outcome)

    def _pump(self) -> None:
        while (
            self._queue
            and len(self._in_flight) < self.max_in_flight
            and self._lost is None
        ):
            self._send(self._queue.popleft())
