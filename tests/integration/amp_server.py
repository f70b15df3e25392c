"""
A dispatcher serving the AMP endpoint on loopback TCP, in a process of its own,
for tests that measure what a peer costs it (its memory, from outside).

It runs an in-memory pool (L{actordispatch.testing.FakePool}), so no children:
C{--handlers} local handlers with long match values (which make every
C{ListHandlers} answer large), and one handler of C{kind="big"} that answers
each event, after C{--delay} seconds, with a string of C{--value-bytes}
bytes.  It prints C{port <n>} once listening, and stops when its standard
input closes.

    python -m tests.integration.amp_server --handlers 256 --value-bytes 100000
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from twisted.internet import reactor as global_reactor
from twisted.internet import stdio
from twisted.internet.protocol import Protocol

from actordispatch import EventDispatcher
from actordispatch._external.listen import listen
from actordispatch.testing import FakeCall, FakePool

HANDLER = "tests.integration.handlers:describe"


class _StopOnClose(Protocol):
    """
    Stops the reactor when standard input closes (the test is done, or gone).
    """

    def connectionLost(self, reason: Any = None) -> None:
        if global_reactor.running:  # type: ignore[attr-defined]
            global_reactor.stop()  # type: ignore[attr-defined]


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--handlers", type=int, default=256)
    parser.add_argument("--value-bytes", type=int, default=100_000)
    parser.add_argument("--delay", type=float, default=0.05)
    options = parser.parse_args(argv)
    reactor: Any = global_reactor
    value = "v" * options.value_bytes

    def answer(call: FakeCall) -> None:
        reactor.callLater(options.delay, call.succeed, value)

    dispatcher = EventDispatcher(
        ("kind",),
        ("during",),
        reactor=reactor,
        pool=FakePool(answer=answer),
        max_in_flight=10_000,
    )

    def started(_: object) -> Any:
        for i in range(options.handlers):
            dispatcher.add_event_handler(HANDLER, "during", kind=f"{i}:" + "m" * 400)
        dispatcher.add_event_handler(HANDLER, "during", kind="big")
        return listen(reactor, dispatcher, "tcp:0:interface=127.0.0.1")

    def listening(listener: Any) -> None:
        print(f"port {listener.getHost().port}", flush=True)

    def failed(reason: Any) -> None:
        print(f"failed: {reason.getErrorMessage()}", flush=True)
        reactor.stop()

    stdio.StandardIO(_StopOnClose())
    dispatcher.start().addCallback(started).addCallbacks(listening, failed)
    reactor.run()


if __name__ == "__main__":
    main(sys.argv[1:])
