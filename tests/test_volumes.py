"""Sums, symmetrisation and pictures of reciprocal-space volumes (steps sum_volumes,
symmetrize, temperature_series; modules hklflow.symmetry and hklflow.slices).

The symmetrisation is checked against cctbx (run in a subprocess, tests/reference_helpers):
a delta at a general position, symmetrised, must land on exactly the Laue-equivalent
positions cctbx's derived Laue group gives, for hexagonal, trigonal (hexagonal and
rhombohedral axes), tetragonal, monoclinic and cubic groups; and against a direct numpy
gather (hkl R -> nearest voxel) on grids whose limits are not symmetric.
"""
from __future__ import annotations

import logging

import numpy as np
import pytest

from hklflow.crystal import Crystal, UnitCell
from hklflow.grid import Axis, Grid
from hklflow.volume import Volume, VolumeWriter, read_volume, read_volume_header, write_volume
from reference_helpers import cctbx_answer

HEX = (4.5, 4.5, 7.0, 90.0, 90.0, 120.0)
TETRA = (3.8, 3.8, 13.4, 90.0, 90.0, 90.0)
# symbol (same for gemmi and cctbx) -> a compatible cell
GROUPS = {
    "P 6/m m m": HEX,
    "P 63/m m c": HEX,
    "P 6/m": HEX,
    "R -3 m:H": HEX,
    "P -3 1 m": HEX,
    "P -3": HEX,
    "R -3 m:R": (6.0, 6.0, 6.0, 75.0, 75.0, 75.0),
    "I 4/m m m": TETRA,
    "C 1 2/c 1": (7.1, 9.3, 11.2, 90.0, 103.4, 90.0),
    "P m m m": (5.3, 7.9, 11.4, 90.0, 90.0, 90.0),
    "F m -3 m": (5.0, 5.0, 5.0, 90.0, 90.0, 90.0),
}


def _sample(symbol="I 4/m m m", cell=TETRA, name="xtal"):
    return {"name": name, "space_group": symbol, "unit_cell": np.array(cell, float)}


def random_volume(grid, seed, kind="transform", title="t", sample=None, gap=0.3):
    rng = np.random.default_rng(seed)
    weight = rng.uniform(0.5, 4.0, grid.shape).astype(np.float32)
    weight[rng.random(grid.shape) < gap] = 0.0
    signal = (rng.uniform(0.5, 1000.0, grid.shape) * weight).astype(np.float32)
    return Volume(grid, signal, weight, kind, title, sample if sample is not None else _sample())


def small_grid(n=(13, 11, 21), step=(0.25, 0.25, 0.5)):
    """h, k, l axes symmetric about 0 (n odd), array shape (nl, nk, nh)."""
    return Grid(*(Axis(-(m - 1) / 2 * s, s, m) for m, s in zip(n, step)))


@pytest.fixture
def experiment(tmp_path, monkeypatch):
    """A minimal experiment directory (config + scans table) as the working directory: a
    tetragonal sample 'tetra' and a hexagonal one 'hexa', each at 100, 200 and 300 K."""
    cfg = tmp_path / "config"
    cfg.mkdir()
    rows = ["sample\ttemperature\tentry\tdata\tnframes\tphi_start\tphi_step"]
    for s in ("tetra", "hexa"):
        for t in (100, 200, 300):
            rows.append(f"{s}\t{t}\tf1\traw/{s}_{t}.h5\t10\t0\t0.5")
    (cfg / "scans.tsv").write_text("\n".join(rows) + "\n")
    (cfg / "config.yaml").write_text(f"""
experiment: volumes-test
scans_table: config/scans.tsv
instrument:
  detector: PilatusCdTe300k
  wavelength: 0.41328
  goniometer: {{scan_axis: [0.0, 1.0, 0.0], scan_sense: 1}}
calibrations:
  ceo2:
    image: raw/CeO2.h5
    calibrant: CeO2
    start: {{dist: 0.12, poni1: 0.05, poni2: 0.04, rot1: 0.0, rot2: 0.0, rot3: 0.0}}
samples:
  tetra: {{space_group: I 4/m m m, cell: {list(TETRA)}, parent: {{temperature: 300}}}}
  hexa: {{space_group: P 6/m m m, cell: {list(HEX)}, parent: {{temperature: 300}}}}
reduction:
  transform:
    slices: [{{l: 0}}, {{k: 0}}, {{h: 0.5}}, {{l: 99}}]
  merge:
    series_slice: {{l: 0.5}}
""")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def run_step(module, args):
    import importlib

    return importlib.import_module(f"hklflow.steps.{module}").main([str(a) for a in args])


