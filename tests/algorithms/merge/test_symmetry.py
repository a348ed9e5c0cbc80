"""hklflow.algorithms.merge.symmetry: volumes symmetrised by the Laue group.

The symmetrisation is checked against cctbx (run in a subprocess, tests/reference_helpers):
a delta at a general position, symmetrised, must land on exactly the Laue-equivalent
positions cctbx's derived Laue group gives, for hexagonal, trigonal (hexagonal and
rhombohedral axes), tetragonal, monoclinic and cubic groups; and against a direct numpy
gather (hkl R -> nearest voxel) on grids whose limits are not symmetric.  A Laue-invariant
intensity comes out unchanged with its gaps filled; a grid the group does not map onto
itself is refused naming the config keys; the chain of transversals gives every operator
once; the symmetrisation by flips (array views, on the box of the values) equals the gather
kernel's (merge.kernels).
"""
from __future__ import annotations

import numpy as np
import pytest

from hklflow.algorithms.merge.symmetry import GridSymmetryError, index_maps, symmetrize_arrays
from hklflow.model.crystal import Crystal, UnitCell
from hklflow.model.grid import Axis, Grid

from reference_helpers import cctbx_answer
from volume_helpers import GROUPS, HEX, TETRA, random_volume


@pytest.fixture(scope="module")
def cctbx_laue():
    """cctbx's derived Laue group rotations (h' = h R) for GROUPS."""
    ans = cctbx_answer({"space_groups": {"symbols": list(GROUPS)}})
    return {s: (np.array(g["laue_rotations"]), g["laue_group"])
            for s, g in zip(GROUPS, ans["space_groups"])}


@pytest.mark.parametrize("symbol", list(GROUPS))
def test_delta_lands_on_cctbx_equivalents(symbol, cctbx_laue):
    crystal = Crystal(symbol, UnitCell(*GROUPS[symbol]))
    rotations, laue = cctbx_laue[symbol]
    grid = Grid(Axis(-4.0, 0.25, 33), Axis(-4.0, 0.25, 33), Axis(-4.0, 0.25, 33))
    for g in ([1.5, 0.25, 2.75], [-0.75, 1.25, 0.5]):  # general positions
        g = np.array(g)
        expected = {tuple(v) for v in np.round(g @ rotations, 6)}  # cctbx's orbit (Friedel incl.)
        assert len(expected) == len(rotations)  # general: orbit as large as the group
        signal = np.zeros(grid.shape, np.float32)
        weight = np.zeros(grid.shape, np.float32)
        ih, ik, il = grid.index(g)
        signal[il, ik, ih], weight[il, ik, ih] = 7.0, 1.0
        s, w = symmetrize_arrays(signal, weight, grid, crystal.laue_operators, symbol)
        il, ik, ih = np.nonzero(w)
        got = {tuple(v) for v in np.round(np.stack([grid.h.values[ih], grid.k.values[ik],
                                                    grid.l.values[il]], axis=1), 6)}
        assert got == expected, (symbol, laue, sorted(got ^ expected)[:6])
        assert np.all(w[w > 0] == 1.0) and np.all(s[w > 0] == 7.0)


def _numpy_reference(signal, grid, operators):
    """Direct definition: out[h] = sum over R of signal at the voxel nearest h R."""
    nl, nk, nh = signal.shape
    il, ik, ih = np.meshgrid(np.arange(nl), np.arange(nk), np.arange(nh), indexing="ij")
    hkl = np.stack([grid.h.values[ih], grid.k.values[ik], grid.l.values[il]], axis=-1)
    out = np.zeros(signal.shape)
    for R in operators:
        src = grid.index(hkl @ R)
        ok = grid.contains(src)
        out[ok] += signal[src[..., 2][ok], src[..., 1][ok], src[..., 0][ok]]
    return out


