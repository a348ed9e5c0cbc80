"""Step calibrate_powder: a calibrant image refined (or a PONI file imported) by the step
command with the settings the config gives: its four files and the archive of its versions,
reruns and new images; failures naming the image with no output left; PONI files that
disagree with the config.  The refinement itself: tests/algorithms/test_calibration.py; the
simulated calibrant images: tests/simulation/test_powder.py; reading one image:
tests/raw/test_images.py."""
from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import numpy as np
import pytest

from hklflow.algorithms.calibration import refine_geometry
from hklflow.base.errors import CalibrationError, ConfigError
from hklflow.files import provenance
from hklflow.files.h5 import read_provenance
from hklflow.model.geometry import DetectorGeometry
from hklflow.planning.config import load_experiment
from hklflow.planning.jobs import JobSettings
from hklflow.simulation.powder import simulate_calibrant_image
from hklflow.steps import calibrate_powder as cp

from experiment_helpers import MAX_DIST_REL, TRUE_300K, calibration_params, off_start, write_h5

OUTPUTS = ("geometry.poni", "calibration.nxs", "calibration.png", "version.json")


# --------------------------------------------------------------------------------------
# helpers: a tiny experiment
# --------------------------------------------------------------------------------------
def write_experiment(tmp_path: Path, calibrations: dict, *, detector="Pilatus300k",
                     wavelength=0.6) -> Path:
    """config.yaml + scans.tsv (3 scans; S1 at 300 K is the parent) in tmp_path."""
    import yaml

    scans = tmp_path / "scans.tsv"
    scans.write_text("sample\ttemperature\tentry\tdata\tnframes\tphi_start\tphi_step\n"
                     "S1\t300\tf1\traw/s1_300.h5\t10\t0\t0.1\n"
                     "S1\t300\tf2\traw/s1_300.h5\t10\t0\t0.1\n"
                     "S1\t100\tf1\traw/s1_100.h5\t10\t0\t0.1\n")
    cfg = {"experiment": "test", "scans_table": str(scans),
           "instrument": {"detector": detector, "wavelength": wavelength,
                          "goniometer": {"scan_axis": [0, 1, 0]}},
           "calibrations": calibrations,
           "samples": {"S1": {"space_group": "F m -3 m", "cell": [5.4, 5.4, 5.4, 90, 90, 90],
                              "parent": {"temperature": 300}}}}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def start_dict(g: DetectorGeometry) -> dict:
    return {"dist": g.dist, "poni1": g.poni1, "poni2": g.poni2}


def run_main(config, name, out_dir):
    """The step as the rule runs it: settings from the config, the four outputs in out_dir."""
    exp = load_experiment(config)
    return cp.main(["--settings", JobSettings(exp).calibrate_powder(name),
                    *(f"--{k}={out_dir / f}" for k, f in (("poni", "geometry.poni"),
                                                        ("nexus", "calibration.nxs"),
                                                        ("png", "calibration.png"),
                                                        ("version", "version.json")))])


def assert_no_top_level_outputs(out_dir: Path):
    left = [f for f in OUTPUTS if (out_dir / f).exists()]
    assert not left, f"a failed calibration left {left} in {out_dir}"
    assert not list(out_dir.glob(".calibrate-*")), "temporary files left behind"


