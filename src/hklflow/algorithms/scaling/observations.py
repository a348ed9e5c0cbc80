"""The observations scaling fits on: orbits of Laue-equivalent voxels drawn at random from
the voxels some entry measured, and every voxel of each orbit in every entry's volume.

An orbit is all the grid's voxels that the Laue operators map a voxel onto (index maps of
hklflow.algorithms.merge.symmetry); its key is its least flat index, so an orbit drawn twice
counts once.  At most `max_orbits` are drawn, each voxel measured with probability
max_orbits / measured voxels: the cost is bounded whatever the grid.
"""
from __future__ import annotations

import numpy as np

from ...files.volume import VolumeReader, read_volume_header, slab_planes
from ..merge.symmetry import index_maps


def _flat(idx, shape) -> np.ndarray:
    """Flat index in an array [l, k, h] of voxel indices (..., 3) = (ih, ik, il)."""
    nl, nk, nh = shape
    return (idx[..., 2] * nk + idx[..., 1]) * nh + idx[..., 0]


def _unflat(flat, shape) -> np.ndarray:
    nl, nk, nh = shape
    il, rest = np.divmod(flat, nk * nh)
    ik, ih = np.divmod(rest, nh)
    return np.stack([ih, ik, il], axis=-1)


def draw_orbits(grid, operators, paths, max_orbits: int, seed: int = 0):
    """(members, group): flat indices of the voxels of the orbits drawn and each one's orbit
    (0..); drawn among the voxels measured (weight > 0) in some volume of `paths`."""
    rng = np.random.default_rng(seed)
    shape = grid.shape
    measured = max(int(round(read_volume_header(p).notes.get("measured_fraction", 1.0)
                             * grid.size)) for p in paths)
    readers = [VolumeReader(p, compiled_decompression=True) for p in paths]
    try:
        p = min(1.0, max_orbits / max(measured, 1))
        planes = slab_planes(grid)
        drawn = []
        for l0 in range(0, grid.l.n, planes):
            l1 = min(grid.l.n, l0 + planes)
            any_w = None
            for r in readers:
                w = r.read_weight(l0, l1) > 0
                any_w = w if any_w is None else (any_w | w)
            flat = np.flatnonzero(any_w)
            drawn.append(flat[rng.random(len(flat)) < p] + l0 * shape[1] * shape[2])
    finally:
        for r in readers:
            r.close()
    seeds = np.concatenate(drawn) if drawn else np.zeros(0, np.int64)
    if len(seeds) > max_orbits:
        seeds = rng.choice(seeds, max_orbits, replace=False)
    return orbits_of(seeds, grid, operators)


def orbits_of(seeds, grid, operators):
    """(members, group) of the orbits of the voxels at flat indices `seeds` (as draw_orbits)."""
    A, c = index_maps(grid, operators)
    shape = grid.shape
    idx = _unflat(np.asarray(seeds, np.int64), shape)  # (m, 3)
    eq = np.einsum("mi,kij->kmj", idx, A) + c[:, None, :]  # (ops, m, 3)
    n = np.array([shape[2], shape[1], shape[0]])
    inside = np.all((eq >= 0) & (eq < n), axis=-1)
    flat = np.where(inside, _flat(eq, shape), np.iinfo(np.int64).max)
    key = flat.min(axis=0)
    _, first = np.unique(key, return_index=True)
    flat, inside = flat[:, first], inside[:, first]
    group = np.broadcast_to(np.arange(flat.shape[1]), flat.shape)
    pairs = np.unique(np.stack([flat[inside], group[inside]], axis=1), axis=0)
    return pairs[:, 0], pairs[:, 1]


def read_members(path, members, grid) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(signal_sum, weight_sum, variance_sum or None) of a volume at flat indices `members`
    (sorted), read slab by slab."""
    order = np.argsort(members, kind="stable")
    sorted_members = members[order]
    plane = grid.shape[1] * grid.shape[2]
    out = None
    with VolumeReader(path, compiled_decompression=True) as r:
        arrays = None
        planes = slab_planes(grid)
        for l0 in range(0, grid.l.n, planes):
            l1 = min(grid.l.n, l0 + planes)
            a, b = np.searchsorted(sorted_members, [l0 * plane, l1 * plane])
            if a == b:
                continue
            arrays = r.read(l0, l1)
            if out is None:
                out = [np.zeros(len(members)) for _ in arrays]
            local = sorted_members[a:b] - l0 * plane
            for o, arr in zip(out, arrays):
                o[order[a:b]] = arr.reshape(-1)[local]
    if out is None:
        out = [np.zeros(len(members)), np.zeros(len(members))]
    return out[0], out[1], (out[2] if len(out) > 2 else None)


def voxel_hkl(members, grid) -> np.ndarray:
    """(n, 3) hkl of the voxel centres at flat indices `members`."""
    idx = _unflat(members, grid.shape)
    start = np.array([ax.start for ax in grid.axes])
    step = np.array([ax.step for ax in grid.axes])
    return start + idx * step
