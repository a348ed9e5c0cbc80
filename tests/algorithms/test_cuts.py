"""Cuts of a volume (hklflow.algorithms.cuts): features at known positions found where they
are by a [110] line and the (H H L) plane; the axes and angles of non-orthogonal cells
against gemmi; a cut along grid axes against a plain slice; sigma against its formula;
unmeasured points NaN."""
from __future__ import annotations

import math

import gemmi
import numpy as np
import pytest

from hklflow.algorithms.cuts import plan_cut, plane_from_normal, sample_cut
from hklflow.base.errors import ConfigError
from hklflow.files.volume import Volume
from hklflow.model.crystal import UnitCell
from hklflow.model.grid import Axis, Grid
from hklflow.pictures.slices import read_slice

TETRA = UnitCell(3.8, 3.8, 13.4)
MONO = UnitCell(7.1, 9.3, 11.2, 90.0, 103.4, 90.0)
HEX = UnitCell(4.5, 4.5, 7.0, 90.0, 90.0, 120.0)


def grid(step=(0.1, 0.1, 0.2), limit=(2.0, 2.0, 2.0)):
    return Grid(*(Axis(-lim, s, int(round(2 * lim / s)) + 1) for s, lim in zip(step, limit)))


def features(g: Grid, cell: UnitCell, positions, sigma=0.02):
    """Gaussians of width sigma (1/A, in Cartesian space) at the positions (r.l.u.) on a
    background of 1; weight 2 everywhere, variance the signal's."""
    L, K, H = np.meshgrid(g.l.values, g.k.values, g.h.values, indexing="ij")
    hkl = np.stack([H, K, L], axis=-1)
    inten = np.ones(g.shape)
    for p in positions:
        x = (hkl - np.asarray(p)) @ cell.B.T
        inten += 100 * np.exp(-0.5 * np.sum(x * x, axis=-1) / sigma ** 2)
    weight = np.full(g.shape, 2.0)
    return inten * weight, weight, inten * weight


def peak_near(coords, values, true, window):
    """The coordinate of the largest value within window of true."""
    near = np.abs(coords - true) <= window
    return coords[near][np.nanargmax(values[near])]


def test_line_110_finds_features_within_a_voxel():
    g = grid()
    on_line = [0.73, -1.27, 1.55]
    decoys = [(0.73, -0.73, 0.0), (1.0, 1.0, 1.0)]  # off the line
    s, w, v = features(g, TETRA, [(x, x, 0.0) for x in on_line] + decoys)
    for width in (None, 0.03):
        plan = plan_cut(g, TETRA, (0, 0, 0), [(1, 1, 0)], width=width)
        cut = sample_cut(g, plan, s[plan.region], w[plan.region], v[plan.region])
        (coords,) = cut.coords
        step = coords[1] - coords[0]
        assert step == pytest.approx(0.1)  # one voxel along [110]
        assert coords[0] == pytest.approx(-2) and coords[-1] == pytest.approx(2)
        inten = cut.intensity()
        for x in on_line:
            assert abs(peak_near(coords, inten, x, 0.3) - x) <= step
            assert inten[np.argmin(np.abs(coords - x))] > 20
        # the decoy at (0.73, -0.73, 0) is not on [110]: background there
        assert inten[np.argmin(np.abs(coords - 0))] < 2
        np.testing.assert_allclose(cut.q_coords[0], coords * math.sqrt(2) / 3.8)


def test_hhl_plane_finds_features_within_a_voxel():
    g = grid()
    on_plane = [(0.43, 0.43, 1.1), (-0.9, -0.9, -0.6), (1.2, 1.2, 0.0)]
    decoy = (1.0, -1.0, 0.4)
    s, w, v = features(g, TETRA, on_plane + [decoy])
    plan = plan_cut(g, TETRA, (0, 0, 0), [(1, 1, 0), (0, 0, 1)])
    cut = sample_cut(g, plan, s, w, v)
    su, tv = cut.coords
    assert cut.intensity().shape == (len(tv), len(su))
    assert su[1] - su[0] == pytest.approx(0.1) and tv[1] - tv[0] == pytest.approx(0.2)
    assert cut.angle == pytest.approx(90.0)
    inten = cut.intensity()
    for hh, _, ll in on_plane:
        near = (np.abs(su - hh) <= 0.3)[None, :] & (np.abs(tv - ll) <= 0.5)[:, None]
        it, js = np.unravel_index(np.nanargmax(np.where(near, inten, -np.inf)), inten.shape)
        assert abs(su[js] - hh) <= 0.1 and abs(tv[it] - ll) <= 0.2
        assert inten[it, js] > 20
    # the plane is also the one of normal [1 -1 0]
    u, vv = plane_from_normal(TETRA, (1, -1, 0))
    assert {tuple(u), tuple(vv)} == {(0.0, 0.0, 1.0), (1.0, 1.0, 0.0)}
    # the decoy, off the plane, shows not at the foot of its perpendicular, (0 0 0.4)
    assert inten[np.argmin(np.abs(tv - 0.4)), np.argmin(np.abs(su))] < 2


