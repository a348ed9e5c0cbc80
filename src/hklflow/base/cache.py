"""Where hklflow keeps what it makes from pyFAI once per pyFAI version (a detector's facts,
a sensor's attenuation): importing pyFAI's detectors costs a job a second or more, a small
file a few milliseconds.  $HKLFLOW_CACHE_DIR, else $XDG_CACHE_HOME/hklflow, else
~/.cache/hklflow (docs/internals.md)."""
from __future__ import annotations

import os

CACHE_ENV = "HKLFLOW_CACHE_DIR"


def cache_dir() -> str:
    """The cache folder (module docstring); not made here."""
    if os.environ.get(CACHE_ENV):
        return os.environ[CACHE_ENV]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "hklflow")
