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
    assert (f"index_parent failed: tiny/300K has no peaks to index the parent from: {raw}/f1.h5 "
            f"(tiny/300K/f1): no counts in any frame (shutter closed? beam off?); {raw}/f2.h5 "
            "(tiny/300K/f2): no peaks in its frames (a background-only scan?)") in err, err
    # (f2's background, a constant without noise, did not look like photons to find_peaks)
    assert err.endswith("instrument.detector.gain is 1: for a detector that does not count "
                        "photons set the gain (counts per photon); otherwise the peak search "
                        "finds noise (gain too low) or misses peaks, and every volume's "
                        "uncertainty is off"), err


def test_a_failure_names_what_the_peak_search_warned_of(tiny_copy, tiny_300k, capsys,
                                                        monkeypatch):
    """Issue 86: find_peaks's warning of a gain that does not fit the frames is kept in
    peaks.nxs, and index_parent's failure on those peaks names it as a possible cause
    (here: one weak peak left in each entry, too few to index)."""
    import shutil

    from hklflow.files.peaks import read_peaks_file

    monkeypatch.chdir(tiny_copy)
    warning = ("the frames' background has a variance of 31.20 x its mean (frame 30), but "
               "instrument.detector.gain is 0.001: ...")
    for e in ("f1", "f2"):
        path = tiny_copy / "bad" / e / "peaks.nxs"
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(tiny_300k / D / e / "peaks.nxs", path)
        with h5py.File(path, "r+") as f:
            peaks = f[f"{e}/peaks"]
            for name in list(peaks):
                keep = peaks[name][:1]
                del peaks[name]
                peaks[name] = keep
            if e == "f1":
                f[e]["warnings"] = warning
    assert read_peaks_file(tiny_copy / "bad/f1/peaks.nxs").warnings == (warning,)
    assert read_peaks_file(tiny_copy / "bad/f2/peaks.nxs").warnings == ()
    rc = index_parent.main(["--settings", step_settings(tiny_300k, "index_parent", "tiny"),
                            "--scans", *(str(tiny_300k / D / e / "scan.nxs") for e in ("f1", "f2")),
                            "--peaks", "bad/f1/peaks.nxs", "bad/f2/peaks.nxs",
                            "--out", "bad.nxs", "--png", "bad.png"])
    assert rc == 1 and not (tiny_copy / "bad.nxs").exists()
    err = [ln for ln in capsys.readouterr().err.splitlines() if " ERROR: " in ln][-1]
    assert "tiny/300K has no peaks to index the parent from" in err, err
    assert err.endswith("; and find_peaks warned, which may be why: tiny/300K/f1: "
                        + warning), err
