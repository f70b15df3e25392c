"""
Events and results to bytes and back: JSON with type tags.  Never pickle.

Events travel parent -> child.  JSON cannot say "namedtuple" or "datetime", so
before encoding, values JSON lacks are replaced by tagged objects::

    {"__ad__": "namedtuple", "type": "myapp.events:UserEvent", "fields": {...}}

The child (L{decode_event}) rebuilds the tagged types, importing the named class
when it can and falling back to an equivalent plain structure when it cannot.

Results travel child -> parent, and the child is not trusted: L{decode_result}
turns every tag into plain JSON values (records become dicts, tuples and sets
become lists, dates become ISO strings), so the parent never builds a class named
by bytes a child sent.  The one non-JSON type it keeps is C{bytes}.

Invocations are batched: L{encode_batch} frames many C{(handler, event)} pairs in
one JSON array, reusing each event's bytes (encoded once per event, not once per
handler), and L{encode_outcome_record}/L{join_records} frame the replies.

This module is pure: no Twisted, no processes.
"""

from __future__ import annotations

import base64
import collections
import dataclasses
import datetime
import importlib
import json
import math
import types
from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Any, Union

import attrs

try:
    import orjson
except ImportError:  # pragma: no cover - orjson is a dependency; be robust anyway
    orjson = None  # type: ignore[assignment]

try:
    import msgspec.json
except ImportError:  # pragma: no cover - msgspec is a dependency; be robust anyway
    msgspec = None  # type: ignore[assignment]

from actordispatch._core.errors import EventEncodingError, EventTooLargeError

TAG = "__ad__"

#: Default cap on one encoded event (bytes).
DEFAULT_MAX_EVENT_SIZE = 32 * 1024 * 1024
#: Default cap on one encoded handler result (bytes).
DEFAULT_MAX_RESULT_SIZE = 16 * 1024 * 1024
#: Default cap on a child's reply to one batch (bytes): a child stops a batch
#: early rather than outgrow it, and the parent runs the rest elsewhere.
DEFAULT_MAX_REPLY_SIZE = 64 * 1024 * 1024

_encoder = json.JSONEncoder(
    ensure_ascii=False, allow_nan=False, separators=(",", ":"), check_circular=True
)
_ascii_encoder = json.JSONEncoder(
    ensure_ascii=True, allow_nan=False, separators=(",", ":"), check_circular=True
)


def _type_name(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


#: Where a value is in an event: the top-level name, or C{(parent, format,
#: part)}, formatted only when an error names it (building the text for every
#: value cost more than the rest of the encoding).
Path = Union[str, tuple[Any, str, Any]]


def _where(path: Path) -> str:
    """
    The text of C{path}: C{event["items"][3].name}.
    """
    parts = []
    while not isinstance(path, str):
        path, form, part = path
        parts.append(form.format(part))
    return path + "".join(reversed(parts))


def _tag(value: Any, path: Path) -> Any:
    """
    Replace, recursively, every value JSON cannot carry by a tagged object.
    C{path} says where C{value} is, for error messages only (see L{_where}).
    """
    kind = type(value)
    if value is None or kind is str or kind is int or kind is bool:
        return value
    if kind is float:
        if not math.isfinite(value):
            raise EventEncodingError(f"{_where(path)}: non-finite float {value!r}")
        return value
    if kind is list:
        return [_tag(item, (path, "[{!r}]", i)) for i, item in enumerate(value)]
    if kind is dict:
        if TAG not in value:
            plain: dict[str, Any] = {}
            for key, item in value.items():
                if type(key) is not str:
                    break
                # Plain values as they are: no call, no path (most of them).
                of = type(item)
                plain[key] = (
                    item
                    if of is str or of is int or of is bool or item is None
                    else _tag(item, (path, "[{!r}]", key))
                )
            else:
                return plain
        return {
            TAG: "dict",
            "items": [
                [_tag(key, (path, " key", None)), _tag(item, (path, "[{!r}]", key))]
                for key, item in value.items()
            ],
        }
    if isinstance(value, tuple):
        fields = getattr(value, "_fields", None)
        if fields is not None:
            return {
                TAG: "namedtuple",
                "type": _type_name(kind),
                "fields": {
                    name: _tag(item, (path, ".{}", name))
                    for name, item in zip(fields, value, strict=True)
                },
            }
        return {TAG: "tuple", "items": [_tag(item, path) for item in value]}
    if isinstance(value, (set, frozenset)):
        return {
            TAG: "frozenset" if isinstance(value, frozenset) else "set",
            "items": [_tag(item, path) for item in value],
        }
    if isinstance(value, (bytes, bytearray)):
        return {TAG: "bytes", "b64": base64.b64encode(value).decode("ascii")}
    if isinstance(value, datetime.datetime):
        return {TAG: "datetime", "iso": value.isoformat()}
    if isinstance(value, datetime.date):
        return {TAG: "date", "iso": value.isoformat()}
    if isinstance(value, datetime.time):
        return {TAG: "time", "iso": value.isoformat()}
    if isinstance(value, datetime.timedelta):
        return {
            TAG: "timedelta",
            "days": value.days,
            "seconds": value.seconds,
            "microseconds": value.microseconds,
        }
    if attrs.has(kind):
        return {
            TAG: "attrs",
            "type": _type_name(kind),
            "fields": {
                f.alias: _tag(getattr(value, f.name), (path, ".{}", f.name))
                for f in attrs.fields(kind)
                if f.init
            },
        }
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            TAG: "dataclass",
            "type": _type_name(kind),
            "fields": {
                f.name: _tag(getattr(value, f.name), (path, ".{}", f.name))
                for f in dataclasses.fields(value)
                if f.init
            },
        }
    if isinstance(value, (str, int, float)):
        # Subclasses (IntEnum, StrEnum, ...) travel as their base value.
        return _tag(
            (
                str
                if isinstance(value, str)
                else int
                if isinstance(value, int)
                else float
            )(value),
            path,
        )
    if isinstance(value, (list, dict)):
        return _tag(list(value) if isinstance(value, list) else dict(value), path)
    raise EventEncodingError(
        f"{_where(path)}: cannot encode a value of type {_type_name(kind)}; "
        "supported are JSON values, tuples, namedtuples, sets, bytes, datetime values, "
        "attrs classes and dataclasses"
    )


