"""hklflow.model.sensor and a DetectorGeometry with a sensor, against pyFAI's own parallax
model (pyFAI.parallax.ThinSensor, Geometry.enable_parallax, its sensor materials' tables):
the closed-form mean-depth displacement, mu, the efficiency, where every pixel looks, its
inverse, the PONI file that carries the sensor; and the magnitudes of the issue (a 1 mm CdTe
sensor at 87 keV: 0.39, 0.79, 1.2 px at 2theta = 10, 20, 30 deg)."""
from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest

from hklflow.model import sensor as sensor_module
from hklflow.model.geometry import DetectorGeometry, EntrySetup, Goniometer, ScanAngles
from hklflow.model.sensor import (HC_KEV_ANGSTROM, MATERIALS, Sensor, attenuation_coefficient,
                                  material_name, pyfai_attenuation_coefficient)
from hklflow.settings.schema import schema_node

PX = 172e-6
LAM_87 = HC_KEV_ANGSTROM / 87.0
CDTE = Sensor("CdTe", 1e-3)


def tilted(sensor=CDTE, **kw) -> DetectorGeometry:
    return DetectorGeometry("PilatusCdTe300k", **{"dist": 0.3, "poni1": 25.3 * PX,
                                                  "poni2": 243.6 * PX, "rot1": 0.01,
                                                  "rot2": -0.02, "rot3": 0.03,
                                                  "wavelength": LAM_87, **kw}, sensor=sensor)


def test_displacement_is_pyfais_mean_depth_formula():
    from pyFAI.parallax import ThinSensor

    for material, thickness, kev in [("CdTe", 1e-3, 87.0), ("Si", 450e-6, 20.0),
                                     ("GaAs", 500e-6, 40.0), ("CdTe", 750e-6, 60.0)]:
        s, lam = Sensor(material, thickness), HC_KEV_ANGSTROM / kev
        thin = ThinSensor(thickness=thickness, mu=s.mu(lam))
        alpha = np.radians(np.linspace(0.0, 60.0, 61))
        ours = s.displacement(0.5 * np.tan(alpha), 0.5, lam)
        theirs = np.array([thin.measure_displacement_integrate(a) for a in alpha])
        assert np.allclose(ours, theirs, rtol=1e-12, atol=1e-18)
        assert s.efficiency(1.0, lam) == pytest.approx(thin.efficiency, rel=1e-12)


def test_mu_is_pyfais_table_and_is_kept(tmp_path, monkeypatch):
    from pyFAI.detectors.sensors import ALL_MATERIALS

    monkeypatch.setenv("HKLFLOW_CACHE_DIR", str(tmp_path))
    attenuation_coefficient.cache_clear()
    try:
        mu = attenuation_coefficient("CdTe", LAM_87)
        assert mu == pytest.approx(ALL_MATERIALS["CdTe"].mu(87.0, unit="m^-1"), rel=1e-12)
        assert mu == pyfai_attenuation_coefficient("CdTe", LAM_87)
        kept = json.loads(next(tmp_path.glob("sensor-attenuation-pyFAI*.json")).read_text())
        assert kept == {f"CdTe@{LAM_87!r}": mu}
        # read back from the file, not from pyFAI
        attenuation_coefficient.cache_clear()
        monkeypatch.setattr(sensor_module, "pyfai_attenuation_coefficient",
                            lambda *a: pytest.fail("asked pyFAI again"))
        assert attenuation_coefficient("CdTe", LAM_87) == mu
    finally:
        attenuation_coefficient.cache_clear()


def test_the_issues_magnitudes():
    """CdTe 1 mm at 87 keV: 1/mu 0.67 mm, efficiency 0.77 at normal incidence, 0.39 / 0.79 /
    1.2 px (172 um) at 2theta = 10 / 20 / 30 deg on a detector normal to the beam."""
    assert 1e3 / CDTE.mu(LAM_87) == pytest.approx(0.67, abs=0.01)
    assert CDTE.efficiency(1.0, LAM_87) == pytest.approx(0.775, abs=0.002)
    px = CDTE.displacement(0.5 * np.tan(np.radians([10.0, 20.0, 30.0])), 0.5, LAM_87) / PX
    assert np.allclose(px, [0.39, 0.79, 1.22], atol=0.01)


def test_entry_and_recorded_radius_are_inverse():
    r = np.linspace(0.0, 0.4, 2001)
    back = CDTE.entry_radius(CDTE.recorded_radius(r, 0.3, LAM_87), 0.3, LAM_87)
    assert np.abs(back - r).max() < 1e-12
    d1, d2 = CDTE.recorded_offsets(*CDTE.entry_offsets(0.05, -0.08, 0.3, LAM_87), 0.3, LAM_87)
    assert (d1, d2) == pytest.approx((0.05, -0.08), abs=1e-13)


def test_pixels_look_where_pyfais_parallax_puts_them():
    """2theta and chi of every pixel of a tilted detector with a CdTe sensor: as pyFAI's
    Geometry.enable_parallax computes them (to its interpolation tables' 1e-6 px)."""
    g = tilted()
    rows, cols = g.pixel_grid()
    tth, chi = g.two_theta_chi(rows, cols)
    ai = g.to_pyfai()
    assert ai.parallax is not None
    tth_p = ai.center_array(g.shape, unit="2th_rad", scale=False)
    chi_p = ai.center_array(g.shape, unit="chi_rad", scale=False)
    assert np.abs(tth - tth_p).max() * g.dist / PX < 1e-5
    assert np.abs(np.angle(np.exp(1j * (chi - chi_p)))).max() < 1e-6
    # and parallax is what moves them: up to 0.8 px at the far edge (2theta ~ 20 deg)
    plain, _ = g.with_sensor(None).two_theta_chi(rows, cols)
    moved = np.abs(tth - plain) * g.dist / PX / np.cos(tth) ** 2
    assert 0.6 < moved.max() < 1.0


