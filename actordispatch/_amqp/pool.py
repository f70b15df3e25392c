"""
The L{AMQPPool}: handlers that run on worker hosts behind a RabbitMQ broker.

The dispatcher plans each event as it does for local handlers, then hands the
pool the invocations of a phase.  The pool publishes the phase once to the
headers exchange, with the event's keywords as headers, a correlation id, the
direct reply-to, persistence, publisher confirms and mandatory routing; the
exchange copies it to the queue of every matching handler, and worker hosts
(L{WorkerHost}) consuming those queues run the invocations in their own children
and reply.  The expected handlers are the barrier: the phase ends when each has
exactly one outcome.  Replies nobody expects (a duplicate after a redelivery, a
reply after a timeout) are counted and ignored.

Failures are outcomes, never hangs:

  - the broker is unreachable: invocations end C{"crashed"} with
    C{error_type="actordispatch.BrokerUnavailable"} at once (the connection is
    retried in the background, and the pool serves again once it is back);
  - the connection is lost: invocations waiting for replies end C{"crashed"}
    (C{"actordispatch.BrokerConnectionLost"}): a worker host may still run
    them, since delivery to hosts is at least once;
  - no reply within the handler's timeout plus C{reply_grace}: C{"timeout"}
    (C{"actordispatch.NoReply"}); the message expires from its queue then, so
    a host that comes late does not run stale work.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Sequence
from typing import Any

from attrs import define
from twisted.internet.defer import Deferred, fail
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from actordispatch._amqp.link import (
    BrokerAddress,
    BrokerLink,
    ClientTLS,
    _pika,
)
from actordispatch._amqp.wire import (
    CONTENT_TYPE,
    Target,
    WireError,
    binding_arguments,
    binding_matches,
    check_namespace,
    decode_reply,
    encode_request,
    event_headers,
    exchange_name,
    queue_name,
)
from actordispatch._core.errors import BrokerUnavailableError
from actordispatch._core.invocation import Invocation, Job, settle_when
from actordispatch._core.match import MatchSpec
from actordispatch._core.result import HandlerOutcome, Status
from actordispatch._wire.codec import DEFAULT_MAX_REPLY_SIZE
from actordispatch._wire.outcome_json import outcome_from_json
from actordispatch.interfaces import IConnectedPool, IJobPool, IProcessPool, IRoutedPool

__all__ = ["AMQPPool"]

_log = Logger()

#: RabbitMQ's pseudo-queue for direct replies.
DIRECT_REPLY_TO = "amq.rabbitmq.reply-to"


@define(eq=False)
class _Expected:
    """
    One invocation published and waiting for its outcome.
    """

    invocation: Invocation
    done: Deferred[HandlerOutcome]
    correlation: str
    sent: float
    timer: Any = None


@define(eq=False)
class _Binding:
    queue: str
    arguments: dict[str, str]


@implementer(IRoutedPool, IJobPool, IProcessPool, IConnectedPool)
class AMQPPool:
    """
    Handlers that run on worker hosts reached through a RabbitMQ broker.

    @param url: the broker, C{amqp://user:password@host:port/vhost} or
        C{amqps://...} (see L{BrokerAddress}).
    @param namespace: the prefix of the exchange and queue names; dispatchers
        and worker hosts that work together use the same one.
    @param default_timeout: seconds a handler may run when its registration
        set none (the worker host enforces it; it is sent with the work).
    @param reply_grace: seconds, beyond a handler's timeout, to wait for its
        reply before its outcome is C{"timeout"} (time in queues and on the
        wire, and a host's restart).
    @param tls: TLS options, for an C{amqps://} URL (client certificates and
        SASL EXTERNAL: see L{ClientTLS}).
    @param max_reply_size: cap, in bytes, on one reply from a worker host.
    @param connect_timeout: seconds one connection attempt may take.
    """

    def __init__(
        self,
        url: str,
        *,
        namespace: str = "actordispatch",
        default_timeout: float = 60.0,
        reply_grace: float = 10.0,
        tls: ClientTLS | None = None,
        max_reply_size: int = DEFAULT_MAX_REPLY_SIZE,
        connect_timeout: float = 5.0,
        name: str = "amqp",
        reactor: Any = None,
    ) -> None:
        if reactor is None:
            from twisted.internet import reactor as default_reactor

            reactor = default_reactor
        for label, value in (
            ("default_timeout", default_timeout),
            ("reply_grace", reply_grace),
            ("connect_timeout", connect_timeout),
        ):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"{label} must be a number, not {value!r}")
            if value <= 0:
                raise ValueError(f"{label} must be positive, not {value!r}")
        self.address = BrokerAddress.parse(url, tls)
        self.namespace = check_namespace(namespace)
        self.exchange = exchange_name(namespace)
        self.default_timeout = float(default_timeout)
        self.reply_grace = float(reply_grace)
        self.max_reply_size = max_reply_size
        self.name = name
        self._reactor = reactor
        self._link = BrokerLink(
            self.address,
            prepare=self._prepare,
            lost=self._connection_lost,
            name=f"AMQP pool {name!r}",
            reactor=reactor,
            connect_timeout=connect_timeout,
        )
        self._channel: Any = None
        self._bindings: dict[int, _Binding] = {}
        self._expected: dict[str, dict[int, _Expected]] = {}
        self._batch: dict[
            tuple[int, str, int], list[tuple[Invocation, Deferred[HandlerOutcome]]]
        ] = {}
        self._flush_call: Any = None
        self._correlations = itertools.count(1)
        self._prefix = f"{os.getpid()}.{id(self):x}."
        self._started: Deferred[bool] | None = None
        #: replies (or outcomes in them) that no invocation was waiting for
        self.ignored_replies = 0

    # --- introspection -------------------------------------------------------------

    @property
    def up(self) -> bool:
        """
        Whether the pool is connected to its broker now.
        """
        return self._channel is not None

    @property
    def last_error(self) -> str:
        """
        Why the last connection attempt failed or the connection was lost
        (C{"not connected yet"} before the first attempt ends).
        """
        return str(self._link.last_error)

    @property
    def in_flight(self) -> int:
        """
        Invocations published and waiting for their outcomes.
        """
        return sum(len(expected) for expected in self._expected.values())

    @property
    def queued(self) -> int:
        """
        Invocations not published yet (they go out at the end of this turn of
        the reactor, a phase in one message).
        """
        return sum(len(items) for items in self._batch.values())

    def child_pids(self) -> tuple[int, ...]:
        """
        None: the children are the worker hosts'.
        """
        return ()

    # --- the connection ------------------------------------------------------------

    def start(self) -> Deferred[None]:
        """
        Connect to the broker and declare the exchange.

        @return: a Deferred firing once the first attempt has succeeded or
            failed.  It never fails: a pool whose broker is unreachable ends
            its invocations at once (see the module's docstring) and keeps
            trying to connect.
        """
        if self._started is None:
            self._started = self._link.start()
        done: Deferred[None] = Deferred()

        def tell(result: object) -> object:
            done.callback(None)
            return result

        self._started.addBoth(tell)
        return done

    def wait_connected(self, timeout: float) -> Deferred[None]:
        """
        Wait, up to C{timeout} seconds, until the pool is connected and its
        exchange declared (now, if it is): across as many attempts as that
        takes.  Registrations on a pool that is not connected fail at once;
        this is for a program that would rather wait for its broker at start.

        @return: a Deferred firing once connected, or failing with
            L{BrokerUnavailableError} (saying why the last attempt failed)
            when C{timeout} passes first.  The pool keeps trying either way.
        """
        waiting = self._link.when_up()

        def gave_up(result: object, seconds: float) -> Failure:
            return Failure(
                BrokerUnavailableError(
                    f"no connection to the broker at {self.address} within "
                    f"{seconds:g} s: {self.last_error}"
                )
            )

        return waiting.addTimeout(timeout, self._reactor, onTimeoutCancel=gave_up)

    def stop(self) -> Deferred[None]:
        """
        Disconnect; what still waits for a reply ends C{"crashed"}.
        """
        self._end_all("crashed", "actordispatch.PoolDown", "the AMQP pool stopped")
        self._channel = None
        self._started = None
        return self._link.stop()

    def _prepare(self, connection: Any) -> Deferred[None]:
        """
        Set up a new connection: one channel with publisher confirms, the
        direct reply-to consumer, the exchange, and every binding the
        registrations need (they were lost with a broker restart, or not).
        """

        async def prepare() -> None:
            channel = await connection.channel()
            await channel.exchange_declare(
                self.exchange, exchange_type="headers", durable=True
            )
            replies, _ = await channel.basic_consume(DIRECT_REPLY_TO, auto_ack=True)
            await channel.confirm_delivery()
            queues = {binding.queue for binding in self._bindings.values()}
            for queue in sorted(queues):
                await channel.queue_declare(queue, durable=True)
            done = set()
            for binding in self._bindings.values():
                key = (binding.queue, tuple(sorted(binding.arguments.items())))
                if key not in done:
                    done.add(key)
                    await channel.queue_bind(
                        binding.queue, self.exchange, arguments=binding.arguments
                    )
            self._channel = channel
            self._next_reply(replies)

        return Deferred.fromCoroutine(prepare())

    def _connection_lost(self, reason: str) -> None:
        self._channel = None
        self._end_all(
            "crashed",
            "actordispatch.BrokerConnectionLost",
            f"lost the connection to the broker at {self.address} while waiting "
            f"for this outcome ({reason}); a worker host may still run it",
        )

    def _unavailable(self) -> str:
        return (
            f"the broker at {self.address} is unreachable ({self._link.last_error}); "
            "the pool keeps reconnecting"
        )

    # --- bindings ------------------------------------------------------------------

    def check_spec(self, phase: str, spec: MatchSpec) -> None:
        """
        @raise ValueError: for a match spec the exchange cannot route (see
            L{binding_arguments}).
        """
        binding_arguments(phase, spec)

    def check_handler(self, name: str) -> Deferred[int]:
        """
        Declare C{name}'s queue, so that its work waits there for a host.

        @return: a Deferred firing with how many hosts consume the queue now,
            or failing with L{BrokerUnavailableError}.
        """
        if self._channel is None:
            return fail(BrokerUnavailableError(self._unavailable()))
        try:
            queue = queue_name(self.namespace, name)
        except ValueError as e:
            return fail(e)
        declared = self._channel.queue_declare(queue, durable=True)

        def consumers(frame: Any) -> int:
            count = int(frame.method.consumer_count)
            if count == 0:
                _log.warn(
                    "AMQP pool {name}: no worker host consumes {queue} yet; its "
                    "work waits there until one does, or until its reply is due",
                    name=self.name,
                    queue=queue,
                )
            return count

        return declared.addCallback(consumers)

    def bind(
        self, handler_id: int, handler: str, phase: str, spec: MatchSpec
    ) -> Deferred[None]:
        """
        Declare the handler's queue and bind it to the exchange with the
        phase and the match spec.

        @return: a Deferred firing once bound; failing with
            L{BrokerUnavailableError} if the broker is unreachable, or with
            C{ValueError} for a spec the exchange cannot route.
        """
        try:
            binding = _Binding(
                queue_name(self.namespace, handler), binding_arguments(phase, spec)
            )
        except ValueError as e:
            return fail(e)
        checked = self.check_handler(handler)

        def bind(_: int) -> Deferred[Any]:
            if self._channel is None:
                raise BrokerUnavailableError(self._unavailable())
            return self._channel.queue_bind(
                binding.queue, self.exchange, arguments=binding.arguments
            )

        def bound(_: object) -> None:
            self._bindings[handler_id] = binding

        return checked.addCallback(bind).addCallback(bound)

    def unbind(self, handler_id: int) -> None:
        """
        Forget a registration's binding; unbind it from the exchange unless
        another registration needs the same one.
        """
        binding = self._bindings.pop(handler_id, None)
        if binding is None or self._channel is None:
            return
        if any(
            other.queue == binding.queue and other.arguments == binding.arguments
            for other in self._bindings.values()
        ):
            return
        self._channel.queue_unbind(
            binding.queue, self.exchange, arguments=binding.arguments
        ).addErrback(
            lambda reason: _log.failure(
                "AMQP pool {name}: could not unbind {queue}",
                reason,
                name=self.name,
                queue=binding.queue,
            )
        )

    # --- invocations -----------------------------------------------------------------

    def invoke(self, invocation: Invocation) -> Deferred[HandlerOutcome]:
        """
        Publish C{invocation} with the others of its event's phase (they are
        handed over in the same turn of the reactor: one message per phase).

        @return: a Deferred that always fires with the outcome.
        """
        done: Deferred[HandlerOutcome] = Deferred()
        if self._channel is None:
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

    def _flush(self) -> None:
        self._flush_call = None
        batch, self._batch = self._batch, {}
        for items in batch.values():
            self._publish(items)

    def _publish(
        self, items: list[tuple[Invocation, Deferred[HandlerOutcome]]]
    ) -> None:
        first = items[0][0]
        headers = event_headers(first.phase, first.keywords)
        correlation = f"{self._prefix}{next(self._correlations)}"
        now = self._reactor.seconds()
        expected: dict[int, _Expected] = {}
        targets = []
        for invocation, done in items:
            pending = _Expected(invocation, done, correlation, now)
            binding = self._bindings.get(invocation.handler_id)
            if self._channel is None:
                self._settle(
                    pending,
                    "crashed",
                    "actordispatch.BrokerUnavailable",
                    self._unavailable(),
                )
            elif binding is None:
                self._settle(
                    pending,
                    "crashed",
                    "actordispatch.NotBound",
                    f"handler {invocation.handler_id} is not bound on AMQP pool "
                    f"{self.name!r}",
                )
            elif not binding_matches(binding.arguments, headers):
                self._settle(
                    pending,
                    "crashed",
                    "actordispatch.Unroutable",
                    "the exchange cannot route this event to the handler: a "
                    "keyword value of a type headers cannot compare as Python "
                    f"does ({dict(first.keywords)!r:.200})",
                )
            else:
                timeout = invocation.timeout or self.default_timeout
                targets.append(
                    Target(invocation.handler_id, invocation.handler, timeout)
                )
                expected[invocation.handler_id] = pending
        if not targets:
            return
        self._expected[correlation] = expected
        longest = max(target.timeout for target in targets) + self.reply_grace
        for target in targets:
            pending = expected[target.handler_id]
            pending.timer = self._reactor.callLater(
                target.timeout + self.reply_grace,
                self._no_reply,
                pending,
                target.timeout,
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
        published = self._channel.basic_publish(
            self.exchange, "", body, properties, mandatory=True
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
        for pending in list(self._expected.get(correlation, {}).values()):
            self._settle(pending, "crashed", kind, message)

    def _no_reply(self, pending: _Expected, timeout: float) -> None:
        pending.timer = None
        self._settle(
            pending,
            "timeout",
            "actordispatch.NoReply",
            f"no worker host replied within {timeout + self.reply_grace:g}s (the "
            f"handler's timeout of {timeout:g}s and reply_grace of "
            f"{self.reply_grace:g}s); a late reply is ignored",
        )

    def _next_reply(self, replies: Any) -> None:
        replies.get().addCallbacks(
            self._replied, lambda reason: None, callbackArgs=(replies,)
        )

    def _replied(self, message: Any, replies: Any) -> None:
        try:
            self._read_reply(message)
        except Exception:
            _log.failure("AMQP pool {name}: a reply could not be read", name=self.name)
        self._next_reply(replies)

    def _read_reply(self, message: Any) -> None:
        expected = self._expected.get(message.properties.correlation_id)
        if expected is None:
            self.ignored_replies += 1
            return
        try:
            host, records = decode_reply(message.body, self.max_reply_size)
        except WireError as e:
            self.ignored_replies += 1
            _log.warn("AMQP pool {name}: a bad reply: {error}", name=self.name, error=e)
            return
        for record in records:
            handler_id = record.get("handler_id") if isinstance(record, dict) else None
            pending = expected.get(handler_id) if isinstance(handler_id, int) else None
            if pending is None:
                self.ignored_replies += 1
                continue
            try:
                outcome = outcome_from_json(record, pending.invocation)
            except ValueError as e:
                self._settle(
                    pending,
                    "crashed",
                    "actordispatch.ProtocolError",
                    f"worker host {host!r} sent a malformed outcome: {e}",
                )
                continue
            self._finish(pending, outcome)

    # --- outcomes --------------------------------------------------------------------

    def _settle(
        self, pending: _Expected, status: Status, error_type: str, message: str
    ) -> None:
        self._finish(
            pending,
            pending.invocation.outcome(
                status,
                error_type=error_type,
                error_message=message,
                duration=max(0.0, self._reactor.seconds() - pending.sent),
            ),
        )

    def _finish(self, pending: _Expected, outcome: HandlerOutcome) -> None:
        if pending.done.called:
            return
        if pending.timer is not None and pending.timer.active():
            pending.timer.cancel()
        pending.timer = None
        expected = self._expected.get(pending.correlation)
        if expected is not None:
            expected.pop(pending.invocation.handler_id, None)
            if not expected:
                del self._expected[pending.correlation]
        pending.done.callback(outcome)

    def _end_all(self, status: Status, error_type: str, message: str) -> None:
        for expected in list(self._expected.values()):
            for pending in list(expected.values()):
                self._settle(pending, status, error_type, message)
        if self._flush_call is not None and self._flush_call.active():
            self._flush_call.cancel()
        self._flush_call = None
        batch, self._batch = self._batch, {}
        now = self._reactor.seconds()
        for items in batch.values():
            for invocation, done in items:
                self._settle(
                    _Expected(invocation, done, "", now), status, error_type, message
                )

    def abort(self, message: str) -> None:
        """
        End every invocation now: those waiting for replies C{"timeout"} (a
        host may still run them; their replies will be ignored), those not
        yet published C{"skipped"}.
        """
        batch, self._batch = self._batch, {}
        now = self._reactor.seconds()
        for items in batch.values():
            for invocation, done in items:
                self._settle(
                    _Expected(invocation, done, "", now),
                    "skipped",
                    "actordispatch.Aborted",
                    f"{message} before this ran",
                )
        for expected in list(self._expected.values()):
            for pending in list(expected.values()):
                self._settle(pending, "timeout", "actordispatch.Aborted", message)
