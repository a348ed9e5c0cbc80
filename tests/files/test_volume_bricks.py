"""hklflow.files.volume_bricks: a transform's volumes written from its bricked grid, chunk
by chunk, as the slab path would write them."""
from __future__ import annotations

import h5py
import numpy as np
import pytest


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
    from hklflow.files.volume_bricks import write_volumes
    from hklflow.model.grid import Axis, Grid

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
