"""
Handlers for the trust-domain tests: victims, and attackers that aim at what
shares their child process, their batch or their spool (issue 16).  They run
in real children as C{tests.integration.domains:NAME}.
"""

from __future__ import annotations

import gc
import os
import time
import types
from typing import Any

#: The child's spool (see L{actordispatch.children.spool}).
SPOOL = 5

_seen: list[Any] = []


def victim(event: dict[str, Any]) -> dict[str, Any]:
    """
    An honest handler: notes that it ran (in C{event["log"]}, if given) and
    answers with the event's card and its pid.
    """
    if event.get("log") and "n" in event:
        with open(event["log"], "a") as log:
            log.write(f"{event['n']}\n")
    time.sleep(event.get("sleep", 0))
    return {"card": event["card"], "pid": os.getpid()}


def poison(event: dict[str, Any]) -> str:
    """
    Rewrite, in this child, the code of every other function of this module
    named C{victim} so that it answers the attacker's value, and keep what
    victims see.
    """

    def stolen(event: dict[str, Any]) -> Any:
        _seen.append(event)
        return {"card": "POISONED", "pid": os.getpid()}

    for obj in gc.get_objects():
        if isinstance(obj, types.FunctionType) and obj.__name__ == "victim":
            obj.__code__ = stolen.__code__
    return "poisoned"


def forge(event: dict[str, Any]) -> None:
    """
    Write "ok" records with the attacker's value for everything after it in
    the batch, then end the process: the parent would settle the batch from
    the spool.
    """
    header = os.pread(SPOOL, 64, 0).split(b"\n", 1)[0]
    now = time.monotonic()
    record = b'%r {"s":"ok","d":0.0,"v":{"card":"FORGED","pid":0}}\n' % now
    os.pwrite(SPOOL, header + b"\n" + record * 64, 0)
    os._exit(0)


def erase(event: dict[str, Any]) -> None:
    """
    Zero the spool, forgetting what finished before this in the batch, then
    end the process: finished invocations would look unfinished.
    """
    os.pwrite(SPOOL, bytes(64 * 1024), 0)
    os._exit(0)


def remember(event: dict[str, Any]) -> dict[str, Any]:
    """
    Keep every event this process has seen; answer with them and the pid.
    """
    _seen.append(event)
    return {"seen": list(_seen), "pid": os.getpid()}


# The same code under five names: five handlers, so five trust domains.
remember_0 = remember_1 = remember_2 = remember_3 = remember_4 = remember
