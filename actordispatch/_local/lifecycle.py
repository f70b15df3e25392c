"""
The life of one child process, as an explicit state machine.

Every state change of a child goes through L{transition}, which checks it
against L{TRANSITIONS}: a change the table does not list is a bug in the pool
(a child handed work twice, a dead child revived), and it fails loudly, with
L{IllegalTransitionError}, instead of leaving a child in a state that nothing
will ever get it out of.

A child boots, then serves (idle, busy, parked while its handler waits for a
follow-up event) or stands by; it ends asked to shut down (retiring), killed
(dying), and dead once its process has ended::

    BOOTING --> IDLE <--> BUSY <--> PARKED
       |  \\       ^        |
       |   `--> STANDBY <---'        (any live state) --> RETIRING, DYING --> DEAD
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Protocol


class ChildState(enum.Enum):
    """
    Where a child is in its life.  The values are the names the pool has
    always used (and logs).
    """

    #: spawned, has not answered its first ping
    BOOTING = "booting"
    #: serving, free for work
    IDLE = "idle"
    #: running a batch or a handler check
    BUSY = "busy"
    #: running a batch whose handler waits for a follow-up event: it does not
    #: count among the C{size} serving children, another stands in for it
    PARKED = "parked"
    #: booted and warm, in reserve beyond C{size}: serves nothing yet
    STANDBY = "standby"
    #: asked to shut down once idle (recycled, surplus, or the pool stops)
    RETIRING = "retiring"
    #: being killed (SIGTERM then SIGKILL, or SIGKILL at once)
    DYING = "dying"
    #: its process has ended: no way back
    DEAD = "dead"


_LIVE_ENDS = frozenset({ChildState.RETIRING, ChildState.DYING, ChildState.DEAD})

#: The only state changes there are: state -> the states it may go to.
TRANSITIONS: Mapping[ChildState, frozenset[ChildState]] = {
    ChildState.BOOTING: frozenset({ChildState.IDLE, ChildState.STANDBY}) | _LIVE_ENDS,
    ChildState.IDLE: frozenset({ChildState.BUSY}) | _LIVE_ENDS,
    ChildState.BUSY: frozenset({ChildState.IDLE, ChildState.STANDBY, ChildState.PARKED})
    | _LIVE_ENDS,
    # A parked child's batch may end while a follow-up is still waited for
    # (a handler that did not wait for its own call): it is free again.
    ChildState.PARKED: frozenset({ChildState.BUSY, ChildState.IDLE}) | _LIVE_ENDS,
    ChildState.STANDBY: frozenset({ChildState.IDLE}) | _LIVE_ENDS,
    ChildState.RETIRING: frozenset({ChildState.DYING, ChildState.DEAD}),
    # Killing a dying child again is how SIGKILL follows a protocol error.
    ChildState.DYING: frozenset({ChildState.DYING, ChildState.DEAD}),
    ChildState.DEAD: frozenset(),
}

#: The states of a child that serves (or is about to): the ones C{size} counts.
SERVING = frozenset({ChildState.IDLE, ChildState.BUSY, ChildState.PARKED})
#: The states of a child that has work (a batch or a check).
WORKING = frozenset({ChildState.BUSY, ChildState.PARKED})
#: The states of a child on its way out, or gone.
ENDING = _LIVE_ENDS


class IllegalTransitionError(AssertionError):
    """
    A child was asked to change state in a way L{TRANSITIONS} does not allow:
    a bug in the pool, never something a child can cause.  An
    C{AssertionError}, not an C{ActorDispatchError}: no caller should catch it.
    """


class Stateful(Protocol):
    """
    What L{transition} needs of a child.
    """

    number: int
    state: ChildState


def transition(child: Stateful, new: ChildState) -> None:
    """
    Move C{child} to state C{new}.

    @raise IllegalTransitionError: if L{TRANSITIONS} does not allow it.
    """
    old = child.state
    if new not in TRANSITIONS[old]:
        raise IllegalTransitionError(
            f"child {child.number}: {old.value} -> {new.value} is not a transition"
        )
    child.state = new
