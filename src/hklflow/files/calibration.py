"""The files of rule calibrate_powder, in ``results/calibration/NAME/``:

* ``geometry.poni``    the accepted detector geometry (pyFAI PONI);
* ``calibration.nxs``  its record (below);
* ``calibration.png``  its picture;
* ``version.json``     which version of the calibration this is: {calibration, version,
  poni_sha256, created}.  It is a declared output of calibrate_powder and an input of
  every ingest_scan that uses the calibration, which records the version in scan.nxs;
* ``versions/vNNN/``   every accepted calibration (the four files above), and
  ``index.json`` listing them with their source, settings, geometry and residuals.  An
  archive that only calibrate_powder writes and no step reads: a calibration whose source
  (image or PONI, by sha256) and settings equal an earlier version's reuses that version.

``calibration.nxs``::

  /calibration              NXentry: title, calibrant, method (refined | imported)
     instrument/detector    NXdetector (files.h5.detector_group)
     instrument/monochromator   wavelength (angstrom)
     process                NXprocess: provenance, plus refined, start, uncertainty
                            (NXparameters), refined_parameters, residuals (rms in px and 2theta,
                            points, rings; the rings' misfit, its bound and the rings' smallest
                            spacing in px), control_points (NXdata), beam_centre (direct beam and
                            PONI, px), fit2d, source (path, sha256), parameters (JSON),
                            passes (JSON), notes
     data                   NXdata: the integrated pattern (two_theta in deg)
"""
from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
from pathlib import Path
from typing import Iterator

import numpy as np

from ..base.atomic import atomic_folder, copy_atomically, write_json_atomically
from ..base.errors import CalibrationError, FileFormatError
from ..model.geometry import DetectorGeometry
from .h5 import detector_group, provenance_group, write_nexus_atomically
from .outputs import CALIBRATION_FILES
from .provenance import file_digest

# {role: file name} of what a version archives: all of CALIBRATION_FILES but version.json,
# which says which version is the current one
ARCHIVED_FILES = {role: name for role, name in CALIBRATION_FILES.items() if role != "version"}
INDEX = "index.json"
UNITS = {"dist": "m", "poni1": "m", "poni2": "m", "rot1": "rad", "rot2": "rad", "rot3": "rad",
         "wavelength": "angstrom"}


def _utc_now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


# --------------------------------------------------------------------------------------
# calibration.nxs
# --------------------------------------------------------------------------------------
def _parameters(geom: DetectorGeometry):
    # (here: nexusformat only where a file is written: a reading job's start stays short)
    from nexusformat.nexus import NXfield, NXparameters

    grp = NXparameters()
    for k in UNITS:
        grp[k] = NXfield(float(getattr(geom, k)), units=UNITS[k])
    grp["detector"] = NXfield(geom.detector)
    return grp


