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
import json
import os
import resource
from collections.abc import Callable
from functools import partial
from time import monotonic
from typing import Any

from ampoule.child import AMPChild
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.python.failure import Failure

from actordispatch._core.errors import BatchDecodingError, HandlerImportError
from actordispatch._core.veto import Veto
from actordispatch._wire.codec import (
    DEFAULT_MAX_REPLY_SIZE,
    DEFAULT_MAX_RESULT_SIZE,
    decode_batch,
    encode_outcome_record,
    encode_value,
    encoded_size_floor,
    join_records,
)
from actordispatch._wire.commands import (
    HANDLER_NAME,
    CheckHandler,
    FireFollowUp,
    Ping,
    RunBatch,
)
from actordispatch.children import followup
from actordispatch.children.spool import SpoolWriter

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


_statm: int | None = None


def _statm_bytes(field: int) -> int | None:
    """
    Field C{field} of C{/proc/self/statm} (0: address space, 1: resident set),
    in bytes, or C{None} where C{/proc} has no answer.  (One C{pread} on a
    descriptor kept open.)
    """
    global _statm
    try:
        if _statm is None:
            _statm = os.open("/proc/self/statm", os.O_RDONLY | os.O_CLOEXEC)
        return int(os.pread(_statm, 128, 0).split()[field]) * _PAGE_SIZE
    except (OSError, ValueError, IndexError):
        return None


def resident_memory() -> int | None:
    """
    This process's resident set size in bytes, or C{None} where C{/proc} has no
    answer (it is read after every batch).
    """
    return _statm_bytes(1)


_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")

#: Results below this many bytes are encoded the fast way whatever the memory.
_SMALL_RESULT = 1 << 20


def _memory_is_tight(size: int) -> bool:
    """
    Whether encoding a result of about C{size} bytes could exhaust this
    process's address-space limit, if it has one: the fast encoder crashes the
    process when an allocation fails (see L{encode_value}'s C{memory_safe}).
    """
    if size < _SMALL_RESULT:
        return False
    limit = resource.getrlimit(resource.RLIMIT_AS)[0]
    if limit == resource.RLIM_INFINITY:
        return False
    used = _statm_bytes(0)
    if used is None:
        return True
    # The encoder's buffers grow by doubling, and the text is copied once more.
    return limit - used < 8 * size + (64 << 20)


#: The record of an invocation whose handler returned C{None}, but for its
#: duration (the same text L{encode_outcome_record} makes).
_NONE_RECORD = '{"s":"ok","d":%r,"v":null}'

#: Room kept in a batch's reply for one error record (capped message and
#: traceback, plus framing).
_ERROR_RECORD_ROOM = 4 * MAX_TRACEBACK + 1024


class _BatchRun:
    """
    One L{RunBatch} being served: its records so far, mirrored to the spool
    (see L{actordispatch.children.spool}) when it has one.
    """

    def __init__(
        self,
        items: list[tuple[str, Any]],
        seq: int,
        spool: SpoolWriter | None,
        room: int,
    ) -> None:
        self.items = items
        self.index = 0
        self.records: list[str] = []
        self._room = room
        self._used = 0
        self._spool = spool
        if spool is not None:
            spool.start(seq, monotonic())

    def add(self, record: str, end: float) -> None:
        """
        Keep the record of the invocation that ended at C{end} (monotonic).
        """
        self.records.append(record)
        self._used += len(record) + 1
        if self._spool is not None:
            self._spool.line(b"%r %s" % (end, record.encode("utf-8")))

    def has_room(self, result_cap: int) -> bool:
        """
        Whether the next invocation's record is sure to fit in the reply.
        """
        return self._used + result_cap + _ERROR_RECORD_ROOM <= self._room


