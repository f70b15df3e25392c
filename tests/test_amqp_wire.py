"""
The AMQP transport's pure parts: names, header values that compare as Python
does, bindings, request and reply bodies (checked, not trusted), outcomes from
peers, and broker URLs (whose passwords never reach a message).
"""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from actordispatch._amqp.link import BrokerAddress, ClientTLS, safe_url
from actordispatch._amqp.wire import (
    PHASE_HEADER,
    Target,
    WireError,
    binding_arguments,
    binding_matches,
    check_namespace,
    decode_reply,
    decode_request,
    encode_reply,
    encode_request,
    event_headers,
    header_value,
    queue_name,
)
from actordispatch._core.invocation import Invocation
from actordispatch._core.match import MatchSpec
from actordispatch._core.result import HandlerOutcome
from actordispatch._wire.outcome_json import outcome_from_json, outcome_to_json

scalars = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.booleans(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([0.0, -0.0, 1.0, 2.0, 0.5, 2**53, float(2**53)]),
    st.text(max_size=5),
    st.sampled_from(["1", "i:1", "s:x", ""]),
)
KEYWORDS = ("kind", "user", "n")
# Few values, so that specs and events often meet.
close = st.sampled_from([0, -0.0, 1, 1.0, True, False, 2, 0.5, "1", "x", ""])
specs = st.dictionaries(st.sampled_from(KEYWORDS), close, max_size=3)
events = st.dictionaries(st.sampled_from(KEYWORDS), close, max_size=3)


class HeaderTests(SynchronousTestCase):
    @given(scalars, scalars)
    def test_header_equality_is_python_equality(self, a: object, b: object) -> None:
        """
        Two values get the same header exactly when Python finds them equal
        (so C{1}, C{1.0} and C{True} share one, C{"1"} has its own).
        """
        self.assertIsNotNone(header_value(a))
        self.assertEqual(header_value(a) == header_value(b), a == b)

    def test_values_no_spec_can_equal(self) -> None:
        """
        Values of other types (and NaN, and infinities) have no header: they
        are left out of a message, so no binding can match on them.
        """
        for value in (None, (1, 2), frozenset(), float("nan"), float("inf"), b"x"):
            self.assertIsNone(header_value(value))
        self.assertEqual(
            event_headers("during", {"kind": "a", "other": (1,)}),
            {PHASE_HEADER: "during", "kind": "s:a"},
        )

    @given(specs, events, st.sampled_from(["before", "during"]))
    def test_binding_agrees_with_the_match_spec(
        self, spec_keywords: dict[str, object], keywords: dict[str, object], phase: str
    ) -> None:
        """
        A handler's binding routes a phase's message exactly when its match
        spec matches the event's keywords (the rule the broker applies; the
        integration test checks that the broker applies it).
        """
        spec = MatchSpec.from_keywords(spec_keywords)
        for fired_phase in ("before", "during"):
            self.assertEqual(
                binding_matches(
                    binding_arguments(phase, spec), event_headers(fired_phase, keywords)
                ),
                fired_phase == phase and spec.matches(keywords),
            )

    def test_unroutable_spec_values(self) -> None:
        """
        A spec value the exchange cannot compare as Python does is refused,
        naming the keyword.
        """
        with self.assertRaises(ValueError) as caught:
            binding_arguments("during", MatchSpec.from_keywords({"user": (1, 2)}))
        self.assertIn("'user'", str(caught.exception))
        from actordispatch import Glob, In

        for operator in (In("a", "b"), Glob("a*")):
            with self.assertRaises(ValueError) as caught:
                binding_arguments("during", MatchSpec.from_keywords({"user": operator}))
            self.assertIn("cannot be routed by an AMQP pool", str(caught.exception))

    def test_names(self) -> None:
        """
        Namespaces are dotted names that cannot take RabbitMQ's reserved
        C{amq.} prefix; a queue name longer than RabbitMQ allows is refused.
        """
        for bad in ("", "amq.x", "has space", "a/b", "x" * 101, 3):
            self.assertRaises(ValueError, check_namespace, bad)
        self.assertEqual(check_namespace("my-app.prod_1"), "my-app.prod_1")
        self.assertEqual(queue_name("ns", "a.b:c"), "ns.handler.a.b:c")
        self.assertRaises(ValueError, queue_name, "ns", "not a handler")
        self.assertRaises(ValueError, queue_name, "n" * 100, "a." * 80 + "b:c")


class RequestTests(SynchronousTestCase):
    def test_round_trip(self) -> None:
        """
        A request carries the phase, the targets and the event's bytes as
        the dispatcher encoded them; a host takes the targets of its handler.
        """
        event = b'{"x":"\\n"}\n'
        body = encode_request(
            "during", [Target(1, "a.b:c", 5.0), Target(2, "a.b:d", 1.5)], event
        )
        request = decode_request(body, 1024)
        self.assertEqual(request.event, event)
        (invocation,) = request.invocations("a.b:d")
        self.assertEqual(
            (invocation.handler_id, invocation.phase, invocation.timeout),
            (2, "during", 1.5),
        )
        self.assertEqual(request.invocations("x.y:z"), [])

    def test_garbage_refused(self) -> None:
        """
        Anything but a well-formed request is a L{WireError}: no event line,
        a head that is not JSON, another version, bad targets, too large.
        """
        good = {"v": 1, "phase": "p", "targets": [[1, "a.b:c", 1.0]]}
        bad_heads = [
            {**good, "v": 2},
            {**good, "phase": 3},
            {**good, "targets": []},
            {**good, "targets": [[1, "a.b:c"]]},
            {**good, "targets": [[True, "a.b:c", 1.0]]},
            {**good, "targets": [[1, "no name", 1.0]]},
            {**good, "targets": [[1, "a.b:c", -1]]},
            {**good, "targets": [[1, "a.b:c", "1"]]},
            [good],
        ]
        bodies = [json.dumps(head).encode() + b"\n{}" for head in bad_heads]
        bodies += [b"no newline", b"{not json\n{}", b"[" * 100000 + b"\n"]
        for body in bodies:
            self.assertRaises(WireError, decode_request, body, 10**6)
        ok = json.dumps(good).encode() + b"\n" + b"x" * 100
        self.assertRaises(WireError, decode_request, ok, 50)


