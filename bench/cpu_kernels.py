#!/usr/bin/env python
"""The per-frame work of the pipeline on another CPU, from a small folder that travels.

    python bench/cpu_kernels.py pack OUT [--run bench/.data/pipeline_2m_400f] [--frames 24]
    python bench/cpu_kernels.py run OUT [--rounds 3] [--turns 8] [--json FILE]
    python bench/cpu_kernels.py codec [--frames 40] [--rounds 4] [--old SRC] [--json FILE]

`pack` (where bench/pipeline.py ran) copies entry f2 of its large run into OUT: the scan,
orientation and mask files, the grid, the first --frames frames (their compressed chunks,
~1.3 MB a frame), the detector facts the steps cache and the peak-search settings the run
used.  `run` (on the machine to compare, and here in the same way) measures on one thread,
CPU = user + system of the process, per 2M frame:

1. the frames decompressed in memory (the compiled codec, hklflow.codec.compiled): with
   the untranspose the steps use (ours where the CPU has AVX2, or GFNI and AVX-512) and
   with bitshuffle's own, alternating;
2. the transform, both kinds at once, as transform_frames adds frames
   (Transformer.add_compressed) onto the run's grid, the frames added at --turns start
   angles (a warm-up turn first: numba loads or compiles its kernels);
3. the peak search of the frames (spotfinding.search, its fixed costs included: the
   hot-pixel probe, the masks), after a warm-up search.

`codec` writes a synthetic 2M scan (Poisson counts, -1 in module gaps, bitshuffle-LZ4 a
frame per chunk) and a sparse volume, then measures, each in processes of its own taken
in turn round after round, the CPU-ms per frame that FrameStack.read takes to read and
decode a frame with the compiled and the library codec (HKLFLOW_CODEC), and per chunk that
VolumeReader takes; with --old SRC (an older checkout's src/, e.g. a git worktree) the
same with that code, alternating with these.  In one process it also splits the library
codec's time into bitshuffle.decompress_lz4, the copy of its result into the caller's
buffer, and the framing check.

It needs numpy, numba, h5py, bitshuffle and gemmi.  Where hdf5plugin or pyFAI is missing (the
device machines of this workplace have neither; bitshuffle and gemmi travel there as wheels)
it puts stand-ins in their place: nothing here reads a filtered dataset through HDF5 (the
chunks are read raw), and the detector facts come from OUT (pyFAI's version named in their
file name is the one `pack` saw).
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import logging
import os
import shlex
import shutil
import sys
import time
import types
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import CHUNK_FRAMES, add_at_turns, copy_chunks, cpu  # noqa: E402


def pack(out: Path, run: Path, frames: int) -> None:
    from importlib.metadata import version

    from hklflow.files.scan import read_scan_file
    from hklflow.model.geometry import _facts_path

    temp = next((run / "results").glob("*/*/f2")).parent
    out.mkdir(parents=True, exist_ok=True)
    for src, name in [(temp / "f2" / "scan.nxs", "scan.nxs"),
                      (temp / "orientation.nxs", "orientation.nxs"),
                      (temp / "f2" / "mask.nxs", "mask.nxs"),
                      (next((run / "results").glob("*/grid.json")), "grid.json")]:
        shutil.copy(src, out / name)
    copy_chunks(next((run / "raw").glob("*/*/f2.h5")), out / "frames.h5", frames)
    geometry = read_scan_file(out / "scan.nxs").geometry().detector
    geometry.detector_facts()  # (made and cached here if it was not)
    facts = Path(_facts_path(geometry.detector, geometry.orientation))
    (out / "cache").mkdir(exist_ok=True)
    shutil.copy(facts, out / "cache" / facts.name)
    metadata = next(p for p in (run / ".snakemake" / "metadata").iterdir()
                    if '"rule": "find_peaks"' in p.read_text())
    # params: the job's settings file (hklflow.planning.jobs.SettingsFiles), relative to the run
    settings_file = shlex.split(json.loads(metadata.read_text())["params"][0])[0]
    settings = json.loads((run / settings_file).read_text())
    (out / "pack.json").write_text(json.dumps(
        {"frames": frames, "from": str(run), "find_peaks_settings": settings,
         "pyFAI": version("pyFAI"), "facts": facts.name}, indent=1))
    print(f"{out}: {sum(p.stat().st_size for p in out.rglob('*') if p.is_file()) / 1e6:.1f} MB")


def stand_ins(packed: dict, out: Path) -> list[str]:
    """hdf5plugin and pyFAI's version where they are not installed (see the docstring)."""
    from hklflow.model.geometry import DETECTOR_CACHE_ENV  # (numpy alone)

    os.environ[DETECTOR_CACHE_ENV] = str(out / "cache")
    made = []
    if importlib.util.find_spec("hdf5plugin") is None:
        sys.modules["hdf5plugin"] = types.ModuleType("hdf5plugin")
        made.append("hdf5plugin")
    if importlib.util.find_spec("pyFAI") is None:
        import importlib.metadata as metadata
        real = metadata.version
        metadata.version = lambda name: packed["pyFAI"] if name == "pyFAI" else real(name)
        made.append(f"pyFAI's version ({packed['pyFAI']})")
    return made


