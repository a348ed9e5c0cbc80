"""The regular (H, K, L) grid of transforms and merges.

Voxel centres of an axis are start + i * step, i = 0 .. n-1 (r.l.u.).  Volumes are stored in
NXRefine's order, array[l, k, h] (H varies fastest).  A derived grid is symmetric about 0
with step 1/m, so integer hkl fall on voxel centres and every Laue operator of the sample
(integer matrices in hkl) maps voxel centres onto voxel centres when h and k share limits
and steps (they do for every cell with a = b, which the symmetries that mix h and k need).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from ..base.errors import GridError

AXES = ("h", "k", "l")
# The transform indexes voxels with an int32 (hklflow.algorithms.transform): a grid, padded to bricks
# of 8^3 voxels, holds at most this many, and half as many with both kinds of volume from
# one pass (two parts of the grid; 1001^3 fits, 1024^3 does not)
TRANSFORM_BRICK = 8  # voxels a side of the transform's bricks (hklflow.algorithms.transform)
MAX_TRANSFORM_VOXELS = 2 ** 31 - 1 - 256
MAX_TRANSFORM_VOXELS_BOTH_KINDS = (2 ** 31 - 1) // 2 - 512


@dataclass(frozen=True)
class Axis:
    start: float
    step: float
    n: int

    def __post_init__(self):
        if not (self.step > 0 and self.n >= 1 and math.isfinite(self.start)):
            raise GridError(f"grid axis needs step > 0 and n >= 1, got {self}")

    @property
    def stop(self) -> float:
        return self.start + (self.n - 1) * self.step

    @property
    def values(self) -> np.ndarray:
        return self.start + self.step * np.arange(self.n)

    @classmethod
    def from_limits(cls, start: float, stop: float, step: float, where: str = "") -> "Axis":
        if step <= 0 or stop < start:
            raise GridError(f"{where}: [start, stop, step] needs stop >= start and step > 0, "
                             f"got [{start}, {stop}, {step}]")
        n = int(math.floor((stop - start) / step + 1e-6)) + 1
        return cls(float(start), float(step), n)

    def index(self, value) -> np.ndarray:
        """Voxel index (rounded) of values; out-of-range values give indices < 0 or >= n."""
        return np.floor((np.asarray(value, float) - self.start) / self.step + 0.5).astype(np.int64)


@dataclass(frozen=True)
class Grid:
    h: Axis
    k: Axis
    l: Axis  # noqa: E741

    @property
    def axes(self) -> tuple[Axis, Axis, Axis]:
        return (self.h, self.k, self.l)

    @property
    def shape(self) -> tuple[int, int, int]:
        """Array shape (nl, nk, nh)."""
        return (self.l.n, self.k.n, self.h.n)

    @property
    def size(self) -> int:
        return self.h.n * self.k.n * self.l.n

    def index(self, hkl) -> np.ndarray:
        """Voxel indices (..., 3) as (ih, ik, il) of hkl (..., 3)."""
        hkl = np.asarray(hkl, float)
        return np.stack([ax.index(hkl[..., i]) for i, ax in enumerate(self.axes)], axis=-1)

    def contains(self, idx) -> np.ndarray:
        idx = np.asarray(idx)
        return np.all((idx >= 0) & (idx < np.array([self.h.n, self.k.n, self.l.n])), axis=-1)

    def slice_index(self, axis: str, value: float) -> int:
        """Index of the voxel plane nearest value along axis (h, k or l); GridError outside."""
        ax = getattr(self, axis)
        i = int(ax.index(value))
        if not 0 <= i < ax.n:
            raise GridError(f"{axis} = {value} is outside the grid ({ax.start:g} .. {ax.stop:g})")
        return i

    def as_dict(self) -> dict:
        return {a: {"start": ax.start, "stop": ax.stop, "step": ax.step, "n": ax.n}
                for a, ax in zip(AXES, self.axes)}

    @classmethod
    def from_dict(cls, d: dict) -> "Grid":
        return cls(*(Axis(float(d[a]["start"]), float(d[a]["step"]), int(d[a]["n"])) for a in AXES))

    def same_as(self, other: "Grid", rtol: float = 1e-9) -> bool:
        return all(a.n == b.n and math.isclose(a.start, b.start, rel_tol=rtol, abs_tol=1e-9)
                   and math.isclose(a.step, b.step, rel_tol=rtol) for a, b in zip(self.axes, other.axes))

    def describe(self, axes: str = "hkl") -> str:
        """The axes (all of them: and the voxels) in words."""
        text = " x ".join(f"{a.upper()} {ax.start:g}..{ax.stop:g} step {ax.step:.5g} ({ax.n})"
                          for a, ax in zip(AXES, self.axes) if a in axes)
        return text + f" = {self.size:,} voxels" if set(axes) == set(AXES) else text


class GridSymmetryError(GridError):
    """The grid is not mapped onto itself voxel by voxel by the Laue operators."""


def operator_hkl(R) -> str:
    """The operator as the image of (h, k, l), e.g. 'k,-h-k,l' for h' = h R."""
    R = np.asarray(R, dtype=int)
    out = []
    for j in range(3):
        terms = ""
        for m, name in enumerate(AXES):
            c = int(R[m, j])
            if c == 0:
                continue
            sign = "-" if c < 0 else ("+" if terms else "")
            terms += sign + (f"{abs(c)}" if abs(c) != 1 else "") + name
        out.append(terms or "0")
    return ",".join(out)


def _is_integer(x: float, tol: float = 1e-4) -> bool:
    return abs(x - round(x)) <= tol


