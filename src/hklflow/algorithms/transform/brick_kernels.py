"""The compiled loops of the bricked grid (bricks.BrickedGrid): the dump slots gathered into
the grid, and a slab of bricks written out as a dense (L, K, H) slab."""
from __future__ import annotations

import numba
import numpy as np


@numba.njit(cache=True, nogil=True)
def _gather_chunk(cells, extra, first, written, extra_written, nkinds, l0, k0, h0, shape,
                  nbricks, b, stride, with_intensity, signal, weight, intensity, variance):
    """One chunk (L planes l0.., k0.., h0.., signal's shape[1:] [cl, ck, ch]) of nkinds
    kinds from the bricked cells (brick (L, K, H), then voxel (l, k, h) inside it; a
    voxel's signal and weight side by side) into signal[j], weight[j] and, with_intensity,
    intensity[j] = signal / weight, NaN where the weight is 0; the fill value beyond the
    grid; stride 3: variance[j] too (the voxel's third cell).  signal[0]: cells plus extra in the bricks extra_written marks (paired cells'
    first kind); signal[1] (two kinds: paired cells' second): cells alone.  written[brick -
    first]: 0 for a brick never written (zeros, not read)."""
    cl, ck, ch = signal.shape[1], signal.shape[2], signal.shape[3]
    nl, nk, nh = shape
    bk, bh = nbricks[1], nbricks[2]
    b3 = b * b * b
    zero = np.float32(0.0)
    nan = np.float32(np.nan)
    nli, nki, nhi = min(cl, nl - l0), min(ck, nk - k0), min(ch, nh - h0)
    if nli < cl or nki < ck or nhi < ch:  # an edge chunk: HDF5 stores it whole
        signal[:nkinds] = zero
        weight[:nkinds] = zero
        intensity[:nkinds] = nan
        variance[:nkinds] = zero
    # brick by brick in memory order (a brick's cells are contiguous, and so are the bricks
    # along h): in the chunk's order, row by row through 8 bricks, it took a fifth longer
    for L in range(l0 // b, (l0 + nli + b - 1) // b):
        la, lb = max(L * b, l0), min(L * b + b, l0 + nli)
        for K in range(k0 // b, (k0 + nki + b - 1) // b):
            ka, kb = max(K * b, k0), min(K * b + b, k0 + nki)
            for H in range(h0 // b, (h0 + nhi + b - 1) // b):
                ha, hb = max(H * b, h0), min(H * b + b, h0 + nhi)
                brick = (L * bk + K) * bh + H
                if written[brick - first] == 0:
                    for j in range(nkinds):
                        for l in range(la, lb):
                            for k in range(ka, kb):
                                for h in range(ha, hb):
                                    signal[j, l - l0, k - k0, h - h0] = zero
                                    weight[j, l - l0, k - k0, h - h0] = zero
                                    intensity[j, l - l0, k - k0, h - h0] = nan
                                    if stride == 3:
                                        variance[j, l - l0, k - k0, h - h0] = zero
                    continue
                both = extra_written.size > 0 and extra_written[brick - first] != 0
                for j in range(nkinds):
                    add = both and j == 0
                    for l in range(la, lb):
                        for k in range(ka, kb):
                            # cells of voxel (l, k, h): stride x its index in the bricks
                            c0 = stride * (brick * b3 + ((l - L * b) * b + k - K * b) * b
                                           - H * b)
                            i, kk = l - l0, k - k0
                            for h in range(ha, hb):
                                c = c0 + stride * h
                                s = cells[c]
                                w = cells[c + 1]
                                if add:
                                    s += extra[c]
                                    w += extra[c + 1]
                                if stride == 3:
                                    v = cells[c + 2]
                                    if add:
                                        v += extra[c + 2]
                                    variance[j, i, kk, h - h0] = v
                                signal[j, i, kk, h - h0] = s
                                weight[j, i, kk, h - h0] = w
                                if with_intensity:
                                    intensity[j, i, kk, h - h0] = s / w if w > zero else nan


@numba.njit(cache=True, nogil=True)
def _unbrick_slab(cells, extra, first, written, extra_written, l0, nbricks, b, stride, signal,
                  weight, variance, signal1, weight1, variance1):
    """signal[l, k, h], weight[l, k, h] (and variance: stride 3, not None) of L planes l0..
    from the bricked cells (brick (L, K, H), then voxel (l, k, h) inside it; a voxel's
    `stride` cells side by side), plus extra in the bricks extra_written marks (paired
    cells' first kind), and with signal1, weight1 (variance1) the cells alone too (paired
    cells' second kind), in the same pass.  written[brick - first]: 0 for a brick never
    written (zeros, not read)."""
    nl, nk, nh = signal.shape
    bk, bh = nbricks[1], nbricks[2]
    b3 = b * b * b
    zero = np.float32(0.0)
    for i in range(nl):
        L, il = divmod(l0 + i, b)
        for k in range(nk):
            K, ik = divmod(k, b)
            row = (L * bk + K) * bh * b3 + (il * b + ik) * b
            for H in range(bh):
                h0 = H * b
                brick = (L * bk + K) * bh + H
                if written[brick - first] == 0:
                    for ih in range(min(b, nh - h0)):
                        signal[i, k, h0 + ih] = zero
                        weight[i, k, h0 + ih] = zero
                        if variance is not None:
                            variance[i, k, h0 + ih] = zero
                        if signal1 is not None:
                            signal1[i, k, h0 + ih] = zero
                            weight1[i, k, h0 + ih] = zero
                            if variance1 is not None:
                                variance1[i, k, h0 + ih] = zero
                    continue
                j0 = stride * (row + H * b3)
                add = extra_written.size > 0 and extra_written[brick - first] != 0
                for ih in range(min(b, nh - h0)):
                    j = j0 + stride * ih
                    s = cells[j]
                    w = cells[j + 1]
                    if signal1 is not None:
                        signal1[i, k, h0 + ih] = s
                        weight1[i, k, h0 + ih] = w
                    if add:
                        s += extra[j]
                        w += extra[j + 1]
                    signal[i, k, h0 + ih] = s
                    weight[i, k, h0 + ih] = w
                    if variance is not None:
                        v = cells[j + 2]
                        if variance1 is not None:
                            variance1[i, k, h0 + ih] = v
                        if add:
                            v += extra[j + 2]
                        variance[i, k, h0 + ih] = v
