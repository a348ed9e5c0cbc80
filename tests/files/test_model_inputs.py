"""hklflow.files.model_inputs: the files of rmc-discord (read back by rmc-discord 0.0.4's own
reader in the throw-away venv of bench/rmc_discord_venv.py) and of Yell (read back with h5py
and checked against Yell's manual: layout, values, zeros where unmeasured, grid line); one
module per program, found by its name (the config schema's enum), naming its files."""
from __future__ import annotations

import json
import subprocess
import sys

import h5py
import numpy as np
import pytest

from hklflow.files import model_inputs as mi
from hklflow.files.model_inputs import rmc_discord, yell
from hklflow.files.volume import Volume
from hklflow.model.grid import Axis, Grid

from conftest import REPO, bench_venv_python

HEX = (4.5, 4.5, 7.0, 90.0, 90.0, 120.0)


def _grid(n=(13, 11, 9), step=(1 / 3, 0.25, 0.5)):
    """h, k, l axes symmetric about 0 (n odd), array shape (nl, nk, nh)."""
    return Grid(*(Axis(-(m - 1) / 2 * s, s, m) for m, s in zip(n, step)))


def _q2(grid, cell):
    """|Q|^2 (1/A^2) of every voxel [l, k, h], from the cell (computed here, not by hklflow)."""
    a, b, c = cell[:3]
    ca, cb, cg = np.cos(np.radians(cell[3:]))
    G = np.linalg.inv(np.array([[a * a, a * b * cg, a * c * cb], [a * b * cg, b * b, b * c * ca],
                                [a * c * cb, b * c * ca, c * c]]))
    L, K, H = np.meshgrid(grid.l.values, grid.k.values, grid.h.values, indexing="ij")
    x = np.stack([H, K, L], axis=-1)
    return np.einsum("...i,ij,...j->...", x, G, x)


def _volume(grid=None, cell=HEX, seed=3, zero_fraction=0.06):
    """Counts-like volume: signal = counts x c, variance = counts x c^2 (gain 1), c growing
    with |Q|; 30 % unmeasured (weight 0), some measured voxels with no counts."""
    grid = grid or _grid()
    rng = np.random.default_rng(seed)
    q = np.sqrt(_q2(grid, cell))
    c = 1.0 + 3.0 * q / q.max()
    weight = rng.uniform(0.5, 4.0, grid.shape)
    weight[rng.random(grid.shape) < 0.3] = 0.0
    counts = rng.poisson(rng.uniform(0.5, 30.0, grid.shape) * weight).astype(float)
    counts[rng.random(grid.shape) < zero_fraction] = 0.0
    counts[weight == 0] = 0.0
    sample = {"name": "x", "space_group": "P 6/m m m", "unit_cell": np.array(cell)}
    return Volume(grid, (counts * c).astype(np.float32), weight.astype(np.float32),
                  "transform", "x/300K", sample, {},
                  (counts * c * c).astype(np.float32))


def _expected(vol, cell=HEX, shells=mi.FLOOR_SHELLS):
    """Intensity, sigma (with the documented floor) and measured, computed here."""
    s, w, v = (np.asarray(a, float) for a in (vol.signal, vol.weight, vol.variance))
    m = w > 0
    q3 = _q2(vol.grid, cell) ** 1.5
    shell = np.minimum(np.floor(q3 / q3[m].max() * shells), shells - 1).astype(int)
    vmin = np.full(shells, np.inf)
    for i in range(shells):
        sel = m & (v > 0) & (shell == i)
        if sel.any():
            vmin[i] = v[sel].min()
    vmin[~np.isfinite(vmin)] = vmin[np.isfinite(vmin)].min()
    vf = np.where(m & (v == 0), vmin[shell], v)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(m, s / w, np.nan), np.where(m, np.sqrt(vf) / w, np.nan), m, vmin


@pytest.fixture(scope="module")
def vol():
    return _volume()


