"""The variance from the EXPECTED counts (issue 81, reduction.transform.variance_from):
the transform's variance cells sum gain x a per pixel-frame (a = corrections x frame scale)
where the observed estimator summed gain x v x a^2; the sum of an entry's parts turns it
into the variance with a local intensity (algorithms.merge.expected_variance: the mean of
the 26 voxels around, with the Jeffreys prior's half photon; the voxel's own where its
signal is 4 sigma off it).  On simulated counts of ~0.5 per pixel-frame the
1/sigma^2-weighted mean of equivalent voxels is unbiased with it and clearly low with the
observed counts; no measured voxel has sigma 0;
`observed` leaves signal, weight and variance what they were."""
from __future__ import annotations

import h5py
import numpy as np
import pytest

from hklflow.algorithms.merge.expected_variance import (JEFFREYS_PHOTONS, variance_from_expected,
                                                        variance_of_slab)
from hklflow.algorithms.transform import Transformer, frame_matrices
from hklflow.algorithms.transform.kernels import kernel_gain
from hklflow.files.volume import VARIANCE_PER_INTENSITY, VolumeWriter, read_volume, variance_kind
from hklflow.model.grid import Axis, Grid

GAIN = 2.5


# ---- the estimator on simulated counts --------------------------------------------------
def _simulate(rng, shape, intensity, per_voxel, gain):
    """Summed signal, weight, observed variance (gain v a^2) and gain x sum of a per voxel
    of `shape`, each voxel `per_voxel` pixel-frames of factors a (+-30% about 1) whose raw
    counts are gain x Poisson(intensity / (a gain)) (expected raw value intensity / a)."""
    a = rng.uniform(0.7, 1.3, shape + (per_voxel,))
    v = gain * rng.poisson(np.broadcast_to(np.asarray(intensity)[..., None], a.shape) / (a * gain))
    signal = (v * a).sum(-1)
    weight = np.full(shape, float(per_voxel))
    observed = (gain * v * a * a).sum(-1)
    per_intensity = (gain * a).sum(-1)
    return signal, weight, observed, per_intensity


def _weighted_mean(signal, weight, variance):
    """1/sigma^2-weighted mean of the voxels' intensities signal / weight (sigma =
    sqrt(variance) / weight), over the voxels with sigma > 0 (sigma 0: an infinite weight,
    which no fit can take; left out)."""
    ok = (weight > 0) & (variance > 0)
    x = signal[ok] / weight[ok]
    w = weight[ok] ** 2 / variance[ok]
    return float(np.sum(w * x) / np.sum(w))


@pytest.mark.parametrize("gain", [1.0, 2.0])
def test_weighted_mean_of_equivalent_voxels_is_unbiased_with_expected_counts(gain):
    """8000 equivalent voxels (one true I, locally constant) of 40 pixel-frames of ~0.5
    counts each: the expected counts' weighted mean is within 1% of the truth; the observed
    counts' is several % low (it weights each voxel by its own counts' inverse)."""
    rng = np.random.default_rng(81)
    truth = 0.5
    s, w, observed, u = _simulate(rng, (20, 20, 20), truth, 40, gain)
    expected = variance_from_expected(s, w, u)
    assert np.all(expected[w > 0] > 0)
    new = _weighted_mean(s, w, expected) / truth - 1
    old = _weighted_mean(s, w, observed) / truth - 1
    plain = float(np.sum(s) / np.sum(w)) / truth - 1  # (the unweighted mean: the noise floor)
    print(f"gain {gain}: relative error of the weighted mean: expected {new:+.4f}, "
          f"observed {old:+.4f} (unweighted {plain:+.4f})")
    assert abs(new) < 0.01, new
    assert old < -0.03, old  # clearly low: ~ -1 / (photons per voxel) = -1/(20/gain)
    # sigma follows the truth: sigma^2 = gain I sum(a) within the noise of I~
    want = truth * u  # (u = gain x sum of a)
    np.testing.assert_allclose(np.median(expected / want), 1.0, atol=0.02)


