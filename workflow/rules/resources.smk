# Threads, memory (mem_mb) and run time (runtime, minutes) of every rule, derived from the
# data size - detector pixels, frames of the scan entry or of the transform job, voxels of
# the grid - so that cluster requests fit the experiment instead of a guess.  Everything
# here comes from the config and the scans table (read once at parse time): no data file is
# opened.  On a retry (profiles/slurm: retries) memory grows by half and run time doubles
# per attempt, so a job killed for memory or time is resubmitted with more.
#
# What one job asks for, first attempt (third attempt: memory x2, run time x4), for a Pilatus
# CdTe 2M (1679 x 1475 px) scan of 3650 frames of 0.1 deg (the default split: 5 transform jobs
# of 730 frames, 4 rotation sub-steps per frame), 3 entries, on a grid of at most 401^3 / 801^3
# voxels (reduction.transform.max_voxels, or the grid given in the config):
#   rule                mem_mb 401^3 / 801^3     runtime (min) 401^3 / 801^3
#   calibrate_powder    1591                     20
#   ingest_scan          880                     10
#   find_peaks          1532                     18      (~2 min of work on one core)
#   index_parent        2000                     30
#   refine_scan         2000                     20
#   define_grid         1048                     10
#   mask_scan           1098                     11
#   transform_chunk     2288 / 6333              23 / 28 (~4 min of work on one core)
#   sum_chunks          1184                     15 / 45 (5 inputs)
#   merge_entries       1184                     13 / 33 (3 entries)
#   symmetrize          1700 / 5296              15 / 49
#   temperature_series  1006                     10
# A small scan (Pilatus 300k, 360 frames): find_peaks 714 MB / 11 min, transform_chunk
# 1653 MB / 12 min (the 401^3 grid bound dominates).  `python bench/dryrun.py --resources`
# prints this table for any detector, scan and grid size.
#
# How the figures are made (measure again with benchmarks/<rule>/*.tsv, column max_rss, and
# bench/transform.py when a step changes how it holds its data):
#   * every step is one Python process with numpy, scipy, h5py, pyFAI and numba loaded:
#     BASE_MB;
#   * frames are int32 in memory (FRAME_MB each); find_peaks and transform read
#     chunk_frames at a time, double-buffered (the next chunk is read while one is worked on);
#   * a transform job holds signal and weight of the whole grid in float32 (8 bytes/voxel,
#     bricks of 8^3 voxels, each axis padded to a multiple of 8: TRANSFORM_VOXEL_BYTES = 9)
#     and writes it slab by slab; its pixel table (lab Q and corrections) peaks at ~140
#     bytes/pixel while pyFAI computes it;
#   * sum_volumes (sum_chunks, merge_entries) works slab by slab along L (hklflow.volume
#     .slab_planes: ~64 MB per float32 array, at least 8 L planes), whatever the grid size;
#     symmetrize holds its input volume whole (8 bytes/voxel) plus slabs;
#   * measured (benchmarks/, max_rss): light steps 160-220 MB (so BASE_MB leaves room);
#     tiny experiment (Pilatus 300k, 58.8M-voxel grid) find_peaks 349 MB, mask_scan 345 MB,
#     transform_chunk 823 MB, sum_chunks 446 MB, symmetrize 880 MB; on a 2M detector: peak
#     search 504 MB at 200 and at 800 frames (bench/find_peaks.py), a transform job on a
#     57M-voxel grid (476 MB) 1005 MB (bench/transform.py's setup, 48 frames);
#   * run times are generous on purpose (SLURM kills a job at its limit): a fixed 10 minutes
#     (start, imports, compilation caches, writing) plus the work at rates several times
#     slower than measured on one core, reading included (peak search ~140 Mpixel/s,
#     transform ~140 Mpixel/s per rotation sub-step on a 71 M-voxel grid; bench/find_peaks.py,
#     bench/transform.py; a shared cluster node can be far slower than that machine).
import math

from hklflow.geometry import detector_shape
from hklflow.jobs import grid_voxels_bound, scan_pixels, transform_frame_ranges

BASE_MB = 600
TRANSFORM_VOXEL_BYTES = 9
RATE_PEAKS = 20e6  # pixel-frames per second per core (find_peaks, read included)
RATE_TRANSFORM = 10e6  # pixel-frames x sub-steps per second per core (transform, read included)
RATE_VOLUME = 1.5e6  # voxels per second read or written (decompress/compress, sums)
RATE_SYMMETRY = 15e6  # voxels x operators per second (symmetrize)
MAX_LAUE_OPERATORS = 48  # m-3m: the Laue group is not looked up at parse time

_PIXELS = scan_pixels(EXP)
_FRAME_MB = _PIXELS * 4 / 1e6  # one int32 frame
_VOXELS = grid_voxels_bound(EXP)
_GRID_MB = _VOXELS * 8 / 1e6  # signal + weight, float32
_PLANE_MB = 4 * _VOXELS ** (2 / 3) / 1e6  # one float32 L plane of a cubic grid of _VOXELS
_SLAB_MB = max(64.0, 8 * _PLANE_MB)  # one float32 slab (volume.slab_planes)
_PEAK_CHUNK = int(EXP.reduction["find_peaks"]["chunk_frames"])
_TRANSFORM = EXP.reduction["transform"]
_TRANSFORM_CHUNK = int(_TRANSFORM["chunk_frames"])

