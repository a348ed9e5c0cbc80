"""`hklflow simulate --acquire`: the experiment written in real time holds the same frames
and truth as the plain mode, its scans table grows as scans start, HDF5 files can be read
while they grow (SWMR), aborted scans stop short, and the Eiger layout carries NXmx metadata."""
from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import h5py
import hdf5plugin  # noqa: F401  (registers the bitshuffle filter)
import numpy as np
import pytest

from hklflow.planning.config import load_experiment
from hklflow.raw.frames import open_frames
from hklflow.simulation import cli
from hklflow.simulation.acquisition import (CACHE_FOLDER, AcquisitionError, acquire_experiment,
                                            acquisition_plan)
from hklflow.simulation.experiment import config_texts, preset, simulate_experiment

SCANS = ["tiny/300K/f1", "tiny/300K/f2", "tiny/100K/f1", "tiny/100K/f2"]


def plain_frames(exp, scan_id):
    sample, tl, entry = scan_id.split("/")
    with h5py.File(exp / "raw" / sample / tl / f"{entry}.h5", "r") as f:
        return f["/entry/data/data"][()]


def acquired_frames(exp, scan_id):
    """The frames of a scan, through hklflow's reader of the scans table's `data`."""
    cfg = load_experiment(exp / "config" / "config.yaml", base_dir=exp)
    scan = next(s for s in cfg.scans if s.id == scan_id)
    with open_frames(scan.data, scan.dataset, base_dir=exp) as stack:
        return stack.read(0, stack.nframes)


@pytest.mark.parametrize("frame_format, abort, stopped", [
    ("hdf5", "tiny/300K/f2:13", "tiny/300K/f2"),  # a named scan in the middle
    ("eiger", "30", "tiny/100K/f2"),  # N alone: the last scan
    ("cbf", "7", "tiny/100K/f2"),
])
def test_acquired_experiment_equals_the_plain_one(tiny_experiment, tmp_path, frame_format, abort,
                                                  stopped):
    out = tmp_path / "exp"
    result = acquire_experiment(preset("tiny"), out, frame_format, fps=2000, pause_s=0,
                                abort_after=[abort], frames_per_file=25)
    assert (out / "truth.json").read_text() == (tiny_experiment / "truth.json").read_text()
    texts = config_texts(preset("tiny"), frame_format)
    assert (out / "config" / "config.yaml").read_text() == texts["config.yaml"]
    assert (out / "config" / "scans.tsv").read_text() == texts["scans.tsv"]
    assert not (out / CACHE_FOLDER).exists()
    n_stop = int(abort.rpartition(":")[2])
    for scan_id in SCANS:
        expected = plain_frames(tiny_experiment, scan_id)
        if scan_id == stopped:
            expected = expected[:n_stop]
        assert result["scans"][scan_id]["frames"] == len(expected)
        assert np.array_equal(acquired_frames(out, scan_id), expected), scan_id
    if frame_format == "eiger":  # 30 of 60 frames: files 1 and 2 (5 frames); 3 never written
        folder = out / "raw" / "tiny" / "100K" / "f2"
        assert sorted(p.name for p in folder.iterdir()) == [
            "f2_data_000001.h5", "f2_data_000002.h5", "f2_master.h5"]
        with h5py.File(folder / "f2_data_000002.h5", "r") as f:
            d = f["/entry/data/data"]
            assert d.shape[0] == 5 and (d.attrs["image_nr_low"], d.attrs["image_nr_high"]) == (26, 30)
        with h5py.File(folder / "f2_master.h5", "r") as f:
            assert sorted(f["/entry/data"]) == [f"data_00000{k}" for k in (1, 2, 3)]
    if frame_format == "hdf5":
        with h5py.File(out / "raw" / "tiny" / "300K" / "f2.h5", "r") as f:
            gonio = f["/entry/sample/goniometer"]
            assert np.allclose(gonio["phi"][()], np.arange(13) * 1.0)
            assert gonio["phi"].attrs["units"] == "deg"
            assert (gonio["omega"][()], gonio["chi"][()]) == (-1.0, 1.5)


def geom_shift(truth: dict, scan_id: str) -> tuple:
    return tuple(truth["scans"][scan_id]["det_shift"])


