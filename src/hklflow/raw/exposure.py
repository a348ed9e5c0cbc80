"""How long each frame of a scan was exposed, as its raw files say: the NXmx frame_time
(else count_time) of an HDF5 scan, the Pilatus CBF header's Exposure_period (else
Exposure_time) of frame files.  NXRefine's wrapper needs it (files.nxrefine)."""
from __future__ import annotations

import h5py

from ..files.cbf_header import read_cbf_header
from ..files.h5 import open_h5
from ..files.nxrefine import DEFAULT_FRAME_TIME
from ..model.scan import DEFAULT_DATASET


def frame_time(rec) -> tuple[float, str]:
    """Seconds per frame of a scan entry and where they come from: the raw HDF5 file's NXmx
    frame_time (else count_time) in the entry of its frames, or the first frame file's CBF
    header Exposure_period (else Exposure_time); else NXRefine's default 0.1 s."""
    src = rec.frames
    first = src.files[0]
    if src.kind == "hdf5":
        top = (src.dataset or DEFAULT_DATASET).strip("/").split("/")[0]
        try:
            with open_h5(first) as f:
                for name in ("frame_time", "count_time"):
                    d = f.get(f"{top}/instrument/detector/{name}")
                    if isinstance(d, h5py.Dataset) and d.size == 1 and float(d[()]) > 0:
                        return float(d[()]), f"{first}: /{top}/instrument/detector/{name}"
        except (OSError, KeyError, TypeError, ValueError):  # unreadable, a broken link, no number
            pass
    else:
        try:
            header = read_cbf_header(first)
        except (OSError, ValueError):  # no CBF (TIFF, EDF)
            header = None
        for name in ("Exposure_period", "Exposure_time") if header is not None else ():
            try:
                value = header.number(name)
            except ValueError:  # no number there
                break
            if value and value > 0:
                return float(value), f"{first}: CBF header {name}"
    return DEFAULT_FRAME_TIME, "NXRefine's default: the raw data record no frame time"
