"""hklflow.algorithms.masks.masking: the Bragg regions build_mask makes of the found and the
predicted peaks of the tiny experiment's 300 K entries (their inputs made by the steps:
conftest.tiny_300k) against their boxes and the truth; the dead-pixel rule and its Poisson
rate; the compiled painter (masks.kernels) against the documented ellipsoid test painted
pixel by pixel in numpy, its block summary, a buffer reused; the regions of found peaks."""
from __future__ import annotations

import numpy as np
import pytest

from hklflow.algorithms.masks import masking
from hklflow.algorithms.masks.masking import (FOUND, MIN_RADIUS, PREDICTED, ScanMask, build_mask,
                                              found_regions)
from hklflow.files.orientation import read_orientation_file
from hklflow.files.peaks import read_peaks_file
from hklflow.files.scan import read_scan_file
from hklflow.settings.params import DetectorParams, MaskParams

from experiment_helpers import painted, random_regions

DETECTOR = DetectorParams.defaults(name="Pilatus300k")
T = "300K"


def records(root, entry):
    """The scan, peaks and orientation records of an entry at 300 K."""
    d = root / "results" / "tiny" / T / entry
    return (read_scan_file(d / "scan.nxs"), read_peaks_file(d / "peaks.nxs"),
            read_orientation_file(root / "results" / "tiny" / T / "orientation.nxs"))


def reference_paint(regions, first, stop, shape):
    """The documented ellipsoid test, pixel by pixel (numpy, slow)."""
    rows, cols = shape
    out = np.zeros((stop - first, rows, cols), np.uint8)
    r = np.arange(rows)
    c = np.arange(cols)
    for rc, cc, fc, ar, ac, af in regions:
        dr = (r + 0.5 - rc) / ar
        dc = (c + 0.5 - cc) / ac
        for f in range(first, stop):
            dz = (f + 0.5 - fc) / af
            out[f - first] |= (dr[:, None] ** 2 + dc[None, :] ** 2 + dz ** 2 <= 1.0)
    return out


# --------------------------------------------------------------------------------------
# The regions of the tiny experiment's peaks
# --------------------------------------------------------------------------------------
def test_found_peaks_boxes_are_inside_their_regions(tiny_300k):
    scan, peaks, ori = records(tiny_300k, "f1")
    res = build_mask(scan, peaks, ori, MaskParams.defaults(predicted_peaks=False, radius_px=0,
                                                    radius_frames=0), DETECTOR)
    vol = painted(res.mask)
    bb = peaks.peaks["bounding_box"]
    assert len(bb) > 50 and (res.table["source"] == FOUND).all()
    for r0, r1, c0, c1, f0, f1 in bb:
        assert vol[f0:f1, r0:r1, c0:c1].all(), (r0, r1, c0, c1, f0, f1)
    # the found peaks' centroids carry nearly integer hkl from the refined orientation
    hkl = np.column_stack([res.table[k] for k in "hkl"])
    assert np.median(np.abs(hkl - np.round(hkl)).max(axis=1)) < 0.02


def test_predicted_regions_alone_cover_the_strong_reflections(tiny_300k, tiny_truth):
    scan, peaks, ori = records(tiny_300k, "f2")  # the entry with offsets and a detector shift
    res = build_mask(scan, peaks, ori, MaskParams.defaults(found_peaks=False), DETECTOR)
    t = res.table
    assert (t["source"] == PREDICTED).all() and len(t["row"]) > 100
    hkl = np.column_stack([t[k] for k in "hkl"])
    np.testing.assert_array_equal(hkl, np.round(hkl))
    assert not ori.crystal().is_absent(hkl.astype(int)).any()
    # the Lorentz stretch: the frame half-width grows as |zeta| shrinks, capped
    stretch = t["radius_frame"] / 1.5
    np.testing.assert_allclose(stretch, np.clip(1 / np.abs(t["zeta"]), 1 / 1.5 * MIN_RADIUS, 10))
    refl = tiny_truth["scans"][f"tiny/{T}/f2"]["reflections"]
    r, c, z = (np.asarray(refl[k]) for k in ("row", "col", "frame"))
    strong = (np.asarray(refl["i_over_sigma"]) > 10) & (r >= 0) & (r < 619) & (c >= 0) & (c < 487) \
        & (z >= 0) & (z < 60)
    vol = painted(res.mask)
    assert vol[z[strong].astype(int), r[strong].astype(int), c[strong].astype(int)].all()