def run(out: Path, rounds: int, turns: int) -> dict:
    packed = json.loads((out / "pack.json").read_text())
    made = stand_ins(packed, out)
    import numba

    from hklflow.algorithms.masks.masking import ScanMask
    from hklflow.algorithms.peaks.spotfinding import search
    from hklflow.algorithms.transform import Transformer, pixel_table
    from hklflow.codec import compiled
    from hklflow.files.grid import read_grid_file
    from hklflow.files.mask import read_mask_file
    from hklflow.files.orientation import read_orientation_file
    from hklflow.files.scan import read_scan_file
    from hklflow.raw.frames import open_frame_source
    from hklflow.settings.params import DetectorParams, PeakSearchParams, settings_part

    with open("/proc/cpuinfo") as f:
        lines = f.read().splitlines()
    flags = set(next((s for s in lines if s.startswith("flags")), "flags:").split())
    report = {"cpu": next((s.split(":", 1)[1].strip() for s in lines
                           if s.startswith("model name")), "?"),
              "flags": sorted(flags & {"avx2", "avx512f", "avx512bw", "gfni"}),
              "python": sys.version.split()[0], "numba": numba.__version__,
              "numpy": np.__version__, "stand_ins": made,
              "own_untranspose": bool(compiled.OWN_UNTRANSPOSE)}
    print(json.dumps(report), flush=True)

    rec = read_scan_file(out / "scan.nxs")
    n = packed["frames"]
    source = dataclasses.replace(rec.frames, files=(str((out / "frames.h5").resolve()),),
                                 frames_per_file=(n,), fingerprints=())
    stack = open_frame_source(source, compiled_decompression=True)

    # 1. decompression in memory (the chunks as the transform reads them)
    stored = stack.read_compressed(0, n)
    if stored is None:
        raise RuntimeError(f"{out}/frames.h5: not one bitshuffle-LZ4 chunk per frame")
    chunks = [stored.stream[a:b].copy() for a, b in zip(stored.starts, stored.stops)]
    itemsize, elements, block = stored.dtype.itemsize, stored.elements, stored.block
    buf = np.empty(elements * itemsize, np.uint8)
    forms = {"steps' untranspose": compiled.OWN_UNTRANSPOSE, "bitshuffle's": False}
    for own in forms.values():
        for chunk in chunks:
            if compiled.decompress(chunk, buf, itemsize, block, own) != chunk.size:
                raise RuntimeError(f"{out}: a chunk does not decompress in blocks of {block}")
    times = {name: [] for name in forms}
    for _ in range(2 * rounds):
        for name, own in forms.items():
            c = cpu()
            for chunk in chunks:
                compiled.decompress(chunk, buf, itemsize, block, own)
            times[name].append((cpu() - c) / n * 1e3)
    report["decompress_ms_per_frame"] = times
    print("decompress, CPU-ms per frame:", json.dumps(
        {k: [round(x, 2) for x in v] for k, v in times.items()}), flush=True)

    # 2. the transform, both kinds
    ori = read_orientation_file(out / "orientation.nxs")
    scan = rec.geometry(ori)
    mask = ScanMask.of(read_mask_file(out / "mask.nxs"))
    grid = read_grid_file(out / "grid.json")
    tr = Transformer(grid, pixel_table(scan.detector, mask.pixels), 1e9,
                     kinds=("transform", "masked_transform"), crystal=ori.crystal(),
                     hkl_radius=mask.hkl_radius, threads=1)
    bragg = np.zeros((CHUNK_FRAMES, elements), np.uint8)  # one chunk's, as the step
    turn = n * scan.angles.step

    def add(first_turn: int, count: int) -> None:
        add_at_turns(tr, stack, scan, mask, n, bragg,
                     [t * turn for t in range(first_turn, first_turn + count)])

    t0 = time.monotonic()
    add(0, 1)
    report["transform_warm_up_s"] = time.monotonic() - t0
    report["transform_ms_per_frame"] = []
    for r in range(rounds):
        c = cpu()
        add(1 + r * turns, turns)
        report["transform_ms_per_frame"].append((cpu() - c) / (turns * n) * 1e3)
    print(f"transform, both kinds onto {grid.shape}, CPU-ms per frame:",
          [round(x, 2) for x in report["transform_ms_per_frame"]], flush=True)

    # 3. the peak search
    settings = packed["find_peaks_settings"]
    params = settings_part(settings, PeakSearchParams)
    detector = settings_part(settings, DetectorParams)
    geometry = rec.geometry().detector
    log = logging.getLogger("cpu_kernels")
    search(stack, geometry, rec.angles, params, detector, log)
    report["search_ms_per_frame"] = []
    for _ in range(rounds):
        c = cpu()
        search(stack, geometry, rec.angles, params, detector, log)
        report["search_ms_per_frame"].append((cpu() - c) / n * 1e3)
    print(f"peak search of {n} frames (fixed costs included), CPU-ms per frame:",
          [round(x, 2) for x in report["search_ms_per_frame"]], flush=True)
    stack.close()
    return report


