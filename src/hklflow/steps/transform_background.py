"""Step transform_background: the background a sample scan entry names (the scans table's
background column: an empty holder, air, the holder at another temperature) transformed
like the entry itself, on the sample's grid with the entry's orientation, mask and
corrections (the sample's own absorption too: the background's counts are divided by what
the entry's are, so that subtracting them removes what the entry holds of it), every kind of
volume from one read of its frames; then put in the entry's units, which sum_chunks
subtracts from the entry's volumes.

Units: each frame of a scan is scaled by reference / monitor (reduction.transform,
hklflow.algorithms.transform.frame_scale).  With monitors on both rows, the background is
multiplied by the entry's reference over its own (a monitor counts the photons of a frame's
whole exposure, so it holds the exposure too); without monitors on either, by the entry's
frame time over the background's (the raw files': raw.exposure).  One with a monitor and
one without cannot be put on one scale, and are refused.

The background's own angles, frames, detector shift and monitor are its row's; its
goniometer offsets are the entry's refined ones (the same mount).
"""
from __future__ import annotations

import dataclasses
import time

from ..algorithms.masks.masking import ScanMask
from ..algorithms.transform import transform_scan
from ..base.errors import ConfigError
from ..files.grid import read_grid_file
from ..files.mask import read_mask_file
from ..files.orientation import read_orientation_file
from ..files.provenance import provenance
from ..files.scan import read_scan_file
from ..raw.exposure import frame_time
from ..raw.frames import open_frame_source
from ..raw.monitors import monitor_norm
from ..settings.params import TransformParams
from ._run import StepParser, run_step
from .transform_frames import check_grid_room, transform_settings, write_transformed


def parser() -> StepParser:
    p = StepParser("transform_background", __doc__)
    p.add_settings()
    p.add_threads()
    p.add_input("--scan", "the sample entry's scan.nxs")
    p.add_input("--background", "the background row's scan.nxs")
    p.add_input("--orientation", "orientation.nxs of the sample at the entry's temperature")
    p.add_input("--grid", "grid.json of the sample")
    p.add_input("--mask", "mask.nxs of the sample entry")
    p.add_output("--out", "background volume to write per kind, in the order of "
                          "reduction.transform.kinds", nargs="+")
    return p


def background_scale(entry, background, params: TransformParams) -> tuple[float, dict]:
    """The factor that puts the background's volume in the entry's units, and how."""
    if (entry.monitor is None) != (background.monitor is None):
        has, lacks = (entry, background) if entry.monitor is not None else (background, entry)
        raise ConfigError(f"{has.scan_id} has a monitor and its background's counterpart "
                          f"{lacks.scan_id} has none: the two cannot be put on one scale "
                          "(give both rows a monitor, or neither)")
    if entry.monitor is not None:
        ref_e = monitor_norm(entry.monitor, params.monitor_reference)[1]
        ref_b = monitor_norm(background.monitor, params.monitor_reference)[1]
        return ref_e / ref_b, {"by": "monitor", "entry_monitor_reference": ref_e,
                               "background_monitor_reference": ref_b}
    (t_e, from_e), (t_b, from_b) = frame_time(entry), frame_time(background)
    return t_e / t_b, {"by": "frame time", "entry_frame_time": t_e, "entry_frame_time_from": from_e,
                       "background_frame_time": t_b, "background_frame_time_from": from_b}


def run(args, log) -> None:
    t0 = time.monotonic()
    params, shape, detector, kinds = transform_settings(args)
    entry = read_scan_file(args.scan)
    bg = read_scan_file(args.background)
    ori = read_orientation_file(args.orientation)
    grid = read_grid_file(args.grid)
    entry.geometry(ori)  # (the orientation is the entry's sample and temperature)
    # the background's own angles and shift, the entry's refined offsets and UB
    scan = dataclasses.replace(bg.setup, name=entry.setup.name).geometry(ori)
    factor, how = background_scale(entry, bg, params)
    log.info("background of %s: %s (%d frames), scaled by %.6g (%s)", entry.scan_id, bg.scan_id,
             bg.nframes, factor, how["by"])
    check_grid_room(grid, params, log)
    with open_frame_source(bg.frames, read_threads=args.threads,
                           compiled_decompression=True) as stack:
        tr, notes = transform_scan(stack, scan, grid, ScanMask.of(read_mask_file(args.mask)),
                                   kinds, 0, bg.nframes, params,
                                   detector.trusted_max_for(stack.dtype), ori.crystal(),
                                   bg.monitor, log, threads=args.threads, shape=shape,
                                   units=factor)
    prov = provenance("hklflow transform_background", args.settings,
                      inputs=[args.scan, args.background, args.orientation, args.grid,
                              args.mask])
    write_transformed(tr, notes, args.out, grid, params, entry, ori, scan, prov,
                      time.monotonic() - t0, whole=True,
                      title=f"background {bg.scan_id} of {entry.scan_id}",
                      threads=args.threads, log=log,
                      extra_notes={"background_of": entry.scan_id, "background": bg.scan_id,
                                   "background_scale": factor, "background_scale_how": how})


def main(argv=None) -> int:
    return run_step(parser(), run, argv)
