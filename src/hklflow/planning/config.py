"""Experiment configuration: config.yaml + scans table -> one validated, resolved object.

Validation happens once, here, when the Snakefile is parsed, with the JSON schemas in
hklflow/schemas (linked from workflow/schemas): a bad config stops the run before any job,
and every error names the file, the row (for the table) and the field.  Steps never read
the config: each job receives the settings it uses through its rule's ``params:``
(:mod:`hklflow.settings.params`).

Keys that moved keep working: :data:`MOVED_KEYS` are moved to their new place, with a
warning naming both.
"""
from __future__ import annotations

import copy
import csv
import difflib
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ..base.errors import ConfigError
from ..model.corrections.absorption import SampleShape
from ..model.crystal import Crystal, UnitCell
from ..model.geometry import Goniometer, ScanAngles, detector_shape, known_calibrants
from ..model.scan import ScanRow, temperature_label
from ..raw.monitors import check_row_monitor
from ..settings.params import STEP_PARAMS, CalibrationParams, DetectorParams, SampleParams
from ..settings.scaling import ScalingParams
from ..settings.schema import schema, validator_with_defaults
from .cuts import check_cuts
from .jobs import (check_chunk_sizes, check_deliberate_repeats, check_grid_index_range,
                   check_grid_symmetry_of_samples, check_job_counts, check_model_input_volumes,
                   check_pdf_holes, made_volumes)

# old place -> new place (dotted config paths)
MOVED_KEYS = {
    "reduction.find_peaks.trusted_max": "instrument.detector.trusted_max",
    "reduction.mask.mask_file": "instrument.detector.mask_file",
    "reduction.mask.mask_dataset": "instrument.detector.mask_dataset",
}


# sample, calibration and entry names become folder names and command-line arguments:
# no '.' or '..', no leading '-' (an option to every step), bounded length (schemas hold the
# patterns; these are for messages)
NAME_PATTERNS = {"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$": "letters, digits, '_', '.' and '-'",
                 "^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$": "letters, digits, '_' and '-'"}
MAX_SCAN_TURNS = 10  # a rotation scan longer than this (nframes x |phi_step|) is a typo
MAX_PROBLEMS_SHOWN = 20  # a config or table with more problems: the first ones and a count


# the scans table hklflow watch writes and runs the workflow on: the scans landed so far,
# each with the frames to reduce now (hklflow.live)
LIVE_SCANS_TABLE = "live/scans.tsv"
# the scans tables hklflow run writes without the rows whose data do not exist yet
# (hklflow.commands.set_aside), relative to the experiment directory
SET_ASIDE_DIR = ".snakemake/hklflow/set_aside"
# beside such a table: the rows left out, each with its line (hklflow run's), as JSON
SET_ASIDE_ROWS = "set_aside.json"
LIVE_CONFIG = "live/config.yaml"
# beside the live table, while there are any: the scans the watcher knows are planned (the
# user's table, live.discover) but not yet in it, [{"scan": ID, "frames": 0, "planned": N}]:
# their temperatures are previews and their PDFs wait
LIVE_WAITING = "live/waiting.json"


def waiting_scans(scans_table: str, base_dir: str | Path = ".") -> tuple[dict, ...]:
    """The scans planned but not yet in the live table (LIVE_WAITING); none for any other
    table (a batch run) or when there are none."""
    if Path(scans_table).as_posix() != LIVE_SCANS_TABLE:
        return ()
    try:
        records = json.loads((Path(base_dir) / LIVE_WAITING).read_text())
    except FileNotFoundError:
        return ()
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{LIVE_WAITING}: cannot be read ({exc}): hklflow watch writes it") \
            from None
    return tuple(dict(r) for r in records)


def set_aside_rows(scans_table: str, base_dir: str | Path = ".") -> tuple[dict, ...]:
    """The rows `hklflow run` left out of the scans table the config names (SET_ASIDE_ROWS:
    sample, temperature label and line each), for the notes of the results made without
    them; none for any other table."""
    if not Path(scans_table).as_posix().startswith(SET_ASIDE_DIR):
        return ()
    try:
        rows = json.loads((Path(base_dir) / scans_table).with_name(SET_ASIDE_ROWS).read_text())
    except (OSError, ValueError):
        return ()  # (written before the rows were listed: results without notes of them)
    return tuple(rows)


# --------------------------------------------------------------------------------------
# Resolved objects
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CalibrationSpec:
    """Where a calibration comes from and which scans it is valid for (the rest of its
    settings: params.CalibrationParams)."""

    name: str
    image: str | None
    poni: str | None
    valid_for: dict

    def matches(self, scan: "ScanRow") -> bool:
        vf = self.valid_for
        if "samples" in vf and scan.sample not in vf["samples"]:
            return False
        if "entries" in vf and scan.entry not in vf["entries"]:
            return False
        if "temperatures" in vf:
            lo, hi = vf["temperatures"]
            if not lo <= scan.temperature <= hi:
                return False
        return True


