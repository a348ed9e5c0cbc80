"""Step temperature_series and the slice pictures of volumes (hklflow.pictures.volumes,
hklflow.pictures.slices)."""
from __future__ import annotations

import logging

import numpy as np
import pytest

from hklflow.files.volume import write_volume
from hklflow.model.crystal import UnitCell
from hklflow.pictures.slices import plane_matrix, read_slice
from hklflow.pictures.volumes import plot_slices

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


@pytest.mark.parametrize("note_at", [0.5, 0.98])
def test_pictures_cropped_from_one_draw_match_savefigs_tight_box(tmp_path, note_at):
    """save_tight cuts the image drawn once to the box savefig(bbox_inches="tight") draws
    again into: the same size to a pixel on each side (rounded out), the content in the
    same place; a note drawn beyond the figure's right edge (0.98) makes it savefig's own
    picture, canvas grown."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    from hklflow.pictures.figure import save_tight

    fig = plt.figure(figsize=(6, 4))
    ax = fig.add_subplot(1, 1, 1)
    ax.imshow(np.arange(400.0).reshape(20, 20))
    ax.set_title("a title")
    fig.suptitle("a suptitle")
    fig.text(note_at, 0.02, "a note near the bottom", ha="left")
    fig.savefig(tmp_path / "two_draws.png", dpi=100, bbox_inches="tight")
    save_tight(fig, tmp_path / "one_draw.png", 100)
    plt.close(fig)
    want = np.asarray(Image.open(tmp_path / "two_draws.png").convert("RGB")).astype(int)
    got = np.asarray(Image.open(tmp_path / "one_draw.png").convert("RGB")).astype(int)
    if note_at > 0.9:
        assert want.shape[1] > 600 and np.array_equal(got, want)  # grown beyond 6 in
        return
    assert 0 <= got.shape[0] - want.shape[0] <= 2 and 0 <= got.shape[1] - want.shape[1] <= 2

    def content(a):  # the box of what is not white
        rows, cols = np.nonzero((a < 250).any(-1))
        return rows.max() - rows.min(), cols.max() - cols.min()
    assert np.abs(np.subtract(content(got), content(want))).max() <= 1
