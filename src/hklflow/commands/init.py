"""`hklflow init DIR`: config/config.yaml and config/scans.tsv of a new experiment.

The config gets every key of the config schema, each under its schema description as a
comment, with the values known: those given on the command line, those read from a raw
file (an NXmx master file or a Pilatus CBF header: hklflow.files.nxmx, files.cbf_header),
the schema's defaults for the rest.  What nothing says (the sample's space group and cell,
the calibration, ...) is written as a placeholder ``{FILL_IN: what}``: a mapping where the
schema wants a number, a text or a list, so that load_experiment refuses the config and
names every field still to fill in.  The scans table gets a row for the raw file's scan;
its unknown cells are ``FILL_IN``, which the scans schema refuses as well.

An existing config or scans table is never overwritten without --force.
"""
from __future__ import annotations

import argparse
import copy
import difflib
import math
import os
import re
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ..base.atomic import write_text_atomically
from ..base.errors import ConfigError, HklflowError, RawDataError
from ..files import nxmx
from ..files.cbf_header import CbfHeaderError, read_cbf_header
from ..files.h5 import open_h5
from ..model.crystal import Crystal, UnitCell
from ..model.geometry import DetectorGeometry, detector_shape, known_calibrants, pyfai_tables
from ..raw.rawfiles import matching_files
from ..settings.schema import schema

PLACEHOLDER = "FILL_IN"
CONFIG_FILE = "config/config.yaml"
SCANS_TABLE = "config/scans.tsv"
LINE_WIDTH = 100
SIGNIFICANT_DIGITS = 7  # values read from files: float32's noise dropped (0.1, not 0.100000001)
DEFAULT_SAMPLE = "sample"
DEFAULT_ENTRY = "f1"
DEFAULT_CALIBRATION = "powder"  # the calibration's name when the calibrant is not given

def placeholder(hint: str) -> dict:
    """A value still to fill in: a mapping, which no field of the schemas it stands in takes."""
    return {PLACEHOLDER: hint}


def is_placeholder(value) -> bool:
    return isinstance(value, dict) and set(value) == {PLACEHOLDER}


def rounded(x: float) -> float:
    return float(f"{float(x):.{SIGNIFICANT_DIGITS}g}")


# --------------------------------------------------------------------------------------
# What a raw file says of its scan
# --------------------------------------------------------------------------------------
@dataclass
class ScanFacts:
    """What a raw file says of its scan; None where it says nothing."""

    source: str  # the file read
    data: str  # the scans table's data: the file, or the glob of a CBF scan's frame files
    wavelength: float | None = None  # Angstrom
    phi_start: float | None = None  # deg
    phi_step: float | None = None  # deg
    nframes: int | None = None
    distance: float | None = None  # m, from the sample to where the direct beam hits
    beam_centre: tuple[float, float] | None = None  # continuous (row, col) of the direct beam
    frame_shape: tuple[int, int] | None = None  # (rows, cols)
    scan_axis_name: str | None = None  # the NXmx goniometer axis that turns
    scan_axis: tuple[float, float, float] | None = None  # its lab vector
    temperature: float | None = None  # K
    detector_description: str | None = None
    where: dict = field(default_factory=dict)  # fact -> where in the file it was read


def _lab_vector(nexus_vector) -> tuple[float, float, float]:
    """A NeXus (McStas) vector (x horizontal, y up, z along the beam) in the lab frame
    (L1 up, L2 = L3 x L1, L3 along the beam): (y, -x, z), of unit length."""
    x, y, z = (float(v) for v in nexus_vector)
    norm = math.sqrt(x * x + y * y + z * z)
    return tuple(rounded(v / norm) + 0.0 for v in (y, -x, z))  # (+ 0.0: no -0.0)


