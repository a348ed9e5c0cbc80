"""NXmx master files (and HDF5 frame files with NXmx groups): hklflow's one reader of what
they say of their scan, for scans found by their files (hklflow.live.discover, also while the
file is being written: its caller opens it as an SWMR reader) and `hklflow init`.

Read from a file the caller opened: the wavelength, the goniometer's axes (first angles,
step per frame, vector), the detector's distance and the direct beam's pixel, DECTRIS's
frame count and shape (detectorSpecific), where the detector's pixel mask is, its sensor
(material and thickness), the sample's temperature.  Values are converted from the units their `units` attribute names (a dataset
without one: the unit DECTRIS writes); a unit not known, or no number where one is
expected, is a RawDataError naming the file and the dataset.  OSError (a file being
written) is left to the caller.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import h5py
import numpy as np

from ..base.errors import RawDataError

WAVELENGTH = "/entry/instrument/beam/incident_wavelength"
GONIOMETER = "/entry/sample/goniometer"
DETECTOR = "/entry/instrument/detector"
DETECTOR_SPECIFIC = "/entry/instrument/detector/detectorSpecific"  # DECTRIS's
FRAMES = "/entry/data/data"
# the detector's own pixel mask (non-zero = not to be used): NXmx's place, then DECTRIS's
PIXEL_MASKS = (f"{DETECTOR}/pixel_mask", f"{DETECTOR_SPECIFIC}/pixel_mask")
TEMPERATURE = "/entry/sample/temperature"
# the detector's distance to the direct beam: NXmx's name, then DECTRIS's
DISTANCE_NAMES = ("distance", "detector_distance")
# the goniometer group's datasets that describe an axis rather than being one (DECTRIS)
AXIS_FACT_SUFFIXES = ("_increment", "_end", "_range_average", "_range_total", "_increment_set")


@dataclass(frozen=True)
class Units:
    """Factors to one unit from the names a `units` attribute may give (lower case); the
    unit of a dataset without the attribute; what messages say is expected."""

    factors: dict
    default: str
    expected: str


ANGSTROMS = Units({"angstrom": 1.0, "angstroms": 1.0, "a": 1.0, "å": 1.0, "nm": 10.0,
                   "m": 1e10}, "angstrom", "angstrom, nm or m")
METRES = Units({"m": 1.0, "metre": 1.0, "meter": 1.0, "metres": 1.0, "meters": 1.0, "mm": 1e-3,
                "millimetre": 1e-3, "millimeter": 1e-3, "um": 1e-6, "micron": 1e-6,
                "microns": 1e-6, "micrometre": 1e-6, "micrometer": 1e-6}, "m", "m or mm")
DEGREES = Units({"deg": 1.0, "degree": 1.0, "degrees": 1.0, "rad": 180.0 / math.pi,
                 "radian": 180.0 / math.pi, "radians": 180.0 / math.pi}, "deg", "deg or rad")
KELVIN = Units({"k": 1.0, "kelvin": 1.0}, "K", "K")
PIXELS = ("pixel", "pixels", "px")


def text(value) -> str:
    """An attribute's or dataset's text (bytes or str), stripped."""
    return (value.decode() if isinstance(value, bytes) else str(value)).strip()


def _member(parent, name: str, kind):
    """The object of that kind at name, or None (absent, another kind, a broken link)."""
    try:
        obj = parent.get(name)
    except (KeyError, ValueError):
        return None
    return obj if isinstance(obj, kind) else None


def group(parent, name: str) -> h5py.Group | None:
    return _member(parent, name, h5py.Group)


def dataset(parent, name: str) -> h5py.Dataset | None:
    return _member(parent, name, h5py.Dataset)


def numbers(dset: h5py.Dataset, path: str, count: int | None = None,
            refresh: bool = False) -> np.ndarray:
    """A dataset's numbers (float64, flattened: a scalar, or one value per frame), only its
    first `count` values when given (fewer while it grows); refresh: an SWMR reader sees the
    writer's latest flush only after it."""
    if refresh:
        dset.id.refresh()
    raw = dset[()] if dset.ndim == 0 or count is None else dset[:count]
    try:
        return np.ravel(np.asarray(raw, dtype=np.float64))
    except (TypeError, ValueError):
        raise RawDataError(f"{path}: {dset.name}: expected numbers") from None


