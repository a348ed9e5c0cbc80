"""The one way a step command runs (hklflow's counterpart of DIALS's error decorator)::

    def parser() -> StepParser:
        p = StepParser("find_peaks", __doc__)
        p.add_settings()
        p.add_input("--scan", "the scan entry's scan.nxs (ingest_scan)")
        p.add_output("--out", "peaks file to write")
        return p

    def run(args, log) -> None:
        ...  # read inputs -> one domain call -> write outputs -> picture

    def main(argv=None) -> int:
        return run_step(parser(), run, argv)

:func:`run_step` parses the arguments, logs to stderr (the rule sends it to its log file),
turns SIGTERM (a batch system's time limit, Snakemake stopping) into SystemExit so that
cleanup runs, calls ``run``, and on any failure removes the outputs declared with
``add_output`` (a stale or half-written file must not look complete).  An
:class:`~hklflow.base.errors.HklflowError` or OSError ends with one line naming the file or
field and exit status 1; anything else is a bug and is logged with its traceback.  A step
that succeeds ends its log with a `resources:` line (CPU, start, wall, peak memory).

A step uses the cores its job was given, no more: the BLAS and OpenMP libraries loaded
(numpy's and scipy's OpenBLAS: the 3D-DeltaPDF's conjugate gradients) and numba's parallel
loops run on its ``--threads`` (1 without it), not on every core of the node.  OpenBLAS's
idle threads spin, and cost a large volume's delta_pdf CPU time and wall time
(bench/pipeline.py measures the steps; docs/internals.md, "Threads").

A job's settings come as a file the workflow wrote (``--settings-file``, named by the
digest of its text: hklflow.planning.jobs.SettingsFiles), or inline as JSON (``--settings``: a
step run by hand or by a test).

A step keeps the memory it frees for its next arrays (keep_freed_memory): a volume-sized
array freed and another made then costs no second round of page faults.
"""
from __future__ import annotations

import argparse
import contextlib
import ctypes
import errno
import io
import logging
import os
import resource
import shutil
import sys
import time
from pathlib import Path

from threadpoolctl import threadpool_limits

from ..base import steplog
from ..base.atomic import WRITING, remove_stale_temporaries
from ..base.errors import ConfigError, HklflowError
from ..settings.params import read_settings, read_settings_file


class StepParser(argparse.ArgumentParser):
    """An argument parser that knows which arguments are the step's outputs."""

    def __init__(self, name: str, doc: str | None):
        super().__init__(prog=f"hklflow {name}", description=(doc or "").split("\n\n")[0],
                         formatter_class=argparse.RawDescriptionHelpFormatter)
        self.step = name
        self.outputs: list[str] = []

    def add_settings(self) -> None:
        """The job's settings (the resolved config sections the step uses): the file the
        rule's params name, or the same JSON given inline."""
        given = self.add_mutually_exclusive_group(required=True)
        given.add_argument("--settings-file", type=Path, metavar="PATH",
                           help="the settings of this job as a JSON file the workflow wrote "
                                "(what the rule's params pass; its name is the digest of "
                                "its text)")
        given.add_argument("--settings", metavar="JSON",
                           help="the settings of this job as JSON text")

    def add_threads(self) -> None:
        """--threads: the cores the job may use (the rule's threads); results do not depend
        on it, so it is no setting."""
        def positive(text):
            n = int(text)
            if n < 1:
                raise argparse.ArgumentTypeError(f"must be >= 1, got {n}")
            return n
        self.add_argument("--threads", type=positive, default=1,
                          help="threads to use (the rule's threads; default 1); the "
                               "results are the same for any number")

    def add_input(self, flag: str, help: str, **kw) -> None:
        self.add_argument(flag, required=kw.pop("required", True), type=Path, help=help, **kw)

    def add_temperature_entries(self) -> None:
        """The inputs and outputs of the orientation steps: every entry of one sample at
        one temperature."""
        self.add_input("--scans", "scan.nxs of every entry at this temperature", nargs="+")
        self.add_input("--peaks", "peaks.nxs of the same entries, in the same order", nargs="+")
        self.add_output("--out", "orientation file to write")
        self.add_output("--png", "residual picture to write")

    def add_output(self, flag: str, help: str, **kw) -> None:
        action = self.add_argument(flag, required=kw.pop("required", True), type=Path,
                                   help=f"{help} (output)", **kw)
        self.outputs.append(action.dest)


