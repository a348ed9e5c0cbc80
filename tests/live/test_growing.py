"""hklflow.live.growing: complete frames of raw scans that another process is still writing.

Writers run in subprocesses (as a detector would), stepped through stdin so that every
observation is made at a known point of the write; one SWMR writer runs freely."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from dataclasses import replace

import h5py
import numpy as np
import pytest

from hklflow.base.errors import RawDataError
from hklflow.live import growing
from hklflow.live.growing import Observation, layout_of, observe, open_hdf5_for_reading

ROWS, COLS = 32, 40
FAST = dict(attempts=2, retry_delay=0.02)


def frame(value: int) -> np.ndarray:
    return np.full((ROWS, COLS), value, dtype=np.uint16)


# Writer scripts: each prints a line when it reaches a point, then waits for a line on
# stdin before going on (Stepper).
SWMR_WRITER = textwrap.dedent("""
    import sys, time, h5py, numpy as np
    path = sys.argv[1]
    blocks, per_block, pause = int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
    stepped = pause < 0
    f = h5py.File(path, "w", libver="latest", locking=False)
    ds = f.create_dataset("/entry/data/data", shape=(0, %d, %d), maxshape=(None, %d, %d),
                          chunks=(1, %d, %d), dtype="u2")
    f.swmr_mode = True
    print("created", flush=True)
    if stepped: sys.stdin.readline()
    for b in range(blocks):
        n = (b + 1) * per_block
        ds.resize(n, axis=0)
        for i in range(n - per_block, n):
            ds[i] = i + 1
        ds.flush()
        print("flushed", n, flush=True)
        if stepped: sys.stdin.readline()
        else: time.sleep(pause)
    f.close()
    print("closed", flush=True)
""" % ((ROWS, COLS) * 3))

EIGER_DATA_WRITER = textwrap.dedent("""
    import sys, h5py, numpy as np
    path, libver = sys.argv[1], sys.argv[5]
    low, n, written = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    f = h5py.File(path, "w", libver=libver, locking=False)
    ds = f.create_dataset("/entry/data/data", shape=(n, %d, %d), chunks=(1, %d, %d), dtype="u2")
    ds.attrs["image_nr_low"] = low
    ds.attrs["image_nr_high"] = low + n - 1
    for i in range(written):
        ds[i] = low + i
    f.flush()
    print("partial", flush=True)
    sys.stdin.readline()
    for i in range(written, n):
        ds[i] = low + i
    f.close()
    print("closed", flush=True)
