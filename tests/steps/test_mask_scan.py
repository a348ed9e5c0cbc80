"""Masks (rule mask_scan): pixel mask and Bragg regions against the truth of the simulated
tiny experiment (hot and dead pixels, gaps, every strong reflection), the compiled painter
against a numpy reference, the mask file, the user mask file and the failure modes.

The inputs are made by the steps themselves (ingest with the true geometry, find_peaks,
index_parent) once per module in a copy of the tiny experiment."""
from __future__ import annotations

import json
import os
import shutil
from contextlib import contextmanager
from pathlib import Path

import h5py
import numpy as np
import pytest

from hklflow.algorithms.masks import masking
from hklflow.algorithms.masks.masking import (DEAD, FOUND, GAP, HOT, MIN_RADIUS, PREDICTED, USER,
                                              ScanMask, build_mask, found_regions)
from hklflow.files.mask import read_mask_details, read_mask_file, write_mask_file
from hklflow.files.orientation import read_orientation_file
from hklflow.files.peaks import read_peaks_file
from hklflow.files.scan import read_scan_file
from hklflow.settings.params import DetectorParams, MaskParams
from hklflow.steps import mask_scan

from conftest import step_settings

DETECTOR = DetectorParams.defaults(name="Pilatus300k")

ENTRIES = ("f1", "f2")
T = "300K"


@contextmanager
def cwd(path):
    old = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


def run_mask_scan(entry="f1", config="config/config.yaml", out=None, png=None, orientation=None,
                  peaks=None):
    """mask_scan's command line as the rule runs it (in the experiment directory)."""
    d = f"results/tiny/{T}/{entry}"
    return mask_scan.main(["--settings", step_settings(Path("."), "mask_scan", config=config),
                           "--scan", f"{d}/scan.nxs", "--peaks", peaks or f"{d}/peaks.nxs",
                           "--orientation", orientation or f"results/tiny/{T}/orientation.nxs",
                           "--out", out or f"{d}/mask.nxs", "--png", png or f"{d}/mask.png"])


@pytest.fixture(scope="module")
def reduced(tiny_300k):
    """The 300 K entries of the tiny experiment with their mask files (mask_scan's command line)."""
    with cwd(tiny_300k):
        for e in ENTRIES:
            assert run_mask_scan(e) == 0
    return tiny_300k


def entry_dir(root, entry):
    return root / "results" / "tiny" / T / entry


def records(root, entry):
    d = entry_dir(root, entry)
    return (read_scan_file(d / "scan.nxs"), read_peaks_file(d / "peaks.nxs"),
            read_orientation_file(root / "results" / "tiny" / T / "orientation.nxs"))


def painted(mask: ScanMask) -> np.ndarray:
    rows, cols = mask.shape
    out = np.zeros((mask.nframes, rows * cols), np.uint8)
    mask.paint(0, mask.nframes, out)
    return out.reshape(mask.nframes, rows, cols)


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
# Against the truth of the simulation
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("entry", ENTRIES)
def test_pixel_mask_has_gaps_hot_and_dead_pixels_and_little_else(reduced, tiny_truth, entry):
    details = read_mask_details(entry_dir(reduced, entry) / "mask.nxs")
    bits = details["pixel_mask"]
    rec = read_scan_file(entry_dir(reduced, entry) / "scan.nxs")
    gaps = rec.setup.calibration.detector_mask()
    assert gaps.sum() > 10000
    np.testing.assert_array_equal((bits & GAP) != 0, gaps)
    defects = tiny_truth["detector_defects"]
    for r, c in defects["hot_pixels"]:
        assert bits[r, c] & HOT, (r, c)
    for r, c in defects["dead_pixels"]:
        assert bits[r, c] & DEAD, (r, c)
    truth_bad = gaps.copy()
    for r, c in defects["hot_pixels"] + defects["dead_pixels"]:
        truth_bad[r, c] = True
    wrongly = (bits != 0) & ~truth_bad
    assert wrongly.sum() <= 2, np.argwhere(wrongly)  # no good pixel masked (a few at most)
    assert not np.any(bits & USER)  # no user mask in this config
    st = details["statistics"]
    assert st["pixels_gap"] == gaps.sum() and st["pixels_dead"] >= 5 and st["pixels_hot"] >= 5


