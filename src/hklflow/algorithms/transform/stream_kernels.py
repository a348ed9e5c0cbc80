"""The kernel fused with the compiled bitshuffle-LZ4 decoder: frames added from their stored
chunks, each block of pixels decompressed just before it is added.  Imported only where the
compiled codec is in use (it imports codec.compiled: the driver imports this module at the
first frames given as stored).  Its compiled code holds kernels.py's inlined: numba's cache
of this file is keyed on this file alone, so a change there must touch this docstring."""
from __future__ import annotations

import numba
import numpy as np

from ...codec.compiled import OWN_UNTRANSPOSE, block_positions, decompress_elements
from .kernels import (_add_mixed_block, _compute_values, _dump_slots, _scatter_block,
                      _share_of_block, _unit)
from .pixels import BLOCK

__all__ = ["OWN_UNTRANSPOSE", "accumulate_stream", "block_positions"]


@numba.njit(nogil=True, cache=True, error_model="numpy")
def accumulate_stream(stream, positions, elements, block, own_untranspose, values, scratch,
                      qx, qy, qz, corr, M, scale, value_max, bragg, bragg_blocks, allowed,
                      allowed_off, hkl_r2, origin, inv_step, dims, nbricks, q_max, size, cells,
                      second, live, sub_first, sub_count, gain, var, half, half_frames,
                      share=None):
    """_accumulate (one kind, or two in paired cells; all the work or a thread's share)
    with the frames given as their bitshuffle-LZ4 chunks (codec.CompressedFrames;
    positions: their block_positions): each block of pixels of a frame is decompressed
    into `values` (BLOCK elements of the frames' type) just before it is worked on, so the
    frames are never written to memory whole and read back (a thread's share: the part of
    the block that holds its runs).  The same sums as _accumulate on the frames
    decompressed (a block of no usable pixel is not decompressed either).  Returns 0, or
    -1 - f when a block of chunk f is damaged (nothing added from it on).  half,
    half_frames, gain, var, corr: _accumulate's (gain < 0: the variance from the expected
    counts, kernels.kernel_gain; corr with a plate's factor per pixel and frame).  (Numba's
    cache of this function holds kernels' inlined _compute_values but is keyed on this file
    alone: a change there needs one here.)"""
    nf = positions.shape[0]
    nsub = M.shape[1]
    dump = _dump_slots(size, share)
    idx = np.empty(BLOCK, np.int32)
    val = np.empty(BLOCK, np.float32)
    punch = np.zeros(BLOCK, np.int32)
    state = np.zeros((2, BLOCK), np.int32)  # (the variance's runs of sub-steps)
    raw = values.view(np.uint8)
    nunits = nf * nsub * ((elements + BLOCK - 1) // BLOCK)
    for u in range(nunits):
        f, j, p0, n = _unit(u, nf, nsub, elements)
        b = p0 // BLOCK
        steps = sub_count[b]
        if live[b] == 0 or j < sub_first[b] or j >= sub_first[b] + steps:
            continue
        w32 = np.float32(1.0 / steps)
        in_half = False
        if half is not None:
            in_half = half_frames[f] != 0
        mixed = False
        a = 0  # the pixels of the block to decompress: [a, c)
        c = n
        if share is not None:
            r0, r1, mixed = _share_of_block(share, p0 // BLOCK)
            if r0 == r1:
                continue
            if mixed:  # the part of the block that holds the runs, in whole blocks
                a = share[1][r0] // block * block
                c = min(-(-share[2][r1 - 1] // block) * block, n)
        if j == sub_first[b] and decompress_elements(stream, positions[f], elements,
                                                     values.itemsize, block, p0 + a, c - a,
                                                     raw[a * values.itemsize:], scratch,
                                                     own_untranspose) < 0:
            return -1 - f
        if mixed:
            if in_half:
                _add_mixed_block(f, j, steps, p0, n, values[:n], r0, r1, share, qx, qy, qz, corr,
                                 M, scale, value_max, bragg, bragg_blocks, allowed, allowed_off,
                                 hkl_r2, origin, inv_step, dims, nbricks, q_max, size, second,
                                 dump, idx, val, var, gain, state, j == sub_first[b], punch, w32,
                                 cells, half)
            else:
                _add_mixed_block(f, j, steps, p0, n, values[:n], r0, r1, share, qx, qy, qz, corr,
                                 M, scale, value_max, bragg, bragg_blocks, allowed, allowed_off,
                                 hkl_r2, origin, inv_step, dims, nbricks, q_max, size, second,
                                 dump, idx, val, var, gain, state, j == sub_first[b], punch, w32,
                                 cells, None)
            continue
        n = _compute_values(f, j, steps, p0, n, values[:n], qx, qy, qz, corr, M, scale,
                            value_max, bragg, bragg_blocks, allowed, allowed_off, hkl_r2, origin,
                            inv_step, dims, nbricks, q_max, size, second, dump, idx, val,
                            (var, gain, state, j == sub_first[b]), punch)
        if in_half:
            _scatter_block(idx, val, var, n, w32, cells, half)
        else:
            _scatter_block(idx, val, var, n, w32, cells, None)
    return 0
