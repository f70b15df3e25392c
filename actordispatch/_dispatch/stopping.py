"""
A dispatcher's life: whether it runs, stops or aborts (L{Lifecycle}, the state
its parts share), and starting, stopping and draining it (L{Stopper}).

The rules of C{stop()}: it stops accepting events and lets every accepted one
finish (the drain), then stops the pools.  A drain timeout (the constructor's,
or C{stop()}'s) kills what still runs when it passes and skips the rest.
The first C{stop()} starts the drain; a later one, while it drains, fires
with it, and a C{drain_timeout} it gives can only shorten the drain, never
lengthen it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from attrs import define, field
from twisted.internet.defer import Deferred, fail
from twisted.logger import Logger

from actordispatch._core.errors import ActorDispatchError

if TYPE_CHECKING:
    from actordispatch._dispatch.admission import Admission
    from actordispatch._dispatch.book import HandlerBook
    from actordispatch._dispatch.pools import PoolSet

_log = Logger()


@define(eq=False)
class Lifecycle:
    """
    The state of a dispatcher's life that its parts read.

    @ivar running: whether it accepts events.
    @ivar aborting: whether the drain timed out: what is planned is skipped.
    @ivar stopping: while C{stop()} runs, the Deferred that fires when the
        drain is over.
    """

    running: bool = False
    aborting: bool = False
    stopping: Deferred[None] | None = None
    _idle: list[Callable[[], bool]] = field(factory=list)

    def drains_when(self, idle: Callable[[], bool]) -> None:
        """
        Make C{idle} one of the conditions for the drain to be over.
        """
        self._idle.append(idle)

    def check_drained(self) -> None:
        """
        End the drain, if the dispatcher is stopping and every part is idle.
        """
        stopping = self.stopping
        if (
            stopping is not None
            and not stopping.called
            and all(idle() for idle in self._idle)
        ):
            stopping.callback(None)


@define(eq=False)
class Stopper:
    """
    Starts and stops a dispatcher: its pools, its handlers' expiry timers,
    the events waiting for room, the drain.
    """

    _state: Lifecycle
    _reactor: Any
    _pools: PoolSet
    _book: HandlerBook
    _admission: Admission
    _phases: tuple[str, ...]
    #: the constructor's C{drain_timeout}
    _drain_timeout: float | None = None
    _drain_call: Any = None
    #: the Deferreds of the later calls of C{stop()}
    _drained: list[Deferred[None]] = field(factory=list)

    def start(self) -> Deferred[None]:
        """
        Start accepting events, the expiry timers and the pools.

        @return: a Deferred firing when the pools are ready.
        """
        if self._state.stopping is not None:
            return fail(ActorDispatchError("stop() has not finished; start() after it"))
        self._state.running = True
        _log.info("dispatcher starting with phases {phases}", phases=self._phases)
        self._book.schedule_expiries()
        return self._pools.start_all()

    def stop(self, drain_timeout: float | None = None) -> Deferred[None]:
        """
        Stop accepting events, drain the accepted ones, then stop the pools
        (see the module's docstring for the drain's rules).

        @return: a Deferred firing when the pools are stopped.
        """
        state = self._state
        if state.stopping is not None:
            if drain_timeout is not None and not state.stopping.called:
                self._shorten_drain(drain_timeout)
            stopping: Deferred[None] = Deferred()
            self._drained.append(stopping)
            return stopping
        state.running = False
        state.stopping = Deferred()
        done = state.stopping
        self._book.cancel_expiries()
        self._admission.refuse_waiting()
        timeout = self._drain_timeout if drain_timeout is None else drain_timeout
        if timeout is not None:
            self._shorten_drain(timeout)

        def stop_pools(_: object) -> Deferred[None]:
            return self._pools.stop_started()

        def stopped(result: object) -> object:
            drain_call, self._drain_call = self._drain_call, None
            if drain_call is not None and drain_call.active():
                drain_call.cancel()
            state.aborting = False
            state.stopping = None
            waiting, self._drained = self._drained, []
            for d in waiting:
                d.callback(None)
            _log.info("dispatcher stopped")
            return result

        done.addCallback(stop_pools).addBoth(stopped)
        state.check_drained()
        return done

    def _shorten_drain(self, timeout: float) -> None:
        # End the drain within timeout seconds, unless it ends sooner already.
        current = self._drain_call
        if self._state.aborting or (
            current is not None
            and current.active()
            and current.getTime() <= self._reactor.seconds() + timeout
        ):
            return
        if current is not None and current.active():
            current.cancel()
        self._drain_call = self._reactor.callLater(timeout, self._abort_drain, timeout)

    def _abort_drain(self, timeout: float) -> None:
        if timeout:
            why = f"drain timeout of {timeout:g}s"
            _log.warn(
                "stop(): accepted events still running after {timeout}s: killing them",
                timeout=timeout,
            )
        else:
            why = "stopped at once, with no drain"
            _log.warn("stop(drain_timeout=0): killing the accepted events' handlers")
        self._state.aborting = True
        self._pools.abort_all(f"the dispatcher stopped ({why})")
        self._admission.start_queued()
        self._state.check_drained()
