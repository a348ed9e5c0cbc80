"""Scaling between entries from equivalents (issue 81), on simulate's absorbing_plate
without a monitor: a plate of mu t = 0.8 and a beam decaying by 10% with a 2% ripple.

    python bench/scaling.py [--workdir bench/.data/scaling] [--variants effects,free,analytic]
                            [--reduced DIR:VARIANT ...] [--json FILE]

Variants (each simulated and reduced through Snakemake with the workflow's defaults and
reduction.scaling.apply, the masked and plain transforms of both temperatures):
  effects  - the plate's shape not in the config, no monitor: the scaling's absorption
             surface and smooth scale are all there is;
  free     - the same crystal without the plate and the decay (sensor, air, holder kept);
  analytic - as effects, with the plate's shape given to the transform's analytic
             correction (the scaling's smooth scale takes the decay, its absorption is off).
Prints per variant and temperature: chi^2/nu of equivalents away from the nodes before and
after scaling (scales.json) and of the merged volume (its statistics), CC1/2 per shell
(merged volume, half sets), the ratio of Laue-equivalent satellites measured early and late
in the rotation (orbits of the model's satellite voxels: mean over orbits of the scaled
intensity measured at phi < 30 deg over that at phi >= 30 deg), and at 100 K the satellites'
contrast against the simulation's model (1 is absolute truth).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import emit, machine_info, reduce_targets  # noqa: E402

TEMPERATURES = ("300K", "100K")


def simulate(where: Path, variant: str) -> None:
    from hklflow.simulation.experiment import preset, simulate_experiment

    spec = preset("absorbing_plate")
    spec = dataclasses.replace(spec, beam={**spec.beam, "monitor": False},
                               plate_in_config=variant == "analytic")
    if variant == "free":
        spec = dataclasses.replace(spec, beam=None, plate=None)
    if where.exists():
        shutil.rmtree(where)
    simulate_experiment(spec, where)
    path = where / "config/config.yaml"
    cfg = yaml.safe_load(path.read_text())
    assert "scaling" not in cfg.get("reduction", {}), "the workflow's defaults are measured"
    cfg.setdefault("reduction", {})["scaling"] = {"apply": True}
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))


def reduce(where: Path) -> float:
    return reduce_targets(where, [f"results/tiny/{t}/{k}.nxs" for t in TEMPERATURES
               for k in ("masked_transform", "transform")])


def satellite_voxels(grid) -> np.ndarray:
    """Flat indices of the voxels nearest every (n + 1/2, m + 1/2, integer l)."""
    def nearest(ax, half):
        v = ax.values - (0.5 if half else 0.0)
        return np.flatnonzero(np.abs(v - np.round(v)) < ax.step / 2)
    ih, ik, il = nearest(grid.h, True), nearest(grid.k, True), nearest(grid.l, False)
    nl, nk, nh = grid.shape
    L, K, H = np.meshgrid(il, ik, ih, indexing="ij")
    return ((L * nk + K) * nh + H).ravel()


def satellite_ratio(where: Path, temperature: str) -> dict:
    """Equivalent satellites early and late in the rotation, before and after scaling."""
    from hklflow.algorithms.scaling.observations import orbits_of
    from hklflow.files.mask import read_pixel_mask
    from hklflow.files.orientation import read_orientation_file
    from hklflow.files.scales import read_scales
    from hklflow.files.scan import read_scan_file
    from hklflow.files.volume import read_grid_of
    from hklflow.steps.scale_entries import gather, model_at

    t = where / "results/tiny" / temperature
    model, content = read_scales(t / "scales.json")
    ori = read_orientation_file(t / "orientation.nxs")
    names = list(model.entries)
    volumes = [t / n / "masked_transform.nxs" for n in names]
    records = [read_scan_file(t / n / "scan.nxs") for n in names]
    masks = [read_pixel_mask(t / n / "mask.nxs", n) for n in names]
    grid = read_grid_of(volumes[0])[0]
    members, group = orbits_of(satellite_voxels(grid), grid, ori.crystal().laue_operators)
    obs = gather(volumes, members, group, grid, [r.geometry(ori) for r in records], masks,
                 ori.UB, 0.0)
    phi = np.concatenate([(c.share * c.phi).sum(axis=0) for c in obs.crossings])
    order = np.concatenate([obs.of(e) for e in range(len(names))])
    phi_of = np.empty(len(obs.y))
    phi_of[order] = phi
    late = phi_of >= 30.0
    out = {}
    for key, (m, o) in (("before", (np.ones(len(obs.y)), np.zeros(len(obs.y)))),
                        ("after", model_at(model, obs, names))):
        y = (obs.y - o) / m
        n = int(obs.group.max()) + 1
        sums = [np.bincount(obs.group, y * sel, n) / np.maximum(np.bincount(obs.group, sel, n), 1)
                for sel in (~late, late)]
        both = (np.bincount(obs.group, ~late, n) > 0) & (np.bincount(obs.group, late, n) > 0)
        out[key] = float(np.mean(sums[0][both] / sums[1][both]))
        out["orbits"] = int(both.sum())
    return out


def figures(where: Path, temperatures=TEMPERATURES) -> dict:
    from hklflow.files.volume import read_volume, read_volume_header
    from hklflow.simulation.compare import diffuse_contrast, satellite_model

    truth = json.loads((where / "truth.json").read_text())
    out = {}
    for temperature in temperatures:
        t = where / "results/tiny" / temperature
        scales = json.loads((t / "scales.json").read_text())
        away = scales["statistics"]["away_from_nodes"]
        stats = read_volume_header(t / "masked_transform.nxs").notes["statistics"]
        f = {"terms": scales["terms"],
             "chi2_nu_before": away["before"]["chi2_nu"], "chi2_nu_after": away["after"]["chi2_nu"],
             "cc_half_before": away["before"]["cc_half"], "cc_half_after": away["after"]["cc_half"],
             "merged_chi2_nu": stats["overall"]["chi2_nu"],
             "merged_cc_half": stats["overall"].get("cc_half"),
             "merged_cc_half_shells": [r.get("cc_half") for r in stats["shells"]],
             "satellites_early_over_late": satellite_ratio(where, temperature)}
        if temperature == "100K":
            v = read_volume(t / "masked_transform.nxs")
            c = diffuse_contrast(v, satellite_model(truth, "tiny", 100.0, v.grid))
            f.update(satellite_ratio_to_model=c.contrast / c.predicted,
                     satellite_stderr=c.stderr / c.predicted)
        out[temperature] = f
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workdir", type=Path, default=HERE / ".data" / "scaling")
    p.add_argument("--variants", default="effects,free,analytic")
    p.add_argument("--reduced", nargs="*", default=None, metavar="DIR:VARIANT",
                   help="figures of experiments reduced already (nothing simulated or run)")
    p.add_argument("--temperatures", default=",".join(TEMPERATURES),
                   help="the temperatures to give figures of (with --reduced: those reduced)")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    temperatures = tuple(args.temperatures.split(","))
    report = {"machine": machine_info(), "variants": {}}
    runs = ([(Path(r.rpartition(":")[0]), r.rpartition(":")[2]) for r in args.reduced]
            if args.reduced else [(args.workdir / v, v) for v in args.variants.split(",")])
    lines = ["absorbing_plate without a monitor (mu t 0.8, 10% decay + 2% ripple), scaled with "
             "the defaults, applied:"]
    for where, variant in runs:
        seconds = 0.0
        if not args.reduced:
            simulate(where, variant)
            seconds = reduce(where)
        f = report["variants"][variant] = {**figures(where, temperatures), "seconds": seconds}
        for temperature in temperatures:
            g = f[temperature]
            s = g["satellites_early_over_late"]
            shells = " ".join("-" if c is None else f"{c:.3f}" for c in g["merged_cc_half_shells"])
            lines.append(
                f"  {variant:8s} {temperature}: chi2/nu {g['chi2_nu_before']:.3f} -> "
                f"{g['chi2_nu_after']:.3f} (merged {g['merged_chi2_nu']:.3f}); satellites "
                f"early/late {s['before']:.3f} -> {s['after']:.3f} ({s['orbits']} orbits); "
                f"merged CC1/2 per shell {shells}"
                + (f"; satellites / model {g['satellite_ratio_to_model']:.3f} +- "
                   f"{g['satellite_stderr']:.3f}" if "satellite_ratio_to_model" in g else ""))
        lines.append(f"           absorption surface {f[temperatures[0]]['terms']['absorption']}; "
                     f"{seconds:.0f} s")
    emit(report, "\n".join(lines), args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
