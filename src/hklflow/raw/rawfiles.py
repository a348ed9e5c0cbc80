"""Where the raw files of a scan are, and whether they are still what ingest saw.

Light on purpose (no h5py): the Snakefile uses it at parse time to list every raw file of
every scan as an input of its ingest job.

A raw file's fingerprint is its identity as the file system tells it (size, mtime, ctime,
inode) and the sha256 of FINGERPRINT_BLOCKS blocks of FINGERPRINT_BLOCK bytes spread evenly
over it (first and last included; the whole file when it is smaller); with the reach
``full`` also the sha256 of every byte.  Ingest records it (sampled).

* Planning (:class:`RawChangeCheck`): a file whose identity is the recorded one is unchanged
  (a stat, no read).  Any write changes the ctime, which nobody can set back, so a file
  replaced or overwritten with its old mtime kept (``rsync -a``, ``cp -p``, ``touch -r``) is
  hashed again and compared: a different content plans its ingest again.  The same content
  (a copied or moved experiment, a chmod) is not a change.
  With ``reduction.ingest.fingerprint: full`` planning also keeps the sha256 of every byte,
  taken at the first plan that checks the entry so (the setting is planning's, not ingest's:
  switching it makes no scan file again), and compares it whenever a file's identity changes.
* Every step that reads frames checks size and sampled hash again (:func:`changed_files`).

The blind spot of the default reach: a change of the same size that misses every sampled
block (one frame overwritten in place in an uncompressed file).  ``full`` sees it, at the
cost of reading every byte once at the first plan and again when a file's identity changes.
"""
from __future__ import annotations

import glob
import hashlib
import json
import os
import re
import time
from pathlib import Path

from ..base.atomic import write_text_atomically