@pytest.mark.parametrize("entry", ENTRIES)
def test_every_strong_reflection_is_masked_and_little_else(reduced, tiny_truth, entry):
    mask = ScanMask.of(read_mask_file(entry_dir(reduced, entry) / "mask.nxs"))
    vol = painted(mask)
    refl = tiny_truth["scans"][f"tiny/{T}/{entry}"]["reflections"]
    r, c, z = (np.asarray(refl[k]) for k in ("row", "col", "frame"))
    rows, cols = mask.shape
    inside = (r >= 0) & (r < rows) & (c >= 0) & (c < cols) & (z >= 0) & (z < mask.nframes)
    strong = inside & (np.asarray(refl["i_over_sigma"]) > 10)
    assert strong.sum() > 50
    hit = np.zeros(len(r), bool)
    hit[inside] = vol[z[inside].astype(int), r[inside].astype(int), c[inside].astype(int)] != 0
    assert hit[strong].all(), np.column_stack([r, c, z])[strong & ~hit]
    assert hit[inside].all()  # the weak ones too: predicted with the refined orientation
    fraction = vol.mean()
    print(f"{entry}: Bragg mask {100 * fraction:.3f}% of the pixel-frames, "
          f"{len(mask.regions)} regions; pixel mask {100 * mask.pixels.mean():.2f}% of the pixels")
    assert 0 < fraction < 0.01
    st = read_mask_details(entry_dir(reduced, entry) / "mask.nxs")["statistics"]
    usable = ~mask.pixels
    assert st["bragg_pixel_frames"] == int((vol & usable[None]).sum())  # the exact union


def test_found_peaks_boxes_are_inside_their_regions(reduced):
    scan, peaks, ori = records(reduced, "f1")
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


def test_predicted_regions_alone_cover_the_strong_reflections(reduced, tiny_truth):
    scan, peaks, ori = records(reduced, "f2")  # the entry with offsets and a detector shift
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
def random_regions(rng, n, shape, nframes):
    rows, cols = shape
    return np.column_stack([rng.uniform(-4, rows + 4, n), rng.uniform(-4, cols + 4, n),
                            rng.uniform(-3, nframes + 3, n), rng.uniform(0.2, 6, n),
                            rng.uniform(0.2, 6, n), rng.uniform(0.1, 4, n)])


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


# --------------------------------------------------------------------------------------
# The mask file
# --------------------------------------------------------------------------------------
def test_mask_file_round_trip(tmp_path):
    rng = np.random.default_rng(2)
    shape, nframes = (20, 30), 15
    regions = random_regions(rng, 25, shape, nframes)
    reasons = np.zeros(shape, np.int32)
    reasons[3, :] = GAP
    reasons[5, 7] = HOT
    reasons[6, 8] = DEAD | USER
    table = {k: regions[:, i] for i, k in enumerate(masking.REGION_COLUMNS)}
    table.update(h=np.full(25, np.nan), k=np.zeros(25), l=np.ones(25),
                 source=np.full(25, FOUND, np.int8), peak_index=np.arange(25), zeta=np.full(25, np.nan))
    for regs, tab in ((regions, table), (np.zeros((0, 6)), {k: v[:0] for k, v in table.items()})):
        mask = ScanMask(reasons != 0, regs, 0.15, nframes)
        res = masking.MaskResult(mask, reasons, tab, {"pixels_gap": 30, "bragg_fraction": 0.01})
        write_mask_file(tmp_path / "m.nxs", res, entry="f9", title="s/1K/f9",
                        parameters={"radius_px": 3.0, "mask_file": None}, provenance={"program": "test"})
        back = read_mask_file(tmp_path / "m.nxs")
        np.testing.assert_array_equal(back.pixels, reasons != 0)
        np.testing.assert_array_equal(back.regions, regs)
        assert back.hkl_radius == 0.15 and back.nframes == nframes
        np.testing.assert_array_equal(painted(ScanMask.of(back)), painted(mask))
        det = read_mask_details(tmp_path / "m.nxs")
        np.testing.assert_array_equal(det["pixel_mask"], reasons)
        assert len(det["regions"]["source"]) == len(regs)
    assert not list(tmp_path.glob(".*tmp"))  # the temporary file is gone
    with h5py.File(tmp_path / "m.nxs", "r") as f:
        assert f["f9/bragg_regions"].attrs["NX_class"] == "NXreflections"
        assert f["f9/instrument/detector/pixel_mask"].compression == "gzip"


