"""The compiled loops of the Bragg mask (masking.ScanMask): the ellipsoids indexed by frame,
painted onto a frame's pixels, and the masked pixels counted."""
from __future__ import annotations

import math

import numba
import numpy as np


@numba.njit(cache=True, nogil=True)
def _frame_index(regions, nframes):
    """CSR index of the regions by frame: the regions that may touch frame f are
    idx[ptr[f]:ptr[f+1]] (a superset by at most a frame at either end; the kernel tests)."""
    n = regions.shape[0]
    lo = np.empty(n, np.int64)
    hi = np.empty(n, np.int64)
    ptr = np.zeros(nframes + 1, np.int64)
    for i in range(n):
        fc = regions[i, 2]
        af = regions[i, 5]
        a = max(int(math.floor(fc - af - 0.5)), 0)
        b = min(int(math.ceil(fc + af - 0.5)), nframes - 1)
        lo[i] = a
        hi[i] = b
        for f in range(a, b + 1):
            ptr[f + 1] += 1
    for f in range(nframes):
        ptr[f + 1] += ptr[f]
    idx = np.empty(ptr[nframes], np.int64)
    fill = ptr[:nframes].copy()
    for i in range(n):
        for f in range(lo[i], hi[i] + 1):
            idx[fill[f]] = i
            fill[f] += 1
    return ptr, idx


@numba.njit(cache=True, nogil=True)
def _paint(regions, ptr, idx, first, stop, rows, cols, out, old, new, counts, blocks, block):
    """Set out[f - first, r * cols + c] = new for every pixel-frame centre inside a region
    of frames [first, stop) (only where out == old if old >= 0); returns how many changed
    and adds 1 to counts[r * cols + c] for each (if counts is not empty); sets
    blocks[f - first, (r * cols + c) // block] = 1 for every such pixel-frame (if blocks is
    not empty).  Only the bounding box of each region's cross-section is visited."""
    count = counts.shape[0] > 0
    mark = blocks.shape[0] > 0
    changed = 0
    for f in range(first, stop):
        z = f + 0.5
        o = f - first
        for j in range(ptr[f], ptr[f + 1]):
            i = idx[j]
            rc = regions[i, 0]
            cc = regions[i, 1]
            fc = regions[i, 2]
            ar = regions[i, 3]
            ac = regions[i, 4]
            af = regions[i, 5]
            dz = (z - fc) / af
            tz = dz * dz
            if tz > 1.0:
                continue
            hr = ar * math.sqrt(1.0 - tz)
            r0 = max(int(math.floor(rc - hr - 0.5)), 0)
            r1 = min(int(math.ceil(rc + hr - 0.5)), rows - 1)
            for r in range(r0, r1 + 1):
                dr = (r + 0.5 - rc) / ar
                dr2 = dr * dr
                if dr2 + tz > 1.0:
                    continue
                hc = ac * math.sqrt(max(1.0 - (dr2 + tz), 0.0))
                c0 = max(int(math.floor(cc - hc - 0.5)), 0)
                c1 = min(int(math.ceil(cc + hc - 0.5)), cols - 1)
                base = r * cols
                for c in range(c0, c1 + 1):
                    dc = (c + 0.5 - cc) / ac
                    # the same expression, in the same order, as the documented test
                    if dr2 + dc * dc + tz <= 1.0:
                        k = base + c
                        if mark:
                            blocks[o, k // block] = 1
                        if out[o, k] != new and (old < 0 or out[o, k] == old):
                            out[o, k] = new
                            changed += 1
                            if count:
                                counts[k] += 1
    return changed


@numba.njit(cache=True, nogil=True)
def _masked_counts(regions, ptr, idx, nframes, rows, cols, pixels):
    """The Bragg mask where it adds to the pixel mask (usable pixels in a region): per frame
    the pixels, per pixel the frames.  One frame of buffer, cleared after each frame by
    painting the regions again."""
    buf = np.zeros((1, rows * cols), np.uint8)
    flat = pixels.ravel()
    for k in range(rows * cols):
        buf[0, k] = 1 if flat[k] else 0
    per_frame = np.zeros(nframes, np.int64)
    per_pixel = np.zeros(rows * cols, np.int32)
    none = np.zeros(0, np.int32)
    no_blocks = np.zeros((0, 0), np.uint8)
    for f in range(nframes):
        per_frame[f] = _paint(regions, ptr, idx, f, f + 1, rows, cols, buf, 0, 2, per_pixel,
                              no_blocks, 1)
        _paint(regions, ptr, idx, f, f + 1, rows, cols, buf, 2, 0, none, no_blocks, 1)
    return per_frame, per_pixel.reshape(rows, cols)
