"""Indexing from scratch: the orientation U of a crystal of known space group and approximate cell.

Input: observed reciprocal-lattice vectors of strong Bragg peaks in the sample frame at scan
angle 0 (1/Angstrom, no 2 pi; docs/conventions.md), the space group and an approximate cell.
Output (`IndexingSolution`): a proper rotation U, the cell from a quick constrained
least-squares fit, UB = U B, integer hkl per vector, which ones are indexed, and figures of
merit.

Method: known-cell pair matching (the two-reflection orientation of Busing & Levy 1967, with
the indices of the two reflections found by matching d-spacings and the interplanar angle).
Chosen over the cell-free searches (DPS / 1D-FFT, difference-vector methods), which find *a*
basis and must then be matched to the known cell and setting, because here the cell and space
group are known: matching uses them directly, is deterministic, needs no grid over directions
and costs milliseconds, and a centred lattice is handled by using only allowed reflections.
Steps:

1. Search set: the `max_peaks` strongest vectors (when intensities are given) or else the
   shortest; seeds: the `n_seeds` shortest of those whose |q| matches some d-spacing (short
   vectors have the fewest candidate indices and are the least sensitive to an error in the
   cell; vectors matching none, e.g. low-angle junk, are skipped).
2. Candidate indices per seed: allowed reflections (not systematically absent) of the
   approximate cell with |B h| within `length_tolerance` of |q|.  For the first vector of a
   pair only one representative per orbit of the *setting group* (below) is used: any other
   choice gives a symmetry-equivalent orientation.
3. For each seed pair (q1, q2) at least `min_pair_angle_deg` from (anti)parallel, keep the
   candidate pairs (h1, h2) whose calculated angle matches the observed one within
   `angle_tolerance_deg`; each gives U by aligning the orthonormal frame built from the
   bisector and difference of the unit vectors of (B h1, B h2) with that of (q1, q2) (both
   vectors weigh the same; proper by construction).
4. Score every candidate U (vectorised) by the number of search vectors indexed within
   `hkl_tolerance` to an allowed hkl with the approximate cell.
5. Refine the best few distinct candidates: iterate "assign hkl, fit a free 3x3 UB by linear
   least squares" on the search set and then on all vectors; split UB into the metric (cell,
   symmetrised by the crystal-system constraints) and the nearest rotation; candidates whose
   cell would move by more than `max_cell_change` are rejected.  Pairs are processed in
   batches (shortest seeds first) and the search stops as soon as a refined candidate indexes
   `accept_fraction` of all vectors, or after `max_pairs` pairs / `max_candidates` orientations.
6. Pseudo-symmetry: settings U B S of the same lattice whose S keeps the metric only within
   the tolerances (searched as matrices with entries -1..1 in a short primitive basis of the
   allowed-by-centring lattice, so that e.g. a pseudo-cubic rhombohedral or I-tetragonal
   lattice is covered) are refined as well; of those indexing as many vectors (within 1% or
   3 vectors), the ones whose free fit obeys the crystal-system constraints (metric misfit at
   the noise level) are kept and the one closest to the given cell is chosen (noted).
7. The chosen one is refined with the crystal-system constraints (scipy least_squares on
   q_obs ~ U B(cell) h with U = exp([r]) U0 parameterised by a rotation vector, so that it stays a
   rotation, and the free cell parameters from `Crystal.constraints`; soft-l1 loss against the
   occasional vector indexed by chance), re-assigning hkl between cycles.
8. Setting: the *setting group* is the group of integer matrices S (acting on column hkl) with
   det +1 that keep the metric of every cell of the crystal system and the pattern of
   systematic absences; U B S then fits the data exactly as well as U B.  It contains the
   rotations of the Laue group (S = R^T for the row-vector operators R of
   `Crystal.laue_operators`, h' = h R) and, for merohedral Laue groups (e.g. -3 m 1, 4/m, m -3,
   whose lattice has more symmetry), also lattice operators outside it: positions cannot tell
   those settings apart (intensities and a model can).  Of the equivalent U B S the one with
   U closest to the identity (largest trace) is reported, so the choice is consistent.  With the
   true setting (U_t, B_t) the answer satisfies U B = U_t B_t S and hkl = S^-1 hkl_t (column
   vectors) for one S of the setting group (`IndexingSolution.equivalent_settings`).

Dense LAPACK on tall matrices is avoided (normal equations, LSMR trust-region solver):
multithreaded OpenBLAS is slow on tall, thin matrices (bench/README.md gives the costs).

Limits: the cell must be within a few % (lengths) / ~1 deg (angles): it is `length_tolerance`
and `angle_tolerance_deg` that must cover the error.  A pseudo-symmetric lattice whose
alternative settings fit the crystal system equally (e.g. orthorhombic a and b equal within
the error of the given cell and no absences that tell them apart) is indexed in the setting
closest to the given cell, which is only right if the given cell is.  Merohedral settings
(above) stay ambiguous.  One lattice only: a twin or second grain lowers the fraction, and
`notes` reports another refined orientation that indexes >= 10% of the vectors left over.
"""
from __future__ import annotations

import itertools
import math
import time
from dataclasses import dataclass, field

