"""hklflow watch and status (hklflow.live): which frames each run reduces, the live scans
table the workflow runs on, the status screen; and end to end, a watched acquisition of
the tiny experiment whose final results are the batch results."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from hklflow.live.state import LiveState, ScanState
from hklflow.live.status import screen, stage
from hklflow.live.table import live_table_text, user_rows, write_live_files
from hklflow.live.watch import Watcher, failed_jobs
from hklflow.planning.config import LIVE_SCANS_TABLE, load_experiment, load_settings

from conftest import job_counts, run_snakemake

LIVE = {"first_preview_degrees": 20, "preview_every_degrees": 10, "preview_every_seconds": 30, "reorient_voxels": 0.25, "preview_share": 0.5,
        "poll_seconds": 2, "stall_seconds": 300, "finish_stalled": False, "preview_pdf": False}


class _Log:
    def info(self, *a):
        pass

    warning = error = exception = info


def _watcher(expdir: Path, **live) -> Watcher:
    w = Watcher(expdir, [], _Log())
    w.live = dict(LIVE, **live)
    return w


def _scan(sid="tiny/300K/f1", planned=60, step=1.0, **kw) -> ScanState:
    s = ScanState(sid, {}, planned, step)
    for k, v in kw.items():
        setattr(s, k, v)
    return s


# --------------------------------------------------------------------------------------
# What each run reduces
# --------------------------------------------------------------------------------------
def test_a_scan_enters_after_its_first_degrees_then_grows_by_blocks(tiny_experiment):
    w = _watcher(tiny_experiment)
    s = _scan(landed=19)
    assert w.frames_to_reduce(s, now=100.0) == 0  # 19 deg < first_preview_degrees
    s.landed = 20
    assert w.frames_to_reduce(s, now=100.0) == 20
    s.reduced, s.reduced_at = 20, 100.0
    s.landed = 29  # less than a block (10 deg) more, and not yet 30 s
    assert w.frames_to_reduce(s, now=110.0) == 20
    assert w.frames_to_reduce(s, now=130.0) == 29  # ... but 30 s passed with new frames
    s.landed = 30
    assert w.frames_to_reduce(s, now=101.0) == 30
    s.landed = 60
    assert w.frames_to_reduce(s, now=101.0) == 60 and s.complete


def test_previews_rest_as_long_as_the_last_took_and_finals_never_wait(tiny_experiment):
    """live.preview_share 0.5: after a preview run of 20 s, no new preview for 20 s; a scan
    whose last frame landed goes to its final run at once (its lag would grow by the rest)."""
    w = _watcher(tiny_experiment)
    w.previews_rest_until = 120.0  # (a preview run from 80 s to 100 s)
    s = _scan(landed=45, reduced=20, reduced_at=90.0)
    assert w.frames_to_reduce(s, now=110.0) == 20
    assert w.frames_to_reduce(_scan(landed=30), now=110.0) == 0  # (a new scan waits too)
    assert w.frames_to_reduce(s, now=120.0) == 45
    s.landed = 60
    assert w.frames_to_reduce(s, now=110.0) == 60 and s.complete


def test_removed_previews_wait_for_the_next_block_while_frames_land(tiny_experiment):
    """Previews removed at 100 s (a new provisional orientation) and a rest until 110 s:
    while a scan's frames land, its next block's run makes them again, and a run of their
    own comes only live.preview_every_seconds (30 s) after the removal; with no frame
    landing, it comes once the rest is over."""
    w = _watcher(tiny_experiment)
    w.previews_rest_until, w.previews_removed_at = 110.0, 100.0
    w.state.scans["tiny/300K/f1"] = _scan(landed=60, reduced=60)  # (complete)
    assert not w.remake_due(105.0)  # (resting)
    assert w.remake_due(111.0)  # (nothing landing)
    w.state.scans["tiny/300K/f2"] = _scan("tiny/300K/f2", landed=12, last_growth=110.5)
    assert not w.remake_due(111.0) and not w.remake_due(129.0)
    assert w.remake_due(130.0)
    w.previews_removed_at = None
    assert not w.remake_due(200.0)


def test_a_scan_with_a_problem_or_an_aborted_one_is_held_until_finished(tiny_experiment):
    w = _watcher(tiny_experiment)
    assert w.frames_to_reduce(_scan(landed=40, problem="replaced"), now=0.0) == 0
    stalled = _scan(landed=40, reduced=40, last_growth=0.0)
    assert stalled.stalled(now=400.0, stall_seconds=300) and not stalled.complete
    assert stage(stalled, 400.0, 300) == "stalled"
    stalled.finish = True  # hklflow watch --finish: as far as it went
    assert stalled.complete and stalled.frames_when_complete == 40
    assert w.frames_to_reduce(stalled, now=400.0) == 40


def test_landing_times_give_the_lag(tiny_experiment):
    s = _scan()
    s.saw(10, 100.0)
    s.saw(10, 105.0)  # no growth: no new landing
    s.saw(30, 110.0)
    assert s.landings == [[100.0, 10], [110.0, 30]] and s.last_growth == 110.0
    assert s.landed_at(10) == 100.0 and s.landed_at(11) == 110.0 and s.landed_at(31) is None


def test_a_temperature_waits_for_its_parent(tiny_experiment):
    w = _watcher(tiny_experiment)
    rows = {r["entry"] + str(r["temperature"]): r for r in
            user_rows(tiny_experiment, "config/scans.tsv", w.settings.offset_names)}
    w.state = LiveState()
    child = _scan("tiny/100K/f1", landed=60)
    child.row = rows["f1100.0"]
    w.state.scans[child.id] = child
    assert w.live_rows(now=0.0)[0] == []  # the parent (300 K) has nothing yet
    parent = _scan("tiny/300K/f1", landed=25)
    parent.row = rows["f1300.0"]
    w.state.scans[parent.id] = parent
    got, markers = w.live_rows(now=0.0)
    assert [(r["entry"], r["temperature"], r["nframes"], r["planned_frames"]) for r in got] == \
        [("f1", 100.0, 60, 0), ("f1", 300.0, 25, 60)]
    assert list(markers) == ["tiny/300K/f1"]  # only scans in progress have a marker


# --------------------------------------------------------------------------------------
# The live table
# --------------------------------------------------------------------------------------
def test_the_live_table_gives_complete_rows_the_batch_settings(tiny_copy):
    settings = load_settings([str(tiny_copy / "config/config.yaml")])
    rows = user_rows(tiny_copy, "config/scans.tsv", settings.offset_names)
    live = [dict(rows[0], nframes=25, planned_frames=60)] + rows[1:]
    assert write_live_files(tiny_copy, live, {"tiny/300K/f1": "{}\n"}, settings.offset_names)
    assert not write_live_files(tiny_copy, live, {"tiny/300K/f1": "{}\n"}, settings.offset_names)
    batch = load_experiment(tiny_copy / "config/config.yaml", base_dir=tiny_copy)
    watched = load_experiment([tiny_copy / "config/config.yaml", tiny_copy / "live/config.yaml"],
                              base_dir=tiny_copy)
    assert watched.scans_table == LIVE_SCANS_TABLE
    first, *others = watched.scans
    assert first.in_progress and first.nframes == 25 and first.planned_frames == 60
    assert first.settings()["planned_frames"] == 60
    assert [s.settings() for s in others] == [s.settings() for s in batch.scans[1:]]
    assert (tiny_copy / "live/landed/tiny/300K/f1.json").is_file()
    # the scan completes: its marker goes, its row is the batch row
    write_live_files(tiny_copy, rows, {}, settings.offset_names)
    assert not (tiny_copy / "live/landed/tiny/300K/f1.json").exists()
    assert "planned_frames" not in live_table_text(rows, settings.offset_names).split("\n")[2]


def test_a_scan_in_progress_is_planned_on_its_marker_not_its_growing_file(tiny_copy):
    """A dry run between two blocks plans nothing, however the raw file changed; a new
    block (a rewritten marker) replans the scan's ingest and what follows."""
    settings = load_settings([str(tiny_copy / "config/config.yaml")])
    rows = user_rows(tiny_copy, "config/scans.tsv", settings.offset_names)
    live = [dict(r, nframes=30, planned_frames=60) for r in rows if r["temperature"] == 300.0]
    write_live_files(tiny_copy, live, {f"tiny/300K/{e}": f"{{\"frames\": 30, \"{e}\": 1}}\n"
                                       for e in ("f1", "f2")}, settings.offset_names)
    args = ["--configfile", str(tiny_copy / "config/config.yaml"), str(tiny_copy / "live/config.yaml")]
    r = run_snakemake(tiny_copy, *args, "-n", "--cores", "1", "--until", "ingest_scan")
    assert r.returncode == 0, r.stderr
    assert job_counts(r.stdout).get("ingest_scan") == 2
    assert "live/landed/tiny/300K/f1.json" in r.stdout
    r = run_snakemake(tiny_copy, *args, "--cores", "1", "--until", "ingest_scan")
    assert r.returncode == 0, r.stderr
    from hklflow.files.scan import read_scan_file

    rec = read_scan_file(tiny_copy / "results/tiny/300K/f1/scan.nxs")
    assert rec.nframes == 30 and rec.planned_frames == 60 and rec.frames.growing
    assert rec.frames.fingerprints == ()  # a growing file has none
    raw = tiny_copy / "raw/tiny/300K/f1.h5"
    os.utime(raw, (time.time() + 5, time.time() + 5))  # the detector wrote more
    r = run_snakemake(tiny_copy, *args, "-n", "--cores", "1", "--until", "ingest_scan")
    assert r.returncode == 0 and "ingest_scan" not in job_counts(r.stdout), r.stdout
    # a new block: the scan's ingest again
    (tiny_copy / "live/landed/tiny/300K/f1.json").write_text('{"frames": 40}\n')
    r = run_snakemake(tiny_copy, *args, "-n", "--cores", "1", "--until", "ingest_scan")
    assert job_counts(r.stdout).get("ingest_scan") == 1, r.stdout


