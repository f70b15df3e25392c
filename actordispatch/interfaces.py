"""
The zope.interface seams of actordispatch.

L{IEventDispatcher} and L{IBackgroundUtility} are what applications program
against (the names and shapes of the original C{twisted_event_dispatcher}).
L{IHandlerPool} is where a phase's invocations go: the local ampoule pool is one
implementation; tests use in-memory fakes.  L{IJobPool} is the same seam
without a Deferred per invocation, for pools on the hot path.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from zope.interface import Attribute, Interface

if TYPE_CHECKING:
    from twisted.internet.defer import Deferred

    from actordispatch._core.invocation import Invocation, Job
    from actordispatch._core.result import DispatchResult, HandlerOutcome


class IBackgroundUtility(Interface):
    """
    A utility with a background operation that can be started and stopped.
    """

    running = Attribute("True while the utility is started and accepting work.")

    def start() -> Deferred[None]:
        """
        Start the utility.

        @return: a Deferred that fires when it has started.
        """

    def stop() -> Deferred[None]:
        """
        Stop the utility, letting work already accepted finish.

        @return: a Deferred that fires when it has stopped.
        """


class IEventDispatcher(Interface):
    """
    Routes fired events, by match spec, to the handlers of each phase in order.
    """

    allowed_match_spec_keywords = Attribute(
        "The keywords match specs and fired events may use (a frozenset)."
    )
    phases = Attribute("The phases, in the order they run (a tuple).")

    def add_event_handler(handler: Any, phase: str, **match_spec: Any) -> Deferred[int]:
        """
        Register C{handler} for C{phase}, matching events by C{match_spec}.

        @return: a Deferred firing with the new handler's id.
        """

    def remove_event_handler(handler_id: int) -> Deferred[None]:
        """
        Remove a handler.

        @return: a Deferred firing with C{None}, or failing with C{KeyError}.
        """

    def remove_event_handlers(*, owner: Any) -> Deferred[int]:
        """
        Remove every handler registered with C{owner=owner}.

        @return: a Deferred firing with how many were removed.
        """

    def handlers(**filters: Any) -> list[Any]:
        """
        The live handlers (C{HandlerInfo}), narrowed by C{filters}.
        """

    def explain(**keywords: Any) -> Any:
        """
        Which handlers an event fired with C{keywords} would reach, and why
        the others would not (an C{Explanation}).
        """

    def fire_event(event: Any, **keywords: Any) -> Deferred[DispatchResult]:
        """
        Dispatch C{event} to the handlers whose specs match C{keywords}.

        @return: a Deferred firing with a C{DispatchResult}.
        """

    def add_match_spec_keyword(name: str) -> None:
        """
        Allow one more match keyword.
        """

    def remove_match_spec_keyword(name: str) -> None:
        """
        Disallow a match keyword that no handler's spec uses.
        """


class IHandlerPool(Interface):
    """
    Somewhere handlers run: it checks handler names and runs invocations,
    answering each with a C{HandlerOutcome}.
    """

    def start() -> Deferred[None]:
        """
        Start the pool.

        @return: a Deferred that fires when its workers can serve.
        """

    def stop() -> Deferred[None]:
        """
        Stop the pool.  The caller has already waited for its invocations.

        @return: a Deferred that fires when its workers are gone.
        """

    def check_handler(name: str) -> Deferred[int]:
        """
        Have a worker import the handler called C{name}.

        @return: a Deferred firing when it could, failing with
            C{HandlerImportError} when it could not.
        """

    def abort(message: str) -> None:
        """
        End all work at once: running invocations end C{"timeout"} (their
        workers are killed), queued ones C{"skipped"}, with C{message} as the
        reason.  The pool keeps serving new work.
        """

    def invoke(invocation: Invocation) -> Deferred[HandlerOutcome]:
        """
        Run one C{Invocation}.

        @return: a Deferred that always fires (never fails) with its
            C{HandlerOutcome}.
        """


class IJobPool(IHandlerPool):
    """
    A pool that takes a phase's invocations together, as L{Job}s, and settles
    each job itself instead of answering each invocation with a Deferred: the
    dispatcher's fast path (the local ampoule pool is one).  Having them all at
    once, it can batch them.
    """

    def submit(jobs: Sequence[Job]) -> None:
        """
        Run each job's invocation and call its C{settle} exactly once with the
        final C{HandlerOutcome} (it may be called before C{submit} returns, for
        an invocation the pool refuses at once).  Never raises for a job.
        """


class IRoutedPool(IHandlerPool):
    """
    A pool that routes by match spec itself (through a broker's exchange), so
    the dispatcher tells it each registration's spec: it binds a handler before
    the handler goes live, and unbinds it when it is removed.  The dispatcher
    stays the authority on who matches: a routed pool runs only the
    invocations it is given.
    """

    def check_spec(phase: str, spec: Any) -> None:
        """
        Check that a registration with this phase and C{MatchSpec} can be
        routed by this pool.

        @raise ValueError: naming what cannot be routed.
        """

    def bind(handler_id: int, handler: str, phase: str, spec: Any) -> Deferred[None]:
        """
        Route C{phase}'s events matching C{spec} to C{handler} (registration
        C{handler_id}).

        @return: a Deferred firing once the route is in place, or failing (the
            registration is then refused).
        """

    def unbind(handler_id: int) -> None:
        """
        Remove the route of a registration that is gone.
        """


# --- optional capabilities of a pool ----------------------------------------------
#
# A pool declares what it can do beyond L{IHandlerPool} with these, and the
# dispatcher and the metrics check them with C{providedBy}: nothing is probed
# by attribute name.


class IWarmablePool(IHandlerPool):
    """
    A pool that can import handlers ahead of their first invocation.
    """

    def warm(handler: str) -> None:
        """
        Have the workers import C{handler} now (and those started later, as
        they start): a registration will send it invocations.
        """


class ITimedPool(IHandlerPool):
    """
    A pool that bounds every invocation in time: one whose registration set no
    timeout gets the pool's own default.  The AMP endpoint lists that default
    as such a handler's C{timeout}.
    """

    default_timeout = Attribute(
        "Seconds an invocation may run when its registration set no timeout "
        "(a positive number)."
    )


class IProcessPool(ITimedPool):
    """
    A pool whose workers are processes of this machine, or that can at least
    say which they are (a pool with none answers an empty sequence).  It
    bounds them in number (L{size}) and in time (L{ITimedPool}: a worker is
    not waited for past a deadline).
    """

    size = Attribute(
        "How many worker processes of its own serve its invocations at once "
        "(an int): the local pool's children, 1 for an external peer, 0 when "
        "the workers are not its own (an AMQP pool's are the worker hosts'). "
        "What serves its work sizes its credit by it (a worker host's prefetch)."
    )

    def child_pids() -> Sequence[int]:
        """
        The pids of the live worker processes.
        """


class IFollowUpPool(IHandlerPool):
    """
    A pool whose handlers can fire follow-up events (see
    L{actordispatch.children.followup}): the dispatcher gives it where to send
    them.
    """

    def set_follow_ups(sink: Any) -> None:
        """
        Send follow-up events to C{sink}, called as C{sink(depth, event,
        keywords, on_error)} and returning C{(number, Deferred[DispatchResult])}
        or raising C{FollowUpError}; C{None} refuses them all.
        """


class IConnectedPool(IHandlerPool):
    """
    A pool that reaches its workers over a connection (a broker's), which can
    be down, and whose replies can arrive when nobody waits for them.
    """

    up = Attribute("Whether the connection is up now (a bool).")
    ignored_replies = Attribute(
        "How many replies no invocation was waiting for (an int): duplicates "
        "after a redelivery, replies after a timeout."
    )
