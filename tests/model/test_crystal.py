"""hklflow.model.crystal against cctbx (an independent implementation, run in a subprocess).

One cctbx subprocess for the whole module (module-scoped fixture `cctbx`): unit cells
(reciprocal metric, reciprocal parameters, volume, d-spacings) and space groups (absences,
Laue group, crystal system, centring, full operator lists, a compatible cell) for a named
list of groups and for every setting in gemmi's space-group table (passed to cctbx by its
Hall symbol, so that both libraries are asked about the same setting).
"""
from __future__ import annotations

import itertools
import math
from fractions import Fraction

import gemmi
import numpy as np
import pytest

from hklflow.model.crystal import CELL_NAMES, CellConstraints, Crystal, UnitCell

from reference_helpers import cctbx_answer

# --------------------------------------------------------------------------------------
# Test data
# --------------------------------------------------------------------------------------
_rng = np.random.default_rng(20240611)


def _random_cells():
    cells = {}
    n = 0
    while n < 6:  # triclinic: reject (near-)degenerate angle triples
        abc = _rng.uniform(3.0, 25.0, 3)
        ang = _rng.uniform(60.0, 120.0, 3)
        ca, cb, cg = np.cos(np.radians(ang))
        if 1 - ca**2 - cb**2 - cg**2 + 2 * ca * cb * cg > 0.05:
            cells[f"triclinic-{n}"] = (*abc, *ang)
            n += 1
    for n in range(6):
        a, b, c = _rng.uniform(3.0, 25.0, 3)
        cells[f"monoclinic-b-{n}"] = (a, b, c, 90.0, _rng.uniform(90.5, 125.0), 90.0)
    for n in range(6):
        a, c = _rng.uniform(3.0, 25.0, 2)
        cells[f"hexagonal-{n}"] = (a, a, c, 90.0, 90.0, 120.0)
    for n in range(2):
        a, b, c = _rng.uniform(3.0, 25.0, 3)
        cells[f"orthorhombic-{n}"] = (a, b, c, 90.0, 90.0, 90.0)
        a = _rng.uniform(3.0, 25.0)
        al = _rng.uniform(50.0, 110.0)
        cells[f"rhombohedral-{n}"] = (a, a, a, al, al, al)
    return cells


CELLS = _random_cells()
CELL_HKL = np.array([h for h in _rng.integers(-12, 13, size=(60, 3)) if np.any(h)][:50])

# Named groups with a cell each (Crystal() refuses incompatible cells).
_TRI = CELLS["triclinic-0"]
_MONO_B = (7.1, 9.3, 11.2, 90.0, 103.4, 90.0)
_MONO_C = (7.1, 9.3, 11.2, 90.0, 90.0, 112.5)
_ORTHO = (5.3, 7.9, 11.4, 90.0, 90.0, 90.0)
_TETRA = (6.2, 6.2, 13.7, 90.0, 90.0, 90.0)
_HEX = (5.9, 5.9, 9.6, 90.0, 90.0, 120.0)
_RHOMBO = (7.3, 7.3, 7.3, 71.5, 71.5, 71.5)
_CUBIC = (9.7, 9.7, 9.7, 90.0, 90.0, 90.0)
NAMED = {
    "P 1": _TRI,
    "P -1": _TRI,
    "P 1 21/c 1": _MONO_B,
    "C 1 2/c 1": _MONO_B,
    "P 1 1 21/b": _MONO_C,
    "A 1 1 2": _MONO_C,
    "P 21 21 21": _ORTHO,
    "F d d d": _ORTHO,
    "F d d d:1": _ORTHO,
    "F d d d:2": _ORTHO,
    "I 4/m m m": _TETRA,
    "I 41/a m d": _TETRA,
    "I 41/a m d:2": _TETRA,
    "P 42/n n m": _TETRA,
    "P 3": _HEX,
    "R -3 m:H": _HEX,
    "R -3 c:R": _RHOMBO,
    "R 3:R": _RHOMBO,
    "P 31 2 1": _HEX,
    "P 63/m m c": _HEX,
    "P 6/m": _HEX,
    "F m -3 m": _CUBIC,
    "I a -3 d": _CUBIC,
    "P n -3 n": _CUBIC,
    "P n -3 n:2": _CUBIC,
}
# Every setting in gemmi's table, given to cctbx as "Hall: ..." (same setting for sure).
TABLE = [(g.xhm(), g.hall) for g in gemmi.spacegroup_table()]

GRID = np.array(list(itertools.product(range(-6, 7), repeat=3)), dtype=int)  # includes 000

