"""
The sandbox a child process puts itself in before any handler code is imported.

The parent describes a profile (L{actordispatch._core.sandbox.SandboxProfile}) and
sends it as a plain JSON object; the child calls L{apply_sandbox} first thing,
before Twisted or any handler is imported, and sends back the report it returns.
Every layer that was asked for appears in that report as C{"applied"}, or as
C{"failed: ..."} / C{"unavailable: ..."} with the reason: a layer is never
skipped silently, so the parent can refuse or log loudly.  L{describe_sandbox}
reads what is in force from the process itself, not from the configuration, so
that tests (and the parent) check each layer from inside the child.

This module imports neither Twisted nor anything of the parent side: it runs in
a bare interpreter, and what it does not import cannot run before the sandbox.

The layers, in the order they are applied, and what each one does and does not
protect against:

  - C{drop_privileges} (C{uid}, C{gid}; only when running as root): clears the
    supplementary groups, then sets the group and the user, real, effective and
    saved, so they cannot be taken back.  It stops a handler from reading or
    writing what only root (or the parent's user) may; it does nothing against
    anything the new user may do, and it needs the parent to run as root.
  - C{parent_death_signal} (C{parent_death_signal}, C{parent_pid}): the kernel
    sends the signal (by default SIGKILL) to the child when the parent dies, so a
    hung or runaway child does not outlive a parent killed with SIGKILL.  The
    child exits at once with status 70 if the parent is already gone when the
    signal is set.  It is applied after dropping privileges because changing
    credentials clears it.  It fires when the parent I{thread} that spawned the
    child ends, so the parent must spawn children from a thread that lives as
    long as they do (the reactor thread).  It does not stop a child from
    escaping by making its own children (see C{seccomp:exec}).
  - C{no_new_privs}: C{execve} can never grant privileges again (set-user-ID
    binaries, file capabilities), so nothing a handler runs can escalate.  It
    does not limit what the child may do with the privileges it has.  The
    seccomp and Landlock layers set it as well, since the kernel demands it of
    an unprivileged process.
  - C{landlock} (C{writable_paths}): a Landlock ruleset lets the child write,
    create, remove, rename or link files only beneath the given paths; reads
    and execution stay allowed everywhere.  It stops a handler from tampering
    with code, configuration or data outside those paths, whatever its user may
    do.  It does not cover files opened before it was applied (the AMP pipes,
    stdout, stderr), does not hide anything from reading, and leaves ioctl on
    devices, signals and abstract UNIX sockets alone.
  - C{rlimit:*} (C{rlimits}): C{address_space} (RLIMIT_AS) makes a runaway
    allocation fail with C{MemoryError} instead of dragging the machine into
    swap, but it counts address space, not resident memory, and does nothing
    against a fork bomb; C{cpu_seconds} (RLIMIT_CPU) kills the child once it
    has used that much CPU I{in its whole life}, a budget for a child, not a
    timeout for one handler (use the pool's timeouts for that), and it does not
    count time spent blocked; C{open_files} (RLIMIT_NOFILE) bounds descriptor
    leaks; C{file_size} (RLIMIT_FSIZE) makes writing a file past that size fail
    with C{EFBIG} (CPython ignores SIGXFSZ), not the number of files or pipes;
    C{core_size} 0 (RLIMIT_CORE) stops a crashing child from dumping its memory,
    with whatever secrets or events it held, to disk.  Hard limits are lowered
    to the soft ones, so the child cannot raise them again; a hard limit is
    never raised above what the child inherited.  They come after Landlock so
    that a low C{open_files} cannot stop the ruleset from being built.
  - C{drop_capabilities}: every capability goes, even from a child that stays
    root: with CAP_SETPCAP, the securebits that make root special (on
    C{execve} and uid changes) are turned off and locked and the bounding set
    is emptied; then the ambient set is cleared and capset(2) empties the
    effective, permitted and inheritable sets; no_new_privs is set too.  It
    stops a root child from overriding file permissions, killing or tracing
    processes of other users, changing user, raising its hard limits,
    mounting, loading modules and the like.  It comes after everything that
    needs privileges (C{drop_privileges}, the private /proc of
    C{hide_processes}, the rlimits) and before seccomp.  Without CAP_SETPCAP
    (not root) the bounding set cannot be emptied; nothing is held then, and
    no_new_privs keeps C{execve} from granting anything.  Capabilities belong
    to a thread: it fails with more than one running.
  - C{hide_processes}: before anything drops privileges, the child moves to
    a mount namespace of its own (mounts propagate in from the host, never
    out) and mounts a fresh C{/proc} with C{hidepid=ptraceable}; later it
    enters a Landlock domain, which makes every process outside it
    unptraceable for the child, whatever its credentials.  Together: the
    parent, siblings and every other process vanish from C{/proc}, so their
    environ, cmdline, status, maps and descriptors cannot be read.  The
    layer checks that the parent's entry is gone.  The private C{/proc}
    needs CAP_SYS_ADMIN (a parent running as root) and Linux 5.8; without it
    the layer is C{"unavailable"}, though the Landlock domain still keeps
    other processes' environ, maps and descriptors out of reach (their
    cmdline and status stay readable).  A root child that keeps its
    capabilities could unmount the private C{/proc}, and CAP_SYS_PTRACE sees
    through the Landlock check for some files: ask for C{drop_capabilities}
    too.  No PID namespace: that needs a fork before the
    child starts, which this module, running inside it, cannot do.
  - C{confine_signals}: the child may signal only itself.  A seccomp filter
    refuses C{kill}, C{tgkill}, C{tkill}, C{rt_sigqueueinfo} and
    C{rt_tgsigqueueinfo} unless the target is the child's own pid (so
    C{kill(0, ...)}, C{kill(-1, ...)} and process groups are refused),
    C{pidfd_send_signal} always, and making another process the owner of a
    file (C{F_SETOWN}, C{F_SETOWN_EX}, C{FIOSETOWN}, C{SIOCSPGRP}), which
    would signal it on I/O; Landlock's signal scope (ABI 6, Linux 6.12) refuses
    any signal to a process outside the child's domain beneath that.  It also
    refuses C{prctl(PR_SET_PDEATHSIG, ...)}, so the parent-death signal stays
    as set, and C{setsid}/C{setpgid}.  Signals to the child itself and its
    threads work, so Python's and Twisted's own signal handling does.  The
    two halves are applied even when the other is missing, and the report
    says which one is in force.
  - C{socket_families} (a list of allowed address families): C{socket()} and
    C{socketpair()} fail with C{EPERM} for any other family, C{AF_UNIX}
    included when not listed, and C{io_uring_setup} fails; Landlock (ABI 6)
    scopes abstract UNIX sockets, so even with C{AF_UNIX} allowed the child
    cannot connect to an abstract socket outside its domain.  An empty list
    forbids every socket: no connecting to the dispatcher's own C{unix:}
    endpoint or any local daemon.  The child's AMP channels to its parent
    are pipes, not sockets, so it keeps working.  Like C{confine_signals},
    both halves are applied when they can be and the report says which.
  - C{seccomp:network} (C{deny_network}): C{socket()} and C{socketpair()} fail
    with C{EPERM} for every address family except C{AF_UNIX}, and
    C{io_uring_setup} fails too, since io_uring can make sockets behind
    seccomp's back.  It stops a handler from opening connections to the network
    or listening on it.  It does not stop exfiltration over descriptors the
    child already holds (the AMP pipe to the parent, stdout, stderr), nor
    connecting to UNIX sockets of local daemons.
  - C{seccomp:exec} (C{deny_exec}): C{execve} and C{execveat} fail with
    C{EPERM}, and so does creating a process: C{fork}, C{vfork}, and C{clone}
    without C{CLONE_THREAD}.  C{clone3} fails with C{ENOSYS}, which makes glibc
    fall back to C{clone}, whose flags a filter can see: threads (C{clone} with
    C{CLONE_THREAD}) keep working, so Python threads and thread pools are
    unaffected.  It stops a handler from running other programs (and so from
    escaping the interpreter-level limits and from fork bombs); it does not stop
    anything the interpreter can do in-process, such as loading a shared
    library with ctypes.

Against a handler that attacks the sandbox rather than merely misbehaving, the
layers that hold are seccomp, Landlock and no_new_privs (not even root can lift
them) and, once the child is no longer root or has dropped its capabilities,
the dropped user and the hard resource limits.  Without C{drop_capabilities} a
child that stays root keeps CAP_SYS_RESOURCE and may raise its limits again;
without C{confine_signals} any child may clear its own parent-death signal.
Those guard against accidents, not attacks.  A child that drops to another
user must still be able to read the interpreter, Twisted and the handlers'
code as that user, since all of them are imported after the drop.

Every seccomp filter is synchronised to every thread of the process, and a
system call made with another architecture's convention (32-bit C{int 0x80} on
x86-64, for instance) kills the process, so the filters cannot be sidestepped
that way; an argument the kernel reads as a C int is compared on its low 32
bits only, or refused unless it equals what is allowed, so junk in the high
bits does not slip past either.  The per-thread layers (C{no_new_privs},
C{landlock}, C{drop_capabilities} and the Landlock halves of the others) are
reported as failed when the process already runs more than one thread: apply
the sandbox before anything starts a thread.

C{"deny_network"}, C{"deny_exec"} and the seccomp halves of
C{"confine_signals"} and C{"socket_families"} use libseccomp through the
C{pyseccomp} package (C{pip install 'actordispatch[sandbox]'}); without either
they are reported C{"unavailable: ..."}.  Landlock is spoken to directly through its
three system calls, which need nothing beyond the kernel.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import os
import resource
import socket
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

__all__ = ["apply_sandbox", "describe_sandbox", "requested_layers", "APPLIED"]

#: The status of a layer that is in force.
APPLIED = "applied"

#: The exit status of a child that found its parent already dead (EX_SOFTWARE).
PARENT_GONE_EXIT = 70

#: The resource limits a configuration can set, by their configuration name.
RLIMITS: dict[str, int] = {
    "address_space": resource.RLIMIT_AS,
    "cpu_seconds": resource.RLIMIT_CPU,
    "open_files": resource.RLIMIT_NOFILE,
    "file_size": resource.RLIMIT_FSIZE,
    "core_size": resource.RLIMIT_CORE,
}

#: The top-level configuration keys L{apply_sandbox} understands.
CONFIG_KEYS = frozenset(
    {
        "private_proc_mounted",
        "rlimits",
        "no_new_privs",
        "parent_death_signal",
        "parent_pid",
        "uid",
        "gid",
        "deny_network",
        "deny_exec",
        "writable_paths",
        "drop_capabilities",
        "hide_processes",
        "confine_signals",
        "socket_families",
    }
)

# prctl(2) options.
_PR_SET_PDEATHSIG = 1
_PR_GET_PDEATHSIG = 2
_PR_CAPBSET_DROP = 24
_PR_SET_SECUREBITS = 28
_PR_SET_NO_NEW_PRIVS = 38
_PR_GET_NO_NEW_PRIVS = 39
_PR_CAP_AMBIENT = 47
_PR_CAP_AMBIENT_CLEAR_ALL = 4

# Capabilities: capset(2)'s version, and the two the sandbox itself needs.
_LINUX_CAPABILITY_VERSION_3 = 0x20080522
_CAP_SETPCAP = 8
_CAP_SYS_ADMIN = 21
# Securebits: root is never special again (on execve or uid changes), ambient
# capabilities can never be raised, and all of it is locked.
_SECURE_NOROOT = (1 << 0) | (1 << 1)
_SECURE_NO_SETUID_FIXUP = (1 << 2) | (1 << 3)
_SECURE_KEEP_CAPS_LOCKED = 1 << 5
_SECURE_NO_CAP_AMBIENT_RAISE = (1 << 6) | (1 << 7)

# Mount namespace and a private /proc.
_CLONE_NEWNS = 0x00020000
_MS_NOSUID = 1 << 1
_MS_NODEV = 1 << 2
_MS_NOEXEC = 1 << 3
_MS_REC = 1 << 14
_MS_SLAVE = 1 << 19

# Landlock: the system call numbers are the same on every architecture.
_SYS_LANDLOCK_CREATE_RULESET = 444
_SYS_LANDLOCK_ADD_RULE = 445
_SYS_LANDLOCK_RESTRICT_SELF = 446
_LANDLOCK_CREATE_RULESET_VERSION = 1 << 0
_LANDLOCK_RULE_PATH_BENEATH = 1
_FS_WRITE_FILE = 1 << 1
_FS_REMOVE_DIR = 1 << 4
_FS_REMOVE_FILE = 1 << 5
_FS_MAKE_CHAR = 1 << 6
_FS_MAKE_DIR = 1 << 7
_FS_MAKE_REG = 1 << 8
_FS_MAKE_SOCK = 1 << 9
_FS_MAKE_FIFO = 1 << 10
_FS_MAKE_BLOCK = 1 << 11
_FS_MAKE_SYM = 1 << 12
_FS_REFER = 1 << 13  # Landlock ABI 2
_FS_TRUNCATE = 1 << 14  # Landlock ABI 3
_SCOPE_ABSTRACT_UNIX_SOCKET = 1 << 0  # Landlock ABI 6
_SCOPE_SIGNAL = 1 << 1  # Landlock ABI 6
_LANDLOCK_SCOPE_ABI = 6

# seccomp: the clone(2) flag that makes a thread rather than a process.
_CLONE_THREAD = 0x00010000
# io_uring_setup(2), for a libseccomp too old to know its name (same number on
# every architecture but alpha).
_NR_IO_URING_SETUP = 425
# The ways to have the kernel signal another process on one's behalf: fcntl's
# F_SETOWN (checked against the own pid) and F_SETOWN_EX (always refused), and
# the same through ioctl.
_F_SETOWN = 8
_F_SETOWN_EX = 15
_FIOSETOWN = 0x8901
_SIOCSPGRP = 0x8902
# Arguments that the kernel reads as a C int: a filter must compare only their
# low 32 bits, or a value with junk in the high bits would slip past.
_INT_MASK = 0xFFFFFFFF
# Address families are below this (AF_MAX is 46 on Linux 6.x); the kernel
# refuses anything at or above AF_MAX itself.
_FAMILY_LIMIT = 64


#: A seccomp rule: the action, the system call (name or number), the argument
#: conditions.
_Rule = tuple[int, Any, tuple[Any, ...]]


class _LayerError(Exception):
    """
    A layer was not applied; the message is the reason, and C{status} says
    whether it failed or cannot be had on this machine at all.
    """

    def __init__(self, reason: str, status: str = "failed") -> None:
        super().__init__(reason)
        self.status = status


def _unavailable(reason: str) -> _LayerError:
    return _LayerError(reason, "unavailable")


@functools.cache
def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl.argtypes = [ctypes.c_int] + [ctypes.c_ulong] * 4
    libc.prctl.restype = ctypes.c_int
    libc.syscall.restype = ctypes.c_long
    return libc


def _prctl(option: int, argument: int = 0) -> int:
    """
    Call prctl(2), raising C{OSError} when it fails.
    """
    ctypes.set_errno(0)
    result: int = _libc().prctl(option, argument, 0, 0, 0)
    if result == -1:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))
    return result


def _syscall(number: int, *arguments: Any) -> int:
    """
    Make a raw system call, raising C{OSError} when it fails.  Integers are
    passed as C{long}: syscall(2) reads every argument as one.
    """
    wide = [ctypes.c_long(a) if isinstance(a, int) else a for a in arguments]
    ctypes.set_errno(0)
    result: int = _libc().syscall(ctypes.c_long(number), *wide)
    if result == -1:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))
    return result


def _status_field(name: str) -> str | None:
    """
    Read a field of C{/proc/self/status}, or C{None} if it is not there.
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                key, _, value = line.partition(":")
                if key == name:
                    return value.strip()
    except OSError:
        return None
    return None


