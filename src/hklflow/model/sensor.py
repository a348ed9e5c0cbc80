"""The detector's sensor: where a pixel of a thick sensor looks (parallax) and how many of
the photons reaching it the sensor stops (efficiency).

A photon reaching the sensor's front surface at the angle alpha to its normal travels on
into the sensor, along its own direction, until it is absorbed (Beer-Lambert, linear
attenuation mu, only within the thickness t).  The pixel that records it lies further out,
away from the foot of the normal (the PONI), by the mean of that path's projection on the
surface:

    delta(alpha) = sin(alpha) / mu * (1 - (1 + x) exp(-x)) / (1 - exp(-x)),  x = mu t / cos(alpha)

(pyFAI's ThinSensor.measure_displacement_integrate, "mean depth" model, without a beam
profile), and the sensor stops the fraction

    efficiency(alpha) = 1 - exp(-mu t / cos(alpha))

of them.  mu comes from pyFAI's tables (pyFAI.detectors.sensors: the public SensorMaterial.mu
of its materials) at the beam's energy.

Conventions (docs/conventions.md): the detector's dist is the distance to the sensor's front
surface and the pixels lie in that plane; a pixel at the radius r_p from the PONI records
the rays that entered the front surface at the radius r_s on the same line from the PONI,
with r_s + delta(alpha(r_s)) = r_p, tan(alpha(r_s)) = r_s / dist.  Pixels keep their shapes
and solid angles: parallax moves where a pixel looks, it does not re-bin pixels.  pyFAI's
Geometry.enable_parallax applies the same model (tests/model/test_sensor.py compares both).
"""
from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import numpy as np

from ..base.atomic import atomic_path
from ..base.cache import cache_dir

# hc in keV Angstrom (CODATA 2018, as pyFAI's units.hc)
HC_KEV_ANGSTROM = 12.398419843320026

# pyFAI's sensor materials (pyFAI.detectors.sensors.ALL_MATERIALS; the schema's enum of
# instrument.detector.sensor.material, tests/model/test_sensor.py checks both), and the names
# raw files give them (NXmx sensor_material is free text; a Pilatus CBF header says
# "Silicon sensor" or "CdTe sensor")
MATERIALS = ("Si", "CdTe", "GaAs", "Ge", "CZT", "Se", "Gd2O2S")
_MATERIAL_NAMES = {"si": "Si", "silicon": "Si", "cdte": "CdTe", "cadmium telluride": "CdTe",
                   "gaas": "GaAs", "gallium arsenide": "GaAs", "ge": "Ge", "germanium": "Ge",
                   "czt": "CZT", "cdznte": "CZT", "cadmium zinc telluride": "CZT",
                   "se": "Se", "selenium": "Se", "a-se": "Se", "gd2o2s": "Gd2O2S",
                   "gadox": "Gd2O2S"}

# the entry radius r_s is found by fixed-point iteration r_s <- r_p - delta(r_s): delta
# changes with r_s by at most t/dist (a few 1e-3), so each step gains two to three digits;
# stopped when no radius moves by more than _TOLERANCE (m, 1e-8 of a pixel)
_TOLERANCE = 1e-12
_MAX_ITERATIONS = 30


def material_name(text) -> str | None:
    """pyFAI's name of a sensor material as a raw file or a user writes it ('Silicon', 'si',
    'CdTe'), None when it is not one of MATERIALS."""
    if not isinstance(text, str):
        return None
    return _MATERIAL_NAMES.get(" ".join(text.strip().lower().replace("_", " ").split()))


def energy_kev(wavelength: float) -> float:
    """Photon energy (keV) of a wavelength (Angstrom)."""
    return HC_KEV_ANGSTROM / float(wavelength)


@functools.lru_cache(maxsize=64)
def attenuation_coefficient(material: str, wavelength: float) -> float:
    """Linear attenuation coefficient mu (1/m) of a sensor material at a wavelength
    (Angstrom): pyFAI's table (SensorMaterial.mu), kept in the cache folder (base.cache)
    once asked for, per pyFAI version."""
    path = _mu_cache_path()
    key = f"{material}@{float(wavelength)!r}"
    known = _read_mu_cache(path)
    if key in known:
        return known[key]
    mu = pyfai_attenuation_coefficient(material, wavelength)
    try:
        with atomic_path(path) as tmp:  # (a job that writes at the same time: one wins)
            tmp.write_text(json.dumps({**_read_mu_cache(path), key: mu}))
    except OSError:  # a cache that cannot be written: made again next time
        pass
    return mu


def pyfai_attenuation_coefficient(material: str, wavelength: float) -> float:
    """mu (1/m) from pyFAI's table itself (attenuation_coefficient keeps it)."""
    # (here: pyFAI.detectors loads every detector class, a second; only a sensor needs it)
    from pyFAI.detectors.sensors import ALL_MATERIALS

    if material not in ALL_MATERIALS:
        raise ValueError(f"unknown sensor material {material!r}: pyFAI knows "
                         f"{sorted(ALL_MATERIALS)}")
    try:
        return float(ALL_MATERIALS[material].mu(energy_kev(wavelength), unit="m^-1"))
    except RuntimeError as exc:  # pyFAI: energy outside the tabulated range
        raise ValueError(f"sensor {material}: no attenuation at {energy_kev(wavelength):.4g} "
                         f"keV in pyFAI's table ({exc})") from None


