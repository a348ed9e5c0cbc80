"""Bad input never becomes a wrong volume (issue 13): what a careless or unlucky user can
write in the config and scans table is refused when the Snakefile is parsed - before any
job, naming the file, the row and the field and what was expected - and every case here
is a row of the table in docs/bad-inputs.md, which says what the user sees
(test_every_case_is_in_the_docs_table keeps the two together).

The failures that only the data can show (an entry without signal, a bad monitor, a wrong
wavelength, a failed indexing) are tested with the steps that find them; their rows of the
docs table name those tests."""
from __future__ import annotations

import re
import shlex
import time
from pathlib import Path

import pytest

from hklflow.planning.config import ConfigError, load_experiment
from hklflow.raw.rawfiles import RawFileOwners
from hklflow.simulation.experiment import config_texts, preset

from conftest import REPO, run_snakemake
from experiment_helpers import edit_config
from experiment_helpers import edit_table as edit_cell

DOCS_TABLE = REPO / "docs" / "bad-inputs.md"


@pytest.fixture
def experiment_dir(tmp_path):
    for name, text in config_texts(preset("tiny"), "hdf5").items():
        (tmp_path / "config").mkdir(exist_ok=True)
        (tmp_path / "config" / name).write_text(text)
    return tmp_path


def rename_sample(d: Path, name) -> None:
    edit_config(d, lambda c: c["samples"].__setitem__(name, c["samples"].pop("tiny")))
    p = d / "config" / "scans.tsv"
    p.write_text(re.sub(r"(?m)^tiny\t", f"{name}\t", p.read_text()))


def rename_calibration(d: Path, name) -> None:
    edit_config(d, lambda c: c["calibrations"].__setitem__(name, c["calibrations"].pop("ceo2")))


def set_reduction(section: str, key: str, value):
    return lambda c: c.setdefault("reduction", {}).setdefault(section, {}).__setitem__(key, value)


CBF_FRAMES = "raw/tiny/300K/f1/f1_*.cbf"


def with_monitor(row: int, monitor: str, data: str | None = None, files: dict | None = None):
    """A change giving row ROW of the scans table a monitor (the column added), another
    `data`, and writing FILES (path -> text, or a function writing the path)."""
    def change(d: Path) -> None:
        p = d / "config" / "scans.tsv"
        lines = p.read_text().splitlines()
        lines = [lines[0] + "\tmonitor"] + [ln + "\t" for ln in lines[1:]]
        lines[row] += monitor
        p.write_text("\n".join(lines) + "\n")
        if data:
            edit_cell(d, row, "data", data)
        for name, content in (files or {}).items():
            (d / name).parent.mkdir(parents=True, exist_ok=True)
            content(d / name) if callable(content) else (d / name).write_text(content)
    return change


def write_cbf_without_flux(path: Path) -> None:
    import fabio.cbfimage
    import numpy as np

    header = "# Exposure_time 0.0990000 s\r\n# Start_angle 0.0000 deg."
    fabio.cbfimage.CbfImage(data=np.zeros((4, 4), np.int32),
                            header={"_array_data.header_contents": header}).write(str(path))