# --------------------------------------------------------------------------------------
# Volume files written slab by slab
# --------------------------------------------------------------------------------------
def test_volume_writer_same_file_as_write_volume(tmp_path):
    import h5py

    grid = small_grid()
    vol = random_volume(grid, 1, title="a/300K", sample=_sample())
    vol.notes = {"x": [1, 2]}
    write_volume(tmp_path / "a.nxs", vol, {"program": "p"})
    with VolumeWriter(tmp_path / "b.nxs", grid, vol.kind, vol.title, vol.sample, {"x": [1]},
                      {"program": "p"}) as w:
        for l0 in range(0, grid.l.n, 8):  # 21 planes: slabs of 8, 8, 5
            w.write(l0, vol.signal[l0:l0 + 8].astype(np.float64), vol.weight[l0:l0 + 8])
        w.notes["x"].append(2)

    def content(path):
        out = {}
        with h5py.File(path, "r") as f:
            def visit(name, obj):
                attrs = {k: (v.tolist() if hasattr(v, "tolist") else v) for k, v in obj.attrs.items()
                         if k != "file_name"}
                if isinstance(obj, h5py.Dataset):
                    if name.endswith(("provenance", "date")):
                        return
                    out[name] = (obj[()].tobytes() if obj.dtype.kind == "f" else obj[()],
                                 obj.dtype.str, obj.chunks, obj.compression, attrs)
                else:
                    out[name] = attrs
            f.visititems(visit)
        return out

    a, b = content(tmp_path / "a.nxs"), content(tmp_path / "b.nxs")
    assert a.keys() == b.keys()
    for k in a:
        assert a[k] == b[k], k
    assert list(tmp_path.glob(".*tmp")) == []


def test_volume_writer_leaves_nothing_on_error(tmp_path):
    grid = small_grid()
    with pytest.raises(ValueError, match="never written"):
        with VolumeWriter(tmp_path / "c.nxs", grid) as w:
            w.write(0, np.zeros((8,) + grid.shape[1:]), np.zeros((8,) + grid.shape[1:]))
    with pytest.raises(RuntimeError):
        with VolumeWriter(tmp_path / "c.nxs", grid):
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------------------
# sum_volumes
# --------------------------------------------------------------------------------------
def _write_inputs(tmp_path, grid, n, **kw):
    paths = []
    for i in range(n):
        p = tmp_path / f"in{i}.nxs"
        write_volume(p, random_volume(grid, 10 + i, title=f"part{i}", **kw), {"program": "test"})
        paths.append(p)
    return paths


