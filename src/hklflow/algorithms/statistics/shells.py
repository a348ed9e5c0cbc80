"""Whether the per-voxel uncertainties of a merged volume hold: figures in shells of |Q|.

For a merged, NOT symmetrised volume (symmetrising averages the equivalents this compares),
given as additive arrays on the grid, array[l, k, h] (docs/conventions.md): signal (summed
corrected intensity), weight (summed weight) and variance (the summed variance of signal),
so that a voxel's intensity is I = signal / weight and its uncertainty
sigma(I) = sqrt(variance) / weight, this module computes per shell of |Q| and overall:

* **voxels**: the grid's voxels in the shell; **measured**: weight > 0 with signal and
  variance finite and variance >= 0; **zero_sigma**: measured voxels with variance == 0 (a
  voxel whose pixels all read 0 counts), left out of I/sigma and chi^2 (no division by
  zero) and counted;
* **mean I/sigma** over the measured voxels with sigma > 0 (= signal / sqrt(variance));
* **chi^2/nu of symmetry-equivalent voxels**: the orbit of a voxel under the Laue group
  is the set of *distinct* grid voxels i A + c (symmetry.index_maps) over the operators
  (images outside the grid left out): a voxel on a special position (a mirror plane, an
  axis, the origin) that several operators map onto one voxel is one observation.  Each
  orbit is counted once, from its representative, the voxel of the orbit with the smallest
  flat index ((l nk + k) nh + h), in the shell of that voxel's |Q|.  Of an orbit's
  voxels, those measured with sigma > 0 are its observations; with n >= 2 of them,
  mean = sum(I/s^2) / sum(1/s^2), chi2 = sum((I - mean)^2 / s^2), nu = n - 1, summed per
  shell: chi^2/nu = sum chi2 / sum nu (about 1 where sigma and the symmetry hold);
* **CC1/2**: Pearson's correlation of I_A and I_B of two half volumes over the voxels
  measured in both (weight_A > 0 and weight_B > 0), when halves are given.

|Q| (1/Angstrom, no 2 pi) of a voxel is |B h| for its voxel centre h (Crystal.B, UnitCell.B:
|Q|^2 = h G* h^T with G* = B^T B).  **Shells** are equal in volume, i.e. equal steps of
|Q|^3, from 0 to q_max: the given one, or the outer edge of the last of NFINE fine bins
of |Q|^3 (0 to the grid's largest |Q|) that holds a measured voxel, so every voxel is
binned once in one pass and the shells are cut from the fine bins at the end (edges within
1/NFINE of the grid's |Q|^3 range; the edges reported are the fine bins').  A figure from
fewer than min_voxels voxels (I/sigma: voxels with sigma > 0; chi^2/nu: nu; CC1/2: pairs)
is None, and a shell with fewer than min_voxels measured voxels is marked too_few.
bragg_exclusion = r > 0 leaves out (from every figure; counted as `excluded`) the voxels
within |Q| distance r (1/Angstrom, no 2 pi) of an integer (h, k, l): the Bragg nodes of a
volume whose peaks were not masked, whose equivalents differ by far more than their sigma.

**The flag** (defaults): chi^2/nu overall outside [1/1.5, 1.5], or in a shell with
nu >= 1000 outside [1/2, 2].  With nu in the thousands the statistical scatter of chi^2/nu
is sqrt(2/nu) <= 0.045, so the bounds see systematic departures only.  1.5 overall is sigma
about 20 % too small (sqrt 1.5 = 1.22): far outside what sigma should reach (0.9-1.1), yet
well below the 2 that a detector of 2 counts per photon gives when the config says 1 (true
variance twice the stated).  One shell may go to 2 (sigma 40 % off) before it flags alone:
effects local in |Q| (absorption at low angles, Bragg nodes, the few orbits near the origin)
move one shell where the whole stays put, and a flag that fires on every volume is ignored.
The lower bounds are the reciprocals (sigma overestimated: the config's gain larger than the
detector's; or equivalents that are not independent); below 0.05 the volume looks
symmetrised.  The sentence (flag_reason) gives the overall value, the worst shell and the
likely causes.

Memory stays bounded.  When every Laue operator maps L planes onto L planes
(symmetry.l_separable: every Laue group but the cubic and rhombohedral ones) an orbit's
voxels lie in planes l and m(l) = c - l (c: the L-reversing operators' offset, nl - 1 on a
grid symmetric about 0), so the planes are taken in windows closed under l -> m(l): up to
`planes` planes with m(l) >= l (or m(l) outside the grid) and their mirrors, each plane
read once, and every figure is exact.  Memory: two slabs of `planes` planes of the arrays
(float32: 12 bytes per voxel with variance, 16 more for the halves): 2 x 8 x 801^2 x 28 B
= 290 MB for an 801^3 grid, plus the fine-bin accumulators (float64, 10 x NFINE for each
of up to 16 parts filled in parallel: 10 MB, and 6 MB for CC1/2).
Otherwise (cubic, rhombohedral) the per-voxel figures (counts, I/sigma, CC1/2) come from a
pass over all the planes, and chi^2/nu from the orbits of a sample: the voxels i0 + s t
(t integer, i0 the voxel of hkl = 0) of a sub-lattice of stride s, mapped onto itself by
every operator, held whole (12 bytes per voxel): s = 1 (every orbit) while the grid holds
at most max_sample_voxels, else the smallest s that brings the sub-lattice under it and
is coprime with every axis's 1/step (so the sample holds as large a share of integer-hkl
voxels as the grid); the result states s (orbit_sample_stride).  With the default
max_sample_voxels (32 M: 384 MB) an 801^3 grid with step 1/m, m not a multiple of 3, is
sampled with s = 3 (267^3 = 19 M voxels, 229 MB).

Cost, measured on a synthetic 201^3 volume (8.1 M voxels, float32 signal, weight,
variance and two halves: 227 MB of arrays held by the caller; kernels compiled and cached;
2 cores shared with other jobs, load ~4, so times are upper bounds; min of 3 runs):

* 4/mmm (slab by slab, every orbit): 1.1 s on 1 thread, 1.3-1.8 s on 2; memory above the
  input arrays +30 MB with planes = 8 (peak RSS; numpy's own allocations the same by
  tracemalloc), +82 MB with planes = 32.  Linear in voxels and planes: 801^3 (64x the
  voxels) would be of the order of 1-2 min a core and ~300 MB (extrapolated, not measured).
* m-3m, every orbit (the volume held whole): 3.3-4.3 s, +116 MB (12 B a voxel);
  with a stride-3 sample (max_sample_voxels = 2 M; 67^3 voxels): 0.6-1.4 s, +24 MB.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace

import numpy as np

from ...model.grid import Grid
from ..merge import symmetry
from . import MEANING
from .kernels import (_CCA, _CCAA, _CCAB, _CCB, _CCBB, _CCN, _CHI2, _EXCL, _IOS, _MEAS, _NACC, _NCC,
                      _NIOS, _NU, _OBS, _ORB, _VOX, _ZERO, _cc_kernel, _window_kernel)

NFINE = 8192  # fine bins of |Q|^3 that the shells are cut from
_PARTS = 16  # accumulators (of NFINE bins) a kernel call fills in parallel, rows dealt round

Reader = Callable[[int, int], Sequence[np.ndarray]]


# --------------------------------------------------------------------------------------
# Result
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ShellRow:
    """The figures of one shell of |Q| (or of all of them: VolumeStatistics.overall)."""

    q_min: float  # 1/Angstrom (no 2 pi)
    q_max: float
    voxels: int  # grid voxels in the shell
    measured: int  # weight > 0, signal and variance finite (and variance >= 0)
    zero_sigma: int  # measured with variance == 0: left out of I/sigma and chi^2
    excluded: int  # within bragg_exclusion of an integer hkl: left out of every figure
    i_over_sigma: float | None  # mean I/sigma over measured voxels with sigma > 0
    orbits: int  # orbits (representative in the shell) with >= 2 observations
    observations: int  # their distinct measured voxels with sigma > 0
    chi2: float  # sum over those orbits of sum (I - weighted mean)^2 / sigma^2
    nu: int  # sum of (observations - 1)
    chi2_nu: float | None  # chi2 / nu
    cc_pairs: int  # voxels measured in both halves
    cc_half: float | None  # Pearson correlation of I_A and I_B over them
    too_few: bool  # measured < min_voxels

    def as_dict(self) -> dict:
        return {k: _json_number(v) for k, v in asdict(self).items()}


@dataclass(frozen=True)
class VolumeStatistics:
    """Figures in shells of |Q| (module docstring) and a flag when chi^2/nu departs from 1."""

    shells: tuple[ShellRow, ...]
    overall: ShellRow
    laue_group: str
    operators: int
    orbit_sample_stride: int  # 1: every orbit; s: the orbits of a sub-lattice of stride s
    orbit_sample: str  # in words
    q_max_from: str  # "measured voxels" or "given"
    beyond: int  # grid voxels beyond the last shell (measured ones only when q_max is given)
    beyond_measured: int
    has_variance: bool
    has_halves: bool
    bragg_exclusion: float
    min_voxels: int
    flag_overall: float
    flag_shell: float
    flag_min_nu: int
    flag: bool
    flag_reason: str  # a sentence when flag, else ""
    extra: dict = field(default_factory=dict)

    def to_notes(self) -> dict:
        """A JSON-serialisable dict for a volume's notes."""
        return {
            "laue_group": self.laue_group, "operators": self.operators,
            "shells": [r.as_dict() for r in self.shells],
            "overall": self.overall.as_dict(),
            "q_max_from": self.q_max_from,
            "beyond_last_shell": {"voxels": self.beyond, "measured": self.beyond_measured},
            "orbit_sample_stride": self.orbit_sample_stride,
            "orbit_sample": self.orbit_sample,
            "bragg_exclusion_inverse_angstrom": self.bragg_exclusion,
            "min_voxels": self.min_voxels,
            "flag": self.flag, "flag_reason": self.flag_reason,
            "flag_thresholds": {
                "overall": [round(1 / self.flag_overall, 4), self.flag_overall],
                "shell": [round(1 / self.flag_shell, 4), self.flag_shell],
                "shell_min_nu": self.flag_min_nu},
            "meaning": MEANING,
            "how": {
                "measured": "weight > 0, signal and variance finite; I = signal/weight, "
                            "sigma = sqrt(variance)/weight; sigma == 0 voxels (zero_sigma) "
                            "are left out of I/sigma and chi^2",
                "chi2_nu": "per orbit of distinct grid voxels under the Laue group (special "
                           "positions: each voxel once), counted at its representative (the "
                           "smallest flat index, whose |Q| gives the shell): chi2 = "
                           "sum (I - sum(I/s^2)/sum(1/s^2))^2/s^2 over its n >= 2 measured "
                           "voxels, nu = n - 1; chi2_nu = sum chi2 / sum nu",
                "cc_half": "Pearson correlation of the two halves' intensities over the "
                           "voxels measured in both" if self.has_halves else "no halves given",
                "shells": "equal steps of |Q|^3 from 0 to q_max (" + self.q_max_from + ")",
            },
            **self.extra,
        }

    def log_lines(self) -> list[str]:
        """A short table for a step's log."""
        head = (f"uncertainty statistics (Laue group {self.laue_group}, {self.operators} "
                f"operators; chi2 of equivalents from {self.orbit_sample}):")
        cols = (f"  {'|Q| 1/A':>13} {'voxels':>10} {'measured':>10} {'sigma=0':>8} "
                f"{'I/sigma':>8} {'chi2/nu':>8} {'nu':>10} {'CC1/2':>7}")
        lines = [head, cols]
        for r in self.shells + (self.overall,):
            label = "overall" if r is self.overall else f"{r.q_min:.3f}-{r.q_max:.3f}"
            lines.append(f"  {label:>13} {r.voxels:>10} {r.measured:>10} {r.zero_sigma:>8} "
                         f"{_fmt(r.i_over_sigma, 8, '.2f')} {_fmt(r.chi2_nu, 8, '.3f')} "
                         f"{r.nu:>10} {_fmt(r.cc_half, 7, '.4f')}"
                         + ("  (too few voxels)" if r.too_few else ""))
        if self.bragg_exclusion > 0:
            lines.append(f"  {self.overall.excluded} voxels within {self.bragg_exclusion:g} "
                         "1/A (no 2 pi) of integer hkl left out")
        if self.overall.chi2_nu is None and not self.flag:
            lines.append("  chi2/nu of equivalents not computed: " + (
                "the volume has no variance" if not self.has_variance else
                f"nu = {self.overall.nu} < min_voxels = {self.min_voxels}"))
            return lines
        lines.append(("  FLAG: " + self.flag_reason) if self.flag else
                     f"  chi2/nu within [{1 / self.flag_overall:.2f}, {self.flag_overall:g}] "
                     f"overall and [{1 / self.flag_shell:.2f}, {self.flag_shell:g}] in every "
                     f"shell with nu >= {self.flag_min_nu}")
        return lines


