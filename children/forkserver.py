"""
The fork server: a trusted template process that has imported what a child
needs and forks each new child on the parent's request, so that a fresh child
costs a fork (a few milliseconds) instead of a cold interpreter (0.2-0.3 s).

It never imports a handler and never runs handler code: it reads requests from
its control socket, forks, reports each fork's pid (with a pidfd, which the
parent signals through so that a reused pid can never be hit) and, later, how
the child ended.  Each forked child sets its parent-death signal, puts the
descriptors it was sent in place and becomes an ordinary child (see
L{actordispatch.children.main}): it applies its sandbox, installs its reactor
and serves.  Nothing a child does reaches the template or its siblings: the
template holds no secret (it runs with the children's explicit environment),
keeps no reactor, and the children share no descriptor with one another.

The control socket is a C{SOCK_SEQPACKET} pair, descriptor 3 of the template:

 - the parent sends C{{"id": N, "argv": [...]}} with the child's descriptors
   0 to 5 (stdin, stdout, stderr, AMP from the parent, AMP to the parent, the
   spool) attached;
 - the template answers C{{"id": N, "pid": P}} with a pidfd attached, or
   C{{"id": N, "error": "..."}};
 - when a child ends, C{{"pid": P, "code": C, "signal": S}}.

The template dies with the parent (its parent-death signal) and its children
die with it (theirs).
"""

from __future__ import annotations

import ctypes
import gc
import json
import os
import select
import signal
import socket
import sys
import traceback
from typing import Any

#: The template's end of the control socket.
CONTROL_FD = 3
#: How many descriptors a request carries: the child's 0 to 5.
CHILD_FDS = 6
#: The largest request or answer, in bytes.
MAX_MESSAGE = 1 << 20

_PR_SET_PDEATHSIG = 1

#: What the template imports before it forks anything: the child side without
#: the reactor (each child installs its own, so no reactor state is shared).
PRELOAD = (
    "twisted.internet.pollreactor",
    "twisted.internet.stdio",
    "twisted.internet.process",
    "twisted.internet.task",
    "twisted.protocols.amp",
    "twisted.logger",
    "twisted.python.reflect",
    "actordispatch._core.errors",
    "actordispatch._core.veto",
    "actordispatch._wire.codec",
    "actordispatch._wire.commands",
    "actordispatch._wire.pipes",
    "actordispatch.children.followup",
    "actordispatch.children.sandbox",
    "actordispatch.children.spool",
    "actordispatch.children.main",
)
#: Imported too where they are installed: loading libseccomp costs a child
#: about 8 ms.
OPTIONAL_PRELOAD = ("pyseccomp",)


def _preload_host() -> None:
    """
    Import the child's AMP host, which stands on ampoule's C{AMPChild}, without
    ampoule's package C{__init__}: that imports ampoule's pool, which installs
    the global reactor, and a reactor installed here (its waker's pipe
    included) would be shared by every child.  The package is entered as a bare
    namespace of its own directory, so C{ampoule.child} and
    C{ampoule.commands} load as usual; the children never use the rest.
    Importing the host costs a child about 3 ms of CPU otherwise.
    """
    import importlib.util
    import types

    if "ampoule" not in sys.modules:
        spec = importlib.util.find_spec("ampoule")
        if spec is None or not spec.submodule_search_locations:
            return
        package = types.ModuleType("ampoule")
        package.__path__ = list(spec.submodule_search_locations)
        package.__spec__ = spec
        package.__file__ = spec.origin
        sys.modules["ampoule"] = package
    import actordispatch.children.host  # noqa: F401


