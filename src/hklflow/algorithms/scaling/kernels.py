"""The compiled loops of the scales at many voxels (the merge evaluates them at every
measured voxel of every entry): where each voxel centre crosses the Ewald sphere and the
scattered beam's lab direction there (ewald_crossings: model.geometry.ewald_angles and
ScanGeometry.predict), the incident and scattered directions in the sample frame
(sample_directions), and the absorption's exponent, the sum of the coefficients times the
real spherical harmonics of the paths in and out (absorption_exponents:
model.scales.ScaleModel.harmonics and absorption_of, without the (crossings x coefficients)
basis the numpy form builds).  Done on arrays of millions by numpy they cost ~4 CPU-us per
voxel (bench/README.md, scaling.py).  The numpy forms are the reference they are tested
against (tests/algorithms/scaling/test_crossings.py)."""
from __future__ import annotations

import math

import numba
import numpy as np


def harmonic_constants(lmax: int) -> tuple[np.ndarray, np.ndarray]:
    """(norm, q_mm): norm[l, m] the factor of Q_l^m times cos/sin(m phi) (sqrt(2) N for
    m > 0, N for m = 0), q_mm[m] = (-1)^m (2m - 1)!! (model.scales.real_harmonics)."""
    norm = np.zeros((lmax + 1, lmax + 1))
    for degree in range(lmax + 1):
        for m in range(degree + 1):
            n = math.sqrt((2 * degree + 1) / (4 * math.pi)
                          * math.factorial(degree - m) / math.factorial(degree + m))
            norm[degree, m] = n * (math.sqrt(2.0) if m else 1.0)
    q_mm = np.array([(-1.0) ** m * math.prod(range(1, 2 * m, 2)) for m in range(lmax + 1)])
    return norm, q_mm


@numba.njit(inline="always")
def _sum_harmonics(x, y, z, p, lmax, norm, q_mm):
    """sum over (l >= 1, m) of p[(l, m)] Y_lm(x, y, z) (model.scales.real_harmonics' order)."""
    total = 0.0
    re, im = 1.0, 0.0  # (x + i y)^m
    for m in range(lmax + 1):
        if m > 0:
            re, im = re * x - im * y, re * y + im * x
        q2, q1 = 0.0, q_mm[m]  # Q_(l-2)^m, Q_(l-1)^m as l runs from m
        for degree in range(m, lmax + 1):
            if degree == m:
                q = q_mm[m]
            elif degree == m + 1:
                q = (2 * m + 1) * z * q_mm[m]
            else:
                q = ((2 * degree - 1) * z * q1 - (degree + m - 1) * q2) / (degree - m)
            if degree > m:
                q2, q1 = q1, q
            if degree == 0:
                continue
            at = degree * degree - 1 + degree
            f = norm[degree, m] * q
            if m == 0:
                total += p[at] * f
            else:
                total += p[at + m] * f * re + p[at - m] * f * im
    return total


@numba.njit(cache=True, nogil=True, error_model="numpy")
def absorption_exponents(incident, scattered, share, p, lmax, norm, q_mm, out):
    """out[i] = (sum p Y(-incident[i]) + sum p Y(scattered[i])) / 2, rows of (n, 3); 0
    where share[i] is 0 (a crossing not measured: it adds nothing)."""
    for i in range(incident.shape[0]):
        if share[i] == 0.0:
            out[i] = 0.0
            continue
        a = _sum_harmonics(-incident[i, 0], -incident[i, 1], -incident[i, 2], p, lmax, norm,
                           q_mm)
        b = _sum_harmonics(scattered[i, 0], scattered[i, 1], scattered[i, 2], p, lmax, norm,
                           q_mm)
        out[i] = 0.5 * (a + b)


@numba.njit(inline="always")
def _rodrigues(e, c, s, v0, v1, v2):
    """v rotated by the angle (cos c, sin s) about the unit vector e."""
    d = (e[0] * v0 + e[1] * v1 + e[2] * v2) * (1.0 - c)
    return (v0 * c + (e[1] * v2 - e[2] * v1) * s + e[0] * d,
            v1 * c + (e[2] * v0 - e[0] * v2) * s + e[1] * d,
            v2 * c + (e[0] * v1 - e[1] * v0) * s + e[2] * d)


