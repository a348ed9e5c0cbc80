"""The planes of a volume's intensity a VolumeWriter keeps as it stores its slabs and
chunks (files.volume): the slices its pictures draw, not read back from the file."""
from __future__ import annotations

import numpy as np

from ..base.errors import GridError
from ..model.grid import AXES, Grid


class KeptPlanes:
    """Planes of a volume's intensity kept as a VolumeWriter stores its slabs and chunks:
    the slices its pictures draw, without reading them back from the file it wrote (an H or
    K plane runs through a whole layer of chunks).  planes:
    (axis, value) pairs, axis 'h', 'k' or 'l' (slices.parse_slice); the writer keeps the
    voxel plane nearest each value inside its grid (bind), as the array [l, k, h] without
    that axis, NaN where nothing was stored: what VolumeReader.read_plane returns.
    `complete` once the writer ended with every L plane written (else read the file)."""

    def __init__(self, planes):
        self.specs = [(str(axis), float(value)) for axis, value in planes]
        self.grid: Grid | None = None
        self.sample: dict = {}  # the writer's (its unit cell draws the pictures to scale)
        self.complete = False
        self._planes: dict[tuple[str, int], np.ndarray] = {}

    def bind(self, grid: Grid) -> None:
        """The planes of `grid` nearest the values (those outside it are not kept)."""
        self.grid, self.complete, self._planes = grid, False, {}
        for axis, value in self.specs:
            try:
                index = grid.slice_index(axis, value)
            except GridError:
                continue
            j = 2 - AXES.index(axis)
            shape = tuple(n for a, n in enumerate(grid.shape) if a != j)
            self._planes[(axis, index)] = np.full(shape, np.nan, np.float32)

    def plane(self, axis: str, index: int) -> np.ndarray:
        try:
            return self._planes[(axis, int(index))]
        except KeyError:
            raise KeyError(f"{axis} plane {index} was not kept (kept: "
                           f"{sorted(self._planes)})") from None

    def take(self, l0: int, k0: int, h0: int, block: np.ndarray) -> None:
        """The intensity block [l, k, h] whose first voxel is (l0, k0, h0), cut to the grid."""
        nl, nk, nh = (min(b, n - c) for b, n, c in zip(block.shape, self.grid.shape,
                                                       (l0, k0, h0)))
        for (axis, i), plane in self._planes.items():
            if axis == "l" and l0 <= i < l0 + nl:
                plane[k0:k0 + nk, h0:h0 + nh] = block[i - l0, :nk, :nh]
            elif axis == "k" and k0 <= i < k0 + nk:
                plane[l0:l0 + nl, h0:h0 + nh] = block[:nl, i - k0, :nh]
            elif axis == "h" and h0 <= i < h0 + nh:
                plane[l0:l0 + nl, k0:k0 + nk] = block[:nl, :nk, i - h0]
