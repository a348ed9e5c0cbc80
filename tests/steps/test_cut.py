"""Command cut (hklflow cut VOLUME): a line and a plane of a volume file written as NXdata
that NeXpy's library (nexusformat) plots as it is (signal, errors, axes with units and
long names, the plane's angle), the same values as the algorithm gives
(tests/algorithms/test_cuts.py checks those), the picture; arguments that do not make a cut
refused with nothing left behind."""
from __future__ import annotations

import math

import nexusformat.nexus as nx
import numpy as np
import pytest

from hklflow.algorithms.cuts import plan_cut, sample_cut
from hklflow.commands import cli
from hklflow.files.cut import read_cut
from hklflow.files.volume import Volume, write_volume
from hklflow.model.crystal import UnitCell
from hklflow.model.grid import Axis, Grid

from volume_helpers import HEX, TETRA, run, sample

GRID = Grid(Axis(-2, 0.1, 41), Axis(-2, 0.1, 41), Axis(-2, 0.25, 17))


def volume(cell=TETRA, symbol="I 4/m m m"):
    """Gaussians at (0.5, 0.5, 1) and (1, 1, 0) on a background of 1; L < -1.5 unmeasured."""
    L, K, H = np.meshgrid(GRID.l.values, GRID.k.values, GRID.h.values, indexing="ij")
    inten = 1 + 50 * (np.exp(-((H - 0.5) ** 2 + (K - 0.5) ** 2 + (L - 1) ** 2) / 0.02)
                      + np.exp(-((H - 1) ** 2 + (K - 1) ** 2 + L ** 2) / 0.02))
    weight = np.full(GRID.shape, 2.0, np.float32)
    weight[L < -1.5] = 0
    return Volume(GRID, (inten * weight).astype(np.float32), weight, "transform", "xtal/300K",
                  sample(symbol, cell), variance=(inten * weight).astype(np.float32))


@pytest.fixture
def folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_volume(tmp_path / "transform.nxs", volume(), {})
    return tmp_path


def test_plane_hhl_as_nexpy_reads_it(folder, capsys):
    rc = cli.main(["cut", "transform.nxs", "--plane", "1 1 0", "0 0 1", "--origin", "0 0 0"])
    assert rc == 0, capsys.readouterr().err
    out = folder / "transform_cut_plane_1,1,0_0,0,1.nxs"
    png = out.with_suffix(".png")
    assert png.stat().st_size > 10_000
    root = nx.nxload(str(out))
    data = root.plottable_data  # NeXpy's plot: the @default chain
    assert data.nxname == "cut"
    assert data.nxsignal.nxname == "data" and data.nxerrors.nxname == "data_errors"
    v, u = data.nxaxes
    assert (v.nxname, u.nxname) == ("v", "u")
    assert u.attrs["units"] == "rlu" and "[1 1 0]" in u.attrs["long_name"]
    assert "[0 0 1]" in v.attrs["long_name"]
    assert u.attrs["scaling_factor"] == pytest.approx(math.sqrt(2) / 3.8)
    assert data.nxangles == pytest.approx(90.0)
    assert data["Q_u"].attrs["units"] == "1/Angstrom"
    # the values: the algorithm's on the same volume; the feature at (0.5 0.5 1)
    vol = volume()
    cut = sample_cut(GRID, plan_cut(GRID, UnitCell(*TETRA), (0, 0, 0), [(1, 1, 0), (0, 0, 1)]),
                     vol.signal, vol.weight, vol.variance)
    back = read_cut(out)
    np.testing.assert_allclose(back.intensity, cut.intensity())
    np.testing.assert_allclose(back.errors, cut.errors())
    i, j = np.unravel_index(np.nanargmax(back.intensity), back.intensity.shape)
    assert {(round(back.coords[0][j], 6), round(back.coords[1][i], 6))} <= {(0.5, 1.0), (1.0, 0.0)}
    assert np.all(np.isnan(back.intensity[back.coords[1] < -1.5]))  # unmeasured: NaN
    assert back.method == "nearest voxel"


