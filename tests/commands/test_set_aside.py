"""`hklflow run` sets aside the scans-table rows whose data do not exist yet, a line each,
and reduces the others (hklflow.commands.set_aside; issue 70); plain `snakemake` keeps refusing
such a row while it plans (test_missing_raw_file_stops_before_any_job_naming_it)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from hklflow.commands.set_aside import configfile_arguments, find_set_aside, snakemake_arguments
from hklflow.planning.config import load_experiment, set_aside_rows
from hklflow.planning.jobs import JobSettings

from conftest import job_counts, planned_jobs


def _point_row_at(experiment, row: int, data: str) -> None:
    """The `data` of a row (1-based) of the tiny experiment's scans table."""
    table = experiment / "config" / "scans.tsv"
    lines = table.read_text().splitlines()
    cells = lines[row].split("\t")
    cells[3] = data
    lines[row] = "\t".join(cells)
    table.write_text("\n".join(lines) + "\n")


def _hklflow_run(experiment, *args):
    return subprocess.run([sys.executable, "-m", "hklflow", "run", str(experiment), "--", *args],
                          capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, HDF5_USE_FILE_LOCKING="FALSE"))


def test_a_row_without_data_is_set_aside_and_the_dry_run_plans_the_others(tiny_copy):
    _point_row_at(tiny_copy, 3, "raw/tiny/100K/f1_*.cbf")  # frames not there yet
    r = _hklflow_run(tiny_copy, "-n")
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    assert r.stdout.splitlines()[:2] == [
        "set aside: config/scans.tsv row 3 (tiny/100K/f1): no file matches "
        "'raw/tiny/100K/f1_*.cbf' yet",
        "1 row(s) of config/scans.tsv set aside until their data exist; the other 3 reduce "
        "(run again to add them)"]
    out = r.stdout + r.stderr
    assert job_counts(out)["ingest_scan"] == 3
    ingested = {w for rule, w in planned_jobs(out) if rule == "ingest_scan"}
    assert ingested == {f"sample=tiny, temperature={t}, entry={e}"
                        for t, e in (("300K", "f1"), ("300K", "f2"), ("100K", "f2"))}


def test_the_config_without_the_rows_set_aside_loads_with_the_same_settings(tiny_copy):
    full = load_experiment(tiny_copy / "config/config.yaml", base_dir=tiny_copy)
    _point_row_at(tiny_copy, 2, "raw/tiny/300K/later.h5")
    args, lines, status = snakemake_arguments(tiny_copy, ["--cores", "2"])
    assert status == 0 and lines[0] == ("set aside: config/scans.tsv row 2 (tiny/300K/f2): "
                                        "no file matches 'raw/tiny/300K/later.h5' yet")
    assert args[0] == "--configfile" and args[-2:] == ["--cores", "2"]
    own, override = args[1:3]
    assert own == str(tiny_copy / "config/config.yaml")
    assert override.startswith(str(tiny_copy / ".snakemake/hklflow/set_aside/"))
    kept = load_experiment([own, override], base_dir=tiny_copy)
    assert [s.id for s in kept.scans] == ["tiny/300K/f1", "tiny/100K/f1", "tiny/100K/f2"]
    before = {s.id: s.settings() for s in full.scans}
    assert all(s.settings() == before[s.id] for s in kept.scans)  # nothing else reruns
    # the user's own --configfile stays, before the override
    mine = tiny_copy / "mine.yaml"
    mine.write_text("reduction: {transform: {max_voxels: 1771561}}\n")
    args, _, _ = snakemake_arguments(tiny_copy, ["--configfile", str(mine), "-n"])
    assert args[:3] == ["--configfile", own, str(mine)] and args[-1] == "-n"
    assert configfile_arguments(["-k", "--configfile=a.yaml", "--configfiles", "b", "c", "-n"]) \
        == (["a.yaml", "b", "c"], ["-k", "-n"])


