"""Step index_parent: the parent temperature of a sample indexed from scratch and refined,
by the step command with the settings the Snakefile passes (conftest.tiny_300k ran it on the
tiny experiment's 300 K entries); the algorithm itself: tests/test_orientation.py."""
from __future__ import annotations

import json

import h5py
import numpy as np

from hklflow.files.h5 import read_provenance
from hklflow.files.orientation import read_orientation_file
from hklflow.steps import index_parent

from conftest import step_settings

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
