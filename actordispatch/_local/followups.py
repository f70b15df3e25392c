"""
Follow-up events that handlers fire from their children: L{FollowUpDesk}.

The desk hands each to the dispatcher (the pool's sink), at a depth the child
cannot lie about, and I{parks} a child whose handler waits for one: a parked
child does not count among the C{size} serving ones, so another serves in its
place and waiting never deadlocks the pool.  At most C{max_waiting} children
are parked at once.

A follow-up storm (many invocations of one handler, each firing a follow-up
and waiting for it) must delay only that handler's events (issue 16), so the
desk also bounds each I{handler}: at most C{max_waiting_per_handler} children
parked for it, and at most C{max_follow_ups_per_handler} follow-up events it
fired running at once, waited for or not (what it can add to the pool's
work).  Past either, its follow-up is refused at once with a L{FollowUpError}
in the child: nothing of it waits anywhere, so the handler's outcome comes as
soon as it handles the refusal.  The desk also notes which handlers wait
(C{waiters}): the pool keeps their work in lines of its own
(L{actordispatch._local.lanes.WaiterLanes}).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from typing import Any

from attrs import define, field
from twisted.internet.defer import Deferred, fail, succeed
from twisted.logger import Logger

from actordispatch._core.errors import ActorDispatchError, FollowUpError
from actordispatch._local.child import Child
from actordispatch._local.supervisor import Supervisor
from actordispatch._local.work import Batch
from actordispatch._wire.outcome_json import encode_dispatch_result

_log = Logger()

#: Where a pool hands follow-up events: called with the depth, the encoded
#: event, the keywords and the C{on_error} policy, it answers the event's
#: number and a Deferred of its L{DispatchResult}, or raises (refused).
FollowUps = Callable[
    [int, bytes, dict[str, Any], "str | None"], "tuple[int, Deferred[Any]]"
]


@define(eq=False)
class FollowUpDesk:
    """
    Takes the follow-up events children fire.

    @ivar max_waiting: the most children parked at once.
    @ivar max_follow_ups: the most follow-up events one child's handlers may
        have running at once (waited for or not).
    @ivar max_waiting_per_handler: the most children parked at once for one
        handler (the handler whose invocation fired the follow-up).
    @ivar max_follow_ups_per_handler: the most follow-up events one handler
        may have running at once, over all children (waited for or not).
    @ivar spool_cap: how much of a child's spool to read to tell which of
        its batch's handlers is running.
    @ivar sink: where follow-up events go (C{None}: they are refused).
    """

    supervisor: Supervisor
    max_waiting: int
    max_follow_ups: int
    max_waiting_per_handler: int
    max_follow_ups_per_handler: int
    spool_cap: int
    sink: FollowUps | None = field(default=None, init=False)
    #: while a follow-up event of a handler that waits is handed to the sink:
    #: that handler, and whether it waits for this one
    firing: tuple[str, bool] | None = field(default=None, init=False)
    #: children parked, each with the handler it is parked for
    _parked_for: dict[Child, str] = field(factory=dict, init=False)
    #: per handler: children parked for it, follow-up events it has running
    _parked_by: Counter[str] = field(factory=Counter, init=False)
    _running_by: Counter[str] = field(factory=Counter, init=False)
    #: the handlers that have waited (or tried to) for a follow-up event in
    #: this pool: their work goes in lines (see L{actordispatch._local.lanes})
    waiters: set[str] = field(factory=set, init=False)

    def _firing_handler(self, child: Child, batch: Batch) -> str:
        """
        The handler whose invocation fired a follow-up: a child runs its
        batch's invocations one after another, so it is the first one its
        spool does not show finished (read only when the batch mixes
        handlers).  A child could misreport this only among its own batch's
        handlers.
        """
        items = batch.items
        first = items[0].invocation.handler
        if all(job.invocation.handler == first for job in items):
            return first
        view = child.read_spool(batch.seq, self.spool_cap)
        return items[min(len(view.records), len(items) - 1)].invocation.handler

    def follow_up(
        self,
        child: Child,
        event: bytes,
        keywords: str,
        seq: int,
        wait: bool,
        on_error: str | None = None,
    ) -> Deferred[dict[str, Any]]:
        """
        A handler running in C{child} fired a follow-up event: hand it to the
        sink, at the depth of the deepest event of the child's batch plus one
        (a child cannot lie its way out of the depth limit), and park the
        child while its handler waits.
        """
        batch = child.work
        if self.sink is None:
            return fail(FollowUpError("this pool takes no follow-up events"))
        if not isinstance(batch, Batch) or batch.seq != seq or batch.settled:
            return fail(
                FollowUpError(
                    "no handler of this child is running: fire follow-up events "
                    "while the handler runs"
                )
            )
        if child.follow_ups >= self.max_follow_ups:
            return fail(
                FollowUpError(
                    f"this child's handlers have {child.follow_ups} follow-up "
                    f"events running (max_follow_ups={self.max_follow_ups})"
                )
            )
        handler = self._firing_handler(child, batch)
        if wait:
            self.waiters.add(handler)
        running = self._running_by[handler]
        if running >= self.max_follow_ups_per_handler:
            return fail(
                FollowUpError(
                    f"handler {handler!r} has {running} follow-up events running "
                    f"(max_follow_ups_per_handler={self.max_follow_ups_per_handler})"
                )
            )
        parks = wait and not child.waits
        waiting = self._parked_by[handler]
        if parks and waiting >= self.max_waiting_per_handler:
            return fail(
                FollowUpError(
                    f"{waiting} children already wait for follow-up events of "
                    f"handler {handler!r} (max_waiting_per_handler="
                    f"{self.max_waiting_per_handler}): fire it with wait=False"
                )
            )
        parked = self.supervisor.parked
        if parks and parked >= self.max_waiting:
            return fail(
                FollowUpError(
                    f"{parked} children already wait for follow-up events "
                    f"(max_waiting={self.max_waiting}): fire it with wait=False"
                )
            )
        try:
            parsed = json.loads(keywords)
        except ValueError:
            parsed = None
        if not isinstance(parsed, dict):
            return fail(FollowUpError("the keywords must be a JSON object"))
        depth = max(p.invocation.depth for p in batch.items) + 1
        # What the event's first phase submits now is this handler's work.
        self.firing = (handler, wait) if handler in self.waiters else None
        try:
            number, fired = self.sink(depth, event, parsed, on_error)
        except FollowUpError as e:
            return fail(e)
        except (ValueError, TypeError, ActorDispatchError) as e:
            return fail(FollowUpError(str(e)))
        finally:
            self.firing = None
        child.follow_ups += 1
        self._running_by[handler] += 1
        if wait:
            child.waits += 1
            if child.waits == 1:
                self._parked_for[child] = handler
                self._parked_by[handler] += 1
                self.supervisor.park(child)  # a stand-in serves while it waits

        def finished(result: Any) -> Any:
            child.follow_ups -= 1
            _release(self._running_by, handler)
            if wait:
                if child.waits:
                    child.waits -= 1
                    if not child.waits:
                        self.supervisor.unpark(child)
                # Also when the child died parked (the supervisor cleared its
                # waits): the handler's follow-up ran on till now.
                if not child.waits and child in self._parked_for:
                    _release(self._parked_by, self._parked_for.pop(child))
            return result

        fired.addBoth(finished)
        if not wait:
            fired.addErrback(
                lambda reason: _log.failure("follow-up event failed", reason)
            )
            return succeed({"number": number})
        return fired.addCallback(
            lambda result: {"number": number, "result": encode_dispatch_result(result)}
        )


def _release(counts: Counter[str], handler: str) -> None:
    """
    One fewer for C{handler}; a handler at zero is forgotten.
    """
    counts[handler] -= 1
    if counts[handler] <= 0:
        del counts[handler]
