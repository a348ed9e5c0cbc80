"""The scan file of one scan entry (rule ingest_scan): ``results/SAMPLE/TLABEL/ENTRY/scan.nxs``.

It records what ingest knows, and only that: the accepted calibration and the entry's
detector shift (never a pre-shifted detector), goniometer, angles, the raw frames (linked,
never copied) with a fingerprint of every raw file.  :meth:`ScanRecord.geometry` puts the
entry's geometry together (geometry.EntrySetup)::

  /                                   NXroot, @default = ENTRY
  /ENTRY                              NXentry (named after the scan entry: f1, f2, ...)
     title                            "SAMPLE/TLABEL/ENTRY"
     @hklflow_scan_file_version       2
     instrument                       NXinstrument
        detector                      NXdetector of the accepted calibration (files.h5.
                                      detector_group): description (pyFAI name), distance
                                      (mm), beam_center_y/x (direct beam, continuous pixels),
                                      pixel sizes (mm), dist, poni1, poni2 (m), rot1..3 (rad),
                                      shape [rows, cols]; with instrument.detector.sensor,
                                      NXmx's sensor_material and sensor_thickness (m)
           translation                [d_dist, d_poni1, d_poni2] (m): this entry's detector is
                                      the calibration moved by it
           frame_start                scan angle at the start of frame 0 (deg)
           calibration_name, calibration_version, calibration_file,
           calibration_digest, calibration_poni (the PONI file's text)
        monochromator                 NXmonochromator: wavelength (angstrom, the calibration's)
        goniometer                    NXgoniometer (NXcollection where nexusformat lacks it)
           scan_axis [3] (lab vector), scan_sense (+1/-1), phi_start, phi_step (deg)
           offset_axes                offset axis names, outermost first
           <offset name>              its angle (deg), @vector (lab axis),
                                      @transformation_type = rotation
     sample                           NXsample: name, temperature (K)
     data                             NXdata, @signal data, @axes [frame_number, y_pixel, x_pixel]
        data                          the raw frames: an HDF5 external link (one HDF5 stack)
                                      or a virtual dataset (several HDF5 stacks); absent for
                                      single-frame files (CBF/TIFF/EDF), see raw_files
        frame_number [n], rotation_angle [n] (deg, frame centres), y_pixel, x_pixel
        monitor [n]                   per-frame monitor (only if the scan has one)
        raw_files                     raw file paths relative to this file's folder, in
                                      frame order; raw_files_absolute the same, absolute
        frames_per_file               frames in each raw file
        raw_file_size, raw_file_mtime_ns, raw_file_ctime_ns, raw_file_inode,
        raw_file_sampled_sha256       fingerprint of each raw file (hklflow.raw.rawfiles);
        raw_file_sha256               only in scan files ingested when ingest hashed every
                                      byte (reduction.ingest.fingerprint: full, now the
                                      plan's: hklflow.raw.rawfiles.RawChangeCheck)
        @raw_kind ("hdf5" | "files"), @raw_dataset, @frame_dtype
        @planned_frames               only while the scan is still being collected (hklflow
                                      watch): the frames it will have; the file records its
                                      first n, and no fingerprints (the raw files grow)
     frames_read                      NXdata (single-frame files only: the entry's @default):
                                      maximum, the pixel-wise maximum of the frames read back
                                      at ingest, on y_pixel, x_pixel
     process                          NXprocess: program, version, date,
        note                          NXnote, type application/json: the provenance record

Links to raw data are stored relative to the scan file's folder (the experiment directory
can move as a whole); the absolute paths are the fallback when the relative one is gone.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from ..base.errors import FileFormatError, InputMismatchError
from ..model.geometry import EntrySetup, Goniometer, ScanAngles, ScanGeometry
from ..model.scan import DEFAULT_DATASET, FrameSource, ScanSpan
from .h5 import (detector_group, entry_group, get, group, nexus, open_h5, provenance_group,
                 provenance_of, read_detector_group, string_field, strings, text, text_field,
                 write_nexus_atomically)

SCAN_FILE_VERSION = 2
# fingerprint keys (hklflow.raw.rawfiles) -> fields of the data group, beside raw_file_size,
# raw_file_mtime_ns and raw_file_sampled_sha256
OPTIONAL_FINGERPRINT_FIELDS = {"ctime_ns": "raw_file_ctime_ns", "inode": "raw_file_inode",
                               "sha256": "raw_file_sha256"}
_RESERVED_GONIO = {"scan_axis", "scan_sense", "phi_start", "phi_step", "offset_axes"}


@dataclass(frozen=True)
class ScanRecord(ScanSpan):
    """What a scan file says about its scan entry."""

    path: str
    scan_id: str  # SAMPLE/TLABEL/ENTRY
    sample: str
    temperature: float  # K
    setup: EntrySetup  # calibration (unshifted), shift, goniometer, angles, offsets
    frames: FrameSource  # the link target: raw files (absolute, resolved), dataset, counts
    monitor: np.ndarray | None = field(default=None, repr=False)
    calibration: dict = field(default_factory=dict, repr=False)  # name, version, file, digest, poni
    provenance: dict = field(default_factory=dict, repr=False)
    planned_frames: int = 0  # frames of the whole scan while it is being collected; 0: complete

    @property
    def entry(self) -> str:
        return self.setup.name

    @property
    def nframes(self) -> int:
        return self.setup.angles.nframes

    @property
    def angles(self) -> ScanAngles:
        return self.setup.angles

    @property
    def detector_shape(self) -> tuple[int, int]:
        return self.setup.calibration.shape

    def geometry(self, orientation=None) -> ScanGeometry:
        """The entry's geometry (geometry.EntrySetup.geometry); an orientation record must
        be of this entry's sample and temperature."""
        if orientation is not None and (orientation.sample, orientation.temperature_label) != \
                (self.sample, self.temperature_label):
            raise InputMismatchError(
                f"{orientation.path} is the orientation of {orientation.sample}/"
                f"{orientation.temperature_label}, not of {self.scan_id} ({self.path})")
        return self.setup.geometry(orientation)


