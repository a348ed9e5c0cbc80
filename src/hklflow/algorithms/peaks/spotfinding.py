"""Strong-pixel detection and 3D peak assembly: compiled kernels and a numpy reference.

Detection is DIALS's dispersion test (Parkhurst et al. 2016; dials.algorithms.spot_finding
threshold 'dispersion'): in a (2k+1) x (2k+1) window of valid pixels with n pixels, sum s and
sum of squares s2, mean m = s/n and variance v = (s2 - s^2/n)/(n-1), a pixel of value x is
strong when
    n >= min_local,
    v/m > g (1 + sigma_background * sqrt(2/(n-1)))  (the window is not Poisson background),
    x > m + sigma_strong * sqrt(g m)                   (the pixel stands out of it),
    x > global_threshold,
g: counts per photon (instrument.detector.gain; DIALS's `gain`; hklflow.algorithms.peaks.gain checks it).
The 'absolute' method marks x > absolute_threshold instead.

`strong_pixels_frame` does one frame in one pass: column counts, sums and sums of squares
slide down the frame in int32 (wrapping: a window's sum is exact while it fits), window
sums along a row are added up in a loop compiled for the window's width, and the frame
statistics (sum, max, trimmed sum in a Q annulus) come from the same pass.  The tests are
rearranged to avoid divisions and square roots; the pixel's own test runs branch-free
(vectorised) over the row, in int32 and float32 lanes with a margin while the window's
counts allow (float64 sums, exact, slide only while a larger count is in the window), and
the few pixels that pass it (a few per thousand) get both tests exactly in float64.  Their
window's sum of squares comes from the int32 column sums while its counts are below 6621
(7 x 7), else it is added up from the rows held (exact integers below 1.3e7 counts).
`PeakAssembler` joins strong pixels into 3D peaks while frames stream by: pixels touching
in the frame (8-connected) or at the same pixel in consecutive frames belong to one peak;
a peak is finished (and its slot recycled) when a frame adds nothing to it, so memory is
bounded by the peaks open at once, not by the length of the scan.

`search` is the peak search of a scan entry (rule find_peaks): per frame the total sum,
maximum and a trimmed sum inside a Q annulus (strong pixels left out: a transmission and
normalisation diagnostic robust to Bragg peaks); per scan the 3D Bragg peaks with
first-moment centroids (x = column, y = row, frame; continuous, pixel centre at +0.5),
widths, summed intensity and its error, pixel count, rotation angle, 2theta and chi.
Pixels not used: detector gaps (pyFAI model), negative values (gaps as Pilatus writes
them), values at or above the trusted maximum, the user mask, and hot pixels found from
the data (strong in every one of the first frames: masked from the start; strong in more
than hot_pixel_fraction of all frames: reported for the mask step).
"""
from __future__ import annotations

import logging
import queue
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from ...base import steplog
from ...base.errors import InputMismatchError
from ...model.geometry import DetectorGeometry, ScanAngles
from ...raw.images import user_mask
from ...settings.params import DetectorParams, PeakSearchParams, largest_trusted_value
from .gain import check_gain
from .kernels import (A_BG, A_MAX, A_N, A_RAW, A_W, A_WX, A_WXX, A_WY, A_WYY, A_WZ, A_WZZ, B_C0,
                      B_C1, B_F0, B_F1, B_R0, B_R1, IN_ANNULUS, N_ACC, N_BOX, _kernel_for_width,
                      assemble_frame, close_finished)

# --------------------------------------------------------------------------------------
# Per-frame detection
# --------------------------------------------------------------------------------------
FRAME_STATS = ("sum", "max", "trimmed_sum", "n_valid", "n_strong", "n_annulus")
# address space left unused on either side of an isolated_empty array
ISOLATION_BYTES = 1 << 21