def write_calibration_file(path, result, params, *, source: dict, pattern, provenance: dict) -> Path:
    """calibration.nxs (layout in the module docstring) of a calibration.CalibrationResult
    made with params.CalibrationParams `params`."""
    # (here: nexusformat only where a file is written: a reading job's start stays short)
    from nexusformat.nexus import (NXcollection, NXdata, NXentry, NXfield, NXinstrument,
                                   NXmonochromator, NXnote, NXparameters, NXroot)

    g = result.geometry
    entry = NXentry()
    entry["title"] = NXfield(f"powder calibration {params.name}")
    entry["calibrant"] = NXfield(params.calibrant or "")  # "": an imported PONI, none named
    entry["method"] = NXfield(result.method)
    entry["instrument"] = NXinstrument(detector=detector_group(g), monochromator=NXmonochromator(
        wavelength=NXfield(g.wavelength, units="angstrom")))
    proc = provenance_group(provenance)
    proc["refined"] = _parameters(g)
    if result.start is not None:
        proc["start"] = _parameters(result.start)
    proc["refined_parameters"] = NXfield(" ".join(result.refined) or "none (imported)")
    if result.uncertainties:
        proc["uncertainty"] = NXparameters(**{k: NXfield(v, units=UNITS[k])
                                              for k, v in result.uncertainties.items()})
    res = NXcollection()
    res["rms_residual_px"] = NXfield(np.nan if result.rms_px is None else result.rms_px,
                                     units="pixel")
    res["rms_residual_2theta"] = NXfield(np.nan if result.rms_tth_deg is None
                                         else result.rms_tth_deg, units="degree")
    res["n_points"] = NXfield(int(result.n_points))
    res["n_rings"] = NXfield(int(len(result.rings)))
    if result.rings:
        res["rings"] = NXfield(np.asarray(result.rings, dtype=np.int32))
    res["n_hot_pixels"] = NXfield(int(result.n_hot))
    misfit = getattr(result, "misfit", None)  # the acceptance test (calibration.ring_misfit)
    if misfit is not None:
        res["ring_misfit_px"] = NXfield(misfit.misfit_px, units="pixel")
        res["ring_misfit_bound_px"] = NXfield(misfit.bound_px, units="pixel")
        res["ring_spacing_min_px"] = NXfield(misfit.min_spacing_px, units="pixel")
    proc["residuals"] = res
    if len(result.control_points):
        cp = result.control_points
        proc["control_points"] = NXdata(
            NXfield(cp[:, 2].astype(np.int32), name="ring"),
            title="control points (pyFAI pixel indices: row = d1 + 0.5, col = d2 + 0.5)")
        proc["control_points"]["d1"] = NXfield(cp[:, 0], units="pixel")
        proc["control_points"]["d2"] = NXfield(cp[:, 1], units="pixel")
    proc["beam_centre"] = NXparameters(**{k: NXfield(v, units="pixel")
                                          for k, v in g.beam_centre().items()})
    proc["fit2d"] = NXparameters(**{k: NXfield(v) for k, v in g.fit2d().items()})
    proc["source"] = NXnote(type="application/json", data=json.dumps(source, sort_keys=True))
    proc["source_file"] = NXfield(str(source.get("poni") or source.get("image")))
    proc["source_sha256"] = NXfield(str(source.get("sha256")))
    if "image" in source and "poni" not in source:
        proc["source_dataset"] = NXfield(str(source.get("dataset")))
        proc["source_frame"] = NXfield(int(source.get("frame", 0)))
    proc["parameters"] = NXnote(type="application/json",
                                data=json.dumps(params.as_dict(), sort_keys=True, default=str))
    if result.passes:
        proc["passes"] = NXnote(type="application/json",
                                data=json.dumps(result.passes, default=float))
    if result.notes:
        proc["notes"] = NXfield("\n".join(result.notes))
    entry["process"] = proc
    if pattern is not None:
        tth, inten = pattern
        entry["data"] = NXdata(NXfield(inten, name="intensity"),
                               NXfield(tth, name="two_theta", units="degree"),
                               title=f"{params.calibrant} integrated pattern")
    root = NXroot()
    root["calibration"] = entry
    root.attrs["default"] = "calibration"
    # written in a temporary folder first: record the final name only
    return write_nexus_atomically(root, path,
                                  finish=lambda h5: h5.attrs.__setitem__("file_name", Path(path).name))


def read_calibration_summary(path) -> dict:
    """What calibration.nxs says of its fit (rule experiment_page): title, calibrant, method,
    the refined parameters and the residuals (NXcollection process/residuals as written)."""
    from .h5 import get, group, open_h5, read_collection, text

    with open_h5(path) as f:
        if "calibration" not in f:
            raise FileFormatError(f"{path}: no /calibration entry: not a calibration file")
        ent = f["calibration"]
        proc = group(ent, "process", path)
        residuals = {k: v.tolist() if isinstance(v, (np.ndarray, np.generic)) else v
                     for k, v in read_collection(group(proc, "residuals", path)).items()}
        return {"title": text(get(ent, "title", path)),
                "calibrant": text(get(ent, "calibrant", path)),
                "method": text(get(ent, "method", path)),
                "refined_parameters": text(get(proc, "refined_parameters", path)),
                "residuals": residuals}


# --------------------------------------------------------------------------------------
# version.json
# --------------------------------------------------------------------------------------
def write_version_file(path, name: str, version: str, poni: Path) -> Path:
    return write_json_atomically(path, {"calibration": name, "version": version,
                                        "poni_sha256": file_digest(poni), "created": _utc_now()})


