"""Bitshuffle-LZ4 chunks decompressed block by block in a compiled loop that calls the
bitshuffle package's own C functions (LZ4_decompress_safe, bshuf_untrans_bit_elem).

bshuf_decompress_lz4 runs the same two functions per block, but through an OpenMP loop
(dynamic schedule, a lock per block) even on one thread: a 2M frame (1209 blocks of 8 KB)
read and decompressed in 2.46-2.69 CPU-ms with it, 2.07-2.22 here (bench frames, four
alternating passes of 400).  The stream (after the 12-byte HDF5 chunk header): per
block of `block` elements (the last one shorter, a multiple of 8), its compressed size
(uint32, big-endian) and its LZ4 block; then the last elements % 8 elements as they are.

Used by files.h5.decompress_chunk(compiled=True), which the steps that stream whole scans
or volumes ask for (their kernels load numba anyway; loading it for a few chunks would cost
more than it saves)."""
from __future__ import annotations

import ctypes

import llvmlite.binding as llvm
import numba
import numpy as np
from numba import types

from .h5 import bitshuffle_library

_NAMES = {"hklflow_lz4_decompress_safe": "LZ4_decompress_safe",
          "hklflow_bshuf_untrans_bit_elem": "bshuf_untrans_bit_elem"}


def _register(lib) -> None:
    # the compiled code calls them by these names: a cached function finds them again in
    # the next process, wherever the library is loaded (no address is cached)
    for alias, name in _NAMES.items():
        llvm.add_symbol(alias, ctypes.cast(getattr(lib, name), ctypes.c_void_p).value)


_register(bitshuffle_library())

# (pointers as integers: the same registers in the x86-64 and AArch64 calling conventions)
_lz4_decompress_safe = types.ExternalFunction(  # (source, destination, its size, capacity)
    "hklflow_lz4_decompress_safe",
    types.int32(types.uintp, types.uintp, types.int32, types.int32))
_untrans_bit_elem = types.ExternalFunction(  # (in, out, elements, element size)
    "hklflow_bshuf_untrans_bit_elem",
    types.int64(types.uintp, types.uintp, types.uintp, types.uintp))

BLOCKED_MULT = 8  # bitshuffle's blocks hold a multiple of 8 elements


@numba.njit(cache=True, nogil=True)
def decompress(stream, out, itemsize, block):
    """Decompress the bitshuffle-LZ4 stream (uint8, the chunk after its 12-byte header) into
    out (uint8, C order, the uncompressed bytes) with blocks of `block` elements of itemsize
    bytes.  Returns the bytes of stream used (all of it for a sound chunk), < 0 when it is
    damaged (bshuf_decompress_lz4's meaning); never reads or writes past either array."""
    if itemsize <= 0 or block <= 0 or block % BLOCKED_MULT or out.size % itemsize:
        return -81
    if not (stream.flags.c_contiguous and out.flags.c_contiguous):  # (raw pointers below)
        return -81
    n = stream.size
    elements = out.size // itemsize
    largest = min(block, elements) * itemsize  # (a damaged header's block size: no larger)
    if largest > 2147483647:
        return -81
    scratch = np.empty(largest, np.uint8)
    full, last = divmod(elements, block)
    last -= last % BLOCKED_MULT
    pos = 0
    done = 0
    for i in range(full + 1):
        size = block if i < full else last
        if size == 0:
            break
        nbytes = size * itemsize
        if pos + 4 > n:
            return -1
        packed = ((np.int64(stream[pos]) << 24) | (np.int64(stream[pos + 1]) << 16)
                  | (np.int64(stream[pos + 2]) << 8) | np.int64(stream[pos + 3]))
        pos += 4
        if packed > n - pos or packed > 2147483647:
            return -1
        got = _lz4_decompress_safe(stream.ctypes.data + pos, scratch.ctypes.data,
                                   np.int32(packed), np.int32(nbytes))
        if got != nbytes:
            return -91
        err = _untrans_bit_elem(scratch.ctypes.data, out.ctypes.data + done, size, itemsize)
        if err < 0:
            return err
        pos += packed
        done += nbytes
    left = out.size - done  # the elements after the last whole multiple of 8, as they are
    if left > n - pos:
        return -1
    out[done:] = stream[pos:pos + left]
    return pos + left
