"""hklflow.algorithms.orientation.indexing: orientation from scratch on synthetic rotation-scan peak lists.

Synthetic data (`_simulate`), made honestly from the TRUE cell and a seeded random U:
allowed reflections (gemmi absences) with d >= d_min (d_min >= 0.8 A, raised so that there are
at most ~2500 before the cuts below); kept are those that a right-handed rotation about the
sample-frame y axis over phi in [0, 180) deg brings onto the Ewald sphere for lambda = 0.4 A
(beam along z: (R(phi) q)_z = -lambda |q|^2 / 2; this leaves the blind cone around the axis),
of which a random 80% are "found" (weak or overlapped ones missed); Gaussian noise of 1e-3 |q|
per component; plus 10% spurious vectors with |q| drawn from the true ones and random
directions.  The indexer gets an APPROXIMATE cell: free lengths 2-3% off in different
directions, free angles 0.5 deg off (crystal-system constraints kept).

Setting relation tested: with column hkl, U_found B_found = U_true B_true S and
hkl_found = S^-1 hkl_true for one S of the setting group; for a Laue group that is the whole
lattice symmetry, S = R^T for a proper rotation R of `Crystal.laue_operators` (row-vector
operators, h' = h R), so in row form hkl_found = hkl_true R^-1, an equivalent index.
"""
from __future__ import annotations

import time

import numpy as np
import pytest

from hklflow.algorithms.orientation.indexing import (IndexingSolution, index_from_scratch,
                                                     setting_group)
from hklflow.base.errors import ConfigError, IndexingError
from hklflow.model.crystal import Crystal, UnitCell, random_rotation
from hklflow.settings.params import IndexingParams

from experiment_helpers import rotation_angle_deg

LAMBDA = 0.4

# name: (space group, true cell, merohedral: Laue group smaller than the lattice symmetry)
CASES = {
    "Fm-3m": ("F m -3 m", (5.43, 5.43, 5.43, 90, 90, 90), False),
    "Pm-3m": ("P m -3 m", (3.905, 3.905, 3.905, 90, 90, 90), False),
    "I4/mmm": ("I 4/m m m", (3.8, 3.8, 13.2, 90, 90, 90), False),
    "P42/mnm": ("P 42/m n m", (4.59, 4.59, 2.96, 90, 90, 90), False),
    "P4/m": ("P 4/m", (5.2, 5.2, 7.1, 90, 90, 90), True),
    "Pbca": ("P b c a", (5.3, 5.9, 8.1, 90, 90, 90), False),
    "Cmcm": ("C m c m", (3.2, 10.5, 4.3, 90, 90, 90), False),
    "P63/mmc": ("P 63/m m c", (3.2, 3.2, 5.2, 90, 90, 120), False),
    "R-3m:H": ("R -3 m:H", (4.9, 4.9, 14.0, 90, 90, 120), False),
    "P-3m1": ("P -3 m 1", (4.0, 4.0, 6.0, 90, 90, 120), True),
    "C2/c": ("C 1 2/c 1", (9.7, 8.9, 5.3, 90, 105, 90), False),
    "P21/c": ("P 1 21/c 1", (7.1, 5.9, 9.8, 90, 98, 90), False),
    "P-1": ("P -1", (5.1, 6.3, 7.4, 82, 95, 103), False),
}
_LENGTH_ERRORS = [(0.03, -0.025, 0.02), (-0.025, 0.02, 0.03), (0.02, 0.03, -0.025)]


# --------------------------------------------------------------------------------------
# Synthetic data
# --------------------------------------------------------------------------------------
def _in_scan(q, lam=LAMBDA, phi_range=180.0):
    """True where a rotation about +y by phi in [0, phi_range) deg meets the Ewald sphere."""
    t = -lam * np.sum(q * q, axis=1) / 2          # required (R q)_z
    rho = np.hypot(q[:, 0], q[:, 2])              # (R q)_z = rho cos(phi + psi)
    psi = np.arctan2(q[:, 0], q[:, 2])
    reach = rho > np.abs(t)
    c = np.arccos(np.clip(t / np.where(reach, rho, 1.0), -1.0, 1.0))
    keep = np.zeros(len(q), dtype=bool)
    for sign in (1, -1):
        phi = np.degrees(-psi + sign * c) % 360.0
        keep |= reach & (phi < phi_range)
    return keep


