"""
The C{actordispatch} command line.

    actordispatch demo     run the user-created scenario with real children
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from twisted.internet.defer import Deferred, ensureDeferred

DEMO_HANDLERS: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("actordispatch.examples.user_created:validate_user", "before", {}),
    ("actordispatch.examples.user_created:reject_guests", "before", {}),
    ("actordispatch.examples.user_created:notify_admin", "during", {"role": "user"}),
    ("actordispatch.examples.user_created:provision_mailbox", "during", {}),
    ("actordispatch.examples.user_created:audit_log", "after", {}),
)


def _format_outcome(outcome: Any) -> str:
    detail = (
        repr(outcome.value)
        if outcome.ok
        else f"{outcome.error_type}: {outcome.error_message}"
    )
    return (
        f"  {outcome.phase:<7} {outcome.handler.rpartition(':')[2]:<18} "
        f"{outcome.status:<8} pid={outcome.pid!s:<7} "
        f"{outcome.duration * 1000:8.3f} ms  {detail}"
    )


async def _demo(reactor: Any, pool_size: int, out: Any) -> int:
    from actordispatch import EventDispatcher
    from actordispatch.examples.user_created import UserEvent

    dispatcher = EventDispatcher(
        allowed_match_spec_keywords=("event_type", "user", "role"),
        reactor=reactor,
        pool_size=pool_size,
    )
    await dispatcher.start()
    try:
        for handler, phase, spec in DEMO_HANDLERS:
            handler_id = await dispatcher.add_event_handler(handler, phase, **spec)
            print(f"handler {handler_id}: {handler} in phase {phase} {spec}", file=out)
        events = [
            UserEvent("user_created", "bob", "user", "1234"),
            UserEvent("user_created", "alice", "admin", "1"),
            UserEvent("user_created", "mallory", "guest", "666"),
        ]
        failed = 0
        for event in events:
            result = await dispatcher.fire_event(
                event, event_type=event.event_type, user=event.user, role=event.role
            )
            print(f"\nfired {event}: ok={result.ok}", file=out)
            for outcome in result.outcomes:
                print(_format_outcome(outcome), file=out)
            failed += len(result.failures)
        print(
            f"\n{len(events)} events, {failed} failing outcome(s) "
            "(the guest is rejected on purpose)",
            file=out,
        )
        return 0
    finally:
        await dispatcher.stop()


def main(argv: Sequence[str] | None = None) -> int:
    """
    Run the C{actordispatch} command line; returns the exit code.
    """
    parser = argparse.ArgumentParser(
        prog="actordispatch",
        description="A Twisted event dispatcher whose handlers run in child processes.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    demo = commands.add_parser(
        "demo",
        help="run the user-created scenario on a real dispatcher with real children",
        description="Fire three user-created events through three phases of handlers, "
        "each in an ampoule child process, and print every outcome with the child's "
        "pid and the handler's duration.",
    )
    demo.add_argument("--children", type=int, default=2, help="pool size (default 2)")
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    if args.children < 1:
        parser.error("--children must be at least 1")

    from twisted.internet.task import react

    def run(reactor: Any) -> Deferred[None]:
        async def go() -> None:
            code = await _demo(reactor, args.children, sys.stdout)
            if code:
                raise SystemExit(code)

        return ensureDeferred(go())

    try:
        react(run)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