""" % ((ROWS, COLS) * 2))

CBF_WRITER = textwrap.dedent("""
    import os, sys
    path, content = sys.argv[1], open(sys.argv[2], "rb").read()
    with open(path, "wb") as f:
        f.write(content[:len(content) // 2])
        f.flush(); os.fsync(f.fileno())
        print("half", flush=True)
        sys.stdin.readline()
        f.write(content[len(content) // 2:])
    print("closed", flush=True)
""")


class Stepper:
    """A writer subprocess: next() lets it go on to its next printed line."""

    def __init__(self, script: str, *args):
        env = dict(os.environ, HDF5_USE_FILE_LOCKING="FALSE")
        self.proc = subprocess.Popen([sys.executable, "-c", script, *map(str, args)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                     env=env)

    def line(self) -> str:
        text = self.proc.stdout.readline().strip()
        assert text, f"writer ended early: {self.proc.wait()}"
        return text

    def next(self) -> str:
        self.proc.stdin.write("\n")
        self.proc.stdin.flush()
        return self.line()

    def finish(self) -> None:
        self.proc.stdin.close()
        assert self.proc.wait(timeout=30) == 0

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def writers():
    started = []

    def start(script, *args):
        w = Stepper(script, *args)
        started.append(w)
        return w

    yield start
    for w in started:
        w.kill()


def write_stack(path, nframes, chunks=(1, ROWS, COLS), written=None, **kwargs):
    with h5py.File(path, "w") as f:
        ds = f.create_dataset("/entry/data/data", shape=(nframes, ROWS, COLS), dtype="u2",
                              chunks=chunks, **kwargs)
        for i in range(nframes if written is None else written):
            ds[i] = frame(i + 1)


def cbf_bytes(tmp_path, value: int = 1, shape=(ROWS, COLS)) -> bytes:
    import fabio.cbfimage

    scratch = tmp_path / f"scratch_{value}.cbf"
    data = (np.arange(shape[0] * shape[1]).reshape(shape) % 17 + value).astype(np.int32)
    fabio.cbfimage.CbfImage(data=data).write(str(scratch))
    content = scratch.read_bytes()
    scratch.unlink()
    return content


# --------------------------------------------------------------------------------------
# HDF5 stacks
# --------------------------------------------------------------------------------------
def test_swmr_stack_counts_every_flushed_frame_and_no_more(tmp_path, writers):
    path = tmp_path / "scan.h5"
    w = writers(SWMR_WRITER, path, 4, 3, -1)
    assert w.line() == "created"
    obs = observe("hdf5", str(path), "/entry/data/data", **FAST)
    assert obs.complete_frames == 0 and obs.files == ()
    for n in (3, 6, 9, 12):
        assert w.next() == f"flushed {n}"
        obs = observe("hdf5", str(path), "/entry/data/data", obs, **FAST)
        assert obs.complete_frames == n and obs.problem is None
        assert obs.files == (str(path),) and obs.frames_per_file == (n,)
        with open_hdf5_for_reading(path) as f:  # every counted frame reads back whole
            data = f["/entry/data/data"][:n]
        assert (data == np.arange(1, n + 1)[:, None, None]).all()
    assert w.next() == "closed"
    w.finish()
    final = observe("hdf5", str(path), "/entry/data/data", obs, **FAST)
    assert final.complete_frames == 12 and final.problem is None
    assert observe("hdf5", str(path), **FAST).complete_frames == 12  # afresh, all checked


def test_free_running_swmr_writer_counts_only_readable_frames(tmp_path, writers):
    path = tmp_path / "scan.h5"
    w = writers(SWMR_WRITER, path, 10, 4, 0.01)
    assert w.line() == "created"
    seen, obs = [], None
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        obs = observe("hdf5", str(path), "/entry/data/data", obs, **FAST)
        assert obs.problem is None
        k = obs.complete_frames
        assert not seen or k >= seen[-1]
        if k:
            with open_hdf5_for_reading(path) as f:
                ds = f["/entry/data/data"]
                ds.id.refresh()
                assert (ds[:k] == np.arange(1, k + 1)[:, None, None]).all()
        seen.append(k)
        if k == 40:
            break
    assert seen[-1] == 40
    w.proc.stdout.read()
    w.finish()


def test_chunks_of_several_frames_or_tiles_count_when_all_stored(tmp_path):
    several = tmp_path / "several.h5"
    write_stack(several, 10, chunks=(4, ROWS, COLS), written=8)  # frames 8, 9 unwritten
    assert observe("hdf5", str(several)).complete_frames == 8
    tiles = tmp_path / "tiles.h5"
    write_stack(tiles, 6, chunks=(1, ROWS // 2, COLS // 2))
    with h5py.File(tiles, "a") as f:  # frame 3 lacks its last tile: not written yet
        ds = f["/entry/data/data"]
        del f["/entry/data/data"]
        new = f.create_dataset("/entry/data/data", shape=ds.shape, dtype="u2",
                               chunks=(1, ROWS // 2, COLS // 2))
        new[:3] = 1
        new[3, :ROWS // 2] = 1
        new[3, ROWS // 2:, :COLS // 2] = 1
        new[4:] = 1
    assert observe("hdf5", str(tiles)).complete_frames == 3


def test_contiguous_closed_file_counts_whole(tmp_path):
    path = tmp_path / "contiguous.h5"
    with h5py.File(path, "w") as f:
        f["/entry/data/data"] = np.zeros((5, ROWS, COLS), np.uint16)
    assert observe("hdf5", str(path)).complete_frames == 5


def test_count_without_chunk_iteration_matches(tmp_path, monkeypatch):
    path = tmp_path / "scan.h5"
    write_stack(path, 7, written=5)
    with h5py.File(path, "r") as f:
        ds = f["/entry/data/data"]
        assert growing._stored_frames(ds) == 5

        class NoChunkIter:  # an older h5py: chunk by chunk
            def __init__(self, dsid):
                self._dsid = dsid

            def __getattr__(self, name):
                if name == "chunk_iter":
                    raise AttributeError(name)
                return getattr(self._dsid, name)

        class Wrapped:
            def __init__(self, ds):
                self.id, self.shape, self.chunks = NoChunkIter(ds.id), ds.shape, ds.chunks

        assert growing._stored_frames(Wrapped(ds)) == 5
        assert growing._stored_frames(Wrapped(ds), start=2) == 5


def test_open_modes_for_swmr_plain_and_in_process_files(tmp_path, writers):
    plain = tmp_path / "plain.h5"
    write_stack(plain, 3)
    with open_hdf5_for_reading(plain) as f:  # a plain file opens as an SWMR reader too
        assert f.swmr_mode and f["/entry/data/data"].shape[0] == 3
    with h5py.File(plain, "r", locking=False):  # held open here without SWMR: plain open
        with open_hdf5_for_reading(plain) as f:
            assert f["/entry/data/data"].shape[0] == 3
    growing_file = tmp_path / "growing.h5"
    w = writers(SWMR_WRITER, growing_file, 1, 2, -1)
    assert w.line() == "created" and w.next() == "flushed 2"
    with pytest.raises(OSError, match="already open for write"):  # why SWMR read is needed
        h5py.File(growing_file, "r", locking=False)
    with open_hdf5_for_reading(growing_file) as f:
        assert f["/entry/data/data"].shape[0] == 2
    with pytest.raises(RawDataError, match="does not exist"):
        open_hdf5_for_reading(tmp_path / "absent.h5")


def test_missing_dataset_and_wrong_shapes_are_errors(tmp_path):
    path = tmp_path / "scan.h5"
    write_stack(path, 3)
    with pytest.raises(RawDataError, match=r"scan.h5: no dataset /entry/other"):
        observe("hdf5", str(path), "/entry/other")
    with pytest.raises(RawDataError, match=r"scan.h5: frames of .* are \(32, 40\); expected"):
        observe("hdf5", str(path), frame_shape=(40, 32))
    with pytest.raises(RawDataError, match="pattern of HDF5 files"):
        observe("hdf5", str(tmp_path / "*.h5"))


# --------------------------------------------------------------------------------------
# Transient errors
# --------------------------------------------------------------------------------------
def test_files_being_created_give_no_frames_and_no_error(tmp_path):
    whole = tmp_path / "whole.h5"
    write_stack(whole, 4)
    content = whole.read_bytes()
    for name, part in (("empty.h5", b""), ("half.h5", content[:len(content) // 2])):
        path = tmp_path / name
        path.write_bytes(part)
        obs = observe("hdf5", str(path), **FAST)
        assert obs.complete_frames == 0 and obs.problem is None
        assert name in obs.waiting and "not readable yet" in obs.waiting
    absent = observe("hdf5", str(tmp_path / "absent.h5"), **FAST)
    assert absent.complete_frames == 0 and "does not exist yet" in absent.waiting


def test_transient_errors_are_retried_and_unknown_ones_raised(tmp_path, monkeypatch):
    path = tmp_path / "scan.h5"
    write_stack(path, 4)
    real_open = growing._open_hdf5
    failures = iter([OSError("Unable to open file (truncated file: eof = 96, "
                             "sblock->base_addr = 0, stored_eof = 2048)"),
                     OSError("Unable to open file (bad object header version number)")])

    def flaky(p):
        exc = next(failures, None)
        if exc is not None:
            raise exc
        return real_open(p)

    sleeps = []
    monkeypatch.setattr(growing.time, "sleep", sleeps.append)
    monkeypatch.setattr(growing, "_open_hdf5", flaky)
    assert observe("hdf5", str(path), attempts=3, retry_delay=0.5).complete_frames == 4
    assert sleeps == [0.5, 0.5]

    def broken(p):
        raise OSError("Unable to open file (something nobody has seen)")

    monkeypatch.setattr(growing, "_open_hdf5", broken)
    with pytest.raises(RawDataError, match=r"scan.h5: cannot read as HDF5.*nobody has seen"):
        observe("hdf5", str(path))


def test_unreadable_moment_keeps_the_count_already_seen(tmp_path, monkeypatch):
    path = tmp_path / "scan.h5"
    write_stack(path, 5)
    before = observe("hdf5", str(path))

    def busy(p):
        raise OSError("Unable to open file (address of object past end of allocation)")

    monkeypatch.setattr(growing, "_open_hdf5", busy)
    now = observe("hdf5", str(path), previous=before, **FAST)
    assert now.complete_frames == 5 and now.problem is None and "past end" in now.waiting


# --------------------------------------------------------------------------------------
# Problems
# --------------------------------------------------------------------------------------
def test_replaced_or_truncated_stack_is_a_problem(tmp_path):
    path = tmp_path / "scan.h5"
    write_stack(path, 6)
    before = observe("hdf5", str(path))
    other = tmp_path / "other.h5"
    write_stack(other, 6)
    os.replace(other, path)
    replaced = observe("hdf5", str(path), previous=before)
    assert "replaced during acquisition" in replaced.problem and "scan.h5" in replaced.problem
    assert "not merged" in replaced.problem
    later = observe("hdf5", str(path), previous=replaced)
    assert later.problem == replaced.problem  # stays until observed afresh

    write_stack(path, 6)
    before = observe("hdf5", str(path))
    os.truncate(path, os.path.getsize(path) // 2)
    truncated = observe("hdf5", str(path), previous=before, **FAST)
    assert "truncated or replaced" in truncated.problem
    assert truncated.complete_frames == 0


def test_fewer_frames_than_before_is_a_problem(tmp_path):
    path = tmp_path / "scan.h5"
    write_stack(path, 6)
    before = observe("hdf5", str(path))
    shrunk = replace(before, complete_frames=9, files=(), frames_per_file=(), identity=())
    now = observe("hdf5", str(path), previous=shrunk)
    assert now.problem.startswith(f"{path}: 6 complete frames now, 9 before: truncated")


def test_previous_of_another_scan_is_refused(tmp_path):
    path = tmp_path / "scan.h5"
    write_stack(path, 2)
    obs = observe("hdf5", str(path))
    with pytest.raises(ValueError, match="previous observation"):
        observe("hdf5", str(tmp_path / "other.h5"), previous=obs)


# --------------------------------------------------------------------------------------
# Eiger
# --------------------------------------------------------------------------------------
def write_eiger_master(folder, prefix, nfiles, nimages, ntrigger=1):
    with h5py.File(folder / f"{prefix}_master.h5", "w") as f:
        for k in range(1, nfiles + 1):
            f[f"/entry/data/data_{k:06d}"] = h5py.ExternalLink(
                f"{prefix}_data_{k:06d}.h5", "/entry/data/data")
        spec = f.create_group("/entry/instrument/detector/detectorSpecific")
        spec["nimages"] = nimages
        spec["ntrigger"] = ntrigger


def write_eiger_data(path, low, n):
    with h5py.File(path, "w") as f:
        ds = f.create_dataset("/entry/data/data", shape=(n, ROWS, COLS), dtype="u2",
                              chunks=(1, ROWS, COLS))
        ds.attrs["image_nr_low"] = low
        ds.attrs["image_nr_high"] = low + n - 1
        for i in range(n):
            ds[i] = frame(low + i)


@pytest.mark.parametrize("libver", ["earliest", "latest"])
def test_eiger_counts_closed_data_files_in_order(tmp_path, writers, libver):
    write_eiger_master(tmp_path, "s", 3, nimages=5, ntrigger=2)
    master = str(tmp_path / "s_master.h5")
    obs = observe("eiger", master, **FAST)
    assert (obs.complete_frames, obs.planned_frames, obs.files) == (0, 10, ())
    assert "s_data_000001.h5: does not exist yet" in obs.waiting
    write_eiger_data(tmp_path / "s_data_000001.h5", 1, 4)
    w = writers(EIGER_DATA_WRITER, tmp_path / "s_data_000002.h5", 5, 4, 2, libver)
    assert w.line() == "partial"  # two of its four frames written, file open
    obs = observe("eiger", master, None, obs, **FAST)
    assert obs.complete_frames == 4 and obs.files == (str(tmp_path / "s_data_000001.h5"),)
    assert "s_data_000002.h5" in obs.waiting
    assert w.next() == "closed"
    w.finish()
    obs = observe("eiger", master, None, obs, **FAST)
    assert obs.complete_frames == 8 and obs.frames_per_file == (4, 4)
    assert "s_data_000003.h5: does not exist yet" in obs.waiting
    write_eiger_data(tmp_path / "s_data_000003.h5", 9, 2)
    obs = observe("eiger", master, None, obs, **FAST)
    assert (obs.complete_frames, obs.planned_frames, obs.waiting) == (10, 10, None)
    assert obs.problem is None


def test_eiger_data_file_out_of_sequence_is_an_error(tmp_path):
    write_eiger_master(tmp_path, "s", 2, nimages=8)
    write_eiger_data(tmp_path / "s_data_000001.h5", 1, 4)
    write_eiger_data(tmp_path / "s_data_000002.h5", 7, 4)
    with pytest.raises(RawDataError, match=r"s_data_000002.h5: holds frames 7 to 10; "
                                           r"expected them to start at frame 5"):
        observe("eiger", str(tmp_path / "s_master.h5"))


def test_eiger_replaced_data_file_is_a_problem(tmp_path):
    write_eiger_master(tmp_path, "s", 1, nimages=4)
    data = tmp_path / "s_data_000001.h5"
    write_eiger_data(data, 1, 4)
    before = observe("eiger", str(tmp_path / "s_master.h5"))
    write_eiger_data(tmp_path / "new.h5", 1, 4)
    os.replace(tmp_path / "new.h5", data)
    now = observe("eiger", str(tmp_path / "s_master.h5"), None, before)
    assert now.complete_frames == 4 and "replaced during acquisition" in now.problem


# --------------------------------------------------------------------------------------
# CBF
# --------------------------------------------------------------------------------------
def test_cbf_half_written_file_is_not_counted(tmp_path, writers):
    content = cbf_bytes(tmp_path)
    for k in (1, 2, 3):
        (tmp_path / f"f_{k:05d}.cbf").write_bytes(content)
    whole = tmp_path / "whole.cbf.bin"
    whole.write_bytes(content)
    pattern = str(tmp_path / "f_*.cbf")
    w = writers(CBF_WRITER, tmp_path / "f_00004.cbf", whole)
    assert w.line() == "half"
    obs = observe("cbf", pattern, frame_shape=(ROWS, COLS))
    assert obs.complete_frames == 3 and "f_00004.cbf: binary section not complete" in obs.waiting
    assert w.next() == "closed"
    w.finish()
    obs = observe("cbf", pattern, None, obs, frame_shape=(ROWS, COLS))
    assert obs.complete_frames == 4 and obs.waiting is None
    assert obs.files == tuple(str(tmp_path / f"f_{k:05d}.cbf") for k in (1, 2, 3, 4))


def test_cbf_partial_header_gap_and_shape(tmp_path):
    content = cbf_bytes(tmp_path)
    marker = content.find(growing.CBF_BINARY_MARKER)
    pattern = str(tmp_path / "f_*.cbf")
    (tmp_path / "f_1.cbf").write_bytes(content)
    (tmp_path / "f_2.cbf").write_bytes(content[:marker - 10])  # header still being written
    assert observe("cbf", pattern).complete_frames == 1
    binary_end = marker + 4 + 1280  # fabio's X-Binary-Size for these frames
    assert f"X-Binary-Size: {binary_end - marker - 4}".encode() in content
    (tmp_path / "f_2.cbf").write_bytes(content[:binary_end - 1])  # one byte short
    assert observe("cbf", pattern).complete_frames == 1
    (tmp_path / "f_2.cbf").write_bytes(content[:binary_end])  # only the trailer missing
    assert observe("cbf", pattern).complete_frames == 2
    (tmp_path / "f_4.cbf").write_bytes(content)  # frame 3 missing: 4 cannot count yet
    obs = observe("cbf", pattern)
    assert obs.complete_frames == 2 and "missing" in obs.waiting
    (tmp_path / "f_3.cbf").write_bytes(content)
    assert observe("cbf", pattern).complete_frames == 4
    with pytest.raises(RawDataError, match=r"f_1.cbf: frame of 32 x 40 pixels.*expected 40 x 32"):
        observe("cbf", pattern, frame_shape=(COLS, ROWS))
    (tmp_path / "g_1.cbf").write_bytes(b"not a cbf" * 10)
    assert observe("cbf", str(tmp_path / "g_*.cbf")).complete_frames == 0
    (tmp_path / "g_1.cbf").write_bytes(content.replace(b"X-Binary-Size:", b"X-Other-Size:"))
    with pytest.raises(RawDataError, match="g_1.cbf: not a CBF frame file: no X-Binary-Size"):
        observe("cbf", str(tmp_path / "g_*.cbf"))


def test_cbf_replaced_or_deleted_file_is_a_problem(tmp_path):
    content = cbf_bytes(tmp_path)
    for k in (1, 2, 3):
        (tmp_path / f"f_{k}.cbf").write_bytes(content)
    pattern = str(tmp_path / "f_*.cbf")
    before = observe("cbf", pattern)
    (tmp_path / "new.cbf.tmp").write_bytes(cbf_bytes(tmp_path, value=2))
    os.replace(tmp_path / "new.cbf.tmp", tmp_path / "f_2.cbf")
    assert "f_2.cbf: another file now" in observe("cbf", pattern, None, before).problem
    before = observe("cbf", pattern)
    (tmp_path / "f_3.cbf").unlink()
    now = observe("cbf", pattern, None, before)
    assert now.complete_frames == 2 and "f_3.cbf: gone" in now.problem


def test_cbf_unchanged_files_are_not_read_again(tmp_path, monkeypatch):
    content = cbf_bytes(tmp_path)
    for k in (1, 2):
        (tmp_path / f"f_{k}.cbf").write_bytes(content)
    pattern = str(tmp_path / "f_*.cbf")
    before = observe("cbf", pattern)
    (tmp_path / "f_3.cbf").write_bytes(content)
    read = []
    real = growing._cbf_binary_end
    monkeypatch.setattr(growing, "_cbf_binary_end",
                        lambda path, *a: read.append(os.path.basename(path)) or real(path, *a))
    assert observe("cbf", pattern, None, before).complete_frames == 3
    assert read == ["f_3.cbf"]


# --------------------------------------------------------------------------------------
# Layouts and storage
# --------------------------------------------------------------------------------------
def test_layout_of_scans_table_data():
    assert layout_of("raw/s1_master.h5") == "eiger"
    assert layout_of("raw/S1_MASTER.H5") == "eiger"
    assert layout_of("raw/f1.h5") == "hdf5"
    assert layout_of("raw/f1.nxs") == "hdf5"
    assert layout_of("raw/s1/f_*.cbf") == "cbf"
    assert layout_of("raw/s1/f_*.tif") == "files"
    with pytest.raises(RawDataError, match="cannot tell when these frame files are complete"):
        observe("files", "raw/s1/f_*.tif")
    with pytest.raises(ValueError, match="unknown layout"):
        observe("zip", "raw/x")


def test_observation_round_trips_through_json(tmp_path):
    write_eiger_master(tmp_path, "s", 2, nimages=8)
    write_eiger_data(tmp_path / "s_data_000001.h5", 1, 4)
    obs = observe("eiger", str(tmp_path / "s_master.h5"), **FAST)
    back = Observation.from_dict(json.loads(json.dumps(obs.to_dict())))
    assert back == obs
    assert observe("eiger", str(tmp_path / "s_master.h5"), None, back, **FAST) == obs
    with pytest.raises(ValueError, match="lacks"):
        Observation.from_dict({"layout": "cbf"})
