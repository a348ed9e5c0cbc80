"""The scale model (model.py) fitted on Laue-equivalent voxels of a temperature's entries:
regularised least squares, one block of terms at a time with the others held (each term
is linear in its own parameters), the orbits' intensities between blocks, and outliers
rejected at `outlier_z` standard deviations from their orbit's mean.

The scale's level is free (any factor moves into the intensities): it is fixed at the
beam as it was when the first entry's rotation began (its b = 1 there, as a monitor's
reference would be), and the detector response's mean is 1.  With the sample's absorption
corrected from its shape, intensities then stay absolute.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...model.scales import EntryScale, ScaleModel, hat_weights
from .crossings import Crossings


@dataclass(frozen=True)
class Observations:
    """Voxels of the entries' volumes: intensity, sigma, orbit, entry (index), |Q| (1/A);
    crossings[e] are those of entry e's observations, in their order."""

    y: np.ndarray
    sigma: np.ndarray
    group: np.ndarray
    entry: np.ndarray
    q: np.ndarray
    crossings: tuple

    def of(self, e: int) -> np.ndarray:
        return np.flatnonzero(self.entry == e)


@dataclass(frozen=True)
class FitSettings:
    scale_interval: float = 15.0  # deg between the smooth scale's knots
    scale_smoothness: float = 1.0  # weight of its second differences, per unit chi^2
    absorption_lmax: int = 0  # 0: no absorption term
    absorption_regularisation: float = 1.0
    detector_bins: int = 0  # 0: no detector response; else bins a side
    detector_regularisation: float = 1.0
    offset_knots: int = 0  # 0: no offset
    offset_regularisation: float = 1.0
    outlier_z: float = 6.0
    cycles: int = 12  # at most: half without outlier rejection, half with it
    # a phase of the cycles ends early when chi^2/nu moves by less than this (relative) and
    # no observation changes sides: far below chi^2/nu's own noise, sqrt(2 / nu) (~0.7% with
    # 40,000 observations)
    tolerance: float = 1e-4


def _solve(rows, cols, values, n_obs, n_par, target, weight, penalty, prior):
    """min sum w (t - X p)^2 + (p - p0)' P (p - p0) for X given as (row, col, value)."""
    X = np.zeros((n_obs, n_par))
    np.add.at(X, (rows, cols), values)
    XtW = X.T * weight
    return _regularised(XtW @ X, XtW @ target, penalty, prior)


def _regularised(XtWX, XtWt, penalty, prior):
    """The normal equations with the penalty in units of the data's mean precision per
    parameter (a regularisation of 1 weighs a penalised difference like one parameter's
    worth of observations), and a tiny ridge towards the prior: a parameter no observation
    reaches stays at it."""
    n = len(XtWt)
    level = float(np.mean(np.diag(XtWX))) or 1.0
    P = level * (penalty + 1e-9 * np.eye(n))
    return np.linalg.solve(XtWX + P, XtWt + P @ prior)


def _second_differences(n: int) -> np.ndarray:
    if n < 3:
        return np.zeros((0, n))
    D = np.zeros((n - 2, n))
    for i in range(n - 2):
        D[i, i:i + 3] = (1.0, -2.0, 1.0)
    return D


def _grid_differences(nr: int, nc: int) -> np.ndarray:
    rows = []
    for r in range(nr):
        for c in range(nc):
            for dr, dc in ((0, 1), (1, 0)):
                if r + dr < nr and c + dc < nc:
                    d = np.zeros(nr * nc)
                    d[r * nc + c], d[(r + dr) * nc + c + dc] = -1.0, 1.0
                    rows.append(d)
    return np.array(rows).reshape(-1, nr * nc)


