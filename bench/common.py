"""Pieces the benchmark scripts share: what machine they ran on, and how they report."""
from __future__ import annotations

import json
import os
import platform
from pathlib import Path

import numpy as np

NOISE_NOTE = "shared, noisy machine: every timing repeated, best reported with the spread"


def _first_field(path: str, key: str) -> str | None:
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(key):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def machine_info(**extra) -> dict:
    """CPU model, cores, memory, load and library versions (plus `extra` entries)."""
    mem = _first_field("/proc/meminfo", "MemTotal")
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        usable = os.cpu_count()
    import scipy

    return {"cpu_model": _first_field("/proc/cpuinfo", "model name") or "?",
            "cores_online": os.cpu_count(), "cores_usable": usable,
            "memory": f"{int(mem.split()[0]) / 2**20:.1f} GiB" if mem else "?",
            "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
            "python": platform.python_version(), "numpy": np.__version__,
            "scipy": scipy.__version__, **extra, "note": NOISE_NOTE}


def emit(report: dict, table_text: str, json_path: Path | None) -> None:
    """Print the table for people; the JSON to `json_path`, or after the table."""
    print(table_text)
    text = json.dumps(report, indent=1, default=float)
    if json_path:
        Path(json_path).write_text(text)
    else:
        print(text)
