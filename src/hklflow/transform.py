"""Transform of rotation frames to an (H, K, L) grid: every unmasked pixel of every frame
(optionally of every rotation sub-step of a frame) is mapped to (h, k, l) with the refined
geometry and added to the nearest voxel as corrected intensity and weight.

    hkl = (UB)^-1 R(phi)^-1 Q_lab(pixel)          (docs/conventions.md; Q without 2 pi)
    signal[voxel] += w * I * c(pixel) * s(frame),   weight[voxel] += w

with c = 1 / (solid angle relative to normal incidence x polarization factor) (pyFAI's
arrays), s = monitor_reference / monitor(frame) and w = 1 / subdivisions, so that the sum of
signal over the grid is the summed corrected intensity of the pixels that fall on it.

The compiled kernel accumulates into a bricked grid (8 x 8 x 8 voxel bricks, signal and
weight of a voxel side by side): consecutive detector pixels land in nearby voxels, which
then share cache lines and pages whatever the direction in which a detector row crosses the
grid.  It streams the frame and the per-pixel tables block by block: a vectorised pass
computes voxel coordinates in float32 for 8 pixels at a time, the ~0.2% of pixels within the
float32 rounding bound of a voxel face are decided again in float64 (so every decision equals
the float64 one), and a scatter adds the block, a voxel's cells in one vector addition
(see the comment above `_accumulate`).  Both kinds of volume come from one pass, each
pixel added once: the masked kind's left-out pixels to a second part of the grid, the
transform being the sum of the parts (BrickedGrid).  Several threads share the grid out by
shells of a quantity the crystal's turn leaves unchanged (ThreadShares): each adds only to
its own voxels, in the order of one thread, so the sums do not depend on the threads.
`numpy_transform` is the same mapping and binning in plain numpy (the benchmark's baseline
and the tests' reference).
"""
from __future__ import annotations

import concurrent.futures
import errno
import functools
import logging
import math
import mmap
import os
import time
import weakref
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from . import steplog
from .errors import GridError, InputMismatchError, RawDataError
from .files.bitshuffle_lz4 import (OWN_UNTRANSPOSE, block_count, block_positions,
                                   decompress_elements)
from .frames import READ_AHEAD_THREADS, CompressedFrames, frame_reader
from .geometry import DetectorGeometry, ScanGeometry
from .grid import (MAX_TRANSFORM_VOXELS, MAX_TRANSFORM_VOXELS_BOTH_KINDS, TRANSFORM_BRICK,
                   Grid)
from .params import TransformParams, largest_trusted_value

BRICK_BITS = TRANSFORM_BRICK.bit_length() - 1  # bricks of 8^3 voxels (2 KiB of float32)
BLOCK = 4096
DUMP_SLOTS = 16  # per thread (ThreadShares), for DUMP_THREADS threads
DUMP_THREADS = 16
RANKING_PIXELS = 1 << 18  # ThreadShares ranks its quantities on about this many pixels
FIXUP_CHUNK = 64  # pass 2 looks into a chunk only when it holds a flagged pixel
UNIT_ROUNDOFF32 = 2.0 ** -24


# --------------------------------------------------------------------------------------
# Per-scan pixel table
# --------------------------------------------------------------------------------------
@dataclass
class PixelTable:
    """Lab Q and correction of every detector pixel, one array per component over the whole
    detector (the kernel streams them next to the frame: no gather); unusable pixels have
    Q = NaN and correction 0.  ``index`` lists the usable pixels."""

    qx: np.ndarray  # float32 (rows * cols,) lab Q, 1/Angstrom (no 2 pi); NaN = unusable
    qy: np.ndarray
    qz: np.ndarray
    corr_all: np.ndarray  # float32 (rows * cols,) multiplier 1 / (solid angle x polarization)
    index: np.ndarray  # int64 (n,) flat index (row * cols + col) of the usable pixels
    shape: tuple

    def __len__(self) -> int:
        return len(self.index)

    @property
    def q(self) -> np.ndarray:
        """float32 (n, 3) lab Q of the usable pixels."""
        return np.stack([self.qx[self.index], self.qy[self.index], self.qz[self.index]], -1)

    @property
    def corr(self) -> np.ndarray:
        """float32 (n,) correction of the usable pixels."""
        return self.corr_all[self.index]

    @property
    def q_max(self) -> np.ndarray:
        """float64 (3,) largest |Q| per component over the usable pixels."""
        return np.array([float(np.abs(a[self.index]).max()) if len(self.index) else 0.0
                         for a in (self.qx, self.qy, self.qz)])


def pixel_table(geometry: DetectorGeometry, excluded: np.ndarray, *, solid_angle: bool = True,
                polarization: bool = True, polarization_fraction: float = 0.99,
                threads: int = 1) -> PixelTable:
    """Lab Q and correction of every pixel not excluded (bool (rows, cols), True = unused).
    The corrections are pyFAI's formulas (DetectorGeometry.solid_angle, .polarization):
    computed here without importing pyFAI's integrators, which costs a job 1.5 s.  threads:
    blocks of rows computed side by side (numpy lets go of the GIL: 1.85x on 2)."""
    ny, nx = geometry.shape
    usable = ~np.asarray(excluded, bool).ravel()
    q = np.full((3, ny * nx), np.nan, dtype=np.float32)
    corr_all = np.zeros(ny * nx, dtype=np.float32)
    # blocks of rows, 64 at a time in all: temporaries stay small on large detectors
    threads = max(1, min(int(threads), 8))  # (8 rows a block at least)
    step = 64 // threads

    def rows_from(r0):
        r1 = min(r0 + step, ny)
        sel = r0 * nx + np.flatnonzero(usable[r0 * nx:r1 * nx])
        rows, cols = sel // nx + 0.5, sel % nx + 0.5
        corr = np.ones(len(sel))
        with np.errstate(divide="ignore", invalid="ignore"):
            # each factor rounded to float32 first, as pyFAI's arrays are
            if solid_angle:
                corr /= geometry.solid_angle(rows, cols).astype(np.float32)
            if polarization:
                corr /= geometry.polarization(rows, cols, polarization_fraction).astype(np.float32)
        good = np.isfinite(corr) & (corr > 0)
        sel = sel[good]
        corr_all[sel] = corr[good]
        q[:, sel] = geometry.lab_q(rows[good], cols[good]).T

    if threads > 1:
        with ThreadPoolExecutor(threads, thread_name_prefix="pixel_table") as pool:
            list(pool.map(rows_from, range(0, ny, step)))
    else:
        for r0 in range(0, ny, step):
            rows_from(r0)
    index = np.flatnonzero(corr_all > 0).astype(np.int64)
    return PixelTable(q[0], q[1], q[2], corr_all, index, geometry.shape)


def frame_matrices(scan: ScanGeometry, first: int, stop: int, subdivide: int) -> np.ndarray:
    """(stop-first, subdivide, 3, 3): (UB)^-1 R^-1 at the centre of each rotation sub-step
    (frame f, sub-step j at continuous frame coordinate f + (j + 0.5) / subdivide)."""
    z = (np.arange(first, stop)[:, None] + (np.arange(subdivide)[None, :] + 0.5) / subdivide)
    R = scan.sample_rotation(z.ravel())  # (n, 3, 3) sample -> lab
    M = np.einsum("ij,nkj->nik", np.linalg.inv(scan.UB), R)  # (UB)^-1 R^T
    return np.ascontiguousarray(M.reshape(stop - first, subdivide, 3, 3))


def block_sub_steps(scan: ScanGeometry, table: PixelTable, grid: Grid, cell_lengths,
                    max_subdivide: int = 16) -> tuple[np.ndarray, float]:
    """Rotation sub-steps of each block of BLOCK pixels (int32 per block), so that none of
    its pixels' (h, k, l) moves more than half a voxel between them, and the largest move
    per frame in voxels.

    A pixel's sample-frame Q moves by |Q_perp| dphi per frame (Q_perp: the part of lab Q
    perpendicular to the rotation axis); index i = Q . a_i moves by at most |a_i| times that.
    The blocks far from the axis need the most (at 801^3 over the pipeline benchmark's
    limits, 33 of a 2M detector's 605 blocks need 2, the others 1)."""
    axis = scan.axis_lab
    n = table.qx.size
    perp = np.zeros(pixel_blocks(n))  # the largest |Q_perp| of each block's usable pixels
    # over the whole detector's components (unusable pixels NaN), a part at a time: no
    # (n, 3) gather (~0.35 CPU-s of a 2M job against ~0.05)
    part = 64 * BLOCK
    for a in range(0, n, part):
        qx, qy, qz = (c[a:a + part].astype(np.float64) for c in (table.qx, table.qy, table.qz))
        along = qx * axis[0] + qy * axis[1] + qz * axis[2]
        perp2 = qx * qx + qy * qy + qz * qz - along * along
        blocks = pixel_blocks(perp2.size)
        padded = np.zeros(blocks * BLOCK)
        padded[:perp2.size] = np.where(np.isfinite(perp2), perp2, 0.0)
        perp[a // BLOCK:a // BLOCK + blocks] = np.sqrt(
            np.maximum(padded.reshape(blocks, BLOCK).max(axis=1), 0.0))
    dphi = math.radians(abs(scan.angles.step))
    move = perp * dphi * max(length / ax.step for length, ax in zip(cell_lengths, grid.axes))
    steps = np.clip(np.ceil(move / 0.5 - 1e-9), 1, max_subdivide).astype(np.int32)
    return steps, float(move.max(initial=0.0))


def auto_subdivide(scan: ScanGeometry, table: PixelTable, grid: Grid, cell_lengths,
                   max_subdivide: int = 16) -> tuple[int, float]:
    """Sub-steps so that no pixel's (h, k, l) moves more than half a voxel between them, the
    same for every pixel (block_sub_steps' largest), and the largest move per frame in
    voxels."""
    steps, move = block_sub_steps(scan, table, grid, cell_lengths, max_subdivide)
    return int(steps.max(initial=1)), move


@dataclass(frozen=True)
class SubSteps:
    """The rotation sub-steps of every block of BLOCK pixels: block b adds each frame at
    the centres of sub_count[b] equal parts of the frame's rotation.  A call's matrices M
    (nf, T, 3, 3) hold frame_matrices of each distinct count side by side (`matrices`);
    the sub-steps of block b are M[:, sub_first[b]:sub_first[b] + sub_count[b]]."""

    counts: tuple[int, ...]  # the distinct sub-step counts, in the order M holds them
    sub_first: np.ndarray  # int32 per block
    sub_count: np.ndarray  # int32 per block

    @classmethod
    def per_block(cls, steps) -> "SubSteps":
        steps = np.asarray(steps, np.int32)
        counts = tuple(int(c) for c in np.unique(steps))
        offsets = np.cumsum((0,) + counts[:-1])
        first = np.zeros_like(steps)
        for c, o in zip(counts, offsets):
            first[steps == c] = o
        return cls(counts, first, steps)

    @classmethod
    def uniform(cls, nsub: int, blocks: int) -> "SubSteps":
        return cls((int(nsub),), np.zeros(blocks, np.int32), np.full(blocks, nsub, np.int32))

    @property
    def total(self) -> int:
        return sum(self.counts)

    def matrices(self, scan: ScanGeometry, first: int, stop: int) -> np.ndarray:
        """(stop - first, T, 3, 3): frame_matrices of each count, side by side."""
        return np.concatenate([frame_matrices(scan, first, stop, c) for c in self.counts],
                              axis=1)

    def describe(self) -> str:
        """E.g. '1 for 572 and 2 for 33 of the 605 blocks of 4096 pixels'."""
        if len(self.counts) == 1:
            return f"{self.counts[0]} for every block of {BLOCK} pixels"
        parts = [f"{c} for {int(np.count_nonzero(self.sub_count == c))}" for c in self.counts]
        return (f"{', '.join(parts[:-1])} and {parts[-1]} of the {len(self.sub_count)} blocks "
                f"of {BLOCK} pixels")


