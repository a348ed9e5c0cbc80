"""hklflow.files.volume: volume files written whole or slab by slab, atomically; a complete
part adopted by a rename (adopt_volume), given back where that fails."""
from __future__ import annotations

import numpy as np
import pytest

from hklflow.files.volume import (VolumeReader, VolumeWriter, read_intensity, read_volume,
                                  write_volume)

from volume_helpers import HEX, complete_part, random_volume, sample, small_grid


def test_volume_writer_same_file_as_write_volume(tmp_path):
    import h5py

    grid = small_grid()
    vol = random_volume(grid, 1, title="a/300K", sample_=sample())
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


def test_reader_fills_the_callers_buffers_with_the_stored_planes(tmp_path):
    grid = small_grid()
    vol = random_volume(grid, 1)
    write_volume(tmp_path / "a.nxs", vol, {})
    buf = (np.full((8,) + grid.shape[1:], -1, np.float32),
           np.full((8,) + grid.shape[1:], -1, np.float32))
    with VolumeReader(tmp_path / "a.nxs") as r:
        assert r.grid == grid and r.kind == vol.kind
        for l0 in range(0, grid.l.n, 8):  # 21 planes: 8, 8, 5
            l1 = min(l0 + 8, grid.l.n)
            s, w = r.read(l0, l1, out=buf)
            assert s.base is buf[0] and w.base is buf[1] and len(s) == l1 - l0
            assert np.array_equal(s, vol.signal[l0:l1].astype(np.float32))
            assert np.array_equal(w, vol.weight[l0:l1].astype(np.float32))
            assert np.array_equal(r.read_weight(l0, l1), w)  # (the weight alone)
        with pytest.raises(ValueError, match="outside"):
            r.read(20, 22)
        with pytest.raises(ValueError, match="outside"):
            r.read_weight(20, 22)


@pytest.mark.parametrize("stored", [True, False])
def test_read_intensity_is_signal_over_weight_stored_or_not(tmp_path, stored):
    grid = small_grid()
    vol = random_volume(grid, 1)
    vol.weight[:3] = 0  # unmeasured planes: NaN
    with VolumeWriter(tmp_path / "a.nxs", grid, vol.kind, intensity=stored) as w:
        w.write(0, vol.signal, vol.weight)
    head, intensity = read_intensity(tmp_path / "a.nxs")
    assert head.grid == grid and head.signal.size == 0
    expected = read_volume(tmp_path / "a.nxs").intensity()
    assert np.isnan(expected[:3]).all() and np.isfinite(expected[3:]).any()
    assert intensity.dtype == np.float32
    assert np.array_equal(intensity, expected, equal_nan=True)


# --------------------------------------------------------------------------------------
# NeXpy and NXRefine open every volume as their own (issue 14)
# --------------------------------------------------------------------------------------
def _hex_sample(temperature=123.0):
    return dict(sample("P 6/m m m", HEX, name="hexa"), temperature=temperature,
                temperature_label="123K")


