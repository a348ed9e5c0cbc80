"""Writing a file so that it is there whole or not at all: every output of hklflow (files.h5
for the HDF5 ones) and the workflow's settings files (jobs.SettingsFiles).  Light on
purpose: the Snakefile imports it when it plans, and every cluster job plans again."""
from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import time
import uuid
from pathlib import Path
from typing import Iterator

HOST = socket.gethostname()
STALE_SECONDS = 7 * 24 * 3600  # a temporary file of another machine untouched this long


@contextlib.contextmanager
def atomic_path(path) -> Iterator[Path]:
    """Yield a temporary path in the folder of `path`; on a clean exit it is renamed over
    `path`, on any exception (SIGTERM included, as steps turn it into SystemExit) it is
    removed and `path` is left as it was.  Its name holds the writer's process and machine,
    so that a later run can tell one a SIGKILL left behind (remove_stale_temporaries)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{os.getpid()}@{HOST}.{uuid.uuid4().hex[:12]}.tmp"
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
                if _process_alive(pid):
                    continue
            elif time.time() - tmp.stat().st_mtime < STALE_SECONDS:
                continue
            tmp.unlink()
            removed.append(tmp)
        except OSError:  # (gone meanwhile, or not ours to remove)
            continue
    return removed


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True
