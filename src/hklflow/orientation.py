"""Orientation of a sample at one temperature (rules index_parent and refine_temperature):
the peaks of its entries as refinement input, the parent indexed from scratch, a child
refined from its parent.  No file I/O here: the steps read the records and pass them in."""
from __future__ import annotations

import logging

import numpy as np

from .diagnosis import diagnose_indexing_failure, explain_indexing_failure
from .errors import IndexingError, InputMismatchError, RawDataError, RefinementError
from .indexing import index_from_scratch
from .params import IndexingParams, RefinementParams
from .refinement import EntryPeaks, Model, RefinementResult, refine

CENTROID_FLOOR = 0.02  # pixels / frames: centroid error not explained by counting statistics
MIN_I_OVER_SIGMA = 5.0  # weaker peaks are left out of indexing and refinement


def centroid_sigmas(peaks: dict):
    """Centroid uncertainties (pixels, frames) of peaks: sqrt(variance / counts) with the
    pixel/frame quantisation (1/12) in the variance and a floor."""
    counts = np.maximum(peaks["int_sum"], 1.0)
    vxy = 0.5 * (peaks["observed_px_x_var"] + peaks["observed_px_y_var"]) + 1.0 / 12
    vz = peaks["observed_frame_var"] + 1.0 / 12
    return (np.sqrt(vxy / counts + CENTROID_FLOOR ** 2), np.sqrt(vz / counts + CENTROID_FLOOR ** 2))


def entry_peaks(setup, peaks: dict, min_i_over_sigma: float = MIN_I_OVER_SIGMA) -> EntryPeaks:
    """EntryPeaks of one entry (geometry.EntrySetup) from its peak table (find_peaks
    columns): the peaks above min_i_over_sigma with centroid uncertainties and intensities."""
    strong = peaks["int_sum"] > min_i_over_sigma * np.sqrt(np.maximum(peaks["int_sum_var"], 1.0))
    sxy, sz = centroid_sigmas(peaks)
    return EntryPeaks(setup, peaks["observed_px_x"][strong], peaks["observed_px_y"][strong],
                      peaks["observed_frame"][strong], sxy[strong], sz[strong],
                      peaks["int_sum"][strong])


def temperature_entries(scans, peaks) -> list[EntryPeaks]:
    """EntryPeaks of the entries of one sample at one temperature, from their scan and
    peaks records (files.scan.ScanRecord, files.peaks.PeaksRecord), which must belong
    together and share one calibration."""
    entries = []
    for rec, pk in zip(scans, peaks):
        if pk.scan_id != rec.scan_id:
            raise InputMismatchError(f"{pk.path} holds peaks of {pk.scan_id}, not of "
                                     f"{rec.scan_id} ({rec.path})")
        if (rec.sample, rec.temperature_label) != (scans[0].sample, scans[0].temperature_label):
            raise InputMismatchError(f"{rec.path} is a scan of {rec.sample}/"
                                     f"{rec.temperature_label}, {scans[0].path} of "
                                     f"{scans[0].sample}/{scans[0].temperature_label}")
        if rec.setup.calibration != scans[0].setup.calibration:
            raise InputMismatchError(f"{rec.path}: its calibration differs from that of "
                                     f"{scans[0].path}: the entries of one temperature are "
                                     "refined together from one calibration")
        entries.append(entry_peaks(rec.setup, pk.peaks))
    return entries


def sample_q(entries, model: Model | None = None) -> np.ndarray:
    """Sample-frame Q (1/Angstrom) of every peak of the entries (with the model's refined
    detector and offsets if given), concatenated."""
    return np.concatenate([e.setup.geometry(model).sample_q_at(e.y, e.x, e.z) for e in entries])


def _index(entries, model, crystal, params: IndexingParams, log):
    q = sample_q(entries, model)
    intensities = (np.concatenate([e.intensity for e in entries])
                   if all(e.intensity is not None for e in entries) else None)
    sol = index_from_scratch(q, crystal, params, intensities)
    log.info("indexed %.1f%% of %d peaks in %.2f s (%d candidate orientations from %d seed "
             "pairs); cell %s", 100 * sol.fraction, len(q), sol.seconds, sol.n_candidates_tried,
             sol.n_pairs_tried, " ".join(f"{v:.4f}" for v in sol.cell.parameters))
    for note in sol.notes:  # (what the user should know: merohedry, pseudo-symmetry, ...)
        log.warning("indexing: %s", note)
    return sol


