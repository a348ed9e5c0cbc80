"""Peak search: the compiled kernel against its numpy reference, the peaks against the truth
of the simulated experiment, the frame statistics, the outputs and the failure modes."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import h5py
import hdf5plugin  # noqa: F401
import numpy as np
import pytest

from hklflow.algorithms.peaks import kernels as pk
from hklflow.algorithms.peaks import spotfinding as sf
from hklflow.algorithms.peaks.spotfinding import search
from hklflow.base.errors import ConfigError, RawDataError
from hklflow.base.numba_target import has_avx512
from hklflow.files.peaks import read_peaks_file
from hklflow.model.geometry import DetectorGeometry, ScanAngles
from hklflow.raw.frames import open_frames
from hklflow.settings.params import DetectorParams, PeakSearchParams, largest_trusted_value
from hklflow.simulation.compare import match_peaks
from hklflow.steps.find_peaks import main

from conftest import ingest_with, step_settings

SCANS = ("tiny/300K/f1", "tiny/300K/f2", "tiny/100K/f1", "tiny/100K/f2")


def detector(g: DetectorGeometry, **kw) -> DetectorParams:
    return DetectorParams.defaults(name=g.detector, **kw)


def raw_path(exp, scan_id):
    s, t, e = scan_id.split("/")
    return exp / "raw" / s / t / f"{e}.h5"


def scan_setup(truth, scan_id):
    t = truth["scans"][scan_id]
    return DetectorGeometry(**t["geometry"]), ScanAngles(t["phi_start"], t["phi_step"], t["nframes"])


@pytest.fixture(scope="module")
def searched(tiny_experiment, tiny_truth):
    out = {}
    for sid in SCANS:
        g, a = scan_setup(tiny_truth, sid)
        with open_frames(str(raw_path(tiny_experiment, sid))) as stack:
            out[sid] = search(stack, g, a, PeakSearchParams.defaults(), detector(g))
    return out


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


def test_search_of_a_float_scan_equals_the_integer_scan(tiny_experiment, tiny_truth, searched,
                                                       tmp_path):
    """A scan stored as float32 (corrected data) gives the same peaks, frame statistics and
    scan maximum as the same counts stored as integers (it used to stop at the maximum
    projection)."""
    sid = "tiny/100K/f2"
    with h5py.File(raw_path(tiny_experiment, sid), "r") as f:
        data = f["/entry/data/data"][()]
    path = tmp_path / "float.h5"
    with h5py.File(path, "w") as f:
        f["/entry/data/data"] = data.astype(np.float32)
    g, a = scan_setup(tiny_truth, sid)
    with open_frames(str(path)) as stack:
        assert stack.dtype == np.float32
        res = search(stack, g, a, PeakSearchParams.defaults(), detector(g))
    ref = searched[sid]
    assert len(ref.peaks["n_pixels"]) > 10
    for name, col in ref.peaks.items():
        np.testing.assert_array_equal(res.peaks[name], col, err_msg=name)
    for name, col in ref.frame_stats.items():
        np.testing.assert_array_equal(res.frame_stats[name], col, err_msg=name)
    np.testing.assert_array_equal(res.max_projection, ref.max_projection)
    # the scan's maximum (kept by the kernel for integer frames): numpy's, where usable
    shown = ref.max_projection >= 0
    assert shown.mean() > 0.9
    np.testing.assert_array_equal(ref.max_projection[shown], data.max(axis=0)[shown])


@pytest.mark.parametrize("threads,chunk", [(2, 4), (3, 7), (2, "auto"), (1, 1)])
def test_threads_give_the_same_search(tiny_experiment, tiny_truth, searched, threads, chunk):
    """Frames searched (and decompressed) by several threads at once, in chunks of any size,
    are assembled in frame order: the peaks, frame statistics, hot pixels and maximum equal
    one thread's."""
    sid = "tiny/300K/f1"
    g, a = scan_setup(tiny_truth, sid)
    with open_frames(str(raw_path(tiny_experiment, sid))) as stack:
        stack.read_threads = threads
        res = search(stack, g, a, PeakSearchParams.defaults(chunk_frames=chunk), detector(g),
                     threads=threads)
    ref = searched[sid]
    assert len(ref.peaks["n_pixels"]) > 10
    for name, col in ref.peaks.items():
        np.testing.assert_array_equal(res.peaks[name], col, err_msg=name)
    for name, col in ref.frame_stats.items():
        np.testing.assert_array_equal(res.frame_stats[name], col, err_msg=name)
    np.testing.assert_array_equal(res.max_projection, ref.max_projection)
    np.testing.assert_array_equal(res.hot_pixels, ref.hot_pixels)


