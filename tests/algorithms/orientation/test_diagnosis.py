"""hklflow.algorithms.orientation.diagnosis: a parent that does not index because of an instrument setting the config
got wrong fails with a message naming that setting; a wrong crystal keeps the generic hint.

Peaks without frames: the spot positions (column, row, frame) of the simulation's 'tiny_hexagonal'
experiment (two entries, the second with goniometer offsets) predicted with the TRUE geometry
(hklflow.simulation.experiment.predict_scan_reflections), with centroid noise; index_parent then
gets them with the configured (wrong) setup, as ingest would record it."""
from __future__ import annotations

import logging
import re
import time
from dataclasses import replace

import numpy as np
import pytest

from hklflow.algorithms.orientation.diagnosis import (calibrated_with_orientation,
                                                      diagnose_indexing_failure)
from hklflow.algorithms.orientation.indexing import NO_FIT_HINT
from hklflow.algorithms.orientation.orient import index_parent, refine_from_parent
from hklflow.algorithms.orientation.refinement import EntryPeaks
from hklflow.base.errors import IndexingError, RefinementError
from hklflow.files.orientation import OrientationRecord
from hklflow.model.crystal import Crystal, UnitCell
from hklflow.model.geometry import EntrySetup
from hklflow.settings.params import IndexingParams, RefinementParams
from hklflow.simulation.experiment import predict_scan_reflections, preset

log = logging.getLogger("test")
TRUE = preset("tiny_hexagonal")  # scan axis (0, 1, 0), sense +1; offset axes omega (1, 0, 0), chi (0, 0, 1)


def peaks(true=TRUE, config=TRUE, calibration=None) -> list[EntryPeaks]:
    """The strong spots of every entry where the `true` instrument puts them, with the setups
    the `config` instrument (and `calibration`, if given) records."""
    rng = np.random.default_rng(1)
    sample = true.samples[0]
    out = []
    for entry in true.entries:
        st, scan = predict_scan_reflections(true, sample, sample.temperatures[0], entry)
        r = st.reflections
        ok = ~r["in_gap"] & (r["frame"] > 0) & (r["frame"] < true.nframes) & (r["i_over_sigma"] > 5)
        n = int(ok.sum())
        setup = EntrySetup(entry.name, calibration or config.calibration(), entry.det_shift,
                           config.goniometer(), scan.angles, dict(entry.offsets))
        out.append(EntryPeaks(setup, r["col"][ok] + rng.normal(0, 0.1, n),
                              r["row"][ok] + rng.normal(0, 0.1, n),
                              r["frame"][ok] + rng.normal(0, 0.05, n),
                              np.full(n, 0.1), np.full(n, 0.05), r["counts"][ok]))
    return out


def crystal(true=TRUE) -> Crystal:
    """The sample's crystal with the config's approximate cell (1% off)."""
    s = true.samples[0]
    c = s.crystal_at(s.temperatures[0])
    return c.with_cell(c.cell.scaled(1 + s.approx_cell_error))


def failure(entries, crys=None) -> str:
    """The message of index_parent's IndexingError (the step fails, whatever is diagnosed)."""
    with pytest.raises(IndexingError) as info:
        index_parent(entries, crys or crystal(), RefinementParams.defaults(),
                     IndexingParams.defaults(), log)
    return str(info.value)


def hint(message: str) -> str:
    """The last parenthesis of the message: the hint."""
    return re.search(r"\(([^()]*(\([^()]*\)[^()]*)*)\)$", message).group(1)


def test_flipped_scan_sense_is_named():
    msg = failure(peaks(true=replace(TRUE, scan_sense=-1)))
    assert msg.startswith("could not index: best fraction 0.")
    assert re.fullmatch(r"indexes (9\d|100)% with scan_sense -1: check instrument\.goniometer\."
                        r"scan_sense", hint(msg)), msg


@pytest.mark.parametrize("axis,named", [
    ((1.0, 0.0, 0.0), "scan axis (1, 0, 0) [the offset axis 'omega']"),
    ((-1.0, 0.0, 0.0), "scan axis (-1, 0, 0)"),
])
def test_wrong_scan_axis_is_named(axis, named):
    msg = failure(peaks(true=replace(TRUE, scan_axis=axis)))
    assert re.fullmatch(rf"indexes (9\d|100)% with {re.escape(named)}: check "
                        r"instrument\.goniometer\.scan_axis", hint(msg)), msg


