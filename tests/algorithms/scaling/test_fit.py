"""The scale model's fit (hklflow.algorithms.scaling.fit) on observations made from a known
scale: it finds the scale it was made with, and the statistics see the difference."""
from __future__ import annotations

import numpy as np
import pytest

from hklflow.algorithms.scaling.crossings import Crossings
from hklflow.algorithms.scaling.fit import (FitSettings, Observations, equivalents_statistics,
                                            fit_scales, initial_model)
from hklflow.model.scales import real_harmonics


def _unit(rng, n):
    v = rng.normal(size=(n, 3))
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def synthetic(rng, b_of, absorption=None, groups=3000, per_group=6, entries=2, noise=0.01):
    """Orbits of `per_group` observations spread over `entries` entries, each measured once
    (one crossing) at a random angle in [0, 60) deg; y = b_e(phi) A(directions) I (1 + noise)."""
    n = groups * per_group
    group = np.repeat(np.arange(groups), per_group)
    entry = rng.integers(0, entries, n)
    phi = rng.uniform(0.0, 60.0, n)
    incident, scattered = _unit(rng, n), _unit(rng, n)
    intensity = rng.uniform(1.0, 10.0, groups)[group]
    a = np.ones(n) if absorption is None else absorption(incident, scattered)
    y = np.array([b_of(e, p) for e, p in zip(entry, phi)]) * a * intensity
    sigma = noise * y
    y = y + sigma * rng.normal(size=n)
    crossings = []
    for e in range(entries):
        sel = entry == e
        m = int(sel.sum())
        two = lambda x, fill=0.0: np.stack([x, np.full_like(x, fill)])  # noqa: E731
        crossings.append(Crossings(two(phi[sel]), two(np.ones(m)), two(np.full(m, 10.0)),
                                   two(np.full(m, 10.0)),
                                   np.stack([incident[sel], incident[sel]]),
                                   np.stack([scattered[sel], scattered[sel]]),
                                   np.ones(m, bool)))
    order = np.concatenate([np.flatnonzero(entry == e) for e in range(entries)])
    return Observations(y[order], sigma[order], group[order], entry[order],
                        np.linspace(0.1, 1.0, n)[order], tuple(crossings))


def _fit(obs, settings, entries=2):
    model = initial_model({f"f{e + 1}": (0.0, 60.0) for e in range(entries)}, settings,
                          (100, 100), (0.1, 1.0))
    fit_scales(obs, model, settings)
    return model


def test_a_decaying_scale_is_found():
    rng = np.random.default_rng(1)
    truth = {0: lambda p: 1.0 - 0.10 * p / 60.0, 1: lambda p: 0.8 * (1.0 - 0.05 * p / 60.0)}
    obs = synthetic(rng, lambda e, p: truth[e](p))
    model = _fit(obs, FitSettings(scale_interval=10.0))
    phi = np.linspace(0, 60, 13)
    got = [model.entries[f"f{e + 1}"].b(phi) for e in (0, 1)]
    # the level is free: compare the ratios to truth, which must be one constant
    ratio = np.concatenate([got[e] / truth[e](phi) for e in (0, 1)])
    assert np.ptp(ratio) / ratio.mean() < 0.004
    m = np.ones_like(obs.y)
    before = equivalents_statistics(obs, m, 0 * m, ["f1", "f2"])
    assert before["chi2_nu"] > 20  # (a 20% spread at 1% noise)


def test_absorption_surface_is_found():
    """A smooth surface (a product of transmissions in and out, each of low degree in its
    direction, 25% from least to most) is found within the noise."""
    rng = np.random.default_rng(2)
    normal = np.array([0.0, 1.0, 0.0])

    def transmission(incident, scattered):
        c_in, c_out = incident @ normal, scattered @ normal
        return np.exp(-0.3 * (c_in ** 2 + c_out ** 2) + 0.05 * (c_out - c_in))

    obs = synthetic(rng, lambda e, p: 1.0, absorption=transmission, noise=0.005)
    settings = FitSettings(scale_interval=60.0, absorption_lmax=4,
                           absorption_regularisation=1e-4)
    model = _fit(obs, settings)
    m = np.concatenate([model.multiplier(f"f{e + 1}", c) for e, c in enumerate(obs.crossings)])
    after = equivalents_statistics(obs, m, 0 * m, ["f1", "f2"])
    before = equivalents_statistics(obs, np.ones_like(m), 0 * m, ["f1", "f2"])
    assert before["chi2_nu"] > 10
    assert after["chi2_nu"] < 1.05


def test_harmonics_are_orthonormal():
    rng = np.random.default_rng(3)
    Y = real_harmonics(_unit(rng, 200_000), 3)
    gram = 4 * np.pi * Y.T @ Y / len(Y)
    assert gram.shape == (15, 15)
    assert np.allclose(gram, np.eye(15), atol=0.03)


