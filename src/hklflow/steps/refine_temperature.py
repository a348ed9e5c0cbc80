"""Step refine_temperature: cell, orientation and goniometer offsets of a sample at one
temperature refined on the peaks of its entries, starting from its parent's orientation
(read only; hklflow.algorithms.orientation.orient.refine_from_parent), with the detector the
sample's temperatures share held fixed: the parent's (reduction.refinement.detector_from
parent or none) or the one refined on every temperature (all: --detector, rule
refine_detector).  A temperature whose peaks do not index from the parent (a phase
transition, a wrong space group) fails with a message saying so rather than writing a bad
orientation."""
from __future__ import annotations

from ..algorithms.orientation.orient import (check_entries_have_peaks, check_entries_usable,
                                             detector_of, misplaced_phi_starts,
                                             naming_peak_warnings, refine_from_parent,
                                             temperature_entries)
from ..base.errors import InputMismatchError
from ..files.orientation import (made_without, read_orientation_file, read_shared_detector,
                                 write_orientation_file)
from ..files.peaks import read_peaks_file
from ..files.provenance import provenance
from ..files.scan import read_scan_file
from ..pictures.detector import plot_residuals
from ..pictures.preview import landed_record, merged_records, orientation_label
from ..settings.params import RefinementParams, SetAsideParams, settings_part
from ._run import StepParser, run_step


def parser() -> StepParser:
    p = StepParser("refine_temperature", __doc__)
    p.add_settings()
    p.add_input("--parent", "the parent's orientation file (index_parent; read only)")
    p.add_input("--detector", "the sample's shared detector (refine_detector's "
                "shared_detector.nxs; default: the parent's)", required=False)
    p.add_temperature_entries()
    return p


def run(args, log) -> None:
    parent = read_orientation_file(args.parent)
    scans = [read_scan_file(f) for f in args.scans]
    peaks = [read_peaks_file(f) for f in args.peaks]
    entries = temperature_entries(scans, peaks)
    label = f"{scans[0].sample}/{scans[0].temperature_label}"
    if parent.sample != scans[0].sample:
        raise InputMismatchError(f"{args.parent} is the orientation of sample {parent.sample!r}, "
                                 f"not of {scans[0].sample!r} ({args.scans[0]})")
    log.info("%s: %d peaks in %d entries, starting from the parent %s", label,
             sum(len(e.x) for e in entries), len(entries), parent.parent)
    params = settings_part(args.settings, RefinementParams)
    shared = None
    if args.detector:
        sample, shared, _ = read_shared_detector(args.detector)
        if sample != scans[0].sample:
            raise InputMismatchError(f"{args.detector} is the detector of sample {sample!r}, "
                                     f"not of {scans[0].sample!r} ({args.scans[0]})")
    with naming_peak_warnings(peaks):
        check_entries_have_peaks(scans, peaks, entries, label, 1, "refine against")
        result = refine_from_parent(entries, parent, params, log, label, shared)
        misplaced = misplaced_phi_starts(result, params)
        unusable = check_entries_usable(scans, peaks, result, params, log, misplaced)
    shared = shared or detector_of(parent, entries)
    # (rows hklflow run set aside at this temperature: the orientation says it lacks them)
    result.notes.extend(made_without(settings_part(args.settings, SetAsideParams).set_aside))
    # refined from a provisional parent: provisional too (none: a batch run's file)
    landed = merged_records([landed_record(s) for s in scans], parent.landed)
    write_orientation_file(args.out, sample=scans[0].sample,
                           temperature_label=scans[0].temperature_label, parent=parent.parent,
                           result=result, indexing=None, unusable_entries=unusable,
                           landed=landed, shared_detector=shared,
                           provenance=provenance("hklflow refine_temperature", args.settings,
                                                 inputs=[args.parent, *([args.detector] if
                                                                        args.detector else []),
                                                         *args.scans, *args.peaks]))
    plot_residuals(result, f"{label} (refined from {parent.parent})", args.png,
                   preview=orientation_label(landed, of=label))
    log.info("%s: rms %.3f px, %.3f frames, %.1f%% indexed, cell %s", label, result.rms_px,
             result.rms_frames, 100 * result.fraction_indexed, result.model.crystal.cell.parameters)


def main(argv=None) -> int:
    return run_step(parser(), run, argv)
