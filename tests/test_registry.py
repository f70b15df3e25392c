"""
Unit tests for L{actordispatch._core.registry}: registrations, ids, C{max_calls}, and
the names handlers are sent to children by.
"""

from __future__ import annotations

import functools
import types
from collections.abc import Callable
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from actordispatch._core.match import MatchSpec
from actordispatch._core.registry import HandlerRegistry, Registration, handler_name
from actordispatch._core.result import HandlerOutcome
from tests import helpers

PHASES = ("before", "during", "after")


#: An outcome to settle reservations with (the registry only counts it).
OK = HandlerOutcome(handler_id=0, handler="a.b:c", phase="during", status="ok")


def module_handler(event: Any) -> None:
    """
    A module-level handler a child can import.
    """


class Holder:
    """
    A class whose methods are offered as handlers.
    """

    def method(self, event: Any) -> None:
        """
        A method: bound to an instance it cannot be imported.
        """

    @staticmethod
    def static(event: Any) -> None:
        """
        A static method: importable as C{module:Holder.static}.
        """


#: A module-level lambda: its name is still C{<lambda>}.
module_lambda: Callable[[Any], Any] = lambda event: event  # noqa: E731


def make_closure() -> Callable[[Any], Any]:
    """
    Return a closure, which no child can import.
    """

    def closure(event: Any) -> Any:
        return event

    return closure


class Registry:
    """
    A registry under test, with a short way to register handlers.
    """

    def __init__(self, phases: tuple[str, ...] = PHASES) -> None:
        self.registry = HandlerRegistry(phases)

    def add(
        self, phase: str = "during", max_calls: int | None = None, **keywords: Any
    ) -> Registration:
        """
        Register a handler with a fresh id and return its registration.
        """
        registration = Registration(
            handler_id=self.registry.new_id(),
            handler="tests.helpers:echo",
            phase=phase,
            spec=MatchSpec.from_keywords(keywords),
            max_calls=max_calls,
        )
        self.registry.register(registration)
        return registration


def ids(plan: list[list[Registration]]) -> list[list[int]]:
    """
    The handler ids of a plan, per phase.
    """
    return [[r.handler_id for r in phase] for phase in plan]


class IdTests(SynchronousTestCase):
    def test_ids_never_reused(self) -> None:
        """
        Ids increase and are never handed out twice, even after the handlers
        holding them are removed.
        """
        registry = Registry()
        seen = []
        for _ in range(5):
            registration = registry.add()
            seen.append(registration.handler_id)
            registry.registry.remove(registration.handler_id)
        seen.append(registry.registry.new_id())
        self.assertEqual(seen, sorted(set(seen)))
        self.assertEqual(len(seen), 6)

    def test_remove_unknown(self) -> None:
        """
        Removing an id that was never registered, or was already removed, raises
        C{KeyError}.
        """
        registry = Registry()
        self.assertRaises(KeyError, registry.registry.remove, 1)
        registration = registry.add()
        removed = registry.registry.remove(registration.handler_id)
        self.assertIs(removed, registration)
        self.assertTrue(removed.removed)
        self.assertRaises(KeyError, registry.registry.remove, registration.handler_id)

    def test_len_contains_registrations(self) -> None:
        """
        The registry knows its live handlers: their count, membership, and the
        registrations in id order.
        """
        registry = Registry()
        first, second, third = registry.add(), registry.add("after"), registry.add()
        registry.registry.remove(second.handler_id)
        self.assertEqual(len(registry.registry), 2)
        self.assertIn(first.handler_id, registry.registry)
        self.assertNotIn(second.handler_id, registry.registry)
        self.assertEqual(registry.registry.registrations(), [first, third])


