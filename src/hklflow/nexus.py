"""All NeXus reading and writing of hklflow; steps never hand-build HDF5 paths.

Trees are built with nexusformat (the classes NeXpy/NXRefine users know) and written to a
temporary file in the destination folder that replaces the destination only when complete
(:func:`save_atomically`): a failed write leaves nothing that looks complete.  HDF5 file
locking is off for every file hklflow opens (it fails on NFS).  h5py is used where
nexusformat cannot do it: the external link / virtual dataset of the raw frames, and
reading records back without opening the raw files.

Scan file (one per scan entry, ``results/SAMPLE/TLABEL/ENTRY/scan.nxs``), written by
:func:`write_scan_file`, read by :func:`read_scan_file`::

  /                                   NXroot, @default = ENTRY
  /ENTRY                              NXentry (named after the scan entry: f1, f2, ...)
     title                            "SAMPLE/TLABEL/ENTRY"
     @hklflow_scan_file_version       1
     instrument                       NXinstrument
        detector                      NXdetector
           description                pyFAI detector name
           distance                   PONI distance (mm)
           beam_center_y, beam_center_x   where the direct beam hits, in continuous pixel
                                      coordinates (row, col; pixel i spans [i, i+1)), @units pixel
           y_pixel_size, x_pixel_size, pixel_size   (mm)
           dist, poni1, poni2 (m), rot1, rot2, rot3 (rad)   the full pyFAI geometry
           shape                      [rows, cols]
           frame_start                scan angle at the start of frame 0 (deg)
           translation                [d_dist, d_poni1, d_poni2] (m): the entry's detector
                                      shift, already applied to dist/poni1/poni2
           calibration_name, calibration_version, calibration_file,
           calibration_digest, calibration_poni (the PONI file's text)
        monochromator                 NXmonochromator: wavelength (angstrom)
        goniometer                    NXgoniometer (NXcollection where nexusformat lacks it)
           scan_axis [3] (lab vector), scan_sense (+1/-1), phi_start, phi_step (deg)
           offset_axes                offset axis names, outermost first
           <offset name>              its angle (deg), @vector (lab axis),
                                      @transformation_type = rotation
     sample                           NXsample
        name, temperature (K), space_group, unit_cell [6] (approximate, from the config),
        unitcell_a, unitcell_b, unitcell_c, unitcell_alpha, unitcell_beta, unitcell_gamma
     data                             NXdata, @signal data, @axes [frame_number, y_pixel, x_pixel]
        data                          the raw frames: an HDF5 external link (one HDF5 stack)
                                      or a virtual dataset (several HDF5 stacks); absent for
                                      single-frame files (CBF/TIFF/EDF), see raw_files
        frame_number [n], rotation_angle [n] (deg, frame centres), y_pixel, x_pixel
        monitor [n]                   per-frame monitor (only if the scan has one)
        raw_files                     raw file paths relative to this file's folder, in
                                      frame order; raw_files_absolute the same, absolute
        frames_per_file               frames in each raw file
        @raw_kind ("hdf5" | "files"), @raw_dataset, @frame_dtype
     process                          NXprocess: program, version, date,
        note                          NXnote, type application/json: the provenance record

Links to raw data are stored relative to the scan file's folder (the experiment directory
can move as a whole); the absolute paths are the fallback when the relative one is gone.
"""
from __future__ import annotations

import functools
import json
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from .frames import DEFAULT_DATASET, FrameSource
from .geometry import DetectorGeometry, Goniometer, ScanAngles

SCAN_FILE_VERSION = 1
_RESERVED_GONIO = {"scan_axis", "scan_sense", "phi_start", "phi_step", "offset_axes"}


class NexusFormatError(ValueError):
    """A NeXus file hklflow reads lacks what it needs; the message names file and path."""


# --------------------------------------------------------------------------------------
# Generic helpers
# --------------------------------------------------------------------------------------
def _nx():
    import nexusformat.nexus as nx

    return nx


def h5open(path, mode: str = "r"):
    """h5py.File with HDF5 file locking off (it fails on NFS) where h5py allows it, and the
    compression filters of hdf5plugin registered (detector data, volumes)."""
    import h5py
    import hdf5plugin  # noqa: F401  (registers bitshuffle/LZ4/... with HDF5)

    try:
        return h5py.File(os.fspath(path), mode, locking=False)
    except TypeError:  # pragma: no cover - old h5py
        return h5py.File(os.fspath(path), mode)


@functools.lru_cache(maxsize=1)
def _nxfile_class():
    nx = _nx()

    class _NXFileNoLocking(nx.NXFile):
        """nexusformat's NXFile, opening the HDF5 file with locking=False every time."""

        def __init__(self, name, mode="r", recursive=None, **kwargs):
            kwargs.setdefault("locking", False)
            super().__init__(name, mode, recursive, **kwargs)

        def open(self, **kwargs):
            kwargs.setdefault("locking", False)
            return super().open(**kwargs)

    return _NXFileNoLocking


