"""
actordispatch: a Twisted event dispatcher whose handlers run in isolated child
processes of an ampoule pool, over AMP.

    >>> from actordispatch import EventDispatcher

The public names are imported on first use, each from the private module that
defines it: importing the package imports neither the global reactor (an
application may still install the reactor of its choice) nor the parts it does
not use (pika for RabbitMQ, the service, the AMP endpoint, the configuration).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from actordispatch._amqp_link import (
        ClientTLS,
        delete_namespace,
    )
    from actordispatch._amqp_pool import AMQPPool
    from actordispatch._amqp_worker import WorkerHost
    from actordispatch._config import (
        ConfigError,
        load_config,
        parse_config,
    )
    from actordispatch._dispatcher import (
        DispatcherStats,
        EventDispatcher,
    )
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
    from actordispatch._match import (
        Absent,
        Glob,
        In,
        Not,
        Present,
    )
    from actordispatch._phase import Phase
    from actordispatch._pool import AmpoulePool
    from actordispatch._registry import (
        Explanation,
        HandlerInfo,
        Verdict,
    )
    from actordispatch._result import (
        STATUSES,
        DispatchResult,
        HandlerOutcome,
        Status,
    )
    from actordispatch._sandbox import SandboxProfile
    from actordispatch._service import DispatcherService
    from actordispatch._veto import Veto

#: Where each public name is defined.
_WHERE = {
    "STATUSES": "actordispatch._result",
    "AMQPPool": "actordispatch._amqp_pool",
    "Absent": "actordispatch._match",
    "ActorDispatchError": "actordispatch._errors",
    "AmpoulePool": "actordispatch._pool",
    "BrokerUnavailableError": "actordispatch._errors",
    "ClientTLS": "actordispatch._amqp_link",
    "ConfigError": "actordispatch._config",
    "DispatchResult": "actordispatch._result",
    "DispatcherAMPFactory": "actordispatch._external",
    "DispatcherService": "actordispatch._service",
    "DispatcherStats": "actordispatch._dispatcher",
    "EventDispatcher": "actordispatch._dispatcher",
    "EventEncodingError": "actordispatch._errors",
    "EventTooLargeError": "actordispatch._errors",
    "Explanation": "actordispatch._registry",
    "FollowUpDepthError": "actordispatch._errors",
    "FollowUpError": "actordispatch._errors",
    "Glob": "actordispatch._match",
    "HandlerImportError": "actordispatch._errors",
    "HandlerInfo": "actordispatch._registry",
    "HandlerOutcome": "actordispatch._result",
    "In": "actordispatch._match",
    "InsecureEndpointError": "actordispatch._external",
    "Invocation": "actordispatch._invocation",
    "Not": "actordispatch._match",
    "NotRunningError": "actordispatch._errors",
    "OverloadedError": "actordispatch._errors",
    "Phase": "actordispatch._phase",
    "Present": "actordispatch._match",
    "ProtocolError": "actordispatch._errors",
    "RemotePool": "actordispatch._external",
    "SandboxProfile": "actordispatch._sandbox",
    "Status": "actordispatch._result",
    "TLSServerOptions": "actordispatch._external",
    "Verdict": "actordispatch._registry",
    "Veto": "actordispatch._veto",
    "WorkerHost": "actordispatch._amqp_worker",
    "delete_namespace": "actordispatch._amqp_link",
    "listen": "actordispatch._external",
    "load_config": "actordispatch._config",
    "parse_config": "actordispatch._config",
}

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


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'actordispatch' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
