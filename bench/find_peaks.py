#!/usr/bin/env python
"""Benchmark of hklflow's peak search on a Pilatus CdTe 2M scan (1679 x 1475 pixels).

    python bench/find_peaks.py [--frames 200] [--workdir bench/.data] [--sample demo|dense]
                               [--skip-dials] [--skip-memory] [--repeats 3]
                               [--numpy-frames 20] [--json FILE]

Measured in one run, on this machine, one core per measurement (NUMBA_NUM_THREADS=1):

1. bare read + decompress (open_frames(...).iter_chunks(16, reuse_buffer=True), from the
   page cache: the file is read once before timing);
2. hklflow's search() end to end (reading and decompression included), and its parts: the
   strong_pixels_frame kernel alone and the PeakAssembler alone (frames already in memory),
   the hot-pixel probe (the first 20 frames read, their minimum, one kernel call; the pass
   reads them again), search() on an 8-frame scan (fixed costs);
3. a plain numpy/scipy version of the same detection (strong_pixels_numpy per frame,
   scipy.ndimage.label in 3D with the assembler's connectivity, scipy.ndimage centroids and
   sums), on a subset of frames;
4. DIALS dials.find_spots nproc=1 on the same frames written as Pilatus miniCBF (the CBF
   conversion and dials.import are not timed; find_spots' time includes its process
   start-up and CBF decompression);
5. peak memory (VmHWM) of search() in a fresh process, for N and 4N frames (the 4N-frame
   file is the N-frame file's compressed chunks copied 4 times);
6. extrapolation to a 3650-frame scan.

The simulated scan is written once into the work directory and reused.  The machine is
shared and noisy: every timing is repeated (--repeats, default 3; the rounds of 1-2 are
interleaved), the best wall time is reported with the spread, the CPU time of that run and
the cores other processes used meanwhile.  See bench/README.md.

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
import re  # noqa: E402
import resource  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
from dataclasses import asdict, replace  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import copy_chunks  # noqa: E402

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
    import h5py
    import numba
    from common import machine_info as base

    return base(numba=numba.__version__, h5py=h5py.__version__,
                numba_num_threads=os.environ.get("NUMBA_NUM_THREADS"))


# --------------------------------------------------------------------------------------
# The simulated scan
# --------------------------------------------------------------------------------------
def scan_spec(nframes: int, sample: str = "demo"):
    """A 0.1 deg-step rotation scan on a Pilatus CdTe 2M, beam near the middle, 0.3 m,
    of the demo's crystal (or another one, SAMPLES), at one temperature, one entry."""
    from hklflow.model.geometry import pyfai_detector
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
    from hklflow.model.geometry import ScanAngles

    return spec.true_scan_geometry(spec.entries[0]), ScanAngles(spec.phi_start, spec.phi_step,
                                                                 spec.nframes)


def _spec_key(spec) -> str:
    return json.dumps({"version": SIM_VERSION, "spec": asdict(spec)}, sort_keys=True, default=str)


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
_TICK = os.sysconf("SC_CLK_TCK")


def machine_busy_s() -> float:
    """CPU seconds all processes of the machine have used (from /proc/stat), steal included."""
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
    except OSError:
        return float("nan")
    # user nice system idle iowait irq softirq steal ...
    return (v[0] + v[1] + v[2] + v[5] + v[6] + (v[7] if len(v) > 7 else 0)) / _TICK


def children_cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


class Meter:
    """Wall time, CPU time of this process and its finished children, and the load that
    other processes put on the machine meanwhile (in cores: a shared machine's noise)."""

    def __enter__(self):
        self.m0, self.ch0 = machine_busy_s(), children_cpu_s()
        self.c0, self.w0 = time.process_time(), time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.wall = time.perf_counter() - self.w0
        self.cpu = time.process_time() - self.c0 + children_cpu_s() - self.ch0
        busy = machine_busy_s() - self.m0
        self.others = max(0.0, busy - self.cpu) / self.wall if self.wall > 0 else 0.0
        return False

    def run(self) -> dict:
        return {"wall_s": self.wall, "cpu_s": self.cpu, "others_cores": self.others}


