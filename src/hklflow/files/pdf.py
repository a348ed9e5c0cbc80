"""PDF files: the total PDF (total_pdf.nxs) and the 3D-DeltaPDF (pdf.nxs, transform_pdf.nxs)
of a sample at one temperature, in NXRefine's layout so that NeXpy and NXRefine open them
as their own::

  /entry                  NXentry, @default = pdf; title
     pdf                  NXdata, @signal = pdf, @axes = [z, y, x], @angles = (alpha, beta, gamma)
        pdf               float32 [z, y, x]: the PDF (arbitrary units; NXRefine's normalisation)
        pdf_errors        float32 [z, y, x]: its sigma (hklflow.algorithms.pdf.sigma), where the volume
                          has a variance
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

import contextlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import hdf5plugin
import numpy as np

from ..base.atomic import atomic_path
from ..base.errors import FileFormatError
from ..codec import ChunkWriter as _ChunkWriter
from ..model.crystal import UnitCell
from ..model.grid import Grid
from ..model.nxrefine import transform_angles
from .h5 import open_h5, text, write_provenance_h5
from .volume import reciprocal_lengths, write_sample_group

COMPRESSION = dict(hdf5plugin.Bitshuffle(cname="lz4"))


@dataclass
class PDF:
    values: np.ndarray  # float32 [z, y, x] (or a SpectrumPDF or CosinePDF, computed as read)
    x: np.ndarray  # lattice units along a
    y: np.ndarray
    z: np.ndarray
    cell: UnitCell
    kind: str = "pdf"  # pdf (DeltaPDF) or total_pdf
    title: str = ""
    notes: dict = field(default_factory=dict)
    errors: object = None  # sigma of values, like them (hklflow.algorithms.pdf.sigma); None: unknown

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


WRITE_PLANES = 8  # planes per write: the chunks' height, so every write fills whole chunks


def _write_by_planes(dataset, values, nan_at=None) -> None:
    """dataset[...] = values (an array or a computed PDF, read WRITE_PLANES planes at a time:
    never a whole copy), with the voxels at the sorted flat indices nan_at set to NaN.  The
    chunks are compressed here and stored raw (a chunk of the dataset's fill value alone is
    not stored: HDF5 reads it back as that value) where bitshuffle's library is found,
    which costs less than HDF5's filter (bench/full_rotation.py measures the PDF steps)."""
    plane = int(np.prod(dataset.shape[1:]))
    raw = _ChunkWriter(dataset.chunks)
    fill = np.float32(dataset.fillvalue)
    for z0 in range(0, dataset.shape[0], WRITE_PLANES):
        z1 = min(z0 + WRITE_PLANES, dataset.shape[0])
        slab = np.asarray(values[z0:z1], dtype=np.float32)  # (an array's planes: a view)
        if nan_at is not None:
            a, b = np.searchsorted(nan_at, (z0 * plane, z1 * plane))
            slab = slab.copy()
            slab.reshape(-1)[nan_at[a:b] - z0 * plane] = np.nan
        if raw.available:
            raw.write(dataset, z0, slab, fill)
        else:  # HDF5's filter
            dataset[z0:z1] = slab


def _write_twins_by_planes(first, second, values, nan_at) -> None:
    """_write_by_planes(first, values) and _write_by_planes(second, values, nan_at) in one
    pass over values: a chunk without a voxel of nan_at is compressed once and stored in
    both (most of the chunks of a delta_pdf's filled and punched volumes have no hole);
    each dataset alone where bitshuffle's library is not found."""
    raw = _ChunkWriter(first.chunks)
    fill = np.float32(first.fillvalue)
    if (not raw.available or second.chunks != first.chunks or second.shape != first.shape
            or not (np.isnan(fill) and np.isnan(second.fillvalue))):
        _write_by_planes(first, values)
        _write_by_planes(second, values, nan_at)
        return
    plane = int(np.prod(first.shape[1:]))
    nan_at = np.asarray(nan_at, np.int64)
    for z0 in range(0, first.shape[0], WRITE_PLANES):
        z1 = min(z0 + WRITE_PLANES, first.shape[0])
        slab = np.asarray(values[z0:z1], dtype=np.float32)  # (an array's planes: a view)
        a, b = np.searchsorted(nan_at, (z0 * plane, z1 * plane))
        raw.write_twins(first, second, z0, slab, fill, nan_at[a:b] - z0 * plane)


