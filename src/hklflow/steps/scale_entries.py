"""Step scale_entries: the scales of a sample's entries at one temperature, fitted on
Laue-equivalent voxels of their volumes away from the Bragg nodes
(hklflow.algorithms.scaling: a smooth scale per entry in phi, optionally an absorption
surface, a detector response and an additive offset), for merge_entries to apply to
signal and sigma alike.  chi^2/nu of equivalents and CC1/2, before and after, per entry,
go into the scales' file, the log and a picture with the fitted curves."""
from __future__ import annotations

import math

import numpy as np

from ..algorithms.merge.volumes import check_inputs, entries_to_merge
from ..algorithms.scaling.crossings import crossings
from ..algorithms.scaling.fit import (FitSettings, Observations, equivalents_statistics, fit_scales,
                                      initial_model)
from ..algorithms.scaling.observations import draw_orbits, read_members, voxel_hkl
from ..base.errors import InputMismatchError
from ..files.mask import read_pixel_mask
from ..files.orientation import read_orientation_file
from ..files.provenance import provenance
from ..files.scales import write_scales
from ..files.scan import read_scan_file
from ..files.volume import read_volume_header
from ..model.scales import scales_matter
from ..pictures.scaling import plot_scales
from ..settings.params import settings_part
from ..settings.scaling import ScalingParams
from ._run import StepParser, run_step


def parser() -> StepParser:
    p = StepParser("scale_entries", __doc__)
    p.add_settings()
    p.add_input("--volumes", "the entries' volumes to fit on (the masked transform)", nargs="+")
    p.add_input("--bragg-volumes", "the entries' volumes with the Bragg peaks (the transform): "
                                   "the statistics with the voxels near the nodes", nargs="*",
                required=False)
    p.add_input("--scans", "the entries' scan.nxs, in the order of --volumes", nargs="+")
    p.add_input("--masks", "the entries' mask.nxs, in the order of --volumes", nargs="+")
    p.add_input("--orientation", "orientation.nxs of the temperature")
    p.add_output("--out", "scales file (JSON) to write")
    p.add_output("--png", "picture of the scales and the statistics")
    return p


def fit_settings(params: ScalingParams, absorption: bool) -> FitSettings:
    return FitSettings(
        scale_interval=params.scale_interval, scale_smoothness=params.scale_smoothness,
        absorption_lmax=params.absorption_lmax if absorption else 0,
        absorption_regularisation=params.absorption_regularisation,
        detector_bins=params.detector_bins if params.detector_response else 0,
        detector_regularisation=params.detector_regularisation,
        offset_knots=params.offset_knots if params.offset else 0,
        offset_regularisation=params.offset_regularisation, outlier_z=params.outlier_z)


def _applied(notes: dict) -> set:
    """The corrections a volume's notes say were applied (an entry's volume: those of the
    transform's parts it sums, each in its inputs' notes)."""
    if "corrections" in notes:
        return set(notes["corrections"].get("applied", {}))
    parts = [_applied(item.get("notes", {})) for item in notes.get("inputs", [])]
    return set.intersection(*parts) if parts else set()


def analytic_absorption(paths) -> bool:
    """Whether the transform corrected the sample's absorption from its shape (the volumes'
    notes: corrections applied)."""
    return bool(paths) and all("absorption" in _applied(read_volume_header(p).notes)
                               for p in paths)


def absorption_on(params: ScalingParams, paths, per_entry: list[int], log) -> tuple[bool, str]:
    """The absorption term's switch and why (the rule of reduction.scaling.absorption auto)."""
    if params.absorption is not True and params.absorption != "auto":
        return False, "off (reduction.scaling.absorption false)"
    if params.absorption is True:
        return True, "on (reduction.scaling.absorption true)"
    if analytic_absorption(paths):
        return False, "off: the transform corrected the sample's absorption from its shape"
    need = params.min_observations_per_parameter * ((params.absorption_lmax + 1) ** 2 - 1)
    if min(per_entry) < need:
        return False, (f"off: {min(per_entry)} observations in an entry, fewer than "
                       f"{need:.0f} ({params.min_observations_per_parameter:g} per coefficient)")
    return True, f"on: no analytic correction, >= {need:.0f} observations per entry"


def gather(paths, members, group, grid, geometries, pixel_masks, UB, bragg_radius: float):
    """Observations of the voxels `members` (orbit `group`) in the volumes `paths`: those
    measured, with a sigma, away from the nodes, and crossing the Ewald sphere on the
    detector; and per entry how many."""
    hkl = voxel_hkl(members, grid)
    q = np.linalg.norm(hkl @ np.asarray(UB).T, axis=1)
    near = np.linalg.norm((hkl - np.rint(hkl)) @ np.asarray(UB).T, axis=1) \
        < bragg_radius / (2 * math.pi)
    ys, sigmas, groups, entries, qs, cross = [], [], [], [], [], []
    for e, path in enumerate(paths):
        signal, weight, variance = read_members(path, members, grid)
        if variance is None:
            raise InputMismatchError(f"{path}: no variance_sum: scaling weighs equivalents by "
                                     "their sigma (reduction.transform.variance: true)")
        ok = (weight > 0) & (variance > 0) & ~near
        idx = np.flatnonzero(ok)
        c = crossings(geometries[e], pixel_masks[e], hkl[idx])
        keep = c.exact  # (fitted where the crossings are known)
        idx = idx[keep]
        c = c.subset(keep)
        ys.append(signal[idx] / weight[idx])
        sigmas.append(np.sqrt(variance[idx]) / weight[idx])
        groups.append(group[idx])
        entries.append(np.full(len(idx), e))
        qs.append(q[idx])
        cross.append(c)
    # orbits numbered 0.. over those observed
    g = np.concatenate(groups)
    _, g = np.unique(g, return_inverse=True)
    return Observations(np.concatenate(ys), np.concatenate(sigmas), g, np.concatenate(entries),
                        np.concatenate(qs), tuple(cross))


