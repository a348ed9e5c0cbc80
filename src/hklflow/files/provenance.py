"""What every output records about how it was made: software, parameters, inputs, host, time."""
from __future__ import annotations

import datetime
import hashlib
import os
import platform
import socket
import sys
from importlib import metadata
from pathlib import Path

TRACKED_PACKAGES = ("hklflow", "numpy", "scipy", "h5py", "hdf5plugin", "nexusformat", "pyFAI",
                    "fabio", "gemmi", "numba", "snakemake")


def software_versions() -> dict:
    out = {"python": platform.python_version()}
    for name in TRACKED_PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def file_digest(path, *, max_bytes: int | None = 64 << 20) -> str:
    """sha256 of a file (of its first max_bytes for large raw files, said in the result)."""
    h = hashlib.sha256()
    n = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
            n += len(chunk)
            if max_bytes is not None and n >= max_bytes:
                return f"sha256[first {n} bytes]:{h.hexdigest()}"
    return f"sha256:{h.hexdigest()}"


def provenance(program: str, parameters: dict | None = None, inputs=(), argv=None) -> dict:
    """A JSON-serialisable provenance record."""
    return {
        "program": program,
        "argv": list(sys.argv if argv is None else argv),
        "parameters": parameters or {},
        "inputs": {str(p): (file_digest(p) if Path(p).is_file() else "missing") for p in inputs},
        "software": software_versions(),
        "host": socket.gethostname(),
        "user": os.environ.get("USER", ""),
        "platform": platform.platform(),
        "working_directory": os.getcwd(),
        "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
