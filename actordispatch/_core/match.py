"""
Match specs and the routing index.

A handler's match spec constrains some of the dispatcher's keywords to values.  A
fired event matches it when, for every constrained keyword, the event carries that
keyword with an equal value.  C{None} in a spec means "no constraint", so a spec is
stored as only its constrained keywords.

The index groups specs by their I{shape}: the sorted tuple of keywords they
constrain.  Within a shape, specs live in a dictionary keyed by their tuple of
values.  Routing an event costs one dictionary lookup per shape (at most
2**len(allowed keywords), and in practice a handful) plus the matching handlers
themselves, however many handlers are registered.  Nothing is stored per fired
value, so the index never grows from the events that pass through it.

Beyond equality, a keyword can be constrained by an operator: L{In}, L{Not},
L{Glob}, L{Present} and L{Absent}.  C{In} is compiled into the index as several
equality entries, so it routes as fast as equality; the other operators are
checked only on the handlers the equality part of their spec already selected
(a spec of operators alone is checked for every event).  Every operator but
C{Absent} requires the keyword to be present in the event, as equality does.

This module is pure: no Twisted, no I/O.
"""

from __future__ import annotations

import itertools
import operator
from collections.abc import Callable, Hashable, Iterable, Mapping
from fnmatch import fnmatchcase
from typing import Any

from attrs import field, frozen

#: How many equality entries an C{In} spec may expand to in the index (more are
#: checked per event instead).
MAX_EXPANSION = 1024

_MISSING: Any = object()


def _hashable(value: object, what: str) -> Hashable:
    try:
        hash(value)
    except TypeError:
        raise ValueError(f"{what} must be hashable, got {value!r}") from None
    return value


class Operator:
    """
    A constraint on one keyword other than equality.
    """

    def accepts(self, value: object) -> bool:
        """
        Whether an event whose keyword has C{value} (L{_MISSING} when the event
        lacks the keyword) passes.
        """
        raise NotImplementedError


@frozen(repr=False, init=False)
class In(Operator):
    """
    The keyword is present and equal to one of C{values}: C{In("a", "b")}.
    """

    values: frozenset[Hashable]

    def __init__(self, *values: Hashable) -> None:
        if not values:
            raise ValueError("In() needs at least one value")
        for value in values:
            if isinstance(value, Operator):
                raise ValueError(f"In() takes values, not operators: {value!r}")
            _hashable(value, "an In() value")
        self.__attrs_init__(frozenset(values))

    def accepts(self, value: object) -> bool:
        return value is not _MISSING and value in self.values

    def __repr__(self) -> str:
        return f"In({', '.join(sorted(map(repr, self.values)))})"


@frozen(repr=False)
class Glob(Operator):
    """
    The keyword is present, a string, and matches the shell-style C{pattern}
    (C{*}, C{?}, C{[seq]}; case-sensitive): C{Glob("user_*")}.
    """

    pattern: str

    def __attrs_post_init__(self) -> None:
        if not isinstance(self.pattern, str):
            raise ValueError(f"Glob() takes a string pattern, not {self.pattern!r}")

    def accepts(self, value: object) -> bool:
        return isinstance(value, str) and fnmatchcase(value, self.pattern)

    def __repr__(self) -> str:
        return f"Glob({self.pattern!r})"


@frozen(repr=False)
class Not(Operator):
    """
    The keyword is present and does not equal C{value} (or, given an operator,
    does not pass it): C{Not("guest")}, C{Not(Glob("tmp_*"))}.
    """

    value: Hashable

    def __attrs_post_init__(self) -> None:
        if isinstance(self.value, _Presence):
            raise ValueError(
                f"Not({self.value!r}) is not allowed: use "
                f"{'Absent' if self.value is Present else 'Present'}"
            )
        if self.value is None:
            raise ValueError("Not(None) is not allowed: None means no constraint")
        _hashable(self.value, "a Not() value")

    def accepts(self, value: object) -> bool:
        return value is not _MISSING and not _accepts(self.value, value)

    def __repr__(self) -> str:
        return f"Not({self.value!r})"


@frozen(repr=False)
class _Presence(Operator):
    present: bool

    def accepts(self, value: object) -> bool:
        return (value is not _MISSING) == self.present

    def __repr__(self) -> str:
        return "Present" if self.present else "Absent"


#: The keyword is in the event, whatever its value.
Present = _Presence(True)
#: The keyword is not in the event.
Absent = _Presence(False)


#: How an operator is written in JSON and TOML: a table of one of these keys.
OPERATOR_KEYS = ("in", "not", "glob", "present", "absent")


