"""
The local pool: a supervised set of child processes that run handlers.

ampoule gives us the child side (C{AMPChild}), the process protocol and its
conventions; the supervision is ours, because ampoule's C{ProcessPool} cannot give
the guarantees we promise (a stuck call hangs without a timeout, a child that dies
idle is not replaced, a dead child can be handed work, its queue is unbounded,
and it cannot tell which invocation a dead child was running).

L{AmpoulePool}:

 - keeps C{size} children alive, replacing each one that dies at once (with a
   growing delay when children die while booting, and failing work fast once
   they keep doing so);
 - batches: when a child is free and several invocations wait, they go to it in
   one L{RunBatch} call (up to C{max_batch}); when idle, one goes at once;
 - times each invocation from its own start, read from the child's spool, and
   kills a child whose invocation overran its timeout (SIGTERM, then SIGKILL
   after C{kill_grace}): that invocation ends C{"timeout"}, those that finished
   keep their outcomes, those not started run on another child, once;
 - does the same when a child crashes or breaks the protocol mid-batch (the
   running invocation ends C{"crashed"}), and quarantines handlers whose
   children keep dying (L{Quarantine});
 - recycles a child after C{recycle_after} invocations or once its resident
   memory passes C{max_rss}, between batches, without failing anything;
 - hands the follow-up events its children's handlers fire to the dispatcher
   (L{set_follow_ups}), and I{parks} a child whose handler waits for one: a
   parked child does not count among the C{size} serving ones, so another
   serves in its place and waiting never deadlocks the pool.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from attrs import define, field
from twisted.internet.defer import Deferred, DeferredList, fail, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from actordispatch._core.errors import (
    ActorDispatchError,
    ChildEndedError,
    FollowUpError,
    HandlerImportError,
)
from actordispatch._core.invocation import Invocation, Job
from actordispatch._core.result import HandlerOutcome, Status
from actordispatch._core.sandbox import SandboxProfile, missing_layers
from actordispatch._core.veto import MAX_VETO_REASON
from actordispatch._local.child import (
    CHILD_BOOTSTRAP,
    AmpouleLauncher,
    Child,
    ChildLauncher,
    SpoolView,
    child_environment,
)
from actordispatch._local.quarantine import Quarantine
from actordispatch._wire.codec import (
    DEFAULT_MAX_REPLY_SIZE,
    DEFAULT_MAX_RESULT_SIZE,
    decode_records,
    encode_batch,
)
from actordispatch._wire.commands import AMP_MAX_VALUE, CheckHandler, Ping, RunBatch
from actordispatch._wire.outcome_json import encode_dispatch_result
from actordispatch.interfaces import IJobPool

__all__ = ["CHILD_BOOTSTRAP", "AmpoulePool", "child_environment"]

_log = Logger()

#: Where a pool hands follow-up events: called with the depth, the encoded
#: event, the keywords and the C{on_error} policy, it answers the event's
#: number and a Deferred of its L{DispatchResult}, or raises (refused).
FollowUps = Callable[
    [int, bytes, dict[str, Any], "str | None"], "tuple[int, Deferred[Any]]"
]


@define(eq=False)
class _Waiting:
    """
    The job of an invocation given to L{AmpoulePool.invoke}: its outcome fires
    a Deferred.
    """

    invocation: Invocation
    done: Deferred[HandlerOutcome] = field(factory=Deferred)

    def settle(self, outcome: HandlerOutcome) -> None:
        self.done.callback(outcome)


@define(eq=False)
class _PendingCheck:
    name: str
    done: Deferred[int]
    deadline: Any = None


@define(eq=False)
class _Batch:
    seq: int
    child: Child
    items: list[Job]
    sent: float
    settled: bool = False
    #: when (reactor time) to look at the spool for an overrun, if unsettled
    check_at: float | None = None


def _outcome_from_record(
    invocation: Invocation, record: dict[str, Any], pid: int | None
) -> HandlerOutcome:
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


@implementer(IJobPool)
@define(eq=False)
class AmpoulePool:
    """
    A supervised pool of child processes that run handlers.

    @ivar size: how many children to keep alive.
    @ivar default_timeout: seconds an invocation may run when it set none.
    @ivar max_batch: the most invocations sent in one AMP call.
    @ivar max_batch_bytes: stop adding events to a batch past this many bytes.
    @ivar recycle_after: replace a child after this many invocations (0: never).
    @ivar max_rss: replace a child once its resident memory passes this many
        bytes, checked between batches (C{None}: never).
    @ivar child_env: extra environment variables for the children.
    @ivar max_result_size: cap, in bytes, on one encoded handler result.
    @ivar max_reply_size: cap, in bytes, on a child's reply to one batch.
    @ivar kill_grace: seconds between SIGTERM and SIGKILL.
    @ivar output_cap: bytes of a child's stdout/stderr logged per batch.
    @ivar sandbox: the L{SandboxProfile} each child applies to itself before any
        handler is imported (by default: die with the parent, no core dumps).
    @ivar crash_limit, crash_window, quarantine_base, quarantine_cap: see
        L{Quarantine}.
    @ivar max_boot_failures: after this many children in a row die while
        booting, queued work fails fast (respawns go on, with a growing delay).
    @ivar standby: children kept booted (and warm) beyond C{size}, serving
        nothing, so that one takes over at once when a serving child dies or
        is recycled (a few milliseconds instead of a cold interpreter's few
        hundred); 0 for none.  They boot after the serving children.
    @ivar max_waiting: the most children parked at once, each waiting for
        a follow-up event its handler fired (each parked child has a
        stand-in); past it, a handler's waiting follow-up is refused.
    @ivar max_follow_ups: the most follow-up events one child's handlers may
        have running at once (waited for or not).
    @ivar reactor: the reactor (the global one by default).
    @ivar launcher: how children are started, and the clock of their spools
        (by default real ampoule children: L{AmpouleLauncher}); unit tests
        pass fake children.
    """

    size: int = 2
    default_timeout: float = 60.0
    max_batch: int = 64
    max_batch_bytes: int = 4 * 1024 * 1024
    recycle_after: int = 0
    max_rss: int | None = None
    child_env: Mapping[str, str] | None = None
    max_result_size: int = DEFAULT_MAX_RESULT_SIZE
    max_reply_size: int = DEFAULT_MAX_REPLY_SIZE
    kill_grace: float = 1.0
    output_cap: int = 64 * 1024
    sandbox: SandboxProfile = field(factory=SandboxProfile)
    crash_limit: int = 3
    crash_window: float = 60.0
    quarantine_base: float = 1.0
    quarantine_cap: float = 60.0
    max_boot_failures: int = 5
    standby: int = 1
    max_waiting: int = 32
    max_follow_ups: int = 64
    reactor: Any = None
    launcher: ChildLauncher = field(factory=AmpouleLauncher)
    _children: dict[int, Child] = field(factory=dict, init=False)
    _idle: deque[Child] = field(factory=deque, init=False)
    _spares: deque[Child] = field(factory=deque, init=False)
    _holding: int = field(default=0, init=False)
    _queue: deque[Job | _PendingCheck] = field(factory=deque, init=False)
    _running: bool = field(default=False, init=False)
    _numbers: Any = field(factory=lambda: itertools.count(1), init=False)
    _seqs: Any = field(factory=lambda: itertools.count(1), init=False)
    _boot_failures: int = field(default=0, init=False)
    _respawn: Any = field(default=None, init=False)
    _ready: Deferred[None] = field(factory=lambda: succeed(None), init=False)
    _quarantine: Quarantine = field(init=False)
    _last_boot_error: str = field(default="", init=False)
    _wanted_warm: set[str] = field(factory=set, init=False)
    _warm: set[str] = field(factory=set, init=False)
    _parked: int = field(default=0, init=False)
    #: set when a parked child comes back: its stand-in may be surplus
    _unparked: bool = field(default=False, init=False)
    _deadline_timer: Any = field(default=None, init=False)
    _follow_ups: Any = field(default=None, init=False)

    def __attrs_post_init__(self) -> None:
        if self.size < 1:
            raise ValueError(f"pool size must be at least 1, not {self.size!r}")
        if not self.default_timeout > 0:
            raise ValueError(
                f"default_timeout must be positive, not {self.default_timeout!r}"
            )
        if (
            isinstance(self.standby, bool)
            or not isinstance(self.standby, int)
            or (self.standby < 0)
        ):
            raise ValueError(f"standby must be an int >= 0, not {self.standby!r}")
        if self.max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, not {self.max_batch!r}")
        if self.max_reply_size < self.max_result_size:
            raise ValueError("max_reply_size must be at least max_result_size")
        if self.reactor is None:
            from twisted.internet import reactor

            self.reactor = reactor
        self._quarantine = Quarantine(
            self.reactor,
            self.crash_limit,
            self.crash_window,
            self.quarantine_base,
            self.quarantine_cap,
        )

    # --- introspection -------------------------------------------------------------

    @property
    def started(self) -> bool:
        """
        Whether the pool is running.
        """
        return self._running

    def child_pids(self) -> list[int]:
        """
        The pids of the children alive now that serve or will (booting, idle
        or busy), not the standby ones.
        """
        live = [c for c in self._children.values() if c.pid is not None]
        serving = [c.pid for c in live if c.state in ("idle", "busy", "retiring")]
        # A booting child serves once up if fewer than size do; else it stands by.
        booting = [c.pid for c in live if c.state == "booting"]
        pids = serving + booting[: max(0, self._target() - len(serving))]
        return sorted(pid for pid in pids if pid is not None)

    def standby_pids(self) -> list[int]:
        """
        The pids of the booted children kept in reserve, which take over at
        once when a serving child dies or is recycled.
        """
        return sorted(c.pid for c in self._spares if c.pid is not None)

    def queued(self) -> int:
        """
        How many invocations and checks wait for a child.
        """
        return len(self._queue)

    def quarantined(self) -> dict[str, float]:
        """
        Quarantined handlers, with the seconds they have left.
        """
        return self._quarantine.quarantined()

    # --- lifecycle -----------------------------------------------------------------

    def start(self) -> Deferred[None]:
        """
        Start the children; fires once each has answered (or died).  Idempotent.
        """
        if self._running:
            return self._ready
        self._running = True
        booted = [self._spawn() for _ in range(self.size)]
        self._ready = DeferredList(booted, consumeErrors=True).addCallback(
            lambda _: None
        )
        # The standby children boot once the serving ones have: they do not
        # compete with them for the CPU while the pool starts.
        self._ready.addCallback(lambda _: self._maintain())
        return self._ready

    def stop(self) -> Deferred[None]:
        """
        Stop the children.  Queued work ends C{"skipped"}; work running is
        killed (the dispatcher waits for it before stopping the pool).
        """
        self._running = False
        if self._respawn is not None and self._respawn.active():
            self._respawn.cancel()
        self._respawn = None
        self._cancel(self._deadline_timer)
        self._deadline_timer = None
        self.abort("the pool was stopped")
        ended = []
        for child in list(self._children.values()):
            ended.append(child.ended)
            if child.state in ("idle", "booting", "retiring", "standby"):
                self._retire(child)
            elif child.state == "busy":
                self._kill(child)
        return DeferredList(ended, consumeErrors=True).addCallback(lambda _: None)

    def abort(self, message: str) -> None:
        """
        End everything at once: running invocations end C{"timeout"} (their
        children are killed), queued ones C{"skipped"}, checks fail.
        """
        self._drain_queue(
            "skipped", "actordispatch.Aborted", message, f"{message} before this ran"
        )
        for child in list(self._children.values()):
            if self._settle_running(
                child, "timeout", "actordispatch.Aborted", message, requeue=False
            ):
                self._kill(child)

    # --- children ------------------------------------------------------------------

    def _spawn(self) -> Deferred[None]:
        number = next(self._numbers)
        holder: list[Child] = []
        child = self.launcher.spawn(
            self.reactor,
            number,
            env=child_environment(self.child_env),
            config={
                "max_result_size": self.max_result_size,
                "max_reply_size": self.max_reply_size,
                "sandbox": self.sandbox.to_child_config(os.getpid()),
                "report_rss": self.max_rss is not None,
                "fast_pipes": True,
                "preload": sorted(self._warm),
            },
            on_protocol_error=lambda message: self._protocol_error(holder[0], message),
            on_follow_up=lambda **arguments: self._follow_up(holder[0], **arguments),
            max_box_bytes=self.max_reply_size + 64 * 1024,
            max_box_keys=self.max_reply_size // AMP_MAX_VALUE + 16,
            output_cap=self.output_cap,
        )
        holder.append(child)
        self._children[number] = child
        child.ended.addBoth(self._ended, child)
        booted = child.amp.callRemote(Ping)
        booted.addCallbacks(
            self._booted, self._boot_failed, (child,), errbackArgs=(child,)
        )
        return booted

    def _booted(self, answer: dict[str, Any], child: Child) -> None:
        if child.state != "booting":
            return
        self._boot_failures = 0
        try:
            child.sandbox = dict(json.loads(answer.get("sandbox") or "{}"))
        except ValueError:
            child.sandbox = {}
        missing = missing_layers(child.sandbox, expected=self.sandbox.layer_names())
        if missing:
            # Loudly, every time: a sandbox layer asked for is not in force.
            _log.critical(
                "child {pid}: sandbox layers NOT in force: {missing}",
                pid=child.pid,
                missing={
                    name: child.sandbox.get(name, "not reported") for name in missing
                },
            )
        serving = sum(1 for c in self._children.values() if c.state in ("idle", "busy"))
        if serving < self._target():
            child.state = "idle"
            self._idle.append(child)
        else:
            child.state = "standby"
            self._spares.append(child)
        self._pump()

    def _boot_failed(self, reason: Failure, child: Child) -> None:
        # The child died (or broke the protocol) before answering: _ended counts
        # it as a boot failure, so do not mark it dying here first.
        if isinstance(reason.value, ChildEndedError):
            return
        if child.state == "booting":
            self._kill(child)

    def _ended(self, status: Any, child: Child) -> None:
        self._children.pop(child.number, None)
        self._cancel(child.kill_call)
        if child in self._idle:
            self._idle.remove(child)
        if child in self._spares:
            self._spares.remove(child)
        exit_code = getattr(status, "exitCode", None)
        signal_number = getattr(status, "signal", None)
        ended = ChildEndedError(exit_code, signal_number, child.pid)
        if child.state == "booting":
            self._boot_failures += 1
            self._last_boot_error = ended.describe()
            if self._warm:
                # Perhaps a preloaded handler's import kills it: boot cold.
                self._wanted_warm -= self._warm
                self._warm.clear()
            _log.error(
                "child {pid} died while booting ({how}); {count} in a row",
                pid=child.pid,
                how=ended.describe(),
                count=self._boot_failures,
            )
        work = child.work
        self._settle_running(
            child,
            "crashed",
            "actordispatch.ChildCrashed",
            f"the child process ended ({ended.describe()}) while running this handler",
            strike=True,
        )
        child.work = None
        if isinstance(work, _PendingCheck):
            self._cancel(work.deadline)
            if not work.done.called:
                self._quarantine.strike(work.name)
                work.done.errback(
                    HandlerImportError(
                        f"the child died ({ended.describe()}) while importing "
                        f"handler {work.name!r}"
                    )
                )
        if child.waits:
            child.waits = 0
            self._parked -= 1
            self._unparked = True
        child.state = "dying"
        child.spool.close()
        self._maintain()
        self._pump()

    def _maintain(self) -> None:
        """
        Keep C{size} children serving, promoting a standby child at once when
        one is short, and C{size + standby} that are not on their way out.
        """
        if not self._running:
            return
        self._promote()
        if self._respawn is not None and self._respawn.active():
            return
        alive = sum(
            1 for c in self._children.values() if c.state not in ("dying", "retiring")
        )
        missing = self._target() + self.standby - alive
        if missing <= 0:
            return
        if self._boot_failures:
            delay = min(10.0, 0.1 * 2 ** (self._boot_failures - 1))
            self._respawn = self.reactor.callLater(delay, self._respawn_now)
            if self._boot_failures >= self.max_boot_failures:
                message = (
                    f"children keep dying while booting ({self._boot_failures} in "
                    f"a row, last: {self._last_boot_error})"
                )
                self._drain_queue("crashed", "actordispatch.PoolDown", message, message)
            return
        for _ in range(missing):
            self._spawn()

    def _promote(self) -> None:
        serving = sum(
            1 for c in self._children.values() if c.state in ("idle", "busy", "booting")
        )
        promoted = False
        while self._spares and serving < self._target():
            spare = self._spares.popleft()
            spare.state = "idle"
            self._idle.append(spare)
            serving += 1
            promoted = True
        if promoted:
            # Not from here: _maintain runs inside the pool's own bookkeeping.
            self.reactor.callLater(0, self._pump)

    def _target(self) -> int:
        """
        How many children should serve: C{size}, plus one standing in for
        each parked child.
        """
        return self.size + self._parked

    def _respawn_now(self) -> None:
        self._respawn = None
        if self._running:
            self._spawn()
            self._maintain()

    def _drain_queue(
        self, status: Status, error_type: str, message: str, outcome_message: str
    ) -> None:
        """
        End everything queued: invocations with C{status}, checks with a
        L{HandlerImportError}.
        """
        while self._queue:
            item = self._queue.popleft()
            if isinstance(item, _PendingCheck):
                self._cancel(item.deadline)
                item.done.errback(
                    HandlerImportError(f"{message}: {item.name!r} was not checked")
                )
            else:
                item.settle(
                    item.invocation.outcome(
                        status, error_type=error_type, error_message=outcome_message
                    )
                )

    def _kill(self, child: Child) -> None:
        """
        SIGTERM now, SIGKILL after the grace period; a replacement starts now.
        """
        if child.state == "dying":
            return
        if child in self._idle:
            self._idle.remove(child)
        child.state = "dying"
        child.signal(signal.SIGTERM)
        child.kill_call = self.reactor.callLater(
            self.kill_grace, child.signal, signal.SIGKILL
        )
        self._maintain()

    def _retire(self, child: Child) -> None:
        """
        Ask a child to exit once idle; a replacement starts now.
        """
        if child.state in ("retiring", "dying"):
            return
        if child in self._idle:
            self._idle.remove(child)
        if child in self._spares:
            self._spares.remove(child)
        child.state = "retiring"
        from ampoule.commands import Shutdown

        child.amp.callRemote(Shutdown).addErrback(lambda _: None)
        child.kill_call = self.reactor.callLater(
            max(5.0, self.kill_grace), child.signal, signal.SIGKILL
        )
        self._maintain()

    def _protocol_error(self, child: Child, message: str) -> None:
        self._settle_running(
            child,
            "crashed",
            "actordispatch.ProtocolError",
            f"protocol error from the child: {message}",
            strike=True,
        )
        self._kill_now(child)

    def _settle_running(
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
        the child's spool (see L{_settle_from_spool}).

        @return: whether there was such a batch.
        """
        work = child.work
        if not isinstance(work, _Batch) or work.settled:
            return False
        view = child.read_spool(work.seq, self.max_reply_size)
        self._settle_from_spool(
            work, view, status, error_type, message, strike=strike, requeue=requeue
        )
        return True

    def _kill_now(self, child: Child) -> None:
        if child in self._idle:
            self._idle.remove(child)
        child.state = "dying"
        child.signal(signal.SIGKILL)
        self._maintain()

    @staticmethod
    def _cancel(call: Any) -> None:
        if call is not None and call.active():
            call.cancel()

    # --- follow-up events --------------------------------------------------------

    def set_follow_ups(self, sink: FollowUps | None) -> None:
        """
        Have the follow-up events this pool's handlers fire handed to C{sink}
        (the dispatcher does this for its pools), or refused (C{None}).
        """
        self._follow_ups = sink

    def _follow_up(
        self,
        child: Child,
        event: bytes,
        keywords: str,
        seq: int,
        wait: bool,
        on_error: str | None = None,
    ) -> Deferred[dict[str, Any]]:
        """
        A handler running in C{child} fired a follow-up event: hand it to the
        dispatcher, at the depth of the deepest event of the child's batch
        plus one (a child cannot lie its way out of the depth limit), and
        park the child while its handler waits.
        """
        batch = child.work
        if self._follow_ups is None:
            return fail(FollowUpError("this pool takes no follow-up events"))
        if not isinstance(batch, _Batch) or batch.seq != seq or batch.settled:
            return fail(
                FollowUpError(
                    "no handler of this child is running: fire follow-up events "
                    "while the handler runs"
                )
            )
        if child.follow_ups >= self.max_follow_ups:
            return fail(
                FollowUpError(
                    f"this child's handlers have {child.follow_ups} follow-up "
                    f"events running (max_follow_ups={self.max_follow_ups})"
                )
            )
        if wait and not child.waits and self._parked >= self.max_waiting:
            return fail(
                FollowUpError(
                    f"{self._parked} children already wait for follow-up events "
                    f"(max_waiting={self.max_waiting}): fire it with wait=False"
                )
            )
        try:
            parsed = json.loads(keywords)
        except ValueError:
            parsed = None
        if not isinstance(parsed, dict):
            return fail(FollowUpError("the keywords must be a JSON object"))
        depth = max(p.invocation.depth for p in batch.items) + 1
        try:
            number, fired = self._follow_ups(depth, event, parsed, on_error)
        except FollowUpError as e:
            return fail(e)
        except (ValueError, TypeError, ActorDispatchError) as e:
            return fail(FollowUpError(str(e)))
        child.follow_ups += 1
        if wait:
            child.waits += 1
            if child.waits == 1:
                self._parked += 1
                self._maintain()  # a stand-in serves while it waits
                self._pump()

        def finished(result: Any) -> Any:
            child.follow_ups -= 1
            if wait and child.waits:
                child.waits -= 1
                if not child.waits:
                    self._parked -= 1
                    self._unparked = True
            return result

        fired.addBoth(finished)
        if not wait:
            fired.addErrback(
                lambda reason: _log.failure("follow-up event failed", reason)
            )
            return succeed({"number": number})
        return fired.addCallback(
            lambda result: {"number": number, "result": encode_dispatch_result(result)}
        )

    # --- work ----------------------------------------------------------------------

    def warm(self, handler: str) -> None:
        """
        Have every child started from now on import C{handler} while it boots,
        before it answers its first ping, so that a replacement child serves its
        first invocation warm.  (The dispatcher calls this for each handler it
        registers in this pool.)

        Only a handler a child has already imported without dying (a check, or
        an invocation that answered) is preloaded: a module that kills the
        process importing it must not stop every new child from booting.  It
        stops being preloaded once quarantined, and children boot cold again
        after one dies while booting.
        """
        self._wanted_warm.add(handler)

    def _proven(self, handler: str) -> None:
        if handler in self._wanted_warm and handler not in self._warm:
            self._warm.add(handler)
            # Standby children booted without it: replace them with warm ones.
            for spare in list(self._spares):
                self._retire(spare)

    def check_handler(self, name: str) -> Deferred[int]:
        """
        Have a child import C{name}; fires with that child's pid.
        """
        left = self._quarantine.remaining(name)
        if left is not None:
            return fail(
                HandlerImportError(
                    f"handler {name!r} is quarantined for {left:.1f}s more: its "
                    "children keep dying"
                )
            )
        done: Deferred[int] = Deferred()
        self._queue.append(_PendingCheck(name, done))
        self._pump()
        return done

    def invoke(self, invocation: Invocation) -> Deferred[HandlerOutcome]:
        """
        Run C{invocation} on some child; always fires with its outcome.
        """
        job = _Waiting(invocation)
        self.submit((job,))
        return job.done

    def submit(self, jobs: Sequence[Job]) -> None:
        """
        Run each job's invocation (a phase's, handed over together) and settle
        each job with its outcome.  When a child is idle and nothing waits, a
        lone invocation goes to it at once; otherwise they are queued, then
        shared out among the idle children in batches.
        """
        if (
            len(jobs) == 1
            and self._idle
            and not self._queue
            and not self._holding
            and not self._quarantine.any()
        ):
            # Idle: straight to the most recently idle child, alone.
            self._send_batch(self._idle.pop(), [jobs[0]])
            return
        quarantine = self._quarantine.any()
        self._holding += 1  # what settling a refused job sets off waits too
        try:
            for job in jobs:
                blocked = self._blocked(job.invocation) if quarantine else None
                if blocked is None:
                    self._queue.append(job)
                else:
                    job.settle(blocked)
        finally:
            self._holding -= 1
        self._pump()

    def _blocked(self, invocation: Invocation) -> HandlerOutcome | None:
        left = self._quarantine.remaining(invocation.handler)
        if left is None:
            return None
        return invocation.outcome(
            "crashed",
            error_type="actordispatch.Quarantined",
            error_message=(
                f"handler quarantined for {left:.1f}s more: its children died "
                f"{self.crash_limit} times within {self.crash_window:g}s"
            ),
        )

    def _pump(self) -> None:
        if self._holding:
            return  # the work arriving now is sent together once it is all in
        while self._idle and self._queue:
            # An even share of what waits for each idle child, so that several
            # idle children split a burst rather than the first taking it all.
            share = min(self.max_batch, -(-len(self._queue) // len(self._idle)))
            child = self._idle.pop()
            head = self._queue.popleft()
            if isinstance(head, _PendingCheck):
                self._send_check(child, head)
                continue
            batch = []
            size = 0
            item: Job | _PendingCheck | None = head
            quarantine = self._quarantine.any()
            while item is not None:
                assert not isinstance(item, _PendingCheck)
                blocked = self._blocked(item.invocation) if quarantine else None
                if blocked is not None:
                    item.settle(blocked)
                else:
                    batch.append(item)
                    size += len(item.invocation.event)
                item = None
                if (
                    self._queue
                    and len(batch) < share
                    and size < self.max_batch_bytes
                    and type(self._queue[0]) is not _PendingCheck
                ):
                    item = self._queue.popleft()
            if batch:
                self._send_batch(child, batch)
            else:
                self._idle.append(child)

    def _send_check(self, child: Child, check: _PendingCheck) -> None:
        child.state = "busy"
        child.work = check
        check.deadline = self.reactor.callLater(
            self.default_timeout, self._check_overran, child, check
        )
        d = child.amp.callRemote(CheckHandler, handler=check.name)
        d.addBoth(self._check_answered, child, check)

    def _check_overran(self, child: Child, check: _PendingCheck) -> None:
        if not check.done.called:
            check.done.errback(
                HandlerImportError(
                    f"importing handler {check.name!r} took over "
                    f"{self.default_timeout:g}s; the child was killed"
                )
            )
        self._kill(child)

    def _check_answered(self, result: Any, child: Child, check: _PendingCheck) -> None:
        self._cancel(check.deadline)
        if check.done.called:
            return
        if isinstance(result, Failure):
            if isinstance(result.value, ChildEndedError):
                return  # _ended reports it, with the strike
            if isinstance(result.value, HandlerImportError):
                check.done.errback(result.value)
            else:
                check.done.errback(
                    HandlerImportError(
                        f"could not check handler {check.name!r}: "
                        f"{result.getErrorMessage()}"
                    )
                )
        else:
            self._proven(check.name)
            check.done.callback(result["pid"])
        if child.work is check:
            self._done_with(child, None)

    def _send_batch(self, child: Child, items: list[Job]) -> None:
        batch = _Batch(next(self._seqs), child, items, self.launcher.now())
        child.state = "busy"
        child.work = batch
        child.calls += len(items)
        child.connector.reset_output()
        payload = encode_batch(
            [(p.invocation.handler, p.invocation.event) for p in items]
        )
        self._check_later(batch, self._timeout_of(items[0]))
        d = child.amp.callRemote(RunBatch, batch=payload, seq=batch.seq)
        d.addCallbacks(
            self._batch_answered, self._batch_failed, (batch,), errbackArgs=(batch,)
        )

    def _timeout_of(self, item: Job) -> float:
        return item.invocation.timeout or self.default_timeout

    def _check_later(self, batch: _Batch, delay: float) -> None:
        """
        Look at C{batch} in C{delay} seconds (L{_check_deadline}).  One timer
        serves every batch of the pool, set for the earliest look: sending a
        batch that will be answered long before its deadline, as most are,
        costs no timer of its own.
        """
        batch.check_at = at = self.reactor.seconds() + delay
        timer = self._deadline_timer
        if not self._running:
            return  # stopping: its child is being killed or retired
        if timer is None or not timer.active() or at < timer.getTime():
            self._cancel(timer)
            self._deadline_timer = self.reactor.callLater(delay, self._deadlines)

    def _deadlines(self) -> None:
        """
        The pool's timer: check every batch whose time to look has come, then
        set the timer for the next one.
        """
        self._deadline_timer = None
        now = self.reactor.seconds()
        for child in list(self._children.values()):
            batch = child.work
            if (
                isinstance(batch, _Batch)
                and not batch.settled
                and batch.check_at is not None
                and batch.check_at <= now
            ):
                batch.check_at = None
                self._check_deadline(batch)
        pending = [
            child.work.check_at
            for child in self._children.values()
            if isinstance(child.work, _Batch)
            and not child.work.settled
            and child.work.check_at is not None
        ]
        if pending and self._running:
            at = min(pending)
            timer = self._deadline_timer
            if timer is None or not timer.active() or at < timer.getTime():
                self._cancel(timer)
                self._deadline_timer = self.reactor.callLater(
                    max(0.0, at - now), self._deadlines
                )

    def _check_deadline(self, batch: _Batch) -> None:
        """
        The invocation running now may have overrun: find it in the spool and
        either kill the child or look again when its own deadline comes.
        """
        if batch.settled:
            return
        view = batch.child.read_spool(batch.seq, self.max_reply_size)
        index = len(view.records)
        if index >= len(batch.items):
            # All ran; the answer is on its way.  Look again in a moment.
            self._check_later(batch, self.kill_grace)
            return
        if view.started is None:
            started = batch.sent
        elif index == 0:
            started = view.started
        else:
            started = view.records[index - 1][0]
        timeout = self._timeout_of(batch.items[index])
        left = started + timeout - self.launcher.now()
        if left > 0:
            self._check_later(batch, left)
            return
        child = batch.child
        self._settle_from_spool(
            batch,
            view,
            "timeout",
            "actordispatch.HandlerTimeout",
            f"did not finish within {timeout:g}s; its child process was killed",
        )
        _log.warn(
            "child {pid} killed: {handler} ran past its {timeout}s timeout",
            pid=child.pid,
            handler=batch.items[index].invocation.handler,
            timeout=timeout,
        )
        self._kill(child)

    def _settle_from_spool(
        self,
        batch: _Batch,
        view: SpoolView,
        status: Status,
        error_type: str,
        message: str,
        *,
        strike: bool = False,
        requeue: bool = True,
    ) -> None:
        """
        Settle a batch whose child is gone (or going): invocations the spool says
        finished keep their outcomes, the one that was running gets C{status},
        and the rest go back to the front of the queue (or end C{"skipped"}).
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
            pending.settle(_outcome_from_record(pending.invocation, record, pid))
        rest = batch.items[len(finished) :]
        if rest:
            running = rest[0]
            if strike:
                self._warm.discard(running.invocation.handler)
                delay = self._quarantine.strike(running.invocation.handler)
                if delay is not None:
                    _log.error(
                        "handler {handler} quarantined for {delay}s: its children "
                        "keep dying",
                        handler=running.invocation.handler,
                        delay=delay,
                    )
            started = view.started if view.started is not None else batch.sent
            if finished:
                started = view.records[len(finished) - 1][0]
            running.settle(
                running.invocation.outcome(
                    status,
                    error_type=error_type,
                    error_message=message,
                    duration=max(0.0, self.launcher.now() - started),
                    pid=pid,
                )
            )
            unstarted = rest[1:]
            if requeue and self._running:
                self._queue.extendleft(reversed(unstarted))
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

    def _batch_answered(self, answer: dict[str, Any], batch: _Batch) -> None:
        if batch.settled:
            return  # a late answer: this batch already has its outcomes
        child = batch.child
        try:
            records = decode_records(answer["records"], len(batch.items))
        except ValueError as e:
            self._protocol_error(child, f"unreadable reply: {e}")
            return
        batch.settled = True
        batch.check_at = None
        pid = child.pid
        # What these outcomes set off (next phases, next events) is queued
        # while they are delivered, then sent in batches by _done_with's pump.
        escalated = self._quarantine.escalated()
        warm = self._warm
        self._holding += 1
        try:
            for job, record in zip(batch.items, records, strict=False):
                invocation = job.invocation
                if escalated:
                    self._quarantine.settle(invocation.handler)
                if invocation.handler not in warm:
                    self._proven(invocation.handler)
                job.settle(_outcome_from_record(invocation, record, pid))
        finally:
            self._holding -= 1
        unstarted = batch.items[len(records) :]
        self._queue.extendleft(reversed(unstarted))
        rss = answer.get("rss")
        recycle = (self.recycle_after and child.calls >= self.recycle_after) or (
            self.max_rss is not None and isinstance(rss, int) and rss > self.max_rss
        )
        self._done_with(child, "recycle" if recycle else None)

    def _done_with(self, child: Child, why: str | None) -> None:
        child.work = None
        if child.state != "busy":
            self._pump()  # what its outcomes queued goes to the others
            return
        if why is not None or not self._running:
            _log.info("child {pid} recycled", pid=child.pid)
            self._retire(child)
        elif self._unparked and not child.waits and self._surplus():
            # It stood in for a parked child that is back: stand by or go.
            if len(self._spares) < self.standby:
                child.state = "standby"
                self._spares.append(child)
            else:
                self._retire(child)
        else:
            child.state = "idle"
            self._idle.append(child)
        self._pump()

    def _surplus(self) -> bool:
        """
        Whether more children serve than the pool needs now (one stood in for
        a parked child that is back); once none do, stop asking.
        """
        # Booting children do not count: they become standby ones if not needed.
        serving = sum(1 for c in self._children.values() if c.state in ("idle", "busy"))
        if serving > self._target():
            return True
        self._unparked = False
        return False

    def _batch_failed(self, reason: Failure, batch: _Batch) -> None:
        if batch.settled:
            return
        child = batch.child
        value = reason.value
        if isinstance(value, ChildEndedError):
            return  # _ended settles it from the spool, with the exit status
        if isinstance(value, ActorDispatchError):
            # A declared error (a batch the child could not decode): our fault,
            # not the handlers'; the child is fine.
            batch.settled = True
            batch.check_at = None
            for pending in batch.items:
                pending.settle(
                    pending.invocation.outcome(
                        "error",
                        error_type=f"actordispatch.{type(value).__name__}",
                        error_message=str(value),
                        pid=child.pid,
                    )
                )
            self._done_with(child, None)
            return
        # Anything else (an undeclared error) means the child's AMP is gone bad.
        self._protocol_error(child, f"{type(value).__name__}: {value}")
