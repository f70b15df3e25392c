"""
Hostile handlers: each attacks the dispatcher, its other children or the rest
of the machine from inside a sandboxed child.  They run in real child
processes, which import them as C{tests.integration.hostile:NAME}; under
C{SandboxProfile.untrusted()} every attack must end as an C{"error"} outcome.

Only the tests in L{tests.integration.test_sandbox_attacks} use them, and they
run the dispatcher in a session of its own, so an attack that works hurts
nothing but that dispatcher.  The attacks on everyone (C{kill(-1, ...)}) and
on the process group only send signal 0, which checks and delivers nothing.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
from typing import Any

_PR_SET_PDEATHSIG = 1


def pid(event: Any) -> int:
    """
    Answer with the child's pid: the probe that the dispatcher still serves.
    """
    return os.getpid()


def kill_parent(event: Any) -> None:
    """
    Kill the dispatcher.
    """
    os.kill(os.getppid(), signal.SIGKILL)


def kill_pid(event: dict[str, Any]) -> None:
    """
    Kill the process C{event["pid"]}: one that has nothing to do with us.
    """
    os.kill(event["pid"], signal.SIGKILL)


def kill_siblings(event: dict[str, Any]) -> list[int]:
    """
    Kill every process of C{event["pids"]} but this one: the pool's other
    children.  Answers with those it killed, had it worked.
    """
    killed = []
    for other in event["pids"]:
        if other != os.getpid():
            os.kill(other, signal.SIGKILL)
            killed.append(other)
    return killed


def signal_everyone(event: Any) -> None:
    """
    Reach every process on the machine (signal 0: a check only).
    """
    os.kill(-1, 0)


def signal_group(event: Any) -> None:
    """
    Reach every process of our process group, the dispatcher's (signal 0).
    """
    os.kill(0, 0)


def clear_parent_death_signal(event: Any) -> None:
    """
    Clear the parent-death signal, to outlive the dispatcher.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, 0, 0, 0, 0) == -1:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


def connect_unix(event: dict[str, Any]) -> None:
    """
    Connect to the UNIX socket C{event["path"]} (the dispatcher's own AMP
    endpoint, say) and talk to it.
    """
    with socket.socket(socket.AF_UNIX) as client:
        client.connect(event["path"])
        client.sendall(b"hello from a handler\n")


def read_parent_environ(event: Any) -> str:
    """
    Read the dispatcher's environment, with its secrets.
    """
    with open(f"/proc/{os.getppid()}/environ", "rb") as environ:
        return environ.read().decode(errors="replace")


def descriptors(event: Any) -> dict[str, str]:
    """
    Not an attack: what the child's descriptors are (the AMP channels must be
    pipes, since the child may make no socket).
    """
    from actordispatch.children.sandbox import describe_sandbox

    targets: dict[str, str] = describe_sandbox()["fd_targets"]
    return targets
