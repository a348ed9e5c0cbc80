"""What `hklflow run` shows (hklflow.commands.console): the run's job events (hklflow's logger
plugin, hklflow.planning.job_events) taken one by one into a line per finished rule, a
failed job's own message with its log, and the closing summary.  The tiny experiment's
whole console is checked in test_workflow.py (conftest.tiny_run runs `hklflow run`); a
real Snakemake's events read by the console in tests/plugins/test_logger_plugin.py."""
from __future__ import annotations

import os
import time

from hklflow.commands import console
from hklflow.commands.run import _passes_through
from hklflow.planning.snakemake_compat import STOPPED_PLAN


def _job(event: str, jobid: int, rule: str, log: str | None = None, **more) -> dict:
    return {"event": event, "jobid": jobid, "rule": rule, "wildcards": more.pop("wildcards", {}),
            "log": [log] if log else [], "output": more.pop("output", []), **more}


# a run as the logger plugin writes it: ingest_scan complete, find_peaks half done and failed
EVENTS = [
    {"event": "opened", "schema": 1, "dryrun": False},
    {"event": "planned", "jobs": {"ingest_scan": 2, "find_peaks": 2, "all": 1}, "total": 5},
    _job("started", 2, "ingest_scan", "logs/ingest_scan/s/300K/f1.log"),
    _job("finished", 2, "ingest_scan", "logs/ingest_scan/s/300K/f1.log"),
    {"event": "progress", "done": 1, "total": 5},
    _job("started", 3, "ingest_scan", "logs/ingest_scan/s/300K/f2.log"),
    _job("finished", 3, "ingest_scan", "logs/ingest_scan/s/300K/f2.log"),
    _job("started", 4, "find_peaks", "logs/find_peaks/s/300K/f1.log"),
    _job("finished", 4, "find_peaks", "logs/find_peaks/s/300K/f1.log"),
    _job("started", 5, "find_peaks", "logs/find_peaks/s/300K/f2.log"),
    _job("failed", 5, "find_peaks", "logs/find_peaks/s/300K/f2.log", message=None,
         output=["results/s/300K/f2/peaks.nxs"]),
]


def test_progress_shows_a_line_per_finished_rule_and_remembers_failures():
    progress = console.Progress()
    shown = [line for event in EVENTS for line in progress.feed(event)]
    assert progress.planned == {"ingest_scan": 2, "find_peaks": 2, "all": 1}
    assert shown[0] == "4 jobs of 2 rules to run"
    assert len(shown) == 2  # ingest_scan complete; find_peaks only half
    assert "ingest_scan" in shown[1] and " 2/2 " in shown[1] and "(2 of 4 jobs, about" in shown[1]
    assert progress.failures == [("find_peaks", "logs/find_peaks/s/300K/f2.log")]
    assert progress.running == {} and not progress.nothing_to_do


def test_a_run_with_nothing_to_do_plans_no_job():
    progress = console.Progress()
    progress.feed({"event": "opened", "schema": 1, "dryrun": False})
    assert progress.nothing_to_do
    progress.feed({"event": "error", "exception": "LockException", "message": "..."})
    assert not progress.nothing_to_do  # (refused: nothing was planned, nothing is up to date)
    assert not console.Progress().nothing_to_do  # (no event: Snakemake stopped before its loggers)


def test_a_failure_shows_the_steps_own_message_and_its_log(tmp_path):
    log = tmp_path / "logs/find_peaks/s/300K/f2.log"
    log.parent.mkdir(parents=True)
    log.write_text("2026-11-28 16:27:51 hklflow.find_peaks INFO: reading\n"
                   "2026-11-28 16:27:52 hklflow.find_peaks ERROR: find_peaks failed: raw/f2.h5: "
                   "frame 3 cannot be read\n\n")
    lines = console.failure_lines(tmp_path, [("find_peaks", "logs/find_peaks/s/300K/f2.log")])
    assert lines == ["FAILED find_peaks: find_peaks failed: raw/f2.h5: frame 3 cannot be read",
                     "  log: logs/find_peaks/s/300K/f2.log"]


