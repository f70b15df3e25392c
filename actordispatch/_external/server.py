"""
The AMP endpoint for external processes: they fire events into a dispatcher and
serve as handlers for it.

The wire protocol is public and small enough to implement in any language with
an AMP library: its commands and error codes are in L{actordispatch._external.wire}
(re-exported here), and its reference in C{docs/amp-protocol.rst}.  This module
is the server side: L{DispatcherAMP} answers a peer's commands, and L{listen}
serves them on endpoints.

Each connection that registers a handler gets its own L{RemotePool} (the
L{IHandlerPool} of that one peer), added to the dispatcher as C{"amp:<n>"}; its
handlers are named C{"external.conn<n>:<name>"}.  When the connection drops,
the pool is removed, and so are its handlers; invocations it was running end
C{"crashed"}.

The peer is not trusted: boxes are capped in bytes and keys (L{GuardedAMP}), a
malformed frame or a box over a cap drops it, events and values it sends are
decoded to plain JSON values only (never to a class it names), and every
per-connection resource (handlers, calls in flight and queued, events in
flight) is bounded.  So is what a peer that does not read its answers costs:
the dispatcher stops reading from it while its answers fill the transport's
buffer (Twisted's producer/consumer flow control), and while too many of its
commands are being answered, later ones wait unread.  L{listen} refuses
plaintext TCP beyond loopback unless told C{insecure=True}, and serves TLS with
client certificates from a configured CA.
"""

from __future__ import annotations

# The wire names and the pool stay importable from here, where they were.
__all__ = [
    "BadEventError",
    "BadHandlerError",
    "BadKeywordError",
    "DispatchFailedError",
    "DispatcherAMP",
    "DispatcherAMPFactory",
    "Fire",
    "InsecureEndpointError",
    "Invoke",
    "ListHandlers",
    "RegisterHandler",
    "RemoteHandlerError",
    "RemotePool",
    "TLSServerOptions",
    "UnknownHandlerError",
    "UnregisterHandler",
    "listen",
]

import ipaddress
import itertools
from collections import deque
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from attrs import define, field, frozen
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.defer import Deferred, DeferredList, fail, maybeDeferred, succeed
from twisted.internet.interfaces import IHandshakeListener, IPushProducer
from twisted.internet.protocol import ServerFactory
from twisted.logger import Logger
from twisted.protocols import amp
from twisted.python.failure import Failure
from zope.interface import implementer

from actordispatch._core.errors import (
    ActorDispatchError,
    EventEncodingError,
    FollowUpError,
    HandlerImportError,
    NotRunningError,
    OverloadedError,
)
from actordispatch._core.match import to_table
from actordispatch._core.options import RESERVED_KEYWORDS, OptionError, check_timeout
from actordispatch._core.result import DispatchResult
from actordispatch._external.remote_pool import RemotePool
from actordispatch._external.wire import (
    EXTERNAL_NAME,
    MAX_NAME_LENGTH,
    BadEventError,
    BadHandlerError,
    BadKeywordError,
    DispatchFailedError,
    Fire,
    Invoke,
    ListHandlers,
    RegisterHandler,
    RemoteHandlerError,
    UnknownHandlerError,
    UnregisterHandler,
    _encode_outcomes,
    _json_object,
)
from actordispatch._wire.codec import decode_finite, peer_json
from actordispatch._wire.commands import AMP_MAX_VALUE
from actordispatch._wire.guarded import GuardedAMP
from actordispatch._wire.outcome_json import encode_items

if TYPE_CHECKING:
    from actordispatch._dispatch.dispatcher import EventDispatcher

#: Names of C{add_event_handler}'s and C{fire_event}'s own parameters, which a
#: peer's match spec or fired keywords therefore cannot use.
_RESERVED = RESERVED_KEYWORDS

_log = Logger()

#: Default cap on one box an external peer sends (bytes of values).
DEFAULT_MAX_BOX_BYTES = 16 * 1024 * 1024
#: Default cap on the time a frame may stay half-sent (seconds without a byte).
DEFAULT_FRAME_TIMEOUT = 30.0
#: Beyond this many bytes of commands held (see
#: L{DispatcherAMPFactory}'s C{max_commands_per_connection}), the peer is not
#: read until some are answered.
MAX_HELD_BYTES = 1024 * 1024

_connection_numbers = itertools.count(1)


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


def _box_size(box: amp.AmpBox) -> int:
    return sum(len(key) + len(value) for key, value in box.items())


