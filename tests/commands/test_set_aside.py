"""`hklflow run` sets aside the scans-table rows whose data do not exist yet, a line each,
and reduces the others (hklflow.commands.set_aside; issue 70); plain `snakemake` keeps refusing
such a row while it plans (test_missing_raw_file_stops_before_any_job_naming_it)."""
from __future__ import annotations

import os
import subprocess
import sys

from hklflow.commands.set_aside import configfile_arguments, find_set_aside, snakemake_arguments
from hklflow.planning.config import load_experiment

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
