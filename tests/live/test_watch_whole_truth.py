"""Live mode tells the whole truth (issue 86): a user's target reaches the watcher's
Snakemake as a target; a raw file cut short during acquisition is caught.  Each case is a
row of docs/bad-inputs.md, and each test checks that its row says it."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from hklflow.live import watch
from hklflow.live.growing import observe
from hklflow.live.status import screen
from hklflow.simulation.experiment import config_texts, preset

from conftest import REPO

DOCS = REPO / "docs" / "bad-inputs.md"


def in_docs(words: str) -> bool:
    return words in DOCS.read_text().replace("\\|", "|")


class _Log:
    def info(self, *a):
        pass

    warning = error = exception = info


def experiment_dir(tmp_path) -> Path:
    """The tiny experiment's config and scans table (no raw data)."""
    d = tmp_path / "experiment"
    (d / "config").mkdir(parents=True)
    for name, text in config_texts(preset("tiny"), "hdf5").items():
        (d / "config" / name).write_text(text)
    return d


def test_a_target_after_the_double_dash_is_snakemakes_target_not_prioritised(
        tmp_path, monkeypatch):
    from snakemake.cli import get_argument_parser

    target = "results/tiny/300K/f1/peaks.nxs"
    w = watch.Watcher(experiment_dir(tmp_path), ["--cores", "1", target], _Log())
    w.live = dict(w.live, warm_starts=False)  # (Popen below stands in for Snakemake alone)
    started = []

    class _Snakemake:
        pid = 12345

        def __init__(self, cmd, **kw):
            started.append(cmd)

        def wait(self):
            return 0

    monkeypatch.setattr(watch.subprocess, "Popen", _Snakemake)
    monkeypatch.setattr(w, "final_targets", lambda was_final: ["a.nxs", "b.nxs"])
    w.run_workflow([])
    args = get_argument_parser().parse_args(started[0][3:])
    assert args.targets == {target} or list(args.targets) == [target]
    assert set(args.prioritize) == {"a.nxs", "b.nxs"}
    assert in_docs("`hklflow watch EXP -- TARGET`")


# --------------------------------------------------------------------------------------
# A raw file cut short during acquisition
# --------------------------------------------------------------------------------------
# A detector's SWMR writer, stepped by lines on stdin: "N" writes frames up to N and
# flushes (it prints the file's size), "cut SIZE" truncates the file under it.
CUTTING_WRITER = textwrap.dedent("""
    import os, sys, h5py, numpy as np
    path = sys.argv[1]
    f = h5py.File(path, "w", libver="latest", locking=False)
    ds = f.create_dataset("/entry/data/data", shape=(0, 32, 40), maxshape=(None, 32, 40),
                          chunks=(1, 32, 40), dtype="u2")
    f.swmr_mode = True
    print(os.path.getsize(path), flush=True)
    for line in sys.stdin:
        word = line.split()
        if word[0] == "cut":
            os.truncate(path, int(word[1]))
        else:
            for i in range(ds.shape[0], int(word[0])):
                ds.resize(i + 1, axis=0)
                ds[i] = np.full((32, 40), i + 1)
                ds.flush()
        print(os.path.getsize(path), flush=True)
    f.close()
""")


