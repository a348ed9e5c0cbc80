"""Config and scans table: validated once, errors name the file, the row and the field."""
from __future__ import annotations

import copy

import numpy as np
import pytest

from hklflow.planning.config import ConfigError, load_experiment
from hklflow.settings.params import CalibrationParams, DetectorParams
from hklflow.simulation.experiment import config_texts, preset

from experiment_helpers import edit_config, edit_table


@pytest.fixture
def experiment_dir(tmp_path):
    for name, text in config_texts(preset("tiny"), "hdf5").items():
        (tmp_path / "config").mkdir(exist_ok=True)
        (tmp_path / "config" / name).write_text(text)
    return tmp_path


def load(d):
    return load_experiment(d / "config" / "config.yaml", base_dir=d)


def test_valid_config_resolves_with_defaults(experiment_dir):
    exp = load(experiment_dir)
    assert exp.instrument.polarization_fraction == 0.99  # schema default
    cal = CalibrationParams.for_calibration(exp.raw, "ceo2")
    assert cal.refine == ("dist", "poni1", "poni2", "rot1", "rot2", "rot3")
    assert cal.start["rot1"] == 0.0
    assert exp.instrument.detector == DetectorParams("Pilatus300k", None, None, "/entry/mask")
    s = exp.scan("tiny", "300K", "f2")
    assert s.offsets == {"omega": -1.0, "chi": 1.5}
    assert s.dataset == "/entry/data/data" and s.monitor == ""
    assert exp.temperatures_of("tiny") == ["100K", "300K"]


@pytest.mark.parametrize("change, field, words", [
    (lambda c: c["instrument"].pop("wavelength"), "instrument", "wavelength"),
    (lambda c: c["instrument"].__setitem__("wavelength", "short"), "instrument.wavelength", "number"),
    (lambda c: c["instrument"]["goniometer"].__setitem__("scan_axis", [0, 1]), "instrument.goniometer.scan_axis", "short"),
    (lambda c: c["instrument"]["goniometer"].__setitem__("scan_axis", [0, 0, 0]), "instrument.goniometer", "non-zero"),
    (lambda c: c["instrument"].__setitem__("detector", "Pilatus9000"), "instrument.detector.name", "Pilatus9000"),
    (lambda c: c["instrument"].__setitem__("detector", {"name": "Pilatus300k", "trusted": 5}), "instrument.detector", "trusted"),
    (lambda c: c["samples"]["tiny"].__setitem__("cell", [5, 5, 7, 90, 90]), "samples.tiny.cell", "short"),
    (lambda c: c["samples"]["tiny"].__setitem__("cell", [5, 6, 7, 90, 90, 90]), "samples.tiny", "not compatible"),
    (lambda c: c["samples"]["tiny"].__setitem__("space_group", "P 7"), "samples.tiny", "unknown space group"),
    (lambda c: c["samples"]["tiny"]["parent"].__setitem__("temperature", 42), "samples.tiny.parent.temperature", "42K"),
    (lambda c: c["calibrations"]["ceo2"].__setitem__("calibrant", "Unobtainium"), "calibrations.ceo2.calibrant", "Unobtainium"),
    (lambda c: c["calibrations"]["ceo2"].pop("start"), "calibrations.ceo2.start", "starting geometry"),
    (lambda c: c["calibrations"]["ceo2"].pop("calibrant"), "calibrations.ceo2.calibrant", "calibrant name is needed to refine"),
    (lambda c: c["calibrations"]["ceo2"].__setitem__("refine", ["dist", "tilt"]), "calibrations.ceo2.refine.1", "tilt"),
    (lambda c: c.__setitem__("colour", "blue"), "(top level)", "colour"),
])
def test_bad_config_names_file_and_field(experiment_dir, change, field, words):
    edit_config(experiment_dir, change)
    with pytest.raises(ConfigError) as e:
        load(experiment_dir)
    msg = str(e.value)
    assert "config.yaml" in msg
    assert f"'{field}" in msg, msg
    assert words in msg, msg


