"""`hklflow import nxrefine` (hklflow.commands.import_nxrefine): NXRefine's layouts found,
the parent scan chosen, what cannot be read named.  Scan files written here with h5py in
NXRefine's field names; the proof on files NXRefine's own code writes (its venv, with a
simulated experiment's truth): the slow tests at the end (bench/nxrefine_experiment.py)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from hklflow.base.errors import ConfigError
from hklflow.commands.import_nxrefine import import_experiment, label_folders
from hklflow.commands.importing import main
from hklflow.model.geometry import DetectorGeometry, Goniometer, ScanAngles, ScanGeometry
from hklflow.model.nxrefine import entry_parameters, lab_frame

CELL = [5.12, 5.12, 7.43, 90.0, 90.0, 90.0]


def _params(d_poni1=0.0, chi=0.0, wavelength=0.41328):
    """NXRefine's parameters of an entry (its default frame '-y +z -x')."""
    T, _ = lab_frame("-y +z -x")
    det = DetectorGeometry("Pilatus300k", 0.12, 0.0517 + d_poni1, 0.0431, 0.003, -0.002, 0.01,
                           wavelength=wavelength)
    gon = Goniometer((0.0, 1.0, 0.0), 1, (("omega", (1.0, 0, 0)), ("chi", (0, 0, 1.0))))
    scan = ScanGeometry(det, gon, ScanAngles(-10.0, 0.5, 2), {"chi": chi}, np.diag([0.2, 0.2, 0.13]))
    return entry_parameters(scan, CELL, T)


def _raw(path: Path, nframes=2):
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = np.zeros((nframes, 619, 487), dtype="uint16")
    frames[:, 300, :] = sum(map(ord, str(path))) % 1000 + 1  # each file its own data
    with h5py.File(path, "w") as f:
        f.create_dataset("entry/data/data", data=frames, chunks=(1, 619, 487), compression="gzip")


def write_scan(folder: Path, sample: str, scan: str, entries: dict, temperature=None,
               raw=True, parent_name=None, monitors: dict | None = None,
               nframes: int = 2, masks: dict | None = None) -> Path:
    """A scan file as NXRefine writes one (write_parameters' fields), its raw stacks in the
    scan folder beside it (linked relative to the scan file, as NXReduce.link_data)."""
    path = folder / f"{sample}_{scan}.nxs"
    folder.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        smp = f.create_group("entry/sample")
        for k, v in zip(("a", "b", "c", "alpha", "beta", "gamma"), CELL):
            smp[f"unitcell_{k}"] = v
        smp["space_group"] = "I 41/a m d"
        if temperature is not None:
            smp["temperature"] = temperature
            smp["temperature"].attrs["units"] = "K"
        if parent_name:
            f["entry/nxscans/parent"] = parent_name
        for name, p in entries.items():
            e = f.create_group(name)
            if raw:
                _raw(folder / scan / f"{name}.h5", nframes)
            e["data/data"] = h5py.ExternalLink(f"{scan}/{name}.h5", "/entry/data/data")
            e["data/frame_number"] = np.arange(nframes)
            e["instrument/monochromator/wavelength"] = p["wavelength"]
            d = e.create_group("instrument/detector")
            for k in ("distance", "yaw", "pitch", "roll", "pixel_size", "detector_orientation"):
                d[k] = p[k]
            d["beam_center_x"], d["beam_center_y"] = p["xc"], p["yc"]
            d["orientation_matrix"] = p["orientation_matrix"]
            d["description"] = "Pilatus 300k"
            if masks and name in masks:
                d["pixel_mask"] = masks[name].astype(np.int8)
            g = e.create_group("instrument/goniometer")
            g["phi"] = p["phi"]
            g["phi"].attrs["step"] = p["phi_step"]
            for k in ("chi", "omega", "theta"):
                g[k] = p[k]
            if monitors and name in monitors:  # NXRefine's (fN/monitor) or 0.1.1's (monitor1)
                group, values = monitors[name]
                m = e.create_group(group)
                m["MCS1"] = values
                m.attrs["signal"] = "MCS1"
    return path


