"""
Unit tests for L{actordispatch._core.match}: match specs and the routing index.
"""

from __future__ import annotations

import json
import random
from collections.abc import Hashable

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from actordispatch import Absent, Glob, In, Not, Present
from actordispatch._core.match import MatchSpec, RoutingIndex, from_table, to_table


def spec(**keywords: object) -> MatchSpec:
    """
    A spec built as C{add_event_handler(..., **keywords)} builds one.
    """
    return MatchSpec.from_keywords(keywords)


class MatchSpecTests(SynchronousTestCase):
    def test_none_is_no_constraint(self) -> None:
        """
        A keyword whose value is C{None} is left out of the spec: it constrains
        nothing, so a spec of only C{None}s is the empty spec.
        """
        self.assertEqual(
            spec(user=None, role="admin").constraints, (("role", "admin"),)
        )
        self.assertEqual(spec(user=None, role=None), MatchSpec())
        self.assertEqual(spec(user=None).shape, ())

    def test_constraints_sorted(self) -> None:
        """
        Constraints are sorted by keyword whatever the order they were given in,
        so two specs written in different orders are equal; C{shape} and
        C{values} follow that order.
        """
        first = MatchSpec.from_keywords({"user": "bob", "event_type": "x", "role": 1})
        second = MatchSpec.from_keywords({"role": 1, "user": "bob", "event_type": "x"})
        self.assertEqual(first, second)
        self.assertEqual(
            first.constraints, (("event_type", "x"), ("role", 1), ("user", "bob"))
        )
        self.assertEqual(first.shape, ("event_type", "role", "user"))
        self.assertEqual(first.values, ("x", 1, "bob"))

    def test_unhashable_value(self) -> None:
        """
        An unhashable constrained value is refused with a C{ValueError} naming
        the keyword.
        """
        for value in ([1], {"a": 1}, {1}):
            with self.assertRaises(ValueError) as caught:
                spec(user=value)
            self.assertIn("'user'", str(caught.exception))

    def test_hashable_values(self) -> None:
        """
        Hashable values of any type are accepted, including tuples and
        frozensets.
        """
        self.assertEqual(spec(user=(1, 2)).values, ((1, 2),))
        self.assertEqual(spec(user=frozenset({1})).values, (frozenset({1}),))

    def test_matches(self) -> None:
        """
        C{matches} is true when every constrained keyword is carried with an
        equal value; a missing keyword does not match, extra keywords do not
        matter, and the empty spec matches everything.
        """
        bob = spec(user="bob", role=None)
        self.assertTrue(bob.matches({"user": "bob"}))
        self.assertTrue(bob.matches({"user": "bob", "role": "admin"}))
        self.assertFalse(bob.matches({"user": "alice"}))
        self.assertFalse(bob.matches({"role": "admin"}))
        self.assertFalse(bob.matches({"user": None}))
        self.assertTrue(MatchSpec().matches({}))
        self.assertTrue(MatchSpec().matches({"user": "anyone"}))