def _fmt(v, width, spec) -> str:
    return f"{'-':>{width}}" if v is None else f"{v:>{width}{spec}}"


def _json_number(v):
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


# --------------------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------------------
def array_reader(*arrays) -> Reader:
    """A reader of planes [l0, l1) of arrays [l, k, h] (None entries stay None)."""
    return lambda l0, l1: tuple(None if a is None else a[l0:l1] for a in arrays)


def volume_statistics(grid: Grid, crystal, read: Reader, halves=None, *, shells: int = 10,
                      q_max: float | None = None, min_voxels: int = 100, planes: int = 8,
                      max_sample_voxels: int = 32_000_000, sample_stride: int | None = None,
                      bragg_exclusion: float = 0.0, flag_overall: float = 1.5,
                      flag_shell: float = 2.0, flag_min_nu: int = 1000) -> VolumeStatistics:
    """The figures of a merged (not symmetrised) volume in `shells` equal-volume shells of |Q|.

    grid: the volume's Grid; crystal: a Crystal (laue_operators, B, laue_group);
    read(l0, l1): signal, weight and variance (float arrays [l1 - l0, k, h]) of L planes
    [l0, l1), variance None or left out when the volume has none (then no I/sigma or chi^2);
    halves: (read_a, read_b) giving signal and weight of the two halves, for CC1/2.
    q_max: the outer edge of the shells (1/A; default: the last measured voxel's);
    min_voxels: figures from fewer voxels are None; planes: L planes a slab (memory);
    max_sample_voxels, sample_stride: the orbit sample of groups that mix L with H or K
    (module docstring; sample_stride forces a stride); bragg_exclusion: |Q| distance
    (1/A, no 2 pi) about integer hkl left out of every figure (0: none).
    Flag: chi^2/nu overall outside [1/flag_overall, flag_overall] or, in a shell with
    nu >= flag_min_nu, outside [1/flag_shell, flag_shell].
    Raises symmetry.GridSymmetryError when the Laue operators do not map the grid's voxel
    centres onto voxel centres."""
    if shells < 1 or planes < 1 or min_voxels < 0:
        raise ValueError(f"shells ({shells}) and planes ({planes}) must be >= 1, min_voxels >= 0")
    if not (flag_overall > 1 and flag_shell > 1):
        raise ValueError("flag thresholds must be > 1")
    ops = np.asarray(crystal.laue_operators)
    laue = str(getattr(crystal, "laue_group", ""))
    maps = symmetry.index_maps(grid, ops, laue)
    # operators that take the far corner lowest first: the representative test of most
    # voxels stops at the first operator (one reversing L for the upper planes)
    far = np.array([n - 1 for n in (grid.h.n, grid.k.n, grid.l.n)]) @ maps[0] + maps[1]
    order = np.argsort((far[:, 2] * grid.k.n + far[:, 1]) * grid.h.n + far[:, 0], kind="stable")
    A = np.ascontiguousarray(maps[0][order], np.int64)
    c = np.ascontiguousarray(maps[1][order], np.int64)
    B = np.asarray(crystal.B, float)
    G = np.ascontiguousarray(B.T @ B)
    start = np.array([ax.start for ax in grid.axes], float)
    step = np.array([ax.step for ax in grid.axes], float)
    if q_max is not None:
        if not (q_max > 0 and math.isfinite(q_max)):
            raise ValueError(f"q_max must be > 0, got {q_max}")
        q3span = float(q_max) ** 3
    else:
        corners = np.array([[a, b, cc] for a in (grid.h.start, grid.h.stop)
                            for b in (grid.k.start, grid.k.stop)
                            for cc in (grid.l.start, grid.l.stop)])
        q2 = np.einsum("ni,ij,nj->n", corners, G, corners).max()
        q3span = float(q2) ** 1.5 * (1 + 1e-9) or 1.0
    acc = np.zeros((_NACC, NFINE + 1))
    cc = np.zeros((_NCC, NFINE + 1))
    state = _State(grid, read, halves, A, c, G, start, step, q3span, bragg_exclusion, acc, cc)
    if symmetry.l_separable((A, c)):
        stride = 1
        _by_windows(state, planes)
        sample = "every orbit (slab by slab along L)"
    else:
        stride = _stride(grid, sample_stride, max_sample_voxels)
        _by_sample(state, planes, stride)
        sub = [len(_sub_axis(grid.axes[j], stride)[0]) for j in range(3)] if stride > 1 else None
        sample = ("every orbit (the volume held whole)" if stride == 1 else
                  f"the orbits of a sub-lattice of stride {stride} about hkl = 0 "
                  f"({sub[0]} x {sub[1]} x {sub[2]} voxels, 1/{stride ** 3} of the grid)")
    return _result(state, shells, q_max, min_voxels, laue or f"{len(ops)} operators", len(ops),
                   stride, sample, flag_overall, flag_shell, flag_min_nu)


