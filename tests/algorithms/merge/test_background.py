"""A background volume subtracted from an entry's (algorithms.merge.background): the
signal loses weight x the background's mean, the variance gains weight^2 x the mean's, a
voxel without background is left out and counted, smoothing sums the background over its
box; and what was subtracted is in the notes."""
from __future__ import annotations

import numpy as np
import pytest

from hklflow.algorithms.merge.background import subtract_background
from hklflow.files.volume import VolumeWriter, read_volume
from hklflow.model.grid import Axis, Grid

GRID = Grid(Axis(-1, 0.1, 21), Axis(-1, 0.1, 17), Axis(-1, 0.2, 11))


def write(path, s, w, v, notes=None):
    with VolumeWriter(path, GRID, "transform", path.stem, {"name": "x"}, notes or {}, {},
                      variance=True) as wr:
        wr.write(0, s, w, v)
    return path


@pytest.fixture
def volumes(tmp_path):
    rng = np.random.default_rng(4)
    shape = GRID.shape
    w = rng.integers(0, 5, shape).astype(np.float64)
    s = w * 10.0 + rng.normal(0, 1, shape) * (w > 0)
    v = w * 4.0
    wb = rng.integers(1, 4, shape).astype(np.float64)
    wb[0, 0, :3] = 0  # no background there
    sb = wb * 3.0
    vb = wb * 2.0
    entry = write(tmp_path / "entry.nxs", s, w, v)
    bg = write(tmp_path / "bg.nxs", sb, wb, vb,
               {"background": "x/300K/empty", "background_scale": 1.5})
    return entry, bg, (s, w, v), (sb, wb, vb)


def test_voxel_by_voxel(volumes, tmp_path):
    entry, bg, (s, w, v), (sb, wb, vb) = volumes
    done = subtract_background(entry, bg, tmp_path / "out.nxs", "x", {}, smooth=0)
    out = read_volume(tmp_path / "out.nxs")
    gone = (w > 0) & (wb == 0)
    assert done["voxels_left_out"] == int(gone.sum()) > 0
    keep = ~gone
    np.testing.assert_allclose(out.signal[keep], (s - w * 3.0)[keep], rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(out.variance[keep], (v + w ** 2 * 2.0 / np.maximum(wb, 1))[keep],
                               rtol=1e-5)
    assert not out.weight[gone].any() and not out.signal[gone].any()
    assert out.notes["background"]["scale"] == 1.5
    assert out.notes["background"]["scan"] == "x/300K/empty"


def test_smoothed(volumes, tmp_path):
    entry, bg, (s, w, v), (sb, wb, vb) = volumes
    subtract_background(entry, bg, tmp_path / "out.nxs", "x", {}, smooth=1)
    out = read_volume(tmp_path / "out.nxs")
    i = (5, 6, 4)  # an inner voxel: its box's sums
    box = tuple(slice(c - 1, c + 2) for c in i)
    m = sb[box].sum() / wb[box].sum()
    assert out.signal[i] == pytest.approx(s[i] - w[i] * m, rel=1e-5, abs=1e-4)
    assert out.variance[i] == pytest.approx(v[i] + w[i] ** 2 * vb[box].sum() / wb[box].sum() ** 2,
                                            rel=1e-5)
    # the voxels without background of their own have some in their box now
    assert out.weight[0, 0, 1] == w[0, 0, 1]


def test_a_background_on_another_grid_is_refused(volumes, tmp_path):
    entry, _, *_ = volumes
    other = Grid(Axis(-1, 0.1, 21), Axis(-1, 0.1, 17), Axis(-1, 0.2, 12))
    with VolumeWriter(tmp_path / "bg2.nxs", other, "transform", "b", {}, {}, {}) as wr:
        wr.write(0, np.zeros(other.shape), np.ones(other.shape))
    with pytest.raises(Exception, match="not the transform"):
        subtract_background(entry, tmp_path / "bg2.nxs", tmp_path / "o.nxs", "x", {})
