"""The logger hklflow (src/snakemake_logger_plugin_hklflow): Snakemake finds it and makes
its option; given the log records Snakemake emits it writes the job events, one JSON line
each; a real `snakemake --logger hklflow` run writes started, finished and failed events
(and a lock refusal) that `hklflow run`'s console and `hklflow watch` read
(hklflow.planning.job_events, its reading and arguments: tests/planning/test_job_events.py);
plain Snakemake works without it."""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import snakemake_logger_plugin_hklflow as plugin
from snakemake_interface_logger_plugins.common import LogEvent
from snakemake_interface_logger_plugins.registry import LoggerPluginRegistry
from snakemake_interface_logger_plugins.tests import MockOutputSettings, TestLogHandlerBase

from hklflow.commands import console
from hklflow.commands import run as run_command
from hklflow.live.watch import failed_jobs
from hklflow.planning import job_events, snakemake_compat


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# --------------------------------------------------------------------------------------
# The interface's own checks, and Snakemake's registry
# --------------------------------------------------------------------------------------
class TestTheInterfacesChecks(TestLogHandlerBase):
    """snakemake-interface-logger-plugins' test base: the handler's properties, and every
    kind of event (with the fields its tests give them) taken without an error."""

    __test__ = True

    @pytest.fixture(autouse=True)
    def _events_file(self, tmp_path):
        self.events = tmp_path / "events.jsonl"

    def get_log_handler_cls(self):
        return plugin.LogHandler

    def get_log_handler_settings(self):
        return plugin.LogHandlerSettings(file=self.events)


def test_snakemake_finds_the_plugin_and_names_its_option_as_hklflow_gives_it():
    found = LoggerPluginRegistry().get_plugin(plugin.NAME)
    assert found.log_handler is plugin.LogHandler
    assert found.get_cli_arg("file") == plugin.FILE_OPTION == "--logger-hklflow-file"


# --------------------------------------------------------------------------------------
# Log records as Snakemake emits them (snakemake/jobs.py, scheduling/job_scheduler.py,
# workflow.py, exceptions.py: the message and the `extra` fields of each)
# --------------------------------------------------------------------------------------
def _handler(path: Path, dryrun: bool = False) -> logging.Logger:
    settings = MockOutputSettings()
    settings.dryrun = dryrun
    handler = plugin.LogHandler(settings, plugin.LogHandlerSettings(file=path))
    log = logging.getLogger(f"snakemake-like-{path}")
    log.propagate, log.level = False, logging.INFO
    log.handlers[:] = [handler]
    return log


def _job_info(log, jobid, rule, wildcards, output, logs):
    log.info(f" Rule: {rule}, Jobid: {jobid}", extra=dict(
        event=LogEvent.JOB_INFO, jobid=jobid, rule_msg=None, rule_name=rule, local=True,
        input=["results/s/300K/f1/scan.nxs"], output=output, log=logs, benchmark=None,
        wildcards=wildcards, reason="Missing output files: " + output[0], resources={},
        priority=0, threads=1, indent=False, is_checkpoint=False, printshellcmd=True,
        is_handover=False, shellcmd="hklflow find_peaks ..."))


