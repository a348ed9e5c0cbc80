"""Transform frames [first, stop) of a scan entry to the sample's (H, K, L) grid (rule
transform_chunk): corrected intensity and weight of every unmasked pixel summed per voxel.

The refined geometry (orientation file: cell, U, detector, offset corrections) maps pixels
to (h, k, l); the pixel mask (mask file) leaves out gaps, hot, dead and user-masked pixels;
the masked transform also leaves out the Bragg regions of the mask file and, if
reduction.mask.hkl_radius > 0, every pixel within that radius of an allowed node.
Frames are read in chunks by a second thread while the compiled kernel adds the previous
chunk, so reading and decompression overlap with the arithmetic.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from .. import steplog


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hklflow transform", description=__doc__.splitlines()[0])
    p.add_argument("--config", action="append", required=True, help="experiment config file(s)")
    p.add_argument("--scan-file", required=True, type=Path, help="the entry's scan.nxs")
    p.add_argument("--orientation", required=True, type=Path, help="orientation.nxs of the sample at this temperature")
    p.add_argument("--grid", required=True, type=Path, help="grid.json of the sample")
    p.add_argument("--mask", required=True, type=Path, help="mask.nxs of the entry")
    p.add_argument("--kind", required=True, choices=["transform", "masked_transform"])
    p.add_argument("--frames", default=None, help="frame range FIRST:STOP or FIRST-STOP, stop excluded (default all)")
    p.add_argument("--out", required=True, type=Path, help="volume file to write")
    return p


def frame_scale(monitor, reference, first: int, stop: int) -> tuple[np.ndarray, float | None]:
    """Per-frame multipliers monitor_reference / monitor (1 without a monitor)."""
    if monitor is None:
        return np.ones(stop - first), None
    monitor = np.asarray(monitor, dtype=np.float64)
    ref = float(reference) if reference else float(np.median(monitor))
    part = monitor[first:stop]
    bad = ~(part > 0) | ~np.isfinite(part)
    if bad.any():
        raise ValueError(f"monitor is <= 0 or not finite at frames {(np.flatnonzero(bad) + first)[:10].tolist()}")
    return ref / part, ref


def parse_frames(text: str | None, nframes: int) -> tuple[int, int]:
    if text is None:
        return 0, nframes
    try:
        a, b = (int(v) for v in text.replace("-", ":").split(":"))
    except ValueError:
        raise ValueError(f"--frames must be FIRST:STOP (or FIRST-STOP), got {text!r}") from None
    if not 0 <= a < b <= nframes:
        raise ValueError(f"--frames {text} is outside the scan's {nframes} frames")
    return a, b


def run(args, log) -> dict:
    from .. import provenance
    from ..config import load_experiment
    from ..frames import open_scan_frames
    from ..grid import load_grid
    from ..masking import read_mask_file
    from ..nexus import read_orientation_file, read_scan_file
    from ..orientation import refined_scan_geometry
    from ..transform import Transformer, auto_subdivide, pixel_table, transform_frames
    from ..volume import VolumeWriter, slab_planes
    from .find_peaks import PeakSearchParams, _trusted_max

    t0 = time.monotonic()
    exp = load_experiment(args.config)
    cfg = exp.reduction["transform"]
    rec = read_scan_file(args.scan_file)
    ori = read_orientation_file(args.orientation)
    scan, UB = refined_scan_geometry(rec, ori)
    grid = load_grid(args.grid)
    mask = read_mask_file(args.mask)
    first, stop = parse_frames(args.frames, rec.nframes)
    if mask.pixels.shape != scan.detector.shape:
        raise ValueError(f"{args.mask}: pixel mask {mask.pixels.shape} does not match the "
                         f"detector {scan.detector.shape}")
    table = pixel_table(scan.detector, mask.pixels, solid_angle=cfg["solid_angle"],
                        polarization=cfg["polarization"],
                        polarization_fraction=exp.instrument.polarization_fraction)
    crystal = ori.crystal()
    sub_cfg = cfg["subdivide"]
    nsub_auto, move = auto_subdivide(scan, table, grid, crystal.cell.parameters[:3])
    nsub = nsub_auto if sub_cfg == "auto" else int(sub_cfg)
    log.info("%s frames %d-%d (%s): %d usable pixels of %d; %s", rec.scan_id, first, stop,
             args.kind, len(table), int(np.prod(scan.detector.shape)), grid.describe())
    log.info("rotation sub-steps per frame: %d (%s; a pixel moves up to %.2f voxels per frame)",
             nsub, "auto" if sub_cfg == "auto" else "config", move)
    scale, monitor_ref = frame_scale(rec.monitor, cfg["monitor_reference"], first, stop)
    masked = args.kind == "masked_transform"
    hkl_radius = mask.hkl_radius if masked else 0.0
    with open_scan_frames(args.scan_file) as stack:
        fp = PeakSearchParams.from_config(exp.reduction["find_peaks"])
        trusted = _trusted_max(fp, stack.dtype)
        tr = Transformer(grid, table, trusted, crystal=crystal, hkl_radius=hkl_radius)
        log.info("grid in memory: %.2f GB (signal + weight, float32)", tr.acc.nbytes / 1e9)
        progress = steplog.Progress(log, "frames transformed", stop - first)
        t_kernel = transform_frames(stack, scan, UB, tr, first, stop, nsub, scale,
                                    int(cfg["chunk_frames"]), mask if masked else None,
                                    progress.update)
    seconds = time.monotonic() - t0
    pixel_frames = (stop - first) * len(table)
    added = tr.pixel_frames  # a sum over the grid: once
    notes = {"scan": rec.scan_id, "kind": args.kind, "frames": [first, stop], "subdivide": nsub,
             "usable_pixels": len(table), "pixel_frames_added": added,
             "pixel_frames_usable": int(pixel_frames), "solid_angle": cfg["solid_angle"],
             "polarization": cfg["polarization"],
             "polarization_fraction": exp.instrument.polarization_fraction,
             "monitor_reference": monitor_ref, "hkl_radius": hkl_radius,
             "seconds": seconds, "kernel_seconds": t_kernel}
    sample = {"name": rec.sample, "temperature_label": ori.temperature,
              "space_group": crystal.hm, "unit_cell": np.asarray(crystal.cell.parameters),
              "ub_matrix": np.asarray(UB)}
    prov = provenance.provenance(f"hklflow transform ({args.kind})",
                                 parameters={**cfg, "mask": exp.reduction["mask"]},
                                 inputs=[args.scan_file, args.orientation, args.grid, args.mask, *args.config])
    measured = 0
    # written slab by slab from the bricked grid: no second full-size copy in memory
    with VolumeWriter(args.out, grid, args.kind, f"{rec.scan_id} frames {first}-{stop}",
                      sample, notes, prov) as w:
        step = slab_planes(grid, multiple=tr.acc.brick)
        for l0 in range(0, grid.l.n, step):
            sig, wt = tr.acc.slab(l0, min(l0 + step, grid.l.n))
            measured += int(np.count_nonzero(wt))
            w.write(l0, sig, wt)
        w.notes["measured_voxels"] = measured
    log.info("%d pixel-frames on the grid of %d usable (x %d sub-steps) in %.1f s (kernel %.1f s: "
             "%.1f Mpixel/s); measured voxels %d", added, pixel_frames, nsub, seconds,
             t_kernel, pixel_frames * nsub / max(t_kernel, 1e-9) / 1e6, measured)
    return notes


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    log = steplog.setup("transform")
    from ..config import ConfigError
    from ..frames import RawDataError

    try:
        run(args, log)
    except (ConfigError, RawDataError, ValueError, OSError, KeyError) as exc:
        return steplog.fail(log, exc, (args.out,))
    log.info("wrote %s", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
