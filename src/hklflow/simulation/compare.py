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

import math
from dataclasses import dataclass
from pathlib import Path

import hdf5plugin
import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree
from scipy.stats import norm

from ..algorithms.pdf.fft import fft_crop
from ..algorithms.pdf.taper import tukey_taper
from ..files.h5 import open_h5
from ..files.pdf import read_pdf
from ..files.volume import read_volume
from ..model.crystal import Crystal, UnitCell
from ..model.geometry import DetectorGeometry
from ..model.grid import Axis, Grid


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


# --------------------------------------------------------------------------------------
# Reciprocal-space volumes against the truth (issue 5)
#
# Volumes are read with hklflow.files.volume.read_volume: arrays [l, k, h], intensity = signal /
# weight (corrected counts per pixel-frame), weight 0 = unmeasured.  Voxel indices below are
# (ih, ik, il).  The noise of a voxel is estimated from its surroundings: Poisson counts give
# var(I) ~ c I / w (c the mean correction, w the voxel's weight), so (I - bg) sqrt(w) has a
# spread s common to a neighbourhood (its robust standard deviation over a shell of voxels),
# and sigma(I) = s / sqrt(w) for each voxel.
# --------------------------------------------------------------------------------------
def _cube(a: np.ndarray, ijk, r: int):
    """a[l, k, h] around voxel ijk = (ih, ik, il) within +-r (Chebyshev), as [l, k, h];
    None when the cube leaves the grid."""
    ih, ik, il = (int(v) for v in ijk)
    nl, nk, nh = a.shape
    if ih - r < 0 or ik - r < 0 or il - r < 0 or ih + r >= nh or ik + r >= nk or il + r >= nl:
        return None
    return a[il - r:il + r + 1, ik - r:ik + r + 1, ih - r:ih + r + 1]


def _chebyshev(r: int) -> np.ndarray:
    """Chebyshev distance from the centre of a (2r+1)^3 cube, [l, k, h]."""
    o = np.abs(np.arange(-r, r + 1))
    return np.maximum(np.maximum(o[:, None, None], o[None, :, None]), o[None, None, :])


def _local_background(inten, weight, ijk, r_in: int, r_out: int, min_voxels: int = 20):
    """Background around voxel ijk from the shell r_in <= Chebyshev distance <= r_out: a
    plane I = a + b dh + c dk + d dl (offsets in voxels) fitted to the shell's measured
    voxels by least squares with weights w (inverse variance), refitted once without voxels
    beyond 4 sigma; so the steep background at low angles (air scatter) leaves no gradient
    in the excess.  Returns (bg cube [l, k, h] of the +-r_out cube, s) with s the robust
    spread of (I - bg) sqrt(w) in the shell (see above), or None when the shell leaves the
    grid or holds fewer than min_voxels measured."""
    ci = _cube(inten, ijk, r_out)
    if ci is None:
        return None
    cw = _cube(weight, ijk, r_out).astype(np.float64)
    sel = (_chebyshev(r_out) >= r_in) & (cw > 0) & np.isfinite(ci)
    if np.count_nonzero(sel) < min_voxels:
        return None
    o = np.arange(-r_out, r_out + 1, dtype=float)
    dl, dk, dh = np.meshgrid(o, o, o, indexing="ij")
    X = np.stack([np.ones_like(dh), dh, dk, dl], axis=-1)
    y = np.where(sel, ci, 0.0).astype(np.float64)
    use = sel.copy()
    for _ in range(2):
        sw = np.sqrt(cw[use])
        coef = np.linalg.lstsq(X[use] * sw[:, None], y[use] * sw, rcond=None)[0]
        bg = X @ coef
        z = (y - bg) * np.sqrt(cw)
        s = 1.4826 * float(np.median(np.abs(z[sel])))
        use = sel & (np.abs(z) <= 4.0 * max(s, 1e-12))
        if np.count_nonzero(use) < min_voxels:
            use = sel
            break
    return bg, max(s, 1e-12)