def _check_opens_in_nexpy(path, signal="data", temperature=123.0):
    """What NeXpy plots on opening `path` (nexusformat's plottable_data: the @default chain)
    and the NXRefine sample fields, for the hexagonal sample of _hex_sample."""
    from nexusformat.nexus import nxload

    root = nxload(str(path))
    d = root.plottable_data
    assert d is not None and d.nxpath == "/entry/transform"
    assert d.nxsignal.nxname == signal
    assert [a.nxname for a in d.nxaxes] == ["Ql", "Qk", "Qh"]
    assert [a.attrs["long_name"] for a in d.nxaxes] == ["L", "K", "H"]
    # |a*| = |b*| = 2 / (sqrt(3) a), |c*| = 1 / c: the aspect NeXpy draws
    assert np.allclose([a.attrs["scaling_factor"] for a in d.nxaxes],
                       [1 / 7.0, 2 / (np.sqrt(3) * 4.5), 2 / (np.sqrt(3) * 4.5)])
    # NeXpy's views: `data` is the intensity and has no weights to be divided by a second
    # time; a part's signal_sum (the sum) is the intensity when plotted weighted
    sums, weights = (d[n].nxdata for n in ("signal_sum", "weight_sum"))
    measured = weights > 0
    if signal == "data":
        assert d.nxweights is None
        shown = d.nxsignal.nxdata
    else:
        assert d.nxweights.nxname == "weight_sum"
        shown = d.weighted_data().nxsignal.nxdata
    np.testing.assert_allclose(shown[measured], (sums / weights)[measured], rtol=1e-6)
    # (gamma*, beta*, alpha*) of a hexagonal cell: gamma* = 60 deg, so H-K planes are skewed
    assert np.allclose(d.nxangles, [60.0, 90.0, 90.0])
    smp = root["entry/sample"]
    got = {k: smp[k].nxvalue for k in ("unitcell_a", "unitcell_b", "unitcell_c", "unitcell_alpha",
                                       "unitcell_beta", "unitcell_gamma")}
    assert got == pytest.approx({"unitcell_a": 4.5, "unitcell_b": 4.5, "unitcell_c": 7.0,
                                 "unitcell_alpha": 90.0, "unitcell_beta": 90.0,
                                 "unitcell_gamma": 120.0})
    assert smp["unitcell_a"].attrs["units"] == "angstrom"
    assert smp["unitcell_gamma"].attrs["units"] == "degree"
    assert smp["laue_group"].nxvalue == "6/mmm"
    assert smp["space_group"].nxvalue == "P 6/m m m"
    assert smp["temperature"].nxvalue == pytest.approx(temperature)
    assert smp["temperature"].attrs["units"] == "K"
    assert smp["name"].nxvalue == "hexa"


def _hex_grid():
    return small_grid(n=(13, 13, 9), step=(0.25, 0.25, 0.5))


def test_every_writer_path_makes_a_volume_nexpy_plots(tmp_path):
    """write_volume, a transform part without intensity, a sum of volumes (merge_entries), a
    single complete volume adopted (sum_chunks of one chunk) and a symmetrisation."""
    from hklflow.algorithms.merge.volumes import sum_volumes, symmetrize_file
    from hklflow.model.crystal import Crystal, UnitCell

    grid = _hex_grid()
    vol = random_volume(grid, 3, title="hexa/123K/f1", sample_=_hex_sample())
    a = write_volume(tmp_path / "a.nxs", vol, {"program": "test"})
    _check_opens_in_nexpy(a)
    # a part only sums read: its signal is signal_sum, weighted by weight_sum (the
    # signal's @weights) into the intensity
    with VolumeWriter(tmp_path / "part.nxs", grid, "transform", "part", _hex_sample(), {},
                      {"program": "test"}, intensity=False) as w:
        w.write(0, vol.signal, vol.weight)
    _check_opens_in_nexpy(tmp_path / "part.nxs", signal="signal_sum")
    b = write_volume(tmp_path / "b.nxs", random_volume(grid, 4, sample_=_hex_sample()),
                     {"program": "test"})
    sum_volumes([a, b], tmp_path / "sum.nxs", "hexa/123K", {"program": "test"})
    _check_opens_in_nexpy(tmp_path / "sum.nxs")
    with VolumeWriter(tmp_path / "one.nxs", grid, "transform", "one", _hex_sample(),
                      {"measured_fraction": 0.5, "weight_sum": 1.0, "signal_sum": 1.0},
                      {"program": "test"}) as w:
        w.write(0, vol.signal, vol.weight)
    notes = sum_volumes([tmp_path / "one.nxs"], tmp_path / "adopted.nxs", "hexa/123K/f1",
                        {"program": "test"}, move_single=True)
    assert notes.get("adopted") and not (tmp_path / "one.nxs").exists()
    _check_opens_in_nexpy(tmp_path / "adopted.nxs")
    symmetrize_file(tmp_path / "sum.nxs", tmp_path / "symm.nxs",
                    Crystal("P 6/m m m", UnitCell(*HEX)), {"program": "test"})
    _check_opens_in_nexpy(tmp_path / "symm.nxs")


