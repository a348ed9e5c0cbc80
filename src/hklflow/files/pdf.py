"""PDF files: the total PDF (total_pdf.nxs) and the 3D-DeltaPDF (pdf.nxs, transform_pdf.nxs)
of a sample at one temperature, in NXRefine's layout so that NeXpy and NXRefine open them
as their own::

  /entry                  NXentry, @default = pdf; title
     pdf                  NXdata, @signal = pdf, @axes = [z, y, x], @angles = (alpha, beta, gamma)
        pdf               float32 [z, y, x]: the PDF (arbitrary units; NXRefine's normalisation)
        x, y, z           float64 lattice coordinates (fractions of a, b, c), @scaling_factor =
                          a, b, c (Angstrom) so that NeXpy draws them to scale
     filled_data          NXdata (DeltaPDF only): the volume with every hole filled, [l, k, h]
                          on the grid of the input volume (NaN where unmeasured)
     punched_data         NXdata (DeltaPDF only): the volume with the holes NaN
     reflections          NXreflections (DeltaPDF only): h, k, l of every punched position
                          and its outcome (an index into @outcomes)
     sample               NXsample: name, space_group, unit_cell, NXRefine's unitcell_* fields,
                          laue_group, temperature (K)
     notes                NXnote (JSON): taper, hole radius, fill, outcome counts, input
     process              NXprocess: provenance
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import hdf5plugin
import numpy as np

from ..crystal import UnitCell
from ..errors import FileFormatError
from ..grid import Grid
from ..nxrefine import transform_angles
from .h5 import atomic_path, open_h5, text, write_provenance_h5
from .volume import reciprocal_lengths, write_sample_group

COMPRESSION = dict(hdf5plugin.Bitshuffle(cname="lz4"))


@dataclass
class PDF:
    values: np.ndarray  # float32 [z, y, x]
    x: np.ndarray  # lattice units along a
    y: np.ndarray
    z: np.ndarray
    cell: UnitCell
    kind: str = "pdf"  # pdf (DeltaPDF) or total_pdf
    title: str = ""
    notes: dict = field(default_factory=dict)

    def plane(self, axis: str, value: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
        """The plane of the PDF nearest `axis` = value (axis x, y or z): (array [v, u] with u,
        v the other two axes in order x, y, z; u values; v values; the value of the plane)."""
        return _plane(self.values, {"x": self.x, "y": self.y, "z": self.z}, axis, value)


def _plane(values, coords: dict, axis: str, value: float):
    """PDF.plane of values (an array or an h5py dataset [z, y, x]: only the plane is read)."""
    if axis not in coords:
        raise ValueError(f"PDF slice axis must be x, y or z, got {axis!r}")
    coord = coords[axis]
    i = int(np.argmin(np.abs(coord - value)))
    if abs(coord[i] - value) > 0.5 * abs(coord[1] - coord[0]) + 1e-9:
        raise ValueError(f"{axis} = {value} is outside the PDF ({coord[0]:g} .. {coord[-1]:g})")
    x, y, z = coords["x"], coords["y"], coords["z"]
    if axis == "z":
        return values[i], x, y, float(coord[i])
    if axis == "y":
        return values[:, i, :], x, z, float(coord[i])
    return values[:, :, i], y, z, float(coord[i])


def _axis(group, name, values, scale, label):
    d = group.create_dataset(name, data=np.asarray(values, np.float64))
    d.attrs["units"] = "lattice units"
    d.attrs["long_name"] = label
    d.attrs["scaling_factor"] = float(scale)


def _volume_group(entry, name, values, grid: Grid, cell: UnitCell, long_name: str):
    """An NXdata of a volume on the input's (H, K, L) grid, as NeXpy plots transforms."""
    g = entry.create_group(name)
    g.attrs["NX_class"] = "NXdata"
    g.attrs["signal"] = "data"
    g.attrs["axes"] = np.array(["Ql", "Qk", "Qh"], dtype=h5py.string_dtype())
    g.attrs["angles"] = np.asarray(transform_angles(cell), np.float64)
    for i, ax in enumerate(("Ql", "Qk", "Qh")):
        g.attrs[f"{ax}_indices"] = i
    chunks = tuple(min(n, c) for n, c in zip(values.shape, (8, 64, 64)))
    d = g.create_dataset("data", data=np.asarray(values, np.float32), chunks=chunks, **COMPRESSION)
    d.attrs["long_name"] = long_name
    for a, ax, s in zip("hkl", grid.axes, reciprocal_lengths(cell)):
        q = g.create_dataset(f"Q{a}", data=ax.values)
        q.attrs["units"] = "rlu"
        q.attrs["long_name"] = f"{a.upper()} (r.l.u.)"
        q.attrs["step"] = ax.step
        q.attrs["scaling_factor"] = s


