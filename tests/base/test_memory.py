"""A step whose arrays would not fit refuses with the figures before it allocates
(hklflow.base.memory, issue 71: no input may reach the OOM killer)."""
from __future__ import annotations

import resource
import subprocess
import sys
from pathlib import Path

import pytest

from hklflow.base import memory
from hklflow.files.volume import write_volume

from conftest import REPO, step_settings
from experiment_helpers import edit_config
from volume_helpers import make_experiment, random_volume, small_grid

LIMIT = 3 * 10**9


def test_the_room_is_bound_by_the_process_limit():
    """RLIMIT_AS (as `ulimit -v` or a batch system sets it) bounds the room, named."""
    code = ("import resource; from hklflow.base import memory; "
            f"resource.setrlimit(resource.RLIMIT_AS, ({LIMIT}, {LIMIT})); "
            "room, bound = memory.memory_room(); print(room, '|', bound)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    room, bound = out.split("|")
    assert 0 < int(room) < LIMIT and bound.strip() == "the process limit RLIMIT_AS, 3 GB"
    room, bound = memory.memory_room()  # without a limit: at most the machine's memory
    assert 0 < room <= int(open("/proc/meminfo").read().split()[1]) * 1024


def test_a_need_beyond_the_room_is_refused_with_the_figures(monkeypatch):
    monkeypatch.setattr(memory, "memory_room",
                        lambda: (2 * 10**9, "the cgroup's memory limit, 4 GB"))
    memory.check_room(1.9e9, "the grid")
    with pytest.raises(memory.MemoryNeedError, match=(
            r"^the grid needs about 2.1 GB, more than this job may still use: 2 GB \(the "
            r"cgroup's memory limit, 4 GB\): give the job more memory or coarser steps$")):
        memory.check_room(2.1e9, "the grid", "coarser steps")
    # what the steps ask: the transform's grid padded to bricks of 8^3, every kind's arrays
    assert memory.padded_voxels((9, 8, 1)) == 16 * 8 * 8
    assert memory.transform_grid_bytes((8, 8, 8), 2, True, True) == 512 * (2 * 4.5 * 3 + 2.0)
    assert memory.pdf_bytes(1000, delta=True, sigma=True) == 1000 * (16 + 20)


@pytest.mark.parametrize("step", ["total_pdf", "delta_pdf"])
def test_a_pdf_step_that_would_not_fit_stops_before_it_allocates(tmp_path, monkeypatch, capsys,
                                                                 step):
    import importlib

    monkeypatch.chdir(tmp_path)
    exp = make_experiment(tmp_path)
    grid = small_grid()
    write_volume(tmp_path / "in.nxs", random_volume(grid, 1), {})
    monkeypatch.setattr(memory, "memory_room", lambda: (1000, "the process limit RLIMIT_AS, 1 GB"))
    module = importlib.import_module(f"hklflow.steps.{step}")
    rc = module.main(["--settings", step_settings(exp, step, "tetra"), "--input", "in.nxs",
                      "--out", "out.nxs", "--png", "out.png"])
    err = capsys.readouterr().err
    assert rc == 1 and not (tmp_path / "out.nxs").exists()
    assert f"of {grid.size:,} voxels needs about" in err
    assert "more than this job may still use: 1e-06 GB (the process limit RLIMIT_AS, 1 GB)" in err
    assert "reduction.pdf.errors: false" in err and "bug" not in err


@pytest.mark.slow
def test_a_huge_punch_radius_is_refused_under_a_memory_limit(tiny_copy):
    """The radius-50 case of issue 71 (an 18.1 GiB array, three times the machine's OOM
    killer): `snakemake -n` under a 4 GB address-space limit refuses it in seconds."""
    edit_config(tiny_copy, lambda c: c.setdefault("reduction", {}).setdefault("pdf", {})
                .__setitem__("radius", 50))

    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (4 * 10**9, 4 * 10**9))

    p = subprocess.run([sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"),
                        "--directory", str(tiny_copy), "-n", "--cores", "1"],
                       capture_output=True, text=True, timeout=300, preexec_fn=limit)
    out = p.stdout + p.stderr
    assert p.returncode == 1, out[-3000:]
    assert "field 'reduction.pdf.radius'" in out and "MemoryError" not in out


