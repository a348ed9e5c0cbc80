"""hklflow's geometry and crystal in NXRefine's parameters (nexpy/nxrefine 0.1.1,
``nxrefine/nxrefine.py``, class NXRefine): the adapter at the edge, as pyFAI's fit2d
module is for FIT2D.  Used by the NXRefine wrapper file (rule nxrefine_wrapper), the
volume files' NXRefine sample fields, bench/nxrefine_compare.py and, the other way
(lab_frame, detector_lab_map, detector_geometry, goniometer, hklflow_ub), `hklflow import
nxrefine`.

NXRefine's frame (its ``Gvec``): x along the beam, z the phi axis (v_nx = T v from hklflow's
lab: T_NX for the exporter, lab_frame's for an NXRefine experiment); a pixel (x = column,
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
from dataclasses import replace

import numpy as np

from .crystal import UnitCell, space_group
from .geometry import (ORIENTATIONS, DetectorGeometry, Goniometer, ScanGeometry, axis_rotation,
                       pyfai_tilt_matrix)

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


def detector_parameters(det: DetectorGeometry, T: np.ndarray = T_NX) -> dict:
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
    w1, w2 = T @ ec / ps, T @ er / ps
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
    M = np.stack([np.array([1.0, 0, 0]), -T @ ec, -T @ er], axis=1)
    dist, xc, yc = np.linalg.solve(M, T @ P0)
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


def goniometer_parameters(scan: ScanGeometry, T: np.ndarray = T_NX) -> tuple[dict, np.ndarray]:
    """NXRefine's phi (start), phi_step, chi, omega, theta (deg) of a scan entry, and the
    rotation P (NXRefine lab) that its UBmat carries: hklflow's T R_off R_scan(phi) equals
    NXRefine's Gmat(phi_nx) P^T T, for any scan axis and offsets, because the scan axis,
    taken to NXRefine's frame and turned towards +z, is P's image of z."""
    gon = scan.goniometer
    a = T @ gon.axis
    sense = gon.scan_sense
    if a[2] < 0:  # a rotation about -z by phi is one about +z by -phi
        a, sense = -a, -sense
    tilt = math.acos(max(-1.0, min(1.0, a[2])))
    axis = np.cross([0.0, 0.0, 1.0], a)
    P = axis_rotation(axis, tilt) if np.linalg.norm(axis) > 1e-12 else np.eye(3)
    G0 = T @ gon.offset_rotation(scan.offsets) @ T.T @ P
    theta, omega, chi = _yzx_angles(G0)
    if not np.allclose(rotmat(2, theta) @ rotmat(3, omega) @ rotmat(1, chi), G0, atol=1e-9):
        raise ValueError(f"goniometer offsets {scan.offsets} have no chi/omega/theta in "
                         "NXRefine's order (omega at +-90 deg)")
    return ({"phi": sense * scan.angles.start, "phi_step": sense * scan.angles.step,
             "chi": chi, "omega": omega, "theta": theta}, P)


def entry_parameters(scan: ScanGeometry, cell, T: np.ndarray = T_NX) -> dict:
    """Every NXRefine parameter of one scan entry oriented by hklflow (scan.UB, refined
    cell): wavelength (Angstrom), the detector (detector_parameters), the goniometer
    (goniometer_parameters) and orientation_matrix, NXRefine's Umat, such that its UBmat =
    Umat inv(Bimat) is hklflow's UB in NXRefine's frame (as its GUI hands over an indexed
    UB: Umat = UB Bimat; a rotation only for orthogonal cells, because NXRefine's Bmat is
    not Busing-Levy's)."""
    gon, P = goniometer_parameters(scan, T)
    UBmat = P.T @ T @ np.asarray(scan.UB, dtype=float)
    return {"wavelength": float(scan.detector.wavelength), **detector_parameters(scan.detector, T),
            **gon, "orientation_matrix": UBmat @ bimat(cell), "UBmat": UBmat}


# ---- NXRefine's parameters -> hklflow (hklflow import nxrefine) ------------------------
# NXRefine's lab has the beam along x and the phi axis along z; which way y and z lie
# physically only its detector_orientation says: at zero tilts (NXRefine's default detector,
# its powder calibration copying pyFAI's tilts) the detector's rows and columns run as pyFAI
# puts them for the same image, rows along hklflow's L1 and columns along L2 (orientation 3).
# lab_frame finds that rotation; the goniometer, the detector and UB follow from it.


def orientation_matrix(orientation: str) -> np.ndarray:
    """NXRefine's Omat of a detector_orientation string such as '-y +z -x' (row i: the
    signed lab axis of detector axis i; nxutils.parse_orientation): a signed permutation,
    or ValueError."""
    words = str(orientation).split()
    omat = np.zeros((3, 3))
    if len(words) == 3:
        for i, w in enumerate(words):
            if len(w) == 2 and w[0] in "+-" and w[1] in "xyz":
                omat[i, "xyz".index(w[1])] = 1.0 if w[0] == "+" else -1.0
    if not np.allclose(np.abs(omat).sum(axis=0), 1) or not np.allclose(np.abs(omat).sum(axis=1), 1):
        raise ValueError(f"detector_orientation {orientation!r} is not three signed axes "
                         "such as '-y +z -x'")
    return omat


def lab_frame(detector_orientation: str) -> tuple[np.ndarray, int]:
    """(T, orientation): the rotation T taking hklflow's lab to NXRefine's (v_nx = T v) and
    pyFAI's detector orientation with which, at zero tilts, NXRefine's rows and columns lie
    where pyFAI's lie (orientation 3 where the string allows it, else the flipped one of
    the other handedness).  ValueError for a detector plane not across the beam."""
    omat = orientation_matrix(detector_orientation)
    col, row = omat.T[:, 0], omat.T[:, 1]  # NXRefine's lab directions of x (column) and y (row)
    if abs(col[0]) > 0 or abs(row[0]) > 0:
        raise ValueError(f"detector_orientation {detector_orientation!r} puts the detector's "
                         "rows or columns along the beam (NXRefine's x): hklflow takes a "
                         "detector across the beam at zero tilts")
    for o in (3, 4, 2, 1):
        s1 = -1.0 if o in (1, 2) else 1.0  # pyFAI: rows along +-L1, columns along +-L2
        s2 = -1.0 if o in (1, 4) else 1.0
        T = np.stack([s1 * row, s2 * col, [1.0, 0.0, 0.0]], axis=1)  # columns: T L1, T L2, T L3
        if np.linalg.det(T) > 0:
            return T, o
    raise AssertionError("unreachable: one of the flips is proper")


def goniometer(T: np.ndarray = T_NX) -> Goniometer:
    """NXRefine's goniometer in hklflow's lab: phi about NXRefine's z, and Gmat = R2(theta)
    R3(omega) R1(chi) as offsets theta, omega, chi about its y, z and x, outermost first."""
    return Goniometer(tuple(T.T @ [0, 0, 1.0]), 1, (("theta", tuple(T.T @ [0, 1.0, 0])),
                                                   ("omega", tuple(T.T @ [0, 0, 1.0])),
                                                   ("chi", tuple(T.T @ [1.0, 0, 0]))))


def detector_lab_map(distance: float, xc: float, yc: float, yaw: float, pitch: float,
                     roll: float, detector_orientation: str, pixel_size: float,
                     T: np.ndarray = T_NX):
    """Where NXRefine puts the pixels, in hklflow's lab (m): (L0, e_row, e_col) with the
    position of continuous pixel (row, col) at L0 + row e_row + col e_col (NXRefine's
    x = col, y = row; distance and pixel_size in mm, angles in degrees)."""
    W = rotmat(1, roll) @ rotmat(2, pitch) @ rotmat(3, yaw) @ orientation_matrix(
        detector_orientation).T  # inv(Dmat) inv(Omat)
    ec, er = W[:, 0] * pixel_size, W[:, 1] * pixel_size
    P0 = np.array([distance, 0.0, 0.0]) - xc * ec - yc * er
    return T.T @ P0 * 1e-3, T.T @ er * 1e-3, T.T @ ec * 1e-3


def _pyfai_rotations(M: np.ndarray) -> tuple[float, float, float]:
    """(rot1, rot2, rot3) in rad with pyfai_tilt_matrix(rot1, rot2, rot3) = M."""
    rot2 = math.asin(max(-1.0, min(1.0, M[2, 0])))
    rot1 = math.atan2(-M[2, 1], M[2, 2])
    rot3 = math.atan2(M[1, 0], M[0, 0])
    return rot1, rot2, rot3


def placement(lab_map, facts, orientation: int, tilt: np.ndarray | None = None):
    """(dist, poni1, poni2, tilt matrix) of a detector with these facts (DetectorFacts of a
    regular flat detector) and pyFAI orientation whose pixels lie where `lab_map`
    (detector_lab_map) puts them; with `tilt` (a tilt matrix), the placement of that tilt
    nearest to it (a translated detector).  None when the orientation cannot (the detector
    would face away from the sample)."""
    L0, er, ec = lab_map
    ny, nx = facts.shape
    s1 = -facts.pixel1 if orientation in (1, 2) else facts.pixel1  # d p1 / d row
    s2 = -facts.pixel2 if orientation in (1, 4) else facts.pixel2  # d p2 / d col
    if tilt is None:
        m1, m2 = er / s1, ec / s2
        tilt = np.stack([m1, m2, np.cross(m1, m2)], axis=1)
    p0 = np.array([ny * facts.pixel1 if orientation in (1, 2) else 0.0,
                   nx * facts.pixel2 if orientation in (1, 4) else 0.0])
    local = tilt.T @ L0  # (p1(0, 0) - poni1, p2(0, 0) - poni2, dist)
    if local[2] <= 0:
        return None
    return float(local[2]), float(p0[0] - local[0]), float(p0[1] - local[1]), tilt


def detector_geometry(lab_map, detector: str, wavelength: float, facts,
                      orientation: int | None = None) -> DetectorGeometry:
    """The hklflow detector (pyFAI PONI parameters) whose pixels lie where NXRefine puts
    them (lab_map: detector_lab_map).  The orientation is pyFAI's 1..4 whose tilts are the
    smallest (two of the four face the sample; both place every pixel alike), or the
    given one.  ValueError when NXRefine's pixels are not the detector's (size, squareness)."""
    L0, er, ec = lab_map
    for name, e, size in (("row", er, facts.pixel1), ("column", ec, facts.pixel2)):
        if abs(np.linalg.norm(e) - size) > 1e-6 * size:
            raise ValueError(f"NXRefine's pixel_size {np.linalg.norm(e) * 1e3:g} mm along a "
                             f"{name} is not {detector}'s {size * 1e3:g} mm")
    if abs(er @ ec) > 1e-9 * facts.pixel1 * facts.pixel2:
        raise ValueError("NXRefine's pixel rows and columns are not perpendicular")
    best = None
    for o in (ORIENTATIONS if orientation is None else (orientation,)):
        placed = placement(lab_map, replace(facts, orientation=o), o)
        if placed is None:
            continue
        dist, poni1, poni2, M = placed
        rots = _pyfai_rotations(M)
        if not np.allclose(pyfai_tilt_matrix(*rots), M, atol=1e-9):
            continue
        size = max(abs(r) for r in rots)
        if best is None or size < best[0] - 1e-12:
            best = (size, DetectorGeometry(detector, dist, poni1, poni2, *rots,
                                           wavelength=wavelength, orientation=o))
    if best is None:
        raise ValueError(f"NXRefine's detector cannot be placed as {detector} with "
                         f"orientation {orientation} (it would face away from the sample)")
    return best[1]


def translation(reference: DetectorGeometry, lab_map, facts) -> tuple[float, float, float]:
    """(det_ddist, det_dponi1, det_dponi2) in m that move `reference` nearest to where
    `lab_map` puts the pixels (exact when the tilts agree; tilt_difference says by how
    much they do not)."""
    dist, poni1, poni2, _ = placement(lab_map, facts, reference.orientation,
                                      reference.tilt_matrix)
    return dist - reference.dist, poni1 - reference.poni1, poni2 - reference.poni2


def tilt_difference(reference: DetectorGeometry, lab_map, facts) -> float:
    """The angle (deg) between the reference's tilt and the one `lab_map` needs."""
    placed = placement(lab_map, facts, reference.orientation)
    M = reference.tilt_matrix.T @ placed[3]
    return math.degrees(math.acos(max(-1.0, min(1.0, (np.trace(M) - 1) / 2))))


def hklflow_ub(orientation_matrix_: np.ndarray, cell, T: np.ndarray = T_NX) -> np.ndarray:
    """hklflow's UB (1/Angstrom; the lab at phi = 0 and zero offsets of goniometer(T)) of
    NXRefine's Umat and cell: UBmat = Umat inv(Bimat), taken to hklflow's lab."""
    return T.T @ np.asarray(orientation_matrix_, float) @ np.linalg.inv(bimat(cell))
