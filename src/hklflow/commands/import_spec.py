"""`hklflow import spec SPECFILE DEST --scans N,... --frames PATTERN --poni FILE`: an hklflow
experiment from a SPEC file's rotation scans, for QM2 (CHESS) experiments that never went
through NXRefine.  The SPEC file is read by silx (which pyFAI requires), as NXRefine's QM2
beamline reads it (nexpy/QM2-beamline, beamline.py b92059e: the ``phi`` column gives the
start and step, ``90 - chi`` is NXRefine's chi, ``th`` its theta, the mean of ``sampleT``
the temperature, a counter column the monitor).  NXRefine's goniometer and lab
(hklflow.model.nxrefine: lab_frame of its default detector orientation, at which QM2's
PONI files place the detector as pyFAI does) are hklflow's goniometer here too.

Each scan's frames are the files PATTERN gives with ``{scan}`` its number (``{scan:03d}``
zero-padded), e.g. ``raw/lsco/xtal/*/lsco_{scan:03d}/*.cbf``; the folder above a scan's
frame folder (QM2's temperature folder, ``300K``) groups scans into one temperature, whose
rotations f1, f2, ... are its scans in number order.  The detector is the PONI's (the
calibration, imported); what a SPEC file cannot say (space group, cell) is a FILL_IN
placeholder unless given, as `hklflow init` writes it.
"""
from __future__ import annotations

import glob
import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ..base.errors import ConfigError
from ..model import nxrefine as nx
from ..model.geometry import DetectorGeometry
from ..model.scan import temperature_label
from ..raw.rawfiles import natural_key
from ..settings.schema import schema
from .import_nxrefine import (DEFAULT_ORIENTATION_STRING, MONITOR_FOLDER, SCAN_NAME, Imported,
                              scan_temperature_from_name)
from .init import placeholder, resolve_detector, with_defaults

CALIBRATION = "qm2"
PONI_FILE = "calibration/qm2.poni"
PHI, CHI, THETA, TEMPERATURE = "phi", "chi", "th", "sampleT"  # QM2's SPEC names
CHI_ZERO = 90.0  # NXRefine's chi = 90 - SPEC's chi (QM2 beamline.py L219-221)


@dataclass(frozen=True)
class SpecScan:
    number: int
    phi: np.ndarray  # the phi column: one value per point (frame)
    chi: float | None  # SPEC's positioner
    th: float | None
    temperature: float | None  # mean of sampleT
    columns: dict  # label -> values
    where: str


def read_spec_scans(path, numbers) -> dict[int, SpecScan]:
    """The scans `numbers` of a SPEC file (silx.io.specfile), ConfigError naming a scan
    that is not there or has no phi column."""
    from silx.io.specfile import SpecFile, SfErrScanNotFound

    try:
        sf = SpecFile(str(path))
    except Exception as exc:  # (silx raises its own for a file that is no SPEC file)
        raise ConfigError(f"{path}: not a SPEC file silx can read ({exc})") from None
    out = {}
    try:
        for n in numbers:
            try:
                scan = sf[f"{n}.1"]
            except (SfErrScanNotFound, KeyError, IndexError):
                raise ConfigError(f"{path}: no scan #S {n} (it has {len(sf)} scans: "
                                  f"{', '.join(str(k) for k in sf.keys()[:12])} ...)") from None
            labels = list(scan.labels)
            data = np.atleast_2d(scan.data)
            columns = {lab: np.asarray(data[i], dtype=float) for i, lab in enumerate(labels)}
            if PHI not in columns or columns[PHI].size < 2:
                raise ConfigError(f"{path} scan {n}: no '{PHI}' column of two or more points "
                                  f"(columns: {', '.join(labels)})")
            motors = dict(zip(scan.motor_names, scan.motor_positions))
            t = columns.get(TEMPERATURE)
            out[n] = SpecScan(n, columns[PHI], motors.get(CHI), motors.get(THETA),
                              None if t is None else float(np.mean(t)), columns,
                              f"{Path(path).name} #S {n}")
    finally:
        sf.close()
    return out


def _frames(pattern: str, number: int, base: Path) -> list[str]:
    try:
        expanded = pattern.format(scan=number)
    except (KeyError, IndexError, ValueError) as exc:
        raise ConfigError(f"--frames {pattern!r}: {exc}: expected {{scan}} (or {{scan:03d}}) "
                          "where the scan number goes") from None
    return sorted(glob.glob(str(base / expanded) if not os.path.isabs(expanded) else expanded),
                  key=natural_key)


