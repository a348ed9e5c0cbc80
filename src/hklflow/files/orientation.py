"""The orientation of one sample at one temperature (rules index_parent and
refine_temperature): ``results/SAMPLE/TLABEL/parent_orientation.nxs`` and ``orientation.nxs``;
and the detector a sample's temperatures share when it is refined on all of them (rule
refine_detector): ``results/SAMPLE/shared_detector.nxs``::

  /orientation                  NXentry, title SAMPLE/TLABEL
     sample                     NXsample: name, temperature_label, space_group,
                                unitcell_a..gamma and unitcell_errors (esd, the detector's
                                uncertainty included where known),
                                orientation_matrix (U), ub_matrix (UB = U B, 1/Angstrom, no 2 pi)
     instrument/detector        the detector of this temperature's entries (entries move from
                                it by their scans-table translations; files.h5.detector_group):
                                the shared detector for their calibration
     instrument/monochromator   wavelength (angstrom)
     instrument/goniometer      offset_corrections: NXcollection entry -> axis -> deg
     shared_detector            NXcollection (shared_detector_group): the detector the
                                sample's temperatures share (model.shared_detector): source
                                (parent | all | none), scans (the scan ids whose peaks
                                refined it), n_peaks, wavelength (angstrom), calibration and
                                detector (NXdetector:
                                the calibration and that calibration corrected), corrections
                                (dist .. rot3, m and rad, with @esd), covariance (6 x 6 over
                                dist, poni1, poni2, rot1, rot2, rot3; absent: not refined)
     refinement                 NXcollection: rms_px, rms_frames, rms_hkl, fraction_indexed,
                                n_used, seconds, goodness_of_fit (sqrt of chi^2 per degree of
                                freedom), detector_refined (1: this fit refined it), parameters
                                (JSON: value and esd), parent, indexing (JSON, parents only),
                                notes, cell_covariance (JSON: the free cell parameters'
                                covariance with the detector held, their sensitivity to it,
                                the detector's covariance; model.shared_detector.CellCovariance),
                                cell_distance_correlation (JSON: names, values, source),
                                entries (JSON: per entry peaks used and RMS residuals), table
                                (text: the shared detector and this temperature's rows, as
                                the orientation table shows them), unusable_entries
                                (JSON entry -> why; entries the merge leaves out), preview
                                (JSON {"landed": [records], "provisional": true}; only when
                                made from scans still being collected, hklflow.pictures.preview)
     peaks                      NXreflections-style: entry_name, observed x/y/frame, hkl, used,
                                residual_x/y/frame (NaN if unused)
     residuals                  NXdata, the entry's @default: the used peaks' residual on the
                                detector (pixels) against their frame, in frame order
     process                    NXprocess: provenance

  /shared_detector              NXentry, title SAMPLE (shared_detector.nxs)
     shared_detector            as above (source all)
     refinement                 NXcollection: temperatures (JSON: per temperature its row of
                                the table, temperature_row), left_out (JSON label -> why a
                                temperature is not in the fit), table (text), notes, seconds
     process                    NXprocess: provenance

An :class:`OrientationRecord` has what geometry.EntrySetup.geometry needs of an orientation
(``detector``, ``offset_corrections``, ``UB``).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..base.atomic import write_text_atomically
from ..base.errors import FileFormatError
from ..model.crystal import CELL_NAMES, Crystal, UnitCell
from ..model.geometry import DetectorGeometry
from ..model.shared_detector import DETECTOR_PARAMETERS, CellCovariance, SharedDetector
from .h5 import (detector_group, get, group, nexus, open_h5, provenance_group, read_detector_group,
                 strings, text, write_nexus_atomically)

STATISTICS = ("rms_px", "rms_frames", "rms_hkl", "fraction_indexed", "n_used", "seconds")


@dataclass(frozen=True)
class OrientationRecord:
    path: str
    sample: str
    temperature_label: str  # e.g. 300K
    space_group: str
    cell: tuple
    cell_esd: tuple
    U: np.ndarray
    UB: np.ndarray
    detector: DetectorGeometry  # refined common detector geometry (entries shift from it)
    offset_corrections: dict  # entry -> {axis: deg}
    statistics: dict
    parent: str  # SAMPLE/TLABEL of the parent it was refined from
    unusable_entries: dict = field(default_factory=dict)  # entry -> why: left out of the merge
    # the scans in progress it was made from (its own or its parent's; hklflow.pictures.preview)
    landed: tuple = ()
    shared_detector: SharedDetector | None = None  # None: a file written before it was recorded
    cell_covariance: CellCovariance | None = None
    row: dict = field(default_factory=dict)  # its row of the orientation table (temperature_row)
    notes: tuple = ()  # the refinement's notes (pseudo-symmetry, rows it was made without, ...)

    @property
    def provisional(self) -> bool:
        return bool(self.landed)

    def crystal(self) -> Crystal:
        return Crystal(self.space_group, UnitCell(*self.cell))


def _peaks_group(result):
    nx = nexus()

    names, x, y, z, hkl, used, res = [], [], [], [], [], [], []
    for e, h, u, r in zip(result.entries, result.hkl, result.used, result.residuals):
        names += [e.name] * len(e.x)
        x.append(e.x)
        y.append(e.y)
        z.append(e.z)
        hkl.append(h)
        used.append(u)
        res.append(r)
    pk = nx.NXgroup(nxclass="NXreflections")
    pk["entry_name"] = nx.NXfield(np.asarray(names, dtype="S"))
    pk["observed_px_x"] = nx.NXfield(np.concatenate(x), units="pixel")
    pk["observed_px_y"] = nx.NXfield(np.concatenate(y), units="pixel")
    pk["observed_frame"] = nx.NXfield(np.concatenate(z), units="frame")
    hkl = np.concatenate(hkl)
    pk["h"], pk["k"], pk["l"] = (nx.NXfield(hkl[:, i]) for i in range(3))
    pk["used"] = nx.NXfield(np.concatenate(used).astype(np.int8))
    res = np.concatenate(res)
    pk["residual_x"] = nx.NXfield(res[:, 0], units="pixel")
    pk["residual_y"] = nx.NXfield(res[:, 1], units="pixel")
    pk["residual_frame"] = nx.NXfield(res[:, 2], units="frame")
    return pk


def _residuals_data(peaks):
    """NXdata of the used peaks' residuals on the detector (pixels) against their frame,
    in frame order: the file's plottable default."""
    nx = nexus()

    dx, dy = peaks["residual_x"].nxvalue, peaks["residual_y"].nxvalue
    frame = peaks["observed_frame"].nxvalue
    residual = np.hypot(dx, dy)
    keep = np.isfinite(residual)
    order = np.argsort(frame[keep], kind="stable")
    return nx.NXdata(
        nx.NXfield(residual[keep][order], name="residual", units="pixel",
                   long_name="refined peak's residual on the detector (pixels)"),
        [nx.NXfield(frame[keep][order], name="observed_frame", units="frame",
                    long_name="frame of the peak")],
        title="residuals of the refined peaks")