def test_a_transform_whose_grid_would_not_fit_stops_before_it_reads_a_frame(tiny_300k, tmp_path,
                                                                          monkeypatch, capsys):
    from hklflow.files.grid import write_grid_file
    from hklflow.model.grid import Axis, Grid
    from hklflow.steps import mask_scan, transform_frames

    monkeypatch.chdir(tiny_300k)
    d = tiny_300k / "results/tiny/300K"
    inputs = ["--scan", str(d / "f2/scan.nxs"), "--orientation", str(d / "orientation.nxs")]
    write_grid_file(tmp_path / "grid.json", Grid(*(Axis(-4.0, 0.5, 17) for _ in range(3))), {})
    assert mask_scan.main(["--settings", step_settings(tiny_300k, "mask_scan"), *inputs,
                           "--peaks", str(d / "f2/peaks.nxs"), "--out", str(tmp_path / "m.nxs"),
                           "--png", str(tmp_path / "m.png")]) == 0
    monkeypatch.setattr(memory, "memory_room", lambda: (10**5, "the machine's available memory"))
    out = [str(tmp_path / f"{kind}.nxs") for kind in ("transform", "masked")]
    capsys.readouterr()
    rc = transform_frames.main(["--settings", step_settings(tiny_300k, "transform_frames", "tiny"),
                                *inputs, "--grid", str(tmp_path / "grid.json"), "--mask",
                                str(tmp_path / "m.nxs"), "--frames", "0-4", "--out", *out])
    err = capsys.readouterr().err
    assert rc == 1 and not any(map(Path.exists, map(Path, out)))
    # 17^3 voxels padded to 24^3; two kinds of three arrays (2 x 4.5 x 3) and the half set (2)
    assert ("the grid of 4,913 voxels (2 kind(s)) needs about 0.000401 GB, more than this job "
            "may still use: 0.0001 GB (the machine's available memory): give the job more "
            "memory or coarser reduction.transform.grid steps") in err


def test_steps_that_hold_a_volume_whole_stop_before_they_read_it(tmp_path, monkeypatch, capsys):
    """symmetrize by a cubic group (its input held whole) and model_inputs."""
    import json

    from hklflow.steps import model_inputs, symmetrize

    from volume_helpers import sample

    monkeypatch.chdir(tmp_path)
    exp = make_experiment(tmp_path)
    grid = small_grid(n=(13, 13, 13), step=(0.25, 0.25, 0.25))
    cubic = sample("P m -3 m", (4.0, 4.0, 4.0, 90.0, 90.0, 90.0), "cube")
    vol = random_volume(grid, 2, sample_=cubic)
    vol.variance = vol.signal.copy()
    write_volume(tmp_path / "in.nxs", vol, {})
    settings = json.loads(step_settings(exp, "symmetrize", "tetra"))
    settings["sample"].update(space_group="P m -3 m", cell=[4.0, 4.0, 4.0, 90.0, 90.0, 90.0])
    monkeypatch.setattr(memory, "memory_room", lambda: (1000, "the machine's available memory"))
    assert symmetrize.main(["--settings", json.dumps(settings), "--input", "in.nxs", "--out",
                            "sym.nxs", "--png", "sym.png"]) == 1
    assert not (tmp_path / "sym.nxs").exists()
    assert (f"symmetrising {grid.size:,} voxels by m-3m (the volume held whole) needs about "
            in capsys.readouterr().err)
    assert model_inputs.main(["--settings", step_settings(exp, "model_inputs"), "--volume",
                              "in.nxs", "--out-dir", "models", "--stem", "in"]) == 1
    err = capsys.readouterr().err
    assert f"the model inputs of {grid.size:,} voxels (the volume read whole) needs about " in err
    assert not (tmp_path / "models").exists() or not any((tmp_path / "models").iterdir())
