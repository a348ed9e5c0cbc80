"""hklflow.model.geometry against pyFAI (an independent implementation) and against identities.

pyFAI objects are built here directly from pyFAI (not through DetectorGeometry.to_pyfai),
so that the comparison does not go through the code under test.  pyFAI's per-pixel
calls ai.tth / ai.chi / ai.qFunction / ai.calc_pos_zyx take integer pixel indices
(d1 = row index, d2 = column index) and return float64; in hklflow's continuous pixel
coordinates the centre of pixel (i, j) is (i + 0.5, j + 0.5).

Detector orientations other than 3: DetectorGeometry takes a detector name and an
orientation (pyFAI's 1..4).  Real detectors are compared with pyFAI's
``detector_factory(name, config={"orientation": o})``; for non-square pixels and a
non-square array, the tests monkeypatch ``hklflow.model.geometry.pyfai_detector`` to return a
``pyFAI.detectors.Detector(pixel1, pixel2, max_shape, orientation=o)`` and compare with
pyFAI built on that same detector object.
"""
from __future__ import annotations

import math

import numpy as np
import pyFAI.detectors
import pytest
from pyFAI.integrator.azimuthal import AzimuthalIntegrator
from scipy.spatial.transform import Rotation

import hklflow.model.geometry as geometry
from hklflow.model.crystal import Crystal, UnitCell, random_rotation
from hklflow.model.geometry import (BEAM_DIRECTION, DetectorGeometry, Goniometer, ScanAngles,
                                    ScanGeometry, axis_rotation, directions_from_q, ewald_angles,
                                    hkl_from_q, lorentz_zeta, pyfai_tilt_matrix, q_from_directions,
                                    q_from_hkl)

TWO_PI = 2.0 * math.pi


def _wrap(a):
    """Angle difference mapped into [-pi, pi)."""
    return (np.asarray(a) + math.pi) % TWO_PI - math.pi


def _random_poni(rng, det, n, wavelength=(0.5, 1.6)):
    """n random PONI geometries (dist 0.1-1 m, PONI on the detector, three non-zero tilts)."""
    ny, nx = det.shape
    out = []
    for _ in range(n):
        tilts = rng.uniform(0.02, 0.2, 3) * rng.choice([-1.0, 1.0], 3)
        out.append(dict(dist=rng.uniform(0.1, 1.0), poni1=rng.uniform(0, ny * det.pixel1),
                        poni2=rng.uniform(0, nx * det.pixel2), rot1=tilts[0], rot2=tilts[1],
                        rot3=tilts[2], wavelength=rng.uniform(*wavelength)))
    return out


def _pyfai_ai(det, p):
    return AzimuthalIntegrator(dist=p["dist"], poni1=p["poni1"], poni2=p["poni2"],
                               rot1=p["rot1"], rot2=p["rot2"], rot3=p["rot3"], detector=det,
                               wavelength=p["wavelength"] * 1e-10)


def _index_grid(shape):
    ny, nx = shape
    return np.meshgrid(np.arange(ny, dtype=float), np.arange(nx, dtype=float), indexing="ij")


def _custom_detector(orientation):
    return pyFAI.detectors.Detector(pixel1=1.5e-4, pixel2=1.1e-4, max_shape=(300, 420),
                                    orientation=orientation)


@pytest.fixture
def custom_detector(monkeypatch):
    """Install a pyFAI detector with a given orientation under the name 'custom'."""
    def install(orientation):
        dets = {o: _custom_detector(o) for o in (1, 2, 3, 4)}
        assert int(dets[orientation].orientation) == orientation
        # the geometry must ask for its own orientation: a wrong one maps pixels elsewhere
        monkeypatch.setattr(geometry, "pyfai_detector",
                            lambda name, o=3: dets[o] if name == "custom" else pytest.fail(name))
        # its facts made from that detector (never from or into the cache of named detectors)
        monkeypatch.setattr(geometry, "detector_facts",
                            lambda name, o=3: geometry.DetectorFacts.from_pyfai(dets[o], name, o)
                            if name == "custom" else pytest.fail(name))
        return dets[orientation]
    return install


# --------------------------------------------------------------------------------------
# Detector: pixel -> lab, 2theta, chi against pyFAI on every pixel
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("name,n,seed", [("Pilatus300k", 8, 1), ("PilatusCdTe2M", 6, 2)])
def test_two_theta_chi_match_pyfai_on_every_pixel(name, n, seed):
    det = pyFAI.detectors.detector_factory(name)
    assert int(det.orientation) == 3
    d1, d2 = _index_grid(det.shape)
    for p in _random_poni(np.random.default_rng(seed), det, n):
        ai = _pyfai_ai(det, p)
        geo = DetectorGeometry(name, **p)
        tth, chi = geo.two_theta_chi(d1 + 0.5, d2 + 0.5)
        tth_ref, chi_ref = ai.tth(d1, d2), ai.chi(d1, d2)
        assert tth_ref.dtype == np.float64 and chi_ref.dtype == np.float64
        assert tth.shape == det.shape and chi.shape == det.shape
        assert np.abs(tth - tth_ref).max() < 1e-9, (p, np.abs(tth - tth_ref).max())
        assert np.abs(_wrap(chi - chi_ref)).max() < 1e-9, (p, np.abs(_wrap(chi - chi_ref)).max())
        # chi is pyFAI's atan2 convention, in (-pi, pi]
        assert chi.min() >= -math.pi and chi.max() <= math.pi


