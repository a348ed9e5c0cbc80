"""Do the peak search and the transform use the cores they are given?  (issue 15)

    python bench/threads.py [--experiment bench/.data/pipeline_2m_400f] [--repeats 2]
                            [--json FILE]

Runs the real steps `find_peaks` and `transform_frames` of entry f1 of an experiment that
bench/pipeline.py has reduced (400 frames of a Pilatus CdTe 2M; their command lines are
taken from `snakemake -n -p --forcerun`, outputs go to a temporary folder) with
`--threads 1` and `--threads 2`, each run pinned to the same two cores, alternating, and
prints per step the best wall time of each, the speed-up (goal >= 1.6 on 2 cores), the CPU
time and the peak memory (the `resources:` line every step logs last), and the same for
the pass over the frames alone (read + search / transform, from the step's log): with 400
frames a job's fixed costs (start, detector model, writing, picture: ~4 s) are a large
part, with 3650 frames a small one.  The frames are
read once before timing (page cache).
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

from common import emit, machine_info  # noqa: E402

STEPS = {"find_peaks": "results/lsco/300K/f1/peaks.nxs",
         "transform_frames": "results/lsco/300K/f1/transform.nxs"}
RESOURCES = re.compile(r"resources: cpu_s=([\d.]+) start_cpu_s=([\d.]+) children_cpu_s=([\d.]+) "
                       r"wall_s=([\d.]+) peak_rss_mb=(\d+)")
GOAL = 1.6
# the pass over the frames (read + work), from the steps' own log lines: fixed costs
# (imports, detector model, writing, pictures) are apart
PASS = {"find_peaks": re.compile(r"strong pixels in \d+ frames; ([\d.]+) s on"),
        "transform_frames": re.compile(r"\d+ frames in ([\d.]+) s \(kernel")}


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
    return {"wall_s": wall, "pass_s": float(frames_pass[-1]) if frames_pass else float("nan"),
            "cpu_s": cpu + children, "peak_rss_mb": peak}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--experiment", type=Path, default=HERE / ".data" / "pipeline_2m_400f")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--cores", default="0,1", help="the two cores to pin to (taskset -c)")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    d = args.experiment.resolve()
    from hklflow.frames import open_frames  # the frames into the page cache

    with open_frames(str(d / "raw/lsco/300K/f1.h5")) as st:
        for _ in st.iter_chunks(16, reuse_buffer=True):
            pass
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for rule, target in STEPS.items():
            cmd = redirect_outputs(command_of(d, rule, target), Path(tmp))
            runs = {1: [], 2: []}
            for _ in range(args.repeats):
                for t in (1, 2):
                    runs[t].append(run_once(d, rule, cmd, t, args.cores))
                    print(f"{rule} --threads {t}: {runs[t][-1]}", file=sys.stderr, flush=True)
            best = {t: min(v, key=lambda r: r["wall_s"]) for t, v in runs.items()}
            fast = {t: min(v, key=lambda r: r["pass_s"]) for t, v in runs.items()}
            results[rule] = {"threads_1": best[1], "threads_2": best[2],
                             "speedup": best[1]["wall_s"] / best[2]["wall_s"],
                             "pass_speedup": fast[1]["pass_s"] / fast[2]["pass_s"],
                             "pass_s": {1: fast[1]["pass_s"], 2: fast[2]["pass_s"]}, "runs": runs}
    report = {"machine": machine_info(), "experiment": str(d), "goal_speedup": GOAL,
              "steps": results, "load_after": os.getloadavg()}
    lines = [f"steps on entry f1 of {d.name}, pinned to cores {args.cores}, best of "
             f"{args.repeats}; goal >= {GOAL}x with 2 threads", "",
             f"{'step':<18}{'job s 1/2':>13}{'speed-up':>9}{'pass s 1/2':>13}{'speed-up':>9}"
             f"{'CPU-s 1/2':>12}{'peak MB 1/2':>13}"]
    for rule, v in results.items():
        a, b = v["threads_1"], v["threads_2"]
        lines.append(f"{rule:<18}{a['wall_s']:>7.2f}/{b['wall_s']:<5.2f}{v['speedup']:>8.2f}x"
                     f"{v['pass_s'][1]:>7.2f}/{v['pass_s'][2]:<5.2f}{v['pass_speedup']:>8.2f}x"
                     f"{a['cpu_s']:>6.1f}/{b['cpu_s']:<5.1f}{a['peak_rss_mb']:>7.0f}/"
                     f"{b['peak_rss_mb']:<5.0f}")
    lines.append("job: the whole step (start, detector model, writing, picture included); pass: "
                 "its pass over the frames (read + search or transform), from its log")
    emit(report, "\n".join(lines), args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