def _volume_group(entry, name, shape, grid: Grid, cell: UnitCell, long_name: str):
    """An NXdata of a volume on the input's (H, K, L) grid, as NeXpy plots transforms, with
    its dataset `data` (float32, NaN its fill value) made, not written: returned."""
    g = entry.create_group(name)
    g.attrs["NX_class"] = "NXdata"
    g.attrs["signal"] = "data"
    g.attrs["axes"] = np.array(["Ql", "Qk", "Qh"], dtype=h5py.string_dtype())
    g.attrs["angles"] = np.asarray(transform_angles(cell), np.float64)
    for i, ax in enumerate(("Ql", "Qk", "Qh")):
        g.attrs[f"{ax}_indices"] = i
    chunks = tuple(min(n, c) for n, c in zip(shape, (8, 64, 64)))
    # NaN where unmeasured: NaN is the fill value, so chunks with nothing measured are not stored
    d = g.create_dataset("data", shape=shape, dtype=np.float32, chunks=chunks,
                         fillvalue=np.nan, **COMPRESSION)
    d.attrs["long_name"] = long_name
    for a, ax, s in zip("hkl", grid.axes, reciprocal_lengths(cell)):
        q = g.create_dataset(f"Q{a}", data=ax.values)
        q.attrs["units"] = "rlu"
        q.attrs["long_name"] = f"{a.upper()} (r.l.u.)"
        q.attrs["step"] = ax.step
        q.attrs["scaling_factor"] = s
    return d


