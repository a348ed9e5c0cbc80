# Threads, memory (mem_mb) and run time (runtime, minutes) of every rule, derived from the
# data size - detector pixels, frames of the scan entry or of the transform job, voxels of
# the grid - so that cluster requests fit the experiment instead of a guess.  Everything
# here comes from the config and the scans table (read once at parse time): no data file is
# opened.  On a retry (profiles/slurm: retries) memory grows by half and run time doubles
# per attempt, so a job killed for memory or time is resubmitted with more.
#
# How the figures are made (measured figures and the table for a 2M detector:
# bench/README.md, "Resources"; `python bench/dryrun.py --resources` prints it for any
# detector, scan and grid):
#   * every step is one Python process with numpy, scipy, h5py, pyFAI and numba loaded:
#     BASE_MB;
#   * frames are int32 in memory (one frame: _FRAME_MB); find_peaks and transform read
#     chunk_frames at a time into one buffer; with two threads or more the transform reads
#     frames it cannot take as stored a chunk ahead (two buffers) or holds three chunks of
#     stored frames (a third of a frame each) with their Bragg masks (a quarter), and each
#     find_peaks thread the frame it searches (one frame each); counted here as four and
#     two chunks;
#   * a transform job holds signal and weight (and, with reduction.transform.variance, the
#     variance) of the whole grid in float32 for every kind it makes (8 or 12 bytes/voxel per
#     kind, bricks of 8^3 voxels, each axis padded to a multiple of 8: TRANSFORM_VOXEL_BYTES; the pixels only one kind takes in a second part whose
#     pages are mapped where a Bragg region or the punch reaches, but all of them can be)
#     and writes them slab by slab; its pixel table
#     (lab Q and corrections) peaks at ~140 bytes/pixel while pyFAI computes it;
#   * sums (sum_chunks, merge_entries) and symmetrize work slab by slab along L (~64 MB per
#     float32 array of a slab, at least 8 L planes; three arrays with the variance), whatever
#     the grid size; symmetrize holds its input volume whole (8 or 12 bytes/voxel) for cubic
#     and rhombohedral Laue groups;
#   * run times are generous on purpose (SLURM kills a job at its limit): a fixed 10 minutes
#     (start, imports, compilation caches, writing) plus the work at rates several times
#     slower than measured on one core (a shared cluster node can be far slower).
import math

from hklflow.model.geometry import detector_shape
from hklflow.base import memory
from hklflow.planning.jobs import grid_voxels_bound, scan_pixels, transform_jobs
from hklflow.settings.params import PeakSearchParams
from hklflow.planning.snakemake_compat import known_parameters

# bytes per voxel of the big arrays: hklflow.base.memory, which the steps check their room with
BASE_MB = memory.BASE_MB
_VARIANCE = bool(EXP.reduction["transform"]["variance"])
_ARRAYS = 3 if _VARIANCE else 2  # float32 arrays of a volume: signal, weight (, variance)
TRANSFORM_VOXEL_BYTES = memory.TRANSFORM_VOXEL_BYTES_PER_ARRAY * _ARRAYS
HALF_SET_VOXEL_BYTES = (memory.HALF_SET_VOXEL_BYTES if EXP.reduction["transform"]["half_sets"]
                        else 0.0)
RATE_PEAKS = 20e6  # pixel-frames per second per core (find_peaks, read included)
RATE_TRANSFORM = 10e6  # pixel-frames x sub-steps per second per core (transform, read included)
RATE_VOLUME = 1.5e6  # voxels per second read or written (decompress/compress, sums)
RATE_SYMMETRY = 15e6  # voxels x operators per second (symmetrize)
RATE_PDF = 2e6  # voxels per second (read, taper, FFT, write)
PDF_VOXEL_BYTES = memory.PDF_VOXEL_BYTES
DELTA_PDF_VOXEL_BYTES = memory.DELTA_PDF_VOXEL_BYTES
PDF_SIGMA_VOXEL_BYTES = (memory.PDF_SIGMA_VOXEL_BYTES
                         if _VARIANCE and EXP.reduction["pdf"]["errors"] else 0)
