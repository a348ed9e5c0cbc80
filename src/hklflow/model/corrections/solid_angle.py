"""The solid angle of each pixel relative to one at normal incidence (pyFAI's
solidAngleArray, absolute=False: DetectorGeometry.solid_angle)."""
from __future__ import annotations


class SolidAngle:
    name = "solid_angle"

    def __init__(self, geometry):
        self.geometry = geometry

    def factor(self, rays):
        return self.geometry.solid_angle(rays.rows, rays.cols)

    def notes(self) -> dict:
        return {"model": "cos^3 of the incidence angle on the detector, relative to normal "
                         "incidence (pyFAI solidAngleArray, absolute=False)"}
