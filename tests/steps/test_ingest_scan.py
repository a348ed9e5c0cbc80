"""Step ingest_scan: the scan NeXus file links the raw frames, records geometry, angles,
sample; bad raw data end with a clear message, a non-zero status and no output."""
from __future__ import annotations

import hashlib
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

from hklflow.base.errors import RawDataError
from hklflow.files.calibration import write_version_file
from hklflow.files.h5 import read_provenance
from hklflow.files.scan import read_scan_file
from hklflow.model.geometry import DetectorGeometry
from hklflow.planning.config import load_experiment
from hklflow.raw.frames import open_frame_source, open_frames
from hklflow.raw.rawfiles import fingerprint
from hklflow.steps import ingest_scan as step

from conftest import step_settings

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
    write_version_file(root / "config/version.json", "cal1", "v007", root / "config/geometry.poni")
    # two offset axes, not in alphabetical order: their order (outermost first) must survive
    cfg = {"experiment": "ingest-test", "scans_table": "config/scans.tsv",
           "instrument": {"detector": DET, "wavelength": 0.71,
                          "goniometer": {"scan_axis": [0, 1, 0], "scan_sense": -1,
                                         "offset_axes": {"omega": [1, 0, 0], "chi": [0, 0, 1]}}},
           "calibrations": {"cal1": {"calibrant": "CeO2", "poni": "config/geometry.poni"}},
           "samples": {"s1": {"space_group": "P 21/c", "cell": [5.1, 6.2, 7.3, 90, 101.5, 90],
                              "parent": {"temperature": 300}}}}
    (root / "config/config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    (root / "config/scans.tsv").write_text(TABLE)
    return root, data


def run(root, entry, out=None, extra=(), settings=None):
    """The step as the rule runs it, in the experiment directory."""
    out = out or f"results/s1/300K/{entry}/scan.nxs"
    settings = settings or step_settings(root, "ingest_scan", "s1", "300K", entry)
    argv = ["--settings", settings, "--poni", "config/geometry.poni", "--version",
            "config/version.json", "--out", out, *extra]
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
    # scan.nxs holds the calibration as accepted and the entry's shift, not a shifted detector
    calibration = DetectorGeometry.from_poni_file(root / "config/geometry.poni", DET)
    assert rec.setup.calibration == calibration
    assert rec.setup.shift == (0.02, -0.003, 0.0)
    entry = rec.geometry()
    assert entry.detector == calibration.shifted(0.02, -0.003, 0.0)
    assert entry.detector.dist == pytest.approx(0.27) and entry.detector.poni1 == pytest.approx(0.049)
    assert rec.entry == "f1" and rec.scan_id == "s1/300K/f1" and rec.sample == "s1"
    assert rec.angles == scan.angles and rec.nframes == N
    assert rec.setup.offsets == {"omega": 0.0, "chi": 15.0}
    assert rec.setup.goniometer == exp.instrument.goniometer
    assert [n for n, _ in rec.setup.goniometer.offset_axes] == ["omega", "chi"]
    assert rec.temperature == 300.0
    np.testing.assert_allclose(rec.monitor, np.linspace(1e5, 1.1e5, N))
    assert rec.calibration["name"] == "cal1" and rec.calibration["version"] == "v007"
    assert rec.calibration["poni"] == (root / "config/geometry.poni").read_text()
    assert rec.provenance["program"] == "hklflow ingest_scan"
    assert rec.provenance["parameters"]["scan"]["nframes"] == N
    assert read_provenance(out)["parameters"]["scan"]["entry"] == "f1"
    # a fingerprint of the raw file, as ingest saw it
    assert rec.frames.fingerprints == (fingerprint(raw),)

    with h5py.File(out, "r") as f:  # NeXus layout and the link itself
        link = f["f1/data"].get("data", getlink=True)
        assert isinstance(link, h5py.ExternalLink) and link.path == DSET
        assert not os.path.isabs(link.filename)
        assert f["f1/data"].attrs["signal"] == "data"
        assert f["f1/instrument/detector/distance"][()] == pytest.approx(250.0)  # calibration
        # NeXus beam centre = where the direct beam hits: pyFAI's Fit2D centre (pixels)
        f2d = calibration.to_pyfai().getFit2D()
        assert f["f1/instrument/detector/beam_center_y"][()] == pytest.approx(f2d["centerY"], abs=1e-6)
        assert f["f1/instrument/detector/beam_center_x"][()] == pytest.approx(f2d["centerX"], abs=1e-6)
        np.testing.assert_allclose(f["f1/data/rotation_angle"][()],
                                   -10 + 0.5 * (np.arange(N) + 0.5))
        monkeypatch.chdir("/")  # the HDF5 link resolves relative to the scan file
        np.testing.assert_array_equal(f["f1/data/data"][5], data[5])

    with open_frame_source(rec.frames) as st:  # the link resolves to the same frames
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
    src = read_scan_file(moved / "results/moved/scan.nxs").frames
    assert src.files == (str(moved / "raw/s1_300K_f1.h5"),)
    with open_frame_source(src) as st:  # a copy (new mtime, same content) is the same data
        np.testing.assert_array_equal(st.read(0, 2), data[:2])
    (tmp_path / "elsewhere").mkdir()  # link broken: the recorded absolute path is used
    shutil.copy(out, tmp_path / "elsewhere/scan.nxs")
    assert read_scan_file(tmp_path / "elsewhere/scan.nxs").frames.files == \
        (str(root / "raw/s1_300K_f1.h5"),)


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
    with open_frame_source(rec.frames) as st:
        np.testing.assert_array_equal(st.read(0, 6), data[:6])
    assert rec.monitor is None and rec.setup.offsets == {"omega": 0.0, "chi": 0.0}
    assert [sha(p) for p in files] == before
    # no frames to link: NeXpy's default is the maximum of those read back (issue 70)
    import matplotlib

    matplotlib.use("Agg")
    from nexusformat.nexus import nxload

    shown = nxload(str(out)).plottable_data
    assert shown.nxpath == "/f2/frames_read" and shown.nxsignal.shape == data.shape[1:]
    np.testing.assert_array_equal(shown.nxsignal.nxdata, data[:1].max(axis=0))
    assert "frame(s) 0 (read back" in shown.nxsignal.attrs["long_name"]
    shown.plot()
    rc, out = run(root, "f2")  # the first and last frames read back
    np.testing.assert_array_equal(nxload(str(out)).plottable_data.nxsignal.nxdata,
                                  np.maximum(data[0], data[5]))


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
    assert "ingest_scan failed" in err
    assert re.search(message, err), err


def test_default_check_reads_only_first_and_last_frame(experiment_dir, capsys):
    """The default check reads the first and last frames only (cheap); frame 3 of f5 is
    caught by --check-frames all (above) and by any later full pass."""
    root, _ = experiment_dir
    rc, out = run(root, "f5")
    assert rc == 0
    with open_frame_source(read_scan_file(out).frames) as st:
        with pytest.raises(RawDataError, match=r"s1_f5_4\.cbf: frame 3"):
            st.read(0, 6)


def test_usage_errors(experiment_dir, capsys):
    root, _ = experiment_dir
    rc, out = run(root, "f1", out="results/usage/scan.nxs", settings="{not json")
    assert rc == 1 and not out.exists()
    assert "--settings: not valid JSON" in capsys.readouterr().err
    rc, out = run(root, "f1", out="results/usage/scan.nxs", settings='{"scan": {"sample": "s1"}}')
    assert rc == 1 and not out.exists()
    assert "--settings scan: missing setting(s) ['calibration', 'data'" in capsys.readouterr().err
    rc, out = run(root, "f1", out="results/usage/scan.nxs",
                  extra=["--poni", "config/missing.poni"])
    assert rc == 1 and not out.exists()
    assert "missing.poni: PONI file does not exist" in capsys.readouterr().err


def test_calibration_version_must_describe_the_poni(experiment_dir, tmp_path, capsys):
    """version.json (calibrate_powder) names the version of exactly this geometry.poni."""
    root, _ = experiment_dir
    other = tmp_path / "other.poni"
    CALIBRATION.shifted(0.001).write_poni(other)
    write_version_file(tmp_path / "version.json", "cal1", "v008", other)
    rc, out = run(root, "f1", out="results/version/scan.nxs",
                  extra=["--version", str(tmp_path / "version.json")])
    assert rc == 1 and not out.exists()
    assert "describes another geometry.poni than config/geometry.poni" in capsys.readouterr().err


def test_raw_file_changed_after_ingest_is_caught_by_later_steps(experiment_dir, tmp_path):
    """A raw file replaced by other data with its old size and modification time kept (rsync
    -a, cp -p): every step that reads frames stops, naming the file and saying to ingest
    again; the same bytes under a new mtime (a copied experiment) are fine."""
    root, data = experiment_dir
    exp = tmp_path / "exp"
    shutil.copytree(root, exp, ignore=shutil.ignore_patterns("results"))
    raw = exp / "raw/s1_300K_f1.h5"
    rc, out = run(exp, "f1")
    assert rc == 0
    rec = read_scan_file(out)
    st = os.stat(raw)
    other = data.copy()
    other[7] += 1  # other data: another file, written over the raw file, old mtime kept
    write_stack(tmp_path / "other.h5", other, **{"/entry/instrument/monitor": np.linspace(1e5, 1.1e5, N)})
    same_size = bytearray(raw.read_bytes())  # and one of the same size: bytes of the last
    same_size[-100:-90] = bytes(10)          # chunk changed in place
    for replacement in (tmp_path / "other.h5", bytes(same_size)):
        if isinstance(replacement, bytes):
            raw.write_bytes(replacement)
            assert os.path.getsize(raw) == st.st_size
        else:
            shutil.copyfile(replacement, raw)
        os.utime(raw, ns=(st.st_atime_ns, st.st_mtime_ns))
        with pytest.raises(RawDataError, match=r"s1_300K_f1\.h5: changed since the scan was "
                                               r"ingested.*run ingest_scan for this scan again"):
            open_frame_source(rec.frames)
    shutil.copyfile(root / "raw/s1_300K_f1.h5", raw)  # the original bytes, a new mtime
    with open_frame_source(rec.frames) as stack:
        np.testing.assert_array_equal(stack.read(0, N), data)


def test_the_fingerprint_setting_is_not_ingest_s(experiment_dir):
    """reduction.ingest.fingerprint is planning's check's (raw.rawfiles.RawChangeCheck): the
    ingest job's settings are the same either way, so that switching it makes no scan file
    again (issue 86), and ingest records the sampled fingerprint."""
    root, _ = experiment_dir
    sampled = step_settings(root, "ingest_scan", "s1", "300K", "f1")
    assert "fingerprint" not in sampled
    cfg = root / "config/config.yaml"
    c = yaml.safe_load(cfg.read_text())
    c.setdefault("reduction", {})["ingest"] = {"fingerprint": "full"}
    cfg.write_text(yaml.safe_dump(c, sort_keys=False))
    assert step_settings(root, "ingest_scan", "s1", "300K", "f1") == sampled
    rc, out = run(root, "f1", settings=sampled)
    assert rc == 0
    assert read_scan_file(out).frames.fingerprints[0] == fingerprint(root / "raw/s1_300K_f1.h5")


# (raw.frames.open_frames on a row of the scans table: here, where experiment_dir is made)
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
    with open_frame_source(rec.frames) as st:
        np.testing.assert_array_equal(st.read(0, 20), data)


# --------------------------------------------------------------------------------------
# The sensor (issue 80): recorded from the config, compared with the raw files'
# --------------------------------------------------------------------------------------
CDTE = {"material": "CdTe", "thickness": 0.001}


def sensor_experiment(root: Path, config_sensor, poni_sensor, header_line: str | None):
    """Two CBF frames whose headers may name a sensor, a PONI (with or without one) and a
    config (with or without instrument.detector.sensor)."""
    (root / "config").mkdir(parents=True)
    (root / "raw").mkdir()
    lines = ["# Detector: PILATUS3 300K, S/N 3-0001", "# Pixel_size 172e-6 m x 172e-6 m",
             *([header_line] if header_line else []), "# Wavelength 0.71000 A"]
    frames = np.random.default_rng(1).poisson(2.0, (2,) + SHAPE).astype(np.int32)
    for i, fr in enumerate(frames):
        fabio.cbfimage.CbfImage(data=fr, header={
            "_array_data.header_convention": "PILATUS_1.2",
            "_array_data.header_contents": "\r\n".join(lines)}).write(str(root / f"raw/s_{i + 1}.cbf"))
    CALIBRATION.with_sensor(poni_sensor).write_poni(root / "config/geometry.poni")
    write_version_file(root / "config/version.json", "cal1", "v1", root / "config/geometry.poni")
    detector = {"name": DET, **({"sensor": config_sensor} if config_sensor else {})}
    cfg = {"experiment": "sensor-test", "scans_table": "config/scans.tsv",
           "instrument": {"detector": detector, "wavelength": 0.71,
                          "goniometer": {"scan_axis": [0, 1, 0]}},
           "calibrations": {"cal1": {"calibrant": "CeO2", "poni": "config/geometry.poni"}},
           "samples": {"s1": {"space_group": "P 21/c", "cell": [5.1, 6.2, 7.3, 90, 101.5, 90],
                              "parent": {"temperature": 300}}}}
    (root / "config/config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    (root / "config/scans.tsv").write_text(
        "sample\ttemperature\tentry\tdata\tnframes\tphi_start\tphi_step\n"
        "s1\t300\tf1\traw/s_*.cbf\t2\t0\t0.5\n")
    return root


def test_a_sensor_the_raw_files_name_and_the_config_does_not_is_a_warning(tmp_path, capsys):
    root = sensor_experiment(tmp_path / "a", None, None, "# CdTe sensor, thickness 0.001000 m")
    rc, out = run(root, "f1")
    assert rc == 0 and read_scan_file(out).setup.calibration.sensor is None
    err = capsys.readouterr().err
    assert "WARNING" in err
    assert ("the raw files name the sensor CdTe, 1000 um thick (" in err
            and "s_1.cbf: CBF header), and instrument.detector.sensor is not set: its "
                "parallax is not corrected (it moves spots by up to" in err)
    assert "set instrument.detector.sensor (material, thickness) to correct it" in err


def test_the_configs_sensor_is_recorded_and_agrees_with_the_raw_files(tmp_path, capsys):
    root = sensor_experiment(tmp_path / "b", CDTE, CDTE, "# CdTe sensor, thickness 0.001000 m")
    settings = step_settings(root, "ingest_scan", "s1", "300K", "f1")
    assert '"detector_sensor":{"material":"CdTe","thickness":0.001}' in settings
    rc, out = run(root, "f1")
    assert rc == 0 and "WARNING" not in capsys.readouterr().err
    rec = read_scan_file(out)
    assert rec.setup.calibration.sensor.as_dict() == CDTE
    assert rec.geometry().detector.sensor.as_dict() == CDTE  # every consumer gets it
    with h5py.File(out, "r") as f:
        det = f["f1/instrument/detector"]
        assert det["sensor_material"][()].decode() == "CdTe"
        assert det["sensor_thickness"][()] == 0.001
        assert det["sensor_thickness"].attrs["units"] == "m"
    # another sensor in the files than in the config: the config's, with a warning
    root = sensor_experiment(tmp_path / "c", CDTE, CDTE,
                             "# Silicon sensor, thickness 0.000450 m")
    rc, _ = run(root, "f1")
    err = capsys.readouterr().err
    assert rc == 0 and "the raw files name the sensor Silicon, 450 um thick" in err
    assert "instrument.detector.sensor says CdTe 1000 um: the config's is used" in err


def test_a_calibration_made_with_another_sensor_is_refused(tmp_path, capsys):
    """The config's sensor changed after calibrate_powder (its geometry.poni corrects
    none): the scan would mix two sensors, so ingest stops."""
    root = sensor_experiment(tmp_path / "d", CDTE, None, None)
    rc, out = run(root, "f1")
    assert rc != 0 and not out.exists()
    err = capsys.readouterr().err
    assert ("config/geometry.poni: the calibration corrects the parallax of no sensor, "
            "instrument.detector.sensor is CdTe 1000 um: run calibrate_powder again (or "
            "correct the config)") in err