@pytest.mark.parametrize("wavelength_factor", [1.09, 0.88])
def test_wrong_wavelength_is_named_as_a_cell_scale(wavelength_factor):
    """The config's wavelength 9% too long (12% too short): every Q 9% too short (long), the
    lattice looks 9% larger (12% smaller) than the true cell, 7.9% (12.9%) than the given one
    (1% larger than the true one)."""
    msg = failure(peaks(config=replace(TRUE, wavelength=TRUE.wavelength * wavelength_factor)))
    m = re.fullmatch(r"a cell (\d+\.\d)% (larger|smaller) than given indexes (9\d|100)%: wrong "
                     r"wavelength or detector distance \(or cell\)\? check instrument\.wavelength, "
                     r"the calibration and the sample's cell", hint(msg))
    assert m, msg
    expected = 100 * abs(wavelength_factor / (1 + TRUE.samples[0].approx_cell_error) - 1)
    assert m.group(2) == ("larger" if wavelength_factor > 1 else "smaller")
    # (the truth's scan geometry differs slightly from the calibration: scan_drift)
    assert abs(float(m.group(1)) - expected) < 0.3, msg


def test_wrong_detector_orientation_is_named():
    """The config says orientation 2 (pixel rows counted from the other edge) and the
    powder calibration made with it mirrored the PONI: every pixel keeps its 2theta (the
    rings cannot tell), the lab is mirrored across L2-L3.  The true orientation is 3."""
    cal = TRUE.calibration()
    ny, _ = cal.shape
    pix1, _ = cal.pixel_size
    as_calibrated = replace(cal, orientation=2, poni1=ny * pix1 - cal.poni1, rot2=-cal.rot2,
                            rot3=-cal.rot3)
    rows, cols = np.meshgrid(np.linspace(0, ny, 7), np.linspace(0, cal.shape[1], 5))
    np.testing.assert_allclose(as_calibrated.two_theta_chi(rows, cols)[0],
                               cal.two_theta_chi(rows, cols)[0], atol=1e-12)
    np.testing.assert_allclose(as_calibrated.lab_positions(rows, cols),
                               cal.lab_positions(rows, cols) * [-1, 1, 1], atol=1e-12)
    back = calibrated_with_orientation(as_calibrated, 3)
    np.testing.assert_allclose([back.poni1, back.poni2, back.rot1, back.rot2, back.rot3],
                               [cal.poni1, cal.poni2, cal.rot1, cal.rot2, cal.rot3], atol=1e-15)

    msg = failure(peaks(calibration=as_calibrated))
    assert re.fullmatch(r"indexes (9\d|100)% with detector orientation 3: check "
                        r"instrument\.detector\.orientation", hint(msg)), msg


def test_suspects_the_peaks_cannot_tell_apart_are_named_together():
    """One entry without offsets: a detector calibrated with its rows flipped (orientation 2,
    a mirror across L2-L3) or flipped rows and columns (1, a rotation about the beam) moves
    the peaks as the other scan sense does."""
    one_entry = replace(TRUE, entries=TRUE.entries[:1])
    assert not one_entry.entries[0].offsets
    msg = failure(peaks(true=replace(one_entry, scan_sense=-1), config=one_entry))
    assert re.fullmatch(r"indexes (9\d|100)% with scan_sense -1, with detector orientation 1 or "
                        r"with detector orientation 2 \(the peaks cannot tell these apart\): check "
                        r"instrument\.goniometer\.scan_sense and instrument\.detector\.orientation",
                        hint(msg)), msg


@pytest.mark.parametrize("space_group,cell", [
    ("F m -3 m", (5.4, 5.4, 5.4, 90, 90, 90)),
    ("P 1 21/c 1", (7.1, 5.9, 9.8, 90, 98, 90)),
    # the right space group, c 15% too long: no one scale fits all lengths
    ("P 63/m m c", (5.57, 5.57, 10.2, 90, 90, 120)),
    # a wrong cell whose scaled-up version (a +45%, c +34%) is a supercell that indexes all
    ("P 63/m m c", (3.8, 3.8, 13.2, 90, 90, 120)),
])
def test_wrong_crystal_keeps_the_generic_hint(space_group, cell):
    t0 = time.perf_counter()
    msg = failure(peaks(), Crystal(space_group, UnitCell(*cell)))
    seconds = time.perf_counter() - t0
    assert msg.endswith(NO_FIT_HINT), msg
    assert seconds < 20, f"indexing and diagnosis took {seconds:.1f} s"


