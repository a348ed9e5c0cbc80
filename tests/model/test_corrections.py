"""The transform's corrections (model.corrections), each against something we did not
write: the plate's closed form against a quadrature over its depth, the cylinder's table
against Monte Carlo over its section, air against xraydb's table, solid angle and
polarization against pyFAI's own arrays; today's pixel table stays bit for bit what it was;
an isotropic scatterer stays flat after the corrections, and how far off each correction
alone leaves it."""
from __future__ import annotations

import numpy as np
import pytest

from hklflow.algorithms.transform.pixels import PixelFrames, pixel_table
from hklflow.model.corrections import PixelRays, SampleShape, corrections_for
from hklflow.model.corrections.absorption import (PlateAbsorption, cylinder_transmission,
                                                  plate_transmission)
from hklflow.model.corrections.attenuation import linear_attenuation
from hklflow.model.geometry import DetectorGeometry, Goniometer, ScanAngles, ScanGeometry
from hklflow.model.sensor import HC_KEV_ANGSTROM


def depth_quadrature(c_in, c_out, mu_t, points=400):
    """The plate's transmission by Gauss-Legendre over its depth z in [0, 1] (thickness 1)."""
    x, w = np.polynomial.legendre.leggauss(points)
    z = 0.5 * (x + 1.0)
    path_out = np.where(c_out > 0, (1.0 - z) / np.abs(c_out), z / np.abs(c_out))
    return 0.5 * np.sum(w * np.exp(-mu_t * (z / c_in + path_out)))


def test_the_plates_closed_form_is_its_depth_average():
    rng = np.random.default_rng(5)
    for mu_t in (0.05, 0.8, 3.0):
        for _ in range(200):
            c_in = rng.uniform(0.05, 1.0)
            c_out = rng.choice([-1, 1]) * rng.uniform(0.02, 1.0)
            got = float(plate_transmission(c_in, c_out, mu_t))
            assert got == pytest.approx(depth_quadrature(c_in, c_out, mu_t), rel=1e-9)
    # where the two cosines meet, and a ray along the plate's faces
    assert float(plate_transmission(0.5, 0.5, 0.8)) == pytest.approx(np.exp(-1.6), rel=1e-9)
    assert float(plate_transmission(0.5, 0.0, 0.8)) == 0.0


def test_the_cylinders_table_is_its_section_average():
    rng = np.random.default_rng(2)
    n = 400_000
    r, t = np.sqrt(rng.random(n)), rng.random(n) * 2 * np.pi
    px, py = r * np.cos(t), r * np.sin(t)
    for psi, tilt, mu_r in ((1.0, 1.0, 1.0), (2.5, 0.8, 0.5), (0.2, 0.6, 2.0)):
        l_in = px + np.sqrt(1 - py ** 2)
        p_out = px * np.cos(psi) + py * np.sin(psi)
        l_out = -p_out + np.sqrt(1 - (px ** 2 + py ** 2) + p_out ** 2)
        mc = np.exp(-mu_r * (l_in + l_out / tilt))
        got = float(cylinder_transmission(psi, tilt, 1.0, mu_r))
        assert abs(got - mc.mean()) < 4 * mc.std() / np.sqrt(n)


def test_air_is_xraydbs_dry_air():
    import xraydb

    lam = HC_KEV_ANGSTROM / 20.0
    mu = linear_attenuation("air", lam)
    assert mu == pytest.approx(100 * xraydb.material_mu("air", 20000.0), rel=1e-9)
    assert 0.05 < mu < 0.15  # 1/m: about 10 % lost over a metre at 20 keV
    g = DetectorGeometry("Pilatus100k", 0.3, 0.02, 0.04, 0.0, 0.0, 0.0, wavelength=lam)
    rays = PixelRays(g, np.array([0.5, 100.5]), np.array([0.5, 400.5]))
    air = corrections_for(g, solid_angle=False, polarization=False).pixel[0]
    assert air.name == "air"
    assert np.allclose(air.factor(rays), np.exp(-mu * np.linalg.norm(
        g.lab_positions(rays.rows, rays.cols), axis=-1)), rtol=1e-12)
    window = corrections_for(g, solid_angle=False, polarization=False, air_path=0.1).pixel[0]
    assert np.allclose(window.factor(rays), np.exp(-mu * 0.1 / rays.directions[:, 2]))
    none = corrections_for(g, air_path=0.0)
    assert "air" not in none.names and "vacuum" in none.left_out["air"]


