"""
The L{WorkerHost}: serves handlers of dispatchers elsewhere, taking their work
from a RabbitMQ broker and running it in its own local children.

A host consumes the queue of each handler it serves (see L{actordispatch._amqp.wire}
for the topology) with a prefetch limit and manual acknowledgements.  For each
message it runs the invocations the dispatcher targeted at that handler in its
L{AmpoulePool} (the same isolation, limits, timeouts and outcomes as on one
machine), replies with their outcomes to the message's reply-to, and only then
acknowledges the message.  So a host that dies before acknowledging loses
nothing: the broker gives the message to another host, which runs it again,
and the dispatcher records the first outcome it gets.  Delivery to hosts is at
least once; the dispatcher records exactly one outcome per handler.

A message the host cannot read is rejected without requeueing: it would fail
the same way on every host.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Sequence
from typing import Any, cast

from twisted.internet.defer import Deferred, DeferredList, gatherResults, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from actordispatch._amqp.link import BrokerAddress, BrokerLink, ClientTLS, _pika
from actordispatch._amqp.wire import (
    CONTENT_TYPE,
    WireError,
    check_namespace,
    decode_request,
    encode_reply,
    queue_name,
)
from actordispatch._core.result import HandlerOutcome
from actordispatch._wire.codec import DEFAULT_MAX_EVENT_SIZE
from actordispatch.interfaces import IHandlerPool, IProcessPool

__all__ = ["WorkerHost"]

_log = Logger()


class WorkerHost:
    """
    Serve C{handlers} from a broker's queues in local children.

    @param url: the broker (see L{BrokerAddress}).
    @param handlers: the names (C{"pkg.mod:attr"}) of the handlers to serve.
    @param pool: where they run (by default an L{AmpoulePool} of 2 children).
    @param namespace: the dispatchers' namespace (see L{AMQPPool}).
    @param prefetch: messages a host takes before acknowledging any (by
        default twice the pool's L{IProcessPool.size}, or 2 for a pool that
        does not declare it): the rest wait in the queue for other hosts.
    @param tls: TLS options, for an C{amqps://} URL.
    @param max_request_size: cap, in bytes, on one message.
    @param name: this host's name in replies and logs (default
        C{hostname:pid}).
    """

    def __init__(
        self,
        url: str,
        handlers: Sequence[str],
        *,
        pool: IHandlerPool | None = None,
        namespace: str = "actordispatch",
        prefetch: int | None = None,
        tls: ClientTLS | None = None,
        max_request_size: int = DEFAULT_MAX_EVENT_SIZE + 1024 * 1024,
        connect_timeout: float = 5.0,
        name: str | None = None,
        reactor: Any = None,
    ) -> None:
        if reactor is None:
            from twisted.internet import reactor as default_reactor

            reactor = default_reactor
        if not handlers:
            raise ValueError("a worker host needs at least one handler to serve")
        check_namespace(namespace)
        self.queues = {handler: queue_name(namespace, handler) for handler in handlers}
        if pool is None:
            from actordispatch._local.pool import AmpoulePool

            pool = AmpoulePool(size=2, reactor=reactor)
        self.pool = pool
        # Its credit follows the processes serving it, when it declares them.
        size = cast(IProcessPool, pool).size if IProcessPool.providedBy(pool) else 1
        self.prefetch = prefetch if prefetch is not None else 2 * max(1, size)
        if isinstance(self.prefetch, bool) or not isinstance(self.prefetch, int):
            raise ValueError(f"prefetch must be an int, not {prefetch!r}")
        if self.prefetch < 1:
            raise ValueError(f"prefetch must be at least 1, not {prefetch!r}")
        self.max_request_size = max_request_size
        self.name = name or f"{socket.gethostname()}:{os.getpid()}"
        self._reactor = reactor
        self._link = BrokerLink(
            BrokerAddress.parse(url, tls),
            prepare=self._prepare,
            lost=self._connection_lost,
            name=f"worker host {self.name}",
            reactor=reactor,
            connect_timeout=connect_timeout,
        )
        self._consumers: list[tuple[Any, str]] = []
        self._working: set[Deferred[None]] = set()
        #: messages taken, and of those, answered (acknowledged), rejected
        self.taken = 0
        self.answered = 0
        self.rejected = 0

    def start(self) -> Deferred[bool]:
        """
        Start the local children, check that they can import every handler,
        then start taking work.

        @return: a Deferred firing with C{True} once consuming, C{False} if the
            broker was unreachable at first (attempts go on), or failing with
            L{HandlerImportError} if a handler cannot be imported here.
        """

        async def start() -> bool:
            await self.pool.start()
            for name in self.queues:
                await self.pool.check_handler(name)
            return bool(await self._link.start())

        return Deferred.fromCoroutine(start())

    def stop(self) -> Deferred[None]:
        """
        Stop taking work, let what is running finish and be answered, then
        disconnect and stop the children.
        """

        async def stop() -> None:
            for channel, tag in self._consumers:
                if channel.is_open:
                    try:
                        await channel.basic_cancel(tag)
                    except Exception:
                        pass  # the channel closed meanwhile: nothing more arrives
            self._consumers = []
            await DeferredList(list(self._working))
            await self._link.stop()
            await self.pool.stop()

        return Deferred.fromCoroutine(stop())

    def _prepare(self, connection: Any) -> Deferred[None]:
        async def prepare() -> None:
            channel = await connection.channel()
            await channel.basic_qos(prefetch_count=self.prefetch)
            consumers = []
            for handler, queue in self.queues.items():
                await channel.queue_declare(queue, durable=True)
                messages, tag = await channel.basic_consume(queue, auto_ack=False)
                consumers.append((handler, messages, tag))
            self._consumers = [(channel, tag) for _, _, tag in consumers]
            for handler, messages, _ in consumers:
                self._next(handler, messages)
            _log.info(
                "worker host {name}: serving {handlers} (prefetch {prefetch})",
                name=self.name,
                handlers=", ".join(self.queues),
                prefetch=self.prefetch,
            )

        return Deferred.fromCoroutine(prepare())

    def _connection_lost(self, reason: str) -> None:
        # What is running finishes; its reply and ack have nowhere to go, and
        # the broker gives its messages to another host (or to this one, once
        # it is back).
        self._consumers = []

    def _next(self, handler: str, messages: Any) -> None:
        messages.get().addCallbacks(
            self._take, lambda reason: None, callbackArgs=(handler, messages)
        )

    def _take(self, message: Any, handler: str, messages: Any) -> None:
        self.taken += 1
        work = self._work(handler, message)
        self._working.add(work)
        work.addBoth(lambda _: self._working.discard(work))
        self._next(handler, messages)

    def _work(self, handler: str, message: Any) -> Deferred[None]:
        channel = message.channel
        tag = message.method.delivery_tag
        try:
            request = decode_request(message.body, self.max_request_size)
        except WireError as e:
            _log.warn(
                "worker host {name}: rejected a message from {queue}: {error}",
                name=self.name,
                queue=self.queues[handler],
                error=e,
            )
            self.rejected += 1
            if channel.is_open:
                channel.basic_reject(tag, requeue=False)
            return succeed(None)
        invocations = request.invocations(handler)

        async def work() -> None:
            outcomes: list[HandlerOutcome] = list(
                await gatherResults([self.pool.invoke(i) for i in invocations])
            )
            if not channel.is_open:
                return  # the broker will redeliver it
            reply_to = message.properties.reply_to
            if reply_to and outcomes:
                pika, _ = _pika()
                await channel.basic_publish(
                    "",
                    reply_to,
                    encode_reply(outcomes, self.name),
                    pika.BasicProperties(
                        content_type=CONTENT_TYPE,
                        correlation_id=message.properties.correlation_id,
                    ),
                )
            channel.basic_ack(tag)
            self.answered += 1

        def failed(reason: Failure) -> None:
            _log.failure(
                "worker host {name}: could not answer a message from {queue}",
                reason,
                name=self.name,
                queue=self.queues[handler],
            )

        return Deferred.fromCoroutine(work()).addErrback(failed)