# --------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------
def _relpath(target: str, start: Path) -> str:
    try:
        return os.path.relpath(target, start)
    except ValueError:  # another drive (Windows)
        return target


def _instrument(row, setup: EntrySetup, calibration: dict):
    nx = nexus()

    angles = setup.angles
    det = detector_group(setup.calibration)
    det["translation"] = nx.NXfield(np.asarray(setup.shift, dtype=float), units="m",
                                    long_name="this entry's detector shift (d_dist, d_poni1, "
                                              "d_poni2) from the calibration above")
    det["frame_start"] = nx.NXfield(float(angles.start), units="degree")
    for key, value in calibration.items():
        if value is not None:
            det[f"calibration_{key}"] = text_field(value)
    mono = nx.NXmonochromator()
    mono["wavelength"] = nx.NXfield(float(setup.calibration.wavelength), units="angstrom")

    goniometer = setup.goniometer
    gon = (getattr(nx, "NXgoniometer", None) or nx.NXcollection)()
    gon["scan_axis"] = nx.NXfield(np.asarray(goniometer.scan_axis, dtype=float))
    gon["scan_sense"] = nx.NXfield(int(goniometer.scan_sense))
    gon["phi_start"] = nx.NXfield(float(angles.start), units="degree")
    gon["phi_step"] = nx.NXfield(float(angles.step), units="degree")
    names = [nm for nm, _ in goniometer.offset_axes]
    gon["offset_axes"] = string_field(names) if names else nx.NXfield("")
    unknown = set(setup.offsets) - set(names)
    if unknown:
        raise InputMismatchError(f"scan {row.id}: offsets {sorted(unknown)} are not goniometer axes")
    for nm, axis in goniometer.offset_axes:
        if nm in _RESERVED_GONIO:
            raise InputMismatchError(f"goniometer offset axis name {nm!r} clashes with a field of "
                                     f"the goniometer group ({sorted(_RESERVED_GONIO)}); rename it")
        gon[nm] = nx.NXfield(float(setup.offsets.get(nm, 0.0)), units="degree",
                             vector=np.asarray(axis, dtype=float), transformation_type="rotation")
    return nx.NXinstrument(detector=det, monochromator=mono, goniometer=gon)


