"""hklflow.algorithms.peaks.gain: the gain of a detector (counts per photon) seen in the
background of its frames (background_dispersion), which the strong-pixel test takes, and the
search's check of the configured gain (check_gain)."""
from __future__ import annotations

import numpy as np
import pytest

from hklflow.algorithms.peaks import spotfinding as sf
from hklflow.settings.params import PeakSearchParams


def test_the_dispersion_test_takes_the_detectors_gain_and_the_search_checks_it(caplog):
    """A detector of g counts per photon: the kernel's test with gain g equals the numpy
    reference's (DIALS's dispersion with its gain), finds the peaks and not the noise that
    the test with gain 1 takes for peaks; the background's variance / mean estimates g
    (background_dispersion), and a config that says otherwise is warned about."""
    import logging

    from hklflow.algorithms.peaks.gain import background_dispersion, check_gain

    rng = np.random.default_rng(4)
    photons = rng.poisson(6.0, (160, 150))
    photons[30:33, 40:43] += 400  # two peaks
    photons[100:103, 80:83] += 300
    valid = np.ones(photons.shape, bool)
    ny, nx = photons.shape
    out = [np.empty(ny * nx, np.int32), np.empty(ny * nx, np.int32), np.empty(ny * nx),
           np.empty(ny * nx), np.empty(len(sf.FRAME_STATS))]
    p = PeakSearchParams.defaults()
    for gain in (1.0, 2.0, 3.0):
        frame = (gain * photons).astype(np.int32)
        found = {}
        for g in sorted({1.0, gain}):
            n = sf.strong_pixels_frame(frame, sf.pixel_flags(valid), 3, 3, p.sigma_background,
                                       p.sigma_strong, p.min_local, p.global_threshold, 0.0,
                                       False, 2**31 - 1, *out, gain=g)
            strong = np.zeros(frame.shape, bool)
            strong[out[0][:n], out[1][:n]] = True
            ref, _ = sf.strong_pixels_numpy(frame, valid, gain=g)
            assert np.array_equal(strong, ref)
            found[g] = strong
        right = found[gain]
        assert right[30:33, 40:43].any() and right[100:103, 80:83].any()
        outside = np.ones(frame.shape, bool)
        outside[25:38, 35:48] = outside[95:108, 75:88] = False
        assert right[outside].sum() <= 3  # the noise stays noise
        if gain > 1:  # gain 1 takes the noise for peaks
            assert found[1.0][outside].sum() > 50 * max(1, right[outside].sum())
        assert background_dispersion(frame, valid, 3, 3) == pytest.approx(gain, rel=0.1)

    class Stack:  # (what check_gain reads of a FrameStack)
        nframes = 3

        def read(self, a, b):
            return np.repeat((2 * photons)[None], b - a, axis=0)

    with caplog.at_level(logging.INFO):
        notes = check_gain(Stack(), valid, 2**31 - 1, p, logging.getLogger("t"))
    assert len(notes) == 1 and "instrument.detector.gain is 1" in notes[0]
    assert "WARNING" in caplog.text
    import dataclasses

    assert check_gain(Stack(), valid, 2**31 - 1, dataclasses.replace(p, gain=2.0),
                          logging.getLogger("t")) == []
