"""Whole-pipeline benchmark (issue 15): the real workflow through Snakemake on simulated
Pilatus CdTe 2M scans, costed rule by rule from the jobs' own benchmark files.

    python bench/pipeline.py [--frames 400] [--small-frames 100] [--fine-voxels 160000000]
                             [--cores 2] [--repeats 2] [--workdir bench/.data]
                             [--no-full-rotation] [--subdivide auto|auto_per_block]
                             [--json out.json]

One sample at one temperature, three entries (offsets and detector shifts as in the demo)
of --frames frames at 0.1 deg, the demo's crystal (LSCO, I4/mmm), the default grid (derived,
at most 401^3 voxels).  The workflow runs from scratch three times: on the first
--small-frames frames of every entry (prefix copies of the compressed chunks, no
decompression), on all --frames, and on the first frames again with a finer grid
(--fine-voxels); --repeats times over, every job counted by its least CPU time (noise
only adds: on a virtual machine a job's first touch of memory the guest gave back to the
host costs about 1-2 CPU-s per GB, and which jobs pay it is chance).  Every job's CPU time
comes from its own log (the `resources:` line every step ends with: CPU of every thread,
the share of the start, peak memory).  Per rule it is
split into a fixed cost, a cost per frame and a cost per voxel of the grid (non-negative
least squares over the jobs of the three runs).  That model
gives the CPU time a 3650-frame 2M entry costs on an 801^3 grid, with the jobs the default
config cuts it into, the rules of a temperature (orientation, merge, symmetrisation,
series) shared by its entries, and each grid job's peak memory on 801^3 (fitted the same
way).

Prints, measured in one run:
  1. per rule: jobs, CPU-s of each run, fixed CPU-s per job, CPU-ms per frame, CPU-ns per
     voxel, peak memory (measured, and on 801^3), and the CPU-s per full entry;
  2. the headline: whole-pipeline Mpixel/s per core (the pixels of an entry divided by the
     CPU time of every job that entry needs), at the run's size and extrapolated, next to
     the bare read + decompress of the same frames measured in this run;
  3. where every second of a full entry goes, and what filling fresh memory costs on this
     machine (a virtual machine's host page faults can make it 20x a bare node's); the
     system (kernel) share of each rule's CPU over its jobs (the steps log it), applied to
     its extrapolated CPU, and the user time alone;
  4. the headline again with the grid work measured on full volumes at 801^3 by
     bench/full_rotation.py (this bench's 40-degree scans leave its volumes 5-17% measured,
     and a chunk with nothing measured costs almost nothing to write), also --repeats
     times over, each figure its least CPU; --no-full-rotation leaves it out.
The scans are simulated once into --workdir (about 40 s per 100 frames of 2M) and reused.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import re
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

from common import (FULL_FRAMES, PLANS, RESOURCES_LINE, byte_compile_hklflow,  # noqa: E402
                    copy_chunks, emit, machine_info, machine_line, say, system_cpu_s)

DETECTOR = "PilatusCdTe2M"
DATASET = "/entry/data/data"
FULL_GRID = 801 ** 3
GOAL_MPIX_PER_CORE = 100.0
SIM_VERSION = 1
# rules of one scan entry (costs grow with its frames), rules of one temperature (shared by
# its entries), rules done once per sample or calibration
ENTRY_RULES = ("ingest_scan", "find_peaks", "mask_scan", "transform_frames", "sum_chunks")
TEMPERATURE_RULES = ("index_parent", "refine_temperature", "merge_entries", "symmetrize",
                     "temperature_series", "define_grid", "calibrate_powder")
# the optional PDF stage (reduction.pdf.enabled), shared by the entries of a temperature;
# counted in the whole pipeline and shown apart (the figure predates it)
PDF_RULES = ("total_pdf", "delta_pdf", "pdf_temperature_series")


# --------------------------------------------------------------------------------------
# The experiments
# --------------------------------------------------------------------------------------
def spec_of(nframes: int, detector: str = DETECTOR, phi_step: float = 0.1):
    """Three phi_step-deg entries on a Pilatus CdTe 2M at 0.3 m, beam near the middle, of
    the demo's crystal at one temperature; entries shifted and tilted as in the demo."""
    from hklflow.model.geometry import pyfai_detector
    from hklflow.simulation.experiment import EntryModel, preset

    det = pyfai_detector(detector)
    ny, nx = (int(n) for n in det.shape)
    pix1, pix2 = float(det.pixel1), float(det.pixel2)
    p1, p2 = (ny / 2 + 0.3) * pix1, (nx / 2 - 0.4) * pix2
    base = preset("demo")
    return replace(
        base, name="bench_pipeline_2m", detector=detector,
        calibration_geometry=(0.3, p1, p2, 0.0042, -0.0031, 0.011),
        rough_start=(0.298, p1 + 4 * pix1, p2 - 4 * pix2),
        samples=(replace(base.samples[0], temperatures=(300.0,)),),
        entries=(EntryModel("f1"),
                 EntryModel("f2", det_shift=(0.0, 10 * pix1, 8 * pix2), offsets={"omega": 1.0}),
                 EntryModel("f3", det_shift=(0.0, -9 * pix1, -10 * pix2),
                            offsets={"omega": -1.5, "chi": 2.0})),
        nframes=int(nframes), phi_start=-90.0, phi_step=float(phi_step), mosaicity_deg=0.05,
        transform_max_voxels=None)