import gemmi
import numpy as np
from scipy.optimize import least_squares

from ...base.errors import IndexingError
from ...model.crystal import CellConstraints, Crystal, UnitCell
from ...settings.params import IndexingParams

# what an IndexingError suggests when nothing else is known (diagnosis.py may name a setting)
NO_FIT_HINT = "(wrong space group or cell? a phase transition? too many spurious vectors?)"
MIN_VECTORS = 3  # two seed vectors and one to check their orientation against


@dataclass
class IndexingSolution:
    """Result of `index_from_scratch`.

    U: proper rotation; cell: refined cell (crystal-system constraints kept); UB = U @ cell.B.
    hkl (n, 3) int: nearest integer indices of every vector (0 0 0 where not finite);
    indexed (n,) bool: within hkl_tolerance of an allowed (not absent, not 000) reflection.
    fraction: indexed fraction of all n vectors; rms_hkl: rms of h - round(h) over the indexed
    vectors and components (the figure of merit with `fraction`); rms_q: rms |q_obs - UB h|
    (1/Angstrom) over the indexed ones.  equivalent_settings (k, 3, 3) int: the setting group
    (module docstring); any U B S fits as well, hkl -> S^-1 hkl.  notes: ambiguities
    (merohedral, pseudo-symmetric settings), a second lattice, a large cell change, and what
    the search tried; n_candidates_tried / n_pairs_tried: orientations scored / seed pairs
    used; seconds: wall time of the call.
    """

    U: np.ndarray
    cell: UnitCell
    UB: np.ndarray
    hkl: np.ndarray
    indexed: np.ndarray
    fraction: float
    rms_hkl: float
    n_candidates_tried: int
    notes: list[str] = field(default_factory=list)
    rms_q: float = float("nan")
    n_pairs_tried: int = 0
    seconds: float = 0.0
    equivalent_settings: np.ndarray | None = None

    @property
    def n_indexed(self) -> int:
        return int(np.count_nonzero(self.indexed))


# --------------------------------------------------------------------------------------
# Symmetry helpers
# --------------------------------------------------------------------------------------
def _generic_cell(cons: CellConstraints, cell: UnitCell) -> UnitCell:
    """A cell of the same crystal system with no accidental extra metric symmetry."""
    v = cons.free_values(cell).astype(float)
    for k, name in enumerate(cons.free):
        if name in ("a", "b", "c"):
            v[k] *= 1.0 + 0.0173 * (k + 1)
        else:
            v[k] += 0.731 * (k + 1) * (1 if v[k] < 110 else -1)
    try:
        return cons.expand(v)
    except ValueError:
        return cell


_ALL_INT_MATS = None


def _int_mats() -> np.ndarray:
    """All integer 3x3 matrices with entries -1, 0, 1 and determinant +1."""
    global _ALL_INT_MATS
    if _ALL_INT_MATS is None:
        m = np.array(list(itertools.product((-1, 0, 1), repeat=9)), dtype=np.int64)
        m = m.reshape(-1, 3, 3)
        det = np.rint(np.linalg.det(m)).astype(int)
        _ALL_INT_MATS = m[det == 1]
    return _ALL_INT_MATS


def setting_group(crystal: Crystal) -> np.ndarray:
    """Integer matrices S (k, 3, 3), det +1, acting on column hkl, that keep the metric of every
    cell of the crystal's system and its systematic absences (identity first)."""
    mats = _int_mats()
    gcell = _generic_cell(crystal.constraints, crystal.constraints.symmetrize(crystal.cell))
    G = gcell.reciprocal_metric
    Gs = np.einsum("kji,jl,klm->kim", mats, G, mats)
    keep = np.all(np.abs(Gs - G) <= 1e-9 * np.abs(G).max(), axis=(1, 2))
    cand = mats[keep]
    r = np.arange(-6, 7)
    grid = np.stack(np.meshgrid(r, r, r, indexing="ij"), -1).reshape(-1, 3)
    absent = crystal.is_absent(grid)
    out = []
    for S in cand:
        if np.array_equal(crystal.is_absent(grid @ S.T), absent):
            out.append(S)
    out.sort(key=lambda S: (not np.array_equal(S, np.eye(3, dtype=int)), tuple(S.ravel())))
    return np.array(out, dtype=np.int64)


def _centring_basis(crystal: Crystal) -> np.ndarray:
    """Integer 3x3 matrix P whose columns are a short basis of the lattice of hkl allowed by
    the centring (h . t integer for every centring vector t); the identity for P lattices."""
    cen = np.array([list(t) for t in crystal.ops.cen_ops], dtype=np.int64)
    n_cen = len(cen)
    if n_cen == 1:
        return np.eye(3, dtype=np.int64)
    r = np.arange(-3, 4)
    grid = np.stack(np.meshgrid(r, r, r, indexing="ij"), -1).reshape(-1, 3)
    grid = grid[np.any(grid != 0, axis=1)]
    grid = grid[np.all((grid @ cen.T) % gemmi.Op.DEN == 0, axis=1)]
    grid = grid[np.argsort(np.linalg.norm(grid @ crystal.cell.B.T, axis=1), kind="stable")]
    m = min(len(grid), 40)
    for i, j, k in itertools.combinations(range(m), 3):
        P = np.stack([grid[i], grid[j], grid[k]], axis=1)
        d = round(np.linalg.det(P))
        if abs(d) == n_cen:
            return P if d > 0 else P[:, [1, 0, 2]]
    return np.eye(3, dtype=np.int64)  # not reached for the 3D centrings