@pytest.mark.parametrize("cell, plane, gemmi_angle", [
    (HEX, [(1, 0, 0), (0, 1, 0)], "gamma"),
    (MONO, [(1, 0, 0), (0, 0, 1)], "beta"),
    (MONO, [(1, 0, 0), (0, 1, 0)], "gamma"),
])
def test_axes_and_angles_of_non_orthogonal_cells_against_gemmi(cell, plane, gemmi_angle):
    uc = gemmi.UnitCell(*cell.parameters)
    rc = uc.reciprocal()
    g = grid(step=(0.25, 0.25, 0.25))
    s, w, _ = features(g, cell, [])
    cut = sample_cut(g, plan_cut(g, cell, (0, 0, 0), plane), s, w)
    lengths = [1 / uc.calculate_d(list(d)) for d in plane]  # |Q| = 1/d, no 2 pi
    np.testing.assert_allclose(cut.lengths, lengths, rtol=1e-10)
    assert cut.angle == pytest.approx(getattr(rc, gemmi_angle), abs=1e-9)
    # the picture's mesh: its edges along the two directions have their lengths and angle
    X, Y = cut.cartesian_edges()
    step = [c[1] - c[0] for c in cut.coords]
    e1 = np.array([X[0, 1] - X[0, 0], Y[0, 1] - Y[0, 0]]) / step[0]
    e2 = np.array([X[1, 0] - X[0, 0], Y[1, 0] - Y[0, 0]]) / step[1]
    np.testing.assert_allclose([np.linalg.norm(e1), np.linalg.norm(e2)], lengths, rtol=1e-10)
    cos = e1 @ e2 / np.linalg.norm(e1) / np.linalg.norm(e2)
    assert math.degrees(math.acos(cos)) == pytest.approx(getattr(rc, gemmi_angle), abs=1e-9)


def test_line_along_110_of_a_hexagonal_cell_against_gemmi():
    uc = gemmi.UnitCell(*HEX.parameters)
    g = grid(step=(0.25, 0.25, 0.25))
    s, w, _ = features(g, HEX, [])
    cut = sample_cut(g, plan_cut(g, HEX, (0, 0, 0), [(1, 1, 0)]), s, w)
    assert cut.lengths[0] == pytest.approx(1 / uc.calculate_d([1, 1, 0]), rel=1e-10)
    np.testing.assert_allclose(cut.q_coords[0], cut.coords[0] / uc.calculate_d([1, 1, 0]))


def test_plane_from_normal_in_non_orthogonal_cells():
    # hexagonal: the (H K 0) plane is normal to c* ...
    assert {tuple(d) for d in plane_from_normal(HEX, (0, 0, 1))} == {(1, 0, 0), (0, 1, 0)}
    # ... and the plane normal to a* holds c* and a* - 2 b*, not b* (its indices dot to 0)
    u, v = plane_from_normal(HEX, (1, 0, 0))
    assert tuple(u) == (0, 0, 1) and tuple(v) == (1, -2, 0)
    for cell, n in ((HEX, (1, 0, 0)), (MONO, (0, 0, 1)), (MONO, (1, 1, 1)), (HEX, (0.3, 0.1, 0.7))):
        u, v = plane_from_normal(cell, n)
        m = cell.B @ np.asarray(n, float)
        assert abs(cell.B @ u @ m) < 1e-9 * np.linalg.norm(m) and abs(cell.B @ v @ m) < 1e-9 * np.linalg.norm(m)
        assert np.linalg.norm(np.cross(cell.B @ u, cell.B @ v)) > 1e-6


def random_volume(g: Grid, seed=3, gap=0.2):
    rng = np.random.default_rng(seed)
    weight = rng.uniform(0.5, 4.0, g.shape)
    weight[rng.random(g.shape) < gap] = 0.0
    signal = rng.uniform(0.5, 1000.0, g.shape) * weight
    variance = rng.uniform(0.1, 50.0, g.shape) * (weight > 0)
    return signal, weight, variance


def test_cut_along_grid_axes_is_the_plain_slice():
    g = grid(step=(0.25, 0.25, 0.5))
    s, w, v = random_volume(g)
    vol = Volume(g, s.astype(np.float32), w.astype(np.float32), variance=v.astype(np.float32))
    for il in (0, 3, len(g.l.values) - 1):
        lval = g.l.values[il]
        plan = plan_cut(g, TETRA, (0, 0, lval), [(1, 0, 0), (0, 1, 0)])
        cut = sample_cut(g, plan, vol.signal[plan.region], vol.weight[plan.region],
                         vol.variance[plan.region])
        np.testing.assert_array_equal(cut.coords[0], g.h.values - g.h.values[0] + cut.coords[0][0])
        assert cut.intensity().shape == (g.k.n, g.h.n)
        np.testing.assert_allclose(cut.intensity(), vol.intensity()[il], rtol=1e-6)
        np.testing.assert_allclose(cut.errors(), vol.errors()[il], rtol=1e-6)
        np.testing.assert_allclose(cut.intensity(), read_slice(vol, {"l": lval}).data, rtol=1e-6)
    # a line along K through a row of voxels, binned over less than a voxel: that row
    ih, il = 5, 2
    plan = plan_cut(g, TETRA, (g.h.values[ih], 0, g.l.values[il]), [(0, 1, 0)], width=0.01)
    cut = sample_cut(g, plan, s, w, v)
    np.testing.assert_array_equal(cut.voxels, 1)
    np.testing.assert_allclose(cut.intensity(), vol.intensity()[il, :, ih], rtol=1e-6)


