"""
Handler checks: a child imports a handler by name, before the handler is
registered (L{HandlerChecks}).  A check waits in the pool's queue like an
invocation, but goes to a child alone, and never into a batch.
"""

from __future__ import annotations

from typing import Any

from attrs import define
from twisted.internet.defer import Deferred, fail
from twisted.python.failure import Failure

from actordispatch._core.errors import ChildEndedError, HandlerImportError
from actordispatch._local.child import Child
from actordispatch._local.quarantine import Quarantine
from actordispatch._local.supervisor import Supervisor
from actordispatch._local.work import PendingCheck, Preloads, WorkQueue, cancel_call
from actordispatch._wire.commands import CheckHandler


@define(eq=False)
class HandlerChecks:
    """
    Sends handler checks to children and settles them.

    @ivar timeout: seconds a child may take to import a handler before it is
        killed and the check fails.
    """

    reactor: Any
    supervisor: Supervisor
    queue: WorkQueue
    quarantine: Quarantine
    preloads: Preloads
    timeout: float

    def check_handler(self, name: str) -> Deferred[int]:
        """
        Queue a check of C{name}; the caller pumps the queue.

        @return: the check's Deferred (it fires with a pid), failed at once if
            the handler is quarantined.
        """
        left = self.quarantine.remaining(name)
        if left is not None:
            return fail(
                HandlerImportError(
                    f"handler {name!r} is quarantined for {left:.1f}s more: its "
                    "children keep dying"
                )
            )
        done: Deferred[int] = Deferred()
        self.queue.append(PendingCheck(name, done))
        return done

    def send(self, child: Child, check: PendingCheck) -> None:
        """
        Have C{child} (free) import C{check}'s handler.
        """
        self.supervisor.busy(child)
        child.work = check
        check.deadline = self.reactor.callLater(
            self.timeout, self._overran, child, check
        )
        d = child.amp.callRemote(CheckHandler, handler=check.name)
        d.addBoth(self._answered, child, check)

    def _overran(self, child: Child, check: PendingCheck) -> None:
        if not check.done.called:
            check.done.errback(
                HandlerImportError(
                    f"importing handler {check.name!r} took over "
                    f"{self.timeout:g}s; the child was killed"
                )
            )
        self.supervisor.kill(child)

    def _answered(self, result: Any, child: Child, check: PendingCheck) -> None:
        cancel_call(check.deadline)
        if check.done.called:
            return
        if isinstance(result, Failure):
            if isinstance(result.value, ChildEndedError):
                return  # child_ended reports it, with the strike
            if isinstance(result.value, HandlerImportError):
                check.done.errback(result.value)
            else:
                check.done.errback(
                    HandlerImportError(
                        f"could not check handler {check.name!r}: "
                        f"{result.getErrorMessage()}"
                    )
                )
        else:
            if self.preloads.prove(check.name):
                # Standby children booted without it: replace them with warm ones.
                self.supervisor.retire_spares()
            check.done.callback(result["pid"])
        if child.work is check:
            self.supervisor.done_with(child)

    def child_ended(self, check: Any, how: str) -> None:
        """
        The child running C{check} (if a check) died: the handler gets a strike.
        """
        if not isinstance(check, PendingCheck):
            return
        cancel_call(check.deadline)
        if not check.done.called:
            self.quarantine.strike(check.name)
            check.done.errback(
                HandlerImportError(
                    f"the child died ({how}) while importing handler {check.name!r}"
                )
            )