def test_a_preview_searches_only_the_block_that_landed_since_the_last_one(tiny_copy):
    """Issue 82: each block of frames of a scan in progress is searched once (find_peaks_block,
    its marker written once by the watcher), and the entry's peaks are its blocks' put
    together: after a preview of frames 0-30, the next (0-45) plans the search of 30-45 only,
    and a dry run between two previews plans nothing.  Complete, the scan is searched whole
    and its blocks' markers go."""
    from hklflow.files.peaks import read_peaks_file

    settings = load_settings([str(tiny_copy / "config/config.yaml")])
    rows = [r for r in user_rows(tiny_copy, "config/scans.tsv", settings.offset_names)
            if r["temperature"] == 300.0]

    def preview(frames):
        live = [dict(r, nframes=frames, planned_frames=60) for r in rows]
        write_live_files(tiny_copy, live, {f"tiny/300K/{r['entry']}": f'{{"frames": {frames}}}\n'
                                           for r in rows}, settings.offset_names)

    args = ["--configfile", str(tiny_copy / "config/config.yaml"),
            str(tiny_copy / "live/config.yaml"), "--cores", "2", "--until", "find_peaks"]
    preview(30)
    assert sorted(p.name for p in (tiny_copy / "live/landed/tiny/300K/f1").iterdir()) == \
        ["00000-00030.json"]
    r = run_snakemake(tiny_copy, *args)
    assert r.returncode == 0, r.stderr[-3000:]
    assert run_snakemake(tiny_copy, *args, "-n").stdout.count("rule ") == 0
    preview(45)
    assert sorted(p.name for p in (tiny_copy / "live/landed/tiny/300K/f1").iterdir()) == \
        ["00000-00030.json", "00030-00045.json"]
    r = run_snakemake(tiny_copy, *args, "-n", "-p")
    counts = job_counts(r.stdout)
    assert counts.get("find_peaks_block") == 2 and counts.get("find_peaks") == 2, r.stdout
    assert "--frames 00030-00045" in r.stdout and "--frames 00000-00030" not in r.stdout
    r = run_snakemake(tiny_copy, *args)
    assert r.returncode == 0, r.stderr[-3000:]
    peaks = read_peaks_file(tiny_copy / "results/tiny/300K/f1/peaks.nxs")
    assert list(peaks.frame_stats["frame_number"]) == list(range(45))
    assert "2 blocks of 45 frames put together" in \
        (tiny_copy / "logs/find_peaks/tiny/300K/f1.log").read_text()
    # f1 complete while f2 is not: f1 stays in blocks (the temperature's final run is its only
    # full pass), and only its last block is new
    live = [dict(rows[0], nframes=60, planned_frames=0), dict(rows[1], nframes=45,
                                                            planned_frames=60)]
    write_live_files(tiny_copy, live, {"tiny/300K/f2": '{"frames": 45}\n'}, settings.offset_names)
    r = run_snakemake(tiny_copy, *args, "-n", "-p")
    counts = job_counts(r.stdout)
    assert counts.get("find_peaks_block") == 1 and "--frames 00045-00060" in r.stdout, r.stdout
    assert counts.get("find_peaks") == 1 and "tiny/300K/f2" not in r.stdout, r.stdout
    # the temperature complete: every scan searched whole, as batch; the blocks' markers go
    write_live_files(tiny_copy, rows, {}, settings.offset_names)
    assert not list((tiny_copy / "live/landed").rglob("*.json"))
    r = run_snakemake(tiny_copy, *args, "-n", "-p")
    assert job_counts(r.stdout).get("find_peaks") == 2 and "find_peaks_block" not in r.stdout
    assert "--blocks" not in r.stdout


