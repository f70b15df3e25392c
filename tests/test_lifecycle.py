"""
Unit tests of the child lifecycle's state machine: every change goes through
L{transition}, and one the table does not allow fails loudly.
"""

from __future__ import annotations

from attrs import define
from twisted.trial.unittest import SynchronousTestCase

from actordispatch._core.errors import ActorDispatchError
from actordispatch._local.lifecycle import (
    TRANSITIONS,
    ChildState,
    IllegalTransitionError,
    transition,
)


@define
class Thing:
    number: int = 7
    state: ChildState = ChildState.BOOTING


class TransitionTests(SynchronousTestCase):
    def test_table_covers_every_state(self) -> None:
        """
        Every state has its row, and every target is a state.
        """
        self.assertEqual(set(TRANSITIONS), set(ChildState))
        for targets in TRANSITIONS.values():
            self.assertTrue(targets <= set(ChildState))

    def test_legal(self) -> None:
        """
        A child's usual life: boot, serve, work, park, go back, die.
        """
        child = Thing()
        for state in (
            ChildState.IDLE,
            ChildState.BUSY,
            ChildState.PARKED,
            ChildState.BUSY,
            ChildState.IDLE,
            ChildState.RETIRING,
            ChildState.DYING,
            ChildState.DEAD,
        ):
            transition(child, state)
            self.assertIs(child.state, state)

    def test_illegal(self) -> None:
        """
        A change the table does not allow raises L{IllegalTransitionError},
        naming the child and both states, and leaves the state as it was.
        """
        child = Thing(state=ChildState.STANDBY)
        with self.assertRaises(IllegalTransitionError) as caught:
            transition(child, ChildState.BUSY)
        self.assertIn("child 7: standby -> busy", str(caught.exception))
        self.assertIs(child.state, ChildState.STANDBY)

    def test_dead_is_final(self) -> None:
        """
        No state follows death: a dead child is never revived or handed work.
        """
        for state in ChildState:
            child = Thing(state=ChildState.DEAD)
            self.assertRaises(IllegalTransitionError, transition, child, state)

    def test_no_work_while_booting_or_retiring(self) -> None:
        """
        A booting, standby or retiring child is never given work directly.
        """
        for state in (ChildState.BOOTING, ChildState.STANDBY, ChildState.RETIRING):
            child = Thing(state=state)
            self.assertRaises(
                IllegalTransitionError, transition, child, ChildState.BUSY
            )

    def test_not_a_dispatch_error(self) -> None:
        """
        An illegal transition is a bug, an C{AssertionError}: never an error
        the pool's callers would catch and carry on with.
        """
        self.assertTrue(issubclass(IllegalTransitionError, AssertionError))
        self.assertFalse(issubclass(IllegalTransitionError, ActorDispatchError))


class PoolStateTests(SynchronousTestCase):
    def test_pool_changes_state_only_by_transition(self) -> None:
        """
        No module of the pool assigns a child's state but the lifecycle's
        L{transition}.
        """
        import pathlib

        import actordispatch._local as local

        folder = pathlib.Path(local.__file__).parent
        for path in folder.glob("*.py"):
            if path.name == "lifecycle.py":
                continue
            text = path.read_text()
            self.assertNotIn(".state = ", text, path.name)
