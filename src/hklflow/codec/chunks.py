"""Raw chunks of bitshuffle-LZ4 datasets, read and written past HDF5's filter pipeline:
read_chunk (one chunk, decoded into the caller's buffer), ChunkReader (a chunked array
whose unstored chunks hold the fill value), ChunkWriter (stores only the chunks that hold
something other than the fill value) and stored_frames (frames as their chunks, for
kernels that decode them block by block).

HDF5's filter allocates, decodes and copies every chunk, and writes a chunk of the fill
value like any other; here a chunk goes straight between the file and the caller's buffer
(h5py's read_direct_chunk / write_direct_chunk) through the active codec (choice.py)."""
from __future__ import annotations

import functools
import threading
from dataclasses import dataclass

import h5py
import numpy as np

from .choice import active_codec, library_codec
from .framing import (HEADER_BYTES, bitshuffle_lz4_only, chunk_header, damaged_chunk,
                      default_block_elements, read_header)


def codec_for(compiled: bool):
    """The codec of a reader that streams whole scans or volumes (compiled: the active one,
    HKLFLOW_CODEC's; loading and checking the compiled codec costs more than a few chunks
    gain) or of one that reads a few chunks (the library codec); None without the bitshuffle
    package (then HDF5's filter reads)."""
    try:
        return active_codec() if compiled else library_codec()
    except ImportError:  # pragma: no cover - no bitshuffle package
        return None


def read_chunk(dset: h5py.Dataset, corner, raw: np.ndarray, out: np.ndarray, codec) -> bool:
    """Read the raw chunk of `dset` at `corner` into `raw` (uint8, its stored size) and
    decode it into `out` (C-contiguous, the chunk's uncompressed size); False when it is not
    plainly bitshuffle-LZ4 of that size (a filter skipped, unreadable): then HDF5 must read
    it.  A damaged chunk (its blocks do not add up or do not decode) is a FileFormatError
    naming the file and the chunk: HDF5's filter would read past the end of a truncated one
    and crash the process."""
    try:
        skipped_filters, _ = dset.id.read_direct_chunk(corner, out=raw)
    except Exception:
        return False
    header = read_header(raw, out.itemsize)
    if skipped_filters or header is None or header[0] != out.nbytes \
            or not out.flags.c_contiguous:
        return False
    used = codec.decode(raw[HEADER_BYTES:], out, header[1])
    if used < 0:
        raise damaged_chunk(dset, corner, raw.size)
    return used == raw.size - HEADER_BYTES


class ChunkReader:
    """Reads a 3-D bitshuffle-LZ4 dataset from its raw chunks: the stored chunks are decoded
    here, the others hold the fill value (most chunks of a scan's volume are not stored).
    A chunk that is not plainly bitshuffle-LZ4 (a filter skipped, damaged) is read through
    HDF5, which names what is wrong.  open() gives None where the dataset cannot be read
    this way."""

    @classmethod
    def open(cls, dset: h5py.Dataset, compiled: bool = False) -> "ChunkReader | None":
        if (dset.ndim != 3 or dset.dtype.kind not in "iuf" or not dset.dtype.isnative
                or not hasattr(dset.id, "chunk_iter") or not bitshuffle_lz4_only(dset)):
            return None
        codec = codec_for(compiled)
        return None if codec is None else cls(dset, codec)

    def __init__(self, dset: h5py.Dataset, codec):
        self.dset = dset
        self.codec = codec
        self.chunks = tuple(int(c) for c in dset.chunks)
        self.fill = np.asarray(dset.fillvalue, dset.dtype)[()]
        self.stored: dict[tuple, tuple] = {}  # corner -> (bytes, filters skipped)
        dset.id.chunk_iter(lambda info: self.stored.__setitem__(
            tuple(info.chunk_offset), (info.size, info.filter_mask)))
        self.rows: dict[int, list] = {}  # first plane of a row of chunks -> stored corners
        for corner in sorted(self.stored):
            self.rows.setdefault(corner[0], []).append(corner)
        largest = max((info[0] for info in self.stored.values()), default=0)
        self.raw = np.empty(max(largest, HEADER_BYTES), np.uint8)
        self.chunk = np.empty(self.chunks, dset.dtype)
        self.through_hdf5 = 0  # stored chunks HDF5 had to read (tests, benchmarks)

    def read(self, l0: int, l1: int, out: np.ndarray) -> None:
        """Planes [l0, l1) of the first axis into out ([l1 - l0, ...] of the dataset's
        dtype)."""
        cl, ck, ch = self.chunks
        out[...] = self.fill
        for r0 in range(l0 - l0 % cl, l1, cl):
            lo, hi = max(l0, r0), min(l1, r0 + cl)
            for corner in self.rows.get(r0, ()):
                self.read_chunk(corner, self.chunk)
                _, k0, h0 = corner
                dest = out[lo - l0:hi - l0, k0:k0 + ck, h0:h0 + ch]
                dest[...] = self.chunk[lo - r0:hi - r0, :dest.shape[1], :dest.shape[2]]

    def read_chunk(self, corner: tuple, out: np.ndarray) -> None:
        """The chunk at `corner` whole into out (C order, the chunk's shape): the fill value
        where it is not stored and beyond the dataset's extent."""
        info = self.stored.get(corner)
        if info is None:
            out[...] = self.fill
            return
        region = tuple(slice(c, min(c + n, s))
                       for c, n, s in zip(corner, self.chunks, self.dset.shape))
        size, skipped = info
        if skipped or not read_chunk(self.dset, corner, self.raw[:size], out, self.codec):
            out[...] = self.fill
            inside = tuple(slice(0, r.stop - r.start) for r in region)
            self.dset.read_direct(out, region, inside)
            self.through_hdf5 += 1
            return
        for axis, r in enumerate(region):  # an edge chunk: beyond the extent is not data
            if r.stop - r.start < self.chunks[axis]:
                beyond = [slice(None)] * 3
                beyond[axis] = slice(r.stop - r.start, None)
                out[tuple(beyond)] = self.fill


