"""`hklflow init DIR`: config/config.yaml and config/scans.tsv of a new experiment.

The config gets every key of the config schema, each under its schema description as a
comment (the schema's path in this installation named at the top; the common values of
a few keys suggested: HINTS), with the values known: those given on the command line,
those read from the raw files (NXmx master files or Pilatus CBF headers: hklflow.files.nxmx,
files.cbf_header), the schema's defaults for the rest.  What nothing says (the sample's
space group and cell, the calibration, ...) is written as a placeholder ``{FILL_IN: what}``:
a mapping where the schema wants a number, a text or a list, so that load_experiment
refuses the config and names every field still to fill in.  An EIGER master's pixel mask
becomes the experiment's mask (instrument.detector.mask_file and mask_dataset), and the
sensor a file names (NXmx sensor_material/sensor_thickness, a CBF header's sensor line) its
instrument.detector.sensor, which corrects the parallax.

The scans table gets one row per scan: each master, each CBF scan (its frame files, any of
them given), globs of either expanded.  A row's sample, temperature and entry come from the
file's path where a path pattern (live.discover's: hklflow.live.discover.DiscoveryPattern,
given with --pattern or one of DEFAULT_PATTERNS that every path matches) says them, else
from the command line, else (a temperature) from the file; its unknown cells are
``FILL_IN``, which the scans schema refuses as well.

An existing config or scans table is never overwritten without --force.
"""
from __future__ import annotations

import argparse
import copy
import difflib
import glob
import math
import os
import re
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import yaml

from ..base.atomic import write_text_atomically
from ..base.errors import ConfigError, HklflowError
from ..live.discover import DiscoveryPattern
from ..model.crystal import Crystal, UnitCell
from ..model.geometry import DetectorGeometry, detector_shape, known_calibrants, pyfai_tables
from ..model.scan import temperature_label
from ..model.sensor import material_name
from ..planning.config import PLACEHOLDER
from ..raw.rawfiles import eiger_data_files, is_eiger_master, natural_key
from ..settings.schema import schema, schema_path
from .scan_facts import ScanFacts, cbf_frame_glob, read_cbf, read_nxmx

CONFIG_FILE = "config/config.yaml"
SCANS_TABLE = "config/scans.tsv"
LINE_WIDTH = 100
DEFAULT_SAMPLE = "sample"
DEFAULT_ENTRY = "f1"
DEFAULT_CALIBRATION = "powder"  # the calibration's name when the calibrant is not given

def placeholder(hint: str) -> dict:
    """A value still to fill in: a mapping, which no field of the schemas it stands in takes."""
    return {PLACEHOLDER: hint}


def is_placeholder(value) -> bool:
    return isinstance(value, dict) and set(value) == {PLACEHOLDER}




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
# keys whose common values a new user would otherwise look up: dotted key -> comment lines
# written under its description (an item of a list indented)
HINTS = {
    "instrument.goniometer.scan_axis": [
        "Common values (docs/conventions.md, Lab frame):",
        "- [0, 1, 0]: horizontal, across the beam - the omega or phi axis of a horizontal "
        "goniometer, as at most beamlines",
        "- [0, -1, 0]: the same axis with the angle increasing the other way (or keep "
        "[0, 1, 0] and set scan_sense: -1)",
        "- [1, 0, 0]: vertical, up - a vertical-axis goniometer",
        "- [-1, 0, 0]: vertical, the angle increasing the other way",
        "An NXmx master gives the axis as its @vector in NeXus's frame (x horizontal, y up, "
        "z along the beam): a NeXus vector (x, y, z) is [y, -x, z] here, so omega's usual "
        "[-1, 0, 0] is [0, 1, 0].",
    ],
}