def summarize(runs: list[dict]) -> dict:
    """Best wall time (the number reported), spread, and the CPU time and the other
    processes' load of that best run."""
    walls = [r["wall_s"] for r in runs]
    k = int(np.argmin(walls))
    best = walls[k]
    return {"best_s": best, "worst_s": max(walls), "spread_pct": 100.0 * (max(walls) - best) / best
            if best > 0 else 0.0, "cpu_s_of_best": runs[k]["cpu_s"],
            "best_cpu_s": min(r["cpu_s"] for r in runs),
            "others_cores_of_best": runs[k]["others_cores"],
            "others_cores_max": max(r["others_cores"] for r in runs), "runs": runs}


def mpix(npix: float, seconds: float) -> float:
    return npix / seconds / 1e6 if seconds and seconds > 0 else float("nan")


def add_rates(t: dict, npix: float) -> dict:
    t["mpix_per_s"] = mpix(npix, t["best_s"])
    t["mpix_per_cpu_s"] = mpix(npix, t["best_cpu_s"])
    return t


def quiet_logger() -> logging.Logger:
    lg = logging.getLogger("bench.find_peaks")
    lg.setLevel(logging.WARNING)
    return lg


def detector_params():
    """The detector's parameters search() takes: no trusted maximum given (the frames'
    dtype maximum), no user mask."""
    from hklflow.settings.params import DetectorParams

    return DetectorParams.defaults(name=DETECTOR)


def _trusted_max(dtype) -> int:
    """search()'s trusted_max (detector.trusted_max None: the dtype's maximum)."""
    return detector_params().trusted_max_for(dtype)


# --------------------------------------------------------------------------------------
# 1. read + decompress
# --------------------------------------------------------------------------------------
def read_once(path: Path, chunk: int = 16) -> dict:
    from hklflow.raw.frames import open_frames

    with open_frames(str(path)) as st:
        st.compiled_decompression = True  # as the step
        with Meter() as m:
            for _start, _chunk in st.iter_chunks(chunk, reuse_buffer=True):
                pass
    return m.run()


# --------------------------------------------------------------------------------------
# 2. hklflow: search end to end, and its parts
# --------------------------------------------------------------------------------------
def search_once(path: Path, geometry, angles, params):
    from hklflow.algorithms.peaks.spotfinding import search
    from hklflow.raw.frames import open_frames

    detector = detector_params()
    with open_frames(str(path)) as st:
        st.compiled_decompression = True  # as the step
        with Meter() as m:
            res = search(st, geometry, replace(angles, nframes=st.nframes), params, detector,
                         quiet_logger())
    return m.run(), res


def search_masks(geometry, params):
    from hklflow.algorithms.peaks.spotfinding import annulus_map
    from hklflow.raw.images import user_mask

    # as search(): detector gaps and the user mask (none here) are not usable
    usable = ~(geometry.detector_mask() | user_mask(detector_params(), geometry.shape))
    annulus, _ = annulus_map(geometry, usable, params.q_annulus)
    return usable, annulus


def chunk_frames(stack, params) -> int:
    """Frames per chunk as search() reads them (reduction.find_peaks.chunk_frames; 'auto':
    about PEAK_CHUNK_BYTES of frames)."""
    return params.frames_per_chunk(stack.dtype.itemsize * int(np.prod(stack.frame_shape)))


