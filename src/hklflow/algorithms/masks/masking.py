"""Masks of a scan entry (rule mask_scan): the pixel mask and the 3D Bragg-peak mask.

Every scan entry gets ``results/SAMPLE/TLABEL/ENTRY/mask.nxs`` (and ``mask.png``). The
**pixel mask** holds the pixels that are never used: module gaps (pyFAI detector model), hot
pixels (found by the peak search: strong in most frames), dead pixels (found here: a pixel
whose maximum over the whole scan is 0 while its neighbours count so much that a live pixel
reading 0 in every frame is out of the question: with m the median of the scan maxima of
its 48 neighbours and lambda the count rate at which half of the pixels reach m in the N
frames, P(all zero) = exp(-lambda N) must be below 0.01 / (usable pixels), see
:func:`dead_pixels`; a pixel whose values are negative throughout the scan, as detectors
flag bad pixels, is dead too) and the user's mask file (``instrument.detector.mask_file``: any image fabio reads, or HDF5/NeXus; non-zero
= masked). The **Bragg mask**, used by the ``masked_transform`` only, is a table of
ellipsoids in (row, col, frame), never a dense copy of the scan: one around every peak the
peak search found (its bounding box, grown by ``radius_px`` and ``radius_frames``) and one
around every allowed reflection predicted with the refined orientation (semi-axes
``radius_px``, ``radius_px`` and ``radius_frames`` / |zeta|: a reflection crossing the Ewald
sphere at a grazing angle, near the rotation axis, stays in diffraction over more frames; the
stretch 1/|zeta| is capped at ``max_lorentz_stretch``). The transform paints the ellipsoids of
the frames it is working on into a small buffer (:meth:`ScanMask.paint`), so the Bragg mask
costs memory in proportion to the frames in hand. ``hkl_radius`` (a sphere around every
integer node in r.l.u., the "punch" of 3D-deltaPDF) is recorded in the mask file and applied
by the transform. ``mask.png`` shows the pixel mask over the scan's maximum projection
(with the ellipsoids projected on the detector when there are at most a few thousand), in
how many frames each pixel is inside a region, and the fraction of pixels masked per frame;
the log gives the counts of every kind and the fraction of pixel-frames masked.

Geometry of the regions (continuous coordinates: pixel i spans [i, i+1), centre i + 0.5;
frame f spans [f, f+1), centre f + 0.5). A pixel of a frame is masked when its centre lies
in an ellipsoid: ((r+.5-rc)/ar)^2 + ((c+.5-cc)/ac)^2 + ((f+.5-fc)/af)^2 <= 1.

* Found peak, bounding box [r0, r1) x [c0, c1) x [f0, f1): centre at the box centre; with
  h = (n - 1)/2 the half-extent of the box's pixel (frame) centres along an axis and d the
  number of axes with h > 0, semi-axis = sqrt(d) * h + margin. The sqrt(d) makes the
  ellipsoid contain every pixel-frame of the box (its corners included), so a peak of any
  shape inside its box is covered, and the margin is added along every axis.
* Predicted reflection: centre at the predicted (row, col, frame); semi-axes radius_px,
  radius_px, radius_frames * min(1/|zeta|, max_lorentz_stretch). zeta is DIALS's
  (geometry.lorentz_zeta). Reflections whose region overlaps the detector and the scan's
  frames at all are kept (one predicted just off the detector edge still has a tail on it);
  in a scan of a full turn a reflection is also tried one turn earlier and later.
* Every semi-axis is at least MIN_RADIUS = 0.875 (> sqrt(3)/2): whatever the radii
  configured, the pixel-frame that contains a region's centre is always masked (radius 0
  means "the centre pixel only", not "nothing").

Pixel mask bits (NeXus NXdetector/pixel_mask, int32): 1 gap, 2 dead, 8 hot (NeXus: over-
responding), 256 user mask.
"""
from __future__ import annotations

import logging
import math
import time
import warnings
from dataclasses import dataclass, field

import numpy as np

