"""`hklflow import nxrefine SOURCE DEST`: an hklflow experiment (DEST/config/config.yaml,
DEST/config/scans.tsv and the detector's PONI) made from an NXRefine experiment, whose raw
data stay where they are, referenced relative to DEST and never opened for writing.

What is read (docs/nexpy-nxrefine.md, "Importing"): every label folder SOURCE/SAMPLE/LABEL/
(or SOURCE itself when it is one) with its scan files SAMPLE_SCAN.nxs and its parent, in any
of NXRefine's layouts: SAMPLE_scans.nxs (2026: the parent's lattice, U and grid, the scans
it lists), SAMPLE_parent.nxs (up to 2025: a symbolic link to the parent scan's file) or
SAMPLE.nxs (0.1.1).  Per scan file: the cell and space group, the temperature (or the scan's
name, 300K, m5K, 1p5K), and per rotation fN the raw frames' external link, wavelength,
detector (distance, beam centre, yaw/pitch/roll, detector_orientation, pixel size), phi
start and step, chi, omega and theta.  The geometry is translated by
hklflow.model.nxrefine (lab_frame, detector_lab_map, detector_geometry): one detector for
the experiment (the parent's first rotation), each rotation's own position as a detector
translation, NXRefine's goniometer as hklflow's offset axes theta, omega and chi.  A
rotation's monitor becomes a column file (monitors/), NXRefine's norm the frames' reference.

What cannot be taken as it is is named, never guessed: refused, a wavelength that differs
between rotations, a detector nothing names, frames not the detector's shape; in the report,
a raw file that is missing (hklflow run sets its row aside), a listed scan without a file,
a rotation whose detector tilts differ from the reference's (hklflow refines one detector:
a different detector_orientation shows here too).
"""
from __future__ import annotations

import configparser
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from ..base.atomic import atomic_path, write_text_atomically
from ..base.errors import ConfigError, FileFormatError
from ..files.nxrefine import (NXRefineScan, read_6idd_logs, read_nxrefine_grid,
                              read_nxrefine_scan, scan_directory)
from ..model import nxrefine as nx
from ..model.crystal import space_group
from ..model.geometry import DetectorGeometry, detector_facts, pyfai_tables
from ..model.scan import temperature_label
from ..settings.schema import schema
from .init import (CONFIG_FILE, SCANS_TABLE, config_text, pyfai_detector_names, resolve_detector,
                   scans_table_text, with_defaults)

BY = "hklflow import nxrefine"
CALIBRATION = "nxrefine"  # the imported calibration's name
PONI_FILE = "calibration/nxrefine.poni"
MONITOR_FOLDER = "monitors"  # NXRefine's per-frame monitors, one column file per entry
MASK_FILE = "calibration/nxrefine_mask.h5"  # the union of its pixel masks, where they differ
DEFAULT_MONITOR = "MCS1"  # NXRefine's monitor setting's default (nxsettings.py 8876a8b)
DEFAULT_ORIENTATION_STRING = "-y +z -x"  # NXRefine's default (nxsettings: detector_orientation)
# NXParent.get_scan_directory: [prefix][m]VALUE[UNITS], '.' written 'p', m for < 0
SCAN_NAME = re.compile(r"^(?P<minus>m)?(?P<value>\d+(?:p\d+)?)(?P<units>[A-Za-z]*)$")
# tilts that differ by more than this from the reference's are named (hklflow refines one
# detector for the experiment from the reference's; a pixel at 200 mm from the beam moves
# 0.35 mm per 0.1 deg, about 2 pixels of 172 um)
TILT_NOTE_DEG = 0.01
WAVELENGTH_RTOL = 1e-5


@dataclass
class LabelFolder:
    """One SAMPLE/LABEL folder of an NXRefine experiment."""

    sample: str
    label: str
    folder: Path
    parent_file: Path | None = None
    layout: str = "no parent file"
    scans: list = field(default_factory=list)  # NXRefineScan
    listed: list = field(default_factory=list)  # stems the scans file lists
    skipped: list = field(default_factory=list)  # (file, why)