def isolated_empty(shape, dtype) -> np.ndarray:
    """An uninitialised C-contiguous array with ISOLATION_BYTES of address space it does not
    use on either side (never touched, so no memory), so that no other array lies right
    against it.  The kernel streams the frame, its pixel flags and the max projection side
    by side; when two of them lay back to back in memory it ran at less than half its
    speed on some CPUs (bench/find_peaks.py), and search()'s max projection used to be
    allocated right after a buffer of frames."""
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape)) * dtype.itemsize
    raw = np.empty(nbytes + 2 * ISOLATION_BYTES + 4096, np.uint8)
    start = ISOLATION_BYTES + (-(raw.ctypes.data + ISOLATION_BYTES)) % 4096
    return raw[start:start + nbytes].view(dtype).reshape(shape)


def pixel_flags(usable, annulus=None) -> np.ndarray:
    """The kernel's per-pixel flags, uint8 (ny, nx): USABLE where `usable` (bool or 0/1),
    IN_ANNULUS where `annulus` is non-zero (the Q annulus of the trimmed sum; none without
    it).  One array, so that the kernel reads one byte per pixel for both; isolated_empty,
    so that no other array lies against it."""
    flags = isolated_empty(np.shape(usable), np.uint8)
    np.not_equal(usable, 0, out=flags, casting="unsafe")
    if annulus is not None:
        flags |= (np.asarray(annulus) != 0).astype(np.uint8) * np.uint8(IN_ANNULUS)
    return flags


def strong_pixels_frame(frame, flags, half_r, half_c, sigma_b, sigma_s, min_local,
                        global_threshold, absolute_threshold, use_absolute, trusted_max,
                        out_rows, out_cols, out_vals, out_bg, stats, maxproj=None, gain=1.0):
    """Detect strong pixels of one frame (gain: counts per photon).

    frame (ny, nx) counts; flags (ny, nx) uint8, pixel_flags(usable, annulus): USABLE, and
    IN_ANNULUS for the Q annulus of the trimmed sum.  A pixel is also unusable in this frame
    when its value is negative (Pilatus marks gaps -1) or >= trusted_max (overloaded; values
    are held as int32, so trusted_max is at most 2^31 - 1; the kernel compares with the
    largest trusted value in the frame's type).  Strong pixels are written to
    out_* (raster order) with the local mean in out_bg; returns their count, or -1 if out_*
    is too small.  stats (6,) float64 receives FRAME_STATS.  The kernel is compiled for the
    window's width.  Float frames (corrected data) are rounded to the nearest count first;
    NaN is unusable.  maxproj (integer frames): an array of the frame's shape and type
    raised to the frame's values in the same pass (the scan's maximum; float frames take
    np.fmax, NaN aside).
    """
    if not np.issubdtype(frame.dtype, np.integer):
        if maxproj is not None:
            raise ValueError("the kernel keeps the maximum of integer frames only")
        frame = np.rint(frame)
    elif maxproj is not None and (maxproj.dtype != frame.dtype or maxproj.shape != frame.shape):
        raise ValueError(f"maximum {maxproj.dtype} {maxproj.shape} for a frame "
                         f"{frame.dtype} {frame.shape}")
    if flags.dtype != np.uint8 or flags.shape != frame.shape:
        raise ValueError(f"pixel flags {flags.dtype} {flags.shape} for a frame {frame.shape} "
                         "(expected uint8 of the frame's shape: pixel_flags)")
    return _kernel_for_width(half_c)(
        frame, flags, int(half_r), float(sigma_b), float(sigma_s), float(gain), int(min_local),
        float(global_threshold), float(absolute_threshold), bool(use_absolute),
        largest_trusted_value(min(int(trusted_max), 2 ** 31 - 1), frame.dtype), out_rows,
        out_cols, out_vals, out_bg, stats, maxproj)