def _key(spec) -> str:
    return json.dumps({"version": SIM_VERSION, "spec": asdict(spec)}, sort_keys=True,
                      default=str)


def ensure_experiment(workdir: Path, nframes: int, detector: str = DETECTOR,
                      phi_step: float = 0.1) -> Path:
    """The simulated experiment of nframes per entry (made once, then reused)."""
    from hklflow.simulation.experiment import simulate_experiment

    spec = spec_of(nframes, detector, phi_step)
    d = workdir / (f"pipeline_2m_{nframes}f" if detector == DETECTOR
                   else f"pipeline_{detector}_{nframes}f")
    if phi_step != 0.1:
        d = d.with_name(f"{d.name}_step{phi_step:g}")
    key = d / "bench.spec.json"
    if key.exists() and key.read_text() == _key(spec) and (d / "truth.json").exists():
        say(f"reusing the simulated experiment {d}")
        return d
    shutil.rmtree(d, ignore_errors=True)
    say(f"simulating 3 entries x {nframes} frames of {detector} into {d} (once) ...")
    t0 = time.monotonic()
    simulate_experiment(spec, d, "hdf5")
    key.write_text(_key(spec))
    say(f"  done in {time.monotonic() - t0:.0f} s")
    return d


def finer_grid_experiment(src: Path, max_voxels: int) -> Path:
    """Experiment src (its config, its raw files linked) with a grid of up to max_voxels."""
    import yaml

    d = src.with_name(f"{src.name}_grid{max_voxels}")
    shutil.rmtree(d / "config", ignore_errors=True)
    shutil.copytree(src / "config", d / "config")
    if not (d / "raw").exists():
        (d / "raw").symlink_to((src / "raw").resolve(), target_is_directory=True)
    cfg_path = d / "config" / "config.yaml"
    cfg = yaml.safe_load(cfg_path.read_text())
    cfg.setdefault("reduction", {}).setdefault("transform", {})["max_voxels"] = int(max_voxels)
    cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return d


def set_subdivide(d: Path, plan: str) -> None:
    """reduction.transform.subdivide of experiment d's config set to plan (auto,
    auto_per_block, or a count)."""
    import yaml

    cfg_path = d / "config" / "config.yaml"
    cfg = yaml.safe_load(cfg_path.read_text())
    value = int(plan) if plan.isdigit() else plan
    cfg.setdefault("reduction", {}).setdefault("transform", {})["subdivide"] = value
    cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False))


def prefix_experiment(src: Path, nframes: int) -> Path:
    """A copy of experiment src whose entries hold only their first nframes frames (the
    compressed chunks copied as they are) and whose scans table says so."""
    d = src.with_name(f"{src.name}_first{nframes}")
    key = d / "bench.source.json"
    want = json.dumps({"source": (src / "bench.spec.json").read_text(), "frames": nframes})
    if key.exists() and key.read_text() == want:
        return d
    shutil.rmtree(d, ignore_errors=True)
    shutil.copytree(src / "config", d / "config")
    shutil.copytree(src / "raw" / "calibration", d / "raw" / "calibration")
    table = d / "config" / "scans.tsv"
    rows = list(csv.DictReader(table.open(), delimiter="\t"))
    for row in rows:
        out = d / row["data"]
        out.parent.mkdir(parents=True, exist_ok=True)
        copy_chunks(src / row["data"], out, nframes)  # the first nframes chunks, checked
        row["nframes"] = str(nframes)
    with table.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]), delimiter="\t", lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    key.write_text(want)
    return d


