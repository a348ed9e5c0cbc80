"""The detector the temperatures of a sample share (reduction.refinement.detector_from).

A series is measured on one detector that does not move between temperatures, except where
the scans table says it does (det_ddist, det_dponi1, det_dponi2).  hklflow refines it once:
on the parent temperature's entries (``parent``, the default), on every temperature's
together (``all``), or not at all (``none``: the calibration's, as NXRefine does); every
temperature's refinement then holds it fixed.  What is refined is one set of corrections
to the calibration: an entry's detector is its own calibration corrected by them, then moved
by the entry's shift (geometry.EntrySetup.geometry), so entries measured with other
calibrations or shifts share it too.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from .geometry import DetectorGeometry

DETECTOR_PARAMETERS = ("dist", "poni1", "poni2", "rot1", "rot2", "rot3")
DETECTOR_FROM = ("parent", "all", "none")


@dataclass(frozen=True)
class SharedDetector:
    """calibration: the calibration the corrections were refined from (that of the first
    scan refined); detector: that calibration corrected; covariance: (6, 6) over
    DETECTOR_PARAMETERS (m, rad), None where nothing refined it; source: parent, all or none;
    scans: the scan ids whose peaks refined it."""

    calibration: DetectorGeometry
    detector: DetectorGeometry
    covariance: np.ndarray | None
    source: str
    scans: tuple = ()
    n_peaks: int = 0  # peaks used to refine it

    def __eq__(self, other) -> bool:
        if not isinstance(other, SharedDetector):
            return NotImplemented
        same_cov = (self.covariance is None and other.covariance is None) or (
            self.covariance is not None and other.covariance is not None
            and np.array_equal(self.covariance, other.covariance))
        return same_cov and (self.calibration, self.detector, self.source, tuple(self.scans),
                             self.n_peaks) == (other.calibration, other.detector, other.source,
                                               tuple(other.scans), other.n_peaks)

    __hash__ = None

    def corrections(self) -> dict:
        """Detector parameter -> the correction to the calibration (m, rad)."""
        return {n: float(getattr(self.detector, n) - getattr(self.calibration, n))
                for n in DETECTOR_PARAMETERS}

    def esd(self) -> dict:
        """Detector parameter -> standard uncertainty (NaN: not refined)."""
        if self.covariance is None:
            return {n: float("nan") for n in DETECTOR_PARAMETERS}
        d = np.sqrt(np.clip(np.diag(np.asarray(self.covariance, dtype=float)), 0, None))
        return dict(zip(DETECTOR_PARAMETERS, map(float, d)))

    def for_calibration(self, calibration: DetectorGeometry) -> DetectorGeometry:
        """The shared detector of entries measured with `calibration`: it, corrected."""
        c = self.corrections()
        return replace(calibration, **{n: getattr(calibration, n) + c[n]
                                       for n in DETECTOR_PARAMETERS})

    @property
    def refined(self) -> bool:
        return self.covariance is not None


@dataclass(frozen=True)
class CellCovariance:
    """The covariance of a crystal's free cell parameters (crystal.CellConstraints.free; Å
    and degrees), in the two parts the shared detector makes of it:

    * held_fixed (k, k): with the detector held at its value, from this crystal's own peaks;
    * sensitivity (k, 6): d(cell)/d(detector parameter) at the solution, U and offsets
      following (Å or deg per m or rad, DETECTOR_PARAMETERS order);
    * detector (6, 6): the detector parameters' covariance where it was refined (None: the
      calibration's detector, whose uncertainty is not known here).

    The cell's own: held_fixed + S Σ Sᵀ.  The estimate with the detector held at its true
    value is independent of the detector's error (least squares), so these add; two
    crystals refined with one shared detector differ by held_fixed_1 + held_fixed_2 +
    (S1 - S2) Σ (S1 - S2)ᵀ (difference_covariance): the detector's error cancels as far as
    both follow it alike."""

    names: tuple
    held_fixed: np.ndarray
    sensitivity: np.ndarray
    detector: np.ndarray | None = None

    def total(self) -> np.ndarray:
        if self.detector is None:
            return np.array(self.held_fixed, dtype=float)
        S = np.asarray(self.sensitivity, dtype=float)
        return np.asarray(self.held_fixed, dtype=float) + S @ np.asarray(self.detector) @ S.T

    def esd(self) -> np.ndarray:
        return np.sqrt(np.clip(np.diag(self.total()), 0, None))

    def detector_correlation(self, parameter: str = "dist") -> np.ndarray:
        """Correlation of each free cell parameter with one detector parameter (NaN where the
        detector's covariance is unknown)."""
        if self.detector is None:
            return np.full(len(self.names), np.nan)
        i = DETECTOR_PARAMETERS.index(parameter)
        Sigma = np.asarray(self.detector, dtype=float)
        cov = np.asarray(self.sensitivity, dtype=float) @ Sigma[:, i]
        with np.errstate(invalid="ignore", divide="ignore"):
            return cov / (self.esd() * math.sqrt(max(Sigma[i, i], 0.0)))

    def as_dict(self) -> dict:
        return {"names": list(self.names), "held_fixed": np.asarray(self.held_fixed).tolist(),
                "sensitivity": np.asarray(self.sensitivity).tolist(),
                "detector": None if self.detector is None else np.asarray(self.detector).tolist()}

    @classmethod
    def from_dict(cls, d: dict) -> "CellCovariance":
        return cls(tuple(d["names"]), np.asarray(d["held_fixed"], dtype=float),
                   np.asarray(d["sensitivity"], dtype=float),
                   None if d.get("detector") is None else np.asarray(d["detector"], dtype=float))


def difference_covariance(first: CellCovariance, second: CellCovariance,
                          shared: bool = True) -> np.ndarray:
    """Covariance of first's free cell parameters minus second's (the same crystal system).
    shared: both were refined with one detector (one refinement of it: its error is common to
    both and cancels as far as their sensitivities agree); otherwise their detectors' errors
    are independent."""
    if tuple(first.names) != tuple(second.names):
        raise ValueError(f"cells of different systems: {first.names} and {second.names}")
    cov = np.asarray(first.held_fixed, dtype=float) + np.asarray(second.held_fixed, dtype=float)
    if shared and first.detector is not None:
        dS = np.asarray(first.sensitivity, dtype=float) - np.asarray(second.sensitivity, dtype=float)
        return cov + dS @ np.asarray(first.detector) @ dS.T
    for c in (first, second):
        if c.detector is not None:
            S = np.asarray(c.sensitivity, dtype=float)
            cov = cov + S @ np.asarray(c.detector) @ S.T
    return cov