def _hint(lines: list[str], indent: int) -> list[str]:
    out = []
    for line in lines:
        prefix = f"{' ' * indent}# " + ("  " if line.startswith("- ") else "")
        out += textwrap.wrap(line, width=LINE_WIDTH, initial_indent=prefix,
                             subsequent_indent=prefix + ("  " if line.startswith("- ") else ""),
                             break_on_hyphens=False, break_long_words=False)
    return out


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
    """The lines of a YAML mapping: each key under its schema description as a comment
    (and its HINTS), nested objects as blocks, every other value on its key's line (with its
    note: where it was read)."""
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
        lines += _hint(HINTS[dotted], indent) if dotted in HINTS else []
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
    master: tuple[str, ...] = ()  # NXmx master (or HDF5 stack) files, or globs of them
    cbf: tuple[str, ...] = ()  # CBF frame files (any frame names its scan), or globs
    pattern: str | None = None  # the raw files' path pattern (live.discover's fields)
    scan_axis_name: str | None = None
    scan_axis: tuple | None = None
    sample: str | None = None  # every scan's, where no pattern says (default: DEFAULT_SAMPLE)
    space_group: str | None = None
    cell: tuple | None = None
    temperature: float | None = None  # every scan's, where no pattern says
    parent_temperature: float | None = None
    entry: str | None = None  # the one scan's (default: DEFAULT_ENTRY)
    nframes: int | None = None
    phi_start: float | None = None
    phi_step: float | None = None
    calibrant: str | None = None
    calibration_image: str | None = None
    poni: str | None = None

    def __post_init__(self):
        for name in ("master", "cbf"):  # (one file given as a string)
            value = getattr(self, name)
            object.__setattr__(self, name, (value,) if isinstance(value, str)
                               else tuple(value or ()))


# --------------------------------------------------------------------------------------
# The scans: one per master or CBF scan, named by their paths or the command line
# --------------------------------------------------------------------------------------
# layouts tried, in order, when neither --pattern nor a scan's names are given: the first
# that every path matches names them (live.discover's examples)
DEFAULT_PATTERNS = (
    "{sample}/{temperature}K/{entry}/{entry}_master.h5",
    "{sample}/{temperature}K/{entry}_master.h5",
    "{sample}/{temperature}K/{entry}.h5",
    "{sample}/{temperature}K/{entry}/{entry}_*.cbf",
    "{sample}/{temperature}K/{entry}_*.cbf",
)


@dataclass
class Scan:
    """A row of the scans table: its names, what its raw file says, and where its sample,
    temperature and entry came from (a note; None: the command line)."""

    facts: ScanFacts | None  # None: no raw file given
    sample: str
    temperature: float | None  # None: not known (FILL_IN)
    entry: str
    named_by: str | None = None


def _expanded(given: tuple[str, ...], option: str) -> list[str]:
    """The files an option names: each path as given, each glob's matches in natural
    order; ConfigError naming a path or glob that names none."""
    files = []
    for item in given:
        if glob.has_magic(item):
            found = sorted((f for f in glob.glob(item, recursive=True) if os.path.isfile(f)),
                           key=natural_key)
            if not found:
                raise ConfigError(f"{option} {item!r}: no file matches")
            files += found
        elif os.path.isfile(item):
            files.append(item)
        else:
            raise ConfigError(f"{option} {item}: no such file")
    return list(dict.fromkeys(files))  # (each once, in order)


def raw_scans(request: InitRequest) -> list[ScanFacts]:
    """What each scan's raw file says: one per master (a glob's DECTRIS data files left
    out: their master is the scan), one per CBF scan (its frame files: any of them named)."""
    masters = _expanded(request.master, "--master")
    data_files = {os.path.abspath(d) for m in masters if is_eiger_master(m)
                  for d in eiger_data_files(m)}
    masters = [m for m in masters if os.path.abspath(m) not in data_files]
    scans = [read_nxmx(m, request.scan_axis_name) for m in masters]
    frames_of = {}  # a CBF scan's frame glob -> the first of its files named
    for frame in _expanded(request.cbf, "--cbf"):
        frames_of.setdefault(cbf_frame_glob(frame), frame)
    return scans + [read_cbf(frame) for frame in frames_of.values()]


def fields_of(pattern: DiscoveryPattern, path: str) -> dict | None:
    """The pattern's fields in a raw file's path, matched against as many of the path's last
    components as the pattern has (it need not say where the raw data lie); None when it
    does not match."""
    parts = Path(os.path.abspath(path)).parts
    depth = pattern.text.count("/") + 1
    return pattern.match("/".join(parts[-depth:])) if len(parts) > depth else None


