"""Step merge_entries: the volume of a sample at one temperature, its entries' volumes
merged by the step command (signal and weight added voxel by voxel: the gaps of one entry
are filled by the others, overlaps are weighted means), and the statistics it writes into
the merged volume's notes, log and picture.  The sum by chunks or slabs itself:
tests/algorithms/merge/test_volumes.py."""
from __future__ import annotations

import numpy as np
import pytest

from hklflow.files.volume import read_volume, read_volume_header

from conftest import step_settings
from volume_helpers import run, sample, small_grid, write_inputs


def test_merge_entries_command_fills_the_gaps_of_one_entry_with_the_others(experiment):
    grid = small_grid()
    entries = write_inputs(experiment, grid, 3, sample_=sample(name="tetra"))
    rc = run("merge_entries", ["--settings", step_settings(experiment, "merge_entries", "transform"),
                               "--title", "tetra/300K", "--inputs", *entries,
                               "--out", "out/merged.nxs", "--png", "out/merged.png"])
    assert rc == 0
    merged = read_volume(experiment / "out/merged.nxs")
    parts = [read_volume(p) for p in entries]
    s = np.sum([p.signal.astype(np.float64) for p in parts], axis=0)
    w = np.sum([p.weight.astype(np.float64) for p in parts], axis=0)
    np.testing.assert_allclose(merged.weight, w, rtol=1e-6)
    np.testing.assert_allclose(merged.intensity()[w > 0], (s / np.where(w > 0, w, 1))[w > 0],
                               rtol=1e-5)
    assert np.count_nonzero(merged.weight) > np.count_nonzero(parts[0].weight)
    assert merged.title == "tetra/300K" and len(merged.notes["inputs"]) == 3
    assert read_volume_header(experiment / "out/merged.nxs").sample["name"] == "tetra"
    assert (experiment / "out/merged.png").stat().st_size > 10_000


def test_statistics_of_a_merged_volume_go_into_its_notes_log_and_picture(tmp_path, caplog):
    """merge_entries's statistics (hklflow.algorithms.statistics.shells) of a merged volume with variance: in
    its notes, the log and a picture; a sigma understated twice over is flagged; the
    Bragg nodes left out within reduction.merge.statistics_bragg_radius."""
    import logging
    import math

    from hklflow.files.volume import Volume, write_volume
    from hklflow.model.crystal import Crystal, UnitCell
    from hklflow.steps.merge_entries import write_statistics

    from volume_helpers import TETRA, statistics_of_arrays

    crystal = Crystal("I 4/m m m", UnitCell(*TETRA))
    grid = small_grid()
    rng = np.random.default_rng(1)
    weight = np.full(grid.shape, 2.0, np.float32)
    true = 100.0 * weight  # a flat intensity: every equivalent the same
    for gain, flagged in ((1.0, False), (2.0, True)):
        signal = (true + rng.normal(0, np.sqrt(gain * true))).astype(np.float32)
        variance = true.astype(np.float32)  # the stated variance: gain 1
        path = tmp_path / f"gain{gain:g}.nxs"
        write_volume(path, Volume(grid, signal, weight, "transform", "t", sample(),
                                  variance=variance), {})
        with caplog.at_level(logging.INFO):
            write_statistics(path, crystal, 0.0, tmp_path / f"gain{gain:g}.png", "t", "",
                             logging.getLogger("t"))
        stats = read_volume(path).notes["statistics"]
        want = statistics_of_arrays(grid, crystal, signal, weight, variance)
        assert stats["flag"] is want.flag is flagged
        assert (tmp_path / f"gain{gain:g}.png").stat().st_size > 10_000
    assert "WARNING" in caplog.text and "chi" in caplog.text
    write_statistics(path, crystal, 2 * math.pi * 0.05, tmp_path / "holes.png", "t", "",
                     logging.getLogger("t"))
    stats = read_volume(path).notes["statistics"]
    assert stats["bragg_exclusion_inverse_angstrom"] == pytest.approx(0.05)
    assert stats["overall"]["excluded"] > 0


