#!/usr/bin/env python
"""Benchmark of hklflow's peak search on a Pilatus CdTe 2M scan (1679 x 1475 pixels).

    python bench/find_peaks.py [--frames 200] [--workdir bench/.data] [--skip-dials]
                               [--repeats 3] [--numpy-frames 20] [--json FILE]

Measured in one run, on this machine, one core per measurement:

1. bare read + decompress (open_frames(...).iter_chunks(16, reuse_buffer=True), from the
   page cache: the file is read once before timing);
2. hklflow's search() end to end (reading and decompression included; NUMBA_NUM_THREADS=1),
   and its parts: the strong_pixels_frame kernel alone and the PeakAssembler alone (frames
   already in memory), and the hot-pixel probe;
3. a plain numpy/scipy version of the same detection (strong_pixels_numpy per frame,
   scipy.ndimage.label in 3D, scipy.ndimage centroids/sums), on a subset of frames;
4. DIALS dials.find_spots nproc=1 on the same frames written as Pilatus miniCBF (the CBF
   conversion and dials.import are not timed; find_spots' time includes CBF decompression
   and its process start);
5. peak memory (max RSS) of the search in a subprocess, for N and 4N frames (the 4N-frame
   file is the N-frame file's compressed chunks copied 4 times);
6. extrapolation to a 3650-frame scan.

The simulated scan is written once into the work directory and reused.  Every timing is
repeated (--repeats, default 3) and the best is reported with the spread, because the
machine is shared and noisy.

This file also runs itself as a child process (first argument `_simulate` or `_search`);
those modes are internal.
"""
from __future__ import annotations

import os
import sys

_MODE = sys.argv[1] if len(sys.argv) > 1 and sys.argv[1].startswith("_") else None
if _MODE != "_simulate":
    # one core: numba's threads, and any BLAS/OpenMP pool numpy or scipy might start
    for _var in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                 "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
        os.environ[_var] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import platform  # noqa: E402
import re  # noqa: E402
import resource  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
from dataclasses import asdict, replace  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent
DETECTOR = "PilatusCdTe2M"
DATASET = "/entry/data/data"
SCAN_FRAMES_FULL = 3650  # a full 365 deg scan at 0.1 deg
GOALS = {
    "end_to_end_mpix_per_core": 100.0,
    "speedup_vs_numpy": 10.0,
    "speedup_vs_dials": 1.0,
}
SIM_VERSION = 1  # bump when the simulated scan changes, so old data are not reused
# the crystal: the demo's LSCO (small cell: few spots, ~60 reflections in 20 deg), or a
# mid-size monoclinic cell (~1400 reflections in 20 deg) that loads the 3D assembly and
# DIALS's labelling the way a crowded real scan does
SAMPLES = {
    "demo": None,
    "dense": {"name": "mono", "space_group": "P 1 21/c 1",
              "cell": (10.5, 12.1, 16.3, 90.0, 104.5, 90.0)},
}

log = logging.getLogger("bench")


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------
# Machine
# --------------------------------------------------------------------------------------
def machine_info() -> dict:
    model = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = "?"
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem = f"{int(line.split()[1]) / 2**20:.1f} GiB"
    except OSError:
        pass
    import h5py
    import numba
    import scipy

    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        affinity = os.cpu_count()
    return {
        "cpu_model": model, "cores_online": os.cpu_count(), "cores_usable": affinity,
        "memory": mem, "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(), "numpy": np.__version__, "numba": numba.__version__,
        "scipy": scipy.__version__, "h5py": h5py.__version__,
        "numba_num_threads": os.environ.get("NUMBA_NUM_THREADS"),
        "note": "shared, noisy machine: every timing repeated, best reported with the spread",
    }


# --------------------------------------------------------------------------------------
# The simulated scan
# --------------------------------------------------------------------------------------
def scan_spec(nframes: int, sample: str = "demo"):
    """A 0.1 deg-step rotation scan on a Pilatus CdTe 2M, beam near the middle, 0.3 m,
    of the demo's crystal (or another one, SAMPLES), at one temperature, one entry."""
    from hklflow.geometry import pyfai_detector
    from hklflow.simulation.experiment import EntryModel, preset

    det = pyfai_detector(DETECTOR)
    ny, nx = (int(n) for n in det.shape)
    pix1, pix2 = float(det.pixel1), float(det.pixel2)
    p1, p2 = (ny / 2 + 0.3) * pix1, (nx / 2 - 0.4) * pix2
    base = preset("demo")
    crystal = replace(base.samples[0], temperatures=(300.0,), **(SAMPLES[sample] or {}))
    return replace(
        base, name="bench_find_peaks_2m", detector=DETECTOR,
        calibration_geometry=(0.3, p1, p2, 0.0042, -0.0031, 0.011),
        rough_start=(0.298, p1 + 4 * pix1, p2 - 4 * pix2),
        scan_drift=(0.0, 0.0, 0.0, 0.0, 0.0, 0.0),
        samples=(crystal,),
        entries=(EntryModel("f1"),),
        nframes=int(nframes), phi_start=-90.0, phi_step=0.1, mosaicity_deg=0.05)


def scan_geometry(spec):
    from hklflow.geometry import ScanAngles

    return spec.true_scan_geometry(spec.entries[0]), ScanAngles(spec.phi_start, spec.phi_step,
                                                                 spec.nframes)


