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