@pytest.mark.parametrize("row, column, value, words", [
    (2, "nframes", "many", "'nframes'"),
    (2, "nframes", "0", "'nframes'"),
    (3, "phi_step", "0", "'phi_step'"),
    (1, "temperature", "-5", "'temperature'"),
    (4, "sample", "nosuch", "'sample'"),
    (2, "entry", "f1", "repeats row 1"),
    (3, "omega", "abc", "'omega'"),
])
def test_bad_table_row_names_file_row_and_field(experiment_dir, row, column, value, words):
    edit_table(experiment_dir, row, column, value)
    with pytest.raises(ConfigError) as e:
        load(experiment_dir)
    msg = str(e.value)
    assert "scans.tsv" in msg and f"row {row}" in msg, msg
    assert words in msg, msg


def test_unknown_column_is_named(experiment_dir):
    p = experiment_dir / "config" / "scans.tsv"
    p.write_text(p.read_text().replace("chi", "kappa", 1))
    with pytest.raises(ConfigError, match=r"scans.tsv: unknown column\(s\) \['kappa'\]"):
        load(experiment_dir)


def test_calibration_selection_by_valid_for_and_by_column(experiment_dir):
    def two_calibrations(c):
        c["calibrations"]["cold"] = copy.deepcopy(c["calibrations"]["ceo2"])
        c["calibrations"]["cold"]["valid_for"] = {"temperatures": [0, 150]}
    edit_config(experiment_dir, two_calibrations)
    exp = load(experiment_dir)
    assert exp.scan("tiny", "100K", "f1").calibration == "cold"
    assert exp.scan("tiny", "300K", "f1").calibration == "ceo2"
    p = experiment_dir / "config" / "scans.tsv"
    lines = p.read_text().splitlines()
    lines = [lines[0] + "\tcalibration"] + [ln + ("\tceo2" if i == 3 else "\t") for i, ln in enumerate(lines[1:], 1)]
    p.write_text("\n".join(lines) + "\n")
    exp = load(experiment_dir)
    assert exp.scan("tiny", "100K", "f1").calibration == "ceo2"  # row 3 names it


def test_scan_without_valid_calibration_is_an_error(experiment_dir):
    edit_config(experiment_dir, lambda c: c["calibrations"]["ceo2"].__setitem__("valid_for", {"entries": ["f1"]}))
    with pytest.raises(ConfigError, match=r"scans.tsv: row 2: no calibration is valid for scan tiny/300K/f2"):
        load(experiment_dir)


def test_missing_files_are_named(tmp_path):
    with pytest.raises(ConfigError, match="nope.yaml: cannot read"):
        load_experiment(tmp_path / "nope.yaml")
    (tmp_path / "c.yaml").write_text("experiment: [unclosed")
    with pytest.raises(ConfigError, match="c.yaml: not valid YAML"):
        load_experiment(tmp_path / "c.yaml")


@pytest.mark.parametrize("written, field, shown", [
    ("1e-3", "wavelength", "write 1.0e-3"),  # YAML 1.1: text without a dot
    ("1.0e3", "wavelength", "write 1.0e+3"),  # ... or without the exponent's sign
    ("-2E2", "polarization_fraction", "write -2.0e+2"),
    ("'0.5'", "polarization_fraction", "(quoted, or not in a form YAML reads as a number): "
                                       "write 0.5"),
    ("1e6", "detector: {name: Pilatus300k, trusted_max", "write 1000000"),  # an integer field
])
def test_a_number_yaml_reads_as_text_says_how_to_write_it(experiment_dir, written, field, shown):
    """Every number field: the value named as text read, and the form YAML 1.1 reads as a
    number; 'nan' and words stay jsonschema's "is not of type"."""
    p = experiment_dir / "config" / "config.yaml"
    text = p.read_text()
    if field.startswith("detector"):
        text = text.replace("detector: Pilatus300k", f"{field}: {written}}}")
    else:
        text = "\n".join(f"  {field}: {written}" if ln.startswith(f"  {field}:") else ln
                         for ln in text.splitlines()) + "\n"
    p.write_text(text)
    with pytest.raises(ConfigError) as e:
        load(experiment_dir)
    assert "was read as text, not a number" in str(e.value) and shown in str(e.value), str(e.value)
    for word in ("nan", "high"):
        p.write_text(text.replace(f"{field}: {written}", f"{field}: {word}"))
        with pytest.raises(ConfigError, match=f"'{word}' is not of type"):
            load(experiment_dir)


