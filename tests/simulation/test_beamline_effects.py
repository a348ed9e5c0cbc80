"""The simulator's beamline effects (simulation/beamline.py): air attenuation, a plate
crystal's absorption, the beam's decay and ripple (with a monitor), a holder ring and its
empty-holder scans; each off by default, the default frames bit for bit those of before."""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import replace

import h5py
import hdf5plugin  # noqa: F401  (registers the bitshuffle filter)
import numpy as np
import pytest

from hklflow.model.geometry import DetectorGeometry, ScanAngles, ScanGeometry
from hklflow.planning.config import load_experiment
from hklflow.raw.frames import open_frames
from hklflow.simulation import beamline, cli
from hklflow.simulation.acquisition import AcquisitionError, acquire_experiment
from hklflow.simulation.experiment import (detector_defects, expected_scan, preset,
                                           simulate_experiment)

HC_EV_A = 12398.419843320026


def small(nframes=4, temperature=100.0, **kw):
    """tiny's first entry at one temperature (satellites below 150 K), a few frames."""
    s = preset("tiny")
    return replace(s, nframes=nframes, entries=s.entries[:1],
                   samples=(replace(s.samples[0], temperatures=(temperature,)),), **kw)


def good_pixels(spec):
    return detector_defects(spec, spec.calibration())[0] == 0


# --------------------------------------------------------------------------------------
# Default frames: bit for bit
# --------------------------------------------------------------------------------------
# sha256 of the frames (int32 bytes), truth.json, config.yaml and scans.tsv of tiny's second
# entry at 300 K and 100 K, 6 frames: the files made before the beamline effects existed,
# the frames since the default noise became independent from frame to frame (issue 81)
PINNED = {
    "raw/tiny/100K/f2.h5": "22061bc8e27b165aefa21cd0b23d9235f8228d9cfca656c26bb6a00fc92bc980",
    "raw/tiny/300K/f2.h5": "bd1e80a7a9542c464db09eb2edeab89c257e6d452e2c69e7b349cd704c8aa819",
    "truth.json": "c1c103a0d2709c0868ff07a54452c8f59b2abb96dc69481de2bd288aa5849f56",
    # (instrument.air_path: 0 since the workflow corrects for air: a simulation without it)
    "config/config.yaml": "9539ebe90d1d55e6972cb38e1cb82fc2dd6d5419cd3ad7592419a3aae6b376b7",
    "config/scans.tsv": "2018ab880bc71d4a676ac8b3ba6860368464e827c2916e4d54454814e4eb0d61",
}


def test_default_frames_truth_and_config_are_bit_for_bit_as_before(tmp_path):
    spec = preset("tiny")
    spec = replace(spec, nframes=6, entries=spec.entries[1:])
    assert not beamline.any_effect(spec)
    simulate_experiment(spec, tmp_path)
    got = {}
    for name in PINNED:
        if name.endswith(".h5"):
            with h5py.File(tmp_path / name, "r") as f:
                got[name] = hashlib.sha256(f["/entry/data/data"][()].tobytes()).hexdigest()
        else:
            got[name] = hashlib.sha256((tmp_path / name).read_bytes()).hexdigest()
    assert got == PINNED
    truth = json.loads((tmp_path / "truth.json").read_text())
    assert not {"air", "plate", "beam", "holder"} & set(truth)
    assert not list((tmp_path / "raw").rglob("*_empty.h5"))


# --------------------------------------------------------------------------------------
# Air
# --------------------------------------------------------------------------------------
def test_air_mu_is_xraydbs():
    import xraydb

    # by hand, once: xraydb.material_mu('air', 30000 eV) = 4.3366e-4 1/cm (NIST XCOM's
    # 0.3479 cm^2/g at 1.205e-3 g/cm^3 gives 4.19e-4: the same within xraydb's air density)
    assert xraydb.material_mu("air", 30000.0) == pytest.approx(4.3366e-4, rel=1e-4)
    assert beamline.air_mu_per_m(HC_EV_A / 30000.0) == pytest.approx(4.3366e-2, rel=1e-4)
    assert 0.3479 * 1.205e-3 == pytest.approx(4.3366e-4, rel=0.05)
    # and at another energy, as the simulator computes it
    lam = 0.6
    assert beamline.air_mu_per_m(lam) == pytest.approx(
        100 * xraydb.material_mu("air", HC_EV_A / lam), rel=1e-12)


