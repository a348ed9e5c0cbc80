"""The one geometry of hklflow: lab frame, detector, goniometer, Q and HKL.

Conventions (docs/conventions.md is the long version; nothing else re-derives these):

* Lab frame = pyFAI's (x1, x2, x3), right-handed: L3 along the beam (downstream),
  L1 vertical up, L2 = L3 x L1 horizontal.
  Lab vectors are numpy arrays ordered (L1, L2, L3).
* Detector = pyFAI PONI parameters: dist, poni1, poni2 (m), rot1, rot2, rot3 (rad),
  a pyFAI detector name, its orientation (pyFAI's 1..4, default 3: where the array's
  pixel (0, 0) lies, instrument.detector.orientation) and the wavelength.  Wavelengths are
  in Angstrom everywhere in hklflow (PONI files store metres; conversion happens only at
  the pyFAI boundary).
* Pixel coordinates are continuous (row, col) = (slow, fast) with pixel (i, j) covering
  [i, i+1) x [j, j+1): the centre of pixel (i, j) is (i + 0.5, j + 0.5) (as in DIALS).
  pyFAI's index d1 of a pixel centre is row - 0.5.
* 2theta and chi are pyFAI's: chi = atan2(L1, L2) of the scattered direction.
* A thick sensor (DetectorGeometry.sensor, model/sensor.py) moves where a pixel looks
  (parallax): every pixel <-> direction mapping here applies it, as pyFAI's
  Geometry.enable_parallax does; dist is then the distance to the sensor's front surface.
* Q = k_f - k_i with |k| = 1/lambda (no 2 pi), in 1/Angstrom; |Q| = 1/d.
* Goniometer: Q_lab = R_off . R_scan(phi) . U . B . h, with R_scan a right-handed rotation
  by (sense * phi) about the scan axis (a lab vector at zero offsets) and R_off the product
  of the per-scan offset rotations, outermost first.  So h = (U B)^-1 R_scan^-1 R_off^-1 Q_lab.
* Frames: frame i covers phi in [phi0 + i*step, phi0 + (i+1)*step); a continuous frame
  coordinate z maps to phi = phi0 + z*step (centre of frame i: z = i + 0.5).
"""
from __future__ import annotations

import copy
import functools
import json
import math
import os
from dataclasses import dataclass, field, replace
from importlib import resources
from importlib.metadata import version

import numpy as np

from ..base.atomic import atomic_path
from ..base.cache import CACHE_ENV, cache_dir
from ..base.errors import FileFormatError, InputMismatchError
from .sensor import Sensor

BEAM_DIRECTION = np.array([0.0, 0.0, 1.0])  # L3: unit vector of the incident beam


# --------------------------------------------------------------------------------------
# Rotations
# --------------------------------------------------------------------------------------
def axis_rotation(axis, angle_rad):
    """Right-handed rotation matrix by angle_rad about the unit vector axis (Rodrigues).

    angle_rad may be an array: the result then has shape angle.shape + (3, 3).
    """
    e = np.asarray(axis, dtype=float)
    e = e / np.linalg.norm(e)
    ang = np.asarray(angle_rad, dtype=float)
    c, s = np.cos(ang)[..., None, None], np.sin(ang)[..., None, None]
    K = np.array([[0.0, -e[2], e[1]], [e[2], 0.0, -e[0]], [-e[1], e[0], 0.0]])
    return np.eye(3) * c + s * K + (1.0 - c) * np.outer(e, e)


def pyfai_tilt_matrix(rot1, rot2, rot3):
    """pyFAI's detector rotation matrix: lab = M . (p1 - poni1, p2 - poni2, dist).

    Same formula as pyFAI.geometry.core.Geometry.rotation_matrix (rotations about axes 1, 2
    left-handed, about axis 3 right-handed, applied in the order 1, 2, 3).
    """
    c1, s1 = math.cos(rot1), math.sin(rot1)
    c2, s2 = math.cos(rot2), math.sin(rot2)
    c3, s3 = math.cos(rot3), math.sin(rot3)
    r1 = np.array([[1.0, 0.0, 0.0], [0.0, c1, s1], [0.0, -s1, c1]])
    r2 = np.array([[c2, 0.0, -s2], [0.0, 1.0, 0.0], [s2, 0.0, c2]])
    r3 = np.array([[c3, -s3, 0.0], [s3, c3, 0.0], [0.0, 0.0, 1.0]])
    return r3 @ r2 @ r1


# --------------------------------------------------------------------------------------
# Detector
# --------------------------------------------------------------------------------------
ORIENTATIONS = (1, 2, 3, 4)  # pyFAI's detector orientations (3 = pyFAI's default)
DEFAULT_ORIENTATION = 3


def check_orientation(orientation) -> int:
    """The orientation as an int, or ValueError when it is not one of pyFAI's 1..4."""
    try:
        o = int(orientation)
    except (TypeError, ValueError):
        o = None
    if o not in ORIENTATIONS or o != orientation or isinstance(orientation, bool):
        raise ValueError(f"detector orientation must be one of pyFAI's {list(ORIENTATIONS)} "
                         f"(docs/conventions.md), got {orientation!r}")
    return o


def pyfai_detector(name: str, orientation: int = DEFAULT_ORIENTATION):
    """A pyFAI detector by name with the given orientation (cached; treat as read-only)."""
    return _pyfai_detector(name, check_orientation(orientation))


@functools.lru_cache(maxsize=32)
def _pyfai_detector(name: str, orientation: int):
    # (here: pyFAI's import takes most of a second; most jobs need only this module's own geometry)
    import pyFAI.detectors

    try:
        return pyFAI.detectors.detector_factory(name, config={"orientation": orientation})
    except Exception as exc:  # pyFAI raises RuntimeError/KeyError variants
        raise ValueError(f"unknown pyFAI detector name {name!r}: {exc}") from None


