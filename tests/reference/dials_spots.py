"""DIALS's spot finder as an independent reference for hklflow's peak search (tests, benchmarks).

DIALS is not on PyPI; Debian's ``python3-dials`` (3.12) installs its command lines under the
system Python with its own numpy and cctbx.  Nothing here imports dials, dxtbx or cctbx: we
run ``dials.import`` and ``dials.find_spots`` as programs, and read ``strong.refl`` with a
small script run by DIALS's own interpreter (the shebang of ``dials.find_spots``), which
writes the columns to an ``.npz`` file that numpy reads here.

Coordinates: DIALS's ``xyzobs.px.value`` = (x, y, z) = (fast = column, slow = row, image
number - 1) with the pixel centre at +0.5 and image i covering z in [i, i+1): hklflow's
``observed_px_x``, ``observed_px_y``, ``observed_frame`` with no offset in x and y, and z
shifted by the first image number - 1 so that frame 0 is the first file given (the tests
check it on a synthetic spot at a known position and against simulated truth).  dxtbx reads a
miniCBF's array with the fast axis along the row of the array, so DIALS's y is our array row
whatever the detector's orientation in the lab (that mapping matters for indexing, not here).

What DIALS does that hklflow's search does not (see the tests' report): its default
threshold is ``dispersion_extended`` (hklflow implements classic ``dispersion``); its spot
centroid and ``intensity.sum.value`` use the raw counts of the strong pixels (no background
subtracted; hklflow subtracts the local mean); with a miniCBF header without a
``Silicon sensor`` / ``CdTe sensor`` line the panel type is SENSOR_UNKNOWN and DIALS picks
``min_spot_size = 6`` instead of 3 for a pixel-array detector; ``dispersion_extended`` loses
spots that touch a masked module gap (their strong pixels sit in the row next to it).
Masks: dxtbx adds the Pilatus module gaps to the panel from the image size, and treats values
<= -1 and >= Count_cutoff as untrusted (trusted_range (-1, cutoff), both ends excluded).
"""
from __future__ import annotations

import functools
import glob
import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np

PROGRAMS = ("dials.import", "dials.find_spots", "dials.index", "dials.refine")

_READ_REFL = r'''
import sys
import numpy as np
from dials.array_family import flex

t = flex.reflection_table.from_file(sys.argv[1])
out = {}
n = t.size()
for name in t.keys():
    col = t[name]
    key = name.replace(".", "__")
    try:
        if hasattr(col, "parts"):
            parts = col.parts()
            out[key] = np.stack([p.as_numpy_array() for p in parts], axis=1) if n else \
                np.zeros((0, len(parts)))
        else:
            out[key] = col.as_numpy_array()
    except Exception:  # shoeboxes and other objects: not needed
        continue
np.savez(sys.argv[2], **out)
'''


class DialsError(RuntimeError):
    """A DIALS command failed (the message names it and ends with its log tail)."""


# --------------------------------------------------------------------------------------
# Is DIALS there?
# --------------------------------------------------------------------------------------
def _clean_env() -> dict:
    """Environment for DIALS's processes: nothing of hklflow's interpreter leaks into theirs."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "PYTHONSAFEPATH",
                        "VIRTUAL_ENV", "PYTHONUSERBASE")}
    venv = os.environ.get("VIRTUAL_ENV")
    if venv:
        env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep)
                                      if not p.startswith(venv))
    return env


def _which(program: str) -> str | None:
    return shutil.which(program, path=_clean_env().get("PATH"))


def dials_python() -> str:
    """DIALS's interpreter: the shebang of dials.find_spots (else /usr/bin/python3)."""
    exe = _which("dials.find_spots")
    if exe:
        try:
            with open(exe, "rb") as f:
                first = f.readline().decode(errors="replace").strip()
            if first.startswith("#!"):
                parts = first[2:].split()
                if parts and parts[0].endswith("env") and len(parts) > 1:
                    found = _which(parts[1])
                    if found:
                        return found
                elif parts and os.path.isfile(parts[0]):
                    return parts[0]
        except OSError:
            pass
    return "/usr/bin/python3"


