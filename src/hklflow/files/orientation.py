"""The orientation of one sample at one temperature (rules index_parent and
refine_temperature): ``results/SAMPLE/TLABEL/parent_orientation.nxs`` and ``orientation.nxs``::

  /orientation                  NXentry, title SAMPLE/TLABEL
     sample                     NXsample: name, temperature_label, space_group,
                                unitcell_a..gamma and unitcell_errors (esd),
                                orientation_matrix (U), ub_matrix (UB = U B, 1/Angstrom, no 2 pi)
     instrument/detector        refined common detector geometry (entries move from it by
                                their scans-table translations; files.h5.detector_group)
     instrument/monochromator   wavelength (angstrom)
     instrument/goniometer      offset_corrections: NXcollection entry -> axis -> deg
     refinement                 NXcollection: rms_px, rms_frames, rms_hkl, fraction_indexed,
                                n_used, seconds, parameters (JSON: value and esd), parent,
                                indexing (JSON, parents only), notes, unusable_entries
                                (JSON entry -> why; entries the merge leaves out), preview
                                (JSON {"landed": [records], "provisional": true}; only when
                                made from scans still being collected, hklflow.pictures.preview)
     peaks                      NXreflections-style: entry_name, observed x/y/frame, hkl, used,
                                residual_x/y/frame (NaN if unused)
     residuals                  NXdata, the entry's @default: the used peaks' residual on the
                                detector (pixels) against their frame, in frame order
     process                    NXprocess: provenance

An :class:`OrientationRecord` has what geometry.EntrySetup.geometry needs of an orientation
(``detector``, ``offset_corrections``, ``UB``).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..base.errors import FileFormatError
from ..model.crystal import CELL_NAMES, Crystal, UnitCell
from ..model.geometry import DetectorGeometry
from .h5 import (detector_group, get, group, nexus, open_h5, provenance_group, read_detector_group,
                 text, write_nexus_atomically)

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


def write_orientation_file(path, *, sample: str, temperature_label: str, parent: str, result,
                           indexing: dict | None, provenance: dict,
                           unusable_entries: dict | None = None,
                           landed: list | None = None) -> Path:
    """Write a refinement.RefinementResult (layout in the module docstring), atomically.
    landed: the records (hklflow.pictures.preview.landed_record) of the scans in progress it was
    made from; none: nothing about previews is written."""
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
        return OrientationRecord(
            str(path), text(get(smp, "name", path)), text(get(smp, "temperature_label", path)),
            text(get(smp, "space_group", path)),
            tuple(float(get(smp, f"unitcell_{n}", path)) for n in CELL_NAMES),
            tuple(get(smp, "unitcell_errors", path).tolist()), get(smp, "orientation_matrix", path),
            get(smp, "ub_matrix", path), detector, oc, stats, text(get(ref, "parent", path)),
            json.loads(text(get(ref, "unusable_entries/data", path)))
            if "unusable_entries" in ref else {},
            tuple(json.loads(text(get(ref, "preview/data", path)))["landed"])
            if "preview" in ref else ())

