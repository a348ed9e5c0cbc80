"""Compiled kernel that renders simulated rotation frames.

Per frame: expected counts = background + diffuse(HKL of each pixel at the frame centre)
+ Bragg spots (3D Gaussians integrated exactly over each pixel and over the frame's
rotation interval, so partials split correctly between frames), then Poisson noise, times
the detector's gain (counts per photon).  Deterministic: every frame draws from its own
random stream (its starting state is given per frame), so the result does not depend on how
frames are shared among threads.
"""
from __future__ import annotations

import math

import numba
import numpy as np

SQRT2 = math.sqrt(2.0)
INT32_MAX = 2147483647  # the raw frames' number type


@numba.njit(cache=True, inline="always")
def _phi(x):
    """Standard normal cumulative distribution."""
    return 0.5 * (1.0 + math.erf(x / SQRT2))


@numba.njit(cache=True)
def _diffuse_at(h, k, l, B, sat_amp, sat_sigma_hk, sat_sigma_l, tds_amp, tds_kappa2,
                tds_reach, bragg_table, tbl_off):
    """Diffuse intensity at fractional (h, k, l).

    Satellites: Gaussian blobs at (n + 1/2, m + 1/2, integer l) (widths in r.l.u.).
    Thermal diffuse: I_bragg(nearest node) * |Q|^2 / (|dQ|^2 + kappa^2) * exp(-|dh|^2/2r^2),
    dQ the Cartesian distance (1/Angstrom) to the nearest allowed node, dh the same distance
    in r.l.u. and r = tds_reach (r.l.u.), which makes the term vanish well before the
    boundary between nodes (bragg_table holds I of allowed nodes, zero for absent ones).
    """
    val = 0.0
    if sat_amp > 0.0:
        dh = h - (math.floor(h) + 0.5)
        dk = k - (math.floor(k) + 0.5)
        r2 = (dh * dh + dk * dk) / (sat_sigma_hk * sat_sigma_hk)
        if r2 < 36.0:  # beyond 6 sigma the term is < 1e-7 of its peak
            dl = l - math.floor(l + 0.5)
            val += sat_amp * math.exp(-0.5 * r2 - 0.5 * dl * dl / (sat_sigma_l * sat_sigma_l))
    if tds_amp > 0.0:
        nh = math.floor(h + 0.5)
        nk = math.floor(k + 0.5)
        nl = math.floor(l + 0.5)
        ih = int(nh) + tbl_off[0]
        ik = int(nk) + tbl_off[1]
        il = int(nl) + tbl_off[2]
        if (0 <= ih < bragg_table.shape[0] and 0 <= ik < bragg_table.shape[1]
                and 0 <= il < bragg_table.shape[2]):
            ib = bragg_table[ih, ik, il]
            d0, d1, d2 = h - nh, k - nk, l - nl
            dd = d0 * d0 + d1 * d1 + d2 * d2
            if ib > 0.0 and dd < 16.0 * tds_reach * tds_reach:
                q0 = B[0, 0] * d0 + B[0, 1] * d1 + B[0, 2] * d2
                q1 = B[1, 0] * d0 + B[1, 1] * d1 + B[1, 2] * d2
                q2 = B[2, 0] * d0 + B[2, 1] * d1 + B[2, 2] * d2
                Q0 = B[0, 0] * h + B[0, 1] * k + B[0, 2] * l
                Q1 = B[1, 0] * h + B[1, 1] * k + B[1, 2] * l
                Q2 = B[2, 0] * h + B[2, 1] * k + B[2, 2] * l
                qq = Q0 * Q0 + Q1 * Q1 + Q2 * Q2
                val += (tds_amp * ib * qq / (q0 * q0 + q1 * q1 + q2 * q2 + tds_kappa2)
                        * math.exp(-0.5 * dd / (tds_reach * tds_reach)))
    return val


@numba.njit(cache=True, inline="always")
def _uniform(state):
    """splitmix64 step: returns (new state, uniform in [0, 1)).  A counter-based stream per
    frame keeps frames independent of thread scheduling and is ~10x cheaper than MT19937."""
    state = (state + np.uint64(0x9E3779B97F4A7C15))
    z = state
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z = z ^ (z >> np.uint64(31))
    return state, float(z >> np.uint64(11)) * (1.0 / 9007199254740992.0)