def test_air_multiplies_every_pixel_by_exp_minus_mu_r():
    spec = small()
    lam0, _ = expected_scan(spec, spec.samples[0], 100.0, spec.entries[0])
    lam_air, frames = expected_scan(replace(spec, air=True), spec.samples[0], 100.0,
                                    spec.entries[0])
    geom = spec.true_scan_geometry(spec.entries[0])
    r = np.linalg.norm(geom.lab_positions(*geom.pixel_grid()), axis=-1)
    mu = 100 * __import__("xraydb").material_mu("air", HC_EV_A / spec.wavelength)
    want = np.exp(-mu * r)
    assert 0.99 < want.min() < want.max() < 0.999  # the effect is there to be seen
    ok = good_pixels(spec) & (lam0[0] > 0)
    for f in range(spec.nframes):
        np.testing.assert_allclose(lam_air[f][ok] / lam0[f][ok], want[ok], rtol=1e-12)
    assert frames.dtype == np.int32 and frames.shape == lam0.shape


# --------------------------------------------------------------------------------------
# Plate
# --------------------------------------------------------------------------------------
def closed_form(c_in, c_out, mu_t):
    """The plate's depth-averaged transmission, closed form (here only: the simulator's is
    a quadrature)."""
    c_in, c_out = np.broadcast_arrays(np.asarray(c_in, float), np.asarray(c_out, float))
    out = np.empty(c_in.shape)
    tr = c_out > 0
    a_in, a_out = mu_t / c_in[tr], mu_t / c_out[tr]
    out[tr] = (np.exp(-a_out) - np.exp(-a_in)) / (a_in - a_out)
    k = mu_t * (1 / c_in[~tr] + 1 / np.abs(c_out[~tr]))
    out[~tr] = -np.expm1(-k) / k
    return out


def test_plate_quadrature_agrees_with_the_closed_form():
    rng = np.random.default_rng(5)
    checked = 0
    for _ in range(60):
        mu_t = 10 ** rng.uniform(-2, 1)
        t = 10 ** rng.uniform(-5, -3)
        c_in = 10 ** rng.uniform(-3, 0)
        # outgoing cosines: uniform over the sphere's directions, and near edge-on ones
        c_out = np.concatenate([rng.uniform(-1, 1, 400),
                                rng.choice([-1, 1], 200) * 10 ** rng.uniform(-4, -1, 200)])
        # the closed form's 0/0 where the two paths are equal is not a test of anything
        keep = (c_out < 0) | (np.abs(mu_t / c_in - mu_t / c_out) > 1e-4)
        keep &= np.abs(c_out) > 1e-6
        c_out = c_out[keep]
        got = beamline.plate_transmission(c_in, c_out, mu_t / t, t)
        want = closed_form(c_in, c_out, mu_t)
        big = want > 1e-280  # (underflow)
        np.testing.assert_allclose(got[big], want[big], rtol=1e-6)
        checked += int(big.sum())
    assert checked > 30000
    # both cases and both extremes were met
    assert beamline.plate_transmission(1.0, np.array([1.0]), 1.0, 1.0)[0] == pytest.approx(
        math.exp(-1.0), rel=1e-12)
    assert beamline.plate_transmission(1.0, np.array([-1.0]), 1.0, 1.0)[0] == pytest.approx(
        (1 - math.exp(-2.0)) / 2.0, rel=1e-12)


def test_plate_edge_on_rays_give_zero_not_nan():
    c = np.array([0.0, -0.0, 1e-300, -1e-300, 1e-12, -1e-12, 1e-8])
    for c_in in (0.0, 1e-300, 1e-9, 0.5):
        got = beamline.plate_transmission(c_in, c, 8000.0, 1e-4)
        assert np.all(np.isfinite(got)) and np.all(got >= 0) and np.all(got < 1e-3)
    got = beamline.plate_transmission(0.0, np.array([0.5, -0.5, 1.0]), 8000.0, 1e-4)
    assert np.all(np.isfinite(got)) and np.all(got < 1e-6)