def strong_truth_reflections(truth: dict, sample: str, temperature: str, *,
                             min_i_over_sigma: float = 10.0, edge_px: float = 2.0) -> np.ndarray:
    """Integer hkl (n, 3) of the truth reflections of one sample and temperature label that
    some entry measured above min_i_over_sigma (truth column i_over_sigma), at least edge_px
    pixels from module gaps and detector edges and with their rotation profile (+-2 sigma)
    inside the scan: the union over the entries, each hkl once."""
    out = []
    for key, scan in truth["scans"].items():
        s, t, _ = key.split("/")
        if s != sample or t != temperature:
            continue
        r = {k: np.asarray(v) for k, v in scan["reflections"].items()}
        if not len(r["h"]):
            continue
        nf = scan["nframes"]
        ok = ((r["i_over_sigma"] > min_i_over_sigma) & (r["gap_distance_px"] >= edge_px)
              & (r["frame"] - 2 * r["sigma_frame"] >= 0) & (r["frame"] + 2 * r["sigma_frame"] <= nf))
        out.append(np.stack([r["h"], r["k"], r["l"]], axis=1)[ok])
    if not out:
        return np.zeros((0, 3), dtype=int)
    return np.unique(np.concatenate(out).astype(int), axis=0)


@dataclass
class BraggPositions:
    """Where the strong truth reflections appear in a volume (offsets in voxels, axes h, k, l)."""

    n_strong: int  # strong measurable truth reflections (strong_truth_reflections)
    n_checked: int  # ... whose +-2 voxel box is inside the grid, node voxel measured
    n_found: int  # ... with a significant peak (a voxel within one of the node > 5 sigma)
    n_within_half: int  # found, centroid within half a voxel of the node on every axis
    n_max_near: int  # found, most significant voxel (z) of the box the node's or a neighbour
    hkl: np.ndarray  # (n_found, 3) int
    offsets: np.ndarray  # (n_found, 3) centroid - node, voxels (h, k, l)
    steps: tuple  # voxel steps (h, k, l), r.l.u.

    @property
    def fraction_within_half(self) -> float:
        return self.n_within_half / max(self.n_found, 1)

    @property
    def rms_voxels(self) -> float:
        """RMS length of the offset vectors, in voxels."""
        return float(np.sqrt(np.mean(np.sum(self.offsets ** 2, axis=1)))) if self.n_found else np.nan

    @property
    def rms_voxels_axes(self) -> np.ndarray:
        return np.sqrt(np.mean(self.offsets ** 2, axis=0)) if self.n_found else np.full(3, np.nan)

    @property
    def mean_voxels_axes(self) -> np.ndarray:
        return np.mean(self.offsets, axis=0) if self.n_found else np.full(3, np.nan)

    @property
    def rms_rlu_axes(self) -> np.ndarray:
        return self.rms_voxels_axes * np.asarray(self.steps)

    @property
    def worst(self) -> tuple[float, tuple]:
        """(largest |offset| on any axis in voxels, its hkl)."""
        if not self.n_found:
            return np.nan, ()
        a = np.abs(self.offsets).max(axis=1)
        i = int(np.argmax(a))
        return float(a[i]), tuple(int(v) for v in self.hkl[i])

    def summary(self) -> str:
        w, whkl = self.worst
        ax = lambda v, f: "(" + ", ".join(format(x, f) for x in v) + ")"  # noqa: E731
        return (f"{self.n_found}/{self.n_checked} found of {self.n_strong} strong (I/sigma > 10), "
                f"within half a voxel {self.fraction_within_half:.4f} ({self.n_within_half}), "
                f"most significant voxel at the node or a neighbour {self.n_max_near}/{self.n_found}, "
                f"RMS offset {self.rms_voxels:.3f} voxels, per axis h,k,l {ax(self.rms_voxels_axes, '.3f')} "
                f"voxels = {ax(self.rms_rlu_axes, '.4f')} r.l.u., mean {ax(self.mean_voxels_axes, '+.3f')} "
                f"voxels, worst {w:.2f} voxels at {whkl}")