@dataclass(frozen=True)
class SampleSpec:
    name: str
    crystal: Crystal
    parent_temperature: float
    other_parents: tuple = ()  # ((parent temperature, (low, high)), ...)
    shape: dict | None = None  # samples.NAME.shape (model.corrections.SampleShape)

    @property
    def parent_label(self) -> str:
        return temperature_label(self.parent_temperature)

    def parent_for(self, temperature: float) -> str:
        """Label of the parent scan that seeds the scans at this temperature (a parent
        seeds itself)."""
        for t, (lo, hi) in self.other_parents:
            if lo <= temperature <= hi:
                return temperature_label(t)
        return self.parent_label

    @property
    def params(self) -> SampleParams:
        """What the jobs of the sample receive of it: name, space group and cell."""
        return SampleParams(self.name, self.crystal.hm, tuple(self.crystal.cell.parameters))


@dataclass(frozen=True)
class Instrument:
    detector: DetectorParams
    wavelength: float
    polarization_fraction: float
    goniometer: Goniometer


@dataclass(frozen=True)
class Experiment:
    name: str
    sources: tuple[str, ...]
    scans_table: str
    instrument: Instrument
    calibrations: dict
    samples: dict
    scans: tuple
    reduction: dict = field(default_factory=dict)
    raw: dict = field(default_factory=dict, repr=False)  # the validated config, defaults filled
    warnings: tuple = ()
    # the scans planned but not yet in a live table (waiting_scans): previews, PDFs wait
    waiting: tuple = ()
    # the rows of role background: ingested and transformed for the sample rows naming
    # them, nothing else (not among `scans`, which every other step plans from)
    backgrounds: tuple = ()

    def __post_init__(self):
        # the lookups below by sample, temperature label and entry, indexed once: planning
        # asks them for every job (thousands), and a scan over the table each time made the
        # plan quadratic in the number of scan entries
        by_id, of_sample, of_temperature = {}, {}, {}
        for s in self.backgrounds:
            by_id.setdefault((s.sample, s.temperature_label, s.entry), s)
        for s in self.scans:
            label = s.temperature_label
            by_id.setdefault((s.sample, label, s.entry), s)
            of_sample.setdefault(s.sample, []).append(s)
            of_temperature.setdefault((s.sample, label), []).append(s)
        temperatures = {}
        for name, scans in of_sample.items():
            seen = temperatures[name] = []
            for s in sorted(scans, key=lambda s: s.temperature):
                if s.temperature_label not in seen:
                    seen.append(s.temperature_label)
        object.__setattr__(self, "_scan_index", by_id)
        object.__setattr__(self, "_scans_of_sample", of_sample)
        object.__setattr__(self, "_scans_of_temperature", of_temperature)
        object.__setattr__(self, "_temperatures", temperatures)

    def scan(self, sample: str, temperature_label: str, entry: str) -> ScanRow:
        try:
            return self._scan_index[(sample, temperature_label, entry)]
        except KeyError:
            raise KeyError(f"no scan {sample}/{temperature_label}/{entry} in "
                           f"{self.scans_table}") from None

    def background_of(self, scan: ScanRow) -> ScanRow | None:
        """The background row a sample row names (None: none)."""
        key = scan.background_key
        return None if key is None else self._scan_index[key]

    def scans_of(self, sample: str, temperature_label: str | None = None) -> list:
        if temperature_label is None:
            return list(self._scans_of_sample.get(sample, ()))
        return list(self._scans_of_temperature.get((sample, temperature_label), ()))

    def temperatures_of(self, sample: str) -> list[str]:
        return list(self._temperatures.get(sample, ()))

    def pdf_temperatures_of(self, sample: str) -> list[str]:
        """The temperatures whose PDFs are made: all of them, but while the experiment is
        watched (hklflow watch) only those whose scans are complete (live.preview_pdf: all)."""
        if self.raw.get("live", {}).get("preview_pdf", False):
            return self.temperatures_of(sample)
        return [t for t in self.temperatures_of(sample) if not self.is_preview(sample, t)]

    def is_preview(self, sample: str, temperature_label: str) -> bool:
        """Whether a temperature's results are previews (hklflow watch): a scan of it is in
        progress, or planned and not yet in the live table."""
        return (any(s.in_progress for s in self.scans_of(sample, temperature_label))
                or bool(self.waiting_of(sample, temperature_label)))

    def waiting_of(self, sample: str, temperature_label: str) -> tuple[dict, ...]:
        """The records of this temperature's scans planned but not yet in the live table."""
        return tuple(r for r in self.waiting
                     if r["scan"].rpartition("/")[0] == f"{sample}/{temperature_label}")


# --------------------------------------------------------------------------------------
# Reading and validating
# --------------------------------------------------------------------------------------
def _field_path(err) -> str:
    parts = [str(p) for p in err.absolute_path]
    return ".".join(parts) if parts else "(top level)"


def _shown(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:30]}... ({len(str(value))} characters)"


# what `hklflow init` writes where nothing says (the config: {FILL_IN: what to give}; the
# scans table: a cell FILL_IN)
PLACEHOLDER = "FILL_IN"


def is_placeholder(value) -> bool:
    return value == PLACEHOLDER or (isinstance(value, dict) and set(value) == {PLACEHOLDER})


def placeholder_problem(value) -> str:
    hint = value.get(PLACEHOLDER) if isinstance(value, dict) else None
    return f"still {PLACEHOLDER}" + (f" ({hint})" if hint else "")