def test_yaml_syntax_error_names_file_line_and_column(experiment_dir):
    """Snakemake's own message for it is "Config file is not valid JSON or YAML": no line, no
    column.  Ours: the file, and line and column counted from 1 as an editor does."""
    from hklflow.planning.config import check_yaml_syntax

    p = experiment_dir / "config" / "config.yaml"
    lines = p.read_text().splitlines()
    n = next(i for i, ln in enumerate(lines) if ln.startswith("  wavelength:"))
    lines[n] = lines[n].replace("wavelength: ", "wavelength: [")  # never closed
    p.write_text("\n".join(lines) + "\n")
    column = lines[n + 1].index(":") + 1  # where the parser gives up: the next key's ':'
    expected = (f"config.yaml: not valid YAML: line {n + 2}, column {column}: expected ',' or "
                f"']', but got ':' (while parsing a flow sequence at line {n + 1}, column 15)")
    with pytest.raises(ConfigError) as e:
        load(experiment_dir)
    assert expected in str(e.value) and "\n" not in str(e.value), str(e.value)
    assert str(e.value).startswith(str(p))
    with pytest.raises(ConfigError) as e2:  # what `hklflow run` checks before Snakemake starts
        check_yaml_syntax([experiment_dir / "nope.yaml", p])
    assert str(e2.value) == str(e.value)
    # a tab in the indentation: named as such
    lines[n] = "\twavelength: 0.5"
    p.write_text("\n".join(lines) + "\n")
    with pytest.raises(ConfigError, match=rf"config.yaml: not valid YAML: line {n + 1}, column 1: "
                                          r"found a tab that cannot start any token \(YAML "
                                          r"indents with spaces, not tabs\)$"):
        load(experiment_dir)


def test_every_schema_problem_is_listed_one_line_each(experiment_dir):
    """A missing wavelength used to hide behind the first problem ("(and 1 more
    problem(s))"): every problem is listed, a line each with its field."""
    def two_problems(c):
        c["instrument"].pop("wavelength")
        c["instrument"]["polarization_fraction"] = "high"
    edit_config(experiment_dir, two_problems)
    with pytest.raises(ConfigError) as e:
        load(experiment_dir)
    assert str(e.value).splitlines() == [
        f"{experiment_dir / 'config' / 'config.yaml'}: 2 problems:",
        "  field 'instrument': 'wavelength' is a required property",
        "  field 'instrument.polarization_fraction': 'high' is not of type 'number'"]
    # a schema problem and a NaN of another field: both; a NaN where an integer is
    # expected: once
    edit_config(experiment_dir, lambda c: c["instrument"].__setitem__("wavelength", float("nan")))
    edit_table(experiment_dir, 2, "nframes", "nan")
    edit_table(experiment_dir, 3, "phi_start", "nan")
    edit_table(experiment_dir, 3, "phi_step", "fast")
    with pytest.raises(ConfigError) as e:
        load(experiment_dir)
    assert str(e.value).splitlines()[1:] == [
        "  field 'instrument.polarization_fraction': 'high' is not of type 'number'",
        "  field 'instrument.wavelength': nan is not a finite number (an empty or missing value?)"]
    edit_config(experiment_dir, lambda c: c["instrument"].update(wavelength=0.5,
                                                               polarization_fraction=0.99))
    with pytest.raises(ConfigError) as e:
        load(experiment_dir)
    assert str(e.value).splitlines() == [
        "config/scans.tsv: 3 problems:",
        "  row 2 (tiny/300.0/f2): field 'nframes': nan is not of type 'integer'",
        "  row 3 (tiny/100.0/f1): field 'phi_start': nan is not a finite number (an empty or "
        "missing value?)",
        "  row 3 (tiny/100.0/f1): field 'phi_step': 'fast' is not of type 'number'"]