@pytest.mark.parametrize("name,n,seed", [("Pilatus300k", 6, 3), ("PilatusCdTe2M", 1, 4)])
def test_lab_positions_match_pyfai_calc_pos_zyx(name, n, seed):
    det = pyFAI.detectors.detector_factory(name)
    d1, d2 = _index_grid(det.shape)
    for p in _random_poni(np.random.default_rng(seed), det, n):
        t3, t1, t2 = _pyfai_ai(det, p).calc_pos_zyx(d1=d1, d2=d2)  # (z, y, x)
        pos = DetectorGeometry(name, **p).lab_positions(d1 + 0.5, d2 + 0.5)
        assert pos.shape == det.shape + (3,)
        np.testing.assert_allclose(pos, np.stack([t1, t2, t3], axis=-1), rtol=0, atol=1e-12)
        # pixel_directions is the same thing, normalised
        if name == "Pilatus300k":
            dirs = DetectorGeometry(name, **p).pixel_directions()
            np.testing.assert_allclose(dirs, pos / np.linalg.norm(pos, axis=-1, keepdims=True),
                                       rtol=0, atol=1e-15)


def test_tilt_matrix_is_pyfai_rotation_matrix():
    rng = np.random.default_rng(6)
    det = pyFAI.detectors.detector_factory("Pilatus300k")
    for p in _random_poni(rng, det, 5):
        ai = _pyfai_ai(det, p)
        M = pyfai_tilt_matrix(p["rot1"], p["rot2"], p["rot3"])
        np.testing.assert_allclose(M, ai.rotation_matrix(), rtol=0, atol=1e-15)
        np.testing.assert_allclose(DetectorGeometry("Pilatus300k", **p).tilt_matrix, M)
        np.testing.assert_allclose(M @ M.T, np.eye(3), atol=1e-15)
        assert np.linalg.det(M) == pytest.approx(1.0, abs=1e-14)


@pytest.mark.parametrize("orientation", [1, 2, 3, 4])
def test_other_detector_orientations_match_pyfai(custom_detector, orientation):
    det = custom_detector(orientation)
    d1, d2 = _index_grid(det.shape)
    rng = np.random.default_rng(10 + orientation)
    for p in _random_poni(rng, det, 3):
        ai = _pyfai_ai(det, p)
        geo = DetectorGeometry("custom", **p, orientation=orientation)
        assert geo.shape == (300, 420) and geo.pixel_size == (1.5e-4, 1.1e-4)
        tth, chi = geo.two_theta_chi(d1 + 0.5, d2 + 0.5)
        assert np.abs(tth - ai.tth(d1, d2)).max() < 1e-9
        assert np.abs(_wrap(chi - ai.chi(d1, d2))).max() < 1e-9
        t3, t1, t2 = ai.calc_pos_zyx(d1=d1, d2=d2)
        ref = np.stack([t1, t2, t3], axis=-1)
        np.testing.assert_allclose(geo.lab_positions(d1 + 0.5, d2 + 0.5), ref, rtol=0, atol=1e-12)
        # inverse: pyFAI's pixel-centre directions land on (i + 0.5, j + 0.5)
        rows, cols = geo.pixel_from_direction(ref / np.linalg.norm(ref, axis=-1, keepdims=True))
        assert np.abs(rows - (d1 + 0.5)).max() < 1e-8, np.abs(rows - (d1 + 0.5)).max()
        assert np.abs(cols - (d2 + 0.5)).max() < 1e-8, np.abs(cols - (d2 + 0.5)).max()


@pytest.mark.parametrize("orientation", [1, 2, 3, 4])
def test_pixel_corners_follow_pyfai(custom_detector, orientation):
    """Continuous coordinate (i, j) is the corner of pixel (i, j): pyFAI's corner positions
    (center=False), with its orientation handling, are the plane coordinates there."""
    det = custom_detector(orientation)
    ny, nx = det.shape
    geo = DetectorGeometry("custom", dist=0.2, poni1=0.02, poni2=0.03, orientation=orientation)
    r, c = np.meshgrid(np.arange(ny + 1, dtype=float), np.arange(nx + 1, dtype=float),
                       indexing="ij")
    p1, p2 = geo.plane_coordinates(r, c)
    q1, q2, _ = _custom_detector(orientation).calc_cartesian_positions(r, c, center=False)
    np.testing.assert_allclose(p1, q1, rtol=0, atol=1e-15)
    np.testing.assert_allclose(p2, q2, rtol=0, atol=1e-15)
    # the orientation really moves pixels: where continuous (0, 0) lies on the plane
    expected = {1: (ny * 1.5e-4, nx * 1.1e-4), 2: (ny * 1.5e-4, 0.0), 3: (0.0, 0.0),
                4: (0.0, nx * 1.1e-4)}[orientation]
    np.testing.assert_allclose([p1[0, 0], p2[0, 0]], expected, atol=1e-15)