# --------------------------------------------------------------------------------------
# Dead pixels
# --------------------------------------------------------------------------------------
def test_poisson_rate_at_median_max_matches_simulation():
    rng = np.random.default_rng(3)
    for m, n in ((1, 60), (3, 60), (10, 60), (2, 3650)):
        lam = masking.poisson_rate_at_median_max(m, n)
        maxima = rng.poisson(lam, size=(4000, n)).max(axis=1)
        assert abs(np.mean(maxima >= m) - 0.5) < 0.04, (m, n, lam)
    assert masking.poisson_rate_at_median_max(0, 60) == 0


def test_dead_pixel_rule():
    rng = np.random.default_rng(5)
    mp = rng.poisson(10, size=(40, 60)).astype(np.float32) + 3  # a scan maximum around 13
    mp[:, 30:] = rng.integers(0, 2, size=(40, 30))  # a dark half: maxima 0 or 1
    unknown = np.zeros(mp.shape, bool)
    unknown[:, 10] = True  # a gap column
    mp[unknown] = -1
    mp[20, 15] = 0  # dead among counting pixels
    mp[20, 11] = 0  # dead next to the gap
    mp[5, 45] = 0  # zero where zeros are normal: cannot tell
    mp[30, 5] = -2  # flagged by the detector in every frame
    dead, details = masking.dead_pixels(mp, unknown, nframes=60)
    assert dead[20, 15] and dead[20, 11] and dead[30, 5]
    assert not dead[5, 45] and not dead[unknown].any()
    assert dead[:, 30:].sum() == 0
    assert dead.sum() == 3
    # with few frames a maximum of 0 next to maxima of 1 or 2 proves nothing
    low = np.ones((9, 9), np.float32)
    low[4, 4] = 0
    assert not masking.dead_pixels(low, np.zeros(low.shape, bool), nframes=20)[0].any()


# --------------------------------------------------------------------------------------
# The painter
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_paint_equals_numpy_reference(seed):
    rng = np.random.default_rng(seed)
    shape, nframes = (37, 53), 23
    regions = random_regions(rng, 60, shape, nframes)
    # on pixel and frame centres and boundaries exactly: the edge cases of the test
    regions[:5, :3] = np.round(regions[:5, :3]) + [[0.5, 0.5, 0.5]]
    regions[5:10, :3] = np.round(regions[5:10, :3])
    regions[10:15, 3:] = [1.0, 2.0, 0.5]
    mask = ScanMask(np.zeros(shape, bool), regions, 0.0, nframes)
    for first, stop in ((0, nframes), (0, 1), (5, 17), (22, 23), (7, 7)):
        out = np.zeros((stop - first, shape[0] * shape[1]), np.uint8)
        mask.paint(first, stop, out)
        ref = reference_paint(regions, first, stop, shape)
        np.testing.assert_array_equal(out.reshape(ref.shape), ref)
    assert reference_paint(regions, 0, nframes, shape).any()
    out3 = np.zeros((nframes,) + shape, np.uint8)  # (frames, rows, cols) is accepted too
    mask.paint(0, nframes, out3)
    np.testing.assert_array_equal(out3, reference_paint(regions, 0, nframes, shape))
    with pytest.raises(ValueError):
        mask.paint(0, nframes + 1, np.zeros((nframes + 1, shape[0] * shape[1]), np.uint8))
    with pytest.raises(ValueError):
        mask.paint(0, 2, np.zeros((2, shape[0] * shape[1]), np.int32))