def test_plain_eiger_layout_carries_nxmx_metadata(tiny_experiment, tiny_truth, tmp_path):
    spec = preset("tiny")
    simulate_experiment(spec, tmp_path, "eiger", frames_per_file=25)
    folder = tmp_path / "raw" / "tiny" / "300K" / "f2"
    assert sorted(p.name for p in folder.iterdir()) == [
        "f2_data_000001.h5", "f2_data_000002.h5", "f2_data_000003.h5", "f2_master.h5"]
    geom = tiny_truth["scans"]["tiny/300K/f2"]["geometry"]
    with h5py.File(folder / "f2_master.h5", "r") as f:
        assert f["entry"].attrs["NX_class"] == "NXentry"
        links = {k: f["/entry/data"].get(k, getlink=True) for k in f["/entry/data"]}
        assert [(v.filename, v.path) for _, v in sorted(links.items())] == [
            (f"f2_data_00000{k}.h5", "/entry/data/data") for k in (1, 2, 3)]
        assert f["/entry/data/data_000003"].shape == (10, 619, 487)  # links resolve
        det = f["/entry/instrument/detector"]
        units = {"detector_distance": "m", "beam_center_x": "pixel", "beam_center_y": "pixel",
                 "x_pixel_size": "m", "y_pixel_size": "m", "count_time": "s", "frame_time": "s"}
        for name, unit in units.items():
            assert det[name].attrs["units"] == unit, name
        assert f["/entry/instrument/beam/incident_wavelength"][()] == spec.wavelength
        assert f["/entry/instrument/beam/incident_wavelength"].attrs["units"] == "angstrom"
        # NXmx: where the direct beam hits (pixels) and the distance from the sample to it,
        # of the geometry the beamline knows (the calibration moved by the entry's shift,
        # not the true one: its drift is for the refinement to find), as pyFAI's Fit2D
        # conversion gives them (centerX/Y: pixels along poni2/poni1, = columns/rows at
        # orientation 3); with the tilted detector not the PONI
        known = spec.calibration().shifted(*geom_shift(tiny_truth, "tiny/300K/f2"))
        f2d = known.to_pyfai().getFit2D()
        assert det["detector_distance"][()] == pytest.approx(f2d["directDist"] * 1e-3, abs=1e-12)
        assert det["beam_center_x"][()] == pytest.approx(f2d["centerX"], abs=1e-9)
        assert det["beam_center_y"][()] == pytest.approx(f2d["centerY"], abs=1e-9)
        assert abs(det["beam_center_y"][()] - known.poni1 / known.pixel_size[0]) > 1.0
        assert abs(det["detector_distance"][()] - geom["dist"]) > 5e-5  # not the truth's
        specific = det["detectorSpecific"]
        assert (specific["nimages"][()], specific["ntrigger"][()]) == (60, 1)
        assert (specific["y_pixels_in_detector"][()], specific["x_pixels_in_detector"][()]) == (619, 487)
        mask = specific["pixel_mask"][()]
        assert mask.dtype == np.uint32 and mask.shape == (619, 487)
        # NXmx's place for it is the detector group: the same dataset (a hard link)
        assert det["pixel_mask"].id == specific["pixel_mask"].id
        assert not det["pixel_mask_applied"][()]
        dead = {tuple(p) for p in tiny_truth["detector_defects"]["dead_pixels"]}
        assert {tuple(p) for p in np.argwhere(mask)} == dead
        gonio = f["/entry/sample/goniometer"]
        assert np.allclose(gonio["phi"][()], np.arange(60) * 1.0)
        assert np.all(gonio["omega"][()] == -1.0) and np.all(gonio["chi"][()] == 1.5)
        for name in ("phi", "phi_increment", "phi_range_average", "phi_range_total", "omega", "chi"):
            assert gonio[name].attrs["units"] == "deg", name
        assert gonio["phi_range_total"][()] == 60.0
    with h5py.File(folder / "f2_data_000002.h5", "r") as f:
        d = f["/entry/data/data"]
        assert d.chunks == (1, 619, 487) and d.dtype == np.int32
        assert (d.attrs["image_nr_low"], d.attrs["image_nr_high"]) == (26, 50)
    assert np.array_equal(acquired_frames(tmp_path, "tiny/300K/f2"),
                          plain_frames(tiny_experiment, "tiny/300K/f2"))