@pytest.fixture(scope="module")
def written(vol, tmp_path_factory):
    out = tmp_path_factory.mktemp("model_inputs")
    paths = mi.write_model_inputs(vol, out, "x_300K_transform",
                                  provenance={"program": "test", "time": "now"})
    return out, paths


# --------------------------------------------------------------------------------------
# The sigma floor
# --------------------------------------------------------------------------------------
def test_sigma_floor_is_the_weakest_count_of_each_q_shell(vol):
    i, s, m = mi.voxel_arrays(vol, mi.sigma_floor(vol))
    ei, es, em, vmin = _expected(vol)
    zero = em & (np.asarray(vol.variance) == 0)
    assert zero.sum() > 50 and (em & ~zero).sum() > 500
    assert np.array_equal(m, em)
    assert np.allclose(i[m], ei[m], rtol=1e-6) and np.isnan(i[~m]).all()
    assert np.allclose(s[m], es[m], rtol=1e-6) and np.isnan(s[~m]).all()
    assert (s[m] > 0).all() and np.isfinite(s[m]).all()
    # the floor follows |Q| (c grows with it): a floor from the whole volume would not
    assert vmin.max() > 3 * vmin.min()
    assert not np.allclose(s[zero], np.sqrt(vmin.min()) / np.asarray(vol.weight)[zero])


def test_a_volume_without_variance_or_without_counts_is_refused(vol, tmp_path):
    bare = Volume(vol.grid, vol.signal, vol.weight, sample=vol.sample)
    with pytest.raises(ValueError, match="no variance"):
        mi.write_model_inputs(bare, tmp_path, "x")
    empty = Volume(vol.grid, np.zeros_like(vol.signal), vol.weight, sample=vol.sample,
                   variance=np.zeros_like(vol.signal))
    with pytest.raises(ValueError, match="sigma 0 and no voxel has a non-zero variance"):
        mi.write_model_inputs(empty, tmp_path, "x")
    with pytest.raises(ValueError, match="unknown modelling program"):
        mi.write_model_inputs(vol, tmp_path, "x", programs=("yell", "discus"))
    assert list(tmp_path.iterdir()) == []


