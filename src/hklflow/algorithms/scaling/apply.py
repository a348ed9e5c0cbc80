"""The fitted scales applied to an entry's volume as the merge reads it: every measured
voxel's signal becomes (S - o W) / m and its variance V / m^2 (m, o: the scale model at the
voxel's crossings and |Q|), its weight stays; the half set A alike on its binned grid."""
from __future__ import annotations

import numpy as np

from .crossings import crossings
from ...model.scales import ScaleModel


class EntryScaler:
    """The scales of one entry: model, entry name, its ScanGeometry (with UB) and pixel mask."""

    def __init__(self, model: ScaleModel, name: str, geometry, pixel_mask):
        if name not in model.entries:
            raise KeyError(name)
        self.model, self.name, self.geometry, self.pixel_mask = model, name, geometry, pixel_mask

    def factors(self, hkl) -> tuple[np.ndarray, np.ndarray]:
        """(m, o) at voxel centres hkl (n, 3)."""
        c = crossings(self.geometry, self.pixel_mask, hkl)
        q = np.linalg.norm(np.asarray(hkl) @ np.asarray(self.geometry.UB).T, axis=1)
        o = np.where(c.measured, self.model.offset(self.name, q), 0.0)
        return self.model.multiplier(self.name, c), o

    def scale(self, grid, l0: int, arrays) -> None:
        """arrays (signal, weight[, variance]) of planes l0.. of `grid`, scaled in place."""
        signal, weight = arrays[0], arrays[1]
        if not all(a.flags.c_contiguous for a in arrays if a is not None):
            raise ValueError("scaled in place: the arrays must be C-contiguous")
        flat = np.flatnonzero(weight.reshape(-1) > 0)
        if not len(flat):
            return
        nk, nh = signal.shape[1:]
        il, rest = np.divmod(flat, nk * nh)
        ik, ih = np.divmod(rest, nh)
        hkl = np.stack([grid.h.start + ih * grid.h.step, grid.k.start + ik * grid.k.step,
                        grid.l.start + (il + l0) * grid.l.step], axis=1)
        m, o = self.factors(hkl)
        s = signal.reshape(-1)
        w = weight.reshape(-1)
        s[flat] = (s[flat] - o * w[flat]) / m
        if len(arrays) > 2 and arrays[2] is not None:
            v = arrays[2].reshape(-1)
            v[flat] = v[flat] / m ** 2
