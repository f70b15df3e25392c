"""
What the sweeps' child processes import (L{benchmarks.sweeps}): a handler that
crashes its child, and the naive ampoule baseline's child for events of any
size.

This lives in its own module because children import by name, and the sweeps
script runs as C{__main__}, which no child can import.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from ampoule.child import AMPChild
from twisted.protocols import amp

from actordispatch._wire.commands import ChunkedBytes
from benchmarks.handlers import noop


def crash(event: Any) -> object:
    """
    Note when, on the system-wide monotonic clock, then end the child process
    at once (C{os._exit}: no cleanup, no reply), as a crashing handler would.
    The time goes to the file named by C{event["path"]}, so that the parent can
    time the replacement from the crash itself.
    """
    with open(event["path"], "w") as f:
        f.write(repr(time.monotonic()))
    os._exit(3)


class RunNoopChunked(amp.Command):
    """
    The naive baseline's one-call-per-event command for events of any size:
    like L{benchmarks.handlers.RunNoop}, but the event may exceed AMP's 64 KiB
    value limit (it is spread over several keys of the box, as the dispatcher
    spreads its batches).
    """

    arguments = [(b"event", ChunkedBytes())]
    response = [(b"result", amp.String())]


class NoopChunkedChild(AMPChild):
    """
    The naive baseline's child for L{RunNoopChunked}: decode the event, call
    L{noop}, encode its result.  No batching, no registry, no timeouts.
    """

    @RunNoopChunked.responder
    def run_noop(self, event: bytes) -> dict[str, bytes]:
        return {"result": json.dumps(noop(json.loads(event))).encode()}
