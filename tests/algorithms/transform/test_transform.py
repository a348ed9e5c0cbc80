"""The (H, K, L) transform: the compiled kernel against plain numpy and against
the geometry's own pixel -> hkl mapping (pinned to pyFAI and cctbx in test_geometry), total
intensity conservation, independence of the frame chunking, the punch, sub-steps.  The
grid itself (hklflow.model.grid): tests/model/test_grid.py."""
from __future__ import annotations

import math
import sys

import numpy as np
import pytest

from hklflow.algorithms.transform import (BLOCK, SubSteps, Transformer, allowed_table,
                                          auto_subdivide, block_sub_steps, bragg_block_summary,
                                          frame_matrices, live_blocks, pixel_table,
                                          transform_frames)
from hklflow.model.geometry import DetectorGeometry, Goniometer, ScanAngles, ScanGeometry
from hklflow.model.grid import Axis, Grid
from hklflow.raw.frames import open_frames

from experiment_helpers import raw
from transform_reference import numpy_transform

SCAN = "tiny/100K/f2"


# ---- kernel --------------------------------------------------------------------------------
def test_kernel_equals_numpy_reference(setup):
    scan, UB, crystal, table, grid, frames = setup
    fr = frames[10:16]
    M = frame_matrices(scan, 10, 16, 2)
    scale = np.linspace(0.8, 1.3, 6)  # a monitor
    rng = np.random.default_rng(1)
    bragg = (rng.random((6, fr[0].size)) < 0.05).astype(np.uint8)
    tr = Transformer(grid, table, 2 ** 31 - 1, kinds=("masked_transform",))
    tr.add(fr, M, scale, bragg)
    s, w = tr.acc.arrays()
    s_ref, w_ref = numpy_transform(fr, table, M, scale, 2 ** 31 - 1, grid, bragg=bragg)
    assert np.array_equal(w, w_ref)
    assert np.count_nonzero(w) > 1000
    np.testing.assert_allclose(s, s_ref, rtol=2e-6, atol=1e-4)


def test_blocks_without_a_bragg_pixel_skip_the_tests_and_change_nothing(setup, tmp_path):
    """Bragg regions are small: the kernels compute the pixels of a block of a frame whose
    summary (bragg_block_summary, or paint's) says it holds no masked pixel without the
    Bragg tests.  Both kinds, added from memory and as stored, equal those of a summary
    that marks every block (the tests everywhere) bit for bit, and the masked kind the
    numpy reference; a summary of the wrong shape is refused."""
    import h5py
    import hdf5plugin

    scan, UB, crystal, table, grid, frames = setup
    fr = frames[:16]
    M = frame_matrices(scan, 0, 16, 2)
    scale = np.linspace(0.9, 1.1, 16)
    bragg = np.zeros((16, fr[0].size), np.uint8)
    rows, cols = fr.shape[1:]
    for f, r, c in ((0, 40, 50), (3, 300, 200), (3, 310, 400), (9, 550, 20), (15, 100, 480)):
        bragg[f].reshape(rows, cols)[r:r + 9, c:c + 11] = 1  # a few small regions
    summary = bragg_block_summary(bragg)
    assert 0 < summary.sum() < 0.05 * summary.size
    path = tmp_path / "f.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("/entry/data/data", data=fr, chunks=(1,) + fr.shape[1:],
                         **hdf5plugin.Bitshuffle(nelems=0, cname="lz4"))
    cells = {}
    for stored in (False, True):
        for name, blocks in (("summary", summary), ("every block", np.ones_like(summary))):
            tr = Transformer(grid, table, 2 ** 31 - 1, kinds=("transform", "masked_transform"))
            if stored:
                with open_frames(str(path)) as st:
                    st.compiled_decompression = True
                    assert tr.add_compressed(st.read_compressed(0, 16), M, scale, bragg, blocks)
            else:
                tr.add(fr, M, scale, bragg, blocks)
            cells[stored, name] = [x.copy() for kind in range(2) for x in tr.acc.flat(kind)]
    for key, got in cells.items():
        assert all(np.array_equal(a, b) for a, b in zip(got, cells[False, "every block"])), key
    s, w = tr.slab(0, grid.l.n, "masked_transform")
    s_ref, w_ref = numpy_transform(fr, table, M, scale, 2 ** 31 - 1, grid, bragg=bragg)
    assert np.array_equal(w, w_ref) and np.count_nonzero(w) > 1000
    np.testing.assert_allclose(s, s_ref, rtol=2e-6, atol=1e-4)
    with pytest.raises(ValueError, match="block summary"):
        tr.add(fr, M, scale, bragg, summary[:, 1:])


@pytest.mark.parametrize("bragg_fraction, hkl_radius, nsub", [(0.1, 0.1, 3), (0.002, 0.0, 2)])
def test_both_kinds_in_one_pass_equal_two_passes(setup, bragg_fraction, hkl_radius, nsub):
    """One read of the frames makes both volumes: the masked kind equals a pass of its own
    bit for bit (it is the grid's first part: the pixels both kinds take, in the same
    order); the transform, first part + second part (the pixels left out of the masked
    kind), equals its own pass bit for bit wherever no left-out pixel landed, elsewhere to
    the float32 rounding of its sum (weights too where sub-steps are not powers of 2:
    1/3 is not a float32)."""
    scan, UB, crystal, table, grid, frames = setup
    fr = frames[0:40]
    M = frame_matrices(scan, 0, 40, nsub)
    scale = np.linspace(0.9, 1.2, 40)
    rng = np.random.default_rng(7)
    bragg = (rng.random((40, fr[0].size)) < bragg_fraction).astype(np.uint8)
    if bragg_fraction < 0.01:
        bragg[:20] = 0
    both = Transformer(grid, table, 2 ** 31 - 1, kinds=("transform", "masked_transform"),
                       crystal=crystal, hkl_radius=hkl_radius)
    for part in (slice(0, 20), slice(20, 40)):
        both.add(fr[part], M[part], scale[part], bragg[part])
    alone = {}
    for kind in ("transform", "masked_transform"):
        alone[kind] = Transformer(grid, table, 2 ** 31 - 1, kinds=(kind,), crystal=crystal,
                                  hkl_radius=hkl_radius)
        for part in (slice(0, 20), slice(20, 40)):  # (the same chunks: the same order)
            alone[kind].add(fr[part], M[part], scale[part], bragg[part])
    s, w = both.slab(0, grid.l.n, "masked_transform")
    s1, w1 = alone["masked_transform"].slab(0, grid.l.n, "masked_transform")
    assert np.array_equal(w, w1) and np.array_equal(s, s1)
    left = both.acc.unbrick(both.acc.weights[1]) > 0  # voxels a left-out pixel reached
    assert left.sum() > 100 and (~left & (w1 > 0)).sum() > 100
    s, w = both.slab(0, grid.l.n, "transform")
    s1, w1 = alone["transform"].slab(0, grid.l.n, "transform")
    assert np.array_equal(w[~left], w1[~left]) and np.array_equal(s[~left], s1[~left])
    if nsub == 2:  # (sums of halves: exact)
        assert np.array_equal(w, w1)
    # (two float32 sums of n >= 0 terms: each within n 2^-24 of the exact sum, relatively)
    bound = 2 * 2.0 ** -24 * (w1[left] * nsub + 1)
    assert (np.abs(w[left] - w1[left]) <= bound * w1[left]).all()
    assert (np.abs(s[left] - s1[left]) <= bound * s1[left]).all()
    assert not np.array_equal(s, both.slab(0, grid.l.n, "masked_transform")[0])
    for kind in ("transform", "masked_transform"):
        assert both.pixel_frames(kind) == alone[kind].pixel_frames(kind)
    assert both.pixel_frames("masked_transform") < (1 - bragg_fraction / 2) * both.pixel_frames(
        "transform")
    with pytest.raises(ValueError, match="Bragg mask"):
        both.add(fr, M, scale)