# id -> (change, words the message must hold: file, row, field, what was expected)
CONFIG_CASES = {
    # non-finite numbers (a missing value that pandas wrote as nan)
    "table-nan": (lambda d: edit_cell(d, 1, "phi_start", "nan"),
                  ["scans.tsv: row 1", "field 'phi_start'", "nan is not a finite number"]),
    "table-inf": (lambda d: edit_cell(d, 2, "det_ddist", "inf"),
                  ["scans.tsv: row 2", "field 'det_ddist'", "inf is not a finite number"]),
    "table-nan-integer": (lambda d: edit_cell(d, 2, "nframes", "nan"),
                          ["scans.tsv: row 2", "field 'nframes'", "not of type 'integer'"]),
    "config-nan": (lambda d: edit_config(d, lambda c: c["instrument"].__setitem__("wavelength", float("nan"))),
                   ["config.yaml", "field 'instrument.wavelength'", "nan is not a finite number"]),
    # what `hklflow init` leaves to fill in, and typos
    "config-fill-in": (lambda d: edit_config(d, lambda c: c["samples"]["tiny"].__setitem__(
                           "space_group", {"FILL_IN": "space group symbol or number"})),
                       ["config.yaml", "field 'samples.tiny.space_group'",
                        "still FILL_IN (space group symbol or number)"]),
    "table-fill-in": (lambda d: edit_cell(d, 2, "nframes", "FILL_IN"),
                      ["scans.tsv: row 2", "field 'nframes'", "still FILL_IN"]),
    "config-typo": (lambda d: edit_config(d, lambda c: c["reduction"].__setitem__("tranform", {})),
                    ["config.yaml", "field 'reduction'",
                     "unknown key 'tranform' (did you mean 'transform'?)"]),
    # an editor's encodings
    "config-utf16": (lambda d: (d / "config/config.yaml").write_bytes(
                         (d / "config/config.yaml").read_text().encode("utf-16")),
                     ["config.yaml", "the file is UTF-16 text", "save it as UTF-8"]),
    "config-latin1": (lambda d: (d / "config/config.yaml").write_bytes(
                          ("# d\xe9tecteur\n" + (d / "config/config.yaml").read_text()).encode("latin-1")),
                      ["config.yaml", "line 1, column 4: byte 0xe9 is not UTF-8 text",
                       "save the file as UTF-8"]),
    # temperatures name folders
    "temperature-tiny": (lambda d: edit_cell(d, 3, "temperature", "1e-5"),
                         ["scans.tsv: row 3", "field 'temperature'", "less than the minimum of 0.001"]),
    "temperature-huge": (lambda d: edit_cell(d, 3, "temperature", "1234567"),
                         ["scans.tsv: row 3", "field 'temperature'", "greater than the maximum of 10000"]),
    "temperature-digits": (lambda d: edit_cell(d, 3, "temperature", "100.0000001"),
                           ["scans.tsv: row 3", "field 'temperature'", "folder name 100K", "6 significant digits"]),
    # sizes that would exhaust the machine
    "nframes-typo": (lambda d: edit_cell(d, 1, "nframes", "1e12"),
                     ["scans.tsv: row 1", "field 'nframes'", "at most 10 turns"]),
    "transform-jobs": (lambda d: (edit_config(d, set_reduction("transform", "frames_per_job", 1)),
                                  edit_cell(d, 1, "phi_step", "0.05"), edit_cell(d, 1, "nframes", "3600")),
                       ["scans.tsv: row 1", "field 'nframes'", "3600 transform jobs",
                        "at most 1000 per entry", "reduction.transform.frames_per_job"]),
    "grid-huge": (lambda d: edit_config(d, set_reduction("transform", "grid", {
        "h": [-1000, 1000, 0.001], "k": [-5, 5, 0.1], "l": [-5, 5, 0.1]})),
                  ["config.yaml", "field 'reduction.transform.grid'", "2.04e+10 voxels, more than "
                   "reduction.transform.max_voxels (1771561)"]),
    "grid-index-range": (lambda d: edit_config(d, lambda c: (
        set_reduction("transform", "grid", {a: [-11, 11, 0.02] for a in "hkl"})(c),
        set_reduction("transform", "max_voxels", 2 * 10 ** 9)(c))),
        ["config.yaml", "field 'reduction.transform.grid'", "1,345,572,864 voxels (padded to bricks of 8^3), more than "
         "the transform indexes (1,073,741,311, both kinds from one pass: reduction.transform.kinds)"]),
    "grid-step-zero": (lambda d: edit_config(d, set_reduction("transform", "grid", {"h": [-5, 5, 0]})),
                       ["config.yaml", "field 'reduction.transform.grid.h'", "step > 0"]),
    "grid-reversed": (lambda d: edit_config(d, set_reduction("transform", "grid", {"l": [5, -5, 0.1]})),
                      ["config.yaml", "field 'reduction.transform.grid.l'", "start <= stop"]),
    # (it used to be refused by the symmetrize step, after every transform and merge ran)
    "grid-not-symmetrisable": (lambda d: edit_config(d, set_reduction("transform", "grid", {
        "h": [-3, 3, 0.1], "k": [-3, 3, 0.05], "l": [-3, 3, 0.1]})),
        ["config.yaml", "field 'reduction.transform.grid'", "not compatible with the Laue group "
         "4/mmm (space group I 41/a m d:1) of sample tiny", "maps H onto K, but their steps "
         "differ (0.1 and 0.05): give reduction.transform.grid.h and reduction.transform.grid.k "
         "the same step", "(every merge would refuse this grid: its statistics compare "
         "symmetry-equivalent voxels)"]),
    # the merge's statistics need the same (it used to advise symmetrize: false, and the
    # merges failed after every transform)
    "grid-not-mergeable": (lambda d: edit_config(d, lambda c: (
        set_reduction("transform", "grid", {"h": [-3, 3, 0.1], "k": [-3, 3, 0.05],
                                            "l": [-3, 3, 0.1]})(c),
        set_reduction("merge", "symmetrize", False)(c))),
        ["config.yaml", "field 'reduction.transform.grid'", "maps H onto K, but their steps "
         "differ (0.1 and 0.05)", "every merge would refuse this grid"]),
    # names become folders and command-line arguments
    "sample-dotdot": (lambda d: rename_sample(d, ".."),
                      ["config.yaml", "field 'samples'", "the name '..' is not valid",
                       "starting with a letter or digit"]),
    "sample-dot": (lambda d: rename_sample(d, "."), ["field 'samples'", "the name '.' is not valid"]),
    "sample-calibration": (lambda d: rename_sample(d, "calibration"),
                           ["field 'samples'", "the name 'calibration' is reserved"]),
    "sample-option": (lambda d: rename_sample(d, "-h"), ["field 'samples'", "the name '-h' is not valid"]),
    "sample-long": (lambda d: rename_sample(d, "x" * 260),
                    ["field 'samples'", "(260 characters) is not valid", "at most 64 characters"]),
    # Snakemake's PeriodicWildcardError: it takes such a value for a runaway recursion
    "sample-repeats": (lambda d: rename_sample(d, "a" * 64),
                       ["field 'samples'", "(64 characters) ends in 20 or more repeats",
                        "PeriodicWildcardError", "expected a name that does not end so"]),
    "entry-dotdot": (lambda d: edit_cell(d, 1, "entry", ".."),
                     ["scans.tsv: row 1", "field 'entry'", "value '..' is not valid"]),
    "calibration-space": (lambda d: rename_calibration(d, "ce o2"),
                          ["config.yaml", "field 'calibrations'", "the name 'ce o2' is not valid"]),
    "calibration-slash": (lambda d: rename_calibration(d, "ce/o2"),
                          ["field 'calibrations'", "the name 'ce/o2' is not valid"]),
    "calibration-empty": (lambda d: rename_calibration(d, ""),
                          ["field 'calibrations'", "the name '' is not valid"]),
    # ranges and settings a step would refuse later
    "valid-for-reversed": (lambda d: edit_config(d, lambda c: c["calibrations"]["ceo2"].__setitem__(
        "valid_for", {"temperatures": [400, 0]})),
                           ["config.yaml", "field 'calibrations.ceo2.valid_for.temperatures'", "low <= high"]),
    "other-parents-reversed": (lambda d: edit_config(d, lambda c: c["samples"]["tiny"].__setitem__(
        "other_parents", [{"temperature": 100, "for_temperatures": [150, 0]}])),
                               ["field 'samples.tiny.other_parents.0.for_temperatures'", "low <= high"]),
    "trusted-max-zero": (lambda d: edit_config(d, lambda c: c["instrument"].__setitem__(
        "detector", {"name": c["instrument"]["detector"], "trusted_max": 0})),
                         ["config.yaml", "field 'instrument.detector.trusted_max'",
                          "less than the minimum of 1"]),
    "repeats-unknown": (lambda d: edit_config(d, set_reduction("ingest", "deliberate_repeats",
                                                               ["tiny/300K/f3"])),
                        ["config.yaml", "field 'reduction.ingest.deliberate_repeats.0'",
                         "'tiny/300K/f3' is not an entry of config/scans.tsv",
                         "expected sample/temperature/entry"]),
    "chunk-huge": (lambda d: edit_config(d, set_reduction("transform", "chunk_frames", 100000)),
                   ["config.yaml", "field 'reduction.transform.chunk_frames'",
                    "100000 frames of the Pilatus300k", "expected at most"]),
    "pdf-radius-huge": (lambda d: edit_config(d, set_reduction("pdf", "radius", 50)),
                        ["config.yaml", "field 'reduction.pdf.radius'",
                         "reach past sample tiny's nearest reflections"]),
    "pdf-radius-two": (lambda d: edit_config(d, set_reduction("pdf", "radius", 2)),
                       ["config.yaml", "field 'reduction.pdf.radius'", "holes of 2 1/A reach past"]),
    "window-even": (lambda d: edit_config(d, set_reduction("find_peaks", "window", [4, 4])),
                    ["config.yaml", "field 'reduction.find_peaks.window'", "two odd integers"]),
    # contradictions that used to surface only after the transforms, sums and merges ran
    "model-inputs-no-variance": (lambda d: edit_config(d, lambda c: (
        c.setdefault("output", {}).__setitem__("model_inputs", ["yell"]),
        set_reduction("scaling", "enabled", False)(c),
        set_reduction("transform", "variance", False)(c))),
        ["config.yaml", "field 'output.model_inputs'", "weight by 1/sigma, but "
         "reduction.transform.variance is false", "expected reduction.transform.variance: "
         "true, or output.model_inputs: []"]),
    "scaling-no-variance": (lambda d: edit_config(d, set_reduction("transform", "variance", False)),
        ["config.yaml", "field 'reduction.scaling.enabled'", "weighs equivalents by their sigma",
         "expected reduction.transform.variance: true, or reduction.scaling.enabled: false"]),
    # numbers YAML 1.1 reads as text (no dot, no signed exponent), in every number field
    "number-as-text": (lambda d: replace_text(d / "config/config.yaml", "detector: Pilatus300k",
                                              "detector: {name: Pilatus300k, gain: 1e-3}"),
        ["config.yaml", "field 'instrument.detector.gain'", "'1e-3' was read as text, not a "
         "number", "write 1.0e-3"]),
    "integer-as-text": (lambda d: replace_text(d / "config/config.yaml", "max_voxels: 1771561",
                                               "max_voxels: 2e6"),
        ["config.yaml", "field 'reduction.transform.max_voxels'", "'2e6' was read as text",
         "write 2000000"]),
    # a gain past physics: the dispersion test would take the noise for peaks
    "gain-tiny": (lambda d: edit_config(d, lambda c: c["instrument"].__setitem__(
        "detector", {"name": c["instrument"]["detector"], "gain": 1e-300})),
        ["config.yaml", "field 'instrument.detector.gain'", "1e-300 is less than the minimum "
         "of 0.001"]),
    # what the file's text gets wrong: named as such, with every problem and where it is
    "table-spaces": (lambda d: (d / "config/scans.tsv").write_text(
        (d / "config/scans.tsv").read_text().replace("\t", "    ")),
                     ["scans.tsv", "header: columns separated by spaces, not tabs",
                      "tab-separated"]),
    "row-spaces": (lambda d: replace_line(d / "config/scans.tsv", 2,
                                          lambda ln: ln.replace("\t", " ")),
                   ["scans.tsv: row 2: columns separated by spaces, not tabs"]),
    "yaml-syntax": (lambda d: replace_line(d / "config/config.yaml", 8,
                                           lambda ln: ln.replace(": ", ": [")),
                    ["config.yaml: not valid YAML", "line 10, column 24: expected ',' or ']', "
                     "but got ':' (while parsing a flow sequence at line 9, column 15)"]),
    "yaml-tab": (lambda d: replace_line(d / "config/config.yaml", 8,
                                        lambda ln: "\t" + ln.lstrip()),
                 ["config.yaml: not valid YAML", "line 9, column 1: found a tab that cannot "
                  "start any token (YAML indents with spaces, not tabs)"]),
    "several-problems": (lambda d: edit_config(d, lambda c: (
        c["instrument"].pop("wavelength"),
        c["instrument"].__setitem__("polarization_fraction", "high"))),
        ["config.yaml: 2 problems:\n", "field 'instrument': 'wavelength' is a required property",
         "field 'instrument.polarization_fraction': 'high' is not of type 'number'"]),
    "table-latin1": (lambda d: (d / "config/scans.tsv").write_bytes(
        (d / "config/scans.tsv").read_bytes().replace(b"f1", b"f\xe9", 1)),
                     ["scans.tsv: line 2, column", "byte 0xe9 is not UTF-8 text",
                      "save the table as UTF-8"]),
    "table-unnamed-value": (lambda d: (replace_line(d / "config/scans.tsv", 0, lambda ln: ln + "\t"),
                                       replace_line(d / "config/scans.tsv", 1,
                                                    lambda ln: ln + "\tstray")),
                            ["scans.tsv: row 1: a value under a column with no name"]),
    "many-problems": (lambda d: many_bad_rows(d, 25),
                      ["scans.tsv: 25 problems:\n", "row 1 (tiny/300.0/e0): field 'phi_start': "
                       "'x' is not of type 'number'", "\n  ... and 5 more"]),
    # monitors of frame files (a column file, cbf:FIELD) and of HDF5 files (a dataset)
    "monitor-file-missing": (with_monitor(1, "monitors/f1.txt", data=CBF_FRAMES),
                             ["scans.tsv: row 1 (tiny/300K/f1)", "field 'monitor'",
                              "monitors/f1.txt does not exist",
                              "expected a text file of one value per frame"]),
    "monitor-file-count": (with_monitor(1, "monitors/f1.txt", data=CBF_FRAMES, files={
        "monitors/f1.txt": "# I0 per frame\n" + "1000\n" * 59}),
                           ["scans.tsv: row 1 (tiny/300K/f1)", "field 'monitor'",
                            "monitors/f1.txt: 59 values, expected one per frame: the row's "
                            "nframes is 60"]),
    "monitor-file-negative": (with_monitor(1, "monitors/f1.txt", data=CBF_FRAMES, files={
        "monitors/f1.txt": "".join(f"{i} {-1 if i == 3 else 1000}\n" for i in range(1, 61))}),
                              ["scans.tsv: row 1 (tiny/300K/f1)", "field 'monitor'",
                               "monitors/f1.txt: line 3: -1 is negative"]),
    "monitor-file-nan": (with_monitor(1, "monitors/f1.txt", data=CBF_FRAMES, files={
        "monitors/f1.txt": "1000\n" * 6 + "nan\n" + "1000\n" * 53}),
                         ["scans.tsv: row 1 (tiny/300K/f1)", "field 'monitor'",
                          "monitors/f1.txt: line 7: nan is not a finite number"]),
    "monitor-cbf-on-hdf5": (with_monitor(1, "cbf:Flux"),
                            ["scans.tsv: row 1 (tiny/300K/f1)", "field 'monitor'",
                             "'cbf:Flux' reads the header of CBF frame files, but the row's "
                             "data raw/tiny/300K/f1.h5 are HDF5",
                             "expected the path of a dataset in the data file"]),
    "monitor-dataset-on-cbf": (with_monitor(1, "/entry/instrument/monitor", data=CBF_FRAMES),
                               ["scans.tsv: row 1 (tiny/300K/f1)", "field 'monitor'",
                                "/entry/instrument/monitor does not exist",
                                "a dataset path is the monitor of rows whose data are HDF5 "
                                "files"]),
    "monitor-cbf-no-field": (with_monitor(1, "cbf:Flux", data=CBF_FRAMES, files={
        "raw/tiny/300K/f1/f1_00001.cbf": write_cbf_without_flux}),
                             ["scans.tsv: row 1 (tiny/300K/f1)", "field 'monitor'",
                              "raw/tiny/300K/f1/f1_00001.cbf: no 'Flux' line in its CBF header",
                              "expected cbf:FIELD with a field of the header (Exposure_time, "
                              "Start_angle)"]),
}


