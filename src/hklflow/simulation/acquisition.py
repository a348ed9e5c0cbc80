"""`hklflow simulate --acquire`: a simulated experiment written the way a beamline writes it,
in real time, so that live processing can be tried on it.

Everything is simulated before the clock starts: config/config.yaml, the calibrant image and
truth.json as the plain mode writes them, and every frame of every scan, rendered into a
cache outside raw/ (CACHE_FOLDER, removed at the end) in the form the detector writes: HDF5
bitshuffle-LZ4 chunks (hdf5, eiger) or encoded miniCBF files (cbf).  Replay then only copies
bytes (HDF5 direct chunk writes), which sustains far higher frame rates than rendering.

Replay: config/scans.tsv starts with its header line only; temperatures are acquired in
each sample's order (entries in order), with a pause between temperatures.  When a scan
starts, its files appear and its row is appended to the table (one write of a whole line, as
a beamline logger does); its frames follow on a steady clock, frame i at t0 + i / fps.

Formats (the folders of the plain mode, raw/SAMPLE/TK/...):

* hdf5: ENTRY.h5 written in place with HDF5 SWMR: the frame stack grows by blocks of about
  fps / BLOCKS_PER_SECOND frames, each block flushed, so that a reader opening the file with
  swmr=True sees it grow; NXmx goniometer values (phi per frame, offset axes) alongside.
* eiger: ENTRY/ENTRY_master.h5 (NXmx metadata, external links to every planned data file)
  written at scan start, then ENTRY/ENTRY_data_NNNNNN.h5 of frames_per_file frames each,
  each created when its first frame is due and complete only once closed (not SWMR).
* cbf: ENTRY/ENTRY_NNNNN.cbf, one Pilatus miniCBF per frame, written in place.
"""
from __future__ import annotations

import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from ..files.h5 import open_h5
from ..model.geometry import DetectorGeometry
from ..model.scan import temperature_label
from .experiment import (EntryModel, SampleModel, SimulationSpec, detector_defects,
                         scans_table_line, scans_table_rows, simulate_experiment)
from .writers import (DEFAULT_FRAMES_PER_FILE, RAW_DATASET, CbfFramesWriter, CbfInPlaceWriter,
                      EigerScanWriter, Hdf5StackWriter, SwmrStackWriter)

log = logging.getLogger("hklflow.simulate")

CACHE_FOLDER = ".acquisition_cache"  # in the experiment directory, beside raw/
DEFAULT_PAUSE_S = 5.0


class AcquisitionError(ValueError):
    """A user's acquisition setting that cannot work (message says which and why)."""


# --------------------------------------------------------------------------------------
# The plan: scans in acquisition order and where each stops
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PlannedScan:
    scan_id: str  # sample/TK/entry, as truth.json names scans
    sample: SampleModel
    temperature: float
    entry: EntryModel
    table_row: dict  # its row of config/scans.tsv
    nframes: int  # frames written: fewer than the scan's when it is aborted


def parse_abort_after(values, scan_ids: list[str], nframes: int) -> dict[str, int]:
    """{scan id: frames written} of --abort-after values 'N' (the last scan) or 'ID:N'."""
    stops = {}
    for value in values or ():
        scan_id, _, count = str(value).rpartition(":")
        scan_id = scan_id or scan_ids[-1]
        if scan_id not in scan_ids:
            raise AcquisitionError(f"--abort-after {value}: no scan {scan_id!r} in this "
                                   f"experiment (scans: {', '.join(scan_ids)})")
        try:
            n = int(count)
        except ValueError:
            raise AcquisitionError(f"--abort-after {value}: expected N or SAMPLE/TK/ENTRY:N with "
                                   "N a whole number of frames") from None
        if not 0 <= n <= nframes:
            raise AcquisitionError(f"--abort-after {value}: {n} frames; a scan has {nframes}, "
                                   f"so N must be between 0 and {nframes}")
        stops[scan_id] = n
    return stops


