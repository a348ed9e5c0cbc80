"""hklflow.files.bitshuffle_lz4: the compiled block loop against the bitshuffle package."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import bitshuffle
import numpy as np
import pytest

from hklflow.files.bitshuffle_lz4 import OWN_UNTRANSPOSE, compress, decompress
from numba_helpers import compiled_in_fresh_process, slice_assignment_checks


def stream_of(data: np.ndarray, block: int) -> np.ndarray:
    """bitshuffle's LZ4 stream of data (what follows the 12-byte HDF5 chunk header)."""
    return np.frombuffer(bitshuffle.compress_lz4(data.ravel(), block), np.uint8).copy()


CASES = [("int32", 2048 * 3, 2048), ("int32", 2048 * 3 + 713, 2048), ("uint16", 5003, 4096),
         ("float32", 7, 2048), ("float64", 1000, 256), ("int32", 3, 2048),
         ("uint8", 99999, 8192), ("int64", 640 + 24, 128), ("int16", 4096 + 136, 4096),
         ("int32", 2048 + 8, 2048)]


def random_values(dtype, n: int, seed: int) -> np.ndarray:
    """Counts and zeros, some negative, some using every bit (all 8 x itemsize bit rows)."""
    rng = np.random.default_rng(seed)
    data = (rng.poisson(30.0, n) * rng.integers(0, 3, n)).astype(dtype)
    wild = rng.integers(0, 256, n * data.itemsize, dtype=np.uint8).view(data.dtype)
    pick = rng.random(n) < 0.2
    data[pick] = wild[pick]
    if np.issubdtype(data.dtype, np.floating):
        data[~np.isfinite(data)] = 0
    return data


@pytest.mark.parametrize("own_untranspose", [False, True])
@pytest.mark.parametrize("dtype, n, block", CASES)
def test_equals_bitshuffles_own_decompression(dtype, n, block, own_untranspose):
    """Whole blocks, a shorter last block (a multiple of 64 elements or not: ours or
    bitshuffle's untranspose), the last n % 8 elements stored as they are, fewer elements
    than one multiple of 8, item sizes 1 to 8: the numbers bitshuffle.decompress_lz4 gives,
    and the whole stream used, with either bit-untranspose."""
    data = random_values(dtype, n, n)
    stream = stream_of(data, block)
    out = np.full(data.nbytes, 0xAB, np.uint8)
    assert decompress(stream, out, data.itemsize, block, own_untranspose) == stream.size
    expect = bitshuffle.decompress_lz4(stream, data.shape, data.dtype, block)
    np.testing.assert_array_equal(out.view(dtype), expect)
    np.testing.assert_array_equal(out.view(dtype), data)


