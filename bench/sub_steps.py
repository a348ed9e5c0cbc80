"""Rotation sub-steps per block of pixels against one count for every block, on the 801^3 grid
of bench/full_rotation.py.

    python bench/sub_steps.py [--large-run bench/.data/pipeline_2m_400f] [--points 801]
                              [--rounds 4]

`subdivide: auto_per_block` gives each block of 4096 pixels the sub-steps its own pixels
need (transform.block_sub_steps: none of them moves more than half a voxel between
sub-steps); the default `auto` gives every block the largest.
This adds the first 16 frames of entry f2 of bench/pipeline.py's large run, as stored (the
compressed chunks decompressed block by block, both kinds, one thread, as transform_frames
adds them), onto a --points^3 grid with the run's limits, with three plans side by side in
one process, alternating, --rounds rounds of four calls each: every block with the largest
count (auto), each block its own (auto_per_block), and every block with 1 (the floor).
Prints the plan and the CPU-ms per frame of each (median and range).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import (CHUNK_FRAMES, byte_compile_hklflow, cpu, machine_info,  # noqa: E402
                    machine_line)
from full_rotation import add_entry_f2_arguments, bragg_painted, entry_f2  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_entry_f2_arguments(p)
    p.add_argument("--rounds", type=int, default=4)
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
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
