"""hklflow.files.scan: a scan entry's file, written and read back (geometry, frames linked
never copied, monitor, calibration, provenance), and its name."""
from __future__ import annotations

import numpy as np
import pytest

from hklflow.base.errors import InputMismatchError
from hklflow.files import outputs
from hklflow.files.h5 import open_h5
from hklflow.files.scan import read_scan_file, write_scan_file
from hklflow.model.geometry import DetectorGeometry, EntrySetup, Goniometer, ScanAngles
from hklflow.model.scan import FrameSource, ScanRow

GEOMETRY = DetectorGeometry("Pilatus300k", 0.2, 0.04, 0.03, 0.01, -0.02, 0.0, wavelength=0.5,
                            orientation=3)


def _scan(tmp_path, files=1, nframes=6):
    rows, cols = GEOMETRY.shape
    raw = []
    for i in range(files):
        path = tmp_path / "raw" / f"f1_{i}.h5"
        path.parent.mkdir(exist_ok=True)
        with open_h5(path, "w") as f:
            f["entry/data/data"] = np.full((nframes, rows, cols), i, np.int32)
        raw.append(str(path))
    angles = ScanAngles(10.0, 0.5, nframes * files)
    row = ScanRow(sample="tiny", temperature=300.0, entry="f1", data="raw/f1_*.h5",
                  dataset="/entry/data/data", nframes=nframes * files, angles=angles,
                  offsets={"omega": 1.5}, detector_shift=(0.001, 0.0, -0.002), monitor="",
                  calibration="ceo2")
    gonio = Goniometer(offset_axes=(("omega", (1.0, 0.0, 0.0)),))
    setup = EntrySetup("f1", GEOMETRY, row.detector_shift, gonio, angles, row.offsets)
    fingerprints = tuple({"size": 10 + i, "mtime_ns": 20 + i, "sampled_sha256": f"s{i}"}
                         for i in range(files))
    source = FrameSource("hdf5", tuple(raw), "/entry/data/data", (nframes,) * files,
                         (rows, cols), "<i4", fingerprints)
    return row, setup, source


@pytest.mark.parametrize("files", [1, 2])
def test_scan_file_round_trip(tmp_path, files):
    row, setup, source = _scan(tmp_path, files)
    path = tmp_path / outputs.fill(outputs.SCAN, sample="tiny", temperature="300K", entry="f1")
    assert str(path.relative_to(tmp_path)) == "results/tiny/300K/f1/scan.nxs"
    calibration = {"name": "ceo2", "version": "v001", "file": "geometry.poni",
                   "digest": "sha256:0", "poni": "Distance: 0.2"}
    monitor = np.arange(1, row.nframes + 1, dtype=float)
    write_scan_file(path, row, setup, calibration, source, {"program": "test"}, monitor=monitor)
    rec = read_scan_file(path)
    assert (rec.scan_id, rec.sample, rec.temperature, rec.entry) == ("tiny/300K/f1", "tiny",
                                                                    300.0, "f1")
    assert rec.setup == setup
    assert rec.frames.files == source.files and rec.frames.fingerprints == source.fingerprints
    assert rec.frames.frames_per_file == source.frames_per_file
    assert rec.calibration == calibration
    assert np.array_equal(rec.monitor, monitor) and rec.provenance == {"program": "test"}
    with open_h5(path) as f:  # the frames linked (one file) or a virtual stack (several)
        data = f["f1/data/data"]
        assert data.shape == (row.nframes,) + GEOMETRY.shape
        assert data[-1, 0, 0] == files - 1


def test_a_frame_count_other_than_the_table_s_is_refused(tmp_path):
    row, setup, source = _scan(tmp_path)
    from dataclasses import replace

    with pytest.raises(InputMismatchError, match="the scans table says 7"):
        write_scan_file(tmp_path / "scan.nxs", replace(row, nframes=7), setup, {}, source, {})
    assert not (tmp_path / "scan.nxs").exists()