def first_number(dset: h5py.Dataset, path: str) -> float:
    """A dataset's first number (a scalar, or the first frame's)."""
    values = numbers(dset, path, 1)
    if not len(values) or not math.isfinite(values[0]):
        raise RawDataError(f"{path}: {dset.name}: expected a finite number")
    return float(values[0])


def unit_factor(dset: h5py.Dataset, units: Units, path: str) -> float:
    """The factor from the dataset's units (its `units` attribute) to those of `units`."""
    unit = text(dset.attrs.get("units", units.default))
    if unit.lower() not in units.factors:
        raise RawDataError(f"{path}: {dset.name} is in {unit!r}: expected {units.expected}")
    return units.factors[unit.lower()]


def first_in(dset: h5py.Dataset, units: Units, path: str) -> float:
    """A dataset's first number in the unit of `units`."""
    return first_number(dset, path) * unit_factor(dset, units, path)


def wavelength(f: h5py.File, path: str) -> float | None:
    """The incident wavelength (Angstrom), None where the file has none."""
    dset = dataset(f, WAVELENGTH)
    return None if dset is None else first_in(dset, ANGSTROMS, path)


def temperature(f: h5py.File, path: str) -> float | None:
    """The sample's temperature (K), None where the file has none in kelvin."""
    dset = dataset(f, TEMPERATURE)
    if dset is None or text(dset.attrs.get("units", KELVIN.default)).lower() not in KELVIN.factors:
        return None
    return first_number(dset, path)


# --------------------------------------------------------------------------------------
# The goniometer
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class GoniometerAxis:
    """An axis of the NXmx goniometer: its angles (deg; all of them, or the first `count`
    read), its step per frame (deg: NAME_increment where the file has one, else the first
    two angles' difference; None while neither is written), whether the step is the
    increment's, and its vector (the NeXus frame; None where the file gives none)."""

    name: str
    angles: np.ndarray
    step: float | None
    from_increment: bool
    vector: tuple[float, float, float] | None


def goniometer_axis(gonio: h5py.Group, name: str, path: str, count: int | None = None,
                    refresh: bool = False) -> GoniometerAxis | None:
    """The goniometer's axis `name`, None where it is no dataset; count and refresh as for
    :func:`numbers` (a file being written)."""
    dset = dataset(gonio, name)
    if dset is None:
        return None
    angles = numbers(dset, path, count, refresh) * unit_factor(dset, DEGREES, path)
    increment = dataset(gonio, f"{name}_increment")
    if increment is not None:
        steps = numbers(increment, path, 1, refresh) * unit_factor(increment, DEGREES, path)
        step = float(steps[0]) if len(steps) else None
        if step is not None and not math.isfinite(step):
            raise RawDataError(f"{path}: {increment.name}: expected a finite number")
    else:
        step = float(angles[1] - angles[0]) if len(angles) >= 2 else None
    return GoniometerAxis(name, angles, step, increment is not None, _vector(dset))


def _vector(dset: h5py.Dataset) -> tuple[float, float, float] | None:
    try:
        vector = tuple(float(v) for v in np.ravel(dset.attrs.get("vector", ())))
    except (TypeError, ValueError):  # (not numbers: as if there were none)
        return None
    return vector if len(vector) == 3 and any(vector) else None


def goniometer_axes(f: h5py.File, path: str) -> dict[str, GoniometerAxis]:
    """Every axis of /entry/sample/goniometer with angles (numeric datasets but those that
    describe an axis: AXIS_FACT_SUFFIXES), by name; {} without the group."""
    gonio = group(f, GONIOMETER)
    if gonio is None:
        return {}
    axes = {}
    for name in gonio:
        dset = dataset(gonio, name)
        if dset is None or name.endswith(AXIS_FACT_SUFFIXES) or dset.dtype.kind not in "iuf":
            continue
        axis = goniometer_axis(gonio, name, path)
        if len(axis.angles):
            axes[name] = axis
    return axes