def import_spec(spec_file, dest, numbers, frames: str, poni, sample: str,
                detector: str | None = None, monitor: str | None = None,
                space_group: str | None = None, cell=None) -> Imported:
    """The config, rows and detector of the SPEC scans `numbers` (no file written)."""
    dest = Path(dest)
    report, missing = [], []
    if not Path(poni).is_file():
        raise ConfigError(f"--poni {poni}: no such file")
    reference = DetectorGeometry.from_poni_file(poni)
    if not detector and reference.detector in (None, "", "Detector"):
        raise ConfigError(f"--poni {poni}: names no pyFAI detector: give --detector NAME")
    reference = replace(reference, detector=resolve_detector(detector or reference.detector))
    scans = read_spec_scans(spec_file, numbers)
    T, orientation = nx.lab_frame(DEFAULT_ORIENTATION_STRING)
    groups: dict[str, list] = {}
    for n in numbers:
        files = _frames(frames, n, Path.cwd())
        if not files:
            raise ConfigError(f"--frames {frames!r}: no file for scan {n} "
                              f"({frames.format(scan=n)})")
        folder = Path(files[0]).parent.parent  # QM2: TEMPERATURE/SAMPLE_NNN/frames
        groups.setdefault(str(folder), []).append((n, files))
    rows, row_notes, monitors, temps = [], {}, {}, {}
    for folder, members in groups.items():
        t_scans = [scans[n] for n, _ in members]
        t, t_where = _temperature(Path(folder).name, t_scans)
        label = temperature_label(t)
        if label in temps:
            raise ConfigError(f"scans {temps[label]} and {[n for n, _ in members]} are both at "
                              f"{label}: give each temperature its own folder")
        temps[label] = [n for n, _ in members]
        row_notes[len(rows)] = (f"{sample} at {label} (temperature: {t_where}): SPEC scans "
                                f"{', '.join(str(n) for n, _ in members)} of {spec_file}")
        for i, (n, files) in enumerate(members, start=1):
            s = scans[n]
            step = float(s.phi[1] - s.phi[0])
            if len(files) != s.phi.size:
                report.append(f"{s.where}: {s.phi.size} points, {len(files)} frame files: "
                              f"the files' count is taken")
            common = os.path.commonprefix([os.path.basename(f) for f in files])
            pattern = os.path.join(os.path.dirname(files[0]), common + "*" + Path(files[0]).suffix)
            if sorted(glob.glob(pattern)) != sorted(files):  # hklflow's rows name frames by a glob
                raise ConfigError(f"scan {n}: its frames {files[0]} ... are not all the files "
                                  f"{pattern} matches: give each scan its own folder")
            row = {"sample": sample, "temperature": f"{t:.6g}", "entry": f"f{i}",
                   "data": os.path.relpath(os.path.abspath(pattern), dest.resolve()),
                   "nframes": str(len(files)), "phi_start": f"{float(s.phi[0]):.10g}",
                   "phi_step": f"{step:.10g}", "theta": f"{(s.th or 0.0):.10g}", "omega": "0",
                   "chi": f"{CHI_ZERO - (s.chi or 0.0):.10g}"}
            for name, value in (("chi", s.chi), ("th", s.th)):
                if value is None:
                    report.append(f"{s.where}: no positioner {name!r}: taken as 0")
            if monitor:
                if monitor not in s.columns:
                    raise ConfigError(f"{s.where}: no column {monitor!r} for --monitor (columns: "
                                      f"{', '.join(s.columns)})")
                values = s.columns[monitor][:len(files)]
                if values.size == len(files):
                    name = f"{MONITOR_FOLDER}/{sample}_{label}_f{i}.txt"
                    monitors[name] = (values, f"{s.where} column {monitor}")
                    row["monitor"] = name
            rows.append(row)
    for r in rows:
        if monitors:
            r.setdefault("monitor", "")
    parent = max(temps, key=lambda k: float(k[:-1]))  # the warmest: most users' parent
    config = {"experiment": dest.resolve().name, "scans_table": "config/scans.tsv",
              "instrument": {"detector": {"name": reference.detector, "orientation":
                                          reference.orientation},
                             "wavelength": reference.wavelength,
                             "goniometer": nx.goniometer(T).as_dict()},
              "calibrations": {CALIBRATION: {"poni": PONI_FILE}},
              "samples": {sample: {
                  "space_group": space_group or placeholder("space group symbol or number"),
                  "cell": [float(v) for v in cell] if cell else placeholder(
                      "a, b, c (Angstrom), alpha, beta, gamma (deg)"),
                  "parent": {"temperature": float(parent[:-1])}}}}
    notes = {"instrument.wavelength": f"the PONI's ({poni})",
             "instrument.goniometer.offset_axes.chi": "NXRefine's, as its QM2 beamline takes "
                                                      "SPEC's angles: chi = 90 - SPEC's chi, "
                                                      "theta = th",
             f"calibrations.{CALIBRATION}.poni": f"imported from {poni}",
             f"samples.{sample}.parent.temperature": "the warmest temperature (give another "
                                                     "if the parent is not)"}
    report.append(f"orientation {orientation} as pyFAI's PONI gives it; detector "
                  f"{reference.detector}")
    return Imported(with_defaults(config, schema()), notes, rows, row_notes, reference, report,
                    missing, monitors)


def _temperature(folder_name: str, scans: list) -> tuple[float, str]:
    """A temperature group's K: its folder's name (300K, m5K, 1p5K), else the mean of its
    scans' sampleT."""
    m = SCAN_NAME.match(folder_name)
    if m and m["units"] in ("K",):
        return scan_temperature_from_name(m), f"its folder {folder_name!r}"
    readings = [s.temperature for s in scans if s.temperature is not None]
    if not readings:
        raise ConfigError(f"{', '.join(s.where for s in scans)}: no {TEMPERATURE} column and "
                          f"the folder {folder_name!r} names no temperature (such as 300K)")
    return round(float(np.mean(readings)), 1), f"the mean {TEMPERATURE} of {scans[0].where}"


def parse_numbers(text: str) -> list[int]:
    """'12,13,20-22' -> [12, 13, 20, 21, 22]."""
    out = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        lo, _, hi = part.partition("-")
        try:
            a, b = int(lo), int(hi or lo)
        except ValueError:
            raise ConfigError(f"--scans {text!r}: expected numbers such as 12,13,20-22") from None
        out += list(range(a, b + 1))
    if not out or len(set(out)) != len(out) or any(n < 0 for n in out):
        raise ConfigError(f"--scans {text!r}: expected distinct scan numbers such as 12,13,20-22")
    return out
