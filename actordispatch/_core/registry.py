"""
Handler registrations: ids, match specs per phase, and C{max_calls} bookkeeping.

Ids come from one counter and are never reused.  When an event is accepted the
registry I{plans} it: for every phase, the handlers that match it right now.  Each
planned invocation reserves one of a handler's C{max_calls}, so the limit is exact
however many events are in flight: once all calls are reserved the handler leaves
the index (no later event can match it) and, once they have all settled, the
registry forgets it.
"""

from __future__ import annotations

import itertools
import sys
from collections import deque
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any

from attrs import define, field, frozen

from actordispatch._core.match import MatchSpec, RoutingIndex
from actordispatch._core.names import HANDLER_NAME
from actordispatch._core.result import HandlerOutcome


@define(eq=False)
class Registration:
    """
    One registered handler.

    @ivar reserved: invocations promised to accepted events so far.
    @ivar settled: of those, how many have a final outcome.
    @ivar removed: set once the handler was removed (by the user or because its
        C{max_calls} were used up); its planned invocations that have not started
        are then skipped.
    """

    handler_id: int
    handler: str
    phase: str
    spec: MatchSpec
    max_calls: int | None = None
    timeout: float | None = None
    retries: int = 0
    pool: str = "default"
    #: the reactor time at which it removes itself (C{expires=}), if any
    expires_at: float | None = None
    #: a token naming who registered it, for C{remove_event_handlers(owner=...)}
    owner: Hashable | None = None
    #: higher runs (or is sent) first within its phase; then registration order
    priority: int = 0
    reserved: int = 0
    settled: int = 0
    removed: bool = False
    failures: int = 0
    #: run times of its last 1,024 outcomes; made on the first (most of
    #: 100,000 registered handlers may never run, and an empty deque is ~600 B)
    durations: deque[float] | None = None

    @property
    def exhausted(self) -> bool:
        """
        Whether every allowed call is already promised to some event.
        """
        return self.max_calls is not None and self.reserved >= self.max_calls

    def info(self, child_pids: Sequence[int] = ()) -> HandlerInfo:
        """
        A snapshot of this registration and how it has fared.
        """
        ordered = sorted(self.durations or ())

        def percentile(p: float) -> float | None:
            if not ordered:
                return None
            return ordered[min(len(ordered) - 1, int(p * len(ordered)))]

        return HandlerInfo(
            handler_id=self.handler_id,
            handler=self.handler,
            phase=self.phase,
            pool=self.pool,
            match_spec=dict(self.spec.constraints),
            max_calls=self.max_calls,
            timeout=self.timeout,
            retries=self.retries,
            expires_at=self.expires_at,
            owner=self.owner,
            priority=self.priority,
            calls=self.settled,
            failures=self.failures,
            p50=percentile(0.50),
            p90=percentile(0.90),
            p99=percentile(0.99),
            child_pids=tuple(child_pids),
        )


@frozen
class HandlerInfo:
    """
    What C{EventDispatcher.handlers()} says about one handler.

    @ivar calls: invocations with a final outcome so far.
    @ivar failures: of those, how many were not C{"ok"}.
    @ivar p50, p90, p99: percentiles of its run time in seconds over its last
        1,024 outcomes (C{None} before the first).
    @ivar child_pids: the pids of the children of its pool, where the pool has
        children.
    @ivar expires_at: the reactor time at which it removes itself, if any.
    @ivar owner: the owner token it was registered with, if any.
    @ivar priority: its priority within its phase (higher first).
    """

    handler_id: int
    handler: str
    phase: str
    pool: str
    match_spec: dict[str, Any]
    max_calls: int | None
    timeout: float | None
    retries: int
    calls: int
    failures: int
    p50: float | None
    p90: float | None
    p99: float | None
    child_pids: tuple[int, ...] = ()
    expires_at: float | None = None
    owner: Hashable | None = None
    priority: int = 0


def run_order(registration: Registration) -> tuple[int, int]:
    """
    The sort key of a phase's handlers: highest priority first, then
    registration order.
    """
    return (-registration.priority, registration.handler_id)