def _simulate(sg, cell, seed, d_min=None, spurious=0.1, noise=1e-3, found=0.8, phi_range=180.0):
    """q_obs (n, 3), true hkl (n, 3) (0 for spurious), true mask, U_true."""
    rng = np.random.default_rng(seed)
    cr = Crystal(sg, cell)
    if d_min is None:
        per_cell = {"P": 1, "A": 2, "B": 2, "C": 2, "I": 2, "F": 4, "R": 3, "H": 3}[cr.centring]
        d_min = max(0.8, (4.19 * cell.volume / per_cell / 2500) ** (1 / 3))
    hkl = cr.reflections_within(d_min)
    U = random_rotation(rng)
    q = hkl @ (U @ cell.B).T
    k = _in_scan(q, phi_range=phi_range) & (rng.random(len(q)) < found)
    hkl, q = hkl[k], q[k]
    qn = np.linalg.norm(q, axis=1)
    q = q + rng.normal(size=q.shape) * (noise * qn)[:, None]
    ns = int(round(spurious * len(q)))
    d = rng.normal(size=(ns, 3))
    d /= np.linalg.norm(d, axis=1)[:, None]
    qs = d * rng.choice(qn, ns)[:, None]
    q_all = np.concatenate([q, qs])
    h_all = np.concatenate([hkl, np.zeros((ns, 3), dtype=int)])
    true = np.r_[np.ones(len(q), bool), np.zeros(ns, bool)]
    p = rng.permutation(len(q_all))
    return q_all[p], h_all[p], true[p], U


def _approximate(crystal: Crystal, rel, dang=0.5) -> UnitCell:
    cons = crystal.constraints
    v = cons.free_values(crystal.cell).astype(float)
    n_len = 0
    for k, name in enumerate(cons.free):
        if name in ("a", "b", "c"):
            v[k] *= 1 + rel[n_len % 3]
            n_len += 1
        else:
            v[k] += dang
    return cons.expand(v)


def _match(sol: IndexingSolution, U_true, B_true, ops):
    """The S of `ops` with U B = U_true B_true S (best match) and its relative error."""
    errs = [np.linalg.norm(sol.UB - U_true @ B_true @ S) / np.linalg.norm(B_true) for S in ops]
    k = int(np.argmin(errs))
    return ops[k], errs[k]


def _proper_laue_transposed(crystal):
    return np.array([R.T for R in crystal.laue_operators if round(np.linalg.det(R)) == 1])


def _as_set(mats):
    return {tuple(np.asarray(m).ravel()) for m in mats}


# --------------------------------------------------------------------------------------
# Setting group against gemmi's Laue group
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(CASES))
def test_setting_group_is_the_rotation_part_of_the_laue_group(name):
    sg, cell, merohedral = CASES[name]
    crystal = Crystal(sg, UnitCell(*cell))
    ops = setting_group(crystal)
    laue = _as_set(_proper_laue_transposed(crystal))
    assert np.array_equal(ops[0], np.eye(3, dtype=int))
    assert all(round(np.linalg.det(S)) == 1 for S in ops)
    if merohedral:
        assert laue < _as_set(ops) and len(ops) == 2 * len(laue)
    else:
        assert _as_set(ops) == laue
    # every S keeps the metric: B S B^-1 is a rotation
    B = crystal.cell.B
    for S in ops:
        M = B @ S @ np.linalg.inv(B)
        np.testing.assert_allclose(M @ M.T, np.eye(3), atol=1e-12)


