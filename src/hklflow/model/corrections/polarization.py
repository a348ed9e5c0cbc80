"""pyFAI's polarization factor, P = 1/2 (1 + cos^2 2theta - f cos 2chi sin^2 2theta), of the
direction each pixel looks along (instrument.polarization_fraction f)."""
from __future__ import annotations


class Polarization:
    name = "polarization"

    def __init__(self, geometry, fraction: float):
        self.geometry = geometry
        self.fraction = float(fraction)

    def factor(self, rays):
        if self.geometry.sensor is None:  # (as pyFAI computes it: the same numbers)
            return self.geometry.polarization(rays.rows, rays.cols, self.fraction)
        return rays.polarization(self.fraction)

    def notes(self) -> dict:
        return {"model": "pyFAI polarization factor", "polarization_fraction": self.fraction}