def test_line_and_normal(folder, capsys):
    rc = run("cut", ["transform.nxs", "--line", "[1 1 0]", "--origin", "(0, 0, 0)",
                     "--length", "3", "--width", "0.03", "--out", "out/line.nxs"])
    assert rc == 0, capsys.readouterr().err
    back = read_cut(folder / "out/line.nxs")
    assert back.coords[0][0] == pytest.approx(-1.5) and back.coords[0][-1] == pytest.approx(1.5)
    assert back.coords[0][np.nanargmax(back.intensity)] == pytest.approx(1.0)
    np.testing.assert_allclose(back.q_coords[0], back.coords[0] * math.sqrt(2) / 3.8)
    assert back.method == "binned over 0.03 1/A" and back.angle is None
    assert (folder / "out/line.png").stat().st_size > 10_000
    root = nx.nxload(str(folder / "out/line.nxs"))
    assert [a.nxname for a in root.plottable_data.nxaxes] == ["u"]
    assert root.plottable_data.nxerrors.nxname == "data_errors"

    # a plane by its normal: [0 0 1] through L = 1 is the (H K 1) plane
    rc = run("cut", ["transform.nxs", "--normal", "0 0 1", "--origin", "0 0 1", "--out",
                     "hk1.nxs"])
    assert rc == 0, capsys.readouterr().err
    back = read_cut(folder / "hk1.nxs")
    np.testing.assert_array_equal(back.directions, [[1, 0, 0], [0, 1, 0]])
    np.testing.assert_allclose(back.intensity, volume().intensity()[12], rtol=1e-6)


def test_hexagonal_plane_to_scale(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    write_volume(tmp_path / "hex.nxs", volume(HEX, "P 6/m m m"), {})
    rc = run("cut", ["hex.nxs", "--plane", "1 0 0", "0 1 0", "--width", "0.05"])
    assert rc == 0, capsys.readouterr().err
    back = read_cut(tmp_path / "hex_cut_plane_1,0,0_0,1,0.nxs")
    assert back.angle == pytest.approx(60.0)  # a* ^ b* of a hexagonal cell
    assert back.q_coords[0] == pytest.approx(back.coords[0] * 2 / (math.sqrt(3) * 4.5))
    assert "angle 60.00 deg" in capsys.readouterr().err


def test_refused(folder, capsys):
    for args, message in (
            (["--line", "1 1 0", "--range-u", "0", "1"], "a plane's"),
            (["--plane", "1 1 0", "2 2 0"], "parallel"),
            (["--line", "1 0 0", "--origin", "0 0 50", "--width", "0.01"], "does not meet"),
            (["--plane", "1 0 0", "0 1 0", "--range-u", "0", "1"], "both --range-u"),
    ):
        rc = run("cut", ["transform.nxs", *args, "--out", "bad.nxs"])
        assert rc == 1 and message in capsys.readouterr().err, args
        assert not (folder / "bad.nxs").exists() and not (folder / "bad.png").exists()
    with pytest.raises(SystemExit):
        run("cut", ["transform.nxs", "--line", "1 1"])
    assert "three numbers h k l expected" in capsys.readouterr().err
    # no cell: no axes in 1/A
    write_volume(folder / "nocell.nxs", Volume(GRID, volume().signal, volume().weight,
                                               sample={"name": "x"}), {})
    assert run("cut", ["nocell.nxs", "--line", "1 0 0"]) == 1
    assert "no sample/unit_cell" in capsys.readouterr().err


def test_listed_among_the_users_commands(capsys):
    assert cli.main(["--help"]) == 0
    text = capsys.readouterr().out
    users = text.split("the workflow's steps")[0]
    assert "  cut " in users


def test_volume_without_variance(folder, capsys):
    vol = volume()
    write_volume(folder / "novar.nxs", Volume(GRID, vol.signal, vol.weight, "transform", "x",
                                              vol.sample), {})
    rc = run("cut", ["novar.nxs", "--line", "0 0 1", "--origin", "1 1 0", "--step", "0.5"])
    assert rc == 0
    assert "has no variance_sum: the cut has no sigma" in capsys.readouterr().err
    back = read_cut(folder / "novar_cut_line_0,0,1_at_1,1,0.nxs")
    assert back.errors is None
    np.testing.assert_allclose(np.diff(back.coords[0]), 0.5)
    root = nx.nxload(str(folder / "novar_cut_line_0,0,1_at_1,1,0.nxs"))
    assert root.plottable_data.nxerrors is None
