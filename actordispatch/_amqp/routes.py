"""
The routes of an L{AMQPPool}: for each registration, its handler's queue bound
to the pool's headers exchange with its phase and match spec.  They are
declared again on every new connection (a broker restart may have lost them).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from attrs import define
from twisted.internet.defer import Deferred, fail
from twisted.logger import Logger

from actordispatch._amqp.wire import binding_arguments, queue_name
from actordispatch._core.errors import BrokerUnavailableError
from actordispatch._core.match import MatchSpec

__all__ = ["Binding", "Routes"]

_log = Logger()


@define(eq=False)
class Binding:
    """
    One registration's route: its handler's queue, and the binding arguments
    of its phase and match spec.
    """

    queue: str
    arguments: dict[str, str]


class Routes:
    """
    The bindings of a pool's registrations, by handler id.

    @param namespace: the prefix of the queue names.
    @param exchange: the headers exchange they are bound to.
    @param name: the pool's name, for logs.
    @param channel: returns the pool's channel now (C{None} when it is not
        connected).
    @param unavailable: returns why the broker is unreachable, for errors.
    """

    def __init__(
        self,
        *,
        namespace: str,
        exchange: str,
        name: str,
        channel: Callable[[], Any],
        unavailable: Callable[[], str],
    ) -> None:
        self._namespace = namespace
        self._exchange = exchange
        self._name = name
        self._channel = channel
        self._unavailable = unavailable
        self._bindings: dict[int, Binding] = {}

    def get(self, handler_id: int) -> Binding | None:
        """
        The binding of registration C{handler_id}, if it is bound.
        """
        return self._bindings.get(handler_id)

    async def declare(self, channel: Any) -> None:
        """
        Declare every queue and binding the registrations need on a new
        C{channel}.
        """
        queues = {binding.queue for binding in self._bindings.values()}
        for queue in sorted(queues):
            await channel.queue_declare(queue, durable=True)
        done = set()
        for binding in self._bindings.values():
            key = (binding.queue, tuple(sorted(binding.arguments.items())))
            if key not in done:
                done.add(key)
                await channel.queue_bind(
                    binding.queue, self._exchange, arguments=binding.arguments
                )

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
        channel = self._channel()
        if channel is None:
            return fail(BrokerUnavailableError(self._unavailable()))
        try:
            queue = queue_name(self._namespace, name)
        except ValueError as e:
            return fail(e)
        declared = channel.queue_declare(queue, durable=True)

        def consumers(frame: Any) -> int:
            count = int(frame.method.consumer_count)
            if count == 0:
                _log.warn(
                    "AMQP pool {name}: no worker host consumes {queue} yet; its "
                    "work waits there until one does, or until its reply is due",
                    name=self._name,
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
            binding = Binding(
                queue_name(self._namespace, handler), binding_arguments(phase, spec)
            )
        except ValueError as e:
            return fail(e)
        checked = self.check_handler(handler)

        def bind(_: int) -> Deferred[Any]:
            channel = self._channel()
            if channel is None:
                raise BrokerUnavailableError(self._unavailable())
            return channel.queue_bind(
                binding.queue, self._exchange, arguments=binding.arguments
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
        channel = self._channel()
        if binding is None or channel is None:
            return
        if any(
            other.queue == binding.queue and other.arguments == binding.arguments
            for other in self._bindings.values()
        ):
            return
        channel.queue_unbind(
            binding.queue, self._exchange, arguments=binding.arguments
        ).addErrback(
            lambda reason: _log.failure(
                "AMQP pool {name}: could not unbind {queue}",
                reason,
                name=self._name,
                queue=binding.queue,
            )
        )