def _outputs(parser: StepParser, args) -> list[Path]:
    out = []
    for dest in parser.outputs:
        value = getattr(args, dest, None)
        if value is None:
            continue
        out += list(value) if isinstance(value, (list, tuple)) else [value]
    return out


def _disk_full(exc: BaseException, outputs) -> str | None:
    """'no space left on the device holding <folder> (writing <file>; <free> free now)...'
    when exc (or what caused it: HDF5 and numpy wrap the OS's error) is a full disk; else
    None.  The file is the one base.atomic.atomic_path was writing (its note)."""
    seen, writing = set(), None
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        writing = writing or next((n[len(WRITING):] for n in getattr(exc, "__notes__", ())
                                   if n.startswith(WRITING)), None)
        if getattr(exc, "errno", None) == errno.ENOSPC or "No space left on device" in str(exc):
            where = os.path.dirname(os.path.abspath(outputs[0])) if outputs else os.getcwd()
            try:
                free = f"{shutil.disk_usage(where).free / 1e6:,.1f} MB free now"
            except OSError:
                free = "free space unknown"
            return (f"no space left on the device holding {where} (writing "
                    f"{writing or 'the outputs'}; {free}): expected room for the step's "
                    "outputs: free some space, then run again (what is done is kept)")
        exc = exc.__cause__ or exc.__context__
    return None


ENDED_ON_FULL_DISK = False


class IgnoredErrors:
    """What the interpreter prints as `Exception ignored in: ...` (with Cython's traceback
    before it, through sys.excepthook) while a step runs: kept, and shown when it ends, or
    never when it ended on a full disk: h5py's objects, each failing to flush as it is
    freed, printed dozens of tracebacks before the one line that says so (issue 86).  Those
    of the rest of the process (freed at its exit) too."""

    def __enter__(self):
        self.kept = []
        self.hooks = sys.unraisablehook, sys.excepthook
        # formatted at once: an object being freed must not be kept (nor resurrected)
        sys.unraisablehook = lambda u: self._keep(self.hooks[0], u)
        sys.excepthook = lambda *a: self._keep(self.hooks[1], *a)
        return self

    def _keep(self, hook, *args) -> None:
        text = io.StringIO()
        with contextlib.redirect_stderr(text):
            hook(*args)
        self.kept.append(text.getvalue())

    def __exit__(self, kind, exc, tb) -> None:
        if exc is not None and _disk_full(exc, ()):
            global ENDED_ON_FULL_DISK
            ENDED_ON_FULL_DISK = True  # (commands.cli: the process ends without teardown)
            sys.unraisablehook = sys.excepthook = lambda *a: None
            return
        sys.unraisablehook, sys.excepthook = self.hooks
        sys.stderr.write("".join(self.kept))


def _remove(paths, log: logging.Logger) -> None:
    for p in paths:
        try:
            Path(p).unlink()
            log.info("removed %s", p)
        except FileNotFoundError:
            pass
        except OSError as exc:  # pragma: no cover - a read-only folder
            log.warning("could not remove %s: %s", p, exc)


def _cpu_s(who) -> float:
    r = resource.getrusage(who)
    return r.ru_utime + r.ru_stime


