"""The typed parts of the jobs' settings (hklflow.settings.params): every key of every rule's
settings is read through a Params class, each part round-trips through its text, refuses a
value of the wrong type naming the field, and settings typed by hand are checked against the
schema (whose enums no class checks a second time); what a part checks itself (a
calibration's settings and its RMS bound, the peak search's chunks of frames)."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from hklflow.base.errors import ConfigError
from hklflow.planning.config import load_experiment
from hklflow.planning.jobs import JobSettings
from hklflow.settings.params import (CalibrationParams, DetectorParams, DetectorPositionsParams,
                                     GoniometerParams, GridParams, HandTypedSettings,
                                     IndexingParams, IngestParams, MaskParams, ModelInputsParams,
                                     NXRefineWrapperParams, PDFParams, PDFSeriesParams,
                                     PeakSearchParams, RefinementParams, SampleParams,
                                     SampleShapeParams, ScanParams, SeriesParams, SliceParams,
                                     StatisticsParams, TemperaturesParams, TotalPDFParams,
                                     TransformParams, read_settings, read_settings_file,
                                     settings_digest, settings_json, settings_part)
from hklflow.settings.scaling import ScalingParams
from hklflow.simulation.experiment import config_texts, preset

from experiment_helpers import TRUE_300K, calibration_params, edit_config, off_start

# the parts of every rule's settings, in the order the step reads them
RULE_PARTS = {
    "calibrate_powder": (CalibrationParams,),
    "ingest_scan": (ScanParams, GoniometerParams, IngestParams),
    "find_peaks": (PeakSearchParams, DetectorParams),
    "index_parent": (IndexingParams, RefinementParams, SampleParams),
    "refine_temperature": (RefinementParams,),
    "define_grid": (GridParams, SampleParams, DetectorParams, DetectorPositionsParams),
    "mask_scan": (MaskParams, DetectorParams),
    "transform_frames": (TransformParams, DetectorParams, SampleShapeParams),
    "sum_chunks": (SliceParams, TransformParams, DetectorParams, SampleShapeParams),
    "scale_entries": (ScalingParams,),
    "merge_entries": (SliceParams, StatisticsParams),
    "symmetrize": (SliceParams, SampleParams),
    "temperature_series": (SeriesParams, SampleParams, TemperaturesParams),
    "model_inputs": (ModelInputsParams,),
    "nxrefine_wrapper": (SampleParams, NXRefineWrapperParams),
    "total_pdf": (TotalPDFParams, SampleParams),
    "delta_pdf": (PDFParams, SampleParams),
    "pdf_temperature_series": (PDFSeriesParams, SampleParams, TemperaturesParams),
}
# parts a job's settings hold only when the config gives them (the texts of before stay)
OPTIONAL_PARTS = (SampleShapeParams,)


def not_the_default(cfg):
    """A config whose optional parts are all given: a fingerprint of every byte, model
    inputs, a monitor reference, another detector orientation, a mask file."""
    cfg["instrument"]["detector"] = {"name": cfg["instrument"]["detector"], "orientation": 2,
                                     "mask_file": "config/mask.h5", "trusted_max": 100000}
    cfg.setdefault("reduction", {}).setdefault("ingest", {})["fingerprint"] = "full"
    cfg["reduction"].setdefault("transform", {})["monitor_reference"] = 1000.0
    cfg["instrument"]["air_path"] = 0.2
    cfg["samples"]["tiny"]["shape"] = {"kind": "plate", "normal": [0, 0, 1],
                                       "thickness": 1e-4, "formula": "GaAs", "density": 5.32}
    cfg["output"] = {"model_inputs": ["yell", "rmc_discord"], "nxrefine_wrapper": True}


@pytest.fixture(scope="module", params=["defaults", "not the defaults"])
def texts(request, tmp_path_factory):
    """Every rule's settings text of the tiny experiment (one job of each)."""
    d = tmp_path_factory.mktemp("experiment")
    (d / "config").mkdir()
    for name, text in config_texts(preset("tiny"), "hdf5").items():
        (d / "config" / name).write_text(text)
    if request.param != "defaults":
        edit_config(d, not_the_default)
    jobs = JobSettings(load_experiment(d / "config/config.yaml", base_dir=d))
    args = {"calibrate_powder": ("ceo2",), "ingest_scan": ("tiny", "300K", "f1"),
            "merge_entries": ("transform",), "define_grid": ("tiny", lambda c: f"{c}.poni")}
    return {rule: getattr(jobs, rule)(*args.get(rule, ("tiny",) if rule in (
        "index_parent", "symmetrize", "temperature_series", "nxrefine_wrapper", "total_pdf",
        "delta_pdf", "pdf_temperature_series", "transform_frames", "sum_chunks") else ()))
        for rule in RULE_PARTS}