# --------------------------------------------------------------------------------------
# Runs and their benchmark files
# --------------------------------------------------------------------------------------
def run_workflow(d: Path, cores: int) -> float:
    """The workflow from scratch in experiment d; its wall time."""
    for sub in ("results", "logs", "benchmarks", ".snakemake"):
        shutil.rmtree(d / sub, ignore_errors=True)
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(d),
           "--cores", str(cores), "--quiet", "rules"]
    say(f"running the workflow in {d} ({cores} cores) ...")
    t0 = time.monotonic()
    r = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.monotonic() - t0
    if r.returncode != 0:
        raise SystemExit(f"snakemake failed in {d}:\n{(r.stdout + r.stderr)[-4000:]}")
    say(f"  {wall:.0f} s")
    return wall


SUB_STEPS = re.compile(r"rotation sub-steps per frame: (\d+)")


def transform_sub_steps(d: Path) -> list[int]:
    """The rotation sub-steps per frame the transform jobs of the run in `d` took (their
    logs), each value once."""
    found = {int(n) for log in (d / "logs" / "transform_frames").rglob("*.log")
             for n in SUB_STEPS.findall(log.read_text())}
    return sorted(found)


def job_records(d: Path) -> list[dict]:
    """Every job's own timing: the `resources:` line its step logs last (CPU seconds of
    every thread and child process, the start's share, peak memory); Snakemake's
    benchmark file gives the job's wall time (its CPU figure samples the process every
    0.5 s, then every 30 s, and misses the end)."""
    out = []
    for tsv in sorted((d / "benchmarks").rglob("*.tsv")):
        rule = tsv.relative_to(d / "benchmarks").parts[0]
        job = str(tsv.relative_to(d / "benchmarks" / rule))[:-4]
        row = next(csv.DictReader(tsv.open(), delimiter="\t"))
        log = d / "logs" / rule / f"{job}.log"
        text = log.read_text() if log.exists() else ""
        found = RESOURCES_LINE.findall(text)
        if not found:
            raise SystemExit(f"{log}: no 'resources:' line (did the step finish?)")
        cpu, start, children, _wall, peak = (float(v) for v in found[-1])
        out.append({"rule": rule, "job": job, "cpu_s": cpu + children, "start_cpu_s": start,
                    "system_cpu_s": system_cpu_s(text),
                    "wall_s": float(row["s"]), "max_rss_mb": peak,
                    "snakemake_benchmark_cpu_s": float(row["cpu_time"])})
    return out


def least_cpu(a: list[dict], b: list[dict]) -> list[dict]:
    """Per job (rule and wildcards), the record of the two runs with the least CPU time."""
    by_job = {(r["rule"], r["job"]): r for r in a}
    if set(by_job) != {(r["rule"], r["job"]) for r in b}:
        raise SystemExit("the repeated run made other jobs than the first")
    return [min(by_job[(r["rule"], r["job"])], r, key=lambda x: x["cpu_s"]) for r in b]


def frames_of_job(rec: dict, nframes: int, entries: int) -> int:
    """Frames a job works on: its frame range (transform), its entry, or every entry of the
    temperature (orientation rules); 0 for rules that see no frames."""
    if rec["rule"] == "transform_frames":
        a, b = Path(rec["job"]).name.split("-")
        return int(b) - int(a)
    if rec["rule"] in ("ingest_scan", "find_peaks", "mask_scan", "sum_chunks"):
        return nframes
    if rec["rule"] in ("index_parent", "refine_temperature"):
        return nframes * entries
    return 0


