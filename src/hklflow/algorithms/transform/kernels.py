"""The compiled kernels that add frames to a bricked grid: per block of BLOCK pixels, voxel
indices in float32 (decided again in float64 near a voxel face), then the scatter; the
whole work or one thread's share of it (ThreadShares), and the quantities of Q by which the
threads share the grid out (shares.LAB_VALUES)."""
from __future__ import annotations

import math

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from .bricks import BRICK_BITS, DUMP_SLOTS, DUMP_THREADS
from .pixels import BLOCK

FIXUP_CHUNK = 64  # pass 2 looks into a chunk only when it holds a flagged pixel
UNIT_ROUNDOFF32 = 2.0 ** -24
# reduction.transform.variance_from: what a voxel's third cell sums (with the variance)
VARIANCE_FROM = ("expected", "observed")


def kernel_gain(gain: float, variance_from: str) -> float:
    """The kernels' `gain` argument: gain (> 0, counts per photon) for the variance from
    each pixel-frame's observed count (observed: gain v a^2 per pixel-frame of raw value v
    and factor a = corr x scale: the variance of the sum itself); -gain for the variance
    from its expected count (expected: gain a per pixel-frame, the sum's variance per unit
    corrected intensity, times a local estimate of the intensity where the chunks are
    summed: algorithms.merge.expected_variance)."""
    if variance_from not in VARIANCE_FROM:
        raise ValueError(f"variance_from must be one of {VARIANCE_FROM}, got {variance_from!r}")
    return float(gain) if variance_from == "observed" else -float(gain)


# The kernel works through the detector in blocks of BLOCK pixels, in three passes per block:
#  1. a branch-free loop that LLVM vectorises (8 pixels per AVX2 instruction): voxel
#     coordinates in float32, the voxel's bricked index (int32) or a dump slot, and the value;
#     with two kinds, a pixel the second leaves out indexes the grid's second part
#     (BrickedGrid paired: index + `second`);
#  2. the few pixels whose float32 coordinate lies within the float32 rounding bound of a voxel
#     face are decided again in float64 (so decisions equal a float64 evaluation exactly);
#  3. the scatter, in four interleaved streams a quarter block apart: consecutive pixels often
#     hit the same voxel, and interleaving keeps those read-modify-writes from waiting on
#     each other; a voxel's signal and weight side by side are added as one vector
#     (_add_to_cells); one kind or two alike.
# Work units are (block, frame, sub-step), frames innermost: a block's pixels move less than
# a voxel from one frame to the next, so the voxels they add to and their Q table stay in
# the core's cache for the frames of a chunk instead of being fetched from memory per frame.
# Unusable pixels, pixels off the grid, untrusted values and (one kind) Bragg-masked ones go
# to DUMP_SLOTS slots after the grid (spread so that a run of them is no dependency chain either).


@numba.njit(inline="always")
def _exact_index(qx, qy, qz, a00, a01, a02, a10, a11, a12, a20, a21, a22, o0, o1, o2,
                 dims, nbk, nbh, dump):
    """Bricked voxel index of a pixel from float64 coordinates (dump when off the grid)."""
    q0 = np.float64(qx)
    q1 = np.float64(qy)
    q2 = np.float64(qz)
    x = a00 * q0 + a01 * q1 + a02 * q2 + o0
    y = a10 * q0 + a11 * q1 + a12 * q2 + o1
    z = a20 * q0 + a21 * q1 + a22 * q2 + o2
    # compared as floats before any conversion: int() of a huge value would wrap
    if 0.0 <= x < dims[0] and 0.0 <= y < dims[1] and 0.0 <= z < dims[2]:
        ih = int(x)
        ik = int(y)
        il = int(z)
        brick = ((il >> BRICK_BITS) * nbk + (ik >> BRICK_BITS)) * nbh + (ih >> BRICK_BITS)
        low = (1 << BRICK_BITS) - 1
        return np.int32((brick << (3 * BRICK_BITS)) + ((il & low) << (2 * BRICK_BITS))
                        + ((ik & low) << BRICK_BITS) + (ih & low))
    return dump


@numba.njit(inline="always")
def _rounding_bound(a0, a1, a2, o, q_max):
    """Bound on |x32 - x64| for x = a0 q0 + a1 q1 + a2 q2 + o evaluated in float32
    (coefficients, products and sums rounded): 5 u (sum_j |a_j| max|q_j| + |o|) to first
    order; 16 u leaves a margin > 3."""
    return 16.0 * UNIT_ROUNDOFF32 * (abs(a0) * q_max[0] + abs(a1) * q_max[1]
                                     + abs(a2) * q_max[2] + abs(o))


@numba.njit(inline="always")
def _any_negative(buf, start, stop):
    """True when buf[start:stop] (int32) holds a negative value (vectorised: OR of signs;
    over a slice, whose indices numba knows are not negative: indexing buf from `start`
    would check each index for wraparound, and the loop would stay scalar)."""
    part = buf[start:stop]
    sign = np.int32(0)
    for i in range(part.shape[0]):
        sign |= part[i]
    return sign < 0


