"""Do the peak search and the transform use the cores they are given?  (issue 15)

    python bench/threads.py [--experiment bench/.data/pipeline_2m_400f] [--repeats 2]
                            [--full-frames 3650] [--json FILE]

Runs the real steps `find_peaks` and `transform_frames` of entry f1 of an experiment that
bench/pipeline.py has reduced (400 frames of a Pilatus CdTe 2M; their command lines are
taken from `snakemake -n -p --forcerun`, outputs go to a temporary folder), alternating:
  --threads 1 pinned to one core   what a `threads: 1` job gets when Snakemake runs another
                                   job on the other core (the comparison the goal is about);
  --threads 2 pinned to two cores  a `threads: 2` job;
  --threads 1 pinned to two cores  for reference: a one-thread job on an idle machine (it
                                   reads its frames itself since fd72d4b; before, its
                                   reader thread had the second core).
Prints per step the best wall time of each, the speed-up of 2 threads over 1 (goal >= 1.6
on 2 cores), the CPU time and the peak memory (the `resources:` line every step logs last),
the same for the pass over the frames alone (read + search / transform, from the step's
log), and the job's wall time extrapolated to --full-frames frames (its fixed costs -
start, detector model, writing, picture, ~4 s - plus the pass scaled by the frames): with
400 frames the fixed costs are a large part of a job, with 3650 frames a small one.  The
frames are read once before timing (page cache).
"""
from __future__ import annotations

import argparse
import os
import re
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

from common import emit, machine_info, machine_line  # noqa: E402

STEPS = {"find_peaks": "results/lsco/300K/f1/peaks.nxs",
         "transform_frames": "results/lsco/300K/f1/transform.nxs"}
RESOURCES = re.compile(r"resources: cpu_s=([\d.]+) start_cpu_s=([\d.]+) children_cpu_s=([\d.]+) "
                       r"wall_s=([\d.]+) peak_rss_mb=(\d+)")
GOAL = 1.6
# the pass over the frames (read + work), from the steps' own log lines: fixed costs
# (imports, detector model, writing, pictures) are apart
PASS = {"find_peaks": re.compile(r"strong pixels in (\d+) frames; [\d.]+ s on \d+ thread\(s\) "
                                r"\(the pass over the frames ([\d.]+) s\)"),
        "transform_frames": re.compile(r"(\d+) frames in ([\d.]+) s \(kernel")}
# (label, --threads, which of the two cores): the runs compared
RUNS = (("1 thread, 1 core", 1, "first"), ("2 threads, 2 cores", 2, "both"),
        ("1 thread, 2 cores", 1, "both"))


def command_of(d: Path, rule: str, target: str) -> list[str]:
    """The step's shell command for entry f1, as Snakemake would run it."""
    out = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"),
                          "-d", str(d), "-n", "-p", "--forcerun", rule, "--", target],
                         capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        if line.startswith(f"Shell command: hklflow {rule} ") and "/f1/" in line:
            return shlex.split(line.removeprefix("Shell command: ").split(" > ")[0])
    raise SystemExit(f"no {rule} command for f1 in {d}: has bench/pipeline.py reduced it?")


def redirect_outputs(cmd: list[str], tmp: Path) -> list[str]:
    """The command with every --out/--png path moved into tmp."""
    out, take = [], False
    for a in cmd:
        if take and not a.startswith("--"):
            a = str(tmp / Path(a).name)
        elif a.startswith("--"):
            take = a in ("--out", "--png")
        out.append(a)
    return out


def run_once(d: Path, rule: str, cmd: list[str], threads: int, cores: str) -> dict:
    cmd = [a if prev != "--threads" else str(threads) for prev, a in zip([""] + cmd, cmd)]
    r = subprocess.run(["taskset", "-c", cores, sys.executable, "-m", "hklflow"] + cmd[1:],
                       cwd=d, capture_output=True, text=True)
    found = RESOURCES.findall(r.stdout + r.stderr)
    if r.returncode or not found:
        raise SystemExit(f"{' '.join(cmd[:2])} failed:\n{(r.stdout + r.stderr)[-3000:]}")
    cpu, start, children, wall, peak = (float(v) for v in found[-1])
    frames_pass = PASS[rule].findall(r.stdout + r.stderr)
    if not frames_pass:
        raise SystemExit(f"{' '.join(cmd[:2])}: no pass time in its log (has the log line changed?)")
    frames, pass_s = int(frames_pass[-1][0]), float(frames_pass[-1][1])
    return {"wall_s": wall, "pass_s": pass_s, "frames": frames, "cpu_s": cpu + children,
            "peak_rss_mb": peak}


