"""Step transform_frames: a frame range of a scan entry onto the sample's grid, from the
files of the earlier steps, with the settings the Snakefile passes."""
from __future__ import annotations

import json
import shutil

import h5py
import hdf5plugin
import numpy as np
import pytest

from hklflow.algorithms.transform import frame_scale
from hklflow.base.errors import ConfigError, RawDataError
from hklflow.files.volume import read_volume
from hklflow.steps.transform_frames import parse_frames

from conftest import run_step, step_settings


def test_monitor_normalisation_and_frame_ranges():
    mon = np.array([100.0, 200.0, 50.0, 100.0])
    s, ref = frame_scale(mon, None, 1, 4)
    assert ref == 100.0 and s.tolist() == [0.5, 2.0, 1.0]  # median reference
    s, ref = frame_scale(mon, 1000.0, 0, 2)
    assert s.tolist() == [10.0, 5.0]
    assert frame_scale(None, None, 0, 3)[0].tolist() == [1, 1, 1]
    # a bad monitor value: the job stops naming the raw file of the frame and the way out
    bad = np.array([100.0, 0.0, np.nan, 300.0])
    with pytest.raises(RawDataError, match=r"raw/f1\.h5: the monitor is <= 0 or not finite at 2 "
                                           r"frame\(s\) \[1, 2\].*bad_monitor_frames: leave_out"):
        frame_scale(bad, None, 0, 4, "fail", lambda i: "raw/f1.h5")
    # or they are left out (NaN) and the reference is the median of the good ones
    s, ref = frame_scale(bad, None, 1, 4, "leave_out", lambda i: "raw/f1.h5")
    assert ref == 200.0 and np.isnan(s[:2]).all() and s[2] == 200.0 / 300.0
    with pytest.raises(RawDataError, match="raw/f1.h5: the monitor is <= 0 or not finite on every frame"):
        frame_scale(np.zeros(3), None, 0, 3, "leave_out", lambda i: "raw/f1.h5")
    assert parse_frames("10:20", 60) == (10, 20) and parse_frames(None, 60) == (0, 60)
    assert parse_frames("00010-00020", 60) == (10, 20)  # as in the job's file name
    for bad in ("20:10", "0:61", "x"):
        with pytest.raises(ConfigError, match="--frames"):
            parse_frames(bad, 60)


