"""Volumes added and symmetrised, slab by slab along L (rules sum_chunks, merge_entries,
symmetrize), so that memory stays bounded whatever the grid: the frame chunks of a scan
entry into its volume, the entries of a temperature into the merged volume (signal and
weight added voxel by voxel, so the gaps of one entry are filled by the others and overlaps
are weighted means), and the merged volume symmetrised by the Laue group (signal and weight
of every voxel summed over its equivalents h R, then divided).

Sums read the inputs slab by slab (about 64 MB per float32 array of a slab), add in float64
and store float32, so an 801^3 grid (2 x 2 GB per input) is summed in a few hundred MB.
Symmetrisation works slab by slab too (a slab and its mirror image read and written
together; by flips and transposes where the grid allows, symmetry.FlipPlan) for every Laue
group but the cubic and rhombohedral ones, which hold the input whole (8 bytes per voxel:
4.1 GB for 801^3).
"""
from __future__ import annotations

import contextlib
import functools

import numpy as np

from ...base import steplog
from ...base.errors import FileFormatError, InputMismatchError
from ...files.volume import (VolumeReader, VolumeWriter, adopt_volume, has_intensity, has_variance,
                             read_half_set, read_volume, read_volume_header, slab_planes,
                             variance_kind)


# Imported at first use: both load numba, which a sum of one volume (moved into place) and
# a merge without symmetrisation never need.
@functools.cache
def _volume_kernels():
    from ...files import volume_kernels

    return volume_kernels


@functools.cache
def _symmetry():
    from . import symmetry

    return symmetry


def check_inputs(paths) -> tuple:
    """Grid, kind and header (read_volume_header) of every input; InputMismatchError naming the
    file that is missing, unreadable, on another grid or of another kind."""
    if not paths:
        raise InputMismatchError("no input volumes")
    headers = []
    for p in paths:
        try:
            headers.append(read_volume_header(p))
        except (OSError, KeyError, ValueError) as exc:
            raise InputMismatchError(f"{p}: cannot read this volume: {exc}") from None
    first = headers[0]
    for p, h in zip(paths[1:], headers[1:]):
        if not h.grid.same_as(first.grid):
            raise InputMismatchError(f"{p}: its grid differs from that of {paths[0]} (volumes add only "
                             f"on the same grid): {h.grid.describe()} here, "
                             f"{first.grid.describe()} there")
        if h.kind != first.kind:
            raise InputMismatchError(f"{p}: a {h.kind} volume cannot be added to the {first.kind} "
                             f"volume {paths[0]}")
        name, name0 = h.sample.get("name"), first.sample.get("name")
        if name and name0 and name != name0:
            raise InputMismatchError(f"{p}: a volume of sample {name!r}, but {paths[0]} is of "
                             f"sample {name0!r}")
    return first.grid, first.kind, headers


def entries_to_merge(paths, unusable: dict, log=None) -> tuple[list, dict]:
    """The entry volumes to merge - those whose entry (the last part of the volume's title
    SAMPLE/TLABEL/ENTRY) is not in `unusable` (entry -> why) - and the entries left out
    (entry -> why); InputMismatchError when none is left."""
    keep, left_out = [], {}
    for p in paths:
        entry = read_volume_header(p).title.split("/")[-1]
        if entry in unusable:
            left_out[entry] = unusable[entry]
            if log:
                log.warning("%s left out of the merge: entry %s: %s", p, entry, unusable[entry])
        else:
            keep.append(p)
    if not keep:
        raise InputMismatchError(f"every entry of {paths[0]}'s temperature is without usable "
                                 "signal: nothing to merge")
    return keep, left_out