def strong_pixels_numpy(frame, valid, half_r=3, half_c=3, sigma_b=6.0, sigma_s=3.0, min_local=2,
                        global_threshold=0.0, trusted_max=2**31 - 1, gain=1.0):
    """Plain numpy reference of the dispersion test (summed-area tables); returns the
    boolean strong map and the local mean.  Same decisions as the kernel.  Integer frames
    are summed in int64 (exact, whatever the counts: the kernel's guard against rounding
    is checked against this); float frames are rounded to counts, as by the kernel."""
    if not np.issubdtype(frame.dtype, np.integer):
        frame = np.rint(frame)
    x = frame.astype(np.float64)
    m = valid.astype(bool) & (frame >= 0) & (frame < min(trusted_max, 2**31 - 1))
    if np.issubdtype(frame.dtype, np.integer):
        xv = np.where(m, frame, 0).astype(np.int64)
    else:
        xv = np.where(m, x, 0.0)

    def box(a):
        sat = np.pad(a, ((1, 0), (1, 0))).cumsum(0).cumsum(1)
        ny, nx = a.shape
        r0 = np.clip(np.arange(ny) - half_r, 0, ny)
        r1 = np.clip(np.arange(ny) + half_r + 1, 0, ny)
        c0 = np.clip(np.arange(nx) - half_c, 0, nx)
        c1 = np.clip(np.arange(nx) + half_c + 1, 0, nx)
        return (sat[r1][:, c1] - sat[r0][:, c1] - sat[r1][:, c0] + sat[r0][:, c0])

    n = box(m.astype(np.int64)).astype(np.float64)
    s = box(xv).astype(np.float64)
    q = box(xv * xv).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = s / n
        var = (q - s * s / n) / (n - 1)
        disp_ok = var / mean > gain * (1.0 + sigma_b * np.sqrt(2.0 / (n - 1)))
        strong_ok = x > mean + sigma_s * np.sqrt(gain * mean)
    strong = m & (n >= min_local) & (n > 1) & (s > 0) & disp_ok & strong_ok & (x > global_threshold)
    return strong, mean


# --------------------------------------------------------------------------------------
# 3D assembly
# --------------------------------------------------------------------------------------


@dataclass
class PeakTable:
    """Finished peaks: accumulator sums and bounding boxes (rows of N_ACC / N_BOX)."""

    acc: np.ndarray
    box: np.ndarray

    def __len__(self):
        return len(self.acc)


class PeakAssembler:
    """Streams frames of strong pixels into finished 3D peaks (see module docstring)."""

    def __init__(self, shape, capacity: int = 1 << 16):
        self.shape = shape
        self.label_prev = np.full(shape, -1, dtype=np.int32)
        self.label_cur = np.full(shape, -1, dtype=np.int32)
        self._alloc(capacity)
        self.prev_rows = np.zeros(0, dtype=np.int32)
        self.prev_cols = np.zeros(0, dtype=np.int32)
        self.done_acc: list[np.ndarray] = []
        self.done_box: list[np.ndarray] = []

    def _alloc(self, capacity):
        self.parent = np.full(capacity, -1, dtype=np.int64)
        self.acc = np.zeros((capacity, N_ACC))
        self.box = np.zeros((capacity, N_BOX), dtype=np.int64)
        self.free = np.zeros(capacity, dtype=np.int64)
        self.n_free = 0
        self.next_slot = 0

    def _grow(self):
        old = (self.parent, self.acc, self.box, self.free, self.n_free, self.next_slot)
        cap = 2 * len(old[0])
        self.parent = np.full(cap, -1, dtype=np.int64)
        self.parent[:len(old[0])] = old[0]
        self.acc = np.zeros((cap, N_ACC))
        self.acc[:len(old[1])] = old[1]
        self.box = np.zeros((cap, N_BOX), dtype=np.int64)
        self.box[:len(old[2])] = old[2]
        self.free = np.zeros(cap, dtype=np.int64)
        self.free[:len(old[3])] = old[3]
        self.n_free, self.next_slot = old[4], old[5]

    def add_frame(self, f, rows, cols, vals, bg):
        """Strong pixels of frame f, in raster order."""
        count = len(rows)
        # swap label images: the previous frame's becomes "prev"; the other one is clean
        self.label_prev, self.label_cur = self.label_cur, self.label_prev
        for _ in range(64):
            saved = (self.n_free, self.next_slot)
            self.n_free, self.next_slot, overflow = assemble_frame(
                f, rows, cols, vals, bg, count, self.label_prev, self.label_cur, self.parent,
                self.acc, self.box, self.free, self.n_free, self.next_slot)
            if not overflow:
                break
            # undo this frame's partial labels, grow, and redo the frame
            self.label_cur[rows, cols] = -1
            self.n_free, self.next_slot = saved
            self._grow()
        # clear the previous frame's labels now that this frame is linked to them
        self.label_prev[self.prev_rows, self.prev_cols] = -1
        self.prev_rows, self.prev_cols = rows.astype(np.int32), cols.astype(np.int32)
        self._close(f, final=False)

    def _close(self, f, final):
        n = self.next_slot
        out_acc = np.empty((max(n, 1), N_ACC))
        out_box = np.empty((max(n, 1), N_BOX), dtype=np.int64)
        n_out, self.n_free = close_finished(f, self.parent, self.acc, self.box, self.free,
                                            self.n_free, self.next_slot, out_acc, out_box, final)
        if n_out:
            self.done_acc.append(out_acc[:n_out].copy())
            self.done_box.append(out_box[:n_out].copy())

    def finish(self) -> PeakTable:
        self._close(0, final=True)
        if not self.done_acc:
            return PeakTable(np.zeros((0, N_ACC)), np.zeros((0, N_BOX), dtype=np.int64))
        return PeakTable(np.concatenate(self.done_acc), np.concatenate(self.done_box))


