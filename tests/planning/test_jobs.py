"""hklflow.planning.jobs: the settings each job receives (JobSettings), as the Snakefile
passes them: each rule only the settings it uses, so that a changed setting reruns only the
jobs that use it."""
from __future__ import annotations

import json

from conftest import step_settings
from volume_helpers import make_experiment


def test_settings_carry_what_the_step_uses(tmp_path, monkeypatch):
    """delta_pdf receives every reduction.pdf setting it uses; total_pdf only the taper and
    the pictures (a changed hole radius must not rerun it)."""
    monkeypatch.chdir(tmp_path)
    exp = make_experiment(tmp_path)
    delta = json.loads(step_settings(exp, "delta_pdf", "tetra"))
    assert set(delta["pdf"]) == {"radius", "radius_units", "extra_positions", "fill_order",
                                 "fill_eps", "q_max", "subtract_mean", "errors", "slices"}
    total = json.loads(step_settings(exp, "total_pdf", "tetra"))
    assert set(total) == {"q_max", "subtract_mean", "errors", "slices", "sample"}
