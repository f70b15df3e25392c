"""
One handler to run for one event: the unit of work a pool receives
(L{Invocation}), and the L{Job} that carries it to a pool that takes work
together with where each outcome goes.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from types import MappingProxyType
from typing import Any, Protocol

from attrs import field, frozen
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from actordispatch._core.result import HandlerOutcome, Status

_log = Logger()

_NO_KEYWORDS: Mapping[str, Hashable] = MappingProxyType({})


# Not slotted: one is made per invocation (see HandlerOutcome).
@frozen(slots=False)
class Invocation:
    """
    Run handler C{handler} (id C{handler_id}) of phase C{phase} on an event.

    @ivar event: the event, already encoded (once per event, shared by all of its
        invocations).
    @ivar timeout: seconds the handler may run, or C{None} for the pool's default.
    @ivar keywords: the keywords the event was fired with (shared by all of its
        invocations; pools that route by them, such as the AMQP pool, read
        them).
    @ivar depth: 0 for an event the application fired; 1 + the depth of the
        event whose handler fired it, for a follow-up event.
    """

    handler_id: int
    handler: str
    phase: str
    event: bytes
    timeout: float | None = None
    keywords: Mapping[str, Hashable] = field(default=_NO_KEYWORDS, eq=False)
    depth: int = field(default=0, eq=False)

    def ok(
        self,
        value: Any,
        *,
        duration: float = 0.0,
        pid: int | None = None,
        veto: str | None = None,
    ) -> HandlerOutcome:
        """
        The C{"ok"} outcome of this invocation, carrying the handler's C{value}
        (or the reason of the L{Veto} it returned).
        """
        return HandlerOutcome(
            handler_id=self.handler_id,
            handler=self.handler,
            phase=self.phase,
            status="ok",
            value=value,
            duration=duration,
            pid=pid,
            veto=veto,
        )

    def outcome(
        self,
        status: Status,
        *,
        error_type: str | None = None,
        error_message: str | None = None,
        duration: float = 0.0,
        pid: int | None = None,
    ) -> HandlerOutcome:
        """
        An outcome of this invocation that carries no value: a failure decided
        by the parent, or a skip.
        """
        return HandlerOutcome(
            handler_id=self.handler_id,
            handler=self.handler,
            phase=self.phase,
            status=status,
            error_type=error_type,
            error_message=error_message,
            duration=duration,
            pid=pid,
        )


class Job(Protocol):
    """
    An invocation handed to a pool (see L{IJobPool}) with the place its outcome
    goes: the pool calls C{settle} exactly once, with the final outcome.  No
    Deferred per invocation: on the hot path, a Deferred made, called back and
    run through its callbacks costs more than the rest of the pool's work for
    that invocation.
    """

    @property
    def invocation(self) -> Invocation:
        """
        What to run.
        """

    def settle(self, outcome: HandlerOutcome) -> None:
        """
        Take the invocation's final outcome (called once).
        """


def broken_outcome(invocation: Invocation, reason: Failure) -> HandlerOutcome:
    """
    The outcome of an invocation whose pool failed it instead of answering
    with an outcome (a bug in the pool): C{"crashed"}, naming the failure.
    """
    kind = reason.type
    return invocation.outcome(
        "crashed",
        error_type=f"{kind.__module__}.{kind.__qualname__}",  # type: ignore[union-attr]
        error_message=reason.getErrorMessage(),
    )


def settle_when(done: Deferred[HandlerOutcome], job: Job) -> None:
    """
    Settle C{job} with the outcome C{done} fires with (a pool that answers with
    Deferreds), or with a L{broken_outcome} if it fails instead.
    """

    def settled(result: HandlerOutcome | Failure) -> None:
        if isinstance(result, Failure):
            _log.failure("pool failed an invocation instead of answering", result)
            result = broken_outcome(job.invocation, result)
        job.settle(result)

    done.addBoth(settled)