def _dumps(tagged: Any, memory_safe: bool = False) -> bytes:
    """
    Tagged values to UTF-8 JSON: orjson when it can (10-40x faster than the
    standard library on our event shapes, see docs/performance), the standard
    library for what orjson refuses (integers beyond 64 bits, lone surrogates,
    which then travel as C{\\u} escapes).  The bytes may differ between the two
    (C{1e+16} vs C{1e16}); the values they decode to do not.

    With C{memory_safe}, only the standard library: orjson crashes the process
    (SIGSEGV) when an allocation fails, where the standard library raises
    C{MemoryError}, which matters in a child near its address-space limit.
    """
    if orjson is not None and not memory_safe:
        try:
            return orjson.dumps(tagged)
        except (TypeError, orjson.JSONEncodeError):
            pass
    text = _encoder.encode(tagged)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return _ascii_encoder.encode(tagged).encode("ascii")


def encode_value(value: Any, *, what: str = "event", memory_safe: bool = False) -> str:
    """
    Encode C{value} as tagged JSON text.

    @param memory_safe: encode so that running out of memory raises
        C{MemoryError} rather than crashing the process (slower; see
        L{_dumps}).
    @raise EventEncodingError: if C{value} holds something the codec cannot carry.
    """
    if value is None:
        return "null"  # what most handlers return
    return _encode(value, what, memory_safe).decode("utf-8")


def encoded_size_floor(value: Any, limit: int) -> int:
    """
    A lower bound of the size of C{value}'s JSON, counted without encoding it
    (a string counts its characters, bytes their base64, every other item one
    byte), which stops counting once past C{limit}: so a result far above its
    cap is refused before the encoder allocates anything for it.
    """
    total = 0
    pending = [value]
    seen: set[int] = set()  # containers counted already (shared, or circular)
    while pending:
        item = pending.pop()
        kind = type(item)
        if kind is str:
            total += len(item) + 2
        elif kind is bytes or kind is bytearray or kind is memoryview:
            total += len(item) * 4 // 3 + 2
        elif kind is dict or kind is list or kind is tuple or kind is set:
            if id(item) in seen:
                continue
            seen.add(id(item))
            # Brackets and commas; a dict's colons too.
            total += (2 * len(item) if kind is dict else len(item)) + 1 if item else 2
            if kind is dict:
                pending.extend(item.keys())
                pending.extend(item.values())
            else:
                pending.extend(item)
        else:
            total += 1  # numbers, None, records: counted as their smallest
        if total > limit:
            break
    return total


