"""
Supervision of the local pool's children: L{Supervisor}.

It keeps C{size} children serving and C{standby} more booted in reserve,
spawning them through a L{ChildLauncher} (real ampoule children, or fakes in
unit tests), replacing each one that dies at once, with a growing delay when
children die while booting, and it moves each child through its life only by
L{transition}.  It knows nothing of the work children do: the pool's other
parts tell it when a child is free again (L{Supervisor.done_with}) and hear
from it when one ended, broke the protocol, or fired a follow-up event.
"""

from __future__ import annotations

import itertools
import signal
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

from attrs import define, field
from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from actordispatch._core.errors import ChildEndedError
from actordispatch._local.child import Child, ChildLauncher, FollowUpSink
from actordispatch._local.domains import claim_idle, replaceable
from actordispatch._local.lifecycle import (
    ENDING,
    SERVING,
    WORKING,
    ChildState,
    transition,
)
from actordispatch._local.work import cancel_call
from actordispatch._wire.commands import Ping

_log = Logger()

#: The seconds a retiring child has to exit before it is killed, at least.
RETIRE_GRACE = 5.0


@define(eq=False)
class Supervisor:
    """
    Keeps a pool's children alive.

    @ivar launcher: starts each child.
    @ivar spawn_arguments: the keyword arguments of the next child's
        C{launcher.spawn} (its environment and configuration), asked for at
        each spawn, since what children preload changes.
    @ivar expected_layers: the sandbox layers every child must report in force.
    @ivar on_free: called when a child may take work (to send it some).
    @ivar on_ended: called with a child whose process ended and the error
        that says how, to settle the work it had.
    @ivar on_boot_death: called when a child died while booting.
    @ivar on_pool_down: called with a message once children keep dying
        while booting (queued work fails fast).
    @ivar on_protocol_error: called with a child and a message when it broke
        the protocol.
    @ivar on_follow_up: called with a child and the arguments of a follow-up
        event its handler fired.
    """

    reactor: Any
    launcher: ChildLauncher
    size: int
    standby: int
    kill_grace: float
    #: see L{SandboxProfile.isolation}
    isolation: str
    max_boot_failures: int
    spawn_arguments: Callable[[], dict[str, Any]]
    expected_layers: tuple[str, ...]
    on_free: Callable[[], None]
    on_ended: Callable[[Child, ChildEndedError], None]
    on_boot_death: Callable[[], None]
    on_pool_down: Callable[[str], None]
    on_protocol_error: Callable[[Child, str], None]
    on_follow_up: Callable[..., Deferred[dict[str, Any]]]
    running: bool = field(default=False, init=False)
    _children: dict[int, Child] = field(factory=dict, init=False)
    _idle: deque[Child] = field(factory=deque, init=False)
    _spares: deque[Child] = field(factory=deque, init=False)
    _numbers: Any = field(factory=lambda: itertools.count(1), init=False)
    _boot_failures: int = field(default=0, init=False)
    _last_boot_error: str = field(default="", init=False)
    _respawn: Any = field(default=None, init=False)
    _ready: Deferred[None] = field(factory=lambda: succeed(None), init=False)
    #: children parked (waiting for a follow-up): each has a stand-in
    parked: int = field(default=0, init=False)
    #: set when a parked child comes back: its stand-in may be surplus
    _unparked: bool = field(default=False, init=False)

    # --- what there is -------------------------------------------------------------

    def children(self) -> Iterator[Child]:
        """
        Every child not dead yet (a copy: safe to change the pool meanwhile).
        """
        return iter(list(self._children.values()))

    def idle(self) -> int:
        """
        How many children are free for work.
        """
        return len(self._idle)

    def take_idle(self) -> Child:
        """
        The child that was free most recently (still warmest), to give work.
        """
        return self._idle.pop()

    def take_idle_for(self, handler: str) -> Child | None:
        """
        Under a trust-domain isolation: a free child that may run C{handler},
        claimed for it (see L{claim_idle}); C{None} if there is none.
        """
        return claim_idle(self._idle, handler, reuse=self.isolation == "handler")

    def make_room(self, domains: int) -> None:
        """
        Under a trust-domain isolation, C{domains} handlers wait with no child
        they may use: replace (never reuse) as many free children of other
        handlers, beyond the fresh ones already booting, which will take them.
        """
        booting = sum(
            1
            for c in self._children.values()
            if c.owner is None and c.state is ChildState.BOOTING
        )
        # Only those that will serve: the others will stand by.
        coming = max(0, min(booting, self.target() - self._serving()))
        for _ in range(domains - coming):
            taken = replaceable(self._idle)
            if taken is None:
                return
            self.retire(taken)

    def put_idle(self, child: Child) -> None:
        """
        Give back a child L{take_idle} gave, without work after all.
        """
        self._idle.append(child)

    def child_pids(self) -> list[int]:
        """
        The pids of the children that serve or will (booting, idle or busy).
        """
        live = [c for c in self._children.values() if c.pid is not None]
        serving = [
            c.pid for c in live if c.state in SERVING or c.state is ChildState.RETIRING
        ]
        # A booting child serves once up if fewer than size do; else it stands by.
        booting = [c.pid for c in live if c.state is ChildState.BOOTING]
        pids = serving + booting[: max(0, self.target() - len(serving))]
        return sorted(pid for pid in pids if pid is not None)

    def standby_pids(self) -> list[int]:
        """
        The pids of the booted children kept in reserve.
        """
        return sorted(c.pid for c in self._spares if c.pid is not None)

    def target(self) -> int:
        """
        How many children should serve: C{size}, plus one standing in for
        each parked child.
        """
        return self.size + self.parked

    # --- starting and stopping -----------------------------------------------------

    def start(self) -> Deferred[None]:
        """
        Spawn C{size} children; fires once each has answered (or died).  The
        standby ones boot after them, not competing for the CPU meanwhile.
        """
        if self.running:
            return self._ready
        self.running = True
        booted = [self._spawn() for _ in range(self.size)]
        self._ready = DeferredList(booted, consumeErrors=True).addCallback(
            lambda _: None
        )
        self._ready.addCallback(lambda _: self.maintain())
        return self._ready

    def stop(self) -> Deferred[None]:
        """
        Spawn no more; retire the children that have no work and kill those
        that do (their work was settled first).  Fires once all have ended.
        """
        self.running = False
        cancel_call(self._respawn)
        self._respawn = None
        ended = []
        for child in self.children():
            ended.append(child.ended)
            if child.state in WORKING:
                self.kill(child)
            elif child.state is not ChildState.DYING:
                self.retire(child)
        return DeferredList(ended, consumeErrors=True).addCallback(lambda _: None)

    # --- birth ---------------------------------------------------------------------

    def _spawn(self) -> Deferred[None]:
        number = next(self._numbers)
        holder: list[Child] = []

        def follow_up(**arguments: Any) -> Deferred[dict[str, Any]]:
            return self.on_follow_up(holder[0], **arguments)

        sink: FollowUpSink = follow_up
        child = self.launcher.spawn(
            self.reactor,
            number,
            on_protocol_error=lambda message: self.on_protocol_error(
                holder[0], message
            ),
            on_follow_up=sink,
            **self.spawn_arguments(),
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
        if child.state is not ChildState.BOOTING:
            return
        self._boot_failures = 0
        child.read_sandbox_report(answer.get("sandbox"), self.expected_layers)
        if self._serving() < self.target():
            transition(child, ChildState.IDLE)
            self._idle.append(child)
        else:
            transition(child, ChildState.STANDBY)
            self._spares.append(child)
        self.on_free()

    def _boot_failed(self, reason: Failure, child: Child) -> None:
        # The child died (or broke the protocol) before answering: _ended counts
        # it as a boot failure, so do not mark it dying here first.
        if isinstance(reason.value, ChildEndedError):
            return
        if child.state is ChildState.BOOTING:
            self.kill(child)

    def _serving(self) -> int:
        return sum(1 for c in self._children.values() if c.state in SERVING)

    # --- death ---------------------------------------------------------------------

    def _ended(self, status: Any, child: Child) -> None:
        self._children.pop(child.number, None)
        cancel_call(child.kill_call)
        if child in self._idle:
            self._idle.remove(child)
        if child in self._spares:
            self._spares.remove(child)
        ended = ChildEndedError(
            getattr(status, "exitCode", None),
            getattr(status, "signal", None),
            child.pid,
        )
        if child.state is ChildState.BOOTING:
            self._boot_failures += 1
            self._last_boot_error = ended.describe()
            self.on_boot_death()
            _log.error(
                "child {pid} died while booting ({how}); {count} in a row",
                pid=child.pid,
                how=ended.describe(),
                count=self._boot_failures,
            )
        self.on_ended(child, ended)
        child.work = None
        if child.waits:
            child.waits = 0
            self.parked -= 1
            self._unparked = True
        transition(child, ChildState.DEAD)
        child.spool.close()
        self.maintain()
        self.on_free()

    def maintain(self) -> None:
        """
        Keep C{size} children serving, promoting a standby child at once when
        one is short, and C{size + standby} that are not on their way out.
        """
        if not self.running:
            return
        self._promote()
        if self._respawn is not None and self._respawn.active():
            return
        alive = sum(1 for c in self._children.values() if c.state not in ENDING)
        missing = self.target() + self.standby - alive
        if missing <= 0:
            return
        if self._boot_failures:
            delay = min(10.0, 0.1 * 2 ** (self._boot_failures - 1))
            self._respawn = self.reactor.callLater(delay, self._respawn_now)
            if self._boot_failures >= self.max_boot_failures:
                self.on_pool_down(
                    f"children keep dying while booting ({self._boot_failures} in "
                    f"a row, last: {self._last_boot_error})"
                )
            return
        for _ in range(missing):
            self._spawn()

    def _promote(self) -> None:
        serving = sum(
            1
            for c in self._children.values()
            if c.state in SERVING or c.state is ChildState.BOOTING
        )
        promoted = False
        while self._spares and serving < self.target():
            spare = self._spares.popleft()
            transition(spare, ChildState.IDLE)
            self._idle.append(spare)
            serving += 1
            promoted = True
        if promoted:
            # Not from here: maintain runs inside the pool's own bookkeeping.
            self.reactor.callLater(0, self.on_free)

    def _respawn_now(self) -> None:
        self._respawn = None
        if self.running:
            self._spawn()
            self.maintain()

    def kill(self, child: Child) -> None:
        """
        SIGTERM now, SIGKILL after the grace period; a replacement starts now.
        """
        if child.state in (ChildState.DYING, ChildState.DEAD):
            return
        if child in self._idle:
            self._idle.remove(child)
        transition(child, ChildState.DYING)
        child.signal(signal.SIGTERM)
        child.kill_call = self.reactor.callLater(
            self.kill_grace, child.signal, signal.SIGKILL
        )
        self.maintain()

    def kill_now(self, child: Child) -> None:
        """
        SIGKILL now (a child that broke the protocol gets no grace).
        """
        if child in self._idle:
            self._idle.remove(child)
        if child.state is not ChildState.DEAD:
            transition(child, ChildState.DYING)
            child.signal(signal.SIGKILL)
        self.maintain()

    def retire(self, child: Child) -> None:
        """
        Ask a child to exit once idle; a replacement starts now.
        """
        if child.state in ENDING:
            return
        if child in self._idle:
            self._idle.remove(child)
        if child in self._spares:
            self._spares.remove(child)
        transition(child, ChildState.RETIRING)
        from ampoule.commands import Shutdown

        child.amp.callRemote(Shutdown).addErrback(lambda _: None)
        child.kill_call = self.reactor.callLater(
            max(RETIRE_GRACE, self.kill_grace), child.signal, signal.SIGKILL
        )
        self.maintain()

    def retire_spares(self) -> None:
        """
        Replace the standby children (they booted without a preload now due).
        """
        for spare in list(self._spares):
            self.retire(spare)

    # --- work done -----------------------------------------------------------------

    def busy(self, child: Child) -> None:
        """
        C{child} (taken with L{take_idle}) now has work.
        """
        transition(child, ChildState.BUSY)

    def done_with(self, child: Child, recycle: bool = False) -> None:
        """
        C{child} finished its work: it serves on, stands by, or goes (recycled,
        surplus, or the pool stops); then what waits is sent out.
        """
        child.work = None
        if child.state not in WORKING:
            self.on_free()  # what its outcomes queued goes to the others
            return
        if recycle and self.isolation == "invocation":
            # Used up, and holds nothing worth a clean exit: the outcome is in.
            self.kill_now(child)
        elif recycle or not self.running:
            _log.info("child {pid} recycled", pid=child.pid)
            self.retire(child)
        elif self._unparked and not child.waits and self._surplus():
            # It stood in for a parked child that is back: stand by or go.
            if len(self._spares) < self.standby:
                transition(child, ChildState.STANDBY)
                self._spares.append(child)
            else:
                self.retire(child)
        else:
            transition(child, ChildState.IDLE)
            self._idle.append(child)
        self.on_free()

    def _surplus(self) -> bool:
        """
        Whether more children serve than the pool needs now (one stood in for
        a parked child that is back); once none do, stop asking.
        """
        # Booting children do not count: they become standby ones if not needed.
        if self._serving() > self.target():
            return True
        self._unparked = False
        return False

    # --- parking -------------------------------------------------------------------

    def park(self, child: Child) -> None:
        """
        C{child}'s handler waits for a follow-up event: a stand-in serves
        while it waits.
        """
        self.parked += 1
        if child.state is ChildState.BUSY:
            transition(child, ChildState.PARKED)
        self.maintain()
        self.on_free()

    def unpark(self, child: Child) -> None:
        """
        C{child}'s handler waits no more: its stand-in may be surplus.
        """
        self.parked -= 1
        self._unparked = True
        if child.state is ChildState.PARKED:
            transition(child, ChildState.BUSY)
