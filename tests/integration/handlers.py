"""
Handlers for the integration tests.  They run in real child processes, which
import them as C{tests.integration.handlers:NAME}.
"""

from __future__ import annotations

import hashlib
import os
import time
from typing import Any

from twisted.internet.task import deferLater


def describe(event: Any) -> dict[str, Any]:
    """
    Say what the child received: the event's type, its fields, and the pid.
    """
    kind = type(event)
    fields = event._asdict() if hasattr(event, "_asdict") else event
    return {
        "type": f"{kind.__module__}:{kind.__qualname__}",
        "fields": fields,
        "pid": os.getpid(),
    }


def slow(event: dict[str, Any]) -> float:
    """
    Sleep C{event["seconds"]}, then return the wall-clock time it finished.
    """
    time.sleep(event.get("seconds", 0.5))
    return time.time()


def now(event: Any) -> float:
    """
    Return the wall-clock time it started.
    """
    return time.time()


def boom(event: Any) -> None:
    """
    Always raise.
    """
    raise ValueError(f"boom for {event!r}")


async def async_double(event: dict[str, int]) -> int:
    """
    An C{async def} handler that waits on the child's reactor.
    """
    from twisted.internet import reactor

    await deferLater(reactor, 0.01, lambda: None)  # type: ignore[arg-type]
    return event["n"] * 2


def digest(event: dict[str, Any]) -> dict[str, Any]:
    """
    Return the size and SHA-256 of C{event["blob"]} (bytes).
    """
    blob = event["blob"]
    return {"size": len(blob), "sha256": hashlib.sha256(blob).hexdigest()}


def echo(event: Any) -> Any:
    """
    Return the event itself.
    """
    return event


def environment(event: Any) -> list[str]:
    """
    Return the names of the child's environment variables.
    """
    return sorted(os.environ)


def hang(event: Any) -> None:
    """
    Never finish (in C code: the child must be killed).
    """
    time.sleep(3600)


def exit_now(event: Any) -> None:
    """
    End the child process abruptly, mid-call.
    """
    os._exit(3)


def pid(event: Any) -> int:
    """
    Return the child's pid.
    """
    return os.getpid()


def mark_then_sleep(event: dict[str, Any]) -> int:
    """
    Append this child's pid to the file C{event["mark"]} (so a test can see the
    handler started, and how many times), sleep C{event["seconds"]}, then
    return the pid.
    """
    with open(event["mark"], "a") as mark:
        mark.write(f"{os.getpid()}\n")
    time.sleep(event.get("seconds", 0.0))
    return os.getpid()


async def mark_then_wait(event: dict[str, Any]) -> int:
    """
    As L{mark_then_sleep}, but waiting on the child's reactor rather than
    blocking it.
    """
    from twisted.internet import reactor

    with open(event["mark"], "a") as mark:
        mark.write(f"{os.getpid()}\n")
    await deferLater(reactor, event.get("seconds", 0.0), lambda: None)  # type: ignore[arg-type]
    return os.getpid()


def span(event: Any) -> list[float]:
    """
    Sleep 50 ms; return when this ran, as C{[start, end]} on the machine's
    monotonic clock (shared by all processes).
    """
    start = time.monotonic()
    time.sleep(0.05)
    return [start, time.monotonic()]


def gate(event: dict[str, Any]) -> Any:
    """
    Return C{Veto(event["veto"])} when the event asks for one, else C{"pass"}.
    """
    from actordispatch import Veto

    if event.get("veto"):
        return Veto(event["veto"])
    return "pass"


async def ask(event: dict[str, Any]) -> dict[str, Any]:
    """
    Fire a follow-up event C{{"question": ...}} with the event's C{keywords}
    (by default C{kind="answer"}), wait for it, and return what its handlers
    said (or the refusal).
    """
    from actordispatch.children import fire_event

    keywords = event.get("keywords", {"kind": "answer"})
    try:
        result = await fire_event({"question": event.get("question")}, **keywords)
    except Exception as e:
        return {"refused": type(e).__name__, "message": str(e)}
    return {
        "number": result.number,
        "ok": result.ok,
        "values": [o["value"] for o in result.outcomes],
        "pid": os.getpid(),
    }


def answer(event: dict[str, Any]) -> dict[str, Any]:
    """
    Answer a question (the event arrives as plain JSON values).
    """
    return {"answer": f"re: {event['question']}", "pid": os.getpid()}


async def recurse(event: dict[str, Any]) -> Any:
    """
    Fire the same kind of event one level down and wait for it: a loop, which
    the dispatcher's max_depth cuts.  Returns how deep it got.
    """
    from actordispatch import ActorDispatchError
    from actordispatch.children import fire_event

    level = event["level"]
    try:
        result = await fire_event({"level": level + 1}, kind="loop")
    except ActorDispatchError as e:
        return {"cut_at": level, "error": type(e).__name__, "message": str(e)}
    return result.outcomes[0]["value"]


def notify_later(event: dict[str, Any]) -> int:
    """
    Fire a follow-up event without waiting for it; return at once.
    """
    from actordispatch.children import fire_event

    fire_event({"mark": event["mark"]}, wait=False, kind="note")
    return os.getpid()


def huge_result(event: dict[str, Any]) -> str:
    """
    Return a string of C{event["mib"]} MiB: far above any result cap.
    """
    return "x" * (event["mib"] << 20)


_hoard: list[bytes] = []


def hoard_then_return(event: dict[str, Any]) -> str:
    """
    Take all of the child's address space but C{event["leave_mib"]} MiB, for
    good, then return a string of C{event["mib"]} MiB (below the cap), leaving
    the encoder little room.
    """
    import resource

    if not _hoard:
        limit = resource.getrlimit(resource.RLIMIT_AS)[0]
        with open("/proc/self/statm", "rb") as statm:
            used = int(statm.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        _hoard.append(b"h" * (limit - used - (event["leave_mib"] << 20)))
    return "y" * (event["mib"] << 20)


async def storm(event: dict[str, Any]) -> dict[str, Any]:
    """
    Fire a follow-up event C{{"seconds": ...}} (C{kind="storm_answer"}) and
    wait for it: one drop of a follow-up storm.  Returns whether it was
    answered, or the refusal.
    """
    from actordispatch.children import fire_event

    try:
        result = await fire_event(
            {"seconds": event.get("seconds", 0.2)}, kind="storm_answer"
        )
    except Exception as e:
        return {"refused": type(e).__name__, "message": str(e)}
    return {"answered": result.ok}
