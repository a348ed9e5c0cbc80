"""hklflow.model.nxrefine: hklflow's geometry in NXRefine's parameters, without NXRefine:
its goniometer angles reproduce every sample rotation (any scan axis, sense and offsets:
what lets NXRefine's UB be hklflow's), and every space group has one of NXRefine's Laue
groups.  NXRefine itself reading them: tests/steps/test_nxrefine_wrapper.py."""
from __future__ import annotations

import numpy as np
import pytest

from hklflow.model.geometry import Goniometer, ScanAngles, ScanGeometry
from hklflow.model.nxrefine import LAUE_GROUPS, T_NX, goniometer_parameters, laue_group, rotmat


@pytest.mark.parametrize("axis,sense", [((0, 1, 0), 1), ((0, 1, 0), -1), ((0, -1, 0), 1),
                                        ((1, 0, 0), 1), ((0.1, 0.9, -0.3), -1),
                                        ((0, 0, 1), 1)])
def test_goniometer_parameters_reproduce_every_sample_rotation(axis, sense):
    """NXRefine's Gmat(phi_start + phi_step z) P^T T equals T R_off R_scan(phi(z)) for any
    scan axis, sense and offsets: what lets its UBmat be hklflow's UB."""
    gon = Goniometer(axis, sense, (("omega", (1.0, 0.0, 0.0)), ("chi", (0.0, 0.0, 1.0)),
                                   ("kappa", (0.3, 0.5, 0.8))))
    offsets = {"omega": -7.5, "chi": 12.0, "kappa": 3.25}
    scan = ScanGeometry(None, gon, ScanAngles(-20.0, 0.7, 100), offsets)
    p, P = goniometer_parameters(scan)
    assert np.allclose(P.T @ P, np.eye(3)) and np.linalg.det(P) > 0
    for z in (0.0, 17.25, 99.5):
        ours = T_NX @ gon.rotation(scan.angles.angle(z), offsets)
        nx = (rotmat(2, p["theta"]) @ rotmat(3, p["omega"]) @ rotmat(1, p["chi"])
              @ rotmat(3, p["phi"] + p["phi_step"] * z)) @ P.T @ T_NX
        assert np.allclose(ours, nx, atol=1e-12), z


def test_every_space_group_has_one_of_nxrefines_laue_groups():
    import gemmi

    names = {laue_group(sg.xhm()) for sg in gemmi.spacegroup_table()}
    assert names == set(LAUE_GROUPS)
    assert laue_group("P 63/m m c") == "6/mmm" and laue_group("C 1 2/c 1") == "2/m"
    assert laue_group("R -3 m:H") == "-3m" and laue_group("F d -3 m") == "m-3m"


# ---- NXRefine's parameters back to hklflow (hklflow import nxrefine) ----------------------
@pytest.mark.parametrize("orientation", [1, 2, 3, 4])
@pytest.mark.parametrize("rots", [(0.0, 0.0, 0.0), (0.012, -0.03, 0.2), (-0.4, 0.25, -2.9)])
def test_nxrefines_detector_parameters_give_back_every_pixels_place(orientation, rots):
    """hklflow -> NXRefine's distance, beam centre, yaw/pitch/roll, orientation string ->
    hklflow again: every pixel where it was (the orientation found may be the other one of
    the same handedness, with tilts that place each pixel alike)."""
    from hklflow.model.geometry import DetectorGeometry
    from hklflow.model.nxrefine import detector_geometry, detector_lab_map, detector_parameters

    g = DetectorGeometry("Pilatus300k", 0.25, 0.031, 0.047, *rots, wavelength=0.2,
                         orientation=orientation)
    p = detector_parameters(g)
    back = detector_geometry(detector_lab_map(p["distance"], p["xc"], p["yc"], p["yaw"],
                                              p["pitch"], p["roll"], p["detector_orientation"],
                                              p["pixel_size"]),
                             "Pilatus300k", 0.2, g.detector_facts())
    rows, cols = np.meshgrid([0.0, 0.5, 311.25, 619.0], [0.0, 2.5, 400.75, 487.0], indexing="ij")
    assert np.abs(back.lab_positions(rows, cols) - g.lab_positions(rows, cols)).max() < 1e-12
    assert max(abs(r) for r in (back.rot1, back.rot2, back.rot3)) <= max(abs(r) for r in rots) + 1e-12
    assert back.orientation in ((1, 3) if orientation in (1, 3) else (2, 4))