def _mu_cache_path() -> Path:
    return Path(cache_dir()) / f"sensor-attenuation-pyFAI{version('pyFAI')}.json"


def _read_mu_cache(path: Path) -> dict:
    try:
        known = json.loads(path.read_text())
    except (OSError, ValueError):  # absent, unreadable, being replaced
        return {}
    return {k: float(v) for k, v in known.items() if isinstance(v, (int, float))} \
        if isinstance(known, dict) else {}


@dataclass(frozen=True)
class Sensor:
    """A detector's sensor: material (pyFAI's name, MATERIALS) and thickness (m)."""

    material: str
    thickness: float

    def __post_init__(self):
        name = material_name(self.material)
        if name is None:
            raise ValueError(f"sensor material must be one of {list(MATERIALS)}, got "
                             f"{self.material!r}")
        t = self.thickness
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not 0 < t < 0.1 \
                or not math.isfinite(t):
            raise ValueError(f"sensor thickness must be a length in metres (0 < t < 0.1), "
                             f"got {t!r}")
        object.__setattr__(self, "material", name)
        object.__setattr__(self, "thickness", float(t))

    @classmethod
    def of(cls, value) -> "Sensor | None":
        """A Sensor from a Sensor, a mapping {material, thickness} (the config's
        instrument.detector.sensor, a file's record) or None."""
        if value is None or isinstance(value, Sensor):
            return value
        if isinstance(value, dict) and set(value) == {"material", "thickness"}:
            return cls(value["material"], value["thickness"])
        raise ValueError(f"a sensor is {{material, thickness}}, got {value!r}")

    def as_dict(self) -> dict:
        return {"material": self.material, "thickness": self.thickness}

    def describe(self) -> str:
        return f"{self.material} {self.thickness * 1e6:g} um"

    def mu(self, wavelength: float) -> float:
        """Linear attenuation coefficient (1/m) at the wavelength (Angstrom)."""
        return attenuation_coefficient(self.material, float(wavelength))

    # ---- per ray: alpha from tan(alpha) = r / dist -----------------------------------
    def displacement(self, r, dist: float, wavelength: float) -> np.ndarray:
        """delta (m): how much further from the PONI than the ray's entry at the radius r
        (m) its photons are recorded, on a detector at the distance dist (m)."""
        r = np.abs(np.asarray(r, dtype=float))
        mu = self.mu(wavelength)
        hyp = np.hypot(r, dist)  # dist / cos(alpha)
        x = mu * self.thickness * hyp / dist
        stopped = -np.expm1(-x)  # 1 - exp(-x)
        return (r / hyp) / mu * (stopped - x * np.exp(-x)) / stopped

    def efficiency(self, cos_alpha, wavelength: float) -> np.ndarray:
        """The fraction of the photons arriving at the angle alpha that the sensor stops."""
        return -np.expm1(-self.mu(wavelength) * self.thickness / np.asarray(cos_alpha, float))

    def recorded_radius(self, r_entry, dist: float, wavelength: float) -> np.ndarray:
        """r_p: where the rays entering at the radius r_entry (m from the PONI) are recorded."""
        r_entry = np.asarray(r_entry, dtype=float)
        return r_entry + self.displacement(r_entry, dist, wavelength)

    def entry_radius(self, r_recorded, dist: float, wavelength: float) -> np.ndarray:
        """r_s: where the rays a pixel at the radius r_recorded (m from the PONI) records
        entered the front surface (the inverse of recorded_radius)."""
        r_p = np.asarray(r_recorded, dtype=float)
        r_s = r_p
        for _ in range(_MAX_ITERATIONS):
            new = r_p - self.displacement(r_s, dist, wavelength)
            moved = np.abs(new - r_s)
            r_s = new
            if not moved.size or not np.nanmax(moved, initial=0.0) > _TOLERANCE:
                break
        return r_s

    # ---- in the detector's plane: offsets (d1, d2) from the PONI -------------------------
    def entry_offsets(self, d1, d2, dist: float, wavelength: float):
        """(d1, d2) of the entry point of the rays that the pixel at plane offsets (d1, d2)
        (m from the PONI) records: moved towards the PONI along the same line."""
        d1, d2 = np.asarray(d1, dtype=float), np.asarray(d2, dtype=float)
        r_p = np.hypot(d1, d2)
        r_s = self.entry_radius(r_p, dist, wavelength)
        with np.errstate(invalid="ignore", divide="ignore"):
            scale = np.where(r_p > 0, r_s / r_p, 1.0)
        return d1 * scale, d2 * scale

    def recorded_offsets(self, d1, d2, dist: float, wavelength: float):
        """(d1, d2) where the rays entering at plane offsets (d1, d2) are recorded: moved
        away from the PONI along the same line."""
        d1, d2 = np.asarray(d1, dtype=float), np.asarray(d2, dtype=float)
        r_s = np.hypot(d1, d2)
        r_p = self.recorded_radius(r_s, dist, wavelength)
        with np.errstate(invalid="ignore", divide="ignore"):
            scale = np.where(r_s > 0, r_p / r_s, 1.0)
        return d1 * scale, d2 * scale
