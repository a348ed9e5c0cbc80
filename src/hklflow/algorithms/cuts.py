"""Cuts of a reciprocal-space volume along a line or a plane at any angle to its grid
(hklflow cut): the cut's own axes in r.l.u. and in 1/Angstrom, its sums, its sigma.

A cut is an origin o and one (line) or two (plane) directions d_j, all in r.l.u.; its
points are o + s d (+ t e), s and t in multiples of the directions, sampled every ds (dt):
by default one voxel's step along each direction, across the whole grid.  In Cartesian
reciprocal space (docs/conventions.md: B, 1/Angstrom, no 2 pi) a direction has the length
|B d|, and a plane's two directions meet at the angle between B d and B e, which is not
90 deg in a non-orthogonal cell: the axes in 1/Angstrom are s |B d| and t |B e|, and
cartesian_edges gives the skewed mesh a picture draws to scale.

Sampling, one of:

* nearest voxel (width None): each point takes the sums of the voxel whose centre is
  nearest it (Grid.index);
* binning over a width (1/Angstrom, full width): every voxel whose centre lies within
  width/2 of the line (a cylinder) or of the plane (a slab) goes to the point of the cut
  nearest the foot of its perpendicular; a point's sums are its voxels' sums.

Either way a point holds sums, as a voxel does: signal S, weight W and variance V added
over its voxels, and its intensity is S / W with sigma sqrt(V) / W.  That is right for
volumes of sums (docs/conventions.md, "What is summed"): a voxel's S and W are sums over
the pixels that fell in it, so adding them over a point's voxels is binning those pixels
into the point directly, each pixel with its own weight; a mean of the voxels' ratios
S_i / W_i would give a voxel one pixel saw the say of one a thousand pixels saw.  The
variance adds because the voxels' counts are independent and W is no random variable:
Var(sum S_i / sum W_i) = sum V_i / (sum W_i)^2.  A point with W = 0 was not measured:
its intensity and sigma are NaN, never 0.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np

from ..base.errors import ConfigError, GridError
from ..model.crystal import UnitCell
from ..model.grid import Grid


@dataclass
class CutPlan:
    """Where a cut's points are and which voxels it may touch (region: slices [l, k, h])."""

    origin: np.ndarray       # (3,) r.l.u.
    directions: np.ndarray   # (n, 3) r.l.u., n = 1 (line) or 2 (plane)
    coords: list             # n arrays: the points' s (t) in multiples of the directions
    width: float | None      # 1/Angstrom, full width; None: nearest voxel
    cell: UnitCell
    region: tuple            # slices of the volume's [l, k, h] the cut reads
    trim: bool = True        # leave out edges outside the grid (ranges not given)

    @property
    def method(self) -> str:
        return "nearest voxel" if self.width is None else f"binned over {self.width:g} 1/A"


@dataclass
class Cut:
    """A cut's sums at its points, arrays [t, s] (plane: rows along the second direction)
    or [s] (line), and its axes."""

    origin: np.ndarray
    directions: np.ndarray
    coords: list          # per direction, r.l.u. multiples of it
    lengths: np.ndarray   # per direction, |B d| in 1/Angstrom
    signal: np.ndarray    # summed signal of the point's voxels
    weight: np.ndarray    # summed weight (0: unmeasured)
    variance: np.ndarray | None  # summed variance; None: the volume had none
    voxels: np.ndarray    # voxels summed at each point
    width: float | None
    method: str
    angle: float | None = None  # deg between a plane's directions in Cartesian space

    @property
    def ndim(self) -> int:
        return len(self.directions)

    @property
    def q_coords(self) -> list:
        """The axes in 1/Angstrom: distance from the origin along each direction."""
        return [c * n for c, n in zip(self.coords, self.lengths)]

    def intensity(self) -> np.ndarray:
        """S / W, NaN where nothing was measured."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.weight > 0, self.signal / np.where(self.weight > 0,
                                                                    self.weight, 1), np.nan)

    def errors(self) -> np.ndarray | None:
        """sqrt(V) / W, NaN where nothing was measured; None without a variance."""
        if self.variance is None:
            return None
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.weight > 0, np.sqrt(np.maximum(self.variance, 0))
                            / np.where(self.weight > 0, self.weight, 1), np.nan)

    def hkl(self) -> np.ndarray:
        """The points' (h, k, l), shape (*shape, 3)."""
        return _points(self.origin, self.directions, self.coords)

    def cartesian_edges(self) -> tuple[np.ndarray, np.ndarray]:
        """A plane's point edges (X, Y), each [t + 1, s + 1], in 1/Angstrom in the plane, the
        first direction along X: the skewed mesh that draws the cut to scale."""
        se, te = (_edges(c) for c in self.coords)
        t, s = np.meshgrid(te, se, indexing="ij")
        a, b = self.lengths
        gamma = math.radians(self.angle)
        return s * a + t * b * math.cos(gamma), t * b * math.sin(gamma)


