"""hklflow.algorithms.pdf: punch-and-fill, Tukey taper and FFT of the 3D-DeltaPDF.

The fill is checked against exact answers (a discrete harmonic function is its own
Laplace fill) and against dense solves the tests build voxel by voxel, its conjugate
gradients against SuperLU on the same systems (superlu_reference.py); the punch against
brute-force |Q| of every voxel (with the Busing-Levy B, a code path apart from the metric);
the FFT against an analytic transform and against NXRefine's own expression (plain fftn).
A volume's PDFs (hklflow.algorithms.pdf.volume: total_pdf, delta_pdf) from its file equal
those of its array, bit for bit, in about one volume's memory; an even volume's from its
octant equal the whole volume's.
"""
from __future__ import annotations

import logging
import math

import numpy as np
import pytest
import scipy.fft
from scipy import ndimage

from hklflow.algorithms.pdf.fft import CosinePDF, fft_crop, pdf_fft, pdf_spectrum
from hklflow.algorithms.pdf.fill import (OUTCOMES, _batch_system, _components, _find, _neighbours,
                                         _solve_iteratively, punch_and_fill, reflections_to_punch,
                                         region_bits)
from hklflow.algorithms.pdf.kernels import TAPER_SURE, _taper_above_zero, taper_of
from hklflow.algorithms.pdf.q_grid import SLAB_PLANES, octant_boxes, octant_start
from hklflow.algorithms.pdf.taper import taper_bounds, taper_statistics, tapered_mean, tukey_taper
from hklflow.files.pdf import read_pdf
from hklflow.files.volume import write_volume
from hklflow.model.crystal import Crystal, UnitCell
from hklflow.model.grid import Axis, Grid

from numba_helpers import compiled_in_fresh_process, slice_assignment_checks
from superlu_reference import superlu_solve
from volume_helpers import TETRA, lattice_volume, small_grid

FACES = ((1, 0, 0), (-1, 0, 0), (0, 1, 0), (0, -1, 0), (0, 0, 1), (0, 0, -1))


def voxel_indices(grid):
    """(il, ik, ih) index arrays of the volume."""
    return np.meshgrid(*[np.arange(n) for n in grid.shape], indexing="ij")


def voxel_hkl(grid):
    il, ik, ih = voxel_indices(grid)
    return np.stack([grid.h.values[ih], grid.k.values[ik], grid.l.values[il]], axis=-1)


def q_squared(cell, d, units="inverse_angstrom"):
    """|Q|^2 of displacements d (..., 3) in r.l.u. from Busing-Levy B (2 pi convention)."""
    if units == "rlu":
        return np.sum(d * d, axis=-1)
    q = 2 * math.pi * d @ cell.B.T
    return np.sum(q * q, axis=-1)


def brute_hole(grid, cell, position, radius, units="inverse_angstrom", factor=1.0):
    r = factor * radius
    return q_squared(cell, voxel_hkl(grid) - np.asarray(position, float), units) <= r * r * (1 + 1e-9)


def fill_region(grid, cell, values, positions, radius, units="inverse_angstrom"):
    """Every position's hole plus the NaN voxels within twice the radius."""
    region = np.zeros(grid.shape, bool)
    for p in positions:
        region |= brute_hole(grid, cell, p, radius, units)
        region |= brute_hole(grid, cell, p, radius, units, factor=2.0) & np.isnan(values)
    return region


def neighbours(grid, v):
    """Face neighbours (il, ik, ih) of voxel v inside the grid."""
    for dh, dk, dl in FACES:
        w = (v[0] + dl, v[1] + dk, v[2] + dh)
        if all(0 <= w[i] < grid.shape[i] for i in range(3)):
            yield w


# --------------------------------------------------------------------------------------
# Fill: exact answers
# --------------------------------------------------------------------------------------
def test_fill_reproduces_a_discrete_harmonic_function():
    # unequal steps (so holes are ellipsoids in voxels), an orthorhombic cell
    grid = Grid(Axis(-1.5, 0.05, 61), Axis(-2.0, 0.1, 41), Axis(-3.0, 0.2, 31))
    cell = UnitCell(4.0, 5.0, 7.0)
    il, ik, ih = voxel_indices(grid)
    i, j, k = ih.astype(float), ik.astype(float), il.astype(float)
    f = 3 + 2 * i - j + 0.5 * k + i * j - j * k + i * i - k * k
    inner = f[1:-1, 1:-1, 1:-1]
    lap = sum(np.roll(f, s, axis=a)[1:-1, 1:-1, 1:-1] for a in range(3) for s in (1, -1)) - 6 * inner
    assert np.abs(lap).max() == 0.0  # harmonic in the 7-point stencil
    positions = np.array([[0.0, 0.0, 0.0], [1.0, -1.0, 1.0], [-0.5, 1.0, -1.2], [0.6, 0.9, 1.6]])
    values = f.copy()
    # unmeasured voxels within twice the radius of the third position: filled with its hole
    c = grid.index(positions[2])
    values[c[2] + 3, c[1] - 2:c[1] + 2, c[0] + 1] = np.nan
    values[c[2], c[1], c[0] - 5] = np.nan
    radius = 0.35
    region = fill_region(grid, cell, values, positions, radius)
    assert np.isnan(values[region & ~brute_hole(grid, cell, positions[2], radius)]).sum() == 5
    result = punch_and_fill(values, grid, cell, positions, radius=radius)
    assert result.counts == {"filled": 4, "off_grid": 0, "edge": 0, "no_data": 0, "solver_failed": 0}
    assert np.array_equal(np.isnan(result.filled), np.zeros(grid.shape, bool))
    err = np.abs(result.filled - f)[region].max() / np.abs(f).max()
    assert err < 1e-9
    assert np.array_equal(result.filled[~region], values[~region])  # data outside untouched
    assert result.unknowns == region.sum()


def test_fill_at_the_grid_edge_is_exact_for_a_function_flat_across_it():
    # links beyond the grid are dropped (zero normal difference), so the fill is exact for
    # a harmonic function with f(l = -1) = f(l = 0): k (k + 1) is symmetric about -1/2
    grid = Grid(Axis(-2.0, 0.1, 41), Axis(-2.0, 0.1, 41), Axis(0.0, 0.125, 33))
    cell = UnitCell(5.0, 5.0, 8.0)
    il, ik, ih = voxel_indices(grid)
    i, j, k = ih.astype(float), ik.astype(float), il.astype(float)
    f = 3 + 2 * i - j + i * j - i * i + k * (k + 1)
    positions = np.array([[0.0, 0.0, 0.0], [0.5, -0.5, 2.0]])
    result = punch_and_fill(f, grid, cell, positions, radius=0.3)
    assert result.counts["edge"] == 1 and result.counts["filled"] == 1
    assert OUTCOMES[result.outcome[0]] == "edge"
    region = fill_region(grid, cell, f, positions, 0.3)
    assert region[0].any()  # the hole reaches the l = 0 plane
    assert np.abs(result.filled - f)[region].max() / np.abs(f).max() < 1e-9


