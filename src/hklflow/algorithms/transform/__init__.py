"""Transform of rotation frames to an (H, K, L) grid: every unmasked pixel of every frame
(optionally of every rotation sub-step of a frame) is mapped to (h, k, l) with the refined
geometry and added to the nearest voxel as corrected intensity and weight.

    hkl = (UB)^-1 R(phi)^-1 Q_lab(pixel)          (docs/conventions.md; Q without 2 pi)
    signal[voxel] += w * I * c(pixel) * s(frame),   weight[voxel] += w

with c = 1 / (solid angle relative to normal incidence x polarization factor) (pyFAI's
arrays), s = monitor_reference / monitor(frame) and w = 1 / subdivisions, so that the sum of
signal over the grid is the summed corrected intensity of the pixels that fall on it.

The compiled kernel accumulates into a bricked grid (8 x 8 x 8 voxel bricks, signal and
weight of a voxel side by side): consecutive detector pixels land in nearby voxels, which
then share cache lines and pages whatever the direction in which a detector row crosses the
grid.  It streams the frame and the per-pixel tables block by block: a vectorised pass
computes voxel coordinates in float32 for 8 pixels at a time, the ~0.2% of pixels within the
float32 rounding bound of a voxel face are decided again in float64 (so every decision equals
the float64 one), and a scatter adds the block, a voxel's cells in one vector addition
(see the comment above `_accumulate`).  Both kinds of volume come from one pass, each
pixel added once: the masked kind's left-out pixels to a second part of the grid, the
transform being the sum of the parts (BrickedGrid).  Several threads share the grid out by
shells of a quantity the crystal's turn leaves unchanged (ThreadShares): each adds only to
its own voxels, in the order of one thread, so the sums do not depend on the threads.
The tests' reference is the same mapping and binning in plain numpy
(tests/transform_reference.py).

Modules, in the order they build on each other: pixels (per-pixel tables, sub-steps,
blocks), memory (zeroed pages), bricks (the bricked grid), kernels (the compiled loops),
shares (the threads' shares of a grid), stream (the kernel fused with the compiled
bitshuffle-LZ4 decoder) and driver (Transformer, transform_frames, transform_scan).
"""
from .bricks import DUMP_SLOTS, DUMP_THREADS, BrickedGrid
from .driver import KINDS, Transformer, frame_scale, transform_frames, transform_scan
from .memory import ZeroedPages
from .pixels import (BLOCK, PixelTable, SubSteps, allowed_table, auto_subdivide, block_sub_steps,
                     bragg_block_summary, frame_matrices, live_blocks, pixel_blocks, pixel_table)
from .shares import ThreadShares

__all__ = ["BLOCK", "DUMP_SLOTS", "DUMP_THREADS", "KINDS", "BrickedGrid", "PixelTable",
           "SubSteps", "ThreadShares", "Transformer", "ZeroedPages", "allowed_table",
           "auto_subdivide", "block_sub_steps", "bragg_block_summary", "frame_matrices",
           "frame_scale", "live_blocks", "pixel_blocks", "pixel_table", "transform_frames",
           "transform_scan"]
