"""hklflow.files.nxrefine: NXRefine's wrapper file, written and read back through its
links (nothing large copied), beside its scan directory, and their names."""
from __future__ import annotations

import os

import h5py
import numpy as np

from hklflow.files import outputs
from hklflow.files.h5 import open_h5, read_provenance
from hklflow.files.nxrefine import WrapperEntry, scan_directory, write_nxrefine_wrapper
from hklflow.files.volume import read_volume, write_volume

from volume_helpers import random_volume, small_grid


def test_wrapper_round_trip_through_its_links(tmp_path):
    at = dict(sample="tiny", temperature="300K")
    wrapper = tmp_path / outputs.fill(outputs.NXREFINE_WRAPPER, **at)
    assert scan_directory(wrapper, "tiny") == tmp_path / outputs.fill(
        outputs.NXREFINE_SCAN_DIRECTORY, **at)
    grid = small_grid()
    merged = tmp_path / outputs.fill(outputs.MERGED_VOLUME, kind="transform", **at)
    entry_volume = tmp_path / outputs.fill(outputs.ENTRY_VOLUME, kind="transform", entry="f1",
                                           **at)
    for path, seed in ((merged, 1), (entry_volume, 2)):
        write_volume(path, random_volume(grid, seed), {})
    raw = tmp_path / "raw.h5"
    with open_h5(raw, "w") as f:
        f["entry/data/data"] = np.arange(2 * 3 * 4, dtype=np.int32).reshape(2, 3, 4)
    params = {"wavelength": 0.41, "distance": 200.0, "pixel_size": 0.172, "yaw": 0.0,
              "pitch": 0.0, "roll": 0.0, "xc": 1.5, "yc": 2.5, "shape": (3, 4),
              "detector_orientation": "-x +y +z", "orientation_matrix": np.eye(3), "phi": 0.0,
              "phi_step": 1.0, "chi": 0.0, "omega": 0.0, "theta": 0.0}
    peaks = {k: np.array([1.0, 2.0]) for k in ("x", "y", "z", "intensity", "sigx", "sigy",
                                               "sigz", "polar_angle")}
    mask = np.zeros((3, 4), bool)
    mask[0, 0] = True
    entry = WrapperEntry("f1", params, peaks, 2, (3, 4), (str(raw), "/entry/data/data"),
                         {"transform": str(entry_volume)}, pixel_mask=mask,
                         monitor=np.array([10.0, 20.0]), monitor_weight=np.array([0.5, 1.0]))
    write_nxrefine_wrapper(wrapper, title="tiny/300K", sample={"name": "tiny"},
                           angles=(90.0, 90.0, 90.0), entries=[entry],
                           merged={"transform": str(merged)}, symmetrized={}, pdf={},
                           notes={"linked": "all"}, provenance={"program": "t"},
                           monitor_norm=20.0)
    assert os.path.islink(scan_directory(wrapper, "tiny") / "f1.h5")
    with h5py.File(wrapper, "r") as f:
        assert np.array_equal(f["entry/transform/data"][()],
                              read_volume(merged).intensity(), equal_nan=True)
        assert np.array_equal(f["f1/transform/weights"][()], read_volume(entry_volume).weight)
        assert np.array_equal(f["f1/data/data"][()], np.arange(24).reshape(2, 3, 4))
        assert f["f1/instrument/detector/pixel_mask"][()].tolist() == mask.astype(int).tolist()
        assert f["entry/nxreduce/norm"][()] == 20.0
        assert isinstance(f["entry"].get("transform/data", getlink=True), h5py.ExternalLink)
    assert read_provenance(wrapper)["program"] == "t"


def test_the_wrapper_names_the_sensor_as_nxmx_does(tmp_path):
    """The sensor of the entry's detector (model.nxrefine.detector_parameters) in its
    instrument/detector group: NXmx's sensor_material and sensor_thickness (m)."""
    from hklflow.model.geometry import DetectorGeometry
    from hklflow.model.nxrefine import detector_parameters

    g = DetectorGeometry("Pilatus300k", 0.2, 0.05, 0.04, 0.01, -0.02, 0.0, wavelength=0.14,
                         sensor={"material": "CdTe", "thickness": 0.001})
    params = detector_parameters(g)
    plain = detector_parameters(g.with_sensor(None))
    # NXRefine's frame is the detector's plane: the same distance, centre and tilts
    assert {k: v for k, v in params.items() if not k.startswith("sensor_")} == plain
    assert (params["sensor_material"], params["sensor_thickness"]) == ("CdTe", 0.001)
    grid = small_grid()
    merged = tmp_path / "merged.nxs"
    write_volume(merged, random_volume(grid, 1), {})
    params = {**params, "wavelength": 0.14, "orientation_matrix": np.eye(3), "phi": 0.0,
              "phi_step": 1.0, "chi": 0.0, "omega": 0.0, "theta": 0.0}
    peaks = {k: np.array([1.0]) for k in ("x", "y", "z", "intensity", "sigx", "sigy", "sigz",
                                          "polar_angle")}
    wrapper = tmp_path / "tiny" / "nxrefine" / "tiny_300K.nxs"
    entry = WrapperEntry("f1", params, peaks, 2, g.shape, None, {})
    write_nxrefine_wrapper(wrapper, title="tiny/300K", sample={"name": "tiny"},
                           angles=(90.0, 90.0, 90.0), entries=[entry],
                           merged={"transform": str(merged)}, symmetrized={}, pdf={},
                           notes={}, provenance={"program": "t"}, monitor_norm=None)
    with h5py.File(wrapper, "r") as f:
        det = f["f1/instrument/detector"]
        assert det["sensor_material"][()].decode() == "CdTe"
        assert det["sensor_thickness"][()] == 0.001 and det["sensor_thickness"].attrs["units"] == "m"
