"""
One handler to run for one event: the unit of work a pool receives.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from types import MappingProxyType
from typing import Any

from attrs import field, frozen

from actordispatch._result import HandlerOutcome, Status

_NO_KEYWORDS: Mapping[str, Hashable] = MappingProxyType({})


@frozen
class Invocation:
    """
    Run handler C{handler} (id C{handler_id}) of phase C{phase} on an event.

    @ivar event: the event, already encoded (once per event, shared by all of its
        invocations).
    @ivar timeout: seconds the handler may run, or C{None} for the pool's default.
    @ivar keywords: the keywords the event was fired with (shared by all of its
        invocations; pools that route by them, such as the AMQP pool, read
        them).
    @ivar depth: 0 for an event the application fired; 1 + the depth of the
        event whose handler fired it, for a follow-up event.
    """

    handler_id: int
    handler: str
    phase: str
    event: bytes
    timeout: float | None = None
    keywords: Mapping[str, Hashable] = field(default=_NO_KEYWORDS, eq=False)
    depth: int = field(default=0, eq=False)

    def ok(
        self,
        value: Any,
        *,
        duration: float = 0.0,
        pid: int | None = None,
        veto: str | None = None,
    ) -> HandlerOutcome:
        """
        The C{"ok"} outcome of this invocation, carrying the handler's C{value}
        (or the reason of the L{Veto} it returned).
        """
        return HandlerOutcome(
            handler_id=self.handler_id,
            handler=self.handler,
            phase=self.phase,
            status="ok",
            value=value,
            duration=duration,
            pid=pid,
            veto=veto,
        )

    def outcome(
        self,
        status: Status,
        *,
        error_type: str | None = None,
        error_message: str | None = None,
        duration: float = 0.0,
        pid: int | None = None,
    ) -> HandlerOutcome:
        """
        An outcome of this invocation that carries no value: a failure decided
        by the parent, or a skip.
        """
        return HandlerOutcome(
            handler_id=self.handler_id,
            handler=self.handler,
            phase=self.phase,
            status=status,
            error_type=error_type,
            error_message=error_message,
            duration=duration,
            pid=pid,
        )
