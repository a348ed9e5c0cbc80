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
# pixels on which a plate's left-out pixel-frames are counted (PixelFrames): a note's
# count, at a cost per frame small against the kernel's (bench/README.md, transform.py)
LEFT_OUT_SAMPLE = 4096


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
    """A correction per pixel and frame (a plate's absorption, model.corrections), taken at
    each frame's centre; pixels whose factor is below the correction's minimum are left
    out (correction 0).  compiled: the kernels evaluate it per pixel from the pixel's lab Q
    in the model's table of the frame (kernel_plate; the physics stays in the model, the
    kernels only look it up); False: the model's numpy closed form, a pixel table per frame
    (parts), the reference the compiled path is tested against.

    left_out: the pixel-frames left out so far (factor below the minimum), counted on every
    pixel by the reference, and by the compiled path on a sample of the pixels at every
    frame (left_out_from says which), looked up as the kernels do: counting in the kernels
    would count twice the pixels that two threads compute (ThreadShares' margins)."""

    def __init__(self, table: PixelTable, correction, wavelength: float,
                 compiled: bool = True):
        self.table = table
        self.correction = correction
        self.wavelength = float(wavelength)
        self.compiled = bool(compiled)
        self._stride = max(1, -(-len(table) // LEFT_OUT_SAMPLE)) if self.compiled else 1
        self._sample = self.directions[::self._stride] if self.compiled else None
        self._left_out = 0

    @property
    def left_out(self) -> int:
        return int(self._left_out)

    @property
    def left_out_from(self) -> str:
        if self._stride == 1:
            return "every usable pixel at every frame"
        return (f"every {self._stride}th usable pixel at every frame ({len(self._sample)} of "
                f"{len(self.table)}), times {self._stride}")

    @property
    def directions(self) -> np.ndarray:
        """float64 (n, 3) unit lab directions of the usable pixels' rays: s1 = lambda Q + s0."""
        s1 = self.wavelength * self.table.q.astype(np.float64)
        s1[:, 2] += 1.0
        return s1 / np.linalg.norm(s1, axis=1, keepdims=True)

    def kernel_plate(self, frame_numbers):
        """The kernels' plate for the frames numbered frame_numbers (kernels._voxel_indices):
        the factor's table at each frame's centre, lambda times the normal and its cosine
        with the beam (a ray's cosine with the normal is then (lambda Q) . n + s0 . n), the
        nodes per unit cosine, the minimum factor."""
        tables, normals, c_in = self.correction.frame_tables(frame_numbers)
        inv_node = 0.5 * (tables.shape[1] - 1)
        if self.compiled:  # (the kernels' look-up, on the sample: cosines of every frame)
            x = np.clip((self._sample @ normals.T.astype(np.float64) + 1.0) * inv_node, 0.0,
                        tables.shape[1] - 2.0)
            k = x.astype(np.int64)
            rows = np.arange(len(tables))
            low = tables[rows, k]
            factor = low + (x - k) * (tables[rows, k + 1] - low)
            self._left_out += self._stride * int(np.count_nonzero(
                factor < self.correction.min_transmission))
        return (tables, (self.wavelength * normals).astype(np.float32),
                c_in.astype(np.float32), np.float32(inv_node),
                np.float32(self.correction.min_transmission))

    def parts(self, first: int, stop: int) -> list[tuple[int, int, PixelTable | None]]:
        """[(a, b, the pixel table of frames [a, b))] covering frames [first, stop):
        compiled, one part and no table (the kernels apply the factor: kernel_plate); else
        a part per frame, its table's correction divided by the factor at the frame's
        centre, 0 for the pixels left out (which the kernels skip; its Q and index are the
        scan's)."""
        if self.compiled:
            return [(first, stop, None)]
        t = self.table
        directions = self.directions
        out = []
        for f in range(first, stop):
            factor = self.correction.factor(directions, f + 0.5)
            corr = np.zeros_like(t.corr_all)
            keep = factor > 0
            corr[t.index[keep]] = t.corr_all[t.index[keep]] / factor[keep]
            self._left_out += int(np.count_nonzero(~keep))
            out.append((f, f + 1, PixelTable(t.qx, t.qy, t.qz, corr, t.index, t.shape)))
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