def log_resources(log: logging.Logger, cpu_at_start: float, t0: float) -> None:
    """One line with what the step used (the jobs' own timings, which bench/pipeline.py
    reads): CPU seconds of the process (every thread; start = interpreter and imports
    before the step ran) and of its child processes, wall seconds of the step, peak
    resident memory, and the system share of the CPU seconds (process and children: the
    kernel's page faults, page cache and file I/O, which a virtual machine makes dear)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(
        resource.RUSAGE_CHILDREN)
    log.info("resources: cpu_s=%.2f start_cpu_s=%.2f children_cpu_s=%.2f wall_s=%.2f "
             "peak_rss_mb=%.0f system_cpu_s=%.2f", own.ru_utime + own.ru_stime, cpu_at_start,
             children.ru_utime + children.ru_stime, time.monotonic() - t0,
             own.ru_maxrss / 1024, own.ru_stime + children.ru_stime)


def keep_freed_memory() -> bool:
    """Arrays from the process's heap, and the memory they free kept there for the next
    ones (glibc's mallopt; False where it is not there, and nothing changes).  glibc maps
    every large block afresh and unmaps it when freed, so a step that frees a volume-sized
    array and makes another paid the page faults of all its pages again, which a virtual
    machine makes dear; the peak memory grows a little (bench/full_rotation.py's volumes
    measure both)."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # pragma: no cover - not glibc
        return False
    m_trim_threshold, m_mmap_max = -1, -4  # malloc.h
    return bool(mallopt(m_mmap_max, 0)) and bool(mallopt(m_trim_threshold, -1))  # -1: never


@contextlib.contextmanager
def threads_limited(threads: int):
    """OpenMP (threadpoolctl) and numba's parallel loops, when loaded, on `threads` threads
    inside the block, BLAS on one; their settings put back after.  hklflow's matrix
    products are small or tall and skinny, where OpenBLAS's threads cost more than they
    give: they spin after every call, above all while a transform job computes its pixel
    table (bench/pipeline.py measures the jobs' CPU time)."""
    numba = sys.modules.get("numba")
    with threadpool_limits(limits={"openmp": threads, "blas": 1}):
        if numba is None:
            yield
            return
        before = numba.get_num_threads()
        numba.set_num_threads(max(1, min(threads, numba.config.NUMBA_NUM_THREADS)))
        try:
            yield
        finally:
            numba.set_num_threads(before)


def parse_frames(text: str | None, nframes: int) -> tuple[int, int]:
    """FIRST-STOP (or FIRST:STOP, stop excluded) within the scan's frames; all by default."""
    if text is None:
        return 0, nframes
    try:
        a, b = (int(v) for v in text.replace("-", ":").split(":"))
    except ValueError:
        raise ConfigError(f"--frames must be FIRST:STOP (or FIRST-STOP), got {text!r}") from None
    if not 0 <= a < b <= nframes:
        raise ConfigError(f"--frames {text} is outside the scan's {nframes} frames")
    return a, b


def run_step(parser: StepParser, run, argv=None) -> int:
    cpu_at_start, t0 = _cpu_s(resource.RUSAGE_SELF), time.monotonic()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    log = steplog.setup(parser.step)
    keep_freed_memory()
    try:
        if getattr(args, "settings_file", None) is not None:
            args.settings = read_settings_file(args.settings_file)
        elif isinstance(getattr(args, "settings", None), str):
            args.settings = read_settings(args.settings)
        for output in _outputs(parser, args):
            for tmp in remove_stale_temporaries(output):
                log.info("removed %s (left by a run that was killed)", tmp)
        with threads_limited(getattr(args, "threads", 1)), IgnoredErrors():
            run(args, log)
        log_resources(log, cpu_at_start, t0)
    except (HklflowError, OSError) as exc:
        _remove(_outputs(parser, args), log)
        log.error("%s failed: %s", parser.step, _disk_full(exc, _outputs(parser, args)) or exc)
        return 1
    except Exception as exc:
        _remove(_outputs(parser, args), log)
        full = _disk_full(exc, _outputs(parser, args))
        if full:
            log.error("%s failed: %s", parser.step, full)
            return 1
        log.exception("%s failed unexpectedly (a bug: please report it with this log): %s: %s",
                      parser.step, type(exc).__name__, exc)
        return 1
    except BaseException:  # SIGTERM (SystemExit), Ctrl-C: no output may look complete
        _remove(_outputs(parser, args), log)
        raise
    return 0
