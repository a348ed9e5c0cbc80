"""The compiled codec, the optional fast path: bitshuffle-LZ4 chunks decoded block by block
in a compiled loop, with bitshuffle's own LZ4_decompress_safe per block, then the
bit-untranspose, on CPUs with AVX2 by our own code (with GFNI and AVX-512, one instruction
per eight bit matrices), elsewhere by bitshuffle's bshuf_untrans_bit_elem; encoded with
bshuf_trans_bit_elem and LZ4_compress_fast.  It also decodes single blocks inside other
compiled kernels (decompress_elements, block_positions: the transform's fused kernel).

Why: bshuf_decompress_lz4 runs the same two functions per block, but through an OpenMP
loop (a lock per block) even on one thread, and bitshuffle's untranspose is the larger part
of a frame's time; ours is faster where measured, and untransposes only the byte planes a
block's counts need (_planes_needed).  Figures: bench/cpu_kernels.py.

It binds functions that are not the bitshuffle package's public API (C symbols of its
extension, found by name in it) and emits LLVM intrinsics through numba: a wheel built
with hidden symbols or an llvmlite that renames an intrinsic breaks it.  So nothing imports
this module but hklflow.codec's chooser, on first use, and only after it passes a
self-test against the library codec (self_test) is it used; else the library codec is.
The stream's layout: hklflow.codec.framing."""
from __future__ import annotations

import ctypes

import llvmlite.binding as llvm
import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from ..base.numba_target import target_features
from .framing import BLOCKED_MULT, block_count


def _bitshuffle_library():
    """The bitshuffle package's compiled module as a C library (where its symbols are)."""
    # (here: the compiled library only where the compiled codec is chosen)
    import bitshuffle.ext

    return ctypes.CDLL(bitshuffle.ext.__file__)


_NAMES = {"hklflow_lz4_decompress_safe": "LZ4_decompress_safe",
          "hklflow_bshuf_untrans_bit_elem": "bshuf_untrans_bit_elem",
          "hklflow_lz4_compress_fast": "LZ4_compress_fast",
          "hklflow_bshuf_trans_bit_elem": "bshuf_trans_bit_elem"}


def _register(lib) -> None:
    # the compiled code calls them by these names: a cached function finds them again in
    # the next process, wherever the library is loaded (no address is cached)
    for alias, name in _NAMES.items():
        llvm.add_symbol(alias, ctypes.cast(getattr(lib, name), ctypes.c_void_p).value)


_register(_bitshuffle_library())

# (pointers as integers: the same registers in the x86-64 and AArch64 calling conventions)
_lz4_decompress_safe = types.ExternalFunction(  # (source, destination, its size, capacity)
    "hklflow_lz4_decompress_safe",
    types.int32(types.uintp, types.uintp, types.int32, types.int32))
_untrans_bit_elem = types.ExternalFunction(  # (in, out, elements, element size)
    "hklflow_bshuf_untrans_bit_elem",
    types.int64(types.uintp, types.uintp, types.uintp, types.uintp))

_lz4_compress_fast = types.ExternalFunction(  # (source, destination, size, capacity, accel.)
    "hklflow_lz4_compress_fast",
    types.int32(types.uintp, types.uintp, types.int32, types.int32, types.int32))
_trans_bit_elem = types.ExternalFunction(  # (in, out, elements, element size)
    "hklflow_bshuf_trans_bit_elem",
    types.int64(types.uintp, types.uintp, types.uintp, types.uintp))

ROW_GROUP = 64  # elements per step of our untranspose: 8 bytes of each row
_I8, _I32, _I64 = ir.IntType(8), ir.IntType(32), ir.IntType(64)


def _has_gfni(context=None) -> bool:
    return {"gfni", "avx512f", "avx512bw"} <= target_features(context)


