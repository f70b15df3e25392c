"""
The AMP endpoint for external processes: they fire events into a dispatcher and
serve as handlers for it.

The wire protocol is public and small enough to implement in any language with
an AMP library (the reference, with every argument and error code, is
C{docs/amp-protocol.rst}; C{docs/examples/external_handler.py} implements the
client with nothing but Twisted).  It uses AMP's basic types only, plus one
convention of ours for values over AMP's 64 KiB limit (L{ChunkedBytes}: a value
C{name} continues in the keys C{name.1}, C{name.2}, ... of the same box).
Events, values, keywords and match specs travel as UTF-8 JSON.

Commands an external process sends (answered by L{DispatcherAMP}):
 - L{Fire}: fire an event, get every handler's outcome;
 - L{RegisterHandler} / L{UnregisterHandler}: serve as a handler of a phase;
 - L{ListHandlers}: what is registered.

Command the dispatcher sends to an external process that registered a handler:
 - L{Invoke}: run that handler on an event.

Each connection that registers a handler gets its own L{RemotePool} (the
L{IHandlerPool} of that one peer), added to the dispatcher as C{"amp:<n>"}; its
handlers are named C{"external.conn<n>:<name>"}.  When the connection drops,
the pool is removed, and so are its handlers; invocations it was running end
C{"crashed"}.

The peer is not trusted: boxes are capped in bytes and keys (L{GuardedAMP}), a
malformed frame or a box over a cap drops it, events and values it sends are
decoded to plain JSON values only (never to a class it names), and every
per-connection resource (handlers, calls in flight and queued, events in
flight) is bounded.  L{listen} refuses plaintext TCP beyond loopback unless told
C{insecure=True}, and serves TLS with client certificates from a configured CA.
"""

from __future__ import annotations

import ipaddress
import itertools
import json
import math
import re
from collections import deque
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from attrs import define, evolve, field, frozen
from twisted.internet import error as net_error
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.defer import Deferred, DeferredList, fail, maybeDeferred, succeed
from twisted.internet.interfaces import IHandshakeListener
from twisted.internet.protocol import ServerFactory
from twisted.logger import Logger
from twisted.protocols import amp
from twisted.python.failure import Failure
from zope.interface import implementer

from actordispatch._codec import (
    decode_result,
    encode_event,
)
from actordispatch._commands import AMP_MAX_VALUE, ChunkedBytes
from actordispatch._dispatcher import RESERVED_KEYWORDS
from actordispatch._errors import (
    ActorDispatchError,
    EventEncodingError,
    FollowUpError,
    HandlerImportError,
    NotRunningError,
    OverloadedError,
)
from actordispatch._guarded import GuardedAMP
from actordispatch._invocation import Invocation
from actordispatch._match import from_table, to_table
from actordispatch._outcome_json import encode_items, outcome_to_json
from actordispatch._result import DispatchResult, HandlerOutcome
from actordispatch._veto import MAX_VETO_REASON
from actordispatch.interfaces import IHandlerPool

if TYPE_CHECKING:
    from actordispatch._dispatcher import EventDispatcher

#: Names of C{add_event_handler}'s and C{fire_event}'s own parameters, which a
#: peer's match spec or fired keywords therefore cannot use.
_RESERVED = RESERVED_KEYWORDS

_log = Logger()

#: The form of the name a peer gives its handler: a dotted, ASCII identifier.
EXTERNAL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*\Z")
#: The longest handler name a peer may give.
MAX_NAME_LENGTH = 200

#: Default cap on one box an external peer sends (bytes of values).
DEFAULT_MAX_BOX_BYTES = 16 * 1024 * 1024
#: Default cap on the time a frame may stay half-sent (seconds without a byte).
DEFAULT_FRAME_TIMEOUT = 30.0

_connection_numbers = itertools.count(1)


# --- errors on the wire ----------------------------------------------------------


class BadKeywordError(ActorDispatchError, ValueError):
    """
    C{BAD_KEYWORD}: fired keywords that are not a JSON object of scalars, or
    that the dispatcher does not allow.
    """


class BadEventError(ActorDispatchError, ValueError):
    """
    C{BAD_EVENT}: an event that is not JSON, or that the dispatcher cannot
    carry (too large, a non-finite number...).
    """


class BadHandlerError(ActorDispatchError, ValueError):
    """
    C{BAD_HANDLER}: a registration the dispatcher refuses: a bad name, an
    unknown phase, a match keyword that is not allowed, bad options.
    """