@pytest.mark.parametrize("orientation", [1, 2, 3, 4])
def test_pixel_from_direction_roundtrip_continuous(custom_detector, orientation):
    custom_detector(orientation)
    rng = np.random.default_rng(20 + orientation)
    geo = DetectorGeometry("custom", dist=0.15, poni1=0.021, poni2=0.017, rot1=0.12,
                           rot2=-0.08, rot3=0.19, wavelength=0.8, orientation=orientation)
    rows = rng.uniform(-20, 320, 2000)  # also off the array: plane coordinates are linear
    cols = rng.uniform(-20, 440, 2000)
    pos = geo.lab_positions(rows, cols)
    r2, c2 = geo.pixel_from_direction(pos / np.linalg.norm(pos, axis=-1, keepdims=True))
    assert np.abs(r2 - rows).max() < 1e-8 and np.abs(c2 - cols).max() < 1e-8
    # scaled directions are fine, and rays pointing away from the detector give NaN
    r3, c3 = geo.pixel_from_direction(pos * 7.0)
    assert np.abs(r3 - rows).max() < 1e-8 and np.abs(c3 - cols).max() < 1e-8
    rn, cn = geo.pixel_from_direction(-pos)
    assert np.all(np.isnan(rn)) and np.all(np.isnan(cn))
    on = geo.on_detector(rows, cols)
    assert np.array_equal(on, (rows >= 0) & (rows < 300) & (cols >= 0) & (cols < 420))


def test_pixel_from_direction_real_detector_pyfai_centres():
    det = pyFAI.detectors.detector_factory("PilatusCdTe2M")
    rng = np.random.default_rng(7)
    for p in _random_poni(rng, det, 3):
        ai = _pyfai_ai(det, p)
        i = rng.integers(0, det.shape[0], 5000).astype(float)
        j = rng.integers(0, det.shape[1], 5000).astype(float)
        t3, t1, t2 = ai.calc_pos_zyx(d1=i, d2=j)
        rows, cols = DetectorGeometry("PilatusCdTe2M", **p).pixel_from_direction(
            np.stack([t1, t2, t3], axis=-1))
        assert np.abs(rows - (i + 0.5)).max() < 1e-8
        assert np.abs(cols - (j + 0.5)).max() < 1e-8


def test_max_two_theta_matches_pyfai_corners():
    det = pyFAI.detectors.detector_factory("Pilatus300k")
    for p in _random_poni(np.random.default_rng(8), det, 4):
        corners = _pyfai_ai(det, p).array_from_unit(typ="corner", unit="2th_rad")
        ref = float(corners[..., 0].max())  # float32 in pyFAI
        assert DetectorGeometry("Pilatus300k", **p).max_two_theta() == pytest.approx(ref, abs=2e-6)


def test_pyfai_boundary_roundtrip(tmp_path):
    det = pyFAI.detectors.detector_factory("Pilatus300k")
    p = _random_poni(np.random.default_rng(9), det, 1)[0]
    geo = DetectorGeometry("Pilatus300k", **p)
    ai = geo.to_pyfai()
    assert ai.wavelength == pytest.approx(p["wavelength"] * 1e-10, rel=1e-15)  # m in pyFAI
    for k in ("dist", "poni1", "poni2", "rot1", "rot2", "rot3"):
        assert getattr(ai, k) == p[k]
    assert DetectorGeometry.from_pyfai(ai, "Pilatus300k") == geo
    geo.write_poni(tmp_path / "g.poni")
    back = DetectorGeometry.from_poni_file(tmp_path / "g.poni", "Pilatus300k")
    for k, v in geo.as_dict().items():
        if k != "detector":
            assert getattr(back, k) == pytest.approx(v, rel=1e-12, abs=1e-15), k


@pytest.mark.parametrize("orientation", [1, 2, 4])
def test_registry_detector_orientation_matches_pyfai(orientation):
    """A real detector laid out with another orientation: pixel -> lab, 2theta, chi on every
    pixel against pyFAI's own detector of that orientation, and lab -> pixel back."""
    det = pyFAI.detectors.detector_factory("Pilatus300k", config={"orientation": orientation})
    assert int(det.orientation) == orientation
    d1, d2 = _index_grid(det.shape)
    for p in _random_poni(np.random.default_rng(30 + orientation), det, 2):
        ai = _pyfai_ai(det, p)
        geo = DetectorGeometry("Pilatus300k", **p, orientation=orientation)
        t3, t1, t2 = ai.calc_pos_zyx(d1=d1, d2=d2)
        ref = np.stack([t1, t2, t3], axis=-1)
        np.testing.assert_allclose(geo.lab_positions(d1 + 0.5, d2 + 0.5), ref, rtol=0, atol=1e-12)
        tth, chi = geo.two_theta_chi(d1 + 0.5, d2 + 0.5)
        assert np.abs(tth - ai.tth(d1, d2)).max() < 1e-9
        assert np.abs(_wrap(chi - ai.chi(d1, d2))).max() < 1e-9
        rows, cols = geo.pixel_from_direction(ref)
        assert np.abs(rows - (d1 + 0.5)).max() < 1e-8 and np.abs(cols - (d2 + 0.5)).max() < 1e-8
        # the integrator the geometry hands to pyFAI has the orientation too
        own = geo.to_pyfai()
        assert int(own.detector.orientation) == orientation
        assert np.abs(own.tth(d1, d2) - ai.tth(d1, d2)).max() < 1e-9
        # and the orientation matters: laid out as orientation 3, the pixels land elsewhere
        as_3 = DetectorGeometry("Pilatus300k", **p).lab_positions(d1 + 0.5, d2 + 0.5)
        assert np.abs(as_3 - ref).max() > 100 * det.pixel1


def test_orientation_is_validated():
    for bad in (0, 5, 2.5, True, "top", None):
        with pytest.raises(ValueError, match="orientation must be one of pyFAI's"):
            DetectorGeometry("Pilatus300k", 0.2, 0.05, 0.04, orientation=bad)
    assert DetectorGeometry("Pilatus300k", 0.2, 0.05, 0.04, orientation=np.int32(2)).orientation == 2


