"""hklflow.workflow_hooks: Snakemake's SIGTERM handler run on a thread of its own, so that a
SIGTERM arriving while the main thread holds the scheduler's lock stops the run instead of
deadlocking it (the handler takes that lock)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from hklflow.workflow_hooks import defer_sigterm_handler


def test_sigterm_arriving_while_the_main_thread_holds_the_lock_is_handled():
    lock = threading.Lock()  # the scheduler's: a plain lock, as Snakemake 9's
    handled = threading.Event()

    def exit_gracefully(signum, frame):  # what Snakemake's handler does first
        with lock:
            handled.set()

    before = signal.signal(signal.SIGTERM, exit_gracefully)
    try:
        assert defer_sigterm_handler()
        assert not defer_sigterm_handler()  # once is enough
        with lock:  # the main thread selecting jobs; run here, the handler would deadlock
            signal.raise_signal(signal.SIGTERM)
            assert not handled.wait(0.2)  # waits for the lock
        assert handled.wait(10)
    finally:
        signal.signal(signal.SIGTERM, before)


def test_nothing_changes_without_a_python_handler():
    before = signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        assert not defer_sigterm_handler()
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    finally:
        signal.signal(signal.SIGTERM, before)


@pytest.mark.slow
def test_snakemake_stops_on_sigterm_while_it_schedules(tmp_path):
    """A real Snakemake run of many instant jobs (its main thread mostly selecting and
    finishing jobs, under the scheduler's lock) stopped by SIGTERM, as the Snakefile's
    onstart sets it up: it exits and removes its lock.  Without the hook it hung, every
    time in three tries here, until SIGKILL."""
    (tmp_path / "Snakefile").write_text(
        "from hklflow.workflow_hooks import defer_sigterm_handler\n\n"
        "onstart:\n    defer_sigterm_handler()\n\n"
        "rule all:\n    input: expand('out/{i}.txt', i=range(3000))\n\n"
        "rule one:\n    output: 'out/{i}.txt'\n    shell: 'touch {output}'\n")
    proc = subprocess.Popen([sys.executable, "-m", "snakemake", "--cores", "2", "-q"],
                            cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.monotonic() + 120
    while not (tmp_path / "out").is_dir() or len(list((tmp_path / "out").iterdir())) < 20:
        assert proc.poll() is None and time.monotonic() < deadline, "the run did not start"
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        pytest.fail("snakemake hung after SIGTERM")
    assert len(list((tmp_path / "out").iterdir())) < 3000  # stopped, not finished
    locks = tmp_path / ".snakemake" / "locks"
    assert not locks.is_dir() or not any(locks.iterdir())
