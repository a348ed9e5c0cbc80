"""The files that modelling programs read, written from a merged or symmetrised volume that
carries a variance (files.volume: signal, weight, variance arrays [l, k, h]; intensity
I = signal / weight, sigma = sqrt(variance) / weight).

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

rmc-discord (``write_rmc_discord``: ``STEM_rmc_discord.nxs``)
-------------------------------------------------------------
Source: rmc-discord 0.0.4 (PyPI's newest, 2022-08-05), ``disorder/diffuse/experimental.py``,
functions ``data`` and ``mask`` (run on our file by tests/steps/test_model_inputs.py). By its
code, not run here, the layout also fits the h5py reader of its GitHub ``master``
(zjmorgan/rmc-discord 095ff69, 2023-09-20), which reads ``MDHistoWorkspace/data`` too.
The file is Mantid's SaveMD layout of an MDHistoWorkspace:

* ``/MDHistoWorkspace/data/signal`` and ``errors_squared``: float64 arrays of shape
  (nl, nk, nh), i.e. [l, k, h] as stored here. The reader transposes them (``.T``) to
  [h, k, l]. They must be float64 because its Cython filters take ``double[:, :, ::1]``.
  signal = I; errors_squared = sigma^2 of I (floored as above).
* The axes ``[H,0,0]``, ``[0,K,0]`` and ``[0,0,L]`` (0.0.4 accepts these or ``Q1..Q3``) are
  **bin edges** in r.l.u. (n + 1 values, centre -/+ step / 2). The reader takes
  n = len(axis) - 1 and the range [min + step / 2, max - step / 2], rounded to 4 decimals:
  the first and last voxel centres.
* Unmeasured voxels: NaN in both. Its ``mask`` leaves out NaN, inf and values <= 0 of either
  array, so it also leaves out the measured voxels with I = 0; nothing we write can keep
  them. It weights by 1 / errors_squared (``disorder/graphical/model.py``,
  ``get_refinement_data``).

Yell (``write_yell``: folder ``STEM_yell/``)
--------------------------------------------
Source: Yell's manual, ``documentation/reference.md`` of github:YellProgram/Yell (275ffb2,
2025-08-04: "Yell 1.0", sections "Yell data format for arrays", "Allowed array input files",
"DiffuseScatteringGrid") and its reader ``ReadHDF5`` in ``src/diffuser_core.cpp`` and
``src/main.cpp``:

* Every array is an HDF5 file with its dataset at ``/data`` and the root attribute
  ``filetype = 'Yell 1.0'``. Arrays are row-major with x = h first: the manual's
  ``write4yell`` permutes MATLAB's (h, k, l) array so that HDF5 sees dims (nh, nk, nl), and
  ``Grid::s_at`` maps index (i, j, k) to lower_limits + steps * (i, j, k). So the array is
  [h, k, l], the transpose of ours. The values are float64: the manual writes ``double``
  and the reader reads ``NATIVE_DOUBLE``. ``ReadHDF5`` opens ``data`` only and never checks
  ``filetype``; it is written because the manual asks for it.
* ``experiment.h5`` holds I, and 0 where nothing was measured. It must be finite there,
  because Yell minimises weights * (I_exp - I_model) and 0 * NaN is NaN.
* ``weights.h5`` holds 1 / sigma (floored as above), and 0 where nothing was measured.
* ``reciprocal_space_multiplier.h5`` (the mask) holds 1 where measured and 0 elsewhere.
  Yell multiplies its model by it, "zeroing-out the model intensities in places where
  experiment was not measured".
* Fixed file names, all on one grid. Yell looks for them beside ``model.txt``.
  ``model_grid.txt`` holds the lines for ``model.txt``: ``Cell`` (from the sample; Å and
  degrees), ``DiffuseScatteringGrid lower_limits step_sizes number_of_pixels`` and
  ``LaueSymmetry`` (yell_laue_symmetry; a comment where Yell has no name for it). The
  lower limits are the first voxel centres (h, k, l) and the steps are in r.l.u.
* FFT (``fft_grid=True``): Yell's FFT (its ΔPDF outputs, ``pdf_multiplier.h5``, the
  approximate method) needs an even number of pixels on every axis, with the origin at pixel
  n/2 + 1 (1-based). The manual: "such 'natural' datasets should be stripped of the last
  planes". An axis with odd n that is symmetric about 0 (every derived grid) loses its last
  plane. In a symmetrised volume that plane repeats the first one, because every Laue group
  holds the inversion; a merged volume loses that plane's measurements. An axis that cannot
  be made so is kept whole, and ``model_grid.txt`` says that only ``CalculationMethod exact``
  works.
"""
from __future__ import annotations