class UnknownHandlerError(ActorDispatchError, KeyError):
    """
    C{UNKNOWN_HANDLER}: a handler id this connection did not register, or one
    already removed.
    """

    def __str__(self) -> str:
        # KeyError quotes its argument; the wire wants the plain message.
        return str(self.args[0]) if self.args else ""


class DispatchFailedError(ActorDispatchError):
    """
    C{DISPATCH_FAILED}: the dispatcher failed the event for a reason of its
    own (a bug, logged on the dispatcher's side).
    """


class RemoteHandlerError(ActorDispatchError):
    """
    C{HANDLER_ERROR}: an external handler raised.  Its message is the JSON
    description C{{"type": ..., "message": ..., "traceback": ...}}.
    """


# --- commands ----------------------------------------------------------------------


class Fire(amp.Command):
    """
    External process to dispatcher: fire an event.

    Arguments: C{event}, chunked JSON; C{keywords} (optional), a JSON object of
    match keyword to JSON scalar; C{within} (optional), the C{handler_id} of an
    L{Invoke} this process is answering: the event is then a I{follow-up} of
    that invocation, which starts at once (it does not queue behind the event
    that invoked the handler, which may be waiting for it) one level deeper,
    and is refused with C{FOLLOW_UP} past the dispatcher's C{max_depth}.
    Answers C{outcomes}, chunked JSON (an array of outcome objects, see
    L{outcome_to_json}) and C{ok} (every outcome is C{"ok"}).
    """

    commandName = b"Fire"
    arguments = [
        (b"event", ChunkedBytes()),
        (b"keywords", amp.Unicode(optional=True)),
        (b"within", amp.Integer(optional=True)),
    ]
    response = [(b"outcomes", ChunkedBytes()), (b"ok", amp.Boolean())]
    errors = {
        NotRunningError: b"NOT_RUNNING",
        OverloadedError: b"OVERLOADED",
        BadKeywordError: b"BAD_KEYWORD",
        BadEventError: b"BAD_EVENT",
        DispatchFailedError: b"DISPATCH_FAILED",
        FollowUpError: b"FOLLOW_UP",
    }


class RegisterHandler(amp.Command):
    """
    External process to dispatcher: serve as handler C{name} of C{phase} for
    the events C{match} matches: a JSON object of keyword to a scalar, C{null}
    (no constraint) or an operator as a table of one key (C{{"in": [..]}},
    C{{"not": v}}, C{{"glob": "p*"}}, C{{"present": true}},
    C{{"absent": true}}; see L{actordispatch._match.from_table}); optionally
    with a C{timeout} (seconds) and C{max_calls}.  Answers the C{handler_id}
    that L{Invoke} will carry.
    """

    commandName = b"RegisterHandler"
    arguments = [
        (b"name", amp.Unicode()),
        (b"phase", amp.Unicode()),
        (b"match", amp.Unicode(optional=True)),
        (b"timeout", amp.Float(optional=True)),
        (b"max_calls", amp.Integer(optional=True)),
    ]
    response = [(b"handler_id", amp.Integer())]
    errors = {BadHandlerError: b"BAD_HANDLER", OverloadedError: b"OVERLOADED"}


class UnregisterHandler(amp.Command):
    """
    External process to dispatcher: stop serving handler C{handler_id}.
    """

    commandName = b"UnregisterHandler"
    arguments = [(b"handler_id", amp.Integer())]
    response: ClassVar[list[tuple[bytes, amp.Argument]]] = []
    errors = {UnknownHandlerError: b"UNKNOWN_HANDLER"}


class ListHandlers(amp.Command):
    """
    External process to dispatcher: the handlers registered, as a chunked JSON
    array of objects (see L{DispatcherAMP.list_handlers}).
    """

    commandName = b"ListHandlers"
    arguments: ClassVar[list[tuple[bytes, amp.Argument]]] = []
    response = [(b"handlers", ChunkedBytes())]


class Invoke(amp.Command):
    """
    Dispatcher to external process: run handler C{handler} (the name the peer
    registered) with id C{handler_id} in C{phase} on C{event} (chunked JSON);
    C{timeout} says how many seconds the dispatcher waits.  Answers C{value}
    (chunked JSON), optionally C{pid}, C{duration} (the handler's own run
    time) and C{veto} (the reason of a veto: see L{actordispatch.Veto}); or
    fails with C{HANDLER_ERROR}.
    """

    commandName = b"Invoke"
    arguments = [
        (b"handler_id", amp.Integer()),
        (b"handler", amp.Unicode()),
        (b"phase", amp.Unicode()),
        (b"event", ChunkedBytes()),
        (b"timeout", amp.Float(optional=True)),
    ]
    response = [
        (b"value", ChunkedBytes()),
        (b"pid", amp.Integer(optional=True)),
        (b"duration", amp.Float(optional=True)),
        (b"veto", amp.Unicode(optional=True)),
    ]
    errors = {RemoteHandlerError: b"HANDLER_ERROR"}


