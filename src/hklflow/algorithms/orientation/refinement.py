"""Least-squares refinement of cell, orientation, detector and goniometer offsets on peaks.

Observed peaks of one or more scan entries (continuous column, row, frame) are assigned to
the nearest integer hkl of the current UB (within `hkl_tolerance`, not systematically
absent) and the model predicts, for each assigned reflection, where it diffracts: the Ewald
solution nearest the observed scan angle, its pixel on the detector and its frame.  The
residuals (pixels and frames) are minimised by scipy's least_squares over:

* the free cell parameters of the crystal system (crystal.CellConstraints);
* a rotation vector applied to U (so U stays a rotation);
* detector corrections common to all entries: distance, poni1, poni2, rot1, rot2, rot3
  (rot3, a rotation about the beam, cannot be calibrated from powder rings; it shows here),
  or none: the detector held where it is (a shared detector refined elsewhere, or the
  calibration's);
* per entry except a reference one: corrections to its goniometer offset angles.  The
  reference entry's offsets and the detector fix the lab frame (turning the goniometer and
  the detector together about the beam moves no peak); it is the first entry that indexes,
  which is not always the first entry (a wrong phi_start, a blank scan), and an entry
  without peaks in the fit has nothing to refine its corrections on (offset_entries).

Several crystals (the temperatures of a sample) can be refined together with one detector
(refine_shared_detector): each keeps its own cell, U and offset corrections, and the
detector corrections are common to all; each crystal's detector is its own start (its
calibration corrected as the others) moved by them.

Residuals are weighted by each peak's centroid uncertainty (spot variance over counts, with a
floor for what the model leaves out), so strong peaks count for more than faint ones.
Assignment and fit alternate; peaks with residuals beyond `outlier_sigma` robust standard
deviations are rejected.  Standard uncertainties come from the Jacobian at the solution,
scaled by the fit's chi^2 per degree of freedom.  The cell's covariance is kept in two parts
(CellCovariance): with the detector held, and how the cell follows the detector; so a cell
refined with a detector held fixed still carries that detector's uncertainty, and two
temperatures that share a detector know how much of it their difference cancels.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field, replace

import numpy as np
from scipy.optimize import least_squares

from ...base.errors import RefinementError
from ...model.crystal import CELL_NAMES, Crystal
from ...model.geometry import (DetectorGeometry, EntrySetup, ScanGeometry, axis_rotation,
                               directions_from_q, ewald_angles)
from ...model.shared_detector import DETECTOR_PARAMETERS, CellCovariance
from ...settings.params import RefinementParams

log = logging.getLogger("hklflow.refinement")


@dataclass
class EntryPeaks:
    """Observed peaks of one scan entry and how the entry was measured (its EntrySetup: the
    detector is the model's common one moved by the entry's shift)."""

    setup: EntrySetup
    x: np.ndarray  # column (continuous)
    y: np.ndarray  # row
    z: np.ndarray  # frame
    sigma_xy: np.ndarray | None = None  # centroid uncertainty (pixels); None: all equal
    sigma_z: np.ndarray | None = None  # (frames)
    intensity: np.ndarray | None = None  # summed intensities (the indexer starts from strong peaks)

    @property
    def name(self) -> str:
        return self.setup.name


@dataclass
class Model:
    """The refined quantities: crystal (cell), U, the common detector geometry the entries
    shift from, and offset corrections per entry ({entry: {axis: deg}}); it has what
    EntrySetup.geometry needs of an orientation."""

    crystal: Crystal
    U: np.ndarray
    detector: DetectorGeometry
    offset_corrections: dict = field(default_factory=dict)

    @property
    def UB(self) -> np.ndarray:
        return self.U @ self.crystal.B

    def entry_geometry(self, entry: EntryPeaks) -> ScanGeometry:
        return entry.setup.geometry(self)


@dataclass
class RefinementResult:
    model: Model
    entries: list
    hkl: list  # per entry: (n, 3) int assignment (0 rows where unassigned)
    used: list  # per entry: bool mask of peaks used in the final fit
    rms_px: float
    rms_frames: float
    rms_hkl: float
    fraction_indexed: float
    n_used: int
    parameters: dict  # name -> (refined value, standard uncertainty); U.r*: rotation esd (rad)
    cell_esd: tuple  # the cell's own (the detector's uncertainty included where known)
    seconds: float
    residuals: list  # per entry: (n, 3) dx, dy, dz of the used peaks (NaN elsewhere)
    n_absent: int = 0  # peaks on integer hkl that the space group forbids (a wrong setting?)
    notes: list = field(default_factory=list)
    # the cell's covariance (CellCovariance); whether this fit refined the detector
    cell_covariance: CellCovariance | None = None
    detector_refined: bool = False
    # correlation of each free cell parameter with the distance, and where it comes from
    # (refined together, propagated from a shared detector, or as if refined here)
    cell_distance_correlation: tuple = ()
    correlation_source: str = ""
    goodness_of_fit: float = float("nan")  # sqrt(chi^2 per degree of freedom)


@dataclass
class SharedDetectorResult:
    """A detector refined on the peaks of several crystals (refine_shared_detector)."""

    results: list  # RefinementResult per crystal refined (its model carries its detector)
    labels: list  # the crystals' labels (SAMPLE/TLABEL), as given
    corrections: dict  # detector parameter -> change from the start (m, rad), common to all
    covariance: np.ndarray | None  # (6, 6) over DETECTOR_PARAMETERS; None: not refined
    left_out: dict  # label -> why a crystal is not in the fit (its peaks did not index)
    seconds: float
    notes: list = field(default_factory=list)


# --------------------------------------------------------------------------------------
# Prediction
# --------------------------------------------------------------------------------------
def predict(hkl, scan: ScanGeometry, phi_obs):
    """Predicted (col, row, frame) of reflections hkl: the Ewald solution nearest phi_obs."""
    UB = scan.UB
    pa, pb = ewald_angles(hkl, UB, scan.goniometer, scan.offsets, scan.detector.wavelength)

    def near(p):  # the copy of angle p (mod 360) nearest the observed angle
        return phi_obs + ((p - phi_obs + 180.0) % 360.0 - 180.0)

    a, b = near(pa), near(pb)
    da = np.abs(a - phi_obs)
    db = np.abs(b - phi_obs)
    phi = np.where(np.isnan(db) | (da <= db), a, b)
    R = scan.goniometer.rotation(np.nan_to_num(phi), scan.offsets)
    q = np.einsum("nij,nj->ni", R, np.asarray(hkl, float) @ UB.T)
    rows, cols = scan.detector.pixel_from_direction(directions_from_q(q, scan.detector.wavelength))
    return cols, rows, scan.angles.frame(phi)


def assign(entry: EntryPeaks, model: Model, tolerance: float):
    """Nearest integer hkl of every observed peak and whether it is acceptable."""
    sg = model.entry_geometry(entry)
    h = sg.hkl_at(entry.y, entry.x, entry.z)
    hi = np.rint(h).astype(np.int64)
    ok = np.all(np.abs(h - hi) < tolerance, axis=1) & np.any(hi != 0, axis=1)
    ok &= ~model.crystal.is_absent(hi)
    return hi, ok, h


# --------------------------------------------------------------------------------------
# Parameter vector
# --------------------------------------------------------------------------------------
def offset_entries(entries, masks, min_peaks: int) -> list:
    """The entries whose offset corrections are refined: those with peaks in the fit (masks)
    except the reference, the first with min_peaks of them (else the first with any).  With
    no entry fixed, a rotation of the goniometer about the beam (through the offset
    corrections) and of the detector (rot3 and the PONI) is a null direction of the fit,
    along which least squares drifts by degrees when the first entry does not index."""
    fitted = [(e, int(m.sum())) for e, m in zip(entries, masks) if m.any()]
    if not fitted:
        return []
    reference = next((e for e, n in fitted if n >= min_peaks), fitted[0][0])
    return [e for e, _ in fitted if e is not reference]


class _Packer:
    """Maps the models of the crystals in a fit to and from the least-squares parameter
    vector: the detector corrections common to all (refine_det), then each crystal's cell,
    U and offset corrections (its group_columns)."""

    def __init__(self, models, entries_of, masks_of, params: RefinementParams, refine_det: bool):
        self.models0 = list(models)
        self.refine_cell = params.refine_cell
        self.refine_orient = params.refine_orientation
        self.refine_det = refine_det
        det = self.models0[0].detector
        px = det.pixel_size[0]
        # scales make the parameters comparable (a step of 1 ~ a shift of ~1 pixel)
        self.names: list[tuple] = []  # (crystal index or None for the detector, name)
        scale = []
        if refine_det:
            for n in DETECTOR_PARAMETERS:
                self.names.append((None, f"detector.{n}"))
                scale.append(px if n in ("dist", "poni1", "poni2") else px / det.dist)
        self.detector_columns = np.arange(len(self.names))
        self.group_columns, self.offset_names = [], []
        for g, (model, entries, masks) in enumerate(zip(self.models0, entries_of, masks_of)):
            first = len(self.names)
            constraints = model.crystal.constraints
            local = []
            if self.refine_cell:
                local += [f"cell.{n}" for n in constraints.free]
            if self.refine_orient:
                local += ["U.rx", "U.ry", "U.rz"]
            offsets = []
            if params.refine_offsets:
                for e in offset_entries(entries, masks, params.min_peaks_per_entry):
                    for ax in e.setup.offsets:
                        offsets.append((e.name, ax))
                        local.append(f"offset.{e.name}.{ax}")
            self.offset_names.append(offsets)
            free = constraints.free_values(model.crystal.cell)
            for n in local:
                if n.startswith("cell."):
                    k = n[5:]
                    scale.append(1e-4 * (1.0 if k in ("alpha", "beta", "gamma")
                                         else free[constraints.free.index(k)]))
                elif n.startswith("U."):
                    scale.append(1e-4)
                else:
                    scale.append(1e-2)  # offset angle, deg
                self.names.append((g, n))
            self.group_columns.append(np.arange(first, len(self.names)))
        self.scale = np.array(scale)

    def x0(self) -> np.ndarray:
        return np.zeros(len(self.names))

    def model(self, g: int, x) -> Model:
        """Crystal g's model at parameter vector x."""
        v = {n: val for (gg, n), val in zip(self.names, x * self.scale) if gg is None or gg == g}
        m0 = self.models0[g]
        crystal = m0.crystal
        if self.refine_cell:
            constraints = crystal.constraints
            free = constraints.free_values(m0.crystal.cell)
            new = [free[i] + v[f"cell.{n}"] for i, n in enumerate(constraints.free)]
            crystal = m0.crystal.with_cell(constraints.expand(new))
        U = m0.U
        if self.refine_orient:
            rv = np.array([v["U.rx"], v["U.ry"], v["U.rz"]])
            ang = np.linalg.norm(rv)
            if ang > 0:
                U = axis_rotation(rv / ang, ang) @ U
        det = m0.detector
        if self.refine_det:
            det = replace(det, **{n: getattr(det, n) + v[f"detector.{n}"] for n in DETECTOR_PARAMETERS})
        offs = {k: dict(d) for k, d in m0.offset_corrections.items()}
        for (ename, ax) in self.offset_names[g]:
            offs.setdefault(ename, {})
            offs[ename][ax] = offs[ename].get(ax, 0.0) + v[f"offset.{ename}.{ax}"]
        return Model(crystal, U, det, offs)


