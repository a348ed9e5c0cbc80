"""The provisional orientation the previews of a temperature in progress are made with.

Every preview run refines the temperature's orientation again from the peaks landed so
far, and it moves a little each time.  Masks and transforms made with it would all be made
again at every run, so the previews are made with a copy of it
(planning.live_files.provisional_orientation: the workflow's rule provisional_orientation makes
it at the temperature's first preview) and the watcher replaces that copy only when the newest
refined orientation has moved some pixel's (H, K, L) by more than ``live.reorient_voxels``
of a voxel of the sample's grid: then the temperature's previews are made again with it.
Once the temperature is complete its final results use its refined orientation, as batch.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..base.atomic import copy_atomically
from ..base.errors import HklflowError
from ..files import outputs
from ..planning.live_files import provisional_orientation

# where the move is measured on the detector: its corners, edge centres and centre, as
# fractions of its rows and columns (the farthest pixels move most under a rotation)
_DETECTOR_POINTS = (0.0, 0.5, 1.0)


def orientation_move(expdir: Path, scan_ids, old: Path, new: Path) -> float:
    """The largest move, in voxels of the sample's grid along h, k or l, of the (H, K, L) of
    a detector corner, edge centre or the centre at the first, middle and last frame of every
    scan (SAMPLE/TLABEL/ENTRY, of one temperature), from orientation file `old` to `new`; inf
    where a file cannot be read (the new orientation is then handed over)."""
    from ..files.grid import read_grid_file
    from ..files.orientation import read_orientation_file
    from ..files.scan import read_scan_file

    places = [dict(zip(("sample", "temperature", "entry"), sid.split("/"))) for sid in scan_ids]
    if not places:
        return math.inf
    try:
        grid = read_grid_file(expdir / outputs.fill(outputs.GRID, sample=places[0]["sample"]))
        before, after = read_orientation_file(old), read_orientation_file(new)
        scans = [read_scan_file(expdir / outputs.fill(outputs.SCAN, **at)) for at in places]
        steps = np.array([ax.step for ax in grid.axes])
        move = 0.0
        for rec in scans:
            rows, cols = rec.detector_shape
            r, c, z = np.meshgrid(np.multiply(_DETECTOR_POINTS, rows),
                                  np.multiply(_DETECTOR_POINTS, cols),
                                  np.multiply(_DETECTOR_POINTS, rec.nframes), indexing="ij")
            shift = rec.geometry(after).hkl_at(r, c, z) - rec.geometry(before).hkl_at(r, c, z)
            move = max(move, float(np.max(np.abs(shift) / steps)))
        return move
    except (OSError, KeyError, ValueError, HklflowError):
        return math.inf


def refined_orientation(expdir: Path, sample: str, label: str) -> Path:
    """The temperature's orientation as its latest run refined it."""
    return expdir / outputs.fill(outputs.ORIENTATION, sample=sample, temperature=label)


def hand_over(expdir: Path, sample: str, label: str) -> None:
    """Copy the temperature's refined orientation to its provisional one, atomically."""
    copy_atomically(refined_orientation(expdir, sample, label),
                    expdir / provisional_orientation(sample, label))


def remove_previews(expdir: Path, scan_ids, kinds, *, peaks: bool = False) -> int:
    """Remove what the previews of these scans (SAMPLE/TLABEL/ENTRY) were made with a
    provisional orientation or grid: their blocks' masks and volumes (of a scan previewed
    whole, its mask), their entries' volumes of every kind and their temperatures' merged
    volumes, so that the next run makes them again with the newer one.  Snakemake alone would
    not (snakemake issue 4166): the provisional files and the growing scan file reach the
    blocks through ancient inputs, and a job downstream of one that runs anyway (the
    refinement, define_grid, the scan's ingest) is taken to run because of it, then not
    checked itself; missing files it finds from the jobs that need them, down from the
    merged volumes.  The blocks' peaks stay unless `peaks` (a setting changed).  How many
    files were removed."""
    doomed = []
    for sid in scan_ids:
        at = dict(zip(("sample", "temperature", "entry"), sid.split("/")))
        blocks = expdir / outputs.fill(outputs.ENTRY_BLOCKS, **at)
        if blocks.is_dir():
            doomed += [f for f in sorted(blocks.glob("*/*.nxs"))
                       if peaks or f.name != "peaks.nxs"]
        else:
            doomed.append(expdir / outputs.fill(outputs.MASK, **at))
        for kind in kinds:
            doomed += [expdir / outputs.fill(outputs.ENTRY_VOLUME, kind=kind, **at),
                       expdir / outputs.fill(outputs.MERGED_VOLUME, kind=kind, **at)]
    removed = 0
    for path in dict.fromkeys(doomed):
        try:
            path.unlink()
            removed += 1
        except FileNotFoundError:
            pass
    return removed


def refined_version(expdir: Path, sample: str, label: str) -> str | None:
    """What tells one refined orientation of the temperature from the next (its size and
    modification time); None while there is none."""
    try:
        st = refined_orientation(expdir, sample, label).stat()
    except OSError:
        return None
    return f"{st.st_size}:{st.st_mtime_ns}"