@implementer(IHandshakeListener, IPushProducer)
class DispatcherAMP(GuardedAMP):
    """
    The dispatcher's end of one external process's AMP connection.

    It is its transport's producer: when the answers it writes fill the
    transport's buffer (the peer does not read them), the transport pauses
    it, and it stops reading from the peer until the buffer drains.  At most
    C{max_commands_per_connection} of the peer's commands are answered at
    once (running, or answered while the buffer is full); later ones are held
    unanswered, in order, and past L{MAX_HELD_BYTES} of them the peer is not
    read either.  Answers to its own L{Invoke} calls are never held: a peer
    that fires events its own handlers serve gets their answers through.

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
        #: the match spec of each of its handlers as ListHandlers shows it:
        #: as registered, C{null} values included (the dispatcher drops them)
        self.handler_matches: dict[int, dict[str, Any]] = {}
        self._fires_pending = 0
        self._peer = "?"
        self._verified = factory.allowed_peers is None
        self._closing: list[Deferred[None]] = []
        # Flow control: commands dispatched and not answered yet, answers
        # written while the transport's buffer was full, commands held (with
        # their sizes), and why reading stopped.
        self._commands = 0
        self._unsent = 0
        self._held: deque[tuple[amp.AmpBox, int]] = deque()
        self._held_bytes = 0
        self._running_held = False
        self._writes_full = False
        self._stopped = False
        self._receiving = 0

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
        register = getattr(transport, "registerProducer", None)
        if register is not None:
            register(self, True)
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
        self._receiving += 1
        try:
            super().dataReceived(data)
        finally:
            self._receiving -= 1

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
        # Held commands are never answered: none may run while the pool goes
        # (a RegisterHandler would make a new one).
        self._stopped = True
        self._held.clear()
        self._held_bytes = 0
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
        self.handler_matches.clear()
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

    # --- flow control ----------------------------------------------------------------

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
        self._stopped = True
        self._held.clear()
        self._held_bytes = 0
        self.paused = True

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
        return self._commands + self._unsent >= self.factory.max_commands_per_connection

    def ampBoxReceived(self, box: amp.AmpBox) -> None:
        # A command as AMP sees it: a box with an answer's or error's key is
        # one of those, whatever else it has.
        command = amp.COMMAND in box and amp.ANSWER not in box and amp.ERROR not in box
        if command and (self._held or self._busy()) and not self.broken:
            if box.get(amp.COMMAND) == Fire.commandName and b"within" in box:
                # A follow-up: the Invoke it belongs to may wait for it, and
                # the commands held may wait for that Invoke.
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
                peer=self._peer,
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
            value = decode_finite(event)
        except Exception as e:
            raise BadEventError(
                f"the event is not JSON with finite numbers: {type(e).__name__}: {e}"
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
        _, fired = self.dispatcher.fire_follow_up(depth, event, keywords, None)
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
        try:
            check_timeout(timeout, finite=True)
        except OptionError as e:
            raise BadHandlerError(str(e)) from None
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
                self.handler_matches[handler_id] = {
                    k: to_table(v) for k, v in spec.items()
                }
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
            on_removed=self._handler_removed,
        )
        self.dispatcher.add_pool(self.pool_name, self.pool).addErrback(
            lambda f: _log.failure("starting pool {pool}", f, pool=self.pool_name)
        )

    def _handler_removed(self, handler_id: int) -> None:
        # However it went (UnregisterHandler, max_calls used up, expiry), a
        # removed handler no longer counts toward this connection's cap.
        self.handler_ids.pop(handler_id, None)
        self.handler_matches.pop(handler_id, None)

    @UnregisterHandler.responder
    def unregister_handler(self, handler_id: int) -> Deferred[dict[str, Any]]:
        """
        L{UnregisterHandler}: only a handler this connection registered.
        """
        self.handler_matches.pop(handler_id, None)
        if self.handler_ids.pop(handler_id, None) is None:
            return fail(
                UnknownHandlerError(
                    f"handler {handler_id} is not one this connection serves: "
                    "never registered here, or already removed"
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

        C{match} is a handler's spec with operators as tables, as registered
        over AMP (C{null} values too), else the keywords it constrains;
        C{timeout} is the one its invocations get: its own, else its pool's
        default (C{None} for a pool that has none).
        """
        registered: dict[int, dict[str, Any]] = {}
        for connection in self.factory.connections:
            registered.update(connection.handler_matches)
        pools = self.dispatcher.pools()

        def effective_timeout(timeout: float | None, pool: str) -> float | None:
            if timeout is not None:
                return timeout
            default = getattr(pools.get(pool), "default_timeout", None)
            return float(default) if isinstance(default, (int, float)) else None

        listing = [
            {
                "handler_id": info.handler_id,
                "handler": info.handler,
                "phase": info.phase,
                "pool": info.pool,
                "match": registered.get(info.handler_id)
                or {k: to_table(v) for k, v in info.match_spec.items()},
                "max_calls": info.max_calls,
                "timeout": effective_timeout(info.timeout, info.pool),
                "calls": info.calls,
                "failures": info.failures,
                "p50": info.p50,
                "p90": info.p90,
                "p99": info.p99,
                "mine": info.pool == self.pool_name and self.pool is not None,
            }
            for info in self.dispatcher.handlers()
        ]
        return {"handlers": peer_json(encode_items(listing, "match"))}


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
    @param max_commands_per_connection: commands of one peer answered at once
        (running, or answered while it does not read its answers); later ones
        wait unanswered, and past L{MAX_HELD_BYTES} of them the peer is not
        read until there is room.
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
        max_commands_per_connection: int = 64,
        max_connections: int = 256,
        allowed_peers: Collection[str] | None = None,
    ) -> None:
        if reactor is None:
            from twisted.internet import reactor as default_reactor

            reactor = default_reactor
        if max_in_flight_per_connection < 1:
            raise ValueError("max_in_flight_per_connection must be at least 1")
        if max_commands_per_connection < 1:
            raise ValueError("max_commands_per_connection must be at least 1")
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
        self.max_commands_per_connection = max_commands_per_connection
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
