"""Orientation of a sample at one temperature (rules index_parent, refine_temperature and
refine_detector): the peaks of its entries as refinement input, the parent indexed from
scratch, the detector the temperatures share (model.shared_detector), a temperature refined
from its parent with that detector held.  No file I/O here: the steps read the records and
pass them in."""
from __future__ import annotations

import logging
from contextlib import contextmanager
from dataclasses import replace

import numpy as np

from ...base.errors import IndexingError, InputMismatchError, RawDataError, RefinementError
from ...model.shared_detector import SharedDetector
from ...settings.params import IndexingParams, RefinementParams
from .diagnosis import (FIT_FRACTION, diagnose_indexing_failure, explain_indexing_failure,
                        indexed_share, phi_start_offset)
from .indexing import index_from_scratch
from .refinement import (EntryPeaks, Model, RefinementResult, SharedDetectorResult, refine,
                         refine_shared_detector)

# what a centroid's counting statistics leave out (pixels, frames): strong spots' centroids
# are cut by the strong-pixel threshold of the search (bench/README.md, shared detector)
CENTROID_FLOOR = 0.02
CENTROID_FLOOR_FRAMES = 0.01
MIN_I_OVER_SIGMA = 5.0  # weaker peaks are left out of indexing and refinement
TYPICAL_I_OVER_SIGMA = 20.0  # peaks this strong show a spot's whole width


def centroid_sigmas(peaks: dict):
    """Centroid uncertainties (pixels, frames) of peaks (find_peaks columns).  A centroid's
    variance is the spot's spread times the photons that make it (signal and background,
    the raw counts summed) over the signal squared; the spread is the larger of the peak's
    own second moment and the median one of the strong peaks (a faint spot's few strong
    pixels understate its width), with the pixel/frame quantisation (1/12); and a floor."""
    signal = np.maximum(peaks["int_sum"], 1.0)
    counts = np.maximum(peaks["int_sum_var"], signal)
    strong = signal > TYPICAL_I_OVER_SIGMA * np.sqrt(counts)

    def spread(v):
        v = np.asarray(v, dtype=float)
        return np.maximum(v, np.median(v[strong]) if strong.any() else 0.0) + 1.0 / 12

    per_photon = counts / signal ** 2
    vxy = 0.5 * (spread(peaks["observed_px_x_var"]) + spread(peaks["observed_px_y_var"]))
    return (np.sqrt(vxy * per_photon + CENTROID_FLOOR ** 2),
            np.sqrt(spread(peaks["observed_frame_var"]) * per_photon + CENTROID_FLOOR_FRAMES ** 2))


def cut_peaks(setup, peaks: dict) -> np.ndarray:
    """Peaks whose pixels touch a module gap or the detector's edge, or the first or last
    frame of the scan: the cut spot's centroid is pulled away from where it diffracts by up
    to its width, far beyond its counting error."""
    if "bounding_box" not in peaks or not len(peaks["bounding_box"]):
        return np.zeros(len(peaks["int_sum"]), dtype=bool)
    bad = np.pad(setup.calibration.detector_mask(), 1, constant_values=True)
    # a pixel's count of bad pixels in the padded mask: a box's sum of them, dilated by one
    summed = np.pad(np.cumsum(np.cumsum(bad, 0), 1), ((1, 0), (1, 0)))
    bb = np.asarray(peaks["bounding_box"], dtype=np.int64)
    r0, r1, c0, c1 = bb[:, 0], bb[:, 1] + 2, bb[:, 2], bb[:, 3] + 2  # padded, dilated
    touching = (summed[r1, c1] - summed[r0, c1] - summed[r1, c0] + summed[r0, c0]) > 0
    return touching | (bb[:, 4] <= 0) | (bb[:, 5] >= setup.angles.nframes)


def entry_peaks(setup, peaks: dict, min_i_over_sigma: float = MIN_I_OVER_SIGMA) -> EntryPeaks:
    """EntryPeaks of one entry (geometry.EntrySetup) from its peak table (find_peaks
    columns): the peaks above min_i_over_sigma and not cut (cut_peaks), with centroid
    uncertainties and intensities."""
    strong = peaks["int_sum"] > min_i_over_sigma * np.sqrt(np.maximum(peaks["int_sum_var"], 1.0))
    strong &= ~cut_peaks(setup, peaks)
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
    setting with which the peaks would index, if one does (hklflow.algorithms.orientation.diagnosis).  Returns
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
        # detector_from none: the calibration's detector, as every temperature will have it
        result = refine(entries, model, refine_params, log,
                        detector="fixed" if refine_params.detector_from == "none" else "refine")
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