def bragg_positions(volume, hkl, *, box: int = 2, min_z: float = 5.0,
                    voxel_z: float = 3.0) -> BraggPositions:
    """Find the peak of every reflection hkl (n, 3) (in the volume's setting: see
    setting_operator) near its integer node in a volume (the merged plain `transform`).

    Background: a plane fitted to the shell box+1..box+2 voxels around the node
    (_local_background), which also gives each voxel's noise sigma_v = s sqrt(w_v) on its
    excess counts signal - bg * weight.  The peak is the set of voxels of the +-box cube with
    excess above voxel_z sigma_v connected (faces, edges, corners) to the brightest voxel
    (in z) within one voxel of the node; it is found when that voxel's z >= min_z.  The
    offset is the centroid of the peak's excess counts minus the node, in voxels: a voxel is
    much larger than a spot here, so the centroid is a weighted mean of a few voxel centres
    and is 0 when the spot's counts fall symmetrically about the node's voxel.  Also counted:
    whether the most significant voxel of the whole cube (largest z; the largest intensity
    would pick noisy voxels of tiny weight at the cube's edge) is the node's or a neighbour."""
    hkl = np.asarray(hkl, dtype=int).reshape(-1, 3)
    grid = volume.grid
    inten = volume.intensity()
    weight = volume.weight
    signal = volume.signal
    off = np.arange(-box, box + 1, dtype=float)
    n_checked = n_within = n_near = 0
    found_hkl, offsets = [], []
    cheb = _chebyshev(box)
    for h in hkl:
        ijk = grid.index(h.astype(float))
        cw = _cube(weight, ijk, box)
        if cw is None or cw[box, box, box] <= 0:
            continue
        bgs = _local_background(inten, weight, ijk, box + 1, box + 2)
        if bgs is None:
            continue
        n_checked += 1
        bg, s = bgs
        bg = bg[2:-2, 2:-2, 2:-2]
        cs = _cube(signal, ijk, box).astype(np.float64)
        cw = cw.astype(np.float64)
        excess = cs - bg * cw  # counts above the background (0 where unmeasured)
        z = np.where(cw > 0, excess / (s * np.sqrt(np.maximum(cw, 1e-30))), -np.inf)
        zc = np.where(cheb <= 1, z, -np.inf)
        seed = np.unravel_index(int(np.argmax(zc)), z.shape)
        if not zc[seed] >= min_z:
            continue
        labels, _ = ndimage.label(z > voxel_z, structure=np.ones((3, 3, 3)))
        peak = labels == labels[seed]
        e = np.where(peak, excess, 0.0)
        total = e.sum()
        cl = float((e.sum(axis=(1, 2)) * off).sum() / total)
        ck = float((e.sum(axis=(0, 2)) * off).sum() / total)
        ch = float((e.sum(axis=(0, 1)) * off).sum() / total)
        d = np.array([ch, ck, cl])
        il, ik, ih = np.unravel_index(int(np.argmax(z)), z.shape)
        n_near += max(abs(il - box), abs(ik - box), abs(ih - box)) <= 1
        n_within += bool(np.all(np.abs(d) < 0.5))
        found_hkl.append(h)
        offsets.append(d)
    return BraggPositions(len(hkl), n_checked, len(offsets), n_within, n_near,
                          np.array(found_hkl, dtype=int).reshape(-1, 3),
                          np.array(offsets, dtype=float).reshape(-1, 3),
                          tuple(ax.step for ax in grid.axes))


def _integer_nodes(grid, margin_voxels: int) -> np.ndarray:
    """All integer hkl (n, 3) whose voxel lies at least margin_voxels inside the grid."""
    rng = []
    for ax in grid.axes:
        lo = math.ceil(ax.start + margin_voxels * ax.step - 1e-9)
        hi = math.floor(ax.stop - margin_voxels * ax.step + 1e-9)
        rng.append(np.arange(lo, hi + 1))
    hh, kk, ll = np.meshgrid(*rng, indexing="ij")
    hkl = np.stack([hh.ravel(), kk.ravel(), ll.ravel()], axis=1)
    return hkl[np.any(hkl != 0, axis=1)]


@dataclass
class NodeContrast:
    """Significance z = (I_node - bg) / sigma(I_node) of the node voxels of systematically
    absent reflections and of strong allowed ones (bg and sigma from a shell 2..3 voxels
    around each node)."""

    absent_hkl: np.ndarray
    absent_z: np.ndarray
    absent_rel: np.ndarray  # (I_node - bg) / bg
    allowed_z: np.ndarray  # strong allowed nodes (if given), same statistic
    allowed_rel: np.ndarray
    z_limit: float  # sqrt(2 ln N) + 2: above any Gaussian noise maximum over N absent nodes

    @property
    def n_absent(self) -> int:
        return len(self.absent_z)

    @property
    def n_peaks(self) -> int:
        return int(np.count_nonzero(self.absent_z > self.z_limit))

    def summary(self) -> str:
        a, r = self.absent_z, self.absent_rel
        worst = tuple(int(v) for v in self.absent_hkl[np.argmax(a)]) if len(a) else ()
        al = (f"; strong allowed nodes ({len(self.allowed_z)}): z median {np.median(self.allowed_z):.0f}, "
              f"min {self.allowed_z.min():.1f}, (I-bg)/bg median {np.median(self.allowed_rel):.2f}"
              if len(self.allowed_z) else "")
        return (f"absent nodes measured {self.n_absent}: z mean {a.mean():+.2f} sd {a.std():.2f} "
                f"max {a.max():.2f} at {worst} (limit {self.z_limit:.2f}, above it {self.n_peaks}); "
                f"(I-bg)/bg max {r.max():+.3f}" + al) if len(a) else "no absent nodes measured"