def bare_read(d: Path) -> dict:
    """CPU time of reading + decompressing every frame of the experiment's entries (one
    thread, chunks of 16 frames into one buffer, the compiled block loop: what the steps'
    readers do)."""
    from hklflow.raw.frames import open_frames

    rows = list(csv.DictReader((d / "config" / "scans.tsv").open(), delimiter="\t"))
    with open_frames(str(d / rows[0]["data"])) as st:  # (loads the loop, numba: not timed)
        st.compiled_decompression = True
        st.read_frame(0)
    pixels = 0
    c0 = time.process_time()
    for row in rows:
        with open_frames(str(d / row["data"])) as st:
            st.compiled_decompression = True
            for _start, chunk in st.iter_chunks(16, reuse_buffer=True):
                pixels += chunk.size
    cpu = time.process_time() - c0
    return {"pixels": pixels, "cpu_s": cpu, "mpix_per_cpu_s": pixels / cpu / 1e6}


_FRESH_MEMORY = """
import resource, numpy as np
def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime
c = cpu(); a = np.ones(1 << 28, np.float32); first = cpu() - c
del a
c = cpu(); a = np.ones(1 << 28, np.float32); again = cpu() - c
print(first, again)
"""


def fresh_memory(repeats: int = 3, pause_s: float = 5.0) -> dict:
    """CPU seconds per GB a new process pays to fill memory it has not used before (its
    first GB: page faults, and on a virtual machine the host's, once the guest has given
    freed memory back: a process that starts right after another freed its memory pays
    about the second figure), against a second GB in the same process (pages the kernel
    hands back at once): median of `repeats` processes, pause_s apart."""
    first, again = [], []
    for _ in range(repeats):
        time.sleep(pause_s)
        out = subprocess.run([sys.executable, "-c", _FRESH_MEMORY], capture_output=True,
                             text=True, check=True).stdout.split()
        first.append(float(out[0]) * 1e9 / (4 << 28))
        again.append(float(out[1]) * 1e9 / (4 << 28))
    return {"first_gb_cpu_s": float(np.median(first)), "again_gb_cpu_s": float(np.median(again))}


# --------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------
def fit_rule(points: list[tuple[float, float, float]]) -> tuple[float, float, float]:
    """(fixed CPU-s per job, CPU-s per frame, CPU-s per voxel of the grid) by non-negative
    least squares over (frames, voxels, cpu) points of the jobs of every run; a column that
    does not vary is left out (its cost counts as fixed)."""
    from scipy.optimize import nnls

    x = np.array(points, float)
    cols = [np.ones(len(x))]
    used = []
    for j in (0, 1):
        if len(set(x[:, j].tolist())) > 1:
            scale = x[:, j].max()
            cols.append(x[:, j] / scale)
            used.append((j, scale))
    coef, _ = nnls(np.stack(cols, axis=1), x[:, 2])
    out = [float(coef[0]), 0.0, 0.0]
    for (j, scale), c in zip(used, coef[1:]):
        out[1 + j] = float(c) / scale
    return out[0], out[1], out[2]


def grid_voxels(d: Path, sample: str) -> int:
    from hklflow.files.grid import read_grid_file

    return int(read_grid_file(d / "results" / sample / "grid.json").size)


