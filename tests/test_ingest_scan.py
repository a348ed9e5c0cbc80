"""Step ingest_scan: the scan NeXus file links the raw frames, records geometry, angles,
sample; bad raw data end with a clear message, a non-zero status and no output."""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from pathlib import Path

import fabio.cbfimage
import h5py
import hdf5plugin
import numpy as np
import pytest
import yaml

from hklflow.config import load_experiment, scan_detector_geometry
from hklflow.frames import RawDataError, open_frames, open_scan_frames
from hklflow.geometry import DetectorGeometry
from hklflow.nexus import read_frame_source, read_provenance, read_scan_file
from hklflow.steps import ingest_scan as step

DET = "Pilatus300k"
SHAPE = (619, 487)
DSET = "/entry/data/data"
N = 20
CALIBRATION = DetectorGeometry(DET, 0.25, 0.052, 0.041, 0.012, -0.021, 0.003, 0.71)

TABLE = """\
sample\ttemperature\tentry\tdata\tnframes\tphi_start\tphi_step\tdet_ddist\tdet_dponi1\tmonitor\tchi
s1\t300\tf1\traw/s1_300K_f1.h5\t20\t-10\t0.5\t0.02\t-0.003\t/entry/instrument/monitor\t15
s1\t300\tf2\traw/cbf/s1_f2_*.cbf\t6\t0\t0.1\t0\t0\t\t0
s1\t300\tf3\traw/s1_300K_f1.h5\t25\t0\t0.5\t0\t0\t\t0
s1\t300\tf4\traw/cut.h5\t20\t0\t0.5\t0\t0\t\t0
s1\t300\tf5\traw/badcbf/s1_f5_*.cbf\t6\t0\t0.1\t0\t0\t\t0
s1\t300\tf6\traw/small.h5\t4\t0\t0.5\t0\t0\t\t0
s1\t300\tf7\traw/bad.h5\t20\t0\t0.5\t0\t0\t\t0
s1\t300\tf8\traw/parts/p_*.h5\t20\t0\t0.5\t0\t0\t/m\t0
"""