def _unknown_keys(err) -> str | None:
    """'unknown key 'tranform' (did you mean 'transform'?)' for keys the schema does not
    allow where it lists the allowed ones; None for other errors."""
    if err.validator != "additionalProperties" or not isinstance(err.instance, dict):
        return None
    known = list(err.schema.get("properties", {}))
    patterns = [re.compile(p) for p in err.schema.get("patternProperties", {})]
    unknown = [k for k in err.instance if k not in known
               and not any(p.search(str(k)) for p in patterns)]
    if not unknown or not known:
        return None
    parts = []
    for key in unknown:
        close = difflib.get_close_matches(str(key), known, n=1, cutoff=0.6)
        parts.append(f"unknown key {str(key)!r}" + (f" (did you mean {close[0]!r}?)" if close
                                                     else ""))
    return "; ".join(parts) + f"; allowed here: {', '.join(known)}"


def _number_as_text(err) -> str | None:
    """For a number the YAML read as text, what to write instead; None for other errors.
    YAML 1.1 (PyYAML, Snakemake) reads a float only with a dot and a signed exponent:
    `1e-3` and `1.0e3` are text, `1.0e-3` and `1.0e+3` numbers."""
    types = err.validator_value if isinstance(err.validator_value, list) else [err.validator_value]
    if err.validator != "type" or not isinstance(err.instance, str) \
            or not {"number", "integer"} & set(types):
        return None
    text = err.instance.strip()
    try:
        value = float(text)
    except ValueError:
        return None
    if not math.isfinite(value):  # ('nan', 'inf': no number meant)
        return None
    mantissa, exp, power = text.lower().partition("e")
    if "number" not in types:  # an integer field
        if not value.is_integer():
            return None
        written = str(int(value))
    elif exp:
        written = (mantissa if "." in mantissa else f"{mantissa}.0") \
            + f"e{power if power[:1] in '+-' else '+' + power}"
    else:
        written = text
    why = ("YAML 1.1 reads a number with an exponent as text unless it has a dot and a "
           "signed exponent" if exp else "quoted, or not in a form YAML reads as a number")
    return f"{err.instance!r} was read as text, not a number ({why}): write {written}"


def _message(err) -> str:
    """jsonschema's message, in the user's terms where it would quote a regular expression,
    name a placeholder, miss a typo or see text where a number was meant."""
    if is_placeholder(err.instance):
        return placeholder_problem(err.instance)
    as_text = _number_as_text(err)
    if as_text:
        return as_text
    unknown = _unknown_keys(err)
    if unknown:
        return unknown
    pattern = err.schema.get("pattern") if isinstance(err.schema, dict) else None
    what = "the name" if "propertyNames" in err.schema_path else "value"
    if err.validator == "pattern" and pattern in NAME_PATTERNS:
        return (f"{what} {_shown(err.instance)} is not valid: expected {NAME_PATTERNS[pattern]}, "
                "starting with a letter or digit, at most 64 characters")
    if err.validator == "not" and err.schema.get("not") == {"const": "calibration"}:
        return f"the name {err.instance!r} is reserved (results/calibration holds the calibrations)"
    return err.message


def non_finite_fields(instance, path: str = "") -> list[str]:
    """Dotted paths of the NaN and infinite numbers in a config or row (JSON Schema's
    'number' accepts them; no setting means them)."""
    if isinstance(instance, float):
        return [] if math.isfinite(instance) else [path or "(top level)"]
    if isinstance(instance, dict):
        items = instance.items()
    elif isinstance(instance, (list, tuple)):
        items = enumerate(instance)
    else:
        return []
    return [p for k, v in items for p in non_finite_fields(v, f"{path}.{k}" if path else str(k))]


def _check(instance: dict, schema_: dict, validator=None) -> tuple[dict, list[str]]:
    """The instance with the schema's defaults filled, and every problem the schema (and the
    finite-number rule) finds in it: 'field PATH: what is wrong', in the order of the paths."""
    instance = copy.deepcopy(instance)
    v = validator if validator is not None else validator_with_defaults(schema_)
    errors = list(v.iter_errors(instance))
    if not errors:  # a second pass fills defaults of objects that were themselves defaulted
        errors = list(v.iter_errors(instance))
    found = [(list(map(str, e.absolute_path)), _field_path(e), _message(e)) for e in errors]
    flagged = {path for _, path, _ in found}
    for path in non_finite_fields(instance):
        if path not in flagged:  # (a NaN where an integer is expected: said once)
            found.append((path.split("."), path, f"{instance_value(instance, path)!r} is not a "
                          "finite number (an empty or missing value?)"))
    found.sort(key=lambda f: f[0])
    problems = []
    for _, path, what in found:
        line = f"field '{path}': {what}"
        if line not in problems:
            problems.append(line)
    return instance, problems


def problems_report(where: str, problems: list[str]) -> str:
    """One problem: 'WHERE: PROBLEM'; several: 'WHERE: N problems:' and a line each, the
    first MAX_PROBLEMS_SHOWN of them and how many more."""
    if len(problems) == 1:
        return f"{where}: {problems[0]}"
    shown = [f"  {p}" for p in problems[:MAX_PROBLEMS_SHOWN]]
    if len(problems) > MAX_PROBLEMS_SHOWN:
        shown.append(f"  ... and {len(problems) - MAX_PROBLEMS_SHOWN} more")
    return "\n".join([f"{where}: {len(problems)} problems:", *shown])


