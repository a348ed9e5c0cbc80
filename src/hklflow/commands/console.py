"""What `hklflow run` and `hklflow demo` show while Snakemake works: a line per rule as its
jobs finish (done/total, the elapsed time, an estimate of the time left), a failed job's
own one-line message with its log, and at the end a summary that fits on one screen (what
was made, the pictures to open first, every warning the jobs logged).  While a job runs,
its rule's line shows the job's own progress (frames done), read from its log
(LiveLine).  The jobs are followed through the events hklflow's logger plugin writes
(hklflow.planning.job_events), not Snakemake's wording.  Snakemake's own output goes whole
to a log file (`--verbose` shows it instead); plain `snakemake` keeps its usual output."""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..files import outputs
from ..files.outputs import glob_of
from ..planning import job_events
from ..planning.disk import LINE_START as DISK_LINE_START
from ..planning.snakemake_compat import STOPPED_PLAN

# the lines of hklflow's own step logs (hklflow.base.steplog), not Snakemake's
_WARNING = re.compile(r"^\S+ \S+ hklflow\.(\w+) WARNING: (.*)$")
# the line hklflow.base.steplog.Progress writes into a step's log (find_peaks, transform_frames,
# merge_entries, symmetrize): "<date> <time> hklflow.<step> INFO: <what>: <done>/<total>
# (<rate>/s)", e.g. "... INFO: frames transformed: 1200/3650 (41.2/s)"
_STEP_PROGRESS = re.compile(r"^\S+ \S+ hklflow\.\w+ INFO: (.+): (\d+)/(\d+) \(([\d.]+)/s\)$")
LOG_TAIL_BYTES = 8192  # a step logs progress every 10 s: its last line is near the end
# Without a terminal (a pipe, a file, a batch job's output) a progress line is a new line:
# at most one per rule every 5 minutes.  Jobs of seconds (the tiny experiment's) print none,
# and a job of hours (a large scan's transform) shows it is alive at 12 lines an hour.
PROGRESS_EVERY_S_WITHOUT_TERMINAL = 300.0
MOST_LOGS_READ = 64  # running jobs whose logs are looked at (a cluster runs hundreds)

# the pictures a user opens first, in this order (relative to the experiment directory): the
# physics (the temperature series of the diffuse volumes and of their 3D-DeltaPDF), then the
# checks (a symmetrised volume, its statistics, the orientation, the calibration); the
# README's list is this one (tests/test_docs.py)
FIRST_PICTURES = tuple(glob_of(pattern, kind="masked_transform", pdf="pdf") for pattern in (
    outputs.TEMPERATURE_SERIES_PNG, outputs.PDF_SERIES_PNG, outputs.SYMMETRIZED_VOLUME_PNG,
    outputs.STATISTICS_PNG, outputs.ORIENTATION_PNG, outputs.CALIBRATION_PNG))
MOST_WARNINGS = 8
STOPPED_LINES = 12  # Snakemake's last lines shown when it stopped for a reason hklflow did not name
# what the one-off compilation costs (bench/README.md, "First run": the tiny experiment)
COMPILE_NOTE = "about 2 minutes of CPU, the first run about 2 minutes longer on 2 cores"
# numba's cache index of the transform's kernel, in its two forms: frames read whole (CBF,
# uncompressed HDF5) and bitshuffle-LZ4 frames decompressed in the kernel
KERNEL_CACHE_MARKERS = ("kernels._accumulate-*.nbi", "stream_kernels.accumulate_stream-*.nbi")


def kernel_cache_places() -> list[Path]:
    """Where numba's cache locators put the transform's kernels, in their order:
    NUMBA_CACHE_DIR, the package's __pycache__ (where writable), the user's cache folder
    ($XDG_CACHE_HOME/numba, ~/.cache/numba); in the first and last, a folder named after the
    source folder and the SHA-1 of its path (numba.core.caching.get_suitable_cache_subpath)."""
    # (abspath, not resolve: numba names the folder by the path the module was imported from)
    folder = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                          "algorithms", "transform")
    mirrored = f"transform_{hashlib.sha1(folder.encode()).hexdigest()}"
    user = os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"),
                        "numba")
    places = [os.path.join(folder, "__pycache__"), os.path.join(user, mirrored)]
    if os.environ.get("NUMBA_CACHE_DIR"):
        places.insert(0, os.path.join(os.environ["NUMBA_CACHE_DIR"], mirrored))
    return [Path(p) for p in places]