def test_volumes_written_before_the_nxrefine_fields_still_read_and_sum(tmp_path):
    import h5py

    from hklflow.algorithms.merge.volumes import sum_volumes
    from hklflow.files.volume import read_volume

    grid = _hex_grid()
    vol = random_volume(grid, 5, sample_=sample("P 6/m m m", HEX, name="hexa"))
    old = write_volume(tmp_path / "old.nxs", vol, {"program": "test"})
    with h5py.File(old, "r+") as f:  # the layout before: no angles, NXRefine fields, @weights
        d = f["entry/transform"]
        del d.attrs["angles"]
        del d["signal_sum"].attrs["weights"]
        for k in list(f["entry/sample"]):
            if k not in ("name", "space_group", "unit_cell"):
                del f["entry/sample"][k]
    back = read_volume(old)
    assert np.array_equal(back.signal, vol.signal) and np.array_equal(back.weight, vol.weight)
    assert set(back.sample) == {"name", "space_group", "unit_cell"}
    sum_volumes([old, old], tmp_path / "sum.nxs", "hexa/123K", {"program": "test"})
    summed = read_volume(tmp_path / "sum.nxs")
    assert np.allclose(summed.weight, 2 * vol.weight)
    # the sum gets the new fields from the old file's cell; no temperature was known
    assert summed.sample["laue_group"] == "6/mmm" and "temperature" not in summed.sample
    assert summed.sample["unitcell_gamma"] == pytest.approx(120.0)


@pytest.mark.slow
def test_tiny_run_volumes_carry_the_scan_temperature_and_the_refined_cell(tiny_run):
    """The scan file's temperature and the orientation's refined cell reach the volume of
    every entry, the merged and the symmetrised volumes (through transform_frames' sample
    group, passed on by sum_chunks, merge_entries and symmetrize)."""
    from nexusformat.nexus import nxload

    from hklflow.files.orientation import read_orientation_file
    from hklflow.files.scan import read_scan_file

    d, r, _, _ = tiny_run
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    for t in ("100K", "300K"):
        base = d / "results" / "tiny" / t
        ori = read_orientation_file(base / "orientation.nxs")
        temperature = read_scan_file(base / "f1" / "scan.nxs").temperature
        assert f"{temperature:g}K" == t
        gstar, bstar, astar = ori.crystal().cell.reciprocal_parameters[5:2:-1]
        for kind in ("transform", "masked_transform"):
            for path in (base / "f1" / f"{kind}.nxs", base / "f2" / f"{kind}.nxs",
                         base / f"{kind}.nxs", base / f"{kind}_symmetrized.nxs"):
                root = nxload(str(path))
                data = root.plottable_data
                assert data.nxpath == f"/entry/{kind}", path
                assert [a.nxname for a in data.nxaxes] == ["Ql", "Qk", "Qh"]
                assert data.nxweights is None  # `data` is the intensity already
                # signal_sum weighted (its @weights: weight_sum) is the intensity too
                assert data["signal_sum"].attrs["weights"] == "weight_sum"
                w = data["weight_sum"].nxdata
                np.testing.assert_allclose(data["signal_sum"].nxdata[w > 0] / w[w > 0],
                                           data.nxsignal.nxdata[w > 0], rtol=1e-6)
                assert np.allclose(data.nxangles, [gstar, bstar, astar])
                smp = root["entry/sample"]
                assert smp["temperature"].nxvalue == temperature, path
                assert smp["temperature"].attrs["units"] == "K"
                assert [smp[f"unitcell_{n}"].nxvalue for n in ("a", "b", "c", "alpha", "beta",
                                                               "gamma")] == pytest.approx(ori.cell)
                assert smp["laue_group"].nxvalue == "4/mmm"  # I 41/a m d