import contextlib
import json
import textwrap
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..model.crystal import UnitCell
from ..model.crystal import space_group as crystal_space_group
from ..model.grid import Axis, Grid
from .atomic import atomic_path, write_json_atomically, write_text_atomically
from .h5 import open_h5, write_provenance_h5
from .volume import Volume

PROGRAMS = ("yell", "rmc_discord")
FLOOR_SHELLS = 20  # shells of |Q| (equal steps of |Q|^3) of the sigma floor
SLAB_BYTES = 64e6  # one float64 array of a slab holds about this much
YELL_FILES = ("experiment.h5", "weights.h5", "reciprocal_space_multiplier.h5")
YELL_EPSILON = 1e-10  # Yell's almost_equal (src/diffuser_core.h)
RMC_AXES = ("[H,0,0]", "[0,K,0]", "[0,0,L]")  # h, k, l: Mantid's HKL dimension names
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


def _require_variance(volume: Volume) -> None:
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


def _slabs(n: int, per_plane: int) -> list[tuple[int, int]]:
    step = max(1, int(SLAB_BYTES // (8 * max(per_plane, 1))))
    return [(i, min(i + step, n)) for i in range(0, n, step)]


def sigma_floor(volume: Volume, shells: int = FLOOR_SHELLS) -> SigmaFloor:
    """The variance that measured voxels with variance 0 are given (module docstring), in two
    passes over L slabs."""
    _require_variance(volume)
    if shells < 1:
        raise ValueError(f"shells must be >= 1, got {shells}")
    grid = volume.grid
    metric, unit = _metric(volume)
    nl, nk, nh = grid.shape
    slabs = _slabs(nl, nk * nh)
    q2_max, measured, floored = 0.0, 0, 0
    for l0, l1 in slabs:  # the outer edge: the largest measured |Q|
        region = (slice(l0, l1), slice(None), slice(None))
        _, _, v, m = _raw(volume, region)
        if m.any():
            q2_max = max(q2_max, float(_q2(grid, metric, region)[m].max()))
        measured += int(m.sum())
        floored += int((m & (v == 0)).sum())
    floor = SigmaFloor(metric, q2_max ** 1.5, np.full(shells, np.inf), measured, floored, unit)
    for l0, l1 in slabs:
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


def _notes(volume: Volume, floor: SigmaFloor, **more) -> dict:
    return {"volume": {"kind": volume.kind, "title": volume.title,
                       "grid": volume.grid.as_dict()},
            "sigma_floor": floor.as_dict(), **more}


# --------------------------------------------------------------------------------------
# rmc-discord
# --------------------------------------------------------------------------------------
def rmc_discord_edges(axis: Axis) -> np.ndarray:
    """The bin edges of an axis (n + 1 values), as a Mantid MDHistoWorkspace stores them."""
    return axis.start + axis.step * (np.arange(axis.n + 1) - 0.5)


def write_rmc_discord(volume: Volume, out_dir, stem: str, *, provenance: dict | None = None,
                      floor: SigmaFloor | None = None) -> list[Path]:
    """STEM_rmc_discord.nxs in out_dir (module docstring), written atomically."""
    _require_variance(volume)
    floor = sigma_floor(volume) if floor is None else floor
    grid = volume.grid
    path = Path(out_dir) / f"{stem}_rmc_discord.nxs"
    with atomic_path(path) as tmp, open_h5(tmp, "w") as f:
        f.attrs["NX_class"] = "NXroot"
        f.attrs["creator"] = "hklflow"
        f.attrs["default"] = "MDHistoWorkspace"
        ent = f.create_group("MDHistoWorkspace")
        ent.attrs["NX_class"] = "NXentry"
        ent.attrs["default"] = "data"
        d = ent.create_group("data")
        d.attrs["NX_class"] = "NXdata"
        d.attrs["signal"] = "signal"
        d.attrs["axes"] = list(RMC_AXES[::-1])  # [l, k, h]
        for name, ax, a in zip(RMC_AXES, grid.axes, "HKL"):
            ds = d.create_dataset(name, data=rmc_discord_edges(ax))
            ds.attrs.update({"long_name": name, "units": "r.l.u.", "frame": "HKL",
                             "description": f"bin edges of {a} (voxel centres +/- step/2)"})
        sig = d.create_dataset("signal", grid.shape, np.float64)
        sig.attrs["signal"] = np.int32(1)  # Mantid's SaveMD also marks it the old way
        sig.attrs["axes"] = ":".join(RMC_AXES[::-1])
        err = d.create_dataset("errors_squared", grid.shape, np.float64)
        err.attrs["description"] = "sigma^2 of signal; NaN where nothing was measured"
        nl, nk, nh = grid.shape
        for l0, l1 in _slabs(nl, nk * nh):
            i, s, _ = voxel_arrays(volume, floor, (slice(l0, l1), slice(None), slice(None)))
            sig[l0:l1] = i
            err[l0:l1] = s * s
        note = ent.create_group("notes")
        note.attrs["NX_class"] = "NXnote"
        note["type"] = "application/json"
        note["data"] = json.dumps(_notes(volume, floor, layout=(
            "Mantid MDHistoWorkspace as rmc-discord 0.0.4 reads it (disorder.diffuse."
            "experimental.data): signal = intensity, errors_squared = sigma^2, [l, k, h], "
            "axes = bin edges (r.l.u.), NaN where nothing was measured")), indent=1)
        if provenance is not None:
            write_provenance_h5(ent, provenance)
    return [path]


# --------------------------------------------------------------------------------------
# Yell
# --------------------------------------------------------------------------------------
def yell_axis(axis: Axis, fft_grid: bool = True) -> Axis:
    """The axis Yell gets: without its last plane when that makes it FFT-compatible (odd n,
    symmetric about 0), else as it is."""
    if fft_grid and axis.n > 1 and axis.n % 2 == 1 and abs(
            axis.start + (axis.n - 1) / 2 * axis.step) < 1e-9 * max(axis.step, 1.0):
        return Axis(axis.start, axis.step, axis.n - 1)
    return axis


def yell_fft_compatible(axes) -> bool:
    """Yell's Grid::grid_is_compatible_with_fft (src/diffuser_core.h)."""
    for ax in axes:
        if ax.n == 1:
            if abs(ax.start) >= YELL_EPSILON:
                return False
        elif ax.n % 2 == 1 or abs(ax.start + ax.n // 2 * ax.step) >= YELL_EPSILON:
            return False
    return True


def _number(x: float) -> str:
    return format(float(x), ".15g")


def yell_grid_line(axes) -> str:
    return ("DiffuseScatteringGrid " + " ".join(_number(ax.start) for ax in axes) + "  "
            + " ".join(_number(ax.step) for ax in axes) + "  "
            + " ".join(str(ax.n) for ax in axes))


def _yell_text(volume: Volume, axes, cropped, floor: SigmaFloor) -> str:
    fft = yell_fft_compatible(axes)
    lines = [f"# Yell input written by hklflow from {volume.title or '?'} ({volume.kind}).",
             "# experiment.h5: intensity, 0 where nothing was measured; weights.h5: 1/sigma,",
             "# 0 where nothing was measured; reciprocal_space_multiplier.h5: 1 where measured,",
             "# 0 elsewhere. Arrays [h, k, l] (h slowest), float64."]
    lines += textwrap.wrap(f"{floor.measured} voxels measured; {floor.floored} of them with "
                           f"sigma 0 (no counts): {FLOOR_RULE}.", 88,
                           initial_indent="# ", subsequent_indent="# ")
    if cropped:
        lines.append("# The last plane along " + ", ".join(cropped) + " is left out (Yell's "
                     "FFT rule: even pixels, origin at n/2+1).")
    lines.append("# FFT-compatible grid: yes." if fft else
                 "# Not FFT-compatible (Yell's FFT needs even n and the origin at pixel n/2+1):"
                 " use CalculationMethod exact; no Delta-PDF outputs.")
    cell = volume.sample.get("unit_cell") if volume.sample else None
    if cell is not None:
        lines.append("Cell " + " ".join(_number(round(float(c), 10)) for c in cell))
    else:
        lines.append("# Cell: unknown (the volume has no unit cell): a b c alpha beta gamma")
    lines.append(yell_grid_line(axes))
    group = volume.sample.get("space_group") if volume.sample else None
    laue = yell_laue_symmetry(group) if group else None
    if laue:
        lines.append(f"LaueSymmetry {laue}")
    else:
        lines.append(f"# LaueSymmetry: Yell has none for {group or 'an unknown space group'} "
                     "(its names: m-3m m-3 6/mmm 6/m 4/mmm 4/m -3:R -3:H -3m:H -3m:R mmm 2/m "
                     "2/m:b -1)")
    return "\n".join(lines) + "\n"


def yell_laue_symmetry(space_group: str) -> str | None:
    """Yell's name of a space group's Laue class (its model grammar: `2/m` has the unique
    axis c, `-3m:H` the 2-folds of -3m1, (h, k, l) -> (k, h, -l)), None where Yell has none
    (unique axis a; -31m)."""
    import gemmi

    sg = crystal_space_group(space_group)
    laue = sg.laue_str()
    if laue in ("m-3m", "m-3", "6/mmm", "6/m", "4/mmm", "4/m", "mmm", "-1"):
        return laue
    if laue == "2/m":
        return {"b": "2/m:b", "c": "2/m"}.get((sg.qualifier or "b").lstrip("-")[:1])
    rhombohedral = sg.ext == "R"
    if laue == "-3":
        return "-3:R" if rhombohedral else "-3:H"
    if laue == "-3m":
        if rhombohedral:
            return "-3m:R"
        # (its matrix is its own transpose: the same on coordinates and on indices)
        swap = np.array([[0, 1, 0], [1, 0, 0], [0, 0, -1]]) * gemmi.Op.DEN
        has = any(np.array_equal(sign * np.array(op.rot), swap)
                  for op in sg.operations() for sign in (1, -1))
        return "-3m:H" if has else None
    return None


def write_yell(volume: Volume, out_dir, stem: str, *, fft_grid: bool = True,
               provenance: dict | None = None, floor: SigmaFloor | None = None) -> list[Path]:
    """Folder STEM_yell/ in out_dir with experiment.h5, weights.h5,
    reciprocal_space_multiplier.h5 and model_grid.txt (and provenance.json when given; module
    docstring), each written atomically."""
    _require_variance(volume)
    floor = sigma_floor(volume) if floor is None else floor
    grid = volume.grid
    axes = tuple(yell_axis(ax, fft_grid) for ax in grid.axes)
    cropped = [a for a, old, new in zip("hkl", grid.axes, axes) if new.n != old.n]
    nh, nk, nl = (ax.n for ax in axes)
    folder = Path(out_dir) / f"{stem}_yell"
    paths = [folder / name for name in YELL_FILES]
    with contextlib.ExitStack() as stack:
        files = []
        for p in paths:
            f = stack.enter_context(open_h5(stack.enter_context(atomic_path(p)), "w"))
            f.attrs["filetype"] = np.bytes_(b"Yell 1.0")  # fixed-length, as MATLAB's h5writeatt
            files.append(f.create_dataset("data", (nh, nk, nl), np.float64))
        experiment, weights, multiplier = files
        for h0, h1 in _slabs(nh, nk * nl):
            i, s, m = voxel_arrays(volume, floor, (slice(0, nl), slice(0, nk), slice(h0, h1)))
            with np.errstate(divide="ignore"):
                w = np.where(m, 1.0 / s, 0.0)
            experiment[h0:h1] = np.where(m, i, 0.0).transpose(2, 1, 0)
            weights[h0:h1] = w.transpose(2, 1, 0)
            multiplier[h0:h1] = m.astype(np.float64).transpose(2, 1, 0)
    text = folder / "model_grid.txt"
    write_text_atomically(text, _yell_text(volume, axes, cropped, floor))
    paths.append(text)
    if provenance is not None:
        paths.append(write_json_atomically(folder / "provenance.json", {
            "provenance": provenance, **_notes(volume, floor, yell_grid=yell_grid_line(axes),
                                               cropped_last_plane=cropped)}))
    return paths


# --------------------------------------------------------------------------------------
# All of them
# --------------------------------------------------------------------------------------
def write_model_inputs(volume: Volume, out_dir, stem: str, programs=PROGRAMS, *,
                       provenance: dict | None = None) -> dict[str, list[Path]]:
    """The files of each program in `programs` (yell, rmc_discord) in out_dir, named after
    stem: {program: [paths]}. The sigma floor is found once for all of them."""
    programs = tuple(programs)
    unknown = [p for p in programs if p not in PROGRAMS]
    if unknown:
        raise ValueError(f"unknown modelling program(s) {unknown}: known are {list(PROGRAMS)}")
    _require_variance(volume)
    floor = sigma_floor(volume)
    writers = {"yell": write_yell, "rmc_discord": write_rmc_discord}
    return {p: writers[p](volume, out_dir, stem, provenance=provenance, floor=floor)
            for p in dict.fromkeys(programs)}


__all__ = ["PROGRAMS", "FLOOR_SHELLS", "SigmaFloor", "sigma_floor", "voxel_arrays",
           "write_model_inputs", "write_rmc_discord", "write_yell", "yell_axis",
           "yell_fft_compatible", "yell_grid_line", "rmc_discord_edges"]