@pytest.mark.parametrize("block", [64, 37, 4096])
def test_paint_marks_the_blocks_that_hold_a_painted_pixel(block):
    """paint's block summary (for the transform, which skips the Bragg tests of the blocks
    of a frame that hold no painted pixel): 1 exactly where a run of `block` pixels holds
    one in that frame (the detector's pixels not a multiple of the block: a short last
    block), as transform.bragg_block_summary finds it in the painted mask; a summary of the
    wrong shape or type is refused."""
    from hklflow.algorithms.transform import BLOCK, bragg_block_summary

    rng = np.random.default_rng(12)
    shape, nframes = (37, 53), 23
    mask = ScanMask(np.zeros(shape, bool), random_regions(rng, 12, shape, nframes), 0.0,
                    nframes)
    nblocks = -(-shape[0] * shape[1] // block)
    for first, stop in ((0, nframes), (5, 17), (22, 23)):
        out = np.zeros((stop - first, shape[0] * shape[1]), np.uint8)
        blocks = np.zeros((stop - first, nblocks), np.uint8)
        mask.paint(first, stop, out, blocks=blocks, block=block)
        np.testing.assert_array_equal(out.reshape(stop - first, *shape),
                                      reference_paint(mask.regions, first, stop, shape))
        padded = np.zeros((stop - first, nblocks * block), np.uint8)
        padded[:, :out.shape[1]] = out
        np.testing.assert_array_equal(blocks, padded.reshape(stop - first, nblocks, block)
                                      .any(axis=2))
        if block == BLOCK:
            np.testing.assert_array_equal(blocks, bragg_block_summary(out))
        assert 0 < blocks.sum() < blocks.size or block == BLOCK
    out = np.zeros((2, shape[0] * shape[1]), np.uint8)
    for bad in (np.zeros((2, nblocks + 1), np.uint8), np.zeros((2, nblocks), np.int32)):
        with pytest.raises(ValueError, match="blocks"):
            mask.paint(0, 2, out, blocks=bad, block=block)


def test_painting_zero_clears_a_reused_buffer():
    """The transform's buffer, reused chunk after chunk: painting the last chunk's frames
    with 0 leaves it all zeros (overlapping regions too), and the next chunk's paint equals
    a paint into a fresh buffer."""
    rng = np.random.default_rng(11)
    shape, nframes = (37, 53), 23
    regions = random_regions(rng, 80, shape, nframes)
    mask = ScanMask(np.zeros(shape, bool), regions, 0.0, nframes)
    buffer = np.zeros((5, shape[0] * shape[1]), np.uint8)
    painted = None
    for a in range(0, nframes, 5):
        b = min(a + 5, nframes)
        if painted is not None:
            mask.paint(*painted, buffer[:painted[1] - painted[0]], value=0)
            assert not buffer.any()
        mask.paint(a, b, buffer[:b - a])
        painted = (a, b)
        np.testing.assert_array_equal(buffer[:b - a].reshape(b - a, *shape),
                                      reference_paint(regions, a, b, shape))
    assert painted == (20, 23)


def test_zero_radii_still_mask_the_centre_pixel_and_frame():
    rng = np.random.default_rng(7)
    shape, nframes = (30, 40), 12
    # predicted-like centres anywhere, radius 0
    centres = np.column_stack([rng.uniform(0, 30, 200), rng.uniform(0, 40, 200), rng.uniform(0, 12, 200)])
    regions = np.column_stack([centres, np.full((200, 3), MIN_RADIUS)])
    vol = painted(ScanMask(np.zeros(shape, bool), regions, 0.0, nframes))
    i = np.floor(centres).astype(int)
    assert vol[i[:, 2], i[:, 0], i[:, 1]].all()
    # found peaks of one pixel in one frame, margins 0
    bb = np.array([[3, 4, 5, 6, 2, 3], [10, 11, 20, 22, 0, 1], [29, 30, 39, 40, 11, 12]])
    vol = painted(ScanMask(np.zeros(shape, bool), found_regions(bb, 0.0, 0.0), 0.0, nframes))
    for r0, r1, c0, c1, f0, f1 in bb:
        assert vol[f0:f1, r0:r1, c0:c1].all()
    assert vol.sum() <= 2 * 4 * (1 + 2 + 1)  # and not much around them


def test_found_regions_contain_random_boxes():
    rng = np.random.default_rng(11)
    n = 300
    lo = rng.integers(0, 20, (n, 3))
    ext = rng.integers(1, 9, (n, 3))
    bb = np.column_stack([lo[:, 0], lo[:, 0] + ext[:, 0], lo[:, 1], lo[:, 1] + ext[:, 1],
                          lo[:, 2], lo[:, 2] + ext[:, 2]])
    margins = rng.uniform(0, 2, (n, 2))
    checked = 0
    for k in range(n):
        reg = found_regions(bb[k:k + 1], *margins[k])
        vol = reference_paint(reg, 0, 30, (30, 30))
        r0, r1, c0, c1, f0, f1 = bb[k]
        assert vol[f0:f1, r0:r1, c0:c1].all(), (bb[k], reg)
        if np.all(ext[k] % 2 == 1):  # the margin is there along the axes through the centre
            rm, cm, fm = (r0 + r1) // 2, (c0 + c1) // 2, (f0 + f1) // 2
            m_px, m_fr = int(np.floor(margins[k, 0])), int(np.floor(margins[k, 1]))
            assert vol[fm, max(r0 - m_px, 0):r1 + m_px, cm].all()
            assert vol[fm, rm, max(c0 - m_px, 0):c1 + m_px].all()
            assert vol[max(f0 - m_fr, 0):f1 + m_fr, rm, cm].all()
            checked += 1
    assert checked > 20