@functools.lru_cache(maxsize=1)
def dials_available() -> str | None:
    """None when DIALS's command lines can be used here, else the reason why not."""
    missing = [p for p in PROGRAMS if _which(p) is None]
    if missing:
        return (f"DIALS is not installed ({', '.join(missing)} not on PATH; on Debian/Ubuntu: "
                "apt-get install python3-dials)")
    py = dials_python()
    try:
        r = subprocess.run([py, "-c", "from dials.array_family import flex; import numpy"],
                           capture_output=True, text=True, timeout=120, env=_clean_env())
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"DIALS's interpreter {py} cannot be run: {exc}"
    if r.returncode != 0:
        tail = (r.stderr or r.stdout).strip().splitlines()[-3:]
        return f"DIALS's interpreter {py} cannot import dials.array_family.flex: {' | '.join(tail)}"
    return None


# --------------------------------------------------------------------------------------
# Running the programs
# --------------------------------------------------------------------------------------
def _tail(text: str, n: int = 25) -> str:
    return "\n".join(text.rstrip().splitlines()[-n:])


def _head_before_usage(text: str, n: int = 12) -> str:
    """What a DIALS program said before printing its usage text (e.g. 'Unable to handle the
    following arguments: ...')."""
    head = text.split("\nusage:", 1)[0]
    lines = [s for s in head.splitlines() if not s.startswith(("DIALS (2018)", "DIALS 3"))]
    return "\n".join(lines[:n]) if lines else _tail(text, n)


def _run(cmd: list[str], cwd: Path, log_name: str, timeout: float) -> tuple[str, float]:
    """Run one DIALS command in cwd; its stdout+stderr go to cwd/log_name. Returns (output,
    wall seconds)."""
    t0 = time.monotonic()
    try:
        r = subprocess.run(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True, timeout=timeout, env=_clean_env())
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout if isinstance(exc.stdout, str) else (exc.stdout or b"").decode(errors="replace")
        (cwd / log_name).write_text(out)
        raise DialsError(f"`{' '.join(cmd)}` (in {cwd}) did not finish in {timeout:.0f} s; "
                         f"last lines:\n{_tail(out)}") from None
    except OSError as exc:
        raise DialsError(f"`{' '.join(cmd)}` cannot be run: {exc}") from None
    seconds = time.monotonic() - t0
    (cwd / log_name).write_text(r.stdout)
    if r.returncode != 0:
        raise DialsError(f"`{' '.join(cmd)}` (in {cwd}) failed with exit status {r.returncode}; "
                         f"last lines of {cwd / log_name}:\n{_tail(r.stdout)}")
    return r.stdout, seconds


def _natural_key(s: str):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", s)]


def frame_files(frames) -> list[str]:
    """A list of frame files, or a glob pattern (natural order), as absolute paths."""
    if isinstance(frames, (str, os.PathLike)):
        pattern = os.fspath(frames)
        files = sorted(glob.glob(pattern), key=_natural_key) if glob.has_magic(pattern) else [pattern]
    else:
        files = [os.fspath(f) for f in frames]
    if not files:
        raise DialsError(f"no frame files match {frames!r}")
    missing = [f for f in files if not os.path.isfile(f)]
    if missing:
        raise DialsError(f"frame file(s) do not exist: {missing[:3]}{' ...' if len(missing) > 3 else ''}")
    return [os.path.abspath(f) for f in files]


def dials_template(files: list[str]) -> tuple[str, int, int] | None:
    """(DIALS template ``name_#####.cbf``, first, last image number) when the files are one
    consecutive numbered run, else None."""
    m0 = re.match(r"^(.*?)(\d+)(\.[^/]*)$", files[0])
    if not m0:
        return None
    prefix, digits, suffix = m0.groups()
    first = int(digits)
    for i, f in enumerate(files):
        if f != f"{prefix}{first + i:0{len(digits)}d}{suffix}":
            return None
    return f"{prefix}{'#' * len(digits)}{suffix}", first, first + len(files) - 1


