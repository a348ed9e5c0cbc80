"""hklflow.files.peaks: a peak search's file, written and read back, and its name."""
from __future__ import annotations

import types

import numpy as np
import pytest

from hklflow.base.errors import FileFormatError
from hklflow.files import outputs
from hklflow.files.h5 import read_provenance
from hklflow.files.peaks import read_peaks_file, write_peaks_file
from hklflow.model.geometry import ScanAngles


def test_peaks_file_round_trip(tmp_path):
    rng = np.random.default_rng(2)
    scan = types.SimpleNamespace(scan_id="tiny/300K/f1", entry="f1", path=tmp_path / "scan.nxs",
                                 angles=ScanAngles(0.0, 1.0, 6))
    peaks = {"observed_px_x": rng.random(4) * 100, "observed_frame": rng.random(4) * 6,
             "n_pixels": np.array([3, 4, 5, 6])}
    result = types.SimpleNamespace(
        peaks=peaks, nframes=6, frame_stats={"trimmed_sum": rng.random(6)}, scan_max=41.0,
        q_annulus=(0.1, 2.0), hot_pixels=[(1, 2), (3, 4)],
        max_projection=rng.random((5, 7)).astype(np.float32),
        notes=["the frames' background has a variance of 31.20 x its mean", "a second one"])
    path = tmp_path / outputs.fill(outputs.PEAKS, sample="tiny", temperature="300K", entry="f1")
    assert str(path.relative_to(tmp_path)) == "results/tiny/300K/f1/peaks.nxs"
    write_peaks_file(path, scan, result, {"threshold": 3.0, "mask": None},
                     {"program": "test", "time": "now"})
    rec = read_peaks_file(path)
    assert (rec.entry, rec.scan_id, rec.scan_max) == ("f1", "tiny/300K/f1", 41.0)
    for k, v in peaks.items():
        assert np.array_equal(rec.peaks[k], v)
    assert np.array_equal(rec.frame_stats["trimmed_sum"], result.frame_stats["trimmed_sum"])
    assert np.array_equal(rec.frame_stats["rotation_angle"], scan.angles.frame_centres())
    assert rec.hot_pixels.tolist() == [[1, 2], [3, 4]]
    assert np.array_equal(rec.max_projection, result.max_projection)
    assert rec.warnings == tuple(result.notes)
    assert read_provenance(path)["program"] == "test"
    result.notes = []  # (a search that warned of nothing: no field, no warnings)
    write_peaks_file(path, scan, result, {}, {"program": "test", "time": "now"})
    assert read_peaks_file(path).warnings == ()


def test_a_file_without_peaks_is_refused(tmp_path):
    from hklflow.files.h5 import open_h5

    with open_h5(tmp_path / "x.nxs", "w") as f:
        f.create_group("f1").attrs["NX_class"] = "NXentry"
    with pytest.raises(FileFormatError, match="not a find_peaks output"):
        read_peaks_file(tmp_path / "x.nxs")