# Free parameters per system as documented in hklflow.model.crystal / docs/conventions.md.
DOCUMENTED_FREE = {
    "triclinic": ("a", "b", "c", "alpha", "beta", "gamma"),
    "monoclinic-a": ("a", "b", "c", "alpha"),
    "monoclinic-b": ("a", "b", "c", "beta"),
    "monoclinic-c": ("a", "b", "c", "gamma"),
    "orthorhombic": ("a", "b", "c"),
    "tetragonal": ("a", "c"),
    "hexagonal": ("a", "c"),
    "rhombohedral": ("a", "alpha"),
    "cubic": ("a",),
}


@pytest.fixture(scope="module")
def cctbx():
    """The one cctbx answer for this module, with the space groups keyed by request."""
    symbols = list(NAMED) + ["Hall: " + hall for _, hall in TABLE]
    ans = cctbx_answer({
        "unit_cells": {"cells": [list(c) for c in CELLS.values()], "hkl": CELL_HKL.tolist()},
        "space_groups": {"symbols": symbols, "hkl": GRID.tolist(), "volume": 1000.0},
    })
    assert len(ans["unit_cells"]) == len(CELLS)
    assert len(ans["space_groups"]) == len(symbols)
    sg = ans["space_groups"]
    return {
        "cells": dict(zip(CELLS, ans["unit_cells"])),
        "named": dict(zip(NAMED, sg[:len(NAMED)])),
        "table": dict(zip((x for x, _ in TABLE), sg[len(NAMED):])),
    }


def _all_groups(cctbx):
    """(label, Crystal, cctbx entry) for the named groups and every table setting."""
    out = [(s, Crystal(s, UnitCell(*NAMED[s])), ref) for s, ref in cctbx["named"].items()]
    for xhm, ref in cctbx["table"].items():
        out.append((xhm, Crystal(xhm, UnitCell(*ref["compatible_cell"])), ref))
    return out


@pytest.fixture(scope="module")
def groups(cctbx):
    return _all_groups(cctbx)


# --------------------------------------------------------------------------------------
# Unit cells
# --------------------------------------------------------------------------------------
def test_B_is_the_busing_levy_factor_of_cctbx_reciprocal_metric(cctbx):
    for name, params in CELLS.items():
        B = UnitCell(*params).B
        G = np.array(cctbx["cells"][name]["reciprocal_metric"])
        assert B[1, 0] == 0.0 and B[2, 0] == 0.0 and B[2, 1] == 0.0, (name, B)
        assert np.all(np.diag(B) > 0), (name, B)
        # upper triangular with positive diagonal + B^T B = G*  <=>  the unique Busing-Levy B
        np.testing.assert_allclose(B.T @ B, G, rtol=1e-12, atol=1e-12 * np.abs(G).max(),
                                   err_msg=name)
        np.testing.assert_allclose(UnitCell(*params).reciprocal_metric, G, rtol=1e-12,
                                   atol=1e-12 * np.abs(G).max(), err_msg=name)
        # Busing-Levy: a* along x, and the direct c axis (columns of B^-T) along z
        A = np.linalg.inv(B).T
        assert abs(A[0, 2]) < 1e-12 * params[2] and abs(A[1, 2]) < 1e-12 * params[2], (name, A)
        assert math.isclose(B[2, 2], 1.0 / params[2], rel_tol=1e-12), name


def test_volume_matches_cctbx(cctbx):
    for name, params in CELLS.items():
        assert math.isclose(UnitCell(*params).volume, cctbx["cells"][name]["volume"],
                            rel_tol=1e-12), name


def test_d_spacings_match_cctbx(cctbx):
    for name, params in CELLS.items():
        d = UnitCell(*params).d_spacing(CELL_HKL)
        np.testing.assert_allclose(d, cctbx["cells"][name]["d"], rtol=1e-12, err_msg=name)
        # and |B h| = 1/d (no 2 pi)
        np.testing.assert_allclose(np.linalg.norm(CELL_HKL @ UnitCell(*params).B.T, axis=1),
                                   1.0 / np.array(cctbx["cells"][name]["d"]), rtol=1e-12,
                                   err_msg=name)


def test_reciprocal_parameters_match_cctbx(cctbx):
    for name, params in CELLS.items():
        ours = np.array(UnitCell(*params).reciprocal_parameters)
        ref = np.array(cctbx["cells"][name]["reciprocal_parameters"])
        np.testing.assert_allclose(ours[:3], ref[:3], rtol=1e-12, err_msg=name)
        np.testing.assert_allclose(ours[3:], ref[3:], rtol=0, atol=1e-9, err_msg=name)


