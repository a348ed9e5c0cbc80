"""Accuracy of a reduced simulated experiment against its truth.

    python bench/accuracy.py [EXPERIMENT_DIR]     (default: the repository root, i.e. the demo)

Run after the workflow (e.g. `hklflow demo`).  Prints, for the outputs the workflow wrote:
calibration errors (distance, direct-beam position, tilts), peak search recall / unmatched
peaks / centroid errors per scan (simulation/compare.py), and orientation errors per
temperature (cell, angles, orientation up to the Laue group, detector distance, beam
centre, fraction indexed, RMS residuals); and the reciprocal-space volumes per temperature
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

from hklflow.files.orientation import read_orientation_file
from hklflow.files.peaks import read_peaks_file
from hklflow.model.geometry import DetectorGeometry
from hklflow.planning.config import load_experiment
from hklflow.simulation.compare import (match_peaks, orientation_error, pdf_against_truth,
                                        volumes_against_truth)


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
        for tl in exp.temperatures_of(name):
            f = res / name / tl / "orientation.nxs"
            if not f.exists():
                continue
            r = read_orientation_file(f)
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
                  f"{int(st['n_used'])} peaks, {st['seconds']:.1f} s")

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