def shared_detector_group(shared: SharedDetector):
    """NXcollection of a model.shared_detector.SharedDetector (layout in the module docstring)."""
    nx = nexus()

    g = nx.NXcollection()
    g["source"] = nx.NXfield(shared.source)
    g["scans"] = nx.NXfield(np.asarray(list(shared.scans) or [""], dtype="S"))
    g["n_peaks"] = nx.NXfield(int(shared.n_peaks))
    g["wavelength"] = nx.NXfield(float(shared.detector.wavelength), units="angstrom")
    g["calibration"] = detector_group(shared.calibration)
    g["detector"] = detector_group(shared.detector)
    corr = nx.NXcollection()
    esd = shared.esd()
    for n, v in shared.corrections().items():
        corr[n] = nx.NXfield(v, units="rad" if n.startswith("rot") else "m", attrs={"esd": esd[n]})
    g["corrections"] = corr
    if shared.covariance is not None:
        g["covariance"] = nx.NXfield(np.asarray(shared.covariance, dtype=float), attrs={
            "parameters": ", ".join(DETECTOR_PARAMETERS), "units": "m and rad"})
    return g


def read_shared_detector_group(grp, path) -> SharedDetector:
    scans = tuple(s for s in strings(get(grp, "scans", path)) if s)
    wavelength = float(get(grp, "wavelength", path))
    return SharedDetector(
        read_detector_group(group(grp, "calibration", path), wavelength, path),
        read_detector_group(group(grp, "detector", path), wavelength, path),
        np.asarray(grp["covariance"][()], dtype=float) if "covariance" in grp else None,
        text(get(grp, "source", path)), scans, int(get(grp, "n_peaks", path)))


