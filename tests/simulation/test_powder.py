"""hklflow.simulation.powder: simulated calibrant images, their rings where pyFAI puts the
calibrant's rings, the detector's gaps and hot pixels, the same image from the same seed; a
2M detector's."""
from __future__ import annotations

import time

import numpy as np

from hklflow.algorithms.calibration import ring_two_theta
from hklflow.model.geometry import DetectorGeometry
from hklflow.simulation.powder import simulate_calibrant_image

from experiment_helpers import PX, TRUE_300K


def test_simulated_image_rings_gaps_hot_pixels_and_determinism(image_300k):
    img = image_300k
    assert img.dtype == np.int32 and img.shape == TRUE_300K.shape
    gaps = TRUE_300K.detector_mask()
    assert gaps.any() and (img[gaps] == -1).all() and (img[~gaps] >= 0).all()
    assert (img >= 100_000).sum() == 8  # the default handful of hot pixels
    again = simulate_calibrant_image(TRUE_300K, "CeO2", np.random.default_rng(3))
    other = simulate_calibrant_image(TRUE_300K, "CeO2", np.random.default_rng(4))
    assert np.array_equal(img, again) and not np.array_equal(img, other)
    # the rings sit where pyFAI puts the calibrant's rings for this geometry
    ai = TRUE_300K.to_pyfai()
    res = ai.integrate1d(img.astype(np.float32), 3000, unit="2th_deg",
                         mask=(img < 0) | (img >= 100_000), method=("no", "histogram", "cython"))
    x, y = np.asarray(res.radial), np.asarray(res.intensity)
    rings = np.degrees(ring_two_theta("CeO2", 0.6))
    rings = rings[(rings > x.min() + 0.2) & (rings < x.max() - 0.2)]
    assert len(rings) >= 4
    for t in rings:
        near = np.abs(x - t) < 0.15
        assert abs(x[near][np.argmax(y[near])] - t) < 0.02, f"ring at {t:.3f} deg misplaced"
        assert y[near].max() > 3 * np.median(y), f"ring at {t:.3f} deg not above background"


def test_simulation_of_a_2m_detector():
    """The 2M detector's image: its module gaps -1 where pyFAI's detector mask has them,
    counts elsewhere.  (Its time is printed, not asserted: speed is the benchmarks' to
    measure; ~1.5 s here, and over 5 s beside a running demo.)"""
    g = DetectorGeometry("PilatusCdTe2M", 0.25, 850 * PX, 740 * PX, 0.003, -0.004, 0.005, 0.5)
    t0 = time.perf_counter()
    img = simulate_calibrant_image(g, "CeO2", np.random.default_rng(0))
    print(f"\nsimulate_calibrant_image PilatusCdTe2M {img.shape}: "
          f"{time.perf_counter() - t0:.2f} s")
    assert img.shape == (1679, 1475)
    gaps = g.detector_mask()
    assert gaps.sum() > 100_000 and (img[gaps] == -1).all() and (img[~gaps] >= 0).all()