def save_atomically(root, path, finish: Callable | None = None) -> Path:
    """Write the nexusformat tree `root` (an NXroot) to `path` through a temporary file in
    the same folder, renamed over `path` only when complete.

    finish(h5file), if given, runs on the open h5py.File after the tree is written (for what
    nexusformat cannot write: external links, virtual datasets).  On any error the temporary
    file is removed and `path` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex[:12]}.tmp"
    try:
        with _nxfile_class()(str(tmp), "w") as f:
            f.writefile(root)
            h5 = f.file
            h5.attrs["file_name"] = str(path.resolve())
            if finish is not None:
                finish(h5)
        os.replace(tmp, path)
    except BaseException:
        try:
            tmp.unlink()
        except FileNotFoundError:
            pass
        raise
    return path


def write_provenance(group, record: dict, name: str = "process"):
    """Add an NXprocess `name` to the nexusformat group: program, version, date and the
    provenance record (provenance.provenance(...)) as JSON in an NXnote."""
    nx = _nx()
    software = record.get("software", {}) or {}
    version = str(software.get("hklflow", ""))
    if not version:
        from . import __version__ as version
    proc = nx.NXprocess()
    proc["program"] = nx.NXfield(str(record.get("program", "hklflow")))
    proc["version"] = nx.NXfield(str(version))
    proc["date"] = nx.NXfield(str(record.get("time", "")))
    proc["note"] = nx.NXnote(type="application/json", description="hklflow provenance record",
                             data=json.dumps(record, indent=1, sort_keys=True, default=str))
    group[name] = proc
    return proc


def read_provenance(path, entry: str | None = None, name: str = "process") -> dict:
    """The provenance record written by write_provenance into /ENTRY/name."""
    with h5open(path) as f:
        ent = _entry_group(f, path, entry)
        return _provenance_from(ent, path, name)


def _provenance_from(ent, path, name) -> dict:
    try:
        text = _text(ent[f"{name}/note/data"][()])
    except KeyError:
        return {}
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise NexusFormatError(f"{path}: {ent.name}/{name}/note/data is not JSON: {exc}") from None


def _text(value) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, np.ndarray) and value.shape == ():
        return _text(value[()])
    return str(value)


def _strings(values) -> list[str]:
    return [_text(v) for v in np.atleast_1d(values)]


def _string_field(values):
    import h5py

    nx = _nx()
    return nx.NXfield([str(v) for v in values], dtype=h5py.string_dtype())


def _text_field(value):
    """A scalar string field kept exactly (nexusformat strips plain str values)."""
    import h5py

    return _nx().NXfield(str(value), dtype=h5py.string_dtype())


def _entry_group(f, path, entry: str | None):
    if entry is None:
        entry = _text(f.attrs.get("default", "")) or None
    if entry is None:
        entries = [k for k, v in f.items() if _text(v.attrs.get("NX_class", "")) == "NXentry"]
        if len(entries) != 1:
            raise NexusFormatError(f"{path}: expected one NXentry, found {entries}; name one")
        entry = entries[0]
    if entry not in f:
        raise NexusFormatError(f"{path}: no entry /{entry}")
    return f[entry]


def _get(group, name, path):
    try:
        return group[name][()]
    except KeyError:
        raise NexusFormatError(f"{path}: {group.name}/{name} is missing") from None


# --------------------------------------------------------------------------------------
# Scan file
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ScanRecord:
    """What an ingested scan file says about its scan entry (dict-like: record["angles"])."""

    path: str
    entry: str
    scan_id: str
    sample: str
    temperature: float  # K
    space_group: str
    cell: tuple  # approximate (a, b, c, alpha, beta, gamma) from the config
    geometry: DetectorGeometry  # calibration moved by detector_shift
    goniometer: Goniometer
    angles: ScanAngles
    offsets: dict
    detector_shift: tuple  # (d_dist, d_poni1, d_poni2) m
    frames: FrameSource  # the link target: raw files (absolute, resolved), dataset, counts
    monitor: np.ndarray | None = field(default=None, repr=False)
    calibration: dict = field(default_factory=dict, repr=False)
    provenance: dict = field(default_factory=dict, repr=False)

    def __getitem__(self, key):
        try:
            return getattr(self, key)
        except AttributeError:
            raise KeyError(key) from None

    def keys(self):
        return self.__dataclass_fields__.keys()

    @property
    def nframes(self) -> int:
        return self.angles.nframes

    def crystal(self):
        from .crystal import Crystal, UnitCell

        return Crystal(self.space_group, UnitCell.from_list(self.cell))


def _as_source(raw_files) -> FrameSource:
    if isinstance(raw_files, FrameSource):
        return raw_files
    src = getattr(raw_files, "source", None)
    if isinstance(src, FrameSource):
        return src
    raise TypeError("raw_files must be a frames.FrameSource or an open frames.FrameStack, "
                    f"got {type(raw_files).__name__}")


def _relpath(target: str, start: Path) -> str:
    try:
        return os.path.relpath(target, start)
    except ValueError:  # another drive (Windows)
        return target


def _beam_centre(geometry: DetectorGeometry) -> tuple[float, float]:
    """Where the direct beam hits, continuous pixel coordinates (row, col) (NeXus's
    beam_center); the PONI itself is stored as poni1/poni2."""
    try:
        return geometry.direct_beam_pixel()
    except ValueError:  # detector with distortion: no simple pixel mapping
        p1, p2 = geometry.pixel_size
        return geometry.poni1 / p1, geometry.poni2 / p2


def detector_group(geometry: DetectorGeometry):
    """NXdetector of a detector geometry, the same in scan and calibration files:
    description (pyFAI name), distance and pixel sizes (mm), beam_center_y/x (direct beam,
    continuous pixels), dist/poni1/poni2 (m), rot1..3 (rad), shape."""
    nx = _nx()
    p1, p2 = geometry.pixel_size
    bc_row, bc_col = _beam_centre(geometry)
    det = nx.NXdetector()
    det["description"] = nx.NXfield(geometry.detector)
    det["distance"] = nx.NXfield(geometry.dist * 1e3, units="mm")
    det["beam_center_x"] = nx.NXfield(bc_col, units="pixel")
    det["beam_center_y"] = nx.NXfield(bc_row, units="pixel")
    det["x_pixel_size"] = nx.NXfield(p2 * 1e3, units="mm")
    det["y_pixel_size"] = nx.NXfield(p1 * 1e3, units="mm")
    det["pixel_size"] = nx.NXfield(p1 * 1e3, units="mm")
    for k in ("dist", "poni1", "poni2"):
        det[k] = nx.NXfield(float(getattr(geometry, k)), units="m")
    for k in ("rot1", "rot2", "rot3"):
        det[k] = nx.NXfield(float(getattr(geometry, k)), units="rad")
    det["shape"] = nx.NXfield(np.asarray(geometry.shape, dtype=np.int64))
    return det


def build_scan_entry(scan, geometry: DetectorGeometry, goniometer: Goniometer, crystal,
                     calibration: dict, source: FrameSource, provenance: dict, *,
                     monitor=None, base: Path):
    """The nexusformat NXentry of a scan file (without the raw-frame link, which
    write_scan_file adds with h5py).  base: the folder of the file it goes into."""
    nx = _nx()
    angles: ScanAngles = scan.angles
    n = int(angles.nframes)
    if source.nframes != n:
        raise ValueError(f"scan {scan.id}: the raw data have {source.nframes} frames, the scan "
                         f"entry says {n}")

    det = detector_group(geometry)
    det["frame_start"] = nx.NXfield(float(angles.start), units="degree")
    det["translation"] = nx.NXfield(np.asarray(scan.detector_shift, dtype=float), units="m",
                                    long_name="detector shift (d_dist, d_poni1, d_poni2) from "
                                              "the calibration, already applied")
    for key, value in (calibration or {}).items():
        if value is None:
            continue
        name = key if key.startswith("calibration_") else f"calibration_{key}"
        name = {"calibration_poni_text": "calibration_poni"}.get(name, name)
        det[name] = _text_field(value)

    mono = nx.NXmonochromator()
    mono["wavelength"] = nx.NXfield(float(geometry.wavelength), units="angstrom")

    gonio_cls = getattr(nx, "NXgoniometer", None) or nx.NXcollection
    gon = gonio_cls()
    gon["scan_axis"] = nx.NXfield(np.asarray(goniometer.scan_axis, dtype=float))
    gon["scan_sense"] = nx.NXfield(int(goniometer.scan_sense))
    gon["phi_start"] = nx.NXfield(float(angles.start), units="degree")
    gon["phi_step"] = nx.NXfield(float(angles.step), units="degree")
    names = [nm for nm, _ in goniometer.offset_axes]
    gon["offset_axes"] = _string_field(names) if names else nx.NXfield("")
    unknown = set(scan.offsets) - set(names)
    if unknown:
        raise ValueError(f"scan {scan.id}: offsets {sorted(unknown)} are not goniometer axes")
    for nm, axis in goniometer.offset_axes:
        if nm in _RESERVED_GONIO:
            raise ValueError(f"goniometer offset axis name {nm!r} clashes with a field of the "
                             f"goniometer group ({sorted(_RESERVED_GONIO)}); rename it")
        gon[nm] = nx.NXfield(float(scan.offsets.get(nm, 0.0)), units="degree",
                             vector=np.asarray(axis, dtype=float),
                             transformation_type="rotation")
    instrument = nx.NXinstrument()
    instrument["detector"] = det
    instrument["monochromator"] = mono
    instrument["goniometer"] = gon

    # sample
    smp = nx.NXsample()
    smp["name"] = nx.NXfield(scan.sample)
    smp["temperature"] = nx.NXfield(float(scan.temperature), units="K")
    cell = [float(v) for v in crystal.cell.parameters]
    smp["space_group"] = nx.NXfield(str(crystal.hm))
    smp["unit_cell"] = nx.NXfield(np.asarray(cell), long_name="approximate cell from the config "
                                  "(a, b, c in angstrom; alpha, beta, gamma in degree)")
    for k, v, u in zip(("a", "b", "c", "alpha", "beta", "gamma"), cell,
                       ("angstrom",) * 3 + ("degree",) * 3):
        smp[f"unitcell_{k}"] = nx.NXfield(v, units=u)

    # data (the raw frames themselves are added by write_scan_file)
    rows, cols = source.frame_shape
    data = nx.NXdata()
    data["frame_number"] = nx.NXfield(np.arange(n, dtype=np.int64))
    data["rotation_angle"] = nx.NXfield(np.asarray(angles.frame_centres(), dtype=float),
                                        units="degree", long_name="scan angle at frame centre")
    data["y_pixel"] = nx.NXfield(np.arange(rows, dtype=np.int64), long_name="row index")
    data["x_pixel"] = nx.NXfield(np.arange(cols, dtype=np.int64), long_name="column index")
    if monitor is not None:
        monitor = np.asarray(monitor, dtype=np.float64)
        if monitor.shape != (n,):
            raise ValueError(f"scan {scan.id}: monitor has shape {monitor.shape}, expected ({n},)")
        data["monitor"] = nx.NXfield(monitor, source=str(scan.monitor))
    data["raw_files"] = _string_field([_relpath(f, base) for f in source.files])
    data["raw_files_absolute"] = _string_field(list(source.files))
    data["frames_per_file"] = nx.NXfield(np.asarray(source.frames_per_file, dtype=np.int64))
    data.attrs["raw_kind"] = source.kind
    data.attrs["raw_dataset"] = source.dataset or ""
    data.attrs["frame_dtype"] = np.dtype(source.dtype).str
    data.attrs["axes"] = ["frame_number", "y_pixel", "x_pixel"]
    data.attrs["rotation_angle_indices"] = 0
    if source.kind == "hdf5":
        data.attrs["signal"] = "data"

    entry = nx.NXentry()
    entry["title"] = nx.NXfield(scan.id)
    entry.attrs["hklflow_scan_file_version"] = SCAN_FILE_VERSION
    entry.attrs["default"] = "data"
    entry["instrument"] = instrument
    entry["sample"] = smp
    entry["data"] = data
    write_provenance(entry, provenance)
    return entry


def _link_frames(h5, entry_name: str, source: FrameSource, base: Path) -> None:
    """Add ENTRY/data/data: an external link (one HDF5 file) or a virtual dataset."""
    import h5py

    if source.kind != "hdf5":
        return
    dataset = source.dataset or DEFAULT_DATASET
    where = f"/{entry_name}/data/data"
    if len(source.files) == 1:
        h5[where] = h5py.ExternalLink(_relpath(source.files[0], base), dataset)
        return
    rows, cols = source.frame_shape
    layout = h5py.VirtualLayout(shape=(source.nframes, rows, cols), dtype=np.dtype(source.dtype))
    pos = 0
    for f, n in zip(source.files, source.frames_per_file):
        layout[pos:pos + n] = h5py.VirtualSource(_relpath(f, base), dataset, shape=(n, rows, cols),
                                                 dtype=np.dtype(source.dtype))
        pos += n
    h5[f"/{entry_name}/data"].create_virtual_dataset("data", layout, fillvalue=-1)


def write_scan_file(path, scan, geometry: DetectorGeometry, goniometer: Goniometer, crystal,
                    calibration: dict, raw_files, provenance: dict, *,
                    monitor=None) -> Path:
    """Write the NeXus file of one scan entry (layout in the module docstring), atomically.

    scan: config.ScanEntry; geometry: the scan's detector geometry (calibration moved by
    scan.detector_shift); goniometer: geometry.Goniometer; crystal: crystal.Crystal (the
    approximate cell); calibration: {"name", "version", "file", "digest", "poni_text", ...};
    raw_files: frames.FrameSource (or an open FrameStack) - linked, never copied;
    provenance: provenance.provenance(...); monitor: per-frame values or None.
    """
    nx = _nx()
    path = Path(path)
    base = path.resolve().parent
    source = _as_source(raw_files)
    entry = build_scan_entry(scan, geometry, goniometer, crystal, calibration, source, provenance,
                             monitor=monitor, base=base)
    root = nx.NXroot()
    root[scan.entry] = entry
    root.attrs["default"] = scan.entry
    return save_atomically(root, path,
                           finish=lambda h5: _link_frames(h5, scan.entry, source, base))


def _resolve_recorded(relative: str, absolute: str, base: Path) -> str:
    """The recorded raw file: relative to the scan file's folder if it is there, else the
    absolute path recorded at ingest (else the relative one, for the error message)."""
    rel = relative if os.path.isabs(relative) else os.path.normpath(os.path.join(base, relative))
    if os.path.exists(rel) or not absolute or not os.path.exists(absolute):
        return rel
    return absolute


def _frame_source(f, ent, path) -> FrameSource:
    import h5py

    base = Path(os.path.abspath(path)).parent
    try:
        data = ent["data"]
    except KeyError:
        raise NexusFormatError(f"{path}: {ent.name}/data is missing") from None
    kind = _text(data.attrs.get("raw_kind", ""))
    if kind not in ("hdf5", "files"):
        raise NexusFormatError(f"{path}: {data.name} has no raw_kind attribute: not an hklflow "
                               "scan file?")
    rel = _strings(_get(data, "raw_files", path))
    absolute = _strings(data["raw_files_absolute"][()]) if "raw_files_absolute" in data else [""] * len(rel)
    counts = tuple(int(v) for v in np.atleast_1d(_get(data, "frames_per_file", path)))
    dataset = _text(data.attrs.get("raw_dataset", "")) or None
    dtype = _text(data.attrs.get("frame_dtype", "<i4"))
    shape = tuple(int(v) for v in _get(ent["instrument/detector"], "shape", path))
    if kind == "hdf5":
        link = data.get("data", getlink=True)
        if isinstance(link, h5py.ExternalLink):  # follow the link the file holds
            rel, dataset = [link.filename], link.path
        elif "data" in data and data["data"].is_virtual:
            sources = sorted(data["data"].virtual_sources(),
                             key=lambda s: s.vspace.get_select_bounds()[0][0])
            rel = [s.file_name for s in sources]
            dataset = sources[0].dset_name
        rows = data["y_pixel"].shape[0] if "y_pixel" in data else shape[0]
        cols = data["x_pixel"].shape[0] if "x_pixel" in data else shape[1]
        shape = (int(rows), int(cols))
    files = tuple(_resolve_recorded(r, a, base) for r, a in zip(rel, absolute))
    return FrameSource(kind, files, dataset, counts, shape, dtype)


def read_frame_source(path, entry: str | None = None) -> FrameSource:
    """Where the raw frames of an ingested scan are (following its link)."""
    with h5open(path) as f:
        return _frame_source(f, _entry_group(f, path, entry), path)


def read_scan_file(path, entry: str | None = None) -> ScanRecord:
    """Read back what write_scan_file wrote (without opening the raw data)."""
    path = os.fspath(path)
    with h5open(path) as f:
        ent = _entry_group(f, path, entry)
        try:
            det = ent["instrument/detector"]
            mono = ent["instrument/monochromator"]
            gon = ent["instrument/goniometer"]
            smp = ent["sample"]
        except KeyError as exc:
            raise NexusFormatError(f"{path}: {ent.name} lacks a group the scan file needs: "
                                   f"{exc}") from None
        geometry = DetectorGeometry(
            detector=_text(_get(det, "description", path)),
            dist=float(_get(det, "dist", path)), poni1=float(_get(det, "poni1", path)),
            poni2=float(_get(det, "poni2", path)), rot1=float(_get(det, "rot1", path)),
            rot2=float(_get(det, "rot2", path)), rot3=float(_get(det, "rot3", path)),
            wavelength=float(_get(mono, "wavelength", path)))
        names = [n for n in _strings(_get(gon, "offset_axes", path)) if n]
        offsets, axes = {}, []
        for nm in names:
            offsets[nm] = float(_get(gon, nm, path))
            axes.append((nm, tuple(float(v) for v in gon[nm].attrs["vector"])))
        goniometer = Goniometer(scan_axis=tuple(float(v) for v in _get(gon, "scan_axis", path)),
                                scan_sense=int(_get(gon, "scan_sense", path)),
                                offset_axes=tuple(axes))
        source = _frame_source(f, ent, path)
        angles = ScanAngles(float(_get(gon, "phi_start", path)), float(_get(gon, "phi_step", path)),
                            int(ent["data/frame_number"].shape[0]))
        monitor = ent["data/monitor"][()] if "monitor" in ent["data"] else None
        calibration = {k[len("calibration_"):]: _text(det[k][()]) for k in det
                       if k.startswith("calibration_")}
        shift = tuple(float(v) for v in det["translation"][()]) if "translation" in det \
            else (0.0, 0.0, 0.0)
        title = _text(ent["title"][()]) if "title" in ent else ent.name.strip("/")
        return ScanRecord(
            path=path, entry=ent.name.strip("/"), scan_id=title,
            sample=_text(_get(smp, "name", path)),
            temperature=float(_get(smp, "temperature", path)),
            space_group=_text(_get(smp, "space_group", path)),
            cell=tuple(float(v) for v in _get(smp, "unit_cell", path)),
            geometry=geometry, goniometer=goniometer, angles=angles, offsets=offsets,
            detector_shift=shift, frames=source, monitor=monitor, calibration=calibration,
            provenance=_provenance_from(ent, path, "process"))


# --------------------------------------------------------------------------------------
# Peaks file (rule find_peaks)
# --------------------------------------------------------------------------------------
PEAK_UNITS = {"observed_px_x": "pixel", "observed_px_y": "pixel", "observed_frame": "frame",
              "observed_phi": "degree", "observed_px_x_var": "pixel^2",
              "observed_px_y_var": "pixel^2", "observed_frame_var": "frame^2",
              "int_sum": "counts", "int_sum_var": "counts^2", "background_mean": "counts",
              "max_value": "counts", "polar_angle": "degree", "azimuthal_angle": "degree"}


def write_peaks_file(path, scan: "ScanRecord", result, parameters: dict, provenance: dict) -> Path:
    """Write a peak search (steps/find_peaks.PeakSearchResult) of one scan entry::

      /ENTRY                        NXentry (named as in the scan file), title SAMPLE/TLABEL/ENTRY
         peaks                      NXreflections-style: one row per peak; observed_px_x (column),
                                    observed_px_y (row), observed_frame (continuous, pixel and
                                    frame centres at +0.5), observed_phi (deg), their variances
                                    (second moments), int_sum, int_sum_var, background_mean,
                                    max_value, n_pixels, bounding_box [row0, row1, col0, col1,
                                    frame0, frame1) (half-open), polar_angle (2theta), azimuthal_angle (chi)
         frame_statistics           NXdata: sum, max, trimmed_sum, n_valid, n_strong, n_annulus
                                    vs frame_number and rotation_angle; @scan_max, @q_annulus
         hot_pixels                 [n, 2] rows, cols of pixels found hot
         max_projection             [rows, cols] maximum of every pixel over the scan (-1: not used)
         parameters                 NXcollection: the peak-search parameters
         scan_file                  the scan.nxs this was made from
         process                    NXprocess: provenance
    """
    nx = _nx()
    root = nx.NXroot()
    ent = nx.NXentry()
    ent["title"] = nx.NXfield(scan.scan_id)
    refl = nx.NXgroup(nxclass="NXreflections")
    for name, values in result.peaks.items():
        refl[name] = nx.NXfield(np.asarray(values))
        if name in PEAK_UNITS:
            refl[name].attrs["units"] = PEAK_UNITS[name]
    refl.attrs["description"] = ("3D peaks of one streamed pass (dispersion test); pixel "
                                 "coordinates continuous, centre of pixel i at i + 0.5")
    ent["peaks"] = refl
    st = nx.NXdata()
    nfr = result.nframes
    st["frame_number"] = nx.NXfield(np.arange(nfr))
    st["rotation_angle"] = nx.NXfield(scan.angles.frame_centres(), units="degree")
    for name, values in result.frame_stats.items():
        st[name] = nx.NXfield(np.asarray(values))
    st.attrs["signal"] = "trimmed_sum"
    st.attrs["axes"] = "frame_number"
    st.attrs["scan_max"] = result.scan_max
    st.attrs["q_annulus"] = np.asarray(result.q_annulus)
    ent["frame_statistics"] = st
    ent["hot_pixels"] = nx.NXfield(np.asarray(result.hot_pixels, dtype=np.int64).reshape(-1, 2))
    # per-pixel maximum over the scan (-1 where not used): the mask step finds dead pixels in it
    ent["max_projection"] = nx.NXfield(np.asarray(result.max_projection, dtype=np.float32),
                                       compression="gzip", units="counts")
    par = nx.NXcollection()
    for k, v in parameters.items():
        par[k] = nx.NXfield("none" if v is None else (np.asarray(v) if isinstance(v, (tuple, list)) else v))
    ent["parameters"] = par
    ent["scan_file"] = nx.NXfield(str(Path(scan.path).resolve()))
    write_provenance(ent, provenance)
    root[scan.entry] = ent
    root.attrs["default"] = scan.entry
    return save_atomically(root, path)


@dataclass(frozen=True)
class PeaksRecord:
    path: str
    entry: str
    scan_id: str
    peaks: dict
    frame_stats: dict
    hot_pixels: np.ndarray
    scan_max: float
    max_projection: np.ndarray | None = None  # absent in files from before it was written


def read_peaks_file(path, entry: str | None = None) -> PeaksRecord:
    with h5open(path) as f:
        ent = _entry_group(f, path, entry)
        if "peaks" not in ent or "frame_statistics" not in ent:
            raise NexusFormatError(f"{path}: /{ent.name.strip('/')} has no peaks/frame_statistics: "
                                   "not a find_peaks output")
        refl = ent["peaks"]
        peaks = {k: refl[k][()] for k in refl}
        st = ent["frame_statistics"]
        stats = {k: st[k][()] for k in st}
        return PeaksRecord(str(path), ent.name.strip("/"), _text(ent["title"][()]), peaks, stats,
                           ent["hot_pixels"][()], float(st.attrs["scan_max"]),
                           ent["max_projection"][()] if "max_projection" in ent else None)


# --------------------------------------------------------------------------------------
# Calibration file (rule calibrate_powder)
# --------------------------------------------------------------------------------------
def write_calibration_file(path, result, params, *, source: dict, pattern, provenance: dict) -> None:
    """calibration.nxs of rule calibrate_powder (result: steps.calibrate_powder.CalibrationResult,
    params: its CalibrationParams): /calibration (NXentry) with

    instrument/detector     NXdetector as in hklflow scan files: description, distance and
                            pixel sizes (mm), beam_center_y/x = the direct beam in continuous pixel
                            coordinates, dist/poni1/poni2 (m), rot1..3 (rad)
    instrument/monochromator  wavelength (angstrom)
    process                 NXprocess (nexus.write_provenance: program, version, date, note =
                            the provenance record as JSON) plus: refined, start, uncertainty
                            (NXparameters), refined_parameters, residuals (rms in px and
                            2theta, points, rings), control_points (NXdata), beam_centre
                            (direct beam and PONI, px), fit2d, source (path, sha256),
                            parameters (JSON), passes (JSON), notes
    data                    NXdata: the integrated pattern (two_theta in deg)
    """
    from nexusformat.nexus import (NXcollection, NXdata, NXentry, NXfield,
                                   NXinstrument, NXmonochromator, NXnote, NXparameters, NXroot)

    g = result.geometry
    units = {"dist": "m", "poni1": "m", "poni2": "m", "rot1": "rad", "rot2": "rad",
             "rot3": "rad", "wavelength": "angstrom"}

    def parameters(geom: DetectorGeometry):
        grp = NXparameters()
        for k in ("dist", "poni1", "poni2", "rot1", "rot2", "rot3", "wavelength"):
            grp[k] = NXfield(float(getattr(geom, k)), units=units[k])
        grp["detector"] = NXfield(geom.detector)
        return grp

    entry = NXentry()
    entry["title"] = NXfield(f"powder calibration {params.name}")
    entry["calibrant"] = NXfield(params.calibrant)
    entry["method"] = NXfield(result.method)
    bc = {"direct_beam_row": 0.0, "direct_beam_col": 0.0}
    bc["direct_beam_row"], bc["direct_beam_col"] = g.direct_beam_pixel()
    p1, p2 = g.pixel_size
    bc["poni_row"], bc["poni_col"] = g.poni1 / p1, g.poni2 / p2
    det = detector_group(g)
    mono = NXmonochromator()
    mono["wavelength"] = NXfield(g.wavelength, units="angstrom")
    entry["instrument"] = NXinstrument(detector=det, monochromator=mono)

    proc = write_provenance(entry, provenance, name="process")
    proc["refined"] = parameters(g)
    if result.start is not None:
        proc["start"] = parameters(result.start)
    proc["refined_parameters"] = NXfield(" ".join(result.refined) or "none (imported)")
    if result.uncertainties:
        unc = NXparameters()
        for k, v in result.uncertainties.items():
            unc[k] = NXfield(v, units=units[k])
        proc["uncertainty"] = unc
    res = NXcollection()
    res["rms_residual_px"] = NXfield(np.nan if result.rms_px is None else result.rms_px,
                                     units="pixel")
    res["rms_residual_2theta"] = NXfield(np.nan if result.rms_tth_deg is None
                                         else result.rms_tth_deg, units="degree")
    res["n_points"] = NXfield(int(result.n_points))
    res["n_rings"] = NXfield(int(len(result.rings)))
    if result.rings:
        res["rings"] = NXfield(np.asarray(result.rings, dtype=np.int32))
    res["n_hot_pixels"] = NXfield(int(result.n_hot))
    proc["residuals"] = res
    if len(result.control_points):
        cp = result.control_points
        proc["control_points"] = NXdata(
            NXfield(cp[:, 2].astype(np.int32), name="ring"),
            title="control points (pyFAI pixel indices: row = d1 + 0.5, col = d2 + 0.5)")
        proc["control_points"]["d1"] = NXfield(cp[:, 0], units="pixel")
        proc["control_points"]["d2"] = NXfield(cp[:, 1], units="pixel")
    proc["beam_centre"] = NXparameters(**{k: NXfield(v, units="pixel") for k, v in bc.items()})
    proc["fit2d"] = NXparameters(**{k: NXfield(v) for k, v in g.fit2d().items()})
    proc["source"] = NXnote(type="application/json", data=json.dumps(source, sort_keys=True))
    proc["source_file"] = NXfield(str(source.get("poni") or source.get("image")))
    proc["source_sha256"] = NXfield(str(source.get("sha256")))
    if "image" in source and "poni" not in source:
        proc["source_dataset"] = NXfield(str(source.get("dataset")))
        proc["source_frame"] = NXfield(int(source.get("frame", 0)))
    proc["parameters"] = NXnote(type="application/json",
                                data=json.dumps(params.as_dict(), sort_keys=True, default=str))
    if result.passes:
        proc["passes"] = NXnote(type="application/json",
                                data=json.dumps(result.passes, default=float))
    if result.notes:
        proc["notes"] = NXfield("\n".join(result.notes))
    if pattern is not None:
        tth, inten = pattern
        entry["data"] = NXdata(NXfield(inten, name="intensity"),
                               NXfield(tth, name="two_theta", units="degree"),
                               title=f"{params.calibrant} integrated pattern")
    root = NXroot()
    root["calibration"] = entry
    root.attrs["default"] = "calibration"

    def finish(h5):  # written in a temporary folder first: record the final name only
        h5.attrs["file_name"] = Path(path).name

    save_atomically(root, path, finish=finish)


# --------------------------------------------------------------------------------------
# Orientation file (rules index_parent and refine_scan)
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class OrientationRecord:
    path: str
    sample: str
    temperature: str  # label, e.g. 300K
    space_group: str
    cell: tuple
    cell_esd: tuple
    U: np.ndarray
    UB: np.ndarray
    detector: DetectorGeometry  # refined common detector geometry (entries shift from it)
    offset_corrections: dict  # entry -> {axis: deg}
    statistics: dict
    parent: str

    def crystal(self):
        from .crystal import Crystal, UnitCell

        return Crystal(self.space_group, UnitCell(*self.cell))


def write_orientation_file(path, *, sample: str, temperature: str, parent: str, result,
                           indexing: dict | None, provenance: dict) -> Path:
    """Orientation of one sample at one temperature (refinement.RefinementResult)::

      /orientation                  NXentry, title SAMPLE/TLABEL
         sample                     NXsample: name, temperature label, space_group,
                                    unitcell_a..gamma and unitcell_errors (esd),
                                    orientation_matrix (U), ub_matrix (UB = U B, 1/Angstrom, no 2 pi)
         instrument/detector        refined common detector geometry (entries move from it by
                                    their scans-table translations)
         instrument/goniometer      offset_corrections: NXcollection entry -> axis -> deg
         refinement                 NXcollection: rms_px, rms_frames, rms_hkl, fraction_indexed,
                                    n_used, parameters (JSON: value and esd), parent, indexing
         peaks                      NXreflections-style: entry, observed x/y/frame, hkl, used,
                                    residual_x/y/frame (NaN if unused)
         process                    NXprocess: provenance
    """
    nx = _nx()
    from .crystal import CELL_NAMES

    m = result.model
    ent = nx.NXentry()
    ent["title"] = nx.NXfield(f"{sample}/{temperature}")
    smp = nx.NXsample()
    smp["name"] = nx.NXfield(sample)
    smp["temperature_label"] = nx.NXfield(temperature)
    smp["space_group"] = nx.NXfield(m.crystal.hm)
    for n, v in zip(CELL_NAMES, m.crystal.cell.parameters):
        smp[f"unitcell_{n}"] = nx.NXfield(float(v), units="degree" if n in ("alpha", "beta", "gamma") else "angstrom")
    smp["unitcell_errors"] = nx.NXfield(np.asarray(result.cell_esd, dtype=float))
    smp["orientation_matrix"] = nx.NXfield(np.asarray(m.U))
    smp["ub_matrix"] = nx.NXfield(np.asarray(m.UB), units="1/angstrom")
    ent["sample"] = smp
    inst = nx.NXinstrument()
    inst["detector"] = detector_group(m.detector)
    inst["monochromator"] = nx.NXmonochromator(wavelength=nx.NXfield(m.detector.wavelength, units="angstrom"))
    gon = nx.NXcollection()
    oc = nx.NXcollection()
    for e, axes in m.offset_corrections.items():
        g = nx.NXcollection()
        for ax, v in axes.items():
            g[ax] = nx.NXfield(float(v), units="degree")
        oc[e] = g
    gon["offset_corrections"] = oc
    inst["goniometer"] = gon
    ent["instrument"] = inst
    ref = nx.NXcollection()
    for k in ("rms_px", "rms_frames", "rms_hkl", "fraction_indexed", "n_used", "seconds"):
        ref[k] = nx.NXfield(float(getattr(result, k)))
    ref["parent"] = nx.NXfield(parent)
    ref["parameters"] = nx.NXnote(type="application/json",
                                  data=json.dumps(result.parameters, sort_keys=True))
    if indexing:
        ref["indexing"] = nx.NXnote(type="application/json", data=json.dumps(indexing, default=float))
    if result.notes:
        ref["notes"] = nx.NXfield("\n".join(result.notes))
    ent["refinement"] = ref
    cols = {"entry": [], "x": [], "y": [], "z": [], "hkl": [], "used": [], "res": []}
    for e, hkl, used, res in zip(result.entries, result.hkl, result.used, result.residuals):
        cols["entry"] += [e.name] * len(e.x)
        cols["x"].append(e.x)
        cols["y"].append(e.y)
        cols["z"].append(e.z)
        cols["hkl"].append(hkl)
        cols["used"].append(used)
        cols["res"].append(res)
    pk = nx.NXgroup(nxclass="NXreflections")
    pk["entry_name"] = nx.NXfield(np.asarray(cols["entry"], dtype="S"))
    pk["observed_px_x"] = nx.NXfield(np.concatenate(cols["x"]), units="pixel")
    pk["observed_px_y"] = nx.NXfield(np.concatenate(cols["y"]), units="pixel")
    pk["observed_frame"] = nx.NXfield(np.concatenate(cols["z"]), units="frame")
    hkl = np.concatenate(cols["hkl"])
    pk["h"], pk["k"], pk["l"] = (nx.NXfield(hkl[:, i]) for i in range(3))
    pk["used"] = nx.NXfield(np.concatenate(cols["used"]).astype(np.int8))
    res = np.concatenate(cols["res"])
    pk["residual_x"] = nx.NXfield(res[:, 0], units="pixel")
    pk["residual_y"] = nx.NXfield(res[:, 1], units="pixel")
    pk["residual_frame"] = nx.NXfield(res[:, 2], units="frame")
    ent["peaks"] = pk
    write_provenance(ent, provenance)
    root = nx.NXroot()
    root["orientation"] = ent
    root.attrs["default"] = "orientation"
    return save_atomically(root, path)


def read_orientation_file(path) -> OrientationRecord:
    from .crystal import CELL_NAMES

    with h5open(path) as f:
        if "orientation" not in f:
            raise NexusFormatError(f"{path}: no /orientation entry: not an orientation file")
        ent = f["orientation"]
        smp = ent["sample"]
        det = ent["instrument/detector"]
        geometry = DetectorGeometry(
            _text(det["description"][()]), *(float(det[k][()]) for k in ("dist", "poni1", "poni2", "rot1", "rot2", "rot3")),
            wavelength=float(ent["instrument/monochromator/wavelength"][()]))
        oc = {}
        if "instrument/goniometer/offset_corrections" in ent:
            for e, g in ent["instrument/goniometer/offset_corrections"].items():
                oc[e] = {ax: float(v[()]) for ax, v in g.items()}
        ref = ent["refinement"]
        stats = {k: float(ref[k][()]) for k in ("rms_px", "rms_frames", "rms_hkl", "fraction_indexed", "n_used", "seconds")}
        stats["parameters"] = json.loads(_text(ref["parameters/data"][()]))
        return OrientationRecord(
            str(path), _text(smp["name"][()]), _text(smp["temperature_label"][()]),
            _text(smp["space_group"][()]), tuple(float(smp[f"unitcell_{n}"][()]) for n in CELL_NAMES),
            tuple(smp["unitcell_errors"][()].tolist()), smp["orientation_matrix"][()],
            smp["ub_matrix"][()], geometry, oc, stats, _text(ref["parent"][()]))
