"""
A dispatcher's handlers: L{HandlerBook}.

It checks and registers handlers (a name is checked by a child of its pool,
or bound by a routed pool, before it goes live), removes them (by id, by
owner, with their pool, by C{max_calls} or by expiry) and answers what is
registered.  The L{HandlerRegistry} it keeps plans each accepted event.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from typing import Any, cast

from attrs import define, field
from twisted.internet.defer import Deferred, fail, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from actordispatch._core.errors import BrokerUnavailableError, HandlerImportError
from actordispatch._core.match import MatchSpec
from actordispatch._core.options import (
    check_expires,
    check_max_calls,
    check_owner,
    check_priority,
    check_retries,
    check_timeout,
)
from actordispatch._core.registry import (
    Explanation,
    HandlerInfo,
    HandlerRegistry,
    Registration,
    handler_name,
)
from actordispatch._dispatch.keywords import KeywordSet
from actordispatch._dispatch.pools import PoolSet
from actordispatch._dispatch.stopping import Lifecycle
from actordispatch.interfaces import IRoutedPool

_log = Logger()


@define(eq=False)
class HandlerBook:
    """
    The registered handlers of one dispatcher, those being checked, and
    their expiry timers.

    @ivar registry: the live registrations, which plan events.
    """

    _phases: tuple[str, ...]
    _keywords: KeywordSet
    _pools: PoolSet
    _state: Lifecycle
    _reactor: Any
    registry: HandlerRegistry = field(init=False)
    #: registrations whose handler is being checked (or bound), by id
    _checking: dict[int, Registration] = field(factory=dict)
    _expiries: dict[int, Any] = field(factory=dict)
    _checks_pending: set[Deferred[Any]] = field(factory=set)

    def __attrs_post_init__(self) -> None:
        self.registry = HandlerRegistry(self._phases, on_removed=self._unbind)
        self._state.drains_when(self.idle)

    def __len__(self) -> int:
        return len(self.registry)

    def idle(self) -> bool:
        """
        Whether no handler is being checked (a drain waits for the checks).
        """
        return not self._checks_pending

    # --- adding ----------------------------------------------------------------

    def add(
        self,
        handler: Callable[[Any], Any] | str,
        phase: str,
        *,
        max_calls: int | None,
        timeout: float | None,
        retries: int,
        pool: str,
        expires: float | None,
        owner: Hashable | None,
        priority: int,
        match_spec: dict[str, Hashable],
    ) -> Deferred[int]:
        """
        Check and register a handler: see C{EventDispatcher.add_event_handler}.
        """
        if phase not in self._phases:
            raise ValueError(f"unknown phase {phase!r}; phases are {self._phases!r}")
        self._keywords.check(match_spec, "match spec")
        check_max_calls(max_calls)
        check_timeout(timeout)
        check_retries(retries)
        check_expires(expires)
        check_priority(priority)
        check_owner(owner)
        if pool not in self._pools:
            raise ValueError(
                f"unknown pool {pool!r}; pools are {sorted(self._pools.by_name())}"
            )
        name = handler_name(handler)
        spec = MatchSpec.from_keywords(match_spec)
        target = self._pools[pool]
        routed = IRoutedPool.providedBy(target)
        if routed:
            cast(IRoutedPool, target).check_spec(phase, spec)
        registration = Registration(
            handler_id=self.registry.new_id(),
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
        self._pools.ensure(registration.pool)
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
            self._state.check_drained()
            return registration.handler_id

        return check.addBoth(checked)

    def _register(self, registration: Registration) -> None:
        self.registry.register(registration)
        self._schedule_expiry(registration)
        # Pools that can warm their children up (import handlers ahead of the
        # first event) are told what will run there.
        self._pools.warm(registration.pool, registration.handler)

    # --- expiry ----------------------------------------------------------------

    def _schedule_expiry(self, registration: Registration) -> None:
        # Timers run only while the dispatcher runs (a stopped one leaves no
        # delayed call behind); start() schedules them again.
        if registration.expires_at is None or not self._state.running:
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
        if handler_id in self.registry:
            registration = self.registry.remove(handler_id)
            _log.info(
                "handler {handler_id} {handler} expired",
                handler_id=handler_id,
                handler=registration.handler,
            )

    def schedule_expiries(self) -> None:
        """
        Start the expiry timers that are not running (at C{start()}).
        """
        for registration in self.registry.registrations():
            if registration.handler_id not in self._expiries:
                self._schedule_expiry(registration)

    def cancel_expiries(self) -> None:
        """
        Cancel every expiry timer (at C{stop()}).
        """
        expiries, self._expiries = self._expiries, {}
        for expiry in expiries.values():
            if expiry.active():
                expiry.cancel()

    # --- removing --------------------------------------------------------------

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

    def remove(self, handler_id: int) -> Deferred[None]:
        """
        Remove a handler: see C{EventDispatcher.remove_event_handler}.
        """
        if self._checking.pop(handler_id, None) is not None:
            return succeed(None)
        try:
            registration = self.registry.remove(handler_id)
        except KeyError as e:
            return fail(e)
        _log.info(
            "handler {handler_id} {handler} removed",
            handler_id=handler_id,
            handler=registration.handler,
        )
        return succeed(None)

    def remove_owned(self, owner: Hashable) -> Deferred[int]:
        """
        Remove the handlers registered with C{owner}, live or being checked:
        see C{EventDispatcher.remove_event_handlers}.
        """
        if owner is None:
            raise ValueError(
                "remove_event_handlers(owner=None) would remove every handler "
                "registered without an owner; remove those by id"
            )
        ids = [r.handler_id for r in self.registry.registrations() if r.owner == owner]
        ids += [i for i, r in self._checking.items() if r.owner == owner]
        for handler_id in ids:
            self.remove(handler_id)
        return succeed(len(ids))

    def forget_pool(self, name: str) -> None:
        """
        Remove every handler registered to the pool C{name}, also those being
        checked.
        """
        for registration in self.registry.registrations():
            if registration.pool == name:
                self.registry.remove(registration.handler_id)
        for handler_id, registration in list(self._checking.items()):
            if registration.pool == name:
                del self._checking[handler_id]

    # --- introspection ---------------------------------------------------------

    def keyword_users(self, name: str) -> list[int]:
        """
        The ids of the handlers (live or being checked) whose spec uses the
        keyword C{name}.
        """
        return [
            r.handler_id
            for r in [*self.registry.registrations(), *self._checking.values()]
            if name in r.spec.shape
        ]

    def handlers(
        self,
        *,
        phase: str | None,
        handler: str | None,
        pool: str | None,
        owner: Hashable | None,
        keywords: dict[str, Hashable],
    ) -> list[HandlerInfo]:
        """
        The live handlers, narrowed: see C{EventDispatcher.handlers}.
        """
        self._keywords.check_fired(keywords, "handlers()")
        pids: dict[str, Sequence[int]] = self._pools.child_pids()
        chosen = []
        for registration in self.registry.registrations():
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

    def explain(self, keywords: dict[str, Hashable]) -> Explanation:
        """
        Which handlers an event with C{keywords} would reach: see
        C{EventDispatcher.explain}.
        """
        self._keywords.check_fired(keywords, "explain()")
        return self.registry.explain(keywords)
