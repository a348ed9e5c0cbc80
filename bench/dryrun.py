#!/usr/bin/env python
"""How long Snakemake takes to plan large experiments (a dry run, `snakemake -n`).

    python bench/dryrun.py [--sizes 3x30x3,10x60x3] [--frames 3650] [--frames-per-job 0]
                           [--detector PilatusCdTe2M] [--max-voxels N] [--workdir DIR]
                           [--repeats 3] [--hooks on,off] [--quiet] [--keep] [--json FILE]
    python bench/dryrun.py --resources [--max-voxels 513922401] ...
    python bench/dryrun.py --raw-files 20000 [--frames 3650] [--raw-file-kb 64] [--full-mb 1024]

Every cluster job parses the Snakefile again, so parsing may read the config and the scans
table and nothing else, and planning thousands of jobs must take seconds.  For every size
(samples x temperatures x entries) this script writes an experiment into a temporary
directory (or --workdir):

* config/config.yaml: the demo's instrument with the given detector (default a Pilatus
  CdTe 2M, 1679 x 1475 pixels), one CeO2 calibration, tetragonal samples whose parent is
  the highest temperature, the transform split by `--frames-per-job` (0, the default: the
  config's default, one job per 2M x 3650-frame entry), both kinds (transform,
  masked_transform, made by the same job) and symmetrisation (the defaults);
* config/scans.tsv: samples x temperatures x entries rows of `--frames` frames of 0.1 deg;
* raw files: empty files at every raw path (a dry run reads no data, but Snakemake needs
  the inputs of the jobs it plans to exist); nothing else.

Then it times `snakemake -s <repo>/Snakefile --directory DIR -n --cores 16` (`--repeats`
times per size, each a new process; `--quiet` adds `--quiet rules`), with hklflow's
Snakemake hooks on and off (`--hooks`: HKLFLOW_SNAKEMAKE_HOOKS=0, hklflow.planning.snakemake_compat),
and prints the jobs per rule (from Snakemake's job table), the best and worst wall times,
the CPU time of the best run (what the wall time is on an idle machine; the machine is
shared, so the load average at start and end is printed too), and the time hklflow's own
parse-time code takes (reading and validating the config and the scans table, cutting the
transform jobs).  The figures include starting Python and importing Snakemake and hklflow.

Defaults: 3 x 30 x 3 = 270 scan entries and 10 x 60 x 3 = 1800 entries (the job counts
are printed; `--frames-per-job 640` makes six transform jobs per entry).

`--raw-files N` plans nothing either: it times what the plan adds per raw file of an
ingested entry (hklflow.raw.rawfiles.RawChangeCheck) on N frame files of `--raw-file-kb` KB in
entries of `--frames` files, against a bare os.stat of each (what Snakemake pays per input
file anyway), in the three cases: the first plan after ingest, every later plan, and the
plan after the files were copied (new inodes: each hashed again); and the SHA-256 of every
byte (`reduction.ingest.fingerprint: full`) of a file of `--full-mb` MB, read from the page
cache, against the default sampled fingerprint.

`--resources` plans nothing: it prints the threads, memory (MB) and run time (minutes) that
workflow/rules/resources.smk gives one job of every rule of the first size's experiment,
for the first attempt and the third (retries), e.g. with `--max-voxels 513922401` (801^3).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

from common import machine_info  # noqa: E402

CONFIG = """\
# hklflow benchmark experiment written by bench/dryrun.py (raw files are empty stand-ins)
experiment: dryrun
scans_table: config/scans.tsv
instrument:
  detector: {detector}
  wavelength: 0.41328
  polarization_fraction: 0.99
  goniometer:
    scan_axis: [0.0, 1.0, 0.0]
    scan_sense: 1
    offset_axes:
      omega: [1.0, 0.0, 0.0]
      chi: [0.0, 0.0, 1.0]
