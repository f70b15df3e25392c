"""
The AMP child that runs handlers: L{HandlerHost}.

It imports handlers by name (and caches them), decodes events (rebuilding their
types), calls each handler with the event, and answers with one reply record per
invocation.  A handler may return a value, a Deferred, or be C{async def}.  A
handler's exception becomes an C{"error"} record with its type, message and
traceback; it never escapes to AMP, so it never kills the child.
"""

from __future__ import annotations

import importlib
import inspect
import os
from collections.abc import Callable
from time import perf_counter
from typing import Any

from ampoule.child import AMPChild
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.python.failure import Failure

from actordispatch._codec import (
    DEFAULT_MAX_RESULT_SIZE,
    decode_batch,
    encode_outcome_record,
    encode_value,
    join_records,
)
from actordispatch._commands import HANDLER_NAME, CheckHandler, Ping, RunBatch
from actordispatch._errors import BatchDecodingError, HandlerImportError

#: Longest traceback text sent back, in characters (the end is kept).
MAX_TRACEBACK = 16 * 1024


def error_type_name(kind: type) -> str:
    """
    The name an error type is reported under: C{"ValueError"} for builtins,
    C{"package.module.Name"} otherwise.
    """
    if kind.__module__ == "builtins":
        return kind.__qualname__
    return f"{kind.__module__}.{kind.__qualname__}"


def _cap(text: str) -> str:
    if len(text) <= MAX_TRACEBACK:
        return text
    return "...(truncated)...\n" + text[-MAX_TRACEBACK:]


def resolve_handler(name: str) -> Callable[[Any], Any]:
    """
    Import the handler called C{name} (C{"pkg.mod:attr"}).

    @raise HandlerImportError: naming the handler and the reason, if it cannot be
        imported or is not callable.
    """
    if not HANDLER_NAME.match(name):
        raise HandlerImportError(
            f"handler {name!r} is not a name of the form 'package.module:attribute'"
        )
    module_name, _, attribute_path = name.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
        for part in attribute_path.split("."):
            obj = getattr(obj, part)
    except Exception as e:
        raise HandlerImportError(
            f"cannot import handler {name!r}: {error_type_name(type(e))}: {e}"
        ) from None
    if not callable(obj):
        raise HandlerImportError(f"handler {name!r} is not callable: {obj!r}")
    handler: Callable[[Any], Any] = obj
    return handler


class HandlerHost(AMPChild):
    """
    An ampoule child that serves L{CheckHandler} and L{RunBatch}.
    """

    def __init__(self, max_result_size: str = str(DEFAULT_MAX_RESULT_SIZE)) -> None:
        super().__init__()
        self._handlers: dict[str, Callable[[Any], Any]] = {}
        self._max_result_size = int(max_result_size)

    def _handler(self, name: str) -> Callable[[Any], Any]:
        handler = self._handlers.get(name)
        if handler is None:
            handler = self._handlers[name] = resolve_handler(name)
        return handler

    @Ping.responder
    def ping(self) -> dict[str, Any]:
        return {"pid": os.getpid()}

    @CheckHandler.responder
    def check_handler(self, handler: str) -> dict[str, Any]:
        self._handler(handler)
        return {"pid": os.getpid()}

    @RunBatch.responder
    def run_batch(self, batch: bytes) -> dict[str, Any] | Deferred[dict[str, Any]]:
        try:
            items = decode_batch(batch)
        except Exception as e:
            raise BatchDecodingError(f"{error_type_name(type(e))}: {e}") from None
        return self._run_from(items, 0, [])

    def _run_from(
        self, items: list[tuple[str, Any]], index: int, records: list[str]
    ) -> dict[str, Any] | Deferred[dict[str, Any]]:
        """
        Run C{items[index:]} in order, synchronously while the handlers are
        synchronous, and continuing from a callback when one returns a Deferred
        or an awaitable.
        """
        while index < len(items):
            name, event = items[index]
            index += 1
            started = perf_counter()
            try:
                result = self._handler(name)(event)
            except (Exception, SystemExit) as e:
                records.append(self._error_record(started, Failure(e)))
                continue
            if isinstance(result, Deferred) or inspect.isawaitable(result):
                waiting: Deferred[Any] = (
                    result if isinstance(result, Deferred) else ensureDeferred(result)  # type: ignore[arg-type]
                )
                waiting.addBoth(self._settled, started, records)
                # Already fired (often): carry on in this loop rather than
                # nesting one call deeper per handler.
                fired: list[None] = []
                waiting.addCallback(fired.append)
                if fired:
                    continue
                return waiting.addCallback(self._resume, items, index, records)
            records.append(self._ok_record(started, result))
        return {"records": join_records(records), "pid": os.getpid()}

    def _resume(
        self, _: object, items: list[tuple[str, Any]], index: int, records: list[str]
    ) -> dict[str, Any] | Deferred[dict[str, Any]]:
        return self._run_from(items, index, records)

    def _settled(self, result: Any, started: float, records: list[str]) -> None:
        if isinstance(result, Failure):
            records.append(self._error_record(started, result))
        else:
            records.append(self._ok_record(started, result))

    def _ok_record(self, started: float, value: Any) -> str:
        try:
            encoded = encode_value(value, what="result")
        except Exception as e:
            return self._error_record(started, Failure(e))
        duration = perf_counter() - started
        cap = self._max_result_size
        # UTF-8 takes 1 to 4 bytes a character: encode only when it matters.
        size = len(encoded)
        if size * 4 > cap and size <= cap:
            size = len(encoded.encode("utf-8"))
        if size > cap:
            return encode_outcome_record(
                "error",
                duration,
                error=(
                    "actordispatch.ResultTooLargeError",
                    f"encoded result is at least {size} bytes, above the cap of "
                    f"{self._max_result_size} bytes",
                    "",
                ),
            )
        return encode_outcome_record("ok", duration, value_json=encoded)

    def _error_record(self, started: float, failure: Failure) -> str:
        duration = perf_counter() - started
        return encode_outcome_record(
            "error",
            duration,
            error=(
                error_type_name(failure.type),  # type: ignore[arg-type]
                _cap(str(failure.value)),
                _cap(failure.getTraceback()),
            ),
        )