def write_pdf(path, pdf: PDF, sample: dict, provenance: dict, *, grid: Grid | None = None,
              filled=None, punched=None, positions=None, outcome=None, outcome_names=()) -> Path:
    """Write a PDF file atomically (a temporary file renamed when complete)."""
    with atomic_path(path) as tmp, open_h5(tmp, "w") as f:
        f.attrs["default"] = "entry"
        f.attrs["file_name"] = str(Path(path).resolve())
        ent = f.create_group("entry")
        ent.attrs["NX_class"] = "NXentry"
        ent.attrs["default"] = "pdf"
        ent["title"] = pdf.title
        g = ent.create_group("pdf")
        g.attrs["NX_class"] = "NXdata"
        g.attrs["signal"] = "pdf"
        g.attrs["axes"] = np.array(["z", "y", "x"], dtype=h5py.string_dtype())
        for i, ax in enumerate(("z", "y", "x")):
            g.attrs[f"{ax}_indices"] = i
        g.attrs["angles"] = np.array(pdf.cell.parameters[3:], np.float64)
        chunks = tuple(min(n, c) for n, c in zip(pdf.values.shape, (8, 64, 64)))
        d = g.create_dataset("pdf", data=np.asarray(pdf.values, np.float32), chunks=chunks,
                             **COMPRESSION)
        d.attrs["long_name"] = "3D-DeltaPDF" if pdf.kind == "pdf" else "total PDF"
        a, b, c = pdf.cell.parameters[:3]
        _axis(g, "x", pdf.x, a, "x (a)")
        _axis(g, "y", pdf.y, b, "y (b)")
        _axis(g, "z", pdf.z, c, "z (c)")
        if filled is not None:
            _volume_group(ent, "filled_data", filled, grid, pdf.cell,
                          "intensity, reflections punched and filled")
            _volume_group(ent, "punched_data", punched, grid, pdf.cell,
                          "intensity, reflections punched (NaN)")
        if positions is not None:
            r = ent.create_group("reflections")
            r.attrs["NX_class"] = "NXreflections"
            pos = np.asarray(positions, np.float64).reshape(-1, 3)
            for i, name in enumerate("hkl"):
                r[name] = pos[:, i]
            r["outcome"] = np.asarray(outcome, np.int8)
            r["outcome"].attrs["outcomes"] = np.array(list(outcome_names), dtype=h5py.string_dtype())
        write_sample_group(ent, sample, pdf.cell)
        note = ent.create_group("notes")
        note.attrs["NX_class"] = "NXnote"
        note["type"] = "application/json"
        note["data"] = json.dumps(pdf.notes, sort_keys=True, default=str)
        write_provenance_h5(ent, provenance)
    return Path(path)


def _pdf_dataset(f, path):
    """(the PDF dataset, unread; its x, y, z coordinates; its cell) of an open PDF file."""
    try:
        g = f["entry"]["pdf"]
        coords = {n: g[n][()] for n in "xyz"}
        a, b, c = (float(g[n].attrs["scaling_factor"]) for n in "xyz")
        angles = [float(v) for v in g.attrs["angles"]]
        dataset = g["pdf"]
    except KeyError as exc:
        raise FileFormatError(f"{path}: not a PDF file of hklflow (no {exc})") from None
    return dataset, coords, UnitCell(a, b, c, *angles)


def read_pdf(path) -> PDF:
    """The PDF of a file written by write_pdf."""
    with open_h5(path) as f:
        dataset, coords, cell = _pdf_dataset(f, path)
        ent = f["entry"]
        values = dataset[()]
        notes = json.loads(text(ent["notes/data"][()])) if "notes" in ent else {}
        title = text(ent["title"][()]) if "title" in ent else ""
        kind = "pdf" if "filled_data" in ent else "total_pdf"
    return PDF(values, coords["x"], coords["y"], coords["z"], cell, kind, title, notes)


def read_pdf_plane(path, axis: str, value: float):
    """(cell, PDF.plane(axis, value)) of a PDF file, reading that plane alone: a series of
    many temperatures holds one plane of each, not each whole PDF."""
    with open_h5(path) as f:
        dataset, coords, cell = _pdf_dataset(f, path)
        return cell, _plane(dataset, coords, axis, float(value))
