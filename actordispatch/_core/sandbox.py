"""
Sandbox profiles: what confinement a pool asks of its child processes.

A L{SandboxProfile} is a value the parent validates when it is made, so that a
mistake (a negative size, a relative path, a uid without a gid) is an error in
the user's code, not a child that silently runs unconfined.  The child applies
it (see L{actordispatch.children.sandbox}) before anything else runs, and answers with a
report of every layer it was asked for; L{missing_layers} picks out those that
are not in force, which the parent must log loudly.

The profile travels to the child as JSON (L{SandboxProfile.to_child_config});
the layers it names, and what each one does and does not protect against, are
described in L{actordispatch.children.sandbox}.
"""

from __future__ import annotations

import os
import signal
import socket
from collections.abc import Iterable, Mapping
from typing import Any

from attrs import Attribute, evolve, field, frozen

__all__ = ["SandboxProfile", "missing_layers"]

_GIB = 1024**3
_MIB = 1024**2


def _paths(value: Iterable[str] | None) -> tuple[str, ...] | None:
    """
    Make C{writable_paths} a tuple, refusing a lone string, which would
    otherwise become a tuple of one-letter paths.
    """
    if value is None:
        return None
    if isinstance(value, str | bytes):
        raise ValueError(
            f"writable_paths must be a sequence of paths, not one path: {value!r}"
        )
    return tuple(value)


def _check_writable_paths(
    instance: SandboxProfile, attribute: Attribute[Any], value: tuple[str, ...] | None
) -> None:
    for path in value or ():
        if not isinstance(path, str) or not os.path.isabs(path) or "\0" in path:
            # Relative paths would be resolved in the child's working
            # directory, which the parent does not choose.
            raise ValueError(f"writable_paths must be absolute paths, not {path!r}")


#: Address families are below this on Linux (AF_MAX is 46 in 6.x).
_FAMILY_LIMIT = 64


def _families(value: Iterable[int | str] | None) -> tuple[int, ...] | None:
    """
    Make C{allowed_socket_families} a sorted tuple of numbers, from numbers,
    C{socket.AddressFamily} members or their names (C{"AF_UNIX"}), so a TOML
    file can name them.
    """
    if value is None:
        return None
    if isinstance(value, str | bytes | int):
        raise ValueError(
            "allowed_socket_families must be a sequence of address families,"
            f" not {value!r}"
        )
    families = set()
    for family in value:
        if isinstance(family, str):
            number = getattr(socket, family, None)
            if not family.startswith("AF_") or not isinstance(number, int):
                raise ValueError(f"not an address family: {family!r}")
            family = number
        if (
            isinstance(family, bool)
            or not isinstance(family, int)
            or not 0 <= family < _FAMILY_LIMIT
        ):
            raise ValueError(f"not an address family: {family!r}")
        families.add(int(family))
    return tuple(sorted(families))


def _check_flag(
    instance: SandboxProfile, attribute: Attribute[Any], value: object
) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"{attribute.name} must be True or False, not {value!r}")


def _check_count(minimum: int) -> Any:
    """
    Make a validator of an optional integer of at least C{minimum}; C{bool}s are
    refused, since C{True} as a size is always a mistake.
    """

    def check(
        instance: SandboxProfile, attribute: Attribute[Any], value: object
    ) -> None:
        if value is None:
            return
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ValueError(
                f"{attribute.name} must be an integer of at least {minimum}"
                f" (or None for no limit), not {value!r}"
            )

    return check


#: The isolation levels, from the weakest (and fastest) to the strongest.
ISOLATION_LEVELS = ("shared", "handler", "invocation")


def _check_isolation(
    instance: SandboxProfile, attribute: Attribute[Any], value: object
) -> None:
    if value not in ISOLATION_LEVELS:
        raise ValueError(
            f"isolation must be one of {', '.join(ISOLATION_LEVELS)}, not {value!r}"
        )


def _check_signal(
    instance: SandboxProfile, attribute: Attribute[Any], value: object
) -> None:
    if value is None:
        return
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or not 0 < value <= signal.SIGRTMAX
    ):
        raise ValueError(f"parent_death_signal must be a signal number, not {value!r}")


