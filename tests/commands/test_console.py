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
    assert lines[2:6] == ["  results/calibration/ceo2/calibration.png",
                          "  results/s/300K/orientation.png",
                          "  results/s/300K/masked_transform_symmetrized.png",
                          "  results/s/pdf_temperature_series.png"]
    assert lines[6:] == ["warnings (1, from the jobs' logs):",
                         "  merge_entries: left out of the merge: s/300K/f2"]


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
