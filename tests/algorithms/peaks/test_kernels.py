"""hklflow.algorithms.peaks.kernels: the compiled strong-pixel kernel (through
spotfinding.strong_pixels_frame) against its numpy reference (spotfinding.strong_pixels_numpy)
and against exact integer arithmetic: every window, every integer and float type of frames,
trusted values, huge counts, rows without a usable pixel, exact ties of the strong test, the
absolute threshold; its AVX-512 and AVX2 forms alike; the pixel flags it reads
(spotfinding.pixel_flags, isolated_empty) and the frame statistics it sums."""
from __future__ import annotations

import os
import subprocess
import sys

import h5py
import hdf5plugin  # noqa: F401
import numpy as np
import pytest

from hklflow.algorithms.peaks import kernels as pk
from hklflow.algorithms.peaks import spotfinding as sf
from hklflow.base.numba_target import has_avx512
from hklflow.settings.params import PeakSearchParams, largest_trusted_value

from experiment_helpers import raw as raw_path


def run_kernel(frame, valid, p: PeakSearchParams, trusted_max=2**31 - 1, annulus=None):
    ny, nx = frame.shape
    cap = ny * nx
    rows, cols = np.empty(cap, np.int32), np.empty(cap, np.int32)
    vals, bg, stats = np.empty(cap), np.empty(cap), np.empty(len(sf.FRAME_STATS))
    n = sf.strong_pixels_frame(frame, sf.pixel_flags(valid, annulus), p.window[0] // 2,
                               p.window[1] // 2, p.sigma_background, p.sigma_strong, p.min_local,
                               p.global_threshold, float(p.absolute_threshold or 0),
                               p.method == "absolute", trusted_max, rows, cols, vals, bg, stats)
    strong = np.zeros((ny, nx), bool)
    strong[rows[:n], cols[:n]] = True
    return strong, bg[:n], stats


@pytest.mark.parametrize("window", [(7, 7), (5, 9), (3, 3), (3, 17)])
def test_kernel_equals_numpy_reference(tiny_experiment, window):
    with h5py.File(raw_path(tiny_experiment, "tiny/100K/f2"), "r") as f:
        frames = f["/entry/data/data"][::7]
    rng = np.random.default_rng(0)
    valid = rng.random(frames.shape[1:]) > 0.02  # a user mask with holes
    p = PeakSearchParams.defaults(window=window)
    total = 0
    for fr in frames:
        strong, bg, _ = run_kernel(fr, valid, p, trusted_max=100000)
        ref, mean = sf.strong_pixels_numpy(fr, valid, window[0] // 2, window[1] // 2,
                                           trusted_max=100000)
        total += ref.sum()
        assert np.array_equal(strong, ref)
        np.testing.assert_allclose(bg, mean[ref], rtol=1e-12)  # raster order both
    assert total > 100


@pytest.mark.parametrize("dtype", [np.uint16, np.uint32, np.int64])
def test_kernel_same_decisions_for_every_integer_type(tiny_experiment, dtype):
    """Detectors write uint16, uint32 or int32 frames: the same counts give the same strong
    pixels, local means and frame statistics whatever the type (the gap marker -1 becomes
    the type's maximum, which is not trusted)."""
    with h5py.File(raw_path(tiny_experiment, "tiny/100K/f2"), "r") as f:
        fr = np.minimum(f["/entry/data/data"][10], 60000)  # counts every type holds
    valid = np.ones(fr.shape, bool)
    p = PeakSearchParams.defaults()
    ref_strong, ref_bg, ref_stats = run_kernel(fr, valid, p)
    other = fr.astype(dtype)
    tmax = int(np.iinfo(dtype).max) if dtype != np.int64 else 2**31 - 1
    strong, bg, stats = run_kernel(other, valid, p, trusted_max=tmax)
    assert ref_strong.sum() > 10
    assert np.array_equal(strong, ref_strong)
    assert np.array_equal(bg, ref_bg) and np.array_equal(stats, ref_stats)


