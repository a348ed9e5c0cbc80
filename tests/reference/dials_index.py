"""DIALS's indexing and refinement as an independent reference for hklflow's parent orientation.

Like dials_spots (whose import, spot finding, process handling and DialsError this reuses),
nothing here imports dials, dxtbx or cctbx: ``dials.import`` + ``dials.find_spots``
(dials_spots.run_dials_find_spots), ``dials.index`` with the known space group and the
APPROXIMATE cell (what hklflow's index_parent gets from the config) and ``dials.refine`` run
as programs; the refined crystal is read from ``refined.expt`` (JSON) with the json module,
the statistics from the programs' output.

What dials.refine refines here (DIALS 3.12 defaults, scan-static: ``scan_varying=False`` is
passed, since the default ``Auto`` adds a scan-varying pass with a cell per image):
detector distance, shift1, shift2 and the three tilts tau1..tau3 (6); the beam direction out
of the spindle plane (1; the in-plane direction and the wavelength are fixed); crystal
orientation (3) and the cell parameters free in the space group (2 hexagonal, 4 monoclinic);
goniometer fixed.  So n_parameters = 10 + number of free cell parameters.  Before refining,
DIALS rejects centroid outliers (MCD algorithm by default): n_refined < n_indexed.

Cell standard uncertainties: ``refined.expt`` stores the crystal's ``B_covariance``, the 9 x
9 covariance of the row-major elements of DIALS's B (= the transposed fractionalisation
matrix; columns = reciprocal axes in a Cartesian crystal frame; G* = B^T B).  cell_esd
propagates it through the cell's dependence on B (numerical Jacobian), which is what
``dials.show`` / the "Final refined crystal model" block print in parentheses (that rounded
print is parsed too, as ``cell_printed`` / ``cell_esd_printed``, and the tests check that
the two agree).

Geometry convention (important for hklflow's miniCBF frames): dxtbx reads a Pilatus
miniCBF with fast axis +X, slow axis -Y, beam along -Z and rotation axis +X.
simulation.experiment.CbfFramesWriter writes hklflow's arrays unchanged (row 0 at the
bottom, pyFAI orientation 3), so DIALS's lab frame is hklflow's (L1 up, L2, L3 along the
beam) through the MIRROR ``HKLFLOW_TO_DXTBX_LAB`` (X = L2, Y = -L1, Z = -L3; det -1).  A
mirrored rotation is a rotation about the negated mirrored axis, so DIALS's rotation axis
must be ``dials_rotation_axis(scan_axis, scan_sense)`` (-X for hklflow's (0, 1, 0), sense
+1): with the default +X DIALS finds no lattice.  With it DIALS indexes the mirror image of
the crystal: the same cell (metric), and its A = U B equals M . UB_hklflow . S with M the
mirror and S = -R for a Laue-group operator R (hkl -> -hkl; both groups are
centrosymmetric, so -M^T A = UB_hklflow R).  ``rotation_axis`` overrides the goniometer of
the imported experiment (a JSON edit of imported.expt; spot finding does not use it).
"""
from __future__ import annotations

import json
import math
import re
import time
from pathlib import Path

import numpy as np

from .dials_spots import DialsError, _run, _tail, dials_available, run_dials_find_spots

__all__ = ["DialsError", "dials_available", "run_dials_index_refine", "dials_rotation_axis",
           "HKLFLOW_TO_DXTBX_LAB", "cell_from_real_space", "cell_esd_from_b_covariance",
           "read_refined_crystal", "cell_from_b", "hklflow_ub_from_dials"]

# dxtbx's lab vector of an hklflow lab vector (L1, L2, L3) for hklflow's miniCBF frames
HKLFLOW_TO_DXTBX_LAB = np.array([[0.0, 1.0, 0.0],
                                 [-1.0, 0.0, 0.0],
                                 [0.0, 0.0, -1.0]])

CELL_NAMES = ("a", "b", "c", "alpha", "beta", "gamma")


