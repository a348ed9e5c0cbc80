"""What the transform's kernels take per detector pixel and per frame: the pixels' lab Q and
corrections (PixelTable), the frames' matrices and rotation sub-steps (SubSteps), the blocks
of BLOCK pixels the kernels work through (which hold a usable pixel, which a Bragg-masked
one) and the table of allowed reflections for the punch."""
from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from ...model.corrections import Corrections, PixelRays, corrections_for
from ...model.geometry import DetectorGeometry, ScanGeometry
from ...model.grid import Grid

BLOCK = 4096  # pixels per unit of the kernels' work


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


def pixel_table(geometry: DetectorGeometry, excluded: np.ndarray,
                corrections: Corrections | None = None, *, solid_angle: bool = True,
                polarization: bool = True, polarization_fraction: float = 0.99,
                threads: int = 1) -> PixelTable:
    """Lab Q and correction of every pixel not excluded (bool (rows, cols), True = unused):
    1 / the product of the per-pixel factors of `corrections` (model.corrections; without
    it, solid angle, polarization as the switches say and a thick sensor's efficiency
    relative to normal incidence: the table of before the corrections of issue 81).  Q
    is where each pixel looks (with a thick sensor, its parallax: solved once per pixel);
    a pixel whose factor is 0 (a ray a sample's shape absorbs beyond its minimum
    transmission) is left out.  threads: blocks of rows computed side by side (numpy lets
    go of the GIL)."""
    if corrections is None:
        corrections = corrections_for(geometry, solid_angle=solid_angle,
                                      polarization=polarization,
                                      polarization_fraction=polarization_fraction, air=False,
                                      absorption=False, efficiency_relative=True)
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
        rays = PixelRays(geometry, sel // nx + 0.5, sel % nx + 0.5)
        corr = corrections.pixel_factor(rays)
        good = np.isfinite(corr) & (corr > 0)
        corr_all[sel[good]] = corr[good]
        q[:, sel[good]] = rays.q[good].T

    if threads > 1:
        with ThreadPoolExecutor(threads, thread_name_prefix="pixel_table") as pool:
            list(pool.map(rows_from, range(0, ny, step)))
    else:
        for r0 in range(0, ny, step):
            rows_from(r0)
    index = np.flatnonzero(corr_all > 0).astype(np.int64)
    return PixelTable(q[0], q[1], q[2], corr_all, index, geometry.shape)


class PixelFrames:
    """The pixel tables of parts of a scan's frames where a correction depends on pixel and
    frame (a plate's absorption, model.corrections): the table's correction divided by the
    factor of the part's frames (the mean of its ends), the pixels whose factor is below
    the correction's minimum left out (correction 0, which the kernels skip); parts as long
    as the ends of each differ by at most FRAME_TOLERANCE.  compiled: the factors looked up
    in the correction's tables (pixel_frame_kernels: one pass per part tried); False: its
    numpy closed form (over_frames, halving), the reference the compiled path is tested
    against."""

    def __init__(self, table: PixelTable, correction, wavelength: float,
                 compiled: bool = True):
        self.table = table
        self.correction = correction
        self.compiled = bool(compiled)
        q = table.q.astype(np.float64)  # where the usable pixels look: s1 = lambda Q + s0
        s1 = wavelength * q
        s1[:, 2] += 1.0
        self.directions = s1 / np.linalg.norm(s1, axis=1, keepdims=True)
        self._d32 = [np.ascontiguousarray(self.directions[:, i]) for i in range(3)]
        self._ends: dict = {}  # frame coordinate -> factor or table (the next part's start)
        self._length = 1 << 30  # frames of the next part tried (compiled)
        self.left_out = 0  # pixel-frames left out (factor 0)
        self.parts_made = 0

    def _part(self, a: int, b: int, corr: np.ndarray) -> tuple[float, int]:
        """corr filled for frames [a, b): (largest change between the ends, pixels gone)."""
        from .pixel_frame_kernels import part_corrections

        for z in (a, b):
            if z not in self._ends:
                self._ends[z] = self.correction.table_at(z)
        (n_a, t_a), (n_b, t_b) = self._ends[a], self._ends[b]
        step = 2.0 / (len(t_a) - 1)
        return part_corrections(*self._d32, self.table.index, self.table.corr_all, n_a, t_a,
                                n_b, t_b, -1.0, 1.0 / step,
                                self.correction.min_transmission, corr)

    def _compiled_parts(self, first: int, stop: int) -> list[tuple[int, int, np.ndarray, int]]:
        from ...model.corrections.absorption import FRAME_TOLERANCE

        # parts as long as the last one that held (doubled while they hold): a pass over the
        # pixels per part tried, and where the factor changes fast few are tried twice
        out, a = [], first
        while a < stop:
            b = min(stop, a + self._length)
            corr = np.zeros_like(self.table.corr_all)
            worst, gone = self._part(a, b, corr)
            if b - a > 1 and worst > FRAME_TOLERANCE:
                self._length = max(1, (b - a) // 2)
                continue
            out.append((a, b, corr, gone))
            self.parts_made += 1
            a = b
            if worst < 0.5 * FRAME_TOLERANCE:
                self._length *= 2
        return out

    def _numpy_parts(self, first: int, stop: int) -> list[tuple[int, int, np.ndarray, int]]:
        t = self.table
        out = []
        for a, b, factor in self.correction.over_frames(self.directions, first, stop,
                                                        self._ends):
            corr = np.zeros_like(t.corr_all)
            keep = factor > 0
            with np.errstate(divide="ignore"):
                corr[t.index] = np.where(keep, t.corr_all[t.index] / factor, 0.0)
            out.append((a, b, corr, int(np.count_nonzero(~keep))))
        return out

    def parts(self, first: int, stop: int) -> list[tuple[int, int, PixelTable]]:
        """[(a, b, the pixel table of frames [a, b))] covering frames [first, stop): the
        scan's Q, and a correction of 0 for the pixels left out (which the kernels skip; its
        index is the scan's)."""
        for z in [z for z in self._ends if z < first]:
            del self._ends[z]
        t = self.table
        made = (self._compiled_parts if self.compiled else self._numpy_parts)(first, stop)
        out = []
        for a, b, corr, gone in made:
            self.left_out += gone * (b - a)
            out.append((a, b, PixelTable(t.qx, t.qy, t.qz, corr, t.index, t.shape)))
        return out


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
    # (n, 3) gather, which costs several times as much
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
