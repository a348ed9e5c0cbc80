"""The files that modelling programs read (rule model_inputs, output.model_inputs), written
from a merged or symmetrised volume that carries a variance (files.volume: signal, weight,
variance arrays [l, k, h]; intensity I = signal / weight, sigma = sqrt(variance) / weight).

One module per program in this package, named as the config schema's
``output.model_inputs`` names it (``yell``, ``rmc_discord``; settings/schemas/
config.schema.yaml), which gives

* ``FILES``: {role: name} of the files it writes in the volume's model_inputs folder
  (files.outputs.MODEL_INPUTS), each name holding ``{stem}``, the volume's name
  (``transform_symmetrized``).  Rule model_inputs names its outputs from it when Snakemake
  parses the workflow, so a program's module imports nothing heavy (no h5py: it opens its
  HDF5 files with new_h5_file);
* ``write(volume, out_dir, stem, *, floor=None, provenance=None) -> [paths written]``, the
  paths named by ``file_paths(FILES, out_dir, stem)``, each written atomically.

What they share is here: which voxels go in, with which sigma.  Adding a program is its
module and its name in the schema's enum (docs/map.md, "Adding an output format").

Which voxels go in
------------------
A voxel is *measured* where its weight is > 0 and its signal and variance are finite. A
measured voxel whose counts were all zero has variance 0 and so sigma 0. That is its
Poisson estimate, but a program that weights by 1/sigma or 1/sigma^2 would give it an
infinite weight. Such a voxel is given **the variance of the weakest count seen in its |Q|
shell**: the smallest non-zero variance_sum of the measured voxels in its shell, divided
by the voxel's own weight (sigma = sqrt(v_min) / weight: as if that one count had been
seen among the voxel's own observations). Shells: ``FLOOR_SHELLS`` equal steps of |Q|^3
from 0 to the largest |Q| of a measured voxel. |Q| comes from the sample's unit cell; a
volume without one uses |(h, k, l)| in r.l.u. A shell with no non-zero variance uses the
smallest one of the whole volume. Where the transform split a pixel's counts over rotation
sub-steps, that smallest variance may be a share of one count, so the floor errs towards
the smaller sigma, but it is never zero. A volume without any non-zero variance raises
ValueError.
"""
from __future__ import annotations

import contextlib
import importlib
import pkgutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import numpy as np

from ...base.atomic import atomic_path
from ...model.crystal import UnitCell
from ...model.grid import Grid

if TYPE_CHECKING:  # (files.volume loads h5py: not at the Snakefile's parse)
    from ..volume import Volume

FLOOR_SHELLS = 20  # shells of |Q| (equal steps of |Q|^3) of the sigma floor
SLAB_BYTES = 64e6  # one float64 array of a slab holds about this much
FLOOR_RULE = ("a measured voxel with variance 0 (no counts) gets the smallest non-zero "
              "variance_sum of the measured voxels in its |Q| shell (equal steps of |Q|^3 "
              "to the largest measured |Q|), sigma = sqrt(that) / its weight")


# --------------------------------------------------------------------------------------
# The voxels: intensity, sigma with its floor, measured
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SigmaFloor:
    """The variance given to measured voxels with variance 0, per shell of |Q|."""
    metric: np.ndarray  # 3x3 metric of |Q|^2 = x.G.x (the reciprocal metric, 1/A^2)
    q3_max: float  # |Q|^3 of the outer shell edge (the largest measured |Q|)
    variance: np.ndarray  # [shell] smallest non-zero variance_sum of its measured voxels
    measured: int  # measured voxels
    floored: int  # of them with variance 0
    q_unit: str  # "1/A", or "r.l.u." without a unit cell

    @property
    def shells(self) -> int:
        return len(self.variance)

    def shell_of(self, q2: np.ndarray) -> np.ndarray:
        if self.q3_max <= 0:
            return np.zeros(q2.shape, np.intp)
        s = np.floor(np.maximum(q2, 0.0) ** 1.5 / self.q3_max * self.shells)
        return np.clip(s, 0, self.shells - 1).astype(np.intp)

    def as_dict(self) -> dict:
        return {"rule": FLOOR_RULE, "shells": self.shells, "q_unit": self.q_unit,
                "q_max": round(self.q3_max ** (1 / 3), 6), "measured_voxels": self.measured,
                "floored_voxels": self.floored,
                "shell_variance": [float(v) for v in self.variance]}


def require_variance(volume: Volume) -> None:
    if volume.variance is None:
        raise ValueError("the volume carries no variance (reduction.transform.variance: "
                         "false): the modelling programs need sigma")


def _metric(volume: Volume) -> tuple[np.ndarray, str]:
    cell = volume.sample.get("unit_cell") if volume.sample else None
    if cell is None:
        return np.eye(3), "r.l.u."
    return np.asarray(UnitCell.from_list(cell).reciprocal_metric, float), "1/A"


def _q2(grid: Grid, metric: np.ndarray, region) -> np.ndarray:
    """|Q|^2 of the voxels of region (slices of [l, k, h]), float64 [l, k, h]."""
    ls, ks, hs = region
    x = (grid.h.values[hs][None, None, :], grid.k.values[ks][None, :, None],
         grid.l.values[ls][:, None, None])
    G = metric
    return (G[0, 0] * x[0] ** 2 + G[1, 1] * x[1] ** 2 + G[2, 2] * x[2] ** 2
            + 2 * G[0, 1] * x[0] * x[1] + 2 * G[0, 2] * x[0] * x[2] + 2 * G[1, 2] * x[1] * x[2])


def _raw(volume: Volume, region):
    s = np.asarray(volume.signal[region], np.float64)
    w = np.asarray(volume.weight[region], np.float64)
    v = np.asarray(volume.variance[region], np.float64)
    measured = (w > 0) & np.isfinite(s) & np.isfinite(v) & (v >= 0)
    return s, w, v, measured


