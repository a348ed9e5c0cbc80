"""The settings of every step, each declared once: a frozen dataclass per step whose fields
say which config keys the step uses.

The config schema (``schemas/config.schema.yaml``; :mod:`hklflow.settings.schema`) is the
one source of defaults and documentation of every user setting.  A parameters class lists
the config keys it reads (a field named like a key of its ``SECTION``, or with
``metadata={"config": "dotted.path"}`` for a key elsewhere), what the planning gives a job
beside them (:func:`planned`), and the algorithm's own knobs, which are not user settings,
as fields with ``metadata={"knob": True}`` and a default.

The same declaration serves three places, so they cannot drift apart:

* the Snakefile builds each job's ``params:`` from it (:func:`settings_json`): a job
  receives exactly the settings it uses, and Snakemake reruns it when one of them changes;
* the step command reads them back (:func:`read_settings`, :func:`read_settings_file`) into
  typed objects, one per part (:func:`settings_part`): a step never indexes the settings
  itself.  Values are checked against the schema when the config is read and when settings
  are typed by hand (``--settings``), so no class checks the schema's enums a second time;
  a class checks what the schema cannot say, and bounds of objects made without it;
* tests and benchmarks take the schema's defaults with ``Cls.defaults(**overrides)``.

This module is imported when the Snakefile is parsed (every cluster job parses it): it
must stay light (no numba, pyFAI or scipy).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np

from ..base.errors import ConfigError
from ..model.crystal import Crystal, UnitCell
from ..model.geometry import Goniometer
from ..model.scan import ScanRow
from .schema import NO_DEFAULT, config_value, schema_default, schema_node, schema_problem


# --------------------------------------------------------------------------------------
# The base class
# --------------------------------------------------------------------------------------
def _jsonable(v):
    if isinstance(v, tuple):
        return [_jsonable(x) for x in v]
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    return v


def _as_field_value(v):
    """JSON lists become tuples (the dataclasses are frozen and hashable)."""
    if isinstance(v, list):
        return tuple(_as_field_value(x) for x in v)
    return v


# the JSON types a field of a job's settings may hold, by the name its annotation gives
# (JSON's lists arrive as lists; the fields hold them as tuples)
_JSON_TYPES = {"str": ((str,), "text"), "int": ((int,), "an integer"),
               "float": ((int, float), "a number"), "bool": ((bool,), "true or false"),
               "tuple": ((list, tuple), "a list"), "dict": ((dict,), "a mapping"),
               "None": ((type(None),), "null")}


def _json_types(annotation) -> list[str] | None:
    """The type names of a field's annotation ('int | None' -> ['int', 'None']); None when
    it names another type (a part with its own conversion)."""
    names = [n.strip() for n in str(annotation).split("|")]
    return names if all(n in _JSON_TYPES for n in names) else None


def _fits(names: list[str], value) -> bool:
    # (True is an int to Python, not to JSON)
    return any(isinstance(value, _JSON_TYPES[n][0]) and (n == "bool") == isinstance(value, bool)
               for n in names)


@dataclass(frozen=True)
class Params:
    """Base of the step parameter classes (see the module docstring)."""

    SECTION: ClassVar[str] = ""  # dotted config path of the section most fields come from
    # key of this part in a job's settings JSON; "": its fields are keys of the settings
    # themselves (parts that were loose keys before they were typed: their jobs' texts stay)
    NAME: ClassVar[str] = ""
    SCHEMA: ClassVar[str] = "config.schema.yaml"  # the schema the config paths are in

    @classmethod
    def config_fields(cls) -> list[dataclasses.Field]:
        """The fields a job receives: the config keys and what the planning gives."""
        return [f for f in dataclasses.fields(cls) if not f.metadata.get("knob")]

    @classmethod
    def config_path(cls, f: dataclasses.Field) -> str:
        return f.metadata.get("config") or (f"{cls.SECTION}.{f.name}" if cls.SECTION else f.name)

    @classmethod
    def from_config(cls, cfg: dict, **extra):
        """From the validated config (defaults filled in, as config.load_experiment makes it);
        extra: the fields the planning gives."""
        values = {}
        for f in cls.config_fields():
            if f.name in extra:
                continue
            if f.metadata.get("planned"):
                raise TypeError(f"{cls.__name__}.from_config(): give {f.name} (no config key)")
            try:
                values[f.name] = _as_field_value(config_value(cfg, cls.config_path(f)))
            except KeyError:
                raise ConfigError(f"config key {cls.config_path(f)!r} is missing") from None
        return cls(**values, **extra)

    @classmethod
    def from_settings(cls, values: dict, where: str | None = None, against_schema: bool = False):
        """From the settings a job received: exactly the config fields, no more, no less (a
        field left out when it has its default may be absent), each of its field's type.
        where: how messages name the part (default --settings NAME); against_schema: each
        value checked against the schema's node of its config key too (settings typed by
        hand; the workflow's come from the validated config)."""
        label = f"{where or ('--settings ' + cls.NAME).strip()}: "
        if not isinstance(values, dict):
            raise ConfigError(f"{label}expected a mapping, got {type(values).__name__}")
        names = {f.name for f in cls.config_fields()}
        unknown = sorted(set(values) - names)
        missing = sorted(f.name for f in cls.config_fields()
                         if f.name not in values and not f.metadata.get("omit_default"))
        if unknown or missing:
            raise ConfigError(label + (f"unknown setting(s) {unknown}" if unknown else "")
                              + ("; " if unknown and missing else "")
                              + (f"missing setting(s) {missing}" if missing else ""))
        for f in cls.config_fields():
            if f.name not in values:
                continue
            value, types = values[f.name], _json_types(f.type)
            key = "" if f.metadata.get("planned") else f" ({cls.config_path(f)})"
            if types is not None and not _fits(types, value):
                raise ConfigError(f"{label}{f.name!r}{key}: expected "
                                  f"{' or '.join(_JSON_TYPES[n][1] for n in types)}, got {value!r}")
            if against_schema and key and not (value is None and "None" in (types or ())):
                problem = cls._schema_problem(f, value)  # (None: a key the config left out)
                if problem:
                    raise ConfigError(f"{label}{f.name!r}{key}: {problem}")
        return cls(**{k: _as_field_value(v) for k, v in values.items()})

    @classmethod
    def _schema_problem(cls, f: dataclasses.Field, value) -> str | None:
        try:
            node = schema_node(cls.config_path(f), cls.SCHEMA)
        except KeyError:  # (a fact the config does not hold as such: a calibration's name)
            return None
        return schema_problem(node, value)

    @classmethod
    def defaults(cls, **overrides):
        """The schema's defaults (and the knobs' own), with overrides (tests, benchmarks)."""
        values = {}
        for f in cls.config_fields():
            if f.name in overrides or f.metadata.get("planned"):
                continue
            d = schema_default(cls.config_path(f))
            if d is NO_DEFAULT:
                raise TypeError(f"{cls.__name__}.defaults(): {f.name} "
                                f"({cls.config_path(f)}) has no default: give it")
            values[f.name] = _as_field_value(d)
        return cls(**values, **overrides)

    def settings(self) -> dict:
        """The config fields as JSON-able data (what a job receives)."""
        return {f.name: _jsonable(getattr(self, f.name)) for f in self.config_fields()
                if not (f.metadata.get("omit_default") and getattr(self, f.name) == f.default)}

    def where(self, name: str) -> str:
        """The config key of a field (a knob or a field the planning gives: ClassName.field)."""
        f = next(f for f in dataclasses.fields(self) if f.name == name)
        if f.metadata.get("knob") or f.metadata.get("planned"):
            return f"{type(self).__name__}.{name}"
        return self.config_path(f)

    def check(self, ok: bool, name: str, expected: str) -> None:
        """ConfigError naming the config key when not ok."""
        if not ok:
            raise ConfigError(f"{self.where(name)}: expected {expected}, got "
                              f"{getattr(self, name)!r}")