def temperature_row(label: str, result) -> dict:
    """A temperature's row of the orientation table from its refinement.RefinementResult:
    the free cell parameters with their esd (the cell's own) and esd with the detector held,
    their correlation with the distance and where it comes from, peaks used, RMS residuals,
    and the per-entry rows (entry_rows)."""
    cc = getattr(result, "cell_covariance", None)
    cell = result.model.crystal.cell
    names = list(cc.names) if cc is not None else [n for n in CELL_NAMES[:3]]
    held = (np.sqrt(np.clip(np.diag(np.asarray(cc.held_fixed)), 0, None)) if cc is not None
            else np.full(len(names), np.nan))
    esd = dict(zip(CELL_NAMES, result.cell_esd))
    corr = list(getattr(result, "cell_distance_correlation", ()) or [float("nan")] * len(names))
    return {"temperature": label, "names": names,
            "cell": [float(getattr(cell, n)) for n in names],
            "esd": [float(esd[n]) for n in names], "esd_detector_held": [float(v) for v in held],
            "corr_dist": [float(v) for v in corr],
            "correlation_source": getattr(result, "correlation_source", ""),
            "n_used": int(result.n_used), "rms_px": float(result.rms_px),
            "rms_frames": float(result.rms_frames),
            "goodness_of_fit": float(getattr(result, "goodness_of_fit", float("nan"))),
            "entries": entry_rows(result)}


def entry_rows(result) -> list[dict]:
    """Per entry of a refinement: peaks used and the RMS residuals in x, y (pixels) and
    phi (frames and degrees)."""
    rows = []
    for e, used, res in zip(result.entries, result.used, result.residuals):
        r = np.asarray(res, dtype=float)[np.asarray(used, dtype=bool)]
        rms = np.sqrt(np.mean(r ** 2, axis=0)) if len(r) else np.full(3, np.nan)
        step = getattr(getattr(getattr(e, "setup", None), "angles", None), "step", float("nan"))
        rows.append({"entry": e.name, "n_used": int(len(r)), "rms_x_px": float(rms[0]),
                     "rms_y_px": float(rms[1]), "rms_frames": float(rms[2]),
                     "rms_deg": float(rms[2] * abs(step))})
    return rows


def _f(v, spec: str) -> str:
    return "-" if v is None or not np.isfinite(v) else format(v, spec)


def shared_detector_text(shared: SharedDetector) -> str:
    """The shared detector in a few lines: where it comes from, its parameters and esd."""
    esd = shared.esd()
    d = shared.detector
    what = {"parent": "refined on the parent temperature's entries",
            "all": "refined on every temperature's entries together",
            "none": "the calibration's, not refined"}.get(shared.source, shared.source)
    if shared.source != "none" and not shared.refined:
        what += " (not refined there: the calibration's)"
    lines = [f"shared detector ({shared.source}): {what}"]
    if shared.scans:
        lines.append(f"  from {len(shared.scans)} scans, {shared.n_peaks} peaks: "
                     + ", ".join(shared.scans))
    corr = shared.corrections()
    lines.append(f"  dist {d.dist * 1e3:.5f} mm ± {_f(esd['dist'] * 1e3, '.5f')} "
                 f"(calibration {corr['dist'] * 1e3:+.5f}), poni1 {d.poni1 * 1e3:.5f} ± "
                 f"{_f(esd['poni1'] * 1e3, '.5f')}, poni2 {d.poni2 * 1e3:.5f} ± "
                 f"{_f(esd['poni2'] * 1e3, '.5f')} mm")
    lines.append("  " + ", ".join(f"{n} {np.degrees(getattr(d, n)):.4f}° ± "
                                  f"{_f(np.degrees(esd[n]), '.4f')}" for n in ("rot1", "rot2", "rot3")))
    return "\n".join(lines)


