"""The transform of a scan entry: Transformer (one job's grid, kinds and threads), the
pass over the frames in chunks (transform_frames) and the step's domain call
(transform_scan)."""
from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import logging
import time
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

from ...base import steplog
from ...base.errors import InputMismatchError, RawDataError
from ...codec import CompressedFrames, block_count, codec_for
from ...model.corrections import SampleShape, corrections_for
from ...model.geometry import ScanGeometry
from ...model.grid import Axis, Grid
from ...raw.frames import READ_AHEAD_THREADS, frame_reader
from ...raw.monitors import monitor_norm
from ...settings.params import TransformParams, largest_trusted_value
from .bricks import BRICK_BITS, BrickedGrid, unbrick
from .kernels import _accumulate
from .pixels import (BLOCK, PixelFrames, PixelTable, SubSteps, allowed_table, block_sub_steps,
                     bragg_block_summary, frame_matrices, live_blocks, pixel_blocks, pixel_table)
from .shares import ThreadShares


@functools.cache
def _stream():
    """transform.stream_kernels, the kernel fused with the compiled codec: imported at the
    first frames given as stored, which only the compiled codec gives (codec.choice)."""
    from . import stream_kernels

    return stream_kernels

KINDS = ("transform", "masked_transform")
# half set A, for CC1/2: the frames of the blocks of HALF_SET_FRAMES with an even number,
# counted from the scan's first frame (half B: the others); on the grid binned 2 x 2 x 2
HALF_SET_FRAMES = 16
HALF_SET_HOW = (f"half set A: the frames of the blocks of {HALF_SET_FRAMES} frames of even "
                "number, counted from each scan's first frame (half set B: the others), on "
                "the grid binned 2 x 2 x 2")


