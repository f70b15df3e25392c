"""
The scenario of the original C{twisted_event_dispatcher} README: a user is
created, and several subsystems react, each in a child process.
"""

from __future__ import annotations

import os
from typing import NamedTuple

from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater


class UserEvent(NamedTuple):
    """
    Something happened to a user.
    """

    event_type: str
    user: str
    role: str
    user_id: str


def validate_user(event: UserEvent) -> dict[str, object]:
    """
    Phase C{before}: check the event.
    """
    if not event.user.isidentifier():
        raise ValueError(f"bad user name {event.user!r}")
    return {"valid": True, "type": type(event).__name__, "pid": os.getpid()}


def notify_admin(event: UserEvent) -> str:
    """
    Phase C{during}: tell the admins (here: say what would be sent).
    """
    who = f"{event.role} {event.user} ({event.user_id})"
    return f"admin notified: {who} {event.event_type}"


async def provision_mailbox(event: UserEvent) -> dict[str, str]:
    """
    Phase C{during}, C{async def}: pretend to talk to a mail server.
    """
    from twisted.internet import reactor

    await deferLater(reactor, 0.01, lambda: None)
    return {"mailbox": f"{event.user}@example.org"}


def audit_log(event: UserEvent) -> Deferred[str]:
    """
    Phase C{after}, Deferred-returning: record the event.
    """
    from twisted.internet import reactor

    return deferLater(
        reactor, 0.0, lambda: f"audited {event.event_type} for {event.user}"
    )


def reject_guests(event: UserEvent) -> None:
    """
    Phase C{before}: fails for guests, to show a failing handler does not stop
    the others.
    """
    if event.role == "guest":
        raise PermissionError(f"guests may not be created: {event.user}")
