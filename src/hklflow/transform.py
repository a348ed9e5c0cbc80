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
grid (on the benchmark machine a plain [l, k, h] layout measured the same, the pairing of
signal and weight gained ~5%, a constant brick size ~20%, a kernel without the Bragg-mask and
punch tests when they are off ~15%).
`numpy_transform` is the same mapping and binning in plain numpy (the benchmark's baseline
and the tests' reference).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numba
import numpy as np

from .geometry import DetectorGeometry, ScanGeometry, q_from_directions
from .grid import Grid

BRICK_BITS = 3  # bricks of 8^3 voxels (2 KiB of float32)


# --------------------------------------------------------------------------------------
# Per-scan pixel table
# --------------------------------------------------------------------------------------
@dataclass
class PixelTable:
    """The usable pixels of a scan entry: flat detector index, lab Q and correction."""

    index: np.ndarray  # int64 (n,) flat pixel index (row * cols + col)
    q: np.ndarray  # float32 (n, 3) lab Q, 1/Angstrom (no 2 pi)
    corr: np.ndarray  # float32 (n,) multiplier: 1 / (solid angle x polarization)
    shape: tuple

    def __len__(self) -> int:
        return len(self.index)


def pixel_table(geometry: DetectorGeometry, excluded: np.ndarray, *, solid_angle: bool = True,
                polarization: bool = True, polarization_fraction: float = 0.99) -> PixelTable:
    """Lab Q and correction of every pixel not excluded (bool (rows, cols), True = unused)."""
    ai = geometry.to_pyfai()
    corr = np.ones(geometry.shape)
    if solid_angle:
        corr /= np.asarray(ai.solidAngleArray(), dtype=np.float64)
    if polarization:
        corr /= np.asarray(ai.polarization(factor=polarization_fraction), dtype=np.float64)
    use = ~np.asarray(excluded, bool) & np.isfinite(corr) & (corr > 0)
    index = np.flatnonzero(use.ravel()).astype(np.int64)
    ny, nx = geometry.shape
    q = np.empty((len(index), 3), dtype=np.float32)
    done = 0
    for r0 in range(0, ny, 64):  # blocks of rows: temporaries stay small on large detectors
        r1 = min(r0 + 64, ny)
        sel = index[(index >= r0 * nx) & (index < r1 * nx)]
        pos = geometry.lab_positions(sel // nx + 0.5, sel % nx + 0.5)
        q[done:done + len(sel)] = q_from_directions(
            pos / np.linalg.norm(pos, axis=-1, keepdims=True), geometry.wavelength)
        done += len(sel)
    return PixelTable(index, q, np.ascontiguousarray(corr.ravel()[index], dtype=np.float32),
                      geometry.shape)


def frame_matrices(scan: ScanGeometry, UB: np.ndarray, first: int, stop: int,
                   subdivide: int) -> np.ndarray:
    """(stop-first, subdivide, 3, 3): (UB)^-1 R^-1 at the centre of each rotation sub-step
    (frame f, sub-step j at continuous frame coordinate f + (j + 0.5) / subdivide)."""
    z = (np.arange(first, stop)[:, None] + (np.arange(subdivide)[None, :] + 0.5) / subdivide)
    R = scan.sample_rotation(z.ravel())  # (n, 3, 3) sample -> lab
    M = np.einsum("ij,nkj->nik", np.linalg.inv(UB), R)  # (UB)^-1 R^T
    return np.ascontiguousarray(M.reshape(stop - first, subdivide, 3, 3))


def auto_subdivide(scan: ScanGeometry, table: PixelTable, grid: Grid, cell_lengths,
                   max_subdivide: int = 16) -> tuple[int, float]:
    """Sub-steps so that no pixel's (h, k, l) moves more than half a voxel between them.

    A pixel's sample-frame Q moves by |Q_perp| dphi per frame (Q_perp: the part of lab Q
    perpendicular to the rotation axis); index i = Q . a_i moves by at most |a_i| times that.
    Returns (sub-steps, largest move per frame in voxels)."""
    axis = scan.goniometer.offset_rotation(scan.offsets) @ scan.goniometer.axis
    q = table.q.astype(np.float64)
    q_perp = np.sqrt(np.maximum(np.einsum("ij,ij->i", q, q) - (q @ axis) ** 2, 0.0)).max() \
        if len(q) else 0.0
    dphi = math.radians(abs(scan.angles.step))
    move = max(q_perp * dphi * length / ax.step for length, ax in zip(cell_lengths, grid.axes))
    return int(min(max_subdivide, max(1, math.ceil(move / 0.5 - 1e-9)))), float(move)


# --------------------------------------------------------------------------------------
# Bricked accumulator
# --------------------------------------------------------------------------------------
class BrickedGrid:
    """signal and weight of a grid in bricks of 2^BRICK_BITS voxels a side (float32)."""

    def __init__(self, grid: Grid):
        self.grid = grid
        b = 1 << BRICK_BITS
        self.brick = b
        self.dims = np.array([grid.h.n, grid.k.n, grid.l.n], dtype=np.int64)
        self.nbricks = np.array([-(-int(n) // b) for n in (grid.l.n, grid.k.n, grid.h.n)],
                                dtype=np.int64)  # (l, k, h)
        size = int(np.prod(self.nbricks)) * b ** 3
        # signal and weight of a voxel side by side: one cache line per pixel added
        self.pairs = np.zeros(2 * size, dtype=np.float32)
        self.signal = self.pairs[0::2]
        self.weight = self.pairs[1::2]
        self.origin = np.array([ax.start for ax in grid.axes])
        self.inv_step = np.array([1.0 / ax.step for ax in grid.axes])

    @property
    def nbytes(self) -> int:
        return self.pairs.nbytes

    def unbrick(self, flat: np.ndarray) -> np.ndarray:
        bl, bk, bh = (int(v) for v in self.nbricks)
        b = self.brick
        a = flat.reshape(bl, bk, bh, b, b, b).transpose(0, 3, 1, 4, 2, 5)
        a = a.reshape(bl * b, bk * b, bh * b)
        return np.ascontiguousarray(a[:self.grid.l.n, :self.grid.k.n, :self.grid.h.n])

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """(signal, weight) as [l, k, h] arrays."""
        return self.unbrick(self.signal), self.unbrick(self.weight)

    def slab(self, l0: int, l1: int) -> tuple[np.ndarray, np.ndarray]:
        """(signal, weight) of L planes [l0, l1) as [l, k, h] arrays, l0 a multiple of the
        brick size (so a volume is written without a second full-size copy)."""
        b = self.brick
        if l0 % b:
            raise ValueError(f"slab start {l0} is not a multiple of the brick size {b}")
        bl, bk, bh = (int(v) for v in self.nbricks)
        b0, b1 = l0 // b, -(-l1 // b)
        out = []
        for flat in (self.signal, self.weight):
            a = flat.reshape(bl, bk, bh, b, b, b)[b0:b1].transpose(0, 3, 1, 4, 2, 5)
            a = a.reshape((b1 - b0) * b, bk * b, bh * b)
            out.append(np.ascontiguousarray(a[:l1 - l0, :self.grid.k.n, :self.grid.h.n]))
        return out[0], out[1]


@numba.njit(nogil=True, cache=True, error_model="numpy")
def _accumulate(frames, pix_index, q, corr, M, scale, trusted_max, bragg, allowed,
                allowed_off, hkl_r2, origin, inv_step, dims, nbricks, pairs):
    """frames (nf, npix_total) any numeric dtype; M (nf, nsub, 3, 3); scale (nf,);
    bragg (nf, npix_total) uint8 (1 = masked) or None; allowed (a, b, c) uint8 table of
    allowed nodes from allowed_off (hkl of its [0, 0, 0]) for the punch of radius^2 hkl_r2
    (r.l.u.^2), or None.  None arguments compile to a kernel without those tests (~15%
    faster).  Adds into the bricked (signal, weight) pairs.  The brick size is a
    compile-time constant (a variable shift costs ~20%)."""
    nf = frames.shape[0]
    nsub = M.shape[1]
    npix = pix_index.shape[0]
    w = 1.0 / nsub
    nh, nk, nl = dims[0], dims[1], dims[2]
    nbk, nbh = nbricks[1], nbricks[2]
    sh, sk, sl = inv_step[0], inv_step[1], inv_step[2]
    # voxel coordinate + 1/2 = A q + o with A = diag(1/step) M, o = 1/2 - origin / step
    o0 = 0.5 - origin[0] * sh
    o1 = 0.5 - origin[1] * sk
    o2 = 0.5 - origin[2] * sl
    bits = BRICK_BITS
    bits2 = 2 * BRICK_BITS
    bits3 = 3 * BRICK_BITS
    low = (1 << BRICK_BITS) - 1
    for f in range(nf):
        s = scale[f] * w
        frame = frames[f]
        for j in range(nsub):
            m = M[f, j]
            m00, m01, m02 = m[0, 0], m[0, 1], m[0, 2]
            m10, m11, m12 = m[1, 0], m[1, 1], m[1, 2]
            m20, m21, m22 = m[2, 0], m[2, 1], m[2, 2]
            a00, a01, a02 = m00 * sh, m01 * sh, m02 * sh
            a10, a11, a12 = m10 * sk, m11 * sk, m12 * sk
            a20, a21, a22 = m20 * sl, m21 * sl, m22 * sl
            for p in range(npix):
                ip = pix_index[p]
                v = frame[ip]
                if v < 0 or v >= trusted_max:
                    continue
                if bragg is not None:
                    if bragg[f, ip] != 0:
                        continue
                q0 = q[p, 0]
                q1 = q[p, 1]
                q2 = q[p, 2]
                x = a00 * q0 + a01 * q1 + a02 * q2 + o0
                y = a10 * q0 + a11 * q1 + a12 * q2 + o1
                z = a20 * q0 + a21 * q1 + a22 * q2 + o2
                if x < 0.0 or y < 0.0 or z < 0.0:
                    continue
                ih = int(x)
                ik = int(y)
                il = int(z)
                if ih >= nh or ik >= nk or il >= nl:
                    continue
                if allowed is not None:
                    h = m00 * q0 + m01 * q1 + m02 * q2
                    k = m10 * q0 + m11 * q1 + m12 * q2
                    l = m20 * q0 + m21 * q1 + m22 * q2  # noqa: E741
                    nh_ = math.floor(h + 0.5)
                    nk_ = math.floor(k + 0.5)
                    nl_ = math.floor(l + 0.5)
                    d2 = (h - nh_) ** 2 + (k - nk_) ** 2 + (l - nl_) ** 2
                    if d2 <= hkl_r2:
                        a = int(nh_) - allowed_off[0]
                        b = int(nk_) - allowed_off[1]
                        c = int(nl_) - allowed_off[2]
                        if (0 <= a < allowed.shape[0] and 0 <= b < allowed.shape[1]
                                and 0 <= c < allowed.shape[2] and allowed[a, b, c] != 0):
                            continue
                brick = ((il >> bits) * nbk + (ik >> bits)) * nbh + (ih >> bits)
                idx = ((brick << bits3) + ((il & low) << bits2) + ((ik & low) << bits)
                       + (ih & low))
                pairs[2 * idx] += v * corr[p] * s
                pairs[2 * idx + 1] += w


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


class Transformer:
    """Accumulates frames of one scan entry onto a grid (one job's state)."""

    def __init__(self, grid: Grid, table: PixelTable, trusted_max: float, *,
                 crystal=None, hkl_radius: float = 0.0):
        self.acc = BrickedGrid(grid)
        self.table = table
        self.trusted_max = float(trusted_max)
        self.hkl_r2 = float(hkl_radius) ** 2
        if self.hkl_r2 > 0:
            self.allowed, self.allowed_off = allowed_table(crystal, grid)
        else:
            self.allowed, self.allowed_off = None, np.zeros(3, np.int64)

    def add(self, frames: np.ndarray, M: np.ndarray, scale: np.ndarray,
            bragg: np.ndarray | None = None) -> None:
        """Add frames (nf, rows, cols) with their matrices M (nf, nsub, 3, 3), per-frame
        scale and optional Bragg mask (nf, rows * cols) uint8."""
        nf = frames.shape[0]
        flat = frames.reshape(nf, -1)
        # the trusted maximum in the frames' own number type: no conversion per pixel
        trusted = (np.int64(min(self.trusted_max, 2 ** 62)) if np.issubdtype(flat.dtype, np.integer)
                   else np.float64(self.trusted_max))
        _accumulate(flat, self.table.index, self.table.q, self.table.corr, M,
                    np.asarray(scale, np.float64), trusted, bragg, self.allowed,
                    self.allowed_off, self.hkl_r2, self.acc.origin, self.acc.inv_step,
                    self.acc.dims, self.acc.nbricks, self.acc.pairs)

    @property
    def pixel_frames(self) -> int:
        """Pixel-frames added so far (the summed weight: 1 per pixel-frame)."""
        return int(round(float(np.sum(self.acc.weight, dtype=np.float64))))


def transform_frames(stack, scan: ScanGeometry, UB, transformer: Transformer, first: int,
                     stop: int, subdivide: int, scale, chunk_frames: int = 16, mask=None,
                     progress=None) -> float:
    """Read frames [first, stop) of a FrameStack in chunks (a second thread reads and
    decompresses the next chunk while the kernel adds this one) and add them; with mask
    (masking.ScanMask) its Bragg regions are left out.  scale: per-frame multipliers for
    frames first..stop.  Returns the seconds spent in the kernel (and mask painting)."""
    import time
    from concurrent.futures import ThreadPoolExecutor

    chunk = max(1, min(int(chunk_frames), stop - first))
    npix = int(np.prod(stack.frame_shape))
    bufs = [np.empty((chunk,) + tuple(stack.frame_shape), stack.dtype) for _ in range(2)]
    bragg = np.zeros((chunk, npix), np.uint8) if mask is not None else None
    starts = list(range(first, stop, chunk))

    def read(i):
        a = starts[i]
        b = min(a + chunk, stop)
        return a, stack.read(a, b, out=bufs[i % 2][:b - a])

    t_kernel = 0.0
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(read, 0)
        for i in range(len(starts)):
            a, frames = pending.result()
            if i + 1 < len(starts):
                pending = pool.submit(read, i + 1)
            b = a + len(frames)
            M = frame_matrices(scan, UB, a, b, subdivide)
            t = time.perf_counter()
            if mask is not None:
                bragg[:b - a] = 0
                mask.paint(a, b, bragg[:b - a])
            transformer.add(frames, M, scale[a - first:b - first],
                            bragg[:b - a] if mask is not None else None)
            t_kernel += time.perf_counter() - t
            if progress is not None:
                progress(b - first)
    return t_kernel


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
