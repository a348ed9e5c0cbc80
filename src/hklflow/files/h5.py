"""What every hklflow file writer and reader shares: opening HDF5 files, writing atomically,
and the provenance record.

* HDF5 files are opened with file locking off (it fails on NFS; no two hklflow jobs ever
  write one file) and with hdf5plugin's compression filters registered (detector data,
  volumes).
* Every output is written to a temporary file in its destination folder and renamed over
  the destination only when complete (:func:`atomic_path`): a failed or killed write leaves
  nothing that looks complete.
* Every output carries its provenance record (:mod:`hklflow.provenance`) as JSON in an
  NXnote of an NXprocess group ``process``.
"""
from __future__ import annotations

import contextlib
import ctypes
import functools
import json
import os
import struct
import uuid
from pathlib import Path
from typing import Callable, Iterator

import h5py
import hdf5plugin  # noqa: F401  (registers bitshuffle/LZ4/... with HDF5)
import numpy as np

from .. import __version__
from ..errors import FileFormatError
from ..geometry import DetectorGeometry


# --------------------------------------------------------------------------------------
# Opening
# --------------------------------------------------------------------------------------
def open_h5(path, mode: str = "r", **kwargs) -> h5py.File:
    """h5py.File with HDF5 file locking off and the compression filters registered (kwargs:
    h5py.File's, e.g. the chunk cache rdcc_nbytes)."""
    return h5py.File(os.fspath(path), mode, locking=False, **kwargs)


@functools.lru_cache(maxsize=1)
def _nxfile_class():
    import nexusformat.nexus as nx

    class _NXFileNoLocking(nx.NXFile):
        """nexusformat's NXFile, opening the HDF5 file with locking=False every time."""

        def __init__(self, name, mode="r", recursive=None, **kwargs):
            kwargs.setdefault("locking", False)
            super().__init__(name, mode, recursive, **kwargs)

        def open(self, **kwargs):
            kwargs.setdefault("locking", False)
            return super().open(**kwargs)

    return _NXFileNoLocking


@functools.lru_cache(maxsize=1)
def bitshuffle_library():
    """The bitshuffle package's compiled module as a C library (its C API); None without it."""
    try:
        import bitshuffle.ext
        return ctypes.CDLL(bitshuffle.ext.__file__)
    except (ImportError, OSError):  # pragma: no cover - HDF5's filter instead
        return None


@functools.lru_cache(maxsize=None)
def bitshuffle_function(name: str):
    """A C function of the bitshuffle library, run on one thread; None without it.
    bshuf_decompress_lz4 / bshuf_compress_lz4 (in, out, elements, element size, block size
    in elements, 0: the default) -> bytes consumed / written, < 0 an error: they work in the
    caller's buffers, where the Python functions return new arrays (and with that copy,
    reading frames was no faster than HDF5's filter).  ctypes releases the GIL during the
    call."""
    lib = bitshuffle_library()
    function = getattr(lib, name, None) if lib is not None else None
    if function is None:  # pragma: no cover - HDF5's filter instead
        return None
    function.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t,
                         ctypes.c_size_t]
    function.restype = ctypes.c_int64
    try:  # the OpenMP of bitshuffle's build (found through its module's dependencies)
        get_threads, set_threads = lib.omp_get_max_threads, lib.omp_set_num_threads
    except AttributeError:  # pragma: no cover - built without OpenMP: one thread anyway
        return function

    def one_thread(*args):
        # OpenMP over all cores competes with the threads that process the frames, and
        # stalls badly when a core is busy; the setting is per thread: put it back
        threads = get_threads()
        set_threads(1)
        try:
            return function(*args)
        finally:
            set_threads(threads)

    return one_thread


BITSHUFFLE_FILTER = 32008  # HDF5 filter id; cd_values: major, minor, item size, block, codec
BITSHUFFLE_LZ4 = 2  # its codec value for LZ4


def bitshuffle_lz4_only(dset) -> bool:
    """Whether bitshuffle-LZ4 of the dataset's own item size is its one filter: its raw
    chunks are then bitshuffle_function's to decompress."""
    if dset.chunks is None or dset.is_virtual:
        return False
    plist = dset.id.get_create_plist()
    if plist.get_nfilters() != 1:
        return False
    code, _, values, _ = plist.get_filter(0)
    return (code == BITSHUFFLE_FILTER and len(values) >= 5
            and values[2] == dset.dtype.itemsize and values[4] == BITSHUFFLE_LZ4)


