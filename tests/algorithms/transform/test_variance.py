"""The transform's variance (issue 69): each voxel sums the variance of its signal, gain x
value x multiplier^2 per pixel (Poisson statistics of the raw counts carried through the
corrections), in the same pass; the signal and weight stay bit for bit what they are
without it, on any number of threads and from frames read or added as stored; slabs,
chunks and the volume files carry it (variance_sum, data_errors)."""
from __future__ import annotations

import numpy as np
import pytest

from hklflow.algorithms.transform import BrickedGrid, Transformer, frame_matrices
from hklflow.algorithms.transform import transform_frames as add_frames
from hklflow.files.volume import VolumeWriter, errors_of, read_volume
from hklflow.model.grid import Axis, Grid

from transform_reference import PaintedMask, numpy_transform

GAIN = 2.5


def test_variance_equals_the_numpy_reference_and_changes_nothing_else(setup):  # noqa: F811
    scan, UB, crystal, table, grid, frames = setup
    fr = frames[10:16]
    M = frame_matrices(scan, 10, 16, 2)
    scale = np.linspace(0.8, 1.3, 6)  # a monitor
    bragg = (np.random.default_rng(1).random((6, fr[0].size)) < 0.05).astype(np.uint8)
    kinds = ("transform", "masked_transform")
    plain = Transformer(grid, table, 2 ** 31 - 1, kinds=kinds)
    plain.add(fr, M, scale, bragg)
    tr = Transformer(grid, table, 2 ** 31 - 1, kinds=kinds, gain=GAIN, variance_from="observed")
    tr.add(fr, M, scale, bragg)
    assert tr.acc.stride == 3 and plain.acc.stride == 2
    for kind in (0, 1):
        s, w, v = tr.acc.arrays(kind)
        s0, w0 = plain.acc.arrays(kind)
        assert np.array_equal(s, s0) and np.array_equal(w, w0)
        ref_v = np.zeros(grid.shape)
        numpy_transform(fr, table, M, scale, 2 ** 31 - 1, grid,
                        bragg=bragg if kind == 1 else None, variance=ref_v, gain=GAIN)
        assert np.count_nonzero(v) > 1000
        np.testing.assert_allclose(v, ref_v, rtol=5e-6, atol=1e-6 * ref_v.max())
    with pytest.raises(ValueError, match="gain"):
        Transformer(grid, table, 2 ** 31 - 1, gain=0.0)


@pytest.mark.parametrize("variance_from", ["observed", "expected"])
def test_variance_is_the_same_on_threads_and_from_frames_as_stored(setup, tmp_path,  # noqa: F811
                                                                   variance_from):
    import h5py
    import hdf5plugin

    from hklflow.raw.frames import open_frames

    scan, UB, crystal, table, grid, frames = setup
    path = tmp_path / "f.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("/entry/data/data", data=frames[:16], chunks=(1,) + frames.shape[1:],
                         **hdf5plugin.Bitshuffle(nelems=0, cname="lz4"))
    bragg_all = (np.random.default_rng(3).random((16, frames[0].size)) < 0.05).astype(np.uint8)

    cells = []
    for stored, threads in ((False, 1), (True, 1), (True, 2)):
        with open_frames(str(path)) as st:
            st.compiled_decompression = stored
            tr = Transformer(grid, table, 2 ** 31 - 1, kinds=("transform", "masked_transform"),
                             crystal=crystal, hkl_radius=0.1, threads=threads, gain=GAIN,
                             variance_from=variance_from)
            add_frames(st, scan, tr, 0, 16, 2, np.linspace(1, 2, 16), chunk_frames=8,
                       mask=PaintedMask(bragg_all))
            tr.close()
        cells.append([x.copy() for kind in range(2) for x in tr.acc.flat(kind)])
    assert len(cells[0]) == 6 and np.count_nonzero(cells[0][2]) > 1000
    for other in cells[1:]:
        assert all(np.array_equal(a, b) for a, b in zip(cells[0], other))


