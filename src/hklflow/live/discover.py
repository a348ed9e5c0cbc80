"""Scans found by their raw files (config ``live.discover``), so that `hklflow watch` follows
new scans without anyone editing the scans table.

The pattern is a path relative to the experiment directory with the fields {sample},
{temperature} and {entry}, e.g. ``raw/{sample}/{temperature}K/{entry}.h5``,
``raw/{sample}/{temperature}K/{entry}/{entry}_master.h5`` or, for Pilatus CBF files (one
per frame, ``*`` where the frame number goes),
``raw/{sample}/{temperature}K/{entry}/{entry}_*.cbf``.  What it names sets the layout
(hklflow.live.growing.layout_of).  A scan found becomes a row shaped as
hklflow.live.table.user_rows's rows, its values taken, field by field:

* from the path: sample, temperature, entry and data (a CBF scan's data keeps the ``*``:
  the glob of its frame files);
* from the file where it carries them: an Eiger master's frame count (detectorSpecific
  nimages x ntrigger), the scan angles and offsets of an Eiger master or HDF5 file's NXmx
  goniometer (/entry/sample/goniometer/<live.scan_axis_name> and /<offset axis>), a CBF
  header's Start_angle and Angle_increment;
* from ``live.scan_defaults`` otherwise (always for the monitor and calibration);
* from the scans schema's defaults last.

The detector shifts (det_ddist, det_dponi1, det_dponi2) take the other precedence:

1. ``live.scan_defaults``, column by column, where it gives them (the config wins: a
   detector position the user knows better than the files);
2. else the file's detector position: an Eiger master's or HDF5 file's NXmx
   /entry/instrument/detector (distance, or DECTRIS's detector_distance; beam_center_x/y
   in pixels, or a length with x/y_pixel_size), a CBF header's Detector_distance and
   Beam_xy (fast, slow; Pixel_size).  Both say where the direct beam hits the detector, in
   pixels of the frames as stored (pixel (i, j) spans [i, i+1) x [j, j+1), whatever
   instrument.detector.orientation), and the distance from the sample to that point
   (NXmx: "distance from the sample to the beam center"; imgCIF: "along the beam"), not
   the PONI and its distance: with a tilted detector they differ.  The shifts are that
   position minus the calibration's, at the calibration's tilts
   (:func:`hklflow.model.geometry.shifts_from_direct_beam`: pyFAI's Fit2D conversion, dist = directDist cos(tilt),
   poni = centre - directDist sin(tilt) (sin, cos)(tilt plane rotation)), measured from
   the geometry the row's calibration accepted (results/calibration/NAME/geometry.poni,
   NAME the row's calibration: live.scan_defaults.calibration, else the last calibration
   valid for the scan, as config._scans chooses), rounded to 1 nm.  While that result is
   not made (the watcher starts before the calibration job has run) the scan waits: it is
   reported (Discovery.not_ready, Discovery.waiting_for: the watcher then runs the
   workflow for the calibration even before any scan is in its table) and looked at again
   at the next call.  A file's pixel size must be the detector's;
3. else the scans schema's default, 0 (files without a detector position: plain HDF5
   stacks without an NXmx detector group).

A discovered row keeps the shifts it was found with: a calibration accepted again later
(another version) moves its scans by the difference (Discovery.relative_to names the
version the shifts were measured from).

Plain HDF5 and CBF files do not say how many frames are planned, so their frame count
comes from the config; a scan whose frame count or angles come from nowhere is reported
(Discovery.not_ready), not guessed.  A file still being written that cannot be read yet is
neither a row nor a message: it is looked at again at the next call.

The master's pixel_mask is not read here: the scans table has no mask column, and a pixel
mask reaches every scan through instrument.detector.mask_file/mask_dataset (a master and
/entry/instrument/detector/pixel_mask there work: non-zero is masked).

Raw files are only read: HDF5 files as SWMR readers (hklflow.live.growing), CBF files up to the
end of their header.
"""
from __future__ import annotations