def test_the_handler_writes_an_event_per_job_record_snakemake_emits(tmp_path):
    path = tmp_path / "logs" / "events.jsonl"  # (its folder made)
    log = _handler(path)
    stats = {"find_peaks": 2, "all": 1, "total": 3}
    log.info("Job stats:\n...", extra=dict(event=LogEvent.RUN_INFO, stats=stats))
    log.info("Execute 2 jobs...", extra=dict(event=LogEvent.JOB_STARTED, jobs=[1, 2]))
    f1 = {"sample": "s", "temperature": "300K", "entry": "f1"}
    _job_info(log, 1, "find_peaks", f1, ["results/s/300K/f1/peaks.nxs"],
              ["logs/find_peaks/s/300K/f1.log"])
    log.info("Shell command: hklflow find_peaks ...", extra=dict(
        event=LogEvent.SHELLCMD, shellcmd="hklflow find_peaks ...", indent=False))
    _job_info(log, 2, "find_peaks", dict(f1, entry="f2"), ["results/s/300K/f2/peaks.nxs"],
              ["logs/find_peaks/s/300K/f2.log"])
    log.info("Finished jobid: 1 (Rule: find_peaks)",
             extra=dict(event=LogEvent.JOB_FINISHED, job_id=1))
    log.info(None, extra=dict(event=LogEvent.PROGRESS, done=1, total=3))
    log.error("Error in rule find_peaks, jobid: 2", extra=dict(
        event=LogEvent.JOB_ERROR, rule_name="find_peaks", rule_msg=None, jobid=2,
        input=["results/s/300K/f2/scan.nxs"], output=["results/s/300K/f2/peaks.nxs"],
        log=["logs/find_peaks/s/300K/f2.log", "slurm-123.log"], conda_env=None,
        container_img=None, aux={}, indent=False, shellcmd="hklflow find_peaks ..."))
    log.error("WorkflowError:\nAt least one job did not complete successfully.",
              extra=dict(event=LogEvent.ERROR, exception="WorkflowError"))
    log.info("a line without an event")  # (Snakemake's plain lines: not events)
    log.handlers[0].close()

    events = _lines(path)
    assert [e["event"] for e in events] == ["opened", "planned", "started", "started",
                                            "finished", "progress", "failed", "error"]
    assert all(isinstance(e["time"], float) for e in events)
    assert events[0] == dict(events[0], schema=plugin.SCHEMA, dryrun=False)
    assert events[1]["jobs"] == {"find_peaks": 2, "all": 1} and events[1]["total"] == 3
    started = {"jobid": 1, "rule": "find_peaks", "wildcards": f1,
               "log": ["logs/find_peaks/s/300K/f1.log"], "output": ["results/s/300K/f1/peaks.nxs"]}
    assert events[2] == dict(started, event="started", time=events[2]["time"])
    assert events[4] == dict(started, event="finished", time=events[4]["time"])
    assert events[5]["done"] == 1 and events[5]["total"] == 3
    assert events[6] == {"event": "failed", "time": events[6]["time"], "jobid": 2,
                         "rule": "find_peaks", "wildcards": dict(f1, entry="f2"),
                         "log": ["logs/find_peaks/s/300K/f2.log", "slurm-123.log"],
                         "output": ["results/s/300K/f2/peaks.nxs"], "message": None}
    assert events[7]["exception"] == "WorkflowError" and "did not complete" in events[7]["message"]


def test_a_dry_run_starts_no_job_and_an_unknown_job_still_finishes(tmp_path):
    log = _handler(tmp_path / "dry.jsonl", dryrun=True)
    _job_info(log, 1, "find_peaks", {}, ["out"], [])
    log.handlers[0].close()
    assert [e["event"] for e in _lines(tmp_path / "dry.jsonl")] == ["opened"]
    log = _handler(tmp_path / "run.jsonl")
    log.info("Finished jobid: 9 (Rule: x)", extra=dict(event=LogEvent.JOB_FINISHED, job_id=9))
    log.handlers[0].close()
    assert _lines(tmp_path / "run.jsonl")[1] == dict(
        _lines(tmp_path / "run.jsonl")[1], event="finished", jobid=9, rule=None, log=[])


# --------------------------------------------------------------------------------------
# A real Snakemake
# --------------------------------------------------------------------------------------
SNAKEFILE = """\
rule all:
    input: expand("results/s/300K/{entry}/peaks.txt", entry=["f1", "f2"]), "results/s/grid.txt"

rule find_peaks:
    output: "results/{sample}/{temperature}/{entry}/peaks.txt"
    log: "logs/find_peaks/{sample}/{temperature}/{entry}.log"
    shell: "echo '2026-11-28 16:00:00 hklflow.find_peaks INFO: done' > {log}; touch {output}"

rule define_grid:
    output: "results/{sample}/grid.txt"
    log: "logs/define_grid/{sample}.log"
    shell: "echo '2026-11-28 16:00:00 hklflow.define_grid ERROR: define_grid failed: no cell' \
> {log}; exit 3"
"""
ENV = dict(os.environ, HDF5_USE_FILE_LOCKING="FALSE")


@pytest.fixture
def workflow(tmp_path):
    (tmp_path / "Snakefile").write_text(SNAKEFILE)
    return tmp_path


def _snakemake(workdir: Path, *args):
    return subprocess.run([sys.executable, "-m", "snakemake", "--snakefile",
                           str(workdir / "Snakefile"), "--directory", str(workdir), *args],
                          capture_output=True, text=True, timeout=300, env=ENV)


def test_a_real_run_writes_the_events_the_console_and_the_watcher_read(workflow):
    events = workflow / "events.jsonl"
    r = _snakemake(workflow, "--logger", "hklflow", plugin.FILE_OPTION, str(events), "--cores",
                   "1", "--keep-going")
    assert r.returncode != 0, r.stderr[-3000:]  # define_grid fails
    assert "Error in rule define_grid" in r.stderr  # (Snakemake's own output is unchanged)
    written = job_events.read(events)
    kinds = [e["event"] for e in written]
    assert kinds[:2] == ["opened", "planned"] and kinds.count("started") == 3
    assert kinds.count("finished") == 2 and kinds.count("failed") == 1
    assert written[1]["jobs"] == {"find_peaks": 2, "define_grid": 1, "all": 1}
    finished = sorted((e["rule"], e["wildcards"]["entry"], e["log"][0], e["output"][0])
                      for e in written if e["event"] == "finished")
    assert finished == [("find_peaks", e, f"logs/find_peaks/s/300K/{e}.log",
                         f"results/s/300K/{e}/peaks.txt") for e in ("f1", "f2")]
    assert not job_events.lock_refused(written)
    # hklflow run's console
    progress = console.Progress()
    shown = [line for event in written for line in progress.feed(event)]
    assert shown[0] == "3 jobs of 2 rules to run"
    assert "find_peaks" in shown[1] and " 2/2 " in shown[1]
    assert progress.failures == [("define_grid", "logs/define_grid/s.log")]
    assert progress.running == {}
    assert console.failure_lines(workflow, progress.failures) == [
        "FAILED define_grid: define_grid failed: no cell", "  log: logs/define_grid/s.log"]
    # hklflow watch: a sample's job is every scan's
    assert failed_jobs(written) == [{"rule": "define_grid", "scan": "",
                                     "log": "logs/define_grid/s.log"}]