def _edges(c: np.ndarray) -> np.ndarray:
    step = c[1] - c[0] if len(c) > 1 else 1.0
    return np.concatenate([c - step / 2, c[-1:] + step / 2])


def directions_label(d) -> str:
    """[1 1 0] for (1, 1, 0): a direction as crystallographers write it."""
    return "[" + " ".join(f"{x:g}" for x in np.asarray(d, float)) + "]"


def point_label(p) -> str:
    return "(" + " ".join(f"{x:g}" for x in np.asarray(p, float)) + ")"


def _vector(v, what: str) -> np.ndarray:
    a = np.asarray(v, float).reshape(-1)
    if a.shape != (3,) or not np.all(np.isfinite(a)):
        raise ConfigError(f"{what}: three numbers (h k l) expected, got {v!r}")
    return a


def plane_from_normal(cell: UnitCell, normal, largest: int = 3) -> np.ndarray:
    """Two in-plane directions (2, 3) r.l.u. of the reciprocal-space plane whose normal is
    the direction `normal` (r.l.u.: B n in Cartesian): the shortest lattice directions with
    components up to `largest` perpendicular to it (in a non-orthogonal cell these are not
    the directions whose indices dot n to 0), the shorter first; when the normal is no
    lattice direction's, two perpendicular Cartesian directions written in r.l.u."""
    n = _vector(normal, "--normal")
    B = cell.B
    m = B @ n
    if np.linalg.norm(m) == 0:
        raise ConfigError("--normal: the zero vector has no plane")
    m /= np.linalg.norm(m)
    found = []
    for h in itertools.product(range(-largest, largest + 1), repeat=3):
        h = np.array(h, float)
        q = B @ h
        size = np.linalg.norm(q)
        if size == 0 or abs(q @ m) > 1e-9 * size:
            continue
        # one of h and -h: the first nonzero index positive
        if h[np.flatnonzero(h)[0]] < 0:
            continue
        # equal lengths: fewer indices, then h before k before l ((1 0 0), (0 1 0), (1 -1 0))
        found.append((round(size, 12), np.count_nonzero(h), tuple(-abs(h)), tuple(h)))
    found.sort()
    for i, (*_, u) in enumerate(found):
        for *_, v in found[i + 1:]:
            if np.linalg.norm(np.cross(B @ u, B @ v)) > 1e-9:
                return np.array([u, v])
    # no lattice plane: a Cartesian right-handed pair (r.l.u. of unit length 1/A)
    trial = np.eye(3)[np.argmin(np.abs(m))]
    x = trial - (trial @ m) * m
    x /= np.linalg.norm(x)
    y = np.cross(m, x)
    return np.linalg.solve(B, np.array([x, y]).T).T


def _default_step(grid: Grid, d: np.ndarray) -> float:
    """One voxel along d: the largest step in multiples of d that moves no index by more
    than its axis' step."""
    steps = [ax.step / abs(x) for ax, x in zip(grid.axes, d) if abs(x) > 1e-12]
    return min(steps)