class _Objective:
    """The weighted residuals of every crystal of a fit as a function of the parameter
    vector, and their Jacobian by forward differences (scipy's '2-point' step), where a
    crystal's own parameters move only its own residuals: a joint fit of K crystals costs
    about K separate ones, not K^2."""

    STEP = float(np.finfo(float).eps) ** 0.5

    def __init__(self, packer: _Packer, entries_of, hkls_of, masks_of, frame_weight: float):
        self.packer = packer
        self.entries_of, self.hkls_of, self.masks_of = entries_of, hkls_of, masks_of
        self.frame_weight = frame_weight
        self._x, self._r = None, None

    def group(self, g: int, x) -> np.ndarray:
        return _residuals(self.packer.model(g, x), self.entries_of[g], self.hkls_of[g],
                          self.masks_of[g], self.frame_weight)

    def residuals(self, x) -> list:
        if self._x is None or not np.array_equal(x, self._x):
            self._r = [self.group(g, x) for g in range(len(self.entries_of))]
            self._x = np.array(x, dtype=float)
        return self._r

    def __call__(self, x) -> np.ndarray:
        return np.concatenate(self.residuals(x))

    def rows(self) -> list:
        """Row slice of each crystal's residuals."""
        edges = np.cumsum([0] + [len(r) for r in self.residuals(self._x)])
        return [slice(a, b) for a, b in zip(edges[:-1], edges[1:])]

    def jac(self, x) -> np.ndarray:
        base = self.residuals(x)
        rows = self.rows()
        p = self.packer
        J = np.zeros((int(sum(len(r) for r in base)), len(x)))
        owner = {int(j): g for g, cols in enumerate(p.group_columns) for j in cols}
        for j in range(len(x)):
            x1 = np.array(x, dtype=float)
            x1[j] += self.STEP * max(1.0, abs(x1[j]))
            h = x1[j] - x[j]
            groups = [owner[j]] if j in owner else range(len(base))
            for g in groups:
                J[rows[g], j] = (self.group(g, x1) - base[g]) / h
        return J