def parent_detector(result: RefinementResult, scan_ids, source: str) -> SharedDetector:
    """The detector index_parent leaves to the temperatures (detector_from parent or none):
    the parent's calibration corrected by its refinement (none: not corrected)."""
    calibration = result.entries[0].setup.calibration
    if not result.detector_refined:
        return SharedDetector(calibration, result.model.detector, None, source)
    used = [sid for sid, u in zip(scan_ids, result.used) if np.count_nonzero(u)]
    return SharedDetector(calibration, result.model.detector, result.cell_covariance.detector,
                          source, tuple(used), int(result.n_used))


def detector_of(parent, entries) -> SharedDetector:
    """The shared detector an orientation record (the parent's) hands on; one written before
    hklflow recorded it: the record's detector as it is, for these entries' calibration
    (what every temperature was refined from then), its uncertainty unknown."""
    shared = getattr(parent, "shared_detector", None)
    if shared is not None:
        return shared
    return SharedDetector(entries[0].setup.calibration, parent.detector, None, "parent")


def refine_from_parent(entries, parent, params: RefinementParams, log=None,
                       label: str = "this temperature",
                       shared: SharedDetector | None = None) -> RefinementResult:
    """Refine a temperature's entries (`label`, e.g. SAMPLE/100K) starting from its
    parent's orientation record (read only): cell, U and offset corrections start from the
    parent's, and the detector is the shared one (default: the parent's, detector_of) for
    these entries' calibration, held fixed; its uncertainty goes into the cell's."""
    shared = shared or detector_of(parent, entries)
    model = Model(parent.crystal(), parent.U, shared.for_calibration(entries[0].setup.calibration),
                  {e: dict(a) for e, a in parent.offset_corrections.items()})
    try:
        return refine(entries, model, params, log, detector="fixed",
                      detector_covariance=shared.covariance)
    except RefinementError as exc:
        misplaced = _phi_starts_against(entries, model, params, label)
        # first: from scratch, entries all turned alike index as they are (and a small cell
        # change between temperatures would be named as a wrong wavelength)
        if misplaced:
            found = f" [{misplaced}]"
        else:
            # the parent indexed with the same instrument settings: one that fits here
            # points at this temperature's own rows of the scans table as much as at the config
            verdict = diagnose_indexing_failure(entries, parent.crystal(),
                                                IndexingParams.defaults(), log)
            found = (f" [from scratch with the parent's cell, its peaks: {verdict}; or this "
                     "temperature's rows of the scans table]" if verdict else "")
        raise RefinementError(f"{label} does not refine from its parent {parent.parent} "
                              f"({parent.path}): {exc}{found}") from None


def refine_sample_detector(temperatures, params: RefinementParams, log=None
                           ) -> tuple[SharedDetectorResult, SharedDetector]:
    """One detector refined on the peaks of every temperature of a sample (detector_from
    all).  temperatures: [(label, entries, parent record, scan ids)], each temperature
    starting from its parent's cell, U and offsets, the detector from the first's parent's
    (detector_of) for each temperature's calibration.  A temperature whose peaks do not
    index from its parent is left out (its own refine_temperature then says why)."""
    start = detector_of(temperatures[0][2], temperatures[0][1])
    crystals = [(entries, Model(parent.crystal(), parent.U,
                                start.for_calibration(entries[0].setup.calibration),
                                {e: dict(a) for e, a in parent.offset_corrections.items()}))
                for _, entries, parent, _ in temperatures]
    joint = refine_shared_detector(crystals, params, log, [t[0] for t in temperatures])
    ids = {t[0]: t[3] for t in temperatures}
    used = tuple(sid for label, r in zip(joint.labels, joint.results)
                 for sid, u in zip(ids[label], r.used) if np.count_nonzero(u))
    first = joint.results[0]
    calibration = first.entries[0].setup.calibration
    shared = SharedDetector(calibration, first.model.detector, joint.covariance,
                            "all" if joint.covariance is not None else start.source,
                            used if joint.covariance is not None else start.scans,
                            int(sum(r.n_used for r in joint.results))
                            if joint.covariance is not None else start.n_peaks)
    return joint, shared


