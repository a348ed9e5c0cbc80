"""Step nxrefine_wrapper: NXRefine's wrapper file of the tiny experiment (reduced end to end
once per session, conftest.tiny_run), opened the way NeXpy opens it (nexusformat's
plottable_data) and by NXRefine itself, in the throw-away venv of bench/nxrefine_venv.py,
made here when missing: its NXRefine class must read hklflow's cell, wavelength, detector
and UB and map hklflow's peaks to hklflow's (h, k, l); its NXReduce (Qt offscreen) must find
the raw frames, pixel mask, monitor weights, frame times, orientation and volumes.
hklflow's geometry in NXRefine's parameters (hklflow.model.nxrefine), without NXRefine:
tests/model/test_nxrefine.py; a frame's exposure time (hklflow.raw.exposure):
tests/raw/test_exposure.py."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from hklflow.model.nxrefine import T_NX

from conftest import bench_venv_python, job_counts, run_snakemake, run_step, step_settings

SAMPLE = "tiny"


@pytest.fixture(scope="session")
def nx_python():
    """The python of NXRefine's throw-away venv (bench/nxrefine_venv.py), made on first use
    (about a minute, pip from PyPI) and kept for the next session; the cross-check skips,
    with pip's error as the reason, only where the venv cannot be made."""
    return bench_venv_python("nxrefine_venv", "NXRefine's venv")


# --------------------------------------------------------------------------------------
# The monitor weights, without NXRefine
# --------------------------------------------------------------------------------------
def test_monitor_weights_are_the_monitor_over_hklflows_norm():
    """NXRefine's monitor_weight (CCTW adds it to the weight of every pixel of its frame) is
    monitor / norm, the norm the transform scales frames to: so CCTW's v / n is hklflow's
    intensity.  Frames hklflow leaves out weigh 0, which CCTW skips."""
    from hklflow.steps.nxrefine_wrapper import monitor_weights

    monitor = np.array([100.0, 200.0, 0.0, 400.0, np.nan])
    weights, norm = monitor_weights(monitor, None, 5)
    assert norm == 200.0  # the median good monitor, as reduction.transform's default
    assert weights.tolist() == [0.5, 1.0, 0.0, 2.0, 0.0]
    weights, norm = monitor_weights(monitor, 50.0, 5)
    assert norm == 50.0 and weights.tolist() == [2.0, 4.0, 0.0, 8.0, 0.0]
    assert monitor_weights(None, None, 5) == (None, None)  # every frame weighs 1


@pytest.mark.slow
def test_raw_frames_are_linked_where_hdf5_can_link_them(tiny_run):
    """One HDF5 stack: its file; several: the scan file's virtual dataset; single-frame
    files (CBF, TIFF): nothing, and a note says why."""
    from hklflow.files.scan import read_scan_file
    from hklflow.steps.nxrefine_wrapper import _raw_link

    rec = read_scan_file(tiny_run[0] / "results" / SAMPLE / "300K" / "f1" / "scan.nxs")
    notes = {}
    assert _raw_link(rec, notes) == (rec.frames.files[0], rec.frames.dataset or "/entry/data/data")
    assert rec.frames.files[0].endswith("raw/tiny/300K/f1.h5")
    two = replace(rec, frames=replace(rec.frames, files=("a.h5", "b.h5"), frames_per_file=(30, 30),
                                      fingerprints=()))
    assert _raw_link(two, notes) == (rec.path, "/f1/data/data")
    assert notes == {}
    cbf = replace(rec, frames=replace(rec.frames, kind="files", files=("x_0001.cbf",) * 60,
                                      frames_per_file=(1,) * 60, fingerprints=()))
    assert _raw_link(cbf, notes) is None
    assert "x_0001.cbf" in notes["raw_frames_not_linked"]["f1"]


