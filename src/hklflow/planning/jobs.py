"""How the work of an experiment is cut into jobs, and what settings each job receives,
from the config and scans table alone (the Snakefile calls these at parse time, so nothing
here reads data files)."""
from __future__ import annotations

import functools
import json
import math
import os
from dataclasses import replace
from pathlib import Path

from ..base.atomic import write_text_atomically
from ..base.errors import ConfigError
from ..model.geometry import detector_shape
from ..model.grid import (AXES, MAX_TRANSFORM_VOXELS, MAX_TRANSFORM_VOXELS_BOTH_KINDS,
                          TRANSFORM_BRICK, Axis, Grid, GridSymmetryError, check_grid_symmetry)
from ..settings.params import (CalibrationParams, DetectorPosition, DetectorPositionsParams,
                               GoniometerParams, GridParams, IndexingParams, IngestParams,
                               MaskParams, ModelInputsParams, NXRefineWrapperParams, ParentsParams,
                               PDFParams, PDFSeriesParams, PeakSearchParams, RefinementParams,
                               SampleParams, SampleShapeParams, ScanParams, SeriesParams,
                               SetAsideParams, SliceParams, StatisticsParams, TemperaturesParams,
                               TotalPDFParams, TransformParams, WaitingParams, settings_digest,
                               settings_json)
from ..settings.scaling import ScalingParams


def scan_pixels(exp) -> int:
    rows, cols = detector_shape(exp.instrument.detector.name)
    return rows * cols