GAP = -1  # module gaps of a 2M detector


def synthetic_scan(path: Path, frames: int) -> None:
    """frames of 1679 x 1475 int32 Poisson counts (a diffuse background, -1 in the gaps
    between modules), bitshuffle-LZ4 a frame per chunk, as a Pilatus 2M writes them."""
    import h5py
    import hdf5plugin

    rng = np.random.default_rng(2)
    rows = (np.arange(1679) % 212) >= 195
    cols = (np.arange(1475) % 494) >= 487
    with h5py.File(path, "w") as f:
        d = f.create_dataset("/entry/data/data", (frames, 1679, 1475), np.int32,
                             chunks=(1, 1679, 1475), **hdf5plugin.Bitshuffle(cname="lz4"))
        for i in range(frames):
            frame = rng.poisson(0.4 + 0.02 * i, (1679, 1475)).astype(np.int32)
            frame[rows] = GAP
            frame[:, cols] = GAP
            d[i] = frame


def synthetic_volume(path: Path) -> None:
    """A 160 x 256 x 256 volume, two thirds of its chunks measured (the writer of the code
    that runs this)."""
    from hklflow.files.volume import VolumeWriter
    from hklflow.model.grid import Axis, Grid

    grid = Grid(Axis(0, 1, 256), Axis(0, 1, 256), Axis(0, 1, 160))
    rng = np.random.default_rng(4)
    with VolumeWriter(path, grid) as w:
        for l0 in range(0, 160, 32):
            weight = rng.integers(0, 3, (32, 256, 256)).astype(np.float32)
            weight[:, :, :86] = 0
            w.write(l0, weight * rng.random(weight.shape, np.float32), weight)


def codec_worker(path: Path, what: str, compiled: bool, passes: int) -> None:
    """One measurement, printed as JSON: CPU-ms per frame (FrameStack.read, frame by frame)
    or per stored chunk (VolumeReader.read, slab by slab), after a warm-up pass; OpenMP on
    one thread, as a step of one thread runs (threads_limited)."""
    import resource

    from threadpoolctl import threadpool_limits

    def cpu_s():
        r = resource.getrusage(resource.RUSAGE_SELF)
        return r.ru_utime + r.ru_stime

    if what == "frames":
        from hklflow.raw.frames import open_frames

        with open_frames(str(path)) as st:
            st.compiled_decompression = compiled
            buf = np.empty((1,) + tuple(st.frame_shape), st.dtype)
            for i in range(st.nframes):  # (warm-up: codec chosen, bitshuffle loaded)
                st.read(i, i + 1, out=buf)
            with threadpool_limits(limits=1, user_api="openmp"):
                c = cpu_s()
                for _ in range(passes):
                    for i in range(st.nframes):
                        st.read(i, i + 1, out=buf)
                ms = (cpu_s() - c) / (passes * st.nframes) * 1e3
            assert st.frames_from_raw_chunks == (passes + 1) * st.nframes
    else:
        from hklflow.files.volume import VolumeReader

        with VolumeReader(path, compiled_decompression=compiled) as r:
            chunks = len(r.stored_chunks())
            out = [np.empty((32,) + r.grid.shape[1:], np.float32) for _ in range(2)]
            r.read(0, 32, out)  # (warm-up)
            with threadpool_limits(limits=1, user_api="openmp"):
                c = cpu_s()
                for _ in range(passes):
                    for l0 in range(0, r.grid.l.n, 32):
                        r.read(l0, min(l0 + 32, r.grid.l.n), out)
                ms = (cpu_s() - c) / (passes * chunks * 2) * 1e3
    print(json.dumps({"ms": ms}))


