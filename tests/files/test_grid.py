"""hklflow.files.grid: a sample's grid file, written and read back, and its name."""
from __future__ import annotations

import json

import pytest

from hklflow.base.errors import FileFormatError
from hklflow.files import outputs
from hklflow.files.grid import read_grid_file, write_grid_file
from hklflow.model.grid import Axis, Grid


def test_grid_file_round_trip(tmp_path):
    grid = Grid(Axis(-2.0, 0.25, 17), Axis(-1.0, 0.5, 5), Axis(0.0, 0.1, 31))
    path = tmp_path / outputs.fill(outputs.GRID, sample="tiny")
    assert str(path.relative_to(tmp_path)) == "results/tiny/grid.json"
    write_grid_file(path, grid, {"sample": "tiny", "how": {"h": "config"}})
    assert read_grid_file(path) == grid
    data = json.loads(path.read_text())
    assert data["sample"] == "tiny" and data["how"] == {"h": "config"}
    assert [p.name for p in path.parent.iterdir()] == ["grid.json"]  # no temporary left


def test_a_file_that_is_no_grid_file_is_refused(tmp_path):
    (tmp_path / "x.json").write_text("{}")
    with pytest.raises(FileFormatError, match="not a grid file of define_grid"):
        read_grid_file(tmp_path / "x.json")