@numba.njit(inline="always")
def _punched(qx, qy, qz, m, allowed, allowed_off, hkl_r2):
    """True when the pixel's (h, k, l) lies within sqrt(hkl_r2) of an allowed node."""
    q0 = np.float64(qx)
    q1 = np.float64(qy)
    q2 = np.float64(qz)
    h = m[0, 0] * q0 + m[0, 1] * q1 + m[0, 2] * q2
    k = m[1, 0] * q0 + m[1, 1] * q1 + m[1, 2] * q2
    l = m[2, 0] * q0 + m[2, 1] * q1 + m[2, 2] * q2  # noqa: E741
    nh = math.floor(h + 0.5)
    nk = math.floor(k + 0.5)
    nl = math.floor(l + 0.5)
    if (h - nh) ** 2 + (k - nk) ** 2 + (l - nl) ** 2 > hkl_r2:
        return False
    a = int(nh) - allowed_off[0]
    b = int(nk) - allowed_off[1]
    c = int(nl) - allowed_off[2]
    return (0 <= a < allowed.shape[0] and 0 <= b < allowed.shape[1]
            and 0 <= c < allowed.shape[2] and allowed[a, b, c] != 0)


@numba.njit(inline="always")
def _unit(u, nf, nsub, npix):
    """(frame, rotation sub-step, first pixel, pixels) of work unit u: the frames of a block
    of pixels one after the other, block after block."""
    f = (u // nsub) % nf
    p0 = (u // (nsub * nf)) * BLOCK
    return f, u % nsub, p0, min(BLOCK, npix - p0)


_LOW = (1 << (BRICK_BITS - 1)) - 1


@numba.njit(inline="always")
def half_set_index(k):
    """The cell of bricked voxel index k in the half sets' grid, the voxels binned 2 x 2 x 2:
    a brick of 8^3 voxels is a brick of 4^3 there (the dump slots and a paired grid's second
    part, which start on a brick, map alike: past the grid's own cells)."""
    k = np.uint32(k)
    return ((k >> (3 * BRICK_BITS)) << (3 * (BRICK_BITS - 1))
            | ((k >> (2 * BRICK_BITS + 1)) & _LOW) << (2 * (BRICK_BITS - 1))
            | ((k >> (BRICK_BITS + 1)) & _LOW) << (BRICK_BITS - 1)
            | ((k >> 1) & _LOW))


@numba.njit(nogil=True, cache=True, error_model="numpy", fastmath={"contract"})
def _voxel_indices(f, p0, n, vb, qx, qy, qz, corr, bragg, B, c, t, s32, value_max, dims,
                   nbricks, shift, dump, idx, val, var, g32, expected, plate=None):
    """Pass 1 of _compute_values on pixels [p0, p0 + n) of frame f (values vb): each pixel's
    bricked voxel index (+ shift for a Bragg-masked pixel with shift > 0; the dump when
    unusable, off the grid or, shift 0, Bragg-masked), -1 when a coordinate lies within the
    rounding bound of a voxel face (t: 1/2 - the bound per axis), and its value, from the
    float32 matrix B (row by row) and offset c; with var (not None) the value's variance
    too, g32 = s32 x gain: a raw value v of gain x photons counts has variance gain x v, so
    value = v a (a = corr s32) has gain v a^2 = value x corr x g32; expected (the
    variance from the expected count, kernel_gain): var = corr x g32, g32 = s32 x gain /
    steps here, the variance per unit intensity (I / a expected of v: gain a / steps^2 per
    sub-step, times I where the chunks are summed).  Multiplies and adds may fuse (`contract`:
    fewer roundings, so the bound holds; less time with AVX2): the integer arithmetic of
    the brick stays exact, and the float64 decisions (pass 2, the punch) are in functions
    of their own, without it.  plate: a factor per pixel and frame that divides corr
    (_plate_corrections; None: none)."""
    b00, b01, b02, b10, b11, b12, b20, b21, b22 = B
    c0, c1, c2 = c
    t0, t1, t2 = t
    paired = shift > 0
    fnh, fnk, fnl = np.float32(dims[0]), np.float32(dims[1]), np.float32(dims[2])
    fnbk, fnbh = np.float32(nbricks[1]), np.float32(nbricks[2])
    zero = np.float32(0.0)
    half = np.float32(0.5)
    brick_side = np.float32(1 << BRICK_BITS)
    inv_brick_side = np.float32(1.0 / (1 << BRICK_BITS))
    row_stride = np.float32(1 << (2 * BRICK_BITS))
    xb = qx[p0:p0 + n]
    yb = qy[p0:p0 + n]
    zb = qz[p0:p0 + n]
    cb = corr[p0:p0 + n]
    if bragg is not None:
        bb = bragg[f, p0:p0 + n]
    if plate is not None:  # (a loop of its own: the main one stays vectorised)
        cb = _plate_corrections(f, cb, xb, yb, zb, plate)
    for i in range(n):
        v = vb[i]
        ci = cb[i]
        # (a correction of 0: a pixel left out of these frames, e.g. a ray a plate absorbs
        # beyond reduction.transform.min_transmission; the scan's unusable pixels have it too)
        use = (v >= 0) & (v <= value_max) & (ci > zero)
        if bragg is not None:
            use = use & ((bb[i] == 0) | paired)
        q0 = xb[i]
        q1 = yb[i]
        q2 = zb[i]
        x = b00 * q0 + b01 * q1 + b02 * q2 + c0
        y = b10 * q0 + b11 * q1 + b12 * q2 + c1
        z = b20 * q0 + b21 * q1 + b22 * q2 + c2
        fx = np.floor(x)
        fy = np.floor(y)
        fz = np.floor(z)
        near = ((abs(x - fx - half) > t0) | (abs(y - fy - half) > t1)
                | (abs(z - fz - half) > t2))
        inside = ((x >= zero) & (x < fnh) & (y >= zero) & (y < fnk)
                  & (z >= zero) & (z < fnl))
        # brick and offset in float32: exact integers (< 2^24 bricks)
        bh = np.floor(fx * inv_brick_side)
        bk = np.floor(fy * inv_brick_side)
        bl = np.floor(fz * inv_brick_side)
        brick = (bl * fnbk + bk) * fnbh + bh
        offset = ((fz - brick_side * bl) * row_stride
                  + (fy - brick_side * bk) * brick_side + (fx - brick_side * bh))
        k = (np.int32(brick) << (3 * BRICK_BITS)) + np.int32(offset)
        if bragg is not None:
            k = k + shift if bb[i] != 0 else k
        k = k if use & inside else dump[i]
        idx[i] = -1 if use & near else k
        val[i] = np.float32(v) * ci * s32
        if var is not None:
            if expected:  # (loop-invariant: unswitched; observed's arithmetic unchanged)
                var[i] = ci * g32
            else:
                var[i] = val[i] * ci * g32


@numba.njit(nogil=True, cache=True, error_model="numpy", fastmath={"contract"})
def _plate_corrections(f, cb, xb, yb, zb, plate):
    """cb divided by the plate's factor at frame f of each pixel (lab Q xb, yb, zb), 0 where
    the factor is below the minimum (a new array): its cosine with the normal, looked up
    linearly in the frame's table (nodes -1 + k / inv_node).  Three loops: the first and
    the last are vectorised, which the table's look-up (a gather) would prevent."""
    tables, lam_normals, c_in, inv_node, min_factor = plate
    tb = tables[f]
    n0, n1, n2 = lam_normals[f, 0], lam_normals[f, 1], lam_normals[f, 2]
    c_f = c_in[f]
    top = np.float32(tb.shape[0] - 2)  # (the last interval's start: k + 1 in the table)
    n = cb.shape[0]
    node = np.empty(n, np.uint32)  # (unsigned: an index with no wrap-around test)
    factor = np.empty(n, np.float32)
    for i in range(n):
        x = (xb[i] * n0 + yb[i] * n1 + zb[i] * n2 + c_f + np.float32(1.0)) * inv_node
        x = x if x >= np.float32(0.0) else np.float32(0.0)  # (NaN too: no Q, corr 0)
        x = x if x <= top else top
        k = np.uint32(x)
        node[i] = k
        factor[i] = x - np.float32(k)
    for i in range(n):
        k = node[i]
        low = tb[k]
        factor[i] = low + factor[i] * (tb[k + np.uint32(1)] - low)
    out = np.empty(n, np.float32)
    for i in range(n):
        out[i] = cb[i] / factor[i] if factor[i] >= min_factor else np.float32(0.0)
    return out


@numba.njit(nogil=True, cache=True)
def _holds_bragg(bragg, bragg_blocks, f, b):
    """Whether block b of frame f holds a Bragg-masked pixel (bragg_blocks[f, b]; never
    without a Bragg mask)."""
    if bragg is None:
        return False
    return bragg_blocks[f, b] != 0


@numba.njit(nogil=True, cache=True, error_model="numpy")
def _compute_block(u, steps, frames, qx, qy, qz, corr, M, scale, value_max, bragg,
                   bragg_blocks, allowed, allowed_off, hkl_r2, origin, inv_step, dims, nbricks,
                   q_max, size, second, dump, idx, val, var, gain, state, first, punch):
    """Passes 1 and 2 (and the punch) of work unit u (_unit): writes the bricked voxel index
    (or a dump slot) and value of each of its pixels into idx, val; returns the number of
    pixels n.  Arguments as _accumulate's."""
    f, j, p0, n = _unit(u, frames.shape[0], M.shape[1], frames.shape[1])
    return _compute_values(f, j, steps, p0, n, frames[f, p0:p0 + n], qx, qy, qz, corr, M, scale,
                           value_max, bragg, bragg_blocks, allowed, allowed_off, hkl_r2,
                           origin, inv_step, dims, nbricks, q_max, size, second, dump, idx,
                           val, (var, gain, state, first), punch)


@numba.njit(inline="always", error_model="numpy")
def _compute_values(f, j, steps, p0, n, vb, qx, qy, qz, corr, M, scale, value_max, bragg,
                    bragg_blocks, allowed, allowed_off, hkl_r2, origin, inv_step, dims, nbricks,
                    q_max, size, second, dump, idx, val, variance, punch):
    """_compute_block's work on the values vb of pixels [p0, p0 + n) of frame f at the
    matrix M[f, j], one of the block's `steps` rotation sub-steps: a pixel left out of the
    masked kind (Bragg-masked, punched) goes to the dump (second 0: one kind) or to its
    voxel's index + second (two kinds, BrickedGrid paired).  variance: (var, gain, state,
    first) (one argument: a call of more than 30 is compiled as f(*args), which numba
    cannot inline): var as _accumulate's, state (2, n) int32 per pixel across the block's
    sub-steps (its last voxel, how many sub-steps before this one landed there in a row),
    first: the block's first sub-step of the frame (state reset)."""
    var, gain, state, first = variance
    s32 = np.float32(scale[f] / steps)
    expected = gain < 0  # (kernel_gain: the variance from the expected count)
    if expected:
        g32 = np.float32(scale[f] / steps / steps * -gain)
    else:
        g32 = np.float32(scale[f] / steps * gain)
    nbk, nbh = nbricks[1], nbricks[2]
    shift = np.int32(second)  # (< 2^31: BrickedGrid)
    paired = second > 0
    sh, sk, sl = inv_step[0], inv_step[1], inv_step[2]
    # voxel coordinate + 1/2 = A q + o with A = diag(1/step) M, o = 1/2 - origin / step
    o0 = 0.5 - origin[0] * sh
    o1 = 0.5 - origin[1] * sk
    o2 = 0.5 - origin[2] * sl
    m = M[f, j]
    m00, m01, m02 = m[0, 0], m[0, 1], m[0, 2]
    m10, m11, m12 = m[1, 0], m[1, 1], m[1, 2]
    m20, m21, m22 = m[2, 0], m[2, 1], m[2, 2]
    a00, a01, a02 = m00 * sh, m01 * sh, m02 * sh
    a10, a11, a12 = m10 * sk, m11 * sk, m12 * sk
    a20, a21, a22 = m20 * sl, m21 * sl, m22 * sl
    # flagged: closer than the float32 rounding bound to an integer, i.e.
    # |frac - 1/2| > 1/2 - bound
    t0 = np.float32(0.5 - _rounding_bound(a00, a01, a02, o0, q_max))
    t1 = np.float32(0.5 - _rounding_bound(a10, a11, a12, o1, q_max))
    t2 = np.float32(0.5 - _rounding_bound(a20, a21, a22, o2, q_max))
    b00, b01, b02 = np.float32(a00), np.float32(a01), np.float32(a02)
    b10, b11, b12 = np.float32(a10), np.float32(a11), np.float32(a12)
    b20, b21, b22 = np.float32(a20), np.float32(a21), np.float32(a22)
    c0, c1, c2 = np.float32(o0), np.float32(o1), np.float32(o2)
    xb = qx[p0:p0 + n]
    yb = qy[p0:p0 + n]
    zb = qz[p0:p0 + n]
    if bragg is not None:
        bb = bragg[f, p0:p0 + n]
    # pass 1 (vectorised): no branches, no gathers; without the Bragg tests where the block
    # holds no Bragg pixel in this frame (most: the regions are small)
    B = (b00, b01, b02, b10, b11, b12, b20, b21, b22)
    corr_all, plate = corr
    if _holds_bragg(bragg, bragg_blocks, f, p0 // BLOCK):
        _voxel_indices(f, p0, n, vb, qx, qy, qz, corr_all, bragg, B, (c0, c1, c2),
                       (t0, t1, t2), s32, value_max, dims, nbricks, shift, dump, idx, val, var,
                       g32, expected, plate)
    else:
        _voxel_indices(f, p0, n, vb, qx, qy, qz, corr_all, None, B, (c0, c1, c2),
                       (t0, t1, t2), s32, value_max, dims, nbricks, shift, dump, idx, val, var,
                       g32, expected, plate)
    # pass 2: float64 decisions for the flagged pixels (~0.2%)
    for r0 in range(0, n, FIXUP_CHUNK):
        r1 = min(r0 + FIXUP_CHUNK, n)
        if not _any_negative(idx, r0, r1):
            continue
        for i in range(r0, r1):
            if idx[i] < 0:
                k = _exact_index(xb[i], yb[i], zb[i], a00, a01, a02, a10, a11, a12, a20, a21,
                                 a22, o0, o1, o2, dims, nbk, nbh, dump[i])
                if bragg is not None:
                    if bb[i] != 0 and k < size:
                        k += shift
                idx[i] = k
    if allowed is not None:
        # the punch: a vectorised pass flags the pixels on the grid within the
        # radius of some node; only those look up whether the node is allowed
        for i in range(n):
            q0 = np.float64(xb[i])
            q1 = np.float64(yb[i])
            q2 = np.float64(zb[i])
            dh = m00 * q0 + m01 * q1 + m02 * q2
            dk = m10 * q0 + m11 * q1 + m12 * q2
            dl = m20 * q0 + m21 * q1 + m22 * q2
            dh = dh - np.floor(dh + 0.5)
            dk = dk - np.floor(dk + 0.5)
            dl = dl - np.floor(dl + 0.5)
            close = (dh * dh + dk * dk + dl * dl <= hkl_r2) & (idx[i] < size)
            punch[i] = -1 if close else 0
        for r0 in range(0, n, FIXUP_CHUNK):
            r1 = min(r0 + FIXUP_CHUNK, n)
            if not _any_negative(punch, r0, r1):
                continue
            for i in range(r0, r1):
                if punch[i] < 0 and _punched(xb[i], yb[i], zb[i], m, allowed,
                                             allowed_off, hkl_r2):
                    idx[i] = idx[i] + shift if paired else dump[i]
    if steps > 1:  # (one sub-step: every pixel's run is 1)
        _one_observation(idx, var, state, first, n)
    return n


@numba.njit(nogil=True, cache=True)
def _one_observation(idx, var, state, first, n):
    """A pixel's counts split over sub-steps are one observation: m of its n sub-steps in
    one voxel give it (m a / n)^2 g v, not m (a / n)^2 g v.  The k-th of a run of sub-steps
    in a voxel adds (2 k - 1) (a / n)^2 g v (the sum over k: m^2); a pixel moves on through
    the voxels as the crystal turns, so its sub-steps in a voxel are a run.  state: the
    pixels' last voxel and run (reset on the block's first sub-step of a frame).  The
    expected count's (kernel_gain < 0) alike: (m / n)^2 a g per unit intensity, each
    sub-step's a g / n^2 times (2 k - 1)."""
    if var is None:
        return
    last, run = state[0], state[1]
    keep = np.int32(0) if first else np.int32(1)
    for i in range(n):  # (branch-free: vectorised)
        k = idx[i]
        r = (run[i] + np.int32(1)) * (np.int32(k == last[i]) * keep)
        last[i] = k
        run[i] = r
        var[i] *= np.float32(2 * r + 1)


@intrinsic
def _add_to_cells(typingctx, cells, k, values):
    """cells[n k:n k + n] += values (a tuple of n float32: the n cells of voxel k side by
    side) as one n-float vector load, add and store: LLVM does not merge the scalar additions
    of a voxel's neighbouring cells itself.  Each element is the same float32 sum as a scalar
    +=.  cells: a contiguous 1-D float32 array (its data pointer is indexed directly)."""
    if not (isinstance(cells, types.Array) and cells.dtype == types.float32
            and cells.ndim == 1 and cells.layout == "C"
            and isinstance(k, types.Integer) and isinstance(values, types.UniTuple)
            and values.dtype == types.float32 and values.count in (2, 3, 4)):
        return None
    n = values.count

    def codegen(context, builder, signature, args):
        data = context.make_array(signature.args[0])(context, builder, args[0]).data
        i64 = ir.IntType(64)
        vector = ir.VectorType(ir.FloatType(), n)
        k = args[1]
        if k.type.width < 64:
            k = builder.sext(k, i64) if signature.args[1].signed else builder.zext(k, i64)
        # element and vector types named at each access: right with typed pointers (numba
        # today) and with LLVM's opaque ones
        first = builder.gep(data, [builder.mul(k, ir.Constant(i64, n))],
                            source_etype=ir.FloatType())
        at = builder.bitcast(first, vector.as_pointer())
        add = ir.Constant(vector, ir.Undefined)
        for i in range(n):
            add = builder.insert_element(add, builder.extract_value(args[2], i),
                                         ir.Constant(ir.IntType(32), i))
        builder.store(builder.fadd(builder.load(at, align=4, typ=vector), add), at, align=4)
        return context.get_dummy_value()

    return types.void(cells, k, values), codegen


@numba.njit(inline="always")
def _add_pixel(cells, k, val, var, i, w32):
    """A pixel's value and weight (and, with var, its variance) added to voxel k's cells:
    2 (3) floats a voxel."""
    if var is None:
        _add_to_cells(cells, np.uint32(k), (val[i], w32))
    else:
        _add_to_cells(cells, np.uint32(k), (val[i], w32, var[i]))


@numba.njit(inline="always")
def _add_half(half, idx, val, i, w32):
    """Pixel i's value and weight added to its voxel's cell of the half set."""
    _add_to_cells(half, half_set_index(idx[i]), (val[i], w32))


@numba.njit(nogil=True, cache=True)
def _scatter_block(idx, val, var, n, w32, cells, half):
    """Pass 3 of a one-kind pass: add the n (index, value) pairs of a block to the kind's
    cells (Bragg-masked and punched pixels of a masked_transform went to the dump).  A full
    block goes in four interleaved streams a quarter apart; a voxel's signal and weight (and
    variance) in one vector addition.  half (None: not this frame's): the half set's cells,
    (signal, weight) per binned voxel (half_set_index), which take the pixels too."""
    quarter = BLOCK // 4
    if n == BLOCK:
        for i in range(quarter):
            _add_pixel(cells, idx[i], val, var, i, w32)
            _add_pixel(cells, idx[i + quarter], val, var, i + quarter, w32)
            _add_pixel(cells, idx[i + 2 * quarter], val, var, i + 2 * quarter, w32)
            _add_pixel(cells, idx[i + 3 * quarter], val, var, i + 3 * quarter, w32)
            if half is not None:  # (in the same streams: no chain of additions to wait on)
                _add_half(half, idx, val, i, w32)
                _add_half(half, idx, val, i + quarter, w32)
                _add_half(half, idx, val, i + 2 * quarter, w32)
                _add_half(half, idx, val, i + 3 * quarter, w32)
    else:
        for i in range(n):
            _add_pixel(cells, idx[i], val, var, i, w32)
            if half is not None:
                _add_half(half, idx, val, i, w32)


@numba.njit(nogil=True, cache=True)
def _scatter_owned(idx, val, var, n, w32, cells, size, second, share, half):
    """Pass 3 of a thread's share (ThreadShares): what _scatter_block would add, in the same
    order, of the pixels whose voxel this thread owns (in either part of paired cells:
    index - second in the second); the rest (other threads' voxels, the dump, pixels not
    computed: index `size`) left out."""
    owner, me, voxel_owner = share[3], share[4], share[5]
    low = (1 << (3 * BRICK_BITS)) - 1
    quarter = BLOCK // 4
    streams = 4 if n == BLOCK else 1
    step = quarter if n == BLOCK else n
    for i in range(step):
        for s in range(streams):
            e = i + s * step
            k = idx[e]
            voxel = k - second if second > 0 and k >= second else k
            if voxel < size:
                o = owner[voxel >> (3 * BRICK_BITS)]  # (< 0: a brick across a cut)
                if o == me or (o < 0 and voxel_owner[((-1 - o) << (3 * BRICK_BITS))
                                                     + (voxel & low)] == me):
                    _add_pixel(cells, k, val, var, e, w32)
                    if half is not None:  # (the calling thread's own half set)
                        _add_half(half, idx, val, e, w32)


@numba.njit(nogil=True, cache=True, error_model="numpy")
def _compute_share(f, j, steps, p0, n, vb, r0, r1, share, qx, qy, qz, corr, M, scale,
                   value_max, bragg, bragg_blocks, allowed, allowed_off, hkl_r2, origin,
                   inv_step, dims, nbricks, q_max, size, second, dump, idx, val, var, gain,
                   state, first, punch):
    """Passes 1-2 of the runs [r0, r1) of a thread's share (pixels [starts[r], stops[r]) of
    the unit's block); the other pixels of the unit get index `size` (added by no one)."""
    starts, stops = share[1], share[2]
    idx[:n] = np.int32(size)
    for r in range(r0, r1):
        a = starts[r]
        c = stops[r]
        if var is None:
            _compute_values(f, j, steps, p0 + a, c - a, vb[a:c], qx, qy, qz, corr, M, scale,
                            value_max, bragg, bragg_blocks, allowed, allowed_off, hkl_r2,
                            origin, inv_step, dims, nbricks, q_max, size, second, dump[a:c],
                            idx[a:c], val[a:c], (None, gain, state, first), punch[a:c])
        else:
            _compute_values(f, j, steps, p0 + a, c - a, vb[a:c], qx, qy, qz, corr, M, scale,
                            value_max, bragg, bragg_blocks, allowed, allowed_off, hkl_r2,
                            origin, inv_step, dims, nbricks, q_max, size, second, dump[a:c],
                            idx[a:c], val[a:c], (var[a:c], gain, state[:, a:c], first),
                            punch[a:c])


@numba.njit(nogil=True, cache=True, error_model="numpy")
def _add_mixed_block(f, j, steps, p0, n, vb, r0, r1, share, qx, qy, qz, corr, M, scale,
                     value_max, bragg, bragg_blocks, allowed, allowed_off, hkl_r2, origin,
                     inv_step, dims, nbricks, q_max, size, second, dump, idx, val, var, gain,
                     state, first, punch, w32, cells, half):
    """A block some of whose pixels may land in other threads' voxels: its runs computed
    (_compute_share), only this thread's voxels added (_scatter_owned)."""
    _compute_share(f, j, steps, p0, n, vb, r0, r1, share, qx, qy, qz, corr, M, scale,
                   value_max, bragg, bragg_blocks, allowed, allowed_off, hkl_r2, origin,
                   inv_step, dims, nbricks, q_max, size, second, dump, idx, val, var, gain,
                   state, first, punch)
    _scatter_owned(idx, val, var, n, w32, cells, size, second, share, half)


@numba.njit(inline="always")
def _dump_slots(size, share):
    """The dump slots of the pixels of a block (a thread's own with a share)."""
    first = size if share is None else size + DUMP_SLOTS * (share[4] % DUMP_THREADS)
    return (np.arange(BLOCK) & (DUMP_SLOTS - 1)).astype(np.int32) + np.int32(first)


@numba.njit(inline="always")
def _share_of_block(share, b):
    """(runs r0, r1 of block b in the share, whether the block is mixed: not one run of
    pixels whose voxels are all this thread's)."""
    block_runs, shared = share[0], share[6]
    return block_runs[b], block_runs[b + 1], shared[b] != 0


@numba.njit(nogil=True, cache=True, error_model="numpy")
def _accumulate(frames, qx, qy, qz, corr, M, scale, value_max, bragg, bragg_blocks, allowed,
                allowed_off, hkl_r2, origin, inv_step, dims, nbricks, q_max, size, cells, second,
                live, sub_first, sub_count, gain, var, half, half_frames, share=None):
    """frames (nf, rows * cols) any numeric dtype; qx, qy, qz per detector pixel
    (PixelTable); corr: (the PixelTable's corr_all, plate): plate None, or a factor per pixel
    and frame that divides it (a plate's absorption: pixels.PixelFrames.kernel_plate), the
    factor found at each frame's centre from the pixel's cosine with the plate's normal,
    (wavelength Q) . n + s0 . n, in a table of the frame; M (nf, T, 3, 3): the matrices of
    every rotation sub-step of each frame, block b of pixels taking the sub_count[b] of them
    from sub_first[b] on (int32 per block: SubSteps); scale (nf,); value_max: the largest
    trusted value in the frames' own type (values v with 0 <= v <= value_max are used);
    bragg (nf, rows * cols)
    uint8 (1 = masked) or None; bragg_blocks (nf, blocks of BLOCK pixels) uint8, 0 where the
    block has no masked pixel in that frame (its pixels computed without the Bragg tests:
    bragg_block_summary), or None with bragg; allowed (a, b, c) uint8 table of allowed nodes from
    allowed_off (hkl of its [0, 0, 0]) for the punch of radius^2 hkl_r2 (r.l.u.^2), or None
    (None arguments compile to a kernel without those tests); q_max: largest |Q| per
    component (bounds the float32 rounding).  Adds into the bricked cells of ``size`` voxels
    followed by the dump slots, block by block (compute, then scatter).

    second 0, one kind: (signal, weight) per voxel in cells; Bragg-masked and punched
    pixels go to the dump.  second > 0, two kinds (BrickedGrid paired): those pixels go to
    the cells' second part, `second` voxels on (transform: both parts; masked_transform: the
    first).  live: uint8 per BLOCK of pixels, 0 where none of them is usable (live_blocks:
    the block is skipped, its pixels would all go to the dump).  var: None, or a float32
    buffer of BLOCK (the calling thread's own): each voxel's third cell then sums the
    variance of its signal (cells of 3 floats a voxel), from gain (counts per photon) and
    Poisson statistics of the raw values (_voxel_indices; gain < 0: of their expected
    values, the variance per unit intensity: kernel_gain).  half: None, or the cells of
    the half set (its signal and weight on the grid binned 2 x 2 x 2: half_set_index; the
    calling thread's own) that the frames f with half_frames[f] != 0 add to as well.
    share: one thread's part of the work (ThreadShares.shares[thread]), or None for all."""
    dump = _dump_slots(size, share)
    idx = np.empty(BLOCK, np.int32)
    val = np.empty(BLOCK, np.float32)
    punch = np.zeros(BLOCK, np.int32)
    state = np.zeros((2, BLOCK), np.int32)  # (the variance's runs of sub-steps)
    nf, npix = frames.shape
    nsub = M.shape[1]
    nunits = nf * nsub * ((npix + BLOCK - 1) // BLOCK)
    for u in range(nunits):
        f, j, p0, n = _unit(u, nf, nsub, npix)
        b = p0 // BLOCK
        steps = sub_count[b]
        if live[b] == 0 or j < sub_first[b] or j >= sub_first[b] + steps:
            continue
        w32 = np.float32(1.0 / steps)
        in_half = False
        if half is not None:
            in_half = half_frames[f] != 0
        if share is not None:
            r0, r1, mixed = _share_of_block(share, p0 // BLOCK)
            if r0 == r1:
                continue
            if mixed:
                if in_half:
                    _add_mixed_block(f, j, steps, p0, n, frames[f, p0:p0 + n], r0, r1, share,
                                     qx, qy, qz, corr, M, scale, value_max, bragg, bragg_blocks,
                                     allowed, allowed_off, hkl_r2, origin, inv_step, dims,
                                     nbricks, q_max, size, second, dump, idx, val, var, gain,
                                     state, j == sub_first[b], punch, w32, cells, half)
                else:
                    _add_mixed_block(f, j, steps, p0, n, frames[f, p0:p0 + n], r0, r1, share,
                                     qx, qy, qz, corr, M, scale, value_max, bragg, bragg_blocks,
                                     allowed, allowed_off, hkl_r2, origin, inv_step, dims,
                                     nbricks, q_max, size, second, dump, idx, val, var, gain,
                                     state, j == sub_first[b], punch, w32, cells, None)
                continue
        n = _compute_block(u, steps, frames, qx, qy, qz, corr, M, scale, value_max, bragg,
                           bragg_blocks, allowed, allowed_off, hkl_r2, origin, inv_step, dims,
                           nbricks, q_max, size, second, dump, idx, val, var, gain, state,
                           j == sub_first[b], punch)
        if in_half:
            _scatter_block(idx, val, var, n, w32, cells, half)
        else:
            _scatter_block(idx, val, var, n, w32, cells, None)


# --------------------------------------------------------------------------------------
# The threads' shares (shares.ThreadShares)
# --------------------------------------------------------------------------------------
@numba.njit(inline="always")
def _lab_value_at(qx, qy, qz, which, a0, a1, a2):
    """LAB_VALUES[which] of the lab Q (qx, qy, qz) (float32) in float64 (unit axis a)."""
    x = np.float64(qx)
    y = np.float64(qy)
    z = np.float64(qz)
    along = x * a0 + y * a1 + z * a2
    if which == 1:
        return along
    q2 = x * x + y * y + z * z
    d = q2 if which == 0 else q2 - along * along
    return 0.0 if d < 0.0 else np.sqrt(d)


@numba.njit(nogil=True, cache=True)
def _lab_values(qx, qy, qz, which, a0, a1, a2, out):
    """out[i] = _lab_value_at of pixel i."""
    for i in range(qx.size):
        out[i] = _lab_value_at(qx[i], qy[i], qz[i], which, a0, a1, a2)


@numba.njit(nogil=True, cache=True)
def _share_runs(qx, qy, qz, corr, which, a0, a1, a2, low, high, sure_low, sure_high,
                block_runs, starts, stops, shared):
    """One thread's share of the detector's pixels (ThreadShares): a usable pixel (corr > 0)
    is its own when its value (_lab_value_at) lies in [low, high), surely its own (its voxel
    the thread's) in [sure_low, sure_high).  Writes, block by block of BLOCK pixels, its runs
    (block b's are block_runs[b]:block_runs[b + 1], pixels [starts[r], stops[r]) of the
    block: the runs of its own pixels and the unusable pixels between them, those holding
    one of its own at least) and shared[b] = 1 where some usable pixel of the block is not
    surely its own.  Returns (its own pixels, blocks holding one, those of them shared)."""
    npix = qx.size
    nruns = 0
    own = 0
    touched = 0
    touched_shared = 0
    for b in range(block_runs.size - 1):
        block_runs[b] = nruns
        p0 = b * BLOCK
        n = min(BLOCK, npix - p0)
        shared[b] = 0
        start = -1  # the run being followed (its first pixel), -1: none
        holds_own = False
        own_before = own
        for i in range(n):
            p = p0 + i
            mine = False
            if corr[p] > 0:
                v = _lab_value_at(qx[p], qy[p], qz[p], which, a0, a1, a2)
                mine = (v >= low) & (v < high)
                if not ((v >= sure_low) & (v < sure_high)):
                    shared[b] = 1
                taken = mine
            else:
                taken = True
            if mine:
                own += 1
                holds_own = True
            if taken and start < 0:
                start = i
                holds_own = mine
            elif not taken and start >= 0:
                if holds_own:
                    starts[nruns] = start
                    stops[nruns] = i
                    nruns += 1
                start = -1
        if start >= 0 and holds_own:
            starts[nruns] = start
            stops[nruns] = n
            nruns += 1
        if own > own_before:
            touched += 1
            touched_shared += shared[b]
    block_runs[block_runs.size - 1] = nruns
    return own, touched, touched_shared
