"""Step merge_entries: the volume of a sample at one temperature - signal and weight of the
volumes of its entries summed voxel by voxel (hklflow.algorithms.merge.volumes.sum_volumes), so the gaps of
one entry are filled by the others - with slice pictures.  Entries that the orientation
step found without usable signal (reduction.merge.unusable_entries: leave_out) are left out,
and the log, the volume's notes and the picture say so.  Whether its uncertainties hold
(hklflow.algorithms.statistics.shells: I/sigma and chi^2/nu of symmetry-equivalent voxels in shells of |Q|)
goes into its notes, the log and a picture of its own."""
from __future__ import annotations

import math

import numpy as np

from ..algorithms.merge.volumes import entries_to_merge, sum_volumes
from ..base.errors import ConfigError, InputMismatchError
from ..files.orientation import read_orientation_file
from ..files.provenance import provenance
from ..files.volume import VolumeReader, read_half_set, update_notes
from ..pictures.figure import plot_left_out
from ..pictures.preview import preview_label
from ..pictures.slices import kept_planes
from ..pictures.volumes import plot_slices, plot_statistics
from ..settings.params import (SetAsideParams, SliceParams, StatisticsParams, WaitingParams,
                               settings_part)
from ._run import StepParser, run_step


def parser() -> StepParser:
    p = StepParser("merge_entries", __doc__)
    p.add_settings()
    p.add_argument("--title", required=True, help="title of the sum, e.g. SAMPLE/300K/f1")
    p.add_input("--inputs", "volumes to add", nargs="+")
    p.add_input("--orientation", "orientation.nxs of the temperature: its unusable entries are "
                                 "left out", required=False)
    p.add_input("--scales", "scales.json of the temperature (scale_entries): applied to every "
                            "input's signal and sigma", required=False)
    p.add_input("--scans", "the inputs' scan.nxs, in their order (with --scales)", nargs="+",
                required=False)
    p.add_input("--masks", "the inputs' mask.nxs, in their order (with --scales)", nargs="+",
                required=False)
    p.add_argument("--apply", choices=("auto", "true"), default="true",
                   help="with --scales: true applies them; auto only where they matter (the "
                        "verdict of scale_entries: reduction.scaling.apply)")
    p.add_argument("--unscaled-preview", action="store_true",
                   help="a preview of hklflow watch, whose merges leave the scales out (the "
                        "final results apply them): the notes and the title say so")
    p.add_argument("--preview", action="store_true",
                   help="a preview of hklflow watch: the statistics of equivalents are left "
                        "out (the final results have them); the notes and --statistics-png "
                        "say so")
    p.add_output("--out", "volume file to write")
    p.add_output("--png", "slice picture to write")
    p.add_output("--statistics-png", "picture of the uncertainties' statistics (needs "
                                     "--orientation: the crystal)", required=False)
    return p


UNSCALED_PREVIEW = ("left out of previews (hklflow watch): the scales are fitted and applied "
                    "for the final results")
STATISTICS_LEFT_OUT = ("left out of previews (hklflow watch): I/sigma, chi^2/nu and CC1/2 of "
                       "symmetry equivalents are computed for the final results")

KIND_MEANING = {"transform": "every pixel: Bragg peaks and diffuse scattering",
                "masked_transform": "Bragg peaks masked: diffuse scattering"}


def write_statistics(path, crystal, bragg_radius: float, png, title: str, preview: str,
                     log) -> None:
    """The statistics of the merged volume `path` into its notes, the log and `png`;
    bragg_radius: |Q| about every node left out (1/A as 2 pi / d:
    reduction.merge.statistics_bragg_radius)."""
    # (here: the statistics load numba, which a merge loads only at its first compiled call)
    from ..algorithms.statistics.shells import binned_sums, volume_statistics, with_half_sets

    half = read_half_set(path)
    with VolumeReader(path, compiled_decompression=True) as reader:
        kind = reader.kind
        stats = volume_statistics(reader.grid, crystal, reader.read,
                                  bragg_exclusion=float(bragg_radius) / (2 * math.pi))
        if half is not None:  # CC1/2: half set B is the rest of the volume, binned alike
            grid, signal_a, weight_a, how = half
            signal, weight = binned_sums(reader.read, reader.grid)
            weight_b = weight - weight_a
            weight_b[weight_b < 1e-4 * weight] = 0  # (float32 rounding, not a measurement)
            stats = with_half_sets(stats, grid, crystal, (signal_a, weight_a),
                                   (signal - signal_a, weight_b), how)
    update_notes(path, {"statistics": stats.to_notes()})
    for line in stats.log_lines():
        log.info("%s", line)
    if stats.flag:
        log.warning("%s: %s", path, stats.flag_reason)
    # (the two kinds' pictures look alike: the title says which one this is)
    plot_statistics(stats, png, f"{title} {kind} ({KIND_MEANING.get(kind, kind)})", preview)


