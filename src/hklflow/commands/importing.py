"""`hklflow import KIND ...`: an hklflow experiment made from another program's records,
its raw data referenced where they are, never copied or changed: `nxrefine` (an NXRefine
experiment: hklflow.commands.import_nxrefine) and `spec` (SPEC scans of QM2:
hklflow.commands.import_spec)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..base.errors import HklflowError


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="hklflow import",
        description="Make an hklflow experiment (DEST/config/config.yaml, DEST/config/scans.tsv, "
                    "the calibration's PONI and the monitors' column files) from another "
                    "program's records; the raw data are referenced, never copied or changed.",
        epilog="examples: hklflow import nxrefine /data/exp/nxrefine ~/hkl/exp; hklflow import "
               "spec raw/lsco ~/hkl/lsco --scans 12-14,20-22 --frames "
               "'raw/lsco/xtal/*/lsco_{scan:03d}/*.cbf' --poni ceo2.poni --sample lsco; then: "
               "hklflow run DEST -- -n")
    sub = p.add_subparsers(dest="kind", required=True)
    n = sub.add_parser("nxrefine", help="an NXRefine experiment directory (or one label folder)")
    n.add_argument("source", metavar="SOURCE", help="the NXRefine experiment directory")
    n.add_argument("dest", metavar="DEST", help="the hklflow experiment directory to write")
    n.add_argument("--detector", metavar="NAME",
                   help="pyFAI detector name (default: the calibration's or configuration's, "
                        "else the one of the files' shape and pixel size)")
    n.add_argument("--force", action="store_true", help="overwrite an existing config")
    s = sub.add_parser("spec", help="rotation scans of a SPEC file (QM2)")
    s.add_argument("spec", metavar="SPECFILE", help="the SPEC file")
    s.add_argument("dest", metavar="DEST", help="the hklflow experiment directory to write")
    s.add_argument("--scans", required=True, metavar="N,...",
                   help="the scan numbers, e.g. 12,13,14 or 12-14,20-22")
    s.add_argument("--frames", required=True, metavar="PATTERN",
                   help="each scan's frame files, {scan} its number ({scan:03d} zero-padded), "
                        "e.g. 'raw/lsco/xtal/*/lsco_{scan:03d}/*.cbf'; the folder above a "
                        "scan's frames (300K) is its temperature")
    s.add_argument("--poni", required=True, metavar="FILE",
                   help="the detector's calibration (pyFAI PONI), imported")
    s.add_argument("--sample", required=True, help="the sample's name")
    s.add_argument("--detector", metavar="NAME", help="pyFAI detector name, if the PONI names none")
    s.add_argument("--monitor", metavar="COLUMN", help="the SPEC column of the monitor counts")
    s.add_argument("--space-group", metavar="SG", help="e.g. 'F m -3 m' or 225")
    s.add_argument("--cell", type=float, nargs=6, metavar=("a", "b", "c", "al", "be", "ga"))
    s.add_argument("--force", action="store_true", help="overwrite an existing config")
    return p


def main(argv=None) -> int:
    from .import_nxrefine import import_experiment, write_experiment

    args = parser().parse_args(argv)
    try:
        if args.kind == "nxrefine":
            imported = import_experiment(args.source, args.dest, args.detector)
            files = write_experiment(imported, f"the NXRefine experiment "
                                     f"{Path(args.source).resolve()}", args.dest, args.force)
        else:
            from . import import_spec

            imported = import_spec.import_spec(
                args.spec, args.dest, import_spec.parse_numbers(args.scans), args.frames,
                args.poni, args.sample, args.detector, args.monitor, args.space_group, args.cell)
            files = write_experiment(imported, f"the SPEC file {Path(args.spec).resolve()}",
                                     args.dest, args.force, by="hklflow import spec",
                                     poni_file=import_spec.PONI_FILE)
    except (HklflowError, FileExistsError, OSError, ValueError) as exc:
        print(f"hklflow import: {exc}", file=sys.stderr)
        return 1
    print(f"hklflow import: wrote {files[0]}, {files[1]} and {files[2]} "
          f"({len(imported.rows)} rows)")
    for line in imported.report:
        print(f"  {line}")
    for line in imported.missing_raw:
        print(f"  {line}: hklflow run sets its row aside until it exists")
    from .init import placeholders_in

    missing = placeholders_in(imported.config)
    if missing:
        print(f"  still to fill in (marked FILL_IN): {', '.join(missing)}")
    print(f"  then: hklflow run {args.dest} -- -n   (a dry run: what would be made)")
    return 0
