"""The volumes of a transform written from its bricked grid (rule transform_frames): every
kind into its volume file (files.volume.VolumeWriter) from one pass over the bricks.  Apart
from files.volume, which holds the layout, the reader and the writer, so that each stays
under a thousand lines.

The transform is taken by what it offers, not by its class (the files floor imports no
algorithm): ``tr.kinds``, the kinds in the order of its grid; ``tr.acc``, its bricked grid
(``grid``, ``brick``, ``stride``, ``chunk_rows(chunks, intensity, rows)``: per row of L
chunks the chunks of every kind); ``tr.slabs(l0, l1, out)``: signal and weight (and
variance) of L planes [l0, l1) of every kind (hklflow.algorithms.transform.Transformer).
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .volume import VolumeWriter, same_chunk, slab_planes


def write_volumes(tr, writers: list[VolumeWriter], threads: int = 1) -> None:
    """The transformer's grid into the writers (one per kind of tr.kinds), every kind
    from one pass over the bricks: straight into the files' chunks (the chunks holding no
    written brick skipped unread: most of a scan's grid), rows of L chunks shared out
    between `threads` threads (gathering and compressing side by side, HDF5's stores one
    at a time; the files' data and totals the same whatever the threads), else, without
    bitshuffle's C library, slab by slab through HDF5's filter."""
    grid = tr.acc.grid
    by_kind = {w.kind: w for w in writers}
    if sorted(by_kind) != sorted(tr.kinds):
        raise ValueError(f"writers of {sorted(by_kind)} for a transform of {list(tr.kinds)}")
    writers = [by_kind[kind] for kind in tr.kinds]  # the grid's order, not the config's
    if tr.acc.variance:  # (issue 81) what the variance cells hold: variance_from
        variance_from = getattr(tr, "variance_from", "observed")
        for w in writers:
            w.notes["variance_from"] = variance_from
        if variance_from == "expected":  # the cells: gain x sum of a, per unit intensity
            if all(w.intensity for w in writers):  # complete volumes: their variance here
                _write_expected(tr, writers)
                return
            for w in writers:  # a part: summed with the others, then made the variance
                w.carry_variance_per_intensity()
    if all(w.writes_raw_chunks for w in writers):
        cl = writers[0].chunks[0]
        rows = list(range(0, grid.l.n, cl))
        threads = max(1, min(int(threads), len(rows)))
        row_counts = {}  # first plane -> per writer, the row's counts in chunk order

        def write_rows(mine):
            for l0, l1, chunks in tr.acc.chunk_rows(writers[0].chunks, writers[0].intensity,
                                                    mine):
                counts = [np.zeros(3) for _ in writers]
                for k0, h0, kinds in chunks:
                    if len(kinds) == 2 and same_chunk(*kinds):  # outside the Bragg regions
                        c = writers[0].write_chunk(l0, k0, h0, *kinds[0], twin=writers[1],
                                                   tally=False)
                        for total in counts:
                            total += c
                        continue
                    for w, chunk, total in zip(writers, kinds, counts):
                        total += w.write_chunk(l0, k0, h0, *chunk, tally=False)
                row_counts[l0] = counts
                for w in writers:
                    w.mark_written(l0, l1)

        if threads == 1:
            write_rows(rows)
        else:  # (every thread's rows spread over the grid: even shares)
            with ThreadPoolExecutor(threads, thread_name_prefix="write") as pool:
                list(pool.map(write_rows, [rows[i::threads] for i in range(threads)]))
        for l0 in rows:  # the totals in one order
            for w, counts in zip(writers, row_counts[l0]):
                w.tally(counts)
        return
    step = slab_planes(grid, multiple=tr.acc.brick)  # without the library: HDF5's filter
    slabs = [[np.empty((min(step, grid.l.n),) + grid.shape[1:], np.float32)
              for _ in range(tr.acc.stride)] for _ in writers]
    for l0 in range(0, grid.l.n, step):
        for w, arrays in zip(writers, tr.slabs(l0, min(l0 + step, grid.l.n), out=slabs)):
            w.write(l0, *arrays)


def _write_expected(tr, writers: list[VolumeWriter]) -> None:
    """Complete volumes of a transform whose variance cells hold gain x sum of a
    (reduction.transform.variance_from expected, a whole entry or a background in one
    job): slab by slab with the planes next to it, each voxel's variance formed from the
    expected counts (volume_kernels.variance_of_slab), what sum_chunks does for parts."""
    from .volume_kernels import EXPECTED_VARIANCE_HOW, variance_of_slab

    grid = tr.acc.grid
    nl = grid.l.n
    step = slab_planes(grid, multiple=tr.acc.brick)
    for w in writers:
        w.notes["variance_how"] = EXPECTED_VARIANCE_HOW
    out = np.empty((min(step, nl),) + grid.shape[1:], np.float32)
    for l0 in range(0, nl, step):
        l1 = min(l0 + step, nl)
        a, b = max(0, l0 - 1), min(nl, l1 + 1)  # (with the neighbouring planes)
        for w, (signal, weight, per_intensity) in zip(writers, tr.slabs(a, b)):
            v = variance_of_slab(signal, weight, per_intensity, first=l0 - a, n=l1 - l0,
                                 out=out[:l1 - l0])
            j = l0 - a
            w.write(l0, signal[j:j + l1 - l0], weight[j:j + l1 - l0], v)
