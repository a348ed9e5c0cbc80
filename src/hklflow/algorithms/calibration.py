"""Powder calibration: the detector geometry from a calibrant powder image, or a PONI file
(rule calibrate_powder; parameters: params.CalibrationParams).

`refine_geometry(image, params)` / `import_poni(params)` do the work on arrays and objects
and return a `CalibrationResult`; `calibrate(params)` reads the inputs the parameters name
and calls the one that applies.

Refinement (no GUI), from the config's rough start geometry:

1. coarse alignment (`coarse_align`): distance and beam centre from azimuthal-sector radial
   profiles of the whole image matched to the calibrant's ring comb (twice, the second
   time with a narrower search).  pyFAI's point picking only looks within +-1/4 of the
   ring spacing of the predicted ring, so without this a start a few % / ~10 px off
   labels points with the wrong ring on close or dense ring sets;
2. passes of control-point picking on the calibrant rings with pyFAI
   (`SingleGeometry.extract_cp`, which climbs to the ring ridge from seeds on the
   predicted rings) and refinement with `GeometryRefinement.refine3` (parameters not
   listed in `refine` stay fixed; the wavelength is fixed unless listed): the innermost
   `first_rings` rings first with only distance and PONI free, then twice as many rings
   with all listed parameters free, and so on until every ring on the detector (or
   `max_rings`) is used and a pass moves the predicted rings by less than `tolerance_px`.
   In each pass, points further than `outlier_sigma` robust sigmas from their ring are
   dropped and the refinement repeated.

Module gaps (negative pixels, the detector model's mask) and hot pixels are masked; an
image without a finite value or without a count outside the gaps is refused.

The accepted geometry must put the rings where the control points are (`ring_misfit`, the
rule): each ring's points averaged in azimuthal sectors, the points' own picking scatter
taken out, must lie within b = min(1/sqrt(12) px, s/8) of the predicted ring, s the distance
from the ring to the nearest other one (px, the ring density): the error of knowing a
position only to its pixel, and half the quarter-spacing window the point picking searches.
Failing it, one geometry does not fit the rings (a wrong wavelength, distance or detector).
calibrations.NAME.max_rms_px, given, bounds the points' RMS radial residual instead.  The
pixels are laid out with the detector orientation of the config
(instrument.detector.orientation, pyFAI's convention).

With a sensor (instrument.detector.sensor) pyFAI's parallax correction is on in the point
picking and the least squares (Geometry.enable_parallax, evaluated at each pass's starting
geometry: the passes converge on it), and residuals are computed with hklflow's own model
(model/sensor.py, the same): the distance refined is the distance to the sensor's front
surface.

rot3 (pyFAI's rotation about the incident beam, applied last) leaves every pixel's 2theta
unchanged, so powder rings cannot determine it: it stays at its start value even when
listed in `refine` (a warning says so); the single-crystal refinement can refine it.

A calibration that cannot be accepted raises `CalibrationError`.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import gc
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..base.errors import CalibrationError, ImageReadError
from ..model.geometry import DetectorGeometry, enable_pyfai_parallax, pyfai_detector
from ..model.sensor import Sensor
from ..raw.images import read_image
from ..settings.params import CalibrationParams

PARAMETERS = CalibrationParams.REFINABLE
POWDER_BLIND = CalibrationParams.POWDER_BLIND

log = logging.getLogger("hklflow.calibration")


def start_geometry(params: CalibrationParams) -> DetectorGeometry:
    """The rough start geometry of the config (rot1..3 default 0), with the detector's
    sensor."""
    s = params.start
    return DetectorGeometry(params.detector, s["dist"], s["poni1"], s["poni2"], s.get("rot1", 0.0),
                            s.get("rot2", 0.0), s.get("rot3", 0.0), params.wavelength,
                            orientation=params.orientation, sensor=params.sensor)


def describe(g: DetectorGeometry) -> str:
    """One line for logs and pictures: distance, PONI (px), tilts, wavelength."""
    p1, p2 = g.pixel_size
    return (f"dist={g.dist * 1e3:.4f} mm poni=({g.poni1 / p1:.2f}, {g.poni2 / p2:.2f}) px "
            f"rot=({math.degrees(g.rot1):.4f}, {math.degrees(g.rot2):.4f}, "
            f"{math.degrees(g.rot3):.4f}) deg wavelength={g.wavelength:.6f} A")


# ======================================================================================
# Result
# ======================================================================================
@dataclass
class CalibrationResult:
    method: str  # "refined" or "imported"
    geometry: DetectorGeometry
    start: DetectorGeometry | None = None
    refined: tuple[str, ...] = ()
    uncertainties: dict = field(default_factory=dict)  # parameter -> 1 sigma (m, rad, A)
    rms_px: float | None = None
    rms_tth_deg: float | None = None
    n_points: int = 0
    rings: tuple[int, ...] = ()  # calibrant ring indices (0 = innermost) with points
    control_points: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))
    passes: list = field(default_factory=list)
    bad_pixels: np.ndarray | None = None  # masked pixels (gaps, negative, hot)
    n_hot: int = 0
    notes: list = field(default_factory=list)
    misfit: "RingMisfit | None" = None  # the acceptance test's figures (ring_misfit)

    def summary(self) -> dict:
        """JSON-able digest: geometry, beam centre, uncertainties, residuals."""
        g = self.geometry
        return {
            "method": self.method,
            "geometry": g.as_dict(),
            "beam_centre_px": g.beam_centre(),
            "fit2d": g.fit2d(),
            "start": self.start.as_dict() if self.start is not None else None,
            "refined_parameters": list(self.refined),
            "uncertainties": dict(self.uncertainties),
            "residuals": {"rms_px": self.rms_px, "rms_2theta_deg": self.rms_tth_deg,
                          "n_points": self.n_points, "n_rings": len(self.rings),
                          "rings": [int(r) for r in self.rings],
                          **({"ring_misfit": self.misfit.as_dict()} if self.misfit else {})},
            "n_hot_pixels": self.n_hot,
            "notes": list(self.notes),
        }


# ======================================================================================
# The work
# ======================================================================================
def find_bad_pixels(image: np.ndarray, detector_mask: np.ndarray,
                    hot_pixel_factor: float = 5.0) -> tuple[np.ndarray, int]:
    """Mask of pixels not to use: the detector model's gaps, negative values (a Pilatus
    writes -1/-2 in gaps and dead pixels), non-finite values, and hot pixels (brighter than
    factor x the brightest of their 8 neighbours + 100).  Returns (mask, number of hot)."""
    # (here: scipy.ndimage loads slowly, and the pictures import this module for its ring helpers)
    from scipy import ndimage

    img = np.asarray(image, dtype=np.float64)
    bad = np.asarray(detector_mask, dtype=bool) | ~np.isfinite(img) | (img < 0)
    clean = np.where(bad, 0.0, img)
    footprint = np.ones((3, 3), dtype=bool)
    footprint[1, 1] = False
    neighbours = ndimage.maximum_filter(clean, footprint=footprint, mode="constant")
    hot = ~bad & (clean > hot_pixel_factor * neighbours + 100.0)
    return bad | hot, int(hot.sum())


def ring_two_theta(calibrant: str, wavelength: float) -> np.ndarray:
    """2theta (rad) of the calibrant's rings at wavelength (Angstrom), innermost first."""
    return np.array(_ring_two_theta(calibrant, float(wavelength)))