@define
class HandlerRegistry:
    """
    The live registrations, indexed per phase.
    """

    phases: tuple[str, ...]
    #: called with each registration as it is removed, however it is removed
    on_removed: Callable[[Registration], None] | None = None
    _ids: itertools.count[int] = field(factory=lambda: itertools.count(1))
    _by_id: dict[int, Registration] = field(factory=dict)
    _indexes: dict[str, RoutingIndex] = field(init=False)
    #: the same, as (phase, index) pairs in phase order
    _phase_indexes: list[tuple[str, RoutingIndex]] = field(init=False)
    #: how many live registrations have an C{expires_at}
    _expiring: int = field(default=0, init=False)
    #: per phase, how many live registrations have a priority other than 0
    _prioritized: dict[str, int] = field(factory=dict, init=False)

    def __attrs_post_init__(self) -> None:
        self._indexes = {phase: RoutingIndex() for phase in self.phases}
        self._phase_indexes = list(self._indexes.items())

    def __len__(self) -> int:
        return len(self._by_id)

    def __contains__(self, handler_id: object) -> bool:
        return handler_id in self._by_id

    def new_id(self) -> int:
        """
        A fresh handler id, never handed out before.
        """
        return next(self._ids)

    def register(self, registration: Registration) -> None:
        """
        Make C{registration} live: later events can match it.
        """
        self._by_id[registration.handler_id] = registration
        if registration.expires_at is not None:
            self._expiring += 1
        if registration.priority:
            phase = registration.phase
            self._prioritized[phase] = self._prioritized.get(phase, 0) + 1
        self._indexes[registration.phase].add(
            registration.handler_id, registration.spec
        )

    def remove(self, handler_id: int) -> Registration:
        """
        Remove a live handler.

        @raise KeyError: if C{handler_id} is unknown or already removed.
        """
        try:
            registration = self._by_id.pop(handler_id)
        except KeyError:
            raise KeyError(f"no handler with id {handler_id!r}") from None
        registration.removed = True
        if registration.expires_at is not None:
            self._expiring -= 1
        if registration.priority:
            self._prioritized[registration.phase] -= 1
        self._indexes[registration.phase].discard(handler_id, registration.spec)
        if self.on_removed is not None:
            self.on_removed(registration)
        return registration

    def registrations(self) -> Sequence[Registration]:
        """
        The live registrations, in id order.
        """
        return sorted(self._by_id.values(), key=lambda r: r.handler_id)

    def explain(self, keywords: Mapping[str, Hashable]) -> Explanation:
        """
        Who an event fired with C{keywords} would reach, phase by phase, and
        why the others would not (nothing is reserved).
        """
        verdicts = []
        for phase in self.phases:
            for registration in sorted(self.registrations(), key=run_order):
                if registration.phase != phase:
                    continue
                reason = registration.spec.refusal(keywords)
                if reason is None and registration.exhausted:
                    reason = (
                        f"its max_calls ({registration.max_calls}) are all "
                        "promised to accepted events"
                    )
                verdicts.append(
                    Verdict(
                        registration.handler_id, registration.handler, phase, reason
                    )
                )
        return Explanation(dict(keywords), tuple(verdicts))

    def uses_keyword(self, keyword: str) -> bool:
        """
        Whether any live handler's spec constrains C{keyword}.
        """
        return any(keyword in r.spec.shape for r in self._by_id.values())

    def plan(
        self,
        keywords: Mapping[str, Hashable],
        now: float | Callable[[], float] | None = None,
    ) -> list[list[Registration]]:
        """
        The handlers an event fired with C{keywords} runs, per phase in order,
        reserving one call of each.  When C{now} is given (the time, or a clock
        to read it from, read only if a handler expires), a handler whose
        C{expires_at} is not after it is removed instead (its timer may be
        late: the reactor was busy), so that it never runs past its time.

        @raise TypeError: if a keyword value is not hashable.
        """
        planned = []
        expired: list[int] = []
        by_id = self._by_id
        if now is not None and self._expiring and callable(now):
            now = now()
        for phase, index in self._phase_indexes:
            chosen = [by_id[handler_id] for handler_id in index.match(keywords)]
            if not chosen:
                planned.append(chosen)
                continue
            if now is not None and self._expiring:
                late = [
                    r
                    for r in chosen
                    if r.expires_at is not None and r.expires_at <= now  # type: ignore[operator]
                ]
                if late:
                    expired += [r.handler_id for r in late]
                    chosen = [r for r in chosen if r not in late]
            if len(chosen) > 1 and self._prioritized.get(phase):
                chosen.sort(key=run_order)
            for registration in chosen:
                registration.reserved += 1
                limit = registration.max_calls
                if limit is not None and registration.reserved >= limit:
                    index.discard(registration.handler_id, registration.spec)
            planned.append(chosen)
        for handler_id in expired:
            self.remove(handler_id)
        return planned

    def settle(self, registration: Registration, outcome: HandlerOutcome) -> None:
        """
        Record that one reserved invocation of C{registration} has its final
        C{outcome} (for its counts and latency); forget the handler once all of
        its C{max_calls} have settled.
        """
        durations = registration.durations
        if durations is None:
            durations = registration.durations = deque(maxlen=1024)
        durations.append(outcome.duration)
        if outcome.status != "ok":
            registration.failures += 1
        registration.settled += 1
        if (
            registration.max_calls is not None
            and registration.settled >= registration.max_calls
            and not registration.removed
        ):
            self.remove(registration.handler_id)

    def release(self, registration: Registration) -> None:
        """
        Give back a reserved invocation that will not run (it was skipped), so
        that the handler still runs its full C{max_calls}.
        """
        was_exhausted = registration.exhausted
        registration.reserved -= 1
        if was_exhausted and not registration.removed:
            self._indexes[registration.phase].add(
                registration.handler_id, registration.spec
            )


