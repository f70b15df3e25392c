"""
Follow-up events: a handler running in a child fires an event through the
dispatcher that runs it, and may wait for that event's result::

    from actordispatch.children import fire_event

    async def on_order(event):
        result = await fire_event({"order": event["id"]}, kind="invoice")
        return [o["status"] for o in result.outcomes]

The event goes to the parent over the child's own AMP connection
(L{FireFollowUp}); the dispatcher routes it like any event, at once (it does
not queue behind the event that fired it), one level deeper: past the
dispatcher's C{max_depth} it is refused with L{FollowUpDepthError}.  While a
handler waits, its child is I{parked} and another child serves in its place,
so waiting never deadlocks the pool, whatever the follow-up event reaches.

The event arrives in the handlers it reaches as plain JSON values (records
become dicts): types are rebuilt only for events the application fired.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Hashable
from typing import Any

from attrs import frozen
from twisted.internet.defer import Deferred, fail

from actordispatch._core.errors import FollowUpError
from actordispatch._wire.codec import (
    DEFAULT_MAX_EVENT_SIZE,
    decode_result,
    encode_event,
)

#: Sends a follow-up: C{(event bytes, keywords JSON, wait, on_error)} to the
#: answer of L{FireFollowUp}; set by the child's host while a batch runs.
Sender = Callable[[bytes, str, bool, "str | None"], "Deferred[dict[str, Any]]"]

_sender: Sender | None = None


def install(sender: Sender | None) -> None:
    """
    Route this process's follow-up events through C{sender} (the child's
    host calls this; C{None} when no handler is running).
    """
    global _sender
    _sender = sender


@frozen
class FollowUpResult:
    """
    What happened to a follow-up event a handler waited for.

    @ivar number: the event's number in the dispatcher.
    @ivar ok: whether every outcome is C{"ok"}.
    @ivar outcomes: one JSON object per (handler, phase), as the dispatcher's
        outcomes: C{handler_id}, C{handler}, C{phase}, C{status}, C{value},
        C{error_type}, C{error_message}, C{traceback}, C{duration}, C{pid},
        C{veto}.
    """

    number: int
    ok: bool
    outcomes: tuple[dict[str, Any], ...]

    @property
    def failures(self) -> tuple[dict[str, Any], ...]:
        """
        The outcomes that are not C{"ok"}.
        """
        return tuple(o for o in self.outcomes if o.get("status") != "ok")


def fire_event(
    event: Any,
    *,
    wait: bool = True,
    on_error: str | None = None,
    **keywords: Hashable,
) -> Deferred[Any]:
    """
    Fire C{event}, matched by C{keywords}, through the dispatcher, from a
    handler while it runs (a synchronous handler may fire without waiting;
    to wait, return the Deferred or C{await} it from an C{async def}
    handler).

    @param wait: C{True}: the Deferred fires with the event's
        L{FollowUpResult} once all its phases are done.  C{False}: it fires
        with the event's number once the dispatcher accepted it.
    @param on_error: C{"abort"} or C{"continue"}, as C{fire_event}'s.
    @return: a Deferred; it fails with L{FollowUpError} (or
        L{FollowUpDepthError}) when the dispatcher refuses the event: a
        keyword not allowed, an event too large or not encodable, too deep,
        too many follow-ups at once (for this child, or this handler), too
        many children already waiting (in the pool, or for this handler:
        C{max_waiting_per_handler}), or the dispatcher stopping.
    """
    if _sender is None:
        return fail(
            FollowUpError(
                "fire_event works only in a handler running in an actordispatch "
                "child, while it runs"
            )
        )
    try:
        data = encode_event(event, DEFAULT_MAX_EVENT_SIZE)
        encoded_keywords = json.dumps(keywords, allow_nan=False)
    except (ValueError, TypeError) as e:
        return fail(FollowUpError(f"the follow-up event cannot be sent: {e}"))
    sent = _sender(data, encoded_keywords, wait, on_error)
    if not wait:
        return sent.addCallback(lambda answer: answer["number"])
    return sent.addCallback(_result)


def _result(answer: dict[str, Any]) -> FollowUpResult:
    decoded = decode_result(answer["result"])
    return FollowUpResult(
        answer["number"], bool(decoded["ok"]), tuple(decoded["outcomes"])
    )
