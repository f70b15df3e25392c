"""
Soak: run the dispatcher with real children for a while, with handlers that
misbehave at random, and check that nothing is lost or duplicated.

An L{EventDispatcher} with two phases and three handlers (L{benchmarks.
soak_handlers}) runs on a pool of two children, with C{max_in_flight=32}, a
timeout of 1 s per handler and a result cap of 4 KiB.  For the whole duration
the script keeps 64 events outstanding, firing a new one as each result
arrives.  For every invocation it decides at random (about 1% each) whether
the handler crashes its child (C{os._exit}), hangs past its timeout, returns a
result over the cap, or raises; otherwise the handler returns at once.  Each
fired event and its result go in a ledger.

At the end it stops the dispatcher and prints the figures (accepted events,
outcomes by status, events/s) and its checks:

 - every accepted event got exactly one result;
 - each result has exactly one outcome per handler that matched the event, and
   no outcome twice;
 - every "ok" outcome carries the value of its own event and handler;
 - every outcome has the status its planned fault calls for (crash: crashed,
   hang: timeout, oversize and raise: error, none: ok);
 - the counters balance (C{accepted == finished + in_flight + queued}), and
   every accepted event is finished;
 - every child process is gone after C{stop()}.

It exits non-zero if any check fails.  Quarantine is switched off (a huge
C{crash_limit}): with crashes planned at 1%, it would otherwise quarantine the
handlers and end unrelated invocations C{"crashed"}, which the status check
could not tell from a real fault.

Run it from the project root, so that the children can import C{benchmarks}::

    python -m benchmarks.soak [--seconds 300] [--quick] [--seed N] [--rate 0.01]
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

from attrs import define, field
from twisted.internet.defer import ensureDeferred
from twisted.internet.task import LoopingCall, deferLater, react
from twisted.python.failure import Failure

from actordispatch import (
    STATUSES,
    AmpoulePool,
    DispatchResult,
    EventDispatcher,
    EventEncodingError,
    NotRunningError,
    OverloadedError,
)
from benchmarks.soak_handlers import EXPECTED_STATUS, MAX_RESULT_SIZE

PHASES = ("before", "after")
KEYWORDS = ("kind",)
#: (name, phase, match spec) of each handler.
HANDLERS: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("alpha", "before", {}),
    ("beta", "before", {"kind": "even"}),
    ("gamma", "after", {}),
)
FAULTS = tuple(EXPECTED_STATUS)
CHILDREN = 2
MAX_IN_FLIGHT = 32
#: Events kept outstanding (fired, no result yet).
WINDOW = 2 * MAX_IN_FLIGHT
HANDLER_TIMEOUT = 1.0
KILL_GRACE = 0.2
#: Seconds to wait for the last results before stopping, and for stop().
SETTLE_SECONDS = 30.0
DRAIN_TIMEOUT = 10.0
QUICK_SECONDS = 6.0
PROGRESS_EVERY = 30.0


@define(eq=False)
class Entry:
    """
    One fired event in the ledger.

    @ivar faults: the planned fault of each handler that misbehaves, by name.
    @ivar expected: the handlers that match it: handler id -> (name, status).
    @ivar refused: why C{fire_event} refused it, if it did.
    """

    number: int
    kind: str
    faults: dict[str, str]
    expected: dict[int, tuple[str, str]]
    results: list[DispatchResult] = field(factory=list)
    failures: list[str] = field(factory=list)
    refused: str | None = None


@define(eq=False)
class Check:
    """
    One check of the ledger: its name, whether it passed, and what broke it.
    """

    name: str
    problems: list[str] = field(factory=list)

    @property
    def passed(self) -> bool:
        return not self.problems


def parse_options(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.soak", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--seconds", type=float, default=300.0, help="how long to fire events"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"a smoke run: fire for {QUICK_SECONDS:g} s",
    )
    parser.add_argument("--seed", type=int, default=1, help="the faults' seed")
    parser.add_argument(
        "--rate",
        type=float,
        default=0.01,
        help="probability of each fault, per invocation",
    )
    parser.add_argument(
        "--verbose", action="store_true", help="log the library's warnings"
    )
    options = parser.parse_args(argv)
    if options.quick:
        options.seconds = QUICK_SECONDS
    if not 0 <= options.rate * len(FAULTS) <= 1:
        parser.error("--rate times the number of faults must be within [0, 1]")
    return options


def alive(pid: int) -> bool:
    """
    Whether process C{pid} still exists (a zombie counts: nobody reaped it).
    """
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Soak:
    """
    The run: fires events, keeps the ledger, and checks it.
    """

    def __init__(self, reactor: Any, options: argparse.Namespace) -> None:
        self.reactor = reactor
        self.options = options
        self.rng = random.Random(options.seed)
        self.pool = AmpoulePool(
            size=CHILDREN,
            default_timeout=HANDLER_TIMEOUT,
            kill_grace=KILL_GRACE,
            max_result_size=MAX_RESULT_SIZE,
            crash_limit=10**9,
            reactor=reactor,
        )
        self.dispatcher = EventDispatcher(
            KEYWORDS,
            PHASES,
            reactor=reactor,
            pool=self.pool,
            max_in_flight=MAX_IN_FLIGHT,
        )
        self.ids: dict[str, int] = {}
        self.ledger: dict[int, Entry] = {}
        self.outstanding = 0
        self.firing = False
        self.deadline = 0.0
        self.started = 0.0
        self.last_result = 0.0
        self.pids: set[int] = set()
        self.planned: Counter[str] = Counter()

    # --- running -------------------------------------------------------------------

    async def run(self) -> bool:
        options = self.options
        print(
            f"soak: {options.seconds:g} s, seed {options.seed}, {CHILDREN} children, "
            f"phases {'/'.join(PHASES)}, max_in_flight {MAX_IN_FLIGHT}, "
            f"{WINDOW} outstanding, timeout {HANDLER_TIMEOUT:g} s, result cap "
            f"{MAX_RESULT_SIZE} B, faults {options.rate:.1%} each "
            f"({', '.join(FAULTS)})",
            flush=True,
        )
        await self.dispatcher.start()
        for name, phase, spec in HANDLERS:
            self.ids[name] = await self.dispatcher.add_event_handler(
                f"benchmarks.soak_handlers:{name}",
                phase,
                timeout=HANDLER_TIMEOUT,
                **spec,
            )
        watch = LoopingCall(self.watch_children)
        watch.clock = self.reactor
        watch.start(0.2)
        progress = LoopingCall(self.progress)
        progress.clock = self.reactor
        self.started = self.last_result = time.monotonic()
        self.deadline = self.started + options.seconds
        progress.start(PROGRESS_EVERY, now=False)
        self.refill()
        await self.until(lambda: time.monotonic() >= self.deadline)
        settle_by = time.monotonic() + SETTLE_SECONDS
        await self.until(lambda: self.outstanding == 0 or time.monotonic() >= settle_by)
        elapsed = self.last_result - self.started
        progress.stop()
        self.watch_children()
        watch.stop()
        stats_before = self.dispatcher.stats()
        await self.dispatcher.stop(drain_timeout=DRAIN_TIMEOUT)
        stats_after = self.dispatcher.stats()
        gone_by = time.monotonic() + 5
        await self.until(
            lambda: not any(alive(p) for p in self.pids) or time.monotonic() >= gone_by
        )
        return self.report(elapsed, stats_before, stats_after)

    async def until(self, condition: Any, every: float = 0.05) -> None:
        while not condition():
            await deferLater(self.reactor, every, lambda: None)

    def refill(self) -> None:
        if self.firing:
            return  # a result arrived while firing: the loop below goes on
        self.firing = True
        try:
            while self.outstanding < WINDOW and time.monotonic() < self.deadline:
                self.fire_one()
        finally:
            self.firing = False

    def fire_one(self) -> None:
        number = len(self.ledger)
        kind = "even" if number % 2 == 0 else "odd"
        faults: dict[str, str] = {}
        expected: dict[int, tuple[str, str]] = {}
        for name, _, spec in HANDLERS:
            if spec.get("kind", kind) != kind:
                continue
            fault = self.pick_fault()
            if fault is not None:
                faults[name] = fault
                self.planned[fault] += 1
            status = "ok" if fault is None else EXPECTED_STATUS[fault]
            expected[self.ids[name]] = (name, status)
        entry = Entry(number, kind, faults, expected)
        self.ledger[number] = entry
        self.outstanding += 1
        d = self.dispatcher.fire_event({"n": number, "faults": faults}, kind=kind)
        d.addCallbacks(self.delivered, self.failed, (entry,), errbackArgs=(entry,))

    def pick_fault(self) -> str | None:
        draw = self.rng.random()
        for index, fault in enumerate(FAULTS):
            if draw < self.options.rate * (index + 1):
                return fault
        return None

    def delivered(self, result: DispatchResult, entry: Entry) -> None:
        entry.results.append(result)
        self.pids.update(o.pid for o in result.outcomes if o.pid is not None)
        self.settled()

    def failed(self, failure: Failure, entry: Entry) -> None:
        if not entry.results and not entry.failures and self.is_refusal(failure):
            entry.refused = failure.getErrorMessage()
        else:
            entry.failures.append(f"{failure.type.__name__}: {failure.value}")  # type: ignore[union-attr]
        self.settled()

    @staticmethod
    def is_refusal(failure: Failure) -> bool:
        # fire_event refused it: not accepted, so not lost either.
        return bool(failure.check(OverloadedError, NotRunningError, EventEncodingError))

    def settled(self) -> None:
        self.outstanding -= 1
        self.last_result = time.monotonic()
        self.refill()

    def watch_children(self) -> None:
        self.pids.update(self.pool.child_pids())

    def progress(self) -> None:
        elapsed = time.monotonic() - self.started
        stats = self.dispatcher.stats()
        print(
            f"  t={elapsed:4.0f}s fired={len(self.ledger)} "
            f"finished={stats.finished} in_flight={stats.in_flight} "
            f"queued={stats.queued} children_seen={len(self.pids)} "
            f"events/s={stats.finished / elapsed:.0f}",
            flush=True,
        )

    # --- checking ------------------------------------------------------------------

    def report(self, elapsed: float, before: Any, after: Any) -> bool:
        entries = list(self.ledger.values())
        accepted = [e for e in entries if e.refused is None]
        statuses: Counter[str] = Counter()
        lost = Check("every accepted event got exactly one result")
        exact = Check("one outcome per matched handler, none twice")
        attributed = Check("every ok outcome carries its own event and handler")
        planned = Check("every outcome has the status its fault calls for")
        balance = Check("stats balance; every accepted event finished")
        children = Check("all children gone after stop()")
        lost_count = duplicated = 0
        for entry in accepted:
            if entry.failures:
                lost.problems.append(f"event {entry.number} failed: {entry.failures}")
            if len(entry.results) != 1:
                if entry.results:
                    duplicated += 1
                else:
                    lost_count += 1
                lost.problems.append(
                    f"event {entry.number}: {len(entry.results)} results"
                )
            for result in entry.results:
                seen = Counter(o.handler_id for o in result.outcomes)
                twice = sorted(h for h, n in seen.items() if n > 1)
                duplicated += len(twice)
                if twice or set(seen) != set(entry.expected):
                    exact.problems.append(
                        f"event {entry.number}: outcomes for handlers "
                        f"{sorted(seen.elements())}, expected "
                        f"{sorted(entry.expected)}"
                    )
                for outcome in result.outcomes:
                    statuses[outcome.status] += 1
                    name, status = entry.expected.get(outcome.handler_id, ("?", "?"))
                    if outcome.status != status:
                        planned.problems.append(
                            f"event {entry.number} {name}: {outcome.status} "
                            f"({outcome.error_type}: {outcome.error_message}), "
                            f"planned {status}"
                        )
                    if outcome.ok and outcome.value != {
                        "n": entry.number,
                        "h": name,
                    }:
                        attributed.problems.append(
                            f"event {entry.number} {name}: value {outcome.value!r}"
                        )
        for when, stats in (("before stop", before), ("after stop", after)):
            if stats.accepted != stats.finished + stats.in_flight + stats.queued:
                balance.problems.append(f"{when}: {stats}")
        if after.accepted != len(accepted) or after.finished != after.accepted:
            balance.problems.append(
                f"after stop: {after}, ledger has {len(accepted)} accepted"
            )
        left = sorted(p for p in self.pids if alive(p))
        if left or self.pool.child_pids():
            children.problems.append(
                f"alive: {left}, pool still lists {self.pool.child_pids()}"
            )
        checks = [lost, exact, attributed, planned, balance, children]

        refused = len(entries) - len(accepted)
        print(
            f"ledger: fired={len(entries)} accepted={len(accepted)} "
            f"refused={refused} results={sum(len(e.results) for e in accepted)} "
            f"lost={lost_count} duplicated={duplicated}"
        )
        print(
            f"accepted={len(accepted)} "
            + " ".join(f"{s}={statuses[s]}" for s in STATUSES)
            + f" outcomes={sum(statuses.values())}"
        )
        print(
            "planned faults: "
            + " ".join(f"{f}={self.planned[f]}" for f in FAULTS)
            + f"; children used: {len(self.pids)}"
        )
        rate = len(accepted) / elapsed if elapsed > 0 else 0.0
        print(f"events/s: {rate:.1f} ({len(accepted)} events in {elapsed:.1f} s)")
        print("checks:")
        for check in checks:
            print(f"  {'PASS' if check.passed else 'FAIL'}  {check.name}")
            for problem in check.problems[:5]:
                print(f"        {problem}")
            if len(check.problems) > 5:
                print(f"        ... and {len(check.problems) - 5} more")
        ok = all(check.passed for check in checks)
        print(f"soak: {'PASS' if ok else 'FAIL'}", flush=True)
        return ok


def _start_logging(verbose: bool) -> None:
    from twisted import logger

    level = logger.LogLevel.warn if verbose else logger.LogLevel.error
    logger.globalLogBeginner.beginLoggingTo(
        [
            logger.FilteringLogObserver(
                logger.textFileLogObserver(sys.stderr),
                [logger.LogLevelFilterPredicate(defaultLogLevel=level)],
            )
        ],
        redirectStandardIO=False,
    )


async def _main(reactor: Any, options: argparse.Namespace) -> None:
    if not await Soak(reactor, options).run():
        raise SystemExit(1)


def main(argv: Sequence[str] | None = None) -> None:
    """
    Run the soak; exit 1 if any check fails.
    """
    options = parse_options(sys.argv[1:] if argv is None else argv)
    _start_logging(options.verbose)
    react(lambda reactor: ensureDeferred(_main(reactor, options)))


if __name__ == "__main__":
    main()