def file_descriptor(dset) -> int | None:
    """The descriptor of the file that holds `dset`'s chunks, where HDF5 reads it as a plain
    file (the sec2 driver): chunk_iter's byte offsets are then offsets in it, a userblock
    included.  None for other drivers (in memory, split, family files)."""
    try:
        return int(dset.file.id.get_vfd_handle()) if dset.file.driver == "sec2" else None
    except Exception:  # pragma: no cover - a driver without a handle
        return None


def decompress_chunk(dset, corner, raw, out, compiled: bool = False,
                     location: tuple[int, int] | None = None) -> bool:
    """Read the raw chunk of `dset` at `corner` into `raw` (uint8, its stored size) and
    decompress it into `out` (C-contiguous, the chunk's uncompressed size) with bitshuffle's
    C function, or with compiled, files.bitshuffle_lz4's loop over its blocks (15% less
    CPU, less than half with GFNI; it loads numba, ~0.7 s in a process that had not: for
    callers that stream whole scans or volumes and run compiled kernels anyway); False
    when it is not plainly bitshuffle-LZ4 of that size (a filter skipped, unreadable) or
    the library is missing: then HDF5 must read it.  A damaged chunk (its blocks do not add
    up or do not decode) is a FileFormatError naming the file and the chunk: HDF5's filter
    would read past the end of a truncated one and crash the process.

    location: (file_descriptor(dset), the chunk's byte offset from chunk_iter) of a chunk
    stored with its filters applied: read with one pread, without HDF5's look-up of the
    chunk (10-12 instead of 22-43 us a chunk of a volume, from the page cache)."""
    decompress = bitshuffle_function("bshuf_decompress_lz4")
    if decompress is None:  # pragma: no cover - HDF5's filter instead
        return False
    if location is not None:
        try:
            if os.preadv(location[0], [raw], location[1]) != raw.size:
                return False
        except OSError:
            return False
    else:
        try:
            skipped_filters, _ = dset.id.read_direct_chunk(corner, out=raw)
        except Exception:
            return False
        if skipped_filters:
            return False
    if raw.size < 12:
        return False
    # chunk header: uncompressed bytes (uint64), block size in bytes (uint32), big-endian
    nbytes, block_bytes = struct.unpack(">QI", raw[:12].tobytes())
    if nbytes != out.nbytes or not out.flags.c_contiguous:
        return False
    block = block_bytes // out.itemsize or bitshuffle_block_elements(out.itemsize)
    if compiled:
        from .bitshuffle_lz4 import OWN_UNTRANSPOSE, decompress as loop
        consumed = loop(raw[12:], out.reshape(-1).view(np.uint8), out.itemsize, block,
                        OWN_UNTRANSPOSE)
    elif block % 8 == 0:
        # bitshuffle's function trusts the block sizes: past the end of a cut chunk it
        # reads on (a segmentation fault, in HDF5's filter too), hence the check first
        if not _blocks_fit(raw, out.size, out.itemsize, block):
            raise _damaged(dset, corner, raw.size)
        consumed = decompress(raw.ctypes.data + 12, out.ctypes.data, out.size, out.itemsize,
                              block)
    else:
        return False
    if consumed < 0:  # (HDF5's filter would read it the same way, or crash)
        raise _damaged(dset, corner, raw.size)
    return consumed == raw.size - 12


def _damaged(dset, corner, nbytes: int) -> FileFormatError:
    return FileFormatError(f"{dset.file.filename}: the chunk at {tuple(corner)} of {dset.name} "
                           "is damaged (its bitshuffle-LZ4 blocks do not add up to its "
                           f"{nbytes} bytes or do not decode: truncated or corrupt file?)")


def _blocks_fit(raw: np.ndarray, elements: int, itemsize: int, block: int) -> bool:
    """Whether the block sizes of a bitshuffle-LZ4 chunk (raw, its 12-byte header
    included) add up to its length: bshuf_decompress_lz4 trusts them and reads past the end
    of a truncated chunk (a segmentation fault, not an error)."""
    full, last = divmod(elements, block)
    sizes = [block] * full + ([last - last % 8] if last >= 8 else [])
    data = raw.tobytes()
    pos = 12
    for _ in sizes:
        if pos + 4 > len(data):
            return False
        pos += 4 + int.from_bytes(data[pos:pos + 4], "big")
    return pos + (elements - sum(sizes)) * itemsize == len(data)


