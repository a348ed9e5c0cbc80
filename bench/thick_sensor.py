#!/usr/bin/env python
"""Thick sensors and calibration at high energy (issue 80): what instrument.detector.sensor
corrects, what the powder calibration accepts, and what the correction costs.

    python bench/thick_sensor.py [--parts calibration,sensor,cost] [--workdir DIR]
                                 [--frames 180] [--repeats 5] [--quick] [--json FILE]

calibration: clean simulated calibrant images on a Pilatus CdTe 1M (at 0.65 m with the beam
near a corner: rings out to 2theta = 19 deg; at 20 keV 0.2 m, the beam near the centre) at
20, 60 and 87 keV, CeO2 and LaB6, pyFAI's (fake_calibration_image: 0.1 deg rings, no noise)
and hklflow's (simulation.powder: 0.03 deg rings, Poisson noise), and hklflow's with 0.1
deg rings (the points' RMS beyond the old 0.289 px bound); then a 1 mm CdTe sensor at 87 keV
calibrated without and with instrument.detector.sensor.  Per image: distance (relative)
and direct-beam errors (px) against the truth, rings used, their smallest spacing (px),
the points' RMS residual, and the rings' misfit against its bound (the acceptance rule,
algorithms.calibration.ring_misfit).

sensor: the 'thick_sensor' simulation (CdTe 1 mm at 87 keV, spots out to 2theta = 20 deg;
simulation.experiment.preset; --frames per entry) reduced by the workflow up to its
orientation, with and without instrument.detector.sensor, in three set-ups: the calibrant
at 87 keV and the detector refined on the peaks (detector_from parent, the default); the
calibrant at 87 keV and the detector fixed at the calibration's (detector_from none, as
NXRefine); the calibrant at 60 keV (its image simulated and calibrated here, with or
without the sensor, its PONI imported with poni_mismatch wavelength use_config) and the
detector fixed.  Per case: the cell's error against the truth (a, c), its esd, the distance
error, and at the detector's edge (2theta >= 17 deg) the peaks' radial residual after the
refinement (observed - predicted, mean and RMS, px) and the refined model's prediction of
the truth's strong reflections there (mean and RMS radial error, px).

cost: the transform's per-pixel table (algorithms.transform.pixels.pixel_table) on a
Pilatus CdTe 300k and 2M, without and with a sensor: CPU seconds, the best of --repeats;
and what looking mu up costs a job (pyFAI's tables, then the cache folder).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import yaml
from common import machine_info, machine_line

REPO = Path(__file__).resolve().parents[1]
DEFAULT_WORKDIR = REPO / "bench" / ".data" / "thick_sensor"
PX = 172e-6
HC = 12.398419843320026
CDTE = {"material": "CdTe", "thickness": 1e-3}
EDGE_DEG = 17.0  # "the detector's edge": 2theta from here to the corner (~20 deg)


def say(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------
# calibration
# --------------------------------------------------------------------------------------
def he_geometry(kev: float, sensor=None):
    from hklflow.model.geometry import DetectorGeometry

    place = (dict(dist=0.2, poni1=521.5 * PX, poni2=490.5 * PX) if kev < 40
             else dict(dist=0.65, poni1=90.3 * PX, poni2=110.6 * PX))
    return DetectorGeometry("PilatusCdTe1M", **place, rot1=math.radians(0.2),
                            rot2=math.radians(-0.15), wavelength=HC / kev, sensor=sensor)


def calibrant_image(true, calibrant: str, simulator: str, fwhm: float | None = None):
    from hklflow.simulation.powder import simulate_calibrant_image

    if simulator == "pyfai":
        from pyFAI.calibrant import CALIBRANT_FACTORY

        cal = CALIBRANT_FACTORY(calibrant)
        cal.wavelength = true.wavelength * 1e-10
        image = cal.fake_calibration_image(true.to_pyfai(), Imax=1000.0, Imin=10.0)
        image[true.detector_mask()] = -1
        return image
    kw = {} if fwhm is None else {"ring_fwhm_deg": fwhm}
    return simulate_calibrant_image(true, calibrant, np.random.default_rng(1), **kw)


def calibrate(image, true, calibrant: str, sensor=None, max_rms_px=None):
    from hklflow.algorithms.calibration import refine_geometry
    from hklflow.settings.params import CalibrationParams

    start = {"dist": true.dist * 1.03, "poni1": true.poni1 + 10 * PX,
             "poni2": true.poni2 - 10 * PX, "rot1": 0.0, "rot2": 0.0, "rot3": 0.0}
    params = CalibrationParams(
        name="bench", calibrant=calibrant, image="simulated", dataset="/entry/data/data",
        frame=0, poni=None, start=start, refine=("dist", "poni1", "poni2", "rot1", "rot2", "rot3"),
        max_rings=None, detector=true.detector, wavelength=true.wavelength,
        polarization_fraction=0.99, max_rms_px=max_rms_px, sensor=sensor)
    return refine_geometry(image, params)


def calibration_row(label: str, res, true, seconds: float) -> dict:
    g, bt = res.geometry.beam_centre(), true.beam_centre()
    m = res.misfit
    return {"case": label, "dist_rel": res.geometry.dist / true.dist - 1.0,
            "beam_px": max(abs(g["direct_beam_row"] - bt["direct_beam_row"]),
                           abs(g["direct_beam_col"] - bt["direct_beam_col"])),
            "rings": len(res.rings), "min_spacing_px": m.min_spacing_px, "rms_px": res.rms_px,
            "misfit_px": m.misfit_px, "bound_px": m.bound_px, "seconds": seconds}


def part_calibration(args) -> list[dict]:
    from hklflow.base.errors import CalibrationError

    cases = [(kev, cal, sim, None) for kev in (20, 60, 87) for cal in ("CeO2", "LaB6")
             for sim in ("pyfai", "hklflow")] + [(87, "CeO2", "hklflow", 0.1),
                                                   (87, "LaB6", "hklflow", 0.1)]
    if args.quick:
        cases = [(87, "CeO2", "pyfai", None)]
    rows = []
    for kev, cal, sim, fwhm in cases:
        true = he_geometry(kev)
        label = f"{kev} keV {cal} {sim}" + (f" {fwhm:g} deg" if fwhm else "")
        t0 = time.process_time()
        try:
            res = calibrate(calibrant_image(true, cal, sim, fwhm), true, cal)
        except CalibrationError as exc:
            rows.append({"case": label, "refused": str(exc)})
            say(f"{label}: refused: {exc}")
            continue
        rows.append(calibration_row(label, res, true, time.process_time() - t0))
        say(f"{label}: done")
    # a thick sensor: CdTe 1 mm at 87 keV
    true = he_geometry(87, sensor=CDTE)
    image = calibrant_image(true, "CeO2", "hklflow")
    for sensor in (None, CDTE):
        t0 = time.process_time()
        res = calibrate(image, true, "CeO2", sensor=sensor)
        rows.append(calibration_row(f"87 keV CeO2 CdTe 1 mm, sensor {'set' if sensor else 'not set'}",
                                    res, true, time.process_time() - t0))
    return rows


# --------------------------------------------------------------------------------------
# sensor: the thick_sensor simulation reduced to its orientation
# --------------------------------------------------------------------------------------
def simulated(workdir: Path, frames: int) -> Path:
    from hklflow.simulation.experiment import preset, simulate_experiment

    sim = workdir / f"sim_{frames}f"
    if not (sim / "truth.json").exists():
        say(f"simulating thick_sensor ({frames} frames per entry) into {sim}")
        simulate_experiment(replace(preset("thick_sensor"), nframes=frames), sim, overwrite=True)
    return sim


def calibrant_60kev_poni(sim: Path, workdir: Path, sensor) -> Path:
    """The thick_sensor detector's calibrant image at 60 keV (with its sensor), calibrated
    with or without instrument.detector.sensor: the PONI a user imports."""
    from hklflow.model.geometry import DetectorGeometry

    truth = json.loads((sim / "truth.json").read_text())
    true = replace(DetectorGeometry(**truth["calibration_geometry"]), wavelength=HC / 60.0)
    path = workdir / f"ceo2_60keV_{'sensor' if sensor else 'plain'}.poni"
    if not path.exists():
        image = calibrant_image(true, "CeO2", "hklflow")
        res = calibrate(image, true, "CeO2", sensor=sensor)
        res.geometry.write_poni(path)
    return path


def prepare_case(sim: Path, case: Path, sensor: bool, detector_from: str,
                 poni: Path | None) -> None:
    if case.exists():
        shutil.rmtree(case)
    (case / "config").mkdir(parents=True)
    shutil.copy(sim / "config" / "scans.tsv", case / "config" / "scans.tsv")
    os.symlink(sim / "raw", case / "raw")
    os.symlink(sim / "truth.json", case / "truth.json")
    cfg = yaml.safe_load((sim / "config" / "config.yaml").read_text())
    if not sensor:
        cfg["instrument"]["detector"].pop("sensor", None)
    cal = cfg["calibrations"]["ceo2"]
    if poni is not None:
        cfg["calibrations"]["ceo2"] = {"calibrant": cal["calibrant"], "poni": str(poni),
                                       "poni_mismatch": {"wavelength": "use_config"}}
    cfg.setdefault("reduction", {}).setdefault("refinement", {})["detector_from"] = detector_from
    (case / "config" / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))


def reduce_to_orientation(case: Path) -> float:
    t0 = time.monotonic()
    target = "results/lsco/300K/orientation.nxs"
    run = subprocess.run([sys.executable, "-m", "hklflow.commands.cli", "run", str(case),
                          "--cores", "2", "--", target], capture_output=True, text=True)
    if run.returncode != 0 or not (case / target).exists():
        raise RuntimeError(f"{case}: the workflow failed:\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}")
    return time.monotonic() - t0


def radial(g, rows, cols, drow, dcol):
    """The component of (drow, dcol) away from the PONI (px), and each point's 2theta (deg)."""
    plain = g.with_sensor(None)
    p_row, p_col = plain._plane_to_pixel(g.poni1, g.poni2)
    vr, vc = rows - p_row, cols - p_col
    n = np.hypot(vr, vc)
    return (drow * vr + dcol * vc) / n, np.degrees(g.two_theta_chi(rows, cols)[0])