def _is_parent_name(path: Path, sample: str) -> bool:
    return path.stem.endswith("_scans") or path.name in (f"{sample}_parent.nxs", f"{sample}.nxs")


def label_folders(source: Path) -> list[LabelFolder]:
    """The label folders under SOURCE (SOURCE/SAMPLE/LABEL with NXRefine files, or SOURCE
    itself), each with its parent file, layout and scan files, in natural order."""
    from ..raw.rawfiles import natural_key

    folders = ([source] if any(source.glob("*.nxs")) else
               sorted({p.parent for p in source.glob("*/*/*.nxs")},
                      key=lambda p: natural_key(str(p))))
    out = []
    for folder in folders:
        sample, label = folder.parent.name, folder.name
        lf = LabelFolder(sample, label, folder)
        scans_files = sorted(folder.glob("*_scans.nxs"))
        if scans_files:
            lf.parent_file, lf.layout = scans_files[0], "scans file (NXRefine 2026)"
            lf.listed = _listed_scans(scans_files[0])
        elif (folder / f"{sample}_parent.nxs").is_symlink():
            lf.parent_file = (folder / f"{sample}_parent.nxs").resolve()
            lf.layout = "parent link (NXRefine up to 2025)"
        elif (folder / f"{sample}.nxs").is_file():
            lf.parent_file, lf.layout = folder / f"{sample}.nxs", "parent file (NXRefine 0.1.1)"
        for path in sorted(folder.glob(f"{sample}_*.nxs"), key=lambda p: natural_key(p.name)):
            if _is_parent_name(path, sample):
                continue
            try:
                scan = read_nxrefine_scan(path)
            except FileFormatError as exc:
                lf.skipped.append((path, str(exc)))
                continue
            if not scan.entries:
                lf.skipped.append((path, "no rotation entries f1, f2, ..."))
                continue
            lf.scans.append(scan)
        if lf.scans:
            out.append(lf)
    return out


def _listed_scans(path: Path) -> list[str]:
    from ..files.h5 import open_h5

    with open_h5(path) as f:
        scans = f.get("entry/nxscans/scans")
        if scans is None:
            return []
        return [s.decode() if isinstance(s, bytes) else str(s) for s in scans[()]]


def scan_temperature(scan: NXRefineScan, sample: str) -> tuple[float, str]:
    """(K, where it was read): /entry/sample/temperature, else the scan's name."""
    if "temperature" in scan.sample:
        return float(scan.sample["temperature"]), f"{scan.path.name} {scan.where['temperature']}"
    name = scan.path.stem[len(sample) + 1:]
    m = SCAN_NAME.match(name)
    if m and m["units"] in ("K", ""):
        return scan_temperature_from_name(m), f"the scan's name {name!r}"
    raise ConfigError(f"{scan.path}: no /entry/sample/temperature and the scan's name {name!r} "
                      "says no temperature (such as 300K)")


def scan_temperature_from_name(m: re.Match) -> float:
    """K of a SCAN_NAME match (m5K: -5, 1p5K: 1.5)."""
    return float(m["value"].replace("p", ".")) * (-1 if m["minus"] else 1)