@pytest.mark.parametrize("hkl, phi_start, phi_step, sides", [
    ([0, 1, 0], 20.0, 7.0, {1.0}),  # facing the beam: every pixel in transmission
    ([1, 0, 0], 0.0, 2.0, {-1.0, 1.0}),  # nearly along the beam: reflection too
])
def test_plate_absorbs_the_crystals_scattering_with_its_normal_along_R_U_B_hkl(
        hkl, phi_start, phi_step, sides):
    plate = {"normal": hkl, "thickness": 1e-4, "mu": 8000.0}
    # no air scatter: everything in the frames comes from the crystal
    spec = small(nframes=3, air_scatter=0.0, phi_start=phi_start, phi_step=phi_step)
    sample, entry = spec.samples[0], spec.entries[0]
    lam0, _ = expected_scan(spec, sample, 100.0, entry)
    lam_p, _ = expected_scan(replace(spec, plate=plate), sample, 100.0, entry)
    # the test's own normal: R(phi at the frame's centre) U B hkl, in the lab
    geom = spec.true_scan_geometry(entry)
    U, B = sample.U_at(100.0), sample.crystal_at(100.0).B
    sg = ScanGeometry(geom, spec.goniometer(), ScanAngles(spec.phi_start, spec.phi_step,
                                                          spec.nframes), dict(entry.offsets), U @ B)
    pos = geom.lab_positions(*geom.pixel_grid())
    u = pos / np.linalg.norm(pos, axis=-1, keepdims=True)
    ok = good_pixels(spec) & (lam0[0] > 0)
    both = set()
    for f in range(spec.nframes):
        n = sg.sample_rotation(f + 0.5) @ U @ B @ np.array(hkl, float)
        n /= np.linalg.norm(n)
        if n[2] < 0:
            n = -n  # into the plate from the face the beam enters
        c_out = u @ n
        want = closed_form(np.full(c_out.shape, n[2]), c_out, 0.8)
        got = lam_p[f] / np.where(lam0[f] > 0, lam0[f], 1.0)
        sel = ok & (want > 1e-6)
        np.testing.assert_allclose(got[sel], want[sel], rtol=1e-6)
        both |= set(np.unique(np.sign(c_out[ok])))
        assert sel.sum() > 0.9 * ok.sum()
    assert both == sides


def test_plate_in_config_and_truth(tmp_path):
    plate = {"normal": [0, 1, 0], "thickness": 1e-4, "mu": 8000.0}
    spec = small(nframes=2, plate=plate)
    truth = simulate_experiment(spec, tmp_path / "a")
    exp = load_experiment(tmp_path / "a" / "config" / "config.yaml", base_dir=tmp_path / "a")
    assert exp.samples["tiny"].shape == {"kind": "plate", "normal": [0, 1, 0],
                                         "thickness": 1e-4, "mu": 8000.0}
    p = truth["plate"]
    assert p["mu_t"] == pytest.approx(0.8) and p["normal"] == [0, 1, 0]
    lo, hi = p["transmission_range"]
    assert 0 <= lo < hi < 1
    refl = truth["scans"]["tiny/100K/f1"]["reflections"]
    assert np.all((np.asarray(refl["plate_transmission"]) >= lo - 1e-9)
                  & (np.asarray(refl["plate_transmission"]) <= 1))
    assert json.loads((tmp_path / "a" / "truth.json").read_text())["plate"] == p
    # left out of the config on request (the scaling test's experiment)
    simulate_experiment(replace(spec, plate_in_config=False), tmp_path / "b")
    exp = load_experiment(tmp_path / "b" / "config" / "config.yaml", base_dir=tmp_path / "b")
    assert not exp.samples["tiny"].shape
    with pytest.raises(ValueError, match="plate"):
        simulate_experiment(replace(spec, plate={"normal": [0, 0, 0], "thickness": 1e-4,
                                                 "mu": 1.0}), tmp_path / "c")


# --------------------------------------------------------------------------------------
# Beam
# --------------------------------------------------------------------------------------
def flux(f, n, decay, ripple, period):
    x = np.asarray(f) + 0.5
    return (1 - decay * x / n) * (1 + ripple * np.sin(2 * np.pi * x / period))


BEAM = {"decay": 0.3, "ripple": 0.1, "ripple_period_frames": 7.0, "monitor": True}


