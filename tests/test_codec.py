"""
Unit tests for L{actordispatch._wire.codec}: events and results to bytes and back.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime
import enum
import importlib
import json
import math
import sys
import tracemalloc
import types
from typing import Any, NamedTuple

import attrs
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from actordispatch._core.errors import EventEncodingError, EventTooLargeError
from actordispatch._wire import codec as _codec
from actordispatch._wire.codec import (
    DEFAULT_MAX_EVENT_SIZE,
    TAG,
    decode_batch,
    decode_event,
    decode_finite,
    decode_records,
    decode_result,
    encode_batch,
    encode_event,
    encode_outcome_record,
    encode_value,
    join_records,
    peer_json,
)

MIB = 1024 * 1024


class UserEvent(NamedTuple):
    """
    A typed namedtuple event.
    """

    user: str
    role: str = "user"


Point = collections.namedtuple("Point", "x y")


@attrs.frozen
class Account:
    """
    An attrs event with private attributes: one with attrs' default alias, one
    with an explicit alias.
    """

    name: str
    _secret: str
    _token: str = attrs.field(alias="api_token", default="t0")


@dataclasses.dataclass(frozen=True)
class Order:
    """
    A dataclass event, with a field the constructor does not take.
    """

    order_id: int
    lines: tuple[str, ...]
    placed: datetime.datetime
    total: int = dataclasses.field(init=False, default=0)

    def __post_init__(self) -> None:
        object.__setattr__(self, "total", len(self.lines))


@dataclasses.dataclass
class Required:
    """
    A dataclass whose field has no default, so the class has no such attribute.
    """

    value: int


@dataclasses.dataclass
class Settings:
    """
    A dataclass whose fields all have defaults, so the class has them too.
    """

    level: int = 1


#: Arguments L{Tripwire} was constructed with.
tripped: list[dict[str, Any]] = []


class Tripwire:
    """
    A class with a side effect in its constructor: building it leaves a trace in
    L{tripped}.
    """

    def __init__(self, **fields: Any) -> None:
        tripped.append(fields)


class Color(enum.IntEnum):
    """
    An int subclass.
    """

    RED = 1


def roundtrip(value: Any) -> Any:
    """
    Encode C{value} as an event and decode it as the child does.
    """
    return decode_event(encode_event(value))


def tagged(kind: str, **fields: Any) -> bytes:
    """
    Raw JSON for a tagged object, as a (possibly malicious) child could send.
    """
    return json.dumps({TAG: kind, **fields}).encode("utf-8")


PLAIN_SCALARS = (str, int, float, bool, type(None), bytes)


class RoundTripTests(SynchronousTestCase):
    def assertSameValue(self, value: Any, decoded: Any) -> None:
        """
        C{decoded} equals C{value} and has the same type.
        """
        self.assertEqual(decoded, value)
        self.assertIs(type(decoded), type(value))

    def test_json_values(self) -> None:
        """
        Plain JSON values come back as they were.
        """
        for value in (
            None,
            True,
            0,
            -(2**70),
            1.5,
            -0.0,
            "",
            "h\u00e9llo \u2603 \U0001f600",
            [1, "a", None],
            {"a": [1, {"b": 2.5}]},
        ):
            self.assertSameValue(value, roundtrip(value))

    def test_namedtuple_same_class(self) -> None:
        """
        A namedtuple whose class is importable comes back as an instance of that
        very class (C{typing.NamedTuple} and C{collections.namedtuple} alike).
        """
        for value in (UserEvent("bob"), UserEvent("al", "admin"), Point(1, (2, 3))):
            self.assertSameValue(value, roundtrip(value))

    def test_namedtuple_fallback(self) -> None:
        """
        A namedtuple whose class cannot be imported (unknown module or name, or
        defined in a function) comes back as an equal namedtuple with the same
        field names.
        """
        data = encode_event(UserEvent("bob", "admin"))
        for replacement in (
            b"tests.test_codec:NoSuchEvent",
            b"no_such_module_for_actordispatch:UserEvent",
        ):
            decoded = decode_event(
                data.replace(b"tests.test_codec:UserEvent", replacement)
            )
            self.assertIsNot(type(decoded), UserEvent)
            self.assertEqual(decoded, ("bob", "admin"))
            self.assertEqual(decoded._fields, ("user", "role"))
            self.assertEqual(decoded.role, "admin")

        Local = collections.namedtuple("Local", "a b")
        decoded = roundtrip(Local(1, [2]))
        self.assertEqual(decoded, (1, [2]))
        self.assertEqual(decoded._fields, ("a", "b"))
        self.assertEqual(type(decoded).__name__, "Local")

    def test_namedtuple_fallback_when_constructor_refuses(self) -> None:
        """
        When the named class exists but does not accept the fields (it changed
        between parent and child), the event still arrives as an equal
        namedtuple.
        """
        data = encode_event(Point(1, 2)).replace(b'"y"', b'"z"')
        decoded = decode_event(data)
        self.assertEqual(decoded, (1, 2))
        self.assertEqual(decoded._fields, ("x", "z"))

    def test_attrs(self) -> None:
        """
        An attrs instance comes back as the same class, private attributes
        included, whether their alias is attrs' default or explicit.
        """
        for value in (
            Account("bob", "s3cret"),
            Account("al", secret="x", api_token="tok"),
        ):
            self.assertSameValue(value, roundtrip(value))

    def test_attrs_fallback(self) -> None:
        """
        An attrs instance whose class cannot be imported arrives as a namespace
        of its constructor arguments.
        """
        data = encode_event(Account("bob", "s", "t")).replace(
            b"tests.test_codec:Account", b"tests.test_codec:Gone"
        )
        self.assertEqual(
            decode_event(data),
            types.SimpleNamespace(name="bob", secret="s", api_token="t"),
        )

    def test_dataclass(self) -> None:
        """
        A dataclass instance comes back as the same class; a field the
        constructor does not take is computed again, not sent.
        """
        placed = datetime.datetime(2024, 5, 6, 7, 8, 9, 10)
        value = Order(7, ("a", "b"), placed)
        decoded = roundtrip(value)
        self.assertSameValue(value, decoded)
        self.assertEqual(decoded.total, 2)
        self.assertNotIn(b"total", encode_event(value))
        self.assertSameValue(Required(3), roundtrip(Required(3)))

    def test_datetimes(self) -> None:
        """
        Datetimes (naive and aware), dates, times and timedeltas come back equal,
        with the same type and UTC offset.
        """
        plus2 = datetime.timezone(datetime.timedelta(hours=2))
        for value in (
            datetime.datetime(2024, 1, 2, 3, 4, 5, 678901),
            datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=plus2),
            datetime.date(1999, 12, 31),
            datetime.time(23, 59, 59, 999999),
            datetime.time(1, 2, tzinfo=datetime.UTC),
            datetime.timedelta(days=-3, seconds=5, microseconds=7),
            datetime.timedelta(0),
        ):
            decoded = roundtrip(value)
            self.assertSameValue(value, decoded)
            if isinstance(value, (datetime.datetime, datetime.time)):
                self.assertEqual(decoded.utcoffset(), value.utcoffset())

    def test_bytes(self) -> None:
        """
        Bytes (any octets) come back as bytes; a bytearray comes back as equal
        bytes.
        """
        for value in (b"", bytes(range(256))):
            self.assertSameValue(value, roundtrip(value))
        self.assertSameValue(b"\x00ab", roundtrip(bytearray(b"\x00ab")))

    def test_sets(self) -> None:
        """
        Sets and frozensets come back as the same type, their elements rebuilt
        (tuples and frozensets inside them stay hashable).
        """
        for value in (
            set(),
            {1, "a", (1, 2), None},
            frozenset(),
            frozenset({frozenset({1, 2}), (3, (4,))}),
        ):
            self.assertSameValue(value, roundtrip(value))

    def test_tuples(self) -> None:
        """
        Tuples come back as tuples, nested ones too, and lists inside them stay
        lists.
        """
        for value in ((), (1,), (1, (2, [3, (4,)]), "x")):
            decoded = roundtrip(value)
            self.assertSameValue(value, decoded)
        self.assertIs(type(roundtrip((1, [2]))[1]), list)

    def test_dict_non_string_keys(self) -> None:
        """
        A dictionary with keys that are not strings comes back with keys of the
        same types, and C{1} and C{"1"} stay different keys.
        """
        value = {
            1: "int",
            "1": "str",
            None: "none",
            1.5: "float",
            (1, "a"): "tuple",
            frozenset({2}): "frozenset",
            datetime.date(2024, 1, 1): "date",
            b"k": "bytes",
            UserEvent("bob"): "record",
        }
        decoded = roundtrip(value)
        self.assertSameValue(value, decoded)
        self.assertEqual({type(key) for key in decoded}, {type(key) for key in value})

    def test_dict_with_tag_key(self) -> None:
        """
        A dictionary that has the tag key C{"__ad__"} itself comes back as that
        dictionary, not as whatever its tag names.
        """
        for value in (
            {TAG: "bytes", "b64": "AAAA"},
            {TAG: "namedtuple", "type": "os:system", "fields": {"command": "x"}},
            {TAG: None},
            {"outer": {TAG: "tuple", "items": [1]}},
        ):
            self.assertSameValue(value, roundtrip(value))
            self.assertEqual(decode_result(encode_event(value)), value)

    def test_nested(self) -> None:
        """
        Every supported type nests inside every container.
        """
        value = {
            "events": [UserEvent("bob"), Point(UserEvent("x"), {1, 2})],
            "account": Account("al", "s", api_token="t"),
            "order": Order(1, ("x",), datetime.datetime(2020, 2, 2)),
            "by_day": {datetime.date(2020, 1, 1): [b"\x01", (1, 2)]},
            "tags": frozenset({("a", 1)}),
            "deep": [[[{"k": ({"n": None},)}]]],
        }
        self.assertEqual(roundtrip(value), value)

    def test_subclasses_of_scalars(self) -> None:
        """
        Subclasses of C{int} and C{str} (enums, for instance) travel as their
        base value; C{bool} stays C{bool}.
        """
        self.assertSameValue(1, roundtrip(Color.RED))
        self.assertSameValue(True, roundtrip(True))

    def test_sixteen_mib(self) -> None:
        """
        An event of more than 16 MiB encoded goes through whole, under the
        default cap.
        """
        value = {"blob": "x" * (16 * MIB), "meta": UserEvent("bob")}
        data = encode_event(value)
        self.assertGreater(len(data), 16 * MIB)
        self.assertLess(len(data), DEFAULT_MAX_EVENT_SIZE)
        self.assertEqual(decode_event(data), value)


class EncodingErrorTests(SynchronousTestCase):
    def test_unsupported_objects(self) -> None:
        """
        An object of an unsupported type, at any depth, is refused with
        L{EventEncodingError} naming where it is and its type.
        """
        for value in (object(), len, 1j, iter([]), type):
            self.assertRaises(EventEncodingError, encode_event, value)
        with self.assertRaises(EventEncodingError) as caught:
            encode_event([{"k": object()}])
        self.assertIn("event[0]['k']", str(caught.exception))
        self.assertIn("builtins:object", str(caught.exception))
        self.assertRaises(EventEncodingError, encode_event, {object(): 1})
        self.assertRaises(EventEncodingError, encode_event, {1, (2, object())})

    def test_non_finite_floats(self) -> None:
        """
        NaN and infinities are refused, as values and as keys.
        """
        for bad in (math.nan, math.inf, -math.inf):
            for value in (bad, [1, bad], {"k": (bad,)}, {bad: 1}, {bad}):
                self.assertRaises(EventEncodingError, encode_event, value)
            self.assertRaises(EventEncodingError, encode_value, bad, what="result")

    def test_circular(self) -> None:
        """
        A structure that contains itself is refused with L{EventEncodingError}.
        """
        loop: list[Any] = [1]
        loop.append(loop)
        self.assertRaises(EventEncodingError, encode_event, loop)

    def test_dataclass_type_refused(self) -> None:
        """
        A dataclass I{class} (passed where an instance was meant) is not an
        event: it is refused with L{EventEncodingError}, whether or not its
        fields have defaults.
        """
        self.assertRaises(EventEncodingError, encode_event, Required)
        self.assertRaises(EventEncodingError, encode_event, Settings)
        self.assertRaises(EventEncodingError, encode_event, [Order])

    def test_lone_surrogate(self) -> None:
        """
        Text holding a lone surrogate (as C{os.fsdecode} makes of an undecodable
        file name) either goes through unchanged or is refused with
        L{EventEncodingError}; no other error escapes.
        """
        value = {"path": "file-\udcff.txt"}
        try:
            data = encode_event(value)
        except EventEncodingError:
            return
        self.assertEqual(decode_event(data), value)

    def test_too_large(self) -> None:
        """
        An event whose encoding is above C{max_size} bytes is refused with
        L{EventTooLargeError} (an L{EventEncodingError}); one of exactly
        C{max_size} bytes is accepted.  The size counts UTF-8 bytes.
        """
        value = "\u20ac" * 10
        size = len(json.dumps(value, ensure_ascii=False).encode("utf-8"))
        self.assertEqual(size, 32)
        self.assertEqual(len(encode_event(value, max_size=size)), size)
        with self.assertRaises(EventTooLargeError) as caught:
            encode_event(value, max_size=size - 1)
        self.assertIsInstance(caught.exception, EventEncodingError)
        self.assertIn(str(size), str(caught.exception))
        self.assertIn(str(size - 1), str(caught.exception))


class DecodeResultTests(SynchronousTestCase):
    def setUp(self) -> None:
        del tripped[:]

    def assertPlain(self, value: Any) -> None:
        """
        C{value} is built of JSON values (and bytes) only.
        """
        if isinstance(value, list):
            self.assertIs(type(value), list)
            for item in value:
                self.assertPlain(item)
        elif isinstance(value, dict):
            self.assertIs(type(value), dict)
            for key, item in value.items():
                self.assertIs(type(key), str)
                self.assertPlain(item)
        else:
            self.assertIn(type(value), PLAIN_SCALARS)

    def test_plain_values(self) -> None:
        """
        Records become dicts of their fields, tuples and sets become lists,
        datetime values become ISO strings, timedeltas become seconds, bytes stay
        bytes.
        """
        when = datetime.datetime(2024, 1, 2, 3, 4, 5)
        cases: list[tuple[Any, Any]] = [
            (UserEvent("bob"), {"user": "bob", "role": "user"}),
            (Point(1, 2), {"x": 1, "y": 2}),
            (Account("al", "s", "t"), {"name": "al", "secret": "s", "api_token": "t"}),
            (
                Order(1, ("a",), when),
                {"order_id": 1, "lines": ["a"], "placed": when.isoformat()},
            ),
            ((1, (2, 3)), [1, [2, 3]]),
            ({5}, [5]),
            (frozenset({"a"}), ["a"]),
            (when, "2024-01-02T03:04:05"),
            (datetime.date(2024, 1, 2), "2024-01-02"),
            (datetime.time(3, 4, 5, 6), "03:04:05.000006"),
            (datetime.timedelta(days=1, seconds=2, microseconds=500000), 86402.5),
            (b"\x00\xff", b"\x00\xff"),
            ({"k": [None, True, 1.5]}, {"k": [None, True, 1.5]}),
        ]
        for value, expected in cases:
            decoded = decode_result(encode_value(value, what="result"))
            self.assertEqual(decoded, expected)
            self.assertPlain(decoded)

    def test_nested_plain(self) -> None:
        """
        However deeply types nest, the parent gets plain values only.
        """
        value = {
            "a": [UserEvent("bob"), (Point(1, {2}),)],
            "b": Account("x", "y"),
            "c": {"d": (datetime.date(2020, 1, 1), frozenset({b"z"}))},
        }
        decoded = decode_result(encode_event(value))
        self.assertPlain(decoded)
        self.assertEqual(
            decoded,
            {
                "a": [{"user": "bob", "role": "user"}, [{"x": 1, "y": [2]}]],
                "b": {"name": "x", "secret": "y", "api_token": "t0"},
                "c": {"d": ["2020-01-01", [b"z"]]},
            },
        )

    def test_never_builds_classes(self) -> None:
        """
        A record tag naming any class or callable (C{os:system}, or a class
        whose constructor has side effects) is turned into a dict of its fields:
        nothing is imported and no constructor runs.  (The child-side decoder,
        given the same bytes, does build the class: the tripwire works.)
        """
        imported: list[str] = []

        def tripwire_import(name: str, package: str | None = None) -> Any:
            imported.append(name)
            raise AssertionError(f"decode_result imported {name!r}")

        module_name = "tabnanny"
        was_loaded = module_name in sys.modules
        self.patch(importlib, "import_module", tripwire_import)
        for kind in ("namedtuple", "attrs", "dataclass"):
            for name in (
                "os:system",
                "tests.test_codec:Tripwire",
                f"{module_name}:check",
                "subprocess:Popen",
            ):
                data = tagged(kind, type=name, fields={"args": "echo pwned"})
                self.assertEqual(decode_result(data), {"args": "echo pwned"})
        self.assertEqual(imported, [])
        self.assertEqual(tripped, [])
        self.assertEqual(module_name in sys.modules, was_loaded)

    def test_tripwire_control(self) -> None:
        """
        The child-side decoder does construct an importable class a tag names,
        so L{test_never_builds_classes} would notice if the parent did.
        """
        decoded = decode_event(
            tagged("namedtuple", type="tests.test_codec:Tripwire", fields={"a": 1})
        )
        self.assertIsInstance(decoded, Tripwire)
        self.assertEqual(tripped, [{"a": 1}])

    def test_incomplete_tags_stay_dicts(self) -> None:
        """
        A tag from an untrusted child that lacks the fields its kind needs, or
        whose fields cannot be converted, stays the plain dict it was.
        """
        for raw in (
            {TAG: "bytes"},
            {TAG: "bytes", "b64": "abc"},
            {TAG: "bytes", "b64": 5},
            {TAG: "tuple"},
            {TAG: "tuple", "items": 5},
            {TAG: "set", "items": None},
            {TAG: "namedtuple", "type": "os:system"},
            {TAG: "attrs", "fields": 7},
            {TAG: "dict", "items": [[1, 2, 3]]},
            {TAG: "dict", "items": 1},
            {TAG: "datetime"},
            {TAG: "timedelta", "days": 1},
            {TAG: "timedelta", "days": 1, "seconds": None, "microseconds": 0},
            {TAG: "no-such-kind", "x": 1},
            {TAG: None},
            {TAG: 5},
        ):
            data = json.dumps({"v": raw}).encode("utf-8")
            self.assertEqual(decode_result(data), {"v": raw}, raw)

    def test_unhashable_tag_stays_dict(self) -> None:
        """
        A tag whose value is not a string at all (a list or an object) stays the
        plain dict it was; decoding does not raise.
        """
        raws: list[dict[str, Any]] = [{TAG: []}, {TAG: ["bytes"]}, {TAG: {}}]
        for raw in raws:
            data = json.dumps([raw]).encode("utf-8")
            self.assertEqual(decode_result(data), [raw])

    def test_wrongly_typed_tags_stay_dicts(self) -> None:
        """
        A tag whose fields have the wrong JSON types (text where a list is due, a
        number where an ISO string is due, base64 with characters outside its
        alphabet...) is malformed: it stays the plain dict it was rather than
        being coerced into some other value.
        """
        coerced = []
        for raw in (
            {TAG: "tuple", "items": "abc"},
            {TAG: "set", "items": {"k": 1}},
            {TAG: "frozenset", "items": "xy"},
            {TAG: "dict", "items": ["ab"]},
            {TAG: "datetime", "iso": 5},
            {TAG: "date", "iso": [2024]},
            {TAG: "bytes", "b64": "!!!!"},
            {TAG: "namedtuple", "type": "x:y", "fields": [["a", 1]]},
        ):
            decoded = decode_result(json.dumps(raw).encode("utf-8"))
            if decoded != raw:
                coerced.append((raw, decoded))
        self.assertEqual(coerced, [])

    def test_timedelta_tag_no_amplification(self) -> None:
        """
        A timedelta tag with text where its numbers are due stays a plain dict,
        and decoding it costs memory in proportion to the input: a child cannot
        make the parent build a string 86,400 times longer than the one it sent.
        """
        raw = {TAG: "timedelta", "days": "x" * 100, "seconds": 0, "microseconds": 0}
        data = json.dumps(raw).encode("utf-8")
        started = not tracemalloc.is_tracing()
        if started:
            tracemalloc.start()
        try:
            tracemalloc.reset_peak()
            before, _ = tracemalloc.get_traced_memory()
            decoded = decode_result(data)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            if started:
                tracemalloc.stop()
        self.assertEqual(decoded, raw)
        self.assertLess(peak - before, 1 * MIB)


class DecodeFiniteTests(SynchronousTestCase):
    def test_refuses_non_finite(self) -> None:
        """
        decode_finite refuses NaN, the infinities and numbers beyond a float's
        range (which decode_result reads as infinity), anywhere in the value,
        tagged or not, with a ValueError naming the number.
        """
        for number in ("NaN", "Infinity", "-Infinity", "1e400", "-1e400"):
            for text in (
                number,
                '{"a": [1, N]}'.replace("N", number),
                '{"t": {"__ad__": "tuple", "items": [N]}}'.replace("N", number),
            ):
                with self.assertRaises(ValueError) as raised:
                    decode_finite(text.encode())
                self.assertIn(number.lstrip("-")[:3], str(raised.exception))
        self.assertEqual(decode_result(b"1e400"), math.inf)

    @settings(max_examples=200, deadline=None)
    @given(
        st.recursive(
            st.none()
            | st.booleans()
            | st.integers()
            | st.floats(allow_nan=False, allow_infinity=False)
            | st.text(),
            lambda children: (
                st.lists(children, max_size=4)
                | st.dictionaries(st.text(max_size=8), children, max_size=4)
            ),
            max_leaves=20,
        )
    )
    def test_same_as_decode_result(self, value: Any) -> None:
        """
        Where every number is finite, decode_finite decodes what decode_result
        decodes, to the same value.
        """
        data = json.dumps(value).encode()
        self.assertEqual(decode_finite(data), decode_result(data))

    def test_tags_plain(self) -> None:
        """
        Tags become plain values as decode_result makes them.
        """
        data = json.dumps({"t": {TAG: "tuple", "items": [1, 2.5]}}).encode()
        self.assertEqual(decode_finite(data), {"t": [1, 2.5]})


def _tags(value: Any) -> set[str]:
    """
    The kinds of every tag in a decoded JSON value.
    """
    if isinstance(value, list):
        return set().union(*map(_tags, value)) if value else set()
    if isinstance(value, dict):
        found = {value[TAG]} if isinstance(value.get(TAG), str) else set()
        return found.union(*map(_tags, value.values()))
    return set()


_peer_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8)
    | st.binary(max_size=8)
    | st.dates(),
    lambda children: (
        st.lists(children, max_size=3)
        | st.lists(children, max_size=3).map(tuple)
        | st.dictionaries(
            st.sampled_from([TAG, "a", "b"]) | st.integers() | st.tuples(st.integers()),
            children,
            max_size=3,
        )
    ),
    max_leaves=12,
)


class PeerJsonTests(SynchronousTestCase):
    @settings(max_examples=200, deadline=None)
    @given(_peer_values)
    def test_two_tags(self, value: Any) -> None:
        """
        peer_json leaves only the bytes and mapping tags, and loses nothing
        that decode_result keeps: both decode to the same value.
        """
        data = encode_event(value)
        plain = peer_json(data)
        self.assertLessEqual(_tags(json.loads(plain)), {"bytes", "dict"})
        self.assertEqual(decode_result(plain), decode_result(data))

    def test_untagged_as_is(self) -> None:
        """
        JSON without tags comes back as the very same bytes.
        """
        data = encode_event({"a": [1, 2.5, "x"]})
        self.assertIs(peer_json(data), data)


class BatchTests(SynchronousTestCase):
    def test_roundtrip(self) -> None:
        """
        A batch framed by encode_batch decodes, in the child, to the same
        (handler name, event) pairs in order, events rebuilt.
        """
        items = [
            ("tests.helpers:echo", UserEvent("bob")),
            ("pkg.mod:f", {"a": (1, 2)}),
            ("pkg.mod:Cls.method", None),
            ("pkg.mod:f", b"\x00"),
        ]
        data = encode_batch([(name, encode_event(event)) for name, event in items])
        self.assertEqual(decode_batch(data), items)
        self.assertIsInstance(decode_batch(data)[0][1], UserEvent)

    def test_event_bytes_reused(self) -> None:
        """
        Each event's encoded bytes appear verbatim in the frame: the batch is
        not built by decoding and re-encoding them.
        """
        event = encode_event({"k": "v\u00e9", "t": (1,)})
        data = encode_batch([("a:b", event), ("c:d", event)])
        self.assertEqual(data.count(event), 2)
        json.loads(data)

    def test_empty(self) -> None:
        """
        An empty batch frames as an empty JSON array and decodes to no items.
        """
        self.assertEqual(encode_batch([]), b"[]")
        self.assertEqual(decode_batch(b"[]"), [])

    def test_malformed(self) -> None:
        """
        Anything but a JSON list of [name, event] pairs is refused with a
        C{ValueError}.
        """
        for data in (
            b"",
            b"not json",
            b"{}",
            b'"a:b"',
            b"[1]",
            b'[["a:b"]]',
            b'[["a:b", 1, 2]]',
            b"[[1, 2]]",
            b'[["a:b", 1], "x"]',
        ):
            self.assertRaises(ValueError, decode_batch, data)


class RecordTests(SynchronousTestCase):
    def test_ok_record(self) -> None:
        """
        An ok record carries its status, duration and the already encoded value,
        which the parent decodes to plain values.
        """
        value_json = encode_value((1, UserEvent("bob")), what="result")
        record = encode_outcome_record("ok", 0.25, value_json=value_json)
        self.assertEqual(
            json.loads(record), {"s": "ok", "d": 0.25, "v": json.loads(value_json)}
        )
        self.assertEqual(
            decode_records(join_records([record]), 1),
            [{"s": "ok", "d": 0.25, "v": [1, {"user": "bob", "role": "user"}]}],
        )

    def test_ok_record_without_value(self) -> None:
        """
        An ok record without a value carries C{null}.
        """
        record = encode_outcome_record("ok", 0.0)
        self.assertEqual(json.loads(record), {"s": "ok", "d": 0.0, "v": None})

    def test_error_record(self) -> None:
        """
        An error record carries the error's type, message and traceback text,
        quoted safely whatever characters they hold.
        """
        message = 'bad "value"\n\\ \u00e9 \u2603'
        record = encode_outcome_record(
            "error", 1.5, error=("ValueError", message, "Traceback...\n  line")
        )
        self.assertEqual(
            decode_records(join_records([record]), 1),
            [
                {
                    "s": "error",
                    "d": 1.5,
                    "t": "ValueError",
                    "m": message,
                    "tb": "Traceback...\n  line",
                }
            ],
        )

    def test_join_and_decode_many(self) -> None:
        """
        Records joined in order decode in the same order.
        """
        records = [
            encode_outcome_record("ok", 0.1 * i, value_json=str(i)) for i in range(5)
        ]
        decoded = decode_records(join_records(records), 5)
        self.assertEqual([r["v"] for r in decoded], [0, 1, 2, 3, 4])
        self.assertEqual(join_records([]), b"[]")
        self.assertEqual(decode_records(b"[]", 0), [])

    def test_wrong_count(self) -> None:
        """
        A reply with more records than invocations sent is refused with a
        C{ValueError}; one with fewer is a prefix (the child stopped early).
        """
        data = join_records([encode_outcome_record("ok", 0.0)] * 2)
        self.assertRaises(ValueError, decode_records, data, 1)
        self.assertEqual(len(decode_records(data, 3)), 2)
        self.assertEqual(len(decode_records(data, 2)), 2)

    def test_malformed_reply(self) -> None:
        """
        A reply that is not a list of records each with a text status is refused
        with a C{ValueError}.
        """
        for data in (
            b"nonsense",
            b"{}",
            b"[1]",
            b'[{"d": 1}]',
            b'[{"s": 1}]',
            b'[{"__ad__": "tuple", "items": ["ok"]}]',
        ):
            self.assertRaises(ValueError, decode_records, data, 1)


def _same(a: Any, b: Any) -> bool:
    """
    C{a} and C{b} are the same JSON values, down to the types (C{1} is not
    C{1.0}, C{-0.0} is not C{0.0}) and the order of keys; NaN matches NaN.
    """
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return (math.isnan(a) and math.isnan(b)) or (
            a == b and math.copysign(1, a) == math.copysign(1, b)
        )
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    return bool(a == b)


def _outcome(loads: Any, data: bytes | str) -> Any:
    try:
        return ("value", loads(data))
    except Exception as e:
        return ("error", type(e), str(e))


_json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(2**200), max_value=2**200)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text()
    | st.sampled_from(["\ud800", "a\udfffb", "\x00", "\u2028"]),
    lambda inner: (
        st.lists(inner, max_size=5)
        | st.dictionaries(st.text(max_size=8), inner, max_size=5)
    ),
    max_leaves=30,
)


#: Characters JSON is made of, so that random text is often nearly JSON.
_JSONISH = '[]{}",:0123456789.eE+-\\u ntrulfaseNI'


class FastDecodeTests(SynchronousTestCase):
    """
    Untagged JSON is decoded by msgspec when it can and by the standard library
    when it cannot: either way the values, and the errors, are the standard
    library's.
    """

    def test_msgspec_in_use(self) -> None:
        """
        msgspec is installed with the package, so the fast path is the one
        these tests exercise.
        """
        self.assertIsNotNone(_codec.msgspec)
        self.assertIsNot(_codec._loads, _codec._stdlib_loads)

    @settings(max_examples=300, deadline=None)
    @given(_json_values, st.booleans(), st.booleans())
    def test_same_values_as_json(self, value: Any, ascii: bool, as_bytes: bool) -> None:
        """
        Whatever JSON the standard library writes (big integers, NaN and
        Infinity, any text, escaped or not), the fast decoder reads the same
        values from it, as text and as bytes.
        """
        text = json.dumps(value, ensure_ascii=ascii)
        data: bytes | str = text.encode("utf-8", "surrogatepass") if as_bytes else text
        expected = json.loads(data)
        got = _codec._loads(data)
        self.assertTrue(_same(got, expected), (data, got, expected))
        self.assertTrue(_same(decode_result(data), expected))

    @settings(max_examples=300, deadline=None)
    @given(st.binary(max_size=40) | st.text(alphabet=_JSONISH, max_size=30))
    def test_same_outcome_on_any_input(self, data: bytes | str) -> None:
        """
        On arbitrary input, valid or not, the fast decoder gives the standard
        library's value or raises the standard library's error.
        """
        self.assertEqual(
            repr(_outcome(_codec._loads, data)), repr(_outcome(json.loads, data))
        )

    def test_edges(self) -> None:
        """
        The inputs where msgspec and the standard library part ways all come out
        as the standard library has them.
        """
        for data in (
            b"18446744073709551616",
            b"-18446744073709551617",
            b"1" * 5000,
            b"1e400",
            b"-1e400",
            b"NaN",
            b"[Infinity,-Infinity]",
            b"-0",
            b"-0.0",
            b'{"a":1,"a":2}',
            b'"\\ud800"',
            b'"\xed\xa0\x80"',
            b'"\xff"',
            b"\xef\xbb\xbf[1]",
            "[1]".encode("utf-16"),
            b'"a\x01b"',
            b"[1,]",
            b"1 x",
            b"",
            b"[" * 100_000 + b"]" * 100_000,
        ):
            self.assertEqual(
                repr(_outcome(_codec._loads, data)),
                repr(_outcome(json.loads, data)),
                data[:40],
            )


_event_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(2**100), max_value=2**100)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text()
    | st.sampled_from(["\ud800", TAG])
    | st.binary(max_size=4)
    | st.just(datetime.date(2026, 12, 4)),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.lists(inner, max_size=3).map(tuple)
        | st.dictionaries(st.text(max_size=6) | st.just(TAG), inner, max_size=4)
        | st.dictionaries(st.integers(), inner, max_size=2)
    ),
    max_leaves=25,
)


class PlainFastPathTests(SynchronousTestCase):
    """
    An event that is JSON as it is goes to the encoder untagged; the bytes, and
    the errors, are what tagging it first gives.
    """

    def _tagged_first(self, value: Any) -> Any:
        try:
            return ("bytes", _codec._dumps(_codec._tag(value, "event")))
        except Exception as e:
            return ("error", type(e).__name__)

    def _encoded(self, value: Any) -> Any:
        try:
            return ("bytes", encode_event(value))
        except EventEncodingError as e:
            return ("error", type(e).__name__)

    @settings(max_examples=400, deadline=None)
    @given(_event_values)
    def test_same_as_tagging(self, value: Any) -> None:
        """
        Whatever the value (plain JSON, big integers, NaN, lone surrogates,
        the tag's own key, tuples, bytes, non-text keys), encoding it gives the
        bytes tagging it first gives, or an encoding error where that fails.
        """
        self.assertEqual(self._encoded(value), self._tagged_first(value))

    def test_plain(self) -> None:
        """
        Only JSON of the very JSON types, finite floats and keys that are text
        but not the tag's, counts as plain.
        """
        for value in (None, 1, True, "x", 1.5, [], {}, {"a": [1, {"b": None}]}):
            self.assertTrue(_codec._plain(value), value)
        for value in (
            float("nan"),
            [float("inf")],
            {"a": (1,)},
            {TAG: 1},
            {1: "a"},
            [b"x"],
            Color.RED,
            {"a": [datetime.date(2026, 1, 1)]},
        ):
            self.assertFalse(_codec._plain(value), value)

    def test_circular_and_deep(self) -> None:
        """
        A circular or too deep event is refused as it was before the plain
        check, with an encoding error.
        """
        circular: list[Any] = []
        circular.append(circular)
        deep: Any = []
        for _ in range(100_000):
            deep = [deep]
        for value in (circular, deep):
            self.assertRaises(EventEncodingError, encode_event, value)


class SizeFloorTests(SynchronousTestCase):
    """
    L{_codec.encoded_size_floor} bounds a value's JSON from below without
    encoding it, and stops counting past its limit.
    """

    @given(
        st.recursive(
            st.none()
            | st.booleans()
            | st.integers()
            | st.floats(allow_nan=False, allow_infinity=False)
            | st.text()
            | st.binary(),
            lambda inner: (
                st.lists(inner, max_size=5)
                | st.tuples(inner, inner)
                | st.dictionaries(st.text(max_size=8), inner, max_size=5)
            ),
            max_leaves=30,
        )
    )
    @settings(max_examples=200, deadline=None)
    def test_never_above_the_encoding(self, value: Any) -> None:
        """
        The floor is never more than the encoded size.
        """
        encoded = _codec.encode_value(value, what="result").encode("utf-8")
        self.assertLessEqual(_codec.encoded_size_floor(value, 1 << 30), len(encoded))

    def test_stops_past_the_limit(self) -> None:
        """
        A value far above the limit is counted only until the limit is passed:
        a list of a million strings stops after a few.
        """
        value = ["x" * 1000] * 1_000_000
        floor = _codec.encoded_size_floor(value, 10_000)
        self.assertGreater(floor, 10_000)
        self.assertLess(floor, 1_100_000 + 20_000)

    def test_circular_and_shared(self) -> None:
        """
        A container met twice (shared, or containing itself) is counted once,
        so a circular value ends the count.
        """
        circular: list[Any] = []
        circular.append(circular)
        self.assertEqual(_codec.encoded_size_floor(circular, 1 << 20), 2)
        shared = "y" * 100
        self.assertEqual(_codec.encoded_size_floor([[shared], [shared]], 1 << 20), 211)

    def test_memory_safe_encoding_is_the_same_value(self) -> None:
        """
        The memory-safe encoding (standard library only) decodes to the same
        value as the fast one.
        """
        value = {"a": [1, 2.5, "é", b"\x00"], "b": {"c": None}}
        fast = _codec.encode_value(value, what="result")
        safe = _codec.encode_value(value, what="result", memory_safe=True)
        self.assertEqual(_codec.decode_result(fast), _codec.decode_result(safe))
