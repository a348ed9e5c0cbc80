"""hklflow.base.steplog: a step's progress lines, as its logging writes them, are the lines
`hklflow run`'s console reads back from the job's log (commands.console.job_progress_text),
at most one per interval and one at the end."""
from __future__ import annotations

from hklflow.base import steplog
from hklflow.commands import console


def test_progress_lines_are_what_the_console_reads_back(capsys):
    log = steplog.setup("find_peaks")
    progress = steplog.Progress(log, "frames searched", 60, every=3600.0)
    for done in range(1, 61):
        progress.update(done)
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1  # the interval not reached: the last one only
    assert " hklflow.find_peaks INFO: frames searched: 60/60 (" in lines[0]
    assert console.job_progress_text(lines[0]) == "frames searched 60/60"
