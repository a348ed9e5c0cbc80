"""hklflow.model.grid: axes and grids (voxel centres start + i step, indices by rounding), the
check that a Laue group's operators map voxel centres onto voxel centres (operators from
gemmi, mapped numerically here), the grid a sample gets from its cell and Q range, and the Q
range of a detector against pyFAI's own 2theta of every pixel."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from hklflow.base.errors import GridError
from hklflow.model.crystal import Crystal, UnitCell
from hklflow.model.geometry import DetectorGeometry
from hklflow.model.grid import (Axis, Grid, GridSymmetryError, check_grid_symmetry, default_grid,
                                q_range)

HEXAGONAL = Crystal("P 6/m m m", UnitCell(4.5, 4.5, 7.0, 90.0, 90.0, 120.0))
TETRAGONAL = Crystal("I 4/m m m", UnitCell(3.8, 3.8, 13.4, 90.0, 90.0, 90.0))


def test_an_axis_from_its_limits_holds_both_ends_and_indexes_by_rounding():
    ax = Axis.from_limits(-2.0, 2.0, 0.25)
    assert (ax.n, ax.start, ax.stop) == (17, -2.0, 2.0)
    np.testing.assert_allclose(ax.values, np.linspace(-2.0, 2.0, 17))
    # a value rounds to the nearest centre; beyond the ends indices leave 0 .. n-1
    np.testing.assert_array_equal(ax.index([-2.0, -1.88, -1.87, 2.0, 2.2, -2.2]),
                                  [0, 0, 1, 16, 17, -1])
    assert Axis.from_limits(0.0, 0.999, 0.25).n == 4  # the stop is a bound, not a centre
    for bad in ((1.0, 0.0, 0.1), (0.0, 1.0, 0.0), (0.0, 1.0, -0.1)):
        with pytest.raises(GridError, match=r"\[start, stop, step\]"):
            Axis.from_limits(*bad, where="somewhere")
    with pytest.raises(GridError):
        Axis(0.0, 0.1, 0)


def test_a_grid_indexes_hkl_in_nxrefines_order_and_round_trips_as_a_dict():
    grid = Grid(Axis(-1.0, 0.5, 5), Axis(-2.0, 0.25, 17), Axis(0.0, 1.0, 4))
    assert grid.shape == (4, 17, 5) and grid.size == 4 * 17 * 5  # [l, k, h]
    idx = grid.index(np.array([[0.0, 0.0, 3.0], [1.0, -2.0, 0.0], [1.2, 0.0, 9.0]]))
    np.testing.assert_array_equal(idx, [[2, 8, 3], [4, 0, 0], [4, 8, 9]])
    np.testing.assert_array_equal(grid.contains(idx), [True, True, False])
    assert Grid.from_dict(grid.as_dict()) == grid and grid.same_as(Grid.from_dict(grid.as_dict()))
    assert not grid.same_as(Grid(Axis(-1.0, 0.5, 5), Axis(-2.0, 0.25, 17), Axis(0.0, 1.0, 5)))
    assert grid.slice_index("k", 0.0) == 8


def _maps_centres_onto_centres(grid: Grid, operators) -> bool:
    """Every operator's image of every voxel centre of a corner of the grid is a voxel
    centre (computed, not reasoned: h' = h R, then back to indices)."""
    corner = [ax.values[:5] for ax in grid.axes]
    hkl = np.array(list(itertools.product(*corner)))
    step = np.array([ax.step for ax in grid.axes])
    start = np.array([ax.start for ax in grid.axes])
    for R in operators:
        i = ((hkl @ R) - start) / step
        if not np.allclose(i, np.round(i), atol=1e-6):
            return False
    return True


@pytest.mark.parametrize("crystal", [HEXAGONAL, TETRAGONAL], ids=["hexagonal", "tetragonal"])
def test_the_symmetry_check_agrees_with_the_operators_mapped_voxel_by_voxel(crystal):
    ops = crystal.laue_operators  # gemmi's
    good = Grid(Axis(-2.0, 0.25, 17), Axis(-2.0, 0.25, 17), Axis(-3.0, 0.5, 13))
    assert _maps_centres_onto_centres(good, ops)
    check_grid_symmetry(good, ops, crystal.laue_group)
    off_centre = Grid(Axis(-2.1, 0.25, 17), Axis(-2.1, 0.25, 17), Axis(-3.0, 0.5, 13))
    assert not _maps_centres_onto_centres(off_centre, ops)
    with pytest.raises(GridSymmetryError, match="reduction.transform.grid.h symmetric about 0"):
        check_grid_symmetry(off_centre, ops, crystal.laue_group)
    # an axis not yet known (derived from the data later) is not judged
    check_grid_symmetry(off_centre, ops, crystal.laue_group, known="l")


def test_h_and_k_of_different_steps_are_refused_where_the_group_mixes_them():
    grid = Grid(Axis(-2.0, 0.25, 17), Axis(-2.0, 0.5, 9), Axis(-3.0, 0.5, 13))
    assert not _maps_centres_onto_centres(grid, HEXAGONAL.laue_operators)
    with pytest.raises(GridSymmetryError, match="give reduction.transform.grid.h and "
                                                "reduction.transform.grid.k the same step"):
        check_grid_symmetry(grid, HEXAGONAL.laue_operators, HEXAGONAL.laue_group)
    orthorhombic = Crystal("P m m m", UnitCell(4.0, 5.0, 6.0))  # mixes no axes
    check_grid_symmetry(grid, orthorhombic.laue_operators, orthorhombic.laue_group)


def test_a_derived_grid_puts_integer_hkl_on_centres_reaches_q_max_and_resolves_a_pixel():
    cell = TETRAGONAL.cell
    q_max, q_pixel = 1.2, 0.004  # 1/A, no 2 pi
    grid, how = default_grid(cell, q_max, q_pixel, 10**9)
    for ax, length in zip(grid.axes, cell.parameters[:3]):
        assert ax.start == -ax.stop and ax.stop >= q_max * length  # |h| <= |Q| |a|
        assert ax.step <= q_pixel * length + 1e-12  # no coarser than one pixel's Q
        assert (1 / ax.step) == round(1 / ax.step)  # step 1/m: integers on centres
        np.testing.assert_allclose(ax.values[np.isclose(ax.values, np.round(ax.values))],
                                   np.arange(-ax.stop, ax.stop + 1))
    assert set(how) == {"h", "k", "l"}
    check_grid_symmetry(grid, TETRAGONAL.laue_operators)


def test_a_derived_grid_is_coarsened_within_max_voxels_and_keeps_given_axes():
    cell = TETRAGONAL.cell
    fine, _ = default_grid(cell, 1.2, 0.004, 10**9)
    coarse, how = default_grid(cell, 1.2, 0.004, fine.size // 20)
    assert coarse.size <= fine.size // 20 and "coarsened" in how
    assert all(c.step > f.step for c, f in zip(coarse.axes, fine.axes))
    given, how = default_grid(cell, 1.2, 0.004, 10**9, {"l": [-2.0, 2.0, 0.5]})
    assert given.l == Axis(-2.0, 0.5, 9) and how["l"] == "given in the config"
    assert given.h == fine.h


def test_the_q_range_of_a_detector_is_pyfais_largest_two_theta():
    """q_max: 2 sin(theta) / lambda at the largest 2theta of any pixel corner, which pyFAI's
    2theta of the pixel centres approaches from below by at most one pixel."""
    geometry = DetectorGeometry(detector="Pilatus300k", dist=0.2, poni1=0.03, poni2=0.02,
                                rot1=0.05, rot2=-0.03, wavelength=0.41328)
    ai = geometry.to_pyfai()
    tth = ai.twoThetaArray()  # pixel centres, pyFAI's own
    q_centres = 2 * np.sin(tth.max() / 2) / geometry.wavelength  # (Angstrom)
    q_max, q_pixel = q_range([geometry, geometry.shifted(0.1, 0.0, 0.0)])
    assert q_max == geometry.q_max()  # the nearer of the two reaches further
    assert q_centres <= q_max <= q_centres + 2 * q_pixel
    assert q_pixel == pytest.approx(min(geometry.pixel_size) / (0.3 * geometry.wavelength))
    assert math.isclose(q_max, 2 * math.sin(geometry.max_two_theta() / 2) / geometry.wavelength)


def test_default_grid_puts_integers_on_voxel_centres_and_respects_the_bound():
    cell = UnitCell(5.52, 5.52, 8.83, 90, 90, 120)
    grid, how = default_grid(cell, q_max=1.2, q_pixel=0.004, max_voxels=201 ** 3)
    assert grid.size <= 201 ** 3
    for ax, length in zip(grid.axes, cell.parameters[:3]):
        assert ax.start == -ax.stop and ax.start == -math.ceil(1.2 * length)
        m = round(1 / ax.step)
        assert abs(1 / ax.step - m) < 1e-9  # step 1/m: integer hkl are voxel centres
        assert ax.values[ax.index(1.0)] == pytest.approx(1.0)
    assert grid.h == grid.k  # a = b: the hexagonal operators map the grid onto itself
    assert "coarsened" in how
    fine, how = default_grid(cell, q_max=0.3, q_pixel=0.004, max_voxels=10 ** 9)
    assert "coarsened" not in how
    assert fine.h.step <= 0.004 * 5.52 + 1e-12  # no coarser than one pixel
    kept, _ = default_grid(cell, 1.2, 0.004, 10 ** 6, given={"l": [-2, 2, 0.5]})
    assert (kept.l.start, kept.l.stop, kept.l.step, kept.l.n) == (-2, 2, 0.5, 9)


def test_grid_index_and_slices():
    g = Grid(Axis(-1, 0.25, 9), Axis(0, 0.5, 3), Axis(-2, 1, 5))
    assert g.shape == (5, 3, 9)
    assert g.index([[0.1, 0.4, -2.4]]).tolist() == [[4, 1, 0]]
    assert g.slice_index("l", 0) == 2
    with pytest.raises(ValueError, match="outside the grid"):
        g.slice_index("h", 3)