@pytest.mark.parametrize("paired", [False, True])
def test_slabs_and_chunks_of_a_variance_grid_equal_its_arrays(paired):
    g = Grid(Axis(0, 1, 13), Axis(0, 1, 21), Axis(0, 1, 37))  # not multiples of the brick
    nkinds = 2 if paired else 1
    b = BrickedGrid(g, nkinds, paired=paired, variance=True)
    rng = np.random.default_rng(3)
    for part in range(nkinds):
        for x in (b.signals[part], b.weights[part], b.variances[part]):
            x[:] = rng.random(b.size)
    if paired:  # the second part starts on a page
        assert b.cells[1].ctypes.data % 4096 == 0
    whole = [b.arrays(kind) for kind in range(nkinds)]
    assert all(len(arrays) == 3 for arrays in whole)
    for l0 in range(0, 37, 8):
        for got, want in zip(b.slabs(l0, min(l0 + 8, 37)), whole):
            assert all(np.array_equal(a, c[l0:l0 + 8]) for a, c in zip(got, want))
    for l0, l1, chunks in b.chunk_rows((8, 21, 13)):
        for k0, h0, kinds in chunks:
            for (s, w, inten, v), (ws, ww, wv) in zip(kinds, whole):
                assert np.array_equal(v[:l1 - l0], wv[l0:l1])
                assert np.array_equal(s[:l1 - l0], ws[l0:l1])


@pytest.mark.parametrize("by_chunks", [False, True])
def test_volume_files_hold_the_variance_and_the_errors_of_the_intensity(tmp_path, by_chunks):
    g = Grid(Axis(-1, 0.5, 5), Axis(-2, 0.5, 9), Axis(0, 1, 12))
    rng = np.random.default_rng(0)
    signal = rng.random(g.shape).astype(np.float32) * 10
    weight = np.where(rng.random(g.shape) < 0.3, 0, rng.random(g.shape) + 0.5).astype(np.float32)
    signal[weight == 0] = 0
    variance = (signal * 0.7).astype(np.float32)
    path = tmp_path / "v.nxs"
    with VolumeWriter(path, g, "transform", variance=True) as w:
        if by_chunks:
            assert w.chunks == (8, 9, 5)
            for l0 in (0, 8):
                pad = [np.zeros((8, 9, 5), np.float32) for _ in range(3)]
                inten = np.full((8, 9, 5), np.nan, np.float32)
                n = min(8, 12 - l0)
                for p, a in zip(pad, (signal, weight, variance)):
                    p[:n] = a[l0:l0 + n]
                with np.errstate(invalid="ignore", divide="ignore"):
                    inten[:n] = np.where(pad[1][:n] > 0, pad[0][:n] / pad[1][:n], np.nan)
                w.write_chunk(l0, 0, 0, pad[0], pad[1], inten, pad[2])
                w.mark_written(l0, l0 + n)
        else:
            w.write(0, signal, weight, variance)
        with pytest.raises(ValueError, match="variance"):
            w.write(0, signal, weight)
    vol = read_volume(path)
    assert np.array_equal(vol.variance, variance)
    import h5py

    with h5py.File(path) as f:
        errors = f["entry/transform/data_errors"][()]
    expected = errors_of(variance, weight)
    assert np.isnan(errors[weight == 0]).all()
    assert np.array_equal(errors, expected, equal_nan=True)
    np.testing.assert_allclose(errors[weight > 0],
                               np.sqrt(variance[weight > 0]) / weight[weight > 0], rtol=1e-6)
    np.testing.assert_allclose(vol.errors(), expected, equal_nan=True)
    # nexusformat pairs data_errors with the signal (NeXpy's error bars)
    from nexusformat.nexus import nxload

    data = nxload(str(path))["entry/transform"]
    assert data.nxerrors is not None and data.nxerrors.nxname == "data_errors"


# ---- sums and symmetrisation -------------------------------------------------------------
def _with_variance(vol, seed):
    from hklflow.files.volume import Volume

    rng = np.random.default_rng(seed)
    variance = (vol.signal * rng.uniform(0.5, 2.0, vol.grid.shape)).astype(np.float32)
    return Volume(vol.grid, vol.signal, vol.weight, vol.kind, vol.title, vol.sample,
                  vol.notes, variance)


