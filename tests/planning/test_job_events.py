"""hklflow.planning.job_events: the job events of a run (written by hklflow's logger plugin)
read as their lines complete, while Snakemake still writes them; the plugin's arguments
joined to the user's own loggers.  The plugin writing them, and a real run's events:
tests/plugins/test_logger_plugin.py."""
from __future__ import annotations

from pathlib import Path

from hklflow.planning import job_events


def test_the_events_of_a_running_snakemake_are_read_as_their_lines_complete(tmp_path):
    path = tmp_path / "events.jsonl"
    follow = job_events.Follower(path)
    assert follow.new() == [] and job_events.read(path) == []  # (not written yet)
    path.write_text('{"event": "opened", "schema": 1}\n{"event": "plan')
    assert follow.new() == [{"event": "opened", "schema": 1}]
    with open(path, "a") as f:
        f.write('ned", "jobs": {}, "total": 0}\n')
    assert follow.new() == [{"event": "planned", "jobs": {}, "total": 0}] and follow.new() == []
    assert len(job_events.read(path)) == 2


def test_the_plugin_joins_the_users_own_loggers():
    events = Path("logs/hklflow/run.events.jsonl")
    assert job_events.logger_arguments(events, ["--cores", "2"]) == (
        ["--logger", "hklflow", "--logger-hklflow-file", str(events)], ["--cores", "2"])
    assert job_events.logger_arguments(events, ["--logger", "rich", "-k"]) == (
        ["--logger-hklflow-file", str(events)], ["--logger", "hklflow", "rich", "-k"])
    assert job_events.logger_arguments(events, ["--logger=rich"]) == (
        ["--logger-hklflow-file", str(events)], ["--logger", "rich", "hklflow"])
