"""The corrections of the transform, composed in one place (corrections_for), each a named
factor in a module of its own: the fraction of the intensity a pixel would record without
it that it does record.  The transform divides every pixel-frame's count by the product of
the factors that apply to it:

* per pixel (once per scan, in the pixel table): solid_angle, polarization, efficiency (a
  thick sensor's), air, and absorption by a sample whose shape does not turn with the scan
  (a cylinder along the rotation axis);
* per pixel and frame: absorption by a plate, which turns with the crystal (evaluated at
  the boundaries of the frames the transform adds at a time: PixelFrameCorrection);
* per frame: the monitor (raw.monitors, the transform's frame scale).

A new correction is a module here with a class of the PixelCorrection or
PixelFrameCorrection shape, its entry in corrections_for and its key in the config's
schema (reduction.transform).  Each factor says what it applied (notes), which the
volumes' notes record.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .absorption import CylinderAbsorption, PlateAbsorption, SampleShape
from .air import AirAttenuation
from .efficiency import SensorEfficiency
from .polarization import Polarization
from .rays import PixelRays
from .solid_angle import SolidAngle

__all__ = ["Corrections", "PixelRays", "SampleShape", "corrections_for"]


@dataclass(frozen=True)
class Corrections:
    """The corrections of one scan's transform, in the order they are divided out."""

    pixel: tuple = ()  # PixelCorrection: factor(rays) per pixel
    pixel_frame: tuple = ()  # PixelFrameCorrection: factor(directions, frame) per pixel
    left_out: dict = field(default_factory=dict)  # name -> why it does not apply

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.pixel + self.pixel_frame]

    def pixel_factor(self, rays: PixelRays) -> np.ndarray:
        """1 / the product of the per-pixel factors (float64), each factor rounded to
        float32 first, as pyFAI's arrays are (so the table equals the one made from them)."""
        corr = np.ones(len(rays))
        with np.errstate(divide="ignore", invalid="ignore"):
            for c in self.pixel:
                corr /= np.asarray(c.factor(rays)).astype(np.float32)
        return corr

    def notes(self) -> dict:
        """What was applied, with its settings, and what was not and why."""
        return {"applied": {c.name: c.notes() for c in self.pixel + self.pixel_frame},
                "not_applied": dict(self.left_out)}


def corrections_for(geometry, *, solid_angle: bool = True, polarization: bool = True,
                    polarization_fraction: float = 0.99, efficiency: bool = True,
                    air: bool = True, air_path: float | None = None,
                    efficiency_relative: bool = False,
                    absorption: bool = True, shape: SampleShape | None = None,
                    scan=None, min_transmission: float = 0.1) -> Corrections:
    """The corrections of a scan's transform from its settings (reduction.transform's
    switches, instrument.air_path, the sample's shape): geometry a DetectorGeometry, scan
    its ScanGeometry with UB (for a plate, which turns with the crystal).
    efficiency_relative: a thick sensor's efficiency relative to normal incidence (the
    transform's table before these corrections), not absolute."""
    pixel, pixel_frame, left_out = [], [], {}
    if solid_angle:
        pixel.append(SolidAngle(geometry))
    else:
        left_out["solid_angle"] = "switched off (reduction.transform.solid_angle)"
    if polarization:
        pixel.append(Polarization(geometry, polarization_fraction))
    else:
        left_out["polarization"] = "switched off (reduction.transform.polarization)"
    if geometry.sensor is None:
        left_out["efficiency"] = "no thick sensor (instrument.detector.sensor)"
    elif efficiency:
        pixel.append(SensorEfficiency(geometry, efficiency_relative))
    else:
        left_out["efficiency"] = "switched off (reduction.transform.efficiency)"
    if not air:
        left_out["air"] = "switched off (reduction.transform.air)"
    elif air_path is not None and air_path == 0:
        left_out["air"] = "no air between sample and detector: vacuum (instrument.air_path: 0)"
    else:
        pixel.append(AirAttenuation(geometry, air_path))
    if shape is None:
        left_out["absorption"] = "the sample has no shape (samples.NAME.shape)"
    elif not absorption:
        left_out["absorption"] = "switched off (reduction.transform.absorption)"
    elif shape.kind == "cylinder":
        if scan is None:
            raise ValueError("the cylinder's absorption needs the scan's rotation axis")
        pixel.append(CylinderAbsorption(shape, geometry.wavelength, scan.axis_lab,
                                        min_transmission))
    else:
        if scan is None:
            raise ValueError("the plate's absorption needs the scan's geometry and UB")
        pixel_frame.append(PlateAbsorption(shape, geometry.wavelength, scan, min_transmission))
    return Corrections(tuple(pixel), tuple(pixel_frame), left_out)
