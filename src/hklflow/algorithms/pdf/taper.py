"""NXRefine's spherical Tukey taper in |Q| (flat to q_max/2, zero from q_max) and the statistics
of a volume under it (its tapered mean, the unmeasured fraction within a sphere), in one pass
over the volume."""
from __future__ import annotations

import math

import numba
import numpy as np

from .q_grid import octant_boxes, octant_start, q2_row, q_metric, slab_by_slab


def check_q_max(q_max):
    if not (q_max > 0 and math.isfinite(q_max)):
        raise ValueError(f"q_max must be a positive number (1/Angstrom), got {q_max}")


@numba.njit(inline="always")
def taper_of(q2, lo, hi, q_max):
    """The Tukey taper (float64) at |Q|^2 = q2: R = 2|Q|/q_max.  Well inside R = 1 (q2 < lo)
    or beyond R = 2 (q2 > hi) it is known without the square root."""
    if q2 < lo:
        return 1.0
    if q2 > hi:
        return 0.0
    r = 2.0 * math.sqrt(max(q2, 0.0)) / q_max
    if r <= 1.0:
        return 1.0
    if r < 2.0:
        return 0.5 * (1.0 - math.cos(math.pi * r))
    return 0.0


def taper_bounds(q_max):
    return 0.25 * q_max * q_max * (1.0 - 1e-9), q_max * q_max * (1.0 + 1e-9)


@numba.njit(cache=True, nogil=True)
def _taper_volume(g, h, k, ll, q_max, lo, hi, out):
    q2 = np.empty(h.size)
    for a in range(ll.size):
        for b in range(k.size):
            q2_row(g, h, k[b], ll[a], q2)
            for c in range(h.size):
                out[a, b, c] = np.float32(taper_of(q2[c], lo, hi, q_max))


# below R = 2 - TAPER_SURE the float32 taper is certainly above 0 (0.5 (1 - cos pi R) >=
# 2.4e-6 there): its cosine is computed only in the last sliver before R = 2
TAPER_SURE = 1e-3


@numba.njit(inline="always")
def _taper_above_zero(q2, lo, hi, q_max):
    """np.float32(taper_of(q2, ...)) > 0, without the cosine but next to R = 2 (the cosine
    was most of _taper_statistics' time; bench/full_rotation.py measures the PDF steps)."""
    if q2 < lo:
        return True
    if q2 > hi:
        return False
    r = 2.0 * math.sqrt(max(q2, 0.0)) / q_max
    if r < 2.0 - TAPER_SURE:
        return True
    return np.float32(taper_of(q2, lo, hi, q_max)) > 0


@numba.njit(cache=True, nogil=True)
def _taper_statistics(g, h, k, ll, q_max, lo, hi, q2_sphere, values, sums, counts):
    """In one pass over |Q|, added to what sums and counts hold (so that a volume may come
    slab by slab, in the order of one pass, with the same float64 sum): sums[0] the sum of
    the finite voxels where the float32 taper is above 0, counts[0] their number, counts[1]
    the voxels with |Q|^2 <= q2_sphere and counts[2] those of them not measured (not
    finite).  (One pass over the volume, not two: each pass costs as much.)"""
    q2 = np.empty(h.size)
    total = sums[0]
    count = counts[0]
    inside = counts[1]
    unmeasured = counts[2]
    for a in range(ll.size):
        for b in range(k.size):
            q2_row(g, h, k[b], ll[a], q2)
            for c in range(h.size):
                v = values[a, b, c]
                finite = math.isfinite(v)
                if q2[c] <= q2_sphere:
                    inside += 1
                    unmeasured += not finite
                if finite and _taper_above_zero(q2[c], lo, hi, q_max):
                    total += v
                    count += 1
    sums[0] = total
    counts[0] = count
    counts[1] = inside
    counts[2] = unmeasured


def tukey_taper(grid, cell, q_max: float) -> np.ndarray:
    """NXRefine's spherical Tukey taper, float32 [l, k, h]: with R = 2|Q|/q_max, 1 for R <= 1,
    0.5 (1 - cos pi R) for 1 < R < 2, 0 for R >= 2 (NXRefine: taper.min(), a tiny number).
    |Q| with the cell's metric (2 pi convention)."""
    check_q_max(q_max)
    out = np.empty(grid.shape, dtype=np.float32)
    _taper_volume(q_metric(cell), grid.h.values, grid.k.values, grid.l.values, float(q_max),
                  *taper_bounds(q_max), out)
    return out


def taper_statistics(values, grid, cell, q_max: float,
                     q_sphere: float = -1.0, even: bool = False) -> tuple[float, float]:
    """(tapered_mean of values, the fraction of the voxels with |Q| <= q_sphere that are
    not measured: NaN, or 0 for q_sphere < 0) in one pass; values float32 [l, k, h] on grid,
    C-contiguous, or a function (l0, l1) -> its planes (slab_by_slab: the same figures).
    even: values are even along each axis: on a grid symmetric about 0 they are counted
    in their octant, each voxel for itself and its mirror images (octant_boxes), from half
    the planes: the counts the same where the grid's values are exact mirror images (else
    a voxel at the taper's or the sphere's edge and its image may fall apart), the mean
    to rounding."""
    check_q_max(q_max)
    q2_sphere = q_sphere * q_sphere if q_sphere >= 0 else -1.0
    g, (lo, hi) = q_metric(cell), taper_bounds(q_max)
    sums, counts = np.zeros(1), np.zeros(3, np.int64)
    octant = even and octant_boxes(grid) is not None
    if octant and not callable(values):  # slab by slab as from a file: the same sum
        array = np.asarray(values)
        if array.shape != grid.shape:
            raise ValueError(f"a volume of the grid's shape {grid.shape} was expected, got "
                             f"{array.shape}")
        values = lambda l0, l1: array[l0:l1]  # noqa: E731
    for l0, l1, slab in slab_by_slab(values, grid, start=octant_start(grid) if octant else 0):
        if slab.dtype != np.float32 or not slab.flags.c_contiguous:
            raise ValueError(f"the taper's statistics need C-contiguous float32 values, got "
                             f"{slab.dtype}")
        ll = grid.l.values[l0:l1]
        if not octant:
            _taper_statistics(g, grid.h.values, grid.k.values, ll, float(q_max), lo, hi,
                              float(q2_sphere), slab, sums, counts)
            continue
        for bl, bk, bh, times in octant_boxes(grid, l0, l1):
            part_sums, part_counts = np.zeros(1), np.zeros(3, np.int64)
            _taper_statistics(g, grid.h.values[bh], grid.k.values[bk], ll[bl], float(q_max),
                              lo, hi, float(q2_sphere), slab[bl, bk, bh], part_sums,
                              part_counts)
            sums += times * part_sums
            counts += times * part_counts
    count, inside, unmeasured = (int(c) for c in counts)
    return (float(sums[0] / count) if count else 0.0), unmeasured / max(inside, 1)


def tapered_mean(values: np.ndarray, grid, cell, q_max: float) -> float:
    """Mean (float64) of the finite voxels of values (float32 [l, k, h] on grid) where
    tukey_taper is above 0; 0 when there is none: what pdf_fft subtracts first with
    subtract_mean."""
    return taper_statistics(values, grid, cell, q_max)[0]