# --------------------------------------------------------------------------------------
# Indexing the synthetic cases
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(CASES))
def test_index_from_scratch(name):
    sg, cell_p, merohedral = CASES[name]
    cell = UnitCell(*cell_p)
    crystal = Crystal(sg, cell)
    seed = list(CASES).index(name)
    q, hkl_true, true, U_true = _simulate(sg, cell, seed=1000 + seed)
    approx = Crystal(sg, _approximate(crystal, _LENGTH_ERRORS[seed % 3]))
    assert max(abs(x / y - 1) for x, y in zip(approx.cell.parameters[:3], cell_p[:3])) > 0.019

    t0 = time.perf_counter()
    sol = index_from_scratch(q, approx)
    seconds = time.perf_counter() - t0

    # U is a proper rotation, UB = U B(cell)
    np.testing.assert_allclose(sol.U @ sol.U.T, np.eye(3), atol=1e-10)
    assert np.linalg.det(sol.U) == pytest.approx(1.0, abs=1e-10)
    np.testing.assert_allclose(sol.UB, sol.U @ sol.cell.B, atol=1e-14)

    # the same lattice up to a symmetry setting S: S = R^T for a Laue rotation R
    laue_ops = _proper_laue_transposed(crystal)
    S, err = _match(sol, U_true, cell.B, sol.equivalent_settings)
    assert err < 1e-3, f"UB differs from the true UB by {err:.2e} (relative)"
    if merohedral:
        assert any("merohedral" in n for n in sol.notes)
    else:
        assert tuple(S.ravel()) in _as_set(laue_ops)

    # orientation: U_true B S B^-1 is the equivalent true orientation
    M = cell.B @ S @ np.linalg.inv(cell.B)
    ang = rotation_angle_deg(sol.U, U_true @ M)
    assert ang < 0.05

    # hkl: found = S^-1 true (columns); rows: true @ S^-T
    hkl_expect = hkl_true @ np.rint(np.linalg.inv(S)).astype(int).T
    right = sol.indexed & np.all(sol.hkl == hkl_expect, axis=1) & true
    frac_true = right.sum() / true.sum()
    assert frac_true >= 0.95
    assert (sol.indexed & ~true).sum() <= 0.2 * (~true).sum()
    assert sol.fraction == pytest.approx(sol.indexed.mean())
    assert not crystal.is_absent(sol.hkl[sol.indexed]).any()
    assert sol.rms_hkl < 0.03

    # the quick cell refinement
    cell_err = max(abs(x / y - 1) for x, y in zip(sol.cell.parameters[:3], cell_p[:3]))
    ang_err = max(abs(x - y) for x, y in zip(sol.cell.parameters[3:], cell_p[3:]))
    assert cell_err < 5e-4
    assert ang_err < 0.05
    assert sol.seconds < 5.0 and seconds < 5.0
    print(f"\n{name}: n={len(q)} fraction={sol.fraction:.3f} true indexed={frac_true:.3f} "
          f"orientation error={ang:.4f} deg UB error={err:.1e} cell error={cell_err:.1e} "
          f"angle error={ang_err:.3f} deg candidates={sol.n_candidates_tried} "
          f"time={seconds:.3f} s")


def test_large_peak_list_and_full_rotation():
    """~5000 vectors from a 360 deg scan, 20% spurious: still quick."""
    sg, cell_p, _ = CASES["P21/c"]
    cell = UnitCell(*cell_p)
    q, hkl_true, true, U_true = _simulate(sg, cell, seed=7, d_min=0.62, spurious=0.2,
                                          phi_range=360.0)
    assert len(q) > 4000
    approx = Crystal(sg, _approximate(Crystal(sg, cell), (-0.03, 0.03, 0.025), dang=-0.5))
    sol = index_from_scratch(q, approx)
    S, err = _match(sol, U_true, cell.B, sol.equivalent_settings)
    assert err < 1e-3
    assert rotation_angle_deg(sol.U, U_true @ cell.B @ S @ np.linalg.inv(cell.B)) < 0.05
    assert sol.fraction > 0.8
    assert sol.seconds < 5.0


