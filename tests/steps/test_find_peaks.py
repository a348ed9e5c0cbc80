"""Step find_peaks: the peak search of a scan entry by the step command, with the settings
the Snakefile passes: its NeXus file and picture, and its failures (a damaged frame, a user
mask leaving no pixel) on one line with no output left.  The search itself (the compiled
kernel, the peaks against the truth, the frame statistics, hot pixels):
tests/algorithms/peaks/test_kernels.py and test_spotfinding.py; the gain: test_gain.py."""
from __future__ import annotations

import json

import h5py
import hdf5plugin  # noqa: F401
import numpy as np
import pytest

from hklflow.files.peaks import read_peaks_file
from hklflow.steps.find_peaks import main

from conftest import ingest_with, step_settings
from experiment_helpers import detector
from experiment_helpers import raw as raw_path
from experiment_helpers import scan_setup


def test_command_line_writes_nexus_and_png(tiny_copy, tiny_truth, monkeypatch):
    env_dir = tiny_copy
    monkeypatch.chdir(env_dir)  # steps run in the experiment directory, as under Snakemake
    # ingest with the true geometry (calibration is tested elsewhere)
    g, _ = scan_setup(tiny_truth, "tiny/300K/f1")
    ingest_with(env_dir, "tiny/300K/f1", g, env_dir / "scan.nxs")
    rc = main(["--settings", step_settings(env_dir, "find_peaks"), "--scan", "scan.nxs",
               "--out", "peaks.nxs", "--png", "peaks.png"])
    assert rc == 0
    rec = read_peaks_file(env_dir / "peaks.nxs")
    assert rec.scan_id == "tiny/300K/f1" and rec.entry == "f1"
    assert len(rec.peaks["observed_px_x"]) > 50
    assert len(rec.frame_stats["sum"]) == 60 and rec.scan_max > 0
    assert (env_dir / "peaks.png").stat().st_size > 10000
    with h5py.File(env_dir / "peaks.nxs", "r") as f:
        assert f["f1/peaks"].attrs["NX_class"] == "NXreflections"
        assert f["f1/peaks/observed_px_x"].attrs["units"] == "pixel"
        record = json.loads(f["f1/process/note/data"][()])
        assert record["program"] == "hklflow find_peaks"


def test_command_line_failure_names_file_and_frame_and_leaves_no_output(tiny_copy, tiny_truth,
                                                                      monkeypatch, capsys):
    monkeypatch.chdir(tiny_copy)
    ingest_with(tiny_copy, "tiny/300K/f1", scan_setup(tiny_truth, "tiny/300K/f1")[0],
                tiny_copy / "scan.nxs")
    raw = raw_path(tiny_copy, "tiny/300K/f1")
    with h5py.File(raw, "r+") as f:  # damage frame 44 after ingest's cheap first/last check
        d = f["/entry/data/data"]
        filt, chunk = d.id.read_direct_chunk((44, 0, 0))
        d.id.write_direct_chunk((44, 0, 0), b"\x00" * 16 + chunk[16:64], filt)
    (tiny_copy / "peaks.nxs").write_text("stale output of an earlier run")
    rc = main(["--settings", step_settings(tiny_copy, "find_peaks"), "--scan", "scan.nxs",
               "--out", "peaks.nxs", "--png", "peaks.png"])
    assert rc == 1
    assert not (tiny_copy / "peaks.nxs").exists() and not (tiny_copy / "peaks.png").exists()
    err = [ln for ln in capsys.readouterr().err.splitlines() if " ERROR: " in ln]
    assert err and "f1.h5" in err[-1] and "44" in err[-1], err