# --------------------------------------------------------------------------------------
# Space groups
# --------------------------------------------------------------------------------------
def _eval_hkl(expr: str, h) -> tuple[int, ...]:
    """Evaluate a cctbx as_hkl() string like 'k,-h-k,l' at h = (h, k, l)."""
    env = dict(zip("hkl", (int(v) for v in h)))
    return tuple(int(eval(part, {"__builtins__": {}}, env)) for part in expr.split(","))


def test_reference_matrices_act_on_row_vectors(cctbx):
    """The reference's convention (h' = h R) agrees with cctbx's own as_hkl() strings, and
    with the textbook P 3 equivalents (h k l), (k i l), (i h l), i = -(h+k)."""
    rng = np.random.default_rng(5)
    for ref in list(cctbx["named"].values()):
        for R, expr in zip(ref["laue_rotations"], ref["laue_rotations_hkl"]):
            for h in rng.integers(-9, 10, size=(4, 3)):
                assert tuple(h @ np.array(R)) == _eval_hkl(expr, h), (ref["symbol"], expr)
    p3 = {tuple(np.array([1, 2, 3]) @ np.array(R)) for R in cctbx["named"]["P 3"]["laue_rotations"]}
    assert p3 == {(1, 2, 3), (2, -3, 3), (-3, 1, 3), (-1, -2, -3), (-2, 3, -3), (3, -1, -3)}


def test_p3_laue_orbit_textbook():
    """Crystal's own operators for P 3 give the International Tables equivalents (not the
    mirror images a transposed matrix would give)."""
    cr = Crystal("P 3", UnitCell(*_HEX))
    orbit = {tuple(np.array([1, 2, 3]) @ R) for R in cr.laue_operators}
    assert orbit == {(1, 2, 3), (2, -3, 3), (-3, 1, 3), (-1, -2, -3), (-2, 3, -3), (3, -1, -3)}


