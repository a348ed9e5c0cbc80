"""hklflow's parent indexing + refinement against DIALS's (dials.index + dials.refine), on the
same simulated frames: the refined cells agree within their combined uncertainty and both
are close to the truth.

DIALS runs as command lines (Debian's python3-dials; never imported here): see
hklflow.reference.dials_index.  The DIALS tests are skipped when DIALS is not installed; the
first three tests (conventions and helpers) need no DIALS.

Data: 'tiny_hexagonal' and 'tiny_monoclinic' written as Pilatus miniCBF frames, their parent
temperature (300K) only (the child temperature is not needed here and would double the
simulation time; the parent's truth is the same).  Entries f1 (no offsets) and f2 (detector
shifted, goniometer offsets), 180 x 1 deg each.  DIALS indexes and refines f1 alone (a joint
refinement of f2 would need its shifted detector and offset goniometer described to DIALS:
not done); hklflow refines f1 alone (like for like) and f1 + f2 (as its pipeline does).
Both get the space group and the config's approximate cell (1% off).  Run with ``-s`` (or
``-rA``) to see the report.  DIALS runs in a worker thread while the next simulation and
hklflow's own pipeline run (to keep the module's time down), so the wall times overlap.
"""
from __future__ import annotations

import glob
import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import numpy as np
import pytest

from hklflow.simulation.compare import orientation_error

from reference import dials_index as di

log = logging.getLogger("test")

_WHY = di.dials_available()

CASES = ("tiny_hexagonal", "tiny_monoclinic")
INDEX_METHOD = "fft1d"  # DIALS's default fft3d finds the same cell, ~3x slower here
TRUTH_REL = 5e-4  # both cells vs the truth (relative, every free parameter)
N_SIGMA = 3.0
FLOOR = {"length": 1e-4, "angle": 0.005}  # A, deg: floor of the combined uncertainty


# --------------------------------------------------------------------------------------
# Conventions and helpers (no DIALS needed)
# --------------------------------------------------------------------------------------
def test_mirror_maps_hklflow_cbf_frames_to_dxtbx_lab():
    """hklflow's lab -> dxtbx's for CbfFramesWriter frames: column (L2) -> fast +X, row (L1,
    up) -> slow -Y, beam (L3) -> -Z; a mirror.  A scan about hklflow's (0, 1, 0) is, in DIALS's
    frame, a right-handed scan about -X, and -M^T A recovers an hklflow UB."""
    from hklflow.model.crystal import Crystal, UnitCell, random_rotation
    from hklflow.model.geometry import Goniometer, axis_rotation

    M = di.HKLFLOW_TO_DXTBX_LAB
    assert np.linalg.det(M) == pytest.approx(-1.0)
    assert M @ [1, 0, 0] == pytest.approx([0, -1, 0])  # L1 (rows) -> -Y (slow axis)
    assert M @ [0, 1, 0] == pytest.approx([1, 0, 0])  # L2 (columns) -> +X (fast axis)
    assert M @ [0, 0, 1] == pytest.approx([0, 0, -1])  # beam -> -Z
    assert di.dials_rotation_axis((0, 1, 0), 1) == (-1.0, 0.0, 0.0)
    assert di.dials_rotation_axis((0, 1, 0), -1) == (1.0, 0.0, 0.0)
    rng = np.random.default_rng(4)
    UB = random_rotation(rng) @ Crystal("C 1 2/c 1", UnitCell(9.7, 8.9, 5.3, 90, 105.6, 90)).B
    h = rng.integers(-5, 6, size=(20, 3)).astype(float)
    for scan_axis, sense, offsets in [((0, 1, 0), 1, {}), ((0, 1, 0), -1, {}),
                                      ((0, 1, 0), 1, {"omega": -1.0, "chi": 1.5})]:
        G = Goniometer(scan_axis, sense, (("omega", (1, 0, 0)), ("chi", (0, 0, 1))))
        ax = di.dials_rotation_axis(scan_axis, sense, G.offset_rotation(offsets))
        R_off = G.offset_rotation(offsets)
        # the DIALS crystal at scan angle 0: mirror of the hklflow one (offsets absorbed)
        A = M @ R_off @ UB @ -np.eye(3)  # hkl -> -hkl keeps A proper
        assert np.linalg.det(A) > 0
        for phi in (0.0, 37.0, 151.0):
            q_hkl = G.rotation(phi, offsets) @ UB @ h.T
            q_dials = axis_rotation(ax, np.radians(phi)) @ A @ -h.T
            assert M @ q_hkl == pytest.approx(q_dials, abs=1e-12)
        assert di.hklflow_ub_from_dials(A) == pytest.approx(R_off @ UB, abs=1e-12)