def _thread_count() -> int:
    threads = _status_field("Threads")
    return int(threads) if threads is not None else 1


def _require_single_thread() -> None:
    count = _thread_count()
    if count > 1:
        raise _LayerError(
            f"{count} threads are running and this layer binds only the calling"
            " one; apply the sandbox before anything starts a thread"
        )


def _is_flag_set(config: Mapping[str, Any], key: str) -> bool:
    """
    Whether a boolean option is asked for: C{true}; C{false}, C{null} or absent
    are not; anything else is a mistake that must not pass as "not asked".
    """
    value = config.get(key)
    return value is not None and value is not False


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def requested_layers(config: Mapping[str, Any]) -> list[str]:
    """
    Name the layers a configuration asks for, in the order L{apply_sandbox}
    applies them: these, and only these, are the keys of its report (unknown
    configuration keys are reported under their own name, first).

    @param config: a sandbox configuration, as L{apply_sandbox} takes it.
    @return: the layer names.
    """
    layers = sorted(key for key in config if key not in CONFIG_KEYS)
    if config.get("uid") is not None or config.get("gid") is not None:
        layers.append("drop_privileges")
    if config.get("parent_death_signal") is not None:
        layers.append("parent_death_signal")
    if _is_flag_set(config, "no_new_privs"):
        layers.append("no_new_privs")
    if config.get("writable_paths") is not None:
        layers.append("landlock")
    rlimits = config.get("rlimits")
    if isinstance(rlimits, Mapping):
        layers.extend(f"rlimit:{name}" for name in rlimits)
    elif rlimits is not None:
        layers.append("rlimits")
    for key in ("drop_capabilities", "hide_processes", "confine_signals"):
        if _is_flag_set(config, key):
            layers.append(key)
    if config.get("socket_families") is not None:
        layers.append("socket_families")
    if _is_flag_set(config, "deny_network"):
        layers.append("seccomp:network")
    if _is_flag_set(config, "deny_exec"):
        layers.append("seccomp:exec")
    return layers


