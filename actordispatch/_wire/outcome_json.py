"""
Handler outcomes as JSON for peers that are not our own children: external
processes connected over AMP read them (L{outcome_to_json}), and worker hosts
behind a broker send them back (L{outcome_from_json}).

A peer is not trusted: L{outcome_from_json} accepts only the fields and types
an outcome has, and decodes values as the codec decodes a child's results.

This module is pure: no Twisted, no I/O.
"""

from __future__ import annotations

import math
from typing import Any

from actordispatch._core.errors import EventEncodingError
from actordispatch._core.invocation import Invocation
from actordispatch._core.result import STATUSES, DispatchResult, HandlerOutcome
from actordispatch._core.veto import MAX_VETO_REASON
from actordispatch._wire.codec import encode_value

#: The longest error type, message or traceback kept from a peer (characters).
MAX_TEXT = 64 * 1024


def outcome_to_json(outcome: HandlerOutcome) -> dict[str, Any]:
    """
    The JSON object of one outcome.
    """
    return {
        "handler_id": outcome.handler_id,
        "handler": outcome.handler,
        "phase": outcome.phase,
        "status": outcome.status,
        "value": outcome.value,
        "error_type": outcome.error_type,
        "error_message": outcome.error_message,
        "traceback": outcome.traceback,
        "duration": outcome.duration,
        "pid": outcome.pid,
        "veto": outcome.veto,
    }


def encode_items(items: list[dict[str, Any]], fragile: str) -> bytes:
    """
    A JSON array of C{items} for a peer: plain values as themselves, C{bytes}
    (and dicts with keys that are not strings) as the codec's tagged objects.
    An item whose C{fragile} entry the codec cannot carry gets its C{repr}
    there instead: one odd value must not cost the others theirs.
    """
    try:
        return encode_value(items, what=fragile).encode("utf-8")
    except EventEncodingError:
        pass
    parts = []
    for item in items:
        try:
            parts.append(encode_value(item, what=fragile))
        except EventEncodingError:
            safe = dict(item, **{fragile: repr(item[fragile])})
            parts.append(encode_value(safe, what=fragile))
    return ("[" + ",".join(parts) + "]").encode("utf-8")


def _text(record: dict[str, Any], key: str) -> str | None:
    value = record.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"{key} must be a string or null, not {type(value).__name__}")
    return value[:MAX_TEXT]


def _veto(record: dict[str, Any]) -> str | None:
    reason = _text(record, "veto")
    return None if reason is None else reason[:MAX_VETO_REASON]


def outcome_from_json(record: object, invocation: Invocation) -> HandlerOutcome:
    """
    The outcome a peer reported for C{invocation}, checked field by field.
    Its identity (handler id, name and phase) comes from C{invocation}, never
    from the peer; the record must name the same handler id.

    @param record: one decoded JSON object, as L{outcome_to_json} makes them
        (its C{value} already decoded by L{decode_result}).
    @raise ValueError: naming what is wrong with the record.
    """
    if not isinstance(record, dict):
        raise ValueError(f"an outcome must be a JSON object, not {record!r:.80}")
    if record.get("handler_id") != invocation.handler_id:
        raise ValueError(
            f"the outcome is for handler {record.get('handler_id')!r:.40}, "
            f"not {invocation.handler_id}"
        )
    status = record.get("status")
    if status not in STATUSES:
        raise ValueError(f"unknown status {status!r:.40}")
    duration = record.get("duration", 0.0)
    if (
        isinstance(duration, bool)
        or not isinstance(duration, (int, float))
        or not math.isfinite(duration)
        or duration < 0
    ):
        raise ValueError(f"duration must be a finite number >= 0, not {duration!r:.40}")
    pid = record.get("pid")
    if pid is not None and (isinstance(pid, bool) or not isinstance(pid, int)):
        raise ValueError(f"pid must be an int or null, not {pid!r:.40}")
    return HandlerOutcome(
        handler_id=invocation.handler_id,
        handler=invocation.handler,
        phase=invocation.phase,
        status=status,
        value=record.get("value") if status == "ok" else None,
        error_type=_text(record, "error_type"),
        error_message=_text(record, "error_message"),
        traceback=_text(record, "traceback"),
        duration=float(duration),
        pid=pid,
        veto=_veto(record) if status == "ok" else None,
    )


def encode_dispatch_result(result: DispatchResult) -> bytes:
    """
    A L{DispatchResult} as the JSON object C{{"ok": bool, "outcomes": [...]}}.
    """
    outcomes = encode_items([outcome_to_json(o) for o in result.outcomes], "value")
    return b'{"ok":%s,"outcomes":%s}' % (b"true" if result.ok else b"false", outcomes)