def from_table(value: Any) -> Any:
    """
    A match spec value as JSON or TOML write it: a single value as itself, an
    operator as a table of one key, C{{"in": [..]}}, C{{"not": v}} (C{v} may be
    an operator table), C{{"glob": "p*"}}, C{{"present": true}},
    C{{"absent": true}}.  The inverse of L{to_table}.

    @raise ValueError: naming what is wrong.
    """
    if isinstance(value, list):
        raise ValueError(
            f"must be a single value or an operator table, not {value!r:.80}"
        )
    if not isinstance(value, dict):
        return value
    if len(value) != 1:
        raise ValueError(
            f"an operator table has exactly one of: {', '.join(OPERATOR_KEYS)}"
        )
    ((name, argument),) = value.items()
    if name == "in" and isinstance(argument, list):
        return In(*argument)
    if name == "not":
        return Not(from_table(argument))
    if name == "glob":
        return Glob(argument)
    if name in ("present", "absent") and argument is True:
        return Present if name == "present" else Absent
    raise ValueError(
        f"unknown operator {name} = {argument!r:.80} (known: in = [..], "
        'not = value, glob = "pattern", present = true, absent = true)'
    )


def to_table(value: Any) -> Any:
    """
    A match spec value as JSON and TOML write it (see L{from_table}): a single
    value as itself, an operator as a table of one key.
    """
    if isinstance(value, In):
        return {"in": sorted(value.values, key=repr)}
    if isinstance(value, Not):
        return {"not": to_table(value.value)}
    if isinstance(value, Glob):
        return {"glob": value.pattern}
    if isinstance(value, _Presence):
        return {"present" if value.present else "absent": True}
    return value


def _accepts(constraint: object, value: object) -> bool:
    if isinstance(constraint, Operator):
        return constraint.accepts(value)
    return value is not _MISSING and value == constraint


def _constrained(keywords: Mapping[str, object]) -> tuple[tuple[str, Hashable], ...]:
    items = []
    for name, value in sorted(keywords.items()):
        if value is None:
            continue
        if isinstance(value, type) and issubclass(value, Operator):
            raise ValueError(
                f"match spec value for {name!r} is the class {value.__name__}: "
                f"call it ({value.__name__}(...))"
            )
        items.append((name, _hashable(value, f"match spec value for {name!r}")))
    return tuple(items)


@frozen
class MatchSpec:
    """
    The constrained part of a handler's match spec.

    @ivar constraints: C{(keyword, value)} pairs sorted by keyword; keywords whose
        value was C{None} are left out, since they constrain nothing.
    """

    constraints: tuple[tuple[str, Hashable], ...] = field(default=())

    @classmethod
    def from_keywords(cls, keywords: Mapping[str, object]) -> MatchSpec:
        """
        Build a spec from C{add_event_handler}'s keyword arguments.

        @raise ValueError: if a constrained value is not hashable.
        """
        return cls(_constrained(keywords))

    @property
    def shape(self) -> tuple[str, ...]:
        """
        The keywords this spec constrains, sorted.
        """
        return tuple(name for name, _ in self.constraints)

    @property
    def values(self) -> tuple[Hashable, ...]:
        """
        The constrained values, in the order of L{shape}.
        """
        return tuple(value for _, value in self.constraints)

    def matches(self, keywords: Mapping[str, object]) -> bool:
        """
        Whether an event fired with C{keywords} matches this spec.  This is the
        reference definition; the index must agree with it.
        """
        return all(
            _accepts(value, keywords.get(name, _MISSING))
            for name, value in self.constraints
        )

    def refusal(self, keywords: Mapping[str, object]) -> str | None:
        """
        Why an event fired with C{keywords} does not match this spec (its
        first unmet constraint), or C{None} if it matches.
        """
        for name, constraint in self.constraints:
            value = keywords.get(name, _MISSING)
            if not _accepts(constraint, value):
                if value is _MISSING:
                    return f"{name}: absent, the spec wants {constraint!r}"
                if isinstance(constraint, Operator):
                    return f"{name}: {value!r} does not pass {constraint!r}"
                return f"{name}: {value!r} != {constraint!r}"
        return None

    def _compiled(
        self,
    ) -> tuple[
        tuple[str, ...], list[tuple[Hashable, ...]], tuple[tuple[str, Any], ...]
    ]:
        """
        How the index holds this spec: the keywords it looks up, the value
        tuples under which it is found, and the constraints left to check on
        each event.
        """
        shape: list[str] = []
        choices: list[tuple[Hashable, ...]] = []
        residual: list[tuple[str, Any]] = []
        for name, value in self.constraints:
            if not isinstance(value, Operator):
                shape.append(name)
                choices.append((value,))
            elif isinstance(value, In):
                shape.append(name)
                choices.append(tuple(value.values))
            else:
                residual.append((name, value))
        expansions = 1
        for options in choices:
            expansions *= len(options)
        if expansions > MAX_EXPANSION:
            # Too many combinations: index the equalities, check the In()s.
            kept = [i for i, options in enumerate(choices) if len(options) == 1]
            residual += [
                (shape[i], In(*choices[i])) for i in range(len(shape)) if i not in kept
            ]
            shape = [shape[i] for i in kept]
            choices = [choices[i] for i in kept]
        return tuple(shape), list(itertools.product(*choices)), tuple(residual)


