"""Monitors of scans of frame files (issue 70): a column file named in the scans table, or a
field of each frame's CBF header (cbf:Flux), read by ingest into scan.nxs as an HDF5
monitor is.  The refusals when the table is read are cases of test_bad_input.py."""
from __future__ import annotations

import os
import re
import shutil
import time

import fabio
import fabio.cbfimage
import h5py
import numpy as np
import pytest
import yaml

from hklflow.base.errors import RawDataError
from hklflow.files.calibration import write_version_file
from hklflow.files.scan import read_scan_file
from hklflow.model.geometry import DetectorGeometry
from hklflow.raw.frames import open_frames
from hklflow.raw.monitors import cbf_header_value, read_column_file
from hklflow.steps import ingest_scan

from conftest import job_counts, run_snakemake, step_settings

DET = "Pilatus300k"
SHAPE = (619, 487)
FRAMES = 6
CALIBRATION = DetectorGeometry(DET, 0.25, 0.052, 0.041, 0.012, -0.021, 0.003, 0.71)
FLUX = np.array([2.31e11, 2.35e11, 0.0, 2.29e11, 2.40e11, 2.38e11])  # a beam dump at frame 2
COLUMN = np.array([1001.0, 998.5, 1003.0, 0.0, 1000.25, 999.0])

# the header a PILATUS 300K writes (CBFlib's first line, the convention quoted)
PILATUS_HEADER = """\
# Detector: PILATUS 300K, S/N 3-0101
# 2024-03-05T14:22:10.123
# Pixel_size 172e-6 m x 172e-6 m
# Silicon sensor, thickness 0.001000 m
# Exposure_time 0.0990000 s
# Exposure_period 0.1000000 s
# Tau = 124.0e-09 s
# Count_cutoff 1048575 counts
# Threshold_setting: 8500 eV
# Gain_setting: autog (vrf = 1.000)
# N_excluded_pixels = 0
# Excluded_pixels: (nil)
# Flat_field: (nil)
# Trim_file: (nil)
# Image_path: /ramdisk/
# Wavelength 0.7100 A
# Detector_distance 0.25000 m
# Beam_xy (240.00, 310.00) pixels
{flux}# Filter_transmission 1.0000
# Start_angle {start:.4f} deg.
# Angle_increment 0.1000 deg.
# Detector_2theta 0.0000 deg.
# Polarization 0.990
# Alpha 0.0000 deg.
# Kappa 0.0000 deg.
# Phi {start:.4f} deg.
# Phi_increment 0.1000 deg.
# Chi 0.0000 deg.
# Oscillation_axis X, CW
# N_oscillations 1"""

TABLE = """\
sample\ttemperature\tentry\tdata\tnframes\tphi_start\tphi_step\tmonitor
s1\t300\tf1\traw/colmon/s1_f1_*.cbf\t6\t0\t0.1\tmonitors/f1.txt
s1\t300\tf2\traw/pilatus/s1_f2_*.cbf\t6\t0\t0.1\tcbf:Flux
s1\t300\tf4\traw/noflux/s1_f4_*.cbf\t6\t0\t0.1\tcbf:Flux
"""


