#!/usr/bin/env python
"""hklflow's orientation refinement side by side with NXRefine's (CHESS QM2), and NXRefine's
B matrix next to the Busing-Levy one.

    python bench/nxrefine_compare.py [--venv bench/.nxrefine-venv] [--workdir DIR]
                                     [--presets tiny_hexagonal tiny_monoclinic]
                                     [--repeats 3] [--reinstall] [--nx-diagnostics]
                                     [--nx-detector-run] [--json FILE]

NXRefine is NOT a dependency of hklflow.  This script installs it into a throw-away virtual
environment (--venv, default bench/.nxrefine-venv; keep it out of git) and runs it there, in a
subprocess: inputs and outputs go through JSON files, and this same file is the driver
(`<venv>/bin/python bench/nxrefine_compare.py _driver IN.json OUT.json`; the driver imports
only numpy, json and nxrefine).

Installation: bench/nxrefine_venv.py (nxrefine 0.1.1 from PyPI, --no-deps, with
nexusformat 2.0.3 and the few packages its modules import).

What is compared, per simulated experiment (`preset("tiny_hexagonal")`, P 6_3/m m c, and
`preset("tiny_monoclinic")`, C 1 2/c 1; parent temperature, entry f1 only: NXRefine refines
one entry, i.e. one rotation scan, at a time):

* peaks: hklflow's own peak search (spotfinding.search) on the rendered frames, the
  strong ones (I > 5 sigma), the same list for both programs;
* start (the same information for both): the config's approximate cell (true x 1.01), the
  calibration geometry with rot3 = 0 (as index_parent gets it; the scan's true geometry also
  differs from the calibration by the simulated drift: +0.1 mm distance, 0.2 px), and the
  true U rotated by 0.2 deg;
* hklflow: refinement.refine from that start (cell, U, detector), and
  orientation.index_parent from scratch (its indexer does not use the start U);
* NXRefine (its NXRefine class, nxrefine/nxrefine.py), fed the same geometry expressed in
  its own parameters (detector_orientation, yaw/pitch/roll, distance, beam centre xc/yc,
  pixel size, phi, phi_step; the table prints the largest difference between its Gvec and
  hklflow's sample-frame Q over all peaks) and the same peak list (x = column, y = row,
  z = frame, intensity), with its default hkl_tolerance = 0.05 1/A and polar_max covering
  all peaks.  Runs:
  - "auto/2refl": the orientation from two reflections as its GUI makes it
    (NXRefine.get_UBmat, Busing & Levy eqs 23-27, with its B), from the two strongest
    suitable peaks and their true hkl; then what its automatic workflow runs
    (nxreduce.NXReduce.refine_parameters): refine_hkls(lattice, chi, omega, theta),
    refine_hkls(chi, omega, theta), refine_orientation_matrix();
  - "auto/UB": the start UB handed over as its GUI does after auto-indexing
    (plugins/refine/refine_lattice.py select_cell: Umat = UB * Bimat, so that
    UBmat = Umat * Bmat = UB); then the same automatic sequence;
  - "auto/UB/true-geom": as auto/UB, but given the scan's true detector geometry (rot3
    included): what its lattice/orientation refinement does when the detector is right;
  - with --nx-diagnostics: "exact peaks, U true" and "exact peaks, U 0.2deg": 400 of the
    scan's reflections at their exact positions (no noise), true geometry, start UB with the
    true U or the 0.2 deg-off one (separates the B matrix from the rest of the workflow);
  - with --nx-detector-run: "det+auto/UB": refine_hkls(lattice, distance, xc, yc, yaw,
    pitch, roll) first, then the automatic sequence (slow: 3-5 minutes per case).

Errors versus the truth (the scan's true geometry and cell): largest relative cell-length and
cell-angle errors of the cell each program reports; for NXRefine also of the cell implied by
its final UB matrix (metric UB^T UB), which refine_orientation_matrix() fits as 9 free
elements (Umat is then no rotation: its largest |U U^T - 1| is printed); orientation
(deg) = nearest rotation of UB B_true^-1 at scan angle 0 (NXRefine: Gmat(0) UBmat, its
goniometer angles included) against the true U, over the Laue group; map = rms distance
(1/A) between the HKL each final model assigns to the true positions (column, row, frame) of
the scan's reflections and the true integer HKL: the error that goes into the reciprocal-
space volumes; dist rel, beam px, rot3 mrad: detector against the true scan geometry.

The B matrix: NXRefine's Bmat (from the real NXRefine object) next to hklflow's Busing-Levy
UnitCell.B for the true cells, d-spacings and interplanar angles it implies, and a
noise-free least-squares test of its cell parametrisation (the cell that fits exact Q best
when Umat is fixed as in the UB hand-over, and when Umat is a rotation).

Run time: about 6 minutes (2-3 minutes of NXRefine per case; --nx-diagnostics adds about
1 minute per case); the venv is created on the first run (about 1 minute).

The machine is shared and noisy: hklflow timings are the best of --repeats runs; NXRefine
runs once per case (seconds per run printed, and per stage).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
HKL_TOLERANCE_NX = 0.05  # NXRefine's default (nxsettings.py), 1/A
B_REFLECTIONS = {
    "P 63/m m c": [(1, 0, 0), (0, 1, 0), (1, -1, 0), (1, 1, 0), (0, 0, 2), (1, 0, 1), (1, 1, 2),
                   (2, 0, 3)],
    "C 1 2/c 1": [(2, 0, 0), (0, 2, 0), (1, 1, 0), (0, 0, 2), (2, 0, 2), (-2, 0, 2), (1, 1, 1),
                  (-1, 1, 1)],
}
B_PAIRS = {
    "P 63/m m c": [((1, 0, 0), (0, 1, 0)), ((1, 0, 0), (1, 1, 0)), ((1, 0, 0), (1, 0, 1)),
                   ((1, 1, 0), (1, 1, 2))],
    "C 1 2/c 1": [((2, 0, 0), (0, 0, 2)), ((2, 0, 0), (1, 1, 0)), ((2, 0, 2), (-2, 0, 2)),
                  ((1, 1, 1), (-1, 1, 1))],
}


# ======================================================================================
# Driver: runs under the throw-away venv's python, imports nxrefine
# ======================================================================================
def driver(inp: str, outp: str) -> None:
    import contextlib
    import io

    import nxrefine
    from nxrefine.nxrefine import NXRefine

    spec = json.loads(Path(inp).read_text())
    out = {"versions": {"nxrefine": nxrefine.__version__, "python": sys.version.split()[0],
                        "numpy": np.__version__}, "b": {}, "runs": []}
    for mod in ("scipy", "lmfit", "gemmi", "nexusformat"):
        try:
            out["versions"][mod] = __import__(mod).__version__
        except Exception:  # pragma: no cover
            out["versions"][mod] = "?"
    # ---- the B matrix, as NXRefine builds it ----
    for name, b in spec["b_cells"].items():
        r = NXRefine()
        r.a, r.b, r.c, r.alpha, r.beta, r.gamma = b["cell"]
        Bm = np.asarray(r.Bmat)
        out["b"][name] = {
            "Bimat": np.asarray(r.Bimat).tolist(), "Bmat": Bm.tolist(),
            # what NXRefine computes with it: Bmat * h (column: get_UBmat, diff, get_xyz,
            # UBmat) and angle_hkls (row vector h^T Bmat), and 2theta from gemmi's cell
            "q_col": [float(np.linalg.norm(Bm @ np.array(h, float))) for h in b["hkl"]],
            "two_theta_gemmi": [float(r.two_theta_hkl(*h)) for h in b["hkl"]],
            "angle_hkls": [float(r.angle_hkls(h1, h2)) for h1, h2 in b["pairs"]],
            "angle_col": [float(np.degrees(np.arccos(np.clip(
                (Bm @ np.array(h1, float)) @ (Bm @ np.array(h2, float))
                / np.linalg.norm(Bm @ np.array(h1, float))
                / np.linalg.norm(Bm @ np.array(h2, float)), -1, 1)))) for h1, h2 in b["pairs"]],
        }
    # ---- refinements ----
    for run in spec["runs"]:
        r = NXRefine()
        r.a, r.b, r.c, r.alpha, r.beta, r.gamma = run["cell"]
        r.sg = run["space_group"]
        r.wavelength = run["wavelength"]
        r.distance = run["distance"]
        r.detector_orientation = run["detector_orientation"]
        r.yaw, r.pitch, r.roll = run["yaw"], run["pitch"], run["roll"]
        r.xc, r.yc = run["xc"], run["yc"]
        r.pixel_size = run["pixel_size"]
        r.shape = run["shape"]
        r.phi, r.phi_step = run["phi"], run["phi_step"]
        r.chi = r.omega = r.theta = 0.0
        r.xp, r.yp, r.zp = (np.asarray(run[k], float) for k in ("x", "y", "z"))
        r.intensity = np.asarray(run["intensity"], float)
        # geometry check: NXRefine's Gvec against hklflow's sample-frame Q (rotated by T)
        chk = run["check"]
        dq = [float(np.linalg.norm(np.asarray(r.Gvec(r.xp[i], r.yp[i], r.zp[i])).ravel()
                                   - np.asarray(q))) for i, q in zip(chk["idx"], chk["q"])]
        st = run["start"]
        if st["kind"] == "two_reflection":
            r.Umat = r.get_UBmat(st["i"], st["j"], st["hi"], st["hj"])
        else:  # the GUI's select_cell: Umat = UB * Bimat
            r.Umat = np.matrix(st["UB"]) * r.Bimat
        r.polar_angle = None
        r.polar_max = run["polar_max"]  # computes polar angles, then initialize_idx()
        r.hkl_tolerance = run["hkl_tolerance"]
        n0 = len(r.idx)
        t0 = time.perf_counter()
        d0 = r.diffs()
        per_diff = (time.perf_counter() - t0) / max(len(d0), 1)
        res = {"name": run["name"], "geometry_check_max_dq": max(dq), "n_peaks": int(r.npks),
               "start": {"n_idx": n0, "score": float(r.score()),
                         "cell": list(r.lattice_parameters)},
               "seconds_per_diff": per_diff, "stages": []}
        stages = [("refine_hkls", dict(lattice=True, chi=True, omega=True, theta=True)),
                  ("refine_hkls", dict(chi=True, omega=True, theta=True)),
                  ("refine_orientation_matrix", None)]
        if run["sequence"] == "detector":  # the detector (and lattice) first, then as above
            stages.insert(0, ("refine_hkls", dict(lattice=True, distance=True, xc=True,
                                                  yc=True, yaw=True, pitch=True, roll=True)))
        t_all = time.perf_counter()
        try:
            for meth, opts in stages:
                t0 = time.perf_counter()
                with contextlib.redirect_stdout(io.StringIO()):
                    if opts is None:
                        getattr(r, meth)()
                    else:
                        getattr(r, meth)(**opts)
                rr = r.result
                res["stages"].append({
                    "call": meth + ("(" + ", ".join(opts) + ")" if opts else "()"),
                    "seconds": time.perf_counter() - t0, "nfev": int(rr.nfev),
                    "success": bool(rr.success), "redchi": float(rr.redchi),
                    "cell": list(r.lattice_parameters)})
        except Exception as exc:  # report, do not hide
            res["error"] = f"{type(exc).__name__}: {exc}"
        res["seconds"] = time.perf_counter() - t_all
        # HKL that the final model gives at the true positions of the scan's reflections
        res["hkl_at_truth"] = [r.get_hkl(x, y, z) for x, y, z in run["truth_xyz"]]
        U = np.asarray(r.Umat, float)
        res["final"] = {
            "cell": list(map(float, r.lattice_parameters)), "Umat": U.tolist(),
            "Bmat": np.asarray(r.Bmat).tolist(), "UBmat": np.asarray(r.UBmat).tolist(),
            "G0": np.asarray(r.Gmat(0.0)).tolist(),
            "unitarity_dev": float(np.abs(U @ U.T - np.eye(3)).max()),
            "chi": float(r.chi), "omega": float(r.omega), "theta": float(r.theta),
            "distance": float(r.distance), "xc": float(r.xc), "yc": float(r.yc),
            "yaw": float(r.yaw), "pitch": float(r.pitch), "roll": float(r.roll),
            "n_idx": len(r.idx), "score": float(r.score())}
        out["runs"].append(res)
    Path(outp).write_text(json.dumps(out))


if __name__ == "__main__" and len(sys.argv) > 1 and sys.argv[1] == "_driver":
    driver(sys.argv[2], sys.argv[3])
    sys.exit(0)


# ======================================================================================
# Main: runs under hklflow's venv
# ======================================================================================
import argparse  # noqa: E402
import logging  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
from dataclasses import replace  # noqa: E402

# hklflow's geometry in NXRefine's parameters: one mapping, shared with the wrapper files
# (rule nxrefine_wrapper); imported here, after the driver, which runs without hklflow
from hklflow.model.nxrefine import T_NX  # noqa: E402
from hklflow.model.nxrefine import \
    bimat as nx_bimat  # noqa: E402  (checked against the real one in b_table)
from hklflow.model.nxrefine import detector_parameters as nx_geometry  # noqa: E402

log = logging.getLogger("bench")


# --------------------------------------------------------------------------------------
# Data: simulation, peak search, truth
# --------------------------------------------------------------------------------------
def experiment(name: str, workdir: Path):
    """Simulate the preset's parent temperature, entry f1 (cached); hklflow's peaks of f1."""
    from hklflow.simulation.experiment import preset, simulate_experiment

    out = workdir / name
    spec = preset(name)
    s = spec.samples[0]
    spec = replace(spec, samples=(replace(s, temperatures=s.temperatures[:1]),),
                   entries=spec.entries[:1])
    if not (out / "truth.json").exists():
        log.info("simulating %s into %s", name, out)
        simulate_experiment(spec, out, overwrite=True)
    truth = json.loads((out / "truth.json").read_text())
    peaks_file = out / "peaks_f1.npz"
    sid = next(iter(truth["scans"]))
    t = truth["scans"][sid]
    if not peaks_file.exists():
        from hklflow.algorithms.peaks.spotfinding import search
        from hklflow.model.geometry import DetectorGeometry, ScanAngles
        from hklflow.raw.frames import open_frames
        from hklflow.settings.params import DetectorParams, PeakSearchParams

        sample, tl, entry = sid.split("/")
        angles = ScanAngles(t["phi_start"], t["phi_step"], t["nframes"])
        with open_frames(str(out / "raw" / sample / tl / f"{entry}.h5")) as st:
            p = search(st, DetectorGeometry(**t["geometry"]), angles, PeakSearchParams.defaults(),
                       DetectorParams.defaults(name=spec.detector)).peaks
        np.savez(peaks_file, **{k: np.asarray(v) for k, v in p.items()})
    p = dict(np.load(peaks_file))
    return spec, truth, sid, p


def build(spec, truth, sid, p):
    """EntryPeaks of f1 with the start geometry; truth objects."""
    from hklflow.algorithms.orientation.orient import centroid_sigmas
    from hklflow.algorithms.orientation.refinement import EntryPeaks
    from hklflow.model.crystal import Crystal, UnitCell
    from hklflow.model.geometry import DetectorGeometry, EntrySetup, Goniometer, ScanAngles
    from hklflow.simulation.experiment import experiment_config

    t = truth["scans"][sid]
    sample = spec.samples[0]
    tl = sid.split("/")[1]
    gon = truth["goniometer"]
    G = Goniometer(tuple(gon["scan_axis"]), gon["scan_sense"], tuple(gon["offset_axes"].items()))
    cal = replace(DetectorGeometry(**truth["calibration_geometry"]), rot3=0.0)
    angles = ScanAngles(t["phi_start"], t["phi_step"], t["nframes"])
    strong = p["int_sum"] > 5 * np.sqrt(np.maximum(p["int_sum_var"], 1))
    setup = EntrySetup(sid.split("/")[2], cal, tuple(t["det_shift"]), G, angles,
                       dict(t["offsets"]))
    sxy, sz = centroid_sigmas(p)
    entry = EntryPeaks(setup, p["observed_px_x"][strong], p["observed_px_y"][strong],
                       p["observed_frame"][strong], sxy[strong], sz[strong], p["int_sum"][strong])
    cfg = experiment_config(spec)["samples"][sample.name]
    approx = Crystal(cfg["space_group"], UnitCell(*cfg["cell"]))
    tt = truth["samples"][sample.name]["temperatures"][tl]
    true_crystal = Crystal(cfg["space_group"], UnitCell(*tt["cell"]))
    true_geom = DetectorGeometry(**t["geometry"])
    return entry, cal, approx, true_crystal, np.array(tt["U"]), true_geom, t


# --------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------
def nearest_rotation(M):
    u, _, vt = np.linalg.svd(M)
    R = u @ vt
    if np.linalg.det(R) < 0:
        u[:, -1] *= -1
        R = u @ vt
    return R


def rotation_deg(R1, R2) -> float:
    c = (np.trace(R1 @ R2.T) - 1.0) / 2.0
    return float(np.degrees(np.arccos(np.clip(c, -1.0, 1.0))))


def cell_from_ub(UB):
    from hklflow.model.crystal import UnitCell

    G = np.linalg.inv(UB.T @ UB)  # direct metric
    a, b, c = np.sqrt(np.diag(G))
    al = math.degrees(math.acos(G[1, 2] / (b * c)))
    be = math.degrees(math.acos(G[0, 2] / (a * c)))
    ga = math.degrees(math.acos(G[0, 1] / (a * b)))
    return UnitCell(a, b, c, al, be, ga)


def ub_errors(UB, cell_params, true_crystal, U_true):
    """Errors of a UB (our sample frame, phi = 0) and a reported cell against the truth."""
    tc = np.array(true_crystal.cell.parameters)
    cp = np.array(cell_params)
    UBt = U_true @ true_crystal.B
    Binv = np.linalg.inv(true_crystal.B)
    Ufit = nearest_rotation(UB @ Binv)
    orient = min(rotation_deg(Ufit, nearest_rotation(UBt @ R.T.astype(float) @ Binv))
                 for R in true_crystal.laue_operators if np.linalg.det(R) > 0)
    ubcell = np.array(cell_from_ub(UB).parameters)
    return {"cell_rel": float(np.abs(cp[:3] / tc[:3] - 1).max()),
            "angle_deg": float(np.abs(cp[3:] - tc[3:]).max()),
            "ub_cell_rel": float(np.abs(ubcell[:3] / tc[:3] - 1).max()),
            "ub_angle_deg": float(np.abs(ubcell[3:] - tc[3:]).max()),
            "orientation_deg": orient, "ub_cell": ubcell.tolist()}


def map_error(h_model, h_true, true_crystal):
    """rms |B (h_model - h_true)| (1/A) over the scan's reflections at their true positions:
    how far from the true node the model puts a pixel's HKL (best Laue-equivalent setting)."""
    B = true_crystal.B
    h_model = np.asarray(h_model, float)
    return min(float(np.sqrt(np.mean(np.sum(((h_model - h_true @ R) @ B.T) ** 2, axis=1))))
               for R in true_crystal.laue_operators.astype(float))


