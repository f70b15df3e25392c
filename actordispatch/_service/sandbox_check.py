"""
C{actordispatch sandbox-check}: which sandbox layers a profile gets on this
machine, found by trying, from inside a real child under that profile, what a
hostile handler would try (see L{actordispatch.children.probes}).

Users deploy on many kernels, with and without root: a layer the kernel lacks
is reported by the child, and an attack the profile should stop but did not is
shown as such.  The exit code is 0 when the profile is honoured in full, 1 when
it is not, and 2 for a usage error.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Callable
from typing import Any, cast

from attrs import frozen
from twisted.logger import ILogObserver, globalLogPublisher

from actordispatch._core.sandbox import SandboxProfile

#: The handler that tries the attacks, in the child.
PROBE_HANDLER = "actordispatch.children.probes:probe"


@frozen
class Attack:
    """
    One attack the probe tries, and whether a profile must stop it.

    @ivar name: as the probe names it.
    @ivar stopped_by: what in the profile stops it, for the table.
    @ivar required: whether C{profile} must stop it; C{None} for an attack
        that must I{not} be stopped (a child may always signal itself).
    """

    name: str
    stopped_by: str
    required: Callable[[SandboxProfile], bool | None]


def _no_family(family: int) -> Callable[[SandboxProfile], bool]:
    def required(profile: SandboxProfile) -> bool:
        allowed = profile.allowed_socket_families
        return allowed is not None and family not in allowed

    return required


ATTACKS: tuple[Attack, ...] = (
    Attack("signal the parent", "confine_signals", lambda p: p.confine_signals),
    Attack("signal every process", "confine_signals", lambda p: p.confine_signals),
    Attack("signal its process group", "confine_signals", lambda p: p.confine_signals),
    Attack("signal itself", "must stay allowed", lambda p: None),
    Attack(
        "open a unix socket",
        "allowed_socket_families",
        _no_family(socket.AF_UNIX),
    ),
    Attack(
        "open an inet socket",
        "deny_network, allowed_socket_families",
        lambda p: p.deny_network or _no_family(socket.AF_INET)(p),
    ),
    Attack(
        "read the parent's environment",
        "hide_processes",
        lambda p: p.hide_processes,
    ),
    Attack(
        "write outside the writable paths",
        "writable_paths",
        lambda p: p.writable_paths is not None,
    ),
    Attack("start a process", "deny_exec", lambda p: p.deny_exec),
    Attack(
        "clear its parent-death signal",
        "confine_signals",
        lambda p: p.confine_signals and p.parent_death_signal is not None,
    ),
    Attack("hold capabilities", "drop_capabilities", lambda p: p.drop_capabilities),
)


def _verdict(attack: Attack, profile: SandboxProfile, result: str) -> str:
    required = attack.required(profile)
    stopped = result.startswith(("blocked", "none held"))
    if required is None:
        return "ok" if result == "ALLOWED" else "BROKEN"
    if required:
        return "ok" if stopped else "NOT STOPPED"
    return "stopped" if stopped else "not asked"


async def check(profile: SandboxProfile, out: Any, *, as_json: bool = False) -> int:
    """
    Start one real child under C{profile}, try the attacks from inside it, and
    print what held.

    @return: 0 when every layer the profile asks for is in force and every
        attack it must stop was stopped, else 1.
    """
    from actordispatch._dispatch.dispatcher import EventDispatcher

    missing: dict[str, str] = {}

    def observe(event: dict[str, Any]) -> None:
        if "sandbox layers NOT in force" in str(event.get("log_format", "")):
            missing.update(event.get("missing") or {})

    observer = cast(ILogObserver, observe)
    globalLogPublisher.addObserver(observer)
    dispatcher = EventDispatcher((), pool_size=1, sandbox=profile, phases=("check",))
    try:
        await dispatcher.start()
        await dispatcher.add_event_handler(PROBE_HANDLER, "check")
        result = await dispatcher.fire_event(
            {
                "parent_pid": os.getpid(),
                "writable_paths": None
                if profile.writable_paths is None
                else list(profile.writable_paths),
            }
        )
    finally:
        await dispatcher.stop()
        globalLogPublisher.removeObserver(observer)
    [outcome] = result.outcomes
    if outcome.status != "ok":
        out.write(
            f"the probe did not run: {outcome.status} {outcome.error_type}: "
            f"{outcome.error_message}\n"
        )
        return 1
    rows = []
    for attack in ATTACKS:
        tried = str(outcome.value.get(attack.name, "not tried"))
        rows.append(
            {
                "attack": attack.name,
                "result": tried,
                "verdict": _verdict(attack, profile, tried),
                "stopped_by": attack.stopped_by,
            }
        )
    layers = {name: missing.get(name, "in force") for name in profile.layer_names()}
    failed = bool(missing) or any(
        row["verdict"] in ("NOT STOPPED", "BROKEN") for row in rows
    )
    if as_json:
        out.write(
            json.dumps(
                {"layers": layers, "attacks": rows, "honoured": not failed},
                indent=2,
            )
            + "\n"
        )
        return 1 if failed else 0
    out.write(f"child pid {outcome.pid}, profile layers:\n")
    for name, state in layers.items():
        out.write(f"  {name:<28} {state}\n")
    out.write("\nattacks tried from inside the child:\n")
    width = max(len(row["attack"]) for row in rows)
    result_width = max(len(row["result"]) for row in rows)
    for row in rows:
        out.write(
            f"  {row['attack']:<{width}}  {row['result']:<{result_width}}  "
            f"{row['verdict']:<11}  {row['stopped_by']}\n"
        )
    out.write(
        "\nthe profile is honoured on this machine\n"
        if not failed
        else "\nthe profile is NOT honoured on this machine (see above)\n"
    )
    return 1 if failed else 0
