"""Compare a peak list with the truth of a simulated scan (tests and benchmarks).

A truth reflection is *measurable* when its I/sigma (truth column i_over_sigma: summation
over +-2 sigma boxes) is above a limit and it lies at least `edge_px` pixels from module gaps
and detector edges and its rotation profile lies inside the scan.  A peak matches a truth
reflection within `tol_px` pixels and `tol_frames` frames.  A peak whose centroid is farther
from every reflection still corresponds to one when a reflection lies inside its bounding box
(+-2 pixels/frames, the reflection's frame clipped to the scan): a spot cut by a module gap or
by the end of the scan has a centroid shifted towards what remains of it.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class PeakMatch:
    n_truth_measurable: int
    n_found_measurable: int
    n_peaks: int
    n_peaks_unmatched: int
    n_split: int  # measurable truth reflections matched by more than one peak
    median_dx_px: float
    median_dy_px: float
    median_dz_frames: float
    median_abs_dxy_px: float
    median_abs_dz_frames: float

    @property
    def recall(self) -> float:
        return self.n_found_measurable / max(self.n_truth_measurable, 1)

    @property
    def unmatched_fraction(self) -> float:
        return self.n_peaks_unmatched / max(self.n_peaks, 1)

    def summary(self) -> str:
        return (f"recall {self.recall:.4f} ({self.n_found_measurable}/{self.n_truth_measurable} "
                f"measurable), unmatched peaks {self.unmatched_fraction:.4f} "
                f"({self.n_peaks_unmatched}/{self.n_peaks}), split {self.n_split}, median |d| "
                f"{self.median_abs_dxy_px:.3f} px (x {self.median_dx_px:+.3f}, y {self.median_dy_px:+.3f}), "
                f"{self.median_abs_dz_frames:.3f} frames ({self.median_dz_frames:+.3f})")


def match_peaks(peaks: dict, truth_scan: dict, *, min_i_over_sigma=10.0, edge_px=3.0,
                tol_px=2.0, tol_frames=2.0) -> PeakMatch:
    from scipy.spatial import cKDTree

    r = {k: np.asarray(v) for k, v in truth_scan["reflections"].items()}
    nf = truth_scan["nframes"]
    tz = r["frame"]
    measurable = ((r["i_over_sigma"] > min_i_over_sigma) & (r["gap_distance_px"] >= edge_px)
                  & (tz - 2 * r["sigma_frame"] >= 0) & (tz + 2 * r["sigma_frame"] <= nf))
    truth_pts = np.stack([r["col"], r["row"], tz * (tol_px / tol_frames)], axis=1)
    px, py, pz = (np.asarray(peaks[k]) for k in ("observed_px_x", "observed_px_y", "observed_frame"))
    peak_pts = np.stack([px, py, pz * (tol_px / tol_frames)], axis=1)
    n_peaks = len(px)
    if n_peaks == 0:
        return PeakMatch(int(measurable.sum()), 0, 0, 0, 0, *(np.nan,) * 5)
    # peaks -> nearest truth (any intensity): unmatched peaks are false detections
    tree_t = cKDTree(truth_pts)
    d_pt, i_pt = tree_t.query(peak_pts, distance_upper_bound=tol_px * 1.5)
    ok_p = np.isfinite(d_pt) & (np.abs(px - r["col"][np.minimum(i_pt, len(tz) - 1)]) <= tol_px) \
        & (np.abs(py - r["row"][np.minimum(i_pt, len(tz) - 1)]) <= tol_px) \
        & (np.abs(pz - tz[np.minimum(i_pt, len(tz) - 1)]) <= tol_frames)
    # centroid too far: does a reflection lie inside the peak's bounding box?
    bb = np.asarray(peaks["bounding_box"])
    zc = np.clip(tz, 0, nf - 1e-9)
    for k in np.flatnonzero(~ok_p):
        r0, r1, c0, c1, f0, f1 = bb[k]
        inside = ((r["row"] >= r0 - 2) & (r["row"] <= r1 + 2) & (r["col"] >= c0 - 2)
                  & (r["col"] <= c1 + 2) & (zc >= f0 - 2) & (zc <= f1 + 2))
        ok_p[k] = inside.any()
    n_unmatched = int((~ok_p).sum())
    # measurable truth -> peaks assigned to it
    near = np.isfinite(d_pt)
    assigned = np.bincount(i_pt[ok_p & near], minlength=len(tz))
    found = measurable & (assigned > 0)
    split = measurable & (assigned > 1)
    # centroid errors of the nearest peak of each found measurable reflection
    tree_p = cKDTree(peak_pts)
    _, j = tree_p.query(truth_pts[found])
    dx = px[j] - r["col"][found]
    dy = py[j] - r["row"][found]
    dz = pz[j] - tz[found]
    return PeakMatch(int(measurable.sum()), int(found.sum()), n_peaks, n_unmatched, int(split.sum()),
                     float(np.median(dx)), float(np.median(dy)), float(np.median(dz)),
                     float(np.median(np.hypot(dx, dy))), float(np.median(np.abs(dz))))


def _nearest_rotation(M):
    u, _, vt = np.linalg.svd(M)
    return u @ vt


def orientation_error(UB, UB_true, B, laue_operators) -> float:
    """Smallest rotation (deg) between the orientations of UB and UB_true over the Laue
    group's equivalent settings (UB_true R^T for the operators R acting on hkl rows, h' = h R).
    Both are made rotations with the same B (the true cell's; the cells differ by ~1e-4) and a
    polar decomposition; the angle comes from the Frobenius distance, which keeps precision
    below 1e-6 deg where the arccos of a trace does not."""
    Binv = np.linalg.inv(np.asarray(B))
    U = _nearest_rotation(np.asarray(UB) @ Binv)
    best = 180.0
    for R in laue_operators:
        Ut = _nearest_rotation(np.asarray(UB_true) @ np.asarray(R).T.astype(float) @ Binv)
        if np.linalg.det(Ut) < 0:
            continue  # improper settings: U is a rotation
        d = np.linalg.norm(U - Ut) / (2 * np.sqrt(2))
        best = min(best, float(np.degrees(2 * np.arcsin(min(d, 1.0)))))
    return best
