"""What a raw file (an NXmx master, a CBF frame) says of its scan, for `hklflow init`
(commands.init): wavelength, angles, frames, distance, beam centre, sensor."""
from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field

from ..base.errors import ConfigError, RawDataError
from ..files import nxmx
from ..files.cbf_header import CbfHeaderError, read_cbf_header
from ..files.h5 import open_h5
from ..raw.rawfiles import matching_files

SIGNIFICANT_DIGITS = 7  # values read from files: float32's noise dropped (0.1, not 0.100000001)


def rounded(x: float) -> float:
    return float(f"{float(x):.{SIGNIFICANT_DIGITS}g}")


# --------------------------------------------------------------------------------------
# What a raw file says of its scan
# --------------------------------------------------------------------------------------
@dataclass
class ScanFacts:
    """What a raw file says of its scan; None where it says nothing."""

    source: str  # the file read
    data: str  # the scans table's data: the file, or the glob of a CBF scan's frame files
    wavelength: float | None = None  # Angstrom
    phi_start: float | None = None  # deg
    phi_step: float | None = None  # deg
    nframes: int | None = None
    distance: float | None = None  # m, from the sample to where the direct beam hits
    beam_centre: tuple[float, float] | None = None  # continuous (row, col) of the direct beam
    frame_shape: tuple[int, int] | None = None  # (rows, cols)
    scan_axis_name: str | None = None  # the NXmx goniometer axis that turns
    scan_axis: tuple[float, float, float] | None = None  # its lab vector
    temperature: float | None = None  # K
    detector_description: str | None = None
    pixel_mask: str | None = None  # the HDF5 path of the detector's pixel mask in the file
    sensor: tuple[str, float] | None = None  # (material as written, thickness in m)
    offsets: dict = field(default_factory=dict)  # other goniometer axes not at 0: name -> deg
    where: dict = field(default_factory=dict)  # fact -> where in the file it was read


def _lab_vector(nexus_vector) -> tuple[float, float, float]:
    """A NeXus (McStas) vector (x horizontal, y up, z along the beam) in the lab frame
    (L1 up, L2 = L3 x L1, L3 along the beam): (y, -x, z), of unit length."""
    x, y, z = (float(v) for v in nexus_vector)
    norm = math.sqrt(x * x + y * y + z * z)
    return tuple(rounded(v / norm) + 0.0 for v in (y, -x, z))  # (+ 0.0: no -0.0)


def _read_goniometer(f, path: str, wanted: str | None, facts: ScanFacts) -> None:
    """The scan angles of the goniometer axis that turns (or of `wanted`), its lab vector
    and the frame count its angles give."""
    if nxmx.group(f, nxmx.GONIOMETER) is None:
        if wanted:
            raise ConfigError(f"{path}: no {nxmx.GONIOMETER}: no axis {wanted!r} to read")
        return
    axes = nxmx.goniometer_axes(f, path)
    if wanted and wanted not in axes:
        raise ConfigError(f"{path}: {nxmx.GONIOMETER} has no axis {wanted!r} "
                          f"(its axes: {', '.join(sorted(axes)) or 'none'})")
    turning = [wanted] if wanted else [n for n, axis in axes.items() if axis.step]
    if len(turning) > 1:
        raise ConfigError(f"{path}: {nxmx.GONIOMETER}: the axes {', '.join(sorted(turning))} "
                          "all turn: name the scan axis with --scan-axis-name")
    if not turning:
        return  # no angles: placeholders, or --phi-start and --phi-step
    axis = axes[turning[0]]
    where = f"{nxmx.GONIOMETER}/{axis.name}"
    facts.scan_axis_name = axis.name
    # (init writes no offset axes: which way each turns and their order are not its to guess)
    facts.offsets = {n: rounded(a.angles[0]) for n, a in axes.items()
                     if n != axis.name and a.angles[0] != 0}
    facts.phi_start, facts.phi_step = rounded(axis.angles[0]), rounded(axis.step or 0.0)
    facts.where.update(phi_start=where,
                       phi_step=where + ("_increment" if axis.from_increment else ""))
    if len(axis.angles) > 1:
        facts.nframes, facts.where["nframes"] = len(axis.angles), where
    if axis.vector is not None:
        facts.scan_axis = _lab_vector(axis.vector)
        facts.where["scan_axis"] = f"{where}@vector"


