"""The PDF of a volume as NXRefine computes it (nxreduce.py: fft_taper, total_pdf, delta_pdf):
real(fftshift(fftn(fftshift(data[:-1, :-1, :-1])))) / N in float32, data the (tapered)
volume cropped symmetric about 0; computed in the memory of its half spectrum, or, for a
volume even along each axis, from its octant by cosine transforms, and held as a PDF whose
values are computed where they are read."""
from __future__ import annotations

import numba
import numpy as np
import scipy.fft

from ...base.errors import GridError
from .q_grid import q2_row, q_metric
from .taper import check_q_max, taper_bounds, taper_of


def fft_crop(grid) -> list[slice]:
    """Per axis (h, k, l) the index range [i0 - m, i0 + m) with i0 the voxel at 0 and
    m = min(i0, n - 1 - i0): NXRefine's data[:-1, :-1, :-1] on a grid symmetric about 0."""
    out = []
    for name, ax in zip(("h", "k", "l"), grid.axes):
        i0 = int(round(-ax.start / ax.step))
        if not (0 <= i0 < ax.n and abs(ax.start + i0 * ax.step) <= 1e-6 * ax.step):
            raise GridError(f"the PDF needs a voxel at {name} = 0, but the {name} axis "
                            f"({ax.start:g} .. {ax.stop:g}, step {ax.step:g}) has none: make "
                            f"reduction.transform.grid.{name} symmetric about 0 with 0 on a voxel")
        m = min(i0, ax.n - 1 - i0)
        if m < 1:
            raise GridError(f"the PDF needs voxels on both sides of {name} = 0, but the {name} "
                            f"axis ({ax.start:g} .. {ax.stop:g}) ends at 0")
        out.append(slice(i0 - m, i0 + m))
    return out


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


SPECTRUM_PLANES = 8  # z planes per call of the first (real-to-complex) transform


class _ComputedPDF:
    """A PDF [z, y, x] (float32) whose values are computed where they are read, so that the
    whole PDF is never a second array in memory: indexing with integers and unit-step slices
    (a plane, a slab, a voxel) computes that part alone; np.asarray (or any other index)
    computes it all.  Subclasses fill a box: _compute(z0, y0, x0, out)."""

    def __init__(self, shape):
        self.shape = tuple(int(n) for n in shape)
        self.dtype = np.dtype(np.float32)
        self.ndim = 3
        self.size = int(np.prod(self.shape))
        self.scale = np.float32(1.0 / self.size)  # / N in float32, as NXRefine

    def _box(self, key):
        """([start, stop) per axis, the axes given an integer), or None when the key is
        not integers and unit-step slices."""
        key = key if isinstance(key, tuple) else (key,)
        if len(key) > 3:
            return None
        box, dropped = [], []
        for axis, (k, n) in enumerate(zip(key + (slice(None),) * (3 - len(key)), self.shape)):
            if isinstance(k, (int, np.integer)) and not isinstance(k, (bool, np.bool_)):
                i = int(k) + n if k < 0 else int(k)
                if not 0 <= i < n:
                    raise IndexError(f"index {k} is out of bounds for axis {axis} with size {n}")
                box.append((i, i + 1))
                dropped.append(axis)
            elif isinstance(k, slice):
                start, stop, step = k.indices(n)
                if step != 1:
                    return None
                box.append((start, max(start, stop)))
            else:
                return None
        return box, dropped

    def __getitem__(self, key):
        found = self._box(key)
        if found is None:
            return np.asarray(self)[key]
        box, dropped = found
        out = np.empty(tuple(b - a for a, b in box), np.float32)
        self._compute(box[0][0], box[1][0], box[2][0], out)
        return out.reshape(tuple(n for i, n in enumerate(out.shape) if i not in dropped))

    def __array__(self, dtype=None, copy=None):
        out = self[:, :, :]
        return out if dtype is None else out.astype(dtype)


class SpectrumPDF(_ComputedPDF):
    """A PDF held as the half spectrum rfftn computes (complex64, x frequencies >= 0: the
    size of the PDF itself)."""

    def __init__(self, half: np.ndarray, nx: int):
        super().__init__((half.shape[0], half.shape[1], nx))
        self.half = half

    def _compute(self, z0, y0, x0, out):
        _unfold_box(self.half, self.shape[2], self.scale, z0, y0, x0, out)


