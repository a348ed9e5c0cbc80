"""The peaks file of one scan entry (rule find_peaks): ``results/SAMPLE/TLABEL/ENTRY/peaks.nxs``::

  /ENTRY                        NXentry (named as in the scan file), title SAMPLE/TLABEL/ENTRY
     peaks                      NXreflections-style: one row per peak; observed_px_x (column),
                                observed_px_y (row), observed_frame (continuous, pixel and
                                frame centres at +0.5), observed_phi (deg), their variances
                                (second moments), int_sum, int_sum_var, background_mean,
                                max_value, n_pixels, bounding_box [row0, row1, col0, col1,
                                frame0, frame1) (half-open), polar_angle (2theta),
                                azimuthal_angle (chi)
     frame_statistics           NXdata: sum, max, trimmed_sum, n_valid, n_strong, n_annulus
                                vs frame_number and rotation_angle; @scan_max, @q_annulus
                                (a block of a scan in progress: its frames, numbered as in
                                the scan, rule find_peaks_block)
     hot_pixels                 [n, 2] rows, cols of pixels found hot
     max_projection             [rows, cols] maximum of every pixel over the scan (-1: not used)
     parameters                 NXcollection: the settings of the search
     scan_file                  the scan.nxs this was made from
     warnings                   what the search warned of, a line each (only if it did: a gain
                                that does not fit the frames' background)
     process                    NXprocess: provenance
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..base.errors import FileFormatError
from .h5 import entry_group, get, nexus, open_h5, provenance_group, text, write_nexus_atomically

PEAK_UNITS = {"observed_px_x": "pixel", "observed_px_y": "pixel", "observed_frame": "frame",
              "observed_phi": "degree", "observed_px_x_var": "pixel^2",
              "observed_px_y_var": "pixel^2", "observed_frame_var": "frame^2",
              "int_sum": "counts", "int_sum_var": "counts^2", "background_mean": "counts",
              "max_value": "counts", "polar_angle": "degree", "azimuthal_angle": "degree"}


@dataclass(frozen=True)
class PeaksRecord:
    path: str
    entry: str
    scan_id: str
    peaks: dict
    frame_stats: dict
    hot_pixels: np.ndarray
    scan_max: float
    max_projection: np.ndarray
    warnings: tuple = ()  # what the peak search warned of (a gain that does not fit the data)
    q_annulus: tuple = ()  # (low, high) 1/Angstrom of the frame statistics' annulus

    @property
    def frames_searched(self) -> int:
        """The frames the search went over (a block of a scan in progress: its own)."""
        return len(self.frame_stats.get("frame_number", ()))


def parameter_collection(parameters: dict):
    """An NXcollection of flat settings (None stored as 'none', lists as arrays)."""
    nx = nexus()

    par = nx.NXcollection()
    for k, v in parameters.items():
        if isinstance(v, dict):
            par[k] = parameter_collection(v)
        else:
            par[k] = nx.NXfield("none" if v is None else
                                (np.asarray(v) if isinstance(v, (tuple, list)) else v))
    return par


def write_peaks_file(path, scan, result, parameters: dict, provenance: dict) -> Path:
    """Write a peak search (spotfinding.PeakSearchResult) of one scan entry (scan: its
    files.scan.ScanRecord), atomically."""
    nx = nexus()

    ent = nx.NXentry()
    ent["title"] = nx.NXfield(scan.scan_id)
    refl = nx.NXgroup(nxclass="NXreflections")
    for name, values in result.peaks.items():
        refl[name] = nx.NXfield(np.asarray(values))
        if name in PEAK_UNITS:
            refl[name].attrs["units"] = PEAK_UNITS[name]
    refl.attrs["description"] = ("3D peaks of one streamed pass (dispersion test); pixel "
                                 "coordinates continuous, centre of pixel i at i + 0.5")
    ent["peaks"] = refl
    st = nx.NXdata()
    first = int(getattr(result, "first_frame", 0))  # (a block of a scan in progress)
    st["frame_number"] = nx.NXfield(np.arange(first, first + result.nframes))
    st["rotation_angle"] = nx.NXfield(scan.angles.frame_centres()[first:first + result.nframes],
                                      units="degree")
    for name, values in result.frame_stats.items():
        st[name] = nx.NXfield(np.asarray(values))
    st.attrs["signal"] = "trimmed_sum"
    st.attrs["axes"] = "frame_number"
    st.attrs["scan_max"] = result.scan_max
    st.attrs["q_annulus"] = np.asarray(result.q_annulus)
    ent["frame_statistics"] = st
    ent["hot_pixels"] = nx.NXfield(np.asarray(result.hot_pixels, dtype=np.int64).reshape(-1, 2))
    # per-pixel maximum over the scan (-1 where not used): the mask step finds dead pixels in it
    ent["max_projection"] = nx.NXfield(np.asarray(result.max_projection, dtype=np.float32),
                                       compression="gzip", units="counts")
    ent["parameters"] = parameter_collection(parameters)
    ent["scan_file"] = nx.NXfield(str(Path(scan.path).resolve()))
    if result.notes:  # (the steps that fail on these peaks name them: a wrong gain, ...)
        ent["warnings"] = nx.NXfield("\n".join(result.notes))
    ent["process"] = provenance_group(provenance)
    root = nx.NXroot()
    root[scan.entry] = ent
    root.attrs["default"] = scan.entry
    return write_nexus_atomically(root, path)


def read_peaks_file(path, entry: str | None = None) -> PeaksRecord:
    with open_h5(path) as f:
        ent = entry_group(f, path, entry)
        if "peaks" not in ent or "frame_statistics" not in ent:
            raise FileFormatError(f"{path}: /{ent.name.strip('/')} has no peaks/frame_statistics: "
                                  "not a find_peaks output")
        refl = ent["peaks"]
        st = ent["frame_statistics"]
        return PeaksRecord(str(path), ent.name.strip("/"), text(get(ent, "title", path)),
                           {k: refl[k][()] for k in refl}, {k: st[k][()] for k in st},
                           get(ent, "hot_pixels", path), float(st.attrs["scan_max"]),
                           get(ent, "max_projection", path),
                           tuple(text(ent["warnings"][()]).split("\n")) if "warnings" in ent
                           else (), tuple(np.asarray(st.attrs.get("q_annulus", ()), float)))