def test_orientation_in_poni_files(tmp_path):
    import pyFAI

    from hklflow.base.errors import InputMismatchError

    geo = DetectorGeometry("Pilatus300k", 0.2, 0.05, 0.04, 0.01, -0.02, 0.03, 0.7, orientation=2)
    path = tmp_path / "o2.poni"
    geo.write_poni(path)
    assert '"orientation": 2' in path.read_text()  # Detector_config
    assert int(pyFAI.load(str(path)).detector.orientation) == 2  # pyFAI reads it back
    back = DetectorGeometry.from_poni_file(path, "Pilatus300k")
    assert back.orientation == 2
    assert DetectorGeometry.from_poni_file(path, "Pilatus300k", 2) == back
    with pytest.raises(InputMismatchError, match=r"o2\.poni: PONI file has detector orientation 2, "
                                                 r"instrument\.detector\.orientation is 3"):
        DetectorGeometry.from_poni_file(path, "Pilatus300k", 3)
    # a PONI file of an older pyFAI records no orientation: pyFAI's default 3
    old = tmp_path / "old.poni"
    old.write_text("Detector: Pilatus300k\nDistance: 0.2\nPoni1: 0.05\nPoni2: 0.04\nRot1: 0\n"
                   "Rot2: 0\nRot3: 0\nWavelength: 7e-11\n")
    assert DetectorGeometry.from_poni_file(old, "Pilatus300k").orientation == 3


def test_orientation_in_the_nexus_detector_group(tmp_path):
    import h5py
    import nexusformat.nexus as nx

    from hklflow.base.errors import FileFormatError
    from hklflow.files.h5 import detector_group, read_detector_group

    geo = DetectorGeometry("Pilatus300k", 0.2, 0.05, 0.04, 0.01, -0.02, 0.03, 0.7, orientation=4)
    root = nx.NXroot()
    root["entry"] = nx.NXentry()
    root["entry/detector"] = detector_group(geo)
    root.save(str(tmp_path / "d.nxs"), "w")
    with h5py.File(tmp_path / "d.nxs", "a") as f:
        det = f["entry/detector"]
        assert det["orientation"][()] == 4 and det["orientation"].attrs["value"] == "BottomLeft"
        assert read_detector_group(det, 0.7, "d.nxs") == geo
        # NeXus beam centre: where the direct beam hits, in this orientation's array coordinates
        row, col = geo.direct_beam_pixel()
        assert det["beam_center_y"][()] == pytest.approx(row)
        assert det["beam_center_x"][()] == pytest.approx(col)
        del det["orientation"]  # a file written before hklflow recorded it
        assert read_detector_group(det, 0.7, "d.nxs").orientation == 3
        det["orientation"] = 7
        with pytest.raises(FileFormatError, match=r"d\.nxs: /entry/detector: detector orientation"):
            read_detector_group(det, 0.7, "d.nxs")


# --------------------------------------------------------------------------------------
# Q
# --------------------------------------------------------------------------------------
def test_q_modulus_matches_pyfai():
    det = pyFAI.detectors.detector_factory("Pilatus300k")
    d1, d2 = _index_grid(det.shape)
    for p in _random_poni(np.random.default_rng(12), det, 4):
        ai = _pyfai_ai(det, p)
        geo = DetectorGeometry("Pilatus300k", **p)
        pos = geo.lab_positions(d1 + 0.5, d2 + 0.5)
        dirs = pos / np.linalg.norm(pos, axis=-1, keepdims=True)
        Q = q_from_directions(dirs, geo.wavelength)
        qn = np.linalg.norm(Q, axis=-1)
        lam = geo.wavelength
        np.testing.assert_allclose(qn, 2 * np.sin(ai.tth(d1, d2) / 2) / lam, rtol=1e-12)
        # pyFAI q: nm^-1 with 2 pi
        np.testing.assert_allclose(TWO_PI * 10.0 * qn, ai.qFunction(d1, d2), rtol=1e-12)
        # Ewald sphere: |s0 + Q| = |s0| = 1/lambda, and back to the same directions
        np.testing.assert_allclose(np.linalg.norm(Q + BEAM_DIRECTION / lam, axis=-1), 1 / lam,
                                   rtol=1e-13)
        np.testing.assert_allclose(directions_from_q(Q, lam), dirs, rtol=0, atol=1e-14)


# --------------------------------------------------------------------------------------
# Rotations and goniometer
# --------------------------------------------------------------------------------------
def test_axis_rotation_is_right_handed():
    L1, L2, L3 = np.eye(3)
    np.testing.assert_allclose(np.cross(L3, L1), L2)  # the lab frame is right-handed
    np.testing.assert_allclose(axis_rotation(L3, math.pi / 2) @ L1, L2, atol=1e-15)
    np.testing.assert_allclose(axis_rotation(L1, math.pi / 2) @ L2, L3, atol=1e-15)
    rng = np.random.default_rng(13)
    for _ in range(20):
        e = rng.normal(size=3)
        e /= np.linalg.norm(e)
        v = rng.normal(size=3)
        v -= (v @ e) * e
        # +90 deg about e takes v to e x v (right hand rule)
        np.testing.assert_allclose(axis_rotation(e * 3.0, math.pi / 2) @ v, np.cross(e, v),
                                   atol=1e-14)
        ang = rng.uniform(-4, 4)
        np.testing.assert_allclose(axis_rotation(e, ang),
                                   Rotation.from_rotvec(e * ang).as_matrix(), atol=1e-14)
    angles = np.linspace(-3, 3, 7).reshape(7, 1)
    Rs = axis_rotation((0.0, 1.0, 1.0), angles)
    assert Rs.shape == (7, 1, 3, 3)
    np.testing.assert_allclose(Rs[3, 0], np.eye(3), atol=1e-15)
    np.testing.assert_allclose(Rs[5, 0], axis_rotation((0, 1, 1), angles[5, 0]))


