"""hklflow.model.detector_modules: a detector's modules read from its mask agree with pyFAI's
own module layout (MODULE_SIZE, MODULE_GAP, calc_mask); a single sensor is one module; where a
module lies follows the orientation; a module whose residuals are shifted is flagged."""
from __future__ import annotations

import numpy as np
import pytest

from hklflow.model.detector_modules import ModuleLayout, module_residuals
from hklflow.model.geometry import DetectorFacts, detector_facts, pyfai_detector


@pytest.mark.parametrize("name", ["Pilatus2M", "Pilatus300k", "Eiger4M"])
def test_the_modules_are_pyfai_s(name):
    det = pyfai_detector(name)
    layout = ModuleLayout.of(detector_facts(name))
    (sy, sx), (gy, gx) = det.MODULE_SIZE, det.MODULE_GAP
    ny, nx = det.shape
    nr, nc = (ny + gy) // (sy + gy), (nx + gx) // (sx + gx)
    assert layout.rows == tuple((i * (sy + gy), i * (sy + gy) + sy) for i in range(nr))
    assert layout.cols == tuple((j * (sx + gx), j * (sx + gx) + sx) for j in range(nc))
    # every pixel pyFAI's calc_mask leaves is in a module, every one it masks is not
    inside = np.zeros(det.shape, bool)
    for a, b in layout.rows:
        for c, d in layout.cols:
            inside[a:b, c:d] = True
    assert np.array_equal(inside, ~np.asarray(det.calc_mask(), bool))
    # a pixel centre's module is the block it lies in
    rows, cols = np.nonzero(inside)
    pick = np.random.default_rng(0).choice(len(rows), 2000)
    mr, mc = layout.index(cols[pick] + 0.5, rows[pick] + 0.5)
    assert np.array_equal(mr, rows[pick] // (sy + gy)) and np.array_equal(mc, cols[pick] // (sx + gx))


def test_a_single_sensor_is_one_module():
    facts = DetectorFacts("flat", 3, (100, 80), 1e-4, 1e-4, None, True)
    layout = ModuleLayout.of(facts)
    assert layout.single and layout.rows == ((0, 100),) and layout.cols == ((0, 80),)
    assert ModuleLayout.of(detector_facts("Perkin")).single  # pyFAI's: no gaps


def test_a_position_in_a_gap_goes_to_the_nearer_module():
    layout = ModuleLayout.of(detector_facts("Pilatus2M"))  # rows 0-195, gap 195-212
    assert layout.index([10.0, 10.0], [198.0, 210.0])[0].tolist() == [0, 1]


@pytest.mark.parametrize("orientation, first", [(1, "1/8 from top, 3/3 from left"),
                                                (2, "1/8 from top, 1/3 from left"),
                                                (3, "8/8 from top, 1/3 from left"),
                                                (4, "8/8 from top, 3/3 from left")])
def test_where_a_module_lies_follows_the_orientation(orientation, first):
    """Pixel (0, 0) lies top right, top left, bottom left, bottom right (docs/conventions.md):
    so does module (0, 0); pyFAI's mask (and so the modules) are in the frames' array."""
    layout = ModuleLayout.of(detector_facts("Pilatus2M", orientation))
    assert layout.shape == (8, 3) and layout.placement(0, 0) == first
    assert layout.rows == ModuleLayout.of(detector_facts("Pilatus2M", 3)).rows


def shifted_residuals(layout, shifted=(3, 1), shift=(0.4, 0.0, 0.0), per_module=40, seed=1):
    """Peaks spread over every module with residuals N(0, 0.3) in x, y and φ; those on
    module `shifted` moved by `shift`."""
    rng = np.random.default_rng(seed)
    x, y, res = [], [], []
    for i, (a, b) in enumerate(layout.rows):
        for j, (c, d) in enumerate(layout.cols):
            x.append(rng.uniform(c, d, per_module))
            y.append(rng.uniform(a, b, per_module))
            r = rng.normal(0, 0.3, (per_module, 3))
            if (i, j) == shifted:
                r += shift
            res.append(r)
    return np.concatenate(x), np.concatenate(y), np.concatenate(res)


def test_a_displaced_module_is_flagged():
    layout = ModuleLayout.of(detector_facts("Pilatus2M"))
    x, y, res = shifted_residuals(layout)
    res[::7] = np.nan  # peaks not used: left out
    rows = module_residuals(layout, x, y, res)
    assert len(rows) == 24 and [r["module"] for r in rows] == sorted(r["module"] for r in rows)
    assert [(r["module"], r["flag"]) for r in rows if r["flag"]] == [((3, 1), ["x"])]
    r = rows[3 * 3 + 1]
    own = res[(layout.index(x, y)[0] == 3) & (layout.index(x, y)[1] == 1)]
    own = own[np.isfinite(own).all(axis=1)]
    assert r["n"] == len(own)
    assert np.allclose(r["rms"], np.sqrt(np.mean(own ** 2, axis=0)))
    assert np.allclose(r["se"], own.std(axis=0, ddof=1) / np.sqrt(len(own)))


def test_modules_in_place_are_flagged_as_often_as_chance_says():
    """Nothing shifted: a module's component is flagged with the chance that |t| of n - 1
    degrees of freedom passes 3 (about 0.5 % for 40 peaks: on 24 modules times x, y and φ,
    a flag by chance in about one temperature of four)."""
    from scipy import stats

    layout = ModuleLayout.of(detector_facts("Pilatus2M"))
    flags = sum(len(r["flag"]) for seed in range(100) for r in module_residuals(
        layout, *shifted_residuals(layout, shift=(0.0, 0.0, 0.0), seed=seed)))
    tests, p = 100 * 24 * 3, 2 * stats.t.sf(3.0, 39)
    assert abs(flags - tests * p) < 4 * np.sqrt(tests * p * (1 - p)), (flags, tests * p)


def test_too_few_peaks_are_not_flagged():
    layout = ModuleLayout.of(detector_facts("Pilatus300k"))
    res = np.array([[1.0, 0, 0], [1.1, 0, 0], [0.9, 0, 0], [1.0, 0, 0]])
    (row,) = module_residuals(layout, [10.0] * 4, [10.0] * 4, res)
    assert row["n"] == 4 and row["flag"] == []
    (row,) = module_residuals(layout, [10.0] * 5, [10.0] * 5, np.vstack([res, res[:1]]))
    assert row["flag"] == ["x"]
