"""
Misbehaving handlers for the fault-injection suite.  They run in real child
processes, which import them as C{tests.integration.faults:NAME}.
"""

from __future__ import annotations

import os
import signal
import struct
import sys
import time
from dataclasses import dataclass
from typing import Any

from twisted.internet.task import deferLater

#: The child's descriptor for AMP towards the parent (see actordispatch.children.main).
TO_PARENT = 4


def exit_at(event: dict[str, Any]) -> int:
    """
    Return C{event["n"]}, except for the event numbered C{event["at"]}: exit.
    """
    if event["n"] == event.get("at"):
        os._exit(7)
    return int(event["n"])


def kill_self(event: dict[str, Any]) -> None:
    """
    Die by the signal C{event["signal"]}.
    """
    os.kill(os.getpid(), event["signal"])
    time.sleep(5)


def busy_loop(event: Any) -> None:
    """
    Spin forever in Python.
    """
    while True:
        pass


def ignore_term_and_block(event: Any) -> None:
    """
    Ignore SIGTERM and block in C code.
    """
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    time.sleep(3600)


#: The child's descriptor for its spool (see actordispatch._local.child).
SPOOL = 5


def future_start(event: Any) -> None:
    """
    Lie to the parent (issue 16): rewrite the spool's header to say this
    batch started a million seconds from now, then ignore SIGTERM and block.
    """
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    seq = os.pread(SPOOL, 64, 0).split(b"\n", 1)[0].split(b" ", 1)[0]
    os.pwrite(SPOOL, b"%s %r\n" % (seq, time.monotonic() + 1e6), 0)
    time.sleep(3600)


def late(event: dict[str, Any]) -> Any:
    """
    Answer after C{event["after"]} seconds, without blocking the reactor.
    """
    from twisted.internet import reactor

    return deferLater(reactor, event["after"], lambda: "late")  # type: ignore[arg-type]


class _ExitWhenIterated(list):  # type: ignore[type-arg]
    def __iter__(self) -> Any:
        os._exit(11)


@dataclass
class _Result:
    items: Any


def crash_while_encoding(event: Any) -> _Result:
    """
    Return a value whose encoding kills the child.
    """
    return _Result(_ExitWhenIterated([1, 2]))


_hoard: list[bytes] = []


def leak(event: dict[str, Any]) -> int:
    """
    Keep C{event["mib"]} MiB more alive in the child, for good.
    """
    _hoard.append(b"x" * (event["mib"] * 1024 * 1024))
    return len(_hoard)


def flood_output(event: dict[str, Any]) -> int:
    """
    Write C{event["mib"]} MiB to stdout and stderr, then return.
    """
    chunk = b"flood " * 10922 + b"\n"
    total = event["mib"] * 1024 * 1024
    written = 0
    while written < total:
        os.write(1 if written % 2 else 2, chunk)
        written += len(chunk)
    return written


def _raw_to_parent(data: bytes) -> None:
    sys.stdout.flush()
    os.write(TO_PARENT, data)


def _box(pairs: list[tuple[bytes, bytes]]) -> bytes:
    out = b""
    for key, value in pairs:
        out += struct.pack("!H", len(key)) + key + struct.pack("!H", len(value)) + value
    return out + b"\x00\x00"


def garbage(event: Any) -> None:
    """
    Write bytes that are no AMP frame on the pipe to the parent, then hang.
    """
    _raw_to_parent(b"\x00\x00\x00\x00this is not AMP" * 10 + b"\xff" * 300)
    time.sleep(30)


def answer_to_nothing(event: Any) -> None:
    """
    Send an answer to a question the parent never asked, then hang.
    """
    _raw_to_parent(_box([(b"_answer", b"999999"), (b"pid", b"1")]))
    time.sleep(30)


def too_many_keys(event: Any) -> None:
    """
    Send a box with far more keys than any reply has, then hang.
    """
    _raw_to_parent(_box([(b"k%d" % i, b"v") for i in range(20000)]))
    time.sleep(30)


def half_frame(event: Any) -> None:
    """
    Send half a frame, then hang.
    """
    _raw_to_parent(b"\x00\x07_ans")
    time.sleep(30)


def big_result(event: dict[str, Any]) -> str:
    """
    Return a string of C{event["size"]} characters.
    """
    return "r" * event["size"]


def ok(event: Any) -> str:
    """
    Succeed.
    """
    return "ok"


def pid(event: Any) -> int:
    """
    Return the child's pid.
    """
    return os.getpid()


def sandbox_state(event: Any) -> dict[str, Any]:
    """
    Describe the sandbox in force in this child, as the child sees it.
    """
    from actordispatch.children.sandbox import describe_sandbox

    return describe_sandbox()


def allocate(event: dict[str, Any]) -> int:
    """
    Allocate C{event["mib"]} MiB.
    """
    return len(bytearray(event["mib"] * 1024 * 1024))


def burn_cpu(event: Any) -> None:
    """
    Spin for a long time (in Python).
    """
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        pass


def unknown_command(event: Any) -> None:
    """
    Send the parent a command it does not serve, then hang.
    """
    _raw_to_parent(_box([(b"_command", b"Shutdown"), (b"_ask", b"1")]))
    time.sleep(30)


def forged_follow_ups(event: Any) -> Any:
    """
    Fire follow-up events the parent must refuse, over the child's own AMP
    connection: one naming a batch that is not running, then more at once
    (without waiting) than the pool allows.  Returns what was refused.
    """
    from twisted.internet.defer import DeferredList

    from actordispatch._wire.commands import FireFollowUp
    from actordispatch.children import fire_event, followup

    host = followup._sender.func.__self__  # type: ignore[union-attr]
    forged = host.callRemote(
        FireFollowUp, event=b"{}", keywords="{}", seq=999_999, wait=True
    )
    flood = [fire_event({}, wait=False, kind="note") for _ in range(event["flood"])]

    def summarise(results: list[tuple[bool, Any]]) -> dict[str, Any]:
        (forged_ok, forged_value), *rest = results
        return {
            "forged": None if forged_ok else forged_value.getErrorMessage(),
            "accepted": sum(1 for ok, _ in rest if ok),
            "refused": sorted({v.getErrorMessage() for ok, v in rest if not ok}),
        }

    return DeferredList([forged, *flood], consumeErrors=True).addCallback(summarise)