# --------------------------------------------------------------------------------------
# Bricked accumulator
# --------------------------------------------------------------------------------------
class ZeroedPages:
    """A zeroed array of n elements in 4 KiB pages that the OS makes as they are first
    touched (MADV_NOHUGEPAGE), and which pages were touched (`written_pages`): anonymous
    memory mapped private, or with `shared` a memory file of its own (Linux memfd, on
    tmpfs) mapped shared; np.zeros where the OS offers neither (touched pages not known).

    Small pages: numpy asks Linux for 2 MiB pages on large arrays.  A grid is touched
    sparsely (a scan reaches about half the bricks of its 801^3 grid), and each touched
    brick then costs a whole 2 MiB page, zeroed on first touch: a 3600-frame full rotation
    onto 801^3 (the process, with its frames) held 6.26 GB instead of 4.11 GB, of which the
    grid's own pages are 1.94 GB, and took 36.8 instead of 30.4 CPU-s on a 2-core VM, where
    a fresh 2 MiB page costs ~2 s per GB against ~0.6 for 4 KiB pages; on memory already
    touched, 4 KiB pages were not slower (26.3 CPU-s against 27.7 for 2 MiB pages).

    Private or shared: the transform's first touch of a page is a read (its += loads
    before it stores).  Private memory maps the zero page on that read and copies it on
    the write: two faults, 2.4 us a page (1 GB read then written in 4 KiB pages: 0.60-0.63
    s of system time).  A memory file makes its page once, on the first touch, but that
    fault costs 3.7 us (0.93-1.01 s): one thread is better off private.  With two threads,
    though, each copy of the zero page also flushes the other core's TLB by an interrupt
    (on a VM, an exit on both sides): the 400-frame two-thread transform's pass 1.34 s private,
    1.22 s shared.  Reading a page of a memory file allocates it: read only the pages
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


class BrickedGrid:
    """signal and weight of a grid in bricks of 2^BRICK_BITS voxels a side (float32), for one
    or two kinds of volume, signal and weight of a voxel side by side: one cache line per
    pixel added.  One array per kind, or with `paired` (two kinds, as Transformer holds
    them) one array of two parts: `cells[0]` takes the pixels both kinds take (the second
    kind, masked_transform, exactly as a pass of its own adds them) and `cells[1]`, `second`
    voxels further on, the pixels the second kind leaves out (Bragg regions, punch); the
    first kind, transform, is their sum, voxel by voxel (one float32 addition where a
    left-out pixel landed, cells[0] alone elsewhere).  Each pixel is added once, to one
    part, by the one-kind scatter: the part is chosen with the voxel index, in the
    vectorised pass.  cells[1]'s memory pages are mapped only where left-out pixels land
    (bricks: one 4 KiB page each), so a grid takes about 8 bytes per voxel.  `shared`:
    the cells in a memory file (ZeroedPages: for threads adding side by side)."""

    def __init__(self, grid: Grid, nkinds: int = 1, paired: bool = False,
                 shared: bool = False):
        self.grid = grid
        b = 1 << BRICK_BITS
        self.brick = b
        self.dims = np.array([grid.h.n, grid.k.n, grid.l.n], dtype=np.int64)
        self.nbricks = np.array([-(-int(n) // b) for n in (grid.l.n, grid.k.n, grid.h.n)],
                                dtype=np.int64)  # (l, k, h)
        size = int(np.prod(self.nbricks)) * b ** 3
        self.nkinds = int(nkinds)
        self.paired = bool(paired)
        if self.paired and self.nkinds != 2:
            raise ValueError(f"paired cells hold two kinds, not {self.nkinds}")
        # per kind (part): (signal, weight) per voxel, then the kernel's dump slots; a
        # second part starts on a brick (and so a memory page)
        part = size + DUMP_SLOTS * DUMP_THREADS
        if self.paired:
            part = -(-part // b ** 3) * b ** 3
        most = MAX_TRANSFORM_VOXELS_BOTH_KINDS if self.paired else MAX_TRANSFORM_VOXELS
        if size > most:
            both = " with both kinds from one pass" if self.paired else ""
            raise GridError(f"grid {grid.describe()} holds {size} voxels (in bricks of {b}^3); "
                            f"the transform indexes at most {most}{both}: choose coarser "
                            "steps or narrower limits (reduction.transform.grid)")
        self.size = size
        self.stride = 2
        if self.paired:
            self.second = part  # the voxel index of cells[1]'s first voxel
            memory = ZeroedPages(2 * self.stride * part, np.float32, shared)
            self.kernel_cells = memory.array
            self.cells = [self.kernel_cells[:self.stride * part],
                          self.kernel_cells[self.stride * part:]]
            # (each part's memory and its first byte in it)
            self._memory = [(memory, 0), (memory, self.cells[0].nbytes)]
        else:
            self.second = 0
            self._memory = [(ZeroedPages(self.stride * part, np.float32, shared), 0)
                            for _ in range(self.nkinds)]
            self.cells = [memory.array for memory, _ in self._memory]
            self.kernel_cells = self.cells[0]
        end = self.stride * size
        self.signals = [c[0:end:self.stride] for c in self.cells]
        self.weights = [c[1:end:self.stride] for c in self.cells]
        self.origin = np.array([ax.start for ax in grid.axes])
        self.inv_step = np.array([1.0 / ax.step for ax in grid.axes])

    @property
    def nbytes(self) -> int:
        return sum(c.nbytes for c in self.cells)

    def unbrick(self, flat: np.ndarray) -> np.ndarray:
        bl, bk, bh = (int(v) for v in self.nbricks)
        b = self.brick
        a = flat.reshape(bl, bk, bh, b, b, b).transpose(0, 3, 1, 4, 2, 5)
        a = a.reshape(bl * b, bk * b, bh * b)
        return np.ascontiguousarray(a[:self.grid.l.n, :self.grid.k.n, :self.grid.h.n])

    def flat(self, kind: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """(signal, weight) of a kind in brick order (kind 0 of paired cells: the sum of the
        two parts, a new array)."""
        if not self.paired:
            return self.signals[kind], self.weights[kind]
        if kind == 1:
            return self.signals[0], self.weights[0]
        return self.signals[0] + self.signals[1], self.weights[0] + self.weights[1]

    def arrays(self, kind: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """(signal, weight) of a kind as [l, k, h] arrays."""
        signal, weight = self.flat(kind)
        return self.unbrick(signal), self.unbrick(weight)

    def _slab_arrays(self, l0: int, l1: int, out: tuple | None) -> tuple[np.ndarray, np.ndarray]:
        if not 0 <= l0 <= l1 <= self.grid.l.n:
            raise ValueError(f"slab [{l0}, {l1}) is outside the grid's {self.grid.l.n} L planes")
        shape = (l1 - l0, self.grid.k.n, self.grid.h.n)
        if out is None:
            return np.empty(shape, np.float32), np.empty(shape, np.float32)
        signal, weight = (o[:l1 - l0] for o in out)
        if signal.shape != shape or weight.shape != shape:
            raise ValueError(f"slab buffers {signal.shape}/{weight.shape} do not hold {shape}")
        return signal, weight

    def written_pages(self, part: int, offset: int = 0, nbytes: int | None = None
                      ) -> np.ndarray | None:
        """bool per memory page of bytes [offset, offset + nbytes) of cells[part] (all of
        them by default): ZeroedPages.written_pages."""
        memory, start = self._memory[part]
        nbytes = self.cells[part].nbytes - offset if nbytes is None else nbytes
        return memory.written_pages(start + offset, nbytes)

    def written_bricks(self, part: int, l0: int, l1: int) -> tuple[int, np.ndarray]:
        """(the first brick, uint8 per brick from it) of the bricks of L planes [l0, l1) in
        cells[part]: 0 for a brick none of whose memory pages was ever touched (all zeros:
        read, each of its pages would be allocated), else 1 (all 1 when the pages cannot be
        looked up)."""
        per_row = int(self.nbricks[1] * self.nbricks[2])
        first = l0 // self.brick * per_row
        stop = (-(-l1 // self.brick)) * per_row if l1 > l0 else first
        size = self.stride * self.brick ** 3 * self.cells[part].itemsize  # bytes per brick
        pages = (self.written_pages(part, first * size, (stop - first) * size)
                 if stop > first else None)
        if pages is None:
            return first, np.ones(stop - first, np.uint8)
        page = mmap.PAGESIZE
        start = self._memory[part][1] + first * size  # (in its memory)
        ends = start + size * np.arange(stop - first + 1, dtype=np.int64)  # brick bounds
        p0 = ends[:-1] // page - start // page  # first and last page of each brick
        p1 = (ends[1:] - 1) // page - start // page
        written = np.concatenate([[0], np.cumsum(pages, dtype=np.int64)])
        return first, (written[p1 + 1] > written[p0]).astype(np.uint8)

    def _sources(self, kind: int, l0: int, l1: int):
        """What the unbricking kernels take for a kind on L planes [l0, l1): (cells, extra,
        first brick, written, extra_written): the kind is cells, plus extra in the bricks
        extra_written marks (paired cells' first kind: cells[1]; else none)."""
        if self.paired:
            first, written = self.written_bricks(0, l0, l1)
            if kind == 0:
                _, extra = self.written_bricks(1, l0, l1)
                return self.cells[0], self.cells[1], first, written | extra, extra
            return self.cells[0], self.cells[0], first, written, written[:0]
        first, written = self.written_bricks(kind, l0, l1)
        return self.cells[kind], self.cells[kind], first, written, written[:0]

    def slab(self, l0: int, l1: int, kind: int = 0, out: tuple | None = None
             ) -> tuple[np.ndarray, np.ndarray]:
        """(signal, weight) of a kind on L planes [l0, l1) as [l, k, h] arrays, in one pass
        over the bricks (no full-size temporary; bricks never written are zeros, not read);
        into the first planes of `out` (two float32 C-order arrays [>= l1 - l0, k, h],
        reused from slab to slab) when given."""
        signal, weight = self._slab_arrays(l0, l1, out)
        _unbrick_slab(*self._sources(kind, l0, l1), l0, self.nbricks, self.brick, signal,
                      weight, None, None)
        return signal, weight

    def slabs(self, l0: int, l1: int, out: list | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
        """slab() of every kind, [(signal, weight)] in kind order; paired cells in one pass
        over them.  out: a pair of buffers per kind, as slab()'s."""
        out = out if out is not None else [None] * self.nkinds
        if not self.paired:
            return [self.slab(l0, l1, kind, o) for kind, o in enumerate(out)]
        arrays = [self._slab_arrays(l0, l1, o) for o in out]
        _unbrick_slab(*self._sources(0, l0, l1), l0, self.nbricks, self.brick, *arrays[0],
                      *arrays[1])
        return arrays

    def chunk_rows(self, chunk: tuple[int, int, int], intensity: bool = True, rows=None):
        """The grid as the chunks of a volume file (chunk: (cl, ck, ch) voxels, whole bricks
        or the grid's extent), row of L chunks by row, read once from the bricks with no
        slab in between.  Yields (l0, l1, chunks) per row: its L planes and an iterator of
        (k0, h0, per kind (signal, weight, intensity or None)) over the chunks of the row
        that hold a written brick (the others hold nothing: zeros, and NaN intensity).  The
        arrays are float32 [cl, ck, ch], the fill value (0; NaN for the intensity) beyond the
        grid, as HDF5 stores a chunk; reused: valid until the next chunk (each call its
        own: calls on other threads may run side by side).  rows: the rows' first planes
        (multiples of cl), all by default."""
        cl, ck, ch = (int(c) for c in chunk)
        nl, nk, nh = self.grid.shape
        b = self.brick
        if any(c % b and c != n for c, n in zip((cl, ck, ch), (nl, nk, nh))):
            raise ValueError(f"chunks {chunk} are not whole bricks of {b}^3 voxels")
        arrays = np.empty((3, self.nkinds, cl, ck, ch), np.float32)  # signal, weight, intensity
        k_starts = np.arange(0, nk, ck) // b  # the first brick of each chunk along k and h
        h_starts = np.arange(0, nh, ch) // b
        # paired cells: both kinds in one call (the first kind's sources cover both);
        # else a call per kind's own cells
        kinds = [(0, slice(0, 2))] if self.paired else [(i, slice(i, i + 1))
                                                          for i in range(self.nkinds)]
        for l0 in range(0, nl, cl) if rows is None else rows:
            if l0 % cl or not 0 <= l0 < nl:
                raise ValueError(f"a row of L chunks starts on a multiple of {cl} below {nl}, "
                                 f"not {l0}")
            l1 = min(l0 + cl, nl)
            calls = [(self._sources(kind, l0, l1), part) for kind, part in kinds]
            touched = np.zeros(self.nbricks[1:], bool)  # a brick of the row written (any array)
            for (_, _, _, flags, _), _ in calls:
                touched |= flags.reshape(-1, *self.nbricks[1:]).any(axis=0)
            hit = np.logical_or.reduceat(np.logical_or.reduceat(touched, k_starts, axis=0),
                                         h_starts, axis=1)
            yield l0, l1, self._gather_row(l0, hit, (ck, ch), calls, intensity, arrays)

    def _gather_row(self, l0, hit, chunk, calls, intensity, arrays):
        signal, weight, inten = arrays
        for row, col in zip(*np.nonzero(hit)):
            k0, h0 = int(row) * chunk[0], int(col) * chunk[1]
            for sources, kinds in calls:
                _gather_chunk(*sources, kinds.stop - kinds.start, l0, k0, h0, self.grid.shape,
                              self.nbricks, self.brick, intensity, signal[kinds],
                              weight[kinds], inten[kinds])
            yield k0, h0, [(signal[kind], weight[kind], inten[kind] if intensity else None)
                           for kind in range(self.nkinds)]


@numba.njit(cache=True, nogil=True)
def _gather_chunk(cells, extra, first, written, extra_written, nkinds, l0, k0, h0, shape,
                  nbricks, b, with_intensity, signal, weight, intensity):
    """One chunk (L planes l0.., k0.., h0.., signal's shape[1:] [cl, ck, ch]) of nkinds
    kinds from the bricked cells (brick (L, K, H), then voxel (l, k, h) inside it; a
    voxel's signal and weight side by side) into signal[j], weight[j] and, with_intensity,
    intensity[j] = signal / weight, NaN where the weight is 0; the fill value beyond the
    grid.  signal[0]: cells plus extra in the bricks extra_written marks (paired cells'
    first kind); signal[1] (two kinds: paired cells' second): cells alone.  written[brick -
    first]: 0 for a brick never written (zeros, not read)."""
    cl, ck, ch = signal.shape[1], signal.shape[2], signal.shape[3]
    nl, nk, nh = shape
    bk, bh = nbricks[1], nbricks[2]
    b3 = b * b * b
    zero = np.float32(0.0)
    nan = np.float32(np.nan)
    nli, nki, nhi = min(cl, nl - l0), min(ck, nk - k0), min(ch, nh - h0)
    if nli < cl or nki < ck or nhi < ch:  # an edge chunk: HDF5 stores it whole
        signal[:nkinds] = zero
        weight[:nkinds] = zero
        intensity[:nkinds] = nan
    # brick by brick in memory order (a brick's cells are contiguous, and so are the bricks
    # along h): in the chunk's order, row by row through 8 bricks, it took a fifth longer
    for L in range(l0 // b, (l0 + nli + b - 1) // b):
        la, lb = max(L * b, l0), min(L * b + b, l0 + nli)
        for K in range(k0 // b, (k0 + nki + b - 1) // b):
            ka, kb = max(K * b, k0), min(K * b + b, k0 + nki)
            for H in range(h0 // b, (h0 + nhi + b - 1) // b):
                ha, hb = max(H * b, h0), min(H * b + b, h0 + nhi)
                brick = (L * bk + K) * bh + H
                if written[brick - first] == 0:
                    for j in range(nkinds):
                        for l in range(la, lb):
                            for k in range(ka, kb):
                                for h in range(ha, hb):
                                    signal[j, l - l0, k - k0, h - h0] = zero
                                    weight[j, l - l0, k - k0, h - h0] = zero
                                    intensity[j, l - l0, k - k0, h - h0] = nan
                    continue
                both = extra_written.size > 0 and extra_written[brick - first] != 0
                for j in range(nkinds):
                    add = both and j == 0
                    for l in range(la, lb):
                        for k in range(ka, kb):
                            # cells of voxel (l, k, h): 2 x its index in the bricks
                            c0 = 2 * (brick * b3 + ((l - L * b) * b + k - K * b) * b - H * b)
                            i, kk = l - l0, k - k0
                            for h in range(ha, hb):
                                c = c0 + 2 * h
                                s = cells[c]
                                w = cells[c + 1]
                                if add:
                                    s += extra[c]
                                    w += extra[c + 1]
                                signal[j, i, kk, h - h0] = s
                                weight[j, i, kk, h - h0] = w
                                if with_intensity:
                                    intensity[j, i, kk, h - h0] = s / w if w > zero else nan


@numba.njit(cache=True, nogil=True)
def _unbrick_slab(cells, extra, first, written, extra_written, l0, nbricks, b, signal, weight,
                  signal1, weight1):
    """signal[l, k, h], weight[l, k, h] of L planes l0.. from the bricked cells (brick
    (L, K, H), then voxel (l, k, h) inside it; a voxel's signal and weight side by side),
    plus extra in the bricks extra_written marks (paired cells' first kind), and with
    signal1, weight1 the cells alone too (paired cells' second kind), in the same pass.
    written[brick - first]: 0 for a brick never written (zeros, not read)."""
    nl, nk, nh = signal.shape
    bk, bh = nbricks[1], nbricks[2]
    b3 = b * b * b
    zero = np.float32(0.0)
    for i in range(nl):
        L, il = divmod(l0 + i, b)
        for k in range(nk):
            K, ik = divmod(k, b)
            row = (L * bk + K) * bh * b3 + (il * b + ik) * b
            for H in range(bh):
                h0 = H * b
                brick = (L * bk + K) * bh + H
                if written[brick - first] == 0:
                    for ih in range(min(b, nh - h0)):
                        signal[i, k, h0 + ih] = zero
                        weight[i, k, h0 + ih] = zero
                        if signal1 is not None:
                            signal1[i, k, h0 + ih] = zero
                            weight1[i, k, h0 + ih] = zero
                    continue
                j0 = 2 * (row + H * b3)
                add = extra_written.size > 0 and extra_written[brick - first] != 0
                for ih in range(min(b, nh - h0)):
                    j = j0 + 2 * ih
                    s = cells[j]
                    w = cells[j + 1]
                    if signal1 is not None:
                        signal1[i, k, h0 + ih] = s
                        weight1[i, k, h0 + ih] = w
                    if add:
                        s += extra[j]
                        w += extra[j + 1]
                    signal[i, k, h0 + ih] = s
                    weight[i, k, h0 + ih] = w


# The kernel works through the detector in blocks of BLOCK pixels, in three passes per block:
#  1. a branch-free loop that LLVM vectorises (8 pixels per AVX2 instruction): voxel
#     coordinates in float32, the voxel's bricked index (int32) or a dump slot, and the value;
#     with two kinds, a pixel the second leaves out indexes the grid's second part
#     (BrickedGrid paired: index + `second`);
#  2. the few pixels whose float32 coordinate lies within the float32 rounding bound of a voxel
#     face are decided again in float64 (so decisions equal a float64 evaluation exactly);
#  3. the scatter, in four interleaved streams a quarter block apart: consecutive pixels often
#     hit the same voxel, and interleaving keeps those read-modify-writes from waiting on
#     each other; a voxel's signal and weight side by side are added as one vector
#     (_add_to_cells); one kind or two alike.
# Work units are (block, frame, sub-step), frames innermost: a block's pixels move less than
# a voxel from one frame to the next, so the voxels they add to and their Q table stay in
# the core's cache for the frames of a chunk instead of being fetched from memory per frame.
# Unusable pixels, pixels off the grid, untrusted values and (one kind) Bragg-masked ones go
# to DUMP_SLOTS slots after the grid (spread so that a run of them is no dependency chain either).


@numba.njit(inline="always")
def _exact_index(qx, qy, qz, a00, a01, a02, a10, a11, a12, a20, a21, a22, o0, o1, o2,
                 dims, nbk, nbh, dump):
    """Bricked voxel index of a pixel from float64 coordinates (dump when off the grid)."""
    q0 = np.float64(qx)
    q1 = np.float64(qy)
    q2 = np.float64(qz)
    x = a00 * q0 + a01 * q1 + a02 * q2 + o0
    y = a10 * q0 + a11 * q1 + a12 * q2 + o1
    z = a20 * q0 + a21 * q1 + a22 * q2 + o2
    # compared as floats before any conversion: int() of a huge value would wrap
    if 0.0 <= x < dims[0] and 0.0 <= y < dims[1] and 0.0 <= z < dims[2]:
        ih = int(x)
        ik = int(y)
        il = int(z)
        brick = ((il >> BRICK_BITS) * nbk + (ik >> BRICK_BITS)) * nbh + (ih >> BRICK_BITS)
        low = (1 << BRICK_BITS) - 1
        return np.int32((brick << (3 * BRICK_BITS)) + ((il & low) << (2 * BRICK_BITS))
                        + ((ik & low) << BRICK_BITS) + (ih & low))
    return dump


@numba.njit(inline="always")
def _rounding_bound(a0, a1, a2, o, q_max):
    """Bound on |x32 - x64| for x = a0 q0 + a1 q1 + a2 q2 + o evaluated in float32
    (coefficients, products and sums rounded): 5 u (sum_j |a_j| max|q_j| + |o|) to first
    order; 16 u leaves a margin > 3."""
    return 16.0 * UNIT_ROUNDOFF32 * (abs(a0) * q_max[0] + abs(a1) * q_max[1]
                                     + abs(a2) * q_max[2] + abs(o))


@numba.njit(inline="always")
def _any_negative(buf, start, stop):
    """True when buf[start:stop] (int32) holds a negative value (vectorised: OR of signs;
    over a slice, whose indices numba knows are not negative: indexing buf from `start`
    would check each index for wraparound, and the loop would stay scalar, 7x slower)."""
    part = buf[start:stop]
    sign = np.int32(0)
    for i in range(part.shape[0]):
        sign |= part[i]
    return sign < 0


@numba.njit(inline="always")
def _punched(qx, qy, qz, m, allowed, allowed_off, hkl_r2):
    """True when the pixel's (h, k, l) lies within sqrt(hkl_r2) of an allowed node."""
    q0 = np.float64(qx)
    q1 = np.float64(qy)
    q2 = np.float64(qz)
    h = m[0, 0] * q0 + m[0, 1] * q1 + m[0, 2] * q2
    k = m[1, 0] * q0 + m[1, 1] * q1 + m[1, 2] * q2
    l = m[2, 0] * q0 + m[2, 1] * q1 + m[2, 2] * q2  # noqa: E741
    nh = math.floor(h + 0.5)
    nk = math.floor(k + 0.5)
    nl = math.floor(l + 0.5)
    if (h - nh) ** 2 + (k - nk) ** 2 + (l - nl) ** 2 > hkl_r2:
        return False
    a = int(nh) - allowed_off[0]
    b = int(nk) - allowed_off[1]
    c = int(nl) - allowed_off[2]
    return (0 <= a < allowed.shape[0] and 0 <= b < allowed.shape[1]
            and 0 <= c < allowed.shape[2] and allowed[a, b, c] != 0)


@numba.njit(inline="always")
def _unit(u, nf, nsub, npix):
    """(frame, rotation sub-step, first pixel, pixels) of work unit u: the frames of a block
    of pixels one after the other, block after block."""
    f = (u // nsub) % nf
    p0 = (u // (nsub * nf)) * BLOCK
    return f, u % nsub, p0, min(BLOCK, npix - p0)


@numba.njit(nogil=True, cache=True, error_model="numpy", fastmath={"contract"})
def _voxel_indices(f, p0, n, vb, qx, qy, qz, corr, bragg, B, c, t, s32, value_max, dims,
                   nbricks, shift, dump, idx, val):
    """Pass 1 of _compute_values on pixels [p0, p0 + n) of frame f (values vb): each pixel's
    bricked voxel index (+ shift for a Bragg-masked pixel with shift > 0; the dump when
    unusable, off the grid or, shift 0, Bragg-masked), -1 when a coordinate lies within the
    rounding bound of a voxel face (t: 1/2 - the bound per axis), and its value, from the
    float32 matrix B (row by row) and offset c.  Multiplies and adds may fuse (`contract`:
    fewer roundings, so the bound holds; 8% less time with AVX2): the integer arithmetic of
    the brick stays exact, and the float64 decisions (pass 2, the punch) are in functions
    of their own, without it."""
    b00, b01, b02, b10, b11, b12, b20, b21, b22 = B
    c0, c1, c2 = c
    t0, t1, t2 = t
    paired = shift > 0
    fnh, fnk, fnl = np.float32(dims[0]), np.float32(dims[1]), np.float32(dims[2])
    fnbk, fnbh = np.float32(nbricks[1]), np.float32(nbricks[2])
    zero = np.float32(0.0)
    half = np.float32(0.5)
    brick_side = np.float32(1 << BRICK_BITS)
    inv_brick_side = np.float32(1.0 / (1 << BRICK_BITS))
    row_stride = np.float32(1 << (2 * BRICK_BITS))
    xb = qx[p0:p0 + n]
    yb = qy[p0:p0 + n]
    zb = qz[p0:p0 + n]
    cb = corr[p0:p0 + n]
    if bragg is not None:
        bb = bragg[f, p0:p0 + n]
    for i in range(n):
        v = vb[i]
        use = (v >= 0) & (v <= value_max)
        if bragg is not None:
            use = use & ((bb[i] == 0) | paired)
        q0 = xb[i]
        q1 = yb[i]
        q2 = zb[i]
        x = b00 * q0 + b01 * q1 + b02 * q2 + c0
        y = b10 * q0 + b11 * q1 + b12 * q2 + c1
        z = b20 * q0 + b21 * q1 + b22 * q2 + c2
        fx = np.floor(x)
        fy = np.floor(y)
        fz = np.floor(z)
        near = ((abs(x - fx - half) > t0) | (abs(y - fy - half) > t1)
                | (abs(z - fz - half) > t2))
        inside = ((x >= zero) & (x < fnh) & (y >= zero) & (y < fnk)
                  & (z >= zero) & (z < fnl))
        # brick and offset in float32: exact integers (< 2^24 bricks)
        bh = np.floor(fx * inv_brick_side)
        bk = np.floor(fy * inv_brick_side)
        bl = np.floor(fz * inv_brick_side)
        brick = (bl * fnbk + bk) * fnbh + bh
        offset = ((fz - brick_side * bl) * row_stride
                  + (fy - brick_side * bk) * brick_side + (fx - brick_side * bh))
        k = (np.int32(brick) << (3 * BRICK_BITS)) + np.int32(offset)
        if bragg is not None:
            k = k + shift if bb[i] != 0 else k
        k = k if use & inside else dump[i]
        idx[i] = -1 if use & near else k
        val[i] = np.float32(v) * cb[i] * s32


@numba.njit(nogil=True, cache=True)
def _holds_bragg(bragg, bragg_blocks, f, b):
    """Whether block b of frame f holds a Bragg-masked pixel (bragg_blocks[f, b]; never
    without a Bragg mask)."""
    if bragg is None:
        return False
    return bragg_blocks[f, b] != 0


@numba.njit(nogil=True, cache=True, error_model="numpy")
def _compute_block(u, steps, frames, qx, qy, qz, corr, M, scale, value_max, bragg,
                   bragg_blocks, allowed, allowed_off, hkl_r2, origin, inv_step, dims, nbricks,
                   q_max, size, second, dump, idx, val, punch):
    """Passes 1 and 2 (and the punch) of work unit u (_unit): writes the bricked voxel index
    (or a dump slot) and value of each of its pixels into idx, val; returns the number of
    pixels n.  Arguments as _accumulate's."""
    f, j, p0, n = _unit(u, frames.shape[0], M.shape[1], frames.shape[1])
    return _compute_values(f, j, steps, p0, n, frames[f, p0:p0 + n], qx, qy, qz, corr, M, scale,
                           value_max, bragg, bragg_blocks, allowed, allowed_off, hkl_r2,
                           origin, inv_step, dims, nbricks, q_max, size, second, dump, idx,
                           val, punch)


@numba.njit(inline="always", error_model="numpy")
def _compute_values(f, j, steps, p0, n, vb, qx, qy, qz, corr, M, scale, value_max, bragg,
                    bragg_blocks, allowed, allowed_off, hkl_r2, origin, inv_step, dims, nbricks,
                    q_max, size, second, dump, idx, val, punch):
    """_compute_block's work on the values vb of pixels [p0, p0 + n) of frame f at the
    matrix M[f, j], one of the block's `steps` rotation sub-steps: a pixel left out of the
    masked kind (Bragg-masked, punched) goes to the dump (second 0: one kind) or to its
    voxel's index + second (two kinds, BrickedGrid paired)."""
    s32 = np.float32(scale[f] / steps)
    nbk, nbh = nbricks[1], nbricks[2]
    shift = np.int32(second)  # (< 2^31: BrickedGrid)
    paired = second > 0
    sh, sk, sl = inv_step[0], inv_step[1], inv_step[2]
    # voxel coordinate + 1/2 = A q + o with A = diag(1/step) M, o = 1/2 - origin / step
    o0 = 0.5 - origin[0] * sh
    o1 = 0.5 - origin[1] * sk
    o2 = 0.5 - origin[2] * sl
    m = M[f, j]
    m00, m01, m02 = m[0, 0], m[0, 1], m[0, 2]
    m10, m11, m12 = m[1, 0], m[1, 1], m[1, 2]
    m20, m21, m22 = m[2, 0], m[2, 1], m[2, 2]
    a00, a01, a02 = m00 * sh, m01 * sh, m02 * sh
    a10, a11, a12 = m10 * sk, m11 * sk, m12 * sk
    a20, a21, a22 = m20 * sl, m21 * sl, m22 * sl
    # flagged: closer than the float32 rounding bound to an integer, i.e.
    # |frac - 1/2| > 1/2 - bound
    t0 = np.float32(0.5 - _rounding_bound(a00, a01, a02, o0, q_max))
    t1 = np.float32(0.5 - _rounding_bound(a10, a11, a12, o1, q_max))
    t2 = np.float32(0.5 - _rounding_bound(a20, a21, a22, o2, q_max))
    b00, b01, b02 = np.float32(a00), np.float32(a01), np.float32(a02)
    b10, b11, b12 = np.float32(a10), np.float32(a11), np.float32(a12)
    b20, b21, b22 = np.float32(a20), np.float32(a21), np.float32(a22)
    c0, c1, c2 = np.float32(o0), np.float32(o1), np.float32(o2)
    xb = qx[p0:p0 + n]
    yb = qy[p0:p0 + n]
    zb = qz[p0:p0 + n]
    if bragg is not None:
        bb = bragg[f, p0:p0 + n]
    # pass 1 (vectorised): no branches, no gathers; without the Bragg tests where the block
    # holds no Bragg pixel in this frame (most: the regions are small)
    B = (b00, b01, b02, b10, b11, b12, b20, b21, b22)
    if _holds_bragg(bragg, bragg_blocks, f, p0 // BLOCK):
        _voxel_indices(f, p0, n, vb, qx, qy, qz, corr, bragg, B, (c0, c1, c2), (t0, t1, t2),
                       s32, value_max, dims, nbricks, shift, dump, idx, val)
    else:
        _voxel_indices(f, p0, n, vb, qx, qy, qz, corr, None, B, (c0, c1, c2), (t0, t1, t2),
                       s32, value_max, dims, nbricks, shift, dump, idx, val)
    # pass 2: float64 decisions for the flagged pixels (~0.2%)
    for r0 in range(0, n, FIXUP_CHUNK):
        r1 = min(r0 + FIXUP_CHUNK, n)
        if not _any_negative(idx, r0, r1):
            continue
        for i in range(r0, r1):
            if idx[i] < 0:
                k = _exact_index(xb[i], yb[i], zb[i], a00, a01, a02, a10, a11, a12, a20, a21,
                                 a22, o0, o1, o2, dims, nbk, nbh, dump[i])
                if bragg is not None:
                    if bb[i] != 0 and k < size:
                        k += shift
                idx[i] = k
    if allowed is not None:
        # the punch: a vectorised pass flags the pixels on the grid within the
        # radius of some node; only those look up whether the node is allowed
        for i in range(n):
            q0 = np.float64(xb[i])
            q1 = np.float64(yb[i])
            q2 = np.float64(zb[i])
            dh = m00 * q0 + m01 * q1 + m02 * q2
            dk = m10 * q0 + m11 * q1 + m12 * q2
            dl = m20 * q0 + m21 * q1 + m22 * q2
            dh = dh - np.floor(dh + 0.5)
            dk = dk - np.floor(dk + 0.5)
            dl = dl - np.floor(dl + 0.5)
            close = (dh * dh + dk * dk + dl * dl <= hkl_r2) & (idx[i] < size)
            punch[i] = -1 if close else 0
        for r0 in range(0, n, FIXUP_CHUNK):
            r1 = min(r0 + FIXUP_CHUNK, n)
            if not _any_negative(punch, r0, r1):
                continue
            for i in range(r0, r1):
                if punch[i] < 0 and _punched(xb[i], yb[i], zb[i], m, allowed,
                                             allowed_off, hkl_r2):
                    idx[i] = idx[i] + shift if paired else dump[i]
    return n


@intrinsic
def _add_to_cells(typingctx, cells, k, values):
    """cells[n k:n k + n] += values (a tuple of n float32: the n cells of voxel k side by
    side) as one n-float vector load, add and store: LLVM does not merge the scalar additions
    of a voxel's neighbouring cells itself.  Each element is the same float32 sum as a scalar
    +=.  cells: a contiguous 1-D float32 array (its data pointer is indexed directly)."""
    if not (isinstance(cells, types.Array) and cells.dtype == types.float32
            and cells.ndim == 1 and cells.layout == "C"
            and isinstance(k, types.Integer) and isinstance(values, types.UniTuple)
            and values.dtype == types.float32 and values.count in (2, 4)):
        return None
    n = values.count

    def codegen(context, builder, signature, args):
        data = context.make_array(signature.args[0])(context, builder, args[0]).data
        i64 = ir.IntType(64)
        vector = ir.VectorType(ir.FloatType(), n)
        k = args[1]
        if k.type.width < 64:
            k = builder.sext(k, i64) if signature.args[1].signed else builder.zext(k, i64)
        # element and vector types named at each access: right with typed pointers (numba
        # today) and with LLVM's opaque ones
        first = builder.gep(data, [builder.mul(k, ir.Constant(i64, n))],
                            source_etype=ir.FloatType())
        at = builder.bitcast(first, vector.as_pointer())
        add = ir.Constant(vector, ir.Undefined)
        for i in range(n):
            add = builder.insert_element(add, builder.extract_value(args[2], i),
                                         ir.Constant(ir.IntType(32), i))
        builder.store(builder.fadd(builder.load(at, align=4, typ=vector), add), at, align=4)
        return context.get_dummy_value()

    return types.void(cells, k, values), codegen


@numba.njit(nogil=True, cache=True)
def _scatter_block(idx, val, n, w32, cells):
    """Pass 3 of a one-kind pass: add the n (index, value) pairs of a block to the kind's
    cells (Bragg-masked and punched pixels of a masked_transform went to the dump).  A full
    block goes in four interleaved streams a quarter apart; a voxel's signal and weight in
    one vector addition."""
    quarter = BLOCK // 4
    if n == BLOCK:
        for i in range(quarter):
            _add_to_cells(cells, np.uint32(idx[i]), (val[i], w32))
            _add_to_cells(cells, np.uint32(idx[i + quarter]), (val[i + quarter], w32))
            _add_to_cells(cells, np.uint32(idx[i + 2 * quarter]), (val[i + 2 * quarter], w32))
            _add_to_cells(cells, np.uint32(idx[i + 3 * quarter]), (val[i + 3 * quarter], w32))
    else:
        for i in range(n):
            _add_to_cells(cells, np.uint32(idx[i]), (val[i], w32))


def pixel_blocks(npix: int) -> int:
    """Blocks of BLOCK pixels of a detector of npix pixels (the last one shorter)."""
    return -(-int(npix) // BLOCK)


def live_blocks(table: PixelTable) -> np.ndarray:
    """uint8 per BLOCK of the detector's pixels: 0 where none of them is usable (the gaps
    between a Pilatus's rows of modules hold whole blocks: 6% of a CdTe 2M's), which the
    kernels skip."""
    nblocks = pixel_blocks(table.corr_all.size)
    usable = np.zeros(nblocks * BLOCK, bool)
    usable[:table.corr_all.size] = table.corr_all > 0
    return usable.reshape(nblocks, BLOCK).any(axis=1).astype(np.uint8)


def bragg_block_summary(bragg: np.ndarray) -> np.ndarray:
    """uint8 (frames, blocks of BLOCK pixels) of a Bragg mask (frames, pixels): 1 where the
    block holds a masked pixel in that frame (the kernels compute the others without the
    Bragg tests; masking.ScanMask.paint writes the same summary as it paints)."""
    nf, npix = bragg.shape
    nblocks = pixel_blocks(npix)
    summary = np.zeros((nf, nblocks), np.uint8)
    whole = npix // BLOCK
    if whole:
        summary[:, :whole] = bragg[:, :whole * BLOCK].reshape(nf, whole, BLOCK).any(axis=2)
    if whole < nblocks:
        summary[:, whole] = bragg[:, whole * BLOCK:].any(axis=1)
    return summary


def work_units(frames, M) -> int:
    """Blocks of BLOCK pixels x rotation sub-steps x frames: the kernel's units of work."""
    return frames.shape[0] * M.shape[1] * pixel_blocks(frames.shape[1])


@numba.njit(nogil=True, cache=True)
def _scatter_owned(idx, val, n, w32, cells, size, second, share):
    """Pass 3 of a thread's share (ThreadShares): what _scatter_block would add, in the same
    order, of the pixels whose voxel this thread owns (in either part of paired cells:
    index - second in the second); the rest (other threads' voxels, the dump, pixels not
    computed: index `size`) left out."""
    owner, me, voxel_owner = share[3], share[4], share[5]
    low = (1 << (3 * BRICK_BITS)) - 1
    quarter = BLOCK // 4
    streams = 4 if n == BLOCK else 1
    step = quarter if n == BLOCK else n
    for i in range(step):
        for s in range(streams):
            e = i + s * step
            k = idx[e]
            voxel = k - second if second > 0 and k >= second else k
            if voxel < size:
                o = owner[voxel >> (3 * BRICK_BITS)]  # (< 0: a brick across a cut)
                if o == me or (o < 0 and voxel_owner[((-1 - o) << (3 * BRICK_BITS))
                                                     + (voxel & low)] == me):
                    _add_to_cells(cells, np.uint32(k), (val[e], w32))


@numba.njit(nogil=True, cache=True, error_model="numpy")
def _compute_share(f, j, steps, p0, n, vb, r0, r1, share, qx, qy, qz, corr, M, scale,
                   value_max, bragg, bragg_blocks, allowed, allowed_off, hkl_r2, origin,
                   inv_step, dims, nbricks, q_max, size, second, dump, idx, val, punch):
    """Passes 1-2 of the runs [r0, r1) of a thread's share (pixels [starts[r], stops[r]) of
    the unit's block); the other pixels of the unit get index `size` (added by no one)."""
    starts, stops = share[1], share[2]
    idx[:n] = np.int32(size)
    for r in range(r0, r1):
        a = starts[r]
        c = stops[r]
        _compute_values(f, j, steps, p0 + a, c - a, vb[a:c], qx, qy, qz, corr, M, scale,
                        value_max, bragg, bragg_blocks, allowed, allowed_off, hkl_r2, origin,
                        inv_step, dims, nbricks, q_max, size, second, dump[a:c], idx[a:c],
                        val[a:c], punch[a:c])


@numba.njit(nogil=True, cache=True, error_model="numpy")
def _add_mixed_block(f, j, steps, p0, n, vb, r0, r1, share, qx, qy, qz, corr, M, scale,
                     value_max, bragg, bragg_blocks, allowed, allowed_off, hkl_r2, origin,
                     inv_step, dims, nbricks, q_max, size, second, dump, idx, val, punch, w32,
                     cells):
    """A block some of whose pixels may land in other threads' voxels: its runs computed
    (_compute_share), only this thread's voxels added (_scatter_owned)."""
    _compute_share(f, j, steps, p0, n, vb, r0, r1, share, qx, qy, qz, corr, M, scale,
                   value_max, bragg, bragg_blocks, allowed, allowed_off, hkl_r2, origin,
                   inv_step, dims, nbricks, q_max, size, second, dump, idx, val, punch)
    _scatter_owned(idx, val, n, w32, cells, size, second, share)


@numba.njit(inline="always")
def _dump_slots(size, share):
    """The dump slots of the pixels of a block (a thread's own with a share)."""
    first = size if share is None else size + DUMP_SLOTS * (share[4] % DUMP_THREADS)
    return (np.arange(BLOCK) & (DUMP_SLOTS - 1)).astype(np.int32) + np.int32(first)


@numba.njit(inline="always")
def _share_of_block(share, b):
    """(runs r0, r1 of block b in the share, whether the block is mixed: not one run of
    pixels whose voxels are all this thread's)."""
    block_runs, shared = share[0], share[6]
    return block_runs[b], block_runs[b + 1], shared[b] != 0


@numba.njit(nogil=True, cache=True, error_model="numpy")
def _accumulate(frames, qx, qy, qz, corr, M, scale, value_max, bragg, bragg_blocks, allowed,
                allowed_off, hkl_r2, origin, inv_step, dims, nbricks, q_max, size, cells, second,
                live, sub_first, sub_count, share=None):
    """frames (nf, rows * cols) any numeric dtype; qx, qy, qz, corr per detector pixel
    (PixelTable); M (nf, T, 3, 3): the matrices of every rotation sub-step of each frame,
    block b of pixels taking the sub_count[b] of them from sub_first[b] on (int32 per
    block: SubSteps); scale (nf,); value_max: the largest trusted value in
    the frames' own type (values v with 0 <= v <= value_max are used); bragg (nf, rows * cols)
    uint8 (1 = masked) or None; bragg_blocks (nf, blocks of BLOCK pixels) uint8, 0 where the
    block has no masked pixel in that frame (its pixels computed without the Bragg tests:
    bragg_block_summary), or None with bragg; allowed (a, b, c) uint8 table of allowed nodes from
    allowed_off (hkl of its [0, 0, 0]) for the punch of radius^2 hkl_r2 (r.l.u.^2), or None
    (None arguments compile to a kernel without those tests); q_max: largest |Q| per
    component (bounds the float32 rounding).  Adds into the bricked cells of ``size`` voxels
    followed by the dump slots, block by block (compute, then scatter).

    second 0, one kind: (signal, weight) per voxel in cells; Bragg-masked and punched
    pixels go to the dump.  second > 0, two kinds (BrickedGrid paired): those pixels go to
    the cells' second part, `second` voxels on (transform: both parts; masked_transform: the
    first).  live: uint8 per BLOCK of pixels, 0 where none of them is usable (live_blocks:
    the block is skipped, its pixels would all go to the dump).  share: one thread's part of
    the work (ThreadShares.shares[thread]), or None for all of it."""
    dump = _dump_slots(size, share)
    idx = np.empty(BLOCK, np.int32)
    val = np.empty(BLOCK, np.float32)
    punch = np.zeros(BLOCK, np.int32)
    nf, npix = frames.shape
    nsub = M.shape[1]
    nunits = nf * nsub * ((npix + BLOCK - 1) // BLOCK)
    for u in range(nunits):
        f, j, p0, n = _unit(u, nf, nsub, npix)
        b = p0 // BLOCK
        steps = sub_count[b]
        if live[b] == 0 or j < sub_first[b] or j >= sub_first[b] + steps:
            continue
        w32 = np.float32(1.0 / steps)
        if share is not None:
            r0, r1, mixed = _share_of_block(share, p0 // BLOCK)
            if r0 == r1:
                continue
            if mixed:
                _add_mixed_block(f, j, steps, p0, n, frames[f, p0:p0 + n], r0, r1, share, qx,
                                 qy, qz, corr, M, scale, value_max, bragg, bragg_blocks, allowed,
                                 allowed_off, hkl_r2, origin, inv_step, dims, nbricks, q_max,
                                 size, second, dump, idx, val, punch, w32, cells)
                continue
        n = _compute_block(u, steps, frames, qx, qy, qz, corr, M, scale, value_max, bragg,
                           bragg_blocks, allowed, allowed_off, hkl_r2, origin, inv_step, dims,
                           nbricks, q_max, size, second, dump, idx, val, punch)
        _scatter_block(idx, val, n, w32, cells)


@numba.njit(nogil=True, cache=True, error_model="numpy")
def _accumulate_stream(stream, positions, elements, block, own_untranspose, values, scratch,
                       qx, qy, qz, corr, M, scale, value_max, bragg, bragg_blocks, allowed,
                       allowed_off, hkl_r2, origin, inv_step, dims, nbricks, q_max, size, cells,
                       second, live, sub_first, sub_count, share=None):
    """_accumulate (one kind, or two in paired cells; all the work or a thread's share)
    with the frames given as their bitshuffle-LZ4 chunks (frames.CompressedFrames;
    positions: their block_positions): each block of pixels of a frame is decompressed
    into `values` (BLOCK elements of the frames' type) just before it is worked on, so the
    frames are never written to memory whole and read back (a thread's share: the part of
    the block that holds its runs).  The same sums as _accumulate on the frames
    decompressed (a block of no usable pixel is not decompressed either).  Returns 0, or
    -1 - f when a block of chunk f is damaged (nothing added from it on)."""
    nf = positions.shape[0]
    nsub = M.shape[1]
    dump = _dump_slots(size, share)
    idx = np.empty(BLOCK, np.int32)
    val = np.empty(BLOCK, np.float32)
    punch = np.zeros(BLOCK, np.int32)
    raw = values.view(np.uint8)
    nunits = nf * nsub * ((elements + BLOCK - 1) // BLOCK)
    for u in range(nunits):
        f, j, p0, n = _unit(u, nf, nsub, elements)
        b = p0 // BLOCK
        steps = sub_count[b]
        if live[b] == 0 or j < sub_first[b] or j >= sub_first[b] + steps:
            continue
        w32 = np.float32(1.0 / steps)
        mixed = False
        a = 0  # the pixels of the block to decompress: [a, c)
        c = n
        if share is not None:
            r0, r1, mixed = _share_of_block(share, p0 // BLOCK)
            if r0 == r1:
                continue
            if mixed:  # the part of the block that holds the runs, in whole blocks
                a = share[1][r0] // block * block
                c = min(-(-share[2][r1 - 1] // block) * block, n)
        if j == sub_first[b] and decompress_elements(stream, positions[f], elements,
                                                     values.itemsize, block, p0 + a, c - a,
                                                     raw[a * values.itemsize:], scratch,
                                                     own_untranspose) < 0:
            return -1 - f
        if mixed:
            _add_mixed_block(f, j, steps, p0, n, values[:n], r0, r1, share, qx, qy, qz, corr, M,
                             scale, value_max, bragg, bragg_blocks, allowed, allowed_off,
                             hkl_r2, origin, inv_step, dims, nbricks, q_max, size, second, dump,
                             idx, val, punch, w32, cells)
            continue
        n = _compute_values(f, j, steps, p0, n, values[:n], qx, qy, qz, corr, M, scale,
                            value_max, bragg, bragg_blocks, allowed, allowed_off, hkl_r2, origin,
                            inv_step, dims, nbricks, q_max, size, second, dump, idx, val, punch)
        _scatter_block(idx, val, n, w32, cells)
    return 0


def allowed_table(crystal, grid: Grid) -> tuple[np.ndarray, np.ndarray]:
    """uint8 table over the integer nodes the grid covers: 1 where the reflection is allowed
    (not systematically absent); and the hkl of its first element."""
    lo = [math.floor(ax.start) - 1 for ax in grid.axes]
    hi = [math.ceil(ax.stop) + 1 for ax in grid.axes]
    hh, kk, ll = np.meshgrid(*[np.arange(a, b + 1) for a, b in zip(lo, hi)], indexing="ij")
    hkl = np.stack([hh, kk, ll], -1).reshape(-1, 3)
    ok = ~crystal.is_absent(hkl)
    return (np.ascontiguousarray(ok.reshape(hh.shape).astype(np.uint8)),
            np.array(lo, dtype=np.int64))


KINDS = ("transform", "masked_transform")


LAB_VALUES = ("|Q|", "Q.axis", "|Q x axis|")  # the quantities ThreadShares may share by


@numba.njit(inline="always")
def _lab_value_at(qx, qy, qz, which, a0, a1, a2):
    """LAB_VALUES[which] of the lab Q (qx, qy, qz) (float32) in float64 (unit axis a)."""
    x = np.float64(qx)
    y = np.float64(qy)
    z = np.float64(qz)
    along = x * a0 + y * a1 + z * a2
    if which == 1:
        return along
    q2 = x * x + y * y + z * z
    d = q2 if which == 0 else q2 - along * along
    return 0.0 if d < 0.0 else np.sqrt(d)


@numba.njit(nogil=True, cache=True)
def _lab_values(qx, qy, qz, which, a0, a1, a2, out):
    """out[i] = _lab_value_at of pixel i."""
    for i in range(qx.size):
        out[i] = _lab_value_at(qx[i], qy[i], qz[i], which, a0, a1, a2)


@numba.njit(nogil=True, cache=True)
def _share_runs(qx, qy, qz, corr, which, a0, a1, a2, low, high, sure_low, sure_high,
                block_runs, starts, stops, shared):
    """One thread's share of the detector's pixels (ThreadShares): a usable pixel (corr > 0)
    is its own when its value (_lab_value_at) lies in [low, high), surely its own (its voxel
    the thread's) in [sure_low, sure_high).  Writes, block by block of BLOCK pixels, its runs
    (block b's are block_runs[b]:block_runs[b + 1], pixels [starts[r], stops[r]) of the
    block: the runs of its own pixels and the unusable pixels between them, those holding
    one of its own at least) and shared[b] = 1 where some usable pixel of the block is not
    surely its own.  Returns (its own pixels, blocks holding one, those of them shared)."""
    npix = qx.size
    nruns = 0
    own = 0
    touched = 0
    touched_shared = 0
    for b in range(block_runs.size - 1):
        block_runs[b] = nruns
        p0 = b * BLOCK
        n = min(BLOCK, npix - p0)
        shared[b] = 0
        start = -1  # the run being followed (its first pixel), -1: none
        holds_own = False
        own_before = own
        for i in range(n):
            p = p0 + i
            mine = False
            if corr[p] > 0:
                v = _lab_value_at(qx[p], qy[p], qz[p], which, a0, a1, a2)
                mine = (v >= low) & (v < high)
                if not ((v >= sure_low) & (v < sure_high)):
                    shared[b] = 1
                taken = mine
            else:
                taken = True
            if mine:
                own += 1
                holds_own = True
            if taken and start < 0:
                start = i
                holds_own = mine
            elif not taken and start >= 0:
                if holds_own:
                    starts[nruns] = start
                    stops[nruns] = i
                    nruns += 1
                start = -1
        if start >= 0 and holds_own:
            starts[nruns] = start
            stops[nruns] = n
            nruns += 1
        if own > own_before:
            touched += 1
            touched_shared += shared[b]
    block_runs[block_runs.size - 1] = nruns
    return own, touched, touched_shared


class ThreadShares:
    """How the kernel's threads share the work with the sums of one thread bit for bit.

    Each voxel of the grid belongs to one thread, by a quantity of its centre's Q that does
    not change as the crystal turns: |Q|, or, with the scan axis a, Q.a or |Q x a| (the
    one whose shells cut the fewest of the detector's blocks of pixels, counted on a
    sample of RANKING_PIXELS usable pixels).  Thread i owns the voxels whose centre lies in
    the i-th shell (cuts at quantiles over that sample: equal numbers of pixels, to ~0.1% on
    a 2M detector).  A pixel of value v lands, on every frame, in a voxel whose
    centre's value lies within `reach` (the most the quantity changes from a voxel's centre
    to its corners) of v: thread i computes the pixels within `reach` of its shell (the
    few near a cut are computed by both neighbours) and adds only to its own voxels.  A
    voxel is then added to by one thread only, in the order of one thread, and the threads
    need no locks and no hand-over of pixels; they meet once per call (a chunk of frames).

    `owner` says per brick which thread owns all of its voxels, or, -1 - i for the i-th
    brick across a cut, that voxel_owner[512 i:512 (i + 1)] holds the owners of its voxels.
    A thread's pixels are runs of consecutive pixels inside each BLOCK of the detector
    (unusable pixels join the runs around them: they go to the dump), so that it reads,
    decompresses and computes only the blocks and the parts of blocks it needs; a block
    all of whose pixels are its own, far enough from a cut, it adds with no checks."""

    def __init__(self, table: PixelTable, acc: BrickedGrid, M: np.ndarray, threads: int,
                 axis=None):
        self.threads = int(threads)
        if not 1 <= self.threads <= 255:
            raise ValueError(f"threads must be 1 to 255, got {threads}")
        inverse = np.linalg.inv(np.asarray(M, np.float64))  # Q_lab = inverse hkl
        self.metric = np.ascontiguousarray(inverse.T @ inverse)
        # how each quantity is read off an hkl: ("norm", metric) or ("linear", g)
        forms = {"|Q|": ("norm", self.metric)}
        a = g = None
        if axis is not None and self.threads > 1:
            a = np.asarray(axis, np.float64) / np.linalg.norm(axis)
            g = inverse.T @ a  # Q.a = g . hkl
            forms["Q.axis"] = ("linear", g)
            forms["|Q x axis|"] = ("norm", self.metric - np.outer(g, g))
        used = table.index  # (the usable pixels)
        nblocks = pixel_blocks(table.qx.size)
        # rounding: the values and the voxel decisions are float64 of the same float32 table
        q_bound = float(np.sqrt(sum(max(float(np.nanmax(c)), -float(np.nanmin(c))) ** 2
                                    for c in (table.qx, table.qy, table.qz)))) if used.size else 0.0
        self.slack = 1e-9 * (1.0 + q_bound)
        # the quantity whose shells cut the fewest blocks, ranked on a subsample
        sample = used[::max(1, used.size // RANKING_PIXELS)]
        q = [c[sample] for c in (table.qx, table.qy, table.qz)]
        ranked = {name: self._plan(self._lab_value(name, *q, a), sample // BLOCK, nblocks, form,
                                   acc) for name, form in forms.items()}
        self.quantity = min(ranked, key=lambda name: ranked[name]["cost"])
        self.form = forms[self.quantity]
        self.axis, self.g = (a, g) if self.quantity != "|Q|" else (None, None)
        plan = ranked[self.quantity]  # (cuts at quantiles of the subsample)
        self.cuts, self.reach = plan["cuts"], plan["reach"]
        b = acc.brick
        self.owner, self.voxel_owner = self._owners(
            acc, self._reach([(b - 1) / 2.0 * ax.step for ax in acc.grid.axes]) + self.slack)
        self.mixed_bricks = self.voxel_owner.size / (b ** 3 * max(self.owner.size, 1))
        # each thread's pixels, exactly, in one pass over the detector each
        edges = np.concatenate([[-np.inf], self.cuts, [np.inf]])
        which, npix = LAB_VALUES.index(self.quantity), table.qx.size
        axis3 = np.zeros(3) if a is None else a
        self.shares, self.computed, self.blocks = [], [], []  # shares: _accumulate's `share`
        for me in range(self.threads):
            block_runs = np.empty(nblocks + 1, np.int64)
            starts = np.empty(npix // 2 + nblocks + 1, np.int64)  # (pages untouched: free)
            stops = np.empty_like(starts)
            shared = np.empty(nblocks, np.uint8)
            own, touched, touched_shared = _share_runs(
                table.qx, table.qy, table.qz, table.corr_all, which, *axis3,
                edges[me] - self.reach, edges[me + 1] + self.reach,
                edges[me] + self.reach, edges[me + 1] - self.reach,
                block_runs, starts, stops, shared)
            nruns = block_runs[-1]
            self.shares.append((block_runs, starts[:nruns].copy(), stops[:nruns].copy(),
                                self.owner, me, self.voxel_owner, shared))
            self.computed.append(own / used.size if used.size else 0.0)
            self.blocks.append((touched, touched_shared))

    @staticmethod
    def _lab_value(name: str, qx, qy, qz, axis) -> np.ndarray:
        """The quantity `name` of the lab Q of pixels (float32 components; NaN where Q is)."""
        a = np.zeros(3) if axis is None else np.asarray(axis, np.float64)
        out = np.empty(qx.size, np.float64)
        _lab_values(qx, qy, qz, LAB_VALUES.index(name), a[0], a[1], a[2], out)
        return out

    def _reach(self, half, form=None) -> float:
        """The most the quantity changes from a box's centre to its corners (half its sides
        in hkl)."""
        kind, m = form or self.form
        if kind == "linear":
            return float(np.abs(m) @ np.asarray(half))
        corners = np.array([[sh * half[0], sk * half[1], sl * half[2]]
                            for sh in (-1, 1) for sk in (-1, 1) for sl in (-1, 1)])
        return float(np.sqrt(np.maximum(np.einsum("ni,ij,nj->n", corners, m, corners),
                                         0.0)).max())

    def value(self, h, k, l) -> np.ndarray:  # noqa: E741
        """The quantity the grid is shared by, at (h, k, l) (arrays that broadcast)."""
        kind, m = self.form
        if kind == "linear":
            return m[0] * h + m[1] * k + m[2] * l
        v2 = (m[0, 0] * h * h + m[1, 1] * k * k + m[2, 2] * l * l
              + 2.0 * (m[0, 1] * h * k + m[0, 2] * h * l + m[1, 2] * k * l))
        return np.sqrt(np.maximum(v2, 0.0))

    def _plan(self, value, block, nblocks, form, acc: BrickedGrid) -> dict:
        """Cuts and reach for one quantity (value and block per usable pixel of a sample),
        and what it costs: the blocks each thread touches, the shared ones (some pixel not
        surely its own: their voxels checked) counted twice."""
        cuts = (np.quantile(value, np.arange(1, self.threads) / self.threads)
                if value.size else np.zeros(self.threads - 1))
        reach = self._reach([ax.step / 2.0 for ax in acc.grid.axes], form) + self.slack
        edges = np.concatenate([[-np.inf], cuts, [np.inf]])
        cost = 0
        for me in range(self.threads):
            mine = (value >= edges[me] - reach) & (value < edges[me + 1] + reach)
            sure = (value >= edges[me] + reach) & (value < edges[me + 1] - reach)
            touched = np.bincount(block[mine], minlength=nblocks) > 0
            shared = np.bincount(block[~sure], minlength=nblocks) > 0
            cost += int(touched.sum()) + int((touched & shared).sum())
        return dict(cuts=cuts, reach=reach, cost=cost)

    def _owners(self, acc: BrickedGrid, brick_reach: float):
        """(owner per brick, the voxels' owners of the bricks across a cut): a brick whose
        voxel centres (all within brick_reach of its centre) lie in one shell is that
        thread's; the i-th other one gets -1 - i, its voxels' owners [l, k, h] at
        voxel_owner[512 i:512 (i + 1)]."""
        b = acc.brick
        nbl, nbk, nbh = (int(v) for v in acc.nbricks)
        h, k, l = (ax.start + (b * np.arange(nb) + (b - 1) / 2.0) * ax.step  # noqa: E741
                   for ax, nb in zip(acc.grid.axes, (nbh, nbk, nbl)))
        centre = self.value(h[None, None, :], k[None, :, None], l[:, None, None]).reshape(-1)
        low = np.searchsorted(self.cuts, centre - brick_reach, side="right")
        owner = np.where(low == np.searchsorted(self.cuts, centre + brick_reach, side="right"),
                         low, -1).astype(np.int32)
        mixed = np.flatnonzero(owner < 0)
        owner[mixed] = -1 - np.arange(mixed.size, dtype=np.int32)
        voxel_owner = np.empty((mixed.size, b, b, b), np.uint8)
        bl, rest = np.divmod(mixed, nbk * nbh)
        bk, bh = np.divmod(rest, nbh)
        inside = np.arange(b)
        for i in range(0, mixed.size, 1024):
            part = slice(i, i + 1024)
            h, k, l = (ax.start + (b * bx[part, None] + inside) * ax.step  # noqa: E741
                       for ax, bx in zip(acc.grid.axes, (bh, bk, bl)))
            v = self.value(h[:, None, None, :], k[:, None, :, None], l[:, :, None, None])
            voxel_owner[part] = np.searchsorted(self.cuts, v, side="right")
        return owner, voxel_owner.reshape(-1)

    def describe(self) -> str:
        return (f"{self.threads} threads share the grid by shells of {self.quantity} (cuts "
                f"{', '.join(f'{c:.4f}' for c in self.cuts)} 1/A), each computing "
                f"{', '.join(f'{100 * c:.1f}' for c in self.computed)}% of the pixels "
                f"({100 * (sum(self.computed) - 1):.1f}% computed twice, within "
                f"{self.reach:.4f} 1/A of a cut) and checking the voxels of "
                f"{', '.join(str(s) for _, s in self.blocks)} of their "
                f"{', '.join(str(t) for t, _ in self.blocks)} blocks of pixels")

    def fits(self, M: np.ndarray) -> bool:
        """Whether frame matrices M (..., 3, 3) keep the quantity these shares were made for
        (a turn of the same crystal about the scan axis: the one guarantee of the split)."""
        inv = np.linalg.inv(np.asarray(M, np.float64).reshape(-1, 3, 3))
        metric = np.einsum("nki,nkj->nij", inv, inv)
        tol = 1e-12 * np.abs(self.metric).max()
        if np.abs(metric - self.metric).max() > tol:
            return False
        if self.axis is None:
            return True
        g = np.einsum("nki,k->ni", inv, self.axis)  # Q.axis = g . hkl, the same on every frame
        return bool(np.abs(g - self.g).max() <= 1e-12 * np.abs(self.g).max() + 1e-300)


class Transformer:
    """Accumulates frames of one scan entry onto a grid (one job's state), for the kinds of
    volume asked: 'transform' (every usable pixel) and/or 'masked_transform' (the Bragg
    regions and, with hkl_radius > 0, the punch left out), both from one pass.  threads > 1
    shares the grid out between that many threads by |Q| shells (ThreadShares); the sums
    are the same bit for bit whatever the number of threads."""

    def __init__(self, grid: Grid, table: PixelTable, trusted_max: float, *,
                 kinds=("transform",), crystal=None, hkl_radius: float = 0.0,
                 threads: int = 1, scan_axis=None, sub_steps: SubSteps | None = None):
        if not trusted_max > 0:
            raise ValueError(f"the trusted maximum must be > 0, got {trusted_max}")
        self.kinds = tuple(k for k in KINDS if k in kinds)
        if not self.kinds or len(self.kinds) != len(tuple(kinds)):
            raise ValueError(f"kinds must be some of {KINDS}, got {kinds}")
        if int(threads) < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        self.masked = "masked_transform" in self.kinds
        # both kinds from one pass: each pixel added once, to one part (BrickedGrid paired)
        self.acc = BrickedGrid(grid, len(self.kinds), paired=len(self.kinds) == 2,
                               shared=int(threads) > 1)
        self.table = table
        self.q_max = table.q_max
        self.live = live_blocks(table)
        self.trusted_max = float(trusted_max)
        self.hkl_r2 = float(hkl_radius) ** 2 if self.masked else 0.0
        if self.hkl_r2 > 0:
            self.allowed, self.allowed_off = allowed_table(crystal, grid)
        else:
            self.allowed, self.allowed_off = None, np.zeros(3, np.int64)
        self.threads = int(threads)
        self.scan_axis = scan_axis  # (lab) lets threads share the grid by Q.axis too
        # None: every block takes the sub-steps of a call's matrices (M.shape[1])
        self.sub_steps = sub_steps
        blocks = pixel_blocks(table.qx.shape[0])
        if sub_steps is not None and len(sub_steps.sub_count) != blocks:
            raise ValueError(f"sub-steps of {len(sub_steps.sub_count)} blocks for a detector "
                             f"of {blocks}")
        self.shares = None  # ThreadShares, made from the first frames' matrices
        # a worker per share: each adds its share of one call after its share of the calls
        # before; the shares side by side (no two touch the same voxel)
        self._workers = [ThreadPoolExecutor(1, thread_name_prefix=f"transform{i}")
                         for i in range(self.threads)] if self.threads > 1 else []
        self._outstanding: list[Future] = []

    def matrices(self, scan: ScanGeometry, first: int, stop: int, subdivide: int) -> np.ndarray:
        """The matrices of frames [first, stop) for add(): each block's sub-steps where the
        transformer has them (SubSteps.matrices), else `subdivide` for every block."""
        if self.sub_steps is not None:
            return self.sub_steps.matrices(scan, first, stop)
        return frame_matrices(scan, first, stop, subdivide)

    def _sub_step_plan(self, M) -> tuple[np.ndarray, np.ndarray]:
        """(sub_first, sub_count) per block for the kernels, for matrices M."""
        plan = self.sub_steps or SubSteps.uniform(M.shape[1], len(self.live))
        if M.shape[1] != plan.total:
            raise ValueError(f"matrices of {M.shape[1]} sub-steps per frame; the blocks' "
                             f"sub-steps {plan.counts} take {plan.total}")
        return plan.sub_first, plan.sub_count

    def _shares_for(self, M) -> ThreadShares | None:
        """The threads' shares for frames of matrices M; None: one thread does them (one
        thread asked, or matrices that are not turns of the crystal the shares were made
        for; never seen, but the split would then be unsafe)."""
        if not self._workers:
            return None
        if self.shares is None:
            self.shares = ThreadShares(self.table, self.acc, M.reshape(-1, 3, 3)[0],
                                       self.threads, self.scan_axis)
        return self.shares if self.shares.fits(M) else None

    def share_out(self, M) -> None:
        """Make the threads' shares (threads > 1) from the frame matrices M of the first
        frames now (a fixed cost of the job, ~0.5 s for a 2M detector), not at the first
        add."""
        self._shares_for(np.asarray(M))

    def _submit(self, kernel, shares: ThreadShares | None) -> list[Future]:
        """kernel(share) of every thread's share on its worker; kernel(None) (the whole
        work) in this thread, once the calls before it are done."""
        if shares is not None:
            futures = [w.submit(kernel, share) for w, share in zip(self._workers, shares.shares)]
            self._outstanding = [f for f in self._outstanding if not f.done()] + futures
            return futures
        self.wait()
        done = Future()
        done.set_result(kernel(None))
        return [done]

    @staticmethod
    def _finish(futures: list[Future]) -> None:
        """Wait for every future (they use the caller's buffers), then raise the first
        error."""
        concurrent.futures.wait(futures)
        for f in futures:
            f.result()

    def wait(self) -> None:
        """Wait until every call submitted has been added (raises the first error)."""
        outstanding, self._outstanding = self._outstanding, []
        self._finish(outstanding)

    def _bragg_args(self, bragg, bragg_blocks, nf: int) -> tuple:
        """(bragg, its block summary) for the kernels: (None, None) without the masked
        kind; the summary (bragg_block_summary) made here where none is given."""
        if not self.masked:
            return None, None
        if bragg is None:
            raise ValueError("the masked transform needs the Bragg mask of the frames")
        if bragg_blocks is None:
            bragg_blocks = bragg_block_summary(bragg)
        expected = (nf, pixel_blocks(self.table.qx.shape[0]))
        if bragg_blocks.dtype != np.uint8 or bragg_blocks.shape != expected:
            raise ValueError(f"Bragg block summary {bragg_blocks.dtype} {bragg_blocks.shape}, "
                             f"expected uint8 {expected}")
        return bragg, bragg_blocks

    def add(self, frames: np.ndarray, M: np.ndarray, scale: np.ndarray,
            bragg: np.ndarray | None = None, bragg_blocks: np.ndarray | None = None) -> None:
        """Add frames (nf, rows, cols) with their matrices M (nf, nsub, 3, 3), per-frame
        scale and the Bragg mask (nf, rows * cols) uint8 (for the masked transform) with its
        block summary (bragg_block_summary; made here when not given)."""
        nf = frames.shape[0]
        flat = frames.reshape(nf, -1)
        if flat.shape[1] != self.table.qx.shape[0]:
            raise ValueError(f"frames of {frames.shape[1:]} pixels do not match the pixel table "
                             f"of the detector {self.table.shape}")
        acc = self.acc
        args = (flat, self.table.qx, self.table.qy, self.table.qz, self.table.corr_all, M,
                np.asarray(scale, np.float64), largest_trusted_value(self.trusted_max, flat.dtype),
                *self._bragg_args(bragg, bragg_blocks, nf), self.allowed, self.allowed_off,
                self.hkl_r2, acc.origin, acc.inv_step, acc.dims, acc.nbricks, self.q_max,
                acc.size, acc.kernel_cells, acc.second, self.live, *self._sub_step_plan(M))
        self._finish(self._submit(lambda share: _accumulate(*args, share),
                                  self._shares_for(M)))

    def add_compressed(self, frames: CompressedFrames, M: np.ndarray, scale: np.ndarray,
                       bragg: np.ndarray | None = None,
                       bragg_blocks: np.ndarray | None = None) -> bool:
        """add() of frames given as their bitshuffle-LZ4 chunks (FrameStack.read_compressed),
        each block of pixels decompressed just before it is added: the same sums, without
        writing the frames to memory whole and reading them back (on several threads, each
        decompresses the parts of blocks it computes).  False (nothing added) where it
        does not apply: a compression block that does not divide the kernel's blocks, no
        compiled untranspose for the type; then add() the frames read."""
        pending = self.submit_compressed(frames, M, scale, bragg, bragg_blocks)
        if pending is False:
            return False
        self._finish(pending)
        return True

    def submit_compressed(self, frames: CompressedFrames, M: np.ndarray, scale: np.ndarray,
                          bragg: np.ndarray | None = None,
                          bragg_blocks: np.ndarray | None = None) -> list[Future] | bool:
        """add_compressed() without waiting for the threads' shares (threads > 1): returns
        their futures (the frames' buffer and the Bragg mask must stay as they are until
        they are done), or False where it does not apply (nothing added)."""
        itemsize = frames.dtype.itemsize
        if (BLOCK % frames.block or frames.block % 8 or itemsize not in (2, 4)
                or frames.elements != self.table.qx.shape[0]):
            return False
        bragg_args = self._bragg_args(bragg, bragg_blocks, len(frames))
        positions = np.empty((len(frames), block_count(frames.elements, frames.block) + 1),
                             np.int64)

        def damaged(status):  # (the grid holds part of the chunk: the step fails)
            i = -1 - status
            return RawDataError(f"{frames.files[i]}: frame {frames.first + i} of the scan "
                                "cannot be decompressed (a damaged bitshuffle-LZ4 chunk: "
                                "truncated or corrupt file?)")

        status = block_positions(frames.stream, frames.starts, frames.stops, frames.elements,
                                 itemsize, frames.block, positions)
        if status < 0:
            raise damaged(status)
        acc = self.acc
        stored = (frames.stream, positions, frames.elements, frames.block, OWN_UNTRANSPOSE)
        args = (self.table.qx, self.table.qy, self.table.qz, self.table.corr_all, M,
                np.asarray(scale, np.float64),
                largest_trusted_value(self.trusted_max, frames.dtype),
                *bragg_args, self.allowed, self.allowed_off, self.hkl_r2,
                acc.origin, acc.inv_step, acc.dims, acc.nbricks, self.q_max, acc.size,
                acc.kernel_cells, acc.second, self.live, *self._sub_step_plan(M))

        def kernel(share):  # (each thread a block of values and of decompressed bytes)
            status = _accumulate_stream(*stored, np.empty(BLOCK, frames.dtype),
                                        np.empty(frames.block * itemsize, np.uint8), *args,
                                        share)
            if status < 0:
                raise damaged(status)
        return self._submit(kernel, self._shares_for(M))

    def close(self) -> None:
        """Stop the worker threads (threads > 1) once what was submitted is done (its errors
        are raised by wait() or by the calls that waited for it, not here)."""
        for w in self._workers:
            w.shutdown(wait=True)
        self._outstanding = []

    def slab(self, l0: int, l1: int, kind: str = "transform", out: tuple | None = None
             ) -> tuple[np.ndarray, np.ndarray]:
        return self.acc.slab(l0, l1, self.kinds.index(kind), out)

    def slabs(self, l0: int, l1: int, out: list | None = None
              ) -> list[tuple[np.ndarray, np.ndarray]]:
        """(signal, weight) of L planes [l0, l1) of every kind, in self.kinds order."""
        return self.acc.slabs(l0, l1, out)

    def pixel_frames(self, kind: str = "transform") -> int:
        """Pixel-frames added so far to a kind (its summed weight: 1 per pixel-frame)."""
        acc, kind = self.acc, self.kinds.index(kind)
        # (in float64, part by part: no copy of the grid)
        parts = ([0, 1] if kind == 0 else [0]) if acc.paired else [kind]
        w = sum(float(np.sum(acc.weights[part], dtype=np.float64)) for part in parts)
        return int(round(w))


IN_FLIGHT = 2  # chunks of stored frames the threads add at once (their bytes and Bragg masks;
# 3 cost 55 MB more of fresh memory, which the workers waited for: a slower pass)


class _ChunkSlot:
    """The buffers of a chunk in flight: its stored frames (`stream`, read_compressed's
    holder), its Bragg mask with the mask's block summary (bragg_block_summary) and which
    frames' regions that mask holds."""

    def __init__(self, bragg: np.ndarray | None):
        self.stream = None
        self.bragg = bragg
        self.blocks = (np.zeros((bragg.shape[0], pixel_blocks(bragg.shape[1])), np.uint8)
                       if bragg is not None else None)
        self.painted = None
        self.pending: list[Future] = []
        self.done = None  # the frames added once pending is done (for progress)


def transform_frames(stack, scan: ScanGeometry, transformer: Transformer, first: int,
                     stop: int, subdivide: int, scale, chunk_frames: int = 16, mask=None,
                     progress=None) -> float:
    """Read frames [first, stop) of a FrameStack in chunks and add them: as stored where the
    stack gives them so (Transformer.add_compressed, each chunk read by this thread; with
    threads, up to IN_FLIGHT chunks added at once while this thread reads and paints the
    next), else decompressed, the next chunk read ahead as frames.frame_reader does for the
    transformer's threads; the masked transform leaves out the Bragg regions of mask
    (masking.ScanMask).  scale: per-frame multipliers for frames first..stop.  Returns the
    seconds spent in the kernel (and mask painting; with threads, the pass's)."""
    chunk = max(1, min(int(chunk_frames), stop - first))
    npix = int(np.prod(stack.frame_shape))
    if transformer.masked and mask is None:
        raise ValueError("the masked transform needs the scan's mask")
    mask = mask if transformer.masked else None
    nslots = IN_FLIGHT if transformer.threads > 1 else 1
    slots = [_ChunkSlot(np.zeros((chunk, npix), np.uint8) if mask is not None else None)
             for _ in range(nslots)]
    starts = list(range(first, stop, chunk))
    # frames as stored (compressed) are read by this thread, each chunk when it comes to
    # it (a read without decompressing); others ahead on a thread of their own with threads
    stored_first = (stack.read_compressed(first, min(first + chunk, stop), slots[0])
                    if starts else None)
    reader_threads = 1 if stored_first is not None else transformer.threads
    # read ahead: one buffer being read while the other is added; else one
    nbufs = 2 if reader_threads >= READ_AHEAD_THREADS else 1
    bufs = [np.empty((chunk,) + tuple(stack.frame_shape), stack.dtype) for _ in range(nbufs)]

    def read(i):
        a = starts[i]
        b = min(a + chunk, stop)
        stored = (stored_first if i == 0 else stack.read_compressed(a, b, slots[i % nslots])
                  if nbufs == 1 else None)
        if stored is not None:
            return a, stored
        return a, stack.read(a, b, out=bufs[i % nbufs][:b - a])

    def finish(slot):  # (its chunk added: its buffers free again)
        transformer._finish(slot.pending)
        slot.pending = []
        if slot.done is not None and progress is not None:
            progress(slot.done)
        slot.done = None

    t_kernel = 0.0
    t_pass = time.perf_counter()
    with frame_reader(reader_threads) as pool:
        pending = pool.submit(read, 0)
        for i in range(len(starts)):
            slot = slots[i % nslots]
            finish(slot)  # (the chunk IN_FLIGHT before this one)
            a, frames = pending.result()
            if i + 1 < len(starts):
                pending = pool.submit(read, i + 1)
            b = a + len(frames)
            M = transformer.matrices(scan, a, b, subdivide)
            t = time.perf_counter()
            bragg = blocks = None
            if mask is not None:  # the regions painted last in this buffer cleared
                if slot.painted is not None:
                    mask.paint(*slot.painted, slot.bragg[:slot.painted[1] - slot.painted[0]],
                               value=0)
                slot.blocks[:] = 0
                mask.paint(a, b, slot.bragg[:b - a], blocks=slot.blocks[:b - a], block=BLOCK)
                slot.painted = (a, b)
                bragg, blocks = slot.bragg[:b - a], slot.blocks[:b - a]
            s = scale[a - first:b - first]
            added = False
            if isinstance(frames, CompressedFrames):
                if not np.isnan(s).any():
                    added = transformer.submit_compressed(frames, M, s, bragg, blocks)
                if added is False:  # (frames left out, blocks the kernel cannot take)
                    frames = stack.read(a, b, out=bufs[0][:b - a])
                else:
                    slot.pending, slot.done = added, b - first
            if added is False:  # from the frames read
                keep = ~np.isnan(s)  # (frames left out: a bad monitor)
                if keep.all():
                    transformer.add(frames, M, s, bragg, blocks)
                elif keep.any():
                    transformer.add(frames[keep], M[keep], s[keep],
                                    *((bragg[keep], blocks[keep]) if mask is not None
                                      else (None, None)))
            t_kernel += time.perf_counter() - t
            if slot.done is None and progress is not None:
                progress(b - first)
    for slot in slots:
        finish(slot)
    if transformer.threads > 1:
        return time.perf_counter() - t_pass
    return t_kernel


def frame_scale(monitor, reference, first: int, stop: int, bad_frames: str = "fail",
                file_of=None) -> tuple[np.ndarray, float | None]:
    """Per-frame multipliers monitor_reference / monitor (1 without a monitor); the
    reference defaults to the scan's median good monitor.  Frames whose monitor is <= 0 or
    not finite stop the job (bad_frames 'fail': RawDataError naming the file, by
    file_of(frame)) or get NaN, which transform_frames leaves out ('leave_out')."""
    if monitor is None:
        return np.ones(stop - first), None
    monitor = np.asarray(monitor, dtype=np.float64)
    good = np.isfinite(monitor) & (monitor > 0)
    if not good.any():
        raise RawDataError(f"{file_of(0) if file_of else 'the scan'}: the monitor is <= 0 or "
                           "not finite on every frame")
    ref = float(reference) if reference else float(np.median(monitor[good]))
    part = monitor[first:stop]
    bad = np.flatnonzero(~good[first:stop]) + first
    if bad.size and bad_frames != "leave_out":
        where = file_of(int(bad[0])) if file_of else "the scan"
        raise RawDataError(f"{where}: the monitor is <= 0 or not finite at {bad.size} frame(s) "
                           f"{bad[:10].tolist()}{' ...' if bad.size > 10 else ''} (a beam dump? "
                           "a monitor glitch?): set reduction.transform.bad_monitor_frames: "
                           "leave_out to reduce the scan without them")
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(good[first:stop], ref / part, np.nan), ref


def transform_scan(stack, scan: ScanGeometry, grid: Grid, mask, kinds, first: int,
                   stop: int, params: TransformParams, trusted_max: float, crystal, monitor=None,
                   log=None, threads: int = 1) -> tuple[Transformer, dict]:
    """Transform frames [first, stop) of a scan entry (rule transform_frames) into the kinds
    of volume asked, all from one read of the frames: its refined geometry (with UB), the
    sample's grid, its masks (masking.ScanMask: the pixel mask for every kind, the Bragg
    regions and the hkl punch for the masked_transform).  Returns the filled Transformer and
    notes on what was added, per kind.  threads: the kernel's threads (the sums do not
    depend on them)."""
    log = log or logging.getLogger("hklflow.transform")
    if mask.pixels.shape != scan.detector.shape:
        raise InputMismatchError(f"the pixel mask {mask.pixels.shape} does not match the "
                                 f"detector {scan.detector.shape}")
    table = pixel_table(scan.detector, mask.pixels, solid_angle=params.solid_angle,
                        polarization=params.polarization,
                        polarization_fraction=params.polarization_fraction, threads=threads)
    steps, move = block_sub_steps(scan, table, grid, crystal.cell.parameters[:3])
    sub_steps, how = None, "config"
    if params.subdivide == "auto_per_block":  # each block the sub-steps its pixels need
        sub_steps = SubSteps.per_block(steps)
        nsub, how = int(steps.max(initial=1)), f"auto_per_block: {sub_steps.describe()}"
    elif params.subdivide == "auto":  # every block the most any pixel needs
        nsub, how = int(steps.max(initial=1)), "auto"
    else:
        nsub = int(params.subdivide)
    kinds = tuple(kinds)
    log.info("frames %d-%d (%s): %d usable pixels of %d; %s", first, stop, " and ".join(kinds),
             len(table), int(np.prod(scan.detector.shape)), grid.describe())
    log.info("rotation sub-steps per frame: %d (%s; a pixel moves up to %.2f voxels per frame)",
             nsub, how, move)
    scale, monitor_ref = frame_scale(monitor, params.monitor_reference, first, stop,
                                     params.bad_monitor_frames, lambda i: stack.locate(i)[0])
    left_out = (np.flatnonzero(np.isnan(scale)) + first).tolist()
    if left_out:
        log.warning("%d frame(s) left out, their monitor is <= 0 or not finite: %s",
                    len(left_out), left_out[:20])
    hkl_radius = mask.hkl_radius if "masked_transform" in kinds else 0.0
    tr = Transformer(grid, table, trusted_max, kinds=kinds, crystal=crystal,
                     hkl_radius=hkl_radius, threads=threads, scan_axis=scan.axis_lab,
                     sub_steps=sub_steps)
    log.info("grid in memory: %.2f GB (signal + weight of %d kind(s), float32)",
             tr.acc.nbytes / 1e9, len(tr.kinds))
    progress = steplog.Progress(log, "frames transformed", stop - first)
    if mask is not None and tr.masked:
        mask.frame_index()  # (its compiled code loaded before the pass over the frames)
    if threads > 1:
        tr.share_out(tr.matrices(scan, first, first + 1, nsub))
        log.info("%s", tr.shares.describe())
    t0 = time.monotonic()
    try:
        t_kernel = transform_frames(stack, scan, tr, first, stop, nsub, scale,
                                    params.chunk_frames, mask, progress.update)
    finally:
        tr.close()
    pixel_frames = (stop - first) * len(table)
    # blocks of BLOCK pixels by their sub-steps, and the mean over the usable blocks
    plan = sub_steps or SubSteps.uniform(nsub, len(tr.live))
    blocks_by_steps = {str(c): int(np.count_nonzero(plan.sub_count == c)) for c in plan.counts}
    mean_steps = float(plan.sub_count[tr.live != 0].mean()) if tr.live.any() else float(nsub)
    notes = {}
    for kind in tr.kinds:  # (pixel_frames_added: the writer's sum of the weights)
        notes[kind] = {"kind": kind, "frames": [first, stop], "subdivide": nsub,
                       "subdivide_blocks": blocks_by_steps,
                       "usable_pixels": len(table), "pixel_frames_usable": int(pixel_frames),
                       "solid_angle": params.solid_angle, "polarization": params.polarization,
                       "polarization_fraction": params.polarization_fraction,
                       "monitor_reference": monitor_ref, "frames_left_out": left_out,
                       "hkl_radius": hkl_radius if kind == "masked_transform" else 0.0,
                       "kinds_in_one_pass": list(tr.kinds), "kernel_seconds": t_kernel}
    log.info("%d frames in %.2f s (kernel %.2f s on %d thread(s): %.1f Mpixel/s for %d "
             "kind(s))", stop - first, time.monotonic() - t0, t_kernel, tr.threads,
             pixel_frames * mean_steps / max(t_kernel, 1e-9) / 1e6, len(tr.kinds))
    return tr, notes


# --------------------------------------------------------------------------------------
# Plain numpy reference
# --------------------------------------------------------------------------------------
def numpy_transform(frames, table: PixelTable, M, scale, trusted_max, grid: Grid,
                    signal=None, weight=None, bragg=None):
    """The same mapping and binning in plain numpy, into [l, k, h] float64 arrays (created
    if not given).  No punch (hkl_radius)."""
    if signal is None:
        signal = np.zeros(grid.shape)
        weight = np.zeros(grid.shape)
    nsub = M.shape[1]
    origin = np.array([ax.start for ax in grid.axes])
    inv_step = np.array([1.0 / ax.step for ax in grid.axes])
    offset = 0.5 - origin * inv_step
    dims = np.array([grid.h.n, grid.k.n, grid.l.n])
    q = table.q.astype(np.float64)
    sflat, wflat = signal.reshape(-1), weight.reshape(-1)
    for f in range(frames.shape[0]):
        v = frames[f].reshape(-1)[table.index].astype(np.float64)
        ok = (v >= 0) & (v < trusted_max)
        if bragg is not None:
            ok &= bragg[f].reshape(-1)[table.index] == 0
        for j in range(nsub):
            A = M[f, j] * inv_step[:, None]  # voxel coordinate + 1/2 = A q + offset
            idx = np.floor(q @ A.T + offset).astype(np.int64)
            good = ok & np.all((idx >= 0) & (idx < dims), axis=1)
            flat = (idx[good, 2] * dims[1] + idx[good, 1]) * dims[0] + idx[good, 0]
            np.add.at(sflat, flat, v[good] * table.corr[good] * scale[f] / nsub)
            np.add.at(wflat, flat, 1.0 / nsub)
    return signal, weight
