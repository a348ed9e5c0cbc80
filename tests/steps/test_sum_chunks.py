"""Step sum_chunks: the volume of a scan entry, the sum of its frame chunks, by the step
command with the settings the Snakefile passes: every kind of an entry in one job, one
complete chunk moved not rewritten, parts without intensity summed, a preview's title;
inputs that do not fit, or cannot be read, refused with nothing left.  The sum itself
(hklflow.algorithms.merge.volumes.sum_volumes): tests/algorithms/merge/test_volumes.py; a
part adopted by a rename (files.volume.adopt_volume): tests/files/test_volume.py."""
from __future__ import annotations

import numpy as np
import pytest

from hklflow.files.volume import read_volume, read_volume_header, write_volume

from conftest import step_settings
from volume_helpers import complete_part, random_volume, run, sample, small_grid, write_inputs


def sum_settings(experiment):
    return step_settings(experiment, "sum_chunks", "tetra")


def test_sum_chunks_command(experiment):
    grid = small_grid()
    paths = write_inputs(experiment, grid, 3, sample_=sample())
    rc = run("sum_chunks", ["--settings", sum_settings(experiment), "--title",
                            "tetra/300K/f1", "--inputs", *paths, "--out", "out/f1.nxs",
                            "--png", "out/f1.png"])
    assert rc == 0
    assert (experiment / "out/f1.png").stat().st_size > 10_000
    v = read_volume(experiment / "out/f1.nxs")
    assert v.title == "tetra/300K/f1"
    np.testing.assert_allclose(v.weight, sum(read_volume(p).weight.astype(float) for p in paths),
                               rtol=1e-6)


def test_every_kind_of_an_entry_in_one_command(experiment, capsys):
    """The transform makes both kinds in one job; one sum_chunks job sums each kind's chunks
    into its own file (inputs kind by kind, as many per output)."""
    grid = small_grid()
    kinds = ("transform", "masked_transform")
    parts = {}
    for j, kind in enumerate(kinds):
        parts[kind] = []
        for i in range(2):
            p = experiment / f"{kind}_parts" / f"{i}.nxs"
            p.parent.mkdir(exist_ok=True)
            write_volume(p, random_volume(grid, 20 + 10 * j + i, kind=kind), {"program": "test"})
            parts[kind].append(p)
    settings = step_settings(experiment, "sum_chunks", "tetra")
    rc = run("sum_chunks", ["--settings", settings, "--title", "tetra/300K/f1",
                            "--inputs", *parts["transform"], *parts["masked_transform"],
                            "--out", "out/transform.nxs", "out/masked_transform.nxs",
                            "--png", "out/transform.png", "out/masked_transform.png"])
    assert rc == 0
    for kind in kinds:
        v = read_volume(experiment / "out" / f"{kind}.nxs")
        assert v.kind == kind
        np.testing.assert_allclose(v.weight, sum(read_volume(p).weight.astype(float)
                                                 for p in parts[kind]), rtol=1e-6)
        assert (experiment / "out" / f"{kind}.png").stat().st_size > 10_000
    # inputs that cannot be shared out evenly are refused before anything is written
    capsys.readouterr()
    rc = run("sum_chunks", ["--settings", settings, "--title", "x",
                            "--inputs", *parts["transform"], parts["masked_transform"][0],
                            "--out", "bad/transform.nxs", "bad/masked_transform.nxs",
                            "--png", "bad/transform.png", "bad/masked_transform.png"])
    assert rc == 1
    assert "3 inputs, 2 outputs" in capsys.readouterr().err
    assert not (experiment / "bad").exists() or not any((experiment / "bad").iterdir())


def test_sum_refuses_other_grid_kind_or_sample(experiment, capsys):
    grid = small_grid()
    good = write_inputs(experiment, grid, 2)
    other = small_grid(step=(0.25, 0.2, 0.5))
    write_volume(experiment / "odd.nxs", random_volume(other, 3), {})
    write_volume(experiment / "masked.nxs", random_volume(grid, 4, kind="masked_transform"), {})
    write_volume(experiment / "other.nxs", random_volume(grid, 5, sample_=sample(name="zz")), {})
    cases = {"odd.nxs": "grid differs", "masked.nxs": "masked_transform volume cannot be added",
             "other.nxs": "sample 'zz'"}
    for bad, why in cases.items():
        capsys.readouterr()
        rc = run("sum_chunks", ["--settings", sum_settings(experiment), "--title",
                                "x", "--inputs", good[0], bad, good[1], "--out", "out/x.nxs",
                                "--png", "out/x.png"])
        assert rc == 1
        msg = capsys.readouterr().err
        assert f"{bad}:" in msg and why in msg, msg
        assert not (experiment / "out/x.nxs").exists() and not (experiment / "out/x.png").exists()


