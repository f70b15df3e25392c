"""
The soak test's handlers (L{benchmarks.soak}): they run in real child
processes, which import them as C{benchmarks.soak_handlers:NAME}.

Each handler does what the event tells it to: the soak script decides, per
invocation and at random, which ones misbehave, and writes it in the event
(C{event["faults"][name]}), so that its ledger knows what each outcome must be.
Left alone, a handler returns at once with its name and the event's number,
which lets the ledger check every outcome reached the right event.

This lives in its own module because children import by name, and the soak
script runs as C{__main__}, which no child can import.
"""

from __future__ import annotations

import os
import time
from typing import Any

#: The pool's cap on one encoded result; an "oversize" result is twice it.
MAX_RESULT_SIZE = 4096

#: How long a "hang" sleeps: far past any timeout the soak sets, so it is
#: always killed.
HANG_SECONDS = 60.0

#: The ways a handler misbehaves, and the status each must end with.
EXPECTED_STATUS = {
    "crash": "crashed",
    "hang": "timeout",
    "oversize": "error",
    "raise": "error",
}


class SoakError(Exception):
    """
    What a handler raises when told to.
    """


def _behave(name: str, event: dict[str, Any]) -> Any:
    fault = event["faults"].get(name)
    if fault == "crash":
        os._exit(3)
    if fault == "hang":
        time.sleep(HANG_SECONDS)
    if fault == "oversize":
        return "x" * (2 * MAX_RESULT_SIZE)
    if fault == "raise":
        raise SoakError(f"{name} raised for event {event['n']}, as told")
    return {"n": event["n"], "h": name}


def alpha(event: dict[str, Any]) -> Any:
    """
    Phase "before", every event.
    """
    return _behave("alpha", event)


def beta(event: dict[str, Any]) -> Any:
    """
    Phase "before", events of kind "even".
    """
    return _behave("beta", event)


def gamma(event: dict[str, Any]) -> Any:
    """
    Phase "after", every event.
    """
    return _behave("gamma", event)