def replace_text(p: Path, old: str, new: str) -> None:
    """The file's text OLD (there once) replaced by NEW, as the user would type it."""
    text = p.read_text()
    assert text.count(old) == 1, (p, old)
    p.write_text(text.replace(old, new))


def replace_line(p: Path, index: int, change) -> None:
    """Line INDEX (from 0) of a file changed."""
    lines = p.read_text().splitlines()
    lines[index] = change(lines[index])
    p.write_text("\n".join(lines) + "\n")


def many_bad_rows(d: Path, n: int) -> None:
    """A scans table of N rows, each with a phi_start that is no number."""
    p = d / "config" / "scans.tsv"
    header, row = p.read_text().splitlines()[:2]
    cells = row.split("\t")
    rows = ["\t".join([*cells[:2], f"e{i}", *cells[3:5], "x", *cells[6:]]) for i in range(n)]
    p.write_text("\n".join([header, *rows]) + "\n")


@pytest.mark.parametrize("case", list(CONFIG_CASES))
def test_bad_config_is_refused_at_parse_time_naming_file_row_and_field(experiment_dir, case):
    change, words = CONFIG_CASES[case]
    change(experiment_dir)
    t0 = time.perf_counter()
    with pytest.raises(ConfigError) as e:
        load_experiment(experiment_dir / "config" / "config.yaml", base_dir=experiment_dir)
    assert time.perf_counter() - t0 < 5.0, "a refusal is immediate, whatever the bad value"
    for w in words:
        assert w in str(e.value), (case, w, str(e.value))


