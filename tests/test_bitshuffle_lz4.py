"""hklflow.files.bitshuffle_lz4: the compiled block loop against the bitshuffle package."""
from __future__ import annotations

import bitshuffle
import numpy as np
import pytest

from hklflow.files.bitshuffle_lz4 import decompress


def stream_of(data: np.ndarray, block: int) -> np.ndarray:
    """bitshuffle's LZ4 stream of data (what follows the 12-byte HDF5 chunk header)."""
    return np.frombuffer(bitshuffle.compress_lz4(data.ravel(), block), np.uint8).copy()


@pytest.mark.parametrize("dtype, n, block", [
    ("int32", 2048 * 3, 2048), ("int32", 2048 * 3 + 713, 2048), ("uint16", 5003, 4096),
    ("float32", 7, 2048), ("float64", 1000, 256), ("int32", 3, 2048), ("uint8", 99999, 8192)])
def test_equals_bitshuffles_own_decompression(dtype, n, block):
    """Whole blocks, a shorter last block, the last n % 8 elements stored as they are, fewer
    elements than one multiple of 8: the numbers bitshuffle.decompress_lz4 gives, and the
    whole stream used."""
    rng = np.random.default_rng(n)
    data = (rng.poisson(30.0, n) * rng.integers(0, 3, n)).astype(dtype)
    stream = stream_of(data, block)
    out = np.full(data.nbytes, 0xAB, np.uint8)
    assert decompress(stream, out, data.itemsize, block) == stream.size
    expect = bitshuffle.decompress_lz4(stream, data.shape, data.dtype, block)
    np.testing.assert_array_equal(out.view(dtype), expect)
    np.testing.assert_array_equal(out.view(dtype), data)


def test_damaged_streams_are_refused_without_reading_past_them():
    """Cut anywhere, or with a block's size field made too large, too small or zero, the
    stream is refused (< 0) or, where the damage leaves it decodable, not used whole: never
    a read or write past the arrays (the scratch and the output are exact-sized)."""
    rng = np.random.default_rng(3)
    data = rng.poisson(40.0, 2048 * 2 + 77).astype(np.int32)
    stream = stream_of(data, 2048)
    out = np.empty(data.nbytes, np.uint8)
    for cut in list(range(0, 40)) + list(range(40, stream.size, 97)) + [stream.size - 1]:
        assert decompress(stream[:cut].copy(), out, 4, 2048) < 0, cut
    first = int.from_bytes(stream[:4].tobytes(), "big")
    for size in (first + 1, first - 1, 0, 2 ** 31 + 5, 2 ** 32 - 1):
        bad = stream.copy()
        bad[:4] = np.frombuffer(size.to_bytes(4, "big"), np.uint8)
        assert decompress(bad, out, 4, 2048) != stream.size, size
    assert decompress(stream, out, 4, 2047) == -81  # not a multiple of 8 elements
    assert decompress(stream, out, 4, 2 ** 29) < 0  # a damaged header's block size
    assert decompress(stream, out[:-1], 4, 2048) == -81  # not whole elements
    assert decompress(stream, np.empty(2 * out.size, np.uint8)[::2], 4, 2048) == -81
    assert decompress(stream, out, 4, 2048) == stream.size  # the stream itself is sound
    np.testing.assert_array_equal(out.view(np.int32), data)