def test_the_summary_names_the_results_the_pictures_and_every_new_warning(tmp_path):
    since = time.time()
    for path in ("results/calibration/ceo2/calibration.png", "results/s/300K/orientation.png",
                 "results/s/300K/transform.nxs", "results/s/300K/masked_transform.nxs",
                 "results/s/300K/masked_transform_symmetrized.png",
                 "results/s/pdf_temperature_series.png"):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_bytes(b"x")
    old = tmp_path / "logs/merge_entries/s/100K.log"
    old.parent.mkdir(parents=True)
    old.write_text("2026-11-27 10:00:00 hklflow.merge_entries WARNING: from an earlier run\n")
    os.utime(old, (since - 3600, since - 3600))
    new = tmp_path / "logs/merge_entries/s/300K.log"
    new.write_text("2026-11-28 16:00:00 hklflow.merge_entries WARNING: left out of the merge: "
                   "s/300K/f2\n" * 2)
    lines = console.summary(tmp_path, since)
    assert lines[0] == "results/s/: 300K: masked_transform.nxs, transform.nxs"
    assert lines[1] == "open first:"
    assert lines[2:6] == ["  results/s/pdf_temperature_series.png",  # the physics first
                          "  results/s/300K/masked_transform_symmetrized.png",
                          "  results/s/300K/orientation.png",
                          "  results/calibration/ceo2/calibration.png"]
    assert lines[6:] == ["warnings (1, from the jobs' logs):",
                         "  merge_entries: left out of the merge: s/300K/f2"]


def test_the_summary_names_the_experiment_page_when_there_is_one(tmp_path):
    (tmp_path / "results/s/300K").mkdir(parents=True)
    assert not any("report.html" in line for line in console.summary(tmp_path, time.time()))
    (tmp_path / "results/report.html").write_text("<html></html>")
    assert "the experiment on one page: results/report.html" in console.summary(tmp_path,
                                                                                 time.time())


def test_dry_runs_and_graphs_show_snakemakes_own_output():
    for args in (["-n"], ["--cores", "2", "-np"], ["--dag"], ["--unlock"], ["--dry-run"]):
        assert _passes_through(args), args
    for args in ([], ["--cores", "2"], ["--profile", "profiles/slurm", "-k"]):
        assert not _passes_through(args), args


def test_a_steps_last_progress_line_becomes_the_consoles_text():
    log = ("2026-11-28 16:53:10 hklflow.transform_frames INFO: grid in memory: 0.03 GB\n"
           "2026-11-28 16:53:20 hklflow.transform_frames INFO: frames transformed: 600/3650 "
           "(40.0/s)\n"
           "2026-11-28 16:53:30 hklflow.transform_frames INFO: frames transformed: 1200/3650 "
           "(40.0/s)\n"
           "2026-11-28 16:53:31 hklflow.transform_frames INFO: something else\n")
    assert console.job_progress_text(log) == "frames transformed 1200/3650, ~0:01:01 left"
    done = ("2026-11-28 16:54:07 hklflow.merge_entries INFO: summing 2 volumes, L planes: "
            "121/121 (39.9/s)")
    assert console.job_progress_text(done) == "summing 2 volumes, L planes 121/121"
    assert console.job_progress_text("2026-11-28 16:53:10 hklflow.find_peaks INFO: reading\n") == ""


RUNNING = [
    {"event": "planned", "jobs": {"transform_frames": 2, "all": 1}, "total": 3},
    _job("started", 7, "transform_frames", "logs/transform_frames/s/300K/f1/00000-00059.log",
         wildcards={"sample": "s", "temperature": "300K", "entry": "f1", "frames": "00000-00059"},
         output=["results/s/300K/f1/transform_parts/00000-00059.nxs"]),
    _job("started", 8, "transform_frames", "logs/transform_frames/s/300K/f2/00000-00059.log"),
]


