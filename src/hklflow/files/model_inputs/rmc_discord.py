"""The file rmc-discord reads (output.model_inputs: rmc_discord): ``STEM_rmc_discord.nxs``.

Source: rmc-discord 0.0.4 (PyPI's newest, 2022-08-05), ``disorder/diffuse/experimental.py``,
functions ``data`` and ``mask`` (run on our file by tests/files/test_model_inputs.py). By its
code, not run here, the layout also fits the h5py reader of its GitHub ``master``
(zjmorgan/rmc-discord 095ff69, 2023-09-20), which reads ``MDHistoWorkspace/data`` too.
The file is Mantid's SaveMD layout of an MDHistoWorkspace:

* ``/MDHistoWorkspace/data/signal`` and ``errors_squared``: float64 arrays of shape
  (nl, nk, nh), i.e. [l, k, h] as stored here. The reader transposes them (``.T``) to
  [h, k, l]. They must be float64 because its Cython filters take ``double[:, :, ::1]``
  and it keeps the type it reads. signal = I; errors_squared = sigma^2 of I (floored:
  hklflow.files.model_inputs).
* Size: the reader loads them through nexusformat and h5py, which read HDF5's deflate
  (gzip) filter wherever they run, so both are compressed with it, after HDF5's byte
  shuffle. Their values are rounded to float32, the precision of the volume's sums they
  come from: the mantissa bits float64 adds are then 0 and cost almost nothing compressed.
* The axes ``[H,0,0]``, ``[0,K,0]`` and ``[0,0,L]`` (0.0.4 accepts these or ``Q1..Q3``) are
  **bin edges** in r.l.u. (n + 1 values, centre -/+ step / 2). The reader takes
  n = len(axis) - 1 and the range [min + step / 2, max - step / 2], rounded to 4 decimals:
  the first and last voxel centres.
* Unmeasured voxels: NaN in both. Its ``mask`` leaves out NaN, inf and values <= 0 of either
  array, so it also leaves out the measured voxels with I = 0; nothing we write can keep
  them. It weights by 1 / errors_squared (``disorder/graphical/model.py``,
  ``get_refinement_data``).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ...model.grid import Axis
from . import (SigmaFloor, file_paths, new_h5_file, notes_of, require_variance, sigma_floor, slabs,
               voxel_arrays, write_provenance)

if TYPE_CHECKING:  # (files.volume loads h5py: not at the Snakefile's parse)
    from ..volume import Volume

FILES = {"volume": "{stem}_rmc_discord.nxs"}
# the arrays' filters (module docstring); deflate levels compared: bench/README.md, "Disk
# use foreseen"
COMPRESSION = dict(compression="gzip", compression_opts=4, shuffle=True)
# what its file takes per measured voxel (hklflow.planning.disk): two float64 arrays,
# compressed (bench/README.md, "Disk use foreseen")
BYTES_PER_MEASURED_VOXEL = 2 * 8 * 0.3
RMC_AXES = ("[H,0,0]", "[0,K,0]", "[0,0,L]")  # h, k, l: Mantid's HKL dimension names


def rmc_discord_edges(axis: Axis) -> np.ndarray:
    """The bin edges of an axis (n + 1 values), as a Mantid MDHistoWorkspace stores them."""
    return axis.start + axis.step * (np.arange(axis.n + 1) - 0.5)


def write(volume: Volume, out_dir, stem: str, *, provenance: dict | None = None,
          floor: SigmaFloor | None = None) -> list[Path]:
    """STEM_rmc_discord.nxs in out_dir (module docstring), written atomically."""
    require_variance(volume)
    floor = sigma_floor(volume) if floor is None else floor
    grid = volume.grid
    path = file_paths(FILES, out_dir, stem)["volume"]
    with new_h5_file(path) as f:
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
        chunks = tuple(min(n, c) for n, c in zip(grid.shape, (8, 64, 64)))
        sig = d.create_dataset("signal", grid.shape, np.float64, chunks=chunks,
                               fillvalue=np.nan, **COMPRESSION)
        sig.attrs["signal"] = np.int32(1)  # Mantid's SaveMD also marks it the old way
        sig.attrs["axes"] = ":".join(RMC_AXES[::-1])
        err = d.create_dataset("errors_squared", grid.shape, np.float64, chunks=chunks,
                               fillvalue=np.nan, **COMPRESSION)
        err.attrs["description"] = "sigma^2 of signal; NaN where nothing was measured"
        nl, nk, nh = grid.shape
        for l0, l1 in slabs(nl, nk * nh):
            i, s, _ = voxel_arrays(volume, floor, (slice(l0, l1), slice(None), slice(None)))
            sig[l0:l1] = i.astype(np.float32)
            err[l0:l1] = (s * s).astype(np.float32)
        note = ent.create_group("notes")
        note.attrs["NX_class"] = "NXnote"
        note["type"] = "application/json"
        note["data"] = json.dumps(notes_of(volume, floor, layout=(
            "Mantid MDHistoWorkspace as rmc-discord 0.0.4 reads it (disorder.diffuse."
            "experimental.data): signal = intensity, errors_squared = sigma^2, [l, k, h], "
            "axes = bin edges (r.l.u.), NaN where nothing was measured; float64 holding "
            "float32 values, gzip")), indent=1)
        if provenance is not None:
            write_provenance(ent, provenance)
    return [path]