@pytest.mark.parametrize("dtype, n, block", CASES)
def test_compress_writes_bitshuffles_stream(dtype, n, block):
    """With acceleration 1, the bytes of bitshuffle.compress_lz4; with more, another stream
    that bitshuffle and decompress() read back to the same numbers; an output too small
    for the stream: refused, nothing written past it."""
    data = random_values(dtype, n, n + 1)
    raw = data.view(np.uint8)
    want = stream_of(data, block)
    out = np.full(want.size + 4096, 0xAB, np.uint8)
    assert compress(raw, out, data.itemsize, block, 1) == want.size
    np.testing.assert_array_equal(out[:want.size], want)
    for acceleration in (4, 100):
        size = compress(raw, out, data.itemsize, block, acceleration)
        assert 0 < size <= out.size
        back = np.empty(data.nbytes, np.uint8)
        assert decompress(out[:size].copy(), back, data.itemsize, block, False) == size
        np.testing.assert_array_equal(back.view(dtype), data)
        np.testing.assert_array_equal(
            bitshuffle.decompress_lz4(out[:size].copy(), data.shape, data.dtype, block), data)
    short = np.full(want.size + 16, 0xAB, np.uint8)
    assert compress(raw, short[:want.size // 2], data.itemsize, block, 1) < 0
    assert (short[want.size // 2:] == 0xAB).all()


def narrow_blocks(dtype, block: int) -> np.ndarray:
    """Blocks of `block` small counts with -1 in places (module gaps), one of them at each
    boundary of the values that 1 and 2 bytes hold, all zeros, all -1 (as the dtype's bit
    patterns: unsigned ones wrap)."""
    rng = np.random.default_rng(11)
    blocks = []
    for extra in (None, 127, -128, 128, -129, 32767, -32768, 32768, -32769, 2 ** 31 - 1,
                  "zeros", "ones"):
        counts = rng.poisson(3.0, block)
        counts[rng.integers(0, block, 5)] = -1
        if extra == "zeros":
            counts[:] = 0
        elif extra == "ones":
            counts[:] = -1
        elif extra is not None:
            counts[rng.integers(0, block, 3)] = extra
        blocks.append(counts.astype(np.int64).astype(dtype))
    return np.concatenate(blocks)


def planes_by_value(block: np.ndarray) -> int:
    """The byte planes a block needs, from its values read as signed integers of its size:
    1 or 2 where they all fit in int8 or int16, else every one."""
    signed = block.view(f"i{block.itemsize}").astype(np.int64)
    for planes in (1, 2):
        if planes < block.itemsize and np.all(np.abs(signed + 0.5) < 2 ** (8 * planes - 1)):
            return planes
    return block.itemsize


@pytest.mark.parametrize("dtype", ["int32", "uint32", "int16", "uint16", "float32"])
def test_only_the_byte_planes_a_block_needs_are_transposed(dtype):
    """Detector counts (small, -1 in the gaps) sign-extended from their lowest byte or two:
    only those planes are untransposed (one block at each boundary of 1, 2 and all
    planes, unsigned dtypes holding the same bit patterns); floats need every plane.  The
    same numbers as the data."""
    from hklflow.files.bitshuffle_lz4 import _planes_needed

    block = 2048
    if dtype == "float32":
        rng = np.random.default_rng(5)
        data = np.concatenate([rng.random(block) * 2, -rng.random(block), np.zeros(block),
                               rng.poisson(3.0, block)]).astype(np.float32)
        planes = [4, 4, 1, 4]  # (all zeros: 0 sign-extended from one byte)
    else:
        data = narrow_blocks(dtype, block)
        planes = [planes_by_value(b) for b in data.reshape(-1, block)]
        assert {1, data.itemsize} <= set(planes) and (2 in planes or data.itemsize == 2)
    found = [_planes_needed.py_func(
        np.frombuffer(bitshuffle.bitshuffle(b), np.uint8).view(np.uint64),
        block // 64, data.itemsize) for b in data.reshape(-1, block)]
    assert found == planes
    for own in (True, False):
        stream = stream_of(data, block)
        out = np.full(data.nbytes, 0xAB, np.uint8)
        assert decompress(stream, out, data.itemsize, block, own) == stream.size
        np.testing.assert_array_equal(out.view(dtype), data)


def test_own_untranspose_is_used_where_the_cpu_has_avx2():
    """The choice follows the CPU numba compiles for: AVX2, or GFNI with AVX-512 (checked
    here against /proc/cpuinfo where Linux has one)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next(line for line in f if line.startswith("flags")).split()
    except (OSError, StopIteration):
        pytest.skip("no /proc/cpuinfo")
    if os.environ.get("NUMBA_CPU_NAME") or os.environ.get("NUMBA_CPU_FEATURES"):
        pytest.skip("numba's target set by the environment")
    assert OWN_UNTRANSPOSE == ("avx2" in flags
                               or {"gfni", "avx512f", "avx512bw"}.issubset(flags))


def test_own_untranspose_without_gfni(tmp_path):
    """Compiled for a CPU without GFNI (x86-64-v3: AVX2), our untranspose, used there,
    transposes the bit matrices with shifts and masks: the same bytes (a process of its own,
    numba's target and cache set before it loads)."""
    if os.uname().machine not in ("x86_64", "AMD64"):
        pytest.skip("x86-64 targets only")
    script = textwrap.dedent("""
        import numpy as np, bitshuffle
        from hklflow.files import bitshuffle_lz4 as b
        assert b.OWN_UNTRANSPOSE and not b._has_gfni()
        for dtype in ("int32", "uint16", "uint8", "float64"):
            rng = np.random.default_rng(7)
            data = rng.integers(0, 256, 4096 * 8 + 8 * 19, np.uint8).view(dtype)
            stream = np.frombuffer(bitshuffle.compress_lz4(data, 1024), np.uint8).copy()
            out = np.empty(data.nbytes, np.uint8)
            assert b.decompress(stream, out, data.itemsize, 1024, True) == stream.size
            assert np.array_equal(out, data.view(np.uint8)), dtype
        for dtype in ("int32", "uint16"):  # blocks needing 1, 2 and all byte planes
            counts = np.random.default_rng(3).poisson(3.0, (3, 1024))
            counts[1, 7], counts[2, 9], counts[:, 5] = 300, 70000, -1
            data = counts.astype(dtype)
            stream = np.frombuffer(bitshuffle.compress_lz4(data.ravel(), 1024), np.uint8)
            out = np.empty(data.nbytes, np.uint8)
            assert b.decompress(stream.copy(), out, data.itemsize, 1024, True) == stream.size
            assert np.array_equal(out, data.view(np.uint8).ravel()), dtype
        print("same bytes")
    """)
    # x86-64-v3's features named (numba tells the kernels the features it is given)
    v3 = ("+64bit,+avx,+avx2,+bmi,+bmi2,+cmov,+cx16,+cx8,+f16c,+fma,+fxsr,+lzcnt,+mmx,"
          "+movbe,+popcnt,+sahf,+sse,+sse2,+sse3,+sse4.1,+sse4.2,+ssse3,+xsave")
    env = dict(os.environ, NUMBA_CPU_NAME="x86-64-v3", NUMBA_CPU_FEATURES=v3,
               NUMBA_CACHE_DIR=str(tmp_path))
    run = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                         text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "same bytes" in run.stdout


@pytest.mark.parametrize("own", [False, True])
def test_damaged_streams_are_refused_without_reading_past_them(own):
    """Cut anywhere, or with a block's size field made too large, too small or zero, the
    stream is refused (< 0) or, where the damage leaves it decodable, not used whole: never
    a read or write past the arrays (the scratch and the output are exact-sized)."""
    rng = np.random.default_rng(3)
    data = rng.poisson(40.0, 2048 * 2 + 77).astype(np.int32)
    stream = stream_of(data, 2048)
    out = np.empty(data.nbytes, np.uint8)
    for cut in list(range(0, 40)) + list(range(40, stream.size, 97)) + [stream.size - 1]:
        assert decompress(stream[:cut].copy(), out, 4, 2048, own) < 0, cut
    first = int.from_bytes(stream[:4].tobytes(), "big")
    for size in (first + 1, first - 1, 0, 2 ** 31 + 5, 2 ** 32 - 1):
        bad = stream.copy()
        bad[:4] = np.frombuffer(size.to_bytes(4, "big"), np.uint8)
        assert decompress(bad, out, 4, 2048, own) != stream.size, size
    assert decompress(stream, out, 4, 2047, own) == -81  # not a multiple of 8 elements
    assert decompress(stream, out, 4, 2 ** 29, own) < 0  # a damaged header's block size
    assert decompress(stream, out[:-1], 4, 2048, own) == -81  # not whole elements
    assert decompress(stream, np.empty(2 * out.size, np.uint8)[::2], 4, 2048, own) == -81
    assert decompress(stream, out, 4, 2048, own) == stream.size  # the stream itself is sound
    np.testing.assert_array_equal(out.view(np.int32), data)


@pytest.mark.parametrize("dtype, n, block", [c for c in CASES if c[0] in ("int32", "uint16",
                                                                           "int16")])
@pytest.mark.parametrize("own_untranspose", [True, False])
def test_elements_of_a_chunk_block_by_block(dtype, n, block, own_untranspose):
    """block_positions finds every block of chunks side by side in one stream, and
    decompress_elements gives any whole-block range of a chunk (the short last block and the
    last elements % 8, stored as they are, included), as the whole chunk decompressed."""
    from hklflow.files.bitshuffle_lz4 import block_count, block_positions, decompress_elements

    chunks = [random_values(dtype, n, seed) for seed in (1, 2, 3)]
    streams = [stream_of(c, block) for c in chunks]
    stops = np.cumsum([s.size for s in streams]).astype(np.int64) + 5
    starts = stops - np.array([s.size for s in streams])
    stream = np.concatenate([np.zeros(5, np.uint8)] + streams)  # (not at 0: offsets used)
    positions = np.empty((3, block_count(n, block) + 1), np.int64)
    assert block_positions(stream, starts, stops, n, chunks[0].itemsize, block, positions) == 0
    scratch = np.empty(block * chunks[0].itemsize, np.uint8)
    span = 2 * block
    for i, data in enumerate(chunks):
        for first in range(0, n, span):
            out = np.zeros(min(span, n - first), data.dtype)
            assert decompress_elements(stream, positions[i], n, data.itemsize, block, first,
                                       out.size, out.view(np.uint8), scratch,
                                       own_untranspose and OWN_UNTRANSPOSE) == 0
            assert np.array_equal(out, data[first:first + out.size])
    # a range that does not start or end on a block boundary is refused
    if n > block + 8:
        out = np.zeros(8, chunks[0].dtype)
        assert decompress_elements(stream, positions[0], n, out.itemsize, block, 8, 8,
                                   out.view(np.uint8), scratch, False) == -81
    # a block size that does not add up, a chunk cut short: the chunk's number, from -1
    for bad_stops, first_bad in ((stops - np.array([0, 1, 0]), 1),
                                 (stops + np.array([0, 0, 3]), 2)):
        assert block_positions(stream, starts, bad_stops, n, chunks[0].itemsize, block,
                               positions) == -1 - first_bad


def test_a_cold_compile_has_no_slice_assignment_check(tmp_path):
    """The kernels copy the bytes stored as they are with a loop, not `a[i:j] = b[k:l]`:
    numba compiles a slice assignment's shape check with a formatted message, 2-3 CPU-s of
    every process that compiles (a fresh cache: the first find_peaks and transform_frames
    jobs after an install)."""
    compiled = compiled_in_fresh_process("""
        import bitshuffle
        import numpy as np
        from hklflow.files.bitshuffle_lz4 import (block_count, block_positions, decompress,
                                                  decompress_elements)
        data = np.arange(2048 + 13, dtype=np.int32)  # the last 5 elements stored as they are
        stream = np.frombuffer(bitshuffle.compress_lz4(data, 2048), np.uint8).copy()
        out = np.empty(data.nbytes, np.uint8)
        assert decompress(stream, out, 4, 2048, True) == stream.size
        assert np.array_equal(out.view(np.int32), data)
        positions = np.empty((1, block_count(data.size, 2048) + 1), np.int64)
        starts, stops = np.array([0]), np.array([stream.size])
        assert block_positions(stream, starts, stops, data.size, 4, 2048, positions) == 0
        out[:] = 0
        assert decompress_elements(stream, positions[0], data.size, 4, 2048, 0, data.size,
                                   out, np.empty(2048 * 4, np.uint8), True) == 0
        assert np.array_equal(out.view(np.int32), data)
    """, tmp_path)
    assert "decompress" in compiled and "decompress_elements" in compiled
    assert not slice_assignment_checks(compiled), compiled
