"""
What the C{actordispatch} twistd/twist plugin runs (see
C{twisted/plugins/actordispatch_plugin.py}).
"""

from __future__ import annotations

import os
from typing import Any

from twisted.logger import Logger
from twisted.python import usage
from twisted.python.failure import Failure

from actordispatch._service.config import ConfigError, ServiceConfig, load_config
from actordispatch._service.service import DispatcherService

_log = Logger()


class Options(usage.Options):
    """
    C{--config FILE}: the dispatcher's TOML configuration.
    """

    optParameters = [
        ["config", "c", None, "The dispatcher's TOML configuration file (required)."],
    ]

    config: ServiceConfig

    def postOptions(self) -> None:
        if not self["config"]:
            raise usage.UsageError("--config FILE is required")
        try:
            self.config = load_config(self["config"])
        except ConfigError as e:
            raise usage.UsageError(str(e)) from None


def _stop_reactor(failure: Failure) -> None:
    """
    The service could not start: stop cleanly, then exit with status 1 so that
    a supervisor (systemd, a test) sees the failure.
    """
    from twisted.internet import reactor

    _log.critical("stopping: {error}", error=failure.getErrorMessage())
    reactor.addSystemEventTrigger("after", "shutdown", os._exit, 1)
    reactor.stop()


def makeService(options: Options) -> Any:
    """
    The dispatcher service for the parsed options.  If the configured handlers
    cannot be registered or an endpoint cannot listen, the process stops.
    """
    return DispatcherService(options.config, on_failure=_stop_reactor)
