"""How many frames of a raw scan are complete and safe to read while the detector may still
be writing it: what a watcher polls (hklflow.live).

A frame counts only once it is complete, and only the leading run of complete frames
counts (frames are used in order: frame k is rotation angle k).  Three layouts
(:func:`layout_of` guesses one from the scans table's ``data``):

``hdf5``
    One HDF5 file holding a (frames, rows, cols) stack, written with SWMR (the dataset
    grows by resize + flush) or not.  The file is opened as an SWMR reader
    (:func:`open_hdf5_for_reading`); a frame is complete when every chunk covering it is
    stored (size > 0), as Diamond's DLSFileWatcher decides.  A stack that cannot show its
    progress (contiguous, or chunks allocated before they are written) counts whole: such a
    file must only be observed once closed.  Virtual datasets are refused (name their
    source files instead).
``eiger``
    A DECTRIS master file ``PREFIX_master.h5`` whose ``/entry/data`` links (external links)
    every planned ``PREFIX_data_00000N.h5``.  Data files are written without SWMR and are
    complete only when closed: one counts when it opens, its dataset holds
    image_nr_high - image_nr_low + 1 frames and every one of them is stored.  Data files
    count in order up to the first incomplete or missing one (a link to a file that does not
    exist yet is normal).  The master says the planned frames (nimages x ntrigger).
``cbf``
    One Pilatus CBF file per frame (a glob pattern, natural order).  A file counts when its
    binary section is all there: X-Binary-Size bytes after the binary marker, read from
    the header and the file size only (no decoding: cheap for thousands of files), with no
    hole before its end (SEEK_HOLE).  A gap in the files' frame numbers stops the count (a
    file not written yet, or lost).

While a file is being written, HDF5 may fail to open or read it in ways that pass
(TRANSIENT_HDF5_ERRORS): those are retried a few times and then taken as "not complete
yet" (Observation.waiting says why); any other failure is a RawDataError naming the file.

:func:`observe` compares with the previous observation, which it is given (JSON-able with
Observation.to_dict/from_dict, so that a watcher keeps it across restarts): a counted file
replaced (another inode or device), shrunk, gone, or a complete-frame count that went down
is reported in Observation.problem (not raised: the watcher reports it and does not merge
the scan).  So are an HDF5 stack's counted frames whose chunks now lie past the file's end
or in a hole of it (SEEK_HOLE), and a CBF file with a hole in its frame: a file cut short
and written on past the cut, whose size never shrank between two looks.  Frames found
complete before in the same, unshrunk file are not checked again, so a long scan costs
only its new frames (and a file that is unreadable for a moment keeps its count).

Raw files are only read: HDF5 files opened read-only (locking off, as everywhere in
hklflow), CBF files opened for reading their header.
"""
from __future__ import annotations

import glob
import os
import re
import time
from dataclasses import asdict, dataclass, fields

import h5py

from ..base.errors import RawDataError
from ..files import nxmx
from ..files.cbf_header import CBF_BINARY_MARKER, CbfHeaderUnfinished, NotCbfError, read_cbf_header
from ..files.h5 import open_h5
from ..model.scan import DEFAULT_DATASET
from ..raw.rawfiles import is_hdf5_path, matching_files, natural_key

__all__ = ["CBF_BINARY_MARKER", "LAYOUTS", "Observation", "TRANSIENT_HDF5_ERRORS",
           "is_transient_hdf5_error", "layout_of", "observe", "open_hdf5_for_reading"]

LAYOUTS = ("hdf5", "eiger", "cbf")

# HDF5 errors that a file being written gives a reader for a moment (they pass once the
# writer has flushed).  The first four are those Diamond's file watcher retries
# (python-dlstbx swmr/h5check.py and services/filewatcher.py DLSFileWatcher); the others
# were seen here with h5py 3.16 / HDF5 2.0 reading files that another process was writing:
# "file signature not found" (file created, nothing flushed yet: also any file that is not
# HDF5 at all, which then waits for ever with that reason), "truncated file: eof =" (not all
# flushed), "file is already open for write" (a latest-format file open for writing, read
# without SWMR), "ring type mismatch" (only the superblock's first bytes on disk).
TRANSIENT_HDF5_ERRORS = (
    "address of object past end of allocation",
    "truncated file: eof =",
    "file is not already open for SWMR writing",
    "bad object header version number",
    "unable to open file",
    "bad symbol table",
    "file signature not found",
    "file is already open for write",
    "ring type mismatch",
)