ACQUIRE_SCRIPT = """
from dataclasses import replace
from hklflow.simulation.acquisition import acquire_experiment
from hklflow.simulation.experiment import preset
acquire_experiment(replace(preset("tiny"), nframes=20), {out!r}, "hdf5", fps=20, pause_s=0.5)
"""


def test_scans_table_grows_as_scans_start_and_hdf5_is_readable_while_written(tmp_path):
    out = tmp_path / "exp"
    table = out / "config" / "scans.tsv"
    files = [out / "raw" / "tiny" / f"{s.split('/')[1]}" / f"{s.split('/')[2]}.h5" for s in SCANS]
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(ACQUIRE_SCRIPT.format(out=str(out)))],
                            stderr=subprocess.PIPE, text=True)
    seen_rows, growth = set(), None
    try:
        deadline = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < deadline:
            if not table.exists():
                time.sleep(0.05)
                continue
            text = table.read_text()  # before the files: a scan's file appears before its row
            existing = [f.exists() for f in files]
            assert text.endswith("\n")  # whole lines only
            rows = text.splitlines()[1:]
            assert all(len(r.split("\t")) == 12 for r in rows)
            started = len(rows)
            seen_rows.add(started)
            assert all(existing[:started]) and not any(existing[started + 1:])
            if started == 1 and growth is None:
                with h5py.File(files[0], "r", libver="latest", swmr=True) as f:
                    d, phi = f["/entry/data/data"], f["/entry/sample/goniometer/phi"]
                    before = d.shape[0]
                    time.sleep(0.4)
                    # Dataset.refresh, not id.refresh: h5py caches the shape of a read-only file
                    d.refresh()
                    phi.refresh()
                    growth = (before, d.shape[0], phi.shape[0])
                    if d.shape[0]:
                        assert np.all(d[d.shape[0] - 1] >= -1)  # a flushed frame reads whole
            time.sleep(0.05)
    finally:
        if proc.poll() is None:
            proc.kill()
        err = proc.communicate()[1]
    assert proc.returncode == 0, err
    assert {1, 2, 3, 4} <= seen_rows, seen_rows
    assert seen_rows <= {0, 1, 2, 3, 4}
    assert growth is not None and growth[1] > growth[0] and growth[2] >= growth[1], growth
    assert len(table.read_text().splitlines()) == 5


def test_abort_after_names_a_scan_of_the_experiment():
    spec = preset("tiny")
    plan = acquisition_plan(spec, "hdf5", ["tiny/100K/f1:5", "12"])
    assert [(s.scan_id, s.nframes) for s in plan] == [
        ("tiny/300K/f1", 60), ("tiny/300K/f2", 60), ("tiny/100K/f1", 5), ("tiny/100K/f2", 12)]
    with pytest.raises(AcquisitionError, match="no scan 'tiny/200K/f1'.*tiny/300K/f1"):
        acquisition_plan(spec, "hdf5", ["tiny/200K/f1:5"])
    with pytest.raises(AcquisitionError, match="between 0 and 60"):
        acquisition_plan(spec, "hdf5", ["61"])
    with pytest.raises(AcquisitionError, match="whole number"):
        acquisition_plan(spec, "hdf5", ["tiny/300K/f1:many"])


def test_cli_refuses_acquisition_settings_that_cannot_work(tmp_path, capsys):
    for argv, message in (
            ([str(tmp_path), "--fps", "10"], "--fps only apply with --acquire"),
            ([str(tmp_path), "--acquire"], "--acquire needs --fps"),
            ([str(tmp_path), "--frames-per-file", "5"], "only applies to --format eiger")):
        with pytest.raises(SystemExit):
            cli.main(argv)
        assert message in capsys.readouterr().err
    # checked before anything is simulated
    assert cli.main([str(tmp_path), "--preset", "tiny", "--acquire", "--fps", "10",
                     "--abort-after", "tiny/1K/f1:3"]) == 1
    assert not (tmp_path / "config").exists()