# --- JSON helpers -----------------------------------------------------------------


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _json_object(
    text: str | None, what: str, operators: bool = False
) -> dict[str, Any]:
    """
    A JSON object of scalars (strings, numbers, booleans, nulls), or, with
    C{operators}, of scalars and operator tables (L{from_table}), which it
    turns into operators.

    @raise ValueError: naming C{what} and the problem.
    """
    if text is None or text == "":
        return {}
    try:
        value = json.loads(text, parse_constant=_no_constants)
    except (ValueError, RecursionError) as e:
        raise ValueError(f"{what} is not JSON: {e}") from None
    if not isinstance(value, dict):
        raise ValueError(f"{what} must be a JSON object, not {type(value).__name__}")
    for key, item in value.items():
        if operators and isinstance(item, dict):
            try:
                value[key] = from_table(item)
            except ValueError as e:
                raise ValueError(f"{what}.{key}: {e}") from None
        elif item is not None and not isinstance(item, (str, int, float, bool)):
            raise ValueError(
                f"{what}: {key!r} must be a string, number, boolean, null"
                + (" or an operator table" if operators else "")
            )
    return value


def _encode_outcomes(result: DispatchResult) -> bytes:
    return encode_items([outcome_to_json(o) for o in result.outcomes], "value")


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


