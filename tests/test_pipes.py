"""
Unit tests for L{actordispatch._wire.pipes}: bytes written to a pipe at once when
nothing is buffered ahead of them (the descriptor's own buffering otherwise),
reads that take all a pipe holds, and wider pipes.  Real pipes; a
L{MemoryReactor} stands in for the reactor's descriptor sets.
"""

from __future__ import annotations

import fcntl
import os

from twisted.internet import fdesc, main
from twisted.internet.process import ProcessWriter
from twisted.internet.testing import MemoryReactor
from twisted.trial.unittest import SynchronousTestCase

from actordispatch._wire.pipes import PIPE_SIZE, READ_SIZE, read_more, widen, write_now


class _Process:
    """
    The least of a process a L{ProcessWriter} needs: where it reports its
    end.
    """

    lost: object = None

    def childConnectionLost(self, name: str, reason: object) -> None:
        self.lost = reason


class WriteNowTests(SynchronousTestCase):
    """
    L{write_now} on a L{ProcessWriter} over a real non-blocking pipe.
    """

    def setUp(self) -> None:
        self.read_end, write_end = os.pipe()
        fdesc.setNonBlocking(self.read_end)
        self.reactor = MemoryReactor()
        self.process = _Process()
        self.writer = ProcessWriter(self.reactor, self.process, "w", write_end)
        self.addCleanup(os.close, self.read_end)
        self.addCleanup(self.writer.connectionLost, None)

    def read(self) -> bytes:
        try:
            return os.read(self.read_end, 1 << 20)
        except BlockingIOError:
            return b""

    def test_empty_buffer_writes_at_once(self) -> None:
        """
        With nothing buffered, the bytes are in the pipe when C{write_now}
        returns, and the writer was never asked to wait for writability.
        """
        write_now(self.writer, b"hello")
        self.assertEqual(self.read(), b"hello")
        self.assertNotIn(self.writer, self.reactor.getWriters())

    def test_behind_buffered_bytes_keeps_order(self) -> None:
        """
        Bytes buffered by the descriptor go first: C{write_now} buffers behind
        them rather than overtaking them.
        """
        self.writer.write(b"first ")
        write_now(self.writer, b"second")
        self.assertEqual(self.read(), b"")
        self.assertIn(self.writer, self.reactor.getWriters())
        self.writer.doWrite()
        self.assertEqual(self.read(), b"first second")

    def test_full_pipe_buffers_the_rest(self) -> None:
        """
        What a full pipe does not take is buffered and written, in order, once
        the pipe drains.
        """
        size = fcntl.fcntl(self.writer.fileno(), fcntl.F_GETPIPE_SZ)
        data = bytes(range(256)) * (2 * size // 256 + 1)
        write_now(self.writer, data)
        self.assertIn(self.writer, self.reactor.getWriters())
        received = b""
        while len(received) < len(data):
            received += self.read()
            self.writer.doWrite()
        self.assertEqual(received, data)

    def test_closed_pipe_loses_the_connection(self) -> None:
        """
        A pipe whose reader is gone: the write is left to the descriptor, which
        meets the error on its next write and loses its connection as usual.
        """
        os.close(self.read_end)
        self.read_end = os.open(os.devnull, os.O_RDONLY)  # for the cleanup
        write_now(self.writer, b"lost")
        self.assertIsNotNone(self.writer.doWrite())


class _Reader:
    """
    The least of a pipe reader L{read_more} needs: a descriptor and where the
    bytes go.
    """

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.received: list[bytes] = []

    def fileno(self) -> int:
        return self.fd

    def dataReceived(self, data: bytes) -> None:
        self.received.append(data)

    def doRead(self) -> object:
        raise AssertionError("replaced by read_more")


class ReadMoreTests(SynchronousTestCase):
    """
    L{read_more}: one reactor turn reads what the pipe holds, in one piece,
    and reports its end as Twisted's readers do.
    """

    def setUp(self) -> None:
        self.read_end, self.write_end = os.pipe()
        fdesc.setNonBlocking(self.read_end)
        widen(self.write_end)
        self.reader = _Reader(self.read_end)
        read_more(self.reader)
        self.addCleanup(os.close, self.read_end)

    def test_reads_all_that_is_there(self) -> None:
        """
        Several 64 KiB reads' worth arrive in one call of dataReceived; an
        empty pipe reads nothing and reports nothing.
        """
        data = os.urandom(3 * READ_SIZE + 5)
        self.assertEqual(os.write(self.write_end, data), len(data))
        self.assertIsNone(self.reader.doRead())
        self.assertEqual(self.reader.received, [data])
        self.assertIsNone(self.reader.doRead())
        self.assertEqual(len(self.reader.received), 1)
        os.close(self.write_end)

    def test_end_of_pipe(self) -> None:
        """
        Bytes written before the writer closed are delivered, then (on the
        next turn, the pipe being readable at its end) the end is reported as
        CONNECTION_DONE.
        """
        os.write(self.write_end, b"last words")
        os.close(self.write_end)
        self.assertIsNone(self.reader.doRead())
        self.assertEqual(self.reader.received, [b"last words"])
        self.assertIs(self.reader.doRead(), main.CONNECTION_DONE)


class WidenTests(SynchronousTestCase):
    """
    L{widen} asks for a larger pipe and keeps quiet when refused.
    """

    def test_widens(self) -> None:
        """
        A new pipe holds 64 KiB; widened, it holds PIPE_SIZE (Linux's default
        cap for unprivileged processes).
        """
        read_end, write_end = os.pipe()
        self.addCleanup(os.close, read_end)
        self.addCleanup(os.close, write_end)
        widen(write_end)
        self.assertEqual(fcntl.fcntl(write_end, fcntl.F_GETPIPE_SZ), PIPE_SIZE)

    def test_refused_quietly(self) -> None:
        """
        Something that is not a pipe cannot be widened: nothing is raised.
        """
        with open(os.devnull, "rb") as f:
            widen(f.fileno())