def _residuals(model: Model, entries, hkls, masks, frame_weight, weighted=True):
    """Predicted minus observed (pixels, pixels, frames) of the assigned peaks, divided by the
    centroid uncertainties when weighted (the least-squares residuals)."""
    out = []
    for e, hkl, m in zip(entries, hkls, masks):
        if not m.any():
            continue
        sg = model.entry_geometry(e)
        phi_obs = sg.angles.angle(e.z[m])
        cx, cy, cz = predict(hkl[m], sg, phi_obs)
        r = np.stack([cx - e.x[m], cy - e.y[m], frame_weight * (cz - e.z[m])], axis=1)
        if weighted and e.sigma_xy is not None:
            r[:, :2] /= e.sigma_xy[m, None]
            r[:, 2] /= e.sigma_z[m]
        out.append(np.nan_to_num(r, nan=1e3))
    return np.concatenate(out).ravel() if out else np.zeros(0)


def refine(entries, model: Model, params: RefinementParams | None = None,
           log_=None, *, detector: str = "refine",
           detector_covariance: np.ndarray | None = None) -> RefinementResult:
    """Alternate assignment and least squares; see the module docstring.  detector:
    "refine" (with params.refine_detector and min_peaks_for_detector peaks) or "fixed" (held
    at model.detector; detector_covariance, (6, 6) over DETECTOR_PARAMETERS in m and rad,
    is that detector's uncertainty, which the cell's esd then carries)."""
    params = params or RefinementParams.defaults()
    lg = log_ or log
    t0 = time.monotonic()
    n_total = sum(len(e.x) for e in entries)
    if n_total == 0:
        raise RefinementError("no peaks to refine against")
    want = detector == "refine" and params.refine_detector
    models, hkls_of, masks_of, refined = _fit([entries], [model], params, want, lg)
    results, _ = _results([entries], models, hkls_of, masks_of, params, refined,
                          None if refined else detector_covariance, lg)
    results[0].seconds = time.monotonic() - t0
    return results[0]


