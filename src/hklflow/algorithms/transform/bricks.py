"""The grid in bricks of 8^3 voxels, signal and weight (and variance) of a voxel side by
side (BrickedGrid), and the loops that turn bricks back into (L, K, H) slabs and chunks."""
from __future__ import annotations

import mmap

import numpy as np

from ...base.errors import GridError
from ...model.grid import (MAX_TRANSFORM_VOXELS, MAX_TRANSFORM_VOXELS_BOTH_KINDS, TRANSFORM_BRICK,
                           Grid)
from .brick_kernels import _gather_chunk, _unbrick_slab
from .memory import ZeroedPages

BRICK_BITS = TRANSFORM_BRICK.bit_length() - 1  # bricks of 8^3 voxels (2 KiB of float32)
DUMP_SLOTS = 16  # per thread (ThreadShares), for DUMP_THREADS threads
DUMP_THREADS = 16


def unbrick(flat: np.ndarray, nbricks, side: int, shape) -> np.ndarray:
    """[l, k, h] array of `shape` from values in brick order: nbricks (l, k, h) bricks of
    side^3 values (the grid's, or the half sets' bricks of 4^3 on the binned grid)."""
    bl, bk, bh = (int(v) for v in nbricks)
    a = flat.reshape(bl, bk, bh, side, side, side).transpose(0, 3, 1, 4, 2, 5)
    a = a.reshape(bl * side, bk * side, bh * side)
    return np.ascontiguousarray(a[:shape[0], :shape[1], :shape[2]])


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
    the cells in a memory file (ZeroedPages: for threads adding side by side).  `variance`:
    a third cell per voxel, the summed variance of its signal (12 bytes a voxel); the
    arrays and slabs then come as (signal, weight, variance)."""

    def __init__(self, grid: Grid, nkinds: int = 1, paired: bool = False,
                 shared: bool = False, variance: bool = False):
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
        # per kind (part): (signal, weight[, variance]) per voxel, then the kernel's dump
        # slots; a second part starts on a brick and a memory page
        self.variance = bool(variance)
        self.stride = 3 if self.variance else 2
        part = size + DUMP_SLOTS * DUMP_THREADS
        if self.paired:
            unit = b ** 3
            while (unit * self.stride * 4) % mmap.PAGESIZE:
                unit += b ** 3
            part = -(-part // unit) * unit
        most = MAX_TRANSFORM_VOXELS_BOTH_KINDS if self.paired else MAX_TRANSFORM_VOXELS
        if size > most:
            both = " with both kinds from one pass" if self.paired else ""
            raise GridError(f"grid {grid.describe()} holds {size} voxels (in bricks of {b}^3); "
                            f"the transform indexes at most {most}{both}: choose coarser "
                            "steps or narrower limits (reduction.transform.grid)")
        self.size = size
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
        self.variances = ([c[2:end:self.stride] for c in self.cells] if self.variance
                          else None)
        self.origin = np.array([ax.start for ax in grid.axes])
        self.inv_step = np.array([1.0 / ax.step for ax in grid.axes])

    @property
    def nbytes(self) -> int:
        return sum(c.nbytes for c in self.cells)

    def unbrick(self, flat: np.ndarray) -> np.ndarray:
        return unbrick(flat, self.nbricks, self.brick, self.grid.shape)

    def _parts(self) -> list[list[np.ndarray]]:
        """Per part: its signal, weight (and variance) views in brick order."""
        arrays = [self.signals, self.weights] + ([self.variances] if self.variance else [])
        return [[a[part] for a in arrays] for part in range(len(self.cells))]

    def flat(self, kind: int = 0) -> tuple:
        """(signal, weight[, variance]) of a kind in brick order (kind 0 of paired cells: the
        sum of the two parts, new arrays)."""
        parts = self._parts()
        if not self.paired:
            return tuple(parts[kind])
        if kind == 1:
            return tuple(parts[0])
        return tuple(a + b for a, b in zip(parts[0], parts[1]))

    def arrays(self, kind: int = 0) -> tuple:
        """(signal, weight[, variance]) of a kind as [l, k, h] arrays."""
        return tuple(self.unbrick(a) for a in self.flat(kind))

    def _slab_arrays(self, l0: int, l1: int, out: tuple | None) -> tuple:
        if not 0 <= l0 <= l1 <= self.grid.l.n:
            raise ValueError(f"slab [{l0}, {l1}) is outside the grid's {self.grid.l.n} L planes")
        shape = (l1 - l0, self.grid.k.n, self.grid.h.n)
        if out is None:
            return tuple(np.empty(shape, np.float32) for _ in range(self.stride))
        arrays = tuple(o[:l1 - l0] for o in out)
        if len(arrays) != self.stride or any(a.shape != shape for a in arrays):
            raise ValueError(f"slab buffers {[a.shape for a in arrays]} do not hold "
                             f"{self.stride} arrays of {shape}")
        return arrays

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

    def slab(self, l0: int, l1: int, kind: int = 0, out: tuple | None = None) -> tuple:
        """(signal, weight[, variance]) of a kind on L planes [l0, l1) as [l, k, h] arrays, in
        one pass over the bricks (no full-size temporary; bricks never written are zeros,
        not read); into the first planes of `out` (float32 C-order arrays [>= l1 - l0, k, h],
        one per array, reused from slab to slab) when given."""
        arrays = self._slab_arrays(l0, l1, out)
        _unbrick_slab(*self._sources(kind, l0, l1), l0, self.nbricks, self.brick, self.stride,
                      *self._padded(arrays), None, None, None)
        return arrays

    def slabs(self, l0: int, l1: int, out: list | None = None) -> list[tuple]:
        """slab() of every kind, [(signal, weight[, variance])] in kind order; paired cells in
        one pass over them.  out: buffers per kind, as slab()'s."""
        out = out if out is not None else [None] * self.nkinds
        if not self.paired:
            return [self.slab(l0, l1, kind, o) for kind, o in enumerate(out)]
        arrays = [self._slab_arrays(l0, l1, o) for o in out]
        _unbrick_slab(*self._sources(0, l0, l1), l0, self.nbricks, self.brick, self.stride,
                      *self._padded(arrays[0]), *self._padded(arrays[1]))
        return arrays

    @staticmethod
    def _padded(arrays: tuple) -> tuple:
        """(signal, weight, variance or None): the unbricking kernels' arguments."""
        return tuple(arrays) + (None,) * (3 - len(arrays))

    def chunk_rows(self, chunk: tuple[int, int, int], intensity: bool = True, rows=None):
        """The grid as the chunks of a volume file (chunk: (cl, ck, ch) voxels, whole bricks
        or the grid's extent), row of L chunks by row, read once from the bricks with no
        slab in between.  Yields (l0, l1, chunks) per row: its L planes and an iterator of
        (k0, h0, per kind (signal, weight, intensity or None, variance or None)) over the
        chunks of the row
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
        # signal, weight, intensity, variance
        arrays = np.empty((4, self.nkinds, cl, ck, ch), np.float32)
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
        signal, weight, inten, variance = arrays
        for row, col in zip(*np.nonzero(hit)):
            k0, h0 = int(row) * chunk[0], int(col) * chunk[1]
            for sources, kinds in calls:
                _gather_chunk(*sources, kinds.stop - kinds.start, l0, k0, h0, self.grid.shape,
                              self.nbricks, self.brick, self.stride, intensity, signal[kinds],
                              weight[kinds], inten[kinds], variance[kinds])
            yield k0, h0, [(signal[kind], weight[kind], inten[kind] if intensity else None,
                            variance[kind] if self.variance else None)
                           for kind in range(self.nkinds)]