def plan_cut(grid: Grid, cell: UnitCell, origin, directions, ranges=None, steps=None,
             width: float | None = None) -> CutPlan:
    """The points of the cut (origin and 1 or 2 directions in r.l.u.) and the part of the
    grid it reads.  ranges: per direction (start, stop) in multiples of it, None: across the
    grid (edges outside it left out); steps: per direction, None: one voxel; width: the full
    width (1/Angstrom) of the binning, None: nearest voxel."""
    o = _vector(origin, "--origin")
    D = np.array([_vector(d, "direction") for d in directions])
    if len(D) not in (1, 2):
        raise ConfigError(f"a cut has one direction (a line) or two (a plane), got {len(D)}")
    B = cell.B
    E = B @ D.T  # (3, n) Cartesian directions
    if np.any(np.linalg.norm(E, axis=0) == 0):
        raise ConfigError("a cut's direction is the zero vector")
    if len(D) == 2 and np.linalg.norm(np.cross(E[:, 0], E[:, 1])) < 1e-9 * np.prod(
            np.linalg.norm(E, axis=0)):
        raise ConfigError(f"the plane's directions {directions_label(D[0])} and "
                          f"{directions_label(D[1])} are parallel")
    if width is not None and not width > 0:
        raise ConfigError(f"--width must be > 0 (1/A), got {width}")
    steps = [None] * len(D) if steps is None else list(steps)
    steps = [(_default_step(grid, d) if s is None else float(s)) for d, s in zip(D, steps)]
    if any(not s > 0 for s in steps):
        raise ConfigError(f"steps must be > 0, got {steps}")
    trim = ranges is None
    if ranges is None:
        # the grid's box (voxel edges) projected on the directions: the cut's points can
        # meet the grid only inside it
        corners = np.array([[ax.start - ax.step / 2 if c == 0 else ax.stop + ax.step / 2
                             for ax, c in zip(grid.axes, corner)]
                            for corner in itertools.product((0, 1), repeat=3)])
        coef = np.linalg.pinv(E) @ (B @ (corners - o).T)  # (n, 8)
        ranges = [(c.min(), c.max()) for c in coef]
    coords = []
    for (start, stop), step in zip(ranges, steps):
        if not stop >= start:
            raise ConfigError(f"a cut's range needs stop >= start, got [{start}, {stop}]")
        # points at whole steps from the origin, so that the origin is one
        i0, i1 = math.ceil(start / step - 1e-9), math.floor(stop / step + 1e-9)
        if i1 < i0:
            i1 = i0
        coords.append(np.arange(i0, i1 + 1) * step)
    plan = CutPlan(o, D, coords, None if width is None else float(width), cell, (), trim)
    plan.region = _region(grid, plan, steps)
    return plan


def _region(grid: Grid, plan: CutPlan, steps) -> tuple:
    """Slices [l, k, h] of the voxels the cut may read: those of the box around its
    extent (half a step beyond its end points, and width/2 more: |dh| <= r |a| for a move
    of r in 1/A)."""
    ends = [(c[0] - s / 2, c[-1] + s / 2) for c, s in zip(plan.coords, steps)]
    corners = np.array([plan.origin + sum(e[i] * d for e, i, d in zip(ends, pick, plan.directions))
                        for pick in itertools.product((0, 1), repeat=len(ends))])
    pad = np.zeros(3) if plan.width is None else plan.width / 2 * np.array(plan.cell.parameters[:3])
    lo, hi = corners.min(axis=0) - pad, corners.max(axis=0) + pad
    out = []
    for ax, a, b in zip(grid.axes, lo, hi):
        i0 = max(0, int(ax.index(a)) - 1)
        i1 = min(ax.n, int(ax.index(b)) + 2)
        out.append(slice(i0, max(i0, i1)))
    return (out[2], out[1], out[0])


