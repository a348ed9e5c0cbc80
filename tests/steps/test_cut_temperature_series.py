"""Step cut_temperature_series: a line cut at several temperatures in one picture; cuts of
another line, a plane, or labels that do not match refused with nothing left."""
from __future__ import annotations

import numpy as np

from hklflow.algorithms.cuts import plan_cut, sample_cut
from hklflow.files.cut import write_cut
from hklflow.model.crystal import UnitCell
from hklflow.model.grid import Axis, Grid

from volume_helpers import run

GRID = Grid(Axis(-2, 0.1, 41), Axis(-2, 0.1, 41), Axis(-1, 0.5, 5))
CELL = UnitCell(3.8, 3.8, 13.4)


def cut_file(path, amplitude, directions=((1, 1, 0),), origin=(0, 0, 0)):
    L, K, H = np.meshgrid(GRID.l.values, GRID.k.values, GRID.h.values, indexing="ij")
    inten = 1 + amplitude * np.exp(-((H - 1) ** 2 + (K - 1) ** 2) / 0.02)
    weight = np.where(H < -1.5, 0.0, 2.0)
    plan = plan_cut(GRID, CELL, origin, directions)
    cut = sample_cut(GRID, plan, inten * weight, weight, inten * weight)
    write_cut(path, cut, title="t", cell=CELL, volume=path.with_suffix(".in"), provenance={})
    return path


def test_series_of_a_line(tmp_path, capsys):
    files = [cut_file(tmp_path / f"{t}.nxs", a) for t, a in (("100K", 5), ("200K", 20),
                                                           ("300K", 50))]
    png = tmp_path / "series.png"
    rc = run("cut_temperature_series", ["--cuts", *files, "--labels", "100K", "200K", "300K",
                                        "--title", "tiny: cut rod", "--png", png])
    assert rc == 0, capsys.readouterr().err
    assert png.stat().st_size > 10_000

    other = cut_file(tmp_path / "other.nxs", 5, origin=(0, 0, 1))
    plane = cut_file(tmp_path / "plane.nxs", 5, directions=((1, 0, 0), (0, 1, 0)))
    for cuts, labels, words in (([files[0], other], ["100K", "300K"], "not the line of"),
                                ([files[0], plane], ["100K", "300K"], "a plane"),
                                (files, ["100K"], "3 cut files but 1 labels")):
        bad = tmp_path / "bad.png"
        rc = run("cut_temperature_series", ["--cuts", *cuts, "--labels", *labels, "--title",
                                            "x", "--png", bad])
        assert rc == 1 and words in capsys.readouterr().err
        assert not bad.exists()
