"""
What one connected external process serves: the handlers it registered, and
the L{RemotePool} they run in.

The pool is made on its first registration and added to the dispatcher as
C{"amp:<n>"}; when the connection drops, the pool is removed, its handlers
with it, and the invocations it was running end C{"crashed"}.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.internet.defer import succeed
from twisted.logger import Logger

from actordispatch._core.match import to_table
from actordispatch._external.remote_pool import RemotePool

if TYPE_CHECKING:
    from actordispatch._external.server import DispatcherAMP

__all__ = ["PeerHandlers"]

_log = Logger()


class PeerHandlers:
    """
    The handlers one connection serves, and its pool.

    @ivar pool_name: its pool's name in the dispatcher, C{"amp:<n>"}.
    @ivar pool: its L{RemotePool}, once it registered a handler.
    @ivar handler_ids: the name (as the peer gave it) of each of its handlers.
    @ivar handler_matches: the match spec of each of its handlers as
        ListHandlers shows it: as registered, C{null} values included (the
        dispatcher drops them).
    """

    def __init__(self, connection: DispatcherAMP) -> None:
        self._connection = connection
        self.pool_name = f"amp:{connection.number}"
        self.pool: RemotePool | None = None
        self.handler_ids: dict[int, str] = {}
        self.handler_matches: dict[int, dict[str, Any]] = {}

    def ensure_pool(self) -> None:
        """
        Make the pool and add it to the dispatcher, unless it is there.
        """
        if self.pool is not None:
            return
        connection = self._connection
        factory = connection.factory
        self.pool = RemotePool(
            connection,
            reactor=factory.reactor,
            name=self.pool_name,
            default_timeout=factory.default_timeout,
            max_in_flight=factory.max_in_flight_per_connection,
            max_queued=factory.max_queued_per_connection,
            on_protocol_error=connection._broken,
            on_removed=self.forget,
        )
        connection.dispatcher.add_pool(self.pool_name, self.pool).addErrback(
            lambda f: _log.failure("starting pool {pool}", f, pool=self.pool_name)
        )

    def remember(self, handler_id: int, name: str, spec: dict[str, Any]) -> None:
        """
        The dispatcher registered handler C{handler_id} of this peer.
        """
        self.handler_ids[handler_id] = name
        self.handler_matches[handler_id] = {k: to_table(v) for k, v in spec.items()}

    def forget(self, handler_id: int) -> bool:
        """
        However it went (UnregisterHandler, max_calls used up, expiry), a
        removed handler no longer counts toward this connection's cap.

        @return: whether it was one of this peer's.
        """
        self.handler_matches.pop(handler_id, None)
        return self.handler_ids.pop(handler_id, None) is not None

    def lost(self, message: str) -> int:
        """
        The connection is gone: remove the pool and its handlers, and end
        what it was running.

        @return: how many handlers it served.
        """
        if self.pool is not None:
            pool, self.pool = self.pool, None
            # Remove the pool first (its handlers with it), so that nothing
            # retries on it, then end what it was running.
            pool.mark_lost(message)
            try:
                removed = self._connection.dispatcher.remove_pool(self.pool_name)
            except (KeyError, ValueError):
                removed = succeed(None)
            removed.addErrback(
                lambda f: _log.failure("removing pool {pool}", f, pool=self.pool_name)
            )
            pool.connection_lost(message)
        count = len(self.handler_ids)
        self.handler_ids.clear()
        self.handler_matches.clear()
        return count
