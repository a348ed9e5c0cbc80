"""A cut of a volume along a line or a plane (hklflow cut; hklflow.algorithms.cuts)::

  /entry                  NXentry, @default = cut; title
     cut                  NXdata, @signal = data, @axes = [u] (line) or [v, u] (plane:
                          data[t, s], rows along the second direction), @angles (plane: the
                          angle in deg between its two directions in Cartesian space, which
                          NeXpy draws the plane skewed by)
        data              float64: intensity = signal_sum / weight_sum, NaN where unmeasured
        data_errors       float64: sigma, sqrt(variance_sum) / weight_sum (NeXpy's error
                          bars: <signal>_errors; with a variance in the volume only)
        signal_sum, weight_sum, variance_sum   the sums of the voxels of each point
        voxels            int64: voxels summed at each point (0: outside the grid)
        u, v              float64 r.l.u. along the cut's directions (multiples of them from
                          the origin), @units rlu, @long_name, @scaling_factor |B d| (1/A)
        Q_u, Q_v          float64 1/A along the directions from the origin (@units
                          1/Angstrom): auxiliary axes, @u_indices ... name what they span
        h, k, l           float64 r.l.u. of every point (auxiliary)
     definition           NXcollection: origin, directions (r.l.u.), width (1/A, NaN:
                          nearest voxel), method, volume (the input's path), unit_cell
     process              NXprocess: provenance
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..base.errors import FileFormatError
from .h5 import nexus, open_h5, provenance_group, text, write_nexus_atomically

AXIS_NAMES = ("u", "v")


def _direction(d) -> str:
    return "[" + " ".join(f"{x:g}" for x in np.asarray(d, float)) + "]"


def _point(p) -> str:
    return "(" + " ".join(f"{x:g}" for x in np.asarray(p, float)) + ")"


def write_cut(path, cut, *, title: str, cell, volume, provenance: dict) -> Path:
    """Write a cut (an hklflow.algorithms.cuts.Cut) of the volume file `volume`, in the
    layout of the module's docstring, atomically."""
    nx = nexus()
    n = len(cut.directions)
    names = AXIS_NAMES[:n]
    data = nx.NXdata()
    data.attrs["signal"] = "data"
    data.attrs["axes"] = list(reversed(names))  # data[t, s]: rows along the second
    data["data"] = nx.NXfield(cut.intensity(), long_name="intensity (signal_sum / "
                              "weight_sum; NaN: not measured)")
    errors = cut.errors()
    if errors is not None:
        data["data_errors"] = nx.NXfield(errors, long_name="standard uncertainty of the "
                                         "intensity")
        data["variance_sum"] = nx.NXfield(cut.variance, long_name="summed variance")
    data["signal_sum"] = nx.NXfield(cut.signal, long_name="summed corrected intensity")
    data["weight_sum"] = nx.NXfield(cut.weight, long_name="summed pixel weights")
    data["voxels"] = nx.NXfield(cut.voxels, long_name="voxels summed")
    for i, (name, d, c, q, length) in enumerate(zip(names, cut.directions, cut.coords,
                                                     cut.q_coords, cut.lengths)):
        dim = n - 1 - i
        where = f"along {_direction(d)} from {_point(cut.origin)}"
        data[name] = nx.NXfield(np.asarray(c, float), units="rlu",
                                long_name=f"r.l.u. {where}", scaling_factor=float(length))
        data[f"Q_{name}"] = nx.NXfield(np.asarray(q, float), units="1/Angstrom",
                                       long_name=f"Q {where} (1/A, no 2 pi)")
        data.attrs[f"{name}_indices"] = dim
        data.attrs[f"Q_{name}_indices"] = dim
    hkl = cut.hkl()
    for j, a in enumerate("hkl"):
        data[a] = nx.NXfield(hkl[..., j], units="rlu", long_name=a.upper())
        data.attrs[f"{a}_indices"] = list(range(n)) if n > 1 else 0
    if n == 2:
        data.attrs["angles"] = float(cut.angle)
    ent = nx.NXentry()
    ent["title"] = nx.NXfield(title)
    ent["cut"] = data
    ent.attrs["default"] = "cut"
    definition = nx.NXcollection()
    definition["origin"] = nx.NXfield(np.asarray(cut.origin, float), units="rlu")
    definition["directions"] = nx.NXfield(np.asarray(cut.directions, float), units="rlu")
    definition["width"] = nx.NXfield(float("nan") if cut.width is None else float(cut.width),
                                     units="1/Angstrom")
    definition["method"] = nx.NXfield(cut.method)
    definition["volume"] = nx.NXfield(str(Path(volume).resolve()))
    definition["unit_cell"] = nx.NXfield(np.asarray(cell.parameters, float))
    ent["definition"] = definition
    ent["process"] = provenance_group(provenance)
    root = nx.NXroot()
    root["entry"] = ent
    root.attrs["default"] = "entry"
    return write_nexus_atomically(root, path)


@dataclass
class CutRecord:
    """A cut file read back."""

    title: str
    origin: np.ndarray
    directions: np.ndarray
    coords: list          # r.l.u. along each direction
    q_coords: list        # 1/A along each direction
    lengths: list         # |B d| (1/A) of each direction
    intensity: np.ndarray
    errors: np.ndarray | None
    weight: np.ndarray
    angle: float | None
    method: str


def read_cut(path) -> CutRecord:
    with open_h5(path) as f:
        if "entry/cut/data" not in f or "entry/definition" not in f:
            raise FileFormatError(f"{path}: no /entry/cut/data: not a cut file (hklflow cut)")
        ent = f["entry"]
        d, defn = ent["cut"], ent["definition"]
        n = len(defn["directions"])
        names = AXIS_NAMES[:n]
        return CutRecord(text(ent["title"][()]), defn["origin"][()], defn["directions"][()],
                         [d[a][()] for a in names], [d[f"Q_{a}"][()] for a in names],
                         [float(d[a].attrs["scaling_factor"]) for a in names],
                         d["data"][()], d["data_errors"][()] if "data_errors" in d else None,
                         d["weight_sum"][()], float(d.attrs["angles"]) if n == 2 else None,
                         text(defn["method"][()]))