def path_pattern(request: InitRequest, scans: list[ScanFacts]) -> DiscoveryPattern | None:
    """The pattern that names the scans: --pattern (ConfigError naming a path it does not
    match), else the first of DEFAULT_PATTERNS that every path matches when the command
    line names none of them, else None."""
    if request.pattern is not None:
        pattern = DiscoveryPattern.parse(request.pattern)
        given = [o for o, v in (("--sample", request.sample), ("--temperature",
                 request.temperature), ("--entry", request.entry)) if v is not None]
        if given:
            raise ConfigError(f"--pattern {request.pattern} gives every scan's sample, "
                              f"temperature and entry: not {' and '.join(given)} as well")
        unmatched = [s.source for s in scans if fields_of(pattern, s.source) is None]
        if unmatched:
            raise ConfigError(f"--pattern {request.pattern}: {', '.join(unmatched[:3])}"
                              f"{' and more' if len(unmatched) > 3 else ''} "
                              f"{'does' if len(unmatched) == 1 else 'do'} not match it "
                              "(matched against the last components of each path)")
        return pattern
    if not scans or any(v is not None for v in (request.sample, request.temperature,
                                                 request.entry)):
        return None
    for text in DEFAULT_PATTERNS:
        pattern = DiscoveryPattern.parse(text)
        if all(fields_of(pattern, s.source) is not None for s in scans):
            return pattern
    return None


def named_scans(request: InitRequest, scans: list[ScanFacts],
                pattern: DiscoveryPattern | None) -> list[Scan]:
    """Each scan with its sample, temperature and entry: from the path pattern, else the
    command line (the temperature: else the file's; several scans' entries: f1, f2, ...);
    ConfigError for two scans of one name."""
    if request.entry is not None and len(scans) > 1:
        raise ConfigError(f"--entry {request.entry} names one scan's entry: for {len(scans)} "
                          "scans the entries come from their paths (--pattern) or are "
                          "numbered f1, f2, ...")
    named = []
    for i, facts in enumerate(scans or [None], 1):
        if pattern is not None:
            fields = fields_of(pattern, facts.source)
            named.append(Scan(facts, fields["sample"], float(fields["temperature"]),
                              fields["entry"], f"the path, as {pattern.text}"))
            continue
        temperature = request.temperature
        if temperature is None and facts is not None and facts.temperature is not None:
            temperature = facts.temperature
        entry = request.entry or (DEFAULT_ENTRY if len(scans) <= 1 else f"f{i}")
        named.append(Scan(facts, request.sample or DEFAULT_SAMPLE, temperature, entry))
    seen = {}
    for scan in named:
        key = (scan.sample, None if scan.temperature is None
               else temperature_label(scan.temperature), scan.entry)
        if key in seen:
            label = key[1] or PLACEHOLDER
            raise ConfigError(f"{seen[key].facts.source} and {scan.facts.source} are both scan "
                              f"{scan.sample}/{label}/{scan.entry}: give each scan a name of "
                              "its own (their paths, or --pattern)")
        seen[key] = scan
    return named


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


def _parent_temperature(request: InitRequest, sample: str, scans: list[Scan], notes: dict):
    """The sample's parent temperature: --parent-temperature (one of its scans'), else its
    scans' one temperature, else a placeholder (naming its temperatures)."""
    own = [s for s in scans if s.sample == sample]
    temperatures = sorted({s.temperature for s in own if s.temperature is not None})
    listed = ", ".join(f"{t:g}" for t in temperatures)
    if request.parent_temperature is not None:
        label = temperature_label(request.parent_temperature)
        if temperatures and label not in {temperature_label(t) for t in temperatures}:
            raise ConfigError(f"--parent-temperature {request.parent_temperature:g}: sample "
                              f"{sample} has no scan at it (its scans: {listed} K)")
        return request.parent_temperature
    if len(temperatures) == 1 and all(s.temperature is not None for s in own):
        first = own[0]
        key = f"samples.{sample}.parent.temperature"
        if first.named_by:
            notes[key] = f"from {first.named_by}"
        elif request.temperature is None and first.facts is not None:
            notes[key] = (f"from {os.path.basename(first.facts.source)}: "
                          f"{first.facts.where['temperature']}")
        return temperatures[0]
    return placeholder("K, the temperature of the parent scan" + (
        f": one of {listed}" if len(temperatures) > 1 else ""))