def test_a_sharp_peak_keeps_its_own_sigma():
    """A voxel far above its neighbourhood (a Bragg peak's centre: 100 x the diffuse
    intensity around it) takes its own intensity (its signal lies beyond 4 sigma of what
    the neighbourhood predicts), not the neighbourhood's mean (sigma 5 x too small)."""
    rng = np.random.default_rng(4)
    shape = (5, 5, 5)
    intensity = np.full(shape, 0.5)
    intensity[2, 2, 2] = 50.0
    s, w, _, u = _simulate(rng, shape, intensity, 40, 1.0)
    v = variance_from_expected(s, w, u)
    np.testing.assert_allclose(v[2, 2, 2] / (50.0 * u[2, 2, 2]), 1.0, atol=0.05)
    around = np.ones(shape, bool)
    around[2, 2, 2] = False
    # (the peak's neighbours take theirs too, where its share lifts their mean past 4 sigma)
    assert np.median(v[around] / (0.5 * u[around])) < 1.5


def test_no_measured_voxel_gets_sigma_zero_where_nothing_was_counted():
    """A region that counted nothing (and one of 0.02 counts per pixel-frame next to it):
    every measured voxel has sigma > 0 with the expected counts (Jeffreys: half a photon
    over the neighbourhood's exposure), where the observed counts give 0; unmeasured
    voxels keep variance 0."""
    rng = np.random.default_rng(2)
    shape = (6, 7, 8)
    intensity = np.zeros(shape)
    intensity[3:] = 0.02
    s, w, observed, u = _simulate(rng, shape, intensity, 5, 1.0)
    w[0, 0, :4] = 0  # unmeasured voxels
    s[w == 0] = u[w == 0] = observed[w == 0] = 0
    v = variance_from_expected(s, w, u)
    assert np.count_nonzero((observed == 0) & (w > 0)) > 100  # (today's sigma = 0)
    assert np.all(v[w > 0] > 0) and np.all(v[w == 0] == 0)
    # where nothing at all was counted around a voxel: I~ = 0.5 U / W^2 of its
    # neighbourhood (half a photon of gain x mean a)
    i, k, h = 1, 3, 4
    box = np.s_[i - 1:i + 2, k - 1:k + 2, h - 1:h + 2]
    assert s[box].sum() == 0
    U, W = u[box].sum() - u[i, k, h], w[box].sum() - w[i, k, h]  # (its neighbours)
    want = u[i, k, h] * JEFFREYS_PHOTONS * U / W ** 2
    np.testing.assert_allclose(v[i, k, h], want, rtol=1e-12)


def test_slabs_with_neighbouring_planes_give_the_whole_volumes_variance():
    rng = np.random.default_rng(5)
    shape = (11, 6, 9)
    s, w, _, u = _simulate(rng, shape, rng.uniform(0.1, 3, shape), 3, 1.0)
    w[rng.random(shape) < 0.3] = 0
    s[w == 0] = u[w == 0] = 0
    whole = variance_from_expected(s, w, u)
    # brute force: the 26 neighbours inside the grid; the voxel's own intensity where its
    # signal lies beyond 4 sigma of what theirs predicts (or none was measured)
    own = 0
    for i, k, h in zip(*np.nonzero(w > 0)):
        box = np.s_[max(i - 1, 0):i + 2, max(k - 1, 0):k + 2, max(h - 1, 0):h + 2]
        S, W, U = (a[box].sum() - a[i, k, h] for a in (s, w, u))  # (the neighbours)
        I = (S + 0.5 * U / W) / W if W > 0 else np.inf
        if not (s[i, k, h] - w[i, k, h] * I) ** 2 <= 16 * u[i, k, h] * I:
            I = (s[i, k, h] + 0.5 * u[i, k, h] / w[i, k, h]) / w[i, k, h]
            own += 1
        np.testing.assert_allclose(whole[i, k, h], u[i, k, h] * I, rtol=1e-12)
    assert 0 < own < np.count_nonzero(w > 0) / 2  # (intensities of 0.1..3: some sharp)
    assert np.all(whole[w == 0] == 0)
    pad = [(1, 1), (0, 0), (0, 0)]
    S, W, U = (np.pad(a, pad) for a in (s, w, u))
    for l0 in range(0, 11, 4):
        l1 = min(11, l0 + 4)
        part = variance_of_slab(S[l0:l1 + 2], W[l0:l1 + 2], U[l0:l1 + 2])
        assert np.array_equal(part, whole[l0:l1])