# --------------------------------------------------------------------------------------
# Detector facts: what the steps ask of a pyFAI detector, cached on disk
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DetectorFacts:
    """What the steps need of a pyFAI detector with an orientation: shape, pixel sizes (m),
    the detector's own mask (module gaps) and whether its pixels form a regular flat grid.
    For a regular grid the position of continuous pixel coordinate (row, col) in the
    detector plane is pixel1 * row (ny - row for orientations 1, 2) and pixel2 * col
    (nx - col for orientations 1, 4): pyFAI's calc_cartesian_positions, checked on every
    pixel when the facts are made.  Otherwise positions come from pyFAI itself."""

    name: str
    orientation: int
    shape: tuple
    pixel1: float
    pixel2: float
    mask: np.ndarray | None = field(repr=False, compare=False)  # bool (rows, cols), True = gap
    regular: bool = False

    @classmethod
    def from_pyfai(cls, det, name: str, orientation: int) -> "DetectorFacts":
        shape = tuple(int(n) for n in det.shape)
        mask = None if det.mask is None else np.asarray(det.mask, dtype=bool)
        facts = cls(name, int(orientation), shape, float(det.pixel1), float(det.pixel2), mask)
        regular = (getattr(det, "_pixel_corners", None) is None
                   and not getattr(det, "splinefile", None))
        if regular:  # the formula must give pyFAI's positions on every pixel centre
            rows, cols = np.meshgrid(np.arange(shape[0]) + 0.5, np.arange(shape[1]) + 0.5,
                                     indexing="ij")
            p1, p2, p3 = det.calc_cartesian_positions(rows - 0.5, cols - 0.5, center=True,
                                                      use_cython=False)
            q1, q2 = replace(facts, regular=True).plane_positions(rows, cols)
            tol = 1e-9 * max(facts.pixel1, facts.pixel2)
            regular = (p3 is None or not np.any(p3)) and bool(
                np.abs(np.asarray(p1) - q1).max() <= tol and np.abs(np.asarray(p2) - q2).max() <= tol)
        return replace(facts, regular=regular)

    def plane_positions(self, rows, cols):
        """(p1, p2) in metres of continuous pixel coordinates (regular grids only)."""
        if not self.regular:
            raise ValueError(f"detector {self.name!r}: pixel positions only from pyFAI")
        rows = np.asarray(rows, dtype=float)
        cols = np.asarray(cols, dtype=float)
        ny, nx = self.shape
        if self.orientation in (1, 2):
            rows = ny - rows
        if self.orientation in (1, 4):
            cols = nx - cols
        return rows * self.pixel1, cols * self.pixel2


DETECTOR_CACHE_ENV = CACHE_ENV
_cache_dir = cache_dir  # where made detector facts are kept (base.cache)


def _facts_path(name: str, orientation: int) -> str:

    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
    # pyFAI's version in the name: another pyFAI makes its own facts
    return os.path.join(_cache_dir(), f"detector-{safe}-o{orientation}-pyFAI{version('pyFAI')}.npz")


def _read_facts(path: str, name: str, orientation: int) -> "DetectorFacts | None":
    try:
        with np.load(path, allow_pickle=False) as z:
            if str(z["name"]) != name or int(z["orientation"]) != orientation:
                return None
            shape = tuple(int(n) for n in z["shape"])
            mask = (np.unpackbits(z["mask_bits"], count=shape[0] * shape[1]).astype(bool)
                    .reshape(shape) if bool(z["has_mask"]) else None)
            return DetectorFacts(name, orientation, shape, float(z["pixel1"]), float(z["pixel2"]),
                                 mask, bool(z["regular"]))
    except (OSError, ValueError, KeyError, EOFError):  # absent, unreadable, another layout
        return None


def _write_facts(path: str, facts: DetectorFacts) -> None:
    """Written atomically (jobs may make the same facts at once); a cache that cannot be
    written is left alone (the facts are made again next time)."""
    try:
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez(f, name=facts.name, orientation=facts.orientation,
                     shape=np.array(facts.shape), pixel1=facts.pixel1, pixel2=facts.pixel2,
                     has_mask=facts.mask is not None, regular=facts.regular,
                     mask_bits=np.packbits(facts.mask.ravel()) if facts.mask is not None
                     else np.zeros(0, np.uint8))
    except OSError:
        pass


@functools.lru_cache(maxsize=32)
def _named_detector_facts(name: str, orientation: int) -> DetectorFacts:
    path = _facts_path(name, orientation)
    facts = _read_facts(path, name, orientation)
    if facts is None:
        facts = DetectorFacts.from_pyfai(_pyfai_detector(name, orientation), name, orientation)
        _write_facts(path, facts)
    return facts


def detector_facts(name: str, orientation: int = DEFAULT_ORIENTATION) -> DetectorFacts:
    """The facts of a pyFAI detector (cached; treat as read-only).  Made from pyFAI once per
    pyFAI version and kept in the cache folder (_cache_dir): importing pyFAI's detectors
    costs every job a second or more, the file a few milliseconds."""
    return _named_detector_facts(name, check_orientation(orientation))


@functools.lru_cache(maxsize=1)
def pyfai_tables() -> dict:
    """Detector shapes and calibrant names made from pyFAI (data/detector_shapes.json, checked
    against pyFAI by the tests), so that parsing the Snakefile (every cluster job does)
    need not import pyFAI (a second or more)."""
    return json.loads(resources.files("hklflow").joinpath("data/detector_shapes.json").read_text())


