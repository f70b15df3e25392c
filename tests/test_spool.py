"""
Unit tests for the spool: the child's L{SpoolWriter} and the parent's
L{Child.read_spool} over a real memory file, in one process.
"""

from __future__ import annotations

from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from actordispatch._local.child import Child, spool_file
from actordispatch.children import spool as spool_module
from actordispatch.children.spool import ZERO_LIMIT, SpoolWriter


class SpoolTests(SynchronousTestCase):
    """
    What a writer writes, a reader reads: finished lines of the batch it asks
    for, never a half-written line or a line of an earlier batch.
    """

    initial_size = 4096
    #: whether the writer maps the file
    mapped = True

    def setUp(self) -> None:
        self.file = spool_file()
        self.addCleanup(self.file.close)
        self.child = Child(1, None, None, None, self.file, None)  # type: ignore[arg-type]
        self.writer = self.make_writer()

    def make_writer(self) -> SpoolWriter:
        return SpoolWriter(self.file.fileno(), initial_size=self.initial_size)

    def read(self, seq: int) -> tuple[float | None, list[tuple[float, bytes]]]:
        view = self.child.read_spool(seq, 64 * 1024 * 1024)
        return view.started, view.records

    def test_mode(self) -> None:
        """
        The writer maps the file when it can, and writes lines with C{pwrite}
        when it cannot.
        """
        self.assertEqual(self.writer.mapped, self.mapped)

    def test_lines_read_back(self) -> None:
        """
        The header's start and every finished line come back, for that batch
        only.
        """
        self.writer.start(7, 1.5)
        self.writer.line(b'2.5 {"s":"ok"}')
        self.writer.line(b'3.25 {"s":"error"}')
        self.assertEqual(
            self.read(7), (1.5, [(2.5, b'{"s":"ok"}'), (3.25, b'{"s":"error"}')])
        )
        self.assertEqual(self.read(8), (None, []))

    def test_shorter_batch_hides_the_last_one(self) -> None:
        """
        A batch with fewer lines than the one before shows only its own: the
        earlier lines, still in memory beyond them, were zeroed.
        """
        self.writer.start(1, 1.0)
        for n in range(20):
            self.writer.line(b'%d.0 {"n":%d}' % (n + 2, n))
        self.writer.start(2, 50.0)
        self.writer.line(b'51.0 {"n":"only"}')
        self.assertEqual(self.read(2), (50.0, [(51.0, b'{"n":"only"}')]))

    def test_half_written_line_is_unfinished(self) -> None:
        """
        A line whose bytes are in but not its newline (the child died between
        the two stores) is not finished: the reader stops before it.
        """
        self.writer.start(3, 1.0)
        self.writer.line(b'2.0 {"n":1}')
        if self.writer.mapped:
            torn = b'3.0 {"n":2}'
            offset = self.writer._used
            self.writer._map[offset : offset + len(torn)] = torn  # type: ignore[index]
        else:
            self.file.seek(0, 2)
            self.file.write(b'3.0 {"n":2}')
        self.assertEqual(self.read(3), (1.0, [(2.0, b'{"n":1}')]))

    def test_grows_past_its_first_size(self) -> None:
        """
        Lines beyond the mapping's first size make it grow; all come back.
        """
        self.writer.start(4, 1.0)
        value = b"x" * 1000
        for n in range(20):
            self.writer.line(b'%d.0 "%s"' % (n + 2, value))
        started, records = self.read(4)
        self.assertEqual(len(records), 20)
        self.assertEqual(records[-1], (21.0, b'"%s"' % value))

    def test_large_batch_then_small(self) -> None:
        """
        After a batch that used more than the zeroing limit, the next batch
        (which frees the pages instead of zeroing them) shows only its own
        lines.
        """
        self.writer.start(5, 1.0)
        value = b"y" * 4096
        for _ in range(ZERO_LIMIT // 4096 + 2):
            self.writer.line(b'2.0 "%s"' % value)
        self.writer.start(6, 9.0)
        self.writer.line(b"10.0 null")
        self.assertEqual(self.read(6), (9.0, [(10.0, b"null")]))
        self.assertEqual(self.read(5), (None, []))


class UnmappedSpoolTests(SpoolTests):
    """
    The same, for a writer that could not map the file (an address space
    limit, say) and writes each line with C{pwrite}.
    """

    mapped = False

    def make_writer(self) -> SpoolWriter:
        def refuse(*args: Any, **kwargs: Any) -> Any:
            raise OSError("no room")

        self.patch(spool_module.mmap, "mmap", refuse)
        return SpoolWriter(self.file.fileno(), initial_size=self.initial_size)