def test_the_rows_set_aside_at_its_temperature_go_into_the_merged_volumes_notes(experiment):
    """hklflow run's rows set aside at the volume's temperature (its settings' set_aside):
    the volume made without them says so (issue 86)."""
    import json

    entries = write_inputs(experiment, small_grid(), 2, sample_=sample(name="tetra"))
    line = "set aside: config/scans.tsv row 3 (tetra/300K/f3): no file matches 'raw/f3.h5' yet"
    settings = json.loads(step_settings(experiment, "merge_entries", "transform"))
    rc = run("merge_entries", ["--settings", json.dumps({**settings, "set_aside": [line]}),
                               "--title", "tetra/300K", "--inputs", *entries,
                               "--out", "out/merged.nxs", "--png", "out/merged.png"])
    assert rc == 0
    assert read_volume_header(experiment / "out/merged.nxs").notes["set_aside"] == [line]


def test_scans_the_watcher_waits_for_make_the_merged_volume_a_preview(experiment):
    """hklflow watch's scans planned at the volume's temperature but not yet included (its
    settings' waiting): the volume's notes and its picture's title say it is a preview
    (issue 86)."""
    import json

    from hklflow.pictures.preview import preview_label

    entries = write_inputs(experiment, small_grid(), 1, sample_=sample(name="tetra"))
    waiting = [{"scan": "tetra/300K/f2", "frames": 0, "planned": 60}]
    settings = json.loads(step_settings(experiment, "merge_entries", "transform"))
    assert "waiting" not in settings  # (a batch run's settings: as before)
    rc = run("merge_entries", ["--settings", json.dumps({**settings, "waiting": waiting}),
                               "--title", "tetra/300K", "--inputs", *entries,
                               "--out", "out/merged.nxs", "--png", "out/merged.png"])
    assert rc == 0
    notes = read_volume_header(experiment / "out/merged.nxs").notes
    assert notes["waiting"] == {"landed": waiting}
    assert preview_label(notes) == "PREVIEW: f2 0% of its frames"
    # a preview's merge leaves the scales out (issue 82): its notes and the page say so
    from hklflow.steps.experiment_page import corrections_lines

    rc = run("merge_entries", ["--settings", json.dumps({**settings, "waiting": waiting}),
                               "--title", "tetra/300K", "--inputs", *entries,
                               "--unscaled-preview", "--out", "out/unscaled.nxs",
                               "--png", "out/unscaled.png"])
    assert rc == 0
    notes = read_volume_header(experiment / "out/unscaled.nxs").notes
    assert notes["scaling"].startswith("left out of previews (hklflow watch)")
    assert any(line.startswith("scaling: left out of previews") for line in corrections_lines(notes))
    # ... and the statistics of equivalents, which only the final results have: a picture
    # says so where theirs would be (no orientation needed: no crystal)
    rc = run("merge_entries", ["--settings", json.dumps({**settings, "waiting": waiting}),
                               "--title", "tetra/300K", "--inputs", *entries, "--preview",
                               "--out", "out/preview.nxs", "--png", "out/preview.png",
                               "--statistics-png", "out/preview_statistics.png"])
    assert rc == 0
    notes = read_volume_header(experiment / "out/preview.nxs").notes
    assert notes["statistics"].startswith("left out of previews (hklflow watch)")
    assert (experiment / "out/preview_statistics.png").read_bytes()[:4] == b"\x89PNG"


def test_scales_that_are_not_finite_are_refused_where_they_would_apply(tmp_path):
    """A fit gone wrong (NaN scales: too few equivalents) is never applied: with --apply
    true the merge stops naming the file; with auto its verdict keeps them out."""
    import logging
    import types

    from hklflow.base.errors import InputMismatchError
    from hklflow.files.scales import write_scales
    from hklflow.model.scales import EntryScale, ScaleModel
    from hklflow.steps.merge_entries import scalers_of

    model = ScaleModel({"f1": EntryScale("f1", np.array([0.0, 10.0]), np.array([1.0, np.nan]))})
    away = {k: {"chi2_nu": None, "cc_half": None} for k in ("before", "after")}
    path = tmp_path / "scales.json"
    write_scales(path, model, terms={}, entries={}, left_out={},
                 statistics={"away_from_nodes": away},
                 verdict={"matter": False, "why": "too few equivalents to judge them"},
                 provenance={})
    args = types.SimpleNamespace(scales=path, scans=["s.nxs"], masks=["m.nxs"],
                                 inputs=["v.nxs"], apply="true")
    log = logging.getLogger("test")
    with pytest.raises(InputMismatchError, match="its scales are not finite numbers"):
        scalers_of(args, ["v.nxs"], object(), log)
    args.apply = "auto"
    scalers, notes = scalers_of(args, ["v.nxs"], object(), log)
    assert scalers is None and notes["applied"] is False
