"""The PDF of a volume as NXRefine computes it (nxreduce.py: fft_taper, total_pdf, delta_pdf):
real(fftshift(fftn(fftshift(data[:-1, :-1, :-1])))) / N in float32, data the (tapered)
volume cropped symmetric about 0; computed in the memory of its half spectrum, or, for a
volume even along each axis, from its octant by cosine transforms, and held as a PDF whose
values are computed where they are read."""
from __future__ import annotations

import numpy as np
import scipy.fft

from ...base.errors import GridError
from .kernels import _fold_planes, _shifted_copy, _tapered_shifted_copy, _unfold_box, _unfold_octant
from .q_grid import q_metric
from .taper import check_q_max, taper_bounds


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