def _read_goniometer(f, path: str, wanted: str | None, facts: ScanFacts) -> None:
    """The scan angles of the goniometer axis that turns (or of `wanted`), its lab vector
    and the frame count its angles give."""
    if nxmx.group(f, nxmx.GONIOMETER) is None:
        if wanted:
            raise ConfigError(f"{path}: no {nxmx.GONIOMETER}: no axis {wanted!r} to read")
        return
    axes = nxmx.goniometer_axes(f, path)
    if wanted and wanted not in axes:
        raise ConfigError(f"{path}: {nxmx.GONIOMETER} has no axis {wanted!r} "
                          f"(its axes: {', '.join(sorted(axes)) or 'none'})")
    turning = [wanted] if wanted else [n for n, axis in axes.items() if axis.step]
    if len(turning) > 1:
        raise ConfigError(f"{path}: {nxmx.GONIOMETER}: the axes {', '.join(sorted(turning))} "
                          "all turn: name the scan axis with --scan-axis-name")
    if not turning:
        return  # no angles: placeholders, or --phi-start and --phi-step
    axis = axes[turning[0]]
    where = f"{nxmx.GONIOMETER}/{axis.name}"
    facts.scan_axis_name = axis.name
    facts.phi_start, facts.phi_step = rounded(axis.angles[0]), rounded(axis.step or 0.0)
    facts.where.update(phi_start=where,
                       phi_step=where + ("_increment" if axis.from_increment else ""))
    if len(axis.angles) > 1:
        facts.nframes, facts.where["nframes"] = len(axis.angles), where
    if axis.vector is not None:
        facts.scan_axis = _lab_vector(axis.vector)
        facts.where["scan_axis"] = f"{where}@vector"


def _read_detector(f, path: str, facts: ScanFacts) -> None:
    """Distance and beam centre, description, frame shape, DECTRIS's frame count."""
    det = nxmx.group(f, nxmx.DETECTOR)
    if det is None:
        return
    distance = nxmx.detector_distance(det, path)
    if distance is not None:
        facts.distance = rounded(distance[0])
        facts.where["distance"] = f"{nxmx.DETECTOR}/{distance[1]}"
    try:
        facts.beam_centre = nxmx.beam_centre(det, path)
    except RawDataError:  # (a centre that cannot be placed: a placeholder, as none)
        facts.beam_centre = None
    if facts.beam_centre is not None:
        facts.where["beam_centre"] = f"{nxmx.DETECTOR}/beam_center_x/y"
    facts.detector_description = nxmx.detector_description(f)
    facts.frame_shape = nxmx.eiger_frame_shape(f, path)
    nframes = nxmx.eiger_frame_count(f, path)
    if nframes is not None:
        facts.nframes = nframes
        facts.where["nframes"] = f"{nxmx.DETECTOR_SPECIFIC}/nimages x ntrigger"


def read_nxmx(path: str, scan_axis_name: str | None = None) -> ScanFacts:
    """What an NXmx master (or HDF5 frame) file says of its scan, read with h5py read-only
    (hklflow.files.nxmx): wavelength, the scan axis's angles (--scan-axis-name, else the one
    axis of /entry/sample/goniometer that turns), frame count, detector distance and beam
    centre, temperature."""
    facts = ScanFacts(source=path, data=path)
    try:
        f = open_h5(path)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read as an HDF5 file: {exc}") from None
    try:
        with f:
            wavelength = nxmx.wavelength(f, path)
            if wavelength is not None:
                facts.wavelength, facts.where["wavelength"] = rounded(wavelength), nxmx.WAVELENGTH
            _read_goniometer(f, path, scan_axis_name, facts)
            _read_detector(f, path, facts)  # (its frame count, DECTRIS's, wins over the angles')
            frames = nxmx.dataset(f, nxmx.FRAMES)
            if frames is not None and frames.ndim == 3:  # a frame stack in the file itself
                facts.frame_shape = facts.frame_shape or tuple(int(n) for n in frames.shape[1:])
                if facts.nframes is None:
                    facts.nframes, facts.where["nframes"] = int(frames.shape[0]), nxmx.FRAMES
            temperature = nxmx.temperature(f, path)
            if temperature is not None:
                # (6 digits: the most a temperature's folder name keeps)
                facts.temperature = float(f"{temperature:.6g}")
                facts.where["temperature"] = nxmx.TEMPERATURE
    except RawDataError as exc:
        raise ConfigError(str(exc)) from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read as an HDF5 file: {exc}") from None
    return facts


def cbf_frame_files(path: str) -> tuple[str, list[str]]:
    """The glob of a CBF scan's frame files (the last number of the file's name a `*`) and
    the files it matches, in frame order."""
    folder, name = os.path.split(path)
    number = re.search(r"[0-9]+(?=[^0-9]*$)", name)
    if number is None:
        return path, [path]
    pattern = os.path.join(folder, name[:number.start()] + "*" + name[number.end():])
    return pattern, matching_files(pattern) or [path]