# --------------------------------------------------------------------------------------
def timed(fn, repeats):
    best = None
    walls = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        try:
            out = fn()
        except Exception as exc:  # a failure is a result here
            out = exc
        walls.append(time.perf_counter() - t0)
        if best is None or walls[-1] < best[1]:
            best = (out, walls[-1])
    return best[0], best[1], (max(walls) - min(walls)) / min(walls) if len(walls) > 1 else 0.0


def two_reflections(entry, truth_t, q_start):
    """NXRefine's GUI orientation: two strong peaks (true hkl) at 45-135 deg to each other."""
    from scipy.spatial import cKDTree

    r = truth_t["reflections"]
    tree = cKDTree(np.stack([r["col"], r["row"], r["frame"]], axis=1))
    d, k = tree.query(np.stack([entry.x, entry.y, entry.z], axis=1))
    hkl = np.stack([r["h"], r["k"], r["l"]], axis=1)[k]
    ok = np.flatnonzero(d < 1.5)
    order = ok[np.argsort(-entry.intensity[ok])]
    i = int(order[0])
    u = q_start / np.linalg.norm(q_start, axis=1, keepdims=True)
    for j in order[1:]:
        ang = math.degrees(math.acos(np.clip(u[i] @ u[j], -1, 1)))
        if 45 < ang < 135:
            return i, int(j), hkl[i].tolist(), hkl[j].tolist(), float(ang)
    raise RuntimeError("no second reflection")


