"""
The AMP commands between the dispatcher (parent) and its children.

Both directions use these classes, so each declares its C{errors} map: a child's
known exception arrives in the parent as the same type.  A handler's own exception
is not an AMP error at all: it is a reply record with status C{"error"}, so it can
carry the type name, message and traceback text, and it never kills the child.

AMP caps a single value at 65,535 bytes; L{ChunkedBytes} spreads a larger value over
numbered keys of the same box, up to its own cap.
"""

from __future__ import annotations

from typing import Any

from twisted.protocols import amp

from actordispatch._core.errors import (
    BatchDecodingError,
    FollowUpDepthError,
    FollowUpError,
    HandlerImportError,
)

# The form of a handler name is the core's; the wire checks it, and it stays
# importable from here.
from actordispatch._core.names import HANDLER_NAME as HANDLER_NAME

#: AMP's limit on one value.
AMP_MAX_VALUE = 0xFFFF


class ChunkedBytes(amp.Argument):
    """
    A bytes value of any size up to C{max_size}, split over the keys C{name},
    C{name.1}, C{name.2}, ... of one box, each within AMP's 64 KiB value limit.
    """

    def __init__(self, max_size: int = 64 * 1024 * 1024, optional: bool = False):
        super().__init__(optional=optional)
        self.max_size = max_size

    def toBox(
        self,
        name: bytes,
        strings: dict[bytes, bytes],
        objects: dict[str, Any],
        proto: Any,
    ) -> None:
        value = objects.get(name.decode("ascii"))
        if value is None:
            if self.optional:
                return
            raise amp.InvalidSignature(f"missing chunked value {name!r}")
        if len(value) > self.max_size:
            raise ValueError(
                f"{name!r} is {len(value)} bytes, above the cap of {self.max_size}"
            )
        strings[name] = value[:AMP_MAX_VALUE]
        for index, start in enumerate(
            range(AMP_MAX_VALUE, len(value), AMP_MAX_VALUE), start=1
        ):
            strings[name + b".%d" % index] = value[start : start + AMP_MAX_VALUE]

    def fromBox(
        self,
        name: bytes,
        strings: dict[bytes, bytes],
        objects: dict[str, Any],
        proto: Any,
    ) -> None:
        first = strings.get(name)
        if first is None:
            if self.optional:
                return
            raise amp.InvalidSignature(f"missing chunked value {name!r}")
        parts = [first]
        size = len(first)
        if size > self.max_size:
            raise ValueError(f"{name!r} exceeds the cap of {self.max_size} bytes")
        index = 1
        while (part := strings.get(name + b".%d" % index)) is not None:
            size += len(part)
            if size > self.max_size:
                raise ValueError(f"{name!r} exceeds the cap of {self.max_size} bytes")
            parts.append(part)
            index += 1
        objects[name.decode("ascii")] = b"".join(parts)


class CheckHandler(amp.Command):
    """
    Ask a child to import a handler by name and confirm it is callable.

    Answers with the child's pid; fails with L{HandlerImportError} (message naming
    the handler and the reason) if the name cannot be imported.
    """

    commandName = b"actordispatch:CheckHandler"
    arguments = [(b"handler", amp.Unicode())]
    response = [(b"pid", amp.Integer())]
    errors = {HandlerImportError: b"HANDLER_IMPORT"}


class RunBatch(amp.Command):
    """
    Run a batch of invocations, one after the other, in the child.

    C{batch} is a JSON array of C{[handler name, event]} pairs (see
    L{actordispatch._wire.codec.encode_batch}); C{seq} numbers the batch for the
    spool (see L{actordispatch.children.host}).  The answer's C{records} is a JSON
    array with
    one record per invocation run, in order: C{{"s": status, "d": seconds,
    "v": value}} or C{{"s": "error", "d": seconds, "t": type, "m": message,
    "tb": traceback}}.  It may cover a prefix of the batch only: the child stopped
    early to keep its reply under its cap, and the rest never started.  C{rss}
    is the child's resident memory in bytes, sent only when its configuration
    asks (C{report_rss}); C{pid} is not sent by our children (the parent
    knows it; each key costs parsing on the hot path) and is ignored.
    """

    commandName = b"actordispatch:RunBatch"
    arguments = [(b"batch", ChunkedBytes()), (b"seq", amp.Integer(optional=True))]
    response = [
        (b"records", ChunkedBytes()),
        (b"pid", amp.Integer(optional=True)),
        (b"rss", amp.Integer(optional=True)),
    ]
    errors = {BatchDecodingError: b"BAD_BATCH"}


class Ping(amp.Command):
    """
    Ask a child whether it is up; answers with its pid and, as JSON, the sandbox
    layers it applied (layer name to C{"applied"} or why not).  (ampoule's own C{Ping}
    answers a text value where AMP wants bytes, which kills the child on
    Python 3.)
    """

    commandName = b"actordispatch:Ping"
    response = [(b"pid", amp.Integer()), (b"sandbox", amp.Unicode(optional=True))]


class FireFollowUp(amp.Command):
    """
    Child to parent, the one command a child may send: a handler running in
    the child fires a follow-up event through the dispatcher.

    C{event} is the event encoded by the codec (the parent decodes it to
    plain JSON values and encodes it again: type tags from a child are never
    rebuilt elsewhere); C{keywords} a JSON object of keyword to scalar;
    C{seq} the number of the batch the firing handler runs in (see
    L{RunBatch}); C{wait} whether the answer waits for the event's result.
    Answers C{number} (the event's number) and, when waiting, C{result}: the
    JSON object C{{"ok": bool, "outcomes": [outcome, ...]}}.  Fails with
    L{FollowUpError} (or L{FollowUpDepthError}) when refused.
    """

    commandName = b"actordispatch:FireFollowUp"
    arguments = [
        (b"event", ChunkedBytes()),
        (b"keywords", amp.Unicode()),
        (b"seq", amp.Integer()),
        (b"wait", amp.Boolean()),
        (b"on_error", amp.Unicode(optional=True)),
    ]
    response = [
        (b"number", amp.Integer()),
        (b"result", ChunkedBytes(optional=True)),
    ]
    errors = {FollowUpDepthError: b"FOLLOW_UP_DEPTH", FollowUpError: b"FOLLOW_UP"}