@pytest.fixture(scope="module")
def beam_experiment(tmp_path_factory):
    # background and air scatter only (no Bragg, no diffuse): the frames' sums follow b(f)
    spec = small(nframes=20, temperature=300.0, beam=BEAM, bragg_scale=0.0, tds_amplitude=0.0)
    out = tmp_path_factory.mktemp("beam")
    truth = simulate_experiment(spec, out)
    return spec, out, truth


def test_beam_monitor_is_1e5_b_and_the_scans_table_names_it(beam_experiment):
    spec, out, truth = beam_experiment
    b = flux(np.arange(20), 20, 0.3, 0.1, 7.0)
    exp = load_experiment(out / "config" / "config.yaml", base_dir=out)
    (scan,) = exp.scans
    assert scan.monitor == "/entry/monitor/data"
    with open_frames(scan.data, scan.dataset, base_dir=out) as stack:
        monitor = stack.read_monitor(scan.monitor)
    np.testing.assert_allclose(monitor, 1e5 * b, rtol=1e-14)
    assert monitor.dtype == np.float64
    np.testing.assert_allclose(truth["beam"]["flux_per_frame"], b, rtol=1e-14)


def test_beam_scales_every_frame_by_b(beam_experiment):
    spec, out, truth = beam_experiment
    b = flux(np.arange(20), 20, 0.3, 0.1, 7.0)
    with h5py.File(out / "raw" / "tiny" / "300K" / "f1.h5", "r") as f:
        frames = f["/entry/data/data"][()]
    ok = good_pixels(spec)
    sums = frames[:, ok].astype(np.float64).sum(axis=1)
    ratio = sums / sums[0]
    sigma = ratio * np.sqrt(1 / sums + 1 / sums[0])
    assert np.all(np.abs(ratio - b / b[0]) < 5 * sigma)
    # and not as without the beam's change (the test sees a 30% decay and a 10% ripple)
    assert np.max(np.abs(ratio - 1) / sigma) > 50


def test_beam_monitor_in_cbf_headers_and_refused_where_not_written(tmp_path):
    spec = small(nframes=3, temperature=300.0, beam=BEAM)
    simulate_experiment(spec, tmp_path / "cbf", "cbf")
    exp = load_experiment(tmp_path / "cbf" / "config" / "config.yaml", base_dir=tmp_path / "cbf")
    (scan,) = exp.scans
    assert scan.monitor == "cbf:Flux"
    with open_frames(scan.data, scan.dataset, base_dir=tmp_path / "cbf") as stack:
        monitor = stack.read_monitor(scan.monitor, tmp_path / "cbf")
    np.testing.assert_allclose(monitor, 1e5 * flux(np.arange(3), 3, 0.3, 0.1, 7.0), rtol=1e-9)
    with pytest.raises(ValueError, match="monitor"):
        simulate_experiment(spec, tmp_path / "eiger", "eiger")
    with pytest.raises(AcquisitionError, match="monitor"):
        acquire_experiment(spec, tmp_path / "acq", "hdf5", fps=100.0)
    # without a monitor: no monitor column
    simulate_experiment(replace(spec, beam={**BEAM, "monitor": False}), tmp_path / "none")
    assert "monitor" not in (tmp_path / "none" / "config" / "scans.tsv").read_text()


# --------------------------------------------------------------------------------------
# Holder and empty-holder scans
# --------------------------------------------------------------------------------------
HOLDER = {"amplitude": 30.0, "ring_q": 0.3, "ring_width": 0.04}


@pytest.fixture(scope="module")
def holder_experiment(tmp_path_factory):
    spec = small(nframes=24, holder=HOLDER, air=True)
    out = tmp_path_factory.mktemp("holder")
    truth = simulate_experiment(spec, out)
    return spec, out, truth


def holder_and_air_expected(spec, truth, scan_id):
    """The test's own holder + air scatter model from truth.json's geometry: amplitude *
    (Gaussian ring in |Q| + 0.25) * solid angle * polarization + air scatter, times exp(-mu r)."""
    geom = DetectorGeometry(**truth["scans"][scan_id]["geometry"])
    rows, cols = geom.pixel_grid()
    q = np.linalg.norm(geom.lab_q(rows, cols), axis=-1)
    tth, _ = geom.two_theta_chi(rows, cols)
    solid = geom.solid_angle(rows, cols)
    pol = geom.polarization(rows, cols, spec.polarization_fraction)
    ring = np.exp(-0.5 * ((q - HOLDER["ring_q"]) / HOLDER["ring_width"]) ** 2)
    holder = HOLDER["amplitude"] * (ring + 0.25) * solid * pol
    air_scatter = spec.air_scatter * np.exp(-tth / 0.15) * solid
    r = np.linalg.norm(geom.lab_positions(rows, cols), axis=-1)
    return (holder + air_scatter) * np.exp(-truth["air"]["mu_per_m"] * r), q


