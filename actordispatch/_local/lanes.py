"""
The invocations of handlers that wait for follow-up events: L{WaiterLanes}.

A child runs its batch's invocations one after another, so an invocation
that waits for a follow-up event holds every later one of its batch while it
waits (its child parked), and the pool's shared queue is FIFO: a storm of such
invocations, batched and queued with other handlers' work, delays that work
by as long as the storm's follow-ups take (issue 16).

So the invocations of a handler that has waited (or tried to wait) for a
follow-up event in this pool do not join the shared queue.  Each waits in its
handler's own line, and goes alone, in a batch of one, to a child that the
shared queue leaves free; the lines take turns.  A storm then delays only its
own handler's events: the others' work never waits behind it, nor in a batch
with it.  The price is that handler's batching, which is worth little to an
invocation that waits anyway.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence

from attrs import define, field

from actordispatch._core.invocation import Job
from actordispatch._core.result import Status
from actordispatch._local.supervisor import Supervisor
from actordispatch._local.work import WorkQueue


@define(eq=False)
class WaiterLanes:
    """
    One line of invocations per handler that waits for follow-up events.

    @ivar send: hands jobs on to be batched (the pool's batch runner).
    @ivar waits: whether a handler has waited for a follow-up event.
    """

    supervisor: Supervisor
    queue: WorkQueue
    send: Callable[[Sequence[Job]], None]
    waits: Callable[[str], bool]
    _lines: dict[str, deque[Job]] = field(factory=dict, init=False)
    #: the handlers with a line, in their turn
    _turns: deque[str] = field(factory=deque, init=False)

    def __len__(self) -> int:
        return sum(map(len, self._lines.values()))

    def submit(self, jobs: Sequence[Job]) -> None:
        """
        Line up the jobs of handlers that wait for follow-ups (L{feed} sends
        them); send the others on to be batched, together.
        """
        waits = self.waits
        others = []
        for job in jobs:
            handler = job.invocation.handler
            if not waits(handler):
                others.append(job)
                continue
            line = self._lines.get(handler)
            if line is None:
                line = self._lines[handler] = deque()
                self._turns.append(handler)
            line.append(job)
        if others:
            self.send(others)

    def feed(self) -> None:
        """
        Send the lines' jobs, one at a time and in turn, to the children the
        shared queue leaves free.  (Not while a batch's outcomes are being
        delivered: a job sent then would be queued, and batched with what
        those outcomes set off.)
        """
        supervisor = self.supervisor
        queue = self.queue
        turns = self._turns
        while turns and supervisor.idle() and not queue:
            handler = turns.popleft()
            line = self._lines[handler]
            job = line.popleft()
            if line:
                turns.append(handler)
            else:
                del self._lines[handler]
            self.send((job,))

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
