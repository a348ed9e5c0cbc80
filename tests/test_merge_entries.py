"""Step merge_entries: the volume of a sample at one temperature, its entries' volumes
merged (signal and weight added voxel by voxel: the gaps of one entry are filled by the
others, overlaps are weighted means)."""
from __future__ import annotations

import numpy as np
import pytest

from hklflow.files.volume import read_volume, read_volume_header

from conftest import step_settings
from volume_helpers import make_experiment, run, sample, small_grid, write_inputs


@pytest.fixture
def experiment(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return make_experiment(tmp_path)


def test_merge_entries_command_fills_the_gaps_of_one_entry_with_the_others(experiment):
    grid = small_grid()
    entries = write_inputs(experiment, grid, 3, sample_=sample(name="tetra"))
    rc = run("merge_entries", ["--settings", step_settings(experiment, "merge_entries"),
                               "--title", "tetra/300K", "--inputs", *entries,
                               "--out", "out/merged.nxs", "--png", "out/merged.png"])
    assert rc == 0
    merged = read_volume(experiment / "out/merged.nxs")
    parts = [read_volume(p) for p in entries]
    s = np.sum([p.signal.astype(np.float64) for p in parts], axis=0)
    w = np.sum([p.weight.astype(np.float64) for p in parts], axis=0)
    np.testing.assert_allclose(merged.weight, w, rtol=1e-6)
    np.testing.assert_allclose(merged.intensity()[w > 0], (s / np.where(w > 0, w, 1))[w > 0],
                               rtol=1e-5)
    assert np.count_nonzero(merged.weight) > np.count_nonzero(parts[0].weight)
    assert merged.title == "tetra/300K" and len(merged.notes["inputs"]) == 3
    assert read_volume_header(experiment / "out/merged.nxs").sample["name"] == "tetra"
    assert (experiment / "out/merged.png").stat().st_size > 10_000