def with_detector(entry, det, **changes):
    """The entry (EntryPeaks) seen with detector geometry `det` as it is (no shift), with
    other fields changed."""
    return replace(entry, setup=replace(entry.setup, calibration=det, shift=(0.0, 0.0, 0.0)),
                   **changes)


def run_preset(name, workdir, repeats, py, tmp, detector_run=False, diagnostics=False,
               smoke=False):
    from hklflow.algorithms.orientation.orient import index_parent, sample_q
    from hklflow.algorithms.orientation.refinement import Model, refine
    from hklflow.model.geometry import axis_rotation as _axrot
    from hklflow.settings.params import IndexingParams, RefinementParams

    spec, truth, sid, p = experiment(name, workdir)
    entry, cal, approx, true_crystal, U_true, true_geom, t = build(spec, truth, sid, p)
    rng = np.random.default_rng(7)
    ax = rng.normal(size=3)
    U0 = _axrot(ax / np.linalg.norm(ax), math.radians(0.2)) @ U_true
    model0 = Model(approx, U0, cal)
    r = {k: np.asarray(v) for k, v in t["reflections"].items()}
    inscan = (r["frame"] > 0) & (r["frame"] < t["nframes"])
    truth_xyz = np.stack([r["col"], r["row"], r["frame"]], axis=1)[inscan]
    h_true = np.stack([r["h"], r["k"], r["l"]], axis=1)[inscan].astype(float)
    truth = (truth_xyz, h_true)
    rows = []
    # ---- hklflow ----
    quiet = logging.getLogger("bench.quiet")
    quiet.setLevel(logging.ERROR)
    res, wall, spread = timed(lambda: refine([entry], model0, RefinementParams.defaults(), quiet),
                              repeats)
    rows.append(hklflow_row("hklflow refine", res, wall, spread, true_crystal, U_true, true_geom,
                            entry, truth))
    # index_parent starts from the entries' calibration (cal, rot3 = 0)
    out, wall, spread = timed(lambda: index_parent([entry], approx, RefinementParams.defaults(),
                                                   IndexingParams.defaults(), quiet), repeats)
    res = out if isinstance(out, Exception) else out[0]
    rows.append(hklflow_row("hklflow index_parent", res, wall, spread, true_crystal, U_true,
                            true_geom, entry, truth))
    # ---- NXRefine ----
    scan0 = entry.setup.geometry()  # the start geometry: calibration moved by the shift
    g_start = nx_geometry(scan0.detector)
    g_true = nx_geometry(true_geom)
    q_start = sample_q([entry])
    q_true = sample_q([with_detector(entry, true_geom)])

    def base(g, q, x=entry.x, y=entry.y, z=entry.z, inten=entry.intensity):
        return {"cell": list(approx.cell.parameters), "space_group": approx.hm,
                "wavelength": cal.wavelength, **g, "phi": scan0.angles.start,
                "phi_step": scan0.angles.step, "x": list(x), "y": list(y),
                "z": list(z), "intensity": list(inten),
                "hkl_tolerance": HKL_TOLERANCE_NX, "polar_max": 90.0,
                "check": {"idx": list(range(len(q))), "q": (q @ T_NX.T).tolist()},
                "truth_xyz": truth_xyz.tolist()}

    i, j, hi, hj, ang = two_reflections(entry, t, q_start)
    UB0 = {"kind": "UB", "UB": (T_NX @ U0 @ approx.B).tolist()}
    runs = [dict(base(g_start, q_start), name="NXRefine auto/2refl", sequence="auto",
                 start={"kind": "two_reflection", "i": i, "j": j, "hi": hi, "hj": hj}),
            dict(base(g_start, q_start), name="NXRefine auto/UB", sequence="auto", start=UB0),
            dict(base(g_true, q_true), name="NXRefine auto/UB/true-geom", sequence="auto",
                 start=UB0)]
    if smoke:  # one NXRefine run: that the harness works, not what it finds
        runs = runs[1:2]
    if detector_run:
        runs.append(dict(base(g_start, q_start), name="NXRefine det+auto/UB",
                         sequence="detector", start=UB0))
    if diagnostics:
        # noise-free: 400 of the scan's reflections at their true positions, true geometry;
        # start UB with the true U or the 0.2 deg-off one (the start cell in both)
        sel = np.random.default_rng(3).choice(len(truth_xyz), min(400, len(truth_xyz)),
                                              replace=False)
        tx, ty, tz = truth_xyz[sel, 0], truth_xyz[sel, 1], truth_xyz[sel, 2]
        ent_t = with_detector(entry, true_geom, x=tx, y=ty, z=tz)
        qt = sample_q([ent_t])
        bt = base(g_true, qt, tx.tolist(), ty.tolist(), tz.tolist(), [1.0] * len(tx))
        runs.append(dict(bt, name="NX exact peaks, U true", sequence="auto",
                         start={"kind": "UB", "UB": (T_NX @ U_true @ approx.B).tolist()}))
        runs.append(dict(bt, name="NX exact peaks, U 0.2deg", sequence="auto", start=UB0))
    hkls = B_REFLECTIONS[true_crystal.hm]
    pairs = B_PAIRS[true_crystal.hm]
    inp = {"b_cells": {name: {"cell": list(true_crystal.cell.parameters), "hkl": hkls,
                              "pairs": pairs}}, "runs": runs}
    fin, fout = tmp / f"{name}_in.json", tmp / f"{name}_out.json"
    fin.write_text(json.dumps(inp))
    log.info("%s: running NXRefine (%d runs) in %s", name, len(runs), py)
    t0 = time.perf_counter()
    proc = subprocess.run([str(py), str(Path(__file__).resolve()), "_driver", str(fin), str(fout)],
                          capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"NXRefine driver failed:\n{proc.stderr[-4000:]}")
    log.info("%s: NXRefine done in %.1f s", name, time.perf_counter() - t0)
    nx = json.loads(fout.read_text())
    Tinv = T_NX.T
    for run in nx["runs"]:
        f = run["final"]
        UB_eff = Tinv @ np.array(f["G0"]) @ np.array(f["UBmat"])  # our sample frame, phi = 0
        e = ub_errors(UB_eff, f["cell"], true_crystal, U_true)
        e["map_rms"] = map_error(run["hkl_at_truth"], h_true, true_crystal)
        e["dist_rel"] = abs(f["distance"] / g_true["distance"] - 1)
        e["beam_px"] = float(math.hypot(f["xc"] - g_true["xc"], f["yc"] - g_true["yc"]))
        e["roll_mrad"] = abs(math.radians(f["roll"] - g_true["roll"])) * 1e3
        run.pop("hkl_at_truth")
        rows.append({"name": run["name"], "seconds": run["seconds"], "spread": None,
                     "errors": e, "cell": f["cell"],
                     "note": (f"{run['start']['n_idx']}->{f['n_idx']}/{run['n_peaks']} peaks "
                              f"within tol; |UU^T-1| {f['unitarity_dev']:.1e}; chi/omega/theta "
                              f"{f['chi']:.3f}/{f['omega']:.3f}/{f['theta']:.3f} deg"
                              + (f"; ERROR {run['error']}" if "error" in run else "")),
                     "nx": run})
    return {"preset": name, "space_group": true_crystal.hm,
            "true_cell": list(true_crystal.cell.parameters),
            "start_cell": list(approx.cell.parameters), "n_peaks": int(len(entry.x)),
            "n_truth": int(len(h_true)),
            "two_reflections": {"i": i, "j": j, "hkl_i": hi, "hkl_j": hj, "angle_deg": ang},
            "nx_geometry_start": g_start, "nx_geometry_true": g_true,
            "geometry_check_max_dq": max(rn["geometry_check_max_dq"] for rn in nx["runs"]),
            "rows": rows, "b": b_table(true_crystal, nx["b"][name], hkls, pairs,
                                       list(approx.cell.parameters), h_true),
            "versions": nx["versions"]}