class PDFWriter:
    """A PDF file written in stages, atomically (a temporary file, renamed over the path
    when the `with` block ends without an exception, removed otherwise)::

        with PDFWriter(path) as w:
            planes = w.write_volumes(grid, cell, filled, punched_at)  # 3D-DeltaPDF only
            ...  # (the filled volume dropped; its planes read back through `planes`)
            w.write_pdf(pdf, sample, provenance, positions=..., outcome=..., outcome_names=...)
    """

    def __init__(self, path):
        self.path = Path(path)
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> "PDFWriter":
        with self._stack as stack:
            tmp = stack.enter_context(atomic_path(self.path))
            self.file = stack.enter_context(open_h5(tmp, "w"))
            self.file.attrs["default"] = "entry"
            self.file.attrs["file_name"] = str(self.path.resolve())
            self.entry = self.file.create_group("entry")
            self.entry.attrs["NX_class"] = "NXentry"
            self.entry.attrs["default"] = "pdf"
            self._stack = stack.pop_all()
        return self

    def __exit__(self, *exc) -> bool:
        return self._stack.__exit__(*exc)

    def write_volumes(self, grid: Grid, cell: UnitCell, filled, punched_at):
        """The 3D-DeltaPDF's filled volume and its punched one (filled with the voxels at
        the sorted flat indices punched_at NaN: hklflow.algorithms.pdf.fill.FillResult's region);
        returns a function (l0, l1) -> planes [l0, l1) of the filled volume, read back from
        the file."""
        dataset = _volume_group(self.entry, "filled_data", filled.shape, grid, cell,
                                "intensity, reflections punched and filled")
        punched = _volume_group(self.entry, "punched_data", filled.shape, grid, cell,
                                "intensity, reflections punched (NaN)")
        _write_twins_by_planes(dataset, punched, filled, punched_at)
        return lambda l0, l1: dataset[l0:l1]

    def write_pdf(self, pdf: PDF, sample: dict, provenance: dict, *, positions=None,
                  outcome=None, outcome_names=()) -> None:
        """The PDF, the punched positions and their outcomes, sample, notes, provenance."""
        ent = self.entry
        ent["title"] = pdf.title
        g = ent.create_group("pdf")
        g.attrs["NX_class"] = "NXdata"
        g.attrs["signal"] = "pdf"
        g.attrs["axes"] = np.array(["z", "y", "x"], dtype=h5py.string_dtype())
        for i, ax in enumerate(("z", "y", "x")):
            g.attrs[f"{ax}_indices"] = i
        g.attrs["angles"] = np.array(pdf.cell.parameters[3:], np.float64)
        chunks = tuple(min(n, c) for n, c in zip(pdf.values.shape, (8, 64, 64)))
        d = g.create_dataset("pdf", shape=pdf.values.shape, dtype=np.float32, chunks=chunks,
                             **COMPRESSION)
        _write_by_planes(d, pdf.values)
        d.attrs["long_name"] = "3D-DeltaPDF" if pdf.kind == "pdf" else "total PDF"
        if pdf.errors is not None:  # NeXpy pairs <signal>_errors with the signal
            e = g.create_dataset("pdf_errors", shape=pdf.values.shape, dtype=np.float32,
                                 chunks=chunks, **COMPRESSION)
            _write_by_planes(e, pdf.errors)
            e.attrs["long_name"] = "sigma of " + d.attrs["long_name"]
        a, b, c = pdf.cell.parameters[:3]
        _axis(g, "x", pdf.x, a, "x (a)")
        _axis(g, "y", pdf.y, b, "y (b)")
        _axis(g, "z", pdf.z, c, "z (c)")
        if positions is not None:
            r = ent.create_group("reflections")
            r.attrs["NX_class"] = "NXreflections"
            pos = np.asarray(positions, np.float64).reshape(-1, 3)
            for i, name in enumerate("hkl"):
                r[name] = pos[:, i]
            r["outcome"] = np.asarray(outcome, np.int8)
            r["outcome"].attrs["outcomes"] = np.array(list(outcome_names),
                                                      dtype=h5py.string_dtype())
        write_sample_group(ent, sample, pdf.cell)
        note = ent.create_group("notes")
        note.attrs["NX_class"] = "NXnote"
        note["type"] = "application/json"
        note["data"] = json.dumps(pdf.notes, sort_keys=True, default=str)
        write_provenance_h5(ent, provenance)


def write_pdf(path, pdf: PDF, sample: dict, provenance: dict, *, grid: Grid | None = None,
              filled=None, punched_at=None, positions=None, outcome=None,
              outcome_names=()) -> Path:
    """Write a PDF file atomically in one go (PDFWriter): with `filled`, the 3D-DeltaPDF's
    filled and punched volumes too."""
    with PDFWriter(path) as w:
        if filled is not None:
            w.write_volumes(grid, pdf.cell, filled, punched_at)
        w.write_pdf(pdf, sample, provenance, positions=positions, outcome=outcome,
                    outcome_names=outcome_names)
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
        errors = ent["pdf"]["pdf_errors"][()] if "pdf_errors" in ent["pdf"] else None
        notes = json.loads(text(ent["notes/data"][()])) if "notes" in ent else {}
        title = text(ent["title"][()]) if "title" in ent else ""
        kind = "pdf" if "filled_data" in ent else "total_pdf"
    return PDF(values, coords["x"], coords["y"], coords["z"], cell, kind, title, notes, errors)


def read_pdf_notes(path) -> dict:
    """The notes of a PDF file, without reading its values."""
    with open_h5(path) as f:
        ent = f["entry"]
        return json.loads(text(ent["notes/data"][()])) if "notes" in ent else {}


def read_pdf_plane(path, axis: str, value: float):
    """(cell, PDF.plane(axis, value)) of a PDF file, reading that plane alone: a series of
    many temperatures holds one plane of each, not each whole PDF."""
    with open_h5(path) as f:
        dataset, coords, cell = _pdf_dataset(f, path)
        return cell, _plane(dataset, coords, axis, float(value))