def imported_sweep(expt: Path) -> tuple[int, int] | None:
    """Image range of the one sequence in a dials.import experiment list (JSON; None for a
    still); DialsError when DIALS made several sequences of the frames."""
    e = json.loads(Path(expt).read_text())
    n = len(e.get("experiment", []))
    scans = e.get("scan", [])
    if n != 1:
        ranges = [s.get("image_range") for s in scans]
        raise DialsError(f"dials.import made {n} experiments of the frames (image ranges {ranges[:5]}"
                         f"{' ...' if len(ranges) > 5 else ''}): give one consecutive rotation sweep")
    if not scans:
        return None
    a, b = scans[0]["image_range"]
    return int(a), int(b)


# --------------------------------------------------------------------------------------
# Parameters DIALS used
# --------------------------------------------------------------------------------------
def parse_phil(text: str) -> dict:
    """Flatten a PHIL listing (``scope {`` / ``name = value`` / ``}``) to {dotted.name: value};
    for a choice (``a *b c``) the starred word."""
    out, stack = {}, []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("{"):
            stack.append(line[:-1].strip())
        elif line == "}":
            if stack:
                stack.pop()
        elif "=" in line:
            key, val = (s.strip() for s in line.split("=", 1))
            words = val.split()
            starred = [w[1:] for w in words if w.startswith("*")]
            if starred:
                val = starred[0] if len(starred) == 1 else " ".join(starred)
            out[".".join(stack + [key])] = val.strip("'\"")
    return out


@functools.lru_cache(maxsize=1)
def find_spots_defaults() -> dict:
    """dials.find_spots's default parameters (``dials.find_spots -c -e1``), flattened."""
    r = subprocess.run(["dials.find_spots", "-c", "-e1"], capture_output=True, text=True,
                       timeout=120, env=_clean_env())
    if r.returncode != 0:
        raise DialsError(f"`dials.find_spots -c -e1` failed:\n{_tail(r.stdout + r.stderr)}")
    text = r.stdout.split("\n", 3)[-1] if r.stdout.startswith("Showing") else r.stdout
    return parse_phil(text)


def modified_parameters(log_text: str) -> dict:
    """The block a DIALS program prints under 'The following parameters have been modified:'."""
    lines = log_text.splitlines()
    try:
        i = next(k for k, s in enumerate(lines) if "parameters have been modified" in s)
    except StopIteration:
        return {}
    block, depth, seen = [], 0, False
    for s in lines[i + 1:]:
        if not s.strip():
            if seen and depth == 0:
                break
            continue
        seen = True
        depth += s.count("{") - s.count("}")
        block.append(s)
    return parse_phil("\n".join(block))


def used_parameters(log_text: str) -> dict:
    """The spot-finding parameters that matter, as DIALS used them: its defaults, the
    modified ones and what it set itself ('Setting spotfinder.filter.min_spot_size=6')."""
    p = dict(find_spots_defaults())
    p.update(modified_parameters(log_text))
    for m in re.finditer(r"^Setting (spotfinder\.[\w.]+)=(\S+)", log_text, re.M):
        p[m.group(1)] = m.group(2)
    keep = ("spotfinder.threshold.", "spotfinder.filter.min_spot_size",
            "spotfinder.filter.max_spot_size", "spotfinder.filter.max_separation",
            "spotfinder.filter.max_strong_pixel_fraction", "spotfinder.filter.border",
            "spotfinder.filter.d_min", "spotfinder.filter.d_max", "spotfinder.lookup.mask",
            "spotfinder.force_2d", "spotfinder.mp.nproc", "spotfinder.filter.ice_rings.filter")
    return {k: v for k, v in p.items()
            if k.startswith(keep) and not k.startswith("spotfinder.threshold.radial_profile")}