def known_calibrants(name: str | None = None) -> set:
    """pyFAI's calibrant names (from the table; pyFAI itself when `name` is not in it)."""
    names = set(pyfai_tables()["calibrants"])
    if name is not None and name not in names:
        # (here: pyFAI's import takes most of a second; most jobs need only this module's own geometry)
        from pyFAI.calibrant import CALIBRANT_FACTORY

        names = set(CALIBRANT_FACTORY.all)
    return names


_PONI_NUMBERS = {"distance": "dist", "poni1": "poni1", "poni2": "poni2", "rot1": "rot1",
                 "rot2": "rot2", "rot3": "rot3", "wavelength": "wavelength"}


def _written_poni(path) -> dict | None:
    """DetectorGeometry fields (all but the detector name) of a PONI file in the form
    pyFAI's PoniFile writes (what calibrate_powder writes): poni_version 2 or 2.1, each key
    once, a Detector_config of at most pixel sizes and orientation, a wavelength; or
    poni_version 3 with a Parallax key and a Detector_config that may name the sensor (a
    sensor is the geometry's when Parallax is True).  None for any other file, which
    pyFAI.load then reads (older versions, splines, repeated entries, custom detectors)."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = [ln.strip() for ln in f]
    except (OSError, UnicodeDecodeError):
        return None
    fields = {}
    for line in lines:
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition(":")
        key = key.strip().lower()
        if not sep or key in fields:
            return None
        fields[key] = value.strip()
    keys = {"poni_version", "detector", "detector_config", *_PONI_NUMBERS}
    v3 = fields.get("poni_version") == "3"
    if not (fields.get("poni_version") in ("2", "2.1") and set(fields) == keys
            or v3 and set(fields) == keys | {"parallax"}
            and fields["parallax"] in ("True", "False")):
        return None
    try:
        config = json.loads(fields["detector_config"])
        numbers = {ours: float(fields[key]) for key, ours in _PONI_NUMBERS.items()}
    except ValueError:
        return None
    allowed = {"pixel1", "pixel2", "orientation"} | ({"sensor"} if v3 else set())
    if not isinstance(config, dict) or not set(config) <= allowed \
            or not numbers["wavelength"] > 0:
        return None
    numbers["wavelength"] *= 1e10  # m -> Angstrom
    numbers["orientation"] = int(config.get("orientation") or DEFAULT_ORIENTATION)
    if v3 and fields["parallax"] == "True":
        try:
            numbers["sensor"] = Sensor.of(config.get("sensor"))
        except ValueError:  # (a sensor without thickness, a material hklflow does not know)
            return None
        if numbers["sensor"] is None:
            return None
    return numbers


def enable_pyfai_parallax(geometry, sensor: Sensor) -> None:
    """Turn on pyFAI's parallax correction of a pyFAI Geometry (its public
    Geometry.enable_parallax, which sets its detector's sensor: give it a detector of its
    own) for the sensor, at the geometry's wavelength."""
    geometry.enable_parallax(True, sensor_material=sensor.material,
                             sensor_thickness=sensor.thickness)
    if geometry.parallax is None:  # (pyFAI logs why and carries on without)
        raise ValueError(f"pyFAI could not turn on its parallax correction for the sensor "
                         f"{sensor.describe()} at {geometry.wavelength * 1e10:.5f} A")


def _pyfai_sensor(geometry) -> Sensor | None:
    """The sensor of a pyFAI Geometry whose parallax correction is on, else None."""
    config = getattr(geometry.detector, "sensor", None)
    if getattr(geometry, "parallax", None) is None or config is None or not config.thickness:
        return None
    material = getattr(config.material, "name", config.material)
    return Sensor(material, float(config.thickness))


def _two_theta_chi(pos):
    """pyFAI's 2theta and chi (rad) of lab positions (..., 3)."""
    t1, t2, t3 = pos[..., 0], pos[..., 1], pos[..., 2]
    return np.arctan2(np.hypot(t1, t2), t3), np.arctan2(t1, t2)


def _polarization(tth, chi, fraction: float):
    """pyFAI's polarization factor at 2theta and chi (rad) for a polarization fraction."""
    cos2 = np.cos(tth) ** 2
    return 0.5 * (1.0 + cos2 - fraction * np.cos(2.0 * chi) * (1.0 - cos2))


def polarization_at(positions, fraction: float):
    """pyFAI's polarization factor of lab positions (..., 3) seen from the sample."""
    return _polarization(*_two_theta_chi(positions), fraction)


def detector_shape(name: str) -> tuple[int, int]:
    """(rows, cols) of a pyFAI detector (from the table; pyFAI itself for other names)."""
    shape = pyfai_tables()["shapes"].get(name.lower())
    if shape is None:
        shape = pyfai_detector(name).shape
    return int(shape[0]), int(shape[1])


