"""Step mask_scan: the masks of a scan entry (hklflow.algorithms.masks.masking) - the pixel mask (module gaps,
hot and dead pixels, the user mask) and the 3D Bragg mask (ellipsoids in row, col, frame
around every found peak and every allowed reflection predicted with the refined
orientation, as a table), with a picture."""
from __future__ import annotations

from ..algorithms.masks.masking import CONSTANTS, build_mask
from ..files.mask import write_mask_file
from ..files.orientation import read_orientation_file
from ..files.peaks import read_peaks_file
from ..files.provenance import provenance
from ..files.scan import read_scan_file
from ..pictures.preview import preview_label, preview_notes
from ..settings.params import DetectorParams, MaskParams, settings_part
from ._run import StepParser, run_step


def parser() -> StepParser:
    p = StepParser("mask_scan", __doc__)
    p.add_settings()
    p.add_input("--scan", "the scan entry's scan.nxs (ingest_scan)")
    p.add_input("--peaks", "its peaks.nxs (find_peaks)")
    p.add_input("--orientation", "orientation.nxs of its sample and temperature (refine_temperature)")
    p.add_output("--out", "mask file to write")
    p.add_output("--png", "picture to write (none for a block of a scan in progress)",
                 required=False)
    return p


def run(args, log) -> None:
    params = settings_part(args.settings, MaskParams)
    detector = settings_part(args.settings, DetectorParams)
    rec = read_scan_file(args.scan)
    peaks = read_peaks_file(args.peaks)
    log.info("scan %s: %d frames of %s, %d peaks; %s", rec.scan_id, rec.nframes,
             rec.detector_shape, len(peaks.peaks.get("n_pixels", ())), params)
    orientation = read_orientation_file(args.orientation)
    result = build_mask(rec, peaks, orientation, params, detector, log)
    inputs = [args.scan, args.peaks, args.orientation] + \
        ([detector.mask_file] if detector.mask_file else [])
    write_mask_file(args.out, result, entry=rec.entry, title=rec.scan_id,
                    parameters={**args.settings, **CONSTANTS},
                    provenance=provenance("hklflow mask_scan", args.settings, inputs=inputs),
                    sources={"scan_file": args.scan, "peaks_file": args.peaks,
                             "orientation_file": args.orientation})
    if args.png:  # (a block's job draws nothing, and loads no matplotlib)
        from ..pictures.detector import plot_mask

        plot_mask(result, f"{rec.scan_id}: masks", args.png,
                  preview=preview_label(preview_notes(rec, orientation)))
    log.info("wrote %s%s", args.out, f" and {args.png}" if args.png else "")


def main(argv=None) -> int:
    return run_step(parser(), run, argv)