def _die_with_parent(parent: int) -> None:
    """
    Have the kernel kill this process when its parent ends, and end now if the
    parent is gone already.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:
        os._exit(1)


def _send(control: socket.socket, message: dict[str, Any], fds: list[int]) -> None:
    data = json.dumps(message).encode()
    try:
        socket.send_fds(control, [data], fds)
    except OSError:
        os._exit(0)  # the parent is gone


def _become_child(
    argv: list[str], fds: list[int], template: int, close: list[int]
) -> None:
    """
    In a new fork: put the descriptors in place, close everything else, and run
    the child.  Never returns.
    """
    code = 70
    try:
        _die_with_parent(template)
        for fd in close:
            os.close(fd)
        # Move the received descriptors out of the way, then onto 0..5.
        high = [os.dup(fd) for fd in fds]
        for fd in fds:
            os.close(fd)
        for target, fd in enumerate(high):
            os.dup2(fd, target, inheritable=True)
            os.close(fd)
        os.closerange(CHILD_FDS, os.sysconf("SC_OPEN_MAX"))
        sys.argv = [sys.argv[0], *argv]
        from actordispatch.children.main import main

        main(argv)
        code = 0
    except SystemExit as exit:
        code = exit.code if isinstance(exit.code, int) else 1
    except BaseException:
        try:
            traceback.print_exc()
            sys.stderr.flush()
        except BaseException:
            pass
    finally:
        os._exit(code)


def serve(control: socket.socket) -> None:
    """
    Fork children on request until the parent closes the control socket.
    """
    template = os.getpid()
    poller = select.poll()
    poller.register(control.fileno(), select.POLLIN)
    children: dict[int, int] = {}  # pidfd -> pid
    while True:
        for fd, _ in poller.poll():
            if fd != control.fileno():
                pid = children.pop(fd)
                poller.unregister(fd)
                try:
                    ended = os.waitid(os.P_PIDFD, fd, os.WEXITED)
                finally:
                    os.close(fd)
                if ended is None:
                    continue
                exited = ended.si_code == os.CLD_EXITED
                _send(
                    control,
                    {
                        "pid": pid,
                        "code": ended.si_status if exited else None,
                        "signal": None if exited else ended.si_status,
                    },
                    [],
                )
                continue
            try:
                data, fds, _, _ = socket.recv_fds(control, MAX_MESSAGE, CHILD_FDS)
            except OSError:
                os._exit(0)
            if not data:
                os._exit(0)  # the parent closed the socket: we are done
            try:
                request = json.loads(data)
                ident = request["id"]
                argv = [str(arg) for arg in request["argv"]]
                if len(fds) != CHILD_FDS:
                    raise ValueError(
                        f"expected {CHILD_FDS} descriptors, got {len(fds)}"
                    )
            except (ValueError, KeyError, TypeError) as error:
                for received in fds:
                    os.close(received)
                _send(control, {"id": None, "error": f"bad request: {error}"}, [])
                continue
            try:
                pid = os.fork()
            except OSError as error:
                for received in fds:
                    os.close(received)
                _send(control, {"id": ident, "error": f"fork failed: {error}"}, [])
                continue
            if pid == 0:
                _become_child(argv, fds, template, [control.fileno(), *children])
            for received in fds:
                os.close(received)
            pidfd = os.pidfd_open(pid)
            children[pidfd] = pid
            poller.register(pidfd, select.POLLIN)
            _send(control, {"id": ident, "pid": pid}, [pidfd])


def main() -> None:
    """
    The template's entry point: die with the parent, mount a private C{/proc}
    if asked (C{--private-proc}), import what children need, then serve
    requests on descriptor 3.
    """
    _die_with_parent(int(sys.argv[1]))
    if "--private-proc" in sys.argv[2:]:
        # Once for every child: a mount namespace with a /proc that shows a
        # process only those that may ptrace it (each child's sandbox then
        # makes that nobody but itself).
        from actordispatch.children.sandbox import mount_private_proc

        try:
            mount_private_proc()
        except Exception:  # each child then tries, and reports why not
            pass
    # A Ctrl-C meant for the parent reaches the template too: the parent
    # decides.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    import importlib

    for name in PRELOAD:
        importlib.import_module(name)
    for name in OPTIONAL_PRELOAD:
        try:
            importlib.import_module(name)
        except Exception:  # pyseccomp raises RuntimeError without libseccomp
            pass
    try:
        _preload_host()
    except Exception:  # then each child imports it, as a cold child does
        pass
    if "twisted.internet.reactor" in sys.modules:
        raise SystemExit("the fork server's template must not install a reactor")
    # What the template imported stays out of the children's collections: a
    # collection that walked it would write to (and so copy) every page the
    # fork shares.
    gc.collect()
    gc.freeze()
    control = socket.socket(fileno=CONTROL_FD)
    control.setblocking(True)
    serve(control)