def _data(row, source: FrameSource, monitor, base: Path):
    nx = nexus()

    n = row.nframes
    rows, cols = source.frame_shape
    data = nx.NXdata()
    data["frame_number"] = nx.NXfield(np.arange(n, dtype=np.int64))
    data["rotation_angle"] = nx.NXfield(np.asarray(row.angles.frame_centres(), dtype=float),
                                        units="degree", long_name="scan angle at frame centre")
    data["y_pixel"] = nx.NXfield(np.arange(rows, dtype=np.int64), long_name="row index")
    data["x_pixel"] = nx.NXfield(np.arange(cols, dtype=np.int64), long_name="column index")
    if monitor is not None:
        monitor = np.asarray(monitor, dtype=np.float64)
        if monitor.shape != (n,):
            raise InputMismatchError(f"scan {row.id}: monitor has shape {monitor.shape}, "
                                     f"expected ({n},)")
        data["monitor"] = nx.NXfield(monitor, source=str(row.monitor))
    data["raw_files"] = string_field([_relpath(f, base) for f in source.files])
    data["raw_files_absolute"] = string_field(list(source.files))
    data["frames_per_file"] = nx.NXfield(np.asarray(source.frames_per_file, dtype=np.int64))
    fp = source.fingerprints
    data["raw_file_size"] = nx.NXfield(np.asarray([f["size"] for f in fp], dtype=np.int64))
    data["raw_file_mtime_ns"] = nx.NXfield(np.asarray([f["mtime_ns"] for f in fp], dtype=np.int64))
    data["raw_file_sampled_sha256"] = string_field([f["sampled_sha256"] for f in fp])
    for key, name in OPTIONAL_FINGERPRINT_FIELDS.items():  # those every fingerprint has
        if fp and all(key in f for f in fp):
            values = [f[key] for f in fp]
            data[name] = (string_field(values) if isinstance(values[0], str)
                          else nx.NXfield(np.asarray(values, dtype=np.int64)))
    data.attrs["raw_kind"] = source.kind
    data.attrs["raw_dataset"] = source.dataset or ""
    data.attrs["frame_dtype"] = np.dtype(source.dtype).str
    if row.in_progress:
        data.attrs["planned_frames"] = int(row.planned_frames)
    data.attrs["axes"] = ["frame_number", "y_pixel", "x_pixel"]
    data.attrs["rotation_angle_indices"] = 0
    if source.kind == "hdf5":
        data.attrs["signal"] = "data"
    return data


def _link_frames(h5, entry_name: str, source: FrameSource, base: Path) -> None:
    """Add ENTRY/data/data: an external link (one HDF5 file) or a virtual dataset."""
    if source.kind != "hdf5":
        return
    dataset = source.dataset or DEFAULT_DATASET
    where = f"/{entry_name}/data/data"
    if len(source.files) == 1 and not source.growing:  # (growing: the first frames only)
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


def write_scan_file(path, row, setup: EntrySetup, calibration: dict, source: FrameSource,
                    provenance: dict, *, monitor=None, maximum=None, frames_read=()) -> Path:
    """Write the scan file of one scan entry (layout in the module docstring), atomically.

    row: model.scan.ScanRow; setup: the entry as measured (unshifted calibration, shift, ...);
    calibration: {"name", "version", "file", "digest", "poni"}; source: the raw frames
    (with fingerprints) - linked, never copied; monitor: per-frame values or None;
    maximum: the pixel-wise maximum of the frames frames_read, the file's default picture
    where the frames cannot be linked (frame files)."""
    nx = nexus()

    path = Path(path)
    base = path.resolve().parent
    if source.nframes != row.nframes:
        raise InputMismatchError(f"scan {row.id}: the raw data have {source.nframes} frames, "
                                 f"the scans table says {row.nframes}")
    entry = nx.NXentry()
    entry["title"] = nx.NXfield(row.id)
    entry.attrs["hklflow_scan_file_version"] = SCAN_FILE_VERSION
    entry.attrs["default"] = "data"
    entry["instrument"] = _instrument(row, setup, calibration)
    smp = nx.NXsample()
    smp["name"] = nx.NXfield(row.sample)
    smp["temperature"] = nx.NXfield(float(row.temperature), units="K")
    entry["sample"] = smp
    entry["data"] = _data(row, source, monitor, base)
    if source.kind != "hdf5" and maximum is not None:
        # NeXpy's default: the frames themselves where they are linked, else this
        numbers = ", ".join(map(str, frames_read))
        entry["frames_read"] = nx.NXdata(
            nx.NXfield(np.asarray(maximum, np.float32), name="maximum",
                       long_name=f"maximum of frame(s) {numbers} (read back at ingest)"),
            [entry["data/y_pixel"], entry["data/x_pixel"]],
            title=f"{row.id}: maximum of frame(s) {numbers}")
        entry.attrs["default"] = "frames_read"
    entry["process"] = provenance_group(provenance)
    root = nx.NXroot()
    root[row.entry] = entry
    root.attrs["default"] = row.entry
    return write_nexus_atomically(root, path,
                                  finish=lambda h5: _link_frames(h5, row.entry, source, base))


# --------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------
def _resolve_recorded(relative: str, absolute: str, base: Path) -> str:
    """The recorded raw file: relative to the scan file's folder if it is there, else the
    absolute path recorded at ingest (else the relative one, for the error message)."""
    rel = relative if os.path.isabs(relative) else os.path.normpath(os.path.join(base, relative))
    if os.path.exists(rel) or not absolute or not os.path.exists(absolute):
        return rel
    return absolute


