"""Step index_parent: the parent scan of a sample indexed from scratch (all its entries at
the parent temperature) and refined - the orientation every other temperature of the
sample starts from (hklflow.algorithms.orientation.orient.index_parent), and the detector
they share (reduction.refinement.detector_from parent: refined here; none: the
calibration's; all: refined here as the start of rule refine_detector)."""
from __future__ import annotations

from ..algorithms.orientation.indexing import MIN_VECTORS
from ..algorithms.orientation.orient import (check_entries_have_peaks, check_entries_usable,
                                             index_parent, misplaced_phi_starts,
                                             naming_peak_warnings, parent_detector,
                                             temperature_entries)
from ..files.orientation import made_without, write_orientation_file
from ..files.peaks import read_peaks_file
from ..files.provenance import provenance
from ..files.scan import read_scan_file
from ..pictures.detector import plot_residuals
from ..pictures.preview import landed_record, merged_records, orientation_label
from ..settings.params import (IndexingParams, RefinementParams, SampleParams, SetAsideParams,
                               settings_part)
from ._run import StepParser, run_step


def parser() -> StepParser:
    p = StepParser("index_parent", __doc__)
    p.add_settings()
    p.add_temperature_entries()
    return p


def run(args, log) -> None:
    crystal = settings_part(args.settings, SampleParams).crystal()
    scans = [read_scan_file(f) for f in args.scans]
    peaks = [read_peaks_file(f) for f in args.peaks]
    entries = temperature_entries(scans, peaks)
    label = f"{scans[0].sample}/{scans[0].temperature_label}"
    refinement = settings_part(args.settings, RefinementParams)
    with naming_peak_warnings(peaks):
        check_entries_have_peaks(scans, peaks, entries, label, MIN_VECTORS,
                                 "index the parent from")
        result, summary = index_parent(entries, crystal, refinement,
                                       settings_part(args.settings, IndexingParams), log)
        misplaced = misplaced_phi_starts(result, refinement, indexed_from_these=True)
        unusable = check_entries_usable(scans, peaks, result, refinement, log, misplaced)
    landed = merged_records([landed_record(s) for s in scans])  # none: a batch run's file
    # (rows hklflow run set aside at this temperature: the orientation says it lacks them)
    result.notes.extend(made_without(settings_part(args.settings, SetAsideParams).set_aside))
    shared = parent_detector(result, [s.scan_id for s in scans],
                             "none" if refinement.detector_from == "none" else "parent")
    write_orientation_file(args.out, sample=scans[0].sample,
                           temperature_label=scans[0].temperature_label, parent=label,
                           result=result, indexing=summary, unusable_entries=unusable,
                           landed=landed, shared_detector=shared,
                           provenance=provenance("hklflow index_parent", args.settings,
                                                 inputs=[*args.scans, *args.peaks]))
    plot_residuals(result, f"{label} (parent, indexed from scratch)", args.png,
                   preview=orientation_label(landed, of=label))
    log.info("parent %s: rms %.3f px, %.3f frames, %.1f%% indexed, cell %s", label,
             result.rms_px, result.rms_frames, 100 * result.fraction_indexed,
             result.model.crystal.cell.parameters)


def main(argv=None) -> int:
    return run_step(parser(), run, argv)
