"""
Faster AMP pipes between the parent and a child: L{write_now}, L{read_more},
L{widen}.

Twisted's pipe descriptors are made for streams of any kind, not for one
request/answer exchange at a time, and three of their habits cost a round trip
dearly:

 - every write is buffered until the reactor's next turn: the bytes reach the
   pipe only after another C{epoll_wait} and four C{epoll_ctl} calls (stop
   reading, start writing, then the reverse), a turn on each side of every
   round trip.  L{write_now} writes at once when nothing is buffered ahead;
 - a read takes 8 KiB, one reactor turn each: a 1 MiB event is 128 turns of
   the child's reactor.  L{read_more} reads on while the pipe has more, up to
   L{READ_LIMIT} per turn;
 - a pipe holds 64 KiB, so a large event is written in pieces, each waiting
   for the child to drain the last.  L{widen} asks the kernel for
   L{PIPE_SIZE} (silently keeping what it has if refused).

Used on both ends of a child's AMP pipes (the parent's, the child's): pure
Twisted, nothing of the dispatcher.
"""

from __future__ import annotations

import errno
import fcntl
import os
from typing import Any

from twisted.internet import fdesc, main

#: Bytes read per C{read} call: below glibc's threshold for mapping memory, so
#: that the buffer of a small read does not cost a C{mmap} and a C{munmap}.
READ_SIZE = 64 * 1024
#: The most bytes one reactor turn reads from one pipe.
READ_LIMIT = 4 * 1024 * 1024
#: The capacity asked of each pipe (Linux's default cap for unprivileged
#: processes, C{/proc/sys/fs/pipe-max-size}).
PIPE_SIZE = 1024 * 1024

_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)


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


def read_more(reader: Any) -> None:
    """
    Make the pipe reader C{reader} (a Twisted C{ProcessReader}) read on while
    its pipe has more, up to L{READ_LIMIT} bytes a turn, handing them to its
    C{dataReceived} at once; the end of the pipe and errors end it as before.
    """
    fd = reader.fileno()
    received = reader.dataReceived

    def doRead() -> object:
        chunks = []
        total = 0
        ended: object = None
        while total < READ_LIMIT:
            try:
                chunk = os.read(fd, READ_SIZE)
            except OSError as e:
                if e.errno not in (errno.EAGAIN, errno.EINTR):
                    ended = main.CONNECTION_LOST
                break
            if not chunk:
                ended = main.CONNECTION_DONE
                break
            chunks.append(chunk)
            total += len(chunk)
            if len(chunk) < READ_SIZE:
                break  # the pipe is empty for now
        if chunks:
            received(chunks[0] if len(chunks) == 1 else b"".join(chunks))
        return ended

    reader.doRead = doRead


def widen(fd: int, size: int = PIPE_SIZE) -> None:
    """
    Ask for the pipe C{fd} to hold C{size} bytes; keep its size if refused
    (another system, or the user's pipe quota spent).
    """
    try:
        fcntl.fcntl(fd, _F_SETPIPE_SZ, size)
    except OSError:
        pass