def test_command_line_outputs(reduced):
    d = entry_dir(reduced, "f1")
    assert (d / "mask.png").stat().st_size > 20000
    with h5py.File(d / "mask.nxs", "r") as f:
        assert f.attrs["default"] == "f1"
        e = f["f1"]
        assert e["title"][()].decode() == f"tiny/{T}/f1"
        assert e["instrument/detector/pixel_mask"].dtype == np.int32
        record = json.loads(e["process/note/data"][()])
        assert record["program"] == "hklflow mask_scan"
        assert any(k.endswith("orientation.nxs") for k in record["inputs"])
        src = e["bragg_regions/source"][()]
        assert (src == FOUND).sum() == len(read_peaks_file(d / "peaks.nxs").peaks["n_pixels"])
        assert (src == PREDICTED).sum() > 100
        assert e["bragg_regions"].attrs["hkl_radius"] == 0.0


def test_user_mask_file_and_hkl_radius_from_the_config(reduced):
    import fabio.tifimage
    import yaml

    cfg = yaml.safe_load((reduced / "config" / "config.yaml").read_text())
    m = np.zeros((619, 487), np.uint8)
    m[100:140, 200:260] = 1  # a beamstop shadow, say
    fabio.tifimage.TifImage(data=m).write(str(reduced / "user_mask.tif"))
    cfg["instrument"]["detector"] = {"name": "Pilatus300k", "mask_file": "user_mask.tif"}
    cfg.setdefault("reduction", {}).setdefault("mask", {}).update(hkl_radius=0.1)
    (reduced / "config" / "user.yaml").write_text(yaml.safe_dump(cfg))
    with cwd(reduced):
        assert run_mask_scan("f1", config="config/user.yaml", out="user_mask.nxs", png="user_mask.png") == 0
    bits = read_mask_details(reduced / "user_mask.nxs")["pixel_mask"]
    np.testing.assert_array_equal((bits & USER) != 0, m != 0)
    mask = read_mask_file(reduced / "user_mask.nxs")
    assert mask.pixels[m != 0].all() and mask.hkl_radius == 0.1


# --------------------------------------------------------------------------------------
# Failures leave nothing behind
# --------------------------------------------------------------------------------------
def test_bad_inputs_fail_and_leave_no_output(reduced, capsys):
    ori = reduced / "results" / "tiny" / T / "orientation.nxs"
    other = reduced / "other_sample_orientation.nxs"
    shutil.copy(ori, other)
    with h5py.File(other, "r+") as f:
        del f["orientation/sample/name"]
        f["orientation/sample/name"] = "not_tiny"
    cases = {"missing orientation": {"orientation": "no_such/orientation.nxs"},
             "orientation of another sample": {"orientation": str(other)},
             "peaks of another entry": {"peaks": f"results/tiny/{T}/f2/peaks.nxs"}}
    with cwd(reduced):
        for why, kw in cases.items():
            Path("bad.nxs").write_text("stale output of an earlier run")
            Path("bad.png").write_text("stale")
            assert run_mask_scan("f1", out="bad.nxs", png="bad.png", **kw) == 1, why
            assert not Path("bad.nxs").exists() and not Path("bad.png").exists(), why
            assert not list(Path(".").glob(".bad.nxs*")), why
            err = [ln for ln in capsys.readouterr().err.splitlines() if " ERROR: " in ln]
            assert err, why
            word = {"missing orientation": "no_such", "orientation of another sample": "not_tiny",
                    "peaks of another entry": "f2"}[why]
            assert word in err[-1], (why, err[-1])
