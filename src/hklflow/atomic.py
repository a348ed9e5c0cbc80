"""Writing a file so that it is there whole or not at all: every output of hklflow (files.h5
for the HDF5 ones) and the workflow's settings files (jobs.SettingsFiles).  Light on
purpose: the Snakefile imports it when it plans, and every cluster job plans again."""
from __future__ import annotations

import contextlib
import json
import os
import uuid
from pathlib import Path
from typing import Iterator


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
