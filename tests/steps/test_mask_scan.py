"""Step mask_scan: the pixel mask and Bragg regions of the tiny experiment's 300 K entries,
made by the step command with the settings the Snakefile passes, against the truth of the
simulation (hot and dead pixels, gaps, every strong reflection); its file and picture, the
user mask file and hkl radius of the config, and the failure modes.  The masking itself
(build_mask, the dead-pixel rule, the painter against a numpy reference):
tests/algorithms/masks/test_masking.py; the mask file: tests/files/test_mask.py.

The inputs are made by the steps themselves (ingest with the true geometry, find_peaks,
index_parent: conftest.tiny_300k), the masks once per module (`reduced`)."""
from __future__ import annotations

import json
import os
import shutil
from contextlib import contextmanager
from pathlib import Path

import h5py
import numpy as np
import pytest

from hklflow.algorithms.masks.masking import DEAD, FOUND, GAP, HOT, PREDICTED, USER, ScanMask
from hklflow.files.mask import read_mask_details, read_mask_file
from hklflow.files.peaks import read_peaks_file
from hklflow.files.scan import read_scan_file
from hklflow.steps import mask_scan

from conftest import step_settings
from experiment_helpers import painted

ENTRIES = ("f1", "f2")
T = "300K"


@contextmanager
def cwd(path):
    old = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


def run_mask_scan(entry="f1", config="config/config.yaml", out=None, png=None, orientation=None,
                  peaks=None):
    """mask_scan's command line as the rule runs it (in the experiment directory)."""
    d = f"results/tiny/{T}/{entry}"
    return mask_scan.main(["--settings", step_settings(Path("."), "mask_scan", config=config),
                           "--scan", f"{d}/scan.nxs", "--peaks", peaks or f"{d}/peaks.nxs",
                           "--orientation", orientation or f"results/tiny/{T}/orientation.nxs",
                           "--out", out or f"{d}/mask.nxs", "--png", png or f"{d}/mask.png"])


@pytest.fixture(scope="module")
def reduced(tiny_300k):
    """The 300 K entries of the tiny experiment with their mask files (mask_scan's command line)."""
    with cwd(tiny_300k):
        for e in ENTRIES:
            assert run_mask_scan(e) == 0
    return tiny_300k


def entry_dir(root, entry):
    return root / "results" / "tiny" / T / entry


# --------------------------------------------------------------------------------------
# Against the truth of the simulation
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("entry", ENTRIES)
def test_pixel_mask_has_gaps_hot_and_dead_pixels_and_little_else(reduced, tiny_truth, entry):
    details = read_mask_details(entry_dir(reduced, entry) / "mask.nxs")
    bits = details["pixel_mask"]
    rec = read_scan_file(entry_dir(reduced, entry) / "scan.nxs")
    gaps = rec.setup.calibration.detector_mask()
    assert gaps.sum() > 10000
    np.testing.assert_array_equal((bits & GAP) != 0, gaps)
    defects = tiny_truth["detector_defects"]
    for r, c in defects["hot_pixels"]:
        assert bits[r, c] & HOT, (r, c)
    for r, c in defects["dead_pixels"]:
        assert bits[r, c] & DEAD, (r, c)
    truth_bad = gaps.copy()
    for r, c in defects["hot_pixels"] + defects["dead_pixels"]:
        truth_bad[r, c] = True
    wrongly = (bits != 0) & ~truth_bad
    assert wrongly.sum() <= 2, np.argwhere(wrongly)  # no good pixel masked (a few at most)
    assert not np.any(bits & USER)  # no user mask in this config
    st = details["statistics"]
    assert st["pixels_gap"] == gaps.sum() and st["pixels_dead"] >= 5 and st["pixels_hot"] >= 5