def refine_shared_detector(crystals, params: RefinementParams | None = None, log_=None,
                           labels=None) -> SharedDetectorResult:
    """One detector refined on the peaks of several crystals (the temperatures of a sample),
    each with its own cell, U and offset corrections.  crystals: [(entries, start Model)],
    each Model's detector that crystal's calibration corrected alike (the corrections found
    here are added to each).  A crystal whose peaks do not index from its start is left out
    (SharedDetectorResult.left_out says why); RefinementError when none is left."""
    params = params or RefinementParams.defaults()
    lg = log_ or log
    t0 = time.monotonic()
    labels = list(labels or [f"crystal {i + 1}" for i in range(len(crystals))])
    kept, left_out = [], {}
    for label, (entries, model) in zip(labels, crystals):
        n_total = sum(len(e.x) for e in entries)
        try:
            if n_total == 0:
                raise RefinementError("no peaks to refine against")
            _assign_all(entries, model, params, n_total)
        except RefinementError as exc:
            left_out[label] = str(exc)
            lg.warning("%s left out of the detector's refinement: %s", label, exc)
            continue
        kept.append((label, entries, model))
    if not kept:
        raise RefinementError("no crystal to refine the detector on: " + "; ".join(
            f"{k}: {v}" for k, v in left_out.items()))
    entries_of = [e for _, e, _ in kept]
    start = [m for _, _, m in kept]
    models, hkls_of, masks_of, refined = _fit(entries_of, start, params,
                                              params.refine_detector, lg)
    results, covariance = _results(entries_of, models, hkls_of, masks_of, params, refined, None, lg)
    d0, d1 = start[0].detector, models[0].detector
    corrections = {n: float(getattr(d1, n) - getattr(d0, n)) for n in DETECTOR_PARAMETERS}
    notes = [n for r in results for n in r.notes]
    if not refined:
        notes.append(f"detector not refined (reduction.refinement.refine_detector false, or "
                     f"fewer than min_peaks_for_detector ({params.min_peaks_for_detector}) "
                     "peaks): the start detector kept")
    return SharedDetectorResult(results, [k for k, _, _ in kept], corrections,
                                covariance if refined else None, left_out,
                                time.monotonic() - t0, notes)