@numba.njit(cache=True, nogil=True, error_model="numpy")
def ewald_crossings(hkl, UB, e, sense, R_off, wavelength, lo, phi, lab):
    """Where voxel centres hkl (n, 3) cross the Ewald sphere, as model.geometry.ewald_angles
    and ScanGeometry.predict solve it (the numpy reference): for each of the two solutions
    k, phi[k] (n,) in deg in the scan's turn from `lo` (NaN where there is none) and the
    scattered beam's lab direction lab[k] (n, 3); R = R_off R_scan(sense phi) about the scan
    axis e, the beam along z."""
    p0, p1, p2 = R_off[2, 0] / wavelength, R_off[2, 1] / wavelength, R_off[2, 2] / wavelength
    for i in range(hkl.shape[0]):
        h, k, l = hkl[i, 0], hkl[i, 1], hkl[i, 2]
        q0 = UB[0, 0] * h + UB[0, 1] * k + UB[0, 2] * l
        q1 = UB[1, 0] * h + UB[1, 1] * k + UB[1, 2] * l
        q2 = UB[2, 0] * h + UB[2, 1] * k + UB[2, 2] * l
        qe = q0 * e[0] + q1 * e[1] + q2 * e[2]
        r0, r1, r2 = q0 - qe * e[0], q1 - qe * e[1], q2 - qe * e[2]  # q_perp
        a = qe * (e[0] * p0 + e[1] * p1 + e[2] * p2)
        bc = r0 * p0 + r1 * p1 + r2 * p2
        cs = (e[1] * r2 - e[2] * r1) * p0 + (e[2] * r0 - e[0] * r2) * p1 \
            + (e[0] * r1 - e[1] * r0) * p2
        radius = math.hypot(bc, cs)
        ratio = (-0.5 * (q0 * q0 + q1 * q1 + q2 * q2) - a) / radius
        if not abs(ratio) <= 1.0:
            for sol in range(2):
                phi[sol, i] = np.nan
                lab[sol, i, 0] = lab[sol, i, 1] = lab[sol, i, 2] = np.nan
            continue
        # the angles base +- delta (base = atan2(cs, bc), cos(delta) = ratio) by their
        # cosines and sines: one atan2 each, no other trigonometry
        cb, sb = bc / radius, cs / radius
        sd = math.sqrt(1.0 - ratio * ratio)
        for sol in range(2):
            sign = 1.0 if sol == 0 else -1.0
            c, s = cb * ratio - sign * sb * sd, sb * ratio + sign * cb * sd
            deg = lo + (math.degrees(sense * math.atan2(s, c)) - lo) % 360.0
            phi[sol, i] = deg
            v0, v1, v2 = _rodrigues(e, c, s, q0, q1, q2)  # R_scan q
            l0 = (R_off[0, 0] * v0 + R_off[0, 1] * v1 + R_off[0, 2] * v2) * wavelength
            l1 = (R_off[1, 0] * v0 + R_off[1, 1] * v1 + R_off[1, 2] * v2) * wavelength
            l2 = (R_off[2, 0] * v0 + R_off[2, 1] * v1 + R_off[2, 2] * v2) * wavelength + 1.0
            n = math.sqrt(l0 * l0 + l1 * l1 + l2 * l2)
            lab[sol, i, 0], lab[sol, i, 1], lab[sol, i, 2] = l0 / n, l1 / n, l2 / n


@numba.njit(cache=True, nogil=True, error_model="numpy")
def sample_directions(hkl, UB, e, sense, R_off, wavelength, phi, incident, scattered):
    """The incident and scattered directions in the sample frame of voxel centres hkl (n, 3)
    at the scan angles phi[k] (n,) deg, k = 0, 1: R^-1 beam = R_scan(-sense phi) R_off^T
    beam, and (incident + lambda UB h) normalised (crossings' numpy form)."""
    b0, b1, b2 = R_off[2, 0], R_off[2, 1], R_off[2, 2]
    for i in range(hkl.shape[0]):
        h, k, l = hkl[i, 0], hkl[i, 1], hkl[i, 2]
        q0 = (UB[0, 0] * h + UB[0, 1] * k + UB[0, 2] * l) * wavelength
        q1 = (UB[1, 0] * h + UB[1, 1] * k + UB[1, 2] * l) * wavelength
        q2 = (UB[2, 0] * h + UB[2, 1] * k + UB[2, 2] * l) * wavelength
        for sol in range(2):
            rad = sense * math.radians(phi[sol, i])
            w0, w1, w2 = _rodrigues(e, math.cos(rad), -math.sin(rad), b0, b1, b2)
            incident[sol, i, 0], incident[sol, i, 1], incident[sol, i, 2] = w0, w1, w2
            s0, s1, s2 = w0 + q0, w1 + q1, w2 + q2
            n = math.sqrt(s0 * s0 + s1 * s1 + s2 * s2)
            scattered[sol, i, 0], scattered[sol, i, 1], scattered[sol, i, 2] = \
                s0 / n, s1 / n, s2 / n