def test_the_current_layout_its_parent_and_what_it_lists(tmp_path):
    """SAMPLE_scans.nxs: the parent scan is the one holding its U; a scan it lists without
    a file is named; temperatures from the sample's field and from a scan's name (m5K is
    -5 K, 1p5K 1.5 K, NXParent.get_scan_directory)."""
    folder = tmp_path / "exp" / "lsco" / "xtal"
    p1, p2 = _params(), _params(d_poni1=0.0017, chi=1.5)
    write_scan(folder, "lsco", "300K", {"f1": p1, "f2": p2}, temperature=300.0,
               parent_name="lsco_scans.nxs")
    write_scan(folder, "lsco", "1p5K", {"f1": p1, "f2": p2}, parent_name="lsco_scans.nxs")
    with h5py.File(folder / "lsco_scans.nxs", "w") as f:
        f["entry/nxscans/scans"] = [b"lsco_1p5K", b"lsco_300K", b"lsco_50K"]
        f["entry/nxscans/selected"] = [True, True, False]
        for k in ("f1", "f2"):
            f[f"{k}/instrument/detector/orientation_matrix"] = p1["orientation_matrix"]
        for q in ("Qh", "Qk", "Ql"):
            f[f"entry/nxscans/transform/{q}"] = np.linspace(-2, 2, 41)
    (lf,) = label_folders(tmp_path / "exp")
    assert lf.layout.startswith("scans file") and lf.listed[2] == "lsco_50K"
    imp = import_experiment(tmp_path / "exp", tmp_path / "dest")
    assert imp.config["samples"]["lsco"]["parent"]["temperature"] == 1.5  # the first holding U
    assert sorted({r["temperature"] for r in imp.rows}) == ["1.5", "300"]
    assert any("lists lsco_50K: no file lsco_50K.nxs" in line for line in imp.report)
    assert imp.config["reduction"]["transform"]["grid"]["h"] == [-2.0, 2.0, 0.1]
    f2 = next(r for r in imp.rows if r["entry"] == "f2")
    assert float(f2["det_dponi1"]) == pytest.approx(0.0017, abs=1e-12)
    assert float(f2["det_ddist"]) == pytest.approx(0.0, abs=1e-12)
    assert imp.config["instrument"]["detector"]["name"] == "Pilatus300k"  # its description
    assert imp.reference.rot1 == pytest.approx(0.003, abs=1e-12)


def test_the_older_layouts(tmp_path):
    """SAMPLE_parent.nxs, a link to the parent's scan file (up to 2025), and SAMPLE.nxs
    (0.1.1, no U): the parent scan is the link's target, else the first scan."""
    folder = tmp_path / "exp" / "s" / "a"
    write_scan(folder, "s", "100K", {"f1": _params()}, temperature=100.0)
    write_scan(folder, "s", "200K", {"f1": _params()}, temperature=200.0)
    os.symlink("s_200K.nxs", folder / "s_parent.nxs")
    (lf,) = label_folders(tmp_path / "exp")
    assert lf.layout.startswith("parent link") and len(lf.scans) == 2
    assert import_experiment(tmp_path / "exp", tmp_path / "d")
    imp = import_experiment(tmp_path / "exp", tmp_path / "d")
    assert imp.config["samples"]["s"]["parent"]["temperature"] == 200.0
    (folder / "s_parent.nxs").unlink()
    with h5py.File(folder / "s.nxs", "w") as f:
        f["entry/nxreduce/first_frame"] = 0
    (lf,) = label_folders(tmp_path / "exp")
    assert lf.layout.startswith("parent file (NXRefine 0.1.1)")
    imp = import_experiment(tmp_path / "exp", tmp_path / "d")
    assert imp.config["samples"]["s"]["parent"]["temperature"] == 100.0
    assert any("the first scan" in line for line in imp.report)