def model(runs: dict, starts: dict, entries: int, pixels: int, frames_per_job: int) -> dict:
    """Per rule: the fit, and the CPU seconds one full entry costs (3650 frames, 801^3
    grid, the default jobs), the rules of a temperature shared by its entries."""
    rules = sorted({r["rule"] for run in runs.values() for r in run["jobs"]})
    transform_jobs = math.ceil(FULL_FRAMES / frames_per_job)
    out = {}
    for rule in rules:
        pts = [(frames_of_job(r, run["frames"], entries), run["voxels"], r["cpu_s"])
               for run in runs.values() for r in run["jobs"] if r["rule"] == rule]
        fixed, per_frame, per_voxel = fit_rule(pts)
        mem = fit_rule([(0, run["voxels"], r["max_rss_mb"]) for run in runs.values()
                        for r in run["jobs"] if r["rule"] == rule])
        jobs = {name: [r for r in run["jobs"] if r["rule"] == rule] for name, run in runs.items()}
        per_job_full = fixed + per_voxel * FULL_GRID
        # the system share of its CPU, over the jobs of every run (NaN for old logs)
        cpu_all = sum(r["cpu_s"] for v in jobs.values() for r in v)
        system_share = (sum(r.get("system_cpu_s", math.nan) for v in jobs.values() for r in v)
                        / cpu_all if cpu_all > 0 else 0.0)
        if rule == "transform_frames":
            per_entry_jobs = transform_jobs
            full = transform_jobs * per_job_full + per_frame * FULL_FRAMES
        elif rule in ENTRY_RULES:  # (sum_chunks with one chunk: renames)
            per_entry_jobs = len(jobs["large"]) / entries
            full = per_entry_jobs * (per_job_full + per_frame * FULL_FRAMES)
        else:  # shared by the entries of a temperature
            per_entry_jobs = len(jobs["large"]) / entries
            frames = FULL_FRAMES * entries if rule in ("index_parent", "refine_temperature") else 0
            full = per_entry_jobs * per_job_full + per_frame * frames / entries
        out[rule] = {**{f"jobs_{k}": len(v) for k, v in jobs.items()},
                     **{f"cpu_s_{k}": sum(r["cpu_s"] for r in v) for k, v in jobs.items()},
                     "fixed_s_per_job": fixed, "start_s": starts.get(rule, 0.0),
                     "ms_per_frame": 1e3 * per_frame, "ns_per_voxel": 1e9 * per_voxel,
                     "max_rss_mb": max((r["max_rss_mb"] for v in jobs.values() for r in v),
                                       default=0.0),
                     "max_rss_mb_at_801": mem[0] + mem[2] * FULL_GRID,
                     "full_entry_jobs": per_entry_jobs, "full_entry_cpu_s": full,
                     "system_share": system_share,
                     "full_entry_parts_s": {"fixed": per_entry_jobs * fixed,
                                            "frames": full - per_entry_jobs * per_job_full,
                                            "grid": per_entry_jobs * per_voxel * FULL_GRID}}
    total = sum(v["full_entry_cpu_s"] for v in out.values())
    pdf = sum(v["full_entry_cpu_s"] for k, v in out.items() if k in PDF_RULES)
    system = sum(v["full_entry_cpu_s"] * v["system_share"] for v in out.values())
    return {"rules": out, "full_entry_cpu_s": total, "full_entry_system_s": system,
            "full_entry_cpu_s_without_pdf": total - pdf,
            "full_mpix_per_core_without_pdf": FULL_FRAMES * pixels / (total - pdf) / 1e6,
            "full_entry_mpix": FULL_FRAMES * pixels / 1e6,
            "full_mpix_per_core": FULL_FRAMES * pixels / total / 1e6,
            "transform_jobs_per_full_entry": transform_jobs,
            "parts_s": {k: sum(v["full_entry_parts_s"][k] for v in out.values())
                        for k in ("fixed", "frames", "grid")}}


def with_full_volumes(m: dict, measured: dict, entries: int, pixels: int) -> dict:
    """The full entry with the grid work measured on full volumes (bench/full_rotation.py)
    in place of the fits on the sparse ones: the transform from its CPU per frame on a fresh
    801^3 grid (the frames added as the step adds them: as stored, decompressed block by
    block; else plus a read of them) and the write of its two volumes (plus the fitted fixed
    cost per job); sum_chunks (its volumes moved into place, their pictures) as it ran there
    for one entry; merge, symmetrisation and PDFs as they ran there, shared by the entries.
    The system share of each the same way."""
    rules = m["rules"]
    v = measured["volumes"]
    jobs = m["transform_jobs_per_full_entry"]
    cpu = {"transform_frames": jobs * (rules["transform_frames"]["fixed_s_per_job"]
                                       + v["write_cpu_s"])
           + FULL_FRAMES * v["frame_ms_per_frame"] / 1e3}
    cpu.update({rule: s / entries for rule, s in measured["temperature_cpu_s_per_rule"].items()})
    system = {"transform_frames": FULL_FRAMES * v["frame_system_ms_per_frame"] / 1e3
              + jobs * (v["write_system_s"] + rules["transform_frames"]["fixed_s_per_job"]
                        * rules["transform_frames"]["system_share"])}
    system.update({rule: s / entries
                   for rule, s in measured["temperature_system_s_per_rule"].items()})
    if "sum_chunks" in measured.get("entry_cpu_s_per_rule", {}):  # one job per entry
        cpu["sum_chunks"] = measured["entry_cpu_s_per_rule"]["sum_chunks"]
        system["sum_chunks"] = measured["entry_system_s_per_rule"]["sum_chunks"]
    total = m["full_entry_cpu_s"] + sum(c - rules[r]["full_entry_cpu_s"] for r, c in cpu.items())
    total_system = m["full_entry_system_s"] + sum(
        c - rules[r]["full_entry_cpu_s"] * rules[r]["system_share"] for r, c in system.items())
    return {"measured": measured, "full_entry_cpu_s_per_rule": cpu, "full_entry_cpu_s": total,
            "full_entry_system_s": total_system,
            "full_mpix_per_core": FULL_FRAMES * pixels / total / 1e6}