def test_a_weak_region_is_filled_as_accurately_as_a_strong_one_of_the_same_batch():
    # one batch, two regions a million times apart in intensity, the weak one the larger (its
    # unmeasured surroundings join it) and so the slower to converge: each region's solve
    # stops on its own residual, so the weak one is exact to its own scale too (solved as one
    # system to a residual relative to the whole batch's, it was off by 3e-5 of its scale)
    grid = Grid(Axis(-3.0, 0.1, 61), Axis(-2.0, 0.1, 41), Axis(-2.0, 0.1, 41))
    cell = UnitCell(5.0, 5.0, 5.0)
    il, ik, ih = voxel_indices(grid)
    i, j, k = ih.astype(float), ik.astype(float), il.astype(float)
    f = 50 + 2 * i - j + 0.5 * k + i * j - j * k + i * i - k * k  # discrete harmonic, > 0
    values = np.where(ih < 30, 1e6 * f, 1e-3 * f)  # each region's neighbourhood on one side
    positions = np.array([[-1.5, 0.0, 0.0], [1.5, 0.0, 0.0]])
    values[brute_hole(grid, cell, positions[1], 0.5, factor=1.9)] = np.nan
    result = punch_and_fill(values, grid, cell, positions, radius=0.5)
    assert result.counts["filled"] == 2 and result.batches == 1
    truth = np.where(ih < 30, 1e6 * f, 1e-3 * f)
    for position in positions:
        region = fill_region(grid, cell, values, [position], 0.5)
        assert np.abs(result.filled - truth)[region].max() / np.abs(truth[region]).max() < 1e-9


# --------------------------------------------------------------------------------------
# Fill: against dense solves built voxel by voxel
# --------------------------------------------------------------------------------------
def dense_laplace_fill(values, region):
    """Dirichlet problem of the 7-point graph Laplacian over region: links to voxels with
    NaN or beyond the grid dropped, known neighbours on the right-hand side."""
    grid_shape = values.shape
    unknowns = [tuple(v) for v in np.argwhere(region)]
    index = {v: n for n, v in enumerate(unknowns)}
    A = np.zeros((len(unknowns), len(unknowns)))
    b = np.zeros(len(unknowns))
    grid = Grid(Axis(0, 1, grid_shape[2]), Axis(0, 1, grid_shape[1]), Axis(0, 1, grid_shape[0]))
    for n, v in enumerate(unknowns):
        for w in neighbours(grid, v):
            if w in index:
                A[n, n] += 1
                A[n, index[w]] -= 1
            elif np.isfinite(values[w]):
                A[n, n] += 1
                b[n] += values[w]
    out = values.copy()
    out[region] = np.nan
    u = np.linalg.solve(A, b)
    for n, v in enumerate(unknowns):
        out[v] = u[n]
    return out


def dense_matern_fill(values, region, margins, order, eps):
    """(L + eps^2)^m on each region component's domain: the component plus the usable
    voxels (finite, outside every region) of its bounding box grown by `margins` voxels
    (h, k, l), L its graph Laplacian; the component's rows solved with the rest known."""
    out = values.copy()
    out[region] = np.nan
    labels, count = ndimage.label(region)
    nl, nk, nh = values.shape
    for c in range(1, count + 1):
        comp = np.argwhere(labels == c)
        lo = np.maximum(comp.min(axis=0) - margins[::-1], 0)
        hi = np.minimum(comp.max(axis=0) + margins[::-1], [nl - 1, nk - 1, nh - 1])
        domain = []
        for v in np.ndindex(*(hi - lo + 1)):
            v = tuple(np.array(v) + lo)
            if labels[v] == c or (not region[v] and np.isfinite(values[v])):
                domain.append(v)
        index = {v: n for n, v in enumerate(domain)}
        L = np.zeros((len(domain), len(domain)))
        grid = Grid(Axis(0, 1, nh), Axis(0, 1, nk), Axis(0, 1, nl))
        for n, v in enumerate(domain):
            for w in neighbours(grid, v):
                if w in index:
                    L[n, n] += 1
                    L[n, index[w]] -= 1
        A = np.linalg.matrix_power(L + eps * eps * np.eye(len(domain)), order)
        unknown = np.array([labels[v] == c for v in domain])
        known_values = np.array([values[v] for v in domain])[~unknown]
        u = np.linalg.solve(A[np.ix_(unknown, unknown)], -A[np.ix_(unknown, ~unknown)] @ known_values)
        for n, v in enumerate(d for d, x in zip(domain, unknown) if x):
            out[v] = u[n]
    return out


@pytest.fixture(scope="module")
def small_problem():
    """Random data on a small monoclinic grid with NaNs; two holes that overlap, one apart
    with NaN voxels near it."""
    grid = Grid(Axis(-1.0, 0.1, 21), Axis(-1.1, 0.1, 23), Axis(-1.2, 0.1, 25))
    cell = UnitCell(5.0, 5.5, 6.0, 90.0, 100.0, 90.0)
    rng = np.random.default_rng(11)
    values = rng.random(grid.shape)
    values[rng.random(grid.shape) < 0.03] = np.nan
    positions = np.array([[0.0, 0.0, 0.0], [0.12, 0.08, 0.1], [0.5, -0.5, 0.6]])
    return grid, cell, values, positions, 0.3


def test_laplace_fill_equals_a_dense_solve(small_problem):
    grid, cell, values, positions, radius = small_problem
    result = punch_and_fill(values, grid, cell, positions, radius=radius)
    assert result.counts["filled"] == 3
    region = fill_region(grid, cell, values, positions, radius)
    assert ndimage.label(region)[1] >= 2  # the overlapping holes merge, the third is apart
    expected = dense_laplace_fill(values, region)
    assert np.array_equal(np.isnan(result.filled), np.isnan(expected))
    assert np.nanmax(np.abs(result.filled - expected)) < 1e-10
    assert result.unknowns == region.sum() and result.batches == 1


DENSE_MATERN: dict = {}


@pytest.mark.parametrize("order,eps", [(2, 0.0), (2, 0.4), (1, 0.7), (3, 0.2)])
def test_matern_fill_equals_a_dense_solve(small_problem, order, eps):
    grid, cell, values, positions, radius = small_problem
    result = punch_and_fill(values, grid, cell, positions, radius=radius, order=order, eps=eps)
    region = fill_region(grid, cell, values, positions, radius)
    # NXRefine's margin: the hole radius in voxels per axis (r |a_j| / (2 pi step_j))
    margins = np.array([math.ceil(radius * length / (2 * math.pi * ax.step))
                        for length, ax in zip(cell.parameters[:3], grid.axes)])
    assert margins.min() >= order  # the module's m-step domain equals this box then
    key = (order, eps)  # the dense solve is the slow part: once for both solvers
    if key not in DENSE_MATERN:
        DENSE_MATERN[key] = dense_matern_fill(values, region, margins, order, eps)
    expected = DENSE_MATERN[key]
    assert np.array_equal(np.isnan(result.filled), np.isnan(expected))
    assert np.nanmax(np.abs(result.filled - expected)) < 1e-10


def test_batches_give_the_same_fill(small_problem):
    grid, cell, values, positions, radius = small_problem
    one = punch_and_fill(values, grid, cell, positions, radius=radius)
    many = punch_and_fill(values, grid, cell, positions, radius=radius, max_batch_unknowns=1)
    components = ndimage.label(fill_region(grid, cell, values, positions, radius))[1]
    assert one.batches == 1 and many.batches == components >= 2  # regions are never split
    np.testing.assert_allclose(many.filled, one.filled, rtol=0, atol=1e-12)
    assert np.array_equal(many.outcome, one.outcome)


