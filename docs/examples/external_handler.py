"""
An external process for an actordispatch dispatcher, written with nothing but
Twisted's AMP: it serves as a handler, fires events, and lists handlers.

It does not import actordispatch, on purpose: it redefines the few commands it
uses, exactly as a program in another language would implement them from
``docs/amp-protocol.rst``.  The test suite checks that these definitions match
the dispatcher's.

Usage::

    python external_handler.py ENDPOINT serve NAME PHASE [--match JSON]
                               [--timeout SECONDS] [--max-calls N]
    python external_handler.py ENDPOINT fire EVENT_JSON [--keywords JSON]
    python external_handler.py ENDPOINT list

ENDPOINT is a Twisted client endpoint string: ``unix:path=/run/ad.sock``,
``tcp:host=127.0.0.1:port=8750``, or with TLS and a client certificate
``tls:HOST:PORT:trustRoots=CA_DIR:certificate=client.pem:privateKey=client.key``.

``serve`` registers handler NAME for PHASE and the events its match spec
matches, prints ``registered <id>``, then answers every Invoke until the
connection ends: the value is ``{"pid", "handler", "phase", "event"}``; an event
``{"sleep": S}`` makes it wait S seconds first, and ``{"fail": "why"}`` makes it
raise (the dispatcher records an ``"error"`` outcome).  ``fire`` prints the
outcomes as one JSON line.  Errors go to stderr with exit status 1.
"""

import argparse
import json
import os
import sys
import time

from twisted.internet import defer, task
from twisted.internet.endpoints import clientFromString, connectProtocol
from twisted.protocols import amp

#: AMP's limit on one value.
AMP_MAX_VALUE = 0xFFFF


class ChunkedBytes(amp.Argument):
    """
    A bytes value of any size: the first 65,535 bytes under C{name}, the rest
    under C{name.1}, C{name.2}, ... of the same box.
    """

    def toBox(self, name, strings, objects, proto):
        value = objects[name.decode("ascii")]
        strings[name] = value[:AMP_MAX_VALUE]
        for index, start in enumerate(
            range(AMP_MAX_VALUE, len(value), AMP_MAX_VALUE), start=1
        ):
            strings[name + b".%d" % index] = value[start : start + AMP_MAX_VALUE]

    def fromBox(self, name, strings, objects, proto):
        parts = [strings[name]]
        index = 1
        while (name + b".%d" % index) in strings:
            parts.append(strings[name + b".%d" % index])
            index += 1
        objects[name.decode("ascii")] = b"".join(parts)


# --- errors the dispatcher answers with --------------------------------------------


class DispatcherError(Exception):
    """
    The dispatcher refused a command; C{code} is its AMP error code.
    """

    code = b"?"

    def __str__(self):
        return f"{self.code.decode()}: {super().__str__()}"


class NotRunningError(DispatcherError):
    code = b"NOT_RUNNING"


class OverloadedError(DispatcherError):
    code = b"OVERLOADED"


class BadKeywordError(DispatcherError):
    code = b"BAD_KEYWORD"


class BadEventError(DispatcherError):
    code = b"BAD_EVENT"


class DispatchFailedError(DispatcherError):
    code = b"DISPATCH_FAILED"


class FollowUpError(DispatcherError):
    code = b"FOLLOW_UP"


class BadHandlerError(DispatcherError):
    code = b"BAD_HANDLER"


class UnknownHandlerError(DispatcherError):
    code = b"UNKNOWN_HANDLER"


class HandlerError(Exception):
    """
    Raised by our Invoke responder: sent as HANDLER_ERROR, with the JSON
    description {type, message, traceback}.
    """


def _codes(*classes):
    return {cls: cls.code for cls in classes}


# --- the commands -------------------------------------------------------------------


class Fire(amp.Command):
    commandName = b"Fire"
    arguments = [
        (b"event", ChunkedBytes()),
        (b"keywords", amp.Unicode(optional=True)),
        (b"within", amp.Integer(optional=True)),
    ]
    response = [(b"outcomes", ChunkedBytes()), (b"ok", amp.Boolean())]
    errors = _codes(
        NotRunningError,
        OverloadedError,
        BadKeywordError,
        BadEventError,
        DispatchFailedError,
        FollowUpError,
    )


class RegisterHandler(amp.Command):
    commandName = b"RegisterHandler"
    arguments = [
        (b"name", amp.Unicode()),
        (b"phase", amp.Unicode()),
        (b"match", amp.Unicode(optional=True)),
        (b"timeout", amp.Float(optional=True)),
        (b"max_calls", amp.Integer(optional=True)),
    ]
    response = [(b"handler_id", amp.Integer())]
    errors = _codes(BadHandlerError, OverloadedError)


class UnregisterHandler(amp.Command):
    commandName = b"UnregisterHandler"
    arguments = [(b"handler_id", amp.Integer())]
    response = []
    errors = _codes(UnknownHandlerError)