def check_one_instrument(request: InitRequest, scans: list[Scan]) -> None:
    """ConfigError when the scans' files disagree on what a config holds once: the
    wavelength (by more than 0.1%, unless --wavelength says it) and the axis that turns."""
    read = [s.facts for s in scans if s.facts is not None]
    checks = [("scan_axis_name", "turn different axes", "--scan-axis-name",
               lambda a, b: a == b)]
    if request.wavelength is None:
        checks.append(("wavelength", "have different wavelengths", "--wavelength",
                       lambda a, b: abs(a - b) <= 1e-3 * abs(a)))
    for fact, differ, option, same in checks:
        given = [(f, getattr(f, fact)) for f in read if getattr(f, fact) is not None]
        other = next(((f, v) for f, v in given if not same(given[0][1], v)), None)
        if other is not None:
            (f1, v1), (f2, v2) = given[0], other
            raise ConfigError(f"{f1.source} and {f2.source} {differ} ({v1} and {v2}): one "
                              f"config has one: give {option}, or init them as experiments "
                              "of their own")


def discover_pattern(request: InitRequest, scans: list[Scan],
                     pattern: DiscoveryPattern | None) -> str | None:
    """live.discover for `hklflow watch`: the path pattern relative to the experiment
    directory, when every scan's file is in it, under the same folder; else None."""
    if pattern is None or any(s.facts is None for s in scans):
        return None
    depth = pattern.text.count("/") + 1
    folders = set()
    for scan in scans:
        path = path_in_experiment(scan.facts.source, request.directory)
        if os.path.isabs(path):
            return None
        folders.add(tuple(path.split("/")[:-depth]))
    return "/".join([*folders.pop(), pattern.text]) if len(folders) == 1 else None


def config_and_notes(request: InitRequest, detector: str | None, scans: list[Scan],
                     pattern: DiscoveryPattern | None = None) -> tuple[dict, dict]:
    """The config (defaults filled, placeholders where nothing says) and the notes of the
    values read from the raw files (dotted key -> where): the instrument's from the first
    scan's file, the pixel mask from the first master that has one."""
    facts = scans[0].facts

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
    samples = {}
    for scan in scans:
        if scan.sample not in samples:
            samples[scan.sample] = _sample(request, _parent_temperature(request, scan.sample,
                                                                        scans, notes))
    detector_config = {"name": detector or placeholder(
        "pyFAI detector name, see hklflow init --list-detectors" + (
            f" (the file says {facts.detector_description!r})"
            if facts is not None and facts.detector_description else ""))}
    named = facts.sensor if facts is not None else None
    if named is not None and material_name(named[0]) is not None:  # (else left out: no parallax)
        detector_config["sensor"] = {"material": material_name(named[0]),
                                     "thickness": float(f"{named[1]:.6g}")}
        notes["instrument.detector.sensor"] = (f"from {os.path.basename(facts.source)}: "
                                               f"{facts.where['sensor']}")
    masked = next((s.facts for s in scans if s.facts is not None and s.facts.pixel_mask), None)
    if masked is not None:
        detector_config.update(mask_file=path_in_experiment(masked.source, request.directory),
                               mask_dataset=masked.pixel_mask)
        notes["instrument.detector.mask_file"] = (
            "the detector's own pixel mask, in this master (non-zero: gaps, dead and noisy "
            "pixels, not used)")
        notes["instrument.detector.mask_dataset"] = f"from {os.path.basename(masked.source)}"
    config = {
        "experiment": request.name or Path(os.path.abspath(request.directory)).name,
        "scans_table": SCANS_TABLE,
        "instrument": {
            "detector": detector_config,
            "wavelength": known(request.wavelength, "wavelength", "instrument.wavelength",
                                "Angstrom"),
            "goniometer": {"scan_axis": known(list(request.scan_axis) if request.scan_axis
                                              else None, "scan_axis",
                                              "instrument.goniometer.scan_axis",
                                              "the rotation axis as a lab vector [L1, L2, L3]")},
        },
        "calibrations": {calibration_name: calibration},
        "samples": samples,
    }
    start = calibration.get("start", {})
    for key, fact in (("dist", "distance"), ("poni1", "beam_centre"), ("poni2", "beam_centre")):
        if key in start and not is_placeholder(start[key]):
            notes[f"calibrations.{calibration_name}.start.{key}"] = (
                f"from {os.path.basename(facts.source)}: {facts.where[fact]}")
    live = {}
    if facts is not None and facts.scan_axis_name:
        live["scan_axis_name"] = facts.scan_axis_name
        notes["live.scan_axis_name"] = f"from {os.path.basename(facts.source)}: the axis that turns"
    discover = discover_pattern(request, scans, pattern)
    if discover:
        live["discover"] = discover
        notes["live.discover"] = "the scans' path pattern: hklflow watch finds new scans by it"
    if live:
        config["live"] = live
    return with_defaults(config, schema()), notes