def kernel_cache_cold() -> str | None:
    """A line announcing the one-off compilation of hklflow's kernels when numba's cache
    holds none of them yet (this installation's first run), else None.  The marker is the
    transform's kernel, in whichever of its two forms the runs so far used
    (KERNEL_CACHE_MARKERS: runs of bitshuffle-LZ4 frames, the usual ones, never compile
    `_accumulate`, which the note looked for alone, so it came back on every run)."""
    for place in kernel_cache_places():
        if any(next(place.glob(marker), None) for marker in KERNEL_CACHE_MARKERS):
            return None
    return (f"first run of this installation: hklflow's compiled kernels are built once now "
            f"({COMPILE_NOTE}); numba caches them for every later run")


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


@dataclass
class RunningJob:
    rule: str
    log: str | None  # relative to the experiment directory
    started: float  # time.monotonic()

    @property
    def name(self) -> str:
        """The job as its log names it: logs/transform_frames/s/300K/f2/00000-00059.log ->
        s/300K/f2/00000-00059."""
        if not self.log:
            return self.rule
        name = self.log.removeprefix(f"logs/{self.rule}/")
        return name[:-4] if name.endswith(".log") else name


@dataclass
class Progress:
    """The run's job events (hklflow.planning.job_events), taken one by one: jobs per rule,
    done per rule, the jobs running (with their logs), failures."""

    start: float = field(default_factory=time.monotonic)
    planned: dict = field(default_factory=dict)  # rule -> jobs
    done: dict = field(default_factory=dict)
    failures: list = field(default_factory=list)  # (rule, log path or None)
    running: dict = field(default_factory=dict)  # jobid -> RunningJob
    opened: bool = False  # the plugin wrote its first event (Snakemake's loggers started)
    errors: list = field(default_factory=list)  # the run's own error events

    @property
    def total(self) -> int:
        return sum(n for rule, n in self.planned.items() if rule != "all")

    def feed(self, event: dict) -> list[str]:
        """Take one job event; returns the lines to show for it."""
        kind = event.get("event")
        if kind == job_events.OPENED:
            self.opened = True
        elif kind == job_events.PLANNED:
            self.planned = dict(event.get("jobs") or {})
            return [f"{self.total} jobs of {len(self.planned) - ('all' in self.planned)} "
                    "rules to run"]
        elif kind == job_events.STARTED:
            self.running[event["jobid"]] = RunningJob(event["rule"], job_events.first_log(event),
                                                      time.monotonic())
        elif kind == job_events.FINISHED:
            self.running.pop(event["jobid"], None)
            rule = event.get("rule")
            self.done[rule] = self.done.get(rule, 0) + 1
            if rule is None or rule == "all" or self.done[rule] < self.planned.get(rule, 0):
                return []
            return [self.rule_line(rule)]
        elif kind == job_events.FAILED:
            self.running.pop(event["jobid"], None)
            self.failures.append((event["rule"], job_events.first_log(event)))
        elif kind == job_events.ERROR:
            self.errors.append(event)
        return []

    @property
    def nothing_to_do(self) -> bool:
        """Snakemake's loggers started and it planned no job (everything up to date)."""
        return self.opened and not self.planned and not self.failures and not self.errors

    def _overall(self) -> tuple[float, int, str]:
        """(elapsed seconds, jobs finished, ', about H:MM:SS left' or '')."""
        elapsed = time.monotonic() - self.start
        finished = sum(n for r, n in self.done.items() if r != "all")
        left = ""
        if 0 < finished < self.total:
            left = f", about {_clock(elapsed * (self.total - finished) / finished)} left"
        return elapsed, finished, left

    def rule_line(self, rule: str) -> str:
        """A rule's line: its jobs done, the elapsed time, an estimate of the time left."""
        elapsed, finished, left = self._overall()
        return (f"  [{_clock(elapsed)}] {rule:<24} {self.done.get(rule, 0)}/"
                f"{self.planned.get(rule, 0)}  ({finished} of {self.total} jobs{left})")

    def live_line(self, rule: str, job: str) -> str:
        """A rule's line while a job of it runs, the job's own progress first (a terminal
        may cut the line's end): 'transform_frames 3/8: s/300K/f2/00000-00059 frames
        transformed 1200/3650, ~0:01:01 left  [0:01:23, 12 of 41 jobs, about 0:02:10 left]'."""
        elapsed, finished, left = self._overall()
        return (f"  {rule} {self.done.get(rule, 0)}/{self.planned.get(rule, 0)}: {job}  "
                f"[{_clock(elapsed)}, {finished} of {self.total} jobs{left}]")


def job_progress_text(log_text: str) -> str:
    """The console's text for the last progress line in a step's log ('' when there is
    none): '... INFO: frames transformed: 1200/3650 (41.2/s)' -> 'frames transformed
    1200/3650, ~0:01:00 left'."""
    for line in reversed(log_text.splitlines()):
        found = _STEP_PROGRESS.match(line.strip())
        if found:
            what, done, total, rate = found.groups()
            done, total, rate = int(done), int(total), float(rate)
            left = f", ~{_clock((total - done) / rate)} left" if rate > 0 and done < total else ""
            return f"{what} {done}/{total}{left}"
    return ""