class KernelCaller:
    """strong_pixels_frame with search()'s parameters and buffers (public kernel only)."""

    def __init__(self, shape, params, trusted_max, capacity=None):
        from hklflow.algorithms.peaks import spotfinding as sf

        ny, nx = shape
        self.sf, self.p, self.tmax = sf, params, int(trusted_max)
        self.hr, self.hc = params.window[0] // 2, params.window[1] // 2
        cap = capacity or max(4096, ny * nx // 200)
        self.bufs = [np.empty(cap, np.int32), np.empty(cap, np.int32), np.empty(cap),
                     np.empty(cap)]
        self.stats = np.zeros(len(sf.FRAME_STATS))

    def __call__(self, frame, flags) -> int:
        p = self.p
        while True:
            n = self.sf.strong_pixels_frame(
                frame, flags, self.hr, self.hc, p.sigma_background, p.sigma_strong,
                p.min_local, p.global_threshold, float(p.absolute_threshold or 0.0),
                p.method == "absolute", self.tmax, *self.bufs, self.stats)
            if n >= 0:
                return n
            self.bufs = [np.empty(2 * len(b), b.dtype) for b in self.bufs]


def parts_once(path: Path, geometry, params) -> dict:
    """strong_pixels_frame alone and PeakAssembler alone over the frames (read 16 at a
    time; only the calls are timed, wall and thread CPU), and the hot-pixel probe that
    search() runs before its pass on the first 20 frames (read, their minimum, one kernel
    call; the pass reads them again)."""
    from hklflow.algorithms.peaks import spotfinding as sf
    from hklflow.algorithms.peaks.spotfinding import HOT_PROBE_FRAMES, frames_minimum, hot_pixels_in
    from hklflow.raw.frames import open_frames

    usable, annulus = search_masks(geometry, params)
    flags = sf.pixel_flags(usable, annulus)
    with open_frames(str(path)) as st:
        tmax = _trusted_max(st.dtype)
        kernel = KernelCaller(usable.shape, params, tmax)
        asm = sf.PeakAssembler(usable.shape)
        kw = kc = aw = ac = 0.0
        strong = 0
        clock, tclock = time.perf_counter, time.thread_time
        with Meter() as loop:
            for start, chunk in st.iter_chunks(chunk_frames(st, params), reuse_buffer=True):
                for i, fr in enumerate(chunk):
                    w0, c0 = clock(), tclock()
                    n = kernel(fr, flags)
                    w1, c1 = clock(), tclock()
                    rows, cols, vals, bg = (b[:n].copy() for b in kernel.bufs)
                    w2, c2 = clock(), tclock()
                    asm.add_frame(start + i, rows, cols, vals, bg)
                    w3, c3 = clock(), tclock()
                    kw += w1 - w0
                    kc += c1 - c0
                    aw += w3 - w2
                    ac += c3 - c2
                    strong += n
            w0, c0 = clock(), tclock()
            table = asm.finish()
            aw += clock() - w0
            ac += tclock() - c0
        nprobe = min(HOT_PROBE_FRAMES, st.nframes)
        buffer = np.empty((chunk_frames(st, params),) + tuple(st.frame_shape), st.dtype)
        with Meter() as probe:
            hot_pixels_in(frames_minimum(st, nprobe, buffer), nprobe, usable, annulus, params,
                          tmax)
    return {"kernel": {"wall_s": kw, "cpu_s": kc, "others_cores": loop.others},
            "assembler": {"wall_s": aw, "cpu_s": ac, "others_cores": loop.others},
            "hot_probe": probe.run(), "strong": strong, "peaks_before_filters": len(table)}


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
    """Peaks of a block of frames with numpy + scipy.ndimage: strong maps
    (strong_pixels_numpy), 3D labels, first-moment centroids with background-subtracted
    weights (as the assembler), summed intensity; size filter as search()."""
    from scipy import ndimage

    from hklflow.algorithms.peaks import spotfinding as sf

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
    mean = np.nan_to_num(mean)
    w = np.where(strong, np.maximum(frames - mean, 0.0), 0.0)
    com = np.asarray(ndimage.center_of_mass(w, labels, idx)).reshape(-1, 3)
    npix = ndimage.sum_labels(strong, labels, idx)
    raw = ndimage.sum_labels(frames, labels, idx)
    bg = ndimage.sum_labels(mean, labels, idx)
    keep = (npix >= params.min_spot_size) & (npix <= params.max_spot_size)
    cz, cy, cx = (com[keep] + 0.5).T  # hklflow's convention: pixel centre at +0.5
    return {"frame": cz + first, "row": cy, "col": cx, "n_pixels": npix[keep],
            "int_sum": raw[keep] - bg[keep]}, int(strong.sum())


def numpy_once(path: Path, geometry, params, nsub: int):
    """numpy version over the first nsub frames, reading included, labelled in blocks of
    chunk_frames frames (peaks crossing a block boundary are not joined; that join is not
    counted, so this is slightly optimistic for numpy)."""
    from hklflow.raw.frames import open_frames

    usable, _ = search_masks(geometry, params)
    with open_frames(str(path)) as st:
        nsub = min(nsub, st.nframes)
        tmax = _trusted_max(st.dtype)
        npeaks = nstrong = 0
        with Meter() as m:
            for start, chunk in st.iter_chunks(chunk_frames(st, params), 0, nsub, reuse_buffer=True):
                peaks, ns = numpy_peaks(chunk, start, usable, params, tmax)
                npeaks += len(peaks["n_pixels"])
                nstrong += ns
    return m.run(), nsub, npeaks, nstrong


def kernel_strong_count(path: Path, geometry, params, nsub: int) -> int:
    """Strong pixels of the compiled kernel on the numpy subset, same masks (they must
    decide alike)."""
    from hklflow.algorithms.peaks import spotfinding as sf
    from hklflow.raw.frames import open_frames

    usable, annulus = search_masks(geometry, params)
    flags = sf.pixel_flags(usable, annulus)
    total = 0
    with open_frames(str(path)) as st:
        kernel = KernelCaller(usable.shape, params, _trusted_max(st.dtype))
        for _s, chunk in st.iter_chunks(chunk_frames(st, params), 0, min(nsub, st.nframes)):
            for fr in chunk:
                total += kernel(fr, flags)
    return total


# --------------------------------------------------------------------------------------
# 4. DIALS
# --------------------------------------------------------------------------------------
def dials_env() -> dict:
    """The environment for DIALS's command lines: system Python, not this venv."""
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
                "`apt-get install python3-dials` (DIALS 3.12, runs under the system Python), "
                "or run with --skip-dials.")
    return None


