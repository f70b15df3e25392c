"""
The wire protocol of the AMP endpoint for external processes: its commands,
their error codes, and the JSON checks of what a peer sends.

The reference, with every argument and error code, is
C{docs/amp-protocol.rst}; C{docs/examples/external_handler.py} implements the
client with nothing but Twisted.  It uses AMP's basic types only, plus one
convention of ours for values over AMP's 64 KiB limit (L{ChunkedBytes}: a value
C{name} continues in the keys C{name.1}, C{name.2}, ... of the same box).
Events, values, keywords and match specs travel as UTF-8 JSON.

Commands an external process sends (answered by
L{actordispatch._external.server.DispatcherAMP}):
 - L{Fire}: fire an event, get every handler's outcome;
 - L{RegisterHandler} / L{UnregisterHandler}: serve as a handler of a phase;
 - L{ListHandlers}: what is registered.

Command the dispatcher sends to an external process that registered a handler
(from its L{actordispatch.RemotePool}):
 - L{Invoke}: run that handler on an event.
"""

from __future__ import annotations

import functools
import json
import re
from typing import Any, ClassVar

from twisted.protocols import amp

from actordispatch._core.errors import (
    ActorDispatchError,
    FollowUpError,
    NotRunningError,
    OverloadedError,
)
from actordispatch._core.match import from_table
from actordispatch._core.result import DispatchResult
from actordispatch._wire.codec import finite_float, peer_json, refuse_constant
from actordispatch._wire.commands import ChunkedBytes
from actordispatch._wire.outcome_json import encode_items, outcome_to_json

#: The form of the name a peer gives its handler: a dotted, ASCII identifier.
EXTERNAL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*\Z")
#: The longest handler name a peer may give.
MAX_NAME_LENGTH = 200


# --- errors on the wire ----------------------------------------------------------


class BadKeywordError(ActorDispatchError, ValueError):
    """
    C{BAD_KEYWORD}: fired keywords that are not a JSON object of scalars, or
    that the dispatcher does not allow.
    """


class BadEventError(ActorDispatchError, ValueError):
    """
    C{BAD_EVENT}: an event that is not JSON, or that the dispatcher cannot
    carry (too large, a non-finite number...).
    """


class BadHandlerError(ActorDispatchError, ValueError):
    """
    C{BAD_HANDLER}: a registration the dispatcher refuses: a bad name, an
    unknown phase, a match keyword that is not allowed, bad options.
    """


class UnknownHandlerError(ActorDispatchError, KeyError):
    """
    C{UNKNOWN_HANDLER}: a handler id this connection did not register, or one
    already removed.
    """

    def __str__(self) -> str:
        # KeyError quotes its argument; the wire wants the plain message.
        return str(self.args[0]) if self.args else ""


class DispatchFailedError(ActorDispatchError):
    """
    C{DISPATCH_FAILED}: the dispatcher failed the event for a reason of its
    own (a bug, logged on the dispatcher's side).
    """


class RemoteHandlerError(ActorDispatchError):
    """
    C{HANDLER_ERROR}: an external handler raised.  Its message is the JSON
    description C{{"type": ..., "message": ..., "traceback": ...}}.
    """


# --- commands ----------------------------------------------------------------------


class Fire(amp.Command):
    """
    External process to dispatcher: fire an event.

    Arguments: C{event}, chunked JSON; C{keywords} (optional), a JSON object of
    match keyword to JSON scalar; C{within} (optional), the C{handler_id} of an
    L{Invoke} this process is answering: the event is then a I{follow-up} of
    that invocation, which starts at once (it does not queue behind the event
    that invoked the handler, which may be waiting for it) one level deeper,
    and is refused with C{FOLLOW_UP} past the dispatcher's C{max_depth}.
    Answers C{outcomes}, chunked JSON (an array of outcome objects, see
    L{outcome_to_json}) and C{ok} (every outcome is C{"ok"}).
    """

    commandName = b"Fire"
    arguments = [
        (b"event", ChunkedBytes()),
        (b"keywords", amp.Unicode(optional=True)),
        (b"within", amp.Integer(optional=True)),
    ]
    response = [(b"outcomes", ChunkedBytes()), (b"ok", amp.Boolean())]
    errors = {
        NotRunningError: b"NOT_RUNNING",
        OverloadedError: b"OVERLOADED",
        BadKeywordError: b"BAD_KEYWORD",
        BadEventError: b"BAD_EVENT",
        DispatchFailedError: b"DISPATCH_FAILED",
        FollowUpError: b"FOLLOW_UP",
    }


class RegisterHandler(amp.Command):
    """
    External process to dispatcher: serve as handler C{name} of C{phase} for
    the events C{match} matches: a JSON object of keyword to a scalar, C{null}
    (no constraint) or an operator as a table of one key (C{{"in": [..]}},
    C{{"not": v}}, C{{"glob": "p*"}}, C{{"present": true}},
    C{{"absent": true}}; see L{actordispatch._core.match.from_table}); optionally
    with a C{timeout} (seconds) and C{max_calls}.  Answers the C{handler_id}
    that L{Invoke} will carry.
    """

    commandName = b"RegisterHandler"
    arguments = [
        (b"name", amp.Unicode()),
        (b"phase", amp.Unicode()),
        (b"match", amp.Unicode(optional=True)),
        (b"timeout", amp.Float(optional=True)),
        (b"max_calls", amp.Integer(optional=True)),
    ]
    response = [(b"handler_id", amp.Integer())]
    errors = {BadHandlerError: b"BAD_HANDLER", OverloadedError: b"OVERLOADED"}


