"""How a bitshuffle-LZ4 chunk is laid out, as HDF5's bitshuffle filter (32008) stores it, and
the checks that keep a damaged one from being decoded past its end.

A chunk is a 12-byte header (the uncompressed bytes as uint64, the block size in bytes as
uint32, both big-endian), then per block of `block` elements (the last one shorter, a
multiple of 8) its compressed size (uint32, big-endian) and its LZ4 block, then the last
elements % 8 elements as they are.  A block of n elements of S bytes, bit-transposed, is
8 S rows of n / 8 bytes: bit e % 8 of byte e // 8 of row 8 b + i is bit i of byte b of
element e.  What follows the header is the "stream" the codecs decode."""
from __future__ import annotations

import struct

import numpy as np

from ..base.errors import FileFormatError

HEADER_BYTES = 12
BLOCKED_MULT = 8  # bitshuffle's blocks hold a multiple of 8 elements
FILTER_ID = 32008  # HDF5's id of the bitshuffle filter; cd_values: major, minor, item size,
LZ4_CODEC = 2  # block size, codec (this value: LZ4)
_TARGET_BLOCK_BYTES = 8192  # bitshuffle's default block: this many bytes, at least
_MIN_DEFAULT_BLOCK = 128  # this many elements


def default_block_elements(itemsize: int) -> int:
    """The block size (elements) bitshuffle uses when it is given none (0), as its
    bshuf_default_block_size computes it (stable across its versions: streams depend on
    it); what hdf5plugin.Bitshuffle() asks for."""
    block = _TARGET_BLOCK_BYTES // int(itemsize) // BLOCKED_MULT * BLOCKED_MULT
    return max(block, _MIN_DEFAULT_BLOCK)


def chunk_header(nbytes: int, block: int, itemsize: int) -> np.ndarray:
    """The 12 header bytes of a chunk of nbytes uncompressed bytes in blocks of `block`
    elements of itemsize bytes."""
    return np.frombuffer(struct.pack(">QI", int(nbytes), int(block) * int(itemsize)), np.uint8)


def read_header(raw: np.ndarray, itemsize: int) -> tuple[int, int] | None:
    """(uncompressed bytes, block size in elements) of a chunk (raw: its bytes, the header
    first); None when it is shorter than a header."""
    if raw.size < HEADER_BYTES:
        return None
    nbytes, block_bytes = struct.unpack(">QI", raw[:HEADER_BYTES].tobytes())
    return nbytes, block_bytes // itemsize or default_block_elements(itemsize)


def block_count(elements: int, block: int) -> int:
    """Blocks of a chunk of `elements` elements in blocks of `block` (the last one shorter,
    a multiple of 8 elements; none for fewer than 8 left)."""
    full, last = divmod(elements, block)
    return full + (1 if last >= BLOCKED_MULT else 0)


def blocks_fit(stream: np.ndarray, elements: int, itemsize: int, block: int) -> bool:
    """Whether the block sizes of a stream (a chunk after its header) add up to its length,
    the elements % 8 stored as they are included: bitshuffle's own decoder trusts them and
    reads past the end of a truncated chunk (a segmentation fault, not an error)."""
    if block <= 0 or block % BLOCKED_MULT:
        return False
    data = memoryview(np.ascontiguousarray(stream, np.uint8)).cast("B")
    full, last = divmod(elements, block)
    whole = full * block + last - last % BLOCKED_MULT  # elements in blocks
    pos = 0
    unpack = struct.Struct(">I").unpack_from
    for _ in range(block_count(elements, block)):
        if pos + 4 > len(data):
            return False
        pos += 4 + unpack(data, pos)[0]
    return pos + (elements - whole) * itemsize == len(data)


def bitshuffle_lz4_only(dset) -> bool:
    """Whether bitshuffle-LZ4 of the dataset's own item size is its one filter: its raw
    chunks are then the codecs' to decode."""
    if dset.chunks is None or dset.is_virtual:
        return False
    plist = dset.id.get_create_plist()
    if plist.get_nfilters() != 1:
        return False
    code, _, values, _ = plist.get_filter(0)
    return (code == FILTER_ID and len(values) >= 5
            and values[2] == dset.dtype.itemsize and values[4] == LZ4_CODEC)


def damaged_chunk(dset, corner, nbytes: int) -> FileFormatError:
    """The error of a chunk whose blocks do not add up or do not decode, naming the file,
    the dataset and the chunk."""
    return FileFormatError(f"{dset.file.filename}: the chunk at {tuple(corner)} of {dset.name} "
                           "is damaged (its bitshuffle-LZ4 blocks do not add up to its "
                           f"{nbytes} bytes or do not decode: truncated or corrupt file?)")