@pytest.mark.slow
def test_monitor_normalisation_through_ingest_and_transform(tiny_run, tmp_path):
    """A scan whose odd frames were counted with twice the flux (monitor 2, frames x 2) gives
    the same volume as the original scan (monitor 1 everywhere) once normalised: the scans
    table's monitor column -> ingest -> scan.nxs -> transform."""
    d = tiny_run[0]
    assert tiny_run[1].returncode == 0
    exp = tmp_path / "exp"
    shutil.copytree(d / "config", exp / "config")
    with h5py.File(d / "raw/tiny/300K/f1.h5", "r") as f:
        frames = f["/entry/data/data"][()]
    monitor = np.where(np.arange(len(frames)) % 2 == 1, 2.0, 1.0)
    boosted = np.where(frames >= 0, frames * monitor[:, None, None].astype(np.int32), frames)
    (exp / "raw").mkdir()
    for name, data, mon in (("plain.h5", frames, np.ones(len(frames))), ("boosted.h5", boosted, monitor)):
        with h5py.File(exp / "raw" / name, "w") as f:
            f.create_dataset("/entry/data/data", data=data, chunks=(1,) + data.shape[1:],
                             **hdf5plugin.Bitshuffle(cname="lz4"))
            f["/entry/monitor"] = mon
    table = (exp / "config/scans.tsv").read_text().splitlines()
    header = table[0].split("\t") + ["monitor"]
    row = dict(zip(table[0].split("\t"), next(r for r in table[1:] if r.startswith("tiny\t300\tf1")).split("\t")))
    res = d / "results"
    out = {}
    for name in ("plain", "boosted"):
        row.update(data=f"raw/{name}.h5", monitor="/entry/monitor")
        (exp / "config/scans.tsv").write_text("\t".join(header) + "\n"
                                              + "\t".join(str(row.get(h, "")) for h in header) + "\n")
        r = run_step(exp, "ingest_scan", "--settings",
                     step_settings(exp, "ingest_scan", "tiny", "300K", "f1"),
                     "--poni", res / "calibration/ceo2/geometry.poni",
                     "--version", res / "calibration/ceo2/version.json", "--out", f"{name}.nxs")
        assert r.returncode == 0, r.stderr[-2000:]
        settings = json.loads(step_settings(exp, "transform_frames"))
        settings["transform"]["kinds"] = ["transform"]  # one kind: one --out
        settings = json.dumps(settings)
        r = run_step(exp, "transform_frames", "--settings", settings,
                     "--scan", f"{name}.nxs", "--orientation", res / "tiny/300K/orientation.nxs",
                     "--grid", res / "tiny/grid.json", "--mask", res / "tiny/300K/f1/mask.nxs",
                     "--frames", "0:20", "--out", f"{name}_volume.nxs")
        assert r.returncode == 0, r.stderr[-2000:]
        out[name] = read_volume(exp / f"{name}_volume.nxs")
    p, b = out["plain"], out["boosted"]
    assert np.array_equal(p.weight, b.weight) and p.weight.sum() > 0
    # plain: monitor 1 everywhere (reference = median 1); boosted: reference 1.5, frames
    # with monitor 2 doubled: every frame's corrected intensity is 1.5 x the plain one
    assert b.notes["monitor_reference"] == 1.5 and p.notes["monitor_reference"] == 1.0
    np.testing.assert_allclose(b.signal, 1.5 * p.signal, rtol=1e-5, atol=1e-3)
    # both kinds, listed in the other order than the grid holds them: each file its own kind
    settings = json.loads(step_settings(exp, "transform_frames"))
    settings["transform"]["kinds"] = ["masked_transform", "transform"]
    r = run_step(exp, "transform_frames", "--settings", json.dumps(settings),
                 "--scan", "plain.nxs", "--orientation", res / "tiny/300K/orientation.nxs",
                 "--grid", res / "tiny/grid.json", "--mask", res / "tiny/300K/f1/mask.nxs",
                 "--frames", "0:20", "--out", "masked.nxs", "unmasked.nxs")
    assert r.returncode == 0, r.stderr[-2000:]
    t, m = read_volume(exp / "unmasked.nxs"), read_volume(exp / "masked.nxs")
    assert (t.kind, m.kind) == ("transform", "masked_transform")
    # (the transform is the masked kind's sum plus the left-out pixels': equal to its own
    # pass up to the float32 rounding of each sum of n >= 0 terms, n 2^-24 relatively)
    assert np.array_equal(t.weight, p.weight)  # (sums of halves: exact)
    bound = 2 * 2.0 ** -24 * (p.weight * t.notes["subdivide"] + 1) * p.signal
    assert (np.abs(t.signal - p.signal) <= bound).all() and p.signal.sum() > 0
    assert m.weight.sum() < t.weight.sum()  # the Bragg regions left out
    # subdivide auto_per_block: each block of pixels its own sub-steps, the same weight in all
    settings["transform"].update(kinds=["transform"], subdivide="auto_per_block")
    r = run_step(exp, "transform_frames", "--settings", json.dumps(settings),
                 "--scan", "plain.nxs", "--orientation", res / "tiny/300K/orientation.nxs",
                 "--grid", res / "tiny/grid.json", "--mask", res / "tiny/300K/f1/mask.nxs",
                 "--frames", "0:20", "--out", "per_block.nxs")
    assert r.returncode == 0, r.stderr[-2000:]
    b = read_volume(exp / "per_block.nxs")
    assert sum(b.notes["subdivide_blocks"].values()) == sum(p.notes["subdivide_blocks"].values())
    assert max(map(int, b.notes["subdivide_blocks"])) == b.notes["subdivide"]
    assert b.weight.sum() == pytest.approx(p.weight.sum(), rel=1e-3)


