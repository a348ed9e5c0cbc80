"""The detector's gain seen in the frames: the background's variance / mean, which is the
gain (counts per photon) where the background is Poisson photons (dials.estimate_gain's
estimate), checked against instrument.detector.gain by the peak search, whose dispersion
test rests on it."""
from __future__ import annotations

import numpy as np
from scipy.ndimage import uniform_filter

# a background whose variance / mean departs from the config's gain by more than this
# factor is reported: the dispersion test then finds noise (gain too low) or misses peaks
GAIN_MISMATCH = 1.33


def background_dispersion(frame: np.ndarray, usable: np.ndarray, half_r: int, half_c: int,
                          min_windows: int = 1000) -> float | None:
    """The median over the frame's windows (2 half_r + 1 by 2 half_c + 1, every pixel
    usable, some counts) of variance / mean: the detector's gain, counts per photon, where
    the background is Poisson photons (dials.estimate_gain's estimate); a few Bragg peaks
    and slow diffuse gradients do not move the median.  None with fewer than min_windows
    windows (too few counts)."""
    x = np.where(usable, frame, 0).astype(np.float64)
    size = (2 * half_r + 1, 2 * half_c + 1)
    npix = size[0] * size[1]
    full = uniform_filter(usable.astype(np.float64), size, mode="constant") > 1 - 0.5 / npix
    s = uniform_filter(x, size, mode="constant") * npix
    q = uniform_filter(x * x, size, mode="constant") * npix
    ok = full & (s > 0.5)
    if np.count_nonzero(ok) < min_windows:
        return None
    mean = s[ok] / npix
    var = (q[ok] - s[ok] * s[ok] / npix) / (npix - 1)
    return float(np.median(var / mean))


def check_gain(stack, usable, trusted_max, params, log) -> list:
    """The background's variance / mean of the scan's middle frame against the config's
    gain (background_dispersion): logged, and a warning (returned too) when they differ
    by more than GAIN_MISMATCH either way."""
    f = stack.nframes // 2
    frame = stack.read(f, f + 1)[0]
    ok = usable & (frame >= 0) & (frame < trusted_max)
    half_r, half_c = params.window[0] // 2, params.window[1] // 2
    measured = background_dispersion(frame, ok, half_r, half_c)
    if measured is None:
        log.info("the background of frame %d holds too few counts to check the gain", f)
        return []
    log.info("background of frame %d: variance / mean %.2f (the detector's gain where it is "
             "Poisson photons; instrument.detector.gain %g)", f, measured, params.gain)
    if 1 / GAIN_MISMATCH <= measured / params.gain <= GAIN_MISMATCH:
        return []
    why = (f"the frames' background has a variance of {measured:.2f} x its mean (frame {f}), "
           f"but instrument.detector.gain is {params.gain:g}: for a detector that does not "
           "count photons set the gain (counts per photon); otherwise the peak search finds "
           "noise (gain too low) or misses peaks, and every volume's uncertainty is off")
    log.warning("%s", why)
    return [why]
