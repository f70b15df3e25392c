"""
Unit tests for L{actordispatch._wire.commands}: chunked values and handler names.
"""

from __future__ import annotations

from typing import Any

from twisted.protocols import amp
from twisted.test.iosim import connectedServerAndClient
from twisted.trial.unittest import SynchronousTestCase

from actordispatch._core.errors import BatchDecodingError, HandlerImportError
from actordispatch._wire.commands import (
    AMP_MAX_VALUE,
    HANDLER_NAME,
    CheckHandler,
    ChunkedBytes,
    Ping,
    RunBatch,
)

MIB = 1024 * 1024

SIZES = (0, 1, AMP_MAX_VALUE, AMP_MAX_VALUE + 1, MIB + 3)


def payload(size: int) -> bytes:
    """
    C{size} bytes that are not all alike, so that misplaced chunks show.
    """
    return bytes(i % 251 for i in range(size))


def to_box(argument: ChunkedBytes, value: bytes | None) -> dict[bytes, bytes]:
    """
    The box keys and values C{argument} writes for C{value} (absent if None).
    """
    strings: dict[bytes, bytes] = {}
    objects = {} if value is None else {"blob": value}
    argument.toBox(b"blob", strings, objects, None)
    return strings


def from_box(argument: ChunkedBytes, strings: dict[bytes, bytes]) -> dict[str, Any]:
    """
    The objects C{argument} reads back from a box.
    """
    objects: dict[str, Any] = {}
    argument.fromBox(b"blob", strings, objects, None)
    return objects


class EchoBlob(amp.Command):
    """
    A test command that sends a chunked value and gets it back.
    """

    arguments = [(b"blob", ChunkedBytes())]
    response = [(b"blob", ChunkedBytes())]


class EchoBlobServer(amp.AMP):
    """
    Answers L{EchoBlob} with the value it was sent.
    """

    @EchoBlob.responder
    def echo_blob(self, blob: bytes) -> dict[str, bytes]:
        return {"blob": blob}