@pytest.mark.parametrize("nkinds, paired", [(1, False), (2, False), (2, True)])
@pytest.mark.parametrize("whole", [True, False])
def test_volumes_go_from_the_bricks_into_the_chunks_as_slabs_would_write_them(
        tmp_path, monkeypatch, nkinds, paired, whole):
    """write_volumes stores each chunk straight from the bricks: the files hold the same
    stored chunks, byte for byte, as the slab path (BrickedGrid.slabs into VolumeWriter.
    write), and the same counts; chunks of unwritten bricks, of written zeros, edge chunks
    on every axis, a -0.0 signal, a signal of 0 with a weight, writers in another order than
    the grid's kinds, chunks alike in both kinds (compressed once) and chunks that differ
    in one voxel or in the sign of a zero alone; and without bitshuffle's library, HDF5's
    filter writes the same values.  Rows of chunks written on three threads: the same
    chunks, byte for byte, and the same totals."""
    import types

    from hklflow.algorithms.transform import KINDS, BrickedGrid
    from hklflow.files.volume import VolumeWriter
    from hklflow.model.grid import Axis, Grid
    from hklflow.steps.transform_frames import write_volumes

    grid = Grid(Axis(0, 1, 150), Axis(0, 1, 70), Axis(0, 1, 21))  # chunks 8 x 64 x 64
    kinds = KINDS[:nkinds]

    def made():
        g = BrickedGrid(grid, nkinds, paired=paired)
        rng = np.random.default_rng(5)
        # chunk rows 0 and 1 anywhere; in the last (an edge row) the corner chunk alone
        l, k, h = (np.concatenate([rng.integers(0, a, 400), rng.integers(b, n, 10)])
                   for a, b, n in zip((16, 70, 150), (16, 64, 128), grid.shape))
        for part in range(nkinds):  # (paired: the parts, not the kinds)
            s, w = g.signals[part], g.weights[part]
            flat = _bricked_index(g, l, k, h)
            if paired and part == 1:  # left-out pixels, but not in the last L row
                flat = flat[l < 16]
            w[flat] = rng.integers(1, 4, flat.size) * (0.5 + part)
            s[flat] = rng.random(flat.size) * 100
            s[flat[:5]] = 0.0  # a signal of 0 with a weight
            s[flat[5]] = -0.0
            w[flat[6]] = 0.0  # and a signal without one
        if nkinds == 2:
            # both kinds alike in chunk row 0 (compressed once, stored twice) but for a
            # weight in its first chunk and a -0.0 against a 0.0 in its second (equal floats)
            ll, kk, hh = (a.ravel() for a in np.meshgrid(np.arange(8), np.arange(70),
                                                        np.arange(150), indexing="ij"))
            row = _bricked_index(g, ll, kk, hh)
            if paired:  # (written zeros in the second part: a sum equal to the first)
                g.signals[1][row] = 0.0
                g.weights[1][row] = 0.0
            else:
                g.signals[1][row] = g.signals[0][row]
                g.weights[1][row] = g.weights[0][row]
            g.weights[1][_bricked_index(g, 1, 2, 3)] += 1.0
            g.signals[0][_bricked_index(g, 2, 3, 70)] = -0.0
            g.signals[1][_bricked_index(g, 2, 3, 70)] = 0.0
        # a written brick of zeros alone (its chunk is not stored), far from the others
        g.cells[0][: g.stride * 8] = 0.0
        return g

    def files(name, reverse=False):
        order = kinds[::-1] if reverse else kinds
        return [VolumeWriter(tmp_path / name / f"{kind}.nxs", grid, kind, intensity=whole)
                for kind in order]

    g = made()
    tr = types.SimpleNamespace(acc=g, kinds=kinds, slabs=g.slabs)
    twins, write_chunk = [], VolumeWriter.write_chunk

    def spy(self, *args, twin=None, **kwargs):
        counts = write_chunk(self, *args, twin=twin, **kwargs)
        twins.append(twin is not None)  # (a chunk written)
        return counts
    monkeypatch.setattr(VolumeWriter, "write_chunk", spy)
    writers = files("chunks", reverse=True)
    for w in writers:
        w.__enter__()
    write_volumes(tr, writers)
    l0, _, row = next(g.chunk_rows(writers[0].chunks, whole))
    k0, h0, chunk = next(row)
    with pytest.raises(ValueError, match="another file"):  # nothing written twice
        writers[0].write_chunk(l0, k0, h0, *chunk[0], twin=writers[0])
    for w in writers:
        w.__exit__(None, None, None)
    slab_writers = files("slabs")
    for w in slab_writers:
        w.__enter__()
    for l0 in range(0, 21, 5):  # slabs out of step with the chunks
        for w, (s, wt) in zip(slab_writers, g.slabs(l0, min(l0 + 5, 21))):
            w.write(l0, s, wt)
    for w in slab_writers:
        w.__exit__(None, None, None)
    filter_writers = files("filter")
    for w in filter_writers:
        w.__enter__()
        w._chunk_writer.codec = None  # no bitshuffle package: HDF5's filter
    write_volumes(tr, filter_writers)
    for w in filter_writers:
        w.__exit__(None, None, None)
    monkeypatch.setattr(VolumeWriter, "write_chunk", write_chunk)  # (twins counted above)
    threads_writers = files("threads")  # its rows of chunks on three threads
    for w in threads_writers:
        w.__enter__()
    write_volumes(tr, threads_writers, threads=3)
    for w in threads_writers:
        w.__exit__(None, None, None)
    counts = {}
    for w, v, t in zip(writers[::-1], slab_writers, threads_writers):
        assert w.kind == v.kind == t.kind
        assert (w.measured, w.weight_sum) == (v.measured, v.weight_sum) and w.measured > 0
        assert w.signal_sum == pytest.approx(v.signal_sum, rel=1e-12)
        assert (t.measured, t.weight_sum, t.signal_sum) == (w.measured, w.weight_sum,
                                                             w.signal_sum)
        counts[w.kind] = w.weight_sum
    if nkinds == 2:
        assert counts["transform"] != counts["masked_transform"]  # each file its own kind
        # row 0: 4 of its 6 chunks alike, compressed once (paired: the corner chunk too)
        alike = 5 if paired else 4
        assert twins.count(True) == alike and twins.count(False) == 2 * 13 - 2 * alike
    names = ["signal_sum", "weight_sum"] + (["data"] if whole else [])
    for kind in kinds:
        with h5py.File(tmp_path / "chunks" / f"{kind}.nxs") as x, \
                h5py.File(tmp_path / "slabs" / f"{kind}.nxs") as y, \
                h5py.File(tmp_path / "filter" / f"{kind}.nxs") as z, \
                h5py.File(tmp_path / "threads" / f"{kind}.nxs") as t:
            assert ("data" in x[f"entry/{kind}"]) == whole
            for name in names:
                a, b = x[f"entry/{kind}/{name}"], y[f"entry/{kind}/{name}"]
                c = t[f"entry/{kind}/{name}"]
                stored = {a.id.get_chunk_info(i).chunk_offset for i in range(a.id.get_num_chunks())}
                for other in (b, c):
                    assert stored == {other.id.get_chunk_info(i).chunk_offset
                                      for i in range(other.id.get_num_chunks())}
                assert len(stored) == 13  # of 18: five of the last row empty
                for offset in stored:
                    assert a.id.read_direct_chunk(offset) == b.id.read_direct_chunk(offset) \
                        == c.id.read_direct_chunk(offset)
                assert np.array_equal(a[()].view(np.uint32), z[f"entry/{kind}/{name}"][()]
                                      .view(np.uint32))