class UnregisterHandler(amp.Command):
    """
    External process to dispatcher: stop serving handler C{handler_id}.
    """

    commandName = b"UnregisterHandler"
    arguments = [(b"handler_id", amp.Integer())]
    response: ClassVar[list[tuple[bytes, amp.Argument]]] = []
    errors = {UnknownHandlerError: b"UNKNOWN_HANDLER"}


class ListHandlers(amp.Command):
    """
    External process to dispatcher: the handlers registered, as a chunked JSON
    array of objects (see
    L{PeerCommands.list_handlers<actordispatch._external.responders.PeerCommands.list_handlers>}).
    """

    commandName = b"ListHandlers"
    arguments: ClassVar[list[tuple[bytes, amp.Argument]]] = []
    response = [(b"handlers", ChunkedBytes())]


class Invoke(amp.Command):
    """
    Dispatcher to external process: run handler C{handler} (the name the peer
    registered) with id C{handler_id} in C{phase} on C{event} (chunked JSON);
    C{timeout} says how many seconds the dispatcher waits.  Answers C{value}
    (chunked JSON), optionally C{pid}, C{duration} (the handler's own run
    time) and C{veto} (the reason of a veto: see L{actordispatch.Veto}); or
    fails with C{HANDLER_ERROR}.
    """

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
    errors = {RemoteHandlerError: b"HANDLER_ERROR"}


class _KeepErrorCodes(dict[bytes, Any]):
    """
    A command's C{reverseErrors} that keeps the peer's error code: AMP turns
    a code the command does not declare into C{amp.UnknownRemoteError}, whose
    code is C{UNKNOWN} and whose message is C{"Code<UNKNOWN>: description"};
    here such a code builds an C{amp.RemoteAmpError} with the peer's own code
    and description.
    """

    def get(self, code: bytes, default: Any = None) -> Any:
        if code in self:
            return self[code]
        return functools.partial(amp.RemoteAmpError, code)


# Set by AMP's Command metaclass, which its type stubs do not say.
Invoke.reverseErrors = _KeepErrorCodes(Invoke.reverseErrors)  # type: ignore[attr-defined]


def peer_error_message(error: Exception) -> str:
    """
    The message of an error outcome for an AMP error a peer answered with a
    code other than C{HANDLER_ERROR}: its code, a colon and its description
    (C{"WEIRD: weird description"}).  AMP's own C{UNHANDLED} (the peer does
    not implement the command) arrives as C{amp.UnhandledCommand}, which
    carries the same two.
    """
    if isinstance(error, amp.RemoteAmpError):
        code, description = error.errorCode, error.description
    else:
        code, description = (error.args + (b"", ""))[:2]
    if isinstance(code, bytes):
        code = code.decode("ascii", "backslashreplace")
    if isinstance(description, bytes):
        description = description.decode("utf-8", "replace")
    return f"{code}: {description}"


# --- JSON helpers -----------------------------------------------------------------


def _json_object(
    text: str | None, what: str, operators: bool = False
) -> dict[str, Any]:
    """
    A JSON object of scalars (strings, finite numbers, booleans, nulls), or,
    with C{operators}, of scalars and operator tables (L{from_table}), which
    it turns into operators.

    @raise ValueError: naming C{what} and the problem.
    """
    if text is None or text == "":
        return {}
    try:
        value = json.loads(
            text, parse_constant=refuse_constant, parse_float=finite_float
        )
    except (ValueError, RecursionError) as e:
        raise ValueError(f"{what} is not JSON: {e}") from None
    if not isinstance(value, dict):
        raise ValueError(f"{what} must be a JSON object, not {type(value).__name__}")
    for key, item in value.items():
        if operators and isinstance(item, dict):
            try:
                value[key] = from_table(item)
            except ValueError as e:
                raise ValueError(f"{what}.{key}: {e}") from None
        elif item is not None and not isinstance(item, (str, int, float, bool)):
            raise ValueError(
                f"{what}: {key!r} must be a string, number, boolean, null"
                + (" or an operator table" if operators else "")
            )
    return value


def _encode_outcomes(result: DispatchResult) -> bytes:
    return peer_json(
        encode_items([outcome_to_json(o) for o in result.outcomes], "value")
    )


def _parse_handler_error(description: str) -> tuple[str, str, str | None]:
    """
    C{(type, message, traceback)} from a C{HANDLER_ERROR} description; one
    that is not the JSON object it should be is the message itself.
    """
    try:
        parsed = json.loads(description)
    except (ValueError, RecursionError):
        parsed = None
    if not isinstance(parsed, dict):
        return "actordispatch.RemoteError", description, None
    kind = parsed.get("type")
    message = parsed.get("message")
    tb = parsed.get("traceback")
    return (
        kind if isinstance(kind, str) and kind else "actordispatch.RemoteError",
        message if isinstance(message, str) else json.dumps(message),
        tb if isinstance(tb, str) and tb else None,
    )