# --------------------------------------------------------------------------------------
# The detector
# --------------------------------------------------------------------------------------
def distance_name(det: h5py.Group) -> str | None:
    """The name of the detector's distance dataset (DISTANCE_NAMES: the first there)."""
    return next((n for n in DISTANCE_NAMES if dataset(det, n) is not None), None)


def detector_distance(det: h5py.Group, path: str) -> tuple[float, str] | None:
    """(m, the dataset's name) of the distance from the sample to the direct beam's pixel
    (NXmx: "distance from the sample to the beam center"), None without one."""
    name = distance_name(det)
    return None if name is None else (first_in(det[name], METRES, path), name)


def pixel_size(det: h5py.Group, path: str) -> tuple[float, float] | None:
    """(y, x) pixel size (m: slow, fast), None without both."""
    sizes = [dataset(det, n) for n in ("y_pixel_size", "x_pixel_size")]
    if any(d is None for d in sizes):
        return None
    return first_in(sizes[0], METRES, path), first_in(sizes[1], METRES, path)


def beam_centre(det: h5py.Group, path: str) -> tuple[float, float] | None:
    """(row, col): the direct beam's continuous pixel coordinates on the frames as stored,
    from beam_center_y/x in pixels (or a length, with y/x_pixel_size); None without both."""
    dsets = [dataset(det, n) for n in ("beam_center_y", "beam_center_x")]
    if any(d is None for d in dsets):
        return None
    size = None
    centre = []
    for axis, dset in enumerate(dsets):
        unit = text(dset.attrs.get("units", "pixel"))
        if unit.lower() in PIXELS:
            centre.append(first_number(dset, path))
            continue
        size = size or pixel_size(det, path)
        if unit.lower() not in METRES.factors or size is None:
            raise RawDataError(f"{path}: {dset.name} is in {unit!r}: expected pixels (or a "
                               "length, with x_pixel_size and y_pixel_size)")
        centre.append(first_in(dset, METRES, path) / size[axis])
    return centre[0], centre[1]


def detector_description(f: h5py.File) -> str | None:
    dset = dataset(f, f"{DETECTOR}/description")
    return None if dset is None else text(dset[()])


def sensor(f: h5py.File, path: str) -> tuple[str, float] | None:
    """The detector's sensor as NXmx gives it: (sensor_material as written, sensor_thickness
    in m), None where the file gives neither (or no thickness); a thickness in no length
    unit or not a number is a RawDataError."""
    det = group(f, DETECTOR)
    material = None if det is None else dataset(det, "sensor_material")
    thickness = None if det is None else dataset(det, "sensor_thickness")
    if material is None or thickness is None:
        return None
    raw = material[()]
    if isinstance(raw, np.ndarray):
        raw = raw.ravel()[0] if raw.size else ""
    return text(raw), first_in(thickness, METRES, path)


def eiger_frame_count(f: h5py.File, path: str) -> int | None:
    """DECTRIS's planned frame count: detectorSpecific nimages x ntrigger (None without)."""
    specific = group(f, DETECTOR_SPECIFIC)
    images = dataset(specific, "nimages") if specific is not None else None
    if images is None:
        return None
    triggers = dataset(specific, "ntrigger")
    return int(first_number(images, path)) * (
        max(1, int(first_number(triggers, path))) if triggers is not None else 1)


def pixel_mask(f: h5py.File) -> str | None:
    """The path of the detector's pixel mask in the file (PIXEL_MASKS: the first that is a
    2D dataset), None without one."""
    for name in PIXEL_MASKS:
        dset = dataset(f, name)
        if dset is not None and dset.ndim == 2:
            return name
    return None


def eiger_frame_shape(f: h5py.File, path: str) -> tuple[int, int] | None:
    """(rows, cols) of DECTRIS's frames: detectorSpecific y/x_pixels_in_detector."""
    specific = group(f, DETECTOR_SPECIFIC)
    if specific is None:
        return None
    rows, cols = (dataset(specific, n) for n in ("y_pixels_in_detector", "x_pixels_in_detector"))
    if rows is None or cols is None:
        return None
    return int(first_number(rows, path)), int(first_number(cols, path))
