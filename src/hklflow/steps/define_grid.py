"""Step define_grid: the (H, K, L) grid of a sample, one for every temperature and entry of
the sample so that their volumes add and compare voxel by voxel (hklflow.model.grid).

Axes given in reduction.transform.grid are kept; the others are derived from the sample's
cell (config) and the detector: limits from the largest Q any of the sample's scans reaches,
steps 1/m no larger than one pixel in Q, coarsened to stay within max_voxels.  A grid the
sample's Laue group does not map onto itself is refused here, before any transform: every
merge would refuse it (its statistics compare symmetry-equivalent voxels).
"""
from __future__ import annotations

import numpy as np

from ..base.errors import ConfigError
from ..files.grid import write_grid_file
from ..files.provenance import provenance
from ..model.geometry import DetectorGeometry
from ..model.grid import AXES, GridSymmetryError, check_grid_symmetry, default_grid, q_range
from ..settings.params import (DetectorParams, DetectorPositionsParams, GridParams, SampleParams,
                               settings_part)
from ._run import StepParser, run_step


def parser() -> StepParser:
    p = StepParser("define_grid", __doc__)
    p.add_settings()
    p.add_output("--out", "grid.json to write")
    return p


def run(args, log) -> None:
    s = args.settings
    params = settings_part(s, GridParams)
    sample = settings_part(s, SampleParams)
    detector = settings_part(s, DetectorParams)
    positions = settings_part(s, DetectorPositionsParams).detector_positions
    cell = sample.unit_cell()
    detectors = [DetectorGeometry.from_poni_file(p.poni, detector.name,
                                                 detector.orientation).shifted(*p.shift)
                 for p in positions]
    q_max, q_pixel = q_range(detectors)
    grid, how = default_grid(cell, q_max, q_pixel, params.max_voxels, params.grid)
    check_symmetry(grid, how, sample, params.grid)
    write_grid_file(args.out, grid, {
        "sample": sample.name, "cell": list(cell.parameters), "q_max": q_max,
        "q_pixel": q_pixel, "how": how,
        "provenance": provenance("hklflow define_grid", s, inputs=[p.poni for p in positions])})
    log.info("%s: %s", sample.name, grid.describe())
    for axis, text in how.items():
        log.info("  %s: %s", axis, text)
    log.info("memory of a transform job: %.2f GB for signal and weight (float32)", grid.size * 8 / 1e9)


def check_symmetry(grid, how: dict, sample, given: dict) -> None:
    """ConfigError when the sample's Laue operators do not map the grid's voxel centres
    onto voxel centres: the merge's message, now (the config's check at parse time cannot
    see an axis derived here, e.g. a derived K against a given H's step)."""
    crystal = sample.crystal()
    try:
        check_grid_symmetry(grid, crystal.laue_operators,
                            f"{crystal.laue_group} (space group {crystal.hm}) of sample {sample.name}")
    except GridSymmetryError as exc:
        ops = np.round(np.asarray(crystal.laue_operators)).astype(int)
        mixed = {AXES[i] for R in ops for i in range(3) for j in range(3) if i != j and R[i, j]}
        derived = [a for a in AXES if a in mixed and a not in given]
        raise ConfigError(
            f"field 'reduction.transform.grid': {exc}"
            + (f"; {', '.join(a.upper() for a in derived)} derived here from the data ("
               + "; ".join(f"{a.upper()} {how[a]}" for a in derived)
               + "): give every axis the operators mix in reduction.transform.grid, or none"
               if derived and given else "")
            + " (every merge would refuse this grid: its statistics compare "
            "symmetry-equivalent voxels)") from None


def main(argv=None) -> int:
    return run_step(parser(), run, argv)