def _log_tail(path: Path) -> tuple[float, str]:
    """(modification time, the last LOG_TAIL_BYTES as text) of a log; (0, '') when it
    cannot be read (not written yet)."""
    try:
        with open(path, "rb") as f:
            stat = path.stat()
            f.seek(max(0, stat.st_size - LOG_TAIL_BYTES))
            return stat.st_mtime, f.read().decode(errors="replace")
    except OSError:
        return 0.0, ""


class LiveLine:
    """Where the console's lines go.  Permanent lines (a rule complete, a failure, the
    summary) are printed; the progress of a running job is one line rewritten in place
    (\\r) on a terminal, cut to its width: Progress.live_line of the job that logged
    progress last (or, before any did, of the longest running job, with its time so far:
    the first run's compilation).  Without a terminal a
    progress line is printed as a new line, at most once per rule every
    PROGRESS_EVERY_S_WITHOUT_TERMINAL seconds."""

    def __init__(self, experiment: Path, stream=None, terminal: bool | None = None,
                 every: float = PROGRESS_EVERY_S_WITHOUT_TERMINAL):
        self.experiment = experiment
        self.stream = stream or sys.stdout
        self.terminal = self.stream.isatty() if terminal is None else terminal
        self.every = every
        self._shown = ""  # the progress line on the terminal now
        self._printed: dict = {}  # rule -> (time.monotonic(), text) of its last progress line

    def show(self, line: str) -> None:
        self._clear()
        print(line, file=self.stream, flush=True)

    def _clear(self) -> None:
        if self._shown:
            self.stream.write("\r\x1b[K")
            self._shown = ""

    def close(self) -> None:
        self._clear()
        self.stream.flush()

    def _latest(self, progress: Progress) -> dict:
        """rule -> (its job that logged progress last, that job's text), of the running
        jobs (the MOST_LOGS_READ started last)."""
        latest = {}
        jobs = sorted(progress.running.values(), key=lambda j: j.started)[-MOST_LOGS_READ:]
        for job in jobs:
            mtime, text = _log_tail(self.experiment / job.log) if job.log else (0.0, "")
            shown = job_progress_text(text)
            if shown and mtime >= latest.get(job.rule, (-1.0, None, ""))[0]:
                latest[job.rule] = (mtime, job, shown)
        return latest

    def update(self, progress: Progress) -> None:
        """Show the running jobs' progress (called every second or two while Snakemake
        prints nothing)."""
        if not progress.running:
            self._clear()
            return
        latest = self._latest(progress)
        now = time.monotonic()
        if self.terminal:
            if latest:
                _, job, shown = max(latest.values(), key=lambda v: v[0])
                text = progress.live_line(job.rule, f"{job.name} {shown}")
            else:
                job = min(progress.running.values(), key=lambda j: j.started)
                text = progress.live_line(job.rule, f"{job.name} running for "
                                                    f"{_clock(now - job.started)}")
            width = shutil.get_terminal_size().columns - 1  # (a wrapped line cannot be rewritten)
            text = text[:width]
            if text != self._shown:
                self.stream.write("\r" + text + "\x1b[K")
                self.stream.flush()
                self._shown = text
            return
        for rule, (_, job, shown) in sorted(latest.items()):
            first = min(j.started for j in progress.running.values() if j.rule == rule)
            last, last_text = self._printed.get(rule, (first, ""))
            if now - last >= self.every and shown != last_text:
                self.show(progress.live_line(rule, f"{job.name} {shown}"))
                self._printed[rule] = (now, shown)


def failure_lines(experiment: Path, failures) -> list[str]:
    """A failed job's own message (the last line of its log: the step's one-line error) and
    the log's path."""
    out = []
    for rule, log in failures:
        message = ""
        if log and (experiment / log).is_file():
            lines = [ln for ln in (experiment / log).read_text(errors="replace").splitlines()
                     if ln.strip()]
            message = lines[-1] if lines else ""
            message = message.split(" ERROR: ", 1)[-1]
        out.append(f"FAILED {rule}: {message or '(no message)'}")
        if log:
            out.append(f"  log: {log}")
    return out


def job_warnings(experiment: Path, since: float) -> list[str]:
    """The warnings the jobs logged (logs/ files written since `since`, epoch seconds), each
    once: 'rule: message'."""
    seen = {}
    logs = experiment / "logs"
    if not logs.is_dir():
        return []
    for path in sorted(logs.rglob("*.log")):
        try:
            if path.stat().st_mtime < since:
                continue
            text = path.read_text(errors="replace")
        except OSError:
            continue
        for line in text.splitlines():
            found = _WARNING.match(line)
            if found:
                seen.setdefault(f"{found.group(1)}: {found.group(2)}", path)
    return list(seen)


