"""Accuracy of a reduced simulated experiment against its truth.

    python bench/accuracy.py [EXPERIMENT_DIR]     (default: the repository root, i.e. the demo)

Run after the workflow (e.g. `hklflow demo`).  Prints, for the outputs the workflow wrote:
calibration errors (distance, direct-beam position, tilts), peak search recall / unmatched
peaks / centroid errors per scan (simulation/compare.py), and orientation errors per
temperature (cell, angles, orientation up to the Laue group, detector distance, beam
centre, fraction indexed, RMS residuals, and how far the refined geometry of each entry puts
the truth's strong reflections from where they diffract); the detector every temperature
shares (where it comes from, its distance against the truth) and the thermal expansion
between every two temperatures (the difference of their cells against the truth's, in units
of its esd: model.shared_detector.difference_covariance); and the reciprocal-space volumes per temperature
(simulation/compare.py, volumes_against_truth): the strong truth reflections (I/sigma > 10)
found at their integer (H, K, L) in the merged volume (fraction within half a voxel, RMS and
worst offsets), the significance of the systematically absent nodes, the satellite contrast
against the model (present below the transition temperature only) and the unmeasured-voxel
fraction in the detector's Q range, merged versus each single entry; and the 3D-DeltaPDF at
the lattice vectors |u|, |v| <= 3, |w| <= 1 against the satellites' analytic DeltaPDF (signs,
amplitude, residual; at temperatures without satellites its size against its noise and
against the total PDF's lattice peaks: simulation/compare.py, pdf_against_truth).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from hklflow.algorithms.orientation.refinement import predict
from hklflow.files.orientation import read_orientation_file
from hklflow.files.peaks import read_peaks_file
from hklflow.files.scan import read_scan_file
from hklflow.model.crystal import CELL_NAMES
from hklflow.model.geometry import DetectorGeometry
from hklflow.model.shared_detector import difference_covariance
from hklflow.planning.config import load_experiment
from hklflow.simulation.compare import (match_peaks, orientation_error, pdf_against_truth,
                                        volumes_against_truth)


def truth_predicted(res, exp, truth, rec) -> str:
    """RMS (pixels, frames) between where the refined geometry of each entry of a
    temperature predicts the truth's strong reflections (I/sigma > 10) and where they are."""
    d2, dz2 = [], []
    for s in exp.scans_of(rec.sample, rec.temperature_label):
        scan = res / s.sample / s.temperature_label / s.entry / "scan.nxs"
        t = truth["scans"].get(s.id)
        if t is None or not scan.exists():
            continue
        sg = read_scan_file(scan).geometry(rec)
        r = {k: np.asarray(v) for k, v in t["reflections"].items()}
        ok = r["i_over_sigma"] > 10
        hkl = np.stack([r["h"], r["k"], r["l"]], 1)[ok]
        best = None
        for R in rec.crystal().laue_operators:  # (the refined setting: up to the Laue group)
            cx, cy, cz = predict(hkl @ np.asarray(R), sg, sg.angles.angle(r["frame"][ok]))
            dxy = (cx - r["col"][ok]) ** 2 + (cy - r["row"][ok]) ** 2
            if best is None or np.nanmean(dxy) < np.nanmean(best[0]):
                best = (dxy, (cz - r["frame"][ok]) ** 2)
        d2.append(best[0])
        dz2.append(best[1])
    if not d2:
        return "- (no truth)"
    return (f"{np.sqrt(np.nanmean(np.concatenate(d2))):.4f} px "
            f"{np.sqrt(np.nanmean(np.concatenate(dz2))):.4f} frames")