class _Fit:
    def __init__(self, obs: Observations, model: ScaleModel, settings: FitSettings,
                 entries: list[str]):
        self.obs, self.model, self.s, self.names = obs, model, settings, entries
        self.idx = [obs.of(e) for e in range(len(entries))]
        self.harm = [model.harmonics(c) for c in obs.crossings]
        self.det = [model.detector_basis(c) for c in obs.crossings]
        self.w0 = 1.0 / obs.sigma ** 2
        self.inlier = np.ones(len(obs.y), bool)
        self.n_groups = int(obs.group.max()) + 1 if len(obs.group) else 0

    # the model at every observation
    def parts(self, e: int):
        c, name = self.obs.crossings[e], self.names[e]
        b = self.model.entries[name].b(c.phi)
        a = self.model.absorption_of(name, c, self.harm[e])
        d = self.model.response(c)
        return c, b, a, d

    def multiplier(self) -> np.ndarray:
        m = np.ones(len(self.obs.y))
        for e, idx in enumerate(self.idx):
            c, b, a, d = self.parts(e)
            m[idx] = (c.share * b * a * d).sum(axis=0)
        return m

    def offset(self) -> np.ndarray:
        o = np.zeros(len(self.obs.y))
        for e, idx in enumerate(self.idx):
            o[idx] = self.model.offset(self.names[e], self.obs.q[idx])
        return o

    def intensities(self, m, o) -> np.ndarray:
        w = self.w0 * self.inlier
        num = np.bincount(self.obs.group, w * m * (self.obs.y - o), self.n_groups)
        den = np.bincount(self.obs.group, w * m * m, self.n_groups)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(den > 0, num / den, 0.0)

    # one block at a time
    def fit_scale(self, I):
        """Each entry's smooth scale, and its offset when there is one, in one solve (both
        linear with the intensities held: alternating them converges slowly)."""
        w = self.w0 * self.inlier
        for e, idx in enumerate(self.idx):
            es = self.model.entries[self.names[e]]
            c, _, a, d = self.parts(e)
            k, t = hat_weights(c.phi, es.knots)
            base = c.share * a * d * I[self.obs.group[idx]]
            n, K = len(idx), len(es.knots)
            r = np.tile(np.arange(n), 4)
            if K == 1:
                cols, vals = np.zeros(4 * n, np.int64), np.concatenate([base[0], base[1]] * 2)
            else:
                cols = np.concatenate([k[0], k[1], k[0] + 1, k[1] + 1])
                vals = np.concatenate([base[0] * (1 - t[0]), base[1] * (1 - t[1]),
                                       base[0] * t[0], base[1] * t[1]])
            D = _second_differences(K)
            P = self.s.scale_smoothness * D.T @ D
            prior = np.ones(K)
            J = len(es.offset_knots)
            if J:
                ko, to = hat_weights(self.obs.q[idx], es.offset_knots)
                r = np.concatenate([r, np.arange(n), np.arange(n)])
                cols = np.concatenate([cols, K + ko, K + np.minimum(ko + 1, J - 1)])
                vals = np.concatenate([vals, 1 - to, to if J > 1 else 0 * to])
                P = np.block([[P, np.zeros((K, J))],
                              [np.zeros((J, K)), self.s.offset_regularisation * np.eye(J)]])
                prior = np.concatenate([prior, np.zeros(J)])
            p = _solve(r, cols, vals, n, K + J, self.obs.y[idx], w[idx], P, prior)
            es.scale, es.offset = p[:K], p[K:]

    def fit_absorption(self, I, o, steps: int = 2):
        """Gauss-Newton steps on the absorption's coefficients (exp of the harmonics)."""
        y = self.obs.y - o
        w = self.w0 * self.inlier
        for e, idx in enumerate(self.idx):
            es = self.model.entries[self.names[e]]
            for _ in range(steps):
                c, b, a, d = self.parts(e)
                g = c.share * b * d * a * I[self.obs.group[idx]]  # (2, n): each crossing's m I
                J = np.einsum("cn,cnp->np", g, self.harm[e])
                r = y[idx] - g.sum(axis=0)
                JtW = J.T * w[idx]
                npar = J.shape[1]
                es.absorption = _regularised(
                    JtW @ J, JtW @ (r + J @ es.absorption),
                    self.s.absorption_regularisation * np.eye(npar), np.zeros(npar))

    def fit_detector(self, I, o):
        y = self.obs.y - o
        w = self.w0 * self.inlier
        nr, nc = self.model.detector.shape
        npar = nr * nc
        XtWX = np.zeros((npar, npar))
        XtWt = np.zeros(npar)
        for e, idx in enumerate(self.idx):
            c, b, a, _ = self.parts(e)
            bidx, bw = self.det[e]
            g = (c.share * b * a * I[self.obs.group[idx]])[..., None] * bw  # (2, n, 4)
            X = np.zeros((len(idx), npar))
            for cr in range(2):
                for j in range(4):
                    np.add.at(X, (np.arange(len(idx)), bidx[cr, :, j]), g[cr, :, j])
            XtW = X.T * w[idx]
            XtWX += XtW @ X
            XtWt += XtW @ y[idx]
        G = _grid_differences(nr, nc)
        d = _regularised(XtWX, XtWt, self.s.detector_regularisation * G.T @ G, np.ones(npar))
        self.model.detector = d.reshape(nr, nc)

    def normalise(self):
        """The level: the first entry's scale 1 where its rotation begins, the detector's
        mean response 1."""
        if self.model.detector.size > 1:
            mean_d = float(np.mean(np.concatenate(
                [self.model.response(c)[c.share > 0] for c in self.obs.crossings])))
            self.model.detector = self.model.detector / mean_d
            for es in self.model.entries.values():
                es.scale = es.scale * mean_d
        f = float(self.model.entries[self.names[0]].scale[0])
        if not f > 0:  # (a fit gone wrong: left for the statistics to show)
            return
        for es in self.model.entries.values():
            es.scale = es.scale / f

    def reject(self, m, o, I):
        z = (self.obs.y - o - m * I[self.obs.group]) / self.obs.sigma
        self.inlier = np.abs(z) <= self.s.outlier_z


