"""Bad input to the live run (issue 86): Snakemake's lock is never taken from a run that goes
on, by `hklflow watch` or `hklflow run -- --unlock`; and the watcher's command line refuses
what would make nothing or finish a scan it does not know.  Each message is a row of
docs/bad-inputs.md, and each test checks that its row says it."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from hklflow.live import watch
from hklflow.live.state import LiveState, ScanState
from hklflow.live.status import WAITING_FOR_LOCK, screen
from hklflow.planning import snakemake_processes
from hklflow.simulation.experiment import config_texts, preset

from conftest import REPO

DOCS = REPO / "docs" / "bad-inputs.md"


def in_docs(words: str) -> bool:
    return words in DOCS.read_text().replace("\\|", "|")


@pytest.fixture
def experiment_dir(tmp_path) -> Path:
    """The tiny experiment's config and scans table (no raw data)."""
    d = tmp_path / "experiment"
    (d / "config").mkdir(parents=True)
    for name, text in config_texts(preset("tiny"), "hdf5").items():
        (d / "config" / name).write_text(text)
    return d


@pytest.fixture
def processes():
    """Start processes that stand for Snakemake runs; all stopped at the end."""
    started = []

    def start(argv, **kw):
        p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kw)
        started.append(p)
        return p

    yield start
    for p in started:
        p.kill()
        p.wait()


def fake_snakemake(processes, tmp_path: Path, *args, cwd: Path):
    """`python -m snakemake ARGS` in cwd, a module that only sleeps (PYTHONPATH)."""
    module = tmp_path / "fake_module"
    module.mkdir(exist_ok=True)
    (module / "snakemake.py").write_text("import time\ntime.sleep(120)\n")
    return processes([sys.executable, "-m", "snakemake", *map(str, args)], cwd=cwd,
                     env=dict(os.environ, PYTHONPATH=str(module)))


def holder_pids(directory, expected: set[int] = frozenset()) -> set[int]:
    """The pids of the Snakemakes in `directory`, once they are `expected` (a process just
    started may not have its command line yet: bash's `exec -a`) or after 30 s."""
    deadline = time.time() + 30
    while True:
        found = {p.pid for p in snakemake_processes.holders(directory)}
        if found == set(expected) or time.time() > deadline:
            return found
        time.sleep(0.05)


# --------------------------------------------------------------------------------------
# Snakemake's lock
# --------------------------------------------------------------------------------------
def test_snakemake_processes_in_a_directory_are_found(tmp_path, processes):
    """A Snakemake works in a directory when its working directory is it (Snakemake moves
    into its --directory before it locks) or its --directory names it; other processes
    there, and Snakemakes elsewhere, do not hold it."""
    exp, other = tmp_path / "exp", tmp_path / "other"
    exp.mkdir()
    other.mkdir()
    in_it = processes(["bash", "-c", "exec -a snakemake sleep 120"], cwd=exp)
    named = fake_snakemake(processes, tmp_path, "--directory", exp, cwd=other)
    relative = fake_snakemake(processes, tmp_path, "-d", "../exp", cwd=other)
    processes(["sleep", "120"], cwd=exp)  # (a job's command: not a Snakemake)
    fake_snakemake(processes, tmp_path, "--directory", other, cwd=other)
    expected = {in_it.pid, named.pid, relative.pid}
    assert holder_pids(exp, expected) == expected, snakemake_processes.holders(exp)
    shown = str(next(p for p in snakemake_processes.holders(exp) if p.pid == named.pid))
    assert shown.startswith(f"pid {named.pid}: ") and "-m snakemake --directory" in shown
    assert holder_pids(tmp_path / "nowhere") == set()


class _Log:
    def __init__(self):
        self.lines = []

    def info(self, msg, *args):
        self.lines.append((time.time(), msg % args))

    warning = error = exception = info


@pytest.fixture
def watcher(experiment_dir, monkeypatch):
    """A watcher whose Snakemake runs are recorded (time, arguments), not made."""
    w = watch.Watcher(experiment_dir, [], _Log())
    w.unlocked = []
    monkeypatch.setattr(w, "run_snakemake", lambda args, **kw: w.unlocked.append(
        (time.time(), args)) or 0)
    monkeypatch.setattr(watch, "LOCK_POLL_SECONDS", 0.1)
    (experiment_dir / "live").mkdir()
    (experiment_dir / ".snakemake" / "locks").mkdir(parents=True)
    (experiment_dir / ".snakemake" / "locks" / "0.input.lock").write_text("x\n")
    return w