def test_diagnosis_is_quick_and_returns_none_without_a_culprit():
    entries = peaks(true=replace(TRUE, scan_sense=-1))
    t0 = time.perf_counter()
    assert diagnose_indexing_failure(entries, crystal(), IndexingParams.defaults()).startswith(
        "indexes")
    seconds = time.perf_counter() - t0
    assert diagnose_indexing_failure(peaks(), Crystal("F m -3 m", UnitCell(5.4, 5.4, 5.4)),
                                     IndexingParams.defaults()) is None
    assert seconds < 10, f"diagnosis took {seconds:.1f} s"


def test_child_that_does_not_refine_from_its_parent_names_the_setting():
    """refine_temperature: a temperature whose peaks need the other scan sense (its rows of
    the scans table, or the config, wrong) fails with the suspect named."""
    sample = TRUE.samples[0]
    true = sample.crystal_at(sample.temperatures[0])
    U = sample.U_at(sample.temperatures[0])
    parent = OrientationRecord("parent.nxs", sample.name, "300K", true.hm, true.cell.parameters,
                               (0.0,) * 6, U, U @ true.B, TRUE.calibration(), {}, {},
                               f"{sample.name}/300K")
    assert refine_from_parent(peaks(), parent, RefinementParams.defaults(), log).fraction_indexed > 0.95
    with pytest.raises(RefinementError) as info:
        refine_from_parent(peaks(true=replace(TRUE, scan_sense=-1)), parent,
                           RefinementParams.defaults(), log, "hexa/100K")
    msg = str(info.value)
    assert msg.startswith("hexa/100K does not refine from its parent hexa/300K (parent.nxs): only ")
    assert re.search(r"\[from scratch with the parent's cell, its peaks: indexes (9\d|100)% with "
                     r"scan_sense -1: check instrument\.goniometer\.scan_sense; or this "
                     r"temperature's rows of the scans table\]$", msg), msg


# --------------------------------------------------------------------------------------
# An entry whose phi_start in the scans table is off (issue 71: it was "no usable signal ...
# a background-only scan? another crystal?; set ... leave_out", which would drop good data)
# --------------------------------------------------------------------------------------
def phi_start_off(entry: EntryPeaks, by: float) -> EntryPeaks:
    """The entry as the scans table records it with its phi_start `by` deg off."""
    angles = entry.setup.angles
    moved = replace(angles, start=angles.start + by)
    return replace(entry, setup=replace(entry.setup, angles=moved))


def parent_record() -> OrientationRecord:
    sample = TRUE.samples[0]
    true = sample.crystal_at(sample.temperatures[0])
    U = sample.U_at(sample.temperatures[0])
    return OrientationRecord("parent.nxs", sample.name, "300K", true.hm, true.cell.parameters,
                             (0.0,) * 6, U, U @ true.B, TRUE.calibration(), {}, {},
                             f"{sample.name}/300K")


def records(entries, label):
    """The scan and peaks records check_entries_usable reads of the entries (frames with
    counts: the cause is not a blank scan)."""
    from types import SimpleNamespace

    scans = [SimpleNamespace(entry=e.name, scan_id=f"{label}/{e.name}", angles=e.setup.angles,
                             frames=SimpleNamespace(files=[f"raw/{e.name}.h5"])) for e in entries]
    peaks = [SimpleNamespace(frame_stats={"n_valid": np.ones(3), "sum": np.ones(3)},
                             peaks={"observed_px_x": e.x}) for e in entries]
    return scans, peaks


@pytest.mark.parametrize("off", [7.0, -9.5, 35.0])
def test_a_child_entry_with_its_phi_start_off_is_named_not_left_out(off):
    """The second entry's phi_start off by `off`: its peaks index with phi_start moved back
    (found by a search over the whole turn), and the message says so, without advising
    leave_out; with leave_out the entry is left out with the same reason."""
    from hklflow.algorithms.orientation.orient import check_entries_usable, misplaced_phi_starts
    from hklflow.base.errors import RawDataError

    entries = peaks()
    entries[1] = phi_start_off(entries[1], off)
    params = RefinementParams.defaults()
    result = refine_from_parent(entries, parent_record(), params, log, "hexa/100K")
    t0 = time.perf_counter()
    misplaced = misplaced_phi_starts(result, params)
    assert time.perf_counter() - t0 < 5
    assert list(misplaced) == ["f2"] and abs(misplaced["f2"][0].offset + off) < 0.1
    scans, pks = records(entries, "hexa/100K")
    with pytest.raises(RawDataError) as info:
        check_entries_usable(scans, pks, result, params, log, misplaced)
    msg = str(info.value)
    assert msg.startswith(f"phi_start of hexa/100K/f2 looks off by about {off:+.1f} deg "
                          "(raw/f2.h5: ")
    assert msg.endswith(" as given): check the scans table") and "leave_out" not in msg
    left = check_entries_usable(scans, pks, result,
                                RefinementParams.defaults(unusable_entries="leave_out"), log,
                                misplaced)
    assert left["f2"].startswith(f"phi_start of hexa/100K/f2 looks off by about {off:+.1f} deg")


