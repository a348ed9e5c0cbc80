"""Zeroed memory whose pages the OS makes as they are first touched, and which pages were
touched: the bricked grid's storage (a scan touches a grid sparsely)."""
from __future__ import annotations

import errno
import functools
import mmap
import os
import weakref

import numpy as np


class ZeroedPages:
    """A zeroed array of n elements in 4 KiB pages that the OS makes as they are first
    touched (MADV_NOHUGEPAGE), and which pages were touched (`written_pages`): anonymous
    memory mapped private, or with `shared` a memory file of its own (Linux memfd, on
    tmpfs) mapped shared; np.zeros where the OS offers neither (touched pages not known).

    Small pages: numpy asks Linux for 2 MiB pages on large arrays.  A grid is touched
    sparsely (a scan reaches a part of the bricks of its grid), and each touched brick
    would then cost a whole 2 MiB page, zeroed on first touch: more memory and more time
    (bench/full_rotation.py measures both); on memory already touched, small pages are
    not slower.

    Private or shared: the transform's first touch of a page is a read (its += loads
    before it stores).  Private memory maps the zero page on that read and copies it on
    the write: two faults a page.  A memory file makes its page once, on the first touch,
    but that fault costs more than both: one thread is better off private.  With two
    threads, though, each copy of the zero page also flushes the other core's TLB by an
    interrupt (on a VM, an exit on both sides), and shared is the faster
    (bench/threads.py).  Reading a page of a memory file allocates it: read only the pages
    written.  Pages touched: from /proc/self/pagemap (private; bits 63 and 62: in memory or
    swapped out) or from the file's holes (SEEK_DATA / SEEK_HOLE, which count pages
    swapped out as data; pagemap does not show a shared page swapped out)."""

    def __init__(self, n: int, dtype, shared: bool = False):
        dtype = np.dtype(dtype)
        nbytes = max(int(n) * dtype.itemsize, 1)
        self.shared = bool(shared) and hasattr(os, "memfd_create")
        self._fd = None
        if not (hasattr(mmap, "MADV_NOHUGEPAGE") and hasattr(mmap, "MAP_ANONYMOUS")):
            self.array = np.zeros(int(n), dtype)  # pragma: no cover - not Linux
            self._known = False
            return
        buf = self._memory_file(nbytes) if self.shared else None
        if buf is None:  # (private, or no memory file to be had: a sandbox's seccomp)
            self.shared = False
            buf = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        buf.madvise(mmap.MADV_NOHUGEPAGE)
        self._known = True
        self.array = np.frombuffer(buf, dtype, count=int(n))  # the array holds the mapping

    def _memory_file(self, nbytes: int) -> mmap.mmap | None:
        """A new memory file of nbytes (zeros) mapped shared, or None where none is had."""
        try:
            fd = os.memfd_create("hklflow-grid", os.MFD_CLOEXEC)
        except OSError:
            return None
        try:
            os.ftruncate(fd, nbytes)
            buf = mmap.mmap(fd, nbytes, flags=mmap.MAP_SHARED)
        except OSError:
            os.close(fd)
            raise
        self._fd = fd
        weakref.finalize(self, os.close, fd)
        return buf

    def written_pages(self, offset: int, nbytes: int) -> np.ndarray | None:
        """bool per memory page of the array's bytes [offset, offset + nbytes): False for a
        page never touched (reads as zeros), True for one touched (in memory or swapped
        out).  None where that is not known (no such memory, or a page table or memory
        file that does not tell: checked once on a page written and one not)."""
        if not (self._known and _pages_tell_written(self.shared)):
            return None
        return self._touched(offset, nbytes)

    def _touched(self, offset: int, nbytes: int) -> np.ndarray | None:
        page = mmap.PAGESIZE
        first, stop = offset // page, -(-(offset + max(nbytes, 1)) // page)
        if not self.shared:  # (the mapping starts on a page)
            return _pagemap(self.array.ctypes.data // page + first, stop - first)
        pages = np.zeros(stop - first, bool)
        at, end = first * page, stop * page
        while at < end:
            try:
                data = os.lseek(self._fd, at, os.SEEK_DATA)
            except OSError as e:
                if e.errno == errno.ENXIO:  # no data from `at` on
                    break
                raise
            if data >= end:
                break
            hole = os.lseek(self._fd, data, os.SEEK_HOLE)
            pages[data // page - first:-(-min(hole, end) // page) - first] = True
            at = hole
        return pages


def _pagemap(first: int, count: int) -> np.ndarray | None:
    """bool per page of this process's pages [first, first + count): in memory or swapped
    out (bits 63 and 62 of /proc/self/pagemap, readable without privileges)."""
    try:
        with open("/proc/self/pagemap", "rb", buffering=0) as f:
            f.seek(8 * first)
            raw = f.read(8 * count)
    except OSError:  # pragma: no cover - not Linux, or /proc hidden
        return None
    if len(raw) != 8 * count:  # pragma: no cover
        return None
    return (np.frombuffer(raw, np.uint64) >> np.uint64(62)) != 0


@functools.lru_cache(maxsize=2)
def _pages_tell_written(shared: bool) -> bool:
    """Whether the page table (private memory) or a memory file's holes (shared) tell a
    page written from one never touched (a sandbox could show every page absent, or none:
    then a grid would read as zeros)."""
    try:
        probe = ZeroedPages(2 * mmap.PAGESIZE, np.uint8, shared)
        probe.array[0] = 1
        pages = probe._touched(0, 2 * mmap.PAGESIZE) if probe._known else None
    except OSError:  # pragma: no cover - no memory files or no SEEK_DATA here
        return False
    return pages is not None and pages.tolist() == [True, False]
