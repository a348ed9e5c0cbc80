"""The fixture of the step tests that run a step on small volumes: a minimal experiment
(tests/volume_helpers.make_experiment), the current directory while the test runs."""
from __future__ import annotations

import pytest

from volume_helpers import make_experiment


@pytest.fixture
def experiment(tmp_path, monkeypatch):
    """A minimal experiment directory (config + scans table) in tmp_path, the current
    directory."""
    monkeypatch.chdir(tmp_path)
    return make_experiment(tmp_path)