def test_same_space_group_setting_as_cctbx(groups):
    """For each table setting (cctbx given the same Hall symbol) and each named symbol
    whose default setting is the same in both libraries, all operators agree
    (rotation, translation mod 1, centring included)."""
    def key(R, t):
        return (tuple(np.asarray(R, int).ravel()), tuple(Fraction(x) % 1 for x in t))

    checked = 0
    for label, cr, ref in groups:
        if label in ORIGIN_DEFAULTS_DIFFER:
            continue
        ours = {key(np.array(op.rot) // op.DEN, [Fraction(t, op.DEN) for t in op.tran])
                for op in cr.ops}
        theirs = {key(R, [Fraction(n, den) for n in t]) for R, t, den in ref["operators"]}
        assert len(ours) == len(cr.ops) == ref["order_z"], label
        assert ours == theirs, (label, ref["lookup_symbol"])
        checked += 1
    assert checked > 550


# Unqualified symbols of groups with two origin choices: gemmi's default is origin
# choice 1, cctbx's is origin choice 2.  Absences and Laue groups do not depend on the
# origin, so only the operator comparison above skips them.
ORIGIN_DEFAULTS_DIFFER = {"F d d d", "I 41/a m d", "P 42/n n m", "P n -3 n"}


def test_unqualified_origin_choice_defaults(cctbx):
    """Documents a trap: 'I 41/a m d' is origin choice 1 in hklflow (gemmi) but origin
    choice 2 in cctbx (and DIALS)."""
    for s in ORIGIN_DEFAULTS_DIFFER:
        assert Crystal(s, UnitCell(*NAMED[s])).hm.endswith(":1"), s
        assert cctbx["named"][s]["lookup_symbol"].endswith(":2"), s


def test_systematic_absences_match_cctbx(groups):
    assert len(GRID) == 13**3
    for label, cr, ref in groups:
        theirs = np.array([c == "1" for c in ref["sys_absent"]])
        ours = cr.is_absent(GRID)
        assert ours.shape == theirs.shape and ours.dtype == bool, label
        bad = GRID[ours != theirs]
        assert len(bad) == 0, f"{label}: absences differ from cctbx at {bad[:10].tolist()}"
    # and the answer is not trivial: e.g. F m -3 m keeps only unmixed hkl
    fm3m = Crystal("F m -3 m", UnitCell(*_CUBIC)).is_absent(GRID)
    mixed = np.array([len({v % 2 for v in h}) > 1 for h in GRID])
    assert np.array_equal(fm3m, mixed)


def test_is_absent_keeps_input_shape():
    cr = Crystal("I 4/m m m", UnitCell(*_TETRA))
    hkl = GRID[:24].reshape(2, 12, 3)
    assert cr.is_absent(hkl).shape == (2, 12)
    assert np.array_equal(cr.is_absent(hkl).ravel(), cr.is_absent(GRID[:24]))


def test_laue_operators_match_cctbx(groups):
    for label, cr, ref in groups:
        ops = cr.laue_operators
        assert ops.ndim == 3 and ops.shape[1:] == (3, 3), label
        assert np.issubdtype(ops.dtype, np.integer), label
        ours = {tuple(R.ravel()) for R in ops}
        theirs = {tuple(np.array(R).ravel()) for R in ref["laue_rotations"]}
        assert len(ours) == len(ops), f"{label}: duplicate Laue operators"
        assert ours == theirs, (label, ref["laue_group"], sorted(ours ^ theirs)[:4])


def _expected_system(ref) -> str:
    cs = ref["crystal_system"]
    if cs == "Monoclinic":
        return f"monoclinic-{ref['unique_axis']}"
    if cs == "Trigonal":
        a, b, c, al, be, ga = ref["compatible_cell"]
        rhombohedral_axes = abs(ga - 120.0) > 1e-6
        assert not rhombohedral_axes or (math.isclose(a, c) and math.isclose(al, ga))
        return "rhombohedral" if rhombohedral_axes else "hexagonal"
    if cs == "Hexagonal":
        return "hexagonal"
    return cs.lower()


def test_crystal_system_matches_cctbx(groups):
    seen = set()
    for label, cr, ref in groups:
        assert ref["unique_axis"] in ("a", "b", "c") or ref["crystal_system"] != "Monoclinic"
        assert cr.system == _expected_system(ref), (label, ref["crystal_system"],
                                                     ref["unique_axis"], ref["compatible_cell"])
        seen.add(cr.system)
    assert seen == set(DOCUMENTED_FREE)


def test_named_groups_systems():
    expected = {"P 1": "triclinic", "P 1 21/c 1": "monoclinic-b", "P 1 1 21/b": "monoclinic-c",
                "A 1 1 2": "monoclinic-c", "R -3 m:H": "hexagonal", "R -3 c:R": "rhombohedral",
                "P 31 2 1": "hexagonal", "P 6/m": "hexagonal", "I a -3 d": "cubic"}
    for s, system in expected.items():
        assert Crystal(s, UnitCell(*NAMED[s])).system == system, s


def test_centring_and_order_match_cctbx(groups):
    for label, cr, ref in groups:
        assert cr.centring == ref["centring"], (label, cr.centring, ref["centring"])
        assert len(cr.ops) == ref["order_z"], label
        assert len(cr.ops.sym_ops) == ref["order_p"], label


def test_canonical_hkl_constant_on_cctbx_laue_orbits(cctbx):
    for s, ref in cctbx["named"].items():
        cr = Crystal(s, UnitCell(*NAMED[s]))
        Rs = np.array(ref["laue_rotations"])
        orbits = np.einsum("ni,kij->knj", GRID, Rs)  # (k, n, 3): h R for every cctbx op
        canon = cr.canonical_hkl(GRID)
        assert canon.shape == GRID.shape and np.issubdtype(canon.dtype, np.integer), s
        for member in orbits:
            assert np.array_equal(cr.canonical_hkl(member), canon), s
        # the representative is a member of the orbit, so different orbits never merge
        in_orbit = np.any(np.all(orbits == canon[None], axis=-1), axis=0)
        assert np.all(in_orbit), (s, GRID[~in_orbit][:5].tolist())
        # the number of distinct representatives is the number of orbits
        n_orbits = len({frozenset(map(tuple, orbits[:, i])) for i in range(len(GRID))})
        assert len({tuple(h) for h in canon}) == n_orbits, s


def test_canonical_hkl_keeps_shape():
    cr = Crystal("P 63/m m c", UnitCell(*_HEX))
    hkl = GRID[:30].reshape(5, 6, 3)
    assert cr.canonical_hkl(hkl).shape == (5, 6, 3)
    assert np.array_equal(cr.canonical_hkl(hkl).reshape(-1, 3), cr.canonical_hkl(GRID[:30]))


# --------------------------------------------------------------------------------------
# Cell constraints
# --------------------------------------------------------------------------------------
def test_free_parameter_names_are_as_documented(groups):
    for label, cr, ref in groups:
        c = cr.constraints
        assert isinstance(c, CellConstraints)
        assert c.system == cr.system
        assert c.free == DOCUMENTED_FREE[cr.system], label
        assert set(c.free) <= set(CELL_NAMES)


def test_expand_free_values_roundtrip_for_every_setting(groups):
    """expand(free_values(cell)) == cell for cctbx's compatible cell of every setting."""
    for label, cr, ref in groups:
        cell = cr.cell
        c = cr.constraints
        back = c.expand(c.free_values(cell))
        np.testing.assert_allclose(back.parameters, cell.parameters, rtol=1e-12, atol=1e-9,
                                   err_msg=label)
        np.testing.assert_allclose(c.symmetrize(cell).parameters, cell.parameters, rtol=1e-12,
                                   atol=1e-9, err_msg=label)


def test_expand_of_changed_free_values_stays_compatible(groups):
    """Moving the free parameters keeps the ties: the expanded cell is still accepted by
    gemmi for the group, and a perturbed cell symmetrizes into a compatible one."""
    rng = np.random.default_rng(11)
    for label, cr, ref in groups:
        c = cr.constraints
        v = c.free_values(cr.cell)
        v = v * (1.0 + rng.uniform(-0.03, 0.03, v.size))
        new = c.expand(v)
        cr.with_cell(new)  # raises if incompatible
        np.testing.assert_allclose(c.free_values(new), v, rtol=1e-12, err_msg=label)
        noisy = UnitCell(*(np.array(cr.cell.parameters) * (1 + rng.uniform(-1e-3, 1e-3, 6))))
        sym = c.symmetrize(noisy)
        cr.with_cell(sym)
        gemmi_ok = gemmi.UnitCell(*sym.parameters).is_compatible_with_spacegroup(cr.sg, 1e-9)
        assert gemmi_ok, (label, sym.parameters)


@pytest.mark.parametrize("system,cell", [
    ("triclinic", (5.1, 6.2, 7.3, 81.0, 97.0, 103.0)),
    ("monoclinic-a", (5.1, 6.2, 7.3, 97.0, 90.0, 90.0)),
    ("monoclinic-b", (5.1, 6.2, 7.3, 90.0, 97.0, 90.0)),
    ("monoclinic-c", (5.1, 6.2, 7.3, 90.0, 90.0, 97.0)),
    ("orthorhombic", (5.1, 6.2, 7.3, 90.0, 90.0, 90.0)),
    ("tetragonal", (5.1, 5.1, 7.3, 90.0, 90.0, 90.0)),
    ("hexagonal", (5.1, 5.1, 7.3, 90.0, 90.0, 120.0)),
    ("rhombohedral", (5.1, 5.1, 5.1, 77.0, 77.0, 77.0)),
    ("cubic", (5.1, 5.1, 5.1, 90.0, 90.0, 90.0)),
])
def test_cell_constraints_by_system(system, cell):
    c = CellConstraints(system, DOCUMENTED_FREE[system])
    uc = UnitCell(*cell)
    vals = c.free_values(uc)
    assert len(vals) == len(DOCUMENTED_FREE[system])
    assert c.expand(vals).parameters == pytest.approx(cell, rel=1e-15)


def test_incompatible_cell_is_refused():
    with pytest.raises(ValueError):
        Crystal("P 6/m", UnitCell(*_CUBIC))
    with pytest.raises(ValueError):
        Crystal("I 4/m m m", UnitCell(*_ORTHO))
    with pytest.raises(ValueError):
        Crystal("R -3 c:R", UnitCell(*_HEX))


def test_reflections_within_is_complete_for_an_oblique_cell():
    """Every allowed hkl with d >= d_min, also for a very oblique cell (brute force over a
    box three times larger than the one reflections_within searches)."""
    cell = UnitCell(4.1, 13.7, 6.2, 62.0, 118.0, 71.0)
    for symbol, d_min in (("P 1", 1.3), ("P -1", 1.1)):
        got = Crystal(symbol, cell).reflections_within(d_min)
        lim = [3 * int(L / d_min) + 3 for L in (cell.a, cell.b, cell.c)]
        box = np.stack(np.meshgrid(*[np.arange(-n, n + 1) for n in lim], indexing="ij"),
                       axis=-1).reshape(-1, 3)
        box = box[np.any(box != 0, axis=1)]
        want = box[cell.d_spacing(box) >= d_min]
        assert {tuple(h) for h in got} == {tuple(h) for h in want}, symbol
    cr = Crystal("I 41/a m d:2", UnitCell(*_TETRA))
    got = cr.reflections_within(1.5)
    assert len(got) > 0 and not np.any(cr.is_absent(got))
    assert np.all(cr.cell.d_spacing(got) >= 1.5)
    assert np.all((got.sum(axis=1) % 2) == 0)  # I centring
