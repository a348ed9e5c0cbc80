"""The compiled loops of the punch and fill (fill.punch_and_fill): the neighbours of a
voxel, the holes punched in pairs of Friedel mates, the connected components of the holes,
the conjugate gradients of the fill, and the fold onto an octant."""
from __future__ import annotations

import math

import numba
import numpy as np


@numba.njit(cache=True, nogil=True)
def _neighbours_kernel(flat, nl, nk, nh, out):
    plane = nk * nh
    for i in range(flat.size):
        f = flat[i]
        il = f // plane
        ik = (f - il * plane) // nh
        ih = f - il * plane - ik * nh
        out[0, i] = f + 1 if ih < nh - 1 else -1
        out[1, i] = f - 1 if ih > 0 else -1
        out[2, i] = f + nh if ik < nk - 1 else -1
        out[3, i] = f - nh if ik > 0 else -1
        out[4, i] = f + plane if il < nl - 1 else -1
        out[5, i] = f - plane if il > 0 else -1


@numba.njit(cache=True, nogil=True)
def _set_bits(flat, bits):
    for i in range(flat.size):
        f = flat[i]
        bits[f >> 3] |= np.uint8(1 << (f & 7))


@numba.njit(inline="always")
def _bit(bits, f):
    """region_bits' bit of voxel f."""
    return ((bits[f >> 3] >> (f & 7)) & 1) != 0


@numba.njit(cache=True, nogil=True)
def _usable_kernel(flat, in_region, values, out):
    for i in range(flat.size):
        f = flat[i]
        out[i] = f >= 0 and not _bit(in_region, f) and np.isfinite(values[f])


@numba.njit(cache=True, nogil=True)
def _grown(a, n):
    b = np.empty(2 * a.size, a.dtype)
    for i in range(n):  # a loop, not b[:n] = a[:n]: see codec.compiled._copy_bytes
        b[i] = a[i]
    return b


@numba.njit(inline="always")
def _add_hole_pair(hole_p, hole_v, n, p, flat):
    """(position p, voxel flat) appended as pair n, the arrays grown when full."""
    if n == hole_p.size:
        hole_p = _grown(hole_p, n)
        hole_v = _grown(hole_v, n)
    hole_p[n] = p
    hole_v[n] = flat
    return hole_p, hole_v


@numba.njit(cache=True, nogil=True)
def _punch_pairs(fw, fmf, q_off, centre, offsets, dims, strides, r2_hole, r2_fill, values,
                 edge, which):
    """The (position, offset) pairs of a chunk of positions, with d2 = (q_off[b] + 2 fw[p, b])
    + fmf[p] (|Q|^2 from voxel centre + offset b to position p): the hole voxels (d2 <=
    r2_hole, on the grid; the nearest voxel, the centre, when none is) as row p and
    flat index, in order of p then b; the unmeasured (NaN) voxels of the fill ring (r2_hole <
    d2 <= r2_fill, duplicates kept); edge[which[p]] set where a hole voxel is off the grid."""
    npos, nb = fw.shape
    hole_p = np.empty(4096, np.int64)
    hole_v = np.empty(4096, np.int64)
    near = np.empty(4096, np.int64)
    n_hole = n_near = 0
    for p in range(npos):
        first = n_hole
        for b in range(nb):
            d2 = q_off[b] + 2.0 * fw[p, b] + fmf[p]
            if d2 > r2_fill:
                continue
            i0 = centre[p, 0] + offsets[b, 0]
            i1 = centre[p, 1] + offsets[b, 1]
            i2 = centre[p, 2] + offsets[b, 2]
            inside = 0 <= i0 < dims[0] and 0 <= i1 < dims[1] and 0 <= i2 < dims[2]
            if d2 <= r2_hole and not inside:
                edge[which[p]] = True
            if not inside:
                continue
            flat = i0 * strides[0] + i1 * strides[1] + i2 * strides[2]
            if d2 <= r2_hole:
                hole_p, hole_v = _add_hole_pair(hole_p, hole_v, n_hole, p, flat)
                n_hole += 1
            elif np.isnan(values[flat]):
                if n_near == near.size:
                    near = _grown(near, n_near)
                near[n_near] = flat
                n_near += 1
        if n_hole == first:  # a radius below half a step: the nearest voxel
            nearest = (centre[p, 0] * strides[0] + centre[p, 1] * strides[1]
                       + centre[p, 2] * strides[2])
            hole_p, hole_v = _add_hole_pair(hole_p, hole_v, n_hole, p, nearest)
            n_hole += 1
    return hole_p[:n_hole].copy(), hole_v[:n_hole].copy(), near[:n_near].copy()


@numba.njit(cache=True, nogil=True)
def _root(parent, a):
    while parent[a] != a:
        parent[a] = parent[parent[a]]  # path halving
        a = parent[a]
    return a


@numba.njit(cache=True, nogil=True)
def _join(parent, a, b):
    """Join the sets of a and b under the smaller of their roots."""
    a, b = _root(parent, a), _root(parent, b)
    if a != b:
        parent[max(a, b)] = min(a, b)