def shared_and_expansion(name, records, truth) -> None:
    """The detector the sample's temperatures share, and the thermal expansion between
    every two of them against the truth."""
    if not records:
        return
    first = next(iter(records.values()))
    shared = first.shared_detector
    if shared is not None:
        t = DetectorGeometry(**next(v["geometry"] for k, v in truth["scans"].items()
                                    if k.startswith(f"{name}/") and not any(v["det_shift"])))
        esd = shared.esd()
        print(f"shared detector {name}: {shared.source}, from {len(shared.scans)} scans "
              f"({shared.n_peaks} peaks), distance {shared.detector.dist / t.dist - 1:+.1e} rel "
              f"(esd {esd['dist'] / t.dist:.1e}), rot3 "
              f"{np.degrees(shared.detector.rot3 - t.rot3):+.4f} deg")
    labels = list(records)
    temps = truth["samples"][name]["temperatures"]
    for i, a in enumerate(labels):
        for b in labels[i + 1:]:
            ra, rb = records[a], records[b]
            if ra.cell_covariance is None or rb.cell_covariance is None:
                continue
            together = ra.shared_detector == rb.shared_detector
            cov = difference_covariance(ra.cell_covariance, rb.cell_covariance, together)
            parts = []
            for k, n in enumerate(ra.cell_covariance.names):
                j = CELL_NAMES.index(n)
                scale = ra.cell[j] if j < 3 else 1.0
                found = (ra.cell[j] - rb.cell[j]) / scale
                err = found - (temps[a]["cell"][j] - temps[b]["cell"][j]) / scale
                sd = float(np.sqrt(cov[k, k])) / scale
                parts.append(f"{n} {found:+.3e} error {err:+.1e} (esd {sd:.1e}, {err / sd:+.1f} esd)")
            print(f"expansion {name}/{a}-{b} ({'one detector' if together else 'two detectors'}): "
                  + "; ".join(parts))


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    exp_dir = Path(argv[0] if argv else Path(__file__).resolve().parents[1])
    truth = json.loads((exp_dir / "truth.json").read_text())
    exp = load_experiment(exp_dir / "config" / "config.yaml", base_dir=exp_dir)
    res = exp_dir / "results"

    print(f"== {exp_dir} ({exp.name})")
    for name in exp.calibrations:
        poni = res / "calibration" / name / "geometry.poni"
        if not poni.exists():
            continue
        g = DetectorGeometry.from_poni_file(poni, exp.instrument.detector.name)
        t = DetectorGeometry(**truth["calibration_geometry"])
        db = np.subtract(g.direct_beam_pixel(), t.direct_beam_pixel())
        print(f"calibration {name}: distance {g.dist / t.dist - 1:+.2e} rel, direct beam "
              f"({db[0]:+.3f}, {db[1]:+.3f}) px, rot1 {np.degrees(g.rot1 - t.rot1):+.4f} deg, "
              f"rot2 {np.degrees(g.rot2 - t.rot2):+.4f} deg (rot3 is not seen by powder rings: "
              f"true {np.degrees(t.rot3):.3f} deg, calibrated {np.degrees(g.rot3):.3f})")

    tot = np.zeros(4)
    dxy, dz = [], []
    for s in exp.scans:
        f = res / s.sample / s.temperature_label / s.entry / "peaks.nxs"
        if not f.exists():
            continue
        m = match_peaks(read_peaks_file(f).peaks, truth["scans"][s.id])
        print(f"peaks {s.id}: {m.summary()}")
        tot += [m.n_truth_measurable, m.n_found_measurable, m.n_peaks, m.n_peaks_unmatched]
        dxy.append(m.median_abs_dxy_px)
        dz.append(m.median_abs_dz_frames)
    if tot[0]:
        print(f"peaks, all scans: recall {tot[1] / tot[0]:.4f} ({int(tot[1])}/{int(tot[0])} with I/sigma > 10,"
              f" away from gaps), unmatched {tot[3] / tot[2]:.4f} ({int(tot[3])}/{int(tot[2])}), "
              f"median |d| per scan <= {max(dxy):.3f} px, {max(dz):.3f} frames")

    for name in exp.samples:
        records = {}
        for tl in exp.temperatures_of(name):
            f = res / name / tl / "orientation.nxs"
            if not f.exists():
                continue
            r = records[tl] = read_orientation_file(f)
            t = truth["samples"][name]["temperatures"][tl]
            cell, tc = np.array(r.cell), np.array(t["cell"])
            geom = DetectorGeometry(**next(v["geometry"] for k, v in truth["scans"].items()
                                           if k.startswith(f"{name}/{tl}/") and not any(v["det_shift"])))
            bc = np.subtract(r.detector.direct_beam_pixel(), geom.direct_beam_pixel())
            st = r.statistics
            print(f"orientation {name}/{tl} (from {r.parent}): cell {np.abs(cell[:3] / tc[:3] - 1).max():.1e} rel "
                  f"(esd {max(np.array(r.cell_esd[:3]) / cell[:3]):.1e}), angles {np.abs(cell[3:] - tc[3:]).max():.4f} deg, "
                  f"orientation {orientation_error(r.UB, np.array(t['UB']), np.array(t['B']), r.crystal().laue_operators):.4f} deg, distance "
                  f"{r.detector.dist / geom.dist - 1:+.1e} rel, beam centre {np.hypot(*bc):.3f} px, rot3 "
                  f"{np.degrees(r.detector.rot3 - geom.rot3):+.4f} deg, indexed {st['fraction_indexed']:.1%}, "
                  f"rms {st['rms_px']:.3f} px {st['rms_frames']:.3f} frames {st['rms_hkl']:.4f} hkl, "
                  f"{int(st['n_used'])} peaks, truth predicted within "
                  f"{truth_predicted(res, exp, truth, r)}, {st['seconds']:.1f} s")
        shared_and_expansion(name, records, truth)

    for name in exp.samples:
        for tl in exp.temperatures_of(name):
            if not (res / name / tl / "transform.nxs").exists():
                continue
            try:
                print(volumes_against_truth(res, truth, name, tl).summary())
            except ValueError as exc:  # the volume's orientation is not the truth's
                print(f"volumes {name}/{tl}: {exc}")
            if (res / name / tl / "pdf.nxs").exists() and (res / name / tl / "total_pdf.nxs").exists():
                print(f"pdf {name}/{tl} {pdf_against_truth(res, truth, name, tl).summary()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