def sample_cut(grid: Grid, plan: CutPlan, signal, weight, variance=None,
               voxels_per_slab: int = 1 << 20) -> Cut:
    """The cut of the volume's sums: signal, weight (and variance) are the arrays [l, k, h]
    of plan.region (or of the whole grid).  Binned over a width, the voxels' coordinates
    are made for L planes of about voxels_per_slab voxels at a time (some ten float64
    temporaries each)."""
    shape = tuple(len(c) for c in reversed(plan.coords))  # [t, s]
    B = plan.cell.B
    E = B @ plan.directions.T
    lengths = np.linalg.norm(E, axis=0)
    arrays = [signal, weight] + ([variance] if variance is not None else [])
    whole = tuple(slice(0, n) for n in grid.shape)
    region = whole if signal.shape == grid.shape else plan.region
    if signal.shape != tuple(r.stop - r.start for r in region):
        raise ValueError(f"arrays {signal.shape} are neither the grid {grid.shape} nor the "
                         f"cut's region {region}")
    l0, k0, h0 = (r.start for r in region)
    sums = np.zeros((len(arrays) + 1, int(np.prod(shape))))
    if plan.width is None:
        hkl = _points(plan.origin, plan.directions, plan.coords).reshape(-1, 3)
        idx = grid.index(hkl)  # (m, 3) as (ih, ik, il)
        local = idx - np.array([h0, k0, l0])
        inside = grid.contains(idx) & np.all(
            (local >= 0) & (local < np.array(signal.shape[::-1])), axis=1)
        where = np.flatnonzero(inside)
        ih, ik, il = local[where].T
        for j, a in enumerate(arrays):
            sums[j, where] = np.asarray(a[il, ik, ih], np.float64)
        sums[-1, where] = 1
        reached = inside
    else:
        pinv = np.linalg.pinv(E)
        start = np.array([c[0] for c in plan.coords])
        step = np.array([c[1] - c[0] if len(c) > 1 else 1.0 for c in plan.coords])
        count = np.array([len(c) for c in plan.coords])
        hv = grid.h.values[region[2]]
        kv = grid.k.values[region[1]]
        planes = max(1, voxels_per_slab // max(1, signal.shape[1] * signal.shape[2]))
        for a0 in range(0, signal.shape[0], planes):
            lv = grid.l.values[l0 + a0:l0 + min(a0 + planes, signal.shape[0])]
            L, K, H = np.meshgrid(lv, kv, hv, indexing="ij")
            q = np.stack([H.ravel(), K.ravel(), L.ravel()]) - plan.origin[:, None]
            x = B @ q
            c = pinv @ x  # coefficients of the foot of the perpendicular
            dist = np.linalg.norm(x - E @ c, axis=0)
            i = np.rint((c - start[:, None]) / step[:, None]).astype(np.int64)
            keep = (dist <= plan.width / 2 * (1 + 1e-9)) & np.all(
                (i >= 0) & (i < count[:, None]), axis=0)
            flat = i[0, keep] if len(count) == 1 else i[1, keep] * count[0] + i[0, keep]
            for j, a in enumerate(arrays):
                values = np.asarray(a[a0:a0 + len(lv)], np.float64).reshape(-1)[keep]
                sums[j] += np.bincount(flat, values, minlength=sums.shape[1])
            sums[-1] += np.bincount(flat, minlength=sums.shape[1])
        reached = sums[-1] > 0
    sums = sums.reshape((len(arrays) + 1,) + shape)
    coords = list(plan.coords)
    if plan.trim:
        keep = reached.reshape(shape)
        cuts = []
        for axis in range(len(shape)):
            other = tuple(a for a in range(len(shape)) if a != axis)
            used = np.flatnonzero(keep.any(axis=other) if other else keep)
            cuts.append(slice(used[0], used[-1] + 1) if len(used) else slice(0, 0))
        sums = sums[(slice(None),) + tuple(cuts)]
        coords = [c[s] for c, s in zip(coords, reversed(cuts))]
        if sums[0].size == 0:
            raise GridError(f"the cut through {point_label(plan.origin)} along "
                            + " ".join(directions_label(d) for d in plan.directions)
                            + f" does not meet the grid ({grid.describe()})")
    angle = None
    if len(plan.directions) == 2:
        cos = E[:, 0] @ E[:, 1] / (lengths[0] * lengths[1])
        angle = math.degrees(math.acos(max(-1.0, min(1.0, cos))))
    return Cut(plan.origin, plan.directions, coords, lengths, sums[0], sums[1],
               sums[2] if variance is not None else None, sums[-1].astype(np.int64),
               plan.width, plan.method, angle)


def _points(origin, directions, coords) -> np.ndarray:
    if len(directions) == 1:
        return origin + coords[0][:, None] * directions[0]
    t, s = np.meshgrid(coords[1], coords[0], indexing="ij")
    return origin + s[..., None] * directions[0] + t[..., None] * directions[1]
