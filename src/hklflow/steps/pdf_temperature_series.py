"""Step pdf_temperature_series: one plane of a sample's 3D-DeltaPDF at every temperature, side
by side on one colour scale symmetric about 0 (the first of reduction.pdf.slices)."""
from __future__ import annotations

from ..base.errors import ConfigError
from ..files.pdf import read_pdf_notes
from ..pictures.pdf import plot_pdf_series
from ..pictures.preview import preview_label
from ..settings.params import PDFSeriesParams, SampleParams, TemperaturesParams, settings_part
from ._run import StepParser, run_step


def parser() -> StepParser:
    p = StepParser("pdf_temperature_series", __doc__)
    p.add_settings()
    p.add_input("--inputs", "pdf.nxs of every temperature, in the order of the settings' "
                            "temperatures", nargs="+")
    p.add_output("--png", "picture to write")
    return p


def run(args, log) -> None:
    s = args.settings
    labels = settings_part(s, TemperaturesParams).temperatures
    if len(labels) != len(args.inputs):
        raise ConfigError(f"--settings temperatures: {len(labels)} labels for "
                          f"{len(args.inputs)} PDF files")
    plane = settings_part(s, PDFSeriesParams).slice
    name = settings_part(s, SampleParams).name
    drawn = plot_pdf_series(list(zip(labels, args.inputs)), plane,
                            args.png, f"{name} 3D-DeltaPDF", log=log,
                            preview=preview_label([read_pdf_notes(p) for p in args.inputs], full_ids=True))
    log.info("%s: plane %s at %d temperatures (%s) -> %s", name, plane,
             len(drawn), ", ".join(drawn), args.png)


def main(argv=None) -> int:
    return run_step(parser(), run, argv)
