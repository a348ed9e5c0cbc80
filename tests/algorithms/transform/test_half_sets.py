"""Half set A for CC1/2 (issue 69): the transform's frames in blocks of HALF_SET_FRAMES of
even number add, in the same pass, to a second grid binned 2 x 2 x 2.  It must equal the
transform of those frames alone, binned; on threads, from frames as stored, with both kinds
and a Bragg mask alike."""
from __future__ import annotations

import numpy as np
import pytest

from hklflow.algorithms.transform import Transformer
from hklflow.algorithms.transform import transform_frames as add_frames
from hklflow.algorithms.transform.driver import HALF_SET_FRAMES, half_set_frames, half_set_grid

from transform_reference import PaintedMask

KINDS = ("transform", "masked_transform")


def binned(a: np.ndarray) -> np.ndarray:
    """2 x 2 x 2 sums of an [l, k, h] array (its last plane of an odd axis alone)."""
    pad = [(0, n % 2) for n in a.shape]
    a = np.pad(a.astype(np.float64), pad)
    nl, nk, nh = (n // 2 for n in a.shape)
    return a.reshape(nl, 2, nk, 2, nh, 2).sum(axis=(1, 3, 5))


def test_the_half_set_is_its_frames_transformed_alone_and_binned(setup, tmp_path):  # noqa: F811
    import h5py
    import hdf5plugin

    from hklflow.raw.frames import open_frames

    scan, UB, crystal, table, grid, frames = setup
    n = 2 * HALF_SET_FRAMES + 8  # blocks A, B, and part of A again
    first = 4  # a job that starts inside a block: the blocks count from the scan's frame 0
    path = tmp_path / "f.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("/entry/data/data", data=frames[:first + n],
                         chunks=(1,) + frames.shape[1:],
                         **hdf5plugin.Bitshuffle(nelems=0, cname="lz4"))
    bragg_all = (np.random.default_rng(3).random((first + n, frames[0].size)) < 0.05
                 ).astype(np.uint8)

    scale = np.linspace(1, 2, n)
    in_a = half_set_frames(np.arange(first, first + n)).astype(bool)
    assert 0 < in_a.sum() < n
    # the reference: half A's frames alone, one by one, with the whole grid
    ref = Transformer(grid, table, 2 ** 31 - 1, kinds=KINDS, crystal=crystal, hkl_radius=0.1)
    with open_frames(str(path)) as st:
        for i in np.flatnonzero(in_a):
            f = first + i
            add_frames(st, scan, ref, f, f + 1, 2, scale[i:i + 1], mask=PaintedMask(bragg_all))
    coarse = half_set_grid(grid)
    for stored, threads in ((False, 1), (True, 1), (True, 2)):
        with open_frames(str(path)) as st:
            st.compiled_decompression = stored
            tr = Transformer(grid, table, 2 ** 31 - 1, kinds=KINDS, crystal=crystal,
                             hkl_radius=0.1, threads=threads, half_sets=True)
            add_frames(st, scan, tr, first, first + n, 2, scale, chunk_frames=8, mask=PaintedMask(bragg_all))
            tr.close()
        for kind in KINDS:
            s, w = tr.half_set(kind)
            assert s.shape == w.shape == coarse.shape
            want_s, want_w = (binned(a) for a in ref.acc.arrays(KINDS.index(kind))[:2])
            assert np.count_nonzero(w) > 1000, (stored, threads, kind)
            np.testing.assert_allclose(w, want_w, rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(s, want_s, rtol=1e-4, atol=1e-5 * want_s.max())
    with pytest.raises(ValueError, match="numbers of the"):
        tr = Transformer(grid, table, 2 ** 31 - 1, half_sets=True)
        tr.add(frames[:2], np.zeros((2, 1, 3, 3)), np.ones(2))


def test_the_half_sets_grid_bins_two_voxels_a_side():
    from hklflow.model.grid import Axis, Grid

    grid = Grid(Axis(-2.0, 0.5, 9), Axis(-1.0, 0.25, 8), Axis(0.0, 1.0, 1))
    coarse = half_set_grid(grid)
    assert [ax.n for ax in coarse.axes] == [5, 4, 1]
    assert coarse.h.start == -1.75 and coarse.h.step == 1.0 and coarse.l.start == 0.5