def end_later(process, seconds: float, expdir: Path, lock: Path | None = None):
    """Stop `process` after `seconds` (and remove `lock` first, as a run that ends does);
    returns the thread, whose `ended` is the time it was stopped and `status` what
    `hklflow status` said just before."""
    def run():
        time.sleep(seconds)
        thread.status = screen(LiveState.load(expdir), {})
        if lock:
            lock.unlink()
        process.kill()
        process.wait()
        thread.ended = time.time()

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_the_watcher_waits_for_a_running_snakemake_and_says_for_whom(
        watcher, processes, tmp_path):
    """Refused for the lock of a run that goes on (a batch `hklflow run`): the watcher waits,
    naming the run's pid and command, and unlocks nothing when the run ends (its lock went
    with it)."""
    exp = watcher.expdir
    batch = fake_snakemake(processes, tmp_path, "--directory", exp, cwd=tmp_path)
    assert holder_pids(exp, {batch.pid}) == {batch.pid}
    ender = end_later(batch, 1.0, exp, lock=exp / ".snakemake" / "locks" / "0.input.lock")
    watcher.unlock_if_stale(refused=True)
    ender.join()
    said = [line for _, line in watcher.log.lines]
    assert any(line.startswith("the experiment directory is locked by another Snakemake run: "
                               f"waiting for it to end (pid {batch.pid}: ") for line in said), said
    assert in_docs("the experiment directory is locked by another Snakemake run: waiting for "
                   "it to end (pid ")
    assert watcher.unlocked == []
    # `hklflow status` and the status page said it while it waited, and no more after
    assert f"{WAITING_FOR_LOCK}pid {batch.pid}: " in ender.status, ender.status
    assert in_docs(f"{WAITING_FOR_LOCK}pid ")
    assert WAITING_FOR_LOCK not in screen(LiveState.load(exp), {})
    assert WAITING_FOR_LOCK not in (exp / "results" / "status.html").read_text()


def test_the_watcher_unlocks_a_lock_only_once_no_snakemake_holds_it(watcher, processes, tmp_path):
    """A run killed with its lock left: unlocked once the run is gone, never before; a lock
    that no Snakemake holds: unlocked at once."""
    exp = watcher.expdir
    killed = processes(["bash", "-c", "exec -a snakemake sleep 120"], cwd=exp)
    assert holder_pids(exp, {killed.pid}) == {killed.pid}
    ender = end_later(killed, 1.0, exp)
    watcher.unlock_if_stale(refused=True)
    ender.join()
    assert [args for _, args in watcher.unlocked] == [["--unlock"]]
    assert watcher.unlocked[0][0] >= ender.ended
    watcher.unlocked.clear()
    watcher.unlock_if_stale()  # (at the start: the lock is still there, nobody holds it)
    assert [args for _, args in watcher.unlocked] == [["--unlock"]]
    (exp / ".snakemake" / "locks" / "0.input.lock").unlink()
    watcher.unlocked.clear()
    watcher.unlock_if_stale()
    assert watcher.unlocked == []


def test_hklflow_run_refuses_to_unlock_under_a_running_snakemake(
        experiment_dir, processes, tmp_path, monkeypatch, capsys):
    import hklflow.commands.run
    from hklflow.commands import cli

    calls = []
    monkeypatch.setattr(hklflow.commands.run, "snakemake",
                        lambda exp, args, log, again, verbose=False: calls.append(args) or 0)
    running = fake_snakemake(processes, tmp_path, "--directory", experiment_dir, cwd=tmp_path)
    assert holder_pids(experiment_dir, {running.pid}) == {running.pid}
    assert cli.main(["run", str(experiment_dir), "--", "--unlock"]) == 1
    err = capsys.readouterr().err
    said = (f"--unlock refused: the lock of {experiment_dir} belongs to a Snakemake run that "
            f"goes on (pid {running.pid}: ")
    assert said in err and calls == [], err
    assert in_docs("--unlock refused: the lock of EXP belongs to a Snakemake run that goes on "
                   "(pid ")
    running.kill()
    running.wait()
    assert cli.main(["run", str(experiment_dir), "--", "--unlock"]) == 0
    assert calls and "--unlock" in calls[0]


