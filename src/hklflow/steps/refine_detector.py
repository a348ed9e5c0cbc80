"""Step refine_detector (reduction.refinement.detector_from all): one detector refined on
the peaks of every temperature of a sample together, each temperature with its own cell,
orientation and offsets, each starting from its parent's orientation
(hklflow.algorithms.orientation.orient.refine_sample_detector); every temperature's
refine_temperature then holds it fixed.  A temperature whose peaks do not index from its
parent is left out of the fit (named in the file), and fails in its own refinement."""
from __future__ import annotations

from ..algorithms.orientation.orient import refine_sample_detector, temperature_entries
from ..base.errors import InputMismatchError
from ..files.orientation import (made_without, read_orientation_file, temperature_row,
                                 write_shared_detector_file)
from ..files.peaks import read_peaks_file
from ..files.provenance import provenance
from ..files.scan import read_scan_file
from ..pictures.orientation import plot_orientation_table
from ..settings.params import ParentsParams, RefinementParams, SetAsideParams, settings_part
from ._run import StepParser, run_step


def parser() -> StepParser:
    p = StepParser("refine_detector", __doc__)
    p.add_settings()
    p.add_input("--parents", "the orientation file of every parent of the sample (index_parent)",
                nargs="+")
    p.add_input("--scans", "scan.nxs of every entry of the sample", nargs="+")
    p.add_input("--peaks", "peaks.nxs of the same entries, in the same order", nargs="+")
    p.add_output("--out", "shared detector file to write")
    p.add_output("--png", "the sample's orientation table in the joint fit (picture)")
    return p


def run(args, log) -> None:
    params = settings_part(args.settings, RefinementParams)
    parents_of = settings_part(args.settings, ParentsParams).parents
    parents = {}
    for f in args.parents:
        rec = read_orientation_file(f)
        parents[rec.temperature_label] = rec
    scans = [read_scan_file(f) for f in args.scans]
    peaks = [read_peaks_file(f) for f in args.peaks]
    if len(peaks) != len(scans):
        raise InputMismatchError(f"{len(scans)} scan files and {len(peaks)} peaks files: expected "
                                 "one peaks file per scan, in the same order")
    sample = scans[0].sample
    by_temperature = {}
    for rec, pk in zip(scans, peaks):
        by_temperature.setdefault(rec.temperature_label, []).append((rec, pk))
    temperatures = []
    for label, pairs in by_temperature.items():
        parent = parents.get(parents_of.get(label, ""))
        if parent is None or parent.sample != sample:
            raise InputMismatchError(
                f"{sample}/{label}: its parent {parents_of.get(label)!r} is not among --parents "
                f"({', '.join(args.parents)}) as an orientation of sample {sample!r}")
        recs = [r for r, _ in pairs]
        entries = temperature_entries(recs, [p for _, p in pairs])
        temperatures.append((f"{sample}/{label}", entries, parent, [r.scan_id for r in recs]))
    log.info("%s: one detector from %d temperatures, %d entries, %d peaks", sample,
             len(temperatures), len(scans), sum(len(e.x) for t in temperatures for e in t[1]))
    joint, shared = refine_sample_detector(temperatures, params, log)
    # (rows hklflow run set aside at any temperature: the shared detector says it lacks them)
    joint.notes.extend(made_without(settings_part(args.settings, SetAsideParams).set_aside))
    rows = [temperature_row(label.split("/", 1)[1], r) for label, r in zip(joint.labels, joint.results)]
    write_shared_detector_file(args.out, sample=sample, shared=shared, rows=rows,
                               left_out=joint.left_out, notes=joint.notes, seconds=joint.seconds,
                               provenance=provenance("hklflow refine_detector", args.settings,
                                                     inputs=[*args.parents, *args.scans,
                                                             *args.peaks]))
    plot_orientation_table(args.png, f"{sample}: one detector refined on every temperature "
                                     "(the joint fit)", shared, rows)
    for label, why in joint.left_out.items():
        log.warning("%s left out of the detector's refinement: %s", label, why)
    c = shared.corrections()
    log.info("%s: detector from %d scans, %d peaks: corrections dist %+.3e m, poni1 %+.3e m, "
             "poni2 %+.3e m, rot1..3 %+.2e %+.2e %+.2e rad", sample, len(shared.scans),
             shared.n_peaks, c["dist"], c["poni1"], c["poni2"], c["rot1"], c["rot2"], c["rot3"])


def main(argv=None) -> int:
    return run_step(parser(), run, argv)