def test_a_failed_write_leaves_nothing(vol, tmp_path, monkeypatch):
    calls = []

    def broken(*args, **kw):
        calls.append(1)
        if len(calls) > 1:
            raise RuntimeError("disk full")
        return real(*args, **kw)

    real = mi.voxel_arrays
    monkeypatch.setattr(mi, "SLAB_BYTES", 8 * 11 * 9 * 2)  # two h planes a slab: several slabs
    for module in (yell, rmc_discord):
        monkeypatch.setattr(module, "voxel_arrays", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        yell.write(vol, tmp_path, "x")
    calls.clear()
    with pytest.raises(RuntimeError, match="disk full"):
        rmc_discord.write(vol, tmp_path, "x")
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


def test_slabs_give_the_same_files_as_one_pass(vol, tmp_path, monkeypatch):
    one = mi.write_model_inputs(vol, tmp_path / "one", "x")
    monkeypatch.setattr(mi, "SLAB_BYTES", 8 * 11 * 9 * 2)
    many = mi.write_model_inputs(vol, tmp_path / "many", "x")
    for a, b in zip(one["yell"][:3] + one["rmc_discord"], many["yell"][:3] + many["rmc_discord"]):
        with h5py.File(a) as fa, h5py.File(b) as fb:
            for name in ("data", "MDHistoWorkspace/data/signal",
                         "MDHistoWorkspace/data/errors_squared"):
                if name in fa:
                    assert np.array_equal(fa[name][()], fb[name][()], equal_nan=True), name


# --------------------------------------------------------------------------------------
# Yell
# --------------------------------------------------------------------------------------
def test_yell_arrays_are_what_its_manual_asks(vol, written):
    out, paths = written
    folder = out / "x_300K_transform_yell"
    assert paths["yell"] == [folder / n for n in ("experiment.h5", "weights.h5",
                                                  "reciprocal_space_multiplier.h5",
                                                  "model_grid.txt", "provenance.json")]
    ei, es, em, _ = _expected(vol)
    nl, nk, nh = vol.grid.shape
    arrays = {}
    for p in paths["yell"][:3]:
        with h5py.File(p) as f:
            assert f.attrs["filetype"] in (b"Yell 1.0", "Yell 1.0")
            assert list(f) == ["data"]  # "Yell only expects one dataset per file"
            d = f["data"]
            assert d.shape == (nh - 1, nk - 1, nl - 1)
            arrays[p.name] = _as_yell_reads(d)
    kept = (slice(0, nl - 1), slice(0, nk - 1), slice(0, nh - 1))
    m = em[kept].transpose(2, 1, 0)  # ours [l, k, h] -> Yell's [h, k, l]
    exp, wts, mult = (arrays[yell.FILES[role].split("/")[-1]] for role in yell.ARRAYS)
    assert np.allclose(exp[m], ei[kept].transpose(2, 1, 0)[m], rtol=1e-6)
    assert (exp[~m] == 0).all()
    assert np.allclose(wts[m], 1 / es[kept].transpose(2, 1, 0)[m], rtol=1e-6)
    assert (wts[~m] == 0).all() and np.isfinite(wts).all() and (wts[m] > 0).all()
    assert np.array_equal(mult, m.astype(float))
    assert np.isfinite(exp).all()
    # one voxel by hand: (h, k, l) = (1/3, -0.5, 1.0)
    ih, ik, il = (int(round((x - ax.start) / ax.step)) for x, ax in
                  zip((1 / 3, -0.5, 1.0), vol.grid.axes))
    w = float(vol.weight[il, ik, ih])
    if w > 0:
        assert exp[ih, ik, il] == pytest.approx(float(vol.signal[il, ik, ih]) / w, rel=1e-6)
    else:
        assert exp[ih, ik, il] == 0 and wts[ih, ik, il] == 0 and mult[ih, ik, il] == 0


def _as_yell_reads(dataset) -> np.ndarray:
    """The array as Yell's ReadHDF5 gets it: H5Dread into doubles (PredType::NATIVE_DOUBLE),
    HDF5 converting the stored type (h5py's read_direct asks HDF5 for the buffer's type)."""
    out = np.empty(dataset.shape, np.float64)
    dataset.read_direct(out)
    return out


def test_yell_files_are_compact_and_readable_by_any_hdf5(vol, written, tmp_path):
    """float32 arrays and a uint8 mask (the volume's precision: Yell reads doubles, HDF5
    converts), no filter (Yell's own HDF5 build has none), and the chunks with nothing
    measured not stored: they read as 0, as written in full."""
    grid = Grid(Axis(-8.0, 0.25, 65), Axis(-8.0, 0.25, 65), Axis(-4.0, 0.25, 33))
    big = _volume(grid)
    # measured where h < 0 and k < 0: a quarter of Yell's chunks holds any
    L, K, H = np.meshgrid(grid.l.values, grid.k.values, grid.h.values, indexing="ij")
    big.weight[(H >= 0) | (K >= 0)] = 0
    paths = yell.write(big, tmp_path, "v")
    for role, p in zip(yell.ARRAYS, paths):
        with h5py.File(p) as f:
            d = f["data"]
            assert d.dtype == yell.DTYPES[role] and d.compression is None
            assert d.id.get_create_plist().get_nfilters() == 0
            stored, every = d.id.get_num_chunks(), np.prod([-(-n // c) for n, c in
                                                           zip(d.shape, d.chunks)])
            assert stored * 4 == every and every >= 4, (stored, every)
            values = _as_yell_reads(d)
            assert values.dtype == np.float64
    _, _, m, _ = _expected(big)
    ei = np.where(m, np.asarray(big.signal, float) / np.where(m, big.weight, 1), 0.0)
    with h5py.File(paths[0]) as f:
        got = _as_yell_reads(f["data"])
    kept = (slice(0, 32), slice(0, 64), slice(0, 64))  # (the last planes: Yell's FFT rule)
    want = ei[kept].transpose(2, 1, 0)
    assert np.allclose(got, want, rtol=2e-7, atol=0) and (got[~m[kept].T] == 0).all()
    # float32: the volume's own precision, no more lost
    assert np.array_equal(got, want.astype(np.float32).astype(np.float64))


def _grid_line(text):
    line = next(s for s in text.splitlines() if s.startswith("DiffuseScatteringGrid"))
    v = line.split()[1:]
    assert len(v) == 9
    return [float(x) for x in v[:3]], [float(x) for x in v[3:6]], [int(x) for x in v[6:]]


def test_yell_grid_line_follows_its_fft_rule_and_the_arrays(vol, written):
    out, paths = written
    text = (out / "x_300K_transform_yell" / "model_grid.txt").read_text()
    lower, steps, n = _grid_line(text)
    with h5py.File(paths["yell"][0]) as f:
        assert list(f["data"].shape) == n
    for lo, st, m, ax in zip(lower, steps, n, vol.grid.axes):
        # lower limit + i step is the voxel centre of array index i
        assert np.allclose(lo + st * np.arange(m), ax.values[:m], atol=1e-12)
        # Yell's FFT rule: even n, the origin at pixel n/2 + 1 (1-based)
        assert m % 2 == 0 and abs(lo + m // 2 * st) < 1e-10
    assert "# FFT-compatible grid: yes." in text
    cell = next(s for s in text.splitlines() if s.startswith("Cell "))
    assert [float(x) for x in cell.split()[1:]] == list(HEX)
    prov = json.loads((out / "x_300K_transform_yell" / "provenance.json").read_text())
    assert prov["provenance"]["program"] == "test"
    assert prov["cropped_last_plane"] == ["h", "k", "l"]


def test_yell_grid_that_cannot_be_fft_is_kept_whole_and_says_so(tmp_path):
    grid = Grid(Axis(0.0, 0.25, 8), Axis(-1.0, 0.25, 9), Axis(-1.0, 0.5, 5))
    vol = _volume(grid)
    paths = yell.write(vol, tmp_path, "v")
    lower, steps, n = _grid_line(paths[3].read_text())
    assert n == [8, 8, 4] and lower == [0.0, -1.0, -1.0]  # h kept; k and l cropped
    assert "use CalculationMethod exact" in paths[3].read_text()
    whole = yell.write(vol, tmp_path / "whole", "v", fft_grid=False)
    assert _grid_line(whole[3].read_text())[2] == [8, 9, 5]
    with h5py.File(whole[0]) as f:
        assert f["data"].shape == (8, 9, 5)


# --------------------------------------------------------------------------------------
# rmc-discord: the layout (here) and its own reader (in its venv)
# --------------------------------------------------------------------------------------
def test_rmc_discord_file_is_a_mantid_md_histo_workspace(vol, written):
    out, paths = written
    assert paths["rmc_discord"] == [out / "x_300K_transform_rmc_discord.nxs"]
    ei, es, em, _ = _expected(vol)
    with h5py.File(paths["rmc_discord"][0]) as f:
        d = f["MDHistoWorkspace/data"]
        assert d["signal"].dtype == np.float64 and d["signal"].shape == vol.grid.shape
        assert np.allclose(d["signal"][()], ei, rtol=1e-6, equal_nan=True)
        err = d["errors_squared"][()]
        assert np.allclose(err, es ** 2, rtol=1e-6, equal_nan=True)
        assert np.isnan(err[~em]).all() and (err[em] > 0).all()
        for name, ax in zip(("[H,0,0]", "[0,K,0]", "[0,0,L]"), vol.grid.axes):
            edges = d[name][()]
            assert len(edges) == ax.n + 1
            assert np.allclose((edges[1:] + edges[:-1]) / 2, ax.values, atol=1e-12)
        assert json.loads(f["MDHistoWorkspace/notes/data"][()])["sigma_floor"]["floored_voxels"] \
            == int((em & (np.asarray(vol.variance) == 0)).sum())


def test_rmc_discord_arrays_are_float64_of_float32_values_compressed(vol, written):
    """float64 as its reader needs, holding the volume's float32 precision, through the
    byte shuffle and deflate that nexusformat and h5py read everywhere: the float64
    mantissa's unused bytes cost almost nothing."""
    out, paths = written
    ei, es, em, _ = _expected(vol)
    with h5py.File(paths["rmc_discord"][0]) as f:
        d = f["MDHistoWorkspace/data"]
        for name, want in (("signal", ei), ("errors_squared", es ** 2)):
            a = d[name]
            assert a.dtype == np.float64 and a.compression == "gzip" and a.shuffle
            got = a[()]
            assert np.array_equal(got, want.astype(np.float32).astype(np.float64),
                                  equal_nan=True), name
            assert a.id.get_storage_size() < 0.6 * a.size * 8, name


READER = """
import sys, numpy as np
from disorder.diffuse import experimental
import disorder
signal, error_sq, hr, kr, lr, nh, nk, nl = experimental.data(sys.argv[1])
mask = experimental.mask(signal, error_sq)
np.savez(sys.argv[2], signal=signal, error_sq=error_sq, ranges=np.array([hr, kr, lr], float),
         n=np.array([nh, nk, nl]), mask=mask)
print(disorder.__version__, signal.dtype, signal.shape)
"""


@pytest.fixture(scope="session")
def rmc_python():
    """The python of rmc-discord's throw-away venv (bench/rmc_discord_venv.py), made on first
    use (about a minute, pip from PyPI) and kept; the check skips, with the reason, only
    where the venv cannot be made."""
    return bench_venv_python("rmc_discord_venv", "rmc-discord's venv")


@pytest.mark.slow
def test_rmc_discord_own_reader_loads_our_file(vol, written, rmc_python, tmp_path):
    out, paths = written
    npz = tmp_path / "read.npz"
    r = subprocess.run([str(rmc_python), "-c", READER, str(paths["rmc_discord"][0]), str(npz)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.split()[:1] == ["0.0.4"]
    got = np.load(npz)
    ei, es, em, _ = _expected(vol)
    # it transposes to [h, k, l]
    assert got["signal"].shape == vol.grid.shape[::-1]
    assert np.allclose(got["signal"], ei.transpose(2, 1, 0), rtol=1e-6, equal_nan=True)
    assert np.allclose(got["error_sq"], (es ** 2).transpose(2, 1, 0), rtol=1e-6, equal_nan=True)
    assert list(got["n"]) == [ax.n for ax in vol.grid.axes]
    for (lo, hi), ax in zip(got["ranges"], vol.grid.axes):
        assert lo == pytest.approx(ax.start, abs=1e-4) and hi == pytest.approx(ax.stop, abs=1e-4)
    # its mask: unmeasured voxels and those it cannot weight (I <= 0: no counts)
    with np.errstate(invalid="ignore"):
        expected_mask = ~em | (ei <= 0)
    assert np.array_equal(got["mask"], expected_mask.transpose(2, 1, 0))
    assert (~got["mask"]).sum() > 0.5 * em.sum()



def test_yell_gets_the_laue_symmetry_in_its_own_names(vol, written):
    """model_grid.txt's LaueSymmetry line in Yell's model grammar (Yell's `-3m:H` is -3m1,
    its `2/m` has the unique axis c); a class Yell lacks is a comment saying so."""
    from hklflow.files.model_inputs.yell import yell_laue_symmetry

    out, _ = written
    text = (out / "x_300K_transform_yell" / "model_grid.txt").read_text()
    expected = yell_laue_symmetry(vol.sample["space_group"])
    assert f"LaueSymmetry {expected}" in text.splitlines()
    for group, name in [("I 41/a m d", "4/mmm"), ("P 3 2 1", "-3m:H"), ("P -3 m 1", "-3m:H"),
                        ("R -3 m:R", "-3m:R"), ("R -3:H", "-3:H"), ("P 1 2/m 1", "2/m:b"),
                        ("P 1 1 2/m", "2/m"), ("F m -3 m", "m-3m"), ("P 6/m m m", "6/mmm"),
                        ("P -1", "-1"), ("P m m m", "mmm")]:
        assert yell_laue_symmetry(group) == name, group
    for group in ("P -3 1 m", "P 3 1 2", "P 2/m 1 1"):
        assert yell_laue_symmetry(group) is None, group


# --------------------------------------------------------------------------------------
# One module per program, found by its name
# --------------------------------------------------------------------------------------
def test_the_programs_are_the_modules_and_the_schema_lists_each_once():
    """Every program module is in the config schema's enum of output.model_inputs, and
    every name there has its module (adding a program is both: docs/map.md)."""
    import yaml

    schema = yaml.safe_load((REPO / "src/hklflow/settings/schemas/config.schema.yaml").read_text())
    enum = schema["properties"]["output"]["properties"]["model_inputs"]["items"]["enum"]
    assert sorted(enum) == list(mi.program_names()) == ["rmc_discord", "yell"]
    for name in enum:
        module = mi.program(name)
        assert callable(module.write) and isinstance(module.FILES, dict) and module.FILES
    with pytest.raises(ValueError, match="unknown modelling program"):
        mi.program("discus")


def test_each_program_names_its_files_after_the_volume():
    """The names the rule's outputs are made of (with the wildcard {volume}) and the files
    write_model_inputs writes (with a volume's name) come from FILES alone."""
    assert mi.file_names("rmc_discord", "{volume}") == ["{volume}_rmc_discord.nxs"]
    assert mi.file_names("yell", "{volume}") == [
        f"{{volume}}_yell/{n}" for n in ("experiment.h5", "weights.h5",
                                          "reciprocal_space_multiplier.h5", "model_grid.txt",
                                          "provenance.json")]


def test_written_files_are_those_the_program_names(vol, written):
    out, paths = written
    for program, files in paths.items():
        assert [str(p.relative_to(out)) for p in files] == mi.file_names(program,
                                                                          "x_300K_transform")


def test_naming_the_files_loads_no_h5py():
    """The Snakefile names the rule's outputs from the program modules when it plans (every
    cluster job plans again): they, and files.outputs, load no h5py."""
    code = ("import sys\n"
            "from hklflow.files import model_inputs, outputs\n"
            "for p in model_inputs.program_names():\n"
            "    model_inputs.file_names(p, '{volume}')\n"
            "assert 'h5py' not in sys.modules and 'numba' not in sys.modules\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def _map_example() -> str:
    """The module docs/map.md's "Adding an output format" walks through, as written there."""
    import textwrap

    text = (REPO / "docs/map.md").read_text()
    section = text[text.index("## Adding an output format"):]
    block = section[section.index("```python\n") + 10:]
    return textwrap.dedent(block[:block.index("```")])



def test_a_new_program_is_one_module_found_by_its_name(vol, tmp_path, monkeypatch):
    """docs/map.md's walk-through, its module as written there: a module beside yell.py
    with FILES and write() is a program (its name then goes into the schema's enum):
    named, listed and written."""
    folder = tmp_path / "more"
    folder.mkdir()
    (folder / "hkl_table.py").write_text(_map_example())
    monkeypatch.setattr(mi, "__path__", [*mi.__path__, str(folder)])
    try:
        assert mi.program_names() == ("hkl_table", "rmc_discord", "yell")
        assert mi.file_names("hkl_table", "{volume}") == ["{volume}_hkl_table.txt"]
        paths = mi.write_model_inputs(vol, tmp_path / "out", "v", ["hkl_table", "yell"])
        assert paths["hkl_table"] == [tmp_path / "out" / "v_hkl_table.txt"]
        rows = paths["hkl_table"][0].read_text().splitlines()
        assert len(rows) == mi.sigma_floor(vol).measured
    finally:  # (the made-up module leaves no trace for the other tests)
        sys.modules.pop("hklflow.files.model_inputs.hkl_table", None)
        vars(mi).pop("hkl_table", None)