def sum_volumes(paths, out, title: str, provenance: dict, planes: int | None = None,
                log=None, move_single: bool = False, left_out: dict | None = None,
                keep=None, scalers=None) -> dict:
    """Write the sum of the volume files `paths` to `out` (atomically); returns its notes.
    move_single: a single complete input (a temporary file nobody else reads) is moved to
    `out` with a new header instead of being rewritten.  left_out: entries not summed and
    why (recorded in the notes).  keep: files.volume_planes.KeptPlanes the writer fills (left
    incomplete when the input is moved).  scalers: per path, the
    algorithms.scaling.apply.EntryScaler its slabs and half set go through before they are
    summed."""
    paths = [str(p) for p in paths]
    grid, kind, headers = check_inputs(paths)
    if scalers is not None and len(scalers) != len(paths):
        raise ValueError(f"{len(scalers)} scalers for {len(paths)} volumes")
    planes = planes or slab_planes(grid)
    nl = grid.l.n
    measured = np.zeros(len(paths), dtype=np.int64)
    total_w = np.zeros(len(paths))
    total_s = np.zeros(len(paths))
    progress = steplog.Progress(log, f"summing {len(paths)} volumes, L planes", nl) if log else None
    notes = {
        "operation": "sum of signal_sum and weight_sum, voxel by voxel (intensity = summed "
                     "signal / summed weight)",
        "inputs": [{"path": p, "title": h.title, "notes": h.notes} for p, h in zip(paths, headers)],
    }
    if left_out:
        notes["left_out"] = dict(left_out)
    sums = ("measured_fraction", "weight_sum", "signal_sum")
    # (issue 81) parts of a transform with the variance from the expected counts carry the
    # variance per unit intensity: summed, then turned into the variance (never mixed with
    # parts that carry the variance itself)
    kinds = [variance_kind(p) for p in paths]
    per_intensity = "per_intensity" in kinds
    if per_intensity and any(k != "per_intensity" for k in kinds):
        other = next(p for p, k in zip(paths, kinds) if k != "per_intensity")
        raise InputMismatchError(
            f"{other}: {'a variance_sum' if kinds[paths.index(other)] else 'no variance'}, but "
            f"{paths[kinds.index('per_intensity')]} carries variance_per_intensity_sum "
            "(reduction.transform.variance_from expected): parts of a transform made with "
            "different reduction.transform.variance or variance_from settings cannot be "
            "summed (make them again)")
    if per_intensity and scalers:
        raise InputMismatchError(f"{paths[0]}: the parts of a transform are summed before "
                                 "they are scaled")
    if move_single and not scalers and len(paths) == 1 \
            and all(k in headers[0].notes for k in sums) \
            and has_intensity(paths[0]) and not per_intensity:
        # the sum of one complete volume is that volume: renamed, not rewritten
        notes["inputs"][0].update({k: headers[0].notes[k] for k in sums})
        notes.update({k: headers[0].notes[k] for k in sums}, adopted=True)
        notes.update({k: headers[0].notes[k] for k in ("variance_from", "variance_how")
                      if k in headers[0].notes})
        adopt_volume(paths[0], out, title, notes, provenance)
        if log:
            log.info("%s: one complete volume, moved to %s (nothing to add)", paths[0], out)
            log.info("%s: %.1f%% of the grid measured", title, 100 * notes["measured_fraction"])
        return notes
    # an input whose notes hold its sums (what VolumeWriter counted) is not counted again
    # (scaled inputs: their sums counted again)
    known = [all(k in h.notes for k in sums) and not scalers for h in headers]
    sample = dict(headers[0].sample)
    counted = (measured, total_w, total_s)
    # variances add like the signal (independent counts): summed where every input has one
    variance = [k is not None for k in kinds]
    if any(variance) and not all(variance) and log:
        log.warning("%s: no variance_sum (made with reduction.transform.variance false?): "
                    "the sum carries no uncertainty", paths[variance.index(False)])
    variance = all(variance)
    notes["variance"] = variance
    if per_intensity:
        from .expected_variance import HOW
        notes["variance_from"] = "expected"
        notes["variance_how"] = HOW
    elif variance:  # (entries' volumes: what their sums recorded)
        made = sorted({h.notes["variance_from"] for h in headers if "variance_from" in h.notes})
        if made:
            notes["variance_from"] = made[0] if len(made) == 1 else made
        how = {h.notes["variance_how"] for h in headers if "variance_how" in h.notes}
        if len(how) == 1 and made == ["expected"]:
            notes["variance_how"] = how.pop()
    with VolumeWriter(out, grid, kind, title, sample, notes, provenance, keep=keep,
                      variance=variance) as w, contextlib.ExitStack() as stack:
        readers = [stack.enter_context(_reader(p, variance=variance,
                                               per_intensity=per_intensity)) for p in paths]
        corners = [r.stored_chunks() for r in readers]
        if per_intensity:  # (slabs with their neighbouring planes: the local intensity)
            _sum_expected_by_slabs(readers, w, planes, known, counted, progress)
        elif not scalers and w.writes_raw_chunks and all(
                c is not None and r.chunks == w.chunks for r, c in zip(readers, corners)):
            _sum_by_chunks(readers, w, sorted(set().union(*corners)), known, counted, progress)
        else:
            _sum_by_slabs(readers, w, planes, known, counted, progress, scalers)
        for i, item in enumerate(notes["inputs"]):
            if known[i]:
                total_w[i], total_s[i] = headers[i].notes["weight_sum"], headers[i].notes["signal_sum"]
                item.update({k: headers[i].notes[k] for k in sums})
            else:
                item.update(measured_fraction=measured[i] / grid.size, weight_sum=total_w[i],
                            signal_sum=total_s[i])
        notes["measured_fraction"] = w.measured / grid.size
        notes["weight_sum"] = float(total_w.sum())
        notes["signal_sum"] = float(total_s.sum())
        notes["half_set"] = _sum_half_sets(paths, w, log, scalers)
        w.notes = notes
    if log:
        for item in notes["inputs"]:
            log.info("%s: %.1f%% of the grid measured", item["path"],
                     100 * item["measured_fraction"])
        log.info("%s: %d volumes summed, %.1f%% of the grid measured", title, len(paths),
                 100 * notes["measured_fraction"])
    return notes