def test_many_problems_are_bounded(experiment_dir):
    p = experiment_dir / "config" / "scans.tsv"
    header, row = p.read_text().splitlines()[:2]
    cells = row.split("\t")
    rows = []
    for i in range(25):
        cells[2], cells[5] = f"e{i}", "x"  # entry, phi_start
        rows.append("\t".join(cells))
    p.write_text("\n".join([header, *rows]) + "\n")
    with pytest.raises(ConfigError) as e:
        load(experiment_dir)
    lines = str(e.value).splitlines()
    assert lines[0] == "config/scans.tsv: 25 problems:" and len(lines) == 22, lines
    assert lines[1] == "  row 1 (tiny/300.0/e0): field 'phi_start': 'x' is not of type 'number'"
    assert lines[20].startswith("  row 20 (") and lines[21] == "  ... and 5 more"


def test_spaces_instead_of_tabs_are_named(experiment_dir):
    """A row typed with spaces used to be reported as "'temperature' is a required
    property" (the whole line read as the sample's cell)."""
    p = experiment_dir / "config" / "scans.tsv"
    good = p.read_text()
    lines = good.splitlines()
    lines[2] = lines[2].replace("\t", "  ")
    p.write_text("\n".join(lines) + "\n")
    with pytest.raises(ConfigError) as e:
        load(experiment_dir)
    assert str(e.value) == "config/scans.tsv: row 2: columns separated by spaces, not tabs"
    lines[2] = lines[2].replace("  ", "\t", 3)  # some tabs, some spaces
    p.write_text("\n".join(lines) + "\n")
    with pytest.raises(ConfigError, match="^config/scans.tsv: row 2: columns separated by "
                                          "spaces, not tabs$"):
        load(experiment_dir)
    # the header: all of it, or only some of its columns
    for header in (lines[0].replace("\t", " "), lines[0].replace("\tchi", "   chi")):
        p.write_text("\n".join([header] + good.splitlines()[1:]) + "\n")
        with pytest.raises(ConfigError, match="^config/scans.tsv: header: columns separated by "
                                              "spaces, not tabs: the scans table is tab-separated"):
            load(experiment_dir)
    # spaces inside a cell (a file name) are no separators; nor is an empty optional cell
    p.write_text(good)
    edit_table(experiment_dir, 1, "data", "raw/my data/f1 scan 2.h5")
    edit_table(experiment_dir, 2, "chi", "")
    p.write_text(p.read_text().replace("\t-1\t\n", "\t-1\n"))  # (row 2 without its last cell)
    exp = load(experiment_dir)
    assert exp.scan("tiny", "300K", "f1").data == "raw/my data/f1 scan 2.h5"
    assert exp.scan("tiny", "300K", "f2").offsets["chi"] == 0.0


def test_several_config_files_merge_in_order(experiment_dir):
    extra = experiment_dir / "config" / "override.yaml"
    extra.write_text("instrument:\n  wavelength: 0.5\n")
    exp = load_experiment([experiment_dir / "config" / "config.yaml", extra], base_dir=experiment_dir)
    assert exp.instrument.wavelength == 0.5
    assert exp.instrument.detector.name == "Pilatus300k"  # the rest of the section is kept


def test_committed_demo_config_is_what_the_simulator_writes():
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    for name, text in config_texts(preset("demo"), "hdf5").items():
        assert (repo / "config" / name).read_text() == text, f"config/{name} is stale: regenerate it"


def test_the_2m_preset_is_an_experiment_of_three_600_frame_scans_on_a_2m_detector(tmp_path):
    """bench/live.py's 2M-class acquisition (issue 82): its config and table load as any
    experiment's; the demo's crystal, one temperature, three scans of 600 frames."""
    from hklflow.model.geometry import detector_shape

    (tmp_path / "config").mkdir()
    for name, text in config_texts(preset("pilatus2m"), "hdf5").items():
        (tmp_path / "config" / name).write_text(text)
    exp = load_experiment(tmp_path / "config/config.yaml", base_dir=tmp_path)
    assert detector_shape(exp.instrument.detector.name) == (1679, 1475)
    assert [(s.entry, s.nframes, s.angles.step) for s in exp.scans] == \
        [("f1", 600, 0.1), ("f2", 600, 0.1), ("f3", 600, 0.1)]
    assert exp.temperatures_of("lsco") == ["300K"]