def parent_scan(lf: LabelFolder, notes: list[str]) -> NXRefineScan:
    """The scan whose orientation seeds the others: the parent link's target; of a scans or
    0.1.1 parent file, the scan whose rotations hold the parent's U (NXRefine copies it to
    each scan before refining), else the first scan it lists; without a parent file, the
    first scan."""
    by_path = {s.path.resolve(): s for s in lf.scans}
    if lf.layout.startswith("parent link") and lf.parent_file.resolve() in by_path:
        return by_path[lf.parent_file.resolve()]
    if lf.parent_file is not None:
        try:
            parent = read_nxrefine_scan(lf.parent_file)
            umats = [e.orientation_matrix for e in parent.entries]
            for s in lf.scans:
                own = [e.orientation_matrix for e in s.entries]
                if umats and all(u is not None for u in umats) and len(own) == len(umats) and all(
                        o is not None and np.allclose(o, u, atol=1e-9) for o, u in zip(own, umats)):
                    notes.append(f"{lf.sample}/{lf.label}: parent scan {s.path.name}: it holds "
                                 f"the U of {lf.parent_file.name}")
                    return s
        except FileFormatError:
            pass
        for stem in lf.listed:
            for s in lf.scans:
                if s.path.stem == stem:
                    notes.append(f"{lf.sample}/{lf.label}: parent scan {s.path.name}: the first "
                                 f"{lf.parent_file.name} lists (no scan holds its U)")
                    return s
    notes.append(f"{lf.sample}/{lf.label}: parent scan {lf.scans[0].path.name}: the first scan "
                 f"({lf.layout})")
    return lf.scans[0]


def _detector_name(given: str | None, entry, notes: list[str]) -> tuple[str, str]:
    """(pyFAI's name of the detector, where it came from): --detector, the calibration's
    Detector, the configuration's description, else the one pyFAI detector of the shape and
    pixel size; ConfigError naming the candidates where that is not one."""
    if given:
        return resolve_detector(given), "--detector"
    for described, where in (((entry.calibration or {}).get("Detector"),
                              f"{entry.where.get('calibration')}/Detector"),
                             (entry.detector.get("description"), entry.where.get("description"))):
        if described:  # pyFAI's name, as NXRefine's configurations and calibrations write it
            try:
                return resolve_detector(str(described)), f"from {where}"
            except ConfigError:
                notes.append(f"{where} {described!r}: no pyFAI detector of that name")
    shape = entry.detector.get("shape")
    if shape is None:  # (NXRefine writes the shape into configurations, not scan files)
        shape = entry.frame_shape
    size = entry.detector.get("pixel_size")
    if shape is None or size is None:
        raise ConfigError(f"{entry.name}: no detector shape (instrument/detector/shape or the "
                          "raw frames) or pixel_size to know the detector by: give --detector "
                          "NAME (a pyFAI name)")
    names = pyfai_detector_names()
    same = sorted({names[k] for k, s in pyfai_tables()["shapes"].items()
                   if k in names and tuple(s) == tuple(int(n) for n in np.ravel(shape))})
    fits = [n for n in same if abs(detector_facts(n).pixel1 * 1e3 - size) < 1e-6 * size]
    if len(fits) != 1:
        raise ConfigError(f"the detector is {int(shape[0])} x {int(shape[1])} pixels of "
                          f"{size:g} mm: pyFAI detectors that fit: {', '.join(fits) or 'none'}; "
                          "give --detector NAME")
    return fits[0], (f"the one pyFAI detector of shape {list(np.ravel(shape))} and pixel "
                     f"{size:g} mm")


def _lab_map(entry, T):
    d = entry.detector
    missing = [k for k in ("distance", "xc", "yc", "pixel_size") if d.get(k) is None]
    if missing:
        raise ConfigError(f"{entry.name}: no {', '.join(missing)} in instrument/detector")
    return nx.detector_lab_map(d["distance"], d["xc"], d["yc"], d.get("yaw") or 0.0,
                               d.get("pitch") or 0.0, d.get("roll") or 0.0,
                               d.get("detector_orientation") or DEFAULT_ORIENTATION_STRING,
                               d["pixel_size"], T)


@dataclass
class Imported:
    config: dict
    config_notes: dict
    rows: list
    row_notes: dict
    reference: object  # DetectorGeometry
    report: list  # lines: what was translated, what is named
    missing_raw: list
    monitors: dict = field(default_factory=dict)  # column file -> (values, where they were)
    mask: np.ndarray | None = None  # a pixel mask to write to MASK_FILE (None: none, or linked)


