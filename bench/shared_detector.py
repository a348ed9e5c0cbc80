#!/usr/bin/env python
"""The detector a sample's temperatures share (reduction.refinement.detector_from): how
honest the cell's esd is, the thermal expansion between temperatures, and what the joint
choice (`all`) costs.

    python bench/shared_detector.py sigma [--demo DIR] [--presets tiny,tiny_hexagonal,...]
                                          [--seeds 3] [--workdir DIR] [--json FILE]
    python bench/shared_detector.py expansion [--frames 720] [--workdir DIR] [--json FILE]
    python bench/shared_detector.py dag [--workdir DIR] [--json FILE]
    python bench/shared_detector.py cpu --demo DIR [--old-ref HEAD] [--repeats 3] [--json FILE]

sigma: simulated experiments reduced by the workflow up to their orientation tables, with
detector_from parent (the default) and all: for every temperature and free cell parameter,
the error against the simulation's truth in units of the esd the orientation file reports
(z), and for every two temperatures of a sample the error of their difference in units of
its esd (model.shared_detector.difference_covariance); the rms of z over all of them is
the figure (honest: 0.7-1.5).  Cases: --demo (a reduced demo directory, e.g. after `hklflow
demo`), the --presets (simulation.experiment.preset) and --seeds-1 experiments like each
(varied: other structure factors, noise and orientation), and the synthetic 2M case of
tests/algorithms/orientation/test_orient.py (peaks without frames, Gaussian centroid noise
as stated to the refinement).

expansion: the demo's instrument and crystal with --frames frames of 0.5 deg (720: a whole
turn, ~1,250 peaks per temperature), reduced to its orientation tables with parent and
all: the difference of the cells of every two temperatures against the truth's.

dag: on the tiny experiment (reduced once, whole), with parent and all: the rule graph's
edges into the refinements (snakemake --rulegraph); the jobs `snakemake -n` plans after one
row of the scans table changes (phi_start of 100K/f2); and after a temperature is added to
a complete experiment (the 100K rows taken out, the rest reduced, then put back: what a new
temperature of a watched series does).

cpu: the demo's refinement jobs (index_parent, refine_temperature, and with this code
refine_detector and orientation_table) run again on its peaks with the code of --old-ref
(git archive, run from its own source tree) and with this one, alternately, --repeats
times: CPU seconds from each job log's `resources:` line.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_WORKDIR = REPO / "bench" / ".data" / "shared_detector"
PRESETS = ("tiny", "tiny_hexagonal", "tiny_monoclinic")
MODES = ("parent", "all")


def say(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------
# Experiments: simulated, reduced by the workflow
# --------------------------------------------------------------------------------------
def snakemake(exp: Path, *args, env=None, check=True) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"),
           "--directory", str(exp), *map(str, args)]
    p = subprocess.run(cmd, capture_output=True, text=True,
                       env=dict(env or os.environ, HDF5_USE_FILE_LOCKING="FALSE"))
    if check and p.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{(p.stdout + p.stderr)[-4000:]}")
    return p


def simulate(spec, out: Path) -> Path:
    from hklflow.simulation.experiment import simulate_experiment

    if not (out / "truth.json").is_file():
        say(f"simulating {spec.name} (noise seed {spec.noise_seed}) into {out}")
        simulate_experiment(spec, out, overwrite=True)
    return out


def set_detector_from(exp: Path, mode: str) -> None:
    """reduction.refinement.detector_from of an experiment's config (parent: left out)."""
    import yaml

    p = exp / "config" / "config.yaml"
    cfg = yaml.safe_load(p.read_text())
    refinement = cfg.setdefault("reduction", {}).setdefault("refinement", {})
    if mode == "parent":
        refinement.pop("detector_from", None)
    else:
        refinement["detector_from"] = mode
    p.write_text(yaml.safe_dump(cfg, sort_keys=False))


def orientation_targets(exp: Path) -> list[str]:
    from hklflow.files import outputs
    from hklflow.planning.config import load_experiment

    e = load_experiment(exp / "config" / "config.yaml", base_dir=exp)
    return [outputs.fill(outputs.ORIENTATION_TABLE_PNG, sample=s) for s in e.samples]


