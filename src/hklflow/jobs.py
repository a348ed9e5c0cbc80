"""How the work of an experiment is cut into jobs, from the config and scans table alone
(the Snakefile calls these at parse time, so nothing here reads data files)."""
from __future__ import annotations

import math

from .geometry import detector_shape


def scan_pixels(exp) -> int:
    rows, cols = detector_shape(exp.instrument.detector)
    return rows * cols


def frames_per_transform_job(exp) -> int:
    cfg = exp.reduction["transform"]
    if cfg["frames_per_job"]:
        return int(cfg["frames_per_job"])
    return max(1, int(cfg["pixel_frames_per_job"] // scan_pixels(exp)))


def transform_frame_ranges(exp, scan) -> list[tuple[int, int]]:
    """[(first, stop)) frame ranges of the transform jobs of a scan entry: the scan split into
    the fewest jobs of at most frames_per_transform_job frames, as equal as possible."""
    n = scan.nframes
    njobs = max(1, math.ceil(n / frames_per_transform_job(exp)))
    bounds = [round(i * n / njobs) for i in range(njobs + 1)]
    return list(zip(bounds[:-1], bounds[1:]))


def grid_voxels_bound(exp) -> int:
    """Most voxels a grid of this experiment can have (the given axes times the derived bound)."""
    cfg = exp.reduction["transform"]
    given = cfg["grid"]
    if all(a in given for a in "hkl"):
        return math.prod(int(math.floor((b - a) / s + 1e-6)) + 1 for a, b, s in given.values())
    return int(cfg["max_voxels"])


def snakemake_job_counts(output: str) -> dict:
    """rule -> jobs, from the 'Job stats' table Snakemake prints for a run or dry run."""
    import re

    counts = {}
    table = output[output.index("Job stats:"):]
    for line in table.splitlines()[3:]:
        m = re.match(r"^(\w+)\s+(\d+)$", line.strip())
        if not m:
            break
        counts[m.group(1)] = int(m.group(2))
    return counts
