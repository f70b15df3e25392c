"""
The dispatcher's side of L{IRoutedPool}, the seam the AMQP pool plugs into:
specs are checked at once, a handler goes live only once its route is bound,
every way a registration ends unbinds it, and invocations carry the event's
keywords.  In memory, with a fake routed pool.
"""

from __future__ import annotations

from typing import Any

from attrs import define, field
from twisted.internet.defer import Deferred, fail
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from actordispatch import BrokerUnavailableError, EventDispatcher
from actordispatch._core.match import MatchSpec
from actordispatch.interfaces import IRoutedPool
from actordispatch.testing import FakePool


@implementer(IRoutedPool)
@define(eq=False)
class FakeRoutedPool(FakePool):
    """
    A fake pool that records its binds (each waits for the test to fire it)
    and unbinds.
    """

    binds: list[tuple[int, str, str, MatchSpec, Deferred[None]]] = field(factory=list)
    unbinds: list[int] = field(factory=list)
    refuse: Exception | None = None

    def check_spec(self, phase: str, spec: MatchSpec) -> None:
        if any(value == "unroutable" for value in spec.values):
            raise ValueError("cannot route 'unroutable'")

    def bind(
        self, handler_id: int, handler: str, phase: str, spec: MatchSpec
    ) -> Deferred[None]:
        if self.refuse is not None:
            return fail(self.refuse)
        bound: Deferred[None] = Deferred()
        self.binds.append((handler_id, handler, phase, spec, bound))
        return bound

    def unbind(self, handler_id: int) -> None:
        self.unbinds.append(handler_id)


def answer_ok(call: Any) -> None:
    call.succeed(call.invocation.handler)


class RoutedPoolTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.pool = FakeRoutedPool(answer=answer_ok)
        self.dispatcher = EventDispatcher(
            allowed_match_spec_keywords=("kind",), reactor=Clock(), pool=FakePool()
        )
        self.dispatcher.add_pool("routed", self.pool)
        self.successResultOf(self.dispatcher.start())

    def add(self, **options: Any) -> Deferred[int]:
        return self.dispatcher.add_event_handler(
            "app.handlers:h", "during", pool="routed", **options
        )

    def test_fake_provides_the_interface(self) -> None:
        """
        The fake is a complete L{IRoutedPool}.
        """
        self.assertTrue(verifyObject(IRoutedPool, self.pool))

    def test_amqp_pool_provides_the_interfaces(self) -> None:
        """
        The AMQP pool is an L{IRoutedPool} and takes a phase's jobs together
        (L{IJobPool}), so that it publishes them at once.  (Made, not started:
        no broker is needed.)
        """
        from actordispatch import AMQPPool
        from actordispatch.interfaces import IJobPool

        pool = AMQPPool(
            "amqp://guest:guest@127.0.0.1:5672/", reactor=MemoryReactorClock()
        )
        self.assertTrue(verifyObject(IRoutedPool, pool))
        self.assertTrue(verifyObject(IJobPool, pool))

    def test_live_once_bound(self) -> None:
        """
        A handler on a routed pool is bound with its phase and spec, and
        matches events only once the bind has fired.
        """
        added = self.add(kind="a")
        ((handler_id, handler, phase, spec, bound),) = self.pool.binds
        self.assertEqual(
            (handler, phase, spec),
            ("app.handlers:h", "during", MatchSpec((("kind", "a"),))),
        )
        early = self.successResultOf(self.dispatcher.fire_event({}, kind="a"))
        self.assertEqual(early.outcomes, ())
        bound.callback(None)
        self.assertEqual(self.successResultOf(added), handler_id)
        late = self.successResultOf(self.dispatcher.fire_event({}, kind="a"))
        self.assertEqual([o.status for o in late.outcomes], ["ok"])
        self.assertEqual(self.pool.calls[0].invocation.keywords, {"kind": "a"})

    def test_callables_are_bound_too(self) -> None:
        """
        A handler given as a callable still waits for its route on a routed
        pool (it is not live at once as on a local pool).
        """
        from tests.helpers import echo

        added = self.dispatcher.add_event_handler(echo, "during", pool="routed")
        self.assertNoResult(added)
        self.pool.binds[0][4].callback(None)
        self.successResultOf(added)

    def test_unroutable_spec(self) -> None:
        """
        A spec the pool cannot route is a C{ValueError} at once; nothing is
        bound or registered.
        """
        self.assertRaises(ValueError, self.add, kind="unroutable")
        self.assertEqual((self.pool.binds, self.dispatcher.handlers()), ([], []))

    def test_broker_unavailable(self) -> None:
        """
        A bind that fails because the broker is unreachable fails the
        registration with L{BrokerUnavailableError} itself.
        """
        self.pool.refuse = BrokerUnavailableError("no broker")
        self.failureResultOf(self.add(kind="a"), BrokerUnavailableError)
        self.assertEqual(self.dispatcher.handlers(), [])

    def test_every_removal_unbinds(self) -> None:
        """
        The pool is told of every end of a registration: removal by the user,
        used-up C{max_calls}, removal while the bind was under way (once it is
        bound), and the removal of the pool.
        """
        first = self.add(kind="a")
        self.pool.binds[-1][4].callback(None)
        self.successResultOf(
            self.dispatcher.remove_event_handler(self.successResultOf(first))
        )
        self.assertEqual(self.pool.unbinds, [1])

        once = self.add(kind="a", max_calls=1)
        self.pool.binds[-1][4].callback(None)
        self.successResultOf(once)
        self.successResultOf(self.dispatcher.fire_event({}, kind="a"))
        self.assertEqual(self.pool.unbinds, [1, 2])

        racing = self.add(kind="a")
        self.successResultOf(self.dispatcher.remove_event_handler(3))
        self.assertEqual(self.pool.unbinds, [1, 2])
        self.pool.binds[-1][4].callback(None)
        self.successResultOf(racing)
        self.assertEqual(self.pool.unbinds, [1, 2, 3])

        kept = self.add(kind="b")
        self.pool.binds[-1][4].callback(None)
        self.successResultOf(kept)
        self.successResultOf(self.dispatcher.remove_pool("routed"))
        self.assertEqual(self.pool.unbinds, [1, 2, 3, 4])