@pytest.mark.parametrize("order,eps", [(1, 0.0), (2, 0.4), (3, 0.2)])
def test_conjugate_gradients_equal_superlu_on_the_fill_system(small_problem, order, eps):
    # the system of every region of the fill, as punch_and_fill assembles it, solved by
    # conjugate gradients region by region and by SuperLU as a whole
    grid, cell, values, positions, radius = small_problem
    result = punch_and_fill(values, grid, cell, positions, radius=radius, order=order, eps=eps)
    count, comp = _components(result.region, grid.shape)
    by_comp = np.argsort(comp, kind="stable")  # the unknowns by component, then voxel
    unknowns, unknown_comp = result.region[by_comp], comp[by_comp]
    S, rhs = _batch_system(unknowns, unknown_comp, region_bits(result.region, values.size),
                           values.reshape(-1), grid.shape, order, eps)
    direct = superlu_solve(S, rhs)
    iterative = _solve_iteratively(S, rhs, unknown_comp)
    assert count >= 2 and direct is not None and np.isfinite(iterative).all()
    assert np.abs(iterative - direct).max() < 1e-10
    assert np.abs(result.filled.reshape(-1)[unknowns] - direct).max() < 1e-10


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_punching_into_the_input_gives_the_same_fill(small_problem, dtype):
    grid, cell, values, positions, radius = small_problem
    values = values.astype(dtype)
    copied = punch_and_fill(values, grid, cell, positions, radius=radius)
    mine = values.copy()
    own = punch_and_fill(mine, grid, cell, positions, radius=radius, overwrite_input=True)
    assert own.filled is mine  # no copy made
    assert np.array_equal(own.punched, copied.punched, equal_nan=True)
    assert np.array_equal(own.filled, copied.filled, equal_nan=True)
    assert np.array_equal(own.outcome, copied.outcome)
    assert np.array_equal(values, values.astype(dtype), equal_nan=True)  # the default copies
    assert not np.array_equal(mine, values, equal_nan=True)
    # punched: the input with its holes NaN, nothing else changed
    hole = own.hole
    assert hole.sum() == own.holes.size > 0 and np.isnan(own.punched[hole]).all()
    kept = ~hole
    assert np.array_equal(own.punched[kept], values[kept], equal_nan=True)


def test_float32_in_float32_out(small_problem):
    grid, cell, values, positions, radius = small_problem
    result = punch_and_fill(values.astype(np.float32), grid, cell, positions, radius=radius)
    assert result.filled.dtype == np.float32 and result.punched.dtype == np.float32
    expected = dense_laplace_fill(values.astype(np.float32).astype(np.float64),
                                  fill_region(grid, cell, values, positions, radius))
    assert np.nanmax(np.abs(result.filled - expected)) < 1e-6


# --------------------------------------------------------------------------------------
# Punch geometry and the reflections punched
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("cell,units,radius", [
    (UnitCell(4.0, 4.0, 6.5, 90, 90, 120), "inverse_angstrom", 0.45),
    (UnitCell(5.0, 6.0, 7.0, 90, 107, 90), "inverse_angstrom", 0.4),
    (UnitCell(5.0, 6.0, 7.0, 90, 107, 90), "rlu", 0.23),
])
def test_punched_voxels_are_those_within_the_radius(cell, units, radius):
    grid = Grid(Axis(-1.0, 0.05, 41), Axis(-1.0, 0.1, 21), Axis(-1.5, 0.125, 25))
    values = np.ones(grid.shape)
    for position in ([0.0, 0.0, 0.0], [0.31, -0.27, 0.4], [-0.5, 0.5, -0.55]):
        result = punch_and_fill(values, grid, cell, [position], radius=radius, units=units)
        expected = brute_hole(grid, cell, position, radius, units)
        assert expected.sum() > 10
        assert np.array_equal(result.hole, expected), position
        assert np.array_equal(np.isnan(result.punched), expected)
        assert result.counts["filled"] == 1


def test_pair_arrays_grow_keeping_their_pairs_without_a_slice_assignment_check(tmp_path):
    """The punch's pair arrays double when full, their pairs kept, by a loop: numba
    compiles a slice assignment (b[:n] = a[:n]) with a shape check and a formatted
    message, 2.5 CPU-s of the first delta_pdf job after an install."""
    compiled = compiled_in_fresh_process("""
        import numpy as np
        from hklflow.algorithms.pdf.fill_kernels import _grown
        grown = _grown(np.arange(5, dtype=np.int64) + 7, 3)
        assert grown.size == 10 and grown.dtype == np.int64 and list(grown[:3]) == [7, 8, 9]
    """, tmp_path)
    assert "_grown" in compiled
    assert not slice_assignment_checks(compiled), compiled


def test_a_radius_below_half_a_step_punches_the_nearest_voxel():
    grid = Grid(Axis(-1.0, 0.1, 21), Axis(-1.0, 0.1, 21), Axis(-1.0, 0.1, 21))
    position = [0.33, -0.52, 0.07]
    result = punch_and_fill(np.ones(grid.shape), grid, UnitCell(4, 4, 4), [position], radius=0.001)
    ih, ik, il = grid.index(position)
    assert result.hole.sum() == 1 and result.hole[il, ik, ih]
    assert grid.h.values[ih] == pytest.approx(0.3) and grid.k.values[ik] == pytest.approx(-0.5)
    assert result.filled[il, ik, ih] == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("symbol,cell", [
    ("I 41/a m d", UnitCell(5.0, 5.0, 9.0)),
    ("P 63/m m c", UnitCell(4.0, 4.0, 6.5, 90, 90, 120)),
])
def test_reflections_to_punch_leave_out_absences(symbol, cell):
    crystal = Crystal(symbol, cell)
    grid = Grid(Axis(-3.0, 0.1, 61), Axis(-2.0, 0.1, 41), Axis(-4.0, 0.1, 81))
    q_max = 5.5
    got = reflections_to_punch(crystal, grid, q_max)
    hkl = np.stack(np.meshgrid(np.arange(-3, 4), np.arange(-2, 3), np.arange(-4, 5), indexing="ij"),
                   axis=-1).reshape(-1, 3)  # every hkl inside the grid's limits
    hkl = hkl[np.any(hkl != 0, axis=1) & (np.sqrt(q_squared(cell, hkl)) <= q_max)]
    absent = crystal.is_absent(hkl)
    assert absent.sum() > 10  # the test means something
    assert {tuple(x) for x in got} == {tuple(x) for x in hkl[~absent]}
    assert not crystal.is_absent(got).any()
    assert got.dtype.kind == "i" and got.shape[1] == 3
    if symbol == "P 63/m m c":
        assert (0, 0, 2) in {tuple(x) for x in got} and (0, 0, 1) not in {tuple(x) for x in got}


# --------------------------------------------------------------------------------------
# Outcomes
# --------------------------------------------------------------------------------------
def test_outcomes():
    grid = Grid(Axis(-2.0, 0.1, 41), Axis(-2.0, 0.1, 41), Axis(-2.0, 0.1, 41))
    cell = UnitCell(5.0, 5.0, 5.0)
    hkl = voxel_hkl(grid)
    values = 1.0 + 0.1 * hkl[..., 0]
    # a ball of unmeasured voxels well beyond twice the radius around (1, 1, 1)
    values[q_squared(cell, hkl - [1.0, 1.0, 1.0]) <= 1.2 ** 2] = np.nan
    positions = np.array([
        [0.0, 0.0, 0.0],     # filled
        [2.5, 0.0, 0.0],     # off_grid
        [0.0, 2.0, 0.0],     # edge
        [1.0, 1.0, 1.0],     # no_data
        [0.0, -1.9, 0.0],    # edge, its hole crosses k = -2.05
        [0.0, -1.75, 0.06],  # filled alone, but merged with the one above: edge
    ])
    result = punch_and_fill(values, grid, cell, positions, radius=0.3)
    names = [OUTCOMES[o] for o in result.outcome]
    assert names == ["filled", "off_grid", "edge", "no_data", "edge", "edge"]
    assert result.counts == {"filled": 1, "off_grid": 1, "edge": 3, "no_data": 1, "solver_failed": 0}
    assert sum(result.counts.values()) == len(positions)
    assert np.isnan(result.filled[brute_hole(grid, cell, positions[3], 0.3)]).all()
    assert np.isfinite(result.filled[brute_hole(grid, cell, positions[2], 0.3)]).all()
    assert not result.hole[:, :, -1].any()  # nothing punched for the off-grid position


