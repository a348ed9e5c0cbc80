"""`hklflow simulate OUTDIR`: write a complete simulated experiment directory."""
from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

from .. import steplog
from .experiment import preset, simulate_experiment


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="hklflow simulate",
        description="Write a simulated experiment: config/config.yaml, config/scans.tsv, raw/ "
                    "(calibrant image and rotation scans) and truth.json (every true parameter).")
    p.add_argument("outdir", type=Path, help="experiment directory to write")
    p.add_argument("--preset", default="demo", choices=["demo", "tiny", "tiny_hexagonal", "tiny_monoclinic"],
                   help="which simulation (default: demo, the README's demo experiment)")
    p.add_argument("--format", dest="frame_format", default="hdf5", choices=["hdf5", "cbf"],
                   help="raw frames as compressed HDF5 stacks (default) or Pilatus miniCBF files")
    p.add_argument("--detector-orientation", type=int, choices=[1, 2, 3, 4], default=None,
                   help="lay the frames out with this pyFAI detector orientation (default: the "
                        "preset's, 3); written to instrument.detector.orientation")
    p.add_argument("--force", action="store_true",
                   help="overwrite an existing experiment in OUTDIR (raw data are replaced)")
    return p


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    log = steplog.setup("simulate")
    if (args.outdir / "truth.json").exists() and not args.force:
        log.error("%s already holds a simulated experiment (truth.json); use --force to "
                  "overwrite it", args.outdir)
        return 1
    try:
        spec = preset(args.preset)
        if args.detector_orientation is not None:
            spec = replace(spec, detector_orientation=args.detector_orientation)
        simulate_experiment(spec, args.outdir, args.frame_format, overwrite=args.force)
    except FileExistsError as exc:
        log.error("%s", exc)
        return 1
    return 0
