"""The module fixture of the transform's tests: the tiny experiment's f2 entry at 100 K with
its true geometry, pixel table, a grid and its frames."""
from __future__ import annotations

import pytest

from hklflow.algorithms.transform.pixels import pixel_table
from hklflow.model.grid import Axis, Grid
from hklflow.raw.frames import open_frames

from experiment_helpers import raw, truth_scan


@pytest.fixture(scope="module")
def setup(tiny_experiment, tiny_truth):
    scan, UB, crystal = truth_scan(tiny_truth)
    table = pixel_table(scan.detector, scan.detector.detector_mask(), polarization_fraction=0.99)
    grid = Grid(Axis(-4, 0.05, 161), Axis(-4, 0.05, 161), Axis(-6, 0.1, 121))
    with open_frames(str(raw(tiny_experiment))) as st:
        frames = st.read(0, st.nframes)
    return scan, UB, crystal, table, grid, frames
