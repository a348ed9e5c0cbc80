"""The provisional grid the previews of a sample's temperatures in progress are made on.

define_grid's settings are every detector position of the sample's scans, so it runs again
whenever a scan at a new position enters the live table, and its file is new even when the
grid is the same (its limits are whole reciprocal-lattice units, its steps whole fractions
of one: a shift of a few pixels rarely moves them).  Every transform made on that file
would then be made again, every block of every scan in progress included.  The previews are
therefore made on a copy of it (planning.live_files.provisional_grid: the workflow's rule
provisional_grid makes it at the sample's first preview), which the watcher replaces only
when define_grid's grid differs from it: then the previews are made again on it.  Once a
temperature is complete its final results are made on the sample's grid, as batch.
"""
from __future__ import annotations

from pathlib import Path

from ..base.atomic import copy_atomically
from ..base.errors import HklflowError
from ..files import outputs
from ..planning.live_files import provisional_grid


def sample_grid(expdir: Path, sample: str) -> Path:
    """The sample's grid as define_grid made it last."""
    return expdir / outputs.fill(outputs.GRID, sample=sample)


def grid_changed(expdir: Path, sample: str) -> bool | None:
    """Whether define_grid's grid differs from the provisional one (True where either
    cannot be read: the newer is handed over); None while there is no provisional one or no
    grid (the workflow's rule provisional_grid makes it)."""
    from ..files.grid import read_grid_file

    made, provisional = sample_grid(expdir, sample), expdir / provisional_grid(sample)
    if not (made.is_file() and provisional.is_file()):
        return None
    try:
        return read_grid_file(made) != read_grid_file(provisional)
    except (OSError, HklflowError):
        return True


def hand_over_grid(expdir: Path, sample: str) -> None:
    """Copy the sample's grid to its provisional one, atomically."""
    copy_atomically(sample_grid(expdir, sample), expdir / provisional_grid(sample))
