"""
Batching work onto children: L{BatchRunner}.

When a child is free and several invocations wait, they go to it in one
L{RunBatch} call (up to C{max_batch}, or C{max_batch_bytes} of events); when
the pool is idle, one goes at once.  The runner settles each batch from its
child's reply, or hands it to the spool settler when the child broke down.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

from attrs import define, field
from twisted.logger import Logger
from twisted.python.failure import Failure

from actordispatch._core.errors import ActorDispatchError, ChildEndedError
from actordispatch._core.invocation import Invocation, Job
from actordispatch._core.result import HandlerOutcome
from actordispatch._local.checks import HandlerChecks
from actordispatch._local.child import Child
from actordispatch._local.deadlines import DeadlineWatch
from actordispatch._local.quarantine import Quarantine
from actordispatch._local.settling import SpoolSettler, outcome_from_record
from actordispatch._local.supervisor import Supervisor
from actordispatch._local.work import Batch, PendingCheck, Preloads, WorkQueue
from actordispatch._wire.codec import decode_records, encode_batch
from actordispatch._wire.commands import RunBatch

_log = Logger()


@define(eq=False)
class BatchRunner:
    """
    Shares out queued work among the free children and settles what they
    answer.

    @ivar recycle_after: replace a child after this many invocations (0: never).
    @ivar max_rss: replace a child once its resident memory passes this many
        bytes, checked between batches (C{None}: never).
    @ivar crash_limit: see L{Quarantine} (named in outcomes).
    @ivar crash_window: see L{Quarantine} (named in outcomes).
    """

    supervisor: Supervisor
    queue: WorkQueue
    quarantine: Quarantine
    preloads: Preloads
    settler: SpoolSettler
    deadlines: DeadlineWatch
    checks: HandlerChecks
    max_batch: int
    max_batch_bytes: int
    recycle_after: int
    max_rss: int | None
    crash_limit: int
    crash_window: float
    #: see L{SandboxProfile.isolation}
    isolation: str = "shared"
    #: while above 0, work arriving is queued, to be sent out together
    _holding: int = field(default=0, init=False)
    _seqs: Any = field(factory=lambda: itertools.count(1), init=False)

    def submit(self, jobs: Sequence[Job]) -> None:
        """
        Run each job's invocation and settle each job with its outcome.  When
        a child is idle and nothing waits, a lone invocation goes to it at
        once; otherwise they are queued, then shared out in batches.
        """
        supervisor = self.supervisor
        if (
            len(jobs) == 1
            and supervisor.idle()
            and not self.queue
            and not self._holding
            and not self.quarantine.any()
        ):
            # Idle: straight to the most recently idle child, alone.
            if self.isolation == "shared":
                self._send(supervisor.take_idle(), [jobs[0]])
                return
            child = supervisor.take_idle_for(jobs[0].invocation.handler)
            if child is not None:
                self._send(child, [jobs[0]])
                return
        quarantine = self.quarantine.any()
        self._holding += 1  # what settling a refused job sets off waits too
        try:
            for job in jobs:
                blocked = self._blocked(job.invocation) if quarantine else None
                if blocked is None:
                    self.queue.append(job)
                else:
                    job.settle(blocked)
        finally:
            self._holding -= 1
        self.pump()

    def _blocked(self, invocation: Invocation) -> HandlerOutcome | None:
        left = self.quarantine.remaining(invocation.handler)
        if left is None:
            return None
        return invocation.outcome(
            "crashed",
            error_type="actordispatch.Quarantined",
            error_message=(
                f"handler quarantined for {left:.1f}s more: its children died "
                f"{self.crash_limit} times within {self.crash_window:g}s"
            ),
        )

    def pump(self) -> None:
        """
        Send what waits to the free children.
        """
        if self._holding:
            return  # the work arriving now is sent together once it is all in
        if self.isolation != "shared":
            self._pump_domains()
            return
        supervisor = self.supervisor
        queue = self.queue
        while supervisor.idle() and queue:
            # An even share of what waits for each idle child, so that several
            # idle children split a burst rather than the first taking it all.
            share = min(self.max_batch, -(-len(queue) // supervisor.idle()))
            child = supervisor.take_idle()
            head = queue.popleft()
            if isinstance(head, PendingCheck):
                self.checks.send(child, head)
                continue
            batch = []
            size = 0
            item: Job | PendingCheck | None = head
            quarantine = self.quarantine.any()
            while item is not None:
                assert not isinstance(item, PendingCheck)
                blocked = self._blocked(item.invocation) if quarantine else None
                if blocked is not None:
                    item.settle(blocked)
                else:
                    batch.append(item)
                    size += len(item.invocation.event)
                item = None
                if (
                    queue
                    and len(batch) < share
                    and size < self.max_batch_bytes
                    and type(queue.head()) is not PendingCheck
                ):
                    item = queue.popleft()
            if batch:
                self._send(child, batch)
            else:
                supervisor.put_idle(child)

    def _pump_domains(self) -> None:
        """
        L{pump} under a trust-domain isolation: each handler's work goes only
        to a child of its own (or a fresh one, which becomes its own), one
        handler per batch; handlers that wait first are served first, and
        those with no child to use get fresh ones in place of free children
        of other handlers.
        """
        supervisor = self.supervisor
        queue = self.queue
        limit = 1 if self.isolation == "invocation" else self.max_batch
        unserved = 0
        quarantine = self.quarantine.any()
        for handler in queue.domains():
            if not supervisor.idle():
                unserved += 1
                continue
            child = supervisor.take_idle_for(handler)
            if child is None:
                unserved += 1
                continue
            taken = queue.take(handler, limit, self.max_batch_bytes)
            if len(taken) == 1 and isinstance(taken[0], PendingCheck):
                self.checks.send(child, taken[0])
                continue
            batch = []
            for item in taken:
                assert not isinstance(item, PendingCheck)
                blocked = self._blocked(item.invocation) if quarantine else None
                if blocked is not None:
                    item.settle(blocked)
                else:
                    batch.append(item)
            if batch:
                self._send(child, batch)
            else:
                supervisor.put_idle(child)
        if unserved:
            supervisor.make_room(unserved)

    def _send(self, child: Child, items: list[Job]) -> None:
        batch = Batch(next(self._seqs), child, items, self.deadlines.now())
        self.supervisor.busy(child)
        child.work = batch
        child.calls += len(items)
        child.connector.reset_output()
        payload = encode_batch(
            [(p.invocation.handler, p.invocation.event) for p in items]
        )
        self.deadlines.watch(batch)
        d = child.amp.callRemote(RunBatch, batch=payload, seq=batch.seq)
        d.addCallbacks(self._answered, self._failed, (batch,), errbackArgs=(batch,))

    def _answered(self, answer: dict[str, Any], batch: Batch) -> None:
        if batch.settled:
            return  # a late answer: this batch already has its outcomes
        child = batch.child
        try:
            records = decode_records(answer["records"], len(batch.items))
        except ValueError as e:
            self.protocol_error(child, f"unreadable reply: {e}")
            return
        batch.settled = True
        batch.check_at = None
        pid = child.pid
        # What these outcomes set off (next phases, next events) is queued
        # while they are delivered, then sent in batches by done_with's pump.
        escalated = self.quarantine.escalated()
        warm = self.preloads.warm
        self._holding += 1
        try:
            for job, record in zip(batch.items, records, strict=False):
                invocation = job.invocation
                if escalated:
                    self.quarantine.settle(invocation.handler)
                if invocation.handler not in warm and self.preloads.prove(
                    invocation.handler
                ):
                    # Standby children booted without it: replace them.
                    self.supervisor.retire_spares()
                job.settle(outcome_from_record(invocation, record, pid))
        finally:
            self._holding -= 1
        self.queue.requeue(batch.items[len(records) :])
        rss = answer.get("rss")
        recycle = bool(
            self.isolation == "invocation"
            or (self.recycle_after and child.calls >= self.recycle_after)
            or (
                self.max_rss is not None and isinstance(rss, int) and rss > self.max_rss
            )
        )
        self.supervisor.done_with(child, recycle)

    def _failed(self, reason: Failure, batch: Batch) -> None:
        if batch.settled:
            return
        child = batch.child
        value = reason.value
        if isinstance(value, ChildEndedError):
            return  # child_ended settles it from the spool, with the exit status
        if isinstance(value, ActorDispatchError):
            # A declared error (a batch the child could not decode): our fault,
            # not the handlers'; the child is fine.
            batch.settled = True
            batch.check_at = None
            for pending in batch.items:
                pending.settle(
                    pending.invocation.outcome(
                        "error",
                        error_type=f"actordispatch.{type(value).__name__}",
                        error_message=str(value),
                        pid=child.pid,
                    )
                )
            self.supervisor.done_with(child)
            return
        # Anything else (an undeclared error) means the child's AMP is gone bad.
        self.protocol_error(child, f"{type(value).__name__}: {value}")

    def protocol_error(self, child: Child, message: str) -> None:
        """
        C{child} broke the protocol: what it ran ends C{"crashed"}, and it is
        killed at once.
        """
        self.settler.settle_running(
            child,
            "crashed",
            "actordispatch.ProtocolError",
            f"protocol error from the child: {message}",
            strike=True,
        )
        self.supervisor.kill_now(child)

    def child_ended(self, child: Child, ended: ChildEndedError) -> None:
        """
        C{child}'s process ended: what it ran ends C{"crashed"} (a strike for
        its handler), what it had not started runs elsewhere.
        """
        work = child.work
        how = ended.describe()
        self.settler.settle_running(
            child,
            "crashed",
            "actordispatch.ChildCrashed",
            f"the child process ended ({how}) while running this handler",
            strike=True,
        )
        self.checks.child_ended(work, how)

    def abort(self, message: str) -> None:
        """
        End everything at once: running invocations end C{"timeout"} (their
        children are killed), queued ones C{"skipped"}, checks fail.
        """
        self.queue.drain(
            "skipped", "actordispatch.Aborted", message, f"{message} before this ran"
        )
        for child in self.supervisor.children():
            if self.settler.settle_running(
                child, "timeout", "actordispatch.Aborted", message, requeue=False
            ):
                self.supervisor.kill(child)
