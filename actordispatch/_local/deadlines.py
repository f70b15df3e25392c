"""
Deadlines of the batches children run: L{DeadlineWatch}.

Each invocation is timed from its own start, read from its child's spool; a
child whose invocation overran its timeout is killed (SIGTERM, then SIGKILL
after the kill grace): that invocation ends C{"timeout"}, those that finished
keep their outcomes, those not started run on another child.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from attrs import define, field
from twisted.logger import Logger

from actordispatch._core.invocation import Job
from actordispatch._local.settling import SpoolSettler
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
        Watch C{batch}, just sent: its first invocation's deadline comes first.
        """
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
        index = len(view.records)
        if index >= len(batch.items):
            # All ran; the answer is on its way.  Look again in a moment.
            self.check_later(batch, self.kill_grace)
            return
        if view.started is None:
            started = batch.sent
        elif index == 0:
            started = view.started
        else:
            started = view.records[index - 1][0]
        timeout = self.timeout_of(batch.items[index])
        left = started + timeout - self.now()
        if left > 0:
            self.check_later(batch, left)
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