def test_chunks_are_written_raw_as_hdf5_would_and_empty_ones_are_left_out(tmp_path, monkeypatch):
    import h5py

    from hklflow.files import volume

    grid = small_grid(n=(150, 70, 21))  # [21, 70, 150]: edge chunks in every direction
    vol = random_volume(grid, 5)
    signal, weight = vol.signal, vol.weight
    signal[8:16, :64, 64:128] = 0.0  # one whole chunk unmeasured (NaN intensity)
    weight[8:16, :64, 64:128] = 0.0
    signal[16:, 64:, 128:] = 0.0  # an edge chunk: unmeasured but one voxel
    weight[16:, 64:, 128:] = 0.0
    weight[20, 69, 149], signal[20, 69, 149] = 1.0, 3.0
    signal[0, 0, 0] = -0.0  # not the fill value bit for bit: kept as -0.0

    def write(path, slabs):
        with VolumeWriter(path, grid, "transform", "t", sample()) as w:
            for l0, l1 in slabs:
                w.write(l0, signal[l0:l1], weight[l0:l1])

    from hklflow.codec import compiled

    slabs = [(0, 16), (16, 21)]
    assert volume.ChunkWriter((8, 64, 64)).codec.name == "compiled"  # (this machine)
    write(tmp_path / "fast.nxs", slabs)  # LZ4's acceleration WRITE_ACCELERATION
    monkeypatch.setattr(compiled, "WRITE_ACCELERATION", 1)  # HDF5's filter's bytes
    write(tmp_path / "raw.nxs", slabs)
    write(tmp_path / "odd.nxs", [(5, 16), (16, 21), (0, 5)])  # rows of chunks completed later
    monkeypatch.setenv("HKLFLOW_CODEC", "library")  # bitshuffle's public functions
    write(tmp_path / "library.nxs", slabs)
    monkeypatch.setattr(volume.ChunkWriter, "available", property(lambda self: False))
    write(tmp_path / "hdf5.nxs", slabs)

    with h5py.File(tmp_path / "raw.nxs") as a, h5py.File(tmp_path / "hdf5.nxs") as b, \
            h5py.File(tmp_path / "odd.nxs") as c, h5py.File(tmp_path / "library.nxs") as e:
        for name in ("data", "weight_sum", "signal_sum"):
            x, y, z, v = (f["entry/transform"][name] for f in (a, b, c, e))
            assert x.compression_opts == y.compression_opts
            assert x[()].tobytes() == y[()].tobytes() == z[()].tobytes() == v[()].tobytes(), name
            stored = {x.id.get_chunk_info(i).chunk_offset for i in range(x.id.get_num_chunks())}
            assert x.id.get_num_chunks() == y.id.get_num_chunks() - 1  # the empty one
            assert (8, 0, 64) not in stored and (16, 64, 128) in stored
            for offset in stored:  # the bytes HDF5's bitshuffle filter writes
                assert x.id.read_direct_chunk(offset) == y.id.read_direct_chunk(offset)
                assert z.id.read_direct_chunk(offset) == y.id.read_direct_chunk(offset)
                assert v.id.read_direct_chunk(offset) == y.id.read_direct_chunk(offset)
            assert z.id.get_num_chunks() == v.id.get_num_chunks() == x.id.get_num_chunks()
        with h5py.File(tmp_path / "fast.nxs") as f:  # other bytes, the same values
            for name in ("data", "weight_sum", "signal_sum"):
                x, w = a["entry/transform"][name], f["entry/transform"][name]
                assert w[()].tobytes() == x[()].tobytes(), name
                assert w.id.get_num_chunks() == x.id.get_num_chunks()
                sizes = [sum(d.id.get_chunk_info(i).size for i in range(d.id.get_num_chunks()))
                         for d in (w, x)]
                assert abs(sizes[0] / sizes[1] - 1) < 0.05
        d = a["entry/transform"]
        assert np.isnan(d["data"][8:16, :64, 64:128]).all()
        assert not d["weight_sum"][8:16, :64, 64:128].any()
        assert np.signbit(d["signal_sum"][0, 0, 0])
    assert read_volume(tmp_path / "raw.nxs").signal.tobytes() == signal.tobytes()


def _partly_stored_volume(path, seed, **writer_options):
    """A 140 x 70 x 21 volume (chunks 64 x 64 x 8) measured in a box that leaves chunks
    unstored and reaches the grid's edge chunks on every axis: (path, signal, grid)."""
    from hklflow.model.grid import Axis, Grid

    grid = Grid(Axis(0, 1, 140), Axis(0, 1, 70), Axis(0, 1, 21))
    rng = np.random.default_rng(seed)
    signal = np.zeros(grid.shape, np.float32)
    weight = np.zeros(grid.shape, np.float32)
    region = (slice(3, 19), slice(10, 70), slice(64, 140))
    weight[region] = rng.integers(0, 3, weight[region].shape)
    signal[region] = weight[region] * rng.random(weight[region].shape)
    with VolumeWriter(path, grid, **writer_options) as w:
        w.write(0, signal, weight)
    return path, signal, grid


