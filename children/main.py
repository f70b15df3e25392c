"""
The entry point of a child process, run as C{python -c "from children.main import
main; main()" ... REACTOR CHILD_CLASS}.

It installs the reactor, logs warnings and errors to stderr (which the parent
relays), and speaks AMP on file descriptors 3 (from the parent) and 4 (to the
parent), leaving stdout and stderr to the handlers.
"""

from __future__ import annotations

import sys

#: The file descriptors the parent reads and writes AMP on (see ampoule).
FROM_PARENT = 3
TO_PARENT = 4


def main(argv: list[str] | None = None) -> None:
    """
    Run the AMP child named by the last argument with the reactor named by the
    one before it; any arguments before those are passed to the child class.
    """
    args = sys.argv[1:] if argv is None else argv
    *child_args, reactor_name, child_path = args

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