def read_version_file(path, poni) -> str:
    """The version of the calibration whose geometry.poni is `poni`, from its version.json
    (FileFormatError when the two do not belong together)."""
    try:
        data = json.loads(Path(path).read_text())
        version, digest = str(data["version"]), str(data["poni_sha256"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise FileFormatError(f"{path}: not a calibration version file of calibrate_powder "
                              f"({exc})") from None
    if file_digest(poni) != digest:
        raise FileFormatError(f"{path} describes another geometry.poni than {poni} (its sha256 "
                              "differs): run calibrate_powder again")
    return version


# --------------------------------------------------------------------------------------
# The archive of accepted versions
# --------------------------------------------------------------------------------------
def version_key(source: dict, settings: dict) -> str:
    """What identifies a calibration: the source (paths and sha256 digests) and settings."""
    blob = json.dumps({"source": source, "settings": settings}, sort_keys=True, default=str)
    return "sha256:" + hashlib.sha256(blob.encode()).hexdigest()


class CalibrationArchive:
    """versions/vNNN/ and index.json in a calibration's output folder::

        archive = CalibrationArchive(folder, name)
        found = archive.find(key)   # the same source and settings: that version again
        with archive.new_version(record) as (version, files):
            ...  # write files["poni"], files["nexus"], files["png"]
        archive.publish(version, {"poni": ..., "nexus": ..., "png": ..., "version": ...})
    """

    def __init__(self, out_dir, name: str):
        self.out_dir, self.name = Path(out_dir), name
        self.versions_dir = self.out_dir / "versions"
        p = self.out_dir / INDEX
        if not p.exists():
            self.index = {"calibration": name, "current": None, "versions": []}
            return
        try:
            self.index = json.loads(p.read_text())
        except (OSError, ValueError) as exc:
            raise CalibrationError(f"{p}: cannot read the version index: {exc}") from None
        if not isinstance(self.index, dict) or not isinstance(self.index.get("versions"), list):
            raise CalibrationError(f"{p}: not a calibration version index")

    def find(self, key: str) -> dict | None:
        """The archived version made from the same source and settings (all files present)."""
        return next((v for v in self.index["versions"] if v.get("key") == key
                     and all((self.versions_dir / v["version"] / f).is_file()
                             for f in ARCHIVED_FILES.values())), None)

    def files_of(self, version: str) -> Path:
        return self.versions_dir / version

    def next_version(self) -> str:
        used = {v.get("version") for v in self.index["versions"]}
        if self.versions_dir.is_dir():
            used |= {p.name for p in self.versions_dir.iterdir()}
        n = 1
        while f"v{n:03d}" in used:
            n += 1
        return f"v{n:03d}"

    @contextlib.contextmanager
    def new_version(self, record: dict) -> Iterator[tuple[str, dict[str, Path]]]:
        """A new version: its name and {role: path} of its ARCHIVED_FILES in a temporary
        folder, for the caller to write; on a clean exit the folder becomes versions/vNNN
        (whole or not at all) and the index gets its record (`record`, the time, the
        files' sha256).  On an exception nothing is archived."""
        version = self.next_version()
        with atomic_folder(self.files_of(version)) as tmp:
            yield version, {role: tmp / name for role, name in ARCHIVED_FILES.items()}
            missing = [name for name in ARCHIVED_FILES.values() if not (tmp / name).is_file()]
            if missing:
                raise CalibrationError(f"calibration {self.name} version {version}: "
                                       f"{', '.join(missing)} not written")
        folder = self.files_of(version)
        digests = {name: file_digest(folder / name) for name in ARCHIVED_FILES.values()}
        self.index["versions"].append({"version": version, "created": _utc_now(), **record,
                                       "files": digests})

    def publish(self, version: str, outputs: dict) -> None:
        """The rule's outputs ({role of CALIBRATION_FILES: path}) of `version`: its archived
        files copied, each whole or not at all, and its version.json; the index then says
        it is the current one."""
        for role, name in ARCHIVED_FILES.items():
            copy_atomically(self.files_of(version) / name, outputs[role])
        write_version_file(outputs["version"], self.name, version, outputs["poni"])
        self.set_current(version)

    def set_current(self, version: str) -> None:
        self.index["calibration"] = self.name
        self.index["current"] = version
        write_json_atomically(self.out_dir / INDEX, self.index)