def import_experiment(source, dest, detector: str | None = None) -> Imported:
    """The config, scans table rows and reference detector of an NXRefine experiment (no
    file written)."""
    source, dest = Path(source), Path(dest)
    folders = label_folders(source)
    if not folders:
        raise ConfigError(f"{source}: no NXRefine scan files (SAMPLE/LABEL/SAMPLE_SCAN.nxs with "
                          "/entry/sample and rotations f1, f2, ...)")
    report, missing_raw = [], []
    samples_per_name = {}
    for lf in folders:
        samples_per_name.setdefault(lf.sample, []).append(lf)
    parents = {id(lf): parent_scan(lf, report) for lf in folders}
    ref_scan = parents[id(folders[0])]
    ref = ref_scan.entries[0]
    orient = ref.detector.get("detector_orientation") or DEFAULT_ORIENTATION_STRING
    if not ref.detector.get("detector_orientation"):
        report.append(f"{ref_scan.path.name} {ref.name}: no detector_orientation: NXRefine's "
                      f"default {DEFAULT_ORIENTATION_STRING!r}")
    T, orientation = nx.lab_frame(orient)
    name, named_by = _detector_name(detector, ref, report)
    report.append(f"detector {name}: {named_by}")
    facts = detector_facts(name, orientation)
    wavelength = ref.wavelength
    if wavelength is None:
        raise ConfigError(f"{ref_scan.path}: {ref.name}/instrument/monochromator/wavelength is "
                          "missing")
    reference = nx.detector_geometry(_lab_map(ref, T), name, wavelength, facts, orientation)
    _against_calibration(reference, ref, ref_scan, report)
    where_ref = f"{ref_scan.path.name} /{ref.name}/instrument/detector"
    config_notes = {
        "instrument.wavelength": f"from {ref_scan.path.name} {ref.where['wavelength']}",
        "instrument.detector.name": named_by,
        "instrument.detector.orientation": f"pyFAI's that NXRefine's {orient!r} is at zero tilts",
        "instrument.goniometer.scan_axis": "NXRefine's phi axis (its z)",
        "instrument.goniometer.offset_axes.chi": "NXRefine's Gmat = R2(theta) R3(omega) R1(chi)",
        f"calibrations.{CALIBRATION}.poni": f"from {where_ref} (distance, beam centre, "
                                            f"yaw/pitch/roll, detector_orientation {orient!r})",
    }
    rows, row_notes, samples, monitors = [], {}, {}, {}
    monitor_name = _setting(source, folders[0], "monitor") or DEFAULT_MONITOR
    for lf in folders:
        hk_sample = _name(lf.sample if len(samples_per_name[lf.sample]) == 1
                          else f"{lf.sample}_{lf.label}", report)
        for path, why in lf.skipped:
            report.append(f"{path}: skipped: {why}")
        have = {s.path.stem for s in lf.scans}
        for stem in lf.listed:
            if stem not in have:
                report.append(f"{lf.parent_file.name} lists {stem}: no file {stem}.nxs")
        parent = parents[id(lf)]
        temps = {}
        for scan in lf.scans:
            t, t_where = scan_temperature(scan, lf.sample)
            label = temperature_label(t)
            if label in temps:
                raise ConfigError(f"{scan.path} and {temps[label].path}: both at {label}; hklflow "
                                  "takes one scan file per sample and temperature")
            temps[label] = scan
            row_notes[len(rows)] = (f"{hk_sample} at {label}: from {scan.path} "
                                    f"(temperature: {t_where})")
            for e in scan.entries:
                rows.append(_row(hk_sample, t, scan, e, reference, T, facts, wavelength, dest,
                                 report, missing_raw, monitors, monitor_name))
        sg, cell = _crystal(parent)
        samples[hk_sample] = {"space_group": sg, "cell": cell, "parent": {
            "temperature": scan_temperature(parent, lf.sample)[0]}}
        config_notes[f"samples.{hk_sample}.parent.temperature"] = f"of {parent.path.name}"
    gon = nx.goniometer(T).as_dict()
    config = {"experiment": dest.resolve().name, "scans_table": SCANS_TABLE,
              "instrument": {"detector": {"name": name, "orientation": orientation},
                             "wavelength": wavelength,
                             "polarization_fraction": _polarization(source, report),
                             "goniometer": gon},
              "calibrations": {CALIBRATION: {"poni": PONI_FILE}},
              "samples": samples}
    transform = {}
    grid = _grid(folders[0], parents[id(folders[0])], report)
    if grid:
        transform.update(grid[0])
        for a in "hkl":
            config_notes[f"reduction.transform.grid.{a}"] = f"NXRefine's grid, {grid[1]}"
    if monitors:
        norm = _norm(source, folders[0])
        if norm is not None:
            transform["monitor_reference"] = norm[0]
            config_notes["reduction.transform.monitor_reference"] = f"NXRefine's norm, {norm[1]}"
        for r in rows:  # (the column is the table's: every row has a cell)
            r.setdefault("monitor", "")
        dark = sum(int(np.sum(v <= 0)) for v, _ in monitors.values())
        if dark:  # (a closed shutter, a beam dump: NXRefine weighs these frames 0)
            transform["bad_monitor_frames"] = "leave_out"
            config_notes["reduction.transform.bad_monitor_frames"] = (
                f"{dark} frames with no beam (monitor x transmission 0), as NXRefine's weight 0")
    if transform:
        config["reduction"] = {"transform": transform}
    mask = _pixel_mask([e for lf in folders for s in lf.scans for e in s.entries], facts, dest,
                       report)
    if mask is not None:
        config["instrument"]["detector"].update(mask_file=mask[0], mask_dataset=mask[1])
        config_notes["instrument.detector.mask_file"] = mask[2]
    return Imported(with_defaults(config, schema()), config_notes, rows, row_notes, reference,
                    report, missing_raw, monitors, mask[3] if mask else None)


