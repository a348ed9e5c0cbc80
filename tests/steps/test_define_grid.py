"""Step define_grid: the (H, K, L) grid of a sample from the cell and the Q range its
detector positions reach (or the axes the config gives), by the step command with the
settings the Snakefile passes; model.grid.default_grid itself: tests/model/test_grid.py."""
from __future__ import annotations

import json
import math

import numpy as np
import yaml

from hklflow.files.grid import read_grid_file
from hklflow.model.crystal import UnitCell
from hklflow.model.geometry import DetectorGeometry
from hklflow.steps import define_grid

from conftest import REPO, step_settings


def make_calibration(root, truth):
    poni = root / "results/calibration/ceo2/geometry.poni"
    poni.parent.mkdir(parents=True, exist_ok=True)
    DetectorGeometry(**truth["calibration_geometry"]).write_poni(poni)
    return poni


def test_derived_grid_covers_the_detector_with_integer_nodes_on_voxel_centres(tiny_copy, tiny_truth,
                                                                               monkeypatch):
    monkeypatch.chdir(tiny_copy)
    make_calibration(tiny_copy, tiny_truth)
    assert define_grid.main(["--settings", step_settings(tiny_copy, "define_grid", "tiny"),
                             "--out", "grid.json"]) == 0
    grid = read_grid_file(tiny_copy / "grid.json")
    info = json.loads((tiny_copy / "grid.json").read_text())
    cell = UnitCell(5.171, 5.171, 7.504, 90, 90, 90)  # the config's approximate cell
    # the largest |Q| of any scan (the shifted entries included), from pyFAI's own 2theta
    q_max = 0.0
    cal = DetectorGeometry(**tiny_truth["calibration_geometry"])
    for s in tiny_truth["scans"].values():
        g = cal.shifted(*s["det_shift"])
        tth = g.to_pyfai().corner_array(unit="2th_rad", scale=False)[..., 0]
        q_max = max(q_max, float(2 * np.sin(tth.max() / 2) / g.wavelength))
    assert info["q_max"] == np.float64(info["q_max"]) and abs(info["q_max"] / q_max - 1) < 1e-3
    for ax, length in zip(grid.axes, cell.parameters[:3]):
        assert ax.start == -ax.stop and ax.stop >= q_max * length - 1e-6  # every Q reached
        m = round(1 / ax.step)
        assert abs(1 / ax.step - m) < 1e-9  # step 1/m: integers on voxel centres
    assert grid.size <= 1771561  # the tiny config's max_voxels
    assert info["sample"] == "tiny" and info["provenance"]["program"] == "hklflow define_grid"


def test_axes_given_in_the_config_are_kept_and_a_missing_calibration_is_named(
        tiny_copy, tiny_truth, monkeypatch, capsys):
    monkeypatch.chdir(tiny_copy)
    p = tiny_copy / "config/config.yaml"
    cfg = yaml.safe_load(p.read_text())
    cfg["reduction"]["transform"]["grid"] = {"l": [-4, 4, 0.1]}
    p.write_text(yaml.safe_dump(cfg, sort_keys=False))
    settings = step_settings(tiny_copy, "define_grid", "tiny")
    assert define_grid.main(["--settings", settings, "--out", "grid.json"]) == 1
    assert "results/calibration/ceo2/geometry.poni: PONI file does not exist" in capsys.readouterr().err
    assert not (tiny_copy / "grid.json").exists()
    make_calibration(tiny_copy, tiny_truth)
    assert define_grid.main(["--settings", settings, "--out", "grid.json"]) == 0
    grid = read_grid_file(tiny_copy / "grid.json")
    assert (grid.l.start, grid.l.step, grid.l.n) == (-4.0, 0.1, 81)
    assert math.isclose(grid.h.start, -grid.h.stop)


def test_a_derived_step_the_laue_group_cannot_take_is_refused_before_any_transform(
        tiny_copy, tiny_truth, monkeypatch, capsys):
    """H given, K derived from the data with another step: 4/mmm maps H onto K, so every
    merge would refuse the grid (it used to, after 4 transforms and 4 sums).  The config's
    check at parse time cannot see K's step; define_grid, which knows both, refuses it."""
    from hklflow.planning.config import load_experiment

    monkeypatch.chdir(tiny_copy)
    make_calibration(tiny_copy, tiny_truth)
    p = tiny_copy / "config/config.yaml"
    cfg = yaml.safe_load(p.read_text())
    cfg["reduction"]["transform"]["grid"] = {"h": [-3, 3, 0.1]}
    p.write_text(yaml.safe_dump(cfg, sort_keys=False))
    load_experiment(p, base_dir=tiny_copy)  # (accepted: K is not known yet)
    settings = step_settings(tiny_copy, "define_grid", "tiny")
    assert define_grid.main(["--settings", settings, "--out", "grid.json"]) == 1
    err = capsys.readouterr().err
    for words in ("define_grid failed: field 'reduction.transform.grid': the grid (H -3..3 "
                  "step 0.1 (61) x K ", "is not compatible with the Laue group 4/mmm (space "
                  "group I 41/a m d:1) of sample tiny", "maps H onto K, but their steps differ "
                  "(0.1 and ", "give reduction.transform.grid.h and reduction.transform.grid.k "
                  "the same step", "; K derived here from the data (K +-", "give every axis the "
                  "operators mix in reduction.transform.grid, or none (every merge would "
                  "refuse this grid"):
        assert words in err, (words, err)
    assert not (tiny_copy / "grid.json").exists()
    # its row of docs/bad-inputs.md says what the user sees
    row = next(ln for ln in (REPO / "docs/bad-inputs.md").read_text().splitlines()
               if "::test_a_derived_step_the_laue_group_cannot_take" in ln)
    for words in ("define_grid failed: field 'reduction.transform.grid'", "maps H onto K, but "
                  "their steps differ (0.1 and 0.0833333)", "; K derived here from the data"):
        assert words in err and words in row, words
    cfg["reduction"]["transform"]["grid"] = {"h": [-3, 3, 0.1], "k": [-3, 3, 0.1]}
    p.write_text(yaml.safe_dump(cfg, sort_keys=False))  # both given: the merge can take it
    assert define_grid.main(["--settings", step_settings(tiny_copy, "define_grid", "tiny"),
                             "--out", "grid.json"]) == 0
