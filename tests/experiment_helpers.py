"""What several test modules do to an experiment: edit its config or scans table, ingest and
search its entries, make a scan file of a scan in progress, and read the tiny experiment's
true geometry, detector settings and raw files; paint a scan's Bragg mask and draw random
Bragg regions; a calibrant's true geometry (TRUE_300K), the issue's rough start and bounds,
the settings of its calibration, and an HDF5 stack of frames."""
from __future__ import annotations

import dataclasses
import json
import math

import h5py
import hdf5plugin
import numpy as np
import yaml

from hklflow.files.scan import read_scan_file, write_scan_file
from hklflow.model.crystal import Crystal, UnitCell
from hklflow.model.geometry import DetectorGeometry, Goniometer, ScanAngles, ScanGeometry
from hklflow.model.scan import ScanRow
from hklflow.settings.params import CalibrationParams, DetectorParams

from conftest import ingest_with, step_settings

SCAN = "tiny/100K/f2"  # the entry truth_scan and raw take by default

# Calibrant images (powder calibration): a Pilatus 300k, CeO2 at 0.6 A, the small and fast
# case of the calibration's tests and of calibrate_powder's command line
PX = 172e-6  # Pilatus pixel (m)
TRUE_300K = DetectorGeometry("Pilatus300k", dist=0.15, poni1=300.3 * PX, poni2=240.7 * PX,
                             rot1=math.radians(0.3), rot2=math.radians(-0.25),
                             rot3=math.radians(0.4), wavelength=0.6)
# The accuracy bounds (start 3 % off in distance, 10 px off in beam centre, tilts 0)
MAX_DIST_REL = 1e-3
MAX_CENTRE_PX = 0.2
MAX_TILT_DEG = 0.05


def edit_config(d, change):
    p = d / "config" / "config.yaml"
    cfg = yaml.safe_load(p.read_text())
    change(cfg)
    p.write_text(yaml.safe_dump(cfg, sort_keys=False))


def edit_table(d, row, column, value):
    p = d / "config" / "scans.tsv"
    lines = p.read_text().splitlines()
    header = lines[0].split("\t")
    cells = lines[row].split("\t")
    cells[header.index(column)] = value
    lines[row] = "\t".join(cells)
    p.write_text("\n".join(lines) + "\n")


def in_progress(root, scan_file, out, planned):
    """A copy of an ingested scan file as ingest_scan writes it while the scan is still being
    collected (hklflow watch): its frames so far of `planned` (for the other step tests)."""
    rec = read_scan_file(scan_file)
    settings = json.loads(step_settings(root, "ingest_scan", *rec.scan_id.split("/")))
    row = ScanRow.from_settings({**settings["scan"], "planned_frames": planned})
    write_scan_file(out, row, rec.setup, rec.calibration,
                    dataclasses.replace(rec.frames, growing=True, fingerprints=()),
                    rec.provenance, monitor=rec.monitor)
    assert read_scan_file(out).in_progress
    return out


def searched_entries(root, truth, temperature: str) -> str:
    """The entries f1, f2 of `temperature` (e.g. "300K") in the experiment `root` ingested
    (with the true calibration) and searched by find_peaks, as the workflow would; their
    folder."""
    from contextlib import chdir

    from hklflow.model.geometry import DetectorGeometry
    from hklflow.steps import find_peaks

    d = f"results/tiny/{temperature}"
    true = DetectorGeometry(**truth["scans"][f"tiny/{temperature}/f1"]["geometry"])  # unshifted
    for e in ("f1", "f2"):
        ingest_with(root, f"tiny/{temperature}/{e}", true, root / d / e / "scan.nxs")
        with chdir(root):
            assert find_peaks.main(["--settings", step_settings(root, "find_peaks"),
                                    "--scan", f"{d}/{e}/scan.nxs", "--out", f"{d}/{e}/peaks.nxs",
                                    "--png", f"{d}/{e}/peaks.png"]) == 0
    return d


def blank_entries(root, truth, temperature: str) -> str:
    """searched_entries with f1's frames all zero (a closed shutter) and f2's flat (counts,
    no peak)."""
    for e, blank in (("f1", 0), ("f2", 1)):
        with h5py.File(root / f"raw/tiny/{temperature}/{e}.h5", "r+") as f:
            frames = f["/entry/data/data"]
            frames[...] = np.where(frames[()] < 0, frames[()], blank)  # the gaps (-1) kept
    return searched_entries(root, truth, temperature)