# --------------------------------------------------------------------------------------
# The peak search of a scan entry (rule find_peaks): one streamed pass over its frames
# --------------------------------------------------------------------------------------
HOT_PROBE_FRAMES = 20  # frames looked at to find hot pixels before the pass


@dataclass
class PeakSearchResult:
    peaks: dict  # column -> array (one row per peak)
    frame_stats: dict  # name -> array (one value per frame)
    hot_pixels: np.ndarray  # (n, 2) rows, cols
    max_projection: np.ndarray  # per-pixel maximum over the scan (for the picture)
    q_annulus: tuple
    nframes: int
    seconds: float
    strong_pixels: int = 0
    notes: list = field(default_factory=list)
    first_frame: int = 0  # the scan's frame the search began at (a block: frames[first, ...))

    @property
    def scan_max(self) -> float:
        return float(self.frame_stats["max"].max()) if self.nframes else 0.0


class FrameWindow:
    """Frames [first, stop) of a frame stack, numbered from 0: what the search reads of a
    block of a scan in progress (hklflow watch)."""

    def __init__(self, stack, first: int, stop: int):
        if not 0 <= first < stop <= stack.nframes:
            raise ValueError(f"frames {first}-{stop} are outside the scan's {stack.nframes}")
        self.stack, self.first, self.nframes = stack, first, stop - first
        self.frame_shape, self.dtype = stack.frame_shape, stack.dtype

    def read(self, start: int, stop: int, out=None):
        return self.stack.read(self.first + start, self.first + stop, out=out)


def search_frames(stack, first: int, stop: int, geometry: DetectorGeometry,
                  angles: ScanAngles, params: PeakSearchParams, detector: DetectorParams,
                  log=None, threads: int = 1) -> PeakSearchResult:
    """The search of frames [first, stop) of `stack` alone, in the scan's frame numbers and
    angles: a block's peaks, which join_blocks puts together with the other blocks'.  A peak
    that crosses the block's edge is found as two, one in each block."""
    window = FrameWindow(stack, first, stop)
    shifted = ScanAngles(float(angles.angle(first)), angles.step, stop - first)
    result = search(window, geometry, shifted, params, detector, log, threads)
    if first:
        result.peaks["observed_frame"] = result.peaks["observed_frame"] + first
        result.peaks["bounding_box"][:, 4:6] += first
        result.first_frame = first
    return result


