"""Step find_peaks: one streamed pass over every frame of a scan entry - per-frame
statistics and the 3D Bragg peaks (hklflow.algorithms.peaks.spotfinding), with a picture.

A scan in progress (hklflow watch) is searched a block of new frames at a time (``--frames``,
no picture: rule find_peaks_block), and its peaks are those of its blocks put together
(``--blocks``), so that a preview searches only the frames landed since the one before."""
from __future__ import annotations

from ..algorithms.peaks.spotfinding import join_blocks, search_frames
from ..base.errors import InputMismatchError
from ..files.peaks import read_peaks_file, write_peaks_file
from ..files.provenance import provenance
from ..files.scan import read_scan_file
from ..pictures.preview import preview_label
from ..raw.frames import open_frame_source
from ..settings.params import DetectorParams, PeakSearchParams, settings_part
from ._run import StepParser, parse_frames, run_step


def parser() -> StepParser:
    p = StepParser("find_peaks", __doc__)
    p.add_settings()
    p.add_threads()
    p.add_input("--scan", "the scan entry's scan.nxs (ingest_scan)")
    p.add_argument("--frames", default=None,
                   help="search only frames FIRST-STOP (stop excluded): a block of a scan in "
                        "progress, in the scan's frame numbers")
    p.add_input("--blocks", "the peaks files of the scan's blocks (find_peaks --frames), "
                "which follow each other from frame 0: put together, not searched again",
                nargs="+", required=False)
    p.add_output("--out", "peaks file to write")
    p.add_output("--png", "picture to write (none for a block)", required=False)
    return p


def run(args, log) -> None:
    params = settings_part(args.settings, PeakSearchParams)
    detector = settings_part(args.settings, DetectorParams)
    rec = read_scan_file(args.scan)
    geometry = rec.geometry().detector
    inputs = [args.scan] + ([detector.mask_file] if detector.mask_file else [])
    if args.blocks:
        result = join_blocks([read_peaks_file(f) for f in args.blocks])
        if result.nframes != rec.nframes:
            raise InputMismatchError(f"{args.blocks[-1]}: the blocks end at frame "
                                     f"{result.nframes}, the scan {args.scan} has {rec.nframes} "
                                     "frames: expected blocks that cover it")
        inputs += list(args.blocks)
        log.info("scan %s: the peaks of %d blocks of %d frames put together: %d peaks",
                 rec.scan_id, len(args.blocks), result.nframes, len(result.peaks["n_pixels"]))
    else:
        first, stop = parse_frames(args.frames, rec.nframes)
        log.info("scan %s: frames %d-%d of %d, of %s; %s", rec.scan_id, first, stop,
                 rec.nframes, geometry.shape, params)
        with open_frame_source(rec.frames, read_threads=args.threads,
                               compiled_decompression=True) as stack:
            result = search_frames(stack, first, stop, geometry, rec.angles, params, detector,
                                   log, threads=args.threads)
    write_peaks_file(args.out, rec, result, args.settings,
                     provenance("hklflow find_peaks", args.settings, inputs=inputs))
    if args.png:  # (a block's job draws nothing, and loads no matplotlib)
        from ..pictures.detector import plot_peaks

        plot_peaks(result, f"{rec.scan_id}: peak search", args.png, preview=preview_label(rec))
    log.info("wrote %s%s", args.out, f" and {args.png}" if args.png else "")


def main(argv=None) -> int:
    return run_step(parser(), run, argv)