@numba.njit(cache=True)
def _poisson(state, lam):
    """Poisson deviate with mean lam: sequential inversion for small means, Hoermann's PTRS
    transformed rejection (the algorithm numpy uses) for lam >= 10.  Returns (state, k)."""
    if lam < 10.0:
        state, u = _uniform(state)
        p = math.exp(-lam)
        cdf = p
        n = 0
        while u > cdf and n < 100:
            n += 1
            p *= lam / n
            cdf += p
        return state, n
    slam = math.sqrt(lam)
    loglam = math.log(lam)
    b = 0.931 + 2.53 * slam
    a = -0.059 + 0.02483 * b
    invalpha = 1.1239 + 1.1328 / (b - 3.4)
    vr = 0.9277 - 3.6224 / (b - 2.0)
    while True:
        state, U = _uniform(state)
        U -= 0.5
        state, V = _uniform(state)
        us = 0.5 - abs(U)
        k = math.floor((2.0 * a / us + b) * U + lam + 0.43)
        if us >= 0.07 and V <= vr:
            return state, int(k)
        if k < 0 or (us < 0.013 and V > us):
            continue
        if (math.log(V) + math.log(invalpha) - math.log(a / (us * us) + b)
                <= -lam + k * loglam - math.lgamma(k + 1.0)):
            return state, int(k)


@numba.njit(cache=True)
def _crystal_expected(lam, M, q_pix, pixel_scale, background, B, diffuse_params, bragg_table,
                      tbl_off):
    """lam (ny, nx) = background + the diffuse intensity at each pixel's (h, k, l) (M: the
    frame's (UB)^-1 R^-1) times pixel_scale."""
    ny, nx = background.shape
    sat_amp, sat_hk, sat_l = diffuse_params[0], diffuse_params[1], diffuse_params[2]
    tds_amp, tds_k2, tds_reach = diffuse_params[3], diffuse_params[4], diffuse_params[5]
    for r in range(ny):
        for c in range(nx):
            d = 0.0
            if sat_amp > 0.0 or tds_amp > 0.0:  # (else 0 exactly: _diffuse_at adds nothing)
                q0 = q_pix[r, c, 0]
                q1 = q_pix[r, c, 1]
                q2 = q_pix[r, c, 2]
                h = M[0, 0] * q0 + M[0, 1] * q1 + M[0, 2] * q2
                k = M[1, 0] * q0 + M[1, 1] * q1 + M[1, 2] * q2
                l = M[2, 0] * q0 + M[2, 1] * q1 + M[2, 2] * q2
                d = _diffuse_at(h, k, l, B, sat_amp, sat_hk, sat_l, tds_amp, tds_k2,
                                tds_reach, bragg_table, tbl_off)
            lam[r, c] = background[r, c] + d * pixel_scale[r, c]


@numba.njit(cache=True)
def _add_spots(lam, f, spot_frame_ptr, spot_index, spot_row, spot_col, spot_z, spot_sr,
               spot_sc, spot_sz, spot_counts):
    """Adds to lam (ny, nx) the Bragg spots touching frame f: each spot's counts times the
    share of its Gaussian profile in the frame and in each pixel."""
    ny, nx = lam.shape
    for p in range(spot_frame_ptr[f], spot_frame_ptr[f + 1]):
        s = spot_index[p]
        zc, sz = spot_z[s], spot_sz[s]
        frac = _phi((f + 1 - zc) / sz) - _phi((f - zc) / sz)
        if frac <= 0.0:
            continue
        amp = spot_counts[s] * frac
        rc, cc, sr, sc = spot_row[s], spot_col[s], spot_sr[s], spot_sc[s]
        r0 = max(int(math.floor(rc - 5.0 * sr)), 0)
        r1 = min(int(math.ceil(rc + 5.0 * sr)), ny)
        c0 = max(int(math.floor(cc - 5.0 * sc)), 0)
        c1 = min(int(math.ceil(cc + 5.0 * sc)), nx)
        for r in range(r0, r1):
            fr = _phi((r + 1 - rc) / sr) - _phi((r - rc) / sr)
            if fr <= 0.0:
                continue
            for c in range(c0, c1):
                fc = _phi((c + 1 - cc) / sc) - _phi((c - cc) / sc)
                lam[r, c] += amp * fr * fc


