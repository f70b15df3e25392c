"""
The answers to an external peer's commands: L{Fire}, L{RegisterHandler},
L{UnregisterHandler} and L{ListHandlers}.

The peer is not trusted: what it sends is decoded to plain JSON values only
(never to a class it names), every dispatcher-level refusal becomes the
command's error code (never a dropped connection), and what one connection may
hold (handlers, events in flight) is capped by its factory.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from twisted.internet.defer import Deferred, fail
from twisted.logger import Logger
from twisted.protocols import amp
from twisted.python.failure import Failure

from actordispatch._core.errors import (
    EventEncodingError,
    FollowUpError,
    HandlerImportError,
    NotRunningError,
    OverloadedError,
)
from actordispatch._core.match import to_table
from actordispatch._core.options import RESERVED_KEYWORDS, OptionError, check_timeout
from actordispatch._core.result import DispatchResult
from actordispatch._external.wire import (
    EXTERNAL_NAME,
    MAX_NAME_LENGTH,
    BadEventError,
    BadHandlerError,
    BadKeywordError,
    DispatchFailedError,
    Fire,
    ListHandlers,
    RegisterHandler,
    UnknownHandlerError,
    UnregisterHandler,
    _encode_outcomes,
    _json_object,
)
from actordispatch._wire.codec import decode_finite, peer_json
from actordispatch._wire.outcome_json import encode_items
from actordispatch.interfaces import ITimedPool

if TYPE_CHECKING:
    from actordispatch._dispatch.dispatcher import EventDispatcher
    from actordispatch._external.peer import PeerHandlers
    from actordispatch._external.server import DispatcherAMP

__all__ = ["PeerCommands"]

#: Names of C{add_event_handler}'s and C{fire_event}'s own parameters, which a
#: peer's match spec or fired keywords therefore cannot use.
_RESERVED = RESERVED_KEYWORDS

_log = Logger()


class PeerCommands(amp.CommandLocator):
    """
    The responders of one connection's commands (its AMP locator).

    @ivar fires_pending: events this connection fired that have no answer yet.
    """

    def __init__(self, connection: DispatcherAMP, peer: PeerHandlers) -> None:
        self._connection = connection
        self._peer = peer
        self.fires_pending = 0

    @property
    def _dispatcher(self) -> EventDispatcher:
        return self._connection.dispatcher

    @Fire.responder
    def fire(
        self, event: bytes, keywords: str | None = None, within: int | None = None
    ) -> Any:
        """
        L{Fire}: the event is decoded to plain JSON values (a class it names by
        a tag is never built), then fired; every dispatcher-level refusal
        becomes its error code, never a dropped connection.
        """
        if self.fires_pending >= self._connection.factory.max_fires_per_connection:
            raise OverloadedError(
                f"{self.fires_pending} events of this connection are in flight "
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
                fired = self._dispatcher.fire_event(value, **matched)
            except ValueError as e:
                raise BadKeywordError(str(e)) from None
        self.fires_pending += 1

        def answered(result: DispatchResult) -> dict[str, Any]:
            return {"outcomes": _encode_outcomes(result), "ok": result.ok}

        def failed(reason: Failure) -> Failure:
            if reason.check(NotRunningError, OverloadedError):
                return reason
            if reason.check(EventEncodingError):
                return Failure(BadEventError(reason.getErrorMessage()))
            _log.failure(
                "an event fired by {peer} failed",
                reason,
                peer=self._connection.peer_address,
            )
            return Failure(DispatchFailedError(reason.getErrorMessage()))

        def done(result: Any) -> Any:
            self.fires_pending -= 1
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
        pool = self._peer.pool
        calls = [] if pool is None else pool.running(within)
        if not calls:
            raise FollowUpError(
                f"within={within}: no Invoke of that handler is running on this "
                "connection"
            )
        depth = max(call.depth for call in calls) + 1
        _, fired = self._dispatcher.fire_follow_up(depth, event, keywords, None)
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
        peer = self._peer
        if len(name) > MAX_NAME_LENGTH or not EXTERNAL_NAME.match(name):
            raise BadHandlerError(
                f"handler name {name[:MAX_NAME_LENGTH]!r} must be a dotted ASCII "
                f"identifier of at most {MAX_NAME_LENGTH} characters"
            )
        cap = self._connection.factory.max_handlers_per_connection
        if len(peer.handler_ids) >= cap:
            raise OverloadedError(
                f"this connection has {len(peer.handler_ids)} handlers (the cap)"
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
        number = self._connection.number
        full_name = f"external.conn{number}:{name}"
        peer.ensure_pool()
        try:
            added = self._dispatcher.add_event_handler(
                full_name,
                phase,
                pool=peer.pool_name,
                timeout=timeout,
                max_calls=max_calls,
                **spec,
            )
        except (ValueError, TypeError) as e:
            raise BadHandlerError(str(e)) from None

        def registered(handler_id: int) -> dict[str, int]:
            if peer.pool is None:
                # The connection went while the registration was checked.
                self._dispatcher.remove_event_handler(handler_id).addErrback(
                    lambda _: None
                )
            else:
                peer.remember(handler_id, name, spec)
                _log.info(
                    "connection {number} serves handler {handler_id} {handler} "
                    "in phase {phase}",
                    number=number,
                    handler_id=handler_id,
                    handler=full_name,
                    phase=phase,
                )
            return {"handler_id": handler_id}

        def refused(reason: Failure) -> Failure:
            reason.trap(HandlerImportError, ValueError)
            return Failure(BadHandlerError(reason.getErrorMessage()))

        return added.addCallbacks(registered, refused)

    @UnregisterHandler.responder
    def unregister_handler(self, handler_id: int) -> Deferred[dict[str, Any]]:
        """
        L{UnregisterHandler}: only a handler this connection registered.
        """
        if not self._peer.forget(handler_id):
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

        removed = self._dispatcher.remove_event_handler(handler_id)
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
        for connection in self._connection.factory.connections:
            registered.update(connection.peer_handlers.handler_matches)
        pools = self._dispatcher.pools()

        def effective_timeout(timeout: float | None, pool: str) -> float | None:
            if timeout is not None:
                return timeout
            found = pools.get(pool)
            if not ITimedPool.providedBy(found):
                return None
            return float(cast(ITimedPool, found).default_timeout)

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
                "mine": info.pool == self._peer.pool_name
                and self._peer.pool is not None,
            }
            for info in self._dispatcher.handlers()
        ]
        return {"handlers": peer_json(encode_items(listing, "match"))}
