"""What `hklflow run` and `hklflow demo` show while Snakemake works: a line per rule as its
jobs finish (done/total, the elapsed time, an estimate of the time left), a failed job's
own one-line message with its log, and at the end a summary that fits on one screen (what
was made, the pictures to open first, every warning the jobs logged).  Snakemake's own
output goes whole to a log file (`--verbose` shows it instead); plain `snakemake` keeps its
usual output."""
from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path

_JOB_STATS = re.compile(r"^(\w+)\s+(\d+)$")
_FINISHED = re.compile(r"^Finished jobid: \d+ \(Rule: (\w+)\)")
_ERROR = re.compile(r"^Error in rule (\w+):")
_ERROR_LOG = re.compile(r"^\s+log: (.+?) \(check log file")
_WARNING = re.compile(r"^\S+ \S+ hklflow\.(\w+) WARNING: (.*)$")

# the pictures a user opens first, in this order (relative to the experiment directory)
FIRST_PICTURES = ("results/calibration/*/calibration.png", "results/*/*/orientation.png",
                  "results/*/*/masked_transform_symmetrized.png",
                  "results/*/*/masked_transform_statistics.png", "results/*/pdf_series*.png",
                  "results/*/*/pdf.png")
MOST_WARNINGS = 8
# what the one-off compilation costs (bench/README.md, "First run": the tiny experiment)
COMPILE_NOTE = "about 2 minutes of CPU, the first run about 2 minutes longer on 2 cores"


def kernel_cache_cold() -> str | None:
    """A line announcing the one-off compilation of hklflow's kernels when numba's cache
    holds none of them yet (this installation's first run; NUMBA_CACHE_DIR moves the
    cache), else None."""
    import os

    package = Path(__file__).resolve().parent
    places = [package / "transform" / "__pycache__"]
    if os.environ.get("NUMBA_CACHE_DIR"):
        places = [Path(os.environ["NUMBA_CACHE_DIR"])]
    places.append(Path.home() / ".cache" / "numba")  # (numba's own where the package is read-only)
    for place in places:
        if place.is_dir() and next(place.rglob("kernels._accumulate*.nbi"), None):
            return None
    return (f"first run of this installation: hklflow's compiled kernels are built once now "
            f"({COMPILE_NOTE}); numba caches them for every later run")


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


@dataclass
class Progress:
    """Snakemake's output, read line by line: jobs per rule, done per rule, failures."""

    start: float = field(default_factory=time.monotonic)
    planned: dict = field(default_factory=dict)  # rule -> jobs
    done: dict = field(default_factory=dict)
    failures: list = field(default_factory=list)  # (rule, log path or None)
    _in_stats: bool = False
    _failed_rule: str | None = None

    @property
    def total(self) -> int:
        return sum(n for rule, n in self.planned.items() if rule != "all")

    def feed(self, line: str) -> list[str]:
        """Take one line of Snakemake's output; returns the lines to show for it."""
        text = line.rstrip("\n")
        if text.startswith("Job stats:"):
            self._in_stats, self.planned = True, {}
            return []
        if self._in_stats:
            found = _JOB_STATS.match(text.strip())
            if found and found.group(1) != "total":
                self.planned[found.group(1)] = int(found.group(2))
            elif text.strip().startswith("total"):
                self._in_stats = False
                return [f"{self.total} jobs of {len(self.planned) - ('all' in self.planned)} "
                        "rules to run"]
            return []
        found = _FINISHED.match(text)
        if found:
            rule = found.group(1)
            self.done[rule] = self.done.get(rule, 0) + 1
            if rule == "all" or self.done[rule] < self.planned.get(rule, 0):
                return []
            return [self._rule_line(rule)]
        found = _ERROR.match(text)
        if found:
            self._failed_rule = found.group(1)
            self.failures.append((self._failed_rule, None))
            return []
        found = _ERROR_LOG.match(text)
        if found and self._failed_rule:
            self.failures[-1] = (self._failed_rule, found.group(1).split(", ")[0])
            self._failed_rule = None
        return []

    def _rule_line(self, rule: str) -> str:
        elapsed = time.monotonic() - self.start
        finished = sum(n for r, n in self.done.items() if r != "all")
        left = ""
        if 0 < finished < self.total:
            left = f", about {_clock(elapsed * (self.total - finished) / finished)} left"
        return (f"  [{_clock(elapsed)}] {rule:<24} {self.done[rule]}/{self.planned.get(rule, 0)}"
                f"  ({finished} of {self.total} jobs{left})")


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