def _spec_key(spec) -> str:
    from hklflow.simulation.experiment import _jsonable

    return json.dumps({"version": SIM_VERSION, "spec": _jsonable(asdict(spec))}, sort_keys=True)


def data_paths(workdir: Path, nframes: int, sample: str) -> dict:
    stem = f"scan2m_{sample}_{nframes}f"
    return {
        "h5": workdir / f"{stem}.h5",
        "key": workdir / f"{stem}.spec.json",
        "truth": workdir / f"{stem}.reflections.npz",
        "h5x4": workdir / f"scan2m_{sample}_{4 * nframes}f_copied.h5",
        "warmup": workdir / f"scan2m_{sample}_warmup_8f.h5",
        "cbf": workdir / f"{stem}_cbf",
        "dials": workdir / f"{stem}_dials",
    }


def simulate_child(workdir: Path, nframes: int, sample: str) -> None:
    """(child process, numba threads at the default) render the scan into HDF5."""
    from hklflow.simulation.experiment import (Hdf5StackWriter, detector_defects,
                                               predict_scan_reflections, render_scan)

    paths = data_paths(workdir, nframes, sample)
    spec = scan_spec(nframes, sample)
    sample, entry = spec.samples[0], spec.entries[0]
    T = sample.temperatures[0]
    t0 = time.monotonic()
    truth, scan = predict_scan_reflections(spec, sample, T, entry)
    defects, _ = detector_defects(spec, truth.geometry)
    writer = Hdf5StackWriter(paths["h5"], spec.nframes, truth.geometry.shape)
    done = [0]

    def write(start, frames):
        writer(start, frames)
        done[0] = start + len(frames)
        say(f"  simulated {done[0]}/{nframes} frames ({time.monotonic() - t0:.0f} s)")

    render_scan(spec, sample, T, entry, truth, scan, write, defects)
    writer.close()
    np.savez(paths["truth"], **{k: np.asarray(v) for k, v in truth.reflections.items()})
    paths["key"].write_text(_spec_key(spec))
    say(f"  {len(truth.reflections['h'])} reflections in the scan; "
        f"{time.monotonic() - t0:.1f} s")


def ensure_scan(workdir: Path, nframes: int, sample: str) -> tuple[dict, object, float | None]:
    """Simulate the scan unless the work directory already has it (same spec)."""
    paths = data_paths(workdir, nframes, sample)
    spec = scan_spec(nframes, sample)
    if paths["h5"].exists() and paths["key"].exists() and paths["key"].read_text() == _spec_key(spec):
        say(f"reusing the simulated scan {paths['h5']}")
        return paths, spec, None
    workdir.mkdir(parents=True, exist_ok=True)
    for k in ("h5", "key", "h5x4", "warmup"):
        paths[k].unlink(missing_ok=True)
    shutil.rmtree(paths["cbf"], ignore_errors=True)
    shutil.rmtree(paths["dials"], ignore_errors=True)
    say(f"simulating {nframes} frames of {DETECTOR} into {paths['h5']} (once; ~1 min per 200 "
        "frames) ...")
    env = dict(os.environ)
    for var in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS"):
        env.pop(var, None)
    t0 = time.monotonic()
    subprocess.run([sys.executable, str(Path(__file__).resolve()), "_simulate", str(workdir),
                    str(nframes), sample], check=True, env=env)
    return paths, spec, time.monotonic() - t0


def _filters(dset) -> list:
    pl = dset.id.get_create_plist()
    return [pl.get_filter(i)[:3] for i in range(pl.get_nfilters())]


def copy_chunks(src: Path, dst: Path, nframes_out: int) -> None:
    """A stack of nframes_out frames made of src's compressed chunks, cycled (no
    decompression): one frame per chunk, bitshuffle-LZ4 like Hdf5StackWriter; the filter
    pipeline is checked equal to src's."""
    import h5py
    import hdf5plugin

    tmp = dst.with_name(dst.name + ".part")
    with h5py.File(src, "r") as fi, h5py.File(tmp, "w") as fo:
        d = fi[DATASET]
        n, ny, nx = d.shape
        if d.chunks != (1, ny, nx):
            raise RuntimeError(f"{src}: expected one frame per chunk, got chunks {d.chunks}")
        out = fo.create_dataset(DATASET, shape=(nframes_out, ny, nx), dtype=d.dtype,
                                chunks=(1, ny, nx), **hdf5plugin.Bitshuffle(cname="lz4"))
        if _filters(out) != _filters(d):
            raise RuntimeError(f"{src}: filters {_filters(d)} differ from bitshuffle-LZ4's "
                               f"{_filters(out)}; cannot copy chunks")
        for i in range(nframes_out):
            mask, chunk = d.id.read_direct_chunk((i % n, 0, 0))
            out.id.write_direct_chunk((i, 0, 0), chunk, mask)
        if not np.array_equal(out[nframes_out - 1], d[(nframes_out - 1) % n]):
            raise RuntimeError(f"{dst}: copied chunks do not decompress to the source frames")
    os.replace(tmp, dst)


def ensure_copies(paths: dict, nframes: int) -> None:
    if not paths["h5x4"].exists():
        say(f"writing {paths['h5x4'].name}: the compressed chunks copied 4 times ...")
        copy_chunks(paths["h5"], paths["h5x4"], 4 * nframes)
    if not paths["warmup"].exists():
        copy_chunks(paths["h5"], paths["warmup"], 8)


