"""The compiled loops of the PDFs: |Q|^2 along a row of the grid (q_grid), the Tukey window
(taper), the shifted and unfolded copies around the FFT and the cosine transform's folded
planes (fft), the sigma of an even volume's PDF (sigma), and the shells a volume covers
(volume).  The punch and fill's loops are in fill_kernels."""
from __future__ import annotations

import math

import numba
import numpy as np

# below R = 2 - TAPER_SURE the float32 taper is certainly above 0 (0.5 (1 - cos pi R) >=
# 2.4e-6 there): its cosine is computed only in the last sliver before R = 2
TAPER_SURE = 1e-3


@numba.njit(inline="always")
def q2_row(g, h, k, ll, out):
    """|Q|^2 (metric g: q_metric) of the voxels of one row along h at (k, l): g00 h h + g11 k k
    + g22 l l + 2 (g01 h k + g02 h l + g12 k l), summed in that order (no FMA), with the terms
    that do not depend on h taken out of the loop (a loop simple enough to vectorise)."""
    kk = g[1, 1] * k * k
    l2 = g[2, 2] * ll * ll
    kl = g[1, 2] * k * ll
    g00, g01, g02 = g[0, 0], g[0, 1], g[0, 2]
    for c in range(h.size):
        hc = h[c]
        out[c] = g00 * hc * hc + kk + l2 + 2 * (g01 * hc * k + g02 * hc * ll + kl)


@numba.njit(inline="always")
def taper_of(q2, lo, hi, q_max):
    """The Tukey taper (float64) at |Q|^2 = q2: R = 2|Q|/q_max.  Well inside R = 1 (q2 < lo)
    or beyond R = 2 (q2 > hi) it is known without the square root."""
    if q2 < lo:
        return 1.0
    if q2 > hi:
        return 0.0
    r = 2.0 * math.sqrt(max(q2, 0.0)) / q_max
    if r <= 1.0:
        return 1.0
    if r < 2.0:
        return 0.5 * (1.0 - math.cos(math.pi * r))
    return 0.0


@numba.njit(cache=True, nogil=True)
def _taper_volume(g, h, k, ll, q_max, lo, hi, out):
    q2 = np.empty(h.size)
    for a in range(ll.size):
        for b in range(k.size):
            q2_row(g, h, k[b], ll[a], q2)
            for c in range(h.size):
                out[a, b, c] = np.float32(taper_of(q2[c], lo, hi, q_max))


@numba.njit(inline="always")
def _taper_above_zero(q2, lo, hi, q_max):
    """np.float32(taper_of(q2, ...)) > 0, without the cosine but next to R = 2 (the cosine
    was most of _taper_statistics' time; bench/full_rotation.py measures the PDF steps)."""
    if q2 < lo:
        return True
    if q2 > hi:
        return False
    r = 2.0 * math.sqrt(max(q2, 0.0)) / q_max
    if r < 2.0 - TAPER_SURE:
        return True
    return np.float32(taper_of(q2, lo, hi, q_max)) > 0


@numba.njit(cache=True, nogil=True)
def _taper_statistics(g, h, k, ll, q_max, lo, hi, q2_sphere, values, sums, counts):
    """In one pass over |Q|, added to what sums and counts hold (so that a volume may come
    slab by slab, in the order of one pass, with the same float64 sum): sums[0] the sum of
    the finite voxels where the float32 taper is above 0, counts[0] their number, counts[1]
    the voxels with |Q|^2 <= q2_sphere and counts[2] those of them not measured (not
    finite).  (One pass over the volume, not two: each pass costs as much.)"""
    q2 = np.empty(h.size)
    total = sums[0]
    count = counts[0]
    inside = counts[1]
    unmeasured = counts[2]
    for a in range(ll.size):
        for b in range(k.size):
            q2_row(g, h, k[b], ll[a], q2)
            for c in range(h.size):
                v = values[a, b, c]
                finite = math.isfinite(v)
                if q2[c] <= q2_sphere:
                    inside += 1
                    unmeasured += not finite
                if finite and _taper_above_zero(q2[c], lo, hi, q_max):
                    total += v
                    count += 1
    sums[0] = total
    counts[0] = count
    counts[1] = inside
    counts[2] = unmeasured