calibrations:
  ceo2:
    image: raw/calibration/CeO2.h5
    dataset: /entry/data/data
    calibrant: CeO2
    start: {{dist: 0.3, poni1: 0.145, poni2: 0.127, rot1: 0.0, rot2: 0.0, rot3: 0.0}}
samples:
{samples}
reduction:
  transform:
    frames_per_job: {frames_per_job}
    max_voxels: {max_voxels}
"""

SAMPLE = """\
  s{i}:
    space_group: I 4/m m m
    cell: [3.818, 3.818, 13.363, 90, 90, 90]
    parent: {{temperature: {parent}}}
"""


def job_counts(output: str) -> dict:
    """rule -> jobs, from the 'Job stats' table Snakemake prints for a run or dry run (a
    copy of tests/conftest.py's job_counts)."""
    counts = {}
    table = output[output.index("Job stats:"):]
    for line in table.splitlines()[3:]:
        m = re.match(r"^(\w+)\s+(\d+)$", line.strip())
        if not m:
            break
        counts[m.group(1)] = int(m.group(2))
    return counts


def temperatures(n: int) -> list[int]:
    """n temperatures from 300 K down in steps of 10 K (5 K beyond 30 temperatures, 2 K
    beyond 60): distinct labels, parent first, all above 0 K."""
    step = 10 if n <= 30 else 5 if n <= 60 else 2
    if 300 - step * (n - 1) <= 0:
        raise SystemExit(f"{n} temperatures do not fit between 300 K and 0 K")
    return [300 - step * i for i in range(n)]


def write_experiment(d: Path, samples: int, ntemps: int, entries: int, frames: int,
                     frames_per_job: int, detector: str, max_voxels: int = 401 ** 3) -> int:
    """Config, scans table and empty raw files; returns the number of scan entries."""
    (d / "config").mkdir(parents=True, exist_ok=True)
    temps = temperatures(ntemps)
    (d / "config" / "config.yaml").write_text(CONFIG.format(
        detector=detector, frames_per_job=frames_per_job or "null", max_voxels=max_voxels,
        samples="".join(SAMPLE.format(i=i, parent=float(temps[0])) for i in range(samples))))
    rows = ["sample\ttemperature\tentry\tdata\tnframes\tphi_start\tphi_step\tomega\tchi"]
    raw = [d / "raw" / "calibration" / "CeO2.h5"]
    for i in range(samples):
        for t in temps:
            for e in range(1, entries + 1):
                path = f"raw/s{i}/{t}K/f{e}.h5"
                rows.append(f"s{i}\t{t}\tf{e}\t{path}\t{frames}\t0\t0.1\t{-1.0 * (e - 1)}\t{1.5 * (e - 1)}")
                raw.append(d / path)
    (d / "config" / "scans.tsv").write_text("\n".join(rows) + "\n")
    for p in raw:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.touch()
    return len(rows) - 1


def dry_run(d: Path, quiet: bool = False, hooks: bool = True) -> tuple[float, float, str, int]:
    """One `snakemake -n`: (wall seconds, CPU seconds of the process, output, exit status);
    hooks=False: without hklflow's Snakemake hooks (HKLFLOW_SNAKEMAKE_HOOKS=0)."""
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(d),
           "-n", "--cores", "16"] + (["--quiet", "rules"] if quiet else [])
    env = dict(os.environ, HKLFLOW_SNAKEMAKE_HOOKS="1" if hooks else "0")
    c0 = os.times()
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    c1 = os.times()
    cpu = (c1.children_user - c0.children_user) + (c1.children_system - c0.children_system)
    return wall, cpu, r.stdout + r.stderr, r.returncode


