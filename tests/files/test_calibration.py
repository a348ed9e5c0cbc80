"""hklflow.files.calibration: a calibration's files (record, version, the archive of its
versions), written and read back, and their names."""
from __future__ import annotations

import json
import types

import numpy as np
import pytest

from hklflow.base.errors import CalibrationError, FileFormatError
from hklflow.files import outputs
from hklflow.files.calibration import (ARCHIVED_FILES, CalibrationArchive, read_version_file,
                                       version_key, write_calibration_file, write_version_file)
from hklflow.files.h5 import open_h5, read_detector_group
from hklflow.model.geometry import DetectorGeometry

GEOMETRY = DetectorGeometry("Pilatus300k", 0.2, 0.04, 0.03, 0.01, 0.0, 0.0, wavelength=0.41)


def _outputs(root):
    """The rule's outputs, {role: path}, as the rule names them."""
    return {role: root / outputs.fill(getattr(outputs, name), calibration="ceo2")
            for role, name in (("poni", "GEOMETRY_PONI"), ("nexus", "CALIBRATION_NEXUS"),
                               ("png", "CALIBRATION_PNG"), ("version", "CALIBRATION_VERSION"))}


def test_the_rule_s_outputs_are_the_archive_s_files_and_version_json(tmp_path):
    names = {role: p.name for role, p in _outputs(tmp_path).items()}
    assert names == outputs.CALIBRATION_FILES
    assert ARCHIVED_FILES == {r: n for r, n in names.items() if r != "version"}


def _write_version(archive, record, text="Distance: 0.2\n"):
    with archive.new_version(record) as (version, made):
        made["poni"].write_text(text)
        made["nexus"].write_bytes(b"nexus")
        made["png"].write_bytes(b"png")
    return version


def test_a_version_is_archived_whole_and_published(tmp_path):
    out = _outputs(tmp_path)
    folder = out["poni"].parent
    archive = CalibrationArchive(folder, "ceo2")
    key = version_key({"image": "CeO2.h5", "sha256": "x"}, {"refine": ["dist"]})
    version = _write_version(archive, {"key": key})
    assert version == "v001" and archive.find(key)["version"] == "v001"
    archive.publish(version, out)
    assert out["poni"].read_text() == "Distance: 0.2\n" and out["png"].read_bytes() == b"png"
    assert read_version_file(out["version"], out["poni"]) == "v001"
    index = json.loads((folder / "index.json").read_text())
    assert index["current"] == "v001" and set(index["versions"][0]["files"]) == set(
        ARCHIVED_FILES.values())
    # a new archive reads the index: the same key finds v001, another makes v002
    again = CalibrationArchive(folder, "ceo2")
    assert again.find(key)["version"] == "v001"
    assert _write_version(again, {"key": "other"}, "Distance: 0.3\n") == "v002"
    assert sorted(p.name for p in (folder / "versions").iterdir()) == ["v001", "v002"]


def test_a_failed_version_leaves_nothing(tmp_path):
    archive = CalibrationArchive(tmp_path, "ceo2")
    with pytest.raises(RuntimeError, match="refinement failed"):
        with archive.new_version({"key": "k"}) as (version, made):
            made["poni"].write_text("x")
            raise RuntimeError("refinement failed")
    with pytest.raises(CalibrationError, match="calibration.png not written"):
        with archive.new_version({"key": "k"}) as (version, made):
            made["poni"].write_text("x")
            made["nexus"].write_text("x")
    assert list((tmp_path / "versions").iterdir()) == [] and archive.index["versions"] == []


def test_a_version_file_of_another_geometry_is_refused(tmp_path):
    poni, other = tmp_path / "geometry.poni", tmp_path / "other.poni"
    poni.write_text("a")
    other.write_text("b")
    write_version_file(tmp_path / "version.json", "ceo2", "v003", poni)
    assert read_version_file(tmp_path / "version.json", poni) == "v003"
    with pytest.raises(FileFormatError, match="describes another geometry.poni"):
        read_version_file(tmp_path / "version.json", other)


def test_calibration_record_round_trip(tmp_path):
    result = types.SimpleNamespace(
        geometry=GEOMETRY, method="refined", start=GEOMETRY.shifted(0.01), refined=("dist",),
        uncertainties={"dist": 1e-5}, rms_px=0.3, rms_tth_deg=0.01, n_points=50, rings=[1, 2],
        n_hot=3, control_points=np.array([[1.0, 2.0, 0], [3.0, 4.0, 1]]), passes=[{"n": 1}],
        notes=["fine"])
    params = types.SimpleNamespace(name="ceo2", calibrant="CeO2", as_dict=lambda: {"name": "ceo2"})
    path = _outputs(tmp_path)["nexus"]
    write_calibration_file(path, result, params, source={"image": "CeO2.h5", "sha256": "x"},
                           pattern=(np.linspace(1, 30, 5), np.arange(5.0)),
                           provenance={"program": "t"})
    with open_h5(path) as f:
        entry = f["calibration"]
        assert read_detector_group(entry["instrument/detector"], 0.41, path) == GEOMETRY
        assert f.attrs["file_name"] == "calibration.nxs"  # its final name, not the temporary
        assert np.array_equal(entry["data/intensity"][()], np.arange(5.0))
