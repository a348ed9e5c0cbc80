"""Step symmetrize: a merged volume symmetrised by its sample's Laue group by the step
command, with the settings the Snakefile passes (the title, notes and picture; the same
arrays as hklflow.algorithms.merge.symmetry gives), and refused on a grid the group does
not map onto itself or a missing input.  The symmetrisation itself (against cctbx and a
direct numpy gather): tests/algorithms/merge/test_symmetry.py; slab by slab from a file:
test_volumes.py."""
from __future__ import annotations

import numpy as np

from hklflow.algorithms.merge.symmetry import symmetrize_arrays
from hklflow.files.volume import read_volume, write_volume
from hklflow.model.crystal import Crystal, UnitCell

from conftest import step_settings
from volume_helpers import HEX, random_volume, run, sample, small_grid


def test_symmetrize_command(experiment, capsys):
    grid = small_grid(n=(25, 25, 9), step=(0.25, 0.25, 0.5))
    vol = random_volume(grid, 21, title="hexa/300K", sample_=sample("P 6/m m m", HEX, "hexa"))
    write_volume(experiment / "merged.nxs", vol, {})
    settings = step_settings(experiment, "symmetrize", "hexa")
    rc = run("symmetrize", ["--settings", settings, "--input", "merged.nxs", "--out",
                            "out/sym.nxs", "--png", "out/sym.png"])
    err = capsys.readouterr().err
    assert rc == 0, err
    out = read_volume(experiment / "out/sym.nxs")
    assert out.kind == vol.kind and out.title == "hexa/300K symmetrized (6/mmm)"
    assert out.notes["symmetrized"]["laue_group"] == "6/mmm"
    assert out.notes["symmetrized"]["operators"] == 24
    assert out.notes["input_title"] == "hexa/300K"
    assert out.sample["name"] == "hexa"
    assert "slice {'l': 99.0} left out" in err  # outside the grid: a warning, no failure
    assert (experiment / "out/sym.png").stat().st_size > 10_000
    crystal = Crystal("P 6/m m m", UnitCell(*HEX))
    s, w = symmetrize_arrays(vol.signal, vol.weight, grid, crystal.laue_operators)
    np.testing.assert_array_equal(out.signal, s)
    np.testing.assert_array_equal(out.weight, w)

    # an incompatible grid: exit 1, the config keys named, nothing left
    bad = small_grid(n=(25, 21, 9), step=(0.25, 0.3, 0.5))
    write_volume(experiment / "bad.nxs", random_volume(bad, 1), {})
    rc = run("symmetrize", ["--settings", settings, "--input", "bad.nxs", "--out", "out/bad.nxs",
                            "--png", "out/bad.png"])
    assert rc == 1 and "reduction.transform.grid.h and reduction.transform.grid.k" in capsys.readouterr().err
    assert not (experiment / "out/bad.nxs").exists() and not (experiment / "out/bad.png").exists()
    # a missing input
    rc = run("symmetrize", ["--settings", settings, "--input", "nothing.nxs", "--out", "out/n.nxs",
                            "--png", "out/n.png"])
    assert rc == 1 and not (experiment / "out/n.nxs").exists()
