"""Planes of reciprocal-space volumes, as the pictures draw them (pictures.plot_slices,
pictures.plot_series).

A slice fixes one index ({l: 0} is the plane l = 0, drawn with H across and K up); it is
drawn as an image of the intensity signal/weight on a log colour scale, grey where nothing
was measured, with its axes in r.l.u. and to scale in Cartesian reciprocal space: the two
in-plane axes are drawn with their true lengths |a*|, |b*|, ... and the true angle between
them (from the reciprocal metric of the cell), so a hexagonal HK0 plane shows its 120 deg
(60 deg between a* and b*) and the grid lines follow constant H and constant K.  Without a
cell the axes are orthogonal with 1 r.l.u. the same length on both, and the picture says so.

Only the plane is read from a volume file (files.volume.VolumeReader.read_plane: its stored
intensity, through the chunks that hold the plane); the steps that write a volume keep the
planes of their pictures as the writer stores them (kept_planes: files.volume_planes.KeptPlanes)
and draw from those.
"""
from __future__ import annotations

import contextlib
import math
import re
from dataclasses import dataclass

import numpy as np

from ..base.errors import ConfigError
from ..files.volume import Volume, VolumeReader, read_volume_header
from ..files.volume_planes import KeptPlanes
from ..model.crystal import UnitCell
from ..model.grid import AXES, Grid


@dataclass
class Slice:
    axis: str            # the fixed index: h, k or l
    value: float         # as asked
    plane: float         # the voxel plane drawn (nearest centre)
    u: str               # horizontal index
    v: str               # the other in-plane index
    data: np.ndarray     # intensity [v, u], NaN where unmeasured
    u_edges: tuple[float, float]  # outer voxel edges (r.l.u.)
    v_edges: tuple[float, float]

    @property
    def label(self) -> str:
        lab = f"{self.axis} = {self.value:g}"
        if not math.isclose(self.plane, self.value, abs_tol=1e-9):
            lab += f" (plane {self.axis} = {self.plane:.4g})"
        return lab

    def describe(self) -> str:
        fixed = {self.axis: f"{self.plane:g}"}
        return "(" + " ".join(fixed.get(a, a.upper()) for a in AXES) + ")"


def parse_slice(spec) -> tuple[str, float]:
    """{l: 0} (or ('l', 0), or 'l=0') -> ('l', 0.0)."""
    if isinstance(spec, dict):
        if len(spec) != 1:
            raise ConfigError(f"a slice fixes exactly one index, got {spec}")
        (axis, value), = spec.items()
    elif isinstance(spec, str):
        m = re.fullmatch(r"\s*([hkl])\s*=\s*(\S+)\s*", spec)
        if not m:
            raise ConfigError(f"slice {spec!r}: expected e.g. 'l=0'")
        axis, value = m.groups()
    else:
        axis, value = spec
    axis = str(axis).lower()
    if axis not in AXES:
        raise ConfigError(f"slice {spec}: the index must be h, k or l")
    return axis, float(value)


def _region(grid: Grid, axis: str, i: int):
    j = AXES.index(axis)  # array order is [l, k, h]
    reg = [slice(None)] * 3
    reg[2 - j] = slice(i, i + 1)
    return tuple(reg)


def kept_planes(slices) -> KeptPlanes:
    """KeptPlanes of the slice specs, for a VolumeWriter to fill (keep=): read_slice then
    takes them from memory; those outside the writer's grid are not kept (read_slice raises
    GridError for them as for a file)."""
    return KeptPlanes([parse_slice(spec) for spec in slices])


def read_slice(volume_or_path, spec) -> Slice:
    """The plane of a Volume (in memory), of KeptPlanes (as a writer stored it) or of a
    volume file, given by its path or an open VolumeReader (only the plane is read), nearest
    the slice spec; GridError when the value is outside the grid."""
    axis, value = parse_slice(spec)
    if isinstance(volume_or_path, KeptPlanes):
        if volume_or_path.grid is None:
            raise ValueError("these planes were never given to a VolumeWriter")
        grid = volume_or_path.grid
        i = grid.slice_index(axis, value)
        data = volume_or_path.plane(axis, i).astype(np.float64)
    elif isinstance(volume_or_path, Volume):
        vol = volume_or_path
        grid = vol.grid
        i = grid.slice_index(axis, value)
        reg = _region(grid, axis, i)
        signal, weight = vol.signal[reg], vol.weight[reg]
        j = AXES.index(axis)
        plane = np.squeeze(np.asarray(signal, np.float64), axis=2 - j)
        wplane = np.squeeze(np.asarray(weight, np.float64), axis=2 - j)
        with np.errstate(invalid="ignore", divide="ignore"):
            data = np.where(wplane > 0, plane / np.where(wplane > 0, wplane, 1.0), np.nan)
    else:
        with contextlib.ExitStack() as stack:
            reader = volume_or_path if isinstance(volume_or_path, VolumeReader) \
                else stack.enter_context(VolumeReader(volume_or_path))
            grid = reader.grid
            i = grid.slice_index(axis, value)
            data = reader.read_plane(axis, i).astype(np.float64)
    u, v = [a for a in AXES if a != axis]  # arrays [l, k, h] minus one axis: rows v, cols u
    ax_u, ax_v = getattr(grid, u), getattr(grid, v)
    return Slice(axis, value, float(getattr(grid, axis).values[i]), u, v, data,
                 (ax_u.start - ax_u.step / 2, ax_u.stop + ax_u.step / 2),
                 (ax_v.start - ax_v.step / 2, ax_v.stop + ax_v.step / 2))


def cell_of(volume_or_path, cell=None):
    """The UnitCell to draw with: the one given, else the volume's sample unit_cell, else None."""
    if cell is not None:
        return cell if isinstance(cell, UnitCell) else UnitCell.from_list(cell)
    smp = volume_or_path.sample if isinstance(volume_or_path, (Volume, KeptPlanes)) \
        else read_volume_header(volume_or_path).sample
    uc = smp.get("unit_cell") if smp else None
    if uc is None:
        return None
    try:
        return UnitCell.from_list(np.asarray(uc, float).ravel()[:6])
    except ValueError:
        return None


def plane_matrix(cell, u: str, v: str) -> np.ndarray:
    """2x2 M with (x, y) = M @ (u, v): Cartesian position (1/Angstrom, no 2 pi) of the point
    u a_u* + v a_v* in the plane, a_u* along x.  Identity (r.l.u. both ways) without a cell."""
    if cell is None:
        return np.eye(2)
    g = cell.reciprocal_metric
    i, j = AXES.index(u), AXES.index(v)
    au, av = math.sqrt(g[i, i]), math.sqrt(g[j, j])
    cos = g[i, j] / (au * av)
    sin = math.sqrt(max(0.0, 1.0 - cos * cos))
    return np.array([[au, av * cos], [0.0, av * sin]])


def color_limits(arrays, lo_percentile: float = 1.0, hi_percentile: float = 99.9,
                 dynamic_range: float = 1e5) -> tuple[float, float]:
    """Log colour limits from the positive finite values of the arrays (a common scale)."""
    vals = [a[np.isfinite(a) & (a > 0)] for a in arrays]
    vals = np.concatenate(vals) if vals else np.empty(0)
    if vals.size == 0:
        return 1e-3, 1.0
    if vals.size > 2_000_000:
        vals = vals[:: vals.size // 2_000_000 + 1]
    vmin, vmax = np.percentile(vals, [lo_percentile, hi_percentile])
    vmax = max(float(vmax), 1e-30)
    vmin = min(max(float(vmin), vmax / dynamic_range), vmax / 10)
    return vmin, vmax