def test_with_every_rows_data_there_the_command_line_is_unchanged(tiny_copy):
    assert snakemake_arguments(tiny_copy, ["--cores", "2", "-n"]) == (["--cores", "2", "-n"],
                                                                       [], 0)
    r = _hklflow_run(tiny_copy, "-n")
    assert r.returncode == 0 and "set aside" not in r.stdout, (r.stdout + r.stderr)[-3000:]
    running = next(line for line in r.stderr.splitlines() if "running: " in line)
    assert "--configfile" not in running and running.endswith(f"--directory {tiny_copy} -n")
    assert not (tiny_copy / ".snakemake/hklflow/set_aside").exists()


def test_the_temperatures_of_a_parent_without_data_are_set_aside_with_it(tiny_copy):
    config = tiny_copy / "config/config.yaml"
    config.write_text(config.read_text().replace(
        "    parent: {temperature: 300.0}\n",
        "    parent: {temperature: 300.0}\n"
        "    other_parents: [{temperature: 100, for_temperatures: [90, 150]}]\n"))
    table = tiny_copy / "config/scans.tsv"
    table.write_text(table.read_text() + "tiny\t120\tf1\traw/tiny/120K/f1.h5\t60\t0\t1\t0\t0\t0"
                                         "\t0\t0\n")
    (tiny_copy / "raw/tiny/120K").mkdir()
    (tiny_copy / "raw/tiny/120K/f1.h5").write_bytes(b"")  # (only its existence is looked at)
    _point_row_at(tiny_copy, 3, "raw/tiny/100K/f1_*.cbf")
    _point_row_at(tiny_copy, 4, "raw/tiny/100K/f2_*.cbf")
    args, lines, status = snakemake_arguments(tiny_copy, [])
    assert status == 0
    assert lines[2] == ("set aside: config/scans.tsv row 5 (tiny/120K/f1): its parent temperature "
                        "100K has no data yet (its orientation starts from the parent's)")
    kept = load_experiment(args[1:3], base_dir=tiny_copy)  # (other_parents without 100K)
    assert [s.id for s in kept.scans] == ["tiny/300K/f1", "tiny/300K/f2"]
    assert kept.samples["tiny"].other_parents == ()
    # every row of the sample's parent without data: nothing can run, and it says why
    _point_row_at(tiny_copy, 1, "raw/tiny/300K/f1_*.cbf")
    _point_row_at(tiny_copy, 2, "raw/tiny/300K/f2_*.cbf")
    found = find_set_aside(tiny_copy, [config])
    _, lines, status = snakemake_arguments(tiny_copy, [])
    assert status == 1 and len(found.rows) == 5
    assert lines[-1] == ("hklflow run: no scan can reduce yet (every row waits for its data "
                         "or its parent temperature's): nothing runs")
    # no row with data at all (a wrong path, a mount missing): Snakemake names the first row
    _point_row_at(tiny_copy, 5, "raw/tiny/120K/f1_*.cbf")
    assert snakemake_arguments(tiny_copy, ["-n"]) == (["-n"], [], 0)


def test_a_sample_whose_rows_all_wait_for_data_is_left_out_and_the_others_run(tiny_copy):
    """A second sample whose every row lacks its data: the plan is the first sample's."""
    config = tiny_copy / "config/config.yaml"
    text = config.read_text()
    start = text.index("  tiny:")
    block = text[start:text.index("\n", text.index("parent:", start)) + 1]
    config.write_text(text.replace(block, block + block.replace("  tiny:", "  later:", 1)))
    table = tiny_copy / "config/scans.tsv"
    table.write_text(table.read_text() + "later\t300\tf1\traw/later/f1.h5\t60\t0\t1\t0\t0\t0"
                                         "\t0\t0\n")
    args, lines, status = snakemake_arguments(tiny_copy, ["-n"])
    assert status == 0 and lines[0] == ("set aside: config/scans.tsv row 5 (later/300K/f1): no "
                                        "file matches 'raw/later/f1.h5' yet")
    kept = load_experiment(args[args.index("--configfile") + 1:][:2], base_dir=tiny_copy)
    assert {s.sample for s in kept.scans} == {"tiny"} and set(kept.samples) == {"tiny", "later"}
    r = _hklflow_run(tiny_copy, "-n")
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]