# --------------------------------------------------------------------------------------
# The wrapper of the tiny experiment
# --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def wrappers(tiny_run, tmp_path_factory):
    """The step run on the tiny experiment's results at both temperatures (the command line
    the rule gives it), written outside the shared experiment: {TLABEL: wrapper path}."""
    d, r, _, _ = tiny_run
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    out = tmp_path_factory.mktemp("nxrefine") / SAMPLE / "nxrefine"
    settings = step_settings(d, "nxrefine_wrapper", SAMPLE)
    kinds = json.loads(settings)["kinds"]
    paths = {}
    for t in ("100K", "300K"):
        b = f"results/{SAMPLE}/{t}"
        es = ("f1", "f2")
        p = run_step(d, "nxrefine_wrapper", "--settings", settings,
                     "--orientation", f"{b}/orientation.nxs",
                     "--scans", *[f"{b}/{e}/scan.nxs" for e in es],
                     "--peaks", *[f"{b}/{e}/peaks.nxs" for e in es],
                     "--masks", *[f"{b}/{e}/mask.nxs" for e in es],
                     "--entry-volumes", *[f"{b}/{e}/{k}.nxs" for e in es for k in kinds],
                     "--merged", *[f"{b}/{k}.nxs" for k in kinds],
                     "--symmetrized", *[f"{b}/{k}_symmetrized.nxs" for k in kinds],
                     "--out", out / f"{SAMPLE}_{t}.nxs")
        assert p.returncode == 0, p.stderr[-3000:]
        paths[t] = out / f"{SAMPLE}_{t}.nxs"
    return d, paths


@pytest.mark.slow
def test_wrapper_opens_in_nexpy_with_its_links_resolved(wrappers):
    import h5py
    from nexusformat.nexus import NXlinkgroup, nxload

    from hklflow.files.orientation import read_orientation_file

    d, paths = wrappers
    for t, path in paths.items():
        base = d / "results" / SAMPLE / t
        root = nxload(str(path))
        data = root.plottable_data
        assert data.nxpath == "/entry/transform"
        assert [a.nxname for a in data.nxaxes] == ["Ql", "Qk", "Qh"]
        with h5py.File(base / "transform.nxs", "r") as f:
            merged = f["entry/transform/data"][()]
            qh = f["entry/transform/Qh"][()]
        # the external link resolves (relative to the wrapper) to the merged volume itself
        assert np.array_equal(data.nxsignal.nxdata, merged, equal_nan=True)
        assert np.array_equal(data["Qh"].nxdata, qh)
        assert np.allclose(data.nxangles, [90.0, 90.0, 90.0])  # tetragonal
        for name in ("masked_transform", "symm_transform", "symm_masked_transform"):
            assert root["entry"][name].nxsignal.shape == merged.shape
        ori = read_orientation_file(base / "orientation.nxs")
        smp = root["entry/sample"]
        assert [smp[f"unitcell_{n}"].nxvalue for n in ("a", "b", "c", "alpha", "beta", "gamma")] \
            == pytest.approx(ori.cell)
        assert smp["laue_group"].nxvalue == "4/mmm" and smp["temperature"].nxvalue == float(t[:-1])
        for e in ("f1", "f2"):
            ent = root[e]
            assert isinstance(ent["sample"], NXlinkgroup)
            assert ent["sample/unitcell_c"].nxvalue == pytest.approx(ori.cell[2])
            # NXRefine's per-rotation transform: v (signal_sum) weighted by n (weight_sum)
            tr = ent["transform"]
            assert tr.nxweights.nxname == "weights"
            with h5py.File(base / e / "transform.nxs", "r") as f:
                assert np.array_equal(tr.nxsignal.nxdata, f["entry/transform/signal_sum"][()])
                assert np.array_equal(tr.nxweights.nxdata, f["entry/transform/weight_sum"][()])
            raw = ent["data/data"]
            with h5py.File(d / "raw" / SAMPLE / t / f"{e}.h5", "r") as f:
                assert raw.shape == f["entry/data/data"].shape
                assert np.array_equal(raw[7].nxdata, f["entry/data/data"][7])
            assert ent.plottable_data.nxpath == f"/{e}/data"


