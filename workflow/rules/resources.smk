# Threads, memory and run time of every rule, derived from the data size (frames x pixels of
# the scans, grid voxels) so that cluster requests fit the experiment, not a guess.  Memory
# grows with each retry (attempt) so a job killed for memory is resubmitted with more.
import math

from hklflow.jobs import frames_per_transform_job, grid_voxels_bound, scan_pixels

_PIXELS = scan_pixels(EXP)
_VOXELS = grid_voxels_bound(EXP)
_CHUNK = EXP.reduction["find_peaks"]["chunk_frames"]


def rule_threads(name):
    return 1


def _base_mem_mb(name):
    frame_mb = _PIXELS * 4 / 1e6  # one int32 frame
    grid_mb = _VOXELS * 8 / 1e6  # float32 signal + weight
    return {
        "calibrate_powder": 1000 + 40 * frame_mb,
        "ingest_scan": 500,
        "find_peaks": 600 + 6 * _CHUNK * frame_mb,
        "index_parent": 1500,
        "refine_scan": 1500,
        "define_grid": 800,
        "mask_scan": 800 + 20 * frame_mb,
        "transform_chunk": 800 + grid_mb + 3 * _CHUNK * frame_mb + 20 * frame_mb,
        "sum_chunks": 800 + 2.5 * grid_mb,
        "merge_entries": 800 + 2.5 * grid_mb,
        "symmetrize": 800 + 3.5 * grid_mb,
        "temperature_series": 800 + grid_mb,
    }[name]


def rule_mem_mb(name):
    def mem_mb(wildcards, attempt):
        return int(math.ceil(_base_mem_mb(name) * (1.0 + 0.5 * (attempt - 1))))
    return mem_mb


def rule_runtime(name):
    """Minutes, generous: at least 10, and for per-frame steps ~1 minute per 1e9 pixel-frames
    (several times what a single core needs), doubled on each retry."""
    def runtime(wildcards, attempt):
        frames = 0
        if "entry" in wildcards.keys():
            frames = scan_of(wildcards).nframes
            if name == "transform_chunk":
                a, b = wildcards.frames.split("-")
                frames = int(b) - int(a)
        minutes = 10 + frames * _PIXELS / 1e9
        return int(math.ceil(minutes * 2 ** (attempt - 1)))
    return runtime
