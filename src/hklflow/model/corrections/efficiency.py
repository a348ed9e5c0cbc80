"""A thick sensor's efficiency, 1 - exp(-mu t / cos alpha) (model/sensor.py): the fraction
of the photons reaching a pixel that it counts, so that the volumes are photons reaching the
detector (absolute: the default), or relative to normal incidence (the scale of counts a
fully absorbing sensor records at normal incidence: hklflow's before issue 81)."""
from __future__ import annotations

import numpy as np


class SensorEfficiency:
    name = "efficiency"

    def __init__(self, geometry, relative: bool = False):
        self.geometry = geometry
        self.relative = bool(relative)
        self.normal = float(geometry.sensor.efficiency(1.0, geometry.wavelength))

    def factor(self, rays):
        g = self.geometry
        absolute = g.sensor.efficiency(g.dist / rays.path_lengths, g.wavelength)
        return np.asarray(absolute) / self.normal if self.relative else np.asarray(absolute)

    def notes(self) -> dict:
        s = self.geometry.sensor
        return {"model": "1 - exp(-mu t / cos alpha)"
                         + (", relative to normal incidence" if self.relative else ""),
                **s.as_dict(), "mu_per_m": float(s.mu(self.geometry.wavelength)),
                "at_normal_incidence": self.normal}