def _transpose_bits_8x8(builder, x):
    """Each uint64 of x (<8 x i64>) as an 8x8 bit matrix, byte = row, transposed: bit j of
    byte i goes to bit i of byte j (Hacker's Delight, 7.3)."""
    def splat(v):
        return ir.Constant(x.type, [v] * 8)
    for shift, mask in ((7, 0x00AA00AA00AA00AA), (14, 0x0000CCCC0000CCCC),
                        (28, 0x00000000F0F0F0F0)):
        t = builder.and_(builder.xor(x, builder.lshr(x, splat(shift))), splat(mask))
        x = builder.xor(builder.xor(x, t), builder.shl(t, splat(shift)))
    return x


def _untranspose_group(itemsize: int, planes: int | None = None):
    """An intrinsic: elements e0 .. e0 + 63 of a bit-transposed block (src: its first byte,
    rows of rowbytes) into dst (the block's output, elements of itemsize bytes).  Per byte
    plane: row bytes e0 / 8 .. + 7 of its eight rows gathered as 8 x 8 bytes, transposed to
    one bit matrix per 8 elements (a byte shuffle) and each matrix bit-transposed
    (GF2P8AFFINEQB with the unit vectors; shifts and masks on CPUs without it); then the
    planes' bytes interleaved into elements (one shuffle), one 64 x itemsize byte store.

    planes < itemsize: only the lowest `planes` byte planes are transposed and each element
    sign-extended from them, for blocks whose higher rows all repeat the row below them
    (_planes_needed): the same bytes, in less time (bench/cpu_kernels.py)."""
    planes = itemsize if planes is None else planes

    @intrinsic
    def untranspose_group(typingctx, src, dst, rowbytes, e0):
        sig = types.void(types.uintp, types.uintp, types.intp, types.intp)

        def codegen(context, builder, signature, args):
            src, dst, rowbytes, e0 = args
            gfni = _has_gfni(context)
            v64 = ir.VectorType(_I8, 64)
            # matrix m (elements 8 m .. 8 m + 7) gets row i's byte m as its byte i; reversed
            # (7 - i) for GF2P8AFFINEQB, which takes the matrix's rows from the top byte
            order = [0] * 64
            for i in range(8):
                for m in range(8):
                    order[m * 8 + (7 - i if gfni else i)] = i * 8 + m
            order = ir.Constant(ir.VectorType(_I32, 64), order)
            if gfni:
                affine = cgutils.get_or_insert_function(
                    builder.module, ir.FunctionType(v64, [v64, v64, _I8]),
                    "llvm.x86.vgf2p8affineqb.512")
                units = ir.Constant(v64, [1 << (j % 8) for j in range(64)])
            column = builder.lshr(e0, ir.Constant(_I64, 3))
            bytes_of = []
            for b in range(planes):
                rows = ir.Constant(ir.VectorType(_I64, 8), ir.Undefined)
                for i in range(8):
                    at = builder.add(builder.mul(ir.Constant(_I64, 8 * b + i), rowbytes), column)
                    word = builder.load(builder.inttoptr(builder.add(src, at), _I64.as_pointer()),
                                        align=1, typ=_I64)
                    rows = builder.insert_element(rows, word, ir.Constant(_I32, i))
                matrices = builder.shuffle_vector(builder.bitcast(rows, v64),
                                                  ir.Constant(v64, ir.Undefined), order)
                if gfni:
                    bytes_of.append(builder.call(affine, [units, matrices, ir.Constant(_I8, 0)]))
                else:
                    bytes_of.append(builder.bitcast(_transpose_bits_8x8(
                        builder, builder.bitcast(matrices, ir.VectorType(_I64, 8))), v64))
            while len(bytes_of) > 1:  # concatenated: plane b's byte e at 64 b + e
                n = bytes_of[0].type.count
                both = ir.Constant(ir.VectorType(_I32, 2 * n), list(range(2 * n)))
                bytes_of = [builder.shuffle_vector(bytes_of[k], bytes_of[k + 1], both)
                            for k in range(0, len(bytes_of), 2)]
            data = bytes_of[0]
            if planes > 1:  # element e's byte b
                data = builder.shuffle_vector(
                    data, ir.Constant(data.type, ir.Undefined),
                    ir.Constant(ir.VectorType(_I32, 64 * planes),
                                [b * 64 + e for e in range(64) for b in range(planes)]))
            if planes < itemsize:  # (little-endian: byte b of an element is plane b)
                data = builder.sext(
                    builder.bitcast(data, ir.VectorType(ir.IntType(8 * planes), 64)),
                    ir.VectorType(ir.IntType(8 * itemsize), 64))
            at = builder.add(dst, builder.mul(e0, ir.Constant(_I64, itemsize)))
            builder.store(data, builder.inttoptr(at, data.type.as_pointer()), align=1)
            return context.get_dummy_value()

        return sig, codegen

    return untranspose_group


