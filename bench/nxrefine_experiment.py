"""An NXRefine experiment made by NXRefine's own code from a simulated hklflow experiment's
truth, then imported by `hklflow import nxrefine` and checked against that truth: the proof
of issue 83's importer.

The scan files are written by NXRefine 0.1.1 (its NXRefine.write_parameters, in the
throw-away venv of bench/nxrefine_venv.py) with the truth's geometry in NXRefine's terms, in
NXRefine's own lab (its default detector_orientation '-y +z -x': hklflow.model.nxrefine.
lab_frame), the raw frames linked where they are.  The parents 0.1.1 cannot write are
written as NXRefine's current source does:

  scans   SAMPLE_scans.nxs (nxparent.py 8876a8b L650-663: /entry/nxscans with scans,
          selected, transform Qh/Qk/Ql; /entry/sample; each fN's orientation_matrix) and in
          each scan file /entry/nxscans/parent (L328-335)
  link    SAMPLE_parent.nxs, a relative symbolic link to the parent's scan file (nxreduce.py
          0736216 make_parent), the grid in each scan file's fN/transform
  v011    SAMPLE.nxs, NXMultiReduce.make_parent's file of 0.1.1 (/entry/nxreduce,
          /entry/sample)

Then per layout: import, the imported geometry against the truth (the (h, k, l) of pixels
over every frame), and reflections mapped by NXRefine's get_xyz against hklflow's predict
on the imported geometry (columns, rows, frames).

    python bench/nxrefine_experiment.py SIMULATED OUT [--layout scans link v011] [--reduce]

prints one line per layout and entry: the largest (h, k, l) difference, the largest pixel
and angle differences of the reflections.  --reduce: the simulation reduced as it is
(OUT/native), its grid given to NXRefine's parent (CCTW does not install here), the first
layout's import reduced, and bench/accuracy.py's orientation, volume and PDF lines of both
(the truth's orientations taken to the import's sample frame: truth_in_import_frame).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
LAYOUTS = ("scans", "link", "v011")
LABEL = "xtal"  # NXRefine's label folder under the sample's
DEFAULT_STRING = "-y +z -x"  # NXRefine's default detector_orientation

# Runs in NXRefine's venv (nexusformat 2.0.3, nxrefine 0.1.1): argv[1] the spec (JSON)
BUILDER = r"""
import json, os, sys
import numpy as np
from nexusformat.nexus import (NXdata, NXentry, NXfield, NXlink, NXparameters, NXprocess,
                               NXroot, NXsample, nxload)
from nxrefine.nxrefine import NXRefine

spec = json.load(open(sys.argv[1]))
folder = os.path.join(spec["root"], spec["sample"], spec["label"])
os.makedirs(folder, exist_ok=True)
grid = {k: np.asarray(v) for k, v in spec["grid"].items()}

def grid_group():
    return NXdata(axes=[NXfield(grid["Ql"], name="Ql"), NXfield(grid["Qk"], name="Qk"),
                        NXfield(grid["Qh"], name="Qh")])

def set_sample(r, scan):
    r.a, r.b, r.c, r.alpha, r.beta, r.gamma = scan["cell"]
    r.space_group, r.laue_group = scan["space_group"], scan["laue_group"]

