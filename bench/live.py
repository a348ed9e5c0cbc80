#!/usr/bin/env python
"""Live reduction: how far `hklflow watch` lags behind an acquisition.

    python bench/live.py [--preset demo] [--format hdf5] [--fps 10,30,100] [--pause 5]
                         [--cores 2] [--config KEY=VALUE ...] [--workdir DIR] [--keep]
                         [--json FILE] [--png FILE]

For every frame rate: `hklflow simulate DIR --acquire --fps F` writes the experiment in real
time (every frame rendered first, then written on the clock, temperatures one after
another with --pause seconds between them) while `hklflow watch DIR --exit-when-idle`
runs beside it on the same machine.  From the watcher's live/history.jsonl it prints:

* per workflow run: when it ended (s after the first frame landed), its length, the frames
  of every scan it reduced, and its preview lag: how long before the run's end the newest
  frame it included had landed (the most over its scans); its CPU (Snakemake and its jobs),
  and the temperatures it handed a new provisional orientation (hklflow.live.orientation);
* per temperature: the final lag, from its last frame landing to its final results;
* the most preview lag and final lag, against the goal (60 s each), and the backlog at
  the end of the acquisition.

Then it checks that the watched results are the batch results: `snakemake -n` with the
experiment's own scans table plans nothing; and it runs the batch workflow on a copy of the
acquired experiment (config and raw files) with the same cores: the CPU of the watcher with
every job it ran (its process tree, os.wait4) against the batch run's, and how much of it
is the watcher's own process (its looks at the raw files and its status pages); the CPU of
its jobs per rule, from the warm-start server's log (a line a job), and of it in the runs
that made a final.  --png
draws the lag over time (one line per frame rate).  --config sets live.* keys of the
experiment's config (e.g. live.preview_every_seconds=20).
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

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

from common import machine_info  # noqa: E402

GOAL_S = 60.0
HKLFLOW = [sys.executable, "-m", "hklflow"]


def set_config(path: Path, settings: list[str]) -> None:
    cfg = yaml.safe_load(path.read_text())
    for item in settings:
        key, _, value = item.partition("=")
        node = cfg
        *parents, last = key.split(".")
        for k in parents:
            node = node.setdefault(k, {})
        node[last] = yaml.safe_load(value)
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))


def wait_for(path: Path, proc: subprocess.Popen, what: str) -> None:
    while not path.exists():
        if proc.poll() is not None:
            raise SystemExit(f"{what} stopped (rc {proc.returncode}) before {path} appeared")
        time.sleep(0.5)


def wait_with_cpu(proc: subprocess.Popen) -> tuple[int, float]:
    """(exit code, CPU seconds of the process and every descendant it waited for)."""
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, usage.ru_utime + usage.ru_stime


def transform_seconds(expdir: Path) -> dict:
    """SAMPLE/TLABEL -> wall seconds of its transform jobs (their benchmark files)."""
    out = {}
    for tsv in (expdir / "benchmarks" / "transform_frames").glob("*/*/*/*.tsv"):
        rows = tsv.read_text().splitlines()
        key = f"{tsv.parts[-4]}/{tsv.parts[-3]}"
        out[key] = round(out.get(key, 0.0) + float(rows[1].split("\t")[0]), 1)
    return out


JOB_LINE = re.compile(r"^(\S+ \S+) job (\S+): rc (-?\d+), cpu ([\d.]+) s, wall ([\d.]+) s$")


def rule_cpu(expdir: Path, history: list[dict]) -> dict:
    """rule -> {"jobs", "cpu_s", "final_cpu_s"}: the CPU of the watcher's jobs per rule
    (the warm-start server's log, a line a job), and of it in the runs that made a final;
    "(snakemake and the rest)": the runs' CPU less their jobs'."""
    log = expdir / "live" / "logs" / "warm-starts.log"
    final_runs = [(h["start"], h["end"] + 2) for h in history if h["final_lag_s"]]
    out = {}
    for line in (log.read_text().splitlines() if log.exists() else ()):
        m = JOB_LINE.match(line)
        if not m:
            continue
        when = time.mktime(time.strptime(m[1], "%Y-%m-%d %H:%M:%S"))
        parts = Path(m[2]).parts
        rule = parts[1] if parts[0] == "logs" and len(parts) > 1 else m[2]
        row = out.setdefault(rule, {"jobs": 0, "cpu_s": 0.0, "final_cpu_s": 0.0})
        row["jobs"] += 1
        row["cpu_s"] += float(m[4])
        if any(a <= when <= b for a, b in final_runs):
            row["final_cpu_s"] += float(m[4])
    jobs = sum(r["cpu_s"] for r in out.values())
    final_jobs = sum(r["final_cpu_s"] for r in out.values())
    out["(snakemake and the rest)"] = {
        "jobs": len(history), "cpu_s": sum(h["cpu_s"] for h in history) - jobs,
        "final_cpu_s": sum(h["cpu_s"] for h in history if h["final_lag_s"]) - final_jobs}
    for row in out.values():
        row["cpu_s"], row["final_cpu_s"] = round(row["cpu_s"], 1), round(row["final_cpu_s"], 1)
    return dict(sorted(out.items(), key=lambda kv: -kv[1]["cpu_s"]))


def batch_run(exp: Path, workdir: Path, cores: str) -> tuple[int, float, float, dict]:
    """The batch workflow on a copy of the acquired experiment (its config and raw files):
    (exit code, CPU seconds of Snakemake and its jobs, wall seconds, transform_seconds)."""
    copy = workdir / f"{exp.name}_batch"
    if copy.exists():
        shutil.rmtree(copy)
    copy.mkdir()
    for part in ("config", "raw"):
        shutil.copytree(exp / part, copy / part)
    t0 = time.time()
    with open(workdir / f"{exp.name}.batch.log", "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"),
                                 "-d", str(copy), "--cores", str(cores)],
                                stdout=log, stderr=subprocess.STDOUT)
        rc, cpu = wait_with_cpu(proc)
    seconds = time.time() - t0
    transforms = transform_seconds(copy)
    shutil.rmtree(copy, ignore_errors=True)
    return rc, cpu, seconds, transforms


def run_one(args, fps: float, workdir: Path) -> dict:
    exp = workdir / f"{args.preset}_{args.format}_{fps:g}fps"
    if exp.exists():
        shutil.rmtree(exp)
    acq_log, watch_log = open(workdir / f"{exp.name}.acquire.log", "w"), \
        open(workdir / f"{exp.name}.watch.log", "w")
    acquire = subprocess.Popen(HKLFLOW + ["simulate", str(exp), "--preset", args.preset,
                                          "--format", args.format, "--acquire", "--fps", str(fps),
                                          "--pause", str(args.pause)],
                               stdout=acq_log, stderr=subprocess.STDOUT)
    # the config is written before any frame: the live settings go in before watching
    wait_for(exp / "config" / "config.yaml", acquire, "the acquisition")
    time.sleep(0.5)
    if args.config:
        set_config(exp / "config" / "config.yaml", args.config)
    watch = subprocess.Popen(HKLFLOW + ["watch", str(exp), "--cores", str(args.cores),
                                        "--exit-when-idle", "10"],
                             stdout=watch_log, stderr=subprocess.STDOUT)
    rc_acquire = acquire.wait()
    acquired = time.time()
    rc_watch, cpu_watch = wait_with_cpu(watch)
    done = time.time()
    history = [json.loads(x) for x in (exp / "live" / "history.jsonl").read_text().splitlines()]
    state = json.loads((exp / "live" / "state.json").read_text())
    first_landing = min(s["landings"][0][0] for s in state["scans"] if s["landings"])
    last_landing = max(s["landings"][-1][0] for s in state["scans"] if s["landings"])
    runs = [{"run": h["run"], "end_s": round(h["end"] - first_landing, 1),
             "seconds": round(h["end"] - h["start"], 1), "rc": h["rc"],
             "frames": h["frames"], "lag_s": max(h["lag_s"].values(), default=0.0),
             "final_lag_s": h["final_lag_s"], "cpu_s": h["cpu_s"],
             "reoriented": sorted(t for t, o in h["orientations"].items() if o["handed"])}
            for h in history]
    finals = {}
    for h in history:
        for t, lag in h["final_lag_s"].items():
            finals.setdefault(t, lag)  # the run that first made it final
    batch = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"),
                            "-d", str(exp), "-n", "--cores", "1", "--quiet", "rules"],
                           capture_output=True, text=True)
    batch_equal = batch.returncode == 0 and "Nothing to be done" in (batch.stdout + batch.stderr)
    rc_batch, cpu_batch, batch_s, batch_transforms = batch_run(exp, workdir, args.cores)
    result = {"fps": fps, "rc_acquire": rc_acquire, "rc_watch": rc_watch,
              "acquisition_s": round(last_landing - first_landing, 1),
              "backlog_after_acquisition_s": round(done - acquired, 1),
              "runs": runs, "final_lag_s": finals,
              "max_preview_lag_s": max((r["lag_s"] for r in runs), default=None),
              "max_final_lag_s": max(finals.values(), default=None),
              "batch_plans_nothing": batch_equal, "rc_batch": rc_batch,
              "watcher_cpu_s": round(cpu_watch, 1), "batch_cpu_s": round(cpu_batch, 1),
              # (the watcher's own: its looks at the raw files, status pages, decisions)
              "runs_cpu_s": round(sum(x["cpu_s"] for x in runs), 1),
              "watcher_own_cpu_s": round(cpu_watch - sum(x["cpu_s"] for x in runs), 1),
              "batch_s": round(batch_s, 1),
              # SAMPLE/TLABEL -> wall seconds of its transform jobs in the batch run
              "batch_transform_s": batch_transforms,
              "rules": rule_cpu(exp, history),
              "watcher_over_batch_cpu": round(cpu_watch / cpu_batch, 2) if cpu_batch else None}
    if not args.keep:
        shutil.rmtree(exp, ignore_errors=True)
    return result


def plot(results: list[dict], png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for r in results:
        xs = [x["end_s"] for x in r["runs"]]
        ys = [x["lag_s"] for x in r["runs"]]
        ax.plot(xs, ys, "o-", label=f"{r['fps']:g} frames/s")
    ax.axhline(GOAL_S, color="grey", ls="--", lw=1, label=f"goal {GOAL_S:g} s")
    ax.set_xlabel("time since the first frame landed (s)")
    ax.set_ylabel("preview lag behind its newest frame (s)")
    ax.set_title("hklflow watch beside a simulated acquisition")
    ax.legend()
    fig.tight_layout()
    fig.savefig(png, dpi=100)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="demo")
    p.add_argument("--format", default="hdf5", choices=["hdf5", "eiger", "cbf"])
    p.add_argument("--fps", default="10,30,100")
    p.add_argument("--pause", type=float, default=5.0)
    p.add_argument("--cores", default="2")
    p.add_argument("--config", nargs="*", default=[], metavar="KEY=VALUE")
    p.add_argument("--workdir", type=Path, default=None)
    p.add_argument("--keep", action="store_true")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--png", type=Path, default=None)
    args = p.parse_args(argv)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="hklflow_live_"))
    workdir.mkdir(parents=True, exist_ok=True)
    info = machine_info()
    results = []
    for fps in [float(f) for f in args.fps.split(",")]:
        r = run_one(args, fps, workdir)
        results.append(r)
        print(f"\n== {args.preset} ({args.format}) at {fps:g} frames/s: acquisition "
              f"{r['acquisition_s']} s, watcher done {r['backlog_after_acquisition_s']} s after it")
        print(f"{'run':>4} {'end s':>7} {'length s':>9} {'lag s':>6} {'CPU s':>6}  frames")
        for x in r["runs"]:
            frames = ", ".join(f"{k.split('/', 1)[1]} {v}" for k, v in x["frames"].items())
            print(f"{x['run']:>4} {x['end_s']:>7} {x['seconds']:>9} {x['lag_s']:>6} "
                  f"{x['cpu_s']:>6}  {frames}" + ("" if x["rc"] == 0 else "  (FAILED)")
                  + "".join(f"; {t}: new orientation" for t in x["reoriented"]))
        for t, lag in r["final_lag_s"].items():
            transform = r["batch_transform_s"].get(t, 0.0) / float(args.cores)
            print(f"final {t}: {lag} s after its last frame (the batch transform of {t}: "
                  f"{transform:.1f} s on {args.cores} cores; goal: final lag <= that + "
                  f"{GOAL_S:g} s)")
        print(f"most preview lag {r['max_preview_lag_s']} s, most final lag "
              f"{r['max_final_lag_s']} s (goal {GOAL_S:g} s each); batch plans nothing after "
              f"the watcher: {r['batch_plans_nothing']}")
        print(f"CPU: the watcher and its jobs {r['watcher_cpu_s']} s, the batch run of the same "
              f"data {r['batch_cpu_s']} s ({r['batch_s']} s on {args.cores} cores): "
              f"{r['watcher_over_batch_cpu']}x (goal <= 2x); of the watcher's: its runs "
              f"{r['runs_cpu_s']} s, its own looks and pages {r['watcher_own_cpu_s']} s")
        print("the watcher's CPU s per rule (jobs; of it in the runs that made a final): "
              + ", ".join(f"{rule} {x['jobs']}x {x['cpu_s']} ({x['final_cpu_s']})"
                          for rule, x in r["rules"].items() if x["cpu_s"] >= 0.5))
    out = {"machine": info, "preset": args.preset, "format": args.format,
           "config": args.config, "results": results}
    if args.png:
        plot(results, args.png)
    text = json.dumps(out, indent=1)
    if args.json:
        args.json.write_text(text)
    else:
        print(text)
    ok = all(r["rc_acquire"] == 0 and r["rc_watch"] == 0 and r["batch_plans_nothing"]
             and r["rc_batch"] == 0 for r in results)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
