"""Step transform_background: the factor that puts a background scan in its entry's units
(the ratio of the monitors' references, else of the frame times; one with a monitor and
one without refused); the whole step runs end to end in
tests/workflow/test_beamline_corrections.py."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from hklflow.base.errors import ConfigError
from hklflow.settings.params import TransformParams
from hklflow.steps import transform_background as step


def rec(name, monitor=None):
    return SimpleNamespace(scan_id=name, monitor=None if monitor is None else np.asarray(monitor))


def test_monitors_put_the_background_in_the_entrys_units():
    params = TransformParams.defaults()
    entry = rec("s/300K/f1", [100.0, 200.0, 300.0])  # median 200
    bg = rec("s/300K/empty", [40.0, 50.0, 60.0])  # median 50
    factor, how = step.background_scale(entry, bg, params)
    assert factor == pytest.approx(4.0) and how["by"] == "monitor"
    # one reference for both: nothing to put right
    fixed = TransformParams.defaults(monitor_reference=1000.0)
    assert step.background_scale(entry, bg, fixed)[0] == pytest.approx(1.0)


def test_frame_times_without_monitors(monkeypatch):
    times = {"s/300K/f1": 0.1, "s/300K/empty": 1.0}
    monkeypatch.setattr(step, "frame_time", lambda r: (times[r.scan_id], "header"))
    factor, how = step.background_scale(rec("s/300K/f1"), rec("s/300K/empty"),
                                        TransformParams.defaults())
    assert factor == pytest.approx(0.1) and how["by"] == "frame time"


def test_a_monitor_on_one_row_only_is_refused():
    with pytest.raises(ConfigError, match="s/300K/empty has none"):
        step.background_scale(rec("s/300K/f1", [1.0]), rec("s/300K/empty"),
                              TransformParams.defaults())