@frozen
class SandboxProfile:
    """
    The confinement of a pool's children.  Every field left at its default
    asks for nothing, except that a child is killed when its parent dies and
    never dumps core: C{SandboxProfile()} is the profile of trusted handlers,
    L{SandboxProfile.untrusted} that of untrusted ones.

    @ivar address_space: the most address space the child may map, in bytes
        (RLIMIT_AS); C{None} for no limit.
    @ivar cpu_seconds: the CPU time the child may use in its whole life
        (RLIMIT_CPU), after which it is killed: a budget per child, not a
        timeout per handler.
    @ivar open_files: the most file descriptors the child may hold
        (RLIMIT_NOFILE).
    @ivar file_size: the largest file the child may write, in bytes
        (RLIMIT_FSIZE).
    @ivar core_dumps: whether a crashing child may dump core; off by default,
        since a core holds the events and secrets the child had in memory.
    @ivar no_new_privs: forbid the child ever to gain privileges through
        C{execve} (set-user-ID programs, file capabilities).
    @ivar parent_death_signal: the signal the kernel sends the child when the
        parent dies (SIGKILL by default), so no child outlives a parent that was
        killed; C{None} for none.
    @ivar uid: the user the child drops to; needs C{gid} and a parent running
        as root.
    @ivar gid: the group the child drops to; needs C{uid}.
    @ivar deny_network: make creating any socket but a UNIX one fail (seccomp).
    @ivar deny_exec: make running a program or creating a process fail;
        threads still work (seccomp).
    @ivar writable_paths: with Landlock, the only places beneath which the
        child may write, create or remove files; C{()} forbids writing
        anywhere, C{None} asks for no Landlock ruleset.
    @ivar drop_capabilities: drop every capability (bounding, ambient,
        effective, permitted, inheritable), even when the child stays root.
    @ivar hide_processes: a private C{/proc} showing only processes the child
        may ptrace, and a Landlock domain so that it may ptrace none outside
        it: no other process's environ, cmdline, descriptors or maps.  The
        private C{/proc} needs a parent running as root.
    @ivar confine_signals: the child may signal only itself (seccomp and
        Landlock), and may not clear its parent-death signal or leave its
        session or process group.
    @ivar allowed_socket_families: with seccomp, the only address families
        the child may create sockets of (numbers, or names such as
        C{"AF_UNIX"}); C{()} forbids every socket, UNIX ones included,
        C{None} asks for nothing.  C{deny_network} still applies on top.
    @ivar isolation: which invocations may share a child process:
        C{"shared"} (any handler's, the fastest), C{"handler"} (one handler's
        only: a child serves one handler for its whole life, so different
        handlers never share a process, a batch or a spool), or
        C{"invocation"} (one invocation's only: every invocation gets a fresh
        process, forked from a template, so one event's data never meets
        another's).
    """

    address_space: int | None = field(default=None, validator=_check_count(1))
    cpu_seconds: int | None = field(default=None, validator=_check_count(1))
    open_files: int | None = field(default=None, validator=_check_count(1))
    file_size: int | None = field(default=None, validator=_check_count(0))
    core_dumps: bool = field(default=False, validator=_check_flag)
    no_new_privs: bool = field(default=False, validator=_check_flag)
    parent_death_signal: int | None = field(
        default=int(signal.SIGKILL), validator=_check_signal
    )
    uid: int | None = field(default=None, validator=_check_count(0))
    gid: int | None = field(default=None, validator=_check_count(0))
    deny_network: bool = field(default=False, validator=_check_flag)
    deny_exec: bool = field(default=False, validator=_check_flag)
    writable_paths: tuple[str, ...] | None = field(
        default=None, converter=_paths, validator=_check_writable_paths
    )
    drop_capabilities: bool = field(default=False, validator=_check_flag)
    hide_processes: bool = field(default=False, validator=_check_flag)
    confine_signals: bool = field(default=False, validator=_check_flag)
    allowed_socket_families: tuple[int, ...] | None = field(
        default=None, converter=_families
    )
    isolation: str = field(default="shared", validator=_check_isolation)

    def __attrs_post_init__(self) -> None:
        if (self.uid is None) != (self.gid is None):
            # Dropping only the user would leave the child in the parent's
            # group (often root's), with everything that group may touch.
            raise ValueError("uid and gid must be given together, or neither")

    @classmethod
    def untrusted(cls, **overrides: Any) -> SandboxProfile:
        """
        Make the strict profile for handlers that are not trusted: no new
        privileges, killed with the parent, no core dumps, 1 GiB of address
        space, 256 descriptors, files of at most 64 MiB, no network, no programs
        or processes, no writing to files anywhere, no capabilities, no sight
        of other processes, no signals but to itself, no sockets at all, and
        children that each serve one handler only (C{isolation="handler"}).

        There is no CPU limit: RLIMIT_CPU counts the whole life of a child that
        serves many events, so it would kill healthy children; the pool's
        per-handler timeouts bound a runaway handler instead.  The seccomp and
        Landlock layers are asked for even where the machine lacks them: the
        child then reports them unavailable and the parent says so loudly,
        rather than a profile that quietly means less on some machines.

        @param overrides: fields to set differently, e.g.
            C{writable_paths=("/srv/scratch",)}.
        @return: the profile.
        @raise TypeError: for an override that is not a field.
        @raise ValueError: for an override that is not valid.
        """
        strict = cls(
            address_space=_GIB,
            open_files=256,
            file_size=64 * _MIB,
            no_new_privs=True,
            deny_network=True,
            deny_exec=True,
            writable_paths=(),
            drop_capabilities=True,
            hide_processes=True,
            confine_signals=True,
            allowed_socket_families=(),
            isolation="handler",
        )
        return evolve(strict, **overrides)

    def to_child_config(self, parent_pid: int) -> dict[str, Any]:
        """
        Make the JSON-able configuration that
        L{actordispatch.children.sandbox.apply_sandbox}
        takes; options not asked for are left out.

        @param parent_pid: the pid of the process that spawns the child, as the
            child will see it with C{os.getppid()}: a child that finds another
            parent (its own died first) exits at once.
        @return: a dict of plain JSON values.
        @raise ValueError: if C{parent_pid} is not a positive integer.
        """
        if isinstance(parent_pid, bool) or not isinstance(parent_pid, int):
            raise ValueError(f"parent_pid must be a pid, not {parent_pid!r}")
        if parent_pid <= 0:
            raise ValueError(f"parent_pid must be a pid, not {parent_pid!r}")
        rlimits: dict[str, int] = {}
        for name in ("address_space", "cpu_seconds", "open_files", "file_size"):
            value = getattr(self, name)
            if value is not None:
                rlimits[name] = value
        if not self.core_dumps:
            rlimits["core_size"] = 0
        config: dict[str, Any] = {}
        if rlimits:
            config["rlimits"] = rlimits
        if self.no_new_privs:
            config["no_new_privs"] = True
        if self.parent_death_signal is not None:
            config["parent_death_signal"] = int(self.parent_death_signal)
            config["parent_pid"] = parent_pid
        if self.uid is not None and self.gid is not None:
            config["uid"] = self.uid
            config["gid"] = self.gid
        if self.deny_network:
            config["deny_network"] = True
        if self.deny_exec:
            config["deny_exec"] = True
        if self.writable_paths is not None:
            config["writable_paths"] = list(self.writable_paths)
        for flag in ("drop_capabilities", "hide_processes", "confine_signals"):
            if getattr(self, flag):
                config[flag] = True
        if self.allowed_socket_families is not None:
            config["socket_families"] = list(self.allowed_socket_families)
        return config

    def layer_names(self) -> tuple[str, ...]:
        """
        Name the layers this profile asks for, as the child's report names them;
        pass them to L{missing_layers} so that a layer the report leaves out
        counts as missing.

        @return: the layer names, in the order the child applies them.
        """
        names: list[str] = []
        if self.uid is not None:
            names.append("drop_privileges")
        if self.parent_death_signal is not None:
            names.append("parent_death_signal")
        if self.no_new_privs:
            names.append("no_new_privs")
        if self.writable_paths is not None:
            names.append("landlock")
        for name in ("address_space", "cpu_seconds", "open_files", "file_size"):
            if getattr(self, name) is not None:
                names.append(f"rlimit:{name}")
        if not self.core_dumps:
            names.append("rlimit:core_size")
        for flag in ("drop_capabilities", "hide_processes", "confine_signals"):
            if getattr(self, flag):
                names.append(flag)
        if self.allowed_socket_families is not None:
            names.append("socket_families")
        if self.deny_network:
            names.append("seccomp:network")
        if self.deny_exec:
            names.append("seccomp:exec")
        return tuple(names)


def missing_layers(
    requested: Mapping[str, str], *, expected: Iterable[str] = ()
) -> list[str]:
    """
    List the layers of a child's sandbox report that are not in force.

    @param requested: the report, layer name to C{"applied"},
        C{"failed: ..."} or C{"unavailable: ..."}.
    @param expected: layer names that must be in the report (see
        L{SandboxProfile.layer_names}); any the report lacks is missing too.
    @return: the names of the layers not applied, in report order, then the
        expected ones absent from the report.
    """
    missing = [name for name, status in requested.items() if status != "applied"]
    missing.extend(name for name in expected if name not in requested)
    return missing
