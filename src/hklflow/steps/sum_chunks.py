"""Step sum_chunks: the volumes of one scan entry, each kind (transform, masked_transform)
the sum of the volumes of its frame chunks (hklflow.algorithms.merge.volumes.sum_volumes), with slice
pictures.  The chunks are temporary files of the transform: an entry transformed in one
chunk has its volumes moved into place (a rename and a new header), not rewritten."""
from __future__ import annotations

from ..algorithms.merge.volumes import sum_volumes
from ..base.errors import InputMismatchError
from ..files.provenance import provenance
from ..pictures.preview import preview_label
from ..pictures.volumes import plot_slices
from ..settings.params import SliceParams, settings_part
from ._run import StepParser, run_step


def parser() -> StepParser:
    p = StepParser("sum_chunks", __doc__)
    p.add_settings()
    p.add_argument("--title", required=True, help="title of the sum, e.g. SAMPLE/300K/f1")
    p.add_input("--inputs", "volumes to add, the chunks of the first output's kind first, "
                "then those of the next (as many per output)", nargs="+")
    p.add_output("--out", "volume file to write, one per kind", nargs="+")
    p.add_output("--png", "slice picture to write, one per output", nargs="+")
    return p


def run(args, log) -> None:
    n, rest = divmod(len(args.inputs), len(args.out))
    if rest or len(args.png) != len(args.out):
        raise InputMismatchError(f"{len(args.inputs)} inputs, {len(args.out)} outputs and "
                                 f"{len(args.png)} pictures: expected as many inputs per "
                                 "output and one picture per output")
    slices = settings_part(args.settings, SliceParams).slices
    for i, (out, png) in enumerate(zip(args.out, args.png)):
        inputs = args.inputs[i * n:(i + 1) * n]
        prov = provenance("hklflow sum_chunks", args.settings, inputs=inputs)
        notes = sum_volumes(inputs, out, args.title, prov, log=log, move_single=True)
        plot_slices(out, slices, png, f"{args.title} ({n} volumes summed)", log=log,
                    preview=preview_label(notes))


def main(argv=None) -> int:
    return run_step(parser(), run, argv)