# --------------------------------------------------------------------------------------
# the command line: outputs and versions
# --------------------------------------------------------------------------------------
def test_main_refines_writes_outputs_and_versions(tmp_path, image_300k):
    import pyFAI
    from nexusformat.nexus import nxload

    image = write_h5(tmp_path / "ceo2.h5", [np.zeros_like(image_300k), image_300k])
    calibrations = {
        "ceo2": {"image": str(image), "frame": 1, "calibrant": "CeO2",
                 "start": start_dict(off_start(TRUE_300K)),
                 "valid_for": {"temperatures": [200, 400]}},
        "cold": {"poni": str(tmp_path / "cold.poni"), "calibrant": "CeO2",
                 "valid_for": {"temperatures": [0, 200]}},
    }
    config = write_experiment(tmp_path, calibrations)
    out = tmp_path / "results" / "calibration" / "ceo2"
    assert run_main(config, "ceo2", out) == 0

    for f in OUTPUTS[:3]:
        assert (out / f).stat().st_size > 0
        assert (out / f).read_bytes() == (out / "versions" / "v001" / f).read_bytes()
    version = json.loads((out / "version.json").read_text())
    assert version["calibration"] == "ceo2" and version["version"] == "v001"
    assert version["poni_sha256"] == provenance.file_digest(out / "geometry.poni")
    assert (out / "calibration.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    ai = pyFAI.load(str(out / "geometry.poni"))
    assert ai.wavelength == pytest.approx(0.6e-10)
    assert ai.detector.shape == TRUE_300K.shape
    assert ai.dist == pytest.approx(TRUE_300K.dist, rel=MAX_DIST_REL)

    index = json.loads((out / "index.json").read_text())
    assert index["current"] == "v001" and [v["version"] for v in index["versions"]] == ["v001"]
    v1 = index["versions"][0]
    digest = provenance.file_digest(image)
    assert v1["source"] == {"image": str(image), "dataset": "/entry/data/data", "frame": 1,
                            "sha256": digest}
    assert v1["settings"]["start"] == calibrations["ceo2"]["start"] | {"rot1": 0, "rot2": 0,
                                                                       "rot3": 0}
    assert v1["residuals"]["rms_px"] < 0.2 and v1["residuals"]["n_rings"] >= 4
    assert v1["geometry"]["dist"] == pytest.approx(ai.dist, rel=1e-12)

    root = nxload(str(out / "calibration.nxs"))
    proc = root["calibration/process"]
    assert float(proc["refined/dist"]) == pytest.approx(ai.dist, rel=1e-12)
    assert float(proc["start/dist"]) == pytest.approx(TRUE_300K.dist * 1.03)
    assert set(proc["uncertainty"].keys()) == {"dist", "poni1", "poni2", "rot1", "rot2"}
    assert float(proc["residuals/rms_residual_px"]) == pytest.approx(v1["residuals"]["rms_px"])
    assert int(proc["residuals/n_points"]) == v1["residuals"]["n_points"] > 100
    assert str(proc["source_sha256"]) == digest
    record = read_provenance(out / "calibration.nxs", "calibration")
    assert record["program"] == "hklflow calibrate_powder"
    assert record["inputs"][str(image)] == digest
    assert str(root["calibration/calibrant"]) == "CeO2"
    det = root["calibration/instrument/detector"]
    assert float(det["distance"]) == pytest.approx(ai.dist * 1e3, rel=1e-12)  # mm
    # NeXus beam centre = the direct beam: pyFAI's Fit2D centre (pixel-edge origin, like ours)
    f2d = ai.getFit2D()
    assert float(det["beam_center_x"]) == pytest.approx(f2d["centerX"], abs=1e-6)
    assert float(det["beam_center_y"]) == pytest.approx(f2d["centerY"], abs=1e-6)

    # identical rerun: the same version, the top-level files identical to it
    mtime = (out / "versions" / "v001" / "calibration.nxs").stat().st_mtime_ns
    assert run_main(config, "ceo2", out) == 0
    index = json.loads((out / "index.json").read_text())
    assert [v["version"] for v in index["versions"]] == ["v001"]
    assert (out / "versions" / "v001" / "calibration.nxs").stat().st_mtime_ns == mtime
    for f in OUTPUTS[:3]:
        assert (out / f).read_bytes() == (out / "versions" / "v001" / f).read_bytes()

    # a new image: v002, and the top-level files follow it
    other = simulate_calibrant_image(TRUE_300K, "CeO2", np.random.default_rng(99))
    write_h5(image, [np.zeros_like(other), other])
    assert run_main(config, "ceo2", out) == 0
    index = json.loads((out / "index.json").read_text())
    assert index["current"] == "v002"
    assert [v["version"] for v in index["versions"]] == ["v001", "v002"]
    assert index["versions"][1]["source"]["sha256"] == provenance.file_digest(image) != digest
    for f in OUTPUTS[:3]:
        assert (out / f).read_bytes() == (out / "versions" / "v002" / f).read_bytes()
    assert json.loads((out / "version.json").read_text())["version"] == "v002"
    assert (out / "versions" / "v001" / "calibration.nxs").stat().st_mtime_ns == mtime


def test_poni_import(tmp_path, image_300k):
    import pyFAI

    poni = tmp_path / "given.poni"
    TRUE_300K.write_poni(poni)
    config = write_experiment(tmp_path, {"imp": {"poni": str(poni), "calibrant": "CeO2"}})
    out = tmp_path / "out"
    assert run_main(config, "imp", out) == 0
    ai = pyFAI.load(str(out / "geometry.poni"))
    for k in ("dist", "poni1", "poni2", "rot1", "rot2", "rot3"):
        assert getattr(ai, k) == pytest.approx(getattr(TRUE_300K, k), abs=1e-12), k
    assert ai.wavelength == pytest.approx(0.6e-10, rel=1e-12)
    index = json.loads((out / "index.json").read_text())
    v1 = index["versions"][0]
    assert v1["method"] == "imported"
    assert v1["source"] == {"poni": str(poni), "sha256": provenance.file_digest(poni)}
    assert (out / "calibration.png").stat().st_size > 0
    # rerun: same version; a changed PONI: a new version
    assert run_main(config, "imp", out) == 0
    TRUE_300K.shifted(d_dist=0.001).write_poni(poni.with_suffix(".tmp"))
    poni.with_suffix(".tmp").replace(poni)
    assert run_main(config, "imp", out) == 0
    index = json.loads((out / "index.json").read_text())
    assert [v["version"] for v in index["versions"]] == ["v001", "v002"]
    assert pyFAI.load(str(out / "geometry.poni")).dist == pytest.approx(TRUE_300K.dist + 0.001)


def test_a_poni_imported_without_a_calibrant(tmp_path):
    """An imported PONI needs no calibrant (hklflow import nxrefine writes none where nothing
    named one): imported, its record's calibrant empty, its picture without rings."""
    from hklflow.files.calibration import read_calibration_summary

    poni = tmp_path / "given.poni"
    TRUE_300K.write_poni(poni)
    config = write_experiment(tmp_path, {"imp": {"poni": str(poni)}})
    out = tmp_path / "out"
    assert run_main(config, "imp", out) == 0
    assert DetectorGeometry.from_poni_file(out / "geometry.poni", "Pilatus300k").dist == \
        pytest.approx(TRUE_300K.dist, abs=1e-12)
    assert read_calibration_summary(out / "calibration.nxs")["calibrant"] == ""
    assert (out / "calibration.png").stat().st_size > 0


def test_poni_for_another_detector_is_refused(tmp_path, capsys):
    poni = tmp_path / "other.poni"
    DetectorGeometry("Pilatus1M", 0.2, 0.05, 0.05, wavelength=0.6).write_poni(poni)
    config = write_experiment(tmp_path, {"imp": {"poni": str(poni), "calibrant": "CeO2"}})
    (tmp_path / "out").mkdir()
    assert run_main(config, "imp", tmp_path / "out") == 1
    assert "calibrate_powder failed: calibrations.imp: PONI file" in capsys.readouterr().err
    assert_no_top_level_outputs(tmp_path / "out")


# --------------------------------------------------------------------------------------
# failures: clear errors, no partial outputs
# --------------------------------------------------------------------------------------
def test_failures_name_the_image_and_leave_no_outputs(tmp_path, image_300k, capsys):
    good = write_h5(tmp_path / "good.h5", [image_300k])
    corrupt = tmp_path / "corrupt.cbf"
    corrupt.write_bytes(b"###CBF: not really\n" + bytes(range(256)) * 50)
    truncated = tmp_path / "truncated.h5"
    truncated.write_bytes(good.read_bytes()[:4000])
    start = start_dict(off_start(TRUE_300K))
    cases = {
        "missing": ({"image": str(tmp_path / "nope.cbf")}, r"nope\.cbf.*not found"),
        "corrupt": ({"image": str(corrupt)}, r"corrupt\.cbf"),
        "truncated": ({"image": str(truncated)}, r"truncated\.h5"),
        "dataset": ({"image": str(good), "dataset": "/entry/instrument/detector/data"},
                    r"good\.h5.*/entry/instrument/detector/data"),
        "frame": ({"image": str(good), "frame": 3}, r"good\.h5.*frame 3 out of range"),
    }
    config = write_experiment(tmp_path, {
        **{name: {**c, "calibrant": "CeO2", "start": start} for name, (c, _) in cases.items()},
        "ok": {"poni": str(tmp_path / "ok.poni"), "calibrant": "CeO2"}})
    TRUE_300K.write_poni(tmp_path / "ok.poni")
    out = tmp_path / "out"
    for name, (_, pattern) in cases.items():
        (out / name).mkdir(parents=True)
        capsys.readouterr()
        assert run_main(config, name, out / name) == 1
        err = capsys.readouterr().err
        assert re.search(pattern, err) and f"calibrations.{name}" in err, (name, err)
        assert_no_top_level_outputs(out / name)
    # a failure after a success: the stale top-level files go, the versions stay
    (out / "ok").mkdir()
    assert run_main(config, "ok", out / "ok") == 0
    config2 = write_experiment(tmp_path, {"ok": {"image": str(corrupt), "calibrant": "CeO2",
                                                 "start": start}})
    assert run_main(config2, "ok", out / "ok") == 1
    assert "corrupt.cbf" in capsys.readouterr().err
    assert_no_top_level_outputs(out / "ok")
    assert (out / "ok" / "versions" / "v001" / "geometry.poni").is_file()
    assert json.loads((out / "ok" / "index.json").read_text())["current"] == "v001"


# --------------------------------------------------------------------------------------
# issue 13: PONI files that disagree with the config, empty images
# --------------------------------------------------------------------------------------
# (refine_geometry's refusal and the step's line in one test: it runs main, so it is here)
@pytest.mark.parametrize("fill,message", [(np.nan, "no finite pixel values"), (0, "no counts")])
def test_images_without_counts_fail_clearly(tmp_path, capsys, fill, message):
    image = np.full(TRUE_300K.shape, fill, dtype=np.float32)
    image[TRUE_300K.detector_mask()] = -1  # the gaps as a Pilatus writes them
    with pytest.raises(CalibrationError, match=rf"calibrations\.c from empty\.h5: {message} in "
                                               r"the image"):
        refine_geometry(image, calibration_params(image="empty.h5",
                                                  start=off_start(TRUE_300K)),
                        source="empty.h5")
    # the step: one line naming the image, no outputs
    path = write_h5(tmp_path / "empty.h5", [image])
    config = write_experiment(tmp_path, {"ceo2": {"image": str(path), "calibrant": "CeO2",
                                                  "start": start_dict(off_start(TRUE_300K))}})
    (tmp_path / "out").mkdir()
    capsys.readouterr()
    assert run_main(config, "ceo2", tmp_path / "out") == 1
    err = capsys.readouterr().err
    assert f"calibrate_powder failed: calibrations.ceo2 from {path}: {message} in the image" in err
    assert "zero-size array" not in err
    assert_no_top_level_outputs(tmp_path / "out")


def test_poni_wavelength_disagreeing_with_the_config(tmp_path, capsys):
    import pyFAI

    poni = tmp_path / "beamline.poni"
    dataclasses.replace(TRUE_300K, wavelength=0.6 * 3.7).write_poni(poni)
    config = write_experiment(tmp_path, {"imp": {"poni": str(poni), "calibrant": "CeO2"}})
    (tmp_path / "out").mkdir()
    assert run_main(config, "imp", tmp_path / "out") == 1
    err = capsys.readouterr().err
    assert (f"calibrate_powder failed: calibrations.imp: PONI file {poni} disagrees with the config: "
            "wavelength 2.220000 A in the PONI file, 0.600000 A in instrument.wavelength; correct "
            "the wrong one, or say which wins with calibrations.imp.poni_mismatch: "
            "{wavelength: use_poni} (or use_config)") in err
    assert_no_top_level_outputs(tmp_path / "out")
    # the config says which wins
    for rule, expected in (("use_poni", 2.22), ("use_config", 0.6)):
        config = write_experiment(tmp_path, {"imp": {"poni": str(poni), "calibrant": "CeO2",
                                                     "poni_mismatch": {"wavelength": rule}}})
        out = tmp_path / rule
        assert run_main(config, "imp", out) == 0, rule
        ai = pyFAI.load(str(out / "geometry.poni"))
        assert ai.wavelength == pytest.approx(expected * 1e-10, rel=1e-12)
        assert ai.dist == pytest.approx(TRUE_300K.dist, rel=1e-12)  # the PONI's geometry
        notes = json.loads((out / "index.json").read_text())["versions"][0]["notes"]
        assert any(f"calibrations.imp.poni_mismatch.wavelength: {rule}" in n for n in notes)


def test_poni_orientation_disagreeing_with_the_config(tmp_path, capsys):
    import pyFAI
    from nexusformat.nexus import nxload

    poni = tmp_path / "o2.poni"
    o2 = dataclasses.replace(TRUE_300K, orientation=2)
    o2.write_poni(poni)
    assert '"orientation": 2' in poni.read_text()
    # the config key missing (pyFAI's default 3): refused, naming the file, both values, the key
    config = write_experiment(tmp_path, {"imp": {"poni": str(poni), "calibrant": "CeO2"}})
    (tmp_path / "out").mkdir()
    assert run_main(config, "imp", tmp_path / "out") == 1
    err = capsys.readouterr().err
    assert (f"calibrations.imp: PONI file {poni} disagrees with the config: detector orientation "
            "2 in the PONI file, 3 in instrument.detector.orientation; set "
            "instrument.detector.orientation to how the detector lays out its frames") in err
    assert "calibrations.imp.poni_mismatch: {orientation: use_config}" in err
    assert_no_top_level_outputs(tmp_path / "out")
    # the key set: imported as it is, the orientation kept in every file that records it
    config = write_experiment(tmp_path, {"imp": {"poni": str(poni), "calibrant": "CeO2"}},
                              detector={"name": "Pilatus300k", "orientation": 2})
    out = tmp_path / "o2"
    assert run_main(config, "imp", out) == 0
    assert int(pyFAI.load(str(out / "geometry.poni")).detector.orientation) == 2
    back = DetectorGeometry.from_poni_file(out / "geometry.poni", "Pilatus300k", 2)
    assert back.orientation == 2 and back.dist == pytest.approx(o2.dist, rel=1e-12)
    assert int(nxload(str(out / "calibration.nxs"))["calibration/instrument/detector/orientation"]) == 2
    # the config says its orientation wins: distance and PONI kept, pixels mapped its way
    config = write_experiment(tmp_path, {"imp": {"poni": str(poni), "calibrant": "CeO2",
                                                 "poni_mismatch": {"orientation": "use_config"}}})
    out = tmp_path / "config_wins"
    assert run_main(config, "imp", out) == 0
    g = DetectorGeometry.from_poni_file(out / "geometry.poni", "Pilatus300k")
    assert g == dataclasses.replace(o2, orientation=3)
    # a PONI without a recorded orientation is pyFAI's default 3: says so when refused
    old = tmp_path / "old.poni"
    old.write_text("Detector: Pilatus300k\nDistance: 0.15\nPoni1: 0.05\nPoni2: 0.04\nRot1: 0\n"
                   "Rot2: 0\nRot3: 0\nWavelength: 6e-11\n")
    config = write_experiment(tmp_path, {"imp": {"poni": str(old), "calibrant": "CeO2"}},
                              detector={"name": "Pilatus300k", "orientation": 2})
    capsys.readouterr()
    assert run_main(config, "imp", tmp_path / "old_out") == 1
    assert ("detector orientation 3 (none recorded: pyFAI's default) in the PONI file, 2 in "
            "instrument.detector.orientation") in capsys.readouterr().err
    # only the config's orientation can win (it is how every frame is laid out)
    config = write_experiment(tmp_path, {"imp": {"poni": str(poni), "calibrant": "CeO2",
                                                 "poni_mismatch": {"orientation": "use_poni"}}})
    with pytest.raises(ConfigError, match=r"calibrations\.imp\.poni_mismatch\.orientation"):
        load_experiment(config)


def test_poni_sensor_disagreeing_with_the_config(tmp_path, capsys):
    """instrument.detector.sensor set, an imported PONI that corrects no parallax (or
    another sensor's): refused, naming both, unless poni_mismatch says the config's wins;
    a PONI that corrects the config's sensor is imported as it is, and says so."""
    from nexusformat.nexus import nxload

    cdte = {"material": "CdTe", "thickness": 0.001}
    plain = tmp_path / "plain.poni"
    TRUE_300K.write_poni(plain)
    detector = {"name": "Pilatus300k", "sensor": cdte}
    config = write_experiment(tmp_path, {"imp": {"poni": str(plain), "calibrant": "CeO2"}},
                              detector=detector)
    (tmp_path / "out").mkdir()
    assert run_main(config, "imp", tmp_path / "out") == 1
    err = capsys.readouterr().err
    assert (f"calibrations.imp: PONI file {plain} disagrees with the config: the PONI file's "
            "geometry corrects the parallax of no sensor, instrument.detector.sensor is CdTe "
            "1000 um; set instrument.detector.sensor to the PONI's") in err
    assert "calibrations.imp.poni_mismatch: {sensor: use_config}" in err
    assert_no_top_level_outputs(tmp_path / "out")
    # the config's sensor said to win: the PONI's place, the config's sensor, in every file
    config = write_experiment(tmp_path, {"imp": {"poni": str(plain), "calibrant": "CeO2",
                                                 "poni_mismatch": {"sensor": "use_config"}}},
                              detector=detector)
    out = tmp_path / "wins"
    assert run_main(config, "imp", out) == 0
    g = DetectorGeometry.from_poni_file(out / "geometry.poni", "Pilatus300k")
    assert g == TRUE_300K.with_sensor(cdte)
    assert "Parallax: True" in (out / "geometry.poni").read_text()
    det = nxload(str(out / "calibration.nxs"))["calibration/instrument/detector"]
    assert str(det["sensor_material"]) == "CdTe" and float(det["sensor_thickness"]) == 0.001
    # a PONI made with the sensor: no mismatch
    config = write_experiment(tmp_path, {"imp": {"poni": str(out / "geometry.poni"),
                                                 "calibrant": "CeO2"}}, detector=detector)
    assert run_main(config, "imp", tmp_path / "again") == 0
    # ... and the same PONI with no sensor in the config: refused the other way round
    config = write_experiment(tmp_path, {"imp": {"poni": str(out / "geometry.poni"),
                                                 "calibrant": "CeO2"}})
    capsys.readouterr()
    assert run_main(config, "imp", tmp_path / "none") == 1
    assert ("the PONI file's geometry corrects the parallax of CdTe 1000 um, "
            "instrument.detector.sensor is not set") in capsys.readouterr().err