@pytest.mark.parametrize("sensor", [None, {"material": "CdTe", "thickness": 1e-3}])
def test_todays_pixel_table_is_bit_for_bit_what_it_was(sensor):
    """The table made through the seam equals the one of before it (solid angle,
    polarization and efficiency divided out in that order, each rounded to float32)."""
    g = DetectorGeometry("Pilatus100k", 0.25, 0.02, 0.03, 0.01, -0.02, 0.0,
                         wavelength=HC_KEV_ANGSTROM / 60.0, sensor=sensor)
    excluded = g.detector_mask()
    table = pixel_table(g, excluded, polarization_fraction=0.97)
    rows, cols = (a.ravel() for a in g.pixel_grid())
    with np.errstate(divide="ignore"):
        corr = np.ones(rows.size)  # (float64, each factor rounded to float32 first)
        corr /= g.solid_angle(rows, cols).astype(np.float32)
        if sensor is None:
            corr /= g.polarization(rows, cols, 0.97).astype(np.float32)
            q = g.lab_q(rows, cols)
        else:
            q, pol, eff = g.looking(rows, cols, 0.97)
            corr /= pol.astype(np.float32)
            corr /= (eff / float(g.sensor.efficiency(1.0, g.wavelength))).astype(np.float32)
    usable = ~excluded.ravel()
    assert np.array_equal(table.corr_all[usable], corr[usable].astype(np.float32))
    assert np.array_equal(table.qx[usable], q[usable, 0].astype(np.float32))
    assert not table.corr_all[~usable].any()
    same = corrections_for(g, polarization_fraction=0.97, air=False, absorption=False,
                           efficiency_relative=True)
    assert np.array_equal(pixel_table(g, excluded, same).corr_all, table.corr_all)


def test_an_isotropic_scatterer_stays_flat_and_each_correction_matters():
    """Counts of a uniform scatterer as pyFAI's arrays (solid angle, polarization), the
    sensor's efficiency and air's transmission make them; the table's corrections make them
    flat; each one left out leaves the error printed (bench/README.md)."""
    lam = HC_KEV_ANGSTROM / 87.0
    g = DetectorGeometry("Pilatus1M", 0.35, 0.10, 0.09, 0.0, 0.0, 0.0, wavelength=lam,
                         sensor={"material": "CdTe", "thickness": 1e-3})
    ai = g.to_pyfai(parallax=False)
    solid = np.asarray(ai.solidAngleArray(absolute=False), float).ravel()
    rows, cols = (a.ravel() for a in g.pixel_grid())
    pos = g.lab_positions(rows, cols)
    tth = np.arccos(pos[:, 2] / np.linalg.norm(pos, axis=1))
    assert np.degrees(tth.max()) > 20
    pol = g.polarization(rows, cols, 0.99)
    eff = g.sensor.efficiency(g.dist / np.linalg.norm(pos, axis=1), lam)
    air = np.exp(-linear_attenuation("air", lam) * np.linalg.norm(pos, axis=1))
    counts = solid * pol * eff * air  # (photons reaching the detector: 1 per pixel-frame)
    excluded = g.detector_mask()
    usable = ~excluded.ravel()
    full = corrections_for(g, polarization_fraction=0.99)
    flat = (counts * pixel_table(g, excluded, full).corr_all)[usable]
    assert np.ptp(flat) < 1e-5 and abs(flat.mean() - 1) < 1e-5
    spread = {}
    for off in ("solid_angle", "polarization", "efficiency", "air"):
        c = corrections_for(g, polarization_fraction=0.99,
                            **{off: False})
        one = (counts * pixel_table(g, excluded, c).corr_all)[usable]
        spread[off] = float(np.ptp(one) / one.max())
    print("isotropic scatterer, 2theta up to %.1f deg: spread with each correction left out: %s"
          % (np.degrees(tth.max()), {k: round(v, 4) for k, v in spread.items()}))
    assert spread["solid_angle"] > 0.05 and spread["polarization"] > 0.05
    assert spread["efficiency"] > 0.01 and spread["air"] > 1e-4


def plate_scan(mu_t=0.8):
    lam = HC_KEV_ANGSTROM / 87.0
    g = DetectorGeometry("Pilatus100k", 0.2, 0.02, 0.04, 0.0, 0.0, 0.0, wavelength=lam)
    gonio = Goniometer((1.0, 0.0, 0.0), 1, ())
    scan = ScanGeometry(g, gonio, ScanAngles(0.0, 0.5, 720), UB=np.diag([0.2, 0.2, 0.1]))
    shape = SampleShape.of({"kind": "plate", "normal": [0, 0, 1], "thickness": 1e-4,
                            "mu": mu_t / 1e-4})
    return g, scan, shape


