"""hklflow.raw.exposure: how long each frame of a scan was exposed, read from its raw files
(NXmx beside an HDF5 stack, a Pilatus CBF header), else NXRefine's default, each saying where
it came from."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np


def test_frame_time_is_read_from_the_raw_data_where_recorded(tmp_path):
    """NXmx frame_time (else count_time) beside an HDF5 stack, a Pilatus CBF header's
    Exposure_period (else Exposure_time), else NXRefine's default 0.1 s, each saying so."""
    import h5py

    from hklflow.raw.exposure import frame_time

    def rec(kind, path, dataset=None):
        return SimpleNamespace(frames=SimpleNamespace(kind=kind, files=(str(path),),
                                                      dataset=dataset))

    with h5py.File(tmp_path / "nxmx.h5", "w") as f:
        f["entry/data/data"] = np.zeros((2, 3, 4))
        f["entry/instrument/detector/count_time"] = 0.0495
        f["entry/instrument/detector/frame_time"] = 0.05
    assert frame_time(rec("hdf5", tmp_path / "nxmx.h5", "/entry/data/data")) == (
        0.05, f"{tmp_path / 'nxmx.h5'}: /entry/instrument/detector/frame_time")
    with h5py.File(tmp_path / "bare.h5", "w") as f:
        f["entry/data/data"] = np.zeros((2, 3, 4))
    seconds, source = frame_time(rec("hdf5", tmp_path / "bare.h5", "/entry/data/data"))
    assert seconds == 0.1 and "NXRefine's default" in source
    cbf = tmp_path / "x_00001.cbf"
    cbf.write_bytes(b"###CBF: VERSION 1.5\r\n# Exposure_time 0.0990000 s\r\n"
                    b"# Exposure_period 0.1000000 s\r\n# Flux 2.5e+11\r\n"
                    b"--CIF-BINARY-FORMAT-SECTION--\r\n")
    assert frame_time(rec("files", cbf)) == (0.1, f"{cbf}: CBF header Exposure_period")
    tif = tmp_path / "x_00001.tif"
    tif.write_bytes(b"II*\x00")
    assert frame_time(rec("files", tif))[0] == 0.1
