"""
The dispatcher actor: L{EventDispatcher}.

It owns the handler registry and a mailbox of accepted events.  Each accepted
event is I{planned} at once (the handlers that match it now, per phase), then runs
phase by phase: every handler of a phase is sent to the pool together, and the
phase ends when each has a final outcome.  By default one event at a time goes
through all its phases, in fire order; C{max_in_flight} lets more run at once,
and C{order_by} keeps fire order among events that share a keyword's value.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from typing import Any, cast

from attrs import define, evolve, field, frozen
from twisted.internet.defer import Deferred, DeferredList, fail, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from actordispatch._core.errors import (
    ActorDispatchError,
    BrokerUnavailableError,
    FollowUpDepthError,
    FollowUpError,
    HandlerImportError,
    NotRunningError,
    OverloadedError,
)
from actordispatch._core.invocation import Invocation, Job, settle_when
from actordispatch._core.match import MatchSpec, Operator
from actordispatch._core.phase import Phase, check_on_error
from actordispatch._core.registry import (
    Explanation,
    HandlerInfo,
    HandlerRegistry,
    Registration,
    handler_name,
)
from actordispatch._core.result import DispatchResult, HandlerOutcome
from actordispatch._core.sandbox import SandboxProfile
from actordispatch._local.pool import AmpoulePool
from actordispatch._wire.codec import (
    DEFAULT_MAX_EVENT_SIZE,
    decode_result,
    encode_event,
)
from actordispatch.interfaces import (
    IBackgroundUtility,
    IEventDispatcher,
    IHandlerPool,
    IJobPool,
    IRoutedPool,
)

_log = Logger()

#: The statuses the error policy counts as a handler's failure.
_FAILED = frozenset({"error", "timeout", "crashed"})

#: The statuses a handler's C{retries} apply to.
_RETRIED = frozenset({"timeout", "crashed"})

#: Keyword value types that need no check beyond their type: hashable, and
#: not a match operator.
_PLAIN_VALUES = frozenset({str, int, float, bool, type(None)})


def _submit_each(pool: IHandlerPool) -> Callable[[Sequence[Job]], None]:
    """
    How to hand jobs to a pool that answers each invocation with a Deferred.
    """

    def submit(jobs: Sequence[Job]) -> None:
        for job in jobs:
            settle_when(pool.invoke(job.invocation), job)

    return submit


#: Names of C{add_event_handler}'s own parameters and options (and
#: C{fire_event}'s event), which therefore cannot be match keywords.
RESERVED_KEYWORDS = frozenset(
    {
        "handler",
        "phase",
        "max_calls",
        "timeout",
        "retries",
        "pool",
        "event",
        "expires",
        "owner",
        "priority",
        "on_error",
    }
)


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


@define(eq=False)
class _PhaseRun:
    """
    One phase of one event: the outcomes so far, by slot, and how many remain;
    for a sequential phase, the jobs not sent yet.
    """

    dispatcher: EventDispatcher
    delivery: _Delivery
    phase: Phase
    slots: list[HandlerOutcome | None]
    remaining: int
    later: deque[_Job] | None = None


@define(eq=False)
class _Job:
    """
    One invocation of a phase run, on its way to a pool: the L{Job} a pool
    settles with its outcome (see L{IJobPool}).

    @ivar attempts: retries so far.
    """

    invocation: Invocation
    run: _PhaseRun
    slot: int
    registration: Registration
    attempts: int = 0

    def settle(self, outcome: HandlerOutcome) -> None:
        self.run.dispatcher._settled(self, outcome)


@define(eq=False)
class _Delivery:
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


def _validate_keyword_name(name: object) -> str:
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"match keyword {name!r} must be an identifier string")
    if name in RESERVED_KEYWORDS:
        raise ValueError(
            f"match keyword {name!r} collides with an option or parameter name "
            f"({', '.join(sorted(RESERVED_KEYWORDS))}); choose another"
        )
    return name


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
        with L{add_pool}.
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
        if isinstance(allowed_match_spec_keywords, str):
            raise ValueError(
                "allowed_match_spec_keywords must be a collection of names"
            )
        self._keywords = {
            _validate_keyword_name(k) for k in allowed_match_spec_keywords
        }
        if isinstance(phases, (str, Phase)):
            raise ValueError("phases must be a collection of names or Phase values")
        self._phase_specs: tuple[Phase, ...] = tuple(Phase.of(p) for p in phases)
        #: the phases' names, in order
        self.phases: tuple[str, ...] = tuple(p.name for p in self._phase_specs)
        if not self.phases:
            raise ValueError("a dispatcher needs at least one phase")
        if len(set(self.phases)) != len(self.phases):
            raise ValueError(f"phases must be distinct: {self.phases!r}")
        if not isinstance(max_in_flight, int) or max_in_flight < 1:
            raise ValueError(
                f"max_in_flight must be a positive int, not {max_in_flight!r}"
            )
        if order_by is not None and order_by not in self._keywords:
            raise ValueError(f"order_by={order_by!r} is not an allowed match keyword")
        if on_overload not in ("fail", "wait"):
            raise ValueError(
                f"on_overload must be 'fail' or 'wait', not {on_overload!r}"
            )
        if max_queue is not None and (not isinstance(max_queue, int) or max_queue < 0):
            raise ValueError(
                f"max_queue must be a non-negative int or None, not {max_queue!r}"
            )
        if (
            isinstance(max_depth, bool)
            or not isinstance(max_depth, int)
            or max_depth < 0
        ):
            raise ValueError(f"max_depth must be an int >= 0, not {max_depth!r}")
        self._max_depth = max_depth
        if reactor is None:
            from twisted.internet import reactor as default_reactor

            reactor = default_reactor
        self._reactor = reactor
        self._trace = trace
        self._max_queue = max_queue
        self._on_overload = on_overload
        self._drain_timeout = drain_timeout
        self._waiting: deque[
            tuple[Deferred[DispatchResult], Any, dict[str, Hashable], str | None]
        ]
        self._waiting = deque()
        self._rejected = 0
        self._aborting = False
        self._max_in_flight = max_in_flight
        self._order_by = order_by
        self._skip_after_failure = skip_after_failure
        self._max_event_size = max_event_size
        self._pools: dict[str, IHandlerPool] = {}
        self._pools_started: set[str] = set()
        self._pools["default"] = pool or AmpoulePool(
            size=pool_size or os.cpu_count() or 2,
            default_timeout=default_timeout,
            child_env=child_env,
            max_batch=max_batch,
            recycle_after=recycle_after,
            sandbox=sandbox or SandboxProfile(),
            reactor=reactor,
        )
        #: per pool, how its jobs are handed over (see L{_submitter})
        self._submit: dict[str, Callable[[Sequence[Job]], None]] = {
            "default": self._submitter(self._pools["default"])
        }
        self._take_follow_ups(self._pools["default"])
        self._registry = HandlerRegistry(self.phases, on_removed=self._unbind)
        self._checking: dict[int, Registration] = {}
        self._expiries: dict[int, Any] = {}
        self._checks_pending: set[Deferred[Any]] = set()
        self._running = False
        self._stopping: Deferred[None] | None = None
        self._drain_call: Any = None
        self._mailbox: deque[_Delivery] = deque()
        self._chains: dict[Hashable, deque[_Delivery]] = {}
        self._accepted = 0
        self._finished = 0
        self._in_flight = 0
        self._queued = 0
        self._drained: list[Deferred[None]] = []
        #: what L{_step} does next: move an event to its next phase, or send a
        #: sequential phase's next job
        self._steps: deque[tuple[Callable[[Any], None], Any]] = deque()
        self._stepping = False

    # --- configuration -----------------------------------------------------------

    @property
    def allowed_match_spec_keywords(self) -> frozenset[str]:
        """
        The keywords match specs and fired events may use.
        """
        return frozenset(self._keywords)

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
        return self._running

    def add_match_spec_keyword(self, name: str) -> None:
        """
        Allow one more match keyword.

        @raise ValueError: if C{name} is not an identifier or collides with an
            option name.
        """
        self._keywords.add(_validate_keyword_name(name))

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
        users = [
            r.handler_id
            for r in [*self._registry.registrations(), *self._checking.values()]
            if name in r.spec.shape
        ]
        if users:
            raise ValueError(
                f"cannot remove match keyword {name!r}: handlers {users} use it"
            )
        self._keywords.discard(name)

    def _check_keywords(self, keywords: Mapping[str, object], what: str) -> None:
        if self._keywords.issuperset(keywords):
            return
        unknown = sorted(set(keywords) - self._keywords)
        if unknown:
            raise ValueError(
                f"{what} uses keywords that are not allowed: {', '.join(unknown)} "
                f"(allowed: {', '.join(sorted(self._keywords)) or 'none'})"
            )

    def _check_fired(self, keywords: Mapping[str, object], what: str) -> None:
        """
        Check the keywords of an event (fired, or explained): allowed, each
        value hashable and a plain value, not a match operator.
        """
        self._check_keywords(keywords, what)
        for name, value in keywords.items():
            if type(value) in _PLAIN_VALUES:
                continue
            if isinstance(value, Operator):
                raise ValueError(
                    f"{what}: keyword {name!r} is {value!r}, a match operator; "
                    "an event carries plain values (operators belong in match "
                    "specs)"
                )
            try:
                hash(value)
            except TypeError:
                raise ValueError(
                    f"keyword {name!r} has an unhashable value {value!r}"
                ) from None

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
        if phase not in self.phases:
            raise ValueError(f"unknown phase {phase!r}; phases are {self.phases!r}")
        self._check_keywords(match_spec, "match spec")
        if max_calls is not None and (
            not isinstance(max_calls, int)
            or isinstance(max_calls, bool)
            or max_calls < 1
        ):
            raise ValueError(f"max_calls must be a positive int, not {max_calls!r}")
        if timeout is not None and not (
            isinstance(timeout, (int, float)) and timeout > 0
        ):
            raise ValueError(
                f"timeout must be a positive number of seconds, not {timeout!r}"
            )
        if not isinstance(retries, int) or isinstance(retries, bool) or retries < 0:
            raise ValueError(f"retries must be a non-negative int, not {retries!r}")
        if expires is not None and (
            isinstance(expires, bool)
            or not isinstance(expires, (int, float))
            or not expires > 0
        ):
            raise ValueError(
                f"expires must be a positive number of seconds, not {expires!r}"
            )
        if isinstance(priority, bool) or not isinstance(priority, int):
            raise ValueError(f"priority must be an int, not {priority!r}")
        try:
            hash(owner)
        except TypeError:
            raise ValueError(f"owner must be hashable, not {owner!r}") from None
        if pool not in self._pools:
            raise ValueError(f"unknown pool {pool!r}; pools are {sorted(self._pools)}")
        name = handler_name(handler)
        spec = MatchSpec.from_keywords(match_spec)
        target = self._pools[pool]
        routed = IRoutedPool.providedBy(target)
        if routed:
            cast(IRoutedPool, target).check_spec(phase, spec)
        registration = Registration(
            handler_id=self._registry.new_id(),
            handler=name,
            phase=phase,
            spec=spec,
            max_calls=max_calls,
            timeout=None if timeout is None else float(timeout),
            retries=retries,
            pool=pool,
            expires_at=None
            if expires is None
            else self._reactor.seconds() + float(expires),
            owner=owner,
            priority=priority,
        )
        if not isinstance(handler, str) and not routed:
            self._register(registration)
            _log.info(
                "handler {handler_id} {handler} added to phase {phase}",
                handler_id=registration.handler_id,
                handler=name,
                phase=phase,
            )
            return succeed(registration.handler_id)
        return self._check_then_register(registration)

    def _check_then_register(self, registration: Registration) -> Deferred[int]:
        self._ensure_pool(registration.pool)
        self._checking[registration.handler_id] = registration
        pool = self._pools[registration.pool]
        check: Deferred[Any]
        if IRoutedPool.providedBy(pool):
            check = cast(IRoutedPool, pool).bind(
                registration.handler_id,
                registration.handler,
                registration.phase,
                registration.spec,
            )
        else:
            check = pool.check_handler(registration.handler)
        self._checks_pending.add(check)

        def checked(result: object) -> int:
            self._checks_pending.discard(check)
            still_wanted = self._checking.pop(registration.handler_id, None)
            if isinstance(result, Failure):
                if isinstance(
                    result.value,
                    (HandlerImportError, BrokerUnavailableError, ValueError),
                ):
                    _log.warn("{error}", error=result.value)
                    raise result.value
                raise HandlerImportError(
                    f"could not check handler {registration.handler!r}: "
                    f"{result.getErrorMessage()}"
                )
            if still_wanted is None:
                self._unbind(registration)  # removed while it was being checked
            else:
                self._register(registration)
                _log.info(
                    "handler {handler_id} {handler} added to phase {phase}",
                    handler_id=registration.handler_id,
                    handler=registration.handler,
                    phase=registration.phase,
                )
            self._maybe_drained()
            return registration.handler_id

        return check.addBoth(checked)

    def _register(self, registration: Registration) -> None:
        self._registry.register(registration)
        self._schedule_expiry(registration)
        # Pools that can warm their children up (import handlers ahead of the
        # first event) are told what will run there.
        warm = getattr(self._pools[registration.pool], "warm", None)
        if callable(warm):
            warm(registration.handler)

    def _schedule_expiry(self, registration: Registration) -> None:
        # Timers run only while the dispatcher runs (a stopped one leaves no
        # delayed call behind); start() schedules them again.
        if registration.expires_at is None or not self._running:
            return
        left = registration.expires_at - self._reactor.seconds()
        if left <= 0:
            self._expire(registration.handler_id)
            return
        self._expiries[registration.handler_id] = self._reactor.callLater(
            left, self._expire, registration.handler_id
        )

    def _expire(self, handler_id: int) -> None:
        self._expiries.pop(handler_id, None)
        if handler_id in self._registry:
            registration = self._registry.remove(handler_id)
            _log.info(
                "handler {handler_id} {handler} expired",
                handler_id=handler_id,
                handler=registration.handler,
            )

    def remove_event_handlers(self, *, owner: Hashable) -> Deferred[int]:
        """
        Remove every handler registered with C{owner=owner} (also those still
        being checked), as L{remove_event_handler} removes one.

        @return: a Deferred firing with how many were removed.
        @raise ValueError: for C{owner=None} (handlers registered without an
            owner are removed one by one).
        """
        if owner is None:
            raise ValueError(
                "remove_event_handlers(owner=None) would remove every handler "
                "registered without an owner; remove those by id"
            )
        ids = [r.handler_id for r in self._registry.registrations() if r.owner == owner]
        ids += [i for i, r in self._checking.items() if r.owner == owner]
        for handler_id in ids:
            self.remove_event_handler(handler_id)
        return succeed(len(ids))

    def _unbind(self, registration: Registration) -> None:
        # Every removal lands here: by the user, by max_calls, by expiry, with
        # the pool, or while the registration was still being bound.
        expiry = self._expiries.pop(registration.handler_id, None)
        if expiry is not None and expiry.active():
            expiry.cancel()
        # Routed pools learn of every removal.
        pool = self._pools.get(registration.pool)
        if IRoutedPool.providedBy(pool):
            cast(IRoutedPool, pool).unbind(registration.handler_id)

    def remove_event_handler(self, handler_id: int) -> Deferred[None]:
        """
        Remove a handler.  Invocations already running finish; those planned for
        accepted events but not started yet end C{"skipped"}.

        @return: a Deferred firing with C{None}, or failing with C{KeyError} if
            C{handler_id} is unknown or already removed.
        """
        if self._checking.pop(handler_id, None) is not None:
            return succeed(None)
        try:
            registration = self._registry.remove(handler_id)
        except KeyError as e:
            return fail(e)
        _log.info(
            "handler {handler_id} {handler} removed",
            handler_id=handler_id,
            handler=registration.handler,
        )
        return succeed(None)

    # --- lifecycle -----------------------------------------------------------------

    def _ensure_pool(self, name: str) -> Deferred[None]:
        # Pools' start() is idempotent: it answers when the workers are ready.
        self._pools_started.add(name)
        return self._pools[name].start()

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
        if not isinstance(name, str) or not name or name in self._pools:
            raise ValueError(f"pool name {name!r} is empty or taken")
        self._pools[name] = pool
        self._submit[name] = self._submitter(pool)
        self._take_follow_ups(pool)
        if self._running:
            return self._ensure_pool(name)
        return succeed(None)

    def remove_pool(self, name: str) -> Deferred[None]:
        """
        Remove a pool and every handler registered to it (their planned
        invocations that have not started end C{"skipped"}), then stop it: its
        running invocations end as the pool ends them.

        @raise ValueError: for the C{"default"} pool.
        @raise KeyError: for an unknown pool.
        """
        if name == "default":
            raise ValueError("the default pool cannot be removed")
        pool = self._pools[name]
        for registration in self._registry.registrations():
            if registration.pool == name:
                self._registry.remove(registration.handler_id)
        del self._pools[name]
        del self._submit[name]
        for handler_id, registration in list(self._checking.items()):
            if registration.pool == name:
                del self._checking[handler_id]
        if name in self._pools_started:
            self._pools_started.discard(name)
            return pool.stop()
        return succeed(None)

    def pools(self) -> dict[str, IHandlerPool]:
        """
        The pools by name.
        """
        return dict(self._pools)

    def start(self) -> Deferred[None]:
        """
        Start accepting events and start the children.  Events may be fired at
        once; they wait for the children to boot.

        @return: a Deferred firing when the children are ready.
        """
        if self._stopping is not None:
            return fail(ActorDispatchError("stop() has not finished; start() after it"))
        self._running = True
        _log.info("dispatcher starting with phases {phases}", phases=self.phases)
        for registration in self._registry.registrations():
            if registration.handler_id not in self._expiries:
                self._schedule_expiry(registration)
        started = [self._ensure_pool(name) for name in list(self._pools)]
        if len(started) == 1:
            return started[0]
        return DeferredList(
            started, fireOnOneErrback=True, consumeErrors=True
        ).addCallback(lambda _: None)

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
        if self._stopping is not None:
            if drain_timeout is not None and not self._stopping.called:
                self._shorten_drain(drain_timeout)
            stopping: Deferred[None] = Deferred()
            self._drained.append(stopping)
            return stopping
        self._running = False
        self._stopping = Deferred()
        done = self._stopping
        expiries, self._expiries = self._expiries, {}
        for expiry in expiries.values():
            if expiry.active():
                expiry.cancel()
        while self._waiting:
            waiter, _, _, _ = self._waiting.popleft()
            waiter.errback(
                NotRunningError(
                    "the dispatcher stopped while this event waited for room"
                )
            )
        timeout = self._drain_timeout if drain_timeout is None else drain_timeout
        if timeout is not None:
            self._shorten_drain(timeout)

        def stop_pool(_: object) -> Deferred[None]:
            names, self._pools_started = self._pools_started, set()
            stopping = [
                self._pools[n].stop().addErrback(self._pool_stop_failed, n)
                for n in names
                if n in self._pools
            ]
            return DeferredList(stopping).addCallback(lambda _: None)

        def stopped(result: object) -> object:
            drain_call, self._drain_call = self._drain_call, None
            if drain_call is not None and drain_call.active():
                drain_call.cancel()
            self._aborting = False
            self._stopping = None
            waiting, self._drained = self._drained, []
            for d in waiting:
                d.callback(None)
            _log.info("dispatcher stopped")
            return result

        done.addCallback(stop_pool).addBoth(stopped)
        self._maybe_drained()
        return done

    def _shorten_drain(self, timeout: float) -> None:
        # End the drain within timeout seconds, unless it ends sooner already.
        current = self._drain_call
        if self._aborting or (
            current is not None
            and current.active()
            and current.getTime() <= self._reactor.seconds() + timeout
        ):
            return
        if current is not None and current.active():
            current.cancel()
        self._drain_call = self._reactor.callLater(timeout, self._abort_drain, timeout)

    def _pool_stop_failed(self, reason: Failure, name: str) -> None:
        _log.failure("pool {pool} failed to stop", reason, pool=name)

    def _abort_drain(self, timeout: float) -> None:
        if timeout:
            why = f"drain timeout of {timeout:g}s"
            _log.warn(
                "stop(): accepted events still running after {timeout}s: killing them",
                timeout=timeout,
            )
        else:
            why = "stopped at once, with no drain"
            _log.warn("stop(drain_timeout=0): killing the accepted events' handlers")
        self._aborting = True
        for pool in self._pools.values():
            pool.abort(f"the dispatcher stopped ({why})")
        while self._mailbox:
            delivery = self._mailbox.popleft()
            self._queued -= 1
            self._in_flight += 1
            self._run_phase(delivery)
        self._maybe_drained()

    def _maybe_drained(self) -> None:
        if (
            self._stopping is not None
            and not self._stopping.called
            and self._in_flight == 0
            and self._queued == 0
            and not self._checks_pending
        ):
            self._stopping.callback(None)

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
        self._check_fired(keywords, "handlers()")
        pids: dict[str, Sequence[int]] = {}
        for name, each in self._pools.items():
            child_pids = getattr(each, "child_pids", None)
            pids[name] = child_pids() if callable(child_pids) else ()
        chosen = []
        for registration in self._registry.registrations():
            constrained = dict(registration.spec.constraints)
            if (
                (phase is not None and registration.phase != phase)
                or (handler is not None and registration.handler != handler)
                or (pool is not None and registration.pool != pool)
                or (owner is not None and registration.owner != owner)
                or any(
                    name not in constrained
                    or MatchSpec(((name, constrained[name]),)).refusal({name: value})
                    for name, value in keywords.items()
                )
            ):
                continue
            chosen.append(registration.info(pids.get(registration.pool, ())))
        return chosen

    def explain(self, **keywords: Hashable) -> Explanation:
        """
        Which handlers an event fired now with C{keywords} would reach in each
        phase, and, for each other handler, why not (the first constraint of
        its spec the event fails, or its C{max_calls} all promised).  Nothing
        is fired or reserved.

        @raise ValueError: for a keyword that is not allowed.
        """
        self._check_fired(keywords, "explain()")
        return self._registry.explain(keywords)

    def stats(self) -> DispatcherStats:
        """
        The dispatcher's counters now.
        """
        return DispatcherStats(
            accepted=self._accepted,
            finished=self._finished,
            in_flight=self._in_flight,
            queued=self._queued,
            handlers=len(self._registry),
            waiting=len(self._waiting),
            rejected=self._rejected,
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
        plain = self._keywords.issuperset(keywords)
        if plain:
            for value in keywords.values():
                if type(value) not in _PLAIN_VALUES:
                    plain = False
                    break
        if not plain:
            self._check_fired(keywords, "fire_event")
        if on_error is not None:
            check_on_error(on_error, "fire_event(on_error=...)")
        if not self._running:
            return fail(
                NotRunningError(
                    "the dispatcher is not running (call start(); it is stopped "
                    "or stopping): the event was not accepted"
                )
            )
        try:
            data = encode_event(event, self._max_event_size)
        except ActorDispatchError as e:
            return fail(e)
        if self._max_queue is not None and (
            self._waiting
            or (self._queued >= self._max_queue and not self._starts_at_once(keywords))
        ):
            if self._on_overload == "fail":
                self._rejected += 1
                return fail(
                    OverloadedError(
                        f"{self._queued} events are queued (max_queue="
                        f"{self._max_queue}): the event was not accepted"
                    )
                )
            waiter: Deferred[DispatchResult] = Deferred()
            self._waiting.append((waiter, data, keywords, on_error))
            return waiter
        return self._accept(data, keywords, on_error)

    @staticmethod
    def _submitter(pool: IHandlerPool) -> Callable[[Sequence[Job]], None]:
        """
        How a phase's jobs reach C{pool}: all together, settled by the pool
        itself, when it is an L{IJobPool} (the local pool); else one
        C{invoke} each, settled when its Deferred fires.
        """
        if IJobPool.providedBy(pool):
            return cast(IJobPool, pool).submit
        return _submit_each(pool)

    def _take_follow_ups(self, pool: IHandlerPool) -> None:
        # Pools whose children can fire follow-up events hand them here.
        set_follow_ups = getattr(pool, "set_follow_ups", None)
        if callable(set_follow_ups):
            set_follow_ups(self._fire_follow_up if self._max_depth else None)

    def _fire_follow_up(
        self,
        depth: int,
        event: bytes,
        keywords: dict[str, Any],
        on_error: str | None,
    ) -> tuple[int, Deferred[DispatchResult]]:
        """
        Accept a follow-up event a handler fired from its child, C{depth}
        deep, and start it at once: it bypasses the queue, C{max_in_flight}
        and C{order_by}, because the event that fired it (which holds its
        place in them) may be waiting for it.

        @return: the event's number and the Deferred of its result.
        @raise FollowUpError: when it is refused, saying why.
        """
        if depth > self._max_depth:
            raise FollowUpDepthError(
                f"a follow-up event at depth {depth} is past max_depth="
                f"{self._max_depth}: handlers that fire events reaching handlers "
                "that fire events are cut there (a loop?)"
            )
        if self._aborting or not (self._running or self._stopping is not None):
            raise FollowUpError("the dispatcher is stopping: no follow-up events")
        try:
            self._check_fired(keywords, "follow-up event")
            check_on_error(on_error, "on_error")
            # Plain values only: type tags a child sent are not rebuilt in
            # other children.
            data = encode_event(decode_result(event), self._max_event_size)
        except (ValueError, ActorDispatchError) as e:
            raise FollowUpError(str(e)) from None
        delivery = self._delivery(data, keywords, on_error, depth)
        self._in_flight += 1
        self._run_phase(delivery)
        return delivery.number, delivery.done

    def _starts_at_once(self, keywords: Mapping[str, Hashable]) -> bool:
        """
        Whether an event fired now would start at once, never waiting in the
        queue.
        """
        if self._mailbox or self._in_flight >= self._max_in_flight:
            return False
        return (
            self._order_by is None or keywords.get(self._order_by) not in self._chains
        )

    def _accept(
        self,
        data: bytes,
        keywords: Mapping[str, Hashable],
        on_error: str | None = None,
    ) -> Deferred[DispatchResult]:
        delivery = self._delivery(data, keywords, on_error)
        if (
            not self._mailbox
            and self._in_flight < self._max_in_flight
            and (self._order_by is None or delivery.order_key not in self._chains)
        ):
            # Its turn is now: no queueing.
            if self._order_by is not None:
                self._chains[delivery.order_key] = deque()
            self._in_flight += 1
            self._run_phase(delivery)
            return delivery.done
        self._queued += 1
        if self._order_by is None:
            self._mailbox.append(delivery)
        else:
            chain = self._chains.get(delivery.order_key)
            if chain is None:
                self._chains[delivery.order_key] = deque()
                self._mailbox.append(delivery)
            else:
                chain.append(delivery)
        result = delivery.done
        self._pump()
        return result

    def _delivery(
        self,
        data: bytes,
        keywords: Mapping[str, Hashable],
        on_error: str | None,
        depth: int = 0,
    ) -> _Delivery:
        """
        Accept an event: plan it (which handlers of each phase it runs) and
        count it.
        """
        plan = self._registry.plan(keywords, self._reactor.seconds)
        self._accepted += 1
        delivery = _Delivery(
            data,
            keywords,
            keywords.get(self._order_by) if self._order_by and not depth else None,
            plan,
            Deferred(),
            number=self._accepted,
            on_error=on_error,
            depth=depth,
        )
        if self._trace:
            _log.debug(
                "event {event} (depth {depth}) accepted: {keywords}, {handlers} "
                "handler(s) matched",
                event=delivery.number,
                depth=depth,
                keywords=dict(keywords),
                handlers=sum(len(p) for p in delivery.plan),
            )
        return delivery

    def _pump(self) -> None:
        while self._mailbox and self._in_flight < self._max_in_flight:
            delivery = self._mailbox.popleft()
            self._queued -= 1
            self._in_flight += 1
            self._run_phase(delivery)
        while self._waiting and (
            self._max_queue is None
            or self._queued < self._max_queue
            or self._starts_at_once(self._waiting[0][2])
        ):
            waiter, data, keywords, on_error = self._waiting.popleft()
            self._accept(data, keywords, on_error).chainDeferred(waiter)

    def _run_phase(self, delivery: _Delivery) -> None:
        """
        Start C{delivery}'s next phase that has handlers, or finish it: now,
        or, when called while another event is being moved on (an outcome
        that ends a phase can finish an event, which starts the next queued
        one, whose handlers may all settle at once...), as soon as that is
        done.  Moving events on is a loop, never a recursion, however many
        events settle without a child.
        """
        self._steps.append((self._next_phase, delivery))
        if not self._stepping:
            self._step()

    def _step(self) -> None:
        """
        Take the steps scheduled by L{_run_phase} and L{_record}, in order,
        until none is left.
        """
        self._stepping = True
        steps = self._steps
        try:
            while steps:
                step, subject = steps.popleft()
                try:
                    step(subject)
                except Exception:
                    delivery = (
                        subject.delivery if isinstance(subject, _PhaseRun) else subject
                    )
                    self._bug(Failure(), delivery)
        finally:
            self._stepping = False

    def _next_phase(self, delivery: _Delivery) -> None:
        """
        Start the current phase's handlers; move on when all settled.
        """
        plan = delivery.plan
        index = delivery.phase_index
        while index < len(plan):
            planned = plan[index]
            index += 1
            if planned:
                delivery.phase_index = index
                self._start_phase(delivery, self._phase_specs[index - 1], planned)
                return
        delivery.phase_index = index
        self._finish(delivery)

    def _skip_reason(
        self, delivery: _Delivery, registration: Registration
    ) -> tuple[str | None, str] | None:
        """
        Why an invocation planned for C{delivery} must not run now, if so:
        C{(error_type, message)}.
        """
        if registration.removed:
            return None, "the handler was removed before its phase ran"
        if self._aborting:
            return None, "the dispatcher stopped before its phase ran"
        return delivery.halted

    def _start_phase(
        self, delivery: _Delivery, phase: Phase, planned: list[Registration]
    ) -> None:
        run = _PhaseRun(self, delivery, phase, [None] * len(planned), len(planned))
        if self._trace:
            _log.debug(
                "event {event} phase {phase}: starting {count} handler(s)",
                event=delivery.number,
                phase=phase.name,
                count=len(planned),
            )
        name = phase.name
        event = delivery.event
        keywords = delivery.keywords
        depth = delivery.depth
        # Whether any of them may have to be skipped: rarely.
        checking = self._aborting or delivery.halted is not None
        jobs = []
        for slot, registration in enumerate(planned):
            job = _Job(
                Invocation(
                    registration.handler_id,
                    registration.handler,
                    name,
                    event,
                    registration.timeout,
                    keywords,
                    depth,
                ),
                run,
                slot,
                registration,
            )
            if checking or registration.removed:
                skip = self._skip_reason(delivery, registration)
                if skip is not None:
                    self._skip(job, skip)
                    continue
            jobs.append(job)
        if phase.sequential and len(jobs) > 1:
            run.later = deque(jobs[1:])
            del jobs[1:]
        if jobs:
            self._send(jobs)

    def _skip(self, job: _Job, reason: tuple[str | None, str]) -> None:
        registration = job.registration
        if not registration.removed:
            self._registry.release(registration)
        error_type, message = reason
        self._record(
            job.run,
            job.slot,
            job.invocation.outcome(
                "skipped", error_type=error_type, error_message=message
            ),
            advance=False,
        )

    def _send(self, jobs: list[_Job]) -> None:
        """
        Hand jobs to their pools: all of a phase's that go to one pool
        together, so that the pool can batch them.
        """
        pool = jobs[0].registration.pool
        if len(jobs) == 1 or all(job.registration.pool == pool for job in jobs):
            self._submit[pool](jobs)
            return
        by_pool: dict[str, list[_Job]] = {}
        for job in jobs:
            by_pool.setdefault(job.registration.pool, []).append(job)
        for name, chosen in by_pool.items():
            self._submit[name](chosen)

    def _advance(self, run: _PhaseRun) -> None:
        """
        In a sequential phase, send the next job (skipping those that must not
        run now).
        """
        later = run.later
        while later:
            job = later.popleft()
            skip = self._skip_reason(run.delivery, job.registration)
            if skip is None:
                self._send([job])
                return
            self._skip(job, skip)

    def _judge(self, run: _PhaseRun, result: HandlerOutcome) -> HandlerOutcome:
        """
        Apply the phase's veto and error policies to a final outcome: a veto
        where none is allowed becomes an error; a veto, or a failure under
        C{on_error="abort"}, halts the event.
        """
        phase = run.phase
        delivery = run.delivery
        if result.veto is not None and not phase.veto:
            result = evolve(
                result,
                status="error",
                veto=None,
                error_type="actordispatch.VetoNotAllowed",
                error_message=(
                    f"the handler returned Veto({result.veto!r}) in phase "
                    f"{phase.name!r}, which cannot veto (declare it "
                    f"Phase({phase.name!r}, veto=True))"
                ),
            )
        if delivery.halted is not None:
            return result
        if result.veto is not None:
            delivery.halted = (
                "actordispatch.Vetoed",
                f"vetoed by handler {result.handler_id} ({result.handler}) in "
                f"phase {phase.name!r}: {result.veto}",
            )
        elif result.status in _FAILED:
            policy = delivery.on_error or phase.on_error
            if policy == "abort" or (policy is None and self._skip_after_failure):
                delivery.halted = (
                    "actordispatch.EarlierFailure",
                    f"handler {result.handler_id} ({result.handler}) ended "
                    f"{result.status!r} in phase {phase.name!r} "
                    f"({result.error_type}) under on_error='abort'",
                )
        return result

    def _settled(self, job: _Job, result: HandlerOutcome) -> None:
        """
        A pool's final outcome for one job: retry it if it may be, judge it
        (veto, error policy), count it, and record it.  (Once per invocation:
        this is the hot path.)
        """
        try:
            registration = job.registration
            if result.status != "ok" or result.veto is not None:
                if (
                    result.status in _RETRIED
                    and job.attempts < registration.retries
                    and not self._aborting
                    and registration.pool in self._pools
                ):
                    job.attempts += 1
                    _log.info(
                        "handler {handler_id} {handler}: {status}, retry "
                        "{attempt} of {retries}",
                        handler_id=result.handler_id,
                        handler=result.handler,
                        status=result.status,
                        attempt=job.attempts,
                        retries=registration.retries,
                    )
                    self._submit[registration.pool]((job,))
                    return
                result = self._judge(job.run, result)
            self._registry.settle(registration, result)
            self._record(job.run, job.slot, result, advance=True)
        except Exception:
            self._bug(Failure(), job.run.delivery)

    def _record(
        self, run: _PhaseRun, slot: int, result: HandlerOutcome, *, advance: bool
    ) -> None:
        """
        Record one final outcome in its slot; when it is the phase's last, move
        the event on to its next phase (in a sequential phase, C{advance}
        sends the next job instead).
        """
        if result.status != "ok":
            _log.info(
                "handler {handler_id} {handler} in phase {phase}: {status} "
                "{error_type}: {error_message}",
                handler_id=result.handler_id,
                handler=result.handler,
                phase=result.phase,
                status=result.status,
                error_type=result.error_type,
                error_message=result.error_message,
            )
        run.slots[slot] = result
        run.remaining -= 1
        if self._trace:
            _log.debug(
                "event {event} handler {handler_id} {handler} in phase {phase}: "
                "{status} in {duration:.6f}s (pid {pid})",
                event=run.delivery.number,
                handler_id=result.handler_id,
                handler=result.handler,
                phase=result.phase,
                status=result.status,
                duration=result.duration,
                pid=result.pid,
            )
        if advance and run.later:
            # Sequential: the next one, now this one ended (a step, as it may
            # settle at once too).
            self._steps.append((self._advance, run))
            if not self._stepping:
                self._step()
        elif run.remaining == 0:
            run.delivery.outcomes.extend(run.slots)  # type: ignore[arg-type]
            if self._trace:
                _log.debug(
                    "event {event} phase {phase} done: {ok}/{total} ok",
                    event=run.delivery.number,
                    phase=result.phase,
                    ok=sum(1 for o in run.slots if o is not None and o.ok),
                    total=len(run.slots),
                )
            self._run_phase(run.delivery)

    def _bug(self, reason: Failure, delivery: _Delivery) -> None:
        _log.failure("dispatcher bug while running an event", reason)
        if not delivery.done.called:
            self._in_flight -= 1
            self._finished += 1
            delivery.done.errback(reason)

    def _finish(self, delivery: _Delivery) -> None:
        self._in_flight -= 1
        self._finished += 1
        if self._order_by is not None and not delivery.depth:
            chain = self._chains[delivery.order_key]
            if chain:
                self._mailbox.append(chain.popleft())
            else:
                del self._chains[delivery.order_key]
        delivery.done.callback(DispatchResult(delivery.outcomes))
        self._pump()
        if self._stopping is not None:
            self._maybe_drained()
