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