def dials_version() -> str:
    try:
        p = subprocess.run(["dials.version"], env=dials_env(), capture_output=True, text=True,
                           timeout=120)
        return p.stdout.splitlines()[0].strip() if p.stdout else "?"
    except Exception:  # noqa: BLE001 - only a label
        return "?"


def ensure_cbf(paths: dict, spec, geometry, nframes: int) -> float | None:
    """Write the scan as one Pilatus miniCBF per frame (not timed); reuse if complete."""
    from hklflow.raw.frames import open_frames
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


def dials_once(args: list[str], cwd: Path, logname: str) -> tuple[dict, str]:
    """Run a DIALS command line; (its Meter run, stdout)."""
    with Meter() as m:
        proc = subprocess.run(args, cwd=cwd, env=dials_env(), capture_output=True, text=True)
    (cwd / logname).write_text(proc.stdout + "\n--- stderr ---\n" + proc.stderr)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-25:])
        raise RuntimeError(f"{args[0]} failed (exit {proc.returncode}); output in "
                           f"{cwd / logname}:\n{tail}")
    return m.run(), proc.stdout


def cbf_read_once(paths: dict) -> dict:
    """Bare read of the miniCBF files with fabio (for scale: DIALS reads them with dxtbx)."""
    import fabio

    files = sorted(paths["cbf"].glob("bench_*.cbf"))
    with Meter() as m:
        for f in files:
            with fabio.open(str(f)) as img:
                _ = img.data
    return m.run()


def measure_dials(paths: dict, nframes: int, repeats: int, algorithms: list[str]) -> dict:
    wd = paths["dials"]
    wd.mkdir(parents=True, exist_ok=True)
    if not (wd / "imported.expt").exists():
        say("dials.import (not timed) ...")
        dials_once(["dials.import", f"template={paths['cbf'] / 'bench_#####.cbf'}",
                    "output.experiments=imported.expt"], wd, "dials.import.out")
    out = {"version": dials_version(), "experiments": str(wd / "imported.expt"),
           "algorithms": {}}
    runs = {a: [] for a in algorithms}
    ones = {a: [] for a in algorithms}
    spots = {}
    for i in range(repeats):
        for algo in algorithms:
            say(f"   dials.find_spots nproc=1 threshold.algorithm={algo} (run {i + 1}/{repeats}) ...")
            refl = f"strong_{algo}.refl"
            (wd / refl).unlink(missing_ok=True)
            run, stdout = dials_once(
                ["dials.find_spots", "imported.expt", "nproc=1",
                 f"spotfinder.threshold.algorithm={algo}", f"output.reflections={refl}",
                 f"output.log=dials.find_spots_{algo}.log"], wd, f"find_spots_{algo}_{i}.out")
            if not (wd / refl).exists():
                raise RuntimeError(f"dials.find_spots wrote no {wd / refl}")
            m = re.findall(r"Saved (\d+) reflections", stdout)
            spots[algo] = int(m[-1]) if m else None
            runs[algo].append(run)
            # the fixed cost: the same command on one image (process start, imports, setup)
            one, _ = dials_once(
                ["dials.find_spots", "imported.expt", "nproc=1", "scan_range=1,1",
                 f"spotfinder.threshold.algorithm={algo}", "output.reflections=one_image.refl",
                 "output.log=dials.find_spots_one.log"], wd, f"find_spots_one_{algo}_{i}.out")
            ones[algo].append(one)
    for algo in algorithms:
        t = summarize(runs[algo])
        t["spots"] = spots[algo]
        t["one_image"] = summarize(ones[algo])
        out["algorithms"][algo] = t
    return out