def _against_calibration(reference, entry, scan: NXRefineScan, report: list) -> None:
    """Where NXRefine's detector fields put the pixels against its own pyFAI calibration
    (calibration/refinement/parameters), said when they differ by more than a tenth of a
    pixel: its powder calibration copies pyFAI's rot1..3 as yaw/pitch/roll, which its own
    formula reads as other rotations, and its refinement may have moved the detector since.
    The detector fields are imported (what NXRefine's transforms used)."""
    cal = entry.calibration or {}
    keys = ("Distance", "Poni1", "Poni2", "Rot1", "Rot2", "Rot3")
    if not all(isinstance(cal.get(k), float) for k in keys):
        return
    powder = DetectorGeometry(reference.detector, *(cal[k] for k in keys),
                              wavelength=reference.wavelength)  # (pyFAI's orientation then: 3)
    ny, nx_ = reference.shape
    rows, cols = np.meshgrid(np.linspace(0.5, ny - 0.5, 5), np.linspace(0.5, nx_ - 0.5, 5),
                             indexing="ij")
    pos = reference.lab_positions(rows, cols)
    r2, c2 = powder.pixel_from_direction(pos / np.linalg.norm(pos, axis=-1, keepdims=True))
    off = float(np.nanmax(np.hypot(r2 - rows, c2 - cols)))
    if off > 0.1:
        report.append(f"{scan.path.name} {entry.name}: its detector fields place pixels up to "
                      f"{off:.3g} px from its own pyFAI calibration ({entry.where['calibration']}; "
                      "NXRefine copies pyFAI's rot1..3 as yaw/pitch/roll, and may have refined "
                      "the detector since): the detector fields are imported, and hklflow "
                      "refines the detector")


def _name(folder_name: str, report: list) -> str:
    """An hklflow sample name of NXRefine's folder names (letters, digits, _, . and -, at most
    64, starting with a letter or digit: docs/configuration.md), what else they hold as _."""
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", folder_name).lstrip("_.-")[:64] or "sample"
    if name != folder_name:
        report.append(f"sample {folder_name!r} is named {name!r} (hklflow's names: letters, "
                      "digits, _, . and -)")
    return name