def _fit(entries_of, models, params: RefinementParams, refine_detector: bool, lg):
    """The cycles of assignment, outlier rejection and least squares over every crystal:
    (models, hkls and masks per crystal, whether the detector was refined)."""
    models = list(models)
    joint = len(models) > 1
    refined = False
    for cycle in range(params.cycles):
        hkls_of, masks_of, n_ok = [], [], 0
        for entries, model in zip(entries_of, models):
            hkls, masks, n = _assign_all(entries, model, params, sum(len(e.x) for e in entries))
            _reject_outliers(model, entries, hkls, masks, params)
            hkls_of.append(hkls)
            masks_of.append(masks)
            n_ok += n
        n_peaks = int(sum(m.sum() for masks in masks_of for m in masks))
        refined = refine_detector and n_peaks >= params.min_peaks_for_detector
        packer = _Packer(models, entries_of, masks_of, params, refined)
        objective = _Objective(packer, entries_of, hkls_of, masks_of, params.frame_weight)
        x0 = packer.x0()
        if len(x0):
            sol = least_squares(objective, x0, jac=objective.jac,
                                method="lm" if len(x0) < 3 * n_ok else "trf",
                                x_scale=1.0, max_nfev=200)
            x, rr = sol.x, sol.fun
        else:
            x, rr = x0, objective(x0)
        models = [packer.model(g, x) for g in range(len(models))]
        rr = rr.reshape(-1, 3)
        lg.info("cycle %d: %d/%d peaks indexed and used, weighted rms %.2f, %s", cycle + 1,
                n_peaks, sum(len(e.x) for entries in entries_of for e in entries),
                math.sqrt(np.mean(rr ** 2)) if len(rr) else float("nan"),
                "; ".join(("cell " if not joint else f"cell {g + 1} ")
                          + " ".join(f"{v:.5f}" for v in m.crystal.cell.parameters)
                          for g, m in enumerate(models)))
    return models, hkls_of, masks_of, refined


def _assign_all(entries, model: Model, params: RefinementParams, n_total: int):
    """The assignment of every entry's peaks (hkl and acceptable mask per entry) and the
    number accepted; RefinementError when too few index."""
    hkls, masks = [], []
    for e in entries:
        hi, ok, _ = assign(e, model, params.hkl_tolerance)
        hkls.append(hi)
        masks.append(ok)
    n_ok = int(sum(m.sum() for m in masks))
    frac = n_ok / n_total
    if frac < params.min_fraction:
        raise RefinementError(
            f"only {frac:.0%} of {n_total} peaks index with the starting orientation and cell "
            f"(need {params.min_fraction:.0%}): the space group or cell may be wrong, or the "
            "crystal changed (a phase transition?); choose another parent scan for these "
            "temperatures (samples.<name>.parent or other_parents in the config)")
    return hkls, masks, n_ok


def _reject_outliers(model: Model, entries, hkls, masks, params: RefinementParams):
    """Peaks whose residuals under the current model lie beyond outlier_sigma robust
    standard deviations taken out of masks (in place)."""
    r = _residuals(model, entries, hkls, masks, params.frame_weight).reshape(-1, 3)  # normalised
    if not len(r):
        return
    dist = np.hypot(np.hypot(r[:, 0], r[:, 1]), r[:, 2])
    mad = 1.4826 * np.median(dist) + 1e-9
    # (+ 0.5: a floor, so that a very tight fit does not reject good peaks)
    keep = dist < params.outlier_sigma * mad + 0.5
    k = 0
    for m in masks:
        n = int(m.sum())
        idx = np.flatnonzero(m)
        m[idx[~keep[k:k + n]]] = False
        k += n


def _inverse(M: np.ndarray) -> np.ndarray | None:
    try:
        return np.linalg.inv(M)
    except np.linalg.LinAlgError:
        return None