# --------------------------------------------------------------------------------------
# 5. memory (child process)
# --------------------------------------------------------------------------------------
def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def search_child(h5: str, nframes_spec: int, sample: str) -> None:
    """(child process) search one file; print a JSON line with the peak RSS.

    The peak is VmHWM of /proc/self/status (this process's address space since exec), not
    getrusage's ru_maxrss: Linux carries the parent's high-water mark over fork + exec into
    the child's ru_maxrss (and into the parent's RUSAGE_CHILDREN), so those report the
    benchmark process's size, not the search's."""
    from hklflow.algorithms.peaks.spotfinding import search
    from hklflow.raw.frames import open_frames
    from hklflow.settings.params import PeakSearchParams

    spec = scan_spec(nframes_spec, sample)
    geometry, angles = scan_geometry(spec)
    params = PeakSearchParams.defaults()
    detector = detector_params()
    with open_frames(h5) as st:
        st.compiled_decompression = True  # as the step
        rss0, hwm0 = _status_kb("VmRSS"), _status_kb("VmHWM")
        t0 = time.perf_counter()
        res = search(st, geometry, replace(angles, nframes=st.nframes), params, detector,
                     quiet_logger())
        wall = time.perf_counter() - t0
        nf = st.nframes
    print(json.dumps({"frames": nf, "seconds": wall, "peaks": int(len(res.peaks["n_pixels"])),
                      "rss_before_search_kb": rss0, "peak_rss_before_search_kb": hwm0,
                      "peak_rss_kb": _status_kb("VmHWM")}))


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
W = 112


def row(label: str, t: dict | None = None, rates: bool = True) -> str:
    if t is None:
        return label
    s = f"{label:50.50s} {t['best_s']:8.2f} {t['spread_pct']:5.0f}% {t['cpu_s_of_best']:8.2f}"
    if rates:
        s += f" {t['mpix_per_s']:9.1f} {t['mpix_per_cpu_s']:9.1f}"
    else:
        s += " " * 20
    return s + f" {t['others_cores_of_best']:6.2f}"


def verdict(value, goal) -> str:
    if value is None or not np.isfinite(value):
        return "not measured"
    return "met" if value >= goal else "NOT met"


