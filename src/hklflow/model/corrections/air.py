"""Air between sample and detector: exp(-mu_air L), L the path in air from the sample to
where a pixel's rays enter the sensor (the whole path, instrument.air_path null), or the
path along each pixel's direction up to a window normal to the beam at instrument.air_path
(m) downstream of the sample (a flight tube or a helium cone after it)."""
from __future__ import annotations

import numpy as np

from .attenuation import AIR, linear_attenuation


class AirAttenuation:
    name = "air"

    def __init__(self, geometry, air_path: float | None = None):
        self.mu = linear_attenuation(AIR, geometry.wavelength)
        self.air_path = None if air_path is None else float(air_path)

    def path(self, rays) -> np.ndarray:
        if self.air_path is None:
            return rays.path_lengths
        return self.air_path / rays.directions[:, 2]

    def factor(self, rays):
        return np.exp(-self.mu * self.path(rays))

    def notes(self) -> dict:
        return {"model": "exp(-mu L) of dry air (xraydb), L from the sample "
                         + ("to each pixel" if self.air_path is None else
                            f"to a window normal to the beam {self.air_path} m downstream"),
                "mu_per_m": self.mu, "air_path": self.air_path}
