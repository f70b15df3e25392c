"""
Test doubles for code that uses actordispatch (in the spirit of treq's
C{testing} module).

L{FakePool} is an in-memory L{IHandlerPool}: no processes, and every invocation
waits until the test answers it, so a test controls exactly when each handler of
each phase finishes.  Pass it as C{EventDispatcher(..., pool=FakePool())}.
L{FakeJobPool} is the same pool on the L{IJobPool} seam, the one the local
ampoule pool uses: the dispatcher hands it jobs, which it settles.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from attrs import define, field
from twisted.internet.defer import Deferred, fail, succeed
from zope.interface import implementer

from actordispatch._core.errors import HandlerImportError
from actordispatch._core.invocation import Invocation, Job
from actordispatch._core.result import HandlerOutcome
from actordispatch._core.veto import Veto
from actordispatch.interfaces import IHandlerPool, IJobPool


@define(eq=False)
class FakeCall:
    """
    One invocation the dispatcher sent to a L{FakePool}, waiting for an answer.
    """

    invocation: Invocation
    _done: Deferred[HandlerOutcome]

    @property
    def answered(self) -> bool:
        """
        Whether the test has answered this call.
        """
        return self._done.called

    def succeed(
        self, value: Any = None, *, duration: float = 0.001, pid: int = 1
    ) -> None:
        """
        Answer with an C{"ok"} outcome carrying C{value}; a L{Veto} becomes
        the outcome's C{veto} reason, as a child reports it.
        """
        if isinstance(value, Veto):
            outcome = self.invocation.ok(
                None, duration=duration, pid=pid, veto=value.reason
            )
        else:
            outcome = self.invocation.ok(value, duration=duration, pid=pid)
        self._done.callback(outcome)

    def fail(
        self,
        status: str = "error",
        error_type: str = "ValueError",
        error_message: str = "boom",
    ) -> None:
        """
        Answer with a failing outcome.
        """
        self._done.callback(
            self.invocation.outcome(
                status,  # type: ignore[arg-type]
                error_type=error_type,
                error_message=error_message,
            )
        )


@implementer(IHandlerPool)
@define(eq=False)
class FakePool:
    """
    An in-memory pool.

    @ivar importable: handler names that L{check_handler} accepts; C{None}
        accepts every name.
    @ivar answer: if set, called with each invocation to answer it at once;
        otherwise invocations wait in L{calls} for the test.
    """

    importable: Iterable[str] | None = None
    answer: Callable[[FakeCall], None] | None = None
    calls: list[FakeCall] = field(factory=list)
    checks: list[str] = field(factory=list)
    starts: int = 0
    stops: int = 0
    aborts: list[str] = field(factory=list)

    def start(self) -> Deferred[None]:
        self.starts += 1
        return succeed(None)

    def stop(self) -> Deferred[None]:
        self.stops += 1
        return succeed(None)

    def check_handler(self, name: str) -> Deferred[int]:
        self.checks.append(name)
        if self.importable is None or name in set(self.importable):
            return succeed(1)
        return fail(
            HandlerImportError(f"cannot import handler {name!r}: not in FakePool")
        )

    def abort(self, message: str) -> None:
        """
        End every unanswered call: C{"timeout"}, as a real pool ends the
        invocations it kills.
        """
        self.aborts.append(message)
        for call in self.pending():
            call.fail("timeout", "actordispatch.Aborted", message)

    def invoke(self, invocation: Invocation) -> Deferred[HandlerOutcome]:
        done: Deferred[HandlerOutcome] = Deferred()
        call = FakeCall(invocation, done)
        self.calls.append(call)
        if self.answer is not None:
            self.answer(call)
        return done

    def pending(self) -> list[FakeCall]:
        """
        The calls not answered yet, in the order they were sent.
        """
        return [call for call in self.calls if not call.answered]


@implementer(IJobPool)
@define(eq=False)
class FakeJobPool(FakePool):
    """
    A L{FakePool} that takes jobs (L{IJobPool}): each job submitted is a
    L{FakeCall} in L{calls}, and answering it settles the job.

    @ivar submits: how many jobs each call of C{submit} handed over.
    """

    submits: list[int] = field(factory=list)

    def submit(self, jobs: Sequence[Job]) -> None:
        self.submits.append(len(jobs))
        for job in jobs:
            done: Deferred[HandlerOutcome] = Deferred()
            done.addCallback(job.settle)
            call = FakeCall(job.invocation, done)
            self.calls.append(call)
            if self.answer is not None:
                self.answer(call)
