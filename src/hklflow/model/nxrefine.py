"""hklflow's geometry and crystal in NXRefine's parameters (nexpy/nxrefine 0.1.1,
``nxrefine/nxrefine.py``, class NXRefine): the adapter at the edge, as pyFAI's fit2d
module is for FIT2D.  Used by the NXRefine wrapper file (rule nxrefine_wrapper), the
volume files' NXRefine sample fields, and bench/nxrefine_compare.py.

NXRefine's frame (its ``Gvec``): x along the beam, z the phi axis; a pixel (x = column,
y = row) is at ``inv(Dmat) ps inv(Omat) (x - xc, y - yc, 0) + (distance, 0, 0)`` (mm), with
``inv(Dmat) = R1(roll) R2(pitch) R3(yaw)`` and Omat the signed permutation of its
``detector_orientation`` string; Q = (k_f - k_i) (1/Angstrom, no 2 pi, as hklflow's) is
brought to the sample by ``inv(Gmat(phi))``, ``Gmat(phi) = R2(theta) R3(omega) R1(chi)
R3(phi)``, ``phi = phi_start + phi_step z``, and ``h = inv(Umat Bmat) Gvec`` with
``Bmat = inv(Bimat)``, Bimat the real-space basis (columns a, b, c).

The mapping is exact: with these parameters NXRefine gives every pixel of every frame the
(h, k, l) that hklflow gives it (tests/steps/test_nxrefine_wrapper.py runs NXRefine itself).
Pixel and frame coordinates are hklflow's continuous ones (the centre of pixel or frame i
at i + 0.5); the beam centre is then where pyFAI's fit2d centre, which NXRefine's own
powder calibration stores, puts it.
"""
from __future__ import annotations

import math

import numpy as np

from .crystal import UnitCell, space_group
from .geometry import DetectorGeometry, ScanGeometry, axis_rotation

# hklflow lab (L1 up, L2 horizontal, L3 along the beam) -> NXRefine lab (x along the beam,
# z the phi axis): v_nx = T v = (v3, v1, v2); hklflow's usual scan axis L2 becomes its z
T_NX = np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])

# NXRefine.laue_groups: the names its PDF and symmetrisation accept
LAUE_GROUPS = ("-1", "2/m", "mmm", "4/m", "4/mmm", "-3", "-3m", "6/m", "6/mmm", "m-3", "m-3m")


def rotmat(axis: int, deg: float) -> np.ndarray:
    """NXRefine's rotmat: right-handed rotation by deg about lab axis 1, 2 or 3."""
    c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
    if axis == 1:
        return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])
    if axis == 2:
        return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


def bimat(cell) -> np.ndarray:
    """NXRefine's Bimat: the real-space basis, columns a, b, c (Angstrom)."""
    a, b, c, al, be, ga = (cell.parameters if isinstance(cell, UnitCell) else tuple(cell))
    al, be, ga = (math.radians(v) for v in (al, be, ga))
    b23 = c * (math.cos(al) - math.cos(be) * math.cos(ga)) / math.sin(ga)
    b33 = math.sqrt(c ** 2 - (c * math.cos(be)) ** 2 - b23 ** 2)
    return np.array([[a, b * math.cos(ga), c * math.cos(be)], [0, b * math.sin(ga), b23],
                     [0, 0, b33]])


def laue_group(symbol: str) -> str:
    """NXRefine's name of the Laue group of a space group.  gemmi's names (Crystal.laue_group;
    NXRefine takes its own from gemmi too) are NXRefine's eleven; anything else is a bug."""
    name = space_group(symbol).laue_str()
    if name not in LAUE_GROUPS:
        raise ValueError(f"Laue group {name!r} of {symbol!r} is none of NXRefine's {LAUE_GROUPS}")
    return name


def sample_fields(space_group_symbol: str | None, cell, temperature: float | None) -> dict:
    """The fields NXRefine reads from /entry/sample (read_parameters; write_parameters writes
    them): unitcell_a..gamma (Angstrom, degree), space_group, laue_group, unit_cell_group
    (crystal system), lattice_centring, temperature (K).  What is not known is left out."""
    out = {}
    if cell is not None:
        for name, v in zip(("a", "b", "c", "alpha", "beta", "gamma"), UnitCell.from_list(
                cell.parameters if isinstance(cell, UnitCell) else cell).parameters):
            out[f"unitcell_{name}"] = float(v)
    if space_group_symbol:
        sg = space_group(space_group_symbol)
        out["space_group"] = sg.xhm()
        out["laue_group"] = laue_group(space_group_symbol)
        out["unit_cell_group"] = sg.crystal_system_str().lower()
        out["lattice_centring"] = sg.centring_type()
    if temperature is not None:
        out["temperature"] = float(temperature)
    return out


def transform_angles(cell) -> tuple[float, float, float]:
    """The @angles NXRefine gives an (H, K, L) volume with axes [Ql, Qk, Qh]: (gamma*, beta*,
    alpha*) in degrees (NXRefine.prepare_transform), so NeXpy draws skewed lattices skewed."""
    c = cell if isinstance(cell, UnitCell) else UnitCell.from_list(cell)
    _, _, _, al, be, ga = c.reciprocal_parameters
    return (float(ga), float(be), float(al))