def acquisition_plan(spec: SimulationSpec, frame_format: str, abort_after=()) -> list[PlannedScan]:
    """The scans in the order they are acquired: the scans table's order (samples, then each
    sample's temperatures, parent first, then entries)."""
    rows = scans_table_rows(spec, frame_format)
    samples = {s.name: s for s in spec.samples}
    entries = {e.name: e for e in spec.entries}
    scan_ids = [f"{r['sample']}/{temperature_label(float(r['temperature']))}/{r['entry']}"
                for r in rows]
    stops = parse_abort_after(abort_after, scan_ids, spec.nframes)
    return [PlannedScan(sid, samples[r["sample"]], float(r["temperature"]), entries[r["entry"]], r,
                        stops.get(sid, spec.nframes))
            for sid, r in zip(scan_ids, rows)]


# --------------------------------------------------------------------------------------
# The frame cache
# --------------------------------------------------------------------------------------
class FrameCache:
    """Every scan's frames as the detector stores them, rendered before the clock starts."""

    def __init__(self, folder: Path, spec: SimulationSpec, frame_format: str):
        self.folder, self.spec = Path(folder), spec
        self.encoded_files = frame_format == "cbf"

    def _key(self, sample: str, temperature: float, entry: str) -> str:
        return f"{sample}_{temperature_label(temperature)}_{entry}"

    def writer(self, sample: SampleModel, T: float, entry: EntryModel, geom: DetectorGeometry):
        """simulate_experiment's frames_writer: renders into the cache."""
        self.folder.mkdir(parents=True, exist_ok=True)
        key = self._key(sample.name, T, entry.name)
        if self.encoded_files:
            return CbfFramesWriter(self.folder / key, entry.name, self.spec, geom)
        return Hdf5StackWriter(self.folder / f"{key}.h5", self.spec.nframes, geom.shape)

    def open(self, scan: PlannedScan) -> "CachedScan":
        return CachedScan(self, self._key(scan.sample.name, scan.temperature, scan.entry.name),
                          scan.entry.name)

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


class CachedScan:
    """One scan's cached frames: frame(i) is a compressed HDF5 chunk or a CBF file's bytes."""

    def __init__(self, cache: FrameCache, key: str, stem: str):
        self.file = None
        if cache.encoded_files:
            self.folder, self.stem = cache.folder / key, stem
        else:
            self.file = open_h5(cache.folder / f"{key}.h5")
            self.dset = self.file[RAW_DATASET]

    def frame(self, i: int) -> bytes:
        if self.file is None:
            return (self.folder / f"{self.stem}_{i + 1:05d}.cbf").read_bytes()
        _, chunk = self.dset.id.read_direct_chunk((i, 0, 0))
        return chunk

    def close(self) -> None:
        if self.file is not None:
            self.file.close()


# --------------------------------------------------------------------------------------
# The clock and the replay
# --------------------------------------------------------------------------------------
class FrameClock:
    """Frame i is due at t0 + i / fps, whatever the lateness of earlier frames (no drift);
    a late frame goes out at once and none is skipped."""

    def __init__(self, fps: float):
        self.fps = fps
        self.t0 = time.monotonic()
        self.max_lag = 0.0

    def wait_until_due(self, i: int) -> None:
        due = self.t0 + i / self.fps
        now = time.monotonic()
        if now < due:
            time.sleep(due - now)
        else:
            self.max_lag = max(self.max_lag, now - due)


def _remove_earlier_files(scan: PlannedScan, outdir: Path, frame_format: str) -> None:
    """Frame files an earlier simulation left for this scan (a scan acquired now may stop
    short); an HDF5 stack is truncated when opened and the Eiger writer clears its files."""
    if frame_format == "cbf":
        for old in (outdir / scan.table_row["data"]).parent.glob(f"{scan.entry.name}_*.cbf"):
            old.unlink()


def _scan_writer(scan: PlannedScan, spec: SimulationSpec, outdir: Path, frame_format: str,
                 fps: float, frames_per_file: int):
    geom = spec.true_scan_geometry(scan.entry)
    data = outdir / scan.table_row["data"]
    if frame_format == "hdf5":
        return SwmrStackWriter(data, spec, scan.entry, geom.shape, fps)
    if frame_format == "eiger":
        return EigerScanWriter(data.parent, scan.entry.name, spec, scan.entry, geom,
                               detector_defects(spec, geom)[0], frames_per_file,
                               frame_time=1.0 / fps)
    return CbfInPlaceWriter(data.parent, scan.entry.name)


