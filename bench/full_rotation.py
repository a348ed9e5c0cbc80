"""Full-rotation check of bench/pipeline.py's extrapolation: the grid work of one temperature
at true size, on volumes as full as a 360-degree scan makes them.

    python bench/full_rotation.py [--large-run bench/.data/pipeline_2m_400f] [--frames 200]
                                  [--points 801] [--subdivide auto|auto_per_block]
                                  [--json out.json]

bench/pipeline.py measures on 40-degree scans, whose volumes are 5-17% measured, and scales
the per-voxel costs to 801^3.  Writing, reading and compressing cost more where the data
fill the chunks, and the transform's grid is touched over a wider region, so this script
measures those steps where the data are as a full rotation leaves them.  It needs the
large run of bench/pipeline.py (its scan, orientation, mask and settings):

1. --frames frames of entry f2 are read into memory and added to a grid of --points^3
   voxels (the pipeline bench's grid limits, finer steps), both kinds at once, at start
   angles 360/N degrees apart so that the frames cover a whole turn (200 frames of 0.1 deg:
   18 start angles; a simulated 3650-frame scan would take an hour to render), as
   transform_frames adds them (their compressed chunks, from the page cache, decompressed
   block by block as they are added; the rotation sub-steps per frame it takes on this
   grid with --subdivide: its default 'auto' 2 for every block of pixels at 801^3,
   'auto_per_block' 1 or 2 per block); CPU per frame, the grid's resident memory, and a
   bare read + decompress of the frames;
2. the two volumes are written as the transform step writes them (CPU), copied as the
   volumes of entries f1, f2, f3;
3. the workflow's own commands (read from `snakemake -n -p` in the large run) run on
   them: sum_chunks of entry f1 (its two volumes, copied as the parts of a one-job
   transform, moved into place, and their pictures drawn), merge_entries (both kinds;
   without scales: none are fitted on these volumes, and scaling's own cost is
   bench/scaling.py --cost's), symmetrize (both kinds), total_pdf and delta_pdf: each
   job's CPU, its system share and peak memory from its log.

It prints the table and what one entry costs at 3650 frames from these figures (the frame
work of the transform at the measured CPU per frame, reading included, the write,
sum_chunks, the temperature's steps shared by three entries); the other rules (peak
search, mask, orientation, calibration) are as bench/pipeline.py fits them.
"""
from __future__ import annotations

import argparse
import contextlib
import mmap
import os
import re
import resource
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

from common import (CHUNK_FRAMES, FULL_FRAMES, PLANS, RESOURCES_LINE, add_at_turns,  # noqa: E402
                    byte_compile_hklflow, cpu, emit, machine_info, say, swap_options,
                    system_cpu_s)

TEMPERATURE_RULES = ("merge_entries", "symmetrize", "total_pdf", "delta_pdf")
ENTRY_RULES = ("sum_chunks",)  # run for entry f1: its volumes moved into place, pictures
ENTRIES = 3  # the entries of pipeline.py's temperature


def system() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_stime


def rss_gb() -> float:
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1e6
    return float("nan")


SETTINGS_DIR = Path(".snakemake", "hklflow", "settings")  # (hklflow.planning.jobs.SettingsFiles)


def workflow_commands(large: Path) -> dict[str, list[str]]:
    """The shell commands of the temperature rules, as the workflow runs them in `large`."""
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(large),
           "-n", "-p", "--forcerun", *ENTRY_RULES, *TEMPERATURE_RULES,
           "--until", "total_pdf", "delta_pdf"]
    out = subprocess.run(cmd, capture_output=True, text=True).stdout
    found: dict[str, list[str]] = {rule: [] for rule in ENTRY_RULES + TEMPERATURE_RULES}
    for line in out.splitlines():
        line = line.strip()
        if line.startswith("Shell command: "):
            line = line[len("Shell command: "):]
        words = line.split()
        if len(words) > 1 and words[0] == "hklflow" and words[1] in found:
            if words[1] == "merge_entries":  # (merged as they are: see unscaled)
                line = unscaled(line)
            found[words[1]].append(line)
    missing = [rule for rule, cmds in found.items() if not cmds]
    if missing:
        raise SystemExit(f"no command for {missing} in the dry run of {large}: run "
                         "bench/pipeline.py first")
    return found


