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

This module is pure: no Twisted, no I/O.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping

from attrs import field, frozen


def _constrained(keywords: Mapping[str, object]) -> tuple[tuple[str, Hashable], ...]:
    items = []
    for name, value in sorted(keywords.items()):
        if value is None:
            continue
        try:
            hash(value)
        except TypeError:
            raise ValueError(
                f"match spec value for {name!r} must be hashable, got {value!r}"
            ) from None
        items.append((name, value))
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
        missing = object()
        return all(
            keywords.get(name, missing) == value for name, value in self.constraints
        )


class RoutingIndex:
    """
    Handler ids indexed by match spec, answering "who matches these keywords?".
    """

    def __init__(self) -> None:
        # shape -> values tuple -> {handler_id: None}; a dict keeps insertion order
        self._by_shape: dict[
            tuple[str, ...], dict[tuple[Hashable, ...], dict[int, None]]
        ]
        self._by_shape = {}

    def __len__(self) -> int:
        return sum(
            len(ids) for table in self._by_shape.values() for ids in table.values()
        )

    def add(self, handler_id: int, spec: MatchSpec) -> None:
        """
        Index C{handler_id} under C{spec}.
        """
        table = self._by_shape.setdefault(spec.shape, {})
        table.setdefault(spec.values, {})[handler_id] = None

    def discard(self, handler_id: int, spec: MatchSpec) -> None:
        """
        Forget C{handler_id}, dropping any table left empty so that removed
        handlers leave nothing behind.
        """
        table = self._by_shape.get(spec.shape)
        if table is None:
            return
        ids = table.get(spec.values)
        if ids is None:
            return
        ids.pop(handler_id, None)
        if not ids:
            del table[spec.values]
            if not table:
                del self._by_shape[spec.shape]

    def match(self, keywords: Mapping[str, Hashable]) -> list[int]:
        """
        The ids of every handler whose spec matches C{keywords}, ascending (that
        is, in registration order).

        @raise TypeError: if a keyword value is not hashable.
        """
        found: list[int] = []
        for shape, table in self._by_shape.items():
            try:
                key = tuple([keywords[name] for name in shape])
            except KeyError:
                continue
            ids = table.get(key)
            if ids:
                found.extend(ids)
        if len(found) > 1:
            found.sort()
        return found

    def shapes(self) -> Iterable[tuple[str, ...]]:
        """
        The shapes currently indexed (for tests and introspection).
        """
        return self._by_shape.keys()