def hklflow_row(name, res, wall, spread, true_crystal, U_true, true_geom, entry, truth):
    if isinstance(res, Exception):
        return {"name": name, "seconds": wall, "spread": spread, "errors": None,
                "note": f"FAILED: {type(res).__name__}: {res}"}
    m = res.model
    e = ub_errors(m.UB, m.crystal.cell.parameters, true_crystal, U_true)
    xyz, h_true = truth
    h_model = m.entry_geometry(entry).hkl_at(xyz[:, 1], xyz[:, 0], xyz[:, 2])
    e["map_rms"] = map_error(h_model, h_true, true_crystal)
    e["dist_rel"] = abs(m.detector.dist / true_geom.dist - 1)
    e["beam_px"] = float(np.hypot(*np.subtract(m.detector.direct_beam_pixel(),
                                              true_geom.direct_beam_pixel())))
    e["roll_mrad"] = abs(m.detector.rot3 - true_geom.rot3) * 1e3
    return {"name": name, "seconds": wall, "spread": spread, "errors": e,
            "cell": list(m.crystal.cell.parameters),
            "note": (f"{res.n_used}/{sum(len(x.x) for x in res.entries)} peaks used, rms "
                     f"{res.rms_px:.3f} px / {res.rms_frames:.3f} fr")}