def unscaled(command: str) -> str:
    """A merge_entries command without the scales (--scales, --scans, --masks, --apply):
    the full volumes made here have none (scale_entries is not run on them); what scaling
    costs, the fit and the scaled merge: bench/scaling.py --cost."""
    line, _, redirect = command.partition(" > ")
    words = swap_options(shlex.split(line), dict.fromkeys(("--scales", "--scans", "--masks",
                                                            "--apply")))
    return shlex.join(words) + (f" > {redirect}" if redirect else "")


def entry_f2(large: Path, points: int):
    """Entry f2 of the large run of bench/pipeline.py: (its temperature's results folder,
    scan record, orientation, scan geometry, mask) and a points^3 grid with the run's
    limits."""
    from hklflow.algorithms.masks.masking import ScanMask
    from hklflow.files.grid import read_grid_file
    from hklflow.files.mask import read_mask_file
    from hklflow.files.orientation import read_orientation_file
    from hklflow.files.scan import read_scan_file
    from hklflow.model.grid import Axis, Grid

    if not (large / "results").is_dir():
        raise SystemExit(f"{large}/results is missing: run bench/pipeline.py first")
    temp = next((large / "results").glob("*/*/f2")).parent
    rec = read_scan_file(temp / "f2" / "scan.nxs")
    ori = read_orientation_file(temp / "orientation.nxs")
    mask = ScanMask.of(read_mask_file(temp / "f2" / "mask.nxs"))
    coarse = read_grid_file(next((large / "results").glob("*/grid.json")))
    grid = Grid(*(Axis(ax.start, (ax.stop - ax.start) / (points - 1), points)
                  for ax in coarse.axes))
    return temp, rec, ori, rec.geometry(ori), mask, grid