def _pseudo_settings(crystal: Crystal, cell: UnitCell, ops: np.ndarray, tol: float,
                     max_settings: int = 48) -> list[np.ndarray]:
    """One matrix S (det +1; rational for centred lattices) per coset S.ops of the settings
    that map the lattice of allowed-by-centring hkl onto itself and keep the metric of `cell`
    within `tol` (relative, on G*) but are not in the setting group.  Searched as integer
    matrices T (entries -1..1) in a short primitive basis P: S = P T P^-1."""
    P = _centring_basis(crystal).astype(float)
    Pinv = np.linalg.inv(P)
    mats = _int_mats()
    G = P.T @ cell.reciprocal_metric @ P
    d = np.sqrt(np.diag(G))
    Gs = np.einsum("kji,jl,klm->kim", mats, G, mats)
    dev = np.max(np.abs(Gs - G) / np.outer(d, d), axis=(1, 2))
    sel = np.nonzero(dev <= tol)[0]
    sel = sel[np.argsort(dev[sel], kind="stable")]

    def key(S):
        return tuple(np.rint(6 * S).astype(int).ravel())

    covered = {key(S) for S in ops.astype(float)}
    out = []
    for T in mats[sel]:
        S = P @ T @ Pinv
        if key(S) in covered:
            continue
        out.append(S)
        for R in ops:
            covered.add(key(S @ R))
        if len(out) >= max_settings:
            break
    return out


def _orbit_representative(hkl: np.ndarray, ops: np.ndarray) -> np.ndarray:
    """True where hkl (n, 3) is the lexicographically largest of its orbit {S h}."""
    eq = np.einsum("kij,nj->kni", ops, hkl)
    key = (eq[..., 0] * 10007 + eq[..., 1]) * 10007 + eq[..., 2]
    own = (hkl[:, 0] * 10007 + hkl[:, 1]) * 10007 + hkl[:, 2]
    return own >= key.max(axis=0)


def _canonical(U: np.ndarray, B: np.ndarray, ops: np.ndarray):
    """The equivalent U B S with the largest trace of U: returns (U', S)."""
    Binv = np.linalg.inv(B)
    M = np.einsum("ij,kjl,lm->kim", B, ops.astype(float), Binv)   # B S B^-1
    UM = np.einsum("ij,kjl->kil", U, M)
    k = int(np.argmax(np.trace(UM, axis1=1, axis2=2)))
    return _nearest_rotation(UM[k]), ops[k]


def _nearest_rotation(M: np.ndarray) -> np.ndarray:
    W, _, Vt = np.linalg.svd(M)
    D = np.eye(3)
    D[2, 2] = np.sign(np.linalg.det(W @ Vt))
    return W @ D @ Vt


def _equivalent_distance_deg(Ua: np.ndarray, Ub: np.ndarray, B: np.ndarray,
                             ops: np.ndarray) -> float:
    """Smallest rotation angle between Ua and the settings Ub B S B^-1."""
    M = np.einsum("ij,kjl,lm->kim", B, ops.astype(float), np.linalg.inv(B))
    t = np.einsum("ij,kjl,ml->kim", Ub, M, Ua)  # Ub M Ua^T
    c = (np.trace(t, axis1=1, axis2=2) - 1.0) / 2.0
    return float(np.degrees(np.arccos(np.clip(c.max(), -1.0, 1.0))))


# --------------------------------------------------------------------------------------
# Vectorised pieces
# --------------------------------------------------------------------------------------
def _frames(v1: np.ndarray, v2: np.ndarray) -> np.ndarray:
    """Orthonormal frames (N, 3, 3) (columns) from the bisector and difference of unit v1, v2."""
    u1 = v1 / np.linalg.norm(v1, axis=-1, keepdims=True)
    u2 = v2 / np.linalg.norm(v2, axis=-1, keepdims=True)
    e1 = u1 + u2
    e2 = u1 - u2
    e1 /= np.linalg.norm(e1, axis=-1, keepdims=True)
    e2 /= np.linalg.norm(e2, axis=-1, keepdims=True)
    e3 = np.cross(e1, e2)
    return np.stack([e1, e2, e3], axis=-1)


def _rotations_from_pairs(a1, a2, b1, b2) -> np.ndarray:
    """Proper rotations U (N, 3, 3) taking the pair (a1, a2) onto (b1, b2)."""
    return _frames(b1, b2) @ np.swapaxes(_frames(a1, a2), -1, -2)