class PlanTests(SynchronousTestCase):
    def test_per_phase_in_order(self) -> None:
        """
        A plan has one list per phase, in the declared order, each holding the
        matching handlers in registration order.
        """
        registry = Registry()
        a = registry.add("after")
        b = registry.add("during", user="bob")
        c = registry.add("before")
        d = registry.add("during")
        e = registry.add("after", user="alice")
        f = registry.add("after", role=None)
        plan = registry.registry.plan({"user": "bob"})
        self.assertEqual(
            ids(plan),
            [
                [c.handler_id],
                [b.handler_id, d.handler_id],
                [a.handler_id, f.handler_id],
            ],
        )
        self.assertNotIn(e, plan[2])
        self.assertEqual(
            ids(registry.registry.plan({"user": "carol"}))[1], [d.handler_id]
        )

    def test_any_number_of_phases(self) -> None:
        """
        Phases may be one or many; an empty registry plans an empty list for
        each.
        """
        self.assertEqual(HandlerRegistry(("only",)).plan({}), [[]])
        phases = tuple(f"p{i}" for i in range(7))
        self.assertEqual(HandlerRegistry(phases).plan({"x": 1}), [[]] * 7)

    def test_removed_not_planned(self) -> None:
        """
        A removed handler is no longer planned.
        """
        registry = Registry()
        registration = registry.add()
        registry.registry.remove(registration.handler_id)
        self.assertEqual(registry.registry.plan({}), [[], [], []])

    def test_plan_reserves(self) -> None:
        """
        Each plan reserves one call of each handler it chose, and only of
        those.
        """
        registry = Registry()
        bob = registry.add(user="bob")
        alice = registry.add(user="alice")
        registry.registry.plan({"user": "bob"})
        registry.registry.plan({"user": "bob"})
        self.assertEqual((bob.reserved, alice.reserved), (2, 0))


class MaxCallsTests(SynchronousTestCase):
    def test_exact_reservation(self) -> None:
        """
        A handler with C{max_calls=N} is planned for exactly N events, however
        many are in flight; after that it matches nothing, though it stays
        registered until its calls settle.
        """
        registry = Registry()
        limited = registry.add(max_calls=3)
        forever = registry.add()
        plans = [registry.registry.plan({}) for _ in range(5)]
        planned = [limited in plan[1] for plan in plans]
        self.assertEqual(planned, [True, True, True, False, False])
        self.assertTrue(all(forever in plan[1] for plan in plans))
        self.assertTrue(limited.exhausted)
        self.assertIn(limited.handler_id, registry.registry)

    def test_removed_after_settling(self) -> None:
        """
        Once all N reserved calls have settled, the handler is removed; not
        before.
        """
        registry = Registry()
        limited = registry.add(max_calls=2)
        registry.registry.plan({})
        registry.registry.plan({})
        registry.registry.settle(limited, OK)
        self.assertIn(limited.handler_id, registry.registry)
        self.assertFalse(limited.removed)
        registry.registry.settle(limited, OK)
        self.assertNotIn(limited.handler_id, registry.registry)
        self.assertTrue(limited.removed)
        self.assertRaises(KeyError, registry.registry.remove, limited.handler_id)

    def test_settle_unlimited(self) -> None:
        """
        Settling calls of a handler without C{max_calls} never removes it.
        """
        registry = Registry()
        forever = registry.add()
        for _ in range(10):
            registry.registry.plan({})
            registry.registry.settle(forever, OK)
        self.assertIn(forever.handler_id, registry.registry)
        self.assertEqual([len(p) for p in registry.registry.plan({})], [0, 1, 0])

    def test_release_puts_back(self) -> None:
        """
        Releasing a reserved call of an exhausted handler makes it match again,
        so that it still runs its full C{max_calls}.
        """
        registry = Registry()
        limited = registry.add(max_calls=2)
        registry.registry.plan({})
        registry.registry.plan({})
        self.assertEqual(registry.registry.plan({}), [[], [], []])
        registry.registry.release(limited)
        self.assertFalse(limited.exhausted)
        self.assertEqual(registry.registry.plan({}), [[], [limited], []])
        self.assertEqual(registry.registry.plan({}), [[], [], []])
        registry.registry.settle(limited, OK)
        registry.registry.settle(limited, OK)
        self.assertNotIn(limited.handler_id, registry.registry)

    def test_release_not_exhausted(self) -> None:
        """
        Releasing a call of a handler that was not exhausted leaves it matching
        once (not twice).
        """
        registry = Registry()
        limited = registry.add(max_calls=5)
        registry.registry.plan({})
        registry.registry.release(limited)
        self.assertEqual(limited.reserved, 0)
        self.assertEqual(registry.registry.plan({}), [[], [limited], []])

    def test_release_after_removal(self) -> None:
        """
        Releasing a call of a handler the user removed does not bring it back.
        """
        registry = Registry()
        limited = registry.add(max_calls=1)
        registry.registry.plan({})
        registry.registry.remove(limited.handler_id)
        registry.registry.release(limited)
        self.assertEqual(registry.registry.plan({}), [[], [], []])
        self.assertNotIn(limited.handler_id, registry.registry)

    def test_settle_after_user_removal(self) -> None:
        """
        Settling the last call of a handler the user already removed does not
        fail (it is not removed twice).
        """
        registry = Registry()
        limited = registry.add(max_calls=1)
        registry.registry.plan({})
        registry.registry.remove(limited.handler_id)
        registry.registry.settle(limited, OK)
        self.assertEqual(len(registry.registry), 0)