def detector_parameters(det: DetectorGeometry) -> dict:
    """NXRefine's detector parameters reproducing a flat hklflow detector (x = column,
    y = row, continuous): distance (mm, sample to the beam's intercept), beam centre xc/yc
    (pixels), yaw/pitch/roll (deg), detector_orientation, pixel_size (mm), shape; with a
    sensor, its sensor_material and sensor_thickness (m), as NXmx names them (NXRefine itself
    knows no parallax: its frame is the detector's plane, not where the pixels look)."""
    sensor = det.sensor
    det = det.with_sensor(None)  # the pixels' own plane
    P0 = det.lab_positions(0.0, 0.0) * 1e3  # mm
    ec = det.lab_positions(0.0, 1.0) * 1e3 - P0
    er = det.lab_positions(1.0, 0.0) * 1e3 - P0
    ps = float(np.linalg.norm(ec))
    if abs(np.linalg.norm(er) - ps) > 1e-9 * ps or abs(ec @ er) > 1e-9 * ps * ps:
        raise ValueError("NXRefine needs square pixels on a flat detector")
    w1, w2 = T_NX @ ec / ps, T_NX @ er / ps
    W = np.stack([w1, w2, np.cross(w1, w2)], axis=1)  # = inv(Dmat) inv(Omat)
    omat = np.rint(W.T)  # Dmat ~ 1: Omat ~ W^-1 = W^T
    R = W @ omat  # = inv(Dmat) = R1(roll) R2(pitch) R3(yaw)
    pitch = math.degrees(math.asin(R[0, 2]))
    roll = math.degrees(math.atan2(-R[1, 2], R[2, 2]))
    yaw = math.degrees(math.atan2(-R[0, 1], R[0, 0]))
    if not np.allclose(rotmat(1, roll) @ rotmat(2, pitch) @ rotmat(3, yaw), R, atol=1e-9):
        raise ValueError("the detector is tilted too far for NXRefine's orientation string "
                         "plus yaw/pitch/roll")
    orient = " ".join(("+" if omat[i, j] > 0 else "-") + "xyz"[j]
                      for i in range(3) for j in range(3) if omat[i, j])
    # beam intercept: (distance, 0, 0) = T P0 + xc T ec + yc T er
    M = np.stack([np.array([1.0, 0, 0]), -T_NX @ ec, -T_NX @ er], axis=1)
    dist, xc, yc = np.linalg.solve(M, T_NX @ P0)
    out = {"distance": float(dist), "xc": float(xc), "yc": float(yc), "yaw": yaw,
           "pitch": pitch, "roll": roll, "detector_orientation": orient, "pixel_size": ps,
           "shape": [int(n) for n in det.shape]}
    if sensor is not None:
        out.update(sensor_material=sensor.material, sensor_thickness=sensor.thickness)
    return out


def _yzx_angles(G: np.ndarray) -> tuple[float, float, float]:
    """(theta, omega, chi) in degrees with G = R2(theta) R3(omega) R1(chi)."""
    omega = math.degrees(math.asin(max(-1.0, min(1.0, G[1, 0]))))
    chi = math.degrees(math.atan2(-G[1, 2], G[1, 1]))
    theta = math.degrees(math.atan2(-G[2, 0], G[0, 0]))
    return theta, omega, chi


def goniometer_parameters(scan: ScanGeometry) -> tuple[dict, np.ndarray]:
    """NXRefine's phi (start), phi_step, chi, omega, theta (deg) of a scan entry, and the
    rotation P (NXRefine lab) that its UBmat carries: hklflow's T R_off R_scan(phi) equals
    NXRefine's Gmat(phi_nx) P^T T, for any scan axis and offsets, because the scan axis,
    taken to NXRefine's frame and turned towards +z, is P's image of z."""
    gon = scan.goniometer
    a = T_NX @ gon.axis
    sense = gon.scan_sense
    if a[2] < 0:  # a rotation about -z by phi is one about +z by -phi
        a, sense = -a, -sense
    tilt = math.acos(max(-1.0, min(1.0, a[2])))
    axis = np.cross([0.0, 0.0, 1.0], a)
    P = axis_rotation(axis, tilt) if np.linalg.norm(axis) > 1e-12 else np.eye(3)
    G0 = T_NX @ gon.offset_rotation(scan.offsets) @ T_NX.T @ P
    theta, omega, chi = _yzx_angles(G0)
    if not np.allclose(rotmat(2, theta) @ rotmat(3, omega) @ rotmat(1, chi), G0, atol=1e-9):
        raise ValueError(f"goniometer offsets {scan.offsets} have no chi/omega/theta in "
                         "NXRefine's order (omega at +-90 deg)")
    return ({"phi": sense * scan.angles.start, "phi_step": sense * scan.angles.step,
             "chi": chi, "omega": omega, "theta": theta}, P)


def entry_parameters(scan: ScanGeometry, cell) -> dict:
    """Every NXRefine parameter of one scan entry oriented by hklflow (scan.UB, refined
    cell): wavelength (Angstrom), the detector (detector_parameters), the goniometer
    (goniometer_parameters) and orientation_matrix, NXRefine's Umat, such that its UBmat =
    Umat inv(Bimat) is hklflow's UB in NXRefine's frame (as its GUI hands over an indexed
    UB: Umat = UB Bimat; a rotation only for orthogonal cells, because NXRefine's Bmat is
    not Busing-Levy's)."""
    gon, P = goniometer_parameters(scan)
    UBmat = P.T @ T_NX @ np.asarray(scan.UB, dtype=float)
    return {"wavelength": float(scan.detector.wavelength), **detector_parameters(scan.detector),
            **gon, "orientation_matrix": UBmat @ bimat(cell), "UBmat": UBmat}