class HandlerHost(AMPChild):
    """
    An ampoule child that serves L{CheckHandler} and L{RunBatch}.

    @param config: JSON text with C{max_result_size} (bytes, one result),
        C{max_reply_size} (bytes, one batch's reply), C{spool_fd} (the
        descriptor of the spool file, if any) and C{report_rss} (whether each
        answer carries the child's resident memory; by default it does).
    """

    def __init__(self, config: str = "{}") -> None:
        super().__init__()
        settings = json.loads(config)
        self._handlers: dict[str, Callable[[Any], Any]] = {}
        self._max_result_size = int(
            settings.get("max_result_size", DEFAULT_MAX_RESULT_SIZE)
        )
        self._max_reply_size = int(
            settings.get("max_reply_size", DEFAULT_MAX_REPLY_SIZE)
        )
        spool_fd = settings.get("spool_fd")
        self._spool = None if spool_fd is None else SpoolWriter(int(spool_fd))
        self._report_rss = bool(settings.get("report_rss", True))
        self._sandbox_report: dict[str, str] = settings.get("sandbox_report", {})
        for name in settings.get("preload", ()):
            # Warm up: import the pool's handlers before the first ping is
            # answered.  A failure here is reported when the handler runs.
            try:
                self._handler(name)
            except HandlerImportError:
                pass

    def _handler(self, name: str) -> Callable[[Any], Any]:
        handler = self._handlers.get(name)
        if handler is None:
            handler = self._handlers[name] = resolve_handler(name)
        return handler

    @Ping.responder
    def ping(self) -> dict[str, Any]:
        return {"pid": os.getpid(), "sandbox": json.dumps(self._sandbox_report)}

    @CheckHandler.responder
    def check_handler(self, handler: str) -> dict[str, Any]:
        self._handler(handler)
        return {"pid": os.getpid()}

    @RunBatch.responder
    def run_batch(
        self, batch: bytes, seq: int | None = None
    ) -> dict[str, Any] | Deferred[dict[str, Any]]:
        try:
            items = decode_batch(batch)
        except Exception as e:
            raise BatchDecodingError(f"{error_type_name(type(e))}: {e}") from None
        # A batch of one needs no spool: if the child dies, that one invocation
        # was the one running, and it started when the batch was sent.
        spool = self._spool if seq is not None and len(items) > 1 else None
        run = _BatchRun(items, seq or 0, spool, self._max_reply_size)
        # Its handlers may fire follow-up events while it runs (one batch runs
        # at a time in a child: the parent sends the next after the answer).
        followup.install(None if seq is None else partial(self._fire_follow_up, seq))
        return self._run_from(run)

    def _fire_follow_up(
        self, seq: int, event: bytes, keywords: str, wait: bool, on_error: str | None
    ) -> Deferred[dict[str, Any]]:
        arguments: dict[str, Any] = {
            "event": event,
            "keywords": keywords,
            "seq": seq,
            "wait": wait,
        }
        if on_error is not None:
            arguments["on_error"] = on_error
        return self.callRemote(FireFollowUp, **arguments)

    def _run_from(self, run: _BatchRun) -> dict[str, Any] | Deferred[dict[str, Any]]:
        """
        Run the rest of C{run}'s items in order, synchronously while the handlers
        are synchronous, continuing from a callback when one returns a Deferred
        or an awaitable.  Stops early (the parent runs the rest elsewhere) when
        the reply might outgrow its cap.
        """
        items = run.items
        handlers = self._handlers
        cap = self._max_result_size
        while run.index < len(items):
            if run.index and not run.has_room(cap):
                break
            name, event = items[run.index]
            run.index += 1
            started = monotonic()
            try:
                handler = handlers.get(name)
                if handler is None:
                    handler = self._handler(name)
                result = handler(event)
            except (Exception, SystemExit) as e:
                run.add(self._error_record(started, Failure(e)), monotonic())
                continue
            if result is None:
                # What most handlers return: its record without the codec.
                end = monotonic()
                run.add(_NONE_RECORD % (end - started), end)
                continue
            if isinstance(result, Deferred) or inspect.isawaitable(result):
                waiting: Deferred[Any] = (
                    result if isinstance(result, Deferred) else ensureDeferred(result)  # type: ignore[arg-type]
                )
                waiting.addBoth(self._settled, started, run)
                # Already fired (often): carry on in this loop rather than
                # nesting one call deeper per handler.
                fired: list[None] = []
                waiting.addCallback(fired.append)
                if fired:
                    continue
                return waiting.addCallback(lambda _: self._run_from(run))
            record = self._ok_record(started, result)
            run.add(record, monotonic())
        followup.install(None)
        answer: dict[str, Any] = {"records": join_records(run.records)}
        if self._report_rss:
            rss = resident_memory()
            if rss is not None:
                answer["rss"] = rss
        return answer

    def _settled(self, result: Any, started: float, run: _BatchRun) -> None:
        if isinstance(result, Failure):
            record = self._error_record(started, result)
        else:
            record = self._ok_record(started, result)
        run.add(record, monotonic())

    def _ok_record(self, started: float, value: Any) -> str:
        if isinstance(value, Veto):
            return encode_outcome_record("ok", monotonic() - started, veto=value.reason)
        cap = self._max_result_size
        floor = encoded_size_floor(value, cap)
        if floor > cap:
            # Refused before the encoder allocates anything for it.
            return self._too_large(started, floor)
        try:
            encoded = encode_value(
                value, what="result", memory_safe=_memory_is_tight(floor)
            )
        except Exception as e:
            return self._error_record(started, Failure(e))
        duration = monotonic() - started
        # UTF-8 takes 1 to 4 bytes a character: encode only when it matters.
        size = len(encoded)
        if size * 4 > cap and size <= cap:
            size = len(encoded.encode("utf-8"))
        if size > cap:
            return self._too_large(started, size)
        return encode_outcome_record("ok", duration, value_json=encoded)

    def _too_large(self, started: float, size: int) -> str:
        return encode_outcome_record(
            "error",
            monotonic() - started,
            error=(
                "actordispatch.ResultTooLargeError",
                f"encoded result is at least {size} bytes, above the cap of "
                f"{self._max_result_size} bytes",
                "",
            ),
        )

    def _error_record(self, started: float, failure: Failure) -> str:
        duration = monotonic() - started
        return encode_outcome_record(
            "error",
            duration,
            error=(
                error_type_name(failure.type),  # type: ignore[arg-type]
                _cap(str(failure.value)),
                _cap(failure.getTraceback()),
            ),
        )
