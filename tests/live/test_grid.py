"""The provisional grid of a sample's previews (hklflow.live.grid): the watcher hands it the
grid define_grid made only when that grid differs, and drops it once no temperature of the
sample is a preview."""
from __future__ import annotations

import logging
import os

from hklflow.files.grid import read_grid_file, write_grid_file
from hklflow.live.grid import grid_changed
from hklflow.live.watch import Watcher
from hklflow.model.grid import Axis, Grid
from hklflow.planning.live_files import provisional_grid

GRID = Grid(*(Axis(-3.0, 0.25, 25),) * 3)
WIDER = Grid(Axis(-4.0, 0.25, 33), *(Axis(-3.0, 0.25, 25),) * 2)


def test_the_watcher_hands_a_grid_only_when_define_grid_made_another(tiny_copy):
    made = tiny_copy / "results/tiny/grid.json"
    provisional = tiny_copy / provisional_grid("tiny")
    w = Watcher(tiny_copy, [], logging.getLogger("test"))
    previews = {("tiny", "300K"): ["tiny/300K/f1"], ("tiny", "100K"): ["tiny/100K/f1"]}
    write_grid_file(made, GRID, {"provenance": {"inputs": ["one.poni"]}})
    assert grid_changed(tiny_copy, "tiny") is None  # (none yet: the workflow copies it)
    assert w.hand_grids(previews) == [] and not provisional.exists()
    provisional.parent.mkdir(parents=True)
    provisional.write_bytes(made.read_bytes())
    # define_grid again, for a scan at a new detector position: the same grid, a new file
    write_grid_file(made, GRID, {"provenance": {"inputs": ["one.poni", "two.poni"]}})
    before = provisional.stat().st_mtime_ns
    os.utime(provisional, ns=(before - 10**9, before - 10**9))
    assert grid_changed(tiny_copy, "tiny") is False
    assert w.hand_grids(previews) == []
    assert provisional.stat().st_mtime_ns == before - 10**9  # (its transforms stay)
    # another grid: handed over (its previews are made again on it)
    write_grid_file(made, WIDER, {})
    assert w.hand_grids(previews) == ["tiny"]
    assert read_grid_file(provisional) == WIDER and grid_changed(tiny_copy, "tiny") is False
    # a provisional grid that cannot be read is replaced
    provisional.write_text("{")
    assert w.hand_grids(previews) == ["tiny"] and read_grid_file(provisional) == WIDER
    # a sample with a preview temperature keeps it; with none, it is dropped
    w.drop_final_grids({("tiny", "100K"): ["tiny/100K/f1"]})
    assert provisional.exists()
    w.drop_final_grids({})
    assert not provisional.exists()
