"""Step model_inputs: the files of the modelling programs of a volume file, named as the
rule's outputs are (hklflow.files.model_inputs), with the settings the Snakefile passes."""
from __future__ import annotations

import json

import numpy as np

from hklflow.files import model_inputs
from hklflow.files.volume import Volume, write_volume
from hklflow.model.grid import Axis, Grid


def _volume(variance=True):
    grid = Grid(Axis(-1.0, 0.5, 5), Axis(-1.0, 0.5, 5), Axis(-1.0, 0.5, 5))
    rng = np.random.default_rng(1)
    weight = rng.uniform(0.5, 2.0, grid.shape).astype(np.float32)
    counts = rng.poisson(10.0, grid.shape).astype(np.float32)
    sample = {"name": "x", "space_group": "P 6/m m m",
              "unit_cell": np.array((4.5, 4.5, 7.0, 90.0, 90.0, 120.0))}
    return Volume(grid, counts, weight, "transform", "x/300K", sample, {},
                  counts.copy() if variance else None)


def test_model_inputs_command_writes_the_files_the_workflow_expects(tmp_path, monkeypatch):
    """Rule model_inputs's command: the files of both programs, named as the rule's outputs
    (common.smk's model_input_outputs: each program module's FILES), from a volume file; a
    volume without variance is refused naming the setting."""
    from hklflow.steps.model_inputs import main

    monkeypatch.chdir(tmp_path)
    write_volume(tmp_path / "transform.nxs", _volume(), {})
    programs = ["yell", "rmc_discord"]
    settings = json.dumps({"programs": programs})
    assert main(["--settings", settings, "--volume", "transform.nxs", "--out-dir", "out",
                 "--stem", "transform"]) == 0
    expected = {f"out/{name}" for program in programs
                for name in model_inputs.file_names(program, "transform")}
    written = {str(p.relative_to(tmp_path)) for p in (tmp_path / "out").rglob("*") if p.is_file()}
    assert expected == written, (expected, written)
    write_volume(tmp_path / "plain.nxs", _volume(variance=False), {})
    assert main(["--settings", settings, "--volume", "plain.nxs", "--out-dir", "out2",
                 "--stem", "plain"]) != 0