def table_text(shared: SharedDetector | None, rows: list[dict]) -> str:
    """The orientation table as text: the shared detector, then per temperature its cell
    (esd: the cell's own; held: with the detector held), correlation with the distance and
    residuals, and per entry its peaks and RMS residuals."""
    out = [shared_detector_text(shared)] if shared is not None else []
    out.append(f"{'T':>7} {'entry':>6} {'peaks':>6} {'rms x px':>9} {'rms y px':>9} "
               f"{'rms φ fr':>9} {'rms φ °':>8}  cell (esd; esd detector held) corr(cell, dist)")
    sources = []
    for row in rows:
        cell = "; ".join(f"{n} {v:.6f} ({_f(e, '.1e')}; {_f(h, '.1e')}) {_f(c, '+.2f')}"
                         for n, v, e, h, c in zip(row["names"], row["cell"], row["esd"],
                                                  row["esd_detector_held"], row["corr_dist"]))
        ents = row["entries"]
        rx = _rms([e["rms_x_px"] for e in ents], [e["n_used"] for e in ents])
        ry = _rms([e["rms_y_px"] for e in ents], [e["n_used"] for e in ents])
        rz = _rms([e["rms_frames"] for e in ents], [e["n_used"] for e in ents])
        rd = _rms([e["rms_deg"] for e in ents], [e["n_used"] for e in ents])
        out.append(f"{row['temperature']:>7} {'all':>6} {row['n_used']:>6} {_f(rx, '9.3f')} "
                   f"{_f(ry, '9.3f')} {_f(rz, '9.3f')} {_f(rd, '8.4f')}  {cell}")
        for e in ents:
            out.append(f"{'':>7} {e['entry']:>6} {e['n_used']:>6} {_f(e['rms_x_px'], '9.3f')} "
                       f"{_f(e['rms_y_px'], '9.3f')} {_f(e['rms_frames'], '9.3f')} "
                       f"{_f(e['rms_deg'], '8.4f')}")
        if row.get("correlation_source") and row["correlation_source"] not in sources:
            sources.append(row["correlation_source"])
    out += [f"corr(cell, dist): {s}" for s in sources]
    return "\n".join(out)


def _rms(values, weights) -> float:
    v, w = np.asarray(values, dtype=float), np.asarray(weights, dtype=float)
    ok = np.isfinite(v) & (w > 0)
    return float(np.sqrt(np.sum(w[ok] * v[ok] ** 2) / np.sum(w[ok]))) if ok.any() else float("nan")


