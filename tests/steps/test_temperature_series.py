"""Step temperature_series: one slice of the merged volume of every temperature of a
sample on one picture, by the step command with the settings the Snakefile passes; inputs
that do not pair up with the temperatures, or cannot be read, refused.  The slice pictures
themselves (hklflow.pictures.volumes, hklflow.pictures.slices):
tests/pictures/test_pictures.py."""
from __future__ import annotations

from hklflow.files.volume import write_volume

from conftest import record_pictures, step_settings
from volume_helpers import HEX, random_volume, run, sample, small_grid


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


def test_a_volume_made_without_set_aside_rows_says_so_in_the_picture(experiment, capsys,
                                                                     monkeypatch):
    """A temperature's volume made without rows hklflow run set aside (its notes' set_aside,
    written by merge_entries): the series picture's title names them, the log each line."""
    from hklflow.files.volume import update_notes

    grid = small_grid(n=(25, 25, 9))
    paths = []
    for i, t in enumerate(("100K", "200K", "300K")):
        p = experiment / f"results/hexa/{t}/transform.nxs"
        write_volume(p, random_volume(grid, 30 + i, title=f"hexa/{t}",
                                      sample_=sample("P 6/m m m", HEX, "hexa")), {})
        paths.append(p)
    line = ("set aside: config/scans.tsv row 5 (hexa/300K/f2): its data raw/hexa/300K/f2.h5 "
            "does not exist (yet)")
    update_notes(paths[2], {"set_aside": [line]})
    titles = []
    record_pictures(monkeypatch, lambda fig: titles.append(fig._suptitle.get_text()))
    rc = run("temperature_series", ["--settings", step_settings(experiment, "temperature_series",
                                                                "hexa"),
                                    "--inputs", *paths, "--png", "out/series_aside.png"])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert titles and titles[-1].endswith("made without hexa/300K/f2 (set aside)"), titles
    assert f"made without the row {line}" in err
