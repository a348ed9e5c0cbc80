"""hklflow run resumes after a killed run with no manual clean-up (issue 83): the lock a
killed run of hklflow left on this machine is removed, and only that one: a lock whose
owner runs on another machine (a shared disk) stays, and the refusal says what to do."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from hklflow.commands.run import OWNER_FILE

TARGET = "results/calibration/ceo2/geometry.poni"  # (one job: the lock is the point)


def _run(experiment, *args):
    return subprocess.run([sys.executable, "-m", "hklflow", "run", str(experiment), "--",
                           *args], capture_output=True, text=True, timeout=600)


def _killed_run(experiment) -> None:
    """hklflow run started, then killed (SIGKILL to it, Snakemake and the job) once
    Snakemake has taken its lock: its lock and owner record left behind."""
    proc = subprocess.Popen([sys.executable, "-m", "hklflow", "run", str(experiment), "--",
                             "--cores", "1", TARGET], start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    locks = experiment / ".snakemake" / "locks"
    deadline = time.monotonic() + 120
    while not (locks.is_dir() and any(locks.iterdir())):
        assert time.monotonic() < deadline and proc.poll() is None, "no lock taken"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert any(locks.iterdir()) and (experiment / OWNER_FILE).is_file()


@pytest.mark.slow
def test_a_killed_runs_lock_is_removed_and_the_run_goes_on(tiny_copy):
    _killed_run(tiny_copy)
    r = _run(tiny_copy, "--cores", "1", TARGET)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    assert "removing the lock of a killed run (Snakemake pid" in r.stderr, r.stderr[-3000:]
    assert (tiny_copy / TARGET).is_file()
    locks = tiny_copy / ".snakemake" / "locks"
    assert not locks.is_dir() or not any(locks.iterdir())
    assert not (tiny_copy / OWNER_FILE).exists()  # (the run that ended removed its own)


@pytest.mark.slow
def test_a_lock_of_another_machine_stays(tiny_copy):
    _killed_run(tiny_copy)
    owner = tiny_copy / OWNER_FILE
    owner.write_text("another-node-of-the-cluster " + owner.read_text().split()[1] + "\n")
    r = _run(tiny_copy, "--cores", "1", TARGET)
    assert r.returncode != 0
    assert "removing the lock" not in r.stderr
    assert "is locked by another Snakemake run" in r.stdout + r.stderr
    assert "-- --unlock` and run again: it resumes where the killed run stopped" in \
        r.stdout + r.stderr
    assert any((tiny_copy / ".snakemake" / "locks").iterdir())
