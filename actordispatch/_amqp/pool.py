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

The pool is a facade over its parts: L{BrokerLink} keeps the connection,
L{Routes} the registrations' bindings, L{Publisher} publishes, and L{Replies}
waits for the outcomes.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure
from zope.interface import implementer

from actordispatch._amqp.link import (
    BrokerAddress,
    BrokerLink,
    ClientTLS,
)
from actordispatch._amqp.publisher import DIRECT_REPLY_TO, Publisher
from actordispatch._amqp.replies import Replies
from actordispatch._amqp.routes import Routes
from actordispatch._amqp.wire import (
    check_namespace,
    exchange_name,
)
from actordispatch._core.errors import BrokerUnavailableError
from actordispatch._core.invocation import Invocation, Job
from actordispatch._core.match import MatchSpec
from actordispatch._core.result import HandlerOutcome, Status
from actordispatch._wire.codec import DEFAULT_MAX_REPLY_SIZE
from actordispatch.interfaces import IConnectedPool, IJobPool, IProcessPool, IRoutedPool

__all__ = ["AMQPPool"]


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

    #: No worker process of its own: they are the worker hosts' children
    #: (L{IProcessPool.size}).
    size = 0

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
        self._routes = Routes(
            namespace=self.namespace,
            exchange=self.exchange,
            name=name,
            channel=lambda: self._channel,
            unavailable=self._unavailable,
        )
        self._replies = Replies(
            reactor=reactor,
            name=name,
            reply_grace=self.reply_grace,
            max_reply_size=max_reply_size,
        )
        self._publisher = Publisher(
            reactor=reactor,
            exchange=self.exchange,
            name=name,
            prefix=f"{os.getpid()}.{id(self):x}.",
            default_timeout=self.default_timeout,
            reply_grace=self.reply_grace,
            routes=self._routes,
            replies=self._replies,
            channel=lambda: self._channel,
            unavailable=self._unavailable,
        )
        self._started: Deferred[bool] | None = None

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
        return self._replies.in_flight

    @property
    def queued(self) -> int:
        """
        Invocations not published yet (they go out at the end of this turn of
        the reactor, a phase in one message).
        """
        return self._publisher.queued

    @property
    def ignored_replies(self) -> int:
        """
        Replies (or outcomes in them) that no invocation was waiting for.
        """
        return self._replies.ignored

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
            await self._routes.declare(channel)
            self._channel = channel
            self._replies.consume(replies)

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
        self._routes.check_spec(phase, spec)

    def check_handler(self, name: str) -> Deferred[int]:
        """
        Declare C{name}'s queue, so that its work waits there for a host.

        @return: a Deferred firing with how many hosts consume the queue now,
            or failing with L{BrokerUnavailableError}.
        """
        return self._routes.check_handler(name)

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
        return self._routes.bind(handler_id, handler, phase, spec)

    def unbind(self, handler_id: int) -> None:
        """
        Forget a registration's binding; unbind it from the exchange unless
        another registration needs the same one.
        """
        self._routes.unbind(handler_id)

    # --- invocations -----------------------------------------------------------------

    def invoke(self, invocation: Invocation) -> Deferred[HandlerOutcome]:
        """
        Publish C{invocation} with the others of its event's phase (they are
        handed over in the same turn of the reactor: one message per phase).

        @return: a Deferred that always fires with the outcome.
        """
        return self._publisher.invoke(invocation)

    def submit(self, jobs: Sequence[Job]) -> None:
        """
        Publish a phase's invocations now, in one message per event and phase
        (no wait for the end of the reactor's turn), and settle each job when
        its outcome comes.
        """
        self._publisher.submit(jobs)

    # --- outcomes --------------------------------------------------------------------

    def _end_all(self, status: Status, error_type: str, message: str) -> None:
        self._replies.end_all(status, error_type, message)
        self._publisher.drop(status, error_type, message)

    def abort(self, message: str) -> None:
        """
        End every invocation now: those waiting for replies C{"timeout"} (a
        host may still run them; their replies will be ignored), those not
        yet published C{"skipped"}.
        """
        self._publisher.drop_batch(
            "skipped", "actordispatch.Aborted", f"{message} before this ran"
        )
        self._replies.end_all("timeout", "actordispatch.Aborted", message)
