"""
Prometheus metrics of a dispatcher, gathered when scraped (nothing is counted
on the event path beyond what the dispatcher already keeps).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client.core import (
    CollectorRegistry,
    CounterMetricFamily,
    GaugeMetricFamily,
)
from prometheus_client.registry import Collector

from actordispatch.interfaces import IConnectedPool, IProcessPool


class DispatcherCollector(Collector):
    """
    Reads C{stats()} and C{handlers()} of a dispatcher at each scrape.
    """

    def __init__(self, dispatcher: Any) -> None:
        self._dispatcher = dispatcher

    def collect(self) -> Iterator[Any]:
        stats = self._dispatcher.stats()
        events = CounterMetricFamily(
            "actordispatch_events", "Events by what happened to them.", labels=["state"]
        )
        events.add_metric(["accepted"], stats.accepted)
        events.add_metric(["finished"], stats.finished)
        events.add_metric(["rejected"], stats.rejected)
        yield events
        for name, value, text in (
            ("in_flight", stats.in_flight, "Events running their phases."),
            ("queued", stats.queued, "Accepted events waiting for their turn."),
            ("waiting", stats.waiting, "Events waiting for room in a full queue."),
            ("handlers", stats.handlers, "Registered handlers."),
        ):
            yield GaugeMetricFamily(f"actordispatch_{name}", text, value=value)
        labels = ["handler_id", "handler", "phase", "pool"]
        calls = CounterMetricFamily(
            "actordispatch_handler_calls",
            "Invocations with a final outcome.",
            labels=labels,
        )
        failures = CounterMetricFamily(
            "actordispatch_handler_failures", "Invocations not ok.", labels=labels
        )
        latency = GaugeMetricFamily(
            "actordispatch_handler_latency_seconds",
            "Handler run time percentiles over its last 1,024 outcomes.",
            labels=[*labels, "quantile"],
        )
        children: dict[str, int] = {}
        for info in self._dispatcher.handlers():
            values = [str(info.handler_id), info.handler, info.phase, info.pool]
            calls.add_metric(values, info.calls)
            failures.add_metric(values, info.failures)
            for quantile, seconds in (
                ("0.5", info.p50),
                ("0.9", info.p90),
                ("0.99", info.p99),
            ):
                if seconds is not None:
                    latency.add_metric([*values, quantile], seconds)
            children[info.pool] = len(info.child_pids)
        yield calls
        yield failures
        yield latency
        gauge = GaugeMetricFamily(
            "actordispatch_children", "Live child processes per pool.", labels=["pool"]
        )
        up = GaugeMetricFamily(
            "actordispatch_pool_up",
            "Whether a pool that reaches its workers over a connection (a broker) "
            "has it now.",
            labels=["pool"],
        )
        ignored = CounterMetricFamily(
            "actordispatch_pool_ignored_replies",
            "Replies no invocation was waiting for (duplicates after a "
            "redelivery, replies after a timeout).",
            labels=["pool"],
        )
        for name, pool in self._dispatcher.pools().items():
            processes = IProcessPool.providedBy(pool)
            gauge.add_metric([name], len(pool.child_pids()) if processes else 0)
            if IConnectedPool.providedBy(pool):
                up.add_metric([name], int(pool.up))
                ignored.add_metric([name], pool.ignored_replies)
        yield gauge
        yield up
        yield ignored


def metrics_registry(dispatcher: Any) -> CollectorRegistry:
    """
    A registry holding only this dispatcher's metrics.
    """
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DispatcherCollector(dispatcher))
    return registry


def metrics_site(dispatcher: Any) -> Any:
    """
    A Twisted web site serving the metrics at every path.
    """
    from prometheus_client.twisted import MetricsResource
    from twisted.web.server import Site

    return Site(MetricsResource(registry=metrics_registry(dispatcher)))
