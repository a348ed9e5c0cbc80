"""Step temperature_series: one slice of a sample's merged volume at every temperature, side
by side on a common log intensity scale (reduction.merge.series_slice, read alone from each
volume file)."""
from __future__ import annotations

from ..base.errors import ConfigError
from ..files.volume import read_volume_header
from ..pictures.preview import preview_label
from ..pictures.slices import cell_of
from ..pictures.volumes import plot_series
from ..settings.params import SampleParams, SeriesParams, TemperaturesParams, settings_part
from ._run import StepParser, run_step


def parser() -> StepParser:
    p = StepParser("temperature_series", __doc__)
    p.add_settings()
    p.add_input("--inputs", "merged volume of every temperature, in the order of the settings' "
                            "temperatures", nargs="+")
    p.add_output("--png", "picture to write")
    return p


def run(args, log) -> None:
    s = args.settings
    labels = settings_part(s, TemperaturesParams).temperatures
    if len(labels) != len(args.inputs):
        raise ConfigError(f"--settings temperatures: {len(labels)} labels for "
                          f"{len(args.inputs)} input volumes")
    spec = settings_part(s, SeriesParams).series_slice
    sample = settings_part(s, SampleParams)
    cell = cell_of(args.inputs[0]) or sample.unit_cell()
    preview = preview_label([read_volume_header(p).notes for p in args.inputs], full_ids=True)
    drawn = plot_series(list(zip(labels, args.inputs)), spec, args.png, sample.name,
                        cell=cell, log=log, preview=preview)
    log.info("%s: slice %s at %d temperatures (%s) -> %s", sample.name, spec,
             len(drawn), ", ".join(drawn), args.png)


def main(argv=None) -> int:
    return run_step(parser(), run, argv)