def _running(tmp_path):
    progress = console.Progress()
    for event in RUNNING:
        progress.feed(event)
    log = tmp_path / "logs/transform_frames/s/300K/f2/00000-00059.log"
    log.parent.mkdir(parents=True)
    log.write_text("2026-11-28 16:38:20 hklflow.transform_frames INFO: frames transformed: "
                   "1200/3650 (40.0/s)\n")
    return progress


def test_a_running_jobs_progress_rewrites_its_rules_line_on_a_terminal(tmp_path, monkeypatch):
    import io

    monkeypatch.setenv("COLUMNS", "200")  # (the line is cut to the terminal's width)
    progress = _running(tmp_path)
    assert {k: (j.rule, j.name) for k, j in progress.running.items()} == {
        7: ("transform_frames", "s/300K/f1/00000-00059"),
        8: ("transform_frames", "s/300K/f2/00000-00059")}
    out = io.StringIO()
    screen = console.LiveLine(tmp_path, out, terminal=True)
    screen.update(progress)
    screen.update(progress)  # (the same text: not written again)
    shown = out.getvalue()
    assert shown == ("\r  transform_frames 0/2: s/300K/f2/00000-00059 frames transformed "
                     "1200/3650, ~0:01:01 left  [0:00:00, 0 of 2 jobs]\x1b[K")
    monkeypatch.setenv("COLUMNS", "60")
    screen.update(progress)
    assert out.getvalue()[len(shown):] == ("\r  transform_frames 0/2: s/300K/f2/00000-00059 "
                                           "frames transf\x1b[K")  # 59 characters
    screen.show("a finished rule's line")  # clears the progress line first
    assert out.getvalue().endswith("\r\x1b[Ka finished rule's line\n")
    progress.feed(_job("finished", 8, "transform_frames"))
    progress.feed(_job("failed", 7, "transform_frames", message=None))
    assert progress.running == {}


def test_without_a_terminal_progress_is_a_new_line_at_most_every_few_minutes(tmp_path):
    import io

    progress = _running(tmp_path)
    out = io.StringIO()
    console.LiveLine(tmp_path, out, terminal=False).update(progress)
    assert out.getvalue() == ""  # (PROGRESS_EVERY_S_WITHOUT_TERMINAL not yet passed)
    screen = console.LiveLine(tmp_path, out, terminal=False, every=0.0)
    screen.update(progress)
    screen.update(progress)  # nothing new to say: no second line
    assert out.getvalue().count("\n") == 1 and "\r" not in out.getvalue()
    assert out.getvalue() == ("  transform_frames 0/2: s/300K/f2/00000-00059 frames transformed "
                              "1200/3650, ~0:01:01 left  [0:00:00, 0 of 2 jobs]\n")


def test_a_failed_run_ends_with_failed_and_its_reason_not_with_earlier_results(tmp_path):
    """Results and pictures of an earlier run are in the experiment: a failed run's last
    lines are still FAILED with the job's message and log, then Snakemake's output; a plan
    stopped by hklflow ends with its problem; a lock with the advice."""
    for path in ("results/s/300K/transform.nxs", "results/s/300K/orientation.png"):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_bytes(b"x")
    log = tmp_path / "logs/find_peaks/s/300K/f1.log"
    log.parent.mkdir(parents=True)
    log.write_text("2026-11-29 10:00:00 hklflow.find_peaks ERROR: find_peaks failed: raw/f1.h5: "
                   "frame 7 cannot be read\n")
    progress = console.Progress()
    for event in ({"event": "planned", "jobs": {"find_peaks": 2}, "total": 2},
                  {"event": "failed", "jobs": 1, "rule": "find_peaks", "jobid": 3,
                   "log": ["logs/find_peaks/s/300K/f1.log"], "wildcards": {}, "output": []}):
        progress.feed(event)
    run_log = tmp_path / "logs/hklflow/run-1.log"
    lines = console.failed(tmp_path, time.time() - 10, progress, run_log, [])
    assert lines[-3:] == ["FAILED find_peaks: find_peaks failed: raw/f1.h5: frame 7 cannot be read",
                          "  log: logs/find_peaks/s/300K/f1.log",
                          "Snakemake's output: logs/hklflow/run-1.log"]
    assert not any("open first" in line or "no warnings" in line or "results/" in line
                   for line in lines)
    stopped = ["Building DAG of jobs...", "hklflow: invalid configuration: c.yaml: 2 problems:",
               "  field 'a': still FILL_IN", "  field 'b': unknown key 'x'", STOPPED_PLAN]
    lines = console.failed(tmp_path, time.time(), console.Progress(), run_log, stopped)
    assert lines == ["FAILED: invalid configuration: c.yaml: 2 problems:",
                     "  field 'a': still FILL_IN", "  field 'b': unknown key 'x'",
                     "Snakemake's output: logs/hklflow/run-1.log"]
    lines = console.failed(tmp_path, time.time(), console.Progress(), run_log, ["x"],
                           locked="the experiment directory is locked")
    assert lines[-2:] == ["FAILED: the experiment directory is locked",
                          "Snakemake's output: logs/hklflow/run-1.log"]
    other = ["Building DAG of jobs...", "SomethingError: what Snakemake says"]
    lines = console.failed(tmp_path, time.time(), console.Progress(), run_log, other)
    assert lines[0] == "FAILED: Snakemake stopped; the last lines of its output:"
    assert lines[1:3] == ["  Building DAG of jobs...", "  SomethingError: what Snakemake says"]