def append_table_row(table: Path, row: dict) -> None:
    """Append one whole line in one write (O_APPEND), so a reader never sees half a line."""
    fd = os.open(table, os.O_WRONLY | os.O_APPEND)
    try:
        os.write(fd, scans_table_line(row).encode())
    finally:
        os.close(fd)


def replay_scan(scan: PlannedScan, cached: CachedScan, writer, fps: float) -> dict:
    """Write a scan's frames on the clock; returns its frames, duration and lag."""
    clock = FrameClock(fps)
    block = writer.block_frames
    for start in range(0, scan.nframes, block):
        stop = min(scan.nframes, start + block)
        frames = [cached.frame(i) for i in range(start, stop)]  # read while the clock runs
        clock.wait_until_due(stop - 1)
        writer.write(start, frames)
    seconds = time.monotonic() - clock.t0
    # the last frame is due at (n - 1) / fps: any time past it is lag at the end
    end_lag = max(0.0, seconds - max(scan.nframes - 1, 0) / fps)
    return {"frames": scan.nframes, "seconds": seconds,
            "fps": (scan.nframes - 1) / seconds if scan.nframes > 1 and seconds > 0 else fps,
            "max_lag_s": max(clock.max_lag, end_lag), "end_lag_s": end_lag}


def acquire_experiment(spec: SimulationSpec, outdir, frame_format: str = "hdf5", fps: float = 10.0,
                       pause_s: float = DEFAULT_PAUSE_S, abort_after=(),
                       frames_per_file: int = DEFAULT_FRAMES_PER_FILE,
                       overwrite: bool = False) -> dict:
    """Simulate an experiment and write it in real time (module docstring).

    abort_after: values 'N' (the last scan stops after N frames) or 'SAMPLE/TK/ENTRY:N' (that
    scan does).  Returns {"truth": truth, "scans": {scan id: {frames, seconds, fps,
    max_lag_s, end_lag_s}}}.
    """
    if not fps > 0:
        raise AcquisitionError(f"--fps must be positive, got {fps}")
    if not pause_s >= 0:
        raise AcquisitionError(f"--pause must be zero or positive, got {pause_s}")
    if frames_per_file < 1:
        raise AcquisitionError(f"--frames-per-file must be at least 1, got {frames_per_file}")
    if spec.beam is not None and spec.beam.get("monitor", False):
        raise AcquisitionError("a beam monitor (beam.monitor) is not written by --acquire: "
                               "simulate without --acquire, or set beam.monitor false")
    outdir = Path(outdir)
    plan = acquisition_plan(spec, frame_format, abort_after)  # settings checked before work
    cache = FrameCache(outdir / CACHE_FOLDER, spec, frame_format)
    stats = {}
    try:
        t0 = time.monotonic()
        truth = simulate_experiment(spec, outdir, frame_format, overwrite,
                                    frames_writer=cache.writer, table_rows=False)
        log.info("every frame rendered (%.1f s): acquiring %d scans at %g frames/s",
                 time.monotonic() - t0, len(plan), fps)
        table = outdir / "config" / "scans.tsv"
        previous = None
        for number, scan in enumerate(plan, start=1):
            here = (scan.sample.name, scan.temperature)
            if previous is not None and here != previous and pause_s > 0:
                log.info("changing temperature: pause of %g s", pause_s)
                time.sleep(pause_s)
            previous = here
            _remove_earlier_files(scan, outdir, frame_format)
            cached = cache.open(scan)
            writer = _scan_writer(scan, spec, outdir, frame_format, fps, frames_per_file)
            try:
                append_table_row(table, scan.table_row)
                short = " (aborted there)" if scan.nframes < spec.nframes else ""
                log.info("scan %s started (%d/%d): %d of its %d frames%s at %g frames/s",
                         scan.scan_id, number, len(plan), scan.nframes, spec.nframes, short, fps)
                s = replay_scan(scan, cached, writer, fps)
            finally:
                writer.close()
                cached.close()
            stats[scan.scan_id] = s
            log.info("scan %s ended: %d frames in %.2f s (%.1f frames/s), lag behind the "
                     "clock at most %.3f s, %.3f s at the end", scan.scan_id, s["frames"],
                     s["seconds"], s["fps"], s["max_lag_s"], s["end_lag_s"])
    finally:
        cache.remove()
    return {"truth": truth, "scans": stats}
