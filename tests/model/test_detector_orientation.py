"""Detector orientation (instrument.detector.orientation, pyFAI's 1..4): simulated frames of
an orientation-2 detector, their calibration, spot prediction and an end-to-end reduction,
each compared with pyFAI built here from its own detector_factory (the independent
reference) or with the simulation's truth.  PONI files and the config:
tests/steps/test_calibrate_powder.py; pixel <-> lab on every pixel: tests/model/test_geometry.py."""
from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pyFAI.detectors
import pytest
from pyFAI.integrator.azimuthal import AzimuthalIntegrator

from hklflow.algorithms.calibration import refine_geometry, ring_two_theta
from hklflow.files.orientation import read_orientation_file
from hklflow.files.scan import read_scan_file
from hklflow.files.volume import read_volume
from hklflow.model.geometry import BEAM_DIRECTION, DetectorGeometry
from hklflow.settings.params import CalibrationParams
from hklflow.simulation.experiment import predict_scan_reflections, preset, simulate_experiment
from hklflow.simulation.powder import simulate_calibrant_image

from conftest import run_snakemake

PX = 172e-6
# the beam well off the array's middle row: a layout read upside down cannot look the same
TRUE_O2 = DetectorGeometry("Pilatus300k", dist=0.15, poni1=200.3 * PX, poni2=180.7 * PX,
                           rot1=math.radians(0.3), rot2=math.radians(-0.25),
                           rot3=math.radians(0.4), wavelength=0.6, orientation=2)


def pyfai_ai(g: DetectorGeometry, orientation: int) -> AzimuthalIntegrator:
    """pyFAI's integrator for g's PONI parameters, with pyFAI's own detector of `orientation`."""
    det = pyFAI.detectors.detector_factory(g.detector, config={"orientation": orientation})
    return AzimuthalIntegrator(dist=g.dist, poni1=g.poni1, poni2=g.poni2, rot1=g.rot1,
                               rot2=g.rot2, rot3=g.rot3, detector=det,
                               wavelength=g.wavelength * 1e-10)


@pytest.fixture(scope="module")
def image_o2():
    return simulate_calibrant_image(TRUE_O2, "CeO2", np.random.default_rng(5))


def test_simulated_image_is_laid_out_as_pyfai_says(image_o2):
    """The rings of the orientation-2 image sit where pyFAI's orientation-2 integrator puts
    them; integrated as orientation 3 (pyFAI's default) they are smeared out."""
    mask = (image_o2 < 0) | (image_o2 >= 100_000)
    rings = np.degrees(ring_two_theta("CeO2", TRUE_O2.wavelength))
    heights = {}
    for orientation in (2, 3):
        res = pyfai_ai(TRUE_O2, orientation).integrate1d(
            image_o2.astype(np.float32), 3000, unit="2th_deg", mask=mask,
            method=("no", "histogram", "cython"))
        x, y = np.asarray(res.radial), np.asarray(res.intensity)
        inside = rings[(rings > x.min() + 0.2) & (rings < x.max() - 0.2)]
        assert len(inside) >= 4
        peaks = []
        for t in inside:
            near = np.abs(x - t) < 0.15
            peaks.append((x[near][np.argmax(y[near])] - t, y[near].max() / np.median(y)))
        heights[orientation] = max(h for _, h in peaks)
        if orientation == 2:
            for offset, height in peaks:
                assert abs(offset) < 0.02 and height > 3, (offset, height)
    assert heights[3] < 0.5 * heights[2], heights