def reduce_orientations(exp: Path, mode: str, source: Path | None = None) -> Path:
    """A copy of exp (raw data linked; the scan and peak files of `source`, a reduced copy,
    if given) at detector_from `mode`, reduced to its orientation tables."""
    out = exp.parent / f"{exp.name}_{mode}"
    if not out.exists():
        _light_copy(source or exp, out)
    set_detector_from(out, mode)
    say(f"reducing {out.name} to its orientation tables")
    snakemake(out, "--cores", "2", *orientation_targets(out))
    return out


# --------------------------------------------------------------------------------------
# Errors against the truth
# --------------------------------------------------------------------------------------
def cell_z(exp: Path) -> tuple[list[dict], list[dict]]:
    """Per temperature and free cell parameter: relative error, relative esd (the file's),
    z; per two temperatures of a sample: the same of their difference."""
    from hklflow.files.orientation import read_orientation_file
    from hklflow.model.crystal import CELL_NAMES
    from hklflow.model.shared_detector import difference_covariance

    truth = json.loads((exp / "truth.json").read_text())
    rows, pairs = [], []
    for sample, st in truth["samples"].items():
        recs = {}
        for tl, t in st["temperatures"].items():
            f = exp / "results" / sample / tl / "orientation.nxs"
            if not f.is_file():
                continue
            rec = recs[tl] = read_orientation_file(f)
            cell = dict(zip(CELL_NAMES, rec.cell))
            esd = dict(zip(CELL_NAMES, rec.cell_esd))
            true = dict(zip(CELL_NAMES, t["cell"]))
            for n in rec.cell_covariance.names:
                scale = cell[n] if n in "abc" else 1.0  # lengths relative, angles in degrees
                err, s = (cell[n] - true[n]) / scale, esd[n] / scale
                rows.append({"case": exp.name, "temperature": f"{sample}/{tl}", "param": n,
                             "error": err, "esd": s, "z": err / s,
                             "n_used": int(rec.statistics["n_used"]),
                             "detector": rec.shared_detector.source})
        labels = list(recs)
        for i, a in enumerate(labels):
            for b in labels[i + 1:]:
                ra, rb = recs[a], recs[b]
                shared = ra.shared_detector == rb.shared_detector
                cov = difference_covariance(ra.cell_covariance, rb.cell_covariance, shared)
                for k, n in enumerate(ra.cell_covariance.names):
                    ia = CELL_NAMES.index(n)
                    found = ra.cell[ia] - rb.cell[ia]
                    true = st["temperatures"][a]["cell"][ia] - st["temperatures"][b]["cell"][ia]
                    scale = ra.cell[ia] if n in "abc" else 1.0
                    err, s = (found - true) / scale, float(np.sqrt(cov[k, k])) / scale
                    pairs.append({"case": exp.name, "pair": f"{sample}/{a}-{b}", "param": n,
                                  "found": found / scale, "true": true / scale, "error": err,
                                  "esd": s, "z": err / s, "shared": shared})
    return rows, pairs


