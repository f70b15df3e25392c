"""
The pools of a dispatcher, by name: L{PoolSet}.

It knows which were started (and so must be stopped), how each takes its jobs
(L{submitter}), and tells the pools that can (L{IFollowUpPool}) where their
handlers' follow-up events go.  What else a pool can do it declares with the
capability interfaces of L{actordispatch.interfaces}.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, cast

from attrs import define, field
from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from actordispatch._core.invocation import Job, settle_when
from actordispatch.interfaces import (
    IFollowUpPool,
    IHandlerPool,
    IJobPool,
    IProcessPool,
    IWarmablePool,
)

_log = Logger()

#: How a phase's jobs are handed to one pool.
Submit = Callable[[Sequence[Job]], None]


def _submit_each(pool: IHandlerPool) -> Submit:
    """
    How to hand jobs to a pool that answers each invocation with a Deferred.
    """

    def submit(jobs: Sequence[Job]) -> None:
        for job in jobs:
            settle_when(pool.invoke(job.invocation), job)

    return submit


def submitter(pool: IHandlerPool) -> Submit:
    """
    How a phase's jobs reach C{pool}: all together, settled by the pool
    itself, when it is an L{IJobPool} (the local pool); else one C{invoke}
    each, settled when its Deferred fires.
    """
    if IJobPool.providedBy(pool):
        return cast(IJobPool, pool).submit
    return _submit_each(pool)


@define(eq=False)
class PoolSet:
    """
    The pools of one dispatcher, by name.

    @ivar follow_ups: where the pools' handlers' follow-up events go (given
        to each L{IFollowUpPool} as it is added); C{None} refuses them.
    @ivar submitters: per pool, how its jobs are handed over (see
        L{submitter}); the runner reads it on the hot path.
    """

    follow_ups: Callable[..., Any] | None = None
    submitters: dict[str, Submit] = field(factory=dict)
    _pools: dict[str, IHandlerPool] = field(factory=dict)
    _started: set[str] = field(factory=set)

    def __contains__(self, name: object) -> bool:
        return name in self._pools

    def __getitem__(self, name: str) -> IHandlerPool:
        return self._pools[name]

    def get(self, name: str) -> IHandlerPool | None:
        """
        The pool called C{name}, if any.
        """
        return self._pools.get(name)

    def by_name(self) -> dict[str, IHandlerPool]:
        """
        A copy of the table: the pools by name.
        """
        return dict(self._pools)

    def add(self, name: str, pool: IHandlerPool) -> None:
        """
        Add C{pool} as C{name}, not started.

        @raise ValueError: if C{name} is empty or taken.
        """
        if not isinstance(name, str) or not name or name in self._pools:
            raise ValueError(f"pool name {name!r} is empty or taken")
        self._pools[name] = pool
        self.submitters[name] = submitter(pool)
        if IFollowUpPool.providedBy(pool):
            cast(IFollowUpPool, pool).set_follow_ups(self.follow_ups)

    def removable(self, name: str) -> IHandlerPool:
        """
        The pool C{name}, which may be removed.

        @raise ValueError: for the C{"default"} pool.
        @raise KeyError: for an unknown pool.
        """
        if name == "default":
            raise ValueError("the default pool cannot be removed")
        return self._pools[name]

    def remove(self, name: str) -> Deferred[None]:
        """
        Forget the pool C{name} and stop it if it was started.

        @return: a Deferred firing when it has stopped.
        """
        pool = self._pools.pop(name)
        del self.submitters[name]
        if name in self._started:
            self._started.discard(name)
            return pool.stop()
        return succeed(None)

    def ensure(self, name: str) -> Deferred[None]:
        """
        Start the pool C{name}, unless it is started (pools' C{start()} is
        idempotent: it answers when the workers are ready).
        """
        self._started.add(name)
        return self._pools[name].start()

    def start_all(self) -> Deferred[None]:
        """
        Start every pool.

        @return: a Deferred firing when all are ready, or failing with the
            first that fails.
        """
        started = [self.ensure(name) for name in list(self._pools)]
        if len(started) == 1:
            return started[0]
        return DeferredList(
            started, fireOnOneErrback=True, consumeErrors=True
        ).addCallback(lambda _: None)

    def stop_started(self) -> Deferred[None]:
        """
        Stop every pool started since the last time (a pool that fails to
        stop is logged, and counts as stopped).
        """
        names, self._started = self._started, set()
        stopping = [
            self._pools[n].stop().addErrback(self._stop_failed, n)
            for n in names
            if n in self._pools
        ]
        return DeferredList(stopping).addCallback(lambda _: None)

    @staticmethod
    def _stop_failed(reason: Failure, name: str) -> None:
        _log.failure("pool {pool} failed to stop", reason, pool=name)

    def abort_all(self, message: str) -> None:
        """
        End all the pools' work at once (see L{IHandlerPool.abort}).
        """
        for pool in self._pools.values():
            pool.abort(message)

    def warm(self, name: str, handler: str) -> None:
        """
        Tell the pool C{name}, if it can warm its workers up, that C{handler}
        will run there.
        """
        pool = self._pools[name]
        if IWarmablePool.providedBy(pool):
            cast(IWarmablePool, pool).warm(handler)

    def child_pids(self) -> dict[str, Sequence[int]]:
        """
        Per pool, the pids of its worker processes (none for a pool that is
        not an L{IProcessPool}).
        """
        return {
            name: cast(IProcessPool, pool).child_pids()
            if IProcessPool.providedBy(pool)
            else ()
            for name, pool in self._pools.items()
        }