class ReplyTests(SynchronousTestCase):
    def outcome(self, **fields: object) -> HandlerOutcome:
        base: dict[str, object] = dict(
            handler_id=7, handler="a.b:c", phase="during", status="ok", value=1
        )
        return HandlerOutcome(**{**base, **fields})  # type: ignore[arg-type]

    def test_round_trip(self) -> None:
        """
        A reply carries the host's name and its outcomes, bytes values
        included; each is rebuilt against the invocation it answers.
        """
        sent = self.outcome(value={"raw": b"\x00\xff"}, duration=0.25, pid=42)
        vetoed = self.outcome(value=None, veto="not today")
        host, records = decode_reply(encode_reply([sent, vetoed], "h:1"), 10**6)
        self.assertEqual(host, "h:1")
        invocation = Invocation(7, "a.b:c", "during", b"{}")
        self.assertEqual(outcome_from_json(records[0], invocation), sent)
        self.assertEqual(outcome_from_json(records[1], invocation), vetoed)

    def test_garbage_refused(self) -> None:
        """
        A reply that is not JSON, not a version 1 outcome list, or over the
        cap is a L{WireError}.
        """
        for body in (b"{", b"[]", b'{"v":2,"outcomes":[]}', b'{"v":1}'):
            self.assertRaises(WireError, decode_reply, body, 10**6)
        self.assertRaises(WireError, decode_reply, encode_reply([], "h"), 5)

    def test_outcome_checked(self) -> None:
        """
        An outcome from a peer is checked field by field; its identity comes
        from the invocation, and a value comes with C{"ok"} only.
        """
        invocation = Invocation(7, "a.b:c", "during", b"{}")
        good = outcome_to_json(self.outcome())
        for bad in (
            {**good, "handler_id": 8},
            {**good, "status": "fine"},
            {**good, "duration": -1},
            {**good, "duration": float("inf")},
            {**good, "duration": True},
            {**good, "pid": True},
            {**good, "error_type": 3},
            {**good, "veto": 3},
            ["not", "a", "dict"],
        ):
            self.assertRaises(ValueError, outcome_from_json, bad, invocation)
        claimed = {**good, "handler": "evil:x", "phase": "other"}
        outcome = outcome_from_json(claimed, invocation)
        self.assertEqual((outcome.handler, outcome.phase), ("a.b:c", "during"))
        failed = outcome_from_json(
            {**good, "status": "error", "error_message": "m" * 10**6}, invocation
        )
        self.assertIsNone(failed.value)
        self.assertEqual(len(failed.error_message or ""), 64 * 1024)
        # A veto comes with "ok" only.
        vetoed = outcome_from_json({**good, "status": "error", "veto": "x"}, invocation)
        self.assertIsNone(vetoed.veto)


class BrokerAddressTests(SynchronousTestCase):
    def test_parse(self) -> None:
        """
        URLs give host, port (5672, or 5671 for amqps) and vhost; amqps
        without options trusts the platform's CAs; a client certificate with
        no user name in the URL logs in with SASL EXTERNAL.
        """
        plain = BrokerAddress.parse("amqp://u:p@broker:1234/%2Fprod")
        self.assertEqual(
            (plain.host, plain.port, plain.vhost), ("broker", 1234, "/prod")
        )
        self.assertIsNone(plain.tls)
        tls = BrokerAddress.parse("amqps://broker")
        self.assertEqual((tls.port, tls.vhost, tls.tls), (5671, "/", ClientTLS()))
        external = BrokerAddress.parse(
            "amqps://broker/", ClientTLS(certificate="me.pem")
        )
        self.assertTrue(external.external)
        self.assertEqual(
            type(external.parameters().credentials).__name__, "ExternalCredentials"
        )
        with_user = BrokerAddress.parse(
            "amqps://u:p@broker/", ClientTLS(certificate="me.pem")
        )
        self.assertFalse(with_user.external)
        self.assertEqual(with_user.parameters().credentials.password, "p")

    def test_bad_urls_never_show_the_password(self) -> None:
        """
        A URL that is not amqp:// or amqps:// is refused with a message that
        shows it without its password; TLS options need amqps://.
        """
        with self.assertRaises(ValueError) as caught:
            BrokerAddress.parse("http://user:hunter2@broker/")
        self.assertNotIn("hunter2", str(caught.exception))
        self.assertIn("user:***@broker", str(caught.exception))
        self.assertRaises(ValueError, BrokerAddress.parse, "amqp://b", ClientTLS())
        self.assertEqual(safe_url("amqp://b/"), "amqp://b/")
        self.assertNotIn("hunter2", str(BrokerAddress.parse("amqp://u:hunter2@b/")))