@dataclass(frozen=True)
class DetectorGeometry:
    """A flat area detector placed with pyFAI's PONI parameters."""

    detector: str
    dist: float  # m, sample to point of normal incidence
    poni1: float  # m, along the slow (row) direction
    poni2: float  # m, along the fast (column) direction
    rot1: float = 0.0  # rad
    rot2: float = 0.0  # rad
    rot3: float = 0.0  # rad
    wavelength: float = 1.0  # Angstrom
    # pyFAI's detector orientation 1..4: how array rows/columns lie in the detector plane
    # (docs/conventions.md); dist, poni and tilts are physical, whatever the orientation
    orientation: int = DEFAULT_ORIENTATION
    # a thick sensor (model/sensor.py): pixels look where parallax puts them; None: none
    sensor: Sensor | None = None

    def __post_init__(self):
        object.__setattr__(self, "orientation", check_orientation(self.orientation))
        object.__setattr__(self, "sensor", Sensor.of(self.sensor))

    # ---- construction / pyFAI boundary -------------------------------------------
    @classmethod
    def from_pyfai(cls, ai, detector_name: str | None = None) -> "DetectorGeometry":
        """The geometry of a pyFAI Geometry/AzimuthalIntegrator, orientation included."""
        name = detector_name or ai.detector.name
        return cls(detector=name, dist=float(ai.dist), poni1=float(ai.poni1), poni2=float(ai.poni2),
                   rot1=float(ai.rot1), rot2=float(ai.rot2), rot3=float(ai.rot3),
                   wavelength=float(ai.wavelength) * 1e10,
                   orientation=int(ai.detector.orientation or DEFAULT_ORIENTATION),
                   sensor=_pyfai_sensor(ai))

    @classmethod
    def from_poni_file(cls, path, detector_name: str | None = None,
                       orientation: int | None = None) -> "DetectorGeometry":
        """The geometry of a PONI file (its Detector_config orientation; 3 when it has
        none).  With `orientation` (the config's), a PONI with another one is refused."""
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path}: PONI file does not exist")
        written = _written_poni(path) if detector_name else None
        if written is not None:  # as pyFAI wrote it: read without importing pyFAI (slow)
            g = cls(detector=detector_name, **written)
        else:
            # (here: pyFAI's import takes most of a second; most jobs need only this module's own geometry)
            import pyFAI

            ai = pyFAI.load(str(path))
            if not ai.wavelength:
                raise FileFormatError(f"{path}: PONI file has no Wavelength")
            g = cls.from_pyfai(ai, detector_name)
        if orientation is not None and g.orientation != check_orientation(orientation):
            raise InputMismatchError(f"{path}: PONI file has detector orientation {g.orientation}, "
                             f"instrument.detector.orientation is {int(orientation)}: run "
                             "calibrate_powder again (or correct the config)")
        return g

    def to_pyfai(self, parallax: bool = True):
        """An AzimuthalIntegrator with this geometry (for calibration, checks and plots); with
        a sensor, pyFAI's parallax correction enabled (Geometry.enable_parallax) unless
        `parallax` is False."""
        # (here: pyFAI's import takes most of a second; most jobs need only this module's own geometry)
        from pyFAI.integrator.azimuthal import AzimuthalIntegrator

        det = self.pyfai_detector()
        if self.sensor is not None and parallax:
            det = copy.deepcopy(det)  # (enable_parallax sets the detector's sensor: not the cached one)
        ai = AzimuthalIntegrator(dist=self.dist, poni1=self.poni1, poni2=self.poni2,
                                 rot1=self.rot1, rot2=self.rot2, rot3=self.rot3,
                                 detector=det, wavelength=self.wavelength * 1e-10)
        if self.sensor is not None and parallax:
            enable_pyfai_parallax(ai, self.sensor)
        return ai

    def write_poni(self, path) -> None:
        """Write a PONI file (a fresh file: pyFAI's Geometry.write appends to an existing one);
        its Detector_config records the orientation."""
        # (here: pyFAI's import takes most of a second; most jobs need only this module's own geometry)
        from pyFAI.io.ponifile import PoniFile

        with atomic_path(path) as tmp, open(tmp, "w") as f:
            PoniFile(self.to_pyfai()).write(f)

    def shifted(self, d_dist=0.0, d_poni1=0.0, d_poni2=0.0) -> "DetectorGeometry":
        """The geometry after a detector translation (along its normal / in its own plane)."""
        return replace(self, dist=self.dist + d_dist, poni1=self.poni1 + d_poni1,
                       poni2=self.poni2 + d_poni2)

    def as_dict(self) -> dict:
        """The fields (the sensor only when there is one: {material, thickness})."""
        d = {k: getattr(self, k) for k in
             ("detector", "dist", "poni1", "poni2", "rot1", "rot2", "rot3", "wavelength",
              "orientation")}
        if self.sensor is not None:
            d["sensor"] = self.sensor.as_dict()
        return d

    def with_sensor(self, sensor) -> "DetectorGeometry":
        """The same placement with another sensor (a Sensor, {material, thickness} or None)."""
        return replace(self, sensor=Sensor.of(sensor))

    # ---- detector facts ------------------------------------------------------------
    def pyfai_detector(self):
        """The pyFAI detector of this geometry, with its orientation (cached, read-only)."""
        return pyfai_detector(self.detector, self.orientation)

    def detector_facts(self) -> DetectorFacts:
        """Shape, pixel sizes, gaps and pixel positions of the detector (detector_facts)."""
        return detector_facts(self.detector, self.orientation)

    @property
    def shape(self) -> tuple[int, int]:
        return detector_shape(self.detector)

    @property
    def pixel_size(self) -> tuple[float, float]:
        d = self.detector_facts()
        return d.pixel1, d.pixel2

    def detector_mask(self) -> np.ndarray:
        """Pixels the detector model marks invalid (module gaps), bool (rows, cols)."""
        m = self.detector_facts().mask
        if m is None:
            return np.zeros(self.shape, dtype=bool)
        return m.copy()

    @property
    def tilt_matrix(self) -> np.ndarray:
        return pyfai_tilt_matrix(self.rot1, self.rot2, self.rot3)

    # ---- pixel -> lab ----------------------------------------------------------------
    def plane_coordinates(self, rows, cols):
        """(p1, p2) in metres on the detector for continuous pixel coordinates (pyFAI's model,
        which applies the orientation)."""
        facts = self.detector_facts()
        if facts.regular:
            return facts.plane_positions(rows, cols)
        det = self.pyfai_detector()
        rows = np.asarray(rows, dtype=float)
        cols = np.asarray(cols, dtype=float)
        p1, p2, p3 = det.calc_cartesian_positions(rows - 0.5, cols - 0.5, center=True,
                                                  use_cython=False)
        if p3 is not None and np.any(p3):
            raise ValueError(f"detector {self.detector!r} is not flat: not supported")
        return np.asarray(p1, dtype=float), np.asarray(p2, dtype=float)

    def lab_positions(self, rows, cols) -> np.ndarray:
        """Lab position (m) of continuous pixel coordinates, shape (..., 3): where the rays
        the pixel records entered the sensor (with a sensor, moved towards the PONI by the
        parallax: model/sensor.py), so its direction from the sample is where it looks."""
        p1, p2 = self.plane_coordinates(rows, cols)
        d1, d2 = p1 - self.poni1, p2 - self.poni2
        if self.sensor is not None:
            d1, d2 = self.sensor.entry_offsets(d1, d2, self.dist, self.wavelength)
        det = np.stack([d1, d2, np.full_like(p1, self.dist)], axis=-1)
        return det @ self.tilt_matrix.T

    def pixel_grid(self):
        """Continuous coordinates of every pixel centre: (rows, cols), each of detector shape."""
        ny, nx = self.shape
        return np.meshgrid(np.arange(ny) + 0.5, np.arange(nx) + 0.5, indexing="ij")

    def pixel_directions(self) -> np.ndarray:
        """Unit scattered-beam directions of every pixel centre, shape (rows, cols, 3)."""
        pos = self.lab_positions(*self.pixel_grid())
        return pos / np.linalg.norm(pos, axis=-1, keepdims=True)

    def lab_q(self, rows, cols) -> np.ndarray:
        """Lab Q (1/Angstrom, no 2 pi) of continuous pixel coordinates, shape (..., 3): the
        one pixel -> Q of hklflow (every consumer gets Q from here)."""
        pos = self.lab_positions(rows, cols)
        return q_from_directions(pos / np.linalg.norm(pos, axis=-1, keepdims=True),
                                 self.wavelength)

    def solid_angle(self, rows, cols) -> np.ndarray:
        """Solid angle of pixels relative to one at the PONI, cos^3 of the incidence angle:
        pyFAI's solidAngleArray (absolute=False) of a flat detector, whose normal is the
        tilted L3 axis at the distance dist, so cos(incidence) = dist / |sample -> pixel|
        (the pixel's own place: a sensor's parallax does not change a pixel's area)."""
        p1, p2 = self.plane_coordinates(rows, cols)
        cos_incidence = self.dist / np.sqrt((p1 - self.poni1) ** 2 + (p2 - self.poni2) ** 2
                                            + self.dist ** 2)
        return cos_incidence ** 3

    def sensor_efficiency(self, rows, cols) -> np.ndarray:
        """The fraction of the photons the sensor stops, 1 - exp(-mu t / cos(alpha)), alpha
        the angle between the rays a pixel records and the detector's normal; 1 without a
        sensor."""
        if self.sensor is None:
            return np.ones(np.broadcast(np.asarray(rows), np.asarray(cols)).shape)
        pos = self.lab_positions(rows, cols)
        cos_alpha = self.dist / np.linalg.norm(pos, axis=-1)
        return self.sensor.efficiency(cos_alpha, self.wavelength)

    def polarization(self, rows, cols, fraction: float) -> np.ndarray:
        """pyFAI's polarization factor (AzimuthalIntegrator.polarization, axis offset 0) for
        a polarization fraction (Ih - Iv) / (Ih + Iv), from pyFAI's 2theta and chi."""
        return _polarization(*self.two_theta_chi(rows, cols), fraction)

    def two_theta_chi(self, rows, cols):
        """pyFAI's 2theta and chi (rad) at continuous pixel coordinates."""
        return _two_theta_chi(self.lab_positions(rows, cols))

    def looking(self, rows, cols, fraction: float):
        """(lab Q, polarization factor, sensor efficiency) of continuous pixel coordinates,
        each as lab_q, polarization and sensor_efficiency give it, from one evaluation of
        where the pixels look (a sensor's parallax is solved once, not three times: the
        transform's pixel tables)."""
        pos = self.lab_positions(rows, cols)
        q = q_from_directions(pos / np.linalg.norm(pos, axis=-1, keepdims=True), self.wavelength)
        efficiency = (np.ones(pos.shape[:-1]) if self.sensor is None else
                      self.sensor.efficiency(self.dist / np.linalg.norm(pos, axis=-1),
                                             self.wavelength))
        return q, _polarization(*_two_theta_chi(pos), fraction), efficiency

    # ---- lab -> pixel ----------------------------------------------------------------
    def _plane_to_pixel(self, p1, p2):
        det = self.detector_facts()
        if not det.regular:
            raise ValueError(f"detector {self.detector!r} has distortion/pixel corners: "
                             "lab -> pixel is implemented for regular flat pixel grids only")
        ny, nx = self.shape
        rows = p1 / det.pixel1
        cols = p2 / det.pixel2
        o = self.orientation  # the inverse of pyFAI's _reorder_indexes_from_orientation
        if o in (1, 2):
            rows = ny - rows
        if o in (1, 4):
            cols = nx - cols
        return rows, cols

    def pixel_from_direction(self, directions):
        """Continuous (rows, cols) where rays from the sample along `directions` hit the
        detector plane; NaN for rays that point away from it.  Points outside the pixel
        array are returned as they are (check with `on_detector`)."""
        d = np.asarray(directions, dtype=float)
        local = d @ self.tilt_matrix  # = (M^T d) row-wise
        with np.errstate(divide="ignore", invalid="ignore"):
            scale = np.where(local[..., 2] > 0, self.dist / local[..., 2], np.nan)
        if self.sensor is not None:  # recorded further out than where the ray enters
            d1, d2 = self.sensor.recorded_offsets(local[..., 0] * scale, local[..., 1] * scale,
                                                  self.dist, self.wavelength)
            return self._plane_to_pixel(d1 + self.poni1, d2 + self.poni2)
        p1 = local[..., 0] * scale + self.poni1
        p2 = local[..., 1] * scale + self.poni2
        return self._plane_to_pixel(p1, p2)

    def fit2d(self) -> dict:
        """The geometry in Fit2D's terms (pyFAI's conversion): directDist (mm), centerX/Y
        (direct beam, pixels), tilt and tiltPlanRotation (deg)."""
        f = self.to_pyfai().getFit2D()
        return {k: float(f[k]) for k in ("directDist", "centerX", "centerY", "tilt", "tiltPlanRotation")}

    def direct_beam_pixel(self) -> tuple[float, float]:
        """Where the direct beam hits the detector plane, continuous (row, col): NeXus's
        beam_center_y/x (not the PONI, which is where the detector normal hits)."""
        rows, cols = self.pixel_from_direction(BEAM_DIRECTION)
        return float(rows), float(cols)

    def beam_centre(self) -> dict:
        """Where the direct beam and the detector normal (the PONI) hit the detector, in
        continuous pixel coordinates (NeXus's beam_center is the direct beam)."""
        p1, p2 = self.pixel_size
        try:
            row, col = self.direct_beam_pixel()
            poni_row, poni_col = self._plane_to_pixel(self.poni1, self.poni2)
        except ValueError:  # detector with distortion: no simple pixel mapping
            row, col = poni_row, poni_col = self.poni1 / p1, self.poni2 / p2
        return {"direct_beam_row": float(row), "direct_beam_col": float(col),
                "poni_row": float(poni_row), "poni_col": float(poni_col)}

    def on_detector(self, rows, cols, margin: float = 0.0):
        ny, nx = self.shape
        rows, cols = np.asarray(rows), np.asarray(cols)
        return ((rows >= margin) & (rows < ny - margin) & (cols >= margin) & (cols < nx - margin))

    def max_two_theta(self) -> float:
        ny, nx = self.shape
        r = np.array([0, 0, ny, ny], dtype=float)
        c = np.array([0, nx, 0, nx], dtype=float)
        tth, _ = self.two_theta_chi(r, c)
        edges_r = np.concatenate([np.linspace(0, ny, 64), np.linspace(0, ny, 64), np.zeros(64),
                                  np.full(64, ny)])
        edges_c = np.concatenate([np.zeros(64), np.full(64, nx), np.linspace(0, nx, 64),
                                  np.linspace(0, nx, 64)])
        tth_e, _ = self.two_theta_chi(edges_r, edges_c)
        return float(max(tth.max(), tth_e.max()))

    def q_max(self) -> float:
        """Largest |Q| (1/Angstrom) on the detector."""
        return 2.0 * math.sin(self.max_two_theta() / 2.0) / self.wavelength

    def d_min(self) -> float:
        """Smallest d-spacing (Angstrom) on the detector."""
        return 1.0 / self.q_max()

    def q_pixel(self) -> float:
        """|Q| size of one pixel at normal incidence (1/Angstrom): pixel / (dist x lambda)."""
        return min(self.pixel_size) / (self.dist * self.wavelength)