paths = {}
for scan in spec["scans"]:
    path = os.path.join(folder, f"{spec['sample']}_{scan['name']}.nxs")
    root = NXroot(NXentry(NXsample()))
    for name, e in scan["entries"].items():
        root[name] = NXentry()
        root[name]["data"] = NXdata()
        root[name]["data"]["data"] = NXlink("/entry/data/data",
                                            file=os.path.relpath(e["raw"], folder))
        root[name]["data"]["frame_number"] = np.arange(e["nframes"])
    root.save(path, "w")
    root = nxload(path, "rw")
    r = NXRefine(root["entry"])
    set_sample(r, scan)
    r.write_parameters(sample=True)
    root["entry/sample/temperature"] = NXfield(scan["temperature"], units="K")
    for name, e in scan["entries"].items():
        root[name]["sample"] = NXlink("/entry/sample")
        r = NXRefine(root[name])
        set_sample(r, scan)
        p = e["params"]
        r.wavelength, r.distance = p["wavelength"], p["distance"]
        r.detector_orientation = p["detector_orientation"]
        r.yaw, r.pitch, r.roll = p["yaw"], p["pitch"], p["roll"]
        r.xc, r.yc, r.pixel_size = p["xc"], p["yc"], p["pixel_size"]
        r.shape = p["shape"]
        r.phi, r.phi_step = p["phi"], p["phi_step"]
        r.chi, r.omega, r.theta = p["chi"], p["omega"], p["theta"]
        r.Umat = np.matrix(p["orientation_matrix"])
        r.write_parameters()
        # new_configuration.py: the pyFAI detector's name, copied into every scan
        root[name]["instrument/detector/description"] = spec["detector"]
        if spec["layout"] != "scans":
            root[name]["transform"] = grid_group()
    if spec["layout"] == "scans":  # nxparent.py L328-335
        root["entry/nxscans"] = NXprocess(parent=f"{spec['sample']}_scans.nxs")
    paths[scan["name"]] = path

parent = spec["parent"]
if spec["layout"] == "scans":  # nxparent.py L650-663
    src = nxload(paths[parent])
    root = NXroot(NXentry(NXsample()))
    stems = [f"{spec['sample']}_{s['name']}" for s in spec["scans"]]
    root["entry/nxscans"] = NXprocess(scans=NXfield(stems), selected=NXfield([True] * len(stems)),
                                      settings=NXparameters(), transform=grid_group())
    out = os.path.join(folder, f"{spec['sample']}_scans.nxs")
    root.save(out, "w")
    root = nxload(out, "rw")
    r = NXRefine(root["entry"])
    set_sample(r, spec["scans"][0])
    r.write_parameters(sample=True)
    for name in spec["scans"][0]["entries"]:
        root[name] = NXentry()
        root[name]["instrument"] = src[name]["instrument"].copy()
elif spec["layout"] == "link":  # nxreduce.py 0736216 make_parent
    os.symlink(os.path.basename(paths[parent]),
               os.path.join(folder, f"{spec['sample']}_parent.nxs"))
else:  # 0.1.1 NXMultiReduce.make_parent: /entry/nxreduce, /entry/sample
    root = NXroot(NXentry(NXsample(), nxreduce=NXparameters(first_frame=0)))
    out = os.path.join(folder, f"{spec['sample']}.nxs")
    root.save(out, "w")
    root = nxload(out, "rw")
    r = NXRefine(root["entry"])
    set_sample(r, spec["scans"][0])
    r.write_parameters(sample=True)
print(json.dumps(paths))
"""

# Runs in NXRefine's venv: argv[1] a scan file, argv[2] an entry, argv[3] the (h, k, l) (JSON)
GET_XYZ = r"""
import json, sys
import numpy as np
import nxrefine.nxrefine as nxr
from nexusformat.nexus import nxload
from nxrefine.nxrefine import NXRefine
# get_xyz hands rotmat scipy's fsolve arguments, arrays of one value, which numpy >= 1.24
# no longer builds a matrix from: the value itself (the formula unchanged)
_rotmat = nxr.rotmat
nxr.rotmat = lambda axis, angle=0.0: _rotmat(axis, float(np.ravel(angle)[0]))
r = NXRefine(nxload(sys.argv[1])[sys.argv[2]])
out = []
for h, k, l in json.loads(sys.argv[3]):
    for p in r.get_xyz(h, k, l):
        out.append([h, k, l, float(p.x), float(p.y), float(p.z)])