def _untranspose_block(itemsize: int, planes: int | None = None):
    """A compiled loop of _untranspose_group(itemsize, planes) over the groups of a block:
    (src, dst, rowbytes, n elements)."""
    group = _untranspose_group(itemsize, planes)

    @numba.njit(inline="always")
    def untranspose_block(src, dst, rowbytes, n):
        for e0 in range(0, n, ROW_GROUP):
            group(src, dst, rowbytes, e0)

    return untranspose_block


_untranspose_2 = _untranspose_block(2)
_untranspose_4 = _untranspose_block(4)
_untranspose_2_from_1 = _untranspose_block(2, 1)
_untranspose_4_from_1 = _untranspose_block(4, 1)
_untranspose_4_from_2 = _untranspose_block(4, 2)

# ours where it was measured the faster one; bitshuffle's elsewhere
OWN_UNTRANSPOSE = _has_gfni() or "avx2" in target_features()


@numba.njit(inline="always")
def _rows_repeat(words, per_row, first, last):
    """Whether rows first .. last are all equal: each to the next, in one flat pass with
    no early exit (two slices: it vectorises whatever per_row is)."""
    rows = words[first * per_row:last * per_row]
    next_rows = words[(first + 1) * per_row:(last + 1) * per_row]
    differ = np.uint64(0)
    for i in range(rows.size):
        differ |= rows[i] ^ next_rows[i]
    return differ == 0


@numba.njit(inline="always")
def _planes_needed(words, per_row, itemsize):
    """Byte planes (1, 2 or itemsize) that hold a bit-transposed block (words: its bytes as
    uint64, per_row words a row): fewer where every higher row repeats the row below it,
    elements that are their lowest bytes sign-extended.  Detector counts mostly are (small
    counts, -1 in the module gaps), whatever their dtype; float volumes are not, and for
    values of 2 and more or below 0 the first comparison (the sign and the exponent's top
    bit) shows it."""
    top = 8 * itemsize - 1
    if not _rows_repeat(words, per_row, top - 1, top):
        return itemsize
    if _rows_repeat(words, per_row, 7, top - 1):
        return 1
    if itemsize > 2 and _rows_repeat(words, per_row, 15, top - 1):
        return 2
    return itemsize


