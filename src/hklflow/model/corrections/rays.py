"""What the per-pixel corrections see of a set of pixels: where they look from the sample
(with a thick sensor, its parallax solved once for all of them)."""
from __future__ import annotations

import functools

import numpy as np

from ..geometry import polarization_at, q_from_directions


class PixelRays:
    """Pixels at continuous coordinates (rows, cols) of a detector geometry."""

    def __init__(self, geometry, rows, cols):
        self.geometry = geometry
        self.rows = np.asarray(rows, dtype=float)
        self.cols = np.asarray(cols, dtype=float)

    def __len__(self) -> int:
        return int(self.rows.size)

    @functools.cached_property
    def positions(self) -> np.ndarray:
        """Lab positions (m, (n, 3)) where the pixels' rays enter the sensor
        (DetectorGeometry.lab_positions)."""
        return self.geometry.lab_positions(self.rows, self.cols)

    @functools.cached_property
    def path_lengths(self) -> np.ndarray:
        """Distance (m) from the sample to where each pixel's rays enter the sensor."""
        return np.linalg.norm(self.positions, axis=-1)

    @functools.cached_property
    def directions(self) -> np.ndarray:
        """Unit lab directions (n, 3) the pixels look along."""
        return self.positions / self.path_lengths[:, None]

    @functools.cached_property
    def q(self) -> np.ndarray:
        """Lab Q (1/Angstrom, no 2 pi), (n, 3): DetectorGeometry.lab_q."""
        return q_from_directions(self.directions, self.geometry.wavelength)

    def polarization(self, fraction: float) -> np.ndarray:
        return polarization_at(self.positions, fraction)
