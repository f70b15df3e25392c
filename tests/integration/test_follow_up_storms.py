"""
Issue 16, "follow-up storms", with real children: one handler's storm of
follow-ups (its invocations each fire a follow-up event and wait for it)
delays only that handler's events.  An unrelated handler's latency is measured
quiet and then during a storm, in the same run, and compared.
"""

from __future__ import annotations

import time
from typing import Any

from twisted.internet import defer, reactor
from twisted.internet.task import deferLater

from actordispatch import DispatchResult, EventDispatcher

from .test_faults import FaultTestCase, H

#: Storm events kept in flight at once.
STORM = 48
#: Probe events per measurement (p99 of 100 samples is their second worst).
PROBES = 100
#: Seconds between one probe's result and the next probe.
PACE = 0.04
#: Seconds each storm event's follow-up takes (its handler sleeps).
ANSWER = 0.3


def p99(samples: list[float]) -> float:
    """
    The 99th percentile (nearest rank) of C{samples}.
    """
    ordered = sorted(samples)
    return ordered[max(0, -(-len(ordered) * 99 // 100) - 1)]


class FollowUpStormTests(FaultTestCase):
    timeout = 180
    #: the most children seen serving (or booting to serve) at once
    most_children = 0

    @defer.inlineCallbacks
    def probe(self, d: EventDispatcher, results: list[DispatchResult]) -> Any:
        """
        Fire C{PROBES} probe events one after another, C{PACE} seconds apart;
        the latency of each.
        """
        latencies = []
        pool = d.pools()["default"]
        for n in range(PROBES):
            self.most_children = max(self.most_children, len(pool.child_pids()))
            started = time.monotonic()
            result = yield d.fire_event({"n": n}, kind="probe")
            latencies.append(time.monotonic() - started)
            # Paced, so that the storm has time to blow while they are sampled.
            yield deferLater(reactor, PACE, lambda: None)
            self.assertTrue(result.ok, result.failures)
            self.assertEqual(result.outcomes[0].value, {"n": n})
            results.append(result)
        return latencies

    @defer.inlineCallbacks
    def test_storm_delays_only_its_handler(self) -> Any:
        """
        While 48 invocations of one handler at a time each fire a follow-up
        event and wait for it, an unrelated handler's p99 latency stays within
        twice its quiet p99 (plus half a second of allowance for a loaded
        machine); the storm takes at most C{max_waiting_per_handler} extra
        children, and any of its waits past that is refused at once with a
        FollowUpError naming it.  Every event ends with an outcome, the
        counters balance, and no child is left.
        """
        pool = self.pool(size=2, standby=1)
        d = self.dispatcher(pool=pool, max_in_flight=STORM + 16)
        yield d.start()
        yield d.add_event_handler(H + "storm", "during", kind="storm")
        yield d.add_event_handler(H + "slow", "during", kind="storm_answer")
        yield d.add_event_handler(H + "echo", "during", kind="probe")
        results: list[DispatchResult] = []
        # Warm: every child has imported the handlers.
        warm = yield defer.gatherResults(
            [d.fire_event({"seconds": 0.0}, kind=k) for k in ("storm",) * 4]
            + [d.fire_event({"n": n}, kind="probe") for n in range(8)]
        )
        results.extend(warm)
        quiet = yield self.probe(d, results)

        storm: list[DispatchResult] = []
        blowing = [True]

        def one_more(result: DispatchResult | None = None) -> None:
            if result is not None:
                storm.append(result)
            self.most_children = max(self.most_children, len(pool.child_pids()))
            if blowing[0]:
                d.fire_event({"seconds": ANSWER}, kind="storm").addCallback(one_more)

        for _ in range(STORM):
            one_more()
        stormy = yield self.probe(d, results)
        blowing[0] = False
        while d.stats().in_flight or d.stats().queued:
            yield deferLater(reactor, 0.05, lambda: None)
        results.extend(storm)

        quiet_p99, storm_p99 = p99(quiet), p99(stormy)
        values = [r.outcomes[0].value for r in storm]
        answered = [v for v in values if v.get("answered")]
        refused = [v for v in values if "refused" in v]
        print(
            f"\nprobe latency, p99 of {PROBES}: quiet {quiet_p99 * 1000:.1f} ms, "
            f"storm {storm_p99 * 1000:.1f} ms; median quiet "
            f"{sorted(quiet)[PROBES // 2] * 1000:.1f} ms, storm "
            f"{sorted(stormy)[PROBES // 2] * 1000:.1f} ms; {len(storm)} storm "
            f"events ({len(answered)} answered, {len(refused)} refused), at "
            f"most {self.most_children} children serving"
        )
        self.assertLessEqual(storm_p99, max(2 * quiet_p99, quiet_p99 + 0.5))

        # The storm blew: its events waited for their answers, or (past the
        # handler's max_waiting_per_handler) were refused at once, saying why.
        self.assertGreaterEqual(len(storm), STORM)
        self.assertEqual(len(answered) + len(refused), len(storm))
        self.assertTrue(answered)
        for value in refused:
            self.assertEqual(value["refused"], "FollowUpError")
            self.assertIn("max_waiting_per_handler=4", value["message"])
        # It took at most 4 stand-ins beside the 2 serving children.
        self.assertLessEqual(self.most_children, 2 + 4)

        # Nothing lost: one outcome each, every follow-up accepted finished.
        for result in results:
            self.assertEqual(len(result.outcomes), 1, result)
            self.assertTrue(result.ok, result.failures)
        stats = d.stats()
        self.assertEqual(
            stats.accepted, stats.finished + stats.in_flight + stats.queued
        )
        warm_answered = sum(1 for r in warm if r.outcomes[0].value.get("answered"))
        self.assertEqual(stats.accepted, len(results) + len(answered) + warm_answered)
        self.assertEqual(stats.finished, stats.accepted)
        self.note_pids(results)

    @defer.inlineCallbacks
    def test_waiting_refused_past_handler_cap(self) -> Any:
        """
        With room for several of a handler's invocations at once, those that
        would park a child past C{max_waiting_per_handler} have their waiting
        follow-up refused at once with a FollowUpError naming the option;
        every event ends with an outcome and the counters balance.
        """
        pool = self.pool(size=4, standby=0, max_waiting_per_handler=1)
        d = self.dispatcher(pool=pool, max_in_flight=16)
        yield d.start()
        yield d.add_event_handler(H + "storm", "during", kind="storm")
        yield d.add_event_handler(H + "slow", "during", kind="storm_answer")
        results = []
        for _ in range(3):  # waves: the handler is known to wait after the first
            wave = yield defer.gatherResults(
                [d.fire_event({"seconds": ANSWER}, kind="storm") for _ in range(8)]
            )
            results.extend(wave)
        values = [r.outcomes[0].value for r in results]
        answered = [v for v in values if v.get("answered")]
        refused = [v for v in values if "refused" in v]
        self.assertEqual(len(answered) + len(refused), len(results))
        self.assertTrue(answered)
        self.assertTrue(refused)
        for value in refused:
            self.assertEqual(value["refused"], "FollowUpError")
            self.assertIn("max_waiting_per_handler=1", value["message"])
        stats = d.stats()
        self.assertEqual(stats.accepted, stats.finished)
        self.assertEqual(stats.accepted, len(results) + len(answered))
        self.note_pids(results)