def test_sigma_of_binned_points_and_unmeasured_nan():
    g = grid(step=(0.1, 0.1, 0.2), limit=(0.5, 0.5, 2.0))
    s, w, v = random_volume(g, gap=0.0)
    # along L through the origin, 0.03/A wide: |a*| 0.1 = 0.0263/A, so the voxels at
    # (h, k) = (0, 0), (+-0.1, 0), (0, +-0.1) (the diagonal ones are 0.0372/A away)
    plan = plan_cut(g, TETRA, (0, 0, 0), [(0, 0, 1)], width=0.06)
    cut = sample_cut(g, plan, s, w, v)
    ih = ik = 5  # h = k = 0
    cols = [(ik, ih), (ik, ih + 1), (ik, ih - 1), (ik + 1, ih), (ik - 1, ih)]
    S = sum(s[:, a, b] for a, b in cols)
    W = sum(w[:, a, b] for a, b in cols)
    V = sum(v[:, a, b] for a, b in cols)
    np.testing.assert_array_equal(cut.voxels, 5)
    np.testing.assert_allclose(cut.coords[0], g.l.values)
    np.testing.assert_allclose(cut.intensity(), S / W, rtol=1e-12)
    np.testing.assert_allclose(cut.errors(), np.sqrt(V) / W, rtol=1e-12)
    # not the mean of the voxels' ratios (that would weigh every voxel alike)
    assert not np.allclose(cut.intensity(), sum(s[:, a, b] / w[:, a, b] for a, b in cols) / 5)

    # unmeasured: NaN with weight 0, never 0; partly measured: only what was measured counts
    w2, s2, v2 = w.copy(), s.copy(), v.copy()
    w2[:10], s2[:10], v2[:10] = 0, 0, 0  # L < 0 unmeasured
    w2[10, ik, ih] = s2[10, ik, ih] = v2[10, ik, ih] = 0  # one voxel of the L = 0 point
    cut = sample_cut(g, plan, s2, w2, v2)
    inten, err = cut.intensity(), cut.errors()
    assert np.all(np.isnan(inten[:10])) and np.all(np.isnan(err[:10]))
    assert np.all(cut.weight[:10] == 0) and np.all(np.isfinite(inten[10:]))
    rest = cols[1:]
    assert inten[10] == pytest.approx(sum(s[10, a, b] for a, b in rest)
                                      / sum(w[10, a, b] for a, b in rest))
    # nearest voxel too
    plan = plan_cut(g, TETRA, (0, 0, 0), [(0, 0, 1)])
    cut = sample_cut(g, plan, s2, w2, v2)
    assert np.all(np.isnan(cut.intensity()[:11])) and np.all(np.isfinite(cut.intensity()[11:]))


def test_ranges_steps_and_bad_cuts():
    g = grid()
    s, w, v = features(g, TETRA, [(0.5, 0.5, 0)])
    plan = plan_cut(g, TETRA, (0, 0, 0), [(1, 1, 0)], ranges=[(-3, 1)], steps=[0.05])
    cut = sample_cut(g, plan, s, w, v)
    assert cut.coords[0][0] == pytest.approx(-3) and cut.coords[0][-1] == pytest.approx(1)
    assert np.all(np.isnan(cut.intensity()[cut.coords[0] < -2.06]))  # beyond the grid: NaN
    with pytest.raises(ConfigError, match="parallel"):
        plan_cut(g, TETRA, (0, 0, 0), [(1, 1, 0), (2, 2, 0)])
    with pytest.raises(ConfigError, match="zero"):
        plan_cut(g, TETRA, (0, 0, 0), [(0, 0, 0)])
    with pytest.raises(ConfigError, match="width"):
        plan_cut(g, TETRA, (0, 0, 0), [(1, 0, 0)], width=-1)
    with pytest.raises(ConfigError, match="three numbers"):
        plan_cut(g, TETRA, (0, 0), [(1, 0, 0)])


def test_binning_slab_by_slab_is_the_same():
    g = grid(step=(0.1, 0.1, 0.2), limit=(1.0, 1.0, 1.0))
    s, w, v = random_volume(g)
    plan = plan_cut(g, HEX, (0, 0, 0.1), [(1, 1, 0), (0, 0, 1)], width=0.05)
    whole = sample_cut(g, plan, s, w, v)
    slabs = sample_cut(g, plan, s[plan.region], w[plan.region], v[plan.region],
                       voxels_per_slab=50)
    for a, b in ((whole.signal, slabs.signal), (whole.weight, slabs.weight),
                 (whole.variance, slabs.variance), (whole.voxels, slabs.voxels)):
        np.testing.assert_allclose(a, b, rtol=1e-12)
    assert whole.voxels.sum() > 0
