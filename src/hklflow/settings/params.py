"""The settings of every step, each declared once: a frozen dataclass per step whose fields
say which config keys the step uses.

The config schema (``schemas/config.schema.yaml``) is the one source of defaults and
documentation of every user setting.  A parameters class lists the config keys it reads
(a field named like a key of its ``SECTION``, or with ``metadata={"config": "dotted.path"}``
for a key elsewhere) and adds the algorithm's own knobs, which are not user settings, as
fields with ``metadata={"knob": True}`` and a default.

The same declaration serves three places, so they cannot drift apart:

* the Snakefile builds each job's ``params:`` from it (:func:`settings_json`): a job
  receives exactly the settings it uses, and Snakemake reruns it when one of them changes;
* the step command reads them back (:func:`read_settings`, :func:`read_settings_file`) into
  typed, validated objects;
* tests and benchmarks take the schema's defaults with ``Cls.defaults(**overrides)``.

This module is imported when the Snakefile is parsed (every cluster job parses it): it
must stay light (no numba, pyFAI or scipy).
"""
from __future__ import annotations

import copy
import dataclasses
import functools
import hashlib
import json
import math
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ..base.errors import ConfigError


# --------------------------------------------------------------------------------------
# The schema
# --------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=4)
def schema(name: str = "config.schema.yaml") -> dict:
    import yaml  # (here: a step's process never reads the schema: 25 ms of its start)

    return yaml.safe_load(resources.files("hklflow.settings.schemas").joinpath(name).read_text())


def validator_with_defaults(schema_: dict):
    """A Draft 2020-12 validator that also fills in `default` values (as Snakemake's
    validate(set_default=True) does)."""
    import jsonschema  # (here: ~90 ms to import, and a step's process validates nothing)

    base = jsonschema.Draft202012Validator
    validate_props = base.VALIDATORS["properties"]
    validate_items = base.VALIDATORS["items"]

    def set_defaults(validator, properties, instance, sub_schema):
        if isinstance(instance, dict):
            for prop, sub in properties.items():
                if "default" in sub and prop not in instance:
                    instance[prop] = copy.deepcopy(sub["default"])
        yield from validate_props(validator, properties, instance, sub_schema)
        if isinstance(instance, dict):
            for prop, sub in properties.items():
                if prop in instance:
                    instance[prop] = canonical_number(instance[prop], sub)

    def canonical_items(validator, items, instance, sub_schema):
        yield from validate_items(validator, items, instance, sub_schema)
        if isinstance(instance, list) and isinstance(items, dict):
            instance[:] = [canonical_number(v, items) for v in instance]

    return jsonschema.validators.extend(
        base, {"properties": set_defaults, "items": canonical_items})(schema_)


