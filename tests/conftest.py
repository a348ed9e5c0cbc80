"""Shared fixtures: one tiny simulated experiment per test session (seconds to make)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def tiny_experiment(tmp_path_factory) -> Path:
    """A simulated 'tiny' experiment directory (read-only for tests: copy before changing)."""
    from hklflow.simulation.experiment import preset, simulate_experiment

    out = tmp_path_factory.mktemp("tiny_experiment")
    simulate_experiment(preset("tiny"), out)
    return out


@pytest.fixture(scope="session")
def tiny_truth(tiny_experiment) -> dict:
    return json.loads((tiny_experiment / "truth.json").read_text())


@pytest.fixture
def tiny_copy(tiny_experiment, tmp_path) -> Path:
    """A private copy of the tiny experiment that a test may modify."""
    dst = tmp_path / "experiment"
    shutil.copytree(tiny_experiment, dst)
    return dst


def run_snakemake(workdir: Path, *args, timeout=900):
    """snakemake on an experiment directory with the repository's Snakefile."""
    import os
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"),
           "--directory", str(workdir), *args]
    env = dict(os.environ, HDF5_USE_FILE_LOCKING="FALSE")
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)


@pytest.fixture(scope="session")
def tiny_run(tiny_experiment, tmp_path_factory):
    """The tiny experiment reduced end to end by Snakemake once per session (every rule):
    (experiment directory, completed process, raw-file hashes before, after)."""
    import hashlib

    dst = tmp_path_factory.mktemp("tiny_run") / "experiment"
    shutil.copytree(tiny_experiment, dst)
    raw = sorted(p for p in (dst / "raw").rglob("*") if p.is_file())

    def hashes():
        return {p: (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns) for p in raw}

    before = hashes()
    r = run_snakemake(dst, "--cores", "2")
    return dst, r, before, hashes()