HDF5_SUFFIXES = (".h5", ".hdf5", ".nxs", ".hdf", ".nx5", ".nx")  # the one list of them
FINGERPRINT_BLOCKS = 8
FINGERPRINT_BLOCK = 4096
FINGERPRINT_REACHES = ("sampled", "full")


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
    them: no link resolution).  claim_content catches the same data under another name (a
    hard link, a copy)."""

    def __init__(self):
        self._owner: dict = {}
        self._content: dict = {}

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

    def claim_content(self, scan_id: str, files, dataset: str = "", repeats=()) -> None:
        """Record the content of scan_id's raw files: the size and sampled hash of each HDF5
        file (few), of the first and the last frame file (a frame's header holds its time);
        ValueError naming both entries when another entry's are the same, unless one of
        them is listed in `repeats` (reduction.ingest.deliberate_repeats).  A file that
        cannot be read, or an empty one (no data: ingest refuses it), is left to ingest,
        which names it."""
        picks = list(files) if is_hdf5_path(files[0]) else [files[0], files[-1]]
        try:
            prints = [fingerprint(f) for f in picks]
        except OSError:
            return
        if not all(p["size"] for p in prints):
            return
        key = (dataset, tuple((p["size"], p["sampled_sha256"]) for p in prints))
        owner = self._content.setdefault(key, scan_id)
        if owner != scan_id and scan_id not in repeats and owner not in repeats:
            raise ValueError(
                f"{picks[0]}{' ...' if len(picks) > 1 else ''} holds the same data as the "
                f"files of {owner} (size and content by fingerprint: a copy or a link of them?): "
                "merged twice, they would count double; if this entry deliberately repeats "
                f"that one, list {scan_id} in reduction.ingest.deliberate_repeats")


def fingerprint(path, reach: str = "sampled") -> dict:
    """{size, mtime_ns, ctime_ns, inode, sampled_sha256} of a file, with sha256 (every
    byte) for the reach "full" (module docstring)."""
    if reach not in FINGERPRINT_REACHES:
        raise ValueError(f"fingerprint reach must be one of {FINGERPRINT_REACHES}, got {reach!r}")
    with open(path, "rb") as f:
        st = os.fstat(f.fileno())
        h = hashlib.sha256()
        if st.st_size <= FINGERPRINT_BLOCKS * FINGERPRINT_BLOCK:
            h.update(f.read())
        else:
            last = st.st_size - FINGERPRINT_BLOCK
            for i in range(FINGERPRINT_BLOCKS):
                f.seek(last * i // (FINGERPRINT_BLOCKS - 1))
                h.update(f.read(FINGERPRINT_BLOCK))
        out = {"size": int(st.st_size), "mtime_ns": int(st.st_mtime_ns),
               "ctime_ns": int(st.st_ctime_ns), "inode": int(st.st_ino),
               "sampled_sha256": h.hexdigest()}
        if reach == "full":
            f.seek(0)
            out["sha256"] = hashlib.file_digest(f, "sha256").hexdigest()
    return out


def _identity(st: os.stat_result) -> list[int]:
    return [int(st.st_size), int(st.st_mtime_ns), int(st.st_ctime_ns), int(st.st_ino)]


def same_content(now: dict, then: dict) -> bool:
    """Whether two fingerprints say the same content: size and sampled hash, and the hash of
    every byte where both have it."""
    return (now["size"] == then["size"] and now["sampled_sha256"] == then["sampled_sha256"]
            and ("sha256" not in now or "sha256" not in then or now["sha256"] == then["sha256"]))


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


# beside Snakemake's own records (jobs.SETTINGS_FOLDER's sibling): what planning found of each
# ingested entry's raw files, and the markers of entries whose raw data changed
RAW_RECORDS_FOLDER = ".snakemake/hklflow/raw"


def raw_change_marker(scan_id: str, folder=RAW_RECORDS_FOLDER) -> str:
    """The file that stands for a change of an entry's raw data (SAMPLE/TLABEL/ENTRY): an
    input of its ingest job once it exists, rewritten (newer than scan.nxs: the job is
    planned again) whenever planning finds a raw file's content changed."""
    return f"{folder}/{scan_id}.changed"


class RawChangeCheck:
    """Planning's check that an ingested entry's raw files still hold what ingest saw (module
    docstring).  Per entry it keeps, in `folder`, each file's identity as last found with the
    recorded content, so that a plan stats the files and reads none unless one was written
    to since; the record is read from the scan file (read_recorded: scan file -> (files,
    fingerprints), hklflow.files.scan) only when that file is new.  reach "full": the sha256
    of every byte kept too (from ingest's record where it has one, an earlier hklflow's)."""

    def __init__(self, read_recorded, folder=RAW_RECORDS_FOLDER, reach: str = "sampled"):
        if reach not in FINGERPRINT_REACHES:
            raise ValueError(f"fingerprint reach must be one of {FINGERPRINT_REACHES}, "
                             f"got {reach!r}")
        self.read_recorded = read_recorded
        self.folder = Path(folder)
        self.full = reach == "full"

    def changed(self, scan_id: str, scan_file, files) -> list[str]:
        """The raw files (as given) whose content is not what ingest recorded in scan_file;
        [] when the entry is not ingested yet, ingest recorded no fingerprints (a scan in
        progress) or the files are others than ingest saw (Snakemake's input trigger
        plans those)."""
        try:
            stamp = _identity(os.stat(scan_file))
        except FileNotFoundError:
            return []
        state_file = self.folder / f"{scan_id}.json"
        state = None
        if state_file.is_file():
            try:
                state = json.loads(state_file.read_text())
            except ValueError:  # a cache: made again
                state = None
        given = [str(f) for f in files]
        recorded = None
        if state is None or state.get("scan") != stamp or state.get("files") != given:
            recorded_files, recorded = self.read_recorded(scan_file)
            if not recorded or not _same_paths(files, recorded_files):
                return []
            state = {"scan": stamp, "files": given,
                     "identity": [[p["size"], p["mtime_ns"], p.get("ctime_ns"), p.get("inode")]
                                  for p in recorded]}
            dirty = True
        else:
            dirty = False
        sums = state.get("sha256") if self.full else None
        if self.full and (sums is None or len(sums) != len(files)):
            if recorded is None:
                recorded = self.read_recorded(scan_file)[1]
            sums = state["sha256"] = [p.get("sha256") for p in recorded]
            dirty = True
        changed = []
        for i, path in enumerate(files):
            try:
                identity = _identity(os.stat(path))
            except OSError:
                changed.append(path)
                continue
            if identity == state["identity"][i] and not (self.full and sums[i] is None):
                continue
            if recorded is None:  # (only the identities are kept between plans)
                recorded = self.read_recorded(scan_file)[1]
            then = dict(recorded[i], **({"sha256": sums[i]} if self.full and sums[i] else {}))
            now = fingerprint(path, "full" if self.full or "sha256" in then else "sampled")
            if same_content(now, then):
                state["identity"][i] = identity
                if self.full:  # (the first full check: every byte hashed now, kept)
                    sums[i] = now["sha256"]
                dirty = True
            else:
                changed.append(path)
        if dirty:
            write_text_atomically(state_file, json.dumps(state, separators=(",", ":")))
        return changed

    def marker_input(self, scan_id: str, scan_file, files) -> tuple[list[str], list[str]]:
        """The entry's change marker as its ingest's input ([] before any change was seen)
        and the changed files (:meth:`changed`).  When there are any, the marker is
        rewritten, newer than the scan file, listing them.  When there are none (a change
        undone before ingest ran again is no change), a marker made since the last ingest
        is removed (the input that ingest recorded are the same again) and an older one is
        kept, older than the scan file."""
        marker = raw_change_marker(scan_id, self.folder)
        changed = self.changed(scan_id, scan_file, files)
        born = _marker_birth(marker)
        if changed:
            # the time seen too: Snakemake takes an input whose content it saw as unchanged
            now = time.time_ns()
            write_text_atomically(marker, f"first written {born or now}\nchanged since ingest, "
                                  f"seen {now}:\n" + "".join(f"{f}\n" for f in changed))
        elif born is not None and os.path.exists(scan_file):
            scan_mtime = os.stat(scan_file).st_mtime_ns
            if born > scan_mtime:
                os.unlink(marker)
            elif os.stat(marker).st_mtime_ns >= scan_mtime:
                os.utime(marker, ns=(scan_mtime - 10**9, scan_mtime - 10**9))
        return ([marker] if os.path.exists(marker) else []), changed


def _same_paths(files, others) -> bool:
    if [os.path.abspath(f) for f in files] == [os.path.abspath(f) for f in others]:
        return True
    return [os.path.realpath(f) for f in files] == [os.path.realpath(f) for f in others]


def _marker_birth(marker) -> int | None:
    """When a change marker was first written (ns), None if there is none."""
    try:
        with open(marker) as f:
            return int(f.readline().split()[-1])
    except (OSError, ValueError, IndexError):
        return None
