"""Step temperature_series and the slice pictures of volumes (hklflow.pictures,
hklflow.slices)."""
from __future__ import annotations

import logging

import numpy as np
import pytest

from hklflow.crystal import UnitCell
from hklflow.files.volume import write_volume
from hklflow.pictures import plot_slices
from hklflow.slices import plane_matrix, read_slice

from conftest import step_settings
from volume_helpers import HEX, make_experiment, random_volume, run, sample, small_grid


@pytest.fixture
def experiment(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return make_experiment(tmp_path)


def test_plot_slices(tmp_path, caplog):
    grid = small_grid(n=(25, 25, 9))
    vol = random_volume(grid, 2, sample_=sample("P 6/m m m", HEX))
    write_volume(tmp_path / "v.nxs", vol, {})
    log = logging.getLogger("test")
    with caplog.at_level(logging.WARNING):
        drawn = plot_slices(tmp_path / "v.nxs", [{"l": 0}, {"k": 0.5}, {"h": -1}, {"l": 5}],
                            tmp_path / "v.png", "test", log=log)
    assert drawn == ["l = 0", "k = 0.5", "h = -1"]
    assert "l = 5.0 is outside the grid" in caplog.text
    assert (tmp_path / "v.png").stat().st_size > 10_000
    # the plane read from the file is the volume's plane
    sl = read_slice(tmp_path / "v.nxs", {"k": 0.5})
    np.testing.assert_allclose(sl.data, vol.intensity()[:, grid.slice_index("k", 0.5), :],
                               rtol=1e-6, equal_nan=True)
    assert (sl.u, sl.v) == ("h", "l")
    # hexagonal HK0 drawn with the 60 deg between a* and b*, to scale
    M = plane_matrix(UnitCell(*HEX), "h", "k")
    assert np.degrees(np.arctan2(M[1, 1], M[0, 1])) == pytest.approx(60.0)
    assert np.hypot(*M[:, 1]) == pytest.approx(M[0, 0]) == pytest.approx(1 / (4.5 * np.sin(np.pi / 3)))
    # an in-memory volume works too
    assert plot_slices(vol, [{"h": 0}], tmp_path / "m.png", "mem") == ["h = 0"]


def test_temperature_series(experiment, capsys):
    grid = small_grid(n=(25, 25, 9))
    paths = []
    for i, t in enumerate(("100K", "200K", "300K")):  # the settings' order: by temperature
        p = experiment / f"results/hexa/{t}/transform.nxs"
        write_volume(p, random_volume(grid, 30 + i, title=f"hexa/{t}",
                                      sample_=sample("P 6/m m m", HEX, "hexa")), {})
        paths.append(p)
    settings = step_settings(experiment, "temperature_series", "hexa")
    rc = run("temperature_series", ["--settings", settings, "--inputs", *paths,
                                    "--png", "out/series.png"])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert "3 temperatures (100K, 200K, 300K)" in err
    assert (experiment / "out/series.png").stat().st_size > 10_000
    # the labels come from the settings, one per input: a count that differs is refused
    rc = run("temperature_series", ["--settings", settings, "--inputs", *paths[:2],
                                    "--png", "out/s1.png"])
    assert rc == 1 and "3 labels for 2 input volumes" in capsys.readouterr().err
    # a corrupt input: exit 1, no picture
    (experiment / "bad.nxs").write_bytes(b"\0" * 1000)
    rc = run("temperature_series", ["--settings", settings, "--inputs", paths[0], "bad.nxs",
                                    paths[2], "--png", "out/s2.png"])
    assert rc == 1 and not (experiment / "out/s2.png").exists()
