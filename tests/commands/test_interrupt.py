"""Ctrl-C of `hklflow run` (issue 86): the run stops at once, with one line instead of two
Python tracebacks, and the next run resumes (no lock left, no half-written output)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from hklflow.commands import cli

from conftest import REPO


def docs_row(words: str) -> str:
    """The row of docs/bad-inputs.md that begins with `words`."""
    text = (REPO / "docs" / "bad-inputs.md").read_text()
    return next(ln for ln in text.splitlines() if ln.startswith(f"| {words}"))


def as_a_terminal_starts_it():
    """Ctrl-C's default action in the child: a full run's worker may hand it on ignored
    (then neither hklflow nor Snakemake sees the interrupt, and the run goes to its end)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.slow
@pytest.mark.parametrize("to", ["the terminal's process group", "hklflow alone"])
def test_ctrl_c_of_hklflow_run_is_one_line(tiny_copy, to):
    p = subprocess.Popen([sys.executable, "-m", "hklflow", "run", str(tiny_copy), "--",
                          "--cores", "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, start_new_session=True, preexec_fn=as_a_terminal_starts_it,
                         env=dict(os.environ, HDF5_USE_FILE_LOCKING="FALSE"))
    try:
        deadline = time.monotonic() + 120
        while not list((tiny_copy / "logs").glob("*/*/*.log")):  # a job is running
            assert p.poll() is None and time.monotonic() < deadline, p.communicate()
            time.sleep(0.2)
        time.sleep(1)
        if to == "hklflow alone":  # (kill -INT: Snakemake is told by hklflow)
            p.send_signal(signal.SIGINT)
        else:
            os.killpg(p.pid, signal.SIGINT)
        out, err = p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
    text = out + err
    assert p.returncode == 130, text[-3000:]
    assert "Traceback" not in text and "KeyboardInterrupt" not in text, text[-3000:]
    assert "interrupted; run again to resume" in err.splitlines()
    assert "`interrupted; run again to resume` (status 130)" in docs_row("Ctrl-C of `hklflow run`")
    # Snakemake stopped before hklflow did: no lock left, so running again resumes
    assert not list((tiny_copy / ".snakemake" / "locks").glob("*")), text[-3000:]


def test_ctrl_c_of_a_command_or_a_step_is_one_line(monkeypatch, capsys):
    """The same for `hklflow demo`, and a job's log: an interrupted step says so."""
    from hklflow.commands import run

    def interrupted(argv=None):
        raise KeyboardInterrupt

    monkeypatch.setattr(run, "main", interrupted)
    assert cli.main(["demo"]) == 130
    assert capsys.readouterr().err == "interrupted; run again to resume\n"
    from hklflow.steps import find_peaks

    monkeypatch.setattr(find_peaks, "main", interrupted)
    assert cli.main(["find_peaks"]) == 130
    assert capsys.readouterr().err == "hklflow find_peaks: interrupted\n"
    assert "`hklflow find_peaks: interrupted`" in docs_row("Ctrl-C of `hklflow run`")