def parse_only(d: Path) -> float:
    """Seconds to import hklflow and run the Snakefile's parse-time code (common.smk) alone:
    load_experiment on the config and the scans table, and the job lists."""
    code = (
        "import time, sys; t0 = time.perf_counter()\n"
        "from hklflow.planning.config import load_experiment\n"
        "from hklflow.planning.jobs import transform_frame_ranges\n"
        "t1 = time.perf_counter()\n"
        f"exp = load_experiment({str(d / 'config' / 'config.yaml')!r}, base_dir={str(d)!r})\n"
        "n = sum(len(transform_frame_ranges(exp, s)) for s in exp.scans)\n"
        "print(time.perf_counter() - t1)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(r.stdout.strip().splitlines()[-1])


class _Wildcards(dict):
    """Enough of Snakemake's Wildcards for resources.smk: attributes and keys()."""

    __getattr__ = dict.__getitem__


RULE_WILDCARDS = {  # rule -> how one of its jobs is named (the first scan entry of the table)
    "calibrate_powder": lambda s, r: {"calibration": s.calibration},
    "ingest_scan": lambda s, r: {"sample": s.sample, "temperature": s.temperature_label, "entry": s.entry},
    "find_peaks": lambda s, r: {"sample": s.sample, "temperature": s.temperature_label, "entry": s.entry},
    "index_parent": lambda s, r: {"sample": s.sample, "temperature": s.temperature_label},
    "refine_temperature": lambda s, r: {"sample": s.sample, "temperature": s.temperature_label},
    "refine_detector": lambda s, r: {"sample": s.sample},
    "orientation_table": lambda s, r: {"sample": s.sample},
    "define_grid": lambda s, r: {"sample": s.sample},
    "mask_scan": lambda s, r: {"sample": s.sample, "temperature": s.temperature_label, "entry": s.entry},
    "transform_frames": lambda s, r: {"sample": s.sample, "temperature": s.temperature_label,
                                      "entry": s.entry,
                                      "frames": f"{r[0][0]:05d}-{r[0][1]:05d}"},
    "sum_chunks": lambda s, r: {"sample": s.sample, "temperature": s.temperature_label,
                                "entry": s.entry},
    "merge_entries": lambda s, r: {"sample": s.sample, "temperature": s.temperature_label, "kind": "transform"},
    "symmetrize": lambda s, r: {"sample": s.sample, "temperature": s.temperature_label, "kind": "transform"},
    "temperature_series": lambda s, r: {"sample": s.sample, "kind": "transform"},
    "total_pdf": lambda s, r: {"sample": s.sample, "temperature": s.temperature_label},
    "delta_pdf": lambda s, r: {"sample": s.sample, "temperature": s.temperature_label, "pdf": "pdf"},
    "pdf_temperature_series": lambda s, r: {"sample": s.sample},
    "nxrefine_wrapper": lambda s, r: {"sample": s.sample, "temperature": s.temperature_label},
    "model_inputs": lambda s, r: {"sample": s.sample, "temperature": s.temperature_label,
                                  "volume": "masked_transform_symmetrized"},
    "cut": lambda s, r: {"sample": s.sample, "temperature": s.temperature_label, "cut": "hhl"},
    "cut_temperature_series": lambda s, r: {"sample": s.sample, "cut": "rod"},
    "experiment_page": lambda s, r: {},
}


def resource_table(d: Path, attempts=(1, 3)) -> list[dict]:
    """What workflow/rules/resources.smk asks for one job of every rule of the experiment
    in d (resources.smk is plain Python: run here with the experiment as EXP; its RESOURCES
    maps each rule to its threads and its mem_mb and runtime functions)."""
    from hklflow.planning.config import load_experiment
    from hklflow.planning.jobs import transform_frame_ranges

    exp = load_experiment(d / "config" / "config.yaml", base_dir=d)
    smk = REPO / "workflow" / "rules" / "resources.smk"
    ns = {"EXP": exp, "__name__": "resources_smk"}
    exec(compile(smk.read_text(), str(smk), "exec"), ns)
    scan = exp.scans[0]
    ranges = transform_frame_ranges(exp, scan)
    resources = ns["RESOURCES"]
    missing = sorted(set(resources) - set(RULE_WILDCARDS))
    if missing:
        raise SystemExit(f"{smk} has rules bench/dryrun.py does not know how to name a job "
                         f"of: {missing} (add them to RULE_WILDCARDS)")
    rows = []
    for rule, make in RULE_WILDCARDS.items():
        w = _Wildcards(make(scan, ranges))
        res = resources[rule]
        row = {"rule": rule, "threads": res.threads}
        for a in attempts:
            row[f"mem_mb@{a}"] = res.mem_mb(w, a)
            row[f"runtime_min@{a}"] = res.runtime(w, a)
        if rule == "transform_frames":
            row["note"] = (f"{len(ranges)} jobs of {ranges[0][1] - ranges[0][0]} frames, "
                           f"{ns['transform_substeps'](scan)} sub-steps per frame")
        rows.append(row)
    return rows


def print_resources(d: Path, args) -> int:
    from hklflow.planning.config import load_experiment
    from hklflow.planning.jobs import grid_voxels_bound

    exp = load_experiment(d / "config" / "config.yaml", base_dir=d)
    rows = resource_table(d)
    print(f"resources of one job per rule: {args.detector}, {args.frames} frames of "
          f"{exp.scans[0].angles.step} deg, grid of at most {grid_voxels_bound(exp):,} voxels")
    print(f"  {'rule':<24}{'threads':>8}{'mem_mb':>9}{'min':>6}   {'mem_mb@3':>9}{'min@3':>7}")
    for r in rows:
        print(f"  {r['rule']:<24}{r['threads']:>8}{r['mem_mb@1']:>9}{r['runtime_min@1']:>6}   "
              f"{r['mem_mb@3']:>9}{r['runtime_min@3']:>7}  {r.get('note', '')}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


def parse_size(text: str) -> tuple[int, int, int]:
    try:
        a, b, c = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"a size is SAMPLESxTEMPERATURESxENTRIES, got {text!r}")
    return a, b, c


def time_size(d: Path, size, args) -> dict:
    """Write the experiment of one size into d and time its dry runs."""
    samples, ntemps, entries = size
    n_entries = write_experiment(d, samples, ntemps, entries, args.frames, args.frames_per_job,
                                 args.detector, args.max_voxels)
    parse_s = parse_only(d)
    times = {mode: [] for mode in args.hooks}
    cpus = {mode: [] for mode in args.hooks}
    counts = {}
    for _ in range(args.repeats):
        for mode in args.hooks:  # alternating, so that a change of load hits both
            s, cpu, out, rc = dry_run(d, args.quiet, hooks=mode == "on")
            if rc != 0:
                print(out[-4000:], file=sys.stderr)
                raise SystemExit(f"dry run failed (exit status {rc}, hooks {mode})")
            times[mode].append(s)
            cpus[mode].append(cpu)
            counts = job_counts(out)
    total = counts.get("total", sum(v for k, v in counts.items() if k != "total"))
    return {"experiment": {"samples": samples, "temperatures": ntemps, "entries": entries,
                           "scan_entries": n_entries, "frames": args.frames,
                           "frames_per_job": args.frames_per_job, "detector": args.detector},
            "jobs": total, "jobs_per_rule": counts,
            "hooks": {mode: {"dry_run_s": {"best": round(min(times[mode]), 2),
                                           "worst": round(max(times[mode]), 2),
                                           "all": [round(t, 2) for t in times[mode]]},
                             "dry_run_cpu_s": {"best": round(min(cpus[mode]), 2),
                                               "all": [round(t, 2) for t in cpus[mode]]}}
                      for mode in args.hooks},
            "parse_experiment_s": round(parse_s, 3)}


def time_raw_file_checks(root: Path, n: int, frames: int, file_kb: int, full_mb: int) -> int:
    """--raw-files: the plan's check of ingested entries' raw files, per file (module
    docstring)."""
    from hklflow.raw.rawfiles import RawChangeCheck, fingerprint

    rng = np.random.default_rng(0)
    entries = [[root / f"e{e}" / f"f_{i:05d}.cbf" for i in range(min(frames, n - e * frames))]
               for e in range((n + frames - 1) // frames)]
    for files in entries:
        files[0].parent.mkdir(parents=True)
        for f in files:
            f.write_bytes(rng.bytes(file_kb * 1024))
    recorded = {str(f[0].parent / "scan.nxs"): ([str(x) for x in f], [fingerprint(x) for x in f])
                for f in entries}
    for scan_file in recorded:
        Path(scan_file).write_text("ingested")
    check = RawChangeCheck(lambda scan_file: recorded[str(scan_file)], folder=root / "state")

    def per_file_us(run) -> float:
        t = time.perf_counter()
        for files in entries:
            run(files)
        return (time.perf_counter() - t) / n * 1e6

    def plan(files):
        assert not check.changed(str(files[0].parent), files[0].parent / "scan.nxs", files)

    stat_us = per_file_us(lambda files: [os.stat(f) for f in files])
    first_us = per_file_us(plan)
    later_us = min(per_file_us(plan) for _ in range(3))
    for files in entries:  # a copied experiment: the same bytes, new inodes and times
        for f in files:
            shutil.copy2(f, f.with_suffix(".tmp"))
            os.replace(f.with_suffix(".tmp"), f)
    copied_us = per_file_us(plan)
    big = root / "full.bin"
    with open(big, "wb") as f:
        for _ in range(full_mb):
            f.write(rng.bytes(2**20))
    fingerprint(big, "full")  # into the page cache
    t = time.perf_counter()
    fingerprint(big, "full")
    full_s = time.perf_counter() - t
    t = time.perf_counter()
    for _ in range(100):
        fingerprint(big)
    sampled_ms = (time.perf_counter() - t) / 100 * 1e3
    extrapolated = 1e6 * later_us / 1e6
    print(f"raw-file checks of the plan, {n} frame files of {file_kb} KB in entries of "
          f"{frames} ({os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}):\n"
          f"  os.stat alone (what Snakemake pays per input): {stat_us:.1f} us/file\n"
          f"  first plan after ingest: {first_us:.1f} us/file\n"
          f"  every later plan: {later_us:.1f} us/file -> {extrapolated:.1f} s for 10^6 files\n"
          f"  after a copy (each file hashed again, once): {copied_us:.1f} us/file\n"
          f"fingerprint of a {full_mb} MB file in the page cache: full (every byte) "
          f"{full_s:.2f} s = {full_mb / 1024 / full_s:.2f} GB/s, {full_s / full_mb * 1024:.2f} "
          f"s/GB; sampled {sampled_ms:.3f} ms")
    return 0


def parse_hooks(text: str) -> list[str]:
    modes = [m.strip() for m in text.split(",") if m.strip()]
    if not modes or any(m not in ("on", "off") for m in modes):
        raise argparse.ArgumentTypeError(f"--hooks: on, off or on,off, got {text!r}")
    return list(dict.fromkeys(modes))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=lambda t: [parse_size(x) for x in t.split(",")],
                   default=[(3, 30, 3), (10, 60, 3)],
                   help="experiments to plan, SAMPLESxTEMPERATURESxENTRIES, comma-separated "
                        "(default 3x30x3,10x60x3)")
    p.add_argument("--frames", type=int, default=3650)
    p.add_argument("--frames-per-job", type=int, default=0,
                   help="frames per transform job (0, the default: the config's default split)")
    p.add_argument("--detector", default="PilatusCdTe2M")
    p.add_argument("--max-voxels", type=int, default=401 ** 3, help="grid size bound (default 401^3)")
    p.add_argument("--resources", action="store_true",
                   help="print the resources of one job per rule (of the first size) instead "
                        "of timing dry runs")
    p.add_argument("--raw-files", type=int, default=0,
                   help="time the plan's raw-file check on this many frame files instead")
    p.add_argument("--raw-file-kb", type=int, default=64)
    p.add_argument("--full-mb", type=int, default=1024)
    p.add_argument("--workdir", type=Path, help="folder for the experiments (default: a "
                                                 "temporary one)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--hooks", type=parse_hooks, default=["on", "off"],
                   help="time with hklflow's Snakemake hooks on, off, or both (default on,off: "
                        "HKLFLOW_SNAKEMAKE_HOOKS)")
    p.add_argument("--keep", action="store_true", help="keep the temporary experiments")
    p.add_argument("--quiet", action="store_true",
                   help="time `snakemake -n --quiet rules` (no per-job listing) instead")
    p.add_argument("--json", type=Path, help="write the report here as JSON")
    args = p.parse_args(argv)

    tmp = None
    if args.workdir:
        root = args.workdir.resolve()
        if any((root / f"{a}x{b}x{c}" / "results").exists() for a, b, c in args.sizes):
            p.error(f"{root} has results/: use an empty or benchmark-only directory")
    else:
        tmp = root = Path(tempfile.mkdtemp(prefix="hklflow-dryrun-"))
    try:
        if args.raw_files:
            return time_raw_file_checks(root, args.raw_files, args.frames, args.raw_file_kb,
                                        args.full_mb)
        if args.resources:
            d = root / "{}x{}x{}".format(*args.sizes[0])
            a, b, c = args.sizes[0]
            write_experiment(d, a, b, c, args.frames, args.frames_per_job, args.detector,
                             args.max_voxels)
            return print_resources(d, args)
        info = machine_info()
        results = [time_size(root / "{}x{}x{}".format(*size), size, args)
                   for size in args.sizes]
        load_end = [round(x, 2) for x in os.getloadavg()]
        report = {"command": "snakemake -s Snakefile --directory DIR -n --cores 16"
                             + (" --quiet rules" if args.quiet else ""),
                  "sizes": results, "machine": {**info, "load_average_at_end": load_end}}
        lines = [f"dry runs ({args.frames} frames per entry, "
                 f"{args.frames_per_job or 'the default'} frames per transform job, "
                 f"{args.detector}; best of {args.repeats}, each a new process: interpreter "
                 "start and imports included)", ""]
        rules = list(results[-1]["jobs_per_rule"])
        names = ["{samples}x{temperatures}x{entries}".format(**r["experiment"]) for r in results]
        head = f"  {'rule':<20}" + "".join(f"{n:>12}" for n in names)
        lines.append(head)
        for rule in rules:
            lines.append(f"  {rule:<20}" + "".join(f"{r['jobs_per_rule'].get(rule, 0):>12}"
                                                   for r in results))
        lines.append("")
        for r in results:
            e = r["experiment"]
            lines.append(
                f"{e['samples']} samples x {e['temperatures']} temperatures x {e['entries']} "
                f"entries ({e['scan_entries']} scan entries): {r['jobs']} jobs, reading config "
                f"+ scans table {r['parse_experiment_s']:.3f} s")
            for mode, h in r["hooks"].items():
                lines.append(
                    f"  hooks {mode:<3}: snakemake -n best {h['dry_run_s']['best']:.2f} s "
                    f"(worst {h['dry_run_s']['worst']:.2f}; CPU {h['dry_run_cpu_s']['best']:.2f} s)")
        lines.append(f"load average: start {info['load_average_at_start']}, end {load_end} "
                     f"({info['cores_usable']} usable cores)")
        print("\n".join(lines))
        if args.json:
            args.json.write_text(json.dumps(report, indent=1))
        return 0
    finally:
        if tmp is not None and not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp is not None:
            print(f"experiments kept in {tmp}")


if __name__ == "__main__":
    sys.exit(main())
