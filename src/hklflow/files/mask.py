"""The mask file of one scan entry (rule mask_scan): ``results/SAMPLE/TLABEL/ENTRY/mask.nxs``::

  /ENTRY                        NXentry (named as in the scan file), title SAMPLE/TLABEL/ENTRY,
                                @hklflow_mask_file_version
     instrument/detector        NXdetector
        pixel_mask              int32 (rows, cols), NeXus bits: 1 gap, 2 dead, 8 hot
                                (over-responding), 256 user mask; 0 = used (gzip)
     bragg_regions              NXreflections-style, one row per ellipsoid (continuous
                                coordinates, pixel/frame centres at +0.5): row, col, frame,
                                radius_row, radius_col, radius_frame; h, k, l (predicted:
                                the reflection; found: the fractional hkl of the peak's
                                centroid with the refined UB, NaN without it), source
                                (1 found, 2 predicted), peak_index (row of the peaks file,
                                -1), zeta (predicted, NaN for found);
                                @hkl_radius (r.l.u., 0 = off), @nframes, @shape
     masked_per_frame           NXdata: usable pixels inside a region, per frame
     parameters                 NXcollection: the reduction.mask settings and constants
     statistics                 NXcollection: pixel counts per reason, regions, fractions
     scan_file, peaks_file, orientation_file   the inputs
     process                    NXprocess: provenance
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..base.errors import FileFormatError
from .h5 import nexus, open_h5, provenance_group, read_collection, text, write_nexus_atomically
from .peaks import parameter_collection

MASK_FILE_VERSION = 1

# NeXus NXdetector pixel_mask bits
GAP = 1  # bit 0: gap, no sensor
DEAD = 2  # bit 1: dead
HOT = 8  # bit 3: over-responding
USER = 256  # bit 8: user defined mask
REASONS = {"gap": GAP, "dead": DEAD, "hot": HOT, "user": USER}

FOUND = 1  # bragg_regions/source
PREDICTED = 2

REGION_COLUMNS = ("row", "col", "frame", "radius_row", "radius_col", "radius_frame")


@dataclass(eq=False)
class MaskRecord:
    """What the transform needs of a mask file (masking.ScanMask.of makes the masks)."""

    pixels: np.ndarray  # bool (rows, cols): True = pixel not used in any frame
    regions: np.ndarray  # float64 (n, 6): REGION_COLUMNS (ellipsoids, continuous coords)
    hkl_radius: float  # r.l.u.; 0 = off
    nframes: int


def write_mask_file(path, result, *, entry: str, title: str, parameters: dict,
                    provenance: dict, sources: dict | None = None) -> Path:
    """Write the masks of one scan entry (layout in the module docstring), atomically: result
    is masking.MaskResult; parameters, the settings and the algorithm's constants."""
    nx = nexus()

    m = result.mask
    ent = nx.NXentry()
    ent["title"] = nx.NXfield(title)
    det = nx.NXdetector()
    det["pixel_mask"] = nx.NXfield(np.asarray(result.reasons, dtype=np.int32), compression="gzip",
                                   compression_opts=4, chunks=True)
    det["pixel_mask"].attrs["bits"] = "1 gap, 2 dead, 8 hot (over-responding), 256 user mask; 0 = used"
    ent["instrument"] = nx.NXinstrument(detector=det)
    refl = nx.NXgroup(nxclass="NXreflections")
    n = len(m.regions)
    for name, values in result.table.items():
        arr = np.asarray(values)
        refl[name] = nx.NXfield(arr, compression="gzip", chunks=True) if n else nx.NXfield(arr)
    for name in ("row", "col", "radius_row", "radius_col"):
        refl[name].attrs["units"] = "pixel"
    for name in ("frame", "radius_frame"):
        refl[name].attrs["units"] = "frame"
    refl.attrs["hkl_radius"] = float(m.hkl_radius)
    refl.attrs["nframes"] = int(m.nframes)
    refl.attrs["shape"] = np.asarray(m.shape, dtype=np.int64)
    refl.attrs["description"] = (
        "ellipsoids of the Bragg mask: a pixel of a frame is masked when "
        "((r+.5-row)/radius_row)^2 + ((c+.5-col)/radius_col)^2 + ((f+.5-frame)/radius_frame)^2 <= 1; "
        "source 1 = found peak, 2 = predicted reflection")
    ent["bragg_regions"] = refl
    if result.masked_per_frame is not None:
        ent["masked_per_frame"] = nx.NXdata(
            nx.NXfield(np.asarray(result.masked_per_frame, dtype=np.int64), name="pixels"),
            nx.NXfield(np.arange(m.nframes), name="frame_number"),
            title="usable pixels inside a Bragg region, per frame")
    ent["parameters"] = parameter_collection(parameters)
    st = nx.NXcollection()
    for k, v in result.statistics.items():
        st[k] = nx.NXfield(v)
    ent["statistics"] = st
    for k, v in (sources or {}).items():
        ent[k] = nx.NXfield(str(Path(v).resolve()))
    ent["process"] = provenance_group(provenance)
    ent.attrs["hklflow_mask_file_version"] = MASK_FILE_VERSION
    root = nx.NXroot()
    root[entry] = ent
    root.attrs["default"] = entry
    return write_nexus_atomically(root, path)


def _mask_entry(f, path):
    name = text(f.attrs.get("default", ""))
    if not name:
        entries = [k for k, v in f.items() if "bragg_regions" in v]
        if len(entries) != 1:
            raise FileFormatError(f"{path}: expected one mask entry, found {entries}")
        name = entries[0]
    if name not in f or "bragg_regions" not in f[name] or "instrument/detector/pixel_mask" not in f[name]:
        raise FileFormatError(f"{path}: /{name} has no instrument/detector/pixel_mask and "
                              "bragg_regions: not a mask_scan output")
    return f[name]


def read_mask_file(path) -> MaskRecord:
    """What the transform needs of a mask file."""
    with open_h5(path) as f:
        ent = _mask_entry(f, path)
        reasons = ent["instrument/detector/pixel_mask"][()]
        g = ent["bragg_regions"]
        regions = np.column_stack([g[c][()] for c in REGION_COLUMNS]) if len(g["row"]) \
            else np.zeros((0, 6))
        return MaskRecord(reasons != 0, regions, float(g.attrs["hkl_radius"]),
                          int(g.attrs["nframes"]))


def read_pixel_mask(path, entry: str) -> np.ndarray:
    """The pixel mask of the mask file of scan entry `entry`: True = pixel not used (any
    bit: gap, dead, hot, user mask); FileFormatError when the file is another entry's."""
    with open_h5(path) as f:
        where = f"{entry}/instrument/detector/pixel_mask"
        if where not in f:
            raise FileFormatError(f"{path}: no /{where}: not the mask file of entry {entry} "
                                  "(give the masks in the order of the scans)")
        return f[where][()] != 0


def read_mask_details(path) -> dict:
    """Everything else in a mask file: pixel_mask bits, region columns, statistics."""
    with open_h5(path) as f:
        ent = _mask_entry(f, path)
        return {"pixel_mask": ent["instrument/detector/pixel_mask"][()],
                "regions": {k: v[()] for k, v in ent["bragg_regions"].items()},
                "statistics": {k: v[()] for k, v in ent["statistics"].items()},
                "parameters": read_collection(ent["parameters"])}