import fnmatch
import glob
import os
import posixpath
import re
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from ..base.errors import ConfigError, FileFormatError, InputMismatchError, RawDataError
from ..files import nxmx, outputs
from ..files.calibration import read_version_file
from ..files.cbf_header import CbfHeaderUnfinished, read_cbf_header
from ..model.geometry import DetectorGeometry, shifts_from_direct_beam
from ..model.scan import temperature_label
from ..planning.config import MAX_SCAN_TURNS, CalibrationSpec, _validate
from ..raw.rawfiles import natural_key
from ..settings.params import DetectorParams
from ..settings.schema import schema, validator_with_defaults
from . import growing

__all__ = ["DirectBeam", "Discovery", "DiscoveryPattern", "FIELDS", "SHIFT_COLUMNS", "discover",
           "discovered_rows"]

FIELDS = ("sample", "temperature", "entry")
# where each value of a discovered row came from (Discovery.sources)
FROM_PATH, FROM_FILE, FROM_CONFIG, FROM_DEFAULT = "path", "file", "config", "default"
# the row's columns that live.scan_defaults may give (offsets aside)
DEFAULTED_COLUMNS = ("nframes", "phi_start", "phi_step", "dataset", "det_ddist", "det_dponi1",
                     "det_dponi2", "monitor", "calibration")
# without these a scan is not usable: reported, not guessed
NEEDED_COLUMNS = ("nframes", "phi_start", "phi_step")
# the detector shifts: from the file's detector position where it has one (below)
SHIFT_COLUMNS = ("det_ddist", "det_dponi1", "det_dponi2")
# calibrate_powder's accepted geometry and its version file (files/calibration.py; the
# workflow's calibration_path)
SHIFT_DECIMALS = 9  # shifts found from a file are rounded to 1 nm
PIXEL_SIZE_TOLERANCE = 1e-3  # relative: a file's pixel size must be the detector's

_FIELD = re.compile(r"\{([^{}]*)\}")
_TEMPERATURE = r"[0-9]+(?:\.[0-9]+)?"
_FRAME_NUMBER = r"[0-9]+"


class _NotYet(Exception):
    """The file is being written: look again at the next call (no message)."""