class CuttingWriter:
    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen([sys.executable, "-c", CUTTING_WRITER, str(path)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                     env=dict(os.environ, HDF5_USE_FILE_LOCKING="FALSE"))
        self.proc.stdout.readline()

    def __call__(self, line) -> int:
        self.proc.stdin.write(f"{line}\n")
        self.proc.stdin.flush()
        return int(self.proc.stdout.readline())

    def stop(self):
        self.proc.kill()
        self.proc.wait()


@pytest.fixture
def cutting_writer():
    started = []

    def start(path):
        started.append(CuttingWriter(path))
        return started[-1]

    yield start
    for w in started:
        w.stop()


def _sparse_files_here(tmp_path) -> bool:
    probe = tmp_path / "sparse"
    with open(probe, "wb") as f:
        f.seek(1 << 20)
        f.write(b"x")
    fd = os.open(probe, os.O_RDONLY)
    try:
        return os.lseek(fd, 0, os.SEEK_HOLE) < (1 << 20)
    except OSError:
        return False
    finally:
        os.close(fd)


def test_frames_counted_then_cut_short_and_written_on_are_a_problem(tmp_path, cutting_writer):
    if not _sparse_files_here(tmp_path):
        pytest.skip("this file system does not report holes (SEEK_HOLE)")
    path = tmp_path / "scan.h5"
    w = cutting_writer(path)
    size_at_12 = w(12)
    w(33)
    before = observe("hdf5", str(path))
    assert before.complete_frames == 33 and before.problem is None
    w(f"cut {size_at_12}")
    w(60)  # the writer goes on past the cut: the file is bigger than ever
    assert os.path.getsize(path) > before.identity[0][2]
    now = observe("hdf5", str(path), previous=before)
    # (frame 12's chunk may share its file-system block with the bytes kept before the cut)
    assert re.match(rf"{re.escape(str(path))}: frame indices 1[23] to 32 of /entry/data/data "
                    "lie where the file holds no data", now.problem)
    assert "cut short (truncated) during acquisition" in now.problem
    assert "not merged" in now.problem


def test_frames_cut_between_two_looks_are_a_problem_at_the_next(tmp_path, cutting_writer):
    if not _sparse_files_here(tmp_path):
        pytest.skip("this file system does not report holes (SEEK_HOLE)")
    path = tmp_path / "scan.h5"
    w = cutting_writer(path)
    size_at_12 = w(12)
    first = observe("hdf5", str(path))
    assert first.complete_frames == 12
    w(33)
    w(f"cut {size_at_12}")  # frames 13-33 cut before any look counted them
    w(60)
    once = observe("hdf5", str(path), previous=first)
    assert once.problem is None and once.complete_frames <= 13 and "holds no data" in once.waiting
    twice = observe("hdf5", str(path), previous=once)
    assert "cut short (truncated) during acquisition" in twice.problem


def _cbf_frame(tmp_path) -> bytes:
    """A CBF frame of several file-system blocks (a hole is whole blocks)."""
    import fabio.cbfimage
    import numpy as np

    scratch = tmp_path / "scratch.cbf"
    data = np.random.default_rng(1).integers(0, 1 << 20, (128, 160)).astype(np.int32)
    fabio.cbfimage.CbfImage(data=data).write(str(scratch))
    content = scratch.read_bytes()
    scratch.unlink()
    assert len(content) > 16 * 4096
    return content


def _write_cut(path: Path, content: bytes, cut_at: int, written: int) -> None:
    """Write `content` as a writer does whose file is cut to `cut_at` bytes after it wrote
    `written`, and which writes on at its own offset (leaving a hole)."""
    with open(path, "wb") as f:
        f.write(content[:written])
        f.flush()
        os.truncate(path, cut_at)
        f.write(content[written:])


def test_a_cbf_frame_cut_short_and_written_on_is_a_problem(tmp_path):
    if not _sparse_files_here(tmp_path):
        pytest.skip("this file system does not report holes (SEEK_HOLE)")
    content = _cbf_frame(tmp_path)
    pattern = str(tmp_path / "f_*.cbf")
    for k in (1, 2):
        (tmp_path / f"f_{k}.cbf").write_bytes(content)
    cut = tmp_path / "f_3.cbf"
    _write_cut(cut, content, 4096, 12 * 4096)
    assert os.path.getsize(cut) == len(content)  # complete by its size alone
    once = observe("cbf", pattern)
    assert once.problem is None and once.complete_frames == 2
    assert "f_3.cbf: bytes" in once.waiting and "hold no data (a hole)" in once.waiting
    twice = observe("cbf", pattern, previous=once)
    assert twice.complete_frames == 2
    assert twice.problem.startswith(f"{cut}: bytes ")
    assert "cut short (truncated) during acquisition and written on; it is not merged" in (
        twice.problem)
    # a frame counted whole, then cut and written on past its old end, is a problem at once
    (tmp_path / "f_3.cbf").write_bytes(content)
    whole = observe("cbf", pattern)
    assert whole.complete_frames == 3 and whole.problem is None
    with open(tmp_path / "f_2.cbf", "r+b") as f:
        f.seek(12 * 4096)
        os.truncate(f.name, 4096)
        f.write(content[12 * 4096:] + b"\n")  # (the file grows past its old size)
    now = observe("cbf", pattern, previous=whole)
    assert now.problem.startswith(f"{tmp_path / 'f_2.cbf'}: bytes ")


def test_the_watcher_shows_a_file_cut_short_as_a_problem_and_merges_it_nowhere(
        tmp_path, cutting_writer):
    """`hklflow watch` on a file truncated while it is acquired: shown as a problem in
    status, never in the live table (docs/live.md)."""
    if not _sparse_files_here(tmp_path):
        pytest.skip("this file system does not report holes (SEEK_HOLE)")
    exp = experiment_dir(tmp_path)
    w = watch.Watcher(exp, [], _Log())
    w.live = dict(w.live, first_preview_degrees=5)
    writer = cutting_writer(exp / "raw/tiny/300K/f1.h5")
    size_at_12 = writer(12)
    writer(30)
    w.look()
    scan = w.state.scans["tiny/300K/f1"]
    assert scan.landed == 30 and w.frames_to_reduce(scan, time.time()) == 30
    writer(f"cut {size_at_12}")
    writer(60)
    w.look()
    assert scan.problem and "cut short (truncated) during acquisition" in scan.problem
    assert w.frames_to_reduce(scan, time.time()) == 0
    rows, _ = w.live_rows(time.time())
    assert "tiny/300K/f1" not in {f"{r['sample']}/{r['temperature']}K/{r['entry']}" for r in rows}
    text = screen(w.state, w.live)
    assert "problem" in text and "cut short" in text
    assert in_docs("cut short (truncated) during acquisition")


# --------------------------------------------------------------------------------------
# hklflow status shows what status.html shows
# --------------------------------------------------------------------------------------
def _status(exp: Path, capsys) -> tuple[int, str]:
    from hklflow.live import status

    capsys.readouterr()
    rc = status.main([str(exp)])
    return rc, capsys.readouterr().out


def test_status_shows_an_invalid_row_of_the_scans_table(tmp_path, capsys):
    exp = experiment_dir(tmp_path)
    table = exp / "config" / "scans.tsv"
    lines = table.read_text().splitlines()
    table.write_text("\n".join(lines[:2] + [lines[2].replace("\t60\t", "\t6O\t")]) + "\n")
    w = watch.Watcher(exp, [], _Log())
    w.run_workflow = lambda rows: pytest.fail("no run while the table cannot be read")
    w.loop(once=True)
    rc, out = _status(exp, capsys)
    page = (exp / "results" / "status.html").read_text()
    assert rc == 0 and "scans table: config/scans.tsv" in out and "row 2" in out
    assert "'6O'" in out or "6O" in out
    assert "waiting for rows in the scans table" not in out
    assert "row 2" in page
    assert in_docs("hklflow status` shows what the watcher's status page shows")


def test_status_shows_discoverys_notes_about_every_file(tmp_path, capsys):
    from dataclasses import replace

    import yaml

    from hklflow.simulation.experiment import simulate_experiment

    exp = tmp_path / "experiment"
    simulate_experiment(replace(preset("tiny"), nframes=6), exp, "hdf5")
    table = exp / "config" / "scans.tsv"
    table.write_text(table.read_text().splitlines()[0] + "\n")  # found by their files
    config_file = exp / "config" / "config.yaml"
    config = yaml.safe_load(config_file.read_text())
    config["live"] = {"discover": "raw/{sample}/{temperature}K/{entry}.h5"}
    config_file.write_text(yaml.safe_dump(config, sort_keys=False))
    w = watch.Watcher(exp, [], _Log())
    w.run_workflow = lambda rows: pytest.fail("no scan to reduce")
    w.loop(once=True)
    rc, out = _status(exp, capsys)
    assert rc == 0 and "raw/tiny/100K/f1.h5: no frame count" in out, out
    assert "waiting for rows in the scans table" not in out
    assert "raw/tiny/100K/f1.h5: no frame count" in (exp / "results/status.html").read_text()


def test_status_of_an_experiment_never_watched_says_so(tmp_path, capsys):
    exp = experiment_dir(tmp_path)
    rc, out = _status(exp, capsys)
    assert rc == 1 and f"{exp} was never watched (no live/state.json)" in out
    assert "logs/hklflow/run-*.log" in out and "waiting for rows" not in out


# --------------------------------------------------------------------------------------
# One bad row appended during a watch
# --------------------------------------------------------------------------------------
def _append_row(exp: Path, entry: str, data: str) -> None:
    table = exp / "config" / "scans.tsv"
    lines = table.read_text().splitlines()
    table.write_text("\n".join(lines + [lines[1].replace("\tf1\t", f"\t{entry}\t")
                                        .replace("raw/tiny/300K/f1.h5", data)]) + "\n")


def test_a_row_that_stops_the_plan_is_set_aside_and_the_others_go_on(tmp_path, capsys):
    exp = experiment_dir(tmp_path)
    _append_row(exp, "f3", "raw/tiny/300K/f1.h5")  # row 5: f1's data again
    w = watch.Watcher(exp, [], _Log())
    w.look()
    for sid, scan in w.state.scans.items():
        if sid != "tiny/100K/f2":  # (not started: the live table's rows are numbered apart)
            scan.saw(scan.planned, time.time() - 100)
    runs = []

    def run_snakemake(args, log_file=None, events=None):
        table = (exp / "live/scans.tsv").read_text().splitlines()[2:]
        runs.append([ln.split("\t")[2] + "@" + ln.split("\t")[1] for ln in table])
        if any(ln.split("\t")[2] == "f3" for ln in table):
            # what the plan says of the live table's row 4 (common.smk's raw_files)
            log_file.write_text(
                "Building DAG of jobs...\nhklflow: live/scans.tsv: row 4 (tiny/300K/f3): field "
                f"'data': {exp}/raw/tiny/300K/f1.h5 (dataset /entry/data/data) is also the data "
                "of tiny/300K/f1: every raw file belongs to one scan entry\n"
                "hklflow stopped the plan\n")
            return 1
        log_file.write_text("Nothing to be done.\n")
        return 0

    w.run_snakemake = run_snakemake
    w.unlock_if_stale = lambda refused=False: pytest.fail("not a lock refusal")
    w.loop(once=True)
    f3 = w.state.scans["tiny/300K/f3"]
    assert f3.set_aside.startswith("config/scans.tsv: row 5 (tiny/300K/f3): field 'data': ")
    assert "is also the data of tiny/300K/f1" in f3.set_aside
    assert "set aside: the other scans go on" in f3.set_aside
    assert all(s.error is None for s in w.state.scans.values())
    w.loop(once=True)  # at once, without it
    assert runs == [["f1@300.0", "f2@300.0", "f1@100.0", "f3@300.0"],
                    ["f1@300.0", "f2@300.0", "f1@100.0"]]
    assert [s.results for s in w.state.scans.values()] == [60, 60, 60, 0, 0]
    rc, out = _status(exp, capsys)
    assert "set aside" in out and "config/scans.tsv: row 5 (tiny/300K/f3)" in out
    assert "the workflow failed" not in out
    assert "config/scans.tsv: row 5 (tiny/300K/f3)" in (exp / "results/status.html").read_text()
    # (kept aside by a watcher started again; tried again once the table changes)
    again = watch.Watcher(exp, [], _Log())
    again.look()
    assert again.state.scans["tiny/300K/f3"].set_aside == f3.set_aside
    _append_row(exp, "f4", "raw/tiny/300K/f4.h5")
    again.look()
    assert again.state.scans["tiny/300K/f3"].set_aside is None
    assert in_docs("One bad row appended while `hklflow watch` follows the scans table")


@pytest.mark.slow
def test_a_watched_duplicate_row_is_set_aside_and_the_others_reduce(tiny_copy, capsys):
    """The real plan on a row whose data are another entry's: that row set aside, named as
    the user wrote it, and the other scans ingested (`-- --until ingest_scan`)."""
    _append_row(tiny_copy, "f3", "raw/tiny/300K/f1.h5")
    r = subprocess.run([sys.executable, "-m", "hklflow", "watch", str(tiny_copy), "--cores",
                        "2", "--exit-when-idle", "1", "--", "--until", "ingest_scan"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    history = [json.loads(x) for x in (tiny_copy / "live/history.jsonl").read_text().splitlines()]
    assert history[0]["rc"] != 0 and "tiny/300K/f3" in history[0]["frames"]
    assert history[-1]["rc"] == 0 and "tiny/300K/f3" not in history[-1]["frames"]
    assert len(history[-1]["frames"]) == 4
    rc, out = _status(tiny_copy, capsys)
    assert "config/scans.tsv: row 5 (tiny/300K/f3): field 'data'" in out, out
    assert "is also the data of tiny/300K/f1" in out and "the workflow failed" not in out
    assert "tiny/300K/f3: set aside: config/scans.tsv: row 5" in r.stderr
    assert all((tiny_copy / f"results/tiny/{t}/{e}/scan.nxs").is_file()
               for t in ("300K", "100K") for e in ("f1", "f2"))
