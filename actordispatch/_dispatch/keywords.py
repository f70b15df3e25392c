"""
The match keywords a dispatcher allows, and the checks of the keywords that
match specs and fired events carry: L{KeywordSet}.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping

from attrs import define, field

from actordispatch._core.match import Operator
from actordispatch._core.options import check_keyword_name

#: Keyword value types that need no check beyond their type: hashable, and
#: not a match operator.
_PLAIN_VALUES = frozenset({str, int, float, bool, type(None)})


def _checked_names(names: Iterable[str]) -> set[str]:
    if isinstance(names, str):
        raise ValueError("allowed_match_spec_keywords must be a collection of names")
    return {check_keyword_name(name) for name in names}


@define(eq=False)
class KeywordSet:
    """
    The allowed match keywords.
    """

    _names: set[str] = field(converter=_checked_names)

    def __contains__(self, name: object) -> bool:
        return name in self._names

    def frozen(self) -> frozenset[str]:
        """
        The allowed keywords now.
        """
        return frozenset(self._names)

    def add(self, name: str) -> None:
        """
        Allow C{name}.

        @raise ValueError: if it is not an identifier or is reserved.
        """
        self._names.add(check_keyword_name(name))

    def discard(self, name: str) -> None:
        """
        Disallow C{name} (the caller checked nothing uses it).
        """
        self._names.discard(name)

    def check(self, keywords: Mapping[str, object], what: str) -> None:
        """
        Check that C{keywords} (of C{what}: a match spec, an event...) are
        all allowed.

        @raise ValueError: naming those that are not.
        """
        if self._names.issuperset(keywords):
            return
        unknown = sorted(set(keywords) - self._names)
        if unknown:
            raise ValueError(
                f"{what} uses keywords that are not allowed: {', '.join(unknown)} "
                f"(allowed: {', '.join(sorted(self._names)) or 'none'})"
            )

    def plain(self, keywords: Mapping[str, Hashable]) -> bool:
        """
        Whether an event's keywords are all allowed and of plain types: the
        fast way past L{check_fired}.
        """
        if not self._names.issuperset(keywords):
            return False
        for value in keywords.values():
            if type(value) not in _PLAIN_VALUES:
                return False
        return True

    def check_fired(self, keywords: Mapping[str, object], what: str) -> None:
        """
        Check the keywords of an event (fired, or explained): allowed, each
        value hashable and a plain value, not a match operator.

        @raise ValueError: saying which is not.
        """
        self.check(keywords, what)
        for name, value in keywords.items():
            if type(value) in _PLAIN_VALUES:
                continue
            if isinstance(value, Operator):
                raise ValueError(
                    f"{what}: keyword {name!r} is {value!r}, a match operator; "
                    "an event carries plain values (operators belong in match "
                    "specs)"
                )
            try:
                hash(value)
            except TypeError:
                raise ValueError(
                    f"keyword {name!r} has an unhashable value {value!r}"
                ) from None
