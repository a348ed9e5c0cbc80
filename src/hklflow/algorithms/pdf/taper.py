"""NXRefine's spherical Tukey taper in |Q| (flat to q_max/2, zero from q_max) and the statistics
of a volume under it (its tapered mean, the unmeasured fraction within a sphere), in one pass
over the volume."""
from __future__ import annotations

import math

import numpy as np

from .kernels import _taper_statistics, _taper_volume
from .q_grid import octant_boxes, octant_start, q_metric, slab_by_slab


def check_q_max(q_max):
    if not (q_max > 0 and math.isfinite(q_max)):
        raise ValueError(f"q_max must be a positive number (1/Angstrom), got {q_max}")


def taper_bounds(q_max):
    return 0.25 * q_max * q_max * (1.0 - 1e-9), q_max * q_max * (1.0 + 1e-9)


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