def test_same_setting_whatever_the_order_or_equivalent_truth():
    """The reported setting is a function of the lattice, not of the row order or of which
    symmetry-equivalent U generated the data."""
    sg, cell_p, _ = CASES["I4/mmm"]
    cell = UnitCell(*cell_p)
    crystal = Crystal(sg, cell)
    q, hkl_true, true, U_true = _simulate(sg, cell, seed=11)
    approx = Crystal(sg, _approximate(crystal, (0.02, -0.02, 0)))
    sol = index_from_scratch(q, approx)
    perm = np.random.default_rng(3).permutation(len(q))
    sol2 = index_from_scratch(q[perm], approx)
    np.testing.assert_allclose(sol2.U, sol.U, atol=1e-6)
    np.testing.assert_array_equal(sol2.hkl, sol.hkl[perm])
    # the found U is the equivalent setting closest to the identity
    B = sol.cell.B
    traces = [np.trace(sol.U @ B @ S @ np.linalg.inv(B)) for S in sol.equivalent_settings]
    assert np.trace(sol.U) == pytest.approx(max(traces), abs=1e-9)


def test_intensities_pick_the_strong_vectors():
    """30% spurious (weak) vectors: with intensities the search uses the strong ones."""
    sg, cell_p, _ = CASES["C2/c"]
    cell = UnitCell(*cell_p)
    q, hkl_true, true, U_true = _simulate(sg, cell, seed=5, spurious=0.3)
    rng = np.random.default_rng(0)
    inten = np.where(true, rng.exponential(100.0, len(q)), rng.exponential(3.0, len(q)))
    approx = Crystal(sg, _approximate(Crystal(sg, cell), (0.03, -0.02, 0.02)))
    sol = index_from_scratch(q, approx, intensities=inten)
    S, err = _match(sol, U_true, cell.B, sol.equivalent_settings)
    assert err < 1e-3
    assert sol.fraction > 0.7


@pytest.mark.parametrize("sg,cell_p,rel", [
    # a, b 1.9% apart, no absences to tell them apart
    ("P m m m", (5.40, 5.50, 7.9, 90, 90, 90), (0.005, -0.004, 0.003)),
    # a ~ c and beta ~ 90
    ("P 1 21/c 1", (5.5, 7.0, 5.6, 90, 91.0, 90), (0.005, -0.004, 0.003)),
    # c ~ a sqrt 2: pseudo-cubic F (settings along the other cube axes break the metric)
    ("I 4/m m m", (4.0, 4.0, 5.7, 90, 90, 90), (0.03, -0.025, 0)),
    # LaAlO3-like cell: pseudo-cubic rhombohedral lattice, here without the c-glide absences
    ("R -3 m:H", (5.365, 5.365, 13.11, 90, 90, 120), (0.03, -0.025, 0)),
    # pseudo-cubic F, axes 0.9% apart: the given cell must be better than that
    ("F m m m", (5.6, 5.65, 5.7, 90, 90, 90), (0.002, -0.001, 0.001)),
])
def test_pseudo_symmetric_cell_follows_the_given_setting(sg, cell_p, rel):
    """Settings of a pseudo-symmetric lattice index alike; the indexer keeps those whose free
    fit obeys the crystal system and then the one closest to the given cell."""
    cell = UnitCell(*cell_p)
    crystal = Crystal(sg, cell)
    for seed in range(3):
        q, hkl_true, true, U_true = _simulate(sg, cell, seed=300 + seed)
        approx = Crystal(sg, _approximate(crystal, rel, dang=0.2))
        sol = index_from_scratch(q, approx)
        S, err = _match(sol, U_true, cell.B, sol.equivalent_settings)
        assert err < 1e-3
        assert any("pseudo-symmetry" in n for n in sol.notes)


