"""Step temperature_series: one slice of the merged volume of every temperature of a
sample on one picture, by the step command with the settings the Snakefile passes; inputs
that do not pair up with the temperatures, or cannot be read, refused.  The slice pictures
themselves (hklflow.pictures.volumes, hklflow.pictures.slices):
tests/pictures/test_pictures.py."""
from __future__ import annotations

from hklflow.files.volume import write_volume

from conftest import step_settings
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