def test_a_run_refused_for_the_lock_says_so_in_its_events(workflow):
    locks = workflow / ".snakemake" / "locks"
    locks.mkdir(parents=True)
    (locks / "0.output.lock").write_text("results/s/grid.txt\n")  # a killed run's
    assert snakemake_compat.lock_left(workflow)
    events = workflow / "events.jsonl"
    r = _snakemake(workflow, "--logger", "hklflow", plugin.FILE_OPTION, str(events), "--cores", "1")
    assert r.returncode != 0
    written = job_events.read(events)
    assert job_events.lock_refused(written), written
    assert [e["event"] for e in written] == ["opened", "error"]  # (refused before the plan)
    assert _snakemake(workflow, "--unlock").returncode == 0
    assert not snakemake_compat.lock_left(workflow)


def test_plain_snakemake_works_without_the_plugin_and_a_dry_run_starts_nothing(workflow):
    r = _snakemake(workflow, "-n")
    assert r.returncode == 0 and "find_peaks" in r.stdout, r.stderr[-2000:]
    assert not list(workflow.glob("*.jsonl"))
    events = workflow / "dry.jsonl"
    r = _snakemake(workflow, "-n", "--logger", "hklflow", plugin.FILE_OPTION, str(events))
    assert r.returncode == 0, r.stderr[-2000:]
    assert {e["event"] for e in job_events.read(events)} == {"opened", "planned"}
    r = _snakemake(workflow, "-n", "--logger", "hklflow")  # (the file is required)
    assert r.returncode != 0 and plugin.FILE_OPTION in r.stdout + r.stderr


class _Log:
    def __init__(self):
        self.errors = []

    def info(self, *a):
        pass

    def error(self, message, *args):
        self.errors.append(message % args)


def test_hklflow_runs_console_follows_a_real_run(workflow, monkeypatch, capsys):
    """run.snakemake (what `hklflow run` and `hklflow demo` call) on the little workflow: the
    console's lines from the events (logs/hklflow/run-*.events.jsonl), the failed job's own
    message; and with a killed run's lock, the advice to unlock."""
    monkeypatch.setattr(run_command, "workflow_dir", lambda: workflow)
    log = _Log()
    assert run_command.snakemake(workflow, ["--cores", "1", "-k"], log, "hklflow run X") != 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "3 jobs of 2 rules to run" and "find_peaks" in out[1], out
    assert "FAILED define_grid: define_grid failed: no cell" in out
    assert "  log: logs/define_grid/s.log" in out and log.errors == []
    assert len(list((workflow / "logs/hklflow").glob("run-*.events.jsonl"))) == 1
    assert len(list((workflow / "logs/hklflow").glob("run-*.log"))) == 1
    time.sleep(1)  # (a run's files are named by the second it started)
    assert run_command.snakemake(workflow, ["--cores", "1", "results/s/300K/f1/peaks.txt"], log,
                                 "hklflow run X") == 0
    assert "nothing to be done: every result asked for is up to date" in capsys.readouterr().out
    locks = workflow / ".snakemake" / "locks"
    locks.mkdir(parents=True)
    (locks / "0.output.lock").write_text("results/s/grid.txt\n")
    capsys.readouterr()
    assert run_command.snakemake(workflow, ["--cores", "1"], log, "hklflow run X") != 0
    # the console's last lines: FAILED with the reason, then where Snakemake's output is
    out = capsys.readouterr().out.splitlines()
    assert out[-2].startswith("FAILED: ") and "locked by another Snakemake run" in out[-2], out
    assert "`hklflow run X -- --unlock`" in out[-2]
    assert out[-1].startswith("Snakemake's output: logs/hklflow/run-"), out
    # a dry run shows Snakemake's output as it is; the lock is not in its way
    log.errors.clear()
    assert run_command.snakemake(workflow, ["-n"], log, "hklflow run X") == 0
    assert log.errors == []
