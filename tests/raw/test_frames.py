"""hklflow.raw.frames: streamed, read-only reading of raw frames, and its errors."""
from __future__ import annotations

import hashlib
import os

import fabio.cbfimage
import fabio.tifimage
import h5py
import hdf5plugin
import numpy as np
import pytest

from hklflow.base.errors import RawDataError
from hklflow.model.scan import FrameSource
from hklflow.raw.frames import check_readable, open_frame_source, open_frames
from hklflow.raw.rawfiles import natural_key

SHAPE = (31, 23)
DSET = "/entry/data/data"


def write_stack(path, data, dataset=DSET, **extra):
    with h5py.File(path, "w") as f:
        f.create_dataset(dataset, data=data, chunks=(1,) + data.shape[1:],
                         **hdf5plugin.Bitshuffle(cname="lz4"))
        for k, v in extra.items():
            f[k] = v


def frames(n, shape=SHAPE, seed=0):
    rng = np.random.default_rng(seed)
    return rng.poisson(4.0, (n,) + shape).astype(np.int32)


def digest(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest(), os.stat(path).st_mtime_ns


def corrupt_chunk(src, dst, frame, at=0):
    """Copy an HDF5 stack, overwriting 16 bytes from byte `at` of one frame's compressed
    chunk (0: its header)."""
    with h5py.File(src, "r") as f:
        info = f[DSET].id.get_chunk_info_by_coord((frame, 0, 0))
    at += info.byte_offset
    b = bytearray(open(src, "rb").read())
    b[at:at + 16] = b"\xff" * 16
    open(dst, "wb").write(bytes(b))


@pytest.fixture
def stack_file(tmp_path):
    data = frames(20)
    path = tmp_path / "scan.h5"
    write_stack(path, data, **{"/entry/instrument/monitor": np.linspace(1.0, 2.0, 20)})
    return path, data


# --------------------------------------------------------------------------------------
# HDF5
# --------------------------------------------------------------------------------------
def test_hdf5_read_and_chunks_equal_written(stack_file):
    path, data = stack_file
    before = digest(path)
    with open_frames(path.name, base_dir=path.parent, expected_frames=20) as st:
        assert (st.nframes, st.frame_shape, st.dtype) == (20, SHAPE, np.dtype(np.int32))
        assert st.files == [str(path)] and st.kind == "hdf5" and st.dataset == DSET
        np.testing.assert_array_equal(st.read(3, 11), data[3:11])
        np.testing.assert_array_equal(st.read_frame(-1), data[-1])
        out = np.zeros((4,) + SHAPE, np.int32)
        assert st.read(5, 9, out=out) is out
        np.testing.assert_array_equal(out, data[5:9])
        for reuse in (False, True):
            starts, blocks = [], []
            for start, block in st.iter_chunks(7, reuse_buffer=reuse):
                starts.append(start)
                blocks.append(block.copy())
            assert starts == [0, 7, 14]
            np.testing.assert_array_equal(np.concatenate(blocks), data)
        got = check_readable(st)
        assert sorted(got) == [0, 19]
        np.testing.assert_array_equal(got[19], data[19])
        check_readable(st, "all")
        np.testing.assert_allclose(st.read_monitor("/entry/instrument/monitor"),
                                   np.linspace(1.0, 2.0, 20))
        with pytest.raises(IndexError):
            st.read(15, 21)
    assert digest(path) == before  # read-only: bytes and mtime unchanged


def test_hdf5_glob_of_stacks_is_concatenated_in_natural_order(tmp_path):
    parts = [frames(n, seed=k) for k, n in enumerate((4, 5, 3))]
    for k, part in enumerate(parts):  # names sort wrongly as text: d_2 < d_10
        write_stack(tmp_path / f"d_{(2, 10, 11)[k]}.h5", part)
    data = np.concatenate(parts)
    with open_frames("d_*.h5", base_dir=tmp_path, expected_frames=12) as st:
        assert [os.path.basename(f) for f in st.files] == ["d_2.h5", "d_10.h5", "d_11.h5"]
        assert st.source.frames_per_file == (4, 5, 3)
        np.testing.assert_array_equal(st.read(0, 12), data)
        np.testing.assert_array_equal(np.concatenate([b for _, b in st.iter_chunks(5)]), data)
        assert st.locate(6) == (str(tmp_path / "d_10.h5"), 2)


def test_big_endian_frames_are_read_in_native_byte_order(tmp_path, monkeypatch):
    """The compiled kernels take native numbers only: a big-endian dataset (as some
    writers produce) is converted on reading, values unchanged."""
    data = frames(6)
    write_stack(tmp_path / "be.h5", data.astype(">i4"))
    with h5py.File(tmp_path / "be.h5", "r") as f:
        assert f[DSET].dtype == np.dtype(">i4")
    with open_frames("be.h5", base_dir=tmp_path) as st:
        assert st.dtype == np.dtype("int32") and st.dtype.isnative
        got = st.read(0, 6)
        assert got.dtype.isnative
        np.testing.assert_array_equal(got, data)
        assert st.read_frame(3).dtype.isnative
    # one frame per file: a reader that hands over big-endian numbers is converted too
    import hklflow.raw.frames as hf

    paths = []
    for i in range(2):
        paths.append(str(tmp_path / f"be_{i:04d}.tif"))
        fabio.tifimage.TifImage(data=data[i].astype(np.uint16)).write(paths[-1])
    read = hf.read_fabio

    def big_endian(path, *args, **kw):
        d, n = read(path, *args, **kw)
        return d.astype(d.dtype.newbyteorder(">")), n

    monkeypatch.setattr(hf, "read_fabio", big_endian)
    with open_frames(str(tmp_path / "be_*.tif")) as st:
        assert st.source.dtype == ">u2"  # recorded as found
        assert st.dtype == np.dtype("uint16") and st.dtype.isnative
        got = st.read(0, 2)
        assert got.dtype.isnative
        np.testing.assert_array_equal(got, data[:2])


def test_missing_file_and_pattern(tmp_path):
    with pytest.raises(RawDataError, match="nothere.h5: raw data file does not exist"):
        open_frames("nothere.h5", base_dir=tmp_path)
    with pytest.raises(RawDataError, match=r"f_\*\.cbf: no files match"):
        open_frames("f_*.cbf", base_dir=tmp_path)


def test_dataset_missing_or_not_3d(stack_file, tmp_path):
    path, _ = stack_file
    with pytest.raises(RawDataError, match=r"scan\.h5: dataset /entry/other not found.*"
                                           r"/entry/data/data"):
        open_frames(str(path), "/entry/other")
    with pytest.raises(RawDataError, match=r"scan\.h5: dataset /entry/instrument/monitor has "
                                           r"shape \(20,\), expected a 3-D stack"):
        open_frames(str(path), "/entry/instrument/monitor")


def test_frame_count_differs_says_both_numbers(stack_file):
    path, _ = stack_file
    with pytest.raises(RawDataError, match=r"scan\.h5.*found 20 frames, expected 25 frames"):
        open_frames(str(path), expected_frames=25)


def test_truncated_hdf5_names_file(stack_file, tmp_path):
    path, _ = stack_file
    cut = tmp_path / "cut.h5"
    b = open(path, "rb").read()
    open(cut, "wb").write(b[:len(b) - 2000])
    with pytest.raises(RawDataError, match=r"cut\.h5: cannot open as HDF5.*truncated"):
        open_frames(str(cut))


def test_corrupt_chunk_names_file_and_frame(stack_file, tmp_path):
    path, data = stack_file
    bad = tmp_path / "bad.h5"
    corrupt_chunk(path, bad, 7)
    with open_frames(str(bad), expected_frames=20) as st:
        check_readable(st)  # first and last frame are fine
        np.testing.assert_array_equal(st.read(0, 7), data[:7])
        with pytest.raises(RawDataError, match=r"bad\.h5: frame 7 .*cannot be read or decompressed"):
            st.read(4, 12)
        with pytest.raises(RawDataError, match=r"bad\.h5: frame 7 "):
            check_readable(st, "all")


def h5py_frames(paths):
    """The frames of the stacks as h5py itself reads them."""
    parts = []
    for p in paths:
        with h5py.File(p, "r") as f:
            parts.append(f[DSET][()])
    return np.concatenate(parts)


def typed_frames(n, dtype, seed):
    rng = np.random.default_rng(seed)
    if np.dtype(dtype).kind == "f":
        return rng.normal(10.0, 3.0, (n,) + SHAPE).astype(dtype)
    return rng.poisson(40.0, (n,) + SHAPE).astype(dtype)


@pytest.mark.parametrize("read_threads", [1, 3])
@pytest.mark.parametrize("frames_per_chunk", [1, 3])
@pytest.mark.parametrize("dtype", ["int32", "uint16", "float32"])
@pytest.mark.parametrize("compiled", [False, True])
def test_bitshuffle_lz4_frames_are_decompressed_from_raw_chunks(tmp_path, dtype, compiled,
                                                                 frames_per_chunk, read_threads):
    """Chunks of whole frames compressed with bitshuffle-LZ4 are read raw and decoded by
    hklflow.codec (the library codec, or with compiled decompression the codec chosen: the
    compiled one here): the same numbers as through HDF5's filter, also with several chunks
    decompressed at once."""
    for k, n in enumerate((7, 5)):  # 7 frames: a last chunk of 3 holds one frame
        with h5py.File(tmp_path / f"d_{k}.h5", "w") as f:
            f.create_dataset(DSET, data=typed_frames(n, dtype, k),
                             chunks=(frames_per_chunk,) + SHAPE,
                             **hdf5plugin.Bitshuffle(cname="lz4"))
    data = h5py_frames([tmp_path / "d_0.h5", tmp_path / "d_1.h5"])
    with open_frames("d_*.h5", base_dir=tmp_path, expected_frames=12) as st:
        st.read_threads = read_threads
        st.compiled_decompression = compiled
        assert st.dtype == np.dtype(dtype)
        for i in (0, 4, 6, 7, 11):
            got = st.read_frame(i)
            assert got.dtype == data.dtype
            np.testing.assert_array_equal(got, data[i])
        np.testing.assert_array_equal(st.read(5, 9), data[5:9])  # across the two files
        np.testing.assert_array_equal(st.read(0, 12), data)
        blocks = [b.copy() for _, b in st.iter_chunks(4, reuse_buffer=True)]
        np.testing.assert_array_equal(np.concatenate(blocks), data)
        assert st.frames_from_raw_chunks == 5 + 4 + 12 + 12  # every frame read took it
        assert (st._pool is not None) == (read_threads > 1)  # several chunks at once
        other = np.empty(data.shape, "int32" if dtype == "float32" else "float32")
        np.testing.assert_array_equal(st.read(0, 12, out=other), data.astype(other.dtype))
        assert st.frames_from_raw_chunks == 33  # HDF5 converts into another type


@pytest.mark.parametrize("read_threads", [1, 2])
def test_unwritten_chunks_are_read_as_fill_value(tmp_path, read_threads):
    with h5py.File(tmp_path / "sparse.h5", "w") as f:
        d = f.create_dataset(DSET, shape=(5,) + SHAPE, dtype=np.int32, chunks=(1,) + SHAPE,
                             fillvalue=-7, **hdf5plugin.Bitshuffle(cname="lz4"))
        d[1] = frames(1)[0]
        d[3] = frames(1, seed=1)[0]
    data = h5py_frames([tmp_path / "sparse.h5"])
    assert (data[[0, 2, 4]] == -7).all()
    with open_frames("sparse.h5", base_dir=tmp_path) as st:
        st.read_threads = read_threads
        np.testing.assert_array_equal(st.read(0, 5), data)
        assert st.frames_from_raw_chunks == 2


@pytest.mark.parametrize("layout", [
    "gzip", "uncompressed", "bitshuffle without lz4", "bitshuffle zstd", "half-frame chunks",
    "lz4 and fletcher32", "big-endian", "virtual dataset", "bitshuffle package missing"])
def test_other_layouts_are_read_through_hdf5(tmp_path, monkeypatch, request, layout):
    data = frames(6)
    options = {
        "gzip": dict(chunks=(1,) + SHAPE, compression="gzip"),
        "uncompressed": dict(),
        "bitshuffle without lz4": dict(chunks=(1,) + SHAPE, **hdf5plugin.Bitshuffle(cname="none")),
        "bitshuffle zstd": dict(chunks=(1,) + SHAPE, **hdf5plugin.Bitshuffle(cname="zstd")),
        "half-frame chunks": dict(chunks=(1, SHAPE[0] // 2 + 1, SHAPE[1]),
                                  **hdf5plugin.Bitshuffle(cname="lz4")),
        "lz4 and fletcher32": dict(chunks=(1,) + SHAPE, fletcher32=True,
                                   **hdf5plugin.Bitshuffle(cname="lz4")),
    }.get(layout, dict(chunks=(1,) + SHAPE, **hdf5plugin.Bitshuffle(cname="lz4")))
    if layout == "virtual dataset":  # of a bitshuffle-LZ4 stack
        write_stack(tmp_path / "part.h5", data)
        vds = h5py.VirtualLayout(shape=data.shape, dtype=data.dtype)
        vds[:] = h5py.VirtualSource("part.h5", DSET, shape=data.shape)
        with h5py.File(tmp_path / "s.h5", "w") as f:
            f.create_virtual_dataset(DSET, vds)
    else:
        with h5py.File(tmp_path / "s.h5", "w") as f:
            f.create_dataset(DSET, data=data.astype(">i4") if layout == "big-endian" else data,
                             **options)
    if layout == "bitshuffle package missing":  # (HDF5's filter is hdf5plugin's own)
        import sys

        from hklflow.codec import choice

        monkeypatch.setitem(sys.modules, "bitshuffle", None)
        choice.library_codec.cache_clear()
        request.addfinalizer(choice.library_codec.cache_clear)
    with open_frames("s.h5", base_dir=tmp_path) as st:
        np.testing.assert_array_equal(st.read(0, 6), data)
        np.testing.assert_array_equal(st.read(2, 4), data[2:4])
        assert st.frames_from_raw_chunks == 0


@pytest.mark.parametrize("read_threads", [1, 2])
@pytest.mark.parametrize("where", ["header", "lz4 stream"])
@pytest.mark.parametrize("compiled", [False, True])
def test_corrupt_raw_chunk_names_file_and_frame(tmp_path, where, read_threads, compiled):
    """A damaged chunk on the fast path: the frame is read again through HDF5, whose error
    names the file and the frame number in the whole scan.  (The LZ4 stream is damaged at
    its first token, after the 12-byte chunk header and the 4-byte block size: bytes
    damaged inside literals decode to wrong numbers without error, in HDF5's filter too.)"""
    parts = [frames(5, seed=0), frames(6, seed=1)]
    write_stack(tmp_path / "d_1.h5", parts[0])
    write_stack(tmp_path / "good.h5", parts[1])
    corrupt_chunk(tmp_path / "good.h5", tmp_path / "d_2.h5", 3, at=0 if where == "header" else 16)
    with open_frames("d_*.h5", base_dir=tmp_path, expected_frames=11) as st:
        st.read_threads = read_threads
        st.compiled_decompression = compiled
        np.testing.assert_array_equal(st.read(2, 8), np.concatenate(parts)[2:8])
        assert st.frames_from_raw_chunks == 6
        with pytest.raises(RawDataError, match=r"d_2\.h5: frame 8 \(index 3 of dataset "
                                               r"/entry/data/data in this file\) cannot be read "
                                               r"or decompressed"):
            st.read(4, 11)
        with pytest.raises(RawDataError, match=r"d_2\.h5: frame 8 "):
            st.read_frame(8)


def test_monitor_errors(stack_file):
    path, _ = stack_file
    with open_frames(str(path)) as st:
        with pytest.raises(RawDataError, match="monitor dataset /nope not found"):
            st.read_monitor("/nope")
    short = path.parent / "short.h5"
    write_stack(short, frames(5), **{"/m": np.ones(4)})
    with open_frames(str(short)) as st:
        with pytest.raises(RawDataError, match=r"monitor /m has 4 values, expected one per "
                                               r"frame \(5\)"):
            st.read_monitor("/m")


def test_virtual_dataset_with_missing_source_is_an_error(tmp_path):
    write_stack(tmp_path / "part.h5", frames(3))
    layout = h5py.VirtualLayout(shape=(6,) + SHAPE, dtype=np.int32)
    layout[0:3] = h5py.VirtualSource("part.h5", DSET, shape=(3,) + SHAPE)
    layout[3:6] = h5py.VirtualSource("gone.h5", DSET, shape=(3,) + SHAPE)
    with h5py.File(tmp_path / "master.h5", "w") as f:
        f.create_virtual_dataset(DSET, layout, fillvalue=-1)
    with pytest.raises(RawDataError, match=r"master\.h5: .*virtual .*gone\.h5 does not exist"):
        open_frames("master.h5", base_dir=tmp_path)


def test_open_frame_source_detects_changed_raw_data(stack_file):
    path, data = stack_file
    with open_frames(str(path)) as st:
        source = st.source
    with open_frame_source(source) as st:
        np.testing.assert_array_equal(st.read(0, 20), data)
        assert (st.read_threads, st.compiled_decompression) == (1, False)
    with open_frame_source(source, read_threads=2, compiled_decompression=True) as st:
        assert (st.read_threads, st.compiled_decompression) == (2, True)
        np.testing.assert_array_equal(st.read(0, 20), data)
        assert st.frames_from_raw_chunks == 20
    changed = FrameSource("hdf5", source.files, source.dataset, (25,), SHAPE, "<i4")
    with pytest.raises(RawDataError, match="has 20 frames now, 25 when it was ingested"):
        open_frame_source(changed)


# --------------------------------------------------------------------------------------
# Frame files
# --------------------------------------------------------------------------------------
def write_cbfs(folder, data, name="f_{}.cbf"):
    folder.mkdir(exist_ok=True)
    paths = []
    for i, frame in enumerate(data):
        p = folder / name.format(i + 1)
        fabio.cbfimage.CbfImage(data=frame).write(str(p))
        paths.append(p)
    return paths


def test_natural_key():
    names = ["f_10.cbf", "f_2.cbf", "f_1.cbf", "g_1.cbf"]
    assert sorted(names, key=natural_key) == ["f_1.cbf", "f_2.cbf", "f_10.cbf", "g_1.cbf"]


def test_cbf_frames_natural_order_and_readonly(tmp_path):
    data = frames(12)
    paths = write_cbfs(tmp_path / "cbf", data)  # f_1 ... f_12: f_10 sorts after f_9
    before = [digest(p) for p in paths]
    with open_frames("cbf/f_*.cbf", base_dir=tmp_path, expected_frames=12) as st:
        assert st.kind == "files" and st.files == [str(p) for p in paths]
        assert (st.nframes, st.frame_shape, st.dtype) == (12, SHAPE, np.dtype(np.int32))
        np.testing.assert_array_equal(np.concatenate([b for _, b in st.iter_chunks(5)]), data)
        np.testing.assert_array_equal(st.read_frame(9), data[9])
        check_readable(st, "all")
        # frame files: a column file or cbf:FIELD (hklflow.raw.monitors), not a dataset
        with pytest.raises(RawDataError, match="/m: cannot read the monitor's column file"):
            st.read_monitor("/m", tmp_path)
    assert [digest(p) for p in paths] == before


def test_cbf_count_differs(tmp_path):
    write_cbfs(tmp_path / "cbf", frames(4))
    with pytest.raises(RawDataError, match=r"found 4 files, expected 6 frames"):
        open_frames("cbf/*.cbf", base_dir=tmp_path, expected_frames=6)


@pytest.mark.parametrize("damage", ["garbage", "truncate"])
def test_corrupt_cbf_names_the_file(tmp_path, damage):
    data = frames(5)
    paths = write_cbfs(tmp_path / "cbf", data)
    b = bytearray(open(paths[3], "rb").read())
    if damage == "garbage":  # CBF's MD5 catches what byte-offset decoding would not
        mid = len(b) - 400
        b[mid:mid + 50] = bytes(range(50))
    else:
        b = b[:len(b) // 2]
    open(paths[3], "wb").write(bytes(b))
    with open_frames("cbf/*.cbf", base_dir=tmp_path) as st:
        np.testing.assert_array_equal(st.read(0, 3), data[:3])
        with pytest.raises(RawDataError, match=r"f_4\.cbf: frame 3: .*(corrupt|truncated)"):
            st.read(0, 5)


def test_inconsistent_frame_shapes(tmp_path):
    paths = write_cbfs(tmp_path / "cbf", frames(3))
    fabio.cbfimage.CbfImage(data=frames(1, (30, 23))[0]).write(str(paths[1]))
    with open_frames("cbf/*.cbf", base_dir=tmp_path) as st:
        with pytest.raises(RawDataError, match=r"f_2\.cbf: frame 1: shape \(30, 23\), "
                                               r"expected \(31, 23\)"):
            check_readable(st, "all")


def test_tiff_frames(tmp_path):
    data = frames(3)
    for i, fr in enumerate(data):
        fabio.tifimage.TifImage(data=fr).write(str(tmp_path / f"im{i}.tif"))
    with open_frames(os.path.join(str(tmp_path), "im*.tif"), expected_frames=3) as st:
        np.testing.assert_array_equal(st.read(0, 3), data)



def test_frame_reader_of_one_thread_reads_in_the_callers_thread_when_asked():
    """A step of one thread reads each chunk itself, when it asks for it (the chunk is then
    still in the processor's cache); from READ_AHEAD_THREADS threads a thread of its own
    reads ahead.  Either way an error comes out of result()."""
    import threading

    from hklflow.raw.frames import READ_AHEAD_THREADS, frame_reader

    calls = []

    def read(i):
        calls.append((i, threading.current_thread()))
        if i < 0:
            raise OSError("damaged chunk")
        return i * 10

    with frame_reader(1) as reader:
        pending = reader.submit(read, 3)
        assert calls == []  # not read yet
        assert pending.result() == 30 and pending.result() == 30
        assert calls == [(3, threading.current_thread())]
        with pytest.raises(OSError, match="damaged chunk"):
            reader.submit(read, -1).result()
    calls.clear()
    with frame_reader(READ_AHEAD_THREADS) as reader:
        assert reader.submit(read, 2).result() == 20
    assert calls[0][1] is not threading.current_thread()


def test_frames_as_stored_only_where_each_is_a_bitshuffle_lz4_chunk(tmp_path, monkeypatch):
    """read_compressed gives the frames' own bitshuffle-LZ4 chunks (decompressed: the frames
    read) where every frame is a chunk of its own and the steps' compiled decompression is
    asked for, across files; None otherwise (then the frames are read), and None with the
    library codec (HKLFLOW_CODEC=library: no kernel decodes them block by block)."""
    from hklflow.codec import block_count, choice
    from hklflow.codec.compiled import block_positions, decompress_elements
    from hklflow.raw.frames import open_frames

    rng = np.random.default_rng(0)
    frames = rng.poisson(4, (6, 30, 41)).astype(np.int32)
    layouts = {"a.h5": ((1, 30, 41), hdf5plugin.Bitshuffle(cname="lz4")),
               "b.h5": ((1, 30, 41), hdf5plugin.Bitshuffle(cname="lz4")),
               "two.h5": ((2, 30, 41), hdf5plugin.Bitshuffle(cname="lz4")),
               "gzip.h5": ((1, 30, 41), {"compression": "gzip"})}
    for name, (chunks, filters) in layouts.items():
        with h5py.File(tmp_path / name, "w") as f:
            part = frames[:3] if name in ("a.h5", "b.h5") else frames
            f.create_dataset("/entry/data/data", data=part + (name == "b.h5"), chunks=chunks,
                             **filters)
    expected = np.concatenate([frames[:3], frames[:3] + 1])
    with open_frames(str(tmp_path / "[ab].h5")) as st:
        assert st.read_compressed(1, 5) is None  # not asked for
        st.compiled_decompression = True
        stored = st.read_compressed(1, 5)
        assert len(stored) == 4 and stored.first == 1 and stored.elements == 30 * 41
        assert [os.path.basename(f) for f in stored.files] == ["a.h5", "a.h5", "b.h5", "b.h5"]
        positions = np.empty((4, block_count(stored.elements, stored.block) + 1), np.int64)
        assert block_positions(stored.stream, stored.starts, stored.stops, stored.elements, 4,
                               stored.block, positions) == 0
        scratch = np.empty(stored.block * 4, np.uint8)
        for i in range(4):
            out = np.empty(stored.elements, np.int32)
            assert decompress_elements(stored.stream, positions[i], stored.elements, 4,
                                       stored.block, 0, stored.elements, out.view(np.uint8),
                                       scratch, False) == 0
            assert np.array_equal(out.reshape(30, 41), expected[1 + i])
    for name in ("two.h5", "gzip.h5"):
        with open_frames(str(tmp_path / name)) as st:
            st.compiled_decompression = True
            assert st.read_compressed(0, 4) is None
    monkeypatch.setenv("HKLFLOW_CODEC", "library")
    with open_frames(str(tmp_path / "[ab].h5")) as st:
        st.compiled_decompression = True
        assert st.read_compressed(1, 5) is None
        np.testing.assert_array_equal(st.read(1, 5), expected[1:5])
        assert st.frames_from_raw_chunks == 4  # read as raw chunks, by the library codec
    assert choice.active_codec().name == "library"


@pytest.mark.parametrize("compiled", [False, True])
def test_a_cut_or_corrupt_chunk_is_an_error_naming_file_and_frame(tmp_path, compiled):
    """A bitshuffle-LZ4 chunk cut short or with a flipped byte: a RawDataError naming the
    file and the frame, from either codec (bitshuffle's decoder, and HDF5's filter after
    it, would read past a cut chunk's end and crash the process)."""
    from hklflow.raw.frames import open_frames

    frames = np.random.default_rng(1).poisson(5, (3, 61, 47)).astype(np.int32)
    for damage in ("cut", "flip"):
        path = tmp_path / f"{damage}.h5"
        with h5py.File(path, "w") as f:
            d = f.create_dataset("/entry/data/data", data=frames, chunks=(1, 61, 47),
                                 **hdf5plugin.Bitshuffle(cname="lz4"))
            chunk = d.id.read_direct_chunk((1, 0, 0))[1]
            chunk = chunk[:len(chunk) // 2] if damage == "cut" else \
                chunk[:16] + bytes([chunk[16] ^ 0xFF]) + chunk[17:]
            d.id.write_direct_chunk((1, 0, 0), chunk)
        with open_frames(str(path)) as st:
            st.compiled_decompression = compiled
            assert np.array_equal(st.read(0, 1)[0], frames[0])
            with pytest.raises(RawDataError, match=rf"{damage}\.h5: frame 1 .*cannot be read or "
                                                   r"decompressed: .*chunk at \(1, 0, 0\).*damaged"):
                st.read(0, 3)