DEFAULT_ATTEMPTS = 3
DEFAULT_RETRY_DELAY = 0.2  # seconds between attempts


def is_transient_hdf5_error(exc: BaseException) -> bool:
    """Whether `exc` is one of the failures a file being written gives (TRANSIENT_HDF5_ERRORS)."""
    if isinstance(exc, FileNotFoundError):
        return False
    # h5py puts HDF5's own reason in parentheses after its summary, which itself may read
    # "Unable to open file (...)" for every failure: match the reason only
    text = str(exc)
    reason = text[text.find("(") + 1:].lower()
    return any(known.lower() in reason for known in TRANSIENT_HDF5_ERRORS)


# --------------------------------------------------------------------------------------
# Opening
# --------------------------------------------------------------------------------------
def _open_hdf5(path: str) -> h5py.File:
    """As open_hdf5_for_reading, raising h5py's own errors (for the retries)."""
    try:
        return open_h5(path, swmr=True, libver="latest")
    except FileNotFoundError:
        raise
    except Exception as exc:
        if is_transient_hdf5_error(exc):
            raise
        # e.g. "SWMR read access flag not the same for file that is already open": this
        # process holds the file open without SWMR, and HDF5 shares that open file
        try:
            return open_h5(path)
        except Exception:
            raise exc from None


def open_hdf5_for_reading(path) -> h5py.File:
    """A raw HDF5 file opened read-only, as an SWMR reader where possible.

    The rule (measured with h5py 3.16 / HDF5 2.0): SWMR read mode opens every file, SWMR
    written or not, open for writing by another process or closed; a file open for SWMR
    writing opens only in SWMR read mode ("file is already open for write" otherwise, file
    locking off or not).  So SWMR read is tried first, and a plain read-only open where it
    fails otherwise than as a file being written does (e.g. this process already holds the
    file open without SWMR: "SWMR read access flag not the same").  RawDataError naming
    the file when it cannot be opened."""
    path = os.fspath(path)
    try:
        return _open_hdf5(path)
    except FileNotFoundError:
        raise RawDataError(f"{path}: raw data file does not exist") from None
    except Exception as exc:
        why = ("still being written? try again later" if is_transient_hdf5_error(exc)
               else "truncated or corrupt file?")
        raise RawDataError(f"{path}: cannot open as HDF5 ({why}): {exc}") from None


def _read_hdf5(path: str, read, attempts: int, retry_delay: float):
    """(read(open file), None), or (None, why) when the file does not exist or is still
    unreadable after `attempts` tries with a transient error; RawDataError on any other."""
    last = None
    for attempt in range(max(1, int(attempts))):
        if attempt:
            time.sleep(retry_delay)
        try:
            with _open_hdf5(path) as f:
                return read(f), None
        except FileNotFoundError:
            return None, f"{path}: does not exist yet"
        except RawDataError:
            raise
        except Exception as exc:
            if not is_transient_hdf5_error(exc):
                raise RawDataError(f"{path}: cannot read as HDF5 (truncated or corrupt "
                                   f"file?): {type(exc).__name__}: {exc}") from None
            last = exc
    return None, f"{path}: not readable yet (being written?): {last}"


# --------------------------------------------------------------------------------------
# Observation
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Observation:
    """What one look at a raw scan found.

    source: the path or pattern observed (as given); dataset: the HDF5 dataset (hdf5
    layout only).  files: the files whose frames are counted, in order, with
    frames_per_file and identity (st_dev, st_ino, size) of each.  planned_frames: the
    frames the complete scan will have, when its files say (Eiger), else None.
    problem: the scan changed under the watcher (a counted file replaced, shrunk or gone,
    fewer complete frames than before); it stays in every later observation made from this
    one.  waiting: why the frames after the counted ones do not count yet, when known.
    """

    layout: str
    source: str
    dataset: str | None
    complete_frames: int
    planned_frames: int | None
    files: tuple[str, ...]
    frames_per_file: tuple[int, ...]
    identity: tuple[tuple[int, int, int], ...]
    problem: str | None = None
    waiting: str | None = None

    def to_dict(self) -> dict:
        """JSON-able (lists for tuples)."""
        d = asdict(self)
        d["files"] = list(self.files)
        d["frames_per_file"] = list(self.frames_per_file)
        d["identity"] = [list(i) for i in self.identity]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Observation":
        names = {f.name for f in fields(cls)}
        missing = names - set(d) - {"problem", "waiting"}
        if missing:
            raise ValueError(f"observation lacks {sorted(missing)}")
        d = {k: v for k, v in d.items() if k in names}
        d["files"] = tuple(d["files"])
        d["frames_per_file"] = tuple(int(n) for n in d["frames_per_file"])
        d["identity"] = tuple(tuple(int(x) for x in i) for i in d["identity"])
        return cls(**d)

    def counted(self) -> dict:
        """{path: (identity, frames)} of the files this observation counted."""
        return {path: (identity, frames) for path, identity, frames
                in zip(self.files, self.identity, self.frames_per_file)}


