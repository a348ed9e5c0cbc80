"""Where the transform kernel's time goes on the 801^3 grid of bench/full_rotation.py: its
passes 1-2 (each pixel's voxel index and value) against pass 3 (the additions), per
rotation sub-step.

    python bench/transform_split.py [--large-run bench/.data/pipeline_2m_400f]
                                    [--points 801] [--rounds 7]

Adds the first 16 frames of entry f2 of bench/pipeline.py's large run (decompressed once,
in memory; both kinds, one thread) onto a --points^3 grid with the run's limits, with 1
sub-step for every block of pixels and with the largest count `subdivide: auto` takes,
alternating, --rounds rounds: the kernel as the step runs it (transform._accumulate) and the
same loop without its additions (passes 1-2 alone: transform._compute_block).  The
additions' share is the difference.  Also times pass 1 alone (transform._voxel_indices)
on one block of pixels held in L1, the arithmetic without memory traffic.  Prints CPU-ms
per frame (median and range).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numba
import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import (CHUNK_FRAMES, byte_compile_hklflow, cpu, machine_info,  # noqa: E402
                    machine_line)
from full_rotation import add_entry_f2_arguments, bragg_painted, entry_f2  # noqa: E402
from hklflow import transform as T  # noqa: E402


@numba.njit(nogil=True, error_model="numpy")
def _passes_1_2(frames, qx, qy, qz, corr, M, scale, value_max, bragg, bragg_blocks, allowed,
                allowed_off, hkl_r2, origin, inv_step, dims, nbricks, q_max, size, cells,
                second, live, sub_first, sub_count):
    """transform._accumulate's loop (no thread share) without pass 3: every unit's voxel
    indices and values computed, nothing added (returns a checksum, so nothing is left
    out by the compiler)."""
    dump = T._dump_slots(size, None)
    idx = np.empty(T.BLOCK, np.int32)
    val = np.empty(T.BLOCK, np.float32)
    punch = np.zeros(T.BLOCK, np.int32)
    nf, npix = frames.shape
    nsub = M.shape[1]
    total = 0.0
    for u in range(nf * nsub * ((npix + T.BLOCK - 1) // T.BLOCK)):
        f, j, p0, n = T._unit(u, nf, nsub, npix)
        b = p0 // T.BLOCK
        steps = sub_count[b]
        if live[b] == 0 or j < sub_first[b] or j >= sub_first[b] + steps:
            continue
        n = T._compute_block(u, steps, frames, qx, qy, qz, corr, M, scale, value_max, bragg,
                             bragg_blocks, allowed, allowed_off, hkl_r2, origin, inv_step,
                             dims, nbricks, q_max, size, second, dump, idx, val, punch)
        total += val[n - 1] + idx[n - 1]
    return total


@numba.njit(nogil=True, error_model="numpy")
def _pass_1_hot(reps, vb, qx, qy, qz, corr, B, c, t, value_max, dims, nbricks, dump, idx,
                val):
    """Pass 1 on the same block of pixels `reps` times (its data in L1)."""
    total = 0
    for r in range(reps):
        T._voxel_indices(0, 0, vb.size, vb, qx, qy, qz, corr, None, B, c, t, np.float32(1.0),
                         value_max, dims, nbricks, np.int32(0), dump, idx, val)
        total += idx[r % vb.size]
    return total


def pass_1_hot_ms(table, tr, frames, M, value_max, reps: int = 4000) -> float:
    """CPU-ms per frame of pass 1 alone, from one block of real pixels and values held in
    L1 (the first block with every pixel usable), at frame 0's first sub-step matrix."""
    npix = table.qx.size
    usable = (table.corr_all > 0)[:npix // T.BLOCK * T.BLOCK].reshape(-1, T.BLOCK).all(1)
    p0 = int(np.argmax(usable)) * T.BLOCK
    part = slice(p0, p0 + T.BLOCK)
    qx, qy, qz, corr = (np.ascontiguousarray(a[part]) for a in
                        (table.qx, table.qy, table.qz, table.corr_all))
    vb = np.ascontiguousarray(frames[0, part])
    acc = tr.acc
    m = M[0, 0] * acc.inv_step[:, None]
    o = 0.5 - acc.origin * acc.inv_step
    B = tuple(np.float32(x) for x in m.reshape(-1))
    c = tuple(np.float32(x) for x in o)
    t = (np.float32(0.4999),) * 3
    args = (vb, qx, qy, qz, corr, B, c, t, value_max, acc.dims,
            acc.nbricks, T._dump_slots(acc.size, None), np.empty(T.BLOCK, np.int32),
            np.empty(T.BLOCK, np.float32))
    _pass_1_hot(2, *args)
    best = np.inf
    for _ in range(3):
        c0 = cpu()
        _pass_1_hot(reps, *args)
        best = min(best, cpu() - c0)
    return best / reps / T.BLOCK * npix * 1e3


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_entry_f2_arguments(p)
    p.add_argument("--rounds", type=int, default=7)
    args = p.parse_args(argv)
    byte_compile_hklflow()
    from hklflow.frames import open_frame_source
    from hklflow.params import largest_trusted_value

    _, rec, ori, scan, mask, grid = entry_f2(args.large_run, args.points)
    table = T.pixel_table(scan.detector, mask.pixels)
    steps, move = T.block_sub_steps(scan, table, grid, ori.crystal().cell.parameters[:3])
    nf = min(CHUNK_FRAMES, rec.nframes)
    npix = table.qx.size
    bragg, painted = bragg_painted(mask, nf, npix)
    frames = open_frame_source(rec.frames).read(0, nf).reshape(nf, -1)
    counts = sorted({1, int(steps.max())})
    runs, hot = {}, {}
    for count in counts:
        tr = T.Transformer(grid, table, 1e9, kinds=("transform", "masked_transform"),
                           crystal=ori.crystal(), hkl_radius=mask.hkl_radius,
                           sub_steps=T.SubSteps.uniform(count, len(steps)))
        M = tr.matrices(scan, 0, nf, 1)
        acc = tr.acc
        kernel_args = (frames, table.qx, table.qy, table.qz, table.corr_all, M,
                       np.ones(nf), largest_trusted_value(tr.trusted_max, frames.dtype),
                       *tr._bragg_args(bragg, painted, nf), tr.allowed, tr.allowed_off,
                       tr.hkl_r2, acc.origin, acc.inv_step, acc.dims, acc.nbricks, tr.q_max,
                       acc.size, acc.kernel_cells, acc.second, tr.live,
                       *tr._sub_step_plan(M))
        runs[count] = {"whole kernel": lambda a=kernel_args: T._accumulate(*a),
                       "passes 1-2": lambda a=kernel_args: _passes_1_2(*a)}
        hot[count] = pass_1_hot_ms(table, tr, frames, M, kernel_args[7])
    times = {(count, name): [] for count in counts for name in runs[count]}
    for count in counts:  # the grids' first touch and the kernels' loading, not timed
        for call in runs[count].values():
            call()
    for _ in range(args.rounds):
        for count in counts:
            for name, call in runs[count].items():
                c0 = cpu()
                call()
                times[count, name].append((cpu() - c0) / nf * 1e3)
    print(machine_line(machine_info()))
    print(f"{nf} frames of {args.large_run.name}/f2 in memory onto {grid.describe()} (both "
          f"kinds, one thread); a pixel moves up to {move:.2f} voxels per frame; CPU-ms per "
          "frame, median (range)")
    for count in counts:
        whole = np.median(times[count, "whole kernel"])
        passes = np.median(times[count, "passes 1-2"])
        print(f"  {count} sub-step(s) for every block:")
        for name in runs[count]:
            t = times[count, name]
            print(f"    {name:<14} {np.median(t):6.2f} ({min(t):.2f}-{max(t):.2f})")
        print(f"    {'pass 3':<14} {whole - passes:6.2f} (the difference)")
        print(f"    {'pass 1 in L1':<14} {hot[count] * count:6.2f} ({hot[count]:.2f} a sub-step)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
