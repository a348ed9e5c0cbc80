"""Step find_peaks: one streamed pass over every frame of a scan entry - per-frame
statistics and the 3D Bragg peaks (hklflow.algorithms.peaks.spotfinding), with a picture."""
from __future__ import annotations

from ..algorithms.peaks.spotfinding import search
from ..files.peaks import write_peaks_file
from ..files.provenance import provenance
from ..files.scan import read_scan_file
from ..pictures.detector import plot_peaks
from ..pictures.preview import preview_label
from ..raw.frames import open_frame_source
from ..settings.params import DetectorParams, PeakSearchParams, settings_part
from ._run import StepParser, run_step


def parser() -> StepParser:
    p = StepParser("find_peaks", __doc__)
    p.add_settings()
    p.add_threads()
    p.add_input("--scan", "the scan entry's scan.nxs (ingest_scan)")
    p.add_output("--out", "peaks file to write")
    p.add_output("--png", "picture to write")
    return p


def run(args, log) -> None:
    params = settings_part(args.settings, PeakSearchParams)
    detector = settings_part(args.settings, DetectorParams)
    rec = read_scan_file(args.scan)
    geometry = rec.geometry().detector
    log.info("scan %s: %d frames of %s; %s", rec.scan_id, rec.nframes, geometry.shape, params)
    with open_frame_source(rec.frames, read_threads=args.threads,
                           compiled_decompression=True) as stack:
        result = search(stack, geometry, rec.angles, params, detector, log,
                        threads=args.threads)
    inputs = [args.scan] + ([detector.mask_file] if detector.mask_file else [])
    write_peaks_file(args.out, rec, result, args.settings,
                     provenance("hklflow find_peaks", args.settings, inputs=inputs))
    plot_peaks(result, f"{rec.scan_id}: peak search", args.png, preview=preview_label(rec))
    log.info("wrote %s and %s", args.out, args.png)


def main(argv=None) -> int:
    return run_step(parser(), run, argv)