# ---- the kernels --------------------------------------------------------------------------
def _expected_reference(frames, table, M, scale, grid, gain):
    """numpy: per voxel the sum of gain x a x c / n^2 over the pixel-frames' sub-steps that
    land in it (c: the pixel's sub-steps in that voxel; a = corr x scale; usable values)."""
    nsub = M.shape[1]
    origin = np.array([ax.start for ax in grid.axes])
    inv_step = np.array([1.0 / ax.step for ax in grid.axes])
    offset = 0.5 - origin * inv_step
    dims = np.array([grid.h.n, grid.k.n, grid.l.n])
    q = table.q.astype(np.float64)
    out = np.zeros(grid.shape)
    for f in range(frames.shape[0]):
        v = frames[f].reshape(-1)[table.index].astype(np.float64)
        ok = (v >= 0) & (v < 2 ** 31 - 1)
        voxels = []
        for j in range(nsub):
            idx = np.floor(q @ (M[f, j] * inv_step[:, None]).T + offset).astype(np.int64)
            good = ok & np.all((idx >= 0) & (idx < dims), axis=1)
            voxels.append(np.where(good, (idx[:, 2] * dims[1] + idx[:, 1]) * dims[0]
                                   + idx[:, 0], -1))
        voxels = np.array(voxels)
        for j in range(nsub):
            good = voxels[j] >= 0
            c = (voxels == voxels[j]).sum(axis=0)
            np.add.at(out.reshape(-1), voxels[j][good],
                      (gain * table.corr * scale[f] * c / nsub ** 2)[good])
    return out


def test_kernels_sum_gain_times_a_and_leave_signal_and_weight_alone(setup):
    scan, UB, crystal, table, grid, frames = setup
    fr = frames[10:16]
    M = frame_matrices(scan, 10, 16, 2)
    scale = np.linspace(0.8, 1.3, 6)
    cells = {}
    for name, kw in (("none", {}), ("observed", {"gain": GAIN, "variance_from": "observed"}),
                     ("expected", {"gain": GAIN, "variance_from": "expected"}),
                     ("default", {"gain": GAIN})):
        tr = Transformer(grid, table, 2 ** 31 - 1, **kw)
        tr.add(fr, M, scale)
        cells[name] = tr.acc.arrays(0)
    for name in ("observed", "expected", "default"):  # signal and weight: bit for bit
        assert all(np.array_equal(a, b) for a, b in zip(cells[name][:2], cells["none"]))
    assert np.array_equal(cells["default"][2], cells["expected"][2])
    s, w, v = cells["expected"]
    ref = _expected_reference(fr, table, M, scale, grid, GAIN)
    assert np.count_nonzero(v) > 1000
    np.testing.assert_allclose(v, ref, rtol=5e-6, atol=1e-6 * ref.max())
    assert np.all(v[w > 0] > 0)  # (observed: 0 where nothing was counted)
    assert np.count_nonzero((cells["observed"][2] == 0) & (w > 0)) > 0
    with pytest.raises(ValueError, match="variance_from"):
        Transformer(grid, table, 2 ** 31 - 1, gain=GAIN, variance_from="counted")
    assert kernel_gain(2.0, "observed") == 2.0 and kernel_gain(2.0, "expected") == -2.0