def knob(default, **kw):
    """An algorithm knob: a field with a default that is not a user setting."""
    return field(default=default, metadata={"knob": True}, **kw)


def from_config_at(path: str, **kw):
    """A field whose config key lies outside the class's SECTION."""
    return field(metadata={"config": path}, **kw)


def planned(**kw):
    """A field the planning gives a job (a sample's temperatures, its canonical space group),
    not a config key as written: typed, not checked against the schema."""
    return field(metadata={"planned": True}, **kw)


def left_out_as_default(default, path: str | None = None):
    """A field left out of a job's settings while it has its default, so that the jobs made
    before it existed keep their settings (and are not made again)."""
    return field(default=default, metadata={"omit_default": True,
                                            **({"config": path} if path else {})})


# --------------------------------------------------------------------------------------
# Job settings: what the Snakefile passes and the step reads back
# --------------------------------------------------------------------------------------
def settings_json(*parts: Params) -> str:
    """The settings of a job as one JSON text (sorted keys: Snakemake compares it with the
    text its outputs were made with): each part under its NAME (a part without one: its
    fields as keys of the text itself)."""
    data = {}
    for part in parts:
        values = part.settings()
        for key, value in (values.items() if not part.NAME else [(part.NAME, values)]):
            if key in data:
                raise ValueError(f"two parts of a job's settings give {key!r}")
            data[key] = value
    return json.dumps(data, sort_keys=True, separators=(",", ":"), allow_nan=False)