# --------------------------------------------------------------------------------------
# The pattern
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DiscoveryPattern:
    """live.discover, parsed.  glob: the pattern with every field (and the CBF frame
    number) a ``*``; regex: the same with the fields as named groups (a repeated field
    must be the same text); layout: hdf5, eiger or cbf."""

    text: str
    layout: str
    glob: str
    regex: re.Pattern

    @classmethod
    def parse(cls, text) -> "DiscoveryPattern":
        """ConfigError naming live.discover when the pattern is not usable."""
        where = f"config: field 'live.discover': {text!r}"
        if not isinstance(text, str) or not text.strip():
            raise ConfigError(f"{where}: expected a path pattern such as "
                              "raw/{sample}/{temperature}K/{entry}.h5")
        parts = text.split("/")
        if text.startswith("/") or os.path.isabs(text) or ".." in parts:
            raise ConfigError(f"{where}: expected a path relative to the experiment directory, "
                              "inside it (no leading '/', no '..')")
        layout = growing.layout_of(text)
        if layout not in growing.LAYOUTS:
            raise ConfigError(f"{where}: expected it to name an HDF5 file (.h5), an Eiger master "
                              "file (..._master.h5) or CBF frame files (..._*.cbf): the layouts "
                              "a scan being collected is followed in")
        stars = text.count("*")
        if layout == "cbf" and (stars != 1 or "*" not in parts[-1]):
            raise ConfigError(f"{where}: CBF files hold one frame each: expected one '*' in the "
                              "file name where the frame number goes, e.g. "
                              "raw/{sample}/{temperature}K/{entry}/{entry}_*.cbf")
        if layout != "cbf" and stars:
            raise ConfigError(f"{where}: a scan's {layout} file is one file: expected no '*' "
                              "(only CBF patterns have one, for the frame number)")
        name_patterns = schema("scans.schema.yaml")["properties"]
        field_regex = {"sample": name_patterns["sample"]["pattern"].strip("^$"),
                       "entry": name_patterns["entry"]["pattern"].strip("^$"),
                       "temperature": _TEMPERATURE}
        glob_parts, regex_parts, seen = [], [], set()
        for i, piece in enumerate(_FIELD.split(text)):
            if i % 2 == 0:  # literal text between fields
                if any(c in piece for c in "{}?[]"):
                    raise ConfigError(f"{where}: expected literal text and the fields "
                                      "{sample}, {temperature}, {entry} only (no '{', '}', "
                                      f"'?', '[' or ']' besides): {piece!r}")
                glob_parts.append(piece)
                regex_parts.append(re.escape(piece).replace(r"\*", f"(?:{_FRAME_NUMBER})"))
                continue
            if piece not in FIELDS:
                raise ConfigError(f"{where}: unknown field {{{piece}}}: expected "
                                  "{sample}, {temperature} and {entry}")
            glob_parts.append("*")
            regex_parts.append(f"(?P={piece})" if piece in seen
                               else f"(?P<{piece}>{field_regex[piece]})")
            seen.add(piece)
        missing = [f"{{{name}}}" for name in FIELDS if name not in seen]
        if missing:
            raise ConfigError(f"{where}: lacks {', '.join(missing)}: expected each of {{sample}}, "
                              "{temperature} and {entry} at least once (they make the scan's "
                              "id SAMPLE/TEMPERATUREK/ENTRY)")
        return cls(text, layout, "".join(glob_parts), re.compile("".join(regex_parts)))

    def match(self, relpath: str) -> dict | None:
        """The fields of a path relative to the experiment directory ('/'-separated), or
        None when it does not match."""
        m = self.regex.fullmatch(relpath)
        return m.groupdict() if m else None

    def data_of(self, fields: dict) -> str:
        """The scan's data: the pattern with its fields filled in (a CBF ``*`` kept)."""
        return _FIELD.sub(lambda m: fields[m.group(1)], self.text)


# --------------------------------------------------------------------------------------
# What the files say
# --------------------------------------------------------------------------------------
def _goniometer_facts(f: h5py.File, path: str, scan_axis: str, offset_names,
                      refresh: bool) -> dict:
    """phi_start, phi_step and offsets ({axis: deg}) from an NXmx goniometer group, where
    it has them; _NotYet while the scan axis holds fewer than two angles (a file growing)."""
    gonio = nxmx.group(f, nxmx.GONIOMETER)
    if gonio is None:
        return {}
    facts, offsets = {}, {}
    for name in offset_names:
        axis = nxmx.goniometer_axis(gonio, name, path, count=1, refresh=refresh)
        if axis is not None:
            if not len(axis.angles):
                raise _NotYet
            offsets[name] = float(axis.angles[0])
    if offsets:
        facts["offsets"] = offsets
    axis = nxmx.goniometer_axis(gonio, scan_axis, path, count=2, refresh=refresh)
    if axis is None:
        return facts
    if not len(axis.angles) or axis.step is None:
        raise _NotYet  # the first frames' angles are not written yet
    facts.update(phi_start=float(axis.angles[0]), phi_step=axis.step)
    return facts


@dataclass(frozen=True)
class DirectBeam:
    """Where a file says the incident beam hits the detector: `distance` (m) from the sample
    to that point, (`row`, `col`) its continuous pixel coordinates on the frames as stored
    (pixel (i, j) spans [i, i+1) x [j, j+1)), `pixel_size` (m, (slow, fast)) where the file
    gives it, and `where` (for messages)."""

    distance: float
    row: float
    col: float
    pixel_size: tuple | None
    where: str


