"""Step sum_chunks: the volumes of one scan entry, each kind (transform, masked_transform)
the sum of the volumes of its frame chunks (hklflow.algorithms.merge.volumes.sum_volumes), with slice
pictures.  The chunks are temporary files of the transform: an entry transformed in one
chunk has its volumes moved into place (a rename and a new header), not rewritten.  A scan in
progress (hklflow watch) sums its blocks' volumes, which are kept (``--keep-inputs``).  With
the background the scans table names for the entry (transform_background's volumes), the
sum minus that background (hklflow.algorithms.merge.background); the volume's notes say
which background was subtracted, or that none was."""
from __future__ import annotations

import tempfile
from pathlib import Path

from ..algorithms.merge.volumes import sum_volumes
from ..base.errors import InputMismatchError
from ..files.provenance import provenance
from ..files.volume import update_notes
from ..pictures.figure import plot_left_out
from ..pictures.preview import preview_label
from ..pictures.volumes import plot_slices
from ..settings.params import SliceParams, TransformParams, settings_part
from ._run import StepParser, run_step

NO_BACKGROUND = "none: the scans table names no background for this entry"


def parser() -> StepParser:
    p = StepParser("sum_chunks", __doc__)
    p.add_settings()
    p.add_argument("--title", required=True, help="title of the sum, e.g. SAMPLE/300K/f1")
    p.add_input("--inputs", "volumes to add, the chunks of the first output's kind first, "
                "then those of the next (as many per output)", nargs="+")
    p.add_input("--background", "the background's volume to subtract, one per output "
                "(transform_background)", nargs="+", required=False)
    p.add_argument("--keep-inputs", action="store_true",
                   help="the inputs are kept (the blocks of a scan in progress, which the next "
                        "preview sums again): one input is copied, not moved into place")
    p.add_argument("--preview", action="store_true",
                   help="a preview of hklflow watch: the pictures say that the entry's own "
                        "slices come with the final results (the preview's are the merged "
                        "volume's)")
    p.add_output("--out", "volume file to write, one per kind", nargs="+")
    p.add_output("--png", "slice picture to write, one per output", nargs="+")
    return p


ENTRY_PICTURE_LEFT_OUT = ("left out of previews (hklflow watch): an entry's own slices are "
                          "drawn with the final results; a preview's are those of the "
                          "temperature's merged volume ({kind}.png beside the entries)")


def run(args, log) -> None:
    n, rest = divmod(len(args.inputs), len(args.out))
    if rest or len(args.png) != len(args.out):
        raise InputMismatchError(f"{len(args.inputs)} inputs, {len(args.out)} outputs and "
                                 f"{len(args.png)} pictures: expected as many inputs per "
                                 "output and one picture per output")
    slices = settings_part(args.settings, SliceParams).slices
    backgrounds = args.background or []
    if backgrounds and len(backgrounds) != len(args.out):
        raise InputMismatchError(f"{len(backgrounds)} backgrounds for {len(args.out)} outputs: "
                                 "expected one per output")
    smooth = settings_part(args.settings, TransformParams).background_smooth
    for i, (out, png) in enumerate(zip(args.out, args.png)):
        inputs = args.inputs[i * n:(i + 1) * n]
        prov = provenance("hklflow sum_chunks", args.settings,
                          inputs=inputs + backgrounds[i:i + 1])
        if not backgrounds:
            notes = sum_volumes(inputs, out, args.title, prov, log=log,
                                move_single=not args.keep_inputs)
            update_notes(out, {"background": NO_BACKGROUND})
        else:  # (the sum and the background's own, made whole, beside the output)
            # (here: most entries have no background, and its smoothing loads scipy.ndimage)
            from ..algorithms.merge.background import subtract_background

            with tempfile.TemporaryDirectory(dir=Path(out).parent, prefix=".sum_chunks") as tmp:
                summed, bg = Path(tmp) / "sum.nxs", Path(tmp) / "background.nxs"
                notes = sum_volumes(inputs, summed, args.title, prov, log=log,
                                    move_single=not args.keep_inputs)
                sum_volumes([backgrounds[i]], bg, f"background of {args.title}", prov, log=log)
                notes["background"] = subtract_background(summed, bg, out, args.title, prov,
                                                          smooth, log, named=backgrounds[i])
        title = (f"{args.title} ({n} volumes summed"
                 f"{', background subtracted' if backgrounds else ''})")
        if args.preview:
            kind = Path(out).stem
            plot_left_out(png, title, ENTRY_PICTURE_LEFT_OUT.format(kind=kind),
                          preview_label(notes))
        else:
            plot_slices(out, slices, png, title, log=log, preview=preview_label(notes))


def main(argv=None) -> int:
    return run_step(parser(), run, argv)
