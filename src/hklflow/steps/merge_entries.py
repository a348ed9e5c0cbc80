"""Step merge_entries: the volume of a sample at one temperature - signal and weight of the
volumes of its entries summed voxel by voxel (hklflow.merging.sum_volumes), so the gaps of
one entry are filled by the others - with slice pictures.  Entries that the orientation
step found without usable signal (reduction.merge.unusable_entries: leave_out) are left out,
and the log, the volume's notes and the picture say so."""
from __future__ import annotations

from ..files.orientation import read_orientation_file
from ..merging import entries_to_merge, sum_volumes
from ..params import SliceParams, settings_part
from ..pictures import plot_slices
from ..preview import preview_label
from ..provenance import provenance
from ..slices import kept_planes
from ._run import StepParser, run_step


def parser() -> StepParser:
    p = StepParser("merge_entries", __doc__)
    p.add_settings()
    p.add_argument("--title", required=True, help="title of the sum, e.g. SAMPLE/300K/f1")
    p.add_input("--inputs", "volumes to add", nargs="+")
    p.add_input("--orientation", "orientation.nxs of the temperature: its unusable entries are "
                                 "left out", required=False)
    p.add_output("--out", "volume file to write")
    p.add_output("--png", "slice picture to write")
    return p


def run(args, log) -> None:
    unusable = read_orientation_file(args.orientation).unusable_entries if args.orientation else {}
    inputs, left_out = entries_to_merge(args.inputs, unusable, log)
    prov = provenance("hklflow merge_entries", args.settings,
                      inputs=args.inputs + ([args.orientation] if args.orientation else []))
    slices = settings_part(args.settings, SliceParams).slices
    # the pictures' planes kept as they are written (not read back from the file)
    planes = kept_planes(slices)
    notes = sum_volumes(inputs, args.out, args.title, prov, log=log, left_out=left_out,
                        keep=planes)
    what = f"{len(inputs)} volumes summed"
    if left_out:
        what += "; left out: " + ", ".join(f"{e} ({why.split(' (')[0]})" for e, why in left_out.items())
    plot_slices(planes if planes.complete else args.out, slices, args.png,
                f"{args.title} ({what})", log=log, preview=preview_label(notes))


def main(argv=None) -> int:
    return run_step(parser(), run, argv)
