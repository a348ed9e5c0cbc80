"""The sample's own absorption, from its shape (samples.NAME.shape): the transmission of
the beam into the crystal and of the scattered rays out of it, averaged over the crystal's
volume (the crystal fully bathed by a uniform beam).

* plate: a slab of thickness t whose faces are the lattice plane (h k l) (normal = the
  reciprocal vector hkl), laterally much larger than t (edges left out).  With c_in, c_out
  the cosines of the incident and scattered directions with the normal (oriented so that
  c_in > 0), x = mu t / c_in:
    leaving through the far face (c_out > 0), y = mu t / c_out:  A = exp(-y) g(x - y)
    leaving through the face it entered (c_out < 0), y = mu t / |c_out|:  A = g(x + y)
  with g(d) = (1 - exp(-d)) / d.  The plate turns with the crystal: a factor per pixel and
  frame: its value at the frame's centre.
* cylinder: a needle or capillary-held crystal of diameter D along the rotation axis; the
  same at every frame, a factor per pixel: the transmission averaged over the disk (polar
  Gauss-Legendre quadrature), tabulated over the angle between the rays' projections on the
  plane normal to the axis and the scattered ray's tilt out of it, and interpolated.

Rays whose transmission is below min_transmission (a plate seen edge-on) are left out, not
multiplied by a huge factor: factor 0 (the transform leaves such pixels out).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..geometry import BEAM_DIRECTION
from .attenuation import linear_attenuation

SHAPES = ("plate", "cylinder")
# nodes of the table of a plate's transmission over the cosine between ray and normal,
# in [-1, 1] (linear interpolation off by < 1e-6 where the transmission is above 0.01)
TABLE_POINTS = 8193


@dataclass(frozen=True)
class SampleShape:
    """samples.NAME.shape: kind plate (normal [h, k, l], thickness m) or cylinder
    (diameter m, along the rotation axis); mu (1/m) given, or from formula and density
    (g/cm^3) by xraydb at the beam's wavelength."""

    kind: str
    mu: float | None = None
    formula: str | None = None
    density: float | None = None
    normal: tuple | None = None
    thickness: float | None = None
    diameter: float | None = None

    @classmethod
    def of(cls, settings: dict | None) -> "SampleShape | None":
        if not settings:
            return None
        s = dict(settings)
        if s.get("normal") is not None:
            s["normal"] = tuple(float(v) for v in s["normal"])
        shape = cls(**s)
        if shape.kind not in SHAPES:
            raise ValueError(f"shape kind {shape.kind!r}: expected one of {SHAPES}")
        if shape.kind == "plate" and (shape.normal is None or shape.thickness is None):
            raise ValueError("a plate needs its normal [h, k, l] and its thickness (m)")
        if shape.kind == "cylinder" and shape.diameter is None:
            raise ValueError("a cylinder needs its diameter (m)")
        if (shape.mu is None) == (shape.formula is None):
            raise ValueError("give the shape's mu (1/m) or its formula and density, one of them")
        if shape.formula is not None and shape.density is None:
            raise ValueError(f"formula {shape.formula!r} needs its density (g/cm^3)")
        return shape

    def mu_at(self, wavelength: float) -> float:
        if self.mu is not None:
            return float(self.mu)
        return linear_attenuation(self.formula, float(wavelength), float(self.density))

    def as_dict(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(self).items()
                if v is not None}


