"""
What crosses a RabbitMQ broker between a dispatcher and its worker hosts: the
names of the exchange and queues, the headers an event is published with, the
bindings a handler's match spec becomes, and the bodies of requests and replies.

Topology (one per I{namespace}, so that several dispatchers, and tests, can share
a broker):

  - one durable C{headers} exchange, C{<namespace>.events};
  - one durable queue per handler name, C{<namespace>.handler.<pkg.mod:attr>},
    which every worker host serving that handler consumes;
  - one binding per registration: C{x-match: all}, its phase under
    L{PHASE_HEADER}, and each constrained keyword.

A phase of an event is one message, published with the phase and the event's
keywords as headers.  The exchange copies it to the queue of every handler whose
bindings match; the message body lists the registrations the dispatcher expects
to run (the I{targets}), since the dispatcher stays the authority on who matches:
a worker runs only targets of the handler whose queue it took the message from.

Header values are type-tagged strings (C{"s:bob"}, C{"i:1"}, C{"f:0.5"}), so the
broker's equality is Python's: C{1}, C{1.0} and C{True} are the same key in a
Python dict and the same header here, while C{"1"} is not.

This module is pure: no Twisted, no broker.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

from attrs import frozen

from actordispatch._core.invocation import Invocation
from actordispatch._core.match import MatchSpec
from actordispatch._core.result import HandlerOutcome
from actordispatch._wire.codec import decode_result
from actordispatch._wire.commands import HANDLER_NAME
from actordispatch._wire.outcome_json import encode_items, outcome_to_json

#: The header that carries the phase (not an identifier: no keyword can clash).
PHASE_HEADER = "ad-phase"
#: The version of the message bodies below.
WIRE_VERSION = 1
#: The content type of requests and replies.
CONTENT_TYPE = "application/vnd.actordispatch+json"
#: RabbitMQ's longest queue or exchange name, in bytes.
MAX_NAME_BYTES = 255

_NAMESPACE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*\Z")


class WireError(ValueError):
    """
    A message from the broker is not what the protocol allows.
    """


def check_namespace(namespace: str) -> str:
    """
    @raise ValueError: unless C{namespace} is a dotted name fit for exchange
        and queue names (and does not start with RabbitMQ's reserved C{amq.}).
    """
    if (
        not isinstance(namespace, str)
        or not _NAMESPACE.match(namespace)
        or namespace.startswith("amq.")
        or len(namespace.encode()) > 100
    ):
        raise ValueError(
            f"namespace {namespace!r} must be 1-100 letters, digits, '_', '-' or "
            "'.', and must not start with 'amq.'"
        )
    return namespace


def exchange_name(namespace: str) -> str:
    """
    The headers exchange events are published to.
    """
    return f"{namespace}.events"


def queue_name(namespace: str, handler: str) -> str:
    """
    The queue of a handler, shared by every worker host that serves it.

    @raise ValueError: if C{handler} is not a handler name, or the queue name
        would be longer than RabbitMQ allows.
    """
    if not HANDLER_NAME.match(handler):
        raise ValueError(f"{handler!r} is not a handler name 'package.module:attr'")
    name = f"{namespace}.handler.{handler}"
    if len(name.encode()) > MAX_NAME_BYTES:
        raise ValueError(
            f"the queue name for handler {handler!r} is longer than "
            f"{MAX_NAME_BYTES} bytes; use a shorter namespace or handler name"
        )
    return name


def header_value(value: object) -> str | None:
    """
    The header value a keyword value is published (or bound) as, or C{None}
    when no match spec of an AMQP pool can equal it (then it is left out).
    """
    if isinstance(value, str):
        return "s:" + value
    if isinstance(value, (bool, int)):
        return f"i:{int(value)}"
    if isinstance(value, float):
        if value.is_integer():
            return f"i:{int(value)}"
        if math.isfinite(value):
            return f"f:{value!r}"
    return None


def event_headers(phase: str, keywords: Mapping[str, Hashable]) -> dict[str, str]:
    """
    The headers one phase of an event fired with C{keywords} is published with.
    """
    headers = {PHASE_HEADER: phase}
    for name, value in keywords.items():
        tagged = header_value(value)
        if tagged is not None:
            headers[name] = tagged
    return headers


def binding_arguments(phase: str, spec: MatchSpec) -> dict[str, str]:
    """
    The arguments of the binding that routes a phase's events matching C{spec}
    to a handler's queue.

    @raise ValueError: for a constrained value the exchange cannot compare as
        Python does (only strings, ints, bools and finite floats can be).
    """
    arguments = {"x-match": "all", PHASE_HEADER: phase}
    for name, value in spec.constraints:
        tagged = header_value(value)
        if tagged is None:
            raise ValueError(
                f"match spec value {value!r} for {name!r} cannot be routed by an "
                "AMQP pool: use strings, ints, bools or finite floats"
            )
        arguments[name] = tagged
    return arguments


def binding_matches(arguments: Mapping[str, str], headers: Mapping[str, str]) -> bool:
    """
    Whether a headers exchange routes a message with C{headers} through a
    binding with C{arguments} (C{x-match: all}; C{x-} keys take no part).
    """
    return all(
        headers.get(name) == value
        for name, value in arguments.items()
        if not name.startswith("x-")
    )


# --- requests: dispatcher -> worker hosts ------------------------------------------


@frozen
class Target:
    """
    One registration a request asks to run.

    @ivar timeout: seconds it may run (already resolved: never C{None}).
    """

    handler_id: int
    handler: str
    timeout: float


@frozen
class Request:
    """
    One phase of one event, as a worker host reads it.
    """

    phase: str
    targets: tuple[Target, ...]
    event: bytes

    def invocations(self, handler: str) -> list[Invocation]:
        """
        The invocations a host consuming C{handler}'s queue runs for it.
        """
        return [
            Invocation(
                handler_id=target.handler_id,
                handler=target.handler,
                phase=self.phase,
                event=self.event,
                timeout=target.timeout,
            )
            for target in self.targets
            if target.handler == handler
        ]


def encode_request(phase: str, targets: Sequence[Target], event: bytes) -> bytes:
    """
    A request body: one line of JSON saying what to run, then the event's
    bytes as the dispatcher encoded them (never re-encoded).
    """
    head = {
        "v": WIRE_VERSION,
        "phase": phase,
        "targets": [[t.handler_id, t.handler, t.timeout] for t in targets],
    }
    return json.dumps(head, separators=(",", ":")).encode() + b"\n" + event


def _number(value: object) -> bool:
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
    )


def decode_request(body: bytes, max_size: int) -> Request:
    """
    Read a request body (a worker host's side: the broker's messages are
    checked, not trusted).

    @raise WireError: naming what is wrong.
    """
    if len(body) > max_size:
        raise WireError(f"a request of {len(body)} bytes is over the cap {max_size}")
    head, newline, event = body.partition(b"\n")
    if not newline:
        raise WireError("a request has no event line")
    try:
        meta = json.loads(head)
    except (ValueError, RecursionError) as e:
        raise WireError(f"a request head that is not JSON: {e}") from None
    if not isinstance(meta, dict) or meta.get("v") != WIRE_VERSION:
        raise WireError(f"a request that is not version {WIRE_VERSION}")
    phase, raw = meta.get("phase"), meta.get("targets")
    if not isinstance(phase, str) or not isinstance(raw, list) or not raw:
        raise WireError("a request needs a phase and a list of targets")
    targets = []
    for item in raw:
        if not (
            isinstance(item, list)
            and len(item) == 3
            and isinstance(item[0], int)
            and not isinstance(item[0], bool)
            and isinstance(item[1], str)
            and HANDLER_NAME.match(item[1])
            and _number(item[2])
            and item[2] > 0
        ):
            raise WireError(f"a malformed target {item!r:.80}")
        targets.append(Target(item[0], item[1], float(item[2])))
    return Request(phase=phase, targets=tuple(targets), event=event)


# --- replies: worker host -> dispatcher ----------------------------------------------


def encode_reply(outcomes: Sequence[HandlerOutcome], host: str) -> bytes:
    """
    A reply body: the outcomes of the targets a host ran for one request.
    """
    items = [outcome_to_json(outcome) for outcome in outcomes]
    return b'{"v":%d,"host":%s,"outcomes":%s}' % (
        WIRE_VERSION,
        json.dumps(host).encode(),
        encode_items(items, "value"),
    )


def decode_reply(body: bytes, max_size: int) -> tuple[str, list[Any]]:
    """
    Read a reply body (the dispatcher's side: hosts are checked, not trusted).

    @return: the host's name and its outcome records (values decoded to plain
        JSON, as a child's results are), each still to be checked against the
        invocation it claims to answer (L{outcome_from_json}).
    @raise WireError: naming what is wrong.
    """
    if len(body) > max_size:
        raise WireError(f"a reply of {len(body)} bytes is over the cap {max_size}")
    try:
        reply = decode_result(body)
    except Exception as e:
        raise WireError(f"a reply that is not JSON: {type(e).__name__}: {e}") from None
    if (
        not isinstance(reply, dict)
        or reply.get("v") != WIRE_VERSION
        or not isinstance(reply.get("outcomes"), list)
    ):
        raise WireError(f"a reply that is not a version {WIRE_VERSION} outcome list")
    host = reply.get("host")
    return (host if isinstance(host, str) else "?")[:200], reply["outcomes"]