def test_sums_add_the_variances_and_drop_them_when_an_input_has_none(tmp_path, caplog):
    import logging

    from hklflow.algorithms.merge.volumes import sum_volumes
    from hklflow.files.volume import write_volume

    from volume_helpers import random_volume, small_grid

    grid = small_grid()
    vols = [_with_variance(random_volume(grid, s), s) for s in (1, 2, 3)]
    for i, v in enumerate(vols):
        write_volume(tmp_path / f"{i}.nxs", v, {})
    notes = sum_volumes([tmp_path / f"{i}.nxs" for i in range(3)], tmp_path / "sum.nxs", "s", {})
    out = read_volume(tmp_path / "sum.nxs")
    assert notes["variance"] is True
    want = sum(v.variance.astype(np.float64) for v in vols).astype(np.float32)
    assert np.array_equal(out.variance, want)
    plain = random_volume(grid, 4)  # (no variance)
    write_volume(tmp_path / "plain.nxs", plain, {})
    with caplog.at_level(logging.WARNING):
        notes = sum_volumes([tmp_path / "0.nxs", tmp_path / "plain.nxs"], tmp_path / "mixed.nxs",
                            "m", {}, log=logging.getLogger("t"))
    assert notes["variance"] is False and read_volume(tmp_path / "mixed.nxs").variance is None
    assert "no variance_sum" in caplog.text


@pytest.mark.parametrize("symbol", ["I 4/m m m", "P m m m", "P 6/m m m", "F m -3 m"])
def test_symmetrised_variance_counts_each_distinct_equivalent_by_its_multiplicity(tmp_path,
                                                                                   symbol):
    """The symmetrised signal at voxel i is sum_o x(i A_o + c_o); a voxel on a mirror plane
    or an axis meets some equivalents several times (the same counts), so its variance is
    sum over distinct equivalents y of m(i, y)^2 var(y): brute force over the operators,
    for the flips (tetragonal, orthorhombic) and the gather kernel (hexagonal, cubic)."""
    from hklflow.algorithms.merge.symmetry import index_maps, stabilizer_counts
    from hklflow.algorithms.merge.volumes import symmetrize_file
    from hklflow.files.volume import write_volume
    from hklflow.model.crystal import Crystal, UnitCell

    from volume_helpers import GROUPS, random_volume, sample

    grid = Grid(Axis(-1.0, 0.25, 9), Axis(-1.0, 0.25, 9), Axis(-1.0, 0.25, 9))
    crystal = Crystal(symbol, UnitCell(*GROUPS[symbol]))
    vol = _with_variance(random_volume(grid, 5, gap=0.2, sample_=sample(symbol, GROUPS[symbol])),
                         6)
    write_volume(tmp_path / "in.nxs", vol, {})
    symmetrize_file(tmp_path / "in.nxs", tmp_path / "out.nxs", crystal, {}, planes=3)
    out = read_volume(tmp_path / "out.nxs")
    A, c = index_maps(grid, crystal.laue_operators)
    nl, nk, nh = grid.shape
    want = np.zeros(grid.shape)
    specials = 0
    for il in range(nl):
        for ik in range(nk):
            for ih in range(nh):
                i = np.array([ih, ik, il])
                src = i @ A + c  # (n_ops, 3): (h, k, l) of each equivalent
                inside = np.all((src >= 0) & (src < [nh, nk, nl]), axis=1)
                ys, m = np.unique(src[inside], axis=0, return_counts=True)
                want[il, ik, ih] = sum(mm * mm * float(vol.variance[y[2], y[1], y[0]])
                                       for y, mm in zip(ys, m))
                specials += int(np.any(np.all(src == i, axis=1).sum() > 1))
    assert specials > 0
    np.testing.assert_allclose(out.variance, want, rtol=2e-6)
    counts = stabilizer_counts((A, c), 0, nl, grid.shape)
    assert counts.min() == 1 and counts[nl // 2, nk // 2, nh // 2] == len(A)  # the origin
