"""
One connection to a RabbitMQ broker, kept up: connect, prepare (declare, bind,
consume), and when the connection drops, say so at once and reconnect with a
growing delay.  Both sides use it: the dispatcher's L{AMQPPool} and the worker
hosts.

The AMQP client is pika 1.x's Twisted adapter (see docs/amqp-client.rst for why):
Twisted makes the TCP (or TLS) connection through an endpoint, pika speaks AMQP
over it, and L{BrokerLink} reconnects with a growing delay.  Nothing outside
this module and the two users above imports pika, so the client can be swapped.

Credentials never reach a log: connections are named by C{BrokerAddress.__str__}
(host, port and vhost), and URLs in messages go through L{safe_url}.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from attrs import frozen
from twisted.internet.defer import Deferred, succeed
from twisted.internet.endpoints import (
    HostnameEndpoint,
    connectProtocol,
    wrapClientTLS,
)
from twisted.internet.protocol import Factory, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure

from actordispatch._amqp.wire import exchange_name, queue_name
from actordispatch._core.errors import ActorDispatchError, BrokerUnavailableError

_log = Logger()


def _pika() -> Any:
    try:
        import pika
        from pika.adapters import twisted_connection
    except ImportError:  # pragma: no cover - pika is in the amqp and test extras
        raise ActorDispatchError(
            "the AMQP transport needs pika: pip install 'actordispatch[amqp]'"
        ) from None
    return pika, twisted_connection


@frozen
class ClientTLS:
    """
    TLS for the connection to the broker.

    @ivar ca: PEM file of the certificate authorities to trust (C{None}: the
        platform's).
    @ivar certificate: PEM file of this side's certificate, for a broker that
        authenticates clients by certificate (with C{key}).  Given a
        certificate and a URL without a user name, the connection logs in with
        SASL C{EXTERNAL}: the broker takes the user name from the certificate.
    @ivar key: PEM file of its private key (default: in C{certificate}).
    @ivar hostname: the name the broker's certificate must carry (default: the
        URL's host).
    """

    ca: str | None = None
    certificate: str | None = None
    key: str | None = None
    hostname: str | None = None

    def options(self, host: str) -> Any:
        """
        The Twisted client TLS options for a broker at C{host}.
        """
        from twisted.internet.ssl import (
            Certificate,
            PrivateCertificate,
            optionsForClientTLS,
        )

        trust = None
        if self.ca is not None:
            trust = Certificate.loadPEM(Path(self.ca).read_bytes())
        client = None
        if self.certificate is not None:
            pem = Path(self.certificate).read_bytes()
            if self.key is not None:
                pem += b"\n" + Path(self.key).read_bytes()
            client = PrivateCertificate.loadPEM(pem)
        return optionsForClientTLS(
            self.hostname or host, trustRoot=trust, clientCertificate=client
        )


@frozen
class BrokerAddress:
    """
    Where a broker is and how to log in, parsed from an C{amqp://} or
    C{amqps://} URL (pika's URL syntax: C{amqp://user:password@host:port/vhost
    ?heartbeat=10}).
    """

    url: str
    host: str
    port: int
    vhost: str
    tls: ClientTLS | None
    external: bool

    @classmethod
    def parse(cls, url: str, tls: ClientTLS | None = None) -> BrokerAddress:
        """
        @raise ValueError: for a URL that is not C{amqp://} or C{amqps://}, or
            TLS options given for a plain C{amqp://} URL.
        """
        if not isinstance(url, str):
            raise ValueError(f"the broker URL must be a string, not {url!r}")
        parts = urlsplit(url)
        if parts.scheme not in ("amqp", "amqps") or not parts.hostname:
            raise ValueError(
                "the broker URL must look like amqp://user:password@host:5672/vhost "
                f"or amqps://host:5671/vhost, not {safe_url(url)!r}"
            )
        if parts.scheme == "amqp" and tls is not None:
            raise ValueError("TLS options need an amqps:// URL")
        if parts.scheme == "amqps" and tls is None:
            tls = ClientTLS()
        try:
            port = parts.port or (5671 if parts.scheme == "amqps" else 5672)
        except ValueError as e:
            raise ValueError(f"bad port in broker URL: {e}") from None
        vhost = unquote(parts.path[1:]) if len(parts.path) > 1 else "/"
        return cls(
            url=url,
            host=parts.hostname,
            port=port,
            vhost=vhost,
            tls=tls,
            external=(
                tls is not None
                and tls.certificate is not None
                and parts.username is None
            ),
        )

    def __str__(self) -> str:
        scheme = "amqps" if self.tls is not None else "amqp"
        return f"{scheme}://{self.host}:{self.port}/{self.vhost}"

    def parameters(self) -> Any:
        """
        pika's connection parameters (host and port are Twisted's business).
        """
        pika, _ = _pika()
        url = self.url.replace("amqps://", "amqp://", 1)
        parameters = pika.URLParameters(url)
        if self.external:
            parameters.credentials = pika.credentials.ExternalCredentials()
        return parameters

    def endpoint(self, reactor: Any, timeout: float) -> Any:
        """
        The Twisted client endpoint that reaches the broker.
        """
        tcp = HostnameEndpoint(reactor, self.host, self.port, timeout=timeout)
        if self.tls is None:
            return tcp
        return wrapClientTLS(self.tls.options(self.host), tcp)


def safe_url(url: str) -> str:
    """
    C{url} without its password, for messages.
    """
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return parts._replace(netloc=f"{user}:***@{netloc}").geturl()


class BrokerLink:
    """
    A connection to a broker that is kept up: after a failed attempt or a lost
    connection it tries again after a delay that doubles from 0.1 s up to
    C{max_retry_delay}, until L{stop}.

    (Twisted's C{ClientService} would do the retrying, but it cannot take a
    connection that closes after its C{prepareConnection} failed, which is
    what a broker refusing a login or a declaration does.)

    @param address: where the broker is.
    @param prepare: called with each new pika connection (a
        C{TwistedProtocolConnection}, ready); returns a Deferred that fires
        once the connection is set up for use (channels opened, queues declared
        ...).  If it fails, the connection is dropped and retried.
    @param lost: called with a reason when a prepared connection is lost.
    @param name: what the link serves, for logs.
    """

    def __init__(
        self,
        address: BrokerAddress,
        *,
        prepare: Callable[[Any], Deferred[Any]],
        lost: Callable[[str], None],
        name: str,
        reactor: Any,
        connect_timeout: float = 5.0,
        max_retry_delay: float = 5.0,
    ) -> None:
        self.address = address
        self._prepare = prepare
        self._lost = lost
        self._name = name
        self._reactor = reactor
        self._max_retry_delay = max_retry_delay
        self._endpoint = address.endpoint(reactor, connect_timeout)
        self.connection: Any = None
        self.last_error = "not connected yet"
        self._first: Deferred[bool] | None = None
        self._running = False
        self._attempt: Deferred[Any] | None = None
        self._retry: Any = None
        self._delay = 0.1
        self._closed: Deferred[None] | None = None
        self._up_waiters: list[Deferred[None]] = []
        _, twisted_connection = _pika()
        parameters = address.parameters()
        link = self

        class Connection(twisted_connection.TwistedProtocolConnection):  # type: ignore[name-defined]
            def connectionLost(self, reason: Failure = connectionDone) -> None:
                super().connectionLost(reason)
                link._connection_lost(self, reason)

        self._factory = Factory.forProtocol(
            lambda: Connection(parameters, custom_reactor=reactor)
        )

    @property
    def up(self) -> bool:
        """
        Whether a prepared connection is open now.
        """
        return self.connection is not None

    def when_up(self) -> Deferred[None]:
        """
        Wait for a prepared connection: now, if one is open; else the next
        one, after as many attempts as it takes.

        @return: a Deferred firing then; cancelling it stops the wait (not the
            attempts), and it fails with L{BrokerUnavailableError} if the link
            is stopped first.
        """
        if self.connection is not None:
            return succeed(None)

        def cancel(waiter: Deferred[None]) -> None:
            if waiter in self._up_waiters:
                self._up_waiters.remove(waiter)

        waiter: Deferred[None] = Deferred(cancel)
        self._up_waiters.append(waiter)
        return waiter

    def start(self) -> Deferred[bool]:
        """
        Start connecting (and reconnecting, until L{stop}).

        @return: a Deferred firing with C{True} once connected and prepared,
            or with C{False} if the first attempt failed (the reason is
            logged, and attempts go on in the background).
        """
        first: Deferred[bool] = Deferred()
        self._first = first
        self._running = True
        self._delay = 0.1
        self._connect()
        return first

    def stop(self) -> Deferred[None]:
        """
        Close the connection (or give up the attempt) and stop reconnecting.

        @return: a Deferred firing once the connection is closed.
        """
        self._running = False
        waiters, self._up_waiters = self._up_waiters, []
        for waiter in waiters:
            waiter.errback(
                BrokerUnavailableError(
                    f"{self._name} stopped before it connected to the broker at "
                    f"{self.address}"
                )
            )
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        self._retry = None
        if self._attempt is not None:
            self._attempt.cancel()
        connection, self.connection = self.connection, None
        if connection is None or connection.transport is None:
            return succeed(None)
        closed: Deferred[None] = Deferred()
        self._closed = closed
        if connection.is_open:
            connection.close()
        else:
            connection.transport.abortConnection()
        # A broker that does not answer the close handshake is cut off.
        timer = self._reactor.callLater(5, connection.transport.abortConnection)
        return closed.addBoth(lambda result: timer.active() and timer.cancel())

    def _report(self, connected: bool) -> None:
        first, self._first = self._first, None
        if first is not None:
            first.callback(connected)

    def _connect(self) -> None:
        self._retry = None
        attempt = self._endpoint.connect(self._factory)
        self._attempt = attempt

        def connected(connection: Any) -> Deferred[Any]:
            ready = connection.ready
            if ready is None:
                raise ConnectionError("the connection closed before it was ready")
            return (
                ready.addCallback(lambda _: self._prepare(connection))
                .addCallback(lambda _: connection)
                .addErrback(self._drop, connection)
            )

        attempt.addCallback(connected).addCallbacks(self._prepared, self._failed)

    def _drop(self, reason: Failure, connection: Any) -> Failure:
        if connection.transport is not None:
            connection.transport.abortConnection()
        return reason

    def _prepared(self, connection: Any) -> None:
        self._attempt = None
        if not self._running:
            connection.transport.abortConnection()
            return
        self.connection = connection
        self._delay = 0.1
        _log.info(
            "{name}: connected to the broker at {address}",
            name=self._name,
            address=str(self.address),
        )
        self._report(True)
        waiters, self._up_waiters = self._up_waiters, []
        for waiter in waiters:
            waiter.callback(None)

    def _failed(self, reason: Failure) -> None:
        self._attempt = None
        if not self._running:
            return
        self.last_error = reason.getErrorMessage() or repr(reason.value)
        log = _log.error if self._first is not None else _log.warn
        log(
            "{name}: cannot connect to the broker at {address}: {error}; "
            "retrying in {delay:.1f}s",
            name=self._name,
            address=str(self.address),
            error=self.last_error,
            delay=self._delay,
        )
        self._report(False)
        self._schedule()

    def _schedule(self) -> None:
        self._retry = self._reactor.callLater(self._delay, self._connect)
        self._delay = min(self._delay * 2, self._max_retry_delay)

    def _connection_lost(self, connection: Any, reason: Failure) -> None:
        if connection is not self.connection:
            if self._closed is not None and self.connection is None:
                closed, self._closed = self._closed, None
                closed.callback(None)
            return  # never prepared (the attempt reports it), or stopped
        self.connection = None
        self.last_error = f"connection lost: {reason.getErrorMessage()}"
        _log.warn(
            "{name}: lost the connection to the broker at {address}: {error}",
            name=self._name,
            address=str(self.address),
            error=reason.getErrorMessage(),
        )
        self._lost(self.last_error)
        if self._running:
            self._schedule()


async def delete_namespace(
    url: str,
    namespace: str,
    handlers: Iterable[str],
    *,
    reactor: Any = None,
    tls: ClientTLS | None = None,
    timeout: float = 10.0,
) -> None:
    """
    Delete what a namespace declared on the broker: the queue of each of
    C{handlers} (by handler name) and the events exchange.  Queues outlive
    their handlers by design (they are durable); this is for tests,
    benchmarks and retiring a namespace.  Messages still queued are lost.

    @raise BrokerUnavailableError: if the broker cannot be reached.
    """
    if reactor is None:
        from twisted.internet import reactor as default_reactor

        reactor = default_reactor
    address = BrokerAddress.parse(url, tls)
    _, twisted_connection = _pika()
    try:
        connection = await connectProtocol(
            address.endpoint(reactor, timeout),
            twisted_connection.TwistedProtocolConnection(
                address.parameters(), custom_reactor=reactor
            ),
        )
        await connection.ready
    except Exception as e:
        raise BrokerUnavailableError(
            f"cannot reach the broker at {address}: {e}"
        ) from None
    try:
        channel = await connection.channel()
        for handler in sorted(set(handlers)):
            await channel.queue_delete(queue_name(namespace, handler))
        await channel.exchange_delete(exchange_name(namespace))
    finally:
        await connection.close()