def test_empty_scan_holds_the_holder_and_air_scatter(holder_experiment):
    spec, out, truth = holder_experiment
    scan_id = "tiny/100K/f1"
    t = truth["scans"][scan_id]
    assert t["empty_scan"] == "raw/tiny/100K/f1_empty.h5"
    assert t["empty_scan_dataset"] == "/entry/data/data"
    assert truth["holder"]["background_term_in_empty_scan"] is False
    with h5py.File(out / t["empty_scan"], "r") as f:
        empty = f[t["empty_scan_dataset"]][()]
    assert empty.shape == (24, 619, 487) and empty.dtype == np.int32
    want, q = holder_and_air_expected(spec, truth, scan_id)
    ok = good_pixels(spec)
    mean = empty.mean(axis=0)
    # every pixel within its noise: chi^2 per pixel ~ 1 (the crystal's background term, 6
    # photons, or a single spot would make it far larger)
    chi2 = (mean[ok] - want[ok]) ** 2 / (want[ok] / empty.shape[0])
    assert 0.97 < chi2.mean() < 1.03
    # the ring where it should be: in |Q| bins, within 5 sigma
    bins = np.linspace(q[ok].min(), q[ok].max(), 25)
    k = np.digitize(q[ok], bins)
    for i in np.unique(k):
        s = k == i
        if s.sum() < 50:
            continue
        # the bin's mean over pixels and frames, and its Poisson sigma
        sigma = math.sqrt(want[ok][s].sum() / empty.shape[0]) / s.sum()
        assert abs(mean[ok][s].mean() - want[ok][s].mean()) < 5 * sigma
    ring = ok & (np.abs(q - HOLDER["ring_q"]) < 0.02)
    far = ok & (np.abs(q - HOLDER["ring_q"]) > 0.2)
    assert mean[ring].mean() > 3 * mean[far].mean()
    # defects as in the sample scan
    assert np.all(empty[:, detector_defects(spec, spec.calibration())[0] == 1] == -1)


def test_empty_scan_has_no_crystal_and_its_own_noise(holder_experiment):
    spec, out, truth = holder_experiment
    scan_id = "tiny/100K/f1"
    t = truth["scans"][scan_id]
    with h5py.File(out / t["empty_scan"], "r") as f:
        empty = f["/entry/data/data"][()].astype(float)
    with h5py.File(out / "raw" / "tiny" / "100K" / "f1.h5", "r") as f:
        sample = f["/entry/data/data"][()].astype(float)
    want, _ = holder_and_air_expected(spec, truth, scan_id)
    r = {k: np.asarray(v) for k, v in t["reflections"].items()}
    strong = ((r["counts"] * r["air_transmission"] > 2000) & ~r["in_gap"].astype(bool)
              & (r["gap_distance_px"] > 4) & (r["frame"] > 1) & (r["frame"] < 22))
    assert strong.sum() >= 3
    for row, col, z in zip(r["row"][strong], r["col"][strong], r["frame"][strong]):
        f, i, j = int(z), int(row), int(col)
        box = (f, slice(i - 1, i + 2), slice(j - 1, j + 2))
        excess_empty = empty[box].sum() - want[box[1:]].sum()
        assert abs(excess_empty) < 6 * math.sqrt(want[box[1:]].sum()) + 3
        assert sample[box].sum() - want[box[1:]].sum() > 200  # the spot is in the sample scan
    # not the sample scan's noise: the holder + air part drawn again
    ok = good_pixels(spec)
    de = (empty - empty.mean(axis=0))[:, ok].ravel()
    ds = (sample - sample.mean(axis=0))[:, ok].ravel()
    assert abs(np.corrcoef(de, ds)[0, 1]) < 0.01
    # (its frames' noise independent of one another: test_empty_scan_holds_the_holder_and_
    # air_scatter's chi^2 of the mean over frames; deviations from the mean over 24 frames
    # correlate by -1/23 between frames)
    d = de.reshape(24, -1)
    assert np.corrcoef(d[:-1].ravel(), d[1:].ravel())[0, 1] == pytest.approx(-1 / 23, abs=0.01)
    # in the scans table: a background row, which its sample row names
    lines = [ln.split("\t") for ln in (out / "config" / "scans.tsv").read_text().splitlines()]
    rows = [dict(zip(lines[0], ln)) for ln in lines[1:]]
    empty = [r for r in rows if r["entry"].endswith("_empty")]
    assert empty and all(r["role"] == "background" and not r["background"] for r in empty)
    assert all(any(s["background"] == r["entry"] and s["role"] == "sample"
                   and s["temperature"] == r["temperature"] for s in rows) for r in empty)