# --------------------------------------------------------------------------------------
# Goniometer and scan
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Goniometer:
    """Scan axis (lab vector at zero offsets) with its sense, and named fixed offset axes.

    offset_axes lists (name, lab axis) outermost first; a scan entry gives an angle (deg)
    per name.  R_sample(phi) = R_off . R_scan(phi), R_off = R(o1) . R(o2) . ...
    """

    scan_axis: tuple = (0.0, 1.0, 0.0)
    scan_sense: int = 1
    offset_axes: tuple = ()  # ((name, (a1, a2, a3)), ...)

    def __post_init__(self):
        ax = np.asarray(self.scan_axis, dtype=float)
        if ax.shape != (3,) or not np.linalg.norm(ax) > 0:
            raise ValueError(f"goniometer scan_axis must be a non-zero 3-vector, got {self.scan_axis}")
        if self.scan_sense not in (1, -1):
            raise ValueError(f"goniometer scan_sense must be +1 or -1, got {self.scan_sense}")
        object.__setattr__(self, "scan_axis", tuple(float(v) for v in ax / np.linalg.norm(ax)))
        object.__setattr__(self, "offset_axes", tuple(
            (str(n), tuple(float(v) for v in np.asarray(a, float) / np.linalg.norm(a)))
            for n, a in self.offset_axes))

    @property
    def axis(self) -> np.ndarray:
        return np.asarray(self.scan_axis)

    def offset_rotation(self, offsets: dict | None = None) -> np.ndarray:
        offsets = offsets or {}
        unknown = set(offsets) - {n for n, _ in self.offset_axes}
        if unknown:
            raise ValueError(f"goniometer has no offset axis named {sorted(unknown)}; "
                             f"known: {[n for n, _ in self.offset_axes]}")
        R = np.eye(3)
        for name, ax in self.offset_axes:
            R = R @ axis_rotation(ax, math.radians(float(offsets.get(name, 0.0))))
        return R

    def scan_rotation(self, phi_deg) -> np.ndarray:
        return axis_rotation(self.axis, self.scan_sense * np.radians(phi_deg))

    def rotation(self, phi_deg, offsets: dict | None = None) -> np.ndarray:
        """Sample rotation R_off . R_scan(phi); phi may be an array (-> (..., 3, 3))."""
        return self.offset_rotation(offsets) @ self.scan_rotation(phi_deg)

    def rotate(self, vectors, phi_deg, offsets: dict | None = None, inverse: bool = False):
        """R(phi) v (or R(phi)^-1 v) of vectors (n, 3) at angles phi (n,), the rotation
        about the scan axis by Rodrigues' formula on the vectors: no (n, 3, 3) stack of
        matrices, whose memory traffic costs several times the arithmetic."""
        v = np.asarray(vectors, dtype=float)
        e = self.axis
        angle = (-1.0 if inverse else 1.0) * self.scan_sense * np.radians(phi_deg)[..., None]
        R_off = self.offset_rotation(offsets)
        if inverse:
            v = v @ R_off  # R_off^T v row-wise
        c, s = np.cos(angle), np.sin(angle)
        cross = np.array([[0.0, -e[2], e[1]], [e[2], 0.0, -e[0]], [-e[1], e[0], 0.0]])
        v = v * c + (v @ cross.T) * s + (v @ e)[..., None] * e * (1.0 - c)  # e x v: K v
        return v if inverse else v @ R_off.T

    def as_dict(self) -> dict:
        return {"scan_axis": list(self.scan_axis), "scan_sense": self.scan_sense,
                "offset_axes": {n: list(a) for n, a in self.offset_axes}}


