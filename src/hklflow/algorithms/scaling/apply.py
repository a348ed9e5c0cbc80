"""The fitted scales applied to an entry's volume as the merge reads it: every measured
voxel's signal becomes (S - o W) / m and its variance V / m^2 (m, o: the scale model at the
voxel's crossings and |Q|), its weight stays; the half set A alike on its binned grid."""
from __future__ import annotations

import numpy as np

from ...model.scales import ScaleModel
from .crossings import crossings
from .kernels import absorption_exponents, harmonic_constants

# Voxels per evaluation: the crossings' and the scales' temporaries of a block stay in the
# cache; a million at once took 3-4x the time per voxel (bench/README.md, scaling.py).
BLOCK_VOXELS = 8192


class EntryScaler:
    """The scales of one entry: model, entry name, its ScanGeometry (with UB) and pixel mask;
    compiled: the crossings and absorption from the compiled kernels (else the numpy forms,
    their reference)."""

    def __init__(self, model: ScaleModel, name: str, geometry, pixel_mask, compiled=True):
        if name not in model.entries:
            raise KeyError(name)
        self.model, self.name, self.geometry, self.pixel_mask = model, name, geometry, pixel_mask
        self.compiled = compiled
        self._constants = harmonic_constants(model.lmax)

    def absorption(self, c) -> np.ndarray | None:
        """A at each crossing (2, n) from the compiled kernel; None: the model's own form."""
        p = self.model.entries[self.name].absorption
        if not self.compiled or not len(p):
            return None
        out = np.empty(c.share.size)
        absorption_exponents(c.incident.reshape(-1, 3), c.scattered.reshape(-1, 3),
                             c.share.reshape(-1), np.ascontiguousarray(p, dtype=float),
                             self.model.lmax, *self._constants, out)
        return np.exp(out).reshape(c.share.shape)

    def factors(self, hkl) -> tuple[np.ndarray, np.ndarray]:
        """(m, o) at voxel centres hkl (n, 3), BLOCK_VOXELS at a time."""
        hkl = np.asarray(hkl, dtype=float).reshape(-1, 3)
        m, o = np.empty(len(hkl)), np.zeros(len(hkl))
        UB = np.asarray(self.geometry.UB, dtype=float)
        offset = len(self.model.entries[self.name].offset) > 0
        for s in range(0, len(hkl), BLOCK_VOXELS):
            block = hkl[s:s + BLOCK_VOXELS]
            c = crossings(self.geometry, self.pixel_mask, block, self.compiled)
            m[s:s + len(block)] = self.model.multiplier(self.name, c, self.absorption(c))
            if offset:
                q = np.linalg.norm(block @ UB.T, axis=1)
                o[s:s + len(block)] = np.where(c.measured, self.model.offset(self.name, q), 0.0)
        return m, o

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
