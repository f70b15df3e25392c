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
    from actordispatch._amqp.link import (
        ClientTLS,
        delete_namespace,
    )
    from actordispatch._amqp.pool import AMQPPool
    from actordispatch._amqp.worker import WorkerHost
    from actordispatch._core.errors import (
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
    from actordispatch._core.invocation import Invocation
    from actordispatch._core.match import (
        Absent,
        Glob,
        In,
        Not,
        Present,
    )
    from actordispatch._core.phase import Phase
    from actordispatch._core.registry import (
        Explanation,
        HandlerInfo,
        Verdict,
    )
    from actordispatch._core.result import (
        STATUSES,
        DispatchResult,
        HandlerOutcome,
        Status,
    )
    from actordispatch._core.sandbox import SandboxProfile
    from actordispatch._core.veto import Veto
    from actordispatch._dispatch.dispatcher import (
        DispatcherStats,
        EventDispatcher,
    )
    from actordispatch._external.listen import (
        InsecureEndpointError,
        TLSServerOptions,
        listen,
    )
    from actordispatch._external.remote_pool import RemotePool
    from actordispatch._external.server import DispatcherAMPFactory
    from actordispatch._local.pool import AmpoulePool
    from actordispatch._service.config import (
        ConfigError,
        load_config,
        parse_config,
    )
    from actordispatch._service.service import DispatcherService

#: Where each public name is defined.
_WHERE = {
    "STATUSES": "actordispatch._core.result",
    "AMQPPool": "actordispatch._amqp.pool",
    "Absent": "actordispatch._core.match",
    "ActorDispatchError": "actordispatch._core.errors",
    "AmpoulePool": "actordispatch._local.pool",
    "BrokerUnavailableError": "actordispatch._core.errors",
    "ClientTLS": "actordispatch._amqp.link",
    "ConfigError": "actordispatch._service.config",
    "DispatchResult": "actordispatch._core.result",
    "DispatcherAMPFactory": "actordispatch._external.server",
    "DispatcherService": "actordispatch._service.service",
    "DispatcherStats": "actordispatch._dispatch.dispatcher",
    "EventDispatcher": "actordispatch._dispatch.dispatcher",
    "EventEncodingError": "actordispatch._core.errors",
    "EventTooLargeError": "actordispatch._core.errors",
    "Explanation": "actordispatch._core.registry",
    "FollowUpDepthError": "actordispatch._core.errors",
    "FollowUpError": "actordispatch._core.errors",
    "Glob": "actordispatch._core.match",
    "HandlerImportError": "actordispatch._core.errors",
    "HandlerInfo": "actordispatch._core.registry",
    "HandlerOutcome": "actordispatch._core.result",
    "In": "actordispatch._core.match",
    "InsecureEndpointError": "actordispatch._external.listen",
    "Invocation": "actordispatch._core.invocation",
    "Not": "actordispatch._core.match",
    "NotRunningError": "actordispatch._core.errors",
    "OverloadedError": "actordispatch._core.errors",
    "Phase": "actordispatch._core.phase",
    "Present": "actordispatch._core.match",
    "ProtocolError": "actordispatch._core.errors",
    "RemotePool": "actordispatch._external.remote_pool",
    "SandboxProfile": "actordispatch._core.sandbox",
    "Status": "actordispatch._core.result",
    "TLSServerOptions": "actordispatch._external.listen",
    "Verdict": "actordispatch._core.registry",
    "Veto": "actordispatch._core.veto",
    "WorkerHost": "actordispatch._amqp.worker",
    "delete_namespace": "actordispatch._amqp.link",
    "listen": "actordispatch._external.listen",
    "load_config": "actordispatch._service.config",
    "parse_config": "actordispatch._service.config",
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
