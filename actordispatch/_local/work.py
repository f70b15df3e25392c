"""
The small values and bookkeeping the local pool's parts share: the work that
waits (L{WorkQueue}), what a child is given (a L{Batch} of jobs, or a
L{PendingCheck} of a handler name) and which handlers children import while
they boot (L{Preloads}).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from typing import Any

from attrs import define, field
from twisted.internet.defer import Deferred

from actordispatch._core.errors import HandlerImportError
from actordispatch._core.invocation import Invocation, Job
from actordispatch._core.result import HandlerOutcome, Status
from actordispatch._local.child import Child


def cancel_call(call: Any) -> None:
    """
    Cancel a delayed call, unless it is gone already (or C{None}).
    """
    if call is not None and call.active():
        call.cancel()


@define(eq=False)
class Waiting:
    """
    The job of an invocation given to C{AmpoulePool.invoke}: its outcome fires
    a Deferred.
    """

    invocation: Invocation
    done: Deferred[HandlerOutcome] = field(factory=Deferred)

    def settle(self, outcome: HandlerOutcome) -> None:
        self.done.callback(outcome)


@define(eq=False)
class PendingCheck:
    """
    A handler name a child is to import (a check), and where its pid goes.

    @ivar deadline: the delayed call that fails the check if it takes too long.
    """

    name: str
    done: Deferred[int]
    deadline: Any = None


@define(eq=False)
class Batch:
    """
    Jobs sent to one child in one call, numbered C{seq} (the spool's header
    names the batch it is about).

    @ivar sent: when it was sent, on the children's spool clock.
    @ivar check_at: when (reactor time) to look at the spool for an overrun,
        if unsettled.
    @ivar hard_deadline: when (spool clock) the batch must be over whatever
        its child says: C{sent} + the sum of its timeouts + the kill grace.
    """

    seq: int
    child: Child
    items: list[Job]
    sent: float
    settled: bool = False
    check_at: float | None = None
    hard_deadline: float = float("inf")


#: What waits for a child: invocations (as jobs) and handler checks.
Queued = Job | PendingCheck


@define(eq=False)
class WorkQueue:
    """
    The work waiting for a free child, in order.
    """

    _items: deque[Queued] = field(factory=deque)

    def __len__(self) -> int:
        return len(self._items)

    def __bool__(self) -> bool:
        return bool(self._items)

    def __iter__(self) -> Iterator[Queued]:
        return iter(self._items)

    def append(self, item: Queued) -> None:
        self._items.append(item)

    def popleft(self) -> Queued:
        return self._items.popleft()

    def head(self) -> Queued:
        return self._items[0]

    def take(self, handler: str, limit: int, max_bytes: int) -> list[Queued]:
        """
        Take, in order, C{handler}'s work: its check alone if that comes
        first, else up to C{limit} of its invocations (and about
        C{max_bytes} of events); everything else keeps its place.
        """
        taken: list[Queued] = []
        kept: deque[Queued] = deque()
        size = 0
        items = self._items
        while items:
            item = items.popleft()
            if isinstance(item, PendingCheck):
                if item.name == handler and not taken:
                    taken.append(item)
                    break
                kept.append(item)
                continue
            if (
                item.invocation.handler == handler
                and len(taken) < limit
                and size < max_bytes
            ):
                taken.append(item)
                size += len(item.invocation.event)
                if len(taken) >= limit:
                    break
            else:
                kept.append(item)
        kept.extend(items)
        self._items = kept
        return taken

    def domains(self) -> list[str]:
        """
        The handlers that have work waiting, in the order they first wait.
        """
        seen: dict[str, None] = {}
        for item in self._items:
            seen.setdefault(
                item.name if isinstance(item, PendingCheck) else item.invocation.handler
            )
        return list(seen)

    def requeue(self, jobs: Iterable[Job]) -> None:
        """
        Put jobs that did not start back at the front, in their order: they
        waited longest.
        """
        self._items.extendleft(reversed(list(jobs)))

    def drain(
        self, status: Status, error_type: str, message: str, outcome_message: str
    ) -> None:
        """
        End everything queued: invocations with C{status}, checks with a
        L{HandlerImportError}.
        """
        while self._items:
            item = self._items.popleft()
            if isinstance(item, PendingCheck):
                cancel_call(item.deadline)
                item.done.errback(
                    HandlerImportError(f"{message}: {item.name!r} was not checked")
                )
            else:
                item.settle(
                    item.invocation.outcome(
                        status, error_type=error_type, error_message=outcome_message
                    )
                )


@define(eq=False)
class Preloads:
    """
    Which handlers a new child imports while it boots.

    Only a handler wanted (L{want}) I{and} proven (a child imported it without
    dying) is preloaded: a module that kills the process importing it must not
    stop every new child from booting.

    @ivar wanted: handlers the dispatcher asked to have preloaded.
    @ivar warm: those of them proven, preloaded now.
    """

    wanted: set[str] = field(factory=set)
    warm: set[str] = field(factory=set)

    def want(self, handler: str) -> None:
        self.wanted.add(handler)

    def prove(self, handler: str) -> bool:
        """
        A child imported C{handler} and lived.

        @return: whether it is preloaded from now on (and was not before).
        """
        if handler in self.wanted and handler not in self.warm:
            self.warm.add(handler)
            return True
        return False

    def drop(self, handler: str) -> None:
        """
        Preload C{handler} no more (its children die).
        """
        self.warm.discard(handler)

    def go_cold(self) -> None:
        """
        A child died booting, perhaps importing a preloaded handler: preload
        nothing, and forget the wish for what was preloaded.
        """
        if self.warm:
            self.wanted -= self.warm
            self.warm.clear()
