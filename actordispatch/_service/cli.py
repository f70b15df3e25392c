"""
The C{actordispatch} command line::

    actordispatch demo     run the user-created scenario with real children
    actordispatch serve    run a dispatcher service from a TOML configuration
    actordispatch fire     fire an event into a running service
    actordispatch handlers list a running service's handlers
    actordispatch worker   serve handlers from a RabbitMQ broker in local children
    actordispatch sandbox-check  which sandbox layers hold here, tried from a child
    actordispatch bench    run the benchmark (source checkout)
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from twisted.internet.defer import CancelledError, Deferred, ensureDeferred, succeed
from twisted.logger import Logger

_log = Logger()

_T = TypeVar("_T")

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


def _log_to_stderr() -> None:
    from twisted.logger import (
        FilteringLogObserver,
        LogLevel,
        LogLevelFilterPredicate,
        globalLogBeginner,
        textFileLogObserver,
    )

    globalLogBeginner.beginLoggingTo(
        [
            FilteringLogObserver(
                textFileLogObserver(sys.stderr),
                [LogLevelFilterPredicate(defaultLogLevel=LogLevel.info)],
            )
        ],
        redirectStandardIO=False,
    )


def _on_signals(reactor: Any, handle: Callable[[int], None]) -> None:
    """
    Once the reactor runs, call C{handle(number)} in the reactor's thread for
    each SIGINT and SIGTERM, in place of Twisted's handlers (which stop the
    reactor, and log a C{ReactorNotRunning} traceback for a second signal).
    """

    def received(number: int, frame: Any) -> None:
        reactor.callFromThread(handle, number)

    def install() -> None:
        for number in (signal.SIGINT, signal.SIGTERM):
            signal.signal(number, received)

    reactor.callWhenRunning(install)


def _signal_name(number: int) -> str:
    return signal.Signals(number).name


def _draining(service: Any) -> str:
    """
    What a drain of C{service} has to wait for, and how long at most.
    """
    stats = service.dispatcher.stats()
    events = stats.in_flight + stats.queued
    if not events:
        return "no event in flight: stopping"
    noun = "event" if events == 1 else "events"
    timeout = service.config.dispatcher.get("drain_timeout")
    bound = (
        f"up to {timeout:g} s"
        if timeout is not None
        else "as long as they take (no [dispatcher] drain_timeout)"
    )
    return f"draining {events} {noun}, {bound}"


async def _serve(reactor: Any, config_path: str) -> int:
    from actordispatch._service.config import ConfigError, load_config
    from actordispatch._service.service import DispatcherService

    try:
        config = load_config(config_path)
    except ConfigError as e:
        print(f"actordispatch serve: {e}", file=sys.stderr)
        return 2
    _log_to_stderr()
    service = DispatcherService(config, reactor=reactor)
    finished: Deferred[int] = Deferred()
    code = [0]
    stopping: list[Deferred[None]] = []
    signals: list[int] = []

    def stop() -> Deferred[None]:
        # Drain once, whatever asks for it first; then let react() end.
        if not stopping:
            done: Deferred[None] = Deferred()
            stopping.append(done)  # first: stopping may fail the start at once

            def stopped(_: object) -> None:
                done.callback(None)
                if not finished.called:
                    finished.callback(code[0])

            (service.stopService() if service.running else succeed(None)).addBoth(
                stopped
            )
        waiter: Deferred[None] = Deferred()
        stopping[0].addBoth(lambda _: waiter.callback(None))
        return waiter

    def failed(failure: Any) -> None:
        if stopping:
            return  # stopped before it was ready: nothing failed
        print(f"actordispatch serve: {failure.getErrorMessage()}", file=sys.stderr)
        code[0] = 1
        stop()

    def signalled(number: int) -> None:
        # The first SIGINT or SIGTERM drains; the second stops at once.
        signals.append(number)
        name = _signal_name(number)
        if len(signals) == 1:
            again = (
                "press Ctrl-C again"
                if number == signal.SIGINT
                else "send SIGTERM (or SIGINT) again"
            )
            _log.info(
                "{signal}: {draining}; {again} to stop now",
                signal=name,
                draining=_draining(service),
                again=again,
            )
            stop()
        elif len(signals) == 2:
            code[0] = 128 + number
            stats = service.dispatcher.stats()
            _log.warn(
                "{signal} again: stopping now: killing what runs; the {events} "
                "event(s) in flight end with their invocations aborted",
                signal=name,
                events=stats.in_flight + stats.queued,
            )
            stop()
            service.stop_now()
        else:
            _log.info("{signal}: already stopping now", signal=name)

    service.ready.addErrback(failed)
    # Signals are ours; another shutdown of the reactor still drains.
    _on_signals(reactor, signalled)
    reactor.addSystemEventTrigger("before", "shutdown", stop)
    service.startService()
    return await finished


#: The environment variable the worker reads its broker URL from, when it is not
#: given with --amqp (a password on a command line is visible to every user).
AMQP_URL_VARIABLE = "ACTORDISPATCH_AMQP_URL"


async def _worker(reactor: Any, args: Any) -> int:
    import os

    from actordispatch._amqp.link import ClientTLS
    from actordispatch._amqp.worker import WorkerHost
    from actordispatch._local.pool import AmpoulePool
    from actordispatch._service.config import (
        ConfigError,
        WorkerConfig,
        load_worker_config,
        pool_arguments,
    )

    config = WorkerConfig(None, "actordispatch", (), None, None, None, {}, "")
    if args.config:
        try:
            config = load_worker_config(args.config)
        except ConfigError as e:
            print(f"actordispatch worker: {e}", file=sys.stderr)
            return 2
    url = args.amqp or config.amqp or os.environ.get(AMQP_URL_VARIABLE)
    if not url:
        print(
            f"actordispatch worker: give the broker with --amqp URL, in the "
            f"configuration, or in ${AMQP_URL_VARIABLE}",
            file=sys.stderr,
        )
        return 2
    handlers = [name for item in args.handlers for name in item.split(",") if name]
    handlers = handlers or list(config.handlers)
    if not handlers:
        print(
            "actordispatch worker: name the handlers to serve (--handlers)",
            file=sys.stderr,
        )
        return 2
    tls = ClientTLS(**config.tls) if config.tls else None
    if args.tls_ca or args.tls_cert:
        tls = ClientTLS(
            ca=args.tls_ca,
            certificate=args.tls_cert,
            key=args.tls_key,
            hostname=args.tls_hostname,
        )
    arguments = pool_arguments(config.pool)
    if args.children is not None:
        arguments["size"] = args.children
    try:
        worker = WorkerHost(
            url,
            handlers,
            pool=AmpoulePool(**arguments, reactor=reactor),
            namespace=args.namespace or config.namespace,
            prefetch=args.prefetch or config.prefetch,
            tls=tls,
            name=args.name or config.name,
            reactor=reactor,
        )
    except (ValueError, OSError) as e:
        print(f"actordispatch worker: {e}", file=sys.stderr)
        return 2
    _log_to_stderr()
    finished: Deferred[int] = Deferred()
    stopping: list[Deferred[None]] = []

    def end(code: int) -> Deferred[None]:
        if not stopping:
            stopping.append(worker.stop())

            def ended(_: object) -> None:
                if not finished.called:
                    finished.callback(code)

            stopping[0].addBoth(ended)
        return stopping[0]

    def stop() -> Deferred[None]:
        # SIGTERM/SIGINT: finish and answer what was taken, then let react() end.
        return end(0)

    def failed(failure: Any) -> None:
        print(f"actordispatch worker: {failure.getErrorMessage()}", file=sys.stderr)
        end(1)

    reactor.addSystemEventTrigger("before", "shutdown", stop)
    worker.start().addErrback(failed)
    return await finished


def _parse_keywords(pairs: Sequence[str]) -> dict[str, Any]:
    """
    C{key=value} words to keywords; a value that parses as JSON is taken as
    JSON (C{n=3}, C{flag=true}), anything else as a string.
    """
    keywords: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key.isidentifier():
            raise ValueError(f"{pair!r} is not key=value")
        try:
            value = json.loads(text)
        except ValueError:
            value = text
        if isinstance(value, (list, dict)):
            raise ValueError(f"{key}: a keyword value must be a single value")
        keywords[key] = value
    return keywords


def _table(rows: Sequence[Sequence[str]], out: Any) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print(
            "  ".join(
                cell.ljust(w) for cell, w in zip(row, widths, strict=True)
            ).rstrip(),
            file=out,
        )


async def _connect(reactor: Any, description: str) -> Any:
    from twisted.internet.endpoints import clientFromString, connectProtocol
    from twisted.protocols.amp import AMP

    return await connectProtocol(clientFromString(reactor, description), AMP())


class _SignalError(Exception):
    """
    A SIGINT or SIGTERM came while a client command waited (its number).
    """


class _Interruptible:
    """
    A client command's waits, which the first SIGINT or SIGTERM cuts short
    (so that the command can say what it was waiting for and end with 128 +
    the signal's number, rather than being stopped with the reactor).
    """

    def __init__(self, reactor: Any) -> None:
        self.number: int | None = None
        self._waiting: Deferred[Any] | None = None
        _on_signals(reactor, self._received)

    def _received(self, number: int) -> None:
        if self.number is None:
            self.number = number
            if self._waiting is not None:
                self._waiting.cancel()

    async def wait(self, waiting: Deferred[_T]) -> _T:
        """
        C{waiting}'s result.

        @raise _SignalError: if a signal came first (C{waiting} is cancelled).
        """
        if self.number is not None:
            waiting.cancel()
            waiting.addErrback(lambda _: None)
            raise _SignalError(self.number)
        self._waiting = waiting
        try:
            return await waiting
        except CancelledError:
            if self.number is None:
                raise
            raise _SignalError(self.number) from None
        finally:
            self._waiting = None


async def _fire(reactor: Any, args: Any, out: Any) -> int:
    from twisted.internet.error import ConnectionClosed

    from actordispatch._core.errors import NotRunningError
    from actordispatch._external.wire import Fire

    try:
        keywords = _parse_keywords(args.keywords)
        event = json.loads(args.event) if args.event is not None else {}
    except ValueError as e:
        print(f"actordispatch fire: {e}", file=sys.stderr)
        return 2
    waits = _Interruptible(reactor)
    try:
        connection = await waits.wait(ensureDeferred(_connect(reactor, args.connect)))
    except _SignalError as e:
        number = int(e.args[0])
        print(
            f"actordispatch fire: interrupted ({_signal_name(number)}) while "
            f"connecting to {args.connect}: the event was not fired",
            file=sys.stderr,
        )
        return 128 + number
    except Exception as e:
        print(
            f"actordispatch fire: cannot connect to {args.connect}: {e}",
            file=sys.stderr,
        )
        return 2
    try:
        answer = await waits.wait(
            connection.callRemote(
                Fire,
                event=json.dumps(event).encode("utf-8"),
                keywords=json.dumps(keywords),
            )
        )
    except _SignalError as e:
        number = int(e.args[0])
        print(
            f"actordispatch fire: interrupted ({_signal_name(number)}) while "
            f"waiting for the outcomes; the event may still run on the service "
            f"at {args.connect}",
            file=sys.stderr,
        )
        return 128 + number
    except ConnectionClosed as e:
        print(
            f"actordispatch fire: the service at {args.connect} went away before "
            f"it answered ({e}); whether the event ran is unknown",
            file=sys.stderr,
        )
        return 2
    except NotRunningError:
        print(
            f"actordispatch fire: the service at {args.connect} is stopping: the "
            "event was not accepted",
            file=sys.stderr,
        )
        return 2
    except Exception as e:
        print(f"actordispatch fire: {type(e).__name__}: {e}", file=sys.stderr)
        return 2
    finally:
        connection.transport.loseConnection()
    outcomes = json.loads(answer["outcomes"])
    if args.json:
        print(
            json.dumps({"ok": answer["ok"], "outcomes": outcomes}, indent=2), file=out
        )
    elif not outcomes:
        print("no handler matched", file=out)
    else:
        rows = [["phase", "handler", "status", "pid", "ms", "value / error"]]
        for o in outcomes:
            detail = (
                json.dumps(o.get("value"))
                if o["status"] == "ok"
                else f"{o.get('error_type')}: {o.get('error_message')}"
            )
            rows.append(
                [
                    o["phase"],
                    f"{o['handler_id']} {o['handler']}",
                    o["status"],
                    str(o.get("pid")),
                    f"{(o.get('duration') or 0) * 1000:.3f}",
                    detail[:120],
                ]
            )
        _table(rows, out)
    return 0 if answer["ok"] else 1


async def _handlers(reactor: Any, args: Any, out: Any) -> int:
    from actordispatch._external.wire import ListHandlers

    try:
        connection = await _connect(reactor, args.connect)
    except Exception as e:
        print(
            f"actordispatch handlers: cannot connect to {args.connect}: {e}",
            file=sys.stderr,
        )
        return 2
    try:
        answer = await connection.callRemote(ListHandlers)
    finally:
        connection.transport.loseConnection()
    handlers = json.loads(answer["handlers"])
    if args.json:
        print(json.dumps(handlers, indent=2), file=out)
        return 0
    rows = [["id", "handler", "phase", "pool", "match", "calls", "failures", "p50 ms"]]
    for h in handlers:
        p50 = h.get("p50")
        rows.append(
            [
                str(h.get("handler_id")),
                str(h.get("handler")),
                str(h.get("phase")),
                str(h.get("pool")),
                json.dumps(h.get("match", {})),
                str(h.get("calls", "")),
                str(h.get("failures", "")),
                "-" if p50 is None else f"{p50 * 1000:.3f}",
            ]
        )
    _table(rows, out)
    return 0


async def _sandbox_check(args: Any, out: Any) -> int:
    from actordispatch._core.sandbox import SandboxProfile
    from actordispatch._service.sandbox_check import check

    if args.config is None:
        profile = (
            SandboxProfile.untrusted()
            if args.profile == "untrusted"
            else SandboxProfile()
        )
    else:
        from actordispatch._service.config import ConfigError, load_config

        try:
            config = load_config(args.config)
        except ConfigError as e:
            sys.stderr.write(f"actordispatch sandbox-check: {e}\n")
            return 2
        pool = config.pools.get(args.pool)
        if pool is None or "amqp" in pool:
            sys.stderr.write(
                f"actordispatch sandbox-check: {args.config} has no local pool "
                f"{args.pool!r} (pools: {', '.join(sorted(config.pools))})\n"
            )
            return 2
        profile = SandboxProfile(**pool.get("sandbox", {}))
    return await check(profile, out, as_json=args.json)


def _bench(argv: Sequence[str]) -> int:
    try:
        from benchmarks import bench_dispatch
    except ImportError:
        print(
            "actordispatch bench: the benchmarks live in the source checkout; run "
            "it from there (python -m benchmarks.bench_dispatch)",
            file=sys.stderr,
        )
        return 2
    bench_dispatch.main(list(argv))
    return 0


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
        "and run until SIGTERM or SIGINT, then let accepted events finish; a "
        "second signal stops at once (what runs is killed, and every event in "
        "flight ends with its outcomes). Exit codes: 0 stopped cleanly, 1 failed "
        "to start, 2 bad configuration, 128 + the signal's number stopped at "
        "once (130: a second Ctrl-C).",
    )
    serve.add_argument(
        "--config", "-c", required=True, help="the TOML configuration file"
    )
    fire = commands.add_parser(
        "fire",
        help="fire an event into a running service and print the outcomes",
        description="Connect to a service's AMP endpoint, fire EVENT (JSON) with the "
        "given key=value match keywords, and print one outcome per handler. Exit "
        "codes: 0 all ok, 1 some outcome failed, 2 usage or connection error (the "
        "service unreachable, stopping, or gone before it answered), 130 "
        "interrupted by Ctrl-C (the event may still run).",
    )
    fire.add_argument(
        "--connect", required=True, help="client endpoint, e.g. tcp:127.0.0.1:8750"
    )
    fire.add_argument("--event", help="the event as JSON (default: {})")
    fire.add_argument("--json", action="store_true", help="print JSON, not a table")
    fire.add_argument("keywords", nargs="*", metavar="key=value")
    listing = commands.add_parser(
        "handlers",
        help="list a running service's handlers",
        description="Connect to a service's AMP endpoint and list its handlers with "
        "their pools, match specs, call and failure counts and latency.",
    )
    listing.add_argument("--connect", required=True, help="client endpoint")
    listing.add_argument("--json", action="store_true", help="print JSON, not a table")
    worker = commands.add_parser(
        "worker",
        help="serve handlers from a RabbitMQ broker in local children",
        description="Consume the queues of the given handlers on a RabbitMQ broker "
        "(the work of dispatchers whose AMQP pool uses the same namespace), run each "
        "invocation in a local child, reply with its outcome, then acknowledge. "
        "Runs until SIGTERM or SIGINT, then finishes and answers what it took. Exit "
        "codes: 0 stopped cleanly, 1 a handler cannot be imported, 2 usage error.",
    )
    worker.add_argument(
        "--amqp",
        metavar="URL",
        help=f"the broker, amqp://user:password@host:5672/vhost or amqps://... "
        f"(default: ${AMQP_URL_VARIABLE}, which keeps a password off the command "
        "line)",
    )
    worker.add_argument(
        "--config",
        "-c",
        help="a TOML file with [worker] and [pool] tables (the local children's "
        "size, limits and sandbox); the options below override it",
    )
    worker.add_argument(
        "--handlers",
        nargs="+",
        default=[],
        metavar="NAME",
        help="handlers to serve, 'package.module:attr' (several, or comma-separated)",
    )
    worker.add_argument(
        "--children", type=int, help="local children (default 2, or the config's)"
    )
    worker.add_argument(
        "--prefetch",
        type=int,
        help="messages taken before acknowledging any (default: 2 per child)",
    )
    worker.add_argument(
        "--namespace", help="the dispatchers' namespace (default actordispatch)"
    )
    worker.add_argument("--name", help="this host's name in replies (hostname:pid)")
    worker.add_argument("--tls-ca", help="PEM file of the CAs to trust (amqps)")
    worker.add_argument(
        "--tls-cert",
        help="PEM client certificate (with no user in the URL: SASL EXTERNAL)",
    )
    worker.add_argument("--tls-key", help="PEM private key (default: in --tls-cert)")
    worker.add_argument("--tls-hostname", help="name the broker's certificate has")
    sandbox_check = commands.add_parser(
        "sandbox-check",
        help="show which sandbox layers hold on this machine, tried from a child",
        description="Start one real child under a sandbox profile and try, from "
        "inside it, what a hostile handler would (harmlessly: signal 0, sockets "
        "closed at once, a file removed at once); print which layers are in "
        "force and which attacks were stopped. Exit codes: 0 the profile is "
        "honoured, 1 it is not, 2 usage error.",
    )
    sandbox_check.add_argument(
        "--profile",
        choices=("untrusted", "default"),
        default="untrusted",
        help="SandboxProfile.untrusted() (the default) or SandboxProfile()",
    )
    sandbox_check.add_argument(
        "--config",
        "-c",
        help="check the sandbox of a pool of this TOML file instead",
    )
    sandbox_check.add_argument(
        "--pool", default="default", help="the pool of --config (default: default)"
    )
    sandbox_check.add_argument("--json", action="store_true", help="print JSON")
    commands.add_parser(
        "bench",
        help="run the benchmark (from a source checkout)",
        description="Run benchmarks/bench_dispatch.py; arguments after 'bench' go "
        "to it.",
        add_help=False,
    )
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"]:
        return _bench(argv[1:])
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    if args.command in ("demo", "worker") and (args.children or 1) < 1:
        parser.error("--children must be at least 1")

    from twisted.internet.task import react

    def run(reactor: Any) -> Deferred[None]:
        async def go() -> None:
            if args.command == "serve":
                code = await _serve(reactor, args.config)
            elif args.command == "fire":
                code = await _fire(reactor, args, sys.stdout)
            elif args.command == "handlers":
                code = await _handlers(reactor, args, sys.stdout)
            elif args.command == "worker":
                code = await _worker(reactor, args)
            elif args.command == "sandbox-check":
                code = await _sandbox_check(args, sys.stdout)
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