@pytest.mark.parametrize("how", ["utf-8 with a byte-order mark", "utf-16", "trailing tabs"])
def test_a_table_as_spreadsheets_save_it_reads_as_the_plain_one(experiment_dir, how):
    """A spreadsheet's UTF-8 with a byte-order mark (it used to be "unknown column(s)
    ['\\ufeffsample']"), its UTF-16 "Unicode text" (a UnicodeDecodeError without the file),
    and a tab at the end of every line (an empty column name) read as the plain table."""
    p = experiment_dir / "config" / "scans.tsv"
    plain = load_experiment(experiment_dir / "config" / "config.yaml", base_dir=experiment_dir)
    text = p.read_text()
    if how == "trailing tabs":
        p.write_text("".join(line + "\t\n" for line in text.splitlines()))
    else:
        p.write_bytes(text.encode("utf-8-sig" if how.startswith("utf-8") else "utf-16"))
    again = load_experiment(experiment_dir / "config" / "config.yaml", base_dir=experiment_dir)
    assert again.scans == plain.scans


def test_numeric_names_in_yaml_are_names(experiment_dir):
    """`1234:` in YAML is a number; the scans table's cell is text: both mean sample '1234'."""
    rename_sample(experiment_dir, 1234)
    exp = load_experiment(experiment_dir / "config" / "config.yaml", base_dir=experiment_dir)
    assert list(exp.samples) == ["1234"] and exp.scans[0].id == "1234/300K/f1"