def scalers_of(args, inputs, orientation, log) -> tuple[list | None, dict]:
    """The scales of every input (algorithms.scaling.apply; None: not applied, --apply auto
    where they do not matter) and what the notes say of them."""
    from ..files.scales import read_scales

    if orientation is None or not args.scans or not args.masks \
            or not len(args.scans) == len(args.masks) == len(args.inputs):
        raise ConfigError("--scales needs --orientation and one --scans and --masks file per "
                          "input, in their order")
    model, content = read_scales(args.scales)
    away = content["statistics"]["away_from_nodes"]
    verdict = content.get("verdict") or {"matter": False, "why": "no verdict in the file"}
    notes = {"scales": str(args.scales), "terms": content["terms"],
             "chi2_nu": {k: away[k]["chi2_nu"] for k in ("before", "after")},
             "cc_half": {k: away[k]["cc_half"] for k in ("before", "after")},
             "applied": args.apply == "true" or bool(verdict["matter"]),
             "verdict": verdict["why"]}
    if not notes["applied"]:
        log.info("%s not applied (reduction.scaling.apply: auto): the scales do not matter: %s",
                 args.scales, verdict["why"])
        return None, notes
    values = np.concatenate([model.detector.ravel()] + [np.concatenate(
        [e.scale, e.absorption, e.offset]) for e in model.entries.values()])
    if not np.isfinite(values).all():
        raise InputMismatchError(f"{args.scales}: its scales are not finite numbers (a fit on "
                                 f"too few equivalents? {verdict['why']}): set "
                                 "reduction.scaling.apply to auto or false")
    scalers = []
    for path in inputs:
        i = [str(p) for p in args.inputs].index(str(path))
        scalers.append(_scaler(model, args, i, orientation, path))
    log.info("scaled by %s: chi^2/nu of equivalents %s -> %s (%s)", args.scales,
             away["before"]["chi2_nu"], away["after"]["chi2_nu"], verdict["why"])
    return scalers, notes


def _scaler(model, args, i: int, orientation, path):
    """The scales of input i (its scan.nxs and mask.nxs are --scans[i] and --masks[i])."""
    from ..algorithms.scaling.apply import EntryScaler
    from ..files.mask import read_pixel_mask
    from ..files.scan import read_scan_file

    rec = read_scan_file(args.scans[i])
    if rec.entry not in model.entries:
        raise InputMismatchError(f"{args.scales}: no scales of entry {rec.entry} ({path}); it "
                                 f"has {', '.join(model.entries)}")
    return EntryScaler(model, rec.entry, rec.geometry(orientation),
                       read_pixel_mask(args.masks[i], rec.entry))


def run(args, log) -> None:
    orientation = read_orientation_file(args.orientation) if args.orientation else None
    unusable = orientation.unusable_entries if orientation else {}
    inputs, left_out = entries_to_merge(args.inputs, unusable, log)
    prov = provenance("hklflow merge_entries", args.settings,
                      inputs=args.inputs + ([args.orientation] if args.orientation else []))
    slices = settings_part(args.settings, SliceParams).slices
    # the pictures' planes kept as they are written (not read back from the file)
    planes = kept_planes(slices)
    scalers, scaling = scalers_of(args, inputs, orientation, log) if args.scales else (None, None)
    notes = sum_volumes(inputs, args.out, args.title, prov, log=log, left_out=left_out,
                        keep=planes, scalers=scalers)
    if scaling:
        update_notes(args.out, {"scaling": scaling})
    elif args.unscaled_preview:
        update_notes(args.out, {"scaling": UNSCALED_PREVIEW})
    set_aside = settings_part(args.settings, SetAsideParams).set_aside
    if set_aside:  # (hklflow run left rows of this temperature out: the volume says so)
        update_notes(args.out, {"set_aside": list(set_aside)})
        for line in set_aside:
            log.info("made without a row: %s", line)
    waiting = settings_part(args.settings, WaitingParams).waiting
    if waiting:  # (scans planned, not yet landed enough to be included: a preview)
        notes["waiting"] = {"landed": [dict(r) for r in waiting]}
        update_notes(args.out, {"waiting": notes["waiting"]})
        log.info("a preview: not yet included: %s", ", ".join(r["scan"] for r in waiting))
    what = f"{len(inputs)} volumes summed" + ("; unscaled" if args.unscaled_preview else "")
    if waiting:
        what += "; waiting for " + ", ".join(r["scan"].rpartition("/")[2] for r in waiting)
    if left_out:
        what += "; left out: " + ", ".join(f"{e} ({why.split(' (')[0]})"
                                           for e, why in left_out.items())
    plot_slices(planes if planes.complete else args.out, slices, args.png,
                f"{args.title} ({what})", log=log, preview=preview_label(notes))
    if args.statistics_png and args.preview:
        update_notes(args.out, {"statistics": STATISTICS_LEFT_OUT})
        log.info("statistics: %s", STATISTICS_LEFT_OUT)
        plot_left_out(args.statistics_png, f"{args.title}: uncertainty statistics",
                      STATISTICS_LEFT_OUT, preview_label(notes))
    elif args.statistics_png:
        if orientation is None:
            raise ConfigError("--statistics-png needs --orientation (the crystal)")
        write_statistics(args.out, orientation.crystal(),
                         settings_part(args.settings, StatisticsParams).bragg_radius,
                         args.statistics_png, args.title,
                         preview_label(notes), log)


def main(argv=None) -> int:
    return run_step(parser(), run, argv)