def test_observed_pixel_variance_is_the_old_formula_bit_for_bit(setup):
    """variance_from observed: each pixel's variance in pass 1 is float32 value x corr x
    (scale / steps x gain), the formula before issue 81, bit for bit (and the cells sum it
    as before: test_variance's numpy reference)."""
    from hklflow.algorithms.transform.kernels import _voxel_indices
    from hklflow.algorithms.transform.pixels import BLOCK

    scan, UB, crystal, table, grid, frames = setup
    p0 = int(table.index[0]) // BLOCK * BLOCK  # (a block holding usable pixels)
    n = min(BLOCK, table.qx.shape[0] - p0)
    vb = np.ascontiguousarray(frames[12].reshape(-1)[p0:p0 + n])
    corr = table.corr_all
    idx = np.empty(n, np.int32)
    val = np.empty(n, np.float32)
    var = np.empty(n, np.float32)
    dims = np.array([grid.h.n, grid.k.n, grid.l.n], np.int64)
    nbricks = np.array([2, 2, 2], np.int64)
    B = tuple(np.float32(x) for x in np.eye(3).reshape(-1))
    steps, scale, gain = 2, 1.17, GAIN
    s32 = np.float32(scale / steps)
    for expected in (False, True):
        g32 = np.float32(scale / steps / steps * gain) if expected \
            else np.float32(scale / steps * gain)
        _voxel_indices(0, p0, n, vb, table.qx, table.qy, table.qz, corr, None, B,
                       (np.float32(0), np.float32(0), np.float32(0)),
                       (np.float32(0.4),) * 3, s32, 2 ** 31 - 1, dims, nbricks, np.int32(0),
                       np.zeros(n, np.int32), idx, val, var, g32, expected)
        cb = corr[p0:p0 + n]
        assert np.count_nonzero(cb * vb) > 100
        want_val = vb.astype(np.float32) * cb * s32
        assert np.array_equal(val, want_val)
        want = cb * g32 if expected else want_val * cb * g32
        assert np.array_equal(var, want.astype(np.float32))


# ---- the files: parts carry gain x sum of a, the sum carries the variance ------------------
def _part(path, grid, s, w, u, intensity=False):
    with VolumeWriter(path, grid, "transform", "part", {}, {"variance_from": "expected"}, {},
                      intensity=intensity, variance=True) as wr:
        wr.carry_variance_per_intensity()
        with pytest.raises(ValueError, match="variance"):
            wr.write(0, s, w)  # (the variance is given)
        wr.write(0, s, w, u)
        wr.notes.update(measured_fraction=wr.measured / grid.size, weight_sum=wr.weight_sum,
                        signal_sum=wr.signal_sum)


@pytest.mark.parametrize("parts", [1, 3])
def test_sum_of_parts_turns_gain_times_a_into_the_variance_of_the_sum(tmp_path, parts):
    """The parts (one: transformed whole, with its intensity, so once moved into place)
    carry variance_per_intensity_sum and no data_errors; the sum (sum_chunks: slab by slab,
    3 planes, with their neighbours) carries variance_sum = variance_from_expected of the
    summed arrays, data_errors > 0 wherever measured; parts of the two meanings are
    refused."""
    from hklflow.algorithms.merge.volumes import sum_volumes
    from hklflow.base.errors import InputMismatchError

    grid = Grid(Axis(-1, 0.5, 5), Axis(-2, 0.5, 9), Axis(0, 1, 12))
    rng = np.random.default_rng(parts)
    total = [np.zeros(grid.shape) for _ in range(3)]
    paths = []
    for i in range(parts):
        s, w, _, u = _simulate(rng, grid.shape, rng.uniform(0, 2, grid.shape), 4, 2.0)
        w[rng.random(grid.shape) < 0.2] = 0
        s[w == 0] = u[w == 0] = 0
        s, w, u = (a.astype(np.float32) for a in (s, w, u))
        paths.append(tmp_path / f"part{i}.nxs")
        _part(paths[-1], grid, s, w, u, intensity=parts == 1)
        for t, a in zip(total, (s, w, u)):
            t += a
        assert variance_kind(paths[-1]) == "per_intensity"
        with h5py.File(paths[-1]) as f:
            d = f["entry/transform"]
            assert VARIANCE_PER_INTENSITY in d and "variance_sum" not in d
            assert "data_errors" not in d
    notes = sum_volumes(paths, tmp_path / "sum.nxs", "s", {}, planes=3, move_single=True)
    assert notes["variance"] is True and notes["variance_from"] == "expected"
    assert "adopted" not in notes
    out = read_volume(tmp_path / "sum.nxs")
    want = variance_from_expected(*total).astype(np.float32)
    np.testing.assert_allclose(out.variance, want, rtol=1e-6)
    measured = out.weight > 0
    assert np.all(out.variance[measured] > 0) and np.all(out.variance[~measured] == 0)
    assert np.array_equal(out.signal, total[0].astype(np.float32))
    with h5py.File(tmp_path / "sum.nxs") as f:
        errors = f["entry/transform/data_errors"][()]
    assert np.all(errors[measured] > 0)
    # a part with the variance itself (observed, or an older hklflow) next to these: refused
    from hklflow.files.volume import Volume, write_volume

    write_volume(tmp_path / "observed.nxs", Volume(grid, *total[:2], "transform", "o",
                                                   variance=total[2]), {})
    with pytest.raises(InputMismatchError, match="variance_per_intensity_sum"):
        sum_volumes(paths + [tmp_path / "observed.nxs"], tmp_path / "mixed.nxs", "m", {})