@pytest.mark.parametrize("mu_t", [1e-7, 0.01, 0.8, 3.0])
def test_the_plates_tables_are_its_closed_form_with_the_nodes_terms_made_once(mu_t):
    """PlateTables (frame_tables' source: no exponential per node and frame) is the closed
    form at every node and incident cosine, to 1e-9 where the transmission counts."""
    from hklflow.model.corrections.absorption import TABLE_POINTS, PlateTables

    c_in = np.linspace(0.02, 1.0, 97)
    got = PlateTables(mu_t).at(c_in)
    want = plate_transmission(c_in[:, None], np.linspace(-1, 1, TABLE_POINTS)[None, :], mu_t)
    assert np.all(np.isfinite(got))
    counts = want > 1e-12
    np.testing.assert_allclose(got[counts], want[counts], rtol=1e-9)
    assert np.max(np.abs(got - want)) < 1e-9


def test_a_ray_near_the_plates_plane_keeps_its_transmission():
    """Leaving through the back face nearly in the plate's plane: exp(-mu t / c) underflows
    and g overflows in the closed form's product; the difference form gives what is left,
    exp(-x) c / (mu t) to first order (it was 0)."""
    x = 0.8  # (c_in 1)
    got = plate_transmission(1.0, np.array([1e-3, 1e-4]), 0.8)
    np.testing.assert_allclose(got, np.exp(-x) * np.array([1e-3, 1e-4]) / 0.8, rtol=2e-3)


def test_the_plate_turns_with_the_crystal_and_its_frame_tables_are_the_closed_form():
    g, scan, shape = plate_scan()
    plate = PlateAbsorption(shape, g.wavelength, scan, 0.1)
    rays = PixelRays(g, *(a.ravel() for a in g.pixel_grid()))
    d = rays.directions
    # at phi = 0 the normal (c*) lies along the beam: the closed form with c_in = 1
    n0 = np.array([0.0, 0.0, 1.0])
    assert np.allclose(plate.factor(d, 0.0), plate_transmission(1.0, d @ n0, 0.8))
    # 90 degrees on (frame 180), edge-on: every ray left out
    assert not plate.factor(d, 180.0).any()
    # what the kernels look up: frame f's table at its centre, a ray's cosine from its Q
    frames = np.array([0, 100, 130, 140, 179])
    tables, normals, c_in = plate.frame_tables(frames)
    q = rays.q
    for f, table, n, c in zip(frames, tables, normals, c_in):
        assert c == pytest.approx(float(n @ n0)) and c >= 0
        cosine = g.wavelength * (q @ n) + c
        assert np.allclose(cosine, d @ n, atol=1e-12)
        looked_up = np.interp(cosine, np.linspace(-1, 1, table.size), table)
        want = plate.factor(d, f + 0.5)
        kept = want > 0
        assert kept.any() == (f != 179)
        np.testing.assert_allclose(looked_up[kept], want[kept], rtol=2e-5, atol=1e-6)


def test_a_shape_is_checked_and_mu_comes_from_its_formula():
    with pytest.raises(ValueError, match="normal"):
        SampleShape.of({"kind": "plate", "thickness": 1e-4, "mu": 10.0})
    with pytest.raises(ValueError, match="density"):
        SampleShape.of({"kind": "cylinder", "diameter": 1e-4, "formula": "GaAs"})
    with pytest.raises(ValueError, match="one of them"):
        SampleShape.of({"kind": "cylinder", "diameter": 1e-4})
    gaas = SampleShape.of({"kind": "cylinder", "diameter": 1e-4, "formula": "GaAs",
                           "density": 5.32})
    lam = HC_KEV_ANGSTROM / 87.0
    # GaAs at 87 keV: transmission 0.65 through 1 mm (the facts note's table)
    assert np.exp(-gaas.mu_at(lam) * 1e-3) == pytest.approx(0.65, abs=0.02)
    with pytest.raises(ValueError, match="xraydb"):
        SampleShape.of({"kind": "cylinder", "diameter": 1e-4, "formula": "Qq9",
                        "density": 1.0}).mu_at(lam)