def test_failed_jobs_are_read_from_the_runs_job_events():
    """Each failed job of a run (its `failed` event from hklflow's logger plugin): its rule,
    the scan or temperature it belongs to (its wildcards: a sample-wide job belongs to every
    scan) and its log."""
    def failed(jobid, rule, wildcards, log):
        return {"event": "failed", "jobid": jobid, "rule": rule, "wildcards": wildcards,
                "log": [log], "output": [], "message": None}

    events = [
        {"event": "opened", "schema": 1, "dryrun": False},
        {"event": "started", "jobid": 4, "rule": "ingest_scan", "wildcards": {}, "log": [],
         "output": []},
        failed(5, "find_peaks", {"sample": "tiny", "temperature": "300K", "entry": "f1"},
               "logs/find_peaks/tiny/300K/f1.log"),
        failed(7, "index_parent", {"sample": "tiny", "temperature": "300K"},
               "logs/index_parent/tiny/300K.log"),
        failed(9, "define_grid", {"sample": "tiny"}, "logs/define_grid/tiny.log"),
        {"event": "error", "exception": "WorkflowError", "message": "At least one job did not "
         "complete successfully."}]
    assert failed_jobs(events) == [
        {"rule": "find_peaks", "scan": "tiny/300K/f1", "log": "logs/find_peaks/tiny/300K/f1.log"},
        {"rule": "index_parent", "scan": "tiny/300K", "log": "logs/index_parent/tiny/300K.log"},
        {"rule": "define_grid", "scan": "", "log": "logs/define_grid/tiny.log"}]


