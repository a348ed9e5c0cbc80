"""Reading raw detector frames: read-only, streamed, with errors that name file and frame.

Raw frames come in two forms (the ``data`` column of the scans table):

* an HDF5 file holding a (frames, rows, cols) stack (usually bitshuffle-LZ4 compressed,
  chunked one frame per chunk), or a glob pattern of several such files whose stacks are
  concatenated in natural order (``data_000001.h5``, ``data_000002.h5``, ...);
* a glob pattern of single-frame files (Pilatus miniCBF, TIFF, EDF; read with fabio),
  sorted in natural order (``f_2.cbf`` before ``f_10.cbf``), one frame per file.

Raw data are never modified: HDF5 files are opened with mode ``'r'`` (and ``locking=False``,
because HDF5 file locking fails on NFS), frame files are only read.

Usage::

    with open_frames("raw/s1/300K/f1.h5", expected_frames=3600) as stack:
        check_readable(stack)                      # first and last frame decompress
        for start, block in stack.iter_chunks(64):  # (n, rows, cols) arrays
            ...

HDF5 ranges are read into one preallocated buffer.  The usual detector layout (chunks of
whole frames, bitshuffle-LZ4 the only filter, native numbers) is read as raw chunks and
decoded into the buffer by hklflow.codec, past HDF5's filter pipeline (which allocates,
decompresses and copies): reading frames bounds the throughput of peak search and
transform (bench/cpu_kernels.py).  With ``compiled_decompression`` (the steps that stream
every frame) the codec HKLFLOW_CODEC chooses decodes them (the compiled one where it
passes its self-test), and read_compressed gives the frames as stored to the kernels that
decode them block by block; otherwise the library codec does.
``read_threads`` (the job's threads) decompress that many chunks at once: on one thread,
decompressing would be the pass's bottleneck.  Any other layout,
and any chunk that is not plainly bitshuffle-LZ4 (not written: fill value; damaged), is
read with ``Dataset.read_direct``, which gives the same numbers (and the error).  Frame
files are decoded one by one into the buffer.  ``iter_chunks(..., reuse_buffer=True)``
reuses one buffer for the whole pass.

A scan's monitor is a dataset of its HDF5 files, or for frame files a column file or a
field of each frame's CBF header (hklflow.raw.monitors).

Every failure is a :class:`RawDataError` whose message names the file, the frame (when
known) and what was expected.  The frames of an ingested scan are opened with
:func:`open_frame_source` from the :class:`FrameSource` its scan file records, which also
checks that the files are still the ones ingest saw (hklflow.raw.rawfiles fingerprints).

Single images (a calibrant image, a user mask) are read with :func:`read_image`
(hklflow.raw.images), through the same HDF5 and fabio readers.
"""
from __future__ import annotations

import abc
import glob
import logging
import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, replace
from typing import Iterator, Sequence

import h5py
import numpy as np

from ..base.errors import RawDataError
from ..codec import CompressedFrames, bitshuffle_lz4_only, codec_for, read_chunk, stored_frames
from ..model.scan import DEFAULT_DATASET, FrameSource
from .images import open_hdf5, read_fabio, read_image
from .monitors import (CBF_HEADER, COLUMN_FILE, header_field, header_monitor, monitor_kind,
                       read_column_file)
from .rawfiles import changed_files, fingerprint, is_eiger_master, is_hdf5_path, matching_files

__all__ = ["DEFAULT_DATASET", "CompressedFrames", "FrameSource", "FrameStack", "RawScan",
           "check_readable", "frame_reader", "inspect_raw_scan", "open_frame_source",
           "open_frames", "read_image", "resolve_files"]

# A step reads its next frames on a thread of its own (while it works on these) from this
# many threads on; a step of one thread reads each chunk itself when it needs it, still in
# the processor's cache: less CPU, and a reader thread would take the core the job was not
# given (bench/pipeline.py).
READ_AHEAD_THREADS = 2


class _WhenNeeded(Future):
    """A Future whose function runs in the thread that first asks for its result."""

    def __init__(self, fn, args):
        super().__init__()
        self._call = (fn, args)

    def result(self, timeout=None):
        if self._call is not None:
            fn, args = self._call
            self._call = None
            try:
                self.set_result(fn(*args))
            except BaseException as exc:  # raised below, as from a pool
                self.set_exception(exc)
        return super().result(timeout)