def test_prediction_is_the_inverse_of_where_pixels_look():
    g = tilted()
    rows, cols = g.pixel_grid()
    rows, cols = rows[::37, ::29], cols[::37, ::29]
    pos = g.lab_positions(rows, cols)
    back = g.pixel_from_direction(pos / np.linalg.norm(pos, axis=-1, keepdims=True))
    assert np.abs(back[0] - rows).max() < 1e-9 and np.abs(back[1] - cols).max() < 1e-9
    # recorded further from the PONI than a sensorless detector would have them
    plain = g.with_sensor(None).pixel_from_direction(pos)
    poni = g.with_sensor(None).pixel_from_direction(g.tilt_matrix @ np.array([0.0, 0.0, 1.0]))
    assert np.all(np.hypot(back[0] - poni[0], back[1] - poni[1])
                  >= np.hypot(plain[0] - poni[0], plain[1] - poni[1]) - 1e-9)


def test_without_a_sensor_nothing_changes():
    g = tilted(sensor=None)
    assert "sensor" not in g.as_dict() and g.to_pyfai().parallax is None
    rows, cols = g.pixel_grid()
    assert np.array_equal(g.sensor_efficiency(rows[:3, :3], cols[:3, :3]), np.ones((3, 3)))
    q, pol, eff = g.looking(rows, cols, 0.99)
    assert np.array_equal(q, g.lab_q(rows, cols))
    assert np.array_equal(pol, g.polarization(rows, cols, 0.99)) and np.all(eff == 1.0)


def test_looking_is_lab_q_polarization_and_efficiency():
    g = tilted()
    rows, cols = g.pixel_grid()
    q, pol, eff = g.looking(rows, cols, 0.99)
    assert np.array_equal(q, g.lab_q(rows, cols))
    assert np.array_equal(pol, g.polarization(rows, cols, 0.99))
    assert np.allclose(eff, g.sensor_efficiency(rows, cols), rtol=1e-15)
    assert 0.77 < eff.min() < eff.max() < 0.80


def test_poni_file_carries_the_sensor(tmp_path):
    """pyFAI's PONI version 3 (Parallax: True, the Detector_config's sensor): read without
    pyFAI, as pyFAI reads it, and written again the same."""
    import pyFAI

    g = tilted()
    path = tmp_path / "geometry.poni"
    g.write_poni(path)
    text = path.read_text()
    assert "poni_version: 3" in text and "Parallax: True" in text and '"CdTe"' in text
    assert DetectorGeometry.from_poni_file(path, g.detector) == g
    ai = pyFAI.load(str(path))
    assert ai.parallax is not None and DetectorGeometry.from_pyfai(ai, g.detector) == g
    # without a sensor: the PONI hklflow always wrote (version 2.1, no Parallax key)
    g.with_sensor(None).write_poni(path)
    assert "poni_version: 2.1" in path.read_text() and "Parallax" not in path.read_text()
    assert DetectorGeometry.from_poni_file(path, g.detector).sensor is None


def test_an_entry_keeps_its_sensor_with_a_refined_detector():
    g = tilted()
    setup = EntrySetup("f1", g, (0.001, 0.0, 0.0), Goniometer(), ScanAngles(0.0, 1.0, 10))
    refined = dataclasses.replace(g, dist=0.3001).with_sensor(None)  # e.g. read without one

    class Orientation:
        detector = refined
        offset_corrections = {}
        UB = np.eye(3)

    scan = setup.geometry(Orientation)
    assert scan.detector.sensor == CDTE and scan.detector.dist == pytest.approx(0.3011)


def test_materials_are_pyfais_and_the_schemas():
    from pyFAI.detectors.sensors import ALL_MATERIALS

    assert set(MATERIALS) <= set(ALL_MATERIALS)
    node = schema_node("instrument.detector.sensor")
    assert node["properties"]["material"]["enum"] == list(MATERIALS)
    assert node["default"] is None


@pytest.mark.parametrize("text, name", [("Silicon", "Si"), ("si", "Si"), ("CdTe", "CdTe"),
                                        ("Cadmium telluride", "CdTe"), ("GaAs", "GaAs"),
                                        ("Germanium", "Ge"), ("CdZnTe", "CZT"),
                                        ("Unobtainium", None), (None, None)])
def test_material_names_as_raw_files_write_them(text, name):
    assert material_name(text) == name


def test_sensors_are_checked():
    assert Sensor.of({"material": "silicon", "thickness": 450e-6}) == Sensor("Si", 450e-6)
    assert Sensor.of(None) is None
    for bad in [{"material": "Si"}, {"material": "Xx", "thickness": 1e-3},
                {"material": "Si", "thickness": 0.0}, {"material": "Si", "thickness": math.nan},
                {"material": "Si", "thickness": True}]:
        with pytest.raises(ValueError):
            Sensor.of(bad)