@pytest.mark.parametrize("entry", ENTRIES)
def test_every_strong_reflection_is_masked_and_little_else(reduced, tiny_truth, entry):
    mask = ScanMask.of(read_mask_file(entry_dir(reduced, entry) / "mask.nxs"))
    vol = painted(mask)
    refl = tiny_truth["scans"][f"tiny/{T}/{entry}"]["reflections"]
    r, c, z = (np.asarray(refl[k]) for k in ("row", "col", "frame"))
    rows, cols = mask.shape
    inside = (r >= 0) & (r < rows) & (c >= 0) & (c < cols) & (z >= 0) & (z < mask.nframes)
    strong = inside & (np.asarray(refl["i_over_sigma"]) > 10)
    assert strong.sum() > 50
    hit = np.zeros(len(r), bool)
    hit[inside] = vol[z[inside].astype(int), r[inside].astype(int), c[inside].astype(int)] != 0
    assert hit[strong].all(), np.column_stack([r, c, z])[strong & ~hit]
    assert hit[inside].all()  # the weak ones too: predicted with the refined orientation
    fraction = vol.mean()
    print(f"{entry}: Bragg mask {100 * fraction:.3f}% of the pixel-frames, "
          f"{len(mask.regions)} regions; pixel mask {100 * mask.pixels.mean():.2f}% of the pixels")
    assert 0 < fraction < 0.01
    st = read_mask_details(entry_dir(reduced, entry) / "mask.nxs")["statistics"]
    usable = ~mask.pixels
    assert st["bragg_pixel_frames"] == int((vol & usable[None]).sum())  # the exact union


# --------------------------------------------------------------------------------------
# The command line: its files, the config's user mask
# --------------------------------------------------------------------------------------
def test_command_line_outputs(reduced):
    d = entry_dir(reduced, "f1")
    assert (d / "mask.png").stat().st_size > 20000
    with h5py.File(d / "mask.nxs", "r") as f:
        assert f.attrs["default"] == "f1"
        e = f["f1"]
        assert e["title"][()].decode() == f"tiny/{T}/f1"
        assert e["instrument/detector/pixel_mask"].dtype == np.int32
        record = json.loads(e["process/note/data"][()])
        assert record["program"] == "hklflow mask_scan"
        assert any(k.endswith("orientation.nxs") for k in record["inputs"])
        src = e["bragg_regions/source"][()]
        assert (src == FOUND).sum() == len(read_peaks_file(d / "peaks.nxs").peaks["n_pixels"])
        assert (src == PREDICTED).sum() > 100
        assert e["bragg_regions"].attrs["hkl_radius"] == 0.0


def test_user_mask_file_and_hkl_radius_from_the_config(reduced):
    import fabio.tifimage
    import yaml

    cfg = yaml.safe_load((reduced / "config" / "config.yaml").read_text())
    m = np.zeros((619, 487), np.uint8)
    m[100:140, 200:260] = 1  # a beamstop shadow, say
    fabio.tifimage.TifImage(data=m).write(str(reduced / "user_mask.tif"))
    cfg["instrument"]["detector"] = {"name": "Pilatus300k", "mask_file": "user_mask.tif"}
    cfg.setdefault("reduction", {}).setdefault("mask", {}).update(hkl_radius=0.1)
    (reduced / "config" / "user.yaml").write_text(yaml.safe_dump(cfg))
    with cwd(reduced):
        assert run_mask_scan("f1", config="config/user.yaml", out="user_mask.nxs", png="user_mask.png") == 0
    bits = read_mask_details(reduced / "user_mask.nxs")["pixel_mask"]
    np.testing.assert_array_equal((bits & USER) != 0, m != 0)
    mask = read_mask_file(reduced / "user_mask.nxs")
    assert mask.pixels[m != 0].all() and mask.hkl_radius == 0.1


# --------------------------------------------------------------------------------------
# Failures leave nothing behind
# --------------------------------------------------------------------------------------
def test_bad_inputs_fail_and_leave_no_output(reduced, capsys):
    ori = reduced / "results" / "tiny" / T / "orientation.nxs"
    other = reduced / "other_sample_orientation.nxs"
    shutil.copy(ori, other)
    with h5py.File(other, "r+") as f:
        del f["orientation/sample/name"]
        f["orientation/sample/name"] = "not_tiny"
    cases = {"missing orientation": {"orientation": "no_such/orientation.nxs"},
             "orientation of another sample": {"orientation": str(other)},
             "peaks of another entry": {"peaks": f"results/tiny/{T}/f2/peaks.nxs"}}
    with cwd(reduced):
        for why, kw in cases.items():
            Path("bad.nxs").write_text("stale output of an earlier run")
            Path("bad.png").write_text("stale")
            assert run_mask_scan("f1", out="bad.nxs", png="bad.png", **kw) == 1, why
            assert not Path("bad.nxs").exists() and not Path("bad.png").exists(), why
            assert not list(Path(".").glob(".bad.nxs*")), why
            err = [ln for ln in capsys.readouterr().err.splitlines() if " ERROR: " in ln]
            assert err, why
            word = {"missing orientation": "no_such", "orientation of another sample": "not_tiny",
                    "peaks of another entry": "f2"}[why]
            assert word in err[-1], (why, err[-1])
