"""
The exceptions of actordispatch.

Every error the library raises on purpose derives from L{ActorDispatchError}, so
that callers can tell a dispatcher-level problem from a failure of their own code.
Errors that also mean "bad argument" derive from C{ValueError} too, so code written
for the original C{twisted_event_dispatcher} that catches C{ValueError} still works.

This module imports nothing from Twisted: the child side uses it as well.
"""

from __future__ import annotations


class ActorDispatchError(Exception):
    """
    Base class of every error raised by actordispatch itself.
    """


class NotRunningError(ActorDispatchError):
    """
    An event was fired on a dispatcher that is not running (never started, or
    stopped).  The event was not accepted: nothing will run for it and it will
    never be replayed.
    """


class HandlerImportError(ActorDispatchError, ImportError):
    """
    A child process could not import a handler given by name, or the name does not
    refer to a callable.  The message names the handler and the child's reason.
    """


class EventEncodingError(ActorDispatchError, ValueError):
    """
    An event (or a handler's result) holds a value the codec cannot carry across a
    process boundary: an object of an unsupported type, a non-finite float, a
    dictionary key that is not a string, and so on.
    """


class EventTooLargeError(EventEncodingError):
    """
    An encoded event is larger than the dispatcher's configured cap.
    """


class BatchDecodingError(ActorDispatchError):
    """
    A child could not decode the batch of invocations it was sent.  This is a bug
    or a version mismatch between parent and child, never a handler's fault.
    """


class ChildEndedError(ActorDispatchError):
    """
    A child process ended (exited or was killed) while calls to it were
    outstanding.

    @ivar exit_code: its exit code, if it exited.
    @ivar signal: the signal that ended it, if one did.
    @ivar pid: its process id, if known.
    """

    def __init__(
        self,
        exit_code: int | None = None,
        signal: int | None = None,
        pid: int | None = None,
        reason: str = "",
    ) -> None:
        self.exit_code = exit_code
        self.signal = signal
        self.pid = pid
        self.reason = reason
        super().__init__(self.describe())

    def describe(self) -> str:
        """
        How it ended, in words: C{"signal 9"}, C{"exit code 3"}, or the reason.
        """
        if self.reason:
            return self.reason
        if self.signal is not None:
            return f"signal {self.signal}"
        return f"exit code {self.exit_code}"


class ProtocolError(ActorDispatchError):
    """
    A child broke the AMP protocol: a malformed, oversized or unexpected box,
    an answer to nothing, or a frame left half-sent.  The child is dropped.
    """


class OverloadedError(ActorDispatchError):
    """
    The dispatcher's queue is full: the event was not accepted.
    """


class BrokerUnavailableError(ActorDispatchError):
    """
    The message broker of an AMQP pool cannot be reached (or the connection to
    it was lost): nothing was sent.  The pool keeps reconnecting in the
    background.
    """


class FollowUpError(ActorDispatchError):
    """
    A follow-up event a handler fired from its child was refused: the message
    says why (a keyword not allowed, an event too large, too many follow-ups
    outstanding, follow-ups disabled, the dispatcher stopping).  The handler
    sees it as the failure of C{children.fire_event}'s Deferred.
    """


class FollowUpDepthError(FollowUpError):
    """
    A follow-up event would be deeper than the dispatcher's C{max_depth}: a
    chain of handlers firing events that reach handlers firing events was cut
    (most often, a loop).
    """
