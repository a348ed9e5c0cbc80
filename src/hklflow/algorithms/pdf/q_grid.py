"""|Q| on a regular grid (hklflow.model.grid) of a volume array[l, k, h], and passes over such a
volume: slab by slab (a volume read from its file), or over the octant that holds every value
of a volume even along each axis."""
from __future__ import annotations

import math

import numpy as np

UNITS = ("inverse_angstrom", "rlu")


def q_metric(cell, units: str = "inverse_angstrom") -> np.ndarray:
    """M with |Q|^2 = d M d for a displacement d in r.l.u.: (2 pi)^2 G* for 1/Angstrom,
    the identity for r.l.u. (Euclidean distance in h, k, l)."""
    if units == "inverse_angstrom":
        return (2 * math.pi) ** 2 * np.asarray(cell.reciprocal_metric, float)
    if units == "rlu":
        return np.eye(3)
    raise ValueError(f"radius units must be one of {UNITS}, got {units!r}")


SLAB_PLANES = 8  # L planes per call of a volume given as a function (the chunks' height)


def slab_by_slab(values, grid, planes: int = SLAB_PLANES, start: int = 0):
    """(l0, l1, planes [l0, l1) float32 C-contiguous) of a volume on grid: values an array
    (one slab, the whole), or a function (l0, l1) -> its planes, called for slabs of
    `planes` L planes from plane `start` on (e.g. read from the volume file: no whole
    array in memory)."""
    if not callable(values):
        values = np.asarray(values)
        if values.shape != grid.shape:
            raise ValueError(f"a volume of the grid's shape {grid.shape} was expected, got "
                             f"{values.shape}")
        yield 0, grid.l.n, values
        return
    for l0 in range(start, grid.l.n, planes):
        l1 = min(l0 + planes, grid.l.n)
        slab = values(l0, l1)
        if slab.shape != (l1 - l0,) + grid.shape[1:]:
            raise ValueError(f"planes [{l0}, {l1}) of the grid's shape {grid.shape} were "
                             f"expected, got {slab.shape}")
        yield l0, l1, slab


def octant_boxes(grid, l0: int = 0, l1: int | None = None):
    """The octant of a grid symmetric about 0 along each axis - the voxels at or above its
    middle, which hold every value of a volume even along each axis - as boxes within L
    planes [l0, l1): [(l slice (from l0), k slice, h slice, multiplicity)], the
    multiplicity the voxels each of its voxels stands for (itself and its mirror images: 1
    along an axis on the plane at 0, else 2).  None when the grid is not symmetric about 0
    (then its far side has voxels without a mirror image)."""
    parts = []
    for ax in grid.axes[::-1]:  # [l, k, h]
        if abs(ax.start + ax.stop) > 1e-6 * ax.step:
            return None
        n, half = ax.n, ax.n // 2
        parts.append([(half, half + 1, 1), (half + 1, n, 2)] if n % 2 else [(half, n, 2)])
    l1 = grid.l.n if l1 is None else l1
    boxes = []
    for a, b, ml in parts[0]:
        a, b = max(a, l0), min(b, l1)
        if a >= b:
            continue
        for c, d, mk in parts[1]:
            for e, f, mh in parts[2]:
                if c < d and e < f:
                    boxes.append((slice(a - l0, b - l0), slice(c, d), slice(e, f), ml * mk * mh))
    return boxes


def octant_start(grid) -> int:
    """The first L plane of octant_boxes' octant."""
    return grid.l.n // 2