def _node_z(volume, inten, hkl):
    z, rel, used = [], [], []
    for h in hkl:
        ijk = volume.grid.index(np.asarray(h, float))
        c = _cube(volume.weight, ijk, 0)
        if c is None or c[0, 0, 0] <= 0:
            continue
        bgs = _local_background(inten, volume.weight, ijk, 2, 3)
        if bgs is None:
            continue
        bg, s = bgs
        bg = float(bg[3, 3, 3])
        il_, ik_, ih_ = ijk[2], ijk[1], ijk[0]
        i0 = float(inten[il_, ik_, ih_])
        z.append((i0 - bg) * math.sqrt(float(volume.weight[il_, ik_, ih_])) / s)
        rel.append((i0 - bg) / bg if bg > 0 else np.nan)
        used.append(h)
    return np.array(z), np.array(rel), np.array(used, dtype=int).reshape(-1, 3)


def absent_nodes(volume, crystal, strong_hkl=None) -> NodeContrast:
    """Node-voxel significance of every systematically absent integer node (crystal.is_absent)
    measured in the volume, and of the strong allowed reflections strong_hkl for comparison.
    The simulation puts neither Bragg intensity nor thermal diffuse scattering at absent nodes,
    so their z is noise (plus slow background variation): none may exceed z_limit."""
    inten = volume.intensity()
    nodes = _integer_nodes(volume.grid, 3)
    absent = nodes[crystal.is_absent(nodes)]
    z, rel, used = _node_z(volume, inten, absent)
    if strong_hkl is not None and len(strong_hkl):
        za, rela, _ = _node_z(volume, inten, np.asarray(strong_hkl, int).reshape(-1, 3))
    else:
        za, rela = np.zeros(0), np.zeros(0)
    lim = math.sqrt(2.0 * math.log(max(len(z), 2))) + 2.0
    return NodeContrast(used, z, rel, za, rela, lim)


@dataclass
class DiffuseContrast:
    """Satellite intensity at (n+1/2, m+1/2, l) minus the mean of its four control positions
    (n+1/2, m, l), (n+1/2, m+1, l), (n, m+1/2, l), (n+1, m+1/2, l): half a r.l.u. from the
    satellite and half from the nearest nodes, beyond the simulation's satellite and thermal
    diffuse terms, so a difference of background only where no satellite exists."""

    n_positions: int
    contrast: float  # mean difference, corrected counts per pixel-frame
    stderr: float
    background: float  # mean control intensity
    predicted: float  # the model's value at the satellite voxels (0 where none exist)
    centroid_voxels: tuple  # (dh, dk) centroid of the mean satellite profile (+-2 voxels)

    @property
    def significance(self) -> float:
        return self.contrast / self.stderr if self.stderr > 0 else np.nan

    def summary(self) -> str:
        return (f"satellites {self.n_positions} positions: contrast {self.contrast:+.4f} +- "
                f"{self.stderr:.4f} ({self.significance:+.1f} sigma; model {self.predicted:.4f}, "
                f"ratio {self.contrast / self.predicted if self.predicted else np.nan:.3f}) on a "
                f"background of {self.background:.3f}; profile centroid (h, k) "
                f"({self.centroid_voxels[0]:+.3f}, {self.centroid_voxels[1]:+.3f}) voxels")


def satellite_model(truth: dict, sample: str, temperature: float, grid) -> float:
    """The satellite intensity the simulation puts at a satellite voxel of grid, as corrected
    intensity: amplitude x min(1, max(0, (Tc - T) / (Tc / 2))) (the render_scan formula; the
    counts it adds are amplitude x solid angle x polarization, which the transform divides
    out) x the Gaussian averaged over the voxel centred nearest (1/2, 1/2, 0)."""
    sim = truth["simulation"]
    tc = truth["diffuse_model"]["satellites"]["present_below_K"][sample]
    amp = sim["satellite_amplitude"] * min(1.0, max(0.0, (tc - temperature) / (0.5 * tc)))
    f = 1.0
    for ax, x0, sig in ((grid.h, 0.5, sim["satellite_sigma_hk"]),
                        (grid.k, 0.5, sim["satellite_sigma_hk"]), (grid.l, 0.0, sim["satellite_sigma_l"])):
        c = ax.start + int(ax.index(x0)) * ax.step
        a, b = (c - ax.step / 2 - x0) / sig, (c + ax.step / 2 - x0) / sig
        f *= (norm.cdf(b) - norm.cdf(a)) * sig * math.sqrt(2 * math.pi) / ax.step
    return amp * f


