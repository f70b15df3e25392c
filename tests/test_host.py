"""
Unit tests for L{actordispatch.children.host}: the child's AMP host, driven in memory
over
C{iosim} by a plain AMP client standing in for the parent.  No processes.
"""

from __future__ import annotations

import json
import os
from typing import Any

from twisted.internet.defer import Deferred
from twisted.protocols import amp
from twisted.python.failure import Failure
from twisted.test.iosim import IOPump, connectedServerAndClient
from twisted.trial.unittest import SynchronousTestCase

from actordispatch._core.errors import BatchDecodingError, HandlerImportError
from actordispatch._wire.codec import decode_records, encode_batch, encode_event
from actordispatch._wire.commands import CheckHandler, Ping, RunBatch
from actordispatch.children.host import MAX_TRACEBACK, HandlerHost, error_type_name
from tests import helpers

MIB = 1024 * 1024


class Host(HandlerHost):
    """
    A L{HandlerHost} whose lost connection is only recorded: ampoule's
    C{AMPChild.connectionLost} stops the reactor and calls C{os._exit}, which
    would end the test run.
    """

    lost: Failure | None = None

    def connectionLost(self, reason: Failure) -> None:
        self.lost = reason
        amp.AMP.connectionLost(self, reason)


def h(name: str) -> str:
    """
    The full name of the handler C{name} in L{tests.helpers}.
    """
    return f"tests.helpers:{name}"


class HostTestCase(SynchronousTestCase):
    """
    Connects a L{Host} (the child) to a plain AMP client (the parent).
    """

    max_result_size: str | None = None

    def setUp(self) -> None:
        for call in helpers.clock.getDelayedCalls():
            call.cancel()
        kwargs = {}
        if self.max_result_size is not None:
            kwargs["config"] = json.dumps({"max_result_size": self.max_result_size})
        self.client: amp.AMP
        self.host: Host
        self.pump: IOPump
        self.client, self.host, self.pump = connectedServerAndClient(
            lambda: Host(**kwargs), amp.AMP
        )

    def call(self, command: type[amp.Command], **kwargs: Any) -> Deferred[Any]:
        """
        Send C{command}, deliver all pending I/O, and return its answer.  (The
        answer is moved to a fresh Deferred at once, so AMP never finds an
        error unhandled and drops the connection.)
        """
        answer: Deferred[Any] = Deferred()
        self.client.callRemote(command, **kwargs).chainDeferred(answer)
        self.pump.flush()
        return answer

    def run_batch(self, items: list[tuple[str, Any]]) -> Deferred[Any]:
        """
        Send C{(handler name, event)} pairs as one RunBatch.
        """
        batch = encode_batch([(name, encode_event(event)) for name, event in items])
        return self.call(RunBatch, batch=batch)

    def records(self, answer: Deferred[Any], count: int) -> list[dict[str, Any]]:
        """
        The reply records of a RunBatch answer that has arrived, as the parent
        decodes them; the answer carries this process's resident memory (the
        default configuration asks for it), and no pid.
        """
        result = self.successResultOf(answer)
        self.assertGreater(result["rss"], 0)
        self.assertIsNone(result.get("pid"))
        return decode_records(result["records"], count)

    def run_records(self, items: list[tuple[str, Any]]) -> list[dict[str, Any]]:
        """
        Run a batch whose handlers all settle at once, and return its records.
        """
        return self.records(self.run_batch(items), len(items))

    def assertOk(self, record: dict[str, Any], value: Any) -> None:
        """
        C{record} is an ok record carrying C{value}, with a duration.
        """
        self.assertEqual(record["s"], "ok", record)
        self.assertEqual(record["v"], value)
        self.assertIsInstance(record["d"], float)
        self.assertGreaterEqual(record["d"], 0)

    def assertError(self, record: dict[str, Any], kind: str, message: str) -> None:
        """
        C{record} is an error record of type C{kind} whose message contains
        C{message}.
        """
        self.assertEqual(record["s"], "error", record)
        self.assertEqual(record["t"], kind)
        self.assertIn(message, record["m"])
        self.assertIsInstance(record["d"], float)

    def assertServing(self) -> None:
        """
        The child still has its connection and answers a Ping.
        """
        self.assertIsNone(self.host.lost)
        self.assertEqual(self.successResultOf(self.call(Ping))["pid"], os.getpid())


class PingTests(HostTestCase):
    def test_ping(self) -> None:
        """
        Ping answers with the child's pid and the sandbox layers it applied
        (none here).
        """
        self.assertEqual(
            self.successResultOf(self.call(Ping)), {"pid": os.getpid(), "sandbox": "{}"}
        )