def name_as_written(d: Path, sample: str, calibration: str) -> None:
    """The sample and the calibration renamed in config.yaml's text as written (yaml.safe_dump
    would quote '007'), and the sample in the scans table."""
    p = d / "config" / "config.yaml"
    p.write_text(p.read_text().replace("\n  tiny:", f"\n  {sample}:")
                 .replace("\n  ceo2:", f"\n  {calibration}:"))
    p = d / "config" / "scans.tsv"
    p.write_text(re.sub(r"(?m)^tiny\t", f"{sample}\t", p.read_text()))


@pytest.mark.parametrize("name", ["007", "0x1A", "1.50"])
def test_yaml_keys_are_the_names_written(experiment_dir, name):
    """`007:`, `0x1A:` and `1.50:` are numbers to YAML (7, 26, 1.5): as sample and calibration
    names they are the text written, as in the scans table (it used to be "'007' is not a
    sample of the config (known: ['7'])").  Values are read as before."""
    name_as_written(experiment_dir, name, name)
    exp = load_experiment(experiment_dir / "config" / "config.yaml", base_dir=experiment_dir)
    assert list(exp.samples) == [name] and list(exp.calibrations) == [name]
    assert exp.scans[0].id == f"{name}/300K/f1" and exp.scans[0].calibration == name
    assert exp.instrument.wavelength == 0.41328 and exp.raw["samples"][name]["cell"][2] == 7.504


@pytest.mark.slow
def test_snakemake_plans_names_yaml_reads_as_numbers(tiny_copy):
    """Through snakemake: `007:` plans as sample '007' (the check that the files give
    Snakemake's own `config` reads them as Snakemake does)."""
    name_as_written(tiny_copy, "007", "0x1A")
    r = run_snakemake(tiny_copy, "-n", "--cores", "1")
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-2000:]
    assert "results/007/300K/f1/scan.nxs" in out and "results/calibration/0x1A/" in out


def test_the_same_raw_file_cannot_belong_to_two_entries(tmp_path):
    h5 = tmp_path / "scan.h5"
    h5.write_bytes(b"")
    (tmp_path / "link.h5").symlink_to(h5)
    owners = RawFileOwners()
    owners.claim("s/300K/f1", [str(h5)], "/entry/data/data")
    owners.claim("s/300K/f1", [str(h5)], "/entry/data/data")  # the same entry again: fine
    owners.claim("s/300K/f2", [str(h5)], "/entry/other")  # another dataset of the file: fine
    with pytest.raises(ValueError, match=r"link\.h5 \(dataset /entry/data/data\) is also the data of s/300K/f1"):
        owners.claim("s/300K/f3", [str(tmp_path / "link.h5")], "/entry/data/data")
    frames = [str(tmp_path / f"f_{i:03d}.cbf") for i in range(3)]
    owners.claim("s/100K/f1", frames)
    with pytest.raises(ValueError, match=r"f_002\.cbf is also the data of s/100K/f1"):
        owners.claim("s/100K/f2", frames[2:] + [str(tmp_path / "f_003.cbf")])


