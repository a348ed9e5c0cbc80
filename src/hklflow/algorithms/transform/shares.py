"""How the kernel's threads share a grid out, each adding only to its own voxels in the
order of one thread, so that the sums do not depend on the number of threads."""
from __future__ import annotations

import numpy as np

from .bricks import BrickedGrid
from .kernels import _lab_values, _share_runs
from .pixels import BLOCK, PixelTable, pixel_blocks

RANKING_PIXELS = 1 << 18  # ThreadShares ranks its quantities on about this many pixels
LAB_VALUES = ("|Q|", "Q.axis", "|Q x axis|")  # the quantities ThreadShares may share by


class ThreadShares:
    """How the kernel's threads share the work with the sums of one thread bit for bit.

    Each voxel of the grid belongs to one thread, by a quantity of its centre's Q that does
    not change as the crystal turns: |Q|, or, with the scan axis a, Q.a or |Q x a| (the
    one whose shells cut the fewest of the detector's blocks of pixels, counted on a
    sample of RANKING_PIXELS usable pixels).  Thread i owns the voxels whose centre lies in
    the i-th shell (cuts at quantiles over that sample: equal numbers of pixels, to ~0.1% on
    a 2M detector).  A pixel of value v lands, on every frame, in a voxel whose
    centre's value lies within `reach` (the most the quantity changes from a voxel's centre
    to its corners) of v: thread i computes the pixels within `reach` of its shell (the
    few near a cut are computed by both neighbours) and adds only to its own voxels.  A
    voxel is then added to by one thread only, in the order of one thread, and the threads
    need no locks and no hand-over of pixels; they meet once per call (a chunk of frames).

    `owner` says per brick which thread owns all of its voxels, or, -1 - i for the i-th
    brick across a cut, that voxel_owner[512 i:512 (i + 1)] holds the owners of its voxels.
    A thread's pixels are runs of consecutive pixels inside each BLOCK of the detector
    (unusable pixels join the runs around them: they go to the dump), so that it reads,
    decompresses and computes only the blocks and the parts of blocks it needs; a block
    all of whose pixels are its own, far enough from a cut, it adds with no checks."""

    def __init__(self, table: PixelTable, acc: BrickedGrid, M: np.ndarray, threads: int,
                 axis=None):
        self.threads = int(threads)
        if not 1 <= self.threads <= 255:
            raise ValueError(f"threads must be 1 to 255, got {threads}")
        inverse = np.linalg.inv(np.asarray(M, np.float64))  # Q_lab = inverse hkl
        self.metric = np.ascontiguousarray(inverse.T @ inverse)
        # how each quantity is read off an hkl: ("norm", metric) or ("linear", g)
        forms = {"|Q|": ("norm", self.metric)}
        a = g = None
        if axis is not None and self.threads > 1:
            a = np.asarray(axis, np.float64) / np.linalg.norm(axis)
            g = inverse.T @ a  # Q.a = g . hkl
            forms["Q.axis"] = ("linear", g)
            forms["|Q x axis|"] = ("norm", self.metric - np.outer(g, g))
        used = table.index  # (the usable pixels)
        nblocks = pixel_blocks(table.qx.size)
        # rounding: the values and the voxel decisions are float64 of the same float32 table
        q_bound = float(np.sqrt(sum(max(float(np.nanmax(c)), -float(np.nanmin(c))) ** 2
                                    for c in (table.qx, table.qy, table.qz)))) if used.size else 0.0
        self.slack = 1e-9 * (1.0 + q_bound)
        # the quantity whose shells cut the fewest blocks, ranked on a subsample
        sample = used[::max(1, used.size // RANKING_PIXELS)]
        q = [c[sample] for c in (table.qx, table.qy, table.qz)]
        ranked = {name: self._plan(self._lab_value(name, *q, a), sample // BLOCK, nblocks, form,
                                   acc) for name, form in forms.items()}
        self.quantity = min(ranked, key=lambda name: ranked[name]["cost"])
        self.form = forms[self.quantity]
        self.axis, self.g = (a, g) if self.quantity != "|Q|" else (None, None)
        plan = ranked[self.quantity]  # (cuts at quantiles of the subsample)
        self.cuts, self.reach = plan["cuts"], plan["reach"]
        b = acc.brick
        self.owner, self.voxel_owner = self._owners(
            acc, self._reach([(b - 1) / 2.0 * ax.step for ax in acc.grid.axes]) + self.slack)
        self.mixed_bricks = self.voxel_owner.size / (b ** 3 * max(self.owner.size, 1))
        # each thread's pixels, exactly, in one pass over the detector each
        edges = np.concatenate([[-np.inf], self.cuts, [np.inf]])
        which, npix = LAB_VALUES.index(self.quantity), table.qx.size
        axis3 = np.zeros(3) if a is None else a
        self.shares, self.computed, self.blocks = [], [], []  # shares: _accumulate's `share`
        for me in range(self.threads):
            block_runs = np.empty(nblocks + 1, np.int64)
            starts = np.empty(npix // 2 + nblocks + 1, np.int64)  # (pages untouched: free)
            stops = np.empty_like(starts)
            shared = np.empty(nblocks, np.uint8)
            own, touched, touched_shared = _share_runs(
                table.qx, table.qy, table.qz, table.corr_all, which, *axis3,
                edges[me] - self.reach, edges[me + 1] + self.reach,
                edges[me] + self.reach, edges[me + 1] - self.reach,
                block_runs, starts, stops, shared)
            nruns = block_runs[-1]
            self.shares.append((block_runs, starts[:nruns].copy(), stops[:nruns].copy(),
                                self.owner, me, self.voxel_owner, shared))
            self.computed.append(own / used.size if used.size else 0.0)
            self.blocks.append((touched, touched_shared))

    @staticmethod
    def _lab_value(name: str, qx, qy, qz, axis) -> np.ndarray:
        """The quantity `name` of the lab Q of pixels (float32 components; NaN where Q is)."""
        a = np.zeros(3) if axis is None else np.asarray(axis, np.float64)
        out = np.empty(qx.size, np.float64)
        _lab_values(qx, qy, qz, LAB_VALUES.index(name), a[0], a[1], a[2], out)
        return out

    def _reach(self, half, form=None) -> float:
        """The most the quantity changes from a box's centre to its corners (half its sides
        in hkl)."""
        kind, m = form or self.form
        if kind == "linear":
            return float(np.abs(m) @ np.asarray(half))
        corners = np.array([[sh * half[0], sk * half[1], sl * half[2]]
                            for sh in (-1, 1) for sk in (-1, 1) for sl in (-1, 1)])
        return float(np.sqrt(np.maximum(np.einsum("ni,ij,nj->n", corners, m, corners),
                                         0.0)).max())

    def value(self, h, k, l) -> np.ndarray:  # noqa: E741
        """The quantity the grid is shared by, at (h, k, l) (arrays that broadcast)."""
        kind, m = self.form
        if kind == "linear":
            return m[0] * h + m[1] * k + m[2] * l
        v2 = (m[0, 0] * h * h + m[1, 1] * k * k + m[2, 2] * l * l
              + 2.0 * (m[0, 1] * h * k + m[0, 2] * h * l + m[1, 2] * k * l))
        return np.sqrt(np.maximum(v2, 0.0))

    def _plan(self, value, block, nblocks, form, acc: BrickedGrid) -> dict:
        """Cuts and reach for one quantity (value and block per usable pixel of a sample),
        and what it costs: the blocks each thread touches, the shared ones (some pixel not
        surely its own: their voxels checked) counted twice."""
        cuts = (np.quantile(value, np.arange(1, self.threads) / self.threads)
                if value.size else np.zeros(self.threads - 1))
        reach = self._reach([ax.step / 2.0 for ax in acc.grid.axes], form) + self.slack
        edges = np.concatenate([[-np.inf], cuts, [np.inf]])
        cost = 0
        for me in range(self.threads):
            mine = (value >= edges[me] - reach) & (value < edges[me + 1] + reach)
            sure = (value >= edges[me] + reach) & (value < edges[me + 1] - reach)
            touched = np.bincount(block[mine], minlength=nblocks) > 0
            shared = np.bincount(block[~sure], minlength=nblocks) > 0
            cost += int(touched.sum()) + int((touched & shared).sum())
        return dict(cuts=cuts, reach=reach, cost=cost)

    def _owners(self, acc: BrickedGrid, brick_reach: float):
        """(owner per brick, the voxels' owners of the bricks across a cut): a brick whose
        voxel centres (all within brick_reach of its centre) lie in one shell is that
        thread's; the i-th other one gets -1 - i, its voxels' owners [l, k, h] at
        voxel_owner[512 i:512 (i + 1)]."""
        b = acc.brick
        nbl, nbk, nbh = (int(v) for v in acc.nbricks)
        h, k, l = (ax.start + (b * np.arange(nb) + (b - 1) / 2.0) * ax.step  # noqa: E741
                   for ax, nb in zip(acc.grid.axes, (nbh, nbk, nbl)))
        centre = self.value(h[None, None, :], k[None, :, None], l[:, None, None]).reshape(-1)
        low = np.searchsorted(self.cuts, centre - brick_reach, side="right")
        owner = np.where(low == np.searchsorted(self.cuts, centre + brick_reach, side="right"),
                         low, -1).astype(np.int32)
        mixed = np.flatnonzero(owner < 0)
        owner[mixed] = -1 - np.arange(mixed.size, dtype=np.int32)
        voxel_owner = np.empty((mixed.size, b, b, b), np.uint8)
        bl, rest = np.divmod(mixed, nbk * nbh)
        bk, bh = np.divmod(rest, nbh)
        inside = np.arange(b)
        for i in range(0, mixed.size, 1024):
            part = slice(i, i + 1024)
            h, k, l = (ax.start + (b * bx[part, None] + inside) * ax.step  # noqa: E741
                       for ax, bx in zip(acc.grid.axes, (bh, bk, bl)))
            v = self.value(h[:, None, None, :], k[:, None, :, None], l[:, :, None, None])
            voxel_owner[part] = np.searchsorted(self.cuts, v, side="right")
        return owner, voxel_owner.reshape(-1)

    def describe(self) -> str:
        return (f"{self.threads} threads share the grid by shells of {self.quantity} (cuts "
                f"{', '.join(f'{c:.4f}' for c in self.cuts)} 1/A), each computing "
                f"{', '.join(f'{100 * c:.1f}' for c in self.computed)}% of the pixels "
                f"({100 * (sum(self.computed) - 1):.1f}% computed twice, within "
                f"{self.reach:.4f} 1/A of a cut) and checking the voxels of "
                f"{', '.join(str(s) for _, s in self.blocks)} of their "
                f"{', '.join(str(t) for t, _ in self.blocks)} blocks of pixels")

    def fits(self, M: np.ndarray) -> bool:
        """Whether frame matrices M (..., 3, 3) keep the quantity these shares were made for
        (a turn of the same crystal about the scan axis: the one guarantee of the split)."""
        inv = np.linalg.inv(np.asarray(M, np.float64).reshape(-1, 3, 3))
        metric = np.einsum("nki,nkj->nij", inv, inv)
        tol = 1e-12 * np.abs(self.metric).max()
        if np.abs(metric - self.metric).max() > tol:
            return False
        if self.axis is None:
            return True
        g = np.einsum("nki,k->ni", inv, self.axis)  # Q.axis = g . hkl, the same on every frame
        return bool(np.abs(g - self.g).max() <= 1e-12 * np.abs(self.g).max() + 1e-300)
