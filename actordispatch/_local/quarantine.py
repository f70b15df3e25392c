"""
Crash-loop protection: handlers whose children keep dying are quarantined.

A handler earns a I{strike} each time a child dies while running or importing it.
C{limit} strikes within C{window} seconds quarantine it for a delay that starts
at C{base} seconds and doubles with each new quarantine, up to C{cap}.  While
quarantined its invocations fail fast instead of killing more children; when the
delay has passed it may run again, and a handler that then stays healthy for a
whole window is forgiven (its delay starts from C{base} again).

Pure: the time comes from an injected clock (a reactor, or C{Clock} in tests).
"""

from __future__ import annotations

from collections import deque
from typing import Any

from attrs import define, field


@define
class Quarantine:
    """
    Strikes and quarantines per handler name.
    """

    clock: Any
    limit: int = 3
    window: float = 60.0
    base: float = 1.0
    cap: float = 60.0
    _strikes: dict[str, deque[float]] = field(factory=dict, init=False)
    _until: dict[str, float] = field(factory=dict, init=False)
    _delay: dict[str, float] = field(factory=dict, init=False)

    def strike(self, handler: str) -> float | None:
        """
        Record that a child died in C{handler}.

        @return: the quarantine delay in seconds if this strike quarantined it,
            else C{None}.
        """
        now = self.clock.seconds()
        strikes = self._strikes.setdefault(handler, deque())
        strikes.append(now)
        while strikes and strikes[0] <= now - self.window:
            strikes.popleft()
        if len(strikes) < self.limit:
            return None
        strikes.clear()
        last = self._delay.get(handler)
        delay = self.base if last is None else min(self.cap, last * 2)
        self._delay[handler] = delay
        self._until[handler] = now + delay
        return delay

    def any(self) -> bool:
        """
        Whether any handler is (or was, until asked) in quarantine: when not,
        none needs asking about.
        """
        return bool(self._until)

    def remaining(self, handler: str) -> float | None:
        """
        Seconds left in C{handler}'s quarantine, or C{None} if it may run.
        """
        until = self._until.get(handler)
        if until is None:
            return None
        now = self.clock.seconds()
        if now < until:
            return until - now
        del self._until[handler]
        return None

    def escalated(self) -> bool:
        """
        Whether any handler has a quarantine delay to forget: when not,
        L{settle} has nothing to do for anyone.
        """
        return bool(self._delay)

    def settle(self, handler: str) -> None:
        """
        Forget a handler's escalation once it has run a whole window without a
        strike after its last quarantine.
        """
        if handler in self._delay and handler not in self._until:
            strikes = self._strikes.get(handler)
            now = self.clock.seconds()
            if not strikes or strikes[-1] <= now - self.window:
                self._delay.pop(handler, None)
                self._strikes.pop(handler, None)

    def quarantined(self) -> dict[str, float]:
        """
        The handlers in quarantine now, with the seconds they have left.
        """
        return {
            name: left
            for name in list(self._until)
            if (left := self.remaining(name)) is not None
        }