def test_what_cannot_be_read_is_named(tmp_path):
    """A missing raw file is named (the row kept: hklflow run sets it aside until it
    exists); a wavelength that differs between rotations, a scan with no temperature and a
    detector pyFAI knows two of are refused, naming file and field."""
    folder = tmp_path / "exp" / "s" / "a"
    write_scan(folder, "s", "300K", {"f1": _params(), "f2": _params()}, temperature=300.0)
    (folder / "300K" / "f2.h5").unlink()
    imp = import_experiment(tmp_path / "exp", tmp_path / "d")
    assert len(imp.rows) == 2 and "s_300K.nxs f2: raw file" in imp.missing_raw[0]
    write_scan(folder, "s", "300K", {"f1": _params(), "f2": _params(wavelength=0.5)},
               temperature=300.0)
    with pytest.raises(ConfigError, match=r"s_300K.nxs f2: wavelength 0.5 A, the reference's "
                                          r"0.41328 A"):
        import_experiment(tmp_path / "exp", tmp_path / "d")
    write_scan(folder, "s", "300K", {"f1": _params()}, temperature=None)
    with pytest.raises(ConfigError, match="no /entry/sample/temperature and the scan's name "
                                          "'300K_warm'|s_300K.nxs"):
        (folder / "s_300K.nxs").rename(folder / "s_300K_warm.nxs")
        import_experiment(tmp_path / "exp", tmp_path / "d")
    (folder / "s_300K_warm.nxs").rename(folder / "s_300K.nxs")
    with h5py.File(folder / "s_300K.nxs", "a") as f:
        del f["f1/instrument/detector/description"]
    with pytest.raises(ConfigError, match="pyFAI detectors that fit: Pilatus300k, "
                                          "PilatusCdTe300k; give --detector NAME"):
        import_experiment(tmp_path / "exp", tmp_path / "d")
    assert import_experiment(tmp_path / "exp", tmp_path / "d", detector="PilatusCdTe300k")