def _sum_half_sets(paths, w: VolumeWriter, log, scalers=None) -> bool:
    """The inputs' half sets A (for CC1/2) summed into w's, where every input has one on the
    same grid (each through its scaler); whether it did."""
    halves = [read_half_set(p) for p in paths]
    if scalers and all(h is not None for h in halves):
        for h, scaler in zip(halves, scalers):
            if scaler is not None:
                scaler.scale(h[0], 0, (h[1], h[2]))
    if any(h is None for h in halves):
        if log and any(h is not None for h in halves):
            log.warning("%s: no half set (made with reduction.transform.half_sets false?): "
                        "the sum has none, and no CC1/2",
                        paths[[h is None for h in halves].index(True)])
        return False
    grid, signal, weight, how = halves[0]
    signal, weight = signal.astype(np.float64), weight.astype(np.float64)
    for path, (g, s, wt, _) in zip(paths[1:], halves[1:]):
        if not g.same_as(grid):
            raise InputMismatchError(f"{path}: its half set's grid {g.describe()} is not "
                                     f"{grid.describe()}")
        signal += s
        weight += wt
    w.write_half_set(grid, signal, weight, how)
    return True


def _read_error(reader, where: str, exc) -> InputMismatchError:
    return InputMismatchError(f"{reader.path}: cannot read {where}: {exc}")


