"""Rotation sub-steps per block of pixels against one count for every block, on the 801^3 grid
of bench/full_rotation.py.

    python bench/sub_steps.py [--large-run bench/.data/pipeline_2m_400f] [--points 801]
                              [--rounds 4] [--accuracy-frames 64]

`subdivide: auto_per_block` gives each block of 4096 pixels the sub-steps its own pixels
need (transform.block_sub_steps: none of them moves more than half a voxel between
sub-steps); the default `auto` gives every block the largest.
This adds the first 16 frames of entry f2 of bench/pipeline.py's large run, as stored (the
compressed chunks decompressed block by block, both kinds, one thread, as transform_frames
adds them), onto a --points^3 grid with the run's limits, with three plans side by side in
one process, alternating, --rounds rounds of four calls each: every block with the largest
count (auto), each block its own (auto_per_block), and every block with 1 (the floor).
Prints the plan and the CPU-ms per frame of each (median and range).

Then what each plan costs in accuracy: the first --accuracy-frames frames added once by
each plan and by 16 sub-steps for every block (a finely sampled rotation: on the demo 16
and 32 differ by 0.3% RMS), onto fresh grids; per kind, the RMS difference of each plan's
intensity from the reference's over the voxels both measure (relative to the reference's
RMS intensity), and the voxels measured by one of the two only (per voxel the reference
measures).  0 leaves it out.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import (CHUNK_FRAMES, byte_compile_hklflow, cpu,  # noqa: E402
                    intensity_difference, machine_info, machine_line)
from full_rotation import add_entry_f2_arguments, bragg_painted, entry_f2  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_entry_f2_arguments(p)
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--accuracy-frames", type=int, default=64,
                   help="frames added once per plan for the accuracy comparison (0: none)")
    args = p.parse_args(argv)
    byte_compile_hklflow()
    from hklflow.frames import open_frame_source
    from hklflow.transform import SubSteps, Transformer, block_sub_steps, pixel_table

    large = args.large_run
    _, rec, ori, scan, mask, grid = entry_f2(large, args.points)
    table = pixel_table(scan.detector, mask.pixels)
    steps, move = block_sub_steps(scan, table, grid, ori.crystal().cell.parameters[:3])
    most = int(steps.max())
    blocks = len(steps)
    plans = {f"{most} for every block": SubSteps.uniform(most, blocks),
             "each block its own": SubSteps.per_block(steps),
             "1 for every block": SubSteps.uniform(1, blocks)}
    nf = min(CHUNK_FRAMES, rec.nframes)
    npix = table.qx.size
    bragg, painted = bragg_painted(mask, nf, npix)
    stack = open_frame_source(rec.frames, compiled_decompression=True)
    transformers = {name: Transformer(grid, table, 1e9, kinds=("transform", "masked_transform"),
                                      crystal=ori.crystal(), hkl_radius=mask.hkl_radius,
                                      sub_steps=plan) for name, plan in plans.items()}

    def add(name: str) -> float:
        tr = transformers[name]
        stored = stack.read_compressed(0, nf)
        if stored is None:
            raise SystemExit(f"{rec.frames}: frames not stored as bitshuffle-LZ4 chunks")
        M = tr.matrices(scan, 0, nf, 1)
        c = cpu()
        tr.add_compressed(stored, M, np.ones(nf), bragg, painted)
        return (cpu() - c) / nf * 1e3

    for name in plans:  # the grids' first touch and the kernels' loading, not timed
        add(name)
    times = {name: [] for name in plans}
    for _ in range(args.rounds):
        for name in plans:
            times[name] += [add(name) for _ in range(4)]
    print(machine_line(machine_info()))
    print(f"{nf} frames of {large.name}/f2 added as stored onto {grid.describe()}; a pixel "
          f"moves up to {move:.2f} voxels per frame; auto_per_block: "
          f"{plans['each block its own'].describe()}")
    for name, t in times.items():
        print(f"  {name:<22} {np.median(t):6.2f} CPU-ms per frame ({min(t):.2f}-{max(t):.2f})")
    for tr in transformers.values():
        tr.close()
    transformers.clear()
    if args.accuracy_frames > 0:
        reference = "16 for every block"
        plans[reference] = SubSteps.uniform(16, blocks)
        nfa = min(args.accuracy_frames, rec.nframes)
        print(f"the first {nfa} frames added once by each plan, against {reference}:")
        for name, rows in accuracy(plans, reference, grid, table, ori, mask, scan, stack,
                                   nfa).items():
            print(f"  {name:<22} " + "; ".join(rows))
    return 0


def intensity(signal: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """signal / weight in float64, NaN where nothing was added."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(weight > 0, signal.astype(np.float64) / weight, np.nan)


def accuracy(plans: dict, reference: str, grid, table, ori, mask, scan, stack,
             nframes: int) -> dict[str, list[str]]:
    """Frames [0, nframes) added once by each plan onto a fresh grid; per plan other than
    the reference and per kind: the RMS difference of its intensity from the reference's
    over the voxels both measure, relative to the reference's RMS intensity, and the voxels
    measured by one only per voxel the reference measures."""
    from hklflow.transform import Transformer

    kinds = ("transform", "masked_transform")
    grids = {}
    for name, plan in plans.items():
        tr = Transformer(grid, table, 1e9, kinds=kinds, crystal=ori.crystal(),
                         hkl_radius=mask.hkl_radius, sub_steps=plan)
        for f0 in range(0, nframes, CHUNK_FRAMES):
            f1 = min(f0 + CHUNK_FRAMES, nframes)
            bragg, painted = bragg_painted(mask, f1 - f0, table.qx.size, first=f0)
            tr.add_compressed(stack.read_compressed(f0, f1), tr.matrices(scan, f0, f1, 1),
                              np.ones(f1 - f0), bragg, painted)
        tr.wait()
        grids[name] = tr
    sums = {name: {kind: np.zeros(4) for kind in kinds} for name in plans}
    planes = 8
    for l0 in range(0, grid.l.n, planes):
        l1 = min(l0 + planes, grid.l.n)
        ref = {kind: intensity(*pair) for kind, pair in zip(kinds, grids[reference].slabs(l0, l1))}
        for name in plans:
            if name == reference:
                continue
            for kind, pair in zip(kinds, grids[name].slabs(l0, l1)):
                sums[name][kind] += intensity_difference(intensity(*pair), ref[kind])
    for tr in grids.values():
        tr.close()
    return {name: [f"{kind} RMS difference {np.sqrt(s[0] / s[1]):.4f}, measured by one only "
                   f"{s[2] / max(s[3], 1):.4f}" for kind, s in sums[name].items()]
            for name in plans if name != reference}


if __name__ == "__main__":
    raise SystemExit(main())