def full_rotation_volumes(large: Path, out: Path, frames: int, points: int,
                          plan: str = "auto") -> dict:
    """Steps 1 and 2: entry f2's frames added at start angles covering 360 degrees, on a
    points^3 grid with the large run's limits, with the rotation sub-steps transform_frames
    takes there under `subdivide: plan` (auto or auto_per_block); its two volumes written for
    f1, f2, f3."""
    from hklflow.algorithms.transform import SubSteps, Transformer, block_sub_steps, pixel_table
    from hklflow.files.volume import VolumeWriter, read_volume_header
    from hklflow.files.volume_bricks import write_volumes
    from hklflow.raw.frames import open_frame_source

    temp, rec, ori, scan, mask, grid = entry_f2(large, points)
    frames = min(frames, rec.nframes)
    stack = open_frame_source(rec.frames, compiled_decompression=True)  # as the step
    block = stack.read(0, frames)  # into the page cache, as bench/pipeline.py's bare read
    c = cpu()
    stack.read(0, frames, out=block)
    read_cpu = cpu() - c
    table = pixel_table(scan.detector, mask.pixels)
    # the rotation sub-steps transform_frames takes on this grid (every pixel enough that
    # none moves more than half a voxel between them: 'auto' the largest count for every
    # block of pixels, 'auto_per_block' each block its own)
    steps, move = block_sub_steps(scan, table, grid, ori.crystal().cell.parameters[:3])
    subdivide = int(steps.max())
    if plan not in PLANS:
        raise SystemExit(f"subdivide {plan!r}: expected one of {', '.join(PLANS)}")
    sub_steps = (SubSteps.per_block(steps) if plan == "auto_per_block"
                 else SubSteps.uniform(subdivide, len(steps)))
    kinds = ("transform", "masked_transform")
    tr = Transformer(grid, table, 1e9, kinds=kinds, crystal=ori.crystal(),
                     hkl_radius=mask.hkl_radius, threads=1, sub_steps=sub_steps)
    bragg = np.zeros((CHUNK_FRAMES, block[0].size), np.uint8)  # one chunk's, as the step
    turn = frames * abs(scan.angles.step)
    turns = int(np.ceil(360.0 / turn - 1e-9))
    say(f"adding {frames} frames at {turns} start angles {turn:g} deg apart onto "
        f"{grid.describe()}, rotation sub-steps per frame {sub_steps.describe()} ...")
    c, sys0 = cpu(), system()
    # as transform_frames adds them: compressed chunks decompressed block by block (read
    # from the page cache), else the frames read
    as_stored = add_at_turns(tr, stack, scan, mask, frames, bragg,
                             [t * turn for t in range(turns)], read=block,
                             subdivide=subdivide)
    add_cpu, add_system = cpu() - c, system() - sys0
    stack.close()
    process_gb = rss_gb()  # the frames and their Bragg paint too
    pages = [tr.acc.written_pages(part) for part in range(len(tr.acc.cells))]
    grid_gb = (sum(int(p.sum()) for p in pages) * mmap.PAGESIZE / 1e9
               if all(p is not None for p in pages) else float("nan"))
    heads = {k: read_volume_header(temp / "f1" / f"{k}.nxs") for k in kinds}
    rel = temp.relative_to(large)
    (out / rel / "f1").mkdir(parents=True, exist_ok=True)
    shutil.copy(temp / "orientation.nxs", out / rel / "orientation.nxs")
    say("writing the two volumes ...")
    c, sys0 = cpu(), system()
    with contextlib.ExitStack() as files:
        writers = [files.enter_context(VolumeWriter(
            out / rel / "f1" / f"{k}.nxs", grid, k, heads[k].title, dict(heads[k].sample),
            dict(heads[k].notes), {"program": "bench/full_rotation.py"})) for k in kinds]
        write_volumes(tr, writers)  # as transform_frames writes them
    write_cpu, write_system = cpu() - c, system() - sys0
    for entry in ("f2", "f3"):
        (out / rel / entry).mkdir(exist_ok=True)
        for k in kinds:
            shutil.copy(out / rel / "f1" / f"{k}.nxs", out / rel / entry / f"{k}.nxs")
    pixel_frames = turns * frames
    return {"grid": list(grid.shape), "voxels": grid.size, "frames_added": pixel_frames,
            "turns": turns, "usable_pixels": len(table), "subdivide": subdivide, "plan": plan,
            "sub_steps": sub_steps.describe(), "move_voxels_per_frame": move,
            "add_cpu_s": add_cpu, "add_ms_per_frame": add_cpu / pixel_frames * 1e3,
            "grid_resident_gb": grid_gb, "grid_allocated_gb": tr.acc.nbytes / 1e9,
            "process_rss_gb": process_gb,
            "read_ms_per_frame": read_cpu / frames * 1e3,
            # what the transform's frames cost per frame: the add, which decompresses them
            # where they are added as stored, else the add and a read
            "frame_ms_per_frame": (add_cpu / pixel_frames
                                   + (0 if as_stored else read_cpu / frames)) * 1e3,
            "added_as_stored": as_stored,
            "frame_system_ms_per_frame": add_system / pixel_frames * 1e3,
            "write_cpu_s": write_cpu, "write_system_s": write_system,
            "measured_fraction": writers[0].measured / grid.size,
            "volume_file_gb": (out / rel / "f1" / "transform.nxs").stat().st_size / 1e9}


def chunk_parts(command: str, out: Path) -> None:
    """The parts a sum_chunks command sums, made from its entry's volumes in `out` (one
    part per kind, the whole entry: as the transform of a 3650-frame entry leaves them)."""
    words = shlex.split(command.split(" > ")[0])
    i = words.index("--inputs") + 1
    while i < len(words) and not words[i].startswith("--"):
        part = out / words[i]
        kind = part.parent.name.removesuffix("_parts")
        part.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(part.parent.parent / f"{kind}.nxs", part)
        i += 1