def _sum_by_slabs(readers, w: VolumeWriter, planes: int, known, counted, progress,
                  scalers=None) -> None:
    """The inputs' sum into w, slab by slab: float64 sums rounded once; counted: (measured,
    weight, signal) per input, added to where not known; scalers: per input, what scales its
    slabs first (or None)."""
    volume_kernels = _volume_kernels()
    nl = w.grid.l.n
    slab = (min(planes, nl),) + w.grid.shape[1:]
    part = tuple(np.empty(slab, np.float32) for _ in range(3 if w.variance else 2))
    acc_s, acc_w = np.empty(slab), np.empty(slab)  # float64: the sum is rounded once
    acc_v = np.empty(slab) if w.variance else None
    for l0 in range(0, nl, planes):
        l1 = min(nl, l0 + planes)
        for i, r in enumerate(readers):
            try:
                arrays = r.read(l0, l1, out=part)
            except (OSError, KeyError, ValueError) as exc:
                raise _read_error(r, f"L planes {l0}..{l1 - 1}", exc) from None
            if scalers and scalers[i] is not None:
                scalers[i].scale(w.grid, l0, arrays)
            counts = volume_kernels.add_slab(acc_s[:l1 - l0], acc_w[:l1 - l0], *arrays[:2],
                                             i == 0, not known[i])
            _add_variance(acc_v, arrays, l1 - l0, i == 0)
            for total, c in zip(counted, counts):
                total[i] += c
        w.write(l0, acc_s[:l1 - l0], acc_w[:l1 - l0],
                None if acc_v is None else acc_v[:l1 - l0])
        if progress:
            progress.update(l1)


def _sum_by_chunks(readers, w: VolumeWriter, corners, known, counted, progress) -> None:
    """_sum_by_slabs chunk by chunk, only the chunks some input stores (the others hold
    nothing in any input: most of a temperature's grid), each read, added and stored whole
    (the same float64 sums in the same order: the same chunks stored)."""
    volume_kernels = _volume_kernels()
    shape = w.chunks
    part = tuple(np.empty(shape, np.float32) for _ in range(3 if w.variance else 2))
    acc_s, acc_w = np.empty(shape), np.empty(shape)
    acc_v = np.empty(shape) if w.variance else None
    signal, weight, intensity = (np.empty(shape, np.float32) for _ in range(3))
    rows: dict[int, list] = {}
    for corner in corners:
        rows.setdefault(corner[0], []).append(corner)
    nl, cl = w.grid.l.n, shape[0]
    for l0 in range(0, nl, cl):
        for corner in rows.get(l0, ()):
            for i, r in enumerate(readers):
                try:
                    arrays = r.read_chunk(corner, out=part)
                except (OSError, KeyError, ValueError) as exc:
                    raise _read_error(r, f"the chunk at (l, k, h) = {corner}", exc) from None
                counts = volume_kernels.add_slab(acc_s, acc_w, *arrays[:2], i == 0, not known[i])
                _add_variance(acc_v, arrays, shape[0], i == 0)
                for total, c in zip(counted, counts):
                    total[i] += c
            counts = volume_kernels.slab_sums(acc_s, acc_w, intensity, True, signal, weight, True)
            w.write_chunk(*corner, signal, weight, intensity,
                          None if acc_v is None else acc_v.astype(np.float32), counts=counts)
        w.mark_written(l0, min(l0 + cl, nl))
        if progress:
            progress.update(min(l0 + cl, nl))