@numba.njit(cache=True, nogil=True)
def _untranspose(scratch, dst, n, itemsize):
    """Block of n elements (a multiple of ROW_GROUP) of itemsize 2 or 4 bytes (detectors'
    16- and 32-bit counts, float32 volumes), bit-transposed in scratch, into address dst;
    False (nothing done) for other sizes (bitshuffle's then).  Only the byte planes the
    elements need are transposed (_planes_needed)."""
    rowbytes = n // 8
    if itemsize not in (2, 4):
        return False
    src = scratch.ctypes.data
    planes = _planes_needed(scratch[:n * itemsize].view(np.uint64), rowbytes // 8, itemsize)
    if itemsize == 4:
        if planes == 1:
            _untranspose_4_from_1(src, dst, rowbytes, n)
        elif planes == 2:
            _untranspose_4_from_2(src, dst, rowbytes, n)
        else:
            _untranspose_4(src, dst, rowbytes, n)
    elif planes == 1:
        _untranspose_2_from_1(src, dst, rowbytes, n)
    else:
        _untranspose_2(src, dst, rowbytes, n)
    return True


@numba.njit(inline="always")
def _copy_bytes(dst, d0, src, s0, n):
    """dst[d0:d0 + n] = src[s0:s0 + n] as a loop: numba compiles a slice assignment's
    shape check with an f-string message, seconds of every cold process's compile time
    (tests/codec/test_codec.py checks that none is compiled)."""
    for i in range(n):
        dst[d0 + i] = src[s0 + i]


@numba.njit(inline="always")
def _decompress_block(src, packed, scratch, dst, size, itemsize, own_untranspose):
    """One block: its packed LZ4 bytes at address src into scratch, untransposed into
    address dst (size elements of itemsize bytes).  0, or < 0 when it does not decode."""
    nbytes = size * itemsize
    if _lz4_decompress_safe(src, scratch.ctypes.data, np.int32(packed), np.int32(nbytes)) != nbytes:
        return -91
    if own_untranspose and size % ROW_GROUP == 0 and _untranspose(scratch, dst, size,
                                                                  itemsize):
        return 0
    return min(_untrans_bit_elem(scratch.ctypes.data, dst, size, itemsize), 0)


@numba.njit(inline="always")
def _blocks_of(raw, other, itemsize, block):
    """The blocks of the elements whose bytes are raw (uint8): (whole blocks, elements of
    the last, shorter one - a multiple of 8 -, bytes of the largest block), or (-1, 0, 0)
    for what the block loops refuse: an item size or block size they cannot take, bytes
    that are not whole elements, raw or other not C-contiguous (raw pointers are used), a
    block past int32 (a damaged header's block size makes it no larger)."""
    if itemsize <= 0 or block <= 0 or block % BLOCKED_MULT or raw.size % itemsize:
        return -1, 0, 0
    if not (raw.flags.c_contiguous and other.flags.c_contiguous):
        return -1, 0, 0
    elements = raw.size // itemsize
    largest = min(block, elements) * itemsize
    if largest > 2147483647:
        return -1, 0, 0
    full, last = divmod(elements, block)
    return full, last - last % BLOCKED_MULT, largest


@numba.njit(cache=True, nogil=True)
def decompress(stream, out, itemsize, block, own_untranspose):
    """Decompress the bitshuffle-LZ4 stream (uint8, the chunk after its 12-byte header) into
    out (uint8, C order, the uncompressed bytes) with blocks of `block` elements of itemsize
    bytes; own_untranspose: our bit-untranspose (OWN_UNTRANSPOSE: where it is the faster)
    for blocks of a multiple of ROW_GROUP elements, else bitshuffle's.  Returns the bytes of
    stream used (all of it for a sound chunk), < 0 when it is damaged
    (bshuf_decompress_lz4's meaning); never reads or writes past either array."""
    full, last, largest = _blocks_of(out, stream, itemsize, block)
    if full < 0:
        return -81
    n = stream.size
    scratch = np.empty(largest, np.uint8)
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
        err = _decompress_block(stream.ctypes.data + pos, packed, scratch,
                                out.ctypes.data + done, size, itemsize, own_untranspose)
        if err < 0:
            return err
        pos += packed
        done += nbytes
    left = out.size - done  # the elements after the last whole multiple of 8, as they are
    if left > n - pos:
        return -1
    _copy_bytes(out, done, stream, pos, left)
    return pos + left


# LZ4's acceleration for the chunks hklflow writes: faster than 1 (bitshuffle's, the same
# bytes as its filter) for a stream a little larger (bench/cpu_kernels.py)
WRITE_ACCELERATION = 4


@numba.njit(cache=True, nogil=True)
def compress(data, out, itemsize, block, acceleration):
    """The bitshuffle-LZ4 stream (what follows the chunk's 12-byte header) of data (uint8,
    C order: elements of itemsize bytes) into out (uint8): per block of `block` elements,
    bitshuffle's bit-transpose, then LZ4_compress_fast with `acceleration` (1: the bytes of
    bitshuffle's own bshuf_compress_lz4, which calls it through an OpenMP loop with two
    allocations and a copy per block; larger: faster, a little larger), its size
    (big-endian uint32) and its bytes; then the last elements % 8 elements as they are.
    Returns the bytes written, < 0 when out is too small or a call fails."""
    full, last, largest = _blocks_of(data, out, itemsize, block)
    if full < 0:
        return -81
    scratch = np.empty(largest, np.uint8)
    pos = 0
    done = 0
    for i in range(full + 1):
        size = block if i < full else last
        if size == 0:
            break
        nbytes = size * itemsize
        if _trans_bit_elem(data.ctypes.data + done, scratch.ctypes.data, size, itemsize) < 0:
            return -1
        room = min(out.size - pos - 4, 2147483647)
        if room <= 0:
            return -1
        packed = _lz4_compress_fast(scratch.ctypes.data, out.ctypes.data + pos + 4,
                                    np.int32(nbytes), np.int32(room), np.int32(acceleration))
        if packed <= 0:
            return -1
        out[pos] = (packed >> 24) & 255
        out[pos + 1] = (packed >> 16) & 255
        out[pos + 2] = (packed >> 8) & 255
        out[pos + 3] = packed & 255
        pos += 4 + packed
        done += nbytes
    left = data.size - done
    if left > out.size - pos:
        return -1
    _copy_bytes(out, pos, data, done, left)
    return pos + left


@numba.njit(cache=True, nogil=True)
def block_positions(stream, starts, stops, elements, itemsize, block, out):
    """Where each block of each chunk of a stream lies: the chunks (streams after their
    12-byte headers, every one of `elements` elements of itemsize bytes in blocks of `block`
    elements) one after the other in `stream`, chunk i in [starts[i], stops[i]).  Writes
    the position of block j's size field of chunk i into out[i, j] and that of its last
    elements (% 8, as they are) into out[i, nblocks] (out: (chunks, nblocks + 1) int64,
    nblocks = block_count(elements, block)).  Returns -1 - i for the first chunk whose block
    sizes do not add up to its length (damaged), else 0.  The blocks themselves are not
    read: decompress_elements finds a damaged one.  The chunks are walked side by side,
    block j of every chunk before block j + 1: each walk waits for its size fields to come
    from memory one after the other, and side by side the waits overlap."""
    nblocks = out.shape[1] - 1
    left = (elements % block) % BLOCKED_MULT
    nchunks = starts.size
    pos = np.empty(nchunks, np.int64)
    damaged = np.zeros(nchunks, np.bool_)
    for i in range(nchunks):
        pos[i] = starts[i]
    for j in range(nblocks):
        for i in range(nchunks):
            p = pos[i]
            if damaged[i] or p + 4 > stops[i]:
                damaged[i] = True
                continue
            packed = ((np.int64(stream[p]) << 24) | (np.int64(stream[p + 1]) << 16)
                      | (np.int64(stream[p + 2]) << 8) | np.int64(stream[p + 3]))
            out[i, j] = p
            pos[i] = p + 4 + packed
            damaged[i] = pos[i] > stops[i]
    for i in range(nchunks):
        if damaged[i] or pos[i] + left * itemsize != stops[i]:
            return -1 - i
        out[i, nblocks] = pos[i]
    return 0


@numba.njit(cache=True, nogil=True)
def decompress_elements(stream, positions, elements, itemsize, block, first, n, out,
                        scratch, own_untranspose):
    """Elements [first, first + n) of one chunk into out (uint8, n * itemsize bytes) from
    `stream` and the chunk's row of block_positions; first a multiple of `block`, and
    first + n a multiple of it or the chunk's end (whole blocks); scratch: uint8 of
    block * itemsize bytes.  Returns 0, or < 0 when a block is damaged
    (bshuf_decompress_lz4's meaning) or the range is not whole blocks (-81)."""
    nblocks = positions.size - 1
    full = elements // block
    raw_from = full * block + (elements - full * block) // BLOCKED_MULT * BLOCKED_MULT
    stop = min(first + n, elements)
    if first % block or (stop % block and stop != elements):
        return -81
    e = first
    while e < stop:
        if e >= raw_from:  # the last elements % 8, stored as they are
            src = positions[nblocks] + (e - raw_from) * itemsize
            _copy_bytes(out, (e - first) * itemsize, stream, src, (stop - e) * itemsize)
            return 0
        j = e // block
        size = block if j < full else raw_from - full * block
        pos = positions[j]
        err = _decompress_block(stream.ctypes.data + pos + 4, positions[j + 1] - pos - 4,
                                scratch, out.ctypes.data + (e - first) * itemsize, size,
                                itemsize, own_untranspose)
        if err < 0:
            return err
        e += size
    return 0


class CompiledCodec:
    """decode / encode of bitshuffle-LZ4 streams with the compiled loops (the library
    codec's methods, the same numbers); fused: its decompress_elements and block_positions
    decode blocks inside other compiled kernels."""

    name = "compiled"
    fused = True

    @staticmethod
    def decode(stream: np.ndarray, out: np.ndarray, block: int) -> int:
        if not out.flags.c_contiguous:
            return -81
        return decompress(stream, out.reshape(-1).view(np.uint8), out.itemsize, block,
                          OWN_UNTRANSPOSE)

    @staticmethod
    def encode(data: np.ndarray, out: np.ndarray, block: int) -> int:
        if not data.flags.c_contiguous:
            return -81
        return compress(data.reshape(-1).view(np.uint8), out, data.itemsize, block,
                        WRITE_ACCELERATION)


def _self_test_chunks():
    """(values, block) that exercise what the compiled path does its own way: int32,
    uint16 and float32; a short last block (not a multiple of ROW_GROUP: bitshuffle's
    untranspose) and the last elements % 8 stored as they are; blocks whose counts need 1,
    2 and all 4 byte planes."""
    rng = np.random.default_rng(67)
    counts = rng.poisson(3.0, (4, 2048))
    counts[:, 5] = -1  # module gaps
    counts[1, 9], counts[2, 11], counts[3, 13] = 300, 70000, -70000  # 2, 4 and 4 planes
    yield counts.astype(np.int32).ravel(), 2048
    yield np.concatenate([counts.ravel()[:2048 * 2], counts.ravel()[:136 + 5]]).astype(
        np.int32), 2048
    yield (counts.ravel() % 60000).astype(np.uint16)[:4096 + 77], 4096
    yield (rng.random(2048 * 2 + 64 + 3) * 2 - 0.5).astype(np.float32), 2048


def self_test(library) -> str | None:
    """None when the compiled loops give, bit for bit, what the library codec gives on a
    few chunks (decode, encode at bitshuffle's acceleration, the fused block decoding);
    else what differs."""
    for values, block in _self_test_chunks():
        stream = np.empty(values.nbytes * 2 + 4096, np.uint8)
        size = library.encode(values, stream, block)
        stream = stream[:size].copy()
        what = f"{values.size} {values.dtype} in blocks of {block}"
        out = np.full_like(values, 7)
        if decompress(stream, out.view(np.uint8), values.itemsize, block,
                      OWN_UNTRANSPOSE) != size or out.tobytes() != values.tobytes():
            return f"decoding {what} differs from the data"
        mine = np.empty_like(stream, shape=size + 4096)
        n = compress(values.view(np.uint8), mine, values.itemsize, block, 1)
        if n != size or mine[:n].tobytes() != stream.tobytes():
            return f"encoding {what} differs from bitshuffle.compress_lz4's bytes"
        positions = np.empty((1, block_count(values.size, block) + 1), np.int64)
        if block_positions(stream, np.zeros(1, np.int64), np.full(1, size, np.int64),
                           values.size, values.itemsize, block, positions) != 0:
            return f"the block positions of {what} do not add up"
        out[:] = 7
        scratch = np.empty(block * values.itemsize, np.uint8)
        if decompress_elements(stream, positions[0], values.size, values.itemsize, block, 0,
                               values.size, out.view(np.uint8), scratch,
                               OWN_UNTRANSPOSE) != 0 or out.tobytes() != values.tobytes():
            return f"decoding {what} block by block differs from the data"
    return None
