"""
The local pool: a supervised set of child processes that run handlers.

ampoule gives us the child side (C{AMPChild}), the process protocol and its
conventions; the supervision is ours, because ampoule's C{ProcessPool} cannot give
the guarantees we promise (a stuck call hangs without a timeout, a child that dies
idle is not replaced, a dead child can be handed work, its queue is unbounded,
and it cannot tell which invocation a dead child was running).

L{AmpoulePool} is the front of the parts that do it, each in its own module:

 - L{Supervisor} keeps C{size} children alive (and C{standby} more warm),
   replacing each one that dies at once (with a growing delay when children
   die while booting, and failing work fast once they keep doing so), and
   recycles a child after C{recycle_after} invocations or once its resident
   memory passes C{max_rss}; each child's life is the state machine of
   L{actordispatch._local.lifecycle};
 - L{BatchRunner} batches: when a child is free and several invocations wait,
   they go to it in one L{RunBatch} call (up to C{max_batch}); when idle, one
   goes at once;
 - L{DeadlineWatch} times each invocation from its own start, read from the
   child's spool, and kills a child whose invocation overran its timeout
   (SIGTERM, then SIGKILL after C{kill_grace}); L{SpoolSettler} then settles
   its batch: that invocation ends C{"timeout"} (C{"crashed"} when a child
   crashes or breaks the protocol), those that finished keep their outcomes,
   those not started run on another child, once; handlers whose children keep
   dying are quarantined (L{Quarantine});
 - L{HandlerChecks} has children import handlers by name, and L{Preloads}
   which of them new children import while they boot;
 - L{FollowUpDesk} hands the follow-up events its children's handlers fire to
   the dispatcher (L{AmpoulePool.set_follow_ups}), and I{parks} a child whose
   handler waits for one, with a stand-in serving in its place; it bounds
   each handler's follow-ups, so that a storm of them from one handler delays
   only that handler's events;
 - L{WaiterLanes} keeps the invocations of handlers that wait for follow-up
   events out of the shared queue and out of other handlers' batches: each
   goes alone to a child the shared queue leaves free.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from attrs import define, field
from twisted.internet.defer import Deferred
from zope.interface import implementer

from actordispatch._core.invocation import Invocation, Job
from actordispatch._core.result import HandlerOutcome
from actordispatch._core.sandbox import SandboxProfile
from actordispatch._local.batches import BatchRunner
from actordispatch._local.checks import HandlerChecks
from actordispatch._local.child import (
    CHILD_BOOTSTRAP,
    AmpouleLauncher,
    ChildLauncher,
    child_environment,
)
from actordispatch._local.deadlines import DeadlineWatch
from actordispatch._local.followups import FollowUpDesk, FollowUps
from actordispatch._local.forkserver import ForkServerLauncher
from actordispatch._local.lanes import WaiterLanes
from actordispatch._local.quarantine import Quarantine
from actordispatch._local.settling import SpoolSettler
from actordispatch._local.supervisor import Supervisor
from actordispatch._local.work import Preloads, Waiting, WorkQueue, cancel_call
from actordispatch._wire.codec import DEFAULT_MAX_REPLY_SIZE, DEFAULT_MAX_RESULT_SIZE
from actordispatch._wire.commands import AMP_MAX_VALUE
from actordispatch.interfaces import (
    IFollowUpPool,
    IJobPool,
    IProcessPool,
    IWarmablePool,
)

__all__ = ["CHILD_BOOTSTRAP", "AmpoulePool", "FollowUps", "child_environment"]


@implementer(IJobPool, IWarmablePool, IProcessPool, IFollowUpPool)
@define(eq=False)
class AmpoulePool:
    """
    A supervised pool of child processes that run handlers.

    A follow-up storm from one handler (its invocations each firing a
    follow-up event and waiting for it) delays only that handler's events:
    it parks at most C{max_waiting_per_handler} children, has at most
    C{max_follow_ups_per_handler} follow-ups running, and once a handler has
    waited, its work (and its follow-ups' first phase) waits in its own line
    instead of the shared queue, going alone to children the rest leaves free
    (L{WaiterLanes}; docs/semantics.rst, "Follow-up events").

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
    @ivar max_waiting_per_handler: the most children parked at once for one
        handler (the one whose invocation fired the follow-up); past it, that
        handler's waiting follow-up is refused at once with a
        L{FollowUpError} in the child, while other handlers' follow-ups go on.
        A follow-up storm from one handler (each invocation firing a
        follow-up and waiting for it) so takes at most this many children
        (and stand-ins, each with the sandbox's memory allowance) and delays
        only its own events.  0: that pool's handlers never wait.
    @ivar max_follow_ups: the most follow-up events one child's handlers may
        have running at once (waited for or not).
    @ivar max_follow_ups_per_handler: the most follow-up events one handler
        may have running at once over all children (waited for or not); past
        it, its follow-up is refused.  Follow-up events skip the dispatcher's
        queue and its C{max_in_flight}, so this is what bounds how much work
        one handler's storm puts in the pool's shared queue ahead of other
        handlers' events.
    @ivar reactor: the reactor (the global one by default).
    @ivar fork_server: fork children from a template process (a few
        milliseconds each) rather than start each as a new interpreter (a few
        hundred); by default, under a trust-domain isolation, which replaces
        children as handlers come and go.
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
    max_waiting_per_handler: int = 4
    max_follow_ups: int = 64
    max_follow_ups_per_handler: int = 64
    reactor: Any = None
    launcher: ChildLauncher | None = None
    fork_server: bool | None = None
    _queue: WorkQueue = field(factory=WorkQueue, init=False)
    _preloads: Preloads = field(factory=Preloads, init=False)
    _quarantine: Quarantine = field(init=False)
    _supervisor: Supervisor = field(init=False)
    _settler: SpoolSettler = field(init=False)
    _deadlines: DeadlineWatch = field(init=False)
    _checks: HandlerChecks = field(init=False)
    _batches: BatchRunner = field(init=False)
    _follow_ups: FollowUpDesk = field(init=False)
    _lanes: WaiterLanes = field(init=False)
    _feeding: Any = field(default=None, init=False)

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
        for name in ("max_waiting_per_handler", "max_follow_ups_per_handler"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be an int >= 0, not {value!r}")
        if self.max_reply_size < self.max_result_size:
            raise ValueError("max_reply_size must be at least max_result_size")
        if self.reactor is None:
            from twisted.internet import reactor

            self.reactor = reactor
        if self.fork_server is None:
            # Replacing children is what isolation costs: make it cheap.
            self.fork_server = self.sandbox.isolation != "shared"
        if self.launcher is None:
            self.launcher = (
                ForkServerLauncher() if self.fork_server else AmpouleLauncher()
            )
        launcher = self.launcher
        self._quarantine = Quarantine(
            self.reactor,
            self.crash_limit,
            self.crash_window,
            self.quarantine_base,
            self.quarantine_cap,
        )
        # The parts call one another through these hooks; they are made in
        # order, each given those made before it.
        self._supervisor = Supervisor(
            reactor=self.reactor,
            launcher=launcher,
            size=self.size,
            standby=self.standby,
            kill_grace=self.kill_grace,
            isolation=self.sandbox.isolation,
            max_boot_failures=self.max_boot_failures,
            spawn_arguments=self._spawn_arguments,
            expected_layers=self.sandbox.layer_names(),
            on_free=self._on_free,
            on_ended=lambda child, ended: self._batches.child_ended(child, ended),
            on_boot_death=self._preloads.go_cold,
            on_pool_down=self._pool_down,
            on_protocol_error=lambda child, message: self._batches.protocol_error(
                child, message
            ),
            on_follow_up=lambda child, **arguments: self._follow_ups.follow_up(
                child, **arguments
            ),
        )
        self._settler = SpoolSettler(
            queue=self._queue,
            quarantine=self._quarantine,
            preloads=self._preloads,
            running=lambda: self._supervisor.running,
            now=launcher.now,
            max_reply_size=self.max_reply_size,
        )
        self._deadlines = DeadlineWatch(
            reactor=self.reactor,
            supervisor=self._supervisor,
            settler=self._settler,
            now=launcher.now,
            default_timeout=self.default_timeout,
            kill_grace=self.kill_grace,
            max_reply_size=self.max_reply_size,
        )
        self._checks = HandlerChecks(
            reactor=self.reactor,
            supervisor=self._supervisor,
            queue=self._queue,
            quarantine=self._quarantine,
            preloads=self._preloads,
            timeout=self.default_timeout,
        )
        self._batches = BatchRunner(
            supervisor=self._supervisor,
            queue=self._queue,
            quarantine=self._quarantine,
            preloads=self._preloads,
            settler=self._settler,
            deadlines=self._deadlines,
            checks=self._checks,
            max_batch=self.max_batch,
            max_batch_bytes=self.max_batch_bytes,
            recycle_after=self.recycle_after,
            max_rss=self.max_rss,
            crash_limit=self.crash_limit,
            crash_window=self.crash_window,
            isolation=self.sandbox.isolation,
        )
        self._follow_ups = FollowUpDesk(
            supervisor=self._supervisor,
            max_waiting=self.max_waiting,
            max_follow_ups=self.max_follow_ups,
            max_waiting_per_handler=self.max_waiting_per_handler,
            max_follow_ups_per_handler=self.max_follow_ups_per_handler,
            spool_cap=self.max_reply_size,
        )
        self._lanes = WaiterLanes(
            supervisor=self._supervisor,
            queue=self._queue,
            send=self._batches.submit,
            desk=self._follow_ups,
        )

    def _on_free(self) -> None:
        """
        A child may take work: what the shared queue holds first, then what
        waits in the lanes of handlers that wait for follow-ups.
        """
        self._batches.pump()
        self._lanes.feed()

    def _feed_soon(self) -> None:
        """
        Feed the lanes on the next turn: work submitted now may be an
        outcome's consequence, sent out in batches once it is all in.
        """
        if self._feeding is None or not self._feeding.active():
            self._feeding = self.reactor.callLater(0, self._lanes.feed)

    def _pool_down(self, message: str) -> None:
        self._queue.drain("crashed", "actordispatch.PoolDown", message, message)
        self._lanes.drain("crashed", "actordispatch.PoolDown", message)

    def _spawn_arguments(self) -> dict[str, Any]:
        """
        How the next child is spawned: its environment and configuration
        (what it preloads changes as handlers prove themselves).
        """
        return {
            "env": child_environment(self.child_env),
            "config": {
                "max_result_size": self.max_result_size,
                "max_reply_size": self.max_reply_size,
                "sandbox": self.sandbox.to_child_config(os.getpid()),
                "report_rss": self.max_rss is not None,
                "fast_pipes": True,
                # Under a trust-domain isolation a child imports only what
                # its own handler needs, when it first gets its work.
                "preload": sorted(self._preloads.warm)
                if self.sandbox.isolation == "shared"
                else [],
            },
            "max_box_bytes": self.max_reply_size + 64 * 1024,
            "max_box_keys": self.max_reply_size // AMP_MAX_VALUE + 16,
            "output_cap": self.output_cap,
        }

    # --- introspection -------------------------------------------------------------

    @property
    def started(self) -> bool:
        """
        Whether the pool is running.
        """
        return self._supervisor.running

    def child_pids(self) -> list[int]:
        """
        The pids of the children alive now that serve or will (booting, idle
        or busy), not the standby ones.
        """
        return self._supervisor.child_pids()

    def standby_pids(self) -> list[int]:
        """
        The pids of the booted children kept in reserve, which take over at
        once when a serving child dies or is recycled.
        """
        return self._supervisor.standby_pids()

    def queued(self) -> int:
        """
        How many invocations and checks wait for a child.
        """
        return len(self._queue) + len(self._lanes)

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
        return self._supervisor.start()

    def stop(self) -> Deferred[None]:
        """
        Stop the children.  Queued work ends C{"skipped"}; work running is
        killed (the dispatcher waits for it before stopping the pool).
        """
        self._supervisor.running = False
        self._deadlines.stop()
        cancel_call(self._feeding)
        self.abort("the pool was stopped")
        launcher = self.launcher
        assert launcher is not None
        return self._supervisor.stop().addCallback(lambda _: launcher.stop())

    def abort(self, message: str) -> None:
        """
        End everything at once: running invocations end C{"timeout"} (their
        children are killed), queued ones C{"skipped"}, checks fail.
        """
        self._lanes.drain(
            "skipped", "actordispatch.Aborted", f"{message} before this ran"
        )
        self._batches.abort(message)

    # --- follow-up events --------------------------------------------------------

    def set_follow_ups(self, sink: FollowUps | None) -> None:
        """
        Have the follow-up events this pool's handlers fire handed to C{sink}
        (the dispatcher does this for its pools), or refused (C{None}).
        """
        self._follow_ups.sink = sink

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
        after one dies while booting.  Under a trust-domain isolation
        (L{SandboxProfile.isolation}) nothing is preloaded: a child would
        import handlers it must never share a process with.
        """
        if self.sandbox.isolation == "shared":
            self._preloads.want(handler)

    def check_handler(self, name: str) -> Deferred[int]:
        """
        Have a child import C{name}; fires with that child's pid.
        """
        done = self._checks.check_handler(name)
        if not done.called:
            self._batches.pump()
        return done

    def invoke(self, invocation: Invocation) -> Deferred[HandlerOutcome]:
        """
        Run C{invocation} on some child; always fires with its outcome.
        """
        job = Waiting(invocation)
        self.submit((job,))
        return job.done

    def submit(self, jobs: Sequence[Job]) -> None:
        """
        Run each job's invocation (a phase's, handed over together) and settle
        each job with its outcome.  When a child is idle and nothing waits, a
        lone invocation goes to it at once; otherwise they are queued, then
        shared out among the idle children in batches.  The invocations of a
        handler that waits for follow-up events wait in its own line instead,
        and go alone to children the rest leaves free (L{WaiterLanes}).
        """
        self._lanes.submit(jobs)
        if self._lanes:
            self._feed_soon()
