"""
What the benchmark's child processes import: the trivial handler every mechanism
runs, and the AMP command and child of the naive ampoule baseline.

This lives in its own module because children import by name, and the benchmark
script runs as C{__main__}, which no child can import.
"""

from __future__ import annotations

import json
from typing import Any

from ampoule.child import AMPChild
from twisted.protocols import amp


def noop(event: Any) -> object:
    """
    The trivial handler: all the cost measured is the cost of getting here.
    It returns C{None}.
    """
    return None


class RunNoop(amp.Command):
    """
    The naive baseline's one-call-per-event command: a JSON event in, the
    handler's JSON result out.  (ampoule's own C{Ping} is broken on Python 3.)
    """

    arguments = [(b"event", amp.String())]
    response = [(b"result", amp.String())]


class NoopChild(AMPChild):
    """
    The naive baseline's child: decode the event, call L{noop}, encode its
    result.  No batching, no registry, no timeouts.
    """

    @RunNoop.responder
    def run_noop(self, event: bytes) -> dict[str, bytes]:
        return {"result": json.dumps(noop(json.loads(event))).encode()}


# The trivial handler under four names: four handlers, so four trust domains
# (see benchmarks.bench_isolation).
noop_0 = noop_1 = noop_2 = noop_3 = noop
