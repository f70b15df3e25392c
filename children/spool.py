"""
The child's side of the spool: L{SpoolWriter}.

The spool is a file the parent handed over as a descriptor (a C{memfd}, so
memory, not disk).  Before a batch the child writes a header line
C{"<seq> <monotonic start>"}, and after each invocation a line C{"<monotonic
end> <record>"}.  When the child dies or is killed mid-batch, the parent reads
it (L{actordispatch._local.child.Child.read_spool}) to keep the outcomes of the
invocations that finished, to name the one that was running, and to run the
others elsewhere; while the batch runs, it reads it to time each invocation
from its own start.

The writer maps the file and writes lines into memory: no system call per
invocation (a C{pwrite} costs about as much as the rest of running a trivial
handler).  Three rules keep a reader from ever taking a half-written line or an
earlier batch's line for a finished invocation of this one:

 - the bytes the last batch used are zeroed before the header is written, so
   everything after the last line written is zero;
 - a line's bytes are written first, its newline after them, as a separate
   store: a line without its newline is unfinished, whatever order the copy
   wrote its bytes in;
 - the reader stops at the first zero byte.

Where the file cannot be mapped (an address space limit, say), the writer falls
back to truncating the file per batch and one C{pwrite} per line, which keeps
the same format.
"""

from __future__ import annotations

import mmap
import os

#: The mapping's first size; it doubles when a batch's lines need more.
INITIAL_SIZE = 1024 * 1024
#: Past this many bytes used, a batch start frees the pages (truncates the file
#: and sets its size again) instead of zeroing them.
ZERO_LIMIT = 256 * 1024


class SpoolWriter:
    """
    Writes one batch's header and lines at a time into the spool file C{fd}.
    """

    def __init__(self, fd: int, initial_size: int = INITIAL_SIZE) -> None:
        self._fd = fd
        self._map: mmap.mmap | None = None
        self._used = 0
        try:
            if os.fstat(fd).st_size < initial_size:
                os.ftruncate(fd, initial_size)
            self._map = mmap.mmap(fd, initial_size)
        except (OSError, ValueError):
            self._map = None  # pwrite it is

    @property
    def mapped(self) -> bool:
        """
        Whether lines go to memory (else one C{pwrite} each).
        """
        return self._map is not None

    def start(self, seq: int, started: float) -> None:
        """
        Begin batch C{seq}, started at C{started}: forget the last batch's
        lines, write the header.
        """
        spool = self._map
        if spool is None:
            os.ftruncate(self._fd, 0)
            self._used = 0
        elif self._used > ZERO_LIMIT:
            size = len(spool)
            os.ftruncate(self._fd, 0)
            os.ftruncate(self._fd, size)
        elif self._used:
            spool[: self._used] = bytes(self._used)
        self._used = 0
        self.line(b"%d %r" % (seq, started))

    def line(self, content: bytes) -> None:
        """
        Append one line (C{content} without its newline).
        """
        offset = self._used
        end = offset + len(content)
        spool = self._map
        if spool is None:
            os.pwrite(self._fd, content + b"\n", offset)
            self._used = end + 1
            return
        if end + 1 >= len(spool):
            self._grow(end + 2)
            spool = self._map
            assert spool is not None
        spool[offset:end] = content
        spool[end] = 10  # the newline, after the bytes it ends
        self._used = end + 1

    def _grow(self, needed: int) -> None:
        spool = self._map
        assert spool is not None
        size = len(spool)
        while size < needed:
            size *= 2
        try:
            spool.resize(size)
        except (OSError, ValueError, SystemError):
            # No room to map more: write the rest of this batch with pwrite
            # (what is mapped stays valid and is read through the file).
            spool.close()
            self._map = None
            os.ftruncate(self._fd, self._used)