def synthetic_2m_case(seed: int = 3) -> list[dict]:
    """tests/algorithms/orientation/test_orient.py's 2M case (peaks without frames, Gaussian
    centroid noise of 0.1 px and 0.05 frame, stated as their esd), indexed and refined."""
    from hklflow.algorithms.orientation.orient import index_parent
    from hklflow.algorithms.orientation.refinement import EntryPeaks
    from hklflow.model.crystal import CELL_NAMES, UnitCell
    from hklflow.model.geometry import EntrySetup, pyfai_detector
    from hklflow.settings.params import IndexingParams, RefinementParams
    from hklflow.simulation.experiment import EntryModel, predict_scan_reflections, preset

    det = pyfai_detector("PilatusCdTe2M")
    ny, nx = (int(n) for n in det.shape)
    p1, p2 = (ny / 2 + 0.3) * float(det.pixel1), (nx / 2 - 0.4) * float(det.pixel2)
    base = preset("demo")
    sample = replace(base.samples[0], name="mono", space_group="P 1 21/c 1",
                     cell=(9.0, 9.4, 20.0, 90, 101.5, 90), temperatures=(300.0,))
    spec = replace(base, detector="PilatusCdTe2M",
                   calibration_geometry=(0.3, p1, p2, 0.0042, -0.0031, 0.011),
                   scan_drift=(0.0,) * 6, samples=(sample,), entries=(EntryModel("f1"),),
                   nframes=1800, phi_start=0.0, phi_step=0.2, mosaicity_deg=0.05)
    st, scan = predict_scan_reflections(spec, sample, 300.0, spec.entries[0])
    r = st.reflections
    ok = (~r["in_gap"]) & (r["gap_distance_px"] >= 2) & (r["frame"] > 0) & (r["frame"] < 1800)
    rng = np.random.default_rng(seed)
    n = int(ok.sum())
    x, y = r["col"][ok] + rng.normal(0, 0.1, n), r["row"][ok] + rng.normal(0, 0.1, n)
    z = r["frame"][ok] + rng.normal(0, 0.05, n)
    setup = EntrySetup("f1", replace(st.geometry, rot3=0.0), (0.0, 0.0, 0.0), scan.goniometer,
                       scan.angles, dict(scan.offsets))
    entries = [EntryPeaks(setup, x, y, z, np.full(n, 0.1), np.full(n, 0.05), r["counts"][ok])]
    approx = st.crystal.with_cell(UnitCell(*st.crystal.cell.parameters).scaled(1.01))
    import logging

    quiet = logging.getLogger("bench.quiet")
    quiet.setLevel(logging.ERROR)
    result, _ = index_parent(entries, approx, RefinementParams.defaults(),
                             IndexingParams.defaults(), quiet)
    cell = dict(zip(CELL_NAMES, result.model.crystal.cell.parameters))
    esd = dict(zip(CELL_NAMES, result.cell_esd))
    true = dict(zip(CELL_NAMES, st.crystal.cell.parameters))
    rows = []
    for name in result.cell_covariance.names:
        scale = cell[name] if name in "abc" else 1.0
        err, s = (cell[name] - true[name]) / scale, esd[name] / scale
        rows.append({"case": f"synthetic_2m_seed{seed}", "temperature": "mono/300K",
                     "param": name, "error": err, "esd": s, "z": err / s,
                     "n_used": int(result.n_used), "detector": "parent"})
    return rows


def varied(spec, seed: int):
    """The preset (seed 0) or another experiment like it: other structure factors, defects
    and noise (the simulation's seed) and another orientation of each sample, so that the
    peaks fall elsewhere on the pixels (a centroid's error from the search's pixel grid is the
    same in every noise realisation of one experiment: only other experiments draw it anew)."""
    if seed == 0:
        return spec
    return replace(spec, seed=spec.seed + seed, samples=tuple(
        replace(s, orientation_seed=s.orientation_seed + 100 * seed) for s in spec.samples))


def _both_modes(exp: Path, modes) -> list:
    """(reduced copy, mode) of exp for each mode, the peaks searched once."""
    done, first = [], None
    for mode in modes:
        d = reduce_orientations(exp, mode, first)
        first = first or d
        done.append((d, mode))
    return done


def rms(values) -> float:
    v = np.asarray(list(values), dtype=float)
    return float(np.sqrt(np.mean(v ** 2))) if len(v) else float("nan")