def test_every_key_of_every_rule_is_a_typed_part_and_the_text_round_trips(texts):
    """Read by hand (checked against the schema too) or from the workflow's file, each
    rule's parts give back exactly its text: nothing is read from the settings but through a
    class, and a job's text does not change by being read."""
    for rule, classes in RULE_PARTS.items():
        text = texts[rule]
        keys = set(json.loads(text))
        covered = set()
        for cls in classes:
            covered |= {cls.NAME} if cls.NAME else {f.name for f in cls.config_fields()}
        assert covered >= keys, (rule, sorted(keys - covered))
        for settings in (read_settings(text), json.loads(text)):
            parts = [settings_part(settings, cls) for cls in classes
                     if cls not in OPTIONAL_PARTS or cls.NAME in settings]
            assert settings_json(*parts) == text, rule


def test_detector_means_the_instrument_detector_part_wherever_it_is_given(texts):
    given = [rule for rule, text in texts.items() if "detector" in json.loads(text)]
    assert sorted(given) == ["define_grid", "find_peaks", "mask_scan", "sum_chunks",
                             "transform_frames"]
    for rule in given:
        detector = settings_part(json.loads(texts[rule]), DetectorParams)
        assert detector == settings_part(json.loads(texts["find_peaks"]), DetectorParams), rule


def _wrong_value(f: dataclasses.Field):
    """A JSON value no annotation of the field's allows."""
    return [1] if "dict" in str(f.type) else {"not": "this"}


def test_every_part_refuses_a_value_of_the_wrong_type_naming_the_field(texts):
    for rule, classes in RULE_PARTS.items():
        settings = json.loads(texts[rule])
        for cls in classes:
            if cls in OPTIONAL_PARTS and cls.NAME not in settings:
                continue
            for f in cls.config_fields():
                if f.name not in (settings[cls.NAME] if cls.NAME else settings):
                    continue  # (left out as its default)
                bad = json.loads(texts[rule])
                (bad[cls.NAME] if cls.NAME else bad)[f.name] = _wrong_value(f)
                with pytest.raises(ConfigError, match=f"'{f.name}'.*: expected "):
                    settings_part(bad, cls)


def test_true_is_not_a_number_and_a_missing_or_unknown_key_is_named(texts):
    settings = json.loads(texts["find_peaks"])
    settings["detector"]["orientation"] = True
    with pytest.raises(ConfigError, match=r"--settings detector: 'orientation' "
                                          r"\(instrument\.detector\.orientation\): expected an "
                                          r"integer, got True"):
        settings_part(settings, DetectorParams)
    settings = json.loads(texts["temperature_series"])
    del settings["temperatures"]
    with pytest.raises(ConfigError, match=r"--settings: missing setting\(s\) \['temperatures'\]"):
        settings_part(settings, TemperaturesParams)
    settings = json.loads(texts["model_inputs"])
    with pytest.raises(ConfigError, match=r"--settings statistics: unknown setting\(s\) "
                                          r"\['radius'\]"):
        settings_part({**settings, "statistics": {"radius": 0.2}}, StatisticsParams)


