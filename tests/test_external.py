"""
Unit tests for L{actordispatch._external.server}: the AMP endpoint for external
processes, in memory (iosim, a Clock, and a FakePool as the dispatcher's local
pool): no processes, no sockets.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path
from types import ModuleType
from typing import Any

from twisted.internet.address import UNIXAddress
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.protocols import amp
from twisted.test.iosim import IOPump, connectedServerAndClient
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from actordispatch import DispatchResult, EventDispatcher
from actordispatch._core.invocation import Invocation
from actordispatch._external.listen import (
    AMPListener,
    InsecureEndpointError,
    TLSServerOptions,
    listen,
)
from actordispatch._external.server import (
    DispatcherAMP,
    DispatcherAMPFactory,
    Fire,
    Invoke,
    ListHandlers,
    RegisterHandler,
    RemoteHandlerError,
    RemotePool,
    UnregisterHandler,
)
from actordispatch._wire.codec import decode_event, encode_event
from actordispatch.interfaces import IHandlerPool, IRoutedPool, ITimedPool
from actordispatch.testing import FakeCall, FakePool

LOCAL = "tests.test_external:local_handler"


def local_handler(event: Any) -> Any:
    """
    A handler of the dispatcher's own pool (the FakePool answers for it).
    """
    return event


class Planted:
    """
    A class a peer names in a tagged event: it must never be built.
    """

    built = 0

    def __init__(self, **fields: Any) -> None:
        Planted.built += 1


class Peer(amp.AMP):
    """
    The external process's end, as a test drives it: every L{Invoke} waits in
    C{invocations} until the test answers its Deferred.
    """

    def __init__(self) -> None:
        super().__init__()
        self.invocations: list[tuple[dict[str, Any], Deferred[dict[str, Any]]]] = []

    @Invoke.responder
    def invoke(
        self,
        handler_id: int,
        handler: str,
        phase: str,
        event: bytes,
        timeout: float | None = None,
    ) -> Deferred[dict[str, Any]]:
        answer: Deferred[dict[str, Any]] = Deferred()
        arguments = {
            "handler_id": handler_id,
            "handler": handler,
            "phase": phase,
            "event": json.loads(event),
            "timeout": timeout,
        }
        self.invocations.append((arguments, answer))
        return answer


def ok_local(call: FakeCall) -> None:
    call.succeed({"seen": decode_event(call.invocation.event)})


class Harness:
    """
    A running dispatcher (local pool: a FakePool), its AMP factory, and one
    connected peer.
    """

    def __init__(self, test: SynchronousTestCase, **factory_options: Any) -> None:
        self.test = test
        self.clock = Clock()
        self.local = FakePool(answer=ok_local)
        self.dispatcher = EventDispatcher(
            ("kind", "user"),
            ("before", "during"),
            reactor=self.clock,
            pool=self.local,
            **factory_options.pop("dispatcher_options", {}),
        )
        self.dispatcher.start()
        self.factory = DispatcherAMPFactory(
            self.dispatcher, reactor=self.clock, **factory_options
        )
        self.peer, self.server, self.pump = self.connect()

    def connect(self) -> tuple[Peer, DispatcherAMP, IOPump]:
        peer, server, pump = connectedServerAndClient(
            lambda: self.factory.buildProtocol(None), Peer
        )
        assert server is not None
        return peer, server, pump

    def call(self, command: type[amp.Command], peer: Peer | None = None, **kw: Any):
        """
        Call C{command} from the peer and pump until it is answered.
        """
        return self.relay((peer or self.peer).callRemote(command, **kw))

    def relay(self, sent: Deferred[Any]) -> Deferred[Any]:
        """
        Pump, and relay what C{sent} got on a fresh Deferred: AMP hands a
        failure that has no errback yet to its own "unhandled" handler, which
        drops the connection.
        """
        out: Deferred[Any] = Deferred()
        sent.addBoth(lambda result: out.callback(result))
        self.pump.flush()
        return out

    def result(self, command: type[amp.Command], **kw: Any) -> Any:
        return self.test.successResultOf(self.call(command, **kw))

    def error(self, command: type[amp.Command], **kw: Any) -> bytes:
        """
        Call C{command}, which must fail; return the error code it failed
        with on the wire (the client maps a known code to its exception
        class, and back here).
        """
        failure = self.test.failureResultOf(self.call(command, **kw))
        value = failure.value
        if isinstance(value, amp.RemoteAmpError):
            return value.errorCode
        return command.errors[type(value)]

    def error_description(self, command: type[amp.Command], **kw: Any) -> str:
        """
        Call C{command}, which must fail with C{BAD_HANDLER}; return the
        error's description.
        """
        failure = self.test.failureResultOf(self.call(command, **kw))
        self.test.assertEqual(command.errors[type(failure.value)], b"BAD_HANDLER")
        return str(failure.value)

    @property
    def closed(self) -> bool:
        """
        Whether the dispatcher's end of the connection is closed.
        """
        return self.server not in self.factory.connections

    def register(self, name: str = "work", phase: str = "during", **kw: Any) -> int:
        answer = self.result(RegisterHandler, name=name, phase=phase, **kw)
        return int(answer["handler_id"])

    def fire(self, event: Any, **keywords: Any) -> Deferred[DispatchResult]:
        d = self.dispatcher.fire_event(event, **keywords)
        self.pump.flush()
        return d

    def answer(self, index: int, value: Any, **extra: Any) -> None:
        _, d = self.peer.invocations[index]
        d.callback({"value": json.dumps(value).encode(), **extra})
        self.pump.flush()


class FireTests(SynchronousTestCase):
    def test_round_trip(self) -> None:
        """
        Fire from an external process runs the dispatcher's matching handlers
        and answers every outcome as JSON, with C{ok}.
        """
        h = Harness(self)
        self.successResultOf(h.dispatcher.add_event_handler(LOCAL, "during"))
        answer = h.result(
            Fire,
            event=json.dumps({"user": "bob", "n": [1, 2]}).encode(),
            keywords=json.dumps({"kind": "created"}),
        )
        self.assertTrue(answer["ok"])
        [outcome] = json.loads(answer["outcomes"])
        self.assertEqual(outcome["status"], "ok")
        self.assertEqual(outcome["handler"], LOCAL)
        self.assertEqual(outcome["phase"], "during")
        self.assertEqual(outcome["value"], {"seen": {"user": "bob", "n": [1, 2]}})
        self.assertEqual(
            set(outcome),
            {
                "handler_id",
                "handler",
                "phase",
                "status",
                "value",
                "error_type",
                "error_message",
                "traceback",
                "duration",
                "pid",
                "veto",
            },
        )

    def test_large_event(self) -> None:
        """
        An event over AMP's 64 KiB value limit arrives whole, in chunks.
        """
        h = Harness(self)
        self.successResultOf(h.dispatcher.add_event_handler(LOCAL, "during"))
        big = "x" * 300_000
        answer = h.result(Fire, event=json.dumps(big).encode())
        [outcome] = json.loads(answer["outcomes"])
        self.assertEqual(outcome["value"], {"seen": big})

    def test_tags_decoded_plain(self) -> None:
        """
        An event carrying the codec's type tags is decoded with the plain
        decoder: a class it names is never imported or built; its fields
        arrive as a plain object.
        """
        h = Harness(self)
        self.successResultOf(h.dispatcher.add_event_handler(LOCAL, "during"))
        tagged = {
            "__ad__": "attrs",
            "type": "tests.test_external:Planted",
            "fields": {"x": 1},
        }
        answer = h.result(Fire, event=json.dumps(tagged).encode())
        [outcome] = json.loads(answer["outcomes"])
        self.assertEqual(outcome["value"], {"seen": {"x": 1}})
        self.assertEqual(Planted.built, 0)

    def test_bad_keywords(self) -> None:
        """
        Keywords that are not a JSON object of scalars, that the dispatcher
        does not allow, or that are reserved names, fail with BAD_KEYWORD and
        nothing is fired.
        """
        h = Harness(self)
        for keywords in (
            "[1]",
            "{not json",
            json.dumps({"kind": [1]}),
            json.dumps({"colour": "red"}),
            json.dumps({"event": 1}),
            '{"kind": NaN}',
        ):
            error = h.error(Fire, event=b"{}", keywords=keywords)
            self.assertEqual(error, b"BAD_KEYWORD", keywords)
        self.assertEqual(h.dispatcher.stats().accepted, 0)

    def test_bad_event(self) -> None:
        """
        An event that is not JSON, or that the dispatcher cannot encode (over
        its size cap), fails with BAD_EVENT.
        """
        h = Harness(self, dispatcher_options={"max_event_size": 100})
        self.assertEqual(h.error(Fire, event=b"{nope"), b"BAD_EVENT")
        big = json.dumps("y" * 200).encode()
        self.assertEqual(h.error(Fire, event=big), b"BAD_EVENT")

    def test_not_running(self) -> None:
        """
        Firing on a stopped dispatcher fails with NOT_RUNNING.
        """
        h = Harness(self)
        self.successResultOf(h.dispatcher.stop())
        self.assertEqual(h.error(Fire, event=b"{}"), b"NOT_RUNNING")

    def test_overloaded(self) -> None:
        """
        Firing while the dispatcher's queue is full fails with OVERLOADED.
        """
        h = Harness(self, dispatcher_options={"max_queue": 0})
        h.local.answer = None
        self.successResultOf(h.dispatcher.add_event_handler(LOCAL, "during"))
        first = h.call(Fire, event=b"1")
        self.assertNoResult(first)
        self.assertEqual(h.error(Fire, event=b"2"), b"OVERLOADED")
        h.local.pending()[0].succeed(1)
        h.pump.flush()
        self.assertTrue(self.successResultOf(first)["ok"])

    def test_malformed_command(self) -> None:
        """
        A command whose arguments do not parse is answered BAD_REQUEST and the
        connection is closed.
        """
        h = Harness(self)
        d = h.relay(h.peer.callRemoteString(b"Fire", keywords=b"{}"))  # no event
        failure = self.failureResultOf(d)
        self.assertEqual(failure.value.errorCode, b"BAD_REQUEST")
        self.assertTrue(h.closed)


class RegisterTests(SynchronousTestCase):
    def test_routed_to_peer(self) -> None:
        """
        After RegisterHandler, an event that matches is sent to the peer as
        Invoke (its own handler name, the phase, the event as JSON, the
        timeout) and its answer is the handler's outcome; an event that does
        not match is not sent.
        """
        h = Harness(self)
        handler_id = h.register("work", "during", match=json.dumps({"kind": "a"}))
        number = h.server.number
        [info] = h.dispatcher.handlers()
        self.assertEqual(info.handler, f"external.conn{number}:work")
        self.assertEqual(info.pool, f"amp:{number}")
        h.fire({"x": 1}, kind="b")
        self.assertEqual(h.peer.invocations, [])
        result = h.fire({"x": 1}, kind="a")
        [(arguments, _)] = h.peer.invocations
        self.assertEqual(
            arguments,
            {
                "handler_id": handler_id,
                "handler": "work",
                "phase": "during",
                "event": {"x": 1},
                "timeout": 60.0,
            },
        )
        h.answer(0, {"done": True}, pid=4242, duration=0.25)
        [outcome] = self.successResultOf(result).outcomes
        self.assertEqual(outcome.status, "ok")
        self.assertEqual(outcome.value, {"done": True})
        self.assertEqual(outcome.pid, 4242)
        self.assertEqual(outcome.duration, 0.25)
        self.assertEqual(outcome.handler, f"external.conn{number}:work")

    def test_event_sent_plain(self) -> None:
        """
        An event the codec tags (a tuple, a date) reaches the peer as plain
        JSON (a list, an ISO string).
        """
        import datetime

        h = Harness(self)
        h.register()
        h.fire({"t": (1, 2), "d": datetime.date(2024, 5, 1)})
        self.assertEqual(
            h.peer.invocations[0][0]["event"], {"t": [1, 2], "d": "2024-05-01"}
        )

    def test_timeout_option(self) -> None:
        """
        A registration's timeout is the one Invoke carries and enforces.
        """
        h = Harness(self)
        h.register(timeout=2.5)
        h.fire(1)
        self.assertEqual(h.peer.invocations[0][0]["timeout"], 2.5)

    def test_max_calls(self) -> None:
        """
        max_calls=1: the handler runs once, then is gone.
        """
        h = Harness(self)
        h.register(max_calls=1)
        h.fire(1)
        h.answer(0, None)
        self.assertEqual(h.dispatcher.handlers(), [])

    def test_bad_registrations(self) -> None:
        """
        A bad name, an unknown phase, a match keyword that is not allowed (or
        reserved, or not a scalar), a bad timeout or max_calls fail with
        BAD_HANDLER and register nothing.
        """
        h = Harness(self)
        for kw in (
            {"name": "no-dashes"},
            {"name": "a:b"},
            {"name": "x" * 201},
            {"name": ""},
            {"phase": "after"},
            {"match": json.dumps({"colour": "red"})},
            {"match": json.dumps({"pool": "default"})},
            {"match": json.dumps({"kind": {"a": 1}})},
            {"match": "[]"},
            {"timeout": -1.0},
            {"timeout": float("inf")},
            {"max_calls": 0},
        ):
            arguments = {"name": "ok", "phase": "during", **kw}
            error = h.error(RegisterHandler, **arguments)
            self.assertEqual(error, b"BAD_HANDLER", kw)
        self.assertEqual(h.dispatcher.handlers(), [])

    def test_handlers_cap(self) -> None:
        """
        Beyond max_handlers_per_connection, RegisterHandler fails OVERLOADED.
        """
        h = Harness(self, max_handlers_per_connection=2)
        h.register("a")
        h.register("b")
        self.assertEqual(
            h.error(RegisterHandler, name="c", phase="during"),
            b"OVERLOADED",
        )

    def test_handlers_cap_after_max_calls(self) -> None:
        """
        A handler the dispatcher removed itself (its max_calls used up) no
        longer counts toward max_handlers_per_connection: the peer can
        register another in its place, and unregistering the removed one
        fails with UNKNOWN_HANDLER.
        """
        h = Harness(self, max_handlers_per_connection=2)
        once = h.register("once", max_calls=1)
        h.register("stays")
        result = h.fire(1)
        h.answer(0, "once")
        h.answer(1, "stays")
        self.assertTrue(self.successResultOf(result).ok)
        self.assertNotIn(once, [i.handler_id for i in h.dispatcher.handlers()])
        h.register("another")
        self.assertEqual(
            h.error(RegisterHandler, name="third", phase="during"), b"OVERLOADED"
        )
        self.assertEqual(
            h.error(UnregisterHandler, handler_id=once), b"UNKNOWN_HANDLER"
        )

    def test_unregister(self) -> None:
        """
        UnregisterHandler removes the peer's own handler; an id it did not
        register (or already removed) fails with UNKNOWN_HANDLER.
        """
        h = Harness(self)
        handler_id = h.register()
        local_id = self.successResultOf(h.dispatcher.add_event_handler(LOCAL, "during"))
        self.assertEqual(
            h.error(UnregisterHandler, handler_id=local_id),
            b"UNKNOWN_HANDLER",
        )
        self.assertEqual(h.result(UnregisterHandler, handler_id=handler_id), {})
        self.assertEqual([i.handler_id for i in h.dispatcher.handlers()], [local_id])
        self.assertEqual(
            h.error(UnregisterHandler, handler_id=handler_id),
            b"UNKNOWN_HANDLER",
        )

    def test_list_handlers(self) -> None:
        """
        ListHandlers answers every handler as JSON, marking the peer's own.
        """
        h = Harness(self)
        local_id = self.successResultOf(
            h.dispatcher.add_event_handler(LOCAL, "before", kind="k")
        )
        mine = h.register("work", "during", match=json.dumps({"user": "bob"}))
        listing = json.loads(h.result(ListHandlers)["handlers"])
        by_id = {entry["handler_id"]: entry for entry in listing}
        self.assertEqual(set(by_id), {local_id, mine})
        self.assertFalse(by_id[local_id]["mine"])
        self.assertEqual(by_id[local_id]["match"], {"kind": "k"})
        self.assertTrue(by_id[mine]["mine"])
        self.assertEqual(by_id[mine]["phase"], "during")
        self.assertEqual(by_id[mine]["match"], {"user": "bob"})

    def test_operators(self) -> None:
        """
        A peer registers with operator tables in its match spec; events are
        routed by them; ListHandlers answers them in the same form, for the
        peer's handlers and for local ones registered with operators; a
        malformed table is refused with BAD_HANDLER naming the keyword.
        """
        from actordispatch import Glob, In, Not

        h = Harness(self)
        match = {"kind": {"in": ["a", "b"]}, "user": {"not": {"glob": "bot*"}}}
        mine = h.register("ops", "during", match=json.dumps(match))
        local_id = self.successResultOf(
            h.dispatcher.add_event_handler(LOCAL, "before", user=Not(Glob("x*")))
        )
        (info,) = h.dispatcher.handlers(phase="during")
        self.assertEqual(
            info.match_spec, {"kind": In("a", "b"), "user": Not(Glob("bot*"))}
        )
        for keywords, reaches in [
            ({"kind": "a", "user": "ann"}, True),
            ({"kind": "c", "user": "ann"}, False),
            ({"kind": "b", "user": "bot7"}, False),
            ({"kind": "b"}, False),
        ]:
            self.assertEqual(
                mine in h.dispatcher.explain(**keywords).runs("during"), reaches
            )
        h.fire({}, kind="a", user="ann")
        self.assertEqual(len(h.peer.invocations), 1)
        listing = json.loads(h.result(ListHandlers)["handlers"])
        by_id = {entry["handler_id"]: entry for entry in listing}
        self.assertEqual(by_id[mine]["match"], match)
        self.assertEqual(by_id[local_id]["match"], {"user": {"not": {"glob": "x*"}}})
        for bad, fragment in [
            ({"kind": {"in": []}}, "match.kind: In() needs at least one value"),
            ({"kind": {"near": 1}}, "match.kind: unknown operator near"),
            ({"kind": {"in": ["a"], "not": "b"}}, "match.kind: an operator table"),
            ({"user": {"not": None}}, "match.user: Not(None) is not allowed"),
            ({"user": {"glob": 3}}, "match.user: Glob() takes a string"),
        ]:
            description = h.error_description(
                RegisterHandler, name="bad", phase="during", match=json.dumps(bad)
            )
            self.assertIn(fragment, description)


class FiniteNumberTests(SynchronousTestCase):
    """
    The protocol's numbers are finite: C{NaN}, C{Infinity} and numbers beyond
    a float's range (C{1e400}, which Python's JSON reader turns into
    infinity) are refused wherever a peer sends JSON, with that place's
    error code.
    """

    NON_FINITE = ("1e400", "-1e400", "NaN", "Infinity", "-Infinity")

    def test_fire_keywords(self) -> None:
        """
        Fired keywords with a number that is not finite fail with
        BAD_KEYWORD, and nothing is fired.
        """
        h = Harness(self)
        for number in self.NON_FINITE:
            keywords = '{"user": N}'.replace("N", number)
            self.assertEqual(
                h.error(Fire, event=b"{}", keywords=keywords), b"BAD_KEYWORD", number
            )
        self.assertEqual(h.dispatcher.stats().accepted, 0)

    def test_fire_event(self) -> None:
        """
        An event with a number that is not finite, anywhere in it, fails with
        BAD_EVENT, fired as a follow-up (C{within}) too.
        """
        h = Harness(self)
        handler_id = h.register("work", "during", match=json.dumps({"kind": "ext"}))
        invoked = h.fire({}, kind="ext")
        for number in self.NON_FINITE:
            for event in (number, '{"a": [1, {"b": N}]}'.replace("N", number)):
                self.assertEqual(
                    h.error(Fire, event=event.encode()), b"BAD_EVENT", event
                )
                self.assertEqual(
                    h.error(Fire, event=event.encode(), within=handler_id),
                    b"BAD_EVENT",
                    event,
                )
        self.assertEqual(h.dispatcher.stats().accepted, 1)
        h.answer(0, None)
        self.assertTrue(self.successResultOf(invoked).ok)

    def test_register_match(self) -> None:
        """
        A match spec with a number that is not finite, as a value or inside
        an operator table, fails with BAD_HANDLER and registers nothing.
        """
        h = Harness(self)
        for number in self.NON_FINITE:
            for match in (
                '{"user": N}'.replace("N", number),
                '{"user": {"in": [1, N]}}'.replace("N", number),
                '{"user": {"not": N}}'.replace("N", number),
            ):
                error = h.error(RegisterHandler, name="n", phase="during", match=match)
                self.assertEqual(error, b"BAD_HANDLER", match)
        self.assertEqual(h.dispatcher.handlers(), [])

    def test_invoke_answer(self) -> None:
        """
        An Invoke answer whose value holds a number that is not finite cannot
        be parsed: the invocation ends "crashed" (ProtocolError) and the peer
        is dropped, as for a value that is not JSON.
        """
        for number in self.NON_FINITE:
            h = Harness(self)
            h.register()
            result = h.fire(1)
            value = '{"v": [N]}'.replace("N", number).encode()
            h.peer.invocations[0][1].callback({"value": value})
            h.pump.flush()
            [outcome] = self.successResultOf(result).outcomes
            self.assertEqual(
                (outcome.status, outcome.error_type),
                ("crashed", "actordispatch.ProtocolError"),
                number,
            )
            self.assertIn("not JSON", outcome.error_message or "")
            self.assertTrue(h.closed, number)


class WireFormTests(SynchronousTestCase):
    """
    What the dispatcher writes is what docs/amp-protocol.rst says it writes.
    """

    def test_event_tags(self) -> None:
        """
        An event reaches the peer as plain JSON but for the two tags the
        protocol page names: bytes, and a mapping whose keys are not all
        strings, whose keys are plain JSON too (a tuple key is a list, not a
        nested tag); an object that has the tag's own key is wrapped in the
        mapping tag, so that the peer never takes data for a tag.
        """
        h = Harness(self)
        h.register()
        h.fire(
            {
                "k": {(1, 2): "x", 3: ("y", frozenset({4}))},
                "raw": {"__ad__": "bytes", "b64": "not a tag"},
                "b": b"hi",
            }
        )
        self.assertEqual(
            h.peer.invocations[0][0]["event"],
            {
                "k": {"__ad__": "dict", "items": [[[1, 2], "x"], [3, ["y", [4]]]]},
                "raw": {
                    "__ad__": "dict",
                    "items": [["__ad__", "bytes"], ["b64", "not a tag"]],
                },
                "b": {"__ad__": "bytes", "b64": "aGk="},
            },
        )

    def test_outcome_values(self) -> None:
        """
        Values in Fire's outcomes follow the same rule as events: a tuple is
        a list, in a mapping's keys too.
        """
        import datetime

        h = Harness(self)
        h.local.answer = lambda call: call.succeed(
            {"t": (1, 2), "d": datetime.date(2024, 5, 1), "m": {(1, 2): (3, 4)}}
        )
        self.successResultOf(h.dispatcher.add_event_handler(LOCAL, "during"))
        answer = h.result(Fire, event=b"{}")
        [outcome] = json.loads(answer["outcomes"])
        self.assertEqual(
            outcome["value"],
            {
                "t": [1, 2],
                "d": "2024-05-01",
                "m": {"__ad__": "dict", "items": [[[1, 2], [3, 4]]]},
            },
        )

    def test_listed_timeout(self) -> None:
        """
        ListHandlers shows the timeout an external handler's Invoke carries:
        its own, else the factory's default_timeout (never null for them).
        """
        h = Harness(self, default_timeout=7.5)
        default = h.register("default")
        own = h.register("own", timeout=2.5)
        listing = json.loads(h.result(ListHandlers)["handlers"])
        timeouts = {entry["handler_id"]: entry["timeout"] for entry in listing}
        self.assertEqual(timeouts, {default: 7.5, own: 2.5})
        h.fire(1)
        carried = {a["handler_id"]: a["timeout"] for a, _ in h.peer.invocations}
        self.assertEqual(carried, timeouts)

    def test_listed_timeout_of_other_pools(self) -> None:
        """
        A handler of another pool that set no timeout lists its pool's
        default_timeout when the pool declares L{ITimedPool}, and null when
        it does not, even if it has an attribute of that name (capabilities
        are declared, not probed).
        """

        @implementer(ITimedPool)
        class TimedPool(FakePool):
            default_timeout = 12.5

        class UndeclaredPool(FakePool):
            default_timeout = 99.0

        h = Harness(self)
        h.test.successResultOf(h.dispatcher.add_pool("timed", TimedPool()))
        h.test.successResultOf(h.dispatcher.add_pool("plain", UndeclaredPool()))
        ids = {
            pool: self.successResultOf(
                h.dispatcher.add_event_handler(local_handler, "during", pool=pool)
            )
            for pool in ("timed", "plain")
        }
        listing = json.loads(h.result(ListHandlers)["handlers"])
        timeouts = {entry["handler_id"]: entry["timeout"] for entry in listing}
        self.assertEqual(timeouts, {ids["timed"]: 12.5, ids["plain"]: None})

    def test_listed_null_match(self) -> None:
        """
        A match spec registered with a null value (no constraint) lists as
        registered, null included; the handler still takes any value there.
        """
        h = Harness(self)
        match = {"user": None, "kind": {"in": ["a", "b"]}}
        handler_id = h.register("work", match=json.dumps(match))
        [entry] = json.loads(h.result(ListHandlers)["handlers"])
        self.assertEqual((entry["handler_id"], entry["match"]), (handler_id, match))
        h.fire(1, kind="a", user="anyone")
        self.assertEqual(len(h.peer.invocations), 1)


class FollowUpTests(SynchronousTestCase):
    def test_fire_within_an_invoke(self) -> None:
        """
        A peer answering an Invoke fires an event with C{within=} its handler
        id: with one event at a time, it still runs at once (a follow-up, one
        level deeper) and is answered before the Invoke is; the same Fire
        without C{within} waits for its turn behind the invoking event.  A
        C{within} naming no running Invoke, or a chain past max_depth, is
        refused with FOLLOW_UP.
        """
        h = Harness(self, dispatcher_options={"max_depth": 1})
        handler_id = h.register("work", "during", match=json.dumps({"kind": "ext"}))
        self.successResultOf(
            h.dispatcher.add_event_handler(LOCAL, "during", kind="local")
        )
        invoked = h.fire({"n": 1}, kind="ext")
        self.assertEqual(len(h.peer.invocations), 1)
        event = json.dumps({"n": 2}).encode()
        keywords = json.dumps({"kind": "local"})
        follow_up = h.result(Fire, event=event, keywords=keywords, within=handler_id)
        (outcome,) = json.loads(follow_up["outcomes"])
        self.assertEqual(outcome["value"], {"seen": {"n": 2}})
        queued = h.call(Fire, event=event, keywords=keywords)
        self.assertNoResult(queued)
        self.assertEqual(
            h.error(Fire, event=event, keywords=keywords, within=handler_id + 100),
            b"FOLLOW_UP",
        )
        h.answer(0, "done")
        self.assertTrue(self.successResultOf(invoked).ok)
        self.assertTrue(self.successResultOf(queued)["ok"])
        # A follow-up of a follow-up: depth 2, past max_depth=1.
        deep = h.dispatcher.fire_follow_up(1, b"{}", {"kind": "ext"}, None)[1]
        h.pump.flush()
        self.assertEqual(len(h.peer.invocations), 2)
        self.assertEqual(
            h.error(Fire, event=event, keywords=keywords, within=handler_id),
            b"FOLLOW_UP",
        )
        h.answer(1, "deep done")
        self.assertTrue(self.successResultOf(deep).ok)


class OutcomeTests(SynchronousTestCase):
    def test_handler_error(self) -> None:
        """
        HANDLER_ERROR from the peer is an "error" outcome with its type,
        message and traceback.
        """
        h = Harness(self)
        h.register()
        result = h.fire(1)
        description = json.dumps(
            {"type": "myapp.Boom", "message": "no", "traceback": "Traceback..."}
        )
        h.peer.invocations[0][1].errback(RemoteHandlerError(description))
        h.pump.flush()
        [outcome] = self.successResultOf(result).outcomes
        self.assertEqual(
            (outcome.status, outcome.error_type, outcome.error_message),
            ("error", "myapp.Boom", "no"),
        )
        self.assertEqual(outcome.traceback, "Traceback...")

    def test_handler_error_not_json(self) -> None:
        """
        A HANDLER_ERROR description that is not the JSON object is the
        message of an "error" outcome.
        """
        h = Harness(self)
        h.register()
        result = h.fire(1)
        h.peer.invocations[0][1].errback(RemoteHandlerError("plain words"))
        h.pump.flush()
        [outcome] = self.successResultOf(result).outcomes
        self.assertEqual(outcome.status, "error")
        self.assertEqual(outcome.error_message, "plain words")

    def test_unknown_error_code(self) -> None:
        """
        An Invoke answered with an error code other than HANDLER_ERROR is an
        "error" outcome of type actordispatch.RemoteError whose message keeps
        the peer's code and description ("CODE: description"); the peer
        stays connected.
        """
        h = Harness(self)
        h.register()
        result = h.fire(1)
        error = amp.RemoteAmpError(b"WEIRD", "weird description")
        h.peer.invocations[0][1].errback(error)
        h.pump.flush()
        [outcome] = self.successResultOf(result).outcomes
        self.assertEqual(
            (outcome.status, outcome.error_type, outcome.error_message),
            ("error", "actordispatch.RemoteError", "WEIRD: weird description"),
        )
        self.assertFalse(h.closed)

    def test_invoke_unhandled(self) -> None:
        """
        A peer that registers a handler but does not implement Invoke answers
        AMP's UNHANDLED: an "error" outcome of type actordispatch.RemoteError
        whose message starts with that code, and the peer stays connected.
        """
        h = Harness(self)
        peer, _, h.pump = connectedServerAndClient(
            lambda: h.factory.buildProtocol(None), amp.AMP
        )
        h.result(RegisterHandler, peer=peer, name="work", phase="during")
        [outcome] = self.successResultOf(h.fire(1)).outcomes
        self.assertEqual(
            (outcome.status, outcome.error_type),
            ("error", "actordispatch.RemoteError"),
        )
        self.assertTrue(
            (outcome.error_message or "").startswith("UNHANDLED: "),
            outcome.error_message,
        )
        self.assertEqual(len(h.dispatcher.handlers()), 1)

    def test_timeout(self) -> None:
        """
        A peer that does not answer within the timeout: "timeout" outcome; its
        late answer is ignored and the next event is served.
        """
        h = Harness(self)
        h.register(timeout=5.0)
        result = h.fire(1)
        h.clock.advance(4.9)
        self.assertNoResult(result)
        h.clock.advance(0.2)
        [outcome] = self.successResultOf(result).outcomes
        self.assertEqual(outcome.status, "timeout")
        self.assertEqual(outcome.error_type, "actordispatch.HandlerTimeout")
        h.answer(0, "late")
        self.assertFalse(h.closed)
        second = h.fire(2)
        h.answer(1, "on time")
        self.assertEqual(self.successResultOf(second).outcomes[0].value, "on time")

    def test_bad_value_drops_peer(self) -> None:
        """
        An Invoke answer whose value is not JSON: "crashed" (ProtocolError)
        and the peer is dropped.
        """
        h = Harness(self)
        h.register()
        result = h.fire(1)
        h.peer.invocations[0][1].callback({"value": b"{not json"})
        h.pump.flush()
        [outcome] = self.successResultOf(result).outcomes
        self.assertEqual(outcome.status, "crashed")
        self.assertEqual(outcome.error_type, "actordispatch.ProtocolError")
        self.assertEqual(h.dispatcher.handlers(), [])

    def test_connection_lost(self) -> None:
        """
        When the peer's connection drops, its in-flight invocation ends
        "crashed" (connection lost), its pool and handlers are removed, and
        later events no longer match them.
        """
        h = Harness(self)
        h.register("a")
        h.register("b", "before")
        self.successResultOf(h.dispatcher.add_event_handler(LOCAL, "during"))
        result = h.fire(1)
        self.assertEqual(len(h.peer.invocations), 1)  # "b", phase "before"
        h.peer.transport.loseConnection()  # type: ignore[union-attr]
        h.pump.flush()
        outcomes = self.successResultOf(result).outcomes
        self.assertEqual(
            [(o.phase, o.status) for o in outcomes],
            [("before", "crashed"), ("during", "skipped"), ("during", "ok")],
        )
        self.assertEqual(outcomes[0].error_type, "actordispatch.ConnectionLost")
        self.assertIn("connection lost", outcomes[0].error_message or "")
        self.assertEqual([i.handler for i in h.dispatcher.handlers()], [LOCAL])
        self.assertNotIn(f"amp:{h.server.number}", h.dispatcher.pools())
        after = self.successResultOf(h.fire(2))
        self.assertEqual([o.handler for o in after.outcomes], [LOCAL])

    def test_in_flight_cap(self) -> None:
        """
        At most max_in_flight_per_connection calls are outstanding; more wait
        in a queue of max_queued_per_connection and are sent as answers free
        room; beyond the queue an invocation ends "crashed" (Overloaded)
        without being sent.
        """
        h = Harness(self, max_in_flight_per_connection=2, max_queued_per_connection=1)
        for name in "abcd":
            h.register(name)
        result = h.fire(1)
        self.assertEqual([a["handler"] for a, _ in h.peer.invocations], ["a", "b"])
        h.answer(0, "a")
        self.assertEqual([a["handler"] for a, _ in h.peer.invocations], ["a", "b", "c"])
        h.answer(1, "b")
        h.answer(2, "c")
        outcomes = self.successResultOf(result).outcomes
        self.assertEqual(
            [(o.status, o.value) for o in outcomes],
            [("ok", "a"), ("ok", "b"), ("ok", "c"), ("crashed", None)],
        )
        self.assertEqual(outcomes[3].error_type, "actordispatch.Overloaded")

    def test_queue_time_not_counted(self) -> None:
        """
        A queued call's timeout starts when it is sent, not while it waits.
        """
        h = Harness(self, max_in_flight_per_connection=1)
        h.register("a", timeout=10.0)
        h.register("b", timeout=10.0)
        result = h.fire(1)
        h.clock.advance(8)
        h.answer(0, "a")
        h.clock.advance(8)
        h.answer(1, "b")
        self.assertTrue(self.successResultOf(result).ok)


class CapTests(SynchronousTestCase):
    def test_box_too_large(self) -> None:
        """
        A box over max_box_bytes drops the peer, and its handlers go.
        """
        h = Harness(self, max_box_bytes=10_000)
        h.register()
        h.call(Fire, event=json.dumps("z" * 20_000).encode())
        self.assertTrue(h.server.broken)
        self.assertTrue(h.closed)
        self.assertEqual(h.dispatcher.handlers(), [])

    def test_too_many_keys(self) -> None:
        """
        A box with more than max_box_keys keys drops the peer.
        """
        h = Harness(self, max_box_keys=8)
        box = amp.AmpBox({b"k%d" % i: b"v" for i in range(20)})
        h.peer.transport.write(box.serialize())  # type: ignore[union-attr]
        h.pump.flush()
        self.assertTrue(h.server.broken)
        self.assertTrue(h.closed)

    def test_half_frame(self) -> None:
        """
        A frame left half-sent for frame_timeout seconds drops the peer.
        """
        h = Harness(self, frame_timeout=3.0)
        h.peer.transport.write(b"\x00\x04_ask")  # type: ignore[union-attr]
        h.pump.flush()
        h.clock.advance(2.9)
        self.assertFalse(h.server.broken)
        h.clock.advance(0.2)
        self.assertTrue(h.server.broken)

    def test_answer_to_nothing(self) -> None:
        """
        An answer to a question never asked drops the peer.
        """
        h = Harness(self)
        box = amp.AmpBox({b"_answer": b"99", b"value": b"1"})
        h.peer.transport.write(box.serialize())  # type: ignore[union-attr]
        h.pump.flush()
        self.assertTrue(h.server.broken)

    def test_connections_cap(self) -> None:
        """
        Beyond max_connections the factory builds no protocol (the connection
        is refused).
        """
        h = Harness(self, max_connections=1)
        self.assertIsNone(h.factory.buildProtocol(None))

    def test_fires_cap(self) -> None:
        """
        Beyond max_fires_per_connection events in flight, Fire fails
        OVERLOADED.
        """
        h = Harness(self, max_fires_per_connection=1)
        h.local.answer = None
        self.successResultOf(h.dispatcher.add_event_handler(LOCAL, "during"))
        first = h.call(Fire, event=b"1")
        self.assertEqual(h.error(Fire, event=b"2"), b"OVERLOADED")
        h.local.pending()[0].succeed(1)
        h.pump.flush()
        self.successResultOf(first)
        h.local.answer = ok_local
        self.assertTrue(h.result(Fire, event=b"3")["ok"])

    def test_disconnect_all(self) -> None:
        """
        disconnect_all closes every connection and fires when they are gone.
        """
        h = Harness(self)
        h.register()
        d = h.factory.disconnect_all()
        h.pump.flush()
        self.successResultOf(d)
        self.assertEqual(h.factory.connections, set())
        self.assertEqual(h.dispatcher.handlers(), [])


class FlowControlTests(SynchronousTestCase):
    """
    What a peer that does not read its answers, or sends commands faster than
    they are answered, can make the dispatcher hold is bounded: see also
    tests/integration/test_external.py, which measures it over TCP.
    """

    def test_commands_held(self) -> None:
        """
        Beyond max_commands_per_connection commands being answered, later
        ones wait unanswered, and run in order as answers free room.
        """
        h = Harness(
            self,
            max_commands_per_connection=2,
            dispatcher_options={"max_in_flight": 10},
        )
        h.local.answer = None
        self.successResultOf(h.dispatcher.add_event_handler(LOCAL, "during"))
        fired = [h.call(Fire, event=str(n).encode()) for n in range(4)]
        self.assertEqual(len(h.local.calls), 2)
        h.local.pending()[0].succeed("first")
        h.pump.flush()
        self.assertEqual(len(h.local.calls), 3)
        for call in h.local.pending():
            call.succeed("later")
        h.pump.flush()
        h.local.pending()[0].succeed("last")
        h.pump.flush()
        events = [decode_event(call.invocation.event) for call in h.local.calls]
        self.assertEqual(events, [0, 1, 2, 3])
        for d in fired:
            self.assertTrue(self.successResultOf(d)["ok"])

    def test_invoke_answers_not_held(self) -> None:
        """
        A peer whose commands are held still gets its Invoke answers read: it
        can fire events its own handler serves, more than the cap at once.
        """
        h = Harness(self, max_commands_per_connection=1)
        h.register("work", "during", match=json.dumps({"kind": "ext"}))
        keywords = json.dumps({"kind": "ext"})
        fired = [h.call(Fire, event=b"1", keywords=keywords) for _ in range(3)]
        for index in range(3):
            self.assertEqual(len(h.peer.invocations), index + 1)
            h.answer(index, index)
        for d in fired:
            self.assertTrue(self.successResultOf(d)["ok"])

    def test_follow_up_not_held(self) -> None:
        """
        A Fire with C{within} (a follow-up of an Invoke the peer is answering)
        is never held behind other commands, which may wait for that Invoke.
        """
        h = Harness(self, max_commands_per_connection=1)
        handler_id = h.register("work", "during", match=json.dumps({"kind": "ext"}))
        self.successResultOf(
            h.dispatcher.add_event_handler(LOCAL, "during", kind="local")
        )
        invoked = h.fire({}, kind="ext")
        keywords = json.dumps({"kind": "local"})
        queued = h.call(Fire, event=b"1", keywords=keywords)  # waits for invoked
        self.assertNoResult(queued)
        follow_up = h.call(Fire, event=b"2", keywords=keywords, within=handler_id)
        self.assertTrue(self.successResultOf(follow_up)["ok"])
        h.answer(0, "done")
        self.assertTrue(self.successResultOf(invoked).ok)
        self.assertTrue(self.successResultOf(queued)["ok"])

    def test_paused_while_buffer_full(self) -> None:
        """
        While the transport says its buffer is full (pauseProducing), nothing
        more the peer sends is read, and the frame timeout does not run;
        answers written meanwhile count as being answered; once the buffer
        drains (resumeProducing), what was sent is read and answered.
        """
        h = Harness(
            self,
            max_commands_per_connection=2,
            frame_timeout=3.0,
            dispatcher_options={"max_in_flight": 10},
        )
        h.local.answer = None
        self.successResultOf(h.dispatcher.add_event_handler(LOCAL, "during"))
        first = [h.call(Fire, event=b"1") for _ in range(2)]
        h.server.pauseProducing()
        self.assertTrue(h.server.paused)
        listed = h.call(ListHandlers)
        h.clock.advance(10)
        self.assertNoResult(listed)
        self.assertFalse(h.server.broken)
        for call in h.local.pending():
            call.succeed(1)
        h.pump.flush()
        for d in first:
            self.assertTrue(self.successResultOf(d)["ok"])
        h.server.resumeProducing()
        h.pump.flush()
        self.assertFalse(h.server.paused)
        self.assertEqual(len(json.loads(self.successResultOf(listed)["handlers"])), 1)

    def test_answer_boxes_not_held(self) -> None:
        """
        A box with an error's key is an error to AMP, whatever else it has:
        it is never held as a command, and one answering nothing drops the
        peer at once.
        """
        h = Harness(self, max_commands_per_connection=1)
        h.local.answer = None
        self.successResultOf(h.dispatcher.add_event_handler(LOCAL, "during"))
        fired = h.call(Fire, event=b"1")
        box = amp.AmpBox(
            _command=b"Fire",
            _error=b"404",
            _error_code=b"X",
            _error_description=b"none",
        )
        h.peer.transport.write(box.serialize())  # type: ignore[union-attr]
        h.pump.flush()
        self.assertTrue(h.server.broken)
        self.assertTrue(h.closed)
        self.failureResultOf(fired)

    def test_malformed_command_without_ask(self) -> None:
        """
        A command that does not parse and asks for no answer drops the peer,
        as one answered BAD_REQUEST does, without an unhandled error (AMP
        would log its traceback).
        """
        h = Harness(self)
        box = amp.AmpBox(_command=b"Fire", keywords=b"{}")  # no event, no _ask
        h.peer.transport.write(box.serialize())  # type: ignore[union-attr]
        h.pump.flush()
        self.assertTrue(h.server.broken)
        self.assertTrue(h.closed)

    def test_lost_with_commands_held(self) -> None:
        """
        Commands held when the connection drops are never run: a held
        RegisterHandler does not bring the peer's pool back.
        """
        h = Harness(self, max_commands_per_connection=1)
        h.register("work", "during", match=json.dumps({"kind": "ext"}))
        fired = h.call(Fire, event=b"1", keywords=json.dumps({"kind": "ext"}))
        held = h.call(RegisterHandler, name="more", phase="during")
        self.assertEqual(len(h.peer.invocations), 1)
        h.peer.transport.loseConnection()  # type: ignore[union-attr]
        h.pump.flush()
        self.assertEqual(sorted(h.dispatcher.pools()), ["default"])
        self.assertEqual(h.dispatcher.handlers(), [])
        self.failureResultOf(fired)
        self.failureResultOf(held)

    def test_producer_registered(self) -> None:
        """
        The connection registers itself with its transport as a streaming
        producer, which is how the transport tells it its buffer is full.
        """
        h = Harness(self)
        transport: Any = h.server.transport
        self.assertIs(transport.producer, h.server)
        self.assertTrue(transport.streamingProducer)


class RemotePoolTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.sent: list[tuple[dict[str, Any], Deferred[dict[str, Any]]]] = []
        self.pool = RemotePool(
            self, reactor=self.clock, name="amp:t", max_in_flight=1, max_queued=1
        )

    def callRemote(self, command: Any, **kw: Any) -> Deferred[dict[str, Any]]:
        d: Deferred[dict[str, Any]] = Deferred()
        self.sent.append((kw, d))
        return d

    def invocation(self, handler_id: int = 1) -> Invocation:
        return Invocation(
            handler_id, "external.conn1:h", "during", encode_event({"n": 1})
        )

    def test_interface(self) -> None:
        """
        RemotePool provides IHandlerPool, and IRoutedPool (to learn of
        removals); check_handler succeeds at once.
        """
        verifyObject(IHandlerPool, self.pool)
        verifyObject(IRoutedPool, self.pool)
        self.assertEqual(self.successResultOf(self.pool.check_handler("x:y")), 0)
        self.assertIsNone(self.successResultOf(self.pool.start()))

    def test_abort(self) -> None:
        """
        abort(): the call in flight ends "timeout" (Aborted), the queued one
        "skipped"; the late answer is ignored.
        """
        running = self.pool.invoke(self.invocation(1))
        queued = self.pool.invoke(self.invocation(2))
        self.pool.abort("stopping")
        first = self.successResultOf(running)
        second = self.successResultOf(queued)
        self.assertEqual(
            (first.status, first.error_type), ("timeout", "actordispatch.Aborted")
        )
        self.assertEqual(second.status, "skipped")
        self.sent[0][1].callback({"value": b"1"})
        self.assertEqual(len(self.sent), 1)

    def test_after_connection_lost(self) -> None:
        """
        Once the connection is lost, invocations end "crashed" at once.
        """
        running = self.pool.invoke(self.invocation(1))
        self.pool.connection_lost("gone")
        self.assertEqual(self.successResultOf(running).status, "crashed")
        later = self.successResultOf(self.pool.invoke(self.invocation(2)))
        self.assertEqual(later.status, "crashed")
        self.assertEqual(later.error_message, "connection lost: gone")

    def test_unknown_remote_error(self) -> None:
        """
        An AMP error other than HANDLER_ERROR (here AMP's own UNKNOWN) is an
        "error" outcome of type actordispatch.RemoteError, "CODE: description".
        """
        running = self.pool.invoke(self.invocation(1))
        self.sent[0][1].errback(amp.UnknownRemoteError("Unknown Error"))
        outcome = self.successResultOf(running)
        self.assertEqual(
            (outcome.status, outcome.error_type, outcome.error_message),
            ("error", "actordispatch.RemoteError", "UNKNOWN: Unknown Error"),
        )


class ListenTests(SynchronousTestCase):
    def make(self) -> tuple[MemoryReactorClock, EventDispatcher]:
        reactor = MemoryReactorClock()
        dispatcher = EventDispatcher(("kind",), reactor=reactor, pool=FakePool())
        return reactor, dispatcher

    def test_refuses_all_interfaces(self) -> None:
        """
        Plaintext TCP on every interface is refused without insecure=True.
        """
        reactor, dispatcher = self.make()
        failure = self.failureResultOf(listen(reactor, dispatcher, "tcp:0"))
        self.assertIsInstance(failure.value, InsecureEndpointError)
        self.assertIn("insecure=True", str(failure.value))

    def test_insecure(self) -> None:
        """
        insecure=True allows it.
        """
        reactor, dispatcher = self.make()
        listener = self.successResultOf(
            listen(reactor, dispatcher, "tcp:0", insecure=True)
        )
        self.assertIsInstance(listener, AMPListener)
        self.assertTrue(listener.factory.accepting)

    def test_loopback_and_unix(self) -> None:
        """
        IPv6 loopback and UNIX sockets are allowed without insecure.
        """
        reactor, dispatcher = self.make()
        listener = self.successResultOf(
            listen(reactor, dispatcher, "tcp6:0:interface=\\:\\:1")
        )
        self.assertEqual(listener.getHost().host, "::1")
        unix = self.successResultOf(
            listen(reactor, dispatcher, "unix:/tmp/ad-test.sock", max_box_bytes=1000)
        )
        self.assertIsInstance(unix.getHost(), UNIXAddress)
        self.assertEqual(unix.factory.max_box_bytes, 1000)
        self.successResultOf(unix.stopListening())
        self.assertFalse(unix.factory.accepting)


def load_example() -> ModuleType:
    """
    docs/examples/external_handler.py, imported as a module.
    """
    path = Path(__file__).resolve().parents[1] / "docs/examples/external_handler.py"
    spec = importlib.util.spec_from_file_location("docs_example_external", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def signature(command: type[amp.Command]) -> Any:
    """
    A command's wire signature: its name, each argument's and answer's name,
    type name and optionality, and its error codes.
    """

    def fields(items: Any) -> list[tuple[bytes, str, bool]]:
        return [(name, type(arg).__name__, arg.optional) for name, arg in items]

    return (
        command.commandName,
        fields(command.arguments),
        fields(command.response),
        sorted(command.errors.values()),
    )


class ExampleTests(SynchronousTestCase):
    def test_same_commands(self) -> None:
        """
        The example redefines every command exactly as the dispatcher defines
        it: same names, arguments, answers and error codes.
        """
        example = load_example()
        for ours in (Fire, RegisterHandler, UnregisterHandler, ListHandlers, Invoke):
            theirs = getattr(example, ours.__name__)
            self.assertEqual(signature(theirs), signature(ours), ours.__name__)

    def test_example_serves(self) -> None:
        """
        The example's AMP protocol, connected in memory, registers with its
        own command definitions and handles an event; a failing event comes
        back as an "error" outcome with the exception's type and traceback.
        """
        example = load_example()
        h = Harness(self)
        peer, server, pump = connectedServerAndClient(
            lambda: h.factory.buildProtocol(None),
            lambda: example.ExternalProcess(h.clock, out=lambda line: None),
        )
        h.pump = pump
        answer = h.result(
            example.RegisterHandler,
            peer=peer,
            name="ext",
            phase="during",
            match=json.dumps({"kind": "x"}),
        )
        self.assertIsInstance(answer["handler_id"], int)
        [outcome] = self.successResultOf(h.fire({"n": 1}, kind="x")).outcomes
        self.assertEqual(outcome.status, "ok")
        self.assertEqual(outcome.value["pid"], os.getpid())
        self.assertEqual(outcome.value["event"], {"n": 1})
        [failed] = self.successResultOf(h.fire({"fail": "nope"}, kind="x")).outcomes
        self.assertEqual(
            (failed.status, failed.error_type, failed.error_message),
            ("error", "builtins.ValueError", "nope"),
        )
        self.assertIn("ValueError", failed.traceback or "")


class StartTLSTests(SynchronousTestCase):
    """
    AMP's built-in StartTLS is not served: a peer cannot switch its connection
    to TLS with a certificate of its choosing.
    """

    def test_refused_and_serving(self) -> None:
        """
        A peer's StartTLS is answered with AMP's UNHANDLED error, and the same
        plaintext connection keeps answering its commands: it registers a
        handler, lists it and serves an event.
        """
        h = Harness(self)
        failure = self.failureResultOf(h.relay(h.peer.callRemoteString(b"StartTLS")))
        failure.trap(amp.UnhandledCommand)  # the client's name for UNHANDLED
        self.assertIn("StartTLS", failure.getErrorMessage())
        self.assertFalse(h.closed)
        handler_id = h.register("work")
        listing = json.loads(h.result(ListHandlers)["handlers"])
        self.assertEqual([entry["handler_id"] for entry in listing], [handler_id])
        fired = h.fire({"n": 1})
        h.answer(0, "done")
        self.assertEqual(self.successResultOf(fired).outcomes[0].value, "done")

    def test_twisted_client(self) -> None:
        """
        Twisted's own C{callRemote(StartTLS)} fails with
        C{amp.UnhandledCommand}, and the dispatcher's end stays connected.
        """
        h = Harness(self)
        failure = self.failureResultOf(h.call(amp.StartTLS))
        failure.trap(amp.UnhandledCommand)
        self.assertFalse(h.closed)
        self.assertFalse(h.server.broken)


class TLSOptionsTests(SynchronousTestCase):
    def test_config_keys(self) -> None:
        """
        A TLS configuration table with a missing or unknown key is refused,
        naming the keys.
        """
        with self.assertRaises(ValueError) as raised:
            TLSServerOptions.from_config({"certificate": "c.pem", "colour": "red"})
        self.assertIn("colour", str(raised.exception))
        self.assertIn("private_key", str(raised.exception))

    def test_no_certificates(self) -> None:
        """
        PEM data without a certificate is refused when the TLS options are
        built.
        """
        options = TLSServerOptions(b"nothing", b"key", b"nothing")
        self.assertRaises(ValueError, options.certificate_options)