def diffuse_contrast(volume, predicted: float = 0.0, profile: int = 2) -> DiffuseContrast:
    """Contrast of the satellites at (n+1/2, m+1/2, integer l) over every such position whose
    voxel and at least two control voxels were measured (see DiffuseContrast).  Voxels differ
    a lot in weight (pixel-frames summed: few at the edge of the measured region), so the
    positions are averaged with inverse-variance weights, var ~ 1/w_sat + mean over the
    controls of 1/w / n_controls (Poisson: var(I) ~ I / w, I about the same everywhere), and
    the standard error comes from the scatter of the differences about that mean."""
    grid = volume.grid
    inten = volume.intensity().astype(np.float64)
    wvol = volume.weight
    nl, nk, nh = grid.shape
    nodes = _integer_nodes(grid, 0)
    nodes = np.concatenate([nodes, np.zeros((1, 3), int)])
    n, m, l = nodes[:, 0], nodes[:, 1], nodes[:, 2]  # noqa: E741

    def look(h, k, ll):
        idx = grid.index(np.stack([h, k, ll], axis=1).astype(float))
        ok = grid.contains(idx)
        v = np.full(len(h), np.nan)
        w = np.zeros(len(h))
        v[ok] = inten[idx[ok, 2], idx[ok, 1], idx[ok, 0]]
        w[ok] = wvol[idx[ok, 2], idx[ok, 1], idx[ok, 0]]
        return v, w, idx

    sat, wsat, sidx = look(n + 0.5, m + 0.5, l)
    ctrls = [look(n + 0.5, m + 0.0, l), look(n + 0.5, m + 1.0, l),
             look(n + 0.0, m + 0.5, l), look(n + 1.0, m + 0.5, l)]
    ctrl = np.stack([c[0] for c in ctrls], axis=1)
    wctrl = np.stack([c[1] for c in ctrls], axis=1)
    nctrl = np.sum(np.isfinite(ctrl), axis=1)
    use = np.isfinite(sat) & (nctrl >= 2)
    if use.sum() < 2:
        return DiffuseContrast(int(use.sum()), np.nan, np.nan, np.nan, predicted, (np.nan, np.nan))
    cmean = np.nanmean(ctrl[use], axis=1)
    diff = sat[use] - cmean
    with np.errstate(divide="ignore"):
        inv_wc = np.where(np.isfinite(ctrl[use]), 1.0 / wctrl[use], 0.0)
    var = 1.0 / wsat[use] + inv_wc.sum(axis=1) / nctrl[use] ** 2
    iw = 1.0 / var
    nuse = len(diff)
    mean = float((diff * iw).sum() / iw.sum())
    chi2 = float(((diff - mean) ** 2 * iw).sum() / (nuse - 1))
    stderr = math.sqrt(chi2 / iw.sum())
    # mean profile around the satellites in the (h, k) plane, background-subtracted
    prof = np.zeros((2 * profile + 1, 2 * profile + 1))
    cnt = np.zeros_like(prof)
    su = sidx[use]
    for a in range(-profile, profile + 1):
        for b in range(-profile, profile + 1):
            ih, ik = su[:, 0] + a, su[:, 1] + b
            ok = (ih >= 0) & (ih < nh) & (ik >= 0) & (ik < nk)
            v = inten[su[ok, 2], ik[ok], ih[ok]] - cmean[ok]
            good = np.isfinite(v)
            prof[b + profile, a + profile] = (v[good] * iw[ok][good]).sum()
            cnt[b + profile, a + profile] = iw[ok][good].sum()
    prof = prof / np.maximum(cnt, 1e-30)
    o = np.arange(-profile, profile + 1)
    tot = prof.sum()
    # the centroid only means something where there is a satellite to see
    cen = ((float((prof.sum(axis=0) * o).sum() / tot), float((prof.sum(axis=1) * o).sum() / tot))
           if tot > 0 and mean > 5.0 * stderr else (np.nan, np.nan))
    return DiffuseContrast(nuse, mean, stderr, float((cmean * iw).sum() / iw.sum()),
                           float(predicted), cen)