class CheckHandlerTests(HostTestCase):
    def test_ok(self) -> None:
        """
        A name that imports to a callable is confirmed with the child's pid, for
        functions, classes and nested attributes alike.
        """
        for name in (h("echo"), h("async_double"), h("BoomError"), "os.path:join"):
            self.assertEqual(
                self.successResultOf(self.call(CheckHandler, handler=name)),
                {"pid": os.getpid()},
            )

    def test_errors(self) -> None:
        """
        An unimportable module, a missing attribute, something not callable, or
        a malformed name fails with L{HandlerImportError}, whose message names
        the handler; the child keeps serving.
        """
        for name, reason in (
            ("tests.no_such_module_here:f", "ModuleNotFoundError"),
            (h("no_such_handler"), "AttributeError"),
            (h("echo.missing"), "AttributeError"),
            (h("not_callable"), "not callable"),
            ("tests.helpers", "not a name"),
            (h("echo()"), "not a name"),
            ("", "not a name"),
        ):
            failure = self.failureResultOf(
                self.call(CheckHandler, handler=name), HandlerImportError
            )
            self.assertIn(repr(name), str(failure.value))
            self.assertIn(reason, str(failure.value))
        self.assertServing()


class RunBatchTests(HostTestCase):
    def test_plain_values(self) -> None:
        """
        Handlers returning plain values answer ok records carrying them, with
        the event's types rebuilt in the child.
        """
        records = self.run_records(
            [
                (h("echo"), {"a": [1, None]}),
                (h("double"), 21),
                (h("size"), (1, 2, 3)),
                (h("echo"), None),
            ]
        )
        self.assertOk(records[0], {"a": [1, None]})
        self.assertOk(records[1], 42)
        self.assertOk(records[2], 3)
        self.assertOk(records[3], None)

    def test_raising(self) -> None:
        """
        A handler's exception becomes an error record with its type name
        (short for builtins), message and traceback text; the other handlers of
        the batch still run and the child keeps serving.
        """
        records = self.run_records(
            [(h("boom"), 1), (h("value_error"), "x"), (h("double"), 2)]
        )
        self.assertError(records[0], "tests.helpers.BoomError", "boom for 1")
        self.assertIn("Traceback", records[0]["tb"])
        self.assertIn("helpers.py", records[0]["tb"])
        self.assertIn("in boom", records[0]["tb"])
        self.assertIn("BoomError", records[0]["tb"])
        self.assertError(records[1], "ValueError", "bad value 'x'")
        self.assertIn("in value_error", records[1]["tb"])
        self.assertOk(records[2], 4)
        self.assertServing()

    def test_system_exit(self) -> None:
        """
        A handler raising C{SystemExit} gets an error record; the child does
        not exit.
        """
        records = self.run_records([(h("exit_child"), 0), (h("echo"), 1)])
        self.assertError(records[0], "SystemExit", "3")
        self.assertOk(records[1], 1)
        self.assertServing()

    def test_long_traceback_capped(self) -> None:
        """
        A traceback longer than C{MAX_TRACEBACK} characters is cut, keeping its
        end (where the error is).
        """
        [record] = self.run_records([(h("deep"), 400)])
        tb = record["tb"]
        self.assertTrue(tb.startswith("...(truncated)...\n"), tb[:100])
        self.assertLessEqual(len(tb), MAX_TRACEBACK + len("...(truncated)...\n"))
        self.assertIn("deep down", tb[-200:])

    def test_import_failure(self) -> None:
        """
        A handler that cannot be imported gets an error record naming it; the
        rest of the batch runs.
        """
        records = self.run_records([(h("nope"), 1), ("bad name", 1), (h("echo"), 2)])
        self.assertError(
            records[0],
            "actordispatch._core.errors.HandlerImportError",
            "tests.helpers:nope",
        )
        self.assertError(
            records[1], "actordispatch._core.errors.HandlerImportError", "'bad name'"
        )
        self.assertOk(records[2], 2)

    def test_deferred_already_fired(self) -> None:
        """
        A handler returning a Deferred that has already fired answers at once.
        """
        records = self.run_records([(h("fired"), [1, 2]), (h("echo"), 3)])
        self.assertOk(records[0], [1, 2])
        self.assertOk(records[1], 3)

    def test_deferred_fired_later(self) -> None:
        """
        A handler returning a pending Deferred holds the answer until it fires;
        its record (ok, or error if it fails) then takes its place in order.
        """
        answer = self.run_batch(
            [
                (h("later"), {"delay": 5, "value": "a"}),
                (h("later_boom"), {"delay": 2}),
                (h("echo"), "c"),
            ]
        )
        self.assertNoResult(answer)
        helpers.clock.advance(4)
        self.pump.flush()
        self.assertNoResult(answer)
        helpers.clock.advance(1)
        self.pump.flush()
        self.assertNoResult(answer)
        helpers.clock.advance(2)
        self.pump.flush()
        records = self.records(answer, 3)
        self.assertOk(records[0], "a")
        self.assertError(records[1], "tests.helpers.BoomError", "boom for")
        self.assertOk(records[2], "c")
        self.assertServing()

    def test_async_def(self) -> None:
        """
        An C{async def} handler is run as a coroutine: its return value or its
        exception makes the record, whether it completes at once or later.
        """
        answer = self.run_batch(
            [
                (h("async_double"), 5),
                (h("async_later"), {"delay": 3, "value": [1]}),
                (h("async_boom"), 7),
            ]
        )
        self.assertNoResult(answer)
        helpers.clock.advance(3)
        self.pump.flush()
        records = self.records(answer, 3)
        self.assertOk(records[0], 10)
        self.assertOk(records[1], [1])
        self.assertError(records[2], "tests.helpers.BoomError", "async boom for 7")

    def test_unencodable_result(self) -> None:
        """
        A result the codec cannot carry becomes an error record saying so; the
        batch goes on and the child keeps serving.
        """
        records = self.run_records([(h("unencodable"), 1), (h("double"), 1)])
        self.assertError(
            records[0],
            "actordispatch._core.errors.EventEncodingError",
            "builtins:object",
        )
        self.assertOk(records[1], 2)
        self.assertServing()
        self.assertOk(self.run_records([(h("echo"), "again")])[0], "again")

    def test_lone_surrogate_result(self) -> None:
        """
        A result holding a lone surrogate (an undecodable file name) gets a
        record of its own, ok or error; it does not cost the batch its other
        records, nor the child its connection.
        """
        records = self.run_records([(h("lone_surrogate"), 0), (h("double"), 4)])
        if records[0]["s"] == "ok":
            self.assertEqual(records[0]["v"], helpers.lone_surrogate(0))
        else:
            self.assertEqual(records[0]["s"], "error")
        self.assertOk(records[1], 8)
        self.assertServing()

    def test_several_in_order(self) -> None:
        """
        The records of a batch come in the order of its invocations, whatever
        each handler did.
        """
        items: list[tuple[str, Any]] = []
        for i in range(30):
            items.append((h(("echo", "double", "boom", "fired")[i % 4]), i))
        records = self.run_records(items)
        for i, record in enumerate(records):
            if i % 4 == 2:
                self.assertError(record, "tests.helpers.BoomError", f"boom for {i}")
            else:
                self.assertOk(record, i * 2 if i % 4 == 1 else i)

    def test_long_batch_of_deferreds(self) -> None:
        """
        A long batch of handlers that return already fired Deferreds, or are
        coroutines that complete at once, answers every record (running them
        does not nest one call deeper per invocation).
        """
        for name in ("fired", "async_double"):
            records = self.run_records([(h(name), i) for i in range(1000)])
            self.assertEqual(len(records), 1000)
            self.assertEqual({r["s"] for r in records}, {"ok"})
        self.assertServing()

    def test_one_mib_batch(self) -> None:
        """
        A batch above 1 MiB, and an answer above 1 MiB, cross a real AMP
        connection whole (chunked under AMP's 64 KiB limit).
        """
        blob = "x" * MIB + "\u00e9"
        records = self.run_records([(h("echo"), blob), (h("size"), blob)])
        self.assertOk(records[0], blob)
        self.assertOk(records[1], MIB + 1)

    def test_malformed_batch(self) -> None:
        """
        A batch that is not a JSON list of [name, event] pairs fails the whole
        call with L{BatchDecodingError}; the child keeps serving.
        """
        for batch in (b"", b"not json", b"{}", b'[["a:b"]]', b"[[1, 2]]"):
            self.failureResultOf(self.call(RunBatch, batch=batch), BatchDecodingError)
        self.assertServing()

    def test_empty_batch(self) -> None:
        """
        An empty batch answers no records.
        """
        self.assertEqual(self.run_records([]), [])


