"""Why a parent scan does not index: the instrument settings a config most often gets wrong,
tried on the peaks that failed.

Indexing from scratch fails for two kinds of reasons: the crystal is not what the config says
(space group, cell, a phase transition), or the peaks' Q are wrong because an instrument
setting is.  The second kind is tried here, one `Suspect` per wrong value: the rotation sense,
the rotation axis (an offset axis or a lab axis instead of the configured one), the detector
orientation, and a length scale (wavelength or distance: the lattice looks uniformly larger
or smaller).  Each trial indexes the strongest peaks again with that one change and a bounded
search, so that all of them take seconds.  The suspects that index are named in the error;
nothing is corrected: the step still fails and the user fixes the config.

A wrong phi_start in the scans table turns one entry's peaks about the scan axis: they do not
index with the orientation of the others (or of the parent), and `phi_start_offset` searches
the whole turn for the offset with which they do.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, replace
from typing import Callable

import numpy as np

from ...base.errors import IndexingError
from ...model.crystal import Crystal
from ...model.geometry import ORIENTATIONS, DetectorGeometry, EntrySetup
from ...settings.params import IndexingParams
from .indexing import NO_FIT_HINT, IndexingSolution, index_from_scratch
from .refinement import assign

TRIAL_PEAKS = 200  # the strongest peaks (the fewest spurious ones) are enough to tell
TRIAL_MAX_PAIRS = 240  # a bounded search per trial: a right setting indexes in the first batches
TRIAL_MAX_CANDIDATES = 30_000
FIT_FRACTION = 0.8  # a suspect fits when its trial indexes this much of the strongest peaks
ALIKE = 0.02  # suspects indexing within this of the best one are named together
SCALE_RANGE = 1.33  # lattice length scales tried: 1/1.33 .. 1.33


def _unchanged(setup: EntrySetup) -> EntrySetup:
    return setup


@dataclass(frozen=True)
class Suspect:
    """One value the config may have wrong: the entries' setups as they would be with the
    right one (`change`), or the cell scaled (`cell_scale`, for the wavelength/distance), and
    the config keys to check."""

    label: str
    check: str
    change: Callable[[EntrySetup], EntrySetup] = _unchanged
    cell_scale: float = 1.0

    def fits(self, sol: IndexingSolution | None, crystal: Crystal, fraction: float,
             isotropy: float) -> bool:
        """Whether the trial indexes `fraction` of the peaks; for a length scale also with
        every cell length scaled alike (within `isotropy`): a wrong wavelength or distance
        scales the lattice, it does not stretch one axis (a supercell would index too)."""
        if sol is None or sol.fraction < fraction:
            return False
        if self.cell_scale == 1.0:
            return True
        ratios = np.divide(sol.cell.parameters[:3], crystal.cell.parameters[:3])
        return ratios.max() / ratios.min() - 1 <= isotropy

    def describe(self, sol: IndexingSolution, crystal: Crystal) -> str:
        if self.cell_scale == 1.0:
            return self.label
        size = (sol.cell.volume / crystal.cell.volume) ** (1 / 3) - 1
        return f"a cell {abs(size):.1%} {'larger' if size > 0 else 'smaller'} than given"


# --------------------------------------------------------------------------------------
# The suspects
# --------------------------------------------------------------------------------------
def _axis_text(axis) -> str:
    return "(" + ", ".join(f"{round(v, 4) + 0.0:g}" for v in axis) + ")"


def scan_sense_suspects(setup: EntrySetup) -> list[Suspect]:
    sense = -setup.goniometer.scan_sense

    def flip(s: EntrySetup) -> EntrySetup:
        return replace(s, goniometer=replace(s.goniometer, scan_sense=sense))

    return [Suspect(f"scan_sense {sense:+d}", "instrument.goniometer.scan_sense", flip)]


def scan_axis_suspects(setup: EntrySetup) -> list[Suspect]:
    """The offset axes and +-L1, +-L2, +-L3 as the scan axis, except the configured axis and
    its opposite (the opposite axis is the flipped sense) and repeats."""
    gon = setup.goniometer
    named = [(np.asarray(a), f" [the offset axis {n!r}]") for n, a in gon.offset_axes]
    lab = [(s * np.eye(3)[k], "") for k in range(3) for s in (1, -1)]
    seen = [gon.axis, -gon.axis]
    out = []
    for axis, note in named + lab:
        if any(axis @ other > 0.9999 for other in seen):
            continue
        seen.append(axis)

        def use(s: EntrySetup, axis=tuple(axis)) -> EntrySetup:
            return replace(s, goniometer=replace(s.goniometer, scan_axis=axis))

        out.append(Suspect(f"scan axis {_axis_text(axis)}{note}", "instrument.goniometer.scan_axis",
                           use))
    return out


def calibrated_with_orientation(det: DetectorGeometry, orientation: int) -> DetectorGeometry:
    """The geometry a powder calibration with another detector orientation gives (how a wrong
    instrument.detector.orientation reaches the peaks: calibrate_powder uses it): the same
    2theta at every pixel, the lab mirrored across each flipped pixel axis.  The flips are
    read off the detector model (plane coordinates p_new = s * p_old + c per axis, s = +-1);
    the PONI moves with them and the tilts about the other axes change sign."""
    new = replace(det, orientation=orientation)
    rows, cols = np.array([0.5, 1.5, 0.5]), np.array([0.5, 0.5, 1.5])
    old_p = np.stack(det.plane_coordinates(rows, cols))
    new_p = np.stack(new.plane_coordinates(rows, cols))
    s1 = np.sign((new_p[0, 1] - new_p[0, 0]) / (old_p[0, 1] - old_p[0, 0]))
    s2 = np.sign((new_p[1, 2] - new_p[1, 0]) / (old_p[1, 2] - old_p[1, 0]))
    poni1 = new_p[0, 0] + s1 * (det.poni1 - old_p[0, 0])
    poni2 = new_p[1, 0] + s2 * (det.poni2 - old_p[1, 0])
    return replace(new, poni1=float(poni1), poni2=float(poni2), rot1=float(s2 * det.rot1),
                   rot2=float(s1 * det.rot2), rot3=float(s1 * s2 * det.rot3))


def detector_orientation_suspects(setup: EntrySetup) -> list[Suspect]:
    """pyFAI's other detector orientations (how pixel rows and columns lie on the detector),
    each with the calibration it would have given.  A mirror of the detector is a flipped
    scan sense for the peaks, or invisible: these are named together with the sense."""
    out = []
    for o in ORIENTATIONS:
        if o == setup.calibration.orientation:
            continue

        def use(s: EntrySetup, o=o) -> EntrySetup:
            return replace(s, calibration=calibrated_with_orientation(s.calibration, o))

        out.append(Suspect(f"detector orientation {o}", "instrument.detector.orientation", use))
    return out


def length_scale_suspects(params: IndexingParams) -> list[Suspect]:
    """The given cell scaled up and down (a wrong wavelength scales every Q by one factor; a
    wrong distance nearly so).  The indexer matches |q| within `length_tolerance` of the
    cell's and refines the cell by up to `max_cell_change`, so one trial covers a band of
    scales: steps of 1.5 length tolerances cover 1/SCALE_RANGE .. SCALE_RANGE with overlap."""
    step = 1.5 * params.length_tolerance
    n = math.ceil(math.log(SCALE_RANGE) / step)
    return [Suspect("", "instrument.wavelength, the calibration and the sample's cell",
                    cell_scale=math.exp(sign * k * step))
            for k in range(1, n + 1) for sign in (1, -1)]


def suspects(setup: EntrySetup, params: IndexingParams) -> list[Suspect]:
    """Every suspect, in the order they are named when several fit alike."""
    return [*scan_sense_suspects(setup), *scan_axis_suspects(setup),
            *detector_orientation_suspects(setup), *length_scale_suspects(params)]


# --------------------------------------------------------------------------------------
# The trials
# --------------------------------------------------------------------------------------
def _strongest(entries, n: int):
    """The entries with only their n strongest peaks (all peaks without intensities)."""
    if any(e.intensity is None for e in entries):
        return entries
    inten = np.concatenate([e.intensity for e in entries])
    if len(inten) <= n:
        return entries
    cut = np.sort(inten)[-n]
    out = []
    for e in entries:
        m = e.intensity >= cut
        out.append(replace(e, x=e.x[m], y=e.y[m], z=e.z[m], intensity=e.intensity[m],
                           sigma_xy=None if e.sigma_xy is None else e.sigma_xy[m],
                           sigma_z=None if e.sigma_z is None else e.sigma_z[m]))
    return out


def _trial(suspect: Suspect, entries, crystal: Crystal, params: IndexingParams):
    q = np.concatenate([suspect.change(e.setup).geometry().sample_q_at(e.y, e.x, e.z)
                        for e in entries])
    intensities = (np.concatenate([e.intensity for e in entries])
                   if all(e.intensity is not None for e in entries) else None)
    trial_crystal = crystal.with_cell(crystal.cell.scaled(suspect.cell_scale))
    try:
        return index_from_scratch(q, trial_crystal, params, intensities)
    except IndexingError:
        return None


def _alike(fitting):
    """Of the (suspect, solution) that fit, those indexing about as much as the best one, best
    first (the suspects' order among equals), the length scale once (neighbouring scales
    reach the same cell)."""
    top = max(sol.fraction for _, sol in fitting)
    alike = sorted([f for f in fitting if f[1].fraction >= top - ALIKE],
                   key=lambda f: -round(f[1].fraction, 2))
    scales = [f for f in alike if f[0].cell_scale != 1.0]
    return [f for f in alike if f[0].cell_scale == 1.0 or f is scales[0]]


def _verdict(fitting, crystal: Crystal) -> str:
    """One sentence on the suspects that fit alike (best first)."""
    if len(fitting) == 1 and fitting[0][0].cell_scale != 1.0:
        suspect, sol = fitting[0]
        return (f"{suspect.describe(sol, crystal)} indexes {sol.fraction:.0%}: wrong wavelength "
                f"or detector distance (or cell)? check {suspect.check}")
    fraction = fitting[0][1].fraction
    withs = [f"with {s.describe(sol, crystal)}" for s, sol in fitting]
    withs = " or ".join([", ".join(withs[:-1]), withs[-1]] if len(withs) > 1 else withs)
    checks = " and ".join(dict.fromkeys(s.check for s, _ in fitting))
    alike = " (the peaks cannot tell these apart)" if len(fitting) > 1 else ""
    return f"indexes {fraction:.0%} {withs}{alike}: check {checks}"


def diagnose_indexing_failure(entries, crystal: Crystal, params: IndexingParams,
                              log=None) -> str | None:
    """The suspects with which the strongest peaks of the entries (refinement.EntryPeaks)
    index, as a sentence naming the settings to check; None when none fits."""
    log = log or logging.getLogger("hklflow.diagnosis")
    t0 = time.perf_counter()
    strongest = _strongest(entries, TRIAL_PEAKS)
    trial_params = replace(params, max_pairs=min(params.max_pairs, TRIAL_MAX_PAIRS),
                           max_candidates=min(params.max_candidates, TRIAL_MAX_CANDIDATES))
    fit = max(FIT_FRACTION, params.min_fraction)
    tried = suspects(entries[0].setup, params)
    fitting = []
    for suspect in tried:
        sol = _trial(suspect, strongest, crystal, trial_params)
        if suspect.fits(sol, crystal, fit, params.length_tolerance):
            fitting.append((suspect, sol))
    verdict = _verdict(_alike(fitting), crystal) if fitting else None
    log.info("diagnosis: %d suspects tried in %.1f s: %s", len(tried), time.perf_counter() - t0,
             verdict or "none fits")
    return verdict


def explain_indexing_failure(exc: IndexingError, entries, crystal: Crystal,
                             params: IndexingParams, log=None) -> IndexingError:
    """The indexing error with its generic hint replaced by the suspects that fit, if any."""
    verdict = diagnose_indexing_failure(entries, crystal, params, log)
    if verdict is None:
        return exc
    message = str(exc)
    if NO_FIT_HINT in message:
        return IndexingError(message.replace(NO_FIT_HINT, f"({verdict})"))
    return IndexingError(f"{message} ({verdict})")


# --------------------------------------------------------------------------------------
# Entries whose peaks index with another phi_start
# --------------------------------------------------------------------------------------
RATE_PROBE_DEG = 0.1  # a rotation small enough that hkl moves linearly with it
FINE_STEPS = 8  # around a trial of the search that comes near, steps this much finer


@dataclass(frozen=True)
class PhiStartOffset:
    """The entries' strongest peaks index with their phi_start moved by `offset` deg:
    `indexed` of `tried`, against `at_start` with phi_start as the scans table gives it."""

    offset: float
    indexed: int
    tried: int
    at_start: int


def _phi_start_moved(entries, offset: float):
    def moved(e):
        angles = e.setup.angles
        return replace(e, setup=replace(e.setup, angles=replace(angles,
                                                               start=angles.start + offset)))

    return [moved(e) for e in entries]


def _indexed(entries, model, tolerance: float) -> int:
    return sum(int(np.count_nonzero(assign(e, model, tolerance)[1])) for e in entries)


def _hkl(entries, model, tolerance: float, offset: float) -> np.ndarray:
    return np.concatenate([assign(e, model, tolerance)[2]
                           for e in _phi_start_moved(entries, offset)])


def indexed_share(entries, model, tolerance: float) -> float:
    """The share of the entries' strongest peaks (TRIAL_PEAKS in all) that index in model."""
    strongest = _strongest(entries, TRIAL_PEAKS)
    tried = sum(len(e.x) for e in strongest)
    return _indexed(strongest, model, tolerance) / tried if tried else 0.0


