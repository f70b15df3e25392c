"""
actordispatch: a Twisted event dispatcher whose handlers run in isolated child
processes of an ampoule pool, over AMP.

    >>> from actordispatch import EventDispatcher
"""

from actordispatch._dispatcher import DispatcherStats, EventDispatcher
from actordispatch._errors import (
    ActorDispatchError,
    EventEncodingError,
    EventTooLargeError,
    HandlerImportError,
    NotRunningError,
    OverloadedError,
    ProtocolError,
)
from actordispatch._invocation import Invocation
from actordispatch._pool import AmpoulePool
from actordispatch._registry import HandlerInfo
from actordispatch._result import STATUSES, DispatchResult, HandlerOutcome, Status
from actordispatch._sandbox import SandboxProfile

__all__ = [
    "STATUSES",
    "ActorDispatchError",
    "AmpoulePool",
    "DispatchResult",
    "DispatcherStats",
    "EventDispatcher",
    "EventEncodingError",
    "EventTooLargeError",
    "HandlerImportError",
    "HandlerInfo",
    "HandlerOutcome",
    "Invocation",
    "NotRunningError",
    "OverloadedError",
    "ProtocolError",
    "SandboxProfile",
    "Status",
]