def index_parent(entries, crystal, refine_params: RefinementParams,
                 index_params: IndexingParams, log=None) -> tuple[RefinementResult, dict]:
    """Index the parent's entries from scratch (the approximate cell of `crystal`), refine,
    then index again with the refined geometry and refine once more (keeping the better of
    the two).  The second pass matters on large detectors: the calibration cannot know
    rot3 (a rotation about the beam), and a pattern rotated by a few pixels can make the
    first indexing settle on another setting of the lattice; after the first refinement
    the detector is right.  When the first indexing fails, the error names the instrument
    setting with which the peaks would index, if one does (hklflow.diagnosis).  Returns
    (RefinementResult, summary of the passes)."""
    log = log or logging.getLogger("hklflow.orientation")
    log.info("indexing %d entries from scratch (space group %s, approximate cell %s)",
             len(entries), crystal.hm, crystal.cell.parameters)
    passes, best = [], None
    model_det, offsets, refined = entries[0].setup.calibration, {}, None
    for npass in (1, 2):
        try:
            sol = _index(entries, refined, crystal, index_params, log)
        except IndexingError as exc:
            if npass > 1:
                raise
            # with the configured setup: name the instrument setting that fits, if one does
            raise explain_indexing_failure(exc, entries, crystal, index_params, log) from None
        model = Model(crystal.with_cell(crystal.constraints.symmetrize(sol.cell)), sol.U,
                      model_det, offsets)
        result = refine(entries, model, refine_params, log)
        passes.append({"pass": npass, "indexing_fraction": float(sol.fraction),
                       "rms_hkl": float(sol.rms_hkl), "rms_q": float(sol.rms_q),
                       "seconds": float(sol.seconds), "cell": list(sol.cell.parameters),
                       "n_candidates_tried": int(sol.n_candidates_tried), "notes": list(sol.notes),
                       "refined_fraction": result.fraction_indexed, "n_absent": result.n_absent})
        key = (sol.fraction, result.fraction_indexed, -result.n_absent)
        if best is None or key > best[0]:
            best = (key, result, npass)
        if sol.fraction > 0.98 and result.n_absent == 0:
            break  # nothing to gain from another pass
        # index again on Q from the refined detector and offsets
        refined = result.model
        model_det, offsets = refined.detector, dict(refined.offset_corrections)
    _, result, kept = best
    log.info("kept indexing pass %d of %d", kept, len(passes))
    summary = {k: v for k, v in passes[kept - 1].items() if k != "pass"}
    summary["fraction"] = summary.pop("indexing_fraction")
    return result, dict(summary, kept_pass=kept, passes=passes)


def refine_from_parent(entries, parent, params: RefinementParams, log=None,
                       label: str = "this temperature") -> RefinementResult:
    """Refine a temperature's entries (`label`, e.g. SAMPLE/100K) starting from its
    parent's orientation record (read only): cell, U, detector and offset corrections
    start from the parent's."""
    model = Model(parent.crystal(), parent.U, parent.detector,
                  {e: dict(a) for e, a in parent.offset_corrections.items()})
    try:
        return refine(entries, model, params, log)
    except RefinementError as exc:
        # the parent indexed with the same instrument settings: one that fits here points
        # at this temperature's own rows of the scans table as much as at the config
        verdict = diagnose_indexing_failure(entries, parent.crystal(), IndexingParams.defaults(),
                                            log)
        found = (f" [from scratch with the parent's cell, its peaks: {verdict}; or this "
                 "temperature's rows of the scans table]" if verdict else "")
        raise RefinementError(f"{label} does not refine from its parent {parent.parent} "
                              f"({parent.path}): {exc}{found}") from None


def unusable_entries(peaks, result: RefinementResult, min_peaks: int) -> dict:
    """Entry -> why it has no usable signal: no counts in any frame (find_peaks' frame
    statistics of its peaks record), or fewer than min_peaks of its peaks indexed by the
    refinement (a background-only scan, another crystal).  Merged with full weight, such
    an entry would dilute the volume of its temperature."""
    reasons = {}
    for pk, entry, used in zip(peaks, result.entries, result.used):
        stats = pk.frame_stats
        if float(np.sum(stats["n_valid"])) == 0:
            reasons[entry.name] = ("no valid pixel value in any frame (all NaN, negative or "
                                   "overloaded)")
        elif float(np.sum(stats["sum"])) == 0:
            reasons[entry.name] = "no counts in any frame (shutter closed? beam off?)"
        elif int(np.count_nonzero(used)) < min_peaks:
            reasons[entry.name] = (f"{int(np.count_nonzero(used))} of its "
                                   f"{len(pk.peaks['observed_px_x'])} peaks index, fewer than "
                                   f"reduction.refinement.min_peaks_per_entry ({min_peaks}): "
                                   "a background-only scan? another crystal?")
    return reasons


def check_entries_usable(scans, peaks, result: RefinementResult, params: RefinementParams,
                         log) -> dict:
    """The entries without usable signal (unusable_entries): with unusable_entries 'fail'
    a RawDataError naming each one's raw file; with 'leave_out' a warning each, and the
    map, which the orientation file records for the merge."""
    reasons = unusable_entries(peaks, result, params.min_peaks_per_entry)
    named = [f"{rec.frames.files[0]} ({rec.scan_id}): {reasons[rec.entry]}"
             for rec in scans if rec.entry in reasons]
    if named and (params.unusable_entries != "leave_out" or len(reasons) == len(scans)):
        raise RawDataError("no usable signal in " + "; ".join(named) + (
            "; set reduction.merge.unusable_entries: leave_out to merge the other entries "
            "without it" if len(reasons) < len(scans) else ""))
    for text in named:
        log.warning("left out of the merge: %s", text)
    return reasons