# --------------------------------------------------------------------------------------
# Reading strong.refl
# --------------------------------------------------------------------------------------
def read_reflections(refl: Path, workdir: Path) -> dict:
    """Columns of a DIALS reflection file ({dials name: array}), read by DIALS's interpreter."""
    script = workdir / "_read_refl.py"
    script.write_text(_READ_REFL)
    out = workdir / (Path(refl).stem + "_columns.npz")
    _run([dials_python(), str(script), str(refl), str(out)], workdir, "_read_refl.log", 300)
    with np.load(out) as z:
        return {k.replace("__", "."): z[k] for k in z.files}


def peak_columns(raw: dict, frame_offset: int = 0) -> dict:
    """DIALS columns -> hklflow's peak-table names (find_peaks.peak_columns).

    observed_frame and the bounding box's frames are DIALS's z minus frame_offset (image
    number of the first frame given, minus 1).  bounding_box: hklflow's (row0, row1, col0,
    col1, frame0, frame1), ends exclusive, from DIALS's bbox (x0, x1, y0, y1, z0, z1), ends
    exclusive too.  int_sum is DIALS's intensity.sum.value: raw counts of the strong pixels,
    background NOT subtracted.
    """
    xyz = np.asarray(raw["xyzobs.px.value"], dtype=float).reshape(-1, 3)
    var = np.asarray(raw.get("xyzobs.px.variance", np.zeros_like(xyz)), dtype=float).reshape(-1, 3)
    n = len(xyz)
    bb = np.asarray(raw.get("bbox", np.zeros((n, 6))), dtype=np.int64).reshape(-1, 6).copy()
    bb[:, 4:6] -= frame_offset
    return {
        "observed_px_x": xyz[:, 0], "observed_px_y": xyz[:, 1],
        "observed_frame": xyz[:, 2] - frame_offset,
        # DIALS's centroid variances are of the centroid (error), not of the spot's width
        "centroid_px_x_var": var[:, 0], "centroid_px_y_var": var[:, 1],
        "centroid_frame_var": var[:, 2],
        "int_sum": np.asarray(raw.get("intensity.sum.value", np.zeros(n)), dtype=float),
        "int_sum_var": np.asarray(raw.get("intensity.sum.variance", np.zeros(n)), dtype=float),
        "n_pixels": np.asarray(raw.get("n_signal", np.zeros(n)), dtype=np.int64),
        "bounding_box": bb[:, [2, 3, 0, 1, 4, 5]],
        "panel": np.asarray(raw.get("panel", np.zeros(n)), dtype=np.int64),
    }