def file_mb(path: Path) -> float:
    return path.stat().st_size / 1e6


# --------------------------------------------------------------------------------------
# Timing helpers
# --------------------------------------------------------------------------------------
def timing(values: list[float]) -> dict:
    v = sorted(values)
    return {"best_s": v[0], "worst_s": v[-1], "median_s": v[len(v) // 2], "runs_s": values,
            "spread_pct": 100.0 * (v[-1] - v[0]) / v[0] if v[0] > 0 else 0.0}


def mpix(npix: float, seconds: float) -> float:
    return npix / seconds / 1e6 if seconds > 0 else float("nan")


def quiet_logger() -> logging.Logger:
    lg = logging.getLogger("bench.find_peaks")
    lg.setLevel(logging.WARNING)
    return lg


# --------------------------------------------------------------------------------------
# 1. read + decompress
# --------------------------------------------------------------------------------------
def time_read(path: Path, repeats: int) -> dict:
    from hklflow.frames import open_frames

    runs = []
    for _ in range(repeats):
        with open_frames(str(path)) as st:
            t0 = time.perf_counter()
            for _start, _chunk in st.iter_chunks(16, reuse_buffer=True):
                pass
            runs.append(time.perf_counter() - t0)
    return timing(runs)


# --------------------------------------------------------------------------------------
# 2. hklflow: search end to end, and its parts
# --------------------------------------------------------------------------------------
def run_search(path: Path, geometry, angles, params):
    from hklflow.frames import open_frames
    from hklflow.steps.find_peaks import search

    with open_frames(str(path)) as st:
        c0 = time.process_time()
        t0 = time.perf_counter()
        res = search(st, geometry, angles, params, quiet_logger())
        wall = time.perf_counter() - t0
        cpu = time.process_time() - c0
    return res, wall, cpu


def time_search(path: Path, geometry, angles, params, repeats: int) -> dict:
    runs, cpus, res = [], [], None
    for _ in range(repeats):
        res, wall, cpu = run_search(path, geometry, angles, params)
        runs.append(wall)
        cpus.append(cpu)
    t = timing(runs)
    t["cpu_over_wall_best"] = cpus[runs.index(min(runs))] / min(runs)
    t["peaks"] = int(len(res.peaks["n_pixels"]))
    t["strong_pixels"] = int(res.strong_pixels)
    t["hot_pixels"] = int(len(res.hot_pixels))
    return t


def search_masks(geometry, params):
    from hklflow.steps.find_peaks import annulus_map, usable_pixels

    usable = usable_pixels(geometry, params)
    annulus, _ = annulus_map(geometry, usable, params.q_annulus)
    return usable, annulus


def time_parts(path: Path, geometry, params, repeats: int) -> dict:
    """strong_pixels_frame alone and PeakAssembler alone, over frames already read (only
    the calls are timed), and the hot-pixel probe search() runs before its pass."""
    from hklflow import spotfinding as sf
    from hklflow.frames import open_frames
    from hklflow.steps.find_peaks import find_hot_pixels

    usable, annulus = search_masks(geometry, params)
    u8 = usable.astype(np.uint8)
    ny, nx = usable.shape
    half_r, half_c = params.window[0] // 2, params.window[1] // 2
    k_runs, a_runs, p_runs, strong = [], [], [], 0
    for _ in range(repeats):
        with open_frames(str(path)) as st:
            tmax = int(np.iinfo(st.dtype).max) if np.issubdtype(st.dtype, np.integer) else 2**62
            cap = max(4096, ny * nx // 200)
            bufs = [np.empty(cap, np.int32), np.empty(cap, np.int32), np.empty(cap), np.empty(cap)]
            stats = np.zeros(len(sf.FRAME_STATS))
            work = np.zeros((3, nx + 2 * half_c + 1), dtype=np.int64)
            asm = sf.PeakAssembler((ny, nx))
            tk = ta = 0.0
            strong = 0
            for start, chunk in st.iter_chunks(params.chunk_frames, reuse_buffer=True):
                for i, fr in enumerate(chunk):
                    t0 = time.perf_counter()
                    while True:
                        n = sf.strong_pixels_frame(
                            fr, u8, annulus, half_r, half_c, params.sigma_background,
                            params.sigma_strong, params.min_local, params.global_threshold,
                            float(params.absolute_threshold or 0.0), params.method == "absolute",
                            tmax, bufs[0], bufs[1], bufs[2], bufs[3], stats, work)
                        if n >= 0:
                            break
                        bufs = [np.empty(2 * len(b), b.dtype) for b in bufs]
                    t1 = time.perf_counter()
                    rows, cols, vals, bg = (b[:n].copy() for b in bufs)
                    t2 = time.perf_counter()
                    asm.add_frame(start + i, rows, cols, vals, bg)
                    t3 = time.perf_counter()
                    tk += t1 - t0
                    ta += t3 - t2
                    strong += n
            t0 = time.perf_counter()
            table = asm.finish()
            ta += time.perf_counter() - t0
            k_runs.append(tk)
            a_runs.append(ta)
            t0 = time.perf_counter()
            find_hot_pixels(st, usable, annulus, params, tmax)
            p_runs.append(time.perf_counter() - t0)
    return {"kernel": timing(k_runs), "assembler": timing(a_runs), "hot_probe": timing(p_runs),
            "strong_pixels_no_hot_mask": int(strong), "peaks_before_filters": int(len(table))}


# --------------------------------------------------------------------------------------
# 3. plain numpy / scipy
# --------------------------------------------------------------------------------------
def numpy_structure() -> np.ndarray:
    """8-connected in the frame, and the same pixel in the previous/next frame: the
    connectivity of PeakAssembler."""
    s = np.zeros((3, 3, 3), dtype=bool)
    s[1] = True
    s[0, 1, 1] = s[2, 1, 1] = True
    return s


def numpy_peaks(frames: np.ndarray, first: int, valid: np.ndarray, params, trusted_max: int):
    """Peaks of a block of frames with numpy + scipy.ndimage: strong maps, 3D labels,
    first-moment centroids (background-subtracted weights, like the assembler), sums."""
    from scipy import ndimage

    from hklflow import spotfinding as sf

    k = len(frames)
    strong = np.empty(frames.shape, dtype=bool)
    mean = np.empty(frames.shape, dtype=np.float64)
    hr, hc = params.window[0] // 2, params.window[1] // 2
    for i in range(k):
        strong[i], mean[i] = sf.strong_pixels_numpy(
            frames[i], valid, hr, hc, params.sigma_background, params.sigma_strong,
            params.min_local, params.global_threshold, trusted_max)
    labels, n = ndimage.label(strong, structure=numpy_structure())
    idx = np.arange(1, n + 1)
    w = np.where(strong, np.maximum(frames - np.nan_to_num(mean), 0.0), 0.0)
    com = np.asarray(ndimage.center_of_mass(w, labels, idx)).reshape(-1, 3)
    npix = ndimage.sum_labels(strong, labels, idx)
    raw = ndimage.sum_labels(frames, labels, idx)
    bg = ndimage.sum_labels(np.nan_to_num(mean), labels, idx)
    keep = (npix >= params.min_spot_size) & (npix <= params.max_spot_size)
    # centroid convention of hklflow: pixel centre at +0.5, frame index offset
    cz, cy, cx = (com[keep] + 0.5).T
    return {"frame": cz + first, "row": cy, "col": cx, "n_pixels": npix[keep],
            "int_sum": raw[keep] - bg[keep]}, int(strong.sum())


def time_numpy(path: Path, geometry, params, nsub: int, repeats: int) -> dict:
    """numpy version over the first nsub frames, labelled in blocks of chunk_frames
    (peaks crossing a block boundary are not joined: a join step is not counted, so this
    is slightly optimistic for numpy).  Reading is included in the time."""
    from hklflow.frames import open_frames

    usable, _ = search_masks(geometry, params)
    runs, npeaks, nstrong = [], 0, 0
    for _ in range(repeats):
        with open_frames(str(path)) as st:
            nsub_eff = min(nsub, st.nframes)
            tmax = int(np.iinfo(st.dtype).max) if np.issubdtype(st.dtype, np.integer) else 2**62
            t0 = time.perf_counter()
            npeaks = nstrong = 0
            for start, chunk in st.iter_chunks(params.chunk_frames, 0, nsub_eff,
                                               reuse_buffer=True):
                peaks, ns = numpy_peaks(chunk, start, usable, params, tmax)
                npeaks += len(peaks["n_pixels"])
                nstrong += ns
            runs.append(time.perf_counter() - t0)
    t = timing(runs)
    t.update(frames=nsub_eff, peaks=npeaks, strong_pixels=nstrong)
    return t


def kernel_strong_count(path: Path, geometry, params, nsub: int) -> int:
    """Strong pixels of the compiled kernel on the numpy subset (same masks): the two
    must decide alike."""
    from hklflow import spotfinding as sf
    from hklflow.frames import open_frames

    usable, annulus = search_masks(geometry, params)
    u8 = usable.astype(np.uint8)
    ny, nx = usable.shape
    hr, hc = params.window[0] // 2, params.window[1] // 2
    total = 0
    with open_frames(str(path)) as st:
        tmax = int(np.iinfo(st.dtype).max)
        cap = ny * nx
        bufs = [np.empty(cap, np.int32), np.empty(cap, np.int32), np.empty(cap), np.empty(cap)]
        stats = np.zeros(len(sf.FRAME_STATS))
        work = np.zeros((3, nx + 2 * hc + 1), dtype=np.int64)
        for _s, chunk in st.iter_chunks(params.chunk_frames, 0, min(nsub, st.nframes)):
            for fr in chunk:
                total += sf.strong_pixels_frame(
                    fr, u8, annulus, hr, hc, params.sigma_background, params.sigma_strong,
                    params.min_local, params.global_threshold, 0.0, False, tmax, *bufs, stats,
                    work)
    return total


# --------------------------------------------------------------------------------------
# 4. DIALS
# --------------------------------------------------------------------------------------
def dials_env() -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP")}
    venv_bin = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep)
                                  if p and p != venv_bin)
    env["OMP_NUM_THREADS"] = "1"
    return env