def apply_sandbox(config: Mapping[str, Any]) -> dict[str, str]:
    """
    Put this process in the sandbox a configuration asks for.

    Call it first thing in the child, before Twisted or any handler is imported
    and before any thread is started.  A layer that cannot be applied does not
    stop the others: the report says which ones are in force and the parent
    decides.

    @param config: the JSON object made by
        L{actordispatch._core.sandbox.SandboxProfile.to_child_config}, with optional
        keys C{"rlimits"} (an object with any of C{"address_space"},
        C{"cpu_seconds"}, C{"open_files"}, C{"file_size"}, C{"core_size"}),
        C{"no_new_privs"}, C{"parent_death_signal"} with C{"parent_pid"},
        C{"uid"} with C{"gid"}, C{"deny_network"}, C{"deny_exec"},
        C{"writable_paths"}, C{"drop_capabilities"}, C{"hide_processes"},
        C{"confine_signals"} and C{"socket_families"} (a list of address
        family numbers).
    @return: per requested layer (see L{requested_layers}), C{"applied"},
        C{"failed: <reason>"} or C{"unavailable: <reason>"}; layers that were
        not requested are left out.
    """
    report: dict[str, str] = {}

    @contextmanager
    def layer(name: str) -> Iterator[None]:
        try:
            yield
        except _LayerError as error:
            report[name] = f"{error.status}: {error}"
        except Exception as error:  # any surprise is a failed layer, not a crash
            report[name] = f"failed: {type(error).__name__}: {error}"
        else:
            report[name] = APPLIED

    for key in sorted(config):
        if key not in CONFIG_KEYS:
            report[key] = "failed: unknown sandbox option"

    wants_seccomp = (
        any(
            _is_flag_set(config, key)
            for key in ("deny_network", "deny_exec", "confine_signals")
        )
        or config.get("socket_families") is not None
    )
    # Load libseccomp now, while we may still run ldconfig and allocate freely.
    seccomp: Any = None
    seccomp_problem: _LayerError | None = None
    if wants_seccomp:
        try:
            seccomp = _load_seccomp()
        except _LayerError as error:
            seccomp_problem = error

    # The private /proc needs CAP_SYS_ADMIN: mount it before anything drops it.
    # The layer is reported later, once its Landlock part is in force too.
    private_proc_problem: _LayerError | None = None
    if _is_flag_set(config, "hide_processes") and config["hide_processes"] is True:
        try:
            # A fork server's template mounts it once for all its children.
            if not (config.get("private_proc_mounted") is True and proc_hides_pids()):
                mount_private_proc()
        except _LayerError as error:
            private_proc_problem = error
        except OSError as error:
            private_proc_problem = _LayerError(f"private /proc: {error}")

    if config.get("uid") is not None or config.get("gid") is not None:
        with layer("drop_privileges"):
            _drop_privileges(config.get("uid"), config.get("gid"))

    if config.get("parent_death_signal") is not None:
        with layer("parent_death_signal"):
            _set_parent_death_signal(
                config["parent_death_signal"], config.get("parent_pid")
            )

    if _is_flag_set(config, "no_new_privs"):
        with layer("no_new_privs"):
            if config["no_new_privs"] is not True:
                raise _LayerError("no_new_privs must be true or false")
            _require_single_thread()
            _prctl(_PR_SET_NO_NEW_PRIVS, 1)

    if config.get("writable_paths") is not None:
        with layer("landlock"):
            _restrict_writes(config["writable_paths"])

    rlimits = config.get("rlimits")
    if isinstance(rlimits, Mapping):
        for name, value in rlimits.items():
            with layer(f"rlimit:{name}"):
                _set_rlimit(name, value)
    elif rlimits is not None:
        report["rlimits"] = "failed: rlimits must be an object"

    if _is_flag_set(config, "drop_capabilities"):
        with layer("drop_capabilities"):
            if config["drop_capabilities"] is not True:
                raise _LayerError("drop_capabilities must be true or false")
            _drop_capabilities()

    if _is_flag_set(config, "hide_processes"):
        with layer("hide_processes"):
            if config["hide_processes"] is not True:
                raise _LayerError("hide_processes must be true or false")
            _hide_processes(private_proc_problem)

    if _is_flag_set(config, "confine_signals"):
        with layer("confine_signals"):
            if config["confine_signals"] is not True:
                raise _LayerError("confine_signals must be true or false")
            _confine_signals(seccomp, seccomp_problem)

    if config.get("socket_families") is not None:
        with layer("socket_families"):
            _confine_sockets(seccomp, seccomp_problem, config["socket_families"])

    filters: list[tuple[str, str, Callable[[Any], list[_Rule]]]] = [
        ("deny_network", "seccomp:network", _network_rules),
        ("deny_exec", "seccomp:exec", _exec_rules),
    ]
    for key, name, rules in filters:
        if _is_flag_set(config, key):
            with layer(name):
                if config[key] is not True:
                    raise _LayerError(f"{key} must be true or false")
                if seccomp_problem is not None:
                    raise seccomp_problem
                _load_filter(seccomp, rules(seccomp))

    return report