# per-scan figures, looked up by wildcards (dicts: a DAG of thousands of jobs asks often)
_SCANS = {(s.sample, s.temperature_label, s.entry): s for s in EXP.scans}
_CHUNKS = {k: len(transform_frame_ranges(EXP, s)) for k, s in _SCANS.items()}
_ENTRIES = {}
_TEMPERATURES = {}
for (_sample, _tlabel, _entry) in _SCANS:
    _ENTRIES[(_sample, _tlabel)] = _ENTRIES.get((_sample, _tlabel), 0) + 1
    _TEMPERATURES.setdefault(_sample, set()).add(_tlabel)


def _half_diagonal_px():
    rows, cols = detector_shape(EXP.instrument.detector)
    return math.hypot(rows, cols) / 2


_HALF_DIAGONAL_PX = _half_diagonal_px()


def transform_substeps(scan):
    """Rotation sub-steps per frame of a transform job: the config's number, or for 'auto'
    an estimate of transform.auto_subdivide (half a voxel per sub-step) for a grid whose step
    is one pixel's Q size and a beam in the middle of the detector; at most 16."""
    sub = _TRANSFORM["subdivide"]
    if sub != "auto":
        return int(sub)
    move = _HALF_DIAGONAL_PX * math.radians(abs(scan.angles.step))
    return int(min(16, max(1, math.ceil(move / 0.5))))


def _frames(wildcards):
    """Frames of the job: of its frame range (transform_chunk) or of its scan entry."""
    if "frames" in wildcards.keys():
        a, b = wildcards.frames.split("-")
        return int(b) - int(a)
    return _SCANS[(wildcards.sample, wildcards.temperature, wildcards.entry)].nframes


def _mem_mb(name, wildcards):
    if name == "calibrate_powder":  # pyFAI geometry arrays and integrators of one image
        return BASE_MB + 100 * _FRAME_MB
    if name == "ingest_scan":  # a few frames read back
        return BASE_MB + 200 + 8 * _FRAME_MB
    if name == "find_peaks":  # double-buffered chunks, kernel work arrays, per-pixel maps
        return BASE_MB + (4 * _PEAK_CHUNK + 30) * _FRAME_MB
    if name in ("index_parent", "refine_scan"):  # peak tables, least squares, figures
        return BASE_MB + 1400
    if name == "define_grid":
        return BASE_MB + 200 + 25 * _FRAME_MB
    if name == "mask_scan":  # per-pixel maps and the Bragg region table
        return BASE_MB + 200 + 30 * _FRAME_MB
    if name == "transform_chunk":  # pixel table, frames (double buffer + Bragg paint), grid
        return (BASE_MB + 40 * _FRAME_MB + (2 * _TRANSFORM_CHUNK + 1) * _FRAME_MB
                + TRANSFORM_VOXEL_BYTES * _VOXELS / 1e6 + 6 * _SLAB_MB)
    if name in ("sum_chunks", "merge_entries"):  # float64 sums + one input + output, per slab
        return BASE_MB + 200 + 6 * _SLAB_MB
    if name == "symmetrize":  # the input whole + slabs
        return BASE_MB + 200 + _GRID_MB + 6 * _SLAB_MB
    if name == "temperature_series":  # one plane per temperature, a figure
        return BASE_MB + 400 + 4 * _PLANE_MB * len(_TEMPERATURES.get(wildcards.sample, ()))
    raise KeyError(f"no memory model for rule {name}")


def _minutes(name, wildcards):
    fixed = 10
    if name == "calibrate_powder":
        return fixed + 5 + 2 * _PIXELS / 1e6
    if name in ("ingest_scan", "define_grid"):
        return fixed
    if name == "find_peaks":
        return fixed + _frames(wildcards) * _PIXELS / RATE_PEAKS / 60
    if name == "index_parent":
        return fixed + 20
    if name == "refine_scan":
        return fixed + 10
    if name == "mask_scan":  # predicted peaks and painting per frame
        return fixed + _frames(wildcards) * _PIXELS / (10 * RATE_PEAKS) / 60
    if name == "transform_chunk":
        scan = _SCANS[(wildcards.sample, wildcards.temperature, wildcards.entry)]
        work = _frames(wildcards) * _PIXELS * transform_substeps(scan) / RATE_TRANSFORM
        return fixed + work / 60 + _VOXELS / RATE_VOLUME / 60
    if name == "sum_chunks":  # read every input, write one
        key = (wildcards.sample, wildcards.temperature, wildcards.entry)
        return fixed + (_CHUNKS[key] + 1) * _VOXELS / RATE_VOLUME / 60
    if name == "merge_entries":
        n = _ENTRIES[(wildcards.sample, wildcards.temperature)]
        return fixed + (n + 1) * _VOXELS / RATE_VOLUME / 60
    if name == "symmetrize":
        return (fixed + 2 * _VOXELS / RATE_VOLUME / 60
                + _VOXELS * MAX_LAUE_OPERATORS / RATE_SYMMETRY / 60)
    if name == "temperature_series":
        return fixed
    raise KeyError(f"no run time model for rule {name}")


def rule_threads(name):
    """Every step is one process on one core: a scan is spread over jobs, not threads."""
    return 1


def rule_mem_mb(name):
    def mem_mb(wildcards, attempt):
        return int(math.ceil(_mem_mb(name, wildcards) * (1.0 + 0.5 * (attempt - 1))))

    return mem_mb


def rule_runtime(name):
    def runtime(wildcards, attempt):
        return int(math.ceil(_minutes(name, wildcards) * 2 ** (attempt - 1)))

    return runtime