def initial_model(entries: dict, settings: FitSettings, detector_shape: tuple,
                  q_range: tuple) -> ScaleModel:
    """Every term at its neutral value: entries maps name -> (first, last) angle (deg) of
    its rotation."""
    out = {}
    for name, (lo, hi) in entries.items():
        lo, hi = min(lo, hi), max(lo, hi)
        n = max(1, int(np.ceil((hi - lo) / settings.scale_interval - 1e-9))) + 1
        knots = np.linspace(lo, hi, n)
        p = (settings.absorption_lmax + 1) ** 2 - 1 if settings.absorption_lmax else 0
        oq = (np.linspace(q_range[0], q_range[1], settings.offset_knots)
              if settings.offset_knots else np.zeros(0))
        out[name] = EntryScale(name, knots, np.ones(n), np.zeros(p), oq, np.zeros(len(oq)))
    nb = settings.detector_bins
    det = np.ones((nb + 1, nb + 1)) if nb else np.ones((1, 1))
    return ScaleModel(out, settings.absorption_lmax, det, tuple(detector_shape))


def fit_scales(obs: Observations, model: ScaleModel, settings: FitSettings, log=None):
    """Fit `model` (initial_model) to the observations in place; returns the inlier mask."""
    names = list(model.entries)
    f = _Fit(obs, model, settings, names)
    m, o = f.multiplier(), f.offset()
    rejecting, previous = False, None
    for cycle in range(settings.cycles):
        # (outliers are judged by a fitted model: the first half of the cycles keeps all)
        if cycle >= settings.cycles // 2 and not rejecting:
            rejecting, previous = True, None
        I = f.intensities(m, o)
        changed = False
        if rejecting:
            before = f.inlier.copy()
            f.reject(m, o, I)
            changed = not np.array_equal(before, f.inlier)
            I = f.intensities(m, o)
        f.fit_scale(I)
        o = f.offset()
        if settings.absorption_lmax:
            f.fit_absorption(I, o)
        if settings.detector_bins:
            f.fit_detector(I, o)
        f.normalise()
        m = f.multiplier()
        chi = equivalents_chi2(obs, m, o, f.inlier)
        if log:
            log.info("scaling cycle %d: chi^2/nu of equivalents %.4g, %d outliers left out",
                     cycle + 1, chi, int((~f.inlier).sum()))
        settled = previous is not None and not changed \
            and abs(chi - previous) <= settings.tolerance * abs(previous)
        previous = chi
        if settled and rejecting:
            if log:
                log.info("scaling converged after %d cycles", cycle + 1)
            break
        if settled:  # on to the outliers
            rejecting, previous = True, None
    return f.inlier


