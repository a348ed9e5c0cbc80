"""The grid file of a sample (rule define_grid): ``results/SAMPLE/grid.json``, the (H, K, L)
grid every volume of the sample is made on, how it was chosen, and provenance::

  {"grid": {"h": {"start", "stop", "step", "n"}, "k": ..., "l": ...},
   "sample", "cell", "q_max", "q_pixel", "how": {axis: text}, "provenance": {...}}
"""
from __future__ import annotations

import json
from pathlib import Path

from ..base.atomic import write_json_atomically
from ..base.errors import FileFormatError
from ..model.grid import Grid


def write_grid_file(path, grid: Grid, info: dict) -> Path:
    return write_json_atomically(path, {"grid": grid.as_dict(), **info})


def read_grid_file(path) -> Grid:
    try:
        return Grid.from_dict(json.loads(Path(path).read_text())["grid"])
    except (OSError, KeyError, TypeError, ValueError) as exc:
        raise FileFormatError(f"{path}: not a grid file of define_grid ({exc})") from None
