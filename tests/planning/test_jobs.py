"""hklflow.planning.jobs: the settings each job receives (JobSettings), as the Snakefile
passes them: each rule only the settings it uses, so that a changed setting reruns only the
jobs that use it."""
from __future__ import annotations

import json

from conftest import step_settings
from volume_helpers import make_experiment


def test_settings_carry_what_the_step_uses(tmp_path, monkeypatch):
    """delta_pdf receives every reduction.pdf setting it uses; total_pdf only the taper and
    the pictures (a changed hole radius must not rerun it)."""
    monkeypatch.chdir(tmp_path)
    exp = make_experiment(tmp_path)
    delta = json.loads(step_settings(exp, "delta_pdf", "tetra"))
    assert set(delta["pdf"]) == {"radius", "radius_units", "extra_positions", "fill_order",
                                 "fill_eps", "q_max", "subtract_mean", "errors", "slices"}
    total = json.loads(step_settings(exp, "total_pdf", "tetra"))
    assert set(total) == {"q_max", "subtract_mean", "errors", "slices", "sample"}


def test_model_inputs_are_of_the_volumes_asked_for(tmp_path, monkeypatch):
    """output.model_input_volumes: by default the symmetrised masked_transform (the diffuse
    scattering), else the nearest volume made; a volume the config does not make is refused
    before any job, naming what is made."""
    import pytest
    import yaml

    from hklflow.base.errors import ConfigError
    from hklflow.planning.config import load_experiment
    from hklflow.planning.jobs import model_input_volumes

    monkeypatch.chdir(tmp_path)
    make_experiment(tmp_path)
    path = tmp_path / "config" / "config.yaml"
    base = yaml.safe_load(path.read_text())

    def volumes(output, **reduction):
        cfg = {**base, "output": output,
               "reduction": {**base["reduction"], "pdf": {"enabled": False}, **reduction}}
        path.write_text(yaml.safe_dump(cfg))
        return model_input_volumes(load_experiment(path))

    assert volumes({}) == []
    programs = {"model_inputs": ["yell"]}
    assert volumes(programs) == ["masked_transform_symmetrized"]
    assert volumes(programs, merge={"symmetrize": False}) == ["masked_transform"]
    assert volumes(programs, transform={"kinds": ["transform"]}) == ["transform_symmetrized"]
    assert volumes({**programs, "model_input_volumes": ["transform", "masked_transform"]}) == [
        "transform", "masked_transform"]
    with pytest.raises(ConfigError, match=r"field 'output.model_input_volumes.0': "
                       r"transform_symmetrized is not made \(reduction.merge.symmetrize is "
                       r"false\): expected one of \['transform', 'masked_transform'\]"):
        volumes({**programs, "model_input_volumes": ["transform_symmetrized"]},
                merge={"symmetrize": False})
    with pytest.raises(ConfigError, match="masked_transform is not among reduction.transform"):
        volumes({**programs, "model_input_volumes": ["masked_transform"]},
                transform={"kinds": ["transform"]})


def test_the_sensor_reaches_the_jobs_that_map_pixels_and_changes_nothing_unset(tmp_path):
    """instrument.detector.sensor reaches calibrate_powder, ingest_scan and every job given
    the detector part (find_peaks, define_grid, mask_scan, transform_frames, sum_chunks);
    without it every job's settings are the texts they were before it existed (no rerun)."""
    import yaml

    from hklflow.planning.config import load_experiment
    from hklflow.planning.jobs import JobSettings
    from hklflow.simulation.experiment import config_texts, preset

    for name, text in config_texts(preset("tiny"), "hdf5").items():
        (tmp_path / "config").mkdir(exist_ok=True)
        (tmp_path / "config" / name).write_text(text)

    def texts():
        s = JobSettings(load_experiment(tmp_path / "config/config.yaml", base_dir=tmp_path))
        return {"calibrate_powder": s.calibrate_powder("ceo2"),
                "ingest_scan": s.ingest_scan("tiny", "300K", "f1"),
                "find_peaks": s.find_peaks(), "mask_scan": s.mask_scan(),
                "transform_frames": s.transform_frames("tiny"), "sum_chunks": s.sum_chunks("tiny"),
                "define_grid": s.define_grid("tiny", lambda c: f"{c}.poni"),
                "refine_temperature": s.refine_temperature()}

    plain = texts()
    assert not any("sensor" in t for t in plain.values())
    cfg_path = tmp_path / "config/config.yaml"
    cfg = yaml.safe_load(cfg_path.read_text())
    cfg["instrument"]["detector"] = {"name": cfg["instrument"]["detector"], "sensor": None}
    cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    assert texts() == plain  # (null, as written: the default)
    cfg["instrument"]["detector"]["sensor"] = {"material": "CdTe", "thickness": 0.001}
    cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    with_sensor = texts()
    want = {"material": "CdTe", "thickness": 0.001}
    assert json.loads(with_sensor["calibrate_powder"])["calibration"]["sensor"] == want
    assert json.loads(with_sensor["ingest_scan"])["detector_sensor"] == want
    for rule in ("find_peaks", "mask_scan", "transform_frames", "sum_chunks", "define_grid"):
        assert json.loads(with_sensor[rule])["detector"]["sensor"] == want, rule
    # the refinements read it from the scan files (files.h5.detector_group)
    assert with_sensor["refine_temperature"] == plain["refine_temperature"]