def _made_before(experiment, *files) -> None:
    """Results an earlier run left (only their existence is looked at)."""
    for name in files:
        (experiment / name).parent.mkdir(parents=True, exist_ok=True)
        (experiment / name).write_bytes(b"")


def test_a_row_reduced_before_whose_data_are_gone_stops_hklflow_run(tiny_copy):
    """A typo in one data path of a finished experiment used to redo its temperature from
    the other entries and overwrite the finished results with poorer ones (issue 86)."""
    _made_before(tiny_copy, "results/tiny/300K/f2/scan.nxs", "results/tiny/300K/transform.nxs",
                 "results/tiny/300K/parent_orientation.nxs")
    _point_row_at(tiny_copy, 2, "raw/tiny/300k/f2.h5")  # (300k for 300K)
    r = _hklflow_run(tiny_copy, "-n")
    assert r.returncode == 1, (r.stdout + r.stderr)[-3000:]
    assert r.stdout.splitlines() == [
        "gone: config/scans.tsv row 2 (tiny/300K/f2): no file matches 'raw/tiny/300k/f2.h5', but "
        "an earlier run reduced it: results/tiny/300K/f2/scan.nxs exists, and results/tiny/300K/ "
        "parent_orientation.nxs, transform.nxs would be made again without it",
        "hklflow run: 1 row(s) of config/scans.tsv reduced before have no data now (a typo in "
        "'data', a file moved away?): nothing runs. Put the data back or correct the row, or run "
        "again with --set-aside-gone to make those results again without them"]
    assert "running: " not in r.stderr  # (Snakemake never started)
    assert not (tiny_copy / ".snakemake/hklflow/set_aside").exists()
    # a row never reduced beside it is still only set aside, and told to, the run goes on
    _point_row_at(tiny_copy, 3, "raw/tiny/100K/f1_*.cbf")
    r = subprocess.run([sys.executable, "-m", "hklflow", "run", str(tiny_copy), "--set-aside-gone",
                        "--", "-n"], capture_output=True, text=True, timeout=600,
                       env=dict(os.environ, HDF5_USE_FILE_LOCKING="FALSE"))
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    lines = r.stdout.splitlines()
    set_aside = ["set aside: config/scans.tsv row 2 (tiny/300K/f2): no file matches "
                 "'raw/tiny/300k/f2.h5' yet",
                 "set aside: config/scans.tsv row 3 (tiny/100K/f1): no file matches "
                 "'raw/tiny/100K/f1_*.cbf' yet",
                 "2 row(s) of config/scans.tsv set aside until their data exist; the other 2 "
                 "reduce (run again to add them)"]
    assert lines[:3] == set_aside and lines[-3:] == set_aside  # (and again at the end)


def test_a_whole_temperature_gone_would_leave_the_sample_s_series(tiny_copy):
    _made_before(tiny_copy, "results/tiny/100K/f1/scan.nxs")
    _point_row_at(tiny_copy, 3, "raw/tiny/100K/gone.h5")
    _point_row_at(tiny_copy, 4, "raw/tiny/100K/gone_too.h5")  # (never reduced: not gone)
    args, lines, status = snakemake_arguments(tiny_copy, ["-n"])
    assert status == 1 and args == ["-n"] and len(lines) == 2
    assert lines[0] == ("gone: config/scans.tsv row 3 (tiny/100K/f1): no file matches "
                        "'raw/tiny/100K/gone.h5', but an earlier run reduced it: "
                        "results/tiny/100K/f1/scan.nxs exists, and the sample's series and tables "
                        "would be made without results/tiny/100K/")
    args, lines, status = snakemake_arguments(tiny_copy, ["-n"], gone_allowed=True)
    assert status == 0 and lines[-1].startswith("2 row(s) of config/scans.tsv set aside")