def canonical_number(value, sub_schema: dict):
    """A number as its schema's type has it, so that one value has one form in the settings
    that reach the jobs (3 and 3.0 must not rerun anything): an integer where the schema says
    number becomes a float, a float with no fraction where it says integer an int, and a
    member of an enum the enum's own form."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return value
    for member in sub_schema.get("enum", ()):  # (the enum's own form: 3 for 3.0)
        if isinstance(member, (int, float)) and not isinstance(member, bool) \
                and member == value:
            return member
    types = sub_schema.get("type")
    types = set(types) if isinstance(types, list) else {types}
    if isinstance(value, int) and "number" in types and "integer" not in types:
        return float(value)
    if isinstance(value, float) and "integer" in types and "number" not in types \
            and value.is_integer():
        return int(value)
    return value


def schema_node(path: str) -> dict:
    """The sub-schema of a dotted config path (e.g. 'reduction.find_peaks.window')."""
    node = schema()
    for part in path.split("."):
        props = node.get("properties", {})
        if part in props:
            node = props[part]
        elif isinstance(node.get("additionalProperties"), dict):
            node = node["additionalProperties"]
        else:
            raise KeyError(f"no config key {path!r} in the schema")
    return node


_NO_DEFAULT = object()


def schema_default(path: str):
    """The schema's default of a config key (objects: their members' defaults filled in)."""
    node = schema_node(path)
    if "default" in node:
        value = copy.deepcopy(node["default"])
    elif node.get("type") == "object":
        value = {}
    else:
        return _NO_DEFAULT
    if isinstance(value, dict) and node.get("type") == "object":
        value = copy.deepcopy(value)
        for _ in validator_with_defaults(node).iter_errors(value):
            pass  # only the defaults are wanted here
    return value


def config_value(cfg: dict, path: str):
    node = cfg
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            raise KeyError(path)
        node = node[part]
    return node


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


@dataclass(frozen=True)
class Params:
    """Base of the step parameter classes (see the module docstring)."""

    SECTION: ClassVar[str] = ""  # dotted config path of the section most fields come from
    NAME: ClassVar[str] = ""  # key of this part in a job's settings JSON

    @classmethod
    def config_fields(cls) -> list[dataclasses.Field]:
        return [f for f in dataclasses.fields(cls) if not f.metadata.get("knob")]

    @classmethod
    def config_path(cls, f: dataclasses.Field) -> str:
        return f.metadata.get("config") or f"{cls.SECTION}.{f.name}"

    @classmethod
    def from_config(cls, cfg: dict, **extra):
        """From the validated config (defaults filled in, as config.load_experiment makes it)."""
        values = {}
        for f in cls.config_fields():
            if f.name in extra:
                continue
            try:
                values[f.name] = _as_field_value(config_value(cfg, cls.config_path(f)))
            except KeyError:
                raise ConfigError(f"config key {cls.config_path(f)!r} is missing") from None
        return cls(**values, **extra)

    @classmethod
    def from_settings(cls, values: dict, where: str = "--settings"):
        """From the settings a job received: exactly the config fields, no more, no less."""
        if not isinstance(values, dict):
            raise ConfigError(f"{where}: {cls.NAME or cls.__name__}: expected a mapping, "
                              f"got {type(values).__name__}")
        names = {f.name for f in cls.config_fields()}
        unknown = sorted(set(values) - names)
        missing = sorted(names - set(values))
        if unknown or missing:
            raise ConfigError(f"{where}: {cls.NAME or cls.__name__}: "
                              + (f"unknown setting(s) {unknown}" if unknown else "")
                              + ("; " if unknown and missing else "")
                              + (f"missing setting(s) {missing}" if missing else ""))
        return cls(**{k: _as_field_value(v) for k, v in values.items()})

    @classmethod
    def defaults(cls, **overrides):
        """The schema's defaults (and the knobs' own), with overrides (tests, benchmarks)."""
        values = {}
        for f in cls.config_fields():
            if f.name in overrides:
                continue
            d = schema_default(cls.config_path(f))
            if d is _NO_DEFAULT:
                raise TypeError(f"{cls.__name__}.defaults(): {f.name} "
                                f"({cls.config_path(f)}) has no default: give it")
            values[f.name] = _as_field_value(d)
        return cls(**values, **overrides)

    def settings(self) -> dict:
        """The config fields as JSON-able data (what a job receives)."""
        return {f.name: _jsonable(getattr(self, f.name)) for f in self.config_fields()}

    def where(self, name: str) -> str:
        """The config key of a field (a knob: ClassName.field)."""
        f = next(f for f in dataclasses.fields(self) if f.name == name)
        return f"{type(self).__name__}.{name}" if f.metadata.get("knob") else self.config_path(f)

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


# --------------------------------------------------------------------------------------
# Job settings: what the Snakefile passes and the step reads back
# --------------------------------------------------------------------------------------
def settings_json(parts: dict[str, Any]) -> str:
    """The settings of a job as one JSON text (sorted keys: Snakemake compares it with the
    text its outputs were made with).  parts: name -> Params object or JSON-able data."""
    data = {k: (v.settings() if isinstance(v, Params) else _jsonable(v)) for k, v in parts.items()}
    return json.dumps(data, sort_keys=True, separators=(",", ":"), allow_nan=False)


def settings_digest(text: str) -> str:
    """The name of the file that holds a job's settings text (hklflow.planning.jobs.SettingsFiles):
    the first 16 hex digits of its SHA-256."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def read_settings(text: str, where: str = "--settings") -> dict:
    """The JSON of --settings (a step's command line)."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{where}: not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a JSON object of settings")
    return data


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
    return read_settings(text, where)


def settings_part(settings: dict, cls):
    """The typed object of one part of a job's settings."""
    if cls.NAME not in settings:
        raise ConfigError(f"--settings: no {cls.NAME!r} part (has {sorted(settings)})")
    return cls.from_settings(settings[cls.NAME], where=f"--settings {cls.NAME}")


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
    """Facts of the detector every step that reads frames uses (instrument.detector)."""

    SECTION: ClassVar[str] = "instrument.detector"
    NAME: ClassVar[str] = "detector"

    name: str
    trusted_max: int | None
    mask_file: str | None
    mask_dataset: str
    # pyFAI's 1..4 (docs/conventions.md); a field so that a change reruns the jobs given it
    orientation: int = 3

    def __post_init__(self):
        self.check(self.orientation in (1, 2, 3, 4) and not isinstance(self.orientation, bool),
                   "orientation", "pyFAI's detector orientation 1, 2, 3 or 4")

    def trusted_max_for(self, dtype) -> int:
        """Values at or above this are overloaded: the config's, else the frames' dtype
        maximum (float frames: no limit but 2^62)."""
        if self.trusted_max is not None:
            return int(self.trusted_max)
        return int(np.iinfo(dtype).max) if np.issubdtype(dtype, np.integer) else 2 ** 62


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
        self.check(self.method in ("dispersion", "absolute"), "method", "'dispersion' or 'absolute'")
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
    """reduction.refinement (rules index_parent, refine_temperature) and the fit's knobs."""

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
    refine_cell: bool = knob(True)
    refine_orientation: bool = knob(True)
    frame_weight: float = knob(1.0)  # residual weight of one frame relative to one pixel

    def __post_init__(self):
        self.check(0 < self.hkl_tolerance < 0.5, "hkl_tolerance", "a number in (0, 0.5)")
        self.check(self.cycles >= 1, "cycles", "an integer >= 1")
        self.check(self.unusable_entries in ("fail", "leave_out"), "unusable_entries",
                   "'fail' or 'leave_out'")


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

    @property
    def variance_gain(self) -> float | None:
        """The transform's gain (counts per photon), None without the variance."""
        return float(self.gain) if self.variance else None

    def __post_init__(self):
        self.check(self.subdivide in ("auto", "auto_per_block")
                   or (isinstance(self.subdivide, int) and 1 <= self.subdivide <= 64),
                   "subdivide", "'auto', 'auto_per_block' or an integer in [1, 64]")
        self.check(int(self.chunk_frames) >= 1, "chunk_frames", "an integer >= 1")
        self.check(self.bad_monitor_frames in ("fail", "leave_out"), "bad_monitor_frames",
                   "'fail' or 'leave_out'")
        self.check(len(self.kinds) >= 1 and set(self.kinds) <= {"transform", "masked_transform"}
                   and len(set(self.kinds)) == len(self.kinds), "kinds",
                   "a list of transform and/or masked_transform")


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
        self.check(self.radius_units in ("inverse_angstrom", "rlu"), "radius_units",
                   "'inverse_angstrom' or 'rlu'")
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
    # what poni_mismatch may say per fact (the orientation is how the frames are laid out:
    # the same for every scan, so only the config's can win)
    PONI_MISMATCH: ClassVar[dict] = {"wavelength": ("use_poni", "use_config"),
                                     "orientation": ("use_config",)}

    name: str
    calibrant: str
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
            self.check(self.start is not None, "start",
                       "a rough starting geometry to refine from the image (dist, poni1, poni2 "
                       "in m; rot1..3 in rad)")
            self.check(_finite(self.start.get("dist")) and self.start["dist"] > 0, "start",
                       "a start distance > 0 m")
            self.check(bool(self.free), "refine", "at least one parameter powder rings can see")
        bad = [p for p in self.refine if p not in self.REFINABLE]
        self.check(not bad, "refine", f"a list of {list(self.REFINABLE)}")
        self.check(self.max_rings is None or self.max_rings >= 1, "max_rings", "an integer >= 1")
        self.check(self.frame >= 0, "frame", "an integer >= 0")
        self.check(self.orientation in (1, 2, 3, 4) and not isinstance(self.orientation, bool),
                   "orientation", "pyFAI's detector orientation 1, 2, 3 or 4")
        self.check(self.max_rms_px is None or (_finite(self.max_rms_px) and self.max_rms_px > 0),
                   "max_rms_px", "an RMS residual > 0 (pixels), or null for the default")
        self.check(isinstance(self.poni_mismatch, dict) and all(
            v in self.PONI_MISMATCH.get(k, ()) for k, v in self.poni_mismatch.items()),
            "poni_mismatch", f"a mapping of {self.PONI_MISMATCH}")

    @property
    def rms_bound_px(self) -> float:
        """Largest accepted RMS radial residual of the control points (pixels)."""
        return self.DEFAULT_MAX_RMS_PX if self.max_rms_px is None else float(self.max_rms_px)

    @property
    def free(self) -> tuple:
        """The parameters actually refined (rot3 is blind to powder rings)."""
        return tuple(p for p in self.REFINABLE if p in self.refine and p not in self.POWDER_BLIND)

    def as_dict(self) -> dict:
        """Every field (knobs included), JSON-able: recorded in calibration.nxs."""
        return {f.name: _jsonable(getattr(self, f.name)) for f in dataclasses.fields(self)}


# the parameters built from the config as a whole (CalibrationParams: one per calibration)
STEP_PARAMS = (DetectorParams, PeakSearchParams, IndexingParams, RefinementParams, MaskParams,
               GridParams, TransformParams, SliceParams, SeriesParams, PDFParams)
