"""The standard deviation of a PDF (the total PDF or the 3D-DeltaPDF), voxel by voxel, from
the volume's own per-voxel variance: carried in closed form through the punch and fill, the
taper, the subtracted mean, the symmetrisation's correlations and the FFT.

The noise e_j of a symmetrised volume is shared by equivalent voxels: Cov(e_j, e_j') =
u_j sum_M [j' = M j] over the Laue group's index maps M, with u = sigma^2 / s (the voxel's
variance over its stabiliser count s).  The PDF's noise at frequency k is Re F(k) - mu T(k),
F the transform of a e (a: the taper on the voxels whose noise counts), mu the noise of the
subtracted mean (averaged over the n_b finite voxels where the taper is above 0) and T the
transform of the taper over the finite voxels.  Its variance is

    (1/N) 1/2 sum_M [W((I - M) k) + W((I + M) k)] - 2 T C / n_b + T^2 V / n_b^2

with W = FFT(a^2 u) / N, C = g FFT(a u) / N, V = g sum u (over the voxels the mean averages
whose noise counts), T = FFT(t finite) / N, g the number of operators and N the voxels of
the transform (the PDF's 1 / N).  A Laue group holds -1, so both halves of the sum are
equal; a volume that was not symmetrised has M = 1 alone (and the half with I + M, W(2 k),
is not the same as the other).

The 3D-DeltaPDF's filled voxels count as noise-free: their values are interpolated from the
hole's rim, whose noise is counted where it was measured (bench/README.md, "sigma of the
PDFs", gives the share this leaves out, measured by Monte Carlo through the steps' own code).
"""
from __future__ import annotations

import numpy as np

from .fft import CosinePDF, _ComputedPDF, fft_crop, pdf_spectrum
from .kernels import _sigma_values, _unfold_octant
from .taper import tukey_taper


class IncompatibleGrid(ValueError):
    """The transform's axes that an operator mixes have different lengths: the closed form
    needs the operators to map the FFT's frequencies onto each other."""


class SigmaPDF(_ComputedPDF):
    """sigma of a PDF [z, y, x] (float32), computed where it is read like the PDF itself
    (hklflow.algorithms.pdf.fft's _ComputedPDF): W is held whole, T and C as computed PDFs read box by
    box; for a volume even along each axis (W, T and C octants of cosine transforms) sigma
    is even too, and its octant (an eighth of the work) is computed once, when first read."""

    def __init__(self, shape, w, w_octant: bool, w_scale: float, maps, mean_terms):
        super().__init__(shape)
        self.w, self.w_octant, self.w_scale = w, w_octant, float(w_scale)
        self.maps = np.ascontiguousarray(maps, np.int64)
        self.mean_terms = mean_terms  # (T, C, n_b, V) or None
        self._octant = None

    def _values(self, k0, out, t, c):
        nb = v = 1.0
        if self.mean_terms is not None:
            nb, v = self.mean_terms[2:]
        nz, ny, nx = self.shape
        _sigma_values(self.w, self.w_octant, self.w_scale, self.maps,
                      np.array([nx, ny, nz], np.int64), 1.0 / self.size,
                      np.array(k0, np.int64), t, c, float(nb), float(v), out)

    def _compute(self, z0, y0, x0, out):
        nz, ny, nx = self.shape
        if self.w_octant:
            if self._octant is None:
                self._octant = np.empty(self.w.shape, np.float32)
                t = c = None
                if self.mean_terms is not None:
                    T, C = self.mean_terms[:2]
                    t, c = T.octant * T.scale, C.octant * C.scale
                self._values((0, 0, 0), self._octant, t, c)
            _unfold_octant(self._octant, np.float32(1.0), z0 - nz // 2, y0 - ny // 2,
                           x0 - nx // 2, out)
            return
        t = c = None
        if self.mean_terms is not None:
            T, C = self.mean_terms[:2]
            box = (slice(z0, z0 + out.shape[0]), slice(y0, y0 + out.shape[1]),
                   slice(x0, x0 + out.shape[2]))
            t, c = T[box], C[box]
        self._values((z0 - nz // 2, y0 - ny // 2, x0 - nx // 2), out, t, c)


def check_maps(grid, maps) -> None:
    """IncompatibleGrid when an operator mixes axes whose cropped lengths differ."""
    lengths = [s.stop - s.start for s in fft_crop(grid)]
    for m in np.asarray(maps):
        for r in range(3):
            for j in range(3):
                if r != j and m[r, j] != 0 and lengths[r] != lengths[j]:
                    raise IncompatibleGrid(
                        f"the PDF's transform is {lengths[r]} voxels along {'hkl'[r]} and "
                        f"{lengths[j]} along {'hkl'[j]}, which a symmetry operator maps onto "
                        "each other")


def pdf_sigma(u: np.ndarray, known: np.ndarray, finite: np.ndarray, grid, cell, q_max: float,
              maps, subtract_mean: bool, even: bool = False, workers: int = 1) -> SigmaPDF:
    """sigma of the PDF of a volume (pdf_spectrum with the taper to q_max, minus the tapered
    mean when subtract_mean).  u: float32 [l, k, h], each voxel's variance over its stabiliser
    count; known: the voxels whose noise counts (measured, and not filled); finite: the
    voxels the transform sees (measured or filled); maps: the symmetrisation's index maps
    (hklflow.algorithms.merge.symmetry.index_maps' A: voxel i takes from i A, so equivalents are j A^T and
    the frequencies that share noise are (I -+ A) k; the identity alone for a volume that
    was not symmetrised); even: pdf_spectrum's (the transforms of its octant)."""
    maps = np.asarray(maps, np.int64).reshape(-1, 3, 3)
    check_maps(grid, maps)
    taper = tukey_taper(grid, cell, q_max)
    a_u = np.where(known, taper * u, np.float32(0)).astype(np.float32, copy=False)
    w, _ = pdf_spectrum(a_u * taper, grid, workers=workers, even=even)
    if isinstance(w, CosinePDF):
        w_array, w_octant, w_scale = w.octant, True, float(w.scale)
    else:
        w_array, w_octant, w_scale = np.asarray(w), False, 1.0
    del w
    mean_terms = None
    averaged = finite & (taper > 0) if subtract_mean else None
    if subtract_mean and averaged.any():
        g = len(maps)
        nb = int(np.count_nonzero(averaged))
        v = g * float(np.sum(u, where=averaged & known, dtype=np.float64))
        del averaged
        T, _ = pdf_spectrum(np.where(finite, taper, np.float32(0)), grid, workers=workers,
                            even=even)
        del taper
        a_u *= np.float32(g)
        C, _ = pdf_spectrum(a_u, grid, workers=workers, even=even)
        mean_terms = (T, C, nb, v)
    shape = tuple(s.stop - s.start for s in fft_crop(grid)[::-1])
    return SigmaPDF(shape, w_array, w_octant, w_scale, maps, mean_terms)