MAX_LAUE_OPERATORS = 48  # m-3m: the Laue group is not looked up at parse time

_PIXELS = scan_pixels(EXP)
_FRAME_MB = _PIXELS * 4 / 1e6  # one int32 frame
_VOXELS = grid_voxels_bound(EXP)
_GRID_MB = _VOXELS * 4 * _ARRAYS / 1e6  # signal + weight (+ variance), float32
_PLANE_MB = 4 * _VOXELS ** (2 / 3) / 1e6  # one float32 L plane of a cubic grid of _VOXELS
_SLAB_MB = max(64.0, 8 * _PLANE_MB)  # one float32 slab (volume.slab_planes)
# frames per chunk of the peak search (its "auto": ~24 MB of frames)
_PEAK_CHUNK = PeakSearchParams.from_config(EXP.raw).frames_per_chunk(_PIXELS * 4)
_TRANSFORM = EXP.reduction["transform"]
_TRANSFORM_CHUNK = int(_TRANSFORM["chunk_frames"])
_TRANSFORM_KINDS = len(_TRANSFORM["kinds"])

# per-scan figures, looked up by wildcards (dicts: a DAG of thousands of jobs asks often)
_SCANS = {(s.sample, s.temperature_label, s.entry): s for s in EXP.scans}
_CHUNKS = {k: transform_jobs(EXP, s) for k, s in _SCANS.items()}
_ENTRIES = {}
_TEMPERATURES = {}
for (_sample, _tlabel, _entry) in _SCANS:
    _ENTRIES[(_sample, _tlabel)] = _ENTRIES.get((_sample, _tlabel), 0) + 1
    _TEMPERATURES.setdefault(_sample, set()).add(_tlabel)


def _half_diagonal_px():
    rows, cols = detector_shape(EXP.instrument.detector.name)
    return math.hypot(rows, cols) / 2


_HALF_DIAGONAL_PX = _half_diagonal_px()


def transform_substeps(scan):
    """Rotation sub-steps per frame of a transform job: the config's number, or for 'auto'
    (and 'auto_per_block', whose blocks take at most as many) an estimate of
    transform.auto_subdivide (half a voxel per sub-step) for a grid whose step is one
    pixel's Q size and a beam in the middle of the detector; at most 16."""
    sub = _TRANSFORM["subdivide"]
    if sub not in ("auto", "auto_per_block"):
        return int(sub)
    move = _HALF_DIAGONAL_PX * math.radians(abs(scan.angles.step))
    return int(min(16, max(1, math.ceil(move / 0.5))))


def _frames(wildcards):
    """Frames of the job: of its frame range (transform_frames) or of its scan entry."""
    if "frames" in wildcards.keys():
        a, b = wildcards.frames.split("-")
        return int(b) - int(a)
    return _SCANS[(wildcards.sample, wildcards.temperature, wildcards.entry)].nframes


class RuleResources:
    """The threads, memory and run-time model of one rule (functions of the wildcards, and
    of the attempt for memory and run time: mem_mb(wildcards, attempt), runtime(wildcards,
    attempt), plain functions with known_parameters)."""

    def __init__(self, mem_mb, minutes, threads=1):
        self._mem_mb, self._minutes, self.threads = mem_mb, minutes, threads

        @known_parameters
        def mem_mb(wildcards, attempt):
            return int(math.ceil(self._mem_mb(wildcards) * (1.0 + 0.5 * (attempt - 1))))

        @known_parameters
        def runtime(wildcards, attempt):
            return int(math.ceil(self._minutes(wildcards) * 2 ** (attempt - 1)))

        self.mem_mb, self.runtime = mem_mb, runtime


_FIXED_MINUTES = 10