@numba.njit(cache=True)
def _pixel_value(state, v, g, hot_value, gain):
    """(state, value, counts) of a pixel of expected photons v and gap_mask value g: -1 in a
    gap, hot_value if hot, 0 if dead, else round(gain * Poisson(v)) (INT32_MAX where int32
    cannot hold it); counts: gain * photons (0 for a gap or defect)."""
    if g == 1:
        return state, -1, 0.0
    if g == 2:
        return state, hot_value, 0.0
    if g == 3 or not v > 0.0:
        return state, 0, 0.0
    state, n = _poisson(state, v)
    counts = n * gain
    if gain != 1.0:
        counts = math.floor(counts + 0.5)
    return state, (int(counts) if counts < INT32_MAX else INT32_MAX), counts


@numba.njit(parallel=True, cache=True)
def render_frames(first_frame, nframes, q_pix, pixel_scale, background, gap_mask,
                  hot_value, M_frames, B, diffuse_params, bragg_table, tbl_off,
                  spot_frame_ptr, spot_index, spot_row, spot_col, spot_z, spot_sr, spot_sc,
                  spot_sz, spot_counts, frame_states, gain, out, frame_max):
    """Render frames [first_frame, first_frame + nframes) into out (nframes, ny, nx) int32.

    q_pix (ny, nx, 3): lab Q of every pixel (1/Angstrom); pixel_scale (ny, nx): polarization x
    relative solid angle (multiplies diffuse); background (ny, nx): expected counts;
    gap_mask (ny, nx) uint8: 1 = module gap (written -1), 2 = hot pixel, 3 = dead pixel;
    M_frames (nframes_total, 3, 3): (UB)^-1 R(phi_centre)^-1 per frame;
    spot_frame_ptr/spot_index: CSR list of the spots touching each frame;
    frame_states (nframes_total,) uint64: the starting state of each frame's random stream;
    gain: counts per photon, a pixel holds round(gain * Poisson(expected photons));
    frame_max (nframes,) float64: set to the largest gain * photons of each frame.  A value
    that int32 cannot hold (>= INT32_MAX) is written as INT32_MAX: the caller checks
    frame_max and refuses such frames.
    """
    ny, nx = background.shape
    for j in numba.prange(nframes):
        f = first_frame + j
        state = frame_states[f]
        vmax = 0.0
        lam = np.empty((ny, nx), dtype=np.float64)
        _crystal_expected(lam, M_frames[f], q_pix, pixel_scale, background, B, diffuse_params,
                          bragg_table, tbl_off)
        _add_spots(lam, f, spot_frame_ptr, spot_index, spot_row, spot_col, spot_z, spot_sr,
                   spot_sc, spot_sz, spot_counts)
        for r in range(ny):
            for c in range(nx):
                state, out[j, r, c], counts = _pixel_value(state, lam[r, c], gap_mask[r, c],
                                                           hot_value, gain)
                vmax = max(vmax, counts)
        frame_max[j] = vmax


def frame_spot_lists(nframes_total: int, z: np.ndarray, sz: np.ndarray, reach: float = 5.0):
    """CSR arrays (ptr, index) listing, for every frame, the spots whose profile
    (z +- reach*sz) overlaps it."""
    f0 = np.clip(np.floor(z - reach * sz).astype(np.int64), 0, nframes_total)
    f1 = np.clip(np.ceil(z + reach * sz).astype(np.int64), 0, nframes_total)
    lists = [[] for _ in range(nframes_total)]
    for s, (a, b) in enumerate(zip(f0, f1)):
        for f in range(a, b):
            lists[f].append(s)
    ptr = np.zeros(nframes_total + 1, dtype=np.int64)
    ptr[1:] = np.cumsum([len(x) for x in lists])
    index = np.array([s for x in lists for s in x], dtype=np.int64)
    return ptr, index


