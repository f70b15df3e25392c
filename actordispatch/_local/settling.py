"""
Outcomes from what a child wrote: its reply records (L{outcome_from_record})
and, when it dies or is killed mid-batch, its spool (L{SpoolSettler}).

The spool says which invocations of a batch finished, and when each started:
those that finished keep their outcomes, the one running gets the reason the
child went, the rest run elsewhere.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from attrs import define
from twisted.logger import Logger

from actordispatch._core.invocation import Invocation
from actordispatch._core.result import HandlerOutcome, Status
from actordispatch._core.veto import MAX_VETO_REASON
from actordispatch._local.child import Child, SpoolView
from actordispatch._local.quarantine import Quarantine
from actordispatch._local.work import Batch, Preloads, WorkQueue
from actordispatch._wire.codec import decode_records

_log = Logger()


def outcome_from_record(
    invocation: Invocation, record: dict[str, Any], pid: int | None
) -> HandlerOutcome:
    """
    The outcome of C{invocation} from the record its child sent (or spooled).
    """
    # The hot path: one call per invocation; positional, no keyword parsing.
    duration = record.get("d")
    if type(duration) is not float:
        duration = float(duration) if isinstance(duration, (int, float)) else 0.0
    if record.get("s") == "ok":
        veto = record.get("veto")
        if veto is not None:
            veto = veto[:MAX_VETO_REASON] if isinstance(veto, str) else None
        return HandlerOutcome(
            invocation.handler_id,
            invocation.handler,
            invocation.phase,
            "ok",
            record.get("v"),
            None,
            None,
            None,
            duration,
            pid,
            veto,
        )

    def text(key: str) -> str | None:
        value = record.get(key)
        return value if isinstance(value, str) else None

    return HandlerOutcome(
        handler_id=invocation.handler_id,
        handler=invocation.handler,
        phase=invocation.phase,
        status="error",
        error_type=text("t"),
        error_message=text("m"),
        traceback=text("tb"),
        duration=duration,
        pid=pid,
    )


def observed(reported: float | None, sent: float, now: float) -> float:
    """
    A time a child reported, as far as the parent can believe it (issue 16:
    the child's word never extends a deadline): it lies in [C{sent}, C{now}],
    from the parent sending the batch to the parent reading the spool.

    A time before C{sent} is clamped to it.  A time after C{now} is a lie
    (children write their spools on the parent's own monotonic clock, so an
    honest one is never ahead), and a liar gets no benefit of the doubt:
    C{sent}, the earliest its invocation can have started.  So is C{None}
    (nothing reported) and a NaN.
    """
    if reported is None or not sent <= reported <= now:
        return sent
    return reported


def reported_start(view: SpoolView, index: int, sent: float, now: float) -> float:
    """
    When the invocation at C{index} of a batch sent at C{sent} started, by
    its spool, clamped by L{observed}: the batch's start for the first, the
    previous one's end for the others.
    """
    if view.started is None:
        return sent
    if index == 0:
        return observed(view.started, sent, now)
    return observed(view.records[index - 1][0], sent, now)


@define(eq=False)
class SpoolSettler:
    """
    Settles the batch of a child that is gone (or going) from its spool.

    @ivar queue: where invocations that did not start go back.
    @ivar running: whether the pool runs (else those end C{"skipped"}).
    @ivar now: the time on the children's spool clock.
    """

    queue: WorkQueue
    quarantine: Quarantine
    preloads: Preloads
    running: Callable[[], bool]
    now: Callable[[], float]
    max_reply_size: int

    def settle_running(
        self,
        child: Child,
        status: Status,
        error_type: str,
        message: str,
        *,
        strike: bool = False,
        requeue: bool = True,
    ) -> bool:
        """
        If C{child} is running a batch that has no outcomes yet, settle it from
        the child's spool (see L{settle}).

        @return: whether there was such a batch.
        """
        work = child.work
        if not isinstance(work, Batch) or work.settled:
            return False
        view = child.read_spool(work.seq, self.max_reply_size)
        self.settle(
            work, view, status, error_type, message, strike=strike, requeue=requeue
        )
        return True

    def settle(
        self,
        batch: Batch,
        view: SpoolView,
        status: Status,
        error_type: str,
        message: str,
        *,
        strike: bool = False,
        requeue: bool = True,
        overrun: bool = False,
    ) -> None:
        """
        Settle a batch whose child is gone (or going): invocations the spool says
        finished keep their outcomes, the one that was running gets C{status}
        (and a strike, if C{strike}: see L{Quarantine}), and the rest go back to
        the front of the queue (or end C{"skipped"}).

        @param overrun: the batch ran past its hard bound: every invocation
            not finished gets C{status}, whatever the spool says of the others.
        """
        batch.settled = True
        batch.check_at = None
        pid = batch.child.pid
        finished: list[dict[str, Any]] = []
        if view.records:
            try:
                finished = decode_records(
                    b"[" + b",".join(r for _, r in view.records) + b"]",
                    len(batch.items),
                )
            except ValueError:
                finished = []
        for pending, record in zip(batch.items, finished, strict=False):
            pending.settle(outcome_from_record(pending.invocation, record, pid))
        rest = batch.items[len(finished) :]
        if rest:
            running = rest[0]
            if strike:
                self._strike(running.invocation.handler)
            now = self.now()
            started = reported_start(view, len(finished), batch.sent, now)
            for pending in rest if overrun else rest[:1]:
                pending.settle(
                    pending.invocation.outcome(
                        status,
                        error_type=error_type,
                        error_message=message,
                        duration=max(0.0, now - started),
                        pid=pid,
                    )
                )
            unstarted = [] if overrun else rest[1:]
            if requeue and self.running():
                self.queue.requeue(unstarted)
            else:
                for pending in unstarted:
                    pending.settle(
                        pending.invocation.outcome(
                            "skipped",
                            error_type=error_type,
                            error_message=f"{message} (before this started)",
                        )
                    )
        if batch.child.work is batch:
            batch.child.work = None

    def _strike(self, handler: str) -> None:
        self.preloads.drop(handler)
        delay = self.quarantine.strike(handler)
        if delay is not None:
            _log.error(
                "handler {handler} quarantined for {delay}s: its children keep dying",
                handler=handler,
                delay=delay,
            )
