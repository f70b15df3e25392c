"""
The dispatcher actor: L{EventDispatcher}.

It owns the handler registry and a mailbox of accepted events.  Each accepted
event is I{planned} at once (the handlers that match it now, per phase), then runs
phase by phase: every handler of a phase is sent to the pool together, and the
phase ends when each has a final outcome.  By default one event at a time goes
through all its phases, in fire order; C{max_in_flight} lets more run at once,
and C{order_by} keeps fire order among events that share a keyword's value.

The class is a facade over its parts, each in its own module of this package:
L{KeywordSet} (the allowed keywords), L{HandlerBook} (registrations),
L{PoolSet} (the pools), L{Admission} (accepting and queueing events),
L{PhaseRunner} (running their phases) and L{Stopper} (start, stop, drain).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Hashable, Iterable, Mapping
from typing import Any

from attrs import frozen
from twisted.internet.defer import Deferred, succeed
from zope.interface import implementer

from actordispatch._core.options import (
    RESERVED_KEYWORDS,
    check_max_depth,
    check_max_in_flight,
    check_max_queue,
    check_on_overload,
    check_order_by,
)
from actordispatch._core.phase import Phase, phases_of
from actordispatch._core.registry import Explanation, HandlerInfo
from actordispatch._core.result import DispatchResult
from actordispatch._core.sandbox import SandboxProfile
from actordispatch._dispatch.admission import Admission
from actordispatch._dispatch.book import HandlerBook
from actordispatch._dispatch.keywords import KeywordSet
from actordispatch._dispatch.pools import PoolSet
from actordispatch._dispatch.runner import PhaseRunner
from actordispatch._dispatch.stopping import Lifecycle, Stopper
from actordispatch._local.pool import AmpoulePool
from actordispatch._wire.codec import DEFAULT_MAX_EVENT_SIZE
from actordispatch.interfaces import (
    IBackgroundUtility,
    IEventDispatcher,
    IHandlerPool,
)

__all__ = ["RESERVED_KEYWORDS", "DispatcherStats", "EventDispatcher"]


@frozen
class DispatcherStats:
    """
    Counters of a dispatcher.  Always C{accepted == finished + in_flight +
    queued}.

    @ivar accepted: events C{fire_event} accepted (did not fail at once).
    @ivar finished: events whose L{DispatchResult} has been delivered.
    @ivar in_flight: events running their phases.
    @ivar queued: accepted events waiting for their turn (the queue's depth).
    @ivar waiting: events not accepted yet, waiting for room in a full queue
        (with C{on_overload="wait"}).
    @ivar handlers: live registered handlers.
    @ivar rejected: events refused because the queue was full.
    """

    accepted: int
    finished: int
    in_flight: int
    queued: int
    handlers: int
    waiting: int = 0
    rejected: int = 0


@implementer(IEventDispatcher, IBackgroundUtility)
class EventDispatcher:
    """
    A generic event dispatcher whose handlers run in isolated child processes.

    @param allowed_match_spec_keywords: the keywords match specs and fired
        events may use.
    @param phases: the phases, in the order they run (any number, at least
        one): names, or L{Phase} values saying that a phase is sequential, can
        veto, or has its own error policy.
    @param reactor: the reactor; the global one by default.
    @param pool_size: number of child processes (default: the number of CPUs).
    @param default_timeout: seconds a handler may run when it set no timeout;
        past it the child is killed and the outcome is C{"timeout"}.
    @param max_in_flight: how many events may run their phases at once (1: one
        event at a time, in fire order).
    @param order_by: a match keyword; events with equal values of it run in fire
        order even when C{max_in_flight} > 1 (events lacking it count as C{None}).
    @param skip_after_failure: the error policy of the phases that set none:
        when true (C{on_error="abort"}), a failed outcome (C{"error"},
        C{"timeout"}, C{"crashed"}) makes the later phases' handlers
        C{"skipped"}; by default they still run.
    @param max_event_size: cap, in bytes, on an encoded event.
    @param child_env: extra environment variables for the children (they inherit
        nothing else but C{PYTHONPATH}).
    @param max_batch: most invocations sent to one child in one AMP call.
    @param recycle_after: replace a child after this many calls (0: never).
    @param sandbox: the L{SandboxProfile} the local pool's children apply to
        themselves before importing any handler (default: die with the parent,
        no core dumps; see C{SandboxProfile.untrusted()} for untrusted code).
    @param max_queue: how many accepted events may wait for their turn (C{None}:
        no bound); when full, C{fire_event} fails with L{OverloadedError}, or
        waits for room if C{on_overload="wait"}.
    @param on_overload: C{"fail"} or C{"wait"}, see C{max_queue}.
    @param drain_timeout: default seconds C{stop()} lets accepted events finish
        before it kills what runs (outcome C{"timeout"}) and skips the rest
        (C{None}: wait as long as it takes).
    @param trace: emit a structured debug log event when an event is accepted,
        when each of its phases starts and ends, and for each handler's
        outcome (fields: C{event}, C{phase}, C{handler_id}, C{status}, ...).  Off
        by default: even filtered out, an event costs microseconds.
    @param max_depth: how deep a chain of follow-up events may go (handlers
        firing events from their children with C{children.fire_event}, see
        L{actordispatch.children.followup}): a follow-up of a follow-up of an event
        fired by
        the application has depth 2.  Past it a follow-up is refused with
        L{FollowUpDepthError}; 0 refuses every follow-up event.
    @param pool: an L{IHandlerPool} to use as the C{"default"} pool instead of
        the local ampoule pool.  More pools (other transports) can be added
        with L{add_pool}.  The local pool's options (C{pool_size},
        C{default_timeout}, C{child_env}, C{max_batch}, C{recycle_after},
        C{sandbox}) cannot be given with it: they would be ignored, so they
        raise C{ValueError} (give them to the pool).
    """

    def __init__(
        self,
        allowed_match_spec_keywords: Iterable[str],
        phases: Iterable[str | Phase] = ("before", "during", "after"),
        *,
        reactor: Any = None,
        pool_size: int | None = None,
        default_timeout: float = 60.0,
        max_in_flight: int = 1,
        order_by: str | None = None,
        skip_after_failure: bool = False,
        max_event_size: int = DEFAULT_MAX_EVENT_SIZE,
        child_env: Mapping[str, str] | None = None,
        max_batch: int = 64,
        recycle_after: int = 0,
        sandbox: SandboxProfile | None = None,
        max_queue: int | None = 10_000,
        on_overload: str = "fail",
        drain_timeout: float | None = None,
        pool: IHandlerPool | None = None,
        trace: bool = False,
        max_depth: int = 8,
    ) -> None:
        self._keywords = KeywordSet(allowed_match_spec_keywords)
        self._phase_specs = phases_of(phases)
        #: the phases' names, in order
        self.phases: tuple[str, ...] = tuple(p.name for p in self._phase_specs)
        check_max_in_flight(max_in_flight)
        check_order_by(order_by, self._keywords.frozen())
        check_on_overload(on_overload)
        check_max_queue(max_queue)
        self._max_depth = check_max_depth(max_depth)
        if reactor is None:
            from twisted.internet import reactor as default_reactor

            reactor = default_reactor
        default_pool = _default_pool(
            pool,
            reactor,
            size=pool_size,
            default_timeout=default_timeout,
            child_env=child_env,
            max_batch=max_batch,
            recycle_after=recycle_after,
            sandbox=sandbox,
        )
        self._order_by = order_by
        self._state, self._pools, self._book, self._admission, self._stopper = (
            _assemble(
                self._phase_specs,
                self._keywords,
                reactor,
                default_pool,
                follow_ups=self.fire_follow_up if max_depth else None,
                drain_timeout=drain_timeout,
                skip_after_failure=skip_after_failure,
                trace=trace,
                max_in_flight=max_in_flight,
                order_by=order_by,
                max_queue=max_queue,
                on_overload=on_overload,
                max_event_size=max_event_size,
                max_depth=max_depth,
            )
        )

    # --- configuration -----------------------------------------------------------

    @property
    def allowed_match_spec_keywords(self) -> frozenset[str]:
        """
        The keywords match specs and fired events may use.
        """
        return self._keywords.frozen()

    @property
    def phase_specs(self) -> tuple[Phase, ...]:
        """
        The phases as L{Phase} values, in order.
        """
        return self._phase_specs

    @property
    def running(self) -> bool:
        """
        Whether the dispatcher accepts events.
        """
        return self._state.running

    def add_match_spec_keyword(self, name: str) -> None:
        """
        Allow one more match keyword.

        @raise ValueError: if C{name} is not an identifier or collides with an
            option name.
        """
        self._keywords.add(name)

    def remove_match_spec_keyword(self, name: str) -> None:
        """
        Disallow a match keyword.

        @raise ValueError: if C{name} is not allowed, is the C{order_by}
            keyword, or a handler's spec constrains it.
        """
        if name not in self._keywords:
            raise ValueError(f"{name!r} is not an allowed match keyword")
        if name == self._order_by:
            raise ValueError(f"{name!r} is the order_by keyword")
        users = self._book.keyword_users(name)
        if users:
            raise ValueError(
                f"cannot remove match keyword {name!r}: handlers {users} use it"
            )
        self._keywords.discard(name)

    # --- handlers ------------------------------------------------------------------

    def add_event_handler(
        self,
        handler: Callable[[Any], Any] | str,
        phase: str,
        *,
        max_calls: int | None = None,
        timeout: float | None = None,
        retries: int = 0,
        pool: str = "default",
        expires: float | None = None,
        owner: Hashable | None = None,
        priority: int = 0,
        **match_spec: Hashable,
    ) -> Deferred[int]:
        """
        Register C{handler} to run in C{phase} for every event matching
        C{match_spec}.

        @param handler: a module-level callable, or its name C{"pkg.mod:attr"}
            (which the parent never imports: a child does).
        @param max_calls: run at most this many times, then remove itself.
        @param timeout: seconds the handler may run (default: the pool's).
        @param pool: the name of the pool it runs in (see L{add_pool}).
        @param expires: remove it this many seconds after registration (events
            accepted before then still run it: an event's handlers are fixed
            when it is accepted).
        @param owner: a hashable token; L{remove_event_handlers} removes every
            handler registered with it.
        @param priority: an int; within its phase, handlers run (in a
            sequential phase) or are sent (in a concurrent one) highest
            priority first, then in registration order, and their outcomes
            are listed in that order.
        @param retries: run it again, up to this many times, when its child
            crashed or it timed out (never when it raised): it runs at most
            C{1 + retries} times per event, with one outcome, the last.
        @return: a Deferred firing with the handler's id (never reused).  For a
            callable it fires at once; for a name, once a child has imported it
            (the children start on the first such check, if not started yet),
            failing with L{HandlerImportError} if it cannot.  On a pool that
            routes by spec itself (an L{IRoutedPool}, such as the AMQP pool),
            once the route is bound, failing with L{BrokerUnavailableError}
            if the broker cannot be reached.
        @raise ValueError: at once, for an unknown phase or keyword, an
            unhashable value, bad options, a callable a child cannot import, or
            a spec its routed pool cannot route.
        """
        return self._book.add(
            handler,
            phase,
            max_calls=max_calls,
            timeout=timeout,
            retries=retries,
            pool=pool,
            expires=expires,
            owner=owner,
            priority=priority,
            match_spec=match_spec,
        )

    def remove_event_handlers(self, *, owner: Hashable) -> Deferred[int]:
        """
        Remove every handler registered with C{owner=owner} (also those still
        being checked), as L{remove_event_handler} removes one.

        @return: a Deferred firing with how many were removed.
        @raise ValueError: for C{owner=None} (handlers registered without an
            owner are removed one by one).
        """
        return self._book.remove_owned(owner)

    def remove_event_handler(self, handler_id: int) -> Deferred[None]:
        """
        Remove a handler.  Invocations already running finish; those planned for
        accepted events but not started yet end C{"skipped"}.

        @return: a Deferred firing with C{None}, or failing with C{KeyError} if
            C{handler_id} is unknown or already removed.
        """
        return self._book.remove(handler_id)

    # --- pools and lifecycle ---------------------------------------------------

    def add_pool(self, name: str, pool: IHandlerPool) -> Deferred[None]:
        """
        Add a place for handlers to run: another L{IHandlerPool} (an external
        process connected over AMP, worker hosts behind a broker, a second local
        pool with other limits...).  Handlers choose it with
        C{add_event_handler(..., pool=name)}.

        @return: a Deferred firing when the pool is ready (at once if the
            dispatcher is not running: it starts with the dispatcher).
        @raise ValueError: if a pool has that name already.
        """
        self._pools.add(name, pool)
        if self._state.running:
            return self._pools.ensure(name)
        return succeed(None)

    def remove_pool(self, name: str) -> Deferred[None]:
        """
        Remove a pool and every handler registered to it (their planned
        invocations that have not started end C{"skipped"}), then stop it: its
        running invocations end as the pool ends them.

        @raise ValueError: for the C{"default"} pool.
        @raise KeyError: for an unknown pool.
        """
        self._pools.removable(name)
        self._book.forget_pool(name)
        return self._pools.remove(name)

    def pools(self) -> dict[str, IHandlerPool]:
        """
        The pools by name.
        """
        return self._pools.by_name()

    def start(self) -> Deferred[None]:
        """
        Start accepting events and start the children.  Events may be fired at
        once; they wait for the children to boot.

        @return: a Deferred firing when the children are ready.
        """
        return self._stopper.start()

    def stop(self, drain_timeout: float | None = None) -> Deferred[None]:
        """
        Stop accepting events, let every accepted event finish, then stop the
        children.  Registered handlers stay registered: C{start()} runs again
        with fresh children.

        Events waiting for room in a full queue fail with L{NotRunningError}
        (they were never accepted).  If accepted events are still running after
        C{drain_timeout} seconds (default: the constructor's), their running
        invocations are killed (outcome C{"timeout"}) and every invocation not
        started yet ends C{"skipped"}: each accepted event still gets its result.

        Called again while it stops, it fires at the same time; a
        C{drain_timeout} given then shortens the drain (0 ends it at once).

        @return: a Deferred firing when the children are gone.
        """
        return self._stopper.stop(drain_timeout)

    # --- introspection -------------------------------------------------------

    def handlers(
        self,
        *,
        phase: str | None = None,
        handler: str | None = None,
        pool: str | None = None,
        owner: Hashable | None = None,
        **keywords: Hashable,
    ) -> list[HandlerInfo]:
        """
        Every live handler, in id order, with its pool, the pids of that pool's
        children, its match spec and options, its call and failure counts and
        its latency percentiles.

        Filters narrow the list: C{phase}, C{handler} (its name), C{pool} and
        C{owner} by equality; a match keyword (C{role="admin"}) keeps the
        handlers whose spec constrains that keyword and accepts that value.

        @raise ValueError: for a keyword that is not allowed.
        """
        return self._book.handlers(
            phase=phase, handler=handler, pool=pool, owner=owner, keywords=keywords
        )

    def explain(self, **keywords: Hashable) -> Explanation:
        """
        Which handlers an event fired now with C{keywords} would reach in each
        phase, and, for each other handler, why not (the first constraint of
        its spec the event fails, or its C{max_calls} all promised).  Nothing
        is fired or reserved.

        @raise ValueError: for a keyword that is not allowed.
        """
        return self._book.explain(keywords)

    def stats(self) -> DispatcherStats:
        """
        The dispatcher's counters now.
        """
        admission = self._admission
        return DispatcherStats(
            accepted=admission.accepted,
            finished=admission.finished,
            in_flight=admission.in_flight,
            queued=admission.queued,
            handlers=len(self._book),
            waiting=admission.waiting,
            rejected=admission.rejected,
        )

    # --- events --------------------------------------------------------------------

    def fire_event(
        self, event: Any, *, on_error: str | None = None, **keywords: Hashable
    ) -> Deferred[DispatchResult]:
        """
        Dispatch C{event} to every handler whose match spec matches C{keywords},
        phase by phase.

        @param on_error: C{"abort"} or C{"continue"}: for this event, whether
            a failed handler stops the later phases, whatever the phases'
            own policies (see L{Phase}).

        @return: a Deferred firing with the L{DispatchResult}, one outcome per
            matching handler (a handler's failure is an outcome, not a failure
            of this Deferred).  It fails with L{NotRunningError} when the
            dispatcher is not running, and with L{EventEncodingError} or
            L{EventTooLargeError} when the event cannot be sent to a child.
        @raise ValueError: at once, for a keyword that is not allowed or a value
            that is not hashable.
        """
        return self._admission.fire(event, on_error, keywords)

    def fire_follow_up(
        self,
        depth: int,
        event: bytes,
        keywords: dict[str, Any],
        on_error: str | None,
    ) -> tuple[int, Deferred[DispatchResult]]:
        """
        Accept a follow-up event that a running handler fired, C{depth} deep
        (1 for an event fired by a handler of an event the application fired),
        and start it at once: it bypasses the queue, C{max_in_flight} and
        C{order_by}, because the event that fired it (which holds its place in
        them) may be waiting for it.  Pools whose children fire follow-ups
        (L{IFollowUpPool}) and the AMP endpoint call this; an application
        fires events with L{fire_event}.

        @param event: the event, encoded as a child encodes its results (it is
            decoded and encoded again: type tags do not cross).
        @param keywords: its keywords, checked as L{fire_event} checks them.
        @param on_error: C{"abort"}, C{"continue"} or C{None}, as in
            L{fire_event}.
        @return: the event's number and the Deferred of its result.
        @raise FollowUpDepthError: past C{max_depth}.
        @raise FollowUpError: when it is refused otherwise (the dispatcher
            stops, a bad keyword or event...), saying why.
        """
        return self._admission.follow_up(depth, event, keywords, on_error)


def _assemble(
    phase_specs: tuple[Phase, ...],
    keywords: KeywordSet,
    reactor: Any,
    default_pool: IHandlerPool,
    *,
    follow_ups: Callable[..., Any] | None,
    drain_timeout: float | None,
    skip_after_failure: bool,
    trace: bool,
    **options: Any,
) -> tuple[Lifecycle, PoolSet, HandlerBook, Admission, Stopper]:
    """
    The parts of a dispatcher, wired together: the L{PhaseRunner} runs the
    events the L{Admission} starts, and tells it when each has finished;
    the L{PoolSet} holds C{default_pool}, and gives C{follow_ups} to the
    pools whose handlers fire follow-up events.
    """
    phases = tuple(phase.name for phase in phase_specs)
    state = Lifecycle()
    pools = PoolSet(follow_ups=follow_ups)
    book = HandlerBook(phases, keywords, pools, state, reactor)
    runner = PhaseRunner(
        phase_specs,
        book.registry,
        pools.submitters,
        state,
        skip_after_failure=skip_after_failure,
        trace=trace,
    )
    admission = Admission(
        state,
        keywords,
        book.registry,
        reactor,
        runner.run_phase,
        trace=trace,
        **options,
    )
    runner.finish = admission.finish
    runner.broke = admission.broke
    stopper = Stopper(
        state, reactor, pools, book, admission, phases, drain_timeout=drain_timeout
    )
    pools.add("default", default_pool)
    return state, pools, book, admission, stopper


def _default_pool(
    pool: IHandlerPool | None,
    reactor: Any,
    *,
    size: int | None,
    default_timeout: float,
    child_env: Mapping[str, str] | None,
    max_batch: int,
    recycle_after: int,
    sandbox: SandboxProfile | None,
) -> IHandlerPool:
    """
    The dispatcher's C{"default"} pool: C{pool}, or a local ampoule pool
    built with the other options.

    @raise ValueError: when C{pool} is given with options of the local pool
        (other than their defaults), which it would ignore.
    """
    if pool is None:
        return AmpoulePool(
            size=size or os.cpu_count() or 2,
            default_timeout=default_timeout,
            child_env=child_env,
            max_batch=max_batch,
            recycle_after=recycle_after,
            sandbox=sandbox or SandboxProfile(),
            reactor=reactor,
        )
    given = {
        "pool_size": size is not None,
        "default_timeout": default_timeout != 60.0,
        "child_env": child_env is not None,
        "max_batch": max_batch != 64,
        "recycle_after": recycle_after != 0,
        "sandbox": sandbox is not None,
    }
    ignored = sorted(name for name, was_given in given.items() if was_given)
    if ignored:
        raise ValueError(
            f"{', '.join(ignored)} configure the local pool, which pool= "
            "replaces: they would be ignored (give them to that pool instead)"
        )
    return pool