def sigma_report(args) -> dict:
    from hklflow.simulation.experiment import preset

    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    experiments = []
    if args.demo:
        demo = Path(args.demo).resolve()
        experiments += _both_modes(demo, args.modes)
    for name in [p for p in args.presets.split(",") if p]:
        for seed in range(args.seeds):
            experiments += _both_modes(simulate(varied(preset(name), seed),
                                                work / f"{name}_seed{seed}"), args.modes)
    rows, pairs = [], []
    for exp, mode in experiments:
        r, p = cell_z(exp)
        for item in r + p:
            item["mode"] = mode
        rows += r
        pairs += p
    if args.synthetic:
        for seed in range(3, 3 + args.synthetic):
            for item in synthetic_2m_case(seed):
                item["mode"] = "parent"
                rows.append(item)
    summary = {}
    for mode in args.modes:
        summary[mode] = {"cells": rms(r["z"] for r in rows if r["mode"] == mode),
                         "n_cells": sum(r["mode"] == mode for r in rows),
                         "differences": rms(p["z"] for p in pairs if p["mode"] == mode),
                         "n_differences": sum(p["mode"] == mode for p in pairs)}
    summary["all cells"] = {"rms_z": rms(r["z"] for r in rows), "n": len(rows)}
    return {"rows": rows, "pairs": pairs, "summary": summary}


def sigma_table(report) -> str:
    lines = [f"{'case':<36}{'mode':<8}{'temperature':<16}{'param':<7}{'peaks':>6}"
             f"{'error':>11}{'esd':>10}{'z':>7}"]
    for r in report["rows"]:
        lines.append(f"{r['case']:<36}{r['mode']:<8}{r['temperature']:<16}{r['param']:<7}"
                     f"{r['n_used']:>6}{r['error']:>+11.2e}{r['esd']:>10.2e}{r['z']:>+7.2f}")
    lines += ["", f"{'case':<36}{'mode':<8}{'difference':<22}{'param':<7}{'found':>11}"
              f"{'error':>11}{'esd':>10}{'z':>7}"]
    for p in report["pairs"]:
        lines.append(f"{p['case']:<36}{p['mode']:<8}{p['pair']:<22}{p['param']:<7}"
                     f"{p['found']:>+11.3e}{p['error']:>+11.2e}{p['esd']:>10.2e}{p['z']:>+7.2f}")
    lines.append("")
    for mode, s in report["summary"].items():
        if mode == "all cells":
            lines.append(f"rms z of every cell parameter (both modes): {s['rms_z']:.2f} over {s['n']}")
        else:
            lines.append(f"{mode}: rms z of cells {s['cells']:.2f} over {s['n_cells']}, of "
                         f"differences {s['differences']:.2f} over {s['n_differences']}")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------
# Thermal expansion on a whole turn
# --------------------------------------------------------------------------------------
def expansion_report(args) -> dict:
    from hklflow.simulation.experiment import preset

    work = Path(args.workdir)
    spec = replace(preset("demo"), name=f"demo_{args.frames}f", nframes=args.frames)
    exp = simulate(spec, work / spec.name)
    out = {"frames": args.frames, "phi_step": spec.phi_step, "modes": {}}
    for d, mode in _both_modes(exp, args.modes):
        rows, pairs = cell_z(d)
        out["modes"][mode] = {"cells": rows, "differences": pairs}
    return out


def expansion_table(report) -> str:
    lines = [f"demo instrument and crystal, {report['frames']} frames of "
             f"{report['phi_step']} deg per entry"]
    for mode, r in report["modes"].items():
        peaks = sorted({(c["temperature"], c["n_used"]) for c in r["cells"]})
        lines.append(f"{mode}: peaks per temperature " + ", ".join(f"{t} {n}" for t, n in peaks))
        for c in r["cells"]:
            lines.append(f"  {c['temperature']:<12}{c['param']:<4} error {c['error']:+.2e} "
                         f"esd {c['esd']:.2e} z {c['z']:+.2f}")
        for p in r["differences"]:
            ok = "within 2e-5" if abs(p["error"]) <= 2e-5 else "NOT within 2e-5"
            lines.append(f"  {p['pair']:<18}{p['param']:<4} difference {p['found']:+.4e} "
                         f"(truth {p['true']:+.4e}) error {p['error']:+.2e} esd {p['esd']:.2e} "
                         f"z {p['z']:+.2f}: {ok}")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------
# The DAG: rule graph, reruns, a new temperature
# --------------------------------------------------------------------------------------
def _jobs(text: str) -> dict:
    table = text[text.index("Job stats:"):] if "Job stats:" in text else ""
    counts = {}
    for line in table.splitlines()[3:]:
        m = re.match(r"^(\w+)\s+(\d+)$", line.strip())
        if not m:
            break
        counts[m.group(1)] = int(m.group(2))
    return counts


