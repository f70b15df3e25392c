"""
Publishing for an L{AMQPPool}: the invocations of one event's phase, handed
over in one turn of the reactor, go out in one persistent message to the
headers exchange, with publisher confirms and mandatory routing; a message the
broker refuses or cannot route ends its invocations C{"crashed"}.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import Any

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from actordispatch._amqp.link import _pika
from actordispatch._amqp.replies import Expected, Replies
from actordispatch._amqp.routes import Routes
from actordispatch._amqp.wire import (
    CONTENT_TYPE,
    Target,
    binding_matches,
    encode_request,
    event_headers,
)
from actordispatch._core.invocation import Invocation, Job, settle_when
from actordispatch._core.result import HandlerOutcome, Status

__all__ = ["DIRECT_REPLY_TO", "Publisher"]

#: RabbitMQ's pseudo-queue for direct replies.
DIRECT_REPLY_TO = "amq.rabbitmq.reply-to"

_Batch = list[tuple[Invocation, Deferred[HandlerOutcome]]]


class Publisher:
    """
    Batches a pool's invocations by event and phase, and publishes them.

    @param exchange: the headers exchange.
    @param name: the pool's name, for errors.
    @param prefix: of the correlation ids, unique to the pool.
    @param default_timeout: seconds a handler may run when its registration
        set none.
    @param reply_grace: seconds, beyond a handler's timeout, a message stays
        in its queue.
    @param routes: the registrations' bindings.
    @param replies: where published invocations wait for their outcomes.
    @param channel: returns the pool's channel now (C{None} when it is not
        connected).
    @param unavailable: returns why the broker is unreachable, for outcomes.
    """

    def __init__(
        self,
        *,
        reactor: Any,
        exchange: str,
        name: str,
        prefix: str,
        default_timeout: float,
        reply_grace: float,
        routes: Routes,
        replies: Replies,
        channel: Callable[[], Any],
        unavailable: Callable[[], str],
    ) -> None:
        self._reactor = reactor
        self._exchange = exchange
        self._name = name
        self._prefix = prefix
        self._default_timeout = default_timeout
        self._reply_grace = reply_grace
        self._routes = routes
        self._replies = replies
        self._channel = channel
        self._unavailable = unavailable
        self._batch: dict[tuple[int, str, int], _Batch] = {}
        self._flush_call: Any = None
        self._correlations = itertools.count(1)

    @property
    def queued(self) -> int:
        """
        Invocations not published yet (they go out at the end of this turn of
        the reactor, a phase in one message).
        """
        return sum(len(items) for items in self._batch.values())

    def invoke(self, invocation: Invocation) -> Deferred[HandlerOutcome]:
        """
        Publish C{invocation} with the others of its event's phase (they are
        handed over in the same turn of the reactor: one message per phase).

        @return: a Deferred that always fires with the outcome.
        """
        done: Deferred[HandlerOutcome] = Deferred()
        if self._channel() is None:
            done.callback(
                invocation.outcome(
                    "crashed",
                    error_type="actordispatch.BrokerUnavailable",
                    error_message=self._unavailable(),
                )
            )
            return done
        key = (id(invocation.event), invocation.phase, id(invocation.keywords))
        self._batch.setdefault(key, []).append((invocation, done))
        if self._flush_call is None:
            self._flush_call = self._reactor.callLater(0, self._flush)
        return done

    def submit(self, jobs: Sequence[Job]) -> None:
        """
        Publish a phase's invocations now, in one message per event and phase
        (no wait for the end of the reactor's turn), and settle each job when
        its outcome comes.
        """
        for job in jobs:
            settle_when(self.invoke(job.invocation), job)
        if self._flush_call is not None and self._flush_call.active():
            self._flush_call.cancel()
            self._flush()

    def drop(self, status: Status, error_type: str, message: str) -> None:
        """
        End every invocation not published yet, and publish nothing more
        this turn.
        """
        if self._flush_call is not None and self._flush_call.active():
            self._flush_call.cancel()
        self._flush_call = None
        self.drop_batch(status, error_type, message)

    def drop_batch(self, status: Status, error_type: str, message: str) -> None:
        """
        End every invocation not published yet.
        """
        batch, self._batch = self._batch, {}
        now = self._reactor.seconds()
        for items in batch.values():
            for invocation, done in items:
                self._replies.settle(
                    Expected(invocation, done, "", now), status, error_type, message
                )

    def _flush(self) -> None:
        self._flush_call = None
        batch, self._batch = self._batch, {}
        for items in batch.values():
            self._publish(items)

    def _publish(self, items: _Batch) -> None:
        first = items[0][0]
        headers = event_headers(first.phase, first.keywords)
        correlation = f"{self._prefix}{next(self._correlations)}"
        now = self._reactor.seconds()
        expected: dict[int, Expected] = {}
        targets = []
        settle = self._replies.settle
        for invocation, done in items:
            pending = Expected(invocation, done, correlation, now)
            binding = self._routes.get(invocation.handler_id)
            if self._channel() is None:
                settle(
                    pending,
                    "crashed",
                    "actordispatch.BrokerUnavailable",
                    self._unavailable(),
                )
            elif binding is None:
                settle(
                    pending,
                    "crashed",
                    "actordispatch.NotBound",
                    f"handler {invocation.handler_id} is not bound on AMQP pool "
                    f"{self._name!r}",
                )
            elif not binding_matches(binding.arguments, headers):
                settle(
                    pending,
                    "crashed",
                    "actordispatch.Unroutable",
                    "the exchange cannot route this event to the handler: a "
                    "keyword value of a type headers cannot compare as Python "
                    f"does ({dict(first.keywords)!r:.200})",
                )
            else:
                timeout = invocation.timeout or self._default_timeout
                targets.append(
                    Target(invocation.handler_id, invocation.handler, timeout)
                )
                expected[invocation.handler_id] = pending
        if not targets:
            return
        longest = max(target.timeout for target in targets) + self._reply_grace
        self._replies.expect(
            correlation,
            expected,
            {target.handler_id: target.timeout for target in targets},
        )
        pika, _ = _pika()
        properties = pika.BasicProperties(
            content_type=CONTENT_TYPE,
            delivery_mode=2,
            correlation_id=correlation,
            reply_to=DIRECT_REPLY_TO,
            headers=headers,
            expiration=str(int(longest * 1000)),
        )
        body = encode_request(first.phase, targets, first.event)
        published = self._channel().basic_publish(
            self._exchange, "", body, properties, mandatory=True
        )
        published.addErrback(self._not_published, correlation)

    def _not_published(self, reason: Failure, correlation: str) -> None:
        from pika import exceptions

        if reason.check(exceptions.UnroutableError):
            kind, message = (
                "actordispatch.Unroutable",
                "the broker routed this phase to no queue: its handlers' "
                "bindings are missing (was the exchange or a queue deleted?)",
            )
        elif reason.check(exceptions.NackError):
            kind, message = (
                "actordispatch.BrokerRefused",
                "the broker refused the message (negative publisher confirm)",
            )
        else:
            kind, message = (
                "actordispatch.BrokerConnectionLost",
                f"the message could not be published: {reason.getErrorMessage()}",
            )
        for pending in self._replies.waiting(correlation):
            self._replies.settle(pending, "crashed", kind, message)
