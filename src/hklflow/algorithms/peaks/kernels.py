"""The compiled loops of the peak search (spotfinding.search): the dispersion test of one
frame (a kernel per window half-width, its rows summed in int32 where exact), and the
assembly of strong pixels into 3D peaks across frames (union-find on labels, first moments
in accumulators)."""
from __future__ import annotations

import functools
import math

import numba
import numpy as np

from ...base.numba_target import has_avx512

# bits of the kernel's per-pixel flags (spotfinding.pixel_flags): one byte per pixel read
# with the frame
USABLE, IN_ANNULUS = 1, 2
# accumulator columns of an open peak
A_N, A_W, A_WX, A_WY, A_WZ, A_WXX, A_WYY, A_WZZ, A_RAW, A_BG, A_MAX = range(11)
B_R0, B_R1, B_C0, B_C1, B_F0, B_F1, B_LAST = range(7)
try:  # numba's intrinsic (LLVM's cttz; numba's math.gcd uses it)
    from numba.cpython.unsafe.numbers import trailing_zeros
except ImportError:  # pragma: no cover - a numba that moved it
    @numba.njit(nogil=True, inline="always")
    def trailing_zeros(x):
        n = 0
        while ((x >> np.uint64(n)) & np.uint64(1)) == 0:  # (x != 0)
            n += 1
        return n
# the kernel's row update in one loop where numba compiles for AVX-512, in two elsewhere
# (the faster of the two there; a compile-time constant of the kernel)
ONE_ROW_LOOP = has_avx512()
# columns of a row whose values' low (high) 16 bits the kernel sums in int32: 32768 x 65535
# is below 2^31
SUM_SEGMENT = 32768


# --------------------------------------------------------------------------------------
# Per-frame detection
# --------------------------------------------------------------------------------------
@numba.njit(nogil=True, inline="always")
def _add_row(col_n, col_i, col_q, x, pad, sign):
    """Column counts, int32 sums and int32 sums of squares += sign x (one cleaned row of the
    ring: -1 = unusable, counts 0)."""
    for c in range(x.shape[0]):
        u = np.int32(1) if x[c] >= 0 else np.int32(0)
        v = max(x[c], np.int32(0))
        col_n[c + pad] += sign * u
        col_i[c + pad] = np.int32(col_i[c + pad] + sign * v)
        col_q[c + pad] = np.int32(col_q[c + pad] + sign * v * v)


@numba.njit(nogil=True, inline="always")
def _add_row_float(col_s, x, pad, sign):
    """Column sums in float64 += sign x (exact: sums of counts below 2^31)."""
    for c in range(x.shape[0]):
        col_s[c + pad] += sign * float(max(x[c], np.int32(0)))


@numba.njit(nogil=True, inline="always")
def _window_squares(ring_x, ring_rows, nrows, c, half_c, nx, exact):
    """Sum of the squares of the usable values in ring_x's rows ring_rows[:nrows], columns
    c - half_c..c + half_c: in int64 when `exact` (every value below `wide`: no overflow),
    else in float64 (squares of values above 9.5e7 rounded).  (Indexed, not sliced: a
    slice of an array costs two atomic reference counts.)"""
    c0 = max(c - half_c, 0)
    c1 = min(c + half_c, nx - 1)
    if exact:
        qi = np.int64(0)
        for i in range(nrows):
            for cc in range(c0, c1 + 1):
                v = np.int64(max(ring_x[ring_rows[i], cc], np.int32(0)))
                qi += v * v
        return float(qi)
    q = 0.0
    for i in range(nrows):
        for cc in range(c0, c1 + 1):
            f = float(max(ring_x[ring_rows[i], cc], np.int32(0)))
            q += f * f
    return q