def dials_rotation_axis(scan_axis=(0.0, 1.0, 0.0), scan_sense: int = 1,
                        offset_rotation=None) -> tuple:
    """DIALS's rotation axis for hklflow CBF frames of a scan about `scan_axis` (hklflow lab)
    with `scan_sense`; offset_rotation (hklflow's R_off, 3x3) for an entry with goniometer
    offsets (R_off R(n, phi) = R(R_off n, phi) R_off: the crystal setting absorbs R_off).

    M R(n, t) M^T = R(-M n, t) for the mirror M = HKLFLOW_TO_DXTBX_LAB (det -1)."""
    n = np.asarray(scan_axis, float) / np.linalg.norm(scan_axis) * float(scan_sense)
    if offset_rotation is not None:
        n = np.asarray(offset_rotation, float) @ n
    v = -HKLFLOW_TO_DXTBX_LAB @ n
    return tuple(float(x) + 0.0 for x in v)  # + 0.0: no -0.0 in the command line


def hklflow_ub_from_dials(A) -> np.ndarray:
    """DIALS's A (= U B at scan angle 0, in dxtbx's lab) of hklflow CBF frames, as an hklflow
    UB (hklflow's lab) up to a Laue-group operator on hkl: -M^T A (proper, det > 0)."""
    return -HKLFLOW_TO_DXTBX_LAB.T @ np.asarray(A, float)


# --------------------------------------------------------------------------------------
# Cell and its uncertainty from the experiment file
# --------------------------------------------------------------------------------------
def cell_from_real_space(a, b, c) -> np.ndarray:
    """(a, b, c, alpha, beta, gamma) in Angstrom and degrees from the three real-space axes."""
    a, b, c = (np.asarray(v, float) for v in (a, b, c))
    n = np.linalg.norm

    def ang(u, v):
        return math.degrees(math.acos(float(np.clip(u @ v / (n(u) * n(v)), -1.0, 1.0))))

    return np.array([n(a), n(b), n(c), ang(b, c), ang(a, c), ang(a, b)])


def _orthogonalisation(cell) -> np.ndarray:
    a, b, c = cell[:3]
    al, be, ga = np.radians(cell[3:])
    ca, cb, cg, sg = math.cos(al), math.cos(be), math.cos(ga), math.sin(ga)
    v = a * b * c * math.sqrt(max(1 - ca * ca - cb * cb - cg * cg + 2 * ca * cb * cg, 0.0))
    return np.array([[a, b * cg, c * cb],
                     [0.0, b * sg, c * (ca - cb * cg) / sg],
                     [0.0, 0.0, v / (a * b * sg)]])


def dials_b_matrix(cell) -> np.ndarray:
    """DIALS's (cctbx's) B of a cell: the transposed fractionalisation matrix."""
    return np.linalg.inv(_orthogonalisation(np.asarray(cell, float))).T


def cell_from_b(B) -> np.ndarray:
    """Cell parameters of a B matrix (any Cartesian frame: only G* = B^T B matters)."""
    B = np.asarray(B, float).reshape(3, 3)
    g = np.linalg.inv(B.T @ B)
    a, b, c = np.sqrt(np.diag(g))

    def ang(x):
        return math.degrees(math.acos(float(np.clip(x, -1.0, 1.0))))

    return np.array([a, b, c, ang(g[1, 2] / (b * c)), ang(g[0, 2] / (a * c)), ang(g[0, 1] / (a * b))])


def cell_esd_from_b_covariance(cell, b_covariance) -> np.ndarray:
    """Standard uncertainties of the cell parameters from DIALS's 9 x 9 covariance of the
    row-major elements of B (propagated with a central-difference Jacobian)."""
    cov = np.asarray(b_covariance, float).reshape(9, 9)
    x0 = dials_b_matrix(cell).ravel()
    J = np.zeros((6, 9))
    for i in range(9):
        h = 1e-7 * max(abs(x0).max(), 1e-3)
        xp, xm = x0.copy(), x0.copy()
        xp[i] += h
        xm[i] -= h
        J[:, i] = (cell_from_b(xp) - cell_from_b(xm)) / (2 * h)
    var = np.einsum("ij,jk,ik->i", J, cov, J)
    return np.sqrt(np.clip(var, 0.0, None))