def edge_figures(case: Path) -> dict:
    from hklflow.algorithms.orientation.refinement import predict
    from hklflow.files.orientation import read_orientation_file
    from hklflow.files.peaks import read_peaks_file
    from hklflow.files.scan import read_scan_file

    res = case / "results" / "lsco" / "300K"
    rec = read_orientation_file(res / "orientation.nxs")
    truth = json.loads((case / "truth.json").read_text())
    t = truth["samples"]["lsco"]["temperatures"]["300K"]
    obs_r, obs_t, tru_r, tru_t = [], [], [], []
    for entry in ("f1", "f2"):
        sg = read_scan_file(res / entry / "scan.nxs").geometry(rec)
        pk = read_peaks_file(res / entry / "peaks.nxs").peaks
        x, y, z = (np.asarray(pk[k], float) for k in ("observed_px_x", "observed_px_y",
                                                       "observed_frame"))
        hkl_f = sg.hkl_at(y, x, z)
        hkl = np.rint(hkl_f)
        ok = (np.abs(hkl_f - hkl).max(axis=1) < 0.1) & ~rec.crystal().is_absent(hkl.astype(int))
        cx, cy, _ = predict(hkl[ok], sg, sg.angles.angle(z[ok]))
        r, tth = radial(sg.detector, y[ok], x[ok], y[ok] - cy, x[ok] - cx)
        obs_r.append(r)
        obs_t.append(tth)
        refl = {k: np.asarray(v) for k, v in truth["scans"][f"lsco/300K/{entry}"]["reflections"].items()}
        strong = refl["i_over_sigma"] > 10
        h = np.stack([refl["h"], refl["k"], refl["l"]], 1)[strong]
        best = None
        for R in rec.crystal().laue_operators:  # (the refined setting: up to the Laue group)
            px, py, _ = predict(h @ np.asarray(R), sg, sg.angles.angle(refl["frame"][strong]))
            d = (px - refl["col"][strong]) ** 2 + (py - refl["row"][strong]) ** 2
            if best is None or np.nanmean(d) < np.nanmean(best[0]):
                best = (d, px, py)
        _, px, py = best
        r, tth = radial(sg.detector, refl["row"][strong], refl["col"][strong],
                        refl["row"][strong] - py, refl["col"][strong] - px)
        tru_r.append(r)
        tru_t.append(tth)
    obs_r, obs_t = np.concatenate(obs_r), np.concatenate(obs_t)
    tru_r, tru_t = np.concatenate(tru_r), np.concatenate(tru_t)
    edge_o, edge_t = obs_t >= EDGE_DEG, tru_t >= EDGE_DEG
    cell, tc = np.asarray(rec.cell), np.asarray(t["cell"])
    geom = next(v["geometry"] for k, v in truth["scans"].items() if not any(v["det_shift"]))
    esd = np.asarray(rec.cell_esd)
    return {"cell_a_rel": float(cell[0] / tc[0] - 1), "cell_c_rel": float(cell[2] / tc[2] - 1),
            "esd_a_rel": float(esd[0] / cell[0]), "esd_c_rel": float(esd[2] / cell[2]),
            "dist_rel": float(rec.detector.dist / geom["dist"] - 1),
            "rms_px": float(rec.statistics["rms_px"]),
            "edge_peaks": int(edge_o.sum()),
            "edge_residual_mean_px": float(np.nanmean(obs_r[edge_o])),
            "edge_residual_rms_px": float(np.sqrt(np.nanmean(obs_r[edge_o] ** 2))),
            "edge_truth_mean_px": float(np.nanmean(tru_r[edge_t])),
            "edge_truth_rms_px": float(np.sqrt(np.nanmean(tru_r[edge_t] ** 2))),
            "max_two_theta_deg": float(np.nanmax(tru_t))}