def q_shell_region(grid, cell, q_min: float, q_max: float) -> np.ndarray:
    """bool [l, k, h]: voxels whose |Q| = |B hkl| (1/Angstrom, no 2 pi; B of cell, a
    UnitCell or parameter list) lies in [q_min, q_max]."""
    B = (cell if isinstance(cell, UnitCell) else UnitCell(*cell)).B
    h, k, l = (ax.values for ax in grid.axes)  # noqa: E741
    q2 = np.zeros(grid.shape)
    for i in range(3):
        comp = (B[i, 0] * h[None, None, :] + B[i, 1] * k[None, :, None] + B[i, 2] * l[:, None, None])
        q2 += comp ** 2
    q = np.sqrt(q2)
    return (q >= q_min) & (q <= q_max)


def detector_q_range(truth: dict, sample: str, temperature: str) -> tuple[float, float]:
    """(Q min, Q max) in 1/Angstrom that the detector reaches in the scans of one sample and
    temperature label (the truth geometries, every pixel centre, gaps included)."""
    lo, hi = np.inf, 0.0
    for key, scan in truth["scans"].items():
        s, t, _ = key.split("/")
        if s != sample or t != temperature:
            continue
        g = DetectorGeometry(**scan["geometry"])
        tth, _ = g.two_theta_chi(*g.pixel_grid())
        q = 2.0 * np.sin(tth / 2.0) / g.wavelength
        lo, hi = min(lo, float(q.min())), max(hi, float(q.max()))
    return lo, hi


def unmeasured_fraction(volume, region: np.ndarray) -> float:
    """Fraction of the voxels of region (bool [l, k, h]) with weight 0."""
    w = volume.weight[region]
    return float(np.count_nonzero(~(w > 0))) / max(w.size, 1)


def setting_operator(UB_volume, UB_true, tol: float = 0.02) -> np.ndarray:
    """Integer matrix M with h_volume = M h_true: indexing may pick any Laue-equivalent
    setting (a 2-fold instead of the identity, ...), so truth indices are mapped to the
    volume's before comparing; M = round(UB_volume^-1 UB_true) (Q = UB h in both).
    ValueError when that is not an integer matrix within tol (then the volume's orientation
    is not the truth's in any setting)."""
    A = np.linalg.solve(np.asarray(UB_volume, float), np.asarray(UB_true, float))
    M = np.rint(A)
    if np.abs(A - M).max() > tol or abs(round(np.linalg.det(M))) != 1:
        raise ValueError(f"the volume's UB is not the true UB in an equivalent setting: "
                         f"UB_volume^-1 UB_true =\n{np.array2string(A, precision=4)}")
    return M.astype(int)


@dataclass
class VolumeTruth:
    """The four checks of one sample and temperature of a reduced simulated experiment."""

    sample: str
    temperature: str  # label, e.g. 100K
    setting: np.ndarray  # h_volume = setting @ h_true
    bragg: BraggPositions  # merged plain transform
    absent: NodeContrast  # merged plain transform
    diffuse: DiffuseContrast  # merged masked_transform (or transform when there is none)
    diffuse_kind: str
    q_range: tuple  # (Q min, Q max) 1/Angstrom of the region of unmeasured_*
    unmeasured_merged: float
    unmeasured_entries: dict  # entry -> unmeasured fraction of its own volume

    def summary(self) -> str:
        ent = ", ".join(f"{e} {v:.4f}" for e, v in self.unmeasured_entries.items())
        return "\n".join([
            f"volumes {self.sample}/{self.temperature} Bragg: {self.bragg.summary()}",
            f"volumes {self.sample}/{self.temperature} absences: {self.absent.summary()}",
            f"volumes {self.sample}/{self.temperature} diffuse ({self.diffuse_kind}): "
            f"{self.diffuse.summary()}",
            f"volumes {self.sample}/{self.temperature} unmeasured voxels for "
            f"{self.q_range[0]:.3f} <= |Q| <= {self.q_range[1]:.3f} /A: merged "
            f"{self.unmeasured_merged:.4f}, single entries {ent}"])