def test_a_non_finite_solution_is_solver_failed(caplog):
    # Matern fills overshoot (no maximum principle): from +-3e38 data the fill of one hole
    # passes float32's largest number, the other hole's is fine
    grid = Grid(Axis(-1.0, 0.1, 21), Axis(-1.0, 0.1, 21), Axis(-1.0, 0.1, 21))
    il, ik, ih = voxel_indices(grid)
    values = np.where((il + ik + ih) % 2 == 0, 3.0e38, -3.0e38).astype(np.float32)
    values[:, :, :10] = 1.0
    positions = [[0.5, 0.0, 0.0], [-0.5, 0.0, 0.0]]
    with caplog.at_level(logging.WARNING):
        result = punch_and_fill(values, grid, UnitCell(4, 4, 4), positions, radius=0.2, order=2,
                                log=logging.getLogger("test_pdf"))
    assert [OUTCOMES[o] for o in result.outcome] == ["solver_failed", "filled"]
    assert np.isnan(result.filled[result.hole & (ih >= 10)]).all()
    assert np.isfinite(result.filled[result.hole & (ih < 10)]).all()
    assert "fill failed" in caplog.text


@pytest.mark.parametrize("kwargs,message", [
    ({"order": 4}, "order"), ({"order": 0}, "order"), ({"eps": -0.1}, "eps"),
    ({"units": "degree"}, "units"), ({"radius": 0.0}, "radius"),
])
def test_bad_arguments(kwargs, message):
    grid = Grid(Axis(-1.0, 0.1, 21), Axis(-1.0, 0.1, 21), Axis(-1.0, 0.1, 21))
    with pytest.raises(ValueError, match=message):
        punch_and_fill(np.ones(grid.shape), grid, UnitCell(4, 4, 4), [[0, 0, 0]], **kwargs)


# --------------------------------------------------------------------------------------
# Taper and FFT
# --------------------------------------------------------------------------------------
def test_taper_values_and_monotonic():
    cell = UnitCell(2 * math.pi, 2 * math.pi, 2 * math.pi)  # |Q| = |hkl| in 1/Angstrom
    grid = Grid(Axis(-5.0, 0.25, 41), Axis(-1.0, 0.25, 9), Axis(-1.0, 0.5, 5))
    taper = tukey_taper(grid, cell, q_max=4.0)  # R = |Q| / 2
    assert taper.dtype == np.float32 and taper.shape == grid.shape
    il, ik = 2, 4  # l = 0, k = 0
    at = {h: taper[il, ik, grid.h.index(h)] for h in (0.0, 2.0, 2.5, 3.0, 4.0, 5.0)}
    assert at[0.0] == 1.0 and at[2.0] == 1.0  # R = 0, 1
    assert at[2.5] == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)), abs=1e-7)  # R = 1.25
    assert at[3.0] == pytest.approx(0.5, abs=1e-7)  # R = 1.5
    assert at[4.0] == 0.0 and at[5.0] == 0.0  # R = 2 and beyond
    q = np.sqrt(q_squared(cell, voxel_hkl(grid))).ravel()
    order = np.argsort(q, kind="stable")
    assert np.all(np.diff(taper.ravel()[order].astype(np.float64)) <= 1e-7)


def test_the_tapered_mean_tells_where_the_taper_is_above_zero_without_its_cosine():
    """_taper_above_zero (the mean's test) equals np.float32(taper) > 0 everywhere, through
    R = 2 - TAPER_SURE, where it starts computing the cosine, and up to R = 2, where the
    float32 taper reaches 0."""
    q_max = 3.7
    lo, hi = taper_bounds(q_max)
    r = np.concatenate([np.linspace(0, 2.2, 20001),
                        2 - TAPER_SURE + np.linspace(-1e-6, 1e-6, 2001),
                        2 - np.geomspace(1e-2, 1e-12, 4001), np.nextafter(2.0, 0) - np.arange(50) * 2e-16])
    q2 = (r * q_max / 2) ** 2
    want = [np.float32(taper_of(v, lo, hi, q_max)) > 0 for v in q2]
    got = [_taper_above_zero(v, lo, hi, q_max) for v in q2]
    assert got == want
    assert not all(want) and sum(want) > len(want) / 2


def test_taper_uses_the_metric_of_a_hexagonal_cell():
    cell = UnitCell(4.0, 4.0, 6.5, 90, 90, 120)
    grid = Grid(Axis(-2.0, 0.1, 41), Axis(-2.0, 0.1, 41), Axis(-2.0, 0.25, 17))
    q_max = 4.0
    r = 2 * np.sqrt(q_squared(cell, voxel_hkl(grid))) / q_max
    expected = np.where(r <= 1, 1.0, np.where(r < 2, 0.5 * (1 - np.cos(np.pi * r)), 0.0))
    assert np.abs(tukey_taper(grid, cell, q_max) - expected).max() < 1e-6
    assert ((r > 1) & (r < 2)).sum() > 1000


def test_taper_in_the_fft_copy_equals_tapering_the_volume():
    """pdf_fft(taper=...) gives, bit for bit, the FFT of (values - mean) * tukey_taper in
    float32 (what the steps computed before, in place), leaves values as they are, and the
    mean is that of the finite voxels inside the taper; an asymmetric, NaN-holed, hexagonal
    volume."""
    cell = UnitCell(4.0, 4.0, 6.5, 90, 90, 120)
    grid = Grid(Axis(-2.0, 0.1, 43), Axis(-1.5, 0.1, 33), Axis(-2.0, 0.25, 19))
    rng = np.random.default_rng(8)
    values = rng.normal(5.0, 1.0, grid.shape).astype(np.float32)
    values[rng.random(grid.shape) < 0.2] = np.nan
    before = values.copy()
    q_max = 3.0
    taper = tukey_taper(grid, cell, q_max)
    inside = np.isfinite(values) & (taper > 0)
    mean = tapered_mean(values, grid, cell, q_max)
    assert mean == pytest.approx(values[inside].astype(np.float64).mean(), rel=1e-12)
    want, axes = pdf_fft((values - np.float32(mean)) * taper, grid)
    got, axes2 = pdf_fft(values, grid, taper=(cell, q_max, mean))
    assert np.array_equal(got, want) and all(np.array_equal(a, b) for a, b in zip(axes, axes2))
    assert np.array_equal(values, before, equal_nan=True)
    with pytest.raises(ValueError, match="float32"):
        pdf_fft(values.astype(np.float64), grid, taper=(cell, q_max, mean))


