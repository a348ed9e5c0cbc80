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
    rc = run("merge_entries", ["--settings", step_settings(experiment, "merge_entries", "transform"),
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


@pytest.mark.parametrize("intensity", [True, False])
def test_sums_by_chunks_store_the_chunks_the_slab_sums_store(tmp_path, monkeypatch, intensity):
    """sum_volumes reads, adds and stores only the chunks some input holds: the same chunks,
    byte for byte, and the same counts as the slab by slab sum (what it does when the
    inputs cannot be read by chunks); inputs with and without their intensity and counted
    sums, a chunk that no input stores, a chunk stored by one input alone, edge chunks."""
    import h5py

    from hklflow.algorithms.merge.volumes import sum_volumes
    from hklflow.files.volume import VolumeReader, VolumeWriter
    from hklflow.model.grid import Axis, Grid

    grid = Grid(Axis(0, 1, 140), Axis(0, 1, 70), Axis(0, 1, 21))  # 3 x 2 x 3 chunks
    rng = np.random.default_rng(4)
    paths = []
    for i, region in enumerate([np.s_[:, 5:60, 70:], np.s_[3:19, 10:70, 70:130],
                                np.s_[17:, 64:, 0:20]]):  # the last alone at one corner
        signal = np.zeros(grid.shape, np.float32)
        weight = np.zeros(grid.shape, np.float32)
        weight[region] = rng.integers(0, 3, weight[region].shape)
        signal[region] = weight[region] * rng.random(weight[region].shape) * 100
        paths.append(tmp_path / f"e{i}.nxs")
        with VolumeWriter(paths[-1], grid, intensity=intensity or i != 1) as w:
            w.write(0, signal, weight)
            if i == 2:  # the sums not counted in its notes
                w.notes = {}
    import hklflow.algorithms.merge.volumes as merging
    by_chunks, real = [], merging._sum_by_chunks
    monkeypatch.setattr(merging, "_sum_by_chunks", lambda *a: by_chunks.append(1) or real(*a))
    notes = {}
    for way in ("chunks", "slabs"):
        if way == "slabs":
            monkeypatch.setattr(VolumeReader, "stored_chunks", lambda self: None)
        notes[way] = sum_volumes(paths, tmp_path / f"{way}.nxs", "t/300K", {"program": "test"})
    a, b = notes["chunks"], notes["slabs"]
    assert by_chunks == [1]
    assert a["measured_fraction"] == b["measured_fraction"] > 0
    assert a["weight_sum"] == b["weight_sum"]
    assert a["signal_sum"] == pytest.approx(b["signal_sum"], rel=1e-12)
    for x, y in zip(a["inputs"], b["inputs"]):
        assert x["measured_fraction"] == y["measured_fraction"]
        assert x["weight_sum"] == y["weight_sum"]
    with h5py.File(tmp_path / "chunks.nxs") as x, h5py.File(tmp_path / "slabs.nxs") as y:
        for name in ("signal_sum", "weight_sum", "data"):
            p, q = x[f"entry/transform/{name}"], y[f"entry/transform/{name}"]
            corners = [p.id.get_chunk_info(i).chunk_offset for i in range(p.id.get_num_chunks())]
            assert sorted(corners) == sorted(q.id.get_chunk_info(i).chunk_offset
                                             for i in range(q.id.get_num_chunks()))
            assert 0 < len(corners) < 18 and (16, 64, 0) in corners  # the third's alone
            for corner in corners:
                assert p.id.read_direct_chunk(corner) == q.id.read_direct_chunk(corner)


def test_statistics_of_a_merged_volume_go_into_its_notes_log_and_picture(tmp_path, caplog):
    """merge_entries's statistics (hklflow.algorithms.statistics.shells) of a merged volume with variance: in
    its notes, the log and a picture; a sigma understated twice over is flagged; the
    Bragg nodes left out within reduction.merge.statistics_bragg_radius."""
    import logging
    import math

    from hklflow.files.volume import Volume, write_volume
    from hklflow.model.crystal import Crystal, UnitCell
    from hklflow.steps.merge_entries import write_statistics

    from volume_helpers import TETRA, statistics_of_arrays

    crystal = Crystal("I 4/m m m", UnitCell(*TETRA))
    grid = small_grid()
    rng = np.random.default_rng(1)
    weight = np.full(grid.shape, 2.0, np.float32)
    true = 100.0 * weight  # a flat intensity: every equivalent the same
    for gain, flagged in ((1.0, False), (2.0, True)):
        signal = (true + rng.normal(0, np.sqrt(gain * true))).astype(np.float32)
        variance = true.astype(np.float32)  # the stated variance: gain 1
        path = tmp_path / f"gain{gain:g}.nxs"
        write_volume(path, Volume(grid, signal, weight, "transform", "t", sample(),
                                  variance=variance), {})
        with caplog.at_level(logging.INFO):
            write_statistics(path, crystal, 0.0, tmp_path / f"gain{gain:g}.png", "t", "",
                             logging.getLogger("t"))
        stats = read_volume(path).notes["statistics"]
        want = statistics_of_arrays(grid, crystal, signal, weight, variance)
        assert stats["flag"] is want.flag is flagged
        assert (tmp_path / f"gain{gain:g}.png").stat().st_size > 10_000
    assert "WARNING" in caplog.text and "chi" in caplog.text
    write_statistics(path, crystal, 2 * math.pi * 0.05, tmp_path / "holes.png", "t", "",
                     logging.getLogger("t"))
    stats = read_volume(path).notes["statistics"]
    assert stats["bragg_exclusion_inverse_angstrom"] == pytest.approx(0.05)
    assert stats["overall"]["excluded"] > 0