@dataclass(frozen=True)
class ScanAngles:
    """Frame -> rotation-angle mapping of one scan entry (degrees)."""

    start: float
    step: float
    nframes: int

    def angle(self, z):
        """Rotation angle (deg) at continuous frame coordinate z (frame i covers [i, i+1))."""
        return self.start + np.asarray(z, dtype=float) * self.step

    def frame(self, phi_deg):
        """Continuous frame coordinate of angle phi (deg), unwrapped into the scan's turn."""
        return (np.asarray(phi_deg, dtype=float) - self.start) / self.step

    def frame_centres(self) -> np.ndarray:
        return self.angle(np.arange(self.nframes) + 0.5)

    @property
    def end(self) -> float:
        return self.start + self.nframes * self.step


# --------------------------------------------------------------------------------------
# Q and HKL
# --------------------------------------------------------------------------------------
def q_from_directions(directions, wavelength):
    """Scattering vector Q = (s_f - s_i)/lambda in 1/Angstrom for unit scattered directions."""
    return (np.asarray(directions, dtype=float) - BEAM_DIRECTION) / wavelength


def hkl_from_q(q_lab, UB, R_sample):
    """h = (U B)^-1 R_sample^-1 Q_lab for lab vectors (..., 3); R_sample is one (3, 3)
    rotation or a stack (..., 3, 3) broadcasting with the vectors."""
    qs = np.einsum("...ji,...j->...i", np.asarray(R_sample), np.asarray(q_lab, dtype=float))
    return qs @ np.linalg.inv(np.asarray(UB)).T


