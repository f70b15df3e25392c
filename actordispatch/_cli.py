"""
The C{actordispatch} command line.

    actordispatch demo     run the user-created scenario with real children
    actordispatch serve    run a dispatcher service from a TOML configuration
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from twisted.internet.defer import Deferred, ensureDeferred, succeed

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


async def _serve(reactor: Any, config_path: str) -> int:
    from twisted.logger import (
        FilteringLogObserver,
        LogLevel,
        LogLevelFilterPredicate,
        globalLogBeginner,
        textFileLogObserver,
    )

    from actordispatch._config import ConfigError, load_config
    from actordispatch._service import DispatcherService

    try:
        config = load_config(config_path)
    except ConfigError as e:
        print(f"actordispatch serve: {e}", file=sys.stderr)
        return 2
    globalLogBeginner.beginLoggingTo(
        [
            FilteringLogObserver(
                textFileLogObserver(sys.stderr),
                [LogLevelFilterPredicate(defaultLogLevel=LogLevel.info)],
            )
        ],
        redirectStandardIO=False,
    )
    service = DispatcherService(config, reactor=reactor)
    finished: Deferred[int] = Deferred()

    def failed(failure: Any) -> None:
        print(f"actordispatch serve: {failure.getErrorMessage()}", file=sys.stderr)
        service.stopService().addBoth(lambda _: finished.callback(1))

    def stop() -> Deferred[None]:
        # SIGTERM/SIGINT: drain, then let react() end.
        stopping = service.stopService() if service.running else succeed(None)

        def stopped(_: object) -> None:
            if not finished.called:
                finished.callback(0)

        return stopping.addBoth(stopped)

    service.ready.addErrback(failed)
    reactor.addSystemEventTrigger("before", "shutdown", stop)
    service.startService()
    return await finished


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
    serve = commands.add_parser(
        "serve",
        help="run a dispatcher service from a TOML configuration until SIGTERM",
        description="Start the pools, register the configured handlers, listen on "
        "the configured endpoints (AMP for external processes, Prometheus metrics) "
        "and run until SIGTERM or SIGINT, then let accepted events finish. Exit "
        "codes: 0 stopped cleanly, 1 failed to start, 2 bad configuration.",
    )
    serve.add_argument(
        "--config", "-c", required=True, help="the TOML configuration file"
    )
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    if args.command == "demo" and args.children < 1:
        parser.error("--children must be at least 1")

    from twisted.internet.task import react

    def run(reactor: Any) -> Deferred[None]:
        async def go() -> None:
            if args.command == "serve":
                code = await _serve(reactor, args.config)
            else:
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