@dataclass
class _State:
    grid: Grid
    read: Reader
    halves: tuple | None
    A: np.ndarray
    c: np.ndarray
    G: np.ndarray
    start: np.ndarray
    step: np.ndarray
    q3span: float
    bragg: float
    acc: np.ndarray
    cc: np.ndarray
    has_var: bool | None = None


def _read_arrays(state: _State, l0: int, l1: int):
    """signal, weight, variance (or None) and the halves' signal, weight of planes [l0, l1)."""
    got = tuple(state.read(l0, l1))
    if len(got) < 2:
        raise ValueError("read(l0, l1) must give signal, weight and (optionally) variance")
    var = got[2] if len(got) > 2 else None
    if state.has_var is None:
        state.has_var = var is not None
    elif state.has_var != (var is not None):
        raise ValueError("read(l0, l1) gave variance for some planes and not for others")
    halves = None
    if state.halves is not None:
        a = tuple(state.halves[0](l0, l1))
        b = tuple(state.halves[1](l0, l1))
        halves = (a[0], a[1], b[0], b[1])
    return (got[0], got[1], var), halves


def _runs(planes: list[int]) -> list[tuple[int, int]]:
    """Contiguous runs [a, b) of sorted distinct planes."""
    runs = []
    for p in planes:
        if runs and runs[-1][1] == p:
            runs[-1] = (runs[-1][0], p + 1)
        else:
            runs.append((p, p + 1))
    return runs