def test_the_watchers_runs_carry_the_logger_and_a_lock_refusal_is_read_from_their_events(
        tiny_experiment, tmp_path, monkeypatch):
    import hklflow.live.watch as watch

    w = _watcher(tiny_experiment)
    w.expdir = tmp_path
    w.live = dict(w.live, warm_starts=False)  # (Popen below stands in for Snakemake alone)
    started = []

    class _Snakemake:
        pid = 12345

        def __init__(self, cmd, **kw):
            started.append(cmd)

        def wait(self):
            return 1

    monkeypatch.setattr(watch.subprocess, "Popen", _Snakemake)
    (tmp_path / "live/logs").mkdir(parents=True)
    events = tmp_path / "live/logs/run-0001.events.jsonl"
    assert w.run_snakemake(["--cores", "1"], events=events) == 1
    assert started[0][3:7] == ["--logger", "hklflow", "--logger-hklflow-file", str(events)]
    assert w.run_snakemake(["--unlock"]) == 1 and "--logger" not in started[1]
    assert not w.lock_refused()  # (no run yet)
    w.state.last_run = {"number": 1, "events": "live/logs/run-0001.events.jsonl"}
    lines = ['{"event": "opened", "schema": 1, "dryrun": false}',
             '{"event": "error", "exception": "WorkflowError", "message": "..."}']
    events.write_text("\n".join(lines) + "\n")
    assert not w.lock_refused()
    events.write_text('{"event": "opened"}\n{"event": "error", "exception": "LockException", '
                      '"message": "..."}\n')
    assert w.lock_refused()