def sha(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest(), os.stat(path).st_mtime_ns


def write_stack(path, data, **extra):
    with h5py.File(path, "w") as f:
        f.create_dataset(DSET, data=data, chunks=(1,) + data.shape[1:],
                         **hdf5plugin.Bitshuffle(cname="lz4"))
        for k, v in extra.items():
            f[k] = v


@pytest.fixture(scope="module")
def experiment_dir(tmp_path_factory):
    """An experiment directory: config, scans table, PONI and raw data (good and bad)."""
    root = tmp_path_factory.mktemp("exp")
    (root / "config").mkdir()
    (root / "raw").mkdir()
    rng = np.random.default_rng(7)
    data = rng.poisson(2.0, (N,) + SHAPE).astype(np.int32)
    write_stack(root / "raw/s1_300K_f1.h5", data,
                **{"/entry/instrument/monitor": np.linspace(1e5, 1.1e5, N)})
    b = (root / "raw/s1_300K_f1.h5").read_bytes()
    (root / "raw/cut.h5").write_bytes(b[:len(b) // 2])  # truncated copy
    with h5py.File(root / "raw/s1_300K_f1.h5", "r") as f:  # copy with a corrupt last chunk
        info = f[DSET].id.get_chunk_info_by_coord((N - 1, 0, 0))
    bad = bytearray(b)
    bad[info.byte_offset:info.byte_offset + 16] = b"\xff" * 16
    (root / "raw/bad.h5").write_bytes(bytes(bad))
    write_stack(root / "raw/small.h5", data[:4, :100, :90])  # wrong frame shape
    (root / "raw/parts").mkdir()  # one scan in three files (as Eiger data files)
    for name, a, b in (("p_1.h5", 0, 8), ("p_2.h5", 8, 16), ("p_10.h5", 16, 20)):
        write_stack(root / "raw/parts" / name, data[a:b], **{"/m": np.arange(a, b) + 1.0})
    cbf = data[:6]
    for folder, name in (("cbf", "s1_f2_{}.cbf"), ("badcbf", "s1_f5_{}.cbf")):
        (root / "raw" / folder).mkdir()
        for i, fr in enumerate(cbf):
            fabio.cbfimage.CbfImage(data=fr).write(str(root / "raw" / folder / name.format(i + 1)))
    victim = root / "raw/badcbf/s1_f5_4.cbf"
    vb = bytearray(victim.read_bytes())
    vb[-300:-250] = bytes(range(50))
    victim.write_bytes(bytes(vb))

    CALIBRATION.write_poni(root / "config/geometry.poni")
    cfg = {"experiment": "ingest-test", "scans_table": "config/scans.tsv",
           "instrument": {"detector": DET, "wavelength": 0.71,
                          "goniometer": {"scan_axis": [0, 1, 0], "scan_sense": -1,
                                         "offset_axes": {"chi": [0, 0, 1]}}},
           "calibrations": {"cal1": {"calibrant": "CeO2", "poni": "config/geometry.poni"}},
           "samples": {"s1": {"space_group": "P 21/c", "cell": [5.1, 6.2, 7.3, 90, 101.5, 90],
                              "parent": {"temperature": 300}}}}
    (root / "config/config.yaml").write_text(yaml.safe_dump(cfg))
    (root / "config/scans.tsv").write_text(TABLE)
    return root, data


def run(root, entry, out=None, extra=()):
    out = out or f"results/s1/300K/{entry}/scan.nxs"
    argv = ["--config", "config/config.yaml", "--scan", f"s1/300K/{entry}",
            "--poni", "config/geometry.poni", "--out", out, *extra]
    cwd = os.getcwd()
    os.chdir(root)
    try:
        return step.main(argv), root / out
    finally:
        os.chdir(cwd)


def test_ingest_hdf5_links_frames_and_records_geometry(experiment_dir, monkeypatch):
    root, data = experiment_dir
    raw = root / "raw/s1_300K_f1.h5"
    before = sha(raw)
    rc, out = run(root, "f1")
    assert rc == 0 and out.is_file()
    assert sha(raw) == before  # raw data untouched
    assert [p.name for p in out.parent.iterdir()] == ["scan.nxs"]  # no temp files left

    rec = read_scan_file(out)
    exp = load_experiment([root / "config/config.yaml"], base_dir=root)
    scan = exp.scan("s1", "300K", "f1")
    expected = scan_detector_geometry(
        DetectorGeometry.from_poni_file(root / "config/geometry.poni", detector_name=DET), scan)
    assert rec.geometry == expected
    assert rec.geometry.dist == pytest.approx(0.27) and rec.geometry.poni1 == pytest.approx(0.049)
    assert rec.detector_shift == (0.02, -0.003, 0.0)
    assert rec.entry == "f1" and rec.scan_id == "s1/300K/f1" and rec.sample == "s1"
    assert rec.angles == scan.angles and rec.nframes == N
    assert rec.offsets == {"chi": 15.0}
    assert rec.goniometer == exp.instrument.goniometer
    assert rec.temperature == 300.0
    assert rec.cell == (5.1, 6.2, 7.3, 90.0, 101.5, 90.0)
    assert rec.crystal().hm == exp.samples["s1"].crystal.hm
    np.testing.assert_allclose(rec.monitor, np.linspace(1e5, 1.1e5, N))
    assert rec.calibration["name"] == "cal1"
    assert rec.calibration["poni"] == (root / "config/geometry.poni").read_text()
    assert rec.provenance["program"] == "hklflow ingest_scan"
    assert rec.provenance["parameters"]["scan"] == "s1/300K/f1"
    assert read_provenance(out)["parameters"]["nframes"] == N

    with h5py.File(out, "r") as f:  # NeXus layout and the link itself
        link = f["f1/data"].get("data", getlink=True)
        assert isinstance(link, h5py.ExternalLink) and link.path == DSET
        assert not os.path.isabs(link.filename)
        assert f["f1/data"].attrs["signal"] == "data"
        assert f["f1/instrument/detector/distance"][()] == pytest.approx(270.0)
        # NeXus beam centre = where the direct beam hits: pyFAI's Fit2D centre (pixels)
        f2d = rec.geometry.to_pyfai().getFit2D()
        assert f["f1/instrument/detector/beam_center_y"][()] == pytest.approx(f2d["centerY"], abs=1e-6)
        assert f["f1/instrument/detector/beam_center_x"][()] == pytest.approx(f2d["centerX"], abs=1e-6)
        np.testing.assert_allclose(f["f1/data/rotation_angle"][()],
                                   -10 + 0.5 * (np.arange(N) + 0.5))
        monkeypatch.chdir("/")  # the HDF5 link resolves relative to the scan file
        np.testing.assert_array_equal(f["f1/data/data"][5], data[5])

    with open_scan_frames(out) as st:  # the link resolves to the same frames
        assert st.files == [str(raw)]
        np.testing.assert_array_equal(np.concatenate([b for _, b in st.iter_chunks(8)]), data)
    assert sha(raw) == before


def test_ingested_scan_survives_moving_the_experiment(experiment_dir, tmp_path):
    root, data = experiment_dir
    rc, out = run(root, "f1", out="results/moved/scan.nxs")
    assert rc == 0
    moved = tmp_path / "moved_exp"
    (moved / "results").mkdir(parents=True)
    shutil.copytree(root / "raw", moved / "raw", ignore=shutil.ignore_patterns("cbf", "bad*"))
    (moved / "results/moved").mkdir()
    shutil.copy(out, moved / "results/moved/scan.nxs")
    src = read_frame_source(moved / "results/moved/scan.nxs")
    assert src.files == (str(moved / "raw/s1_300K_f1.h5"),)
    (tmp_path / "elsewhere").mkdir()  # link broken: the recorded absolute path is used
    shutil.copy(out, tmp_path / "elsewhere/scan.nxs")
    assert read_frame_source(tmp_path / "elsewhere/scan.nxs").files == (str(root / "raw/s1_300K_f1.h5"),)


def test_ingest_cbf_records_file_list(experiment_dir):
    root, data = experiment_dir
    files = sorted((root / "raw/cbf").iterdir())
    before = [sha(p) for p in files]
    rc, out = run(root, "f2", extra=["--check-frames", "all"])
    assert rc == 0
    rec = read_scan_file(out)
    assert rec.frames.kind == "files" and len(rec.frames.files) == 6
    assert [Path(f).name for f in rec.frames.files] == [f"s1_f2_{i}.cbf" for i in range(1, 7)]
    with h5py.File(out, "r") as f:
        assert "data" not in f["f2/data"]
        assert f["f2/data/raw_files"][0].decode() == "../../../../raw/cbf/s1_f2_1.cbf"
    with open_scan_frames(out) as st:
        np.testing.assert_array_equal(st.read(0, 6), data[:6])
    assert rec.monitor is None and rec.offsets == {"chi": 0.0}
    assert [sha(p) for p in files] == before


@pytest.mark.parametrize("entry, message", [
    ("f3", r"s1_300K_f1\.h5 dataset /entry/data/data: found 20 frames, expected 25"),
    ("f4", r"raw/cut\.h5: cannot open as HDF5 \(truncated or corrupt file\?\)"),
    ("f5", r"raw/badcbf/s1_f5_4\.cbf: frame 3: the frame file is corrupt"),
    ("f6", r"raw/small\.h5: frames are 100x90 \(rows x cols\), but the detector has 619x487"),
    ("f7", r"raw/bad\.h5: frame 19 .*cannot be read or decompressed"),
])
def test_bad_raw_data_fails_cleanly(experiment_dir, capsys, entry, message):
    root, _ = experiment_dir
    out = root / f"results/s1/300K/{entry}/scan.nxs"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("stale output of an earlier run")
    extra = ["--check-frames", "all"] if entry == "f5" else []
    rc, out = run(root, entry, extra=extra)
    assert rc != 0
    assert not out.exists()
    assert list(out.parent.iterdir()) == []  # no temporary file either
    err = capsys.readouterr().err
    assert f"ingest_scan s1/300K/{entry} failed" in err
    assert re.search(message, err), err


def test_default_check_reads_only_first_and_last_frame(experiment_dir, capsys):
    """The default check reads the first and last frames only (cheap); frame 3 of f5 is
    caught by --check-frames all (above) and by any later full pass."""
    root, _ = experiment_dir
    rc, out = run(root, "f5")
    assert rc == 0
    with open_scan_frames(out) as st:
        with pytest.raises(RawDataError, match=r"s1_f5_4\.cbf: frame 3"):
            st.read(0, 6)


def test_usage_errors(experiment_dir, capsys):
    root, _ = experiment_dir
    rc, out = run(root, "nope", out="results/usage/scan.nxs")
    assert rc == 1 and not out.exists()
    assert "no scan s1/300K/nope" in capsys.readouterr().err
    rc, out = run(root, "f1", out="results/usage/scan.nxs",
                  extra=["--poni", "config/missing.poni"])
    assert rc == 1 and not out.exists()
    assert "missing.poni: PONI file does not exist" in capsys.readouterr().err
    assert step.main(["--config", "c.yaml", "--scan", "bad", "--poni", "p", "--out", "o"]) == 2


def test_calibration_version_from_index(tmp_path):
    d = tmp_path / "calibration/cal1"
    (d / "versions/v002").mkdir(parents=True)
    poni = d / "geometry.poni"
    CALIBRATION.write_poni(poni)
    digest = step.file_digest(poni)
    assert step.calibration_version(poni, digest) == digest  # no index: the content digest
    index = {"current": "v002", "versions": [
        {"version": "v001", "files": {"geometry.poni": "sha256:other"}},
        {"version": "v002", "files": {"geometry.poni": digest}}]}
    (d / "index.json").write_text(json.dumps(index))
    assert step.calibration_version(poni, digest) == "v002"
    copy = d / "versions/v002/geometry.poni"
    copy.write_bytes(poni.read_bytes())
    assert step.calibration_version(copy, digest) == "v002"


def test_params_validation():
    p = step.IngestParams(scan="s1/300K/f1", poni="a.poni", out="o.nxs", check_frames=[0, -1])
    assert p.scan_key == ("s1", "300K", "f1") and p.check_frames == (0, -1)
    with pytest.raises(ValueError, match="SAMPLE/TLABEL/ENTRY"):
        step.IngestParams(scan="s1/f1", poni="a", out="b")
    with pytest.raises(ValueError, match="'all'"):
        step.IngestParams(scan="s1/300K/f1", poni="a", out="b", check_frames="some")


def test_open_frames_of_table_row_matches_ingest(experiment_dir):
    root, data = experiment_dir
    exp = load_experiment([root / "config/config.yaml"], base_dir=root)
    scan = exp.scan("s1", "300K", "f2")
    with open_frames(scan.data, scan.dataset, base_dir=root, expected_frames=scan.nframes) as st:
        np.testing.assert_array_equal(st.read(2, 4), data[2:4])


def test_ingest_several_hdf5_files_as_virtual_dataset(experiment_dir, monkeypatch):
    root, data = experiment_dir
    rc, out = run(root, "f8")
    assert rc == 0
    rec = read_scan_file(out)
    assert [Path(f).name for f in rec.frames.files] == ["p_1.h5", "p_2.h5", "p_10.h5"]
    assert rec.frames.frames_per_file == (8, 8, 4)
    np.testing.assert_array_equal(rec.monitor, np.arange(20) + 1.0)
    monkeypatch.chdir("/")
    with h5py.File(out, "r") as f:
        assert f["f8/data/data"].is_virtual
        np.testing.assert_array_equal(f["f8/data/data"][6:10], data[6:10])
    with open_scan_frames(out) as st:
        np.testing.assert_array_equal(st.read(0, 20), data)
