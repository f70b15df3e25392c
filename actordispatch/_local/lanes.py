"""
The work of handlers that wait for follow-up events: L{WaiterLanes}.

A child runs its batch's invocations one after another, so an invocation
that waits for a follow-up event holds every later one of its batch while it
waits (its child parked); and the pool's shared queue is FIFO.  A storm of such
invocations, batched and queued with other handlers' work, so delayed that
work by as long as the storm's follow-ups took (issue 16).

So the work of a handler that has waited (or tried to wait) for a follow-up
event in this pool stays out of the shared queue: its invocations, and the
first phase of each follow-up event it fires (those it waits for first: they
bring parked children back), wait in that handler's own line.  They go alone,
in batches of one, the lines taking turns, and only to a child the shared
queue leaves free; and while lined-up work runs on a child that is not parked,
they leave one idle child for the shared queue.  A storm then delays only its
own handler's events; other handlers' work finds a free child, never waits
behind the storm, nor in a batch with it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence

from attrs import define, field

from actordispatch._core.invocation import Invocation, Job
from actordispatch._core.result import HandlerOutcome, Status
from actordispatch._local.followups import FollowUpDesk
from actordispatch._local.supervisor import Supervisor
from actordispatch._local.work import WorkQueue


@define(eq=False)
class _Lined:
    """
    A job sent from a line: the lanes count it running till it settles.
    """

    job: Job
    lanes: WaiterLanes

    @property
    def invocation(self) -> Invocation:
        return self.job.invocation

    def settle(self, outcome: HandlerOutcome) -> None:
        self.lanes.running -= 1
        self.job.settle(outcome)


@define(eq=False)
class WaiterLanes:
    """
    One line of work per handler that waits for follow-up events.

    @ivar send: hands jobs on to be batched (the pool's batch runner).
    @ivar desk: tells which handlers wait for follow-ups (C{waiters}) and,
        while a follow-up event is being fired, which such handler fired it
        and whether it waits for it (C{firing}).
    @ivar running: jobs sent from the lines, not settled yet.
    """

    supervisor: Supervisor
    queue: WorkQueue
    send: Callable[[Sequence[Job]], None]
    desk: FollowUpDesk
    running: int = field(default=0, init=False)
    _lines: dict[str, deque[Job]] = field(factory=dict, init=False)
    #: the handlers with a line, in their turn
    _turns: deque[str] = field(factory=deque, init=False)

    def __len__(self) -> int:
        return sum(map(len, self._lines.values()))

    def _line(self, handler: str) -> deque[Job]:
        line = self._lines.get(handler)
        if line is None:
            line = self._lines[handler] = deque()
            self._turns.append(handler)
        return line

    def submit(self, jobs: Sequence[Job]) -> None:
        """
        Line up the work of handlers that wait for follow-ups (L{feed} sends
        it); send the rest on to be batched, together.
        """
        desk = self.desk
        firing = desk.firing
        if firing is not None:
            handler, waited = firing
            line = self._line(handler)
            if waited:
                line.extendleft(reversed(jobs))
            else:
                line.extend(jobs)
            return
        waiters = desk.waiters
        if not waiters:
            self.send(jobs)  # the usual case: no handler of this pool waits
            return
        others = []
        for job in jobs:
            handler = job.invocation.handler
            if handler in waiters:
                self._line(handler).append(job)
            else:
                others.append(job)
        if others:
            self.send(others)

    def feed(self) -> None:
        """
        Send lined-up jobs, one at a time and in turn, to the children the
        shared queue leaves free, keeping one of them free for it while
        lined-up work runs on a child that is not parked.  (Not while a
        batch's outcomes are being delivered: a job sent then would be queued,
        and batched with what those outcomes set off.)
        """
        supervisor = self.supervisor
        queue = self.queue
        turns = self._turns
        while turns and not queue:
            idle = supervisor.idle()
            if not idle or (idle == 1 and self.running > supervisor.parked):
                return
            handler = turns.popleft()
            line = self._lines[handler]
            job = line.popleft()
            if line:
                turns.append(handler)
            else:
                del self._lines[handler]
            self.running += 1
            self.send((_Lined(job, self),))

    def drain(self, status: Status, error_type: str, message: str) -> None:
        """
        End every job waiting in a line with C{status}.
        """
        while self._turns:
            handler = self._turns.popleft()
            line = self._lines.pop(handler)
            while line:
                job = line.popleft()
                job.settle(
                    job.invocation.outcome(
                        status, error_type=error_type, error_message=message
                    )
                )