class ListHandlers(amp.Command):
    commandName = b"ListHandlers"
    arguments = []
    response = [(b"handlers", ChunkedBytes())]


class Invoke(amp.Command):
    commandName = b"Invoke"
    arguments = [
        (b"handler_id", amp.Integer()),
        (b"handler", amp.Unicode()),
        (b"phase", amp.Unicode()),
        (b"event", ChunkedBytes()),
        (b"timeout", amp.Float(optional=True)),
    ]
    response = [
        (b"value", ChunkedBytes()),
        (b"pid", amp.Integer(optional=True)),
        (b"duration", amp.Float(optional=True)),
        (b"veto", amp.Unicode(optional=True)),
    ]
    errors = {HandlerError: b"HANDLER_ERROR"}


# --- the handler ----------------------------------------------------------------------


def handle(reactor, name, phase, event):
    """
    What this process does for an event: say who it is and what it got.
    """
    if isinstance(event, dict) and event.get("fail"):
        raise ValueError(str(event["fail"]))
    value = {"pid": os.getpid(), "handler": name, "phase": phase, "event": event}
    if isinstance(event, dict) and isinstance(event.get("sleep"), (int, float)):
        return task.deferLater(reactor, event["sleep"], lambda: value)
    return value


class ExternalProcess(amp.AMP):
    """
    Our end of the connection: answers Invoke with L{handle}.
    """

    def __init__(self, reactor, out=print):
        super().__init__()
        self.reactor = reactor
        self.out = out
        self.closed = defer.Deferred()

    @Invoke.responder
    def invoke(self, handler_id, handler, phase, event, timeout=None):
        self.out(f"invoked {handler_id} {handler}")
        started = time.monotonic()
        try:
            decoded = json.loads(event)
        except ValueError as e:
            raise HandlerError(_describe(e, "")) from None
        running = defer.maybeDeferred(handle, self.reactor, handler, phase, decoded)

        def answered(value):
            return {
                "value": json.dumps(value).encode("utf-8"),
                "pid": os.getpid(),
                "duration": time.monotonic() - started,
            }

        def failed(failure):
            tb = failure.getTraceback()
            raise HandlerError(_describe(failure.value, tb))

        return running.addCallbacks(answered, failed)

    def connectionLost(self, reason):
        super().connectionLost(reason)
        self.closed.callback(None)


def _describe(error, tb):
    kind = f"{type(error).__module__}.{type(error).__qualname__}"
    # One AMP value holds at most 65,535 bytes: keep the end of the traceback.
    tb = tb[-30_000:]
    return json.dumps({"type": kind, "message": str(error), "traceback": tb})


# --- the commands of this script ------------------------------------------------------


def parse_arguments(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("endpoint", help="Twisted client endpoint string")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="serve as a handler")
    serve.add_argument("name")
    serve.add_argument("phase")
    serve.add_argument("--match", default="{}", help="JSON object")
    serve.add_argument("--timeout", type=float)
    serve.add_argument("--max-calls", type=int)
    fire = commands.add_parser("fire", help="fire an event, print the outcomes")
    fire.add_argument("event", help="JSON")
    fire.add_argument("--keywords", default="{}", help="JSON object")
    commands.add_parser("list", help="print the handlers as JSON")
    return parser.parse_args(argv)


@defer.inlineCallbacks
def main(reactor, argv, out=print):
    arguments = parse_arguments(argv)
    endpoint = clientFromString(reactor, arguments.endpoint)
    connection = yield connectProtocol(endpoint, ExternalProcess(reactor, out))
    try:
        if arguments.command == "serve":
            options = {}
            if arguments.timeout is not None:
                options["timeout"] = arguments.timeout
            if arguments.max_calls is not None:
                options["max_calls"] = arguments.max_calls
            answer = yield connection.callRemote(
                RegisterHandler,
                name=arguments.name,
                phase=arguments.phase,
                match=arguments.match,
                **options,
            )
            out(f"registered {answer['handler_id']}")
            yield connection.closed
        elif arguments.command == "fire":
            answer = yield connection.callRemote(
                Fire,
                event=arguments.event.encode("utf-8"),
                keywords=arguments.keywords,
            )
            outcomes = json.loads(answer["outcomes"])
            out(json.dumps({"ok": answer["ok"], "outcomes": outcomes}))
        else:
            answer = yield connection.callRemote(ListHandlers)
            out(json.dumps(json.loads(answer["handlers"])))
    finally:
        connection.transport.loseConnection()


def run(argv=None):
    """
    Run L{main} under a reactor; on failure, say why on stderr and exit 1.
    """

    def printed(line):
        print(line, flush=True)

    def report(failure):
        print(f"error: {failure.getErrorMessage()}", file=sys.stderr, flush=True)
        raise SystemExit(1)

    argv = sys.argv[1:] if argv is None else argv
    task.react(lambda reactor: main(reactor, argv, printed).addErrback(report))


if __name__ == "__main__":
    run()