def library_parts(path: Path, rounds: int) -> dict:
    """The library codec's decode of the scan's chunks split in its parts, alternating: the
    framing check (codec.framing.blocks_fit), bitshuffle.decompress_lz4 (a new array), and
    the whole decode (both, and the copy into the caller's buffer); CPU-ms per frame."""
    import bitshuffle
    import h5py
    from threadpoolctl import threadpool_limits

    from hklflow.codec import blocks_fit, library_codec, read_header

    with h5py.File(path) as f:
        d = f["/entry/data/data"]
        chunks = [np.frombuffer(d.id.read_direct_chunk((i, 0, 0))[1], np.uint8)
                  for i in range(d.shape[0])]
        out = np.empty(d.shape[1:], d.dtype)
    codec = library_codec()
    block = read_header(chunks[0], 4)[1]
    streams = [c[12:] for c in chunks]
    parts = {
        "framing check": lambda s: blocks_fit(s, out.size, 4, block),
        "bitshuffle.decompress_lz4": lambda s: bitshuffle.decompress_lz4(s, (out.size,),
                                                                         out.dtype, block),
        "library decode (check + decompress_lz4 + copy)": lambda s: codec.decode(s, out, block),
    }
    times = {name: [] for name in parts}
    with threadpool_limits(limits=1, user_api="openmp"):
        for part in parts.values():
            part(streams[0])
        for _ in range(rounds):
            for name, part in parts.items():
                c = cpu()
                for s in streams:
                    part(s)
                times[name].append(round((cpu() - c) / len(streams) * 1e3, 3))
    return times


def codec(frames: int, rounds: int, old: Path | None) -> dict:
    import subprocess
    import tempfile

    work = Path(tempfile.mkdtemp(prefix="codec_bench_"))
    scan, volume = work / "frames.h5", work / "volume.nxs"
    synthetic_scan(scan, frames)
    synthetic_volume(volume)
    here = str(Path(__file__).resolve())
    new_path = str(Path(__file__).resolve().parents[1] / "src")
    codes = {"new": new_path} | ({"old": str(old.resolve())} if old else {})
    runs = []
    for code in codes:
        runs += [(f"{code} compiled", code, "frames", "auto", 1),
                 (f"{code} library" if code == "new" else f"{code} bshuf_decompress_lz4 (ctypes)",
                  code, "frames", "library", 0)]
    runs += [(f"{code} volume (compiled)", code, "volume", "auto", 1) for code in codes]
    report = {"frames": frames, "frame_ms": {}, "volume_chunk_ms": {}}
    for _ in range(rounds):
        for name, code, what, setting, compiled in runs:
            env = dict(os.environ, PYTHONPATH=codes[code], HKLFLOW_CODEC=setting)
            done = subprocess.run([sys.executable, here, "codec-worker", str(
                scan if what == "frames" else volume), what, str(compiled)], env=env,
                capture_output=True, text=True, timeout=900)
            if done.returncode:
                raise RuntimeError(f"{name}: {done.stderr[-2000:]}")
            ms = json.loads(done.stdout.strip().splitlines()[-1])["ms"]
            key = "frame_ms" if what == "frames" else "volume_chunk_ms"
            report[key].setdefault(name, []).append(round(ms, 3))
            print(f"{name}: {ms:.3f} CPU-ms per {'frame' if what == 'frames' else 'chunk'}",
                  flush=True)
    report["library_parts_ms"] = library_parts(scan, rounds)
    print("library codec, CPU-ms per frame:", json.dumps(report["library_parts_ms"]))
    shutil.rmtree(work)
    return report


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="mode", required=True)
    p = sub.add_parser("pack")
    p.add_argument("out", type=Path)
    p.add_argument("--run", type=Path, default=Path("bench/.data/pipeline_2m_400f"))
    p.add_argument("--frames", type=int, default=24)
    r = sub.add_parser("run")
    r.add_argument("out", type=Path)
    r.add_argument("--rounds", type=int, default=3)
    r.add_argument("--turns", type=int, default=8)
    r.add_argument("--json", type=Path)
    c = sub.add_parser("codec")
    c.add_argument("--frames", type=int, default=40)
    c.add_argument("--rounds", type=int, default=4)
    c.add_argument("--old", type=Path, help="src/ of another checkout, measured in turn")
    c.add_argument("--json", type=Path)
    w = sub.add_parser("codec-worker")
    w.add_argument("path", type=Path)
    w.add_argument("what", choices=["frames", "volume"])
    w.add_argument("compiled", type=int)
    w.add_argument("--passes", type=int, default=2)
    a = ap.parse_args(argv)
    if a.mode == "pack":
        pack(a.out, a.run, a.frames)
        return 0
    if a.mode == "codec-worker":
        codec_worker(a.path, a.what, bool(a.compiled), a.passes)
        return 0
    report = (codec(a.frames, a.rounds, a.old) if a.mode == "codec"
              else run(a.out, a.rounds, a.turns))
    if a.json:
        a.json.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