@pytest.mark.parametrize("compiled", [False, True])
def test_reader_decompresses_the_stored_chunks_as_hdf5_reads_them(tmp_path, compiled):
    """VolumeReader reads the arrays from their raw chunks (the library codec or, with
    compiled_decompression, the codec chosen: the compiled one here; the fill value where a
    chunk is not stored): the same bits as HDF5's filter, for slabs in and out of step with
    the chunks and edge chunks on every axis; a chunk stored without its filter goes through
    HDF5; a damaged chunk fails with HDF5's error."""
    import h5py

    from hklflow.codec import ChunkReader

    path, signal, _ = _partly_stored_volume(tmp_path / "v.nxs", seed=11)
    with h5py.File(path, "r+") as f:  # one chunk of the signal stored unfiltered
        d = f["entry/transform/signal_sum"]
        assert d.id.get_num_chunks() < 3 * 2 * 3  # some chunks are not stored
        d.id.write_direct_chunk((8, 64, 128), np.ascontiguousarray(
            np.pad(signal[8:16, 64:70, 128:140], ((0, 0), (0, 58), (0, 52)))).tobytes(),
            filter_mask=1)
    with h5py.File(path) as f:
        want = {name: f[f"entry/transform/{name}"][()] for name in ("signal_sum", "weight_sum",
                                                                     "data")}
    assert np.array_equal(want["signal_sum"], signal)
    with VolumeReader(path, compiled_decompression=compiled) as r:
        for l0, l1 in ((0, 8), (8, 21), (5, 13), (13, 14), (0, 21)):
            s, w_ = r.read(l0, l1)
            assert np.array_equal(s.view(np.uint32), want["signal_sum"][l0:l1].view(np.uint32))
            assert np.array_equal(w_.view(np.uint32), want["weight_sum"][l0:l1].view(np.uint32))
            i = r.read_intensity(l0, l1)
            assert np.array_equal(i.view(np.uint32), want["data"][l0:l1].view(np.uint32))
        # HDF5 read the unfiltered chunk alone, in the four slabs that reach into planes 8-15
        readers = {c.dset.name.rsplit("/", 1)[1]: c for c in r._chunk_readers.values()}
        assert all(isinstance(c, ChunkReader) for c in readers.values())
        assert {c.codec.name for c in readers.values()} == {
            "compiled" if compiled else "library"}
        assert {name: c.through_hdf5 for name, c in readers.items()} == \
            {"signal_sum": 4, "weight_sum": 0, "data": 0}
    with h5py.File(path, "r+") as f:  # a damaged chunk
        d = f["entry/transform/weight_sum"]
        corner = d.id.get_chunk_info(0).chunk_offset
        d.id.write_direct_chunk(corner, b"\x00" * 12 + b"\x07" * 40)
    with VolumeReader(path, compiled_decompression=compiled) as r, pytest.raises(OSError):
        r.read(0, 21)


@pytest.mark.parametrize("stored", [True, False])
@pytest.mark.parametrize("raw_chunks", [True, False])
def test_a_plane_is_read_from_the_chunks_that_hold_it(tmp_path, monkeypatch, stored, raw_chunks):
    """VolumeReader.read_plane (the slice pictures): every H, K and L plane, edges of the
    chunks and of the grid included, equals the stored intensity bit for bit (NaN where a
    chunk is not stored), or signal / weight where the file has no intensity; from the raw
    chunks, or through HDF5 where they cannot be read so."""
    import h5py

    from hklflow.files import volume as files_volume

    if not raw_chunks:
        monkeypatch.setattr(files_volume.ChunkReader, "open",
                            classmethod(lambda cls, d, compiled=False: None))
    path, _, grid = _partly_stored_volume(tmp_path / "v.nxs", seed=5, intensity=stored)
    with h5py.File(path) as f:
        d = f["entry/transform"]
        if stored:
            want = d["data"][()]
        else:
            s, wt = d["signal_sum"][()].astype(np.float64), d["weight_sum"][()]
            with np.errstate(invalid="ignore", divide="ignore"):
                want = np.where(wt > 0, s / np.where(wt > 0, wt, 1), np.nan).astype(np.float32)
    assert np.isnan(want).any() and np.isfinite(want).any()
    with VolumeReader(path) as r:
        for axis, j in (("l", 0), ("k", 1), ("h", 2)):
            for index in range(grid.shape[j]):
                plane = r.read_plane(axis, index)
                expected = np.take(want, index, axis=j)
                assert plane.dtype == np.float32 and plane.shape == expected.shape
                assert np.array_equal(plane, expected, equal_nan=True), (axis, index)
        used = [c for c in r._chunk_readers.values() if c is not None]
        assert bool(used) == raw_chunks
        with pytest.raises(ValueError, match="outside"):
            r.read_plane("k", 70)


