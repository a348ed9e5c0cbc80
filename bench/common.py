"""Pieces the benchmark scripts share: what machine they ran on, and how they report."""
from __future__ import annotations

import json
import os
import platform
import re
import sys
from pathlib import Path

import numpy as np

NOISE_NOTE = "shared, noisy machine: every timing repeated, best reported with the spread"


def _first_field(path: str, key: str) -> str | None:
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(key):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def vector_instructions() -> str:
    """The widest vector instructions this CPU offers (from /proc/cpuinfo's flags), and the
    target numba compiles for if NUMBA_CPU_NAME sets another.  Virtual machines of one CPU
    model may hide AVX-512; on one host the kernels run as fast in either form
    (bench/README.md), so a difference here marks another kind of host: compare runs only
    where this matches."""
    flags = set((_first_field("/proc/cpuinfo", "flags") or "").split())
    isa = ("AVX-512" if {"avx512f", "avx512bw"} <= flags else "AVX2" if "avx2" in flags
           else "SSE" if "sse2" in flags else "?")
    target = os.environ.get("NUMBA_CPU_NAME")
    return f"{isa} (numba compiles for {target})" if target else isa


def machine_line(machine: dict) -> str:
    """machine_info's CPU, usable cores and vector instructions, as a report's first line."""
    return (f"machine: {machine['cpu_model']}, {machine['cores_usable']} cores, "
            f"{machine.get('vector_instructions', '?')}")


def machine_info(**extra) -> dict:
    """CPU model, cores, memory, load and library versions (plus `extra` entries)."""
    mem = _first_field("/proc/meminfo", "MemTotal")
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        usable = os.cpu_count()
    import scipy

    return {"cpu_model": _first_field("/proc/cpuinfo", "model name") or "?",
            "vector_instructions": vector_instructions(),
            "cores_online": os.cpu_count(), "cores_usable": usable,
            "memory": f"{int(mem.split()[0]) / 2**20:.1f} GiB" if mem else "?",
            "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
            "python": platform.python_version(), "numpy": np.__version__,
            "scipy": scipy.__version__, **extra, "note": NOISE_NOTE}


def cpu() -> float:
    """CPU seconds of this process so far (user + system)."""
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


CHUNK_FRAMES = 16  # reduction.transform.chunk_frames by default (the config schema)
FULL_FRAMES = 3650  # frames of the full 2M entry pipeline.py and full_rotation.py cost
PLANS = ("auto", "auto_per_block")  # reduction.transform.subdivide plans measured

# the line every step logs last (hklflow/steps/_run.py)
RESOURCES_LINE = re.compile(r"resources: cpu_s=([\d.]+) start_cpu_s=([\d.]+) "
                            r"children_cpu_s=([\d.]+) wall_s=([\d.]+) peak_rss_mb=(\d+)")
SYSTEM_CPU = re.compile(r"resources: .* system_cpu_s=([\d.]+)")


def system_cpu_s(log_text: str) -> float:
    """The system (kernel) share of a job's CPU seconds from its `resources:` line; NaN in
    a log written before steps logged it."""
    found = SYSTEM_CPU.findall(log_text)
    return float(found[-1]) if found else float("nan")


def say(msg: str) -> None:
    """Progress, on stderr (stdout carries the table and the JSON)."""
    print(msg, file=sys.stderr, flush=True)


def add_at_turns(tr, stack, scan, mask, frames: int, bragg: np.ndarray, starts,
                 read=None, subdivide: int = 1) -> bool:
    """Frames [0, frames) of `stack` added to the Transformer `tr` as transform_frames adds
    them (chunks of CHUNK_FRAMES, compressed chunks decompressed block by block, each
    chunk's Bragg regions painted into one chunk's buffer, with the blocks that hold them,
    and cleared from it again, not the whole buffer zeroed), once for each start angle in
    `starts` (degrees added to the scan's own).  bragg: that buffer, uint8 zeros of
    (CHUNK_FRAMES or more, pixels); zeros again on return.  read: the frames read, added
    instead where they cannot be added as stored (None: that is an error).  subdivide:
    rotation sub-steps per frame where `tr` has no sub-steps of its own (SubSteps).  Returns
    whether every chunk was added as stored."""
    import dataclasses

    from hklflow.algorithms.transform import BLOCK, pixel_blocks

    as_stored = True
    blocks = np.zeros((bragg.shape[0], pixel_blocks(bragg[0].size)), np.uint8)
    for start in starts:
        angles = dataclasses.replace(scan.angles, start=scan.angles.start + start)
        shifted = dataclasses.replace(scan, angles=angles)
        for a in range(0, frames, CHUNK_FRAMES):
            b = min(a + CHUNK_FRAMES, frames)
            painted = bragg[:b - a]
            blocks[:] = 0
            mask.paint(a, b, painted, blocks=blocks[:b - a], block=BLOCK)
            M = tr.matrices(shifted, a, b, subdivide)
            stored = stack.read_compressed(a, b) if as_stored else None
            as_stored = stored is not None and tr.add_compressed(stored, M, np.ones(b - a),
                                                                 painted, blocks[:b - a])
            if not as_stored:
                if read is None:
                    raise RuntimeError("the frames cannot be added as stored")
                tr.add(read[a:b], M, np.ones(b - a), painted, blocks[:b - a])
            mask.paint(a, b, painted, value=0)
    return as_stored


