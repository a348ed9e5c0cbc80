"""Step refine_temperature: a temperature refined from its parent's orientation (read only),
by the step command with the settings the Snakefile passes."""
from __future__ import annotations

import re
import shutil

import h5py
import numpy as np

from hklflow.files.orientation import read_orientation_file
from hklflow.files.scan import read_scan_file
from hklflow.steps import refine_temperature

from conftest import step_settings
from experiment_helpers import in_progress

D = "results/tiny/300K"


def run(root, parent, out="refined.nxs", png="refined.png", f2_scan=f"{D}/f2/scan.nxs"):
    return refine_temperature.main(["--settings", step_settings(root, "refine_temperature"),
                                    "--parent", str(parent),
                                    "--scans", f"{D}/f1/scan.nxs", str(f2_scan),
                                    "--peaks", f"{D}/f1/peaks.nxs", f"{D}/f2/peaks.nxs",
                                    "--out", str(out), "--png", str(png)])


def refine_entries(root, parent, d, out="bad.nxs"):
    """The step on entries f1 and f2 of the temperature folder d (relative to root)."""
    return refine_temperature.main(["--settings", step_settings(root, "refine_temperature"),
                                    "--parent", str(parent),
                                    "--scans", f"{d}/f1/scan.nxs", f"{d}/f2/scan.nxs",
                                    "--peaks", f"{d}/f1/peaks.nxs", f"{d}/f2/peaks.nxs",
                                    "--out", out, "--png", out.replace(".nxs", ".png")])


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
    # made from complete scans: nothing about previews in the file
    assert not ori.provisional and ori.landed == ()
    with h5py.File(tiny_300k / "refined.nxs", "r") as f:
        assert "preview" not in f["orientation/refinement"]


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


def test_an_orientation_from_a_scan_in_progress_is_provisional(tiny_300k, monkeypatch,
                                                                tmp_path, titles):
    """A scan in progress makes the orientation provisional (its file says from what, its
    picture too); a temperature refined from a provisional parent is provisional too."""
    monkeypatch.chdir(tiny_300k)
    n = read_scan_file(tiny_300k / D / "f2/scan.nxs").nframes
    f2 = in_progress(tiny_300k, tiny_300k / D / "f2/scan.nxs", tmp_path / "scan.nxs", 2 * n)
    assert run(tiny_300k, tiny_300k / D / "orientation.nxs", out=tmp_path / "preview.nxs",
               png=tmp_path / "preview.png", f2_scan=f2) == 0
    ori = read_orientation_file(tmp_path / "preview.nxs")
    assert ori.provisional and ori.landed == ({"scan": "tiny/300K/f2", "frames": n,
                                               "planned": 2 * n},)
    assert titles[-1].endswith("\nprovisional orientation (from f2 50% of its frames)")
    # complete scans, a provisional parent
    assert run(tiny_300k, tmp_path / "preview.nxs", out=tmp_path / "child.nxs",
               png=tmp_path / "child.png") == 0
    child = read_orientation_file(tmp_path / "child.nxs")
    assert child.provisional and child.landed == ori.landed
    assert titles[-1].endswith("\nprovisional orientation (from f2 50% of its frames)")


def test_a_temperature_whose_entries_are_all_blank_names_their_files(tiny_300k, tiny_copy,
                                                                     tiny_truth, capsys,
                                                                     monkeypatch):
    """Every entry of 100 K blank, with unusable_entries: leave_out (which leaves out some
    blank entries, not all): it used to be "does not refine from its parent ... no peaks to
    refine against", pointing at the parent (issue 71); the step names the empty files."""
    from experiment_helpers import blank_entries, edit_config

    d = blank_entries(tiny_copy, tiny_truth, "100K")
    edit_config(tiny_copy, lambda c: c.setdefault("reduction", {}).setdefault(
        "merge", {}).__setitem__("unusable_entries", "leave_out"))
    monkeypatch.chdir(tiny_copy)
    rc = refine_entries(tiny_copy, tiny_300k / D / "orientation.nxs", d)
    assert rc == 1 and not (tiny_copy / "bad.nxs").exists()
    err = [ln for ln in capsys.readouterr().err.splitlines() if " ERROR: " in ln][-1]
    raw = tiny_copy / "raw/tiny/100K"
    assert (f"refine_temperature failed: tiny/100K has no peaks to refine against: {raw}/f1.h5 "
            f"(tiny/100K/f1): no counts in any frame (shutter closed? beam off?); {raw}/f2.h5 "
            "(tiny/100K/f2): no peaks in its frames (a background-only scan?)") in err, err
    # (f2's noiseless background made find_peaks warn of the gain: named too)
    assert "; and find_peaks warned, which may be why: tiny/100K/f2: " in err, err


def test_an_entry_with_its_phi_start_off_is_named(tiny_300k, tiny_copy, tiny_truth, capsys,
                                                  monkeypatch):
    """100 K f2's phi_start 7 deg off in the scans table: it used to be "no usable signal ...
    a background-only scan? another crystal?; set ... leave_out", advice that drops a good
    entry (issue 71); the step says which phi_start looks off, and by how much."""
    from experiment_helpers import edit_table, searched_entries

    edit_table(tiny_copy, 4, "phi_start", "7")  # row 4: tiny/100K/f2
    d = searched_entries(tiny_copy, tiny_truth, "100K")
    monkeypatch.chdir(tiny_copy)
    rc = refine_entries(tiny_copy, tiny_300k / D / "orientation.nxs", d)
    assert rc == 1 and not (tiny_copy / "bad.nxs").exists()
    err = [ln for ln in capsys.readouterr().err.splitlines() if " ERROR: " in ln][-1]
    assert re.search(r"refine_temperature failed: phi_start of tiny/100K/f2 looks off by about "
                     r"\+7\.0 deg \(\S+/raw/tiny/100K/f2\.h5: (\d+) of its \1 strongest peaks "
                     r"index with phi_start 0\.0, \d with 7 as given\): check the scans table$",
                     err), err