@numba.njit(cache=True, nogil=True)
def _shifted_copy(src, out, a0):
    """out = fftshift(src) as float32, NaN as 0, in one pass (each row in two runs, no
    modulo in the inner loop); src: planes a0.. of the volume out has room for (its rows
    may be longer: the first nx are written)."""
    ny, nx = src.shape[1], src.shape[2]
    nz = out.shape[0]
    sx = nx // 2
    for a in range(src.shape[0]):
        za = (a0 + a + nz // 2) % nz
        for b in range(ny):
            row = out[za, (b + ny // 2) % ny]
            for c in range(nx - sx):
                v = np.float32(src[a, b, c])
                row[c + sx] = v if v == v else np.float32(0.0)
            for c in range(nx - sx, nx):
                v = np.float32(src[a, b, c])
                row[c - (nx - sx)] = v if v == v else np.float32(0.0)


@numba.njit(cache=True, nogil=True)
def _tapered_shifted_copy(src, out, a0, g, h, k, ll, q_max, lo, hi, mean):
    """_shifted_copy of (src - mean) * tukey_taper (float32: the difference rounded, then
    the product, as numpy's in-place subtract and multiply would); h, k, ll: the voxel
    coordinates of src.  The volume itself is left as it is (no tapered copy of it)."""
    ny, nx = src.shape[1], src.shape[2]
    nz = out.shape[0]
    sx = nx // 2
    q2 = np.empty(nx)
    t = np.empty(nx, np.float32)
    for a in range(src.shape[0]):
        za = (a0 + a + nz // 2) % nz
        for b in range(ny):
            row = out[za, (b + ny // 2) % ny]
            q2_row(g, h, k[b], ll[a], q2)
            for c in range(nx):
                t[c] = np.float32(taper_of(q2[c], lo, hi, q_max))
            for c in range(nx - sx):
                v = (src[a, b, c] - mean) * t[c]
                row[c + sx] = v if v == v else np.float32(0.0)
            for c in range(nx - sx, nx):
                v = (src[a, b, c] - mean) * t[c]
                row[c - (nx - sx)] = v if v == v else np.float32(0.0)


@numba.njit(cache=True, nogil=True)
def _unfold_box(half, nx, scale, z0, y0, x0, out):
    """out[a, b, c] = the PDF at (z0 + a, y0 + b, x0 + c): fftshift of the real part of the
    full transform whose x >= 0 half is `half` (rfftn's output, of a real input nx long in
    x), times scale.  Frequency (z, y, x) of the PDF is (z - nz/2, y - ny/2, x - nx/2); the
    negative x are the mirror image (-z, -y, -x) of the positive ones."""
    nz, ny = half.shape[0], half.shape[1]
    cx = nx // 2
    w = out.shape[2]
    split = min(max(cx - x0, 0), w)  # out[..., :split] has x < cx
    for a in range(out.shape[0]):
        z = z0 + a
        zp = (z - nz // 2) % nz
        zn = (nz // 2 - z) % nz
        for b in range(out.shape[1]):
            y = y0 + b
            row = out[a, b]
            negative = half[zn, (ny // 2 - y) % ny]
            positive = half[zp, (y - ny // 2) % ny]
            for c in range(split):
                row[c] = negative[cx - x0 - c].real * scale
            for c in range(split, w):
                row[c] = positive[x0 + c - cx].real * scale


@numba.njit(cache=True, nogil=True)
def _unfold_octant(octant, scale, z0, y0, x0, out):
    """out[a, b, c] = octant[|z0 + a|, |y0 + b|, |x0 + c|] * scale (z0, y0, x0: frequencies)."""
    for a in range(out.shape[0]):
        plane = octant[abs(z0 + a)]
        for b in range(out.shape[1]):
            row = plane[abs(y0 + b)]
            for c in range(out.shape[2]):
                out[a, b, c] = row[abs(x0 + c)] * scale


@numba.njit(inline="always")
def _images(o, m, i0):
    """The voxel indices along an axis whose offsets from 0 are +-o and which the crop
    keeps (-m <= d < m): (first, second, how many)."""
    if o == 0:
        return i0, i0, 1
    if o == m:
        return i0 - m, i0 - m, 1
    return i0 + o, i0 - o, 2


@numba.njit(cache=True, nogil=True)
def _fold_planes(up, down, o0, i0, m, g, h, k, ll, q_max, lo, hi, mean, tapered, octant):
    """octant[oz, oy, ox] for oz in [o0, o0 + len(up)): the mean of the volume's voxels at
    offsets (+-oz, +-oy, +-ox) from Q = 0 that the crop keeps (_images), each as the FFT's
    copy makes it (float32 (v - mean) * taper when tapered, NaN as 0), summed in float64.
    up[j]: the plane at offset +(o0 + j) (at -m for oz = m), down[j]: the plane at -(o0 + j);
    i0: the voxel at 0 along (l, k, h); ll: the l of the planes up.  The metric of a volume
    even along each axis is orthogonal: one taper value serves all the images."""
    mz, my, mx = m[0], m[1], m[2]
    q2 = np.empty(mx + 1)
    t = np.ones(mx + 1, np.float32)
    hp = h[i0[2]:i0[2] + mx + 1]
    for a in range(up.shape[0]):
        oz = o0 + a
        nz = 2 if 0 < oz < mz else 1
        for oy in range(my + 1):
            y1, y2, ny = _images(oy, my, i0[1])
            if tapered:
                q2_row(g, hp, k[y1], ll[a], q2)
                for ox in range(mx + 1):
                    t[ox] = np.float32(taper_of(q2[ox], lo, hi, q_max))
            out = octant[oz, oy]
            for ox in range(mx + 1):
                if tapered and t[ox] == 0:
                    out[ox] = 0.0
                    continue
                x1, x2, nx = _images(ox, mx, i0[2])
                total = 0.0
                for iz in range(nz):
                    plane = up[a] if iz == 0 else down[a]
                    for iy in range(ny):
                        row = plane[y1 if iy == 0 else y2]
                        for ix in range(nx):
                            w = row[x1 if ix == 0 else x2]
                            v = (w - mean) * t[ox] if tapered else np.float32(w)
                            if v == v:
                                total += v
                out[ox] = total / (nz * ny * nx)


@numba.njit(inline="always")
def _wrap(q, half, n):
    """q as a frequency in [-half, n - half) (q is a few periods away at most: no
    division, which cost most of the time)."""
    while q < -half:
        q += n
    while q >= n - half:
        q -= n
    return q


@numba.njit(cache=True, nogil=True)
def _sigma_values(w, w_octant, w_scale, maps, n, inv_n, k0, t, c, nb, v, out):
    """out[a, b, d] = sigma at the frequency (x, y, z) = (k0[2] + d, k0[1] + b, k0[0] + a)
    (h, k, l order; the PDF's voxel at frequency + n / 2).  w: W [z, y, x] fftshifted
    (w_octant False) or its octant of |frequencies| (True), times w_scale; maps (g, 3, 3)
    int64 acting on frequency columns; t, c: T and C on out's voxels (None without the mean
    term)."""
    nx, ny, nz = n[0], n[1], n[2]
    hx, hy, hz = nx // 2, ny // 2, nz // 2
    for a in range(out.shape[0]):
        kz = k0[0] + a
        for b in range(out.shape[1]):
            ky = k0[1] + b
            for d in range(out.shape[2]):
                kx = k0[2] + d
                total = 0.0
                for o in range(maps.shape[0]):
                    m = maps[o]
                    mx = m[0, 0] * kx + m[0, 1] * ky + m[0, 2] * kz
                    my = m[1, 0] * kx + m[1, 1] * ky + m[1, 2] * kz
                    mz = m[2, 0] * kx + m[2, 1] * ky + m[2, 2] * kz
                    for sign in (-1, 1):
                        qx = _wrap(kx + sign * mx, hx, nx)
                        qy = _wrap(ky + sign * my, hy, ny)
                        qz = _wrap(kz + sign * mz, hz, nz)
                        if w_octant:
                            total += w[abs(qz), abs(qy), abs(qx)]
                        else:
                            total += w[qz + hz, qy + hy, qx + hx]
                var = 0.5 * total * w_scale * inv_n
                if t is not None:
                    tk = np.float64(t[a, b, d])
                    var += tk * (tk * v / nb - 2.0 * np.float64(c[a, b, d])) / nb
                out[a, b, d] = np.float32(np.sqrt(var)) if var > 0 else np.float32(0.0)


@numba.njit(cache=True, nogil=True)
def _shell_counts(g, h, k, ll, width, values, total, seen):
    """Voxels per shell of |Q| (width wide; the last shell takes all beyond) and the measured
    (finite) ones, in one pass: numpy's planes of |Q|^2, sqrt and two bincounts, and a bool
    array of the measured voxels, cost several times more (bench/full_rotation.py measures
    the PDF steps)."""
    last = total.size - 1
    q = np.empty(h.size)
    for a in range(ll.size):
        for b in range(k.size):
            q2_row(g, h, k[b], ll[a], q)
            for c in range(h.size):
                q[c] = math.sqrt(max(q[c], 0.0))
            for c in range(h.size):
                shell = min(int(q[c] / width), last)
                total[shell] += 1
                if math.isfinite(values[a, b, c]):
                    seen[shell] += 1


@numba.njit(cache=True, nogil=True)
def _largest_measured_q2(g, h, k, ll, values):
    """The largest |Q|^2 of a measured (finite) voxel, -1 when none is."""
    largest = -1.0
    q2 = np.empty(h.size)
    for a in range(ll.size):
        for b in range(k.size):
            q2_row(g, h, k[b], ll[a], q2)
            for c in range(h.size):
                if math.isfinite(values[a, b, c]) and q2[c] > largest:
                    largest = q2[c]
    return largest
