"""Step cut_temperature_series: a line cut of a sample (output.cuts) at every temperature
in one picture (pictures.cuts.plot_cut_series), from the cut files rule cut wrote."""
from __future__ import annotations

from ..base.errors import InputMismatchError
from ..files.cut import read_cut
from ..pictures.cuts import plot_cut_series
from ._run import StepParser, run_step


def parser() -> StepParser:
    p = StepParser("cut_temperature_series", __doc__)
    p.add_input("--cuts", "the line's cut file at every temperature", nargs="+")
    p.add_argument("--labels", nargs="+", required=True,
                   help="the temperatures' labels (300K), in the order of --cuts")
    p.add_argument("--title", required=True, help="the picture's title")
    p.add_output("--png", "picture to write")
    return p


def run(args, log) -> None:
    if len(args.labels) != len(args.cuts):
        raise InputMismatchError(f"{len(args.cuts)} cut files but {len(args.labels)} labels")
    records = [read_cut(p) for p in args.cuts]
    for path, record in zip(args.cuts, records):
        if len(record.directions) != 1:
            raise InputMismatchError(f"{path}: a plane (a series picture is a line's)")
        if (record.directions != records[0].directions).any() \
                or (record.origin != records[0].origin).any():
            raise InputMismatchError(f"{path}: not the line of {args.cuts[0]}")
    plot_cut_series(records, args.labels, args.png, args.title)
    log.info("%s: %d temperatures of the line", args.png, len(records))


def main(argv=None) -> int:
    return run_step(parser(), run, argv)