class ChunkedBytesTests(SynchronousTestCase):
    def test_roundtrip(self) -> None:
        """
        Values of 0, 1, 65,535, 65,536 and 1 MiB + 3 bytes come back whole from
        the box ChunkedBytes writes.
        """
        argument = ChunkedBytes()
        for size in SIZES:
            value = payload(size)
            self.assertEqual(
                from_box(argument, to_box(argument, value)), {"blob": value}
            )

    def test_chunk_sizes(self) -> None:
        """
        Every key holds at most 65,535 bytes; the keys are C{name}, C{name.1},
        C{name.2}... and there are as few of them as can hold the value.
        """
        argument = ChunkedBytes()
        for size in SIZES:
            strings = to_box(argument, payload(size))
            chunks = max(1, -(-size // AMP_MAX_VALUE))
            self.assertEqual(
                sorted(strings),
                sorted([b"blob"] + [b"blob.%d" % i for i in range(1, chunks)]),
            )
            for value in strings.values():
                self.assertLessEqual(len(value), AMP_MAX_VALUE)
            self.assertEqual(sum(len(v) for v in strings.values()), size)

    def test_over_amp(self) -> None:
        """
        A real AMP connection carries a chunked value of each size both ways (AMP
        itself refuses any value above 65,535 bytes).
        """
        client, server, pump = connectedServerAndClient(EchoBlobServer, amp.AMP)
        for size in SIZES:
            value = payload(size)
            d = client.callRemote(EchoBlob, blob=value)
            pump.flush()
            self.assertEqual(self.successResultOf(d), {"blob": value})

    def test_optional(self) -> None:
        """
        An optional argument that is absent writes no key and reads back as
        absent; a required one that is absent is an C{InvalidSignature} on both
        sides.
        """
        optional = ChunkedBytes(optional=True)
        self.assertEqual(to_box(optional, None), {})
        self.assertEqual(from_box(optional, {}), {})
        self.assertEqual(from_box(optional, to_box(optional, b"x")), {"blob": b"x"})
        required = ChunkedBytes()
        self.assertRaises(amp.InvalidSignature, to_box, required, None)
        self.assertRaises(amp.InvalidSignature, from_box, required, {})

    def test_to_box_cap(self) -> None:
        """
        The sender refuses a value above C{max_size} with a C{ValueError}, and
        accepts one of exactly C{max_size}.
        """
        for cap in (10, AMP_MAX_VALUE + 10):
            argument = ChunkedBytes(max_size=cap)
            self.assertEqual(
                len(to_box(argument, payload(cap))[b"blob"]), min(cap, AMP_MAX_VALUE)
            )
            self.assertRaises(ValueError, to_box, argument, payload(cap + 1))

    def test_from_box_cap_chunks(self) -> None:
        """
        The receiver refuses chunks adding up to more than C{max_size}, and
        accepts exactly C{max_size}.
        """
        cap = AMP_MAX_VALUE + 10
        argument = ChunkedBytes(max_size=cap)
        big = to_box(ChunkedBytes(), payload(cap + 1))
        self.assertRaises(ValueError, from_box, argument, big)
        exact = to_box(ChunkedBytes(), payload(cap))
        self.assertEqual(from_box(argument, exact), {"blob": payload(cap)})

    def test_from_box_cap_first_chunk(self) -> None:
        """
        The receiver refuses a value above C{max_size} even when it fits in the
        first key alone (a cap below 64 KiB).
        """
        argument = ChunkedBytes(max_size=10)
        self.assertEqual(from_box(argument, {b"blob": b"x" * 10}), {"blob": b"x" * 10})
        self.assertRaises(ValueError, from_box, argument, {b"blob": b"x" * 11})


class HandlerNameTests(SynchronousTestCase):
    def test_accepted(self) -> None:
        """
        A dotted module path, a colon and a dotted attribute path is a handler
        name.
        """
        for name in (
            "pkg.mod:attr",
            "a:b.c",
            "a:b",
            "_priv._mod:_f",
            "m1.m_2:Cls.method",
            "caf\u00e9:h\u00e4ndler",
        ):
            self.assertTrue(HANDLER_NAME.match(name), name)

    def test_refused(self) -> None:
        """
        Anything else is not a handler name: no colon, an empty side, spaces,
        calls, empty or leading-digit parts, two colons, other punctuation.
        """
        for name in (
            "",
            "pkg.mod",
            "pkg.mod:",
            ":x",
            ":",
            "a b:c",
            "a:b c",
            " a:b",
            "a:b ",
            "pkg.mod:attr()",
            "pkg..mod:x",
            ".pkg:x",
            "pkg.:x",
            "pkg:x.",
            "pkg:x..y",
            "1pkg:x",
            "pkg:1x",
            "pkg:a:b",
            "pkg-mod:x",
            "pkg/mod:x",
            "pkg.mod:x[0]",
            "pkg.mod:x;import os",
        ):
            self.assertFalse(HANDLER_NAME.match(name), repr(name))

    def test_refused_trailing_newline(self) -> None:
        """
        A name followed by a newline is not a handler name (C{$} alone would
        let it through).
        """
        for name in ("pkg.mod:attr\n", "a:b\n", "a:b\r\n", "a:b\nc"):
            self.assertFalse(HANDLER_NAME.match(name), repr(name))


class CommandDeclarationTests(SynchronousTestCase):
    def test_error_maps(self) -> None:
        """
        CheckHandler declares L{HandlerImportError} and RunBatch declares
        L{BatchDecodingError}, so each arrives in the parent as its own type.
        """
        self.assertIn(HandlerImportError, CheckHandler.errors)
        self.assertIn(BatchDecodingError, RunBatch.errors)

    def test_command_names_distinct(self) -> None:
        """
        The commands have their own names, distinct from ampoule's (whose
        C{Ping} is broken on Python 3).
        """
        names = {CheckHandler.commandName, RunBatch.commandName, Ping.commandName}
        self.assertEqual(len(names), 3)
        for name in names:
            self.assertTrue(name.startswith(b"actordispatch:"), name)