def test_a_translated_entry_is_a_translation_of_the_reference():
    """An entry whose detector moved (NXRefine: its own distance and beam centre) is the
    reference shifted by det_ddist/dponi1/dponi2, pixel for pixel, and its tilt difference
    is zero; a tilted one says by how much."""
    from hklflow.model.geometry import DetectorGeometry
    from hklflow.model.nxrefine import (detector_lab_map, detector_parameters, tilt_difference,
                                        translation)

    ref = DetectorGeometry("Pilatus300k", 0.25, 0.031, 0.047, 0.01, -0.02, 0.03, wavelength=0.2)
    facts = ref.detector_facts()

    def lab_map(g):
        p = detector_parameters(g)
        return detector_lab_map(p["distance"], p["xc"], p["yc"], p["yaw"], p["pitch"], p["roll"],
                                p["detector_orientation"], p["pixel_size"])

    moved = ref.shifted(0.02, -0.0017, 0.0034)
    d = translation(ref, lab_map(moved), facts)
    assert np.allclose(d, (0.02, -0.0017, 0.0034), atol=1e-12)
    assert tilt_difference(ref, lab_map(moved), facts) < 1e-6
    tilted = DetectorGeometry("Pilatus300k", 0.25, 0.031, 0.047, 0.01, -0.02, 0.04, wavelength=0.2)
    assert abs(tilt_difference(ref, lab_map(tilted), facts) - np.degrees(0.01)) < 1e-6


def test_nxrefines_goniometer_and_ub_are_hklflows():
    """On goniometer() (the exporter's frame T_NX), NXRefine's chi/omega/theta are hklflow's offsets of the same
    names, phi its scan angle, and hklflow_ub inverts entry_parameters' Umat."""
    from hklflow.model.crystal import UnitCell
    from hklflow.model.geometry import DetectorGeometry
    from hklflow.model.nxrefine import entry_parameters, goniometer, hklflow_ub

    NXREFINE_GONIOMETER = goniometer()
    offsets = {"theta": 1.5, "omega": -12.0, "chi": 33.0}
    cell = UnitCell.from_list([5.1, 6.2, 7.3, 90, 101.5, 90])
    U = (NXREFINE_GONIOMETER.offset_rotation({"chi": 20, "omega": 7, "theta": -40}))
    UB = U @ cell.B
    scan = ScanGeometry(DetectorGeometry("Pilatus300k", 0.25, 0.03, 0.04, wavelength=0.2),
                        NXREFINE_GONIOMETER, ScanAngles(-5.0, 0.1, 3600), offsets, UB)
    p = entry_parameters(scan, cell)
    assert np.allclose([p["theta"], p["omega"], p["chi"]], [1.5, -12.0, 33.0], atol=1e-12)
    assert (p["phi"], p["phi_step"]) == (-5.0, 0.1)
    assert np.allclose(hklflow_ub(p["orientation_matrix"], cell.parameters), UB, atol=1e-14)


@pytest.mark.parametrize("string", ["-y +z -x", "+z +y -x", "+y +z -x", "-z -y -x", "+y -z +x"])
def test_nxrefines_lab_frame_puts_an_untilted_detector_where_pyfai_does(string):
    """lab_frame: with it, NXRefine's detector at zero tilts is pyFAI's of the orientation
    found, untilted (the default '-y +z -x' is orientation 3 with NXRefine's z up: phi
    about L1), and a frame of the exporter (T_NX) is found again."""
    from hklflow.model.geometry import DetectorGeometry
    from hklflow.model.nxrefine import detector_geometry, detector_lab_map, lab_frame

    T, o = lab_frame(string)
    assert np.allclose(T.T @ T, np.eye(3)) and np.linalg.det(T) > 0
    assert np.allclose(T @ [0, 0, 1.0], [1.0, 0, 0])  # the beam is the beam
    facts = DetectorGeometry("Pilatus300k", 0.3, 0.0, 0.0, orientation=o).detector_facts()
    g = detector_geometry(detector_lab_map(300.0, 240.0, 310.0, 0, 0, 0, string, 0.172, T),
                          "Pilatus300k", 0.2, facts, o)
    assert g.orientation == o and np.allclose([g.rot1, g.rot2, g.rot3], 0, atol=1e-12)
    assert abs(g.dist - 0.3) < 1e-12
    if string == "-y +z -x":
        assert o == 3 and np.allclose(T.T @ [0, 0, 1.0], [1.0, 0, 0])
    if string == "+z +y -x":
        assert o == 3 and np.allclose(T, T_NX)
    if string == "+y -z +x":
        with pytest.raises(ValueError, match="along the beam"):
            lab_frame("+x -z +y")