def test_transform_volumes_are_written_with_their_meaning(setup, tmp_path):
    """write_volumes (transform_frames, transform_background): with variance_from expected a
    part (no intensity: summed later) carries variance_per_intensity_sum, a complete volume
    (a whole entry, moved into place by sum_chunks; a background) its variance formed at
    once, slab by slab (variance_from_expected of its arrays); observed volumes carry
    variance_sum as before; all record variance_from in their notes."""
    from hklflow.files.volume_bricks import write_volumes

    scan, UB, crystal, table, grid, frames = setup
    M = frame_matrices(scan, 10, 12, 1)
    kinds = ("transform", "masked_transform")
    bragg = (np.random.default_rng(1).random((2, frames[0].size)) < 0.05).astype(np.uint8)
    for variance_from, whole in (("expected", False), ("expected", True), ("observed", True)):
        tr = Transformer(grid, table, 2 ** 31 - 1, kinds=kinds, gain=GAIN,
                         variance_from=variance_from)
        tr.add(frames[10:12], M, np.ones(2), bragg)
        paths = [tmp_path / f"{variance_from}_{whole}_{kind}.nxs" for kind in kinds]
        writers = [VolumeWriter(p, grid, kind, "t", {}, {}, {}, intensity=whole, variance=True)
                   for p, kind in zip(paths, kinds)]
        for w in writers:
            w.__enter__()
        write_volumes(tr, writers)
        for w in writers:  # (as transform_frames: the sums in the notes)
            w.notes.update(measured_fraction=w.measured / grid.size, weight_sum=w.weight_sum,
                           signal_sum=w.signal_sum)
            w.__exit__(None, None, None)
        for i, path in enumerate(paths):
            part = variance_from == "expected" and not whole
            assert variance_kind(path) == ("per_intensity" if part else "variance")
            assert read_volume(path).notes["variance_from"] == variance_from
            s, w, cells = tr.acc.arrays(i)
            with h5py.File(path) as f:
                d = f["entry/transform" if i == 0 else "entry/masked_transform"]
                assert ("data_errors" in d) is whole
                stored = d[VARIANCE_PER_INTENSITY if part else "variance_sum"][()]
            if variance_from == "expected" and whole:
                want = variance_from_expected(s, w, cells).astype(np.float32)
                np.testing.assert_allclose(stored, want, rtol=1e-6)
                assert np.all(stored[w > 0] > 0)
            else:
                assert np.array_equal(stored, cells)
        if whole:  # sum_chunks of the one complete part: moved into place, notes kept
            from hklflow.algorithms.merge.volumes import sum_volumes

            notes = sum_volumes([paths[0]], tmp_path / f"{variance_from}_entry.nxs", "e", {},
                                move_single=True)
            assert notes["adopted"] and notes["variance_from"] == variance_from
            assert ("variance_how" in notes) is (variance_from == "expected")


def test_the_config_key_defaults_to_expected_and_is_left_out_of_old_jobs_settings():
    from hklflow.settings.params import TransformParams

    params = TransformParams.defaults()
    assert params.variance_from == "expected"
    assert "variance_from" not in params.settings()  # (jobs made before it keep theirs)
    observed = TransformParams.defaults(variance_from="observed")
    assert observed.settings()["variance_from"] == "observed"
    assert TransformParams.from_settings(observed.settings(),
                                         against_schema=True).variance_from == "observed"