def q_from_hkl(hkl, UB, R_sample):
    """Q_lab = R_sample U B h (same broadcasting as hkl_from_q)."""
    q = np.asarray(hkl, dtype=float) @ np.asarray(UB).T
    return np.einsum("...ij,...j->...i", np.asarray(R_sample), q)


def directions_from_q(q_lab, wavelength):
    """Scattered unit directions for lab Q vectors that satisfy the Ewald condition."""
    s = np.asarray(q_lab) * wavelength + BEAM_DIRECTION
    return s / np.linalg.norm(s, axis=-1, keepdims=True)


def ewald_angles(hkl, UB, goniometer: Goniometer, offsets: dict | None, wavelength: float):
    """Scan angles (deg, in (-180, 180]) at which each reflection is in diffraction.

    Returns (phi_a, phi_b), each shape (n,), NaN where the reflection never reaches the
    Ewald sphere (blind region or beyond 2/lambda).  Solves |s_i + Q|^2 = |s_i|^2 for
    Q = R_off R_scan(phi) UB h: with p = R_off^T s_i/lambda and q = UB h decomposed about
    the scan axis e, 2 p.(q_par + cos(a) q_perp + sin(a) e x q_perp) + |q|^2 = 0.
    """
    q = np.asarray(hkl, dtype=float) @ np.asarray(UB).T
    e = goniometer.axis
    p = goniometer.offset_rotation(offsets).T @ BEAM_DIRECTION / wavelength
    q_par = np.outer(q @ e, e)
    q_perp = q - q_par
    A = q_par @ p
    Bc = q_perp @ p
    Cs = np.cross(e, q_perp) @ p
    D = -0.5 * np.einsum("ij,ij->i", q, q) - A
    Rr = np.hypot(Bc, Cs)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = D / Rr
        base = np.arctan2(Cs, Bc)
        delta = np.arccos(np.where(np.abs(ratio) <= 1.0, ratio, np.nan))
    a1 = base + delta
    a2 = base - delta
    sense = goniometer.scan_sense

    def wrap(a):
        d = np.degrees(a * sense)
        return (d + 180.0) % 360.0 - 180.0

    return wrap(a1), wrap(a2)