def _row(sample, temperature, scan, e, reference, T, facts, wavelength, dest, report,
         missing_raw, monitors, monitor_name) -> dict:
    where = f"{scan.path.name} {e.name}"
    if e.wavelength is not None and abs(e.wavelength - wavelength) > WAVELENGTH_RTOL * wavelength:
        raise ConfigError(f"{where}: wavelength {e.wavelength:g} A, the reference's "
                          f"{wavelength:g} A: hklflow takes one wavelength per experiment")
    if e.raw_file is None:
        raise ConfigError(f"{where}: data/data is no link to raw frames")
    if e.raw_missing:
        missing_raw.append(f"{where}: raw file {e.raw_file} is missing")
    elif e.frame_shape is not None and tuple(e.frame_shape) != tuple(facts.shape):
        raise ConfigError(f"{where}: frames of {e.frame_shape[0]} x {e.frame_shape[1]} pixels in "
                          f"{e.raw_file}, but {facts.name}'s are {facts.shape[0]} x "
                          f"{facts.shape[1]}: give --detector NAME")
    g = e.goniometer
    if g.get("phi") is None or not g.get("phi_step"):
        raise ConfigError(f"{where}: instrument/goniometer/phi (with @step, or the frames' angles) "
                          "is missing")
    if e.nframes is None:
        raise ConfigError(f"{where}: the number of frames is unknown (raw file missing and no "
                          "data/frame_number)")
    lab_map = _lab_map(e, T)
    tilt = nx.tilt_difference(reference, lab_map, facts)
    if tilt > TILT_NOTE_DEG:
        report.append(f"{where}: its detector tilts differ from the reference's by {tilt:.3g} deg "
                      "(hklflow refines one detector; the position is kept as a translation)")
    d = nx.translation(reference, lab_map, facts)
    row = {"sample": sample, "temperature": f"{temperature:.6g}", "entry": e.name,
           "data": os.path.relpath(e.raw_file, dest.resolve()), "dataset": e.raw_dataset,
           "nframes": str(e.nframes), "phi_start": f"{g['phi']:.10g}",
           "phi_step": f"{g['phi_step']:.10g}"}
    # (to 0.1 nm: a translation smaller is the arithmetic's rounding, not the detector's)
    row.update({k: f"{round(v, 10) + 0.0:.10g}"
                for k, v in zip(("det_ddist", "det_dponi1", "det_dponi2"), d)})
    for k in ("theta", "omega", "chi"):
        row[k] = f"{(g.get(k) or 0.0):.10g}"
    monitor, transmission, source = e.monitor, e.transmission, e.where.get("monitor")
    if monitor is None:  # 6-ID-D's logs beside the raw frames (a scan file not yet read them)
        monitor, transmission, source = _6idd_monitor(scan, e, monitor_name, report)
    if monitor is not None and monitor.size == e.nframes:
        name = f"{MONITOR_FOLDER}/{sample}_{temperature_label(temperature)}_{e.name}.txt"
        # (NXRefine weighs each frame by monitor x transmissions: the photons on the sample)
        monitors[name] = (monitor * transmission, f"{source}" + (
            "" if np.all(np.asarray(transmission) == 1.0) else " x its transmissions"))
        row["monitor"] = name
    elif monitor is not None:
        report.append(f"{where}: monitor {source} has {monitor.size} values for "
                      f"{e.nframes} frames: not imported")
    return row


def _6idd_monitor(scan: NXRefineScan, e, monitor_name: str, report: list):
    """(monitor, transmission, where) from 6-ID-D's ENTRY_meta.txt column `monitor_name` and
    ENTRY_head.txt's Calculated_filter_transmission (NXRefine's attenuator transmission) in
    the scan's folder; (None, 1, None) without them."""
    sample = scan.path.parent.parent.name
    folder = scan_directory(scan.path, sample)
    logs = read_6idd_logs(folder, e.name)
    if logs is None:
        return None, 1.0, None
    head, meta = logs
    if monitor_name not in meta:
        report.append(f"{folder / (e.name + '_meta.txt')}: no column {monitor_name!r} (NXRefine's "
                      f"monitor setting; columns: {', '.join(meta)}): no monitor imported")
        return None, 1.0, None
    values = meta[monitor_name].copy()
    if values.size >= 3:  # (as NXRefine: the first and last frames' counts are partial)
        values[0], values[-1] = values[1], values[-2]
    transmission = float(head.get("Calculated_filter_transmission", 1.0))
    where = f"{folder / (e.name + '_meta.txt')} column {monitor_name} (6-ID-D)"
    if "Calculated_filter_transmission" in head:
        where += f" x Calculated_filter_transmission {transmission:g}"
    return values, transmission, where


