"""A background scan's volume subtracted from a scan entry's (rule sum_chunks; the
background transformed like the entry, in its units: steps/transform_background).

Each voxel of an entry holds signal S (summed corrected pixel-frames), weight W (their
count) and variance V of S; the background's the same (Sb, Wb, Vb).  The background's mean
m = Sb / Wb is what one pixel-frame of the entry holds of it, so

    S' = S - W m,    V' = V + W^2 var(m),    var(m) = Vb / Wb^2

(the two scans' counts are independent).  With `smooth` N > 0 the background's sums are
first summed over the (2N + 1)^3 voxels around each one (m and var(m) from those sums):
N = 1 divides the background's variance by up to 27 at the cost of blurring it over three
voxels, and of correlating neighbouring voxels' errors (both entries' voxels share
background counts).  A voxel the entry measured and the background did not (within the box)
is left out of the entry (weight 0), and counted.  Half set A (for CC1/2) loses the mean of
the background binned as it is (2 x 2 x 2).
"""
from __future__ import annotations

import numpy as np
from scipy.ndimage import uniform_filter

from ...base.errors import InputMismatchError
from ...files.volume import (VolumeReader, VolumeWriter, read_half_set, read_volume_header,
                             slab_planes)

HOW = ("S - W m per voxel, m = the background's summed signal / summed weight (over "
       "(2 smooth + 1)^3 voxels), variance V + W^2 Vb / Wb^2")


def _box_sums(arrays, smooth: int):
    """Each array summed over the (2 smooth + 1)^3 box around every voxel (zero outside)."""
    if smooth <= 0:
        return [np.asarray(a, np.float64) for a in arrays]
    size = 2 * smooth + 1
    return [uniform_filter(np.asarray(a, np.float64), size, mode="constant") * size ** 3
            for a in arrays]


def _binned(a: np.ndarray) -> np.ndarray:
    """Sums over 2 x 2 x 2 voxels (each axis padded with zeros to an even length)."""
    pad = [(0, n % 2) for n in a.shape]
    a = np.pad(np.asarray(a, np.float64), pad)
    nl, nk, nh = (n // 2 for n in a.shape)
    return a.reshape(nl, 2, nk, 2, nh, 2).sum(axis=(1, 3, 5))


def _transform_notes(notes: dict) -> dict:
    """The notes transform_background wrote (a sum of its one part keeps them in its
    inputs')."""
    inputs = notes.get("inputs")
    if "background" not in notes and inputs:
        return inputs[0].get("notes", {})
    return notes


def subtract_background(entry_path, background_path, out, title: str, provenance: dict,
                        smooth: int = 0, log=None, named=None) -> dict:
    """Write entry - background (module docstring) to `out`; returns what was done (also in
    the volume's notes, `background`; `named`: the background's file as the notes name it,
    where background_path is a scratch copy of it)."""
    head, bg_head = read_volume_header(entry_path), read_volume_header(background_path)
    grid = head.grid
    if not bg_head.grid.same_as(grid) or bg_head.kind != head.kind:
        raise InputMismatchError(f"{background_path}: a {bg_head.kind} on {bg_head.grid.describe()}"
                                 f", not the {head.kind} on {grid.describe()} of {entry_path}")
    smooth = int(smooth)
    halo = max(smooth, 0)
    planes = slab_planes(grid)
    nl = grid.l.n
    left_out = 0
    background_sum = 0.0
    with VolumeReader(entry_path) as entry, VolumeReader(background_path) as bg:
        variance = entry.variance and bg.variance
        if entry.variance != bg.variance and log:
            log.warning("%s: only one of the entry and its background carries a variance: the "
                        "result carries none", background_path)
        notes = dict(head.notes)
        with VolumeWriter(out, grid, head.kind, title, head.sample, notes, provenance,
                          variance=variance) as w:
            for l0 in range(0, nl, planes):
                l1 = min(nl, l0 + planes)
                a0, a1 = max(0, l0 - halo), min(nl, l1 + halo)
                arrays = bg.read(a0, a1)
                sb, wb = _box_sums(arrays[:2], smooth)[:2]
                vb = _box_sums(arrays[2:3], smooth)[0] if variance else None
                inner = slice(l0 - a0, l0 - a0 + (l1 - l0))
                sb, wb = sb[inner], wb[inner]
                s, wt, *v = (np.asarray(a, np.float64) for a in entry.read(l0, l1))
                has_bg = wb > 0
                with np.errstate(divide="ignore", invalid="ignore"):
                    m = np.where(has_bg, sb / wb, 0.0)
                gone = (wt > 0) & ~has_bg
                left_out += int(np.count_nonzero(gone))
                background_sum += float(np.sum(wt * m))
                s = np.where(gone, 0.0, s - wt * m)
                if variance:
                    with np.errstate(divide="ignore", invalid="ignore"):
                        var_m = np.where(has_bg, vb[inner] / wb ** 2, 0.0)
                    v = np.where(gone, 0.0, v[0] + wt ** 2 * var_m)
                w.write(l0, s, np.where(gone, 0.0, wt), v if variance else None)
            made = _transform_notes(bg_head.notes)
            done = {"subtracted": str(named or background_path), "title": bg_head.title,
                    "scan": made.get("background"),
                    "scale": made.get("background_scale"),
                    "scale_how": made.get("background_scale_how"),
                    "smooth": smooth, "how": HOW, "voxels_left_out": left_out,
                    "signal_subtracted": background_sum}
            half = read_half_set(entry_path)
            if half is not None:
                hgrid, hs, hw, how = half
                full = bg.read(0, nl)  # (binned: an eighth of the grid in float64)
                sb, wb = _binned(full[0]), _binned(full[1])
                del full
                with np.errstate(divide="ignore", invalid="ignore"):
                    m = np.where(wb > 0, sb / wb, 0.0)
                gone = (hw > 0) & (wb == 0)
                w.write_half_set(hgrid, np.where(gone, 0.0, hs - hw * m),
                                 np.where(gone, 0.0, hw), how)
                done["half_set"] = "the background's mean binned 2 x 2 x 2 subtracted"
            notes["background"] = done
            notes["signal_sum"] = w.signal_sum
            notes["weight_sum"] = w.weight_sum
            notes["measured_fraction"] = w.measured / grid.size
            w.notes = notes
    if log:
        log.info("%s: background %s subtracted (smooth %d: %s voxels left out, no background "
                 "there); %.4g of the signal %.4g", title, bg_head.title, smooth,
                 f"{left_out:,}", background_sum, background_sum + w.signal_sum)
    return done
