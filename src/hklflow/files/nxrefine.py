"""The NXRefine wrapper file of one sample at one temperature (rule nxrefine_wrapper):
``results/SAMPLE/nxrefine/SAMPLE_TLABEL.nxs``, NXRefine's "scan file" in its own field
names, so that NeXpy and NXRefine (nexpy/nxrefine; ``NXRefine(root['f1'])``) open hklflow's
results as theirs.  It copies only small things (parameters, peaks, axes); every array is
an HDF5 external link, relative to this file's folder::

  /                              @default = entry
  /entry                         NXentry, @default = transform (else the first kind); title
     sample                      NXsample: name, temperature_label, temperature (K),
                                 unitcell_a..gamma, space_group, laue_group,
                                 unit_cell_group, lattice_centring (hklflow.nxrefine.
                                 sample_fields; the orientation's refined cell)
     transform, masked_transform NXdata: data -> KIND.nxs (merged) /entry/KIND/data, axes
                                 [Ql, Qk, Qh] (copied), @angles (gamma*, beta*, alpha*)
     symm_transform,             the same for KIND_symmetrized.nxs
     symm_masked_transform
     total_pdf, pdf, ...         -> the PDF file's /entry/pdf (a group link), when given
     notes                       NXnote (JSON): what is linked, what could not be
     process                     NXprocess: provenance
  /f1, /f2, ...                  NXentry per scan entry (its name)
     sample                      link to /entry/sample (as NXRefine links them)
     data                        NXdata: data -> the raw frames (one HDF5 stack: its file;
                                 several: the scan file's virtual dataset; frame files such
                                 as CBF or TIFF cannot be linked: no data), frame_number,
                                 y_pixel, x_pixel, @axes [frame_number, y_pixel, x_pixel]
     instrument/monochromator    wavelength (angstrom)
     instrument/detector         distance (mm), pixel_size (mm), shape, beam_center_x/y,
                                 yaw, pitch, roll (deg), detector_orientation,
                                 orientation_matrix (NXRefine's Umat)
     instrument/goniometer       phi (start, @step), chi, omega, theta (deg)
     peaks                       NXreflections: x, y, z, intensity, sigx, sigy, sigz,
                                 polar_angle (2 theta, deg)
     transform, masked_transform NXdata as NXRefine's per-rotation transforms: data ->
                                 the entry's KIND.nxs signal_sum (NXRefine's v), weights ->
                                 its weight_sum (n), axes copied, @angles

Pixel and frame coordinates (peaks, beam centre) are hklflow's continuous ones (centre of
pixel or frame i at i + 0.5), with which NXRefine maps every peak to hklflow's (h, k, l)
(hklflow.nxrefine).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from ..atomic import atomic_path
from .h5 import open_h5, write_provenance_h5
from .volume import read_grid_of

AXES = ("Ql", "Qk", "Qh")  # NXRefine's order: L slowest
_UNITS = {"distance": "mm", "pixel_size": "mm", "beam_center_x": "pixel",
          "beam_center_y": "pixel", "yaw": "degree", "pitch": "degree", "roll": "degree",
          "wavelength": "angstrom", "phi": "degree", "chi": "degree", "omega": "degree",
          "theta": "degree", "temperature": "K", "polar_angle": "degree", "x": "pixel",
          "y": "pixel", "z": "frame", "sigx": "pixel", "sigy": "pixel", "sigz": "frame"}


@dataclass(frozen=True)
class WrapperEntry:
    """One scan entry as the wrapper shows it."""

    name: str  # f1, f2, ...
    parameters: dict  # hklflow.nxrefine.entry_parameters
    peaks: dict  # x, y, z, intensity, sigx, sigy, sigz, polar_angle (NXRefine's names)
    nframes: int
    frame_shape: tuple  # (rows, cols)
    raw: tuple | None  # (file, dataset) of the raw frames to link, or None (cannot)
    volumes: dict = field(default_factory=dict)  # kind -> the entry's volume file


def _relative(target, start: Path) -> str:
    try:
        return os.path.relpath(Path(target).resolve(), start)
    except ValueError:  # another drive (Windows)
        return str(Path(target).resolve())


def _field(grp, name, value, **attrs):
    grp[name] = value
    units = _UNITS.get(name)
    if units:
        grp[name].attrs["units"] = units
    for k, v in attrs.items():
        grp[name].attrs[k] = v


def _nxgroup(parent, name, nxclass):
    g = parent.create_group(name)
    g.attrs["NX_class"] = nxclass
    return g


def _hkl_data(parent, name, volume, links: dict, angles, base: Path):
    """An NXdata on the (H, K, L) grid of the volume file `volume`: its axes copied (with
    scaling_factor, long_name), the fields of `links` (name -> path in the volume file)
    external links."""
    _, kind = read_grid_of(volume)  # FileFormatError if it is no volume
    with open_h5(volume) as f:
        axes = {a: (f["entry"][kind][a][()], dict(f["entry"][kind][a].attrs)) for a in AXES}
    d = _nxgroup(parent, name, "NXdata")
    rel = _relative(volume, base)
    for fname, target in links.items():
        d[fname] = h5py.ExternalLink(rel, target.format(kind=kind))
    for a, (values, attrs) in axes.items():
        d[a] = values
        for k, v in attrs.items():
            d[a].attrs[k] = v
    d.attrs["signal"] = "data"
    d.attrs["axes"] = np.array(AXES, dtype=h5py.string_dtype())
    for i, a in enumerate(AXES):
        d.attrs[f"{a}_indices"] = i
    d.attrs["angles"] = np.asarray(angles, dtype=float)
    return d


def _sample(ent, sample: dict):
    smp = _nxgroup(ent, "sample", "NXsample")
    for k, v in sample.items():
        _field(smp, k, v)
        if k.startswith("unitcell_"):
            smp[k].attrs["units"] = "degree" if k[9:] in ("alpha", "beta", "gamma") else "angstrom"
    smp.attrs["target"] = smp.name  # nexusformat's mark of a linked group
    return smp


def _scan_entry(f, e: WrapperEntry, smp, angles, base: Path) -> None:
    ent = _nxgroup(f, e.name, "NXentry")
    ent["sample"] = smp  # a hard link: NXRefine's per-rotation sample groups are the entry's
    p = e.parameters
    data = _nxgroup(ent, "data", "NXdata")
    rows, cols = e.frame_shape
    data["frame_number"] = np.arange(e.nframes, dtype=np.int64)
    data["y_pixel"] = np.arange(rows, dtype=np.int64)
    data["x_pixel"] = np.arange(cols, dtype=np.int64)
    data.attrs["axes"] = np.array(["frame_number", "y_pixel", "x_pixel"], dtype=h5py.string_dtype())
    if e.raw is not None:
        data["data"] = h5py.ExternalLink(_relative(e.raw[0], base), e.raw[1])
        data.attrs["signal"] = "data"
    inst = _nxgroup(ent, "instrument", "NXinstrument")
    _field(_nxgroup(inst, "monochromator", "NXmonochromator"), "wavelength", p["wavelength"])
    det = _nxgroup(inst, "detector", "NXdetector")
    for k in ("distance", "pixel_size", "yaw", "pitch", "roll"):
        _field(det, k, float(p[k]))
    _field(det, "beam_center_x", float(p["xc"]))
    _field(det, "beam_center_y", float(p["yc"]))
    _field(det, "shape", np.asarray(p["shape"], dtype=np.int64))
    _field(det, "detector_orientation", p["detector_orientation"])
    _field(det, "orientation_matrix", np.asarray(p["orientation_matrix"], dtype=float))
    gon = _nxgroup(inst, "goniometer", "NXgoniometer")
    _field(gon, "phi", float(p["phi"]), step=float(p["phi_step"]))
    for k in ("chi", "omega", "theta"):
        _field(gon, k, float(p[k]))
    pk = _nxgroup(ent, "peaks", "NXreflections")
    for k, v in e.peaks.items():
        _field(pk, k, np.asarray(v, dtype=float))
    for kind, vol in e.volumes.items():
        _hkl_data(ent, kind, vol, {"data": "/entry/{kind}/signal_sum",
                                   "weights": "/entry/{kind}/weight_sum"}, angles, base)
    ent.attrs["default"] = "data" if e.raw is not None else next(iter(e.volumes), "data")


def write_nxrefine_wrapper(path, *, title: str, sample: dict, angles, entries, merged: dict,
                           symmetrized: dict, pdf: dict, notes: dict, provenance: dict) -> Path:
    """Write the wrapper (layout in the module docstring), atomically.  merged and
    symmetrized: kind -> volume file; pdf: NXRefine's name (total_pdf, pdf, ...) -> a PDF
    file whose /entry/pdf is linked; angles: (gamma*, beta*, alpha*) of the cell."""
    path = Path(path)
    base = path.parent.resolve()
    with atomic_path(path) as tmp:
        with open_h5(tmp, "w") as f:
            f.attrs["NX_class"] = "NXroot"
            f.attrs["default"] = "entry"
            f.attrs["file_name"] = str(path.resolve())
            ent = _nxgroup(f, "entry", "NXentry")
            ent["title"] = title
            smp = _sample(ent, sample)
            for prefix, volumes in (("", merged), ("symm_", symmetrized)):
                for kind, vol in volumes.items():
                    d = _hkl_data(ent, prefix + kind, vol, {"data": "/entry/{kind}/data"},
                                  angles, base)
                    d["title"] = f"{title} {prefix}{kind}"
            for name, pdf_file in pdf.items():
                ent[name] = h5py.ExternalLink(_relative(pdf_file, base), "/entry/pdf")
            ent.attrs["default"] = "transform" if "transform" in merged else next(iter(merged))
            note = _nxgroup(ent, "notes", "NXnote")
            note["type"] = "application/json"
            note["data"] = json.dumps(notes, sort_keys=True, default=str)
            write_provenance_h5(ent, provenance)
            for e in entries:
                _scan_entry(f, e, smp, angles, base)
    return path
