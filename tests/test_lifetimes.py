"""
Handler lifetimes beyond C{max_calls}: C{expires=} (on the dispatcher's clock)
and C{owner=} tokens, with the snapshot rule that an event's handlers are fixed
when it is accepted.  In memory: a C{Clock} and a fake pool.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from actordispatch import EventDispatcher
from actordispatch.testing import FakePool


class LifetimeTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.pool = FakePool()
        self.dispatcher = EventDispatcher(
            ("kind", "user"), reactor=self.clock, pool=self.pool, max_in_flight=10
        )
        self.successResultOf(self.dispatcher.start())

    def add(self, name: str = "app.handlers:h", **options: Any) -> int:
        return self.successResultOf(
            self.dispatcher.add_event_handler(name, "during", **options)
        )

    def live(self) -> list[int]:
        return [info.handler_id for info in self.dispatcher.handlers()]

    def test_expires(self) -> None:
        """
        A handler with C{expires=} is listed and matches until that many
        seconds after its registration, on the dispatcher's clock, then is
        removed; C{handlers()} shows when it expires.
        """
        short = self.add(expires=5)
        kept = self.add()
        (info, _) = self.dispatcher.handlers()
        self.assertEqual(info.expires_at, 5.0)
        self.clock.advance(4.9)
        self.assertEqual(self.live(), [short, kept])
        self.clock.advance(0.1)
        self.assertEqual(self.live(), [kept])
        self.dispatcher.fire_event({}, kind="x")
        self.assertEqual([c.invocation.handler_id for c in self.pool.calls], [kept])

    def test_late_timer(self) -> None:
        """
        A handler whose time has come does not run even when its timer is
        late (the reactor was busy): the event accepted finds it expired and
        removes it.
        """
        late = self.add(expires=5)
        kept = self.add()
        self.clock.rightNow = 5.0  # the time passed; the timer has not run yet
        self.dispatcher.fire_event({}, kind="x")
        self.assertEqual([c.invocation.handler_id for c in self.pool.calls], [kept])
        self.assertEqual(self.live(), [kept])
        self.assertNotIn(late, self.live())
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_snapshot(self) -> None:
        """
        An event accepted before a handler expires (or is removed) still runs
        it; one accepted after does not; a handler added after an event was
        accepted does not join it.
        """
        expiring = self.add(expires=1)
        removed = self.add()
        first = self.dispatcher.fire_event({}, kind="x")
        self.add()  # after the event was accepted: not part of it
        self.clock.advance(2)
        self.successResultOf(self.dispatcher.remove_event_handler(removed))
        for call in self.pool.pending():
            call.succeed("done")
        outcomes = self.successResultOf(first).outcomes
        self.assertEqual(
            [(o.handler_id, o.status) for o in outcomes],
            [(expiring, "ok"), (removed, "ok")],
        )

    def test_owner(self) -> None:
        """
        C{remove_event_handlers(owner=...)} removes every handler registered
        with that token (those still being checked too) and says how many.
        """
        self.pool.importable = ["app.handlers:h"]
        mine = [self.add(owner="plugin-a"), self.add(owner="plugin-a")]
        other = self.add(owner=("plugin", "b"))
        plain = self.add()
        self.assertEqual(self.dispatcher.handlers()[0].owner, "plugin-a")
        removed = self.dispatcher.remove_event_handlers(owner="plugin-a")
        self.assertEqual(self.successResultOf(removed), 2)
        self.assertEqual(self.live(), [other, plain])
        self.assertNotIn(mine[0], self.live())
        none = self.dispatcher.remove_event_handlers(owner="nobody")
        self.assertEqual(self.successResultOf(none), 0)
        # owner=None would sweep every handler registered without an owner.
        self.assertRaises(ValueError, self.dispatcher.remove_event_handlers, owner=None)
        self.assertIn(plain, self.live())

    def test_stop_leaves_no_timer(self) -> None:
        """
        A stopped dispatcher keeps no delayed call for expiries; started
        again, a handler whose time passed meanwhile is removed at once and
        the others expire on time.
        """
        gone = self.add(expires=2)
        stays = self.add(expires=10)
        self.successResultOf(self.dispatcher.stop())
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.clock.advance(3)
        self.assertEqual(self.live(), [gone, stays])
        self.successResultOf(self.dispatcher.start())
        self.assertEqual(self.live(), [stays])
        self.clock.advance(7)
        self.assertEqual(self.live(), [])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_removal_cancels_the_timer(self) -> None:
        """
        Removing a handler (by hand or by C{max_calls}) cancels its expiry.
        """
        handler_id = self.add(expires=5)
        self.successResultOf(self.dispatcher.remove_event_handler(handler_id))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_mistakes(self) -> None:
        """
        C{expires} must be a positive number and C{owner} hashable; both are
        reserved names, not match keywords.
        """
        for options in ({"expires": 0}, {"expires": "5"}, {"expires": True}):
            self.assertRaises(
                ValueError,
                self.dispatcher.add_event_handler,
                "app.handlers:h",
                "during",
                **options,
            )
        self.assertRaises(
            ValueError,
            self.dispatcher.add_event_handler,
            "app.handlers:h",
            "during",
            owner=["a"],
        )
        for name in ("expires", "owner"):
            self.assertRaises(ValueError, self.dispatcher.add_match_spec_keyword, name)