def read_refined_crystal(expt) -> dict:
    """The crystal of a one-experiment DIALS .expt (JSON): cell, cell_esd (None without
    B_covariance), A (= U B), U, B, real-space axes; and the beam, goniometer, detector."""
    e = json.loads(Path(expt).read_text())
    crystals = e.get("crystal", [])
    if len(crystals) != 1:
        raise DialsError(f"{expt} holds {len(crystals)} crystal models, expected 1")
    cr = crystals[0]
    real = np.array([cr["real_space_a"], cr["real_space_b"], cr["real_space_c"]], float)
    cell = cell_from_real_space(*real)
    A = np.linalg.inv(real)  # rows of `real` are a, b, c: columns of A are a*, b*, c*
    B = dials_b_matrix(cell)
    U = A @ np.linalg.inv(B)
    esd = (cell_esd_from_b_covariance(cell, cr["B_covariance"])
           if cr.get("B_covariance") else None)
    det = e.get("detector", [{}])[0].get("panels", [{}])[0]
    return {"cell": cell, "cell_esd": esd, "A": A, "U": U, "B": B, "real_space": real,
            "space_group_hall": cr.get("space_group_hall_symbol", "").strip(),
            "beam": (e.get("beam") or [{}])[0], "goniometer": (e.get("goniometer") or [{}])[0],
            "detector_panel": det}


# --------------------------------------------------------------------------------------
# Reading the programs' output
# --------------------------------------------------------------------------------------
_NUM = r"[-+]?\d+(?:\.\d*)?(?:[eE][-+]?\d+)?"


def parse_printed_cell(text: str):
    """The last 'Unit cell: 5.51996(9), ..., 120.0' line: (values, esds) with esd NaN where
    none is printed (fixed angles)."""
    lines = re.findall(r"Unit cell:\s*(.+)", text)
    if not lines:
        return None, None
    vals, esds = [], []
    for tok in lines[-1].split(",")[:6]:
        m = re.match(rf"\s*({_NUM})(?:\((\d+)\))?", tok)
        if not m:
            return None, None
        v = m.group(1)
        vals.append(float(v))
        if m.group(2) is None:
            esds.append(float("nan"))
        else:
            decimals = len(v.split(".")[1]) if "." in v else 0
            esds.append(int(m.group(2)) * 10.0 ** (-decimals))
    return np.array(vals), np.array(esds)


def _table_rows(text: str, header: str) -> list[list[str]]:
    """Data rows (cells as strings) of the LAST table printed after a line containing header."""
    i = text.rfind(header)
    if i < 0:
        return []
    rows, started = [], False
    for line in text[i:].splitlines()[1:]:
        s = line.strip()
        if s.startswith("+"):
            if started and rows:
                break
            continue
        if s.startswith("|-"):
            started = True
            continue
        if not s.startswith("|"):
            if started:
                break
            continue
        if started:
            rows.append([c.strip() for c in s.strip("|").split("|")])
    return rows


def parse_rmsds(text: str) -> dict:
    """The last 'RMSDs by experiment' table of dials.index / dials.refine: nref, x, y (px),
    z (images) of experiment 0."""
    rows = _table_rows(text, "RMSDs by experiment")
    if not rows:
        raise DialsError(f"no 'RMSDs by experiment' table in the log; last lines:\n{_tail(text)}")
    r = rows[0]
    return {"nref": int(r[1]), "x_px": float(r[2]), "y_px": float(r[3]), "z_images": float(r[4])}


