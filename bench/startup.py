#!/usr/bin/env python
"""What each job pays before its step starts: the interpreter and the step's imports.

    python bench/startup.py [--steps sum_chunks,total_pdf] [--repeats 5]
                            [--baseline OTHER_CHECKOUT/src] [--json FILE]

Every Snakemake job is a new process, `hklflow <step> ...`: Python starts, the command line
(hklflow.commands.cli) and the step's module (hklflow/steps/<step>.py) are imported, and
only then does the step run.  Each step logs that cost as `start_cpu_s` on its last line
(hklflow/steps/_run.py).  This script measures it for every step the command line
dispatches, each in a fresh process as the command starts one (the garbage collector off
and BLAS told one thread, as hklflow.commands.cli.main does; the step's `main` looked up),
and prints the CPU seconds (user + system, not wall: the machine is shared) at the moment
the step would start, the least of --repeats runs, and the spread.  "(cli only)" is the
floor: Python and the command line, no step.  Bytecode is written and used (a warm-up
import of every step first), as in a job, whatever PYTHONDONTWRITEBYTECODE says here.

`--baseline SRC` measures another checkout's `src` (e.g. a worktree at the commit before a
change) in the same runs, alternating with this one's, and prints both, the difference of
the least and of the medians (on a loaded machine the least of a few runs moves by ~0.1
CPU-s, the median less), and the sums weighted by the demo's jobs per rule (DEMO_JOBS).

`--warm` measures instead what a whole `hklflow STEP --help` costs, started anew and started
warm (hklflow.commands.warm_starts, as hklflow watch's jobs: the command's process and the
server's fork that runs it), alternating, and the server's own start.  A real job saves more
where it draws or reads volumes: matplotlib and the compiled codec are loaded in the server.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

from common import emit, machine_info, machine_line, say  # noqa: E402

# the demo's jobs per rule (`hklflow demo`: Snakemake's job table, 77 jobs)
DEMO_JOBS = {"ingest_scan": 9, "find_peaks": 9, "mask_scan": 9, "transform_frames": 9,
             "sum_chunks": 9, "merge_entries": 6, "symmetrize": 6, "refine_temperature": 3,
             "scale_entries": 3, "total_pdf": 3, "delta_pdf": 3, "temperature_series": 2,
             "calibrate_powder": 1, "define_grid": 1, "index_parent": 1,
             "orientation_table": 1, "pdf_temperature_series": 1, "experiment_page": 1}
CLI_ONLY = "(cli only)"

# run in the child: what `hklflow STEP` does before the step's run_step starts its clock
CHILD = """\
import gc, sys
gc.disable()
import importlib, resource
import hklflow.commands.cli as cli
step = sys.argv[1]
if step in cli.COMMANDS:
    module, function = cli.COMMANDS[step][0].split(":")
    getattr(importlib.import_module(module), function)
r = resource.getrusage(resource.RUSAGE_SELF)
print(r.ru_utime + r.ru_stime, cli.__file__)
"""


def steps_of(src: Path) -> list[str]:
    """The step commands of the checkout SRC's command line (hklflow.commands.cli.STEPS)."""
    code = "import hklflow.commands.cli as c; print(*sorted(c.STEPS))"
    out = subprocess.run([sys.executable, "-c", code], env=child_env(src), check=True,
                         capture_output=True, text=True).stdout
    return out.split()


def child_env(src: Path) -> dict:
    """As a job runs: SRC's hklflow, BLAS on one thread, bytecode cached (__pycache__)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    return {**env, "PYTHONPATH": str(src), "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def warm_up(src: Path, steps: list[str]) -> None:
    """Every step's modules imported once, unmeasured: their bytecode written, the files in
    the page cache."""
    code = ("import importlib, sys, hklflow.commands.cli as c\n"
            "for s in sys.argv[1:]:\n"
            "    importlib.import_module(c.COMMANDS[s][0].split(':')[0])\n")
    subprocess.run([sys.executable, "-c", code, *steps], env=child_env(src), check=True,
                   timeout=600)


def start_cpu(src: Path, step: str) -> float:
    """CPU seconds of a fresh process once it could start STEP, with SRC's hklflow."""
    r = subprocess.run([sys.executable, "-c", CHILD, step], env=child_env(src),
                       capture_output=True, text=True, timeout=300)
    if r.returncode:
        raise SystemExit(f"{step} ({src}): {r.stderr[-2000:]}")
    cpu, where = r.stdout.split()
    if not Path(where).resolve().is_relative_to(src.resolve()):
        raise SystemExit(f"{step}: hklflow imported from {where}, not {src}")
    return float(cpu)