def _validate(instance: dict, schema_: dict, where: str, validator=None) -> dict:
    """The instance validated, with its defaults filled; ConfigError listing every problem."""
    instance, problems = _check(instance, schema_, validator)
    if problems:
        raise ConfigError(problems_report(where, problems))
    return instance


def instance_value(instance, dotted: str):
    for part in dotted.split("."):
        instance = instance[int(part)] if isinstance(instance, list) else instance[part]
    return instance


def _names_as_text(cfg: dict) -> dict:
    """YAML reads `1234:` as a number; sample and calibration names are text (the scans
    table's cells are)."""
    cfg = copy.deepcopy(cfg)
    for section in ("samples", "calibrations"):
        if isinstance(cfg.get(section), dict):
            cfg[section] = {str(k): v for k, v in cfg[section].items()}
    for c in (cfg.get("calibrations") or {}).values():
        vf = c.get("valid_for") if isinstance(c, dict) else None
        if isinstance(vf, dict):
            for key in ("samples", "entries"):
                if isinstance(vf.get(key), list):
                    vf[key] = [str(x) for x in vf[key]]
    return cfg


def deep_merge(base: dict, update: dict) -> dict:
    """Merge like Snakemake merges several --configfile files: nested dicts updated."""
    out = copy.deepcopy(base)
    for k, v in update.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def yaml_problem(exc) -> str:
    """A YAML syntax error in one line: where it is (line and column, counted from 1) and
    what is wrong there (PyYAML's own text takes four lines and names '<unicode string>')."""
    problem, mark = getattr(exc, "problem", None), getattr(exc, "problem_mark", None)
    if not problem or mark is None:
        return " ".join(str(exc).split())
    if "'\\t'" in problem:
        problem = (problem.replace("character '\\t'", "a tab")
                   + " (YAML indents with spaces, not tabs)")
    text = f"line {mark.line + 1}, column {mark.column + 1}: {problem}"
    context, at = getattr(exc, "context", None), getattr(exc, "context_mark", None)
    if context and at is not None and (at.line, at.column) != (mark.line, mark.column):
        text += f" ({context} at line {at.line + 1}, column {at.column + 1})"
    return text


def _undecodable(data: bytes, exc: UnicodeDecodeError) -> str:
    line = data[:exc.start].count(b"\n") + 1
    column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
    return f"line {line}, column {column}: byte 0x{data[exc.start]:02x} is not UTF-8 text"


def config_text(path) -> str:
    """A config file's text, which must be UTF-8 as Snakemake reads it too: ConfigError naming
    the problem of a UTF-16 file (an editor's "Unicode") or of a byte that is not UTF-8 (an
    editor's "Latin-1" or "Windows" encoding)."""
    data = Path(path).read_bytes()
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise ConfigError(f"{path}: the file is UTF-16 text (it starts with a byte-order "
                          "mark): save it as UTF-8")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: {_undecodable(data, exc)}: save the file as UTF-8 (an "
                          "editor's \"Latin-1\" or \"Windows\" encoding?)") from None


def check_yaml_syntax(paths) -> None:
    """ConfigError naming the file, line and column of the first YAML syntax error in these
    config files (those that exist; a missing one is left to whoever reads it), or the
    encoding problem of a file that is not UTF-8.  For the commands that start Snakemake,
    whose own message for either names neither."""
    for p in paths:
        try:
            text = config_text(p)
        except OSError:
            continue
        try:
            yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"{p}: not valid YAML: {yaml_problem(exc)}") from None


_YAML_TAGS_KEPT_AS_TEXT = frozenset(f"tag:yaml.org,2002:{t}"
                                    for t in ("int", "float", "bool", "null", "timestamp"))


def _keys_as_written_loader():
    """A YAML loader whose mapping keys are the text the user wrote: `007:` is the name
    '007' (safe_load reads 7, and '0x1A' as 26, '1.50' as 1.5).  Values are read as
    safe_load reads them."""
    class KeysAsWrittenLoader(yaml.SafeLoader):
        def construct_mapping(self, node, deep=False):
            if isinstance(node, yaml.MappingNode):
                self.flatten_mapping(node)  # (merge keys `<<:` resolved first, as usual)
                node.value = [(yaml.ScalarNode("tag:yaml.org,2002:str", k.value, k.start_mark,
                                               k.end_mark, k.style)
                               if isinstance(k, yaml.ScalarNode)
                               and k.tag in _YAML_TAGS_KEPT_AS_TEXT else k, v)
                              for k, v in node.value]
            return super().construct_mapping(node, deep=deep)

    return KeysAsWrittenLoader


def read_config_files(paths, *, keys_as_written: bool = True) -> tuple[dict, tuple[str, ...]]:
    """The config files merged in order.  Mapping keys are the text written (`007:` is
    '007'); keys_as_written=False reads them as Snakemake does (`007:` is 7), for comparing
    with Snakemake's own `config`."""
    loader = _keys_as_written_loader() if keys_as_written else yaml.SafeLoader
    merged: dict = {}
    for p in paths:
        p = Path(p)
        try:
            text = config_text(p)
        except OSError as exc:
            raise ConfigError(f"{p}: cannot read the config file: {exc.strerror}") from None
        try:
            data = yaml.load(text, Loader=loader) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{p}: not valid YAML: {yaml_problem(exc)}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{p}: expected a mapping of keys at the top level")
        merged = deep_merge(merged, data)
    return merged, tuple(str(p) for p in paths)