NX_FREE = {"hexagonal": ("a", "c"), "monoclinic": ("a", "b", "c", "beta")}


def nx_cell(system, start, x):
    """NXRefine's free lattice parameters (define_lattice_parameters) and set_symmetry()."""
    d = dict(zip(("a", "b", "c", "alpha", "beta", "gamma"), start))
    d.update(zip(NX_FREE[system], x))
    if system == "hexagonal":
        d.update(b=d["a"], alpha=90.0, beta=90.0, gamma=120.0)
    else:
        d.update(alpha=90.0, gamma=90.0)
    return [d[k] for k in ("a", "b", "c", "alpha", "beta", "gamma")]


def structural_fit(true_crystal, start_cell, h, path):
    """Noise-free test of NXRefine's parametrisation: the cell its refine_hkls can reach
    when fitting exact Q = UB_true h (perfect geometry), with a free rotation standing in for
    its goniometer angles.  path "UB": Umat = UB_start Bimat(start), fixed (the auto-indexing
    hand-over), UB = R Umat Bimat(cell)^-1; path "U": Umat a rotation (its two-reflection
    orientation), UB = R Bimat(cell)^-1.  Returns the fitted cell and the rms |dQ| left."""
    from scipy.optimize import least_squares

    from hklflow.model.crystal import UnitCell
    from hklflow.model.geometry import axis_rotation

    system = true_crystal.sg.crystal_system_str().lower()  # as NXRefine's sg setter
    if system not in NX_FREE:
        return None
    # start: the start cell, oriented at the truth (U0 = 1 in the sample frame of the truth)
    UBt = true_crystal.B
    target = UBt @ h.T
    if path == "UB":
        M0 = UnitCell(*start_cell).B @ nx_bimat(start_cell)
    else:
        M0 = nearest_rotation(UBt @ nx_bimat(start_cell))
    x0 = [dict(zip(("a", "b", "c", "alpha", "beta", "gamma"), start_cell))[n]
          for n in NX_FREE[system]]

    def model(p):
        rv, x = p[:3], p[3:]
        ang = np.linalg.norm(rv)
        R = axis_rotation(rv / ang, ang) if ang > 0 else np.eye(3)
        return R @ M0 @ np.linalg.inv(nx_bimat(nx_cell(system, start_cell, x)))

    sol = least_squares(lambda p: (model(p) @ h.T - target).ravel(), np.r_[0.0, 0.0, 0.0, x0],
                        xtol=1e-15, ftol=1e-15, gtol=1e-15)
    cell = [float(v) for v in nx_cell(system, start_cell, sol.x[3:])]
    tc = np.array(true_crystal.cell.parameters)
    rms = float(np.sqrt(np.mean(np.sum((model(sol.x) @ h.T - target) ** 2, axis=0))))
    return {"path": path, "cell": cell, "rms_dq": rms,
            "cell_rel": float(np.abs(np.array(cell[:3]) / tc[:3] - 1).max()),
            "angle_deg": float(np.abs(np.array(cell[3:]) - tc[3:]).max())}