def _nxmx_beam(f: h5py.File, path: str) -> DirectBeam | str | None:
    """The direct beam of an NXmx detector group (/entry/instrument/detector: distance, or
    DECTRIS's detector_distance; beam_center_x/y in pixels or a length; x/y_pixel_size),
    None when it has none, a message when it has only part of it."""
    det = nxmx.group(f, nxmx.DETECTOR)
    if det is None:
        return None
    names = {"distance": nxmx.distance_name(det), "beam_center_x": "beam_center_x",
             "beam_center_y": "beam_center_y"}
    there = {k: n for k, n in names.items() if n and nxmx.dataset(det, n) is not None}
    if not there:
        return None
    if len(there) < len(names):
        missing = [k if k != "distance" else "distance (or detector_distance)"
                   for k in names if k not in there]
        return (f"{path}: {nxmx.DETECTOR} gives {', '.join(there.values())} but no "
                f"{' and '.join(missing)}: its detector position is not complete")
    pixel_size = nxmx.pixel_size(det, path)
    row, col = nxmx.beam_centre(det, path)
    distance, name = nxmx.detector_distance(det, path)
    return DirectBeam(distance, row, col, pixel_size,
                      f"{nxmx.DETECTOR}/{name} and beam_center_x/y in the file")


def _beam_facts(f: h5py.File, path: str) -> dict:
    beam = _nxmx_beam(f, path)
    if beam is None:
        return {}
    return {"beam": beam} if isinstance(beam, DirectBeam) else {"beam_error": beam}


def _hdf5_facts(path: str, read):
    """read(the open file); _NotYet while the file is being written (or gone)."""
    waiting = object()

    def read_or_wait(f):  # growing's reader turns any exception into a RawDataError
        try:
            return read(f)
        except _NotYet:
            return waiting

    # the observer's own reader of files being written; one attempt: the next call looks again
    facts, why = growing._read_hdf5(path, read_or_wait, attempts=1, retry_delay=0.0)
    if facts is None or facts is waiting:
        raise _NotYet(why)
    return facts


def _eiger_facts(path: str, scan_axis: str, offset_names) -> dict:
    def read(f):
        facts = _goniometer_facts(f, path, scan_axis, offset_names, refresh=False)
        facts.update(_beam_facts(f, path))
        nframes = nxmx.eiger_frame_count(f, path)
        if nframes is not None:
            facts["nframes"] = nframes
        return facts

    return _hdf5_facts(path, read)


def _stack_file_facts(path: str, scan_axis: str, offset_names) -> dict:
    # a file being written says its angles so far, never how many frames are planned
    def read(f):
        facts = _goniometer_facts(f, path, scan_axis, offset_names, refresh=True)
        facts.update(_beam_facts(f, path))
        return facts

    return _hdf5_facts(path, read)


def _cbf_facts(path: str, first: str) -> dict:
    """phi_start and phi_step from a Pilatus CBF header (Start_angle, Angle_increment), and
    its direct beam (Detector_distance, Beam_xy, Pixel_size); first: the file's name in
    messages."""
    try:
        header = read_cbf_header(path)
    except (FileNotFoundError, CbfHeaderUnfinished):
        raise _NotYet from None  # the header is still being written
    if header.data_start is None:
        raise _NotYet  # (read once the binary section begins)
    facts = {}
    for key, name in (("phi_start", "Start_angle"), ("phi_step", "Angle_increment")):
        found = header.quantity(name)
        if found:
            facts[key] = found[0][0]
    distance, beam_xy = header.quantity("Detector_distance"), header.quantity("Beam_xy")
    if distance and beam_xy:
        size = header.quantity("Pixel_size")
        col, row = beam_xy[0]  # (fast, slow)
        facts["beam"] = DirectBeam(distance[0][0], row, col, size[0][::-1] if size else None,
                                   f"Detector_distance and Beam_xy in the header of {first}")
    elif distance or beam_xy:
        given, lacking = (("Detector_distance", "Beam_xy") if distance
                          else ("Beam_xy", "Detector_distance"))
        facts["beam_error"] = (f"{first}: its header gives {given} but no {lacking}: its "
                               "detector position is not complete")
    return facts