def test_search_compiles_the_kernel_in_one_form(tiny_experiment, tiny_truth, searched):
    """A search passes the kernel a maximum to raise with every frame (the first one and the
    hot-pixel probe too), so that a fresh process compiles one form of it (~5 CPU-s each on
    a 2-core VM) and not two."""
    sid = "tiny/300K/f1"
    t = tiny_truth["scans"][sid]
    script = (
        "import json, sys\n"
        "from hklflow.algorithms.peaks import spotfinding as sf\n"
        "from hklflow.raw.frames import open_frames\n"
        "from hklflow.model.geometry import DetectorGeometry, ScanAngles\n"
        "from hklflow.settings.params import DetectorParams, PeakSearchParams\n"
        "t = json.loads(sys.argv[2])\n"
        "g = DetectorGeometry(**t['geometry'])\n"
        "a = ScanAngles(t['phi_start'], t['phi_step'], t['nframes'])\n"
        "p = PeakSearchParams.defaults()\n"
        "with open_frames(sys.argv[1]) as stack:\n"
        "    sf.search(stack, g, a, p, DetectorParams.defaults(name=g.detector))\n"
        "from hklflow.algorithms.peaks.kernels import _kernel_for_width\n"
        "print(len(_kernel_for_width(p.window[1] // 2).signatures))\n")
    run = subprocess.run([sys.executable, "-c", script, str(raw_path(tiny_experiment, sid)),
                          json.dumps(t)], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.split() == ["1"]


def test_chunk_frames_auto_holds_about_24_mb_of_frames():
    """'auto' (the default): whole frames of about 24 MB, at least one, at least the threads;
    a number is taken as it is (at least the threads)."""
    auto = PeakSearchParams.defaults()
    assert auto.chunk_frames == "auto"
    int32 = 4
    assert auto.frames_per_chunk(1679 * 1475 * int32) == 2  # Pilatus 2M
    assert auto.frames_per_chunk(2527 * 2463 * int32) == 1  # Pilatus 6M
    assert auto.frames_per_chunk(619 * 487 * int32) == 19  # Pilatus 300k
    assert auto.frames_per_chunk(4371 * 4150 * int32) == 1  # Eiger 16M: more than 24 MB
    assert auto.frames_per_chunk(1679 * 1475 * int32, threads=4) == 4
    assert PeakSearchParams.defaults(chunk_frames=16).frames_per_chunk(10**9) == 16
    assert PeakSearchParams.defaults(chunk_frames=3).frames_per_chunk(1, threads=8) == 8
    for bad in (0, "16", 2.5, "Auto"):
        with pytest.raises(ConfigError, match="chunk_frames: expected 'auto' or an integer >= 1"):
            PeakSearchParams.defaults(chunk_frames=bad)


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


def test_frame_statistics(tiny_experiment, tiny_truth, searched):
    sid = "tiny/300K/f2"
    res = searched[sid]
    with h5py.File(raw_path(tiny_experiment, sid), "r") as f:
        frames = f["/entry/data/data"][()]
    hot = np.zeros(frames.shape[1:], bool)
    hot[tuple(res.hot_pixels.T)] = True
    g, _ = scan_setup(tiny_truth, sid)
    usable = ~g.detector_mask() & ~hot
    for i in (0, 29, 59):
        fr = frames[i]
        ok = usable & (fr >= 0)
        assert res.frame_stats["sum"][i] == fr[ok].sum()
        assert res.frame_stats["max"][i] == fr[ok].max()
        assert res.frame_stats["n_valid"][i] == ok.sum()
    assert res.scan_max == max(frames[:, usable].max(), 0)
    # the trimmed sum leaves out strong pixels: below the annulus' plain sum, above 90% of it
    st = res.frame_stats
    assert np.all(st["trimmed_sum"] > 0) and np.all(st["n_annulus"] > 1000)
    assert np.all(st["trimmed_sum"] <= st["sum"])


def test_peaks_against_truth(tiny_truth, searched):
    """The issue's bounds, on all scans of the tiny experiment together."""
    tot = np.zeros(5)
    for sid, res in searched.items():
        m = match_peaks(res.peaks, tiny_truth["scans"][sid])
        print(sid, m.summary())
        tot += [m.n_truth_measurable, m.n_found_measurable, m.n_peaks, m.n_peaks_unmatched, m.n_split]
        assert m.median_abs_dxy_px <= 0.1 and m.median_abs_dz_frames <= 0.1
        assert abs(m.median_dx_px) < 0.03 and abs(m.median_dy_px) < 0.03  # no half-pixel slips
        assert abs(m.median_dz_frames) < 0.03
    measurable, found, npeaks, unmatched, split = tot
    assert measurable > 250
    assert found / measurable >= 0.99, (found, measurable)
    assert unmatched / npeaks <= 0.01, (unmatched, npeaks)
    assert split == 0  # partials across frames are one peak


def test_hot_pixels_are_found_and_make_no_peaks(tiny_truth, searched):
    hot_true = {tuple(rc) for rc in tiny_truth["detector_defects"]["hot_pixels"]}
    for res in searched.values():
        found = {tuple(rc) for rc in res.hot_pixels.tolist()}
        assert hot_true <= found
        assert len(found) <= len(hot_true) + 2
        p = res.peaks
        for r, c in hot_true:
            near = (np.abs(p["observed_px_y"] - (r + 0.5)) < 1.5) & (np.abs(p["observed_px_x"] - (c + 0.5)) < 1.5)
            assert not near.any()


def test_peak_columns_are_consistent(tiny_truth, searched):
    res = searched["tiny/300K/f1"]
    p = res.peaks
    n = len(p["n_pixels"])
    assert n > 50 and all(len(v) == n for v in p.values())
    bb = p["bounding_box"]
    assert np.all((p["observed_px_y"] >= bb[:, 0]) & (p["observed_px_y"] <= bb[:, 1]))
    assert np.all((p["observed_px_x"] >= bb[:, 2]) & (p["observed_px_x"] <= bb[:, 3]))
    assert np.all((p["observed_frame"] >= bb[:, 4]) & (p["observed_frame"] <= bb[:, 5]))
    assert np.all(p["n_pixels"] >= 3)
    np.testing.assert_allclose(p["observed_phi"], 0.0 + 1.0 * p["observed_frame"])
    g, _ = scan_setup(tiny_truth, "tiny/300K/f1")
    tth, chi = g.two_theta_chi(p["observed_px_y"], p["observed_px_x"])
    np.testing.assert_allclose(p["polar_angle"], np.degrees(tth))
    np.testing.assert_allclose(p["azimuthal_angle"], np.degrees(chi))
    strong = p["int_sum"] > 10 * np.sqrt(p["int_sum_var"])
    assert strong.sum() > 30


def test_assembly_memory_does_not_grow_with_frames():
    """Peaks are closed as frames pass: the number of slots in use stays bounded."""
    rng = np.random.default_rng(1)
    asm = sf.PeakAssembler((64, 64), capacity=64)
    high = []
    for f in range(600):
        k = 40
        rows = np.sort(rng.integers(0, 64, k)).astype(np.int32)
        cols = rng.integers(0, 64, k).astype(np.int32)
        order = np.lexsort((cols, rows))
        rows, cols = rows[order], cols[order]
        keep = np.ones(k, bool)
        keep[1:] = (rows[1:] != rows[:-1]) | (cols[1:] != cols[:-1])
        rows, cols = rows[keep], cols[keep]
        asm.add_frame(f, rows, cols, np.full(len(rows), 10.0), np.ones(len(rows)))
        high.append(asm.next_slot)
    table = asm.finish()
    assert len(table) > 1000
    assert max(high[300:]) <= max(high[:300]) * 1.5  # no growth with the scan length


def test_assembly_joins_across_frames_and_neighbours():
    asm = sf.PeakAssembler((10, 10), capacity=4)
    one = np.ones(1)
    asm.add_frame(0, np.array([2], np.int32), np.array([2], np.int32), 5 * one, one)
    asm.add_frame(1, np.array([2, 2], np.int32), np.array([2, 3], np.int32), 5 * np.ones(2), np.ones(2))
    asm.add_frame(2, np.array([3], np.int32), np.array([4], np.int32), 5 * one, one)  # diagonal: no
    asm.add_frame(3, np.array([7], np.int32), np.array([7], np.int32), 5 * one, one)
    t = asm.finish()
    npix = sorted(t.acc[:, pk.A_N].tolist())
    assert npix == [1.0, 1.0, 3.0]  # frame 2's pixel is not at a pixel of frame 1


def test_command_line_writes_nexus_and_png(tiny_copy, tiny_truth, monkeypatch):
    env_dir = tiny_copy
    monkeypatch.chdir(env_dir)  # steps run in the experiment directory, as under Snakemake
    # ingest with the true geometry (calibration is tested elsewhere)
    g, _ = scan_setup(tiny_truth, "tiny/300K/f1")
    ingest_with(env_dir, "tiny/300K/f1", g, env_dir / "scan.nxs")
    rc = main(["--settings", step_settings(env_dir, "find_peaks"), "--scan", "scan.nxs",
               "--out", "peaks.nxs", "--png", "peaks.png"])
    assert rc == 0
    rec = read_peaks_file(env_dir / "peaks.nxs")
    assert rec.scan_id == "tiny/300K/f1" and rec.entry == "f1"
    assert len(rec.peaks["observed_px_x"]) > 50
    assert len(rec.frame_stats["sum"]) == 60 and rec.scan_max > 0
    assert (env_dir / "peaks.png").stat().st_size > 10000
    with h5py.File(env_dir / "peaks.nxs", "r") as f:
        assert f["f1/peaks"].attrs["NX_class"] == "NXreflections"
        assert f["f1/peaks/observed_px_x"].attrs["units"] == "pixel"
        record = json.loads(f["f1/process/note/data"][()])
        assert record["program"] == "hklflow find_peaks"


def test_corrupt_frame_fails_naming_file_and_frame_and_leaves_nothing(tiny_copy, tiny_truth, capsys):
    """A chunk that cannot be decompressed in the middle of the scan."""
    raw = raw_path(tiny_copy, "tiny/300K/f1")
    with h5py.File(raw, "r+") as f:
        d = f["/entry/data/data"]
        filt, chunk = d.id.read_direct_chunk((31, 0, 0))
        d.id.write_direct_chunk((31, 0, 0), b"\x00" * 16 + chunk[16:64], filt)
    g, a = scan_setup(tiny_truth, "tiny/300K/f1")
    with pytest.raises(RawDataError) as e:
        with open_frames(str(raw)) as stack:
            search(stack, g, a, PeakSearchParams.defaults(), detector(g))
    assert str(raw) in str(e.value) and "31" in str(e.value)


def test_command_line_failure_names_file_and_frame_and_leaves_no_output(tiny_copy, tiny_truth,
                                                                      monkeypatch, capsys):
    monkeypatch.chdir(tiny_copy)
    ingest_with(tiny_copy, "tiny/300K/f1", scan_setup(tiny_truth, "tiny/300K/f1")[0],
                tiny_copy / "scan.nxs")
    raw = raw_path(tiny_copy, "tiny/300K/f1")
    with h5py.File(raw, "r+") as f:  # damage frame 44 after ingest's cheap first/last check
        d = f["/entry/data/data"]
        filt, chunk = d.id.read_direct_chunk((44, 0, 0))
        d.id.write_direct_chunk((44, 0, 0), b"\x00" * 16 + chunk[16:64], filt)
    (tiny_copy / "peaks.nxs").write_text("stale output of an earlier run")
    rc = main(["--settings", step_settings(tiny_copy, "find_peaks"), "--scan", "scan.nxs",
               "--out", "peaks.nxs", "--png", "peaks.png"])
    assert rc == 1
    assert not (tiny_copy / "peaks.nxs").exists() and not (tiny_copy / "peaks.png").exists()
    err = [ln for ln in capsys.readouterr().err.splitlines() if " ERROR: " in ln]
    assert err and "f1.h5" in err[-1] and "44" in err[-1], err


def test_user_mask_file_keeps_peaks_out(tiny_experiment, tiny_truth, tmp_path, searched):
    import fabio.tifimage

    sid = "tiny/300K/f1"
    g, a = scan_setup(tiny_truth, sid)
    mask = np.zeros(g.shape, np.uint8)
    mask[:, :240] = 1  # the left half of the detector
    fabio.tifimage.TifImage(data=mask).write(str(tmp_path / "mask.tif"))
    with open_frames(str(raw_path(tiny_experiment, sid))) as stack:
        res = search(stack, g, a, PeakSearchParams.defaults(),
                     detector(g, mask_file=str(tmp_path / "mask.tif")))
    x = res.peaks["observed_px_x"]
    assert len(x) > 20 and np.all(x > 240)
    unmasked = searched[sid].peaks["observed_px_x"]
    assert np.sum(unmasked > 243) - 3 <= len(x) <= np.sum(unmasked > 239)


def test_a_mask_file_leaving_no_pixel_is_refused_naming_it(tiny_copy, tiny_truth, monkeypatch,
                                                           capsys):
    """A user mask that masks every pixel (all NaN, or no 0 anywhere) used to give "0 peaks"
    and no word of the mask (issue 71): find_peaks stops on one line naming the mask file,
    as does every step reading it (masking.user_mask)."""
    import fabio.tifimage

    from hklflow.base.errors import ImageReadError
    from hklflow.raw.images import user_mask

    from experiment_helpers import edit_config

    g, _ = scan_setup(tiny_truth, "tiny/300K/f1")
    fabio.tifimage.TifImage(data=np.full(g.shape, np.nan, np.float32)).write(
        str(tiny_copy / "nan_mask.tif"))
    with h5py.File(tiny_copy / "ones_mask.h5", "w") as f:
        f["/entry/mask"] = np.ones(g.shape, np.uint8)
    with pytest.raises(ImageReadError, match=r"ones_mask\.h5: the mask leaves no pixel \(no "
                                             r"pixel is 0; non-zero = masked\)"):
        user_mask(detector(g, mask_file=str(tiny_copy / "ones_mask.h5")), g.shape)
    monkeypatch.chdir(tiny_copy)
    edit_config(tiny_copy, lambda c: c["instrument"].__setitem__(
        "detector", {"name": g.detector, "mask_file": "nan_mask.tif"}))
    ingest_with(tiny_copy, "tiny/300K/f1", g, tiny_copy / "scan.nxs")
    rc = main(["--settings", step_settings(tiny_copy, "find_peaks"), "--scan", "scan.nxs",
               "--out", "peaks.nxs", "--png", "peaks.png"])
    assert rc == 1 and not (tiny_copy / "peaks.nxs").exists()
    err = [ln for ln in capsys.readouterr().err.splitlines() if " ERROR: " in ln]
    assert err[-1].endswith(
        "find_peaks failed: nan_mask.tif: the mask leaves no pixel (NaN everywhere; non-zero = "
        "masked): expected 0 at the pixels to use (instrument.detector.mask_file)"), err


def test_frames_minimum_reads_a_chunk_at_a_time(tmp_path):
    """The hot-pixel probe's per-pixel minimum of the first frames, read into one chunk's
    buffer (fewer frames than the probe, and not a divisor of it): numpy's minimum over all
    of them, whatever the chunk; negative (gap) values included."""
    rng = np.random.default_rng(5)
    frames = rng.poisson(6.0, (20, 30, 40)).astype(np.int32)
    frames[:, 3, :] = -1
    path = tmp_path / "frames.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("/entry/data/data", data=frames, chunks=(1, 30, 40),
                         **hdf5plugin.Bitshuffle())
    with open_frames(str(path)) as stack:
        for chunk in (1, 3, 7, 20):
            buffer = np.full((chunk, 30, 40), 99, np.int32)
            for stop in (1, 5, 20):
                low = sf.frames_minimum(stack, stop, buffer)
                np.testing.assert_array_equal(low, frames[:stop].min(axis=0))