def _plain(value: Any) -> bool:
    """
    Whether C{value} is JSON as it is, nothing to tag: dicts (of text keys, none
    of them the tag's), lists, text, integers, booleans, C{None} and finite
    floats, of these very types.  Checking costs less than half of tagging,
    which copies every container (a nested order of 2.4 KiB: 19 against 43 us).
    """
    kind = type(value)
    if kind is dict:
        if TAG in value:
            return False
        for key in value:
            if type(key) is not str:
                return False
        items: Any = value.values()
    elif kind is list:
        items = value
    elif kind is float:
        return math.isfinite(value)
    else:
        return kind is str or kind is int or kind is bool or value is None
    for item in items:
        of = type(item)
        if not (
            of is str
            or of is int
            or of is bool
            or item is None
            or (math.isfinite(item) if of is float else _plain(item))
        ):
            return False
    return True


def _encode(value: Any, what: str, memory_safe: bool = False) -> bytes:
    try:
        plain = _plain(value)
    except RecursionError:
        plain = False  # too deep, or circular: tagging says which
    try:
        return _dumps(value if plain else _tag(value, what), memory_safe)
    except EventEncodingError:
        raise
    except (ValueError, TypeError, RecursionError) as e:
        raise EventEncodingError(f"{what}: cannot encode: {e}") from None


def encode_event(value: Any, max_size: int = DEFAULT_MAX_EVENT_SIZE) -> bytes:
    """
    Encode an event for the children, refusing one above C{max_size} bytes.

    @raise EventEncodingError: if the event holds an unsupported value.
    @raise EventTooLargeError: if the encoded event exceeds C{max_size}.
    """
    data = _encode(value, "event")
    if len(data) > max_size:
        raise EventTooLargeError(
            f"encoded event is {len(data)} bytes, above the cap of {max_size} bytes"
        )
    return data


# --- rebuilding (child side) -------------------------------------------------

_class_cache: dict[str, type | None] = {}


def _import_class(name: str) -> type | None:
    """
    Import C{"module:Qual.Name"}, or C{None} if that fails for any reason.
    """
    if name in _class_cache:
        return _class_cache[name]
    found: type | None = None
    try:
        module_name, _, qualname = name.partition(":")
        obj: Any = importlib.import_module(module_name)
        for part in qualname.split("."):
            obj = getattr(obj, part)
        if isinstance(obj, type):
            found = obj
    except Exception:
        found = None
    _class_cache[name] = found
    return found


def _fallback_record(kind: str, name: str, fields: dict[str, Any]) -> Any:
    if kind == "namedtuple":
        short = name.rpartition(".")[2].rpartition(":")[2] or "Record"
        if not short.isidentifier():
            short = "Record"
        cls = collections.namedtuple(short, list(fields), rename=True)  # type: ignore[misc]
        return cls(*fields.values())
    return types.SimpleNamespace(**fields)


def _rebuild_record(kind: str, obj: dict[str, Any]) -> Any:
    name = obj.get("type", "")
    fields = obj.get("fields", {})
    cls = _import_class(name)
    if cls is not None:
        try:
            return cls(**fields)
        except Exception:
            pass
    return _fallback_record(kind, name, fields)


def _hashable(key: Any) -> Any:
    if isinstance(key, list):
        return tuple(_hashable(item) for item in key)
    if isinstance(key, dict):
        return tuple((k, _hashable(v)) for k, v in key.items())
    return key


_REBUILD: dict[str, Callable[[dict[str, Any]], Any]] = {
    "namedtuple": lambda o: _rebuild_record("namedtuple", o),
    "attrs": lambda o: _rebuild_record("attrs", o),
    "dataclass": lambda o: _rebuild_record("dataclass", o),
    "tuple": lambda o: tuple(o["items"]),
    "set": lambda o: {_hashable(i) for i in o["items"]},
    "frozenset": lambda o: frozenset(_hashable(i) for i in o["items"]),
    "dict": lambda o: {_hashable(k): v for k, v in o["items"]},
    "bytes": lambda o: base64.b64decode(o["b64"]),
    "datetime": lambda o: datetime.datetime.fromisoformat(o["iso"]),
    "date": lambda o: datetime.date.fromisoformat(o["iso"]),
    "time": lambda o: datetime.time.fromisoformat(o["iso"]),
    "timedelta": lambda o: datetime.timedelta(
        days=o["days"], seconds=o["seconds"], microseconds=o["microseconds"]
    ),
}


def _rebuild_hook(obj: dict[str, Any]) -> Any:
    kind = obj.get(TAG)
    if kind is None:
        return obj
    rebuild = _REBUILD.get(kind)
    return obj if rebuild is None else rebuild(obj)


def _of(value: Any, *kinds: type) -> Any:
    if type(value) not in kinds:
        raise TypeError(f"expected {kinds}, got {type(value)}")
    return value


def _pairs(items: Any) -> dict[Any, Any]:
    out = {}
    for pair in _of(items, list):
        key, value = _of(pair, list)
        out[_hashable(key)] = value
    return out


