"""
The per-event objects of a dispatcher: an accepted event on its way through
the phases (L{Delivery}), one phase of it (L{PhaseRun}) and one invocation of
that phase on its way to a pool (L{DispatchJob}).

They hold state only; what happens to them is the L{PhaseRunner}'s, which a
job reaches through its run (never through the dispatcher).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable, Mapping
from typing import TYPE_CHECKING

from attrs import define, field
from twisted.internet.defer import Deferred

from actordispatch._core.invocation import Invocation
from actordispatch._core.phase import Phase
from actordispatch._core.registry import Registration
from actordispatch._core.result import DispatchResult, HandlerOutcome

if TYPE_CHECKING:
    from actordispatch._dispatch.runner import PhaseRunner


@define(eq=False)
class Delivery:
    """
    One accepted event on its way through the phases.
    """

    event: bytes
    keywords: Mapping[str, Hashable]
    order_key: Hashable
    plan: list[list[Registration]]
    done: Deferred[DispatchResult]
    outcomes: list[HandlerOutcome] = field(factory=list)
    phase_index: int = 0
    number: int = 0
    #: C{fire_event(on_error=...)}, overriding the phases' policies
    on_error: str | None = None
    #: why the rest of the event is skipped (a veto, or a failure under
    #: C{on_error="abort"}): C{(error_type, message)}
    halted: tuple[str | None, str] | None = None
    #: 0 for an event the application fired; else its depth of follow-ups
    depth: int = 0


@define(eq=False)
class PhaseRun:
    """
    One phase of one event: the outcomes so far, by slot, and how many remain;
    for a sequential phase, the jobs not sent yet.
    """

    runner: PhaseRunner
    delivery: Delivery
    phase: Phase
    slots: list[HandlerOutcome | None]
    remaining: int
    later: deque[DispatchJob] | None = None


@define(eq=False)
class DispatchJob:
    """
    One invocation of a phase run, on its way to a pool: the L{Job} a pool
    settles with its outcome (see L{IJobPool}).

    @ivar attempts: retries so far.
    """

    invocation: Invocation
    run: PhaseRun
    slot: int
    registration: Registration
    attempts: int = 0

    def settle(self, outcome: HandlerOutcome) -> None:
        """
        The pool's final outcome for this job: the runner takes it from here.
        """
        self.run.runner.settled(self, outcome)
