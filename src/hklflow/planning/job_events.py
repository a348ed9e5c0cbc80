"""The job events of a Snakemake run, as hklflow's logger plugin writes them
(src/snakemake_logger_plugin_hklflow: one JSON object per line, its docstring lists the
events and their fields).  `hklflow run`'s console and `hklflow watch` add the plugin to the
Snakemake they start (logger_arguments) and read what it wrote (read, Follower): which jobs
started, finished and failed, with their rule, wildcards and logs, and whether the run was
refused for a lock.  Neither reads Snakemake's wording."""
from __future__ import annotations

import json
from pathlib import Path

from snakemake_logger_plugin_hklflow import (ERROR, FAILED, FILE_OPTION, FINISHED, NAME, OPENED,
                                             PLANNED, PROGRESS, STARTED)

__all__ = ["ERROR", "FAILED", "FINISHED", "LOCK_REFUSED", "OPENED", "PLANNED", "PROGRESS",
           "STARTED", "Follower", "first_log", "lock_refused", "logger_arguments", "read"]

# the error event's exception when another run (or a killed one) holds the directory's lock
LOCK_REFUSED = "LockException"


def logger_arguments(events: Path, args) -> tuple[list[str], list[str]]:
    """(the arguments that add the plugin, writing to `events`; the user's Snakemake
    arguments).  A `--logger` of the user's own keeps its loggers, with this one added to
    them (Snakemake takes the last --logger given)."""
    args = list(args)
    for i, arg in enumerate(args):
        if arg == "--logger":
            return [FILE_OPTION, str(events)], [*args[:i + 1], NAME, *args[i + 1:]]
        if arg.startswith("--logger="):
            return ([FILE_OPTION, str(events)],
                    [*args[:i], "--logger", arg.split("=", 1)[1], NAME, *args[i + 1:]])
    return ["--logger", NAME, FILE_OPTION, str(events)], args


class Follower:
    """The events a running Snakemake appends to its file, as they come: each call of new()
    returns those completed since the last (a line still being written waits)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._offset = 0

    def new(self) -> list[dict]:
        try:
            with open(self.path, "rb") as f:
                f.seek(self._offset)
                data = f.read()
        except OSError:  # not written yet
            return []
        complete = data[:data.rfind(b"\n") + 1]
        self._offset += len(complete)
        return _parse(complete)


def read(path: Path) -> list[dict]:
    """Every event in the file ([] when there is none: Snakemake stopped before its loggers
    started, e.g. on a wrong option)."""
    return Follower(path).new()


def _parse(data: bytes) -> list[dict]:
    events = []
    for line in data.decode(errors="replace").splitlines():
        try:
            event = json.loads(line)
        except ValueError:  # (a line cut by a full disk)
            continue
        if isinstance(event, dict) and "event" in event:
            events.append(event)
    return events


def lock_refused(events) -> bool:
    """Whether Snakemake refused the run because another run (or a killed one) holds the
    directory's lock."""
    return any(e["event"] == ERROR and e.get("exception") == LOCK_REFUSED for e in events)


def first_log(event: dict) -> str | None:
    """A job's log (the first, where it has several: the rule's own before an executor's)."""
    logs = event.get("log") or []
    return logs[0] if logs else None