def read_cbf(path: str) -> ScanFacts:
    """What a Pilatus CBF scan says: the header of its first frame file (hklflow.files.
    cbf_header): Wavelength, Start_angle, Angle_increment, Detector_distance, Beam_xy,
    Detector, the frame shape; its frame count is the number of frame files beside it."""
    pattern, files = cbf_frame_files(path)
    first = files[0]
    try:
        header = read_cbf_header(first)
    except CbfHeaderError as exc:
        raise ConfigError(f"{first}: cannot be read as a CBF file: {exc.reason}") from None
    except OSError as exc:
        raise ConfigError(f"{first}: cannot be read as a CBF file: {exc}") from None
    facts = ScanFacts(source=first, data=pattern, nframes=len(files))
    facts.where["nframes"] = f"the files {os.path.basename(pattern)}"
    try:
        for name, field in (("wavelength", "Wavelength"), ("phi_start", "Start_angle"),
                            ("phi_step", "Angle_increment"), ("distance", "Detector_distance")):
            found = header.quantity(field)
            if found:
                (value,), as_written = found
                setattr(facts, name, rounded(value))
                facts.where[name] = f"the header's {as_written}"
        beam = header.quantity("Beam_xy")
    except CbfHeaderError as exc:
        raise ConfigError(str(exc)) from None
    if beam:
        col, row = beam[0]  # (fast, slow)
        facts.beam_centre, facts.where["beam_centre"] = (row, col), "the header's Beam_xy"
    facts.detector_description = header.text_after("Detector")
    try:
        facts.frame_shape = (int(header.binary["x-binary-size-second-dimension"]),
                             int(header.binary["x-binary-size-fastest-dimension"]))
    except (KeyError, ValueError):
        pass
    return facts


# --------------------------------------------------------------------------------------
# The detector: a pyFAI name
# --------------------------------------------------------------------------------------
def pyfai_detector_names() -> dict[str, str]:
    """pyFAI's detector names as its registry keys them (lower case, aliases included) ->
    the detector's class name."""
    # (here: pyFAI's import takes most of a second; only a named detector needs it)
    import pyFAI.detectors

    return {key: cls.__name__ for key, cls in pyFAI.detectors.ALL_DETECTORS.items()
            if cls.__name__ != "Detector"}  # (the generic one has no shape)