class CosinePDF(_ComputedPDF):
    """A PDF even along each axis, held as its octant of frequencies >= 0 (float32
    [nz/2 + 1, ny/2 + 1, nx/2 + 1], an eighth of the PDF's size)."""

    def __init__(self, octant: np.ndarray, shape):
        super().__init__(shape)
        self.octant = octant

    def _compute(self, z0, y0, x0, out):
        _unfold_octant(self.octant, self.scale, z0 - self.shape[0] // 2,
                       y0 - self.shape[1] // 2, x0 - self.shape[2] // 2, out)


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


def _cosine_octant(values, grid, crop, workers, taper):
    """The octant of pdf_spectrum's PDF for a volume even along each axis: the volume's
    mirror images averaged (for such a volume, themselves to rounding) into one octant of
    voxels 0 <= d <= m from Q = 0 along each axis (d = m: the plane the crop keeps, -m),
    then transformed by a type-1 discrete cosine transform along each axis, which is the
    transform of the even sequence of period 2 m: a real FFT of the whole cropped volume's
    values, in an eighth of the data.  Each plane is read once (a plane and its mirror
    plane together).  crop: fft_crop(grid), (h, k, l)."""
    m = np.array([(s.stop - s.start) // 2 for s in crop[::-1]], np.int64)  # (z, y, x)
    i0 = np.array([s.start + (s.stop - s.start) // 2 for s in crop[::-1]], np.int64)
    octant = np.empty(tuple(m + 1), np.float32)
    if taper is not None:
        cell, q_max, mean = taper
        check_q_max(q_max)
        g, (lo, hi) = q_metric(cell), taper_bounds(q_max)
    else:
        g, q_max, lo, hi, mean = np.eye(3), 1.0, 0.0, 0.0, 0.0
    read = values if callable(values) else (lambda a, b: np.asarray(values)[a:b])
    for o0 in range(0, m[0] + 1, COPY_PLANES):
        o1 = min(o0 + COPY_PLANES, m[0] + 1)
        up = read(i0[0] + o0, min(i0[0] + o1, i0[0] + m[0]))  # (+m is cropped away)
        down = read(i0[0] - o1 + 1, i0[0] - o0 + 1)[::-1]  # down[j]: plane -(o0 + j)
        if up.shape[0] < o1 - o0:  # the last block: +m itself is not read
            up = np.concatenate([up, down[up.shape[0]:]])
        if taper is not None and up.dtype != np.float32:
            raise ValueError(f"a tapered PDF needs float32 values, got {up.dtype}")
        _fold_planes(np.ascontiguousarray(up), np.ascontiguousarray(down), o0, i0, m, g,
                     grid.h.values, grid.k.values, grid.l.values[i0[0] + o0:i0[0] + o1],
                     float(q_max), lo, hi, np.float32(mean), taper is not None, octant)
    octant = scipy.fft.dctn(octant, type=1, workers=workers, overwrite_x=True)
    return octant, tuple(int(2 * n) for n in m)


COPY_PLANES = 8  # L planes read at a time when the volume comes plane by plane


def pdf_spectrum(values, grid, workers: int = 1, taper=None, even: bool = False
                 ) -> tuple[_ComputedPDF, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """pdf_fft's PDF as a SpectrumPDF, in half the memory: the (tapered) volume is copied,
    fftshifted, into the memory of its own half spectrum (rows padded to 2 (nx/2 + 1)
    floats, the in-place layout of FFTW) and transformed there: along x real to complex, a
    few planes at a time, then along z and y in place.  Those are rfftn's operations in
    rfftn's order: the same numbers, bit for bit.  values: float32 [l, k, h] on grid, or a
    function (l0, l1) -> its planes [l0, l1) (e.g. read from the volume file, so the
    volume and the spectrum are never in memory together).

    even: the volume is even along each axis (symmetrised by a Laue group with the mirrors
    -h,k,l, h,-k,l and h,k,-l): its PDF is real and even too, and comes from an octant of
    it by cosine transforms (a CosinePDF, an eighth of the memory and of the work)."""
    crop = fft_crop(grid)
    axes = tuple(scipy.fft.fftshift(scipy.fft.fftfreq(s.stop - s.start, ax.step))
                 for s, ax in zip(crop, grid.axes))
    if even:
        octant, shape = _cosine_octant(values, grid, crop, workers, taper)
        return CosinePDF(octant, shape), axes
    sh, sk, sl = crop
    nz, ny, nx = (s.stop - s.start for s in (sl, sk, sh))
    if taper is not None:
        cell, q_max, mean = taper
        check_q_max(q_max)
        g, bounds = q_metric(cell), taper_bounds(q_max)
    half = np.empty((nz, ny, nx // 2 + 1), np.complex64)
    padded = half.view(np.float32)  # [z, y, 2 (nx // 2 + 1)]: a row's first nx are the input
    slabs = ([(sl.start, np.asarray(values)[sl])] if not callable(values) else
             ((l0, values(l0, min(l0 + COPY_PLANES, sl.stop)))
              for l0 in range(sl.start, sl.stop, COPY_PLANES)))
    for l0, planes in slabs:
        src = planes[:, sk, sh]
        if taper is None:
            _shifted_copy(src, padded, l0 - sl.start)
            continue
        if src.dtype != np.float32:
            raise ValueError(f"a tapered PDF needs float32 values, got {src.dtype}")
        _tapered_shifted_copy(src, padded, l0 - sl.start, g, grid.h.values[sh],
                              grid.k.values[sk], grid.l.values[l0:l0 + src.shape[0]],
                              float(q_max), *bounds, np.float32(mean))
    for z0 in range(0, nz, SPECTRUM_PLANES):
        z1 = min(z0 + SPECTRUM_PLANES, nz)
        # rfft reads these planes' rows into an array of its own before they are overwritten
        half[z0:z1] = scipy.fft.rfft(padded[z0:z1, :, :nx], axis=-1, workers=workers)
    done = scipy.fft.fftn(half, axes=(0, 1), overwrite_x=True, workers=workers)
    if not np.shares_memory(done, half):  # (scipy transforms complex64 in place)
        half[...] = done
    del done
    return SpectrumPDF(half, nx), axes


def pdf_fft(values, grid, workers: int = 1, taper=None
            ) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(pdf float32 [z, y, x], (x, y, z) axes in lattice units): NXRefine's
    real(fftshift(fftn(fftshift(data)))) / N on the volume cropped symmetric about 0
    (fft_crop), NaN as 0, in float32.  taper (cell, q_max, mean): data is (values - mean)
    * tukey_taper(grid, cell, q_max) in float32, made in the copy the FFT needs anyway
    (values float32 [l, k, h], left unchanged).

    Computed as rfftn of the real input (pdf_spectrum; half the memory of fftn's complex
    output): the real part of the transform of real data is even, F(-k) = conj F(k), so
    the other half of the x frequencies is the mirror image.  x = fftshift(fftfreq(nx,
    step_h)), y from k, z from l."""
    spectrum, axes = pdf_spectrum(values, grid, workers, taper)
    return np.asarray(spectrum), axes
