"""Least-squares refinement of cell, orientation, detector and goniometer offsets on peaks.

Observed peaks of one or more scan entries (continuous column, row, frame) are assigned to
the nearest integer hkl of the current UB (within `hkl_tolerance`, not systematically
absent) and the model predicts, for each assigned reflection, where it diffracts: the Ewald
solution nearest the observed scan angle, its pixel on the detector and its frame.  The
residuals (pixels and frames) are minimised by scipy's least_squares over:

* the free cell parameters of the crystal system (crystal.CellConstraints);
* a rotation vector applied to U (so U stays a rotation);
* detector corrections common to all entries: distance, poni1, poni2, rot1, rot2, rot3
  (rot3, a rotation about the beam, cannot be calibrated from powder rings; it shows here);
* per entry except a reference one: corrections to its goniometer offset angles.  The
  reference entry's offsets and the detector fix the lab frame (turning the goniometer and
  the detector together about the beam moves no peak); it is the first entry that indexes,
  which is not always the first entry (a wrong phi_start, a blank scan), and an entry
  without peaks in the fit has nothing to refine its corrections on (offset_entries).

Residuals are weighted by each peak's centroid uncertainty (spot variance over counts, with a
floor for what the model leaves out), so strong peaks count for more than faint ones.
Assignment and fit alternate; peaks with residuals beyond `outlier_sigma` robust standard
deviations are rejected.  Standard uncertainties come from the Jacobian at the solution.
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
from ...settings.params import RefinementParams

log = logging.getLogger("hklflow.refinement")

DETECTOR_PARAMETERS = ("dist", "poni1", "poni2", "rot1", "rot2", "rot3")


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
    cell_esd: tuple
    seconds: float
    residuals: list  # per entry: (n, 3) dx, dy, dz of the used peaks (NaN elsewhere)
    n_absent: int = 0  # peaks on integer hkl that the space group forbids (a wrong setting?)
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
    """Maps the model to and from the least-squares parameter vector."""

    def __init__(self, model: Model, entries, params: RefinementParams, masks):
        n_peaks = int(sum(m.sum() for m in masks))
        self.model0 = model
        self.constraints = model.crystal.constraints
        self.names: list[str] = []
        self.refine_cell = params.refine_cell
        self.refine_orient = params.refine_orientation
        self.refine_det = params.refine_detector and n_peaks >= params.min_peaks_for_detector
        if self.refine_cell:
            self.names += [f"cell.{n}" for n in self.constraints.free]
        if self.refine_orient:
            self.names += ["U.rx", "U.ry", "U.rz"]
        if self.refine_det:
            self.names += [f"detector.{n}" for n in DETECTOR_PARAMETERS]
        self.offset_names = []
        if params.refine_offsets:
            for e in offset_entries(entries, masks, params.min_peaks_per_entry):
                for ax in e.setup.offsets:
                    self.offset_names.append((e.name, ax))
                    self.names.append(f"offset.{e.name}.{ax}")
        # scales make the parameters comparable (a step of 1 ~ a shift of ~1 pixel)
        det = model.detector
        px = det.pixel_size[0]
        scale = []
        for n in self.names:
            if n.startswith("cell."):
                scale.append(1e-4 * (1.0 if n[5:] in ("alpha", "beta", "gamma") else
                                     self.constraints.free_values(model.crystal.cell)[
                                         self.constraints.free.index(n[5:])]))
            elif n.startswith("U."):
                scale.append(1e-4)
            elif n in ("detector.poni1", "detector.poni2"):
                scale.append(px)
            elif n == "detector.dist":
                scale.append(px)
            elif n.startswith("detector.rot"):
                scale.append(px / det.dist)
            else:
                scale.append(1e-2)  # offset angle, deg
        self.scale = np.array(scale)

    def x0(self) -> np.ndarray:
        return np.zeros(len(self.names))

    def model(self, x) -> Model:
        v = dict(zip(self.names, x * self.scale))
        m0 = self.model0
        crystal = m0.crystal
        if self.refine_cell:
            free = self.constraints.free_values(m0.crystal.cell)
            new = [free[i] + v[f"cell.{n}"] for i, n in enumerate(self.constraints.free)]
            crystal = m0.crystal.with_cell(self.constraints.expand(new))
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
        for (ename, ax) in self.offset_names:
            offs.setdefault(ename, {})
            offs[ename][ax] = offs[ename].get(ax, 0.0) + v[f"offset.{ename}.{ax}"]
        return Model(crystal, U, det, offs)


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
           log_=None) -> RefinementResult:
    """Alternate assignment and least squares; see the module docstring."""
    params = params or RefinementParams.defaults()
    lg = log_ or log
    t0 = time.monotonic()
    n_total = sum(len(e.x) for e in entries)
    if n_total == 0:
        raise RefinementError("no peaks to refine against")
    masks = None
    notes = []
    for cycle in range(params.cycles):
        hkls, masks, n_ok = _assign_all(entries, model, params, n_total)
        _reject_outliers(model, entries, hkls, masks, params)
        packer = _Packer(model, entries, params, masks)
        fun = lambda x: _residuals(packer.model(x), entries, hkls, masks, params.frame_weight)  # noqa: E731
        sol = least_squares(fun, packer.x0(), method="lm" if len(packer.x0()) < 3 * n_ok else "trf",
                            x_scale=1.0, max_nfev=200)
        model = packer.model(sol.x)
        rr = sol.fun.reshape(-1, 3)
        lg.info("cycle %d: %d/%d peaks indexed and used, weighted rms %.2f, cell %s",
                cycle + 1, int(sum(m.sum() for m in masks)), n_total,
                math.sqrt(np.mean(rr ** 2)),
                " ".join(f"{v:.5f}" for v in model.crystal.cell.parameters))
    values = _refined_values(model, packer, _uncertainties(sol, packer, notes))
    cell_esd = _cell_esd(model, packer, values)
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
        cell_esd=tuple(cell_esd), seconds=time.monotonic() - t0, residuals=resid,
        n_absent=n_absent, notes=notes)


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


def _uncertainties(sol, packer: _Packer, notes: list) -> np.ndarray:
    """Standard uncertainties of the parameters from the Jacobian at the solution (NaN, and
    a note, when the normal matrix is singular)."""
    J = sol.jac
    dof = max(len(sol.fun) - len(sol.x), 1)
    s2 = float(sol.fun @ sol.fun) / dof
    try:
        cov = np.linalg.inv(J.T @ J) * s2
        return np.sqrt(np.clip(np.diag(cov), 0, None)) * packer.scale
    except np.linalg.LinAlgError:
        notes.append("singular normal matrix: uncertainties unavailable")
        return np.full(len(sol.x), np.nan)


def _refined_values(model: Model, packer: _Packer, esd) -> dict:
    """name -> (refined value, esd): absolute values; for U.r* the rotation at the solution,
    0 by construction."""
    values = {}
    for name, e_ in zip(packer.names, esd):
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


def _cell_esd(model: Model, packer: _Packer, values: dict) -> list:
    """The esds of the six cell parameters: the free ones refined, ties (b = a, ...) the esd
    of the free parameter they equal, 0 for fixed ones."""
    free = packer.constraints.free
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