def test_sum_is_exact_and_order_independent(tmp_path):
    from hklflow.steps.sum_volumes import sum_volumes

    grid = small_grid()
    paths = _write_inputs(tmp_path, grid, 4)
    vols = [read_volume(p) for p in paths]
    expect_s = np.sum([v.signal.astype(np.float64) for v in vols], axis=0)
    expect_w = np.sum([v.weight.astype(np.float64) for v in vols], axis=0)
    notes = sum_volumes(paths, tmp_path / "sum.nxs", "S/300K", {"program": "test"}, planes=8)
    sum_volumes(paths[::-1], tmp_path / "rev.nxs", "S/300K", {"program": "test"}, planes=16)
    s, r = read_volume(tmp_path / "sum.nxs"), read_volume(tmp_path / "rev.nxs")
    assert s.signal.dtype == np.float32 and s.grid.same_as(grid)
    np.testing.assert_allclose(s.signal, expect_s, rtol=1e-6)
    np.testing.assert_allclose(s.weight, expect_w, rtol=1e-6)
    np.testing.assert_array_equal(s.signal, r.signal)  # float64 sums: order does not matter
    np.testing.assert_array_equal(s.weight, r.weight)
    # the gaps of one input are filled by the others: intensity = summed signal / summed weight
    gaps = vols[0].weight == 0
    assert np.count_nonzero(gaps & (s.weight > 0)) > 0.9 * np.count_nonzero(gaps)
    np.testing.assert_allclose(s.intensity()[s.weight > 0],
                               (expect_s / np.where(expect_w > 0, expect_w, 1))[s.weight > 0],
                               rtol=1e-5)
    assert np.all(np.isnan(s.intensity()[s.weight == 0]))
    assert s.title == "S/300K" and s.kind == "transform" and s.sample["name"] == "xtal"
    assert read_volume_header(tmp_path / "sum.nxs").notes == s.notes
    assert s.sample["space_group"] == "I 4/m m m"
    assert [i["path"] for i in s.notes["inputs"]] == [str(p) for p in paths]
    assert [i["title"] for i in s.notes["inputs"]] == ["part0", "part1", "part2", "part3"]
    assert notes["measured_fraction"] == pytest.approx(np.mean(expect_w > 0))
    assert notes["inputs"][0]["measured_fraction"] == pytest.approx(np.mean(~gaps))


def test_sum_volumes_command(experiment):
    grid = small_grid()
    paths = _write_inputs(experiment, grid, 3, sample=_sample())
    rc = run_step("sum_volumes", ["--config", "config/config.yaml", "--title", "tetra/300K/f1",
                                  "--inputs", *paths, "--out", "out/f1.nxs", "--png", "out/f1.png"])
    assert rc == 0
    assert (experiment / "out/f1.png").stat().st_size > 10_000
    v = read_volume(experiment / "out/f1.nxs")
    assert v.title == "tetra/300K/f1"
    np.testing.assert_allclose(v.weight, sum(read_volume(p).weight.astype(float) for p in paths),
                               rtol=1e-6)


def test_sum_refuses_other_grid_kind_or_sample(experiment, capsys):
    grid = small_grid()
    good = _write_inputs(experiment, grid, 2)
    other = small_grid(step=(0.25, 0.2, 0.5))
    write_volume(experiment / "odd.nxs", random_volume(other, 3), {})
    write_volume(experiment / "masked.nxs", random_volume(grid, 4, kind="masked_transform"), {})
    write_volume(experiment / "other.nxs", random_volume(grid, 5, sample=_sample(name="zz")), {})
    cases = {"odd.nxs": "grid differs", "masked.nxs": "masked_transform volume cannot be added",
             "other.nxs": "sample 'zz'"}
    for bad, why in cases.items():
        capsys.readouterr()
        rc = run_step("sum_volumes", ["--config", "config/config.yaml", "--title", "x",
                                      "--inputs", good[0], bad, good[1],
                                      "--out", "out/x.nxs", "--png", "out/x.png"])
        assert rc == 1
        msg = capsys.readouterr().err
        assert f"{bad}:" in msg and why in msg, msg
        assert not (experiment / "out/x.nxs").exists() and not (experiment / "out/x.png").exists()