def equivalents_chi2(obs: Observations, m, o, use=None) -> float:
    """chi^2/nu of the scaled observations about their orbits' weighted means."""
    use = np.ones(len(obs.y), bool) if use is None else use
    y = (obs.y - o) / m
    s = obs.sigma / m
    w = use / s ** 2
    n = int(obs.group.max()) + 1 if len(obs.group) else 0
    sw = np.bincount(obs.group, w, n)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(sw > 0, np.bincount(obs.group, w * y, n) / sw, 0.0)
    count = np.bincount(obs.group, use.astype(float), n)
    nu = float(np.sum(np.maximum(count - 1, 0)))
    chi2 = float(np.sum(w * (y - mean[obs.group]) ** 2))
    return chi2 / nu if nu else float("nan")


def equivalents_statistics(obs: Observations, m, o, names: list[str], shells: int = 8,
                           seed: int = 0) -> dict:
    """chi^2/nu of equivalents (all, per entry) and CC1/2 (all, per |Q| shell: the
    observations of each orbit split at random into two halves) of the observations
    scaled by m and o."""
    y = (obs.y - o) / m
    s = obs.sigma / m
    w = 1.0 / s ** 2
    n = int(obs.group.max()) + 1 if len(obs.group) else 0
    sw = np.bincount(obs.group, w, n)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(sw > 0, np.bincount(obs.group, w * y, n) / sw, 0.0)
    count = np.bincount(obs.group, minlength=n).astype(float)
    chi = w * (y - mean[obs.group]) ** 2
    dof = np.maximum(count - 1, 0)[obs.group] / np.maximum(count, 1)[obs.group]
    out = {"chi2_nu": float(chi.sum() / dof.sum()) if dof.sum() else None,
           "nu": float(dof.sum()), "observations": int(len(y)),
           "orbits": int(np.sum(count >= 2)), "entries": {}}
    for e, name in enumerate(names):
        sel = obs.entry == e
        out["entries"][name] = {"chi2_nu": float(chi[sel].sum() / dof[sel].sum())
                                if dof[sel].sum() else None, "observations": int(sel.sum())}
    half = np.random.default_rng(seed).integers(0, 2, len(y)).astype(bool)
    means = []
    for h in (half, ~half):
        sw_h = np.bincount(obs.group, w * h, n)
        with np.errstate(invalid="ignore", divide="ignore"):
            means.append(np.where(sw_h > 0, np.bincount(obs.group, w * h * y, n) / sw_h,
                                  np.nan))
    q_group = np.zeros(n)
    q_group[obs.group] = obs.q
    both = np.isfinite(means[0]) & np.isfinite(means[1])
    out["cc_half"] = _cc(means[0][both], means[1][both])
    edges = np.quantile(q_group[both], np.linspace(0, 1, shells + 1)) if both.any() else []
    rows = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        sel = both & (q_group >= lo) & (q_group <= hi)
        rows.append({"q_min": float(lo), "q_max": float(hi), "orbits": int(sel.sum()),
                     "cc_half": _cc(means[0][sel], means[1][sel])})
    out["shells"] = rows
    return out


def _cc(a, b):
    if len(a) < 3 or np.std(a) == 0 or np.std(b) == 0:
        return None
    return float(np.corrcoef(a, b)[0, 1])


def multipliers(model: ScaleModel, name: str, c: Crossings, q) -> tuple[np.ndarray, np.ndarray]:
    """(m, o) of voxels of entry `name` with crossings c and |Q| q."""
    return model.multiplier(name, c), model.offset(name, q)