class RoutingIndexTests(SynchronousTestCase):
    def test_equality_matching(self) -> None:
        """
        An event matches the handlers whose constrained values equal its own,
        and no others.
        """
        index = RoutingIndex()
        index.add(1, spec(user="bob"))
        index.add(2, spec(user="alice"))
        index.add(3, spec(user="bob", role="admin"))
        self.assertEqual(index.match({"user": "bob"}), [1])
        self.assertEqual(index.match({"user": "alice", "role": "admin"}), [2])
        self.assertEqual(index.match({"user": "bob", "role": "admin"}), [1, 3])
        self.assertEqual(index.match({"user": "carol", "role": "admin"}), [])

    def test_none_in_spec(self) -> None:
        """
        A handler whose spec has C{None} for a keyword matches events that carry
        that keyword with any value (C{None} included) and events that lack it.
        """
        index = RoutingIndex()
        index.add(1, spec(user="bob", role=None))
        self.assertEqual(index.match({"user": "bob"}), [1])
        self.assertEqual(index.match({"user": "bob", "role": "admin"}), [1])
        self.assertEqual(index.match({"user": "bob", "role": None}), [1])

    def test_missing_keyword_does_not_match(self) -> None:
        """
        An event that does not carry a keyword does not match a spec that
        constrains it, nor does an event carrying it as C{None}.
        """
        index = RoutingIndex()
        index.add(1, spec(role="admin"))
        self.assertEqual(index.match({}), [])
        self.assertEqual(index.match({"user": "bob"}), [])
        self.assertEqual(index.match({"role": None}), [])

    def test_empty_spec_matches_everything(self) -> None:
        """
        A handler with an empty spec matches every event, with or without
        keywords.
        """
        index = RoutingIndex()
        index.add(7, MatchSpec())
        index.add(8, spec(user=None))
        for keywords in ({}, {"user": "bob"}, {"user": None, "role": 3}):
            self.assertEqual(index.match(keywords), [7, 8])

    def test_ascending_ids(self) -> None:
        """
        The matching ids come back in ascending order, whatever the order they
        were added in and whichever shapes they live under.
        """
        index = RoutingIndex()
        for handler_id, handler_spec in [
            (9, spec(user="bob")),
            (2, MatchSpec()),
            (5, spec(user="bob", role="r")),
            (1, spec(role="r")),
            (7, spec(user="bob")),
            (3, MatchSpec()),
        ]:
            index.add(handler_id, handler_spec)
        self.assertEqual(index.match({"user": "bob", "role": "r"}), [1, 2, 3, 5, 7, 9])

    def test_len(self) -> None:
        """
        C{len} counts the indexed handlers, over every shape and value.
        """
        index = RoutingIndex()
        self.assertEqual(len(index), 0)
        index.add(1, spec(user="bob"))
        index.add(2, spec(user="bob"))
        index.add(3, spec(user="alice"))
        index.add(4, MatchSpec())
        self.assertEqual(len(index), 4)

    def test_discard(self) -> None:
        """
        A discarded handler no longer matches; the others under the same spec
        still do.
        """
        index = RoutingIndex()
        index.add(1, spec(user="bob"))
        index.add(2, spec(user="bob"))
        index.discard(1, spec(user="bob"))
        self.assertEqual(index.match({"user": "bob"}), [2])
        self.assertEqual(len(index), 1)

    def test_discard_unknown(self) -> None:
        """
        Discarding a handler that is not indexed (unknown shape, unknown values,
        or unknown id under known values) is a no-op.
        """
        index = RoutingIndex()
        index.add(1, spec(user="bob"))
        index.discard(1, spec(role="admin"))
        index.discard(1, spec(user="alice"))
        index.discard(2, spec(user="bob"))
        self.assertEqual(index.match({"user": "bob"}), [1])
        self.assertEqual(len(index), 1)

    def test_no_growth(self) -> None:
        """
        Adding and then discarding many handlers of many shapes and values
        leaves nothing behind: no shapes, and a length of zero.  Matching
        events never adds anything either.
        """
        index = RoutingIndex()
        rng = random.Random(1234)
        added = []
        for handler_id in range(1, 501):
            handler_spec = random_spec(rng)
            index.add(handler_id, handler_spec)
            added.append((handler_id, handler_spec))
        for _ in range(200):
            index.match(random_keywords(rng))
        self.assertEqual(len(index), 500)
        rng.shuffle(added)
        for handler_id, handler_spec in added:
            index.discard(handler_id, handler_spec)
        self.assertEqual(list(index.shapes()), [])
        self.assertEqual(len(index), 0)
        for _ in range(200):
            index.match(random_keywords(rng))
        self.assertEqual(list(index.shapes()), [])

    def test_agrees_with_matches(self) -> None:
        """
        On randomized specs and events (seeded), the index answers exactly the
        ids whose spec's reference C{matches} is true, in ascending order, also
        after some handlers are discarded.
        """
        for seed in range(20):
            rng = random.Random(seed)
            index = RoutingIndex()
            specs: dict[int, MatchSpec] = {}
            for handler_id in range(1, rng.randint(1, 60) + 1):
                specs[handler_id] = random_spec(rng)
                index.add(handler_id, specs[handler_id])
            for handler_id in rng.sample(sorted(specs), len(specs) // 3):
                index.discard(handler_id, specs.pop(handler_id))
            for _ in range(100):
                keywords = random_keywords(rng)
                expected = [i for i, s in sorted(specs.items()) if s.matches(keywords)]
                self.assertEqual(
                    index.match(keywords), expected, f"seed {seed}: {keywords!r}"
                )

    def test_python_equality(self) -> None:
        """
        Values match by Python equality: C{1}, C{1.0} and C{True} are the same
        value to the index, as they are to C{matches}; C{"1"} is not.
        """
        index = RoutingIndex()
        index.add(1, spec(role=1))
        index.add(2, spec(role=1.0))
        for value in (1, 1.0, True):
            self.assertEqual(index.match({"role": value}), [1, 2])
            self.assertTrue(spec(role=1).matches({"role": value}))
        self.assertEqual(index.match({"role": "1"}), [])
        self.assertEqual(index.match({"role": 2}), [])
        index.discard(1, spec(role=1.0))
        self.assertEqual(index.match({"role": 1}), [2])

    def test_unhashable_event_value(self) -> None:
        """
        Matching an event whose keyword value is unhashable, against a spec
        constraining that keyword, raises C{TypeError}.
        """
        index = RoutingIndex()
        index.add(1, spec(user="bob"))
        self.assertRaises(TypeError, index.match, {"user": ["bob"]})


KEYWORDS = ("event_type", "user", "role")
VALUES: tuple[Hashable, ...] = ("a", "b", 1, 1.0, True, 0, (1, 2), None)


def random_spec(rng: random.Random) -> MatchSpec:
    """
    A spec constraining a random subset of L{KEYWORDS} (some to C{None}).
    """
    return MatchSpec.from_keywords(
        {name: rng.choice(VALUES) for name in KEYWORDS if rng.random() < 0.5}
    )


def random_keywords(rng: random.Random) -> dict[str, Hashable]:
    """
    Event keywords: a random subset of L{KEYWORDS} (and one unknown keyword
    sometimes), with values drawn from L{VALUES}.
    """
    keywords = {name: rng.choice(VALUES) for name in KEYWORDS if rng.random() < 0.7}
    if rng.random() < 0.1:
        keywords["other"] = rng.choice(VALUES)
    return keywords


# --- operators ---------------------------------------------------------------------

_OP_KEYWORDS = ("a", "b", "c")
_VALUES = st.sampled_from(["x", "y", "xy", "ab", 1, 2, 1.0, True, ("t",)])
_PATTERNS = st.sampled_from(["x*", "?y", "[ax]*", "*", "ab"])
_plain = _VALUES | st.builds(Glob, _PATTERNS)
_constraints = st.one_of(
    _VALUES,
    st.lists(_VALUES, min_size=1, max_size=3).map(lambda vs: In(*vs)),
    st.builds(Glob, _PATTERNS),
    st.builds(Not, _plain),
    st.sampled_from([Present, Absent, None]),
)
_specs = st.dictionaries(st.sampled_from(_OP_KEYWORDS), _constraints, max_size=3)
_events = st.dictionaries(st.sampled_from(_OP_KEYWORDS), _VALUES, max_size=3)


_json_values = st.sampled_from(["x", "y", "ab", 1, 2, 1.5, True, False])
_json_plain = _json_values | st.builds(Glob, _PATTERNS)
_json_constraints = st.one_of(
    _json_values,
    st.none(),
    st.lists(_json_values, min_size=1, max_size=3).map(lambda vs: In(*vs)),
    st.builds(Glob, _PATTERNS),
    st.builds(Not, _json_plain),
    st.builds(
        Not, st.lists(_json_values, min_size=1, max_size=2).map(lambda v: In(*v))
    ),
    st.sampled_from([Present, Absent]),
)


class TableTests(SynchronousTestCase):
    @settings(max_examples=200, deadline=None)
    @given(_json_constraints)
    def test_round_trip(self, value: object) -> None:
        """
        Any spec value written as a table and sent through JSON reads back
        equal: C{from_table(json(to_table(v))) == v}.
        """
        table = json.loads(json.dumps(to_table(value)))
        self.assertEqual(from_table(table), value)

    def test_forms_and_mistakes(self) -> None:
        """
        The one-key forms, and what is refused, with messages that say why.
        """
        self.assertEqual(to_table(In("b", "a")), {"in": ["a", "b"]})
        self.assertEqual(to_table(Not(Glob("x*"))), {"not": {"glob": "x*"}})
        self.assertEqual(to_table(Present), {"present": True})
        self.assertEqual(to_table(Absent), {"absent": True})
        self.assertEqual(to_table("plain"), "plain")
        for bad, fragment in [
            ([1], "single value"),
            ({}, "exactly one"),
            ({"in": 1}, "unknown operator"),
            ({"in": []}, "at least one value"),
            ({"present": False}, "unknown operator"),
            ({"not": None}, "Not(None)"),
            ({"glob": 1}, "string pattern"),
        ]:
            with self.assertRaises(ValueError) as raised:
                from_table(bad)
            self.assertIn(fragment, str(raised.exception))


class OperatorTests(SynchronousTestCase):
    @settings(max_examples=300, deadline=None)
    @given(st.lists(_specs, max_size=12), st.lists(_events, min_size=1, max_size=8))
    def test_index_agrees_with_a_linear_scan(
        self, specs: list[dict[str, object]], events: list[dict[str, object]]
    ) -> None:
        """
        For random specs mixing equality and every operator, and random
        events, the index selects exactly the specs a linear scan of
        C{MatchSpec.matches} selects; after removing half of them, likewise,
        and nothing is left once all are removed.
        """
        index = RoutingIndex()
        compiled = [MatchSpec.from_keywords(spec) for spec in specs]
        for handler_id, spec in enumerate(compiled):
            index.add(handler_id, spec)
        for event in events:
            expected = [i for i, spec in enumerate(compiled) if spec.matches(event)]
            self.assertEqual(index.match(event), expected)
        for handler_id in range(0, len(compiled), 2):
            index.discard(handler_id, compiled[handler_id])
        for event in events:
            expected = [
                i for i, spec in enumerate(compiled) if i % 2 and spec.matches(event)
            ]
            self.assertEqual(index.match(event), expected)
        for handler_id in range(1, len(compiled), 2):
            index.discard(handler_id, compiled[handler_id])
        self.assertEqual((len(index), list(index.shapes())), (0, []))

    def test_semantics(self) -> None:
        """
        Each operator, and C{Not} of one, against present and absent keywords:
        only C{Absent} accepts a missing keyword; C{Glob} accepts strings only.
        """
        cases = [
            (In("a", "b"), {"k": "b"}, True),
            (In("a", "b"), {"k": "c"}, False),
            (In(1), {"k": True}, True),
            (In("a"), {}, False),
            (Not("guest"), {"k": "admin"}, True),
            (Not("guest"), {"k": "guest"}, False),
            (Not("guest"), {}, False),
            (Not(Glob("tmp_*")), {"k": "tmp_1"}, False),
            (Not(Glob("tmp_*")), {"k": "keep"}, True),
            (Not(In(1, 2)), {"k": 3}, True),
            (Glob("user_*"), {"k": "user_bob"}, True),
            (Glob("user_*"), {"k": "User_bob"}, False),
            (Glob("1*"), {"k": 12}, False),
            (Present, {"k": None}, True),
            (Present, {}, False),
            (Absent, {}, True),
            (Absent, {"k": 0}, False),
        ]
        for op, event, expected in cases:
            spec = MatchSpec.from_keywords({"k": op})
            index = RoutingIndex()
            index.add(1, spec)
            self.assertEqual(spec.matches(event), expected, (op, event))
            self.assertEqual(index.match(event) == [1], expected, (op, event))

    def test_mistakes(self) -> None:
        """
        Bad operators are a C{ValueError} naming the problem: In() with no
        values or with operators, a Glob of a non-string, Not of a presence
        test or of None, an unhashable value, an operator class not called.
        """
        for make, fragment in [
            (lambda: In(), "at least one value"),
            (lambda: In(Glob("x")), "not operators"),
            (lambda: In([1]), "hashable"),
            (lambda: Glob(3), "string pattern"),
            (lambda: Not(Absent), "use Present"),
            (lambda: Not(Present), "use Absent"),
            (lambda: Not(None), "no constraint"),
            (lambda: Not([1]), "hashable"),
            (lambda: MatchSpec.from_keywords({"k": In}), "call it"),
        ]:
            with self.assertRaises(ValueError) as caught:
                make()
            self.assertIn(fragment, str(caught.exception))

    def test_values_and_names(self) -> None:
        """
        Operators are values: equal when built alike, hashable, with a repr
        that reads as the call that built them.
        """
        self.assertEqual(In(1, 2), In(2, 1))
        self.assertEqual(hash(Not(Glob("a*"))), hash(Not(Glob("a*"))))
        self.assertEqual(repr(Not(In("b", "a"))), "Not(In('a', 'b'))")
        self.assertEqual((repr(Present), repr(Absent)), ("Present", "Absent"))

    def test_large_in_checked_per_event(self) -> None:
        """
        An In() spec that would expand past MAX_EXPANSION entries is still
        exact: its equalities are indexed and the In()s checked per event.
        """
        spec = MatchSpec.from_keywords(
            {"a": In(*range(100)), "b": In(*range(100)), "c": "x"}
        )
        index = RoutingIndex()
        index.add(7, spec)
        self.assertEqual(index.match({"a": 5, "b": 99, "c": "x"}), [7])
        self.assertEqual(index.match({"a": 5, "b": 100, "c": "x"}), [])
        index.discard(7, spec)
        self.assertEqual(len(index), 0)