def _mirror_offset(A, c) -> int | None:
    """c_l of the operators reversing L (all equal for l_separable maps): plane l's orbit
    images lie in l and c_l - l."""
    flip = [o for o in range(len(A)) if A[o, 2, 2] == -1]
    offs = {int(c[o, 2]) for o in flip}
    if len(offs) > 1:  # (cannot happen: c_l = -2 start_l / step_l for every one)
        raise ValueError(f"L-reversing operators with different offsets {offs}")
    return offs.pop() if offs else None


def _windows(nl: int, m: int | None, planes: int) -> list[list[int]]:
    """Windows of planes closed under l -> m - l (within the grid), each plane in one."""
    def mirror(l):
        return None if m is None or not 0 <= m - l < nl else m - l
    reps = [l for l in range(nl) if mirror(l) is None or mirror(l) >= l]
    out = []
    for i in range(0, len(reps), planes):
        batch = reps[i:i + planes]
        out.append(sorted(set(batch) | {mirror(l) for l in batch if mirror(l) is not None}))
    return out


def _by_windows(state: _State, planes: int) -> None:
    grid = state.grid
    nl, nk, nh = grid.shape
    windows = _windows(nl, _mirror_offset(state.A, state.c), planes)
    width = max(len(w) for w in windows)
    bufs = [np.empty((width, nk, nh), np.float32) for _ in range(3)]
    hbufs = [np.empty((width, nk, nh), np.float32) for _ in range(4)] if state.halves else None
    for win in windows:
        n = len(win)
        rows_plane = np.array(win, np.int64)
        row_of = np.full(nl, -1, np.int64)
        row_of[rows_plane] = np.arange(n)
        r = 0
        for a, b in _runs(win):
            arrays, halves = _read_arrays(state, a, b)
            for buf, arr in zip(bufs, arrays):
                if arr is not None:
                    buf[r:r + b - a] = arr
            if halves is not None:
                for buf, arr in zip(hbufs, halves):
                    buf[r:r + b - a] = arr
            r += b - a
        _run_window(state, [x[:n] for x in bufs], rows_plane, row_of, nl, state.A, state.c,
                    state.start, state.step, True, True)
        if hbufs is not None:
            _run_cc(state, [x[:n] for x in hbufs], rows_plane)


