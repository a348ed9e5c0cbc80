"""hklflow.algorithms.statistics.shells: chi^2/nu of symmetry equivalents, I/sigma, CC1/2 and voxel counts in
shells of |Q| of a merged volume, on small synthetic volumes (no Snakemake).

The orbits are checked against a direct definition (every voxel's images h R as a set of
grid voxels, in Python) on symmetric and uneven grids, for groups that keep L planes
(slab by slab) and for a cubic one (the volume whole, or a sub-lattice sample)."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from hklflow.algorithms.statistics.shells import array_reader, volume_statistics
from hklflow.model.crystal import Crystal, UnitCell
from hklflow.model.grid import Axis, Grid
from hklflow.pictures.volumes import plot_statistics

from volume_helpers import statistics_of_arrays

TETRA = Crystal("P 4/m m m", UnitCell(4.0, 4.0, 6.0))


def _grid(nh, nk, nl, step=0.25):
    return Grid(Axis(-(nh - 1) / 2 * step, step, nh), Axis(-(nk - 1) / 2 * step, step, nk),
                Axis(-(nl - 1) / 2 * step, step, nl))


def _hkl(grid):
    L, K, H = np.meshgrid(grid.l.values, grid.k.values, grid.h.values, indexing="ij")
    return H, K, L


def _truth(grid, scale=1.0, flat=False):
    """A smooth intensity with the symmetry 4/mmm (a function of h^2 + k^2, h^2 k^2, l^2)."""
    H, K, L = _hkl(grid)
    if flat:
        return np.full(grid.shape, 100.0 * scale)
    return scale * (100 + 80 * np.cos(np.pi * H) * np.cos(np.pi * K)
                    + 30 * np.cos(np.pi * L) ** 2 + 20 * (H * H + K * K))


def _noisy(T, rng, gap=0.2, noise_factor=1.0, wmax=5):
    """signal, weight, variance of a volume of truth T: weight w pixel-frames, each with
    variance T (Poisson-like), so var(I) = T / w; stated variance of signal w T, true noise
    noise_factor times that."""
    W = rng.integers(1, wmax + 1, T.shape).astype(float)
    W[rng.random(T.shape) < gap] = 0
    sd = np.sqrt(T / np.maximum(W, 1) * noise_factor)
    I = T + rng.normal(size=T.shape) * sd
    return ((I * W).astype(np.float32), W.astype(np.float32), (W * T).astype(np.float32))


def _halves(T, rng, gap=0.2):
    """Two halves and their sum, each half with its own noise."""
    parts = [_noisy(T, rng, gap=gap, wmax=3) for _ in range(2)]
    total = tuple((a + b).astype(np.float32) for a, b in zip(*parts))
    return total, parts[0][:2], parts[1][:2]


# --------------------------------------------------------------------------------------
# A direct definition of the orbits' chi^2
# --------------------------------------------------------------------------------------
def _direct(grid, crystal, S, W, V, sub=None):
    """(orbits, observations, chi2, nu) from every voxel's set of images h R on the grid
    (sub: voxel indices per axis (h, k, l) of a sub-lattice: only orbits of its voxels)."""
    ops = crystal.laue_operators
    nl, nk, nh = grid.shape
    seen = set()
    orbits = obs = nu = 0
    chi2 = 0.0
    ranges = sub if sub is not None else (range(nh), range(nk), range(nl))
    for il in ranges[2]:
        for ik in ranges[1]:
            for ih in ranges[0]:
                h = np.array([grid.h.values[ih], grid.k.values[ik], grid.l.values[il]])
                idx = grid.index(h @ ops)
                ok = grid.contains(idx)
                members = {(int(i[2]), int(i[1]), int(i[0])) for i in idx[ok]}
                key = frozenset(members)
                if key in seen:
                    continue
                seen.add(key)
                vals, wts = [], []
                for m in members:
                    if W[m] > 0 and np.isfinite(V[m]) and V[m] > 0:
                        vals.append(float(S[m]) / float(W[m]))
                        wts.append(float(W[m]) ** 2 / float(V[m]))
                if len(vals) < 2:
                    continue
                vals, wts = np.array(vals), np.array(wts)
                mean = np.sum(wts * vals) / np.sum(wts)
                chi2 += float(np.sum(wts * (vals - mean) ** 2))
                orbits += 1
                obs += len(vals)
                nu += len(vals) - 1
    return orbits, obs, chi2, nu


CASES = {
    "4/mmm symmetric": ("P 4/m m m", (4.0, 4.0, 6.0), _grid(9, 9, 7)),
    "mmm uneven": ("P m m m", (5.3, 7.9, 11.4),
                   Grid(Axis(-1.0, 0.5, 6), Axis(-0.5, 0.5, 4), Axis(-1.0, 0.5, 7))),
    "6/mmm": ("P 6/m m m", (4.5, 4.5, 7.0, 90, 90, 120),
              Grid(Axis(-2.0, 0.5, 9), Axis(-2.0, 0.5, 9), Axis(-1.0, 0.5, 5))),
    "2/m uneven L": ("C 1 2/c 1", (7.1, 9.3, 11.2, 90.0, 103.4, 90.0),
                     Grid(Axis(-1.0, 0.5, 5), Axis(-1.0, 0.5, 5), Axis(-1.0, 0.5, 6))),
    "m-3m whole": ("F m -3 m", (5.0, 5.0, 5.0), _grid(7, 7, 7, 0.5)),
    "-3m rhombohedral": ("R -3 m:R", (6.0, 6.0, 6.0, 75.0, 75.0, 75.0), _grid(5, 5, 5, 0.5)),
}


@pytest.mark.parametrize("case", list(CASES))
def test_orbits_match_direct_definition(case):
    symbol, cell, grid = CASES[case]
    crystal = Crystal(symbol, UnitCell(*cell))
    rng = np.random.default_rng(3)
    W = rng.integers(0, 4, grid.shape).astype(np.float32)  # a quarter unmeasured
    S = (rng.uniform(1, 50, grid.shape) * W).astype(np.float32)
    V = (rng.uniform(0.5, 5, grid.shape) * W).astype(np.float32)
    orbits, obs, chi2, nu = _direct(grid, crystal, S, W, V)
    assert nu > 20
    for planes in (1, 2, 100):
        st = statistics_of_arrays(grid, crystal, S, W, V, planes=planes, min_voxels=1)
        o = st.overall
        assert (o.orbits, o.observations, o.nu) == (orbits, obs, nu), (case, planes)
        assert o.chi2 == pytest.approx(chi2, rel=1e-9)
        assert o.measured == np.count_nonzero(W > 0) and o.voxels == grid.size
        assert sum(r.nu for r in st.shells) == nu and sum(r.measured for r in st.shells) == o.measured
        assert st.orbit_sample_stride == 1


def test_special_positions_counted_once():
    """mmm on h, k, l in {-1, 0, 1}: the origin is its own orbit (no nu), a voxel on two
    mirror planes has 2 distinct equivalents, on one mirror 4, in general 8: nu = 0 + 3x1
    + 3x3 + 7 = 19 from 27 voxels in 8 orbits, whatever the 8 operators that map each
    voxel (an operator count per voxel would give 8 observations for every orbit)."""
    crystal = Crystal("P m m m", UnitCell(5.3, 7.9, 11.4))
    grid = _grid(3, 3, 3, 1.0)
    W = np.ones(grid.shape, np.float32)
    V = np.ones(grid.shape, np.float32)
    S = np.full(grid.shape, 5.0, np.float32)
    # the orbit {(1,0,0), (-1,0,0)} (on the mirror planes k = 0 and l = 0): I = 1 and 3,
    # sigma 1: mean 2, chi2 = 2, nu = 1; every other orbit is flat
    S[1, 1, 2], S[1, 1, 0] = 1.0, 3.0
    # the origin alone: a different value changes nothing
    S[1, 1, 1] = 100.0
    st = statistics_of_arrays(grid, crystal, S, W, V, min_voxels=1, shells=1)
    o = st.overall
    assert (o.orbits, o.observations, o.nu) == (7, 26, 19)
    assert o.chi2 == pytest.approx(2.0)
    assert _direct(grid, crystal, S, W, V) == (7, 26, pytest.approx(2.0), 19)


def test_chi2_nu_near_one_when_sigma_holds_and_two_when_noise_is_twice_the_stated():
    grid = _grid(41, 41, 29)
    T = _truth(grid)
    fig = {}
    for factor in (1.0, 2.0):
        S, W, V = _noisy(T, np.random.default_rng(11), noise_factor=factor)
        st = statistics_of_arrays(grid, TETRA, S, W, V, shells=6)
        fig[factor] = st
        assert st.overall.nu > 30_000
        assert st.overall.chi2_nu == pytest.approx(factor, rel=0.04), factor
        for r in st.shells:
            if r.nu >= 2000:
                assert r.chi2_nu == pytest.approx(factor, rel=0.12), (factor, r)
    assert not fig[1.0].flag and fig[1.0].flag_reason == ""
    assert fig[2.0].flag
    assert "sigma underestimated" in fig[2.0].flag_reason
    assert f"{fig[2.0].overall.chi2_nu:.2f}" in fig[2.0].flag_reason
    assert any("FLAG" in line for line in fig[2.0].log_lines())


def test_sigma_overstated_and_symmetrised_volumes_are_flagged():
    grid = _grid(21, 21, 15)
    T = _truth(grid)
    S, W, V = _noisy(T, np.random.default_rng(5), noise_factor=0.5)
    st = statistics_of_arrays(grid, TETRA, S, W, V, shells=3)
    assert st.overall.chi2_nu == pytest.approx(0.5, rel=0.08)
    assert st.flag and "overestimated" in st.flag_reason
    # equivalents set equal (as symmetrising makes them): chi2 ~ 0
    I = np.where(W > 0, S / np.maximum(W, 1), 0)
    sym = np.zeros_like(I)
    for R in TETRA.laue_operators:
        H, K, L = _hkl(grid)
        idx = grid.index(np.stack([H, K, L], -1) @ R)
        sym += I[idx[..., 2], idx[..., 1], idx[..., 0]]
    sym /= len(TETRA.laue_operators)
    st = statistics_of_arrays(grid, TETRA, (sym * W).astype(np.float32), W, V, shells=3)
    assert st.overall.chi2_nu < 1e-6
    assert st.flag and "symmetrised" in st.flag_reason


def test_i_over_sigma_equals_the_analytic_value():
    """signal = c sqrt(variance): I/sigma = signal / sqrt(variance) = c in every shell."""
    grid = _grid(17, 17, 13)
    rng = np.random.default_rng(2)
    W = rng.integers(0, 4, grid.shape).astype(np.float32)
    V = (rng.uniform(1, 9, grid.shape) * W * W).astype(np.float32)
    H, K, L = _hkl(grid)
    c = 2.0 + np.hypot(H, K)  # grows with |Q|: the shells' means differ
    S = (c * np.sqrt(V)).astype(np.float32)
    st = statistics_of_arrays(grid, TETRA, S, W, V, shells=4, min_voxels=1)
    q = np.sqrt(np.einsum("...i,ij,...j->...", np.stack([H, K, L], -1),
                          TETRA.B.T @ TETRA.B, np.stack([H, K, L], -1)))
    ratio = S.astype(float) / np.sqrt(V.astype(float), where=V > 0, out=np.ones(V.shape))
    for r in st.shells:
        inside = (q >= r.q_min) & (q < r.q_max) & (W > 0)
        assert r.measured == np.count_nonzero(inside)
        assert r.i_over_sigma == pytest.approx(ratio[inside].mean(), rel=1e-5)
    assert st.overall.i_over_sigma == pytest.approx(ratio[W > 0].mean(), rel=1e-5)
    # a constant ratio is that constant
    st = statistics_of_arrays(grid, TETRA, (3.0 * np.sqrt(V)).astype(np.float32), W, V,
                              shells=4, min_voxels=1)
    for r in st.shells + (st.overall,):
        assert r.i_over_sigma == pytest.approx(3.0, rel=1e-6)


def test_zero_sigma_voxels_are_counted_and_left_out():
    grid = _grid(21, 21, 15)
    S, W, V = _noisy(_truth(grid), np.random.default_rng(8))
    zero = (np.random.default_rng(9).random(grid.shape) < 0.05) & (W > 0)
    Vz = V.copy()
    Vz[zero] = 0
    Wu = W.copy()
    Wu[zero] = 0  # the same voxels unmeasured
    with np.errstate(all="raise"):
        a = statistics_of_arrays(grid, TETRA, S, W, Vz, shells=3, min_voxels=1)
    b = statistics_of_arrays(grid, TETRA, S, Wu, V, shells=3, min_voxels=1)
    assert a.overall.zero_sigma == np.count_nonzero(zero) > 0
    assert b.overall.zero_sigma == 0
    assert a.overall.measured == b.overall.measured + np.count_nonzero(zero)
    for x, y in zip(a.shells + (a.overall,), b.shells + (b.overall,)):
        assert (x.orbits, x.observations, x.nu) == (y.orbits, y.observations, y.nu)
        assert x.chi2 == pytest.approx(y.chi2, rel=1e-12)
        assert math.isfinite(x.chi2) and x.i_over_sigma == pytest.approx(y.i_over_sigma, rel=1e-12)
    assert sum(r.zero_sigma for r in a.shells) == np.count_nonzero(zero)
    assert "sigma == 0" in json.dumps(a.to_notes())


def test_cc_half_near_one_for_strong_signal_and_near_zero_for_noise():
    grid = _grid(25, 25, 17)
    rng = np.random.default_rng(4)
    total, a, b = _halves(_truth(grid, scale=100.0), rng)
    st = statistics_of_arrays(grid, TETRA, *total, half_a=a, half_b=b, shells=4)
    assert st.has_halves
    assert st.overall.cc_half > 0.99
    for r in st.shells:
        assert r.cc_half > 0.97, r
        assert r.cc_pairs == np.count_nonzero((a[1] > 0) & (b[1] > 0) & _in_shell(grid, r))
    total, a, b = _halves(_truth(grid, flat=True), rng)
    st = statistics_of_arrays(grid, TETRA, *total, half_a=a, half_b=b, shells=4)
    for r in st.shells + (st.overall,):
        assert abs(r.cc_half) < 4 / math.sqrt(r.cc_pairs), r
    # one half alone is refused
    with pytest.raises(ValueError, match="both halves"):
        statistics_of_arrays(grid, TETRA, *total, half_a=a)


def _in_shell(grid, r):
    H, K, L = _hkl(grid)
    h = np.stack([H, K, L], -1)
    q = np.sqrt(np.einsum("...i,ij,...j->...", h, TETRA.B.T @ TETRA.B, h))
    return (q >= r.q_min) & (q < r.q_max)


def test_slab_wise_equals_whole_volume():
    """Slabs of 1, 3 and 8 planes (each window a slab and its mirror) give the whole volume's
    figures (one window), CC1/2 included; a reader of arrays gives what the arrays give."""
    grid = _grid(21, 19, 17)
    rng = np.random.default_rng(6)
    total, a, b = _halves(_truth(grid), rng)
    whole = statistics_of_arrays(grid, TETRA, *total, half_a=a, half_b=b, planes=1000,
                                 shells=5, min_voxels=1)
    for planes in (1, 3, 8):
        calls = []

        def read(l0, l1, calls=calls):
            calls.append((l0, l1))
            return array_reader(*total)(l0, l1)

        st = volume_statistics(grid, TETRA, read, (array_reader(*a), array_reader(*b)),
                               planes=planes, shells=5, min_voxels=1)
        _assert_same(st, whole)
        read_planes = [p for l0, l1 in calls for p in range(l0, l1)]
        assert sorted(read_planes) == list(range(grid.l.n))  # each plane read once
        # a window: up to `planes` planes and their mirrors (one run where they meet)
        assert max(l1 - l0 for l0, l1 in calls) <= 2 * planes


def _assert_same(x, y):
    assert len(x.shells) == len(y.shells)
    for r, s in zip(x.shells + (x.overall,), y.shells + (y.overall,)):
        for k, v in r.as_dict().items():
            if isinstance(v, float):
                assert v == pytest.approx(s.as_dict()[k], rel=1e-10, abs=1e-12), k
            else:
                assert v == s.as_dict()[k], k


def test_cubic_groups_sample_a_sub_lattice():
    """m-3m mixes L with H and K: every orbit while the grid fits max_sample_voxels (the
    same in any slab size), else the orbits of a sub-lattice of stride s about hkl = 0,
    equal to the direct definition on that sub-lattice; the per-voxel figures stay whole."""
    crystal = Crystal("F m -3 m", UnitCell(5.0, 5.0, 5.0))
    grid = _grid(13, 13, 13, 0.5)
    rng = np.random.default_rng(7)
    W = rng.integers(0, 4, grid.shape).astype(np.float32)
    S = (rng.uniform(1, 50, grid.shape) * W).astype(np.float32)
    V = (rng.uniform(0.5, 5, grid.shape) * W).astype(np.float32)
    every = statistics_of_arrays(grid, crystal, S, W, V, planes=3, min_voxels=1)
    assert every.orbit_sample_stride == 1
    _assert_same(statistics_of_arrays(grid, crystal, S, W, V, planes=13, min_voxels=1), every)
    orbits, obs, chi2, nu = _direct(grid, crystal, S, W, V)
    assert (every.overall.orbits, every.overall.observations, every.overall.nu) == (orbits, obs, nu)
    assert every.overall.chi2 == pytest.approx(chi2, rel=1e-9)
    # max_sample_voxels below the grid: stride 3 (coprime with 1/step = 2; 2 would not be)
    st = statistics_of_arrays(grid, crystal, S, W, V, planes=4, min_voxels=1,
                              max_sample_voxels=grid.size // 8)
    assert st.orbit_sample_stride == 3
    assert "stride 3" in st.orbit_sample and "stride 3" in json.dumps(st.to_notes())
    sub = [range(0, 13, 3)] * 3  # i0 = 6: 0, 3, 6, 9, 12
    orbits, obs, chi2, nu = _direct(grid, crystal, S, W, V, sub=sub)
    o = st.overall
    assert (o.orbits, o.observations, o.nu) == (orbits, obs, nu)
    assert o.chi2 == pytest.approx(chi2, rel=1e-9)
    assert (o.measured, o.voxels) == (every.overall.measured, grid.size)
    assert o.i_over_sigma == pytest.approx(every.overall.i_over_sigma, rel=1e-12)
    st2 = statistics_of_arrays(grid, crystal, S, W, V, sample_stride=2, min_voxels=1)
    orbits, obs, chi2, nu = _direct(grid, crystal, S, W, V, sub=[range(0, 13, 2)] * 3)
    assert (st2.overall.orbits, st2.overall.observations, st2.overall.nu) == (orbits, obs, nu)
    assert st2.overall.chi2 == pytest.approx(chi2, rel=1e-9)


def test_bragg_exclusion_and_shell_limits():
    grid = _grid(21, 21, 15)
    S, W, V = _noisy(_truth(grid), np.random.default_rng(12), gap=0.0)
    H, K, L = _hkl(grid)
    d = np.stack([H - np.round(H), K - np.round(K), L - np.round(L)], -1)
    r = 0.26 * TETRA.cell.reciprocal_parameters[0]  # (1/A: a sphere in Q about each node)
    node = np.einsum("...i,ij,...j->...", d, TETRA.B.T @ TETRA.B, d) <= r * r
    S[node] *= 1000  # Bragg nodes: far off their sigma
    raw = statistics_of_arrays(grid, TETRA, S, W, V, shells=3)
    assert raw.overall.chi2_nu > 10 and raw.flag
    st = statistics_of_arrays(grid, TETRA, S, W, V, shells=3, bragg_exclusion=r)
    assert st.overall.excluded == np.count_nonzero(node)
    assert st.overall.measured == grid.size - np.count_nonzero(node)
    assert st.overall.chi2_nu == pytest.approx(1.0, rel=0.1) and not st.flag
    # q_max given: shells end there, voxels beyond are counted apart; nothing measured
    # below |Q| = 0.37: the innermost shell (0 - 0.378) holds few measured voxels, its
    # figures are left out and it says so
    q_max = 0.6
    h = np.stack([H, K, L], -1)
    q = np.sqrt(np.einsum("...i,ij,...j->...", h, TETRA.B.T @ TETRA.B, h))
    W = np.where(q < 0.37, 0, W).astype(np.float32)
    st = statistics_of_arrays(grid, TETRA, S, W, V, shells=4, q_max=q_max, min_voxels=200)
    assert st.shells[-1].q_max == pytest.approx(q_max)
    assert st.q_max_from == "given"
    assert st.beyond == np.count_nonzero(q >= q_max) == st.beyond_measured
    edges = [r.q_max ** 3 for r in st.shells]
    assert np.allclose(np.diff([0] + edges), q_max ** 3 / 4)  # equal volumes
    first = st.shells[0]
    assert 0 < first.measured < 200 and first.too_few and first.chi2_nu is None
    assert first.i_over_sigma is None and not st.shells[1].too_few
    assert "too few" in "\n".join(st.log_lines())


def test_notes_log_and_picture(tmp_path):
    grid = _grid(21, 21, 15)
    total, a, b = _halves(_truth(grid), np.random.default_rng(13))
    S, W, V = total
    st = statistics_of_arrays(grid, TETRA, S, W, V * 2.2, half_a=a, half_b=b, shells=4)
    notes = st.to_notes()
    again = json.loads(json.dumps(notes, allow_nan=False))
    assert again["overall"]["chi2_nu"] == pytest.approx(st.overall.chi2_nu)
    assert len(again["shells"]) == 4 and again["flag"] == st.flag
    lines = st.log_lines()
    assert len(lines) == 2 + 4 + 1 + 1 and "overall" in lines[-2]
    png = tmp_path / "stats" / "statistics.png"
    plot_statistics(st, png, "xtal 300K transform")
    assert png.stat().st_size > 10_000
    # flagged (sigma overstated here), no halves, a variance-free volume
    st = statistics_of_arrays(grid, TETRA, S, W, None, shells=4)
    assert not st.has_variance and st.overall.chi2_nu is None and st.overall.i_over_sigma is None
    assert st.overall.measured == np.count_nonzero(W > 0) and not st.flag
    plot_statistics(st, tmp_path / "plain.png", "no variance")



def test_cc_half_of_half_sets_on_their_own_grid():
    """with_half_sets: two halves = truth + independent noise of known size, on the binned
    grid: CC1/2 = var(truth) / (var(truth) + var(noise)) in a shell, for pairs measured in
    both; voxels measured in one half only are left out."""
    from hklflow.algorithms.statistics.shells import with_half_sets
    from hklflow.model.crystal import Crystal, UnitCell

    crystal = Crystal("P m m m", UnitCell(5.0, 6.0, 7.0, 90, 90, 90))
    fine = Grid(Axis(-3.0, 0.25, 25), Axis(-3.0, 0.25, 25), Axis(-3.0, 0.25, 25))
    rng = np.random.default_rng(4)
    signal = rng.uniform(1, 2, fine.shape).astype(np.float32)
    weight = np.ones(fine.shape, np.float32)
    stats = statistics_of_arrays(fine, crystal, signal, weight, signal * 0.01, shells=3)
    coarse = Grid(Axis(-2.875, 0.5, 13), Axis(-2.875, 0.5, 13), Axis(-2.875, 0.5, 13))
    truth = rng.normal(10, 2.0, coarse.shape)  # var 4
    noise_sd = 2.0  # var 4 per half: CC1/2 = 4 / (4 + 4) = 0.5
    wa = np.full(coarse.shape, 3.0)
    wb = np.full(coarse.shape, 5.0)
    wb[::2] = 0  # half of the planes measured in A alone
    a = (truth + rng.normal(0, noise_sd, coarse.shape)) * wa
    b = (truth + rng.normal(0, noise_sd, coarse.shape)) * wb
    out = with_half_sets(stats, coarse, crystal, (a, wa), (b, wb), "frames in blocks")
    assert out.has_halves and out.extra["cc_half_split"] == "frames in blocks"
    # the pairs: voxels measured in both, within the shells (a corner lies beyond them)
    assert 0.95 * np.count_nonzero(wb > 0) < out.overall.cc_pairs <= np.count_nonzero(wb > 0)
    assert abs(out.overall.cc_half - 0.5) < 0.05, out.overall.cc_half
    assert sum(r.cc_pairs for r in out.shells) == out.overall.cc_pairs
    assert all(r.cc_half is None or abs(r.cc_half - 0.5) < 0.12 for r in out.shells)
    # the figures of the full grid are kept
    assert [r.chi2_nu for r in out.shells] == [r.chi2_nu for r in stats.shells]