def write_orientation_file(path, *, sample: str, temperature_label: str, parent: str, result,
                           indexing: dict | None, provenance: dict,
                           unusable_entries: dict | None = None,
                           landed: list | None = None,
                           shared_detector: SharedDetector | None = None) -> Path:
    """Write a refinement.RefinementResult (layout in the module docstring), atomically.
    landed: the records (hklflow.pictures.preview.landed_record) of the scans in progress it was
    made from; none: nothing about previews is written.  shared_detector: the detector the
    sample's temperatures share (model.shared_detector)."""
    nx = nexus()

    m = result.model
    ent = nx.NXentry()
    ent["title"] = nx.NXfield(f"{sample}/{temperature_label}")
    smp = nx.NXsample()
    smp["name"] = nx.NXfield(sample)
    smp["temperature_label"] = nx.NXfield(temperature_label)
    smp["space_group"] = nx.NXfield(m.crystal.hm)
    for n, v in zip(CELL_NAMES, m.crystal.cell.parameters):
        smp[f"unitcell_{n}"] = nx.NXfield(float(v), units="degree" if n in ("alpha", "beta", "gamma")
                                          else "angstrom")
    smp["unitcell_errors"] = nx.NXfield(np.asarray(result.cell_esd, dtype=float))
    smp["orientation_matrix"] = nx.NXfield(np.asarray(m.U))
    smp["ub_matrix"] = nx.NXfield(np.asarray(m.UB), units="1/angstrom")
    ent["sample"] = smp
    oc = nx.NXcollection()
    for e, axes in m.offset_corrections.items():
        oc[e] = nx.NXcollection()
        for ax, v in axes.items():
            oc[e][ax] = nx.NXfield(float(v), units="degree")
    inst = nx.NXinstrument()
    inst["detector"] = detector_group(m.detector)
    inst["monochromator"] = nx.NXmonochromator()
    inst["monochromator"]["wavelength"] = nx.NXfield(m.detector.wavelength, units="angstrom")
    inst["goniometer"] = nx.NXcollection()
    inst["goniometer"]["offset_corrections"] = oc
    ent["instrument"] = inst
    if shared_detector is not None:
        ent["shared_detector"] = shared_detector_group(shared_detector)
    ref = nx.NXcollection()
    for k in STATISTICS:
        ref[k] = nx.NXfield(float(getattr(result, k)))
    ref["parent"] = nx.NXfield(parent)
    ref["parameters"] = nx.NXnote(type="application/json",
                                  data=json.dumps(result.parameters, sort_keys=True))
    if indexing:
        ref["indexing"] = nx.NXnote(type="application/json", data=json.dumps(indexing, default=float))
    if result.notes:
        ref["notes"] = nx.NXfield("\n".join(result.notes))
    ref["goodness_of_fit"] = nx.NXfield(float(getattr(result, "goodness_of_fit", float("nan"))))
    ref["detector_refined"] = nx.NXfield(np.int8(bool(getattr(result, "detector_refined", False))))
    cc = getattr(result, "cell_covariance", None)
    if cc is not None:
        ref["cell_covariance"] = nx.NXnote(type="application/json", data=json.dumps(cc.as_dict()))
    row = temperature_row(temperature_label, result)
    ref["cell_distance_correlation"] = nx.NXnote(type="application/json", data=json.dumps(
        {"names": row["names"], "values": row["corr_dist"],
         "source": row["correlation_source"]}))
    ref["entries"] = nx.NXnote(type="application/json", data=json.dumps(row["entries"]))
    ref["table"] = nx.NXnote(type="text/plain", data=table_text(shared_detector, [row]))
    if unusable_entries:
        ref["unusable_entries"] = nx.NXnote(type="application/json",
                                            data=json.dumps(unusable_entries, sort_keys=True))
    if landed:
        ref["preview"] = nx.NXnote(type="application/json", data=json.dumps(
            {"landed": list(landed), "provisional": True}, sort_keys=True))
    ent["refinement"] = ref
    ent["peaks"] = _peaks_group(result)
    ent["residuals"] = _residuals_data(ent["peaks"])
    ent.attrs["default"] = "residuals"  # what NeXpy (and nexusformat's plot) draws
    ent["process"] = provenance_group(provenance)
    root = nx.NXroot()
    root["orientation"] = ent
    root.attrs["default"] = "orientation"
    return write_nexus_atomically(root, path)