def _drop_privileges(uid: Any, gid: Any) -> None:
    if uid is None or gid is None:
        raise _LayerError("uid and gid must be given together")
    if not (_is_int(uid) and _is_int(gid) and uid >= 0 and gid >= 0):
        raise _LayerError(f"uid and gid must be non-negative integers: {uid}, {gid}")
    if os.geteuid() != 0:
        raise _LayerError("not root")
    # Groups first, then the group, then the user: once the user is dropped
    # there is no right left to change the groups.
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    if (
        os.getresuid() != (uid, uid, uid)
        or os.getresgid() != (gid, gid, gid)
        or os.getgroups()
    ):
        raise _LayerError("credentials did not change as asked")


def _set_parent_death_signal(signal_number: Any, parent_pid: Any) -> None:
    if not _is_int(signal_number) or not 0 < signal_number <= 64:
        raise _LayerError(f"not a signal number: {signal_number!r}")
    _prctl(_PR_SET_PDEATHSIG, signal_number)
    if not _is_int(parent_pid):
        raise _LayerError(
            "signal set, but parent_pid was not given: a parent that died before"
            " this point goes unnoticed"
        )
    # The parent may have died before the signal was set: nobody would tell us.
    if os.getppid() != parent_pid:
        try:
            os.write(2, b"actordispatch child: parent is gone, exiting\n")
        finally:
            os._exit(PARENT_GONE_EXIT)