def test_the_first_run_note_looks_where_numba_caches_the_kernel_a_run_compiles(tmp_path,
                                                                               monkeypatch):
    """kernel_cache_cold's note ("first run of this installation") goes once numba has cached
    the transform's kernel in either form, wherever numba's locators put it: the package's
    __pycache__, NUMBA_CACHE_DIR, the user's cache folder (issue 85: it looked for
    `_accumulate` alone, which runs of bitshuffle-LZ4 frames never compile, so a wheel
    install said so on every run).  The places and file names are numba's own."""
    import fnmatch
    import subprocess
    import sys
    from pathlib import Path

    from hklflow.algorithms.transform import kernels, stream_kernels

    for kernel in (kernels._accumulate, stream_kernels.accumulate_stream):
        index = kernel._cache._cache_file._index_name
        assert any(fnmatch.fnmatch(index, m) for m in console.KERNEL_CACHE_MARKERS), index
    # numba's own cache folders for NUMBA_CACHE_DIR and for the user's cache folder
    code = ("import inspect\nfrom numba.core.caching import UserProvidedCacheLocator, "
            "UserWideCacheLocator\nfrom hklflow.algorithms.transform.stream_kernels import "
            "accumulate_stream as k\nf = inspect.getfile(k.py_func)\n"
            "print(UserProvidedCacheLocator(k.py_func, f).get_cache_path())\n"
            "print(UserWideCacheLocator(k.py_func, f).get_cache_path())\n")
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "numba-dir"),
               XDG_CACHE_HOME=str(tmp_path / "xdg"))
    numba_places = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                                  text=True, check=True).stdout.split()
    monkeypatch.setenv("NUMBA_CACHE_DIR", env["NUMBA_CACHE_DIR"])
    monkeypatch.setenv("XDG_CACHE_HOME", env["XDG_CACHE_HOME"])
    places = [str(p) for p in console.kernel_cache_places()]
    assert places[0] == numba_places[0] and numba_places[1] in places
    assert places[1] == str(Path(kernels.__file__).parent / "__pycache__")
    # an installation whose kernels were never compiled, then compiled in each place
    fake = tmp_path / "site-packages" / "hklflow"
    monkeypatch.setattr(console, "__file__", str(fake / "commands" / "console.py"))
    assert "first run of this installation" in console.kernel_cache_cold()
    for place, name in zip(console.kernel_cache_places(),
                           ("stream_kernels.accumulate_stream-18.py311.nbi",
                            "kernels._accumulate-485.py311.nbi",
                            "stream_kernels.accumulate_stream-18.py311.nbi")):
        place.mkdir(parents=True)
        (place / name).touch()
        assert console.kernel_cache_cold() is None, place
        (place / name).unlink()
        assert console.kernel_cache_cold() is not None
