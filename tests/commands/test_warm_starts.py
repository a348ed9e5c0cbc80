"""Warm starts (hklflow.commands.warm_starts): a step run by `hklflow STEP ...` through the
server writes what a new process writes and exits with its status; a stopped command stops
its fork, which leaves no output; without a server, or inside a batch system's job, the
command runs the step itself.  hklflow watch's runs use it (tests/live/test_watch.py: the
watched results are the batch results, value by value)."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from hklflow.commands.warm_client import WARM_STARTS_ENV, run_warm
from hklflow.commands.warm_starts import WarmStartServer
from hklflow.files.volume import read_volume
from hklflow.live.watch import local_jobs
from hklflow.planning import snakemake_processes

from conftest import step_settings
from volume_helpers import make_experiment, sample, small_grid, write_inputs


@pytest.fixture
def experiment(tmp_path, monkeypatch):
    """A minimal experiment (tests/volume_helpers.make_experiment), the current directory."""
    monkeypatch.chdir(tmp_path)
    return make_experiment(tmp_path)


@pytest.fixture
def server(tmp_path):
    s = WarmStartServer(tmp_path / "warm-starts.log")
    yield s
    s.stop()


def _hklflow(args, cwd, warm=None, **kwargs):
    env = {k: v for k, v in os.environ.items() if k != WARM_STARTS_ENV}
    if warm:
        env[WARM_STARTS_ENV] = warm
    return subprocess.Popen([sys.executable, "-m", "hklflow", *map(str, args)], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


def test_a_step_started_warm_writes_what_a_new_process_writes(experiment, server):
    entries = write_inputs(experiment, small_grid(), 3, sample_=sample(name="tetra"))
    settings = step_settings(experiment, "merge_entries", "transform")
    outs = {}
    for how, warm in (("cold", None), ("warm", server.path)):
        proc = _hklflow(["merge_entries", "--settings", settings, "--title", "tetra/300K",
                         "--inputs", *entries, "--out", f"out/{how}.nxs",
                         "--png", f"out/{how}.png"], experiment, warm)
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        assert "resources: cpu_s=" in err  # (the fork's log reaches the command's stderr)
        outs[how] = read_volume(experiment / f"out/{how}.nxs")
    for name in ("signal", "weight"):
        assert np.array_equal(getattr(outs["cold"], name), getattr(outs["warm"], name))
    assert server.cpu_seconds() > 0  # (the fork's CPU counts among the server's children)
    # the server's log: a line a job, with its CPU (bench/live.py sums them per rule)
    log = (experiment / "warm-starts.log").read_text()
    assert re.search(r"job step merge_entries: rc 0, cpu [\d.]+ s, wall [\d.]+ s", log), log
    # a failure: its status and its one line, as from a new process
    proc = _hklflow(["merge_entries", "--settings", settings, "--title", "x", "--inputs",
                     "missing.nxs", "--out", "out/x.nxs", "--png", "out/x.png"],
                    experiment, server.path)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 1 and "missing.nxs" in err


def test_a_stopped_command_stops_its_fork_which_leaves_no_output(experiment, server):
    entries = write_inputs(experiment, small_grid(), 3, sample_=sample(name="tetra"))
    settings = step_settings(experiment, "merge_entries", "transform")
    # (a step that waits: its input a FIFO nobody writes, so it is surely running when stopped)
    fifo = experiment / "stuck.nxs"
    os.mkfifo(fifo)
    proc = _hklflow(["merge_entries", "--settings", settings, "--title", "tetra/300K",
                     "--inputs", fifo, *entries, "--out", "out/stopped.nxs",
                     "--png", "out/stopped.png"], experiment, server.path)
    forks = []
    for _ in range(200):
        forks = _forks_of(server.proc.pid)
        if forks:
            break
        time.sleep(0.05)
    assert forks, "no fork of the server ran the step"
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    # (a step waiting in HDF5's open of the FIFO, a C call that restarts itself on signals,
    # sees the stop once that call returns: a writer's open and close let it)
    for _ in range(20):
        try:
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        except OSError:  # (no reader: the fork is not in that open)
            pass
        time.sleep(0.05)
    for _ in range(200):
        if not _forks_of(server.proc.pid):
            break
        time.sleep(0.05)
    assert not _forks_of(server.proc.pid), "the fork outlived its command"
    assert not list((experiment / "out").glob("stopped*")) if (experiment / "out").is_dir() else True


def test_ctrl_c_stops_the_jobs_not_the_server(tmp_path, server):
    """Ctrl-C reaches the terminal's whole process group, the server too: the forks stop
    themselves; the server goes on until the watcher ends it (SIGTERM)."""
    server.proc.send_signal(signal.SIGINT)
    time.sleep(0.5)
    assert server.proc.poll() is None
    proc = _hklflow(["merge_entries", "--help"], tmp_path, server.path)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0 and "--statistics-png" in out, err


def test_a_snakemake_run_started_warm_runs_its_jobs_and_stops_as_on_ctrl_c(tmp_path, server):
    """hklflow watch's runs: `python -m hklflow.commands.warm_client snakemake ...` runs
    Snakemake in a fork of the server, which imported it; SIGINT to the command reaches
    Snakemake, which stops as it does on Ctrl-C; a Snakemake process for the experiment's
    lock (snakemake_processes)."""
    (tmp_path / "Snakefile").write_text(
        'rule a:\n    output: "{name}.txt"\n    shell: "sleep {config[sleep]}; echo {wildcards.name} > {output}"\n')
    env = {k: v for k, v in os.environ.items() if k != WARM_STARTS_ENV}
    env[WARM_STARTS_ENV] = server.path
    command = [sys.executable, "-m", "hklflow.commands.warm_client", "snakemake", "-d",
               str(tmp_path), "-s", str(tmp_path / "Snakefile"), "--cores", "1"]
    done = subprocess.run([*command, "--config", "sleep=0", "--", "one.txt"], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and (tmp_path / "one.txt").read_text() == "one\n", done.stderr
    assert "job snakemake: rc 0" in (tmp_path / "warm-starts.log").read_text()
    assert snakemake_processes._is_snakemake(command)
    proc = subprocess.Popen([*command, "--config", "sleep=3", "--", "two.txt"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for _ in range(600):  # (its job started)
        if _running("echo two"):
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 1 and "Terminating processes on user request" in out, out
    assert not list((tmp_path / ".snakemake" / "locks").glob("*"))


def test_a_server_ended_without_its_watcher_leaves_no_folder(tmp_path):
    """A watcher that ends without stopping its server (killed): the server ends (SIGTERM
    here; --parent gone in a few seconds) and removes its socket and its folder."""
    s = WarmStartServer(tmp_path / "warm-starts.log")
    folder = Path(s.dir)
    s.proc.send_signal(signal.SIGTERM)
    s.proc.wait(timeout=60)
    assert not folder.exists()
    s.stop()


def _running(text: str) -> bool:
    """Whether a process of this machine has `text` in its command line."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if text in open(f"/proc/{pid}/cmdline").read():
                return True
        except OSError:
            pass
    return False