class _Allowed:
    """Lookup of allowed (not absent, not 000) reflections: table near the origin, gemmi
    beyond."""

    def __init__(self, crystal: Crystal, hmax: np.ndarray):
        self.crystal = crystal
        self.hmax = np.asarray(hmax, dtype=np.int64)
        r = [np.arange(-m, m + 1) for m in self.hmax]
        grid = np.stack(np.meshgrid(*r, indexing="ij"), -1).reshape(-1, 3)
        allowed = ~crystal.is_absent(grid)
        allowed[np.all(grid == 0, axis=1)] = False
        self.table = allowed.reshape(tuple(2 * self.hmax + 1))

    def __call__(self, hkl: np.ndarray) -> np.ndarray:
        h = np.asarray(hkl, dtype=np.int64)
        inside = np.all(np.abs(h) <= self.hmax, axis=-1)
        out = np.zeros(h.shape[:-1], dtype=bool)
        hi = h[inside] + self.hmax
        out[inside] = self.table[hi[:, 0], hi[:, 1], hi[:, 2]]
        if not inside.all():
            ho = h[~inside]
            out[~inside] = ~self.crystal.is_absent(ho) & np.any(ho != 0, axis=-1)
        return out


def _score(Us: np.ndarray, Binv: np.ndarray, q: np.ndarray, allowed: _Allowed,
           tol: float) -> np.ndarray:
    """Number of q indexed within tol (to an allowed hkl) by each U B (N,)."""
    out = np.empty(len(Us), dtype=np.int64)
    chunk = max(1, int(2_000_000 // max(len(q), 1)))
    for s in range(0, len(Us), chunk):
        Ainv = Binv[None] @ np.swapaxes(Us[s:s + chunk], 1, 2)      # (N, 3, 3)
        h = q[None] @ np.swapaxes(Ainv, 1, 2)                      # (N, M, 3)
        r = np.rint(h)
        ok = np.all(np.abs(h - r) < tol, axis=-1)
        if ok.any():
            ok[ok] = allowed(r[ok].astype(np.int64))
        out[s:s + chunk] = ok.sum(axis=1)
    return out


def _assign(q: np.ndarray, UB: np.ndarray, allowed, tol: float):
    """Nearest hkl (int), fractional residual and indexed mask of each q for UB."""
    h = q @ np.linalg.inv(UB).T
    r = np.rint(h)
    ok = np.all(np.abs(h - r) < tol, axis=-1)
    hkl = r.astype(np.int64)
    if ok.any():
        ok[ok] = allowed(hkl[ok])
    return hkl, h - r, ok


def _cell_from_ub(UB: np.ndarray) -> UnitCell:
    G = np.linalg.inv(UB.T @ UB)  # direct metric
    a, b, c = np.sqrt(np.diag(G))
    al = math.degrees(math.acos(np.clip(G[1, 2] / (b * c), -1, 1)))
    be = math.degrees(math.acos(np.clip(G[0, 2] / (a * c), -1, 1)))
    ga = math.degrees(math.acos(np.clip(G[0, 1] / (a * b), -1, 1)))
    return UnitCell(a, b, c, al, be, ga)


def _cell_change(cell: UnitCell, ref: UnitCell) -> float:
    """Largest relative change of a length (angles counted as rad / 1 rad)."""
    lengths = max(abs(x / y - 1) for x, y in zip(cell.parameters[:3], ref.parameters[:3]))
    angles = max(abs(math.radians(x - y)) for x, y in zip(cell.parameters[3:], ref.parameters[3:]))
    return max(lengths, angles)


# --------------------------------------------------------------------------------------
# Refinement
# --------------------------------------------------------------------------------------
def _refine_linear(q_all, search, UB, allowed, allowed_all, params, cons, cell0):
    """Free-UB refinement from a candidate UB; returns a dict (or None if it fails)."""
    tol = params.hkl_tolerance
    prev = None
    for stage, (qq, alw, n_iter) in enumerate(((q_all[search], allowed, 12),
                                               (q_all, allowed_all, 4))):
        for _ in range(n_iter):
            hkl, _, ok = _assign(qq, UB, alw, tol)
            if ok.sum() < 6:
                return None
            H = hkl[ok].astype(float)
            HtH = H.T @ H  # normal equations: 3 x 3 (dense LAPACK on tall matrices is slow
            w = np.linalg.eigvalsh(HtH)  # with multithreaded OpenBLAS on a busy machine)
            if w[0] <= 1e-9 * w[-1]:
                return None
            new = np.linalg.solve(HtH, H.T @ qq[ok]).T
            if not np.isfinite(new).all() or np.linalg.det(new) <= 0:
                return None
            UB = new
            key = (stage, ok.tobytes())
            if key == prev:
                break
            prev = key
    try:
        cell = cons.symmetrize(_cell_from_ub(UB))
    except ValueError:
        return None
    change = _cell_change(cell, cell0)
    G_free = UB.T @ UB
    G_sym = cell.reciprocal_metric
    dg = np.sqrt(np.diag(G_sym))
    misfit = float(np.max(np.abs(G_free - G_sym) / np.outer(dg, dg)))
    U = _nearest_rotation(UB @ np.linalg.inv(cell.B))
    hkl, _, ok = _assign(q_all, U @ cell.B, allowed_all, tol)
    return {"U": U, "cell": cell, "n_indexed": int(ok.sum()), "cell_change": change, "ok": ok,
            "misfit": misfit}


def _refine_constrained(q, hkl, U0, cell0: UnitCell, cons: CellConstraints):
    # (here: scipy.spatial loads slowly; only indexing from scratch needs it)
    from scipy.spatial.transform import Rotation

    x0 = np.r_[np.zeros(3), cons.free_values(cell0)]
    H = hkl.astype(float)

    def ub(x):
        return Rotation.from_rotvec(x[:3]).as_matrix() @ U0 @ cons.expand(x[3:]).B

    def resid(x):
        try:
            UB = ub(x)
        except ValueError:
            return np.full(q.size, 1e3)
        return (H @ UB.T - q).ravel()

    r0 = resid(x0)
    s = 1.4826 * np.median(np.abs(r0))
    f_scale = max(3.0 * s, 1e-7)
    scale = np.r_[np.full(3, 1e-3),
                  [1e-3 * v if n in ("a", "b", "c") else 0.05 for n, v in zip(cons.free, x0[3:])]]
    res = least_squares(resid, x0, loss="soft_l1", f_scale=f_scale, x_scale=scale,
                        method="trf", tr_solver="lsmr", xtol=1e-12, ftol=1e-12, gtol=1e-12,
                        max_nfev=200)
    x = res.x
    return Rotation.from_rotvec(x[:3]).as_matrix() @ U0, cons.expand(x[3:])


# --------------------------------------------------------------------------------------
# The steps of index_from_scratch
# --------------------------------------------------------------------------------------
@dataclass
class _Problem:
    """What the steps read: the vectors, the crystal at its symmetrised starting cell, its
    setting group and the parameters."""

    params: IndexingParams
    crystal: Crystal  # as given
    q_all: np.ndarray  # (n, 3), 0 where not usable
    qn: np.ndarray  # |q| of the vectors as given
    good: np.ndarray  # usable: finite and not 0
    gidx: np.ndarray  # indices of the usable vectors
    intensities: np.ndarray | None  # -inf where not finite
    cons: CellConstraints
    cell0: UnitCell  # the given cell, symmetrised
    crystal0: Crystal
    B0: np.ndarray
    Binv0: np.ndarray
    ops: np.ndarray  # setting_group

    @property
    def n(self) -> int:
        return len(self.q_all)


def _problem(q_obs, crystal: Crystal, params: IndexingParams, intensities) -> _Problem:
    """The vectors checked (ValueError for a wrong shape, IndexingError for fewer than 3
    usable ones) and the crystal at its symmetrised cell."""
    q = np.asarray(q_obs, dtype=float)
    if q.ndim != 2 or q.shape[1] != 3:
        raise ValueError(f"q_obs must have shape (n, 3), got {q.shape}")
    n = len(q)
    qn = np.linalg.norm(q, axis=1)
    good = np.isfinite(q).all(axis=1) & (qn > 0)
    if good.sum() < MIN_VECTORS:
        raise IndexingError(f"could not index: only {int(good.sum())} usable vectors "
                            f"(need >= {MIN_VECTORS})")
    inten = None
    if intensities is not None:
        inten = np.asarray(intensities, dtype=float).reshape(-1)
        if inten.shape != (n,):
            raise ValueError(f"intensities must have shape ({n},), got {inten.shape}")
        inten = np.where(np.isfinite(inten), inten, -np.inf)
    cons = crystal.constraints
    cell0 = cons.symmetrize(crystal.cell)
    crystal0 = crystal.with_cell(cell0)
    B0 = cell0.B
    return _Problem(params, crystal, np.where(good[:, None], q, 0.0), qn, good,
                    np.nonzero(good)[0], inten, cons, cell0, crystal0, B0, np.linalg.inv(B0),
                    setting_group(crystal0))


def _merohedral_notes(p: _Problem) -> list[str]:
    """A note when the setting group is larger than the Laue group's rotations."""
    laue_proper = [R for R in p.crystal.laue_operators if round(np.linalg.det(R)) == 1]
    if len(p.ops) <= len(laue_proper):
        return []
    return [f"merohedral ambiguity: the lattice of {p.crystal.hm} has {len(p.ops)} rotations "
            f"that keep metric and absences, the Laue group {p.crystal.laue_group} only "
            f"{len(laue_proper)}; positions cannot tell the "
            f"{len(p.ops) // len(laue_proper)} settings apart (U closest to identity "
            "reported)"]


def _search_set(p: _Problem) -> np.ndarray:
    """Step 1: the `max_peaks` strongest usable vectors, or the shortest without intensities."""
    if p.intensities is not None:
        order = p.gidx[np.argsort(-p.intensities[p.gidx], kind="stable")]
    else:
        order = p.gidx[np.argsort(p.qn[p.gidx], kind="stable")]
    return order[:p.params.max_peaks]


@dataclass
class _Seeds:
    """The seed vectors and the reference reflections their candidate indices point into."""

    seeds: np.ndarray  # indices of the seed vectors, shortest first
    refs: np.ndarray  # reference reflections (hkl) of the approximate cell
    ref_q: np.ndarray  # their B h
    ref_u: np.ndarray  # B h / |B h|
    cand: list  # per seed: the references whose length matches
    cand_rep: list  # per seed: those of them that represent their orbit of the setting group


def _seeds(p: _Problem, search: np.ndarray) -> _Seeds:
    """Steps 1-2: the reference reflections of the approximate cell; seeds: the shortest
    search vectors with a candidate index (|q| matches some 1/d), first among the 4 n_seeds
    shortest, then among all; the candidate indices of each seed."""
    qn, params = p.qn, p.params
    search_by_len = search[np.argsort(qn[search], kind="stable")]
    tol_l = params.length_tolerance
    for q_lim in (qn[search_by_len[min(len(search), 4 * params.n_seeds) - 1]],
                  qn[search_by_len[-1]]):
        q_ref_max = q_lim * (1 + tol_l) * 1.001
        refs = p.crystal0.reflections_within(1.0 / q_ref_max)
        ref_q = refs @ p.B0.T
        ref_len = np.linalg.norm(ref_q, axis=1)
        sorted_len = np.sort(ref_len)
        lo_i = np.searchsorted(sorted_len, qn[search_by_len] * math.exp(-tol_l))
        hi_i = np.searchsorted(sorted_len, qn[search_by_len] * math.exp(tol_l))
        seeds = search_by_len[(hi_i > lo_i) & (qn[search_by_len] <= q_lim)][:params.n_seeds]
        if len(seeds) >= min(params.n_seeds, 8):
            break
    if len(seeds) < 2:
        raise IndexingError(
            f"could not index: {len(seeds)} of the {len(search)} search vectors match a "
            f"d-spacing of the cell {tuple(round(x, 4) for x in p.cell0.parameters)} "
            f"({p.crystal.hm}) within {100 * tol_l:.0f}% {NO_FIT_HINT}")
    keep_ref = ref_len <= qn[seeds].max() * (1 + tol_l) * 1.001
    refs, ref_q, ref_len = refs[keep_ref], ref_q[keep_ref], ref_len[keep_ref]
    ref_u = ref_q / ref_len[:, None]
    ref_rep = _orbit_representative(refs, p.ops)
    cand = []
    cand_rep = []
    for s in seeds:
        m = np.abs(np.log(qn[s] / ref_len)) < tol_l
        cand.append(np.nonzero(m)[0])
        cand_rep.append(np.nonzero(m & ref_rep)[0])
    return _Seeds(seeds, refs, ref_q, ref_u, cand, cand_rep)


def _absence_lookups(p: _Problem, search: np.ndarray) -> tuple[_Allowed, _Allowed]:
    """Lookups of the allowed reflections within the reach of the search set and of all
    vectors (the search set's when that table would be too large)."""
    abc = np.array(p.cell0.parameters[:3])
    grow = 1.0 + p.params.max_cell_change
    allowed = _Allowed(p.crystal0, np.ceil(abc * p.qn[search].max() * grow).astype(int) + 1)
    hmax_all = np.ceil(abc * p.qn[p.gidx].max() * grow).astype(int) + 1
    allowed_all = _Allowed(p.crystal0, hmax_all) if np.prod(2 * hmax_all + 1) <= 4_000_000 \
        else allowed
    return allowed, allowed_all


def _seed_pairs(p: _Problem, s: _Seeds):
    """Step 3's pairs (i, j) of seeds at least min_pair_angle_deg from (anti)parallel,
    shortest first, at most max_pairs; and the observed angles between the seeds (deg)."""
    su = p.q_all[s.seeds] / p.qn[s.seeds, None]
    obs_ang = np.degrees(np.arccos(np.clip(su @ su.T, -1, 1)))
    lo, hi = p.params.min_pair_angle_deg, 180.0 - p.params.min_pair_angle_deg
    pairs = [(i, j) for j in range(len(s.seeds)) for i in range(j)
             if lo <= obs_ang[i, j] <= hi and len(s.cand_rep[i]) and len(s.cand[j])]
    return pairs[:p.params.max_pairs], obs_ang


def _matching_pairs(batch, s: _Seeds, obs_ang, tol_a):
    """Step 3 for a batch of seed pairs: (seed i, seed j, reference of i, reference of j) of
    every candidate pair whose calculated angle matches the observed one; None when none."""
    S1, S2, A1, A2 = [], [], [], []
    for i, j in batch:
        ci, cj = s.cand_rep[i], s.cand[j]
        ang = np.degrees(np.arccos(np.clip(s.ref_u[ci] @ s.ref_u[cj].T, -1, 1)))
        a, b = np.nonzero(np.abs(ang - obs_ang[i, j]) < tol_a)
        if len(a):
            S1.append(np.full(len(a), i))
            S2.append(np.full(len(a), j))
            A1.append(ci[a])
            A2.append(cj[b])
    if not S1:
        return None
    return tuple(np.concatenate(x) for x in (S1, S2, A1, A2))


@dataclass
class _Found:
    """What the pair search found: every refined candidate (dicts of _refine_linear, with the
    starting U0 and its raw score), those rejected for their cell change, and the counts."""

    refined: list = field(default_factory=list)
    rejected_cell: list = field(default_factory=list)
    n_tried: int = 0
    n_pairs_done: int = 0


def _refine_best_candidates(p: _Problem, pool_U, pool_s, found: _Found, search, allowed,
                            allowed_all, min_raw):
    """Step 5: the best distinct candidates of the pool not refined yet, refined."""
    n_new = 0
    for U, s in zip(pool_U, pool_s):
        if n_new >= p.params.n_refine or s < min_raw:
            break
        if any(_equivalent_distance_deg(U, r["U0"], p.B0, p.ops) < 3.0 for r in found.refined):
            continue
        n_new += 1
        res = _refine_linear(p.q_all, search, U @ p.B0, allowed, allowed_all, p.params, p.cons,
                             p.cell0)
        if res is None:
            found.refined.append({"U0": U, "n_indexed": 0, "raw": int(s)})
            continue
        res["U0"], res["raw"] = U, int(s)
        if res["cell_change"] > p.params.max_cell_change:
            found.rejected_cell.append(res)
            res = {"U0": U, "n_indexed": 0, "raw": int(s)}
        found.refined.append(res)


def _search_orientations(p: _Problem, search, s: _Seeds, allowed, allowed_all) -> _Found:
    """Steps 3-5, batch by batch of seed pairs: the orientations of the matching candidate
    pairs, scored; the best refined; until one indexes accept_fraction of the vectors, or
    max_candidates orientations were tried."""
    params = p.params
    pairs, obs_ang = _seed_pairs(p, s)
    q_search = p.q_all[search]
    pool_U = np.zeros((0, 3, 3))
    pool_s = np.zeros(0, dtype=np.int64)
    found = _Found()
    min_raw = min(6, len(search))
    for start in range(0, len(pairs), params.pair_batch):
        batch = pairs[start:start + params.pair_batch]
        found.n_pairs_done += len(batch)
        matched = _matching_pairs(batch, s, obs_ang, params.angle_tolerance_deg)
        if matched is None:
            continue
        room = params.max_candidates - found.n_tried
        if room <= 0:
            break
        S1, S2, A1, A2 = (x[:room] for x in matched)
        Us = _rotations_from_pairs(s.ref_q[A1], s.ref_q[A2], p.q_all[s.seeds[S1]],
                                   p.q_all[s.seeds[S2]])
        found.n_tried += len(Us)
        sc = _score(Us, p.Binv0, q_search, allowed, params.hkl_tolerance)
        pool_U = np.concatenate([pool_U, Us])
        pool_s = np.concatenate([pool_s, sc])
        keep = np.argsort(-pool_s, kind="stable")[:64]
        pool_U, pool_s = pool_U[keep], pool_s[keep]
        _refine_best_candidates(p, pool_U, pool_s, found, search, allowed, allowed_all, min_raw)
        best_n = max((r["n_indexed"] for r in found.refined), default=0)
        if best_n >= params.accept_fraction * p.n or found.n_tried >= params.max_candidates:
            break
    return found


def _pseudo_symmetric_choice(p: _Problem, best: dict, search, allowed, allowed_all,
                             notes: list[str]) -> dict:
    """Step 6: settings U B S with S keeping the metric only approximately fit the same
    lattice; chosen by indexed count (absences) and then by agreement with the cell."""
    n, tol_l = p.n, p.params.length_tolerance
    alts = [best]
    S_list = _pseudo_settings(p.crystal0, p.cell0, p.ops,
                              2 * tol_l + math.radians(p.params.angle_tolerance_deg))
    for S in S_list:
        res = _refine_linear(p.q_all, search, best["U"] @ best["cell"].B @ S, allowed,
                             allowed_all, p.params, p.cons, p.cell0)
        if res is not None and res["cell_change"] <= p.params.max_cell_change:
            res["S"] = S
            alts.append(res)
    top = max(r["n_indexed"] for r in alts)
    tied = [r for r in alts if r["n_indexed"] >= top - max(3, 0.01 * n)]
    # those whose free fit obeys the crystal-system constraints (misfit at the noise
    # level of the best one), then the one closest to the given cell
    m0 = min(r["misfit"] for r in tied)
    fits = [r for r in tied if r["misfit"] <= 2 * m0 + 3e-4]
    chosen = min(fits, key=lambda r: r["cell_change"])
    if len(fits) > 1:
        notes.append(f"pseudo-symmetry: {len(fits)} settings of the lattice index "
                     f"{', '.join('%.3f' % (r['n_indexed'] / n) for r in fits)} of the "
                     "vectors and fit the crystal system; the one closest to the given cell "
                     "was chosen (check the cell and the space group)")
    elif len(tied) > 1:
        worst = min(r["misfit"] for r in tied if not any(r is f for f in fits))
        notes.append(f"pseudo-symmetry: {len(tied) - 1} other setting(s) of the lattice "
                     f"index as many vectors but break the {p.cons.system} metric (misfit "
                     f">= {worst:.1e} vs {m0:.1e})")
    if chosen is not best:
        chosen.setdefault("U0", best["U0"])
        chosen.setdefault("raw", best["raw"])
    return chosen


def _failure(p: _Problem, s: _Seeds, found: _Found, frac, extra="") -> IndexingError:
    return IndexingError(
        f"could not index: best fraction {frac:.2f} < {p.params.min_fraction} "
        f"({found.n_tried} candidate orientations from {found.n_pairs_done} seed pairs of "
        f"{len(s.seeds)} seeds; {p.n} vectors; space group {p.crystal.hm}, cell "
        f"{tuple(round(x, 4) for x in p.cell0.parameters)}){extra} {NO_FIT_HINT}")


def _rejected_cell_hint(p: _Problem, found: _Found) -> str:
    """The candidate that indexed most but needed too large a cell change, if any."""
    if not found.rejected_cell:
        return ""
    r = max(found.rejected_cell, key=lambda r: r["n_indexed"])
    cell_r = tuple(round(x, 3) for x in r["cell"].parameters)
    return (f"; a candidate indexing {r['n_indexed'] / p.n:.2f} needed a cell change of "
            f"{100 * r['cell_change']:.0f}% > max_cell_change "
            f"{100 * p.params.max_cell_change:.0f}% (cell {cell_r})")


def _refine_with_constraints(p: _Problem, best: dict, allowed_all):
    """Step 7: the chosen candidate refined with the crystal-system constraints, hkl
    re-assigned between cycles; (U, cell)."""
    U, cell = best["U"], best["cell"]
    for _ in range(p.params.refine_cycles):
        hkl, _, ok = _assign(p.q_all, U @ cell.B, allowed_all, p.params.hkl_tolerance)
        ok &= p.good
        U, cell = _refine_constrained(p.q_all[ok], hkl[ok], U, cell, p.cons)
    return U, cell


def _second_lattice_notes(p: _Problem, found: _Found, best, ok, U, B) -> list[str]:
    """Another lattice (twin, second grain): the vectors it indexes that this solution does
    not, noted when they are at least a tenth of all."""
    others = [(int(np.count_nonzero(r["ok"] & ~ok)), r) for r in found.refined
              if r is not best and "ok" in r]
    if others:
        n_extra, r = max(others, key=lambda e: e[0])
        if n_extra >= 0.1 * p.n:
            d = _equivalent_distance_deg(r["U"], U, B, p.ops)
            return [f"a second orientation ({d:.1f} deg away) indexes {n_extra / p.n:.2f} of "
                    "the vectors left unindexed: a twin or a second grain?"]
    return []


# --------------------------------------------------------------------------------------
# Main entry
# --------------------------------------------------------------------------------------
def index_from_scratch(q_obs, crystal: Crystal, params: IndexingParams | None = None,
                       intensities=None) -> IndexingSolution:
    """Find U (and a quickly refined cell) from sample-frame reciprocal-lattice vectors.

    q_obs (n, 3): 1/Angstrom, no 2 pi, sample frame at scan angle 0; crystal: space group and
    approximate cell; intensities (n,), optional: then the strongest vectors are searched.
    Raises IndexingError when no orientation indexes `params.min_fraction` of the vectors.
    The steps are the module docstring's.
    """
    t0 = time.perf_counter()
    params = params or IndexingParams.defaults()
    p = _problem(q_obs, crystal, params, intensities)
    n = p.n
    notes = _merohedral_notes(p)
    search = _search_set(p)
    seeds = _seeds(p, search)
    allowed, allowed_all = _absence_lookups(p, search)
    found = _search_orientations(p, search, seeds, allowed, allowed_all)

    best = max(found.refined, key=lambda r: r["n_indexed"], default=None)
    if best is not None and best["n_indexed"] / n >= params.min_fraction:
        best = _pseudo_symmetric_choice(p, best, search, allowed, allowed_all, notes)
    best_fraction = best["n_indexed"] / n if best else 0.0
    if best is None or best_fraction < params.min_fraction:
        raise _failure(p, seeds, found, best_fraction, _rejected_cell_hint(p, found))

    U, cell = _refine_with_constraints(p, best, allowed_all)
    change = _cell_change(cell, p.cell0)
    if change > params.max_cell_change:
        raise _failure(p, seeds, found, 0.0, f"; the refined cell {cell.parameters} is "
                       f"{100 * change:.0f}% from the given one")

    # step 8: the setting with U closest to the identity
    U, _ = _canonical(U, cell.B, p.ops)
    UB = U @ cell.B
    hkl, frac, ok = _assign(p.q_all, UB, allowed_all, params.hkl_tolerance)
    ok &= p.good
    hkl[~p.good] = 0
    fraction = float(ok.sum()) / n
    if fraction < params.min_fraction:
        raise _failure(p, seeds, found, fraction, " after refinement")
    rms_hkl = float(np.sqrt(np.mean(frac[ok] ** 2))) if ok.any() else float("nan")
    rms_q = float(np.sqrt(np.mean(np.sum((hkl[ok] @ UB.T - p.q_all[ok]) ** 2, axis=1))))

    notes += _second_lattice_notes(p, found, best, ok, U, cell.B)
    if change > 0.02:
        notes.append(f"the cell changed by {100 * change:.1f}% from the given one")
    seconds = time.perf_counter() - t0
    return IndexingSolution(U=U, cell=cell, UB=UB, hkl=hkl, indexed=ok, fraction=fraction,
                            rms_hkl=rms_hkl, n_candidates_tried=found.n_tried, notes=notes,
                            rms_q=rms_q, n_pairs_tried=found.n_pairs_done, seconds=seconds,
                            equivalent_settings=p.ops)