@pytest.mark.slow
def test_nxrefine_reads_hklflows_geometry_and_indexes_its_peaks_the_same(wrappers, nx_python):
    from hklflow.files.orientation import read_orientation_file
    from hklflow.files.peaks import read_peaks_file
    from hklflow.files.scan import read_scan_file

    d, paths = wrappers
    for t, path in paths.items():
        p = subprocess.run([str(nx_python), "-c", NX_DRIVER, str(path), "f1", "f2"],
                           capture_output=True, text=True, timeout=300)
        assert p.returncode == 0, p.stderr[-3000:]
        nx = json.loads(p.stdout)
        base = d / "results" / SAMPLE / t
        ori = read_orientation_file(base / "orientation.nxs")
        for e in ("f1", "f2"):
            got = nx[e]
            rec = read_scan_file(base / e / "scan.nxs")
            scan = rec.geometry(ori)
            det = scan.detector
            assert got["cell"] == pytest.approx(ori.cell, rel=1e-12)
            assert got["space_group"] == ori.crystal().hm and got["laue_group"] == "4/mmm"
            assert got["wavelength"] == pytest.approx(det.wavelength, rel=1e-12)
            # pyFAI's Fit2D conversion: sample to the beam's intercept (mm), where it hits
            assert got["distance"] == pytest.approx(det.fit2d()["directDist"], rel=1e-9)
            row, col = det.direct_beam_pixel()
            assert (got["xc"], got["yc"]) == pytest.approx((col, row), abs=1e-6)
            assert np.allclose(got["UBmat"], T_NX @ ori.UB, atol=1e-12)
            # the tiny goniometer's omega turns about L1 (NXRefine's y: its theta), chi about
            # the beam (its x: its chi); the orientation's corrections are added
            offsets = scan.offsets
            assert got["theta"] == pytest.approx(offsets.get("omega", 0.0), abs=1e-9)
            assert got["chi"] == pytest.approx(offsets.get("chi", 0.0), abs=1e-9)
            assert got["omega"] == pytest.approx(0.0, abs=1e-9)
            assert got["n_Qh"] > 0  # its transform grid, from the linked entry volume
            pk = read_peaks_file(base / e / "peaks.nxs").peaks
            ours = scan.hkl_at(pk["observed_px_y"], pk["observed_px_x"], pk["observed_frame"])
            theirs = np.array(got["hkl"])
            assert theirs.shape == ours.shape and len(ours) > 50
            # (measured: 5e-13; the brief asks 0.01)
            assert np.abs(theirs - ours).max() < 1e-6, np.abs(theirs - ours).max()
            # and most peaks are Bragg peaks: near integers in both
            assert np.mean(np.abs(ours - np.round(ours)).max(axis=1) < 0.1) > 0.9


# Runs in NXRefine's venv (nexusformat 2.0.3): what NXRefine(root[ENTRY]) reads
NX_DRIVER = r"""
import json, sys
import numpy as np
from nexusformat.nexus import nxload
from nxrefine.nxrefine import NXRefine

root = nxload(sys.argv[1])
out = {}
for name in sys.argv[2:]:
    r = NXRefine(root[name])
    out[name] = {
        "cell": [float(v) for v in r.lattice_parameters], "space_group": str(r.space_group),
        "laue_group": str(r.laue_group), "wavelength": float(r.wavelength),
        "distance": float(r.distance), "xc": float(r.xc), "yc": float(r.yc),
        "UBmat": np.asarray(r.UBmat).tolist(), "chi": float(r.chi), "omega": float(r.omega),
        "theta": float(r.theta), "n_Qh": len(r.Qh),
        "hkl": [[float(v) for v in r.get_hkl(x, y, z)] for x, y, z in zip(r.xp, r.yp, r.zp)]}
print(json.dumps(out))
"""


