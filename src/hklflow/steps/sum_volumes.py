"""Sum reciprocal-space volumes (rules sum_chunks and merge_entries): frame chunks of a scan
entry into the entry's volume, or the entries of a sample at one temperature into the merged
volume.

Signal and weight of every input are added voxel by voxel (the intensity is their ratio, so
the gaps of one entry are filled by the others and overlaps are weighted means).  Inputs
must share the grid exactly and be of one kind.  Memory is bounded: the inputs are read
slab by slab along L (about 64 MB per float32 array of a slab), added in float64 and stored
float32, and the output is written slab by slab, so an 801^3 grid (2 x 2 GB per input) is
summed in a few hundred MB.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from .. import steplog


class InputError(ValueError):
    """An input volume is unreadable or does not fit with the others."""


def check_inputs(paths) -> tuple:
    """Grid, kind and header (read_volume_header) of every input; InputError naming the
    file that is missing, unreadable, on another grid or of another kind."""
    from ..volume import read_volume_header

    if not paths:
        raise InputError("no input volumes")
    headers = []
    for p in paths:
        try:
            headers.append(read_volume_header(p))
        except (OSError, KeyError, ValueError) as exc:
            raise InputError(f"{p}: cannot read this volume: {exc}") from None
    first = headers[0]
    for p, h in zip(paths[1:], headers[1:]):
        if not h.grid.same_as(first.grid):
            raise InputError(f"{p}: its grid differs from that of {paths[0]} (volumes add only "
                             f"on the same grid): {h.grid.describe()} here, "
                             f"{first.grid.describe()} there")
        if h.kind != first.kind:
            raise InputError(f"{p}: a {h.kind} volume cannot be added to the {first.kind} "
                             f"volume {paths[0]}")
        name, name0 = h.sample.get("name"), first.sample.get("name")
        if name and name0 and name != name0:
            raise InputError(f"{p}: a volume of sample {name!r}, but {paths[0]} is of "
                             f"sample {name0!r}")
    return first.grid, first.kind, headers


def sum_volumes(paths, out, title: str, provenance: dict, planes: int | None = None,
                log=None) -> dict:
    """Write the sum of the volume files `paths` to `out` (atomically); returns its notes."""
    from ..volume import VolumeWriter, read_volume, slab_planes

    paths = [str(p) for p in paths]
    grid, kind, headers = check_inputs(paths)
    planes = planes or slab_planes(grid)
    nl = grid.l.n
    measured = np.zeros(len(paths), dtype=np.int64)
    total_w = np.zeros(len(paths))
    total_s = np.zeros(len(paths))
    measured_out = 0
    progress = steplog.Progress(log, f"summing {len(paths)} volumes, L planes", nl) if log else None
    notes = {
        "operation": "sum of signal_sum and weight_sum, voxel by voxel (intensity = summed "
                     "signal / summed weight)",
        "inputs": [{"path": p, "title": h.title, "notes": h.notes} for p, h in zip(paths, headers)],
    }
    sample = dict(headers[0].sample)
    with VolumeWriter(out, grid, kind, title, sample, notes, provenance) as w:
        for l0 in range(0, nl, planes):
            l1 = min(nl, l0 + planes)
            region = (slice(l0, l1), slice(None), slice(None))
            acc_s = np.zeros((l1 - l0,) + grid.shape[1:], dtype=np.float64)
            acc_w = np.zeros_like(acc_s)
            for i, p in enumerate(paths):
                try:
                    part = read_volume(p, region=region)
                except (OSError, KeyError, ValueError) as exc:
                    raise InputError(f"{p}: cannot read L planes {l0}..{l1 - 1}: {exc}") from None
                acc_s += part.signal
                acc_w += part.weight
                measured[i] += np.count_nonzero(part.weight > 0)
                total_w[i] += float(np.sum(part.weight, dtype=np.float64))
                total_s[i] += float(np.sum(part.signal, dtype=np.float64))
                del part
            measured_out += np.count_nonzero(acc_w > 0)
            w.write(l0, acc_s, acc_w)
            del acc_s, acc_w
            if progress:
                progress.update(l1)
        for i, item in enumerate(notes["inputs"]):
            item.update(measured_fraction=measured[i] / grid.size, weight_sum=total_w[i],
                        signal_sum=total_s[i])
        notes["measured_fraction"] = measured_out / grid.size
        notes["weight_sum"] = float(total_w.sum())
        notes["signal_sum"] = float(total_s.sum())
        w.notes = notes
    return notes


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hklflow sum_volumes", description=__doc__.splitlines()[0])
    p.add_argument("--config", action="append", required=True, help="experiment config file(s)")
    p.add_argument("--title", required=True, help="title of the sum, e.g. SAMPLE/300K/f1")
    p.add_argument("--inputs", nargs="+", required=True, type=Path, help="volumes to add")
    p.add_argument("--out", required=True, type=Path, help="volume file to write")
    p.add_argument("--png", required=True, type=Path, help="slice picture to write")
    p.add_argument("--planes", type=int, default=None,
                   help="L planes read at a time (default: about 64 MB per array)")
    return p


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    log = steplog.setup("sum_volumes")
    from .. import provenance
    from ..config import ConfigError, load_experiment
    from ..slices import plot_slices

    try:
        exp = load_experiment(args.config)
        slices = exp.reduction["transform"]["slices"]
        t0 = time.monotonic()
        prov = provenance.provenance("hklflow sum_volumes", parameters={"title": args.title},
                                     inputs=[*args.inputs, *args.config])
        notes = sum_volumes(args.inputs, args.out, args.title, prov, args.planes, log)
        for item in notes["inputs"]:
            log.info("%s: %.1f%% of the grid measured", item["path"], 100 * item["measured_fraction"])
        log.info("%s: %d volumes summed in %.1f s, %.1f%% of the grid measured", args.title,
                 len(args.inputs), time.monotonic() - t0, 100 * notes["measured_fraction"])
        plot_slices(args.out, slices, args.png, f"{args.title} ({len(args.inputs)} volumes summed)",
                    log=log)
    except (ConfigError, ValueError, OSError) as exc:
        return steplog.fail(log, exc, (args.out, args.png))
    return 0


if __name__ == "__main__":
    sys.exit(main())