def half_set_frames(frame_numbers: np.ndarray) -> np.ndarray:
    """uint8 per frame: 1 for the frames of half set A."""
    return ((np.asarray(frame_numbers) // HALF_SET_FRAMES) % 2 == 0).astype(np.uint8)


def half_set_grid(grid: Grid) -> Grid:
    """The grid of the half sets: 2 x 2 x 2 voxels binned into one (each axis ceil(n / 2)
    voxels, the first centred between the grid's first two, one step twice the grid's)."""
    return Grid(*(Axis(ax.start + 0.5 * ax.step, 2 * ax.step, -(-ax.n // 2))
                  for ax in grid.axes))



class Transformer:
    """Accumulates frames of one scan entry onto a grid (one job's state), for the kinds of
    volume asked: 'transform' (every usable pixel) and/or 'masked_transform' (the Bragg
    regions and, with hkl_radius > 0, the punch left out), both from one pass.  threads > 1
    shares the grid out between that many threads by |Q| shells (ThreadShares); the sums
    are the same bit for bit whatever the number of threads.  gain (counts per photon, > 0)
    makes each voxel sum the variance of its signal too, from Poisson statistics of the raw
    values (BrickedGrid's variance); None leaves it out (signal and weight are the same
    either way, bit for bit).  variance_from (reduction.transform.variance_from): 'observed'
    sums the variance of each pixel-frame's own count; 'expected' (the default) sums gain x
    a per pixel-frame instead, the variance per unit intensity (kernels.kernel_gain)."""

    def __init__(self, grid: Grid, table: PixelTable, trusted_max: float, *,
                 kinds=("transform",), crystal=None, hkl_radius: float = 0.0,
                 threads: int = 1, scan_axis=None, sub_steps: SubSteps | None = None,
                 gain: float | None = None, half_sets: bool = False,
                 variance_from: str = "expected"):
        if not trusted_max > 0:
            raise ValueError(f"the trusted maximum must be > 0, got {trusted_max}")
        self.kinds = tuple(k for k in KINDS if k in kinds)
        if not self.kinds or len(self.kinds) != len(tuple(kinds)):
            raise ValueError(f"kinds must be some of {KINDS}, got {kinds}")
        if int(threads) < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        self.masked = "masked_transform" in self.kinds
        if gain is not None and not (np.isfinite(gain) and gain > 0):
            raise ValueError(f"the detector gain must be a finite number > 0, got {gain}")
        self.gain = None if gain is None else float(gain)
        # --- issue 81: the variance from each pixel-frame's expected count (the voxels' third
        # cell sums gain x a, turned into the variance where the chunks are summed) or from
        # its observed count (the variance itself, as before): kernels.kernel_gain
        from .kernels import kernel_gain
        self.variance_from = str(variance_from)
        self._kernel_gain = kernel_gain(1.0 if gain is None else self.gain, self.variance_from)
        # --- end issue 81
        # both kinds from one pass: each pixel added once, to one part (BrickedGrid paired)
        self.acc = BrickedGrid(grid, len(self.kinds), paired=len(self.kinds) == 2,
                               shared=int(threads) > 1, variance=gain is not None)
        self.table = table
        self.q_max = table.q_max
        self.live = live_blocks(table)
        self.trusted_max = float(trusted_max)
        self.hkl_r2 = float(hkl_radius) ** 2 if self.masked else 0.0
        if self.hkl_r2 > 0:
            self.allowed, self.allowed_off = allowed_table(crystal, grid)
        else:
            self.allowed, self.allowed_off = None, np.zeros(3, np.int64)
        self.threads = int(threads)
        self.scan_axis = scan_axis  # (lab) lets threads share the grid by Q.axis too
        # None: every block takes the sub-steps of a call's matrices (M.shape[1])
        self.sub_steps = sub_steps
        blocks = pixel_blocks(table.qx.shape[0])
        if sub_steps is not None and len(sub_steps.sub_count) != blocks:
            raise ValueError(f"sub-steps of {len(sub_steps.sub_count)} blocks for a detector "
                             f"of {blocks}")
        self.shares = None  # ThreadShares, made from the first frames' matrices
        # a worker per share: each adds its share of one call after its share of the calls
        # before; the shares side by side (no two touch the same voxel)
        self._workers = [ThreadPoolExecutor(1, thread_name_prefix=f"transform{i}")
                         for i in range(self.threads)] if self.threads > 1 else []
        self._outstanding: list[Future] = []
        # half set A (half_sets): each thread its own cells, (signal, weight) per voxel of
        # the grid binned 2 x 2 x 2 (kernels.half_set_index), summed by half_set()
        slots = self.acc.kernel_cells.size // self.acc.stride
        bricks = -(-slots // (1 << (3 * BRICK_BITS)))
        self._half = ([np.zeros(2 * bricks * (1 << (3 * (BRICK_BITS - 1))), np.float32)
                       for _ in range(max(self.threads, 1))] if half_sets else None)

    def matrices(self, scan: ScanGeometry, first: int, stop: int, subdivide: int) -> np.ndarray:
        """The matrices of frames [first, stop) for add(): each block's sub-steps where the
        transformer has them (SubSteps.matrices), else `subdivide` for every block."""
        if self.sub_steps is not None:
            return self.sub_steps.matrices(scan, first, stop)
        return frame_matrices(scan, first, stop, subdivide)

    def _sub_step_plan(self, M) -> tuple[np.ndarray, np.ndarray]:
        """(sub_first, sub_count) per block for the kernels, for matrices M."""
        plan = self.sub_steps or SubSteps.uniform(M.shape[1], len(self.live))
        if M.shape[1] != plan.total:
            raise ValueError(f"matrices of {M.shape[1]} sub-steps per frame; the blocks' "
                             f"sub-steps {plan.counts} take {plan.total}")
        return plan.sub_first, plan.sub_count

    def _shares_for(self, M) -> ThreadShares | None:
        """The threads' shares for frames of matrices M; None: one thread does them (one
        thread asked, or matrices that are not turns of the crystal the shares were made
        for; never seen, but the split would then be unsafe)."""
        if not self._workers:
            return None
        if self.shares is None:
            self.shares = ThreadShares(self.table, self.acc, M.reshape(-1, 3, 3)[0],
                                       self.threads, self.scan_axis)
        return self.shares if self.shares.fits(M) else None

    def share_out(self, M) -> None:
        """Make the threads' shares (threads > 1) from the frame matrices M of the first
        frames now (a fixed cost of the job), not at the first add."""
        self._shares_for(np.asarray(M))

    def _variance_args(self) -> tuple:
        """The kernels' (gain, var): var a fresh buffer per call (each thread its own), None
        without the variance."""
        if self.gain is None:
            return 0.0, None
        return self._kernel_gain, np.empty(BLOCK, np.float32)  # (< 0: expected: kernel_gain)

    def _half_args(self, frame_numbers, nf: int) -> tuple:
        """A function share -> the kernel's (half, half_frames) for frames of the scan
        numbered frame_numbers: the thread's own half-set cells and a flag per frame (half A:
        half_set_frames); (None, None) without half sets."""
        if self._half is None:
            return lambda share: (None, None)
        if frame_numbers is None or len(frame_numbers) != nf:
            raise ValueError(f"the half sets need the scan's numbers of the {nf} frames added")
        flags = half_set_frames(np.asarray(frame_numbers))
        return lambda share: (self._half[0 if share is None else share[4]], flags)

    def half_set(self, kind: str = "transform") -> tuple[np.ndarray, np.ndarray]:
        """(signal, weight) of half set A of a kind (the frames of half_set_frames) on the
        grid binned 2 x 2 x 2 (half_set_grid), float32 [l, k, h]."""
        if self._half is None:
            raise ValueError("this transformer was made without half sets")
        self.wait()
        cells = np.sum(self._half, axis=0, dtype=np.float32) if len(self._half) > 1 \
            else self._half[0]
        acc = self.acc
        size = acc.size // 8  # (a brick of 8^3 voxels is one of 4^3 there)

        def part(start):
            flat = cells[2 * start:2 * (start + size)]
            return flat[0::2], flat[1::2]
        parts = [part(0)] + ([part(acc.second // 8)] if acc.paired else [])
        index = self.kinds.index(kind)
        if acc.paired:
            chosen = parts[0] if index == 1 else tuple(a + b for a, b in zip(*parts))
        else:
            if index != 0:
                raise ValueError(f"half sets are held for {self.kinds[0]} alone")
            chosen = parts[0]
        shape = half_set_grid(acc.grid).shape
        return tuple(unbrick(a, acc.nbricks, 1 << (BRICK_BITS - 1), shape) for a in chosen)

    def _submit(self, kernel, shares: ThreadShares | None) -> list[Future]:
        """kernel(share) of every thread's share on its worker; kernel(None) (the whole
        work) in this thread, once the calls before it are done."""
        if shares is not None:
            futures = [w.submit(kernel, share) for w, share in zip(self._workers, shares.shares)]
            self._outstanding = [f for f in self._outstanding if not f.done()] + futures
            return futures
        self.wait()
        done = Future()
        done.set_result(kernel(None))
        return [done]

    @staticmethod
    def _finish(futures: list[Future]) -> None:
        """Wait for every future (they use the caller's buffers), then raise the first
        error."""
        concurrent.futures.wait(futures)
        for f in futures:
            f.result()

    def wait(self) -> None:
        """Wait until every call submitted has been added (raises the first error)."""
        outstanding, self._outstanding = self._outstanding, []
        self._finish(outstanding)

    def _bragg_args(self, bragg, bragg_blocks, nf: int) -> tuple:
        """(bragg, its block summary) for the kernels: (None, None) without the masked
        kind; the summary (bragg_block_summary) made here where none is given."""
        if not self.masked:
            return None, None
        if bragg is None:
            raise ValueError("the masked transform needs the Bragg mask of the frames")
        if bragg_blocks is None:
            bragg_blocks = bragg_block_summary(bragg)
        expected = (nf, pixel_blocks(self.table.qx.shape[0]))
        if bragg_blocks.dtype != np.uint8 or bragg_blocks.shape != expected:
            raise ValueError(f"Bragg block summary {bragg_blocks.dtype} {bragg_blocks.shape}, "
                             f"expected uint8 {expected}")
        return bragg, bragg_blocks

    def add(self, frames: np.ndarray, M: np.ndarray, scale: np.ndarray,
            bragg: np.ndarray | None = None, bragg_blocks: np.ndarray | None = None,
            frame_numbers=None, pixels: PixelTable | None = None,
            pixel_frames: PixelFrames | None = None) -> None:
        """Add frames (nf, rows, cols) with their matrices M (nf, nsub, 3, 3), per-frame
        scale and the Bragg mask (nf, rows * cols) uint8 (for the masked transform) with its
        block summary (bragg_block_summary; made here when not given); frame_numbers: the
        frames' numbers in the scan (for the half sets, and pixel_frames); pixels: the
        pixel table of these frames, else the transformer's; pixel_frames: a correction per
        pixel and frame the kernels evaluate (PixelFrames, compiled)."""
        nf = frames.shape[0]
        flat = frames.reshape(nf, -1)
        if flat.shape[1] != self.table.qx.shape[0]:
            raise ValueError(f"frames of {frames.shape[1:]} pixels do not match the pixel table "
                             f"of the detector {self.table.shape}")
        acc = self.acc
        table = pixels if pixels is not None else self.table
        corr = self._corr_args(table, pixel_frames, frame_numbers, nf)
        args = (M, np.asarray(scale, np.float64),
                largest_trusted_value(self.trusted_max, flat.dtype),
                *self._bragg_args(bragg, bragg_blocks, nf), self.allowed, self.allowed_off,
                self.hkl_r2, acc.origin, acc.inv_step, acc.dims, acc.nbricks, self.q_max,
                acc.size, acc.kernel_cells, acc.second, self.live, *self._sub_step_plan(M))
        half = self._half_args(frame_numbers, nf)
        self._finish(self._submit(
            lambda share: _accumulate(flat, table.qx, table.qy, table.qz, corr, *args,
                                      *self._variance_args(), *half(share), share),
            self._shares_for(M)))

    @staticmethod
    def _corr_args(table: PixelTable, pixel_frames, frame_numbers, nf: int) -> tuple:
        """The kernels' corr: (the table's corrections, None), or with pixel_frames (...,
        the plate's factor of frames frame_numbers)."""
        if pixel_frames is None:
            return table.corr_all, None
        if frame_numbers is None or len(frame_numbers) != nf:
            raise ValueError(f"a correction per pixel and frame needs the scan's numbers of "
                             f"the {nf} frames added")
        return table.corr_all, pixel_frames.kernel_plate(frame_numbers)

    def add_compressed(self, frames: CompressedFrames, M: np.ndarray, scale: np.ndarray,
                       bragg: np.ndarray | None = None,
                       bragg_blocks: np.ndarray | None = None, frame_numbers=None,
                       pixels: PixelTable | None = None,
                       pixel_frames: PixelFrames | None = None) -> bool:
        """add() of frames given as their bitshuffle-LZ4 chunks (FrameStack.read_compressed),
        each block of pixels decompressed just before it is added: the same sums, without
        writing the frames to memory whole and reading them back (on several threads, each
        decompresses the parts of blocks it computes).  False (nothing added) where it
        does not apply: a compression block that does not divide the kernel's blocks, no
        compiled untranspose for the type; then add() the frames read."""
        pending = self.submit_compressed(frames, M, scale, bragg, bragg_blocks, frame_numbers,
                                         pixels, pixel_frames)
        if pending is False:
            return False
        self._finish(pending)
        return True

    def submit_compressed(self, frames: CompressedFrames, M: np.ndarray, scale: np.ndarray,
                          bragg: np.ndarray | None = None,
                          bragg_blocks: np.ndarray | None = None,
                          frame_numbers=None, pixels: PixelTable | None = None,
                          pixel_frames: PixelFrames | None = None) -> list[Future] | bool:
        """add_compressed() without waiting for the threads' shares (threads > 1): returns
        their futures (the frames' buffer and the Bragg mask must stay as they are until
        they are done), or False where it does not apply (nothing added)."""
        itemsize = frames.dtype.itemsize
        if (BLOCK % frames.block or frames.block % 8 or itemsize not in (2, 4)
                or frames.elements != self.table.qx.shape[0]
                or not getattr(codec_for(True), "fused", False)):
            return False
        stream = _stream()
        bragg_args = self._bragg_args(bragg, bragg_blocks, len(frames))
        positions = np.empty((len(frames), block_count(frames.elements, frames.block) + 1),
                             np.int64)

        def damaged(status):  # (the grid holds part of the chunk: the step fails)
            i = -1 - status
            return RawDataError(f"{frames.files[i]}: frame {frames.first + i} of the scan "
                                "cannot be decompressed (a damaged bitshuffle-LZ4 chunk: "
                                "truncated or corrupt file?)")

        status = stream.block_positions(frames.stream, frames.starts, frames.stops,
                                        frames.elements, itemsize, frames.block, positions)
        if status < 0:
            raise damaged(status)
        acc = self.acc
        stored = (frames.stream, positions, frames.elements, frames.block,
                  stream.OWN_UNTRANSPOSE)
        table = pixels if pixels is not None else self.table
        corr = self._corr_args(table, pixel_frames, frame_numbers, len(frames))
        args = (M, np.asarray(scale, np.float64),
                largest_trusted_value(self.trusted_max, frames.dtype),
                *bragg_args, self.allowed, self.allowed_off, self.hkl_r2,
                acc.origin, acc.inv_step, acc.dims, acc.nbricks, self.q_max, acc.size,
                acc.kernel_cells, acc.second, self.live, *self._sub_step_plan(M))

        half = self._half_args(frame_numbers, len(frames))

        def kernel(share):  # (each thread a block of values and of decompressed bytes)
            status = stream.accumulate_stream(*stored, np.empty(BLOCK, frames.dtype),
                                              np.empty(frames.block * itemsize, np.uint8),
                                              table.qx, table.qy, table.qz, corr, *args,
                                              *self._variance_args(), *half(share), share)
            if status < 0:
                raise damaged(status)
        return self._submit(kernel, self._shares_for(M))

    def close(self) -> None:
        """Stop the worker threads (threads > 1) once what was submitted is done (its errors
        are raised by wait() or by the calls that waited for it, not here)."""
        for w in self._workers:
            w.shutdown(wait=True)
        self._outstanding = []

    def slab(self, l0: int, l1: int, kind: str = "transform", out: tuple | None = None
             ) -> tuple:
        return self.acc.slab(l0, l1, self.kinds.index(kind), out)

    def slabs(self, l0: int, l1: int, out: list | None = None) -> list[tuple]:
        """(signal, weight[, variance]) of L planes [l0, l1) of every kind, in self.kinds
        order."""
        return self.acc.slabs(l0, l1, out)

    def pixel_frames(self, kind: str = "transform") -> int:
        """Pixel-frames added so far to a kind (its summed weight: 1 per pixel-frame)."""
        acc, kind = self.acc, self.kinds.index(kind)
        # (in float64, part by part: no copy of the grid)
        parts = ([0, 1] if kind == 0 else [0]) if acc.paired else [kind]
        w = sum(float(np.sum(acc.weights[part], dtype=np.float64)) for part in parts)
        return int(round(w))


# chunks of stored frames the threads add at once (their bytes and Bragg masks): one more
# costs fresh memory that the workers wait for, a slower pass (bench/threads.py)
IN_FLIGHT = 2


class _ChunkSlot:
    """The buffers of a chunk in flight: its stored frames (`stream`, read_compressed's
    holder), its Bragg mask with the mask's block summary (bragg_block_summary) and which
    frames' regions that mask holds."""

    def __init__(self, bragg: np.ndarray | None):
        self.stream = None
        self.bragg = bragg
        self.blocks = (np.zeros((bragg.shape[0], pixel_blocks(bragg.shape[1])), np.uint8)
                       if bragg is not None else None)
        self.painted = None
        self.pending: list[Future] = []
        self.done = None  # the frames added once pending is done (for progress)


def transform_frames(stack, scan: ScanGeometry, transformer: Transformer, first: int,
                     stop: int, subdivide: int, scale, chunk_frames: int = 16, mask=None,
                     progress=None, pixel_frames: PixelFrames | None = None) -> float:
    """Read frames [first, stop) of a FrameStack in chunks and add them: as stored where the
    stack gives them so (Transformer.add_compressed, each chunk read by this thread; with
    threads, up to IN_FLIGHT chunks added at once while this thread reads and paints the
    next), else decompressed, the next chunk read ahead as frames.frame_reader does for the
    transformer's threads; the masked transform leaves out the Bragg regions of mask
    (masking.ScanMask).  scale: per-frame multipliers for frames first..stop; pixel_frames:
    a correction per pixel and frame (PixelFrames: the kernels evaluate it, or, its numpy
    reference, each chunk added in the parts of frames it gives).
    Returns the seconds spent in the kernel (and mask painting; with threads, the
    pass's)."""
    chunk = max(1, min(int(chunk_frames), stop - first))
    npix = int(np.prod(stack.frame_shape))
    if transformer.masked and mask is None:
        raise ValueError("the masked transform needs the scan's mask")
    mask = mask if transformer.masked else None
    nslots = IN_FLIGHT if transformer.threads > 1 else 1
    slots = [_ChunkSlot(np.zeros((chunk, npix), np.uint8) if mask is not None else None)
             for _ in range(nslots)]
    starts = list(range(first, stop, chunk))
    # frames as stored (compressed) are read by this thread, each chunk when it comes to
    # it (a read without decompressing); others ahead on a thread of their own with threads
    stored_first = (stack.read_compressed(first, min(first + chunk, stop), slots[0])
                    if starts else None)
    reader_threads = 1 if stored_first is not None else transformer.threads
    # read ahead: one buffer being read while the other is added; else one
    nbufs = 2 if reader_threads >= READ_AHEAD_THREADS else 1
    bufs = [np.empty((chunk,) + tuple(stack.frame_shape), stack.dtype) for _ in range(nbufs)]

    def read(i):
        a = starts[i]
        b = min(a + chunk, stop)
        stored = (stored_first if i == 0 else stack.read_compressed(a, b, slots[i % nslots])
                  if nbufs == 1 else None)
        if stored is not None:
            return a, stored
        return a, stack.read(a, b, out=bufs[i % nbufs][:b - a])

    def finish(slot):  # (its chunk added: its buffers free again)
        transformer._finish(slot.pending)
        slot.pending = []
        if slot.done is not None and progress is not None:
            progress(slot.done)
        slot.done = None

    t_kernel = 0.0
    t_pass = time.perf_counter()
    with frame_reader(reader_threads) as pool:
        pending = pool.submit(read, 0)
        for i in range(len(starts)):
            slot = slots[i % nslots]
            finish(slot)  # (the chunk IN_FLIGHT before this one)
            a, frames = pending.result()
            if i + 1 < len(starts):
                pending = pool.submit(read, i + 1)
            b = a + len(frames)
            M = transformer.matrices(scan, a, b, subdivide)
            t = time.perf_counter()
            bragg = blocks = None
            if mask is not None:  # the regions painted last in this buffer cleared
                if slot.painted is not None:
                    mask.paint(*slot.painted, slot.bragg[:slot.painted[1] - slot.painted[0]],
                               value=0)
                slot.blocks[:] = 0
                mask.paint(a, b, slot.bragg[:b - a], blocks=slot.blocks[:b - a], block=BLOCK)
                slot.painted = (a, b)
                bragg, blocks = slot.bragg[:b - a], slot.blocks[:b - a]
            parts = [(a, b, None)] if pixel_frames is None else pixel_frames.parts(a, b)
            in_kernel = pixel_frames if pixel_frames is not None and pixel_frames.compiled \
                else None
            pending_parts, read_back = [], None
            for pa, pb, table in parts:
                p0, p1 = pa - a, pb - a
                s = scale[pa - first:pb - first]
                bragg_part = (bragg[p0:p1], blocks[p0:p1]) if mask is not None else (None, None)
                added = False
                if isinstance(frames, CompressedFrames) and read_back is None:
                    if not np.isnan(s).any():
                        added = transformer.submit_compressed(
                            _frames_part(frames, p0, p1), M[p0:p1], s, *bragg_part,
                            np.arange(pa, pb), table, in_kernel)
                    if added is False:  # (frames left out, blocks the kernel cannot take)
                        read_back = stack.read(a, b, out=bufs[0][:b - a])
                    else:
                        pending_parts += added
                if added is False:  # from the frames read
                    part = (read_back if read_back is not None else frames)[p0:p1]
                    keep = ~np.isnan(s)  # (frames left out: a bad monitor)
                    if keep.all():
                        transformer.add(part, M[p0:p1], s, *bragg_part, np.arange(pa, pb),
                                        table, in_kernel)
                    elif keep.any():
                        transformer.add(part[keep], M[p0:p1][keep], s[keep],
                                        *((bragg_part[0][keep], bragg_part[1][keep])
                                          if mask is not None else (None, None)),
                                        np.arange(pa, pb)[keep], table, in_kernel)
            if pending_parts:
                slot.pending, slot.done = pending_parts, b - first
            t_kernel += time.perf_counter() - t
            if slot.done is None and progress is not None:
                progress(b - first)
    for slot in slots:
        finish(slot)
    if transformer.threads > 1:
        return time.perf_counter() - t_pass
    return t_kernel


def _frames_part(frames: CompressedFrames, i: int, j: int) -> CompressedFrames:
    """Frames [i, j) of stored frames (the same stream)."""
    if (i, j) == (0, len(frames)):
        return frames
    return dataclasses.replace(frames, starts=frames.starts[i:j], stops=frames.stops[i:j],
                               first=frames.first + i, files=frames.files[i:j])


def frame_scale(monitor, reference, first: int, stop: int, bad_frames: str = "fail",
                file_of=None) -> tuple[np.ndarray, float | None]:
    """Per-frame multipliers monitor_reference / monitor (1 without a monitor); the
    reference defaults to the scan's median good monitor.  Frames whose monitor is <= 0 or
    not finite stop the job (bad_frames 'fail': RawDataError naming the file, by
    file_of(frame)) or get NaN, which transform_frames leaves out ('leave_out')."""
    if monitor is None:
        return np.ones(stop - first), None
    monitor = np.asarray(monitor, dtype=np.float64)
    if not (np.isfinite(monitor) & (monitor > 0)).any():
        raise RawDataError(f"{file_of(0) if file_of else 'the scan'}: the monitor is <= 0 or "
                           "not finite on every frame")
    good, ref = monitor_norm(monitor, reference)
    part = monitor[first:stop]
    bad = np.flatnonzero(~good[first:stop]) + first
    if bad.size and bad_frames != "leave_out":
        where = file_of(int(bad[0])) if file_of else "the scan"
        raise RawDataError(f"{where}: the monitor is <= 0 or not finite at {bad.size} frame(s) "
                           f"{bad[:10].tolist()}{' ...' if bad.size > 10 else ''} (a beam dump? "
                           "a monitor glitch?): set reduction.transform.bad_monitor_frames: "
                           "leave_out to reduce the scan without them")
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(good[first:stop], ref / part, np.nan), ref


def transform_scan(stack, scan: ScanGeometry, grid: Grid, mask, kinds, first: int,
                   stop: int, params: TransformParams, trusted_max: float, crystal, monitor=None,
                   log=None, threads: int = 1, shape: SampleShape | None = None,
                   units: float = 1.0) -> tuple[Transformer, dict]:
    """Transform frames [first, stop) of a scan entry (rule transform_frames) into the kinds
    of volume asked, all from one read of the frames: its refined geometry (with UB), the
    sample's grid, its masks (masking.ScanMask: the pixel mask for every kind, the Bragg
    regions and the hkl punch for the masked_transform).  Returns the filled Transformer and
    notes on what was added, per kind.  threads: the kernel's threads (the sums do not
    depend on them); shape: the sample's (its absorption, model.corrections); units: a factor
    of every frame's scale (a background put in its sample entry's units)."""
    log = log or logging.getLogger("hklflow.transform")
    if mask.pixels.shape != scan.detector.shape:
        raise InputMismatchError(f"the pixel mask {mask.pixels.shape} does not match the "
                                 f"detector {scan.detector.shape}")
    corrections = corrections_for(
        scan.detector, solid_angle=params.solid_angle, polarization=params.polarization,
        polarization_fraction=params.polarization_fraction, efficiency=params.efficiency,
        air=params.air, air_path=params.air_path, absorption=params.absorption, shape=shape,
        scan=scan, min_transmission=params.min_transmission)
    log.info("corrections: %s", ", ".join(corrections.names) or "none")
    for name, why in corrections.left_out.items():
        log.info("  not applied: %s (%s)", name, why)
    table = pixel_table(scan.detector, mask.pixels, corrections, threads=threads)
    frame_tables = (PixelFrames(table, corrections.pixel_frame[0], scan.detector.wavelength)
                    if corrections.pixel_frame else None)
    steps, move = block_sub_steps(scan, table, grid, crystal.cell.parameters[:3])
    sub_steps, how = None, "config"
    if params.subdivide == "auto_per_block":  # each block the sub-steps its pixels need
        sub_steps = SubSteps.per_block(steps)
        nsub, how = int(steps.max(initial=1)), f"auto_per_block: {sub_steps.describe()}"
    elif params.subdivide == "auto":  # every block the most any pixel needs
        nsub, how = int(steps.max(initial=1)), "auto"
    else:
        nsub = int(params.subdivide)
    kinds = tuple(kinds)
    log.info("frames %d-%d (%s): %d usable pixels of %d; %s", first, stop, " and ".join(kinds),
             len(table), int(np.prod(scan.detector.shape)), grid.describe())
    log.info("rotation sub-steps per frame: %d (%s; a pixel moves up to %.2f voxels per frame)",
             nsub, how, move)
    scale, monitor_ref = frame_scale(monitor, params.monitor_reference, first, stop,
                                     params.bad_monitor_frames, lambda i: stack.locate(i)[0])
    scale = scale * float(units)
    left_out = (np.flatnonzero(np.isnan(scale)) + first).tolist()
    if left_out:
        log.warning("%d frame(s) left out, their monitor is <= 0 or not finite: %s",
                    len(left_out), left_out[:20])
    hkl_radius = mask.hkl_radius if "masked_transform" in kinds else 0.0
    tr = Transformer(grid, table, trusted_max, kinds=kinds, crystal=crystal,
                     hkl_radius=hkl_radius, threads=threads, scan_axis=scan.axis_lab,
                     sub_steps=sub_steps, gain=params.variance_gain,
                     half_sets=params.half_sets, variance_from=params.variance_from)
    log.info("grid in memory: %.2f GB (signal + weight%s of %d kind(s), float32)",
             tr.acc.nbytes / 1e9, " + variance" if tr.acc.variance else "", len(tr.kinds))
    progress = steplog.Progress(log, "frames transformed", stop - first)
    if mask is not None and tr.masked:
        mask.frame_index()  # (its compiled code loaded before the pass over the frames)
    if threads > 1:
        tr.share_out(tr.matrices(scan, first, first + 1, nsub))
        log.info("%s", tr.shares.describe())
    t0 = time.monotonic()
    try:
        t_kernel = transform_frames(stack, scan, tr, first, stop, nsub, scale,
                                    params.chunk_frames, mask, progress.update, frame_tables)
    finally:
        tr.close()
    pixel_frames = (stop - first) * len(table)
    # blocks of BLOCK pixels by their sub-steps, and the mean over the usable blocks
    plan = sub_steps or SubSteps.uniform(nsub, len(tr.live))
    blocks_by_steps = {str(c): int(np.count_nonzero(plan.sub_count == c)) for c in plan.counts}
    mean_steps = float(plan.sub_count[tr.live != 0].mean()) if tr.live.any() else float(nsub)
    notes = {}
    for kind in tr.kinds:  # (pixel_frames_added: the writer's sum of the weights)
        notes[kind] = {"kind": kind, "frames": [first, stop], "subdivide": nsub,
                       "subdivide_blocks": blocks_by_steps,
                       "usable_pixels": len(table), "pixel_frames_usable": int(pixel_frames),
                       "solid_angle": params.solid_angle, "polarization": params.polarization,
                       "polarization_fraction": params.polarization_fraction,
                       "monitor_reference": monitor_ref, "frames_left_out": left_out,
                       "hkl_radius": hkl_radius if kind == "masked_transform" else 0.0,
                       "kinds_in_one_pass": list(tr.kinds), "kernel_seconds": t_kernel,
                       "variance": tr.gain is not None, "gain": params.gain,
                       "corrections": corrections.notes(),
                       "pixel_frames_left_out_by_absorption":
                           frame_tables.left_out if frame_tables is not None else 0,
                       "pixel_frames_left_out_by_absorption_from":
                           frame_tables.left_out_from if frame_tables is not None else ""}
    log.info("%d frames in %.2f s (kernel %.2f s on %d thread(s): %.1f Mpixel/s for %d "
             "kind(s))", stop - first, time.monotonic() - t0, t_kernel, tr.threads,
             pixel_frames * mean_steps / max(t_kernel, 1e-9) / 1e6, len(tr.kinds))
    return tr, notes