def _crystal(scan: NXRefineScan):
    s = scan.sample
    keys = ("unitcell_a", "unitcell_b", "unitcell_c", "unitcell_alpha", "unitcell_beta",
            "unitcell_gamma")
    if not all(k in s for k in keys):
        raise ConfigError(f"{scan.path}: /entry/sample has no cell (unitcell_a ... unitcell_gamma)")
    cell = [float(s[k]) for k in keys]
    symbol = s.get("space_group")
    if not symbol:
        raise ConfigError(f"{scan.path}: /entry/sample/space_group is missing")
    try:
        sg = space_group(str(symbol)).xhm()
    except ValueError as exc:
        raise ConfigError(f"{scan.path}: /entry/sample/space_group {symbol!r}: {exc}") from None
    return sg, cell


def _grid(lf: LabelFolder, parent: NXRefineScan, report: list) -> tuple[dict, str] | None:
    """reduction.transform's grid (and max_voxels) of NXRefine's: the parent file's, else
    the parent scan's; with where it was read."""
    found = read_nxrefine_grid(lf.parent_file) if lf.parent_file is not None else None
    if found is not None:
        found = (found[0], f"{lf.parent_file.name} {found[1]}")
    elif parent.grid is not None:
        found = (parent.grid, f"{parent.path.name} {parent.where['grid']}")
    if found is None:
        return None
    grid, voxels = {}, 1
    for axis, q in zip("hkl", ("Qh", "Qk", "Ql")):
        v = found[0][q]
        if v.size < 2 or not np.allclose(np.diff(v), v[1] - v[0], rtol=1e-6):
            report.append(f"{found[1]}/{q}: not an even grid: not imported")
            return None
        grid[axis] = [float(v[0]), float(v[-1]), float(round((v[-1] - v[0]) / (v.size - 1), 12))]
        voxels *= v.size
    out = {"grid": grid}
    default = schema()["properties"]["reduction"]["properties"]["transform"]["properties"][
        "max_voxels"]["default"]
    if voxels > default:
        out["max_voxels"] = int(voxels)
        report.append(f"NXRefine's grid has {voxels:.3g} voxels: max_voxels raised to it "
                      f"(a transform job holds about {8 * voxels / 1e9:.1f} GB)")
    return out, found[1]


def _pixel_mask(entries, facts, dest: Path, report: list):
    """instrument.detector's user mask from NXRefine's pixel masks (nonzero = not used, as
    hklflow's): (mask_file, mask_dataset, note, array to write or None), or None where no
    rotation masks a pixel.  One mask for all: the scan file's own dataset; masks that
    differ: their union, written to MASK_FILE (hklflow takes one user mask), and said."""
    masked = [e for e in entries if e.pixel_mask is not None and e.pixel_mask.any()]
    if not masked:
        return None
    for e in masked:
        if e.pixel_mask.shape != tuple(facts.shape):
            raise ConfigError(f"{e.where['pixel_mask']}: a pixel mask of {e.pixel_mask.shape}, "
                              f"not {facts.name}'s {tuple(facts.shape)}")
    first = masked[0]
    if len(masked) == len(entries) and all(np.array_equal(e.pixel_mask, first.pixel_mask)
                                           for e in masked):
        return (os.path.relpath(first.where["pixel_mask_file"], dest.resolve()),
                first.where["pixel_mask"], f"NXRefine's pixel mask, the same for every rotation "
                f"({int(first.pixel_mask.sum())} pixels)", None)
    union = np.logical_or.reduce([e.pixel_mask for e in masked])
    report.append(f"NXRefine's pixel masks differ between rotations: their union "
                  f"({int(union.sum())} pixels) is the experiment's mask, {MASK_FILE}")
    return MASK_FILE, "/entry/mask", "the union of NXRefine's pixel masks", union