def dials_missing() -> str | None:
    missing = [p for p in ("dials.import", "dials.find_spots")
               if shutil.which(p, path=dials_env()["PATH"]) is None]
    if missing:
        return (f"DIALS not found ({', '.join(missing)} not on PATH). On Debian 12: "
                "`apt-get install python3-dials` (DIALS 3.12; it runs under the system Python). "
                "Or run with --skip-dials.")
    return None


def ensure_cbf(paths: dict, spec, geometry, nframes: int) -> float | None:
    """Write the scan as one Pilatus miniCBF per frame (not timed); reuse if complete."""
    from hklflow.frames import open_frames
    from hklflow.simulation.experiment import CbfFramesWriter

    folder = paths["cbf"]
    done = folder / "COMPLETE"
    if done.exists() and done.read_text() == paths["key"].read_text():
        return None
    shutil.rmtree(folder, ignore_errors=True)
    shutil.rmtree(paths["dials"], ignore_errors=True)
    say(f"writing {nframes} miniCBF files into {folder} for DIALS (once, not timed) ...")
    t0 = time.monotonic()
    writer = CbfFramesWriter(folder, "bench", spec, geometry)
    with open_frames(str(paths["h5"])) as st:
        for start, chunk in st.iter_chunks(16):
            writer(start, chunk)
            say(f"  {start + len(chunk)}/{nframes} CBF files ({time.monotonic() - t0:.0f} s)")
    done.write_text(paths["key"].read_text())
    return time.monotonic() - t0