def volumes_against_truth(results, truth: dict, sample: str, temperature: str, *,
                          min_i_over_sigma: float = 10.0) -> VolumeTruth:
    """Read results/SAMPLE/TEMPERATURE/{transform,masked_transform}.nxs and the entry volumes
    results/SAMPLE/TEMPERATURE/ENTRY/transform.nxs (entries from the truth's scans) and
    compare them with the truth (temperature: a label such as 100K)."""
    base = Path(results) / sample / temperature
    vol = read_volume(base / "transform.nxs")
    t = truth["samples"][sample]["temperatures"][temperature]
    M = setting_operator(vol.sample["ub_matrix"], t["UB"])
    strong = strong_truth_reflections(truth, sample, temperature,
                                      min_i_over_sigma=min_i_over_sigma) @ M.T
    crystal = Crystal(truth["samples"][sample]["space_group"], UnitCell(*vol.sample["unit_cell"]))
    bragg = bragg_positions(vol, strong)
    absent = absent_nodes(vol, crystal, strong)
    kind = "masked_transform" if (base / "masked_transform.nxs").exists() else "transform"
    dvol = read_volume(base / f"{kind}.nxs") if kind != "transform" else vol
    diffuse = diffuse_contrast(dvol, satellite_model(truth, sample, t["temperature"], vol.grid))
    del dvol
    q_range = detector_q_range(truth, sample, temperature)
    region = q_shell_region(vol.grid, vol.sample["unit_cell"], *q_range)
    merged = unmeasured_fraction(vol, region)
    entries = {}
    for key in truth["scans"]:
        s, tl, e = key.split("/")
        if s == sample and tl == temperature and (base / e / "transform.nxs").exists():
            entries[e] = unmeasured_fraction(read_volume(base / e / "transform.nxs"), region)
    return VolumeTruth(sample, temperature, M, bragg, absent, diffuse, kind, q_range, merged,
                       entries)


# --------------------------------------------------------------------------------------
# The 3D-DeltaPDF of the simulation's diffuse model
# --------------------------------------------------------------------------------------
def satellite_delta_pdf(truth: dict, sample: str, temperature: float, steps, vectors,
                        taper_mean: float) -> np.ndarray:
    """The DeltaPDF the simulation's satellites give at lattice vectors (u, v, w) (n, 3),
    derived analytically in NXRefine's normalisation (FFT / N).

    The satellites are Gaussians of amplitude A (corrected intensity, satellite_model's
    amplitude), widths s_hk, s_hk, s_l (r.l.u.) at every (n + 1/2, m + 1/2, l): a lattice
    sum shifted by s = (1/2, 1/2, 0).  Its Fourier transform is nonzero only at lattice
    vectors R, with exp(2 pi i s.R) = (-1)^(u+v) times the transform of one Gaussian,
    A (2 pi)^(3/2) s_hk^2 s_l exp(-2 pi^2 (s_hk^2 (u^2 + v^2) + s_l^2 w^2)).  A discrete FFT
    over the grid divided by its N averages over the box: the lattice sum weighted by the
    taper (and by which voxels hold data) gives taper_mean, the mean of taper x measured
    over the transformed box.  A voxel holds the mean over its extent (pixels binned), which
    multiplies the transform by sinc(step r) per axis (steps = h, k, l steps in r.l.u.)."""
    sim = truth["simulation"]
    tc = truth["diffuse_model"]["satellites"]["present_below_K"][sample]
    amp = sim["satellite_amplitude"] * min(1.0, max(0.0, (tc - temperature) / (0.5 * tc)))
    s_hk, s_l = sim["satellite_sigma_hk"], sim["satellite_sigma_l"]
    r = np.asarray(vectors, float).reshape(-1, 3)
    sign = np.where((np.rint(r[:, 0] + r[:, 1]).astype(int) % 2) == 0, 1.0, -1.0)
    gauss = np.exp(-2 * math.pi ** 2 * (s_hk ** 2 * (r[:, 0] ** 2 + r[:, 1] ** 2)
                                        + s_l ** 2 * r[:, 2] ** 2))
    binning = np.prod(np.sinc(r * np.asarray(steps, float)[None, :]), axis=1)
    return (sign * amp * (2 * math.pi) ** 1.5 * s_hk ** 2 * s_l * gauss * binning
            * float(taper_mean))


def _pdf_at(pdf, r) -> float:
    """The PDF at the grid point nearest lattice coordinates r = (x, y, z)."""
    i = int(np.argmin(np.abs(pdf.x - r[0])))
    j = int(np.argmin(np.abs(pdf.y - r[1])))
    k = int(np.argmin(np.abs(pdf.z - r[2])))
    return float(pdf.values[k, j, i])


def pdf_peak(pdf, r) -> float:
    """The PDF at r less its local baseline, the mean at r +- 1/2 along x and along y: the
    sharp peaks at lattice vectors stand on a smooth background (the transform of the data's
    low-Q hole and of what is left of the background at large scales)."""
    base = np.mean([_pdf_at(pdf, (r[0] + dx, r[1] + dy, r[2]))
                    for dx, dy in ((0.5, 0.0), (-0.5, 0.0), (0.0, 0.5), (0.0, -0.5))])
    return _pdf_at(pdf, r) - float(base)