CONFIG_HEADER = ("Written by `{by}`{source}. Paths are relative to the experiment "
                 "directory. Every key is described above it; keys not given are at the "
                 "schema's defaults. hklflow's config schema, in this installation:")

PLACEHOLDER_HEADER = """\
#
# Values marked {{{marker}: ...}} are not known yet: replace each with its value.  hklflow
# refuses the config, naming them, until then:
"""


def config_text(config: dict, notes: dict, source: str | None, by: str = "hklflow init") -> str:

    lines = [f"# hklflow experiment configuration: {config['experiment']}",
             *_comment(CONFIG_HEADER.format(by=by, source=f" from {source}" if source else "")),
             f"#   {schema_path()}"]
    missing = placeholders_in(config)
    if missing:
        lines.append(PLACEHOLDER_HEADER.format(marker=PLACEHOLDER).rstrip("\n"))
        lines += _comment(", ".join(missing), margin=2)
    lines.append("")
    lines += commented_yaml(config, schema(), notes)
    return "\n".join(lines) + "\n"


def scans_table_row(request: InitRequest, scan: Scan) -> dict:
    """The scans table's row of a scan (FILL_IN where nothing says)."""
    facts = scan.facts

    def cell(given, fact: str) -> str:
        value = given if given is not None else getattr(facts, fact, None)
        if value is None or is_placeholder(value):
            return PLACEHOLDER
        return str(value) if isinstance(value, int) else f"{value:.10g}"

    data = (path_in_experiment(facts.data, request.directory) if facts is not None
            else PLACEHOLDER)
    return {"sample": scan.sample, "temperature": cell(scan.temperature, "temperature"),
            "entry": scan.entry, "data": data, "nframes": cell(request.nframes, "nframes"),
            "phi_start": cell(request.phi_start, "phi_start"),
            "phi_step": cell(request.phi_step, "phi_step")}