print(json.dumps(out))
"""

# Runs in NXRefine's venv: argv[1] a scan file, argv[2] an entry, argv[3] (x, y, z) (JSON)
GET_HKL = r"""
import json, sys
from nexusformat.nexus import nxload
from nxrefine.nxrefine import NXRefine
r = NXRefine(nxload(sys.argv[1])[sys.argv[2]])
print(json.dumps([[float(v) for v in r.get_hkl(x, y, z)] for x, y, z in json.loads(sys.argv[3])]))
"""


# Runs in NXRefine's venv: argv[1] a scan file, argv[2] an entry: what NXRefine reads of it
READ_PARAMETERS = r"""
import json, sys
import numpy as np
from nexusformat.nexus import nxload
from nxrefine.nxrefine import NXRefine
root = nxload(sys.argv[1])
r = NXRefine(root[sys.argv[2]])
out = {k: float(getattr(r, k)) for k in ("distance", "xc", "yc", "yaw", "pitch", "roll", "phi",
                                         "phi_step", "chi", "omega", "theta", "wavelength")}
out["detector_orientation"] = str(r.detector_orientation)
out["Umat"] = np.asarray(r.Umat).tolist()
out["cell"] = [float(v) for v in r.lattice_parameters]
print(json.dumps(out))
"""
# the fields compared (NXRefine's names) and their units
FIELDS = {"distance": "mm", "xc": "px", "yc": "px", "yaw": "deg", "pitch": "deg", "roll": "deg",
          "phi": "deg", "phi_step": "deg", "chi": "deg", "omega": "deg", "theta": "deg",
          "wavelength": "A", "Umat": "", "cell": "A, deg"}


def field_round_trip(geo, cell, T, nx_python, scan_file, entry) -> dict:
    """|NXRefine's own reading of each field - the same field of the imported geometry
    taken back to NXRefine's terms (entry_parameters)|, per field (FIELDS)."""
    from hklflow.model.nxrefine import entry_parameters

    theirs = _nx_run(nx_python, READ_PARAMETERS, scan_file, entry)
    ours = entry_parameters(geo, cell, T)
    ours = {**ours, "Umat": ours["orientation_matrix"], "cell": list(cell)}
    out = {k: float(np.max(np.abs(np.asarray(ours[k], float) - np.asarray(theirs[k], float))))
           for k in FIELDS}
    out["detector_orientation"] = ours["detector_orientation"] == theirs["detector_orientation"]
    return out


def _nx_run(nx_python, script: str, *args):
    p = subprocess.run([str(nx_python), "-c", script, *map(str, args)], capture_output=True,
                       text=True, timeout=600)
    if p.returncode:
        raise RuntimeError(p.stderr[-3000:])
    return json.loads(p.stdout.splitlines()[-1])


def where_nxrefine_puts(geo, nx_python, scan_file, entry, hkl):
    """(rows, cols, frames) where NXRefine's geometry has the reflections hkl, found from
    hklflow's predicted positions by one Newton step on NXRefine's own get_hkl (exact: its
    inverse get_xyz intersects the untilted detector plane), with their hklflow positions."""
    hh, rows, cols, z, _ = geo.predict(hkl)
    ok = (np.isfinite(rows) & (z >= 0) & (z <= geo.angles.nframes)
          & geo.detector.on_detector(np.nan_to_num(rows, nan=-1), np.nan_to_num(cols, nan=-1)))
    hh, rows, cols, z = hh[ok], rows[ok], cols[ok], z[ok]
    theirs = np.array(_nx_run(nx_python, GET_HKL, scan_file, entry,
                              json.dumps(np.stack([cols, rows, z], 1).tolist())))
    eps = 1e-3  # pixels and frames: hklflow's Jacobian of (h, k, l) by (row, col, frame)
    J = np.stack([(geo.hkl_at(rows + eps * d[0], cols + eps * d[1], z + eps * d[2])
                   - geo.hkl_at(rows, cols, z)) / eps for d in np.eye(3)], axis=-1)
    step = np.linalg.solve(J, (hh - theirs)[..., None])[..., 0]
    return np.stack([rows, cols, z], 1), np.stack([rows, cols, z], 1) + step


def truth_scans(simulated: Path) -> dict:
    return json.loads((simulated / "truth.json").read_text())