def test_a_parent_entry_with_its_phi_start_off_names_both_entries():
    """In the parent, indexed from its own two entries, either phi_start may be the one off."""
    from hklflow.algorithms.orientation.orient import check_entries_usable, misplaced_phi_starts
    from hklflow.base.errors import RawDataError

    entries = peaks()
    entries[1] = phi_start_off(entries[1], 8.0)
    params = RefinementParams.defaults()
    result, _ = index_parent(entries, crystal(), params, IndexingParams.defaults(), log)
    misplaced = misplaced_phi_starts(result, params, indexed_from_these=True)
    scans, pks = records(entries, "hexa/300K")
    with pytest.raises(RawDataError) as info:
        check_entries_usable(scans, pks, result, params, log, misplaced)
    msg = str(info.value)
    assert re.match(r"phi_start of hexa/300K/f(1|2) looks off by about [+-]8\.\d deg, or that of "
                    r"hexa/300K/f(1|2) by about [+-]8\.\d deg \(raw/f\d\.h5: .*; two entries "
                    r"cannot tell which\): check the scans table$", msg), msg


def test_a_parent_whose_first_entry_does_not_index_keeps_its_lab_frame():
    """Only f2 indexes (f2's phi_start off: the orientation comes from it): f2's offsets then
    fix the lab frame with the detector.  Refined, its chi correction (chi is about the
    beam) and the detector's rot3 would drift together by degrees along a null direction of
    the fit, and f1's peaks would index only in part at any phi_start (no diagnosis)."""
    entries = peaks()
    entries[1] = phi_start_off(entries[1], 8.0)
    result, _ = index_parent(entries, crystal(), RefinementParams.defaults(),
                             IndexingParams.defaults(), log)
    assert [int(np.count_nonzero(u)) > 600 for u in result.used] == [False, True]
    assert "offset.f2.chi" not in result.parameters
    assert result.model.offset_corrections.get("f2", {}) == {}
    drift = np.degrees(result.model.detector.rot3 - entries[0].setup.calibration.rot3)
    assert abs(drift) < 0.05, drift


def test_a_child_with_every_phi_start_off_names_them():
    """Every entry of a temperature off alike: the refinement from the parent fails, and
    (from scratch the peaks would index as they are) the message names the phi_starts."""
    entries = [phi_start_off(e, -12.0) for e in peaks()]
    with pytest.raises(RefinementError) as info:
        refine_from_parent(entries, parent_record(), RefinementParams.defaults(), log, "hexa/100K")
    msg = str(info.value)
    assert re.search(r"\[phi_start of hexa/100K/f1 looks off by about -12\.0 deg \(\d+ of its "
                     r"\d+ strongest peaks index with phi_start .*; phi_start of hexa/100K/f2 "
                     r"looks off by about -12\.0 deg .*: check the scans table \(or the crystal "
                     r"turned about the scan axis since the parent\)\]$", msg), msg


def test_an_entry_of_another_crystal_is_no_phi_start():
    """Peaks of another orientation (another grain) index with no phi_start: the search
    names nothing, and the entry stays 'another crystal?'."""
    from hklflow.algorithms.orientation.orient import misplaced_phi_starts

    sample = TRUE.samples[0]
    grain = replace(sample, orientation_seed=sample.orientation_seed + 1)
    other = peaks(true=replace(TRUE, samples=(grain,)))
    entries = [peaks()[0], other[1]]
    params = RefinementParams.defaults()
    result = refine_from_parent(entries, parent_record(), params, log, "hexa/100K")
    assert np.count_nonzero(result.used[1]) < params.min_peaks_per_entry
    assert misplaced_phi_starts(result, params) == {}
