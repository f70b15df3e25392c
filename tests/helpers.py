"""
Handlers for the in-memory unit tests of the child host.  A child imports them
by name, as C{tests.helpers:NAME}; the tests run them in this process.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock, deferLater

#: The clock that L{later} and L{async_later} schedule on; tests advance it.
clock = Clock()

#: Not callable: naming it as a handler must fail.
not_callable = 42


class BoomError(Exception):
    """
    The error L{boom} raises, reported as C{"tests.helpers.BoomError"}.
    """


def echo(event: Any) -> Any:
    """
    Return the event unchanged.
    """
    return event


def double(event: int) -> int:
    """
    Return twice the event.
    """
    return event * 2


def size(event: Any) -> int:
    """
    Return the length of the event.
    """
    return len(event)


def boom(event: Any) -> None:
    """
    Always raise L{BoomError}, naming the event.
    """
    raise BoomError(f"boom for {event!r}")


def value_error(event: Any) -> None:
    """
    Always raise a builtin C{ValueError}, naming the event.
    """
    raise ValueError(f"bad value {event!r}")


def fired(event: Any) -> Deferred[Any]:
    """
    Return a Deferred that has already fired with the event.
    """
    return succeed(event)


def later(event: dict[str, Any]) -> Deferred[Any]:
    """
    Return a Deferred that fires with C{event["value"]} once L{clock} has
    advanced by C{event["delay"]} seconds.
    """
    return deferLater(clock, event["delay"], lambda: event["value"])


def later_boom(event: dict[str, Any]) -> Deferred[None]:
    """
    Return a Deferred that fails with L{BoomError} once L{clock} has advanced by
    C{event["delay"]} seconds.
    """
    return deferLater(clock, event["delay"], boom, event)


async def async_double(event: int) -> int:
    """
    Await an already fired Deferred, then return twice the event.
    """
    return await succeed(event * 2)


async def async_later(event: dict[str, Any]) -> Any:
    """
    Await L{clock} for C{event["delay"]} seconds, then return C{event["value"]}.
    """
    await deferLater(clock, event["delay"])
    return event["value"]


async def async_boom(event: Any) -> None:
    """
    Raise L{BoomError} from a coroutine.
    """
    raise BoomError(f"async boom for {event!r}")


def unencodable(event: Any) -> object:
    """
    Return an object the codec cannot carry.
    """
    return object()


def text(event: dict[str, Any]) -> str:
    """
    Return C{event["char"]} repeated C{event["count"]} times.
    """
    return str(event["char"]) * int(event["count"])


def lone_surrogate(event: Any) -> str:
    """
    Return text holding a lone surrogate, as C{os.fsdecode} makes of a file name
    that is not valid UTF-8.
    """
    return "file-\udcff.txt"


def exit_child(event: Any) -> None:
    """
    Raise C{SystemExit}, as a handler calling C{sys.exit} does.
    """
    raise SystemExit(3)


def deep(event: int) -> None:
    """
    Recurse C{event} levels, then raise L{BoomError}: a long traceback.
    """
    if event > 0:
        deep(event - 1)
    raise BoomError("deep down")
