"""What every hklflow file writer and reader shares: opening HDF5 files, writing atomically,
and the provenance record.

* HDF5 files are opened here alone (open_h5): file locking off (it fails on NFS; no two
  hklflow jobs ever write one file) and hdf5plugin's compression filters registered
  (detector data, volumes); a reader of raw data passes its own options through it (SWMR:
  hklflow.raw.images, hklflow.live.growing).
* Every output is written to a temporary file in its destination folder and renamed over
  the destination only when complete (:func:`hklflow.base.atomic.atomic_path`): a failed or
  killed write leaves nothing that looks complete.
* Every output carries its provenance record (:mod:`hklflow.files.provenance`) as JSON in an
  NXnote of an NXprocess group ``process``.
"""
from __future__ import annotations

import functools
import json
import os
from pathlib import Path
from typing import Callable

import h5py
import hdf5plugin  # noqa: F401  (registers bitshuffle/LZ4/... with HDF5)
import numpy as np

from .. import __version__
from ..base.atomic import atomic_path
from ..base.errors import FileFormatError
from ..model.geometry import DetectorGeometry
from ..model.sensor import Sensor


# --------------------------------------------------------------------------------------
# Opening
# --------------------------------------------------------------------------------------
def open_h5(path, mode: str = "r", **kwargs) -> h5py.File:
    """h5py.File with HDF5 file locking off and the compression filters registered (kwargs:
    h5py.File's, e.g. the chunk cache rdcc_nbytes)."""
    return h5py.File(os.fspath(path), mode, locking=False, **kwargs)


@functools.cache
def nexus():
    """nexusformat.nexus, imported where a file is written: a job that only reads (with
    h5py) starts without it."""
    import nexusformat.nexus as nx

    return nx


@functools.lru_cache(maxsize=1)
def _nxfile_class():
    nx = nexus()

    class _NXFileNoLocking(nx.NXFile):
        """nexusformat's NXFile, opening the HDF5 file with locking=False every time."""

        def __init__(self, name, mode="r", recursive=None, **kwargs):
            kwargs.setdefault("locking", False)
            super().__init__(name, mode, recursive, **kwargs)

        def open(self, **kwargs):
            kwargs.setdefault("locking", False)
            return super().open(**kwargs)

    return _NXFileNoLocking


# --------------------------------------------------------------------------------------
# Atomic writes
# --------------------------------------------------------------------------------------
def write_nexus_atomically(root, path, finish: Callable | None = None) -> Path:
    """Write the nexusformat tree `root` (an NXroot) to `path` atomically.

    finish(h5file), if given, runs on the open h5py.File after the tree is written (for what
    nexusformat cannot write: external links, virtual datasets)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        with _nxfile_class()(str(tmp), "w") as f:
            f.writefile(root)
            f.file.attrs["file_name"] = str(path.resolve())
            if finish is not None:
                finish(f.file)
    return path


# --------------------------------------------------------------------------------------
# Provenance
# --------------------------------------------------------------------------------------
def provenance_group(record: dict):
    """An NXprocess (nexusformat) holding program, version, date and the provenance record
    (provenance.provenance(...)) as JSON in an NXnote."""
    nx = nexus()

    proc = nx.NXprocess()
    proc["program"] = nx.NXfield(str(record.get("program", "hklflow")))
    proc["version"] = nx.NXfield(str(record.get("software", {}).get("hklflow") or __version__))
    proc["date"] = nx.NXfield(str(record.get("time", "")))
    proc["note"] = nx.NXnote(type="application/json", description="hklflow provenance record",
                             data=json.dumps(record, indent=1, sort_keys=True, default=str))
    return proc


def write_provenance_h5(group: h5py.Group, record: dict, name: str = "process") -> None:
    """The same NXprocess as provenance_group, written with h5py into an open group."""
    proc = group.create_group(name)
    proc.attrs["NX_class"] = "NXprocess"
    proc["program"] = str(record.get("program", "hklflow"))
    proc["version"] = str(record.get("software", {}).get("hklflow") or __version__)
    proc["date"] = str(record.get("time", ""))
    note = proc.create_group("note")
    note.attrs["NX_class"] = "NXnote"
    note["type"] = "application/json"
    note["description"] = "hklflow provenance record"
    note["data"] = json.dumps(record, indent=1, sort_keys=True, default=str)


def provenance_of(group: h5py.Group, path, name: str = "process") -> dict:
    """The provenance record in group/name ({} if there is none)."""
    try:
        data = group[f"{name}/note/data"][()]
    except KeyError:
        return {}
    try:
        return json.loads(text(data))
    except json.JSONDecodeError as exc:
        raise FileFormatError(f"{path}: {group.name}/{name}/note/data is not JSON: {exc}") from None


def read_provenance(path, entry: str | None = None) -> dict:
    """The provenance record of an hklflow NeXus file (of its default entry)."""
    with open_h5(path) as f:
        return provenance_of(entry_group(f, path, entry), path)


# --------------------------------------------------------------------------------------
# Reading helpers
# --------------------------------------------------------------------------------------
def text(value) -> str:
    """A stored string (bytes, 0-d array or str) as str."""
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, np.ndarray) and value.shape == ():
        return text(value[()])
    return str(value)


def strings(values) -> list[str]:
    return [text(v) for v in np.atleast_1d(values)]


def string_field(values):
    """A nexusformat field of variable-length strings (a list)."""
    nx = nexus()

    return nx.NXfield([str(v) for v in values], dtype=h5py.string_dtype())


def text_field(value):
    """A scalar string field kept exactly (nexusformat strips plain str values)."""
    nx = nexus()

    return nx.NXfield(str(value), dtype=h5py.string_dtype())


def entry_group(f: h5py.File, path, entry: str | None = None) -> h5py.Group:
    """The named entry, else the file's @default entry, else its only NXentry."""
    if entry is None:
        entry = text(f.attrs.get("default", "")) or None
    if entry is None:
        entries = [k for k, v in f.items() if text(v.attrs.get("NX_class", "")) == "NXentry"]
        if len(entries) != 1:
            raise FileFormatError(f"{path}: expected one NXentry, found {entries}; name one")
        entry = entries[0]
    if entry not in f:
        raise FileFormatError(f"{path}: no entry /{entry}")
    return f[entry]