def plan_problem(output: list[str]) -> list[str]:
    """What hklflow said when it stopped the plan (planning.snakemake_compat.stop_plan: its
    message, prefixed `hklflow: `, is the last thing Snakemake's output holds), without the
    prefix; [] when the plan did not stop so (a line `hklflow stopped the plan` follows)."""
    lines = [line.rstrip() for line in output if line.strip()]
    if not lines or lines[-1] != STOPPED_PLAN:
        return []
    starts = [i for i, line in enumerate(lines[:-1]) if line.startswith("hklflow: ")]
    if not starts:
        return []
    first, *rest = lines[starts[-1]:-1]
    return [first.removeprefix("hklflow: "), *rest]


# the plan's lines come first in Snakemake's output, before it builds the DAG
PLAN_HEAD_BYTES = 65536


def disk_line(run_log: Path) -> str | None:
    """The plan's line on the disk its results will take (planning.disk, `hklflow: results:
    ...`), without `hklflow: `, from the head of Snakemake's output; None while it is not
    there."""
    try:
        with open(run_log, "rb") as f:
            head = f.read(PLAN_HEAD_BYTES).decode(errors="replace")
    except OSError:
        return None
    for line in head.splitlines():
        if line.startswith(f"hklflow: {DISK_LINE_START}"):
            return line.removeprefix("hklflow: ")
    return None


def failed(experiment: Path, since: float, progress: Progress, run_log: Path,
           output: list[str], locked: str | None = None) -> list[str]:
    """The lines a failed run ends with: how far it got and this run's warnings, then
    FAILED with the reason (each failed job's own message and log; the lock; the problem
    that stopped the plan; else Snakemake's last lines) and the log to read.  Never the
    results and pictures of earlier runs."""
    out = []
    if progress.total:
        done = sum(n for r, n in progress.done.items() if r != "all")
        out.append(f"{done} of {progress.total} jobs done in "
                   f"{_clock(time.monotonic() - progress.start)}")
    warnings = job_warnings(experiment, since)
    if warnings:
        out.append(f"warnings ({len(warnings)}, from the jobs' logs):")
        out += [f"  {w}" for w in warnings[:MOST_WARNINGS]]
    if progress.failures:
        out += failure_lines(experiment, progress.failures)
    elif locked:
        out.append(f"FAILED: {locked}")
    else:
        problem = plan_problem(output)
        if problem:
            out += [f"FAILED: {problem[0]}", *problem[1:]]
        else:
            tail = [line.rstrip() for line in output if line.strip()][-STOPPED_LINES:]
            out += ["FAILED: Snakemake stopped; the last lines of its output:",
                    *(f"  {line}" for line in tail)]
    try:
        shown = run_log.relative_to(experiment)
    except ValueError:
        shown = run_log
    out.append(f"Snakemake's output: {shown}")
    return out


def summary(experiment: Path, since: float, progress: Progress | None = None) -> list[str]:
    """The lines the run ends with: what was made and where, the pictures to open first,
    the jobs' warnings."""
    results = experiment / "results"
    out = []
    if progress is not None and progress.total:
        done = sum(n for r, n in progress.done.items() if r != "all")
        out.append(f"{done} of {progress.total} jobs done in "
                   f"{_clock(time.monotonic() - progress.start)}")
    if results.is_dir():
        samples = sorted(p.name for p in results.iterdir()
                         if p.is_dir() and p.name != "calibration")
        for sample in samples:
            temperatures = sorted(p.name for p in (results / sample).iterdir() if p.is_dir())
            volumes = sorted({p.name for t in temperatures
                              for p in (results / sample / t).glob("*.nxs")})
            if volumes:
                out.append(f"results/{sample}/: {', '.join(temperatures)}: {', '.join(volumes)}")
        if (experiment / outputs.EXPERIMENT_PAGE).is_file():  # (rule experiment_page)
            out.append(f"the experiment on one page: {outputs.EXPERIMENT_PAGE}")
        pictures = []
        for pattern in FIRST_PICTURES:
            pictures += sorted(str(p.relative_to(experiment))
                               for p in experiment.glob(pattern))
        if pictures:
            out.append("open first:")
            out += [f"  {p}" for p in pictures[:8]]
            if len(pictures) > 8:
                out.append(f"  ... and {len(pictures) - 8} more (results/*/*/*.png)")
    warnings = job_warnings(experiment, since)
    if warnings:
        out.append(f"warnings ({len(warnings)}, from the jobs' logs):")
        out += [f"  {w}" for w in warnings[:MOST_WARNINGS]]
        if len(warnings) > MOST_WARNINGS:
            out.append(f"  ... and {len(warnings) - MOST_WARNINGS} more: grep WARNING -r logs/")
    else:
        out.append("no warnings")
    return out