@pytest.mark.parametrize("threads", [1, 2])
def test_the_kernels_plate_is_the_closed_form_at_each_frames_centre(threads):
    """The plate's factor evaluated in the transform's kernel (PixelFrames compiled: each
    pixel's cosine from its Q, looked up in the frame's table) against its numpy reference
    (the closed form at every pixel and frame's centre, a pixel table per frame): the same
    sums within float32, the same pixel-frames left out; face-on, nearing and near
    edge-on, one thread and two."""
    from hklflow.algorithms.transform import Transformer, frame_matrices
    from hklflow.model.grid import Axis, Grid

    g, scan, shape = plate_scan()
    plate = PlateAbsorption(shape, g.wavelength, scan, 0.1)
    table = pixel_table(g, g.detector_mask(), corrections_for(g, air=False))
    grid = Grid(Axis(-3, 0.05, 121), Axis(-3, 0.05, 121), Axis(-3, 0.05, 121))
    rng = np.random.default_rng(2)
    for first, stop in ((0, 6), (126, 132), (138, 144)):
        frames = rng.poisson(50, (stop - first,) + g.shape).astype(np.int32)
        M = frame_matrices(scan, first, stop, 1)
        numbers = np.arange(first, stop)
        fast = PixelFrames(table, plate, g.wavelength)
        slow = PixelFrames(table, plate, g.wavelength, compiled=False)
        kernel, reference = (Transformer(grid, table, 1e9, threads=threads),
                             Transformer(grid, table, 1e9))
        try:
            assert fast.parts(first, stop) == [(first, stop, None)]
            kernel.add(frames, M, np.ones(stop - first), frame_numbers=numbers,
                       pixel_frames=fast)
            for a, b, t in slow.parts(first, stop):
                reference.add(frames[a - first:b - first], M[a - first:b - first],
                              np.ones(b - a), frame_numbers=numbers[a - first:b - first],
                              pixels=t)
        finally:
            kernel.close()
            reference.close()
        s_k, w_k = kernel.acc.arrays()[:2]
        s_r, w_r = reference.acc.arrays()[:2]
        assert (slow.left_out > 0) == (first > 0)
        assert fast.left_out == pytest.approx(slow.left_out, rel=0.05, abs=50)
        assert np.count_nonzero(w_k != w_r) <= 1e-4 * np.count_nonzero(w_r)
        same = (w_k == w_r) & (w_r > 0)
        np.testing.assert_allclose(s_k[same], s_r[same], rtol=1e-4)
        assert s_k[w_k > 0].sum() == pytest.approx(s_r[w_r > 0].sum(), rel=1e-4)


def test_the_left_out_pixel_frames_are_counted_as_the_kernels_look_up(monkeypatch):
    """PixelFrames' count of left-out pixel-frames: on every pixel where the sample holds
    them all, the reference's count exactly; on a sample, within its sampling."""
    from hklflow.algorithms.transform import pixels

    g, scan, shape = plate_scan()
    plate = PlateAbsorption(shape, g.wavelength, scan, 0.1)
    table = pixel_table(g, g.detector_mask(), corrections_for(g, air=False))
    reference = PixelFrames(table, plate, g.wavelength, compiled=False)
    reference.parts(130, 140)
    assert reference.left_out_from == "every usable pixel at every frame"
    sampled = PixelFrames(table, plate, g.wavelength)
    sampled.kernel_plate(np.arange(130, 140))
    assert sampled.left_out_from.startswith("every 24th usable pixel")
    assert sampled.left_out == pytest.approx(reference.left_out, rel=0.02)
    monkeypatch.setattr(pixels, "LEFT_OUT_SAMPLE", len(table))
    whole = PixelFrames(table, plate, g.wavelength)
    whole.kernel_plate(np.arange(130, 140))
    assert whole.left_out_from == "every usable pixel at every frame"
    assert whole.left_out == reference.left_out > 0


def test_the_kernels_skip_a_pixel_whose_correction_is_0():
    """How a part's table leaves a pixel out (PixelFrames): its correction 0, its Q kept;
    in memory and from stored frames alike."""
    from dataclasses import replace

    from hklflow.algorithms.transform import Transformer, frame_matrices
    from hklflow.model.grid import Axis, Grid

    g, scan, _ = plate_scan()
    table = pixel_table(g, g.detector_mask(), corrections_for(g, air=False))
    grid = Grid(Axis(-3, 0.1, 61), Axis(-3, 0.1, 61), Axis(-3, 0.1, 61))
    frames = np.full((4,) + g.shape, 7, np.int32)
    M = frame_matrices(scan, 0, 4, 1)
    corr = table.corr_all.copy()
    corr[table.index[::2]] = 0.0
    half = replace(table, corr_all=corr)
    whole, part = (Transformer(grid, table, 1e9), Transformer(grid, half, 1e9))
    whole.add(frames, M, np.ones(4))
    part.add(frames, M, np.ones(4), pixels=half)
    added = [t.pixel_frames() for t in (whole, part)]
    assert added[1] < added[0] and added[1] == pytest.approx(added[0] / 2, rel=0.02)
    s, w = part.acc.arrays()[:2]
    assert np.allclose(s[w > 0] / w[w > 0], 7 * np.average(corr[corr > 0]), rtol=0.5)