def _run_window(state, arrays, rows_plane, row_of, nl, A, c, start, step, voxels, orbits):
    S, W, V = arrays
    has_var = bool(state.has_var)
    if not has_var:
        V = np.zeros((1, 1, 1), np.float32)
        orbits = False
    acc = np.zeros((min(S.shape[0], _PARTS), _NACC, NFINE + 1))
    missing = _window_kernel(S, W, V, has_var, rows_plane, row_of, nl, A, c, start, step,
                             state.G, state.q3span, NFINE, float(state.bragg), voxels, orbits, acc)
    if missing:
        raise RuntimeError(f"{missing} orbit voxels outside the window (a bug)")
    state.acc += acc.sum(axis=0)


def _run_cc(state, halves, rows_plane):
    acc = np.zeros((min(halves[0].shape[0], _PARTS), _NCC, NFINE + 1))
    _cc_kernel(*halves, rows_plane, state.start, state.step, state.G, state.q3span, NFINE,
               float(state.bragg), acc)
    state.cc += acc.sum(axis=0)


def _coprime_steps(grid: Grid) -> list[int]:
    """1/step of each axis whose step is 1/m (integer m)."""
    out = []
    for ax in grid.axes:
        m = 1.0 / ax.step
        if abs(m - round(m)) < 1e-6:
            out.append(round(m))
    return out