def migrate(cfg: dict, where: str) -> tuple[dict, list[str]]:
    """Move keys of :data:`MOVED_KEYS` to their new place; the detector's string shorthand
    becomes {name: ...}.  Returns the new config and a warning per key moved."""
    cfg = copy.deepcopy(cfg)
    ins = cfg.get("instrument")
    if isinstance(ins, dict) and isinstance(ins.get("detector"), str):
        ins["detector"] = {"name": ins["detector"]}
    warnings = []
    for old, new in MOVED_KEYS.items():
        *old_parents, old_key = old.split(".")
        node = cfg
        for part in old_parents:
            node = node.get(part) if isinstance(node, dict) else None
        if not isinstance(node, dict) or old_key not in node:
            continue
        value = node.pop(old_key)
        *new_parents, new_key = new.split(".")
        target = cfg
        for part in new_parents:
            if not isinstance(target.get(part), dict):
                raise ConfigError(f"{where}: field '{old}' has moved to '{new}', but "
                                  f"'{'.'.join(new_parents)}' is not a mapping")
            target = target[part]
        if new_key in target and target[new_key] != value:
            raise ConfigError(f"{where}: field '{old}' has moved to '{new}'; both are given, "
                              "with different values: keep the new one")
        target[new_key] = value
        warnings.append(f"{where}: field '{old}' has moved to '{new}' (used from there; "
                        "please move it)")
    return cfg, warnings


def _coerce(value: str, spec: dict):
    """Table cells are text; turn them into the type the row schema asks for."""
    t = spec.get("type")
    if value is None:
        return None
    v = value.strip()
    if t == "integer":
        try:
            f = float(v)
        except ValueError:
            return v
        return int(f) if math.isfinite(f) and f == int(f) else f
    if t == "number":
        try:
            return float(v)
        except ValueError:
            return v
    return v