def get(group: h5py.Group, name: str, path):
    """group[name][()], or FileFormatError naming the file and the missing path."""
    try:
        return group[name][()]
    except KeyError:
        raise FileFormatError(f"{path}: {group.name}/{name} is missing") from None


def group(parent: h5py.Group, name: str, path) -> h5py.Group:
    try:
        return parent[name]
    except KeyError:
        raise FileFormatError(f"{path}: {parent.name}/{name} is missing") from None


# --------------------------------------------------------------------------------------
# The detector group (scan, calibration and orientation files)
# --------------------------------------------------------------------------------------
PONI_FIELDS = ("dist", "poni1", "poni2", "rot1", "rot2", "rot3")


def detector_group(geometry):
    """NXdetector of a geometry.DetectorGeometry: description (pyFAI name), distance and
    pixel sizes (mm), beam_center_y/x (where the direct beam hits, continuous pixels),
    dist/poni1/poni2 (m), rot1..3 (rad), shape, orientation (pyFAI's 1..4, as pyFAI's own
    NeXus detector group writes it); with a sensor, NXmx's sensor_material (pyFAI's name)
    and sensor_thickness (m), which NeXpy and NXRefine show and read_detector_group reads
    back (the geometry's pixels look where its parallax puts them)."""
    nx = nexus()

    p1, p2 = geometry.pixel_size
    bc = geometry.beam_centre()
    det = nx.NXdetector()
    det["description"] = nx.NXfield(geometry.detector)
    det["distance"] = nx.NXfield(geometry.dist * 1e3, units="mm")
    det["beam_center_x"] = nx.NXfield(bc["direct_beam_col"], units="pixel")
    det["beam_center_y"] = nx.NXfield(bc["direct_beam_row"], units="pixel")
    det["x_pixel_size"] = nx.NXfield(p2 * 1e3, units="mm")
    det["y_pixel_size"] = nx.NXfield(p1 * 1e3, units="mm")
    det["pixel_size"] = nx.NXfield(p1 * 1e3, units="mm")
    for k in PONI_FIELDS:
        det[k] = nx.NXfield(float(getattr(geometry, k)), units="rad" if k.startswith("rot") else "m")
    det["shape"] = nx.NXfield(np.asarray(geometry.shape, dtype=np.int64))
    det["orientation"] = nx.NXfield(np.int32(geometry.orientation), attrs={
        "value": ORIENTATION_NAMES[geometry.orientation],
        "doc": "pyFAI detector orientation 1..4: where pixel (0, 0) lies (hklflow "
               "docs/conventions.md)"})
    if geometry.sensor is not None:
        det["sensor_material"] = nx.NXfield(geometry.sensor.material)
        det["sensor_thickness"] = nx.NXfield(geometry.sensor.thickness, units="m", attrs={
            "doc": "the geometry's pixels are corrected for this sensor's parallax (hklflow "
                   "docs/conventions.md)"})
    return det


# pyFAI's names of its detector orientations (pyFAI.detectors.orientation.Orientation)
ORIENTATION_NAMES = {1: "TopLeft", 2: "TopRight", 3: "BottomRight", 4: "BottomLeft"}


def read_detector_group(det: h5py.Group, wavelength: float, path):
    """The DetectorGeometry of a group written by detector_group (and a wavelength); a group
    without an orientation (written before hklflow recorded it) has pyFAI's default 3, one
    without sensor_material and sensor_thickness no sensor."""
    orientation = int(det["orientation"][()]) if "orientation" in det else 3
    try:
        sensor = None
        if "sensor_material" in det and "sensor_thickness" in det:
            sensor = Sensor(text(det["sensor_material"][()]),
                            float(det["sensor_thickness"][()]))
        return DetectorGeometry(text(get(det, "description", path)),
                                *(float(get(det, k, path)) for k in PONI_FIELDS),
                                wavelength=float(wavelength), orientation=orientation,
                                sensor=sensor)
    except ValueError as exc:  # an orientation pyFAI does not know, a sensor hklflow does not
        raise FileFormatError(f"{path}: {det.name}: {exc}") from None


def read_collection(grp: h5py.Group) -> dict:
    """The datasets of a group (and of its sub-groups, as nested dicts) as values."""
    return {k: read_collection(v) if isinstance(v, h5py.Group) else v[()] for k, v in grp.items()}
