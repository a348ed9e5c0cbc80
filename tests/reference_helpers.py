"""Helpers for tests that compare hklflow with independent references.

cctbx runs in a separate process (see reference/cctbx_reference.py: it cannot share
a process with scipy), one JSON request in, one JSON answer out.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


class ReferenceError(RuntimeError):
    """The reference script failed; the message carries its stderr."""


def cctbx_answer(request: dict) -> dict:
    """Run reference/cctbx_reference.py on `request` in a process of its own; its answer."""
    cmd = [sys.executable, str(Path(__file__).with_name("reference") / "cctbx_reference.py")]
    try:
        proc = subprocess.run(cmd, input=json.dumps(request), capture_output=True, text=True,
                              timeout=120, check=True)
    except subprocess.CalledProcessError as exc:
        raise ReferenceError(f"{' '.join(cmd)} failed with exit status {exc.returncode}:\n"
                             f"{exc.stderr}") from None
    except subprocess.TimeoutExpired as exc:
        raise ReferenceError(f"{' '.join(cmd)} timed out after {exc.timeout} s:\n"
                             f"{exc.stderr}") from None
    try:
        return json.loads(proc.stdout)
    except json.JSONDecodeError as exc:
        raise ReferenceError(f"{' '.join(cmd)} wrote no JSON answer ({exc}); stdout starts "
                             f"{proc.stdout[:500]!r}; stderr:\n{proc.stderr}") from None