@functools.lru_cache(maxsize=64)
def _ring_two_theta(calibrant: str, wavelength: float) -> tuple:
    return tuple(float(t) for t in _calibrant(calibrant, wavelength).get_2th())


def _calibrant(name: str, wavelength: float):
    # (here: pyFAI's import takes most of a second, and the pictures import this module too)
    from pyFAI.calibrant import CALIBRANT_FACTORY

    cal = CALIBRANT_FACTORY(name)
    cal.wavelength = wavelength * 1e-10
    return cal


@functools.lru_cache(maxsize=8)
def _pyfai_geometry(detector: str, orientation: int):
    """A bare pyFAI Geometry of the detector, for tth(d1, d2, param) (no integrator set-up)."""
    # (here: pyFAI's import takes most of a second, and the pictures import this module too)
    from pyFAI.geometry import Geometry

    return Geometry(detector=pyfai_detector(detector, orientation))


def _rings_on_detector(g: DetectorGeometry, calibrant: str, bad: np.ndarray) -> list[int]:
    """Indices of the calibrant rings that cross unmasked pixels for geometry g."""
    d1, d2 = np.nonzero(~bad[::2, ::2])  # every 2nd pixel is plenty for the 2theta range
    tth = _pyfai_geometry(g.detector, g.orientation).tth(
        2.0 * d1, 2.0 * d2, [g.dist, g.poni1, g.poni2, g.rot1, g.rot2, g.rot3])
    lo, hi = float(tth.min()), float(tth.max())
    return [i for i, t in enumerate(ring_two_theta(calibrant, g.wavelength)) if lo < t < hi]


def _tth_at(g: DetectorGeometry, points: np.ndarray):
    """2theta (rad) at control points (d1, d2, ring) and its radial gradient (rad / px)."""
    d1, d2 = points[:, 0], points[:, 1]
    h = 0.5
    if g.sensor is not None:
        # hklflow's own parallax (model.sensor): pyFAI's tth(d1, d2, param) evaluates its
        # parallax at the Geometry's own distance and PONI, not at param's
        def tth(a, b):
            return g.two_theta_chi(a + 0.5, b + 0.5)[0]  # (pyFAI's d1 = row - 0.5)
    else:
        geo = _pyfai_geometry(g.detector, g.orientation)
        param = [g.dist, g.poni1, g.poni2, g.rot1, g.rot2, g.rot3]

        def tth(a, b):
            return geo.tth(a, b, param)
    g1 = (tth(d1 + h, d2) - tth(d1 - h, d2)) / (2 * h)
    g2 = (tth(d1, d2 + h) - tth(d1, d2 - h)) / (2 * h)
    return tth(d1, d2), np.hypot(g1, g2)


def _residuals(g: DetectorGeometry, calibrant: str, points: np.ndarray):
    """Per control point (d1, d2, ring): 2theta residual (rad) and radial residual (px)."""
    expected = ring_two_theta(calibrant, g.wavelength)[points[:, 2].astype(int)]
    tth, grad = _tth_at(g, points)
    r = tth - expected
    return r, r / grad


def _uncertainties(g: DetectorGeometry, calibrant: str, points: np.ndarray, free) -> dict:
    """1-sigma uncertainties from the Jacobian of the 2theta residuals at the solution:
    cov = s^2 (J^T J)^-1, s^2 = sum r^2 / (n - p)."""
    if not free or len(points) <= len(free):
        return {}
    steps = {"dist": 1e-6, "poni1": 1e-7, "poni2": 1e-7, "rot1": 1e-6, "rot2": 1e-6,
             "rot3": 1e-6, "wavelength": 1e-6 * g.wavelength}
    r0, _ = _residuals(g, calibrant, points)
    cols = []
    for p in free:
        h = steps[p]
        rp, _ = _residuals(dataclasses.replace(g, **{p: getattr(g, p) + h}), calibrant, points)
        rm, _ = _residuals(dataclasses.replace(g, **{p: getattr(g, p) - h}), calibrant, points)
        cols.append((rp - rm) / (2 * h))
    J = np.stack(cols, axis=1)
    s2 = float(r0 @ r0) / (len(r0) - len(free))
    try:
        cov = s2 * np.linalg.inv(J.T @ J)
    except np.linalg.LinAlgError:
        return {p: float("inf") for p in free}
    return {p: float(math.sqrt(max(cov[i, i], 0.0))) for i, p in enumerate(free)}


