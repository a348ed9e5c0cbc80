"""A detector's modules, and the refined peaks' residuals per module (the experiment's page).

The modules are read from the detector's own mask (DetectorFacts.mask, pyFAI's calc_mask):
rows and columns masked across the whole detector are the gaps between modules; what lies
between them is a module.  For pyFAI's Pilatus and Eiger this is their MODULE_SIZE and
MODULE_GAP (tests/model/test_detector_modules.py).  A detector without such gaps (a single
sensor) is one module.

Modules are indexed (row, column) in the frames' array, module (0, 0) holding pixel (0, 0):
that is the same hardware module whatever the orientation.  Where a module lies seen from
the sample depends on the orientation (docs/conventions.md): `placement` says it.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FLAG_STANDARD_ERRORS = 3.0  # a mean residual this many standard errors from zero: displaced
# fewer peaks flag by chance too often (|t| of 1 degree of freedom passes 3 one time in five)
FLAG_MIN_PEAKS = 5


def _spans(gap: np.ndarray) -> tuple:
    """[start, stop) of the runs of False in a 1-d bool array."""
    edges = np.flatnonzero(np.diff(np.concatenate(([True], gap, [True])).astype(np.int8)))
    return tuple((int(a), int(b)) for a, b in zip(edges[::2], edges[1::2]))


@dataclass(frozen=True)
class ModuleLayout:
    """The modules of a detector: row spans and column spans, [start, stop) in pixels."""

    rows: tuple
    cols: tuple
    orientation: int = 3

    @classmethod
    def of(cls, facts) -> "ModuleLayout":
        """From a model.geometry.DetectorFacts (its shape, mask and orientation)."""
        ny, nx = facts.shape
        mask = facts.mask
        if mask is None or not mask.any():
            return cls(((0, ny),), ((0, nx),), facts.orientation)
        rows, cols = _spans(mask.all(axis=1)), _spans(mask.all(axis=0))
        if not rows or not cols:  # all masked: nothing to go by
            return cls(((0, ny),), ((0, nx),), facts.orientation)
        return cls(rows, cols, facts.orientation)

    @property
    def shape(self) -> tuple:
        return len(self.rows), len(self.cols)

    @property
    def single(self) -> bool:
        return self.shape == (1, 1)

    def index(self, x, y) -> tuple:
        """(module row, module column) of continuous pixel positions x (column), y (row).
        A position in a gap goes to the nearer module (a peak's centroid may sit on an edge)."""
        return (self._index(np.asarray(y, dtype=float), self.rows),
                self._index(np.asarray(x, dtype=float), self.cols))

    @staticmethod
    def _index(pos, spans) -> np.ndarray:
        cuts = [(a[1] + b[0]) / 2 for a, b in zip(spans[:-1], spans[1:])]  # gaps' middles
        return np.searchsorted(np.asarray(cuts, dtype=float), pos, side="right")

    def placement(self, row: int, col: int) -> str:
        """Where module (row, col) lies seen from the sample, by the orientation's table in
        docs/conventions.md (rows run down for 1, 2; columns run left for 1, 4)."""
        nr, nc = self.shape
        from_top = row + 1 if self.orientation in (1, 2) else nr - row
        from_left = nc - col if self.orientation in (1, 4) else col + 1
        return f"{from_top}/{nr} from top, {from_left}/{nc} from left"


def module_residuals(layout: ModuleLayout, x, y, residuals) -> list[dict]:
    """Per module with peaks, in (row, column) order: the number of peaks, the RMS and the
    mean with its standard error of each residual component (x, y in pixels, phi in frames),
    and `flag`: the components whose mean is more than FLAG_STANDARD_ERRORS standard errors
    from zero (none with fewer than FLAG_MIN_PEAKS peaks).  x, y: the peaks' pixel positions; residuals: (n, 3), rows with a NaN (peaks
    not used) left out."""
    r = np.asarray(residuals, dtype=float).reshape(-1, 3)
    keep = np.all(np.isfinite(r), axis=1)
    mr, mc = layout.index(np.asarray(x, dtype=float)[keep], np.asarray(y, dtype=float)[keep])
    r = r[keep]
    rows = []
    for i, j in sorted(set(zip(mr.tolist(), mc.tolist()))):
        own = r[(mr == i) & (mc == j)]
        n = len(own)
        mean = own.mean(axis=0)
        # (one peak has no spread: no standard error)
        se = own.std(axis=0, ddof=1) / np.sqrt(n) if n > 1 else np.full(3, np.nan)
        with np.errstate(divide="ignore", invalid="ignore"):
            z = np.abs(mean) / se
        flag = [c for c, zc in zip(("x", "y", "φ"), z) if not np.isnan(zc)
                and zc > FLAG_STANDARD_ERRORS] if n >= FLAG_MIN_PEAKS else []
        rows.append({"module": (i, j), "n": n, "rms": np.sqrt(np.mean(own ** 2, axis=0)),
                     "mean": mean, "se": se, "flag": flag})
    return rows