def scan_geometry(truth: dict, scan_id: str):
    """The truth's ScanGeometry of one scan entry (sample/TLABEL/entry)."""
    from hklflow.model.geometry import DetectorGeometry, Goniometer, ScanAngles, ScanGeometry

    s = truth["scans"][scan_id]
    g = truth["goniometer"]
    gon = Goniometer(g["scan_axis"], g["scan_sense"], tuple(g["offset_axes"].items()))
    sample, tlabel, _ = scan_id.split("/")
    UB = np.asarray(truth["samples"][sample]["temperatures"][tlabel]["UB"])
    return ScanGeometry(DetectorGeometry(**{k: v for k, v in s["geometry"].items()}), gon,
                        ScanAngles(s["phi_start"], s["phi_step"], s["nframes"]),
                        s["offsets"], UB)


def build_spec(simulated: Path, out: Path, layout: str, sample: str,
               grid: dict | None = None) -> dict:
    """The builder's spec: every scan of `sample` with the truth in NXRefine's terms."""
    from hklflow.model.nxrefine import entry_parameters, lab_frame, laue_group

    truth = truth_scans(simulated)
    T, _ = lab_frame(DEFAULT_STRING)
    temps = truth["samples"][sample]["temperatures"]
    sg = truth["samples"][sample]["space_group"]
    scans = []
    for tlabel, t in temps.items():
        entries = {}
        for scan_id in sorted(k for k in truth["scans"] if k.startswith(f"{sample}/{tlabel}/")):
            geo = scan_geometry(truth, scan_id)
            p = entry_parameters(geo, t["cell"], T)
            name = scan_id.split("/")[-1]
            entries[name] = {
                "raw": str((simulated / "raw" / sample / tlabel / f"{name}.h5").resolve()),
                "nframes": geo.angles.nframes,
                "params": {k: (np.asarray(v).tolist() if isinstance(v, np.ndarray) else v)
                           for k, v in p.items() if k != "UBmat"}}
        scans.append({"name": tlabel, "temperature": t["temperature"], "cell": t["cell"],
                      "space_group": sg, "laue_group": laue_group(sg), "entries": entries})
    parent_t = min(temps, key=lambda k: -temps[k]["temperature"])  # the warmest, as the demo's
    if grid is None:  # (a small grid: the proof of the geometry needs no volume)
        grid = {q: np.linspace(-3, 3, 61).tolist() for q in ("Qh", "Qk", "Ql")}
    return {"root": str(out), "sample": sample, "label": LABEL, "layout": layout,
            "detector": truth["calibration_geometry"]["detector"],
            "scans": scans, "parent": parent_t, "grid": grid}