def _set_rlimit(name: str, value: Any) -> None:
    if name not in RLIMITS:
        raise _LayerError("unknown limit")
    if not _is_int(value) or value < 0:
        raise _LayerError(f"must be a non-negative integer, not {value!r}")
    which = RLIMITS[name]
    _, hard = resource.getrlimit(which)
    # Never ask for more than the inherited hard limit: that needs privileges
    # and would be refused, and the lower limit is stricter anyway.
    limit = value if hard == resource.RLIM_INFINITY else min(value, hard)
    resource.setrlimit(which, (limit, limit))
    if resource.getrlimit(which) != (limit, limit):
        raise _LayerError("the limit did not change as asked")


def _landlock_abi() -> int:
    try:
        return _syscall(
            _SYS_LANDLOCK_CREATE_RULESET, None, 0, _LANDLOCK_CREATE_RULESET_VERSION
        )
    except OSError as error:
        if error.errno == errno.EOPNOTSUPP:
            raise _unavailable("kernel has no Landlock (disabled at boot)") from None
        raise _unavailable(f"kernel has no Landlock ({error.strerror})") from None


class _RulesetAttr(ctypes.Structure):
    _fields_ = [("handled_access_fs", ctypes.c_uint64)]


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1  # packed in the kernel's UAPI header
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


def _restrict_writes(paths: Any) -> None:
    """
    Allow writes only beneath C{paths}; a path that cannot be opened is left out,
    which makes the ruleset stricter than asked, and the layer is reported
    failed.
    """
    if isinstance(paths, str) or not isinstance(paths, list | tuple):
        raise _LayerError("writable_paths must be a list of paths")
    abi = _landlock_abi()
    _require_single_thread()
    file_rights = _FS_WRITE_FILE | (_FS_TRUNCATE if abi >= 3 else 0)
    tree_rights = (
        file_rights
        | _FS_REMOVE_DIR
        | _FS_REMOVE_FILE
        | _FS_MAKE_CHAR
        | _FS_MAKE_DIR
        | _FS_MAKE_REG
        | _FS_MAKE_SOCK
        | _FS_MAKE_FIFO
        | _FS_MAKE_BLOCK
        | _FS_MAKE_SYM
        | (_FS_REFER if abi >= 2 else 0)
    )
    ruleset_attr = _RulesetAttr(tree_rights)
    ruleset = _syscall(
        _SYS_LANDLOCK_CREATE_RULESET,
        ctypes.byref(ruleset_attr),
        ctypes.c_size_t(ctypes.sizeof(ruleset_attr)),
        0,
    )
    left_out = []
    try:
        for path in paths:
            try:
                target = os.open(path, os.O_PATH | os.O_CLOEXEC)
            except (OSError, TypeError, ValueError) as error:
                left_out.append(f"{path!r} ({getattr(error, 'strerror', error)})")
                continue
            try:
                rights = tree_rights if os.path.isdir(target) else file_rights
                rule = _PathBeneathAttr(rights, target)
                _syscall(
                    _SYS_LANDLOCK_ADD_RULE,
                    ruleset,
                    _LANDLOCK_RULE_PATH_BENEATH,
                    ctypes.byref(rule),
                    0,
                )
            finally:
                os.close(target)
        _prctl(_PR_SET_NO_NEW_PRIVS, 1)
        _syscall(_SYS_LANDLOCK_RESTRICT_SELF, ruleset, 0)
    finally:
        os.close(ruleset)
    if left_out:
        raise _LayerError(
            "ruleset applied without the writable paths it could not open,"
            f" so stricter than asked: {', '.join(left_out)}"
        )


class _ScopedRulesetAttr(ctypes.Structure):
    # struct landlock_ruleset_attr as of ABI 6: the kernel takes the longer
    # struct as long as what it does not know is zero.
    _fields_ = [
        ("handled_access_fs", ctypes.c_uint64),
        ("handled_access_net", ctypes.c_uint64),
        ("scoped", ctypes.c_uint64),
    ]


