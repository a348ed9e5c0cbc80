"""The compiled loops of a correction per pixel and frame (a plate's absorption: model.
corrections.absorption): the factor of frames [a, b) of every usable pixel, the mean of its
values at the two ends, each interpolated linearly in a table of the factor over the cosine
between the pixel's direction and the plate's normal (the model's closed form evaluated at
the table's nodes: the physics stays in one place, this only looks it up), divided into the
pixel's correction; and the largest relative change of the factor between the two ends."""
from __future__ import annotations

import numba


@numba.njit(inline="always")
def _lookup(table, c, lo, inv_step):
    x = (c - lo) * inv_step
    if not x >= 0.0:  # (NaN too)
        return table[0]
    i = int(x)
    if i >= table.shape[0] - 1:
        return table[table.shape[0] - 1]
    f = x - i
    return table[i] * (1.0 - f) + table[i + 1] * f


@numba.njit(nogil=True, cache=True, error_model="numpy")
def part_corrections(dx, dy, dz, index, corr_all, n_a, table_a, n_b, table_b, lo, inv_step,
                     min_factor, out_corr):
    """out_corr[p] = corr_all[p] / mean(factor at a, factor at b) for the usable pixels
    index (unit directions dx, dy, dz of each, in index order), 0 where either end's factor
    is below min_factor.  Returns (largest |fa - fb| / max(fa, fb) over the pixels kept,
    pixels left out)."""
    worst = 0.0
    gone = 0
    for i in range(index.shape[0]):
        p = index[i]
        ca = dx[i] * n_a[0] + dy[i] * n_a[1] + dz[i] * n_a[2]
        cb = dx[i] * n_b[0] + dy[i] * n_b[1] + dz[i] * n_b[2]
        fa = _lookup(table_a, ca, lo, inv_step)
        fb = _lookup(table_b, cb, lo, inv_step)
        if fa >= min_factor and fb >= min_factor:
            out_corr[p] = corr_all[p] / (0.5 * (fa + fb))
            change = abs(fa - fb) / max(fa, fb)
            if change > worst:
                worst = change
        else:
            out_corr[p] = 0.0
            gone += 1
    return worst, gone