def _run_dials(args: list[str], cwd: Path, logname: str) -> tuple[float, float, str]:
    """Run a DIALS command; (wall s, cpu s of the child, stdout)."""
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(args, cwd=cwd, env=dials_env(), capture_output=True, text=True)
    wall = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    (cwd / logname).write_text(proc.stdout + "\n--- stderr ---\n" + proc.stderr)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-25:])
        raise RuntimeError(f"{' '.join(args[:1])} failed (exit {proc.returncode}); log "
                           f"{cwd / logname}:\n{tail}")
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    return wall, cpu, proc.stdout


def time_dials(paths: dict, nframes: int, repeats: int, algorithms: list[str]) -> dict:
    wd = paths["dials"]
    wd.mkdir(parents=True, exist_ok=True)
    expt = wd / "imported.expt"
    if not expt.exists():
        say("dials.import (not timed) ...")
        _run_dials(["dials.import", f"template={paths['cbf'] / 'bench_#####.cbf'}",
                    "output.experiments=imported.expt"], wd, "dials.import.out")
    out = {"version": dials_version(), "import": str(expt), "algorithms": {}}
    for algo in algorithms:
        runs, cpus, spots = [], [], None
        for i in range(repeats):
            say(f"dials.find_spots nproc=1 threshold.algorithm={algo} (run {i + 1}/{repeats}) ...")
            refl = f"strong_{algo}.refl"
            wall, cpu, stdout = _run_dials(
                ["dials.find_spots", "imported.expt", "nproc=1",
                 f"spotfinder.threshold.algorithm={algo}", f"output.reflections={refl}",
                 f"output.log=dials.find_spots_{algo}.log"], wd, f"find_spots_{algo}_{i}.out")
            if not (wd / refl).exists():
                raise RuntimeError(f"dials.find_spots wrote no {wd / refl}")
            m = re.findall(r"Saved (\d+) reflections", stdout)
            spots = int(m[-1]) if m else None
            runs.append(wall)
            cpus.append(cpu)
        # fixed cost: the same command on one image (process start, imports, setup)
        fixed = []
        for i in range(repeats):
            wall, _cpu, _ = _run_dials(
                ["dials.find_spots", "imported.expt", "nproc=1", "scan_range=1,1",
                 f"spotfinder.threshold.algorithm={algo}", "output.reflections=one_image.refl",
                 "output.log=dials.find_spots_one.log"], wd, f"find_spots_one_{algo}_{i}.out")
            fixed.append(wall)
        t = timing(runs)
        t["cpu_over_wall_best"] = cpus[runs.index(min(runs))] / min(runs)
        t["spots"] = spots
        t["one_image"] = timing(fixed)
        out["algorithms"][algo] = t
    return out


def dials_version() -> str:
    try:
        p = subprocess.run(["dials.version"], env=dials_env(), capture_output=True, text=True,
                           timeout=120)
        return p.stdout.splitlines()[0].strip() if p.stdout else "?"
    except Exception:  # noqa: BLE001 - only a label
        return "?"


# --------------------------------------------------------------------------------------
# 5. memory (child process)
# --------------------------------------------------------------------------------------
def _vmrss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS"):
            return int(line.split()[1])
    return 0


