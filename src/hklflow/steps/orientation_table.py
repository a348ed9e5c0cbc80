"""Step orientation_table: a sample's orientation table, from the orientation file of every
temperature: per temperature and entry, peaks used, RMS residuals in x, y and phi, the cell
with its esd (its own, and with the detector held) and its correlation with the distance,
beside the detector they share (where it comes from, its parameters and esd); as a
tab-separated table and a picture of the cell against temperature."""
from __future__ import annotations

from ..base.errors import ConfigError, InputMismatchError
from ..files.orientation import (MADE_WITHOUT, orientation_row, read_orientation_file,
                                 write_orientation_table)
from ..files.provenance import provenance
from ..pictures.orientation import plot_orientation_table
from ..pictures.preview import preview_label
from ..settings.params import SampleParams, TemperaturesParams, settings_part
from ._run import StepParser, run_step


def parser() -> StepParser:
    p = StepParser("orientation_table", __doc__)
    p.add_settings()
    p.add_input("--orientations", "orientation.nxs of every temperature, in the order of the "
                                  "settings' temperatures", nargs="+")
    p.add_output("--out", "table to write (tab-separated)")
    p.add_output("--png", "picture to write")
    return p


def run(args, log) -> None:
    labels = settings_part(args.settings, TemperaturesParams).temperatures
    name = settings_part(args.settings, SampleParams).name
    if len(labels) != len(args.orientations):
        raise ConfigError(f"--settings temperatures: {len(labels)} labels for "
                          f"{len(args.orientations)} orientation files")
    records = [read_orientation_file(p) for p in args.orientations]
    for label, rec, path in zip(labels, records, args.orientations):
        if (rec.sample, rec.temperature_label) != (name, label):
            raise InputMismatchError(f"{path} is the orientation of {rec.sample}/"
                                     f"{rec.temperature_label}, not of {name}/{label}")
    rows = [orientation_row(rec) for rec in records]
    shared = []
    for rec in records:
        if rec.shared_detector is not None and rec.shared_detector not in shared:
            shared.append(rec.shared_detector)
    # (rows hklflow run set aside: each temperature made without one says so; so does the table)
    without = tuple(f"{rec.temperature_label}: {note}" for rec in records for note in rec.notes
                    if note.startswith(MADE_WITHOUT))
    for line in without:
        log.info("%s", line)
    write_orientation_table(args.out, name, shared, rows,
                            provenance("hklflow orientation_table", args.settings,
                                       inputs=list(args.orientations)), notes=without)
    preview = preview_label([{"landed": list(r.landed), "provisional_orientation": True}
                             for r in records if r.landed], full_ids=True)
    plot_orientation_table(args.png, f"{name}: orientation of every temperature", shared, rows,
                           preview=preview)
    log.info("%s: orientation table of %d temperatures (%s) -> %s, %s", name, len(rows),
             ", ".join(labels), args.out, args.png)


def main(argv=None) -> int:
    return run_step(parser(), run, argv)