def test_frame_statistics_stay_exact_on_rows_longer_than_a_sum_segment():
    """The kernel sums a row's values as int32 sums of their low and high 16 bits over
    segments of SUM_SEGMENT columns (every lane 32-bit): on rows of 70001 columns (three
    segments) holding the largest values it may take, low halves 0xFFFF (one column more
    per segment and the low sum would wrap), the frame's sum, trimmed sum and counts equal
    the exact int64 ones."""
    ny, nx = 10, 2 * pk.SUM_SEGMENT + 4465
    largest = np.int32(0x7FFEFFFF)  # below trusted_max 2^31 - 1, low 16 bits all set
    rng = np.random.default_rng(11)
    frame = rng.integers(0, largest, (ny, nx)).astype(np.int32)
    frame[:5] = largest  # rows 0-4: no dispersion in rows 0-1's windows, none strong
    frame[6, ::3] = -1  # unusable: negative
    frame[8, 5::7] = 2**31 - 1  # unusable: not below trusted_max
    valid = rng.random((ny, nx)) > 0.1
    valid[:2] = True
    annulus = np.zeros((ny, nx), np.uint8)
    annulus[:, nx // 3: 2 * nx // 3] = 1
    annulus[1] = 1
    strong, _, stats = run_kernel(frame, valid, PeakSearchParams.defaults(), annulus=annulus)
    usable = valid & (frame >= 0) & (frame < 2**31 - 1)
    ring = usable & (annulus != 0) & ~strong
    assert stats[0] == frame[usable].astype(np.int64).sum()
    assert stats[1] == frame[usable].max() == largest
    assert stats[2] == frame[ring].astype(np.int64).sum()
    assert stats[3] == usable.sum() and stats[5] == ring.sum()
    assert ring[1].all() and usable[0].all()


@pytest.mark.parametrize("dtype", [np.int32, np.uint16, np.uint32, np.float32, np.float64])
def test_kernel_compares_with_trusted_max_in_the_frames_type(dtype):
    """The kernel compares values with the largest value of the frames' own type below
    trusted_max (params.largest_trusted_value: no int64 comparison to halve its lanes): a
    value one below trusted_max is usable and trusted_max itself is not, for every type; a
    trusted_max above a narrow type's range leaves its every value usable, and a float
    type's limit is the largest float below trusted_max, not trusted_max - 1 rounded up."""
    below32 = largest_trusted_value(2**31 - 1, np.float32)
    assert below32.dtype == np.float32 and float(below32) == 2**31 - 128
    tmax = 40000 if dtype == np.uint16 else (2**31 - 1 if np.dtype(dtype).kind == "f"
                                             else 3_000_000)
    frame = np.full((12, 16), 5, dtype)
    frame[3, 4] = tmax - 1
    frame[8, 9] = tmax
    if dtype == np.float32:  # tmax - 1 is not a float32: the largest float32 below tmax
        frame[3, 4] = float(below32)
    valid = np.ones(frame.shape, bool)
    _, _, stats = run_kernel(frame, valid, PeakSearchParams.defaults(), trusted_max=tmax)
    assert stats[3] == frame.size - 1  # n_valid: trusted_max left out
    assert stats[1] == float(frame[3, 4])
    if dtype == np.uint16:
        _, _, stats = run_kernel(frame, valid, PeakSearchParams.defaults(), trusted_max=70000)
        assert stats[3] == frame.size and stats[1] == tmax


def test_kernel_rounds_float_frames_to_counts(tiny_experiment):
    """Float frames (corrected data) are rounded to the nearest count, not truncated: counts
    minus 0.4 as float32 decide like the counts; NaN pixels are unusable."""
    with h5py.File(raw_path(tiny_experiment, "tiny/100K/f2"), "r") as f:
        fr = f["/entry/data/data"][10]
    valid = np.ones(fr.shape, bool)
    p = PeakSearchParams.defaults()
    ref_strong, ref_bg, ref_stats = run_kernel(fr, valid, p)
    strong, bg, stats = run_kernel(fr.astype(np.float32) - 0.4, valid, p)
    assert ref_strong.sum() > 10
    assert np.array_equal(strong, ref_strong) and np.array_equal(stats, ref_stats)
    holes = fr.astype(np.float64)
    holes[::50, ::50] = np.nan
    _, _, stats = run_kernel(holes, valid, p)
    usable = (fr >= 0) & (fr < 2**31 - 1)
    assert stats[3] == usable.sum() - usable[::50, ::50].sum()


def test_kernel_stays_exact_after_huge_counts():
    """Counts too large for the int32 window sums (> 4.3e7 for a 7 x 7 window) switch the
    first test to float64 column sums while they are in the window, and back once they
    have left: on a low background below 40 such counts, decisions and local means equal
    the exact (int64) reference, near the huge counts and below them."""
    rng = np.random.default_rng(3)
    frame = rng.poisson(1.5, (160, 120)).astype(np.int32)
    yy, xx = np.mgrid[:160, :120]
    frame += (60 * np.exp(-((yy - 120) ** 2 + (xx - 60) ** 2) / 4)).astype(np.int32)  # a spot
    huge = rng.integers(1_000_000_000, 2_100_000_000, 46)
    frame[rng.integers(0, 40, 40), rng.integers(0, 120, 40)] = huge[:40]  # from the start
    frame[rng.integers(80, 90, 6), rng.integers(0, 120, 6)] = huge[40:]  # and midway
    valid = np.ones(frame.shape, bool)
    strong, bg, stats = run_kernel(frame, valid, PeakSearchParams.defaults())
    ref, mean = sf.strong_pixels_numpy(frame, valid)
    assert ref[115:125, 55:65].sum() >= 5 and ref[:40].sum() >= 30
    assert np.array_equal(strong, ref)
    np.testing.assert_allclose(bg, mean[ref], rtol=1e-12)
    assert stats[1] == huge.max() and stats[0] == frame.astype(np.int64).sum()


def test_kernel_decides_exactly_beside_rows_without_a_usable_pixel():
    """Rows with no usable pixel (the gaps between a Pilatus's rows of modules: 7% of a 2M's
    rows): the strong pixels, local means, frame statistics and maximum of the usable pixels
    equal the exact reference, for gaps at the edges, one row wide, wider than the window,
    and beside counts too large for the int32 sums."""
    rng = np.random.default_rng(5)
    frame = rng.poisson(2.0, (150, 110)).astype(np.int32)
    yy, xx = np.mgrid[:150, :110]
    for y0, x0 in ((30, 40), (64, 20), (108, 80)):  # spots next to the gaps
        frame += (80 * np.exp(-((yy - y0) ** 2 + (xx - x0) ** 2) / 4)).astype(np.int32)
    huge = rng.integers(1_000_000_000, 2_100_000_000, 8)
    frame[rng.integers(84, 88, 8), rng.integers(0, 110, 8)] = huge  # right above a gap
    valid = rng.random(frame.shape) > 0.02
    dead = np.zeros(150, bool)
    for a, b in ((0, 2), (33, 34), (45, 62), (88, 105), (147, 150)):
        dead[a:b] = True
    valid[dead] = False
    frame[dead] = -1
    p = PeakSearchParams.defaults()
    ny, nx = frame.shape
    rows, cols = np.empty(ny * nx, np.int32), np.empty(ny * nx, np.int32)
    vals, bg, stats = np.empty(ny * nx), np.empty(ny * nx), np.empty(len(sf.FRAME_STATS))
    maxproj = np.full(frame.shape, np.iinfo(np.int32).min, np.int32)
    n = sf.strong_pixels_frame(frame, sf.pixel_flags(valid), 3, 3, p.sigma_background,
                               p.sigma_strong, p.min_local, p.global_threshold, 0.0, False,
                               2**31 - 1, rows, cols, vals, bg, stats, maxproj)
    strong = np.zeros(frame.shape, bool)
    strong[rows[:n], cols[:n]] = True
    ref, mean = sf.strong_pixels_numpy(frame, valid)
    assert ref[~dead].sum() > 20 and not ref[dead].any()
    assert ref[28:33, 38:43].any() and ref[106:111, 78:83].any()
    assert np.array_equal(strong, ref)
    np.testing.assert_allclose(bg[:n], mean[ref], rtol=1e-12)
    assert stats[0] == frame[valid].astype(np.int64).sum() and stats[1] == frame[valid].max()
    assert stats[3] == valid.sum() and stats[4] == n
    assert np.array_equal(maxproj[valid], frame[valid])


KERNEL_FORMS_SCRIPT = """
import hashlib, sys
import numpy as np
from hklflow.algorithms.peaks import spotfinding as sf
from hklflow.algorithms.peaks.kernels import ONE_ROW_LOOP
rng = np.random.default_rng(11)
h = hashlib.sha256()
for k in range(6):
    frame = rng.poisson(3.0 + 40 * k, (130, 157)).astype(np.int32)
    yy, xx = np.mgrid[:130, :157]
    frame += (300 * np.exp(-((yy - 20 * k - 10) ** 2 + (xx - 70) ** 2) / 5)).astype(np.int32)
    frame[rng.integers(0, 130, 30), rng.integers(0, 157, 30)] = -1
    frame[rng.integers(0, 130, 5), rng.integers(0, 157, 5)] = rng.integers(10**9, 2 * 10**9, 5)
    flags = sf.pixel_flags(rng.random(frame.shape) > 0.03, yy > 60)
    for half_r, half_c, absolute in ((3, 3, False), (1, 8, False), (3, 3, True)):
        cap = frame.size
        out = [np.zeros(cap, np.int32), np.zeros(cap, np.int32), np.zeros(cap), np.zeros(cap)]
        stats, maxproj = np.zeros(6), np.zeros_like(frame)
        n = sf.strong_pixels_frame(frame, flags, half_r, half_c, 6.0, 3.0, 2, 0, 50.0, absolute,
                                   2**31 - 1, *out, stats, maxproj)
        for a in out + [stats, maxproj]:
            h.update(np.ascontiguousarray(a[:n] if a.ndim == 1 and a.size == cap else a).tobytes())
        assert n > 0
print(ONE_ROW_LOOP, h.hexdigest())
"""


def test_kernel_forms_for_avx512_and_avx2_decide_alike(tmp_path):
    """The kernel updates its column sums in the row's loop where numba compiles for
    AVX-512 and in a loop of their own elsewhere (the faster form of each): compiled for
    x86-64-v3 (AVX2) in a process of its own, it gives the same strong pixels, means,
    statistics and maximum as here, byte for byte."""
    if os.uname().machine not in ("x86_64", "AMD64"):
        pytest.skip("x86-64 targets only")
    v3 = ("+64bit,+avx,+avx2,+bmi,+bmi2,+cmov,+cx16,+cx8,+f16c,+fma,+fxsr,+lzcnt,+mmx,"
          "+movbe,+popcnt,+sahf,+sse,+sse2,+sse3,+sse4.1,+sse4.2,+ssse3,+xsave")
    runs = []
    for env in ({}, dict(NUMBA_CPU_NAME="x86-64-v3", NUMBA_CPU_FEATURES=v3,
                         NUMBA_CACHE_DIR=str(tmp_path))):
        run = subprocess.run([sys.executable, "-c", KERNEL_FORMS_SCRIPT],
                             env=dict(os.environ, **env), capture_output=True, text=True,
                             timeout=600)
        assert run.returncode == 0, run.stderr[-3000:]
        runs.append(run.stdout.split())
    here, avx2 = runs
    assert avx2[0] == "False" and here[0] == str(pk.ONE_ROW_LOOP)
    assert here[0] == str(has_avx512())
    assert here[1] == avx2[1]


def exact_first_test_and_dispersion(frame, half):
    """Strong pixels for sigma_strong 3, sigma_background 0, min_local 2 in exact integer
    arithmetic (Python ints): d = x n - s > 0, d^2 > 9 s n, and n q - s^2 - (n - 1) s > 0."""
    ny, nx = frame.shape
    out = np.zeros(frame.shape, bool)
    v = frame.astype(object)
    for r in range(ny):
        for c in range(nx):
            win = v[max(r - half, 0):r + half + 1, max(c - half, 0):c + half + 1]
            n, s, q, x = win.size, int(win.sum()), int((win * win).sum()), int(v[r, c])
            d = x * n - s
            out[r, c] = d > 0 and s > 0 and d * d > 9 * s * n and n * q - s * s - (n - 1) * s > 0
    return out


def test_kernel_decides_exact_ties_of_the_strong_test_exactly():
    """The first test runs in int32 and float32 lanes with a margin, the pixels it lets
    through are tested again in float64: at exact ties of x > m + 3 sqrt(m) (d^2 = 9 s n,
    float32 cannot tell them from one count more or less) the decisions are those of exact
    integer arithmetic.  With x = k^2 + 3k and the 48 neighbours summing to 48 x - 147 k a
    7 x 7 window ties exactly; the tiles hold the tie and one count more or less at the
    centre or in a neighbour."""
    rng = np.random.default_rng(5)
    tiles = []
    ks = [60, 100] + sorted(rng.integers(1000, 6000, 22).tolist())  # x up to 3.6e7
    for k in ks:
        x = k * k + 3 * k
        s48 = 48 * x - 147 * k
        for dx, ds in ((0, 0), (1, 0), (-1, 0), (0, 1), (0, -1)):
            tile = rng.integers(-x // 20, x // 20, (7, 7)) + s48 // 48  # variance >> mean
            tile[3, 3] = 0
            tile[0, 0] += s48 + ds - tile.sum()
            tile[3, 3] = x + dx
            tiles.append(tile)
    frame = np.block([[tiles[i * 5 + j] for j in range(5)]
                      for i in range(len(ks))]).astype(np.int32)
    valid = np.ones(frame.shape, bool)
    p = PeakSearchParams.defaults(sigma_background=0.0)
    strong, _, _ = run_kernel(frame, valid, p)
    exact = exact_first_test_and_dispersion(frame, 3)
    centres = exact[3::7, 3::7]
    assert centres.tolist() == [[False, True, False, False, True]] * len(ks)  # ties decided
    assert np.array_equal(strong, exact)


def test_pixel_flags_are_one_isolated_byte_per_pixel():
    """The kernel reads one uint8 per pixel for the usable mask and the Q annulus, in an
    array with ISOLATION_BYTES of its buffer unused on either side (the kernel ran at 12
    instead of 5 ms per 2M frame when two of its arrays lay back to back); it counts usable
    pixels and the annulus from those bits, and refuses other flags naming what it
    expected."""
    rng = np.random.default_rng(5)
    usable = rng.random((60, 80)) > 0.2
    annulus = rng.random((60, 80)) > 0.5
    flags = sf.pixel_flags(usable, annulus)
    assert flags.dtype == np.uint8 and flags.flags.c_contiguous and flags.max() <= 3
    assert np.array_equal((flags & pk.USABLE) != 0, usable)
    assert np.array_equal((flags & pk.IN_ANNULUS) != 0, annulus)
    assert np.array_equal(sf.pixel_flags(usable.astype(np.uint8)), usable.astype(np.uint8))
    for a in (flags, sf.isolated_empty((7, 5), np.int32)):
        owner = a
        while owner.base is not None:
            owner = owner.base
        before = a.ctypes.data - owner.ctypes.data
        after = owner.ctypes.data + owner.nbytes - (a.ctypes.data + a.nbytes)
        assert a.ctypes.data % 4096 == 0
        assert min(before, after) >= sf.ISOLATION_BYTES
    frame = rng.poisson(5.0, usable.shape).astype(np.int32)
    strong, _, stats = run_kernel(frame, usable, PeakSearchParams.defaults(),
                                  annulus=annulus.astype(np.uint8))
    assert stats[3] == usable.sum()  # n_valid
    assert stats[5] == (usable & annulus & ~strong).sum()  # n_annulus, strong pixels left out
    assert stats[2] == frame[usable & annulus & ~strong].sum()  # trimmed sum
    p = PeakSearchParams.defaults()
    cap = frame.size
    bufs = (np.empty(cap, np.int32), np.empty(cap, np.int32), np.empty(cap), np.empty(cap),
            np.empty(len(sf.FRAME_STATS)))
    for bad in (usable, flags[:, :40]):
        with pytest.raises(ValueError, match="expected uint8 of the frame's shape"):
            sf.strong_pixels_frame(frame, bad, 3, 3, p.sigma_background, p.sigma_strong,
                                   p.min_local, 0.0, 0.0, False, 2**31 - 1, *bufs)


def test_absolute_threshold_method(tiny_experiment):
    with h5py.File(raw_path(tiny_experiment, "tiny/300K/f1"), "r") as f:
        fr = f["/entry/data/data"][5]
    valid = np.ones(fr.shape, bool)
    strong, _, _ = run_kernel(fr, valid, PeakSearchParams.defaults(method="absolute", absolute_threshold=50))
    assert np.array_equal(strong, (fr > 50) & (fr < 2**31 - 1))
