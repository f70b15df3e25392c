"""
A property-based fuzz test of the AMP endpoint for external processes, in
memory (iosim, a Clock, a real L{EventDispatcher} with a FakePool): hostile
peers send random boxes, commands, argument types, chunk sequences and
disconnects; whatever they do, the endpoint keeps serving a well-behaved peer,
what it holds for them stays bounded, and the dispatcher's counters add up,
with nothing stuck once they are gone.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.protocols import amp
from twisted.test.iosim import connectedServerAndClient
from twisted.trial.unittest import SynchronousTestCase

from actordispatch._external.flow import MAX_HELD_BYTES
from actordispatch._external.server import (
    DispatcherAMP,
    Fire,
    ListHandlers,
    RegisterHandler,
)
from tests.test_external import LOCAL, Harness

CAPS = {
    "max_box_bytes": 4096,
    "max_box_keys": 16,
    "max_commands_per_connection": 1,
    "max_handlers_per_connection": 3,
    "max_fires_per_connection": 4,
    "max_in_flight_per_connection": 2,
    "max_queued_per_connection": 2,
    "frame_timeout": 5.0,
    "default_timeout": 10.0,
}


class HostilePeer(amp.BinaryBoxProtocol):
    """
    A peer that frames boxes but sends whatever the test says, and only
    notes the Invoke calls it gets (to answer them, or not), ignoring every
    other box.
    """

    def __init__(self) -> None:
        super().__init__(self)
        self.invokes: list[bytes] = []
        self.gone = False

    def startReceivingBoxes(self, boxSender: Any) -> None:
        pass

    def ampBoxReceived(self, box: amp.AmpBox) -> None:
        if box.get(amp.COMMAND) == b"Invoke" and amp.ASK in box:
            self.invokes.append(box[amp.ASK])

    def stopReceivingBoxes(self, reason: Any) -> None:
        self.gone = True


# --- what a hostile peer sends ---------------------------------------------------

_JSON = st.sampled_from(
    [
        b"{}",
        b"null",
        b"1",
        b'"x"',
        b"[1, 2]",
        b'{"kind": "ext"}',
        b'{"kind": "local"}',
        b'{"kind": {"in": ["ext", "local"]}}',
        b'{"user": null}',
        b'{"kind": {"not": {"glob": "l*"}}}',
        b'{"__ad__": "bytes", "b64": "aGk="}',
        b'{"__ad__": "attrs", "type": "os:system", "fields": {}}',
        b"1e400",
        b'{"kind": NaN}',
        b"[",
        b"\xff\xfe",
        b'{"event": 1}',
        b'{"colour": "red"}',
        b'"' + b"y" * 3000 + b'"',
    ]
)
_NUMBER = st.integers(-3, 12).map(lambda n: str(n).encode()) | st.sampled_from(
    [b"1.5", b"nan", b"inf", b"-0", b"x", b"", b"99999999999999999999"]
)
_VALUE = (
    _JSON
    | _NUMBER
    | st.sampled_from([b"before", b"during", b"after", b"work", b"a.b", b"no-no"])
    | st.binary(max_size=40)
)
_KEY = st.sampled_from(
    [
        b"_ask",
        b"event",
        b"event.1",
        b"keywords",
        b"within",
        b"name",
        b"phase",
        b"match",
        b"timeout",
        b"max_calls",
        b"handler_id",
        b"value",
        b"_answer",
        b"_error",
        b"_error_code",
        b"_error_description",
    ]
) | st.binary(min_size=1, max_size=12)
_COMMAND = st.sampled_from(
    [
        b"Fire",
        b"RegisterHandler",
        b"UnregisterHandler",
        b"ListHandlers",
        b"Invoke",
        b"Nope",
    ]
)


@st.composite
def _box(draw: Any) -> bytes:
    box = amp.AmpBox()
    if draw(st.booleans()):
        box[b"_command"] = draw(_COMMAND)
    if draw(st.integers(0, 9)):
        box[b"_ask"] = draw(_NUMBER)
    for key, value in draw(st.dictionaries(_KEY, _VALUE, max_size=6)).items():
        box[key] = value
    return box.serialize()


_REGISTER = amp.AmpBox(
    _command=b"RegisterHandler",
    _ask=b"r",
    name=b"work",
    phase=b"during",
    match=b'{"kind": "ext"}',
).serialize()

_WELL_FORMED = st.sampled_from(
    [
        amp.AmpBox(
            _command=b"RegisterHandler",
            _ask=b"r",
            name=b"work",
            phase=b"during",
            match=b'{"kind": "ext"}',
        ),
        amp.AmpBox(
            _command=b"RegisterHandler",
            _ask=b"m",
            name=b"once",
            phase=b"before",
            match=b'{"kind": {"in": ["ext", "local"]}}',
            max_calls=b"1",
        ),
        *[
            amp.AmpBox(
                _command=b"Fire", _ask=b"f", event=b"{}", keywords=b'{"kind": "ext"}'
            )
        ]
        * 3,
        amp.AmpBox(
            _command=b"Fire", _ask=b"g", event=b"{}", keywords=b'{"kind": "local"}'
        ),
        amp.AmpBox(_command=b"Fire", _ask=b"w", event=b"{}", within=b"1"),
        amp.AmpBox(_command=b"ListHandlers", _ask=b"l"),
        amp.AmpBox(_command=b"UnregisterHandler", _ask=b"u", handler_id=b"1"),
    ]
).map(lambda box: box.serialize())

_SEND = st.tuples(
    st.just("send"),
    st.lists(
        # Mostly commands that parse, so that hostile peers get far.
        st.one_of(*[_WELL_FORMED] * 6, _box(), _box(), st.binary(max_size=30)),
        min_size=1,
        max_size=6,
    ),
    st.lists(st.integers(1, 200), max_size=4),
)
_ANSWER = st.tuples(
    st.just("answer"),
    st.sampled_from(
        [
            {b"value": b'{"ok": true}'},
            {b"value": b"NaN"},
            {b"value": b"["},
            {b"value": b"1", b"pid": b"7", b"duration": b"inf", b"veto": b"no"},
            {b"_error_code": b"HANDLER_ERROR", b"_error_description": b"{"},
            {b"_error_code": b"WEIRD", b"_error_description": b"weird"},
            {},
        ]
    ),
    st.booleans(),
)
_STEP = (
    _SEND
    | _SEND
    | _SEND
    | _ANSWER
    | _ANSWER
    | st.tuples(st.just("advance"), st.floats(0, 20))
    | st.tuples(st.just("local"), st.booleans())
    | st.tuples(st.just("fire"), st.sampled_from(["ext", "local"]))
    | st.tuples(st.just("pause"), st.booleans())
    | st.tuples(st.just("disconnect"))
    | st.tuples(st.just("connect"))
)


# --- the test ---------------------------------------------------------------------


class FuzzTests(SynchronousTestCase):
    def connect(self, h: Harness) -> tuple[HostilePeer, DispatcherAMP]:
        peer, server, pump = connectedServerAndClient(
            lambda: h.factory.buildProtocol(None), HostilePeer
        )
        self.pumps.append(pump)
        return peer, server

    def flush(self) -> None:
        for pump in self.pumps:
            pump.flush()

    def check_bounded(self, h: Harness, servers: list[DispatcherAMP]) -> None:
        """
        What the endpoint holds for each connection is within its caps, and
        the dispatcher's counters add up.
        """
        for server in servers:
            self.assertLessEqual(
                server._held_bytes, MAX_HELD_BYTES + CAPS["max_box_bytes"]
            )
            self.assertLessEqual(
                server._commands,
                CAPS["max_commands_per_connection"] + CAPS["max_fires_per_connection"],
            )
            self.assertLessEqual(
                server.commands.fires_pending, CAPS["max_fires_per_connection"]
            )
            self.assertLessEqual(
                len(server.handler_ids), CAPS["max_handlers_per_connection"]
            )
            if server.pool is not None:
                self.assertLessEqual(
                    server.pool.in_flight, CAPS["max_in_flight_per_connection"]
                )
                self.assertLessEqual(
                    server.pool.queued, CAPS["max_queued_per_connection"]
                )
        stats = h.dispatcher.stats()
        self.assertEqual(
            stats.accepted, stats.finished + stats.in_flight + stats.queued, stats
        )

    @settings(
        max_examples=150,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(st.booleans(), st.lists(_STEP, min_size=1, max_size=16))
    def test_hostile_peers(self, register: bool, steps: list[tuple[Any, ...]]) -> None:
        """
        Whatever hostile peers send (random boxes, commands and argument
        values, in random chunks, with random answers to their Invokes, and
        disconnects, while the transport says its buffer is full or not),
        what the endpoint holds stays within its caps and the dispatcher's
        counters add up; once they are gone and every call is settled,
        nothing is stuck (no event in flight or queued, no connection, pool
        or handler of theirs left) and a well-behaved peer is served.
        """
        h = Harness(
            self,
            dispatcher_options={"max_in_flight": 2, "max_depth": 2},
            **CAPS,
        )
        h.local.answer = None
        self.successResultOf(
            h.dispatcher.add_event_handler(LOCAL, "during", kind="local")
        )
        # The harness's own peer stays out of it until the end.
        self.pumps = [h.pump]
        servers: list[DispatcherAMP] = []
        peer, server = self.connect(h)
        servers.append(server)
        if register:
            # Serving a handler first gets hostile peers Invokes to mangle.
            steps = [("send", [_REGISTER], []), *steps]
        for step in steps:
            action = step[0]
            if action == "connect":
                peer, server = self.connect(h)
                servers.append(server)
            elif peer.gone or server not in h.factory.connections:
                pass
            elif action == "send":
                data = b"".join(step[1])
                cuts = sorted({c % (len(data) + 1) for c in step[2]})
                for start, end in zip([0, *cuts], [*cuts, len(data)], strict=True):
                    assert peer.transport is not None
                    peer.transport.write(data[start:end])
                    self.flush()
            elif action == "answer" and peer.invokes:
                ask = peer.invokes.pop(0 if step[2] else -1)
                fields = dict(step[1])
                key = amp.ERROR if b"_error_code" in fields else amp.ANSWER
                assert peer.transport is not None
                peer.transport.write(amp.AmpBox({key: ask, **fields}).serialize())
            elif action == "pause":
                if step[1]:
                    server.pauseProducing()
                else:
                    server.resumeProducing()
            elif action == "disconnect":
                assert peer.transport is not None
                peer.transport.loseConnection()
            if action == "advance":
                h.clock.advance(step[1])
            elif action == "fire":
                h.dispatcher.fire_event({"from": "inside"}, kind=step[1])
            elif action == "local":
                for call in h.local.pending():
                    if step[1]:
                        call.succeed({"n": 1})
                    else:
                        call.fail()
            self.flush()
            self.check_bounded(h, servers)

        # The hostile peers go; every call is settled.
        for server in servers:
            if server.transport is not None:
                server.resumeProducing()
                server.transport.loseConnection()
        for _ in range(3):
            self.flush()
            for call in h.local.pending():
                call.succeed(None)
            h.clock.advance(CAPS["default_timeout"] + 1)
        self.flush()
        self.check_bounded(h, servers)
        stats = h.dispatcher.stats()
        self.assertEqual((stats.in_flight, stats.queued), (0, 0), stats)
        self.assertEqual(h.factory.connections, {h.server})
        self.assertEqual(sorted(h.dispatcher.pools()), ["default"])
        self.assertEqual([i.handler for i in h.dispatcher.handlers()], [LOCAL])

        # A well-behaved peer is served.
        h.pump = self.pumps[0]
        handler_id = h.register("good", match=json.dumps({"kind": "ext"}))
        h.local.answer = lambda call: call.succeed("local")
        fired = h.call(Fire, event=b'{"n": 1}', keywords='{"kind": "ext"}')
        self.assertEqual(h.peer.invocations[-1][0]["handler_id"], handler_id)
        h.answer(len(h.peer.invocations) - 1, "good")
        self.assertTrue(self.successResultOf(fired)["ok"])
        local = h.result(Fire, event=b"{}", keywords='{"kind": "local"}')
        self.assertEqual(json.loads(local["outcomes"])[0]["value"], "local")
        listed = json.loads(h.result(ListHandlers)["handlers"])
        self.assertEqual(len(listed), 2)
        self.assertEqual(
            h.error(RegisterHandler, name="bad-name", phase="during"), b"BAD_HANDLER"
        )