def _results(entries_of, models, hkls_of, masks_of, params: RefinementParams, refined: bool,
             detector_covariance, lg):
    """Each crystal's RefinementResult at the solution, with its standard uncertainties
    and CellCovariance, and the detector's covariance (m, rad; None unless refined here).
    The Jacobian is taken once more with the detector's columns, refined or not: how the
    cell follows the detector is needed either way."""
    packer = _Packer(models, entries_of, masks_of, params, True)
    objective = _Objective(packer, entries_of, hkls_of, masks_of, params.frame_weight)
    x0 = packer.x0()
    r = objective(x0)
    J = objective.jac(x0)
    rows = objective.rows()
    D, sc = packer.detector_columns, packer.scale
    n_fit = len(x0) - (0 if refined else len(D))
    s2 = float(r @ r) / max(len(r) - n_fit, 1)
    notes = []
    if refined:
        cov = _inverse(J.T @ J)
        Sigma = None if cov is None else cov[np.ix_(D, D)] * s2
        if cov is None:
            notes.append("singular normal matrix: uncertainties unavailable")
    else:
        Sigma = (None if detector_covariance is None
                 else np.asarray(detector_covariance, dtype=float) / np.outer(sc[D], sc[D]))
    results = []
    for g, (entries, model) in enumerate(zip(entries_of, models)):
        G = packer.group_columns[g]
        A, B = J[rows[g]][:, G], J[rows[g]][:, D]
        Ainv = _inverse(A.T @ A)
        own_notes = list(notes)
        if Ainv is None:
            own_notes.append("singular normal matrix: uncertainties unavailable")
            held = np.full((len(G), len(G)), np.nan)
            S = np.full((len(G), len(D)), np.nan)
        else:
            held = Ainv * s2
            S = -Ainv @ (A.T @ B)
        total = held if Sigma is None else held + S @ Sigma @ S.T
        # the cell with the distance: refined together, propagated from the shared
        # detector's covariance, or (its uncertainty unknown) as if refined from these peaks
        if Sigma is not None:
            with np.errstate(invalid="ignore", divide="ignore"):
                corr = (S @ Sigma[:, 0]) / np.sqrt(np.diag(total) * Sigma[0, 0])
            source = ("refined together" if refined else
                      "detector held fixed: propagated from the shared detector's covariance")
        else:
            C = _inverse(np.hstack([A, B]).T @ np.hstack([A, B]))
            corr = (np.full(len(G), np.nan) if C is None else
                    C[:len(G), len(G)] / np.sqrt(np.diag(C)[:len(G)] * C[len(G), len(G)]))
            source = ("detector held fixed (its uncertainty unknown): as if refined from "
                      "these peaks")
        names = [packer.names[j][1] for j in G]
        cell_idx = [i for i, n in enumerate(names) if n.startswith("cell.")]
        scg = sc[G]
        ci = np.array(cell_idx, dtype=int)
        cell_cov = CellCovariance(
            tuple(names[i][5:] for i in cell_idx),
            held[np.ix_(ci, ci)] * np.outer(scg[ci], scg[ci]),
            S[ci] * scg[ci, None] / sc[D][None, :],
            None if Sigma is None else Sigma * np.outer(sc[D], sc[D]))
        esd = np.sqrt(np.clip(np.diag(total), 0, None)) * scg
        values = _refined_values(model, names, esd)
        if refined:
            det_esd = (np.full(len(D), np.nan) if Sigma is None
                       else np.sqrt(np.clip(np.diag(Sigma), 0, None)) * sc[D])
            values.update({f"detector.{n}": (float(getattr(model.detector, n)), float(e_))
                           for n, e_ in zip(DETECTOR_PARAMETERS, det_esd)})
        cell_esd = _cell_esd(model, values)
        result = _group_result(entries, model, params, masks_of[g], values, cell_esd,
                               own_notes, lg)
        result.cell_covariance = cell_cov
        result.detector_refined = refined
        result.cell_distance_correlation = tuple(float(corr[i]) for i in cell_idx)
        result.correlation_source = source
        result.goodness_of_fit = math.sqrt(s2)
        results.append(result)
    covariance = None if Sigma is None or not refined else Sigma * np.outer(sc[D], sc[D])
    return results, covariance


