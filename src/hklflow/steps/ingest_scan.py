"""Step ``ingest_scan`` (Snakemake rule of the same name): the NeXus file of one scan entry.

    hklflow ingest_scan --config config/config.yaml [--config more.yaml] \\
        --scan SAMPLE/TLABEL/ENTRY --poni results/calibration/NAME/geometry.poni \\
        --out results/SAMPLE/TLABEL/ENTRY/scan.nxs [--base-dir .] [--check-frames 0,-1|all]

Opens the raw frames read-only, checks them against the scans table and the detector
(frame count, frame shape, first and last frame readable - a cheap truncation check; every
frame with ``--check-frames all``), reads the monitor if the scan has one, and writes the
scan file linking (never copying) the raw frames, with the detector geometry of the
calibration moved by the entry's detector translation.  Layout: hklflow.nexus.

Any problem (missing/truncated/corrupt raw data, a frame count that disagrees with the
scans table, a wrong frame shape) ends with a message naming the file (and frame), a
non-zero exit status, and no output file.

Three layers: :class:`IngestParams` (typed, validated), :func:`ingest_scan` (the work, on
resolved objects), :func:`main` (command line, logging).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import steplog
from ..config import ConfigError, Experiment, ScanEntry, load_experiment, scan_detector_geometry
from ..frames import FrameSource, RawDataError, check_readable, open_frames
from ..geometry import DetectorGeometry
from ..nexus import NexusFormatError, write_scan_file
from ..provenance import file_digest, provenance

PROGRAM = "hklflow ingest_scan"


# --------------------------------------------------------------------------------------
# Parameters
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class IngestParams:
    """What to ingest and how thoroughly.

    scan: "SAMPLE/TLABEL/ENTRY" (TLABEL as config.temperature_label, e.g. 300K).
    poni: the calibration's PONI file.  out: the scan file to write.
    base_dir: the experiment directory; raw data paths of the scans table are relative to
    it (default: the current directory, Snakemake's working directory).
    check_frames: frames read as a truncation/corruption check (default first and last;
    negative indices count from the end), or "all" to read every frame.
    """

    scan: str
    poni: Path
    out: Path
    base_dir: Path = Path(".")
    check_frames: tuple[int, ...] | str = (0, -1)
    chunk_frames: int = 16

    def __post_init__(self):
        parts = str(self.scan).split("/")
        if len(parts) != 3 or not all(parts):
            raise ValueError(f"--scan must be SAMPLE/TLABEL/ENTRY (e.g. s1/300K/f1), got "
                             f"{self.scan!r}")
        object.__setattr__(self, "poni", Path(self.poni))
        object.__setattr__(self, "out", Path(self.out))
        object.__setattr__(self, "base_dir", Path(self.base_dir))
        cf = self.check_frames
        if isinstance(cf, str):
            if cf != "all":
                raise ValueError(f"check_frames must be frame indices or 'all', got {cf!r}")
        else:
            object.__setattr__(self, "check_frames", tuple(int(i) for i in cf))
        if int(self.chunk_frames) < 1:
            raise ValueError(f"chunk_frames must be >= 1, got {self.chunk_frames}")

    @property
    def scan_key(self) -> tuple[str, str, str]:
        sample, tlabel, entry = str(self.scan).split("/")
        return sample, tlabel, entry


@dataclass(frozen=True)
class RawScan:
    """What inspecting the raw frames of a scan found."""

    source: FrameSource
    monitor: np.ndarray | None = field(default=None, repr=False)
    checked_frames: tuple[int, ...] | str = ()


@dataclass(frozen=True)
class IngestResult:
    out: Path
    scan: ScanEntry
    geometry: DetectorGeometry
    raw: RawScan


# --------------------------------------------------------------------------------------
# The work
# --------------------------------------------------------------------------------------
def inspect_raw_scan(scan: ScanEntry, detector_shape: tuple[int, int], *, base_dir=".",
                     check_frames=(0, -1), chunk_frames: int = 16,
                     log: logging.Logger | None = None) -> RawScan:
    """Open a scan's raw frames read-only and check them: frame count = scans table, frame
    shape = detector, the listed frames (or "all") readable, monitor one value per frame."""
    log = log or logging.getLogger(__name__)
    with open_frames(scan.data, scan.dataset, base_dir=base_dir,
                     expected_frames=scan.nframes) as stack:
        log.info("raw data: %r", stack)
        if tuple(stack.frame_shape) != tuple(detector_shape):
            raise RawDataError(f"{stack.files[0]}: frames are {stack.frame_shape[0]}x"
                               f"{stack.frame_shape[1]} (rows x cols), but the detector has "
                               f"{detector_shape[0]}x{detector_shape[1]} pixels")
        check_readable(stack, check_frames, chunk_frames=chunk_frames)
        checked = check_frames if isinstance(check_frames, str) else tuple(
            sorted({i % stack.nframes for i in check_frames}))
        log.info("frames %s read back fine", checked)
        monitor = None
        if scan.monitor:
            monitor = stack.read_monitor(scan.monitor)
            bad = int(np.count_nonzero(monitor <= 0))
            if bad:
                log.warning("monitor %s is <= 0 on %d of %d frames", scan.monitor, bad, monitor.size)
        return RawScan(stack.source, monitor, checked)


def calibration_version(poni: Path, digest: str) -> str:
    """The calibrate_powder version (v001, ...) whose geometry.poni has this digest, from the
    index.json beside the PONI (results/calibration/NAME/) or two folders up
    (versions/vNNN/); else the digest itself (a content version)."""
    poni = Path(poni)
    for index in (poni.parent / "index.json", poni.parent.parent.parent / "index.json"):
        try:
            versions = json.loads(index.read_text()).get("versions", [])
        except (OSError, ValueError, AttributeError):
            continue
        for v in versions if isinstance(versions, list) else []:
            files = v.get("files", {}) if isinstance(v, dict) else {}
            if isinstance(files, dict) and files.get(poni.name) == digest and v.get("version"):
                return str(v["version"])
    return digest


def ingest_scan(experiment: Experiment, params: IngestParams, *, argv=None,
                log: logging.Logger | None = None) -> IngestResult:
    """Check the raw data of params.scan and write its scan file (atomically)."""
    log = log or logging.getLogger(__name__)
    scan = experiment.scan(*params.scan_key)
    if not params.poni.is_file():
        raise FileNotFoundError(f"{params.poni}: PONI file does not exist")
    calibrated = DetectorGeometry.from_poni_file(params.poni,
                                                 detector_name=experiment.instrument.detector)
    geometry = scan_detector_geometry(calibrated, scan)
    if abs(calibrated.wavelength - experiment.instrument.wavelength) > \
            1e-4 * experiment.instrument.wavelength:
        log.info("wavelength %.6f A from %s (config says %.6f A)", calibrated.wavelength,
                 params.poni, experiment.instrument.wavelength)
    log.info("scan %s: %s, %d frames, phi %g + %g/frame, detector shift %s m",
             scan.id, scan.data, scan.nframes, scan.angles.start, scan.angles.step,
             scan.detector_shift)

    raw = inspect_raw_scan(scan, geometry.shape, base_dir=params.base_dir,
                           check_frames=params.check_frames, chunk_frames=params.chunk_frames,
                           log=log)

    digest = file_digest(params.poni)
    calibration = {
        "name": scan.calibration,
        "version": calibration_version(params.poni, digest),
        "file": str(params.poni),
        "digest": digest,
        "poni_text": params.poni.read_text(),
    }
    src = raw.source
    raw_inputs = list(src.files) if src.kind == "hdf5" else [src.files[0], src.files[-1]]
    inputs = [params.poni, *experiment.sources, str(Path(params.base_dir) / experiment.scans_table),
              *raw_inputs[:8]]
    record = provenance(PROGRAM, parameters={
        "scan": scan.id, "poni": str(params.poni), "out": str(params.out),
        "base_dir": str(params.base_dir), "check_frames": params.check_frames,
        "experiment": experiment.name, "data": scan.data, "dataset": scan.dataset,
        "nframes": scan.nframes, "phi_start": scan.angles.start, "phi_step": scan.angles.step,
        "offsets": scan.offsets, "detector_shift": list(scan.detector_shift),
        "monitor": scan.monitor, "calibration": scan.calibration,
        "raw_files": len(src.files), "geometry": geometry.as_dict(),
    }, inputs=inputs, argv=argv)
    crystal = experiment.samples[scan.sample].crystal
    write_scan_file(params.out, scan, geometry, experiment.instrument.goniometer, crystal,
                    calibration, src, record, monitor=raw.monitor)
    log.info("wrote %s (frames linked from %s%s)", params.out, src.files[0],
             f" and {len(src.files) - 1} more files" if len(src.files) > 1 else "")
    return IngestResult(Path(params.out), scan, geometry, raw)


# --------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------
def _check_frames_arg(text: str):
    if text.strip().lower() == "all":
        return "all"
    try:
        return tuple(int(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated frame indices or 'all', "
                                         f"got {text!r}") from None


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROGRAM, description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", action="append", required=True, metavar="YAML",
                   help="experiment config file(s), merged in order")
    p.add_argument("--scan", required=True, metavar="SAMPLE/TLABEL/ENTRY",
                   help="the scan entry, e.g. s1/300K/f1")
    p.add_argument("--poni", required=True, type=Path, help="the calibration's PONI file")
    p.add_argument("--out", required=True, type=Path, help="scan NeXus file to write")
    p.add_argument("--base-dir", default=Path("."), type=Path,
                   help="experiment directory: raw data paths are relative to it (default .)")
    p.add_argument("--check-frames", default=(0, -1), type=_check_frames_arg,
                   help="frames read as a corruption check, e.g. 0,-1 (default) or all")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser().parse_args(argv)
    log = steplog.setup("ingest_scan", args.verbose)
    try:
        params = IngestParams(scan=args.scan, poni=args.poni, out=args.out,
                              base_dir=args.base_dir, check_frames=args.check_frames)
    except ValueError as exc:
        log.error("%s", exc)
        return 2
    try:
        experiment = load_experiment(args.config, base_dir=params.base_dir)
        ingest_scan(experiment, params, argv=[PROGRAM.split()[0], "ingest_scan", *argv], log=log)
    except (RawDataError, ConfigError, NexusFormatError, ValueError, OSError, KeyError) as exc:
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        log.error("ingest_scan %s failed: %s", args.scan, msg)
        _remove_output(params.out, log)
        return 1
    except BaseException:
        _remove_output(params.out, log)
        raise
    return 0


def _remove_output(out: Path, log) -> None:
    """No output after a failure (a stale file from an earlier run would look complete)."""
    try:
        os.unlink(out)
        log.info("removed %s", out)
    except FileNotFoundError:
        pass
    except OSError as exc:  # pragma: no cover
        log.warning("could not remove %s: %s", out, exc)


if __name__ == "__main__":
    sys.exit(main())
