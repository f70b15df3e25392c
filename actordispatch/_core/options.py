"""
The rules for a dispatcher's options, in one place: the dispatcher, the TOML
configuration and the AMP endpoint all check with these functions, so a value
one of them accepts is a value the others accept.

Each checker returns the value when it is good and raises L{OptionError}
otherwise.  The error keeps the option's name apart from the problem, so that
the dispatcher says C{"retries must be a non-negative int, not -1"} and the
configuration says C{"app.toml: handlers[0].retries: must be a non-negative
int, not -1"}.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from typing import Any, TypeVar

_T = TypeVar("_T")

#: Names of C{add_event_handler}'s own parameters and options (and
#: C{fire_event}'s event), which therefore cannot be match keywords.
RESERVED_KEYWORDS = frozenset(
    {
        "handler",
        "phase",
        "max_calls",
        "timeout",
        "retries",
        "pool",
        "event",
        "expires",
        "owner",
        "priority",
        "on_error",
    }
)

#: What C{on_overload} may be.
ON_OVERLOAD = ("fail", "wait")


class OptionError(ValueError):
    """
    An option's value is wrong.

    @ivar option: the option's name.
    @ivar problem: what is wrong, without the name (C{"must be ..., not 0"}).
    """

    def __init__(self, option: str, problem: str) -> None:
        super().__init__(f"{option} {problem}")
        self.option = option
        self.problem = problem


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_keyword_name(name: object) -> str:
    """
    A match keyword's name: an identifier that is not a reserved name.

    @raise OptionError: otherwise.
    """
    if not isinstance(name, str) or not name.isidentifier():
        raise OptionError("match keyword", f"{name!r} must be an identifier string")
    if name in RESERVED_KEYWORDS:
        raise OptionError(
            "match keyword",
            f"{name!r} collides with an option or parameter name "
            f"({', '.join(sorted(RESERVED_KEYWORDS))}); choose another",
        )
    return name


def check_max_in_flight(value: Any) -> int:
    """
    C{max_in_flight}: a positive int.
    """
    if not isinstance(value, int) or value < 1:
        raise OptionError("max_in_flight", f"must be a positive int, not {value!r}")
    return value


def check_order_by(value: _T, keywords: Collection[str]) -> _T:
    """
    C{order_by}: C{None} or one of the allowed match C{keywords}.
    """
    if value is not None and value not in keywords:
        raise OptionError("order_by", f"{value!r} is not an allowed match keyword")
    return value


def check_on_overload(value: _T) -> _T:
    """
    C{on_overload}: C{"fail"} or C{"wait"}.
    """
    if value not in ON_OVERLOAD:
        raise OptionError("on_overload", f"must be 'fail' or 'wait', not {value!r}")
    return value


def check_max_queue(value: Any) -> int | None:
    """
    C{max_queue}: C{None} (no bound) or a non-negative int.
    """
    if value is not None and (not isinstance(value, int) or value < 0):
        raise OptionError(
            "max_queue", f"must be a non-negative int or None, not {value!r}"
        )
    return value


def check_max_depth(value: Any) -> int:
    """
    C{max_depth}: an int, 0 or more.
    """
    if not _is_int(value) or value < 0:
        raise OptionError("max_depth", f"must be an int >= 0, not {value!r}")
    return value


def check_max_event_size(value: Any) -> int:
    """
    C{max_event_size}: an int, 0 or more (bytes).
    """
    if not _is_int(value) or value < 0:
        raise OptionError("max_event_size", f"must be an int >= 0, not {value!r}")
    return value


def check_max_calls(value: Any) -> int | None:
    """
    A handler's C{max_calls}: C{None} or a positive int.
    """
    if value is not None and (not _is_int(value) or value < 1):
        raise OptionError("max_calls", f"must be a positive int, not {value!r}")
    return value


def check_timeout(value: Any, *, finite: bool = False) -> float | None:
    """
    A handler's C{timeout}: C{None} or a positive number of seconds (and a
    finite one if C{finite}: a peer's, over AMP).
    """
    if value is not None and not (
        isinstance(value, (int, float))
        and value > 0
        and (not finite or math.isfinite(value))
    ):
        raise OptionError(
            "timeout", f"must be a positive number of seconds, not {value!r}"
        )
    return value


def check_retries(value: Any) -> int:
    """
    A handler's C{retries}: an int, 0 or more.
    """
    if not _is_int(value) or value < 0:
        raise OptionError("retries", f"must be a non-negative int, not {value!r}")
    return value


def check_expires(value: Any) -> float | None:
    """
    A handler's C{expires}: C{None} or a positive number of seconds.
    """
    if value is not None and (
        isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0
    ):
        raise OptionError(
            "expires", f"must be a positive number of seconds, not {value!r}"
        )
    return value


def check_priority(value: Any) -> int:
    """
    A handler's C{priority}: an int.
    """
    if not _is_int(value):
        raise OptionError("priority", f"must be an int, not {value!r}")
    return value


def check_owner(value: _T) -> _T:
    """
    A handler's C{owner}: anything hashable.
    """
    try:
        hash(value)
    except TypeError:
        raise OptionError("owner", f"must be hashable, not {value!r}") from None
    return value