def extrapolated(run: dict, frames: int) -> float:
    """The job's wall time with `frames` frames: its fixed part plus the pass scaled."""
    return run["wall_s"] - run["pass_s"] + run["pass_s"] * frames / run["frames"]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--experiment", type=Path, default=HERE / ".data" / "pipeline_2m_400f")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--cores", default="0,1", help="the two cores to pin to (taskset -c)")
    p.add_argument("--full-frames", type=int, default=3650,
                   help="frames of the entry the job time is extrapolated to")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    d = args.experiment.resolve()
    from hklflow.raw.frames import open_frames  # the frames into the page cache

    with open_frames(str(d / "raw/lsco/300K/f1.h5")) as st:
        for _ in st.iter_chunks(16, reuse_buffer=True):
            pass
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for rule, target in STEPS.items():
            cmd = redirect_outputs(command_of(d, rule, target), Path(tmp))
            runs = {label: [] for label, _, _ in RUNS}
            for _ in range(args.repeats):
                for label, threads, which in RUNS:
                    cores = args.cores.split(",")[0] if which == "first" else args.cores
                    runs[label].append(run_once(d, rule, cmd, threads, cores))
                    print(f"{rule} --threads {threads} on cores {cores}: {runs[label][-1]}",
                          file=sys.stderr, flush=True)
            best = {k: min(v, key=lambda r: r["wall_s"]) for k, v in runs.items()}
            fast = {k: min(v, key=lambda r: r["pass_s"]) for k, v in runs.items()}
            full = {k: extrapolated(best[k], args.full_frames) for k in runs}
            one, two = RUNS[0][0], RUNS[1][0]
            results[rule] = {"best": best, "runs": runs, "full_frames_wall_s": full,
                             "speedup": best[one]["wall_s"] / best[two]["wall_s"],
                             "pass_speedup": fast[one]["pass_s"] / fast[two]["pass_s"],
                             "full_speedup": full[one] / full[two],
                             "pass_s": {k: fast[k]["pass_s"] for k in runs}}
    report = {"machine": machine_info(), "experiment": str(d), "goal_speedup": GOAL,
              "steps": results, "load_after": os.getloadavg()}
    lines = [machine_line(report["machine"]),
             f"steps on entry f1 of {d.name}, pinned to cores {args.cores}, best of "
             f"{args.repeats}; goal >= {GOAL}x with 2 threads on 2 cores over 1 thread on 1 core",
             "", f"{'step':<18}{'run':<20}{'job s':>8}{'pass s':>8}{'CPU-s':>7}{'peak MB':>9}"
             f"{f'job s, {args.full_frames} frames':>22}"]
    for rule, v in results.items():
        for label, _, _ in RUNS:
            b = v["best"][label]
            lines.append(f"{rule:<18}{label:<20}{b['wall_s']:>8.2f}{v['pass_s'][label]:>8.2f}"
                         f"{b['cpu_s']:>7.1f}{b['peak_rss_mb']:>9.0f}"
                         f"{v['full_frames_wall_s'][label]:>22.1f}")
        lines.append(f"{'':<18}{'speed-up 2 vs 1':<20}{v['speedup']:>7.2f}x{v['pass_speedup']:>7.2f}x"
                     f"{'':>16}{v['full_speedup']:>21.2f}x")
    lines.append("job: the whole step (start, detector model, writing, picture included); pass: "
                 "its pass over the frames (read + search or transform), from its log; "
                 f"job s, {args.full_frames} frames: the fixed part + the pass scaled")
    emit(report, "\n".join(lines), args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