def run_steps(commands: dict[str, list[str]], out: Path) -> list[dict]:
    """sum_chunks of entry f1 on its full volumes, then the temperature's steps."""
    jobs = []
    # the `hklflow` of this interpreter's environment
    path = os.environ.get("PATH", "")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{path}"}
    for rule in ENTRY_RULES + TEMPERATURE_RULES:
        for command in commands[rule]:
            if rule in ENTRY_RULES:
                if "/f1/" not in command:
                    continue
                chunk_parts(command, out)
            log = Path(shlex.split(re.search(r" > (\S+) 2>&1$", command).group(1))[0])
            (out / log).parent.mkdir(parents=True, exist_ok=True)
            say(f"{rule} ...")
            r = subprocess.run(command, shell=True, cwd=out, env=env)
            text = (out / log).read_text() if (out / log).exists() else ""
            found = RESOURCES_LINE.findall(text)
            if r.returncode != 0 or not found:
                raise SystemExit(f"{rule} failed in {out}:\n{text[-3000:]}")
            cpu_s, start, children, wall, peak = (float(v) for v in found[-1])
            jobs.append({"rule": rule, "log": str(log), "cpu_s": cpu_s + children,
                         "system_cpu_s": system_cpu_s(text),
                         "start_cpu_s": start, "wall_s": wall, "peak_gb": peak / 1e3})
    return jobs


def report(rep: dict) -> str:
    v = rep["volumes"]
    lines = [f"full rotation on {' x '.join(map(str, v['grid']))} = {v['voxels']:,} voxels: "
             f"{v['frames_added']} frames of 2M added ({v['turns']} start angles), "
             f"{v['measured_fraction']:.1%} of the grid measured, volume file "
             f"{v['volume_file_gb']:.2f} GB"
             + (f"; each figure the least of {v['repeats']} measurements"
                if v.get("repeats", 1) > 1 else ""),
             f"  transform, both kinds, rotation sub-steps per frame (subdivide: "
             f"{v.get('plan', 'auto')}) {v.get('sub_steps', v.get('subdivide', 1))} (a pixel "
             f"moves up to "
             f"{v.get('move_voxels_per_frame', float('nan')):.2f} voxels per frame): "
             f"{v['add_ms_per_frame']:.2f} CPU-ms per frame "
             + ("added as stored (decompressed block by block; a bare read "
                if v["added_as_stored"] else "from memory (a read ")
             + f"{v['read_ms_per_frame']:.2f}; fresh grid); grid in memory "
             f"{v['grid_resident_gb']:.2f} GB of {v['grid_allocated_gb']:.2f} allocated (its "
             f"pages written; the process {v['process_rss_gb']:.2f} GB with "
             "the frames and their Bragg paint)",
             f"  writing the two volumes: {v['write_cpu_s']:.1f} CPU-s (system "
             f"{v['write_system_s']:.1f})", "",
             f"{'job':<44} {'CPU-s':>7} {'system':>7} {'peak GB':>8}"]
    for j in rep["jobs"]:
        lines.append(f"{j['rule'] + ' ' + Path(j['log']).stem:<44} {j['cpu_s']:7.1f} "
                     f"{j['system_cpu_s']:7.1f} {j['peak_gb']:8.2f}")
    e = rep["per_entry"]
    lines += ["", f"one entry of {FULL_FRAMES} frames, grid work of this size: transform "
              f"{e['transform_cpu_s']:.1f} CPU-s (frames {e['transform_frames_cpu_s']:.1f}, "
              f"write {v['write_cpu_s']:.1f}), sum_chunks {e['sum_chunks_cpu_s']:.1f} (a move "
              f"and pictures), temperature steps {e['temperature_cpu_s']:.1f} per temperature "
              f"= {e['temperature_per_entry_cpu_s']:.1f} per entry of {ENTRIES}"]
    return "\n".join(lines)


