"""Background rows of the scans table (issue 81): a row of role background is ingested for
the sample rows that name it and planned for nothing else; a name that is no background
row, or a background naming one, is refused with the row and field; the sample's shape is
checked when the config is read."""
from __future__ import annotations

import pytest

from hklflow.planning.config import ConfigError, load_experiment
from hklflow.simulation.experiment import config_texts, preset

from experiment_helpers import edit_config


@pytest.fixture
def experiment_dir(tmp_path):
    for name, text in config_texts(preset("tiny"), "hdf5").items():
        (tmp_path / "config").mkdir(exist_ok=True)
        (tmp_path / "config" / name).write_text(text)
    return tmp_path


def add_background(d, sample_row: int, name: str = "empty", named: str | None = None,
                   bg_background: str = ""):
    """A background row (a copy of row 1 as entry `name`) and row `sample_row` naming
    `named` (default the new row)."""
    p = d / "config" / "scans.tsv"
    lines = p.read_text().splitlines()
    header = lines[0].split("\t") + ["role", "background"]
    rows = [ln.split("\t") + ["sample", ""] for ln in lines[1:]]
    bg = list(rows[0])
    bg[header.index("entry")] = name
    bg[header.index("data")] = bg[header.index("data")].replace(".h5", "_empty.h5")
    bg[header.index("role")] = "background"
    bg[header.index("background")] = bg_background
    rows[sample_row - 1][header.index("background")] = named or name
    p.write_text("\n".join("\t".join(r) for r in [header] + rows + [bg]) + "\n")


def load(d):
    return load_experiment(d / "config" / "config.yaml", base_dir=d)


def test_a_background_row_is_planned_for_the_rows_that_name_it_only(experiment_dir):
    add_background(experiment_dir, 1)
    exp = load(experiment_dir)
    first = exp.scans[0]
    bg = exp.background_of(first)
    assert bg is not None and bg.entry == "empty" and bg.is_background
    assert all(not s.is_background for s in exp.scans)
    assert bg not in exp.scans_of(first.sample, first.temperature_label)
    assert exp.scan(bg.sample, bg.temperature_label, "empty") is bg  # (its ingest)
    assert exp.background_of(exp.scans[1]) is None
    # only a background row's settings say its role: a sample row's stay as they were
    assert "role" not in first.settings() and bg.settings()["role"] == "background"


def test_a_background_at_another_temperature(experiment_dir):
    exp = load(experiment_dir)
    other = [s for s in exp.scans if s.temperature_label != exp.scans[0].temperature_label][0]
    row = exp.scans.index(other) + 1
    add_background(experiment_dir, row, named=f"{exp.scans[0].temperature_label}/empty")
    exp = load(experiment_dir)
    assert exp.background_of(exp.scans[row - 1]).temperature_label == \
        exp.scans[0].temperature_label


@pytest.mark.parametrize("named, bg_background, words", [
    ("nothing", "", "'nothing' is not a background row of sample tiny"),
    (None, "f1", "on a background row: expected it empty"),
])
def test_a_bad_background_is_named(experiment_dir, named, bg_background, words):
    add_background(experiment_dir, 1, named=named, bg_background=bg_background)
    with pytest.raises(ConfigError, match=words):
        load(experiment_dir)


def test_a_bad_shape_is_named(experiment_dir):
    edit_config(experiment_dir, lambda c: c["samples"]["tiny"].update(
        shape={"kind": "plate", "thickness": 1e-4, "mu": 100.0}))
    with pytest.raises(ConfigError, match=r"samples\.tiny\.shape'.*normal"):
        load(experiment_dir)
    edit_config(experiment_dir, lambda c: c["samples"]["tiny"].update(
        shape={"kind": "cylinder", "diameter": 1e-4, "formula": "Xx2", "density": 2.0}))
    with pytest.raises(ConfigError, match="xraydb knows no material"):
        load(experiment_dir)