def _g(d):
    """(1 - exp(-d)) / d, 1 at d = 0, 0 at d = inf."""
    d = np.asarray(d, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        out = -np.expm1(-d) / d
    return np.where(np.abs(d) < 1e-12, 1.0, np.where(np.isinf(d), 0.0, out))


def plate_transmission(c_in, c_out, mu_t):
    """The closed form above, for cosines c_in > 0 (arrays broadcast) and mu t."""
    c_in = np.asarray(c_in, dtype=np.float64)
    c_out = np.asarray(c_out, dtype=np.float64)
    with np.errstate(divide="ignore"):
        x = mu_t / c_in
        y = mu_t / np.abs(c_out)
    with np.errstate(invalid="ignore", over="ignore"):
        through = np.exp(-y) * _g(x - y)
        # (a ray near the plate's plane: exp(-y) underflows, g(x - y) overflows; the same as
        # a difference, free of cancellation there)
        through = np.where(np.isfinite(through), through, (np.exp(-y) - np.exp(-x)) / (x - y))
    return np.where(c_out > 0, np.where(np.isfinite(through), through, 0.0), _g(x + y))


class PlateTables:
    """plate_transmission(c_in, c, mu_t) at the TABLE_POINTS cosines c from -1 to 1, for
    many c_in: the nodes' own terms (mu t / |c|, exp of its negative) computed once, each
    table is then a few operations a node and no exponential of them (the closed form:
    exp(-y) g(x - y) = (exp(-y) - exp(-x)) / (x - y) leaving through the back face,
    g(x + y) = (1 - exp(-x) exp(-y)) / (x + y) through the entry face; x = mu t / c_in,
    y = mu t / |c|; the closed form itself where x -/+ y is within SERIES of 0)."""

    SERIES = 1e-6

    def __init__(self, mu_t: float):
        self.mu_t = float(mu_t)
        self.c = np.linspace(-1.0, 1.0, TABLE_POINTS)
        self.back = self.c > 0
        with np.errstate(divide="ignore"):
            self.y = self.mu_t / np.abs(self.c)
        self.exp_y = np.exp(-self.y)

    def at(self, c_in) -> np.ndarray:
        """float64 (len(c_in), TABLE_POINTS): the tables of the cosines c_in (> 0)."""
        x = (self.mu_t / np.asarray(c_in, dtype=np.float64).reshape(-1, 1))
        exp_x = np.exp(-x)
        with np.errstate(divide="ignore", invalid="ignore"):
            d = np.where(self.back, x - self.y, x + self.y)
            out = np.where(self.back, self.exp_y - exp_x, 1.0 - exp_x * self.exp_y) / d
            out[np.isinf(d)] = 0.0  # (c = 0: an edge-on ray)
        near = np.abs(d) < self.SERIES
        if near.any():  # (the closed form, free of the difference's cancellation)
            rows, cols = np.nonzero(near)
            cin = np.asarray(c_in, dtype=np.float64).reshape(-1)[rows]
            out[rows, cols] = plate_transmission(cin, self.c[cols], self.mu_t)
        return out


class PlateAbsorption:
    """A plate's transmission per pixel and frame: factor(directions, z) at the continuous
    frame coordinate z of the scan."""

    name = "absorption"

    def __init__(self, shape: SampleShape, wavelength: float, scan, min_transmission: float):
        self.shape = shape
        self.mu = shape.mu_at(wavelength)
        self.mu_t = self.mu * float(shape.thickness)
        n = np.asarray(scan.UB, dtype=float) @ np.asarray(shape.normal, dtype=float)
        if not np.linalg.norm(n) > 0:
            raise ValueError(f"the plate's normal {list(shape.normal)} is not a direction")
        self.normal_sample = n / np.linalg.norm(n)
        self.scan = scan
        self.min_transmission = float(min_transmission)
        self._tables = None  # (PlateTables, made on first use)

    def factor(self, directions: np.ndarray, z: float) -> np.ndarray:
        """Transmission of rays along unit lab directions (n, 3) at frame coordinate z (0
        where below min_transmission)."""
        n, c_in = self.normal_at(z)
        if c_in < 1e-9:
            return np.zeros(len(directions))
        a = plate_transmission(c_in, directions @ n, self.mu_t)
        return np.where(a >= self.min_transmission, a, 0.0)

    def normal_at(self, z: float) -> tuple[np.ndarray, float]:
        """The plate's unit normal in the lab at frame coordinate z, oriented along the beam,
        and its cosine with the beam (0: edge-on)."""
        n = self.scan.sample_rotation(np.array([float(z)]))[0] @ self.normal_sample
        c_in = float(n @ BEAM_DIRECTION)
        return (-n, -c_in) if c_in < 0 else (n, c_in)

    def table_at(self, z: float) -> tuple[np.ndarray, np.ndarray]:
        """(lab normal, the transmission at TABLE_POINTS cosines from -1 to 1 between a ray
        and that normal) at frame coordinate z: what the transform's compiled path looks up
        (algorithms.transform.kernels, frame_tables)."""
        n, c_in = self.normal_at(z)
        c = np.linspace(-1.0, 1.0, TABLE_POINTS)
        if c_in < 1e-9:
            return n, np.zeros(TABLE_POINTS)
        return n, plate_transmission(c_in, c, self.mu_t)

    def frame_tables(self, frames) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """What the transform's kernels evaluate the factor from at the centre (z = f + 1/2)
        of each frame f of `frames`: (table float32 (n, TABLE_POINTS), the transmission at
        cosines -1..1 between ray and normal as table_at's; lab normal float32 (n, 3);
        its cosine with the beam, float64 (n,)).  A ray along the unit direction
        d = wavelength Q + s0 (on the Ewald sphere) has the cosine
        (wavelength Q) . n + s0 . n with the normal (algorithms.transform.kernels)."""
        frames = np.asarray(frames, dtype=np.float64).ravel()
        normals = np.empty((frames.size, 3), np.float32)
        c_in = np.empty(frames.size)
        for i, f in enumerate(frames):
            normals[i], c_in[i] = self.normal_at(f + 0.5)
        if self._tables is None:
            self._tables = PlateTables(self.mu_t)
        tables = np.zeros((frames.size, TABLE_POINTS), np.float32)  # (edge-on: all 0)
        lit = c_in >= 1e-9
        if lit.any():
            tables[lit] = self._tables.at(c_in[lit])
        return tables, normals, c_in

    def notes(self) -> dict:
        return {"model": "plate bathed by the beam, closed form (model/corrections/absorption"
                         ".py) at each frame's centre, interpolated in a table over the "
                         f"cosine of ray and normal ({TABLE_POINTS} nodes)",
                **self.shape.as_dict(), "mu_per_m": self.mu, "mu_t": self.mu_t,
                "min_transmission": self.min_transmission}


def cylinder_transmission(psi, tilt_cos, in_cos, mu_r, points: int = 48):
    """Transmission of a cylinder of radius r (mu_r = mu r) for rays whose projections on
    the plane normal to its axis make the angle psi (rad) with each other; tilt_cos, in_cos:
    the lengths of the scattered and incident unit directions' projections on that plane
    (1: in it).  Polar Gauss-Legendre quadrature over the disk (points radii, 2 points
    angles), all arrays broadcast."""
    x, w = np.polynomial.legendre.leggauss(points)
    rr = 0.5 * (x + 1.0)  # radius / r
    wr = 0.5 * w * rr  # area weight r dr
    th = (np.arange(2 * points) + 0.5) * (np.pi / points)
    px = (rr[:, None] * np.cos(th)[None, :]).ravel()
    py = (rr[:, None] * np.sin(th)[None, :]).ravel()
    wt = np.repeat(wr, 2 * points)  # (the angles' weights are equal)
    wt = wt / wt.sum()
    psi = np.asarray(psi, dtype=float)[..., None]
    # incident along +x in the plane; scattered at psi from it
    p_in = px  # p . u_in
    l_in = p_in + np.sqrt(np.maximum(1.0 - (px ** 2 + py ** 2) + p_in ** 2, 0.0))
    p_out = px * np.cos(psi) + py * np.sin(psi)
    l_out = -p_out + np.sqrt(np.maximum(1.0 - (px ** 2 + py ** 2) + p_out ** 2, 0.0))
    tilt_cos = np.asarray(tilt_cos, dtype=float)[..., None]
    in_cos = np.asarray(in_cos, dtype=float)[..., None]
    with np.errstate(divide="ignore"):
        path = mu_r * (l_in / in_cos + l_out / tilt_cos)
    return np.sum(np.exp(-path) * wt, axis=-1)


class CylinderAbsorption:
    """A cylinder along the rotation axis: a factor per pixel, the same at every frame."""

    name = "absorption"

    def __init__(self, shape: SampleShape, wavelength: float, axis_lab, min_transmission):
        self.shape = shape
        self.mu = shape.mu_at(wavelength)
        self.mu_r = 0.5 * self.mu * float(shape.diameter)
        self.axis = np.asarray(axis_lab, dtype=float) / np.linalg.norm(axis_lab)
        self.min_transmission = float(min_transmission)

    def _in_plane(self, d):
        d = np.atleast_2d(d)
        return d - np.outer(d @ self.axis, self.axis)

    def factor(self, rays):
        from scipy.interpolate import RegularGridInterpolator

        s0 = self._in_plane(BEAM_DIRECTION)[0]
        m0 = float(np.linalg.norm(s0))
        if m0 < 1e-9:
            raise ValueError("the beam runs along the cylinder's axis: its absorption is not "
                             "modelled")
        s1 = self._in_plane(rays.directions)
        m1 = np.linalg.norm(s1, axis=-1)
        cos_psi = np.clip((s1 @ s0) / np.maximum(m1, 1e-300) / m0, -1.0, 1.0)
        psi = np.arccos(cos_psi)
        grid_psi = np.linspace(0.0, np.pi, 181)
        lo, hi = float(m1.min(initial=1.0)), float(m1.max(initial=1.0))
        grid_m = np.linspace(max(lo, 1e-3), max(hi, lo + 1e-6), 17)
        table = cylinder_transmission(grid_psi[:, None], grid_m[None, :], m0, self.mu_r)
        a = RegularGridInterpolator((grid_psi, grid_m), table)(
            np.stack([psi, np.clip(m1, grid_m[0], grid_m[-1])], -1))
        return np.where(a >= self.min_transmission, a, 0.0)

    def notes(self) -> dict:
        return {"model": "cylinder along the rotation axis bathed by the beam, polar "
                         "Gauss-Legendre quadrature over its section, tabulated (181 angles x "
                         "17 tilts) and interpolated", **self.shape.as_dict(),
                "mu_per_m": self.mu, "mu_r": self.mu_r,
                "min_transmission": self.min_transmission}