class _Waiting(Exception):
    """The scan's shifts need a calibration that is not made yet: reported, looked at again."""

    def __init__(self, calibration: str, message: str):
        super().__init__(message)
        self.calibration = calibration


class _Calibrations:
    """The config's calibrations, and their accepted geometries, each read once per call."""

    def __init__(self, expdir: Path, config: dict):
        self.expdir = expdir
        self.specs = {str(name): CalibrationSpec(str(name), c.get("image"), c.get("poni"),
                                                 c.get("valid_for") or {})
                      for name, c in (config.get("calibrations") or {}).items()}
        detector = DetectorParams.from_config(config)
        self.detector, self.orientation = detector.name, detector.orientation
        self.read: dict = {}

    def chosen(self, row: dict, data: str, sid: str) -> str:
        """The calibration the row's scan uses, as config._scans chooses it: its column
        (live.scan_defaults.calibration), else the last calibration valid for the scan."""
        named = row.get("calibration")
        if named:
            if named not in self.specs:
                raise ConfigError(f"{data}: live.scan_defaults.calibration {named!r} is not a "
                                  f"calibration of the config (known: {sorted(self.specs)})")
            return named
        scan = _ScanKey(row["sample"], row["entry"], row["temperature"])
        for name in reversed(list(self.specs)):
            if self.specs[name].matches(scan):
                return name
        raise ConfigError(f"{data}: no calibration is valid for scan {sid}: widen a "
                          "calibration's valid_for or set live.scan_defaults.calibration")

    def geometry(self, name: str):
        """(accepted geometry, version) of calibration `name`; None while calibrate_powder
        has not made it (or is making it again)."""
        if name not in self.read:
            poni, version = (self.expdir / outputs.fill(pattern, calibration=name) for pattern in
                             (outputs.GEOMETRY_PONI, outputs.CALIBRATION_VERSION))
            got = None
            try:
                if poni.is_file() and version.is_file():
                    # the version file names the PONI's sha256: a PONI being written does
                    # not match it (checked before the PONI is read)
                    number = read_version_file(version, poni)
                    got = (DetectorGeometry.from_poni_file(poni, self.detector,
                                                           self.orientation), number)
            except (FileFormatError, FileNotFoundError):
                got = None
            except InputMismatchError as exc:
                raise ConfigError(str(exc)) from None
            self.read[name] = got
        return self.read[name]


@dataclass(frozen=True)
class _ScanKey:  # what CalibrationSpec.matches asks of a scan
    sample: str
    entry: str
    temperature: float


def _file_shifts(beam: DirectBeam, row: dict, data: str, sid: str,
                 calibrations: _Calibrations | None) -> tuple[dict, str]:
    """The row's shifts from the file's direct beam, relative to the calibration it uses,
    and "NAME VERSION" of that calibration; _Waiting while it is not made yet."""
    set_them = ("set live.scan_defaults.det_ddist, det_dponi1 and det_dponi2 to give the "
                "shifts yourself")
    if calibrations is None:
        raise ConfigError(f"{data}: its detector position ({beam.where}) is a shift from a "
                          f"calibration, and the config's calibrations were not given: {set_them}")
    name = calibrations.chosen(row, data, sid)
    got = calibrations.geometry(name)
    if got is None:
        raise _Waiting(name, (
            f"{data}: waiting for calibration {name} (results/calibration/{name}/geometry.poni "
            f"is not made yet): the shifts of its detector ({beam.where}) are measured from it; "
            f"the scan is taken once it is made (or {set_them})"))
    cal, version = got
    if beam.pixel_size is not None:
        for given, known, axis in zip(beam.pixel_size, cal.pixel_size, ("slow", "fast")):
            if not abs(given - known) <= PIXEL_SIZE_TOLERANCE * known:
                raise RawDataError(f"{data}: {beam.where}: the {axis} pixel size is "
                                   f"{given:.6g} m, the detector's ({cal.detector}, "
                                   f"instrument.detector) {known:.6g} m: its beam centre in "
                                   "pixels cannot be placed")
    shifts = shifts_from_direct_beam(cal, beam.distance, beam.row, beam.col)
    return ({c: round(v, SHIFT_DECIMALS) + 0.0 for c, v in zip(SHIFT_COLUMNS, shifts)},
            f"{name} {version}")


