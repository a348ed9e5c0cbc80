"""Step model_inputs: the files modelling programs read (output.model_inputs: Yell,
rmc-discord) of a merged or symmetrised volume, its intensity with the uncertainty that
weights it (hklflow.files.model_inputs: layouts, sources, and the floor of sigma where a
voxel counted nothing)."""
from __future__ import annotations

from ..base.errors import ConfigError
from ..base.memory import check_room, whole_volume_bytes
from ..files.model_inputs import write_model_inputs
from ..files.provenance import provenance
from ..files.volume import has_variance, read_volume, read_volume_header
from ..settings.params import ModelInputsParams, settings_part
from ._run import StepParser, run_step


def parser() -> StepParser:
    p = StepParser("model_inputs", __doc__)
    p.add_settings()
    p.add_input("--volume", "merged or symmetrised volume (with its variance)")
    p.add_argument("--out-dir", required=True, help="folder of the files")
    p.add_argument("--stem", required=True, help="the files' name stem (the volume's name)")
    return p


def run(args, log) -> None:
    programs = settings_part(args.settings, ModelInputsParams).programs
    size = read_volume_header(args.volume).grid.size
    check_room(whole_volume_bytes(size, has_variance(args.volume)),
               f"the model inputs of {size:,} voxels (the volume read whole)",
               "a coarser reduction.transform.grid", log)
    volume = read_volume(args.volume)
    if volume.variance is None:
        raise ConfigError(f"{args.volume}: no variance_sum: the modelling programs weight by "
                          "1/sigma (set reduction.transform.variance: true, or leave "
                          "output.model_inputs empty)")
    files = write_model_inputs(volume, args.out_dir, args.stem, programs,
                               provenance=provenance("hklflow model_inputs", args.settings,
                                                     inputs=[args.volume]))
    for program, paths in files.items():
        log.info("%s: %s", program, ", ".join(str(p) for p in paths))


def main(argv=None) -> int:
    return run_step(parser(), run, argv)
