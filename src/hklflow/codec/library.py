"""The baseline codec: the bitshuffle package's public functions (bitshuffle.decompress_lz4,
bitshuffle.compress_lz4), which work wherever the package installs.  They return new arrays:
decoding copies the numbers once more into the caller's buffer (what that copy costs:
bench/cpu_kernels.py codec).  bitshuffle's decoder trusts the block sizes, so a chunk's
framing is checked first (framing.blocks_fit): a damaged chunk is refused, never read past."""
from __future__ import annotations

import numpy as np

from .framing import blocks_fit


class LibraryCodec:
    """decode / encode of bitshuffle-LZ4 streams (chunks after their 12-byte header) with
    the bitshuffle package's public functions."""

    name = "library"
    fused = False  # no block-by-block decoding inside compiled kernels (CompiledCodec's)

    def __init__(self):
        # (here: without the bitshuffle package this codec cannot be made, and frames are
        # read through HDF5's filter instead: codec.choice)
        import bitshuffle

        self._decompress, self._compress = bitshuffle.decompress_lz4, bitshuffle.compress_lz4

    def decode(self, stream: np.ndarray, out: np.ndarray, block: int) -> int:
        """The stream (uint8) into out (C-contiguous, its dtype the elements') in blocks of
        `block` elements: the bytes of stream used (all of it), < 0 when it is damaged."""
        if not out.flags.c_contiguous or not blocks_fit(stream, out.size, out.itemsize, block):
            return -1
        try:
            values = self._decompress(np.ascontiguousarray(stream, np.uint8), (out.size,),
                                      out.dtype, block)
        except (RuntimeError, ValueError):  # a block that does not decode
            return -1
        np.copyto(out.reshape(-1), values)
        return stream.size

    def encode(self, data: np.ndarray, out: np.ndarray, block: int) -> int:
        """The stream of data (C-contiguous, its dtype the elements') in blocks of `block`
        elements into out (uint8): the bytes written, < 0 when out is too small."""
        stream = self._compress(data.reshape(-1), block)
        if stream.size > out.size:
            return -1
        out[:stream.size] = stream
        return stream.size