def test_sum_corrupt_or_missing_input_leaves_nothing(experiment, capsys):
    grid = small_grid()
    good = write_inputs(experiment, grid, 2)
    raw = (experiment / "in0.nxs").read_bytes()
    (experiment / "truncated.nxs").write_bytes(raw[: len(raw) // 2])
    (experiment / "garbage.nxs").write_bytes(b"not hdf5" * 100)
    # a file whose header is fine but whose data chunks are damaged: fails mid-way
    damaged = bytearray(raw)
    mid = len(raw) // 2
    damaged[mid:mid + 4096] = b"\xff" * 4096
    (experiment / "damaged.nxs").write_bytes(bytes(damaged))
    for bad in ("missing.nxs", "truncated.nxs", "garbage.nxs", "damaged.nxs"):
        (experiment / "out").mkdir(exist_ok=True)
        (experiment / "out/y.png").write_text("stale")  # an old output must go too
        capsys.readouterr()
        rc = run("sum_chunks", ["--settings", sum_settings(experiment), "--title",
                                "x", "--inputs", good[0], bad, good[1], "--out", "out/y.nxs",
                                "--png", "out/y.png"])
        err = capsys.readouterr().err
        assert rc == 1, (bad, err)
        assert f"{bad}: cannot read" in err, err
        assert sorted(p.name for p in (experiment / "out").iterdir()) == [], bad


def test_one_complete_chunk_is_moved_not_rewritten(experiment):
    grid = small_grid()
    part, v = complete_part(experiment, grid)
    inode = part.stat().st_ino
    rc = run("sum_chunks", ["--settings", sum_settings(experiment), "--title",
                            "tetra/300K/f1", "--inputs", part, "--out", "out/f1.nxs",
                            "--png", "out/f1.png"])
    assert rc == 0
    out = experiment / "out/f1.nxs"
    assert not part.exists() and out.stat().st_ino == inode  # a rename
    got = read_volume(out)
    assert np.array_equal(got.signal, v.signal) and np.array_equal(got.weight, v.weight)
    assert got.title == "tetra/300K/f1" and got.notes["adopted"] is True
    assert got.notes["inputs"][0]["notes"]["scan"] == "f1"
    assert got.notes["weight_sum"] == pytest.approx(float(v.weight.sum(dtype=np.float64)))
    assert got.notes["measured_fraction"] == pytest.approx(np.mean(v.weight > 0))
    assert (experiment / "out/f1.png").stat().st_size > 10_000


def test_parts_without_intensity_are_summed(experiment):
    """Parts of a multi-chunk entry carry no intensity array (only sums read them); one
    such part is summed into a complete volume, not moved."""
    grid = small_grid()
    part, v = complete_part(experiment, grid, intensity=False)
    rc = run("sum_chunks", ["--settings", sum_settings(experiment), "--title",
                            "tetra/300K/f1", "--inputs", part, "--out", "out/f1.nxs",
                            "--png", "out/f1.png"])
    assert rc == 0 and part.exists()
    got = read_volume(experiment / "out/f1.nxs")
    assert np.array_equal(got.weight, v.weight) and "adopted" not in got.notes
    np.testing.assert_array_equal(got.intensity()[v.weight > 0],
                                  (v.signal / np.where(v.weight > 0, v.weight, 1))[v.weight > 0])


def test_a_preview_says_how_much_of_its_scan_it_holds(experiment, titles):
    """Parts of a scan in progress (their notes as transform_frames writes them): the sum's
    notes keep their record and its picture's title says what fraction it holds; parts of
    a complete scan add nothing to either."""
    import json

    grid = small_grid()
    landed = {"scan": "tetra/300K/f1", "frames": 30, "planned": 90}
    for name, extra in (("preview", {"landed": landed}), ("complete", {})):
        paths = []
        for i in range(2):
            v = random_volume(grid, 40 + i, sample_=sample())
            v.notes = {"scan": "tetra/300K/f1", **extra}
            paths.append(experiment / f"{name}{i}.nxs")
            write_volume(paths[-1], v, {"program": "test"})
        rc = run("sum_chunks", ["--settings", step_settings(experiment, "sum_chunks", "tetra"),
                                "--title", "tetra/300K/f1", "--inputs", *paths,
                                "--out", f"out/{name}.nxs", "--png", f"out/{name}.png"])
        assert rc == 0
    preview, complete = (read_volume_header(experiment / f"out/{n}.nxs").notes
                         for n in ("preview", "complete"))
    assert [i["notes"]["landed"] for i in preview["inputs"]] == [landed, landed]
    assert titles == ["tetra/300K/f1 (2 volumes summed)\nPREVIEW: f1 33% of its frames",
                      "tetra/300K/f1 (2 volumes summed)"]
    assert "landed" not in json.dumps(complete) and "PREVIEW" not in titles[1]


def test_a_previews_entry_pictures_say_they_come_with_the_final_results(experiment, titles):
    """hklflow watch's previews (--preview): the entry's volumes are summed as ever, its
    pictures name the merged volume's as the preview's (drawing an entry's slices at every
    preview is left to the final results)."""
    grid = small_grid()
    paths = []
    for i in range(2):
        v = random_volume(grid, 50 + i, sample_=sample())
        v.notes = {"scan": "tetra/300K/f1", "landed": {"scan": "tetra/300K/f1", "frames": 30,
                                                       "planned": 90}}
        paths.append(experiment / f"block{i}.nxs")
        write_volume(paths[-1], v, {"program": "test"})
    rc = run("sum_chunks", ["--settings", step_settings(experiment, "sum_chunks", "tetra"),
                            "--title", "tetra/300K/f1", "--inputs", *paths, "--keep-inputs",
                            "--preview", "--out", "out/transform.nxs",
                            "--png", "out/transform.png"])
    assert rc == 0 and all(p.exists() for p in paths)
    summed = read_volume(experiment / "out/transform.nxs")
    parts = [read_volume(p) for p in paths]
    np.testing.assert_allclose(summed.weight, parts[0].weight + parts[1].weight, rtol=1e-6)
    assert titles == ["tetra/300K/f1 (2 volumes summed)\nPREVIEW: f1 33% of its frames"]
    assert (experiment / "out/transform.png").read_bytes()[:4] == b"\x89PNG"
