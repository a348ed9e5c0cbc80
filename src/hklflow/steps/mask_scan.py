"""Masks of a scan entry (rule mask_scan): pixel mask and 3D Bragg-peak regions.

The pixel mask (module gaps from the pyFAI detector model, hot pixels from the peak search,
dead pixels found in the scan's maximum projection, the user mask file) and the Bragg mask
(ellipsoids in row, col, frame around every found peak and every allowed reflection
predicted with the refined orientation, as a table) go to one NeXus file; the masked
transform paints the regions of the frames it works on (hklflow.masking).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .. import steplog


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hklflow mask_scan", description=__doc__.splitlines()[0])
    p.add_argument("--config", action="append", required=True, help="experiment config file(s)")
    p.add_argument("--scan-file", required=True, type=Path, help="the scan entry's scan.nxs (ingest)")
    p.add_argument("--peaks-file", required=True, type=Path, help="its peaks.nxs (find_peaks)")
    p.add_argument("--orientation", required=True, type=Path,
                   help="orientation.nxs of its sample and temperature (refine_scan)")
    p.add_argument("--out", required=True, type=Path, help="mask NeXus file to write")
    p.add_argument("--png", required=True, type=Path, help="picture to write")
    return p


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    log = steplog.setup("mask_scan")
    from .. import provenance
    from ..config import ConfigError, load_experiment
    from ..masking import MaskParams, build_mask, plot_mask, write_mask_file
    from ..nexus import read_orientation_file, read_peaks_file, read_scan_file

    try:
        exp = load_experiment(args.config)
        params = MaskParams.from_config(exp.reduction["mask"])
        rec = read_scan_file(args.scan_file)
        peaks = read_peaks_file(args.peaks_file)
        ori = read_orientation_file(args.orientation)
        log.info("scan %s: %d frames of %s, %d peaks; %s", rec.scan_id, rec.nframes,
                 rec.geometry.shape, len(peaks.peaks.get("n_pixels", ())), params)
        result = build_mask(rec, peaks, ori, params, log)
        inputs = [args.scan_file, args.peaks_file, args.orientation, *args.config]
        if params.mask_file:
            inputs.append(params.mask_file)
        prov = provenance.provenance("hklflow mask_scan", parameters=params.__dict__, inputs=inputs)
        write_mask_file(args.out, result, entry=rec.entry, title=rec.scan_id,
                        parameters=params.__dict__, provenance=prov,
                        sources={"scan_file": args.scan_file, "peaks_file": args.peaks_file,
                                 "orientation_file": args.orientation})
        plot_mask(result, f"{rec.scan_id}: masks", args.png)
    except (ConfigError, ValueError, OSError, KeyError) as exc:
        msg = f"missing {exc.args[0]}" if isinstance(exc, KeyError) and exc.args else exc
        return steplog.fail(log, msg, (args.out, args.png))
    except BaseException:  # anything unexpected: no output either, and the traceback
        for f in (args.out, args.png):
            Path(f).unlink(missing_ok=True)
        raise
    log.info("wrote %s and %s", args.out, args.png)
    return 0


if __name__ == "__main__":
    sys.exit(main())