@numba.njit(cache=True, nogil=True)
def _label_components(region, nk, nh):
    """Union-find over the +h, +k, +l links of sorted flat indices: the +h neighbour is the
    next voxel or none; the +k and +l ones are found by pointers that only move forward
    (the region is sorted), so the pass is linear.  A root is the smallest index of its
    set, hence labels in order of first voxel.  (scipy's connected_components of the
    adjacency was the slower, most of its time spent building the matrix: bench/pdf.py.)"""
    n = region.size
    parent = np.arange(n)
    jk = 0
    jl = 0
    for i in range(n):
        f = region[i]
        if f % nh != nh - 1 and i + 1 < n and region[i + 1] == f + 1:
            _join(parent, i, i + 1)
        if (f // nh) % nk != nk - 1:
            while jk < n and region[jk] < f + nh:
                jk += 1
            if jk < n and region[jk] == f + nh:
                _join(parent, i, jk)
        while jl < n and region[jl] < f + nk * nh:  # beyond the last plane: no region voxel
            jl += 1
        if jl < n and region[jl] == f + nk * nh:
            _join(parent, i, jl)
    labels = np.empty(n, np.int64)
    count = 0
    for i in range(n):
        r = _root(parent, i)
        if r == i:
            labels[i] = count
            count += 1
        else:
            labels[i] = labels[r]  # r < i: labelled already
    return count, labels


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _conjugate_gradients(indptr, indices, data, rhs, starts, rtol, max_iterations, x):
    """x: the solution of S x = rhs by conjugate gradients with a Jacobi preconditioner, block
    by block: S (CSR, symmetric positive definite) holds the regions of a batch, which share
    no links, in the diagonal blocks [starts[c], starts[c + 1]).  Each block iterates until
    its own residual is below rtol times the norm of its own right-hand side: a small region
    stops early, and a region of weak intensity is solved as accurately as a strong one
    (scipy's cg on the whole batch iterated every region as long as the slowest, and to a
    residual relative to the batch's).  Returns the iterations per block, -1 where it did not
    converge (limit reached, breakdown, non-finite numbers)."""
    n = rhs.size
    dinv = np.zeros(n)
    for i in range(n):
        for k in range(indptr[i], indptr[i + 1]):
            if indices[k] == i and data[k] > 0.0:
                dinv[i] = 1.0 / data[k]
    r = np.empty(n)
    z = np.empty(n)
    p = np.empty(n)
    q = np.empty(n)
    iterations = np.zeros(starts.size - 1, np.int64)
    for c in range(starts.size - 1):
        a0 = starts[c]
        a1 = starts[c + 1]
        rr = 0.0
        rz = 0.0
        for i in range(a0, a1):
            x[i] = 0.0
            r[i] = rhs[i]
            z[i] = r[i] * dinv[i]
            p[i] = z[i]
            rr += r[i] * r[i]
            rz += r[i] * z[i]
        limit = rtol * rtol * rr
        it = 0
        while not rr <= limit:  # (NaN goes in, and fails)
            pq = 0.0
            k0 = np.int64(indptr[a0])
            for i in range(a0, a1):
                k1 = np.int64(indptr[i + 1])
                s = 0.0
                for k in range(k0, k1):  # (unsigned: no test for negative indices; bench/pdf.py)
                    s += data[k] * p[np.uint64(indices[k])]
                k0 = k1
                q[i] = s
                pq += p[i] * s
            if it == max_iterations or not (pq > 0.0 and rz > 0.0) or not math.isfinite(rr):
                it = -1
                break
            alpha = rz / pq
            rr = 0.0
            rz_next = 0.0
            for i in range(a0, a1):
                x[i] += alpha * p[i]
                r[i] -= alpha * q[i]
                z[i] = r[i] * dinv[i]
                rr += r[i] * r[i]
                rz_next += r[i] * z[i]
            beta = rz_next / rz
            rz = rz_next
            for i in range(a0, a1):
                p[i] = z[i] + beta * p[i]
            it += 1
        iterations[c] = it
    return iterations


@numba.njit(cache=True, nogil=True)
def _fold_onto_octant(region, in_region, shape, centre, box, inner, folded, must):
    """_mirror_plan's pass over the region voxels: folded (each voxel reflected, along each
    axis where it lies below the centre, onto the octant), must (in the octant, or not
    `inner`: its region is solved); False where a voxel inside `box` along every axis is not
    mirrored onto a region voxel by each axis mirror."""
    nk, nh = shape[1], shape[2]
    for r in range(region.size):
        f = region[r]
        i0, i1, i2 = f // (nk * nh), (f // nh) % nk, f % nh
        m0, m1, m2 = 2 * centre[0] - i0, 2 * centre[1] - i1, 2 * centre[2] - i2  # mirrors
        if (box[0, 0] <= i0 <= box[0, 1] and box[1, 0] <= i1 <= box[1, 1]
                and box[2, 0] <= i2 <= box[2, 1]):
            if not (_bit(in_region, (m0 * nk + i1) * nh + i2)
                    and _bit(in_region, (i0 * nk + m1) * nh + i2)
                    and _bit(in_region, (i0 * nk + i1) * nh + m2)):
                return False
        in_inner = (inner[0, 0] <= i0 <= inner[0, 1] and inner[1, 0] <= i1 <= inner[1, 1]
                    and inner[2, 0] <= i2 <= inner[2, 1])
        in_octant = i0 >= centre[0] and i1 >= centre[1] and i2 >= centre[2]
        o0, o1, o2 = max(i0, m0), max(i1, m1), max(i2, m2)  # (the one at or above the centre)
        folded[r] = (o0 * nk + o1) * nh + o2 if in_inner else f
        must[r] = in_octant or not in_inner
    return True