def _no_key(keywords: Any) -> tuple[()]:
    return ()


def _key_getter(shape: tuple[str, ...]) -> Callable[[Any], Any]:
    """
    What looks up a shape's key in an event's keywords (raising C{KeyError} for
    one it lacks): the empty tuple for the empty shape, the value for a shape
    of one keyword, the tuple of values for a longer one.
    """
    if not shape:
        return _no_key
    return operator.itemgetter(*shape)


class RoutingIndex:
    """
    Handler ids indexed by match spec, answering "who matches these keywords?".

    Per shape there are two tables: handlers with nothing left to check once
    their values match (equality and C{In}), by value tuple; and the others,
    by value tuple and then by the operator constraints left to check, so that
    an event checks each group once, however many handlers share it.
    """

    def __init__(self) -> None:
        # shape -> key -> {handler_id: None}; dicts keep insertion order.  A
        # key is the tuple of the shape's values, or the value itself for a
        # shape of one keyword (what an itemgetter of the shape answers).
        self._by_shape: dict[
            tuple[str, ...], dict[tuple[Hashable, ...], dict[int, None]]
        ] = {}
        # shape -> values tuple -> residual constraints -> {handler_id: None}
        self._checked: dict[
            tuple[str, ...],
            dict[
                tuple[Hashable, ...],
                dict[tuple[tuple[str, Any], ...], dict[int, None]],
            ],
        ] = {}
        # (key getter, table) per shape of each kind, for match(): rebuilt
        # when a shape comes or goes
        self._plain_lookups: list[tuple[Callable[[Any], Any], dict[Any, Any]]] = []
        self._checked_lookups: list[tuple[Callable[[Any], Any], dict[Any, Any]]] = []

    def __len__(self) -> int:
        plain = sum(
            len(ids) for table in self._by_shape.values() for ids in table.values()
        )
        return plain + sum(
            len(ids)
            for table in self._checked.values()
            for groups in table.values()
            for ids in groups.values()
        )

    def _relist(self) -> None:
        self._plain_lookups = [
            (_key_getter(shape), table) for shape, table in self._by_shape.items()
        ]
        self._checked_lookups = [
            (_key_getter(shape), table) for shape, table in self._checked.items()
        ]

    def add(self, handler_id: int, spec: MatchSpec) -> None:
        """
        Index C{handler_id} under C{spec}.
        """
        shape, values, residual = spec._compiled()
        keys: list[Any] = [v for (v,) in values] if len(shape) == 1 else list(values)
        if not residual:
            table = self._by_shape.get(shape)
            if table is None:
                table = self._by_shape[shape] = {}
                self._relist()
            for key in keys:
                table.setdefault(key, {})[handler_id] = None
            return
        checked = self._checked.get(shape)
        if checked is None:
            checked = self._checked[shape] = {}
            self._relist()
        for key in keys:
            checked.setdefault(key, {}).setdefault(residual, {})[handler_id] = None

    def discard(self, handler_id: int, spec: MatchSpec) -> None:
        """
        Forget C{handler_id}, dropping any table left empty so that removed
        handlers leave nothing behind.
        """
        shape, values, residual = spec._compiled()
        keys: list[Any] = [v for (v,) in values] if len(shape) == 1 else list(values)
        if not residual:
            table = self._by_shape.get(shape)
            if table is None:
                return
            for key in keys:
                ids = table.get(key)
                if ids is None:
                    continue
                ids.pop(handler_id, None)
                if not ids:
                    del table[key]
            if not table:
                del self._by_shape[shape]
                self._relist()
            return
        checked = self._checked.get(shape)
        if checked is None:
            return
        for key in keys:
            groups = checked.get(key)
            if groups is None:
                continue
            ids = groups.get(residual)
            if ids is None:
                continue
            ids.pop(handler_id, None)
            if not ids:
                del groups[residual]
                if not groups:
                    del checked[key]
        if not checked:
            del self._checked[shape]
            self._relist()

    def match(self, keywords: Mapping[str, Hashable]) -> list[int]:
        """
        The ids of every handler whose spec matches C{keywords}, ascending (that
        is, in registration order).

        @raise TypeError: if a keyword value is not hashable.
        """
        found: list[int] = []
        for key_of, table in self._plain_lookups:
            try:
                ids = table.get(key_of(keywords))
            except KeyError:
                continue
            if ids:
                found.extend(ids)
        for key_of, checked in self._checked_lookups:
            try:
                groups = checked.get(key_of(keywords))
            except KeyError:
                continue
            if not groups:
                continue
            for residual, ids in groups.items():
                if all(
                    op.accepts(keywords.get(name, _MISSING)) for name, op in residual
                ):
                    found.extend(ids)
        if len(found) > 1:
            found.sort()
        return found

    def shapes(self) -> Iterable[tuple[str, ...]]:
        """
        The shapes currently indexed (for tests and introspection).
        """
        return {**self._by_shape, **self._checked}.keys()