def test_calibration_recovers_an_orientation_2_geometry(image_o2):
    """With instrument.detector.orientation = 2, the refinement from a rough start finds the
    geometry, and its pixel -> lab mapping is pyFAI's for the true one on every pixel."""
    start = {"dist": TRUE_O2.dist * 1.03, "poni1": TRUE_O2.poni1 + 10 * PX,
             "poni2": TRUE_O2.poni2 - 10 * PX}
    params = CalibrationParams(
        name="o2", calibrant="CeO2", image="o2.h5", dataset="/entry/data/data", frame=0,
        poni=None, start=start, refine=("dist", "poni1", "poni2", "rot1", "rot2", "rot3"),
        max_rings=None, detector="Pilatus300k", wavelength=0.6, polarization_fraction=0.99,
        orientation=2)
    res = refine_geometry(image_o2, params, source="o2.h5")
    g = res.geometry
    assert g.orientation == 2
    assert abs(g.dist / TRUE_O2.dist - 1) < 1e-3
    assert abs(g.poni1 - TRUE_O2.poni1) < 0.2 * PX and abs(g.poni2 - TRUE_O2.poni2) < 0.2 * PX
    assert abs(g.rot1 - TRUE_O2.rot1) < math.radians(0.05)
    assert abs(g.rot2 - TRUE_O2.rot2) < math.radians(0.05)
    assert res.rms_px < CalibrationParams.DEFAULT_MAX_RMS_PX / 2
    # rot3 is blind to powder rings (kept at its start, 0): compare with the truth at rot3 = 0
    ai = pyfai_ai(replace(TRUE_O2, rot3=0.0), 2)
    d1, d2 = np.meshgrid(np.arange(619.0), np.arange(487.0), indexing="ij")
    t3, t1, t2 = ai.calc_pos_zyx(d1=d1, d2=d2)
    ref = np.stack([t1, t2, t3], axis=-1)
    ref /= np.linalg.norm(ref, axis=-1, keepdims=True)
    pos = g.lab_positions(d1 + 0.5, d2 + 0.5)
    pos /= np.linalg.norm(pos, axis=-1, keepdims=True)
    angle = np.degrees(np.arccos(np.clip(np.sum(pos * ref, axis=-1), -1, 1)))
    assert angle.max() < 0.005, angle.max()  # 0.005 deg = 0.08 px at 150 mm


def test_spot_prediction_matches_pyfai():
    """Bragg spots of an orientation-2 scan: where the simulation predicts them, pyFAI's
    orientation-2 integrator sees the 2theta and chi of the scattered beam R U B h + k_i
    (no pixel mapping of ours in between); read as orientation 3, they land elsewhere."""
    spec = replace(preset("tiny"), detector_orientation=2)
    sample, entry = spec.samples[0], spec.entries[1]
    truth, _ = predict_scan_reflections(spec, sample, sample.temperatures[0], entry)
    r = truth.reflections
    assert truth.geometry.orientation == 2 and len(r["row"]) > 100
    h = np.stack([r["h"], r["k"], r["l"]], axis=-1).astype(float)
    UB = truth.U @ truth.crystal.B
    q = np.einsum("nij,nj->ni", spec.goniometer().rotation(r["phi"], entry.offsets), h @ UB.T)
    k_f = q + BEAM_DIRECTION / spec.wavelength
    tth = np.arccos(k_f[:, 2] / np.linalg.norm(k_f, axis=1))
    chi = np.arctan2(k_f[:, 0], k_f[:, 1])
    ai = pyfai_ai(truth.geometry, 2)
    d1, d2 = r["row"] - 0.5, r["col"] - 0.5
    assert np.abs(ai.tth(d1, d2) - tth).max() < 1e-8
    assert np.abs((ai.chi(d1, d2) - chi + np.pi) % (2 * np.pi) - np.pi).max() < 1e-8
    # the same PONI read with pyFAI's default orientation (what an import did before)
    rows3, cols3 = replace(truth.geometry, orientation=3).pixel_from_direction(
        k_f / np.linalg.norm(k_f, axis=1, keepdims=True))
    assert np.median(np.hypot(rows3 - r["row"], cols3 - r["col"])) > 20


