"""The transform's mapping and binning in plain numpy: the tests' reference for the compiled
kernels (and bench/transform.py's baseline)."""
from __future__ import annotations

import numpy as np

from hklflow.algorithms.transform import PixelTable, bragg_block_summary
from hklflow.model.grid import Grid


def numpy_transform(frames, table: PixelTable, M, scale, trusted_max, grid: Grid,
                    signal=None, weight=None, bragg=None, variance=None, gain=1.0):
    """The same mapping and binning in plain numpy, into [l, k, h] float64 arrays (created
    if not given).  No punch (hkl_radius).  variance (a float64 [l, k, h] array): also
    sums each pixel's variance, gain x value x (its multiplier)^2 (Poisson statistics of
    value / gain photons)."""
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
        voxels = []
        for j in range(nsub):
            A = M[f, j] * inv_step[:, None]  # voxel coordinate + 1/2 = A q + offset
            idx = np.floor(q @ A.T + offset).astype(np.int64)
            good = ok & np.all((idx >= 0) & (idx < dims), axis=1)
            flat = (idx[good, 2] * dims[1] + idx[good, 1]) * dims[0] + idx[good, 0]
            np.add.at(sflat, flat, v[good] * table.corr[good] * scale[f] / nsub)
            np.add.at(wflat, flat, 1.0 / nsub)
            voxels.append(np.where(good, (idx[:, 2] * dims[1] + idx[:, 1]) * dims[0]
                                   + idx[:, 0], -1))
        if variance is not None:
            # a pixel's sub-steps are one observation: m of them in a voxel add
            # (m a / n)^2 g v there; sub-step j adds c_j (a / n)^2 g v, c_j = the pixel's
            # sub-steps in j's voxel (summed over the voxel's m: m^2)
            voxels = np.array(voxels)
            a = table.corr * scale[f] / nsub
            for j in range(nsub):
                good = voxels[j] >= 0
                c = (voxels == voxels[j]).sum(axis=0)
                np.add.at(variance.reshape(-1), voxels[j][good],
                          (gain * v * a * a * c)[good])
    return signal, weight


class PaintedMask:
    """masking.ScanMask's paint, of a given Bragg mask (frames, pixels) of the whole scan."""

    hkl_radius = 0.1

    def __init__(self, bragg: np.ndarray):
        self.bragg = bragg

    def paint(self, a, b, out, value=1, blocks=None, block=0):
        out[:] = self.bragg[a:b] if value else 0
        if blocks is not None:
            blocks[:] = bragg_block_summary(self.bragg[a:b])