@pytest.mark.parametrize("how", ["aligned slabs", "unaligned slabs", "chunks"])
def test_kept_planes_are_the_planes_the_file_stores(tmp_path, how):
    """VolumeWriter(keep=...) keeps the slices' planes as it stores them: every kept H, K
    and L plane (edges of the chunks and of the grid included) equals read_plane of the
    file it wrote, bit for bit (NaN where no chunk is stored), whether slabs come aligned
    with the chunks or not, or chunks one by one (the merge's path, which leaves empty
    chunks out); values outside the grid are not kept (read_slice: GridError, as for the
    file); the planes count only once the writer ended complete."""
    from hklflow.base.errors import GridError
    from hklflow.pictures.slices import kept_planes, read_slice

    path, signal, grid = _partly_stored_volume(tmp_path / "v.nxs", seed=3)
    with VolumeReader(path) as r:
        weight = r.read(0, grid.l.n)[1].copy()
    # (measured: l 3..18, k 10..69, h 64..139; l = 0 and h = 0 lie in unstored chunks)
    specs = [{"l": 3}, {"l": 8}, {"l": 18}, {"k": 63}, {"k": 64}, {"k": 69}, {"h": 64},
             {"h": 127}, {"h": 139}, {"l": 0}, {"h": 0}, {"h": 500}]
    planes = kept_planes(specs)
    out = tmp_path / "kept.nxs"
    with VolumeWriter(out, grid, keep=planes) as w:
        if how == "aligned slabs":
            for l0 in (0, 8, 16):
                w.write(l0, signal[l0:l0 + 8], weight[l0:l0 + 8])
        elif how == "unaligned slabs":
            for l0, l1 in ((13, 21), (0, 5), (5, 13)):
                w.write(l0, signal[l0:l1], weight[l0:l1])
        else:
            from hklflow.files import volume_kernels

            c = w.chunks
            for l0 in range(0, grid.l.n, c[0]):
                for k0 in range(0, grid.k.n, c[1]):
                    for h0 in range(0, grid.h.n, c[2]):
                        box = (slice(l0, l0 + c[0]), slice(k0, k0 + c[1]), slice(h0, h0 + c[2]))
                        s, wt = (np.zeros(c, np.float32) for _ in range(2))
                        part = signal[box]
                        s[:part.shape[0], :part.shape[1], :part.shape[2]] = part
                        wt[:part.shape[0], :part.shape[1], :part.shape[2]] = weight[box]
                        if not wt.any():
                            continue  # (as the merge: a chunk no input stores)
                        inten = np.empty(c, np.float32)
                        counts = volume_kernels.slab_sums(s, wt, inten, True, s, wt, False)
                        w.write_chunk(l0, k0, h0, s, wt, inten, counts=counts)
                w.mark_written(l0, min(l0 + c[0], grid.l.n))
        assert not planes.complete
    assert planes.complete and planes.grid is grid
    with VolumeReader(out) as r:
        for spec in specs[:-1]:
            (axis, value), = spec.items()
            kept = planes.plane(axis, grid.slice_index(axis, value))
            assert np.isnan(kept).any() and (np.isfinite(kept).any() or spec in specs[-3:])
            assert np.array_equal(kept, r.read_plane(axis, grid.slice_index(axis, value)),
                                  equal_nan=True), (how, spec)
            from_file, from_memory = read_slice(out, spec), read_slice(planes, spec)
            assert np.array_equal(from_file.data, from_memory.data, equal_nan=True)
            # (an open reader, as plot_slices passes for all its slices: the same plane)
            assert np.array_equal(read_slice(r, spec).data, from_file.data, equal_nan=True)
            assert (from_file.label, from_file.u_edges) == (from_memory.label, from_memory.u_edges)
    with pytest.raises(GridError):
        read_slice(planes, specs[-1])


