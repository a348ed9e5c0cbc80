"""hklflow cut VOLUME: a line or a plane through a volume, at any angle to its grid, in
r.l.u. (hklflow.algorithms.cuts): NeXus NXdata that NeXpy plots as it is, and a PNG.

  hklflow cut results/S/300K/transform.nxs --plane "1 1 0" "0 0 1"          (H H L)
  hklflow cut VOLUME --normal "0 0 1" --origin "0 0 0.5"                    (H K 0.5)
  hklflow cut VOLUME --line "1 1 0" --origin "0 0 1" --length 4 --width 0.02

Points are one voxel apart along each direction unless --step says otherwise; a line
runs over --length (in multiples of its direction, centred on the origin) or --range,
a plane over --range-u and --range-v, else across the whole grid.  Each point takes the
nearest voxel, or with --width (1/A) the voxels within width/2 of the line or plane; its
intensity is the sum of their signals over the sum of their weights (docs/cuts.md says
why), NaN where nothing was measured.  The cell is the volume's (sample/unit_cell)."""
from __future__ import annotations

import argparse
import re
from pathlib import Path

import numpy as np

from ..algorithms.cuts import directions_label, plan_cut, plane_from_normal, point_label, sample_cut
from ..base.errors import ConfigError, FileFormatError
from ..files.cut import write_cut
from ..files.provenance import provenance
from ..files.volume import read_volume, read_volume_header
from ..pictures.cuts import plot_cut
from ..pictures.slices import cell_of
from ._run import StepParser, run_step


def hkl(text: str) -> np.ndarray:
    """'1 1 0', '1,1,0', '[1 1 0]' or '(0 0 0.5)' -> three floats."""
    parts = [p for p in re.split(r"[\s,]+", text.strip().strip("[]()")) if p]
    try:
        values = np.array([float(p) for p in parts])
    except ValueError:
        values = np.empty(0)
    if values.shape != (3,) or not np.all(np.isfinite(values)):
        raise argparse.ArgumentTypeError(f"three numbers h k l expected, got {text!r}")
    return values


def parser() -> StepParser:
    p = StepParser("cut", __doc__)
    p.description = __doc__
    p.add_argument("volume", type=Path, help="a volume file (merged, symmetrised, an entry's)")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--plane", type=hkl, nargs=2, metavar=("U", "V"),
                      help="a plane by two in-plane directions (r.l.u.), e.g. \"1 1 0\" \"0 0 1\"")
    what.add_argument("--normal", type=hkl, metavar="N",
                      help="a plane by its normal (a reciprocal-space direction, r.l.u.: "
                           "B n); its in-plane directions are the shortest lattice ones")
    what.add_argument("--line", type=hkl, metavar="D", help="a line by its direction (r.l.u.)")
    p.add_argument("--origin", type=hkl, default=np.zeros(3), metavar="HKL",
                   help="a point of the cut (r.l.u.; default \"0 0 0\")")
    p.add_argument("--length", type=float,
                   help="a line's length in multiples of its direction, centred on the origin")
    p.add_argument("--range", type=float, nargs=2, metavar=("START", "STOP"),
                   help="a line's extent in multiples of its direction from the origin")
    p.add_argument("--range-u", type=float, nargs=2, metavar=("START", "STOP"),
                   help="a plane's extent along its first direction")
    p.add_argument("--range-v", type=float, nargs=2, metavar=("START", "STOP"),
                   help="a plane's extent along its second direction")
    p.add_argument("--step", type=float, nargs="+", metavar="STEP",
                   help="the points' spacing in multiples of each direction (default: one voxel)")
    p.add_argument("--width", type=float,
                   help="bin the voxels within width/2 (1/A) of the line or plane (default: "
                        "the nearest voxel of each point)")
    p.add_argument("--title", help="the cut's title (default: the volume's and the cut's)")
    p.add_output("--out", "cut file (default: beside the volume, VOLUME_cut_<directions>.nxs)",
                 required=False)
    p.add_output("--png", "picture (default: the cut file's name with .png)", required=False)
    return p


def _name(directions, origin) -> str:
    label = "_".join(",".join(f"{x:g}" for x in d) for d in directions)
    if np.any(origin != 0):
        label += "_at_" + ",".join(f"{x:g}" for x in origin)
    return ("line_" if len(directions) == 1 else "plane_") + label


def run(args, log) -> None:
    header = read_volume_header(args.volume)
    cell = cell_of(header)
    if cell is None:
        raise FileFormatError(f"{args.volume}: no sample/unit_cell: the cut's axes need the cell")
    if args.line is not None:
        directions = [args.line]
        if args.range_u or args.range_v:
            raise ConfigError("--range-u and --range-v are a plane's: give a line --range or "
                              "--length")
        if args.length is not None and args.range is not None:
            raise ConfigError("give a line --length or --range, not both")
        ranges = ([(-args.length / 2, args.length / 2)] if args.length is not None
                  else [tuple(args.range)] if args.range is not None else None)
    else:
        directions = list(args.plane) if args.plane is not None \
            else list(plane_from_normal(cell, args.normal))
        if args.length is not None or args.range is not None:
            raise ConfigError("--length and --range are a line's: give a plane --range-u "
                              "and --range-v")
        if (args.range_u is None) != (args.range_v is None):
            raise ConfigError("give a plane both --range-u and --range-v, or neither")
        ranges = None if args.range_u is None else [tuple(args.range_u), tuple(args.range_v)]
    if args.step is not None and len(args.step) not in (1, len(directions)):
        raise ConfigError(f"--step: one value, or one per direction ({len(directions)})")
    steps = None if args.step is None else (args.step * len(directions))[:len(directions)]
    name = _name(directions, args.origin)
    if args.out is None:
        args.out = args.volume.with_name(f"{args.volume.stem}_cut_{name}.nxs")
    if args.png is None:
        args.png = Path(args.out).with_suffix(".png")
    plan = plan_cut(header.grid, cell, args.origin, directions, ranges, steps, args.width)
    vol = read_volume(args.volume, region=plan.region)
    cut = sample_cut(header.grid, plan, vol.signal, vol.weight, vol.variance)
    what = (f"{'line' if cut.ndim == 1 else 'plane'} "
            + " ".join(directions_label(d) for d in cut.directions)
            + f" through {point_label(cut.origin)}")
    title = args.title or f"{header.title or args.volume.stem}: {what}"
    measured = np.isfinite(cut.intensity())
    log.info("%s: %s, %s; %s points (%s), %.1f%% measured; |d| = %s 1/A%s", args.volume,
             what, cut.method, measured.size, " x ".join(str(len(c)) for c in cut.coords),
             100 * measured.mean() if measured.size else 0.0,
             ", ".join(f"{x:.5g}" for x in cut.lengths),
             "" if cut.angle is None else f", angle {cut.angle:.2f} deg")
    if cut.variance is None:
        log.warning("%s has no variance_sum: the cut has no sigma", args.volume)
    write_cut(args.out, cut, title=title, cell=cell, volume=args.volume,
              provenance=provenance("hklflow cut", {"origin": cut.origin.tolist(),
                                                    "directions": cut.directions.tolist(),
                                                    "ranges": ranges, "steps": steps,
                                                    "width": args.width},
                                    inputs=[args.volume]))
    plot_cut(cut, args.png, title)
    log.info("wrote %s and %s", args.out, args.png)


def main(argv=None) -> int:
    return run_step(parser(), run, argv)
