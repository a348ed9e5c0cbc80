"""Where the raw files of a scan are, and whether they are still what ingest saw.

Light on purpose (no h5py): the Snakefile uses it at parse time to list every raw file of
every scan as an input of its ingest job.

A raw file's fingerprint is its size, its mtime and the sha256 of FINGERPRINT_BLOCKS blocks
of FINGERPRINT_BLOCK bytes spread evenly over it (first and last included; the whole file
when it is smaller).  Ingest records it; every later step that reads frames checks size and
sampled hash (:func:`changed_files`), so a file replaced with its old mtime kept (``rsync
-a``, ``cp -p``) is caught without reading it whole.  A different mtime alone (a copied
experiment) is not a change.
"""
from __future__ import annotations

import glob
import hashlib
import os
import re
from dataclasses import dataclass

HDF5_SUFFIXES = (".h5", ".hdf5", ".nxs", ".hdf", ".nx5", ".nx")  # the one list of them
FINGERPRINT_BLOCKS = 8
FINGERPRINT_BLOCK = 4096
DEFAULT_DATASET = "/entry/data/data"  # where a raw HDF5 file holds its frames


@dataclass(frozen=True)
class FrameSource:
    """Where the frames of one scan live: what an ingested NeXus scan file records.

    kind is "hdf5" (each file holds a (n, rows, cols) stack at `dataset`) or "files"
    (one frame per file, in the listed order).  files are absolute paths.  fingerprints:
    one hklflow.rawfiles.fingerprint per file as ingest saw it (empty: not recorded).
    growing: the first frames of a scan still being collected (hklflow watch): the files
    may hold more frames than frames_per_file says, and only those are read.
    """

    kind: str
    files: tuple[str, ...]
    dataset: str | None
    frames_per_file: tuple[int, ...]
    frame_shape: tuple[int, int]
    dtype: str
    fingerprints: tuple = ()
    growing: bool = False

    def __post_init__(self):
        if self.kind not in ("hdf5", "files"):
            raise ValueError(f"FrameSource kind must be 'hdf5' or 'files', got {self.kind!r}")
        if len(self.files) != len(self.frames_per_file):
            raise ValueError("FrameSource: one frame count per file is needed")
        if self.fingerprints and len(self.fingerprints) != len(self.files):
            raise ValueError("FrameSource: one fingerprint per file is needed")

    @property
    def nframes(self) -> int:
        return int(sum(self.frames_per_file))


def is_hdf5_path(path) -> bool:
    return str(path).lower().endswith(HDF5_SUFFIXES)


def natural_key(text: str):
    """Sort key that orders embedded numbers by value: f_2 < f_10."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(text))]


EIGER_MASTER_SUFFIX = "_master.h5"  # DECTRIS: PREFIX_master.h5 beside PREFIX_data_00000N.h5


def is_eiger_master(data) -> bool:
    return str(data).endswith(EIGER_MASTER_SUFFIX)


def eiger_data_files(master: str) -> list[str]:
    """The data files beside an EIGER master file, in order (by DECTRIS's naming: the
    master links them by these names)."""
    prefix = master[:-len(EIGER_MASTER_SUFFIX)]
    return sorted((f for f in glob.glob(glob.escape(prefix) + "_data_[0-9]*.h5")
                   if os.path.isfile(f)), key=natural_key)


def matching_files(data: str, base_dir=".") -> list[str]:
    """The files `data` names (a path or a glob pattern, relative to base_dir), in natural
    order, as given (relative stays relative); [] when there are none.  An EIGER master
    file names itself and its data files."""
    pattern = os.path.normpath(os.path.join(os.fspath(base_dir), data))
    if glob.has_magic(data):
        return sorted((f for f in glob.glob(pattern) if os.path.isfile(f)), key=natural_key)
    if is_eiger_master(data) and os.path.isfile(pattern):
        return [pattern] + eiger_data_files(pattern)
    return [pattern] if os.path.isfile(pattern) else []


class RawFileOwners:
    """Which scan entry each raw file (HDF5: file and dataset) belongs to, so that one file
    given to two entries is refused when the plan is made (it would be reduced twice and
    merged with double weight).  HDF5 files are compared by their real path (few, and often
    reached through links); frame files by their normalised absolute path (millions of
    them: no link resolution)."""

    def __init__(self):
        self._owner: dict = {}

    def claim(self, scan_id: str, files, dataset: str = "") -> None:
        """Record `files` as scan_id's; ValueError naming both entries when one already
        belongs to another."""
        for f in files:
            key = ((os.path.realpath(f), dataset) if is_hdf5_path(f)
                   else (os.path.abspath(f), ""))
            owner = self._owner.setdefault(key, scan_id)
            if owner != scan_id:
                what = f"{f} (dataset {dataset})" if is_hdf5_path(f) else f
                raise ValueError(f"{what} is also the data of {owner}: every raw file belongs "
                                 "to one scan entry")


def fingerprint(path) -> dict:
    """{size, mtime_ns, sampled_sha256} of a file (module docstring)."""
    st = os.stat(path)
    h = hashlib.sha256()
    with open(path, "rb") as f:
        if st.st_size <= FINGERPRINT_BLOCKS * FINGERPRINT_BLOCK:
            h.update(f.read())
        else:
            last = st.st_size - FINGERPRINT_BLOCK
            for i in range(FINGERPRINT_BLOCKS):
                f.seek(last * i // (FINGERPRINT_BLOCKS - 1))
                h.update(f.read(FINGERPRINT_BLOCK))
    return {"size": int(st.st_size), "mtime_ns": int(st.st_mtime_ns),
            "sampled_sha256": h.hexdigest()}


def changed_files(files, recorded) -> list[str]:
    """The files whose size or sampled content differ from their recorded fingerprints (a
    missing file counts as changed)."""
    changed = []
    for path, then in zip(files, recorded):
        try:
            now = fingerprint(path)
        except OSError:
            changed.append(path)
            continue
        if now["size"] != then["size"] or now["sampled_sha256"] != then["sampled_sha256"]:
            changed.append(path)
    return changed
