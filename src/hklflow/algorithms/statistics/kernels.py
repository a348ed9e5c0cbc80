"""The compiled loops of the statistics (shells.volume_statistics): a voxel's shell of |Q| on
a fine grid, whether it lies near a Bragg node, chi^2 of symmetry equivalents window by
window, and CC1/2 of the half sets."""
from __future__ import annotations

import math

import numba
import numpy as np

# accumulator rows (per fine bin)
_VOX, _MEAS, _ZERO, _NIOS, _IOS, _ORB, _OBS, _CHI2, _NU, _EXCL = range(10)
_NACC = 10
# CC1/2 accumulator rows
_CCN, _CCA, _CCB, _CCAA, _CCBB, _CCAB = range(6)
_NCC = 6


@numba.njit(inline="always")
def _fine_bin(x0, x1, x2, G, q3span, nfine):
    """The fine bin of |Q|^3 of the voxel at hkl (x0, x1, x2); nfine beyond q3span."""
    q2 = (G[0, 0] * x0 * x0 + G[1, 1] * x1 * x1 + G[2, 2] * x2 * x2
          + 2.0 * (G[0, 1] * x0 * x1 + G[0, 2] * x0 * x2 + G[1, 2] * x1 * x2))
    q2 = max(q2, 0.0)
    f = q2 * math.sqrt(q2) / q3span * nfine
    if f >= nfine:
        return nfine
    return int(f)


@numba.njit(inline="always")
def _near_node(x0, x1, x2, r, G):
    """Whether hkl lies within |Q| distance r (1/Angstrom, no 2 pi) of an integer node (G:
    the reciprocal metric, |Q|^2 = h G h^T)."""
    if not r > 0.0:
        return False
    d0 = x0 - round(x0)
    d1 = x1 - round(x1)
    d2 = x2 - round(x2)
    q2 = (G[0, 0] * d0 * d0 + G[1, 1] * d1 * d1 + G[2, 2] * d2 * d2
          + 2.0 * (G[0, 1] * d0 * d1 + G[0, 2] * d0 * d2 + G[1, 2] * d1 * d2))
    return q2 <= r * r