def _group_result(entries, model: Model, params: RefinementParams, masks, values: dict,
                  cell_esd, notes: list, lg) -> RefinementResult:
    """The statistics of one crystal's entries at the solution."""
    n_total = sum(len(e.x) for e in entries)
    hkls, used, resid, rr, hd = _final_statistics(entries, model, params, masks)
    n_used = int(sum(m.sum() for m in used))
    frac_indexed = sum(int(assign(e, model, params.hkl_tolerance)[1].sum()) for e in entries) / n_total
    n_absent = _absent_peaks(entries, model, params)
    if n_absent > max(3, 0.005 * n_total):
        notes.append(f"{n_absent} of {n_total} peaks sit on systematically absent hkl: the lattice "
                     f"may be in another setting, or the space group {model.crystal.hm} is wrong")
        lg.warning("%s", notes[-1])
    return RefinementResult(
        model=model, entries=entries, hkl=hkls, used=used,
        rms_px=float(np.sqrt(np.mean(rr[:, 0] ** 2 + rr[:, 1] ** 2))) if len(rr) else float("nan"),
        rms_frames=float(np.sqrt(np.mean(rr[:, 2] ** 2))) if len(rr) else float("nan"),
        rms_hkl=float(np.sqrt(np.mean(np.sum(hd ** 2, axis=1)))) if len(hd) else float("nan"),
        fraction_indexed=frac_indexed, n_used=n_used, parameters=values,
        cell_esd=tuple(cell_esd), seconds=0.0, residuals=resid,
        n_absent=n_absent, notes=notes)


def _refined_values(model: Model, names, esd) -> dict:
    """name -> (refined value, esd): absolute values; for U.r* the rotation at the solution,
    0 by construction."""
    values = {}
    for name, e_ in zip(names, esd):
        kind, _, rest = name.partition(".")
        if kind == "cell":
            val = getattr(model.crystal.cell, rest)
        elif kind == "detector":
            val = getattr(model.detector, rest)
        elif kind == "offset":
            ename, ax = rest.rsplit(".", 1)
            val = model.offset_corrections.get(ename, {}).get(ax, 0.0)
        else:
            val = 0.0
        values[name] = (float(val), float(e_))
    return values


def _cell_esd(model: Model, values: dict) -> list:
    """The esds of the six cell parameters: the free ones refined, ties (b = a, ...) the esd
    of the free parameter they equal, 0 for fixed ones."""
    free = model.crystal.constraints.free
    cell_esd = [0.0] * 6
    for n in free:
        key = f"cell.{n}"
        if key in values:
            cell_esd[CELL_NAMES.index(n)] = values[key][1]
    cell = model.crystal.cell
    for i, n in enumerate(CELL_NAMES):
        if cell_esd[i] == 0.0 and n not in free:
            for j, m in enumerate(CELL_NAMES):
                if m in free and abs(cell.parameters[i] - cell.parameters[j]) < 1e-12 and (i < 3) == (j < 3):
                    cell_esd[i] = cell_esd[j]
    return cell_esd


def _final_statistics(entries, model: Model, params: RefinementParams, masks):
    """The final assignment (hkl and used mask per entry), the unweighted residuals per
    entry (NaN where not used) and of the used peaks together, and the hkl deviations of
    the used peaks."""
    hkls, used, resid, hkl_dev = [], [], [], []
    for e, hi, m in zip(entries, *_final_assign(entries, model, params, masks)):
        hkls.append(hi)
        used.append(m)
    rr = _residuals(model, entries, hkls, used, 1.0, weighted=False).reshape(-1, 3)
    k = 0
    for e, m in zip(entries, used):
        full = np.full((len(e.x), 3), np.nan)
        n = int(m.sum())
        full[m] = rr[k:k + n]
        k += n
        resid.append(full)
        _, _, h = assign(e, model, params.hkl_tolerance)
        hkl_dev.append((h - np.rint(h))[m])
    hd = np.concatenate(hkl_dev) if hkl_dev else np.zeros((0, 3))
    return hkls, used, resid, rr, hd


def _absent_peaks(entries, model: Model, params: RefinementParams) -> int:
    """Peaks that sit on integer hkl forbidden by the space group: a few are noise, more mean
    the lattice is in the wrong setting (or the space group is wrong)."""
    n_absent = 0
    for e in entries:
        _, _, h = assign(e, model, params.hkl_tolerance)
        hi = np.rint(h).astype(np.int64)
        near = np.all(np.abs(h - hi) < params.hkl_tolerance, axis=1) & np.any(hi != 0, axis=1)
        n_absent += int((near & model.crystal.is_absent(hi)).sum())
    return n_absent


def _final_assign(entries, model, params, masks):
    hkls, used = [], []
    for e, m_prev in zip(entries, masks):
        hi, ok, _ = assign(e, model, params.hkl_tolerance)
        hkls.append(hi)
        used.append(ok & m_prev)
    return hkls, used