@pytest.mark.slow
def test_nxreduce_finds_the_data_mask_orientation_and_volumes(wrappers, nx_python, tmp_path):
    """NXRefine's NXReduce (Qt offscreen, NXRefine's venv) opens each wrapper as its own:
    sample, label and scan from the path; the raw frames through the scan directory (where
    NXRefine would write its transforms, not beside the raw data); hklflow's pixel mask
    (its maximum count is that of hklflow's unmasked pixels, not a hot pixel's), every frame
    (first 0, last n - 1), monitor weights and frame times; the orientation; the per-entry
    and merged volumes, its tasks done."""
    import h5py

    from hklflow.files.orientation import read_orientation_file

    d, paths = wrappers
    server = tmp_path / "nxserver"  # NXReduce reads its server settings from here
    server.mkdir()
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", NX_SERVER=str(server))
    for t, path in paths.items():
        p = subprocess.run([str(nx_python), "-c", NXREDUCE_DRIVER, str(path), "f1", "f2"],
                           capture_output=True, text=True, timeout=300, env=env)
        assert p.returncode == 0, p.stderr[-3000:]
        nx = json.loads(p.stdout.splitlines()[-1])
        base = d / "results" / SAMPLE / t
        scan_dir = (path.parent / t).resolve()
        assert (nx["sample"], nx["label"], nx["scan"]) == (SAMPLE, "nxrefine", t)
        assert nx["directory"] == str(scan_dir)
        assert nx["entries"] == ["f1", "f2"] and nx["combined"] == [True, True]
        assert nx["merged_shape"] == list(h5py.File(base / "transform.nxs", "r")[
            "entry/transform/data"].shape)
        assert nx["laue_group"] == "4/mmm"
        ori = read_orientation_file(base / "orientation.nxs")
        for e in ("f1", "f2"):
            got = nx[e]
            raw_file = Path(got["raw_file"])  # in the scan directory, not raw/
            assert (raw_file.parent.resolve(), raw_file.name) == (scan_dir, f"{e}.h5")
            assert got["shape"] == [60, 619, 487] and got["raw_data_exists"]
            with h5py.File(d / "raw" / SAMPLE / t / f"{e}.h5", "r") as f:
                assert got["frame_7_sum"] == int(f["entry/data/data"][7].sum())
            with h5py.File(base / e / "mask.nxs", "r") as f:
                ours = f[f"{e}/instrument/detector/pixel_mask"][()] != 0
            assert got["pixel_mask_sum"] == int(ours.sum()) and got["pixel_mask_same"]
            assert (got["first"], got["last"]) == (0, 59)
            # its maximum count: hklflow's unmasked pixels in its annulus, not a hot pixel
            assert got["maximum"] == got["maximum_of_unmasked"] < got["maximum_of_all"]
            assert got["monitor_weight"] == [1.0] * 60  # the tiny scans have no monitor
            assert got["frame_time"] == 0.1 and got["frame_times"][-1] == pytest.approx(5.9)
            cctw = got["cctw_command"]
            assert f"{e}/instrument/detector/pixel_mask" in cctw
            assert f"{e}/data/monitor_weight" in cctw
            output = Path(cctw.split("--output ")[1].split("\\#")[0])
            assert (output.parent.resolve(), output.name) == (scan_dir, f"{e}_transform.nxs")
            assert got["oriented"] and np.allclose(got["UBmat"], T_NX @ ori.UB, atol=1e-12)
            with h5py.File(base / e / "transform.nxs", "r") as f:
                qh = f["entry/transform/Qh"][()]
            assert got["Qh"] == pytest.approx([qh[0], qh[1] - qh[0], qh[-1]])
            assert got["complete"] == {"nxlink": True, "nxfind": True, "nxrefine": True,
                                       "nxtransform": True, "nxmasked_transform": True,
                                       "nxmax": False}
        assert (path.parent.parent.parent / "tasks").is_dir()  # NXReduce's, beside SAMPLE/