def _enter_landlock_domain(ruleset_attr: ctypes.Structure) -> None:
    """
    Make a ruleset with no rules from C{ruleset_attr} and restrict this thread
    with it.
    """
    ruleset = _syscall(
        _SYS_LANDLOCK_CREATE_RULESET,
        ctypes.byref(ruleset_attr),
        ctypes.c_size_t(ctypes.sizeof(ruleset_attr)),
        0,
    )
    try:
        _prctl(_PR_SET_NO_NEW_PRIVS, 1)
        _syscall(_SYS_LANDLOCK_RESTRICT_SELF, ruleset, 0)
    finally:
        os.close(ruleset)


def _landlock_scope(scopes: int, what: str) -> None:
    """
    Enter a Landlock domain scoped by C{scopes}: signals, or connections to
    abstract UNIX sockets, may then reach only this process and those in a
    domain nested in its own.
    """
    abi = _landlock_abi()
    if abi < _LANDLOCK_SCOPE_ABI:
        raise _unavailable(
            f"Landlock scoping of {what} needs ABI {_LANDLOCK_SCOPE_ABI}"
            f" (Linux 6.12); this kernel has ABI {abi}"
        )
    _require_single_thread()
    _enter_landlock_domain(_ScopedRulesetAttr(0, 0, scopes))


def _capability_sets() -> dict[str, int]:
    """
    Read this thread's capability sets from C{/proc/self/status}.
    """
    sets = {}
    for name in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        value = _status_field(name)
        sets[name] = int(value, 16) if value is not None else -1
    return sets


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    ]


def _last_capability() -> int:
    try:
        with open("/proc/sys/kernel/cap_last_cap") as last:
            return int(last.read())
    except (OSError, ValueError):
        return 63  # PR_CAPBSET_DROP refuses, with EINVAL, what does not exist


def _drop_capabilities() -> None:
    """
    Drop every capability, for good: the bounding set (when the thread may),
    the ambient set, then the effective, permitted and inheritable sets, with
    securebits that stop root from ever being special again and no_new_privs,
    so that no C{execve} can give any back.
    """
    _require_single_thread()
    libc = _libc()
    effective = _capability_sets()["CapEff"]
    _prctl(_PR_SET_NO_NEW_PRIVS, 1)
    may_set_caps = effective != -1 and bool(effective & (1 << _CAP_SETPCAP))
    if may_set_caps:
        _prctl(
            _PR_SET_SECUREBITS,
            _SECURE_NOROOT
            | _SECURE_NO_SETUID_FIXUP
            | _SECURE_KEEP_CAPS_LOCKED
            | _SECURE_NO_CAP_AMBIENT_RAISE,
        )
        for capability in range(_last_capability() + 1):
            try:
                _prctl(_PR_CAPBSET_DROP, capability)
            except OSError as error:
                if error.errno != errno.EINVAL:  # unknown to this kernel
                    raise
    try:
        ctypes.set_errno(0)
        if libc.prctl(_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) == -1:
            code = ctypes.get_errno()
            raise OSError(code, os.strerror(code))
    except OSError as error:
        if error.errno != errno.EINVAL:  # a kernel without ambient capabilities
            raise
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    ctypes.set_errno(0)
    if libc.capset(ctypes.byref(header), data) == -1:
        code = ctypes.get_errno()
        raise OSError(code, f"capset: {os.strerror(code)}")
    sets = _capability_sets()
    held = {name: value for name, value in sets.items() if value and name != "CapBnd"}
    if held:
        raise _LayerError(f"capabilities still held: {held}")
    if sets["CapBnd"] and may_set_caps:
        raise _LayerError(f"bounding set not emptied: {sets['CapBnd']:x}")
    # Without CAP_SETPCAP the bounding set stays, but nothing is held and
    # no_new_privs keeps execve from granting anything within it.


def proc_hides_pids() -> bool:
    """
    Whether this process's C{/proc} is mounted with C{hidepid=ptraceable}
    (see L{mount_private_proc}).
    """
    try:
        with open("/proc/self/mountinfo") as mountinfo:
            lines = [line.split() for line in mountinfo]
    except OSError:
        return False
    mounted = [line for line in lines if len(line) > 4 and line[4] == "/proc"]
    if not mounted:
        return False
    options = mounted[-1][-1].split(",")  # the last mount hides the others
    return "hidepid=ptraceable" in options or "hidepid=4" in options


def mount_private_proc() -> None:
    """
    Move into a mount namespace of our own and mount a fresh C{/proc} there
    with C{hidepid=ptraceable}: a process this one may not ptrace has no
    entry in it at all.  Needs CAP_SYS_ADMIN, so it comes before any drop.
    """
    effective = _capability_sets()["CapEff"]
    if effective == -1 or not effective & (1 << _CAP_SYS_ADMIN):
        raise _unavailable(
            "a private /proc needs CAP_SYS_ADMIN (a parent running as root);"
            " other processes' cmdline and status stay readable"
        )
    _require_single_thread()
    libc = _libc()

    def call(what: str, result: int) -> None:
        if result == -1:
            code = ctypes.get_errno()
            raise OSError(code, f"{what}: {os.strerror(code)}")

    ctypes.set_errno(0)
    call("unshare(CLONE_NEWNS)", libc.unshare(_CLONE_NEWNS))
    # Slave, not private: unmounts on the host still reach us, and nothing
    # mounted here reaches the host.
    call(
        "make / a slave mount", libc.mount(None, b"/", None, _MS_REC | _MS_SLAVE, None)
    )
    result = libc.mount(
        b"proc",
        b"/proc",
        b"proc",
        _MS_NOSUID | _MS_NODEV | _MS_NOEXEC,
        b"hidepid=ptraceable",
    )
    if result == -1 and ctypes.get_errno() == errno.EINVAL:
        raise _unavailable("this kernel's /proc has no hidepid=ptraceable (Linux 5.8)")
    call("mount /proc", result)