# --------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------
def run_dials_find_spots(frames, workdir, nproc: int = 1, extra_phil=(), *,
                         timeout: float = 1800.0) -> dict:
    """Import `frames` (a list of files or a glob pattern: one rotation sweep, numbered
    consecutively when more than one file) and run dials.find_spots in workdir.

    extra_phil: further ``name=value`` arguments for dials.find_spots (e.g.
    ``"spotfinder.threshold.algorithm=dispersion"``).  Returns a dict:

    peaks         hklflow-named columns (peak_columns), one row per spot; frame 0 = the
                  first file given
    raw           DIALS's columns by their names, as DIALS wrote them (shoeboxes left out)
    n_spots       number of spots
    seconds       wall time of dials.find_spots alone (process start included)
    import_seconds, read_seconds
    parameters    spot-finding parameters DIALS used (flattened PHIL names)
    image_range   DIALS's (first, last) image number; frame_offset = first - 1
    dials_version the version line of the log
    workdir, experiments, reflections, log   paths
    commands      the command lines run
    """
    why = dials_available()
    if why:
        raise DialsError(why)
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    files = frame_files(frames)
    tmpl = dials_template(files) if len(files) > 1 else None
    src = [f"template={tmpl[0]}", f"image_range={tmpl[1]},{tmpl[2]}"] if tmpl else files
    imp = ["dials.import", *src, "output.experiments=imported.expt", "output.log=dials.import.log"]
    (workdir / "imported.expt").unlink(missing_ok=True)
    out_imp, t_import = _run(imp, workdir, "dials.import.out", timeout)
    if not (workdir / "imported.expt").is_file():  # e.g. no readable image: usage text, status 0
        raise DialsError(f"`{' '.join(imp[:3])}{' ...' if len(imp) > 3 else ''}` (in {workdir}) "
                         f"imported nothing (are these image files dxtbx can read?); see "
                         f"{workdir / 'dials.import.out'}:\n{_head_before_usage(out_imp)}")
    # DIALS's z counts images from its scan's first image number (the file's number):
    # shift it so that frame 0 is the first file given, as in hklflow
    image_range = imported_sweep(workdir / "imported.expt")
    offset = image_range[0] - 1 if image_range else 0
    fs = ["dials.find_spots", "imported.expt", f"nproc={int(nproc)}",
          "output.reflections=strong.refl", "output.log=dials.find_spots.log", *extra_phil]
    (workdir / "strong.refl").unlink(missing_ok=True)
    out, t_find = _run(fs, workdir, "dials.find_spots.out", timeout)
    if not (workdir / "strong.refl").is_file():
        raise DialsError(f"`{' '.join(fs)}` wrote no strong.refl; last lines:\n{_tail(out)}")
    t0 = time.monotonic()
    raw = read_reflections(workdir / "strong.refl", workdir)
    t_read = time.monotonic() - t0
    m = re.search(r"^DIALS \d[\w.]*", out, re.M)
    show_imp = imp if tmpl else imp[:1] + [f"<{len(files)} files>"] + imp[-2:]
    return {
        "peaks": peak_columns(raw, frame_offset=offset),
        "raw": raw,
        "n_spots": int(len(raw.get("xyzobs.px.value", ()))),
        "seconds": t_find,
        "import_seconds": t_import,
        "read_seconds": t_read,
        "parameters": used_parameters(out),
        "image_range": image_range,
        "frame_offset": offset,
        "dials_version": m.group(0) if m else "DIALS (version not in log)",
        "workdir": str(workdir),
        "experiments": str(workdir / "imported.expt"),
        "reflections": str(workdir / "strong.refl"),
        "log": str(workdir / "dials.find_spots.log"),
        "commands": [" ".join(show_imp), " ".join(fs)],
    }


def show_experiments(experiments, workdir=None, timeout: float = 120.0) -> str:
    """``dials.show`` of an experiment list (how DIALS read the image headers)."""
    exp = Path(experiments).resolve()
    out, _ = _run(["dials.show", str(exp)], Path(workdir or exp.parent), "dials.show.out", timeout)
    return out


# --------------------------------------------------------------------------------------
# Comparing two peak lists
# --------------------------------------------------------------------------------------
def match_one_to_one(a: dict, b: dict, tol_px: float = 2.0, tol_frames: float = 2.0):
    """Pair peaks of two tables one to one (nearest pairs first) when |dx|, |dy| <= tol_px and
    |dz| <= tol_frames.  Returns index arrays (ia, ib) of the pairs."""
    from scipy.spatial import cKDTree

    def pts(t):
        return np.stack([np.asarray(t["observed_px_x"], float), np.asarray(t["observed_px_y"], float),
                         np.asarray(t["observed_frame"], float) * (tol_px / tol_frames)], axis=1)

    pa, pb = pts(a), pts(b)
    if not len(pa) or not len(pb):
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    # every candidate pair within the box lies within its circumscribed sphere
    pairs = cKDTree(pa).query_ball_tree(cKDTree(pb), r=tol_px * np.sqrt(3) * (1 + 1e-9))
    cand = [(float(np.linalg.norm(pa[i] - pb[j])), i, j) for i, js in enumerate(pairs) for j in js
            if np.all(np.abs(pa[i] - pb[j]) <= tol_px * (1 + 1e-9))]
    cand.sort()
    used_a, used_b, ia, ib = set(), set(), [], []
    for _, i, j in cand:
        if i not in used_a and j not in used_b:
            used_a.add(i)
            used_b.add(j)
            ia.append(i)
            ib.append(j)
    return np.asarray(ia, dtype=np.int64), np.asarray(ib, dtype=np.int64)
