"""Step temperature_series: one slice of a sample's merged volume at every temperature, side
by side on a common log intensity scale (reduction.merge.series_slice, read alone from each
volume file)."""
from __future__ import annotations

import re

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
    notes = [read_volume_header(p).notes for p in args.inputs]
    preview = preview_label(notes, full_ids=True)
    # (rows hklflow run set aside: a volume made without them says so, and so does the picture)
    aside = [line for n in notes for line in n.get("set_aside", [])]
    for line in aside:
        log.info("made without the row %s", line)
    without = made_without_line(aside)
    drawn = plot_series(list(zip(labels, args.inputs)), spec, args.png, sample.name,
                        cell=cell, log=log, preview="\n".join(filter(None, (preview, without))))
    log.info("%s: slice %s at %d temperatures (%s) -> %s", sample.name, spec,
             len(drawn), ", ".join(drawn), args.png)


def made_without_line(set_aside: list[str]) -> str:
    """'made without tiny/300K/f2, ...' of hklflow run's set-aside lines (their scan ids,
    in parentheses; the line itself where it has none); '' without any."""
    ids = [m.group(1) if (m := re.search(r"\(([^()]+/[^()]+)\)", line)) else line
           for line in set_aside]
    return f"made without {', '.join(dict.fromkeys(ids))} (set aside)" if ids else ""


def main(argv=None) -> int:
    return run_step(parser(), run, argv)
