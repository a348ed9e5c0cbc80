"""The files Yell reads (output.model_inputs: yell): folder ``STEM_yell/``.

Source: Yell's manual, ``documentation/reference.md`` of github:YellProgram/Yell (275ffb2,
2025-08-04: "Yell 1.0", sections "Yell data format for arrays", "Allowed array input files",
"DiffuseScatteringGrid") and its reader ``ReadHDF5`` in ``src/diffuser_core.cpp`` and
``src/main.cpp``:

* Every array is an HDF5 file with its dataset at ``/data`` and the root attribute
  ``filetype = 'Yell 1.0'``. Arrays are row-major with x = h first: the manual's
  ``write4yell`` permutes MATLAB's (h, k, l) array so that HDF5 sees dims (nh, nk, nl), and
  ``Grid::s_at`` maps index (i, j, k) to lower_limits + steps * (i, j, k). So the array is
  [h, k, l], the transpose of ours. ``ReadHDF5`` opens ``data`` only and never checks
  ``filetype``; it is written because the manual asks for it.
* Precision and size: the reader reads ``data`` into doubles (``dataset.read(...,
  PredType::NATIVE_DOUBLE)``), so HDF5 converts whatever type the file stores, as it does
  for any reader that asks for doubles (the manual's MATLAB writes doubles). We store
  intensity and weights as float32, the precision of the volume they come from, and the mask
  as uint8. The files use no compression filter: where no HDF5 is installed, Yell's build
  makes its own (``cmake/hdf5.cmake``: 1.12.0 from source, static, with no option for zlib),
  and whether that one has even the deflate filter is left to HDF5's defaults. They are
  chunked instead, and a chunk with nothing measured is not stored: HDF5 reads it as the fill
  value, 0, which is what every array holds there.
* ``experiment.h5`` holds I, and 0 where nothing was measured. It must be finite there,
  because Yell minimises weights * (I_exp - I_model) and 0 * NaN is NaN.
* ``weights.h5`` holds 1 / sigma (floored: hklflow.files.model_inputs), and 0 where nothing was measured.
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
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING

import gemmi
import numpy as np

from ...base.atomic import write_json_atomically, write_text_atomically
from ...model.crystal import space_group as crystal_space_group
from ...model.grid import Axis
from . import (FLOOR_RULE, SigmaFloor, file_paths, new_h5_file, notes_of, require_variance,
               sigma_floor, slabs, voxel_arrays)

if TYPE_CHECKING:  # (files.volume loads h5py: not at the Snakefile's parse)
    from ..volume import Volume

FILES = {"experiment": "{stem}_yell/experiment.h5", "weights": "{stem}_yell/weights.h5",
         "multiplier": "{stem}_yell/reciprocal_space_multiplier.h5",
         "model_grid": "{stem}_yell/model_grid.txt", "provenance": "{stem}_yell/provenance.json"}
ARRAYS = ("experiment", "weights", "multiplier")  # FILES that hold the arrays
DTYPES = {"experiment": np.float32, "weights": np.float32, "multiplier": np.uint8}
CHUNK = 16  # voxels along each axis of a stored chunk: finer ones store less of the unmeasured
# what its files take per measured voxel (hklflow.planning.disk): the arrays' bytes, stored
# only where something was measured
BYTES_PER_MEASURED_VOXEL = sum(np.dtype(t).itemsize for t in DTYPES.values())
YELL_EPSILON = 1e-10  # Yell's almost_equal (src/diffuser_core.h)


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
             "# 0 elsewhere. Arrays [h, k, l] (h slowest): float32, the mask uint8 (Yell reads",
             "# each as double)."]
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


def _slabs(n: int, per_plane: int, chunk: int) -> list[tuple[int, int]]:
    """The h slabs written at a time (model_inputs.slabs), whole chunks where a slab holds
    several (no chunk then written twice)."""
    parts = slabs(n, per_plane)
    step = parts[0][1] - parts[0][0]
    if step <= chunk:
        return parts
    step -= step % chunk
    return [(i, min(i + step, n)) for i in range(0, n, step)]


def write(volume: Volume, out_dir, stem: str, *, fft_grid: bool = True,
          provenance: dict | None = None, floor: SigmaFloor | None = None) -> list[Path]:
    """Folder STEM_yell/ in out_dir with experiment.h5, weights.h5,
    reciprocal_space_multiplier.h5 and model_grid.txt (and provenance.json when given; module
    docstring), each written atomically."""
    require_variance(volume)
    floor = sigma_floor(volume) if floor is None else floor
    grid = volume.grid
    axes = tuple(yell_axis(ax, fft_grid) for ax in grid.axes)
    cropped = [a for a, old, new in zip("hkl", grid.axes, axes) if new.n != old.n]
    nh, nk, nl = (ax.n for ax in axes)
    named = file_paths(FILES, out_dir, stem)
    paths = [named[role] for role in ARRAYS]
    shape = (nh, nk, nl)
    # about CHUNK voxels along each axis, as many whole chunks as the axis needs: HDF5 stores
    # an edge chunk whole
    chunks = tuple(-(-n // -(-n // CHUNK)) for n in shape)
    with contextlib.ExitStack() as stack:
        files = []
        for role, p in zip(ARRAYS, paths):
            f = stack.enter_context(new_h5_file(p))
            f.attrs["filetype"] = np.bytes_(b"Yell 1.0")  # fixed-length, as MATLAB's h5writeatt
            files.append(f.create_dataset("data", shape, DTYPES[role], chunks=chunks,
                                          fillvalue=0))
        for h0, h1 in _slabs(nh, nk * nl, chunks[0]):
            i, s, m = voxel_arrays(volume, floor, (slice(0, nl), slice(0, nk), slice(h0, h1)))
            with np.errstate(divide="ignore"):
                w = np.where(m, 1.0 / s, 0.0)
            arrays = (np.where(m, i, 0.0), w, m)
            arrays = [a.transpose(2, 1, 0).astype(DTYPES[role])
                      for role, a in zip(ARRAYS, arrays)]
            measured = arrays[2]
            # only the blocks (a chunk's share of the slab) holding a measured voxel: a
            # chunk none of whose blocks is written is not stored, and reads as the 0 it
            # would hold
            for a0 in range(h0 - h0 % chunks[0], h1, chunks[0]):
                hs = slice(max(a0, h0) - h0, min(a0 + chunks[0], h1) - h0)
                for k0 in range(0, nk, chunks[1]):
                    for l0 in range(0, nl, chunks[2]):
                        block = (hs, slice(k0, k0 + chunks[1]), slice(l0, l0 + chunks[2]))
                        if measured[block].any():
                            at = (slice(hs.start + h0, hs.stop + h0),) + block[1:]
                            for dataset, a in zip(files, arrays):
                                dataset[at] = a[block]
    paths.append(write_text_atomically(named["model_grid"],
                                       _yell_text(volume, axes, cropped, floor)))
    if provenance is not None:
        paths.append(write_json_atomically(named["provenance"], {
            "provenance": provenance, **notes_of(volume, floor, yell_grid=yell_grid_line(axes),
                                                 cropped_last_plane=cropped)}))
    return paths