def search_child(h5: str, nframes_spec: int, sample: str) -> None:
    """(child process) search one file; print a JSON line with the memory high-water marks."""
    from hklflow.frames import open_frames
    from hklflow.geometry import ScanAngles
    from hklflow.steps.find_peaks import PeakSearchParams, search

    spec = scan_spec(nframes_spec, sample)
    geometry, _ = scan_geometry(spec)
    params = PeakSearchParams()
    with open_frames(h5) as st:
        angles = ScanAngles(spec.phi_start, spec.phi_step, st.nframes)
        rss0 = _vmrss_kb()
        max0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        t0 = time.perf_counter()
        res = search(st, geometry, angles, params, quiet_logger())
        wall = time.perf_counter() - t0
        nf = st.nframes
    print(json.dumps({"frames": nf, "seconds": wall, "peaks": int(len(res.peaks["n_pixels"])),
                      "rss_before_search_kb": rss0, "maxrss_before_search_kb": max0,
                      "maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))


def measure_memory(paths: dict, nframes: int, sample: str) -> dict:
    out = {}
    for key in ("h5", "h5x4"):
        p = subprocess.run([sys.executable, str(Path(__file__).resolve()), "_search",
                            str(paths[key]), str(nframes), sample], capture_output=True,
                           text=True)
        if p.returncode != 0:
            raise RuntimeError(f"search subprocess on {paths[key]} failed:\n{p.stderr[-3000:]}")
        r = json.loads(p.stdout.strip().splitlines()[-1])
        out[str(r["frames"])] = r
    return out


# --------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------
def fmt_t(t: dict) -> str:
    return f"{t['best_s']:8.2f} s (spread {t['spread_pct']:4.0f}%)"


def verdict(value, goal) -> str:
    if value is None or not np.isfinite(value):
        return "not measured"
    return "met" if value >= goal else "NOT met"


def report(r: dict) -> str:
    m = r["machine"]
    d = r["data"]
    npx = d["frames"] * d["pixels_per_frame"]
    L = []
    add = L.append
    add("=" * 96)
    add("hklflow peak-search benchmark")
    add(f"machine: {m['cpu_model']}, {m['cores_online']} cores online ({m['cores_usable']} usable), "
        f"{m['memory']}, load average at start {m['load_average_at_start']}")
    add(f"         python {m['python']}, numpy {m['numpy']}, numba {m['numba']}, "
        f"scipy {m['scipy']}, h5py {m['h5py']}; NUMBA_NUM_THREADS={m['numba_num_threads']}")
    add(f"         {m['note']} ({r['repeats']} runs each; 'spread' = (worst - best) / best)")
    add(f"data:    {d['frames']} frames of {DETECTOR} {d['shape'][0]}x{d['shape'][1]} int32 "
        f"({npx / 1e6:.0f} Mpixel), bitshuffle-LZ4 HDF5, one frame per chunk, "
        f"{d['file_mb']:.0f} MB ({d['file_mb'] / d['frames']:.2f} MB/frame)")
    add(f"         {d['path']}; 0.1 deg/frame, mosaicity {d['mosaicity_deg']} deg, "
        f"{d['reflections']} simulated reflections")
    add(f"         crystal '{d['sample']}': {d['space_group']}, cell "
        f"{' '.join(f'{v:g}' for v in d['cell'])}; the file is read once before timing "
        "(so reads come from the page cache)")
    add("-" * 96)
    add(f"{'measurement':58s} {'time (best)':>24s} {'Mpix/s/core':>11s}")
    rd = r["read"]
    add(f"{'1. read + decompress (iter_chunks(16), page cache)':58s} {fmt_t(rd)} "
        f"{rd['mpix_per_s']:11.1f}")
    s = r["search"]
    add(f"{'2. hklflow search() end to end (read included)':58s} {fmt_t(s)} "
        f"{s['mpix_per_s']:11.1f}")
    add(f"{'     cpu/wall of that run (1.00 = one core)':58s} {s['cpu_over_wall_best']:24.2f}")
    p = r["parts"]
    add(f"{'   strong_pixels_frame kernel alone (frames in memory)':58s} {fmt_t(p['kernel'])} "
        f"{p['kernel']['mpix_per_s']:11.1f}")
    add(f"{'   PeakAssembler alone (add_frame + finish)':58s} {fmt_t(p['assembler'])} "
        f"{p['assembler']['mpix_per_s']:11.1f}")
    add(f"{'   hot-pixel probe (first 20 frames read + kernel)':58s} {fmt_t(p['hot_probe'])}")
    b = r["breakdown_s"]
    add(f"   where search()'s {s['best_s']:.2f} s go (best runs): read {b['read']:.2f}, kernel "
        f"{b['kernel']:.2f}, assembler {b['assembler']:.2f}, hot probe {b['hot_probe']:.2f}, "
        f"rest {b['rest']:.2f} (setup, masks, per-frame bookkeeping, max projection)")
    add(f"   {s['peaks']} peaks from {s['strong_pixels']} strong pixels "
        f"({100 * s['strong_pixels'] / npx:.3f}% of pixels), {s['hot_pixels']} hot pixels")
    nu = r.get("numpy")
    if nu:
        add(f"{'3. numpy/scipy version (read included), ' + str(nu['frames']) + ' frames':58s} "
            f"{fmt_t(nu)} {nu['mpix_per_s']:11.1f}")
        add(f"   per frame {nu['best_s'] / nu['frames']:.3f} s (hklflow {s['best_s'] / d['frames']:.4f} s)"
            f"; extrapolated to {d['frames']} frames {nu['extrapolated_s']:.1f} s; "
            f"hklflow/numpy = {r['ratios']['hklflow_over_numpy']:.1f}x")
        add(f"   same strong pixels as the kernel on these frames: {nu['strong_pixels']} vs "
            f"{nu['kernel_strong_pixels']} ({'identical' if nu['strong_pixels'] == nu['kernel_strong_pixels'] else 'DIFFERENT'}); "
            f"{nu['peaks']} peaks (blocks of {r['params']['chunk_frames']} frames, not joined across blocks)")
    else:
        add("3. numpy/scipy version: skipped")
    dl = r.get("dials")
    if dl and "error" not in dl:
        add(f"4. DIALS {dl['version']}, dials.find_spots nproc=1 on the miniCBF frames "
            "(time includes process start and CBF decompression)")
        for algo, t in dl["algorithms"].items():
            tag = " (DIALS default)" if algo == "dispersion_extended" else " (hklflow's test)"
            add(f"{'   threshold.algorithm=' + algo + tag:58s} {fmt_t(t)} {t['mpix_per_s']:11.1f}")
            add(f"     {t['spots']} spots; cpu/wall {t['cpu_over_wall_best']:.2f}; one image "
                f"(start-up + 1 frame) {t['one_image']['best_s']:.2f} s; "
                f"hklflow/DIALS = {t['hklflow_over_dials']:.1f}x")
    elif dl and "error" in dl:
        add(f"4. DIALS: not measured: {dl['error']}")
    else:
        add("4. DIALS: skipped (--skip-dials)")
    mem = r.get("memory")
    if mem:
        parts = [f"{k} frames: max RSS {v['maxrss_kb'] / 1024:.0f} MiB "
                 f"(before search {v['rss_before_search_kb'] / 1024:.0f} MiB; {v['seconds']:.1f} s)"
                 for k, v in mem["runs"].items()]
        add(f"5. peak memory of search() in a subprocess: {'; '.join(parts)}")
        add(f"   growth from {mem['frames'][0]} to {mem['frames'][1]} frames: "
            f"{mem['growth_mib']:+.0f} MiB")
    ex = r["extrapolation"]
    add(f"6. extrapolated to a {SCAN_FRAMES_FULL}-frame 2M scan (one core; measured time x "
        f"{SCAN_FRAMES_FULL}/{d['frames']}; fixed+per-frame where given):")
    for k, v in ex.items():
        add(f"   {k:56s} {v:9.0f} s  ({v / 60:5.1f} min)")
    add("-" * 96)
    add("goals (from the issue)                                     measured        goal    ")
    g = r["goals"]
    for name, (val, goal, unit) in g.items():
        vs = "n/a" if val is None else f"{val:.1f}{unit}"
        add(f"   {name:55s} {vs:>10s}  >= {goal:g}{unit:2s}  {verdict(val, goal)}")
    add("=" * 96)
    return "\n".join(L)


# --------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------
def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", type=int, default=200, help="frames in the scan (default 200)")
    p.add_argument("--workdir", type=Path, default=HERE / ".data",
                   help="where the simulated scan and DIALS files live (default bench/.data)")
    p.add_argument("--sample", choices=sorted(SAMPLES), default="demo",
                   help="crystal: 'demo' (the demo's LSCO, I4/mmm 3.78/13.23 A: few spots) or "
                        "'dense' (P21/c 10.5/12.1/16.3 A: ~20x more spots)")
    p.add_argument("--skip-dials", action="store_true", help="do not run DIALS")
    p.add_argument("--skip-memory", action="store_true", help="do not run the memory subprocesses")
    p.add_argument("--repeats", type=int, default=3, help="runs of each timing (default 3)")
    p.add_argument("--numpy-frames", type=int, default=20,
                   help="frames for the numpy version (default 20; 0 skips it)")
    p.add_argument("--dials-algorithms", default="dispersion,dispersion_extended",
                   help="comma-separated DIALS threshold algorithms to time (default "
                        "dispersion,dispersion_extended); the first is the one of the ratio")
    p.add_argument("--json", type=Path, help="write the results as JSON here (else to stdout)")
    return p


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    if args.frames < 20:
        say("--frames must be at least 20 (the search probes 20 frames for hot pixels)")
        return 2
    repeats = max(1, args.repeats)
    workdir = args.workdir.resolve()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    from hklflow.steps.find_peaks import PeakSearchParams

    r: dict = {"machine": machine_info(), "repeats": repeats}
    say(f"machine: {r['machine']['cpu_model']}, {r['machine']['cores_online']} cores; "
        "shared and noisy: each timing is repeated")
    paths, spec, sim_s = ensure_scan(workdir, args.frames, args.sample)
    ensure_copies(paths, args.frames)
    geometry, angles = scan_geometry(spec)
    ny, nx = geometry.shape
    params = PeakSearchParams()
    nref = len(np.load(paths["truth"])["h"]) if paths["truth"].exists() else None
    r["data"] = {"path": str(paths["h5"]), "frames": args.frames, "shape": [ny, nx],
                 "pixels_per_frame": ny * nx, "file_mb": file_mb(paths["h5"]),
                 "mosaicity_deg": spec.mosaicity_deg, "phi_step_deg": spec.phi_step,
                 "reflections": nref, "simulation_s": sim_s, "sample": args.sample,
                 "space_group": spec.samples[0].space_group, "cell": list(spec.samples[0].cell)}
    r["params"] = {k: v for k, v in asdict(params).items()}
    npx = args.frames * ny * nx

    # page cache + numba compilation (the warm-up search compiles or loads every kernel)
    say("reading the file once (page cache) and warming up the compiled kernels ...")
    time_read(paths["h5"], 1)
    run_search(paths["warmup"], geometry, replace(angles, nframes=8), params)

    say("1. read + decompress ...")
    r["read"] = time_read(paths["h5"], repeats)
    r["read"]["mpix_per_s"] = mpix(npx, r["read"]["best_s"])

    say("2. hklflow search() end to end ...")
    r["search"] = time_search(paths["h5"], geometry, angles, params, repeats)
    r["search"]["mpix_per_s"] = mpix(npx, r["search"]["best_s"])
    fixed = timing([run_search(paths["warmup"], geometry, replace(angles, nframes=8), params)[1]
                    for _ in range(repeats)])
    r["search"]["eight_frame_scan"] = fixed
    say("   kernel and assembler alone ...")
    parts = time_parts(paths["h5"], geometry, params, repeats)
    for k in ("kernel", "assembler"):
        parts[k]["mpix_per_s"] = mpix(npx, parts[k]["best_s"])
    r["parts"] = parts
    b = {"read": r["read"]["best_s"], "kernel": parts["kernel"]["best_s"],
         "assembler": parts["assembler"]["best_s"], "hot_probe": parts["hot_probe"]["best_s"]}
    b["rest"] = r["search"]["best_s"] - sum(b.values())
    r["breakdown_s"] = b

    ratios = {}
    if args.numpy_frames > 0:
        say(f"3. numpy/scipy version on {min(args.numpy_frames, args.frames)} frames ...")
        nu = time_numpy(paths["h5"], geometry, params, args.numpy_frames, repeats)
        nu["mpix_per_s"] = mpix(nu["frames"] * ny * nx, nu["best_s"])
        nu["extrapolated_s"] = nu["best_s"] / nu["frames"] * args.frames
        nu["kernel_strong_pixels"] = kernel_strong_count(paths["h5"], geometry, params,
                                                         args.numpy_frames)
        r["numpy"] = nu
        ratios["hklflow_over_numpy"] = r["search"]["mpix_per_s"] / nu["mpix_per_s"]

    if not args.skip_dials:
        why = dials_missing()
        if why:
            say(f"4. DIALS: {why}")
            r["dials"] = {"error": why}
        else:
            try:
                cbf_s = ensure_cbf(paths, spec, geometry, args.frames)
                algos = [a.strip() for a in args.dials_algorithms.split(",") if a.strip()]
                dl = time_dials(paths, args.frames, repeats, algos)
                dl["cbf_conversion_s"] = cbf_s
                for t in dl["algorithms"].values():
                    t["mpix_per_s"] = mpix(npx, t["best_s"])
                    t["hklflow_over_dials"] = r["search"]["mpix_per_s"] / t["mpix_per_s"]
                r["dials"] = dl
                ratios["hklflow_over_dials"] = dl["algorithms"][algos[0]]["hklflow_over_dials"]
                ratios["dials_algorithm_of_ratio"] = algos[0]
            except Exception as exc:  # noqa: BLE001 - report and go on
                say(f"4. DIALS failed: {exc}")
                r["dials"] = {"error": str(exc)}
    r["ratios"] = ratios

    if not args.skip_memory:
        say(f"5. memory: search() in subprocesses on {args.frames} and {4 * args.frames} frames ...")
        runs = measure_memory(paths, args.frames, args.sample)
        keys = sorted(runs, key=int)
        r["memory"] = {"runs": runs, "frames": [int(k) for k in keys],
                       "growth_mib": (runs[keys[-1]]["maxrss_kb"] - runs[keys[0]]["maxrss_kb"]) / 1024}

    # 6. extrapolation
    scale = SCAN_FRAMES_FULL / args.frames
    ex = {"read + decompress alone": r["read"]["best_s"] * scale,
          "hklflow search(), linear": r["search"]["best_s"] * scale}
    f8 = r["search"]["eight_frame_scan"]["best_s"]
    per = (r["search"]["best_s"] - f8) / (args.frames - 8)
    ex["hklflow search(), fixed (8-frame scan) + per frame"] = f8 + per * (SCAN_FRAMES_FULL - 8)
    if "memory" in r and len(r["memory"]["runs"]) == 2:
        (n1, a), (n2, bb) = sorted(((int(k), v["seconds"]) for k, v in r["memory"]["runs"].items()))
        ex[f"hklflow search(), line through the {n1}/{n2}-frame subprocess runs"] = \
            a + (bb - a) / (n2 - n1) * (SCAN_FRAMES_FULL - n1)
    if "numpy" in r:
        ex["numpy/scipy version, linear"] = r["numpy"]["best_s"] / r["numpy"]["frames"] * SCAN_FRAMES_FULL
    if r.get("dials") and "algorithms" in r["dials"]:
        for algo, t in r["dials"]["algorithms"].items():
            ex[f"DIALS find_spots {algo}, linear"] = t["best_s"] * scale
            one = t["one_image"]["best_s"]
            ex[f"DIALS find_spots {algo}, fixed (1 image) + per frame"] = \
                one + (t["best_s"] - one) / (args.frames - 1) * (SCAN_FRAMES_FULL - 1)
    r["extrapolation"] = ex

    r["goals"] = {
        "hklflow end to end, Mpixel/s per core": (r["search"]["mpix_per_s"],
                                                   GOALS["end_to_end_mpix_per_core"], ""),
        "hklflow / numpy (Mpixel/s ratio)": (ratios.get("hklflow_over_numpy"),
                                             GOALS["speedup_vs_numpy"], "x"),
        f"hklflow / DIALS per core ({ratios.get('dials_algorithm_of_ratio', 'not run')})":
            (ratios.get("hklflow_over_dials"), GOALS["speedup_vs_dials"], "x"),
    }
    r["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    text = report(r)
    print(text, flush=True)
    js = json.dumps(r, indent=1, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o))
    if args.json:
        args.json.write_text(js + "\n")
        say(f"JSON written to {args.json}")
    else:
        print(js)
    return 0


if __name__ == "__main__":
    if _MODE == "_simulate":
        simulate_child(Path(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
    elif _MODE == "_search":
        search_child(sys.argv[2], int(sys.argv[3]), sys.argv[4])
    else:
        sys.exit(main())
