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