def scans_table_text(rows: list[dict], by: str = "hklflow init",
                     row_notes: dict | None = None) -> str:
    """The scans table: comment lines (each column's description from the scans schema),
    the header and the rows (each after the comment lines row_notes gives it: row index ->
    text)."""
    properties = schema("scans.schema.yaml")["properties"]
    lines = _comment(f"hklflow scans table, written by `{by}`: one row per rotation scan "
                     "entry, its cells separated by tabs. Every column, these and the others, "
                     "is described in hklflow's scans schema, in this installation:")
    lines.append(f"#   {schema_path('scans.schema.yaml')}")
    lines.append("# The columns here:")
    for column in rows[0]:
        described = (properties[column]["description"] if column in properties else
                     f"the angle (deg) of the goniometer's offset axis {column} "
                     "(instrument.goniometer.offset_axes)")
        lines += _comment(f"{column} - {described}", margin=2)
    if any(PLACEHOLDER in row.values() for row in rows):
        lines.append(f"# Cells marked {PLACEHOLDER} are not known yet: replace each with its "
                     "value.")
    lines.append("\t".join(rows[0]))
    for i, row in enumerate(rows):
        if row_notes and i in row_notes:
            lines += _comment(row_notes[i])
        lines.append("\t".join(str(v) for v in row.values()))
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------
# The command
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class InitResult:
    config_file: Path
    scans_table: Path
    to_fill_in: tuple[str, ...]  # the placeholders: config keys, then table columns
    facts: ScanFacts | None  # the first scan's
    scans: tuple[Scan, ...] = ()
    pattern: str | None = None  # the path pattern that named the scans


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
    for value, option, column in ((request.sample, "--sample", "sample"),
                                  (request.entry, "--entry", "entry")):
        if value is not None:
            _checked_name(value, option, column)
    detector = resolve_detector(request.detector) if request.detector else None
    for option, path in (("--calibration-image", request.calibration_image),
                         ("--poni", request.poni)):
        if path and not os.path.isfile(path):
            raise ConfigError(f"{option} {path}: no such file")
    if request.master and request.cbf:
        raise ConfigError("give --master or --cbf, not both: the scans of one detector's files")
    if request.scan_axis_name and not request.master:
        raise ConfigError("--scan-axis-name names an axis of an NXmx master (--master)")
    if request.pattern is not None and not (request.master or request.cbf):
        raise ConfigError("--pattern names the scans of the raw files given (--master or --cbf)")
    read = raw_scans(request)
    pattern = path_pattern(request, read)
    scans = named_scans(request, read, pattern)
    check_one_instrument(request, scans)
    if detector:
        for facts in read:
            check_frame_shape(detector, facts)
    config, notes = config_and_notes(request, detector, scans, pattern)
    rows = [scans_table_row(request, scan) for scan in scans]
    facts = scans[0].facts
    source = facts and (facts.source if len(read) == 1 else
                        f"{facts.source} and {len(read) - 1} more scan"
                        f"{'s' if len(read) > 2 else ''}")
    files[0].parent.mkdir(parents=True, exist_ok=True)
    write_text_atomically(files[0], config_text(config, notes, source))
    write_text_atomically(files[1], scans_table_text(rows))
    table_cells = tuple(dict.fromkeys(f"{SCANS_TABLE}: {c}" for row in rows
                                      for c, v in row.items() if v == PLACEHOLDER))
    return InitResult(files[0], files[1], tuple(placeholders_in(config)) + table_cells, facts,
                      tuple(scans), pattern and pattern.text)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="hklflow init",
        description="Write DIR/config/config.yaml (every key commented, from the config "
                    "schema; the schema's defaults where nothing else is given) and "
                    "DIR/config/scans.tsv for a real experiment: one row per scan of the "
                    "NXmx masters or CBF scans given.  Wavelength, scan angles, frame count, "
                    "detector distance and an EIGER master's pixel mask are read from the "
                    "files; each scan's sample, temperature and entry from its path (--pattern, "
                    "or a common layout such as SAMPLE/300K/f1/f1_master.h5) or the command "
                    "line.  Values nothing gives are written as "
                    f"{PLACEHOLDER} placeholders, which hklflow refuses, naming them, until "
                    "they are filled in.  An existing config is never overwritten (--force).",
        epilog="examples: hklflow init exp --detector Eiger2_4M --master raw/f1_master.h5 "
               "--sample s1 --space-group 'F m -3 m' --cell 5.4 5.4 5.4 90 90 90 "
               "--temperature 300 --calibrant CeO2 --calibration-image raw/ceo2.cbf; "
               "hklflow init exp --detector Eiger2_4M --master 'raw/*/*K/*/*_master.h5' "
               "--pattern '{sample}/{temperature}K/{entry}/{entry}_master.h5' "
               "--parent-temperature 300; then: hklflow run exp -- -n")
    p.add_argument("directory", metavar="DIR", nargs="?",
                   help="the experiment directory (made if absent); give it first: --master "
                        "and --cbf take every path that follows them")
    p.add_argument("--list-detectors", action="store_true",
                   help="print pyFAI's detector names and shapes, and stop")
    p.add_argument("--name", help="the experiment's name (default: DIR's name)")
    p.add_argument("--detector", metavar="NAME", help="pyFAI detector name, e.g. Eiger2_4M")
    p.add_argument("--wavelength", type=float, metavar="A",
                   help="X-ray wavelength (Angstrom); default: the raw file's")
    raw = p.add_mutually_exclusive_group()
    raw.add_argument("--master", metavar="FILE.h5", nargs="+", default=(),
                     help="NXmx master files (or globs, quoted), one per scan: wavelength, "
                          "angles, frame count, detector distance, beam centre and the "
                          "detector's pixel mask (a glob's DECTRIS data files are left out)")
    raw.add_argument("--cbf", metavar="FILE.cbf", nargs="+", default=(),
                     help="CBF frame files (or globs, quoted): the same from their headers; "
                          "a scan is the files named like one of them, its number a *, and "
                          "any of its frames names it")
    p.add_argument("--pattern", metavar="PATTERN",
                   help="the raw files' paths with the fields {sample}, {temperature} and "
                        "{entry}, as live.discover takes them, e.g. "
                        "'{sample}/{temperature}K/{entry}/{entry}_master.h5' (matched against "
                        "the paths' last parts; default: the first of a few common layouts "
                        "that every path matches, unless --sample, --temperature or --entry "
                        "is given)")
    p.add_argument("--scan-axis-name", metavar="NAME",
                   help="the master's goniometer axis that is scanned (default: the one that "
                        "turns)")
    p.add_argument("--scan-axis", type=float, nargs=3, metavar=("L1", "L2", "L3"),
                   help="the rotation axis as a lab vector (default: the master's axis vector)")
    p.add_argument("--sample", help="the scans' sample (default: from the paths, else "
                   f"{DEFAULT_SAMPLE})")
    p.add_argument("--space-group", metavar="SG", help="e.g. 'F m -3 m' or 225")
    p.add_argument("--cell", type=float, nargs=6, metavar=("a", "b", "c", "al", "be", "ga"),
                   help="approximate cell (Angstrom, deg)")
    p.add_argument("--temperature", type=float, metavar="K",
                   help="the scans' temperature (default: from the paths, else the master's "
                        "if it has one)")
    p.add_argument("--parent-temperature", type=float, metavar="K",
                   help="the temperature of each sample's parent scan, whose orientation "
                        "seeds the others (default: the sample's one temperature)")
    p.add_argument("--entry", help="the scan's entry name (default: from the paths, else "
                   f"{DEFAULT_ENTRY}; several scans: f1, f2, ...)")
    p.add_argument("--nframes", type=int,
                   help="every scan's frame count (default: the raw files')")
    p.add_argument("--phi-start", type=float, metavar="DEG",
                   help="every scan's angle at the start of its first frame (default: the raw "
                        "files')")
    p.add_argument("--phi-step", type=float, metavar="DEG",
                   help="every scan's angle increment per frame (default: the raw files')")
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
        wavelength=args.wavelength, master=tuple(args.master), cbf=tuple(args.cbf),
        pattern=args.pattern, scan_axis_name=args.scan_axis_name,
        scan_axis=tuple(args.scan_axis) if args.scan_axis else None, sample=args.sample,
        space_group=args.space_group, cell=tuple(args.cell) if args.cell else None,
        temperature=args.temperature, parent_temperature=args.parent_temperature,
        entry=args.entry, nframes=args.nframes,
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
    if len(result.scans) > 1 or result.pattern:
        names = ["/".join((s.sample, PLACEHOLDER if s.temperature is None
                           else temperature_label(s.temperature), s.entry))
                 for s in result.scans]
        print(f"  {len(names)} scan{'s' if len(names) > 1 else ''}"
              + (f", named by their paths ({result.pattern})" if result.pattern else "")
              + f": {', '.join(names[:8])}{', ...' if len(names) > 8 else ''}")
    turned = {}  # goniometer axes away from 0 in some scan: name -> (file, angle), the first
    for scan in result.scans:
        for name, angle in (scan.facts.offsets if scan.facts is not None else {}).items():
            turned.setdefault(name, (os.path.basename(scan.facts.source), angle))
    if turned:
        print("  not written: the goniometer axes " + ", ".join(
            f"{n} ({a:g} deg in {f})" for n, (f, a) in turned.items()) + " stand away from 0: "
            "give each, outermost first, its lab vector in instrument.goniometer.offset_axes "
            "and its angles in a scans-table column of its name")
    if result.to_fill_in:
        print(f"  still to fill in (marked {PLACEHOLDER}): {', '.join(result.to_fill_in)}")
    print(f"  then: hklflow run {args.directory} -- -n   (a dry run: what would be made)")
    return 0