def least_of(runs: list[tuple[dict, list[dict]]]) -> tuple[dict, list[dict]]:
    """(volumes, jobs) of several measurements combined as bench/pipeline.py combines its
    repeated runs: each figure from the run where it cost the least CPU (a job's first
    touches of fresh memory only add), its system share with it."""
    volumes = dict(min((v for v, _ in runs), key=lambda v: v["frame_ms_per_frame"]))
    write = min((v for v, _ in runs), key=lambda v: v["write_cpu_s"])
    volumes.update(write_cpu_s=write["write_cpu_s"], write_system_s=write["write_system_s"])
    jobs = [min(same, key=lambda j: j["cpu_s"])
            for same in zip(*(jobs for _, jobs in runs))]
    if any(len({(j["rule"], j["log"]) for j in same}) != 1
           for same in zip(*(jobs for _, jobs in runs))):
        raise SystemExit("the repeated measurement ran other jobs than the first")
    volumes["repeats"] = len(runs)
    return volumes, jobs


def measure(large: Path, frames: int = 200, points: int = 801, keep: bool = False,
            repeats: int = 1, plan: str = "auto") -> dict:
    """Steps 1-3 on `large`, the large run of bench/pipeline.py, `repeats` times, each
    figure the least of them (least_of); the report (no machine).  The volumes and outputs
    (~12 GB, next to it in full_rotation_POINTS) are removed afterwards unless keep (the
    last measurement's)."""
    if not (large / "results").is_dir():
        raise SystemExit(f"{large}/results is missing: run bench/pipeline.py first")
    out = large.parent / f"full_rotation_{points}"
    commands = workflow_commands(large)
    t0 = time.monotonic()
    runs = []
    for i in range(max(1, repeats)):
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        # the settings files the commands name (written by the dry run in `large`)
        shutil.copytree(large / SETTINGS_DIR, out / SETTINGS_DIR)
        try:
            runs.append((full_rotation_volumes(large, out, frames, points, plan),
                         run_steps(commands, out)))
        finally:
            if not keep or i < repeats - 1:
                shutil.rmtree(out, ignore_errors=True)
    volumes, jobs = least_of(runs)
    frames_cpu = FULL_FRAMES * volumes["frame_ms_per_frame"] / 1e3

    def per_rule(rules, what):
        return {rule: sum(j[what] for j in jobs if j["rule"] == rule) for rule in rules}

    temperature = sum(per_rule(TEMPERATURE_RULES, "cpu_s").values())
    entry = per_rule(ENTRY_RULES, "cpu_s")  # (entry f1's jobs)
    return {"volumes": volumes, "jobs": jobs,
            "temperature_cpu_s_per_rule": per_rule(TEMPERATURE_RULES, "cpu_s"),
            "temperature_system_s_per_rule": per_rule(TEMPERATURE_RULES, "system_cpu_s"),
            "entry_cpu_s_per_rule": entry,
            "entry_system_s_per_rule": per_rule(ENTRY_RULES, "system_cpu_s"),
            "per_entry": {"transform_frames_cpu_s": frames_cpu,
                          "transform_cpu_s": frames_cpu + volumes["write_cpu_s"],
                          "sum_chunks_cpu_s": entry["sum_chunks"],
                          "temperature_cpu_s": temperature,
                          "temperature_per_entry_cpu_s": temperature / ENTRIES},
            "wall_s": time.monotonic() - t0}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--large-run", type=Path, default=HERE / ".data" / "pipeline_2m_400f",
                   help="the large run of bench/pipeline.py (its experiment folder)")
    p.add_argument("--points", type=int, default=801, help="grid points per axis")
    p.add_argument("--frames", type=int, default=200, help="frames of f2 added per turn")
    p.add_argument("--keep", action="store_true",
                   help="keep the volumes and the steps' outputs (~12 GB, in "
                        "full_rotation_POINTS next to the large run) to compare runs")
    p.add_argument("--repeats", type=int, default=1,
                   help="measurements; each figure the least CPU of them (as bench/pipeline.py "
                        "counts its repeated runs)")
    p.add_argument("--subdivide", choices=PLANS, default="auto",
                   help="the transform's sub-step plan (reduction.transform.subdivide); the "
                        "temperature steps run on the volumes it gives")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    byte_compile_hklflow()  # the steps start as an installed hklflow's do
    rep = {"machine": machine_info(),
           **measure(args.large_run, args.frames, args.points, args.keep, args.repeats,
                     args.subdivide)}
    emit(rep, report(rep), args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