def _hide_processes(private_proc_problem: _LayerError | None) -> None:
    """
    Enter a Landlock domain, which makes every process outside it
    unptraceable for this one, whatever its credentials; with the private
    C{/proc} mounted earlier, those processes vanish from it.
    """
    _landlock_abi()
    _require_single_thread()
    # A domain that forbids nothing a handler needs (making block devices):
    # what matters is being in one, which the kernel's ptrace check consults.
    _enter_landlock_domain(_RulesetAttr(_FS_MAKE_BLOCK))
    if private_proc_problem is not None:
        raise private_proc_problem
    parent = os.getppid()
    if parent > 1 and os.path.exists(f"/proc/{parent}"):
        raise _LayerError(
            f"the parent's /proc/{parent} is still visible (a process that keeps"
            " CAP_SYS_PTRACE sees through it: ask for drop_capabilities too)"
        )


def _syscall_name(seccomp: Any, name: str, number: int) -> Any:
    """
    The name of a system call if this libseccomp knows it, else its number.
    """
    try:
        seccomp.resolve_syscall(seccomp.Arch.NATIVE, name)
    except Exception:
        return number
    return name


def _signal_rules(seccomp: Any, pid: int) -> list[_Rule]:
    eperm = seccomp.ERRNO(errno.EPERM)
    not_self = (seccomp.Arg(0, seccomp.NE, pid),)

    def int_is(argument: int, value: int) -> Any:
        return seccomp.Arg(argument, seccomp.MASKED_EQ, _INT_MASK, value)

    return [
        # Only this process, by its own pid: kill(0, ...), kill(-1, ...),
        # kill(-pgrp, ...) and every other pid are refused.
        (eperm, "kill", not_self),
        (eperm, "tgkill", not_self),
        (eperm, "tkill", not_self),
        (eperm, "rt_sigqueueinfo", not_self),
        (eperm, "rt_tgsigqueueinfo", not_self),
        # A pidfd does not say whose it is where a filter can see.
        (eperm, _syscall_name(seccomp, "pidfd_send_signal", 424), ()),
        # SIGIO and SIGURG to another process, through a file's owner.
        (eperm, "fcntl", (int_is(1, _F_SETOWN), seccomp.Arg(2, seccomp.NE, pid))),
        (eperm, "fcntl", (int_is(1, _F_SETOWN_EX),)),
        (eperm, "ioctl", (int_is(1, _FIOSETOWN),)),
        (eperm, "ioctl", (int_is(1, _SIOCSPGRP),)),
        # The parent-death signal stays as the sandbox set it, and the child
        # stays in its parent's session and process group.
        (eperm, "prctl", (int_is(0, _PR_SET_PDEATHSIG),)),
        (eperm, "setsid", ()),
        (eperm, "setpgid", ()),
    ]


def _apply_both(
    scope: Callable[[], None],
    seccomp: Any,
    seccomp_problem: _LayerError | None,
    rules: Callable[[Any], list[_Rule]],
) -> None:
    """
    Apply a layer's Landlock scope and its seccomp filter, each even when the
    other cannot be had, and fail the layer, saying which half is in force,
    unless both are.
    """
    try:
        scope()
    except _LayerError as error:
        landlock_problem: _LayerError | None = error
    else:
        landlock_problem = None
    if seccomp_problem is None:
        _load_filter(seccomp, rules(seccomp))
    if landlock_problem is not None and seccomp_problem is not None:
        raise _LayerError(
            f"neither half is in force: {landlock_problem}; {seccomp_problem}",
            "unavailable"
            if "unavailable" in (landlock_problem.status, seccomp_problem.status)
            else "failed",
        )
    if landlock_problem is not None:
        raise _LayerError(
            f"only the seccomp filter is in force: {landlock_problem}",
            landlock_problem.status,
        )
    if seccomp_problem is not None:
        raise _LayerError(
            f"only the Landlock scope is in force: {seccomp_problem}",
            seccomp_problem.status,
        )


def _confine_signals(seccomp: Any, seccomp_problem: _LayerError | None) -> None:
    """
    Let this process signal only itself: a seccomp filter on every system
    call that sends a signal, and Landlock's signal scope beneath it.
    """
    pid = os.getpid()
    _apply_both(
        lambda: _landlock_scope(_SCOPE_SIGNAL, "signals"),
        seccomp,
        seccomp_problem,
        lambda seccomp: _signal_rules(seccomp, pid),
    )


def _socket_rules(seccomp: Any, allowed: frozenset[int]) -> list[_Rule]:
    eperm = seccomp.ERRNO(errno.EPERM)
    rules: list[_Rule] = [
        (eperm, _syscall_name(seccomp, "io_uring_setup", _NR_IO_URING_SETUP), ())
    ]
    for call in ("socket", "socketpair"):
        if not allowed:
            rules.append((eperm, call, ()))
            continue
        # The family is a C int: compare its low 32 bits only.
        rules.extend(
            (eperm, call, (seccomp.Arg(0, seccomp.MASKED_EQ, _INT_MASK, family),))
            for family in range(_FAMILY_LIMIT)
            if family not in allowed
        )
    return rules


