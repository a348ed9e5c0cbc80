"""The corrections real data need, end to end (issue 81), on simulate's absorbing_plate: a
plate of mu t = 0.8 on a 1 mm CdTe sensor at 87 keV in air, 10% beam decay with ripple
(a monitor records it here, its reference the simulated flux 1), a holder ring with an
empty-holder scan per sample scan, the crystal's own incoherent background off.

    python bench/beamline.py [--workdir bench/.data/beamline] [--variants corrected,...]
                             [--reduced DIR] [--json FILE]

Reduces (the merged masked_transform at every temperature, through Snakemake):
  corrected   - every correction on, the empty scans subtracted (the workflow's defaults
                with the sample's shape in the config and the background rows in the table);
  uncorrected - the same data with efficiency, air and absorption off and no background
                rows (the monitor still on);
  plain       - the same crystal simulated without any of the effects (no sensor, air,
                plate, decay or holder), reduced with the defaults: what the reduction itself
                gives.
--reduced DIR: the figures of an absorbing_plate experiment reduced already (nothing
simulated or run).  Prints, per variant: the satellites' contrast at 100 K against the simulation's model (its
ratio: 1 is absolute truth), and at 300 K away from every node
(|hkl - nearest node| > 0.35: no Bragg, TDS or satellite) the mean of I / sigma and the
fraction beyond 2 sigma (4.55% for a normal distribution).
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


def simulate(where: Path, variant: str) -> None:
    from hklflow.simulation import beamline
    from hklflow.simulation.experiment import preset, simulate_experiment

    spec = preset("absorbing_plate")
    spec = dataclasses.replace(spec, beam={**spec.beam, "monitor": True}, background=0.0)
    if variant == "plain":
        spec = dataclasses.replace(spec, beam=None, plate=None, holder=None, air=False,
                                   sensor=None, detector=preset("tiny").detector)
    if where.exists():
        shutil.rmtree(where)
    simulate_experiment(spec, where)
    cfg_path = where / "config/config.yaml"
    cfg = yaml.safe_load(cfg_path.read_text())
    transform = cfg.setdefault("reduction", {}).setdefault("transform", {})
    if variant != "plain":
        transform["monitor_reference"] = beamline.MONITOR_SCALE
    if variant == "uncorrected":
        transform.update(efficiency=False, air=False, absorption=False)
        table = where / "config/scans.tsv"
        lines = table.read_text().splitlines()
        header = lines[0].split("\t")
        role, bg = header.index("role"), header.index("background")
        kept = [lines[0]] + [ln for ln in lines[1:] if ln.split("\t")[role] != "background"]
        kept = [kept[0]] + ["\t".join(c if i != bg else "" for i, c in enumerate(ln.split("\t")))
                            for ln in kept[1:]]
        table.write_text("\n".join(kept) + "\n")
    cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False))


def reduce(where: Path) -> float:
    return reduce_targets(where, [f"results/tiny/{t}/masked_transform.nxs" for t in ("300K", "100K")])


def figures(where: Path) -> dict:
    from hklflow.files.volume import read_volume
    from hklflow.simulation.compare import diffuse_contrast, satellite_model

    truth = json.loads((where / "truth.json").read_text())
    v = read_volume(where / "results/tiny/100K/masked_transform.nxs")
    c = diffuse_contrast(v, satellite_model(truth, "tiny", 100.0, v.grid))
    out = {"satellite_contrast": c.contrast, "satellite_stderr": c.stderr,
           "satellite_model": c.predicted, "satellite_ratio": c.contrast / c.predicted}
    v = read_volume(where / "results/tiny/300K/masked_transform.nxs")
    hkl = np.stack(np.meshgrid(*[ax.values for ax in v.grid.axes], indexing="ij"), -1)
    hkl = np.moveaxis(hkl, (0, 1, 2), (2, 1, 0))
    away = np.linalg.norm(hkl - np.round(hkl), axis=-1) > 0.35
    errors = v.errors()
    ok = away & (v.weight > 0) & np.isfinite(errors) & (errors > 0)
    z = (v.intensity() / errors)[ok]
    out.update(zero_voxels=int(z.size), zero_mean_z=float(z.mean()),
               zero_outside_2sigma=float(np.mean(np.abs(z) > 2)),
               zero_mean_intensity=float(v.intensity()[ok].mean()))
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workdir", type=Path, default=HERE / ".data" / "beamline")
    p.add_argument("--variants", default="corrected,uncorrected,plain")
    p.add_argument("--reduced", type=Path, default=None)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    report = {"machine": machine_info(), "variants": {}}
    lines = ["absorbing_plate (mu t 0.8, 1 mm CdTe at 87 keV, air, 10% decay + 2% ripple with a "
             "monitor, holder ring + empty scans; crystal background 0):",
             f"  {'variant':12s} {'satellites / model':>20s} {'300 K away from nodes':>40s}"]
    variants = ["reduced"] if args.reduced else args.variants.split(",")
    for variant in variants:
        where = args.reduced or args.workdir / variant
        seconds = 0.0
        if not args.reduced:
            simulate(where, variant)
            seconds = reduce(where)
        f = report["variants"][variant] = {**figures(where), "seconds": seconds}
        lines.append(f"  {variant:12s} {f['satellite_ratio']:10.3f} +- "
                     f"{f['satellite_stderr'] / f['satellite_model']:.3f}      mean I "
                     f"{f['zero_mean_intensity']:+8.4f}, mean z {f['zero_mean_z']:+6.2f}, "
                     f"{100 * f['zero_outside_2sigma']:5.2f}% beyond 2 sigma "
                     f"({f['zero_voxels']} voxels; {seconds:.0f} s)")
    emit(report, "\n".join(lines), args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