def _bricked_index(g, l, k, h):
    """The cell of voxels (l, k, h) in a BrickedGrid's signal and weight views."""
    b = g.brick
    bk, bh = int(g.nbricks[1]), int(g.nbricks[2])
    brick = ((l // b) * bk + k // b) * bh + h // b
    return brick * b ** 3 + ((l % b) * b + k % b) * b + h % b


def test_parts_of_a_scan_in_progress_say_so_and_complete_ones_say_nothing(tiny_300k, tmp_path,
                                                                         monkeypatch):
    """The parts of a scan still being collected record in their notes what part of it they
    hold (hklflow.pictures.preview), and the mask's picture says it; a complete scan's parts
    record nothing about previews."""
    from hklflow.files.grid import write_grid_file
    from hklflow.files.scan import read_scan_file
    from hklflow.files.volume import read_volume_header
    from hklflow.model.grid import Axis, Grid
    from hklflow.steps import mask_scan, transform_frames

    from conftest import record_pictures
    from experiment_helpers import in_progress

    titles = []
    record_pictures(monkeypatch, lambda fig: titles.append(fig._suptitle.get_text()))
    monkeypatch.chdir(tiny_300k)
    d = tiny_300k / "results/tiny/300K"
    n = read_scan_file(d / "f2/scan.nxs").nframes
    scans = {"complete": d / "f2/scan.nxs",
             "preview": in_progress(tiny_300k, d / "f2/scan.nxs", tmp_path / "scan.nxs", 4 * n)}
    write_grid_file(tmp_path / "grid.json", Grid(*(Axis(-4.0, 0.5, 17) for _ in range(3))), {})
    notes = {}
    for name, scan in scans.items():
        inputs = ["--scan", str(scan), "--orientation", str(d / "orientation.nxs")]
        mask = str(tmp_path / f"{name}_mask.nxs")
        assert mask_scan.main(["--settings", step_settings(tiny_300k, "mask_scan"), *inputs,
                               "--peaks", str(d / "f2/peaks.nxs"), "--out", mask,
                               "--png", str(tmp_path / f"{name}_mask.png")]) == 0
        out = [str(tmp_path / f"{name}_{kind}.nxs") for kind in ("transform", "masked")]
        assert transform_frames.main(["--settings", step_settings(tiny_300k, "transform_frames"),
                                      *inputs, "--grid", str(tmp_path / "grid.json"),
                                      "--mask", mask, "--frames", "0-4", "--out", *out]) == 0
        notes[name] = [read_volume_header(p).notes for p in out]
    assert titles[0].count("PREVIEW") == 0
    assert titles[1].endswith("\nPREVIEW: f2 25% of its frames")
    for part in notes["preview"]:
        assert part["landed"] == {"scan": "tiny/300K/f2", "frames": n, "planned": 4 * n}
        assert "provisional_orientation" not in part  # the orientation is of complete scans
    for part in notes["complete"]:
        assert "landed" not in json.dumps(part) and "provisional" not in json.dumps(part)