def _gonio():
    return Goniometer(scan_axis=(0.1, 0.97, -0.2), scan_sense=-1,
                      offset_axes=(("kappa", (0.3, 0.2, 0.9)), ("omega", (0.0, 1.0, 0.0))))


def test_goniometer_rotates_vectors_as_its_matrices_do():
    """Goniometer.rotate (Rodrigues' formula on the vectors) is rotation(phi) v, and with
    inverse=True its transpose: scipy's rotations pin rotation() itself (next test)."""
    g = _gonio()
    rng = np.random.default_rng(5)
    v, phi = rng.normal(size=(50, 3)), rng.uniform(-400.0, 400.0, 50)
    offs = {"kappa": 23.0, "omega": -41.0}
    R = g.rotation(phi, offs)
    np.testing.assert_allclose(g.rotate(v, phi, offs), np.einsum("nij,nj->ni", R, v),
                               atol=1e-13)
    np.testing.assert_allclose(g.rotate(v, phi, offs, inverse=True),
                               np.einsum("nji,nj->ni", R, v), atol=1e-13)


def test_goniometer_composes_offsets_outermost_first():
    g = _gonio()
    e_s = np.array([0.1, 0.97, -0.2]) / np.linalg.norm([0.1, 0.97, -0.2])
    e1 = np.array([0.3, 0.2, 0.9]) / np.linalg.norm([0.3, 0.2, 0.9])
    e2 = np.array([0.0, 1.0, 0.0])
    offs = {"kappa": 23.0, "omega": -41.0}
    phi = 67.0
    R = g.rotation(phi, offs)
    ref = (Rotation.from_rotvec(e1 * math.radians(23.0))
           * Rotation.from_rotvec(e2 * math.radians(-41.0))
           * Rotation.from_rotvec(e_s * math.radians(-phi))).as_matrix()  # sense -1
    np.testing.assert_allclose(R, ref, atol=1e-14)
    # outermost first: the inner axes are carried by the outer ones (moving axes)
    R1 = axis_rotation(e1, math.radians(23.0))
    R2 = axis_rotation(R1 @ e2, math.radians(-41.0)) @ R1
    moving = axis_rotation(R2 @ e_s, math.radians(-phi)) @ R2
    np.testing.assert_allclose(R, moving, atol=1e-14)
    # not the other order
    wrong = axis_rotation(e2, math.radians(-41.0)) @ axis_rotation(e1, math.radians(23.0))
    assert not np.allclose(g.offset_rotation(offs), wrong, atol=1e-3)
    # arrays of phi, defaults, and unknown offsets
    phis = np.array([-10.0, 0.0, 33.0])
    Rs = g.rotation(phis, offs)
    assert Rs.shape == (3, 3, 3)
    for k in range(3):
        np.testing.assert_allclose(Rs[k], g.rotation(phis[k], offs), atol=1e-15)
    np.testing.assert_allclose(g.rotation(phi, {}), axis_rotation(e_s, -math.radians(phi)),
                               atol=1e-15)
    with pytest.raises(ValueError):
        g.rotation(phi, {"chi": 3.0})
    with pytest.raises(ValueError):
        Goniometer(scan_sense=0)
    with pytest.raises(ValueError):
        Goniometer(scan_axis=(0.0, 0.0, 0.0))


def test_scan_angles_frames():
    a = ScanAngles(start=-30.0, step=0.25, nframes=720)
    np.testing.assert_allclose(a.frame_centres()[[0, 1, -1]], [-29.875, -29.625, 149.875])
    z = np.array([0.0, 0.5, 17.3, 720.0])
    np.testing.assert_allclose(a.frame(a.angle(z)), z, atol=1e-12)
    assert a.end == 150.0


# --------------------------------------------------------------------------------------
# Pixel <-> HKL
# --------------------------------------------------------------------------------------
def _scan_setup():
    rng = np.random.default_rng(14)
    cell = UnitCell(6.3, 7.9, 9.4, 78.0, 96.0, 104.0)
    U = random_rotation(rng)
    UB = U @ cell.B
    det = DetectorGeometry("Pilatus300k", dist=0.12, poni1=0.05, poni2=0.045, rot1=0.07,
                           rot2=-0.11, rot3=0.15, wavelength=0.71)
    scan = ScanGeometry(det, _gonio(), ScanAngles(start=-50.0, step=0.2, nframes=1800),
                        offsets={"kappa": 17.0, "omega": -8.0}, UB=UB)
    return rng, cell, UB, scan


