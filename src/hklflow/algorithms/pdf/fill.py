"""Punch and fill (NXRefine's nxreduce.py: hole_mask, punch_and_fill): every Bragg reflection
(and any extra position) is cut out of a volume array[l, k, h] whose unmeasured voxels are NaN,
and the holes are filled from the measured voxels around them by Laplace or Matern
interpolation (hklflow.algorithms.pdf's docstring tells the method and how it differs from NXRefine's)."""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from .fill_kernels import (_conjugate_gradients, _fold_onto_octant, _label_components,
                           _neighbours_kernel, _punch_pairs, _set_bits, _usable_kernel)
from .q_grid import UNITS, q_metric

OUTCOMES = ("filled", "off_grid", "edge", "no_data", "solver_failed")
FILLED, OFF_GRID, EDGE, NO_DATA, SOLVER_FAILED = range(len(OUTCOMES))
# a position whose fill region merges with others takes the worst outcome among them, in
# this order: filled < edge < no_data < solver_failed (off_grid positions have no region)

ORDERS = (1, 2, 3)
# unknowns per batch: bounds the memory of a batch's assembled system
DEFAULT_BATCH_UNKNOWNS = 250_000
# conjugate gradients solve the systems region by region, in memory linear in the unknowns:
# a settled choice over SuperLU, whose factors grow faster and which was the slower at every
# region size measured (bench/README.md); SuperLU stays the tests' independent check
# (tests/superlu_reference.py)
_CG_RTOL = 1e-12  # relative residual: solution errors ~1e-9 relative for well-shaped regions
_CG_MAX_ITERATIONS = 20_000
_CANDIDATES_PER_CHUNK = 2_000_000  # voxel-position pairs tested at once while punching
_TIE = 1e-9  # relative: voxels at exactly the radius count in despite rounding


def reflections_to_punch(crystal, grid, q_max: float) -> np.ndarray:
    """(n, 3) int: every allowed reflection (space-group absences are not punched: they carry
    diffuse-only information; 000 is not punched) with |Q| <= q_max (1/Angstrom, 2 pi
    convention) whose position lies inside the grid's h, k, l limits."""
    if not (q_max > 0 and math.isfinite(q_max)):
        raise ValueError(f"q_max must be a positive number (1/Angstrom), got {q_max}")
    hkl = crystal.reflections_within(2 * math.pi / q_max)
    q2 = np.einsum("ni,ij,nj->n", hkl, q_metric(crystal.cell), hkl)
    keep = q2 <= q_max * q_max * (1 + _TIE)
    for j, ax in enumerate(grid.axes):
        tol = 1e-6 * ax.step
        keep &= (hkl[:, j] >= ax.start - tol) & (hkl[:, j] <= ax.stop + tol)
    return np.ascontiguousarray(hkl[keep], dtype=np.int64)


@dataclass
class FillResult:
    filled: np.ndarray  # [l, k, h], the input's float dtype: every hole filled (voxels
    #                     unmeasured and not filled stay NaN)
    region: np.ndarray  # sorted flat indices of the voxels filled or left NaN: the holes and
    #                     the unmeasured voxels around them (NaN in the input)
    holes: np.ndarray  # sorted flat indices of the voxels punched (filled or not)
    positions: np.ndarray  # (n, 3) float hkl that were asked for
    outcome: np.ndarray  # (n,) int8, index into OUTCOMES, one per position
    unknowns: int  # voxels solved for
    batches: int  # sparse solves made
    seconds: float
    mirrored: int = 0  # unknowns given the values of their mirror images (even volumes)

    @property
    def punched(self) -> np.ndarray:
        """The input with the holes NaN (a new array): filled with its region NaN."""
        out = self.filled.copy()
        out.reshape(-1)[self.region] = np.nan
        return out

    @property
    def hole(self) -> np.ndarray:
        """bool [l, k, h]: the voxels punched (a new array)."""
        out = np.zeros(self.filled.shape, dtype=bool)
        out.reshape(-1)[self.holes] = True
        return out

    @property
    def counts(self) -> dict[str, int]:
        n = np.bincount(self.outcome.astype(np.int64), minlength=len(OUTCOMES))
        return {name: int(n[i]) for i, name in enumerate(OUTCOMES)}


