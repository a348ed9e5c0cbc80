"""Compiled loops over the float32 slabs and chunks of volumes: what the volume files'
reader and writer (hklflow.files.volume) and the sums of volumes (hklflow.algorithms.merge.volumes) run.
A module of its own so that numba (a noticeable part of a short step's time to import and
compile) is loaded only by the steps that call one of them: the steps that only read
headers or slices of volumes (pictures, temperature series, the NXRefine wrapper,
calibration, indexing) never do."""
from __future__ import annotations

import numba
import numpy as np


@numba.njit(cache=True, nogil=True)
def slab_sums(signal, weight, intensity, with_intensity, signal32, weight32, store):
    """One pass over a slab (C order): the intensity signal / weight (NaN where the weight
    is 0) into `intensity` when with_intensity, and the measured voxels, the weight and
    signal sums (float64) of the values rounded to float32; when store, those float32
    values into signal32/weight32 too (a float64 sum's slab; for float32 slabs pass them
    with store False), where numpy would take five passes."""
    s = signal.reshape(-1)
    w = weight.reshape(-1)
    s32 = signal32.reshape(-1)
    w32 = weight32.reshape(-1)
    out = intensity.reshape(-1)
    nan = np.float32(np.nan)
    measured = 0
    weight_sum = 0.0
    signal_sum = 0.0
    for i in range(s.size):
        wi = np.float32(w[i])
        si = np.float32(s[i])
        if store:
            s32[i] = si
            w32[i] = wi
        if with_intensity:
            out[i] = si / wi if wi > 0 else nan
        measured += wi > 0
        weight_sum += wi
        signal_sum += si
    return measured, weight_sum, signal_sum


@numba.njit(cache=True, nogil=True)
def chunk_stored(signal_bits, weight_bits, intensity_bits, with_intensity):
    """1 | 2 | 4 for those of a chunk's signal, weight and intensity (uint32 views) that
    hold a value other than their fill (0, 0, NaN) bit for bit: the ones to store."""
    nan = np.uint32(0x7FC00000)  # np.float32(np.nan): HDF5's fill for the intensity
    s = np.uint32(0)
    w = np.uint32(0)
    i = np.uint32(0)
    for m in range(signal_bits.size):  # from 0 and no early exit: vectorised
        s |= signal_bits[m]
        w |= weight_bits[m]
    if with_intensity:
        for m in range(intensity_bits.size):
            i |= intensity_bits[m] ^ nan
    return (1 if s else 0) | (2 if w else 0) | (4 if i else 0)


@numba.njit(cache=True, nogil=True)
def same_bits(a, b):
    """Whether two uint32 arrays of one size hold the same bits (vectorised: no exit)."""
    differ = np.uint32(0)
    for m in range(a.size):
        differ |= a[m] ^ b[m]
    return differ == 0


@numba.njit(cache=True, nogil=True, fastmath={"reassoc"})
def chunk_counts(signal, weight):
    """(voxels with weight > 0, float64 sums of weight and of signal) of a chunk, summed in
    any order (vectorised: the weights' sum is exact in any order, multiples of 1 / sub-
    steps; the signal's may differ in its last bits)."""
    measured = 0
    weight_sum = 0.0
    signal_sum = 0.0
    for m in range(signal.size):
        measured += weight[m] > np.float32(0.0)
        weight_sum += np.float64(weight[m])
        signal_sum += np.float64(signal[m])
    return measured, weight_sum, signal_sum


@numba.njit(cache=True, nogil=True)
def add_slab(acc_s, acc_w, signal, weight, first, count):
    """acc_s += signal, acc_w += weight (float32 into float64; set on the first input), in
    one pass; when count, also the input's measured voxels and its weight and signal sums."""
    a_s = acc_s.reshape(-1)
    a_w = acc_w.reshape(-1)
    s = signal.reshape(-1)
    w = weight.reshape(-1)
    measured = 0
    weight_sum = 0.0
    signal_sum = 0.0
    for i in range(s.size):
        si = np.float64(s[i])
        wi = np.float64(w[i])
        if first:
            a_s[i] = 0.0 + si
            a_w[i] = 0.0 + wi
        else:
            a_s[i] += si
            a_w[i] += wi
        if count:
            measured += wi > 0
            weight_sum += wi
            signal_sum += si
    return measured, weight_sum, signal_sum


