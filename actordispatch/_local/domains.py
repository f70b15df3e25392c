"""
Trust domains (L{actordispatch._core.sandbox.SandboxProfile.isolation}): which
free child may run a handler's work, and which to replace when none may.

Under C{"handler"} a child serves the one handler that first gave it work (or
had it import its code, in a check) for its whole life; under C{"invocation"}
it runs one invocation.  A child never changes hands: another handler's child
is replaced, never reused.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

from actordispatch._local.child import Child


def claim_idle(idle: deque[Child], handler: str, reuse: bool) -> Child | None:
    """
    Take from C{idle} the free child that may run C{handler}, and claim it for
    C{handler}: preferably the most recently free child of its own (if
    C{reuse}, else only one of its own that has run nothing yet, claimed by a
    check), else the most recently free child that has run nothing yet.

    @return: the child, or C{None} if no free child may run C{handler}.
    """
    fresh = None
    for index in range(len(idle) - 1, -1, -1):
        child = idle[index]
        if child.owner == handler and (reuse or not child.calls):
            del idle[index]
            return child
        if fresh is None and child.owner is None:
            fresh = index
    if fresh is None:
        return None
    child = idle[fresh]
    del idle[fresh]
    child.owner = handler
    return child


def replaceable(idle: Iterable[Child]) -> Child | None:
    """
    The free child to replace for a handler that has none: the one free
    longest among those another handler claimed (its handler has waited least
    for it).
    """
    return next((child for child in idle if child.owner is not None), None)
