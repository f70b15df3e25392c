"""
L{Veto}: what a handler in a veto phase returns to stop the event's later phases.

It crosses the process boundary: a child's host recognises it in a handler's
return value and sends its reason in the reply record, never the object.
"""

from __future__ import annotations

from attrs import field, frozen

#: Longest veto reason kept, in characters (the rest is cut).
MAX_VETO_REASON = 1024


def _reason(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"a veto's reason must be a string, not {value!r:.80}")
    return value[:MAX_VETO_REASON]


@frozen
class Veto:
    """
    Returned by a handler of a phase declared with C{Phase(..., veto=True)}:
    the event's later phases do not run (their handlers end C{"skipped"},
    naming C{reason}).  In a sequential phase, the phase's handlers not run
    yet are skipped as well.

        >>> from actordispatch import Veto
        >>> Veto("user is banned").reason
        'user is banned'

    @ivar reason: why, for the skipped outcomes and the logs (at most
        L{MAX_VETO_REASON} characters are kept).
    """

    reason: str = field(converter=_reason)
