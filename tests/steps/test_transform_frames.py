"""Step transform_frames: a frame range of a scan entry onto the sample's grid, from the
files of the earlier steps, with the settings the Snakefile passes."""
from __future__ import annotations

import json
import shutil

import h5py
import hdf5plugin
import numpy as np
import pytest

from hklflow.algorithms.transform import frame_scale
from hklflow.base.errors import ConfigError, RawDataError
from hklflow.files.volume import read_volume
from hklflow.steps.transform_frames import parse_frames

from conftest import run_step, step_settings


# (transform.driver.frame_scale and the step's parse_frames in one test: left whole here)
def test_monitor_normalisation_and_frame_ranges():
    mon = np.array([100.0, 200.0, 50.0, 100.0])
    s, ref = frame_scale(mon, None, 1, 4)
    assert ref == 100.0 and s.tolist() == [0.5, 2.0, 1.0]  # median reference
    s, ref = frame_scale(mon, 1000.0, 0, 2)
    assert s.tolist() == [10.0, 5.0]
    assert frame_scale(None, None, 0, 3)[0].tolist() == [1, 1, 1]
    # a bad monitor value: the job stops naming the raw file of the frame and the way out
    bad = np.array([100.0, 0.0, np.nan, 300.0])
    with pytest.raises(RawDataError, match=r"raw/f1\.h5: the monitor is <= 0 or not finite at 2 "
                                           r"frame\(s\) \[1, 2\].*bad_monitor_frames: leave_out"):
        frame_scale(bad, None, 0, 4, "fail", lambda i: "raw/f1.h5")
    # or they are left out (NaN) and the reference is the median of the good ones
    s, ref = frame_scale(bad, None, 1, 4, "leave_out", lambda i: "raw/f1.h5")
    assert ref == 200.0 and np.isnan(s[:2]).all() and s[2] == 200.0 / 300.0
    with pytest.raises(RawDataError, match="raw/f1.h5: the monitor is <= 0 or not finite on every frame"):
        frame_scale(np.zeros(3), None, 0, 3, "leave_out", lambda i: "raw/f1.h5")
    assert parse_frames("10:20", 60) == (10, 20) and parse_frames(None, 60) == (0, 60)
    assert parse_frames("00010-00020", 60) == (10, 20)  # as in the job's file name
    for bad in ("20:10", "0:61", "x"):
        with pytest.raises(ConfigError, match="--frames"):
            parse_frames(bad, 60)


@pytest.mark.slow
def test_monitor_normalisation_through_ingest_and_transform(tiny_run, tmp_path):
    """A scan whose odd frames were counted with twice the flux (monitor 2, frames x 2) gives
    the same volume as the original scan (monitor 1 everywhere) once normalised: the scans
    table's monitor column -> ingest -> scan.nxs -> transform."""
    d = tiny_run[0]
    assert tiny_run[1].returncode == 0
    exp = tmp_path / "exp"
    shutil.copytree(d / "config", exp / "config")
    with h5py.File(d / "raw/tiny/300K/f1.h5", "r") as f:
        frames = f["/entry/data/data"][()]
    monitor = np.where(np.arange(len(frames)) % 2 == 1, 2.0, 1.0)
    boosted = np.where(frames >= 0, frames * monitor[:, None, None].astype(np.int32), frames)
    (exp / "raw").mkdir()
    for name, data, mon in (("plain.h5", frames, np.ones(len(frames))), ("boosted.h5", boosted, monitor)):
        with h5py.File(exp / "raw" / name, "w") as f:
            f.create_dataset("/entry/data/data", data=data, chunks=(1,) + data.shape[1:],
                             **hdf5plugin.Bitshuffle(cname="lz4"))
            f["/entry/monitor"] = mon
    table = (exp / "config/scans.tsv").read_text().splitlines()
    header = table[0].split("\t") + ["monitor"]
    row = dict(zip(table[0].split("\t"), next(r for r in table[1:] if r.startswith("tiny\t300\tf1")).split("\t")))
    res = d / "results"
    out = {}
    for name in ("plain", "boosted"):
        row.update(data=f"raw/{name}.h5", monitor="/entry/monitor")
        (exp / "config/scans.tsv").write_text("\t".join(header) + "\n"
                                              + "\t".join(str(row.get(h, "")) for h in header) + "\n")
        r = run_step(exp, "ingest_scan", "--settings",
                     step_settings(exp, "ingest_scan", "tiny", "300K", "f1"),
                     "--poni", res / "calibration/ceo2/geometry.poni",
                     "--version", res / "calibration/ceo2/version.json", "--out", f"{name}.nxs")
        assert r.returncode == 0, r.stderr[-2000:]
        settings = json.loads(step_settings(exp, "transform_frames", "tiny"))
        settings["transform"]["kinds"] = ["transform"]  # one kind: one --out
        settings = json.dumps(settings)
        r = run_step(exp, "transform_frames", "--settings", settings,
                     "--scan", f"{name}.nxs", "--orientation", res / "tiny/300K/orientation.nxs",
                     "--grid", res / "tiny/grid.json", "--mask", res / "tiny/300K/f1/mask.nxs",
                     "--frames", "0:20", "--out", f"{name}_volume.nxs")
        assert r.returncode == 0, r.stderr[-2000:]
        out[name] = read_volume(exp / f"{name}_volume.nxs")
    p, b = out["plain"], out["boosted"]
    assert np.array_equal(p.weight, b.weight) and p.weight.sum() > 0
    # plain: monitor 1 everywhere (reference = median 1); boosted: reference 1.5, frames
    # with monitor 2 doubled: every frame's corrected intensity is 1.5 x the plain one
    assert b.notes["monitor_reference"] == 1.5 and p.notes["monitor_reference"] == 1.0
    np.testing.assert_allclose(b.signal, 1.5 * p.signal, rtol=1e-5, atol=1e-3)
    # both kinds, listed in the other order than the grid holds them: each file its own kind
    settings = json.loads(step_settings(exp, "transform_frames", "tiny"))
    settings["transform"]["kinds"] = ["masked_transform", "transform"]
    r = run_step(exp, "transform_frames", "--settings", json.dumps(settings),
                 "--scan", "plain.nxs", "--orientation", res / "tiny/300K/orientation.nxs",
                 "--grid", res / "tiny/grid.json", "--mask", res / "tiny/300K/f1/mask.nxs",
                 "--frames", "0:20", "--out", "masked.nxs", "unmasked.nxs")
    assert r.returncode == 0, r.stderr[-2000:]
    t, m = read_volume(exp / "unmasked.nxs"), read_volume(exp / "masked.nxs")
    assert (t.kind, m.kind) == ("transform", "masked_transform")
    # (the transform is the masked kind's sum plus the left-out pixels': equal to its own
    # pass up to the float32 rounding of each sum of n >= 0 terms, n 2^-24 relatively)
    assert np.array_equal(t.weight, p.weight)  # (sums of halves: exact)
    bound = 2 * 2.0 ** -24 * (p.weight * t.notes["subdivide"] + 1) * p.signal
    assert (np.abs(t.signal - p.signal) <= bound).all() and p.signal.sum() > 0
    assert m.weight.sum() < t.weight.sum()  # the Bragg regions left out
    # subdivide auto_per_block: each block of pixels its own sub-steps, the same weight in all
    settings["transform"].update(kinds=["transform"], subdivide="auto_per_block")
    r = run_step(exp, "transform_frames", "--settings", json.dumps(settings),
                 "--scan", "plain.nxs", "--orientation", res / "tiny/300K/orientation.nxs",
                 "--grid", res / "tiny/grid.json", "--mask", res / "tiny/300K/f1/mask.nxs",
                 "--frames", "0:20", "--out", "per_block.nxs")
    assert r.returncode == 0, r.stderr[-2000:]
    b = read_volume(exp / "per_block.nxs")
    assert sum(b.notes["subdivide_blocks"].values()) == sum(p.notes["subdivide_blocks"].values())
    assert max(map(int, b.notes["subdivide_blocks"])) == b.notes["subdivide"]
    assert b.weight.sum() == pytest.approx(p.weight.sum(), rel=1e-3)


