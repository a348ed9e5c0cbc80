"""hklflow.codec: the chunk framing and its checks, the library codec (the bitshuffle
package's public functions), the compiled codec against it, the choice between them
(HKLFLOW_CODEC), and the raw-chunk reader on damaged chunks."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap

import bitshuffle
import numpy as np
import pytest

from hklflow.codec import framing
from hklflow.codec.compiled import OWN_UNTRANSPOSE, compress, decompress
from hklflow.codec.library import LibraryCodec

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
    from hklflow.codec.compiled import _planes_needed

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
        from hklflow.codec import compiled as b
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
    from hklflow.codec.compiled import block_positions, decompress_elements
    from hklflow.codec.framing import block_count

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
        from hklflow.codec.compiled import block_positions, decompress, decompress_elements
        from hklflow.codec.framing import block_count
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


# ------------------------------------------------------------------------------------------
# The framing, the library codec, the choice
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype, n, block", CASES)
def test_library_codec_is_bitshuffles_public_functions(dtype, n, block):
    """decode gives the data and uses the whole stream; encode writes bitshuffle's bytes;
    an output too small is refused."""
    data = random_values(dtype, n, n + 2)
    stream = stream_of(data, block)
    codec = LibraryCodec()
    out = np.full(data.shape, 3, data.dtype)
    assert codec.decode(stream, out, block) == stream.size
    assert out.tobytes() == data.tobytes()
    room = np.zeros(stream.size + 64, np.uint8)
    assert codec.encode(data, room, block) == stream.size
    assert room[:stream.size].tobytes() == stream.tobytes()
    assert codec.encode(data, room[:stream.size - 1], block) < 0


def test_a_damaged_stream_is_refused_by_the_library_codec_before_bitshuffle_reads_it():
    """bitshuffle's decoder trusts the block sizes: cut anywhere or with a size field
    changed, the stream is refused (blocks_fit) instead of read past its end."""
    data = np.random.default_rng(3).poisson(40.0, 2048 * 2 + 77).astype(np.int32)
    stream = stream_of(data, 2048)
    codec = LibraryCodec()
    out = np.empty_like(data)
    for cut in list(range(0, 40)) + list(range(40, stream.size, 97)) + [stream.size - 1]:
        assert codec.decode(stream[:cut].copy(), out, 2048) < 0, cut
    first = int.from_bytes(stream[:4].tobytes(), "big")
    for size in (first + 1, first - 1, 0, 2 ** 32 - 1):
        bad = stream.copy()
        bad[:4] = np.frombuffer(size.to_bytes(4, "big"), np.uint8)
        assert codec.decode(bad, out, 2048) < 0, size
    assert codec.decode(stream, out, 2047) < 0  # not a multiple of 8 elements
    assert codec.decode(stream, out, 2048) == stream.size
    np.testing.assert_array_equal(out, data)


@pytest.mark.parametrize("dtype", ["uint8", "int16", "int32", "float32", "float64"])
def test_default_block_and_header_are_what_hdf5s_filter_writes(tmp_path, dtype):
    """default_block_elements and chunk_header: the 12 bytes hdf5plugin's bitshuffle filter
    writes before a chunk it compresses with its default block (and read_header reads
    them back)."""
    import h5py
    import hdf5plugin

    data = random_values(dtype, 3 * 5000, 1).reshape(3, 5000)
    with h5py.File(tmp_path / "f.h5", "w") as f:
        d = f.create_dataset("d", data=data, chunks=(1, 5000),
                             **hdf5plugin.Bitshuffle(cname="lz4"))
        assert framing.bitshuffle_lz4_only(d)
        _, raw = d.id.read_direct_chunk((1, 0))
    block = framing.default_block_elements(data.itemsize)
    raw = np.frombuffer(raw, np.uint8)
    assert raw[:12].tobytes() == framing.chunk_header(data[1].nbytes, block,
                                                      data.itemsize).tobytes()
    assert framing.read_header(raw, data.itemsize) == (data[1].nbytes, block)
    assert raw[12:].tobytes() == stream_of(data[1], block).tobytes()


@pytest.mark.parametrize("codec", ["library", "compiled"])
def test_a_damaged_chunk_is_an_error_naming_file_and_chunk(tmp_path, codec):
    """A chunk cut short or with a block of garbage: a FileFormatError naming the file, the
    dataset and the chunk, from either codec (HDF5's filter would read past its end)."""
    import h5py
    import hdf5plugin

    from hklflow.base.errors import FileFormatError
    from hklflow.codec import active_codec, read_chunk
    from hklflow.codec.choice import _chosen

    _chosen.cache_clear()
    os.environ["HKLFLOW_CODEC"] = codec
    try:
        chosen = active_codec()
    finally:
        del os.environ["HKLFLOW_CODEC"]
    assert chosen.name == codec
    data = np.random.default_rng(1).poisson(5.0, (2, 64, 70)).astype(np.int32)
    path = tmp_path / "frames.h5"
    with h5py.File(path, "w") as f:
        d = f.create_dataset("data", data=data, chunks=(1, 64, 70),
                             **hdf5plugin.Bitshuffle(cname="lz4"))
        _, good = d.id.read_direct_chunk((1, 0, 0))
        d.id.write_direct_chunk((1, 0, 0), good[:len(good) - 9])
    with h5py.File(path) as f:
        d = f["data"]
        out = np.empty((1, 64, 70), np.int32)
        raw = np.empty(len(good), np.uint8)
        size = d.id.get_chunk_info_by_coord((0, 0, 0)).size
        assert read_chunk(d, (0, 0, 0), raw[:size], out, chosen)
        np.testing.assert_array_equal(out[0], data[0])
        with pytest.raises(FileFormatError, match=r"frames\.h5: the chunk at \(1, 0, 0\) of "
                                                  r"/data is damaged"):
            read_chunk(d, (1, 0, 0), raw[:len(good) - 9], out, chosen)
    with h5py.File(path, "r+") as f:  # the sizes add up, a block's bytes are garbage
        bad = np.frombuffer(good, np.uint8).copy()
        bad[20:60] = 0xFF
        f["data"].id.write_direct_chunk((1, 0, 0), bad.tobytes())
    with h5py.File(path) as f, pytest.raises(FileFormatError, match="damaged"):
        read_chunk(f["data"], (1, 0, 0), raw, out, chosen)


def _fresh_choice(monkeypatch, value):
    from hklflow.codec import choice

    choice._chosen.cache_clear()
    monkeypatch.setenv("HKLFLOW_CODEC", value)
    return choice


def test_auto_falls_back_to_the_library_with_one_log_line(monkeypatch, caplog):
    """HKLFLOW_CODEC=auto where the compiled codec cannot load (its import fails, as for a
    bitshuffle build without the symbols) or fails its self-test: the library codec, and
    one warning that says why; =compiled: an error that says why; =library: the compiled
    module is not even imported."""
    import sys

    from hklflow.codec import compiled

    choice = _fresh_choice(monkeypatch, "auto")
    assert choice.active_codec().name == "compiled"  # (this machine: it loads)
    monkeypatch.setitem(sys.modules, "hklflow.codec.compiled", None)  # import fails
    choice = _fresh_choice(monkeypatch, "auto")
    with caplog.at_level("INFO", logger="hklflow.codec"):
        assert choice.active_codec().name == "library"
        assert choice.active_codec().name == "library"
    lines = [r for r in caplog.records if r.name == "hklflow.codec"]
    assert len(lines) == 1 and lines[0].levelname == "WARNING"
    assert "compiled codec is not used (ModuleNotFoundError" in lines[0].getMessage()
    choice = _fresh_choice(monkeypatch, "compiled")
    with pytest.raises(choice.CodecUnavailable, match="HKLFLOW_CODEC=compiled.*NotFoundError"):
        choice.active_codec()
    monkeypatch.setitem(sys.modules, "hklflow.codec.compiled", compiled)
    monkeypatch.setattr(compiled, "self_test", lambda library: "decoding 1 int32 differs")
    choice = _fresh_choice(monkeypatch, "auto")
    caplog.clear()
    with caplog.at_level("INFO", logger="hklflow.codec"):
        assert choice.active_codec().name == "library"
    assert "self-test failed: decoding 1 int32 differs" in caplog.text
    choice = _fresh_choice(monkeypatch, "nonsense")
    with pytest.raises(choice.CodecUnavailable, match="auto, compiled, library"):
        choice.active_codec()
    choice._chosen.cache_clear()


def test_the_self_test_passes_and_finds_a_wrong_untranspose(monkeypatch):
    """The compiled codec's self-test passes here, and fails where its untranspose gives
    other bytes (the choice between ours and bitshuffle's made wrongly)."""
    from hklflow.codec import compiled

    assert compiled.self_test(LibraryCodec()) is None
    right = compiled.decompress

    def wrong(stream, out, itemsize, block, own):
        used = right(stream, out, itemsize, block, own)
        out[-1] ^= 1
        return used
    monkeypatch.setattr(compiled, "decompress", wrong)
    assert "differs" in compiled.self_test(LibraryCodec())


IMPORT_ALL = """
import importlib, pkgutil, sys
import hklflow
for m in pkgutil.walk_packages(hklflow.__path__, "hklflow."):
    fast_path = m.name in ("hklflow.codec.compiled", "hklflow.algorithms.transform.stream_kernels")
    if not fast_path and not m.name.endswith("__main__"):
        importlib.import_module(m.name)
assert "hklflow.codec.compiled" not in sys.modules, "imported at module level"
assert "hklflow.algorithms.transform.stream_kernels" not in sys.modules, "imported at module level"
print("no private symbols")
"""


def test_importing_hklflow_never_loads_the_compiled_codec():
    """Every module of hklflow (the transform and the steps included) imports without the
    compiled codec: only the chooser loads it, on first use (and the fused kernel's module,
    transform.stream_kernels, which the transform imports at the first frames given as stored)."""
    run = subprocess.run([sys.executable, "-c", IMPORT_ALL], capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "no private symbols" in run.stdout


BROKEN_COMPILED_STEP = """
import sys
sys.modules["hklflow.codec.compiled"] = None  # as a bitshuffle build without the symbols
from hklflow.commands.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_a_step_runs_on_the_library_codec_where_the_compiled_one_cannot_load(
        tiny_300k, tmp_path):
    """find_peaks (the step that streams every frame through the codec) where the compiled
    codec's import fails: it runs on the library codec, says so in one log line, and finds
    the peaks the compiled codec's run found, value for value."""
    import h5py

    from conftest import step_settings

    d = tiny_300k / "results/tiny/300K/f1"
    out = tmp_path / "peaks.nxs"
    run = subprocess.run(
        [sys.executable, "-c", BROKEN_COMPILED_STEP, "find_peaks", "--settings",
         step_settings(tiny_300k, "find_peaks"), "--scan", str(d / "scan.nxs"), "--out",
         str(out), "--png", str(tmp_path / "peaks.png")],
        capture_output=True, text=True, timeout=600, cwd=tiny_300k)
    assert run.returncode == 0, run.stderr[-3000:]
    said = [line for line in (run.stdout + run.stderr).splitlines()
            if "compiled codec is not used" in line]
    assert len(said) == 1 and "ModuleNotFoundError" in said[0], run.stderr[-3000:]

    def arrays(path):
        found = {}
        with h5py.File(path) as f:
            f.visititems(lambda name, obj: found.__setitem__(name, obj[()]) if isinstance(
                obj, h5py.Dataset) and obj.dtype.kind in "iufb" else None)
        return found
    mine, theirs = arrays(out), arrays(d / "peaks.nxs")
    assert mine.keys() == theirs.keys() and len(mine) > 3
    for name, values in theirs.items():
        np.testing.assert_array_equal(mine[name], values, err_msg=name)


@pytest.mark.slow
def test_the_library_codec_gives_the_tiny_experiments_outputs_bit_for_bit(
        tiny_run, tmp_path_factory, monkeypatch):
    """The tiny experiment reduced end to end with HKLFLOW_CODEC=library (the bitshuffle
    package's functions: no compiled codec, no fused transform kernel) and by the default
    run (tiny_run: the compiled codec where it loads): every output equal value for value
    (.ci/slurm/compare_outputs.py, exact), the raw files untouched."""
    from pathlib import Path

    from conftest import run_snakemake

    default, done = tiny_run[0], tiny_run[1]
    assert done.returncode == 0, done.stderr[-3000:]
    library = tmp_path_factory.mktemp("tiny_library") / "experiment"
    shutil.copytree(default, library, ignore=shutil.ignore_patterns(
        "results", "logs", "benchmarks", ".snakemake"))
    monkeypatch.setenv("HKLFLOW_CODEC", "library")
    run = run_snakemake(library, "--cores", "2")
    assert run.returncode == 0, run.stderr[-3000:]
    logs = "".join(p.read_text() for p in (library / "logs").rglob("*.log"))
    assert "compiled codec is not used" not in logs  # (chosen, not fallen back to)
    compare = Path(__file__).resolve().parents[2] / ".ci" / "slurm" / "compare_outputs.py"
    result = subprocess.run([sys.executable, str(compare), str(default), str(library),
                             "--quiet"], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-5000:]
    assert "== outputs equal" in result.stdout