@pytest.mark.parametrize("symbol,grid", [
    ("P 6/m m m", Grid(Axis(-3.0, 0.25, 25), Axis(-2.0, 0.25, 17), Axis(-1.5, 0.5, 9))),
    ("R -3 m:H", Grid(Axis(-2.0, 0.5, 9), Axis(-1.5, 0.5, 11), Axis(-2.0, 0.25, 23))),
    ("F m -3 m", Grid(Axis(-2.0, 0.5, 9), Axis(-2.0, 0.5, 11), Axis(-3.0, 0.5, 12))),
    ("C 1 2/c 1", Grid(Axis(-1.05, 0.1, 30), Axis(-1.0, 0.25, 7), Axis(0.0, 0.2, 11))),
])
def test_symmetrize_matches_direct_gather_on_uneven_grids(symbol, grid):
    crystal = Crystal(symbol, UnitCell(*GROUPS[symbol]))
    vol = random_volume(grid, 7, gap=0.2)
    s, w = symmetrize_arrays(vol.signal, vol.weight, grid, crystal.laue_operators)
    np.testing.assert_allclose(s, _numpy_reference(vol.signal, grid, crystal.laue_operators),
                               rtol=1e-6)
    np.testing.assert_allclose(w, _numpy_reference(vol.weight, grid, crystal.laue_operators),
                               rtol=1e-6)


@pytest.mark.parametrize("symbol", ["P 6/m m m", "P -3 1 m", "F m -3 m", "C 1 2/c 1"])
def test_symmetric_intensity_unchanged_and_gaps_filled(symbol):
    """A Laue-invariant intensity measured with uneven weights and gaps comes out unchanged
    wherever anything was measured, and the gaps are filled."""
    crystal = Crystal(symbol, UnitCell(*GROUPS[symbol]))
    grid = Grid(Axis(-3.0, 0.25, 25), Axis(-3.0, 0.25, 25), Axis(-2.0, 0.25, 17))
    L, K, H = np.meshgrid(grid.l.values, grid.k.values, grid.h.values, indexing="ij")
    hkl = np.stack([H, K, L], axis=-1)
    G = crystal.cell.reciprocal_metric
    intensity = np.zeros(grid.shape)
    for R in crystal.laue_operators:  # sum over the group of any function: invariant
        for centre, width in (([1.1, 0.3, 0.7], 0.02), ([0.0, 2.0, 1.0], 0.05)):
            d = hkl @ R - centre
            intensity += np.exp(-np.einsum("...i,ij,...j->...", d, G, d) / width)
    intensity += 0.01
    rng = np.random.default_rng(3)
    weight = rng.uniform(0.2, 3.0, grid.shape)
    weight[rng.random(grid.shape) < 0.4] = 0.0
    s, w = symmetrize_arrays((intensity * weight).astype(np.float32), weight.astype(np.float32),
                             grid, crystal.laue_operators)
    measured = w > 0
    np.testing.assert_allclose(s[measured] / w[measured], intensity[measured], rtol=2e-5)
    assert measured.mean() > (weight > 0).mean() + 0.2


def test_incompatible_grid_names_the_config_keys():
    hexa = Crystal("P 6/m m m", UnitCell(*HEX)).laue_operators
    with pytest.raises(GridSymmetryError) as err:
        index_maps(Grid(Axis(-3, 0.1, 61), Axis(-3, 0.05, 121), Axis(-2, 0.5, 9)), hexa, "6/mmm")
    msg = str(err.value)
    assert "reduction.transform.grid.h and reduction.transform.grid.k" in msg and "same step" in msg
    assert "6/mmm" in msg
    tetra = Crystal("I 4/m m m", UnitCell(*TETRA)).laue_operators
    with pytest.raises(GridSymmetryError, match=r"reduction\.transform\.grid\.l.*symmetric about 0"):
        index_maps(Grid(Axis(-3, 0.1, 61), Axis(-3, 0.1, 61), Axis(-2.03, 0.1, 41)), tetra)
    # h and k not sharing a start: 4-fold operators map one onto the other between centres
    with pytest.raises(GridSymmetryError, match=r"grid\.k"):
        index_maps(Grid(Axis(-3, 0.1, 61), Axis(-2.95, 0.1, 60), Axis(-2, 0.1, 41)), tetra)
    # compatible although not symmetric: half-voxel offsets about 0, or a half space in l
    index_maps(Grid(Axis(-2.95, 0.1, 60), Axis(-2.95, 0.1, 60), Axis(0.0, 0.1, 21)), tetra)
    # monoclinic (2/m) never mixes axes: steps may differ
    mono = Crystal("C 1 2/c 1", UnitCell(*GROUPS["C 1 2/c 1"])).laue_operators
    index_maps(Grid(Axis(-3, 0.1, 61), Axis(-2, 0.05, 81), Axis(-1, 0.2, 11)), mono)


