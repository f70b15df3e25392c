"""
Introspection: C{handlers(**filters)} and C{explain(**keywords)}, in memory.
"""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from actordispatch import EventDispatcher, Glob, In, Not
from actordispatch.testing import FakePool


class IntrospectionTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.dispatcher = EventDispatcher(
            ("role", "user"), reactor=Clock(), pool=FakePool(), max_in_flight=10
        )
        self.successResultOf(self.dispatcher.start())
        add = self.dispatcher.add_event_handler
        self.admin = self.successResultOf(add("app.h:admin", "before", role="admin"))
        self.staff = self.successResultOf(
            add("app.h:staff", "during", role=In("admin", "user"), owner="plugin")
        )
        self.named = self.successResultOf(add("app.h:named", "during", user=Glob("b*")))
        self.once = self.successResultOf(
            add("app.h:once", "after", user=Not("root"), max_calls=1)
        )

    def ids(self, **filters: object) -> list[int]:
        return [info.handler_id for info in self.dispatcher.handlers(**filters)]

    def test_filters(self) -> None:
        """
        handlers() narrows by phase, handler name, pool and owner, and by a
        match keyword whose value the handler's spec accepts.
        """
        everyone = [self.admin, self.staff, self.named, self.once]
        self.assertEqual(self.ids(), everyone)
        self.assertEqual(self.ids(phase="during"), [self.staff, self.named])
        self.assertEqual(self.ids(handler="app.h:named"), [self.named])
        self.assertEqual(self.ids(pool="default"), everyone)
        self.assertEqual(self.ids(owner="plugin"), [self.staff])
        self.assertEqual(self.ids(role="admin"), [self.admin, self.staff])
        self.assertEqual(self.ids(role="user"), [self.staff])
        self.assertEqual(self.ids(user="bob"), [self.named, self.once])
        (info,) = self.dispatcher.handlers(owner="plugin")
        self.assertEqual(info.match_spec, {"role": In("admin", "user")})
        self.assertRaises(ValueError, self.dispatcher.handlers, colour="red")

    def test_operators_are_not_values(self) -> None:
        """
        An event carries plain values: an operator given as a fired, explained
        or filtered value is refused with a message that says so.
        """
        for call in (
            lambda **k: self.dispatcher.fire_event({}, **k),
            lambda **k: self.dispatcher.explain(**k),
            lambda **k: self.dispatcher.handlers(**k),
        ):
            with self.assertRaises(ValueError) as raised:
                call(role=In("admin"))  # type: ignore[operator]
            self.assertIn("match operator", str(raised.exception))

    def test_explain(self) -> None:
        """
        explain() says, phase by phase, which handlers an event would reach
        and, for the others, the first constraint it fails or that their
        max_calls are all promised; it fires and reserves nothing.
        """
        explanation = self.dispatcher.explain(role="user", user="root")
        self.assertEqual(explanation.runs(), [self.staff])
        reasons = {v.handler_id: v.reason for v in explanation.verdicts}
        self.assertEqual(reasons[self.admin], "role: 'user' != 'admin'")
        self.assertEqual(reasons[self.named], "user: 'root' does not pass Glob('b*')")
        self.assertEqual(reasons[self.once], "user: 'root' does not pass Not('root')")
        self.assertIn("role: absent", str(self.dispatcher.explain(user="x")))
        self.assertEqual(self.dispatcher.stats().accepted, 0)
        self.dispatcher.fire_event({}, user="bob")
        later = self.dispatcher.explain(user="bob")
        self.assertEqual(later.runs("during"), [self.named])
        (verdict,) = [v for v in later.verdicts if v.handler_id == self.once]
        self.assertIn("max_calls (1) are all promised", verdict.reason or "")
        self.assertIn("after: handler 4 app.h:once does not run", str(later))