def test_the_status_screen_names_every_scan_its_stage_and_its_error():
    state = LiveState()
    state.scans["tiny/300K/f1"] = _scan(landed=60, reduced=60, results=60)
    state.scans["tiny/300K/f2"] = _scan("tiny/300K/f2", landed=40, reduced=30, results=30,
                                        landings=[[0.0, 30], [50.0, 40]])
    state.scans["tiny/100K/f1"] = _scan("tiny/100K/f1", landed=20, reduced=20,
                                        error="find_peaks failed (log: logs/find_peaks/x.log)")
    text = screen(state, LIVE, now=60.0)
    lines = text.splitlines()
    assert "final" in lines[1] and "tiny/300K/f1" in lines[1]
    # (final, but its temperature's volumes stay previews until f2 is final too: issue 86)
    assert lines[1].endswith("final; tiny/300K waits for f2"), lines[1]
    assert "preview" in lines[2] and "10 s" in lines[2]  # frame 31 landed at 50 s
    assert "failed" in lines[3] and "logs/find_peaks/x.log" in lines[4]
    state.scans["tiny/300K/f2"].set_aside = "config/scans.tsv: row 2 ..."
    assert screen(state, LIVE, now=60.0).splitlines()[1].endswith("final")


def test_while_a_run_goes_the_stages_say_what_it_makes_of_each_scan():
    """Issue 82: the status names the run going's work on each scan (its first block, a
    preview, the final run) and the jobs of the scan or its temperature running now."""
    state = LiveState()
    state.scans["tiny/300K/f1"] = _scan(landed=60, reduced=60, results=40)
    state.scans["tiny/300K/f2"] = _scan("tiny/300K/f2", landed=50, reduced=50, results=30)
    state.scans["tiny/100K/f1"] = _scan("tiny/100K/f1", landed=20, reduced=20)
    state.scans["tiny/100K/f2"] = _scan("tiny/100K/f2", landed=10)  # (not in this run)
    state.last_run = {"number": 3, "start": 0.0, "end": None,
                      "frames": {"tiny/300K/f1": 60, "tiny/300K/f2": 50, "tiny/100K/f1": 20},
                      "jobs": [["transform_frames", "tiny/300K/f1"],
                               ["merge_entries", "tiny/300K"], ["find_peaks", "tiny/100K/f1"]]}
    lines = screen(state, LIVE, now=60.0).splitlines()
    assert lines[1].endswith("final run going: merge_entries, transform_frames"), lines[1]
    assert lines[2].endswith("preview run going (50 frames): merge_entries"), lines[2]
    assert lines[3].endswith("reducing its first block: find_peaks"), lines[3]
    assert lines[4].endswith("waiting for its first block"), lines[4]
    assert "running for 60 s" in lines[-1]
    state.last_run.update(end=70.0, rc=0, jobs=[])  # (over: the stages of the results)
    lines = screen(state, LIVE, now=80.0).splitlines()
    assert "final run pending" in lines[1] and lines[2].endswith("preview"), lines[1:3]


def test_the_observer_shows_the_jobs_of_the_run_going(tiny_experiment, tmp_path):
    """The observer thread's pass writes live/state.json and results/status.html with the
    jobs running now, from the run's job events as they are appended."""
    from hklflow.planning.job_events import Follower

    w = _watcher(tiny_experiment)
    w.expdir = tmp_path
    (tmp_path / "results").mkdir()
    w.state.scans["tiny/300K/f1"] = _scan(landed=30, reduced=30)
    events = tmp_path / "run-0001.events.jsonl"
    w.state.last_run = {"number": 1, "start": time.time(), "end": None,
                        "frames": {"tiny/300K/f1": 30}, "jobs": []}
    w.run_events = Follower(events)
    job = {"rule": "find_peaks", "wildcards": {"sample": "tiny", "temperature": "300K",
                                                "entry": "f1"}}
    events.write_text(json.dumps({"event": "started", "jobid": 7, **job}) + "\n")
    w.follow_run()
    w.write_status(save=True)
    shown = LiveState.load(tmp_path)
    assert shown.last_run["jobs"] == [["find_peaks", "tiny/300K/f1"]]
    assert "reducing its first block: find_peaks" in (tmp_path / "results/status.html").read_text()
    with open(events, "a") as f:
        f.write(json.dumps({"event": "finished", "jobid": 7, **job}) + "\n")
    w.follow_run()
    w.write_status(save=True)
    assert LiveState.load(tmp_path).last_run["jobs"] == []