@pytest.mark.parametrize("threads", [2, 3])
def test_threads_give_the_sums_of_one_thread_bit_for_bit(setup, threads):
    """Threads sharing the grid out by shells of a quantity that does not change as the
    crystal turns (ThreadShares: each voxel added to by one thread, in one thread's order)
    add exactly what one thread adds, for one kind and for both (BrickedGrid paired: a
    left-out pixel in the grid's second part), whichever quantity the geometry picks: the scan
    axis across the detector's rows (|Q x axis|), along them (Q.axis), or not given
    (|Q|)."""
    scan, UB, crystal, table, grid, frames = setup
    fr = frames[0:24]
    rng = np.random.default_rng(5)
    # Bragg regions everywhere, then (frames 10 on) in 0.5% of the pixels
    bragg = (rng.random((24, fr[0].size)) < 0.1).astype(np.uint8)
    bragg[10:] &= (rng.random((14, fr[0].size)) < 0.05).astype(np.uint8)
    picked = set()
    for axis in ((0.0, 1.0, 0.0), (1.0, 0.0, 0.0), None):
        turned = ScanGeometry(scan.detector, Goniometer(axis or (0.0, 1.0, 0.0)),
                              ScanAngles(10.0, 1.5, 24), {}, UB)
        M = frame_matrices(turned, 0, 24, 2)
        for kinds in (("transform",), ("masked_transform",), ("transform", "masked_transform")):
            out = []
            for n in (1, threads):
                tr = Transformer(grid, table, 2 ** 31 - 1, kinds=kinds, crystal=crystal,
                                 hkl_radius=0.1, threads=n, scan_axis=axis)
                tr.add(fr[:10], M[:10], np.ones(10), bragg[:10])
                tr.add(fr[10:], M[10:], np.linspace(1, 2, 14), bragg[10:])
                tr.close()
                out.append([tr.slab(0, grid.l.n, k) for k in kinds])
            assert tr.shares.threads == threads
            picked.add(tr.shares.quantity)
            assert np.count_nonzero(out[0][0][1]) > 1000
            for (s1, w1), (s2, w2) in zip(*out):
                assert np.array_equal(s1, s2) and np.array_equal(w1, w2)
    assert picked == {"|Q|", "Q.axis", "|Q x axis|"}


