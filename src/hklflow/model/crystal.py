"""Crystal: unit cell, Busing-Levy B, space group, Laue group, absences and cell constraints.

In-process crystallography uses gemmi (cctbx cannot share a process with scipy; it is the
independent reference in the tests).  Conventions (docs/conventions.md):

* B is the Busing & Levy (1967) reciprocal basis: columns are a*, b*, c* in a Cartesian
  frame with a* along x and b* in the xy plane; |B h| = 1/d (no 2 pi), units 1/Angstrom.
  B^T B is the reciprocal metric tensor G*; B is its upper-triangular Cholesky factor.
* U is a proper rotation; UB = U B maps Miller indices to the sample-frame Q.
* Symmetry operators act on Miller indices as row vectors: h' = h R (gemmi's apply_to_hkl).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import gemmi
import numpy as np

CELL_NAMES = ("a", "b", "c", "alpha", "beta", "gamma")


@dataclass(frozen=True)
class UnitCell:
    a: float
    b: float
    c: float
    alpha: float = 90.0
    beta: float = 90.0
    gamma: float = 90.0

    def __post_init__(self):
        if min(self.a, self.b, self.c) <= 0:
            raise ValueError(f"cell lengths must be positive, got {self.parameters}")
        al, be, ga = (math.radians(x) for x in (self.alpha, self.beta, self.gamma))
        v2 = 1 - math.cos(al) ** 2 - math.cos(be) ** 2 - math.cos(ga) ** 2 \
            + 2 * math.cos(al) * math.cos(be) * math.cos(ga)
        if v2 <= 0:
            raise ValueError(f"cell angles {self.alpha, self.beta, self.gamma} do not form a cell")

    @classmethod
    def from_list(cls, values) -> "UnitCell":
        values = [float(v) for v in values]
        if len(values) != 6:
            raise ValueError(f"a cell needs 6 numbers (a, b, c, alpha, beta, gamma), got {values}")
        return cls(*values)

    @property
    def parameters(self) -> tuple[float, ...]:
        return (self.a, self.b, self.c, self.alpha, self.beta, self.gamma)

    @cached_property
    def direct_metric(self) -> np.ndarray:
        a, b, c = self.a, self.b, self.c
        ca, cb, cg = (math.cos(math.radians(x)) for x in (self.alpha, self.beta, self.gamma))
        return np.array([[a * a, a * b * cg, a * c * cb],
                         [a * b * cg, b * b, b * c * ca],
                         [a * c * cb, b * c * ca, c * c]])

    @property
    def volume(self) -> float:
        return float(math.sqrt(np.linalg.det(self.direct_metric)))

    @cached_property
    def reciprocal_metric(self) -> np.ndarray:
        return np.linalg.inv(self.direct_metric)

    @cached_property
    def reciprocal_parameters(self) -> tuple[float, ...]:
        g = self.reciprocal_metric
        a, b, c = (math.sqrt(g[i, i]) for i in range(3))
        al = math.degrees(math.acos(g[1, 2] / (b * c)))
        be = math.degrees(math.acos(g[0, 2] / (a * c)))
        ga = math.degrees(math.acos(g[0, 1] / (a * b)))
        return (a, b, c, al, be, ga)

    @cached_property
    def B(self) -> np.ndarray:
        """Busing-Levy B (1/Angstrom, no 2 pi)."""
        ast, bst, cst, alst, best, gast = self.reciprocal_parameters
        al = math.radians(self.alpha)
        be_s, ga_s = math.radians(best), math.radians(gast)
        return np.array([
            [ast, bst * math.cos(ga_s), cst * math.cos(be_s)],
            [0.0, bst * math.sin(ga_s), -cst * math.sin(be_s) * math.cos(al)],
            [0.0, 0.0, 1.0 / self.c],
        ])

    def d_spacing(self, hkl) -> np.ndarray:
        h = np.asarray(hkl, dtype=float)
        return 1.0 / np.sqrt(np.einsum("...i,ij,...j->...", h, self.reciprocal_metric, h))

    def scaled(self, rel: float) -> "UnitCell":
        return UnitCell(self.a * rel, self.b * rel, self.c * rel, self.alpha, self.beta, self.gamma)


# --------------------------------------------------------------------------------------
# Cell constraints by crystal system (free parameters and how they expand to a cell)
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CellConstraints:
    """The free cell parameters of a crystal system and the ties that give the rest."""

    system: str
    free: tuple[str, ...]

    def free_values(self, cell: UnitCell) -> np.ndarray:
        p = dict(zip(CELL_NAMES, cell.parameters))
        return np.array([p[n] for n in self.free])

    def expand(self, values) -> UnitCell:
        v = dict(zip(self.free, (float(x) for x in values)))
        s = self.system
        if s == "triclinic":
            return UnitCell(*(v[n] for n in CELL_NAMES))
        if s.startswith("monoclinic"):
            return UnitCell(v["a"], v["b"], v["c"], v.get("alpha", 90.0), v.get("beta", 90.0),
                            v.get("gamma", 90.0))
        if s == "orthorhombic":
            return UnitCell(v["a"], v["b"], v["c"])
        if s == "tetragonal":
            return UnitCell(v["a"], v["a"], v["c"])
        if s == "hexagonal":  # hexagonal and trigonal in hexagonal axes
            return UnitCell(v["a"], v["a"], v["c"], 90.0, 90.0, 120.0)
        if s == "rhombohedral":
            return UnitCell(v["a"], v["a"], v["a"], v["alpha"], v["alpha"], v["alpha"])
        if s == "cubic":
            return UnitCell(v["a"], v["a"], v["a"])
        raise ValueError(f"unknown crystal system {s!r}")

    def symmetrize(self, cell: UnitCell) -> UnitCell:
        """The nearest cell obeying the constraints (ties averaged)."""
        p = dict(zip(CELL_NAMES, cell.parameters))
        s = self.system
        if s == "tetragonal" or s == "hexagonal":
            p["a"] = (p["a"] + p["b"]) / 2
        elif s == "cubic":
            p["a"] = (p["a"] + p["b"] + p["c"]) / 3
        elif s == "rhombohedral":
            p["a"] = (p["a"] + p["b"] + p["c"]) / 3
            p["alpha"] = (p["alpha"] + p["beta"] + p["gamma"]) / 3
        return self.expand([p[n] for n in self.free])


_FREE = {
    "triclinic": CELL_NAMES,
    "monoclinic-a": ("a", "b", "c", "alpha"),
    "monoclinic-b": ("a", "b", "c", "beta"),
    "monoclinic-c": ("a", "b", "c", "gamma"),
    "orthorhombic": ("a", "b", "c"),
    "tetragonal": ("a", "c"),
    "hexagonal": ("a", "c"),
    "rhombohedral": ("a", "alpha"),
    "cubic": ("a",),
}


# --------------------------------------------------------------------------------------
# Space group
# --------------------------------------------------------------------------------------
def space_group(symbol: str):
    """gemmi.SpaceGroup from a Hermann-Mauguin symbol, number, or Hall symbol."""
    s = str(symbol).strip()
    try:
        if s.isdigit():
            return gemmi.SpaceGroup(int(s))
        return gemmi.SpaceGroup(s)
    except (ValueError, RuntimeError):
        try:
            return gemmi.find_spacegroup_by_ops(gemmi.symops_from_hall(s))
        except Exception:
            raise ValueError(f"unknown space group {symbol!r} (give a Hermann-Mauguin symbol "
                             "such as 'I 4/m m m', a number, or a Hall symbol)") from None


@dataclass(frozen=True)
class Crystal:
    """A crystal: space group and cell."""

    space_group_symbol: str
    cell: UnitCell

    def __post_init__(self):
        sg = space_group(self.space_group_symbol)

        gcell = gemmi.UnitCell(*self.cell.parameters)
        if not gcell.is_compatible_with_spacegroup(sg, 1e-3):
            raise ValueError(f"cell {self.cell.parameters} is not compatible with space group "
                             f"{sg.hm} ({self.system} needs {self.constraints.free} free, the rest tied)")

    @cached_property
    def sg(self):
        return space_group(self.space_group_symbol)

    @cached_property
    def ops(self):
        return self.sg.operations()

    @property
    def hm(self) -> str:
        return self.sg.xhm()

    @property
    def centring(self) -> str:
        return self.sg.centring_type()

    @property
    def laue_group(self) -> str:
        return self.sg.laue_str()

    @property
    def system(self) -> str:
        """Crystal system refined as a constraint pattern: monoclinic carries its unique axis,
        trigonal is 'hexagonal' (hexagonal axes) or 'rhombohedral' (rhombohedral axes)."""
        cs = self.sg.crystal_system_str()
        if cs == "monoclinic":
            q = (self.sg.qualifier or "b").lstrip("-")[:1] or "b"
            return f"monoclinic-{q}"
        if cs == "trigonal":
            return "rhombohedral" if self.sg.ext == "R" else "hexagonal"
        return cs

    @property
    def constraints(self) -> CellConstraints:
        return CellConstraints(self.system, _FREE[self.system])

    @property
    def B(self) -> np.ndarray:
        return self.cell.B

    def with_cell(self, cell: UnitCell) -> "Crystal":
        return Crystal(self.space_group_symbol, cell)

    # ---- reflections ---------------------------------------------------------------
    def is_absent(self, hkl) -> np.ndarray:
        """Systematically absent by the space group (bool per row of hkl)."""
        h = np.ascontiguousarray(np.asarray(hkl).reshape(-1, 3), dtype=np.int32)
        out = np.asarray(self.ops.systematic_absences(h), dtype=bool)
        return out.reshape(np.asarray(hkl).shape[:-1])

    @cached_property
    def laue_operators(self) -> np.ndarray:
        """Integer matrices R (n, 3, 3) of the Laue group acting as h' = h R (inversion added)."""
        mats = []
        for op in self.ops.sym_ops:
            R = np.array(op.rot, dtype=int) // op.DEN
            for M in (R, -R):
                if not any(np.array_equal(M, m) for m in mats):
                    mats.append(M)
        return np.array(mats)

    @cached_property
    def laue_keeps_l_planes(self) -> bool:
        """True when every Laue operator maps L planes onto L planes (l' = +-l, h' and k'
        free of l): all Laue groups but the cubic and rhombohedral ones.  Symmetrisation
        then works slab by slab (hklflow.algorithms.merge.symmetry.l_separable)."""
        R = self.laue_operators
        return bool(np.all(R[:, 0, 2] == 0) and np.all(R[:, 1, 2] == 0)
                    and np.all(R[:, 2, 0] == 0) and np.all(R[:, 2, 1] == 0)
                    and np.all(np.abs(R[:, 2, 2]) == 1))

    def canonical_hkl(self, hkl) -> np.ndarray:
        """A representative of each reflection's Laue-equivalence class (the same for all
        symmetry-equivalent indices): the lexicographically largest equivalent."""
        h = np.asarray(hkl, dtype=np.int64).reshape(-1, 3)
        eq = np.einsum("ni,kij->knj", h, self.laue_operators)  # (k, n, 3)
        key = (eq[..., 0] * 1_000_003 + eq[..., 1]) * 1_000_003 + eq[..., 2]
        best = np.argmax(key, axis=0)
        return eq[best, np.arange(h.shape[0])].reshape(np.asarray(hkl).shape)

    def reflections_within(self, d_min: float) -> np.ndarray:
        """All allowed (not absent, not 000) hkl with d >= d_min, shape (n, 3) int."""
        g = self.cell
        lim = [int(math.floor(L / d_min)) + 1 for L in (g.a, g.b, g.c)]
        # h = a.Q, so |h| <= |a| |Q| <= a/d_min for any cell
        h, k, l = np.meshgrid(*[np.arange(-n, n + 1) for n in lim], indexing="ij")
        hkl = np.stack([h.ravel(), k.ravel(), l.ravel()], axis=1)
        hkl = hkl[np.any(hkl != 0, axis=1)]
        d = g.d_spacing(hkl)
        hkl = hkl[d >= d_min]
        return hkl[~self.is_absent(hkl)]

    def nearest_reflection_spacing(self) -> float:
        """|Q| (1/Angstrom, 2 pi convention) between the two nearest allowed reflections: the
        shortest allowed reciprocal-lattice vector."""
        d_min = max(self.cell.parameters[:3]) / 2.01
        refl = self.reflections_within(d_min)
        while not len(refl):  # screw axes and centring can forbid every long-d reflection
            d_min /= 2
            refl = self.reflections_within(d_min)
        return float(2 * math.pi / self.cell.d_spacing(refl).max())


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    """A uniformly random proper rotation matrix."""
    q = rng.normal(size=4)
    q /= np.linalg.norm(q)
    w, x, y, z = q
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])


