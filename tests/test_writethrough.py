"""
Unit tests for L{actordispatch._writethrough}: bytes written to a pipe at
once when nothing is buffered ahead of them, and the descriptor's own
buffering otherwise.  A real pipe; a L{MemoryReactor} stands in for the
reactor's descriptor sets.
"""

from __future__ import annotations

import fcntl
import os

from twisted.internet import fdesc
from twisted.internet.process import ProcessWriter
from twisted.internet.testing import MemoryReactor
from twisted.trial.unittest import SynchronousTestCase

from actordispatch._writethrough import write_now


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