@pytest.mark.slow
def test_snakemake_refuses_before_any_job(tiny_copy):
    """Through snakemake: a raw file given to two entries stops the plan naming both, and a
    typo of nframes (1e12, which used to make the dry run grow to 23 GB) is refused in
    seconds."""
    table = tiny_copy / "config" / "scans.tsv"
    original = table.read_text()
    edit_cell(tiny_copy, 2, "data", "raw/tiny/300K/f1.h5")
    r = run_snakemake(tiny_copy, "-n", "--cores", "1")
    out = r.stdout + r.stderr
    assert r.returncode != 0
    assert "scans.tsv: row 2 (tiny/300K/f2): field 'data': raw/tiny/300K/f1.h5 (dataset " \
           "/entry/data/data) is also the data of tiny/300K/f1" in out, out[-2000:]
    table.write_text(original)
    edit_cell(tiny_copy, 1, "nframes", "1e12")
    t0 = time.perf_counter()
    r = run_snakemake(tiny_copy, "-n", "--cores", "1", timeout=120)
    seconds = time.perf_counter() - t0
    out = r.stdout + r.stderr
    assert r.returncode != 0 and "field 'nframes'" in out and "invalid configuration" in out, out[-2000:]
    assert seconds < 30, seconds
    assert not (tiny_copy / "results").exists()


def test_results_that_would_not_fit_stop_the_run_before_any_job(tiny_copy):
    """A grid bound whose results no disk holds (max_voxels 10^12): the plan says so in its
    line, a run stops before its first job with the figures (plain snakemake and `hklflow
    run`'s console alike, the lock released), a dry run only says so, and
    output.disk_check: false runs anyway."""
    import subprocess
    import sys

    from hklflow.planning.snakemake_compat import STOPPED_PLAN

    edit_config(tiny_copy, lambda c: c["reduction"]["transform"].__setitem__("max_voxels",
                                                                           10 ** 12))
    r = run_snakemake(tiny_copy, "--cores", "1")
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert r.returncode == 1 and lines[-1] == STOPPED_PLAN, r.stderr[-3000:]
    assert lines[-2].startswith("hklflow: the results would not fit: about "), lines[-2]
    assert "free on the device of " in lines[-2] and "output.disk_check: false" in lines[-2]
    assert not (tiny_copy / "results").exists() and not (tiny_copy / "logs").exists()
    dry = run_snakemake(tiny_copy, "-n", "--cores", "1")
    assert dry.returncode == 0, dry.stderr[-3000:]
    said = [line for line in dry.stderr.splitlines() if line.startswith("hklflow: results: ")]
    assert len(said) == 1 and said[0].endswith(
        "they would not fit: a run stops before any job (output.disk_check: false runs "
        "anyway)"), said
    console = subprocess.run([sys.executable, "-m", "hklflow", "run", str(tiny_copy), "--",
                              "--cores", "1"], capture_output=True, text=True, timeout=600)
    shown = (console.stdout + console.stderr).splitlines()
    assert console.returncode == 1
    assert any(line.startswith("results: about ") for line in shown), shown
    assert any(line.startswith("FAILED: the results would not fit: about ") for line in shown), \
        shown
    edit_config(tiny_copy, lambda c: c.setdefault("output", {}).__setitem__("disk_check", False))
    r = run_snakemake(tiny_copy, "--cores", "1", "results/calibration/ceo2/geometry.poni")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "running anyway (output.disk_check: false)" in r.stderr
    assert (tiny_copy / "results/calibration/ceo2/geometry.poni").is_file()


def test_every_case_is_in_the_docs_table():
    """docs/bad-inputs.md has a row per case of this file (its id in the first column) with
    the words the test asserts, so the table says what the user really sees."""
    text = DOCS_TABLE.read_text()
    rows = {m.group(1): line for line in text.splitlines()
            if (m := re.match(r"^\| `([a-z0-9-]+)` \|", line))}
    missing = sorted(set(CONFIG_CASES) - set(rows))
    assert not missing, f"{DOCS_TABLE}: no row for {missing}"
    for case, (_, words) in CONFIG_CASES.items():
        shown = rows[case].replace("\\|", "|")
        assert any(w in shown for w in words[1:] or words), (case, words, rows[case])


# --------------------------------------------------------------------------------------
# The command line of hklflow run and hklflow demo
# --------------------------------------------------------------------------------------
@pytest.fixture
def snakemake_calls(monkeypatch):
    """hklflow run/demo with Snakemake replaced: the arguments it would have been given."""
    import hklflow.commands.run

    calls = []
    monkeypatch.setattr(hklflow.commands.run, "snakemake",
                        lambda exp, args, log, again, verbose=False: calls.append((exp, list(args))) or 0)
    return calls