def _sum_expected_by_slabs(readers, w: VolumeWriter, planes: int, known, counted,
                           progress) -> None:
    """_sum_by_slabs of parts that carry the variance per unit intensity (gain x sum of a):
    each slab read with its neighbouring L planes, summed in float64, and its variance
    formed from the sums (expected_variance.variance_of_slab) before it is written."""
    from .expected_variance import variance_of_slab

    volume_kernels = _volume_kernels()
    nl = w.grid.l.n
    m = min(planes, nl)
    shape = (m + 2,) + w.grid.shape[1:]
    part = tuple(np.empty(shape, np.float32) for _ in range(3))
    acc = tuple(np.zeros(shape) for _ in range(3))  # float64 S, W, U; plane 0: l0 - 1
    for l0 in range(0, nl, planes):
        l1 = min(nl, l0 + planes)
        n = l1 - l0
        a, b = max(0, l0 - 1), min(nl, l1 + 1)
        for i, r in enumerate(readers):
            try:
                arrays = r.read(a, b, out=part)
            except (OSError, KeyError, ValueError) as exc:
                raise _read_error(r, f"L planes {a}..{b - 1}", exc) from None
            j = l0 - a  # (the slab's first plane in arrays)
            counts = volume_kernels.add_slab(acc[0][1:n + 1], acc[1][1:n + 1], arrays[0][j:j + n],
                                             arrays[1][j:j + n], i == 0, not known[i])
            _add_variance(acc[2][1:n + 1], (arrays[2][j:j + n],), n, i == 0, at=0)
            for total, c in zip(counted, counts):
                total[i] += c
            for src, dst in ((j - 1, 0), (j + n, n + 1)):  # the neighbouring planes
                for x, y in zip(acc, arrays):
                    if not 0 <= src < b - a:
                        x[dst] = 0.0
                    elif i == 0:
                        x[dst] = y[src]
                    else:
                        x[dst] += y[src]
        out = part[2][:n]  # (the float32 read buffer, free until the next slab)
        variance_of_slab(acc[0][:n + 2], acc[1][:n + 2], acc[2][:n + 2], first=1, n=n, out=out)
        w.write(l0, acc[0][1:n + 1], acc[1][1:n + 1], out)
        if progress:
            progress.update(l1)


def _add_variance(acc, arrays, n: int, first: bool, at: int = 2) -> None:
    """acc[:n] (float64) = or += the variance read (arrays' third), where there is one."""
    if acc is None:
        return
    if first:
        acc[:n] = arrays[at][:n]
    else:
        acc[:n] += arrays[at][:n]


def _reader(path, error=InputMismatchError, variance: bool | None = None,
            per_intensity: bool = False) -> VolumeReader:
    try:  # (compiled decompression: kernels compiled anyway)
        return VolumeReader(path, compiled_decompression=True, variance=variance,
                            per_intensity=per_intensity)
    except (OSError, KeyError, ValueError) as exc:
        raise error(f"{path}: cannot read this volume: {exc}") from None


