"""Scaling between entries from equivalents (issue 81), on simulate's absorbing_plate
without a monitor: a plate of mu t = 0.8 and a beam decaying by 10% with a 2% ripple, two
entries of 60 deg; and what scaling costs on a reduced experiment.

    python bench/scaling.py [--workdir bench/.data/scaling]
                            [--variants effects,free,analytic,matched]
                            [--reduced DIR:VARIANT ...] [--json FILE]
    python bench/scaling.py --cost EXPERIMENT [--temperature 100K] [--repeats 2]

Variants (each simulated and reduced through Snakemake with the workflow's defaults,
reduction.scaling.apply auto included, the masked and plain transforms of both
temperatures):
  effects  - the plate's shape not in the config, no monitor: the scaling's absorption
             surface and smooth scale are all there is;
  free     - the same crystal without the plate and the decay (sensor, air, holder kept);
  analytic - as effects, with the plate's shape given to the transform's analytic
             correction (the scaling's smooth scale takes the decay, its absorption is off);
  matched  - free with effects' photons: what the crystal scatters scaled by the mean of
             effects' plate transmission over its reflections (its truth.json) and of its
             beam, the holder and air scatter by the beam's mean. CC1/2 depends on the
             photons counted, so this is the reference effects' CC1/2 after scaling is held
             to (its absolute level is the photons', not the model's). Needs effects
             simulated first (in the same run or in --workdir).
Prints per variant and temperature: the verdict (whether the scales matter, and so were
applied), chi^2/nu of equivalents away from the nodes before and after scaling (scales.json)
and of the merged volume (its statistics), CC1/2 per shell (merged volume, half sets; and
of every orbit measured away from the nodes, before and after scaling), the
ratio of Laue-equivalent satellites measured early and late in the rotation (orbits of the
model's satellite voxels: mean over orbits of the scaled intensity measured at phi < 30 deg
over that at phi >= 30 deg), and at 100 K the satellites' contrast against the simulation's
model (1 is absolute truth).  A fit to noise can move the observations visibly, and a real
fall of chi^2 can move them little: the verdict needs both its tests
(model.scales.scales_matter).

--cost: on an experiment reduced already (the demo: `hklflow demo`), the temperature's
scale_entries job and its merges with the scales applied and without, alternating, each
run as Snakemake would run it (its own command line) into a scratch folder; their CPU
against the CPU of the temperature's transform_frames jobs (their logs).  The fit is
bounded by max_orbits, not by frames or pixels; applying works in blocks of voxels that
keep its temporaries in the cache.
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

from common import emit, machine_info, reduce_targets, swap_options  # noqa: E402

TEMPERATURES = ("300K", "100K")


def matched_photons(effects: Path, spec) -> tuple[float, float]:
    """(crystal's, holder's and air's) factors that give the effects variant's photons
    without its plate and decay: the mean plate transmission of its reflections times the
    beam's mean, and the beam's mean."""
    from hklflow.simulation.beamline import beam_flux

    truth = json.loads((effects / "truth.json").read_text())
    plate = [t for scan in truth["scans"].values()
             for t in scan["reflections"]["plate_transmission"]]
    beam = float(np.mean(beam_flux(spec.beam, spec.nframes)))
    return float(np.mean(plate)) * beam, beam


def simulate(where: Path, variant: str) -> None:
    from hklflow.simulation.experiment import preset, simulate_experiment

    spec = preset("absorbing_plate")
    spec = dataclasses.replace(spec, beam={**spec.beam, "monitor": False},
                               plate_in_config=variant == "analytic")
    if variant == "matched":
        crystal, beam = matched_photons(where.parent / "effects", spec)
        spec = dataclasses.replace(
            spec, bragg_scale=spec.bragg_scale * crystal, background=spec.background * crystal,
            satellite_amplitude=spec.satellite_amplitude * crystal,
            tds_amplitude=spec.tds_amplitude * crystal, air_scatter=spec.air_scatter * beam,
            holder={**spec.holder, "amplitude": spec.holder["amplitude"] * beam})
    if variant in ("free", "matched"):
        spec = dataclasses.replace(spec, beam=None, plate=None)
    if where.exists():
        shutil.rmtree(where)
    simulate_experiment(spec, where)
    path = where / "config/config.yaml"
    cfg = yaml.safe_load(path.read_text())
    assert "scaling" not in cfg.get("reduction", {}), "the workflow's defaults are measured"


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


class Reduced:
    """A reduced temperature of a variant: its scales, orientation, entries' masked volumes,
    scans and pixel masks, the grid; observations(orbits, bragg_radius) as scale_entries
    gathers them."""

    def __init__(self, where: Path, temperature: str):
        from hklflow.files.mask import read_pixel_mask
        from hklflow.files.orientation import read_orientation_file
        from hklflow.files.scales import read_scales
        from hklflow.files.scan import read_scan_file
        from hklflow.files.volume import read_grid_of

        t = where / "results/tiny" / temperature
        self.model = read_scales(t / "scales.json")[0]
        self.orientation = read_orientation_file(t / "orientation.nxs")
        self.laue_operators = self.orientation.crystal().laue_operators
        self.names = list(self.model.entries)
        self.volumes = [t / n / "masked_transform.nxs" for n in self.names]
        self.records = [read_scan_file(t / n / "scan.nxs") for n in self.names]
        self.masks = [read_pixel_mask(t / n / "mask.nxs", n) for n in self.names]
        self.grid = read_grid_of(self.volumes[0])[0]

    def observations(self, orbits, bragg_radius: float):
        from hklflow.steps.scale_entries import gather

        members, group = orbits
        ori = self.orientation
        return gather(self.volumes, members, group, self.grid,
                      [r.geometry(ori) for r in self.records], self.masks, ori.UB, bragg_radius)


def satellite_ratio(where: Path, temperature: str) -> dict:
    """Equivalent satellites early and late in the rotation, before and after scaling."""
    from hklflow.algorithms.scaling.observations import orbits_of
    from hklflow.steps.scale_entries import model_at

    r = Reduced(where, temperature)
    obs = r.observations(orbits_of(satellite_voxels(r.grid), r.grid, r.laue_operators), 0.0)
    names, model = r.names, r.model
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


def every_orbit(where: Path, temperature: str, bragg_radius: float = 0.2) -> dict:
    """CC1/2 of equivalents away from the nodes (0.2 1/A: the workflow's default), overall
    and per |Q| shell, before and after scaling, of every orbit the masked volumes measured
    (the scaling's own statistics hold the 5,000 it drew: their shells vary by ~0.02
    between two reductions of the same frames)."""
    from hklflow.algorithms.scaling.fit import equivalents_statistics
    from hklflow.algorithms.scaling.observations import draw_orbits
    from hklflow.steps.scale_entries import model_at

    r = Reduced(where, temperature)
    obs = r.observations(draw_orbits(r.grid, r.laue_operators, r.volumes, 10 ** 9),
                         bragg_radius)
    ones, zeros = np.ones(len(obs.y)), np.zeros(len(obs.y))
    out = {}
    for key, (m, o) in (("before", (ones, zeros)), ("after", model_at(r.model, obs, r.names))):
        st = equivalents_statistics(obs, m, o, r.names)
        out[key] = {"cc_half": st["cc_half"], "orbits": st["orbits"],
                    "shells": [r["cc_half"] for r in st["shells"]]}
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
        f = {"terms": scales["terms"], "verdict": scales["verdict"],
             "applied": read_volume_header(t / "masked_transform.nxs").notes.get(
                 "scaling", {}).get("applied", False),
             "chi2_nu_before": away["before"]["chi2_nu"], "chi2_nu_after": away["after"]["chi2_nu"],
             "cc_half_before": away["before"]["cc_half"], "cc_half_after": away["after"]["cc_half"],
             "merged_chi2_nu": stats["overall"]["chi2_nu"],
             "merged_cc_half": stats["overall"].get("cc_half"),
             "merged_cc_half_shells": [r.get("cc_half") for r in stats["shells"]],
             "satellites_early_over_late": satellite_ratio(where, temperature),
             "every_orbit": every_orbit(where, temperature)}
        if temperature == "100K":
            v = read_volume(t / "masked_transform.nxs")
            c = diffuse_contrast(v, satellite_model(truth, "tiny", 100.0, v.grid))
            f.update(satellite_ratio_to_model=c.contrast / c.predicted,
                     satellite_stderr=c.stderr / c.predicted)
        out[temperature] = f
    return out


def _command(where: Path, target: str) -> str:
    """The shell command Snakemake would run to make `target` (a dry run, forced)."""
    import subprocess

    repo = Path(__file__).resolve().parent.parent
    r = subprocess.run([sys.executable, "-m", "snakemake", "--snakefile", str(repo / "Snakefile"),
                        "--directory", str(where), "-n", "-p", "-f", target],
                       capture_output=True, text=True)
    lines = [x for x in (r.stdout + r.stderr).splitlines() if x.startswith("Shell command: ")]
    if r.returncode or not lines:
        raise SystemExit(f"{where}: no command for {target}:\n{r.stderr[-2000:]}")
    return lines[0][len("Shell command: "):].split(" > ")[0]


def _cpu(where: Path, command: str, scratch: Path, swap: dict) -> float:
    """The CPU seconds of the step `command` (its log's resources line), its outputs moved
    to `scratch` (swap: option -> new value, or None to drop the option and its values)."""
    import re
    import shlex
    import subprocess

    out = swap_options(shlex.split(command), swap)
    if out and out[0] == "hklflow":  # (the one beside this interpreter: no venv on PATH)
        out[0] = str(Path(sys.executable).parent / "hklflow")
    log = scratch / "step.log"
    with open(log, "w") as f:
        r = subprocess.run(out, cwd=where, stdout=f, stderr=subprocess.STDOUT)
    text = log.read_text()
    if r.returncode:
        raise SystemExit(f"{' '.join(out)} failed:\n{text[-2000:]}")
    return float(re.findall(r"resources: cpu_s=([0-9.]+)", text)[-1])


def cost(where: Path, temperature: str, repeats: int) -> dict:
    """What scaling costs at one temperature of a reduced experiment: scale_entries, and
    each merge with the scales applied (--apply true) and without, alternating."""
    import re
    import tempfile

    sample = next(p.name for p in (where / "results").iterdir()
                  if (p / temperature / "scales.json").is_file())
    t = f"results/{sample}/{temperature}"
    scratch = Path(tempfile.mkdtemp(prefix="scaling-cost-"))
    try:
        fit_cmd = _command(where, f"{t}/scales.json")
        fit = min(_cpu(where, fit_cmd, scratch, {"--out": [str(scratch / "scales.json")],
                                                 "--png": [str(scratch / "scales.png")]})
                  for _ in range(repeats))
        merges = {}
        for kind in ("transform", "masked_transform"):
            cmd = _command(where, f"{t}/{kind}.nxs")
            if "--scales" not in cmd:
                raise SystemExit(f"{where}: its merges are not given the scales "
                                 "(reduction.scaling.apply: false)")
            outs = {"--out": [str(scratch / "m.nxs")], "--png": [str(scratch / "m.png")],
                    "--statistics-png": [str(scratch / "s.png")]}
            plain = {**outs, "--scales": None, "--scans": None, "--masks": None,
                     "--apply": None}
            scaled = {**outs, "--apply": ["true"]}
            runs = {"unscaled": [], "scaled": []}
            for _ in range(repeats):
                runs["unscaled"].append(_cpu(where, cmd, scratch, plain))
                runs["scaled"].append(_cpu(where, cmd, scratch, scaled))
            merges[kind] = {k: min(v) for k, v in runs.items()}
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    transform = 0.0
    for log in (where / "logs/transform_frames" / sample / temperature).rglob("*.log"):
        found = re.findall(r"resources: cpu_s=([0-9.]+)", log.read_text())
        transform += float(found[-1]) if found else 0.0
    applying = sum(m["scaled"] - m["unscaled"] for m in merges.values())
    return {"experiment": str(where), "temperature": temperature, "fit_cpu_s": fit,
            "merges_cpu_s": merges, "applying_cpu_s": applying,
            "transform_frames_cpu_s": transform,
            "fit_over_transform": fit / transform if transform else None,
            "applying_over_transform": applying / transform if transform else None}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cost", type=Path, default=None, metavar="EXPERIMENT",
                   help="what scaling costs on this reduced experiment (nothing simulated)")
    p.add_argument("--temperature", default="100K", help="with --cost: the temperature")
    p.add_argument("--repeats", type=int, default=2, help="with --cost: runs of each, the least")
    p.add_argument("--workdir", type=Path, default=HERE / ".data" / "scaling")
    p.add_argument("--variants", default="effects,free,analytic,matched")
    p.add_argument("--reduced", nargs="*", default=None, metavar="DIR:VARIANT",
                   help="figures of experiments reduced already (nothing simulated or run)")
    p.add_argument("--temperatures", default=",".join(TEMPERATURES),
                   help="the temperatures to give figures of (with --reduced: those reduced)")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    if args.cost:
        c = cost(args.cost.resolve(), args.temperature, args.repeats)
        m = c["merges_cpu_s"]
        emit({"machine": machine_info(), "cost": c}, "\n".join([
            f"scaling's cost at {c['temperature']} of {c['experiment']} (CPU-s, least of "
            f"{args.repeats}):",
            f"  scale_entries {c['fit_cpu_s']:.2f}; transform_frames of the temperature "
            f"{c['transform_frames_cpu_s']:.2f}: {c['fit_over_transform']:.2f}x",
            *(f"  merge_entries {k}: {v['unscaled']:.2f} unscaled, {v['scaled']:.2f} scaled"
              for k, v in m.items()),
            f"  applying: {c['applying_cpu_s']:.2f} ({c['applying_over_transform']:.2f}x the "
            f"transform)"]), args.json)
        return 0
    temperatures = tuple(args.temperatures.split(","))
    report = {"machine": machine_info(), "variants": {}}
    runs = ([(Path(r.rpartition(":")[0]), r.rpartition(":")[2]) for r in args.reduced]
            if args.reduced else [(args.workdir / v, v) for v in args.variants.split(",")])
    lines = ["absorbing_plate without a monitor (mu t 0.8, 10% decay + 2% ripple), scaled with "
             "the defaults:"]
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
                f"  {variant:8s} {temperature}: {'applied' if g['applied'] else 'not applied'}"
                f" ({g['verdict']['why']})")
            lines.append(
                f"  {variant:8s} {temperature}: chi2/nu {g['chi2_nu_before']:.3f} -> "
                f"{g['chi2_nu_after']:.3f} (merged {g['merged_chi2_nu']:.3f}); satellites "
                f"early/late {s['before']:.3f} -> {s['after']:.3f} ({s['orbits']} orbits); "
                f"merged CC1/2 per shell {shells}"
                + (f"; satellites / model {g['satellite_ratio_to_model']:.3f} +- "
                   f"{g['satellite_stderr']:.3f}" if "satellite_ratio_to_model" in g else ""))
            e = g["every_orbit"]
            lines.append(
                f"  {variant:8s} {temperature}: CC1/2 of every orbit ({e['after']['orbits']}) "
                f"{e['before']['cc_half']:.3f} -> {e['after']['cc_half']:.3f}, per shell "
                + " ".join(f"{c:.3f}" for c in e["after"]["shells"]))
        lines.append(f"           absorption surface {f[temperatures[0]]['terms']['absorption']}; "
                     f"{seconds:.0f} s")
    emit(report, "\n".join(lines), args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
