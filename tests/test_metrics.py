"""
The Prometheus collector, read in memory: dispatcher counters, and the state of
pools that reach their workers over a connection.
"""

from __future__ import annotations

from attrs import define
from prometheus_client import generate_latest
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from actordispatch import EventDispatcher
from actordispatch._service.metrics import metrics_registry
from actordispatch.interfaces import IConnectedPool
from actordispatch.testing import FakePool


@implementer(IConnectedPool)
@define(eq=False)
class ConnectedPool(FakePool):
    """
    A fake pool with a connection's state, as the AMQP pool has.
    """

    up: bool = False
    ignored_replies: int = 3


class MetricsTests(SynchronousTestCase):
    def test_pool_connection_state(self) -> None:
        """
        A pool with a connection reports whether it is up and how many
        replies it ignored; a local pool reports neither.
        """
        dispatcher = EventDispatcher(("kind",), reactor=Clock(), pool=FakePool())
        dispatcher.add_pool("remote", ConnectedPool())
        text = generate_latest(metrics_registry(dispatcher)).decode()
        self.assertIn('actordispatch_pool_up{pool="remote"} 0.0', text)
        self.assertIn(
            'actordispatch_pool_ignored_replies_total{pool="remote"} 3.0', text
        )
        self.assertNotIn('actordispatch_pool_up{pool="default"}', text)
        self.assertIn('actordispatch_events_total{state="accepted"} 0.0', text)