@pytest.mark.parametrize("outliers", [0, 30])
def test_outliers_are_left_out(outliers):
    rng = np.random.default_rng(4)
    obs = synthetic(rng, lambda e, p: 1.0 - 0.1 * p / 60.0)
    y = obs.y.copy()
    y[rng.choice(len(y), outliers, replace=False)] *= 5.0
    obs = Observations(y, obs.sigma, obs.group, obs.entry, obs.q, obs.crossings)
    model = _fit(obs, FitSettings(scale_interval=10.0))
    b = model.entries["f1"].b(np.array([0.0, 60.0]))
    assert b[1] / b[0] == pytest.approx(0.9, abs=0.004)


def _with_pixels(obs, rng):
    """obs with every crossing on a random pixel of a 100 x 100 detector."""
    crossings = []
    for c in obs.crossings:
        n = c.phi.shape[1]
        rows = np.stack([rng.uniform(0, 100, n), np.zeros(n)])
        cols = np.stack([rng.uniform(0, 100, n), np.zeros(n)])
        crossings.append(Crossings(c.phi, c.share, rows, cols, c.incident, c.scattered, c.exact))
    return Observations(obs.y, obs.sigma, obs.group, obs.entry, obs.q, tuple(crossings))


def test_a_detector_response_is_found():
    """A response that rises by 20% from one corner of the detector to the other,
    multiplying every observation: found within 0.5% once the level is fixed."""
    rng = np.random.default_rng(5)
    obs = _with_pixels(synthetic(rng, lambda e, p: 1.0, noise=0.005), rng)
    response = [1.0 + 0.1 * (c.rows[0] + c.cols[0]) / 100 for c in obs.crossings]
    y = obs.y.copy()
    for e, r in enumerate(response):
        y[obs.of(e)] *= r
    obs = Observations(y, obs.sigma * y / obs.y, obs.group, obs.entry, obs.q, obs.crossings)
    model = _fit(obs, FitSettings(scale_interval=60.0, detector_bins=4,
                                  detector_regularisation=1e-3))
    got = np.concatenate([model.response(c)[0] for c in obs.crossings])
    truth = np.concatenate(response)
    ratio = got / truth
    assert np.std(ratio) / np.mean(ratio) < 0.005


def test_an_additive_offset_is_found():
    """An offset of 0.5 in one entry, 0 in the other (linear in |Q|: flat here): the fit
    puts the difference where it is."""
    rng = np.random.default_rng(6)
    obs = synthetic(rng, lambda e, p: 1.0, noise=0.005)
    y = obs.y + 0.5 * (obs.entry == 1)
    obs = Observations(y, obs.sigma, obs.group, obs.entry, obs.q, obs.crossings)
    settings = FitSettings(scale_interval=60.0, offset_knots=3, offset_regularisation=1e-6)
    model = _fit(obs, settings)
    q = np.linspace(0.1, 1.0, 5)
    difference = model.offset("f2", q) - model.offset("f1", q)
    assert difference == pytest.approx(np.full(5, 0.5), abs=0.02)


def test_the_scales_matter_beyond_chance_and_visibly_only():
    """The verdict that reduction.scaling.apply: auto follows: chi^2 down by more than
    fitting the parameters to noise explains (p + 3 sqrt(2 p)), and the observations moved
    by more than 1% RMS."""
    from hklflow.model.scales import MAGNITUDE, SIGNIFICANCE, scales_matter

    nu, p = 150_000, 111
    chance = (p + SIGNIFICANCE * np.sqrt(2 * p)) / nu
    assert scales_matter(1.4, 1.4 * (1 - 1.2 * chance), nu, p, 0.02)[0]
    assert not scales_matter(1.4, 1.4 * (1 - 0.8 * chance), nu, p, 0.02)[0]
    assert not scales_matter(1.4, 1.0, nu, p, 0.8 * MAGNITUDE)[0]  # real, too small to see
    assert scales_matter(1.718, 1.012, 38_000, 74, 0.08)[0]  # (a decaying beam and a plate)
    assert scales_matter(1.025, 1.016, 38_000, 10, 0.03)[0]  # (the decay alone)
    assert not scales_matter(None, 1.0, nu, p, 0.1)[0] and not scales_matter(1.2, 1.0, 0, p, 0.1)[0]
    assert "within the" in scales_matter(1.4, 1.4, nu, p, 0.0)[1]
    # pure noise fitted with a model of 32 parameters: chance explains what it removes
    for seed in range(3):
        rng = np.random.default_rng(seed)
        obs = synthetic(rng, lambda e, phi: 1.0, groups=2000, per_group=4)
        model = _fit(obs, FitSettings(absorption_lmax=2))
        names = ["f1", "f2"]
        before = equivalents_statistics(obs, np.ones(len(obs.y)), np.zeros(len(obs.y)), names)
        m = np.concatenate([model.multiplier(n, c) for n, c in zip(names, obs.crossings)])
        after = equivalents_statistics(obs, m, np.zeros(len(obs.y)), names)
        assert after["chi2_nu"] < before["chi2_nu"]
        assert not scales_matter(before["chi2_nu"], after["chi2_nu"], before["nu"],
                                 model.parameters, 1.0)[0], seed