def _phi_start_found(phi_start: float, off) -> str:
    """How many of an entry's strongest peaks index with its phi_start moved by a
    diagnosis.PhiStartOffset."""
    moved = round(phi_start + off.offset, 1) + 0.0  # (+ 0.0: never "-0.0")
    return (f"{off.indexed} of its {off.tried} strongest peaks index with phi_start "
            f"{moved:.1f}, {off.at_start} with {phi_start:g} as given")


def _phi_starts_against(entries, model: Model, params: RefinementParams, label: str):
    """A sentence naming the entries of `label` whose peaks index in `model` (the parent's)
    once their phi_start moves, or None."""
    found = [(e, off) for e in entries if len(e.x) and (off := phi_start_offset(
        [e], model, params.hkl_tolerance, params.min_peaks_per_entry, FIT_FRACTION))]
    if not found:
        return None
    turned = (" (or the crystal turned about the scan axis since the parent)"
              if len(found) == len(entries) else "")
    return "; ".join(f"phi_start of {label}/{e.name} looks off by about {-off.offset:+.1f} deg "
                     f"({_phi_start_found(e.setup.angles.start, off)})"
                     for e, off in found) + f": check the scans table{turned}"


def _blank_frames(pk) -> str | None:
    """Why an entry's frames hold no signal at all (find_peaks' frame statistics of its
    peaks record), or None."""
    stats = pk.frame_stats
    if float(np.sum(stats["n_valid"])) == 0:
        return "no valid pixel value in any frame (all NaN, negative or overloaded)"
    if float(np.sum(stats["sum"])) == 0:
        return "no counts in any frame (shutter closed? beam off?)"
    return None


def _few_peaks(pk, entry: EntryPeaks) -> str:
    """Why an entry gives few or no peaks strong enough to index or refine against."""
    found = len(pk.peaks["observed_px_x"])
    if (blank := _blank_frames(pk)) is not None:
        return blank
    if found == 0:
        return "no peaks in its frames (a background-only scan?)"
    return (f"{len(entry.x)} of its {found} peaks above I/sigma {MIN_I_OVER_SIGMA:g}"
            + (" (a background-only scan?)" if len(entry.x) == 0 else ""))


@contextmanager
def naming_peak_warnings(peaks):
    """Indexing or refinement failures (IndexingError, RawDataError, RefinementError) with
    what the peak search warned of in these peaks (files.peaks.PeaksRecord.warnings)
    appended: a gain that does not fit the frames finds noise or misses peaks, and the
    failure may be its consequence."""
    try:
        yield
    except (IndexingError, RawDataError, RefinementError) as exc:
        warned = [f"{pk.scan_id}: {w}" for pk in peaks for w in pk.warnings]
        if not warned:
            raise
        raise type(exc)(f"{exc}; and find_peaks warned, which may be why: "
                        + "; ".join(warned)) from None


def check_entries_have_peaks(scans, peaks, entries, label: str, needed: int,
                             purpose: str) -> None:
    """A RawDataError naming every entry's raw file and why, when the entries of `label`
    (SAMPLE/TEMPERATURE) hold fewer than `needed` peaks strong enough to `purpose` (e.g.
    "index the parent from"): the indexer or the refinement would fail naming no file."""
    total = sum(len(e.x) for e in entries)
    if total >= needed:
        return
    have = "no peaks" if total == 0 else f"only {total} peak(s) (need >= {needed})"
    raise RawDataError(f"{label} has {have} to {purpose}: " + "; ".join(
        f"{rec.frames.files[0]} ({rec.scan_id}): {_few_peaks(pk, e)}"
        for rec, pk, e in zip(scans, peaks, entries)))