@functools.cache
def _empty_chunks():
    """codec.empty_chunk_kernels, imported at the writer's first slab (it loads numba)."""
    from . import empty_chunk_kernels

    return empty_chunk_kernels


class ChunkWriter:
    """Writes float32 slabs of whole first-axis chunks of bitshuffle-LZ4 datasets as raw
    chunks: the chunks that hold data are encoded here by the active codec (the format of
    HDF5's filter: same header, same default block size; the compiled codec with a faster
    LZ4 setting, bench/cpu_kernels.py) and chunks of the fill value alone are not written.
    HDF5's write path encodes every chunk, an empty one too, and copies each through its
    filter pipeline.  `available` is False without the bitshuffle package: then HDF5's
    filter writes."""

    def __init__(self, chunks):
        self.chunks = tuple(int(c) for c in chunks)
        self.codec = codec_for(True)
        self.nvox = nvox = int(np.prod(self.chunks))
        self.chunk = np.empty(self.chunks, np.float32)  # one chunk, contiguous
        self.corners = np.empty((0, 2), np.int64)
        self._thread = threading.local()  # (store: a buffer per thread)
        self.block = default_block_elements(4)
        self._header = chunk_header(4 * nvox, self.block, 4)

    @property
    def out(self) -> np.ndarray:
        """This thread's buffer of an encoded chunk: the header + encoded blocks, room well
        above bitshuffle-LZ4's bound (about 1.01 x + 20 bytes per block)."""
        out = getattr(self._thread, "out", None)
        if out is None:
            out = self._thread.out = np.empty(HEADER_BYTES + 6 * self.nvox + 4096, np.uint8)
            out[:HEADER_BYTES] = self._header
        return out

    @property
    def available(self) -> bool:
        return self.codec is not None

    def _stored_chunks(self, slab: np.ndarray, fill: float):
        """(p0, k0, h0) of each chunk of the slab that holds a value other than fill (in
        whole first-axis chunks from its plane p0), with the chunk copied whole into
        self.chunk (an edge chunk padded with fill: HDF5 stores it whole)."""
        cl, ck, ch = self.chunks
        per_slab = -(-slab.shape[1] // ck) * -(-slab.shape[2] // ch)
        if self.corners.shape[0] < per_slab:
            self.corners = np.empty((per_slab, 2), np.int64)
        chunk = self.chunk
        for p0 in range(0, slab.shape[0], cl):
            part = slab[p0:p0 + cl]
            n = _empty_chunks().stored_chunks(part.view(np.uint32), self.chunks,
                                              np.float32(fill).view(np.uint32), self.corners)
            for k0, h0 in self.corners[:n].tolist():
                piece = part[:, k0:k0 + ck, h0:h0 + ch]
                if piece.shape == chunk.shape:
                    np.copyto(chunk, piece)  # numpy's strided copy: faster than numba's
                else:
                    chunk.fill(fill)
                    chunk[:piece.shape[0], :piece.shape[1], :piece.shape[2]] = piece
                yield p0, k0, h0

    def write(self, dset: h5py.Dataset, l0: int, slab: np.ndarray, fill: float) -> None:
        for p0, k0, h0 in self._stored_chunks(slab, fill):
            self.store(dset, (l0 + p0, k0, h0), self.chunk)

    def write_twins(self, first: h5py.Dataset, second: h5py.Dataset, l0: int,
                    slab: np.ndarray, fill: float, holes: np.ndarray) -> None:
        """write(first, l0, slab, fill) and write(second, ...) of the slab with the voxels
        at the sorted flat indices `holes` (into slab) NaN, in one pass: a chunk without a
        hole is encoded once and stored in both; one with holes is stored in second
        with them NaN (unless that leaves the fill value alone).  fill must be NaN (holes
        add no chunk: a chunk of fill values alone is not stored in either)."""
        if not np.isnan(fill):
            raise ValueError("write_twins needs NaN as the fill value")
        cl, ck, ch = self.chunks
        nkc, nhc = -(-slab.shape[1] // ck), -(-slab.shape[2] // ch)
        i, j, m = np.unravel_index(np.asarray(holes, np.int64), slab.shape)
        key = ((i // cl) * nkc + j // ck) * nhc + m // ch  # the hole's chunk in the slab
        order = np.argsort(key, kind="stable")
        key, i, j, m = key[order], i[order], j[order], m[order]
        chunk = self.chunk
        punched = np.empty_like(chunk)
        for p0, k0, h0 in self._stored_chunks(slab, fill):
            corner = (l0 + p0, k0, h0)
            c = ((p0 // cl) * nkc + k0 // ck) * nhc + h0 // ch
            a, b = np.searchsorted(key, (c, c + 1))
            if a == b:  # no hole: the same bytes in both
                self.store(first, corner, chunk, twin=second)
                continue
            self.store(first, corner, chunk)
            np.copyto(punched, chunk)
            punched[i[a:b] - p0, j[a:b] - k0, m[a:b] - h0] = np.nan
            if not np.isnan(punched).all():
                self.store(second, corner, punched)

    def store(self, dset: h5py.Dataset, corner: tuple, chunk: np.ndarray,
              twin: h5py.Dataset | None = None) -> None:
        """Encode one whole chunk (float32, C order, the chunk's shape) and store it at its
        corner (the chunk's first voxel), the same bytes in `twin` too when given."""
        out = self.out
        size = self.codec.encode(chunk, out[HEADER_BYTES:], self.block)
        if size < 0:  # pragma: no cover - bitshuffle's own failure
            raise OSError(f"{dset.file.filename}: bitshuffle-LZ4 compression of a chunk of "
                          f"{dset.name} failed (error {size})")
        dset.id.write_direct_chunk(corner, out[:HEADER_BYTES + size])
        if twin is not None:
            twin.id.write_direct_chunk(corner, out[:HEADER_BYTES + size])


@dataclass
class CompressedFrames:
    """Frames as their bitshuffle-LZ4 chunks (one frame each), for a kernel that decodes
    each block of pixels just before it works on them (the transform's fused kernel, with
    the compiled codec's decompress_elements): chunk i (its stream, after the 12-byte
    header) is stream[starts[i]:stops[i]], of `elements` elements of `dtype` in blocks of
    `block` elements.  first: the scan's index of the first frame; files: the file of each
    frame (for errors)."""

    stream: np.ndarray
    starts: np.ndarray
    stops: np.ndarray
    elements: int
    block: int
    dtype: np.dtype
    first: int
    files: list

    def __len__(self) -> int:
        return len(self.starts)


def stored_frames(chunks: list, elements: int, dtype: np.dtype, first: int,
                  holder) -> CompressedFrames | None:
    """The raw chunks (dataset, chunk index along the first axis, file name) of frames
    (`elements` elements of `dtype` each, a chunk per frame) read one after the other into
    holder.stream (grown as needed: a fresh buffer costs its page faults); None where one is
    not plainly bitshuffle-LZ4 of a frame's size in the same blocks as the others (a chunk
    not written, a filter skipped: HDF5 reads them)."""
    try:
        sizes = [d.id.get_chunk_info_by_coord((i, 0, 0)).size for d, i, _ in chunks]
    except Exception:
        return None
    if min(sizes) <= HEADER_BYTES:  # a chunk not written (the fill value)
        return None
    ends = np.cumsum(sizes)
    buf = getattr(holder, "stream", None)
    if buf is None or buf.size < ends[-1]:
        buf = holder.stream = np.empty(int(ends[-1] * 1.25), np.uint8)
    blocks = set()
    for (d, i, _), end, size in zip(chunks, ends, sizes):
        piece = buf[end - size:end]
        try:
            skipped, _ = d.id.read_direct_chunk((i, 0, 0), out=piece)
        except Exception:
            return None
        nbytes, block = read_header(piece, dtype.itemsize)
        if skipped or nbytes != elements * dtype.itemsize:
            return None
        blocks.add(block)
    if len(blocks) != 1:
        return None
    starts = (ends - np.asarray(sizes) + HEADER_BYTES).astype(np.int64)
    return CompressedFrames(buf[:ends[-1]], starts, ends.astype(np.int64), elements,
                            blocks.pop(), dtype, first, [f for _, _, f in chunks])
