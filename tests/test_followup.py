"""
Follow-up events on the dispatcher's side, in memory: what a pool hands over
(depth, encoded event, keywords) is checked, stripped of type tags, and run at
once, bypassing the queue.  The child's side is tested with real children in
the integration tests.
"""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from actordispatch import EventDispatcher
from actordispatch._core.errors import FollowUpDepthError, FollowUpError
from actordispatch._wire.codec import decode_event, encode_event
from actordispatch.examples.user_created import UserEvent
from actordispatch.interfaces import IFollowUpPool
from actordispatch.testing import FakePool


class FollowUpTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.pool = FakePool()
        self.dispatcher = EventDispatcher(
            ("kind",),
            ("during",),
            reactor=Clock(),
            pool=self.pool,
            max_depth=2,
            max_event_size=4096,
        )
        self.dispatcher.start()
        self.successResultOf(
            self.dispatcher.add_event_handler("app.h:h", "during", kind="x")
        )

    def follow_up(self, depth: int = 1, event: object = None, **keywords: object):  # type: ignore[no-untyped-def]
        return self.dispatcher.fire_follow_up(
            depth, encode_event(event), dict(keywords or {"kind": "x"}), None
        )

    def test_runs_at_once(self) -> None:
        """
        A follow-up starts at once even when max_in_flight (1) is taken by
        the event that fired it, one level deeper, and is counted.
        """
        self.dispatcher.fire_event({}, kind="x")
        number, done = self.follow_up(event={"a": 1})
        self.assertEqual(number, 2)
        calls = self.pool.pending()
        self.assertEqual([c.invocation.depth for c in calls], [0, 1])
        calls[1].succeed("done")
        self.assertEqual(self.successResultOf(done).outcomes[0].value, "done")
        self.assertEqual(self.dispatcher.stats().accepted, 2)
        self.assertEqual(self.dispatcher.stats().in_flight, 1)

    def test_plain_values(self) -> None:
        """
        A child's type tags are not rebuilt in the other children: a
        follow-up event arrives as plain JSON values.
        """
        self.follow_up(event=UserEvent("user_created", "bob", "user", "1"))
        (call,) = self.pool.pending()
        self.assertEqual(
            decode_event(call.invocation.event),
            {
                "event_type": "user_created",
                "user": "bob",
                "role": "user",
                "user_id": "1",
            },
        )

    def test_refusals(self) -> None:
        """
        Too deep, a keyword not allowed, an unhashable or operator value, a
        bad policy, an event too large, a stopping dispatcher: each refused
        with a FollowUpError saying why.
        """
        with self.assertRaises(FollowUpDepthError) as raised:
            self.follow_up(depth=3)
        self.assertIn("depth 3 is past max_depth=2", str(raised.exception))
        self.assertRaises(FollowUpError, self.follow_up, colour="red")
        self.assertRaises(FollowUpError, self.follow_up, kind=["x"])
        with self.assertRaises(FollowUpError):
            self.dispatcher.fire_follow_up(1, b"{}", {"kind": "x"}, "stop")
        with self.assertRaises(FollowUpError):
            self.follow_up(event="x" * 5000)
        self.assertEqual(self.pool.pending(), [])
        self.dispatcher.stop()
        self.assertRaises(FollowUpError, self.follow_up)

    def test_disabled(self) -> None:
        """
        max_depth=0 tells the pools to refuse follow-ups; a negative or
        non-int max_depth is refused.
        """
        told: list[object] = []

        @implementer(IFollowUpPool)
        class Pool(FakePool):
            def set_follow_ups(self, sink: object) -> None:
                told.append(sink)

        EventDispatcher(("kind",), reactor=Clock(), pool=Pool(), max_depth=0)
        self.assertEqual(told, [None])
        for bad in (-1, 1.5, True):
            self.assertRaises(
                ValueError, EventDispatcher, ("kind",), pool=FakePool(), max_depth=bad
            )
