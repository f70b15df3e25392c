"""
The RabbitMQ benchmarks run (quick smoke runs against the real broker), so they
cannot rot.  Nothing here judges their figures: speed is measured by the
benchmarks, never asserted in tests.
"""

from __future__ import annotations

import importlib.util
import sys
from typing import Any

from twisted.internet import defer
from twisted.trial.unittest import SkipTest, TestCase

from tests.integration.support import run_quick
from tests.integration.test_amqp import BROKER_UP, NO_BROKER


class AMQPBenchmarkSmokeTests(TestCase):
    timeout = 180

    def setUp(self) -> None:
        if not BROKER_UP:
            print(NO_BROKER, file=sys.stderr)
            raise SkipTest(NO_BROKER)

    @defer.inlineCallbacks
    def test_dispatch_through_rabbitmq(self) -> Any:
        """
        C{python -m benchmarks.bench_amqp --quick} measures the local pool and
        RabbitMQ with 1, 2 and 4 worker processes, each with positive figures,
        and prints the table against the local pool.
        """
        text, figures = yield run_quick(self, "benchmarks.bench_amqp")
        self.assertEqual(
            sorted(figures),
            sorted(
                ["local pool", "RabbitMQ, 1 worker"]
                + [f"RabbitMQ, {n} workers" for n in (2, 4)]
            ),
        )
        for measured in figures.values():
            self.assertGreater(measured["events_per_s"], 0)
            self.assertGreater(measured["p50_ms"], 0)
        self.assertIn("x local ev/s", text)

    @defer.inlineCallbacks
    def test_clients(self) -> Any:
        """
        C{python -m benchmarks.amqp_clients --quick} measures pika's Twisted
        adapter (and aio-pika under the asyncio reactor, when installed).
        """
        text, figures = yield run_quick(self, "benchmarks.amqp_clients")
        expected = ["pika"]
        if importlib.util.find_spec("aio_pika") is not None:
            expected.append("aio-pika")
        self.assertEqual(sorted(figures["clients"]), sorted(expected))
        for measured in figures["clients"].values():
            self.assertGreater(measured["messages_per_s"], 0)
            self.assertGreater(measured["p50_ms"], 0)
        self.assertIn("p50 ms", text)