def _setting(source: Path, lf: LabelFolder, name: str, with_where: bool = False):
    """An [nxreduce] setting as NXReduce.get_parameter finds it: the parent's
    nxscans/settings, else a scan file's /entry/nxreduce, else tasks/settings.ini; (value,
    where) with with_where; None where none says."""
    from ..files.h5 import open_h5

    places = ([(lf.parent_file, f"entry/nxscans/settings/{name}")] if lf.parent_file else [])
    places += [(s.path, f"entry/nxreduce/{name}") for s in lf.scans]
    for path, field_ in places:
        with open_h5(path) as f:
            if field_ in f and isinstance(f[field_], h5py.Dataset):
                v = f[field_][()]
                v = v.decode() if isinstance(v, bytes) else v
                return (v, f"{path.name} /{field_}") if with_where else v
    ini = source / "tasks" / "settings.ini"
    if ini.is_file():
        cp = configparser.ConfigParser()
        cp.read(ini)
        v = cp.get("nxreduce", name, fallback=None)
        if v is not None:
            return (v, f"{ini} [nxreduce] {name}") if with_where else v
    return None


def _norm(source: Path, lf: LabelFolder) -> tuple[float, str] | None:
    """NXRefine's monitor norm and where it was (_setting)."""
    found = _setting(source, lf, "norm", with_where=True)
    try:
        return (float(found[0]), found[1]) if found is not None else None
    except (TypeError, ValueError):
        return None


def _polarization(source: Path, report: list) -> float:
    ini = source / "tasks" / "settings.ini"
    default = schema()["properties"]["instrument"]["properties"]["polarization_fraction"]["default"]
    if ini.is_file():
        cp = configparser.ConfigParser()
        cp.read(ini)
        value = cp.get("nxreduce", "polarization", fallback=None)
        if value is not None:
            try:
                return float(value)
            except ValueError:
                report.append(f"{ini} [nxreduce] polarization {value!r}: not a number; "
                              f"hklflow's default {default}")
    return default


def write_experiment(imported: Imported, source: str, dest, force: bool = False,
                     by: str = BY, poni_file: str = PONI_FILE) -> list[Path]:
    """Write DEST/config/config.yaml, DEST/config/scans.tsv, the PONI and the monitors'
    column files (source: what the experiment was made from, in words); FileExistsError
    unless force."""
    dest = Path(dest)
    files = [dest / CONFIG_FILE, dest / SCANS_TABLE, dest / poni_file]
    existing = [str(f) for f in files[:2] if f.exists()]
    if existing and not force:
        raise FileExistsError(f"{' and '.join(existing)} already exist(s): hklflow import never "
                              "overwrites a config (--force replaces it)")
    files[2].parent.mkdir(parents=True, exist_ok=True)
    files[0].parent.mkdir(parents=True, exist_ok=True)
    imported.reference.write_poni(files[2])
    if imported.mask is not None:
        with atomic_path(dest / MASK_FILE) as tmp, h5py.File(tmp, "w") as f:
            f.create_dataset("entry/mask", data=imported.mask.astype(np.int8), compression="gzip")
        files.append(dest / MASK_FILE)
    for name, (values, where) in imported.monitors.items():
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        write_text_atomically(dest / name, f"# NXRefine's monitor, from {where}\n# frame value\n"
                              + "".join(f"{i} {v:.10g}\n" for i, v in enumerate(values)))
        files.append(dest / name)
    write_text_atomically(files[0], config_text(imported.config, imported.config_notes, source,
                                                by=by))
    write_text_atomically(files[1], scans_table_text(imported.rows, by=by,
                                                     row_notes=imported.row_notes))
    return files