def _table_text(data: bytes, path) -> str:
    """The scans table's text: UTF-8 (a spreadsheet's byte-order mark dropped), or UTF-16
    with its byte-order mark (a spreadsheet's "Unicode text"); anything else is named."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return data.decode("utf-16")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: {_undecodable(data, exc)}: save the table as UTF-8 (a "
                          "spreadsheet's \"Latin-1\" or \"Windows\" encoding?)") from None


def scans_table_lines(path: str, where_base: Path | None = None) -> list[str]:
    """The scans table's header and data lines as read_scans_table numbers them (line i is
    row i): blank and comment lines left out (hklflow.commands.set_aside copies rows from it)."""
    p = Path(path) if where_base is None else where_base / path
    try:
        text = _table_text(p.read_bytes(), path)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the scans table: {exc.strerror}") from None
    return [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]


def table_placeholders(path, where_base: Path | None = None) -> list[str]:
    """'row I (SCAN): field 'COLUMN': still FILL_IN' for every placeholder cell of the scans
    table (`hklflow init` writes them), read as read_scans_table numbers rows; none when the
    table cannot be read (read_scans_table then says why)."""
    try:
        lines = scans_table_lines(path, where_base)
    except ConfigError:
        return []
    if not lines or "\t" not in lines[0]:
        return []
    found = []
    for i, row in enumerate(csv.DictReader(lines, delimiter="\t"), start=1):
        if not isinstance(row, dict) or None in row:
            continue
        cells = [str(row.get(k) or "?").strip() for k in ("sample", "temperature", "entry")]
        try:  # (as read_scans_table names a row: the temperature as a number)
            cells[1] = str(float(cells[1]))
        except ValueError:
            pass
        scan = "/".join(cells)
        found += [f"row {i} ({scan}): field '{column}': {placeholder_problem(PLACEHOLDER)}"
                  for column, value in row.items()
                  if column and value is not None and value.strip() == PLACEHOLDER]
    return found


def read_scans_table(path: str, offset_names, where_base: Path | None = None) -> list[dict]:
    props = schema("scans.schema.yaml")["properties"]
    p = Path(path) if where_base is None else where_base / path
    try:
        text = _table_text(p.read_bytes(), path)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the scans table: {exc.strerror}") from None
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    if not lines:
        raise ConfigError(f"{path}: the scans table is empty")
    required = schema("scans.schema.yaml")["required"]
    allowed = set(props) | set(offset_names)
    tab_separated = ("the scans table is tab-separated (one tab between columns, not spaces), "
                     "with at least the columns " + " ".join(required))
    # a header whose column names are found between spaces but not between tabs
    names = [c.split() for c in lines[0].split("\t")]
    if (any(len(n) > 1 and set(n) <= allowed for n in names)
            or (not set(required) <= {" ".join(n) for n in names}
                and set(required) <= set(lines[0].split()))):
        raise ConfigError(f"{path}: header: columns separated by spaces, not tabs: "
                          f"{tab_separated}")
    if "\t" not in lines[0]:
        raise ConfigError(f"{path}: the header line has no tab: {tab_separated}")
    reader = csv.DictReader(lines, delimiter="\t")
    header = reader.fieldnames or []
    unknown = [h for h in header if h not in allowed and h.strip()]  # (a stray tab: no name)
    if unknown:
        raise ConfigError(f"{path}: unknown column(s) {unknown}; allowed: {sorted(allowed)} "
                          "(offset columns must be named after instrument.goniometer.offset_axes)")
    # the cells a row needs to reach every required column: a row with fewer between tabs
    # but enough between spaces was typed (or pasted) with spaces
    needed = 1 + max(header.index(c) for c in required if c in header) \
        if any(c in header for c in required) else len(header)
    rows, problems = [], []
    row_schema = dict(schema("scans.schema.yaml"))
    row_schema["properties"] = dict(props, **{n: {"type": "number", "default": 0}
                                              for n in offset_names})
    validator = validator_with_defaults(row_schema)  # built once: large tables parse fast
    for i, (raw, line) in enumerate(zip(reader, lines[1:]), start=1):
        if len(line.split("\t")) < needed <= len(line.split()):
            problems.append(f"row {i}: columns separated by spaces, not tabs")
            continue
        if None in raw:
            problems.append(f"row {i}: more cells than columns in the header")
            continue
        unnamed = [k for k, v in raw.items() if not k.strip() and v and v.strip()]
        if unnamed:
            problems.append(f"row {i}: a value under a column with no name in the header "
                            "(a stray tab?)")
            continue
        raw = {k: v for k, v in raw.items() if k.strip()}
        cells = {k: _coerce(v, row_schema["properties"].get(k, {}))
                 for k, v in raw.items() if v is not None and v.strip() != ""}
        label = f"row {i}" + (f" ({cells.get('sample')}/{cells.get('temperature')}/"
                              f"{cells.get('entry')})" if "entry" in cells else "")
        row, found = _check(cells, row_schema, validator)
        problems += [f"{label}: {p}" for p in found]
        rows.append(row)
    if problems:
        raise ConfigError(problems_report(path, problems))
    return rows


# --------------------------------------------------------------------------------------
# Resolving
# --------------------------------------------------------------------------------------
def _instrument(cfg: dict, where: str) -> Instrument:
    ins = cfg["instrument"]
    try:
        gonio = Goniometer(scan_axis=tuple(ins["goniometer"]["scan_axis"]),
                           scan_sense=int(ins["goniometer"]["scan_sense"]),
                           offset_axes=tuple(ins["goniometer"]["offset_axes"].items()))
    except ValueError as exc:
        raise ConfigError(f"{where}: field 'instrument.goniometer': {exc}") from None
    detector = DetectorParams.from_config(cfg)
    try:
        detector_shape(detector.name)  # a table made from pyFAI; pyFAI itself for other names
    except ValueError as exc:
        raise ConfigError(f"{where}: field 'instrument.detector.name': {exc}") from None
    return Instrument(detector, float(ins["wavelength"]), float(ins["polarization_fraction"]),
                      gonio)


def _calibrations(cfg: dict, where: str) -> dict:
    calibrations = {}
    for name, c in cfg["calibrations"].items():
        fld = f"{where}: field 'calibrations.{name}"
        if not c.get("poni") and not c.get("image"):
            raise ConfigError(f"{fld}': give either 'image' (to refine) or 'poni' (to import)")
        if not c.get("poni") and "start" not in c:
            raise ConfigError(f"{fld}.start': a rough starting geometry is needed to refine "
                              "from the image (dist, poni1, poni2 in m; rot1..3 in rad)")
        lo_hi = c["valid_for"].get("temperatures")
        if lo_hi and lo_hi[0] > lo_hi[1]:
            raise ConfigError(f"{fld}.valid_for.temperatures': {lo_hi}: expected [low, high] "
                              "with low <= high (K)")
        if c.get("image") and not c.get("poni") and not c.get("calibrant"):
            raise ConfigError(f"{fld}.calibrant': a pyFAI calibrant name is needed to refine "
                              "from the image (CeO2, LaB6, Si, ...)")
        if c.get("calibrant") and c["calibrant"] not in known_calibrants(c["calibrant"]):
            raise ConfigError(f"{fld}.calibrant': unknown pyFAI calibrant {c['calibrant']!r}; "
                              f"known: {sorted(known_calibrants())}")
        calibrations[name] = CalibrationSpec(name, c.get("image"), c.get("poni"), c["valid_for"])
    return calibrations


def _samples(cfg: dict, where: str) -> dict:
    samples = {}
    for name, s in cfg["samples"].items():
        try:
            crystal = Crystal(str(s["space_group"]), UnitCell.from_list(s["cell"]))
        except ValueError as exc:
            raise ConfigError(f"{where}: field 'samples.{name}': {exc}") from None
        for i, o in enumerate(s["other_parents"]):
            lo, hi = o["for_temperatures"]
            if lo > hi:
                raise ConfigError(f"{where}: field 'samples.{name}.other_parents.{i}."
                                  f"for_temperatures': [{lo}, {hi}]: expected [low, high] with "
                                  "low <= high (K)")
        others = tuple((float(o["temperature"]), (float(o["for_temperatures"][0]),
                                                   float(o["for_temperatures"][1])))
                       for o in s["other_parents"])
        shape = s.get("shape")
        if shape is not None:
            try:  # (complete and consistent; a formula xraydb knows)
                SampleShape.of(shape).mu_at(float(cfg["instrument"]["wavelength"]))
            except ValueError as exc:
                raise ConfigError(f"{where}: field 'samples.{name}.shape': {exc}") from None
        samples[name] = SampleSpec(name, crystal, float(s["parent"]["temperature"]), others,
                                   shape)
    return samples


def _scans(rows: list[dict], table: str, samples: dict, calibrations: dict,
           offset_names: list[str], base_dir: Path = Path(".")) -> tuple:
    scans, seen = [], {}
    for i, r in enumerate(rows, start=1):
        label = f"{table}: row {i}"
        if r["sample"] not in samples:
            raise ConfigError(f"{label}: field 'sample': {r['sample']!r} is not a sample of the "
                              f"config (known: {sorted(samples)})")
        if r["calibration"] and r["calibration"] not in calibrations:
            raise ConfigError(f"{label}: field 'calibration': unknown calibration "
                              f"{r['calibration']!r} (known: {sorted(calibrations)})")
        t_label = temperature_label(r["temperature"])
        if float(t_label[:-1]) != float(r["temperature"]):
            raise ConfigError(f"{label}: field 'temperature': {r['temperature']!r} has more "
                              f"digits than its folder name {t_label} keeps: round it to at "
                              "most 6 significant digits")
        turns = r["nframes"] * abs(r["phi_step"]) / 360.0
        if turns > MAX_SCAN_TURNS:
            raise ConfigError(f"{label}: field 'nframes': {r['nframes']} frames of "
                              f"{r['phi_step']} deg make {turns:.3g} turns: expected a scan of at "
                              f"most {MAX_SCAN_TURNS} turns (nframes x |phi_step| <= "
                              f"{360 * MAX_SCAN_TURNS} deg; a typo?)")
        scan = ScanRow(
            sample=r["sample"], temperature=float(r["temperature"]), entry=r["entry"],
            data=r["data"], dataset=r["dataset"], nframes=int(r["nframes"]),
            angles=ScanAngles(float(r["phi_start"]), float(r["phi_step"]), int(r["nframes"])),
            offsets={n: float(r[n]) for n in offset_names},
            detector_shift=(float(r["det_ddist"]), float(r["det_dponi1"]), float(r["det_dponi2"])),
            monitor=r["monitor"], calibration="", row=i,
            planned_frames=int(r["planned_frames"]), role=r["role"],
            background=r["background"])
        if scan.is_background and scan.background:
            raise ConfigError(f"{label}: field 'background': {scan.background!r} on a background "
                              "row: expected it empty (a background has no background)")
        if scan.planned_frames and scan.planned_frames < scan.nframes:
            raise ConfigError(f"{label}: field 'planned_frames': {scan.planned_frames}, fewer "
                              f"than the {scan.nframes} frames of nframes: expected the frames "
                              "the whole scan will have (0 or empty when it is complete)")
        check_row_monitor(scan, label, base_dir)
        if scan.id in seen:
            raise ConfigError(f"{label}: scan {scan.id} repeats row {seen[scan.id]}")
        seen[scan.id] = i
        chosen = r["calibration"] or next(
            (n for n in reversed(list(calibrations)) if calibrations[n].matches(scan)), "")
        if not chosen:
            raise ConfigError(f"{label}: no calibration is valid for scan {scan.id}: widen a "
                              "calibration's valid_for or name one in the 'calibration' column")
        scans.append(ScanRow(**{**scan.__dict__, "calibration": chosen}))
    backgrounds = {(s.sample, s.temperature_label, s.entry): s for s in scans
                   if s.is_background}
    for s in scans:
        key = s.background_key
        if key is not None and key not in backgrounds:
            known = sorted(f"{t}/{e}" for (smp, t, e) in backgrounds if smp == s.sample)
            raise ConfigError(f"{table}: row {s.row} ({s.id}): field 'background': "
                              f"{s.background!r} is not a background row of sample {s.sample} "
                              f"(role background; known: {known or 'none'})")
    return tuple(scans)


def _check_parents(samples: dict, scans, table: str, where: str) -> None:
    # hklflow watch's table, or hklflow run's without the rows whose data are not there yet:
    # a sample's scans may not have begun
    partial = table == LIVE_SCANS_TABLE or Path(table).as_posix().startswith(SET_ASIDE_DIR)
    for name, smp in samples.items():
        labels = {s.temperature_label for s in scans if s.sample == name}
        if not labels and partial:
            continue
        if not labels:
            raise ConfigError(f"{table}: sample {name!r} of the config has no scans")
        if smp.parent_label not in labels:
            raise ConfigError(f"{where}: field 'samples.{name}.parent.temperature': no scan of "
                              f"{name} at {smp.parent_label} in {table} (has {sorted(labels)})")
        for i, (t, _) in enumerate(smp.other_parents):
            if temperature_label(t) not in labels and table != LIVE_SCANS_TABLE:
                raise ConfigError(f"{where}: field 'samples.{name}.other_parents.{i}.temperature': "
                                  f"no scan of {name} at {temperature_label(t)} in {table}")


def names_in_the_plan(exp) -> dict[str, str]:
    """The names the workflow's wildcards take (samples, calibrations, entries), each with
    where it is first given, as messages name it."""
    where = " + ".join(exp.sources)
    names = {n: f"{where}: field 'samples'" for n in exp.samples}
    for n in exp.calibrations:
        names.setdefault(n, f"{where}: field 'calibrations'")
    for s in exp.scans + exp.backgrounds:
        names.setdefault(s.entry, f"{exp.scans_table}: row {s.row} ({s.id}): field 'entry'")
    return names


# Snakemake's PeriodicityDetector (min_repeat 20): a wildcard value that ends so is taken for
# a rule feeding on its own output without end
_ENDS_IN_20_REPEATS = re.compile(r"(.+)\1{19,}$")


def check_names_snakemake_takes(exp) -> None:
    """ConfigError naming the first name (samples, calibrations, entries) that Snakemake would
    refuse as a wildcard value (PeriodicWildcardError): one ending in 20 or more repeats of
    one piece of text, e.g. 'a' * 64."""
    for name, where in names_in_the_plan(exp).items():
        if _ENDS_IN_20_REPEATS.search(name):
            raise ConfigError(
                f"{where}: the name {_shown(name)} ends in 20 or more repeats of one piece of "
                "text, which Snakemake refuses in a file name it plans (it takes it for a rule "
                "feeding on its own output: PeriodicWildcardError): expected a name that does "
                "not end so")


def _check_step_settings(cfg: dict, where: str) -> None:
    """Every step's settings built once now, so that what a step would refuse (an even
    peak-search window, a reversed grid) stops the run before any job."""
    try:
        for cls in STEP_PARAMS + (ScalingParams,):
            cls.from_config(cfg)
        for name in cfg["calibrations"]:
            CalibrationParams.for_calibration(cfg, name)
        if cfg["reduction"]["scaling"]["enabled"] and not cfg["reduction"]["transform"]["variance"]:
            raise ConfigError("reduction.scaling.enabled: scaling weighs equivalents by their "
                              "sigma, but reduction.transform.variance is false (no volume has "
                              "a variance): expected reduction.transform.variance: true, or "
                              "reduction.scaling.enabled: false")
        kinds = cfg["reduction"]["transform"]["kinds"]
        missing = [k for k in cfg["reduction"]["pdf"]["delta_pdf_of"] if k not in kinds]
        if missing and cfg["reduction"]["pdf"]["enabled"]:
            raise ConfigError(f"reduction.pdf.delta_pdf_of: expected kinds among "
                              f"reduction.transform.kinds {list(kinds)}, got {missing} "
                              "(a DeltaPDF needs its volume)")
    except ConfigError as exc:
        field_, _, what = str(exc).partition(": ")
        raise ConfigError(f"{where}: field '{field_}': {what}") from None


@dataclass(frozen=True)
class Settings:
    """An experiment's config without its scans table (hklflow watch reads the table as it
    grows): validated, defaults filled."""

    raw: dict
    sources: tuple
    samples: dict  # name -> SampleSpec
    offset_names: tuple


def load_settings(config_files) -> Settings:
    config, sources = read_config_files(config_files)
    where = " + ".join(sources) or "config"
    config, _ = migrate(config, where)
    cfg = _validate(_names_as_text(config), schema(), where)
    instrument = _instrument(cfg, where)
    return Settings(cfg, sources, _samples(cfg, where),
                    tuple(n for n, _ in instrument.goniometer.offset_axes))


def load_experiment(config_files, *, config: dict | None = None,
                    base_dir: str | Path | None = None) -> Experiment:
    """Validate and resolve an experiment.

    config_files: the YAML file(s) (merged in order); config: an already merged dict (as
    Snakemake's `config`), validated instead of re-reading the files; base_dir: where
    relative paths (the scans table) are resolved (default: current directory).
    """
    if isinstance(config_files, (str, Path)):
        config_files = [config_files]
    if config is None:
        config, sources = read_config_files(config_files)
    else:
        sources = tuple(str(p) for p in config_files)
    where = " + ".join(sources) or "config"
    config, warnings = migrate(config, where)
    cfg, problems = _check(_names_as_text(config), schema())
    if problems:  # with every placeholder the scans table still holds: one pass for all
        table = config.get("scans_table")
        unfilled = table_placeholders(table, Path(base_dir) if base_dir else None) \
            if isinstance(table, str) and table.strip() else []
        raise ConfigError("\n".join([problems_report(where, problems)]
                                    + ([problems_report(table, unfilled)] if unfilled else [])))
    instrument = _instrument(cfg, where)
    calibrations = _calibrations(cfg, where)
    samples = _samples(cfg, where)
    table = cfg["scans_table"]
    offset_names = [n for n, _ in instrument.goniometer.offset_axes]
    rows = read_scans_table(table, offset_names, Path(base_dir) if base_dir else None)
    scans = _scans(rows, table, samples, calibrations, offset_names,
                   Path(base_dir) if base_dir else Path("."))
    backgrounds = tuple(s for s in scans if s.is_background)
    scans = tuple(s for s in scans if not s.is_background)
    _check_parents(samples, scans, table, where)
    _check_step_settings(cfg, where)
    exp = Experiment(name=cfg["experiment"], sources=sources, scans_table=table,
                     instrument=instrument, calibrations=calibrations, samples=samples,
                     scans=scans, reduction=cfg["reduction"], raw=cfg,
                     warnings=tuple(warnings), waiting=waiting_scans(table, base_dir or "."),
                     backgrounds=backgrounds)
    check_job_counts(exp)
    check_chunk_sizes(exp)
    check_deliberate_repeats(exp)
    check_grid_index_range(exp)
    check_grid_symmetry_of_samples(exp)
    check_pdf_holes(exp)
    check_model_input_volumes(exp)
    check_cuts(exp, made_volumes(exp))
    check_names_snakemake_takes(exp)
    return exp
