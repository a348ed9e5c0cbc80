"""Step symmetrize: a merged volume symmetrised by the Laue group of the sample's space group
(hklflow.algorithms.merge.volumes.symmetrize_file) - signal and weight of every voxel summed over its
equivalents, then divided - with slice pictures.  The grid must be mapped onto itself by
every operator (else an error names the config keys of the grid axes to change)."""
from __future__ import annotations

import time

from ..algorithms.merge.volumes import symmetrize_file
from ..base.memory import check_room, whole_volume_bytes
from ..files.provenance import provenance
from ..files.volume import has_variance, read_volume_header
from ..pictures.preview import preview_label
from ..pictures.slices import cell_of, kept_planes
from ..pictures.volumes import plot_slices
from ..settings.params import SampleParams, SliceParams, settings_part
from ._run import StepParser, run_step


def parser() -> StepParser:
    p = StepParser("symmetrize", __doc__)
    p.add_settings()
    p.add_input("--input", "merged volume to symmetrise")
    p.add_output("--out", "volume file to write")
    p.add_output("--png", "slice picture to write")
    return p


def run(args, log) -> None:
    crystal = settings_part(args.settings, SampleParams).crystal()
    slices = settings_part(args.settings, SliceParams).slices
    # the pictures' planes kept as they are written (not read back from the file)
    planes = kept_planes(slices)
    if not crystal.laue_keeps_l_planes:  # (cubic, rhombohedral: the input is held whole)
        header = read_volume_header(args.input)
        check_room(whole_volume_bytes(header.grid.size, has_variance(args.input)),
                   f"symmetrising {header.grid.size:,} voxels by {crystal.laue_group} (the "
                   "volume held whole)", "a coarser reduction.transform.grid", log)
    t0 = time.monotonic()
    notes = symmetrize_file(args.input, args.out, crystal,
                            provenance("hklflow symmetrize", args.settings, inputs=[args.input]),
                            log=log, keep=planes)
    sym = notes["symmetrized"]
    log.info("%s: symmetrised by %s (%d operators) in %.1f s; measured %.1f%% -> %.1f%% of "
             "the grid; %.1f%% of the (voxel, operator) equivalents inside the grid (the "
             "others, beyond the grid limits, contribute nothing)", args.input,
             sym["laue_group"], sym["operators"], time.monotonic() - t0,
             100 * notes["measured_fraction_before"], 100 * notes["measured_fraction"],
             100 * sym["equivalents_inside_grid"])
    plot_slices(planes if planes.complete else args.out, slices, args.png,
                f"{notes['input_title']} symmetrized by {sym['laue_group']} "
                f"({sym['operators']} operators)", cell=cell_of(planes) or crystal.cell, log=log,
                preview=preview_label(notes))


def main(argv=None) -> int:
    return run_step(parser(), run, argv)