@pytest.mark.parametrize("rule, part, key, value, words", [
    ("find_peaks", "detector", "orientation", 5, "5 is not one of [1, 2, 3, 4]"),
    ("find_peaks", "find_peaks", "method", "peaky", "'peaky' is not one of"),
    ("calibrate_powder", "calibration", "refine", ["dist", "tilt"], "'tilt' is not one of"),
    ("calibrate_powder", "calibration", "poni_mismatch", {"orientation": "use_poni"},
     "'use_poni' is not one of ['use_config']"),
    ("calibrate_powder", "calibration", "orientation", 0, "0 is not one of"),
    ("transform_frames", "transform", "kinds", ["volume"], "'volume' is not one of"),
    ("transform_frames", "transform", "bad_monitor_frames", "skip", "'skip' is not one of"),
    ("index_parent", "refinement", "unusable_entries", "drop", "'drop' is not one of"),
    ("delta_pdf", "pdf", "radius_units", "nm", "'nm' is not one of"),
    ("ingest_scan", "", "detector_orientation", 7, "7 is not one of"),
    ("ingest_scan", "goniometer", "scan_sense", 2, "2 is not one of [1, -1]"),
    ("ingest_scan", "scan", "nframes", 0, "0 is less than the minimum of 1"),
    ("model_inputs", "", "programs", ["excel"], "'excel' is not one of"),
    ("nxrefine_wrapper", "", "kinds", ["volume"], "'volume' is not one of"),
    ("index_parent", "sample", "cell", [5, 5, 7, 90, 90], "is too short"),
])
def test_settings_typed_by_hand_are_checked_against_the_schema(texts, rule, part, key, value,
                                                              words):
    """The schema's enums (and bounds) are checked once, by the schema: the config when it
    is read, a --settings typed by hand when a step reads it."""
    settings = json.loads(texts[rule])
    (settings[part] if part else settings)[key] = value
    cls = next(c for c in RULE_PARTS[rule] if c.NAME == part and (
        part or key in {f.name for f in c.config_fields()}))
    with pytest.raises(ConfigError, match=f"'{key}' .*: ") as e:
        settings_part(HandTypedSettings(settings), cls)
    assert words in str(e.value), str(e.value)


def test_only_settings_typed_by_hand_are_checked_against_the_schema(texts, tmp_path):
    """The workflow's settings file was made from the validated config (its name is the
    digest of its text): a step does not read the schema for it."""
    text = texts["find_peaks"]
    assert isinstance(read_settings(text), HandTypedSettings)
    path = tmp_path / f"{settings_digest(text)}.json"
    path.write_text(text)
    assert type(read_settings_file(path)) is dict
    assert read_settings_file(path) == read_settings(text)


def test_a_part_left_out_as_its_default_keeps_the_texts_made_before_it(texts):
    ingest = IngestParams("Pilatus300k", 3)
    assert ingest.detector_sensor is None and "detector_sensor" not in ingest.settings()
    assert settings_part({"detector_name": "Pilatus300k", "detector_orientation": 3},
                         IngestParams) == ingest
    sensor = {"material": "Si", "thickness": 0.00045}
    assert IngestParams("Pilatus300k", 3, sensor).settings()["detector_sensor"] == sensor
    # reduction.ingest.fingerprint is planning's check's, never ingest's (issue 86)
    assert "fingerprint" not in texts["ingest_scan"]


def test_two_parts_giving_one_key_are_refused():
    with pytest.raises(ValueError, match="'temperatures'"):
        settings_json(TemperaturesParams(("300K",)), TemperaturesParams(("100K",)))