def test_cell_esd_from_b_covariance_matches_monte_carlo():
    cell = np.array([9.71, 8.87, 5.27, 90.0, 105.6, 90.0])
    B = di.dials_b_matrix(cell)
    assert di.cell_from_b(B) == pytest.approx(cell, rel=1e-12)
    assert np.allclose(np.triu(B, 1), 0)  # DIALS's B is lower triangular
    rng = np.random.default_rng(1)
    L = rng.normal(size=(9, 9)) * 1e-6
    cov = L @ L.T
    esd = di.cell_esd_from_b_covariance(cell, cov)
    draws = rng.multivariate_normal(B.ravel(), cov, size=20000)
    mc = np.std([di.cell_from_b(d) for d in draws], axis=0)
    assert esd == pytest.approx(mc, rel=0.05)
    # real-space axes -> cell
    real = np.linalg.inv(B)  # rows: a, b, c (A = B here, U = 1)
    assert di.cell_from_real_space(*real) == pytest.approx(cell, rel=1e-12)


def test_log_parsers():
    text = """
RMSDs by experiment:
+-------+--------+----------+----------+------------+
|   Exp |   Nref |   RMSD_X |   RMSD_Y |     RMSD_Z |
|    id |        |     (px) |     (px) |   (images) |
|-------+--------+----------+----------+------------|
|     0 |    350 | 0.011498 | 0.011268 |   0.011956 |
+-------+--------+----------+----------+------------+
Final refined crystal model:
Crystal:
    Unit cell: 9.7109(3), 8.8708(3), 5.27044(16), 90.0, 105.5993(3), 90.0
+------------+-------------+---------------+-------------+
|   Imageset |   # indexed |   # unindexed | % indexed   |
|------------+-------------+---------------+-------------|
|          0 |         549 |             1 | 99.8%       |
+------------+-------------+---------------+-------------+
"""
    assert di.parse_rmsds(text) == {"nref": 350, "x_px": 0.011498, "y_px": 0.011268,
                                    "z_images": 0.011956}
    assert di.parse_indexed(text) == (549, 1)
    v, e = di.parse_printed_cell(text)
    assert v == pytest.approx([9.7109, 8.8708, 5.27044, 90, 105.5993, 90])
    assert e[[0, 1, 2, 4]] == pytest.approx([3e-4, 3e-4, 16e-5, 3e-4])
    assert np.isnan(e[[3, 5]]).all()
    with pytest.raises(di.DialsError, match="RMSDs by experiment"):
        di.parse_rmsds("nothing here")


# --------------------------------------------------------------------------------------
# The comparison on simulated frames
# --------------------------------------------------------------------------------------
def parent_only(spec):
    """The preset with its samples' parent temperature only (same parent truth, half the
    frames to simulate)."""
    return replace(spec, samples=tuple(replace(s, temperatures=s.temperatures[:1])
                                       for s in spec.samples))