def unusable_entries(peaks, result: RefinementResult, min_peaks: int) -> dict:
    """Entry -> why it has no usable signal: no counts in any frame (find_peaks' frame
    statistics of its peaks record), or fewer than min_peaks of its peaks indexed by the
    refinement (a background-only scan, another crystal).  Merged with full weight, such
    an entry would dilute the volume of its temperature."""
    reasons = {}
    for pk, entry, used in zip(peaks, result.entries, result.used):
        if (blank := _blank_frames(pk)) is not None:
            reasons[entry.name] = blank
        elif int(np.count_nonzero(used)) < min_peaks:
            reasons[entry.name] = (f"{int(np.count_nonzero(used))} of its "
                                   f"{len(pk.peaks['observed_px_x'])} peaks index, fewer than "
                                   f"reduction.refinement.min_peaks_per_entry ({min_peaks}): "
                                   "a background-only scan? another crystal?")
    return reasons


def misplaced_phi_starts(result: RefinementResult, params: RefinementParams,
                         indexed_from_these: bool = False) -> dict:
    """Entry -> (diagnosis.PhiStartOffset, None or the other entry's name) of the entries
    with peaks that index too little (unusable_entries) but index with another phi_start,
    as well as the entries that index do (FIT_FRACTION of their share of the strongest
    peaks).  indexed_from_these: the orientation came from these entries (the parent), so
    with one entry that indexes, its phi_start may as well be the one off."""
    def indexes(used):
        return int(np.count_nonzero(used)) >= params.min_peaks_per_entry

    fitting = [e for e, used in zip(result.entries, result.used) if indexes(used)]
    suspects = [e for e, used in zip(result.entries, result.used)
                if len(e.x) and not indexes(used)]
    if not fitting or not suspects:
        return {}
    share = indexed_share(fitting, result.model, params.hkl_tolerance)
    other = fitting[0].name if indexed_from_these and len(fitting) == 1 else None
    found = {}
    for entry in suspects:
        # its offset corrections were refined on peaks that did not index: left out
        model = replace(result.model, offset_corrections={
            k: v for k, v in result.model.offset_corrections.items() if k != entry.name})
        offset = phi_start_offset([entry], model, params.hkl_tolerance,
                                  params.min_peaks_per_entry, FIT_FRACTION * share)
        if offset is not None:
            found[entry.name] = (offset, other)
    return found


def _phi_start_text(rec, misplaced, scan_ids) -> str:
    """What a misplaced phi_start (misplaced_phi_starts) says of scan record `rec`;
    scan_ids: entry -> scan id."""
    off, other = misplaced
    either = (f", or that of {scan_ids[other]} by about {off.offset:+.1f} deg" if other else "")
    return (f"phi_start of {rec.scan_id} looks off by about {-off.offset:+.1f} deg{either} "
            f"({rec.frames.files[0]}: {_phi_start_found(rec.angles.start, off)}"
            + ("; two entries cannot tell which" if other else "") + "): check the scans table")


def check_entries_usable(scans, peaks, result: RefinementResult, params: RefinementParams,
                         log, misplaced: dict | None = None) -> dict:
    """The entries without usable signal (unusable_entries): with unusable_entries 'fail'
    a RawDataError naming each one's raw file; with 'leave_out' a warning each, and the
    map, which the orientation file records for the merge.  misplaced: those whose
    phi_start looks off (misplaced_phi_starts): named so, without advice to leave them
    out."""
    misplaced = misplaced or {}
    reasons = unusable_entries(peaks, result, params.min_peaks_per_entry)
    scan_ids = {rec.entry: rec.scan_id for rec in scans}
    for rec in scans:
        if rec.entry in reasons and rec.entry in misplaced:
            reasons[rec.entry] = _phi_start_text(rec, misplaced[rec.entry], scan_ids)
    named = [f"{rec.frames.files[0]} ({rec.scan_id}): {reasons[rec.entry]}"
             for rec in scans if rec.entry in reasons and rec.entry not in misplaced]
    off = [reasons[rec.entry] for rec in scans if rec.entry in reasons and rec.entry in misplaced]
    if reasons and (params.unusable_entries != "leave_out" or len(reasons) == len(scans)):
        parts = list(off)
        if named:
            parts.append("no usable signal in " + "; ".join(named) + (
                "; set reduction.merge.unusable_entries: leave_out to merge the other entries "
                "without it" if len(reasons) < len(scans) else ""))
        raise RawDataError("; ".join(parts))
    for text in named + off:
        log.warning("left out of the merge: %s", text)
    return reasons