def settings_digest(text: str) -> str:
    """The name of the file that holds a job's settings text (hklflow.planning.jobs.SettingsFiles):
    the first 16 hex digits of its SHA-256."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


class HandTypedSettings(dict):
    """Settings given inline (--settings: typed by hand, or by a test), not written by the
    workflow from the validated config: settings_part checks each part against the schema
    as well.  (A job's settings file is not checked so: reading the schema and loading
    jsonschema would slow the start of every job.)"""


def read_settings(text: str, where: str = "--settings") -> HandTypedSettings:
    """The JSON of --settings (a step's command line)."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{where}: not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a JSON object of settings")
    return HandTypedSettings(data)


def read_settings_file(path) -> dict:
    """The settings in a file the workflow wrote (--settings-file), whose name is the digest
    of its text: a file changed after it was written (or not written by the workflow) is
    refused, since its name would no longer say which settings the job ran with."""
    where = f"--settings-file {path}"
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        raise ConfigError(f"{where}: no such file (the workflow writes it when it plans the "
                          "job: run the job through Snakemake, or copy the file along with "
                          "the command)") from None
    digest = settings_digest(text)
    if Path(path).stem != digest:
        raise ConfigError(f"{where}: its text does not match its name (its digest is {digest}): "
                          "the file was changed after the workflow wrote it; delete it and run "
                          "Snakemake again, which writes it anew")
    return dict(read_settings(text, where))  # (the workflow's: made from the validated config)


def settings_part(settings: dict, cls):
    """The typed object of one part of a job's settings (a part without NAME: the keys of
    the settings named after its fields), checked against the schema too when typed by hand
    (HandTypedSettings)."""
    by_hand = isinstance(settings, HandTypedSettings)
    if not cls.NAME:
        names = {f.name for f in cls.config_fields()}
        return cls.from_settings({k: v for k, v in settings.items() if k in names},
                                 where="--settings", against_schema=by_hand)
    if cls.NAME not in settings:
        raise ConfigError(f"--settings: no {cls.NAME!r} part (has {sorted(settings)})")
    return cls.from_settings(settings[cls.NAME], where=f"--settings {cls.NAME}",
                             against_schema=by_hand)


# --------------------------------------------------------------------------------------
# The parameters of the steps
# --------------------------------------------------------------------------------------
def _finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def largest_trusted_value(trusted_max: float, dtype):
    """The largest value v of the frames' number type with v < trusted_max, in that type:
    the kernels compare each pixel with it in the frames' own type (no conversion per
    pixel; an int64 comparison would halve the lanes of a loop over int32 values)."""
    dtype = np.dtype(dtype)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return dtype.type(min(max(math.ceil(trusted_max) - 1, info.min), info.max))
    if np.issubdtype(dtype, np.floating):
        t = dtype.type(trusted_max)
        return np.nextafter(t, dtype.type(-np.inf)) if t >= trusted_max else t
    raise ValueError(f"frames of type {dtype} cannot be reduced (integer or float expected)")


@dataclass(frozen=True)
class DetectorParams(Params):
    """The detector (instrument.detector): what `detector` means in the jobs' settings, the part
    given to the steps that read frames or map pixels (find_peaks, mask_scan,
    transform_frames, sum_chunks, define_grid).  A calibration keeps the detector's name
    inside its own part, and an ingest job the name and orientation under keys of their own
    (IngestParams): as a `detector` part they would change the settings of every calibration
    and ingest job made before, and so make every experiment again from its first job."""

    SECTION: ClassVar[str] = "instrument.detector"
    NAME: ClassVar[str] = "detector"

    name: str
    trusted_max: int | None
    mask_file: str | None
    mask_dataset: str
    # pyFAI's 1..4 (docs/conventions.md); a field so that a change reruns the jobs given it
    orientation: int = 3
    # {material, thickness} (model.sensor.Sensor) or None: left out of the jobs' settings
    # while None, so that the jobs made before it existed keep theirs
    sensor: dict | None = left_out_as_default(None)

    def trusted_max_for(self, dtype) -> int:
        """Values at or above this are overloaded: the config's, else the frames' dtype
        maximum (float frames: no limit but 2^62)."""
        if self.trusted_max is not None:
            return int(self.trusted_max)
        return int(np.iinfo(dtype).max) if np.issubdtype(dtype, np.integer) else 2 ** 62


@dataclass(frozen=True)
class IngestParams(Params):
    """What an ingest job uses beside its scan row and the goniometer (rule ingest_scan):
    the detector's name and orientation, with which it reads the calibration's PONI file
    (keys of their own, not the `detector` part: DetectorParams says why).  Not
    reduction.ingest.fingerprint: planning's check of the raw files uses it (raw.rawfiles),
    so that changing it makes no scan file again."""

    detector_name: str = from_config_at("instrument.detector.name")
    detector_orientation: int = from_config_at("instrument.detector.orientation")
    # recorded in scan.nxs, and compared with the sensor the raw files name
    detector_sensor: dict | None = left_out_as_default(None, "instrument.detector.sensor")


@dataclass(frozen=True)
class ScanParams(Params):
    """One row of the scans table as its ingest job receives it (model.scan.ScanRow): the
    columns of scans.schema.yaml, the offset angles by axis name, the detector shift and the
    calibration chosen for it."""

    NAME: ClassVar[str] = "scan"
    SCHEMA: ClassVar[str] = "scans.schema.yaml"

    sample: str
    temperature: float
    entry: str
    data: str
    dataset: str
    nframes: int
    phi_start: float
    phi_step: float
    offsets: dict = planned()  # offset axis name -> angle (deg)
    detector_shift: tuple = planned()  # (det_ddist, det_dponi1, det_dponi2) in m
    monitor: str
    calibration: str
    planned_frames: int = left_out_as_default(0)  # only while the scan is being collected
    role: str = left_out_as_default("sample")  # (a background row's only)

    @classmethod
    def of(cls, row: ScanRow) -> "ScanParams":
        return cls(**{k: _as_field_value(v) for k, v in row.settings().items()})

    def row(self) -> ScanRow:
        return ScanRow.from_settings(self.settings())


@dataclass(frozen=True)
class GoniometerParams(Params):
    """instrument.goniometer as the ingest jobs receive it (model.geometry.Goniometer): axes
    as unit vectors, the offset axes as [name, axis] pairs outermost first (a JSON object,
    its keys sorted, would lose their order)."""

    SECTION: ClassVar[str] = "instrument.goniometer"
    NAME: ClassVar[str] = "goniometer"

    scan_axis: tuple
    scan_sense: int
    offset_axes: tuple = planned()  # ((name, (a1, a2, a3)), ...)

    @classmethod
    def of(cls, goniometer: Goniometer) -> "GoniometerParams":
        return cls(goniometer.scan_axis, goniometer.scan_sense, goniometer.offset_axes)

    def goniometer(self) -> Goniometer:
        try:
            return Goniometer(tuple(self.scan_axis), self.scan_sense,
                              tuple((name, tuple(axis)) for name, axis in self.offset_axes))
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"--settings goniometer: {exc}") from None