def test_spectrum_pdf_is_rfftns_result_bit_for_bit_in_half_the_memory():
    """pdf_spectrum transforms in the memory of its own half spectrum; its PDF equals, bit
    for bit, scipy's rfftn of the tapered fftshifted copy unfolded by numpy (what pdf_fft
    computed before), every part read alone equals that part of the whole, and the memory
    it allocates is about the half spectrum (a separate input copy would double it)."""
    import tracemalloc

    cell = UnitCell(4.0, 4.5, 6.5, 90, 100, 90)
    grid = Grid(Axis(-2.0, 0.1, 41), Axis(-1.6, 0.1, 35), Axis(-4.0, 0.1, 81))
    rng = np.random.default_rng(11)
    values = rng.normal(5.0, 1.0, grid.shape).astype(np.float32)
    values[rng.random(grid.shape) < 0.1] = np.nan
    q_max = 4.0
    mean = tapered_mean(values, grid, cell, q_max)
    sh, sk, sl = fft_crop(grid)
    tapered = (values - np.float32(mean)) * tukey_taper(grid, cell, q_max)
    data = np.fft.fftshift(np.nan_to_num(tapered[sl, sk, sh]))
    nz, ny, nx = data.shape
    half = scipy.fft.rfftn(data)
    real = np.empty(data.shape, np.float32)
    real[:, :, :nx // 2] = half.real[:, :, :nx // 2]
    # the negative x frequencies, the Nyquist one included, from the mirror image
    mirror = half.real[(-np.arange(nz)) % nz][:, (-np.arange(ny)) % ny]
    real[:, :, nx // 2:] = mirror[:, :, nx - np.arange(nx // 2, nx)]
    want = np.fft.fftshift(real) * np.float32(1.0 / real.size)

    pdf_spectrum(values, grid, taper=(cell, q_max, mean))  # compiled kernels loaded
    tracemalloc.start()
    spectrum, _ = pdf_spectrum(values, grid, taper=(cell, q_max, mean))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert spectrum.shape == want.shape == (80, 32, 40)
    assert peak < 1.25 * spectrum.half.nbytes  # the half spectrum and a few planes
    assert np.array_equal(np.asarray(spectrum), want)
    for key in [5, -1, (slice(None), 7), (slice(None), slice(None), 0), (slice(None), -3, 19),
                (slice(10, 30), slice(2, 5), slice(15, 33)), (3, 4, 5), (slice(70, 200),),
                (slice(None, None, 2),), (np.array([1, 3]),)]:
        assert np.array_equal(spectrum[key], want[key]), key
    with pytest.raises(IndexError):
        spectrum[80]


def test_fft_of_a_cosine():
    grid = Grid(Axis(-2.0, 0.25, 17), Axis(-1.5, 0.25, 13), Axis(-2.5, 0.5, 11))
    x0, y0, z0 = 0.5, -2 / 3, 0.4  # points of the PDF axes: multiples of 1 / (n step)
    hkl = voxel_hkl(grid)
    phase = 2 * np.pi * (hkl[..., 0] * x0 + hkl[..., 1] * y0 + hkl[..., 2] * z0)
    values = (2.0 + 3.0 * np.cos(phase)).astype(np.float32)
    out, (x, y, z) = pdf_fft(values, grid)
    assert out.shape == (10, 12, 16) and out.dtype == np.float32
    np.testing.assert_allclose(x, np.fft.fftshift(np.fft.fftfreq(16, 0.25)))
    np.testing.assert_allclose(z, np.fft.fftshift(np.fft.fftfreq(10, 0.5)))
    expected = np.zeros(out.shape)
    at = {(0.0, 0.0, 0.0): 2.0, (x0, y0, z0): 1.5, (-x0, -y0, -z0): 1.5}
    for (px, py, pz), v in at.items():
        expected[np.argmin(abs(z - pz)), np.argmin(abs(y - py)), np.argmin(abs(x - px))] = v
    assert (expected > 0).sum() == 3
    assert np.abs(out - expected).max() < 1e-6


def nxrefine_fft(values):
    """NXRefine's total_pdf / delta_pdf expression, with NaN as 0 (its data hold 0 there)."""
    data = np.nan_to_num(values.astype(np.float32))
    fft = np.real(scipy.fft.fftshift(scipy.fft.fftn(scipy.fft.fftshift(data[:-1, :-1, :-1]))))
    fft *= 1.0 / np.prod(fft.shape)
    return fft


def test_fft_equals_nxrefines_plain_fftn():
    grid = Grid(Axis(-2.0, 0.125, 33), Axis(-1.5, 0.125, 25), Axis(-3.0, 0.25, 25))
    rng = np.random.default_rng(5)
    values = rng.normal(size=grid.shape).astype(np.float32)
    values[rng.random(grid.shape) < 0.05] = np.nan
    out, _ = pdf_fft(values, grid, workers=2)
    expected = nxrefine_fft(values)
    assert out.shape == expected.shape == (24, 24, 32)
    exact = np.real(np.fft.fftshift(np.fft.fftn(np.fft.fftshift(
        np.nan_to_num(values.astype(np.float64))[:-1, :-1, :-1])))) / expected.size
    scale = np.abs(exact).max()
    assert np.abs(out - expected).max() < 1e-6 * scale  # float32 rounding
    assert np.abs(out - exact).max() < 1e-6 * scale
    assert np.abs(expected - exact).max() < 1e-6 * scale


def even_volume(grid_shape, rng, nan_fraction=0.05):
    """A random volume even about the voxel at the centre of each axis (odd lengths)."""
    values = rng.random(grid_shape).astype(np.float64)
    for axis in range(3):
        values = values + np.flip(values, axis=axis)
    values[rng.random(grid_shape) < nan_fraction] = np.nan
    for axis in range(3):  # NaN at the mirror images too
        values = values + np.flip(values, axis=axis) * 0
    return values.astype(np.float32)


def test_region_bits_hold_a_bit_per_voxel_set_for_the_regions_voxels():
    rng = np.random.default_rng(3)
    region = np.unique(rng.integers(0, 1003, 200))
    bits = region_bits(region, 1003)
    assert bits.dtype == np.uint8 and bits.size == 126
    want = np.zeros(1003, bool)
    want[region] = True
    assert np.array_equal(np.unpackbits(bits, bitorder="little")[:1003].astype(bool), want)
    assert not np.unpackbits(bits, bitorder="little")[1003:].any()


def with_mirror_images(hkl):
    """The positions and their images under the three axis mirrors."""
    signs = np.array([[a, b, c] for a in (1, -1) for b in (1, -1) for c in (1, -1)])
    return np.unique((np.asarray(hkl, float)[:, None, :] * signs).reshape(-1, 3), axis=0)


# on the planes at 0, across them (holes that merge with their mirror image), near the
# grid's edge (punched across it) and in the open octants
EVEN_POSITIONS = with_mirror_images([[0, 0, 0], [0.5, 0, 0], [0, 0.7, 1.0], [0.3, 0.6, 1.0],
                                     [0.05, 0.45, 0.5], [0.9, 1.45, 1.75], [0.6, -0.3, 0.0]])


@pytest.mark.parametrize("order,extra_h", [(1, 0), (2, 0), (1, 3)],
                         ids=["laplace", "matern", "asymmetric grid"])
def test_an_even_volume_is_filled_from_its_octant_as_when_every_region_is_solved(order, extra_h):
    # an even volume with NaN voxels; with extra_h, 3 more voxels at +h that are not even
    # (the regions that reach them, and their mirror images, solved)
    rng = np.random.default_rng(5)
    grid = Grid(Axis(-1.0, 0.1, 21 + extra_h), Axis(-1.5, 0.1, 31), Axis(-2.0, 0.25, 17))
    values = (100 * rng.random(grid.shape)).astype(np.float32)
    values[:, :, :21] = even_volume((17, 31, 21), rng, 0.003)
    cell = UnitCell(5.0, 5.5, 6.0)
    whole = punch_and_fill(values, grid, cell, EVEN_POSITIONS, radius=0.2, order=order)
    octant = punch_and_fill(values, grid, cell, EVEN_POSITIONS, radius=0.2, order=order,
                            even=True)
    assert whole.mirrored == 0 and 0 < octant.unknowns < whole.unknowns / 2
    assert octant.unknowns + octant.mirrored == whole.unknowns
    assert np.array_equal(octant.region, whole.region)
    assert np.array_equal(octant.outcome, whole.outcome)
    assert octant.counts["edge"] > 0 and octant.counts["filled"] > 0
    # the same fill: the octant's regions solved alike, the others their images' values
    np.testing.assert_allclose(octant.filled, whole.filled, rtol=2e-6, atol=0)
    c = [n // 2 for n in (17, 31, 21)]
    assert np.array_equal(octant.filled[c[0]:, c[1]:, c[2]:21], whole.filled[c[0]:, c[1]:, c[2]:21],
                          equal_nan=True)
    even = octant.filled[:, :, :21]
    assert np.array_equal(even, even[::-1, ::-1, ::-1], equal_nan=True) == (extra_h == 0)


def test_regions_that_are_not_mirror_images_are_all_solved():
    rng = np.random.default_rng(6)
    grid = Grid(Axis(-1.0, 0.1, 21), Axis(-1.5, 0.1, 31), Axis(-2.0, 0.25, 17))
    values = even_volume(grid.shape, rng, 0.003)
    cell = UnitCell(5.0, 5.5, 6.0)
    lopsided = np.concatenate([EVEN_POSITIONS, [[-0.4, 0.8, 1.25]]])  # its images not punched
    whole = punch_and_fill(values, grid, cell, lopsided, radius=0.2)
    octant = punch_and_fill(values, grid, cell, lopsided, radius=0.2, even=True)
    assert octant.mirrored == 0 and octant.unknowns == whole.unknowns
    assert np.array_equal(octant.filled, whole.filled, equal_nan=True)
    # no voxel at 0 along an axis: no mirror either
    shifted = Grid(Axis(-0.95, 0.1, 20), Axis(-1.5, 0.1, 31), Axis(-2.0, 0.25, 17))
    octant = punch_and_fill(values[:, :, 1:], shifted, cell, EVEN_POSITIONS, radius=0.2,
                            even=True)
    assert octant.mirrored == 0 and octant.unknowns > 0


def symmetric_grid(n):
    """A grid symmetric about 0 with steps of binary fractions: a voxel and its mirror
    images have the same |Q| to the last bit."""
    return Grid(*(Axis(-(m - 1) / 2 * s, s, m) for m, s in zip(n, (0.125, 0.125, 0.25))))


@pytest.mark.parametrize("n", [(21, 31, 17), (20, 31, 16)], ids=["odd", "even lengths"])
def test_the_octant_boxes_stand_for_every_voxel_once(n):
    grid = symmetric_grid(n)
    covered = np.zeros(grid.shape, int)
    for bl, bk, bh, times in octant_boxes(grid):
        box = np.zeros(grid.shape, int)
        box[bl, bk, bh] = 1
        images = sum(np.flip(box, axes) for axes in
                     [(), (0,), (1,), (2,), (0, 1), (0, 2), (1, 2), (0, 1, 2)]) > 0
        assert images.sum() == times * box.sum()  # (a box and its images do not overlap)
        covered += images
    assert (covered == 1).all()
    # within L planes [l0, l1): the same boxes cut there, their L slices from l0
    l0, l1 = octant_start(grid) - 1, octant_start(grid) + 3
    cut = [(range(l0 + b[0].start, l0 + b[0].stop), b[1], b[2], b[3])
           for b in octant_boxes(grid, l0, l1)]
    whole = [(range(max(b[0].start, l0), min(b[0].stop, l1)), b[1], b[2], b[3])
             for b in octant_boxes(grid)]
    assert cut == [b for b in whole if len(b[0])] and len(cut) >= 2
    asymmetric = Grid(Axis(-1.0, 0.125, 20), grid.k, grid.l)
    assert octant_boxes(asymmetric) is None


@pytest.mark.parametrize("n", [(21, 31, 17), (20, 31, 16)], ids=["odd", "even lengths"])
def test_an_even_volumes_statistics_from_its_octant_are_those_of_the_whole(n):
    from hklflow.algorithms.pdf.volume import coverage_by_shell, farthest_shell_edge

    grid = symmetric_grid(n)
    values = even_volume(grid.shape, np.random.default_rng(8), 0.02)
    values[np.abs(grid.l.values) > 1.5] = np.nan  # unmeasured far out along L
    cell = UnitCell(4.0, 5.0, 7.0)

    def planes(l0, l1):  # as total_pdf reads a file: a buffer that is reused
        buffer[:l1 - l0] = values[l0:l1]
        return buffer[:l1 - l0]

    buffer = np.empty((SLAB_PLANES,) + grid.shape[1:], np.float32)
    for source in (values, planes):
        whole = coverage_by_shell(grid, cell, source)
        octant = coverage_by_shell(grid, cell, source, even=True)
        for a, b in zip(whole, octant):
            assert np.array_equal(a, b)
        mean, unmeasured = taper_statistics(source, grid, cell, 3.0, 2.5)
        o_mean, o_unmeasured = taper_statistics(source, grid, cell, 3.0, 2.5, even=True)
        assert o_unmeasured == unmeasured > 0
        assert abs(o_mean - mean) < 1e-12 * abs(mean)
    assert farthest_shell_edge(grid, cell, values, even=True) == \
        farthest_shell_edge(grid, cell, values) > 0
    # a grid not symmetric about 0: the whole is counted
    lopsided = Grid(Axis(-1.25, 0.125, n[0] + 3), grid.k, grid.l)
    more = np.concatenate([values, values[:, :, :3]], axis=2)
    for a, b in zip(coverage_by_shell(lopsided, cell, more),
                    coverage_by_shell(lopsided, cell, more, even=True)):
        assert np.array_equal(a, b)


@pytest.mark.parametrize("tapered", [False, True], ids=["plain", "tapered"])
def test_the_pdf_of_a_volume_even_along_each_axis_is_the_cosine_transform_of_its_octant(tapered):
    # the volume even about 0 inside the crop, other values beyond it (an asymmetric grid:
    # 3 more voxels at +h, 2 more L planes at -l), NaN voxels, a taper and a mean
    rng = np.random.default_rng(7)
    grid = Grid(Axis(-2.0, 0.1, 44), Axis(-3.0, 0.1, 61), Axis(-4.5, 0.25, 35))
    values = (100 * rng.random(grid.shape)).astype(np.float32)
    values[2:, :, :41] = even_volume((33, 61, 41), rng)
    cell = UnitCell(4.0, 5.0, 7.0)
    taper = (cell, 3.0, np.float32(0.7)) if tapered else None
    spectrum, axes = pdf_spectrum(values, grid, taper=taper)
    cosine, cosine_axes = pdf_spectrum(values, grid, taper=taper, even=True)
    assert isinstance(cosine, CosinePDF) and cosine.octant.shape == (17, 31, 21)
    assert cosine.shape == spectrum.shape == (32, 60, 40)
    for a, b in zip(axes, cosine_axes):
        assert np.array_equal(a, b)
    sh, sk, sl = fft_crop(grid)
    data = values.astype(np.float64) if taper is None else \
        (values - np.float32(0.7)) * tukey_taper(grid, cell, 3.0)
    data = np.nan_to_num(data.astype(np.float64)[sl, sk, sh])
    exact = np.real(scipy.fft.fftshift(scipy.fft.fftn(scipy.fft.fftshift(data)))) / data.size
    whole = np.asarray(cosine)
    scale = np.abs(exact).max()
    assert np.abs(whole - exact).max() < 2e-7 * scale  # float32 rounding, as the FFT's:
    assert np.abs(np.asarray(spectrum) - exact).max() < 2e-7 * scale
    # its parts computed alone are those of the whole
    assert np.array_equal(cosine[5], whole[5])
    assert np.array_equal(cosine[3:9, 50:60, 0:7], whole[3:9, 50:60, 0:7])
    assert cosine[31, 0, 39] == whole[31, 0, 39]


def test_only_a_volume_symmetrised_with_the_three_axis_mirrors_counts_as_even():
    from hklflow.algorithms.merge.symmetry import symmetry_notes
    from hklflow.algorithms.pdf.volume import even_along_axes

    def notes(space_group, cell):
        return {"symmetrized": symmetry_notes(Crystal(space_group, UnitCell.from_list(cell)))}

    assert even_along_axes(notes("I 4/m m m", [3.8, 3.8, 13.3, 90, 90, 90]))
    assert even_along_axes(notes("P m m m", [3.0, 4.0, 5.0, 90, 90, 90]))
    assert even_along_axes(notes("F m -3 m", [5.0, 5.0, 5.0, 90, 90, 90]))
    assert not even_along_axes(notes("P 4/m", [3.8, 3.8, 13.3, 90, 90, 90]))
    assert not even_along_axes(notes("P 1 2/m 1", [3.0, 4.0, 5.0, 90, 100, 90]))
    assert not even_along_axes(notes("P 6/m m m", [3.0, 3.0, 5.0, 90, 90, 120]))
    assert not even_along_axes({})  # merged, not symmetrised


def test_fft_crops_an_asymmetric_grid_about_zero():
    grid = Grid(Axis(-1.0, 0.25, 17), Axis(-3.0, 0.5, 9), Axis(-0.5, 0.25, 7))
    values = np.random.default_rng(2).random(grid.shape).astype(np.float32)
    out, (x, y, z) = pdf_fft(values, grid)
    # zero at index 4 (h), 6 (k), 2 (l): ranges [0, 8), [4, 8), [0, 4)
    assert out.shape == (4, 4, 8)
    assert np.abs(out - nxrefine_fft(values[:5, 4:9, :9])).max() < 1e-6
    np.testing.assert_allclose(y, np.fft.fftshift(np.fft.fftfreq(4, 0.5)))


def test_fft_needs_a_voxel_at_zero():
    grid = Grid(Axis(-1.1, 0.25, 9), Axis(-1.0, 0.25, 9), Axis(-1.0, 0.25, 9))
    with pytest.raises(ValueError, match="h = 0"):
        pdf_fft(np.ones(grid.shape, np.float32), grid)
    grid = Grid(Axis(-1.0, 0.25, 9), Axis(0.0, 0.25, 9), Axis(-1.0, 0.25, 9))
    with pytest.raises(ValueError, match="both sides of k = 0"):
        pdf_fft(np.ones(grid.shape, np.float32), grid)



def test_shell_and_sphere_counts_equal_numpy():
    """coverage_by_shell and taper_statistics count in one compiled pass; on a triclinic
    cell and random unmeasured (NaN, inf) voxels their counts equal numpy's planes of |Q|^2 exactly
    (the same float64 expression, term for term)."""
    from hklflow.algorithms.pdf.volume import coverage_by_shell, q_squared_planes

    cell = UnitCell(5.1, 6.3, 7.7, 81.0, 97.0, 104.0)
    grid = Grid(Axis(-3.0, 0.05, 121), Axis(-2.5, 0.05, 101), Axis(-2.0, 0.1, 41))
    rng = np.random.default_rng(7)
    measured = rng.random(grid.shape) < 0.6
    values = np.where(measured, rng.random(grid.shape), np.nan).astype(np.float32)
    values[~measured & (rng.random(grid.shape) < 0.1)] = np.inf  # not finite: not measured
    q2 = q_squared_planes(grid, cell, 0, grid.l.n)
    edges, fraction, total = coverage_by_shell(grid, cell, values)
    width = edges[0]
    shell = np.minimum((np.sqrt(q2) / width).astype(np.int64), total.size - 1)
    expect_total = np.bincount(shell.ravel(), minlength=total.size)
    expect_seen = np.bincount(shell[measured], minlength=total.size)
    np.testing.assert_array_equal(total, expect_total)
    np.testing.assert_array_equal(fraction, expect_seen / np.maximum(expect_total, 1))
    assert total.sum() == grid.size and 0 < fraction.max() <= 1
    for q in (0.5, 2.0, 1e3):
        sphere = q2 <= q * q
        expect = (sphere & ~measured).sum() / max(sphere.sum(), 1)
        assert taper_statistics(values, grid, cell, q, q)[1] == expect


@pytest.mark.parametrize("where", ["random", "one voxel", "corner", "none"])
def test_farthest_shell_edge_is_measured_reach(where):
    """delta_pdf's reach from the largest measured |Q|^2 alone equals measured_reach's (from
    the shell counts), bit for bit: measured voxels at random, a single one inside, one in
    the grid's farthest corner (the last shell), none (0)."""
    from hklflow.algorithms.pdf.volume import farthest_shell_edge, measured_reach, q_squared_planes

    cell = UnitCell(5.1, 6.3, 7.7, 81.0, 97.0, 104.0)
    grid = Grid(Axis(-3.0, 0.05, 121), Axis(-2.5, 0.05, 101), Axis(-2.0, 0.1, 41))
    rng = np.random.default_rng(11)
    values = np.full(grid.shape, np.nan, np.float32)
    q2 = q_squared_planes(grid, cell, 0, grid.l.n)
    if where == "random":
        values[rng.random(grid.shape) < 0.2 * (q2 < 0.6 * q2.max())] = 1.0
        values[0, 0, 0] = np.inf  # not finite: not measured
    elif where == "one voxel":
        values[20, 50, 60] = 3.0
    elif where == "corner":
        values.reshape(-1)[np.argmax(q2)] = 2.0
    reach = farthest_shell_edge(grid, cell, values)
    assert reach == measured_reach(grid, cell, values)[0]
    assert (reach > 0) == (where != "none")


@pytest.mark.parametrize("shape, fraction", [((5, 6, 7), 0.5), ((9, 4, 3), 0.3), ((7, 11, 13), 0.6),
                                             ((1, 1, 40), 0.5), ((3, 1, 1), 1.0)])
def test_components_equal_scipys_connected_components(shape, fraction):
    """The union-find labels of the fill regions are scipy's connected components of the
    face-neighbour graph, numbered alike (by first voxel), on random regions whose voxels
    touch the ends of rows and planes (no link may wrap around)."""
    import scipy.sparse as sp
    from scipy.sparse.csgraph import connected_components

    rng = np.random.default_rng(int(np.prod(shape) * 10 * fraction))
    for _ in range(20):
        region = np.flatnonzero(rng.random(np.prod(shape)) < fraction).astype(np.int64)
        count, labels = _components(region, shape)
        n = region.size
        j = _find(region, _neighbours(region, shape)[0::2])
        rows = np.broadcast_to(np.arange(n), j.shape)[j >= 0]
        adjacency = sp.coo_matrix((np.ones(rows.size), (rows, j[j >= 0])), shape=(n, n))
        want_count, want = connected_components(adjacency, directed=False)
        assert count == want_count and np.array_equal(labels, want)
    assert _components(np.zeros(0, np.int64), shape)[0] == 0


def test_delta_pdf_of_a_file_equals_that_of_its_array_and_holds_one_volume(tmp_path):
    """Given the volume file and a place to store the filled volume (the step's output),
    delta_pdf drops the filled volume and reads it back into the spectrum's memory: the same
    PDF, notes and filled and punched volumes as from the array, bit for bit, with about one
    volume's memory at its peak once filled (the filled volume and the spectrum together
    would be two)."""
    import tracemalloc

    from hklflow.algorithms.pdf.volume import delta_pdf
    from hklflow.files.pdf import PDFWriter
    from hklflow.files.volume import read_intensity
    from hklflow.model.crystal import Crystal, UnitCell
    from hklflow.settings.params import PDFParams

    from volume_helpers import lattice_volume

    grid = small_grid(n=(65, 49, 81), step=(0.125, 0.125, 0.25))
    write_volume(tmp_path / "in.nxs", lattice_volume(grid, missing_beyond=12.0), {})
    crystal = Crystal("I 4/m m m", UnitCell(3.9, 3.9, 12.5, 90, 90, 90))
    params = PDFParams(radius=0.15, radius_units="inverse_angstrom", extra_positions=(),
                       fill_order=1, fill_eps=0.0, q_max=None, subtract_mean=True, errors=True,
                       slices=())
    _, intensity = read_intensity(tmp_path / "in.nxs")
    want, want_fill = delta_pdf(intensity.copy(), grid, crystal, params, "t")

    def run_from_file(name):
        def store(fill):  # the memory from here on: the filled volume, then the FFT's
            planes = out.write_volumes(grid, crystal.cell, fill.filled, fill.region)
            tracemalloc.reset_peak()
            return planes

        with PDFWriter(tmp_path / name) as out:
            pdf, fill = delta_pdf(tmp_path / "in.nxs", grid, crystal, params, "t",
                                  store_filled=store)
            out.write_pdf(pdf, {}, {"program": "test"})
        return pdf, fill

    run_from_file("warm.nxs")  # compiled kernels loaded (what compiling leaves is not counted)
    tracemalloc.start()
    got, fill = run_from_file("pdf.nxs")
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert fill.filled is None
    assert np.array_equal(np.asarray(got.values), np.asarray(want.values))
    assert {k: v for k, v in got.notes.items() if not k.endswith("seconds")} == \
        {k: v for k, v in want.notes.items() if not k.endswith("seconds")}
    stored = read_pdf(tmp_path / "pdf.nxs")
    assert np.array_equal(stored.values, np.asarray(want.values))
    import h5py
    with h5py.File(tmp_path / "pdf.nxs") as f:
        assert np.array_equal(f["entry/filled_data/data"][()], want_fill.filled, equal_nan=True)
        assert np.array_equal(f["entry/punched_data/data"][()], want_fill.punched, equal_nan=True)
    # the volume (or the spectrum), a few planes (10% each here) and the hole indices: 1.4x
    # measured; the volume and the spectrum together would be over 2x
    assert peak < 1.6 * intensity.nbytes + fill.region.nbytes + fill.holes.nbytes


def test_an_even_volume_takes_the_same_delta_pdf_from_its_octant():
    """delta_pdf(even=True): the fill regions outside the octant take their mirror images'
    values, and the transform is the octant's cosine transform: the same PDF and fill as
    with every region solved and the whole volume transformed, to float32 rounding."""
    from hklflow.algorithms.pdf.volume import delta_pdf
    from hklflow.model.crystal import Crystal, UnitCell
    from hklflow.settings.params import PDFParams

    from volume_helpers import lattice_volume

    grid = small_grid(n=(65, 49, 81), step=(0.125, 0.125, 0.25))
    intensity = lattice_volume(grid, missing_beyond=12.0).intensity()
    crystal = Crystal("I 4/m m m", UnitCell(3.9, 3.9, 12.5, 90, 90, 90))
    params = PDFParams(radius=0.15, radius_units="inverse_angstrom", extra_positions=(),
                       fill_order=1, fill_eps=0.0, q_max=None, subtract_mean=True, errors=True,
                       slices=())
    whole, whole_fill = delta_pdf(intensity.copy(), grid, crystal, params, "t")
    octant, octant_fill = delta_pdf(intensity.copy(), grid, crystal, params, "t", even=True)
    assert whole_fill.mirrored == 0 < 4 * octant_fill.unknowns < octant_fill.mirrored
    assert octant_fill.unknowns + octant_fill.mirrored == whole_fill.unknowns
    assert np.array_equal(octant_fill.outcome, whole_fill.outcome)
    assert octant_fill.counts["filled"] > 100
    np.testing.assert_allclose(octant_fill.filled, whole_fill.filled, rtol=1e-6)
    want, got = np.asarray(whole.values), np.asarray(octant.values)
    assert got.shape == want.shape
    assert np.abs(got - want).max() < 1e-6 * np.abs(want).max()


def test_total_pdf_of_a_file_equals_that_of_its_array_and_holds_one_volume(tmp_path):
    """Given the volume file, total_pdf reads it slab by slab for the shells' coverage and
    the taper's statistics, then plane by plane into the spectrum's memory, never whole:
    the same PDF and notes as from the array, bit for bit, with about one volume's memory
    at its peak (the spectrum's; the array and the spectrum together would be two)."""
    import tracemalloc

    from hklflow.algorithms.pdf.volume import total_pdf
    from hklflow.files.volume import read_intensity

    grid = small_grid(n=(65, 49, 81), step=(0.125, 0.125, 0.25))
    vol = lattice_volume(grid, missing_beyond=12.0)
    write_volume(tmp_path / "in.nxs", vol, {})
    cell = UnitCell(*TETRA)
    _, intensity = read_intensity(tmp_path / "in.nxs")
    want = total_pdf(intensity, grid, cell, None, "t")
    total_pdf(tmp_path / "in.nxs", grid, cell, None, "t")  # compiled kernels loaded
    tracemalloc.start()
    got = total_pdf(tmp_path / "in.nxs", grid, cell, None, "t")
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert np.array_equal(np.asarray(got.values), np.asarray(want.values))
    assert {k: v for k, v in got.notes.items() if k != "fft_seconds"} == \
        {k: v for k, v in want.notes.items() if k != "fft_seconds"}
    assert peak < 1.5 * intensity.nbytes  # the volume and its measured mask


def test_an_even_volume_s_total_pdf_is_read_slab_by_slab_and_equals_the_fft_s(tmp_path):
    """A volume even along each axis (a tetragonal lattice of peaks on a grid symmetric
    about 0): its total PDF from the octant's cosine transforms, from the file read slab by
    slab (never whole: the octant, an eighth of the volume, and a few slabs at the peak),
    equals that of the array bit for bit and the FFT's to float32 rounding."""
    import tracemalloc

    from hklflow.algorithms.pdf.volume import total_pdf
    from hklflow.files.volume import read_intensity

    grid = small_grid(n=(65, 49, 81), step=(0.125, 0.125, 0.25))
    write_volume(tmp_path / "in.nxs", lattice_volume(grid, missing_beyond=12.0), {})
    cell = UnitCell(*TETRA)
    _, intensity = read_intensity(tmp_path / "in.nxs")
    assert np.array_equal(intensity, intensity[::-1, ::-1, ::-1], equal_nan=True)
    fft = total_pdf(intensity, grid, cell, None, "t")
    want = total_pdf(intensity, grid, cell, None, "t", even=True)
    total_pdf(tmp_path / "in.nxs", grid, cell, None, "t", even=True)  # compiled kernels loaded
    tracemalloc.start()
    got = total_pdf(tmp_path / "in.nxs", grid, cell, None, "t", even=True)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert got.notes["fft"].startswith("cosine") and fft.notes["fft"].endswith("FFT")
    assert np.array_equal(np.asarray(got.values), np.asarray(want.values))
    seconds = ("fft_seconds", "fft", "fft_shape")
    assert {k: v for k, v in got.notes.items() if k not in seconds} == \
        {k: v for k, v in want.notes.items() if k not in seconds}
    # its statistics counted in the octant (each voxel for its mirror images too): the
    # coverage and q_max the whole volume's, the mean to rounding
    for key in ("q_max", "q_reach", "q_complete", "unmeasured_within_q_max"):
        assert got.notes[key] == fft.notes[key]
    assert got.notes["mean_subtracted"] == pytest.approx(fft.notes["mean_subtracted"], rel=1e-12)
    values, expected = np.asarray(got.values), np.asarray(fft.values)
    assert np.abs(values - expected).max() < 2e-7 * np.abs(expected).max()
    # the octant and slabs of 8 of the 81 planes: 0.66 measured (the whole job at 801^3:
    # 0.55 GB resident, the volume 2.05 GB); the volume read whole made it 1.25
    assert peak < 0.8 * intensity.nbytes