def test_pixel_hkl_pixel_roundtrip():
    rng, cell, UB, scan = _scan_setup()
    ny, nx = scan.detector.shape
    n = 300
    rows = rng.uniform(0, ny, n)
    cols = rng.uniform(0, nx, n)
    z = rng.uniform(0, scan.angles.nframes, n)
    hkl = scan.hkl_at(rows, cols, z)
    assert hkl.shape == (n, 3)
    lam = scan.detector.wavelength
    back_r, back_c = np.empty(n), np.empty(n)
    for i in range(n):
        R = scan.goniometer.rotation(scan.angles.angle(z[i]), scan.offsets)
        np.testing.assert_allclose(R, scan.sample_rotation(z[i]), atol=0)
        q = q_from_hkl(hkl[i], UB, R)
        np.testing.assert_allclose(hkl_from_q(q, UB, R), hkl[i], atol=1e-10)
        back_r[i], back_c[i] = scan.detector.pixel_from_direction(directions_from_q(q, lam))
    assert np.abs(back_r - rows).max() < 1e-6 and np.abs(back_c - cols).max() < 1e-6
    # hkl_at broadcasts: one frame for many pixels equals the pixel-by-pixel answer
    h1 = scan.hkl_at(rows[:10], cols[:10], 3.5)
    h2 = np.array([scan.hkl_at(rows[i], cols[i], 3.5) for i in range(10)])
    np.testing.assert_allclose(h1, h2, atol=1e-12)
    # and |B h| = |Q| = 2 sin(theta)/lambda at that pixel
    tth, _ = scan.detector.two_theta_chi(rows, cols)
    np.testing.assert_allclose(np.linalg.norm(hkl @ cell.B.T, axis=1),
                               2 * np.sin(tth / 2) / lam, rtol=1e-12)


def test_predict_lands_on_the_predicted_hkl():
    rng, cell, UB, scan = _scan_setup()
    hkl = Crystal("P -1", cell).reflections_within(1.2)
    n = len(hkl)
    assert n > 500
    hh, rows, cols, z, phi = scan.predict(hkl)
    assert hh.shape == (2 * n, 3) and rows.shape == cols.shape == z.shape == phi.shape == (2 * n,)
    np.testing.assert_array_equal(hh[:n], hkl)
    np.testing.assert_array_equal(hh[n:], hkl)
    on = np.isfinite(rows) & scan.detector.on_detector(np.nan_to_num(rows, nan=-1.0),
                                                        np.nan_to_num(cols, nan=-1.0))
    assert on.sum() > 100, on.sum()
    got = scan.hkl_at(rows[on], cols[on], z[on])
    err = np.abs(got - hh[on]).max()
    assert err < 1e-6, err
    # z and phi agree, and phi lies in the scan's turn
    np.testing.assert_allclose(scan.angles.angle(z[np.isfinite(phi)]), phi[np.isfinite(phi)],
                               atol=1e-9)
    lo = scan.angles.start
    assert np.all((phi[np.isfinite(phi)] >= lo) & (phi[np.isfinite(phi)] < lo + 360.0))
    # both Ewald solutions exist together, are distinct, and satisfy the Ewald condition
    a, b = phi[:n], phi[n:]
    both = np.isfinite(a) & np.isfinite(b)
    assert np.array_equal(np.isfinite(a), np.isfinite(b))
    assert both.sum() > 0.8 * n
    sep = np.abs(_wrap(np.radians(a[both] - b[both])))
    assert sep.min() > 1e-6, sep.min()
    lam = scan.detector.wavelength
    for ang in (a, b):
        R = scan.goniometer.rotation(ang[both], scan.offsets)
        Q = np.einsum("nij,nj->ni", R, hkl[both] @ UB.T)
        np.testing.assert_allclose(np.linalg.norm(Q + BEAM_DIRECTION / lam, axis=1), 1 / lam,
                                   rtol=1e-12)


def test_ewald_angles_are_all_the_solutions():
    """Brute force over a full turn: the Ewald condition changes sign exactly at the two
    angles ewald_angles returns (and nowhere for unreachable reflections)."""
    rng, cell, UB, scan = _scan_setup()
    hkl = Crystal("P -1", cell).reflections_within(1.0)
    hkl = hkl[rng.choice(len(hkl), 60, replace=False)]
    hkl = np.vstack([hkl, [[40, 0, 0]]])  # |Q| > 2/lambda: never in diffraction
    g, lam = scan.goniometer, scan.detector.wavelength
    pa, pb = ewald_angles(hkl, UB, g, scan.offsets, lam)
    grid = np.linspace(-180.0, 180.0, 36001)
    R = g.rotation(grid, scan.offsets)  # (m, 3, 3)
    for k, h in enumerate(hkl):
        Q = R @ (UB @ h)
        f = np.linalg.norm(Q + BEAM_DIRECTION / lam, axis=1) - 1 / lam
        crossings = grid[:-1][np.sign(f[:-1]) != np.sign(f[1:])]
        if not np.isfinite(pa[k]):
            assert len(crossings) == 0 and not np.isfinite(pb[k]), (h, crossings)
            continue
        assert len(crossings) == 2, (h, crossings)
        found = sorted([pa[k], pb[k]])
        assert np.abs(_wrap(np.radians(np.array(found) - crossings))).max() < math.radians(0.011)
    assert not np.isfinite(pa[-1]) and not np.isfinite(pb[-1])


def test_lorentz_zeta_equatorial_is_one():
    """For the scan axis normal to the scattering plane |zeta| = 1; for Q along the axis
    projection it vanishes."""
    lam = 1.0
    axis = np.array([1.0, 0.0, 0.0])  # L1; scattering in the (L2, L3) plane
    tth = np.radians([5.0, 30.0, 80.0])
    dirs = np.stack([np.zeros(3), np.sin(tth), np.cos(tth)], axis=1)
    np.testing.assert_allclose(np.abs(lorentz_zeta(q_from_directions(dirs, lam), lam, axis)), 1.0,
                               atol=1e-14)
    dirs = np.stack([np.sin(tth), np.zeros(3), np.cos(tth)], axis=1)  # plane contains axis
    np.testing.assert_allclose(lorentz_zeta(q_from_directions(dirs, lam), lam, axis), 0.0,
                               atol=1e-14)