@contextlib.contextmanager
def _seeded_global_numpy(seed: int):
    """pyFAI's point picking shuffles with numpy's global generator: seed it, then restore."""
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


def _ring_shift_px(a: DetectorGeometry, b: DetectorGeometry, calibrant, points) -> float:
    """Largest radial displacement (px) of the predicted rings at the points, from a to b."""
    if len(points) == 0:
        return float("inf")
    ra, _ = _residuals(a, calibrant, points)
    rb, _ = _residuals(b, calibrant, points)
    _, grad = _tth_at(b, points)
    return float(np.max(np.abs(rb - ra) / grad))


def coarse_align(image: np.ndarray, bad: np.ndarray, g: DetectorGeometry, calibrant: str, *,
                 search_dist: float = 0.1, search_px: float = 50.0, sectors: int = 36):
    """Coarse distance and beam centre from the whole image, before any point picking.

    The image is cut into `sectors` azimuthal sectors around the start beam centre and
    reduced to background-subtracted radial profiles (in pixels, r = dist tan 2theta).  The
    rings of the true geometry sit at r = s R_k + t_sector, with R_k the ring radii of the
    start geometry, s = dist/dist_start and t_sector = (beam centre shift) . (sector
    direction).  s is the scale whose comb of rings, each sector allowed its own shift,
    matches the profiles best (|s - 1| <= search_dist); the shifts (|t| <= search_px) then
    give the beam centre by least squares.  Returns (geometry, info dict).
    """
    # (here: scipy.ndimage loads slowly, and the pictures import this module for its ring helpers)
    from scipy import ndimage

    ai = g.to_pyfai()
    shape = g.shape
    tth = np.asarray(ai.center_array(shape, unit="2th_rad", scale=False))
    chi = np.asarray(ai.center_array(shape, unit="chi_rad", scale=False))
    p1, p2 = g.pixel_size
    pix = math.sqrt(p1 * p2)
    ok = ~bad & (tth < math.radians(80.0))
    binw = 0.5
    r = g.dist * np.tan(tth[ok]) / pix
    sec = (np.floor((chi[ok] + np.pi) / (2 * np.pi) * sectors).astype(np.int64)) % sectors
    nb = int(r.max() / binw) + 2
    flat = sec * nb + (r / binw).astype(np.int64)
    sums = np.bincount(flat, weights=np.asarray(image, dtype=float)[ok],
                       minlength=sectors * nb).reshape(sectors, nb)
    cnts = np.bincount(flat, minlength=sectors * nb).reshape(sectors, nb)
    # unit vector (rows, cols) from the start beam centre towards each sector
    bc = g.beam_centre()
    rows, cols = np.nonzero(ok)
    dr, dc = rows + 0.5 - bc["direct_beam_row"], cols + 0.5 - bc["direct_beam_col"]
    norm = np.hypot(dr, dc) + 1e-9
    u = np.stack([np.bincount(sec, weights=dr / norm, minlength=sectors),
                  np.bincount(sec, weights=dc / norm, minlength=sectors)], axis=1)
    u /= np.linalg.norm(u, axis=1, keepdims=True) + 1e-12

    prof = np.zeros((sectors, nb))
    has = cnts > 0
    x = np.arange(nb)
    for i in range(sectors):
        if has[i].sum() > 10:
            prof[i] = np.interp(x, x[has[i]], sums[i, has[i]] / cnts[i, has[i]])
    hp = prof - ndimage.median_filter(prof, size=(1, int(20 / binw) + 1), mode="nearest")
    hp = ndimage.gaussian_filter1d(hp, 2.0, axis=1)  # tolerate the grid steps
    hp[~has] = 0.0
    for i in range(sectors):
        v = hp[i, has[i]]
        if v.size > 10:
            mad = 1.4826 * np.median(np.abs(v - np.median(v)))
            hp[i] = hp[i] / mad if mad > 0 else 0.0
    hp = np.clip(hp, 0.0, 20.0)  # peaks only; cap so one hot spot cannot win alone

    R = g.dist * np.tan(np.array([t for t in ring_two_theta(calibrant, g.wavelength)
                                  if t < math.radians(80.0)])) / pix
    lags = np.arange(-int(search_px / binw), int(search_px / binw) + 1)
    pad = lags.size
    hpp = np.pad(hp, ((0, 0), (pad, pad)))

    def corr(scale):
        b = np.rint(scale * R / binw).astype(np.int64)
        b = b[b < nb + pad // 2]
        if b.size == 0:
            return np.zeros((sectors, lags.size))
        idx = np.clip(b[:, None] + lags[None, :] + pad, 0, hpp.shape[1] - 1)
        return hpp[:, idx].sum(axis=1)  # (sectors, lags)

    def best_scale(scales):
        scores = [corr(sc).max(axis=1).sum() for sc in scales]
        return scales[int(np.argmax(scores))], float(np.max(scores))

    s0, _ = best_scale(1.0 + np.arange(-search_dist, search_dist + 1e-9, 0.0025))
    s1, score = best_scale(s0 + np.arange(-0.003, 0.003 + 1e-9, 0.0002))
    c = corr(s1)
    j = np.argmax(c, axis=1)
    peak = c[np.arange(sectors), j]
    # sub-bin shift by a parabola through the maximum and its neighbours
    jm, jp = np.clip(j - 1, 0, lags.size - 1), np.clip(j + 1, 0, lags.size - 1)
    ym, y0, yp = c[np.arange(sectors), jm], peak, c[np.arange(sectors), jp]
    den = ym - 2 * y0 + yp
    frac = np.where(den < 0, 0.5 * (ym - yp) / np.where(den < 0, den, -1), 0.0)
    t = (lags[j] + np.clip(frac, -0.5, 0.5)) * binw
    use = peak > 0.25 * np.median(peak[peak > 0]) if (peak > 0).any() else peak > 0
    shift = np.zeros(2)
    info = {"scale": float(s1), "score": score, "sectors_used": int(use.sum())}
    if use.sum() >= 4:
        A = np.column_stack([np.ones(sectors), u])
        for _ in range(3):
            w = np.sqrt(peak * use)
            sol, *_ = np.linalg.lstsq(A * w[:, None], t * w, rcond=1e-6)
            res = t - A @ sol
            new_use = use & (np.abs(res) < max(3.0, 3 * np.median(np.abs(res[use]))))
            if new_use.sum() < 4 or (new_use == use).all():
                break
            use = new_use
        shift = sol[1:]
        info.update(offset_px=float(sol[0]), rms_px=float(np.sqrt(np.mean(res[use] ** 2))))
        # the common offset trades off against the scale: with each sector's shift now
        # fixed to shift . u (no free offset), search the scale again
        lag_fixed = np.clip(np.rint(u @ shift / binw).astype(np.int64) + lags.size // 2,
                            0, lags.size - 1)
        scales = s1 + np.arange(-0.03, 0.03 + 1e-9, 0.0002)
        scores = [corr(sc)[np.arange(sectors), lag_fixed][use].sum() for sc in scales]
        s1 = float(scales[int(np.argmax(scores))])
        info["scale"] = s1
    # move the beam centre by `shift` pixels: the PONI moves by the same plane vector
    r0, c0 = bc["direct_beam_row"], bc["direct_beam_col"]
    a1, a2 = g.plane_coordinates(np.array([r0, r0 + shift[0]]), np.array([c0, c0 + shift[1]]))
    out = dataclasses.replace(g, dist=g.dist * s1, poni1=g.poni1 + float(a1[1] - a1[0]),
                              poni2=g.poni2 + float(a2[1] - a2[0]))
    info.update(shift_row_px=float(shift[0]), shift_col_px=float(shift[1]))
    return out, info


def _check_has_counts(image: np.ndarray, gaps: np.ndarray, where: str) -> None:
    """CalibrationError for an image with nothing to calibrate on: no finite value, or no
    count, outside the detector's gaps."""
    finite = np.isfinite(image) & ~gaps
    if not finite.any():
        raise CalibrationError(f"{where}: no finite pixel values in the image (NaN or "
                               "infinite everywhere outside the detector's gaps)")
    if not (image[finite] > 0).any():
        raise CalibrationError(f"{where}: no counts in the image (every pixel outside the "
                               "detector's gaps reads 0 or less): is it the calibrant exposure?")


def _check_sane(g: DetectorGeometry, start: DetectorGeometry, where: str, npass: int) -> None:
    vals = [g.dist, g.poni1, g.poni2, g.rot1, g.rot2, g.rot3, g.wavelength]
    ny, nx = g.shape
    p1, p2 = g.pixel_size
    problems = []
    if not all(math.isfinite(v) for v in vals):
        problems.append("non-finite parameters")
    elif not 0.5 * start.dist < g.dist < 2.0 * start.dist:
        problems.append(f"distance {g.dist:.4f} m is far from the start {start.dist:.4f} m")
    elif (abs(g.poni1 - start.poni1) > 0.5 * ny * p1
          or abs(g.poni2 - start.poni2) > 0.5 * nx * p2):
        problems.append("the PONI moved by more than half the detector")
    elif max(abs(g.rot1), abs(g.rot2)) > math.radians(30):
        problems.append("a tilt beyond 30 deg")
    elif not 0.5 * start.wavelength < g.wavelength < 2.0 * start.wavelength:
        problems.append(f"wavelength {g.wavelength:.5f} A is far from {start.wavelength:.5f} A")
    if problems:
        raise CalibrationError(f"{where}: refinement diverged in pass {npass} "
                               f"({'; '.join(problems)}): {describe(g)}; check the start geometry "
                               "(dist, poni1, poni2) and the calibrant/wavelength")


@contextlib.contextmanager
def _gc_skips_objects_made_so_far():
    """pyFAI's geometries run gc.collect() at every change of a parameter (Geometry.auto_gc,
    set in their constructors): tens of full collections in a refinement, each walking
    every object of the modules imported so far, a large part of a calibration's time.
    Those objects are moved out of its way for the block (gc.freeze) and back after
    (gc.unfreeze); what the block makes is collected as before."""
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def refine_geometry(image: np.ndarray, params: CalibrationParams, *,
                    source: str = "image") -> CalibrationResult:
    """Refine the detector geometry from a calibrant powder image (the pure function).

    image: 2D array of detector shape (laid out with params.orientation); params.start is
    the rough start.  `source` names the image in messages.  Raises CalibrationError on
    failure (an image without finite values or counts, too few control points, divergence,
    an RMS residual above params.rms_bound_px).
    """
    # (here: pyFAI's import takes most of a second, and the pictures import this module too;
    # its modules imported before the freeze)
    import pyFAI.detectors  # noqa: F401
    import pyFAI.goniometer  # noqa: F401

    with _gc_skips_objects_made_so_far():
        return _refine_geometry(image, params, source)


def _refine_geometry(image: np.ndarray, params: CalibrationParams, source: str
                     ) -> CalibrationResult:
    """The passes of refine_geometry: the image checked and its bad pixels masked, the
    coarse alignment, the passes of control points and least squares until the rings stop
    moving, then the residuals' bound and the uncertainties."""
    start = start_geometry(params)
    where = f"calibrations.{params.name} from {source}"
    if start.detector != params.detector:
        start = dataclasses.replace(start, detector=params.detector)
    image, clean, bad, n_hot, det = _prepared_image(image, params, start, where, source)
    notes = []
    if any(p in params.refine for p in POWDER_BLIND):
        msg = ("rot3 (rotation about the beam) does not change 2theta, so powder rings "
               f"cannot determine it: kept at its start value {start.rot3:g} rad")
        log.info(msg)  # (expected on every calibration: in the notes, not among the warnings)
        notes.append(msg)
    on_det = _rings_on_detector(start, params.calibrant, bad)
    if not on_det:
        raise CalibrationError(f"{where}: no {params.calibrant} ring falls on the detector "
                               f"with the start geometry ({describe(start)})")
    g, passes = start, []
    if params.coarse_align:
        g = _coarse_passes(image, bad, start, params, where, passes)
        on_det = _rings_on_detector(g, params.calibrant, bad)
    g, points = _refinement_passes(clean, bad, det, g, start, min(params.first_rings,
                                                                  len(on_det)),
                                   params, where, passes)
    return _refined_result(g, start, points, params, where, passes, bad, n_hot, notes)


def _prepared_image(image, params: CalibrationParams, start: DetectorGeometry, where: str,
                    source: str):
    """(image, the image with its bad pixels at 0 (float32), the bad pixels, how many are
    hot, a private pyFAI detector whose mask they are), after checking the image's shape
    and that it holds counts."""
    # (here: pyFAI's import takes most of a second, and the pictures import this module too)
    import pyFAI.detectors

    image = np.asarray(image)
    if image.ndim != 2 or tuple(image.shape) != start.shape:
        raise CalibrationError(f"{where}: image shape {image.shape} does not match the "
                               f"detector {params.detector} {start.shape}")
    _check_has_counts(image, start.detector_mask(), where)
    bad, n_hot = find_bad_pixels(image, start.detector_mask(), params.hot_pixel_factor)
    log.info("%s: %d masked pixels (%d hot)", source, int(bad.sum()), n_hot)
    clean = np.where(bad, 0.0, image).astype(np.float32)
    # a private copy (own mask), laid out like the image
    det = pyFAI.detectors.detector_factory(params.detector,
                                           config={"orientation": params.orientation})
    det.mask = bad.astype(np.int8)
    return image, clean, bad, n_hot, det


def _coarse_passes(image, bad, start: DetectorGeometry, params: CalibrationParams, where: str,
                   passes: list) -> DetectorGeometry:
    """Two coarse alignments (the second in a fifth of the search range) of the free
    distance and PONI; each recorded in passes."""
    g = start
    for npass, (sd, sp) in enumerate(((params.search_dist, params.search_px),
                                      (params.search_dist / 5, params.search_px / 5))):
        aligned, info = coarse_align(image, bad, g, params.calibrant, search_dist=sd,
                                     search_px=sp)
        aligned = dataclasses.replace(
            g, **{k: getattr(aligned, k) for k in ("dist", "poni1", "poni2")
                  if k in params.free})
        _check_sane(aligned, start, where, 0)
        log.info("coarse alignment %d (%d sectors with rings): distance x %.4f, beam "
                 "centre moved (%.2f, %.2f) px; %s", npass + 1, info["sectors_used"],
                 info["scale"], info["shift_row_px"], info["shift_col_px"], describe(aligned))
        passes.append({"pass": 0, "coarse_alignment": info, "geometry": aligned.as_dict()})
        g = aligned
    return g


def _refinement_passes(clean, bad, det, g: DetectorGeometry, start: DetectorGeometry,
                       n_rings: int, params: CalibrationParams, where: str, passes: list):
    """Passes of control points on n_rings rings (doubled each pass, up to all on the
    detector) and a least-squares refinement, until two passes on all rings moved them by
    less than tolerance_px; (the geometry, its control points).  Each pass recorded in
    passes."""
    free_all = params.free
    points = np.zeros((0, 3))
    all_rings_passes = 0
    for npass in range(1, params.max_passes + 1):
        on_det = _rings_on_detector(g, params.calibrant, bad)
        total = len(on_det) if params.max_rings is None else min(len(on_det), params.max_rings)
        n_rings = min(n_rings, total)
        first = npass == 1  # distance and PONI only: tilts wander while rings are few
        free = [p for p in free_all if p in ("dist", "poni1", "poni2")] if first else free_all
        if not free:
            free = list(free_all)
        new, pts, rings, n_outliers = _refinement_pass(clean, det, g, start, n_rings, free,
                                                       npass, params, where)
        shift = _ring_shift_px(g, new, params.calibrant, pts)
        r_tth, r_px = _residuals(new, params.calibrant, pts)
        rms_px = float(np.sqrt(np.mean(r_px ** 2)))
        passes.append({"pass": npass, "rings_requested": n_rings, "rings": rings,
                       "n_points": int(len(pts)), "n_outliers": n_outliers,
                       "free": list(free), "rms_px": rms_px,
                       "rms_2theta_deg": float(np.degrees(np.sqrt(np.mean(r_tth ** 2)))),
                       "ring_shift_px": shift, "geometry": new.as_dict()})
        log.info("pass %d: %d/%d rings requested, %d used %s, %d points (%d outliers "
                 "dropped), free %s: rms %.3f px, rings moved %.3f px; %s", npass, n_rings,
                 total, len(rings), rings, len(pts), n_outliers, ",".join(free),
                 rms_px, shift, describe(new))
        g, points = new, pts
        if n_rings >= total and not first:
            all_rings_passes += 1
            if all_rings_passes >= 2 and shift < params.tolerance_px:
                break
        n_rings = min(max(2 * n_rings, n_rings + 1), total)
    else:
        last = passes[-1]["ring_shift_px"]
        if not last < 10 * params.tolerance_px:
            raise CalibrationError(f"{where}: refinement did not converge in "
                                   f"{params.max_passes} passes (last pass moved the rings by "
                                   f"{last:.3f} px, rms {passes[-1]['rms_px']:.3f} px on "
                                   f"{passes[-1]['n_points']} points): are there "
                                   f"{params.calibrant} rings in the image, and is the start "
                                   "geometry close?")
        log.warning("not converged to %.3f px in %d passes (last %.3f px): accepted",
                    params.tolerance_px, params.max_passes, last)
    return g, points


def _refinement_pass(clean, det, g: DetectorGeometry, start: DetectorGeometry, n_rings: int,
                     free, npass: int, params: CalibrationParams, where: str):
    """One pass: control points picked on the first n_rings rings (pyFAI's SingleGeometry
    with g), the free parameters refined, outliers dropped and refined again; (the new
    geometry, its points, their rings, how many outliers were dropped)."""
    # (here: pyFAI's import takes most of a second, and the pictures import this module too)
    from pyFAI.goniometer import SingleGeometry

    fixed = [p for p in PARAMETERS if p not in free]
    cal = _calibrant(params.calibrant, g.wavelength)
    # (pyFAI's SingleGeometry cannot take a geometry whose parallax is on: turned on after)
    sg = SingleGeometry(f"{params.name}-pass{npass}", clean, calibrant=cal, detector=det,
                        geometry=g.to_pyfai(parallax=False))
    if g.sensor is not None:
        # seeds on the rings where parallax puts them, and refine3's 2theta corrected
        # (evaluated at this pass's geometry g: the next pass evaluates it at the new one)
        enable_pyfai_parallax(sg.geometry_refinement, g.sensor)
    with _seeded_global_numpy(params.seed + npass):
        sg.extract_cp(max_rings=n_rings, pts_per_deg=params.pts_per_deg)
    gr = sg.geometry_refinement
    pts = np.asarray(gr.data if gr.data is not None else np.zeros((0, 3)), dtype=float)
    pts = pts.reshape(-1, 3) if pts.size else np.zeros((0, 3))
    rings = sorted({int(r) for r in pts[:, 2]}) if len(pts) else []
    if len(pts) < params.min_points or len(rings) < min(params.min_rings, n_rings):
        raise CalibrationError(
            f"{where}: too few control points in pass {npass}: {len(pts)} points on "
            f"{len(rings)} ring(s) (need >= {params.min_points} on >= "
            f"{min(params.min_rings, n_rings)}); are the {params.calibrant} rings "
            f"visible, and is the start geometry ({describe(start)}) within a few % / px?")

    def refine_once(data):
        gr.data = np.ascontiguousarray(data, dtype=np.float64)
        gr.refine3(fix=fixed)
        return DetectorGeometry.from_pyfai(gr, params.detector).with_sensor(g.sensor)

    new = refine_once(pts)
    _, r_px = _residuals(new, params.calibrant, pts)
    # drop outliers (points picked on a neighbouring ring, noise) and refine again
    mad = 1.4826 * np.median(np.abs(r_px - np.median(r_px)))
    keep = np.abs(r_px) <= max(params.outlier_sigma * mad, 0.1)
    if keep.sum() < len(pts) and keep.sum() >= params.min_points:
        pts = pts[keep]
        new = refine_once(pts)
    _check_sane(new, start, where, npass)
    return new, pts, rings, int((~keep).sum())


MISFIT_SECTOR_DEG = 10.0  # the azimuthal sectors a ring's points are averaged in
MISFIT_MIN_POINTS = 3  # fewer points in a sector tell nothing of its scatter


@dataclass(frozen=True)
class RingMisfit:
    """How far the predicted rings lie from the rings the control points find (see
    ring_misfit): misfit_px, the bound it is held to (bound_px) and their ratio (the
    geometry is accepted when ratio <= 1), over n_groups (ring, sector) groups of n_points
    points; the rings' spacing where their points are (px): the smallest, the median."""

    misfit_px: float
    bound_px: float
    ratio: float
    n_groups: int
    n_points: int
    min_spacing_px: float
    median_spacing_px: float

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def ring_spacing_px(g: DetectorGeometry, calibrant: str, points: np.ndarray) -> np.ndarray:
    """Per control point (d1, d2, ring): the radial distance (px) at the point from its
    ring to the nearest other ring of the calibrant (rings at one 2theta count as one), the
    ring density there: pyFAI's point picking looks for a ring's points within a quarter of
    it."""
    tth = ring_two_theta(calibrant, g.wavelength)
    distinct = np.unique(tth)
    ring = points[:, 2].astype(int)
    k = np.searchsorted(distinct, tth[ring])
    below = np.where(k > 0, tth[ring] - distinct[np.maximum(k - 1, 0)], np.inf)
    above = np.where(k < distinct.size - 1,
                     distinct[np.minimum(k + 1, distinct.size - 1)] - tth[ring], np.inf)
    _, grad = _tth_at(g, points)
    return np.minimum(below, above) / grad


def ring_misfit(g: DetectorGeometry, calibrant: str, points: np.ndarray) -> RingMisfit:
    """The acceptance test of a refined geometry: do the predicted rings lie where the
    control points put them?

    A control point's radial residual r (px) is the ring's misfit there plus the error of
    picking that one point, which grows with the ring's width and its noise (0.4-0.6 px on
    broad noisy rings at 87 keV, with the right geometry) and tells nothing of the geometry.
    So the points of each ring are averaged in azimuthal sectors of MISFIT_SECTOR_DEG: a
    group g of n points with mean m and variance v estimates its squared misfit by
    m^2 - v / n (the picking error's share of m^2 taken out), and the misfit is the
    point-weighted root mean of these over the groups (0 when noise dominates).

    The rule: each group is held to b = min(1/sqrt(12) px, s / 8), s the distance (px) from
    its ring to the nearest other one there (ring_spacing_px, the ring density) - a ring
    must lie within the error of knowing a position only to its pixel (1/sqrt(12) px: the
    pixel size), and within half of the quarter-spacing window pyFAI's point picking
    searches (s / 4): a ring further off than that window has its points picked on its
    neighbour's flank or not at all, so no residual can show the misfit any more.  The
    geometry is accepted when sqrt(sum n (m^2 - v/n) / b^2 / sum n) <= 1; bound_px is the
    misfit that ratio would allow (the point-weighted b where nothing is misfit)."""
    points = np.asarray(points, dtype=float)
    _, r_px = _residuals(g, calibrant, points)
    spacing = ring_spacing_px(g, calibrant, points)
    chi = g.two_theta_chi(points[:, 0] + 0.5, points[:, 1] + 0.5)[1]
    nsec = int(round(360.0 / MISFIT_SECTOR_DEG))
    sector = np.floor((np.degrees(chi) + 180.0) / MISFIT_SECTOR_DEG).astype(np.int64) % nsec
    key = points[:, 2].astype(np.int64) * nsec + sector
    groups, inverse, counts = np.unique(key, return_inverse=True, return_counts=True)
    n = counts.astype(float)
    mean = np.bincount(inverse, weights=r_px) / n
    var = np.bincount(inverse, weights=(r_px - mean[inverse]) ** 2) / np.maximum(n - 1, 1)
    bound = np.minimum(CalibrationParams.DEFAULT_MAX_RMS_PX,
                       np.bincount(inverse, weights=spacing) / n / 8.0)
    use = n >= MISFIT_MIN_POINTS
    if not use.any():  # (a few points only: each one a group, its picking error kept)
        use = n > 0
        var = np.zeros_like(var)
    w = n[use]
    square = mean[use] ** 2 - var[use] / w
    misfit2 = max(float(np.sum(w * square) / w.sum()), 0.0)
    ratio2 = max(float(np.sum(w * square / bound[use] ** 2) / w.sum()), 0.0)
    typical = float(np.sqrt(np.sum(w * bound[use] ** 2) / w.sum()))
    misfit, ratio = math.sqrt(misfit2), math.sqrt(ratio2)
    return RingMisfit(misfit, misfit / ratio if ratio > 0 else typical, ratio, int(use.sum()),
                      int(w.sum()), float(spacing.min()), float(np.median(spacing)))


def _refined_result(g: DetectorGeometry, start: DetectorGeometry, points, params, where: str,
                    passes: list, bad, n_hot: int, notes: list) -> CalibrationResult:
    """The result of the passes: refused when its residuals exceed the bound, else with
    the parameters' uncertainties."""
    r_tth, r_px = _residuals(g, params.calibrant, points)
    rms_px = float(np.sqrt(np.mean(r_px ** 2)))
    rms_tth = float(np.degrees(np.sqrt(np.mean(r_tth ** 2))))
    rings = tuple(sorted({int(r) for r in points[:, 2]}))
    misfit = ring_misfit(g, params.calibrant, points)
    if params.max_rms_px is not None:  # the user's bound on the points' RMS residual
        bound = params.rms_bound_px
        if not rms_px <= bound:
            raise CalibrationError(
                f"{where}: RMS residual of the control points {rms_px:.3f} px exceeds "
                f"{bound:.3f} px ({params.where('max_rms_px')}; {len(points)} points on rings "
                f"{list(rings)}; {describe(g)}): the {params.calibrant} rings do not fit one "
                "geometry: wrong wavelength, distance or detector?")
    elif not misfit.ratio <= 1.0:
        raise CalibrationError(
            f"{where}: the predicted rings lie {misfit.misfit_px:.3f} px (RMS over "
            f"{misfit.n_groups} sectors of {len(rings)} rings) from where the control points "
            f"put them, more than {misfit.bound_px:.3f} px (the pixel's 1/sqrt(12), or an "
            f"eighth of the rings' spacing, down to {misfit.min_spacing_px:.1f} px here; "
            f"{params.where('max_rms_px')} bounds the points' RMS residual, "
            f"{rms_px:.3f} px, instead; {len(points)} points on rings {list(rings)}; "
            f"{describe(g)}): the {params.calibrant} rings do not fit one geometry: wrong "
            "wavelength, distance or detector?")
    free_all = params.free
    unc = _uncertainties(g, params.calibrant, points, free_all)
    log.info("refined: %s; rms %.4f px = %.6f deg 2theta, %d points on %d rings; rings "
             "%.4f px from the points (bound %.3f px); uncertainties %s", describe(g), rms_px,
             rms_tth, len(points), len(rings), misfit.misfit_px, misfit.bound_px,
             {k: f"{v:.3g}" for k, v in unc.items()})
    return CalibrationResult(method="refined", geometry=g, start=start, refined=tuple(free_all),
                             uncertainties=unc, rms_px=rms_px, rms_tth_deg=rms_tth,
                             n_points=int(len(points)), rings=rings, control_points=points,
                             passes=passes, bad_pixels=bad, n_hot=n_hot, notes=notes,
                             misfit=misfit)


WAVELENGTH_RTOL = 1e-4  # a PONI wavelength further than this from the config's disagrees


def _records_orientation(path: Path) -> bool:
    """Whether a PONI file's Detector_config names an orientation (PONI version >= 2.1;
    without one, pyFAI's default 3 applies)."""
    return any(line.startswith("Detector_config") and "orientation" in line
               for line in path.read_text(errors="replace").splitlines())


def import_poni(params: CalibrationParams) -> CalibrationResult:
    """The geometry of the PONI file params.poni, checked against the config: the detector
    (shape and pixels), the wavelength and the detector orientation.  A wavelength or
    orientation that disagrees is a CalibrationError naming both values, unless
    params.poni_mismatch says which wins (calibrations.NAME.poni_mismatch)."""
    # (here: pyFAI's import takes most of a second, and the pictures import this module too)
    import pyFAI

    path = Path(params.poni)
    if not path.is_file():
        raise CalibrationError(f"calibrations.{params.name}: PONI file {path} not found")
    try:
        ai = pyFAI.load(str(path))
    except Exception as exc:
        raise CalibrationError(f"calibrations.{params.name}: cannot read PONI file {path}: "
                               f"{type(exc).__name__}: {exc}") from None
    if not ai.wavelength:
        raise CalibrationError(f"calibrations.{params.name}: PONI file {path} has no "
                               "Wavelength")
    want = pyfai_detector(params.detector)
    d = ai.detector
    notes = []
    if (tuple(d.shape or ()) not in ((), tuple(want.shape))
            or not math.isclose(d.pixel1, want.pixel1, rel_tol=1e-6)
            or not math.isclose(d.pixel2, want.pixel2, rel_tol=1e-6)):
        raise CalibrationError(
            f"calibrations.{params.name}: PONI file {path} is for detector {d.name} "
            f"(shape {d.shape}, pixels {d.pixel1:g} x {d.pixel2:g} m), not the configured "
            f"{params.detector} (shape {want.shape}, pixels {want.pixel1:g} x {want.pixel2:g} m)")
    g = DetectorGeometry.from_pyfai(ai, params.detector)
    where = f"calibrations.{params.name}: PONI file {path}"
    choice = params.where("poni_mismatch")
    if not math.isclose(g.wavelength, params.wavelength, rel_tol=WAVELENGTH_RTOL):
        rule = params.poni_mismatch.get("wavelength")
        values = (f"wavelength {g.wavelength:.6f} A in the PONI file, {params.wavelength:.6f} A "
                  "in instrument.wavelength")
        if rule is None:
            raise CalibrationError(f"{where} disagrees with the config: {values}; correct the "
                                   f"wrong one, or say which wins with {choice}: "
                                   "{wavelength: use_poni} (or use_config)")
        if rule == "use_config":
            g = dataclasses.replace(g, wavelength=params.wavelength)
        notes.append(f"{values}: {'the PONI' if rule == 'use_poni' else 'the config'}'s is used "
                     f"({choice}.wavelength: {rule})")
    if g.orientation != params.orientation:
        rule = params.poni_mismatch.get("orientation")
        recorded = ("" if _records_orientation(path)
                    else " (none recorded: pyFAI's default)")
        values = (f"detector orientation {g.orientation}{recorded} in the PONI file, "
                  f"{params.orientation} in instrument.detector.orientation")
        if rule is None:
            raise CalibrationError(
                f"{where} disagrees with the config: {values}; set "
                "instrument.detector.orientation to how the detector lays out its frames "
                "(docs/conventions.md), or, if the PONI's orientation is wrong, say so with "
                f"{choice}: {{orientation: use_config}}")
        g = dataclasses.replace(g, orientation=params.orientation)  # dist, PONI: physical
        notes.append(f"{values}: the config's is used ({choice}.orientation: {rule})")
    sensor = Sensor.of(params.sensor)
    if g.sensor != sensor:
        rule = params.poni_mismatch.get("sensor")
        values = (f"the PONI file's geometry corrects the parallax of "
                  f"{g.sensor.describe() if g.sensor else 'no sensor'}, "
                  f"instrument.detector.sensor is {sensor.describe() if sensor else 'not set'}")
        if rule is None:
            raise CalibrationError(
                f"{where} disagrees with the config: {values}; set instrument.detector.sensor "
                "to the PONI's, or, if the PONI's distance and centre are right for the "
                f"config's sensor, say so with {choice}: {{sensor: use_config}}")
        g = g.with_sensor(sensor)
        notes.append(f"{values}: the config's is used ({choice}.sensor: {rule})")
    for note in notes:
        log.warning("%s: %s", path, note)
    log.info("imported %s: %s", path, describe(g))
    return CalibrationResult(method="imported", geometry=g, notes=notes)


def integrate_pattern(image, g: DetectorGeometry, bad, polarization_fraction, npt=2000):
    """Azimuthally integrated pattern (2theta deg, mean intensity) for plots and NeXus."""
    ai = g.to_pyfai()
    res = ai.integrate1d(np.asarray(image, dtype=np.float32), npt, unit="2th_deg",
                         mask=bad, polarization_factor=polarization_fraction,
                         method=("no", "histogram", "cython"))
    return np.asarray(res.radial), np.asarray(res.intensity)


def calibrate(params: CalibrationParams):
    """Read the inputs the parameters name and calibrate: (result, image or None)."""
    image = None
    if params.image and (not params.poni or Path(params.image).is_file()):
        try:
            image = read_image(params.image, params.dataset, params.frame)
        except ImageReadError as exc:
            raise CalibrationError(f"calibrations.{params.name}: cannot read the calibrant "
                                   f"image: {exc}") from None
    if params.poni:
        result = import_poni(params)
        if image is not None:
            result.bad_pixels, result.n_hot = find_bad_pixels(
                image, result.geometry.detector_mask(), params.hot_pixel_factor)
        return result, image
    return refine_geometry(image, params, source=str(params.image)), image