def phi_start_step(entries, model, tolerance: float) -> float:
    """The search's step (deg): a peak whose hkl moves by r per degree of rotation about the
    scan axis stays within the assignment's `tolerance` for a phi_start error up to
    tolerance / r, so with steps of tolerance / median(r) the trial nearest the true offset
    is at most half a step off: within tolerance for every peak moving up to twice as fast
    as the median one."""
    moved = _hkl(entries, model, tolerance, RATE_PROBE_DEG) - _hkl(entries, model, tolerance, 0)
    rate = np.abs(moved).max(axis=1) / RATE_PROBE_DEG
    # (peaks that hardly move, all near the axis: steps of at most half a turn)
    return tolerance / max(float(np.median(rate)), tolerance / 180.0)


def _least_squares_offset(entries, model, tolerance: float, offset: float) -> float:
    """The offset that brings the peaks indexed at `offset` nearest their integer hkl (two
    Gauss-Newton steps on their hkl residuals, the derivative by a probe rotation)."""
    ok = np.concatenate([assign(e, model, tolerance)[1]
                         for e in _phi_start_moved(entries, offset)])
    target = np.rint(_hkl(entries, model, tolerance, offset)[ok])
    for _ in range(2):
        h = _hkl(entries, model, tolerance, offset)[ok]
        slope = (_hkl(entries, model, tolerance, offset + RATE_PROBE_DEG)[ok] - h) / RATE_PROBE_DEG
        offset -= float(np.sum(slope * (h - target)) / max(np.sum(slope ** 2), 1e-30))
    return offset