def parse_indexed(text: str) -> tuple[int, int]:
    """(indexed, unindexed) from dials.index's last '# indexed' table."""
    rows = _table_rows(text, "# indexed")
    if not rows:
        raise DialsError(f"no '# indexed' table in dials.index's log; last lines:\n{_tail(text)}")
    return int(rows[0][1]), int(rows[0][2])


# --------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------
def _fmt_cell(cell) -> str:
    return ",".join(f"{float(v):g}" for v in cell)


def run_dials_index_refine(frames, workdir, *, space_group: str, unit_cell, nproc: int = 1,
                           rotation_axis=None, index_method: str | None = None,
                           scan_varying: bool = False, extra_index_phil=(),
                           extra_refine_phil=(), timeout: float = 1800.0) -> dict:
    """Import `frames` (one rotation sweep: files or a glob), find spots, index with the
    known space group and approximate unit cell (a, b, c, alpha, beta, gamma), and refine
    (scan-static unless scan_varying) in workdir.

    rotation_axis: DIALS's rotation axis, replacing the imported one (for hklflow's CBF
        frames: dials_rotation_axis(scan_axis, scan_sense); see the module's docstring).
    index_method: dials.index's indexing.method (None: DIALS's default, fft3d; fft1d is
        several times faster on these small cells and gives the same solution).
    Returns a dict:

    cell, cell_esd     refined cell (A, deg; from refined.expt's real-space axes) and its
                       standard uncertainties (from B_covariance; 0 for fixed parameters)
    cell_printed, cell_esd_printed  the same as dials.refine printed them (rounded)
    cell_indexed       dials.index's cell (after its own refinement)
    A, U, B            DIALS's crystal at scan angle 0 (dxtbx's lab frame)
    n_strong           spots found; n_indexed, n_unindexed (dials.index's last table)
    n_refined          reflections dials.refine used (after its outlier rejection)
    n_parameters       number of parameters dials.refine refined
    rmsd               {"x_px", "y_px", "z_images", "nref"} of dials.refine (final)
    rmsd_index         the same of dials.index's last macro-cycle
    seconds            {"import", "find_spots", "index", "refine", "total"} wall times
    beam_direction, distance_mm, rotation_axis, dials_version, commands, workdir,
    experiments, reflections, logs
    """
    why = dials_available()
    if why:
        raise DialsError(why)
    t_start = time.monotonic()
    workdir = Path(workdir).resolve()
    spots = run_dials_find_spots(frames, workdir, nproc=nproc, timeout=timeout)
    imported = Path(spots["experiments"])
    if rotation_axis is not None:
        e = json.loads(imported.read_text())
        gons = e.get("goniometer") or []
        if len(gons) != 1:
            raise DialsError(f"{imported} has {len(gons)} goniometers; cannot set the rotation axis")
        axis = [float(v) for v in np.asarray(rotation_axis, float) / np.linalg.norm(rotation_axis)]
        gons[0]["rotation_axis"] = axis
        imported = workdir / "imported_axis.expt"
        imported.write_text(json.dumps(e, indent=2))
    cell = [float(v) for v in unit_cell]
    if len(cell) != 6:
        raise ValueError(f"unit_cell must be (a, b, c, alpha, beta, gamma), got {unit_cell!r}")
    idx = ["dials.index", imported.name, "strong.refl",
           f"indexing.known_symmetry.space_group={space_group}",
           f"indexing.known_symmetry.unit_cell={_fmt_cell(cell)}",
           f"indexing.nproc={int(nproc)}",
           "output.experiments=indexed.expt", "output.reflections=indexed.refl",
           "output.log=dials.index.log"]
    if index_method:
        idx.append(f"indexing.method={index_method}")
    idx += list(extra_index_phil)
    for f in ("indexed.expt", "indexed.refl", "refined.expt", "refined.refl"):
        (workdir / f).unlink(missing_ok=True)
    out_idx, t_index = _run(idx, workdir, "dials.index.out", timeout)
    if not (workdir / "indexed.expt").is_file():
        raise DialsError(f"`{' '.join(idx)}` (in {workdir}) wrote no indexed.expt; last lines of "
                         f"{workdir / 'dials.index.out'}:\n{_tail(out_idx)}")
    ref = ["dials.refine", "indexed.expt", "indexed.refl",
           f"refinement.parameterisation.scan_varying={bool(scan_varying)}",
           "output.experiments=refined.expt", "output.reflections=refined.refl",
           "output.log=dials.refine.log", *extra_refine_phil]
    out_ref, t_refine = _run(ref, workdir, "dials.refine.out", timeout)
    if not (workdir / "refined.expt").is_file():
        raise DialsError(f"`{' '.join(ref)}` (in {workdir}) wrote no refined.expt; last lines of "
                         f"{workdir / 'dials.refine.out'}:\n{_tail(out_ref)}")
    try:
        crystal = read_refined_crystal(workdir / "refined.expt")
        n_indexed, n_unindexed = parse_indexed(out_idx)
        rmsd = parse_rmsds(out_ref)
        rmsd_index = parse_rmsds(out_idx)
        m = re.search(r"There are (\d+) parameters to refine", out_ref)
        if not m:
            raise DialsError("dials.refine did not say how many parameters it refined; last "
                             f"lines:\n{_tail(out_ref)}")
        n_par = int(m.group(1))
    except (KeyError, ValueError, IndexError) as exc:
        raise DialsError(f"cannot read DIALS's results in {workdir}: {exc!r}; last lines of "
                         f"dials.refine:\n{_tail(out_ref)}") from None
    printed, printed_esd = parse_printed_cell(out_ref)
    cell_indexed, _ = parse_printed_cell(out_idx)
    beam = crystal["beam"].get("direction")
    panel = crystal["detector_panel"]
    dist = None
    if panel.get("origin") and panel.get("fast_axis") and panel.get("slow_axis"):
        nrm = np.cross(panel["fast_axis"], panel["slow_axis"])
        dist = float(abs(np.dot(panel["origin"], nrm / np.linalg.norm(nrm))))
    esd = crystal["cell_esd"]
    if esd is None:
        if printed_esd is None:
            raise DialsError(f"refined.expt in {workdir} has no B_covariance and dials.refine "
                             "printed no cell uncertainties")
        esd = np.nan_to_num(printed_esd, nan=0.0)
    return {
        "cell": tuple(float(v) for v in crystal["cell"]),
        "cell_esd": tuple(float(v) for v in esd),
        "cell_printed": None if printed is None else tuple(printed.tolist()),
        "cell_esd_printed": None if printed_esd is None else tuple(printed_esd.tolist()),
        "cell_indexed": None if cell_indexed is None else tuple(cell_indexed.tolist()),
        "A": crystal["A"], "U": crystal["U"], "B": crystal["B"],
        "space_group_hall": crystal["space_group_hall"],
        "n_strong": spots["n_spots"], "n_indexed": n_indexed, "n_unindexed": n_unindexed,
        "n_refined": rmsd["nref"], "n_parameters": n_par,
        "rmsd": rmsd, "rmsd_index": rmsd_index,
        "seconds": {"import": spots["import_seconds"], "find_spots": spots["seconds"],
                    "index": t_index, "refine": t_refine, "total": time.monotonic() - t_start},
        "beam_direction": None if beam is None else tuple(beam),
        "distance_mm": dist,
        "rotation_axis": tuple(crystal["goniometer"].get("rotation_axis", ())),
        "dials_version": spots["dials_version"],
        "commands": spots["commands"] + [" ".join(idx), " ".join(ref)],
        "workdir": str(workdir),
        "experiments": str(workdir / "refined.expt"),
        "reflections": str(workdir / "refined.refl"),
        "logs": [str(workdir / n) for n in ("dials.import.log", "dials.find_spots.log",
                                            "dials.index.log", "dials.refine.log")],
    }