def _edit_row(exp: Path, temperature: str, entry: str, column: str, value: str) -> None:
    p = exp / "config" / "scans.tsv"
    lines = p.read_text().splitlines()
    header = lines[0].split("\t")
    for i, line in enumerate(lines[1:], start=1):
        cells = line.split("\t")
        if cells[1] == temperature and cells[2] == entry:
            cells[header.index(column)] = value
            lines[i] = "\t".join(cells)
    p.write_text("\n".join(lines) + "\n")


def dag_report(args) -> dict:
    from hklflow.simulation.experiment import preset

    work = Path(args.workdir)
    base = simulate(preset("tiny"), work / "tiny_dag")
    out = {}
    for mode in args.modes:
        exp = work / f"tiny_dag_{mode}"
        if exp.exists():
            shutil.rmtree(exp)
        shutil.copytree(base, exp, symlinks=True)
        set_detector_from(exp, mode)
        graph = snakemake(exp, "--rulegraph").stdout
        names = dict(re.findall(r'(\d+)\[label = "(\w+)"', graph))
        edges = sorted(f"{names[a]} -> {names[b]}" for a, b in re.findall(r"(\d+) -> (\d+)", graph)
                       if "refine" in names[b] or "refine" in names[a]
                       or names[b] == "orientation_table")
        say(f"{mode}: reducing the tiny experiment whole")
        t0 = time.monotonic()
        snakemake(exp, "--cores", "2")
        whole = time.monotonic() - t0
        table = exp / "config" / "scans.tsv"
        saved = table.read_text()
        _edit_row(exp, "100", "f2", "phi_start", "0.5")
        row = _jobs(snakemake(exp, "-n", "--cores", "1").stdout)
        table.write_text(saved)
        # a new temperature: 100K's rows out, the rest made again, then back
        lines = saved.splitlines(keepends=True)
        table.write_text("".join([lines[0]] + [ln for ln in lines[1:] if ln.split("\t")[1] != "100"]))
        snakemake(exp, "--cores", "2")
        table.write_text(saved)
        new_t = _jobs(snakemake(exp, "-n", "--cores", "1").stdout)
        out[mode] = {"edges": edges, "whole_run_s": whole, "row_changed": row,
                     "new_temperature": new_t}
    return out


def dag_table(report) -> str:
    lines = []
    for mode, r in report.items():
        lines.append(f"detector_from {mode}: rule graph edges of the refinements: "
                     + "; ".join(r["edges"]))
        for what, label in (("row_changed", "one row changed (phi_start of 100K/f2)"),
                            ("new_temperature", "a temperature added (100K) to the rest")):
            jobs = r[what]
            lines.append(f"  {label}: {jobs.get('total', 0)} jobs planned: "
                         + ", ".join(f"{k} {v}" for k, v in jobs.items() if k != "total"))
    return "\n".join(lines)


# --------------------------------------------------------------------------------------
# CPU of the refinement, old code against this
# --------------------------------------------------------------------------------------
REFINE_RULES = ("index_parent", "refine_detector", "refine_temperature", "orientation_table")


def _light_copy(demo: Path, out: Path) -> Path:
    """An experiment's config, truth, raw data (linked), calibration, scan and peak files
    (those it has)."""
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    shutil.copytree(demo / "config", out / "config")
    shutil.copy2(demo / "truth.json", out / "truth.json")
    (out / "raw").symlink_to((demo / "raw").resolve())
    for f in (demo / "results").rglob("*") if (demo / "results").is_dir() else ():
        rel = f.relative_to(demo)
        if f.is_file() and (rel.parts[1] == "calibration" or f.name in ("scan.nxs", "peaks.nxs")):
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(f, out / rel)
    return out


def _cpu_of_logs(exp: Path) -> dict:
    cpu = {}
    for rule in REFINE_RULES:
        for log in (exp / "logs" / rule).rglob("*.log") if (exp / "logs" / rule).is_dir() else ():
            m = re.search(r"resources: cpu_s=([0-9.]+)", log.read_text())
            if m:
                cpu[rule] = cpu.get(rule, 0.0) + float(m.group(1))
    return cpu