# Runs in NXRefine's venv with QT_QPA_PLATFORM=offscreen: what NXReduce finds in a wrapper
NXREDUCE_DRIVER = r"""
import json, sys
import numpy as np
from nexusformat.nexus import nxload
from nxrefine.nxreduce import NXMultiReduce, NXReduce
from nxrefine.nxrefine import NXRefine

root = nxload(sys.argv[1])
multi = NXMultiReduce(directory=NXReduce(root[sys.argv[2]]).directory)
out = {"entries": multi.entries, "laue_group": multi.refine.laue_group,
       "combined": [multi.complete("nxcombine"), multi.complete("nxmasked_combine")],
       "merged_shape": list(multi.entry["transform"].nxsignal.shape)}
for name in sys.argv[2:]:
    r = NXReduce(root[name])
    out.update(sample=r.sample, label=r.label, scan=r.scan, directory=str(r.directory))
    frames = r.field.nxdata
    result = r.find_maximum()  # reads the frames first..last with its pixel mask
    annulus = ~r.transmission_coordinates()
    r.get_transform_grid()
    refine = NXRefine(r.entry)
    out[name] = {
        "raw_file": str(r.raw_file), "raw_data_exists": bool(r.raw_data_exists()),
        "shape": list(r.shape), "frame_7_sum": int(frames[7].sum()),
        "pixel_mask_sum": int(r.entry["instrument/detector/pixel_mask"].nxvalue.sum()),
        "pixel_mask_same": bool(np.array_equal(
            r.entry["instrument/detector/pixel_mask"].nxvalue != 0, refine.pixel_mask != 0)),
        "first": r.first, "last": r.last, "maximum": float(result["maximum"]),
        "maximum_of_unmasked": float(frames[:, (r.pixel_mask == 0) & annulus].max()),
        "maximum_of_all": float(frames[:, annulus].max()),
        "monitor_weight": r.data["monitor_weight"].nxvalue.tolist(),
        "frame_time": float(refine.frame_time),
        "frame_times": r.data["frame_time"].nxvalue.tolist(),
        "cctw_command": refine.cctw_command(), "oriented": bool(r.oriented),
        "UBmat": np.asarray(refine.UBmat).tolist(), "Qh": [float(v) for v in r.Qh],
        "complete": {task: bool(r.complete(task)) for task in (
            "nxlink", "nxfind", "nxrefine", "nxtransform", "nxmasked_transform", "nxmax")}}
print(json.dumps(out))
"""


@pytest.mark.slow
def test_the_rule_makes_the_wrapper_when_the_config_asks(tiny_run, tmp_path):
    """output.nxrefine_wrapper: true adds one wrapper per temperature to the targets; on a
    reduced experiment only those jobs run, and NXReduce's path rules find sample, label and
    scan in their paths."""
    import h5py
    from nexusformat.nexus import nxload

    from hklflow.planning.config import load_experiment

    d, r, _, _ = tiny_run
    assert r.returncode == 0
    exp = tmp_path / "experiment"
    shutil.copytree(d, exp, symlinks=True)
    cfg = exp / "config" / "config.yaml"
    cfg.write_text(cfg.read_text() + "\noutput: {nxrefine_wrapper: true}\n")
    p = run_snakemake(exp, "--cores", "2")
    assert p.returncode == 0, (p.stdout + p.stderr)[-3000:]
    # (the experiment's page: its inputs are every target, the wrappers now among them)
    assert job_counts(p.stdout + p.stderr) == {"nxrefine_wrapper": 2, "experiment_page": 1,
                                               "all": 1, "total": 4}
    pdf_on = load_experiment(cfg, base_dir=exp).reduction["pdf"]["enabled"]
    for t in ("100K", "300K"):
        w = exp / "results" / SAMPLE / "nxrefine" / f"{SAMPLE}_{t}.nxs"
        sample, label, scan = w.parent.parent.name, w.parent.name, w.stem.replace(SAMPLE + "_", "")
        assert (sample, label, scan) == (SAMPLE, "nxrefine", t)
        # NXReduce's scan directory: the raw stacks, as symbolic links
        for e in ("f1", "f2"):
            raw = w.parent / scan / f"{e}.h5"
            assert raw.is_symlink() and raw.resolve() == (exp / "raw" / SAMPLE / t / f"{e}.h5")
        assert (exp / "logs" / "nxrefine_wrapper" / SAMPLE / f"{t}.log").is_file()
        root = nxload(str(w))
        assert root.plottable_data.nxpath == "/entry/transform"
        assert sorted(k for k in root if k.startswith("f")) == ["f1", "f2"]
        # the PDFs reduction.pdf makes, under NXRefine's names: total_pdf of the transform,
        # masked_pdf the DeltaPDF of the masked transform (pdf.nxs by default)
        links = {"total_pdf": "total_pdf.nxs", "masked_pdf": "pdf.nxs"} if pdf_on else {}
        assert {k for k in root["entry"] if k.endswith("pdf")} == set(links)
        for name, f in links.items():
            with h5py.File(exp / "results" / SAMPLE / t / f, "r") as h:
                assert np.array_equal(root["entry"][name].nxsignal.nxdata, h["entry/pdf/pdf"][()])