def pdf_noise(pdf, reach: float = 4.0) -> float:
    """Standard deviation of the PDF at points at least 0.3 lattice units (each coordinate)
    from every lattice vector, within `reach` and beyond 2 lattice units from the origin."""
    frac = lambda a: np.abs(a - np.rint(a))  # noqa: E731
    fz, fy, fx = np.meshgrid(frac(pdf.z), frac(pdf.y), frac(pdf.x), indexing="ij")
    Z, Y, X = np.meshgrid(pdf.z, pdf.y, pdf.x, indexing="ij")
    sel = ((fx > 0.3) & (fy > 0.3) & (fz > 0.3) & (X ** 2 + Y ** 2 + Z ** 2 > 4)
           & (np.abs(X) < reach) & (np.abs(Y) < reach) & (np.abs(Z) < reach))
    return float(pdf.values[sel].std())


@dataclass
class PDFTruth:
    """The 3D-DeltaPDF of one temperature of a reduced simulation against the analytic one."""

    temperature: str
    vectors: np.ndarray  # lattice vectors compared (n, 3)
    measured: np.ndarray  # DeltaPDF peaks (pdf_peak) at them
    expected: np.ndarray  # satellite_delta_pdf at them
    total: np.ndarray  # total-PDF peaks at them
    noise: float  # pdf_noise of the DeltaPDF

    @property
    def significant(self) -> np.ndarray:
        return np.abs(self.expected) > 5 * self.noise

    @property
    def signs_agree(self) -> float:
        s = self.significant
        return float(np.mean(np.sign(self.measured[s]) == np.sign(self.expected[s]))) if s.any() \
            else float("nan")

    @property
    def scale(self) -> float:
        """Least-squares factor measured ~ scale x expected (1 = the analytic amplitude)."""
        ee = float((self.expected ** 2).sum())
        return float((self.expected * self.measured).sum() / ee) if ee > 0 else float("nan")

    @property
    def residual(self) -> float:
        """rms(measured - expected) / max |expected| (or / the noise without satellites)."""
        ref = np.abs(self.expected).max()
        return float(np.sqrt(np.mean((self.measured - self.expected) ** 2)) / (ref or self.noise))

    def summary(self) -> str:
        return (f"DeltaPDF {self.temperature}: {len(self.vectors)} lattice vectors, "
                f"{int(self.significant.sum())} with satellite DeltaPDF > 5 noise, signs agree "
                f"{self.signs_agree:.3f}, amplitude / analytic {self.scale:.3f}, rms residual "
                f"{self.residual:.3f} of the largest; max |DeltaPDF| / noise "
                f"{np.abs(self.measured).max() / self.noise:.1f}; total-PDF lattice peaks: "
                f"median {np.median(self.total):.3g} (all > 0: {bool(np.all(self.total > 0))}), "
                f"max |DeltaPDF| / median total peak "
                f"{np.abs(self.measured).max() / np.median(self.total):.3f}")


def pdf_against_truth(results, truth: dict, sample: str, temperature: str,
                      reach=(3, 3, 1)) -> PDFTruth:
    """results/SAMPLE/T/pdf.nxs and total_pdf.nxs at the lattice vectors |u|, |v| <= reach[0],
    reach[1], |w| <= reach[2] against the satellites' analytic DeltaPDF."""
    base = Path(results) / sample / temperature
    delta, total = read_pdf(base / "pdf.nxs"), read_pdf(base / "total_pdf.nxs")
    with open_h5(base / "pdf.nxs") as f:
        g = f["entry/filled_data"]
        filled = g["data"][()]
        axes = [g[f"Q{a}"] for a in "hkl"]
        grid = Grid(*(Axis(float(ax[0]), float(ax.attrs["step"]), len(ax)) for ax in axes))
    taper = tukey_taper(grid, delta.cell, delta.notes["q_max"])
    sh, sk, sl = fft_crop(grid)
    taper_mean = float((taper * np.isfinite(filled))[sl, sk, sh].mean())
    vectors = np.array([(u, v, w) for u in range(-reach[0], reach[0] + 1)
                        for v in range(-reach[1], reach[1] + 1)
                        for w in range(-reach[2], reach[2] + 1) if (u, v, w) != (0, 0, 0)], float)
    t = truth["samples"][sample]["temperatures"][temperature]["temperature"]
    expected = satellite_delta_pdf(truth, sample, t, [ax.step for ax in grid.axes], vectors,
                                   taper_mean)
    return PDFTruth(temperature, vectors, np.array([pdf_peak(delta, r) for r in vectors]),
                    expected, np.array([pdf_peak(total, r) for r in vectors]), pdf_noise(delta))