@dataclass(frozen=True)
class SampleParams(Params):
    """What the orientation, grid, symmetry, series and PDF jobs use of a sample
    (samples.NAME): its name, its space group as the crystal names it (the canonical
    Hermann-Mauguin symbol of the one given: 'I 4/m m m' for 139) and its cell."""

    SECTION: ClassVar[str] = "samples.NAME"
    NAME: ClassVar[str] = "sample"

    name: str = planned()
    space_group: str = planned()
    cell: tuple  # a, b, c (Angstrom), alpha, beta, gamma (deg)

    def where(self, name: str) -> str:
        return super().where(name).replace(".NAME.", f".{self.name}.")

    def unit_cell(self) -> UnitCell:
        try:
            return UnitCell.from_list(self.cell)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{self.where('cell')}: {exc}") from None

    def crystal(self, cell: UnitCell | None = None) -> Crystal:
        """The sample's crystal, with its cell from the config or the one given (a volume's
        refined cell)."""
        try:
            return Crystal(self.space_group, cell or self.unit_cell())
        except ValueError as exc:
            raise ConfigError(f"samples.{self.name}: {exc}") from None


@dataclass(frozen=True)
class SampleShapeParams(Params):
    """The sample's shape (samples.NAME.shape) for the transform's absorption correction
    (rules transform_frames, sum_chunks); None: not given."""

    SECTION: ClassVar[str] = "samples.NAME"
    NAME: ClassVar[str] = "sample_shape"

    shape: dict | None = field(default=None, metadata={"planned": True, "omit_default": True})

    def sample_shape(self):
        """The model's SampleShape (None without one)."""
        from ..model.corrections.absorption import SampleShape

        try:
            return SampleShape.of(self.shape)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"samples.NAME.shape: {exc}") from None


@dataclass(frozen=True)
class DetectorPosition:
    """Where the detector stood: a calibration's geometry and a detector shift."""

    poni: str  # the calibration's geometry.poni
    shift: tuple  # (d_dist, d_poni1, d_poni2) in m, as a scans-table row gives it


@dataclass(frozen=True)
class DetectorPositionsParams(Params):
    """Every place the detector stood for a sample's scans (rule define_grid): each
    calibration they use with each detector shift, as {poni, shift}."""

    detector_positions: tuple = planned()

    def __post_init__(self):
        try:
            positions = tuple(
                p if isinstance(p, DetectorPosition) else
                DetectorPosition(p["poni"], tuple(float(v) for v in p["shift"]))
                for p in self.detector_positions)
            ok = all(isinstance(p.poni, str) and len(p.shift) == 3 for p in positions)
        except (KeyError, TypeError, ValueError):
            ok = False
        self.check(ok, "detector_positions",
                   "a list of {poni: file, shift: [d_dist, d_poni1, d_poni2]}")
        object.__setattr__(self, "detector_positions", positions)

    def settings(self) -> dict:
        return {"detector_positions": [{"poni": p.poni, "shift": list(p.shift)}
                                       for p in self.detector_positions]}


# find_peaks' chunk_frames 'auto': frames decompressed just before they are searched are
# still in the processor's cache (measured on a 2M detector: 2 frames per chunk take the
# pass ~15% less time than 16)
PEAK_CHUNK_BYTES = 24_000_000