def build(simulated: Path, out: Path, layout: str, nx_python, sample: str = "tiny",
          grid: dict | None = None) -> dict:
    """Write the NXRefine experiment OUT with NXRefine's code (its grid: Qh, Qk, Ql);
    {scan name: scan file}.  OUT is made afresh."""
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    spec_file = out / f"spec_{layout}.json"
    spec_file.write_text(json.dumps(build_spec(simulated, out, layout, sample, grid)))
    r = subprocess.run([str(nx_python), "-c", BUILDER, str(spec_file)], capture_output=True,
                       text=True, timeout=600)
    if r.returncode:
        raise RuntimeError(f"NXRefine's builder failed:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.splitlines()[-1])


def imported_geometries(dest: Path, nx_scans: dict) -> dict:
    """{(sample, TLABEL, entry): ScanGeometry} of an imported experiment, as its plan puts
    each entry together, with UB from the scan file's U (hklflow_ub in the import's frame)."""
    from hklflow.files.nxrefine import read_nxrefine_scan
    from hklflow.model.geometry import DetectorGeometry
    from hklflow.model.nxrefine import hklflow_ub, lab_frame
    from hklflow.model.scan import temperature_label
    from hklflow.planning.config import load_experiment

    exp = load_experiment(dest / "config" / "config.yaml", base_dir=dest)
    poni = DetectorGeometry.from_poni_file(dest / "calibration" / "nxrefine.poni",
                                           exp.raw["instrument"]["detector"]["name"])
    out = {}
    for row in exp.scans:
        nx = read_nxrefine_scan(nx_scans[temperature_label(row.temperature)])
        e = next(e for e in nx.entries if e.name == row.entry)
        T, _ = lab_frame(e.detector["detector_orientation"])
        cell = [nx.sample[f"unitcell_{n}"] for n in ("a", "b", "c", "alpha", "beta", "gamma")]
        geo = row_geometry(exp, row, poni)
        out[(row.sample, temperature_label(row.temperature), row.entry)] = (
            geo, hklflow_ub(e.orientation_matrix, cell, T))
    return out


def row_geometry(exp, row, poni):
    from hklflow.model.geometry import ScanGeometry

    return ScanGeometry(poni.shifted(*row.detector_shift), exp.instrument.goniometer, row.angles,
                        dict(row.offsets))


def compare(simulated: Path, dest: Path, nx_scans: dict, nx_python, sample: str = "tiny",
            n_reflections: int = 40, get_xyz: bool = True) -> list[dict]:
    """Per entry: the largest (h, k, l) difference between the imported geometry and the
    truth over a grid of pixels and every frame; NXRefine's get_xyz of reflections against
    hklflow's predict on the imported geometry (px, deg)."""
    from dataclasses import replace

    from hklflow.files.nxrefine import read_nxrefine_scan
    from hklflow.model.nxrefine import lab_frame

    truth = truth_scans(simulated)
    rows = []
    for (smp, tlabel, entry), (geo, UB) in imported_geometries(dest, nx_scans).items():
        true = scan_geometry(truth, f"{sample}/{tlabel}/{entry}")
        geo = replace(geo, UB=UB)
        ny, nx_ = geo.detector.shape
        r, c, z = np.meshgrid(np.linspace(0.5, ny - 0.5, 7), np.linspace(0.5, nx_ - 0.5, 7),
                              np.linspace(0.0, geo.angles.nframes, 5), indexing="ij")
        dhkl = np.abs(geo.hkl_at(r, c, z) - true.hkl_at(r, c, z)).max()
        refl = truth["scans"][f"{sample}/{tlabel}/{entry}"]["reflections"]
        hkl = np.stack([refl["h"], refl["k"], refl["l"]], axis=1)[:n_reflections].astype(int)
        ours, theirs = where_nxrefine_puts(geo, nx_python, nx_scans[tlabel], entry, hkl)
        d = np.abs(ours - theirs)
        # NXRefine's own inverse, get_xyz (approximate on a tilted detector), for the record
        xyz = np.array((_nx_run(nx_python, GET_XYZ, nx_scans[tlabel], entry,
                                json.dumps(hkl[:10].tolist())) if get_xyz else None)
                       or np.zeros((0, 6)))
        approx = 0.0
        for h, k, l, x, y, zz in xyz:
            _, rr, cc, _, _ = geo.predict([[h, k, l]])
            near = np.nanmin(np.hypot(rr - y, cc - x)) if np.any(np.isfinite(rr)) else np.nan
            approx = max(approx, near) if np.isfinite(near) else approx
        nx_scan = read_nxrefine_scan(nx_scans[tlabel])
        cell = [nx_scan.sample[f"unitcell_{n}"] for n in ("a", "b", "c", "alpha", "beta", "gamma")]
        T, _ = lab_frame(DEFAULT_STRING)
        fields = field_round_trip(geo, cell, T, nx_python, nx_scans[tlabel], entry)
        rows.append({"entry": f"{smp}/{tlabel}/{entry}", "max_dhkl": float(dhkl), "fields": fields,
                     "reflections": int(len(ours)), "max_dpx": float(d[:, :2].max()),
                     "max_ddeg": float(d[:, 2].max() * abs(geo.angles.step)),
                     "get_xyz_px": float(approx)})
    return rows


def truth_in_import_frame(simulated: Path, dest: Path) -> Path:
    """The truth with every sample orientation in the imported experiment's sample frame
    (DEST/truth.json, for bench/accuracy.py): NXRefine's phi axis is its z, so the import's
    goniometer differs from the simulation's by a constant rotation P (goniometer_parameters)
    that UB takes up: UB_import = T^T P^T T UB."""
    from hklflow.model.nxrefine import goniometer_parameters, lab_frame

    truth = truth_scans(simulated)
    T, _ = lab_frame(DEFAULT_STRING)
    _, P = goniometer_parameters(scan_geometry(truth, next(iter(truth["scans"]))), T)
    M = T.T @ P.T @ T
    for sample in truth["samples"].values():
        for t in sample["temperatures"].values():
            t["U"] = (M @ np.asarray(t["U"])).tolist()
            t["UB"] = (M @ np.asarray(t["UB"])).tolist()
    out = dest / "truth.json"
    out.write_text(json.dumps(truth))
    return out


def main(argv=None) -> int:
    sys.path.insert(0, str(HERE))
    from nxrefine_venv import ensure_venv

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("simulated", type=Path, help="a simulated experiment (hklflow simulate)")
    p.add_argument("out", type=Path, help="a folder for the NXRefine and hklflow experiments")
    p.add_argument("--layout", nargs="+", choices=LAYOUTS, default=list(LAYOUTS))
    p.add_argument("--sample", default="tiny")
    p.add_argument("--reduce", action="store_true",
                   help="reduce the first layout's import (hklflow run) and measure it against "
                        "the truth (bench/accuracy.py)")
    args = p.parse_args(argv)
    nx_python = ensure_venv()
    from hklflow.commands.importing import main as import_main

    grid = None
    if args.reduce:  # the simulation reduced as it is: its grid becomes NXRefine's
        native = args.out / "native"
        if not (native / "results").is_dir():
            shutil.copytree(args.simulated, native, dirs_exist_ok=True)
            if reduce(native):
                return 1
        g = json.loads((native / "results" / args.sample / "grid.json").read_text())["grid"]
        grid = {f"Q{a}": np.linspace(g[a]["start"], g[a]["stop"], g[a]["n"]).tolist()
                for a in "hkl"}
    for layout in args.layout:
        src = args.out / f"nxrefine_{layout}"
        nx_scans = build(args.simulated, src, layout, nx_python, args.sample, grid)
        dest = args.out / f"hklflow_{layout}"
        if import_main(["nxrefine", str(src), str(dest), "--force"]):
            return 1
        for row in compare(args.simulated, dest, {k: Path(v) for k, v in nx_scans.items()},
                           nx_python, args.sample):
            print(f"{layout:6s} {row['entry']:16s} pixels' (h, k, l) max |d| {row['max_dhkl']:.1e}; "
                  f"{row['reflections']} reflections, NXRefine's place against hklflow's: max "
                  f"{row['max_dpx']:.1e} px, {row['max_ddeg']:.1e} deg (its approximate get_xyz: "
                  f"{row['get_xyz_px']:.2f} px)")
            print("       fields NXRefine reads against the import's, back in its terms: " + ", ".join(
                f"{k} {v:.0e}" if not isinstance(v, bool) else f"{k} {'same' if v else 'DIFFERS'}"
                for k, v in row["fields"].items()))
    if args.reduce:
        dest = args.out / f"hklflow_{args.layout[0]}"
        truth_in_import_frame(args.simulated, dest)
        if reduce(dest):
            return 1
        for name, folder in (("native", native), ("imported", dest)):
            r = subprocess.run([sys.executable, str(HERE / "accuracy.py"), str(folder)],
                               capture_output=True, text=True)
            for line in r.stdout.splitlines():
                if line.startswith(("orientation", "volumes", "pdf", "expansion")):
                    print(f"{name:8s} {line}")
    return 0


def reduce(experiment: Path) -> int:
    """hklflow run on every core; its console's last lines."""
    r = subprocess.run([sys.executable, "-m", "hklflow", "run", str(experiment), "--", "--cores",
                        str(os.cpu_count() or 1)], capture_output=True, text=True)
    print(f"hklflow run {experiment}: " + (r.stdout + r.stderr).strip().splitlines()[-1]
          if r.returncode else f"hklflow run {experiment}: done")
    return r.returncode


if __name__ == "__main__":
    raise SystemExit(main())
