"""
How an accepted event runs its phases: L{PhaseRunner}.

Every handler of a phase is sent to its pool together (in a sequential phase,
one after the other); the phase ends when each has a final outcome, which the
runner judges (a veto, a failure under C{on_error="abort"}: the rest of the
event is skipped), may retry, and records in its slot.  Moving events on is a
loop of steps, never a recursion, however many events settle without a child.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

from attrs import define, evolve, field
from twisted.logger import Logger
from twisted.python.failure import Failure

from actordispatch._core.invocation import Invocation
from actordispatch._core.phase import Phase
from actordispatch._core.registry import HandlerRegistry, Registration
from actordispatch._core.result import HandlerOutcome
from actordispatch._dispatch.delivery import Delivery, DispatchJob, PhaseRun
from actordispatch._dispatch.pools import Submit
from actordispatch._dispatch.stopping import Lifecycle

_log = Logger()

#: The statuses the error policy counts as a handler's failure.
_FAILED = frozenset({"error", "timeout", "crashed"})

#: The statuses a handler's C{retries} apply to.
_RETRIED = frozenset({"timeout", "crashed"})


def _unwired(*args: Any) -> None:
    raise RuntimeError("the runner's finish and broke are not wired")


@define(eq=False)
class PhaseRunner:
    """
    Runs accepted events through their phases.

    @ivar finish: called with each event that ran all its phases (its
        outcomes are in it).
    @ivar broke: called with an event and the failure of a bug met while
        running it.
    """

    _phase_specs: tuple[Phase, ...]
    _registry: HandlerRegistry
    #: per pool, how its jobs are handed over (the L{PoolSet}'s, shared)
    _submit: dict[str, Submit]
    _state: Lifecycle
    _skip_after_failure: bool = False
    _trace: bool = False
    finish: Callable[[Delivery], None] = _unwired
    broke: Callable[[Delivery, Failure], None] = _unwired
    #: what L{_step} does next: move an event to its next phase, or send a
    #: sequential phase's next job
    _steps: deque[tuple[Callable[[Any], None], Any]] = field(factory=deque)
    _stepping: bool = False

    def run_phase(self, delivery: Delivery) -> None:
        """
        Start C{delivery}'s next phase that has handlers, or finish it: now,
        or, when called while another event is being moved on (an outcome
        that ends a phase can finish an event, which starts the next queued
        one, whose handlers may all settle at once...), as soon as that is
        done.
        """
        self._steps.append((self._next_phase, delivery))
        if not self._stepping:
            self._step()

    def _step(self) -> None:
        """
        Take the steps scheduled by L{run_phase} and L{_record}, in order,
        until none is left.
        """
        self._stepping = True
        steps = self._steps
        try:
            while steps:
                step, subject = steps.popleft()
                try:
                    step(subject)
                except Exception:
                    delivery = (
                        subject.delivery if isinstance(subject, PhaseRun) else subject
                    )
                    self._bug(Failure(), delivery)
        finally:
            self._stepping = False

    def _next_phase(self, delivery: Delivery) -> None:
        """
        Start the current phase's handlers; move on when all settled.
        """
        plan = delivery.plan
        index = delivery.phase_index
        while index < len(plan):
            planned = plan[index]
            index += 1
            if planned:
                delivery.phase_index = index
                self._start_phase(delivery, self._phase_specs[index - 1], planned)
                return
        delivery.phase_index = index
        self.finish(delivery)

    def _skip_reason(
        self, delivery: Delivery, registration: Registration
    ) -> tuple[str | None, str] | None:
        """
        Why an invocation planned for C{delivery} must not run now, if so:
        C{(error_type, message)}.
        """
        if registration.removed:
            return None, "the handler was removed before its phase ran"
        if self._state.aborting:
            return None, "the dispatcher stopped before its phase ran"
        return delivery.halted

    def _start_phase(
        self, delivery: Delivery, phase: Phase, planned: list[Registration]
    ) -> None:
        run = PhaseRun(self, delivery, phase, [None] * len(planned), len(planned))
        if self._trace:
            _log.debug(
                "event {event} phase {phase}: starting {count} handler(s)",
                event=delivery.number,
                phase=phase.name,
                count=len(planned),
            )
        name = phase.name
        event = delivery.event
        keywords = delivery.keywords
        depth = delivery.depth
        # Whether any of them may have to be skipped: rarely.
        checking = self._state.aborting or delivery.halted is not None
        jobs = []
        for slot, registration in enumerate(planned):
            job = DispatchJob(
                Invocation(
                    registration.handler_id,
                    registration.handler,
                    name,
                    event,
                    registration.timeout,
                    keywords,
                    depth,
                ),
                run,
                slot,
                registration,
            )
            if checking or registration.removed:
                skip = self._skip_reason(delivery, registration)
                if skip is not None:
                    self._skip(job, skip)
                    continue
            jobs.append(job)
        if phase.sequential and len(jobs) > 1:
            run.later = deque(jobs[1:])
            del jobs[1:]
        if jobs:
            self._send(jobs)

    def _skip(self, job: DispatchJob, reason: tuple[str | None, str]) -> None:
        registration = job.registration
        if not registration.removed:
            self._registry.release(registration)
        error_type, message = reason
        self._record(
            job.run,
            job.slot,
            job.invocation.outcome(
                "skipped", error_type=error_type, error_message=message
            ),
            advance=False,
        )

    def _send(self, jobs: list[DispatchJob]) -> None:
        """
        Hand jobs to their pools: all of a phase's that go to one pool
        together, so that the pool can batch them.
        """
        pool = jobs[0].registration.pool
        if len(jobs) == 1 or all(job.registration.pool == pool for job in jobs):
            self._submit[pool](jobs)
            return
        by_pool: dict[str, list[DispatchJob]] = {}
        for job in jobs:
            by_pool.setdefault(job.registration.pool, []).append(job)
        for name, chosen in by_pool.items():
            self._submit[name](chosen)

    def _advance(self, run: PhaseRun) -> None:
        """
        In a sequential phase, send the next job (skipping those that must not
        run now).
        """
        later = run.later
        while later:
            job = later.popleft()
            skip = self._skip_reason(run.delivery, job.registration)
            if skip is None:
                self._send([job])
                return
            self._skip(job, skip)

    def _judge(self, run: PhaseRun, result: HandlerOutcome) -> HandlerOutcome:
        """
        Apply the phase's veto and error policies to a final outcome: a veto
        where none is allowed becomes an error; a veto, or a failure under
        C{on_error="abort"}, halts the event.
        """
        phase = run.phase
        delivery = run.delivery
        if result.veto is not None and not phase.veto:
            result = evolve(
                result,
                status="error",
                veto=None,
                error_type="actordispatch.VetoNotAllowed",
                error_message=(
                    f"the handler returned Veto({result.veto!r}) in phase "
                    f"{phase.name!r}, which cannot veto (declare it "
                    f"Phase({phase.name!r}, veto=True))"
                ),
            )
        if delivery.halted is not None:
            return result
        if result.veto is not None:
            delivery.halted = (
                "actordispatch.Vetoed",
                f"vetoed by handler {result.handler_id} ({result.handler}) in "
                f"phase {phase.name!r}: {result.veto}",
            )
        elif result.status in _FAILED:
            policy = delivery.on_error or phase.on_error
            if policy == "abort" or (policy is None and self._skip_after_failure):
                delivery.halted = (
                    "actordispatch.EarlierFailure",
                    f"handler {result.handler_id} ({result.handler}) ended "
                    f"{result.status!r} in phase {phase.name!r} "
                    f"({result.error_type}) under on_error='abort'",
                )
        return result

    def settled(self, job: DispatchJob, result: HandlerOutcome) -> None:
        """
        A pool's final outcome for one job: retry it if it may be, judge it
        (veto, error policy), count it, and record it.  (Once per invocation:
        this is the hot path.)
        """
        try:
            registration = job.registration
            if result.status != "ok" or result.veto is not None:
                if (
                    result.status in _RETRIED
                    and job.attempts < registration.retries
                    and not self._state.aborting
                    and registration.pool in self._submit
                ):
                    job.attempts += 1
                    _log.info(
                        "handler {handler_id} {handler}: {status}, retry "
                        "{attempt} of {retries}",
                        handler_id=result.handler_id,
                        handler=result.handler,
                        status=result.status,
                        attempt=job.attempts,
                        retries=registration.retries,
                    )
                    self._submit[registration.pool]((job,))
                    return
                result = self._judge(job.run, result)
            self._registry.settle(registration, result)
            self._record(job.run, job.slot, result, advance=True)
        except Exception:
            self._bug(Failure(), job.run.delivery)

    def _record(
        self, run: PhaseRun, slot: int, result: HandlerOutcome, *, advance: bool
    ) -> None:
        """
        Record one final outcome in its slot; when it is the phase's last, move
        the event on to its next phase (in a sequential phase, C{advance}
        sends the next job instead).
        """
        if result.status != "ok":
            _log.info(
                "handler {handler_id} {handler} in phase {phase}: {status} "
                "{error_type}: {error_message}",
                handler_id=result.handler_id,
                handler=result.handler,
                phase=result.phase,
                status=result.status,
                error_type=result.error_type,
                error_message=result.error_message,
            )
        run.slots[slot] = result
        run.remaining -= 1
        if self._trace:
            _log.debug(
                "event {event} handler {handler_id} {handler} in phase {phase}: "
                "{status} in {duration:.6f}s (pid {pid})",
                event=run.delivery.number,
                handler_id=result.handler_id,
                handler=result.handler,
                phase=result.phase,
                status=result.status,
                duration=result.duration,
                pid=result.pid,
            )
        if advance and run.later:
            # Sequential: the next one, now this one ended (a step, as it may
            # settle at once too).
            self._steps.append((self._advance, run))
            if not self._stepping:
                self._step()
        elif run.remaining == 0:
            run.delivery.outcomes.extend(run.slots)  # type: ignore[arg-type]
            if self._trace:
                _log.debug(
                    "event {event} phase {phase} done: {ok}/{total} ok",
                    event=run.delivery.number,
                    phase=result.phase,
                    ok=sum(1 for o in run.slots if o is not None and o.ok),
                    total=len(run.slots),
                )
            self.run_phase(run.delivery)

    def _bug(self, reason: Failure, delivery: Delivery) -> None:
        _log.failure("dispatcher bug while running an event", reason)
        self.broke(delivery, reason)