def b_table(crystal, nxb, hkls, pairs, start_cell, h_true):
    B = crystal.B
    Bnx = np.array(nxb["Bmat"])
    rows = []
    for h, qn in zip(hkls, nxb["q_col"]):
        d_true = float(crystal.cell.d_spacing(np.array(h, float)))
        rows.append({"hkl": h, "d_true": d_true, "d_bl": 1 / float(np.linalg.norm(B @ np.array(h, float))),
                     "d_nx": 1 / qn})
    angs = []
    for (h1, h2), a_row, a_col in zip(pairs, nxb["angle_hkls"], nxb["angle_col"]):
        v1, v2 = B @ np.array(h1, float), B @ np.array(h2, float)
        a_true = math.degrees(math.acos(v1 @ v2 / np.linalg.norm(v1) / np.linalg.norm(v2)))
        angs.append({"h1": h1, "h2": h2, "true": a_true, "nx_angle_hkls": a_row, "nx_col": a_col})
    G = crystal.cell.reciprocal_metric
    return {"B_bl": B.tolist(), "B_nx": Bnx.tolist(), "Bimat_nx": nxb["Bimat"],
            "metric_err_nx": float(np.abs(Bnx.T @ Bnx - G).max() / np.abs(G).max()),
            "metric_err_nx_transposed": float(np.abs(Bnx @ Bnx.T - G).max() / np.abs(G).max()),
            "d": rows, "angles": angs,
            "replica_check": float(np.abs(nx_bimat(crystal.cell.parameters)
                                          - np.array(nxb["Bimat"])).max()),
            "structural": [structural_fit(crystal, start_cell, h_true, path)
                           for path in ("UB", "U")]}