def _nice_limit(ax) -> str:
    """A limit of the axis, rounded up to a whole number of steps (for messages)."""
    lim = max(abs(ax.start), abs(ax.stop))
    n = math.ceil(lim / ax.step - 1e-6)
    return f"{float(Fraction(n * ax.step).limit_denominator(1000)):g}"


def check_grid_symmetry(grid: Grid, operators, group: str = "", known: str = "hkl") -> None:
    """GridSymmetryError, listing every axis to change, when some Laue operator (integer R,
    h' = h R) does not map voxel centres onto voxel centres: the steps of two axes it mixes
    differ, or it puts an axis' images between its centres (hklflow.algorithms.merge.symmetry explains the
    arithmetic).  The symmetrize step and the config's validation ask this one check.

    known: the axes whose limits and steps are the grid's own; a problem that involves another
    (an axis define_grid derives from the data later) is not raised."""
    ops = np.round(np.asarray(operators)).astype(np.int64)
    start = np.array([ax.start for ax in grid.axes])
    step = np.array([ax.step for ax in grid.axes])
    problems: dict[str, str] = {}
    where = "reduction.transform.grid"
    for R in ops:
        name = operator_hkl(R)
        for j in range(3):
            mixed = [m for m in range(3) if R[m, j] != 0 and m != j]
            if not {AXES[j], *(AXES[m] for m in mixed)} <= set(known):
                continue
            for m in mixed:
                if not math.isclose(step[m] / step[j], 1.0, rel_tol=1e-6):
                    a, b = sorted((AXES[m], AXES[j]))
                    problems[f"step {a}{b}"] = (
                        f"the operator (h,k,l) -> ({name}) maps {AXES[m].upper()} onto "
                        f"{AXES[j].upper()}, but their steps differ ({step[m]:g} and "
                        f"{step[j]:g}): give {where}.{a} and {where}.{b} the same step "
                        f"(and the same limits, so that no equivalent falls outside)")
            off = (float(np.dot(start, R[:, j])) - start[j]) / step[j]
            if not _is_integer(off):
                ax = AXES[j]
                lim = _nice_limit(grid.axes[j])
                problems.setdefault(f"start {ax}", (
                    f"the operator (h,k,l) -> ({name}) puts the images of voxel centres "
                    f"between the voxel centres of {ax.upper()} (start {start[j]:g}, step "
                    f"{step[j]:g}: offset {off:.4g} voxels): make {where}.{ax} symmetric about "
                    f"0 with 0 on a voxel centre, e.g. [-{lim}, {lim}, {step[j]:g}]"
                    + (", with the same start and step as "
                       + " and ".join(f"{where}.{AXES[m]}" for m in mixed) if mixed else "")))
    if problems:
        raise GridSymmetryError(
            f"the grid ({grid.describe(known)}) is not compatible with the Laue group"
            f"{' ' + group if group else ''} (its operators must map voxel centres onto "
            "voxel centres): " + "; ".join(problems.values()))


def default_grid(cell, q_max: float, q_pixel: float, max_voxels: int,
                 given: dict | None = None) -> tuple[Grid, dict]:
    """The grid for a sample: axes given as [start, stop, step] are kept; the others span
    +-ceil(q_max |a_i|) with step 1/m_i, m_i the smallest integer making a step no larger
    than one pixel's Q size (q_pixel |a_i|), then coarsened together until the grid holds at
    most max_voxels.  cell: UnitCell; q_max, q_pixel in 1/Angstrom (no 2 pi).
    Returns the grid and a dict saying how each axis was chosen."""
    given = given or {}
    lengths = cell.parameters[:3]  # |a_i|: h = Q . a_i, so |h| <= |Q| |a_i|
    limits, m = {}, {}
    for a, length in zip(AXES, lengths):
        if a in given:
            continue
        limits[a] = max(1, math.ceil(q_max * length - 1e-9))
        m[a] = max(1, math.ceil(1.0 / (q_pixel * length)))
    fixed = 1
    axes = {}
    for a in AXES:
        if a in given:
            axes[a] = Axis.from_limits(*given[a], where=f"reduction.transform.grid.{a}")
            fixed *= axes[a].n
    def count(mm):
        return fixed * math.prod(2 * limits[a] * mm[a] + 1 for a in m)
    coarsened = 1.0
    while m and count(m) > max_voxels:
        f = (count(m) / max_voxels) ** (1.0 / len(m))
        new = {a: max(1, math.floor(v / f)) for a, v in m.items()}
        if new == m:
            new = {a: max(1, v - 1) for a, v in m.items()}
            if new == m:
                break
        coarsened *= f
        m = new
    for a in m:
        n = limits[a]
        axes[a] = Axis(-float(n), 1.0 / m[a], 2 * n * m[a] + 1)
    how = {a: ("given in the config" if a in given else
               f"+-{limits[a]} (Qmax {q_max:.4f}/A x |{a}| {lengths[AXES.index(a)]:.4f} A), step 1/{m[a]} "
               f"(one pixel = {q_pixel * lengths[AXES.index(a)]:.4f} r.l.u.)") for a in AXES}
    if coarsened > 1.0:
        how["coarsened"] = f"steps coarsened to stay within max_voxels = {max_voxels:,}"
    return Grid(axes["h"], axes["k"], axes["l"]), how


def q_range(detectors) -> tuple[float, float]:
    """The largest |Q| any of the detector geometries reaches and the smallest Q size of one
    of their pixels (1/Angstrom, no 2 pi): the limits and finest step a grid needs."""
    detectors = list(detectors)
    return max(g.q_max() for g in detectors), min(g.q_pixel() for g in detectors)