def read_orientation_file(path) -> OrientationRecord:
    with open_h5(path) as f:
        if "orientation" not in f:
            raise FileFormatError(f"{path}: no /orientation entry: not an orientation file")
        ent = f["orientation"]
        smp = group(ent, "sample", path)
        detector = read_detector_group(
            group(ent, "instrument/detector", path),
            get(ent, "instrument/monochromator/wavelength", path), path)
        oc = {}
        if "instrument/goniometer/offset_corrections" in ent:
            for e, g in ent["instrument/goniometer/offset_corrections"].items():
                oc[e] = {ax: float(v[()]) for ax, v in g.items()}
        ref = group(ent, "refinement", path)
        stats = {k: float(get(ref, k, path)) for k in STATISTICS}
        stats["parameters"] = json.loads(text(get(ref, "parameters/data", path)))
        for k in ("goodness_of_fit", "detector_refined"):
            if k in ref:
                stats[k] = float(ref[k][()])
        shared = (read_shared_detector_group(ent["shared_detector"], path)
                  if "shared_detector" in ent else None)
        cc = (CellCovariance.from_dict(json.loads(text(get(ref, "cell_covariance/data", path))))
              if "cell_covariance" in ref else None)
        row = _read_row(ref, path, text(get(smp, "temperature_label", path)))
        return OrientationRecord(
            str(path), text(get(smp, "name", path)), text(get(smp, "temperature_label", path)),
            text(get(smp, "space_group", path)),
            tuple(float(get(smp, f"unitcell_{n}", path)) for n in CELL_NAMES),
            tuple(get(smp, "unitcell_errors", path).tolist()), get(smp, "orientation_matrix", path),
            get(smp, "ub_matrix", path), detector, oc, stats, text(get(ref, "parent", path)),
            json.loads(text(get(ref, "unusable_entries/data", path)))
            if "unusable_entries" in ref else {},
            tuple(json.loads(text(get(ref, "preview/data", path)))["landed"])
            if "preview" in ref else (), shared, cc, row,
            tuple(text(ref["notes"][()]).split("\n")) if "notes" in ref else ())


def _read_row(ref, path, label: str) -> dict:
    """A temperature's row of the orientation table as its file recorded it (empty for a file
    written before)."""
    if "cell_distance_correlation" not in ref:
        return {}
    corr = json.loads(text(get(ref, "cell_distance_correlation/data", path)))
    return {"temperature": label, "names": corr["names"], "corr_dist": corr["values"],
            "correlation_source": corr["source"],
            "entries": json.loads(text(get(ref, "entries/data", path)))}


def read_refined_peaks(path) -> dict:
    """The refinement's peaks of an orientation file (its `peaks` group): entry_name (str),
    observed_px_x (column), observed_px_y (row), observed_frame, used (bool) and
    residual_x/y/frame (NaN where not used), as arrays."""
    with open_h5(path) as f:
        pk = group(f, "orientation/peaks", path)
        out = {k: np.asarray(pk[k][()]) for k in ("observed_px_x", "observed_px_y",
                                                   "observed_frame", "residual_x", "residual_y",
                                                   "residual_frame") if k in pk}
        out["entry_name"] = np.asarray(strings(get(pk, "entry_name", path)))
        out["used"] = np.asarray(get(pk, "used", path), dtype=bool)
    return out


def orientation_row(rec: OrientationRecord) -> dict:
    """The orientation table's row of an orientation record (temperature_row's, from the file)."""
    row = dict(rec.row) or {"temperature": rec.temperature_label, "entries": [],
                            "corr_dist": [], "correlation_source": ""}
    names = row.get("names") or (list(rec.cell_covariance.names) if rec.cell_covariance
                                 else list(CELL_NAMES[:3]))
    esd = dict(zip(CELL_NAMES, rec.cell_esd))
    held = (np.sqrt(np.clip(np.diag(np.asarray(rec.cell_covariance.held_fixed)), 0, None))
            if rec.cell_covariance is not None else np.full(len(names), np.nan))
    cell = dict(zip(CELL_NAMES, rec.cell))
    row.update(names=names, cell=[cell[n] for n in names], esd=[esd[n] for n in names],
               esd_detector_held=[float(v) for v in held],
               corr_dist=row.get("corr_dist") or [float("nan")] * len(names),
               n_used=int(rec.statistics["n_used"]), rms_px=rec.statistics["rms_px"],
               rms_frames=rec.statistics["rms_frames"],
               goodness_of_fit=rec.statistics.get("goodness_of_fit", float("nan")))
    return row