def _fine_search(entries, model, tolerance: float, around: float, step: float):
    """(offset, peaks indexed) of the best of steps of step / FINE_STEPS within a step of
    `around`, the offset fitted to the peaks indexed there."""
    fine = around + np.arange(-FINE_STEPS, FINE_STEPS + 1) * (step / FINE_STEPS)
    counts = np.array([_indexed(_phi_start_moved(entries, d), model, tolerance) for d in fine])
    best = fine[counts == counts.max()]
    middle = float(0.5 * (best.min() + best.max()))  # of the offsets indexing most
    fitted = _least_squares_offset(entries, model, tolerance, middle)
    indexed = _indexed(_phi_start_moved(entries, fitted), model, tolerance)
    return (fitted, indexed) if indexed >= counts.max() else (middle, int(counts.max()))


def phi_start_offset(entries, model, tolerance: float, min_indexed: int,
                     min_fraction: float) -> PhiStartOffset | None:
    """The offset of the entries' phi_start (one for all) with which their strongest peaks
    index in `model`: a search over a whole turn (a typo can be any angle, and a rotation
    repeats after 360 deg) in steps of phi_start_step, then finer around the trials that
    come near.  Of offsets that index (a symmetry axis along the scan axis gives several),
    the smallest.  None when none indexes at least min_indexed and min_fraction of the
    peaks tried."""
    strongest = _strongest(entries, TRIAL_PEAKS)
    tried = sum(len(e.x) for e in strongest)
    need = max(min_indexed, math.ceil(min_fraction * tried), 1)
    if tried < need:
        return None
    step = phi_start_step(strongest, model, tolerance)
    half_turn = math.ceil(180.0 / step)
    coarse = np.arange(-half_turn, half_turn + 1) * step
    counts = np.array([_indexed(_phi_start_moved(strongest, d), model, tolerance)
                       for d in coarse])
    # the trial nearest the true offset indexes at least the peaks moving slower than the
    # median one: half of those that index there
    for near in sorted(coarse[2 * counts >= need], key=abs):
        offset, indexed = _fine_search(strongest, model, tolerance, float(near), step)
        if indexed >= need:
            return PhiStartOffset(offset, indexed, tried, _indexed(strongest, model, tolerance))
    return None