# --------------------------------------------------------------------------------------
# Discovering
# --------------------------------------------------------------------------------------
@dataclass
class Discovery:
    """rows: the new scans, each shaped as hklflow.live.table.user_rows's rows (every
    scans-schema column, offset columns), in the order of their data paths.
    sources: scan id -> {column: where its value came from}: "path" (the pattern's fields
    and data), "file", "config" (live.scan_defaults) or "default" (the scans schema).
    not_ready: one message per scan found but not usable (naming its file and what to set).
    relative_to: scan id -> "CALIBRATION VERSION" the shifts from its file are measured from.
    waiting_for: the calibrations whose result scans wait for (not made yet)."""

    rows: list[dict] = field(default_factory=list)
    sources: dict[str, dict[str, str]] = field(default_factory=dict)
    not_ready: list[str] = field(default_factory=list)
    relative_to: dict[str, str] = field(default_factory=dict)
    waiting_for: set[str] = field(default_factory=set)


def _row_schema(offset_names) -> dict:
    # the scans table's row, offset columns included, as config.read_scans_table checks it
    row_schema = dict(schema("scans.schema.yaml"))
    row_schema["properties"] = dict(row_schema["properties"],
                                    **{n: {"type": "number", "default": 0} for n in offset_names})
    return row_schema