@dataclass(frozen=True)
class PeakSearchParams(Params):
    """reduction.find_peaks (rule find_peaks)."""

    SECTION: ClassVar[str] = "reduction.find_peaks"
    NAME: ClassVar[str] = "find_peaks"

    method: str
    window: tuple
    sigma_background: float
    sigma_strong: float
    min_local: int
    global_threshold: float
    absolute_threshold: float | None
    min_spot_size: int
    max_spot_size: int
    hot_pixel_fraction: float
    q_annulus: tuple | None
    chunk_frames: int | str
    # the dispersion test's Poisson statistics (counts per photon)
    gain: float = from_config_at("instrument.detector.gain")

    def __post_init__(self):
        if self.method == "absolute":
            self.check(self.absolute_threshold is not None, "absolute_threshold",
                       "a number of counts with method 'absolute'")
        w = tuple(self.window)
        self.check(len(w) == 2 and all(isinstance(v, int) and v >= 3 and v % 2 for v in w),
                   "window", "two odd integers >= 3 (rows, cols)")
        object.__setattr__(self, "window", w)
        self.check(self.min_spot_size <= self.max_spot_size, "min_spot_size",
                   f"at most max_spot_size ({self.max_spot_size})")
        if self.q_annulus is not None:
            lo, hi = (float(v) for v in self.q_annulus)
            self.check(0 <= lo < hi, "q_annulus", "[low, high] with 0 <= low < high (1/Angstrom)")
            object.__setattr__(self, "q_annulus", (lo, hi))
        self.check(self.chunk_frames == "auto" or (isinstance(self.chunk_frames, int)
                                                   and self.chunk_frames >= 1),
                   "chunk_frames", "'auto' or an integer >= 1")

    def frames_per_chunk(self, frame_bytes: int, threads: int = 1) -> int:
        """chunk_frames, or for 'auto' the frames of about PEAK_CHUNK_BYTES; at least
        `threads` (each searches a frame of the chunk)."""
        n = self.chunk_frames
        if n == "auto":
            n = max(1, PEAK_CHUNK_BYTES // max(1, int(frame_bytes)))
        return max(int(n), int(threads))


@dataclass(frozen=True)
class IndexingParams(Params):
    """reduction.indexing (rule index_parent) and the indexer's own knobs."""

    SECTION: ClassVar[str] = "reduction.indexing"
    NAME: ClassVar[str] = "indexing"

    max_peaks: int              # strongest (or shortest) vectors used in the search
    hkl_tolerance: float        # |h - round(h)| per component for "indexed"
    angle_tolerance_deg: float  # observed vs calculated angle of a seed pair
    length_tolerance: float     # relative, |q| against 1/d of the approximate cell
    min_fraction: float         # below this: IndexingError
    n_seeds: int = knob(40)               # shortest search vectors used to form pairs
    min_pair_angle_deg: float = knob(15.0)  # pairs closer to (anti)parallel are skipped
    max_pairs: int = knob(2000)           # seed pairs tried at most
    max_candidates: int = knob(300_000)   # candidate orientations scored at most
    pair_batch: int = knob(60)            # seed pairs per batch (refine/stop check after each)
    n_refine: int = knob(3)               # distinct best candidates refined per batch
    accept_fraction: float = knob(0.75)   # stop searching once a refined candidate indexes this
    max_cell_change: float = knob(0.10)   # relative length change allowed in refinement
    refine_cycles: int = knob(3)          # constrained refinement / re-assignment cycles

    def __post_init__(self):
        for name in ("max_peaks", "n_seeds", "max_pairs", "max_candidates", "pair_batch",
                     "n_refine", "refine_cycles"):
            v = getattr(self, name)
            self.check(isinstance(v, int) and not isinstance(v, bool) and v >= 1, name,
                       "a positive integer")
        self.check(self.n_seeds >= 2, "n_seeds", "at least 2")
        for name, (lo, hi) in {"hkl_tolerance": (0.0, 0.5), "angle_tolerance_deg": (0.0, 30.0),
                               "length_tolerance": (0.0, 0.5), "min_fraction": (0.0, 1.0),
                               "min_pair_angle_deg": (0.0, 90.0), "accept_fraction": (0.0, 1.0),
                               "max_cell_change": (0.0, 1.0)}.items():
            v = getattr(self, name)
            self.check(_finite(v) and lo < v <= hi, name, f"a number in ({lo}, {hi}]")


@dataclass(frozen=True)
class RefinementParams(Params):
    """reduction.refinement (rules index_parent, refine_detector, refine_temperature) and
    the fit's knobs."""

    SECTION: ClassVar[str] = "reduction.refinement"
    NAME: ClassVar[str] = "refinement"

    hkl_tolerance: float  # max |h - round(h)| per index for an assignment
    outlier_sigma: float  # rejection threshold in robust standard deviations
    cycles: int  # assignment / fit cycles
    refine_detector: bool
    min_peaks_for_detector: int  # detector parameters only with at least this many peaks
    refine_offsets: bool
    min_fraction: float  # fail when fewer of the peaks can be indexed
    min_peaks_per_entry: int  # an entry with fewer indexed peaks has no usable signal
    unusable_entries: str = from_config_at("reduction.merge.unusable_entries")  # fail | leave_out
    # which scans refine the shared detector (model.shared_detector): left out of the jobs'
    # settings at its default, so that the jobs made before it keep theirs
    detector_from: str = left_out_as_default("parent")
    refine_cell: bool = knob(True)
    refine_orientation: bool = knob(True)
    frame_weight: float = knob(1.0)  # residual weight of one frame relative to one pixel

    def __post_init__(self):
        self.check(0 < self.hkl_tolerance < 0.5, "hkl_tolerance", "a number in (0, 0.5)")
        self.check(self.cycles >= 1, "cycles", "an integer >= 1")


@dataclass(frozen=True)
class MaskParams(Params):
    """reduction.mask (rule mask_scan)."""

    SECTION: ClassVar[str] = "reduction.mask"
    NAME: ClassVar[str] = "mask"

    dead_pixels: bool
    found_peaks: bool
    predicted_peaks: bool
    radius_px: float
    radius_frames: float
    max_lorentz_stretch: float
    hkl_radius: float

    def __post_init__(self):
        for name in ("radius_px", "radius_frames", "hkl_radius"):
            v = getattr(self, name)
            self.check(_finite(v) and v >= 0, name, "a number >= 0")
            object.__setattr__(self, name, float(v))
        self.check(self.hkl_radius <= 0.5, "hkl_radius", "at most 0.5 r.l.u.")
        self.check(_finite(self.max_lorentz_stretch) and self.max_lorentz_stretch >= 1,
                   "max_lorentz_stretch", "a number >= 1")
        object.__setattr__(self, "max_lorentz_stretch", float(self.max_lorentz_stretch))


@dataclass(frozen=True)
class GridParams(Params):
    """The grid part of reduction.transform (rule define_grid)."""

    SECTION: ClassVar[str] = "reduction.transform"
    NAME: ClassVar[str] = "grid"

    grid: dict  # axis -> [start, stop, step] given in the config (others derived)
    max_voxels: int

    def __post_init__(self):
        grid = {a: tuple(float(x) for x in v) for a, v in dict(self.grid).items()}
        object.__setattr__(self, "grid", grid)
        for axis, (start, stop, step) in grid.items():
            where = f"{self.where('grid')}.{axis}"
            if not all(map(math.isfinite, (start, stop, step))) or step <= 0 or stop < start:
                raise ConfigError(f"{where}: expected [start, stop, step] with start <= stop and "
                                  f"step > 0 (r.l.u.), got {[start, stop, step]}")
        voxels = math.prod(self.axis_points(a) for a in grid)
        if voxels > self.max_voxels:
            raise ConfigError(f"{self.where('grid')}: {voxels:.3g} voxels, more than "
                              f"{self.where('max_voxels')} ({self.max_voxels}): expected coarser "
                              "steps or smaller ranges (a transform job holds ~16 bytes per "
                              "voxel), or raise max_voxels where the nodes have the memory")

    def axis_points(self, axis: str) -> int:
        """Voxel centres of a given axis: start, start + step, ... <= stop."""
        start, stop, step = self.grid[axis]
        return int(math.floor((stop - start) / step + 1e-6)) + 1

    def settings(self) -> dict:
        return {"grid": {a: list(v) for a, v in self.grid.items()}, "max_voxels": self.max_voxels}


@dataclass(frozen=True)
class TransformParams(Params):
    """What a transform job uses of reduction.transform (rule transform_frames)."""

    SECTION: ClassVar[str] = "reduction.transform"
    NAME: ClassVar[str] = "transform"

    kinds: tuple  # volumes made in one pass: transform and/or masked_transform
    subdivide: int | str
    solid_angle: bool
    polarization: bool
    monitor_reference: float | None
    bad_monitor_frames: str  # fail | leave_out
    chunk_frames: int
    variance: bool  # sum each voxel's variance too (gain below)
    half_sets: bool  # sum half set A too, binned 2 x 2 x 2 (for CC1/2)
    polarization_fraction: float = from_config_at("instrument.polarization_fraction")
    # (here, not in DetectorParams: it changes the transforms alone, not every step)
    gain: float = from_config_at("instrument.detector.gain")
    # the corrections of model.corrections (air changes every transform: in every job's
    # settings; the others as they were before they existed, left out at their defaults)
    air: bool = True
    air_path: float | None = left_out_as_default(None, "instrument.air_path")
    efficiency: bool = left_out_as_default(True)
    absorption: bool = left_out_as_default(True)
    min_transmission: float = left_out_as_default(0.1)
    background_smooth: int = left_out_as_default(0)  # (sum_chunks: algorithms.merge.background)
    # the variance from each pixel-frame's expected count or its own (issue 81)
    variance_from: str = left_out_as_default("expected")

    @property
    def variance_gain(self) -> float | None:
        """The transform's gain (counts per photon), None without the variance."""
        return float(self.gain) if self.variance else None

    def __post_init__(self):
        self.check(self.subdivide in ("auto", "auto_per_block")
                   or (isinstance(self.subdivide, int) and 1 <= self.subdivide <= 64),
                   "subdivide", "'auto', 'auto_per_block' or an integer in [1, 64]")
        self.check(int(self.chunk_frames) >= 1, "chunk_frames", "an integer >= 1")


@dataclass(frozen=True)
class SliceParams(Params):
    """The slices drawn in the pictures of volumes (rules sum_chunks, merge_entries,
    symmetrize)."""

    SECTION: ClassVar[str] = "reduction.transform"
    NAME: ClassVar[str] = "pictures"

    slices: tuple  # ({axis: value}, ...)

    def settings(self) -> dict:
        return {"slices": [dict(s) for s in self.slices]}


@dataclass(frozen=True)
class SeriesParams(Params):
    """The slice of the temperature-series picture (rule temperature_series)."""

    SECTION: ClassVar[str] = "reduction.merge"
    NAME: ClassVar[str] = "series"

    series_slice: dict


@dataclass(frozen=True)
class TemperaturesParams(Params):
    """The temperatures of a sample's series (rules temperature_series,
    pdf_temperature_series): their labels (300K), coldest first, the order of the job's
    inputs."""

    temperatures: tuple = planned()


@dataclass(frozen=True)
class ParentsParams(Params):
    """Each temperature's parent (rule refine_detector): temperature label -> the label of
    the parent temperature whose orientation it starts from."""

    parents: dict = planned()


@dataclass(frozen=True)
class SetAsideParams(Params):
    """The scans-table rows `hklflow run` set aside at the job's temperature (rules
    index_parent, refine_temperature, merge_entries; refine_detector: at any of the sample's),
    each as its line says: the notes of the result made without them.  Left out when there
    are none, so that no other job's settings change."""

    set_aside: tuple = field(default=(), metadata={"planned": True, "omit_default": True})


@dataclass(frozen=True)
class WaitingParams(Params):
    """The scans of the job's temperature that hklflow watch knows are planned but has not
    yet included (rule merge_entries; planning.config.waiting_scans), each as a landed
    record with 0 frames: the merged volume is a preview.  Left out when there are none, so
    that a batch run's settings stay as they were."""

    waiting: tuple = field(default=(), metadata={"planned": True, "omit_default": True})


@dataclass(frozen=True)
class StatisticsParams(Params):
    """What the statistics of a merged volume leave out (rule merge_entries): the |Q| about
    every integer (h, k, l), 1/Angstrom as 2 pi / d.  The transform's is
    reduction.merge.statistics_bragg_radius; the masked transform has no Bragg peaks: 0."""

    NAME: ClassVar[str] = "statistics"

    bragg_radius: float = from_config_at("reduction.merge.statistics_bragg_radius")

    def __post_init__(self):
        object.__setattr__(self, "bragg_radius", float(self.bragg_radius))


@dataclass(frozen=True)
class ModelInputsParams(Params):
    """The modelling programs whose files are made of each volume (output.model_inputs;
    rule model_inputs)."""

    programs: tuple = from_config_at("output.model_inputs")


@dataclass(frozen=True)
class NXRefineWrapperParams(Params):
    """What NXRefine's wrapper file takes of reduction.transform (rule nxrefine_wrapper): the
    kinds, which say which volume is which among the job's inputs, and the monitor
    reference, the norm of NXRefine's monitor weights."""

    kinds: tuple = from_config_at("reduction.transform.kinds")
    monitor_reference: float | None = from_config_at("reduction.transform.monitor_reference")


@dataclass(frozen=True)
class PDFParams(Params):
    """What the PDF steps use of reduction.pdf (rules total_pdf, delta_pdf,
    pdf_temperature_series)."""

    SECTION: ClassVar[str] = "reduction.pdf"
    NAME: ClassVar[str] = "pdf"

    radius: float
    radius_units: str  # inverse_angstrom | rlu
    extra_positions: tuple  # ((h, k, l), ...)
    fill_order: int
    fill_eps: float
    q_max: float | None
    subtract_mean: bool
    errors: bool  # sigma of the PDFs (hklflow.algorithms.pdf.sigma)
    slices: tuple  # ({x|y|z: value}, ...)

    def __post_init__(self):
        self.check(_finite(self.radius) and self.radius > 0, "radius", "a number > 0")
        self.check(isinstance(self.fill_order, int) and 1 <= self.fill_order <= 3, "fill_order",
                   "1, 2 or 3")
        self.check(_finite(self.fill_eps) and self.fill_eps >= 0, "fill_eps", "a number >= 0")
        self.check(self.q_max is None or (_finite(self.q_max) and self.q_max > 0), "q_max",
                   "a number > 0 (1/Angstrom) or null")
        positions = tuple(tuple(float(x) for x in p) for p in self.extra_positions)
        self.check(all(len(p) == 3 and all(map(math.isfinite, p)) for p in positions),
                   "extra_positions", "a list of [h, k, l] positions")
        object.__setattr__(self, "extra_positions", positions)
        object.__setattr__(self, "radius", float(self.radius))
        object.__setattr__(self, "fill_eps", float(self.fill_eps))

    def hole_radius(self, cell) -> float:
        """The punch's radius in 1/Angstrom (2 pi convention): radius_units 'rlu' scale by
        the shortest reciprocal axis."""
        if self.radius_units == "inverse_angstrom":
            return self.radius
        return self.radius * 2 * math.pi * min(cell.reciprocal_parameters[:3])

    def settings(self) -> dict:
        out = super().settings()
        out["extra_positions"] = [list(p) for p in self.extra_positions]
        out["slices"] = [dict(s) for s in self.slices]
        return out


@dataclass(frozen=True)
class TotalPDFParams(Params):
    """What the total PDF uses of reduction.pdf (rule total_pdf): a changed hole radius
    leaves it alone."""

    SECTION: ClassVar[str] = "reduction.pdf"

    q_max: float | None
    subtract_mean: bool
    errors: bool
    slices: tuple  # ({x|y|z: value}, ...)


@dataclass(frozen=True)
class PDFSeriesParams(Params):
    """The plane of the PDF temperature series (rule pdf_temperature_series): the first of
    reduction.pdf.slices."""

    slice: dict = planned()  # {x|y|z: value}


@dataclass(frozen=True)
class CalibrationParams(Params):
    """One calibration (calibrations.NAME of the config; rule calibrate_powder) and the
    algorithm's knobs (defaults suit Pilatus-class detectors):

    first_rings: rings used in the first pass (distance and PONI only).
    pts_per_deg: control points per azimuthal degree of ring (pyFAI extract_cp).
    max_passes: extraction + refinement passes before giving up on convergence.
    tolerance_px: converged when a pass moves the predicted rings by less than this.
    outlier_sigma: drop points further than this many robust sigmas from their ring.
    min_points, min_rings: fewer control points / rings than this is a failure.
    hot_pixel_factor: a pixel brighter than factor x (max of its 8 neighbours) + 100 is hot.
    seed: seed of numpy's global generator during pyFAI's point picking (reproducible).
    coarse_align: first align distance and beam centre on the whole image, searching
        +-search_dist (relative) in distance and +-search_px in beam centre.
    """

    NAME: ClassVar[str] = "calibration"
    REFINABLE: ClassVar[tuple] = ("dist", "poni1", "poni2", "rot1", "rot2", "rot3", "wavelength")
    POWDER_BLIND: ClassVar[tuple] = ("rot3",)  # a rotation about the beam leaves 2theta unchanged
    # The RMS radial residual (px) of control points known only to the pixel they lie in: a
    # point uniform over a unit pixel has variance 1/12 along any direction.  Worse than
    # that, the rings do not fit one geometry (schema: calibrations.NAME.max_rms_px).
    DEFAULT_MAX_RMS_PX: ClassVar[float] = 1.0 / math.sqrt(12.0)

    name: str
    calibrant: str | None  # None: an imported PONI whose calibrant nobody named
    image: str | None
    dataset: str
    frame: int
    poni: str | None
    start: dict | None  # dist, poni1, poni2 (m), rot1..3 (rad)
    refine: tuple
    max_rings: int | None
    detector: str = from_config_at("instrument.detector.name")
    wavelength: float = from_config_at("instrument.wavelength")  # Angstrom
    polarization_fraction: float = from_config_at("instrument.polarization_fraction")
    orientation: int = from_config_at("instrument.detector.orientation", default=3)
    # which wins where an imported PONI disagrees with the config: {fact: use_poni|use_config}
    poni_mismatch: dict = field(default_factory=dict)
    max_rms_px: float | None = None  # None: DEFAULT_MAX_RMS_PX
    # the detector's sensor {material, thickness}: its parallax corrected (model.sensor)
    sensor: dict | None = left_out_as_default(None, "instrument.detector.sensor")
    first_rings: int = knob(3)
    pts_per_deg: float = knob(1.0)
    max_passes: int = knob(12)
    tolerance_px: float = knob(0.05)
    outlier_sigma: float = knob(5.0)
    min_points: int = knob(30)
    min_rings: int = knob(2)
    hot_pixel_factor: float = knob(5.0)
    seed: int = knob(0)
    coarse_align: bool = knob(True)
    search_dist: float = knob(0.1)
    search_px: float = knob(50.0)

    @classmethod
    def config_path(cls, f):
        return f.metadata.get("config") or f"calibrations.NAME.{f.name}"

    @classmethod
    def for_calibration(cls, cfg: dict, name: str, **knobs) -> "CalibrationParams":
        spec = cfg["calibrations"][name]
        values = {}
        for f in cls.config_fields():
            if f.name == "name":
                values["name"] = name
            elif "config" in f.metadata:
                values[f.name] = config_value(cfg, f.metadata["config"])
            else:
                values[f.name] = _as_field_value(spec.get(f.name))
        return cls(**values, **knobs)

    def where(self, name: str) -> str:
        return super().where(name).replace(".NAME.", f".{self.name}.")

    def __post_init__(self):
        object.__setattr__(self, "refine", tuple(self.refine))
        self.check(_finite(self.wavelength) and self.wavelength > 0, "wavelength",
                   "a wavelength > 0 (Angstrom)")
        if not self.image and not self.poni:
            raise ConfigError(f"calibrations.{self.name}: give an image (to refine) or a poni "
                              "file (to import)")
        if not self.poni:
            self.check(bool(self.calibrant), "calibrant",
                       "a pyFAI calibrant name to refine from the image (CeO2, LaB6, Si, ...)")
            self.check(self.start is not None, "start",
                       "a rough starting geometry to refine from the image (dist, poni1, poni2 "
                       "in m; rot1..3 in rad)")
            self.check(_finite(self.start.get("dist")) and self.start["dist"] > 0, "start",
                       "a start distance > 0 m")
            self.check(bool(self.free), "refine", "at least one parameter powder rings can see")
        self.check(self.max_rings is None or self.max_rings >= 1, "max_rings", "an integer >= 1")
        self.check(self.frame >= 0, "frame", "an integer >= 0")
        self.check(self.max_rms_px is None or (_finite(self.max_rms_px) and self.max_rms_px > 0),
                   "max_rms_px", "an RMS residual > 0 (pixels), or null for the default")

    @property
    def rms_bound_px(self) -> float:
        """Largest accepted RMS radial residual of the control points (pixels)."""
        return self.DEFAULT_MAX_RMS_PX if self.max_rms_px is None else float(self.max_rms_px)

    @property
    def free(self) -> tuple:
        """The parameters actually refined (rot3 is blind to powder rings)."""
        return tuple(p for p in self.REFINABLE if p in self.refine and p not in self.POWDER_BLIND)

    def as_dict(self) -> dict:
        """Every field (knobs included; one left out of the settings at its default, left out
        here too), JSON-able: recorded in calibration.nxs."""
        return {f.name: _jsonable(getattr(self, f.name)) for f in dataclasses.fields(self)
                if not (f.metadata.get("omit_default") and getattr(self, f.name) == f.default)}


# the parameters built from the config as a whole (CalibrationParams: one per calibration)
STEP_PARAMS = (DetectorParams, IngestParams, PeakSearchParams, IndexingParams, RefinementParams,
               MaskParams, GridParams, TransformParams, SliceParams, StatisticsParams,
               SeriesParams, ModelInputsParams, NXRefineWrapperParams, PDFParams, TotalPDFParams)
