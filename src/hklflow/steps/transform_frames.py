"""Step transform_frames: frames [first, stop) of a scan entry mapped to the sample's
(H, K, L) grid, corrected intensity and weight of every unmasked pixel summed per voxel
(hklflow.algorithms.transform.transform_scan), for every kind of volume in reduction.transform.kinds
from one read of the frames.

The refined geometry (orientation file: cell, U, detector, offset corrections) maps pixels
to (h, k, l); the pixel mask leaves out gaps, hot, dead and user-masked pixels; the masked
transform also leaves out the Bragg regions of the mask file and, if
reduction.mask.hkl_radius > 0, every pixel within that radius of an allowed node.  The
volume is written slab by slab from the bricked grid (no second full-size copy).
"""
from __future__ import annotations

import contextlib
import time

import numpy as np

from ..algorithms.masks.masking import ScanMask
from ..algorithms.transform import transform_scan
from ..algorithms.transform.driver import HALF_SET_HOW, half_set_grid
from ..base.errors import ConfigError
from ..base.memory import check_room, transform_grid_bytes
from ..files.grid import read_grid_file
from ..files.mask import read_mask_file
from ..files.orientation import read_orientation_file
from ..files.provenance import provenance
from ..files.scan import read_scan_file
from ..files.volume import VolumeWriter
from ..files.volume_bricks import write_volumes
from ..pictures.preview import preview_notes
from ..raw.frames import open_frame_source
from ..settings.params import DetectorParams, SampleShapeParams, TransformParams, settings_part
from ._run import StepParser, parse_frames, run_step  # noqa: F401 (parse_frames: tests)


def parser() -> StepParser:
    p = StepParser("transform_frames", __doc__)
    p.add_settings()
    p.add_threads()
    p.add_input("--scan", "the entry's scan.nxs")
    p.add_input("--orientation", "orientation.nxs of the sample at this temperature")
    p.add_input("--grid", "grid.json of the sample")
    p.add_input("--mask", "mask.nxs of the entry")
    p.add_argument("--frames", default=None, help="frame range FIRST-STOP, stop excluded "
                                                  "(default all)")
    p.add_output("--out", "volume file to write per kind, in the order of "
                          "reduction.transform.kinds", nargs="+")
    return p


def transform_settings(args) -> tuple:
    """(TransformParams, the sample's shape or None, DetectorParams, kinds) of a transform
    job's settings, its --out checked against the kinds (transform_background's too)."""
    params = settings_part(args.settings, TransformParams)
    shape = (settings_part(args.settings, SampleShapeParams).sample_shape()
             if SampleShapeParams.NAME in args.settings else None)
    kinds = tuple(params.kinds)
    if len(args.out) != len(kinds):
        raise ConfigError(f"--out: {len(args.out)} file(s) given for the {len(kinds)} kinds "
                          f"of volume of the settings ({', '.join(kinds)})")
    return params, shape, settings_part(args.settings, DetectorParams), kinds


def check_grid_room(grid, params: TransformParams, log) -> None:
    """Memory for the grid of every kind (base.memory.check_room)."""
    kinds = len(params.kinds)
    check_room(transform_grid_bytes(grid.shape, kinds, params.variance, params.half_sets),
               f"the grid of {grid.size:,} voxels ({kinds} kind(s))",
               "coarser reduction.transform.grid steps (or reduction.transform.variance: false)",
               log)


def run(args, log) -> None:
    t0 = time.monotonic()
    params, shape, detector, kinds = transform_settings(args)
    rec = read_scan_file(args.scan)
    ori = read_orientation_file(args.orientation)
    scan = rec.geometry(ori)
    grid = read_grid_file(args.grid)
    first, stop = parse_frames(args.frames, rec.nframes)
    crystal = ori.crystal()
    log.info("%s: %s", rec.scan_id, params)
    check_grid_room(grid, params, log)
    with open_frame_source(rec.frames, read_threads=args.threads,
                           compiled_decompression=True) as stack:
        tr, notes = transform_scan(stack, scan, grid, ScanMask.of(read_mask_file(args.mask)), kinds, first,
                                   stop, params, detector.trusted_max_for(stack.dtype), crystal,
                                   rec.monitor, log, threads=args.threads, shape=shape)
    prov = provenance("hklflow transform_frames", args.settings,
                      inputs=[args.scan, args.orientation, args.grid, args.mask])
    write_transformed(tr, notes, args.out, grid, params, rec, ori, scan, prov,
                      time.monotonic() - t0,
                      # (a scan in progress: a block, whatever frames it has, is a part)
                      whole=(first, stop) == (0, rec.nframes) and not rec.planned_frames,
                      title=f"{rec.scan_id} frames {first}-{stop}", threads=args.threads,
                      log=log)


def write_transformed(tr, notes: dict, outs, grid, params: TransformParams, rec, ori, scan,
                      prov: dict, seconds: float, whole: bool, title: str, threads: int,
                      log, extra_notes: dict | None = None) -> None:
    """The transformer's volumes, one file per kind (outs in the order of params.kinds), with
    their half sets and the sums counted as they were written.  whole: the entry's frames
    all there (the volume as it is: with its intensity)."""
    crystal = ori.crystal()
    # the scan file's temperature (K) reaches every sum and symmetrisation through this
    # sample group: NXRefine and NeXpy read /entry/sample/temperature
    sample = {"name": rec.sample, "temperature_label": ori.temperature_label,
              "temperature": rec.temperature, "space_group": crystal.hm,
              "unit_cell": np.asarray(crystal.cell.parameters), "ub_matrix": np.asarray(scan.UB)}
    kinds = tuple(params.kinds)  # (the order of outs; the transformer holds its own)
    with contextlib.ExitStack() as files:
        writers = [files.enter_context(
            VolumeWriter(out, grid, kind, title, sample,
                         {"scan": rec.scan_id, **notes[kind], "seconds": seconds,
                          **preview_notes(rec, ori), **(extra_notes or {})}, prov,
                         intensity=whole, variance=tr.acc.variance))
            for kind, out in zip(kinds, outs)]
        write_volumes(tr, writers, threads)
        if params.half_sets:
            for kind, w in zip(kinds, writers):
                w.write_half_set(half_set_grid(grid), *tr.half_set(kind), HALF_SET_HOW)
        for w in writers:
            # weights are 1 / sub-steps per pixel-frame: their sum counts the pixel-frames
            w.notes.update(measured_voxels=w.measured, measured_fraction=w.measured / grid.size,
                           weight_sum=w.weight_sum, signal_sum=w.signal_sum,
                           pixel_frames_added=int(round(w.weight_sum)))
    for kind, out, w in zip(kinds, outs, writers):
        log.info("wrote %s (%s): %d pixel-frames of %d usable on the grid, %d measured voxels",
                 out, kind, int(round(w.weight_sum)), notes[kind]["pixel_frames_usable"],
                 w.measured)


def main(argv=None) -> int:
    return run_step(parser(), run, argv)