def report(r: dict) -> str:
    m, d = r["machine"], r["data"]
    npx = d["frames"] * d["pixels_per_frame"]
    L = []
    add = L.append
    add("=" * W)
    add("hklflow peak-search benchmark (bench/find_peaks.py)")
    add(f"machine: {m['cpu_model']}, {m['cores_online']} cores online ({m['cores_usable']} usable), "
        f"{m['memory']}; load average {m['load_average_at_start']} at start, "
        f"{m['load_average_at_end']} at end")
    add(f"         python {m['python']}, numpy {m['numpy']}, numba {m['numba']}, scipy {m['scipy']}, "
        f"h5py {m['h5py']}; NUMBA_NUM_THREADS={m['numba_num_threads']}")
    add(f"         shared and noisy: each timing run {r['repeats']} times (interleaved), the best "
        "wall time reported; 'spread' = (worst - best) / best;")
    add("         'others' = cores used by other processes during that best run (from /proc/stat)")
    add(f"data:    {d['frames']} frames of {DETECTOR} {d['shape'][0]}x{d['shape'][1]} int32 "
        f"({npx / 1e6:.0f} Mpixel), bitshuffle-LZ4 HDF5, one frame per chunk, "
        f"{d['file_mb']:.0f} MB ({d['file_mb'] / d['frames']:.2f} MB/frame)")
    add(f"         {d['path']}")
    add(f"         0.1 deg/frame, mosaicity {d['mosaicity_deg']} deg; crystal '{d['sample']}' "
        f"{d['space_group']} {' '.join(f'{v:g}' for v in d['cell'])}: {d['reflections']} "
        "simulated reflections")
    add("         the file is read once before timing: reads come from the page cache")
    add("-" * W)
    add(f"{'measurement':50s} {'wall s':>8s} {'spread':>6s} {'cpu s':>8s} {'Mpix/s':>9s} "
        f"{'Mpix/cpu-s':>9s} {'others':>6s}")
    add(row("1. read + decompress (iter_chunks(16), cached)", r["read"]))
    s = r["search"]
    add(row("2. hklflow search() end to end, read included", s))
    p = r["parts"]
    add(row("   strong_pixels_frame kernel alone (in memory)", p["kernel"]))
    add(row("   PeakAssembler alone (add_frame + finish)", p["assembler"]))
    add(row("   hot-pixel probe (read + min of 20 frames + kernel)", p["hot_probe"], rates=False))
    add(row("   search() on an 8-frame scan (fixed costs)", s["eight_frame_scan"], rates=False))
    b = r["breakdown_cpu_s"]
    add(f"   search()'s {b['search']:.2f} cpu-s (best run) = read {b['read']:.2f} + kernel "
        f"{b['kernel']:.2f} + assembler {b['assembler']:.2f} + hot probe {b['hot_probe']:.2f} + "
        f"rest {b['rest']:.2f}")
    add("     (rest: masks and Q map, per-frame copies, strong counts, max projection, peak table)")
    add(f"   {s['peaks']} peaks from {s['strong_pixels']} strong pixels "
        f"({1e6 * s['strong_pixels'] / npx:.1f} per Mpixel), {s['hot_pixels']} hot pixels")
    nu = r.get("numpy")
    if nu:
        add(row(f"3. numpy/scipy version, {nu['frames']} frames, read incl.", nu))
        add(f"   per frame {nu['best_s'] / nu['frames']:.3f} s vs hklflow "
            f"{s['best_s'] / d['frames']:.4f} s; hklflow/numpy = "
            f"{r['ratios']['hklflow_over_numpy']:.1f}x (wall), "
            f"{r['ratios']['hklflow_over_numpy_cpu']:.1f}x (cpu)")
        same = "identical" if nu["strong_pixels"] == nu["kernel_strong_pixels"] else "DIFFERENT"
        add(f"   strong pixels numpy {nu['strong_pixels']} vs kernel {nu['kernel_strong_pixels']} "
            f"({same}); {nu['peaks']} peaks (labelled chunk by chunk, chunks of the peak "
            "search's reduction.find_peaks.chunk_frames, not joined across chunks)")
    else:
        add("3. numpy/scipy version: skipped (--numpy-frames 0)")
    dl = r.get("dials")
    if dl and "error" not in dl:
        add(f"4. {dl['version']}: dials.find_spots nproc=1 on the miniCBF files (from "
            "imported.expt to strong.refl;")
        add("   includes process start-up, CBF decompression, shoebox writing; CBF conversion "
            "and dials.import not timed)")
        if dl.get("cbf_read"):
            add(row("   (bare fabio read of the CBF files, for scale)", dl["cbf_read"]))
        for algo, t in dl["algorithms"].items():
            tag = "DIALS default" if algo == "dispersion_extended" else (
                "hklflow's test" if algo == "dispersion" else algo)
            add(row(f"   threshold.algorithm={algo} ({tag})", t))
            add(f"     {t['spots']} spots; one image (start-up) {t['one_image']['best_s']:.2f} s; "
                f"hklflow/DIALS = {t['hklflow_over_dials']:.1f}x (wall), "
                f"{t['hklflow_over_dials_cpu']:.1f}x (cpu)")
    elif dl:
        add(f"4. DIALS: not measured: {dl['error']}")
    else:
        add("4. DIALS: skipped (--skip-dials)")
    mem = r.get("memory")
    if mem:
        add("5. peak memory (VmHWM) of search() alone in a fresh process:")
        for k, v in mem["runs"].items():
            add(f"   {int(k):5d} frames: peak RSS {v['peak_rss_kb'] / 1024:6.0f} MiB (process "
                f"before the search {v['rss_before_search_kb'] / 1024:.0f} MiB); {v['seconds']:.1f} s, "
                f"{v['peaks']} peaks")
        add(f"   growth from {mem['frames'][0]} to {mem['frames'][1]} frames: "
            f"{mem['growth_mib']:+.0f} MiB")
    else:
        add("5. memory: skipped (--skip-memory)")
    add(f"{f'6. extrapolated to a {SCAN_FRAMES_FULL}-frame 2M scan, one core:':65s} "
        f"{'from wall time':>21s} {'from cpu time':>21s}")
    for k, v in r["extrapolation"].items():
        add(f"   {k:62.62s} {v['wall_s']:7.0f} s ({v['wall_s'] / 60:5.1f} min) "
            f"{v['cpu_s']:7.0f} s ({v['cpu_s'] / 60:5.1f} min)")
    add("-" * W)
    add(f"{'goals (from the issue)':58s} {'measured':>10s} {'goal':>8s}")
    for name, g in r["goals"].items():
        val = g["value"]
        vs = "n/a" if val is None else f"{val:.1f}{g['unit']}"
        extra = "" if g.get("cpu_value") is None else f"  (cpu-based {g['cpu_value']:.1f}{g['unit']})"
        add(f"   {name:55s} {vs:>10s} {'>= ' + format(g['goal'], 'g') + g['unit']:>8s}  "
            f"{verdict(val, g['goal'])}{extra}")
    add("=" * W)
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
                   help="comma-separated DIALS threshold algorithms (default "
                        "dispersion,dispersion_extended); the first one gives the goal's ratio")
    p.add_argument("--json", type=Path, help="write the results as JSON here (else to stdout)")
    return p


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    if args.frames < 20:
        say("--frames must be at least 20 (search() probes 20 frames for hot pixels)")
        return 2
    repeats = max(1, args.repeats)
    workdir = args.workdir.resolve()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    logging.getLogger("silx").setLevel(logging.ERROR)
    from hklflow.settings.params import PeakSearchParams

    r: dict = {"machine": machine_info(), "repeats": repeats}
    say(f"machine: {r['machine']['cpu_model']}, {r['machine']['cores_online']} cores; "
        "shared and noisy: each timing is repeated")
    paths, spec, sim_s = ensure_scan(workdir, args.frames, args.sample)
    ensure_copies(paths, args.frames)
    geometry, angles = scan_geometry(spec)
    ny, nx = geometry.shape
    params = PeakSearchParams.defaults()
    nref = len(np.load(paths["truth"])["h"]) if paths["truth"].exists() else None
    r["data"] = {"path": str(paths["h5"]), "frames": args.frames, "shape": [ny, nx],
                 "pixels_per_frame": ny * nx, "file_mb": file_mb(paths["h5"]),
                 "mosaicity_deg": spec.mosaicity_deg, "phi_step_deg": spec.phi_step,
                 "reflections": nref, "simulation_s": sim_s, "sample": args.sample,
                 "space_group": spec.samples[0].space_group, "cell": list(spec.samples[0].cell)}
    r["params"] = asdict(params)
    r["detector_params"] = asdict(detector_params())
    npx = args.frames * ny * nx

    say("reading the file once (page cache) and warming up the compiled kernels ...")
    read_once(paths["h5"])
    search_once(paths["warmup"], geometry, angles, params)

    say(f"1-2. read, search(), kernel and assembler alone: {repeats} interleaved rounds ...")
    reads, searches, eights = [], [], []
    parts = {"kernel": [], "assembler": [], "hot_probe": []}
    res = extra = None
    for i in range(repeats):
        reads.append(read_once(paths["h5"]))
        run, res = search_once(paths["h5"], geometry, angles, params)
        searches.append(run)
        eights.append(search_once(paths["warmup"], geometry, angles, params)[0])
        extra = parts_once(paths["h5"], geometry, params)
        for k in parts:
            parts[k].append(extra[k])
        say(f"   round {i + 1}: read {reads[-1]['wall_s']:.2f} s, search {run['wall_s']:.2f} s, "
            f"kernel {extra['kernel']['wall_s']:.2f} s")
    r["read"] = add_rates(summarize(reads), npx)
    s = add_rates(summarize(searches), npx)
    s.update(peaks=int(len(res.peaks["n_pixels"])), strong_pixels=int(res.strong_pixels),
             hot_pixels=int(len(res.hot_pixels)), eight_frame_scan=summarize(eights))
    r["search"] = s
    r["parts"] = {k: add_rates(summarize(v), npx) for k, v in parts.items()}
    r["parts"]["strong_pixels_no_hot_mask"] = extra["strong"]
    b = {"search": s["best_cpu_s"], "read": r["read"]["best_cpu_s"]}
    for k in parts:
        b[k] = r["parts"][k]["best_cpu_s"]
    b["rest"] = b["search"] - sum(v for k, v in b.items() if k != "search")
    r["breakdown_cpu_s"] = b

    ratios: dict = {}
    if args.numpy_frames > 0:
        nsub = min(args.numpy_frames, args.frames)
        say(f"3. numpy/scipy version on {nsub} frames, {repeats} runs ...")
        runs = []
        for _ in range(repeats):
            run, nsub, npk, nst = numpy_once(paths["h5"], geometry, params, nsub)
            runs.append(run)
        nu = add_rates(summarize(runs), nsub * ny * nx)
        nu.update(frames=nsub, peaks=npk, strong_pixels=nst,
                  kernel_strong_pixels=kernel_strong_count(paths["h5"], geometry, params, nsub))
        r["numpy"] = nu
        ratios["hklflow_over_numpy"] = s["mpix_per_s"] / nu["mpix_per_s"]
        ratios["hklflow_over_numpy_cpu"] = s["mpix_per_cpu_s"] / nu["mpix_per_cpu_s"]

    if not args.skip_dials:
        why = dials_missing()
        if why:
            say(f"4. DIALS: {why}")
            r["dials"] = {"error": why}
        else:
            try:
                cbf_s = ensure_cbf(paths, spec, geometry, args.frames)
                algos = [a.strip() for a in args.dials_algorithms.split(",") if a.strip()]
                say(f"4. DIALS find_spots ({', '.join(algos)}), {repeats} runs each ...")
                dl = measure_dials(paths, args.frames, repeats, algos)
                dl["cbf_conversion_s"] = cbf_s
                dl["cbf_read"] = add_rates(summarize([cbf_read_once(paths)]), npx)
                for t in dl["algorithms"].values():
                    add_rates(t, npx)
                    t["hklflow_over_dials"] = s["mpix_per_s"] / t["mpix_per_s"]
                    t["hklflow_over_dials_cpu"] = s["mpix_per_cpu_s"] / t["mpix_per_cpu_s"]
                r["dials"] = dl
                first = dl["algorithms"][algos[0]]
                ratios.update(hklflow_over_dials=first["hklflow_over_dials"],
                              hklflow_over_dials_cpu=first["hklflow_over_dials_cpu"],
                              dials_algorithm_of_ratio=algos[0])
            except Exception as exc:  # noqa: BLE001 - report it and go on
                say(f"4. DIALS failed: {exc}")
                r["dials"] = {"error": str(exc)}
    r["ratios"] = ratios

    if not args.skip_memory:
        say(f"5. memory: search() in fresh processes on {args.frames} and {4 * args.frames} "
            "frames ...")
        runs = measure_memory(paths, args.frames, args.sample)
        keys = sorted(runs, key=int)
        r["memory"] = {"runs": runs, "frames": [int(k) for k in keys],
                       "growth_mib": (runs[keys[-1]]["peak_rss_kb"]
                                      - runs[keys[0]]["peak_rss_kb"]) / 1024}

    # 6. extrapolation, from the best wall time and from the best CPU time
    n = args.frames
    full = SCAN_FRAMES_FULL

    def both(f):
        return {"wall_s": f("best_s"), "cpu_s": f("best_cpu_s")}

    ex = {"read + decompress alone (x 3650/N)": both(lambda k: r["read"][k] * full / n),
          "hklflow search() (x 3650/N)": both(lambda k: s[k] * full / n),
          "hklflow search() (8-frame scan + per frame x 3642)": both(
              lambda k: s["eight_frame_scan"][k]
              + (s[k] - s["eight_frame_scan"][k]) / (n - 8) * (full - 8))}
    if "numpy" in r:
        ex["numpy/scipy version (per frame x 3650)"] = both(
            lambda k: r["numpy"][k] / r["numpy"]["frames"] * full)
    if r.get("dials") and "algorithms" in r["dials"]:
        for algo, t in r["dials"]["algorithms"].items():
            ex[f"DIALS find_spots {algo} (x 3650/N)"] = both(lambda k, t=t: t[k] * full / n)
            ex[f"DIALS find_spots {algo} (1-image run + per frame x 3649)"] = both(
                lambda k, t=t: t["one_image"][k]
                + (t[k] - t["one_image"][k]) / (n - 1) * (full - 1))
    r["extrapolation"] = ex

    r["goals"] = {
        "hklflow end to end, Mpixel/s per core": {
            "value": s["mpix_per_s"], "cpu_value": s["mpix_per_cpu_s"],
            "goal": GOALS["end_to_end_mpix_per_core"], "unit": ""},
        "hklflow / numpy version": {
            "value": ratios.get("hklflow_over_numpy"),
            "cpu_value": ratios.get("hklflow_over_numpy_cpu"),
            "goal": GOALS["speedup_vs_numpy"], "unit": "x"},
        f"hklflow / DIALS per core ({ratios.get('dials_algorithm_of_ratio', 'not run')})": {
            "value": ratios.get("hklflow_over_dials"),
            "cpu_value": ratios.get("hklflow_over_dials_cpu"),
            "goal": GOALS["speedup_vs_dials"], "unit": "x"},
    }
    r["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    print(report(r), flush=True)
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