def part_sensor(args) -> list[dict]:
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    sim = simulated(workdir, args.frames)
    setups = [("87 keV calibrant, detector refined", "parent", None),
              ("87 keV calibrant, detector fixed", "none", None),
              ("60 keV calibrant, detector fixed", "none", 60)]
    if args.quick:
        setups = setups[:1]
    rows = []
    for label, detector_from, cal_kev in setups:
        for sensor in (True, False):
            name = f"{label}, sensor {'set' if sensor else 'not set'}"
            poni = (calibrant_60kev_poni(sim, workdir, CDTE if sensor else None)
                    if cal_kev == 60 else None)
            case = workdir / "cases" / name.replace(" ", "_").replace(",", "")
            prepare_case(sim, case, sensor, detector_from, poni)
            seconds = reduce_to_orientation(case)
            rows.append({"case": name, **edge_figures(case), "seconds": seconds})
            say(f"{name}: done in {seconds:.0f} s")
    return rows


# --------------------------------------------------------------------------------------
# cost: the transform's per-pixel table
# --------------------------------------------------------------------------------------
def part_cost(args) -> list[dict]:
    from hklflow.algorithms.transform.pixels import pixel_table
    from hklflow.model.geometry import DetectorGeometry

    rows = []
    detectors = ("PilatusCdTe300k",) if args.quick else ("PilatusCdTe300k", "PilatusCdTe2M")
    for det in detectors:
        best = {}
        for sensor in (None, CDTE):
            g = DetectorGeometry(det, 0.3, 0.01, 0.04, 0.002, -0.001, 0.003, wavelength=HC / 87,
                                 sensor=sensor)
            excluded = g.detector_mask()
            pixel_table(g, excluded)  # (the detector's facts and mu: made once per job)
            times = []
            for _ in range(args.repeats):
                t0 = time.process_time()
                pixel_table(g, excluded)
                times.append(time.process_time() - t0)
            best["sensor" if sensor else "none"] = (min(times), max(times))
        rows.append({"detector": det, "none_s": best["none"][0], "sensor_s": best["sensor"][0],
                     "none_spread_s": best["none"][1], "sensor_spread_s": best["sensor"][1]})
    # mu: pyFAI's tables in a fresh process, then the cache folder's file
    code = ("import time; from hklflow.model.sensor import attenuation_coefficient as a; "
            "t=time.process_time(); a('CdTe', 0.1425); print(time.process_time()-t)")
    env = dict(os.environ, HKLFLOW_CACHE_DIR=str(Path(args.workdir) / "mu_cache"))
    shutil.rmtree(env["HKLFLOW_CACHE_DIR"], ignore_errors=True)
    first, kept = (float(subprocess.run([sys.executable, "-c", code], env=env, check=True,
                                        capture_output=True, text=True).stdout) for _ in range(2))
    rows.append({"mu_lookup_first_s": first, "mu_lookup_cached_s": kept})
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--parts", default="calibration,sensor,cost")
    p.add_argument("--workdir", default=str(DEFAULT_WORKDIR))
    p.add_argument("--frames", type=int, default=180, help="frames per entry of the simulation")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--quick", action="store_true", help="one case of each part (the smoke test)")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    parts = args.parts.split(",")
    out = {"machine": machine_info(), "date": time.strftime("%Y-%m-%d")}
    print(machine_line(out["machine"]))
    if "calibration" in parts:
        out["calibration"] = part_calibration(args)
        print("\ncalibration (Pilatus CdTe 1M):  distance rel | direct beam px | rings | "
              "min spacing px | points' RMS px | misfit / bound px | CPU s")
        for r in out["calibration"]:
            if "refused" in r:
                print(f"  {r['case']:45s} refused: {r['refused']}")
                continue
            print(f"  {r['case']:45s} {r['dist_rel']:+.1e} | {r['beam_px']:.3f} | {r['rings']:3d} | "
                  f"{r['min_spacing_px']:5.1f} | {r['rms_px']:.3f} | {r['misfit_px']:.3f} / "
                  f"{r['bound_px']:.3f} | {r['seconds']:.1f}")
    if "sensor" in parts:
        out["sensor"] = part_sensor(args)
        print(f"\nthick_sensor (CdTe 1 mm, 87 keV; edge: 2theta >= {EDGE_DEG:g} deg): cell a, c rel "
              "(esd) | distance rel | rms px | edge peaks: residual mean / RMS px | truth "
              "predicted at the edge: mean / RMS px")
        for r in out["sensor"]:
            print(f"  {r['case']:58s} {r['cell_a_rel']:+.1e}, {r['cell_c_rel']:+.1e} "
                  f"({r['esd_a_rel']:.1e}) | {r['dist_rel']:+.1e} | {r['rms_px']:.3f} | "
                  f"{r['edge_peaks']}: {r['edge_residual_mean_px']:+.3f} / "
                  f"{r['edge_residual_rms_px']:.3f} | {r['edge_truth_mean_px']:+.3f} / "
                  f"{r['edge_truth_rms_px']:.3f}")
    if "cost" in parts:
        out["cost"] = part_cost(args)
        print("\npixel table (CPU s, best of repeats): without | with a sensor")
        for r in out["cost"]:
            if "detector" in r:
                print(f"  {r['detector']:16s} {r['none_s']:.3f} | {r['sensor_s']:.3f} "
                      f"(+{r['sensor_s'] - r['none_s']:.3f})")
            else:
                print(f"  mu of a sensor, once per job: {r['mu_lookup_first_s']:.2f} s from "
                      f"pyFAI's tables, {r['mu_lookup_cached_s']:.3f} s from the cache folder")
    text = json.dumps(out, indent=1, default=float)
    if args.json:
        Path(args.json).write_text(text)
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