def test_second_grain_is_noted():
    sg, cell_p, _ = CASES["C2/c"]
    cell = UnitCell(*cell_p)
    q1, _, _, U1 = _simulate(sg, cell, seed=31, spurious=0.0)
    q2, *_ = _simulate(sg, cell, seed=32, spurious=0.0)
    q = np.concatenate([q1, q2[: len(q2) // 2]])
    sol = index_from_scratch(q, Crystal(sg, cell))
    S, err = _match(sol, U1, cell.B, sol.equivalent_settings)
    assert err < 1e-3
    assert 0.6 < sol.fraction < 0.75
    assert any("second grain" in n for n in sol.notes)


# --------------------------------------------------------------------------------------
# Failures
# --------------------------------------------------------------------------------------
def test_cell_20_percent_off_raises():
    sg, cell_p, _ = CASES["Fm-3m"]
    cell = UnitCell(*cell_p)
    q, *_ = _simulate(sg, cell, seed=21)
    for f in (1.2, 0.8):
        with pytest.raises(IndexingError, match=r"could not index: best fraction 0\.\d\d < 0\.5"
                                                r".*wrong space group or cell"):
            index_from_scratch(q, Crystal(sg, cell.scaled(f)))


def test_wrong_space_group_raises():
    sg, cell_p, _ = CASES["I4/mmm"]
    q, *_ = _simulate(sg, UnitCell(*cell_p), seed=22)
    with pytest.raises(IndexingError, match="could not index"):
        index_from_scratch(q, Crystal("P 63/m m c", UnitCell(3.8, 3.8, 13.2, 90, 90, 120)))
    with pytest.raises(IndexingError, match="could not index"):
        index_from_scratch(q, Crystal("F m -3 m", UnitCell(5.4, 5.4, 5.4)))


@pytest.mark.parametrize("name", ["Fm-3m", "C2/c", "P-1"])
def test_random_vectors_raise(name):
    sg, cell_p, _ = CASES[name]
    rng = np.random.default_rng(4)
    q = rng.normal(size=(500, 3))
    q *= (rng.uniform(0.15, 1.2, 500) / np.linalg.norm(q, axis=1))[:, None]
    t0 = time.perf_counter()
    with pytest.raises(IndexingError, match="could not index"):
        index_from_scratch(q, Crystal(sg, UnitCell(*cell_p)))
    assert time.perf_counter() - t0 < 5.0


def test_bad_input():
    crystal = Crystal("P m -3 m", UnitCell(3.9, 3.9, 3.9))
    with pytest.raises(ValueError, match=r"shape \(n, 3\)"):
        index_from_scratch(np.zeros((5, 2)), crystal)
    with pytest.raises(IndexingError, match="usable vectors"):
        index_from_scratch(np.array([[0.1, 0, 0], [0, np.nan, 0]]), crystal)
    with pytest.raises(ValueError, match="intensities"):
        index_from_scratch(np.eye(3) * 0.25, crystal, intensities=[1, 2])


def test_non_finite_rows_are_not_indexed():
    sg, cell_p, _ = CASES["Pm-3m"]
    cell = UnitCell(*cell_p)
    q, *_ = _simulate(sg, cell, seed=23)
    q[:5] = np.nan
    q[5] = 0.0
    sol = index_from_scratch(q, Crystal(sg, cell))
    assert not sol.indexed[:6].any()
    assert (sol.hkl[:6] == 0).all()
    assert sol.fraction > 0.8


@pytest.mark.parametrize("kw", [
    {"max_peaks": 0}, {"hkl_tolerance": 0.0}, {"hkl_tolerance": 0.6}, {"angle_tolerance_deg": -1},
    {"length_tolerance": float("nan")}, {"min_fraction": 1.5}, {"n_seeds": 1},
    {"max_pairs": 2.5}, {"max_cell_change": 0}, {"refine_cycles": True},
])
def test_params_are_validated(kw):
    with pytest.raises(ConfigError, match=r"reduction\.indexing\.|IndexingParams\."):
        IndexingParams.defaults(**kw)


def test_params_frozen_and_defaults():
    p = IndexingParams.defaults()
    assert (p.max_peaks, p.hkl_tolerance, p.angle_tolerance_deg, p.length_tolerance,
            p.min_fraction) == (300, 0.12, 2.0, 0.04, 0.5)
    with pytest.raises(Exception):
        p.max_peaks = 10  # type: ignore[misc]