def _as_column_type(value, spec: dict):
    """Numbers as the scans table reads them (float for 'number', int for 'integer')."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
        return value
    if spec.get("type") == "number":
        return float(value)
    if spec.get("type") == "integer" and float(value) == int(value):
        return int(value)
    return value


def _scan_defaults(live: dict, offset_names) -> dict:
    defaults = dict(live.get("scan_defaults") or {})
    unknown = sorted(set(defaults.get("offsets") or {}) - set(offset_names))
    if unknown:
        raise ConfigError(f"config: field 'live.scan_defaults.offsets': unknown axis "
                          f"{', '.join(unknown)}: expected those of instrument.goniometer."
                          f"offset_axes ({', '.join(offset_names) or 'none'})")
    return defaults


def _found_files(expdir: Path, pattern: DiscoveryPattern, known_ids) -> dict:
    """scan id -> {data: [files matching the pattern, relative, in natural order]} of the
    scans not known."""
    found: dict = {}
    for path in glob.iglob(os.path.join(glob.escape(str(expdir)), pattern.glob)):
        rel = Path(os.path.relpath(path, expdir)).as_posix()
        fields = pattern.match(rel)
        if fields is None:
            continue
        label = temperature_label(float(fields["temperature"]))
        sid = f"{fields['sample']}/{label}/{fields['entry']}"
        if sid in known_ids:
            continue
        found.setdefault(sid, {}).setdefault(pattern.data_of(fields), []).append(rel)
    for by_data in found.values():
        for files in by_data.values():
            files.sort(key=natural_key)
    return found


def _frames_of_others(data: str, sid: str, found: dict) -> str | None:
    """A frame file of another scan found that the CBF glob `data` also matches (the batch
    reader would take it as this scan's), or None."""
    folder = posixpath.dirname(data)
    for other, by_data in found.items():
        for other_data, files in by_data.items():
            if other != sid and posixpath.dirname(other_data) == folder:
                # one frame tells: a scan's frame files differ only in their number
                if fnmatch.fnmatchcase(files[0], data):
                    return files[0]
    return None


def discover(expdir, live: dict, offset_names, known_ids, samples=None,
             config: dict | None = None) -> Discovery:
    """The scans live.discover finds under expdir that are not in known_ids (ids
    SAMPLE/TLABEL/ENTRY).  live: the config's live section (discover None: nothing is
    looked for); offset_names: the goniometer's offset axes (their columns); samples: the
    config's sample names, when given a scan of another sample is reported, not a row;
    config: the validated config (its calibrations and instrument.detector turn a file's
    detector position into shifts; without it a scan whose file has one and whose shifts
    live.scan_defaults does not give is reported).
    ConfigError for a pattern or scan_defaults that cannot be used."""
    result = Discovery()
    if not live.get("discover"):
        return result
    expdir = Path(expdir)
    calibrations = _Calibrations(expdir, config) if config is not None else None
    offset_names = list(offset_names)
    pattern = DiscoveryPattern.parse(live["discover"])
    defaults = _scan_defaults(live, offset_names)
    scan_axis = live.get("scan_axis_name") or "phi"
    row_schema = _row_schema(offset_names)
    validator = validator_with_defaults(row_schema)
    found = _found_files(expdir, pattern, set(known_ids))
    usable, not_ready = [], []
    for sid, by_data in found.items():
        if len(by_data) > 1:  # e.g. 300K and 300.0K: one id, two scans
            names = sorted(by_data, key=natural_key)
            not_ready.append((natural_key(names[0]), f"{' and '.join(names)}: both are scan "
                                                     f"{sid} by live.discover: rename one"))
            continue
        (data, files), = by_data.items()
        if pattern.layout == "cbf":
            overlap = _frames_of_others(data, sid, found)
            if overlap:
                not_ready.append((natural_key(data), (
                    f"{data}: also matches {overlap}, a frame of another scan: give each "
                    "entry's frames their own folder (e.g. .../{entry}/{entry}_*.cbf) or names "
                    "that no other entry's glob matches")))
                continue
        try:
            row, sources, basis = _row(expdir, pattern, sid, data, files, defaults, scan_axis,
                                       offset_names, samples, row_schema["properties"],
                                       calibrations)
            row = _validate(row, row_schema, f"{data} (scan {sid} found by live.discover)",
                            validator)
        except _NotYet:
            continue
        except _Waiting as exc:
            result.waiting_for.add(exc.calibration)
            not_ready.append((natural_key(data), str(exc)))
            continue
        except (RawDataError, ConfigError) as exc:
            not_ready.append((natural_key(data), str(exc)))
            continue
        sources.update({c: FROM_DEFAULT for c in row if c not in sources})
        usable.append((natural_key(data), sid, row, sources, basis))
    for _, sid, row, sources, basis in sorted(usable, key=lambda u: u[0]):
        result.rows.append(row)
        result.sources[sid] = sources
        if basis:
            result.relative_to[sid] = basis
    result.not_ready = [message for _, message in sorted(not_ready, key=lambda m: m[0])]
    return result


def discovered_rows(expdir, live: dict, offset_names, known_ids, samples=None,
                    config: dict | None = None) -> tuple[list[dict], list[str]]:
    """(rows, not-ready messages) of :func:`discover`, for callers that do not need to know
    where each value came from."""
    found = discover(expdir, live, offset_names, known_ids, samples, config)
    return found.rows, found.not_ready


def _row(expdir: Path, pattern: DiscoveryPattern, sid: str, data: str, files: list,
         defaults: dict, scan_axis: str, offset_names, samples, props: dict,
         calibrations: _Calibrations | None) -> tuple[dict, dict, str | None]:
    """The row of one scan found (not validated yet; props: the row schema's columns),
    where each value came from and "CALIBRATION VERSION" its shifts from the file are
    measured from (None: none are); ConfigError/RawDataError saying why it is not usable,
    _Waiting for a calibration not made yet, _NotYet while its file is being written."""
    sample, _, entry = sid.split("/")
    fields = pattern.match(files[0])
    if samples is not None and sample not in samples:
        raise ConfigError(f"{data}: sample {sample!r} is not a sample of the config (known: "
                          f"{', '.join(sorted(samples))}): add it to samples, or move the "
                          "files out of live.discover's pattern")
    temperature = float(fields["temperature"])
    if float(temperature_label(temperature)[:-1]) != temperature:
        raise ConfigError(f"{data}: temperature {fields['temperature']} has more digits than "
                          f"its folder name {temperature_label(temperature)} keeps: expected at "
                          "most 6 significant digits")
    if pattern.layout == "cbf":
        first = files[0]
        facts = _cbf_facts(str(expdir / first), first)
        where = f"Start_angle and Angle_increment in the header of {first}"
    else:
        path = expdir / data
        if not path.is_file():
            raise _NotYet
        read = _eiger_facts if pattern.layout == "eiger" else _stack_file_facts
        facts = read(str(path), scan_axis, offset_names)
        where = f"{nxmx.GONIOMETER}/{scan_axis} in the file"
    row = {"sample": sample, "temperature": temperature, "entry": entry, "data": data}
    sources = dict.fromkeys(row, FROM_PATH)
    for column in DEFAULTED_COLUMNS:
        if column in SHIFT_COLUMNS:  # below
            continue
        for origin, given in ((FROM_FILE, facts), (FROM_CONFIG, defaults)):
            if column in given:
                row[column] = _as_column_type(given[column], props[column])
                sources[column] = origin
                break
    for name in offset_names:
        for origin, given in ((FROM_FILE, facts.get("offsets") or {}),
                              (FROM_CONFIG, defaults.get("offsets") or {})):
            if name in given:
                row[name] = float(given[name])
                sources[name] = origin
                break
    missing = [c for c in NEEDED_COLUMNS if c not in row]
    if missing:
        why = []
        if "nframes" in missing:
            why.append("no frame count ("
                       + ("its master has no detectorSpecific/nimages" if pattern.layout == "eiger"
                          else f"{pattern.layout} files do not say how many frames are planned")
                       + ")")
        if len(missing) > ("nframes" in missing):
            why.append(f"no scan angles (no {where})")
        raise ConfigError(f"{data}: {' and '.join(why)}: set "
                          + " and ".join(f"live.scan_defaults.{c}" for c in missing))
    turns = row["nframes"] * abs(row["phi_step"]) / 360.0
    if turns > MAX_SCAN_TURNS:
        raise ConfigError(f"{data}: {row['nframes']} frames of {row['phi_step']} deg make "
                          f"{turns:.3g} turns: expected a scan of at most {MAX_SCAN_TURNS} turns")
    # the shifts: live.scan_defaults's win, then the file's detector position, measured
    # from the calibration the row uses; none of either: the schema's default (0)
    for column in SHIFT_COLUMNS:
        if column in defaults:
            row[column] = _as_column_type(defaults[column], props[column])
            sources[column] = FROM_CONFIG
    wanted = [c for c in SHIFT_COLUMNS if c not in defaults]
    basis = None
    if wanted and "beam_error" in facts:
        raise RawDataError(f"{facts['beam_error']}: set live.scan_defaults."
                           + ", ".join(wanted))
    if wanted and "beam" in facts:
        shifts, basis = _file_shifts(facts["beam"], row, data, sid, calibrations)
        for column in wanted:
            row[column] = shifts[column]
            sources[column] = FROM_FILE
    return row, sources, basis
