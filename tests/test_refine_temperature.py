"""Step refine_temperature: a temperature refined from its parent's orientation (read only),
by the step command with the settings the Snakefile passes."""
from __future__ import annotations

import shutil

import h5py
import numpy as np

from hklflow.files.orientation import read_orientation_file
from hklflow.steps import refine_temperature

from conftest import step_settings

D = "results/tiny/300K"


def run(root, parent, out="refined.nxs", png="refined.png"):
    return refine_temperature.main(["--settings", step_settings(root, "refine_temperature"),
                                    "--parent", str(parent),
                                    "--scans", f"{D}/f1/scan.nxs", f"{D}/f2/scan.nxs",
                                    "--peaks", f"{D}/f1/peaks.nxs", f"{D}/f2/peaks.nxs",
                                    "--out", out, "--png", png])


def test_the_parent_temperature_refined_from_its_own_parent(tiny_300k, tiny_truth, monkeypatch):
    """As the workflow does for the parent temperature: its orientation.nxs is refined from
    its parent_orientation.nxs; the parent file is only read."""
    monkeypatch.chdir(tiny_300k)
    parent = tiny_300k / D / "orientation.nxs"
    before = parent.read_bytes()
    assert run(tiny_300k, parent) == 0
    assert parent.read_bytes() == before
    ori = read_orientation_file(tiny_300k / "refined.nxs")
    true = tiny_truth["samples"]["tiny"]["temperatures"]["300K"]
    assert ori.parent == "tiny/300K" and ori.temperature_label == "300K"
    assert np.abs(np.array(ori.cell[:3]) / np.array(true["cell"][:3]) - 1).max() < 1e-3
    assert ori.statistics["fraction_indexed"] > 0.95
    assert (tiny_300k / "refined.png").stat().st_size > 10_000


def test_a_parent_of_another_sample_is_refused(tiny_300k, capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(tiny_300k)
    other = tmp_path / "other.nxs"
    shutil.copy(tiny_300k / D / "orientation.nxs", other)
    with h5py.File(other, "r+") as f:
        del f["orientation/sample/name"]
        f["orientation/sample/name"] = "not_tiny"
    assert run(tiny_300k, other, out="bad.nxs", png="bad.png") == 1
    err = capsys.readouterr().err
    assert "is the orientation of sample 'not_tiny', not of 'tiny'" in err, err
    assert not (tiny_300k / "bad.nxs").exists() and not (tiny_300k / "bad.png").exists()