# --------------------------------------------------------------------------------------
def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, default=400, help="frames per entry (large run)")
    p.add_argument("--small-frames", type=int, default=100,
                   help="frames per entry of the small runs (prefix of the same scans)")
    p.add_argument("--fine-voxels", type=int, default=160_000_000,
                   help="max_voxels of the third run's grid (the first two: the default)")
    p.add_argument("--cores", type=int, default=2, help="snakemake --cores")
    p.add_argument("--repeats", type=int, default=2,
                   help="runs of each experiment; every job's least CPU time counts (on a "
                        "shared or virtual machine a job's first touches of memory can cost "
                        "more than its work: see the fresh memory line)")
    p.add_argument("--workdir", type=Path, default=HERE / ".data")
    p.add_argument("--no-full-rotation", action="store_true",
                   help="leave out bench/full_rotation.py's measurement of the grid work on "
                        "full volumes at 801^3 (~2.5 min per repeat, ~9 GB of memory) and "
                        "its headline")
    p.add_argument("--subdivide", choices=PLANS, default="auto",
                   help="the transform's rotation sub-steps (reduction.transform.subdivide) in "
                        "every run and in the full-rotation measurement (the runs' grids take "
                        "1 for every block either way; at 801^3 'auto' takes 2 for every "
                        "block, 'auto_per_block' 1 or 2 per block)")
    p.add_argument("--detector", default=DETECTOR,
                   help="pyFAI detector name (a small one, e.g. Pilatus300k, for a smoke run)")
    p.add_argument("--phi-step", type=float, default=0.1,
                   help="rotation per frame, deg (default 0.1; coarse steps let a smoke run's few "
                        "frames index)")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    if not 0 < args.small_frames < args.frames:
        p.error("--small-frames must be below --frames")
    if args.repeats < 1:
        p.error("--repeats must be >= 1")
    from hklflow.model.geometry import detector_shape
    from hklflow.settings.schema import schema_default

    rows, cols = detector_shape(args.detector)
    pixels = rows * cols
    large_dir = ensure_experiment(args.workdir, args.frames, args.detector, args.phi_step)
    small_dir = prefix_experiment(large_dir, args.small_frames)
    fine_dir = finer_grid_experiment(small_dir, args.fine_voxels)
    for d in (large_dir, small_dir, fine_dir):
        set_subdivide(d, args.subdivide)
    entries = 3
    byte_compile_hklflow()  # the jobs start as an installed hklflow's do
    runs = {}
    for _ in range(args.repeats):
        for name, d, n in (("small", small_dir, args.small_frames),
                           ("large", large_dir, args.frames),
                           ("fine", fine_dir, args.small_frames)):
            wall = run_workflow(d, args.cores)
            jobs = job_records(d)
            if name in runs:  # every job's least CPU over the repeats (noise only adds)
                jobs = least_cpu(runs[name]["jobs"], jobs)
                wall = min(wall, runs[name]["wall_s"])
            runs[name] = {"dir": str(d), "frames": n, "wall_s": wall,
                          "voxels": grid_voxels(d, "lsco"), "jobs": jobs,
                          "sub_steps": transform_sub_steps(d)}
    say("measuring the bare read ...")
    starts = {}  # CPU of the interpreter and the step's imports, mean over its jobs
    for r in (r for run in runs.values() for r in run["jobs"]):
        starts.setdefault(r["rule"], []).append(r["start_cpu_s"])
    starts = {k: float(np.mean(v)) for k, v in starts.items()}
    read = bare_read(large_dir)
    fresh = fresh_memory()
    frames_per_job = max(1, int(schema_default("reduction.transform.pixel_frames_per_job")
                                // pixels))
    m = model(runs, starts, entries, pixels, frames_per_job)
    full = None
    if not args.no_full_rotation:
        import full_rotation

        say("measuring the grid work on full volumes at 801^3 (bench/full_rotation.py) ...")
        full = with_full_volumes(m, full_rotation.measure(large_dir, repeats=args.repeats,
                                                          plan=args.subdivide),
                                 entries, pixels)
    run_cpu = sum(r["cpu_s"] for r in runs["large"]["jobs"])
    run_mpix = entries * args.frames * pixels / 1e6
    report = {
        "machine": machine_info(),
        "experiment": {"detector": f"{args.detector} {rows}x{cols}", "entries": entries,
                       "frames": {k: v["frames"] for k, v in runs.items()},
                       "grid_voxels": {k: v["voxels"] for k, v in runs.items()},
                       "cores": args.cores, "repeats": args.repeats,
                       "subdivide": args.subdivide},
        "runs": {k: {kk: vv for kk, vv in v.items() if kk != "jobs"} for k, v in runs.items()},
        "jobs": {k: v["jobs"] for k, v in runs.items()},
        "start_cpu_s": starts,
        "bare_read": read,
        "fresh_memory": fresh,
        "model": m,
        "at_run_size": {"cpu_s": run_cpu, "mpix": run_mpix,
                        "mpix_per_core": run_mpix / run_cpu},
        "goal_mpix_per_core": GOAL_MPIX_PER_CORE,
        "full_volumes": full,
    }
    emit(report, table(report), args.json)
    return 0


def table(rep: dict) -> str:
    m, e, runs = rep["model"], rep["experiment"], rep["runs"]
    lines = [
        machine_line(rep["machine"]),
        f"whole pipeline: {e['detector']}, one temperature, {e['entries']} entries; three runs "
        f"from scratch, {e.get('repeats', 1)} time(s) each, every job's least CPU (snakemake "
        "--cores " + str(e["cores"]) + "): "
        + ", ".join(f"{k} = {v['frames']} frames x {v['voxels']:,} voxels ({v['wall_s']:.0f} s)"
                    for k, v in runs.items()),
        "",
        f"{'rule':<19}{'jobs':>5}{'CPU-s':>7}{'CPU-s':>7}{'CPU-s':>7}{'fixed':>7}{'start':>6}"
        f"{'ms per':>7}{'ns per':>7}{'peak':>6}{'peak':>6}{'sys':>5} | {'one full entry':>15}",
        f"{'':<19}{'':>5}{'small':>7}{'large':>7}{'fine':>7}{'s/job':>7}{'s':>6}"
        f"{'frame':>7}{'voxel':>7}{'GB':>6}{'801^3':>6}{'%':>5} | {'jobs':>5}{'CPU-s':>7}"
        f"{'share':>7}",
    ]
    total = m["full_entry_cpu_s"]
    order = [r for r in ENTRY_RULES + TEMPERATURE_RULES + PDF_RULES if r in m["rules"]]
    order += sorted(set(m["rules"]) - set(order))  # a rule this script does not know yet
    for rule in order:
        v = m["rules"][rule]
        lines.append(
            f"{rule:<19}{v['jobs_large']:>5}{v['cpu_s_small']:>7.1f}{v['cpu_s_large']:>7.1f}"
            f"{v['cpu_s_fine']:>7.1f}{v['fixed_s_per_job']:>7.2f}{v['start_s']:>6.2f}"
            f"{v['ms_per_frame']:>7.2f}{v['ns_per_voxel']:>7.1f}{v['max_rss_mb'] / 1e3:>6.1f}"
            f"{v['max_rss_mb_at_801'] / 1e3:>6.1f}{100 * v.get('system_share', math.nan):>5.0f}"
            f" | {v['full_entry_jobs']:>5.2f}"
            f"{v['full_entry_cpu_s']:>7.1f}{100 * v['full_entry_cpu_s'] / total:>6.1f}%")
    read = rep["bare_read"]
    run = rep["at_run_size"]
    parts = m["parts_s"]
    fresh = rep["fresh_memory"]
    touched = sum(v["full_entry_jobs"] * v["max_rss_mb_at_801"] / 1e3
                  for v in m["rules"].values())
    lines += [
        "",
        f"bare read + decompress of the same frames: {read['mpix_per_cpu_s']:.0f} Mpixel/s per "
        f"core ({read['pixels'] / 1e6:.0f} Mpixel in {read['cpu_s']:.1f} CPU-s)",
        f"whole pipeline, large run as it ran: {run['mpix_per_core']:.0f} Mpixel/s per core "
        f"({run['cpu_s']:.0f} CPU-s for {run['mpix']:.0f} Mpixel; "
        f"{run['mpix_per_core'] / read['mpix_per_cpu_s']:.2f} x the bare read)",
        f"whole pipeline, one 2M entry of {FULL_FRAMES} frames on an 801^3 grid (the fit above; "
        f"{m['transform_jobs_per_full_entry']} transform job(s) per entry; the runs' "
        f"transforms took at most {_sub_steps(rep)} rotation sub-step(s) per frame): "
        f"{total:.0f} CPU-s "
        f"-> {m['full_mpix_per_core']:.0f} Mpixel/s per core (goal >= "
        f"{rep['goal_mpix_per_core']:.0f}; {m['full_mpix_per_core'] / read['mpix_per_cpu_s']:.2f}"
        " x the bare read; two reads would be 0.50 x)",
        f"  without the PDF stage (reduction.pdf: total PDF and 3D-DeltaPDF, "
        f"{total - m['full_entry_cpu_s_without_pdf']:.0f} CPU-s per entry): "
        f"{m['full_entry_cpu_s_without_pdf']:.0f} CPU-s -> "
        f"{m['full_mpix_per_core_without_pdf']:.0f} Mpixel/s per core",
        f"  where it goes: {parts['frames']:.0f} s per frame work, {parts['grid']:.0f} s grid "
        f"work (801^3), {parts['fixed']:.0f} s fixed per job (start, imports, detector "
        f"models, pictures); the frames' two reads alone: "
        f"{2 * m['full_entry_mpix'] / read['mpix_per_cpu_s']:.0f} s",
        _system_line(m["full_entry_system_s"], total, m["full_entry_mpix"]),
        f"  fresh memory on this machine: a new process fills its first GB in "
        f"{fresh['first_gb_cpu_s']:.2f} CPU-s, a GB it used before in "
        f"{fresh['again_gb_cpu_s']:.2f} (page faults; on a virtual machine the host's too); "
        f"the jobs of a full entry touch about {touched:.0f} GB (their peaks on 801^3): up to "
        f"{touched * fresh['first_gb_cpu_s']:.0f} CPU-s of the total",
    ]
    full = rep.get("full_volumes")
    if full:
        v = full["measured"]["volumes"]
        lines += [
            f"whole pipeline with the grid work measured on full volumes at 801^3 "
            f"(bench/full_rotation.py: {v['measured_fraction']:.0%} of the grid measured, "
            + ("rotation sub-steps per frame as transform_frames takes them there with "
               f"subdivide: {v.get('plan', 'auto')}: "
               f"{v.get('sub_steps', v.get('subdivide'))}, " if "subdivide" in v
               else "1 rotation sub-step per frame, ")
            + f"{v['frame_ms_per_frame']:.2f} ms per frame on a fresh grid, reading included): "
            f"{full['full_entry_cpu_s']:.0f} CPU-s -> {full['full_mpix_per_core']:.0f} "
            f"Mpixel/s per core",
            _system_line(full["full_entry_system_s"], full["full_entry_cpu_s"],
                         m["full_entry_mpix"]),
            "  " + ", ".join(f"{r} {c:.1f}" for r, c in full["full_entry_cpu_s_per_rule"].items())
            + " CPU-s per entry (the fit above: "
            + ", ".join(f"{m['rules'][r]['full_entry_cpu_s']:.1f}"
                        for r in full["full_entry_cpu_s_per_rule"]) + ")"]
    return "\n".join(lines)


def _sub_steps(rep: dict) -> str:
    found = sorted({n for run in rep["runs"].values() for n in run.get("sub_steps", [])})
    return "/".join(map(str, found)) or "?"


def _system_line(system: float, total: float, mpix: float) -> str:
    """What of a full entry's CPU the kernel spent (page faults, page cache, file I/O: on a
    virtual machine the host's faults too), and the user time alone."""
    if not math.isfinite(system):
        return "  system time: not in these jobs' logs (written before steps logged it)"
    return (f"  of which system time (the kernel: page faults, page cache, file I/O) "
            f"{system:.0f} CPU-s ({system / total:.0%}); the user time alone "
            f"{total - system:.0f} CPU-s -> {mpix / (total - system):.0f} Mpixel/s per core")


if __name__ == "__main__":
    sys.exit(main())