def cbf_entries(out, truth, sample, tl):
    """hklflow's peak search on each entry's CBF frames -> EntryPeaks (as test_orientation's
    entries_at does on the HDF5 frames), the common detector start and search seconds."""
    from hklflow.algorithms.orientation.orient import entry_peaks
    from hklflow.algorithms.peaks.spotfinding import search
    from hklflow.model.geometry import DetectorGeometry, EntrySetup, Goniometer, ScanAngles
    from hklflow.raw.frames import open_frames
    from hklflow.settings.params import DetectorParams, PeakSearchParams

    gon = truth["goniometer"]
    G = Goniometer(tuple(gon["scan_axis"]), gon["scan_sense"], tuple(gon["offset_axes"].items()))
    cal = replace(DetectorGeometry(**truth["calibration_geometry"]), rot3=0.0)
    entries, seconds = [], {}
    for sid, t in truth["scans"].items():
        if not sid.startswith(f"{sample}/{tl}/"):
            continue
        entry = sid.split("/")[2]
        angles = ScanAngles(t["phi_start"], t["phi_step"], t["nframes"])
        t0 = time.monotonic()
        with open_frames(str(out / "raw" / sample / tl / entry / f"{entry}_*.cbf"),
                         expected_frames=t["nframes"]) as st:
            g = DetectorGeometry(**t["geometry"])
            p = search(st, g, angles, PeakSearchParams.defaults(),
                       DetectorParams.defaults(name=g.detector)).peaks
        seconds[entry] = time.monotonic() - t0
        entries.append(entry_peaks(EntrySetup(entry, cal, tuple(t["det_shift"]), G, angles,
                                              t["offsets"]), p))
    return entries, cal, seconds


def run_hklflow(entries, cal, crystal):
    from hklflow.algorithms.orientation.orient import index_parent
    from hklflow.settings.params import IndexingParams, RefinementParams

    t0 = time.monotonic()
    r, _ = index_parent(entries, crystal, RefinementParams.defaults(), IndexingParams.defaults(), log)
    return {"cell": tuple(r.model.crystal.cell.parameters), "cell_esd": tuple(r.cell_esd),
            "UB": r.model.UB, "n_peaks": int(sum(len(e.x) for e in entries)), "n_used": r.n_used,
            "fraction_indexed": r.fraction_indexed, "rms_px": r.rms_px,
            "rms_frames": r.rms_frames, "n_parameters": len(r.parameters),
            "seconds": time.monotonic() - t0}


@pytest.fixture(scope="module")
def comparisons(tmp_path_factory):
    from hklflow.planning.config import load_experiment
    from hklflow.simulation.experiment import preset, simulate_experiment

    if _WHY is not None:
        pytest.skip(f"DIALS not usable: {_WHY}")
    out = {}
    with ThreadPoolExecutor(max_workers=1) as pool:
        futures = {}
        for name in CASES:
            d = tmp_path_factory.mktemp(f"{name}_cbf")
            t0 = time.monotonic()
            simulate_experiment(parent_only(preset(name)), d, frame_format="cbf")
            t_sim = time.monotonic() - t0
            truth = json.loads((d / "truth.json").read_text())
            exp = load_experiment(d / "config" / "config.yaml", base_dir=d)
            sample = next(iter(exp.samples))
            spec = exp.samples[sample]
            tl = spec.parent_label
            gon = truth["goniometer"]
            f1_pattern = str(d / "raw" / sample / tl / "f1" / "f1_*.cbf")
            futures[name] = pool.submit(
                di.run_dials_index_refine, f1_pattern,
                tmp_path_factory.mktemp(f"{name}_dials"), space_group=spec.crystal.hm,
                unit_cell=spec.crystal.cell.parameters, nproc=1, index_method=INDEX_METHOD,
                rotation_axis=di.dials_rotation_axis(gon["scan_axis"], gon["scan_sense"]))
            entries, cal, t_search = cbf_entries(d, truth, sample, tl)
            assert [e.name for e in entries] == ["f1", "f2"]
            out[name] = {"truth": truth["samples"][sample]["temperatures"][tl],
                         "crystal": spec.crystal, "simulate_seconds": t_sim,
                         "f1_pattern": f1_pattern,
                         "search_seconds": t_search,
                         "hklflow_f1": run_hklflow(entries[:1], cal, spec.crystal),
                         "hklflow_f1f2": run_hklflow(entries, cal, spec.crystal)}
        for name, f in futures.items():
            out[name]["dials"] = f.result()
    return out