def frames_per_transform_job(exp) -> int:
    cfg = exp.reduction["transform"]
    if cfg["frames_per_job"]:
        return int(cfg["frames_per_job"])
    return max(1, int(cfg["pixel_frames_per_job"] // scan_pixels(exp)))


def transform_jobs(exp, scan) -> int:
    """How many transform jobs a scan entry is cut into."""
    return max(1, math.ceil(scan.nframes / frames_per_transform_job(exp)))


def transform_frame_ranges(exp, scan) -> list[tuple[int, int]]:
    """[(first, stop)) frame ranges of the transform jobs of a scan entry: the scan split into
    the fewest jobs of at most frames_per_transform_job frames, as equal as possible."""
    n, njobs = scan.nframes, transform_jobs(exp, scan)
    bounds = [round(i * n / njobs) for i in range(njobs + 1)]
    return list(zip(bounds[:-1], bounds[1:]))


# past these, Snakemake's plan takes minutes and gigabytes (bench/dryrun.py measures its
# pace): a typo in nframes or frames_per_job, not an experiment
MAX_TRANSFORM_JOBS_PER_ENTRY = 1000
MAX_TRANSFORM_JOBS = 50_000


def check_job_counts(exp) -> None:
    """ConfigError, before any planning, when the transform would be cut into more jobs
    than Snakemake can plan in reasonable time."""
    why = ("reduction.transform.frames_per_job" if exp.reduction["transform"]["frames_per_job"]
           else "reduction.transform.pixel_frames_per_job")
    total = 0
    for scan in exp.scans:
        n = transform_jobs(exp, scan)
        if n > MAX_TRANSFORM_JOBS_PER_ENTRY:
            raise ConfigError(
                f"{exp.scans_table}: row {scan.row} ({scan.id}): field 'nframes': "
                f"{scan.nframes} frames at {frames_per_transform_job(exp)} per job ({why}) make "
                f"{n} transform jobs: expected at most {MAX_TRANSFORM_JOBS_PER_ENTRY} per entry "
                f"(check nframes; or raise {why})")
        total += n
    if total > MAX_TRANSFORM_JOBS:
        raise ConfigError(f"{' + '.join(exp.sources)}: field '{why}': the experiment would make "
                          f"{total} transform jobs: expected at most {MAX_TRANSFORM_JOBS} (raise {why})")


# frames read at a time are a buffer the job holds two or three times over (resources.smk):
# a few tens of MB read as fast, and a larger one only takes memory (a typo's: 10^5 frames)
MAX_CHUNK_BYTES = 2 * 2**30


def check_chunk_sizes(exp) -> None:
    """ConfigError when frames read at a time (reduction.find_peaks/transform.chunk_frames)
    would make a buffer larger than MAX_CHUNK_BYTES: refused before any job."""
    frame_bytes = scan_pixels(exp) * 4  # frames are int32 in memory
    for section in ("find_peaks", "transform"):
        chunk = exp.reduction[section]["chunk_frames"]
        if chunk != "auto" and int(chunk) * frame_bytes > MAX_CHUNK_BYTES:
            raise ConfigError(
                f"{' + '.join(exp.sources)}: field 'reduction.{section}.chunk_frames': {chunk} "
                f"frames of the {exp.instrument.detector.name} ({frame_bytes / 1e6:.3g} MB each "
                f"in memory) make a buffer of {int(chunk) * frame_bytes / 1e9:.3g} GB, held two "
                f"or three times: expected at most {MAX_CHUNK_BYTES // frame_bytes} frames "
                f"({MAX_CHUNK_BYTES / 2**30:g} GiB; a few tens of MB read as fast)")


def check_deliberate_repeats(exp) -> None:
    """ConfigError for an entry of reduction.ingest.deliberate_repeats that the scans table
    does not have (a typo would let the same data be merged twice unnoticed elsewhere)."""
    ids = {s.id for s in exp.scans}
    for i, name in enumerate(exp.reduction["ingest"]["deliberate_repeats"]):
        if name not in ids:
            example = next(iter(sorted(ids)), "sample/300K/f1")
            raise ConfigError(f"{' + '.join(exp.sources)}: field 'reduction.ingest."
                              f"deliberate_repeats.{i}': {name!r} is not an entry of "
                              f"{exp.scans_table}: expected sample/temperature/entry, e.g. "
                              f"{example}")


def check_grid_index_range(exp) -> None:
    """ConfigError when a grid given whole in the config does not fit the transform's voxel
    index (int32; both kinds from one pass index two parts of the grid): refused now, not
    in the first transform job (a derived grid stays within max_voxels)."""
    grid = GridParams.from_config(exp.raw)
    if not all(a in grid.grid for a in "hkl"):
        return
    b = TRANSFORM_BRICK
    padded = math.prod(-(-grid.axis_points(a) // b) * b for a in "hkl")  # (whole bricks)
    both = len(TransformParams.from_config(exp.raw).kinds) == 2
    most = MAX_TRANSFORM_VOXELS_BOTH_KINDS if both else MAX_TRANSFORM_VOXELS
    if padded > most:
        raise ConfigError(
            f"{' + '.join(exp.sources)}: field {grid.where('grid')!r}: {padded:,} voxels (padded "
            f"to bricks of 8^3), more than the transform indexes ({most:,}"
            + (", both kinds from one pass: reduction.transform.kinds" if both else "")
            + "): expected coarser steps or smaller ranges")


def check_grid_symmetry_of_samples(exp) -> None:
    """ConfigError when the merge and symmetrize steps would refuse the grid given in the
    config (some sample's Laue operators do not map voxel centres onto voxel centres):
    refused now by their own check (grid.check_grid_symmetry), not after every transform.
    The merge's statistics need it too, so reduction.merge.symmetrize: false does not help.
    Axes that define_grid derives from the data are left to define_grid."""
    given = GridParams.from_config(exp.raw).grid
    if not given:
        return
    unknown = Axis(-1.0, 1.0, 3)  # (stands in for a derived axis: never checked)
    grid = Grid(*(Axis.from_limits(*given[a]) if a in given else unknown for a in AXES))
    for name, sample in exp.samples.items():
        crystal = sample.crystal
        try:
            check_grid_symmetry(grid, crystal.laue_operators, f"{crystal.laue_group} (space "
                                f"group {crystal.hm}) of sample {name}", known="".join(given))
        except GridSymmetryError as exc:
            raise ConfigError(f"{' + '.join(exp.sources)}: field 'reduction.transform.grid': "
                              f"{exc} (every merge would refuse this grid: its statistics "
                              "compare symmetry-equivalent voxels)") from None


def check_pdf_holes(exp) -> None:
    """ConfigError when the 3D-DeltaPDF's holes (reduction.pdf.radius) reach the nearest
    reflections of a sample: each hole then covers its neighbours' centres, nothing is left
    to fill it from, and the fill's systems grow with the radius cubed (radius 50 once asked
    for 18 GB): refused now, not by the OOM killer.  Holes that merely touch are allowed,
    with delta_pdf's warning (a 20 A cell's reflections are 0.31 1/A apart)."""
    if not exp.reduction["pdf"]["enabled"]:
        return
    pdf = PDFParams.from_config(exp.raw)
    for name, sample in exp.samples.items():
        radius = pdf.hole_radius(sample.crystal.cell)
        spacing = sample.crystal.nearest_reflection_spacing()
        if radius >= spacing:
            raise ConfigError(
                f"{' + '.join(exp.sources)}: field 'reduction.pdf.radius': holes of "
                f"{radius:.3g} 1/A reach past sample {name}'s nearest reflections, "
                f"{spacing:.3g} 1/A apart: nothing would be left to fill them from: expected a "
                f"radius below {spacing:.3g} 1/A (below {spacing / 2:.3g} the holes do not touch)")


def grid_voxels_bound(exp) -> int:
    """Most voxels a grid of this experiment can have (the given axes times the derived bound)."""
    grid = GridParams.from_config(exp.raw)
    if all(a in grid.grid for a in "hkl"):
        return math.prod(grid.axis_points(a) for a in "hkl")
    return int(grid.max_voxels)


def made_volumes(exp) -> list[str]:
    """The merged and symmetrised volumes the config makes at every temperature, by name
    (files.outputs.VOLUME's {volume})."""
    symmetrize = exp.reduction["merge"]["symmetrize"]
    return [name for kind in exp.reduction["transform"]["kinds"]
            for name in ((kind, f"{kind}_symmetrized") if symmetrize else (kind,))]


def delta_pdf_files(exp) -> dict[str, str]:
    """The 3D-DeltaPDF files of a temperature (files.outputs.DELTA_PDF's {pdf}) -> the kind
    each is made of: pdf.nxs of masked_transform (of transform when that is the only kind
    listed in reduction.pdf.delta_pdf_of); transform_pdf.nxs the unmasked transform's own,
    when both are listed."""
    of = exp.reduction["pdf"]["delta_pdf_of"]
    files = {"pdf": "masked_transform" if "masked_transform" in of else "transform"}
    if files["pdf"] == "masked_transform" and "transform" in of:
        files["transform_pdf"] = "transform"
    return files


def model_input_volumes(exp) -> list[str]:
    """The volumes whose model inputs are written (output.model_input_volumes; [] without
    output.model_inputs).  Its default (null): the symmetrised masked_transform, the
    diffuse scattering a model is refined against, or the nearest volume the config makes."""
    output = exp.raw["output"]
    if not output["model_inputs"]:
        return []
    if output["model_input_volumes"] is not None:
        return list(output["model_input_volumes"])
    kinds = exp.reduction["transform"]["kinds"]
    kind = "masked_transform" if "masked_transform" in kinds else kinds[0]
    return [f"{kind}_symmetrized" if exp.reduction["merge"]["symmetrize"] else kind]


def check_model_input_volumes(exp) -> None:
    """ConfigError naming a volume of output.model_input_volumes that the config does not
    make (its model inputs would wait for a file no rule writes), or model inputs asked of
    volumes without their variance (the programs weight by 1/sigma: every export would fail
    after the transforms, sums and merges ran)."""
    programs = exp.raw["output"]["model_inputs"]
    if programs and not exp.reduction["transform"]["variance"]:
        raise ConfigError(f"{' + '.join(exp.sources)}: field 'output.model_inputs': "
                          f"{list(programs)} weight by 1/sigma, but reduction.transform."
                          "variance is false (no volume has a variance): expected "
                          "reduction.transform.variance: true, or output.model_inputs: []")
    made = made_volumes(exp)
    for i, name in enumerate(model_input_volumes(exp)):
        if name not in made:
            why = ("reduction.merge.symmetrize is false" if name.endswith("_symmetrized")
                   and name.removesuffix("_symmetrized") in exp.reduction["transform"]["kinds"]
                   else f"{name.removesuffix('_symmetrized')} is not among "
                        "reduction.transform.kinds")
            raise ConfigError(f"{' + '.join(exp.sources)}: field 'output.model_input_volumes."
                              f"{i}': {name} is not made ({why}): expected one of {made}")


def _made_once(method):
    """A JobSettings method whose text is made once per arguments (a sample's, a
    calibration's) and then reused: a plan asks for it once per job, thousands of times, and
    the experiment does not change."""

    @functools.wraps(method)
    def text(self, *args):
        key = (method.__name__, *args)
        made = self._texts.get(key)
        if made is None:
            made = self._texts[key] = method(self, *args)
        return made

    return text


class JobSettings:
    """What every rule's jobs receive through ``params: settings``: the resolved settings
    each step uses (hklflow.settings.params declares which config keys), as one JSON text per job
    (the workflow passes it as a file: SettingsFiles).  A setting that changes changes the
    text of exactly the jobs that use it, and Snakemake reruns them and what depends on
    them.  The Snakefile and the tests use this one map.  set_aside: the rows `hklflow run`
    left out (hklflow.planning.config.set_aside_rows), named in the settings of the jobs at
    their temperature only."""

    def __init__(self, exp, set_aside=()):
        self.exp = exp
        self._set_aside = {}
        for r in set_aside:
            self._set_aside.setdefault((r["sample"], r["temperature"]), []).append(r["line"])
        self._texts = {}  # (method, args) -> text (_made_once)
        cfg = exp.raw
        self.detector = exp.instrument.detector
        self._ingest = IngestParams.from_config(cfg)
        self._goniometer = GoniometerParams.of(exp.instrument.goniometer)
        self._peaks = PeakSearchParams.from_config(cfg)
        self._indexing = IndexingParams.from_config(cfg)
        self._refinement = RefinementParams.from_config(cfg)
        self._mask = MaskParams.from_config(cfg)
        self._grid = GridParams.from_config(cfg)
        self._transform = TransformParams.from_config(cfg)
        self._pictures = SliceParams.from_config(cfg)
        self._statistics = StatisticsParams.from_config(cfg)
        self._series = SeriesParams.from_config(cfg)
        self._model_inputs = ModelInputsParams.from_config(cfg)
        self._wrapper = NXRefineWrapperParams.from_config(cfg)
        self._pdf = PDFParams.from_config(cfg)
        self._total_pdf = TotalPDFParams.from_config(cfg)
        self._pdf_series = PDFSeriesParams(dict(self._pdf.slices[0]))

    def _sample(self, sample: str) -> SampleParams:
        return self.exp.samples[sample].params

    def _left_out(self, sample: str, temperature_label: str) -> SetAsideParams:
        return SetAsideParams(tuple(self._set_aside.get((sample, temperature_label), ())))

    @_made_once
    def calibrate_powder(self, calibration: str) -> str:
        return settings_json(CalibrationParams.for_calibration(self.exp.raw, calibration))

    def ingest_scan(self, sample: str, temperature_label: str, entry: str) -> str:
        scan = self.exp.scan(sample, temperature_label, entry)
        return settings_json(ScanParams.of(scan), self._goniometer, self._ingest)

    def scan_block(self, sample: str, temperature_label: str, entry: str, stop: int) -> str:
        """The ingest settings of a scan of hklflow watch when its first `stop` frames had
        landed: what a block ending there depends on (rules find_peaks_block, mask_block,
        transform_block), the same while the scan is in progress and once it is complete."""
        scan = self.exp.scan(sample, temperature_label, entry)
        scan = replace(scan, nframes=stop, planned_frames=max(scan.planned_frames, scan.nframes))
        return settings_json(ScanParams.of(scan), self._goniometer, self._ingest)

    def find_peaks(self) -> str:
        return settings_json(self._peaks, self.detector)

    @_made_once
    def index_parent(self, sample: str, temperature_label: str = "") -> str:
        return settings_json(self._indexing, self._refinement, self._sample(sample),
                             self._left_out(sample, temperature_label))

    def refine_temperature(self, sample: str = "", temperature_label: str = "") -> str:
        return settings_json(self._refinement, self._left_out(sample, temperature_label))

    @_made_once
    def refine_detector(self, sample: str) -> str:
        spec = self.exp.samples[sample]
        parents = {t: spec.parent_for(self.exp.scans_of(sample, t)[0].temperature)
                   for t in self.exp.temperatures_of(sample)}
        # (refined on every temperature: made without the rows set aside at any of them)
        left_out = tuple(line for (s, _), lines in self._set_aside.items() if s == sample
                         for line in lines)
        return settings_json(self._refinement, ParentsParams(parents), SetAsideParams(left_out))

    @_made_once
    def orientation_table(self, sample: str) -> str:
        return settings_json(self._sample(sample),
                             TemperaturesParams(tuple(self.exp.temperatures_of(sample))))

    @_made_once
    def define_grid(self, sample: str, poni_of) -> str:
        """poni_of(calibration name) -> its geometry.poni.  The sample's cell and every
        detector position of its scans (a calibration and a shift) decide the grid."""
        positions = sorted({(s.calibration, s.detector_shift) for s in self.exp.scans_of(sample)})
        return settings_json(self._grid, self._sample(sample), self.detector,
                             DetectorPositionsParams(tuple(DetectorPosition(poni_of(c), shift)
                                                           for c, shift in positions)))

    def mask_scan(self) -> str:
        return settings_json(self._mask, self.detector)

    def _shape(self, sample: str) -> tuple:
        """The sample's shape as a part of the transforms' settings; none without one (the
        settings of the jobs made before shapes existed stay as they were)."""
        shape = self.exp.samples[sample].shape
        return () if shape is None else (SampleShapeParams(shape),)

    def transform_frames(self, sample: str) -> str:
        return settings_json(self._transform, self.detector, *self._shape(sample))

    def transform_background(self, sample: str) -> str:
        return self.transform_frames(sample)  # (transformed like the entry itself)

    def sum_chunks(self, sample: str) -> str:
        # the frame chunks are temporary: once they are gone, the transform jobs' settings
        # can only be checked through the job that sums them
        return settings_json(self._pictures, self._transform, self.detector,
                             *self._shape(sample))

    def scale_entries(self, sample: str = "", temperature_label: str = "") -> str:
        return settings_json(ScalingParams.from_config(self.exp.raw),
                             self._left_out(sample, temperature_label))

    def merge_entries(self, kind: str, sample: str = "", temperature_label: str = "") -> str:
        # the statistics leave out the transform's Bragg nodes (the masked kind has none)
        return settings_json(self._pictures, self._statistics if kind == "transform"
                             else StatisticsParams(0.0), self._left_out(sample, temperature_label),
                             # (scans hklflow watch has not included yet: a preview)
                             WaitingParams(self.exp.waiting_of(sample, temperature_label)))

    @_made_once
    def symmetrize(self, sample: str) -> str:
        return settings_json(self._pictures, self._sample(sample))

    @_made_once
    def temperature_series(self, sample: str) -> str:
        return settings_json(self._series, self._sample(sample),
                             TemperaturesParams(tuple(self.exp.temperatures_of(sample))))

    @_made_once
    def model_inputs(self) -> str:
        return settings_json(self._model_inputs)

    @_made_once
    def nxrefine_wrapper(self, sample: str) -> str:
        return settings_json(self._sample(sample), self._wrapper)

    @_made_once
    def total_pdf(self, sample: str) -> str:
        return settings_json(self._total_pdf, self._sample(sample))

    @_made_once
    def delta_pdf(self, sample: str) -> str:
        return settings_json(self._pdf, self._sample(sample))

    @_made_once
    def pdf_temperature_series(self, sample: str) -> str:
        return settings_json(self._pdf_series, self._sample(sample),
                             TemperaturesParams(tuple(self.exp.pdf_temperatures_of(sample))))


# where the workflow writes each job's settings, relative to the experiment directory (beside
# Snakemake's own records of the runs)
SETTINGS_FOLDER = ".snakemake/hklflow/settings"


class SettingsFiles:
    """Each job's settings (a JobSettings text) as a file named by the digest of its content
    (the same settings, indented), which the rule's params pass and its command reads
    (`--settings-file`; hklflow.settings.params.read_settings_file checks the name).

    The path changes exactly when the settings do, so Snakemake's params trigger reruns the
    same jobs as when the text itself was the param, while a shell command stays short to
    print and to read (a dry run prints every job's).  A file is written, atomically, the
    first time its settings are asked for in a process; every process that plans or runs a
    job (each cluster job parses the Snakefile again) writes the files its jobs need, so no
    job depends on another process having written them.  A dry run writes them too: the
    command it prints names a file one can read."""

    def __init__(self, folder: str | os.PathLike = SETTINGS_FOLDER):
        self.folder = Path(folder)
        self._paths: dict[str, str] = {}  # text -> path

    def path(self, text: str) -> str:
        path = self._paths.get(text)
        if path is None:
            # indented for a person who opens it (the same settings: keys stay sorted)
            readable = json.dumps(json.loads(text), indent=1, sort_keys=True) + "\n"
            path = str(self.folder / f"{settings_digest(readable)}.json")
            if not os.path.isfile(path):
                write_text_atomically(path, readable)  # whole or not at all
            self._paths[text] = path
        return path
