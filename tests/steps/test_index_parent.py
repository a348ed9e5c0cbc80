"""Step index_parent: the parent temperature of a sample indexed from scratch and refined,
by the step command with the settings the Snakefile passes (conftest.tiny_300k ran it on the
tiny experiment's 300 K entries); the algorithm itself: tests/algorithms/orientation/test_orient.py."""
from __future__ import annotations

import json

import h5py
import numpy as np

from hklflow.files.h5 import read_provenance
from hklflow.files.orientation import read_orientation_file
from hklflow.steps import index_parent

from conftest import step_settings
from experiment_helpers import blank_entries

D = "results/tiny/300K"


def test_parent_orientation_matches_the_truth(tiny_300k, tiny_truth):
    ori = read_orientation_file(tiny_300k / D / "orientation.nxs")
    true = tiny_truth["samples"]["tiny"]["temperatures"]["300K"]
    assert ori.sample == "tiny" and ori.temperature_label == "300K" and ori.parent == "tiny/300K"
    assert np.abs(np.array(ori.cell[:3]) / np.array(true["cell"][:3]) - 1).max() < 1e-3
    assert ori.statistics["fraction_indexed"] > 0.95 and ori.statistics["rms_px"] < 0.3
    assert ori.space_group.replace(" ", "").startswith("I41/amd")
    with h5py.File(tiny_300k / D / "orientation.nxs", "r") as f:
        summary = json.loads(f["orientation/refinement/indexing/data"][()])
    assert summary["fraction"] > 0.95 and summary["kept_pass"] in (1, 2)
    record = read_provenance(tiny_300k / D / "orientation.nxs")
    assert record["program"] == "hklflow index_parent"
    assert record["parameters"]["sample"]["cell"] == [5.171, 5.171, 7.504, 90.0, 90.0, 90.0]
    assert (tiny_300k / D / "orientation.png").stat().st_size > 10_000


def test_inputs_that_do_not_belong_together_are_refused(tiny_300k, capsys, monkeypatch):
    """f2's peaks given for f1's scan: exit 1, a line naming both, no output."""
    monkeypatch.chdir(tiny_300k)
    (tiny_300k / "bad.nxs").write_text("stale output of an earlier run")
    rc = index_parent.main(["--settings", step_settings(tiny_300k, "index_parent", "tiny"),
                            "--scans", f"{D}/f1/scan.nxs", f"{D}/f2/scan.nxs",
                            "--peaks", f"{D}/f2/peaks.nxs", f"{D}/f1/peaks.nxs",
                            "--out", "bad.nxs", "--png", "bad.png"])
    assert rc == 1
    err = capsys.readouterr().err
    assert "index_parent failed: " in err and "holds peaks of tiny/300K/f2, not of tiny/300K/f1" in err
    assert not (tiny_300k / "bad.nxs").exists() and not (tiny_300k / "bad.png").exists()


def test_a_parent_whose_entries_are_all_blank_names_their_files(tiny_copy, tiny_truth, capsys,
                                                                 monkeypatch):
    """It used to be "could not index: only 0 usable vectors (need >= 3)", naming no file
    (issue 71): the step names every entry's raw file and why it has no peaks."""
    d = blank_entries(tiny_copy, tiny_truth, "300K")
    monkeypatch.chdir(tiny_copy)
    rc = index_parent.main(["--settings", step_settings(tiny_copy, "index_parent", "tiny"),
                            "--scans", f"{d}/f1/scan.nxs", f"{d}/f2/scan.nxs",
                            "--peaks", f"{d}/f1/peaks.nxs", f"{d}/f2/peaks.nxs",
                            "--out", "bad.nxs", "--png", "bad.png"])
    assert rc == 1 and not (tiny_copy / "bad.nxs").exists()
    err = [ln for ln in capsys.readouterr().err.splitlines() if " ERROR: " in ln][-1]
    raw = tiny_copy / "raw/tiny/300K"
    assert err.endswith(
        f"index_parent failed: tiny/300K has no peaks to index the parent from: {raw}/f1.h5 "
        f"(tiny/300K/f1): no counts in any frame (shutter closed? beam off?); {raw}/f2.h5 "
        "(tiny/300K/f2): no peaks in its frames (a background-only scan?)"), err