def fmt_cell(cell, esd=None, free=range(6)):
    parts = []
    for i in range(6):
        s = f"{cell[i]:.5f}" if i < 3 else f"{cell[i]:.4f}"
        if esd is not None and i in free:
            s += f"({esd[i]:.1e})"
        parts.append(s)
    return " ".join(parts)


def agreement(c1, e1, c2, e2, free):
    """|c1 - c2| / combined sigma (with the floor) per free parameter index."""
    out = {}
    for i in free:
        sig = np.hypot(e1[i], e2[i])
        sig = max(sig, FLOOR["length"] if i < 3 else FLOOR["angle"])
        out[i] = abs(c1[i] - c2[i]) / sig
    return out


def free_indices(crystal):
    return [di.CELL_NAMES.index(n) for n in crystal.constraints.free]


@pytest.mark.parametrize("name", CASES)
@pytest.mark.dials
@pytest.mark.skipif(_WHY is not None, reason=f"DIALS not usable: {_WHY}")
def test_dials_and_hklflow_cells_agree(comparisons, name):
    c = comparisons[name]
    d, h1, h2 = c["dials"], c["hklflow_f1"], c["hklflow_f1f2"]
    crystal, truth = c["crystal"], c["truth"]
    free = free_indices(crystal)
    true_cell = np.array(truth["cell"])
    t = d["seconds"]
    lines = [f"\n[{name}: {crystal.hm}, parent 300K; DIALS on f1, hklflow on f1 and on f1+f2]",
             f"  truth            {fmt_cell(true_cell)}",
             f"  approximate      {fmt_cell(crystal.cell.parameters)} (config, given to both)"]
    rows = [("DIALS f1", d["cell"], d["cell_esd"]), ("hklflow f1", h1["cell"], h1["cell_esd"]),
            ("hklflow f1+f2", h2["cell"], h2["cell_esd"])]
    for label, cell, esd in rows:
        err = [(cell[i] - true_cell[i]) / true_cell[i] for i in free]
        zt = [(cell[i] - true_cell[i]) / max(esd[i], 1e-12) for i in free]
        lines.append(f"  {label:16s} {fmt_cell(cell, esd, free)}\n"
                     f"  {'':16s} rel. error vs truth (free params) "
                     f"{' '.join(f'{e:+.1e}' for e in err)}; in own esd {' '.join(f'{z:+.1f}' for z in zt)}")
    ag1 = agreement(d["cell"], d["cell_esd"], h1["cell"], h1["cell_esd"], free)
    ag2 = agreement(d["cell"], d["cell_esd"], h2["cell"], h2["cell_esd"], free)
    names = [di.CELL_NAMES[i] for i in free]
    lines += ["  |DIALS - hklflow f1| / combined esd:    "
              + " ".join(f"{n} {ag1[i]:.2f}" for n, i in zip(names, free)),
              "  |DIALS - hklflow f1+f2| / combined esd: "
              + " ".join(f"{n} {ag2[i]:.2f}" for n, i in zip(names, free)),
              f"  DIALS: {d['n_strong']} spots, {d['n_indexed']} indexed ({d['n_unindexed']} not), "
              f"{d['n_refined']} used by dials.refine (MCD outliers out), {d['n_parameters']} "
              f"parameters; RMSD x {d['rmsd']['x_px']:.4f} y {d['rmsd']['y_px']:.4f} px, "
              f"z {d['rmsd']['z_images']:.4f} images",
              f"  DIALS times: import {t['import']:.1f} s, find_spots {t['find_spots']:.1f} s, "
              f"index ({INDEX_METHOD}) {t['index']:.1f} s, refine {t['refine']:.1f} s, all "
              f"{t['total']:.1f} s (nproc=1, process starts included)"]
    for label, h in (("hklflow f1", h1), ("hklflow f1+f2", h2)):
        lines.append(f"  {label}: {h['n_peaks']} strong peaks, indexed {h['fraction_indexed']:.3f}, "
                     f"{h['n_used']} used, {h['n_parameters']} parameters; rms {h['rms_px']:.4f} px, "
                     f"{h['rms_frames']:.4f} frames; index_parent {h['seconds']:.2f} s")
    lines.append("  hklflow peak search on the CBF frames: "
                 + ", ".join(f"{k} {v:.1f} s" for k, v in c["search_seconds"].items())
                 + f"; simulation {c['simulate_seconds']:.1f} s")
    # orientation: DIALS's A (dxtbx lab, mirrored) mapped back to hklflow's lab
    UB_true = np.array(truth["UB"])
    B_true, ops = np.array(truth["B"]), crystal.laue_operators
    o_d = orientation_error(di.hklflow_ub_from_dials(d["A"]), UB_true, B_true, ops)
    o_h = orientation_error(h1["UB"], UB_true, B_true, ops)
    o_h2 = orientation_error(h2["UB"], UB_true, B_true, ops)
    o_naive = orientation_error(d["A"], UB_true, B_true, ops)  # DIALS's A taken as is
    lines.append(f"  orientation vs truth (Laue-equivalent, deg): DIALS f1 {o_d:.1e} (via -M^T A), "
                 f"hklflow f1 {o_h:.1e}, f1+f2 {o_h2:.1e} (DIALS's A without the mapping: {o_naive:.1f})")
    print("\n".join(lines))

    # DIALS refined what its defaults say: detector 6, beam 1, orientation 3, the free cell
    assert d["n_parameters"] == 10 + len(free)
    # the cell esds from B_covariance are the ones DIALS prints (to its rounding)
    for i in free:
        assert d["cell_esd"][i] == pytest.approx(d["cell_esd_printed"][i], rel=0.35)
        assert d["cell"][i] == pytest.approx(d["cell_printed"][i], abs=d["cell_esd_printed"][i])
    assert d["n_indexed"] >= 0.95 * d["n_strong"]
    assert d["n_refined"] >= 0.4 * d["n_indexed"]
    assert d["rmsd"]["x_px"] < 0.2 and d["rmsd"]["y_px"] < 0.2 and d["rmsd"]["z_images"] < 0.2
    assert h1["fraction_indexed"] >= 0.95 and h2["fraction_indexed"] >= 0.95
    # the cells agree within their combined uncertainty ...
    assert max(ag1.values()) < N_SIGMA, ag1
    assert max(ag2.values()) < N_SIGMA, ag2
    # ... and are all close to the truth
    for _, cell, _ in rows:
        for i in free:
            assert abs(cell[i] / true_cell[i] - 1) < TRUTH_REL, (name, i, cell)
    # the fixed angles are the space group's
    for i in set(range(3, 6)) - set(free):
        assert d["cell"][i] == pytest.approx(true_cell[i], abs=1e-6)
    # orientation: the mirror mapping of the module docstring holds
    assert o_d < 0.01 and o_h < 0.01 and o_h2 < 0.01
    assert o_naive > 1.0


@pytest.mark.dials
@pytest.mark.skipif(_WHY is not None, reason=f"DIALS not usable: {_WHY}")
def test_dials_index_failure_names_the_command(comparisons, tmp_path):
    """A cell that does not fit the space group: DialsError naming dials.index, with its log."""
    files = sorted(glob.glob(comparisons["tiny_hexagonal"]["f1_pattern"]))[:3]
    with pytest.raises(di.DialsError, match=r"dials\.index") as exc:
        di.run_dials_index_refine(files, tmp_path / "w", space_group="P 63/m m c",
                                  unit_cell=(5.0, 6.0, 7.0, 90, 90, 90), index_method=INDEX_METHOD)
    print(f"\n[DialsError] {exc.value}")