def _confine_sockets(
    seccomp: Any, seccomp_problem: _LayerError | None, families: Any
) -> None:
    """
    Make creating a socket fail unless its family is one of C{families}, and
    scope abstract UNIX sockets with Landlock.
    """
    if isinstance(families, str) or not isinstance(families, list | tuple):
        raise _LayerError("socket_families must be a list of address families")
    if not all(_is_int(f) and 0 <= f < _FAMILY_LIMIT for f in families):
        raise _LayerError(
            f"socket_families must be integers below {_FAMILY_LIMIT}: {families!r}"
        )
    allowed = frozenset(families)
    _apply_both(
        lambda: _landlock_scope(_SCOPE_ABSTRACT_UNIX_SOCKET, "abstract UNIX sockets"),
        seccomp,
        seccomp_problem,
        lambda seccomp: _socket_rules(seccomp, allowed),
    )


def _load_seccomp() -> Any:
    if _status_field("Seccomp") is None:
        raise _unavailable("kernel has no seccomp")
    try:
        import pyseccomp
    except ImportError:
        raise _unavailable(
            "pyseccomp is not installed (pip install 'actordispatch[sandbox]')"
        ) from None
    except Exception as error:  # pyseccomp raises RuntimeError without the library
        raise _unavailable(f"libseccomp could not be loaded: {error}") from None
    return pyseccomp


def _network_rules(seccomp: Any) -> list[_Rule]:
    eperm = seccomp.ERRNO(errno.EPERM)
    not_unix = (seccomp.Arg(0, seccomp.NE, socket.AF_UNIX),)
    try:
        seccomp.resolve_syscall(seccomp.Arch.NATIVE, "io_uring_setup")
        io_uring_setup: Any = "io_uring_setup"
    except Exception:
        io_uring_setup = _NR_IO_URING_SETUP
    return [
        (eperm, "socket", not_unix),
        (eperm, "socketpair", not_unix),
        (eperm, io_uring_setup, ()),
    ]


def _exec_rules(seccomp: Any) -> list[_Rule]:
    eperm = seccomp.ERRNO(errno.EPERM)
    makes_process = (seccomp.Arg(0, seccomp.MASKED_EQ, _CLONE_THREAD, 0),)
    return [
        (eperm, "execve", ()),
        (eperm, "execveat", ()),
        (eperm, "fork", ()),
        (eperm, "vfork", ()),
        (eperm, "clone", makes_process),
        # clone3 hides its flags in memory a filter cannot read: ENOSYS makes
        # glibc fall back to clone, which the rule above can judge.
        (seccomp.ERRNO(errno.ENOSYS), "clone3", ()),
    ]


def _load_filter(seccomp: Any, rules: list[_Rule]) -> None:
    syscall_filter = seccomp.SyscallFilter(seccomp.ALLOW)
    try:
        syscall_filter.set_attr(seccomp.Attr.ACT_BADARCH, seccomp.KILL_PROCESS)
    except OSError:
        pass  # an old kernel or libseccomp: the default kills the thread instead
    syscall_filter.set_attr(seccomp.Attr.CTL_TSYNC, 1)
    for action, syscall, arguments in rules:
        syscall_filter.add_rule(action, syscall, *arguments)
    syscall_filter.load()


def _limit_or_none(value: int) -> int | None:
    return None if value == resource.RLIM_INFINITY else value


def _open_descriptors() -> dict[str, str]:
    descriptors = {}
    for name in os.listdir("/proc/self/fd"):
        try:
            descriptors[name] = os.readlink(f"/proc/self/fd/{name}")
        except OSError:
            continue  # the descriptor listdir read with, closed by now
    return descriptors


def _inet_socket_denied() -> bool:
    try:
        probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    except OSError as error:
        return error.errno in (errno.EPERM, errno.EACCES)
    probe.close()
    return False


def describe_sandbox() -> dict[str, Any]:
    """
    Read what confines this process now, from the process itself.

    @return: a JSON-able object: C{"rlimits"} (per configuration name,
        C{[soft, hard]} with C{null} for unlimited), C{"no_new_privs"} (bool),
        C{"parent_death_signal"} (0 for none), C{"uid"}, C{"gid"}, C{"euid"},
        C{"egid"}, C{"groups"}, C{"open_fds"} (sorted numbers) and
        C{"fd_targets"} (number as a string to what it points at),
        C{"environment_names"} (names only: values may be secrets),
        C{"seccomp_mode"} (0 none, 1 strict, 2 filter; C{null} if the kernel
        does not say), C{"inet_socket_denied"} (whether creating an C{AF_INET}
        socket fails with C{EPERM}/C{EACCES}) and C{"threads"}.
    """
    signal_number = ctypes.c_int(0)
    _prctl(_PR_GET_PDEATHSIG, ctypes.addressof(signal_number))
    descriptors = _open_descriptors()
    seccomp_mode = _status_field("Seccomp")
    return {
        "rlimits": {
            name: [_limit_or_none(limit) for limit in resource.getrlimit(which)]
            for name, which in RLIMITS.items()
        },
        "no_new_privs": bool(_prctl(_PR_GET_NO_NEW_PRIVS)),
        "parent_death_signal": signal_number.value,
        "uid": os.getuid(),
        "gid": os.getgid(),
        "euid": os.geteuid(),
        "egid": os.getegid(),
        "groups": sorted(os.getgroups()),
        "open_fds": sorted(int(name) for name in descriptors),
        "fd_targets": descriptors,
        "environment_names": sorted(os.environ),
        "seccomp_mode": int(seccomp_mode) if seccomp_mode is not None else None,
        "inet_socket_denied": _inet_socket_denied(),
        "threads": _thread_count(),
    }


if __name__ == "__main__":  # pragma: no cover - a manual check
    import json

    print(json.dumps(describe_sandbox(), indent=2, sort_keys=True))