# --------------------------------------------------------------------------------------
def fmt_matrix(M, indent="    "):
    return "\n".join(indent + "  ".join(f"{v:9.5f}" for v in row) for row in np.asarray(M))


def table(report) -> str:
    L = []
    m = report["machine"]
    L.append(f"machine: {m['cpu']}, {m['cores']} cores, load {m['load_start']} -> {m['load_end']}"
             f"; python {m['python']}, numpy {m['numpy']}; NXRefine venv: {m['nx_versions']}")
    L.append("NOTE: shared, noisy machine; hklflow times are the best of "
             f"{report['repeats']} runs, NXRefine runs once")
    for c in report["cases"]:
        L.append("")
        L.append(f"=== {c['preset']}: {c['space_group']}, true cell "
                 f"{tuple(round(v, 4) for v in c['true_cell'])}, start cell "
                 f"{tuple(round(v, 3) for v in c['start_cell'])}; {c['n_peaks']} peaks (hklflow "
                 "peak search, entry f1, I > 5 sigma)")
        g = c["nx_geometry_start"]
        L.append(f"NXRefine geometry (start = calibration, rot3 = 0): distance {g['distance']:.3f} mm,"
                 f" xc/yc {g['xc']:.2f}/{g['yc']:.2f} px, yaw/pitch/roll {g['yaw']:.4f}/"
                 f"{g['pitch']:.4f}/{g['roll']:.4f} deg, orientation '{g['detector_orientation']}'"
                 f"; its Gvec vs hklflow's Q: max |dQ| {c['geometry_check_max_dq']:.1e} 1/A")
        tr = c["two_reflections"]
        L.append(f"two-reflection start (auto/2refl): peaks {tr['hkl_i']} and {tr['hkl_j']} "
                 f"({tr['angle_deg']:.1f} deg apart)")
        L.append(f"{'program / run':<27}{'s':>7}  {'cell rel':>9}{'angle°':>9}  "
                 f"{'UBcell rel':>10}{'UBangle°':>9}{'orient°':>9}{'map 1/A':>9}"
                 f"{'dist rel':>9}{'beam px':>8}{'rot3 mrad':>10}  notes")
        for r in c["rows"]:
            e = r["errors"]
            if e is None:
                L.append(f"{r['name']:<27}{r['seconds']:7.2f}  {r['note']}")
                continue
            L.append(f"{r['name']:<27}{r['seconds']:7.2f}  {e['cell_rel']:9.1e}{e['angle_deg']:9.1e}"
                     f"  {e['ub_cell_rel']:10.1e}{e['ub_angle_deg']:9.1e}{e['orientation_deg']:9.1e}"
                     f"{e['map_rms']:9.1e}{e['dist_rel']:9.1e}{e['beam_px']:8.2f}"
                     f"{e['roll_mrad']:10.2f}  {r['note']}")
        for r in c["rows"]:
            if "nx" in r:
                L.append(f"  {r['name']} stages: " + "; ".join(
                    f"{s['call']} {s['seconds']:.1f} s, {s['nfev']} evaluations, "
                    f"cell {tuple(round(v, 4) for v in s['cell'])}" for s in r["nx"]["stages"])
                    + f" ({1e3 * r['nx']['seconds_per_diff']:.2f} ms per peak per evaluation)")
        b = c["b"]
        L.append("")
        L.append(f"B matrix of the true cell ({c['space_group']}), 1/A without 2 pi:")
        L.append("  hklflow UnitCell.B (Busing-Levy: columns a*, b*, c*):")
        L.append(fmt_matrix(b["B_bl"]))
        L.append("  NXRefine Bmat = inv(Bimat), Bimat = columns a, b, c (the real-space basis):")
        L.append(fmt_matrix(b["B_nx"]))
        L.append(f"  metric: max |Bmat^T Bmat - G*| / max|G*| = {b['metric_err_nx']:.2e} "
                 f"(Busing-Levy: 0); of its transpose, |Bmat Bmat^T - G*| = "
                 f"{b['metric_err_nx_transposed']:.1e}")
        L.append(f"  {'hkl':<12}{'d true (A)':>11}{'d BL B':>10}{'d NXRefine':>11}{'rel err':>9}")
        for d in b["d"]:
            L.append(f"  {str(tuple(d['hkl'])):<12}{d['d_true']:11.4f}{d['d_bl']:10.4f}"
                     f"{d['d_nx']:11.4f}{d['d_nx'] / d['d_true'] - 1:9.2%}")
        L.append(f"  {'angle between':<24}{'true':>9}{'NX Bmat*h':>11}{'NX angle_hkls':>15}")
        for a in b["angles"]:
            L.append(f"  {str(tuple(a['h1'])) + ' ' + str(tuple(a['h2'])):<24}{a['true']:9.3f}"
                     f"{a['nx_col']:11.3f}{a['nx_angle_hkls']:15.3f}")
        L.append(f"  noise-free test of NXRefine's cell parametrisation (exact Q of the "
                 f"{c['n_truth']} reflections of the scan, perfect geometry, free rotation; its "
                 f"Bimat formula, replica max diff {b['replica_check']:.0e}):")
        for sf in b["structural"]:
            if sf is None:
                continue
            what = ("Umat = UB_start*Bimat(start cell) fixed (auto-indexing hand-over)"
                    if sf["path"] == "UB" else "Umat a rotation (two-reflection orientation)")
            L.append(f"    {what}: best cell {tuple(round(v, 4) for v in sf['cell'])}, "
                     f"length err {sf['cell_rel']:.1e}, angle err {sf['angle_deg']:.3f} deg, "
                     f"rms |dQ| left {sf['rms_dq']:.1e} 1/A")
    return "\n".join(L)