def test_sum_corrupt_or_missing_input_leaves_nothing(experiment, capsys):
    grid = small_grid()
    good = _write_inputs(experiment, grid, 2)
    raw = (experiment / "in0.nxs").read_bytes()
    (experiment / "truncated.nxs").write_bytes(raw[: len(raw) // 2])
    (experiment / "garbage.nxs").write_bytes(b"not hdf5" * 100)
    # a file whose header is fine but whose data chunks are damaged: fails mid-way
    damaged = bytearray(raw)
    mid = len(raw) // 2
    damaged[mid:mid + 4096] = b"\xff" * 4096
    (experiment / "damaged.nxs").write_bytes(bytes(damaged))
    for bad in ("missing.nxs", "truncated.nxs", "garbage.nxs", "damaged.nxs"):
        (experiment / "out").mkdir(exist_ok=True)
        (experiment / "out/y.png").write_text("stale")  # an old output must go too
        capsys.readouterr()
        rc = run_step("sum_volumes", ["--config", "config/config.yaml", "--title", "x",
                                      "--inputs", good[0], bad, good[1], "--out", "out/y.nxs",
                                      "--png", "out/y.png"])
        err = capsys.readouterr().err
        assert rc == 1, (bad, err)
        assert f"{bad}: cannot read" in err, err
        assert sorted(p.name for p in (experiment / "out").iterdir()) == [], bad


# --------------------------------------------------------------------------------------
# Symmetrisation
# --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cctbx_laue():
    """cctbx's derived Laue group rotations (h' = h R) for GROUPS."""
    ans = cctbx_answer({"space_groups": {"symbols": list(GROUPS)}})
    return {s: (np.array(g["laue_rotations"]), g["laue_group"])
            for s, g in zip(GROUPS, ans["space_groups"])}


@pytest.mark.parametrize("symbol", list(GROUPS))
def test_delta_lands_on_cctbx_equivalents(symbol, cctbx_laue):
    from hklflow.symmetry import symmetrize_arrays

    crystal = Crystal(symbol, UnitCell(*GROUPS[symbol]))
    rotations, laue = cctbx_laue[symbol]
    grid = Grid(Axis(-4.0, 0.25, 33), Axis(-4.0, 0.25, 33), Axis(-4.0, 0.25, 33))
    for g in ([1.5, 0.25, 2.75], [-0.75, 1.25, 0.5]):  # general positions
        g = np.array(g)
        expected = {tuple(v) for v in np.round(g @ rotations, 6)}  # cctbx's orbit (Friedel incl.)
        assert len(expected) == len(rotations)  # general: orbit as large as the group
        signal = np.zeros(grid.shape, np.float32)
        weight = np.zeros(grid.shape, np.float32)
        ih, ik, il = grid.index(g)
        signal[il, ik, ih], weight[il, ik, ih] = 7.0, 1.0
        s, w = symmetrize_arrays(signal, weight, grid, crystal.laue_operators, symbol)
        il, ik, ih = np.nonzero(w)
        got = {tuple(v) for v in np.round(np.stack([grid.h.values[ih], grid.k.values[ik],
                                                    grid.l.values[il]], axis=1), 6)}
        assert got == expected, (symbol, laue, sorted(got ^ expected)[:6])
        assert np.all(w[w > 0] == 1.0) and np.all(s[w > 0] == 7.0)


def _numpy_reference(signal, grid, operators):
    """Direct definition: out[h] = sum over R of signal at the voxel nearest h R."""
    nl, nk, nh = signal.shape
    il, ik, ih = np.meshgrid(np.arange(nl), np.arange(nk), np.arange(nh), indexing="ij")
    hkl = np.stack([grid.h.values[ih], grid.k.values[ik], grid.l.values[il]], axis=-1)
    out = np.zeros(signal.shape)
    for R in operators:
        src = grid.index(hkl @ R)
        ok = grid.contains(src)
        out[ok] += signal[src[..., 2][ok], src[..., 1][ok], src[..., 0][ok]]
    return out


@pytest.mark.parametrize("symbol,grid", [
    ("P 6/m m m", Grid(Axis(-3.0, 0.25, 25), Axis(-2.0, 0.25, 17), Axis(-1.5, 0.5, 9))),
    ("R -3 m:H", Grid(Axis(-2.0, 0.5, 9), Axis(-1.5, 0.5, 11), Axis(-2.0, 0.25, 23))),
    ("F m -3 m", Grid(Axis(-2.0, 0.5, 9), Axis(-2.0, 0.5, 11), Axis(-3.0, 0.5, 12))),
    ("C 1 2/c 1", Grid(Axis(-1.05, 0.1, 30), Axis(-1.0, 0.25, 7), Axis(0.0, 0.2, 11))),
])
def test_symmetrize_matches_direct_gather_on_uneven_grids(symbol, grid):
    from hklflow.symmetry import symmetrize_arrays

    crystal = Crystal(symbol, UnitCell(*GROUPS[symbol]))
    vol = random_volume(grid, 7, gap=0.2)
    s, w = symmetrize_arrays(vol.signal, vol.weight, grid, crystal.laue_operators)
    np.testing.assert_allclose(s, _numpy_reference(vol.signal, grid, crystal.laue_operators),
                               rtol=1e-6)
    np.testing.assert_allclose(w, _numpy_reference(vol.weight, grid, crystal.laue_operators),
                               rtol=1e-6)


@pytest.mark.parametrize("symbol", ["P 6/m m m", "P -3 1 m", "F m -3 m", "C 1 2/c 1"])
def test_symmetric_intensity_unchanged_and_gaps_filled(symbol):
    """A Laue-invariant intensity measured with uneven weights and gaps comes out unchanged
    wherever anything was measured, and the gaps are filled."""
    from hklflow.symmetry import symmetrize_arrays

    crystal = Crystal(symbol, UnitCell(*GROUPS[symbol]))
    grid = Grid(Axis(-3.0, 0.25, 25), Axis(-3.0, 0.25, 25), Axis(-2.0, 0.25, 17))
    L, K, H = np.meshgrid(grid.l.values, grid.k.values, grid.h.values, indexing="ij")
    hkl = np.stack([H, K, L], axis=-1)
    G = crystal.cell.reciprocal_metric
    intensity = np.zeros(grid.shape)
    for R in crystal.laue_operators:  # sum over the group of any function: invariant
        for centre, width in (([1.1, 0.3, 0.7], 0.02), ([0.0, 2.0, 1.0], 0.05)):
            d = hkl @ R - centre
            intensity += np.exp(-np.einsum("...i,ij,...j->...", d, G, d) / width)
    intensity += 0.01
    rng = np.random.default_rng(3)
    weight = rng.uniform(0.2, 3.0, grid.shape)
    weight[rng.random(grid.shape) < 0.4] = 0.0
    s, w = symmetrize_arrays((intensity * weight).astype(np.float32), weight.astype(np.float32),
                             grid, crystal.laue_operators)
    measured = w > 0
    np.testing.assert_allclose(s[measured] / w[measured], intensity[measured], rtol=2e-5)
    assert measured.mean() > (weight > 0).mean() + 0.2


def test_incompatible_grid_names_the_config_keys():
    from hklflow.symmetry import GridSymmetryError, index_maps

    hexa = Crystal("P 6/m m m", UnitCell(*HEX)).laue_operators
    with pytest.raises(GridSymmetryError) as err:
        index_maps(Grid(Axis(-3, 0.1, 61), Axis(-3, 0.05, 121), Axis(-2, 0.5, 9)), hexa, "6/mmm")
    msg = str(err.value)
    assert "reduction.transform.grid.h and reduction.transform.grid.k" in msg and "same step" in msg
    assert "6/mmm" in msg
    tetra = Crystal("I 4/m m m", UnitCell(*TETRA)).laue_operators
    with pytest.raises(GridSymmetryError, match=r"reduction\.transform\.grid\.l.*symmetric about 0"):
        index_maps(Grid(Axis(-3, 0.1, 61), Axis(-3, 0.1, 61), Axis(-2.03, 0.1, 41)), tetra)
    # h and k not sharing a start: 4-fold operators map one onto the other between centres
    with pytest.raises(GridSymmetryError, match=r"grid\.k"):
        index_maps(Grid(Axis(-3, 0.1, 61), Axis(-2.95, 0.1, 60), Axis(-2, 0.1, 41)), tetra)
    # compatible although not symmetric: half-voxel offsets about 0, or a half space in l
    index_maps(Grid(Axis(-2.95, 0.1, 60), Axis(-2.95, 0.1, 60), Axis(0.0, 0.1, 21)), tetra)
    # monoclinic (2/m) never mixes axes: steps may differ
    mono = Crystal("C 1 2/c 1", UnitCell(*GROUPS["C 1 2/c 1"])).laue_operators
    index_maps(Grid(Axis(-3, 0.1, 61), Axis(-2, 0.05, 81), Axis(-1, 0.2, 11)), mono)


def test_symmetrize_command(experiment, capsys):
    grid = small_grid(n=(25, 25, 9), step=(0.25, 0.25, 0.5))
    vol = random_volume(grid, 21, title="hexa/300K", sample=_sample("P 6/m m m", HEX, "hexa"))
    write_volume(experiment / "merged.nxs", vol, {})
    rc = run_step("symmetrize", ["--config", "config/config.yaml", "--sample", "hexa",
                                 "--input", "merged.nxs", "--out", "out/sym.nxs",
                                 "--png", "out/sym.png"])
    err = capsys.readouterr().err
    assert rc == 0, err
    out = read_volume(experiment / "out/sym.nxs")
    assert out.kind == vol.kind and out.title == "hexa/300K symmetrized (6/mmm)"
    assert out.notes["symmetrized"]["laue_group"] == "6/mmm"
    assert out.notes["symmetrized"]["operators"] == 24
    assert out.notes["input_title"] == "hexa/300K"
    assert out.sample["name"] == "hexa"
    assert "slice {'l': 99} left out" in err  # outside the grid: a warning, no failure
    assert (experiment / "out/sym.png").stat().st_size > 10_000
    from hklflow.symmetry import symmetrize_arrays

    crystal = Crystal("P 6/m m m", UnitCell(*HEX))
    s, w = symmetrize_arrays(vol.signal, vol.weight, grid, crystal.laue_operators)
    np.testing.assert_array_equal(out.signal, s)
    np.testing.assert_array_equal(out.weight, w)

    # an incompatible grid: exit 1, the config keys named, nothing left
    bad = small_grid(n=(25, 21, 9), step=(0.25, 0.3, 0.5))
    write_volume(experiment / "bad.nxs", random_volume(bad, 1), {})
    rc = run_step("symmetrize", ["--config", "config/config.yaml", "--sample", "hexa",
                                 "--input", "bad.nxs", "--out", "out/bad.nxs", "--png", "out/bad.png"])
    assert rc == 1 and "reduction.transform.grid.h and reduction.transform.grid.k" in capsys.readouterr().err
    assert not (experiment / "out/bad.nxs").exists() and not (experiment / "out/bad.png").exists()
    # a missing input
    rc = run_step("symmetrize", ["--config", "config/config.yaml", "--sample", "hexa",
                                 "--input", "nothing.nxs", "--out", "out/n.nxs", "--png", "out/n.png"])
    assert rc == 1 and not (experiment / "out/n.nxs").exists()


# --------------------------------------------------------------------------------------
# Pictures
# --------------------------------------------------------------------------------------
def test_plot_slices(tmp_path, caplog):
    from hklflow.slices import plane_matrix, plot_slices, read_slice

    grid = small_grid(n=(25, 25, 9))
    vol = random_volume(grid, 2, sample=_sample("P 6/m m m", HEX))
    write_volume(tmp_path / "v.nxs", vol, {})
    with caplog.at_level(logging.WARNING):
        drawn = plot_slices(tmp_path / "v.nxs", [{"l": 0}, {"k": 0.5}, {"h": -1}, {"l": 5}],
                            tmp_path / "v.png", "test")
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
    from hklflow.steps.temperature_series import temperature_label

    grid = small_grid(n=(25, 25, 9))
    paths = []
    for i, t in enumerate(("300K", "100K", "200K")):
        p = experiment / f"results/hexa/{t}/transform.nxs"
        write_volume(p, random_volume(grid, 30 + i, title=f"hexa/{t}",
                                      sample=_sample("P 6/m m m", HEX, "hexa")), {})
        paths.append(p)
    rc = run_step("temperature_series", ["--config", "config/config.yaml", "--sample", "hexa",
                                         "--inputs", *paths, "--png", "out/series.png"])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert "3 temperatures (100K, 200K, 300K)" in err
    assert (experiment / "out/series.png").stat().st_size > 10_000
    assert temperature_label("results/s/12.5K/transform.nxs") == "12.5K"
    assert temperature_label("x.nxs", "s/300K") == "300K"
    # a corrupt input: exit 1, no picture
    (experiment / "bad.nxs").write_bytes(b"\0" * 1000)
    rc = run_step("temperature_series", ["--config", "config/config.yaml", "--sample", "hexa",
                                         "--inputs", paths[0], "bad.nxs", "--png", "out/s2.png"])
    assert rc == 1 and not (experiment / "out/s2.png").exists()