def lorentz_zeta(q_lab, wavelength, axis_lab):
    """DIALS's zeta = m2 . (s1 x s0)/|s1 x s0| for diffracting Q (lab); 1/|zeta| is the
    rotation Lorentz factor and the stretch of a reflection's width in phi."""
    s0 = BEAM_DIRECTION / wavelength
    s1 = s0 + np.asarray(q_lab)
    c = np.cross(s1, s0)
    n = np.linalg.norm(c, axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (c @ np.asarray(axis_lab)) / n


def ub_matrix(U, B):
    return np.asarray(U) @ np.asarray(B)


@dataclass(frozen=True)
class ScanGeometry:
    """Everything needed to map a pixel of a frame of one scan entry to Q and (H, K, L): the
    entry's detector (already moved by its shift), goniometer, scan angles, offset angles
    (refined corrections included) and, once the crystal is oriented, UB.  Build it with
    :meth:`EntrySetup.geometry`, the one place an entry's geometry is put together."""

    detector: DetectorGeometry
    goniometer: Goniometer
    angles: ScanAngles
    offsets: dict = field(default_factory=dict)
    UB: np.ndarray | None = field(default=None, compare=False)

    @property
    def axis_lab(self) -> np.ndarray:
        """The scan axis in the lab frame with the entry's offset rotations applied."""
        return self.goniometer.offset_rotation(self.offsets) @ self.goniometer.axis

    def _ub(self) -> np.ndarray:
        if self.UB is None:
            raise ValueError("this scan geometry has no orientation (UB): give one")
        return np.asarray(self.UB, dtype=float)

    def sample_rotation(self, z):
        return self.goniometer.rotation(self.angles.angle(z), self.offsets)

    def sample_q_at(self, rows, cols, z):
        """Q in the sample frame (scan angle 0, no offsets) at continuous (row, col, frame)
        coordinates: R(phi)^-1 Q_lab, (..., 3) in 1/Angstrom."""
        rows, cols, z = np.broadcast_arrays(np.asarray(rows, float), np.asarray(cols, float),
                                            np.asarray(z, float))
        q = self.detector.lab_q(rows, cols)
        return np.einsum("...ji,...j->...i", self.sample_rotation(z), q)

    def hkl_at(self, rows, cols, z):
        """HKL at continuous (row, col, frame) coordinates (arrays broadcast together)."""
        return self.sample_q_at(rows, cols, z) @ np.linalg.inv(self._ub()).T

    def predict(self, hkl):
        """Predicted (rows, cols, z, phi_deg) of reflections hkl, two solutions per hkl
        stacked (2n,), with the hkl repeated; positions NaN where not in diffraction."""
        UB = self._ub()
        hkl = np.asarray(hkl, dtype=float)
        pa, pb = ewald_angles(hkl, UB, self.goniometer, self.offsets, self.detector.wavelength)
        phi = np.concatenate([pa, pb])
        hh = np.concatenate([hkl, hkl])
        # put each solution into the scan's turn: start <= phi < start + 360 (step > 0)
        lo = min(self.angles.start, self.angles.end)
        phi = lo + (phi - lo) % 360.0
        ok = np.isfinite(phi)
        q = q_from_hkl(hh, UB, self.goniometer.rotation(np.where(ok, phi, 0.0), self.offsets))
        dirs = directions_from_q(q, self.detector.wavelength)
        rows, cols = self.detector.pixel_from_direction(dirs)
        rows = np.where(ok, rows, np.nan)
        cols = np.where(ok, cols, np.nan)
        z = self.angles.frame(phi)
        return hh, rows, cols, z, phi


@dataclass(frozen=True)
class EntrySetup:
    """How one scan entry was measured, as ingest records it in scan.nxs: the accepted
    calibration (the detector geometry the entry's shift is measured from), the entry's
    detector shift (d_dist, d_poni1, d_poni2 in m), goniometer, scan angles and offset
    angles (deg)."""

    name: str
    calibration: DetectorGeometry
    shift: tuple
    goniometer: Goniometer
    angles: ScanAngles
    offsets: dict = field(default_factory=dict)

    def geometry(self, orientation=None) -> ScanGeometry:
        """The entry's geometry: the detector moved by the entry's shift, the offsets.

        With an orientation (an orientation record, or the refinement's model: anything
        with ``detector``, ``offset_corrections`` {entry: {axis: deg}} and ``UB``), its
        refined common detector replaces the calibration's place (the sensor stays the
        calibration's: a fact of the detector, which no refinement changes), its offset
        corrections of this entry are added, and its UB orients the crystal."""
        if orientation is None:
            return ScanGeometry(self.calibration.shifted(*self.shift), self.goniometer,
                                self.angles, dict(self.offsets))
        offsets = dict(self.offsets)
        for axis, v in orientation.offset_corrections.get(self.name, {}).items():
            offsets[axis] = offsets.get(axis, 0.0) + float(v)
        detector = orientation.detector.shifted(*self.shift)
        if detector.sensor != self.calibration.sensor:
            detector = detector.with_sensor(self.calibration.sensor)
        return ScanGeometry(detector, self.goniometer, self.angles, offsets,
                            np.asarray(orientation.UB, dtype=float))


# --------------------------------------------------------------------------------------
# The detector shifts from a file's direct beam (hklflow watch, hklflow init)
# --------------------------------------------------------------------------------------
def shifts_from_direct_beam(calibration: DetectorGeometry, distance: float, row: float,
                            col: float) -> tuple[float, float, float]:
    """(det_ddist, det_dponi1, det_dponi2), m: the shifts that move the `calibration`'s
    detector to where the direct beam hits continuous pixel (row, col) of the frames (the
    orientation applied) at `distance` from the sample, its tilts kept.

    pyFAI's Fit2D conversion at the calibration's tilts (pyFAI.geometry.fit2d.
    convert_from_Fit2d: dist = directDist cos(tilt), poni1 = centerY pixel1 - directDist
    sin(tilt) sin(tpr), poni2 = centerX pixel2 - directDist sin(tilt) cos(tpr)), with
    (sin(tilt) sin(tpr), sin(tilt) cos(tpr), cos(tilt)) = the beam direction in the
    detector's axes, M^T (0, 0, 1); the inverse of DetectorGeometry.direct_beam_pixel and
    of the distance |lab position| of that pixel."""
    b = calibration.tilt_matrix.T @ BEAM_DIRECTION
    p1, p2 = calibration.plane_coordinates(row, col)
    return (distance * float(b[2]) - calibration.dist,
            float(p1) - distance * float(b[0]) - calibration.poni1,
            float(p2) - distance * float(b[1]) - calibration.poni2)