# --------------------------------------------------------------------------------------
# Voxel neighbourhoods in flat indices of an [l, k, h] array
# --------------------------------------------------------------------------------------
def _unique(keys: np.ndarray) -> np.ndarray:
    """np.unique of 1-D integer keys, by sorting: numpy 2.4's np.unique hashes them, which is
    many times slower for the millions of voxel keys of a fill (bench/pdf.py)."""
    keys = np.sort(keys)
    if keys.size < 2:
        return keys
    first = np.empty(keys.size, dtype=bool)
    first[0] = True
    np.not_equal(keys[1:], keys[:-1], out=first[1:])
    return keys[first]


def _union(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """np.union1d of integer keys (sorted, unique), by sorting (_unique)."""
    return _unique(np.concatenate([a, b]))


def _neighbours(flat: np.ndarray, shape) -> np.ndarray:
    """Flat indices (6, n) of the face neighbours +h, -h, +k, -k, +l, -l; -1 beyond the grid."""
    flat = np.ascontiguousarray(flat, dtype=np.int64).reshape(-1)
    out = np.empty((6, flat.size), dtype=np.int64)
    _neighbours_kernel(flat, *(int(n) for n in shape), out)
    return out


def _find(sorted_keys: np.ndarray, query: np.ndarray) -> np.ndarray:
    """Index of each query in sorted_keys (unique), -1 where absent; negative queries are absent."""
    if sorted_keys.size == 0:
        return np.full(query.shape, -1, dtype=np.int64)
    pos = np.minimum(np.searchsorted(sorted_keys, query), sorted_keys.size - 1)
    return np.where((sorted_keys[pos] == query) & (query >= 0), pos, -1)


def region_bits(region: np.ndarray, size: int) -> np.ndarray:
    """A bit per voxel of a volume of `size` voxels, set for the voxels at the flat indices
    `region` (uint8, bit f % 8 of byte f // 8): the fill's lookup of its regions, an eighth
    of a bool per voxel (at 801^3 64 MB of fresh memory instead of 514)."""
    bits = np.zeros((size + 7) // 8, np.uint8)
    _set_bits(np.ascontiguousarray(region, dtype=np.int64), bits)
    return bits


def _usable(flat: np.ndarray, in_region: np.ndarray, values_flat: np.ndarray) -> np.ndarray:
    """Whether voxels (flat, -1 = beyond the grid) hold data a fill may lean on: inside the
    grid, outside every fill region (holes are in them; in_region: region_bits), finite."""
    flat = np.ascontiguousarray(flat, dtype=np.int64)
    out = np.empty(flat.shape, dtype=bool)
    _usable_kernel(flat.reshape(-1), in_region, values_flat, out.reshape(-1))
    return out


# --------------------------------------------------------------------------------------
# Punch
# --------------------------------------------------------------------------------------
def _punch_geometry(positions, grid, metric, radius, values_flat):
    """The voxels of each position's hole and the unmeasured voxels within twice the radius.

    Returns (pair_position, pair_voxel) of the holes, the flat indices of the unmeasured
    voxels near some position, on_grid (n,) and edge (n,) flags."""
    shape = grid.shape
    n = len(positions)
    steps = np.array([ax.step for ax in grid.axes])
    starts = np.array([ax.start for ax in grid.axes])
    dims = np.array([ax.n for ax in grid.axes])
    centre = grid.index(positions) if n else np.zeros((0, 3), np.int64)
    on_grid = grid.contains(centre) if n else np.zeros(0, bool)
    edge = np.zeros(n, dtype=bool)
    # the ellipsoid d M d <= (2r)^2 reaches 2r sqrt((M^-1)_jj) r.l.u. along axis j
    # (2r |a_j| / 2 pi for 1/Angstrom): the half-widths in voxels of the box to test
    reach = 2 * radius * np.sqrt(np.diag(np.linalg.inv(metric))) / steps
    half = np.ceil(reach).astype(np.int64) + 1
    offsets = np.stack(np.meshgrid(*[np.arange(-w, w + 1) for w in half], indexing="ij"),
                       axis=-1).reshape(-1, 3)
    # |Q|^2 of (centre + o) - p = q(o) + 2 f M o + q(f), f = centre - p (r.l.u.)
    o_rlu = offsets * steps
    q_off = np.einsum("bi,ij,bj->b", o_rlu, metric, o_rlu)
    w_off = o_rlu @ metric
    r2_hole, r2_fill = radius * radius * (1 + _TIE), 4 * radius * radius * (1 + _TIE)
    strides = np.array([1, shape[2], shape[1] * shape[2]], dtype=np.int64)
    hole_pos, hole_vox, extra_vox = [], [], []
    todo = np.flatnonzero(on_grid)
    chunk = max(1, _CANDIDATES_PER_CHUNK // len(offsets))
    for c0 in range(0, len(todo), chunk):
        which = todo[c0:c0 + chunk]
        f = starts + centre[which] * steps - positions[which]
        # d2 = q_off + 2 f M o + f M f of every (position, offset), as numpy evaluates it
        # (the products by BLAS); the kernel adds the terms in that order
        pos, vox, near = _punch_pairs(f @ w_off.T, np.einsum("pi,ij,pj->p", f, metric, f),
                                      q_off, centre[which], offsets, dims, strides, r2_hole,
                                      r2_fill, values_flat, edge, which)
        hole_pos.append(which[pos])
        hole_vox.append(vox)
        extra_vox.append(_unique(near))
    if hole_pos:
        hole_pos, hole_vox = np.concatenate(hole_pos), np.concatenate(hole_vox)
        extra_vox = _unique(np.concatenate(extra_vox))
    else:
        hole_pos = hole_vox = extra_vox = np.zeros(0, np.int64)
    return hole_pos, hole_vox, extra_vox, on_grid, edge


# --------------------------------------------------------------------------------------
# Fill
# --------------------------------------------------------------------------------------
def _components(region: np.ndarray, shape) -> tuple[int, np.ndarray]:
    """Connected components (face neighbours) of the region voxels (sorted unique flat
    indices): (count, label per voxel), components numbered in the order of their first
    voxel, as scipy.sparse.csgraph.connected_components numbers them."""
    nl, nk, nh = shape
    return _label_components(np.ascontiguousarray(region, dtype=np.int64), nk, nh)


def _batch_system(unknown_flat, unknown_comp, in_region, values_flat, shape, order, eps):
    """The system of the unknowns of some components: S u = rhs with S the rows and columns
    of the unknowns in (L + eps^2 I)^m and rhs = -(those rows, known columns) v.

    L is the graph Laplacian, per component, on its domain: its unknowns plus the usable
    voxels within m face steps (through usable voxels) of them, which is all the rows of
    the unknowns in (L + eps^2 I)^m can reach; so the result is that on NXRefine's cube
    (the hole's box grown by the hole radius) whenever that margin is >= m voxels.  A
    voxel near two components is a domain voxel of each, separately."""
    size = math.prod(shape)
    unknown_keys = unknown_comp * size + unknown_flat  # sorted: components then voxels
    known_keys = np.zeros(0, np.int64)
    frontier_flat, frontier_comp = unknown_flat, unknown_comp
    for _ in range(order):
        nb = _neighbours(frontier_flat, shape)
        comp = np.broadcast_to(frontier_comp, nb.shape)
        ok = _usable(nb, in_region, values_flat)
        keys = np.setdiff1d(_unique(comp[ok] * size + nb[ok]), known_keys, assume_unique=True)
        known_keys = _union(known_keys, keys)
        frontier_comp, frontier_flat = np.divmod(keys, size)
    nodes = np.concatenate([unknown_keys, known_keys])
    n_unknown, n_nodes = unknown_keys.size, nodes.size
    by_key = np.argsort(nodes, kind="stable")
    node_comp, node_flat = np.divmod(nodes, size)
    nb = _neighbours(node_flat, shape)
    nb_keys = np.where(nb >= 0, node_comp * size + nb, -1)
    j = _find(nodes[by_key], nb_keys)
    linked = j >= 0
    rows = np.broadcast_to(np.arange(n_nodes), nb.shape)[linked]
    cols = by_key[j[linked]]
    degree = linked.sum(axis=0).astype(np.float64)
    L = sp.csr_matrix((np.full(rows.size, -1.0), (rows, cols)), shape=(n_nodes, n_nodes))
    A = (L + sp.diags(degree + eps * eps)).tocsr()
    power = A[:n_unknown]  # rows of the unknowns in A^m
    for _ in range(order - 1):
        power = power @ A
    power = power.tocsc()
    S = power[:, :n_unknown]
    known_values = values_flat[node_flat[n_unknown:]].astype(np.float64)
    rhs = -(power[:, n_unknown:] @ known_values)
    return S.tocsc(), rhs


def _solve_iteratively(S, rhs, local) -> np.ndarray:
    """Conjugate gradients on each region of a batch alone (local: the region of every
    unknown, each region's unknowns contiguous); NaN in the regions that did not converge."""
    S = S.tocsr()
    change = np.flatnonzero(local[1:] != local[:-1]) + 1
    starts = np.concatenate([[0], change, [local.size]]).astype(np.int64)
    x = np.empty(rhs.size)
    iterations = _conjugate_gradients(S.indptr, S.indices, S.data, rhs, starts, _CG_RTOL,
                                      _CG_MAX_ITERATIONS, x)
    for c in np.flatnonzero(iterations < 0):
        x[starts[c]:starts[c + 1]] = np.nan
    return x


def _check_fill_args(values, grid, positions, radius, units, order, eps, max_batch_unknowns):
    if values.shape != grid.shape:
        raise ValueError(f"the volume has shape {values.shape}, the grid {grid.shape} ([l, k, h])")
    if positions.ndim != 2 or positions.shape[1] != 3 or not np.all(np.isfinite(positions)):
        raise ValueError(f"positions must be finite (n, 3) hkl, got shape {positions.shape}")
    if not (radius > 0 and math.isfinite(radius)):
        raise ValueError(f"the punch radius must be a positive number, got {radius}")
    if units not in UNITS:
        raise ValueError(f"radius units must be one of {UNITS}, got {units!r}")
    if isinstance(order, bool) or order not in ORDERS:
        raise ValueError(f"the fill order m must be one of {ORDERS} (1: Laplace, 2: Matern), got {order!r}")
    if not (eps >= 0 and math.isfinite(eps)):
        raise ValueError(f"the Matern eps must be a finite number >= 0, got {eps}")
    if not max_batch_unknowns >= 1:
        raise ValueError(f"max_batch_unknowns must be >= 1, got {max_batch_unknowns}")


def punch_and_fill(intensity, grid, cell, positions, radius: float = 0.2,
                   units: str = "inverse_angstrom", order: int = 1, eps: float = 0.0,
                   max_batch_unknowns: int = DEFAULT_BATCH_UNKNOWNS, log=None,
                   overwrite_input: bool = False, even: bool = False) -> FillResult:
    """Punch a hole around every position (float hkl) and fill it from the data around it.
    overwrite_input: the holes are punched and filled in `intensity` itself (float32 or
    float64, C order; it becomes the result's `filled`) instead of a copy of it.
    even: the intensity is even along each axis about 0 (to rounding; its NaN voxels
    exactly), as a volume symmetrised with the three axis mirrors is: then only the fill
    regions that reach the octant of h, k, l >= 0 are solved, and every other region takes
    the values of its mirror image (_mirror_plan; all are solved where the regions are not
    mirror images of each other).

    The hole of a position: the voxels whose centres lie within `radius` of it (units
    'inverse_angstrom': |Q| with the cell's metric, 2 pi convention; 'rlu': Euclidean in
    h, k, l), at least the voxel nearest to it along each axis.  Its fill region: the hole
    plus the unmeasured (NaN) voxels within twice the radius; regions that overlap or touch
    are solved together.  The fill is the discrete solution of (L + eps^2 I)^m u = 0 over the
    region in voxel-index space (7-point stencil, unit spacing, as NXRefine's matern_3d_grid),
    with the measured voxels outside every region as known values; links to voxels without
    data (NaN, beyond the grid) are dropped.  m = 1, eps = 0 (the default, NXRefine's) is
    harmonic interpolation.

    Outcome per position (OUTCOMES): off_grid (its nearest voxel is outside the grid:
    nothing punched), edge (its hole crosses the grid boundary: filled from inside),
    no_data (no measured voxel borders its region: left NaN), solver_failed (singular
    system or non-finite solution: left NaN, logged), filled.  A position takes the worst
    outcome of the regions of its hole voxels, so positions of a merged region share it.

    The systems of many regions are assembled as one block-diagonal sparse matrix per batch
    of at most max_batch_unknowns unknowns (a larger region is a batch of its own), and
    solved by conjugate gradients region by region (each to a relative residual of 1e-12 of
    its own, memory linear in the unknowns)."""
    t0 = time.perf_counter()
    log = log or logging.getLogger(__name__)
    values = np.ascontiguousarray(intensity)
    dtype = values.dtype if values.dtype in (np.float32, np.float64) else np.dtype(np.float32)
    positions = np.array(positions, dtype=np.float64).reshape(-1, 3)
    _check_fill_args(values, grid, positions, radius, units, order, eps, max_batch_unknowns)
    shape = grid.shape
    values_flat = values.reshape(-1)
    metric = q_metric(cell, units)

    hole_pos, hole_vox, extra_vox, on_grid, edge = _punch_geometry(
        positions, grid, metric, radius, values_flat)
    holes = _unique(hole_vox)
    region = _union(holes, extra_vox)
    # (the known values of the fill lie outside every region, so the holes may be punched
    # and filled in values itself: it is not read inside the regions)
    own = overwrite_input and values is intensity and values.dtype == dtype
    filled = values if own else values.astype(dtype, copy=True)
    filled_flat = filled.reshape(-1)
    filled_flat[holes] = np.nan

    count, comp = _components(region, shape)
    # a region with no usable neighbour has nothing to fill from
    in_region = region_bits(region, values_flat.size)  # a lookup: 1 bit per voxel
    usable_links = _usable(_neighbours(region, shape), in_region, values_flat).sum(axis=0)
    has_data = np.bincount(comp, weights=usable_links, minlength=count) > 0
    comp_outcome = np.where(has_data, FILLED, NO_DATA).astype(np.int8)

    solve, folded, source = _mirror_plan(grid, region, comp, count, in_region, order) \
        if even else (np.ones(count, bool), None, None)
    by_comp = np.argsort(comp, kind="stable")  # region voxels grouped by component
    sizes = np.bincount(comp, minlength=count)
    comp_start = np.concatenate([[0], np.cumsum(sizes)])
    batches = unknowns = 0
    with_data = np.flatnonzero(has_data & solve)
    for members in _batches(with_data, sizes, max_batch_unknowns):
        rows = np.concatenate([by_comp[comp_start[c]:comp_start[c + 1]] for c in members])
        solved = _fill_batch(region[rows], comp[rows], in_region, values_flat, shape, order, eps, dtype)
        batches += 1
        unknowns += rows.size
        comp_outcome[members[solved.failed]] = SOLVER_FAILED
        ok = ~np.isin(comp[rows], members[solved.failed])
        filled_flat[region[rows][ok]] = solved.values[ok]
        if solved.failed.size:
            log.warning("%d fill region(s) of up to %d voxels not solved: conjugate gradients did "
                        "not converge (a smaller radius keeps holes from merging into large regions)",
                        solved.failed.size, sizes[members[solved.failed]].max())

    mirrored = 0
    if folded is not None:  # the regions not solved: their mirror images' values, outcomes
        rows = np.flatnonzero(~solve[comp])
        filled_flat[region[rows]] = filled_flat[folded[rows]]
        lost = np.flatnonzero(~solve)
        comp_outcome[lost] = np.maximum(comp_outcome[lost], comp_outcome[source[lost]])
        mirrored = int(np.count_nonzero(has_data[comp[rows]]))
    # outcomes: edge marks the whole region of an edge position; worst outcome per position
    pair_comp = comp[_find(region, hole_vox)]
    np.maximum.at(comp_outcome, pair_comp[edge[hole_pos]], EDGE)
    outcome = np.full(len(positions), FILLED, dtype=np.int8)
    np.maximum.at(outcome, hole_pos, comp_outcome[pair_comp])
    outcome[~on_grid] = OFF_GRID
    result = FillResult(filled, region, holes, positions, outcome, int(unknowns), int(batches),
                        time.perf_counter() - t0, mirrored)
    failed = np.flatnonzero(outcome == SOLVER_FAILED)
    if failed.size:
        log.warning("punch and fill: the fill failed (singular system or non-finite solution) "
                    "for %d position(s), left NaN: %s", failed.size,
                    ", ".join(str(tuple(np.round(positions[i], 4))) for i in failed[:10]))
    log.info("punch and fill: %d positions, %d hole voxels, %d unknowns in %d solve(s)%s, "
             "%.1f s: %s", len(positions), holes.size, unknowns, batches,
             f", {mirrored} from their mirror images" if even else "", result.seconds,
             ", ".join(f"{k} {v}" for k, v in result.counts.items()))
    return result


def _mirror_plan(grid, region, comp, count, in_region, order):
    """Which fill regions to solve when the volume is even along each axis about 0, and
    where the others take their values: (solve: bool per component; folded: per region
    voxel, the flat index of its mirror image in the octant h, k, l >= 0; source: per
    component not solved, the component of its image), or (all True, None, None) when the
    regions are not mirror images of each other.

    A region that lies below 0 along some axes and reaches 0 or above along the others
    is, reflected in the first, a region that reaches the octant; along each of the others
    it reaches the plane at 0 (its voxels are face-connected), so it is its own mirror
    image there.  Its solution at a voxel is then that of the reflected region at the
    voxel's image in the octant.  That holds where the set of region voxels is mirrored
    onto itself by each axis mirror, and a region and its image have the same data around
    them: where the grid is not symmetric about 0, only regions `order` voxels (the reach
    of the fill's stencil) inside the part of the grid that the mirrors map onto itself
    are mirrored; the others are solved."""
    everything = np.ones(count, bool), None, None
    centre = np.zeros(3, np.int64)
    box, inner = np.zeros((3, 2), np.int64), np.zeros((3, 2), np.int64)
    for j, (ax, n) in enumerate(zip(grid.axes[::-1], grid.shape)):  # [l, k, h]
        c = int(round(-ax.start / ax.step))
        if not (0 <= c < n and abs(ax.start + c * ax.step) <= 1e-6 * ax.step):
            return everything  # no voxel at 0: no mirror
        lo, hi = max(0, 2 * c - (n - 1)), min(n - 1, 2 * c)  # i and 2c - i on the grid
        centre[j], box[j] = c, (lo, hi)
        # where the box ends inside the grid on one side, its mirror side (a grid edge
        # or not) sees other data around it: the regions within `order` of it are solved
        margin = 0 if (lo, hi) == (0, n - 1) else order
        inner[j] = (lo + margin, hi - margin)
    folded = np.empty(region.size, np.int64)
    must = np.empty(region.size, bool)
    if not _fold_onto_octant(region, in_region, np.array(grid.shape, np.int64), centre, box,
                             inner, folded, must):
        return everything
    solve = np.zeros(count, bool)
    solve[comp[must]] = True
    rows = np.flatnonzero(~solve[comp])
    # one voxel per region not solved: the regions map onto regions whole
    lost, first = np.unique(comp[rows], return_index=True)
    image = _find(region, folded[rows[first]])
    if (image < 0).any() or not solve[comp[image]].all():  # (not for mirrored regions)
        return everything
    source = np.full(count, -1, np.int64)
    source[lost] = comp[image]
    return solve, folded, source


def _batches(components, sizes, max_batch_unknowns):
    """Component ids per solve: the regions greedily grouped into batches of at most
    max_batch_unknowns unknowns (a larger region alone); a loop per batch, not per voxel."""
    b0 = 0
    while b0 < len(components):
        total, b1 = 0, b0
        while b1 < len(components) and (b1 == b0 or total + sizes[components[b1]]
                                        <= max_batch_unknowns):
            total += sizes[components[b1]]
            b1 += 1
        yield components[b0:b1]
        b0 = b1


@dataclass
class _BatchFill:
    values: np.ndarray  # solution per unknown (NaN where failed), in the volume's dtype
    failed: np.ndarray  # indices (into the batch's components) whose solve failed


def _fill_batch(unknown_flat, unknown_comp, in_region, values_flat, shape, order, eps, dtype):
    """Solve the components of a batch, by conjugate gradients each alone, so that one bad
    component does not spoil the others."""
    members = _unique(unknown_comp)
    local = np.searchsorted(members, unknown_comp)  # np.unique's return_inverse
    S, rhs = _batch_system(unknown_flat, unknown_comp, in_region, values_flat, shape, order, eps)
    u = _solve_iteratively(S, rhs, local)
    with np.errstate(over="ignore", invalid="ignore"):
        out = u.astype(dtype)
    bad = np.bincount(local, weights=~np.isfinite(out), minlength=members.size) > 0
    return _BatchFill(out, np.flatnonzero(bad))
