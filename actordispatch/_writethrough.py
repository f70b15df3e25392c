"""
Writing to a pipe at once: L{write_now}.

Twisted's descriptors buffer every write until the reactor's next turn: the
bytes reach the pipe only after another C{epoll_wait} and four C{epoll_ctl}
calls (stop reading, start writing, then the reverse).  On the one-event path
that is a reactor turn on each side of every round trip.  When nothing is
buffered ahead of the data, L{write_now} writes it now, and hands only
what the pipe did not take to the descriptor, which then writes it as usual.

Used on both ends of a child's AMP pipes (the parent's, the child's): pure
Twisted, nothing of the dispatcher.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import fdesc


def write_now(writer: Any, data: bytes) -> None:
    """
    Write C{data} to the descriptor C{writer} (a Twisted C{FileDescriptor}),
    at once when its buffer is empty, keeping the order of the bytes.

    A write that fails is left to the descriptor: it buffers the data and
    meets the same error on its next write, and loses its connection as it
    would have.
    """
    if (
        data
        and writer.connected
        and not writer.disconnecting
        and not writer._tempDataLen
        and writer.offset == len(writer.dataBuffer)
    ):
        written = fdesc.writeToFD(writer.fileno(), data)
        if written == len(data):
            return
        if isinstance(written, int) and written > 0:
            data = data[written:]
    writer.write(data)