def _squashed(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", text.lower())


def close_detector_names(name: str, names: dict[str, str], count: int = 8) -> list[str]:
    """The class names of pyFAI's detectors whose names are most like `name` (case,
    spaces and punctuation aside), best first."""
    wanted, scores = _squashed(name), {}
    for key, cls in names.items():
        candidate = _squashed(key)
        score = difflib.SequenceMatcher(None, wanted, candidate).ratio()
        if len(wanted) >= 3 and wanted in candidate:  # part of a name: "eiger2"
            score = max(score, 0.7)
        scores[cls] = max(scores.get(cls, 0.0), score)
    ranked = sorted((c for c, s in scores.items() if s >= 0.6), key=lambda c: (-scores[c], c))
    return ranked[:count]


def resolve_detector(name: str) -> str:
    """The class name of the pyFAI detector `name` (as pyFAI's detector_factory finds it:
    a class name, or a registry name or alias in any case); ConfigError listing close
    names when pyFAI knows none."""
    # (here: pyFAI's import takes most of a second; only a named detector needs it)
    import pyFAI.detectors

    names = pyfai_detector_names()
    cls = getattr(pyFAI.detectors, name, None)
    if isinstance(cls, type) and cls.__name__ in names.values():
        return cls.__name__
    for key in (name.lower(), name.lower().replace(" ", "_")):
        if key in names:
            return names[key]
    close = close_detector_names(name, names)
    suggestion = f"close ones: {', '.join(close)}" if close else "none is close"
    raise ConfigError(f"--detector {name!r}: pyFAI knows no detector of that name; "
                      f"{suggestion} (hklflow init --list-detectors lists them all)")


def check_frame_shape(detector: str, facts: ScanFacts) -> None:
    """ConfigError when the file's frames are not the detector's shape, naming pyFAI's
    detectors of the file's shape."""
    shape = detector_shape(detector)
    if facts.frame_shape is None or tuple(facts.frame_shape) == shape:
        return
    names = pyfai_detector_names()
    same = sorted({names[k] for k, s in pyfai_tables()["shapes"].items()
                   if tuple(s) == tuple(facts.frame_shape) and k in names})
    rows, cols = facts.frame_shape
    raise ConfigError(f"{facts.source}: frames of {rows} x {cols} pixels (rows x columns), but "
                      f"{detector}'s are {shape[0]} x {shape[1]}: pyFAI detectors of the file's "
                      f"shape: {', '.join(same) or 'none'}")


def list_detectors() -> str:

    lines = []
    for cls in sorted(set(pyfai_detector_names().values()), key=str.lower):
        try:
            rows, cols = detector_shape(cls)
        except ValueError:
            continue
        lines.append(f"{cls:<24} {rows} x {cols}")
    return "\n".join(lines)


def start_geometry(detector: str | None, facts: ScanFacts | None) -> dict:
    """The calibration's rough start (m) from the file's distance and beam centre, at zero
    tilts (what the calibration refines); placeholders for what the file does not give."""
    start = {"dist": placeholder("m, from the sample to the detector"),
             "poni1": placeholder("m, the direct beam's position along the detector's axis 1"),
             "poni2": placeholder("m, the direct beam's position along the detector's axis 2")}
    if facts is None or facts.distance is None:
        return start
    start["dist"] = facts.distance
    if facts.beam_centre is not None and detector is not None:

        plane = DetectorGeometry(detector=detector, dist=facts.distance, poni1=0.0, poni2=0.0)
        poni1, poni2 = plane.plane_coordinates(*facts.beam_centre)
        start.update(poni1=round(float(poni1), 6), poni2=round(float(poni2), 6))
    return start


# --------------------------------------------------------------------------------------
# The config: the values known, the schema's defaults, the placeholders
# --------------------------------------------------------------------------------------
def with_defaults(values: dict, node: dict) -> dict:
    """values with the schema's defaults of the keys not given, in nested objects too."""
    out = dict(values)
    properties = node.get("properties", {})
    for key, sub in properties.items():
        if key not in out and "default" in sub:
            out[key] = copy.deepcopy(sub["default"])
        if isinstance(out.get(key), dict) and not is_placeholder(out[key]):
            out[key] = with_defaults(out[key], sub)
    named = node.get("additionalProperties")
    if isinstance(named, dict):  # name -> object (calibrations, samples)
        for key, value in out.items():
            if key not in properties and isinstance(value, dict) and not is_placeholder(value):
                out[key] = with_defaults(value, named)
    return out


def flow_yaml(value) -> str:
    """A value on one line of YAML."""
    text = yaml.safe_dump(value, default_flow_style=True, width=math.inf, allow_unicode=True,
                          sort_keys=False)
    return text.rstrip("\n").removesuffix("\n...").strip()


def _comment(text: str, indent: int = 0, margin: int = 0) -> list[str]:
    """text as comment lines at this indentation, wrapped, its text `margin` spaces in."""
    prefix = f"{' ' * indent}# {' ' * margin}"
    return textwrap.wrap(" ".join(text.split()), width=LINE_WIDTH, initial_indent=prefix,
                         subsequent_indent=prefix, break_on_hyphens=False,
                         break_long_words=False)


def commented_yaml(values: dict, node: dict, notes: dict, indent: int = 0,
                   path: str = "") -> list[str]:
    """The lines of a YAML mapping: each key under its schema description as a comment,
    nested objects as blocks, every other value on its key's line (with its note: where it
    was read)."""
    properties = node.get("properties", {})
    named = node.get("additionalProperties")
    lines = []
    for key in [k for k in properties if k in values] + [k for k in values
                                                         if k not in properties]:
        sub = properties.get(key, named if isinstance(named, dict) else {})
        value, dotted = values[key], f"{path}.{key}" if path else key
        block = bool(isinstance(value, dict) and value and not is_placeholder(value)
                     and (sub.get("properties")
                          or isinstance(sub.get("additionalProperties"), dict)))
        if (block or indent == 0) and lines:
            lines.append("")
        lines += _comment(sub["description"], indent) if sub.get("description") else []
        if block:
            lines.append(f"{' ' * indent}{key}:")
            lines += commented_yaml(value, sub, notes, indent + 2, dotted)
        else:
            note = f"  # {notes[dotted]}" if dotted in notes else ""
            lines.append(f"{' ' * indent}{flow_yaml(key)}: {flow_yaml(value)}{note}")
    return lines


def placeholders_in(value, path: str = "") -> list[str]:
    """The dotted paths of the placeholders in a config."""
    if is_placeholder(value):
        return [path]
    if isinstance(value, dict):
        return [p for k, v in value.items()
                for p in placeholders_in(v, f"{path}.{k}" if path else str(k))]
    return []


@dataclass(frozen=True)
class InitRequest:
    """What `hklflow init` was told (None: not given)."""

    directory: str
    name: str | None = None
    detector: str | None = None
    wavelength: float | None = None
    master: str | None = None  # an NXmx master file (HDF5)
    cbf: str | None = None  # a CBF frame file of the scan
    scan_axis_name: str | None = None
    scan_axis: tuple | None = None
    sample: str = DEFAULT_SAMPLE
    space_group: str | None = None
    cell: tuple | None = None
    temperature: float | None = None
    entry: str = DEFAULT_ENTRY
    nframes: int | None = None
    phi_start: float | None = None
    phi_step: float | None = None
    calibrant: str | None = None
    calibration_image: str | None = None
    poni: str | None = None


def path_in_experiment(path: str, directory: str) -> str:
    """A path as the config and table give it: relative to the experiment directory when
    the file is inside it, else absolute."""
    absolute, top = Path(os.path.abspath(path)), Path(os.path.abspath(directory))
    return absolute.relative_to(top).as_posix() if absolute.is_relative_to(top) else str(absolute)


def _checked_name(value: str, option: str, column: str) -> str:

    pattern = schema("scans.schema.yaml")["properties"][column]["pattern"]
    if not re.fullmatch(pattern, value):
        raise ConfigError(f"{option} {value!r}: expected letters, digits, '_' or '-' (and '.' "
                          "for a sample), starting with a letter or digit, at most 64 characters")
    return value


def _calibration(request: InitRequest, detector: str | None, facts: ScanFacts | None) -> dict:

    if request.calibrant is not None and request.calibrant not in known_calibrants(
            request.calibrant):
        close = difflib.get_close_matches(request.calibrant, sorted(known_calibrants()), n=6)
        raise ConfigError(f"--calibrant {request.calibrant!r}: pyFAI knows no calibrant of that "
                          f"name (close ones: {', '.join(close) or 'none'})")
    calibrant = request.calibrant or placeholder("pyFAI calibrant name, such as CeO2 or LaB6")
    if request.poni:
        return {"calibrant": calibrant,
                "poni": path_in_experiment(request.poni, request.directory)}
    image = (path_in_experiment(request.calibration_image, request.directory)
             if request.calibration_image else placeholder("the calibrant's image file"))
    return {"image": image, "calibrant": calibrant, "start": start_geometry(detector, facts)}


def _sample(request: InitRequest, temperature) -> dict:
    space_group, cell = request.space_group, request.cell
    if space_group is not None and cell is not None:

        try:
            Crystal(str(space_group), UnitCell.from_list(list(cell)))
        except ValueError as exc:
            raise ConfigError(f"--space-group {space_group!r} --cell "
                              f"{' '.join(f'{v:g}' for v in cell)}: {exc}") from None
    if isinstance(space_group, str) and space_group.strip().isdigit():
        space_group = int(space_group)
    return {"space_group": placeholder("space group symbol or number")
            if space_group is None else space_group,
            "cell": placeholder("a, b, c (Angstrom), alpha, beta, gamma (deg)")
            if cell is None else [float(v) for v in cell],
            "parent": {"temperature": temperature}}


def config_and_notes(request: InitRequest, detector: str | None,
                     facts: ScanFacts | None) -> tuple[dict, dict]:
    """The config (defaults filled, placeholders where nothing says) and the notes of the
    values read from the raw file (dotted key -> where)."""
    def known(given, fact: str, key: str, hint: str):
        if given is not None:
            return given
        value = getattr(facts, fact, None) if facts is not None else None
        if value is None:
            return placeholder(hint)
        notes[key] = f"from {os.path.basename(facts.source)}: {facts.where[fact]}"
        return list(value) if isinstance(value, tuple) else value

    notes = {}
    calibration_name = (request.calibrant or DEFAULT_CALIBRATION).lower()
    calibration = _calibration(request, detector, facts)
    temperature = known(request.temperature, "temperature", f"samples.{request.sample}.parent."
                        "temperature", "K, the temperature of the parent scan")
    config = {
        "experiment": request.name or Path(os.path.abspath(request.directory)).name,
        "scans_table": SCANS_TABLE,
        "instrument": {
            "detector": {"name": detector or placeholder(
                "pyFAI detector name, see hklflow init --list-detectors" + (
                    f" (the file says {facts.detector_description!r})"
                    if facts is not None and facts.detector_description else ""))},
            "wavelength": known(request.wavelength, "wavelength", "instrument.wavelength",
                                "Angstrom"),
            "goniometer": {"scan_axis": known(list(request.scan_axis) if request.scan_axis
                                              else None, "scan_axis",
                                              "instrument.goniometer.scan_axis",
                                              "the rotation axis as a lab vector [L1, L2, L3]")},
        },
        "calibrations": {calibration_name: calibration},
        "samples": {request.sample: _sample(request, temperature)},
    }
    start = calibration.get("start", {})
    for key, fact in (("dist", "distance"), ("poni1", "beam_centre"), ("poni2", "beam_centre")):
        if key in start and not is_placeholder(start[key]):
            notes[f"calibrations.{calibration_name}.start.{key}"] = (
                f"from {os.path.basename(facts.source)}: {facts.where[fact]}")
    if facts is not None and facts.scan_axis_name:
        config["live"] = {"scan_axis_name": facts.scan_axis_name}
        notes["live.scan_axis_name"] = f"from {os.path.basename(facts.source)}: the axis that turns"
    return with_defaults(config, schema()), notes


CONFIG_HEADER = """\
# hklflow experiment configuration: {name}
# Written by `hklflow init`{source}.  Paths are relative to the experiment
# directory.  Every key is described above it (hklflow's config schema,
# config.schema.yaml); keys not given are at the schema's defaults.
"""

PLACEHOLDER_HEADER = """\
#
# Values marked {{{marker}: ...}} are not known yet: replace each with its value.  hklflow
# refuses the config, naming them, until then:
"""


def config_text(config: dict, notes: dict, source: str | None) -> str:

    lines = [CONFIG_HEADER.format(name=config["experiment"],
                                  source=f" from {source}" if source else "").rstrip("\n")]
    missing = placeholders_in(config)
    if missing:
        lines.append(PLACEHOLDER_HEADER.format(marker=PLACEHOLDER).rstrip("\n"))
        lines += _comment(", ".join(missing), margin=2)
    lines.append("")
    lines += commented_yaml(config, schema(), notes)
    return "\n".join(lines) + "\n"


def scans_table_row(request: InitRequest, facts: ScanFacts | None, temperature) -> dict:
    """The scans table's row of the raw file's scan (FILL_IN where nothing says)."""
    def cell(given, fact: str) -> str:
        value = given if given is not None else getattr(facts, fact, None)
        if value is None or is_placeholder(value):
            return PLACEHOLDER
        return str(value) if isinstance(value, int) else f"{value:.10g}"

    data = (path_in_experiment(facts.data, request.directory) if facts is not None
            else PLACEHOLDER)
    return {"sample": request.sample, "temperature": cell(temperature, "temperature"),
            "entry": request.entry, "data": data, "nframes": cell(request.nframes, "nframes"),
            "phi_start": cell(request.phi_start, "phi_start"),
            "phi_step": cell(request.phi_step, "phi_step")}


def scans_table_text(row: dict) -> str:
    """The scans table: comment lines (each column's description from the scans schema),
    the header and the row."""
    properties = schema("scans.schema.yaml")["properties"]
    lines = _comment("hklflow scans table, written by `hklflow init`: one row per rotation scan "
                     "entry, its cells separated by tabs. The columns (all of them: "
                     "scans.schema.yaml):")
    for column in row:
        lines += _comment(f"{column} - {properties[column]['description']}", margin=2)
    if PLACEHOLDER in row.values():
        lines.append(f"# Cells marked {PLACEHOLDER} are not known yet: replace each with its "
                     "value.")
    lines += ["\t".join(row), "\t".join(str(v) for v in row.values())]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------
# The command
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class InitResult:
    config_file: Path
    scans_table: Path
    to_fill_in: tuple[str, ...]  # the placeholders: config keys, then table columns
    facts: ScanFacts | None


def init_experiment(request: InitRequest, force: bool = False) -> InitResult:
    """Write DIR/config/config.yaml and DIR/config/scans.tsv; FileExistsError naming an
    existing one unless force, ConfigError for what cannot be right."""
    top = Path(request.directory)
    files = (top / CONFIG_FILE, top / SCANS_TABLE)
    existing = [str(f) for f in files if f.exists()]
    if existing and not force:
        raise FileExistsError(f"{' and '.join(existing)} already "
                              f"{'exists' if len(existing) == 1 else 'exist'}: hklflow init "
                              "never overwrites a config (--force replaces it)")
    _checked_name(request.sample, "--sample", "sample")
    _checked_name(request.entry, "--entry", "entry")
    detector = resolve_detector(request.detector) if request.detector else None
    for option, path in (("--master", request.master), ("--cbf", request.cbf),
                         ("--calibration-image", request.calibration_image),
                         ("--poni", request.poni)):
        if path and not os.path.isfile(path):
            raise ConfigError(f"{option} {path}: no such file")
    if request.master and request.cbf:
        raise ConfigError("give --master or --cbf, not both: the scan of one raw file")
    if request.scan_axis_name and not request.master:
        raise ConfigError("--scan-axis-name names an axis of an NXmx master (--master)")
    facts = (read_nxmx(request.master, request.scan_axis_name) if request.master
             else read_cbf(request.cbf) if request.cbf else None)
    if facts is not None and detector:
        check_frame_shape(detector, facts)
    config, notes = config_and_notes(request, detector, facts)
    temperature = config["samples"][request.sample]["parent"]["temperature"]
    row = scans_table_row(request, facts, temperature)
    files[0].parent.mkdir(parents=True, exist_ok=True)
    write_text_atomically(files[0], config_text(config, notes, facts and facts.source))
    write_text_atomically(files[1], scans_table_text(row))
    table_cells = tuple(f"{SCANS_TABLE}: {c}" for c, v in row.items() if v == PLACEHOLDER)
    return InitResult(files[0], files[1], tuple(placeholders_in(config)) + table_cells, facts)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="hklflow init",
        description="Write DIR/config/config.yaml (every key commented, from the config "
                    "schema; the schema's defaults where nothing else is given) and "
                    "DIR/config/scans.tsv for a real experiment.  Wavelength, scan angles, "
                    "frame count and detector distance are read from an NXmx master file "
                    "or a CBF header when given; values nothing gives are written as "
                    f"{PLACEHOLDER} placeholders, which hklflow refuses, naming them, until "
                    "they are filled in.  An existing config is never overwritten (--force).",
        epilog="example: hklflow init exp --detector Eiger2_4M --master raw/f1_master.h5 "
               "--sample s1 --space-group 'F m -3 m' --cell 5.4 5.4 5.4 90 90 90 "
               "--temperature 300 --calibrant CeO2 --calibration-image raw/ceo2.cbf; "
               "then: hklflow run exp -- -n")
    p.add_argument("directory", metavar="DIR", nargs="?",
                   help="the experiment directory (made if absent)")
    p.add_argument("--list-detectors", action="store_true",
                   help="print pyFAI's detector names and shapes, and stop")
    p.add_argument("--name", help="the experiment's name (default: DIR's name)")
    p.add_argument("--detector", metavar="NAME", help="pyFAI detector name, e.g. Eiger2_4M")
    p.add_argument("--wavelength", type=float, metavar="A",
                   help="X-ray wavelength (Angstrom); default: the raw file's")
    raw = p.add_mutually_exclusive_group()
    raw.add_argument("--master", metavar="FILE.h5",
                     help="an NXmx master file of a scan: wavelength, angles, frame count, "
                          "detector distance and beam centre")
    raw.add_argument("--cbf", metavar="FILE.cbf",
                     help="a CBF frame file of a scan: the same from its header (the frames: "
                          "the files named like it, its number a *)")
    p.add_argument("--scan-axis-name", metavar="NAME",
                   help="the master's goniometer axis that is scanned (default: the one that "
                        "turns)")
    p.add_argument("--scan-axis", type=float, nargs=3, metavar=("L1", "L2", "L3"),
                   help="the rotation axis as a lab vector (default: the master's axis vector)")
    p.add_argument("--sample", default=DEFAULT_SAMPLE, help="the sample's name (default: "
                   f"{DEFAULT_SAMPLE})")
    p.add_argument("--space-group", metavar="SG", help="e.g. 'F m -3 m' or 225")
    p.add_argument("--cell", type=float, nargs=6, metavar=("a", "b", "c", "al", "be", "ga"),
                   help="approximate cell (Angstrom, deg)")
    p.add_argument("--temperature", type=float, metavar="K",
                   help="the scan's temperature (default: the master's, if it has one)")
    p.add_argument("--entry", default=DEFAULT_ENTRY,
                   help=f"the scan's entry name (default: {DEFAULT_ENTRY})")
    p.add_argument("--nframes", type=int, help="frame count (default: the raw file's)")
    p.add_argument("--phi-start", type=float, metavar="DEG",
                   help="scan angle at the start of the first frame (default: the raw file's)")
    p.add_argument("--phi-step", type=float, metavar="DEG",
                   help="scan angle increment per frame (default: the raw file's)")
    p.add_argument("--calibrant", metavar="NAME", help="pyFAI calibrant name, e.g. CeO2")
    calibration = p.add_mutually_exclusive_group()
    calibration.add_argument("--calibration-image", metavar="FILE",
                             help="the calibrant's image (refined from the raw file's "
                                  "distance and beam centre)")
    calibration.add_argument("--poni", metavar="FILE", help="import this PONI file instead")
    p.add_argument("--force", action="store_true",
                   help="overwrite an existing config/config.yaml and config/scans.tsv")
    return p