def slabs(n: int, per_plane: int) -> list[tuple[int, int]]:
    step = max(1, int(SLAB_BYTES // (8 * max(per_plane, 1))))
    return [(i, min(i + step, n)) for i in range(0, n, step)]


def sigma_floor(volume: Volume, shells: int = FLOOR_SHELLS) -> SigmaFloor:
    """The variance that measured voxels with variance 0 are given (module docstring), in two
    passes over L slabs."""
    require_variance(volume)
    if shells < 1:
        raise ValueError(f"shells must be >= 1, got {shells}")
    grid = volume.grid
    metric, unit = _metric(volume)
    nl, nk, nh = grid.shape
    parts = slabs(nl, nk * nh)
    q2_max, measured, floored = 0.0, 0, 0
    for l0, l1 in parts:  # the outer edge: the largest measured |Q|
        region = (slice(l0, l1), slice(None), slice(None))
        _, _, v, m = _raw(volume, region)
        if m.any():
            q2_max = max(q2_max, float(_q2(grid, metric, region)[m].max()))
        measured += int(m.sum())
        floored += int((m & (v == 0)).sum())
    floor = SigmaFloor(metric, q2_max ** 1.5, np.full(shells, np.inf), measured, floored, unit)
    for l0, l1 in parts:
        region = (slice(l0, l1), slice(None), slice(None))
        _, _, v, m = _raw(volume, region)
        nz = m & (v > 0)
        if nz.any():
            np.minimum.at(floor.variance, floor.shell_of(_q2(grid, metric, region)[nz]), v[nz])
    finite = np.isfinite(floor.variance)
    if floored and not finite.any():
        raise ValueError(f"{floored} measured voxels have sigma 0 and no voxel has a non-zero "
                         "variance to floor them with (a volume without counts?)")
    if finite.any():
        floor.variance[~finite] = floor.variance[finite].min()
    return floor


def voxel_arrays(volume: Volume, floor: SigmaFloor, region=(slice(None),) * 3):
    """(intensity, sigma, measured) of region (slices of [l, k, h]): float64 [l, k, h]
    arrays, intensity and sigma NaN where nothing was measured, sigma floored (module
    docstring) where the variance is 0."""
    s, w, v, m = _raw(volume, region)
    zero = m & (v == 0)
    if zero.any():
        v = v.copy()
        v[zero] = floor.variance[floor.shell_of(_q2(volume.grid, floor.metric, region)[zero])]
    with np.errstate(invalid="ignore", divide="ignore"):
        intensity = np.where(m, s / w, np.nan)
        sigma = np.where(m, np.sqrt(v) / w, np.nan)
    return intensity, sigma, m


def notes_of(volume: Volume, floor: SigmaFloor, **more) -> dict:
    """What every program's files record of their volume and its sigma floor."""
    return {"volume": {"kind": volume.kind, "title": volume.title,
                       "grid": volume.grid.as_dict()},
            "sigma_floor": floor.as_dict(), **more}



# --------------------------------------------------------------------------------------
# What the programs' modules share to write their files
# --------------------------------------------------------------------------------------
def file_paths(files: dict, out_dir, stem: str) -> dict[str, Path]:
    """{role: path} of a program's FILES in out_dir, named after stem."""
    return {role: Path(out_dir) / name.replace("{stem}", stem) for role, name in files.items()}


@contextlib.contextmanager
def new_h5_file(path) -> Iterator:
    """A new HDF5 file at `path` (files.h5.open_h5), there whole or not at all."""
    from ..h5 import open_h5  # (h5py: only when a file is written, not when one is named)

    with atomic_path(path) as tmp, open_h5(tmp, "w") as f:
        yield f


def write_provenance(group, record: dict) -> None:
    """The provenance group of files.h5 (write_provenance_h5) in an open HDF5 group."""
    from ..h5 import write_provenance_h5  # (h5py: as new_h5_file)

    write_provenance_h5(group, record)


# --------------------------------------------------------------------------------------
# The programs
# --------------------------------------------------------------------------------------
def program_names() -> tuple[str, ...]:
    """The programs with a module in this package, by name (the schema's enum lists the
    same: tests/files/test_model_inputs.py)."""
    return tuple(sorted(m.name for m in pkgutil.iter_modules(__path__)
                        if not m.name.startswith("_")))


def program(name: str):
    """The module of modelling program `name` (ValueError when there is none)."""
    if name not in program_names():
        raise ValueError(f"unknown modelling program(s) {[name]}: known are "
                         f"{list(program_names())}")
    return importlib.import_module(f"{__name__}.{name}")


def file_names(name: str, stem: str) -> list[str]:
    """The names of the files program `name` writes, relative to the model_inputs folder,
    after stem (which may hold Snakemake's wildcards: ``{volume}``)."""
    return [str(p) for p in file_paths(program(name).FILES, "", stem).values()]


def write_model_inputs(volume: Volume, out_dir, stem: str, programs=None, *,
                       provenance: dict | None = None) -> dict[str, list[Path]]:
    """The files of each program in `programs` (all by default) in out_dir, named after
    stem: {program: [paths]}.  The sigma floor is found once for all of them."""
    known = program_names()
    programs = known if programs is None else tuple(programs)
    unknown = [p for p in programs if p not in known]
    if unknown:
        raise ValueError(f"unknown modelling program(s) {unknown}: known are {list(known)}")
    require_variance(volume)
    floor = sigma_floor(volume)
    return {p: program(p).write(volume, out_dir, stem, provenance=provenance, floor=floor)
            for p in dict.fromkeys(programs)}