@dataclass
class _Count:
    files: list
    frames: list
    identity: list
    planned: int | None = None
    waiting: str | None = None
    problem: str | None = None  # (found by the look itself: _cut_chunks, _cbf_hole)

    def add(self, path: str, frames: int, identity) -> None:
        self.files.append(path)
        self.frames.append(int(frames))
        self.identity.append(tuple(int(x) for x in identity))


def _identity(path: str):
    """(st_dev, st_ino, size), None when the file does not exist."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (int(st.st_dev), int(st.st_ino), int(st.st_size))


def _same_file(then, now) -> bool:
    """The same file, not shrunk (then, now: identities)."""
    return now is not None and tuple(then[:2]) == tuple(now[:2]) and now[2] >= then[2]


def layout_of(data: str) -> str:
    """The layout of a scans table's `data`: "eiger" (a *_master.h5 file), "hdf5" (another
    HDF5 file), "cbf" (CBF frame files) or "files" (other frame files, which observe
    cannot check)."""
    name = str(data).lower()
    if name.endswith("_master.h5"):
        return "eiger"
    if is_hdf5_path(name):
        return "hdf5"
    if name.endswith(".cbf"):
        return "cbf"
    return "files"


def observe(layout: str, path_or_pattern: str, dataset: str | None = DEFAULT_DATASET,
            previous: Observation | None = None, *, base_dir=".",
            frame_shape: tuple[int, int] | None = None, attempts: int = DEFAULT_ATTEMPTS,
            retry_delay: float = DEFAULT_RETRY_DELAY) -> Observation:
    """How many frames of the scan at `path_or_pattern` (relative to base_dir) are complete
    now (module docstring).  dataset: the stack's HDF5 path (hdf5 layout; the Eiger master's
    links say theirs).  previous: this scan's last observation (problems are reported
    against it; frames it found complete are not checked again).  frame_shape: (rows,
    cols) the frames must have (RawDataError otherwise).  attempts, retry_delay: tries
    and seconds between them for a file that fails as a file being written does."""
    source = str(path_or_pattern)
    dataset = (dataset or DEFAULT_DATASET) if layout == "hdf5" else None
    if previous is not None and (previous.layout, previous.source, previous.dataset) != (
            layout, source, dataset):
        raise ValueError(f"previous observation is of {previous.layout} {previous.source} "
                         f"{previous.dataset or ''}, not of {layout} {source} {dataset or ''}")
    known_files = previous.counted() if previous is not None else {}
    if layout == "hdf5":
        count = _observe_stack(source, dataset, known_files, base_dir, frame_shape, attempts,
                               retry_delay, previous)
    elif layout == "eiger":
        count = _observe_eiger(source, known_files, base_dir, frame_shape, attempts, retry_delay)
    elif layout == "cbf":
        count = _observe_cbf(source, known_files, base_dir, frame_shape, previous)
    elif layout == "files":
        raise RawDataError(f"{source}: cannot tell when these frame files are complete: "
                           "a scan followed while it is collected must be CBF files, an "
                           "HDF5 file or an Eiger master file")
    else:
        raise ValueError(f"unknown layout {layout!r}: one of {', '.join(LAYOUTS)}")
    complete = int(sum(count.frames))
    return Observation(layout=layout, source=source, dataset=dataset,
                       complete_frames=complete, planned_frames=count.planned,
                       files=tuple(count.files), frames_per_file=tuple(count.frames),
                       identity=tuple(count.identity),
                       problem=_problem(source, previous, complete,
                                        dict(zip(count.files, count.identity)), count.problem),
                       waiting=count.waiting)


def _problem(source: str, previous: Observation | None, complete: int,
             seen: dict, found: str | None) -> str | None:
    """What changed under the watcher since `previous` (None: nothing); seen: the
    identities of the files just counted (the others are looked at again); found: what
    this look found wrong itself (a hole), the more precise."""
    if previous is not None and previous.problem:
        return previous.problem
    if previous is None or found:
        return found
    for path, then in zip(previous.files, previous.identity):
        now = seen[path] if path in seen else _identity(path)
        if now is None:
            return (f"{path}: gone, it held complete frames before: deleted or replaced "
                    "during acquisition; it is not merged")
        if tuple(now[:2]) != tuple(then[:2]):
            return (f"{path}: another file now (device/inode changed): replaced during "
                    "acquisition; it is not merged")
        if now[2] < then[2]:
            return (f"{path}: {now[2]} bytes now, {then[2]} before: truncated or replaced "
                    "during acquisition; it is not merged")
    if complete < previous.complete_frames:
        return (f"{source}: {complete} complete frames now, {previous.complete_frames} "
                "before: truncated or replaced during acquisition; it is not merged")
    return None


# --------------------------------------------------------------------------------------
# HDF5 stacks
# --------------------------------------------------------------------------------------
def _stack(f: h5py.File, path: str, dataset: str, frame_shape, missing_ok: bool = False):
    """The stack at `dataset`, refreshed (None when missing and missing_ok)."""
    dset = f.get(dataset)
    if not isinstance(dset, h5py.Dataset):
        if missing_ok:
            return None
        raise RawDataError(f"{path}: no dataset {dataset} (expected the (frames, rows, cols) "
                           "stack there)")
    # an SWMR reader sees the writer's latest flush only after this.  No other handle to
    # the dataset may be open: refresh() reopens it, and with h5py 3.16 / HDF5 2.0 the
    # other handle then breaks the file's close ("Can't decrement id ref count") and later
    # crashes the process
    dset.id.refresh()
    if dset.ndim != 3:
        raise RawDataError(f"{path}: dataset {dataset} has shape {dset.shape}; expected a "
                           "(frames, rows, cols) stack")
    if frame_shape is not None and tuple(dset.shape[1:]) != tuple(frame_shape):
        raise RawDataError(f"{path}: frames of {dataset} are {tuple(dset.shape[1:])}; "
                           f"expected {tuple(frame_shape)}")
    if dset.is_virtual:
        raise RawDataError(f"{path}: dataset {dataset} is virtual: a scan being collected is "
                           "followed through its source files, name those")
    return dset


def _stored_frames(dset, start: int = 0, places: dict | None = None) -> int:
    """Frames 0.. of `dset` whose chunks are all stored, counting from `start` (the frames
    before it known complete).  places: filled with {first frame of a chunk: [(byte
    offset, size)] of its stored tiles}, of every chunk (where h5py can list them)."""
    nframes = int(dset.shape[0])
    plist = dset.id.get_create_plist()
    if dset.chunks is None or plist.get_alloc_time() == h5py.h5d.ALLOC_TIME_EARLY:
        return nframes  # cannot show progress (module docstring)
    start = min(int(start), nframes)
    chunk_frames, chunk_rows, chunk_cols = dset.chunks
    tiles = [(r, c) for r in range(0, dset.shape[1], chunk_rows)
             for c in range(0, dset.shape[2], chunk_cols)]
    first_chunk = start - start % chunk_frames
    if hasattr(dset.id, "chunk_iter"):
        # one pass over the chunk index: get_chunk_info_by_coord walks it from the start
        # on every call, which makes a frame-by-frame count quadratic in the frames
        stored = set()

        def note(info):
            if info.size > 0 and places is not None:
                places.setdefault(int(info.chunk_offset[0]), []).append(
                    (int(info.byte_offset), int(info.size)))
            if info.size > 0 and info.chunk_offset[0] >= first_chunk:
                stored.add(tuple(info.chunk_offset))

        dset.id.chunk_iter(note)
        is_stored = stored.__contains__
    else:
        def is_stored(offset):
            return dset.id.get_chunk_info_by_coord(offset).size > 0

    frame = start
    while frame < nframes:
        chunk = frame - frame % chunk_frames
        if not all(is_stored((chunk, r, c)) for r, c in tiles):
            break
        frame = min(chunk + chunk_frames, nframes)
    return frame


def _holes(path: str) -> tuple[int | None, list[tuple[int, int]]]:
    """The file's size now (None: gone) and its holes, [(start, end)] byte ranges that were
    never written ([] where the file system cannot tell)."""
    holes = []
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None, []
    try:
        size, pos = os.fstat(fd).st_size, 0
        if not hasattr(os, "SEEK_HOLE"):
            return size, []
        while pos < size:
            hole = os.lseek(fd, pos, os.SEEK_HOLE)
            if hole >= size:
                break
            try:
                pos = os.lseek(fd, hole, os.SEEK_DATA)
            except OSError:  # (ENXIO) a hole up to the end
                pos = size
            holes.append((hole, pos))
    except OSError:  # (EINVAL) not supported here
        return size, []
    finally:
        os.close(fd)
    return size, holes


def _cut_chunks(path: str, places: dict, frames: int) -> list[int]:
    """The first frames of the chunks among the first `frames` whose stored bytes lie past
    the file's end or in a hole: a file cut short (truncated) while it was written, and
    written on past the cut, reads zeros (or fails to decompress) there."""
    # (the size after the chunks were listed: the writer goes on meanwhile)
    size, holes = _holes(path)
    if size is None:
        return []
    return sorted(first for first, tiles in places.items() if first < frames and any(
        offset + n > size or any(offset < end and start < offset + n for start, end in holes)
        for offset, n in tiles))


def _observe_stack(source, dataset, known_files, base_dir, frame_shape, attempts, retry_delay,
                   previous=None):
    path = os.path.normpath(os.path.join(os.fspath(base_dir), source))
    if glob.has_magic(source):
        raise RawDataError(f"{source}: a scan followed while it is collected is one HDF5 "
                           "file (or an Eiger master file), not a pattern of HDF5 files")
    count = _Count([], [], [])
    identity = _identity(path)
    if identity is None:
        count.waiting = f"{path}: does not exist yet"
        return count
    known = known_files.get(path)
    start = known[1] if known is not None and _same_file(known[0], identity) else 0
    places = {}
    frames, why = _read_hdf5(
        # (places.clear(): a failed attempt's are not kept)
        path, lambda f: places.clear() or _stored_frames(_stack(f, path, dataset, frame_shape),
                                                         start, places),
        attempts, retry_delay)
    if frames is None:  # unreadable for now: what was complete in this file still is
        frames, count.waiting = start, why
    cut = _cut_chunks(path, places, frames)
    if cut:
        text = (f"{path}: frame indices {cut[0]} to {cut[-1]} of {dataset} lie where the "
                "file holds no data (a hole, or past its end): it was cut short (truncated) "
                "during acquisition and written on; it is not merged")
        # a chunk counted before, or one cut at the last look too (a writer without SWMR
        # may flush a chunk's index before its data: a new chunk is given one more look)
        if cut[0] < start or (previous is not None and previous.waiting == text):
            count.problem = text
        else:
            frames, count.waiting = cut[0], text
    if frames > 0:
        count.add(path, frames, identity)
    return count


# --------------------------------------------------------------------------------------
# Eiger
# --------------------------------------------------------------------------------------
def _eiger_master(f: h5py.File, master: str):
    """([(data file, dataset)] in order, planned frames or None) from an Eiger master."""
    group = f.get("/entry/data")
    if not isinstance(group, h5py.Group):
        raise RawDataError(f"{master}: no group /entry/data (expected an Eiger master file "
                           "linking its data files there)")
    folder = os.path.dirname(master)
    targets = []
    for name in sorted((n for n in group if n.startswith("data_")), key=natural_key):
        link = group.get(name, getlink=True)
        if not isinstance(link, h5py.ExternalLink):
            raise RawDataError(f"{master}: /entry/data/{name} is not an external link to a "
                               "data file (expected the Eiger layout)")
        targets.append((os.path.normpath(os.path.join(folder, link.filename)), link.path))
    return targets, nxmx.eiger_frame_count(f, master)


def _eiger_data_file(f: h5py.File, path: str, dataset: str, first_frame: int, frame_shape):
    """(frames, None) of a complete data file, or (None, why) of one not complete yet."""
    dset = _stack(f, path, dataset, frame_shape, missing_ok=True)
    if dset is None:
        return None, f"{path}: no dataset {dataset} yet (being written?)"
    low, high = dset.attrs.get("image_nr_low"), dset.attrs.get("image_nr_high")
    if low is None or high is None:
        planned = int(dset.shape[0])
    else:
        if int(low) != first_frame:
            raise RawDataError(f"{path}: holds frames {int(low)} to {int(high)}; expected "
                               f"them to start at frame {first_frame} (1-based), after the "
                               "data files before it")
        planned = int(high) - int(low) + 1
    if dset.shape[0] != planned:
        return None, (f"{path}: {dset.shape[0]} of its {planned} frames allocated (being "
                      "written?)")
    stored = _stored_frames(dset)
    if stored < planned:
        return None, f"{path}: {stored} of its {planned} frames written (being written?)"
    return planned, None


def _observe_eiger(source, known_files, base_dir, frame_shape, attempts, retry_delay):
    master = os.path.normpath(os.path.join(os.fspath(base_dir), source))
    count = _Count([], [], [])
    found, why = _read_hdf5(master, lambda f: _eiger_master(f, master), attempts, retry_delay)
    if found is None:
        count.waiting = why
        return count
    targets, count.planned = found
    for path, dataset in targets:
        identity = _identity(path)
        if identity is None:
            count.waiting = f"{path}: does not exist yet"
            break
        known = known_files.get(path)
        if known is not None and tuple(known[0]) == identity:
            frames = known[1]  # a closed data file that has not changed
        else:
            first = sum(count.frames) + 1
            result, why = _read_hdf5(
                path, lambda f: _eiger_data_file(f, path, dataset, first, frame_shape),
                attempts, retry_delay)
            frames, why = result if result is not None else (None, why)
            if frames is None:
                count.waiting = why
                break
        count.add(path, frames, identity)
    return count


# --------------------------------------------------------------------------------------
# CBF
# --------------------------------------------------------------------------------------
def _frame_number(path: str) -> int | None:
    numbers = re.findall(r"\d+", os.path.basename(path))
    return int(numbers[-1]) if numbers else None


def _cbf_binary_end(path: str, size: int, frame_shape) -> int | None:
    """Where the binary section of the CBF file `path` (of `size` bytes) ends, None while it
    is not all there."""
    try:
        header = read_cbf_header(path)
    except (NotCbfError, CbfHeaderUnfinished):  # (no ###CBF yet, or the header being written)
        return None
    if header.data_start is None:  # (its binary section's MIME header being written)
        return None
    values = header.binary
    try:
        binary_size = int(values["x-binary-size"])
    except (KeyError, ValueError):
        raise RawDataError(f"{path}: not a CBF frame file: no X-Binary-Size before its "
                           "binary section") from None
    if frame_shape is not None and "x-binary-size-fastest-dimension" in values:
        shape = (int(values.get("x-binary-size-second-dimension", 1)),
                 int(values["x-binary-size-fastest-dimension"]))
        if shape != tuple(frame_shape):
            raise RawDataError(f"{path}: frame of {shape[0]} x {shape[1]} pixels (rows x "
                               f"columns); expected {frame_shape[0]} x {frame_shape[1]}")
    end = header.data_start + binary_size
    return end if size >= end else None


def _cbf_hole(path: str, end: int) -> tuple[int, int] | None:
    """The first hole (start, end bytes) before `end` in `path`: a file cut short
    (truncated) while it was written, and written on past the cut, reads zeros there,
    which the byte-offset code decodes without complaint."""
    _size, holes = _holes(path)
    return next(((a, min(b, end)) for a, b in holes if a < end), None)


def _observe_cbf(source, known_files, base_dir, frame_shape, previous=None):
    count = _Count([], [], [])
    files = matching_files(source, base_dir)
    number_before = None
    for path in files:
        number = _frame_number(path)
        if number_before is not None and number is not None and number != number_before + 1:
            count.waiting = (f"{path}: follows frame file number {number_before}: the files "
                             "in between are missing (not written yet?)")
            break
        identity = _identity(path)
        if identity is None:
            count.waiting = f"{path}: does not exist (any more)"
            break
        known = known_files.get(path)
        if not (known is not None and tuple(known[0]) == identity):
            end = _cbf_binary_end(path, identity[2], frame_shape)
            if end is None:
                count.waiting = f"{path}: binary section not complete yet (being written?)"
                break
            hole = _cbf_hole(path, end)
            if hole is not None:
                text = (f"{path}: bytes {hole[0]} to {hole[1]} of its frame hold no data (a "
                        "hole): it was cut short (truncated) during acquisition and written "
                        "on; it is not merged")
                # a file counted before, or holed at the last look too (a writer may leave
                # a hole for a moment: a new file is given one more look)
                if known is not None or (previous is not None and previous.waiting == text):
                    count.problem = text
                else:
                    count.waiting = text
                break
        count.add(path, 1, identity)
        number_before = number
    if not files:
        count.waiting = f"{source}: no files yet"
    return count