_PLAIN: dict[str, Callable[[dict[str, Any]], Any]] = {
    "namedtuple": lambda o: dict(_of(o["fields"], dict)),
    "attrs": lambda o: dict(_of(o["fields"], dict)),
    "dataclass": lambda o: dict(_of(o["fields"], dict)),
    "tuple": lambda o: list(_of(o["items"], list)),
    "set": lambda o: list(_of(o["items"], list)),
    "frozenset": lambda o: list(_of(o["items"], list)),
    "dict": lambda o: _pairs(o["items"]),
    "bytes": lambda o: base64.b64decode(_of(o["b64"], str), validate=True),
    "datetime": lambda o: _of(o["iso"], str),
    "date": lambda o: _of(o["iso"], str),
    "time": lambda o: _of(o["iso"], str),
    "timedelta": lambda o: (
        _of(o["days"], int) * 86400
        + _of(o["seconds"], int)
        + _of(o["microseconds"], int) / 1e6
    ),
}


def _plain_hook(obj: dict[str, Any]) -> Any:
    kind = obj.get(TAG)
    if type(kind) is not str:
        return obj
    plain = _PLAIN.get(kind)
    if plain is None:
        return obj
    try:
        return plain(obj)
    except Exception:
        # A malformed tag from an untrusted child stays the plain dict it was.
        return obj


def _has_tags(data: bytes | str) -> bool:
    # A tag can only be where its key is; text without it needs no hook (the
    # standard library calls one for every object, which costs more than parsing).
    # An underscore is looked for first: one byte is found with memchr, at 8 us a
    # MiB, where the key's eight take 380 us (more than msgspec's whole decode
    # of a 1 MiB string), and most large payloads (text, base64) have none.
    if isinstance(data, bytes):
        return b"_" in data and b'"__ad__"' in data
    return "_" in data and '"__ad__"' in data


_stdlib_loads = json.loads


def _make_loads() -> Callable[[bytes | str], Any]:
    """
    Untagged JSON to values: msgspec when it can (2-8x faster than the
    standard library on our event shapes and reply records, see
    C{benchmarks/bench_codec.py}), the standard library for everything msgspec
    refuses, so that what decodes and what is refused, and how, stay the
    standard library's: C{NaN} and C{Infinity}, C{1e400}, lone surrogates, a
    byte order mark, UTF-16 bytes and malformed input all go to C{json.loads},
    which accepts them or raises its own error.  Where both accept, the values
    are the same (integers beyond 64 bits stay exact in both).  Not orjson: it
    silently turns integers beyond 64 bits into floats.
    """
    if msgspec is None:  # pragma: no cover - see the import
        return _stdlib_loads
    fast = msgspec.json.Decoder().decode

    def loads(data: bytes | str) -> Any:
        try:
            return fast(data)
        except Exception:
            return json.loads(data)

    return loads


_loads = _make_loads()


def refuse_constant(name: str) -> Any:
    """
    C{parse_constant} for C{json.loads}: C{NaN}, C{Infinity} and C{-Infinity}
    are not JSON.
    """
    raise ValueError(f"{name} is not JSON (numbers must be finite)")


def finite_float(text: str) -> float:
    """
    C{parse_float} for C{json.loads}: a number beyond a float's range, which
    the standard library would read as infinity (C{1e400}), is refused.
    """
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text[:40]} is not a finite number")
    return value


_fast_finite = None if msgspec is None else msgspec.json.Decoder().decode


def decode_finite(data: bytes | str) -> Any:
    """
    L{decode_result} for peers bound by a protocol whose numbers are finite
    (external processes over AMP): C{NaN}, C{Infinity} and numbers beyond a
    float's range (C{1e400}) are refused, where L{decode_result} turns them
    into floats that no encoder here can write back.

    @raise ValueError: naming the number, for those and for what is not JSON.
    """
    tagged = _has_tags(data)
    if _fast_finite is not None and not tagged:
        try:
            return _fast_finite(data)  # msgspec refuses those numbers itself
        except Exception:
            pass  # the standard library says which error (or accepts)
    return json.loads(
        data,
        parse_constant=refuse_constant,
        parse_float=finite_float,
        object_hook=_plain_hook if tagged else None,
    )


def decode_event(data: bytes | str) -> Any:
    """
    Decode an event, rebuilding its types (child side).
    """
    if not _has_tags(data):
        return _loads(data)
    return json.loads(data, object_hook=_rebuild_hook)


def decode_result(data: bytes | str) -> Any:
    """
    Decode a value a child sent, to plain JSON values (and C{bytes}) only.
    """
    if not _has_tags(data):
        return _loads(data)
    return json.loads(data, object_hook=_plain_hook)