class ResultSizeTests(HostTestCase):
    max_result_size = "100"

    def test_too_large(self) -> None:
        """
        A result whose encoding is above C{max_result_size} becomes an error
        record of type C{actordispatch.ResultTooLargeError}; one at the cap is
        ok, and the child keeps serving.
        """
        records = self.run_records(
            [
                (h("text"), {"char": "x", "count": 99}),
                (h("text"), {"char": "x", "count": 98}),
                (h("double"), 1),
            ]
        )
        self.assertError(records[0], "actordispatch.ResultTooLargeError", "101 bytes")
        self.assertIn("100", records[0]["m"])
        self.assertOk(records[1], "x" * 98)
        self.assertOk(records[2], 2)
        self.assertServing()

    def test_cap_counts_bytes(self) -> None:
        """
        The cap counts the UTF-8 bytes of the encoded result, not its
        characters: 50 euro signs encode to 152 bytes, above a cap of 100.
        """
        [record] = self.run_records([(h("text"), {"char": "\u20ac", "count": 50})])
        self.assertEqual(record["s"], "error", record)
        self.assertEqual(record["t"], "actordispatch.ResultTooLargeError")


class ErrorTypeNameTests(SynchronousTestCase):
    def test_names(self) -> None:
        """
        Builtin errors are named by their bare name, others by module and
        qualified name.
        """
        self.assertEqual(error_type_name(ValueError), "ValueError")
        self.assertEqual(error_type_name(helpers.BoomError), "tests.helpers.BoomError")
        self.assertEqual(
            error_type_name(HandlerImportError),
            "actordispatch._core.errors.HandlerImportError",
        )