def symmetrize_file(path, out, crystal, provenance: dict, planes: int | None = None,
                    log=None, keep=None) -> dict:
    """Write the symmetrised volume of the volume file `path` to `out`; returns its notes.
    Slab by slab when the Laue group maps L planes onto L planes (symmetry.l_separable):
    each output slab reads only the input planes it needs; otherwise the input is read
    whole.  keep: files.volume_planes.KeptPlanes the writer fills."""
    symmetry = _symmetry()
    try:
        head = read_volume_header(path)
    except (OSError, KeyError, ValueError) as exc:
        raise FileFormatError(f"{path}: cannot read this volume: {exc}") from None
    grid = head.grid
    nl = grid.l.n
    ops = crystal.laue_operators
    maps = symmetry.index_maps(grid, ops, f"{crystal.laue_group} (space group {crystal.hm})")
    sg = head.sample.get("space_group")
    if sg and log and str(sg).replace(" ", "") != crystal.hm.replace(" ", ""):
        log.warning("%s was made with space group %s; symmetrising by the config's %s", path,
                    sg, crystal.hm)
    by_slab = symmetry.l_separable(maps)
    plan = symmetry.flip_plan(grid, ops)
    whole = None
    if not by_slab:
        if log:
            log.info("%s mixes L with H or K: the input is read whole (%.1f GB)",
                     crystal.laue_group, 8 * grid.size / 1e9)
        whole = _read(path, None)
    # slab by slab, slabs of one L chunk (8 planes): the slab and its mirror stay close in
    # cache, which costs less CPU than larger slabs (bench/full_rotation.py)
    planes = planes or (8 if by_slab else slab_planes(grid))
    notes = {"symmetrized": symmetry.symmetry_notes(crystal), "input": str(path),
             "input_title": head.title, "input_notes": head.notes,
             "slab_by_slab": by_slab,
             "method": "flips and transposes" if plan else "gather"}
    inside = measured_before = 0
    progress = steplog.Progress(log, f"symmetrising by {len(ops)} operators, L planes",
                                nl) if log else None
    title = f"{head.title} symmetrized ({crystal.laue_group})"
    identity = next(o for o in range(len(ops)) if np.array_equal(maps[0][o], np.eye(3)))
    variance = has_variance(path)
    if variance:
        notes["symmetrized"]["variance"] = (
            "summed over the equivalents like the signal, times the voxel's stabiliser count "
            "(operators mapping it onto itself: its counts enter the sum that many times)")
    slab = (min(planes, nl),) + grid.shape[1:]
    buffers = ([np.empty(slab, np.float32) for _ in range(6 if variance else 4)]
               if plan is not None else None)
    pairs = plan is not None and plan.mirror is not None
    # a slab and its mirror slab together (each read once); the mirror slabs' writes are not
    # aligned with the L chunks, so the writer keeps two slabs of chunks in its cache
    with VolumeWriter(out, grid, head.kind, title, dict(head.sample), notes, provenance,
                      cache_planes=2 * planes if pairs else 0, keep=keep,
                      variance=variance) as w, \
            _reader(path, FileFormatError, variance=variance) as reader:
        done = 0
        for l0, l1, m0, m1 in _slabs(nl, planes, pairs):
            if pairs and m0 != l0:
                out_l, out_m, n_in, n_before = _flip_pair(reader, buffers, plan, len(ops), l0,
                                                          l1, m0, m1)
                w.write(l0, *_times_stabilizers(out_l, maps, l0, grid.shape))
                w.write(m0, *_times_stabilizers(out_m, maps, m0, grid.shape))
            elif plan is not None:
                arrays, n_in, n_before = _flip_slab(reader, buffers, plan, len(ops), l0, l1, nl)
                w.write(l0, *_times_stabilizers(arrays, maps, l0, grid.shape))
            else:
                arrays, n_in, n_before = _gather_slab(path, whole, maps, identity, l0, l1, nl,
                                                      variance)
                w.write(l0, *_times_stabilizers(arrays, maps, l0, grid.shape))
            inside += n_in
            measured_before += n_before
            done += (l1 - l0) + (m1 - m0 if m0 != l0 else 0)
            if progress:
                progress.update(done)
        notes["symmetrized"]["equivalents_inside_grid"] = inside / (grid.size * len(ops))
        notes["measured_fraction_before"] = measured_before / grid.size
        notes["measured_fraction"] = w.measured / grid.size  # counted by the writer
        w.notes = notes
    return notes


def _times_stabilizers(arrays: tuple, maps, l0: int, shape) -> tuple:
    """(signal, weight[, variance]) of planes l0.. with the variance (summed over the
    equivalents) multiplied by each voxel's stabiliser count (symmetry.stabilizer_counts)."""
    if len(arrays) < 3:
        return arrays
    symmetry = _symmetry()
    counts = symmetry.stabilizer_counts(maps, l0, l0 + arrays[2].shape[0], shape)
    special = counts > 1
    arrays[2][special] *= counts[special]
    return arrays


def _flip_slab(reader, buffers, plan, n_ops, l0, l1, nl):
    """Planes [l0, l1) symmetrised by flips and transposes of the slab and its mirror
    (symmetry.FlipPlan), read into `buffers` (two or three float32 slabs each): (signal,
    weight[, variance]), equivalents inside the grid, measured input voxels."""
    symmetry = _symmetry()
    n = 3 if reader.variance else 2
    try:
        here = reader.read(l0, l1, out=buffers[:n])
        there = reader.read(nl - l1, nl - l0, out=buffers[n:2 * n]) if plan.mirror else None
    except (OSError, KeyError, ValueError) as exc:
        raise FileFormatError(f"{reader.path}: cannot read this volume: {exc}") from None
    mirror = [x[::-1] for x in there] if there else [None] * n
    arrays = symmetry.symmetrize_flips(plan, here[0], here[1], mirror[0], mirror[1],
                                       *((here[2], mirror[2]) if n == 3 else ()))
    # the grid is mapped onto itself: every equivalent is inside
    return arrays, arrays[0].size * n_ops, int(np.count_nonzero(here[1] > 0))


