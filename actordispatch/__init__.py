"""
actordispatch: a Twisted event dispatcher whose handlers run in isolated child
processes of an ampoule pool, over AMP.

    >>> from actordispatch import EventDispatcher
"""

from actordispatch._amqp_link import ClientTLS, delete_namespace
from actordispatch._amqp_pool import AMQPPool
from actordispatch._amqp_worker import WorkerHost
from actordispatch._config import ConfigError, load_config, parse_config
from actordispatch._dispatcher import DispatcherStats, EventDispatcher
from actordispatch._errors import (
    ActorDispatchError,
    BrokerUnavailableError,
    EventEncodingError,
    EventTooLargeError,
    FollowUpDepthError,
    FollowUpError,
    HandlerImportError,
    NotRunningError,
    OverloadedError,
    ProtocolError,
)
from actordispatch._external import (
    DispatcherAMPFactory,
    InsecureEndpointError,
    RemotePool,
    TLSServerOptions,
    listen,
)
from actordispatch._invocation import Invocation
from actordispatch._match import Absent, Glob, In, Not, Present
from actordispatch._phase import Phase
from actordispatch._pool import AmpoulePool
from actordispatch._registry import Explanation, HandlerInfo, Verdict
from actordispatch._result import STATUSES, DispatchResult, HandlerOutcome, Status
from actordispatch._sandbox import SandboxProfile
from actordispatch._service import DispatcherService
from actordispatch._veto import Veto

__all__ = [
    "STATUSES",
    "AMQPPool",
    "Absent",
    "ActorDispatchError",
    "AmpoulePool",
    "BrokerUnavailableError",
    "ClientTLS",
    "ConfigError",
    "DispatchResult",
    "DispatcherAMPFactory",
    "DispatcherService",
    "DispatcherStats",
    "EventDispatcher",
    "EventEncodingError",
    "EventTooLargeError",
    "Explanation",
    "FollowUpDepthError",
    "FollowUpError",
    "Glob",
    "HandlerImportError",
    "HandlerInfo",
    "HandlerOutcome",
    "In",
    "InsecureEndpointError",
    "Invocation",
    "Not",
    "NotRunningError",
    "OverloadedError",
    "Phase",
    "Present",
    "ProtocolError",
    "RemotePool",
    "SandboxProfile",
    "Status",
    "TLSServerOptions",
    "Verdict",
    "Veto",
    "WorkerHost",
    "delete_namespace",
    "listen",
    "load_config",
    "parse_config",
]