@functools.lru_cache(maxsize=None)
def bitshuffle_block_elements(itemsize: int) -> int:
    """The block size (elements) bitshuffle's HDF5 filter uses by default for this item size
    (what hdf5plugin.Bitshuffle() asks for)."""
    lib = bitshuffle_library()
    lib.bshuf_default_block_size.restype = ctypes.c_size_t
    return int(lib.bshuf_default_block_size(ctypes.c_size_t(itemsize)))


# --------------------------------------------------------------------------------------
# Atomic writes
# --------------------------------------------------------------------------------------
@contextlib.contextmanager
def atomic_path(path) -> Iterator[Path]:
    """Yield a temporary path in the folder of `path`; on a clean exit it is renamed over
    `path`, on any exception (SIGTERM included, as steps turn it into SystemExit) it is
    removed and `path` is left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex[:12]}.tmp"
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text_atomically(path, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_json_atomically(path, data) -> Path:
    return write_text_atomically(path, json.dumps(data, indent=1, default=str) + "\n")


def write_nexus_atomically(root, path, finish: Callable | None = None) -> Path:
    """Write the nexusformat tree `root` (an NXroot) to `path` atomically.

    finish(h5file), if given, runs on the open h5py.File after the tree is written (for what
    nexusformat cannot write: external links, virtual datasets)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        with _nxfile_class()(str(tmp), "w") as f:
            f.writefile(root)
            f.file.attrs["file_name"] = str(path.resolve())
            if finish is not None:
                finish(f.file)
    return path


# --------------------------------------------------------------------------------------
# Provenance
# --------------------------------------------------------------------------------------
def provenance_group(record: dict):
    """An NXprocess (nexusformat) holding program, version, date and the provenance record
    (provenance.provenance(...)) as JSON in an NXnote."""
    import nexusformat.nexus as nx

    proc = nx.NXprocess()
    proc["program"] = nx.NXfield(str(record.get("program", "hklflow")))
    proc["version"] = nx.NXfield(str(record.get("software", {}).get("hklflow") or __version__))
    proc["date"] = nx.NXfield(str(record.get("time", "")))
    proc["note"] = nx.NXnote(type="application/json", description="hklflow provenance record",
                             data=json.dumps(record, indent=1, sort_keys=True, default=str))
    return proc


def write_provenance_h5(group: h5py.Group, record: dict, name: str = "process") -> None:
    """The same NXprocess as provenance_group, written with h5py into an open group."""
    proc = group.create_group(name)
    proc.attrs["NX_class"] = "NXprocess"
    proc["program"] = str(record.get("program", "hklflow"))
    proc["version"] = str(record.get("software", {}).get("hklflow") or __version__)
    proc["date"] = str(record.get("time", ""))
    note = proc.create_group("note")
    note.attrs["NX_class"] = "NXnote"
    note["type"] = "application/json"
    note["description"] = "hklflow provenance record"
    note["data"] = json.dumps(record, indent=1, sort_keys=True, default=str)


def provenance_of(group: h5py.Group, path, name: str = "process") -> dict:
    """The provenance record in group/name ({} if there is none)."""
    try:
        data = group[f"{name}/note/data"][()]
    except KeyError:
        return {}
    try:
        return json.loads(text(data))
    except json.JSONDecodeError as exc:
        raise FileFormatError(f"{path}: {group.name}/{name}/note/data is not JSON: {exc}") from None


def read_provenance(path, entry: str | None = None) -> dict:
    """The provenance record of an hklflow NeXus file (of its default entry)."""
    with open_h5(path) as f:
        return provenance_of(entry_group(f, path, entry), path)


# --------------------------------------------------------------------------------------
# Reading helpers
# --------------------------------------------------------------------------------------
def text(value) -> str:
    """A stored string (bytes, 0-d array or str) as str."""
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, np.ndarray) and value.shape == ():
        return text(value[()])
    return str(value)


def strings(values) -> list[str]:
    return [text(v) for v in np.atleast_1d(values)]


def string_field(values):
    """A nexusformat field of variable-length strings (a list)."""
    import nexusformat.nexus as nx

    return nx.NXfield([str(v) for v in values], dtype=h5py.string_dtype())


