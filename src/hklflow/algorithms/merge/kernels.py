"""The compiled loops of symmetrisation (symmetry.symmetrize_slab): the Laue group's
operators gathered over output tiles, the support of a set of bits, and the stabilizer
counts of voxels."""
from __future__ import annotations

import numba
import numpy as np


@numba.njit(inline="always")
def _valid_range(b, a, n, lo, hi):
    """Narrow [lo, hi) to the i for which 0 <= b + a i < n (integers)."""
    if a == 0:
        if b < 0 or b >= n:
            return lo, lo
        return lo, hi
    if a > 0:
        lo = max(lo, -(b // a))
        hi = min(hi, (n - 1 - b) // a + 1)
    else:
        lo = max(lo, -((n - 1 - b) // -a))
        hi = min(hi, b // -a + 1)
    return lo, max(lo, hi)


@numba.njit(parallel=True, cache=True)
def _symmetrize_kernel(signal, weight, A, c, l0, l1, out_s, out_w, tile, nl, src_row):
    """out[l - l0, k, h] = sum over operators of the input at (h, k, l) A + c (inside the
    grid of nl L planes); returns the number of (voxel, operator) pairs whose equivalent is
    inside the grid.  signal and weight hold the source planes the operators reach: grid
    plane L of operator o is their row L - src_row[o] (whole volumes: src_row = 0)."""
    nk, nh = signal.shape[1], signal.shape[2]
    sig = signal.reshape(-1)
    wt = weight.reshape(-1)
    nops = A.shape[0]
    ntl = (l1 - l0 + tile - 1) // tile
    ntk = (nk + tile - 1) // tile
    nth = (nh + tile - 1) // tile
    inside = np.zeros(ntl * ntk * nth, dtype=np.int64)
    for t in numba.prange(ntl * ntk * nth):
        tl = t // (ntk * nth)
        tk = (t // nth) % ntk
        th = t % nth
        la = l0 + tl * tile
        lb = min(la + tile, l1)
        ka = tk * tile
        kb = min(ka + tile, nk)
        ha = th * tile
        hb = min(ha + tile, nh)
        acc_s = np.zeros((lb - la, kb - ka, hb - ha), dtype=np.float64)
        acc_w = np.zeros((lb - la, kb - ka, hb - ha), dtype=np.float64)
        count = 0
        for o in range(nops):
            # source flat index = base + ih * stride along a row of the output
            stride = A[o, 0, 0] + A[o, 0, 1] * nh + A[o, 0, 2] * nh * nk
            for il in range(la, lb):
                for ik in range(ka, kb):
                    bh = A[o, 1, 0] * ik + A[o, 2, 0] * il + c[o, 0]
                    bk = A[o, 1, 1] * ik + A[o, 2, 1] * il + c[o, 1]
                    bl = A[o, 1, 2] * ik + A[o, 2, 2] * il + c[o, 2]
                    lo, hi = _valid_range(bh, A[o, 0, 0], nh, ha, hb)
                    lo, hi = _valid_range(bk, A[o, 0, 1], nk, lo, hi)
                    lo, hi = _valid_range(bl, A[o, 0, 2], nl, lo, hi)
                    if hi <= lo:
                        continue
                    base = ((bl - src_row[o]) * nk + bk) * nh + bh
                    for ih in range(lo, hi):
                        f = base + ih * stride
                        acc_s[il - la, ik - ka, ih - ha] += sig[f]
                        acc_w[il - la, ik - ka, ih - ha] += wt[f]
                    count += hi - lo
        out_s[la - l0:lb - l0, ka:kb, ha:hb] = acc_s
        out_w[la - l0:lb - l0, ka:kb, ha:hb] = acc_w
        inside[t] = count
    return inside.sum()


@numba.njit(cache=True, nogil=True)
def _support_of_bits(bits):
    """_support of an array seen as unsigned integers of its size (+0.0: no bit set)."""
    ny, nx = bits.shape
    r0, r1, c0, c1 = ny, 0, nx, 0
    for r in range(ny):
        row = bits[r]
        any_bit = row[0]
        for c in range(1, nx):  # (no early exit: vectorised)
            any_bit |= row[c]
        if any_bit == 0:
            continue
        first, last = 0, nx - 1
        while row[first] == 0:
            first += 1
        while row[last] == 0:
            last -= 1
        r0 = min(r0, r)
        r1 = r + 1
        c0 = min(c0, first)
        c1 = max(c1, last + 1)
    return r0, r1, c0, c1


@numba.njit(cache=True)
def _stabilizer_counts(A, c, l0, l1, nk, nh, out):
    """out[l - l0, k, h] = the number of operators o with i A[o] + c[o] = i, i = (h, k, l)."""
    out[:] = 0
    for o in range(A.shape[0]):
        # i (A - I) = -c, column j: sum_m i_m D[m, j] = -c_j; solved for ih where a
        # column holds it, else every ih of a (k, l) row that satisfies the columns
        jh = -1
        for j in range(3):
            if A[o, 0, j] - (1 if j == 0 else 0) != 0:
                jh = j
                break
        for il in range(l0, l1):
            for ik in range(nk):
                if jh < 0:
                    ok = True
                    for j in range(3):
                        d1 = A[o, 1, j] - (1 if j == 1 else 0)
                        d2 = A[o, 2, j] - (1 if j == 2 else 0)
                        if ik * d1 + il * d2 + c[o, j] != 0:
                            ok = False
                    if ok:
                        for ih in range(nh):
                            out[il - l0, ik, ih] += 1
                    continue
                d0 = A[o, 0, jh] - (1 if jh == 0 else 0)
                rest = (ik * (A[o, 1, jh] - (1 if jh == 1 else 0))
                        + il * (A[o, 2, jh] - (1 if jh == 2 else 0)) + c[o, jh])
                if rest % d0 != 0:
                    continue
                ih = -rest // d0
                if not 0 <= ih < nh:
                    continue
                ok = True
                for j in range(3):
                    d = (ih * (A[o, 0, j] - (1 if j == 0 else 0))
                         + ik * (A[o, 1, j] - (1 if j == 1 else 0))
                         + il * (A[o, 2, j] - (1 if j == 2 else 0)) + c[o, j])
                    if d != 0:
                        ok = False
                if ok:
                    out[il - l0, ik, ih] += 1
