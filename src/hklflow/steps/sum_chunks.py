"""Step sum_chunks: the volume of one scan entry, the sum of the volumes of its frame
chunks (hklflow.merging.sum_volumes), with slice pictures.  The chunks are temporary files
of the transform: an entry transformed in one chunk has its volume moved into place (a
rename and a new header), not rewritten."""
from __future__ import annotations

from ..merging import sum_volumes
from ..params import SliceParams, settings_part
from ..pictures import plot_slices
from ..provenance import provenance
from ._run import StepParser, run_step


def parser() -> StepParser:
    p = StepParser("sum_chunks", __doc__)
    p.add_settings()
    p.add_argument("--title", required=True, help="title of the sum, e.g. SAMPLE/300K/f1")
    p.add_input("--inputs", "volumes to add", nargs="+")
    p.add_output("--out", "volume file to write")
    p.add_output("--png", "slice picture to write")
    return p


def run(args, log) -> None:
    prov = provenance("hklflow sum_chunks", args.settings, inputs=args.inputs)
    sum_volumes(args.inputs, args.out, args.title, prov, log=log, move_single=True)
    plot_slices(args.out, settings_part(args.settings, SliceParams).slices, args.png,
                f"{args.title} ({len(args.inputs)} volumes summed)", log=log)


def main(argv=None) -> int:
    return run_step(parser(), run, argv)
