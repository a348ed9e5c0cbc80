"""The scale model of a temperature's entries: what an entry's voxel records of the
intensity I of its orbit of Laue-equivalent voxels,

    y = m I + o_e(|Q|),   m = sum over the voxel's crossings c of share_c b_e(phi_c) A_e(c) D(x_c)

* b_e(phi): a smooth scale per entry, linear between knots every `scale_interval` degrees
  of its rotation (the beam's decay and what a monitor misses);
* A_e(c) = exp(sum_lm p_lm (Y_lm(-incident_c) + Y_lm(scattered_c)) / 2): an absorption
  surface per entry, real spherical harmonics of degree 1..lmax of the directions in the
  sample frame along which the beam's path in (back along the incident beam) and out (the
  scattered beam) leave the crystal; DIALS's physical model sums these harmonics, here they
  are a logarithm: the transmissions of the paths in and out multiply;
* D(x): a detector response shared by every entry, bilinear on a coarse grid of the
  detector's pixels (mdx2's d(x, y));
* o_e(|Q|): an additive offset per entry, linear between knots in |Q| (mdx2's c).

Each term is linear in its own parameters with the others held: the fit
(hklflow.algorithms.scaling.fit) solves
one block at a time.  Every voxel's scale comes from its crossings (hklflow.algorithms.scaling.crossings), so a
model fitted on a sample of voxels applies to every voxel of the entry.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np


def hat_weights(x, knots) -> tuple[np.ndarray, np.ndarray]:
    """Linear interpolation between knots: for each x the index of its lower knot and the
    weight of the upper one (x clipped into the knots' span)."""
    knots = np.asarray(knots, dtype=float)
    if len(knots) == 1:
        return np.zeros(np.shape(x), np.int64), np.zeros(np.shape(x))
    x = np.clip(np.asarray(x, dtype=float), knots[0], knots[-1])
    i = np.clip(np.searchsorted(knots, x, side="right") - 1, 0, len(knots) - 2)
    t = (x - knots[i]) / (knots[i + 1] - knots[i])
    return i, t


def real_harmonics(vectors, lmax: int) -> np.ndarray:
    """Real spherical harmonics of degree 1..lmax of unit vectors (..., 3) -> (..., n),
    n = (lmax + 1)^2 - 1, orthonormal over the sphere, in the order (l, m) = (1, -1), (1, 0),
    (1, 1), (2, -2), ...: sqrt(2) N P_l^|m|(z) sin^|m|(theta) times cos(m phi) (m > 0) or
    sin(|m| phi) (m < 0), N P_l^0 for m = 0 (N = sqrt((2l + 1)/(4 pi) (l - m)!/(l + m)!);
    P with the Condon-Shortley phase).  From the Cartesian components by recurrences, with
    no angle taken: (x + i y)^m = sin^m(theta) e^(i m phi), and Q_l^m = P_l^m / sin^m(theta)
    by Q_m^m = (-1)^m (2m - 1)!!, Q_(m+1)^m = (2m + 1) z Q_m^m,
    (l - m) Q_l^m = (2l - 1) z Q_(l-1)^m - (l + m - 1) Q_(l-2)^m."""
    v = np.asarray(vectors, dtype=float)
    x, y, z = v[..., 0], v[..., 1], v[..., 2]
    out = np.empty(((lmax + 1) ** 2 - 1,) + v.shape[:-1])  # (one function per row: contiguous)
    if lmax < 1:
        return np.moveaxis(out, 0, -1)
    # cos and sin parts of (x + i y)^m, m = 0..lmax
    re, im = [np.ones_like(x)], [np.zeros_like(x)]
    for _ in range(lmax):
        re.append(re[-1] * x - im[-1] * y)
        im.append(re[-2] * y + im[-1] * x)
    for m in range(lmax + 1):
        q_mm = (-1.0) ** m * math.prod(range(1, 2 * m, 2))
        q = {m: np.full_like(z, q_mm)}
        if m + 1 <= lmax:
            q[m + 1] = (2 * m + 1) * z * q_mm
        for degree in range(m + 2, lmax + 1):
            q[degree] = ((2 * degree - 1) * z * q[degree - 1]
                         - (degree + m - 1) * q[degree - 2]) / (degree - m)
        for degree in range(max(m, 1), lmax + 1):
            norm = math.sqrt((2 * degree + 1) / (4 * math.pi)
                             * math.factorial(degree - m) / math.factorial(degree + m))
            at = degree * degree - 1 + degree  # the column of (degree, 0)
            if m == 0:
                out[at] = norm * q[degree]
            else:
                out[at + m] = math.sqrt(2.0) * norm * q[degree] * re[m]
                out[at - m] = math.sqrt(2.0) * norm * q[degree] * im[m]
    return np.moveaxis(out, 0, -1)


@dataclass
class EntryScale:
    """One entry's terms: knots (deg) and values of b, absorption coefficients, offset
    knots (|Q|, 1/A) and values."""

    name: str
    knots: np.ndarray
    scale: np.ndarray
    absorption: np.ndarray = field(default_factory=lambda: np.zeros(0))
    offset_knots: np.ndarray = field(default_factory=lambda: np.zeros(0))
    offset: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def b(self, phi) -> np.ndarray:
        i, t = hat_weights(phi, self.knots)
        if len(self.knots) == 1:
            return np.full(np.shape(phi), float(self.scale[0]))
        return (1 - t) * self.scale[i] + t * self.scale[i + 1]

    def o(self, q) -> np.ndarray:
        if not len(self.offset):
            return np.zeros(np.shape(q))
        i, t = hat_weights(q, self.offset_knots)
        if len(self.offset_knots) == 1:
            return np.full(np.shape(q), float(self.offset[0]))
        return (1 - t) * self.offset[i] + t * self.offset[i + 1]

    def as_dict(self) -> dict:
        return {"knots_deg": self.knots.tolist(), "scale": self.scale.tolist(),
                "absorption": self.absorption.tolist(),
                "offset_knots_per_A": self.offset_knots.tolist(), "offset": self.offset.tolist()}

    @classmethod
    def from_dict(cls, name: str, d: dict) -> "EntryScale":
        return cls(name, np.asarray(d["knots_deg"], float), np.asarray(d["scale"], float),
                   np.asarray(d["absorption"], float), np.asarray(d["offset_knots_per_A"], float),
                   np.asarray(d["offset"], float))


@dataclass
class ScaleModel:
    """Every entry's terms, the shared detector response and the settings they were made
    with (lmax: the absorption's degree; detector: the response's grid values over
    (row, col) of a detector of `detector_shape`).  Its methods take the crossings of voxels
    (hklflow.algorithms.scaling.crossings.Crossings: phi, share, rows, cols, incident,
    scattered, each (2, n)[, 3])."""

    entries: dict  # entry name -> EntryScale
    lmax: int = 0
    detector: np.ndarray = field(default_factory=lambda: np.ones((1, 1)))
    detector_shape: tuple = (1, 1)

    def harmonics(self, c) -> np.ndarray:
        """(2, n, p): the absorption's basis at each crossing."""
        if not self.lmax:
            return np.zeros(c.incident.shape[:2] + (0,))
        return 0.5 * (real_harmonics(-c.incident, self.lmax)
                      + real_harmonics(c.scattered, self.lmax))

    def detector_basis(self, c) -> tuple:
        """The bilinear basis of the response at each crossing: indices and weights of the
        four grid values, each (2, n, 4)."""
        nr, nc = self.detector.shape
        ny, nx = self.detector_shape
        gr = np.linspace(0, ny, nr) if nr > 1 else np.zeros(1)
        gc = np.linspace(0, nx, nc) if nc > 1 else np.zeros(1)
        ir, tr = hat_weights(c.rows, gr)
        ic, tc = hat_weights(c.cols, gc)
        r2 = np.minimum(ir + 1, nr - 1)
        c2 = np.minimum(ic + 1, nc - 1)
        idx = np.stack([ir * nc + ic, ir * nc + c2, r2 * nc + ic, r2 * nc + c2], axis=-1)
        w = np.stack([(1 - tr) * (1 - tc), (1 - tr) * tc, tr * (1 - tc), tr * tc], axis=-1)
        return idx, w

    def response(self, c) -> np.ndarray:
        if self.detector.size == 1:
            return np.full(c.rows.shape, float(self.detector.flat[0]))
        idx, w = self.detector_basis(c)
        return (self.detector.ravel()[idx] * w).sum(axis=-1)

    def absorption_of(self, entry: str, c, basis=None) -> np.ndarray:
        p = self.entries[entry].absorption
        if not len(p):
            return np.ones(c.rows.shape)
        basis = self.harmonics(c) if basis is None else basis
        return np.exp(basis @ p)

    def multiplier(self, entry: str, c, absorption=None) -> np.ndarray:
        """(n,) m of each voxel (1 where no crossing is measured: left as it is); absorption:
        A at each crossing (2, n) when computed already (the compiled form)."""
        if absorption is None:
            absorption = self.absorption_of(entry, c)
        per = c.share * self.entries[entry].b(c.phi) * absorption * self.response(c)
        m = per.sum(axis=0)
        return np.where(c.measured, m, 1.0)

    def offset(self, entry: str, q) -> np.ndarray:
        return self.entries[entry].o(q)

    @property
    def parameters(self) -> int:
        """How many parameters the fit adjusts (every term of every entry, the response)."""
        n = sum(len(e.scale) + len(e.absorption) + len(e.offset) for e in self.entries.values())
        return n + (self.detector.size if self.detector.size > 1 else 0)

    def as_dict(self) -> dict:
        return {"absorption_lmax": self.lmax, "detector_response": self.detector.tolist(),
                "detector_shape": list(self.detector_shape),
                "entries": {k: e.as_dict() for k, e in self.entries.items()}}

    @classmethod
    def from_dict(cls, d: dict) -> "ScaleModel":
        return cls({k: EntryScale.from_dict(k, v) for k, v in d["entries"].items()},
                   int(d["absorption_lmax"]), np.asarray(d["detector_response"], float),
                   tuple(d["detector_shape"]))


# The scales matter when both hold:
# * they are real: chi^2 of equivalents falls by more than fitting the model's p parameters
#   to noise alone lowers it (a chi-squared of p degrees of freedom: p on average, standard
#   deviation sqrt(2 p)) by SIGNIFICANCE of its standard deviations;
# * they are large enough to see: they move the observations by more than MAGNITUDE (RMS of
#   m - 1), below the sigma of a voxel of diffuse scattering, and above what a fit to noise
#   alone moves them by (bench/README.md, scaling.py: up to 0.82% in its free variant,
#   0.45% on the demo).
SIGNIFICANCE = 3.0
MAGNITUDE = 0.01


def scales_matter(before: float | None, after: float | None, nu: float | None,
                  parameters: int, rms_change: float) -> tuple[bool, str]:
    """Whether the scales change the equivalents beyond chance and visibly, and why:
    chi^2/nu of equivalents went from `before` to `after` (nu degrees of freedom) with
    `parameters` fitted, and the scales move the observations by rms_change (RMS of m - 1).
    The fall of chi^2 is in units of `before` (the scatter the sigmas do not explain)."""
    if before is None or after is None or not nu:
        return False, "too few equivalents to judge them"
    fall = (before - after) * nu / before
    chance = parameters + SIGNIFICANCE * math.sqrt(2.0 * parameters)
    real, large = fall > chance, rms_change > MAGNITUDE
    why = (f"chi^2/nu of equivalents {before:.4f} -> {after:.4f}: chi^2 down by {fall:.0f}, "
           f"{'beyond' if real else 'within'} the {chance:.0f} that fitting {parameters} "
           f"parameters to noise could explain; the observations moved by "
           f"{100 * rms_change:.2f}% RMS ({'more' if large else 'less'} than "
           f"{100 * MAGNITUDE:g}%)")
    return real and large, why
