"""
The AMP endpoint for external processes: they fire events into a dispatcher and
serve as handlers for it.

The wire protocol is public and small enough to implement in any language with
an AMP library: its commands and error codes are in L{actordispatch._external.wire}
(re-exported here), and its reference in C{docs/amp-protocol.rst}.  This module
is the server side: L{DispatcherAMP} is one peer's connection, and
L{DispatcherAMPFactory} makes them; L{actordispatch._external.listen} serves
them on endpoints.  The parts of a connection have modules of their own:

  - L{actordispatch._external.flow}: what a peer that does not read its
    answers costs (producer/consumer flow control, commands held);
  - L{actordispatch._external.responders}: the answers to its commands;
  - L{actordispatch._external.peer}: the handlers it serves and their pool.

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
    "Invoke",
    "ListHandlers",
    "RegisterHandler",
    "RemoteHandlerError",
    "RemotePool",
    "UnknownHandlerError",
    "UnregisterHandler",
]

import itertools
from collections.abc import Collection
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.interfaces import IHandshakeListener
from twisted.internet.protocol import ServerFactory
from twisted.logger import Logger
from twisted.protocols import amp
from twisted.python.failure import Failure
from zope.interface import implementer

from actordispatch._external.flow import FlowControlledAMP
from actordispatch._external.peer import PeerHandlers
from actordispatch._external.remote_pool import RemotePool
from actordispatch._external.responders import PeerCommands
from actordispatch._external.wire import (
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
)
from actordispatch._wire.commands import AMP_MAX_VALUE

if TYPE_CHECKING:
    from actordispatch._dispatch.dispatcher import EventDispatcher

_log = Logger()

#: Default cap on one box an external peer sends (bytes of values).
DEFAULT_MAX_BOX_BYTES = 16 * 1024 * 1024
#: Default cap on the time a frame may stay half-sent (seconds without a byte).
DEFAULT_FRAME_TIMEOUT = 30.0

_connection_numbers = itertools.count(1)


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
class DispatcherAMP(FlowControlledAMP):
    """
    The dispatcher's end of one external process's AMP connection.

    It is its transport's producer (see L{FlowControlledAMP}): at most
    C{max_commands_per_connection} of the peer's commands are answered at
    once, and past L{MAX_HELD_BYTES} of commands held, or while its answers
    fill the transport's buffer, the peer is not read.  Answers to its own
    L{Invoke} calls are never held, nor are its follow-up L{Fire}s: a peer
    that fires events its own handlers serve gets their answers through.

    @ivar number: this connection's number (in its pool's and its handlers'
        names).
    @ivar peer_handlers: the handlers it serves, and their pool.
    @ivar commands: the responders of its commands.
    """

    def __init__(self, factory: DispatcherAMPFactory, number: int) -> None:
        self.factory = factory
        self.number = number
        self.peer_handlers = PeerHandlers(self)
        self.commands = PeerCommands(self, self.peer_handlers)
        super().__init__(
            factory.reactor,
            max_commands=factory.max_commands_per_connection,
            max_box_bytes=factory.max_box_bytes,
            max_box_keys=factory.max_box_keys,
            frame_timeout=factory.frame_timeout,
        )
        self._verified = factory.allowed_peers is None
        self._closing: list[Deferred[None]] = []

    @property
    def dispatcher(self) -> EventDispatcher:
        """
        The dispatcher this connection fires into and registers with.
        """
        return self.factory.dispatcher

    @property
    def pool_name(self) -> str:
        """
        Its pool's name in the dispatcher, C{"amp:<n>"}.
        """
        return self.peer_handlers.pool_name

    @property
    def pool(self) -> RemotePool | None:
        """
        Its L{RemotePool}, once it registered a handler.
        """
        return self.peer_handlers.pool

    @property
    def handler_ids(self) -> dict[int, str]:
        """
        The handlers it serves: the name it gave each.
        """
        return self.peer_handlers.handler_ids

    def locateResponder(self, name: bytes) -> Any:
        """
        The peer's commands are answered by L{commands}, and only those.

        AMP's built-in C{StartTLS} is not one of them: it would let any peer
        switch a plaintext connection to TLS with a certificate of its own
        choosing, which nothing here checks against the configured
        authorities (TLS is L{listen}'s, from the first byte, with client
        certificates).  It is answered, as any command that is not ours, with
        AMP's C{UNHANDLED} error, and the connection keeps serving.
        """
        if name == amp.StartTLS.commandName:
            _log.warn(
                "external process at {peer} (connection {number}) asked for "
                "StartTLS: refused",
                peer=self.peer_address,
                number=self.number,
            )
        return self.commands.locateResponder(name)

    def never_held(self, box: amp.AmpBox) -> bool:
        """
        A follow-up L{Fire} is never held: the Invoke it belongs to may wait
        for it, and the commands held may wait for that Invoke.
        """
        return box.get(amp.COMMAND) == Fire.commandName and b"within" in box

    # --- connection ------------------------------------------------------------------

    def connectionMade(self) -> None:
        super().connectionMade()
        transport: Any = self.transport
        self.peer_address = str(transport.getPeer())
        self.factory.connections.add(self)
        register = getattr(transport, "registerProducer", None)
        if register is not None:
            register(self, True)
        _log.info(
            "external process connected from {peer} as connection {number}",
            peer=self.peer_address,
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
                peer=self.peer_address,
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
            peer=self.peer_address,
            number=self.number,
            message=message,
        )
        super().protocol_broken(message)

    def connectionLost(self, reason: Failure) -> None:  # type: ignore[override]
        self.factory.connections.discard(self)
        # Held commands are never answered: none may run while the pool goes
        # (a RegisterHandler would make a new one).
        self.stop_answering()
        message = reason.getErrorMessage()
        handlers = self.peer_handlers.lost(message)
        _log.info(
            "external process at {peer} (connection {number}) gone: {reason}; "
            "{handlers} handlers removed",
            peer=self.peer_address,
            number=self.number,
            reason=message,
            handlers=handlers,
        )
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
