"""
Which fired events a dispatcher accepts, and when each starts: L{Admission}.

C{fire_event} checks an event's keywords, encodes it and accepts it (plans
it: which handlers of each phase it runs) unless the dispatcher is stopped or
its queue is full (C{max_queue}: then it fails, or waits for room with
C{on_overload="wait"}).  An accepted event starts at once when fewer than
C{max_in_flight} run and none of its C{order_by} chain runs; else it waits in
the mailbox, in fire order.  Follow-up events skip the queue.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Hashable, Mapping
from typing import Any

from attrs import define, field
from twisted.internet.defer import Deferred, fail
from twisted.logger import Logger
from twisted.python.failure import Failure

from actordispatch._core.errors import (
    ActorDispatchError,
    FollowUpDepthError,
    FollowUpError,
    NotRunningError,
    OverloadedError,
)
from actordispatch._core.phase import check_on_error
from actordispatch._core.registry import HandlerRegistry
from actordispatch._core.result import DispatchResult
from actordispatch._dispatch.delivery import Delivery
from actordispatch._dispatch.keywords import KeywordSet
from actordispatch._dispatch.stopping import Lifecycle
from actordispatch._wire.codec import decode_result, encode_event

_log = Logger()


@define(eq=False)
class Admission:
    """
    Accepts fired events, queues them, and starts each in its turn.

    @ivar accepted: events accepted so far.
    @ivar finished: accepted events whose result has been delivered.
    @ivar in_flight: events running their phases.
    @ivar queued: accepted events waiting for their turn.
    @ivar rejected: events refused because the queue was full.
    """

    _state: Lifecycle
    _keywords: KeywordSet
    _registry: HandlerRegistry
    _reactor: Any
    #: starts an accepted event's next phase (the runner's)
    _run: Callable[[Delivery], None]
    _max_in_flight: int = 1
    _order_by: str | None = None
    _max_queue: int | None = None
    _on_overload: str = "fail"
    _max_event_size: int = 0
    _max_depth: int = 0
    _trace: bool = False
    accepted: int = 0
    finished: int = 0
    in_flight: int = 0
    queued: int = 0
    rejected: int = 0
    #: events not accepted yet, waiting for room (C{on_overload="wait"})
    _waiting: deque[
        tuple[Deferred[DispatchResult], Any, dict[str, Hashable], str | None]
    ] = field(factory=deque)
    #: accepted events waiting for their turn
    _mailbox: deque[Delivery] = field(factory=deque)
    #: per C{order_by} value with an event running, the events waiting for it
    _chains: dict[Hashable, deque[Delivery]] = field(factory=dict)

    def __attrs_post_init__(self) -> None:
        self._state.drains_when(self.idle)

    def idle(self) -> bool:
        """
        Whether no accepted event is running or queued.
        """
        return self.in_flight == 0 and self.queued == 0

    @property
    def waiting(self) -> int:
        """
        How many events wait for room in a full queue.
        """
        return len(self._waiting)

    def fire(
        self, event: Any, on_error: str | None, keywords: dict[str, Hashable]
    ) -> Deferred[DispatchResult]:
        """
        Check, encode and accept an event: see C{EventDispatcher.fire_event}.
        """
        if not self._keywords.plain(keywords):
            self._keywords.check_fired(keywords, "fire_event")
        if on_error is not None:
            check_on_error(on_error, "fire_event(on_error=...)")
        if not self._state.running:
            return fail(
                NotRunningError(
                    "the dispatcher is not running (call start(); it is stopped "
                    "or stopping): the event was not accepted"
                )
            )
        try:
            data = encode_event(event, self._max_event_size)
        except ActorDispatchError as e:
            return fail(e)
        if self._max_queue is not None and (
            self._waiting
            or (self.queued >= self._max_queue and not self._starts_at_once(keywords))
        ):
            if self._on_overload == "fail":
                self.rejected += 1
                return fail(
                    OverloadedError(
                        f"{self.queued} events are queued (max_queue="
                        f"{self._max_queue}): the event was not accepted"
                    )
                )
            waiter: Deferred[DispatchResult] = Deferred()
            self._waiting.append((waiter, data, keywords, on_error))
            return waiter
        return self._accept(data, keywords, on_error)

    def follow_up(
        self,
        depth: int,
        event: bytes,
        keywords: dict[str, Any],
        on_error: str | None,
    ) -> tuple[int, Deferred[DispatchResult]]:
        """
        Accept a follow-up event and start it at once: see
        C{EventDispatcher.fire_follow_up}.
        """
        if depth > self._max_depth:
            raise FollowUpDepthError(
                f"a follow-up event at depth {depth} is past max_depth="
                f"{self._max_depth}: handlers that fire events reaching handlers "
                "that fire events are cut there (a loop?)"
            )
        state = self._state
        if state.aborting or not (state.running or state.stopping is not None):
            raise FollowUpError("the dispatcher is stopping: no follow-up events")
        try:
            self._keywords.check_fired(keywords, "follow-up event")
            check_on_error(on_error, "on_error")
            # Plain values only: type tags a child sent are not rebuilt in
            # other children.
            data = encode_event(decode_result(event), self._max_event_size)
        except (ValueError, ActorDispatchError) as e:
            raise FollowUpError(str(e)) from None
        delivery = self._delivery(data, keywords, on_error, depth)
        self.in_flight += 1
        self._run(delivery)
        return delivery.number, delivery.done

    def _starts_at_once(self, keywords: Mapping[str, Hashable]) -> bool:
        """
        Whether an event fired now would start at once, never waiting in the
        queue.
        """
        if self._mailbox or self.in_flight >= self._max_in_flight:
            return False
        return (
            self._order_by is None or keywords.get(self._order_by) not in self._chains
        )

    def _accept(
        self,
        data: bytes,
        keywords: Mapping[str, Hashable],
        on_error: str | None = None,
    ) -> Deferred[DispatchResult]:
        delivery = self._delivery(data, keywords, on_error)
        if (
            not self._mailbox
            and self.in_flight < self._max_in_flight
            and (self._order_by is None or delivery.order_key not in self._chains)
        ):
            # Its turn is now: no queueing.
            if self._order_by is not None:
                self._chains[delivery.order_key] = deque()
            self.in_flight += 1
            self._run(delivery)
            return delivery.done
        self.queued += 1
        if self._order_by is None:
            self._mailbox.append(delivery)
        else:
            chain = self._chains.get(delivery.order_key)
            if chain is None:
                self._chains[delivery.order_key] = deque()
                self._mailbox.append(delivery)
            else:
                chain.append(delivery)
        result = delivery.done
        self._pump()
        return result

    def _delivery(
        self,
        data: bytes,
        keywords: Mapping[str, Hashable],
        on_error: str | None,
        depth: int = 0,
    ) -> Delivery:
        """
        Accept an event: plan it (which handlers of each phase it runs) and
        count it.
        """
        plan = self._registry.plan(keywords, self._reactor.seconds)
        self.accepted += 1
        delivery = Delivery(
            data,
            keywords,
            keywords.get(self._order_by) if self._order_by and not depth else None,
            plan,
            Deferred(),
            number=self.accepted,
            on_error=on_error,
            depth=depth,
        )
        if self._trace:
            _log.debug(
                "event {event} (depth {depth}) accepted: {keywords}, {handlers} "
                "handler(s) matched",
                event=delivery.number,
                depth=depth,
                keywords=dict(keywords),
                handlers=sum(len(p) for p in delivery.plan),
            )
        return delivery

    def _pump(self) -> None:
        while self._mailbox and self.in_flight < self._max_in_flight:
            delivery = self._mailbox.popleft()
            self.queued -= 1
            self.in_flight += 1
            self._run(delivery)
        while self._waiting and (
            self._max_queue is None
            or self.queued < self._max_queue
            or self._starts_at_once(self._waiting[0][2])
        ):
            waiter, data, keywords, on_error = self._waiting.popleft()
            self._accept(data, keywords, on_error).chainDeferred(waiter)

    def finish(self, delivery: Delivery) -> None:
        """
        An event ran all its phases: deliver its result and let the next one
        of its chain, and of the queue, start.
        """
        self.in_flight -= 1
        self.finished += 1
        if self._order_by is not None and not delivery.depth:
            chain = self._chains[delivery.order_key]
            if chain:
                self._mailbox.append(chain.popleft())
            else:
                del self._chains[delivery.order_key]
        delivery.done.callback(DispatchResult(delivery.outcomes))
        self._pump()
        if self._state.stopping is not None:
            self._state.check_drained()

    def broke(self, delivery: Delivery, reason: Failure) -> None:
        """
        A bug met while running C{delivery}: its result is that failure.
        """
        if not delivery.done.called:
            self.in_flight -= 1
            self.finished += 1
            delivery.done.errback(reason)

    def refuse_waiting(self) -> None:
        """
        Fail the events waiting for room: the dispatcher stops (they were
        never accepted).
        """
        while self._waiting:
            waiter, _, _, _ = self._waiting.popleft()
            waiter.errback(
                NotRunningError(
                    "the dispatcher stopped while this event waited for room"
                )
            )

    def start_queued(self) -> None:
        """
        Start every queued event now (the drain timed out: each runs to its
        end at once, its handlers skipped).
        """
        while self._mailbox:
            delivery = self._mailbox.popleft()
            self.queued -= 1
            self.in_flight += 1
            self._run(delivery)
