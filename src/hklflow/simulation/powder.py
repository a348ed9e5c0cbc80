"""Simulated powder (calibrant) images, for tests and the demo experiment.

    simulate_calibrant_image(geometry, "CeO2", rng) -> int32 image (detector shape)

The image is a sum of Gaussian Debye-Scherrer rings in 2theta placed with the geometry
(pyFAI's pixel 2theta, so the rings are where pyFAI predicts them), on a smooth background,
times the pixel solid angle and the polarization factor, with Poisson noise; pixels in the
detector model's gaps are -1 (as a Pilatus writes them) and a few hot pixels are added.
Ring strengths follow a powder pattern: multiplicity x Lorentz factor x Debye-Waller factor
(B = `b_factor`), spread over the Debye-Scherrer cone.  A geometry with a sensor (a thick
one: model/sensor.py) puts each pixel's 2theta where hklflow's parallax model says it looks
and multiplies the counts by the sensor's efficiency 1 - exp(-mu t / cos alpha).
"""
from __future__ import annotations

import math

import numpy as np

from ..model.geometry import DetectorGeometry

GAP_VALUE = -1  # what a Pilatus writes in module gaps


def calibrant_rings(calibrant: str, wavelength: float, tth_max_deg: float | None = None):
    """The calibrant's rings at `wavelength` (Angstrom): (two_theta_deg, d, multiplicity).

    Reflections beyond 2theta = 180 deg are dropped, and beyond tth_max_deg if given.
    """
    # (here: pyFAI's import takes most of a second; only the calibrant image needs it)
    from pyFAI.calibrant import CALIBRANT_FACTORY

    if calibrant not in CALIBRANT_FACTORY.all:
        raise ValueError(f"unknown pyFAI calibrant {calibrant!r}; known: "
                         f"{sorted(CALIBRANT_FACTORY.all)}")
    cal = CALIBRANT_FACTORY(calibrant)
    cal.wavelength = wavelength * 1e-10
    tth = np.degrees(np.asarray(cal.get_2th(), dtype=float))
    n = tth.size
    refl = list(getattr(cal.config, "reflections", None) or [])
    d = np.asarray(cal.dspacing[:n], dtype=float)
    mult = np.ones(n)
    for i, r in enumerate(refl[:n]):
        if getattr(r, "multiplicity", None):
            mult[i] = float(r.multiplicity)
    keep = np.isfinite(tth)
    if tth_max_deg is not None:
        keep &= tth <= tth_max_deg
    return tth[keep], d[keep], mult[keep]


def simulate_calibrant_image(geometry: DetectorGeometry, calibrant: str,
                             rng: np.random.Generator, *, ring_counts: float = 2000.0,
                             background: float = 20.0, ring_fwhm_deg: float = 0.03,
                             polarization_fraction: float = 0.99, hot_pixels: int = 8,
                             b_factor: float = 0.5) -> np.ndarray:
    """A powder image of a pyFAI calibrant seen with `geometry`, int32 of detector shape.

    ring_counts: mean counts at the peak of the strongest ring's 2theta profile (before the
        pixel-area average, solid angle and polarization); background: mean counts of the smooth background at the beam centre
        (it decays slowly with 2theta); ring_fwhm_deg: ring FWHM in 2theta (deg);
        polarization_fraction: pyFAI polarization factor (0.99: horizontal synchrotron
        beam); hot_pixels: how many isolated pixels read 1e5..1e6 counts; b_factor: Debye-
        Waller B (Angstrom^2) damping the outer rings.  Gap pixels read -1.
    Deterministic for a given rng state.
    """
    if ring_counts < 0 or background < 0:
        raise ValueError("ring_counts and background must be >= 0")
    if not ring_fwhm_deg > 0:
        raise ValueError(f"ring_fwhm_deg must be > 0, got {ring_fwhm_deg}")
    if hot_pixels < 0:
        raise ValueError(f"hot_pixels must be >= 0, got {hot_pixels}")
    ai = geometry.to_pyfai(parallax=False)
    shape = geometry.shape
    if geometry.sensor is None:
        # 2theta of the pixel centres, exactly as pyFAI predicts rings
        tth = np.asarray(ai.center_array(shape, unit="2th_deg", scale=True), dtype=float)
    else:  # where each pixel looks (hklflow's parallax; the calibration corrects with pyFAI's)
        tth = np.degrees(geometry.two_theta_chi(*geometry.pixel_grid())[0])
    tth_lo, tth_hi = float(tth.min()), float(tth.max())

    rings_tth, d, mult = calibrant_rings(calibrant, geometry.wavelength,
                                         tth_hi + 5 * ring_fwhm_deg)
    sigma = ring_fwhm_deg / (2.0 * math.sqrt(2.0 * math.log(2.0)))
    # powder ring strength: multiplicity x Lorentz (1 / (sin theta sin 2theta)) x Debye-
    # Waller, spread over the cone (circumference ~ sin 2theta) -> per unit solid angle
    th = np.radians(rings_tth) / 2.0
    strength = (mult * np.exp(-b_factor / (2.0 * d ** 2))
                / (np.sin(th) * np.sin(2 * th)) / np.sin(2 * th))

    # 1D profile on a fine 2theta grid (cheap), interpolated at every pixel
    step = sigma / 8.0
    pad = 2.0 * float(np.degrees(geometry.pixel_size[0] / geometry.dist)) + step
    grid = np.arange(tth_lo - pad, tth_hi + pad, step)
    profile = np.zeros_like(grid)
    for t0, s in zip(rings_tth, strength):
        lo, hi = np.searchsorted(grid, [t0 - 6 * sigma, t0 + 6 * sigma])
        if hi > lo:
            profile[lo:hi] += s * np.exp(-0.5 * ((grid[lo:hi] - t0) / sigma) ** 2)
    if strength.size and profile.max() > 0:
        profile *= ring_counts / profile.max()
    # smooth background: air/Compton-like, decaying slowly with 2theta
    profile += background * (0.4 + 0.6 * np.exp(-grid / 25.0))

    # integrate over the pixel area (3 x 3 sub-pixels): 2theta varies linearly across a
    # pixel, so sub-pixel 2theta = centre + gradient . offset (rings narrower than a pixel
    # are then neither aliased nor jagged)
    g_rows, g_cols = np.gradient(tth)
    signal = np.zeros(shape, dtype=np.float64)
    offsets = (-1.0 / 3.0, 0.0, 1.0 / 3.0)
    for o1 in offsets:
        for o2 in offsets:
            signal += np.interp(tth + o1 * g_rows + o2 * g_cols, grid, profile)
    signal /= len(offsets) ** 2
    # solid angle relative to normal incidence at the PONI, and polarization
    signal *= ai.solidAngleArray(shape, absolute=False)
    if geometry.sensor is None:
        signal *= ai.polarization(shape, factor=polarization_fraction)
    else:
        rows, cols = geometry.pixel_grid()
        signal *= geometry.polarization(rows, cols, polarization_fraction)
        signal *= geometry.sensor_efficiency(rows, cols)
    image = rng.poisson(np.clip(signal, 0, None)).astype(np.int32)

    gaps = geometry.detector_mask()
    valid = np.flatnonzero(~gaps.ravel())
    if hot_pixels and valid.size:
        idx = rng.choice(valid, size=min(hot_pixels, valid.size), replace=False)
        image.ravel()[idx] = rng.integers(100_000, 1_000_000, size=idx.size, dtype=np.int32)
    image[gaps] = GAP_VALUE
    return image