@implementer(IHandlerPool)
class RemotePool:
    """
    The L{IHandlerPool} of one external process connected over AMP: every
    invocation becomes an L{Invoke} call on its connection.

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
    """

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
        The event as plain JSON: the codec's tags for tuples, records, dates...
        become lists, objects and strings, since a peer need not know them.
        (Every invocation of one event shares its bytes: convert once.)
        """
        if b'"__ad__"' not in event:
            return event
        if event is not self._last_raw:
            try:
                plain = encode_event(decode_result(event), max_size=len(event) * 4)
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
            value = decode_result(response["value"])
        except Exception as e:
            self._protocol_error(call, f"an Invoke answer that is not JSON: {e}")
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
        elif reason.check(amp.RemoteAmpError):
            outcome = inv.outcome(
                "error",
                error_type="actordispatch.RemoteError",
                error_message=reason.getErrorMessage(),
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


def _parse_handler_error(description: str) -> tuple[str, str, str | None]:
    """
    C{(type, message, traceback)} from a C{HANDLER_ERROR} description; one
    that is not the JSON object it should be is the message itself.
    """
    try:
        parsed = json.loads(description)
    except (ValueError, RecursionError):
        parsed = None
    if not isinstance(parsed, dict):
        return "actordispatch.RemoteError", description, None
    kind = parsed.get("type")
    message = parsed.get("message")
    tb = parsed.get("traceback")
    return (
        kind if isinstance(kind, str) and kind else "actordispatch.RemoteError",
        message if isinstance(message, str) else json.dumps(message),
        tb if isinstance(tb, str) and tb else None,
    )


# --- the server side ----------------------------------------------------------------


def _peer_names(transport: Any) -> set[str] | None:
    """
    The names a TLS peer's certificate gives: its subject's common names and
    its DNS subject alternative names; C{None} without a certificate.
    """
    get_certificate = getattr(transport, "getPeerCertificate", None)
    if get_certificate is None:
        return None
    certificate = get_certificate()
    if certificate is None:
        return None
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    parsed = certificate.to_cryptography()
    names = {
        str(attribute.value)
        for attribute in parsed.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    }
    try:
        san = parsed.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        pass
    else:
        names.update(san.value.get_values_for_type(x509.DNSName))
    return names


@implementer(IHandshakeListener)
class DispatcherAMP(GuardedAMP):
    """
    The dispatcher's end of one external process's AMP connection.

    @ivar number: this connection's number (in its pool's and its handlers'
        names).
    @ivar pool: its L{RemotePool}, once it registered a handler.
    """

    def __init__(self, factory: DispatcherAMPFactory, number: int) -> None:
        super().__init__(
            factory.reactor,
            max_box_bytes=factory.max_box_bytes,
            max_box_keys=factory.max_box_keys,
            frame_timeout=factory.frame_timeout,
        )
        self.factory = factory
        self.number = number
        self.pool_name = f"amp:{number}"
        self.pool: RemotePool | None = None
        self.handler_ids: dict[int, str] = {}
        self._fires_pending = 0
        self._peer = "?"
        self._verified = factory.allowed_peers is None
        self._closing: list[Deferred[None]] = []

    @property
    def dispatcher(self) -> EventDispatcher:
        """
        The dispatcher this connection fires into and registers with.
        """
        return self.factory.dispatcher

    # --- connection ------------------------------------------------------------------

    def connectionMade(self) -> None:
        super().connectionMade()
        transport: Any = self.transport
        self._peer = str(transport.getPeer())
        self.factory.connections.add(self)
        _log.info(
            "external process connected from {peer} as connection {number}",
            peer=self._peer,
            number=self.number,
        )

    def handshakeCompleted(self) -> None:
        """
        TLS is up: check the peer's certificate names against the allowlist.
        """
        self._check_peer()

    def _check_peer(self) -> bool:
        allowed = self.factory.allowed_peers
        if allowed is None or self._verified:
            return True
        names = _peer_names(self.transport)
        if names and names & allowed:
            self._verified = True
            _log.info(
                "connection {number} from {peer}: certificate names {names}",
                number=self.number,
                peer=self._peer,
                names=sorted(names),
            )
            return True
        self._broken(
            "no client certificate"
            if names is None
            else f"certificate names {sorted(names)} are not in the allowlist"
        )
        return False

    def dataReceived(self, data: bytes) -> None:
        if not self.broken and not self._check_peer():
            return
        super().dataReceived(data)

    def protocol_broken(self, message: str) -> None:
        _log.warn(
            "external process at {peer} (connection {number}) dropped: {message}",
            peer=self._peer,
            number=self.number,
            message=message,
        )
        super().protocol_broken(message)

    def connectionLost(self, reason: Failure) -> None:  # type: ignore[override]
        self.factory.connections.discard(self)
        message = reason.getErrorMessage()
        if self.pool is not None:
            pool, self.pool = self.pool, None
            # Remove the pool first (its handlers with it), so that nothing
            # retries on it, then end what it was running.
            pool.mark_lost(message)
            try:
                removed = self.dispatcher.remove_pool(self.pool_name)
            except (KeyError, ValueError):
                removed = succeed(None)
            removed.addErrback(
                lambda f: _log.failure("removing pool {pool}", f, pool=self.pool_name)
            )
            pool.connection_lost(message)
        _log.info(
            "external process at {peer} (connection {number}) gone: {reason}; "
            "{handlers} handlers removed",
            peer=self._peer,
            number=self.number,
            reason=message,
            handlers=len(self.handler_ids),
        )
        self.handler_ids.clear()
        super().connectionLost(reason)
        closing, self._closing = self._closing, []
        for waiter in closing:
            waiter.callback(None)

    def when_closed(self) -> Deferred[None]:
        """
        A Deferred firing once this connection is closed.
        """
        waiter: Deferred[None] = Deferred()
        self._closing.append(waiter)
        return waiter

    def dispatchCommand(self, box: amp.AmpBox) -> Deferred[Any]:
        # A command whose arguments do not parse fails outside our responders:
        # answer BAD_REQUEST and close, rather than AMP's anonymous UNKNOWN.
        def bad_request(reason: Failure) -> Failure:
            if reason.check(amp.RemoteAmpError):
                return reason
            message = f"{reason.type.__name__}: {reason.getErrorMessage()}"  # type: ignore[union-attr]
            _log.warn(
                "external process at {peer}: bad {command} command: {error}",
                peer=self._peer,
                command=box.get(amp.COMMAND, b"?")[:100],
                error=message,
            )
            return Failure(
                amp.RemoteAmpError(b"BAD_REQUEST", message[:1000], fatal=True)
            )

        result: Deferred[Any] = super().dispatchCommand(box)
        return result.addErrback(bad_request)

    # --- commands ---------------------------------------------------------------------

    @Fire.responder
    def fire(
        self, event: bytes, keywords: str | None = None, within: int | None = None
    ) -> Any:
        """
        L{Fire}: the event is decoded to plain JSON values (a class it names by
        a tag is never built), then fired; every dispatcher-level refusal
        becomes its error code, never a dropped connection.
        """
        if self._fires_pending >= self.factory.max_fires_per_connection:
            raise OverloadedError(
                f"{self._fires_pending} events of this connection are in flight "
                "(the cap): wait for their answers"
            )
        try:
            matched = _json_object(keywords, "keywords")
        except ValueError as e:
            raise BadKeywordError(str(e)) from None
        reserved = sorted(_RESERVED & set(matched))
        if reserved:
            raise BadKeywordError(f"reserved keyword names: {', '.join(reserved)}")
        try:
            value = decode_result(event)
        except Exception as e:
            raise BadEventError(
                f"the event is not JSON: {type(e).__name__}: {e}"
            ) from None
        if within is not None:
            fired = self._follow_up(within, event, matched)
        else:
            try:
                fired = self.dispatcher.fire_event(value, **matched)
            except ValueError as e:
                raise BadKeywordError(str(e)) from None
        self._fires_pending += 1

        def answered(result: DispatchResult) -> dict[str, Any]:
            return {"outcomes": _encode_outcomes(result), "ok": result.ok}

        def failed(reason: Failure) -> Failure:
            if reason.check(NotRunningError, OverloadedError):
                return reason
            if reason.check(EventEncodingError):
                return Failure(BadEventError(reason.getErrorMessage()))
            _log.failure("an event fired by {peer} failed", reason, peer=self._peer)
            return Failure(DispatchFailedError(reason.getErrorMessage()))

        def done(result: Any) -> Any:
            self._fires_pending -= 1
            return result

        return fired.addCallbacks(answered, failed).addBoth(done)

    def _follow_up(
        self, within: int, event: bytes, keywords: dict[str, Any]
    ) -> Deferred[DispatchResult]:
        """
        Fire C{event} as a follow-up of this process's running invocations of
        handler C{within}, one level deeper than the deepest of them.

        @raise FollowUpError: when no such invocation runs here, or the
            dispatcher refuses it.
        """
        calls = [] if self.pool is None else self.pool.running(within)
        if not calls:
            raise FollowUpError(
                f"within={within}: no Invoke of that handler is running on this "
                "connection"
            )
        depth = max(call.depth for call in calls) + 1
        _, fired = self.dispatcher._fire_follow_up(depth, event, keywords, None)
        return fired

    @RegisterHandler.responder
    def register_handler(
        self,
        name: str,
        phase: str,
        match: str | None = None,
        timeout: float | None = None,
        max_calls: int | None = None,
    ) -> Deferred[dict[str, int]]:
        """
        L{RegisterHandler}: register C{"external.conn<n>:<name>"} in this
        connection's pool (created on the first registration).
        """
        if len(name) > MAX_NAME_LENGTH or not EXTERNAL_NAME.match(name):
            raise BadHandlerError(
                f"handler name {name[:MAX_NAME_LENGTH]!r} must be a dotted ASCII "
                f"identifier of at most {MAX_NAME_LENGTH} characters"
            )
        if len(self.handler_ids) >= self.factory.max_handlers_per_connection:
            raise OverloadedError(
                f"this connection has {len(self.handler_ids)} handlers (the cap)"
            )
        if timeout is not None and not (math.isfinite(timeout) and timeout > 0):
            raise BadHandlerError(f"timeout must be a positive number, not {timeout}")
        try:
            spec = _json_object(match, "match", operators=True)
        except ValueError as e:
            raise BadHandlerError(str(e)) from None
        reserved = sorted(_RESERVED & set(spec))
        if reserved:
            raise BadHandlerError(f"reserved keyword names: {', '.join(reserved)}")
        full_name = f"external.conn{self.number}:{name}"
        self._ensure_pool()
        try:
            added = self.dispatcher.add_event_handler(
                full_name,
                phase,
                pool=self.pool_name,
                timeout=timeout,
                max_calls=max_calls,
                **spec,
            )
        except (ValueError, TypeError) as e:
            raise BadHandlerError(str(e)) from None

        def registered(handler_id: int) -> dict[str, int]:
            if self.pool is None:
                # The connection went while the registration was checked.
                self.dispatcher.remove_event_handler(handler_id).addErrback(
                    lambda _: None
                )
            else:
                self.handler_ids[handler_id] = name
                _log.info(
                    "connection {number} serves handler {handler_id} {handler} "
                    "in phase {phase}",
                    number=self.number,
                    handler_id=handler_id,
                    handler=full_name,
                    phase=phase,
                )
            return {"handler_id": handler_id}

        def refused(reason: Failure) -> Failure:
            reason.trap(HandlerImportError, ValueError)
            return Failure(BadHandlerError(reason.getErrorMessage()))

        return added.addCallbacks(registered, refused)

    def _ensure_pool(self) -> None:
        if self.pool is not None:
            return
        factory = self.factory
        self.pool = RemotePool(
            self,
            reactor=factory.reactor,
            name=self.pool_name,
            default_timeout=factory.default_timeout,
            max_in_flight=factory.max_in_flight_per_connection,
            max_queued=factory.max_queued_per_connection,
            on_protocol_error=self._broken,
        )
        self.dispatcher.add_pool(self.pool_name, self.pool).addErrback(
            lambda f: _log.failure("starting pool {pool}", f, pool=self.pool_name)
        )

    @UnregisterHandler.responder
    def unregister_handler(self, handler_id: int) -> Deferred[dict[str, Any]]:
        """
        L{UnregisterHandler}: only a handler this connection registered.
        """
        if self.handler_ids.pop(handler_id, None) is None:
            return fail(
                UnknownHandlerError(
                    f"handler {handler_id} was not registered by this connection"
                )
            )

        def gone(reason: Failure) -> Failure:
            reason.trap(KeyError)
            return Failure(
                UnknownHandlerError(f"handler {handler_id} was already removed")
            )

        removed = self.dispatcher.remove_event_handler(handler_id)
        return removed.addCallbacks(lambda _: {}, gone)

    @ListHandlers.responder
    def list_handlers(self) -> dict[str, bytes]:
        """
        Every live handler: C{handler_id}, C{handler}, C{phase}, C{pool},
        C{match}, C{max_calls}, C{timeout}, C{calls}, C{failures}, C{p50},
        C{p90}, C{p99} and C{mine} (this connection serves it).
        """
        listing = [
            {
                "handler_id": info.handler_id,
                "handler": info.handler,
                "phase": info.phase,
                "pool": info.pool,
                "match": {k: to_table(v) for k, v in info.match_spec.items()},
                "max_calls": info.max_calls,
                "timeout": info.timeout,
                "calls": info.calls,
                "failures": info.failures,
                "p50": info.p50,
                "p90": info.p90,
                "p99": info.p99,
                "mine": info.pool == self.pool_name and self.pool is not None,
            }
            for info in self.dispatcher.handlers()
        ]
        return {"handlers": encode_items(listing, "match")}


class DispatcherAMPFactory(ServerFactory):
    """
    Builds a L{DispatcherAMP} per external connection to C{dispatcher}.

    @param dispatcher: the L{EventDispatcher} events are fired into and
        handlers registered with.
    @param reactor: for timeouts; the global reactor by default.
    @param max_in_flight_per_connection: L{Invoke} calls outstanding at once
        to one peer (see L{RemotePool}).
    @param max_queued_per_connection: calls waiting beyond those; more end
        C{"crashed"} (C{"actordispatch.Overloaded"}).
    @param max_box_bytes: cap on one box a peer sends; over it, the peer is
        dropped.  It bounds fired events and returned values.
    @param max_box_keys: cap on the keys of one box (default: enough for
        C{max_box_bytes} in chunks, plus 64).
    @param frame_timeout: seconds a frame may stay half-sent with no byte.
    @param default_timeout: seconds an external handler may take when its
        registration gave no timeout.
    @param max_handlers_per_connection: handlers one peer may register.
    @param max_fires_per_connection: events one peer may have in flight.
    @param max_connections: connections served at once; more are closed.
    @param allowed_peers: if set, a peer must present a TLS client certificate
        whose subject common name or a DNS subject alternative name is one of
        these (certificate verification itself is the TLS layer's job: see
        L{listen}).
    """

    protocol = DispatcherAMP

    def __init__(
        self,
        dispatcher: EventDispatcher,
        *,
        reactor: Any = None,
        max_in_flight_per_connection: int = 16,
        max_queued_per_connection: int = 1024,
        max_box_bytes: int = DEFAULT_MAX_BOX_BYTES,
        max_box_keys: int | None = None,
        frame_timeout: float = DEFAULT_FRAME_TIMEOUT,
        default_timeout: float = 60.0,
        max_handlers_per_connection: int = 256,
        max_fires_per_connection: int = 1024,
        max_connections: int = 256,
        allowed_peers: Collection[str] | None = None,
    ) -> None:
        if reactor is None:
            from twisted.internet import reactor as default_reactor

            reactor = default_reactor
        if max_in_flight_per_connection < 1:
            raise ValueError("max_in_flight_per_connection must be at least 1")
        self.dispatcher = dispatcher
        self.reactor = reactor
        self.max_in_flight_per_connection = max_in_flight_per_connection
        self.max_queued_per_connection = max_queued_per_connection
        self.max_box_bytes = max_box_bytes
        self.max_box_keys = (
            max_box_keys
            if max_box_keys is not None
            else max_box_bytes // AMP_MAX_VALUE + 64
        )
        self.frame_timeout = frame_timeout
        self.default_timeout = default_timeout
        self.max_handlers_per_connection = max_handlers_per_connection
        self.max_fires_per_connection = max_fires_per_connection
        self.max_connections = max_connections
        self.allowed_peers = None if allowed_peers is None else frozenset(allowed_peers)
        self.connections: set[DispatcherAMP] = set()
        self.accepting = True

    def buildProtocol(self, addr: Any) -> DispatcherAMP | None:
        if not self.accepting:
            return None
        if len(self.connections) >= self.max_connections:
            _log.warn(
                "refusing {peer}: {count} external connections already",
                peer=str(addr),
                count=len(self.connections),
            )
            return None
        return DispatcherAMP(self, next(_connection_numbers))

    def disconnect_all(self) -> Deferred[None]:
        """
        Close every connection (their pools and handlers go with them).

        @return: a Deferred firing once they are all closed.
        """
        waiting = []
        for connection in list(self.connections):
            waiting.append(connection.when_closed())
            transport: Any = connection.transport
            transport.loseConnection()
        return DeferredList(waiting, consumeErrors=True).addCallback(lambda _: None)


# --- listening ---------------------------------------------------------------------


class InsecureEndpointError(ActorDispatchError, ValueError):
    """
    L{listen} was asked for plaintext beyond loopback without C{insecure=True}.
    """


def _split_pem(data: bytes) -> list[bytes]:
    marker = b"-----BEGIN CERTIFICATE-----"
    return [marker + part for part in data.split(marker)[1:]]


@frozen
class TLSServerOptions:
    """
    TLS for the AMP endpoint, with mandatory client certificates.

    @ivar certificate: PEM: the server's certificate, then any intermediate
        certificates.
    @ivar private_key: PEM: the server certificate's private key.
    @ivar client_ca: PEM: the certificates of the authorities whose client
        certificates are accepted (one or more).
    @ivar allowed_peers: if set, only clients whose certificate's subject
        common name or a DNS subject alternative name is listed.
    """

    certificate: bytes
    private_key: bytes
    client_ca: bytes
    allowed_peers: frozenset[str] | None = field(
        default=None, converter=lambda v: None if v is None else frozenset(v)
    )

    @classmethod
    def from_files(
        cls,
        certificate: str | Path,
        private_key: str | Path,
        client_ca: str | Path,
        allowed_peers: Collection[str] | None = None,
    ) -> TLSServerOptions:
        """
        Read the PEM files.
        """
        return cls(
            Path(certificate).read_bytes(),
            Path(private_key).read_bytes(),
            Path(client_ca).read_bytes(),
            None if allowed_peers is None else frozenset(allowed_peers),
        )

    @classmethod
    def from_config(cls, table: Mapping[str, Any]) -> TLSServerOptions:
        """
        From a configuration table: C{certificate}, C{private_key} and
        C{client_ca} (paths to PEM files), and optionally C{allowed_peers} (a
        list of names).

        @raise ValueError: for a missing or unknown key.
        """
        known = {"certificate", "private_key", "client_ca", "allowed_peers"}
        unknown = sorted(set(table) - known)
        missing = sorted({"certificate", "private_key", "client_ca"} - set(table))
        if unknown or missing:
            raise ValueError(
                f"tls: unknown keys {unknown}, missing keys {missing} (known: "
                f"{', '.join(sorted(known))})"
            )
        return cls.from_files(
            table["certificate"],
            table["private_key"],
            table["client_ca"],
            table.get("allowed_peers"),
        )

    def certificate_options(self) -> Any:
        """
        Twisted's C{CertificateOptions}: this certificate, TLS 1.2 or later,
        and a client certificate signed by one of C{client_ca} required (a
        C{trustRoot} makes Twisted verify the peer and require its
        certificate).
        """
        from twisted.internet import ssl

        chain = _split_pem(self.certificate)
        if not chain:
            raise ValueError("tls: the certificate holds no PEM certificate")
        server = ssl.PrivateCertificate.loadPEM(chain[0] + b"\n" + self.private_key)
        authorities = [
            ssl.Certificate.loadPEM(pem) for pem in _split_pem(self.client_ca)
        ]
        if not authorities:
            raise ValueError("tls: client_ca holds no PEM certificate")
        return ssl.CertificateOptions(
            privateKey=server.privateKey.original,
            certificate=server.original,
            extraCertChain=[ssl.Certificate.loadPEM(p).original for p in chain[1:]],
            trustRoot=ssl.trustRootFromCertificates(authorities),
            raiseMinimumTo=ssl.TLSVersion.TLSv1_2,
        )


def _is_private(address: Any) -> bool:
    """
    Whether only this machine can reach C{address}: a UNIX socket, or TCP on
    a loopback interface.
    """
    if isinstance(address, UNIXAddress):
        return True
    if isinstance(address, (IPv4Address, IPv6Address)):
        try:
            return ipaddress.ip_address(address.host.split("%")[0]).is_loopback
        except ValueError:
            return False
    return False


@define
class AMPListener:
    """
    A listening AMP endpoint: its port and factory.  It looks enough like a
    port (C{getHost}, C{stopListening}) to stand in for one.
    """

    port: Any
    factory: DispatcherAMPFactory

    def getHost(self) -> Any:
        """
        The address it listens on.
        """
        return self.port.getHost()

    def stopListening(self) -> Deferred[None]:
        """
        Stop listening and close every connection (their handlers are
        removed).
        """
        self.factory.accepting = False
        stopped: Deferred[Any] = DeferredList(
            [maybeDeferred(self.port.stopListening), self.factory.disconnect_all()],
            consumeErrors=True,
        )
        return stopped.addCallback(lambda _: None)


def listen(
    reactor: Any,
    dispatcher: EventDispatcher,
    endpoint: str,
    *,
    insecure: bool = False,
    tls: TLSServerOptions | Mapping[str, Any] | None = None,
    **factory_options: Any,
) -> Deferred[AMPListener]:
    """
    Serve the AMP endpoint of C{dispatcher} on C{endpoint}, a Twisted server
    endpoint string (C{"unix:/run/ad.sock"}, C{"tcp:8750:interface=127.0.0.1"}).

    Without C{tls}, only a UNIX socket or TCP on a loopback interface is
    allowed, since anyone who can connect can run events and serve as a
    handler; anything else (all interfaces, a public address, an C{ssl:}
    endpoint beyond loopback: it does not check clients) needs
    C{insecure=True}.  With C{tls}, the endpoint is wrapped in TLS that
    requires a client certificate from C{tls.client_ca} (and, if given, one of
    C{tls.allowed_peers}), on any interface.

    @param tls: L{TLSServerOptions}, or a configuration table for
        L{TLSServerOptions.from_config}.
    @param factory_options: keyword arguments for L{DispatcherAMPFactory}.
    @return: a Deferred firing with the L{AMPListener}; failing with
        L{InsecureEndpointError} (and not listening) when refused.
    """
    from twisted.internet.endpoints import serverFromString, wrapServerTLS

    if tls is not None and not isinstance(tls, TLSServerOptions):
        tls = TLSServerOptions.from_config(tls)
    if tls is not None:
        factory_options.setdefault("allowed_peers", tls.allowed_peers)
    factory = DispatcherAMPFactory(dispatcher, reactor=reactor, **factory_options)
    # Nothing is served until the address has been checked.
    factory.accepting = False
    server = serverFromString(reactor, endpoint)
    if tls is not None:
        server = wrapServerTLS(tls.certificate_options(), server)

    def listening(port: Any) -> Any:
        address = port.getHost()
        if tls is None and not insecure and not _is_private(address):

            def refuse(_: object) -> Failure:
                return Failure(
                    InsecureEndpointError(
                        f"{endpoint!r} listens on {address}, beyond this machine, "
                        "without TLS client certificates: pass tls=... (or "
                        "insecure=True if another layer protects it)"
                    )
                )

            return maybeDeferred(port.stopListening).addBoth(refuse)
        factory.accepting = True
        _log.info(
            "AMP endpoint for external processes on {address}{tls}",
            address=str(address),
            tls=" (TLS, client certificates required)" if tls is not None else "",
        )
        return AMPListener(port, factory)

    return server.listen(factory).addCallback(listening)