@frozen
class Verdict:
    """
    Whether one handler would run for an event, and why not.

    @ivar reason: C{None} when it would run; else the first reason it would
        not (an unmet constraint, or its C{max_calls} all promised).
    """

    handler_id: int
    handler: str
    phase: str
    reason: str | None

    @property
    def runs(self) -> bool:
        """
        Whether the handler would run.
        """
        return self.reason is None


@frozen
class Explanation:
    """
    What C{EventDispatcher.explain()} says: per phase, in order, every live
    handler's L{Verdict} for an event fired with C{keywords}.
    """

    keywords: dict[str, Any]
    verdicts: tuple[Verdict, ...]

    def runs(self, phase: str | None = None) -> list[int]:
        """
        The ids of the handlers that would run (in one phase, or in all).
        """
        return [
            v.handler_id
            for v in self.verdicts
            if v.runs and (phase is None or v.phase == phase)
        ]

    def __str__(self) -> str:
        lines = [f"an event fired with {self.keywords!r}:"]
        for verdict in self.verdicts:
            what = "runs" if verdict.runs else f"does not run: {verdict.reason}"
            lines.append(
                f"  {verdict.phase}: handler {verdict.handler_id} "
                f"{verdict.handler} {what}"
            )
        if not self.verdicts:
            lines.append("  no handler is registered")
        return "\n".join(lines)


def handler_name(handler: object) -> str:
    """
    The C{"pkg.mod:attr"} name of a handler given as a module-level callable or
    as a name.  A name is checked for its form only: the parent never imports it.

    @raise ValueError: if C{handler} is a name of the wrong form, or a callable a
        child process could not import (a lambda, a closure, a method of an
        instance, anything defined in C{__main__}).
    """
    if isinstance(handler, str):
        if not HANDLER_NAME.match(handler):
            raise ValueError(
                f"handler name {handler!r} must have the form "
                "'package.module:attribute'"
            )
        return handler
    if not callable(handler):
        raise ValueError(f"handler must be a callable or a name, not {handler!r}")
    module = getattr(handler, "__module__", None)
    qualname = getattr(handler, "__qualname__", None)
    cannot = f"handler {handler!r} cannot run in a child process: "
    if not isinstance(module, str) or not isinstance(qualname, str):
        raise ValueError(cannot + "it has no module-level name to import it by")
    if module == "__main__":
        raise ValueError(
            cannot + "it is defined in __main__, which a child cannot import; "
            "move it to a module"
        )
    if "<lambda>" in qualname or "<locals>" in qualname:
        raise ValueError(
            cannot + "lambdas and closures cannot cross a process boundary; "
            "define it at module level"
        )
    target: object = sys.modules.get(module)
    for part in qualname.split("."):
        target = getattr(target, part, None)
    if target is not handler and getattr(handler, "__self__", None) is not None:
        raise ValueError(cannot + "a bound method of an instance cannot be imported")
    if target is not handler:
        raise ValueError(
            cannot + f"{module}:{qualname} does not refer to it at module level"
        )
    return f"{module}:{qualname}"