@functools.lru_cache(maxsize=None)
def _kernel_for_width(half_c: int):
    """strong_pixels_frame's kernel for one window half-width: half_c a constant of the
    closure, so that the window sum along a row is unrolled and vectorised.  Cached on
    disk by numba per width (the closure's values are part of the cache's key): only the
    widths in use are compiled.  One function, not a call with numba.literally(half_c):
    each compiled layer above the kernel optimised its code again, a large part of a cold
    compile, for the same code."""
    half_c = int(half_c)

    @numba.njit(cache=True, nogil=True)
    def kernel(frame, flags, half_r, sigma_b, sigma_s, gain, min_local, global_threshold,
               absolute_threshold, use_absolute, below_tmax, out_rows, out_cols, out_vals,
               out_bg, stats, maxproj):
        ny, nx = frame.shape
        pad = half_c
        w = 2 * half_c + 1
        ncol = nx + 2 * pad
        # column counts and sums over the window's rows (padded by half_c zeros on both
        # sides), the sums in int32 (wrapping: exact again once the rows they overflowed with
        # have left), for the first test in 32-bit lanes while the window's values are below
        # `wide`, where a window's sum and x n fit in int32
        col_n = np.zeros(ncol, dtype=np.int32)
        col_i = np.zeros(ncol, dtype=np.int32)
        wide = (2 ** 31 - 1) // (w * (2 * half_r + 1) + 1)
        n_wide = 0  # rows in the window with a value >= wide
        # sums of squares the same way (wrapping int32), exact while the window's values are
        # below `narrow_sq` (6621 for 7 x 7); else a candidate adds its squares up from the ring
        col_q = np.zeros(ncol, dtype=np.int32)
        sq_max = (2 ** 31 - 1) // (w * (2 * half_r + 1))  # largest square a window may hold
        root = int(math.sqrt(sq_max))
        while root * root > sq_max:
            root -= 1
        while (root + 1) * (root + 1) <= sq_max:
            root += 1
        narrow_sq = np.int32(root + 1)
        n_sq = 0  # rows in the window with a value >= narrow_sq
        # the sums again in float64 (exact) only while a row with a value >= wide is in the
        # window, for the first test in float64 there
        col_s = np.zeros(ncol)
        float_live = False
        # ring of cleaned rows: the value where usable, else -1 (one array read and written
        # per pixel instead of a value and a flag); each pixel is tested once, when its row
        # enters the window; a pixel that passes the first test while a count >= narrow_sq is
        # in its window adds its window's squares up from the ring (ring_rows: the ring's rows
        # in the window)
        wr = 2 * half_r + 2
        ring_x = np.zeros((wr, nx), dtype=np.int32)
        ring_max = np.zeros(wr, dtype=np.int32)  # each ring row's largest value
        ring_rows = np.zeros(wr, dtype=np.int64)
        # the first test's outcome per pixel of the row, looked at 8 at a time below (most
        # are 0; the bytes past nx stay 0)
        flag = np.zeros(8 * ((nx + 7) // 8), dtype=np.uint8)
        flag_words = flag.view(np.uint64)
        ss2 = sigma_s * sigma_s * gain
        sb2x2 = 2.0 * sigma_b * sigma_b * gain * gain
        n_min = max(float(min_local), 2.0)
        gthr = float(global_threshold)
        n_min_i = np.int32(math.ceil(n_min))
        if gthr >= 2.0 ** 31 - 1:  # x > gthr <=> x > floor(gthr) for counts x >= 0
            gthr_i = np.int32(2 ** 31 - 1)
        elif gthr >= -1.0:
            gthr_i = np.int32(math.floor(gthr))
        else:  # (NaN too: its pixels let through here fail the exact test)
            gthr_i = np.int32(-1)
        ss2_lo = np.float32(ss2 * (1.0 - 2.0 ** -16))  # float32's errors inside the margin
        athr = float(absolute_threshold)
        s_sum = 0
        s_max = 0
        s_trim = 0
        n_valid = 0
        n_ann = 0
        count = 0
        cap = out_rows.shape[0]
        for r in range(-half_r, ny):
            ra = r + half_r  # row entering the window
            rd = r - half_r - 1  # row leaving it
            if ra < ny:
                xa = ring_x[ra % wr]
                fr = frame[ra]
                pf = flags[ra]
                row_sum = 0
                row_max = np.int32(0)
                row_n = np.int32(0)
                ann_sum = 0
                ann_n = np.int32(0)
                if maxproj is not None:  # (compiled away without it)
                    mp = maxproj[ra]
                # one loop over the row: the maximum, the cleaning, the statistics and (with
                # AVX-512) the column sums' update, the row leaving the window out, this one
                # in; without AVX-512 that update has a loop of its own (the same sums: the one
                # loop took 1.1-1.2x as long there, the two loops 1.0-1.04x with AVX-512).
                # Every value in it is 32-bit (an int64 would halve its lanes): the sums are
                # kept as int32 sums of the values' low and high 16 bits, over segments of the
                # row short enough that they cannot overflow
                leaving = rd >= 0
                xd = ring_x[rd % wr]
                for segment in range((nx + SUM_SEGMENT - 1) // SUM_SEGMENT):
                    c0 = segment * SUM_SEGMENT  # (c0 + j: indices known >= 0, no wraparound)
                    lo = np.int32(0)
                    hi = np.int32(0)
                    ann_lo = np.int32(0)
                    ann_hi = np.int32(0)
                    for j in range(min(SUM_SEGMENT, nx - c0)):
                        c = c0 + j
                        v = fr[c]
                        if maxproj is not None:
                            mp[c] = max(mp[c], v)
                        ok = ((pf[c] & USABLE) != 0) & (v >= 0) & (v <= below_tmax)
                        x = np.int32(v) if ok else np.int32(0)
                        u = np.int32(1) if ok else np.int32(0)
                        xa[c] = x if ok else np.int32(-1)
                        x_lo = x & np.int32(0xFFFF)
                        x_hi = x >> np.int32(16)
                        lo = np.int32(lo + x_lo)
                        hi = np.int32(hi + x_hi)
                        row_max = max(row_max, x)
                        row_n = np.int32(row_n + u)
                        in_ann = (pf[c] & IN_ANNULUS) != 0
                        ann_lo = np.int32(ann_lo + (x_lo if in_ann else np.int32(0)))
                        ann_hi = np.int32(ann_hi + (x_hi if in_ann else np.int32(0)))
                        ann_n = np.int32(ann_n + (u if in_ann else np.int32(0)))
                        if ONE_ROW_LOOP and leaving:
                            vd = max(xd[c], np.int32(0))
                            col_n[c + pad] += u - (np.int32(1) if xd[c] >= 0 else np.int32(0))
                            col_i[c + pad] = np.int32(col_i[c + pad] + x - vd)
                            col_q[c + pad] = np.int32(col_q[c + pad] + x * x - vd * vd)
                    row_sum += (np.int64(hi) << 16) + np.int64(lo)
                    ann_sum += (np.int64(ann_hi) << 16) + np.int64(ann_lo)
                if not ONE_ROW_LOOP and leaving:
                    for c in range(nx):
                        a = xa[c]
                        d = xd[c]
                        col_n[c + pad] += ((np.int32(1) if a >= 0 else np.int32(0))
                                           - (np.int32(1) if d >= 0 else np.int32(0)))
                        va = max(a, np.int32(0))
                        vd = max(d, np.int32(0))
                        col_i[c + pad] = np.int32(col_i[c + pad] + va - vd)
                        col_q[c + pad] = np.int32(col_q[c + pad] + va * va - vd * vd)
                if float_live and leaving:
                    for c in range(nx):
                        col_s[c + pad] += (float(max(xa[c], np.int32(0)))
                                           - float(max(xd[c], np.int32(0))))
                s_sum += row_sum
                s_max = max(s_max, np.int64(row_max))
                n_valid += row_n
                s_trim += ann_sum
                n_ann += ann_n
                ring_max[ra % wr] = row_max
                n_wide += row_max >= wide
                n_sq += row_max >= narrow_sq
                if not leaving:
                    _add_row(col_n, col_i, col_q, xa, pad, 1)
                    if float_live:
                        _add_row_float(col_s, xa, pad, 1)
            elif rd >= 0:
                _add_row(col_n, col_i, col_q, ring_x[rd % wr], pad, -1)
                if float_live:
                    _add_row_float(col_s, ring_x[rd % wr], pad, -1)
            if rd >= 0:
                n_wide -= ring_max[rd % wr] >= wide
                n_sq -= ring_max[rd % wr] >= narrow_sq
            if n_wide == 0:
                float_live = False
            elif not float_live:  # a wide row came in: the float sums of the rows in the window
                col_s[:] = 0.0
                for rr in range(max(rd + 1, 0), min(ra, ny - 1) + 1):
                    _add_row_float(col_s, ring_x[rr % wr], pad, 1)
                float_live = True
            if r < 0:
                continue
            xr = ring_x[r % wr]
            n_row = np.int32(0)  # (int32: an int64 count would halve the test loops' lanes)
            if use_absolute:
                for c in range(nx):
                    f = (xr[c] >= 0) & (float(xr[c]) > athr)
                    flag[c] = f
                    n_row = np.int32(n_row + f)
            elif not float_live:
                # the first test below in int32 and float32 (twice the lanes of float64), with
                # a margin that lets through every pixel the float64 test passes
                for c in range(nx):
                    n = np.int32(0)
                    s = np.int32(0)
                    for j in range(w):
                        n = np.int32(n + col_n[c + j])
                        s = np.int32(s + col_i[c + j])
                    xi = xr[c]
                    d = np.int32(xi * n - s)
                    fd = np.float32(d)
                    f = ((xi > gthr_i) & (xi >= 0) & (d > 0) & (s > 0) & (n >= n_min_i)
                         & (fd * fd > ss2_lo * np.float32(s) * np.float32(n)))
                    flag[c] = f
                    n_row = np.int32(n_row + f)
            else:
                # branch-free, so that the loop is vectorised:
                # x > m + sigma_s sqrt(m)  <=>  d = x n - s > 0 and d^2 > sigma_s^2 s n;
                # the few pixels that pass are tested for dispersion below
                for c in range(nx):
                    n = 0
                    s = 0.0
                    for j in range(w):
                        n += col_n[c + j]
                        s += col_s[c + j]
                    fn = float(n)
                    x = float(xr[c])
                    d = x * fn - s
                    f = ((xr[c] >= 0) & (d > 0.0) & (s > 0.0) & (fn >= n_min) & (x > gthr)
                         & (d * d > ss2 * s * fn))
                    flag[c] = f
                    n_row = np.int32(n_row + f)
            if n_row:
                pf = flags[r]
                nrows = 0
                for rr in range(max(r - half_r, 0), min(r + half_r, ny - 1) + 1):
                    ring_rows[nrows] = rr % wr
                    nrows += 1
                for word in range(flag_words.shape[0]):  # (8 flags at a time: most are 0)
                    bits = flag_words[word]
                    while bits:  # flags are 0 or 1 bytes, byte i bit 8i (little-endian)
                        c = 8 * word + trailing_zeros(bits) // 8
                        bits &= bits - np.uint64(1)
                        n = 0
                        s_i = np.int32(0)  # exact while no wide row is in the window
                        for j in range(w):
                            n += col_n[c + j]
                            s_i = np.int32(s_i + col_i[c + j])
                        s = float(s_i)
                        if float_live:
                            s = 0.0
                            for j in range(w):
                                s += col_s[c + j]
                        if not use_absolute:
                            # the first test exactly, then
                            # v/m > g (1 + sigma_b sqrt(2/(n-1)))  <=>  e = n q - s^2 - g (n-1) s
                            #                         > 0 and e^2 > 2 sigma_b^2 g^2 (n-1) s^2
                            fn = float(n)
                            x = float(xr[c])
                            d = x * fn - s
                            if not ((d > 0.0) & (s > 0.0) & (fn >= n_min) & (x > gthr)
                                    & (d * d > ss2 * s * fn)):
                                continue
                            if n_sq == 0:
                                q_i = np.int32(0)
                                for j in range(w):
                                    q_i = np.int32(q_i + col_q[c + j])
                                q = float(q_i)
                            else:
                                q = _window_squares(ring_x, ring_rows, nrows, c, half_c, nx,
                                                   not float_live)
                            e = fn * q - s * s - gain * (fn - 1.0) * s
                            if not ((e > 0.0) & (e * e > sb2x2 * (fn - 1.0) * s * s)):
                                continue
                        x = xr[c]
                        if count < cap:
                            out_rows[count] = r
                            out_cols[count] = c
                            out_vals[count] = x
                            out_bg[count] = s / n
                        count += 1
                        if pf[c] & IN_ANNULUS:  # strong pixels are left out of the trimmed sum
                            s_trim -= x
                            n_ann -= 1
        stats[0] = s_sum
        stats[1] = s_max
        stats[2] = s_trim
        stats[3] = n_valid
        stats[4] = count
        stats[5] = n_ann
        return count if count <= cap else -1

    return kernel


# --------------------------------------------------------------------------------------
# 3D assembly
# --------------------------------------------------------------------------------------
N_ACC = 11


N_BOX = 7


@numba.njit(cache=True, nogil=True)
def _find(parent, a):
    while parent[a] != a:
        parent[a] = parent[parent[a]]
        a = parent[a]
    return a


@numba.njit(cache=True, nogil=True)
def _merge(parent, acc, box, a, b):
    """Union of peaks a and b (roots); returns the surviving root."""
    if a == b:
        return a
    if a > b:
        a, b = b, a
    parent[b] = a
    for k in range(N_ACC):
        if k == A_MAX:
            if acc[b, k] > acc[a, k]:
                acc[a, k] = acc[b, k]
        else:
            acc[a, k] += acc[b, k]
    box[a, B_R0] = min(box[a, B_R0], box[b, B_R0])
    box[a, B_R1] = max(box[a, B_R1], box[b, B_R1])
    box[a, B_C0] = min(box[a, B_C0], box[b, B_C0])
    box[a, B_C1] = max(box[a, B_C1], box[b, B_C1])
    box[a, B_F0] = min(box[a, B_F0], box[b, B_F0])
    box[a, B_F1] = max(box[a, B_F1], box[b, B_F1])
    box[a, B_LAST] = max(box[a, B_LAST], box[b, B_LAST])
    return a


@numba.njit(cache=True, nogil=True)
def assemble_frame(f, rows, cols, vals, bg, count, label_prev, label_cur, parent, acc, box,
                   free, n_free, next_slot):
    """Add the strong pixels of frame f (raster order) to the open peaks.

    label_prev / label_cur (ny, nx) int32 hold peak slots of the previous / this frame's
    strong pixels (-1 elsewhere; the caller resets only the touched entries).  Returns
    (n_free, next_slot, overflow).  Slots are recycled through `free`.
    """
    ny, nx = label_cur.shape
    cap = parent.shape[0]
    z = f + 0.5
    for i in range(count):
        r = rows[i]
        c = cols[i]
        root = -1
        # neighbours already labelled in this frame (raster order): W, NW, N, NE
        for dr, dc in ((0, -1), (-1, -1), (-1, 0), (-1, 1)):
            rr = r + dr
            cc = c + dc
            if 0 <= rr < ny and 0 <= cc < nx:
                lab = label_cur[rr, cc]
                if lab >= 0:
                    lr = _find(parent, lab)
                    root = lr if root < 0 else _merge(parent, acc, box, _find(parent, root), lr)
        # the same pixel in the previous frame
        lab = label_prev[r, c]
        if lab >= 0:
            lr = _find(parent, lab)
            root = lr if root < 0 else _merge(parent, acc, box, _find(parent, root), lr)
        if root < 0:
            if n_free > 0:
                n_free -= 1
                root = free[n_free]
            elif next_slot < cap:
                root = next_slot
                next_slot += 1
            else:
                return n_free, next_slot, True
            parent[root] = root
            for k in range(N_ACC):
                acc[root, k] = 0.0
            box[root, B_R0] = r
            box[root, B_R1] = r
            box[root, B_C0] = c
            box[root, B_C1] = c
            box[root, B_F0] = f
            box[root, B_F1] = f
        root = _find(parent, root)
        label_cur[r, c] = root
        x = c + 0.5
        y = r + 0.5
        v = vals[i]
        w = v - bg[i]
        if w < 0.0:
            w = 0.0
        acc[root, A_N] += 1.0
        acc[root, A_W] += w
        acc[root, A_WX] += w * x
        acc[root, A_WY] += w * y
        acc[root, A_WZ] += w * z
        acc[root, A_WXX] += w * x * x
        acc[root, A_WYY] += w * y * y
        acc[root, A_WZZ] += w * z * z
        acc[root, A_RAW] += v
        acc[root, A_BG] += bg[i]
        if v > acc[root, A_MAX]:
            acc[root, A_MAX] = v
        box[root, B_R0] = min(box[root, B_R0], r)
        box[root, B_R1] = max(box[root, B_R1], r)
        box[root, B_C0] = min(box[root, B_C0], c)
        box[root, B_C1] = max(box[root, B_C1], c)
        box[root, B_F1] = f
        box[root, B_LAST] = f
    return n_free, next_slot, False


@numba.njit(cache=True, nogil=True)
def close_finished(f, parent, acc, box, free, n_free, next_slot, out_acc, out_box, final):
    """Emit every peak root whose last strong pixel is before frame f (or all if final);
    their slots (and those of merged children) go back to the free list.
    Returns (n_emitted, n_free)."""
    n_out = 0
    # children whose root is finished are freed with it
    for s in range(next_slot):
        if parent[s] < 0:
            continue  # free slot
        root = _find(parent, s)
        if final or box[root, B_LAST] < f:
            if root == s:
                for k in range(N_ACC):
                    out_acc[n_out, k] = acc[s, k]
                for k in range(N_BOX):
                    out_box[n_out, k] = box[s, k]
                n_out += 1
    for s in range(next_slot):
        if parent[s] < 0:
            continue
        root = _find(parent, s)
        if final or box[root, B_LAST] < f:
            if s != root:
                parent[s] = -1
                free[n_free] = s
                n_free += 1
    for s in range(next_slot):
        if parent[s] >= 0 and parent[s] == s and (final or box[s, B_LAST] < f):
            parent[s] = -1
            free[n_free] = s
            n_free += 1
    return n_out, n_free
