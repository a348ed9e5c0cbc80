"""The NXRefine wrapper file of one sample at one temperature (rule nxrefine_wrapper):
``results/SAMPLE/nxrefine/SAMPLE_TLABEL.nxs``, NXRefine's "scan file" in its own field
names, so that NeXpy and NXRefine (nexpy/nxrefine; ``NXRefine(root['f1'])``,
``NXReduce(root['f1'])``) open hklflow's results as theirs.  It copies only small things
(parameters, peaks, axes, pixel masks, per-frame monitors); every large array is an HDF5
external link, relative to this file's folder::

  /                              @default = entry
  /entry                         NXentry, @default = transform (else the first kind); title
     sample                      NXsample: name, temperature_label, temperature (K),
                                 unitcell_a..gamma, space_group, laue_group,
                                 unit_cell_group, lattice_centring (hklflow.model.nxrefine.
                                 sample_fields; the orientation's refined cell)
     transform, masked_transform NXdata: data -> KIND.nxs (merged) /entry/KIND/data, axes
                                 [Ql, Qk, Qh] (copied), @angles (gamma*, beta*, alpha*)
     symm_transform,             the same for KIND_symmetrized.nxs
     symm_masked_transform
     total_pdf, pdf, ...         -> the PDF file's /entry/pdf (a group link), when given
     notes                       NXnote (JSON): what is linked, what could not be
     process                     NXprocess: provenance
     nxreduce                    NXparameters NXReduce reads: first_frame 0, last_frame
                                 (hklflow uses every frame), monitor, norm (with a monitor)
     nxcombine, nxmasked_combine NXprocess: NXReduce's record that the merged volume exists
  /f1, /f2, ...                  NXentry per scan entry (its name)
     sample                      link to /entry/sample (as NXRefine links them)
     data                        NXdata: data -> TLABEL/ENTRY.h5, the raw frames (below;
                                 frame files such as CBF or TIFF cannot be linked: no data),
                                 frame_number, y_pixel, x_pixel, frame_time (s, frame
                                 starts), monitor_weight (NXRefine's CCTW --weights: monitor
                                 / norm, 0 on frames left out; 1 without a monitor), @axes
                                 [frame_number, y_pixel, x_pixel]
     instrument/monochromator    wavelength (angstrom)
     instrument/detector         distance (mm), pixel_size (mm), shape, beam_center_x/y,
                                 yaw, pitch, roll (deg), detector_orientation,
                                 sensor_material and sensor_thickness (m; with a sensor),
                                 orientation_matrix (NXRefine's Umat), frame_time (s, per
                                 frame, @source), pixel_mask (int8, 1 = pixel not used: the
                                 entry's mask.nxs pixel mask), pixel_mask_applied (false)
     instrument/goniometer       phi (start, @step), chi, omega, theta (deg)
     monitor1                    NXmonitor: data (the scan's monitor), frame_number (only
                                 with a monitor)
     peaks                       NXreflections: x, y, z, intensity, sigx, sigy, sigz,
                                 polar_angle (2 theta, deg)
     transform, masked_transform NXdata as NXRefine's per-rotation transforms: data ->
                                 the entry's KIND.nxs signal_sum (NXRefine's v), weights ->
                                 its weight_sum (n), axes copied, @angles
     nxlink, nxfind, nxrefine,   NXprocess: NXReduce's records of the tasks hklflow has
     nxtransform, ...            done (NXReduce.complete looks for them)

NXReduce finds its folders from the wrapper's path: sample (two folders up), label (the
wrapper's folder, ``nxrefine``), scan (TLABEL) and the scan directory ``TLABEL/`` beside the
wrapper, where NXRefine keeps the raw stacks and writes what it makes (NXRefine's CCTW
command puts its files beside the raw stack).  So the scan directory holds ``ENTRY.h5`` per
entry whose frames HDF5 can link, a relative symbolic link to the raw frames' file (one HDF5
stack: its file; several: the scan file, whose virtual dataset nexusformat misreads), and
NXRefine's transforms, if run, land there, never beside the raw data.  (A symbolic link, not
an HDF5 file with an external link: nexusformat does not follow a link through a second
file.)  Where the file system has no symbolic links, data/data links the raw file directly.

Pixel and frame coordinates (peaks, beam centre) are hklflow's continuous ones (centre of
pixel or frame i at i + 0.5), with which NXRefine maps every peak to hklflow's (h, k, l)
(hklflow.model.nxrefine).

The reader (read_nxrefine_scan, read_nxrefine_grid, read_6idd_logs: `hklflow import
nxrefine`) takes NXRefine's own files as NXRefine reads them, read-only: the sample, each
rotation's geometry, raw link, monitor, transmissions and pixel mask, the grid, and 6-ID-D's
logs beside the raw frames.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from .. import __version__
from ..base.atomic import atomic_path
from ..base.errors import FileFormatError
from .h5 import open_h5, write_provenance_h5
from .volume import read_grid_of

AXES = ("Ql", "Qk", "Qh")  # NXRefine's order: L slowest
DEFAULT_FRAME_TIME = 0.1  # s: NXRefine's own (NXReduce.link_data) where nothing says more
_UNITS = {"distance": "mm", "pixel_size": "mm", "beam_center_x": "pixel",
          "beam_center_y": "pixel", "yaw": "degree", "pitch": "degree", "roll": "degree",
          "wavelength": "angstrom", "phi": "degree", "chi": "degree", "omega": "degree",
          "theta": "degree", "temperature": "K", "polar_angle": "degree", "x": "pixel",
          "y": "pixel", "z": "frame", "sigx": "pixel", "sigy": "pixel", "sigz": "frame"}


@dataclass(frozen=True)
class WrapperEntry:
    """One scan entry as the wrapper shows it."""

    name: str  # f1, f2, ...
    parameters: dict  # hklflow.model.nxrefine.entry_parameters
    peaks: dict  # x, y, z, intensity, sigx, sigy, sigz, polar_angle (NXRefine's names)
    nframes: int
    frame_shape: tuple  # (rows, cols)
    raw: tuple | None  # (file, dataset) of the raw frames to link, or None (cannot)
    volumes: dict = field(default_factory=dict)  # kind -> the entry's volume file
    pixel_mask: np.ndarray | None = None  # (rows, cols), True = pixel not used
    monitor: np.ndarray | None = None  # per-frame monitor counts, or None
    monitor_weight: np.ndarray | None = None  # per frame (None: 1 for every frame)
    frame_time: float = DEFAULT_FRAME_TIME  # s per frame
    frame_time_source: str = "NXRefine's default: the raw data record no frame time"


def scan_directory(wrapper, sample: str) -> Path:
    """NXReduce's scan directory of a wrapper file (NXReduce.__init__: the wrapper's folder /
    its stem less 'SAMPLE_'), where NXRefine keeps the raw stacks and writes its results."""
    wrapper = Path(wrapper)
    return wrapper.parent / wrapper.stem.replace(sample + "_", "")


def _relative(target, start: Path) -> str:
    # (the folder resolved, not the file: a link to the scan directory's symbolic link stays
    # one, so NXRefine sees the raw stack there)
    target = Path(target).parent.resolve() / Path(target).name
    try:
        return os.path.relpath(target, start)
    except ValueError:  # another drive (Windows)
        return str(target)


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


def _task_record(parent, task: str, sequence_index: int, what: str) -> None:
    """An NXprocess named after an NXReduce task, as NXReduce.record writes it: NXReduce
    counts the task done when the group is there."""
    proc = _nxgroup(parent, task, "NXprocess")
    proc["program"] = task
    proc["sequence_index"] = sequence_index
    proc["version"] = f"hklflow v{__version__}"
    note = _nxgroup(proc, "note", "NXnote")
    note["type"] = "text/plain"
    note["data"] = f"done by hklflow: {what}"


def _raw_in_scan_directory(e: WrapperEntry, scan_dir: Path, notes: dict):
    """(file, dataset) for the entry's data/data: the scan directory's ENTRY.h5, a relative
    symbolic link to the raw frames' file, made here; the raw file itself where no symbolic
    link can be made (the reason in notes)."""
    link = scan_dir / f"{e.name}.h5"
    if link.is_symlink() or link.exists():
        link.unlink()
    try:
        os.symlink(_relative(e.raw[0], scan_dir.resolve()), link)
    except OSError as exc:
        notes.setdefault("raw_frames_linked_directly", {})[e.name] = (
            f"no symbolic link {link} ({exc}): NXRefine would write its transform beside "
            "the raw frames")
        return e.raw
    return link, e.raw[1]


def _sample(ent, sample: dict):
    smp = _nxgroup(ent, "sample", "NXsample")
    for k, v in sample.items():
        _field(smp, k, v)
        if k.startswith("unitcell_"):
            smp[k].attrs["units"] = "degree" if k[9:] in ("alpha", "beta", "gamma") else "angstrom"
    smp.attrs["target"] = smp.name  # nexusformat's mark of a linked group
    return smp


def _scan_entry(f, e: WrapperEntry, smp, angles, base: Path, raw) -> None:
    ent = _nxgroup(f, e.name, "NXentry")
    ent["sample"] = smp  # a hard link: NXRefine's per-rotation sample groups are the entry's
    p = e.parameters
    data = _nxgroup(ent, "data", "NXdata")
    rows, cols = e.frame_shape
    frames = np.arange(e.nframes, dtype=np.int64)
    data["frame_number"] = frames
    data["y_pixel"] = np.arange(rows, dtype=np.int64)
    data["x_pixel"] = np.arange(cols, dtype=np.int64)
    data.attrs["axes"] = np.array(["frame_number", "y_pixel", "x_pixel"], dtype=h5py.string_dtype())
    _field(data, "frame_time", e.frame_time * frames, units="s")  # as NXReduce.link_data
    weight = np.ones(e.nframes) if e.monitor_weight is None else e.monitor_weight
    _field(data, "monitor_weight", np.asarray(weight, dtype=np.float64), axes="frame_number")
    if raw is not None:
        data["data"] = h5py.ExternalLink(_relative(raw[0], base), raw[1])
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
    if "sensor_material" in p:  # NXmx's names (NXRefine itself corrects no parallax)
        _field(det, "sensor_material", p["sensor_material"])
        _field(det, "sensor_thickness", float(p["sensor_thickness"]), units="m")
    _field(det, "orientation_matrix", np.asarray(p["orientation_matrix"], dtype=float))
    _field(det, "frame_time", float(e.frame_time), units="s", source=e.frame_time_source)
    if e.pixel_mask is not None:  # NXRefine's convention, CCTW's --mask: nonzero = not used
        _field(det, "pixel_mask", np.asarray(e.pixel_mask, dtype=np.int8))
        _field(det, "pixel_mask_applied", False)  # the raw frames are not masked
    gon = _nxgroup(inst, "goniometer", "NXgoniometer")
    _field(gon, "phi", float(p["phi"]), step=float(p["phi_step"]))
    for k in ("chi", "omega", "theta"):
        _field(gon, k, float(p[k]))
    if e.monitor is not None:
        mon = _nxgroup(ent, "monitor1", "NXmonitor")  # where NXRefine's beamlines put theirs
        _field(mon, "data", np.asarray(e.monitor, dtype=np.float64))
        mon["frame_number"] = frames
        mon.attrs["signal"] = "data"
        mon.attrs["axes"] = "frame_number"
    pk = _nxgroup(ent, "peaks", "NXreflections")
    for k, v in e.peaks.items():
        _field(pk, k, np.asarray(v, dtype=float))
    for kind, vol in e.volumes.items():
        _hkl_data(ent, kind, vol, {"data": "/entry/{kind}/signal_sum",
                                   "weights": "/entry/{kind}/weight_sum"}, angles, base)
    tasks = [("nxlink", "raw frames linked")] if raw is not None else []
    tasks += [("nxfind", "peaks found (peaks.nxs)"),
              ("nxrefine", "orientation refined (orientation.nxs)")]
    tasks += [(f"nx{kind}", f"{kind} made ({Path(vol).name})") for kind, vol in e.volumes.items()]
    for i, (task, what) in enumerate(tasks, start=1):
        _task_record(ent, task, i, what)
    ent.attrs["default"] = "data" if e.raw is not None else next(iter(e.volumes), "data")


def write_nxrefine_wrapper(path, *, title: str, sample: dict, angles, entries, merged: dict,
                           symmetrized: dict, pdf: dict, notes: dict, provenance: dict,
                           monitor_norm: float | None = None) -> Path:
    """Write the wrapper (layout in the module docstring), atomically, after its scan
    directory's raw links.  merged and symmetrized: kind -> volume file; pdf: NXRefine's name
    (total_pdf, pdf, ...) -> a PDF file whose /entry/pdf is linked; angles: (gamma*, beta*,
    alpha*) of the cell; monitor_norm: the monitor that weighs 1 (None: no monitor)."""
    path = Path(path)
    base = path.parent.resolve()
    scan_dir = scan_directory(path, sample["name"])
    scan_dir.mkdir(parents=True, exist_ok=True)
    raw = {e.name: _raw_in_scan_directory(e, scan_dir, notes) for e in entries
           if e.raw is not None}
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
            _nxreduce_parameters(ent, max((e.nframes for e in entries), default=1),
                                 monitor_norm)
            for i, kind in enumerate(merged, start=1):
                _task_record(ent, f"nx{kind.replace('transform', 'combine')}", i,
                             f"entries merged ({Path(merged[kind]).name})")
            for e in entries:
                _scan_entry(f, e, smp, angles, base, raw.get(e.name))
    return path


def _nxreduce_parameters(ent, nframes: int, monitor_norm: float | None) -> None:
    """/entry/nxreduce (NXReduce.get_parameter): hklflow's frames and monitor, so that NXReduce
    uses them rather than its defaults (frames 10 to n - 10, monitor 'monitor1' / 50000)."""
    par = _nxgroup(ent, "nxreduce", "NXparameters")
    par["first_frame"] = 0
    par["last_frame"] = nframes - 1  # (NXReduce's last frame is included)
    if monitor_norm is not None:
        par["monitor"] = "monitor1"
        par["norm"] = float(monitor_norm)


# ---- reading NXRefine's files (hklflow import nxrefine) ----------------------------------
# Field names as NXRefine reads them (nxrefine.py read_parameters, nexpy/nxrefine 8876a8b):
# the sample from /entry/sample, the rest from each entry fN; theta also under its older
# names; phi a start with @step, or an array of frame angles.
THETA_NAMES = ("theta", "goniometer_pitch", "gonpitch")
_LENGTH_TO_MM = {"mm": 1.0, "millimeter": 1.0, "millimeters": 1.0, "m": 1e3, "meter": 1e3,
                 "meters": 1e3, "um": 1e-3, "micron": 1e-3, "microns": 1e-3}
_WAVELENGTH_TO_A = {"angstrom": 1.0, "angstroms": 1.0, "a": 1.0, "nm": 10.0, "m": 1e10}


@dataclass(frozen=True)
class NXRefineEntry:
    """One rotation fN of an NXRefine scan file, in NXRefine's own terms and units (mm,
    degrees, pixels, Angstrom); None where the file has no such field.  `where` says, per
    value, the field it was read from."""

    name: str
    raw_file: Path | None  # the external link's target file (resolved), None without a link
    raw_dataset: str | None
    raw_missing: bool  # the link's file does not exist
    nframes: int | None
    frame_shape: tuple | None
    wavelength: float | None
    detector: dict  # distance, xc, yc, yaw, pitch, roll, detector_orientation, pixel_size, shape
    goniometer: dict  # phi, phi_step, chi, omega, theta
    orientation_matrix: np.ndarray | None  # NXRefine's Umat
    calibration: dict | None  # pyFAI's refined parameters (calibration/refinement/parameters)
    monitor: np.ndarray | None  # per frame, the NXmonitor's signal
    where: dict
    # what NXRefine multiplies the monitor by (NXReduce.get_normalization): the attenuator's
    # transmission (a number) and the filter's (per frame: 1 - the shutter's log), or 1
    transmission: np.ndarray | float = 1.0
    pixel_mask: np.ndarray | None = None  # bool (rows, cols), True = not used; None: none


@dataclass(frozen=True)
class NXRefineScan:
    """An NXRefine scan ("wrapper") file: /entry/sample and its rotations."""

    path: Path
    sample: dict  # unitcell_*, space_group, laue_group, temperature (K)
    entries: tuple  # NXRefineEntry
    grid: dict | None  # Qh, Qk, Ql (r.l.u. arrays) of /entry/nxscans/transform or fN/transform
    parent_name: str | None  # /entry/nxscans/parent
    where: dict


def _text(value) -> str:
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.ndarray) and value.shape == ():
        return _text(value[()])
    return str(value)


def _value(grp, name, where: dict, key: str, units: dict | None = None):
    """A field's value (scalars as float, strings as str), scaled to our units by its
    @units; None when absent."""
    if grp is None or name not in grp or not isinstance(grp[name], h5py.Dataset):
        return None
    ds = grp[name]
    v = ds[()]
    where[key] = f"{ds.name}"
    if ds.dtype.kind in "SUO":
        return _text(v)
    v = np.asarray(v, dtype=float)
    if units is not None:
        u = _text(ds.attrs.get("units", "")).strip().lower()
        if u:
            if u not in units:
                raise FileFormatError(f"{ds.file.filename}:{ds.name}: units {u!r}, expected one "
                                      f"of {sorted(units)}")
            v = v * units[u]
    return float(v) if v.shape == () or v.size == 1 and key != "phi" else v


def _group(f, path):
    g = f.get(path)
    return g if isinstance(g, h5py.Group) else None


def _raw_link(f, entry: str, base: Path):
    link = f.get(f"{entry}/data/data", getlink=True)
    if isinstance(link, h5py.ExternalLink):
        target = Path(link.filename)
        target = target if target.is_absolute() else base / target
        return target, link.path, not target.is_file()
    if isinstance(link, (h5py.HardLink, h5py.SoftLink)) and isinstance(
            f.get(f"{entry}/data/data"), h5py.Dataset):  # frames inside the scan file itself
        return Path(f.filename), f[f"{entry}/data/data"].name, False
    return None, None, False


def _entry(f, name: str, base: Path) -> NXRefineEntry:
    where: dict = {}
    det = _group(f, f"{name}/instrument/detector")
    gon = _group(f, f"{name}/instrument/goniometer")
    mm = _LENGTH_TO_MM
    detector = {"distance": _value(det, "distance", where, "distance", mm),
                "xc": _value(det, "beam_center_x", where, "xc"),
                "yc": _value(det, "beam_center_y", where, "yc"),
                "pixel_size": _value(det, "pixel_size", where, "pixel_size", mm),
                "detector_orientation": _value(det, "detector_orientation", where,
                                               "detector_orientation"),
                "shape": _value(det, "shape", where, "shape"),
                "description": _value(det, "description", where, "description")}
    for k in ("yaw", "pitch", "roll"):
        detector[k] = _value(det, k, where, k)
    goniometer = {k: _value(gon, k, where, k) for k in ("chi", "omega")}
    goniometer["theta"] = next((v for v in (_value(gon, n, where, "theta") for n in THETA_NAMES)
                                if v is not None), None)
    phi = _value(gon, "phi", where, "phi")
    if phi is not None and np.ndim(phi) and np.size(phi) > 1:  # the frames' angles
        goniometer["phi"], goniometer["phi_step"] = float(phi[0]), float(phi[1] - phi[0])
    elif phi is not None:
        goniometer["phi"] = float(np.ravel(phi)[0])
        step = gon["phi"].attrs.get("step")
        goniometer["phi_step"] = None if step is None else float(np.ravel(step)[0])
        if step is not None:
            where["phi_step"] = f"{gon['phi'].name}@step"
    else:
        goniometer["phi"] = goniometer["phi_step"] = None
    wavelength = _value(_group(f, f"{name}/instrument/monochromator"), "wavelength", where,
                        "wavelength", _WAVELENGTH_TO_A)
    umat = _value(det, "orientation_matrix", where, "orientation_matrix")
    cal = _group(f, f"{name}/instrument/calibration/refinement/parameters")
    calibration = None
    if cal is not None:
        calibration = {k: (_text(cal[k][()]) if cal[k].dtype.kind in "SUO" else float(cal[k][()]))
                       for k in cal if isinstance(cal[k], h5py.Dataset)}
        where["calibration"] = cal.name
    monitor = None
    for mname in ("monitor", "monitor1"):  # NXRefine's (8876a8b) and 0.1.1's
        mon = _group(f, f"{name}/{mname}")
        if mon is not None:
            signal = _text(mon.attrs.get("signal", "data"))
            if signal in mon and isinstance(mon[signal], h5py.Dataset):
                monitor = np.asarray(mon[signal][()], dtype=float)
                where["monitor"] = mon[signal].name
                break
    transmission = 1.0
    att = _value(_group(f, f"{name}/instrument/attenuator"), "attenuator_transmission", where,
                 "attenuator_transmission")
    if att is not None:
        transmission = float(np.ravel(att)[0])
    filt = _group(f, f"{name}/instrument/filter/transmission")  # NXdata (read_logs)
    if filt is not None:
        signal = _text(filt.attrs.get("signal", "data"))
        if signal in filt:
            transmission = transmission * np.asarray(filt[signal][()], dtype=float)
            where["filter_transmission"] = filt[signal].name
    pixel_mask = None
    if det is not None and isinstance(det.get("pixel_mask"), h5py.Dataset) and \
            det["pixel_mask"].ndim == 2:
        pixel_mask = np.asarray(det["pixel_mask"][()]) != 0  # (CCTW's --mask: nonzero = out)
        where["pixel_mask"] = det["pixel_mask"].name
        where["pixel_mask_file"] = det.file.filename
    raw_file, raw_dataset, missing = _raw_link(f, name, base)
    nframes = frame_shape = None
    if raw_file is not None and not missing:
        try:
            ds = f[f"{name}/data/data"]
            nframes, frame_shape = int(ds.shape[0]), tuple(int(n) for n in ds.shape[1:])
        except (KeyError, OSError):
            missing = True
    data = _group(f, f"{name}/data")
    if nframes is None and data is not None and "frame_number" in data:
        nframes = int(data["frame_number"].shape[0])
        where["nframes"] = data["frame_number"].name
    return NXRefineEntry(name, raw_file, raw_dataset, missing, nframes, frame_shape, wavelength,
                         detector, goniometer, None if umat is None else np.asarray(umat),
                         calibration, monitor, where, transmission, pixel_mask)


def _grid(f, entries, where: dict) -> dict | None:
    """Qh, Qk, Ql of the parent's /entry/nxscans/transform (2026), else of an entry's
    transform (NXReduce.get_transform_grid)."""
    for gpath in ("entry/nxscans/transform", *(f"{k}/transform" for k in entries),
                  *(f"{k}/masked_transform" for k in entries)):
        g = _group(f, gpath)
        if g is not None and all(a in g for a in ("Qh", "Qk", "Ql")):
            where["grid"] = g.name
            return {a: np.asarray(g[a][()], dtype=float) for a in ("Qh", "Qk", "Ql")}
    return None


def read_nxrefine_grid(path) -> tuple[dict, str] | None:
    """(Qh/Qk/Ql, the group's path) of NXRefine's grid in a parent or scan file, or None."""
    where: dict = {}
    with open_h5(path) as f:
        grid = _grid(f, [k for k in f if k[-1:].isdigit()], where)
    return None if grid is None else (grid, where["grid"])


def read_6idd_logs(scan_directory, entry: str) -> tuple[dict, dict] | None:
    """APS 6-ID-D's logs of one rotation beside its raw frames, as NXRefine's Sector6
    beamline reads them (nxbeamline.py 8876a8b get_logs): ENTRY_head.txt, lines 'key, value'
    (numbers where they are), and ENTRY_meta.txt, a CSV with a header row, one value per
    frame per column; (head, meta columns) or None where either file is missing."""
    folder = Path(scan_directory)
    head_file, meta_file = folder / f"{entry}_head.txt", folder / f"{entry}_meta.txt"
    if not (head_file.is_file() and meta_file.is_file()):
        return None
    head = {}
    for i, line in enumerate(head_file.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        key, sep, value = line.partition(", ")
        if not sep:
            raise FileFormatError(f"{head_file}: line {i}: expected 'key, value', got {line!r}")
        try:
            head[key.strip()] = float(value)
        except ValueError:
            head[key.strip()] = value.strip()
    try:
        table = np.genfromtxt(meta_file, delimiter=",", names=True)
    except ValueError as exc:
        raise FileFormatError(f"{meta_file}: not a CSV with a header row ({exc})") from None
    meta = {n: np.atleast_1d(table[n]).astype(float) for n in (table.dtype.names or ())}
    return head, meta


def read_nxrefine_scan(path) -> NXRefineScan:
    """An NXRefine scan file (its sample and every rotation fN, NXReduce's entries: root
    entries whose names end in a digit), read-only; FileFormatError when it is none."""
    path = Path(path)
    base = path.parent
    where: dict = {}
    try:
        f = open_h5(path)
    except OSError as exc:
        raise FileFormatError(f"{path}: not an HDF5 file NXRefine wrote ({exc})") from None
    with f:
        smp = _group(f, "entry/sample")
        if smp is None:
            raise FileFormatError(f"{path}: no /entry/sample: not an NXRefine scan file")
        sample = {}
        for k in ("unitcell_a", "unitcell_b", "unitcell_c", "unitcell_alpha", "unitcell_beta",
                  "unitcell_gamma", "space_group", "laue_group", "temperature"):
            v = _value(smp, k, where, k)
            if v is not None:
                sample[k] = v
        for k, names in (("unit_cell", ("unitcell_a", "unitcell_b", "unitcell_c", "unitcell_alpha",
                                        "unitcell_beta", "unitcell_gamma")),):
            v = _value(smp, k, where, k)  # NXRefine's other spellings of the cell
            if v is not None and "unitcell_a" not in sample:
                sample.update(zip(names, (float(x) for x in np.ravel(v))))
        names = sorted((k for k in f if k[-1:].isdigit() and isinstance(f[k], h5py.Group)),
                       key=lambda k: (len(k), k))
        entries = tuple(_entry(f, k, base) for k in names)
        grid = _grid(f, names, where)
        parent = _value(_group(f, "entry/nxscans"), "parent", where, "parent")
    return NXRefineScan(path, sample, entries, grid, parent, where)