def _origin_index(grid: Grid) -> list[int] | None:
    """Voxel indices of hkl = 0, or None when 0 is not a voxel centre."""
    out = []
    for ax in grid.axes:
        i = -ax.start / ax.step
        if abs(i - round(i)) > 1e-6:
            return None
        out.append(round(i))
    return out


def _stride(grid: Grid, forced: int | None, max_voxels: int) -> int:
    if forced is not None:
        if forced < 1:
            raise ValueError(f"sample_stride must be >= 1, got {forced}")
        if forced > 1 and _origin_index(grid) is None:
            raise ValueError("a sub-lattice sample needs hkl = 0 on a voxel centre")
        return int(forced)
    if grid.size <= max_voxels or _origin_index(grid) is None:
        return 1
    s = max(2, math.ceil((grid.size / max_voxels) ** (1 / 3) - 1e-9))
    ms = _coprime_steps(grid)
    while any(math.gcd(s, m) != 1 for m in ms) or \
            math.prod(len(_sub_axis(ax, s)[0]) for ax in grid.axes) > max_voxels:
        s += 1
    return s


def _sub_axis(ax, s: int):
    """Indices i0 + s t of the axis inside it and the first t."""
    i0 = round(-ax.start / ax.step)
    t0 = -(i0 // s)  # ceil(-i0 / s)
    t1 = (ax.n - 1 - i0) // s
    return np.arange(i0 + s * t0, i0 + s * t1 + 1, s, dtype=np.int64), t0


def _by_sample(state: _State, planes: int, s: int) -> None:
    """Groups mixing L with H or K: per-voxel figures from every plane, chi^2 from the
    orbits of the sub-lattice of stride s (s = 1: the whole volume)."""
    grid = state.grid
    nl, nk, nh = grid.shape
    if s == 1:
        keep = [np.empty(grid.shape, np.float32) for _ in range(3)]
        idx = [np.arange(n) for n in (nh, nk, nl)]
    else:
        idx, t0 = zip(*(_sub_axis(ax, s) for ax in grid.axes))
        keep = [np.empty((len(idx[2]), len(idx[1]), len(idx[0])), np.float32) for _ in range(3)]
    row_in_sample = np.full(nl, -1, np.int64)
    row_in_sample[idx[2]] = np.arange(len(idx[2]))
    hbufs = None
    for l0 in range(0, nl, planes):
        l1 = min(nl, l0 + planes)
        arrays, halves = _read_arrays(state, l0, l1)
        arrays = [np.ascontiguousarray(a, np.float32) if a is not None else None for a in arrays]
        rows_plane = np.arange(l0, l1, dtype=np.int64)
        _run_window(state, arrays, rows_plane, np.full(nl, -1, np.int64), nl, state.A, state.c,
                    state.start, state.step, True, False)
        if halves is not None:
            if hbufs is None:
                hbufs = [np.empty((planes, nk, nh), np.float32) for _ in range(4)]
            for buf, arr in zip(hbufs, halves):
                buf[:l1 - l0] = arr
            _run_cc(state, [x[:l1 - l0] for x in hbufs], rows_plane)
        rows = [p for p in range(l0, l1) if row_in_sample[p] >= 0]
        for k, a in zip(keep, arrays):
            if a is None:
                continue
            for p in rows:
                k[row_in_sample[p]] = a[p - l0] if s == 1 else a[p - l0][np.ix_(idx[1], idx[0])]
    if not state.has_var:
        return
    n_sub = keep[0].shape[0]
    rows_plane = np.arange(n_sub, dtype=np.int64)
    if s == 1:
        A, c, start, step = state.A, state.c, state.start, state.step
    else:
        t0 = np.array(t0, np.int64)  # (h, k, l)
        A = state.A
        c = np.ascontiguousarray(np.einsum("i,oij->oj", t0, A) - t0)
        start = state.start + state.step * np.array([i[0] for i in idx], float)
        step = state.step * s
    _run_window(state, keep, rows_plane, rows_plane.copy(), n_sub, A, c, start, step,
                False, True)


def _row(acc, cc, f0, f1, q3span, min_voxels) -> ShellRow:
    a = acc[:, f0:f1].sum(axis=1)
    k = cc[:, f0:f1].sum(axis=1)
    n_ios, nu, pairs = int(a[_NIOS]), int(a[_NU]), int(k[_CCN])
    cc_half = None
    if pairs >= max(min_voxels, 2):
        ma, mb = k[_CCA] / pairs, k[_CCB] / pairs
        va = k[_CCAA] / pairs - ma * ma
        vb = k[_CCBB] / pairs - mb * mb
        cov = k[_CCAB] / pairs - ma * mb
        if va > 0 and vb > 0:
            cc_half = float(cov / math.sqrt(va * vb))
    return ShellRow(
        q_min=(f0 / NFINE * q3span) ** (1 / 3), q_max=(f1 / NFINE * q3span) ** (1 / 3),
        voxels=int(a[_VOX]), measured=int(a[_MEAS]), zero_sigma=int(a[_ZERO]),
        excluded=int(a[_EXCL]),
        i_over_sigma=float(a[_IOS] / n_ios) if n_ios >= max(min_voxels, 1) else None,
        orbits=int(a[_ORB]), observations=int(a[_OBS]), chi2=float(a[_CHI2]), nu=nu,
        chi2_nu=float(a[_CHI2] / nu) if nu >= max(min_voxels, 1) else None,
        cc_pairs=pairs, cc_half=cc_half, too_few=int(a[_MEAS]) < min_voxels)


def _result(state, shells, q_max, min_voxels, laue, nops, stride, sample, flag_overall,
            flag_shell, flag_min_nu) -> VolumeStatistics:
    acc, cc = state.acc, state.cc
    if q_max is not None:
        top = NFINE
    else:
        hit = np.nonzero(acc[_MEAS, :NFINE])[0]
        top = int(hit[-1]) + 1 if hit.size else 0
    n = min(shells, top)
    bounds = [round(i * top / n) for i in range(n + 1)] if n else [0]
    rows = tuple(_row(acc, cc, bounds[i], bounds[i + 1], state.q3span, min_voxels)
                 for i in range(n))
    overall = _row(acc, cc, 0, top, state.q3span, min_voxels)
    flag, reason = _flag(rows, overall, flag_overall, flag_shell, flag_min_nu)
    return VolumeStatistics(
        shells=rows, overall=overall, laue_group=laue, operators=nops,
        orbit_sample_stride=stride, orbit_sample=sample,
        q_max_from="given" if q_max is not None else "measured voxels",
        beyond=int(acc[_VOX, top:].sum()), beyond_measured=int(acc[_MEAS, top:].sum()),
        has_variance=bool(state.has_var), has_halves=state.halves is not None,
        bragg_exclusion=float(state.bragg), min_voxels=int(min_voxels),
        flag_overall=float(flag_overall), flag_shell=float(flag_shell),
        flag_min_nu=int(flag_min_nu), flag=flag, flag_reason=reason)


def binned_sums(read: Reader, grid: Grid, planes: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """(signal, weight) of a volume summed over 2 x 2 x 2 voxels (float64 [ceil(n / 2)]
    per axis), as the half sets are binned; read(l0, l1): volume_statistics' reader."""
    shape = tuple(-(-n // 2) for n in grid.shape)
    out = (np.zeros(shape), np.zeros(shape))
    for l0 in range(0, grid.l.n, 2 * planes):
        l1 = min(l0 + 2 * planes, grid.l.n)
        for total, a in zip(out, read(l0, l1)[:2]):
            a = np.pad(np.asarray(a, np.float64), [(0, n % 2) for n in a.shape])
            nl, nk, nh = (n // 2 for n in a.shape)
            total[l0 // 2:l0 // 2 + nl] += a.reshape(nl, 2, nk, 2, nh, 2).sum(axis=(1, 3, 5))
    return out


def with_half_sets(stats: VolumeStatistics, grid: Grid, crystal, half_a, half_b,
                   split: str, planes: int = 16) -> VolumeStatistics:
    """stats with CC1/2 in its shells and overall, from half sets on their own grid (the
    transform's: binned 2 x 2 x 2, hklflow.algorithms.transform.driver.half_set_grid): half_a, half_b
    (signal, weight) arrays [l, k, h]; Pearson's correlation of I_A and I_B over the voxels
    measured in both (weight > 0), binned by the |Q| of their centres into stats' shells
    (bragg_exclusion as stats'); split: how the halves were made, for the notes."""
    B = np.asarray(crystal.B, float)
    G = B.T @ B
    rows = list(stats.shells)
    edges = np.array([r.q_min for r in rows] + [rows[-1].q_max]) if rows else np.zeros(1)
    sums = np.zeros((len(rows) + 1, 6))  # per shell, and beyond: n, a, b, aa, bb, ab
    k, h = np.meshgrid(grid.k.values, grid.h.values, indexing="ij")  # [k, h]
    for l0 in range(0, grid.l.n, planes):
        l1 = min(l0 + planes, grid.l.n)
        sa, wa = (np.asarray(x[l0:l1], np.float64) for x in half_a)
        sb, wb = (np.asarray(x[l0:l1], np.float64) for x in half_b)
        both = (wa > 0) & (wb > 0)
        if not both.any():
            continue
        ll = grid.l.values[l0:l1, None, None]
        x = np.stack(np.broadcast_arrays(h[None], k[None], ll), -1)[both]
        q = np.sqrt(np.einsum("ni,ij,nj->n", x, G, x))
        keep = np.ones(len(q), bool)
        if stats.bragg_exclusion > 0:
            d = x - np.round(x)
            keep = np.einsum("ni,ij,nj->n", d, G, d) > stats.bragg_exclusion ** 2
        ia, ib = sa[both] / wa[both], sb[both] / wb[both]
        keep &= np.isfinite(ia) & np.isfinite(ib)
        shell = np.searchsorted(edges, q[keep], side="right") - 1
        shell[(shell < 0) | (shell >= len(rows))] = len(rows)
        a, b = ia[keep], ib[keep]
        for j, v in enumerate((np.ones_like(a), a, b, a * a, b * b, a * b)):
            sums[:, j] += np.bincount(shell, v, len(rows) + 1)

    def cc(t) -> tuple[int, float | None]:
        n = int(t[0])
        if n < max(stats.min_voxels, 2):
            return n, None
        va, vb = t[3] / n - (t[1] / n) ** 2, t[4] / n - (t[2] / n) ** 2
        cov = t[5] / n - t[1] * t[2] / n / n
        return n, (float(cov / math.sqrt(va * vb)) if va > 0 and vb > 0 else None)

    new_rows = []
    for r, t in zip(rows, sums):
        n, value = cc(t)
        new_rows.append(replace(r, cc_pairs=n, cc_half=value))
    n, value = cc(sums[:len(rows)].sum(axis=0))
    extra = dict(stats.extra, cc_half_split=split)
    return replace(stats, shells=tuple(new_rows),
                   overall=replace(stats.overall, cc_pairs=n, cc_half=value),
                   has_halves=True, extra=extra)


def _flag(rows, overall, flag_overall, flag_shell, flag_min_nu) -> tuple[bool, str]:
    """Whether chi^2/nu departs from 1: overall outside [1/t, t] (t = flag_overall), or a
    shell with nu >= flag_min_nu outside [1/t, t] (t = flag_shell); and a sentence."""
    bad = []
    x = overall.chi2_nu
    if x is not None and not 1 / flag_overall <= x <= flag_overall:
        bad.append((x, "overall"))
    shells = [(r.chi2_nu, f"|Q| {r.q_min:.3f}-{r.q_max:.3f} 1/A") for r in rows
              if r.chi2_nu is not None and r.nu >= flag_min_nu
              and not 1 / flag_shell <= r.chi2_nu <= flag_shell]
    bad += shells
    if not bad:
        return False, ""
    x = max(bad, key=lambda b: abs(math.log(max(b[0], 1e-12))))[0]
    text = "chi^2/nu of equivalents is " + (
        f"{overall.chi2_nu:.2f} overall" if overall.chi2_nu is not None else "")
    if shells:
        worst = max(shells, key=lambda b: abs(math.log(max(b[0], 1e-12))))
        text += (", " if overall.chi2_nu is not None else "") + f"{worst[0]:.2f} in the shell {worst[1]}"
        if len(shells) > 1:
            text += (f" ({len(shells)} shells outside [{1 / flag_shell:.2f}, {flag_shell:g}])")
    if x < 0.05:
        why = ("equivalents agree far better than sigma allows: a symmetrised volume (the "
               "statistics need the merged one) or sigma grossly overestimated")
    elif x < 1:
        why = ("sigma overestimated (the config's detector gain larger than the detector's?) "
               "or equivalents that are not independent (one pixel spread over them)")
    else:
        why = ("sigma underestimated (detector gain? the config's gain) or equivalents that "
               "differ systematically (wrong symmetry, absorption, a misaligned entry; Bragg "
               "nodes when peaks were not masked)")
    return True, f"{text}: {why}"