@pytest.mark.parametrize("sampled", [False, True])
@pytest.mark.parametrize("threads", [2, 3, 5])
@pytest.mark.parametrize("axis", [None, (0.0, 1.0, 0.0), (1.0, 0.0, 0.0)])
def test_thread_shares_cover_every_pixel_and_split_the_work_evenly(setup, threads, axis,
                                                                    sampled, monkeypatch):
    """Every usable pixel is computed by the thread that owns the voxel it lands in (the
    shell of the voxel's centre), on every frame of a full turn (checked against the numpy
    mapping of the pixels to voxels); each thread computes the pixels of its shell
    (1/threads of them; to 2% where the quantity and its cuts come from a sample of the
    pixels, as on a large detector) and those within `reach` of it; the runs lie inside
    their blocks; the blocks a thread adds unchecked hold none of another thread's
    voxels."""
    from hklflow.algorithms.transform import BLOCK, BrickedGrid, ThreadShares
    from hklflow.algorithms.transform import shares as transform_shares

    scan, UB, crystal, table, grid, frames = setup
    if sampled:  # (ranked on 1 pixel in 20)
        monkeypatch.setattr(transform_shares, "RANKING_PIXELS", len(table) // 20)
    acc = BrickedGrid(grid)
    full = ScanGeometry(scan.detector, Goniometer(axis or (0.0, 1.0, 0.0)),
                        ScanAngles(0.0, 360.0 / 40, 40), {}, UB)  # a full turn
    M = frame_matrices(full, 0, 40, 1)
    shares = ThreadShares(table, acc, M[0, 0], threads, axis)
    assert shares.fits(M) and not shares.fits(M * 1.001)
    npix = table.qx.size
    computes = np.zeros((threads, npix), bool)
    unchecked = np.zeros((threads, npix), bool)
    for me, (block_runs, starts, stops, _, who, _, shared) in enumerate(shares.shares):
        assert who == me and len(block_runs) == len(shared) + 1 == -(-npix // BLOCK) + 1
        assert np.all((0 <= starts) & (starts < stops) & (stops <= BLOCK))
        for b in range(len(block_runs) - 1):
            for r in range(block_runs[b], block_runs[b + 1]):
                computes[me, b * BLOCK + starts[r]:b * BLOCK + stops[r]] = True
            if block_runs[b + 1] > block_runs[b] and not shared[b]:
                unchecked[me, b * BLOCK:(b + 1) * BLOCK] = True
    usable = table.index
    q = table.q.astype(np.float64)
    a = np.asarray(axis or (0, 0, 1), float)
    value = {"|Q|": np.linalg.norm(q, axis=1), "Q.axis": q @ a,
             "|Q x axis|": np.linalg.norm(np.cross(q, a), axis=1)}[shares.quantity]
    edges = np.concatenate([[-np.inf], shares.cuts, [np.inf]])
    for me in range(threads):
        shell = (value >= edges[me]) & (value < edges[me + 1])
        assert abs(shell.mean() - 1 / threads) < (0.02 if sampled else 1e-3)
        near = (value >= edges[me] - shares.reach) & (value < edges[me + 1] + shares.reach)
        assert np.array_equal(computes[me, usable], near)
    assert 0 <= sum(shares.computed) - 1 < 0.1 * threads
    assert shares.quantity in shares.describe()
    origin = np.array([ax.start for ax in grid.axes])
    step = np.array([ax.step for ax in grid.axes])
    dims = np.array([grid.h.n, grid.k.n, grid.l.n])
    landed = mixed = 0
    for f in range(40):
        idx = np.floor((q @ M[f, 0].T - origin) / step + 0.5).astype(np.int64)
        on = np.all((idx >= 0) & (idx < dims), axis=1)
        # the owner of a voxel: the shell of its centre
        centre = origin + idx[on] * step
        owner = np.searchsorted(shares.cuts, shares.value(*centre.T), side="right")
        assert np.all(computes[owner, usable[on]])
        for me in range(threads):  # (a block added unchecked: only its owner's voxels)
            assert np.all(owner[unchecked[me, usable[on]]] == me)
        # the kernel's tables agree: a brick's owner, or its voxel's across a cut
        brick = idx[on] >> 3
        brick = (brick[:, 2] * acc.nbricks[1] + brick[:, 1]) * acc.nbricks[2] + brick[:, 0]
        o = shares.owner[brick]
        voxel = (idx[on, 2] & 7) * 64 + (idx[on, 1] & 7) * 8 + (idx[on, 0] & 7)
        tables = np.where(o >= 0, o, shares.voxel_owner[np.maximum(-1 - o, 0) * 512 + voxel])
        assert np.array_equal(tables, owner)
        mixed += np.count_nonzero(o < 0)
        landed += on.sum()
    assert landed > 0.5 * 40 * len(usable) and mixed > 0


def _table_from_q(q, corr=None):
    """A PixelTable of a 1-row detector whose pixels have the given lab Q (n, 3)."""
    from hklflow.algorithms.transform import PixelTable

    q = np.asarray(q, np.float32)
    n = len(q)
    corr = np.ones(n, np.float32) if corr is None else np.asarray(corr, np.float32)
    return PixelTable(q[:, 0].copy(), q[:, 1].copy(), q[:, 2].copy(), corr,
                      np.arange(n, dtype=np.int64), (1, n))


def test_kernel_decides_pixels_next_to_voxel_faces_in_float64():
    """The kernel computes coordinates in float32 and decides again in float64 the pixels
    closer to a voxel face than float32 rounding can resolve: pixels placed a few float32
    steps either side of faces, and on them, must land exactly where float64 puts them (the
    numpy reference), none lost and none doubled."""
    rng = np.random.default_rng(11)
    grid = Grid(Axis(-2.0, 0.02, 201), Axis(-1.5, 0.03, 101), Axis(-3.0, 0.1, 61))
    n = 60000
    faces = []
    for ax in grid.axes:  # a face between voxels i-1 and i lies at start + (i - 1/2) step
        i = rng.integers(0, ax.n + 1, n)
        face = np.float32(ax.start + (i - 0.5) * ax.step)
        faces.append(face)
    q = np.stack(faces, -1)  # M = identity below: hkl = Q
    ulps = rng.integers(-40, 41, (n, 3))
    q = q + ulps * np.spacing(np.abs(q)).astype(np.float32)
    table = _table_from_q(q)
    M = np.eye(3)[None, None]
    frame = rng.integers(1, 50, (1, 1, n)).astype(np.int32)
    tr = Transformer(grid, table, 2 ** 31 - 1)
    tr.add(frame, M, np.ones(1))
    s, w = tr.acc.arrays()
    s_ref, w_ref = numpy_transform(frame, table, M, np.ones(1), 2 ** 31 - 1, grid)
    assert np.array_equal(w, w_ref)
    assert 0.5 * n < w.sum() < n  # some pixels fall off the grid's outer faces
    np.testing.assert_allclose(s, s_ref, rtol=2e-6)
    # the float32 path alone gets a few percent of these wrong: the test has teeth
    x32 = (q - np.array([ax.start for ax in grid.axes], np.float32)) \
        / np.array([ax.step for ax in grid.axes], np.float32) + np.float32(0.5)
    x64 = (q.astype(np.float64) - [ax.start for ax in grid.axes]) \
        / [ax.step for ax in grid.axes] + 0.5
    assert np.mean(np.any(np.floor(x32) != np.floor(x64), axis=1)) > 0.01


def test_trusted_values_frame_types_and_pixels_far_off_the_grid():
    """Values v with 0 <= v < trusted_max are used, in every frame type; NaN never; pixels
    far off the grid are dropped without harm."""
    from hklflow.settings.params import largest_trusted_value

    assert largest_trusted_value(1000, np.uint16) == 999
    assert largest_trusted_value(1000.5, np.int32) == 1000
    assert largest_trusted_value(2 ** 40, np.uint16) == 65535
    assert largest_trusted_value(2 ** 31 - 1, np.int32) == 2 ** 31 - 2
    t32 = largest_trusted_value(1000, np.float32)
    assert t32.dtype == np.float32 and t32 < 1000 and np.nextafter(t32, np.float32(2000)) == 1000
    grid = Grid(Axis(0, 1, 8), Axis(0, 1, 8), Axis(0, 1, 8))
    values = [0, 1, 999, 1000, 1001, 3]
    table = _table_from_q([[1, 2, 3]] * len(values))
    for dtype in (np.uint16, np.int32, np.uint32, np.int64, np.float32, np.float64):
        frame = np.array(values, dtype).reshape(1, 1, -1)
        tr = Transformer(grid, table, 1000)
        tr.add(frame, np.eye(3)[None, None], np.ones(1))
        s, w = tr.acc.arrays()
        assert w[3, 2, 1] == 4 and s[3, 2, 1] == 0 + 1 + 999 + 3, dtype
    frame = np.array([[[1.0, np.nan, 2.0, -1.0, np.inf, 5.0]]], np.float32)
    tr = Transformer(grid, table, 1000)
    tr.add(frame, np.eye(3)[None, None], np.ones(1))
    s, w = tr.acc.arrays()
    assert w[3, 2, 1] == 3 and s[3, 2, 1] == 8
    s_ref, w_ref = numpy_transform(frame, table, np.eye(3)[None, None], np.ones(1), 1000, grid)
    assert np.array_equal(w, w_ref) and np.array_equal(s, s_ref)
    # coordinates far beyond any grid (float32 has no fraction there, so all are decided in
    # float64) and infinite ones are dropped, the rest counted once
    far = _table_from_q([[1, 2, 3], [1e20, 2, 3], [-1e25, 2, 3], [1, 3e30, 3], [np.inf, 2, 3],
                         [1, 2, 3]])
    tr = Transformer(grid, far, 1000)
    tr.add(np.full((1, 1, 6), 7, np.int32), np.eye(3)[None, None], np.ones(1))
    s, w = tr.acc.arrays()
    assert w.sum() == 2 and w[3, 2, 1] == 2 and s[3, 2, 1] == 14
    with pytest.raises(ValueError, match="trusted maximum"):
        Transformer(grid, table, 0)
    with pytest.raises(ValueError, match="do not match the pixel table"):
        Transformer(grid, table, 1000).add(np.zeros((1, 1, 5)), np.eye(3)[None, None], np.ones(1))


def test_a_grid_beyond_the_kernel_index_range_is_refused():
    from hklflow.algorithms.transform import BrickedGrid

    huge = Grid(Axis(-8, 0.01, 1601), Axis(-8, 0.01, 1601), Axis(-8, 0.01, 1601))
    with pytest.raises(ValueError, match="reduction.transform.grid"):
        BrickedGrid(huge)
    # both kinds from one pass index two parts: half as many voxels (refused before any
    # memory is mapped); 1001^3 (padded to 1008^3) still fits, with the second part's last
    # index (second + size - 1, second = size + the dumps rounded up to a brick) in int32
    from hklflow.model.grid import MAX_TRANSFORM_VOXELS, MAX_TRANSFORM_VOXELS_BOTH_KINDS
    both = Grid(Axis(-8, 0.01, 1100), Axis(-8, 0.01, 1100), Axis(-8, 0.01, 1100))
    with pytest.raises(ValueError, match="with both kinds from one pass"):
        BrickedGrid(both, 2, paired=True)
    assert 1100 ** 3 < MAX_TRANSFORM_VOXELS
    size = 1008 ** 3
    assert size <= MAX_TRANSFORM_VOXELS_BOTH_KINDS
    most = MAX_TRANSFORM_VOXELS_BOTH_KINDS // 512 * 512  # (grids are whole bricks)
    assert 2 * most + 767 <= 2 ** 31 - 1


def test_each_pixel_lands_in_the_voxel_of_its_hkl(setup):
    """Independent path: ScanGeometry.hkl_at at pixel and frame centres (pinned to pyFAI and
    cctbx by test_geometry) and Grid.index."""
    scan, UB, crystal, table, grid, frames = setup
    rng = np.random.default_rng(7)
    ny, nx = scan.detector.shape
    pick = rng.choice(table.index, 300, replace=False)
    for f in (0, 31, 59):
        frame = np.zeros((1, ny, nx), np.int32)
        frame.reshape(1, -1)[0, pick] = np.arange(1, 301)
        tr = Transformer(grid, table, 2 ** 31 - 1)
        tr.add(frame, frame_matrices(scan, f, f + 1, 1), np.ones(1))
        s, w = tr.acc.arrays()
        hkl = scan.hkl_at(pick // nx + 0.5, pick % nx + 0.5, f + 0.5)
        idx = grid.index(hkl)
        inside = grid.contains(idx)
        assert inside.sum() > 100
        # every inside pixel's value is found in its voxel (summed with others sharing it)
        expect = np.zeros(grid.shape)
        corr = dict(zip(table.index.tolist(), table.corr.tolist()))
        for p, (ih, ik, il), ok, v in zip(pick, idx, inside, np.arange(1, 301)):
            if ok:
                expect[il, ik, ih] += v * corr[int(p)]
        np.testing.assert_allclose(s, expect, rtol=1e-6)
        # zeros are measurements too: every usable pixel on the grid adds weight 1
        every = grid.contains(grid.index(scan.hkl_at(table.index // nx + 0.5,
                                                     table.index % nx + 0.5, f + 0.5)))
        assert w.sum() == every.sum()


def test_total_intensity_is_conserved(setup):
    scan, UB, crystal, table, grid, frames = setup
    first, stop = 0, 60
    tr = Transformer(grid, table, 2 ** 31 - 1)
    M = frame_matrices(scan, first, stop, 1)
    tr.add(frames[first:stop], M, np.ones(stop - first))
    s, w = tr.acc.arrays()
    # independently: every unmasked valid pixel whose hkl (hkl_at) falls on the grid
    ny, nx = scan.detector.shape
    rows, cols = table.index // nx + 0.5, table.index % nx + 0.5
    total = 0.0
    count = 0
    for f in range(first, stop, 7):
        hkl = scan.hkl_at(rows, cols, f + 0.5)
        on = grid.contains(grid.index(hkl))
        v = frames[f].reshape(-1)[table.index].astype(float)
        ok = on & (v >= 0)
        total += float(np.sum(v[ok] * table.corr[ok].astype(float)))
        count += int(ok.sum())
    tr7 = Transformer(grid, table, 2 ** 31 - 1)
    sel = np.arange(first, stop, 7)
    tr7.add(frames[sel], M[sel - first], np.ones(len(sel)))
    s7, w7 = tr7.acc.arrays()
    assert float(w7.sum()) == count
    assert float(s7.astype(np.float64).sum()) == pytest.approx(total, rel=2e-6)
    assert float(w.sum()) > 0 and np.isfinite(s).all()


def test_result_does_not_depend_on_the_frame_chunking(setup, tiny_experiment):
    scan, UB, crystal, table, grid, frames = setup
    with open_frames(str(raw(tiny_experiment))) as st:
        whole = Transformer(grid, table, 2 ** 31 - 1)
        transform_frames(st, scan, whole, 0, 60, 2, np.ones(60), chunk_frames=16)
        parts = []
        for a, b in ((0, 13), (13, 37), (37, 60)):
            tr = Transformer(grid, table, 2 ** 31 - 1)
            transform_frames(st, scan, tr, a, b, 2, np.ones(b - a), chunk_frames=5)
            parts.append(tr.acc.arrays())
    s, w = whole.acc.arrays()
    s_sum = sum(p[0].astype(np.float64) for p in parts)
    w_sum = sum(p[1].astype(np.float64) for p in parts)
    assert np.array_equal(w, w_sum)
    np.testing.assert_allclose(s, s_sum, rtol=1e-5, atol=1e-3)


def test_frames_left_out_add_nothing(setup, tiny_experiment):
    """Frames whose monitor is bad (scale NaN, bad_monitor_frames: leave_out) add neither
    signal nor weight: the volume equals the sum of the frame ranges around them."""
    scan, UB, crystal, table, grid, frames = setup
    scale = np.ones(60)
    scale[[5, 17, 18, 19, 20]] = np.nan  # one frame alone; a run across a chunk boundary
    with open_frames(str(raw(tiny_experiment))) as st:
        holed = Transformer(grid, table, 2 ** 31 - 1)
        transform_frames(st, scan, holed, 0, 60, 2, scale, chunk_frames=16)
        parts = []
        for a, b in ((0, 5), (6, 17), (21, 60)):
            tr = Transformer(grid, table, 2 ** 31 - 1)
            transform_frames(st, scan, tr, a, b, 2, np.ones(b - a), chunk_frames=16)
            parts.append(tr.acc.arrays())
    s, w = holed.acc.arrays()
    assert np.array_equal(w, sum(p[1].astype(np.float64) for p in parts)) and w.sum() > 0
    np.testing.assert_allclose(s, sum(p[0].astype(np.float64) for p in parts), rtol=1e-5, atol=1e-3)


@pytest.mark.parametrize("nelems", [0, 512])
def test_frames_added_as_stored_give_the_sums_of_the_frames_read(setup, tmp_path, nelems):
    """The transform adds bitshuffle-LZ4 frames block by block as they are stored
    (FrameStack.read_compressed, Transformer.submit_compressed: each block of pixels
    decompressed just before it is added): the same cells bit for bit as the frames read,
    for both kinds and one, on one thread and two, with sub-steps, frames left out, any
    bitshuffle block (the detector's 619 x 487 pixels end in a short block and 5 elements
    stored as they are); a damaged chunk stops the job naming the file and the frame."""
    import h5py
    import hdf5plugin

    from hklflow.base.errors import RawDataError

    scan, UB, crystal, table, grid, frames = setup
    path = tmp_path / "f.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("/entry/data/data", data=frames[:24], chunks=(1,) + frames.shape[1:],
                         **hdf5plugin.Bitshuffle(nelems=nelems, cname="lz4"))
    rng = np.random.default_rng(3)
    bragg_all = (rng.random((24, frames[0].size)) < 0.05).astype(np.uint8)

    class Mask:  # masking.ScanMask's paint: the Bragg regions of frames [a, b)
        hkl_radius = 0.1

        def paint(self, a, b, out, value=1, blocks=None, block=0):
            out[:] = bragg_all[a:b] if value else 0
            if blocks is not None:
                blocks[:] = bragg_block_summary(bragg_all[a:b])

    scale = np.linspace(1, 2, 24)
    scale[[3, 9]] = np.nan
    for kinds in (("transform", "masked_transform"), ("masked_transform",)):
        cells = []
        for stored, threads in ((False, 1), (True, 1), (True, 2)):
            with open_frames(str(path)) as st:
                st.compiled_decompression = stored
                tr = Transformer(grid, table, 2 ** 31 - 1, kinds=kinds, crystal=crystal,
                                 hkl_radius=0.1, threads=threads)
                as_stored = []
                submit = tr.submit_compressed
                tr.submit_compressed = lambda *a: as_stored.append(submit(*a)) or as_stored[-1]
                transform_frames(st, scan, tr, 0, 24, 2, scale, chunk_frames=8, mask=Mask())
                tr.close()
            # (the chunks with frames left out are read and added as usual)
            assert [r is not False for r in as_stored] == ([True] if stored else [])
            # every kind's signal and weight on the grid (not the dump slots after it:
            # threads leave those out)
            cells.append([x.copy() for kind in range(tr.acc.nkinds) for x in tr.acc.flat(kind)])
        assert np.count_nonzero(cells[0][0]) > 1000
        for other in cells[1:]:
            assert all(np.array_equal(a, b) for a, b in zip(cells[0], other))
    intact = h5py.File(path, "r")["/entry/data/data"].id.read_direct_chunk((13, 0, 0))[1]
    for damaged in (intact[:12] + bytes([intact[12] ^ 0xFF]) + intact[13:],  # a block's size
                    intact[:16] + bytes([intact[16] ^ 0xFF]) + intact[17:],  # its LZ4 data
                    intact[:len(intact) // 2]):  # truncated
        with h5py.File(path, "r+") as f:
            f["/entry/data/data"].id.write_direct_chunk((13, 0, 0), damaged)
        for threads in (1, 2):
            with open_frames(str(path)) as st:
                st.compiled_decompression = True
                tr = Transformer(grid, table, 2 ** 31 - 1, threads=threads)
                with pytest.raises(RawDataError, match=r"f\.h5: frame 13 of the scan cannot "
                                                       "be decompressed"):
                    transform_frames(st, scan, tr, 0, 24, 2, np.ones(24), chunk_frames=8)
                tr.close()


def test_blocks_without_a_usable_pixel_are_skipped_and_change_nothing(setup, tmp_path):
    """Blocks of pixels none of which is usable (a band of rows masked, as the gaps between
    a Pilatus's rows of modules are) are neither decompressed nor computed: the cells equal
    those of the kernel made to work every block, bit for bit, frames in memory and as
    stored, both kinds."""
    import h5py
    import hdf5plugin

    scan, UB, crystal, table, grid, frames = setup
    excluded = scan.detector.detector_mask().copy()
    excluded[300:360] = True  # 60 rows of 487 pixels in a module: whole blocks of BLOCK
    banded = pixel_table(scan.detector, excluded, polarization_fraction=0.99)
    live = live_blocks(banded)
    first, last = -(-300 * 487 // BLOCK), 360 * 487 // BLOCK  # the blocks inside the band
    expected = live_blocks(table)  # (the detector's own gaps hold a whole block too)
    assert expected.size == -(-frames[0].size // BLOCK) and expected[first:last].all()
    expected[first:last] = 0
    assert np.array_equal(live, expected)
    path = tmp_path / "f.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("/entry/data/data", data=frames[:16], chunks=(1,) + frames.shape[1:],
                         **hdf5plugin.Bitshuffle(cname="lz4"))
    bragg = (np.random.default_rng(4).random((16, frames[0].size)) < 0.05).astype(np.uint8)
    M = frame_matrices(scan, 0, 16, 2)
    cells = {}
    for skip in (True, False):
        for stored in (False, True):
            tr = Transformer(grid, banded, 2 ** 31 - 1, kinds=("transform", "masked_transform"),
                             crystal=crystal, hkl_radius=0.1)
            if not skip:
                tr.live = np.ones_like(tr.live)
            if stored:
                with open_frames(str(path)) as st:
                    st.compiled_decompression = True
                    assert tr.add_compressed(st.read_compressed(0, 16), M, np.ones(16), bragg)
            else:
                tr.add(frames[:16], M, np.ones(16), bragg)
            cells[skip, stored] = [x.copy() for k in range(2) for x in tr.acc.flat(k)]
    assert np.count_nonzero(cells[True, False][1]) > 1000
    for key in [(True, True), (False, False), (False, True)]:
        assert all(np.array_equal(a, b) for a, b in zip(cells[True, False], cells[key]))


def test_punch_removes_allowed_nodes_only(setup):
    scan, UB, crystal, table, grid, frames = setup
    M = frame_matrices(scan, 0, 60, 1)
    r = 0.15
    tr = Transformer(grid, table, 2 ** 31 - 1, kinds=("masked_transform",), crystal=crystal,
                     hkl_radius=r)
    tr.add(frames, M, np.ones(60), np.zeros((60, frames[0].size), np.uint8))
    plain = Transformer(grid, table, 2 ** 31 - 1)
    plain.add(frames, M, np.ones(60))
    w, w0 = tr.acc.arrays()[1], plain.acc.arrays()[1]
    hh, kk, ll = np.meshgrid(grid.h.values, grid.k.values, grid.l.values, indexing="ij")
    hkl = np.stack([hh, kk, ll], -1).transpose(2, 1, 0, 3)  # [l, k, h, 3]
    node = np.round(hkl)
    d = np.linalg.norm(hkl - node, axis=-1)
    allowed = ~crystal.is_absent(node.reshape(-1, 3).astype(int)).reshape(d.shape)
    half_diagonal = 0.5 * math.sqrt(grid.h.step ** 2 + grid.k.step ** 2 + grid.l.step ** 2)
    core = d < r - half_diagonal  # every point of these voxels is inside the radius
    assert w0[core & allowed].sum() > 0
    assert w[core & allowed].sum() == 0
    # absent nodes (I 41/a m d has many) keep their data, and far from nodes nothing changes
    assert w[core & ~allowed].sum() == w0[core & ~allowed].sum() > 0
    far = d > r + half_diagonal
    assert np.array_equal(w[far], w0[far])


def test_allowed_table_matches_the_crystal(setup):
    scan, UB, crystal, table, grid, frames = setup
    t, off = allowed_table(crystal, grid)
    hkl = np.array([[2, 0, 0], [1, 1, 0], [0, 0, 4], [2, 2, 0], [1, 0, 1]])
    got = [bool(t[tuple(x - off)]) for x in hkl]
    assert got == (~crystal.is_absent(hkl)).tolist()


def test_auto_subdivide_follows_the_rotation_step(setup):
    scan, UB, crystal, table, grid, frames = setup
    n1, move1 = auto_subdivide(scan, table, grid, crystal.cell.parameters[:3])
    fine = Grid(Axis(-4, 0.01, 801), Axis(-4, 0.01, 801), Axis(-6, 0.01, 1201))
    n2, move2 = auto_subdivide(scan, table, fine, crystal.cell.parameters[:3])
    a, _, c = crystal.cell.parameters[:3]
    # the axis with the most voxels per r.l.u. length decides: h (a / 0.05) then l (c / 0.01)
    assert move2 / move1 == pytest.approx((c / 0.01) / (a / 0.05), rel=1e-9)
    assert n2 > n1 >= 1 and n2 == min(16, math.ceil(move2 / 0.5))


def test_each_block_takes_the_sub_steps_its_pixels_need(setup):
    """block_sub_steps: a block's pixels move at most half a voxel between its sub-steps,
    blocks far from the scan axis need more than those near it, and auto_subdivide (one
    count for every pixel) is the largest."""
    scan, UB, crystal, table, grid, frames = setup
    fine = Grid(Axis(-4, 0.02, 401), Axis(-4, 0.02, 401), Axis(-6, 0.04, 301))
    steps, move = block_sub_steps(scan, table, fine, crystal.cell.parameters[:3])
    assert steps.shape == (-(-table.qx.size // BLOCK),) and steps.dtype == np.int32
    assert (steps.max(), move) == auto_subdivide(scan, table, fine, crystal.cell.parameters[:3])
    assert 1 <= steps.min() < steps.max() < 16  # the middle moves less than the edge
    axis = scan.axis_lab
    q = np.stack([table.qx, table.qy, table.qz]).astype(np.float64)
    perp = np.sqrt(np.maximum((q * q).sum(0) - (axis @ q) ** 2, 0.0))
    a, _, c = crystal.cell.parameters[:3]
    pixel_move = perp * math.radians(abs(scan.angles.step)) * max(a / 0.02, c / 0.04)
    assert np.nanmax(pixel_move) == pytest.approx(move, rel=1e-9)
    for b, n in enumerate(steps):  # enough sub-steps, and no more
        block = pixel_move[b * BLOCK:(b + 1) * BLOCK]
        worst = np.nanmax(block) if np.isfinite(block).any() else 0.0
        assert worst / n <= 0.5 + 1e-9 and (n == 1 or worst / (n - 1) > 0.5)


def test_blocks_with_their_own_sub_steps_add_what_each_count_adds(setup, tmp_path):
    """A Transformer whose blocks take 1, 2 or 4 sub-steps (SubSteps) adds to each voxel
    what the numpy reference adds from each block's pixels with that block's count: the
    weights exactly (dyadic), the signal to float32 rounding; frames as stored equal frames
    in memory, and two threads one, bit for bit."""
    import h5py
    import hdf5plugin

    scan, UB, crystal, table, grid, frames = setup
    fr = frames[0:16]
    nblocks = -(-table.qx.size // BLOCK)
    plan = SubSteps.per_block(np.array([1, 2, 4])[np.arange(nblocks) % 3])
    assert plan.counts == (1, 2, 4) and plan.total == 7
    M = plan.matrices(scan, 0, 16)
    assert M.shape == (16, 7, 3, 3)
    assert np.array_equal(M[:, 1:3], frame_matrices(scan, 0, 16, 2))
    scale = np.linspace(0.9, 1.2, 16)
    rng = np.random.default_rng(3)
    bragg = (rng.random((16, fr[0].size)) < 0.01).astype(np.uint8)
    s_ref, w_ref = np.zeros(grid.shape), np.zeros(grid.shape)
    block_of_pixel = np.arange(fr[0].size) // BLOCK
    for count in plan.counts:
        part = fr.reshape(16, -1).copy()
        part[:, plan.sub_count[block_of_pixel] != count] = -1  # (unusable: left out)
        numpy_transform(part.reshape(fr.shape), table, frame_matrices(scan, 0, 16, count),
                        scale, 2 ** 31 - 1, grid, s_ref, w_ref, bragg=bragg)
    path = tmp_path / "f.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("/entry/data/data", data=fr, chunks=(1,) + fr.shape[1:],
                         **hdf5plugin.Bitshuffle(nelems=0, cname="lz4"))
    out = []
    for stored, threads in ((False, 1), (True, 1), (True, 2)):
        tr = Transformer(grid, table, 2 ** 31 - 1, kinds=("transform", "masked_transform"),
                         crystal=crystal, threads=threads, sub_steps=plan)
        assert np.array_equal(tr.matrices(scan, 0, 16, 99), M)
        if stored:
            with open_frames(str(path)) as st:
                st.compiled_decompression = True
                assert tr.add_compressed(st.read_compressed(0, 16), M, scale, bragg)
        else:
            tr.add(fr, M, scale, bragg)
        tr.close()
        out.append([tr.slab(0, grid.l.n, k) for k in tr.kinds])
        with pytest.raises(ValueError, match="sub-steps"):
            tr.add(fr, frame_matrices(scan, 0, 16, 2), scale, bragg)
    for got in out[1:]:
        for (s1, w1), (s2, w2) in zip(out[0], got):
            assert np.array_equal(s1, s2) and np.array_equal(w1, w2)
    s, w = out[0][1]  # masked_transform: the reference's Bragg mask
    assert np.array_equal(w, w_ref) and np.count_nonzero(w) > 1000
    assert set(np.unique(w[w > 0] % 0.25)) == {0.0}  # quarters: the 4-step blocks' weights
    # (float32 cells against a float64 reference: a few float32 roundings of the sum)
    np.testing.assert_allclose(s, s_ref, rtol=4e-6, atol=1e-4)


def test_subdivision_conserves_intensity_and_spreads_it(setup):
    scan, UB, crystal, table, grid, frames = setup
    out = {}
    for n in (1, 4):
        tr = Transformer(grid, table, 2 ** 31 - 1)
        tr.add(frames[20:24], frame_matrices(scan, 20, 24, n), np.ones(4))
        out[n] = tr.acc.arrays()
    (s1, w1), (s4, w4) = out[1], out[4]
    assert float(s4.astype(float).sum()) == pytest.approx(float(s1.astype(float).sum()), rel=1e-3)
    assert float(w4.sum()) == pytest.approx(float(w1.sum()), rel=1e-3)
    assert np.count_nonzero(w4) > np.count_nonzero(w1)  # sub-steps fill voxels a frame skips


@pytest.mark.parametrize("nkinds, paired", [(1, False), (2, False), (2, True)])
def test_bricked_slabs_equal_the_whole_array(nkinds, paired):
    """Slabs (one kind, or every kind in one pass) equal the whole arrays; paired cells give
    the first kind as the sum of the two parts (the second written in some bricks only) and
    the second kind as the first part."""
    from hklflow.algorithms.transform import DUMP_SLOTS, DUMP_THREADS, BrickedGrid

    g = Grid(Axis(0, 1, 13), Axis(0, 1, 21), Axis(0, 1, 37))  # not multiples of the brick
    b = BrickedGrid(g, nkinds, paired=paired)
    rng = np.random.default_rng(3)
    nb = b.size // b.brick ** 3
    for part in range(nkinds):
        if paired and part == 1:  # left-out pixels reach some bricks
            some = np.flatnonzero(rng.random(nb) < 0.5)
            assert 0 < some.size < nb
            for x in (b.signals[1], b.weights[1]):
                x.reshape(nb, -1)[some] = rng.random((some.size, b.brick ** 3))
            continue
        b.signals[part][:] = rng.random(b.size)
        b.weights[part][:] = rng.random(b.size)
    expected = [(b.signals[k].copy(), b.weights[k].copy()) for k in range(nkinds)]
    if paired:
        expected = [(expected[0][0] + expected[1][0], expected[0][1] + expected[1][1]),
                    expected[0]]
    whole = [b.arrays(kind) for kind in range(nkinds)]
    for kind, (s, w) in enumerate(whole):
        assert s.shape == g.shape
        assert np.array_equal(s, b.unbrick(expected[kind][0]))
        assert np.array_equal(w, b.unbrick(expected[kind][1]))
        for l0 in range(0, 37, 8):
            a, c = b.slab(l0, min(l0 + 8, 37), kind)
            assert np.array_equal(a, s[l0:l0 + 8]) and np.array_equal(c, w[l0:l0 + 8])
    for l0 in range(0, 37, 8):
        for (a, c), (s, w) in zip(b.slabs(l0, min(l0 + 8, 37)), whole):
            assert np.array_equal(a, s[l0:l0 + 8]) and np.array_equal(c, w[l0:l0 + 8])
    if nkinds == 2:  # the kinds are held apart
        assert not np.array_equal(whole[0][0], whole[1][0])
        assert not np.array_equal(whole[0][1], whole[1][1])
    part = b.size + DUMP_SLOTS * DUMP_THREADS  # (+ the dumps; paired: parts of whole bricks)
    assert b.nbytes == nkinds * 8 * (-(-part // 512) * 512 if paired else part)
    a, c = b.slab(3, 30)  # a start inside a brick
    assert np.array_equal(a, whole[0][0][3:30]) and np.array_equal(c, whole[0][1][3:30])
    with pytest.raises(ValueError, match="outside the grid"):
        b.slab(30, 38)


def _huge_kb(a: np.ndarray) -> int:
    """Huge pages (kB: AnonHugePages, ShmemPmdMapped, FilePmdMapped) of this process's
    mappings that overlap the memory of `a` (numpy's madvise splits an array's mapping at
    its 2 MiB-aligned part)."""
    lo, hi = a.ctypes.data, a.ctypes.data + a.nbytes
    total, inside = 0, False
    for line in open("/proc/self/smaps"):
        first = line.split()[0]
        if "-" in first and ":" not in first:  # a mapping's header line
            start, stop = (int(v, 16) for v in first.split("-"))
            inside = start < hi and lo < stop
        elif inside and first in ("AnonHugePages:", "ShmemPmdMapped:", "FilePmdMapped:"):
            total += int(line.split()[1])
    return total


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux page flags")
@pytest.mark.parametrize("shared", [False, True])
def test_grid_memory_is_zeroed_mapped_in_small_pages_and_knows_its_touched_pages(
        shared, monkeypatch):
    """ZeroedPages, private or shared (a memory file): zeros, in 4 KiB pages (numpy would
    ask for huge pages), and which pages were touched, read or written (the grid's readers
    skip the pages never touched); a grid's parts alike.  Where no memory file is to be had
    (a sandbox), shared memory falls back to private."""
    import os

    from hklflow.algorithms.transform import BrickedGrid, ZeroedPages

    page = 4096
    memory = ZeroedPages(3 << 20, np.float32, shared)  # 12 MiB
    a = memory.array
    assert a.dtype == np.float32 and a.shape == (3 << 20,) and a.flags.writeable
    if memory.written_pages(0, a.nbytes) is None:
        pytest.skip("the touched pages are not known here")
    assert memory.shared == shared and not memory.written_pages(0, a.nbytes).any()
    a[5 * 1024] = 2.0  # page 5 written
    assert float(a[9 * 1024 + 3]) == 0.0  # page 9 read
    touched = memory.written_pages(0, a.nbytes)
    assert touched.shape == (a.nbytes // page,) and np.flatnonzero(touched).tolist() == [5, 9]
    assert memory.written_pages(5 * page + 100, 2 * page).tolist() == [True, False, False]
    assert np.count_nonzero(a) == 1
    a[::1024] = 1.0  # touch every page
    assert a.sum() == 3 << 10 and memory.written_pages(0, a.nbytes).all()
    assert _huge_kb(a) == 0
    b = BrickedGrid(Grid(Axis(0, 1, 200), Axis(0, 1, 200), Axis(0, 1, 64)), 2, paired=True,
                    shared=shared)
    b.cells[1][1024 * 7] = 1.0  # page 7 of the second part
    assert np.flatnonzero(b.written_pages(1)).tolist() == [7]
    assert not b.written_pages(0).any()
    b.cells[0][::1024] = 1.0
    assert _huge_kb(b.cells[0]) == 0 and b.written_pages(0).all()
    assert b.cells[0].sum() == len(range(0, b.cells[0].size, 1024))

    def refused(*args):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "memfd_create", refused)
    fallback = ZeroedPages(4 << 10, np.float32, shared)
    fallback.array[1024 * 2] = 1.0
    assert not fallback.shared
    assert fallback.written_pages(0, 4 * page).tolist() == [False, False, True, False]


@pytest.mark.parametrize("shared", [False, True])
@pytest.mark.parametrize("paired", [True, False])
def test_bricks_never_written_are_known_and_unbrick_as_zeros(paired, shared, monkeypatch):
    """BrickedGrid.written_bricks finds, from the page table or the grid's memory file,
    exactly the bricks written to (one 4 KiB page per brick and part); slabs skip the
    others (zeros) and equal a plain unbrick of the same grid made twice (reading a page
    maps it: the reference must not read the grid tested), and so do they when the touched
    pages are not known or every page shows untouched.  Paired cells: the second part
    written in some of the first's bricks and in bricks of its own (a voxel only left-out
    pixels reached)."""
    import hklflow.algorithms.transform as tr

    grid = Grid(Axis(0, 1, 37), Axis(0, 1, 29), Axis(0, 1, 43))  # edge bricks on every axis

    def made():
        g = tr.BrickedGrid(grid, 2, paired=paired, shared=shared)
        rng = np.random.default_rng(3)
        picked = rng.choice(int(np.prod(g.nbricks)), 45, replace=False)
        hit = np.sort(picked[:40])
        hits = [hit, np.sort(np.concatenate([hit[::2], picked[40:]])) if paired else hit]
        per = g.stride * g.brick ** 3  # cells per brick
        for cells, bricks in zip(g.cells, hits):
            for brick in bricks:  # one voxel of the brick
                cells[brick * per + per - 1 - rng.integers(g.stride)] = rng.random() + 0.5
        return g, hits

    g, hits = made()
    if g.written_pages(0) is None:
        pytest.skip("the touched pages are not known here")
    per_row = int(g.nbricks[1] * g.nbricks[2])
    for part, hit in enumerate(hits):
        first, written = g.written_bricks(part, 0, grid.l.n)
        assert first == 0 and np.array_equal(np.flatnonzero(written), hit)
        first, written = g.written_bricks(part, 8, 24)  # L brick rows 1 and 2
        assert first == per_row and len(written) == 2 * per_row
        assert np.array_equal(np.flatnonzero(written) + first,
                              hit[(hit >= per_row) & (hit < 3 * per_row)])
    got = [[a.copy() for a in pair] for pair in g.slabs(5, 30)]  # bricks skipped
    twin = made()[0]
    want = [twin.arrays(kind) for kind in range(2)]
    assert sum(int(np.count_nonzero(s)) + int(np.count_nonzero(w)) for s, w in want) > 0
    for pages in ("known", "unknown", "none touched"):
        if pages == "unknown":
            monkeypatch.setattr(tr.ZeroedPages, "written_pages", lambda *args: None)
        if pages == "none touched":  # a sandbox's page table or file: found out, not believed
            monkeypatch.undo()
            monkeypatch.setattr(tr.ZeroedPages, "_touched", lambda self, offset, nbytes:
                                np.zeros(-(-nbytes // 4096), bool))
            tr.memory._pages_tell_written.cache_clear()
            assert g.written_pages(0) is None
        if pages != "known":
            got = g.slabs(5, 30)
        for (s, w), (gs, gw) in zip(want, got):
            assert np.array_equal(gs, s[5:30]) and np.array_equal(gw, w[5:30])
        assert np.array_equal(g.slab(0, 43, kind=1)[1], want[1][1])
    tr.memory._pages_tell_written.cache_clear()


@pytest.mark.parametrize("detector, orientation, rots", [
    ("Pilatus300k", 3, (0.0, 0.0, 0.0)),
    ("Pilatus300k", 1, (0.05, -0.1, 0.3)),
    ("Eiger1M", 2, (0.2, 0.1, -1.2)),
    ("Pilatus100k", 4, (-0.3, 0.25, 2.0)),
])
def test_pixel_corrections_equal_pyfai(detector, orientation, rots):
    """The solid-angle and polarization corrections (computed without pyFAI's integrators)
    equal 1 / (pyFAI's solidAngleArray x polarization) to float32 rounding, for tilted,
    rotated and off-centre detectors in every orientation; module gaps stay out.  Made on
    two threads, the table is the same bit for bit."""
    g = DetectorGeometry(dist=0.2, poni1=0.03, poni2=0.05, rot1=rots[0], rot2=rots[1],
                         rot3=rots[2], wavelength=0.7, detector=detector, orientation=orientation)
    excluded = g.detector_mask()
    table = pixel_table(g, excluded, polarization_fraction=0.95)
    on_two = pixel_table(g, excluded, polarization_fraction=0.95, threads=2)
    for name in ("qx", "qy", "qz", "corr_all", "index"):
        assert np.array_equal(getattr(on_two, name), getattr(table, name), equal_nan=True)
    ai = g.to_pyfai()
    ref = 1.0 / np.asarray(ai.solidAngleArray(), np.float64) \
        / np.asarray(ai.polarization(factor=0.95), np.float64)
    corr = table.corr_all.reshape(g.shape)
    use = ~excluded
    assert np.array_equal(corr > 0, use)
    np.testing.assert_allclose(corr[use], ref[use], rtol=3e-7)
    assert not np.allclose(ref[use], ref[use].mean(), rtol=1e-3)  # a correction that varies
    # each factor alone
    only_sa = pixel_table(g, excluded, polarization=False).corr_all.reshape(g.shape)
    np.testing.assert_allclose(only_sa[use], 1.0 / ai.solidAngleArray()[use], rtol=3e-7)


def test_a_voxels_cells_are_added_as_one_vector_exactly_as_one_by_one():
    """_add_to_cells (the scatter's vector addition, a numba intrinsic) gives each cell the
    float32 sum that adding its values one by one, in the same order, gives: repeated
    voxels included, for the 2 cells of one kind and the 4 of two."""
    import numba

    from hklflow.algorithms.transform.kernels import _add_to_cells

    @numba.njit
    def add_pairs(cells, idx, a, b):
        for i in range(idx.size):
            _add_to_cells(cells, np.uint32(idx[i]), (a[i], b[i]))

    @numba.njit
    def add_quads(cells, idx, a, b):
        for i in range(idx.size):
            _add_to_cells(cells, idx[i], (a[i], b[i], a[i] * b[i], b[i] - a[i]))

    rng = np.random.default_rng(5)
    idx = rng.integers(0, 7, 4000).astype(np.int32)  # many repeats, in any order
    a = rng.normal(0, 1e3, idx.size).astype(np.float32)
    b = rng.random(idx.size).astype(np.float32)
    for width, add, values in ((2, add_pairs, (a, b)), (4, add_quads, (a, b, a * b, b - a))):
        cells = np.zeros(7 * width + 3, np.float32)
        add(cells, idx, a, b)
        expect = np.zeros(7 * width + 3, np.float32)
        for j, v in enumerate(values):
            np.add.at(expect, width * idx.astype(np.int64) + j, v)  # one by one, in order
        assert np.array_equal(cells, expect)
        assert not cells[7 * width:].any()  # nothing beyond the last voxel's cells