def model_at(model, obs: Observations, names):
    m = np.ones(len(obs.y))
    o = np.zeros(len(obs.y))
    for e, name in enumerate(names):
        idx = obs.of(e)
        m[idx] = model.multiplier(name, obs.crossings[e])
        o[idx] = model.offset(name, obs.q[idx])
    return m, o


def run(args, log) -> None:
    params = settings_part(args.settings, ScalingParams)
    if not len(args.volumes) == len(args.scans) == len(args.masks):
        raise InputMismatchError(f"--volumes ({len(args.volumes)}), --scans ({len(args.scans)}) "
                                 f"and --masks ({len(args.masks)}) must name the same entries")
    ori = read_orientation_file(args.orientation)
    crystal = ori.crystal()
    kept, left_out = entries_to_merge(args.volumes, ori.unusable_entries, log)
    at = [args.volumes.index(p) for p in kept]
    records = [read_scan_file(args.scans[i]) for i in at]
    names = [r.entry for r in records]
    geometries = [r.geometry(ori) for r in records]
    pixel_masks = [read_pixel_mask(args.masks[i], r.entry) for i, r in zip(at, records)]
    grid = check_inputs(kept)[0]
    members, group = draw_orbits(grid, crystal.laue_operators, kept, params.max_orbits)
    log.info("%d orbits of Laue-equivalent voxels drawn (%d voxels), Laue group %s",
             int(group.max()) + 1 if len(group) else 0, len(members), crystal.laue_group)
    obs = gather(kept, members, group, grid, geometries, pixel_masks, ori.UB,
                 params.bragg_radius)
    per_entry = [int(np.sum(obs.entry == e)) for e in range(len(names))]
    for name, n in zip(names, per_entry):
        log.info("%s: %d observations", name, n)
    absorption, why = absorption_on(params, kept, per_entry, log)
    log.info("absorption surface %s", why)
    settings = fit_settings(params, absorption)
    spans = {n: (g.angles.start, g.angles.end) for n, g in zip(names, geometries)}
    q_range = (float(obs.q.min()), float(obs.q.max())) if len(obs.q) else (0.0, 1.0)
    model = initial_model(spans, settings, geometries[0].detector.shape, q_range)
    before = equivalents_statistics(obs, np.ones(len(obs.y)), np.zeros(len(obs.y)), names)
    fit_scales(obs, model, settings, log)
    m, o = model_at(model, obs, names)
    after = equivalents_statistics(obs, m, o, names)
    statistics = {"away_from_nodes": {"before": before, "after": after}}
    if args.bragg_volumes:  # (orbits of their own: drawn where the masked volumes have none)
        bragg_kept = [args.bragg_volumes[i] for i in at]
        bragg = gather(bragg_kept, *draw_orbits(grid, crystal.laue_operators, bragg_kept,
                                                params.max_orbits, seed=1),
                       grid, geometries, pixel_masks, ori.UB, 0.0)
        statistics["with_nodes"] = {
            "before": equivalents_statistics(bragg, np.ones(len(bragg.y)),
                                             np.zeros(len(bragg.y)), names),
            "after": equivalents_statistics(bragg, *model_at(model, bragg, names), names)}
    for where, pair in statistics.items():
        b, a = pair["before"], pair["after"]
        log.info("%s: chi^2/nu of equivalents %s -> %s, CC1/2 %s -> %s", where,
                 _f(b["chi2_nu"], ".3f"), _f(a["chi2_nu"], ".3f"), _f(b["cc_half"]),
                 _f(a["cc_half"]))
        for name in names:
            log.info("  %s: chi^2/nu %s -> %s", name, _f(b["entries"][name]["chi2_nu"], ".3f"),
                     _f(a["entries"][name]["chi2_nu"], ".3f"))
    terms = {"smooth scale": f"on: knots every {params.scale_interval:g} deg",
             "absorption": why,
             "detector response": (f"on: {params.detector_bins} bins a side"
                                   if params.detector_response else "off"),
             "offset": f"on: {params.offset_knots} knots in |Q|" if params.offset else "off"}
    away = statistics["away_from_nodes"]
    matter, because = scales_matter(away["before"]["chi2_nu"], away["after"]["chi2_nu"],
                                    away["before"]["nu"], model.parameters,
                                    float(np.sqrt(np.mean((m - 1) ** 2))) if len(m) else 0.0)
    log.info("the scales %s: %s", "matter" if matter else "do not matter", because)
    prov = provenance("hklflow scale_entries", args.settings,
                      inputs=list(args.volumes) + list(args.bragg_volumes or [])
                      + list(args.scans) + list(args.masks) + [args.orientation])
    write_scales(args.out, model, terms=terms, statistics=statistics,
                 verdict={"matter": matter, "why": because},
                 entries=dict(zip(names, kept)), left_out=left_out, provenance=prov)
    plot_scales(model, statistics, terms, args.png,
                f"{ori.sample}/{ori.temperature_label}: scales of {len(names)} entries")


def _f(v, spec: str = ".4f") -> str:
    """A statistic, or n/a (too few orbits of two observations or more)."""
    return "n/a" if v is None else format(v, spec)


def main(argv=None) -> int:
    return run_step(parser(), run, argv)
