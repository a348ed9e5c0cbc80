"""The simulator's thick sensor (simulation.experiment, powder.py, writers.py; preset
'thick_sensor'): spots recorded where the parallax puts them, counts times the efficiency,
both in truth.json; the calibrant image's rings moved the same way; the raw files name the
sensor as a Pilatus header and an NXmx master do; the config sets it."""
from __future__ import annotations

import json
from dataclasses import replace

import h5py
import numpy as np
import pytest

from hklflow.algorithms.calibration import ring_two_theta
from hklflow.files.cbf_header import read_cbf_header
from hklflow.model.sensor import Sensor
from hklflow.planning.config import load_experiment
from hklflow.raw.sensor import named_sensor
from hklflow.simulation.experiment import preset, simulate_experiment
from hklflow.simulation.powder import simulate_calibrant_image

CDTE = Sensor("CdTe", 1e-3)


@pytest.fixture(scope="module")
def thick(tmp_path_factory):
    """The thick_sensor preset with 4 frames per entry, as EIGER files (a master)."""
    d = tmp_path_factory.mktemp("thick")
    spec = replace(preset("thick_sensor"), nframes=4)
    simulate_experiment(spec, d, "eiger")
    return d, spec, json.loads((d / "truth.json").read_text())


def test_the_preset_is_a_1mm_cdte_sensor_at_87_kev_out_to_20_deg(thick):
    d, spec, truth = thick
    assert truth["sensor"]["material"] == "CdTe" and truth["sensor"]["thickness"] == 1e-3
    assert 12.398419843320026 / truth["sensor"]["wavelength"] == pytest.approx(87.0)
    assert truth["calibration_geometry"]["sensor"] == CDTE.as_dict()
    g = spec.calibration()
    assert 19.5 < np.degrees(g.max_two_theta()) < 21.0
    # the table of truth: 0.79 px at 20 deg, efficiency 0.775 at normal incidence
    at = dict(zip(truth["sensor"]["at_two_theta_deg"],
                  truth["sensor"]["displacement_px_at_normal_detector"]))
    assert at[20.0] == pytest.approx(0.79, abs=0.01)
    assert truth["sensor"]["efficiency"][0] == pytest.approx(0.7747, abs=1e-3)
    # the config sets it, and the experiment reads it
    exp = load_experiment(d / "config" / "config.yaml", base_dir=d)
    assert exp.instrument.detector.sensor == CDTE.as_dict()


def test_spots_are_recorded_where_the_parallax_puts_them(thick):
    d, spec, truth = thick
    g = spec.calibration()
    refl = {k: np.asarray(v) for k, v in truth["scans"]["lsco/300K/f1"]["reflections"].items()}
    rows, cols = refl["row"], refl["col"]
    rows0, cols0 = refl["row_without_parallax"], refl["col_without_parallax"]
    assert np.allclose(refl["parallax_px"], np.hypot(rows - rows0, cols - cols0))
    # outwards from the PONI, by the model's displacement at the ray's angle to the normal
    plain = g.with_sensor(None)
    poni_row, poni_col = plain._plane_to_pixel(g.poni1, g.poni2)
    r0 = np.hypot(rows0 - poni_row, cols0 - poni_col)
    r = np.hypot(rows - poni_row, cols - poni_col)
    px = g.pixel_size[0]
    expect = CDTE.displacement(r0 * px, g.dist, g.wavelength) / px
    assert np.allclose(r - r0, expect, atol=1e-6)
    assert 0.7 < refl["parallax_px"].max() < 0.9
    # counted with the efficiency at the ray's angle
    assert np.all((refl["efficiency"] > 0.774) & (refl["efficiency"] < 0.80))
    assert np.allclose(refl["efficiency"], g.sensor_efficiency(rows, cols))


def test_the_raw_files_name_the_sensor(thick, tmp_path):
    d, spec, truth = thick
    master = d / "raw/lsco/300K/f1/f1_master.h5"
    with h5py.File(master, "r") as f:
        det = f["entry/instrument/detector"]
        assert det["sensor_material"][()].decode() == "CdTe"
        assert det["sensor_thickness"][()] == 1e-3
    named = named_sensor(str(master))
    assert named.sensor == CDTE and "sensor_material" in named.where
    # a Pilatus header's line, as dxtbx reads it
    simulate_experiment(replace(spec, entries=spec.entries[:1], nframes=1), tmp_path, "cbf")
    first = sorted((tmp_path / "raw/lsco/300K/f1").glob("*.cbf"))[0]
    assert "# CdTe sensor, thickness 0.001000 m" in read_cbf_header(first).texts
    assert named_sensor(str(first)).sensor == CDTE


def test_calibrant_rings_move_out_with_the_sensor():
    """The calibrant image of a thick sensor: its rings lie where the geometry with the
    sensor puts them, further out than without (0.58 px at 14.8 deg), fainter by the
    efficiency."""
    spec = preset("thick_sensor")
    g = spec.calibration()
    rows, cols = g.pixel_grid()
    tth = ring_two_theta("CeO2", g.wavelength)
    ring = tth[(tth > np.radians(14.7)) & (tth < np.radians(14.9))][0]  # (0.23 deg from others)
    plain = g.with_sensor(None).two_theta_chi(rows, cols)[0]
    centroid, total = {}, {}
    for name, geometry in (("sensor", g), ("none", g.with_sensor(None))):
        img = simulate_calibrant_image(geometry, "CeO2", np.random.default_rng(0),
                                       hot_pixels=0, background=0.0).astype(float)
        band = (np.abs(plain - ring) < np.radians(0.08)) & (img >= 0)
        w = img[band]
        # where the ring's counts lie, in pixels along the radius, against the plain 2theta
        centroid[name] = float(np.sum(w * (plain[band] - ring)) / w.sum())
        total[name] = w.sum()
    px = np.radians(np.degrees(g.pixel_size[0] / g.dist))  # (rad of 2theta per px, near)
    shift = (centroid["sensor"] - centroid["none"]) / px * np.cos(ring) ** 2
    expect = CDTE.displacement(g.dist * np.tan(ring), g.dist, g.wavelength) / g.pixel_size[0]
    assert abs(centroid["none"]) / px < 0.05
    assert shift == pytest.approx(expect, abs=0.1)  # outwards: further out in the plain 2theta
    assert 0.70 < total["sensor"] / total["none"] < 0.85  # the efficiency (0.78 there)