def text_field(value):
    """A scalar string field kept exactly (nexusformat strips plain str values)."""
    import nexusformat.nexus as nx

    return nx.NXfield(str(value), dtype=h5py.string_dtype())


def entry_group(f: h5py.File, path, entry: str | None = None) -> h5py.Group:
    """The named entry, else the file's @default entry, else its only NXentry."""
    if entry is None:
        entry = text(f.attrs.get("default", "")) or None
    if entry is None:
        entries = [k for k, v in f.items() if text(v.attrs.get("NX_class", "")) == "NXentry"]
        if len(entries) != 1:
            raise FileFormatError(f"{path}: expected one NXentry, found {entries}; name one")
        entry = entries[0]
    if entry not in f:
        raise FileFormatError(f"{path}: no entry /{entry}")
    return f[entry]


def get(group: h5py.Group, name: str, path):
    """group[name][()], or FileFormatError naming the file and the missing path."""
    try:
        return group[name][()]
    except KeyError:
        raise FileFormatError(f"{path}: {group.name}/{name} is missing") from None


def group(parent: h5py.Group, name: str, path) -> h5py.Group:
    try:
        return parent[name]
    except KeyError:
        raise FileFormatError(f"{path}: {parent.name}/{name} is missing") from None


# --------------------------------------------------------------------------------------
# The detector group (scan, calibration and orientation files)
# --------------------------------------------------------------------------------------
PONI_FIELDS = ("dist", "poni1", "poni2", "rot1", "rot2", "rot3")


def detector_group(geometry):
    """NXdetector of a geometry.DetectorGeometry: description (pyFAI name), distance and
    pixel sizes (mm), beam_center_y/x (where the direct beam hits, continuous pixels),
    dist/poni1/poni2 (m), rot1..3 (rad), shape, orientation (pyFAI's 1..4, as pyFAI's own
    NeXus detector group writes it)."""
    import nexusformat.nexus as nx

    p1, p2 = geometry.pixel_size
    bc = geometry.beam_centre()
    det = nx.NXdetector()
    det["description"] = nx.NXfield(geometry.detector)
    det["distance"] = nx.NXfield(geometry.dist * 1e3, units="mm")
    det["beam_center_x"] = nx.NXfield(bc["direct_beam_col"], units="pixel")
    det["beam_center_y"] = nx.NXfield(bc["direct_beam_row"], units="pixel")
    det["x_pixel_size"] = nx.NXfield(p2 * 1e3, units="mm")
    det["y_pixel_size"] = nx.NXfield(p1 * 1e3, units="mm")
    det["pixel_size"] = nx.NXfield(p1 * 1e3, units="mm")
    for k in PONI_FIELDS:
        det[k] = nx.NXfield(float(getattr(geometry, k)), units="rad" if k.startswith("rot") else "m")
    det["shape"] = nx.NXfield(np.asarray(geometry.shape, dtype=np.int64))
    det["orientation"] = nx.NXfield(np.int32(geometry.orientation), attrs={
        "value": ORIENTATION_NAMES[geometry.orientation],
        "doc": "pyFAI detector orientation 1..4: where pixel (0, 0) lies (hklflow "
               "docs/conventions.md)"})
    return det


# pyFAI's names of its detector orientations (pyFAI.detectors.orientation.Orientation)
ORIENTATION_NAMES = {1: "TopLeft", 2: "TopRight", 3: "BottomRight", 4: "BottomLeft"}


def read_detector_group(det: h5py.Group, wavelength: float, path):
    """The DetectorGeometry of a group written by detector_group (and a wavelength); a group
    without an orientation (written before hklflow recorded it) has pyFAI's default 3."""
    orientation = int(det["orientation"][()]) if "orientation" in det else 3
    try:
        return DetectorGeometry(text(get(det, "description", path)),
                                *(float(get(det, k, path)) for k in PONI_FIELDS),
                                wavelength=float(wavelength), orientation=orientation)
    except ValueError as exc:  # an orientation pyFAI does not know
        raise FileFormatError(f"{path}: {det.name}: {exc}") from None


def read_collection(grp: h5py.Group) -> dict:
    """The datasets of a group (and of its sub-groups, as nested dicts) as values."""
    return {k: read_collection(v) if isinstance(v, h5py.Group) else v[()] for k, v in grp.items()}
