#!/usr/bin/env python
"""The per-frame work of the pipeline on another CPU, from a small folder that travels.

    python bench/cpu_kernels.py pack OUT [--run bench/.data/pipeline_2m_400f] [--frames 24]
    python bench/cpu_kernels.py run OUT [--rounds 3] [--turns 8] [--json FILE]

`pack` (where bench/pipeline.py ran) copies entry f2 of its large run into OUT: the scan,
orientation and mask files, the grid, the first --frames frames (their compressed chunks,
~1.3 MB a frame), the detector facts the steps cache and the peak-search settings the run
used.  `run` (on the machine to compare, and here in the same way) measures on one thread,
CPU = user + system of the process, per 2M frame:

1. the frames decompressed in memory (files.bitshuffle_lz4.decompress): with the
   untranspose the steps use (ours where the CPU has AVX2, or GFNI and AVX-512) and with
   bitshuffle's own, alternating;
2. the transform, both kinds at once, as transform_frames adds frames
   (Transformer.add_compressed) onto the run's grid, the frames added at --turns start
   angles (a warm-up turn first: numba loads or compiles its kernels);
3. the peak search of the frames (spotfinding.search, its fixed costs included: the
   hot-pixel probe, the masks), after a warm-up search.

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
    from hklflow.geometry import _facts_path

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
    settings = json.loads(shlex.split(json.loads(metadata.read_text())["params"][0])[0])
    (out / "pack.json").write_text(json.dumps(
        {"frames": frames, "from": str(run), "find_peaks_settings": settings,
         "pyFAI": version("pyFAI"), "facts": facts.name}, indent=1))
    print(f"{out}: {sum(p.stat().st_size for p in out.rglob('*') if p.is_file()) / 1e6:.1f} MB")


def stand_ins(packed: dict, out: Path) -> list[str]:
    """hdf5plugin and pyFAI's version where they are not installed (see the docstring)."""
    from hklflow.geometry import DETECTOR_CACHE_ENV  # (numpy alone)

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

    from hklflow.files import bitshuffle_lz4
    from hklflow.files.grid import read_grid_file
    from hklflow.files.mask import read_mask_file
    from hklflow.files.orientation import read_orientation_file
    from hklflow.files.scan import read_scan_file
    from hklflow.frames import open_frame_source
    from hklflow.params import DetectorParams, PeakSearchParams, settings_part
    from hklflow.spotfinding import search
    from hklflow.transform import Transformer, pixel_table

    with open("/proc/cpuinfo") as f:
        lines = f.read().splitlines()
    flags = set(next((s for s in lines if s.startswith("flags")), "flags:").split())
    report = {"cpu": next((s.split(":", 1)[1].strip() for s in lines
                           if s.startswith("model name")), "?"),
              "flags": sorted(flags & {"avx2", "avx512f", "avx512bw", "gfni"}),
              "python": sys.version.split()[0], "numba": numba.__version__,
              "numpy": np.__version__, "stand_ins": made,
              "own_untranspose": bool(bitshuffle_lz4.OWN_UNTRANSPOSE)}
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
    forms = {"steps' untranspose": bitshuffle_lz4.OWN_UNTRANSPOSE, "bitshuffle's": False}
    for own in forms.values():
        for chunk in chunks:
            if bitshuffle_lz4.decompress(chunk, buf, itemsize, block, own) != chunk.size:
                raise RuntimeError(f"{out}: a chunk does not decompress in blocks of {block}")
    times = {name: [] for name in forms}
    for _ in range(2 * rounds):
        for name, own in forms.items():
            c = cpu()
            for chunk in chunks:
                bitshuffle_lz4.decompress(chunk, buf, itemsize, block, own)
            times[name].append((cpu() - c) / n * 1e3)
    report["decompress_ms_per_frame"] = times
    print("decompress, CPU-ms per frame:", json.dumps(
        {k: [round(x, 2) for x in v] for k, v in times.items()}), flush=True)

    # 2. the transform, both kinds
    ori = read_orientation_file(out / "orientation.nxs")
    scan = rec.geometry(ori)
    mask = read_mask_file(out / "mask.nxs")
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
    a = ap.parse_args(argv)
    if a.mode == "pack":
        pack(a.out, a.run, a.frames)
        return 0
    report = run(a.out, a.rounds, a.turns)
    if a.json:
        a.json.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