# --------------------------------------------------------------------------------------
# Beamline effects (experiment.SimulationSpec's air, plate, beam, holder): a kernel of their
# own from the same parts, so that the plain one's arithmetic (every default frame) is
# untouched
# --------------------------------------------------------------------------------------
@numba.njit(parallel=True, cache=True)
def render_frames_effects(first_frame, nframes, q_pix, pixel_scale, crystal_bg, other_bg,
                          crystal_scale, frame_flux, gap_mask, hot_value, M_frames, B,
                          diffuse_params, bragg_table, tbl_off, spot_frame_ptr, spot_index,
                          spot_row, spot_col, spot_z, spot_sr, spot_sc, spot_sz, spot_counts,
                          frame_states, gain, out, frame_max, expected_out):
    """render_frames with the beamline's effects: expected photons of pixel (r, c) in frame f

        frame_flux[f] * (crystal_scale[j, r, c] * (crystal_bg + diffuse * pixel_scale + Bragg)
                         + other_bg)

    crystal_scale (nframes, ny, nx): what reaches the pixel of the crystal's scattering (the
    plate's absorption times the air's); crystal_bg (ny, nx): the crystal's own background;
    other_bg (ny, nx): what does not come from the crystal (air scatter, holder), its air
    attenuation included; frame_flux (nframes_total,): the incident flux of every frame;
    expected_out: (nframes, ny, nx) float64 to receive the expected photons of every pixel
    (gaps and defects too), or an array of no frames (not wanted).  The rest as render_frames.
    """
    ny, nx = crystal_bg.shape
    for j in numba.prange(nframes):
        f = first_frame + j
        state = frame_states[f]
        vmax = 0.0
        lam = np.empty((ny, nx), dtype=np.float64)
        _crystal_expected(lam, M_frames[f], q_pix, pixel_scale, crystal_bg, B, diffuse_params,
                          bragg_table, tbl_off)
        _add_spots(lam, f, spot_frame_ptr, spot_index, spot_row, spot_col, spot_z, spot_sr,
                   spot_sc, spot_sz, spot_counts)
        flux = frame_flux[f]
        keep = expected_out.shape[0] > 0
        for r in range(ny):
            for c in range(nx):
                v = flux * (crystal_scale[j, r, c] * lam[r, c] + other_bg[r, c])
                if keep:
                    expected_out[j, r, c] = v
                state, out[j, r, c], counts = _pixel_value(state, v, gap_mask[r, c],
                                                           hot_value, gain)
                vmax = max(vmax, counts)
        frame_max[j] = vmax


QUADRATURE_WINDOW = 60.0  # the plate's depth integral is taken where mu*path < min + this


@numba.njit(cache=True)
def _plate_transmission_one(c_in, c_out, mu, t, nodes, weights):
    """(1/t) * integral over the depth z in [0, t] of exp(-mu (path_in(z) + path_out(z))),
    by Gauss-Legendre quadrature (nodes, weights on [-1, 1]).

    c_in > 0: cosine of the incident beam with the plate's normal n, n oriented into the
    plate from the face the beam enters (depth z grows along n); c_out: cosine of the
    outgoing direction with n (> 0: it leaves through the back face, z = t; < 0: through the
    entry face, z = 0).  The paths are computed point by point: path_in = z / c_in,
    path_out = (t - z) / c_out or z / |c_out|.  The integrand falls exponentially away from
    one end: the rule is laid over the part of [0, t] where mu * (path_in + path_out) is
    within QUADRATURE_WINDOW of its smallest value (the rest adds < exp(-60) of it), so
    rays near the plate's plane (huge paths) stay resolved.  Edge-on rays give ~0, no NaN.
    """
    tiny = 1e-12
    ci = max(c_in, tiny)
    co = c_out
    if abs(co) < tiny:
        co = tiny if co >= 0.0 else -tiny
    # mu * (path_in + path_out) at both ends (linear in z in between)
    if co > 0.0:
        g0 = mu * t / co  # z = 0: no path in, the whole thickness out
        g1 = mu * t / ci  # z = t
    else:
        g0 = 0.0
        g1 = mu * t * (1.0 / ci + 1.0 / (-co))
    gmin = min(g0, g1)
    slope = (g1 - g0) / t if t > 0.0 else 0.0
    a, b = 0.0, t
    if slope > 0.0 and g1 - gmin > QUADRATURE_WINDOW:
        b = QUADRATURE_WINDOW / slope
    elif slope < 0.0 and g0 - gmin > QUADRATURE_WINDOW:
        a = t - QUADRATURE_WINDOW / (-slope)
    half = 0.5 * (b - a)
    mid = 0.5 * (b + a)
    total = 0.0
    for i in range(nodes.shape[0]):
        z = mid + half * nodes[i]
        path_in = z / ci
        path_out = (t - z) / co if co > 0.0 else z / (-co)
        total += weights[i] * math.exp(-mu * (path_in + path_out))
    return total * half / t if t > 0.0 else 1.0


@numba.njit(parallel=True, cache=True)
def plate_transmission(c_in, c_out, mu, t, nodes, weights):
    """_plate_transmission_one for every c_out (1-d array; c_in a number)."""
    n = c_out.shape[0]
    res = np.empty(n, dtype=np.float64)
    for i in numba.prange(n):
        res[i] = _plate_transmission_one(c_in, c_out[i], mu, t, nodes, weights)
    return res
