"""Snakemake logger `hklflow`: a run's job events as JSON lines, for `hklflow run`'s console
and `hklflow watch` (hklflow.planning.job_events reads them).

    snakemake --logger hklflow --logger-hklflow-file EVENTS.jsonl ...

Snakemake hands its loggers every log record with the event's fields attached
(snakemake-interface-logger-plugins: LogEvent and the fields of each).  This one writes one
JSON object per line for the events below, each line flushed as it is written, so that a
reader following the file sees a job start while it runs.  Every object has "event" and
"time" (seconds since the epoch); file paths are as Snakemake names them (relative to its
working directory).

    opened    schema (SCHEMA), dryrun: the handler started (first line)
    planned   jobs ({rule: jobs}), total: the jobs of the run (Snakemake's job stats)
    started   jobid, rule, wildcards ({name: value}), log, output (lists of paths)
    finished  jobid, rule, wildcards, log, output (as its `started` said)
    failed    jobid, rule, wildcards, log, output, message (the rule's message or null);
              log lists the rule's logs, then any the executor adds (a cluster job's log)
    progress  done, total: jobs finished so far
    error     exception (its class name: LockException when the directory is locked by
              another run), message: an error Snakemake reports (a failed job's exception
              comes with its `failed` event; the run's own, such as the lock, alone)

A dry run writes no started events (no job starts).  Snakemake's own output is unchanged:
this handler writes neither to the terminal nor to Snakemake's log, and takes every event
whatever --quiet says.  Plain `snakemake` without `--logger hklflow` never uses it.

Snakemake finds logger plugins by their top-level module name (snakemake_logger_plugin_*):
every Snakemake start imports this module, so it imports only the standard library and the
logger plugin interface.
"""
# no `from __future__ import annotations`: Snakemake reads the settings types at run time

import functools
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from snakemake_interface_logger_plugins.base import LogHandlerBase
from snakemake_interface_logger_plugins.common import LogEvent
from snakemake_interface_logger_plugins.settings import LogHandlerSettingsBase

NAME = "hklflow"  # --logger hklflow (the module's name after snakemake_logger_plugin_)
FILE_OPTION = f"--logger-{NAME}-file"  # Snakemake's option for LogHandlerSettings.file
SCHEMA = 1  # raised when a reader would misread the lines

OPENED, PLANNED, STARTED, FINISHED, FAILED, PROGRESS, ERROR = (
    "opened", "planned", "started", "finished", "failed", "progress", "error")


@dataclass
class LogHandlerSettings(LogHandlerSettingsBase):
    file: Optional[Path] = field(
        default=None,
        metadata={
            "help": "The file the job events go to, one JSON object per line (appended).",
            "env_var": False,
            "required": True,
            "type": Path,
        },
    )


def _paths(value) -> list:
    return [str(p) for p in value or ()]


class LogHandler(LogHandlerBase):
    def __post_init__(self) -> None:
        path = Path(self.settings.file)
        path.parent.mkdir(parents=True, exist_ok=True)
        self._stream = open(path, "a", encoding="utf-8")
        self._jobs = {}  # jobid -> what its `started` said, for its end
        self._dryrun = bool(getattr(self.common_settings, "dryrun", False))
        self._write(OPENED, schema=SCHEMA, dryrun=self._dryrun)

    # Snakemake attaches its own filter and formatter to a handler without them: this one
    # takes every event (its filter drops some for --quiet) and formats none
    @property
    def writes_to_stream(self) -> bool:
        return False

    @property
    def writes_to_file(self) -> bool:
        # False: Snakemake names a file handler's file as the run's "Complete log", and hands
        # it to onstart/onerror as the log; these events are not that log
        return False

    @property
    def has_filter(self) -> bool:
        return True

    @property
    def has_formatter(self) -> bool:
        return True

    @property
    def needs_rulegraph(self) -> bool:
        return False

    def _write(self, event: str, when: Optional[float] = None, **fields) -> None:
        line = {"event": event, "time": round(time.time() if when is None else when, 3), **fields}
        self._stream.write(json.dumps(line, default=str) + "\n")
        self._stream.flush()

    def emit(self, record) -> None:
        try:
            self._emit(getattr(record, "event", None), record)
        except Exception:  # noqa: BLE001 - a record we cannot read must not stop the run
            self.handleError(record)

    def _emit(self, event, record) -> None:
        # (the time Snakemake logged it: records reach a plugin through a queue)
        write = functools.partial(self._write, when=getattr(record, "created", None))
        if event == LogEvent.RUN_INFO:
            stats = dict(getattr(record, "stats", None) or {})
            total = stats.pop("total", sum(stats.values()))
            write(PLANNED, jobs=stats, total=total)
        elif event == LogEvent.JOB_INFO:
            job = {"jobid": record.jobid, "rule": record.rule_name,
                   "wildcards": dict(getattr(record, "wildcards", None) or {}),
                   "log": _paths(getattr(record, "log", None)),
                   "output": _paths(getattr(record, "output", None))}
            if not self._dryrun:
                self._jobs[record.jobid] = job
                write(STARTED, **job)
        elif event == LogEvent.JOB_FINISHED:
            jobid = record.job_id
            job = self._jobs.pop(jobid, None) or {"jobid": jobid, "rule": None, "wildcards": {},
                                                  "log": [], "output": []}
            write(FINISHED, **job)
        elif event == LogEvent.JOB_ERROR:
            started = self._jobs.pop(record.jobid, None) or {}
            write(FAILED, jobid=record.jobid, rule=record.rule_name,
                  wildcards=started.get("wildcards", {}),
                  log=_paths(getattr(record, "log", None)),
                  output=_paths(getattr(record, "output", None)),
                  message=getattr(record, "rule_msg", None))
        elif event == LogEvent.PROGRESS:
            write(PROGRESS, done=record.done, total=record.total)
        elif event == LogEvent.ERROR:
            write(ERROR, exception=getattr(record, "exception", None),
                  message=record.getMessage())

    def close(self) -> None:
        try:
            self._stream.close()
        finally:
            super().close()