def test_the_command_writes_an_experiment_hklflow_plans(tmp_path):
    """`hklflow import nxrefine SOURCE DEST`: the config (every key commented, where each
    value came from), the scans table (a row's scan file), the PONI; never over an existing
    config without --force; and Snakemake plans the experiment (a dry run)."""
    folder = tmp_path / "exp" / "s" / "a"
    write_scan(folder, "s", "300K", {"f1": _params(), "f2": _params(d_poni1=0.001)},
               temperature=300.0, monitors={"f1": ("monitor", [9e4, 1e5]),
                                            "f2": ("monitor1", [8e4, 7e4])})
    with h5py.File(folder / "s_300K.nxs", "a") as f:
        f["entry/nxreduce/norm"] = 5e4
    dest = tmp_path / "hkl"
    assert main(["nxrefine", str(tmp_path / "exp"), str(dest)]) == 0
    config = (dest / "config" / "config.yaml").read_text()
    assert "hklflow import nxrefine" in config and "/f1/instrument/monochromator/wavelength" in config
    table = (dest / "config" / "scans.tsv").read_text()
    assert "# s at 300K: from" in table and str(folder / "s_300K.nxs") in table
    assert "../exp/s/a/300K/f1.h5" in table  # relative to DEST: a campaign moved whole works
    assert (dest / "calibration" / "nxrefine.poni").is_file()
    # the monitors as column files, NXRefine's norm the reference the frames are scaled to
    from hklflow.raw.monitors import read_column_file

    assert read_column_file(dest / "monitors" / "s_300K_f2.txt", 2).tolist() == [8e4, 7e4]
    assert "monitors/s_300K_f1.txt" in table
    assert "monitor_reference: 50000.0  # NXRefine's norm, s_300K.nxs /entry/nxreduce/norm" in config
    assert main(["nxrefine", str(tmp_path / "exp"), str(dest)]) == 1  # never over a config
    r = subprocess.run([sys.executable, "-m", "hklflow", "run", str(dest), "--", "-n"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    assert "ingest_scan" in r.stdout + r.stderr


def test_pixel_masks_become_the_experiments_mask(tmp_path):
    """NXRefine's pixel masks (nonzero = not used, as hklflow's mask_file): one for all
    rotations is referenced in the scan file itself; masks that differ give their union, in
    a file of the new experiment, and the report says so; hklflow plans with it."""
    folder = tmp_path / "exp" / "s" / "a"
    one = np.zeros((619, 487), bool)
    one[10:20, 30:40] = True
    write_scan(folder, "s", "300K", {"f1": _params(), "f2": _params(d_poni1=0.001)},
               temperature=300.0, masks={"f1": one, "f2": one})
    imp = import_experiment(tmp_path / "exp", tmp_path / "d")
    det = imp.config["instrument"]["detector"]
    assert (det["mask_file"], det["mask_dataset"]) == ("../exp/s/a/s_300K.nxs",
                                                       "/f1/instrument/detector/pixel_mask")
    assert imp.mask is None
    other = one.copy()
    other[600:, :] = True
    write_scan(folder, "s", "300K", {"f1": _params(), "f2": _params(d_poni1=0.001)},
               temperature=300.0, masks={"f1": one, "f2": other})
    dest = tmp_path / "hkl"
    assert main(["nxrefine", str(tmp_path / "exp"), str(dest)]) == 0
    with h5py.File(dest / "calibration" / "nxrefine_mask.h5", "r") as f:
        assert np.array_equal(f["entry/mask"][()] != 0, one | other)
    r = subprocess.run([sys.executable, "-m", "hklflow", "run", str(dest), "--", "-n"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]


def test_a_detector_its_own_calibration_disagrees_with_is_named(tmp_path):
    """NXRefine's powder calibration (calibration/refinement/parameters, pyFAI's) beside its
    detector fields: the same placement says nothing; NXRefine's own copy (yaw/pitch/roll =
    degrees(rot1..3), which its formula reads as other rotations) is named, in pixels."""
    import math

    folder = tmp_path / "exp" / "s" / "a"
    write_scan(folder, "s", "300K", {"f1": _params()}, temperature=300.0)
    imp = import_experiment(tmp_path / "exp", tmp_path / "d")
    ref = imp.reference
    with h5py.File(folder / "s_300K.nxs", "a") as f:
        par = f.create_group("f1/instrument/calibration/refinement/parameters")
        for k, v in (("Distance", ref.dist), ("Poni1", ref.poni1), ("Poni2", ref.poni2),
                     ("Rot1", ref.rot1), ("Rot2", ref.rot2), ("Rot3", ref.rot3)):
            par[k] = v
        par["Detector"] = "Pilatus300k"
    assert not any("pyFAI calibration" in line
                   for line in import_experiment(tmp_path / "exp", tmp_path / "d").report)
    with h5py.File(folder / "s_300K.nxs", "a") as f:  # as NXRefine's calibration writes them
        for k, rot in (("yaw", ref.rot1), ("pitch", ref.rot2), ("roll", ref.rot3)):
            f[f"f1/instrument/detector/{k}"][()] = math.degrees(rot)
    (line,) = [line for line in import_experiment(tmp_path / "exp", tmp_path / "d").report
               if "pyFAI calibration" in line]
    assert line.startswith("s_300K.nxs f1: its detector fields place pixels up to ")


def test_monitors_with_their_transmissions_and_6idd_logs(tmp_path):
    """The photons on the sample, as NXRefine weighs frames: a scan file's monitor times its
    attenuator and filter transmissions; a scan file without one takes 6-ID-D's logs beside
    the raw frames (fN_meta.txt's column of NXRefine's monitor setting, its first and last
    frames' partial counts replaced as NXRefine does, times fN_head.txt's
    Calculated_filter_transmission)."""
    folder = tmp_path / "exp" / "s" / "a"
    write_scan(folder, "s", "300K", {"f1": _params(), "f2": _params(d_poni1=0.001)},
               temperature=300.0, monitors={"f1": ("monitor", [9e4, 1e5, 1.1e5, 1.2e5])},
               nframes=4)
    with h5py.File(folder / "s_300K.nxs", "a") as f:
        f["f1/instrument/attenuator/attenuator_transmission"] = 0.25
        filt = f.create_group("f1/instrument/filter/transmission")
        filt["data"] = [1.0, 1.0, 0.0, 1.0]  # the shutter closed on frame 2
        filt.attrs["signal"] = "data"
    (folder / "300K" / "f2_head.txt").write_text(
        "Storage_Ring_Current, 102.1\nCalculated_filter_transmission, 0.5\nMode, top-up\n")
    (folder / "300K" / "f2_meta.txt").write_text(
        "MCS1,MCS2,Shutter\n10,5,0\n200,6,0\n210,7,0\n20,8,0\n")
    imp = import_experiment(tmp_path / "exp", tmp_path / "d")
    f1 = imp.monitors["monitors/s_300K_f1.txt"][0]
    assert f1.tolist() == [2.25e4, 2.5e4, 0.0, 3e4]
    assert imp.config["reduction"]["transform"]["bad_monitor_frames"] == "leave_out"
    f2, where = imp.monitors["monitors/s_300K_f2.txt"]
    assert f2.tolist() == [100.0, 100.0, 105.0, 105.0]
    assert "f2_meta.txt column MCS1 (6-ID-D) x Calculated_filter_transmission 0.5" in where
    with h5py.File(folder / "s_300K.nxs", "a") as f:
        f["entry/nxreduce/monitor"] = "MCS2"  # NXRefine's monitor setting
    f2 = import_experiment(tmp_path / "exp", tmp_path / "d").monitors["monitors/s_300K_f2.txt"][0]
    assert f2.tolist() == [3.0, 3.0, 3.5, 3.5]


# --------------------------------------------------------------------------------------
# The proof: experiments NXRefine's own code wrote (bench/nxrefine_experiment.py)
# --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def nx_python():
    from conftest import bench_venv_python

    return bench_venv_python("nxrefine_venv", "NXRefine's venv")


@pytest.fixture(scope="module")
def three_by_three(tmp_path_factory):
    """The tiny simulation at 3 temperatures with 3 rotations each (the third moved along
    the beam and across, its goniometer turned otherwise), 20 frames a scan."""
    from dataclasses import replace

    from hklflow.simulation.experiment import EntryModel, preset, simulate_experiment

    tiny = preset("tiny")
    spec = replace(tiny, samples=(replace(tiny.samples[0], temperatures=(300.0, 200.0, 100.0)),),
                   entries=(*tiny.entries, EntryModel("f3", det_shift=(0.004, -0.0012, 0.0015),
                                                      offsets={"omega": 2.0, "chi": -3.0})),
                   nframes=20)
    out = tmp_path_factory.mktemp("tiny_3x3")
    simulate_experiment(spec, out)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["scans", "link", "v011"])
def test_an_experiment_nxrefine_wrote_is_imported_exactly(three_by_three, nx_python, tmp_path,
                                                          layout, capsys):
    """A simulation's truth (3 temperatures x 3 rotations) written by NXRefine 0.1.1
    (write_parameters; its default detector orientation, the parents of each layout as its
    source writes them), imported: every pixel of every frame has the truth's (h, k, l) with
    the imported geometry, the truth's reflections lie where NXRefine's get_hkl puts them
    (0.01 px, 0.01 deg asked; measured about 1e-10 px), and every field NXRefine reads
    comes back from the import; the table is printed."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
    try:
        import nxrefine_experiment as bench
    finally:
        sys.path.pop(0)
    nx_scans = {k: Path(v) for k, v in
                bench.build(three_by_three, tmp_path / "nx", layout, nx_python).items()}
    dest = tmp_path / "hkl"
    assert main(["nxrefine", str(tmp_path / "nx"), str(dest)]) == 0
    rows = bench.compare(three_by_three, dest, nx_scans, nx_python, get_xyz=False)
    with capsys.disabled():
        for r in rows:
            print(f"\n{layout} {r['entry']}: (h, k, l) {r['max_dhkl']:.1e}, {r['reflections']} "
                  f"reflections {r['max_dpx']:.1e} px {r['max_ddeg']:.1e} deg", end="")
            print(f"\n  fields: " + ", ".join(f"{k} {v:.0e}" for k, v in r["fields"].items()
                                          if not isinstance(v, bool)), end="")
    assert len(rows) == 9
    for r in rows:
        assert r["max_dhkl"] < 1e-9 and r["reflections"] >= 20
        assert r["max_dpx"] < 0.01 and r["max_ddeg"] < 0.01
        # every field NXRefine reads, taken back from the import (mm, px, deg, A, U, cell)
        assert r["fields"].pop("detector_orientation") is True
        assert max(r["fields"].values()) < 1e-9, r["fields"]
    import yaml

    grid = yaml.safe_load((dest / "config" / "config.yaml").read_text())["reduction"]["transform"]
    assert grid["grid"] == {a: [-3.0, 3.0, 0.1] for a in "hkl"}  # NXRefine's, as the builder's


def test_folder_names_become_hklflow_names():
    """NXRefine's sample folders may hold what hklflow's names cannot (spaces, =): replaced
    by _, and said."""
    from hklflow.commands.import_nxrefine import _name

    report = []
    assert _name("Cr3Te4", report) == "Cr3Te4" and report == []
    assert _name("LSCO x=0.12", report) == "LSCO_x_0.12"
    assert report == ["sample 'LSCO x=0.12' is named 'LSCO_x_0.12' (hklflow's names: letters, "
                      "digits, _, . and -)"]
