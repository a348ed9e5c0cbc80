"""hklflow.algorithms.peaks.spotfinding: the streamed peak search of the simulated tiny
experiment's scans (searched once per module) against their truth (every measurable peak
found, none split, centroids to a tenth of a pixel and frame), the frame statistics, the hot
pixels, the peak columns; the same search on threads, in chunks of any size, from float
frames; the peak assembly across frames (PeakAssembler) in bounded memory; the hot-pixel
probe's minimum; a user mask file; a damaged frame named.  The kernel itself:
test_kernels.py; against DIALS: test_spotfinding_dials.py."""
from __future__ import annotations

import json
import subprocess
import sys

import h5py
import hdf5plugin
import numpy as np
import pytest

from hklflow.algorithms.peaks import kernels as pk
from hklflow.algorithms.peaks import spotfinding as sf
from hklflow.algorithms.peaks.spotfinding import search
from hklflow.base.errors import RawDataError
from hklflow.raw.frames import open_frames
from hklflow.settings.params import PeakSearchParams
from hklflow.simulation.compare import match_peaks

from experiment_helpers import detector
from experiment_helpers import raw as raw_path
from experiment_helpers import scan_setup

SCANS = ("tiny/300K/f1", "tiny/300K/f2", "tiny/100K/f1", "tiny/100K/f2")


@pytest.fixture(scope="module")
def searched(tiny_experiment, tiny_truth):
    out = {}
    for sid in SCANS:
        g, a = scan_setup(tiny_truth, sid)
        with open_frames(str(raw_path(tiny_experiment, sid))) as stack:
            out[sid] = search(stack, g, a, PeakSearchParams.defaults(), detector(g))
    return out


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