def test_the_jobs_at_a_set_aside_rows_temperature_name_it_in_their_settings(tiny_copy):
    """The results made without a row name it in their notes: it reaches their jobs through
    their settings, and only theirs (no other job's settings text changes)."""
    full = JobSettings(load_experiment(tiny_copy / "config/config.yaml", base_dir=tiny_copy))
    _point_row_at(tiny_copy, 3, "raw/tiny/100K/f1_*.cbf")
    args, lines, _ = snakemake_arguments(tiny_copy, [])
    exp = load_experiment(args[1:3], base_dir=tiny_copy)
    rows = set_aside_rows(exp.scans_table, tiny_copy)
    assert rows == ({"sample": "tiny", "temperature": "100K", "line": lines[0]},)
    jobs = JobSettings(exp, rows)
    for text in (jobs.refine_temperature("tiny", "100K"), jobs.merge_entries("masked_transform",
                                                                           "tiny", "100K")):
        assert json.loads(text)["set_aside"] == [lines[0]]
    # the detector refined on every temperature of the sample lacks it too
    assert json.loads(jobs.refine_detector("tiny"))["set_aside"] == [lines[0]]
    assert "set_aside" not in json.loads(full.refine_detector("tiny"))
    assert jobs.refine_temperature("tiny", "300K") == full.refine_temperature()
    assert jobs.index_parent("tiny", "300K") == full.index_parent("tiny")
    assert jobs.merge_entries("transform", "tiny", "300K") == full.merge_entries("transform")
    # plain snakemake's table (or a watcher's): none
    assert set_aside_rows("config/scans.tsv", tiny_copy) == ()


@pytest.mark.slow
def test_going_on_without_a_gone_row_says_so_in_the_summary_and_the_results(tiny_run, tmp_path):
    """--set-aside-gone: the temperature is made again without the row, and the end of the
    run and the notes of its orientation and volumes say which row they lack."""
    import shutil

    import h5py

    from hklflow.files.volume import read_volume_header

    done, _, _, _ = tiny_run
    exp = tmp_path / "experiment"
    shutil.copytree(done, exp, symlinks=True)
    (exp / "raw/tiny/300K/f2.h5").rename(exp / "raw/tiny/300K/f2.h5.away")  # moved away
    r = subprocess.run([sys.executable, "-m", "hklflow", "run", str(exp), "--set-aside-gone",
                        "--", "--cores", "2"], capture_output=True, text=True, timeout=900,
                       env=dict(os.environ, HDF5_USE_FILE_LOCKING="FALSE"))
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    line = ("set aside: config/scans.tsv row 2 (tiny/300K/f2): no file matches "
            "'raw/tiny/300K/f2.h5' yet")
    assert r.stdout.splitlines()[0] == line and r.stdout.splitlines()[-2] == line
    for kind in ("transform", "masked_transform"):
        notes = read_volume_header(exp / f"results/tiny/300K/{kind}.nxs").notes
        assert notes["set_aside"] == [line] and len(notes["inputs"]) == 1
    with h5py.File(exp / "results/tiny/300K/parent_orientation.nxs", "r") as f:
        notes = f["orientation/refinement/notes"][()].decode()
    assert f"made without {line}" in notes.splitlines()
    # the sample's orientation table repeats it for that temperature
    table = (exp / "results/tiny/orientation_table.tsv").read_text().splitlines()
    assert f"# 300K: made without {line}" in table, table[:12]
    symmetrized = exp / "results/tiny/300K/transform_symmetrized.nxs"
    if symmetrized.is_file():  # (its notes nest the merged volume's)
        assert read_volume_header(symmetrized).notes["input_notes"]["set_aside"] == [line]
    notes = read_volume_header(exp / "results/tiny/100K/transform.nxs").notes
    assert "set_aside" not in notes