# --- JSON for peers that are not Python --------------------------------------


def _escaped(value: Any) -> Any:
    # An object with the tag's key is data, not a tag: wrapped as the codec
    # wraps it, so that a peer never takes one for the other.
    if type(value) is dict and TAG in value:
        return {TAG: "dict", "items": [[k, v] for k, v in value.items()]}
    return value


def _peer_hook(obj: dict[str, Any]) -> Any:
    kind = obj.get(TAG)
    if type(kind) is not str or kind == "bytes":
        return obj
    if kind == "dict":
        # Its keys are plain already (hooks run innermost first).
        return obj
    plain = _PLAIN.get(kind)
    if plain is None:
        return obj
    try:
        return _escaped(plain(obj))
    except Exception:
        return obj


def peer_json(data: bytes) -> bytes:
    """
    Tagged JSON (as L{encode_event} and L{encode_value} write it) as a peer
    that is not Python reads it: plain JSON values, but for the two values
    JSON has no form for, which stay tagged: C{{"__ad__": "bytes", "b64":
    ...}}, and C{{"__ad__": "dict", "items": [[key, value], ...]}} for a
    mapping with keys that are not strings, or that has the tag's own key.
    Records become objects of their fields, tuples and sets lists (keys
    included), datetime values ISO strings, timedeltas seconds, as
    L{decode_result} makes them.
    """
    if not _has_tags(data):
        return data
    return _dumps(json.loads(data, object_hook=_peer_hook))


# --- batch framing -------------------------------------------------------------


def encode_batch(items: Sequence[tuple[str, bytes]]) -> bytes:
    """
    Frame C{(handler name, encoded event)} pairs as one JSON array, without
    decoding or re-encoding the events.
    """
    return (
        b"["
        + b",".join(
            b"[" + _handler_json(handler) + b"," + event + b"]"
            for handler, event in items
        )
        + b"]"
    )


@lru_cache(maxsize=4096)
def _handler_json(handler: str) -> bytes:
    # A pool runs the same few handler names over and over.
    return json.dumps(handler).encode("utf-8")


def decode_batch(data: bytes) -> list[tuple[str, Any]]:
    """
    Decode a batch framed by L{encode_batch} (child side), rebuilding events.

    @raise ValueError: if the batch is not a list of C{[name, event]} pairs.
    """
    batch = decode_event(data)
    if not isinstance(batch, list) or not all(
        isinstance(item, list) and len(item) == 2 and isinstance(item[0], str)
        for item in batch
    ):
        raise ValueError("a batch must be a JSON list of [handler, event] pairs")
    return [(name, event) for name, event in batch]


#: The statuses a child's record carries, as JSON.
_STATUS_JSON = {status: json.dumps(status) for status in ("ok", "error")}


def encode_outcome_record(
    status: str,
    duration: float,
    value_json: str | None = None,
    error: tuple[str, str, str] | None = None,
    veto: str | None = None,
) -> str:
    """
    One child reply record: C{status}, C{duration} and either the already
    encoded C{value_json} or C{error} as C{(type, message, traceback)}; an
    C{"ok"} record may carry the reason of a L{Veto} the handler returned.
    """
    head = f'{{"s":{_STATUS_JSON.get(status) or json.dumps(status)},"d":{duration!r}'
    if error is not None:
        kind, message, tb = error
        return (
            f'{head},"t":{json.dumps(kind)},"m":{json.dumps(message)},'
            f'"tb":{json.dumps(tb)}}}'
        )
    if veto is not None:
        head += f',"veto":{json.dumps(veto)}'
    return f'{head},"v":{value_json if value_json is not None else "null"}}}'


def join_records(records: Sequence[str]) -> bytes:
    """
    Frame reply records as one JSON array.
    """
    return ("[" + ",".join(records) + "]").encode("utf-8")


def decode_records(data: bytes, expected: int) -> list[dict[str, Any]]:
    """
    Decode the reply records a child sent (parent side, untrusted input).  A
    child may answer for a prefix of the batch only (it stopped early).

    @raise ValueError: if the reply is not a list of at most C{expected} records.
    """
    try:
        records = decode_result(data)
    except ValueError:
        raise
    except Exception as e:  # RecursionError from a hostile child, and the like
        raise ValueError(f"unreadable records: {type(e).__name__}: {e}") from None
    if (
        not isinstance(records, list)
        or len(records) > expected
        or not all(isinstance(r, dict) and isinstance(r.get("s"), str) for r in records)
    ):
        raise ValueError(f"expected a list of at most {expected} reply records")
    return records
