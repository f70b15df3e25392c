"""
The entry point of a child process, run as C{python -c "from
actordispatch.children.main import
main; main()" ... REACTOR CHILD_CLASS}.

It installs the reactor, logs warnings and errors to stderr (which the parent
relays), and speaks AMP on file descriptors 3 (from the parent) and 4 (to the
parent), leaving stdout and stderr to the handlers.  It ignores SIGINT, which a
Ctrl-C meant for the parent sends it too.
"""

from __future__ import annotations

import json
import sys

#: The file descriptors the parent reads and writes AMP on (see ampoule).
FROM_PARENT = 3
TO_PARENT = 4


def main(argv: list[str] | None = None) -> None:
    """
    Run the AMP child named by the last argument with the reactor named by the
    one before it; any arguments before those are passed to the child class.
    The first of those, if any, is the child's JSON configuration: its
    C{"sandbox"} is applied before the reactor or any handler is imported, and
    the child class gets the configuration with a C{"sandbox_report"} added;
    with C{"fast_pipes"} set, the AMP pipes are widened, read in large chunks
    and written at once rather than on the reactor's next turn (see
    L{actordispatch._wire.pipes}).  Without a configuration (an ampoule child's
    bootstrap) nothing of that applies.
    """
    args = sys.argv[1:] if argv is None else argv
    *child_args, reactor_name, child_path = args
    fast_pipes = False
    if child_args:
        # First, before anything else is imported: the sandbox.
        config = json.loads(child_args[0])
        requested = config.get("sandbox") or {}
        if requested:
            from actordispatch.children.sandbox import apply_sandbox

            config["sandbox_report"] = apply_sandbox(requested)
        fast_pipes = bool(config.get("fast_pipes"))
        child_args[0] = json.dumps(config)

    if reactor_name == "poll":
        # Directly: looking the name up scans Twisted's plugins (about 9 ms).
        from twisted.internet import pollreactor

        pollreactor.install()
    else:
        from twisted.application import reactors

        reactors.installReactor(reactor_name)

    from twisted import logger

    logger.globalLogBeginner.beginLoggingTo(
        [
            logger.FilteringLogObserver(
                logger.textFileLogObserver(sys.stderr),
                [logger.LogLevelFilterPredicate(defaultLogLevel=logger.LogLevel.warn)],
            )
        ],
        redirectStandardIO=False,
    )

    from twisted.internet import reactor, stdio
    from twisted.python import reflect

    child_class = reflect.namedAny(child_path)
    channel_class = stdio.StandardIO
    if fast_pipes:
        from actordispatch._wire.pipes import read_more, widen, write_now

        class FastPipesIO(stdio.StandardIO):
            # Answers go out at once, not on the reactor's next turn.
            def write(self, data: bytes) -> None:
                writer = getattr(self, "_writer", None)
                if writer is not None:
                    write_now(writer, data)

        channel_class = FastPipesIO
    channel = channel_class(  # type: ignore[call-arg]
        child_class(*child_args), FROM_PARENT, TO_PARENT
    )
    if fast_pipes:
        widen(FROM_PARENT)
        widen(TO_PARENT)
        reader = getattr(channel, "_reader", None)  # StandardIO's pipe reader
        if reader is not None:
            read_more(reader)
    # Ctrl-C in a terminal reaches the whole process group: the parent decides
    # what happens to the work (drain, or stop at once and kill), not the
    # child.  SIGTERM still stops it.
    import signal

    reactor.callWhenRunning(signal.signal, signal.SIGINT, signal.SIG_IGN)
    reactor.run()
