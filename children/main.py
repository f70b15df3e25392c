"""
The entry point of a child process, run as C{python -c "from children.main import
main; main()" ... REACTOR CHILD_CLASS}.

It installs the reactor, logs warnings and errors to stderr (which the parent
relays), and speaks AMP on file descriptors 3 (from the parent) and 4 (to the
parent), leaving stdout and stderr to the handlers.
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
    the child class gets the configuration with a C{"sandbox_report"} added.
    """
    args = sys.argv[1:] if argv is None else argv
    *child_args, reactor_name, child_path = args
    if child_args:
        # First, before anything else is imported: the sandbox.
        config = json.loads(child_args[0])
        requested = config.get("sandbox") or {}
        if requested:
            from children.sandbox import apply_sandbox

            config["sandbox_report"] = apply_sandbox(requested)
        child_args[0] = json.dumps(config)

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
    stdio.StandardIO(  # type: ignore[call-arg]
        child_class(*child_args), FROM_PARENT, TO_PARENT
    )
    reactor.run()
