"""The provisional orientation of a preview temperature (hklflow.live.orientation): how far a
newer refined orientation moves the pixels' (H, K, L), and when the watcher hands it over."""
from __future__ import annotations

import logging
import math
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

from hklflow.files.grid import write_grid_file
from hklflow.files.orientation import read_orientation_file
from hklflow.live import orientation as live_orientation
from hklflow.live.orientation import orientation_move
from hklflow.live.watch import Watcher
from hklflow.model.grid import Axis, Grid
from hklflow.planning.live_files import provisional_orientation

STEP = 0.05  # r.l.u., the grid's step along h, k and l
SCANS = ["tiny/300K/f1", "tiny/300K/f2"]


@pytest.fixture
def oriented(tiny_300k, tmp_path) -> Path:
    """tiny_300k's 300 K (scans, refined orientation) with a grid of STEP."""
    root = tmp_path / "experiment"
    shutil.copytree(tiny_300k, root, ignore=shutil.ignore_patterns("raw"))
    (root / "raw").symlink_to(tiny_300k / "raw")
    write_grid_file(root / "results/tiny/grid.json", Grid(*(Axis(-8.0, STEP, 321),) * 3), {})
    return root


def _longer_a(src: Path, dst: Path, eps: float) -> None:
    """The orientation with a longer by a factor 1 + eps: B's first column, and so every
    pixel's H, scales by it (H' = (1 + eps) H), K and L stay."""
    shutil.copyfile(src, dst)
    with h5py.File(dst, "r+") as f:
        sample = f["orientation/sample"]
        sample["ub_matrix"][...] = sample["ub_matrix"][()] @ np.diag([1 / (1 + eps), 1, 1])
        sample["unitcell_a"][()] = sample["unitcell_a"][()] * (1 + eps)


def test_the_move_is_none_for_the_same_orientation_and_grows_with_the_change(oriented, tmp_path):
    refined = oriented / "results/tiny/300K/orientation.nxs"
    assert orientation_move(oriented, SCANS, refined, refined) == 0.0
    moves = []
    for eps in (1e-4, 2e-4):
        _longer_a(refined, tmp_path / f"{eps}.nxs", eps)
        moves.append(orientation_move(oriented, SCANS, refined, tmp_path / f"{eps}.nxs"))
    # |H| at most a |Q|max (|Q| = 1/d) on this detector (pyFAI's geometry): H's largest move
    rec = read_orientation_file(refined)
    h_max = rec.cell[0] * rec.detector.q_max()
    assert 0.1 * 1e-4 * h_max / STEP < moves[0] <= 1e-4 * h_max / STEP
    assert moves[1] == pytest.approx(2 * moves[0], rel=1e-3)


def test_a_file_that_cannot_be_read_moves_by_inf(oriented, tmp_path):
    refined = oriented / "results/tiny/300K/orientation.nxs"
    (tmp_path / "broken.nxs").write_bytes(b"not hdf5")
    assert orientation_move(oriented, SCANS, refined, tmp_path / "broken.nxs") == math.inf
    assert orientation_move(oriented, ["tiny/300K/f9"], refined, refined) == math.inf


def test_the_watcher_hands_a_new_orientation_only_past_the_tolerance(oriented, monkeypatch):
    """No provisional orientation: the refined one is handed over.  The same refined
    orientation again: nothing compared.  A new one within live.reorient_voxels: kept; past
    it: handed over.  A temperature that is no longer a preview loses its provisional one."""
    w = Watcher(oriented, [], logging.getLogger("test"))
    w.live = dict(w.live, reorient_voxels=0.25)
    previews = {("tiny", "300K"): SCANS}
    refined = oriented / "results/tiny/300K/orientation.nxs"
    provisional = oriented / provisional_orientation("tiny", "300K")
    first = w.hand_orientations(previews)
    assert first == {"tiny/300K": {"moved_voxels": None, "handed": True}}
    assert provisional.read_bytes() == refined.read_bytes()
    assert w.hand_orientations(previews) == {}  # (the same refined orientation)
    moves = iter([0.1, 0.4])
    monkeypatch.setattr("hklflow.live.watch.orientation_move", lambda *a: next(moves))
    for moved, handed in ((0.1, False), (0.4, True)):
        before = provisional.stat().st_mtime_ns
        refined.touch()  # a new refinement
        assert w.hand_orientations(previews) == {"tiny/300K": {"moved_voxels": moved,
                                                               "handed": handed}}
        assert (provisional.stat().st_mtime_ns != before) == handed
    w.drop_final_orientations({})
    assert not provisional.exists() and w.state.orientations == {}
    assert live_orientation.refined_version(oriented, "tiny", "100K") is None
