"""
Follow-up events that handlers fire from their children: L{FollowUpDesk}.

The desk hands each to the dispatcher (the pool's sink), at a depth the child
cannot lie about, and I{parks} a child whose handler waits for one: a parked
child does not count among the C{size} serving ones, so another serves in its
place and waiting never deadlocks the pool.  At most C{max_waiting} children
are parked at once.
"""

from __future__ import annotations

import json
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
    @ivar sink: where follow-up events go (C{None}: they are refused).
    """

    supervisor: Supervisor
    max_waiting: int
    max_follow_ups: int
    sink: FollowUps | None = field(default=None, init=False)

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
        parked = self.supervisor.parked
        if wait and not child.waits and parked >= self.max_waiting:
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
        try:
            number, fired = self.sink(depth, event, parsed, on_error)
        except FollowUpError as e:
            return fail(e)
        except (ValueError, TypeError, ActorDispatchError) as e:
            return fail(FollowUpError(str(e)))
        child.follow_ups += 1
        if wait:
            child.waits += 1
            if child.waits == 1:
                self.supervisor.park(child)  # a stand-in serves while it waits

        def finished(result: Any) -> Any:
            child.follow_ups -= 1
            if wait and child.waits:
                child.waits -= 1
                if not child.waits:
                    self.supervisor.unpark(child)
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