def join_blocks(blocks: list) -> PeakSearchResult:
    """The search of a scan as its blocks' (files.peaks.PeaksRecord of search_frames results,
    which must follow each other from frame 0) put together: peaks and frame statistics in
    frame order, the hot pixels of any block, the maximum of every pixel over all."""
    blocks = sorted(blocks, key=lambda b: int(b.frame_stats["frame_number"][0])
                    if len(b.frame_stats["frame_number"]) else 0)
    stop = 0
    for b in blocks:
        frames = np.asarray(b.frame_stats["frame_number"])
        if not len(frames) or int(frames[0]) != stop:
            raise InputMismatchError(f"{b.path}: its frames begin at "
                                     f"{int(frames[0]) if len(frames) else '?'}, the blocks "
                                     f"before it end at {stop}: expected blocks that follow "
                                     "each other from frame 0")
        if b.scan_id != blocks[0].scan_id:
            raise InputMismatchError(f"{b.path} holds peaks of {b.scan_id}, "
                                     f"{blocks[0].path} of {blocks[0].scan_id}")
        stop = int(frames[-1]) + 1
    names = [k for k in blocks[0].frame_stats if k not in ("frame_number", "rotation_angle")]
    peaks = {k: np.concatenate([np.asarray(b.peaks[k]) for b in blocks])
             for k in blocks[0].peaks}
    hot = np.unique(np.concatenate([np.asarray(b.hot_pixels).reshape(-1, 2)
                                    for b in blocks]), axis=0)
    maxproj = np.asarray(blocks[0].max_projection, dtype=np.float64)
    for b in blocks[1:]:
        maxproj = np.fmax(maxproj, np.asarray(b.max_projection, dtype=np.float64))
    notes = list(dict.fromkeys(n for b in blocks for n in b.warnings))
    return PeakSearchResult(peaks, {k: np.concatenate([b.frame_stats[k] for b in blocks])
                                    for k in names},
                            hot, maxproj, tuple(blocks[0].q_annulus), stop, 0.0, notes=notes)


def annulus_map(geometry: DetectorGeometry, usable: np.ndarray, q_annulus) -> tuple[np.ndarray, tuple]:
    """uint8 map of the usable pixels inside the Q annulus of the trimmed sum (default the
    middle fifth of the detector's Q range) and the annulus (low, high) in 1/Angstrom."""
    ny, nx = geometry.shape
    q = np.empty((ny, nx))
    cols = np.arange(nx) + 0.5
    for r0 in range(0, ny, 64):  # blocks of rows: the (rows, cols, 3) temporaries stay small
        rows, cc = np.meshgrid(np.arange(r0, min(r0 + 64, ny)) + 0.5, cols, indexing="ij")
        q[r0:r0 + len(rows)] = np.linalg.norm(geometry.lab_q(rows, cc), axis=-1)
    if q_annulus is None:
        qmax = float(q[usable].max()) if usable.any() else float(q.max())
        q_annulus = (0.4 * qmax, 0.6 * qmax)
    lo, hi = q_annulus
    return ((q >= lo) & (q < hi) & usable).astype(np.uint8), (float(lo), float(hi))