def facts_summary(facts: ScanFacts) -> str:
    """What a raw file said, in a line."""
    parts = []
    if facts.wavelength is not None:
        parts.append(f"wavelength {facts.wavelength:g} A")
    if facts.phi_start is not None:
        parts.append(f"{facts.scan_axis_name or 'scan'} from {facts.phi_start:g} deg by "
                     f"{facts.phi_step:g} deg")
    if facts.nframes is not None:
        parts.append(f"{facts.nframes} frames")
    if facts.scan_axis is not None:
        parts.append(f"scan axis {list(facts.scan_axis)} (lab)")
    if facts.distance is not None:
        parts.append(f"detector distance {facts.distance:g} m")
    if facts.beam_centre is not None:
        parts.append("direct beam at row {:.6g}, column {:.6g}".format(*facts.beam_centre))
    if facts.temperature is not None:
        parts.append(f"{facts.temperature:g} K")
    return ", ".join(parts) or "nothing hklflow uses"


def main(argv=None) -> int:
    p = parser()
    args = p.parse_args(argv)
    if args.list_detectors:
        print(list_detectors())
        return 0
    if args.directory is None:
        p.error("the experiment directory DIR is required")
    request = InitRequest(
        directory=args.directory, name=args.name, detector=args.detector,
        wavelength=args.wavelength, master=args.master, cbf=args.cbf,
        scan_axis_name=args.scan_axis_name,
        scan_axis=tuple(args.scan_axis) if args.scan_axis else None, sample=args.sample,
        space_group=args.space_group, cell=tuple(args.cell) if args.cell else None,
        temperature=args.temperature, entry=args.entry, nframes=args.nframes,
        phi_start=args.phi_start, phi_step=args.phi_step, calibrant=args.calibrant,
        calibration_image=args.calibration_image, poni=args.poni)
    try:
        result = init_experiment(request, force=args.force)
    except (HklflowError, FileExistsError, OSError) as exc:
        print(f"hklflow init: {exc}", file=sys.stderr)
        return 1
    print(f"hklflow init: wrote {result.config_file} and {result.scans_table}")
    if result.facts is not None:
        print(f"  read from {result.facts.source}: {facts_summary(result.facts)}")
    if result.to_fill_in:
        print(f"  still to fill in (marked {PLACEHOLDER}): {', '.join(result.to_fill_in)}")
    print(f"  then: hklflow run {args.directory} -- -n   (a dry run: what would be made)")
    return 0