def help_cpu(src: Path, step: str, server=None) -> float:
    """CPU seconds of `hklflow STEP --help` (SRC's hklflow): its process, and with a
    warm-start server the fork that ran it (the server's CPU before and after)."""
    from hklflow.commands.warm_client import WARM_STARTS_ENV

    env = {k: v for k, v in child_env(src).items() if k != WARM_STARTS_ENV}
    if server is not None:
        env[WARM_STARTS_ENV] = server.path
        before = server.cpu_seconds()
    proc = subprocess.Popen([sys.executable, "-m", "hklflow", step, "--help"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    if status:
        raise SystemExit(f"hklflow {step} --help: exit status {status}")
    return usage.ru_utime + usage.ru_stime + (server.cpu_seconds() - before if server else 0.0)


def warm_starts(src: Path, steps: list[str], repeats: int, json_file) -> int:
    """--warm: each step's `--help` started anew and warm, alternating; the least of
    `repeats` and the sums weighted by the demo's jobs."""
    import tempfile

    from hklflow.commands.warm_starts import WarmStartServer

    os.environ.update(child_env(src))  # (the server: SRC's hklflow)
    with tempfile.TemporaryDirectory() as tmp:
        server = WarmStartServer(Path(tmp) / "warm-starts.log")
        server_start = server.cpu_seconds()
        runs = {how: {s: [] for s in steps} for how in ("anew", "warm")}
        try:
            for i in range(repeats):
                say(f"round {i + 1}/{repeats}")
                for step in steps:
                    for how in (("anew", "warm") if i % 2 == 0 else ("warm", "anew")):
                        runs[how][step].append(
                            help_cpu(src, step, server if how == "warm" else None))
        finally:
            server.stop()
    best = {how: {s: min(v) for s, v in r.items()} for how, r in runs.items()}
    lines = [machine_line(machine_info()),
             f"CPU-s of `hklflow STEP --help`: least of {repeats}, started anew and warm "
             f"(the command + the server's fork); the server's own start: {server_start:.2f}",
             "", "| step | demo jobs | anew | warm | saved |", "|---|---|---|---|---|"]
    for step in steps:
        a, w = best["anew"][step], best["warm"][step]
        lines.append(f"| {step} | {DEMO_JOBS.get(step, '')} | {a:.2f} | {w:.2f} | {a - w:.2f} |")
    jobs = sum(n for s, n in DEMO_JOBS.items() if s in steps)
    if jobs:
        lines += ["", f"the demo's {jobs} jobs of these steps: anew {weighted(best['anew']):.1f}"
                      f" CPU-s, warm {weighted(best['warm']):.1f} CPU-s"]
    emit({"machine": machine_info(), "repeats": repeats, "server_start_cpu_s": server_start,
          "best_cpu_s": best, "runs_cpu_s": runs, "demo_jobs": DEMO_JOBS},
         "\n".join(lines), json_file)
    return 0


def weighted(best: dict) -> float:
    """The start CPU of the demo's jobs, summed (its rules' jobs times their step's)."""
    return sum(n * best[step] for step, n in DEMO_JOBS.items() if step in best)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", default="", help="comma-separated steps (default: every step)")
    p.add_argument("--repeats", type=int, default=5, help="runs per step and checkout")
    p.add_argument("--src", type=Path, default=REPO / "src", help="the checkout measured")
    p.add_argument("--baseline", type=Path, default=None, metavar="SRC_DIR",
                   help="another checkout's src, measured alternating with --src")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--warm", action="store_true",
                   help="each step's --help started anew and warm (hklflow watch's jobs)")
    args = p.parse_args(argv)
    if args.warm:
        steps = args.steps.split(",") if args.steps else steps_of(args.src)
        warm_up(args.src, steps)
        return warm_starts(args.src, steps, args.repeats, args.json)

    trees = {"after": args.src} | ({"before": args.baseline} if args.baseline else {})
    steps = args.steps.split(",") if args.steps else steps_of(args.src)
    for src in trees.values():
        warm_up(src, steps)
    steps = [CLI_ONLY, *steps]
    runs = {name: {s: [] for s in steps} for name in trees}
    for i in range(args.repeats):
        say(f"round {i + 1}/{args.repeats}")
        for step in steps:
            for name in (list(trees) if i % 2 == 0 else list(trees)[::-1]):
                runs[name][step].append(start_cpu(trees[name], step))
    best = {name: {s: min(v) for s, v in r.items()} for name, r in runs.items()}
    median = {name: {s: statistics.median(v) for s, v in r.items()} for name, r in runs.items()}

    machine = machine_info()
    head = ["step", "demo jobs"] + (["before", "after", "saved", "saved, medians"]
                                    if args.baseline else ["start CPU-s"]) + ["spread"]
    lines = [machine_line(machine),
             f"start CPU-s of a job: least of {args.repeats} fresh processes (spread: "
             "the largest less the least, of this checkout's runs)", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for step in steps:
        a = best["after"][step]
        cells = [step, str(DEMO_JOBS.get(step, "")) if step != CLI_ONLY else ""]
        if args.baseline:
            b = best["before"][step]
            cells += [f"{b:.2f}", f"{a:.2f}", f"{b - a:+.2f}",
                      f"{median['before'][step] - median['after'][step]:+.2f}"]
        else:
            cells += [f"{a:.2f}"]
        cells.append(f"{max(runs['after'][step]) - a:.2f}")
        lines.append("| " + " | ".join(cells) + " |")
    jobs = sum(n for s, n in DEMO_JOBS.items() if s in best["after"])
    summary = {name: round(weighted(b), 2) for name, b in best.items()}
    summary_median = {name: round(weighted(b), 2) for name, b in median.items()}
    if jobs:
        lines.append("")
        for what, figures in (("least", summary), ("medians", summary_median)):
            lines.append(f"the demo's {jobs} jobs of these steps, {what}: " + ", ".join(
                f"{name} {v:.1f} CPU-s ({v / jobs:.2f} per job)" for name, v in figures.items()))
    report = {"machine": machine, "repeats": args.repeats,
              "trees": {name: str(t) for name, t in trees.items()},
              "best_cpu_s": best, "runs_cpu_s": runs,
              "median_cpu_s": median,
              "demo_jobs": DEMO_JOBS, "demo_start_cpu_s": summary,
              "demo_start_cpu_s_medians": summary_median}
    emit(report, "\n".join(lines), args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