# ---- the variance from the expected counts (issue 81: algorithms.merge.expected_variance) --
JEFFREYS_PHOTONS = 0.5  # the prior's photons over a neighbourhood (Jeffreys: rate^-1/2)
# a voxel whose own signal lies further than this many sigma from what its neighbours'
# intensity predicts takes its own intensity instead (a sharp feature: a Bragg peak)
OWN_BEYOND_SIGMA = 4.0
EXPECTED_VARIANCE_HOW = (
    "variance from the expected counts (reduction.transform.variance_from expected): u x I~, "
    "u = gain x sum of a (a = corrections x frame scale of each pixel-frame), I~ = (S + 0.5 "
    "U / W) / W over the 26 voxels around (S, W, U: their summed signal, weight and gain x "
    "sum of a; the voxel itself left out; the 0.5: the Jeffreys prior's half photon, so "
    "that sigma > 0 where nothing was counted); a voxel whose own signal lies more than 4 "
    "sigma from w I~ (or without measured neighbours) takes its own (s + 0.5 u / w) / w "
    "instead (sharp features: Bragg peaks)")


@numba.njit(cache=True, nogil=True)
def _expected_variance(S, W, U, first, out, prior, k2):
    """out[i] = u x I~ (algorithms.merge.expected_variance) of plane first + i of slabs S, W,
    U [planes, k, h] (any float type; sums in float64), its neighbours those of the slabs'
    planes (none beyond them); 0 where nothing was measured."""
    nl, nk, nh = S.shape[0], S.shape[1], S.shape[2]
    for i in range(out.shape[0]):
        p = first + i
        j0, j1 = max(p - 1, 0), min(p + 2, nl)
        for k in range(nk):
            k0, k1 = max(k - 1, 0), min(k + 2, nk)
            for h in range(nh):
                w0 = np.float64(W[p, k, h])
                if not (w0 > 0.0):
                    out[i, k, h] = 0.0
                    continue
                s0 = np.float64(S[p, k, h])
                u = np.float64(U[p, k, h])
                h0, h1 = max(h - 1, 0), min(h + 2, nh)
                s = 0.0
                w = 0.0
                uu = 0.0
                for j in range(j0, j1):
                    for kk in range(k0, k1):
                        for hh in range(h0, h1):
                            s += S[j, kk, hh]
                            w += W[j, kk, hh]
                            uu += U[j, kk, hh]
                s -= s0  # (its neighbours alone: its weight independent of its own counts)
                w -= w0
                uu -= u
                if w > 0.0:
                    inten = (s + prior * uu / w) / w
                else:  # (no measured neighbour)
                    inten = (s0 + prior * u / w0) / w0
                d = s0 - w0 * inten  # (its variance, were inten the truth: u x inten)
                if d * d > k2 * u * inten:  # not locally constant: its own intensity
                    inten = (s0 + prior * u / w0) / w0
                out[i, k, h] = u * inten


def variance_of_slab(S, W, U, first: int = 1, n: int | None = None, out=None) -> np.ndarray:
    """The variance of the signal of planes [first, first + n) (default: all but the first
    and the last) of slabs S, W, U [planes, k, h] of summed signal, weight and gain x sum of
    a (C order, float32 or float64), from the expected counts; the planes next to them in
    the slabs are their neighbours (give the grid's neighbouring planes there; none beyond
    the grid).  Into out (float32 or float64 [n, k, h]) when given, else a float64 array."""
    if not S.shape == W.shape == U.shape or S.ndim != 3:
        raise ValueError(f"slabs of one shape expected, got {S.shape}, {W.shape}, {U.shape}")
    n = S.shape[0] - first - 1 if n is None else int(n)
    if not (0 <= first and n >= 0 and first + n <= S.shape[0]):
        raise ValueError(f"planes [{first}, {first + n}) of a slab of {S.shape[0]}")
    if out is None:
        out = np.empty((n,) + S.shape[1:])
    S, W, U = (np.ascontiguousarray(a) for a in (S, W, U))
    _expected_variance(S, W, U, first, out, JEFFREYS_PHOTONS, OWN_BEYOND_SIGMA ** 2)
    return out