def _forks_of(pid: int) -> list[int]:
    try:
        text = open(f"/proc/{pid}/task/{pid}/children").read()
    except OSError:
        return []
    return [int(x) for x in text.split()]


def test_without_a_server_or_inside_a_batch_job_the_command_runs_the_step(tmp_path, server,
                                                                           monkeypatch):
    monkeypatch.setenv(WARM_STARTS_ENV, str(tmp_path / "no-server"))
    assert run_warm(["hklflow", "merge_entries", "--help"]) is None
    monkeypatch.setenv(WARM_STARTS_ENV, server.path)
    monkeypatch.setenv("SLURM_JOB_ID", "17")  # (a cluster's job does its own work)
    assert run_warm(["hklflow", "merge_entries", "--help"]) is None
    monkeypatch.delenv(WARM_STARTS_ENV)
    monkeypatch.delenv("SLURM_JOB_ID")
    assert run_warm(["hklflow", "merge_entries", "--help"]) is None


def test_the_watcher_starts_warm_only_where_the_jobs_run_on_this_machine(monkeypatch):
    monkeypatch.delenv("SNAKEMAKE_PROFILE", raising=False)
    assert local_jobs([]) and local_jobs(["--cores", "2", "--keep-going"])
    for args in (["--profile", "profiles/slurm"], ["--executor=slurm"], ["-e", "slurm"],
                 ["--cluster", "qsub"]):
        assert not local_jobs(args), args
    monkeypatch.setenv("SNAKEMAKE_PROFILE", "slurm")
    assert not local_jobs([])
