"""hklflow.algorithms.merge.volumes: volume files summed (sum_volumes: exact and in any
order, slab by slab or chunk by chunk, the same chunks stored either way) and symmetrised
slab by slab (symmetrize_file: bit for bit the whole array's symmetrisation), on small
random volumes (tests/volume_helpers.py)."""
from __future__ import annotations

import numpy as np
import pytest

from hklflow.algorithms.merge.symmetry import symmetrize_arrays
from hklflow.files.volume import read_volume, read_volume_header, write_volume
from hklflow.model.crystal import Crystal, UnitCell
from hklflow.model.grid import Axis, Grid

from volume_helpers import GROUPS, random_volume, sample, small_grid, write_inputs


@pytest.mark.parametrize("symbol,grid", [
    ("P 6/m m m", Grid(Axis(-3.0, 0.25, 25), Axis(-3.0, 0.25, 25), Axis(-2.5, 0.25, 19))),
    ("I 4/m m m", Grid(Axis(-2.0, 0.25, 17), Axis(-2.0, 0.25, 17), Axis(-3.0, 0.25, 21))),
    ("P m m m", Grid(Axis(-2.0, 0.25, 17), Axis(-1.5, 0.5, 7), Axis(-2.625, 0.25, 22))),
    ("C 1 2/c 1", Grid(Axis(-1.05, 0.1, 30), Axis(-1.0, 0.25, 7), Axis(-1.0, 0.2, 17))),
    ("P -3", Grid(Axis(-2.0, 0.25, 17), Axis(-2.0, 0.25, 17), Axis(0.0, 0.5, 9))),
    ("R -3 m:R", Grid(Axis(-2.0, 0.5, 9), Axis(-2.0, 0.5, 9), Axis(-2.0, 0.5, 9))),
    ("F m -3 m", Grid(Axis(-2.0, 0.5, 9), Axis(-2.0, 0.5, 9), Axis(-2.0, 0.5, 9))),
])
def test_file_symmetrised_slab_by_slab_equals_the_whole(tmp_path, symbol, grid):
    """Groups that keep L planes apart (all but cubic and rhombohedral) are symmetrised slab
    by slab, each slab from its own planes and their mirror image: the same volume, bit for
    bit, as the whole-array kernel, whatever the slab size (grids not symmetric in L
    included: mirrors outside the grid add nothing; an even number of L planes too, whose
    mirror slabs are written out of step with the file's L chunks)."""
    from hklflow.algorithms.merge.symmetry import index_maps, l_separable
    from hklflow.algorithms.merge.volumes import symmetrize_file

    crystal = Crystal(symbol, UnitCell(*GROUPS[symbol]))
    separable = l_separable(index_maps(grid, crystal.laue_operators))
    assert separable == (symbol not in ("R -3 m:R", "F m -3 m"))
    vol = random_volume(grid, 3, gap=0.25, sample_=sample(symbol, GROUPS[symbol], "x"))
    write_volume(tmp_path / "in.nxs", vol, {})
    s, w = symmetrize_arrays(vol.signal, vol.weight, grid, crystal.laue_operators)
    for planes in (1, 3, 8, 64):
        notes = symmetrize_file(tmp_path / "in.nxs", tmp_path / f"out{planes}.nxs", crystal, {},
                                planes=planes)
        out = read_volume(tmp_path / f"out{planes}.nxs")
        assert notes["slab_by_slab"] == separable
        np.testing.assert_array_equal(out.signal, s)
        np.testing.assert_array_equal(out.weight, w)
        assert notes["measured_fraction_before"] == pytest.approx(np.mean(vol.weight > 0))


def test_sum_is_exact_and_order_independent(tmp_path):
    from hklflow.algorithms.merge.volumes import sum_volumes

    grid = small_grid()
    paths = write_inputs(tmp_path, grid, 4)
    vols = [read_volume(p) for p in paths]
    expect_s = np.sum([v.signal.astype(np.float64) for v in vols], axis=0)
    expect_w = np.sum([v.weight.astype(np.float64) for v in vols], axis=0)
    notes = sum_volumes(paths, tmp_path / "sum.nxs", "S/300K", {"program": "test"}, planes=8)
    sum_volumes(paths[::-1], tmp_path / "rev.nxs", "S/300K", {"program": "test"}, planes=16)
    s, r = read_volume(tmp_path / "sum.nxs"), read_volume(tmp_path / "rev.nxs")
    assert s.signal.dtype == np.float32 and s.grid.same_as(grid)
    np.testing.assert_allclose(s.signal, expect_s, rtol=1e-6)
    np.testing.assert_allclose(s.weight, expect_w, rtol=1e-6)
    np.testing.assert_array_equal(s.signal, r.signal)  # float64 sums: order does not matter
    np.testing.assert_array_equal(s.weight, r.weight)
    # the gaps of one input are filled by the others: intensity = summed signal / summed weight
    gaps = vols[0].weight == 0
    assert np.count_nonzero(gaps & (s.weight > 0)) > 0.9 * np.count_nonzero(gaps)
    np.testing.assert_allclose(s.intensity()[s.weight > 0],
                               (expect_s / np.where(expect_w > 0, expect_w, 1))[s.weight > 0],
                               rtol=1e-5)
    assert np.all(np.isnan(s.intensity()[s.weight == 0]))
    assert s.title == "S/300K" and s.kind == "transform" and s.sample["name"] == "xtal"
    assert read_volume_header(tmp_path / "sum.nxs").notes == s.notes
    assert s.sample["space_group"] == "I 4/m m m"
    assert [i["path"] for i in s.notes["inputs"]] == [str(p) for p in paths]
    assert [i["title"] for i in s.notes["inputs"]] == ["part0", "part1", "part2", "part3"]
    assert notes["measured_fraction"] == pytest.approx(np.mean(expect_w > 0))
    assert notes["inputs"][0]["measured_fraction"] == pytest.approx(np.mean(~gaps))


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