def _transform_minutes(w):
    scan = _SCANS[(w.sample, w.temperature, w.entry)]
    work = _frames(w) * _PIXELS * transform_substeps(scan) / RATE_TRANSFORM
    return _FIXED_MINUTES + work / 60 + _TRANSFORM_KINDS * _VOXELS / RATE_VOLUME / 60


RESOURCES = {
    # pyFAI geometry arrays and integrators of one image
    "calibrate_powder": RuleResources(lambda w: BASE_MB + 100 * _FRAME_MB,
                                  lambda w: _FIXED_MINUTES + 5 + 2 * _PIXELS / 1e6),
    # a few frames read back, every raw file fingerprinted
    "ingest_scan": RuleResources(lambda w: BASE_MB + 200 + 8 * _FRAME_MB, lambda w: _FIXED_MINUTES),
    # double-buffered chunks, kernel work arrays, per-pixel maps
    "find_peaks": RuleResources(lambda w: BASE_MB + (4 * _PEAK_CHUNK + 30) * _FRAME_MB,
                            lambda w: _FIXED_MINUTES + _frames(w) * _PIXELS / RATE_PEAKS / 60),
    # peak tables, least squares, figures
    "index_parent": RuleResources(lambda w: BASE_MB + 1400, lambda w: _FIXED_MINUTES + 20),
    "refine_temperature": RuleResources(lambda w: BASE_MB + 1400, lambda w: _FIXED_MINUTES + 10),
    # every temperature's peak tables at once; a fit of each temperature's size, per temperature
    "refine_detector": RuleResources(lambda w: BASE_MB + 1400 + 200 * len(_TEMPERATURES.get(w.sample, ())),
                                     lambda w: _FIXED_MINUTES + 10 * len(_TEMPERATURES.get(w.sample, ()))),
    # every temperature's orientation record (no peaks), a figure
    "orientation_table": RuleResources(lambda w: BASE_MB + 400, lambda w: _FIXED_MINUTES),
    "define_grid": RuleResources(lambda w: BASE_MB + 200 + 25 * _FRAME_MB, lambda w: _FIXED_MINUTES),
    # per-pixel maps and the Bragg region table; predicted peaks and painting per frame
    "mask_scan": RuleResources(lambda w: BASE_MB + 200 + 30 * _FRAME_MB,
                           lambda w: _FIXED_MINUTES + _frames(w) * _PIXELS / (10 * RATE_PEAKS) / 60),
    # pixel table, frames (double buffer + Bragg paint), the grid
    "transform_frames": RuleResources(
        lambda w: (BASE_MB + 40 * _FRAME_MB + (2 * _TRANSFORM_CHUNK + 1) * _FRAME_MB
                   + (_TRANSFORM_KINDS * TRANSFORM_VOXEL_BYTES + HALF_SET_VOXEL_BYTES)
                   * _VOXELS / 1e6 + 6 * _SLAB_MB),
        _transform_minutes),
    # float64 sums + one input + output, per slab; every kind: read every input, write one
    "sum_chunks": RuleResources(
        lambda w: BASE_MB + 200 + 3 * _ARRAYS * _SLAB_MB,
        lambda w: _FIXED_MINUTES + _TRANSFORM_KINDS
        * (_CHUNKS[(w.sample, w.temperature, w.entry)] + 1) * _VOXELS / RATE_VOLUME / 60),
    # orbits drawn while every entry's volume is read slab by slab (as a merge), then the
    # fit on at most max_orbits orbits of observations (~1 kB per voxel of an orbit: its
    # values, crossings and harmonics)
    "scale_entries": RuleResources(
        lambda w: BASE_MB + 400 + 3 * _ARRAYS * _SLAB_MB
        + 1e-3 * EXP.reduction["scaling"]["max_orbits"] * MAX_LAUE_OPERATORS,
        lambda w: _FIXED_MINUTES + 2 * (_ENTRIES[(w.sample, w.temperature)] + 1)
        * _VOXELS / RATE_VOLUME / 60),
    "merge_entries": RuleResources(
        lambda w: BASE_MB + 200 + 3 * _ARRAYS * _SLAB_MB,
        lambda w: _FIXED_MINUTES + (_ENTRIES[(w.sample, w.temperature)] + 1)
        * _VOXELS / RATE_VOLUME / 60),
    # slab by slab (an output slab, its input slab and the mirror one, float64 tiles);
    # cubic and rhombohedral Laue groups hold the input whole
    "symmetrize": RuleResources(
        lambda w: BASE_MB + 200 + (5 * _ARRAYS * _SLAB_MB
                                   if EXP.samples[w.sample].crystal.laue_keeps_l_planes
                                   else _GRID_MB + 3 * _ARRAYS * _SLAB_MB),
        lambda w: (_FIXED_MINUTES + 2 * _VOXELS / RATE_VOLUME / 60
                   + _VOXELS * MAX_LAUE_OPERATORS / RATE_SYMMETRY / 60)),
    # one plane per temperature, a figure
    "temperature_series": RuleResources(
        lambda w: BASE_MB + 400 + 4 * _PLANE_MB * len(_TEMPERATURES.get(w.sample, ())),
        lambda w: _FIXED_MINUTES),
    # the input read slab by slab into the half spectrum, which the FFT's input and the PDF
    # share (a volume even along each axis: into its octant, an eighth).  One thread: only
    # the FFT (scipy.fft workers) and the fill's BLAS use more, and a second thread buys far
    # less than a second core's worth (bench/pipeline.py)
    "total_pdf": RuleResources(
        lambda w: BASE_MB + 400 + (PDF_VOXEL_BYTES + PDF_SIGMA_VOXEL_BYTES) * _VOXELS / 1e6,
        lambda w: _FIXED_MINUTES + _VOXELS / RATE_PDF / 60),
    # and the fill's lookups and sparse solves of a batch; the filled volume is written and
    # dropped before the spectrum is made
    "delta_pdf": RuleResources(
        lambda w: BASE_MB + 1000 + (DELTA_PDF_VOXEL_BYTES + PDF_SIGMA_VOXEL_BYTES) * _VOXELS / 1e6,
        lambda w: _FIXED_MINUTES + 3 * _VOXELS / RATE_PDF / 60),
    # one plane of each temperature's PDF, read alone (as temperature_series)
    "pdf_temperature_series": RuleResources(
        lambda w: BASE_MB + 400 + 4 * _PLANE_MB * len(_TEMPERATURES.get(w.sample, ())),
        lambda w: _FIXED_MINUTES),
    # parameters, peak tables and grid axes copied; every array is linked, none read
    "nxrefine_wrapper": RuleResources(lambda w: BASE_MB + 200, lambda w: _FIXED_MINUTES),
    # the volume read whole (signal, weight, variance), float64 slabs of the files written
    "model_inputs": RuleResources(lambda w: BASE_MB + 200 + _GRID_MB + 6 * _SLAB_MB,
                                  lambda w: _FIXED_MINUTES + 4 * _VOXELS / RATE_VOLUME / 60),
    # the part of the volume a cut reaches (the whole of it at most: signal, weight,
    # variance), float64 coordinates of 16 L planes at a time when binned over a width
    "cut": RuleResources(lambda w: BASE_MB + 600 + _GRID_MB + 6 * _SLAB_MB,
                         lambda w: _FIXED_MINUTES + 2 * _VOXELS / RATE_VOLUME / 60),
    # a line's cut file of every temperature, a figure
    "cut_temperature_series": RuleResources(lambda w: BASE_MB + 200, lambda w: _FIXED_MINUTES),
    # notes and small tables of every file (no volume's arrays), the logs' text
    "experiment_page": RuleResources(lambda w: BASE_MB + 200, lambda w: _FIXED_MINUTES),
}
