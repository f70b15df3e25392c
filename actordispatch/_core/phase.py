"""
L{Phase}: a phase declared with how its handlers run and what stops the event.

A dispatcher's phases are names or L{Phase} values.  A name is a concurrent
phase that cannot veto, with the dispatcher's error policy.
"""

from __future__ import annotations

from collections.abc import Iterable

from attrs import field, frozen

#: The error policies: whether a failed handler stops the event's later phases.
ON_ERROR = ("continue", "abort")


def check_on_error(value: object, what: str) -> str | None:
    """
    C{value} if it is an error policy (or C{None}).

    @raise ValueError: naming C{what} otherwise.
    """
    if value is not None and value not in ON_ERROR:
        raise ValueError(f"{what} must be 'continue' or 'abort', not {value!r:.80}")
    return value


def _name(value: object) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"a phase must be a non-empty string, not {value!r:.80}")
    return value


def _flag(value: object) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"a phase's flags are True or False, not {value!r:.80}")
    return value


@frozen
class Phase:
    """
    One phase of a dispatcher.

        >>> from actordispatch import Phase
        >>> Phase("check", sequential=True, veto=True, on_error="abort")
        Phase(name='check', sequential=True, veto=True, on_error='abort')

    @ivar name: the name handlers register under.
    @ivar sequential: run the phase's handlers one after another, in priority
        order (highest first), then registration order; by default they all
        start at once.
    @ivar veto: a handler of this phase may return L{Veto} to stop the event:
        the later phases are skipped (and, in a sequential phase, this phase's
        handlers not run yet).  A L{Veto} returned in another phase is an
        C{"error"} outcome (C{actordispatch.VetoNotAllowed}).
    @ivar on_error: C{"abort"}: a handler that fails here (C{"error"},
        C{"timeout"} or C{"crashed"}) stops the event as a veto does;
        C{"continue"}: it does not; C{None}: the dispatcher's policy
        (C{skip_after_failure}).  C{fire_event(on_error=...)} overrides it for
        one event.
    """

    name: str = field(converter=_name)
    sequential: bool = field(default=False, converter=_flag)
    veto: bool = field(default=False, converter=_flag)
    on_error: str | None = field(default=None)

    def __attrs_post_init__(self) -> None:
        check_on_error(self.on_error, f"phase {self.name!r}: on_error")

    @classmethod
    def of(cls, value: Phase | str) -> Phase:
        """
        C{value} as a L{Phase} (a name is a plain concurrent phase).

        @raise ValueError: for anything else.
        """
        if isinstance(value, Phase):
            return value
        return cls(value)


def phases_of(phases: Iterable[str | Phase]) -> tuple[Phase, ...]:
    """
    A dispatcher's phases, in order, from names or L{Phase} values.

    @raise ValueError: for a single name or phase (not a collection), for no
        phase, or for two phases of one name.
    """
    if isinstance(phases, (str, Phase)):
        raise ValueError("phases must be a collection of names or Phase values")
    specs = tuple(Phase.of(p) for p in phases)
    names = tuple(p.name for p in specs)
    if not names:
        raise ValueError("a dispatcher needs at least one phase")
    if len(set(names)) != len(names):
        raise ValueError(f"phases must be distinct: {names!r}")
    return specs
