"""Symmetrise a merged volume by the Laue group of the sample's space group (rule symmetrize).

Signal and weight of every voxel are summed over its equivalent voxels h R, R running over
the Laue group (the crystal module's operators: the point group plus inversion, hexagonal
and trigonal groups with their own 3- and 6-fold operators), then divided, so the result is
the weighted mean over the measured equivalents.  The grid must be mapped onto itself by
every operator (else an error names the config keys of the grid axes to change).  Memory:
the input volume whole (8 bytes per voxel: 4.1 GB for 801^3) plus one output slab.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from .. import steplog


def symmetrize_file(path, out, crystal, provenance: dict, planes: int | None = None,
                    log=None) -> dict:
    """Write the symmetrised volume of the volume file `path` to `out`; returns its notes."""
    from .. import symmetry
    from ..volume import VolumeWriter, read_volume, slab_planes

    try:
        vol = read_volume(path)
    except (OSError, KeyError) as exc:
        raise ValueError(f"{path}: cannot read this volume: {exc}") from None
    grid = vol.grid
    ops = crystal.laue_operators
    maps = symmetry.index_maps(grid, ops, f"{crystal.laue_group} (space group {crystal.hm})")
    sg = vol.sample.get("space_group")
    if sg and log and str(sg).replace(" ", "") != crystal.hm.replace(" ", ""):
        log.warning("%s was made with space group %s; symmetrising by the config's %s", path,
                    sg, crystal.hm)
    planes = planes or slab_planes(grid)
    notes = {"symmetrized": symmetry.symmetry_notes(crystal), "input": str(path),
             "input_title": vol.title, "input_notes": vol.notes}
    inside = measured = measured_before = 0
    progress = steplog.Progress(log, f"symmetrising by {len(ops)} operators, L planes",
                                grid.l.n) if log else None
    title = f"{vol.title} symmetrized ({crystal.laue_group})"
    sample = dict(vol.sample)
    with VolumeWriter(out, grid, vol.kind, title, sample, notes, provenance) as w:
        for l0 in range(0, grid.l.n, planes):
            l1 = min(grid.l.n, l0 + planes)
            s, wt, n_in = symmetry.symmetrize_slab(vol.signal, vol.weight, maps, l0, l1)
            inside += n_in
            measured += int(np.count_nonzero(wt > 0))
            measured_before += int(np.count_nonzero(vol.weight[l0:l1] > 0))
            w.write(l0, s, wt)
            if progress:
                progress.update(l1)
        notes["symmetrized"]["equivalents_inside_grid"] = inside / (grid.size * len(ops))
        notes["measured_fraction_before"] = measured_before / grid.size
        notes["measured_fraction"] = measured / grid.size
        w.notes = notes
    return notes


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hklflow symmetrize", description=__doc__.splitlines()[0])
    p.add_argument("--config", action="append", required=True, help="experiment config file(s)")
    p.add_argument("--sample", required=True, help="sample name (its space group is used)")
    p.add_argument("--input", required=True, type=Path, help="merged volume to symmetrise")
    p.add_argument("--out", required=True, type=Path, help="volume file to write")
    p.add_argument("--png", required=True, type=Path, help="slice picture to write")
    p.add_argument("--planes", type=int, default=None,
                   help="L planes computed and written at a time (default: about 64 MB per array)")
    return p


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    log = steplog.setup("symmetrize")
    from .. import provenance
    from ..config import ConfigError, load_experiment
    from ..slices import cell_of, plot_slices

    try:
        exp = load_experiment(args.config)
        if args.sample not in exp.samples:
            raise ConfigError(f"sample {args.sample!r} is not in the config (known: "
                              f"{sorted(exp.samples)})")
        crystal = exp.samples[args.sample].crystal
        t0 = time.monotonic()
        prov = provenance.provenance(
            "hklflow symmetrize", parameters={"sample": args.sample, "space_group": crystal.hm,
                                              "laue_group": crystal.laue_group},
            inputs=[args.input, *args.config])
        notes = symmetrize_file(args.input, args.out, crystal, prov, args.planes, log)
        sym = notes["symmetrized"]
        log.info("%s: symmetrised by %s (%d operators) in %.1f s; measured %.1f%% -> %.1f%% of "
                 "the grid; %.1f%% of the (voxel, operator) equivalents inside the grid (the "
                 "others, beyond the grid limits, contribute nothing)", args.input,
                 sym["laue_group"], sym["operators"], time.monotonic() - t0,
                 100 * notes["measured_fraction_before"], 100 * notes["measured_fraction"],
                 100 * sym["equivalents_inside_grid"])
        plot_slices(args.out, exp.reduction["transform"]["slices"], args.png,
                    f"{notes['input_title']} symmetrized by {sym['laue_group']} "
                    f"({sym['operators']} operators)", cell=cell_of(args.out) or crystal.cell,
                    log=log)
    except (ConfigError, ValueError, OSError) as exc:
        return steplog.fail(log, exc, (args.out, args.png))
    return 0


if __name__ == "__main__":
    sys.exit(main())