# (raw.images.user_mask's refusal and the step's line in one test: it runs main, so it is here)
def test_a_mask_file_leaving_no_pixel_is_refused_naming_it(tiny_copy, tiny_truth, monkeypatch,
                                                           capsys):
    """A user mask that masks every pixel (all NaN, or no 0 anywhere) used to give "0 peaks"
    and no word of the mask (issue 71): find_peaks stops on one line naming the mask file,
    as does every step reading it (masking.user_mask)."""
    import fabio.tifimage

    from hklflow.base.errors import ImageReadError
    from hklflow.raw.images import user_mask

    from experiment_helpers import edit_config

    g, _ = scan_setup(tiny_truth, "tiny/300K/f1")
    fabio.tifimage.TifImage(data=np.full(g.shape, np.nan, np.float32)).write(
        str(tiny_copy / "nan_mask.tif"))
    with h5py.File(tiny_copy / "ones_mask.h5", "w") as f:
        f["/entry/mask"] = np.ones(g.shape, np.uint8)
    with pytest.raises(ImageReadError, match=r"ones_mask\.h5: the mask leaves no pixel \(no "
                                             r"pixel is 0; non-zero = masked\)"):
        user_mask(detector(g, mask_file=str(tiny_copy / "ones_mask.h5")), g.shape)
    monkeypatch.chdir(tiny_copy)
    edit_config(tiny_copy, lambda c: c["instrument"].__setitem__(
        "detector", {"name": g.detector, "mask_file": "nan_mask.tif"}))
    ingest_with(tiny_copy, "tiny/300K/f1", g, tiny_copy / "scan.nxs")
    rc = main(["--settings", step_settings(tiny_copy, "find_peaks"), "--scan", "scan.nxs",
               "--out", "peaks.nxs", "--png", "peaks.png"])
    assert rc == 1 and not (tiny_copy / "peaks.nxs").exists()
    err = [ln for ln in capsys.readouterr().err.splitlines() if " ERROR: " in ln]
    assert err[-1].endswith(
        "find_peaks failed: nan_mask.tif: the mask leaves no pixel (NaN everywhere; non-zero = "
        "masked): expected 0 at the pixels to use (instrument.detector.mask_file)"), err


def test_blocks_searched_apart_and_put_together_give_the_whole_search(tiny_copy, tiny_truth,
                                                                      monkeypatch):
    """Issue 82: a scan in progress is searched a block of new frames at a time (--frames,
    in the scan's frame numbers and angles) and its peaks are its blocks' put together
    (--blocks): the same frame statistics as one search of every frame, and the same peaks
    except those crossing the blocks' edge, which are found as two."""
    monkeypatch.chdir(tiny_copy)
    g, _ = scan_setup(tiny_truth, "tiny/300K/f1")
    ingest_with(tiny_copy, "tiny/300K/f1", g, tiny_copy / "scan.nxs")
    settings = step_settings(tiny_copy, "find_peaks")
    assert main(["--settings", settings, "--scan", "scan.nxs", "--out", "whole.nxs",
                 "--png", "whole.png"]) == 0
    for frames in ("0-25", "25-60"):
        assert main(["--settings", settings, "--scan", "scan.nxs", "--frames", frames,
                     "--out", f"{frames}.nxs"]) == 0
    second = read_peaks_file(tiny_copy / "25-60.nxs")
    assert list(second.frame_stats["frame_number"]) == list(range(25, 60))
    assert second.frames_searched == 35 and second.peaks["observed_frame"].min() >= 25
    assert main(["--settings", settings, "--scan", "scan.nxs", "--blocks", "25-60.nxs",
                 "0-25.nxs", "--out", "joined.nxs", "--png", "joined.png"]) == 0
    whole, joined = (read_peaks_file(tiny_copy / f) for f in ("whole.nxs", "joined.nxs"))
    for name in ("frame_number", "rotation_angle", "sum", "max", "n_valid"):
        np.testing.assert_allclose(joined.frame_stats[name], whole.frame_stats[name],
                                   err_msg=name)
    assert (tiny_copy / "joined.png").stat().st_size > 10000

    def apart(rec):
        """Peaks that neither cross nor touch the blocks' edge (frame 25), by their box."""
        box = rec.peaks["bounding_box"]
        keep = (box[:, 5] < 25) | (box[:, 4] > 25)
        order = np.lexsort((rec.peaks["observed_px_x"][keep], rec.peaks["observed_frame"][keep]))
        return {k: np.asarray(v)[keep][order] for k, v in rec.peaks.items()}

    a, b = apart(whole), apart(joined)
    assert len(a["n_pixels"]) > 30 and len(a["n_pixels"]) == len(b["n_pixels"])
    assert len(joined.peaks["n_pixels"]) > len(whole.peaks["n_pixels"])  # (the halves)
    for name in ("observed_px_x", "observed_px_y", "observed_frame", "observed_phi", "int_sum",
                 "bounding_box"):
        np.testing.assert_allclose(b[name], a[name], rtol=1e-9, err_msg=name)
    # blocks that leave a gap are refused, naming the block
    assert main(["--settings", settings, "--scan", "scan.nxs", "--blocks", "25-60.nxs",
                 "--out", "gap.nxs"]) == 1
    assert not (tiny_copy / "gap.nxs").exists()