def test_a_watcher_started_before_the_acquisition_waits_for_its_config(tiny_experiment,
                                                                      tmp_path):
    """Issue 82: `hklflow watch` on a directory an acquisition has not written yet says what
    it waits for, and watches once the config is there (here: a scans table with no row
    yet; --once)."""
    where = tmp_path / "later"
    proc = subprocess.Popen([sys.executable, "-m", "hklflow", "watch", str(where), "--once"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        seen = ""  # (however long the watcher takes to start: the config comes after it waits)
        while "waiting for" not in seen and proc.poll() is None:
            seen += proc.stdout.readline()
        assert proc.poll() is None, seen  # (waiting)
        (where / "config").mkdir(parents=True)
        shutil.copy(tiny_experiment / "config/config.yaml", where / "config/config.yaml")
        header = (tiny_experiment / "config/scans.tsv").read_text().splitlines()[0]
        (where / "config/scans.tsv").write_text(header + "\n")
        out, _ = proc.communicate(timeout=120)
        out = seen + out
    finally:
        proc.kill()
    assert proc.returncode == 0, out
    assert f"waiting for {where / 'config/config.yaml'}" in out, out
    assert "written: watching" in out, out
    assert (where / "results/status.html").is_file()


# --------------------------------------------------------------------------------------
# End to end
# --------------------------------------------------------------------------------------
def _hklflow(*args, **kw):
    return subprocess.Popen([sys.executable, "-m", "hklflow", *args], **kw)


def _volume(path):
    from hklflow.files.volume import read_volume

    v = read_volume(path)
    return {"signal": v.signal, "weight": v.weight}


@pytest.mark.slow
def test_a_watched_acquisition_ends_with_the_batch_results(tmp_path, tiny_run):
    """The tiny experiment acquired at 4 frames/s (SWMR HDF5) with `hklflow watch` beside
    it: previews of scans in progress, then final results that batch Snakemake (on the
    experiment's own table) finds up to date and whose volumes equal a batch run's."""
    exp = tmp_path / "acquired"
    acquire = _hklflow("simulate", str(exp), "--preset", "tiny", "--acquire", "--fps", "4",
                       "--pause", "1", stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    while not (exp / "config/config.yaml").exists():
        assert acquire.poll() is None
        time.sleep(0.2)
    time.sleep(0.3)
    cfg = yaml.safe_load((exp / "config/config.yaml").read_text())
    cfg["live"] = {"first_preview_degrees": 15, "preview_every_degrees": 15, "poll_seconds": 0.5}
    # (sort_keys=False: offset_axes are listed outermost first)
    (exp / "config/config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    watch = subprocess.run([sys.executable, "-m", "hklflow", "watch", str(exp), "--cores", "2",
                            "--exit-when-idle", "3"], capture_output=True, text=True, timeout=900)
    assert acquire.wait(timeout=60) == 0
    assert watch.returncode == 0, watch.stderr[-3000:]
    history = [json.loads(x) for x in (exp / "live/history.jsonl").read_text().splitlines()]
    assert all(h["rc"] == 0 for h in history)
    previews = [h for h in history if any(n < 60 for n in h["frames"].values())]
    assert previews, "no preview of a scan in progress was made"
    assert any(h["final_lag_s"] for h in history)
    # each temperature's previews got a provisional orientation (the first: the workflow's
    # copy of the refined one, which has not moved), replaced only past live.reorient_voxels;
    # gone once final
    compared = [o for h in history for o in h["orientations"].values()]
    assert compared and compared[0] == {"moved_voxels": 0.0, "handed": False}
    assert all(o["handed"] == (o["moved_voxels"] is None or o["moved_voxels"] > 0.25)
               for o in compared)
    assert not list((exp / "live/orientation").rglob("*.nxs"))
    assert all(h["cpu_s"] > 0 for h in history)
    # each block of frames of a scan in progress was searched once; none is left
    events = [json.loads(x) for f in sorted((exp / "live/logs").glob("*.events.jsonl"))
              for x in f.read_text().splitlines()]
    searched = [tuple(sorted(e["wildcards"].items())) for e in events
                if e.get("event") == "finished" and e.get("rule") == "find_peaks_block"]
    assert searched and len(searched) == len(set(searched)), searched
    # and transformed once, unless a new orientation or grid was handed to its previews
    # (tiny's f2 at another detector position makes define_grid run again: the same grid)
    transformed = [tuple(sorted(e["wildcards"].items())) for e in events
                   if e.get("event") == "finished" and e.get("rule") == "transform_block"]
    assert transformed
    if not any(h["grids"] for h in history) and not any(o["handed"] for o in compared):
        assert len(transformed) == len(set(transformed)), transformed
    assert not list((exp / "results").rglob("blocks")) and not list(
        (exp / "live/landed").rglob("*.json")) and not list((exp / "live/grid").glob("*"))
    status = subprocess.run([sys.executable, "-m", "hklflow", "status", str(exp)],
                            capture_output=True, text=True)
    assert status.stdout.count(" final") == 4, status.stdout
    assert "<meta http-equiv=\"refresh\"" in (exp / "results/status.html").read_text()
    # the batch workflow on the experiment's own table: nothing to do
    r = run_snakemake(exp, "-n", "--cores", "1")
    assert "Nothing to be done" in r.stdout + r.stderr, r.stdout[-3000:]
    batch_dir = tiny_run[0]
    for rel in ("tiny/300K/transform.nxs", "tiny/100K/masked_transform_symmetrized.nxs"):
        a, b = _volume(exp / "results" / rel), _volume(batch_dir / "results" / rel)
        assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a), rel


@pytest.mark.slow
def test_a_watcher_killed_mid_run_resumes_and_ends_with_the_batch_results(tmp_path, tiny_experiment):
    exp = tmp_path / "experiment"
    import shutil

    shutil.copytree(tiny_experiment, exp)
    watch = _hklflow("watch", str(exp), "--cores", "1", stdout=subprocess.DEVNULL,
                     stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 300
    while not list((exp / "results").glob("tiny/300K/f*/peaks.nxs")):  # mid-run
        assert time.time() < deadline and watch.poll() is None
        time.sleep(0.5)
    os.killpg(watch.pid, signal.SIGKILL)  # the watcher and its Snakemake
    watch.wait()
    again = subprocess.run([sys.executable, "-m", "hklflow", "watch", str(exp), "--cores", "2",
                            "--exit-when-idle", "2"], capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]
    state = LiveState.load(exp)
    assert all(s.results == 60 for s in state.scans.values())
    r = run_snakemake(exp, "-n", "--cores", "1")
    assert "Nothing to be done" in r.stdout + r.stderr, r.stdout[-3000:]


def test_the_status_page_renders_in_a_browser(tmp_path):
    """results/status.html as Chromium (headless, Debian's package) builds it: a row per
    scan, the refresh, the error; skipped where Chromium is not installed."""
    import shutil

    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if not browser:
        pytest.skip("Chromium is not installed (apt-get install chromium)")
    from hklflow.live.status import write_status

    state = LiveState()
    state.scans["tiny/300K/f1"] = _scan(landed=60, reduced=60, results=60)
    state.scans["tiny/300K/f2"] = _scan("tiny/300K/f2", landed=20, reduced=20, error="find_peaks "
                                        "failed (log: logs/find_peaks/tiny/300K/f2.log)")
    write_status(tmp_path, state, LIVE)
    dom = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom",
                          (tmp_path / "results/status.html").as_uri()],
                         capture_output=True, text=True, timeout=120).stdout
    assert dom.count("<tr") == 3 and 'http-equiv="refresh"' in dom
    assert "tiny/300K/f2" in dom and "logs/find_peaks/tiny/300K/f2.log" in dom