@numba.njit(parallel=True, cache=True)
def _window_kernel(S, W, V, has_var, rows_plane, row_of, nl, A, c, start, step, G, q3span,
                   nfine, bragg, do_voxels, do_orbits, acc):
    """Accumulate the per-voxel figures (do_voxels) and the orbits' chi^2 (do_orbits) of
    the window rows S, W, V [rows, k, h] into acc [parts, _NACC, nfine + 1] (row r into
    part r % parts, the parts in parallel).  Row r holds lattice plane rows_plane[r];
    row_of[plane] is its row (-1: not in the window); the lattice has nl planes; voxel i
    maps to i A[o] + c[o] and sits at hkl start + step i.
    Returns the number of orbit voxels whose plane was not in the window (0)."""
    nrows, nk, nh = S.shape
    nops = A.shape[0]
    nparts = acc.shape[0]
    missing = np.zeros(nparts, np.int64)
    for part in numba.prange(nparts):
        img = np.empty(nops, np.int64)
        vals = np.empty(nops, np.float64)
        wts = np.empty(nops, np.float64)
        a = acc[part]
        for r in range(part, nrows, nparts):
            il = rows_plane[r]
            x2 = start[2] + step[2] * il
            for ik in range(nk):
                x1 = start[1] + step[1] * ik
                for ih in range(nh):
                    x0 = start[0] + step[0] * ih
                    f = _fine_bin(x0, x1, x2, G, q3span, nfine)
                    if do_voxels:
                        a[_VOX, f] += 1.0
                        if _near_node(x0, x1, x2, bragg, G):
                            a[_EXCL, f] += 1.0
                        else:
                            w = np.float64(W[r, ik, ih])
                            s = np.float64(S[r, ik, ih])
                            v = np.float64(V[r, ik, ih]) if has_var else 0.0
                            if w > 0 and math.isfinite(s) and math.isfinite(v) and v >= 0:
                                a[_MEAS, f] += 1.0
                                if has_var:
                                    if v > 0:
                                        a[_NIOS, f] += 1.0
                                        a[_IOS, f] += s / math.sqrt(v)
                                    else:
                                        a[_ZERO, f] += 1.0
                    if not do_orbits:
                        continue
                    flat = (il * nk + ik) * nh + ih
                    n = 0
                    rep = True
                    for o in range(nops):
                        jh = ih * A[o, 0, 0] + ik * A[o, 1, 0] + il * A[o, 2, 0] + c[o, 0]
                        jk = ih * A[o, 0, 1] + ik * A[o, 1, 1] + il * A[o, 2, 1] + c[o, 1]
                        jl = ih * A[o, 0, 2] + ik * A[o, 1, 2] + il * A[o, 2, 2] + c[o, 2]
                        if jh < 0 or jh >= nh or jk < 0 or jk >= nk or jl < 0 or jl >= nl:
                            continue
                        g = (jl * nk + jk) * nh + jh
                        if g < flat:
                            rep = False
                            break
                        seen = False
                        for m in range(n):
                            if img[m] == g:
                                seen = True
                                break
                        if not seen:
                            img[n] = g
                            n += 1
                    if not rep or n < 2:
                        continue
                    nm = 0
                    for m in range(n):
                        g = img[m]
                        jh = g % nh
                        jk = (g // nh) % nk
                        jl = g // (nh * nk)
                        rr = row_of[jl]
                        if rr < 0:
                            missing[part] += 1
                            continue
                        if _near_node(start[0] + step[0] * jh, start[1] + step[1] * jk,
                                      start[2] + step[2] * jl, bragg, G):
                            continue
                        w = np.float64(W[rr, jk, jh])
                        s = np.float64(S[rr, jk, jh])
                        v = np.float64(V[rr, jk, jh])
                        if w > 0 and math.isfinite(s) and math.isfinite(v) and v > 0:
                            vals[nm] = s / w
                            wts[nm] = w * w / v  # 1 / sigma^2
                            nm += 1
                    if nm < 2:
                        continue
                    sw = 0.0
                    swi = 0.0
                    for m in range(nm):
                        sw += wts[m]
                        swi += wts[m] * vals[m]
                    mean = swi / sw
                    chi2 = 0.0
                    for m in range(nm):
                        d = vals[m] - mean
                        chi2 += wts[m] * d * d
                    a[_ORB, f] += 1.0
                    a[_OBS, f] += nm
                    a[_CHI2, f] += chi2
                    a[_NU, f] += nm - 1
    return missing.sum()


@numba.njit(parallel=True, cache=True)
def _cc_kernel(SA, WA, SB, WB, rows_plane, start, step, G, q3span, nfine, bragg, acc):
    """Accumulate n, sum I_A, sum I_B, sum I_A^2, sum I_B^2, sum I_A I_B of the voxels
    measured in both halves into acc [parts, _NCC, nfine + 1] (row r into part
    r % parts)."""
    nrows, nk, nh = SA.shape
    nparts = acc.shape[0]
    for part in numba.prange(nparts):
        a = acc[part]
        for r in range(part, nrows, nparts):
            x2 = start[2] + step[2] * rows_plane[r]
            for ik in range(nk):
                x1 = start[1] + step[1] * ik
                for ih in range(nh):
                    wa = np.float64(WA[r, ik, ih])
                    wb = np.float64(WB[r, ik, ih])
                    if not (wa > 0 and wb > 0):
                        continue
                    x0 = start[0] + step[0] * ih
                    if _near_node(x0, x1, x2, bragg, G):
                        continue
                    ia = np.float64(SA[r, ik, ih]) / wa
                    ib = np.float64(SB[r, ik, ih]) / wb
                    if not (math.isfinite(ia) and math.isfinite(ib)):
                        continue
                    f = _fine_bin(x0, x1, x2, G, q3span, nfine)
                    a[_CCN, f] += 1.0
                    a[_CCA, f] += ia
                    a[_CCB, f] += ib
                    a[_CCAA, f] += ia * ia
                    a[_CCBB, f] += ib * ib
                    a[_CCAB, f] += ia * ib