from ...base.errors import InputMismatchError
from ...files.mask import (DEAD, FOUND, GAP, HOT, PREDICTED, REASONS, REGION_COLUMNS, USER,
                           MaskRecord)
from ...model.geometry import lorentz_zeta
from ...raw.images import user_mask
from ...settings.params import DetectorParams, MaskParams
from .kernels import _frame_index, _masked_counts, _paint

log = logging.getLogger("hklflow.masking")

MIN_RADIUS = 0.875  # > sqrt(3)/2: the pixel-frame containing a region's centre is always inside
DEAD_WINDOW = 7  # neighbourhood (pixels, square) of the dead-pixel test
DEAD_FALSE_POSITIVES = 0.01  # expected live pixels wrongly called dead, per detector and scan
# the algorithm's constants, recorded with the settings in the mask file's parameters
CONSTANTS = {"min_radius": MIN_RADIUS, "dead_window": DEAD_WINDOW,
             "dead_false_positives": DEAD_FALSE_POSITIVES}


@dataclass(eq=False)
class ScanMask:
    """What the transform needs of a scan entry's masks (read_mask_file)."""

    pixels: np.ndarray  # bool (rows, cols): True = pixel not used in any frame (gaps, hot, dead, user mask)
    regions: np.ndarray  # float64 (n, 6): row_c, col_c, frame_c, r_row, r_col, r_frame (ellipsoids, continuous coords)
    hkl_radius: float  # r.l.u.; 0 = off
    nframes: int
    _index: tuple | None = field(default=None, init=False, repr=False)

    def __post_init__(self):
        self.pixels = np.ascontiguousarray(self.pixels, dtype=bool)
        if self.pixels.ndim != 2:
            raise ValueError(f"ScanMask.pixels must be 2D (rows, cols), got shape {self.pixels.shape}")
        self.regions = np.ascontiguousarray(np.asarray(self.regions, dtype=np.float64).reshape(-1, 6))
        if not np.all(np.isfinite(self.regions)):
            raise ValueError("ScanMask.regions holds non-finite values")
        if len(self.regions) and not np.all(self.regions[:, 3:] > 0):
            raise ValueError("ScanMask.regions radii must be > 0")
        self.nframes = int(self.nframes)
        self.hkl_radius = float(self.hkl_radius)

    @classmethod
    def of(cls, record: MaskRecord) -> "ScanMask":
        """The masks a mask file holds (files.mask.read_mask_file)."""
        return cls(record.pixels, record.regions, record.hkl_radius, record.nframes)

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.pixels.shape)

    def frame_index(self) -> tuple[np.ndarray, np.ndarray]:
        """(ptr, idx): the regions touching frame f are regions[idx[ptr[f]:ptr[f+1]]]."""
        if self._index is None:
            self._index = _frame_index(self.regions, max(self.nframes, 0))
        return self._index

    def paint(self, first: int, stop: int, out: np.ndarray, value: int = 1,
              blocks: np.ndarray | None = None, block: int = 0) -> None:
        """out: uint8 array (stop-first, rows*cols), zeroed by the caller; set out[f-first, r*cols+c] = 1
        for every pixel whose centre (r+0.5, c+0.5) at frame centre f+0.5 lies inside any region
        (ellipsoid test ((r+.5-rc)/ar)^2+((c+.5-cc)/ac)^2+((f+.5-fc)/af)^2 <= 1).
        A (stop-first, rows, cols) C-contiguous array is accepted too.  value=0 sets those
        pixels back to 0: a buffer painted for these frames is all zeros again (without
        zeroing all of it).  blocks: uint8 (stop-first, ceil(rows*cols / block)), zeroed by the
        caller: 1 set for each run of `block` pixels (k // block) that holds such a pixel in
        that frame (the transform skips the Bragg tests of the others)."""
        first, stop = int(first), int(stop)
        if not 0 <= first <= stop <= self.nframes:
            raise ValueError(f"frames [{first}, {stop}) are outside the scan's 0..{self.nframes}")
        rows, cols = self.shape
        if out.dtype != np.uint8 or not out.flags.c_contiguous:
            raise ValueError("paint: out must be a C-contiguous uint8 array")
        if out.ndim == 3 and out.shape[1:] == (rows, cols):
            out = out.reshape(out.shape[0], rows * cols)
        if out.shape != (stop - first, rows * cols):
            raise ValueError(f"paint: out has shape {out.shape}, expected {(stop - first, rows * cols)}")
        if blocks is None:
            blocks, block = np.zeros((0, 0), np.uint8), 1
        elif (block < 1 or blocks.dtype != np.uint8
              or blocks.shape != (stop - first, -(-rows * cols // block))):
            raise ValueError(f"paint: blocks is {blocks.dtype} {blocks.shape} for runs of "
                             f"{block} pixels, expected uint8 "
                             f"{(stop - first, -(-rows * cols // max(block, 1)))}")
        if stop > first and len(self.regions):
            ptr, idx = self.frame_index()
            _paint(self.regions, ptr, idx, first, stop, rows, cols, out, -1, int(value),
                   np.zeros(0, np.int32), blocks, int(block))

    def masked_counts(self) -> tuple[np.ndarray, np.ndarray]:
        """Where the Bragg mask adds to the pixel mask: (per frame the usable pixels inside a
        region, int64 (nframes,); per pixel the frames in which it is inside one, int32
        (rows, cols)).  Exact (overlapping regions count once); time in proportion to the
        pixel-frames inside regions, memory one frame."""
        rows, cols = self.shape
        if not len(self.regions) or self.nframes <= 0:
            return np.zeros(max(self.nframes, 0), np.int64), np.zeros((rows, cols), np.int32)
        ptr, idx = self.frame_index()
        return _masked_counts(self.regions, ptr, idx, self.nframes, rows, cols, self.pixels)


def poisson_rate_at_median_max(m, nframes: int) -> np.ndarray:
    """The count rate (per frame) at which the scan maximum of a Poisson pixel over nframes
    frames reaches m with probability 1/2: P(max >= m) = 1 - F(m-1; rate)^nframes = 1/2.
    The median of the maxima grows with the rate, so a neighbourhood whose median maximum
    is m counts at least about this rate.  0 for m < 1."""
    from scipy.special import gammainccinv  # here: every step reading a mask imports this module

    m = np.asarray(m, dtype=float)
    out = np.zeros(m.shape)
    use = m >= 1
    # F(k-1; rate) = Q(k, rate), the regularised upper incomplete gamma function: its inverse
    # in the rate (scipy.optimize's root finder would cost its import per mask)
    k = np.floor(m[use])  # median of integers (or half-integers): the floor is conservative
    out[use] = gammainccinv(k, 0.5 ** (1.0 / max(int(nframes), 1)))
    return out


def dead_pixels(max_projection: np.ndarray, unknown: np.ndarray, nframes: int,
                window: int = DEAD_WINDOW, false_positives: float = DEAD_FALSE_POSITIVES):
    """Dead pixels from the scan maximum of every pixel (find_peaks' max_projection).

    A pixel is dead when its maximum over the scan is 0 while the median m of its
    neighbours' maxima (a window x window square; pixels in `unknown`, the gaps, hot pixels
    and user mask, and negative ones left out) says a live pixel there could not have read
    0 in every frame: with lambda = poisson_rate_at_median_max(m, nframes), the chance of
    that is exp(-lambda * nframes), and it must be below false_positives / (usable pixels),
    so that fewer than `false_positives` live pixels per detector are called dead (counting
    statistics only; rates varying along the scan only make a zero less likely).
    A pixel that is not in `unknown` yet whose maximum is negative (the detector flags it
    in every frame) is dead too.

    Returns (dead bool map, details dict: candidates, threshold lambda*nframes)."""
    mp = np.asarray(max_projection, dtype=np.float64)
    unknown = np.asarray(unknown, dtype=bool)
    valid = ~unknown & (mp >= 0)
    flagged = ~unknown & (mp < 0)
    dead = flagged.copy()
    n_usable = int(valid.sum())
    need = math.log(max(n_usable, 1) / false_positives)
    cand = np.argwhere(valid & (mp == 0))
    details = {"candidates": len(cand), "required_counts": need, "flagged": int(flagged.sum())}
    if len(cand) == 0 or nframes <= 0:
        return dead, details
    h = window // 2
    padded = np.pad(np.where(valid, mp, np.nan), h, constant_values=np.nan)
    dr, dc = np.meshgrid(np.arange(-h, h + 1), np.arange(-h, h + 1), indexing="ij")
    others = (dr != 0) | (dc != 0)
    dr, dc = dr[others][None] + h, dc[others][None] + h
    for start in range(0, len(cand), 50_000):
        rc = cand[start:start + 50_000]
        vals = padded[rc[:, :1] + dr, rc[:, 1:] + dc]
        with warnings.catch_warnings():  # all-NaN neighbourhoods (inside gaps): median 0
            warnings.simplefilter("ignore", RuntimeWarning)
            med = np.nanmedian(vals, axis=1)
        med = np.nan_to_num(med, nan=0.0)
        lam = poisson_rate_at_median_max(med, nframes)
        hit = lam * nframes >= need
        dead[rc[hit, 0], rc[hit, 1]] = True
    return dead, details


def pixel_reasons(gaps, hot_pixels, max_projection, user, nframes: int, find_dead: bool = True):
    """int32 (rows, cols) map of NeXus pixel_mask bits (GAP, HOT, DEAD, USER; 0 = used) and
    the details of the dead-pixel test (None if not done)."""
    gaps = np.asarray(gaps, dtype=bool)
    reasons = np.zeros(gaps.shape, np.int32)
    reasons[gaps] |= GAP
    hot = np.zeros(gaps.shape, dtype=bool)
    hp = np.asarray(hot_pixels, dtype=np.int64).reshape(-1, 2)
    inside = (hp[:, 0] >= 0) & (hp[:, 0] < gaps.shape[0]) & (hp[:, 1] >= 0) & (hp[:, 1] < gaps.shape[1])
    hot[hp[inside, 0], hp[inside, 1]] = True
    reasons[hot] |= HOT
    if user is not None:
        reasons[np.asarray(user, dtype=bool)] |= USER
    details = None
    if find_dead and max_projection is not None:
        mp = np.asarray(max_projection)
        if mp.shape != gaps.shape:
            raise ValueError(f"max_projection has shape {mp.shape}, the detector {gaps.shape}")
        dead, details = dead_pixels(mp, reasons != 0, nframes)
        reasons[dead] |= DEAD
    return reasons, details


# --------------------------------------------------------------------------------------
# Regions
# --------------------------------------------------------------------------------------
def found_regions(bounding_box, radius_px: float, radius_frames: float) -> np.ndarray:
    """Ellipsoids (n, 6) around found peaks' bounding boxes [row0, row1, col0, col1, frame0,
    frame1) (half-open): centred on the box, semi-axis sqrt(d) * h + margin per axis (h the
    half-extent of the box's pixel/frame centres, d the number of axes with h > 0), at least
    MIN_RADIUS."""
    bb = np.asarray(bounding_box, dtype=np.float64).reshape(-1, 6)
    lo, hi = bb[:, 0::2], bb[:, 1::2]
    centre = 0.5 * (lo + hi)
    h = np.maximum(0.5 * (hi - lo - 1.0), 0.0)
    d = np.maximum((h > 0).sum(axis=1, keepdims=True), 1)
    margin = np.array([radius_px, radius_px, radius_frames], dtype=np.float64)
    # (1 + 1e-9): the corners lie on the ellipsoid when the margin is 0; rounding must not drop them
    radii = np.maximum(np.sqrt(d) * h * (1 + 1e-9) + margin, MIN_RADIUS)
    return np.ascontiguousarray(np.hstack([centre, radii]))


def predicted_regions(scan, crystal, shape, radius_px: float, radius_frames: float,
                      max_lorentz_stretch: float = 10.0, d_min: float | None = None):
    """Ellipsoids around every allowed reflection predicted in the scan entry.

    scan: geometry.ScanGeometry (refined, with UB); crystal: crystal.Crystal (its allowed
    reflections with d >= d_min, default the detector's corner).  Returns (regions (n, 6),
    hkl (n, 3) int, zeta (n,)).  Semi-axes: radius_px, radius_px,
    radius_frames * min(1/|zeta|, max_lorentz_stretch), each at least MIN_RADIUS.  Kept:
    regions overlapping the detector and frames [0, nframes); a reflection is also tried one
    turn (360 deg) before and after."""
    geom = scan.detector
    ny, nx = shape
    nframes = scan.angles.nframes
    if d_min is None:
        d_min = geom.d_min() * 0.999
    hkl = crystal.reflections_within(d_min)
    if len(hkl) == 0:
        return np.zeros((0, 6)), np.zeros((0, 3), np.int64), np.zeros(0)
    hh, rows, cols, z, phi = scan.predict(hkl)
    ok = np.isfinite(rows) & np.isfinite(cols) & np.isfinite(z)
    hh, rows, cols, z, phi = hh[ok], rows[ok], cols[ok], z[ok], phi[ok]
    R = scan.goniometer.rotation(phi, scan.offsets)
    q = np.einsum("nij,nj->ni", R, hh @ np.asarray(scan.UB).T)
    zeta = lorentz_zeta(q, geom.wavelength, scan.axis_lab)
    with np.errstate(divide="ignore", invalid="ignore"):
        stretch = np.minimum(1.0 / np.abs(zeta), max_lorentz_stretch)
    stretch = np.where(np.isfinite(stretch), stretch, max_lorentz_stretch)
    rr = max(radius_px, MIN_RADIUS)
    rf = np.maximum(radius_frames * stretch, MIN_RADIUS)
    on_det = (rows > -rr) & (rows < ny + rr) & (cols > -rr) & (cols < nx + rr)
    turn = 360.0 / abs(scan.angles.step)
    sel, zsel = [], []
    for shift in (0.0, -turn, turn):
        zz = z + shift
        keep = np.flatnonzero(on_det & (zz + rf > 0) & (zz - rf < nframes))
        sel.append(keep)
        zsel.append(zz[keep])
    sel, zsel = np.concatenate(sel), np.concatenate(zsel)
    regions = np.column_stack([rows[sel], cols[sel], zsel, np.full(len(sel), rr),
                               np.full(len(sel), rr), rf[sel]])
    return np.ascontiguousarray(regions, dtype=np.float64), hh[sel].astype(np.int64), zeta[sel]


# --------------------------------------------------------------------------------------
# The whole step's computation
# --------------------------------------------------------------------------------------
@dataclass(eq=False)
class MaskResult:
    mask: ScanMask
    reasons: np.ndarray  # int32 (rows, cols) pixel_mask bits
    table: dict  # bragg_regions columns (one row per region)
    statistics: dict
    max_projection: np.ndarray | None = None
    masked_per_frame: np.ndarray | None = None  # usable pixels inside a region, per frame
    masked_per_pixel: np.ndarray | None = None  # frames in which a usable pixel is inside a region


def build_mask(scan_record, peaks_record, orientation_record, params: MaskParams,
               detector: DetectorParams, log: logging.Logger | None = None) -> MaskResult:
    """The masks of one scan entry from its scan, peaks and orientation records
    (files.scan.ScanRecord, files.peaks.PeaksRecord, files.orientation.OrientationRecord,
    which may be None without predicted peaks); detector: the user mask."""
    log = log or globals()["log"]
    t0 = time.monotonic()
    rec, pk, ori = scan_record, peaks_record, orientation_record
    if pk.scan_id != rec.scan_id:
        raise InputMismatchError(f"{pk.path} holds peaks of {pk.scan_id}, not of {rec.scan_id} "
                                 f"({rec.path})")
    scan = rec.geometry(ori) if ori is not None else None
    shape = rec.detector_shape
    nframes = rec.nframes
    gaps = rec.setup.calibration.detector_mask()
    user = user_mask(detector, shape)
    # (the frames the maximum was taken over: a block's own, hklflow watch)
    searched = getattr(pk, "frames_searched", 0) or nframes
    reasons, dead_details = pixel_reasons(gaps, pk.hot_pixels, pk.max_projection, user, searched,
                                          params.dead_pixels)
    stats = {f"pixels_{name}": int(np.count_nonzero(reasons & bit)) for name, bit in REASONS.items()}
    stats["pixels_masked"] = int(np.count_nonzero(reasons))
    stats["pixels_total"] = int(reasons.size)
    if dead_details:
        stats["dead_candidates"] = int(dead_details["candidates"])
        stats["dead_required_counts"] = float(dead_details["required_counts"])
    log.info("pixel mask: %d gaps, %d hot, %d dead, %d user; %d of %d pixels (%.2f%%) masked",
             stats["pixels_gap"], stats["pixels_hot"], stats["pixels_dead"], stats["pixels_user"],
             stats["pixels_masked"], reasons.size, 100 * stats["pixels_masked"] / reasons.size)

    regions, cols = [], {k: [] for k in ("h", "k", "l", "source", "peak_index", "zeta")}
    n_found = n_pred = 0
    if params.found_peaks:
        p = pk.peaks
        bb = np.asarray(p.get("bounding_box", np.zeros((0, 6))), dtype=np.int64).reshape(-1, 6)
        reg = found_regions(bb, params.radius_px, params.radius_frames)
        n_found = len(reg)
        regions.append(reg)
        if scan is not None and n_found:
            hkl = scan.hkl_at(p["observed_px_y"], p["observed_px_x"], p["observed_frame"])
        else:
            hkl = np.full((n_found, 3), np.nan)
        for i, c in enumerate("hkl"):
            cols[c].append(hkl[:, i])
        cols["source"].append(np.full(n_found, FOUND, np.int8))
        cols["peak_index"].append(np.arange(n_found, dtype=np.int64))
        cols["zeta"].append(np.full(n_found, np.nan))
    if params.predicted_peaks:
        if ori is None:
            raise InputMismatchError("predicted_peaks needs the orientation file")
        reg, hkl, zeta = predicted_regions(scan, ori.crystal(), shape, params.radius_px,
                                           params.radius_frames, params.max_lorentz_stretch)
        n_pred = len(reg)
        regions.append(reg)
        for i, c in enumerate("hkl"):
            cols[c].append(hkl[:, i].astype(np.float64))
        cols["source"].append(np.full(n_pred, PREDICTED, np.int8))
        cols["peak_index"].append(np.full(n_pred, -1, np.int64))
        cols["zeta"].append(zeta)
    regions = np.concatenate(regions) if regions else np.zeros((0, 6))
    table = {name: regions[:, i] for i, name in enumerate(REGION_COLUMNS)}
    for k, v in cols.items():
        table[k] = np.concatenate(v) if v else np.zeros(0, np.int8 if k == "source" else float)
    mask = ScanMask(reasons != 0, regions, params.hkl_radius, nframes)
    per_frame, per_pixel = mask.masked_counts()
    usable = int(np.count_nonzero(reasons == 0))
    stats.update({"regions_found": n_found, "regions_predicted": n_pred, "nframes": nframes,
                  "bragg_pixel_frames": int(per_frame.sum()),
                  "bragg_fraction": float(per_frame.sum() / max(usable * nframes, 1)),
                  "pixel_fraction": stats["pixels_masked"] / reasons.size})
    stats["masked_fraction"] = (stats["pixels_masked"] * nframes + stats["bragg_pixel_frames"]) \
        / max(reasons.size * nframes, 1)
    stats["seconds"] = time.monotonic() - t0
    log.info("Bragg mask: %d regions around found peaks, %d around predicted reflections; "
             "%.3f%% of the usable pixel-frames (at most %.2f%% of one frame); pixel and Bragg "
             "masks together %.3f%% of all pixel-frames", n_found, n_pred,
             100 * stats["bragg_fraction"], 100 * (per_frame.max() / max(usable, 1) if len(per_frame) else 0),
             100 * stats["masked_fraction"])
    return MaskResult(mask, reasons, table, stats, pk.max_projection, per_frame, per_pixel)