def test_pyfai_tables_agree_with_pyfai():
    """The detector shapes and calibrant names the Snakefile uses without importing pyFAI."""
    import pyFAI.detectors
    from pyFAI.calibrant import CALIBRANT_FACTORY

    from hklflow.model.geometry import detector_shape, known_calibrants, pyfai_tables

    table = pyfai_tables()
    assert len(table["shapes"]) > 100
    for name, shape in table["shapes"].items():
        assert tuple(pyFAI.detectors.ALL_DETECTORS[name]().shape) == tuple(shape), name
    assert set(table["calibrants"]) <= set(CALIBRANT_FACTORY.all)
    assert detector_shape("PilatusCdTe2M") == (1679, 1475)
    assert "CeO2" in known_calibrants() and "LaB6" in known_calibrants("LaB6")
    with pytest.raises(ValueError, match="unknown pyFAI detector"):
        detector_shape("NoSuchDetector9000")


# --------------------------------------------------------------------------------------
# Detector facts: pyFAI's detector answers, kept in a cache file
# --------------------------------------------------------------------------------------
@pytest.fixture
def facts_cache(tmp_path, monkeypatch):
    """An empty cache folder for the detector facts, and no facts kept in this process."""
    monkeypatch.setenv(geometry.DETECTOR_CACHE_ENV, str(tmp_path))
    geometry._named_detector_facts.cache_clear()
    yield tmp_path
    geometry._named_detector_facts.cache_clear()


@pytest.mark.parametrize("name", ["Pilatus300k", "PilatusCdTe2M", "Eiger2 4M"])
@pytest.mark.parametrize("orientation", [1, 2, 3, 4])
def test_detector_facts_are_pyfai_s_made_and_read_back(facts_cache, name, orientation):
    det = pyFAI.detectors.detector_factory(name, config={"orientation": orientation})
    made = geometry.detector_facts(name, orientation)
    assert len(list(facts_cache.iterdir())) == 1  # written once
    geometry._named_detector_facts.cache_clear()
    read = geometry.detector_facts(name, orientation)  # from the file
    rng = np.random.default_rng(orientation)
    rows = rng.uniform(-3, det.shape[0] + 3, 5000)  # continuous, beyond the edges too
    cols = rng.uniform(-3, det.shape[1] + 3, 5000)
    r1, r2, _ = det.calc_cartesian_positions(rows - 0.5, cols - 0.5, center=True, use_cython=False)
    for f in (made, read):
        assert f.regular and f.shape == det.shape
        assert (f.pixel1, f.pixel2) == (det.pixel1, det.pixel2)
        assert np.array_equal(f.mask, np.asarray(det.mask, bool))
        p1, p2 = f.plane_positions(rows, cols)
        assert np.abs(p1 - r1).max() < 1e-12 and np.abs(p2 - r2).max() < 1e-12
    g = DetectorGeometry(name, dist=0.3, poni1=0.05, poni2=0.04, orientation=orientation)
    p1, p2 = g.plane_coordinates(rows, cols)
    assert np.abs(p1 - r1).max() < 1e-12 and np.abs(p2 - r2).max() < 1e-12
    assert np.array_equal(g.detector_mask(), np.asarray(det.mask, bool))


def test_detector_with_pixel_corners_keeps_pyfai_positions(facts_cache):
    """A detector whose pixels are not a regular grid (Xpad S540 flat: modules at offsets)
    gets its positions from pyFAI every time, and no pixel <- lab mapping."""
    name = "Xpad S540 flat"
    det = pyFAI.detectors.detector_factory(name)
    facts = geometry.detector_facts(name, 3)
    assert not facts.regular
    g = DetectorGeometry(name, dist=0.3, poni1=0.05, poni2=0.04)
    rows, cols = np.array([[10.5, 500.5]]), np.array([[20.5, 300.5]])  # pyFAI wants 2D here
    r1, r2, _ = det.calc_cartesian_positions(rows - 0.5, cols - 0.5, center=True, use_cython=False)
    p1, p2 = g.plane_coordinates(rows, cols)
    assert np.allclose(p1, r1, rtol=0, atol=1e-12) and np.allclose(p2, r2, rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="regular flat pixel grids"):
        g.pixel_from_direction(np.array([0.1, 0.1, 1.0]))


def test_a_damaged_facts_file_is_made_again(facts_cache):
    name = "Pilatus300k"
    geometry.detector_facts(name, 3)
    (path,) = facts_cache.iterdir()
    path.write_bytes(b"not an npz file")
    geometry._named_detector_facts.cache_clear()
    facts = geometry.detector_facts(name, 3)
    det = pyFAI.detectors.detector_factory(name)
    assert facts.regular and np.array_equal(facts.mask, np.asarray(det.mask, bool))
    assert path.read_bytes()[:2] == b"PK"  # rewritten (an npz is a zip)


