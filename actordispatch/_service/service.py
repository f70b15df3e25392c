"""
A dispatcher as a Twisted service, for C{twistd}/C{twist} applications and for
C{actordispatch serve}.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

from twisted.application.service import Service
from twisted.internet.defer import (
    Deferred,
    DeferredList,
    FirstError,
    fail,
    gatherResults,
    maybeDeferred,
    succeed,
)
from twisted.internet.endpoints import serverFromString
from twisted.logger import Logger
from twisted.python.failure import Failure

from actordispatch._dispatch.dispatcher import EventDispatcher
from actordispatch._local.pool import AmpoulePool
from actordispatch._service.config import ConfigError, ServiceConfig, pool_arguments

if TYPE_CHECKING:
    from actordispatch._amqp.pool import AMQPPool

_log = Logger()

#: Seconds the service waits at start for an AMQP pool's first connection to
#: its broker (C{[pools.NAME] start_timeout}), before it fails to start.
AMQP_START_TIMEOUT = 30.0


def build_dispatcher(config: ServiceConfig, reactor: Any = None) -> EventDispatcher:
    """
    A dispatcher with the pools a configuration declares (handlers not yet
    registered).
    """
    default = AmpoulePool(**pool_arguments(config.pools["default"]), reactor=reactor)
    dispatcher = EventDispatcher(**config.dispatcher, reactor=reactor, pool=default)
    for name, settings in config.pools.items():
        if name != "default":
            dispatcher.add_pool(name, _build_pool(name, settings, reactor))
    return dispatcher


def _build_pool(name: str, settings: dict[str, Any], reactor: Any) -> Any:
    if "amqp" not in settings:
        return AmpoulePool(**pool_arguments(settings), reactor=reactor)
    from actordispatch._amqp.link import ClientTLS
    from actordispatch._amqp.pool import AMQPPool

    arguments = dict(settings)
    url = arguments.pop("amqp")
    tls = arguments.pop("tls", None)
    arguments.pop("start_timeout", None)  # the service's, not the pool's
    return AMQPPool(
        url,
        tls=None if tls is None else ClientTLS(**tls),
        name=name,
        reactor=reactor,
        **arguments,
    )


class DispatcherService(Service):
    """
    Starts the dispatcher and its pools with the application, registers the
    configured handlers, listens where configured, and drains on shutdown
    (L{stop_now} cuts the drain short).

    @ivar dispatcher: the L{EventDispatcher}.
    @ivar ready: fires once the handlers are registered and the endpoints
        listen; fails (and C{on_failure} is called) if any of that fails.
    """

    def __init__(
        self,
        config: ServiceConfig,
        *,
        reactor: Any = None,
        on_failure: Callable[[Failure], None] | None = None,
    ) -> None:
        if reactor is None:
            from twisted.internet import reactor as default_reactor

            reactor = default_reactor
        self.config = config
        self.reactor = reactor
        self.dispatcher = build_dispatcher(config, reactor)
        self.ports: list[Any] = []
        self.ready: Deferred[None] = Deferred()
        self._on_failure = on_failure
        self._stopping: Deferred[None] | None = None
        self._stopped_waiters: list[Deferred[None]] = []
        self._now = False
        self._draining = False

    def startService(self) -> None:
        super().startService()
        self._stopping = None
        self._now = False
        _log.info("starting the dispatcher from {source}", source=self.config.source)
        # Handlers are registered once the pools have started and the brokers
        # of those that need one are connected: binding a handler's queue
        # needs the connection.
        registered = (
            self.dispatcher.start()
            .addCallback(lambda _: self._brokers_connected())
            .addCallback(lambda _: self._register())
        )
        listening = [
            self._listen_amp(description).addErrback(
                self._named, f"listen.endpoints[{index}]"
            )
            for index, description in enumerate(self.config.listen.get("endpoints", []))
        ]
        if self.config.metrics_endpoint is not None:
            from actordispatch._service.metrics import metrics_site

            listening.append(
                self._listen(
                    self.config.metrics_endpoint, metrics_site(self.dispatcher)
                )
            )
        steps: list[Deferred[Any]] = [registered, *listening]
        everything: Deferred[Any] = gatherResults(steps, consumeErrors=True)
        everything.addCallbacks(self._ready, self._failed)

    def _brokers_connected(self) -> Deferred[Any]:
        # Wait for the first connection of each AMQP pool that configured
        # handlers use, up to its start_timeout.
        used = {entry.options.get("pool", "default") for entry in self.config.handlers}
        pools = self.dispatcher.pools()
        waiting = []
        for name, settings in self.config.pools.items():
            if "amqp" not in settings or name not in used:
                continue
            timeout = settings.get("start_timeout", AMQP_START_TIMEOUT)
            pool = cast("AMQPPool", pools[name])
            waiting.append(
                pool.wait_connected(timeout).addErrback(
                    self._unreachable, name, timeout
                )
            )
        return gatherResults(waiting, consumeErrors=True)

    def _unreachable(self, failure: Failure, name: str, timeout: float) -> Failure:
        if not self.running:
            return failure  # stopped while it waited: not a timeout
        pool = cast("AMQPPool", self.dispatcher.pools()[name])
        message = (
            f"{self.config.source}: pools.{name}.amqp: no connection to the broker "
            f"at {pool.address} within {timeout:g} s (pools.{name}.start_timeout): "
            f"{pool.last_error}"
        )
        return Failure(ConfigError(message))

    def _register(self) -> Deferred[Any]:
        return gatherResults(
            [
                self.dispatcher.add_event_handler(
                    entry.handler, entry.phase, **entry.options, **entry.match
                ).addErrback(self._named, f"handlers[{index}].handler")
                for index, entry in enumerate(self.config.handlers)
            ],
            consumeErrors=True,
        )

    def _named(self, failure: Failure, key: str) -> Failure:
        # Name the file and the key, as for every other configuration error.
        message = f"{self.config.source}: {key}: {failure.getErrorMessage()}"
        return Failure(ConfigError(message))

    def _listen_amp(self, description: str) -> Deferred[Any]:
        # The AMP endpoint for external processes: plaintext only on loopback or
        # a UNIX socket unless the configuration insists; TLS with client
        # certificates from [listen.tls].
        from actordispatch._external.listen import listen

        options = self.config.listen
        extra = {}
        if "max_in_flight_per_connection" in options:
            extra["max_in_flight_per_connection"] = options[
                "max_in_flight_per_connection"
            ]
        try:
            d = listen(
                self.reactor,
                self.dispatcher,
                description,
                insecure=options.get("insecure", False),
                tls=options.get("tls"),
                **extra,
            )
        except Exception:
            return fail(Failure())
        return d.addCallback(self.ports.append)

    def _listen(self, description: str, factory: Any) -> Deferred[Any]:
        endpoint = serverFromString(self.reactor, description)
        d = endpoint.listen(factory)
        d.addCallback(self.ports.append)
        return d

    def _ready(self, _: object) -> None:
        _log.info(
            "dispatcher ready: {handlers} handlers, listening on {ports}",
            handlers=len(self.config.handlers),
            ports=[str(p.getHost()) for p in self.ports],
        )
        self.ready.callback(None)

    def _failed(self, failure: Failure) -> None:
        reason = failure
        while isinstance(reason.value, FirstError):
            reason = reason.value.subFailure
        if not self.running:
            # Stopped while it started: what failed is the stop's doing.
            _log.info(
                "the dispatcher stopped before it was ready: {error}",
                error=reason.getErrorMessage(),
            )
            self.ready.errback(reason)
            self.ready.addErrback(lambda _: None)
            return
        _log.critical(
            "dispatcher failed to start: {error}", error=reason.getErrorMessage()
        )
        self.ready.errback(reason)
        self.ready.addErrback(lambda _: None)
        if self._on_failure is not None:
            self._on_failure(reason)

    def stopService(self) -> Deferred[None]:
        """
        Stop listening, drain the dispatcher while the AMP connections stay
        open (a peer waiting for an event's outcomes gets them; an external
        process serving handlers finishes what it runs), then close them.

        @return: a Deferred firing once all that is done.
        """
        from actordispatch._external.listen import AMPListener

        super().stopService()
        ports, self.ports = self.ports, []
        listeners = [port for port in ports if isinstance(port, AMPListener)]
        closing = [
            maybeDeferred(
                port.port.stopListening
                if isinstance(port, AMPListener)
                else port.stopListening
            )
            for port in ports
        ]

        def disconnect(result: object) -> Deferred[Any]:
            closed = DeferredList(
                [listener.factory.disconnect_all() for listener in listeners],
                consumeErrors=True,
            )
            return closed.addCallback(lambda _: result)

        stopping: Deferred[Any] = DeferredList(closing, consumeErrors=True)
        stopping.addCallback(lambda _: self._drain())
        stopping.addBoth(disconnect)
        self._stopping = stopping
        stopping.addBoth(self._stopped)
        return stopping

    def _drain(self) -> Deferred[None]:
        self._draining = True

        def drained(result: object) -> object:
            self._draining = False
            return result

        return self.dispatcher.stop(drain_timeout=0 if self._now else None).addBoth(
            drained
        )

    def _stopped(self, result: object) -> object:
        self._stopping = None
        waiting, self._stopped_waiters = self._stopped_waiters, []
        for waiter in waiting:
            waiter.callback(None)
        return result

    def stop_now(self) -> Deferred[None]:
        """
        Stop at once, or cut short the drain that L{stopService} began: the
        invocations still running are killed (outcome C{"timeout"}) and those
        not started end C{"skipped"}, as when C{drain_timeout} passes, so that
        every accepted event gets its outcomes now and a peer waiting for them
        receives them; then the children stop and the connections close.

        @return: a Deferred firing once stopped.
        """
        self._now = True
        if self.running:
            return self.stopService()
        if self._stopping is None:
            return succeed(None)  # stopped already, or never started
        if self._draining:
            # The dispatcher's own stop() reports any failure of it.
            self.dispatcher.stop(drain_timeout=0).addErrback(lambda _: None)
        waiter: Deferred[None] = Deferred()
        self._stopped_waiters.append(waiter)
        return waiter