def test_snakemake_arguments_before_the_double_dash_are_shown_where_they_go(
        experiment_dir, snakemake_calls, capsys):
    """`hklflow run EXP -n` used to get argparse's "unrecognized arguments: -n" and no word
    of `--`; now the message shows the command line that works.  Every command line that
    worked still does."""
    from hklflow.commands import cli

    d = str(experiment_dir)
    said = "hklflow {}: unrecognized argument(s) {}: Snakemake's arguments go after --, as in: {}"
    for argv, theirs, again in [
            (["run", d, "-n"], "-n", ["run", d, "--", "-n"]),
            # --cores is hklflow run's own (as demo's and watch's), kept before the --
            (["run", d, "-n", "--cores", "2"], "-n", ["run", d, "--cores", "2", "--", "-n"]),
            (["run", d, "-n", "--", "--cores", "2"], "-n", ["run", d, "--", "-n", "--cores", "2"]),
            (["run", "--cores", "2", d, "-p"], "-p", ["run", "--cores", "2", d, "--", "-p"]),
            (["run", d, "--verbose", "-n"], "-n", ["run", d, "--verbose", "--", "-n"]),
            (["demo", "--verbose", "-n"], "-n", ["demo", "--verbose", "--", "-n"]),
            (["run", d, "results/tiny/300K/transform.nxs"], "results/tiny/300K/transform.nxs",
             ["run", d, "--", "results/tiny/300K/transform.nxs"]),
            (["run", "-n"], "-n", ["run", "EXPDIR", "--", "-n"]),
            (["demo", "--dir", d, "-n"], "-n", ["demo", "--dir", d, "--", "-n"]),
            (["demo", "--cores=2", "-np"], "-np", ["demo", "--cores=2", "--", "-np"])]:
        assert cli.main(argv) == 2, argv
        assert capsys.readouterr().err.strip() == said.format(
            argv[0], theirs, shlex.join(["hklflow", *again])), argv
    assert snakemake_calls == []
    # what worked still works
    (experiment_dir / "truth.json").write_text("{}")  # (the demo: simulated already)
    for argv, args in [(["run", d], []),
                       (["run", d, "--", "-n", "--cores", "2"], ["-n", "--cores", "2"]),
                       (["demo", "--dir", d], ["--cores", "all"]),
                       (["demo", "--di", d, "--core", "2", "--", "-n"], ["--cores", "2", "-n"]),
                       (["demo", f"--dir={d}", "--cores=3"], ["--cores", "3"])]:
        assert cli.main(argv) == 0, (argv, capsys.readouterr().err)
        assert snakemake_calls.pop() == (experiment_dir.resolve(), args)
    for argv in (["run", d, "-h"], ["run", "--help"], ["demo", "-h"]):
        with pytest.raises(SystemExit) as e:
            cli.main(argv)
        assert e.value.code == 0 and "usage: hklflow" in capsys.readouterr().out


def test_hklflow_run_names_the_yaml_syntax_error_before_snakemake_starts(
        experiment_dir, snakemake_calls, capsys, monkeypatch):
    """Snakemake parses the config files itself, before any of hklflow's code, and says only
    "Config file is not valid JSON or YAML": `hklflow run` checks them first and names the
    file, line and column (config/config.yaml and every --configfile)."""
    from hklflow.commands import cli

    monkeypatch.chdir(experiment_dir)
    extra = experiment_dir / "extra.yaml"
    extra.write_text("instrument:\n  wavelength: 0.5\n")
    assert cli.main(["run", ".", "--", "-n", "--configfile", "config/config.yaml",
                     "extra.yaml"]) == 0
    CONFIG_CASES["yaml-syntax"][0](experiment_dir)
    assert cli.main(["run", ".", "--", "-n"]) == 1
    assert capsys.readouterr().err.strip() == (
        "hklflow run: invalid configuration: ./config/config.yaml: not valid YAML: line 10, "
        "column 24: expected ',' or ']', but got ':' (while parsing a flow sequence at line 9, "
        "column 15)")
    (experiment_dir / "config" / "config.yaml").rename(experiment_dir / "broken.yaml")
    (experiment_dir / "config" / "config.yaml").write_text(extra.read_text())
    extra.write_text("instrument:\n\twavelength: 0.5\n")
    for after in (["--configfile", "config/config.yaml", "extra.yaml"],
                  ["--configfile=extra.yaml"]):
        assert cli.main(["run", ".", "--", "-n", *after]) == 1
        assert capsys.readouterr().err.strip() == (
            "hklflow run: invalid configuration: extra.yaml: not valid YAML: line 2, column 1: "
            "found a tab that cannot start any token (YAML indents with spaces, not tabs)")
    assert len(snakemake_calls) == 1


# --------------------------------------------------------------------------------------
# An entry without usable signal (a closed shutter, a background-only scan)
# --------------------------------------------------------------------------------------
def _peaks_record(n_valid, total, n_peaks):
    from types import SimpleNamespace

    import numpy as np

    return SimpleNamespace(frame_stats={"n_valid": np.full(4, n_valid), "sum": np.full(4, total)},
                           peaks={"observed_px_x": np.zeros(n_peaks)})


