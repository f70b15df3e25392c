"""
Harmless attacks, tried from inside a child by C{actordispatch sandbox-check}:
each does what a hostile handler would, with nothing at stake (signal 0, which
only asks whether a signal would be allowed; a socket that is closed at once; a
file that is removed at once; a fork that exits at once), and reports whether
the sandbox stopped it.

Run as the handler C{actordispatch.children.probes:probe}; its event is
C{{"parent_pid": N, "writable_paths": [...] or None}}.
"""

from __future__ import annotations

import ctypes
import errno
import os
import signal
import socket
import tempfile
from collections.abc import Callable
from typing import Any

_PR_SET_PDEATHSIG = 1
_PR_GET_PDEATHSIG = 2


def _refused(call: Callable[[], object]) -> str:
    """
    C{"blocked (ERRNO)"} if C{call} fails as a sandbox makes it fail, else
    C{"ALLOWED"} (or what else went wrong).
    """
    try:
        call()
    except OSError as error:
        name = errno.errorcode.get(error.errno or 0, str(error.errno))
        # ENOENT, ESRCH: the target is hidden from this process.
        if error.errno in (
            errno.EPERM,
            errno.EACCES,
            errno.ENOSYS,
            errno.ESRCH,
            errno.ENOENT,
        ):
            return f"blocked ({name})"
        return f"failed otherwise ({name}: {error.strerror})"
    return "ALLOWED"


def _socket(family: int) -> None:
    socket.socket(family, socket.SOCK_STREAM).close()


def _read_environ(pid: int) -> None:
    with open(f"/proc/{pid}/environ", "rb") as environ:
        environ.read(1)


def _write_outside(writable: list[str] | None) -> str:
    allowed = [os.path.realpath(path) for path in writable or ()]
    for directory in ("/tmp", "/var/tmp", os.path.expanduser("~"), os.getcwd()):
        real = os.path.realpath(directory)
        if any(real == path or real.startswith(path + os.sep) for path in allowed):
            continue
        if os.path.isdir(real):

            def write(real: str = real) -> None:
                fd, name = tempfile.mkstemp(dir=real, prefix=".actordispatch-probe-")
                os.close(fd)
                os.unlink(name)

            return _refused(write)
    return "no directory outside the writable paths to try"


def _fork() -> None:
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)


def _clear_parent_death_signal() -> str:
    libc = ctypes.CDLL(None, use_errno=True)
    before = ctypes.c_int(0)
    libc.prctl(_PR_GET_PDEATHSIG, ctypes.byref(before), 0, 0, 0)
    if before.value == 0:
        return "no parent-death signal is set"
    if libc.prctl(_PR_SET_PDEATHSIG, 0, 0, 0, 0) != 0:
        number = ctypes.get_errno()
        return f"blocked ({errno.errorcode.get(number, str(number))})"
    libc.prctl(_PR_SET_PDEATHSIG, before.value, 0, 0, 0)  # as it was
    return "ALLOWED"


def _capabilities() -> str:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("CapEff:"):
                effective = int(line.split()[1], 16)
                return "none held" if effective == 0 else f"HELD ({effective:#x})"
    return "unknown"


def probe(event: dict[str, Any]) -> dict[str, str]:
    """
    Try each attack; say, per attack, whether it was blocked.
    """
    parent = int(event["parent_pid"])
    return {
        "signal the parent": _refused(lambda: os.kill(parent, 0)),
        "signal every process": _refused(lambda: os.kill(-1, 0)),
        "signal its process group": _refused(lambda: os.kill(0, 0)),
        "signal itself": _refused(lambda: os.kill(os.getpid(), signal.SIGCONT)),
        "open a unix socket": _refused(lambda: _socket(socket.AF_UNIX)),
        "open an inet socket": _refused(lambda: _socket(socket.AF_INET)),
        "read the parent's environment": _refused(lambda: _read_environ(parent)),
        "write outside the writable paths": _write_outside(event["writable_paths"]),
        "start a process": _refused(_fork),
        "clear its parent-death signal": _clear_parent_death_signal(),
        "hold capabilities": _capabilities(),
    }
