"""
Deadlines of the batches children run: L{DeadlineWatch}.

Each invocation is timed from its own start, read from its child's spool; a
child whose invocation overran its timeout is killed (SIGTERM, then SIGKILL
after the kill grace): that invocation ends C{"timeout"}, those that finished
keep their outcomes, those not started run on another child.

The child's word never extends a deadline (issue 16): the times its spool
reports are clamped to what the parent observed (after the batch was sent,
before now), and every batch has a hard bound on the parent's clock, its
sending time plus the sum of its invocations' timeouts plus the kill grace:
past it the child is killed, and whatever did not finish ends C{"timeout"}.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from attrs import define, field
from twisted.logger import Logger

from actordispatch._core.invocation import Job
from actordispatch._local.child import SpoolView
from actordispatch._local.settling import SpoolSettler, reported_start
from actordispatch._local.supervisor import Supervisor
from actordispatch._local.work import Batch, cancel_call

_log = Logger()


@define(eq=False)
class DeadlineWatch:
    """
    Watches the deadlines of every batch with one timer.

    @ivar now: the time on the children's spool clock.
    @ivar default_timeout: seconds an invocation may run when it set none.
    """

    reactor: Any
    supervisor: Supervisor
    settler: SpoolSettler
    now: Callable[[], float]
    default_timeout: float
    kill_grace: float
    max_reply_size: int
    _timer: Any = field(default=None, init=False)

    def timeout_of(self, item: Job) -> float:
        """
        The seconds C{item}'s invocation may run.
        """
        return item.invocation.timeout or self.default_timeout

    def watch(self, batch: Batch) -> None:
        """
        Watch C{batch}, just sent: its first invocation's deadline comes first,
        its hard bound last.
        """
        batch.hard_deadline = (
            batch.sent + sum(map(self.timeout_of, batch.items)) + self.kill_grace
        )
        self.check_later(batch, self.timeout_of(batch.items[0]))

    def stop(self) -> None:
        """
        Watch no more (the pool stops: every batch is being settled).
        """
        cancel_call(self._timer)
        self._timer = None

    def check_later(self, batch: Batch, delay: float) -> None:
        """
        Look at C{batch} in C{delay} seconds (L{_check}).  One timer serves
        every batch of the pool, set for the earliest look: sending a batch
        that will be answered long before its deadline, as most are, costs no
        timer of its own.
        """
        batch.check_at = at = self.reactor.seconds() + delay
        timer = self._timer
        if not self.supervisor.running:
            return  # stopping: its child is being killed or retired
        if timer is None or not timer.active() or at < timer.getTime():
            cancel_call(timer)
            self._timer = self.reactor.callLater(delay, self._expired)

    def _expired(self) -> None:
        """
        The timer: check every batch whose time to look has come, then set
        the timer for the next one.
        """
        self._timer = None
        now = self.reactor.seconds()
        for child in self.supervisor.children():
            batch = child.work
            if (
                isinstance(batch, Batch)
                and not batch.settled
                and batch.check_at is not None
                and batch.check_at <= now
            ):
                batch.check_at = None
                self._check(batch)
        pending = [
            child.work.check_at
            for child in self.supervisor.children()
            if isinstance(child.work, Batch)
            and not child.work.settled
            and child.work.check_at is not None
        ]
        if pending and self.supervisor.running:
            at = min(pending)
            timer = self._timer
            if timer is None or not timer.active() or at < timer.getTime():
                cancel_call(timer)
                self._timer = self.reactor.callLater(max(0.0, at - now), self._expired)

    def _check(self, batch: Batch) -> None:
        """
        The invocation running now may have overrun: find it in the spool and
        either kill the child or look again when its own deadline comes.
        """
        if batch.settled:
            return
        view = batch.child.read_spool(batch.seq, self.max_reply_size)
        now = self.now()
        bound = batch.hard_deadline - now
        if bound <= 0:
            self._overran(batch, view)
            return
        index = len(view.records)
        if index >= len(batch.items):
            # All ran; the answer is on its way.  Look again in a moment.
            self.check_later(batch, min(self.kill_grace, bound))
            return
        started = reported_start(view, index, batch.sent, now)
        timeout = self.timeout_of(batch.items[index])
        left = started + timeout - now
        if left > 0:
            self.check_later(batch, min(left, bound))
            return
        child = batch.child
        self.settler.settle(
            batch,
            view,
            "timeout",
            "actordispatch.HandlerTimeout",
            f"did not finish within {timeout:g}s; its child process was killed",
        )
        _log.warn(
            "child {pid} killed: {handler} ran past its {timeout}s timeout",
            pid=child.pid,
            handler=batch.items[index].invocation.handler,
            timeout=timeout,
        )
        self.supervisor.kill(child)

    def _overran(self, batch: Batch, view: SpoolView) -> None:
        """
        C{batch} ran past its hard bound: whatever its spool says, kill its
        child; what did not finish ends C{"timeout"} and runs nowhere else.
        """
        child = batch.child
        bound = batch.hard_deadline - batch.sent
        self.settler.settle(
            batch,
            view,
            "timeout",
            "actordispatch.HandlerTimeout",
            f"its batch did not finish within {bound:g}s (its timeouts and the "
            "kill grace); its child process was killed",
            overrun=True,
        )
        _log.warn(
            "child {pid} killed: its batch ran past its hard bound of {bound}s",
            pid=child.pid,
            bound=bound,
        )
        self.supervisor.kill(child)