def cpu_report(args) -> dict:
    demo = Path(args.demo).resolve()
    work = Path(args.workdir)
    old_src = work / "old_code"
    if not old_src.exists():
        old_src.mkdir(parents=True)
        archive = subprocess.run(["git", "-C", str(REPO), "archive", args.old_ref],
                                 capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(old_src)], input=archive, check=True)
    rounds = {"old": [], "new": [], "new_all": []}
    for _ in range(args.repeats):
        for which in rounds:
            exp = _light_copy(demo, work / f"cpu_{which}")
            env = dict(os.environ)
            snakefile = REPO / "Snakefile"
            if which == "old":
                env["PYTHONPATH"] = str(old_src / "src")
                snakefile = old_src / "Snakefile"
            if which == "new_all":
                set_detector_from(exp, "all")
            cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(snakefile),
                   "--directory", str(exp), "--cores", "1", "--forcerun", "index_parent"]
            from hklflow.planning.config import load_experiment

            e = load_experiment(exp / "config" / "config.yaml", base_dir=exp)
            targets = [f"results/{s}/{t}/orientation.nxs" for s in e.samples
                       for t in e.temperatures_of(s)]
            if which != "old":
                targets += [f"results/{s}/orientation_table.png" for s in e.samples]
            p = subprocess.run(cmd + targets, capture_output=True, text=True,
                               env=dict(env, HDF5_USE_FILE_LOCKING="FALSE"))
            if p.returncode:
                raise RuntimeError((p.stdout + p.stderr)[-4000:])
            rounds[which].append(_cpu_of_logs(exp))
    return {"old_ref": args.old_ref, "rounds": rounds}


def cpu_table(report) -> str:
    lines = [f"CPU seconds of the demo's refinement jobs (old: {report['old_ref']}), per round"]
    for which, rounds in report["rounds"].items():
        for i, r in enumerate(rounds):
            lines.append(f"  {which:<8} round {i + 1}: total {sum(r.values()):.2f} ("
                         + ", ".join(f"{k} {v:.2f}" for k, v in r.items()) + ")")
    best = {w: min(sum(r.values()) for r in rs) for w, rs in report["rounds"].items() if rs}
    if "old" in best:
        lines.append("least of the rounds: " + ", ".join(
            f"{w} {v:.2f} s ({v / best['old']:.2f}x old)" for w, v in best.items()))
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("what", choices=["sigma", "expansion", "dag", "cpu"])
    p.add_argument("--workdir", default=str(DEFAULT_WORKDIR))
    p.add_argument("--demo", help="a reduced demo experiment directory (sigma, cpu)")
    p.add_argument("--presets", default=",".join(PRESETS), help="sigma: simulation presets")
    p.add_argument("--seeds", type=int, default=3,
                   help="sigma: experiments per preset (the preset and ones like it)")
    p.add_argument("--synthetic", type=int, default=3,
                   help="sigma: seeds of the synthetic 2M case (0: none)")
    p.add_argument("--modes", default="parent,all", help="detector_from values compared")
    p.add_argument("--frames", type=int, default=720, help="expansion: frames per entry")
    p.add_argument("--old-ref", default="HEAD", help="cpu: the git revision compared with")
    p.add_argument("--repeats", type=int, default=3, help="cpu: rounds, alternating")
    p.add_argument("--json", type=Path, help="write the JSON report here (else after the table)")
    args = p.parse_args(argv)
    args.modes = [m for m in args.modes.split(",") if m]
    sys.path.insert(0, str(REPO / "bench"))
    from common import emit, machine_info

    make, table = {"sigma": (sigma_report, sigma_table),
                   "expansion": (expansion_report, expansion_table),
                   "dag": (dag_report, dag_table), "cpu": (cpu_report, cpu_table)}[args.what]
    report = make(args)
    report = {"machine": machine_info(), args.what: report}
    emit(report, table(report[args.what]), args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