def byte_compile_hklflow() -> int:
    """Write current .pyc files for hklflow's modules, as an install does, so that the jobs
    a benchmark times do not compile changed sources at every start: with
    PYTHONDONTWRITEBYTECODE set (some development shells), an editable install's changed
    modules are otherwise compiled again by every job (0.02-0.2 CPU-s a job, measured).
    py_compile writes them whatever sys.dont_write_bytecode says.  Returns the modules
    (re)written."""
    import compileall
    import io
    from contextlib import redirect_stdout

    import hklflow

    out = io.StringIO()
    with redirect_stdout(out):
        compileall.compile_dir(str(Path(hklflow.__file__).parent), quiet=0)
    return out.getvalue().count("Compiling ")


def emit(report: dict, table_text: str, json_path: Path | None) -> None:
    """Print the table for people; the JSON to `json_path`, or after the table."""
    print(table_text)
    text = json.dumps(report, indent=1, default=float)
    if json_path:
        Path(json_path).write_text(text)
    else:
        print(text)


def _filters(dset) -> list:
    pl = dset.id.get_create_plist()
    return [pl.get_filter(i)[:3] for i in range(pl.get_nfilters())]


def copy_chunks(src: Path, dst: Path, nframes_out: int) -> None:
    """A stack of nframes_out frames made of src's compressed chunks, cycled (no
    decompression): one frame per chunk, bitshuffle-LZ4 like Hdf5StackWriter; the filter
    pipeline is checked equal to src's."""
    import hdf5plugin

    from hklflow.base.atomic import atomic_path
    from hklflow.files.h5 import open_h5

    with atomic_path(dst) as tmp, open_h5(src) as fi, open_h5(tmp, "w") as fo:
        d = fi["/entry/data/data"]
        n, ny, nx = d.shape
        if d.chunks != (1, ny, nx):
            raise RuntimeError(f"{src}: expected one frame per chunk, got chunks {d.chunks}")
        out = fo.create_dataset("/entry/data/data", shape=(nframes_out, ny, nx), dtype=d.dtype,
                                chunks=(1, ny, nx), **hdf5plugin.Bitshuffle(cname="lz4"))
        if _filters(out) != _filters(d):
            raise RuntimeError(f"{src}: filters {_filters(d)} differ from bitshuffle-LZ4's "
                               f"{_filters(out)}; cannot copy chunks")
        for i in range(nframes_out):
            mask, chunk = d.id.read_direct_chunk((i % n, 0, 0))
            out.id.write_direct_chunk((i, 0, 0), chunk, mask)
        if not np.array_equal(out[nframes_out - 1], d[(nframes_out - 1) % n]):
            raise RuntimeError(f"{dst}: copied chunks do not decompress to the source frames")


def reduce_targets(where: Path, targets) -> float:
    """Snakemake on the experiment `where` for `targets` (2 cores, quiet); the seconds it
    took; SystemExit with its error's tail when it fails."""
    import subprocess
    import time

    repo = Path(__file__).resolve().parent.parent
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "snakemake", "--snakefile", str(repo / "Snakefile"),
                        "--directory", str(where), *targets, "-c2", "--quiet", "rules"],
                       capture_output=True, text=True)
    if r.returncode:
        raise SystemExit(f"{where}: snakemake failed:\n{r.stderr[-3000:]}")
    return time.monotonic() - t0


def swap_options(words: list, swap: dict) -> list:
    """A command line's words (shlex.split) with each option of `swap` and its values
    replaced by the option and its new values (a list), or dropped (None)."""
    out, i = [], 0
    while i < len(words):
        j = i + 1
        if words[i] in swap:
            while j < len(words) and not words[j].startswith("--"):
                j += 1
            if swap[words[i]] is not None:
                out += [words[i], *swap[words[i]]]
        else:
            out.append(words[i])
        i = j
    return out