def test_an_unwritable_cache_still_gives_the_facts(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache folder would be")
    monkeypatch.setenv(geometry.DETECTOR_CACHE_ENV, str(blocker / "cache"))
    geometry._named_detector_facts.cache_clear()
    try:
        facts = geometry.detector_facts("Pilatus300k", 3)
    finally:
        geometry._named_detector_facts.cache_clear()
    assert facts.regular and facts.shape == (619, 487)


def test_steps_read_the_facts_without_importing_pyfai(facts_cache):
    """The point of the cache: with the facts made, a new process gets the detector's
    mask, pixel sizes and pixel positions without importing pyFAI's detectors (~1.5 s)."""
    import subprocess
    import sys

    code = ("import sys; from hklflow.model.geometry import DetectorGeometry; "
            "g = DetectorGeometry('PilatusCdTe2M', dist=0.3, poni1=0.1, poni2=0.1); "
            "m = g.detector_mask(); q = g.lab_q(10.5, 20.5); s = g.pixel_size; "
            "print(int(m.sum()), 'pyFAI.detectors' in sys.modules)")
    runs = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           timeout=300) for _ in range(2)]
    for r in runs:
        assert r.returncode == 0, r.stderr
    assert runs[0].stdout.split() == ["211405", "True"]  # made from pyFAI
    assert runs[1].stdout.split() == ["211405", "False"]  # read from the cache


def test_transform_set_up_without_importing_pyfai(facts_cache, tmp_path):
    """ingest_scan, define_grid and transform_frames read the calibration's PONI and make
    the pixel table (Q, solid angle, polarization) without importing pyFAI at all."""
    import subprocess
    import sys

    poni = tmp_path / "g.poni"
    DetectorGeometry("Pilatus300k", dist=0.2, poni1=0.03, poni2=0.04, rot1=0.02,
                     wavelength=0.7).write_poni(poni)
    geometry.detector_facts("Pilatus300k", 3)  # made here, read in the new process
    code = ("import sys; from hklflow.model.geometry import DetectorGeometry; "
            "from hklflow.algorithms.transform import pixel_table; "
            f"g = DetectorGeometry.from_poni_file({str(poni)!r}, 'Pilatus300k', 3); "
            "t = pixel_table(g, g.detector_mask()); "
            "print(len(t), g.dist, any(m.startswith('pyFAI') for m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == [str(619 * 487 - int(
        geometry.detector_facts("Pilatus300k", 3).mask.sum())), "0.2", "False"]


@pytest.mark.parametrize("detector, orientation", [("Pilatus300k", 3), ("Eiger1M", 1),
                                                   ("PilatusCdTe2M", 2), ("Pilatus100k", 4)])
def test_written_poni_reads_as_pyfai_reads_it(tmp_path, detector, orientation):
    """A PONI that pyFAI's PoniFile wrote is read without pyFAI, to the same geometry
    (every float equal) as pyFAI.load gives."""
    import pyFAI

    g = DetectorGeometry(detector, dist=0.2345678912345, poni1=0.0312345678, poni2=-0.0123456789,
                         rot1=0.0123456789, rot2=-0.0234567891, rot3=1.2345678912,
                         wavelength=0.7123456789, orientation=orientation)
    path = tmp_path / "g.poni"
    g.write_poni(path)
    assert geometry._written_poni(path) is not None  # the fast path is taken
    fast = DetectorGeometry.from_poni_file(path, detector, orientation)
    ref = DetectorGeometry.from_pyfai(pyFAI.load(str(path)), detector)
    assert fast == ref
    np.testing.assert_allclose([fast.dist, fast.rot3, fast.wavelength],
                               [g.dist, g.rot3, g.wavelength], rtol=1e-12)


def test_other_ponis_are_read_by_pyfai(tmp_path):
    """PONI files not in PoniFile's own form (version 1, repeated entries, a spline, no
    wavelength) go to pyFAI.load, which reads them (or refuses them) as before."""
    v1 = tmp_path / "v1.poni"
    v1.write_text("PixelSize1: 0.000172\nPixelSize2: 0.000172\nDistance: 0.25\nPoni1: 0.02\n"
                  "Poni2: 0.03\nRot1: 0.01\nRot2: 0\nRot3: 0\nWavelength: 7e-11\n")
    assert geometry._written_poni(v1) is None
    g = DetectorGeometry.from_poni_file(v1, "Pilatus300k")
    assert (g.dist, g.poni1, g.poni2, g.rot1) == (0.25, 0.02, 0.03, 0.01)
    assert g.wavelength == pytest.approx(0.7, rel=1e-12) and g.orientation == 3
    DetectorGeometry("Pilatus300k", 0.2, 0.01, 0.02, wavelength=0.6).write_poni(tmp_path / "a.poni")
    text = (tmp_path / "a.poni").read_text()
    twice = tmp_path / "twice.poni"
    twice.write_text(text + text.replace("Distance: 0.2", "Distance: 0.3"))
    assert geometry._written_poni(twice) is None
    assert DetectorGeometry.from_poni_file(twice, "Pilatus300k").dist == pytest.approx(0.3)
    spline = tmp_path / "spline.poni"
    spline.write_text(text.replace('{"pixel1"', '{"splineFile": "x.spline", "pixel1"'))
    assert geometry._written_poni(spline) is None
    no_wl = tmp_path / "nowl.poni"
    no_wl.write_text("\n".join(ln for ln in text.splitlines() if not ln.startswith("Wavelength")))
    assert geometry._written_poni(no_wl) is None
    with pytest.raises(geometry.FileFormatError, match="no Wavelength"):
        DetectorGeometry.from_poni_file(no_wl, "Pilatus300k")
