"""`hklflow simulate OUTDIR`: write a complete simulated experiment directory."""
from __future__ import annotations

import argparse
import math
from dataclasses import replace
from pathlib import Path

from ..base import steplog
from .acquisition import DEFAULT_PAUSE_S, AcquisitionError, acquire_experiment
from .experiment import FRAME_FORMATS, PRESETS, preset, simulate_experiment


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="hklflow simulate",
        description="Write a simulated experiment: config/config.yaml, config/scans.tsv, raw/ "
                    "(calibrant image and rotation scans) and truth.json (every true parameter).")
    p.add_argument("outdir", type=Path, help="experiment directory to write")
    p.add_argument("--preset", default="demo", choices=list(PRESETS),
                   help="which simulation (default: demo, the README's demo experiment)")
    p.add_argument("--format", dest="frame_format", default="hdf5", choices=list(FRAME_FORMATS),
                   help="raw frames as compressed HDF5 stacks (default), Dectris Eiger-style "
                        "master and data files, or Pilatus miniCBF files")
    p.add_argument("--frames-per-file", type=int, default=None, metavar="K",
                   help="eiger format: frames per data file (default: 100; the last file of a "
                        "scan holds the rest)")
    p.add_argument("--detector-orientation", type=int, choices=[1, 2, 3, 4], default=None,
                   help="lay the frames out with this pyFAI detector orientation (default: the "
                        "preset's, 3); written to instrument.detector.orientation")
    p.add_argument("--seed", type=int, default=None, metavar="N",
                   help="draw the scans' noise (Poisson counts) from random streams of N (>= 0): "
                        "the same experiment (config, scans table, truth.json, calibrant image) "
                        "with other noise in its frames (default: the preset's own noise)")
    p.add_argument("--gain", type=float, default=1.0, metavar="G",
                   help="detector gain in counts per photon: the scans' frames hold "
                        "round(G x Poisson(photons)), so their variance is G x their mean "
                        "(default: 1, a photon-counting detector); recorded in truth.json, not "
                        "in the config")
    p.add_argument("--force", action="store_true",
                   help="overwrite an existing experiment in OUTDIR (raw data are replaced)")
    acq = p.add_argument_group(
        "real-time acquisition",
        "--acquire writes the experiment as a beamline does: config, calibrant image and "
        "truth.json first and every frame rendered ahead (into OUTDIR/.acquisition_cache, "
        "removed at the end); then config/scans.tsv starts with its header only and, scan "
        "after scan (temperatures in each sample's order, parent first), a scan's row is "
        "appended when it starts, its files appear and its frames are written at --fps. "
        "hdf5 files are written with HDF5 SWMR (open them with swmr=True); eiger data files "
        "are complete once closed; CBF files are written in place.")
    acq.add_argument("--acquire", action="store_true", help="write the experiment in real time")
    acq.add_argument("--fps", type=float, default=None, metavar="F",
                     help="frames per second (required with --acquire)")
    acq.add_argument("--pause", type=float, default=None, metavar="S",
                     help="seconds between temperatures (default: 5)")
    acq.add_argument("--abort-after", action="append", default=[], metavar="[SCAN:]N",
                     help="stop a scan after N frames (the rest are never written): N alone "
                          "applies to the last scan of the experiment, SAMPLE/TK/ENTRY:N (e.g. "
                          "lsco/200K/f2:100) to that scan; may be repeated")
    return p


def main(argv=None) -> int:
    p = parser()
    args = p.parse_args(argv)
    acquire_only = {"--fps": args.fps, "--pause": args.pause,
                    "--abort-after": args.abort_after or None}
    if not args.acquire:
        given = [name for name, value in acquire_only.items() if value is not None]
        if given:
            p.error(f"{', '.join(given)} only apply with --acquire")
    elif args.fps is None:
        p.error("--acquire needs --fps F (frames per second)")
    if args.frames_per_file is not None and args.frame_format != "eiger":
        p.error("--frames-per-file only applies to --format eiger")
    frames_per_file = 100 if args.frames_per_file is None else args.frames_per_file
    if frames_per_file < 1:
        p.error(f"--frames-per-file must be at least 1, got {frames_per_file}")
    if args.seed is not None and not 0 <= args.seed < 2 ** 64:
        p.error(f"--seed must be a whole number from 0 to 2^64 - 1, got {args.seed}")
    if not (math.isfinite(args.gain) and args.gain > 0):
        p.error(f"--gain must be a positive number (counts per photon), got {args.gain:g}")
    log = steplog.setup("simulate")
    if (args.outdir / "truth.json").exists() and not args.force:
        log.error("%s already holds a simulated experiment (truth.json); use --force to "
                  "overwrite it", args.outdir)
        return 1
    try:
        spec = preset(args.preset)
        if args.detector_orientation is not None:
            spec = replace(spec, detector_orientation=args.detector_orientation)
        spec = replace(spec, noise_seed=args.seed, gain=args.gain)
        if args.acquire:

            try:
                acquire_experiment(spec, args.outdir, args.frame_format, fps=args.fps,
                                   pause_s=DEFAULT_PAUSE_S if args.pause is None else args.pause,
                                   abort_after=args.abort_after, frames_per_file=frames_per_file,
                                   overwrite=args.force)
            except AcquisitionError as exc:
                log.error("%s", exc)
                return 1
        else:
            simulate_experiment(spec, args.outdir, args.frame_format, overwrite=args.force,
                                frames_per_file=frames_per_file)
    except (FileExistsError, OverflowError) as exc:
        log.error("%s", exc)
        return 1
    return 0