def _slabs(nl: int, planes: int, pairs: bool):
    """(l0, l1, m0, m1) of the slabs to write: with pairs, slabs [l0, l1) of the lower half
    with their mirror slabs [m0, m1) = [nl - l1, nl - l0), then the middle plane of an odd nl
    (its own mirror: m0 = l0); else every slab in order (m0 = l0, m1 = l1)."""
    if not pairs:
        return [(l0, min(nl, l0 + planes), l0, min(nl, l0 + planes)) for l0 in range(0, nl, planes)]
    half = nl // 2
    out = [(l0, min(half, l0 + planes), nl - min(half, l0 + planes), nl - l0)
           for l0 in range(0, half, planes)]
    if nl % 2:
        out.append((half, half + 1, half, half + 1))
    return out


def _flip_pair(reader, buffers, plan, n_ops, l0, l1, m0, m1):
    """Planes [l0, l1) and their mirror planes [m0, m1) symmetrised together
    (symmetry.symmetrize_flip_pair): both outputs, equivalents inside the grid, measured
    input voxels of both."""
    symmetry = _symmetry()
    n = 3 if reader.variance else 2
    try:
        here = reader.read(l0, l1, out=buffers[:n])
        there = reader.read(m0, m1, out=buffers[n:2 * n])
    except (OSError, KeyError, ValueError) as exc:
        raise FileFormatError(f"{reader.path}: cannot read this volume: {exc}") from None
    out_l, out_m = symmetry.symmetrize_flip_pair(plan, here[0], here[1], there[0], there[1],
                                                 *((here[2], there[2]) if n == 3 else ()))
    n_in = (out_l[0].size + out_m[0].size) * n_ops  # the grid is mapped onto itself
    measured = int(np.count_nonzero(here[1] > 0)) + int(np.count_nonzero(there[1] > 0))
    return out_l, out_m, n_in, measured


def _gather_slab(path, whole, maps, identity, l0, l1, nl, variance: bool = False):
    """Planes [l0, l1) symmetrised by the gather kernel, from the input planes they need
    (or the whole input): (signal, weight[, variance]), equivalents inside the grid,
    measured input voxels."""
    symmetry = _symmetry()
    if whole is None:
        spans = symmetry.source_planes(maps, l0, l1, nl)
        parts = [_read(path, (slice(a, b), slice(None), slice(None))) for a, b in spans]
        rows = symmetry.source_rows(maps, spans, l0, l1)
    else:
        parts = [whole]
        rows = np.zeros(len(maps[0]), np.int64)
    src_s, src_w, src_v = (np.concatenate(a) if len(a) > 1 else a[0] for a in (
        [p.signal for p in parts], [p.weight for p in parts],
        [p.variance for p in parts] if variance else [None]))
    s, wt, n_in = symmetry.symmetrize_slab(src_s, src_w, maps, l0, l1, nl, rows)
    arrays = (s, wt)
    if variance:  # (the kernel sums two arrays: the weight again, left unused)
        arrays += (symmetry.symmetrize_slab(src_v, src_w, maps, l0, l1, nl, rows)[0],)
    r = rows[identity]
    return arrays, n_in, int(np.count_nonzero(src_w[l0 - r:l1 - r] > 0))


def _read(path, region):
    try:
        return read_volume(path, region=region)
    except (OSError, KeyError, ValueError) as exc:
        raise FileFormatError(f"{path}: cannot read this volume: {exc}") from None