def write_pilatus_cbf(path, frame, flux: float | None, start: float = 0.0) -> None:
    """A frame file as a PILATUS writes it; flux None: without a Flux line."""
    text = PILATUS_HEADER.format(flux="" if flux is None else f"# Flux {flux:.6g}\n",
                                 start=start).replace("\n", "\r\n")
    fabio.cbfimage.CbfImage(data=frame, header={
        "_array_data.header_convention": "PILATUS_1.2",
        "_array_data.header_contents": text}).write(str(path))
    raw = path.read_bytes()
    raw = re.sub(rb"^###CBF: VERSION 1.5[^\r\n]*", b"###CBF: VERSION 1.5, CBFlib v0.7.8 - "
                 b"PILATUS detectors", raw, count=1)
    path.write_bytes(re.sub(rb"_array_data.header_convention +PILATUS_1.2",
                            b'_array_data.header_convention "PILATUS_1.2"', raw, count=1))


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    """An experiment of three CBF scans: a column-file monitor (f1), the headers' Flux (f2)
    and headers whose Flux is 0 throughout (f4: no flux given to the detector)."""
    root = tmp_path_factory.mktemp("monitors")
    data = np.random.default_rng(3).poisson(2.0, (FRAMES,) + SHAPE).astype(np.int32)
    for folder in ("config", "monitors", "raw/colmon", "raw/pilatus", "raw/noflux"):
        (root / folder).mkdir(parents=True)
    for i, frame in enumerate(data):
        fabio.cbfimage.CbfImage(data=frame).write(str(root / f"raw/colmon/s1_f1_{i + 1}.cbf"))
        write_pilatus_cbf(root / f"raw/pilatus/s1_f2_{i + 1:05d}.cbf", frame + 1, FLUX[i],
                          0.1 * i)
        write_pilatus_cbf(root / f"raw/noflux/s1_f4_{i + 1:05d}.cbf", frame + 2, 0.0, 0.1 * i)
    (root / "monitors/f1.txt").write_text(
        "# frame  I0 (ion chamber counts)\n"
        + "".join(f"{i + 1}, {v}\n" for i, v in enumerate(COLUMN)))
    CALIBRATION.write_poni(root / "config/geometry.poni")
    write_version_file(root / "config/version.json", "cal1", "v001", root / "config/geometry.poni")
    cfg = {"experiment": "monitors", "scans_table": "config/scans.tsv",
           "instrument": {"detector": DET, "wavelength": 0.71,
                          "goniometer": {"scan_axis": [0, 1, 0], "scan_sense": -1}},
           "calibrations": {"cal1": {"calibrant": "CeO2", "poni": "config/geometry.poni"}},
           "samples": {"s1": {"space_group": "P 21/c", "cell": [5.1, 6.2, 7.3, 90, 101.5, 90],
                              "parent": {"temperature": 300}}}}
    (root / "config/config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    (root / "config/scans.tsv").write_text(TABLE)
    return root


def ingest(root, entry, monkeypatch):
    """The step as the rule runs it, in the experiment directory: (rc, scan file)."""
    out = f"results/s1/300K/{entry}/scan.nxs"
    argv = ["--settings", step_settings(root, "ingest_scan", "s1", "300K", entry),
            "--poni", "config/geometry.poni", "--version", "config/version.json", "--out", out]
    monkeypatch.chdir(root)
    return ingest_scan.main(argv), root / out


def test_column_files_of_one_or_two_columns(tmp_path):
    """One value a line, or frame number and value (from 0 or 1), between spaces, tabs or a
    comma, '#' comments and blank lines skipped; while a scan is collected its first nframes
    values are taken."""
    texts = {"one.txt": "# I0\n5\n\n6.5   # a comment\n7e3\n",
             "two.txt": "0\t5\n1\t6.5\n2\t7000\n",
             "comma.txt": "# frame, flux\n1, 5\n2, 6.5\n3, 7e3\n"}
    for name, text in texts.items():
        (tmp_path / name).write_text(text)
        np.testing.assert_array_equal(read_column_file(tmp_path / name, 3), [5, 6.5, 7000])
    np.testing.assert_array_equal(read_column_file(tmp_path / "two.txt", 2, more_allowed=True),
                                  [5, 6.5])
    with pytest.raises(ValueError, match=r"two\.txt: 3 values \(frame number, value\), "
                                         r"expected one per frame: the row's nframes is 2"):
        read_column_file(tmp_path / "two.txt", 2, shown="two.txt")
    (tmp_path / "gap.txt").write_text("1 5\n2 6\n4 7\n")
    with pytest.raises(ValueError, match=r"gap\.txt: line 3: frame number 4 after 2: expected "
                                         r"consecutive frame numbers"):
        read_column_file(tmp_path / "gap.txt", 3, shown="gap.txt")
    (tmp_path / "header.txt").write_text("I0\n5\n6\n")
    with pytest.raises(ValueError, match=r"line 1: 'I0' is not a number \(comment lines start "
                                         r"with '#'\)"):
        read_column_file(tmp_path / "header.txt", 2)


def test_the_header_field_is_the_value_fabio_reads(tmp_path):
    """cbf:Flux reads what fabio reads: its PilatusHeader's Flux of a PILATUS file (the
    header convention given), the Flux line of header_contents of a file fabio wrote from a
    plain header (no convention, pilatus_headers None)."""
    frame = np.arange(12, dtype=np.int32).reshape(3, 4)
    write_pilatus_cbf(tmp_path / "pilatus.cbf", frame, 2.3456e11)
    image = fabio.open(str(tmp_path / "pilatus.cbf"))
    assert image.pilatus_headers["Flux"] == 2.3456e11
    assert cbf_header_value(str(tmp_path / "pilatus.cbf"), "Flux") == 2.3456e11
    np.testing.assert_array_equal(image.data, frame)
    fabio.cbfimage.CbfImage(data=frame, header={"Flux": "1.5e12", "Exposure_time": "0.1"}).write(
        str(tmp_path / "fabio.cbf"))
    image = fabio.open(str(tmp_path / "fabio.cbf"))
    assert image.pilatus_headers is None
    assert "# Flux 1.5e12" in image.header["_array_data.header_contents"]
    assert cbf_header_value(str(tmp_path / "fabio.cbf"), "flux") == 1.5e12
    assert cbf_header_value(str(tmp_path / "fabio.cbf"), "Phi") is None


def test_ingest_stores_a_column_file_monitor(experiment, monkeypatch):
    rc, out = ingest(experiment, "f1", monkeypatch)
    assert rc == 0
    rec = read_scan_file(out)
    np.testing.assert_array_equal(rec.monitor, COLUMN)
    with h5py.File(out, "r") as f:
        assert f["f1/data/monitor"].attrs["source"] == "monitors/f1.txt"


def test_ingest_stores_the_headers_flux(experiment, monkeypatch):
    """Every frame's header read; a frame at 0 (a beam dump) is the transform's to judge
    (reduction.transform.bad_monitor_frames), as for an HDF5 monitor."""
    rc, out = ingest(experiment, "f2", monkeypatch)
    assert rc == 0
    np.testing.assert_array_equal(read_scan_file(out).monitor, FLUX)


def test_ingest_refuses_a_flux_of_0_in_every_frame(experiment, monkeypatch, capsys):
    """A PILATUS writes 'Flux 0' when the beamline gives it none: refused, naming the scan's
    first file, not taken for a beam dump in every frame."""
    rc, out = ingest(experiment, "f4", monkeypatch)
    assert rc != 0 and not out.exists()
    err = capsys.readouterr().err
    assert "raw/noflux/s1_f4_00001.cbf: Flux is 0 in the CBF header of every frame (6): the " \
           "detector was given no Flux (Pilatus writes 0 then): expected the monitor from a " \
           "column file (scans table, field 'monitor'), or none" in err, err


def test_a_frame_without_the_field_is_named(tmp_path):
    frames = np.zeros((3, 4, 5), np.int32)
    (tmp_path / "raw").mkdir()
    for i, frame in enumerate(frames):
        write_pilatus_cbf(tmp_path / f"raw/f_{i + 1}.cbf", frame, None if i == 1 else 1e11)
    with open_frames("raw/f_*.cbf", base_dir=tmp_path, expected_frames=3) as stack:
        with pytest.raises(RawDataError, match=r"raw/f_2\.cbf: frame 1: no 'Flux' line in its "
                                               r"CBF header: expected cbf:FIELD with a field "
                                               r"of the header \(Pixel_size, Exposure_time"):
            stack.read_monitor("cbf:Flux", tmp_path)


@pytest.mark.slow
def test_a_changed_monitor_file_ingests_its_entry_again(experiment, tmp_path):
    """The column file is an input of the entry's ingest: edited, the dry run plans that
    ingest again (and nothing while it is not)."""
    d = tmp_path / "experiment"
    shutil.copytree(experiment, d, ignore=shutil.ignore_patterns("results"))
    target = "results/s1/300K/f1/scan.nxs"
    r = run_snakemake(d, "--cores", "1", target)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    r = run_snakemake(d, "-n", "--cores", "1", target)
    assert "Nothing to be done" in r.stdout, r.stdout[-3000:]
    time.sleep(0.01)
    monitor = d / "monitors/f1.txt"
    monitor.write_text(monitor.read_text().replace("998.5", "997.5"))
    os.utime(monitor)
    r = run_snakemake(d, "-n", "--cores", "1", target)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    assert job_counts(r.stdout) == {"ingest_scan": 1, "total": 1}, r.stdout[-3000:]
    assert "Updated input files: monitors/f1.txt" in r.stdout, r.stdout[-3000:]


def test_an_hdf5_scan_reads_a_column_file_monitor(tmp_path):
    """On a row of HDF5 data, a monitor whose name ends in .txt/.dat/.csv/.tsv is a column
    file (hklflow import nxrefine writes NXRefine's so); any other name a dataset of the
    data file, as before."""
    from hklflow.raw.monitors import COLUMN_FILE, HDF5_DATASET, monitor_kind

    with h5py.File(tmp_path / "f1.h5", "w") as f:
        f["entry/data/data"] = np.zeros((FRAMES, 4, 5), np.uint16)
        f["entry/monitor"] = COLUMN[::-1]
    (tmp_path / "mon.dat").write_text("# frame value\n" + "".join(
        f"{i} {v}\n" for i, v in enumerate(COLUMN)))
    assert monitor_kind("f1.h5", "mon.dat") == COLUMN_FILE
    assert monitor_kind("f1.h5", "/entry/monitor") == HDF5_DATASET
    with open_frames("f1.h5", base_dir=tmp_path, expected_frames=FRAMES) as stack:
        np.testing.assert_array_equal(stack.read_monitor("mon.dat", tmp_path), COLUMN)
        np.testing.assert_array_equal(stack.read_monitor("/entry/monitor", tmp_path),
                                      COLUMN[::-1])
        with pytest.raises(RawDataError, match="gone.txt"):
            stack.read_monitor("gone.txt", tmp_path)
