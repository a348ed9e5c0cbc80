"""The one atomic writer: a file (or a folder) is there whole or not at all.  Every
rename into place in hklflow goes through here: every output (files/, the HDF5 ones through
files.h5), the workflow's settings files (planning.jobs.SettingsFiles), the detector facts
cached by the model, the watcher's state.  Here, below the model, so that every floor may
use it; light on purpose: the Snakefile imports it when it plans, and every cluster job
plans again."""
from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import time
import uuid
from pathlib import Path
from typing import Iterator

HOST = socket.gethostname()
STALE_SECONDS = 7 * 24 * 3600  # a temporary file of another machine untouched this long


def _temporary(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.parent / f".{path.name}.{os.getpid()}@{HOST}.{uuid.uuid4().hex[:12]}.tmp"


@contextlib.contextmanager
def atomic_path(path, *, moved_from=None) -> Iterator[Path]:
    """Yield a temporary path in the folder of `path`; on a clean exit it is renamed over
    `path`, on any exception (SIGTERM included, as steps turn it into SystemExit) it is
    removed and `path` is left as it was.  Its name holds the writer's process and machine,
    so that a later run can tell one a SIGKILL left behind (remove_stale_temporaries).

    moved_from: a complete file (on the same file system) moved to the temporary path
    first, to be changed there and renamed over `path` (a file adopted without copying);
    on an exception it is moved back, so nothing is lost."""
    path = Path(path)
    tmp = _temporary(path)
    if moved_from is not None:
        os.replace(moved_from, tmp)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException as exc:
        if moved_from is not None:
            os.replace(tmp, moved_from)
        else:
            tmp.unlink(missing_ok=True)
        # the file the error cut short, for a message (steps._run: a full disk), once
        if not any(n.startswith(WRITING) for n in getattr(exc, "__notes__", ())):
            exc.add_note(f"{WRITING}{path}")
        raise


WRITING = "while writing "  # (the note atomic_path adds to an error, the file after it)


@contextlib.contextmanager
def atomic_folder(path) -> Iterator[Path]:
    """Yield a new, empty temporary folder beside `path` (a folder that must not exist yet);
    on a clean exit it is renamed to `path`, on any exception it is removed with what it
    holds."""
    path = Path(path)
    tmp = _temporary(path)
    tmp.mkdir()
    try:
        yield tmp
        os.rename(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def copy_atomically(source, path) -> Path:
    """A copy of the file `source` at `path`, whole or not at all."""
    with atomic_path(path) as tmp:
        shutil.copyfile(source, tmp)
    return Path(path)


def write_text_atomically(path, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_json_atomically(path, data) -> Path:
    return write_text_atomically(path, json.dumps(data, indent=1, default=str) + "\n")


def remove_stale_temporaries(path) -> list[Path]:
    """Remove the temporary files that atomic_path made for `path` and that no process is
    writing any more (killed before it could remove them): those of this machine whose
    process is gone, and those of another machine (a cluster's node) untouched for
    STALE_SECONDS.  Returns what was removed."""
    path = Path(path)
    pattern = re.compile(re.escape(f".{path.name}.") + r"(\d+)@(.+)\.[0-9a-f]{12}\.tmp")
    removed = []
    try:
        candidates = list(path.parent.iterdir())
    except OSError:
        return removed
    for tmp in candidates:
        found = pattern.fullmatch(tmp.name)
        if not found:
            continue
        pid, host = int(found.group(1)), found.group(2)
        try:
            if host == HOST:
                if process_alive(pid):
                    continue
            elif time.time() - tmp.stat().st_mtime < STALE_SECONDS:
                continue
            tmp.unlink()
            removed.append(tmp)
        except OSError:  # (gone meanwhile, or not ours to remove)
            continue
    return removed


def process_alive(pid: int) -> bool:
    """Whether process `pid` runs on this machine (one killed that nobody has reaped yet, a
    zombie, does not; another user's does)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True