def _frame_source(ent, path) -> FrameSource:
    base = Path(os.path.abspath(path)).parent
    data = group(ent, "data", path)
    kind = text(data.attrs.get("raw_kind", ""))
    if kind not in ("hdf5", "files"):
        raise FileFormatError(f"{path}: {data.name} has no raw_kind attribute: not an hklflow "
                              "scan file?")
    rel = strings(get(data, "raw_files", path))
    absolute = strings(get(data, "raw_files_absolute", path))
    counts = tuple(int(v) for v in np.atleast_1d(get(data, "frames_per_file", path)))
    dataset = text(data.attrs.get("raw_dataset", "")) or None
    dtype = text(data.attrs.get("frame_dtype", "<i4"))
    shape = tuple(int(v) for v in get(ent["instrument/detector"], "shape", path))
    if kind == "hdf5":
        link = data.get("data", getlink=True)
        if isinstance(link, h5py.ExternalLink):  # follow the link the file holds
            rel, dataset = [link.filename], link.path
        elif "data" in data and data["data"].is_virtual:
            sources = sorted(data["data"].virtual_sources(),
                             key=lambda s: s.vspace.get_select_bounds()[0][0])
            rel = [s.file_name for s in sources]
            dataset = sources[0].dset_name
        shape = (int(data["y_pixel"].shape[0]), int(data["x_pixel"].shape[0]))
    files = tuple(_resolve_recorded(r, a, base) for r, a in zip(rel, absolute))
    fingerprints = [
        {"size": int(s), "mtime_ns": int(m), "sampled_sha256": h}
        for s, m, h in zip(np.atleast_1d(get(data, "raw_file_size", path)),
                           np.atleast_1d(get(data, "raw_file_mtime_ns", path)),
                           strings(get(data, "raw_file_sampled_sha256", path)))]
    for key, name in OPTIONAL_FINGERPRINT_FIELDS.items():  # not in files of older versions
        if name in data:
            values = get(data, name, path)
            for f, v in zip(fingerprints, strings(values) if key == "sha256"
                            else np.atleast_1d(values)):
                f[key] = v if key == "sha256" else int(v)
    fingerprints = tuple(fingerprints)
    growing = int(data.attrs.get("planned_frames", 0)) > 0
    return FrameSource(kind, files, dataset, counts, shape, dtype, fingerprints, growing)


def _goniometer(gon, path) -> tuple[Goniometer, dict]:
    names = [n for n in strings(get(gon, "offset_axes", path)) if n]
    offsets, axes = {}, []
    for nm in names:
        offsets[nm] = float(get(gon, nm, path))
        axes.append((nm, tuple(float(v) for v in gon[nm].attrs["vector"])))
    goniometer = Goniometer(scan_axis=tuple(float(v) for v in get(gon, "scan_axis", path)),
                            scan_sense=int(get(gon, "scan_sense", path)), offset_axes=tuple(axes))
    return goniometer, offsets


def read_scan_file(path, entry: str | None = None) -> ScanRecord:
    """Read back what write_scan_file wrote (without opening the raw data)."""
    path = os.fspath(path)
    with open_h5(path) as f:
        ent = entry_group(f, path, entry)
        version = int(ent.attrs.get("hklflow_scan_file_version", 1))
        if version != SCAN_FILE_VERSION:
            raise FileFormatError(f"{path}: a scan file of layout {version} (an older hklflow); "
                                  f"this one reads layout {SCAN_FILE_VERSION}: run ingest_scan "
                                  "for this scan again (snakemake --forcerun ingest_scan)")
        det = group(ent, "instrument/detector", path)
        wavelength = get(group(ent, "instrument/monochromator", path), "wavelength", path)
        calibration = read_detector_group(det, wavelength, path)
        goniometer, offsets = _goniometer(group(ent, "instrument/goniometer", path), path)
        gon = ent["instrument/goniometer"]
        angles = ScanAngles(float(get(gon, "phi_start", path)), float(get(gon, "phi_step", path)),
                            int(get(ent, "data/frame_number", path).shape[0]))
        name = ent.name.strip("/")
        setup = EntrySetup(name, calibration, tuple(float(v) for v in get(det, "translation", path)),
                           goniometer, angles, offsets)
        smp = group(ent, "sample", path)
        return ScanRecord(
            path=path, scan_id=text(get(ent, "title", path)), sample=text(get(smp, "name", path)),
            temperature=float(get(smp, "temperature", path)), setup=setup,
            frames=_frame_source(ent, path),
            monitor=ent["data/monitor"][()] if "monitor" in ent["data"] else None,
            calibration={k[len("calibration_"):]: text(det[k][()]) for k in det
                         if k.startswith("calibration_")},
            provenance=provenance_of(ent, path),
            planned_frames=int(ent["data"].attrs.get("planned_frames", 0)))
