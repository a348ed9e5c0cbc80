#!/usr/bin/env python
"""hklflow's 3D-ΔPDF taper and FFT, and its Laue symmetrisation, side by side with NXRefine's
own code (CHESS QM2's reduction).

    python bench/nxrefine_pdf_compare.py [--venv bench/.nxrefine-venv] [--workdir DIR]
                                         [--real-dir DIR | --no-real] [--workers 2]
                                         [--parts pdf symmetry conventions] [--json FILE]

NXRefine is NOT a dependency of hklflow.  As bench/nxrefine_compare.py (both use the
throw-away venv of bench/nxrefine_venv.py), this file is also the driver that runs under that
venv: `<venv>/bin/python bench/nxrefine_pdf_compare.py _driver IN.json OUT.json`; arrays go
through .npy files next to the JSON.  The driver imports nxrefine.nxreduce with three
modules it never uses in the methods called here replaced by empty stand-ins (qtpy,
nxrefine.nxdatabase: sqlalchemy, nxrefine.nxserver: psutil; none is in the venv), and
calls NXRefine's own code:

* taper: `NXMultiReduce.fft_taper` (nxrefine/nxreduce.py, 0.1.1 lines 2375-2415) and FFT:
  `NXMultiReduce.total_pdf` (lines 2417-2459), as methods of a minimal object that carries
  what they read (refine = a real NXRefine with the cell, Qh/Qk/Ql as NXRefine builds them
  with np.linspace, qmax, a NeXus entry with the volume as `symm_transform`); the PDF and its
  axes x, y, z (and their scaling_factor) are read back from the files total_pdf writes.
  Only logging, file locking (`with self`) and the plot title (add_title) are left out.
* symmetrisation: `NXSymmetry(group, laue_group).symmetrize(entries=True)`
  (nxrefine/nxsymmetry.py) on a NeXus file whose entries f1, f2 each hold a `transform`
  NXdata with signal and weights (the split of the volume between two entries: it sums
  them), as `NXMultiReduce.symmetrize_transform` calls it; and `symmetrize()` (entries=False:
  a bare field, weights = 1 where signal > 0), as punch_and_fill symmetrises its fill; and
  its `laue_functions` on a delta, for the table of what each Laue group name applies.

What is compared:

1. Taper and FFT on a synthetic merged volume (tetragonal a = b = 3.78, c = 13.23 A, a grid
   symmetric about 0 with odd n: 101 x 81 x 61 for h, k, l; diffuse blobs, Bragg-like peaks,
   noise, NaN holes) and, when the tiny demo has been run (--real-dir, default
   /tmp/tiny/results/tiny/300K), its transform_symmetrized.nxs.  hklflow's
   `pdf.tukey_taper(grid, cell, q_max)` against NXRefine's fft_taper (inside q_max: to float32
   precision; beyond, hklflow puts 0 where NXRefine puts taper.min()); `pdf.pdf_fft` against
   total_pdf on the same tapered input; axes; and the NaN holes both ways: zeroed by the
   caller for both programs, and left in (NXRefine's total_pdf never zeroes them: its input
   comes from NXSymmetry, 0 where unmeasured).  An informational row gives the taper on a
   hexagonal cell, where NXRefine's |Q| (sqrt((h a*)^2 + (k b*)^2 + (l c*)^2)) leaves out the
   cell angles.
2. Laue symmetrisation, NXSymmetry against `symmetry.symmetrize_arrays` with the crystal's
   Laue operators: hexagonal P 6_3/m m c, monoclinic C 1 2/c 1 (unique axis b), tetragonal
   P 4/m m m (control), the tiny demo's transform.nxs (I 4_1/a m d, real data) and, for
   information, a monoclinic cell with unique axis c (P 1 1 2/m).  Random positive signal and
   weights with 20% zero weights, and a delta at a general position: the positions each
   program puts it on, NXRefine's identified as operators h' = h R; then the symmetrised
   intensities (signal/weights) against hklflow run with those same operators (agreement
   to float32 precision) and with the full Laue group (information).
3. The operators every NXRefine Laue group name applies (its laue_functions on a delta on a
   cubic 25^3 grid), the number of times each equivalent is counted, and the size of the
   true Laue group (hklflow's operators for a space group of that Laue class).

The script exits 1 when an agreement fails (taper inside q_max > 1e-6; PDF > 1e-5 of its
maximum; axes; symmetrised intensities with the same operators > 1e-5 relative; hklflow's
delta not on the full Laue group), or when a settled answer moved (SETTLED: the positions
of each case's delta, what each of NXRefine's Laue group names applies, the taper and FFT
agreement on the synthetic volume).  Run time: see bench/README.md.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REAL_DIR = Path("/tmp/tiny/results/tiny/300K")


# ======================================================================================
# Driver: runs under the throw-away venv's python, imports nxrefine
# ======================================================================================
def _import_nxreduce():
    """nxrefine.nxreduce, with the modules it imports for other tasks stubbed out."""
    import types

    def stub(name, **attrs):
        mod = types.ModuleType(name)
        mod.__dict__.update(attrs)
        sys.modules.setdefault(name, mod)
        return sys.modules[name]

    qtcore = stub("qtpy.QtCore", QObject=object, Signal=lambda *a, **k: None)
    stub("qtpy", QtCore=qtcore)
    stub("nxrefine.nxdatabase", NXDatabase=None)
    stub("nxrefine.nxserver", NXServer=None)
    from nxrefine import nxreduce

    return nxreduce


def _axes_fields(axes):
    from nexusformat.nexus import NXfield

    # as NXRefine.prepare_transform builds them (nxrefine.py: np.linspace(start, stop, n))
    out = {}
    for name, (start, step, n) in zip(("Qh", "Qk", "Ql"), axes):
        out[name] = NXfield(np.linspace(start, start + (n - 1) * step, n), name=name)
    return out


def _driver_pdf(case, work: Path) -> dict:
    from nexusformat.nexus import NXdata, NXentry, NXfield, nxopen
    from nxrefine.nxrefine import NXRefine

    NXMultiReduce = _import_nxreduce().NXMultiReduce

    class Mini:
        """What fft_taper and total_pdf read from an NXMultiReduce."""
        fft_taper = NXMultiReduce.fft_taper
        total_pdf = NXMultiReduce.total_pdf
        parent = None
        title = "PDF"
        overwrite = True
        symm_data = "symm_transform"
        total_pdf_data = "total_pdf"

        def log(self, message):
            pass

        def add_title(self, data):  # the plot title only
            pass

        def __enter__(self):  # NXReduce's file locking
            return self

        def __exit__(self, *args):
            pass

    m = Mini()
    m.process_count = case["workers"]
    m.refine = NXRefine()
    (m.refine.a, m.refine.b, m.refine.c,
     m.refine.alpha, m.refine.beta, m.refine.gamma) = case["cell"]
    q = _axes_fields(case["axes"])
    m.Qh, m.Qk, m.Ql = q["Qh"], q["Qk"], q["Ql"]
    m.qmax = case["qmax"]
    out = {"name": case["name"], "astar": [float(m.refine.astar), float(m.refine.bstar),
                                          float(m.refine.cstar)]}
    t0 = time.perf_counter()
    taper = m.fft_taper()
    out["taper_seconds"] = time.perf_counter() - t0
    out["taper"] = str(work / f"{case['name']}_taper_nx.npy")
    np.save(out["taper"], taper)
    out["taper_min"] = float(taper.min())
    out["ffts"] = []
    for i, job in enumerate(case.get("ffts", [])):
        values = np.load(job["values"])
        main = work / f"{case['name']}_fft{i}.nxs"
        with nxopen(main, "w") as root:
            root["entry"] = NXentry()
            root["entry/symm_transform"] = NXdata(NXfield(values, name="data"),
                                                  (m.Ql, m.Qk, m.Qh))
        root = nxopen(main, "rw")  # from the file, as in the workflow (nxvalue is not a view)
        m.root, m.entry = root, root["entry"]
        m.taper = taper if job["taper"] == "nx" else np.load(job["taper"])
        m.total_pdf_file = work / f"{case['name']}_fft{i}_total_pdf.nxs"
        t0 = time.perf_counter()
        m.total_pdf()
        sec = time.perf_counter() - t0
        g = root["entry/total_pdf"]
        pdf = np.asarray(g.nxsignal.nxvalue)
        path = str(work / f"{case['name']}_fft{i}_pdf_nx.npy")
        np.save(path, pdf)
        axes = {ax.nxname: {"values": np.asarray(ax.nxvalue).tolist(),
                            "scaling_factor": float(ax.attrs["scaling_factor"])}
                for ax in g.nxaxes}
        out["ffts"].append({"label": job["label"], "pdf": path, "seconds": sec,
                            "dtype": str(pdf.dtype), "shape": list(pdf.shape),
                            "axes_order": [ax.nxname for ax in g.nxaxes], "axes": axes,
                            "n_nan": int(np.isnan(pdf).sum())})
        root.close()
    return out


def _driver_symm(case, work: Path) -> dict:
    from nexusformat.nexus import NXdata, NXentry, NXfield, nxopen
    from nxrefine.nxsymmetry import NXSymmetry, laue_functions

    q = _axes_fields(case["axes"])
    out = {"name": case["name"], "laue": case["laue"],
           "function": (laue_functions.get(case["laue"]) or laue_functions["-1"]).__name__,
           "runs": {}}
    for label, run in case["runs"].items():
        path = work / f"{case['name']}_{label}.nxs"
        with nxopen(path, "w") as root:
            for e, (s, w) in enumerate(zip(run["signal"], run["weights"]), start=1):
                root[f"f{e}"] = NXentry()
                data = NXdata(NXfield(np.load(s), name="data"), (q["Ql"], q["Qk"], q["Qh"]))
                data["data_weights"] = NXfield(np.load(w), name="data_weights")
                data.nxweights = data["data_weights"]
                root[f"f{e}/transform"] = data
            # punch_and_fill's path: a bare field, weights = signal > 0
            root["fill"] = NXentry()
            root["fill/data"] = NXfield(sum(np.load(s) for s in run["signal"]), name="data")
        res = {}
        with nxopen(path, "r") as root:
            groups = ((True, root["f1/transform"]), (False, root["fill/data"]))
        # NXSymmetry reads only the file name and path; its workers open the file themselves
        # (HDF5 refuses to open it while this process holds it)
        for entries, group in groups:
            t0 = time.perf_counter()
            result = NXSymmetry(group, laue_group=case["laue"]).symmetrize(entries=entries)
            key = "entries" if entries else "field"
            res[key] = {"seconds": time.perf_counter() - t0,
                        "result": str(work / f"{case['name']}_{label}_{key}_nx.npy"),
                        "dtype": str(result.dtype)}
            np.save(res[key]["result"], result)
        out["runs"][label] = res
    return out


def _driver_conventions(spec) -> dict:
    from nxrefine.nxsymmetry import laue_functions

    n, g = spec["n"], tuple(spec["g"])  # g: (il, ik, ih)
    out = {}
    for name, func in laue_functions.items():
        delta = np.zeros((n, n, n))
        delta[g] = 1.0
        res = func(delta)
        idx = np.argwhere(res != 0)
        out[name] = {"function": func.__name__, "doc": (func.__doc__ or "").strip(),
                     "images": [[int(a), int(b), int(c), float(res[a, b, c])] for a, b, c in idx]}
    return out


def driver(inp: str, outp: str) -> None:
    import nexusformat
    import nxrefine
    import scipy

    spec = json.loads(Path(inp).read_text())
    work = Path(spec["workdir"])
    out = {"versions": {"nxrefine": nxrefine.__version__, "numpy": np.__version__,
                        "scipy": scipy.__version__, "nexusformat": nexusformat.__version__,
                        "python": sys.version.split()[0]}}
    out["pdf"] = [_driver_pdf(c, work) for c in spec.get("pdf", [])]
    out["symm"] = [_driver_symm(c, work) for c in spec.get("symm", [])]
    if "conventions" in spec:
        out["conventions"] = _driver_conventions(spec["conventions"])
    Path(outp).write_text(json.dumps(out))


if __name__ == "__main__" and len(sys.argv) > 1 and sys.argv[1] == "_driver":
    driver(sys.argv[2], sys.argv[3])
    sys.exit(0)


# ======================================================================================
# Main: runs under hklflow's venv (NXSymmetry's spawned workers import this file as
# __mp_main__ under NXRefine's venv, so hklflow is imported inside functions only)
# ======================================================================================
import argparse  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import subprocess  # noqa: E402
import textwrap  # noqa: E402

log = logging.getLogger("bench")

TAPER_TOL = 1e-6      # absolute, taper values in [0, 1]: a few float32 ulps
PDF_TOL = 1e-5        # max |difference| / max |pdf|, both FFTs single precision
SYMM_TOL = 1e-5       # relative, per voxel: float32 sums of up to 24 terms

# The settled answers (first 2026-11-22; the same on 2026-11-28 with NXRefine 0.1.1,
# nexusformat 2.0.3): a rerun that differs says NXRefine, its dependencies or hklflow moved.
SETTLED = {
    # synthetic volume: the taper identical inside q_max, 0 beyond it; the PDFs within
    # float32 rounding (2.6e-8 of the maximum)
    "pdf": {"synthetic": {"taper_inside": 0.0, "hk_beyond_max": 0.0, "fft_rel_below": 1e-7}},
    # a delta at a general position: (positions with hklflow, order of the Laue group,
    # positions with NXSymmetry); NXRefine's 6/mmm applies only 2/m along c
    "symm": {"hexagonal": (24, 24, 4), "monoclinic": (4, 4, 4), "tetragonal": (16, 16, 16),
             "monoclinic-c (info)": (4, 4, 4)},
    # NXSymmetry's laue_functions per Laue group name: (terms, distinct positions, order of
    # the group, every operator in the group)
    "conventions": {"-1": (2, 2, 2, True), "2/m": (4, 4, 4, True), "mmm": (8, 8, 8, True),
                    "4/m": (8, 8, 8, True), "4/mmm": (16, 16, 16, True),
                    "-3": (2, 2, 6, True), "-3m": (2, 2, 12, True), "6/m": (4, 4, 12, True),
                    "6/mmm": (4, 4, 24, True), "m-3": (4, 3, 24, True),
                    "m-3m": (64, 48, 48, True)},
}


def settled_moves(report: dict) -> list[str]:
    """What in `report` differs from SETTLED (the parts it ran)."""
    moved = []
    for r in report.get("pdf", []):
        want = SETTLED["pdf"].get(r["name"])
        if want is None:
            continue
        for key in ("taper_inside", "hk_beyond_max"):
            if r[key] != want[key]:
                moved.append(f"pdf {r['name']}: {key} {r[key]:g}, settled {want[key]:g}")
        fft = (r.get("fft") or {}).get("fft_rel")
        if fft is None or fft >= want["fft_rel_below"]:
            moved.append(f"pdf {r['name']}: FFT {fft}, settled below {want['fft_rel_below']:g}")
    for r in report.get("symm", []):
        want = SETTLED["symm"].get(r["name"])
        got = (r["n_hklflow"], r["n_group"], r["n_nx"])
        if want is not None and got != want:
            moved.append(f"symmetrisation {r['name']}: delta positions {got}, settled {want}")
    for r in report.get("conventions", []):
        want = SETTLED["conventions"].get(r["name"])
        got = (r["terms"], r["distinct"], r["group_order"], bool(r["subgroup"]))
        if got != want:
            moved.append(f"laue_functions {r['name']}: {got}, settled {want}")
    return moved


SYMM_CASES = [
    # name, space group, cell, grid (start, step, n) for h, k, l, general position (h, k, l)
    ("hexagonal", "P 63/m m c", (5.52, 5.52, 8.83, 90, 90, 120),
     ((-3.0, 0.1, 61), (-3.0, 0.1, 61), (-4.0, 0.125, 65)), (1.3, 0.4, 2.25)),
    ("monoclinic", "C 1 2/c 1", (9.71, 8.87, 5.27, 90, 105.6, 90),
     ((-3.0, 0.1, 61), (-4.0, 0.1, 81), (-2.0, 0.05, 81)), (1.3, 0.7, 0.45)),
    ("tetragonal", "P 4/m m m", (3.78, 3.78, 13.23, 90, 90, 90),
     ((-3.0, 0.1, 61), (-3.0, 0.1, 61), (-9.0, 0.3, 61)), (1.3, 0.4, 2.1)),
    ("monoclinic-c (info)", "P 1 1 2/m", (5.0, 6.0, 7.0, 90, 90, 100),
     ((-3.0, 0.1, 61), (-3.0, 0.1, 61), (-3.0, 0.1, 61)), (1.3, 0.7, 0.4)),
]
# a space group of each Laue class NXRefine names, and a cell that fits it
LAUE_CLASSES = {
    "-1": ("P -1", (4, 5, 6, 80, 85, 95)), "2/m": ("P 1 2/m 1", (4, 5, 6, 90, 100, 90)),
    "mmm": ("P m m m", (4, 5, 6, 90, 90, 90)), "4/m": ("P 4/m", (4, 4, 6, 90, 90, 90)),
    "4/mmm": ("P 4/m m m", (4, 4, 6, 90, 90, 90)), "-3": ("P -3", (4, 4, 6, 90, 90, 120)),
    "-3m": ("P -3 m 1", (4, 4, 6, 90, 90, 120)), "6/m": ("P 6/m", (4, 4, 6, 90, 90, 120)),
    "6/mmm": ("P 6/m m m", (4, 4, 6, 90, 90, 120)), "m-3": ("P m -3", (4, 4, 4, 90, 90, 90)),
    "m-3m": ("P m -3 m", (4, 4, 4, 90, 90, 90)),
}


def run_driver(py: Path, spec: dict, work: Path, tag: str) -> tuple[dict, float]:
    inp, outp = work / f"{tag}_in.json", work / f"{tag}_out.json"
    inp.write_text(json.dumps(spec))
    t0 = time.perf_counter()
    r = subprocess.run([str(py), str(Path(__file__).resolve()), "_driver", str(inp), str(outp)],
                       capture_output=True, text=True, cwd=work)
    sec = time.perf_counter() - t0
    if r.returncode:
        raise SystemExit(f"NXRefine driver failed ({tag}):\n{r.stdout[-3000:]}{r.stderr[-5000:]}")
    return json.loads(outp.read_text()), sec


def make_grid(axes):
    from hklflow.model.grid import Axis, Grid

    return Grid(*(Axis(float(s), float(d), int(n)) for s, d, n in axes))


def grid_axes(grid) -> list:
    return [[ax.start, ax.step, ax.n] for ax in grid.axes]


# --------------------------------------------------------------------------------------
# 1. taper and FFT
# --------------------------------------------------------------------------------------
def synthetic_volume(grid, cell, seed: int = 14) -> np.ndarray:
    """A merged intensity [l, k, h]: diffuse blobs at half-integer positions, Bragg-like peaks
    at integer ones, a smooth background, noise, NaN holes (spheres and a missing wedge)."""
    rng = np.random.default_rng(seed)
    L, K, H = np.meshgrid(grid.l.values, grid.k.values, grid.h.values, indexing="ij")
    frac = lambda x: x - np.round(x)  # noqa: E731
    v = 5.0 * np.exp(-(frac(H) ** 2 + frac(K) ** 2 + frac(L) ** 2) / (2 * 0.03 ** 2))
    v += 0.6 * np.exp(-((frac(H - 0.5)) ** 2 + frac(K - 0.5) ** 2) / (2 * 0.12 ** 2)
                      - frac(L) ** 2 / (2 * 0.3 ** 2))
    q2 = np.einsum("...i,ij,...j->...", np.stack([H, K, L], -1), cell.reciprocal_metric,
                   np.stack([H, K, L], -1))
    v += 0.2 * np.exp(-q2 / 0.5)
    v += rng.normal(0.0, 0.01, v.shape)
    v = v.astype(np.float32)
    for _ in range(40):  # unmeasured spheres
        c = [rng.integers(0, n) for n in grid.shape]
        r = rng.integers(2, 6)
        sl = tuple(slice(max(0, ci - r), ci + r + 1) for ci in c)
        v[sl] = np.nan
    v[(H > 0) & (K > 0.5 * H) & (K < 0.8 * H)] = np.nan  # a missing wedge
    return v


def real_volume(path: Path):
    from hklflow.files.volume import read_volume
    from hklflow.model.crystal import UnitCell

    vol = read_volume(path)
    cell = UnitCell(*[float(x) for x in vol.sample["unit_cell"]])
    return vol.grid, cell, vol.intensity()


def pdf_cases(args):
    from hklflow.model.crystal import UnitCell

    cell = UnitCell(3.78, 3.78, 13.23)
    grid = make_grid(((-3.0, 0.06, 101), (-3.0, 0.075, 81), (-9.0, 0.3, 61)))
    cases = [{"name": "synthetic", "what": "synthetic tetragonal 101x81x61", "grid": grid,
              "cell": cell, "values": synthetic_volume(grid, cell), "qmax": 4.5}]
    real = None if args.no_real else args.real_dir / "transform_symmetrized.nxs"
    if real is not None and real.exists():
        g, c, v = real_volume(real)
        qs = [ax.stop * 2 * np.pi * r for ax, r in zip(g.axes, c.reciprocal_parameters[:3])]
        cases.append({"name": "tiny", "what": f"{real} ({g.h.n}x{g.k.n}x{g.l.n})", "grid": g,
                      "cell": c, "values": v, "qmax": float(0.95 * min(qs))})
    elif real is not None:
        log.info("no %s: the real-volume row is left out", real)
    # information: a hexagonal cell (NXRefine's |Q| ignores the cell angles)
    hcell = UnitCell(5.52, 5.52, 8.83, 90, 90, 120)
    hgrid = make_grid(((-3.0, 0.1, 61), (-3.0, 0.1, 61), (-4.0, 0.125, 65)))
    cases.append({"name": "hexagonal-taper", "what": "hexagonal cell, taper only (info)",
                  "grid": hgrid, "cell": hcell, "values": None, "qmax": 4.0, "info": True})
    return cases


def compare_pdf(cases, py, work, workers) -> tuple[list, dict]:
    from hklflow.algorithms.pdf.fft import pdf_fft
    from hklflow.algorithms.pdf.taper import tukey_taper

    spec = {"workdir": str(work), "pdf": []}
    hk = {}
    for c in cases:
        grid, cell = c["grid"], c["cell"]
        t0 = time.perf_counter()
        taper = tukey_taper(grid, cell, c["qmax"])
        hk[c["name"]] = {"taper": taper, "taper_seconds": time.perf_counter() - t0}
        job = {"name": c["name"], "cell": list(cell.parameters), "axes": grid_axes(grid),
               "qmax": c["qmax"], "workers": workers, "ffts": []}
        if c["values"] is not None:
            zeroed = np.nan_to_num(c["values"], nan=0.0).astype(np.float32)
            tpath = work / f"{c['name']}_taper_hk.npy"
            np.save(tpath, taper)
            inputs = {"zeroed": zeroed, "nan": c["values"].astype(np.float32)}
            for key, arr in inputs.items():
                np.save(work / f"{c['name']}_{key}.npy", arr)
            # NXRefine's taper and ours on the NaN-free input; ours on both inputs (FFT alone);
            # ours on the input with NaN (NXRefine's total_pdf gets no NaN from NXSymmetry)
            for label, key, tp in (("nx-taper", "zeroed", "nx"), ("hk-taper", "zeroed", str(tpath)),
                                   ("hk-taper, NaN in", "nan", str(tpath))):
                job["ffts"].append({"label": label, "values": str(work / f"{c['name']}_{key}.npy"),
                                    "taper": tp})
            hk[c["name"]]["inputs"] = inputs
        spec["pdf"].append(job)
    nx, nx_seconds = run_driver(py, spec, work, "pdf")
    rows = []
    for c, n in zip(cases, nx["pdf"]):
        grid, cell = c["grid"], c["cell"]
        t_hk = hk[c["name"]]["taper"]
        t_nx = np.load(n["taper"])
        # NXRefine's R = 2|Q|/qmax with its |Q| (orthogonal axes, 2 pi included)
        L, K, H = np.meshgrid(grid.l.values * n["astar"][2], grid.k.values * n["astar"][1],
                              grid.h.values * n["astar"][0], indexing="ij")
        R = 2 * np.sqrt(H ** 2 + K ** 2 + L ** 2) / c["qmax"]
        inside, beyond = R < 2.0, R >= 2.0
        row = {"name": c["name"], "what": c["what"], "qmax": c["qmax"], "info": c.get("info", False),
               "shape": list(grid.shape), "taper_dtype": str(t_hk.dtype),
               "taper_shape_ok": list(t_hk.shape) == list(t_nx.shape),
               "taper_inside": float(np.abs(t_hk[inside] - t_nx[inside]).max()),
               "beyond_voxels": int(beyond.sum()), "nx_taper_min": n["taper_min"],
               "hk_beyond_max": float(np.abs(t_hk[beyond]).max()) if beyond.any() else 0.0,
               "nx_beyond": sorted({float(x) for x in t_nx[beyond]})[:3] if beyond.any() else [],
               "taper_seconds": {"hklflow": hk[c["name"]]["taper_seconds"],
                                 "nxrefine": n["taper_seconds"]}}
        if not c.get("info"):
            row["taper_ok"] = row["taper_shape_ok"] and row["taper_inside"] <= TAPER_TOL
        if c["values"] is not None:
            ins = hk[c["name"]]["inputs"]
            ffts = {f["label"]: f for f in n["ffts"]}
            res = {}

            def ours(arr, taper):
                t0 = time.perf_counter()
                try:
                    with np.errstate(invalid="ignore"):
                        p, ax = pdf_fft(arr * taper, grid, workers=workers)
                except Exception as exc:  # report what it does with the input
                    return None, None, f"{type(exc).__name__}: {exc}", time.perf_counter() - t0
                return np.asarray(p), ax, None, time.perf_counter() - t0

            p_hk, ax_hk, err, sec_hk = ours(ins["zeroed"], t_hk)
            if err:
                raise SystemExit(f"hklflow.algorithms.pdf.pdf_fft failed on a NaN-free volume: {err}")
            p_nx_same = np.load(ffts["hk-taper"]["pdf"])
            p_nx_own = np.load(ffts["nx-taper"]["pdf"])
            scale = float(np.abs(p_nx_same).max())
            res["shape"] = {"hklflow": list(p_hk.shape), "nxrefine": ffts["hk-taper"]["shape"]}
            res["dtype"] = {"hklflow": str(p_hk.dtype), "nxrefine": ffts["hk-taper"]["dtype"]}
            same_shape = p_hk.shape == p_nx_same.shape
            res["fft_rel"] = (float(np.abs(p_hk - p_nx_same).max()) / scale) if same_shape else None
            # each with its own taper: the difference is the taper beyond q_max
            res["own_taper_rel"] = (float(np.abs(p_hk - p_nx_own).max()) / scale
                                    if same_shape else None)
            res["seconds"] = {"hklflow": sec_hk, "nxrefine": ffts["hk-taper"]["seconds"],
                              "workers": workers}
            # axes: NXRefine's x, y, z are fftshift(fftfreq(n, d)) in units of a, b, c
            nax = ffts["hk-taper"]["axes"]
            res["axes"] = {}
            for name, ours_ax, length in zip(("x", "y", "z"), ax_hk, cell.parameters[:3]):
                theirs = np.array(nax[name]["values"])
                ours_ax = np.asarray(ours_ax, float)
                if ours_ax.shape != theirs.shape:
                    how = f"shape {ours_ax.shape} vs {theirs.shape}"
                elif np.allclose(ours_ax, theirs, rtol=0, atol=1e-9):
                    how = "equal (lattice units)"
                elif np.allclose(ours_ax, theirs * length, rtol=1e-9, atol=1e-9):
                    how = f"equal x scaling_factor {nax[name]['scaling_factor']:g} (A)"
                else:
                    how = f"differ: max {np.abs(ours_ax - theirs).max():.3g}"
                res["axes"][name] = how
            res["axes_order_nx"] = ffts["hk-taper"]["axes_order"]
            # NaN left in: hklflow's own handling, against the zeroed input
            p_nan, _, err_nan, _ = ours(ins["nan"], t_hk)
            if err_nan:
                res["nan_hk"] = f"raises {err_nan}"
                nan_ok = True
            elif np.isnan(p_nan).any():
                res["nan_hk"] = f"{int(np.isnan(p_nan).sum())} NaN in the PDF"
                nan_ok = False
            else:
                d = float(np.abs(p_nan - p_hk).max()) / scale
                res["nan_hk"] = f"NaN taken as 0: max diff from zeroed input {d:.1e}"
                nan_ok = d <= PDF_TOL
            res["nan_nx"] = (f"{ffts['hk-taper, NaN in']['n_nan']} of "
                             f"{int(np.prod(ffts['hk-taper, NaN in']['shape']))} PDF voxels NaN")
            res["n_nan_input"] = int(np.isnan(ins["nan"]).sum())
            row["fft"] = res
            row["fft_ok"] = (same_shape and res["fft_rel"] <= PDF_TOL and nan_ok
                             and all(v.startswith("equal") for v in res["axes"].values()))
        rows.append(row)
    return rows, {"versions": nx["versions"], "driver_seconds": nx_seconds}


# --------------------------------------------------------------------------------------
# 2. symmetrisation
# --------------------------------------------------------------------------------------
def random_signal_weight(shape, seed, zero_fraction=0.2):
    rng = np.random.default_rng(seed)
    w = rng.uniform(0.5, 2.0, shape).astype(np.float32)
    w[rng.random(shape) < zero_fraction] = 0.0
    s = (w * rng.uniform(1.0, 100.0, shape)).astype(np.float32)
    return s, w


def intensity(s, w):
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(w > 0, s / w, 0.0)


def identify(g, images, candidates):
    """The operator R (h' = h R) of candidates that takes g to each image; None if none."""
    out = []
    for im in images:
        hit = [R for R in candidates if np.allclose(np.asarray(g) @ R, im, atol=1e-6)]
        out.append(hit[0] if hit else None)
    return out


def candidate_operators():
    """Every signed permutation (48) and the hexagonal 6/mmm operators (24)."""
    import itertools

    from hklflow.model.crystal import Crystal, UnitCell

    mats = []
    for perm in itertools.permutations(range(3)):
        for signs in itertools.product((1, -1), repeat=3):
            M = np.zeros((3, 3), int)
            for i, (j, s) in enumerate(zip(perm, signs)):
                M[i, j] = s
            mats.append(M)
    hexa = Crystal("P 6/m m m", UnitCell(4, 4, 6, 90, 90, 120)).laue_operators
    for R in hexa:
        if not any(np.array_equal(R, M) for M in mats):
            mats.append(R)
    return mats


def symm_cases(args):
    from hklflow.model.crystal import Crystal, UnitCell

    cases = []
    for i, (name, sg, cell, axes, g) in enumerate(SYMM_CASES):
        grid = make_grid(axes)
        s, w = random_signal_weight(grid.shape, 100 + i)
        cases.append({"name": name, "crystal": Crystal(sg, UnitCell(*cell)), "grid": grid,
                      "signal": s, "weight": w, "g": g, "info": "info" in name})
    real = None if args.no_real else args.real_dir / "transform.nxs"
    if real is not None and real.exists():
        from hklflow.files.volume import read_volume

        vol = read_volume(real)
        cr = Crystal(vol.sample["space_group"], UnitCell(*[float(x) for x in vol.sample["unit_cell"]]))
        cases.append({"name": "tiny demo (real)", "crystal": cr, "grid": vol.grid,
                      "signal": vol.signal.astype(np.float32), "weight": vol.weight.astype(np.float32),
                      "g": (1.25, 0.5, 2.5), "info": False, "path": str(real)})
    return cases


def compare_symm(cases, py, work) -> tuple[list, dict]:
    from hklflow.algorithms.merge.symmetry import operator_hkl, symmetrize_arrays

    names = _nx_laue(py, [c["crystal"].space_group_symbol for c in cases])
    spec = {"workdir": str(work), "symm": []}
    for i, c in enumerate(cases):
        grid, tag = c["grid"], f"symm{i}"
        rng = np.random.default_rng(200 + i)
        # the volume split between two entries (NXSymmetry sums them), split in float32
        f = rng.uniform(0.2, 0.8, grid.shape).astype(np.float32)
        s1, w1 = c["signal"] * f, c["weight"] * f
        s2, w2 = c["signal"] - s1, c["weight"] - w1
        c["sum"] = (s1 + s2, w1 + w2)
        d = np.zeros(grid.shape, np.float32)
        ih, ik, il = grid.index(c["g"])
        d[il, ik, ih] = 1.0
        c["delta"] = d
        arrays = {"s1": s1, "w1": w1, "s2": s2, "w2": w2, "ds": 7 * d, "dw": d}
        paths = {}
        for k, a in arrays.items():
            paths[k] = str(work / f"{tag}_{k}.npy")
            np.save(paths[k], a)
        spec["symm"].append({
            "name": tag, "laue": names[c["crystal"].space_group_symbol][0],
            "axes": grid_axes(grid),
            "runs": {"random": {"signal": [paths["s1"], paths["s2"]],
                                "weights": [paths["w1"], paths["w2"]]},
                     "delta": {"signal": [paths["ds"]], "weights": [paths["dw"]]}}})
    nx, nx_seconds = run_driver(py, spec, work, "symm")
    cands = candidate_operators()
    rows = []
    for c, n, sp in zip(cases, nx["symm"], spec["symm"]):
        grid, cr = c["grid"], c["crystal"]
        ops = cr.laue_operators
        g = np.array(c["g"], float)
        # where NXRefine puts the delta, as operators h' = h R
        res_d = np.load(n["runs"]["delta"]["entries"]["result"])
        il, ik, ih = np.nonzero(res_d)
        images = np.stack([grid.h.values[ih], grid.k.values[ik], grid.l.values[il]], 1)
        found = identify(g, images, cands)
        nx_ops = [R for R in found if R is not None]
        in_group = [any(np.array_equal(R, Q) for Q in ops) for R in nx_ops]
        _, wd = symmetrize_arrays(7 * c["delta"], c["delta"], grid, ops, cr.hm)
        row = {"name": c["name"], "space_group": cr.hm, "laue_hklflow": cr.laue_group,
               "laue_nx": sp["laue"], "nx_reference_setting": names[cr.space_group_symbol][1],
               "nx_function": n["function"], "g": list(c["g"]), "shape": list(grid.shape),
               "n_hklflow": int(np.count_nonzero(wd)), "n_group": len(ops),
               "n_nx": int(len(images)), "nx_unidentified": int(sum(R is None for R in found)),
               "nx_ops": [operator_hkl(R) for R in nx_ops],
               "nx_ops_outside_group": [operator_hkl(R) for R, ok in zip(nx_ops, in_group) if not ok],
               "nx_values": sorted({float(x) for x in res_d[res_d != 0]}),
               "info": c["info"], "path": c.get("path")}
        S, W = c["sum"]
        I_nx = np.load(n["runs"]["random"]["entries"]["result"])
        F_nx = np.load(n["runs"]["random"]["field"]["result"])

        def rel(I_hk, I_ref):
            """Per voxel |I_ref - I_hk| / |I_hk| (floor 1e-6 max|I_hk|: real data may sum to
            ~0); voxels where one is 0 and the other not (NXRefine: 0 where weights = 0)."""
            floor = 1e-6 * float(np.abs(I_hk).max())
            r = np.abs(I_ref - I_hk) / np.maximum(np.abs(I_hk), floor)
            return {"max_rel": float(r.max()), "frac_gt_tol": float((r > SYMM_TOL).mean()),
                    "zero_diff": int(np.count_nonzero((I_hk == 0) != (I_ref == 0))),
                    "voxels": int(r.size)}

        t0 = time.perf_counter()
        sf, wf = symmetrize_arrays(S, W, grid, ops, cr.hm)
        row["hk_seconds"] = time.perf_counter() - t0
        row["full_vs_nx"] = rel(intensity(sf, wf), I_nx)
        if nx_ops and row["nx_unidentified"] == 0:
            ss, ws = symmetrize_arrays(S, W, grid, np.array(nx_ops), "NXRefine's operators")
            row["same_ops_vs_nx"] = rel(intensity(ss, ws), I_nx)
            # punch_and_fill's call: a bare field, weights = 1 where signal > 0
            sf2, wf2 = symmetrize_arrays(S, (S > 0).astype(np.float32), grid, np.array(nx_ops))
            row["field_vs_nx"] = rel(intensity(sf2, wf2), F_nx)
        row["nx_seconds"] = n["runs"]["random"]["entries"]["seconds"]
        same = row.get("same_ops_vs_nx")
        ok = (row["n_hklflow"] == row["n_group"] and same is not None
              and same["max_rel"] <= SYMM_TOL and row["field_vs_nx"]["max_rel"] <= SYMM_TOL)
        row["ok"] = bool(ok)
        rows.append(row)
    return rows, {"versions": nx["versions"], "driver_seconds": nx_seconds}


def conventions(py, work) -> tuple[list, float]:
    from hklflow.algorithms.merge.symmetry import operator_hkl
    from hklflow.model.crystal import Crystal, UnitCell

    n, start, step = 25, -3.0, 0.25
    g = np.array([1.25, 0.5, 0.75])  # general for every Laue class, orbit inside the grid
    idx = [int(round((x - start) / step)) for x in g]
    nx, sec = run_driver(py, {"workdir": str(work), "conventions": {"n": n, "g": idx[::-1]}},
                         work, "conventions")
    cands = candidate_operators()
    rows = []
    for name, c in nx["conventions"].items():
        imgs = np.array([[start + step * ih, start + step * ik, start + step * il]
                         for il, ik, ih, _ in c["images"]])
        mult = [v for *_, v in c["images"]]
        found = identify(g, imgs, cands)
        sg, cell = LAUE_CLASSES[name]
        ops = Crystal(sg, UnitCell(*cell)).laue_operators
        labels = [operator_hkl(R) if R is not None else "?" for R in found]
        rows.append({"name": name, "function": c["function"], "doc": c["doc"],
                     "terms": int(sum(mult)), "distinct": len(imgs),
                     "ops": [f"{lab}" + (f" (x{int(m)})" if m != 1 else "")
                             for lab, m in zip(labels, mult)],
                     "group": sg, "group_order": len(ops),
                     "subgroup": all(R is not None and any(np.array_equal(R, Q) for Q in ops)
                                     for R in found)})
    return rows, sec


def _nx_laue(py, symbols) -> dict:
    """NXRefine's Laue group names for space groups (NXRefine.sg setter: gemmi, reference
    setting), run in its venv."""
    code = ("import json,sys\nfrom nxrefine.nxrefine import NXRefine\nout={}\n"
            "for s in json.loads(sys.argv[1]):\n r=NXRefine(); r.sg=s\n"
            " out[s]=[r.laue_group, r.space_group]\nprint(json.dumps(out))")
    r = subprocess.run([str(py), "-c", code, json.dumps(symbols)], capture_output=True, text=True)
    if r.returncode:
        raise SystemExit("NXRefine's Laue group names failed:\n" + r.stderr[-3000:])
    return json.loads(r.stdout)


# --------------------------------------------------------------------------------------
def _rel_text(d) -> str:
    return "n/a" if d is None else f"{d['max_rel']:.1e}"


def table(report) -> str:
    L = []
    m = report["machine"]
    L.append(f"machine: {m['cpu_model']}, {m['cores_usable']} cores usable, load "
             f"{m['load_average_at_start']}; python {m['python']}, numpy {m['numpy']}, scipy "
             f"{m['scipy']}; NXRefine venv: {report.get('nx_versions', {})}")
    if "pdf" in report:
        L.append("")
        L.append("1. Tukey taper and FFT: hklflow.algorithms.pdf against NXMultiReduce.fft_taper / total_pdf "
                 f"(tolerances: taper {TAPER_TOL:g}, PDF {PDF_TOL:g} of max|PDF|)")
        for r in report["pdf"]:
            L.append(f"  {r['name']}: {r['what']}, q_max {r['qmax']:.3f} 1/A (2 pi convention)")
            L.append(f"    taper: max |hklflow - NXRefine| inside q_max {r['taper_inside']:.1e} "
                     f"({r['taper_dtype']}); beyond q_max by NXRefine's |Q| ({r['beyond_voxels']} "
                     f"voxels): hklflow "
                     f"max {r['hk_beyond_max']:g}, NXRefine {r['nx_beyond']} (= its taper.min() "
                     f"{r['nx_taper_min']:.3e})"
                     + ("  [info: NXRefine's |Q| leaves out the cell angles]" if r["info"] else
                        f"  {'ok' if r['taper_ok'] else 'FAIL'}"))
            f = r.get("fft")
            if f is None:
                continue
            fr = "n/a" if f["fft_rel"] is None else f"{f['fft_rel']:.1e}"
            ow = "n/a" if f["own_taper_rel"] is None else f"{f['own_taper_rel']:.1e}"
            L.append(f"    PDF shape hklflow {f['shape']['hklflow']} ({f['dtype']['hklflow']}), "
                     f"NXRefine {f['shape']['nxrefine']} ({f['dtype']['nxrefine']}); same "
                     f"tapered input: max |diff| / max |PDF| = {fr}  "
                     f"{'ok' if r['fft_ok'] else 'FAIL'}")
            L.append(f"    each with its own taper (NXRefine's {r['nx_taper_min']:.1e} beyond q_max, "
                     f"hklflow's 0): {ow}")
            L.append("    axes: " + "; ".join(f"{k} {v}" for k, v in f["axes"].items())
                     + f" (NXRefine order {f['axes_order_nx']})")
            L.append(f"    NaN holes ({f['n_nan_input']} voxels): zeroed by the caller for both "
                     f"= the rows above; left in: hklflow {f['nan_hk']}; NXRefine total_pdf "
                     f"{f['nan_nx']}")
            s = f["seconds"]
            L.append(f"    seconds: FFT hklflow {s['hklflow']:.2f}, NXRefine total_pdf "
                     f"{s['nxrefine']:.2f} (workers {s['workers']}, includes its file writes); "
                     f"taper hklflow {r['taper_seconds']['hklflow']:.2f}, NXRefine "
                     f"{r['taper_seconds']['nxrefine']:.2f}")
    if "symm" in report:
        L.append("")
        L.append("2. Laue symmetrisation: NXSymmetry(...).symmetrize(entries=True) against "
                 "hklflow.algorithms.merge.symmetry.symmetrize_arrays (tolerance "
                 f"{SYMM_TOL:g} relative per voxel)")
        L.append(f"  {'case':<21}{'space group':<14}{'NX laue':<8}{'NX function':<13}"
                 f"{'delta: hklflow':>15}{'NXRefine':>9}  {'same ops':>9}{'field':>9}"
                 f"{'full grp':>10}  result")
        for r in report["symm"]:
            so = r.get("same_ops_vs_nx")
            fo = r.get("field_vs_nx")
            L.append(f"  {r['name']:<21}{r['space_group']:<14}{r['laue_nx']:<8}{r['nx_function']:<13}"
                     f"{r['n_hklflow']:>9} / {r['n_group']:<3}{r['n_nx']:>9}  "
                     f"{_rel_text(so):>9}{_rel_text(fo):>9}"
                     f"{r['full_vs_nx']['max_rel']:10.1e}  "
                     + ("info" if r["info"] else ("ok" if r["ok"] else "FAIL")))
        L.append("  delta: positions a delta at a general position lands on (hklflow / order of "
                 "the Laue group); same ops: max relative difference of signal/weights, hklflow "
                 "run with NXRefine's operators; field: the same for symmetrize() on a bare field "
                 "(weights = signal > 0, punch_and_fill's call); full grp: hklflow with the whole "
                 "Laue group against NXRefine (not expected to agree where NXRefine applies a "
                 "subgroup)")
        for r in report["symm"]:
            extra = ""
            if r["nx_ops_outside_group"]:
                extra = f"; NOT in the crystal's Laue group: {r['nx_ops_outside_group']}"
            if r["nx_unidentified"]:
                extra += f"; {r['nx_unidentified']} images not an operator"
            fv = r["full_vs_nx"]
            L.append(f"  {r['name']}: NXRefine sg -> {r['nx_reference_setting']!r}, Laue "
                     f"{r['laue_nx']!r} -> {r['nx_function']}: delta at {tuple(r['g'])} on "
                     f"{r['nx_ops']}{extra}; full group vs NXRefine: {fv['frac_gt_tol']:.0%} of "
                     f"{fv['voxels']} voxels differ > {SYMM_TOL:g} ({fv['zero_diff']} zero in one, not "
                     f"the other); seconds hklflow {r['hk_seconds']:.2f}, NXSymmetry "
                     f"{r['nx_seconds']:.2f}" + (f"; volume {r['path']}" if r.get("path") else ""))
    if "conventions" in report:
        L.append("")
        L.append("3. What NXSymmetry applies per Laue group name (nxsymmetry.laue_functions on a "
                 "delta at (1.25, 0.5, 0.75); operators as the image of (h,k,l); xN: counted N "
                 "times in signal and weights)")
        L.append(f"  {'name':<7}{'function':<13}{'terms':>6}{'distinct':>9}{'group':>7}  "
                 f"{'subgroup':<9}operators")
        for r in report["conventions"]:
            ops = "  ".join(r["ops"])
            L.append(f"  {r['name']:<7}{r['function']:<13}{r['terms']:>6}{r['distinct']:>9}"
                     f"{r['group_order']:>7}  {'yes' if r['subgroup'] else 'NO':<9}"
                     + (ops if len(ops) <= 130 else ""))
            if len(ops) > 130:
                L.extend(textwrap.wrap(ops, 110, initial_indent="      ", subsequent_indent="      "))
        L.append("  terms: images summed (2^number of steps); distinct: positions; group: order "
                 "of the Laue group; subgroup: every operator is in it")
    L.append("")
    L.append(f"run time {report['seconds']:.1f} s (NXRefine driver runs: "
             + ", ".join(f"{k} {v:.1f} s" for k, v in report["driver_seconds"].items()) + ")")
    L.append("RESULT: " + ("all agreements hold" if report["ok"] else
                           "FAILED: " + "; ".join(report["failures"])))
    return "\n".join(L)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--venv", type=Path, default=HERE / ".nxrefine-venv")
    p.add_argument("--workdir", type=Path,
                   help="keep the exchange files (.json, .npy, .nxs; ~200 MB) here; default: a "
                        "temporary folder, removed at the end")
    p.add_argument("--real-dir", type=Path, default=REAL_DIR,
                   help="results/<sample>/<temperature> of a run of the tiny demo "
                        "(transform.nxs, transform_symmetrized.nxs); left out if missing")
    p.add_argument("--no-real", action="store_true")
    p.add_argument("--parts", nargs="+", default=["pdf", "symmetry", "conventions"],
                   choices=["pdf", "symmetry", "conventions"])
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    t_start = time.perf_counter()
    sys.path.insert(0, str(HERE))
    from common import emit, machine_info
    from nxrefine_venv import VenvError, ensure_venv

    report = {"machine": machine_info(), "driver_seconds": {}, "failures": [],
              "python": platform.python_version()}
    try:
        py = ensure_venv(args.venv)
    except VenvError as e:
        raise SystemExit(str(e))
    tmp = None
    if args.workdir is None:
        import tempfile

        tmp = tempfile.TemporaryDirectory(prefix="nxrefine_pdf_compare_")
        args.workdir = Path(tmp.name)
    args.workdir.mkdir(parents=True, exist_ok=True)
    if "pdf" in args.parts:
        log.info("taper and FFT")
        rows, meta = compare_pdf(pdf_cases(args), py, args.workdir, args.workers)
        report["pdf"], report["nx_versions"] = rows, meta["versions"]
        report["driver_seconds"]["pdf"] = meta["driver_seconds"]
        for r in rows:
            if not r["info"] and not r["taper_ok"]:
                report["failures"].append(f"taper {r['name']}")
            if "fft_ok" in r and not r["fft_ok"]:
                report["failures"].append(f"PDF {r['name']}")
    if "symmetry" in args.parts:
        log.info("symmetrisation")
        rows, meta = compare_symm(symm_cases(args), py, args.workdir)
        report["symm"], report["nx_versions"] = rows, meta["versions"]
        report["driver_seconds"]["symmetry"] = meta["driver_seconds"]
        report["failures"] += [f"symmetrisation {r['name']}" for r in rows
                               if not r["info"] and not r["ok"]]
    if "conventions" in args.parts:
        rows, sec = conventions(py, args.workdir)
        report["conventions"] = rows
        report["driver_seconds"]["conventions"] = sec
    if tmp is not None:
        tmp.cleanup()
    report["failures"] += [f"moved: {m}" for m in settled_moves(report)]
    report["ok"] = not report["failures"]
    report["seconds"] = time.perf_counter() - t_start
    report["load_end"] = [round(x, 2) for x in os.getloadavg()]
    emit(report, table(report), args.json)
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