def test_reading_headers_and_slices_loads_no_numba(tmp_path):
    """numba costs a process ~0.3 CPU-s to import and ~0.5 more at its first call: reading
    a volume's header or a slice (pictures, temperature series) loads none of it; writing
    a volume loads the compiled loops (files/volume_kernels.py)."""
    import subprocess
    import sys

    path = tmp_path / "v.nxs"
    write_volume(path, random_volume(small_grid(), 3), {"program": "test"})
    code = ("import sys, numpy as np\n"
            "from hklflow.files.volume import read_volume_header, write_volume, read_volume\n"
            "from hklflow.pictures.slices import read_slice\n"
            f"p = {str(path)!r}\n"
            "head = read_volume_header(p)\n"
            "s = read_slice(p, {'l': 0})\n"
            "print(head.grid.shape[0], np.isfinite(s.data).any(), 'numba' in sys.modules)\n"
            "write_volume(p + '.copy', read_volume(p), {'program': 'test'})\n"
            "print('numba' in sys.modules)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["21", "True", "False", "True"]


def test_volume_names_and_a_part_adopted_whole(tmp_path, monkeypatch):
    """An entry's volume, named as sum_chunks's output, made from its one part (a rename,
    the arrays not copied: adopt_volume) reads back the same, with its new title, notes and
    provenance; a failure moves the part back."""
    from hklflow.files import outputs
    from hklflow.files import volume as volume_files
    from hklflow.files.h5 import read_provenance
    from hklflow.files.volume import adopt_volume

    at = dict(sample="tiny", temperature="300K", entry="f1", kind="transform")
    part = tmp_path / outputs.fill(outputs.VOLUME_PART, frames=outputs.part_frames(0, 60), **at)
    out = tmp_path / outputs.fill(outputs.ENTRY_VOLUME, **at)
    assert str(part.relative_to(tmp_path)) == "results/tiny/300K/f1/transform_parts/00000-00060.nxs"
    assert str(out.relative_to(tmp_path)) == "results/tiny/300K/f1/transform.nxs"
    vol = random_volume(small_grid(), 4)
    write_volume(part, vol, {"program": "part"})
    def broken(*args):
        raise OSError("disk full")

    with monkeypatch.context() as m:
        m.setattr(volume_files, "write_provenance_h5", broken)
        with pytest.raises(OSError, match="disk full"):
            adopt_volume(part, out, "tiny/300K/f1", {"n": 1}, {"program": "sum"})
    assert part.exists() and not out.exists()  # the part moved back, nothing half made
    adopt_volume(part, out, "tiny/300K/f1", {"n": 1}, {"program": "sum"})
    assert not part.exists() and not list(part.parent.iterdir())  # no temporary left
    back = read_volume(out)
    assert np.array_equal(back.signal, vol.signal) and np.array_equal(back.weight, vol.weight)
    assert (back.title, back.notes) == ("tiny/300K/f1", {"n": 1})
    assert read_provenance(out)["program"] == "sum"


def test_a_failed_move_gives_the_part_back(tmp_path, monkeypatch):
    from hklflow.files import volume

    experiment = tmp_path  # (a folder: the part and the output's)
    grid = small_grid()
    part, v = complete_part(experiment, grid)

    def broken(*a, **k):
        raise OSError("disk full")
    monkeypatch.setattr(volume, "write_provenance_h5", broken)
    with pytest.raises(OSError, match="disk full"):
        volume.adopt_volume(part, experiment / "out/f1.nxs", "t", {}, {})
    assert part.exists() and not (experiment / "out/f1.nxs").exists()
    assert np.array_equal(read_volume(part).signal, v.signal)  # summed again on the next run
    assert list((experiment / "out").iterdir()) == []
