"""Step ingest_scan: the NeXus file of one scan entry (hklflow.files.scan).

Opens the raw frames read-only and checks them against the scans table and the detector
(frame count, frame shape, first and last frame readable - a cheap truncation check; every
frame with ``--check-frames all``), reads the monitor if the scan has one (a dataset of the
HDF5 files; for frame files a column file or a field of every frame's CBF header:
hklflow.raw.monitors), fingerprints every raw file, and writes the scan file linking (never
copying) the raw frames, with the accepted calibration (and its version, and the sensor of
instrument.detector.sensor) and the entry's detector shift.  A sensor that the raw files
name (NXmx sensor_material/sensor_thickness, a Pilatus CBF header's sensor line) and the
config does not is a warning: its parallax is then not corrected.
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path

from ..base.errors import InputMismatchError, RawDataError
from ..files.calibration import read_version_file
from ..files.provenance import file_digest, provenance
from ..files.scan import write_scan_file
from ..model.geometry import DetectorGeometry, EntrySetup
from ..model.sensor import Sensor
from ..raw.frames import inspect_raw_scan
from ..raw.monitors import monitor_file
from ..raw.sensor import named_sensor
from ..settings.params import GoniometerParams, IngestParams, ScanParams, settings_part
from ._run import StepParser, run_step


def _check_frames_arg(text: str):
    if text.strip().lower() == "all":
        return "all"
    try:
        return tuple(int(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated frame indices or 'all', "
                                         f"got {text!r}") from None


def parser() -> StepParser:
    p = StepParser("ingest_scan", __doc__)
    p.add_settings()
    p.add_input("--poni", "the calibration's geometry.poni (calibrate_powder)")
    p.add_input("--version", "the calibration's version.json (calibrate_powder)")
    p.add_output("--out", "scan NeXus file to write")
    p.add_argument("--check-frames", default=(0, -1), type=_check_frames_arg,
                   help="frames read as a corruption check, e.g. 0,-1 (default) or all")
    return p


def run(args, log) -> None:
    row = settings_part(args.settings, ScanParams).row()
    goniometer = settings_part(args.settings, GoniometerParams).goniometer()
    ingest = settings_part(args.settings, IngestParams)
    calibration = DetectorGeometry.from_poni_file(args.poni, ingest.detector_name,
                                                  ingest.detector_orientation)
    sensor = Sensor.of(ingest.detector_sensor)
    if calibration.sensor != sensor:
        raise InputMismatchError(
            f"{args.poni}: the calibration corrects the parallax of "
            f"{calibration.sensor.describe() if calibration.sensor else 'no sensor'}, "
            f"instrument.detector.sensor is {sensor.describe() if sensor else 'not set'}: run "
            "calibrate_powder again (or correct the config)")
    log.info("scan %s: %s, %d frames, phi %g + %g/frame, detector shift %s m", row.id,
             row.data, row.nframes, row.angles.start, row.angles.step, row.detector_shift)
    if row.in_progress:
        log.info("scan %s is being collected: its first %d of %d frames (%.0f%%)", row.id,
                 row.nframes, row.planned_frames, 100 * row.landed_fraction)
    raw = inspect_raw_scan(row.data, row.dataset, row.nframes, calibration.shape,
                           monitor=row.monitor, check_frames=args.check_frames,
                           in_progress=row.in_progress, log=log)
    check_named_sensor(row.data, sensor, calibration, log)
    setup = EntrySetup(row.entry, calibration, row.detector_shift, goniometer, row.angles,
                       row.offsets)
    record = {"name": row.calibration, "version": read_version_file(args.version, args.poni),
              "file": str(args.poni), "digest": file_digest(args.poni),
              "poni": Path(args.poni).read_text()}
    src = raw.source
    prov = provenance("hklflow ingest_scan", args.settings,
                      inputs=[args.poni, args.version, *src.files[:8],
                              *([monitor_file(row)] if monitor_file(row) else [])])
    write_scan_file(args.out, row, setup, record, src, prov, monitor=raw.monitor,
                    maximum=raw.maximum, frames_read=raw.frames_read)
    log.info("wrote %s (frames linked from %s%s; calibration %s %s)", args.out, src.files[0],
             f" and {len(src.files) - 1} more files" if len(src.files) > 1 else "",
             row.calibration, record["version"])


def check_named_sensor(data: str, sensor: Sensor | None, calibration: DetectorGeometry,
                       log) -> None:
    """Warn where the raw files name a sensor (raw.sensor) that instrument.detector.sensor
    does not: none, or another one.  The config's is used either way."""
    try:
        named = named_sensor(data)
    except (OSError, RawDataError) as exc:
        log.info("the raw files' sensor could not be read: %s", exc)
        return
    if named is None:
        return
    found = named.sensor
    if found is not None and sensor is not None and found.material == sensor.material \
            and abs(found.thickness - sensor.thickness) <= 1e-6:
        log.info("sensor %s, as the raw files say (%s)", sensor.describe(), named.where)
        return
    if sensor is None:
        shift = ""
        if found is not None:  # how far parallax moves a spot at the detector's edge
            edge = calibration.dist * math.tan(calibration.max_two_theta())
            moved = float(found.displacement(edge, calibration.dist, calibration.wavelength))
            shift = (f" (it moves spots by up to {moved / min(calibration.pixel_size):.2f} px "
                     "at the detector's edge)")
        log.warning("the raw files name the sensor %s, and instrument.detector.sensor is not "
                    "set: its parallax is not corrected%s; set instrument.detector.sensor "
                    "(material, thickness) to correct it", named.describe(), shift)
    else:
        log.warning("the raw files name the sensor %s, instrument.detector.sensor says %s: "
                    "the config's is used", named.describe(), sensor.describe())


def main(argv=None) -> int:
    return run_step(parser(), run, argv)