def test_a_step_refuses_a_bad_enum_typed_by_hand(texts, tmp_path, capsys):
    from hklflow.steps import ingest_scan

    settings = json.loads(texts["ingest_scan"])
    settings["detector_orientation"] = 7
    out = tmp_path / "scan.nxs"
    assert ingest_scan.main(["--settings", json.dumps(settings), "--poni", "x.poni", "--version",
                             "version.json", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "'detector_orientation' (instrument.detector.orientation): 7 is not one of" in err, err
    assert not out.exists()


def test_the_sample_part_makes_its_crystal_and_names_a_bad_cell():
    sample = SampleParams("s1", "I 4/m m m", (3.8, 3.8, 13.2, 90.0, 90.0, 90.0))
    assert sample.crystal().laue_group == "4/mmm"
    with pytest.raises(ConfigError, match=r"samples\.s1: cell .* not compatible"):
        SampleParams("s1", "I 4/m m m", (3.8, 3.9, 13.2, 90.0, 90.0, 90.0)).crystal()


def test_chunk_frames_auto_holds_about_24_mb_of_frames():
    """'auto' (the default): whole frames of about 24 MB, at least one, at least the threads;
    a number is taken as it is (at least the threads)."""
    auto = PeakSearchParams.defaults()
    assert auto.chunk_frames == "auto"
    int32 = 4
    assert auto.frames_per_chunk(1679 * 1475 * int32) == 2  # Pilatus 2M
    assert auto.frames_per_chunk(2527 * 2463 * int32) == 1  # Pilatus 6M
    assert auto.frames_per_chunk(619 * 487 * int32) == 19  # Pilatus 300k
    assert auto.frames_per_chunk(4371 * 4150 * int32) == 1  # Eiger 16M: more than 24 MB
    assert auto.frames_per_chunk(1679 * 1475 * int32, threads=4) == 4
    assert PeakSearchParams.defaults(chunk_frames=16).frames_per_chunk(10**9) == 16
    assert PeakSearchParams.defaults(chunk_frames=3).frames_per_chunk(1, threads=8) == 8
    for bad in (0, "16", 2.5, "Auto"):
        with pytest.raises(ConfigError, match="chunk_frames: expected 'auto' or an integer >= 1"):
            PeakSearchParams.defaults(chunk_frames=bad)


def test_params_are_validated():
    """What the schema cannot say of a calibration (the schema's enums - refine, orientation,
    poni_mismatch - are its own to check: settings typed by hand, above)."""
    calibration_params(start=off_start(TRUE_300K))
    for bad, match in [({"start": None}, r"calibrations\.c\.start: expected a rough starting geometry"),
                       ({"image": None}, "give an image"),
                       ({"max_rings": 0}, r"calibrations\.c\.max_rings"),
                       ({"wavelength": -1.0}, r"instrument\.wavelength"),
                       ({"refine": ("rot3",)}, "at least one parameter powder rings can see"),
                       ({"max_rms_px": 0.0}, r"calibrations\.c\.max_rms_px: expected an RMS")]:
        with pytest.raises(ConfigError, match=match):
            calibration_params(**{"start": off_start(TRUE_300K), **bad})


def test_rms_bound_is_a_fraction_of_a_pixel():
    # the RMS radial error of points known only to their pixel: uniform over a unit square,
    # projected on any direction (checked by sampling, not by the formula under test)
    pts = np.random.default_rng(0).uniform(-0.5, 0.5, (200_000, 2))
    angle = np.random.default_rng(1).uniform(0, 2 * np.pi, 200_000)
    radial = pts[:, 0] * np.cos(angle) + pts[:, 1] * np.sin(angle)
    assert CalibrationParams.DEFAULT_MAX_RMS_PX == pytest.approx(np.sqrt(np.mean(radial ** 2)),
                                                                 rel=0.01)
    assert (calibration_params(start=off_start(TRUE_300K)).rms_bound_px
            == CalibrationParams.DEFAULT_MAX_RMS_PX)
    assert calibration_params(start=off_start(TRUE_300K), max_rms_px=0.7).rms_bound_px == 0.7