def _read_detector(f, path: str, facts: ScanFacts) -> None:
    """Distance and beam centre, description, frame shape, DECTRIS's frame count."""
    det = nxmx.group(f, nxmx.DETECTOR)
    if det is None:
        return
    distance = nxmx.detector_distance(det, path)
    if distance is not None:
        facts.distance = rounded(distance[0])
        facts.where["distance"] = f"{nxmx.DETECTOR}/{distance[1]}"
    try:
        facts.beam_centre = nxmx.beam_centre(det, path)
    except RawDataError:  # (a centre that cannot be placed: a placeholder, as none)
        facts.beam_centre = None
    if facts.beam_centre is not None:
        facts.where["beam_centre"] = f"{nxmx.DETECTOR}/beam_center_x/y"
    facts.detector_description = nxmx.detector_description(f)
    facts.pixel_mask = nxmx.pixel_mask(f)
    facts.sensor = nxmx.sensor(f, path)
    if facts.sensor is not None:
        facts.where["sensor"] = f"{nxmx.DETECTOR}/sensor_material, sensor_thickness"
    facts.frame_shape = nxmx.eiger_frame_shape(f, path)
    nframes = nxmx.eiger_frame_count(f, path)
    if nframes is not None:
        facts.nframes = nframes
        facts.where["nframes"] = f"{nxmx.DETECTOR_SPECIFIC}/nimages x ntrigger"


def read_nxmx(path: str, scan_axis_name: str | None = None) -> ScanFacts:
    """What an NXmx master (or HDF5 frame) file says of its scan, read with h5py read-only
    (hklflow.files.nxmx): wavelength, the scan axis's angles (--scan-axis-name, else the one
    axis of /entry/sample/goniometer that turns), frame count, detector distance and beam
    centre, temperature."""
    facts = ScanFacts(source=path, data=path)
    try:
        f = open_h5(path)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read as an HDF5 file: {exc}") from None
    try:
        with f:
            wavelength = nxmx.wavelength(f, path)
            if wavelength is not None:
                facts.wavelength, facts.where["wavelength"] = rounded(wavelength), nxmx.WAVELENGTH
            _read_goniometer(f, path, scan_axis_name, facts)
            _read_detector(f, path, facts)  # (its frame count, DECTRIS's, wins over the angles')
            frames = nxmx.dataset(f, nxmx.FRAMES)
            if frames is not None and frames.ndim == 3:  # a frame stack in the file itself
                facts.frame_shape = facts.frame_shape or tuple(int(n) for n in frames.shape[1:])
                if facts.nframes is None:
                    facts.nframes, facts.where["nframes"] = int(frames.shape[0]), nxmx.FRAMES
            temperature = nxmx.temperature(f, path)
            if temperature is not None:
                # (6 digits: the most a temperature's folder name keeps)
                facts.temperature = float(f"{temperature:.6g}")
                facts.where["temperature"] = nxmx.TEMPERATURE
    except RawDataError as exc:
        raise ConfigError(str(exc)) from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read as an HDF5 file: {exc}") from None
    return facts


def cbf_frame_glob(path: str) -> str:
    """The glob of a CBF scan's frame files: the last number of the file's name a `*` (the
    path itself when its name has none)."""
    folder, name = os.path.split(path)
    number = re.search(r"[0-9]+(?=[^0-9]*$)", name)
    if number is None:
        return path
    return os.path.join(folder, name[:number.start()] + "*" + name[number.end():])


def cbf_frame_files(path: str) -> tuple[str, list[str]]:
    """The glob of a CBF scan's frame files (cbf_frame_glob) and the files it matches, in
    frame order."""
    pattern = cbf_frame_glob(path)
    if pattern == path:
        return path, [path]
    return pattern, matching_files(pattern) or [path]


def read_cbf(path: str) -> ScanFacts:
    """What a Pilatus CBF scan says: the header of its first frame file (hklflow.files.
    cbf_header): Wavelength, Start_angle, Angle_increment, Detector_distance, Beam_xy,
    Detector, the frame shape; its frame count is the number of frame files beside it."""
    pattern, files = cbf_frame_files(path)
    first = files[0]
    try:
        header = read_cbf_header(first)
    except CbfHeaderError as exc:
        raise ConfigError(f"{first}: cannot be read as a CBF file: {exc.reason}") from None
    except OSError as exc:
        raise ConfigError(f"{first}: cannot be read as a CBF file: {exc}") from None
    facts = ScanFacts(source=first, data=pattern, nframes=len(files))
    facts.where["nframes"] = f"the files {os.path.basename(pattern)}"
    try:
        for name, key in (("wavelength", "Wavelength"), ("phi_start", "Start_angle"),
                          ("phi_step", "Angle_increment"), ("distance", "Detector_distance")):
            found = header.quantity(key)
            if found:
                (value,), as_written = found
                setattr(facts, name, rounded(value))
                facts.where[name] = f"the header's {as_written}"
        beam = header.quantity("Beam_xy")
    except CbfHeaderError as exc:
        raise ConfigError(str(exc)) from None
    if beam:
        col, row = beam[0]  # (fast, slow)
        facts.beam_centre, facts.where["beam_centre"] = (row, col), "the header's Beam_xy"
    facts.detector_description = header.text_after("Detector")
    facts.sensor = header.sensor()
    if facts.sensor is not None:
        facts.where["sensor"] = "the header's sensor line"
    try:
        facts.frame_shape = (int(header.binary["x-binary-size-second-dimension"]),
                             int(header.binary["x-binary-size-fastest-dimension"]))
    except (KeyError, ValueError):
        pass
    return facts