class _InThisThread:
    """ThreadPoolExecutor's with-block and submit, the work done by result() in the caller."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    @staticmethod
    def submit(fn, *args) -> Future:
        return _WhenNeeded(fn, args)


def frame_reader(threads: int):
    """The executor (a with-block and submit(read, *args)) that reads a step's frames ahead:
    a thread of its own for a step of READ_AHEAD_THREADS threads or more, else none (each
    read done by the step's thread when it asks for the result)."""
    if threads >= READ_AHEAD_THREADS:
        return ThreadPoolExecutor(1, thread_name_prefix="read")
    return _InThisThread()


log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------
# Where frames are
# --------------------------------------------------------------------------------------
def resolve_files(data: str, base_dir=".") -> list[str]:
    """The files named by `data` (a path or glob pattern, relative to base_dir), in
    natural order, as absolute paths; RawDataError when there are none."""
    files = matching_files(data, base_dir)
    if is_eiger_master(data) and files:
        files = files[1:]  # the frames are in the data files (the master: metadata, links)
        if not files:
            raise RawDataError(f"{os.path.join(os.fspath(base_dir), data)}: an EIGER master file "
                               "without data files beside it (PREFIX_data_000001.h5, ...)")
    if not files:
        pattern = data if os.path.isabs(data) else os.path.join(os.fspath(base_dir), data)
        if glob.has_magic(data):
            raise RawDataError(f"{pattern}: no files match this pattern (raw data missing?)")
        if not os.path.exists(pattern):
            raise RawDataError(f"{pattern}: raw data file does not exist")
        raise RawDataError(f"{pattern}: not a file (expected an HDF5 file or a glob "
                           "pattern of frame files)")
    return [os.path.abspath(f) for f in files]


# --------------------------------------------------------------------------------------
# The stack
# --------------------------------------------------------------------------------------
class FrameStack(abc.ABC):
    """The frames of one scan, read on demand.  Use as a context manager (closes files).

    Attributes: nframes, frame_shape (rows, cols), dtype, files (absolute paths), source
    (:class:`FrameSource`).
    """

    def __init__(self, source: FrameSource):
        self.source = source
        self.nframes = source.nframes
        self.frame_shape = tuple(source.frame_shape)
        # native byte order: frames are read (converted) into native buffers, which the
        # compiled kernels require
        self.dtype = np.dtype(source.dtype).newbyteorder("=")
        self.files = list(source.files)
        self._offsets = np.concatenate([[0], np.cumsum(source.frames_per_file)]).astype(int)
        self.read_threads = 1  # chunks decompressed at once (HDF5 raw-chunk reads)
        # raw chunks decoded by the codec HKLFLOW_CODEC chooses (codec.codec_for): for the
        # steps that stream every frame and load numba for their kernels anyway; else the
        # library codec
        self.compiled_decompression = False

    # ---- context manager -------------------------------------------------------------
    def __enter__(self) -> "FrameStack":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:  # overridden by stacks that hold open files
        pass

    def __len__(self) -> int:
        return self.nframes

    def __repr__(self) -> str:
        first = self.files[0] if self.files else "?"
        more = f" (+{len(self.files) - 1} files)" if len(self.files) > 1 else ""
        return (f"<{type(self).__name__} {first}{more}: {self.nframes} frames of "
                f"{self.frame_shape[0]}x{self.frame_shape[1]} {self.dtype}>")

    @property
    def kind(self) -> str:
        return self.source.kind

    @property
    def dataset(self) -> str | None:
        return self.source.dataset

    # ---- indexing ----------------------------------------------------------------------
    def locate(self, index: int) -> tuple[str, int]:
        """(file, index within that file) of frame `index` of the scan."""
        index = self._normalize(index)
        k = int(np.searchsorted(self._offsets, index, side="right") - 1)
        return self.files[k], index - int(self._offsets[k])

    def _normalize(self, index: int) -> int:
        i = int(index)
        if i < 0:
            i += self.nframes
        if not 0 <= i < self.nframes:
            raise IndexError(f"frame {index} out of range: the scan has {self.nframes} frames")
        return i

    def _pieces(self, start: int, stop: int):
        """(file number, local start, local stop, buffer offset) covering [start, stop)."""
        k = int(np.searchsorted(self._offsets, start, side="right") - 1)
        pos = start
        while pos < stop:
            lo, hi = int(self._offsets[k]), int(self._offsets[k + 1])
            end = min(stop, hi)
            if end > pos:
                yield k, pos - lo, end - lo, pos - start
            pos = end
            k += 1

    # ---- reading -----------------------------------------------------------------------
    def read(self, start: int, stop: int, out: np.ndarray | None = None) -> np.ndarray:
        """Frames [start, stop) as an array (stop - start, rows, cols) of the stack's dtype
        (or written into `out`, which must have that shape)."""
        start, stop = int(start), int(stop)
        if not 0 <= start <= stop <= self.nframes:
            raise IndexError(f"frame range [{start}, {stop}) outside the scan's "
                             f"{self.nframes} frames")
        shape = (stop - start,) + self.frame_shape
        if out is None:
            out = np.empty(shape, dtype=self.dtype)
        elif out.shape != shape or not out.flags.c_contiguous:
            raise ValueError(f"out must be a C-contiguous array of shape {shape}, got shape "
                             f"{out.shape}")
        for k, a, b, o in self._pieces(start, stop):
            self._read_piece(k, a, b, out[o:o + (b - a)], int(self._offsets[k]))
        return out

    def read_compressed(self, start: int, stop: int, holder=None) -> CompressedFrames | None:
        """Frames [start, stop) as they are stored, bitshuffle-LZ4 compressed, into the
        buffer `holder.stream` (grown as needed; the stack's own for this thread when no
        holder is given: valid until its next read); None where they are not stored so
        (then read them)."""
        return None

    def read_frame(self, index: int) -> np.ndarray:
        i = self._normalize(index)
        return self.read(i, i + 1)[0]

    def iter_chunks(self, chunk_frames: int, start: int = 0, stop: int | None = None, *,
                    reuse_buffer: bool = False) -> Iterator[tuple[int, np.ndarray]]:
        """Yield (first frame, frames) blocks of at most chunk_frames frames over
        [start, stop).  With reuse_buffer=True one buffer is refilled for every block (the
        caller must not keep a block beyond the next iteration)."""
        chunk_frames = int(chunk_frames)
        if chunk_frames < 1:
            raise ValueError(f"chunk_frames must be >= 1, got {chunk_frames}")
        stop = self.nframes if stop is None else int(stop)
        buf = None
        for a in range(int(start), stop, chunk_frames):
            b = min(a + chunk_frames, stop)
            if reuse_buffer:
                if buf is None:
                    buf = np.empty((min(chunk_frames, stop - a),) + self.frame_shape, self.dtype)
                yield a, self.read(a, b, out=buf[:b - a])
            else:
                yield a, self.read(a, b)

    @abc.abstractmethod
    def read_monitor(self, monitor: str, base_dir=".") -> np.ndarray:
        """Per-frame monitor values (float64, length nframes): of HDF5 files, their dataset
        `monitor` (concatenated over files); of frame files, the column file `monitor`
        (relative to base_dir) or each frame's CBF header field (cbf:FIELD,
        hklflow.raw.monitors)."""

    @abc.abstractmethod
    def _read_piece(self, k, a, b, out, offset):
        """Read frames [a, b) of piece k into out[offset:offset + b - a]."""


def _raw_chunk_frames(dset, dtype: np.dtype) -> int:
    """Frames per chunk when `dset` can be read as raw chunks and decoded by hklflow.codec
    (chunks of whole frames, bitshuffle-LZ4 the only filter, numbers of `dtype`, which is
    native); 0 when it must be read through HDF5."""
    if (dset.is_virtual or dset.chunks is None
            or dset.dtype != dtype or tuple(dset.chunks[1:]) != tuple(dset.shape[1:])
            or not hasattr(dset.id, "get_chunk_info_by_coord")  # HDF5 >= 1.10.5
            or not bitshuffle_lz4_only(dset)):
        return 0
    return int(dset.chunks[0])


class _HDF5Stack(FrameStack):
    def __init__(self, source: FrameSource, handles: list):
        super().__init__(source)
        self._handles = handles  # [(h5py.File, Dataset)]
        self._raw_chunk_frames = [_raw_chunk_frames(d, self.dtype) for _, d in handles]
        self.frames_from_raw_chunks = 0  # frames the bitshuffle fast path gave (tests, benchmarks)
        self._raw = threading.local()  # each thread's buffer of compressed bytes
        self._pool = None  # (threads, ThreadPoolExecutor) that decompresses chunks

    def close(self) -> None:
        if self._pool is not None:
            self._pool[1].shutdown()
            self._pool = None
        for f, _ in self._handles:
            try:
                f.close()
            except Exception:  # pragma: no cover - closing a broken file
                pass
        self._handles = []

    def _read_piece(self, k, a, b, out, offset):
        if not self._handles:
            raise ValueError("the frame stack is closed")
        try:
            self._read_frames(k, a, b, out)
        except Exception as exc:
            bad, why = a, exc
            if b - a > 1:  # find the first frame that fails
                one = np.empty((1,) + self.frame_shape, out.dtype)
                for i in range(a, b):
                    try:
                        self._read_frames(k, i, i + 1, one)
                    except Exception as exc_i:
                        bad, why = i, exc_i
                        break
            raise RawDataError(
                f"{self.files[k]}: frame {offset + bad} (index {bad} of dataset "
                f"{self.source.dataset} in this file) cannot be read or decompressed: {why} "
                "(truncated or corrupt file?)") from None

    def _read_frames(self, k, a, b, out) -> None:
        """Frames [a, b) of file k into out[:b - a]."""
        dset = self._handles[k][1]
        n = self._raw_chunk_frames[k]
        if not n or out.dtype != dset.dtype:  # HDF5 converts into another type of `out`
            dset.read_direct(out, np.s_[a:b], np.s_[0:b - a])
            return
        firsts = range(a - a % n, b, n)  # the chunks holding [a, b)
        threads = max(1, int(self.read_threads))
        if threads == 1 or len(firsts) == 1:
            done = [self._read_chunk(dset, n, first, a, b, out) for first in firsts]
        else:  # h5py reads one raw chunk at a time; the decompression runs in parallel
            if self._pool is None or self._pool[0] != threads:
                if self._pool is not None:
                    self._pool[1].shutdown()
                self._pool = (threads, ThreadPoolExecutor(threads, thread_name_prefix="decompress"))
            tasks = [self._pool[1].submit(self._read_chunk, dset, n, first, a, b, out)
                     for first in firsts]
            wait(tasks)  # all of them, also when one failed: none may write into `out` later
            done = [t.result() for t in tasks]
        self.frames_from_raw_chunks += sum(done)

    def _read_chunk(self, dset, n, first, a, b, out) -> int:
        """The part of [a, b) in the chunk of n frames starting at `first` into out; the
        frames that came from the raw chunk (0 when HDF5 read them)."""
        lo, hi = max(a, first), min(b, first + n)
        size = dset.id.get_chunk_info_by_coord((first, 0, 0)).size  # 0: not written
        raw = getattr(self._raw, "buffer", None)
        if raw is None or size > raw.size:  # reused: a fresh buffer per chunk costs page faults
            raw = self._raw.buffer = np.empty(max(size, 1), np.uint8)
        whole = (lo, hi) == (first, first + n)  # decompressed straight into out
        frames = out[lo - a:hi - a] if whole else np.empty((n,) + self.frame_shape, out.dtype)
        codec = codec_for(self.compiled_decompression)
        if size and codec is not None and read_chunk(dset, (first, 0, 0), raw[:size], frames,
                                                     codec):
            if not whole:
                out[lo - a:hi - a] = frames[lo - first:hi - first]
            return hi - lo
        # HDF5 reads it: the fill value of a chunk not written, a damaged one's error
        dset.read_direct(out, np.s_[lo:hi], np.s_[lo - a:hi - a])
        return 0

    def read_compressed(self, start: int, stop: int, holder=None) -> CompressedFrames | None:
        """Frames [start, stop) as their raw chunks, read into a reused buffer (holder.stream,
        or this thread's own): where every frame is a chunk of its own, stored bitshuffle-LZ4
        alone in the same blocks, and the codec chosen decodes block by block inside kernels
        (the compiled one; the steps' compiled decompression asked for), else None."""
        start, stop = int(start), int(stop)
        if not (self.compiled_decompression and 0 <= start < stop <= self.nframes):
            return None
        codec = codec_for(True)
        if codec is None or not codec.fused:
            return None
        chunks = []  # (dataset, index in its file, file)
        for k, a, b, _ in self._pieces(start, stop):
            if self._raw_chunk_frames[k] != 1:
                return None
            chunks += [(self._handles[k][1], i, self.files[k]) for i in range(a, b)]
        stored = stored_frames(chunks, int(np.prod(self.frame_shape)), self.dtype, start,
                               self._raw if holder is None else holder)
        if stored is not None:
            self.frames_from_raw_chunks += len(chunks)
        return stored

    def read_monitor(self, monitor: str, base_dir=".") -> np.ndarray:
        if monitor_kind(self.files[0], monitor) == COLUMN_FILE:
            return _column_monitor(monitor, base_dir, self.nframes, self.source.growing)
        path = monitor  # a dataset of the files
        parts = []
        for (f, _), name, n in zip(self._handles, self.files, self.source.frames_per_file):
            try:
                obj = f[path]
            except KeyError:
                raise RawDataError(f"{name}: monitor dataset {path} not found") from None
            except Exception as exc:
                raise RawDataError(f"{name}: monitor dataset {path} cannot be opened: {exc}") from None
            if not hasattr(obj, "shape") or obj.ndim != 1:
                raise RawDataError(f"{name}: monitor {path} must be a 1-D dataset with one value "
                                   f"per frame, got {getattr(obj, 'shape', type(obj).__name__)}")
            try:
                # a scan being collected: the values of the frames taken (more may be there)
                values = np.asarray(obj[:n] if self.source.growing else obj[()], dtype=np.float64)
            except Exception as exc:
                raise RawDataError(f"{name}: monitor {path} cannot be read: {exc}") from None
            parts.append((name, values, n))
        values = np.concatenate([v for _, v, _ in parts])
        if values.size != self.nframes:
            detail = ", ".join(f"{nm}: {v.size} values for {n} frames" for nm, v, n in parts)
            raise RawDataError(f"{self.files[0]}: monitor {path} has {values.size} values, "
                               f"expected one per frame ({self.nframes}) [{detail}]")
        if not np.all(np.isfinite(values)):
            i = int(np.flatnonzero(~np.isfinite(values))[0])
            raise RawDataError(f"{self.locate(i)[0]}: monitor {path} is not finite at frame {i}")
        return values


def _column_monitor(monitor: str, base_dir, nframes: int, growing: bool) -> np.ndarray:
    """The values of a monitor column file (relative to base_dir), RawDataError naming it."""
    try:
        return read_column_file(os.path.join(os.fspath(base_dir), monitor), nframes,
                                more_allowed=growing, shown=monitor)
    except ValueError as exc:
        raise RawDataError(str(exc)) from None
    except OSError as exc:
        raise RawDataError(f"{exc.filename or monitor}: the monitor cannot be read: "
                           f"{exc.strerror or exc}") from None


class _FileStack(FrameStack):
    def __init__(self, source: FrameSource, first: np.ndarray | None = None):
        super().__init__(source)
        self._cache = {0: first} if first is not None else {}
        self._one_at_a_time = threading.Lock()  # (fabio's logger is shared: images.read_fabio)

    def _frame(self, i: int) -> np.ndarray:
        cached = self._cache.pop(i, None)
        if cached is not None:
            return cached
        path = self.files[i]
        data, nframes = read_fabio(path, where=f"{path}: frame {i}")
        if nframes != 1:
            raise RawDataError(f"{path}: frame {i}: holds {nframes} frames, expected one frame "
                               "per file")
        if data.shape != self.frame_shape:
            raise RawDataError(f"{path}: frame {i}: shape {data.shape}, expected "
                               f"{self.frame_shape} like the other frames of the scan "
                               f"({self.files[0]})")
        if data.dtype != self.dtype and not np.can_cast(data.dtype, self.dtype, "safe"):
            raise RawDataError(f"{path}: frame {i}: pixel type {data.dtype}, expected "
                               f"{self.dtype} like the other frames of the scan ({self.files[0]})")
        return data

    def read_monitor(self, monitor: str, base_dir=".") -> np.ndarray:
        try:
            if monitor_kind(self.files[0], monitor) == CBF_HEADER:
                return header_monitor(self.files, header_field(monitor))
        except ValueError as exc:
            raise RawDataError(str(exc)) from None
        except OSError as exc:
            raise RawDataError(f"{exc.filename or monitor}: the monitor cannot be read: "
                               f"{exc.strerror or exc}") from None
        return _column_monitor(monitor, base_dir, self.nframes, self.source.growing)

    def _read_piece(self, k, a, b, out, offset):
        with self._one_at_a_time:  # (threads of a step may read frames side by side)
            out[0] = self._frame(k)


# --------------------------------------------------------------------------------------
# Opening
# --------------------------------------------------------------------------------------
def _open_h5(path: str, swmr: bool = False) -> h5py.File:
    return open_hdf5(path, RawDataError, swmr=swmr)


def _datasets_3d(f, limit: int = 5) -> list[str]:
    found = []

    def visit(name, obj):
        if len(found) < limit and getattr(obj, "ndim", 0) == 3:
            found.append("/" + name)

    try:
        f.visititems(visit)
    except Exception:  # pragma: no cover - a broken tree
        pass
    return found


def _check_virtual_sources(path: str, dset) -> None:
    """A virtual dataset fills missing sources silently; insist that they exist."""
    if not getattr(dset, "is_virtual", False):
        return
    base = os.path.dirname(path)
    for vs in dset.virtual_sources():
        if vs.file_name == ".":
            continue
        target = vs.file_name if os.path.isabs(vs.file_name) else os.path.join(base, vs.file_name)
        if not os.path.exists(target):
            raise RawDataError(f"{path}: dataset {dset.name} is virtual and its source file "
                               f"{vs.file_name} does not exist")


def _open_hdf5_files(files: Sequence[str], dataset: str, first_frames: int | None = None):
    """The stack of `files` at `dataset`; with first_frames, a scan still being collected:
    its files opened as an SWMR reader, in order, until they hold first_frames frames (the
    files after them, perhaps still being written, are not touched)."""
    handles = []
    growing = first_frames is not None
    try:
        counts, shape, dtype = [], None, None
        for path in files:
            if growing and sum(counts) >= first_frames:
                break
            f = _open_h5(path, swmr=growing)
            handles.append((f, None))
            try:
                dset = f[dataset]
            except KeyError:
                hint = _datasets_3d(f)
                raise RawDataError(f"{path}: dataset {dataset} not found" +
                                   (f" (3-D datasets in the file: {hint})" if hint else "")) from None
            except Exception as exc:
                raise RawDataError(f"{path}: dataset {dataset} cannot be opened (missing "
                                   f"external file?): {exc}") from None
            if not hasattr(dset, "shape") or not hasattr(dset, "dtype"):
                raise RawDataError(f"{path}: {dataset} is a group, expected a 3-D dataset "
                                   "(frames, rows, cols)")
            if dset.ndim != 3:
                raise RawDataError(f"{path}: dataset {dataset} has shape {dset.shape}, expected "
                                   "a 3-D stack (frames, rows, cols)")
            if dset.dtype.kind not in "iuf":
                raise RawDataError(f"{path}: dataset {dataset} has type {dset.dtype}, expected "
                                   "numbers")
            _check_virtual_sources(path, dset)
            handles[-1] = (f, dset)
            fshape = tuple(int(n) for n in dset.shape[1:])
            if shape is None:
                shape, dtype = fshape, dset.dtype
            elif fshape != shape:
                raise RawDataError(f"{path}: frames are {fshape}, expected {shape} like "
                                   f"{files[0]}")
            counts.append(int(dset.shape[0]))
        dtype = np.result_type(*[d.dtype for _, d in handles])
        if growing:
            counts = _first_frames(counts, first_frames)
        source = FrameSource("hdf5", tuple(files[:len(counts)]), dataset, tuple(counts), shape,
                             dtype.str, growing=growing)
        return _HDF5Stack(source, handles)
    except BaseException:
        for f, _ in handles:
            f.close()
        raise


def _first_frames(counts: Sequence[int], first_frames: int) -> list[int]:
    """Frames per file of a scan's first first_frames frames (the files that hold them);
    as many as there are when the files hold fewer (the caller checks the count)."""
    kept, total = [], 0
    for n in counts:
        if total >= first_frames:
            break
        kept.append(min(int(n), first_frames - total))
        total += kept[-1]
    return kept


def _open_frame_files(files: Sequence[str]):
    first, nframes = read_fabio(files[0], where=f"{files[0]}: frame 0")
    if first.ndim != 2:
        raise RawDataError(f"{files[0]}: frame 0: a {first.ndim}-D image, expected a 2-D frame")
    if nframes != 1:
        raise RawDataError(f"{files[0]}: frame 0: holds {nframes} frames, expected one frame "
                           "per file")
    source = FrameSource("files", tuple(files), None, (1,) * len(files),
                         tuple(int(n) for n in first.shape), first.dtype.str)
    return _FileStack(source, first)


def _check_count(stack: FrameStack, expected_frames: int | None, what: str) -> None:
    if stack.source.growing and stack.nframes < int(expected_frames):
        stack.close()
        raise RawDataError(f"{what}: found {stack.nframes} frames, expected at least "
                           f"{int(expected_frames)} (the scan is still being collected: "
                           "frames that had landed are gone, the file truncated or replaced?)")
    if expected_frames is not None and stack.nframes != int(expected_frames):
        unit = "files" if stack.kind == "files" else "frames"
        stack.close()
        raise RawDataError(f"{what}: found {stack.nframes} {unit}, expected "
                           f"{int(expected_frames)} frames")


def open_frames(data: str, dataset: str = DEFAULT_DATASET, *, base_dir=".",
                expected_frames: int | None = None, first_frames: int | None = None) -> FrameStack:
    """Open the raw frames named by `data` (relative to base_dir) read-only.

    data: an HDF5 file (or a glob of HDF5 files, stacked in natural order) with the frames
    at `dataset`, or a glob pattern of single-frame files read with fabio.  With
    expected_frames, a different frame count is a RawDataError giving both numbers.
    first_frames: a scan still being collected, of which the stack holds the first
    first_frames frames (fewer are a RawDataError); its source is `growing`.
    """
    data = os.fspath(data)
    files = resolve_files(data, base_dir)
    if first_frames is not None:
        expected_frames = first_frames
    if is_hdf5_path(data):
        stack = _open_hdf5_files(files, dataset or DEFAULT_DATASET, first_frames)
        what = files[0] if len(files) == 1 else f"{data} ({len(files)} HDF5 files)"
        what += f" dataset {stack.dataset}"
    else:
        if first_frames is not None:
            files = files[:first_frames]
        stack = _open_frame_files(files)
        if first_frames is not None:
            stack.source = replace(stack.source, growing=True)
        what = files[0] if len(files) == 1 else f"{data} ({len(files)} frame files)"
    _check_count(stack, expected_frames, what)
    return stack


def open_frame_source(source: FrameSource, *, check: bool = True, read_threads: int = 1,
                      compiled_decompression: bool = False) -> FrameStack:
    """Open exactly the files a FrameSource lists (as recorded by ingest).  With check, the
    files must still be what ingest saw: the same size and sampled content (fingerprints),
    frame counts and frame shape; else RawDataError naming the file and saying to ingest
    the scan again.  read_threads: chunks decompressed at once (FrameStack.read_threads);
    compiled_decompression: FrameStack.compiled_decompression."""
    files = list(source.files)
    for f in files:
        if not os.path.isfile(f):
            raise RawDataError(f"{f}: raw data file does not exist (recorded at ingest)")
    if check and source.fingerprints:
        changed = changed_files(files, source.fingerprints)
        if changed:
            more = f" and {len(changed) - 1} more file(s)" if len(changed) > 1 else ""
            raise RawDataError(
                f"{changed[0]}{more}: changed since the scan was ingested (size or content "
                "differ from what ingest recorded, whatever the modification time says): run "
                "ingest_scan for this scan again (snakemake --forcerun ingest_scan, or delete its "
                "scan.nxs) so that every result is made from the data as they are now")
    if source.kind == "hdf5":
        # a scan still being collected (growing): the frames ingest took; more may be there
        stack = _open_hdf5_files(files, source.dataset or DEFAULT_DATASET,
                                 source.nframes if source.growing else None)
    else:
        stack = _open_frame_files(files)
    if check:
        if stack.source.frames_per_file != tuple(source.frames_per_file):
            for f, n_now, n_then in zip(files, stack.source.frames_per_file,
                                        source.frames_per_file):
                if n_now != n_then:
                    stack.close()
                    raise RawDataError(f"{f}: has {n_now} frames now, {n_then} when it was "
                                       "ingested" + (" (truncated or replaced while the scan "
                                                     "was being collected?)" if source.growing
                                                     else ""))
        if tuple(stack.frame_shape) != tuple(source.frame_shape):
            stack.close()
            raise RawDataError(f"{files[0]}: frames are {stack.frame_shape} now, "
                               f"{tuple(source.frame_shape)} when they were ingested")
    stack.read_threads = max(1, int(read_threads))
    stack.compiled_decompression = bool(compiled_decompression)
    return stack


def check_readable(stack: FrameStack, frames: Sequence[int] | str = (0, -1), *,
                   chunk_frames: int = 16) -> dict:
    """Read the listed frames (negative indices count from the end), or every frame with
    frames="all"; RawDataError names the file and frame that fails.  Returns
    {index: frame} for listed frames ({} for "all")."""
    if isinstance(frames, str):
        if frames != "all":
            raise ValueError(f"frames must be indices or 'all', got {frames!r}")
        for _ in stack.iter_chunks(chunk_frames, reuse_buffer=True):
            pass
        return {}
    out = {}
    for i in frames:
        j = stack._normalize(i)
        if j not in out:
            out[j] = stack.read_frame(j)
    return out


# --------------------------------------------------------------------------------------
# Ingest: what the raw frames of a scan are
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RawScan:
    """What inspecting the raw frames of a scan found: where they are (with the fingerprint
    of every file), the monitor, and the pixel-wise maximum of the frames read back
    (frames_read: their numbers), a picture of the scan for files that cannot link frames."""

    source: FrameSource
    monitor: np.ndarray | None
    maximum: np.ndarray | None = None
    frames_read: tuple = ()


def inspect_raw_scan(data: str, dataset: str, nframes: int, detector_shape, *,
                     monitor: str = "", base_dir=".", check_frames=(0, -1),
                     chunk_frames: int = 16, in_progress: bool = False,
                     fingerprint_reach: str = "sampled", log=None) -> RawScan:
    """Open a scan's raw frames read-only and check them: frame count = nframes, frame shape
    = the detector's, the listed frames (or "all") readable, the monitor one value per
    frame; fingerprint every file (hklflow.raw.rawfiles, with fingerprint_reach).  in_progress:
    a scan still being collected, of which the first nframes frames are taken (its files,
    still growing, are not fingerprinted)."""
    log = log or logging.getLogger(__name__)
    with open_frames(data, dataset, base_dir=base_dir, expected_frames=nframes,
                     first_frames=nframes if in_progress else None) as stack:
        log.info("raw data: %r", stack)
        if tuple(stack.frame_shape) != tuple(detector_shape):
            raise RawDataError(f"{stack.files[0]}: frames are {stack.frame_shape[0]}x"
                               f"{stack.frame_shape[1]} (rows x cols), but the detector has "
                               f"{detector_shape[0]}x{detector_shape[1]} pixels")
        frames = check_readable(stack, check_frames, chunk_frames=chunk_frames) or {
            0: stack.read_frame(0)}  # (all of them read: the first stands for them)
        maximum = np.fmax.reduce(np.stack(list(frames.values())), axis=0)
        checked = check_frames if isinstance(check_frames, str) else tuple(
            sorted({i % stack.nframes for i in check_frames}))
        log.info("frames %s read back fine", checked)
        values = None
        if monitor:
            values = stack.read_monitor(monitor, base_dir)
            bad = int(np.count_nonzero(values <= 0))
            if bad:
                log.warning("monitor %s is <= 0 on %d of %d frames", monitor, bad, values.size)
        source = stack.source
    if source.growing:
        return RawScan(source, values, maximum, tuple(sorted(frames)))
    prints = tuple(fingerprint(f, fingerprint_reach) for f in source.files)
    if fingerprint_reach == "full":
        log.info("every byte of %d raw file(s) hashed (fingerprint: full): %.3g GB",
                 len(prints), sum(p["size"] for p in prints) / 1e9)
    return RawScan(replace(source, fingerprints=prints), values, maximum, tuple(sorted(frames)))