def test_other_parents_by_temperature_range(experiment_dir):
    edit_config(experiment_dir, lambda c: c["samples"]["tiny"].__setitem__(
        "other_parents", [{"temperature": 100, "for_temperatures": [0, 150]}]))
    spec = load(experiment_dir).samples["tiny"]
    assert spec.parent_for(300.0) == "300K" and spec.parent_for(120.0) == "100K"
    edit_config(experiment_dir, lambda c: c["samples"]["tiny"].__setitem__(
        "other_parents", [{"temperature": 42, "for_temperatures": [0, 150]}]))
    with pytest.raises(ConfigError, match=r"'samples.tiny.other_parents.0.temperature': no scan of tiny at 42K"):
        load(experiment_dir)


def test_moved_keys_are_taken_from_their_old_place_with_a_warning(experiment_dir):
    """trusted_max and the user mask are facts of the detector (instrument.detector); a
    config that still has them in reduction.find_peaks / reduction.mask keeps working."""
    edit_config(experiment_dir, lambda c: c.setdefault("reduction", {}).update(
        find_peaks={"trusted_max": 1000000}, mask={"mask_file": "m.tif", "radius_px": 2.0}))
    exp = load(experiment_dir)
    assert exp.instrument.detector == DetectorParams("Pilatus300k", 1000000, "m.tif", "/entry/mask")
    assert exp.reduction["mask"]["radius_px"] == 2.0 and "mask_file" not in exp.reduction["mask"]
    assert len(exp.warnings) == 2
    assert "'reduction.find_peaks.trusted_max' has moved to 'instrument.detector.trusted_max'" \
        in exp.warnings[0]
    # both places, different values: refused, naming both
    edit_config(experiment_dir, lambda c: c["instrument"].__setitem__(
        "detector", {"name": "Pilatus300k", "trusted_max": 5}))
    with pytest.raises(ConfigError, match="'reduction.find_peaks.trusted_max' has moved to "
                                          "'instrument.detector.trusted_max'; both are given"):
        load(experiment_dir)


def test_scans_table_detector_translations_move_spots_as_documented(experiment_dir):
    """docs/conventions.md (Detector): det_ddist > 0 moves the detector away from the sample
    along its normal; det_dponi1/2 > 0 move it by MINUS that along its axis 1/2 (lab L1 up,
    L2, at zero tilts), so a spot fixed in the lab moves by +d/pixel along that axis (rows /
    columns with orientation 3).  Signs pinned from the table's cells to lab and pixels."""
    from hklflow.model.geometry import DetectorGeometry

    calib = DetectorGeometry("Pilatus300k", 0.12, 0.04, 0.03, wavelength=0.5)  # zero tilts
    pixel = 172e-6
    edit_table(experiment_dir, 2, "det_ddist", "0.01")
    edit_table(experiment_dir, 2, "det_dponi1", str(3 * pixel))
    edit_table(experiment_dir, 2, "det_dponi2", str(-2 * pixel))
    row = load(experiment_dir).scan("tiny", "300K", "f2")
    assert row.detector_shift == (0.01, 3 * pixel, -2 * pixel)
    moved = calib.shifted(*row.detector_shift)
    # the detector itself: pixel (100, 200) sits 1 cm further downstream, 3 pixels lower
    # (-L1) and 2 pixels further along +L2 than before
    before, after = calib.lab_positions(np.array([100.5]), np.array([200.5]))[0], \
        moved.lab_positions(np.array([100.5]), np.array([200.5]))[0]
    np.testing.assert_allclose(after - before, [-3 * pixel, 2 * pixel, 0.01], atol=1e-12)
    # a direction fixed in the lab: in-plane shifts move its spot by +3 rows and -2 columns
    d = np.array([[0.05, 0.08, 1.0]])
    r0, c0 = calib.pixel_from_direction(d)
    inplane = calib.shifted(0.0, *row.detector_shift[1:])
    r1, c1 = inplane.pixel_from_direction(d)
    np.testing.assert_allclose([r1[0] - r0[0], c1[0] - c0[0]], [3.0, -2.0], atol=1e-9)
    # further away: the spot moves outward from the point of normal incidence
    r2, c2 = calib.shifted(0.01).pixel_from_direction(d)
    poni_rc = np.array([calib.poni1, calib.poni2]) / pixel
    assert np.hypot(r2[0] - poni_rc[0], c2[0] - poni_rc[1]) > np.hypot(r0[0] - poni_rc[0], c0[0] - poni_rc[1])