def test_the_config_key_reaches_every_job_that_maps_pixels(tmp_path):
    """instrument.detector.orientation is in the settings of every rule that builds or reads
    a detector geometry, so that changing it reruns them (Snakemake compares the settings)."""
    from hklflow.planning.config import load_experiment
    from hklflow.planning.jobs import JobSettings
    from hklflow.simulation.experiment import config_texts

    def settings(orientation):
        texts = config_texts(replace(preset("tiny"), detector_orientation=orientation), "hdf5")
        (tmp_path / "config").mkdir(exist_ok=True)
        for name, text in texts.items():
            (tmp_path / "config" / name).write_text(text)
        exp = load_experiment(tmp_path / "config/config.yaml", base_dir=tmp_path)
        assert exp.instrument.detector.orientation == orientation
        jobs = JobSettings(exp)
        return {"calibrate_powder": json.loads(jobs.calibrate_powder("ceo2")),
                "ingest_scan": json.loads(jobs.ingest_scan("tiny", "300K", "f1")),
                "define_grid": json.loads(jobs.define_grid("tiny", lambda c: f"{c}.poni")),
                "find_peaks": json.loads(jobs.find_peaks()),
                "mask_scan": json.loads(jobs.mask_scan()),
                "transform_frames": json.loads(jobs.transform_frames("tiny"))}

    o3, o2 = settings(3), settings(2)
    assert o2["calibrate_powder"]["calibration"]["orientation"] == 2
    assert o2["ingest_scan"]["detector_orientation"] == 2
    for rule in ("define_grid", "find_peaks", "mask_scan", "transform_frames"):
        assert o2[rule]["detector"]["orientation"] == 2, rule
    for rule in o3:
        assert o3[rule] != o2[rule], rule


@pytest.mark.slow
def test_orientation_2_experiment_reduces_end_to_end(tmp_path):
    """A tiny experiment (one temperature, two entries) written with detector orientation 2
    and its config saying so: Snakemake runs every rule; the calibration, scan files and the
    parent orientation carry orientation 2 and agree with the truth."""
    spec = replace(preset("tiny"), detector_orientation=2)
    spec = replace(spec, samples=(replace(spec.samples[0], temperatures=(300.0,)),))
    root = tmp_path / "experiment"
    truth = simulate_experiment(spec, root)
    assert "orientation: 2" in (root / "config/config.yaml").read_text()
    r = run_snakemake(root, "--cores", "2")
    assert r.returncode == 0, r.stderr[-3000:]

    cal = DetectorGeometry.from_poni_file(root / "results/calibration/ceo2/geometry.poni",
                                          "Pilatus300k", 2)
    true_cal = DetectorGeometry(**truth["calibration_geometry"])
    assert true_cal.orientation == 2
    assert abs(cal.dist / true_cal.dist - 1) < 1e-3
    assert abs(cal.poni1 - true_cal.poni1) < 0.3 * PX and abs(cal.poni2 - true_cal.poni2) < 0.3 * PX
    for e in ("f1", "f2"):
        assert read_scan_file(root / f"results/tiny/300K/{e}/scan.nxs").setup.calibration.orientation == 2

    ori = read_orientation_file(root / "results/tiny/300K/orientation.nxs")
    t = truth["samples"]["tiny"]["temperatures"]["300K"]
    assert ori.detector.orientation == 2
    assert np.abs(np.array(ori.cell[:3]) / np.array(t["cell"][:3]) - 1).max() < 1e-3
    assert ori.statistics["fraction_indexed"] > 0.95 and ori.statistics["rms_px"] < 0.3
    # the true UB up to the setting indexing chose: true hkl -> indexed hkl is a Laue operator
    to_indexed = np.linalg.inv(np.asarray(ori.UB)) @ np.asarray(t["UB"])
    op = np.rint(to_indexed)
    assert np.abs(to_indexed - op).max() < 2e-3  # ~0.1 deg, 0.2 % of the cell
    assert any(np.array_equal(op, L) for L in spec.samples[0].crystal_at(300.0).laue_operators)
    # the merged volume: the strongest true reflections are bright at their (h, k, l) node
    vol = read_volume(root / "results/tiny/300K/transform.nxs")
    inten = vol.intensity()
    refl = truth["scans"]["tiny/300K/f1"]["reflections"]
    strongest = np.argsort(refl["counts"])[-20:]
    hkl = np.stack([refl[c] for c in "hkl"], axis=-1)[strongest] @ op.T
    ih, ik, il = vol.grid.index(hkl).T
    assert np.median(inten[il, ik, ih]) > 10 * np.nanmedian(inten)