def test_holder_ring_in_sample_frames_and_beam_on_both(tmp_path):
    # the holder ring is in the sample scan too, and the beam scales both scans
    spec = small(nframes=6, temperature=300.0, holder=HOLDER,
                 beam={"decay": 0.5, "ripple": 0.0, "ripple_period_frames": 10.0})
    sample, entry = spec.samples[0], spec.entries[0]
    lam_h, _ = expected_scan(spec, sample, 300.0, entry)
    lam_e, _ = expected_scan(spec, sample, 300.0, entry, empty=True)
    lam_0, _ = expected_scan(replace(spec, holder=None, beam=None), sample, 300.0, entry)
    b = flux(np.arange(6), 6, 0.5, 0.0, 10.0)
    geom = spec.true_scan_geometry(entry)
    rows, cols = geom.pixel_grid()
    q = np.linalg.norm(geom.lab_q(rows, cols), axis=-1)
    tth, _ = geom.two_theta_chi(rows, cols)
    solid = geom.solid_angle(rows, cols)
    holder = HOLDER["amplitude"] * (
        np.exp(-0.5 * ((q - HOLDER["ring_q"]) / HOLDER["ring_width"]) ** 2) + 0.25) \
        * solid * geom.polarization(rows, cols, spec.polarization_fraction)
    air_scatter = spec.air_scatter * np.exp(-tth / 0.15) * solid
    ok = good_pixels(spec)
    for f in range(6):
        # sample scan: b(f) (crystal + background + air scatter + holder)
        np.testing.assert_allclose((lam_h[f] / b[f] - lam_0[f])[ok], holder[ok], rtol=1e-6)
        # empty scan: b(f) (holder + air scatter)
        np.testing.assert_allclose((lam_e[f] / b[f])[ok], (holder + air_scatter)[ok], rtol=1e-6)


# --------------------------------------------------------------------------------------
# The preset
# --------------------------------------------------------------------------------------
def test_absorbing_plate_preset(tmp_path):
    spec = preset("absorbing_plate")
    base = preset("tiny")
    assert spec.nframes == base.nframes and spec.entries == base.entries
    assert spec.samples == base.samples
    assert spec.sensor == {"material": "CdTe", "thickness": 1e-3}
    assert spec.air is True
    assert spec.plate["mu"] * spec.plate["thickness"] == pytest.approx(0.8)
    assert spec.beam == {"decay": 0.10, "ripple": 0.02, "ripple_period_frames": 37.0,
                         "monitor": False}
    assert spec.holder is not None
    assert spec.satellite_amplitude > 5 * base.satellite_amplitude
    assert spec.background < base.background
    assert "absorbing_plate" in cli.parser()._option_string_actions["--preset"].choices
    # a short run of it: every effect recorded, the config valid with the plate's shape
    s = replace(spec, nframes=2, entries=spec.entries[:1],
                samples=(replace(spec.samples[0], temperatures=(300.0,)),))
    truth = simulate_experiment(s, tmp_path)
    assert {"air", "plate", "beam", "holder", "sensor"} <= set(truth)
    assert {"air", "plate", "beam", "holder"} <= set(truth["simulation"])
    exp = load_experiment(tmp_path / "config" / "config.yaml", base_dir=tmp_path)
    assert exp.samples["tiny"].shape["kind"] == "plate"
    assert (tmp_path / truth["scans"]["tiny/300K/f1"]["empty_scan"]).is_file()