def truth_scan(truth, scan_id=SCAN):
    t = truth["scans"][scan_id]
    s, tl, _ = scan_id.split("/")
    samp = truth["samples"][s]["temperatures"][tl]
    gon = truth["goniometer"]
    goniometer = Goniometer(tuple(gon["scan_axis"]), gon["scan_sense"],
                            tuple((k, tuple(v)) for k, v in gon["offset_axes"].items()))
    scan = ScanGeometry(DetectorGeometry(**t["geometry"]), goniometer,
                        ScanAngles(t["phi_start"], t["phi_step"], t["nframes"]), dict(t["offsets"]),
                        np.array(samp["UB"]))
    crystal = Crystal(truth["samples"][s]["space_group"], UnitCell(*samp["cell"]))
    return scan, np.array(samp["UB"]), crystal


def raw(exp, scan_id=SCAN):
    s, t, e = scan_id.split("/")
    return exp / "raw" / s / t / f"{e}.h5"


def scan_setup(truth, scan_id):
    """The true detector geometry and scan angles of a scan entry of the simulation."""
    t = truth["scans"][scan_id]
    return DetectorGeometry(**t["geometry"]), ScanAngles(t["phi_start"], t["phi_step"], t["nframes"])


def detector(g: DetectorGeometry, **kw) -> DetectorParams:
    """The detector settings (instrument.detector) of a geometry's detector."""
    return DetectorParams.defaults(name=g.detector, **kw)


def rotation_angle_deg(R1, R2) -> float:
    """Angle (deg) of the rotation R1 R2^T taking R2 to R1."""
    M = np.asarray(R1) @ np.asarray(R2).T
    c = (np.trace(M) - 1.0) / 2.0
    return float(np.degrees(np.arccos(np.clip(c, -1.0, 1.0))))


def painted(mask) -> np.ndarray:
    """A scan's Bragg mask (hklflow.algorithms.masks.masking.ScanMask) painted into every
    pixel of every frame: (frames, rows, cols)."""
    rows, cols = mask.shape
    out = np.zeros((mask.nframes, rows * cols), np.uint8)
    mask.paint(0, mask.nframes, out)
    return out.reshape(mask.nframes, rows, cols)


def random_regions(rng, n, shape, nframes):
    """n random Bragg regions (centre row, col, frame and half-axes) of a detector of that
    shape over nframes, some beyond its edges."""
    rows, cols = shape
    return np.column_stack([rng.uniform(-4, rows + 4, n), rng.uniform(-4, cols + 4, n),
                            rng.uniform(-3, nframes + 3, n), rng.uniform(0.2, 6, n),
                            rng.uniform(0.2, 6, n), rng.uniform(0.1, 4, n)])


def off_start(true: DetectorGeometry) -> DetectorGeometry:
    """The issue's rough start: 3 % off in distance, 10 px off in beam centre, no tilts."""
    return DetectorGeometry(true.detector, true.dist * 1.03, true.poni1 + 10 * PX,
                            true.poni2 - 10 * PX, 0.0, 0.0, 0.0, true.wavelength)


def calibration_params(**kw) -> CalibrationParams:
    """CalibrationParams of a Pilatus 300k CeO2 calibration at 0.6 A (kw: any field; start
    may be a DetectorGeometry)."""
    if isinstance(kw.get("start"), DetectorGeometry):
        g = kw["start"]
        kw["start"] = {k: getattr(g, k) for k in ("dist", "poni1", "poni2", "rot1", "rot2", "rot3")}
    base = dict(name="c", calibrant="CeO2", image="x.cbf", dataset="/entry/data/data", frame=0,
                poni=None, start=None, refine=("dist", "poni1", "poni2", "rot1", "rot2", "rot3"),
                max_rings=None, detector="Pilatus300k", wavelength=0.6, polarization_fraction=0.99)
    return CalibrationParams(**{**base, **kw})


def write_h5(path, frames, dataset="/entry/data/data"):
    """An HDF5 stack of frames (bitshuffle-LZ4, a frame per chunk), as a detector writes one."""
    frames = np.asarray(frames)
    with h5py.File(path, "w") as f:
        f.create_dataset(dataset, data=frames, chunks=(1,) + frames.shape[-2:],
                         **hdf5plugin.Bitshuffle())
    return path
