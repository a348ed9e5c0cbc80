"""Step merge_entries: the volume of a sample at one temperature - signal and weight of the
volumes of its entries summed voxel by voxel (hklflow.merging.sum_volumes), so the gaps of
one entry are filled by the others - with slice pictures."""
from __future__ import annotations

from ..merging import sum_volumes
from ..params import SliceParams, settings_part
from ..pictures import plot_slices
from ..provenance import provenance
from ._run import StepParser, run_step


def parser() -> StepParser:
    p = StepParser("merge_entries", __doc__)
    p.add_settings()
    p.add_argument("--title", required=True, help="title of the sum, e.g. SAMPLE/300K/f1")
    p.add_input("--inputs", "volumes to add", nargs="+")
    p.add_output("--out", "volume file to write")
    p.add_output("--png", "slice picture to write")
    return p


def run(args, log) -> None:
    prov = provenance("hklflow merge_entries", args.settings, inputs=args.inputs)
    sum_volumes(args.inputs, args.out, args.title, prov, log=log)
    plot_slices(args.out, settings_part(args.settings, SliceParams).slices, args.png,
                f"{args.title} ({len(args.inputs)} volumes summed)", log=log)


def main(argv=None) -> int:
    return run_step(parser(), run, argv)