def test_a_nan_frame_does_not_hide_the_hot_pixels(tmp_path):
    """One NaN frame among the probe's of a float scan (issue 71): the per-pixel minimum
    passes over it, so the hot pixels stay hot and the search finds them all."""
    rng = np.random.default_rng(5)
    frames = rng.poisson(6.0, (20, 30, 40)).astype(np.float32)
    frames[:, 7, 9] += 5000  # hot in every frame
    frames[4] = np.nan
    path = tmp_path / "frames.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("/entry/data/data", data=frames, chunks=(1, 30, 40))
    with open_frames(str(path)) as stack:
        low = sf.frames_minimum(stack, 20, np.empty((3, 30, 40), np.float32))
    np.testing.assert_array_equal(low, np.nanmin(frames, axis=0))
    assert low[7, 9] > 5000


def test_the_dispersion_test_takes_the_detectors_gain_and_the_search_checks_it(caplog):
    """A detector of g counts per photon: the kernel's test with gain g equals the numpy
    reference's (DIALS's dispersion with its gain), finds the peaks and not the noise that
    the test with gain 1 takes for peaks; the background's variance / mean estimates g
    (background_dispersion), and a config that says otherwise is warned about."""
    import logging

    from hklflow.algorithms.peaks.gain import background_dispersion, check_gain

    rng = np.random.default_rng(4)
    photons = rng.poisson(6.0, (160, 150))
    photons[30:33, 40:43] += 400  # two peaks
    photons[100:103, 80:83] += 300
    valid = np.ones(photons.shape, bool)
    ny, nx = photons.shape
    out = [np.empty(ny * nx, np.int32), np.empty(ny * nx, np.int32), np.empty(ny * nx),
           np.empty(ny * nx), np.empty(len(sf.FRAME_STATS))]
    p = PeakSearchParams.defaults()
    for gain in (1.0, 2.0, 3.0):
        frame = (gain * photons).astype(np.int32)
        found = {}
        for g in sorted({1.0, gain}):
            n = sf.strong_pixels_frame(frame, sf.pixel_flags(valid), 3, 3, p.sigma_background,
                                       p.sigma_strong, p.min_local, p.global_threshold, 0.0,
                                       False, 2**31 - 1, *out, gain=g)
            strong = np.zeros(frame.shape, bool)
            strong[out[0][:n], out[1][:n]] = True
            ref, _ = sf.strong_pixels_numpy(frame, valid, gain=g)
            assert np.array_equal(strong, ref)
            found[g] = strong
        right = found[gain]
        assert right[30:33, 40:43].any() and right[100:103, 80:83].any()
        outside = np.ones(frame.shape, bool)
        outside[25:38, 35:48] = outside[95:108, 75:88] = False
        assert right[outside].sum() <= 3  # the noise stays noise
        if gain > 1:  # gain 1 takes the noise for peaks
            assert found[1.0][outside].sum() > 50 * max(1, right[outside].sum())
        assert background_dispersion(frame, valid, 3, 3) == pytest.approx(gain, rel=0.1)

    class Stack:  # (what check_gain reads of a FrameStack)
        nframes = 3

        def read(self, a, b):
            return np.repeat((2 * photons)[None], b - a, axis=0)

    with caplog.at_level(logging.INFO):
        notes = check_gain(Stack(), valid, 2**31 - 1, p, logging.getLogger("t"))
    assert len(notes) == 1 and "instrument.detector.gain is 1" in notes[0]
    assert "WARNING" in caplog.text
    import dataclasses

    assert check_gain(Stack(), valid, 2**31 - 1, dataclasses.replace(p, gain=2.0),
                          logging.getLogger("t")) == []