def write_shared_detector_file(path, *, sample: str, shared: SharedDetector, rows: list[dict],
                               left_out: dict, notes: list, seconds: float,
                               provenance: dict) -> Path:
    """The detector refined on every temperature of a sample (rule refine_detector; layout
    in the module docstring), atomically; rows: temperature_row of each temperature's part
    of the joint fit."""
    nx = nexus()

    ent = nx.NXentry()
    ent["title"] = nx.NXfield(sample)
    ent["shared_detector"] = shared_detector_group(shared)
    ref = nx.NXcollection()
    ref["temperatures"] = nx.NXnote(type="application/json", data=json.dumps(rows))
    ref["left_out"] = nx.NXnote(type="application/json", data=json.dumps(left_out, sort_keys=True))
    ref["table"] = nx.NXnote(type="text/plain", data=table_text(shared, rows))
    if notes:
        ref["notes"] = nx.NXfield("\n".join(notes))
    ref["seconds"] = nx.NXfield(float(seconds))
    ent["refinement"] = ref
    ent["process"] = provenance_group(provenance)
    root = nx.NXroot()
    root["shared_detector"] = ent
    root.attrs["default"] = "shared_detector"
    return write_nexus_atomically(root, path)


def read_shared_detector(path) -> tuple[str, SharedDetector, list[dict]]:
    """(sample, the shared detector, the temperatures' rows) of a shared_detector.nxs."""
    with open_h5(path) as f:
        if "shared_detector" not in f:
            raise FileFormatError(f"{path}: no /shared_detector entry: not a shared detector file")
        ent = f["shared_detector"]
        shared = read_shared_detector_group(group(ent, "shared_detector", path), path)
        ref = group(ent, "refinement", path)
        return (text(get(ent, "title", path)), shared,
                json.loads(text(get(ref, "temperatures/data", path))))


# the note of an orientation or shared detector made without rows `hklflow run` set aside
MADE_WITHOUT = "made without "


def made_without(set_aside) -> list[str]:
    """The notes of a result made without the rows `set_aside` (their lines)."""
    return [MADE_WITHOUT + line for line in set_aside]


def write_orientation_table(path, sample: str, shared: list, rows: list[dict],
                            provenance: dict, notes: tuple = ()) -> Path:
    """The orientation table (rule orientation_table) as tab-separated text, atomically:
    comment lines (#) with the shared detector(s), `notes` (e.g. the rows a temperature was
    made without) and the provenance, a header line, then
    per temperature a row (entry "all", the cell's free parameters with their esd, esd with
    the detector held, correlation with the distance) and one per entry (peaks used and RMS
    residuals)."""
    names = rows[0]["names"] if rows else []
    lines = [f"# {line}" for s in shared for line in shared_detector_text(s).splitlines()]
    lines += [f"# {note}" for note in notes]
    lines.append("# provenance: " + json.dumps(provenance, sort_keys=True, default=str))
    cols = ["sample", "temperature", "entry", "n_used", "rms_x_px", "rms_y_px", "rms_frames",
            "rms_deg"] + [f"{n}{suffix}" for n in names
                          for suffix in ("", "_esd", "_esd_detector_held", "_corr_dist")]
    lines.append("\t".join(cols))

    def num(v, spec=".6g"):
        return "" if v is None or not np.isfinite(v) else format(v, spec)

    for row in rows:
        ents = row["entries"]
        w = [e["n_used"] for e in ents]
        total = [_rms([e[k] for e in ents], w) for k in ("rms_x_px", "rms_y_px", "rms_frames",
                                                          "rms_deg")]
        cell = [num(v, spec) for i in range(len(names)) for v, spec in (
            (row["cell"][i], ".8g"), (row["esd"][i], ".3g"), (row["esd_detector_held"][i], ".3g"),
            (row["corr_dist"][i], ".4f"))]
        lines.append("\t".join([sample, row["temperature"], "all", str(row["n_used"]),
                                *(num(v, ".4g") for v in total), *cell]))
        for e in ents:
            lines.append("\t".join([sample, row["temperature"], e["entry"], str(e["n_used"]),
                                    *(num(e[k], ".4g") for k in ("rms_x_px", "rms_y_px",
                                                                 "rms_frames", "rms_deg")),
                                    *([""] * 4 * len(names))]))
    return write_text_atomically(path, "\n".join(lines) + "\n")
