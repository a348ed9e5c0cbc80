"""Where a voxel crosses the Ewald sphere (hklflow.algorithms.scaling.crossings), against the
geometry's own mapping of pixels and frames to (h, k, l) (model.geometry.ScanGeometry), and
the compiled forms of the crossings and the scales against their numpy references."""
from __future__ import annotations

import numpy as np
import pytest

from hklflow.algorithms.scaling.apply import BLOCK_VOXELS, EntryScaler
from hklflow.algorithms.scaling.crossings import crossings
from hklflow.model.geometry import BEAM_DIRECTION, Goniometer, ScanAngles, ScanGeometry
from hklflow.model.scales import EntryScale, ScaleModel
from hklflow.model.sensor import Sensor

from experiment_helpers import TRUE_300K


def _scan():
    """A tilted Pilatus 300k, a goniometer with offsets, 180 deg of a monoclinic-ish UB."""
    gonio = Goniometer((0.0, 1.0, 0.0), -1, (("omega", (1.0, 0.0, 0.0)),
                                             ("chi", (0.0, 0.0, 1.0))))
    UB = np.array([[0.21, 0.02, 0.0], [0.0, 0.19, 0.03], [0.01, 0.0, 0.13]])
    return ScanGeometry(TRUE_300K, gonio, ScanAngles(-40.0, 0.5, 360),
                        {"omega": -1.5, "chi": 2.0}, UB)


def test_each_crossing_maps_back_onto_its_voxel():
    """At each crossing's pixel and frame the geometry gives back the voxel's hkl, and the
    incident and scattered directions turned back into the lab are the beam and the
    pixel's direction."""
    scan = _scan()
    hkl = np.random.default_rng(0).uniform(-3, 3, (4000, 3))
    c = crossings(scan, None, hkl)
    ok = c.share > 0
    assert ok.any(axis=0).mean() > 0.2
    for k in range(2):
        sel = ok[k]
        z = scan.angles.frame(c.phi[k, sel])
        back = scan.hkl_at(c.rows[k, sel], c.cols[k, sel], z)
        assert np.abs(back - hkl[sel]).max() < 1e-6
        R = scan.goniometer.rotation(c.phi[k, sel], scan.offsets)
        assert np.abs(np.einsum("nij,nj->ni", R, c.incident[k, sel]) - BEAM_DIRECTION).max() \
            < 1e-12
        lab = np.einsum("nij,nj->ni", R, c.scattered[k, sel])
        pos = scan.detector.lab_positions(c.rows[k, sel], c.cols[k, sel])
        assert np.abs(lab - pos / np.linalg.norm(pos, axis=1, keepdims=True)).max() < 1e-9


def test_shares_go_as_the_inverse_solid_angle_and_leave_out_masked_pixels():
    scan = _scan()
    hkl = np.random.default_rng(1).uniform(-3, 3, (4000, 3))
    c = crossings(scan, None, hkl)
    both = (c.share > 0).all(axis=0)
    omega = scan.detector.solid_angle(c.rows[:, both], c.cols[:, both])
    assert np.allclose(c.share[0, both] / c.share[1, both], omega[1] / omega[0])
    assert np.allclose(c.share.sum(axis=0)[c.measured], 1.0)
    mask = np.zeros(scan.detector.shape, bool)
    mask[:, : scan.detector.shape[1] // 2] = True  # half the detector masked
    m = crossings(scan, mask, hkl)
    on_masked = (c.share > 0) & (c.cols < scan.detector.shape[1] // 2)
    # a voxel with a crossing on a used pixel takes nothing from the masked one
    assert (on_masked & m.exact[None, :]).any()
    assert not (m.share[on_masked & m.exact[None, :]] > 0).any()
    # one whose crossings are all masked (a corner of it measured) takes those within the
    # frames wherever they land
    lost = ~m.exact & c.exact
    assert lost.any() and np.allclose(m.share[:, lost].sum(axis=0), 1.0)


@pytest.mark.parametrize("sense, start, sensor", [(-1, -40.0, False), (1, 170.0, True)])
def test_the_compiled_crossings_are_the_geometrys_own(sense, start, sensor):
    """The compiled Ewald crossings and sample-frame directions give what ScanGeometry.predict
    and the goniometer's rotations give (their numpy reference), on a tilted detector with a
    thick sensor's parallax, either scan sense, a turn that wraps through 180 deg, a mask."""
    scan = _scan()
    gonio = Goniometer((0.0, 1.0, 0.0), sense, scan.goniometer.offset_axes)
    det = scan.detector.with_sensor(Sensor("CdTe", 1e-3)) if sensor else scan.detector
    scan = ScanGeometry(det, gonio, ScanAngles(start, 0.5, 400), scan.offsets, scan.UB)
    hkl = np.random.default_rng(3).uniform(-3, 3, (5000, 3))
    mask = np.zeros(det.shape, bool)
    mask[100:140] = True
    ref = crossings(scan, mask, hkl, compiled=False)
    fast = crossings(scan, mask, hkl, compiled=True)
    assert ref.measured.mean() > 0.2
    np.testing.assert_array_equal(fast.exact, ref.exact)
    np.testing.assert_array_equal(fast.share > 0, ref.share > 0)
    for field, tol in (("phi", 1e-9), ("share", 1e-12), ("rows", 1e-8), ("cols", 1e-8),
                       ("incident", 1e-12), ("scattered", 1e-12)):
        np.testing.assert_allclose(getattr(fast, field), getattr(ref, field), rtol=0,
                                   atol=tol, err_msg=field)


def test_the_compiled_absorption_is_the_models_own():
    """The scales of an entry with every term, from the compiled absorption and in blocks,
    equal the model's numpy form on the voxels' crossings at once."""
    scan = _scan()
    rng = np.random.default_rng(4)
    lmax = 5
    entry = EntryScale("f1", np.arange(-40.0, 141.0, 15.0), rng.uniform(0.8, 1.2, 13),
                       rng.normal(0, 0.1, (lmax + 1) ** 2 - 1), np.linspace(0.1, 1.5, 4),
                       rng.normal(0, 0.5, 4))
    model = ScaleModel({"f1": entry}, lmax, rng.uniform(0.9, 1.1, (3, 3)),
                       scan.detector.shape)
    hkl = rng.uniform(-3, 3, (3 * BLOCK_VOXELS + 17, 3))
    m, o = EntryScaler(model, "f1", scan, None).factors(hkl)
    c = crossings(scan, None, hkl, compiled=False)
    q = np.linalg.norm(hkl @ np.asarray(scan.UB).T, axis=1)
    np.testing.assert_allclose(m, model.multiplier("f1", c), rtol=1e-12)
    np.testing.assert_allclose(o, np.where(c.measured, model.offset("f1", q), 0.0), rtol=1e-12)
    assert np.ptp(m[c.measured]) > 0.2  # the terms do vary