class UsesKeywordTests(SynchronousTestCase):
    def test_uses_keyword(self) -> None:
        """
        A keyword is used while some live handler constrains it; C{None} in a
        spec does not count, and removed handlers stop counting.
        """
        registry = Registry()
        self.assertFalse(registry.registry.uses_keyword("user"))
        registry.add(role=None)
        self.assertFalse(registry.registry.uses_keyword("role"))
        bob = registry.add("after", user="bob", role="admin")
        self.assertTrue(registry.registry.uses_keyword("user"))
        self.assertTrue(registry.registry.uses_keyword("role"))
        self.assertFalse(registry.registry.uses_keyword("event_type"))
        registry.registry.remove(bob.handler_id)
        self.assertFalse(registry.registry.uses_keyword("user"))


class HandlerNameTests(SynchronousTestCase):
    def assertRefused(self, handler: object, *fragments: str) -> None:
        """
        C{handler_name(handler)} raises C{ValueError} whose message contains
        each of C{fragments}.
        """
        with self.assertRaises(ValueError) as caught:
            handler_name(handler)
        for fragment in fragments:
            self.assertIn(fragment, str(caught.exception))

    def test_module_functions(self) -> None:
        """
        A module-level function (or static method, or builtin) is named
        C{"module:qualname"}.
        """
        self.assertEqual(
            handler_name(module_handler), "tests.test_registry:module_handler"
        )
        self.assertEqual(handler_name(helpers.echo), "tests.helpers:echo")
        self.assertEqual(
            handler_name(helpers.async_double), "tests.helpers:async_double"
        )
        self.assertEqual(
            handler_name(Holder.static), "tests.test_registry:Holder.static"
        )
        self.assertEqual(handler_name(len), "builtins:len")

    def test_names(self) -> None:
        """
        A string of the form C{"package.module:attribute"} is accepted as it is,
        without importing it.
        """
        for name in ("pkg.mod:attr", "a:b.c", "no_such_module_anywhere:f"):
            self.assertEqual(handler_name(name), name)

    def test_malformed_names(self) -> None:
        """
        A string of another form is refused with a C{ValueError} giving the
        expected form.
        """
        for name in ("pkg.mod", "pkg.mod:", ":x", "a b:c", "pkg.mod:attr()", ""):
            self.assertRefused(name, repr(name), "'package.module:attribute'")

    def test_lambda(self) -> None:
        """
        A lambda, even one bound to a module-level name, is refused: it cannot
        run in a child process.
        """
        self.assertRefused(module_lambda, "cannot run in a child process", "lambda")
        self.assertRefused(lambda e: e, "cannot run in a child process", "lambda")

    def test_closure(self) -> None:
        """
        A closure is refused: it cannot run in a child process.
        """
        self.assertRefused(make_closure(), "cannot run in a child process", "closure")

    def test_bound_method(self) -> None:
        """
        A method bound to an instance is refused: it cannot run in a child
        process.
        """
        self.assertRefused(
            Holder().method, "cannot run in a child process", "bound method"
        )

    def test_main(self) -> None:
        """
        A function defined in C{__main__} is refused: a child cannot import it.
        """
        copy = types.FunctionType(
            module_handler.__code__, module_handler.__globals__, "module_handler"
        )
        copy.__module__ = "__main__"
        self.assertRefused(copy, "cannot run in a child process", "__main__")

    def test_not_at_module_level(self) -> None:
        """
        A function whose name does not lead back to it (replaced, or renamed)
        is refused: it cannot run in a child process.
        """
        copy = types.FunctionType(
            module_handler.__code__, module_handler.__globals__, "module_handler"
        )
        copy.__module__ = __name__
        self.assertRefused(copy, "cannot run in a child process", "module level")
        renamed = types.FunctionType(
            module_handler.__code__, module_handler.__globals__, "renamed"
        )
        renamed.__module__ = __name__
        renamed.__qualname__ = "no_such_name_here"
        self.assertRefused(renamed, "cannot run in a child process")

    def test_partial(self) -> None:
        """
        A callable without a module-level name (a C{functools.partial}) is
        refused: it cannot run in a child process.
        """
        self.assertRefused(
            functools.partial(module_handler), "cannot run in a child process"
        )

    def test_not_callable(self) -> None:
        """
        Neither a name nor a callable: refused with a C{ValueError}.
        """
        for value in (None, 42, b"pkg.mod:attr", ["pkg.mod:attr"]):
            self.assertRefused(value, "callable or a name")