def _events(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.mark.slow
def test_a_watcher_started_beside_a_batch_run_waits_for_it_and_runs_no_job_twice(tiny_copy):
    """`hklflow run` reducing the parent temperature, and `hklflow watch` started beside it
    (it used to remove the batch run's lock and run the same jobs at once): the watcher
    waits for the batch run, then reduces the rest; no job of one runs in the other."""
    exp = tiny_copy
    env = dict(os.environ, HDF5_USE_FILE_LOCKING="FALSE")
    batch = subprocess.Popen([sys.executable, "-m", "hklflow", "run", str(exp), "--",
                              "--cores", "1", "results/tiny/300K/parent_orientation.nxs"],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        deadline = time.time() + 120
        while not list((exp / ".snakemake" / "locks").glob("*")):
            assert batch.poll() is None and time.time() < deadline
            time.sleep(0.1)
        watcher = subprocess.run([sys.executable, "-m", "hklflow", "watch", str(exp), "--once",
                                  "--cores", "2"], capture_output=True, text=True, timeout=900,
                                 env=env)
    finally:
        batch_out = batch.communicate(timeout=600)[0]
    assert batch.returncode == 0, batch_out[-3000:]
    assert watcher.returncode == 0, watcher.stderr[-3000:]
    assert "waiting for it to end (pid " in watcher.stderr, watcher.stderr
    assert "removing the lock" not in watcher.stderr
    batch_events = [e for p in (exp / "logs" / "hklflow").glob("run-*.events.jsonl")
                    for e in _events(p)]
    watch_events = [e for p in (exp / "live" / "logs").glob("run-*.events.jsonl")
                    for e in _events(p)]

    def started(events):
        return [(e["rule"], json.dumps(e.get("wildcards"), sort_keys=True))
                for e in events if e["event"] == "started"]

    by_batch, by_watcher = started(batch_events), started(watch_events)
    assert ("index_parent", json.dumps({"sample": "tiny", "temperature": "300K"})) in by_batch
    assert by_watcher and not set(by_batch) & set(by_watcher)
    assert len(set(by_watcher)) == len(by_watcher)
    # the watcher's run began after the batch run's last event
    assert min(e["time"] for e in watch_events) >= max(e["time"] for e in batch_events)
    assert all(s.results == 60 for s in LiveState.load(exp).scans.values())


# --------------------------------------------------------------------------------------
# The watcher's command line
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("theirs", [["-n"], ["--dry-run", "--cores", "2"], ["-np"], ["--touch"]])
def test_watch_refuses_snakemake_arguments_that_make_nothing(experiment_dir, theirs, capsys):
    """`hklflow watch EXP -- -n` used to record every scan as reduced (60/60 final) while
    nothing was made."""
    assert watch.main([str(experiment_dir), "--", *theirs]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert (f"{experiment_dir}: hklflow watch does not take {theirs[0]}: it would make nothing, "
            "yet record every scan as reduced" in err), err
    assert not (experiment_dir / "live").exists()
    assert in_docs("hklflow watch does not take -n: it would make nothing, yet record every "
                   "scan as reduced")


def test_watch_finish_refuses_a_scan_it_does_not_know(experiment_dir, processes, capsys):
    """`--finish tiny/999K/f9` used to be taken, and a later scan of that id counted as
    finished from its first look."""
    d = str(experiment_dir)
    assert watch.main([d, "--finish", "tiny/300k/f2"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert err.endswith(f"--finish tiny/300k/f2: not a scan of {d} (neither a row of "
                        "config/scans.tsv nor a scan the watcher has seen): expected "
                        "SAMPLE/TLABEL/ENTRY, close ones: tiny/300K/f2, tiny/300K/f1, "
                        "tiny/100K/f2"), err
    assert not (experiment_dir / watch.FINISH_FILE).exists()
    assert in_docs("--finish tiny/300k/f2: not a scan of EXP (neither a row of config/scans.tsv "
                   "nor a scan the watcher has seen): expected SAMPLE/TLABEL/ENTRY, close ones: "
                   "tiny/300K/f2, tiny/300K/f1, tiny/100K/f2")
    # a scan of the table, or one the watcher found (live.discover), is taken; the watcher
    # running takes it from there
    (experiment_dir / "live").mkdir()
    state = LiveState()
    state.scans["tiny/50K/f1"] = ScanState("tiny/50K/f1", {}, 60, 1.0)
    state.save(experiment_dir)
    other = processes(["sleep", "120"])
    (experiment_dir / watch.PID_FILE).write_text(f"{other.pid}\n")
    assert watch.main([d, "--finish", "tiny/300K/f2", "tiny/50K/f1"]) == 0
    assert (experiment_dir / watch.FINISH_FILE).read_text().split() == ["tiny/300K/f2",
                                                                       "tiny/50K/f1"]


@pytest.mark.parametrize("cores", ["abc", "0", "-2", "1.5"])
def test_watch_refuses_cores_that_are_no_count(experiment_dir, cores, capsys):
    with pytest.raises(SystemExit) as stop:
        watch.main([str(experiment_dir), "--cores", cores])
    assert stop.value.code == 2
    said = (f"hklflow watch: error: argument --cores: expected a whole number of cores >= 1, "
            f"or all; got '{cores}'")
    assert said in capsys.readouterr().err
    assert in_docs("hklflow watch: error: argument --cores: expected a whole number of cores "
                   ">= 1, or all; got 'abc'")
    assert watch.parser().parse_args(["x", "--cores", "3"]).cores == "3"
    assert watch.parser().parse_args(["x"]).cores == "all"