class _FrameDetector:
    """The compiled per-frame detector with its buffers."""

    def __init__(self, shape, params: PeakSearchParams, trusted_max: int):
        ny, nx = shape
        self.p = params
        self.trusted_max = int(trusted_max)
        self.half_r, self.half_c = params.window[0] // 2, params.window[1] // 2
        self.stats = np.zeros(len(FRAME_STATS))
        self.maxproj = None  # the search's per-pixel maximum over the frames this one saw
        self.frame = None  # a frame's buffer (a search of several threads: each reads)
        self._alloc(max(4096, ny * nx // 200))

    def _alloc(self, cap):
        self.rows = np.empty(cap, dtype=np.int32)
        self.cols = np.empty(cap, dtype=np.int32)
        self.vals = np.empty(cap)
        self.bg = np.empty(cap)

    def __call__(self, frame, flags, maxproj=None):
        p = self.p
        while True:
            n = strong_pixels_frame(
                frame, flags, self.half_r, self.half_c, p.sigma_background,
                p.sigma_strong, p.min_local, p.global_threshold,
                float(p.absolute_threshold or 0.0), p.method == "absolute", self.trusted_max,
                self.rows, self.cols, self.vals, self.bg, self.stats, maxproj, gain=p.gain)
            if n >= 0:
                return n
            self._alloc(2 * len(self.rows))
            # (maxproj raised already: raising it again changes nothing)


def lowest_filled(frame: np.ndarray) -> np.ndarray | None:
    """For integer frames, an array of the frame's shape and type holding the type's lowest
    value: a maximum for strong_pixels_frame to raise where none is wanted (the hot-pixel
    probe), so that every call of a search has the same form and the kernel is compiled
    once (each form costs seconds of compiling); None for float frames, whose maximum the
    kernel does not keep."""
    if not np.issubdtype(frame.dtype, np.integer):
        return None
    return np.full(frame.shape, np.iinfo(frame.dtype).min, frame.dtype)


def frames_minimum(stack, stop: int, buffer: np.ndarray) -> np.ndarray:
    """Per-pixel minimum of frames [0, stop) of a FrameStack read into `buffer` (frames of
    its shape and type) a chunk at a time (a 16M detector's probe frames would take GBs),
    NaN passed over (one bad float frame must not hide the hot pixels); None for none."""
    low, smaller = None, (np.fmin if buffer.dtype.kind == "f" else np.minimum)
    for a in range(0, stop, max(len(buffer), 1)):
        b = min(a + len(buffer), stop)
        chunk = smaller.reduce(stack.read(a, b, out=buffer[:b - a]), axis=0)
        low = chunk if low is None else smaller(low, chunk, out=low)
    return low


def hot_pixels_in(low, nframes: int, usable, annulus, params, trusted_max):
    """Pixels that stand out in EVERY one of `nframes` frames (the first frames of the
    scan), from `low`, their per-pixel minimum (frames_minimum): the dispersion test run
    once on it (a Bragg peak does not stay on one pixel that long, so its minimum is
    background; a hot pixel's is not).  Masked before the pass.  Fewer than 5 frames tell
    nothing: no pixel is called hot."""
    if nframes < 5:
        return np.zeros(usable.shape, dtype=bool)
    det = _FrameDetector(usable.shape, params, trusted_max)
    low = np.ascontiguousarray(low)
    k = det(low, pixel_flags(usable, annulus), lowest_filled(low))
    hot = np.zeros(usable.shape, dtype=bool)
    hot[det.rows[:k], det.cols[:k]] = True
    return hot


class _Detection:
    """What the detector found in one frame (copies: the detector's buffers are reused)."""

    __slots__ = ("rows", "cols", "vals", "bg", "stats")

    def __init__(self, det: _FrameDetector, k: int):
        self.rows, self.cols = det.rows[:k].copy(), det.cols[:k].copy()
        self.vals, self.bg = det.vals[:k].copy(), det.bg[:k].copy()
        self.stats = det.stats.copy()


def search(stack, geometry: DetectorGeometry, angles: ScanAngles, params: PeakSearchParams,
           detector: DetectorParams, log=None, threads: int = 1) -> PeakSearchResult:
    """Run the peak search over every frame of `stack` (a frames.FrameStack); detector:
    the trusted maximum and the user mask.  threads > 1 search that many frames at once,
    each thread reading (and decompressing) the frame it searches; one thread reads each
    chunk itself when it comes to it.  The peaks are assembled in frame order, so the
    result does not depend on threads."""
    log = log or logging.getLogger("hklflow.spotfinding")
    t0 = time.monotonic()
    shape = stack.frame_shape
    if tuple(shape) != tuple(geometry.shape):
        raise ValueError(f"frames are {shape} pixels but the detector {geometry.detector} is {geometry.shape}")
    trusted_max = detector.trusted_max_for(stack.dtype)
    usable = ~(geometry.detector_mask() | user_mask(detector, geometry.shape))
    annulus, q_ann = annulus_map(geometry, usable, params.q_annulus)
    nf = stack.nframes
    step = params.frames_per_chunk(stack.dtype.itemsize * shape[0] * shape[1], threads)
    # one buffer of a chunk (several threads: each reads its frame into a buffer of its own)
    buf = np.empty((min(step, nf),) + tuple(shape), dtype=stack.dtype)
    # the minimum of the first frames finds the hot pixels, then the pass reads them again
    # (cheaper than holding them all)
    nprobe = min(HOT_PROBE_FRAMES, nf)
    hot_early = hot_pixels_in(frames_minimum(stack, nprobe, buf), nprobe, usable, annulus,
                              params, trusted_max)
    if threads > 1:  # (the pass reads each frame into its thread's buffer)
        del buf
    if hot_early.any():
        log.info("hot pixels found in the first frames (masked): %d", int(hot_early.sum()))
    usable &= ~hot_early
    notes = check_gain(stack, usable, trusted_max, params, log)
    flags = pixel_flags(usable, annulus)  # (the kernel counts the annulus where usable only)
    free_detectors = queue.SimpleQueue()
    for _ in range(max(1, int(threads))):
        free_detectors.put(_FrameDetector(shape, params, trusted_max))
    asm = PeakAssembler(shape)
    stats = np.zeros((nf, len(FRAME_STATS)))
    strong_count = np.zeros(shape, dtype=np.int32)
    integer = np.issubdtype(stack.dtype, np.integer)
    maxproj = np.full(shape, -1, dtype=np.int64 if integer else np.float64)
    progress = steplog.Progress(log, "frames searched", nf)
    total_strong = 0
    starts = list(range(0, nf, step))

    maxprojs = []  # one per detector: each thread keeps the maximum of its frames

    def detect(f, frame=None):
        """Search frame f: `frame` as read, else read here into the detector's buffer (with
        threads, side by side: h5py's calls are brief, the decompression is not)."""
        det = free_detectors.get()
        try:
            if frame is None:
                if det.frame is None:
                    det.frame = np.empty((1,) + tuple(shape), dtype=stack.dtype)
                frame = stack.read(f, f + 1, out=det.frame)[0]
            if det.maxproj is None:  # in the frames' own type: no conversion per frame
                det.maxproj = isolated_empty(frame.shape, frame.dtype)
                if integer:  # (raised by the kernel from the first frame on)
                    det.maxproj.fill(np.iinfo(frame.dtype).min)
                else:
                    det.maxproj[...] = frame
                maxprojs.append(det.maxproj)
            elif not integer:  # float frames: NaN (unusable) pixels do not hide the maximum
                np.fmax(det.maxproj, frame, out=det.maxproj)
            # integer frames: raised by the kernel in its pass over the frame (always with a
            # maximum: the kernel is compiled in that one form)
            raise_max = det.maxproj if integer else None
            return _Detection(det, det(frame, flags, raise_max))
        finally:
            free_detectors.put(det)

    def assemble(start, found):
        nonlocal total_strong
        for f, d in enumerate(found, start):
            d = d.result() if threads > 1 else d
            stats[f] = d.stats
            strong_count[d.rows, d.cols] += 1
            asm.add_frame(f, d.rows, d.cols, d.vals, d.bg)
            total_strong += len(d.rows)
        progress.update(start + len(found))

    t_pass = time.monotonic()  # (before it: masks, |Q| map, hot pixels, compiled code loaded)
    with ThreadPoolExecutor(max(1, int(threads)), thread_name_prefix="peaks") as workers:
        previous = None
        for start in starts:
            stop = min(start + step, nf)
            if threads > 1:  # read and searched while the previous chunk is assembled
                found = [workers.submit(detect, f) for f in range(start, stop)]
            else:
                found = [detect(f, fr) for f, fr in
                         enumerate(stack.read(start, stop, out=buf[:stop - start]), start)]
            if previous is not None:
                assemble(*previous)
            previous = (start, found)
        if previous is not None:
            assemble(*previous)
    pass_seconds = time.monotonic() - t_pass
    for m in maxprojs:
        np.fmax(maxproj, m, out=maxproj)
    table = asm.finish()
    hot_late = strong_count > max(5, params.hot_pixel_fraction * nf)
    hot = hot_early | hot_late
    peaks = peak_columns(table, geometry, angles)
    keep = (peaks["n_pixels"] >= params.min_spot_size) & (peaks["n_pixels"] <= params.max_spot_size)
    # a peak that is a single hot pixel is no peak
    r0, c0 = peaks["bounding_box"][:, 0], peaks["bounding_box"][:, 2]
    single = (peaks["bounding_box"][:, 1] == r0) & (peaks["bounding_box"][:, 3] == c0)
    keep &= ~(single & hot[r0, c0])
    peaks = {k: v[keep] for k, v in peaks.items()}
    seconds = time.monotonic() - t0
    log.info("%d peaks from %d strong pixels in %d frames; %.1f s on %d thread(s) (the pass "
             "over the frames %.2f s), %.1f Mpixel/s", len(peaks["n_pixels"]), total_strong, nf,
             seconds, threads, pass_seconds, nf * shape[0] * shape[1] / max(seconds, 1e-9) / 1e6)
    frame_stats = {name: stats[:, i] for i, name in enumerate(FRAME_STATS)}
    hot_rc = np.argwhere(hot)
    return PeakSearchResult(peaks, frame_stats, hot_rc, np.where(usable, maxproj, -1), q_ann, nf,
                            seconds, total_strong, notes)


def peak_columns(table: PeakTable, geometry: DetectorGeometry, angles: ScanAngles) -> dict:
    """Peak table -> named columns (centroids, variances, intensity, angles)."""
    a, b = table.acc, table.box
    n = a[:, A_N]
    w = a[:, A_W]
    ok = w > 0
    ws = np.where(ok, w, 1.0)
    # with no weight left after background subtraction, fall back to the box centre
    cx = np.where(ok, a[:, A_WX] / ws, (b[:, B_C0] + b[:, B_C1] + 1) / 2.0)
    cy = np.where(ok, a[:, A_WY] / ws, (b[:, B_R0] + b[:, B_R1] + 1) / 2.0)
    cz = np.where(ok, a[:, A_WZ] / ws, (b[:, B_F0] + b[:, B_F1] + 1) / 2.0)
    var = lambda s2, c: np.where(ok, np.clip(a[:, s2] / ws - c * c, 0, None), 0.0)  # noqa: E731
    intensity = a[:, A_RAW] - a[:, A_BG]
    tth, chi = geometry.two_theta_chi(cy, cx) if len(cy) else (np.zeros(0), np.zeros(0))
    return {
        "observed_px_x": cx, "observed_px_y": cy, "observed_frame": cz,
        "observed_phi": angles.angle(cz),
        "observed_px_x_var": var(A_WXX, cx), "observed_px_y_var": var(A_WYY, cy),
        "observed_frame_var": var(A_WZZ, cz),
        "int_sum": intensity, "int_sum_var": a[:, A_RAW],
        "background_mean": np.where(n > 0, a[:, A_BG] / np.maximum(n, 1), 0.0),
        "max_value": a[:, A_MAX], "n_pixels": n.astype(np.int64),
        "bounding_box": np.stack([b[:, B_R0], b[:, B_R1] + 1, b[:, B_C0], b[:, B_C1] + 1,
                                  b[:, B_F0], b[:, B_F1] + 1], axis=1).astype(np.int64),
        "polar_angle": np.degrees(tth), "azimuthal_angle": np.degrees(chi),
    }


