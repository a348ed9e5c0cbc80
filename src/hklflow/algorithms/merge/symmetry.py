"""Symmetrisation of reciprocal-space volumes by the Laue group, in integer voxel indices.

The symmetrised volume at h is the sum over the Laue operators R of the volume at h R
(operators act on Miller indices as row vectors, h' = h R, docs/conventions.md), for signal
and weight alike, so the intensity signal/weight is the weighted mean over the equivalent
positions that were measured, and gaps are filled from their equivalents.  Positions whose
equivalent lies outside the grid get nothing from it.

Voxel centres are hkl_j = start_j + i_j step_j (i = (ih, ik, il)), so with R an integer
matrix the equivalent of voxel i is the voxel

    i'_j = sum_m i_m R_mj (step_m / step_j) + (sum_m start_m R_mj - start_j) / step_j,

an exact voxel centre for every voxel when step_m = step_j wherever R_mj != 0 (m != j) and
the offset is an integer: checked for every operator (grid.check_grid_symmetry, which the
config's validation asks too), with an error naming the grid axes (config keys
reduction.transform.grid.h/k/l) to change.  The operators are used as they are (hexagonal
and trigonal groups with their 3- and 6-fold operators mixing h and k, cubic ones mixing all
three axes), never replaced by an orthogonal subgroup.

When every operator is a signed permutation of the axes that maps the grid onto itself (a
grid symmetric about 0, equal where the group swaps axes: all but the trigonal, hexagonal
and cubic groups, FlipPlan), the sum is taken by adding flipped and transposed copies of
each L plane along a chain of subgroups (transversal_chain: 2+2+2 reads for the 8
operators of 4mm instead of 8) plus the mirror plane's sum: memory-bound, several times
faster than the gather kernel below, which does everything else (bench/full_rotation.py
measures the symmetrize step).

The gather kernel (numba, on the job's cores) loops over output tiles of 16^3 voxels and, per tile,
over the operators, so that the source voxels an operator reads stay in cache; sums are
float64 per voxel and stored float32.  When every operator maps L planes onto L planes
(l' = +-l: every Laue group but the cubic and rhombohedral ones, l_separable) a volume is
symmetrised slab by slab along L, each output slab from the input planes it reaches (itself
and its mirror image), so memory stays at a few slabs whatever the grid; otherwise the
input is held whole (float32 signal and weight: 8 bytes per voxel, 4.1 GB for 801^3).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from ...model.grid import (AXES, Grid, GridSymmetryError, check_grid_symmetry,  # noqa: F401
                           operator_hkl)
from .kernels import _stabilizer_counts, _support_of_bits, _symmetrize_kernel

TILE = 16


def operator_of_hkl(text: str) -> np.ndarray:
    """operator_hkl's inverse: the integer R (h' = h R) of e.g. 'k,-h-k,l'."""
    parts = text.replace(" ", "").split(",")
    R = np.zeros((3, 3), np.int64)
    if len(parts) != 3:
        raise ValueError(f"an operator needs three components, got {text!r}")
    for j, part in enumerate(parts):
        terms = re.findall(r"([+-]?)(\d*)([hkl])", part)
        if part != "0" and "".join("".join(t) for t in terms) != part:
            raise ValueError(f"cannot read the operator {text!r} (component {part!r})")
        for sign, count, name in terms:
            R[AXES.index(name), j] += (-1 if sign == "-" else 1) * int(count or 1)
    return R


def index_maps(grid: Grid, operators, group: str = "") -> tuple[np.ndarray, np.ndarray]:
    """Integer index maps of the operators on the grid: A (n, 3, 3) and c (n, 3), int64,
    such that voxel i = (ih, ik, il) takes its equivalent from voxel i A + c.

    Raises GridSymmetryError, listing every axis to change, when some operator does not
    map voxel centres onto voxel centres."""
    ops = np.asarray(operators)
    if ops.ndim != 3 or ops.shape[1:] != (3, 3) or not np.array_equal(ops, np.round(ops)):
        raise ValueError(f"operators must be integer 3x3 matrices, got shape {ops.shape}")
    ops = np.round(ops).astype(np.int64)
    check_grid_symmetry(grid, ops, group)
    start = np.array([ax.start for ax in grid.axes])
    step = np.array([ax.step for ax in grid.axes])
    A = ops.copy()
    c = np.rint((start @ ops - start) / step).astype(np.int64)  # (integers: checked)
    return A, c


def symmetrize_slab(signal: np.ndarray, weight: np.ndarray, maps, l0: int, l1: int,
                    nl: int | None = None, src_row=None) -> tuple[np.ndarray, np.ndarray, int]:
    """Planes [l0, l1) of the symmetrised signal and weight (float32 [l1-l0, k, h]) from
    input arrays [l, k, h]: the whole volume, or (nl: the grid's L planes; src_row: per
    operator, the grid plane of the arrays' row 0) the source planes the operators reach
    (source_planes).  maps = index_maps(...).  Also returns how many (voxel, operator)
    pairs of the slab found their equivalent inside the grid."""
    A, c = maps
    signal = np.ascontiguousarray(signal, dtype=np.float32)
    weight = np.ascontiguousarray(weight, dtype=np.float32)
    if signal.shape != weight.shape or signal.ndim != 3:
        raise ValueError(f"signal {signal.shape} and weight {weight.shape} must be equal 3-D arrays")
    nl = signal.shape[0] if nl is None else int(nl)
    if not 0 <= l0 < l1 <= nl:
        raise ValueError(f"L planes [{l0}, {l1}) outside the volume's {nl} planes")
    src_row = np.zeros(len(A), np.int64) if src_row is None else np.asarray(src_row, np.int64)
    shape = (l1 - l0,) + signal.shape[1:]
    out_s = np.empty(shape, dtype=np.float32)
    out_w = np.empty(shape, dtype=np.float32)
    inside = _symmetrize_kernel(signal, weight, np.ascontiguousarray(A, dtype=np.int64),
                                np.ascontiguousarray(c, dtype=np.int64), int(l0), int(l1),
                                out_s, out_w, TILE, nl, src_row)
    return out_s, out_w, int(inside)


def l_separable(maps) -> bool:
    """True when every operator maps L planes onto L planes (l' = +-l + const, h' and k'
    free of l; Crystal.laue_keeps_l_planes): then a slab of L planes needs only itself and
    its mirror image, and a volume is symmetrised slab by slab."""
    A = np.asarray(maps[0])
    return bool(np.all(A[:, 0, 2] == 0) and np.all(A[:, 1, 2] == 0)
                and np.all(A[:, 2, 0] == 0) and np.all(A[:, 2, 1] == 0)
                and np.all(np.abs(A[:, 2, 2]) == 1))


def source_planes(maps, l0: int, l1: int, nl: int) -> list[tuple[int, int]]:
    """The grid's L-plane intervals [a, b) the operators read for output planes [l0, l1)
    (l_separable maps: [l0, l1) itself and its mirror), clipped to the grid, merged."""
    A, c = maps
    spans = set()
    for o in range(len(A)):
        ends = (A[o, 2, 2] * l0 + c[o, 2], A[o, 2, 2] * (l1 - 1) + c[o, 2])
        a, b = max(0, int(min(ends))), min(nl, int(max(ends)) + 1)
        if a < b:
            spans.add((a, b))
    merged = []
    for a, b in sorted(spans):
        if merged and a <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], b))
        else:
            merged.append((a, b))
    return merged


def source_rows(maps, spans, l0: int, l1: int) -> np.ndarray:
    """Per operator, the grid plane that row 0 of the stacked spans stands for (so that
    grid plane L is row L - src_row): the span holding that operator's images."""
    A, c = maps
    starts, row = [], 0
    for a, b in spans:
        starts.append((a, b, row))
        row += b - a
    out = np.zeros(len(A), np.int64)
    for o in range(len(A)):
        first = A[o, 2, 2] * l0 + c[o, 2]
        last = A[o, 2, 2] * (l1 - 1) + c[o, 2]
        lo = max(min(first, last), 0)
        for a, b, r in starts:
            if a <= lo < b:
                out[o] = a - r
                break
    return out


# --------------------------------------------------------------------------------------
# Groups of signed axis permutations on a grid they map onto itself: flips and transposes
# --------------------------------------------------------------------------------------
def _key(R) -> tuple:
    return tuple(int(v) for v in np.asarray(R).ravel())


def _closure(mats: list) -> dict:
    """The group generated by integer matrices (key -> matrix)."""
    group = {_key(np.eye(3, dtype=np.int64)): np.eye(3, dtype=np.int64)}
    frontier = list(group.values())
    while frontier:
        new = []
        for a in frontier:
            for g in mats:
                p = a @ g
                if _key(p) not in group:
                    group[_key(p)] = p
                    new.append(p)
        frontier = new
    return group


def transversal_chain(operators) -> list[list[np.ndarray]]:
    """Left transversals T_1 ... T_n of a chain of subgroups 1 < H_1 < ... < H_n = G (each
    H_i the group H_(i-1) and one more element generate, the smallest step first), so that
    every g of G is t_n ... t_1 with t_i in T_i exactly once, and for any f

        sum over G of f(x g) = F_n(x),  F_i(x) = sum over t in T_i of F_(i-1)(x t),  F_0 = f.

    Each pass costs |T_i| reads where the direct sum costs |G|: 2+2+2 for the 8 operators
    of 4mm, 2+2+2+2+3 for the 48 of m-3m."""
    ops = [np.asarray(R, dtype=np.int64) for R in operators]
    group = _closure(ops)
    if len(group) != len(ops):
        raise ValueError(f"the {len(ops)} operators are not a group (they generate {len(group)})")
    H = {_key(np.eye(3, dtype=np.int64)): np.eye(3, dtype=np.int64)}
    chain = []
    while len(H) < len(group):
        best = None
        for k, g in group.items():
            if k in H:
                continue
            K = _closure(list(H.values()) + [g])
            if best is None or len(K) < len(best):
                best = K
        reps, covered = [], set()
        for k, t in sorted(best.items(), key=lambda kv: kv[0] != _key(np.eye(3, dtype=int))):
            if k in covered:
                continue
            reps.append(t)
            covered |= {_key(t @ h) for h in H.values()}
        chain.append(reps)
        H = best
    return chain


def _array_view(A, c, shape):
    """Axis permutation and flips (perm, flips) of an array [l, k, h] such that
    view[i] = x[i A + c] for voxel indices i = (ih, ik, il), or None when the index map
    (A, c) is not a signed permutation mapping the grid onto itself."""
    perm, flips = [0, 0, 0], []
    n = shape[::-1]  # voxels along h, k, l
    for m in range(3):  # output index axis
        js = [j for j in range(3) if A[m, j] != 0]
        if len(js) != 1 or abs(A[m, js[0]]) != 1 or np.count_nonzero(A[:, js[0]]) != 1:
            return None
        j = js[0]
        if n[m] != n[j]:
            return None
        if A[m, j] == 1 and c[j] != 0 or A[m, j] == -1 and c[j] != n[j] - 1:
            return None
        perm[2 - m] = 2 - j
        if A[m, j] == -1:
            flips.append(2 - m)
    return tuple(perm), tuple(flips)


def _view(x, how):
    perm, flips = how
    v = x.transpose(perm) if perm != (0, 1, 2) else x
    if flips:
        v = v[tuple(slice(None, None, -1) if a in flips else slice(None) for a in range(3))]
    return v


@dataclass(frozen=True)
class FlipPlan:
    """Symmetrisation by array views when every Laue operator is a signed permutation of
    the axes that maps the grid onto itself (a grid symmetric about 0 with equal axes where
    the group swaps them; every group but the trigonal and hexagonal ones): then
    symmetrising is adding flipped and transposed copies of an L slab, pass by pass along a
    transversal_chain of the operators that keep L (in_plane), and, when some operator
    reverses L (mirror: its flips and transposes of H and K), adding the mirror slab's
    in-plane sum seen through that operator.  Memory-bound, and several times faster per
    voxel than the gather kernel (bench/full_rotation.py)."""
    in_plane: tuple  # passes: each a tuple of (perm, flips) of axes [l, k, h]
    mirror: tuple | None  # (perm, flips) of an operator reversing L (without its L flip)
    operators: int


def flip_plan(grid: Grid, operators) -> FlipPlan | None:
    """The FlipPlan of the operators on grid, or None when some operator is not a signed
    permutation mapping the grid onto itself, or mixes L with H or K."""
    ops = np.round(np.asarray(operators)).astype(np.int64)
    A, c = index_maps(grid, ops)
    if not l_separable((A, c)):
        return None
    views = [_array_view(A[o], c[o], grid.shape) for o in range(len(ops))]
    if any(v is None for v in views):
        return None
    keep = [o for o in range(len(ops)) if A[o, 2, 2] == 1]
    passes = []
    for reps in transversal_chain(ops[keep]):
        ra, rc = index_maps(grid, np.array(reps))
        passes.append(tuple(_array_view(ra[i], rc[i], grid.shape) for i in range(len(reps))))
    mirror = None
    flip = [o for o in range(len(ops)) if A[o, 2, 2] == -1]
    if flip:
        perm, flips = views[flip[0]]
        mirror = (perm, tuple(a for a in flips if a != 0))
    return FlipPlan(tuple(passes), mirror, len(ops))


def _in_plane_sum(plan: FlipPlan, x: np.ndarray) -> np.ndarray:
    """Sum over the L-keeping operators of slab x (float64 [planes, k, h])."""
    for reps in plan.in_plane:
        y = _view(x, reps[0]).copy() if reps[0] != ((0, 1, 2), ()) else x.copy()
        for how in reps[1:]:
            y += _view(x, how)
        x = y
    return x


def _support(x: np.ndarray) -> tuple[int, int, int, int]:
    """(r0, r1, c0, c1): rows [r0, r1) and columns [c0, c1) of the 2-d float array x that
    hold every value other than +0.0 (NaN and -0.0 included: they change a sum); r1 = 0
    when there is none."""
    x = np.ascontiguousarray(x)
    return _support_of_bits(x.view({2: np.uint16, 4: np.uint32, 8: np.uint64}[x.itemsize]))


def _swaps_k_and_h(plan: FlipPlan) -> bool:
    views = [how for reps in plan.in_plane for how in reps]
    return any(perm[1] != 1 for perm, _ in views + ([plan.mirror] if plan.mirror else []))


def _centred_box(plan: FlipPlan, *planes):
    """(k slice, h slice) of the smallest box centred on the planes (float [k, h], one
    shape) that holds every value other than +0.0 of each, and so is mapped onto itself by
    the plan's flips (about the centre) and, where K and H are swapped, square; None when
    every value is +0.0.  Outside it every sum over the operators is +0.0 (measured regions
    are a third of a full rotation's planes or less)."""
    nk, nh = planes[0].shape
    k0, h0 = nk, nh
    for x in planes:
        r0, r1, c0, c1 = _support(x)
        if r1:
            k0, h0 = min(k0, r0, nk - r1), min(h0, c0, nh - c1)
    if k0 == nk:
        return None
    if _swaps_k_and_h(plan):  # (then nk == nh: flip_plan)
        k0 = h0 = min(k0, h0)
    return slice(k0, nk - k0), slice(h0, nh - h0)


def _boxed(plane, box):
    """The float64 copy [1, k, h] of the box of a plane, for _in_plane_sum."""
    return np.array(plane[box][None], dtype=np.float64)


def _zero_outside(out, box) -> np.ndarray:
    """out (a plane), +0.0 where the box does not reach; its box, to be written."""
    if (box[0].stop - box[0].start, box[1].stop - box[1].start) != out.shape:
        out.fill(0)
    return out[box]


def symmetrize_flips(plan: FlipPlan, signal, weight, mirror_signal=None, mirror_weight=None,
                     variance=None, mirror_variance=None):
    """Planes [l0, l1) of the symmetrised signal and weight (float32) from those planes of
    the input and (plan.mirror) the planes nl-1-l of each, in the same order (i.e. input
    planes [nl-l1, nl-l0) reversed).  Plane by plane, so that the passes stay in cache
    (half the time of whole slabs), and within each plane on the centred box of its values
    (_centred_box; +0.0 outside it, as the sums there are); sums in float64.  With
    variance: its sum over the equivalents too, returned third (not yet multiplied by the
    stabiliser counts: stabilizer_counts)."""
    out_s = np.empty(np.shape(signal), np.float32)
    out_w = np.empty(np.shape(weight), np.float32)
    work = [(signal, mirror_signal, out_s), (weight, mirror_weight, out_w)]
    if variance is not None:
        out_v = np.empty(np.shape(variance), np.float32)
        work.append((variance, mirror_variance, out_v))
    for x, m, out in work:
        for p in range(out.shape[0]):
            planes = (x[p],) if plan.mirror is None else (x[p], m[p])
            box = _centred_box(plan, *planes)
            if box is None:
                out[p] = 0
                continue
            # a copy (float64 input too): with no operator keeping L but the identity (-1),
            # the in-plane sum is the plane itself, and the mirror is added into it
            s = _in_plane_sum(plan, _boxed(x[p], box))
            if plan.mirror is not None:
                s += _view(_in_plane_sum(plan, _boxed(m[p], box)), plan.mirror)
            _zero_outside(out[p], box)[...] = s[0]
    return (out_s, out_w) if variance is None else (out_s, out_w, out_v)


def symmetrize_flip_pair(plan: FlipPlan, a_signal, a_weight, b_signal, b_weight,
                         a_variance=None, b_variance=None):
    """symmetrize_flips of a slab and of its mirror slab at once (plan.mirror set): planes
    [l0, l1) (a_...) and [nl - l1, nl - l0) (b_..., in their own order, so plane p of a and
    plane n-1-p of b are mirror images).  Each plane's in-plane sum is made once and serves
    both outputs, and each input plane is read once.  Returns ((signal, weight) of a,
    (signal, weight) of b), float32, equal to symmetrize_flips of each bit for bit (with
    the variances: (signal, weight, variance) each)."""
    n = np.shape(a_signal)[0]
    inputs = [(a_signal, b_signal), (a_weight, b_weight)]
    if a_variance is not None:
        inputs.append((a_variance, b_variance))
    out_a = tuple(np.empty(np.shape(xa), np.float32) for xa, _ in inputs)
    out_b = tuple(np.empty(np.shape(xb), np.float32) for _, xb in inputs)
    for k, (xa, xb) in enumerate(inputs):
        for p in range(n):
            q = n - 1 - p
            box = _centred_box(plan, xa[p], xb[q])
            if box is None:
                out_a[k][p] = 0
                out_b[k][q] = 0
                continue
            pa = _in_plane_sum(plan, _boxed(xa[p], box))
            pb = _in_plane_sum(plan, _boxed(xb[q], box))
            _zero_outside(out_a[k][p], box)[...] = (pa + _view(pb, plan.mirror))[0]
            _zero_outside(out_b[k][q], box)[...] = (pb + _view(pa, plan.mirror))[0]
    return out_a, out_b


def stabilizer_counts(maps, l0: int, l1: int, shape) -> np.ndarray:
    """uint8 [l1 - l0, k, h]: per voxel, how many operators map it onto itself (1 for most
    voxels; more on mirror planes and rotation axes).  The sum over the operators of a
    voxel's equivalents counts each distinct one that many times, so its variance is
    that many times the sum of theirs: var(sum_o x(i A_o + c_o)) = s(i) sum_o var(...),
    for s(i) equal images per distinct equivalent (orbit-stabiliser)."""
    A, c = maps
    out = np.empty((l1 - l0, shape[1], shape[2]), np.uint8)
    _stabilizer_counts(np.ascontiguousarray(A, np.int64), np.ascontiguousarray(c, np.int64),
                       int(l0), int(l1), int(shape[1]), int(shape[2]), out)
    return out


def symmetrize_arrays(signal: np.ndarray, weight: np.ndarray, grid: Grid, operators,
                      group: str = "") -> tuple[np.ndarray, np.ndarray]:
    """The whole symmetrised signal and weight (float32) of arrays [l, k, h] on grid."""
    maps = index_maps(grid, operators, group)
    plan = flip_plan(grid, operators)
    if plan is not None:
        return symmetrize_flips(plan, signal, weight, signal[::-1], weight[::-1])
    s, w, _ = symmetrize_slab(signal, weight, maps, 0, grid.l.n)
    return s, w


def symmetry_notes(crystal) -> dict:
    ops = crystal.laue_operators
    return {"space_group": crystal.hm, "laue_group": crystal.laue_group,
            "operators": len(ops), "operators_hkl": [operator_hkl(R) for R in ops],
            "how": "signal and weight summed over the equivalent voxels h R of every voxel h "
                   "(equivalents outside the grid contribute nothing); intensity = sum signal "
                   "/ sum weight"}