CELLS = {**GROUPS, "P 4/m": TETRA, "P -1": (5.1, 6.2, 7.3, 80.0, 85.0, 95.0)}


@pytest.mark.parametrize("symbol", ["I 4/m m m", "P m m m", "P 4/m", "C 1 2/c 1", "P -1",
                                    "F m -3 m", "P 6/m m m", "R -3 m:R"])
def test_transversal_chain_gives_every_operator_once(symbol):
    """Every operator of the group is exactly one product t_n ... t_1 of the chain's
    transversals, with fewer reads than operators."""
    from itertools import product

    from hklflow.algorithms.merge.symmetry import transversal_chain

    ops = Crystal(symbol, UnitCell(*CELLS[symbol])).laue_operators
    chain = transversal_chain(ops)
    products = []
    for ts in product(*chain):
        g = np.eye(3, dtype=int)
        for t in ts[::-1]:  # t_n ... t_1
            g = g @ t
        products.append(tuple(g.ravel()))
    assert sorted(products) == sorted(tuple(R.ravel()) for R in ops)
    reads = sum(len(t) for t in chain)
    assert reads <= len(ops) and (len(ops) < 16 or reads <= len(ops) / 2)


@pytest.mark.parametrize("symbol,grid,planned", [
    ("I 4/m m m", Grid(Axis(-2.0, 0.25, 17), Axis(-2.0, 0.25, 17), Axis(-3.0, 0.25, 25)), True),
    ("P 4/m", Grid(Axis(-1.5, 0.5, 7), Axis(-1.5, 0.5, 7), Axis(-2.0, 0.5, 9)), True),
    ("P m m m", Grid(Axis(-2.0, 0.25, 17), Axis(-1.0, 0.1, 21), Axis(-3.0, 0.5, 13)), True),
    ("C 1 2/c 1", Grid(Axis(-1.0, 0.1, 21), Axis(-1.0, 0.25, 9), Axis(-1.0, 0.2, 11)), True),
    ("P -1", Grid(Axis(-1.0, 0.1, 21), Axis(-1.0, 0.25, 9), Axis(-1.0, 0.2, 11)), True),
    # an L range not symmetric about 0, H and K of different lengths: the gather kernel
    ("I 4/m m m", Grid(Axis(-2.0, 0.25, 17), Axis(-2.0, 0.25, 17), Axis(-3.0, 0.25, 21)), False),
    ("P 4/m", Grid(Axis(-1.5, 0.5, 7), Axis(-2.5, 0.5, 11), Axis(-2.0, 0.5, 9)), False),
    ("P 6/m m m", Grid(Axis(-3.0, 0.25, 25), Axis(-3.0, 0.25, 25), Axis(-2.0, 0.25, 17)), False),
    ("F m -3 m", Grid(Axis(-2.0, 0.5, 9), Axis(-2.0, 0.5, 9), Axis(-2.0, 0.5, 9)), False),
])
def test_flips_equal_the_gather_kernel(symbol, grid, planned):
    """Where every operator maps the grid onto itself by flips and transposes, the
    symmetrisation by array views gives what the gather kernel gives (float64 sums in
    another order: equal to float32 rounding); elsewhere the gather kernel is used."""
    from hklflow.algorithms.merge.symmetry import (flip_plan, index_maps, symmetrize_flips,
                                                   symmetrize_slab)

    ops = Crystal(symbol, UnitCell(*CELLS[symbol])).laue_operators
    plan = flip_plan(grid, ops)
    assert (plan is not None) == planned
    if plan is None:
        return
    vol = random_volume(grid, 5, gap=0.3)
    s, w = symmetrize_flips(plan, vol.signal, vol.weight, vol.signal[::-1], vol.weight[::-1])
    s0, w0, inside = symmetrize_slab(vol.signal, vol.weight, index_maps(grid, ops), 0, grid.l.n)
    assert inside == grid.size * len(ops)
    np.testing.assert_allclose(s, s0, rtol=3e-7)
    np.testing.assert_allclose(w, w0, rtol=3e-7)
    # float64 arrays of the same values: the same sums, and the arrays left as they were
    # (a group with no operator keeping L but the identity, -1, once summed into them)
    signal, weight = vol.signal.astype(np.float64), vol.weight.astype(np.float64)
    s64, w64 = symmetrize_flips(plan, signal, weight, signal[::-1], weight[::-1])
    assert np.array_equal(signal, vol.signal) and np.array_equal(weight, vol.weight)
    assert np.array_equal(s64, s) and np.array_equal(w64, w)