def test_parts_of_a_scan_in_progress_say_so_and_complete_ones_say_nothing(tiny_300k, tmp_path,
                                                                         monkeypatch):
    """The parts of a scan still being collected record in their notes what part of it they
    hold (hklflow.pictures.preview), and the mask's picture says it; a complete scan's parts
    record nothing about previews."""
    from hklflow.files.grid import write_grid_file
    from hklflow.files.scan import read_scan_file
    from hklflow.files.volume import read_volume_header
    from hklflow.model.grid import Axis, Grid
    from hklflow.steps import mask_scan, transform_frames

    from conftest import record_pictures
    from experiment_helpers import in_progress

    titles = []
    record_pictures(monkeypatch, lambda fig: titles.append(fig._suptitle.get_text()))
    monkeypatch.chdir(tiny_300k)
    d = tiny_300k / "results/tiny/300K"
    n = read_scan_file(d / "f2/scan.nxs").nframes
    scans = {"complete": d / "f2/scan.nxs",
             "preview": in_progress(tiny_300k, d / "f2/scan.nxs", tmp_path / "scan.nxs", 4 * n)}
    write_grid_file(tmp_path / "grid.json", Grid(*(Axis(-4.0, 0.5, 17) for _ in range(3))), {})
    notes = {}
    for name, scan in scans.items():
        inputs = ["--scan", str(scan), "--orientation", str(d / "orientation.nxs")]
        mask = str(tmp_path / f"{name}_mask.nxs")
        assert mask_scan.main(["--settings", step_settings(tiny_300k, "mask_scan"), *inputs,
                               "--peaks", str(d / "f2/peaks.nxs"), "--out", mask,
                               "--png", str(tmp_path / f"{name}_mask.png")]) == 0
        out = [str(tmp_path / f"{name}_{kind}.nxs") for kind in ("transform", "masked")]
        settings = step_settings(tiny_300k, "transform_frames", "tiny")
        assert transform_frames.main(["--settings", settings,
                                      *inputs, "--grid", str(tmp_path / "grid.json"),
                                      "--mask", mask, "--frames", "0-4", "--out", *out]) == 0
        notes[name] = [read_volume_header(p).notes for p in out]
    assert titles[0].count("PREVIEW") == 0
    assert titles[1].endswith("\nPREVIEW: f2 25% of its frames")
    for part in notes["preview"]:
        assert part["landed"] == {"scan": "tiny/300K/f2", "frames": n, "planned": 4 * n}
        assert "provisional_orientation" not in part  # the orientation is of complete scans
    for part in notes["complete"]:
        assert "landed" not in json.dumps(part) and "provisional" not in json.dumps(part)