SETTLED = {
    # the same geometry in NXRefine's parameters: its Gvec equals hklflow's sample-frame Q
    "geometry_max_dq_below": 1e-9,
    # NXRefine's Bmat is not Busing-Levy's: Bmat^T Bmat misses G* by this much (relative to
    # its largest element; per preset), its transpose gives G* to rounding
    "nx_b_metric_error": {"tiny_hexagonal": 0.25, "tiny_monoclinic": 0.0697},
    "nx_b_transposed_below": 1e-12,
    # hklflow's refine and index_parent from the start: errors against the truth below these
    "hklflow_below": {"cell_rel": 1e-3, "orientation_deg": 0.01, "map_rms": 1e-4},
    # NXRefine's automatic sequence from the start UB maps the scan's reflections at least
    # this many times worse than hklflow's refine
    "nx_auto_ub_map_worse_by": 10.0,
    # noise-free: with Umat = UB * Bimat fixed (the auto-indexing hand-over) its cell
    # parametrisation finds the cell; with Umat a rotation (two reflections) it cannot
    "structural_ub_cell_below": 1e-4, "structural_u_cell_above": 1e-2,
}


def settled_moves(report: dict) -> list[str]:
    """What in `report` differs from SETTLED (the runs and presets it made)."""
    moved = []
    for c in report["cases"]:
        name = c["preset"]
        dq = c.get("geometry_check_max_dq")
        if dq is not None and not dq < SETTLED["geometry_max_dq_below"]:
            moved.append(f"{name}: NXRefine's Gvec against hklflow's Q {dq:.1e} 1/A")
        b = c.get("b") or {}
        want = SETTLED["nx_b_metric_error"].get(name)
        if want is not None and "metric_err_nx" in b and abs(b["metric_err_nx"] - want) > 1e-3:
            moved.append(f"{name}: NXRefine's B metric error {b['metric_err_nx']:.4f}, settled "
                         f"{want}")
        if b.get("metric_err_nx_transposed", 0.0) >= SETTLED["nx_b_transposed_below"]:
            moved.append(f"{name}: NXRefine's transposed B metric error "
                         f"{b['metric_err_nx_transposed']:.1e}")
        for sf in b.get("structural") or []:
            if sf is None:
                continue
            if sf["path"] == "UB" and not sf["cell_rel"] < SETTLED["structural_ub_cell_below"]:
                moved.append(f"{name}: noise-free cell with the UB hand-over {sf['cell_rel']:.1e}")
            if sf["path"] == "U" and not sf["cell_rel"] > SETTLED["structural_u_cell_above"]:
                moved.append(f"{name}: noise-free cell with a rotation Umat {sf['cell_rel']:.1e}")
        rows = {r["name"]: r["errors"] for r in c["rows"] if r.get("errors")}
        for run in ("hklflow refine", "hklflow index_parent"):
            for key, bound in SETTLED["hklflow_below"].items():
                if run in rows and not rows[run][key] < bound:
                    moved.append(f"{name}: {run} {key} {rows[run][key]:.1e}, settled below "
                                 f"{bound:g}")
        ours, theirs = rows.get("hklflow refine"), rows.get("NXRefine auto/UB")
        if ours and theirs and not (theirs["map_rms"]
                                    >= SETTLED["nx_auto_ub_map_worse_by"] * ours["map_rms"]):
            moved.append(f"{name}: NXRefine auto/UB map {theirs['map_rms']:.1e} against "
                         f"hklflow's {ours['map_rms']:.1e}")
    return moved


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--venv", type=Path, default=HERE / ".nxrefine-venv")
    p.add_argument("--workdir", type=Path, default=HERE / ".data" / "nxrefine_compare")
    p.add_argument("--presets", nargs="+", default=["tiny_hexagonal", "tiny_monoclinic"])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--reinstall", action="store_true")
    p.add_argument("--nx-diagnostics", action="store_true",
                   help="also run NXRefine on exact (noise-free) peak positions with the true "
                        "geometry, from the true U and from the 0.2 deg-off U (~1 min per case)")
    p.add_argument("--nx-detector-run", action="store_true",
                   help="also run NXRefine with its detector parameters refined first (slow: "
                        "minutes per case)")
    p.add_argument("--smoke", action="store_true",
                   help="one NXRefine run per preset (auto/UB), for tests/test_bench_smoke.py")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    logging.getLogger("hklflow").setLevel(logging.WARNING)
    cpu = "?"
    try:
        cpu = next(ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo")
                   if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    load_start = [round(v, 2) for v in os.getloadavg()]
    from nxrefine_venv import VenvError, ensure_venv

    try:
        py = ensure_venv(args.venv, args.reinstall)
    except VenvError as e:
        raise SystemExit(str(e))
    args.workdir.mkdir(parents=True, exist_ok=True)
    cases = [run_preset(n, args.workdir, args.repeats, py, args.workdir, args.nx_detector_run,
                        args.nx_diagnostics, args.smoke) for n in args.presets]
    report = {"machine": {"cpu": cpu, "cores": os.cpu_count(), "load_start": load_start,
                          "load_end": [round(v, 2) for v in os.getloadavg()],
                          "python": platform.python_version(), "numpy": np.__version__,
                          "nx_versions": cases[0]["versions"] if cases else {}},
              "repeats": args.repeats, "cases": cases}
    from common import emit

    report["settled_moves"] = moved = settled_moves(report)
    emit(report, table(report), args.json)
    for line in moved:
        print(f"SETTLED ANSWER MOVED: {line}", file=sys.stderr)
    return 1 if moved else 0


if __name__ == "__main__":
    sys.exit(main())