@pytest.mark.parametrize("change", [
    lambda c: c["instrument"].__setitem__("detector", {"name": c["instrument"]["detector"],
                                                       "orientation": 3.0}),
    lambda c: c.setdefault("reduction", {}).setdefault("find_peaks", {}).__setitem__(
        "sigma_strong", 3),
    lambda c: c.setdefault("reduction", {}).setdefault("transform", {}).__setitem__(
        "max_voxels", 1771561.0),
    lambda c: c.setdefault("reduction", {}).setdefault("pdf", {}).__setitem__("radius", 0.2),
], ids=["orientation 3.0", "sigma_strong 3", "max_voxels 1771561.0", "radius as default"])
def test_a_value_written_another_way_or_as_its_default_changes_no_setting(experiment_dir,
                                                                          change):
    """3 and 3.0, and a value equal to its default, give the same settings to every job
    (issue 71: they used to rerun 25-41 jobs): the config is canonical once validated."""
    import json

    from hklflow.planning.jobs import JobSettings

    plain = load(experiment_dir)
    edit_config(experiment_dir, change)
    again = load(experiment_dir)
    assert json.dumps(again.raw, sort_keys=True) == json.dumps(plain.raw, sort_keys=True)
    before, after = JobSettings(plain), JobSettings(again)
    for rule in ("delta_pdf", "total_pdf"):
        assert getattr(before, rule)("tiny") == getattr(after, rule)("tiny")


def test_a_placeholder_is_still_fill_in_and_a_typo_gets_its_close_key(experiment_dir):
    """What `hklflow init` leaves to fill is 'still FILL_IN (what to give)', not jsonschema's
    words on a mapping; a key one letter off says which key it meant; and the scans table's
    placeholders are named in the same pass as the config's."""
    edit_config(experiment_dir, lambda c: c["samples"]["tiny"].update(
        cell={"FILL_IN": "a, b, c (Angstrom), alpha, beta, gamma (deg)"}))
    edit_config(experiment_dir, lambda c: c["reduction"].update(tranform={}))
    edit_table(experiment_dir, 2, "phi_step", "FILL_IN")
    with pytest.raises(ConfigError) as refused:
        load_experiment(experiment_dir / "config/config.yaml", base_dir=experiment_dir)
    lines = str(refused.value).replace(f"{experiment_dir}/", "").splitlines()
    assert lines[0] == "config/config.yaml: 2 problems:"
    assert ("  field 'reduction': unknown key 'tranform' (did you mean 'transform'?); allowed "
            "here: ") in lines[1]
    assert lines[2] == ("  field 'samples.tiny.cell': still FILL_IN (a, b, c (Angstrom), alpha, "
                        "beta, gamma (deg))")
    assert lines[3:] == ["config/scans.tsv: row 2 (tiny/300.0/f2): field 'phi_step': still "
                         "FILL_IN"]


@pytest.mark.parametrize("encoding", ["utf-16", "latin-1"])
def test_a_config_file_not_in_utf8_is_named_with_its_problem(experiment_dir, encoding):
    """An editor's "Unicode" (UTF-16) or "Latin-1" save: the file and what to do, no
    traceback, from the config check, the syntax check and plain snakemake alike."""
    from hklflow.planning.config import check_yaml_syntax

    from conftest import run_snakemake

    path = experiment_dir / "config/config.yaml"
    text = path.read_text().replace("experiment:", "# café\nexperiment:", 1)
    path.write_bytes(text.encode(encoding))
    expected = ("the file is UTF-16 text (it starts with a byte-order mark): save it as UTF-8"
                if encoding == "utf-16" else "is not UTF-8 text: save the file as UTF-8")
    for check in (lambda: load_experiment(path, base_dir=experiment_dir),
                  lambda: check_yaml_syntax([path])):
        with pytest.raises(ConfigError) as refused:
            check()
        assert str(refused.value).startswith(f"{path}: ") and expected in str(refused.value)
    r = run_snakemake(experiment_dir, "-n")
    out = r.stdout + r.stderr
    assert r.returncode == 1 and expected in out and "Traceback" not in out, out[-2000:]
    assert "hklflow: invalid configuration: config/config.yaml: " in out