@pytest.mark.parametrize("symbol,grid", [
    ("I 4/m m m", Grid(Axis(-2.0, 0.25, 17), Axis(-2.0, 0.25, 17), Axis(-3.0, 0.25, 25))),
    ("P m m m", Grid(Axis(-2.0, 0.25, 17), Axis(-1.0, 0.1, 21), Axis(-3.0, 0.5, 13))),
    ("C 1 2/c 1", Grid(Axis(-1.0, 0.1, 21), Axis(-1.0, 0.25, 9), Axis(-1.0, 0.2, 11))),
    ("P -1", Grid(Axis(-1.0, 0.1, 21), Axis(-1.0, 0.25, 9), Axis(-1.0, 0.2, 11))),
])
def test_flips_on_the_box_of_the_values_equal_whole_planes(symbol, grid, monkeypatch):
    """Each plane is summed on the centred box that holds its values other than +0.0 (and
    its mirror plane's): the same float32 bits as sums over whole planes, -0.0 and NaN near
    the edges included, for the pair of slabs and for one slab; the box is smaller than
    the plane where the values are (or the test would not test it)."""
    from hklflow.algorithms.merge import symmetry

    ops = Crystal(symbol, UnitCell(*CELLS[symbol])).laue_operators
    plan = symmetry.flip_plan(grid, ops)
    vol = random_volume(grid, 5, gap=0.3)
    signal, weight = vol.signal.copy(), vol.weight.copy()
    nl, nk, nh = grid.shape
    # a measured region off centre and narrower than the planes, empty planes at the ends
    keep = np.zeros(grid.shape, bool)
    keep[2:nl - 3, 1:nk // 2 + 2, 3:nh - 2] = True
    signal[~keep] = 0.0
    weight[~keep] = 0.0
    signal[4, 1, nh - 3] = -0.0  # a -0.0 at the region's edge, a NaN and a -0.0 outside
    weight[5, nk - 1, 0] = -0.0
    signal[6, nk - 1, nh - 1] = np.nan
    boxes = []
    box = symmetry._centred_box

    def noting(plan, *planes):
        found = box(plan, *planes)
        boxes.append(found)
        return found

    monkeypatch.setattr(symmetry, "_centred_box", noting)
    whole = (slice(0, nk), slice(0, nh))
    args = (signal, weight, signal[::-1], weight[::-1])
    got = symmetry.symmetrize_flips(plan, *args)
    half = nl // 2
    pair = (symmetry.symmetrize_flip_pair(plan, signal[:half], weight[:half],
                                          signal[nl - half:], weight[nl - half:])
            if plan.mirror is not None else None)
    assert any(b is None for b in boxes)  # the empty planes
    assert any(b is not None and (b[0].stop - b[0].start) * (b[1].stop - b[1].start) < nk * nh
               for b in boxes)
    monkeypatch.setattr(symmetry, "_centred_box", lambda plan, *planes: whole)
    ref = symmetry.symmetrize_flips(plan, *args)
    for a, b in zip(got, ref):
        assert np.array_equal(a.view(np.uint32), b.view(np.uint32))
    if pair is not None:
        ref_pair = symmetry.symmetrize_flip_pair(plan, signal[:half], weight[:half],
                                                 signal[nl - half:], weight[nl - half:])
        for a, b in zip(pair[0] + pair[1], ref_pair[0] + ref_pair[1]):
            assert np.array_equal(a.view(np.uint32), b.view(np.uint32))
        for k in range(2):  # and the pair is the one slab's planes
            assert np.array_equal(pair[0][k].view(np.uint32), ref[k][:half].view(np.uint32))
            assert np.array_equal(pair[1][k].view(np.uint32), ref[k][nl - half:].view(np.uint32))