def test_entries_without_usable_signal_are_named():
    import logging
    from types import SimpleNamespace

    import numpy as np

    from hklflow.algorithms.orientation.orient import check_entries_usable, unusable_entries
    from hklflow.base.errors import RawDataError
    from hklflow.settings.params import RefinementParams

    names = ["f1", "f2", "f3", "f4"]
    peaks = [_peaks_record(100, 5000.0, 40), _peaks_record(0, 0.0, 0), _peaks_record(100, 0.0, 0),
             _peaks_record(100, 900.0, 12)]
    used = [np.ones(40, bool), np.zeros(0, bool), np.zeros(0, bool), np.arange(12) < 2]
    result = SimpleNamespace(entries=[SimpleNamespace(name=n) for n in names], used=used)
    reasons = unusable_entries(peaks, result, min_peaks=5)
    assert sorted(reasons) == ["f2", "f3", "f4"]
    assert reasons["f2"].startswith("no valid pixel value in any frame")
    assert reasons["f3"].startswith("no counts in any frame (shutter closed?")
    assert reasons["f4"].startswith("2 of its 12 peaks index, fewer than "
                                    "reduction.refinement.min_peaks_per_entry (5)")
    scans = [SimpleNamespace(entry=n, scan_id=f"s/100K/{n}", frames=SimpleNamespace(files=[f"raw/{n}.h5"]))
             for n in names]
    log = logging.getLogger("test")
    with pytest.raises(RawDataError, match=r"no usable signal in raw/f2\.h5 \(s/100K/f2\): no valid.*"
                                           r"raw/f3\.h5 .*unusable_entries: leave_out"):
        check_entries_usable(scans, peaks, result, RefinementParams.defaults(min_peaks_per_entry=5), log)
    left = check_entries_usable(scans, peaks, result,
                                RefinementParams.defaults(unusable_entries="leave_out"), log)
    assert left == reasons
    with pytest.raises(RawDataError, match="no usable signal"):  # nothing would be left to merge
        check_entries_usable(scans[1:3], peaks[1:3], SimpleNamespace(entries=result.entries[1:3], used=used[1:3]),
                             RefinementParams.defaults(unusable_entries="leave_out"), log)


@pytest.mark.slow
def test_entry_with_a_closed_shutter_fails_or_is_left_out_of_the_merge(tiny_copy):
    """The tiny experiment with the frames of 100 K f2 all zero: the 100 K orientation step
    fails naming the raw file; with unusable_entries: leave_out the merged 100 K volume is
    f1's alone (it was f1 and f2 averaged with the zeros: half the intensity), and the log,
    notes and picture say so."""
    import h5py
    import hdf5plugin  # noqa: F401
    import numpy as np

    from hklflow.files.volume import read_volume

    raw = tiny_copy / "raw/tiny/100K/f2.h5"
    with h5py.File(raw, "a") as f:
        d = f["/entry/data/data"]
        d[...] = np.minimum(d[()], 0)  # no counts; the detector's gaps (-1) kept
    target = ["results/tiny/100K/transform.nxs", "--cores", "2", "--keep-going"]
    r = run_snakemake(tiny_copy, *target, timeout=1500)
    assert r.returncode != 0
    log = (tiny_copy / "logs/refine_temperature/tiny/100K.log").read_text()
    assert "no usable signal in " in log and "raw/tiny/100K/f2.h5 (tiny/100K/f2): no counts in any " \
        "frame (shutter closed? beam off?); set reduction.merge.unusable_entries: leave_out" in log
    assert not (tiny_copy / "results/tiny/100K/orientation.nxs").exists()
    edit_config(tiny_copy, set_reduction("merge", "unusable_entries", "leave_out"))
    r = run_snakemake(tiny_copy, *target, timeout=1500)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    merged = read_volume(tiny_copy / "results/tiny/100K/transform.nxs")
    f1 = read_volume(tiny_copy / "results/tiny/100K/f1/transform.nxs")
    assert np.array_equal(merged.weight, f1.weight) and merged.weight.sum() > 0
    np.testing.assert_allclose(merged.signal, f1.signal, rtol=1e-6)
    assert merged.notes["left_out"] == {"f2": "no counts in any frame (shutter closed? beam off?)"}
    assert "WARNING" in (tiny_copy / "logs/merge_entries/tiny/100K/transform.log").read_text()
    assert (tiny_copy / "results/tiny/100K/transform.png").stat().st_size > 10_000


@pytest.mark.slow
def test_an_hdf5_glob_is_every_file_it_matches(tiny_copy):
    """`data` as a glob of HDF5 files (a stack written in parts): the plan takes every part
    as an input of the entry's ingest (the pattern itself is no file)."""
    import h5py
    import hdf5plugin

    with h5py.File(tiny_copy / "raw/tiny/300K/f1.h5", "r") as f:
        frames = f["/entry/data/data"][()]
    for i, (a, b) in enumerate(((0, 30), (30, 60))):
        with h5py.File(tiny_copy / f"raw/tiny/300K/f1_part{i}.h5", "w") as g:
            g.create_dataset("/entry/data/data", data=frames[a:b], chunks=(1,) + frames.shape[1:],
                             **hdf5plugin.Bitshuffle(cname="lz4"))
    edit_cell(tiny_copy, 1, "data", "raw/tiny/300K/f1_part*.h5")
    r = run_snakemake(tiny_copy, "-n", "--cores", "1", "results/tiny/300K/f1/scan.nxs")
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-2000:]
    inputs = [ln.split(": ", 1)[1].split(", ") for ln in out.splitlines() if ln.startswith("    input: ")]
    assert any({"raw/tiny/300K/f1_part0.h5", "raw/tiny/300K/f1_part1.h5"} <= set(i) for i in inputs), inputs
