"""Running the workflow from the command line, from a source checkout or an installed wheel:

* ``hklflow run EXPDIR [-- SNAKEMAKE ARGS]``: reduce the experiment in EXPDIR (its
  config/config.yaml) with the workflow that comes with this installation;
* ``hklflow demo [--dir DIR]``: simulate the demo experiment if it is absent (~1 minute on
  2 cores), then reduce it.  DIR defaults to the repository root in a source checkout
  (whose config/ is the demo's), else ./hklflow-demo;
* ``hklflow workflow-path``: print the Snakefile's path, for ``snakemake -s "$(hklflow
  workflow-path)" ...``.

A wheel carries the workflow (Snakefile, workflow/, profiles/, envs/, config/) as package
data in hklflow/workflow_files (setup.py copies it at build time); a source checkout uses
the files at the repository's top level.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ..base import steplog
from ..base.atomic import process_alive
from ..planning import job_events, snakemake_processes
from . import console

PACKAGE = Path(__file__).resolve().parents[1]  # the hklflow package
REPO = PACKAGE.parents[1]


def workflow_dir() -> Path:
    """The folder holding the workflow's Snakefile: the checkout's top level when this
    package is imported from a source checkout (src/hklflow), else the packaged copy."""
    if PACKAGE.parent.name == "src" and (REPO / "Snakefile").is_file():
        return REPO
    packaged = PACKAGE / "workflow_files"
    if (packaged / "Snakefile").is_file():
        return packaged
    raise FileNotFoundError(f"the workflow (Snakefile) is neither in a source checkout ({REPO}) "
                            f"nor packaged with hklflow ({packaged}): reinstall hklflow")


# Snakemake arguments that print something other than jobs running: shown as they are
PASS_THROUGH = ("-n", "--dry-run", "--dryrun", "--dag", "--rulegraph", "--filegraph", "--list",
                "-l", "--list-rules", "--summary", "-S", "--detailed-summary", "-D", "--unlock",
                "--version", "-v", "--help", "-h", "--report", "--lint", "--cleanup-metadata",
                "--list-changes", "--lc", "--delete-all-output", "--delete-temp-output")


def snakemake(experiment: Path, args, log, again: str, verbose: bool = False) -> int:
    """Run snakemake with this installation's workflow in an experiment directory; `again`
    is the command that runs it again (for the advice on a locked directory).  Unless
    verbose (or asked for a dry run, a graph, a list...), its output goes to a log file and
    the console shows hklflow.commands.console's progress lines and summary, from the job
    events of hklflow's logger plugin (logs/hklflow/run-<time>.events.jsonl)."""
    env = dict(os.environ, HDF5_USE_FILE_LOCKING="FALSE")
    stamp = time.strftime("%Y%m%dT%H%M%S")
    shown = verbose or _passes_through(args)
    with tempfile.TemporaryDirectory(prefix="hklflow-events-") as scratch:
        # Snakemake's output shown as it is: its events only say whether a lock refused it
        events = (Path(scratch) / "events.jsonl" if shown
                  else experiment / "logs" / "hklflow" / f"run-{stamp}.events.jsonl")
        ours, theirs = job_events.logger_arguments(events, args)
        cmd = [sys.executable, "-m", "snakemake", *ours, "--snakefile",
               str(workflow_dir() / "Snakefile"), "--directory", str(experiment), *theirs]
        log.info("running: %s", " ".join(cmd))
        if shown:
            with subprocess.Popen(cmd, env=env) as proc:
                with run_owner(experiment, proc.pid):
                    rc = wait_stopping_on_interrupt(proc)
        else:
            rc = _compact(cmd, env, experiment, log, stamp, events, again)
        refused = rc != 0 and job_events.lock_refused(job_events.read(events))
    if refused and shown:  # (the compact console says it in its FAILED lines)
        log.error("%s", locked_advice(experiment, again))
    return rc


# who runs Snakemake in an experiment directory through hklflow: "HOST PID" while it runs
OWNER_FILE = ".snakemake/hklflow/run-owner"


@contextlib.contextmanager
def run_owner(experiment: Path, pid: int):
    """OWNER_FILE says this machine's Snakemake `pid` runs in the experiment while the block
    runs (removed after it: a killed run leaves it, with its lock)."""
    path = experiment / OWNER_FILE
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"{socket.gethostname()} {pid}\n")
    except OSError:  # (a read-only experiment: no lock of ours to judge later either)
        pass
    try:
        yield
    finally:
        try:
            if path.read_text().split()[1:2] == [str(pid)]:
                path.unlink()
        except (OSError, IndexError):
            pass


def unlock_if_killed(experiment: Path, log) -> bool:
    """Remove the lock a killed run of hklflow left, so that the run resumes: only when
    OWNER_FILE names a Snakemake of this machine that is gone and no Snakemake on this
    machine works in the directory (a run from another machine of a shared disk, or one
    without hklflow, is never judged: its lock stays, and the refusal says what to do).
    True when it was removed."""
    from ..planning import snakemake_compat

    path = experiment / OWNER_FILE
    try:
        host, pid = path.read_text().split()[:2]
        pid = int(pid)
    except (OSError, ValueError):
        return False
    if (host != socket.gethostname() or process_alive(pid)
            or not snakemake_compat.lock_left(experiment)):
        return False
    if snakemake_processes.holders(experiment) != []:  # (None: processes cannot be listed)
        return False
    log.info("removing the lock of a killed run (Snakemake pid %d on this machine, gone; no "
             "Snakemake works in %s): this run resumes where it stopped", pid, experiment)
    r = subprocess.run([sys.executable, "-m", "snakemake", "--snakefile",
                        str(workflow_dir() / "Snakefile"), "--directory", str(experiment),
                        "--unlock"], capture_output=True, text=True,
                       env=dict(os.environ, HDF5_USE_FILE_LOCKING="FALSE"))
    if r.returncode:
        log.warning("the lock could not be removed: %s", (r.stdout + r.stderr).strip()[-500:])
        return False
    path.unlink(missing_ok=True)
    return True


def locked_advice(experiment: Path, again: str) -> str:
    return (f"the experiment directory {experiment} is locked by another Snakemake run: let "
            "that run finish (or stop it), then run again.  If no other run is going on (one "
            "was killed, or the machine went down), remove the stale lock with "
            f"`{again} -- --unlock` and run again: it resumes where the killed run stopped.")


def unlock_refused(experiment: Path, args, log) -> bool:
    """Whether `--unlock` is asked while a Snakemake on this machine works in the
    experiment directory: its lock is that run's, not a killed one's (said, and refused)."""
    if "--unlock" not in args:
        return False
    found = snakemake_processes.holders(experiment)
    if not found:  # (None: the processes cannot be listed; the user's word is taken)
        return False
    log.error("--unlock refused: the lock of %s belongs to a Snakemake run that goes on (%s): "
              "let it finish or stop it; a run that ends removes its lock itself",
              experiment, "; ".join(map(str, found)))
    return True


def _passes_through(args) -> bool:
    """Whether Snakemake is asked for something other than running jobs (a dry run, a
    graph, a list: PASS_THROUGH, or -n among short options run together, as -np)."""
    for a in args:
        name = a.split("=")[0]
        if name in PASS_THROUGH or (re.fullmatch(r"-[a-zA-Z]{2,}", name) and "n" in name):
            return True
    return False


def _compact(cmd, env, experiment: Path, log, stamp: str, events: Path, again: str) -> int:
    """snakemake with its output in logs/hklflow/run-<stamp>.log, the console showing
    hklflow.commands.console's lines for the job events it writes to `events`."""
    run_log = experiment / "logs" / "hklflow" / f"run-{stamp}.log"
    run_log.parent.mkdir(parents=True, exist_ok=True)
    log.info("Snakemake's output: %s (--verbose shows it here instead)",
             run_log.relative_to(experiment))
    cold = console.kernel_cache_cold()
    if cold:
        log.info(cold)
    since, progress = time.time(), console.Progress()
    screen = console.LiveLine(experiment)
    follower = job_events.Follower(events)
    with open(run_log, "w") as out, subprocess.Popen(
            cmd, env=env, stdout=out, stderr=subprocess.STDOUT) as proc, \
            run_owner(experiment, proc.pid):
        # Snakemake is silent while its jobs run, and meanwhile the console shows their
        # progress from their logs
        polled = time.monotonic()
        disk_to_show = True  # the plan's line on the disk, shown before the jobs' lines
        try:
            while True:
                ended = proc.poll() is not None
                if disk_to_show:
                    disk = console.disk_line(run_log)
                    if disk:
                        screen.show(disk)
                    # (the plan writes it before any job event, or not at all)
                    disk_to_show = not (disk or ended or progress.total)
                for event in follower.new():  # (after the end too: the last events)
                    for shown in progress.feed(event):
                        screen.show(shown)
                if ended:
                    break
                if time.monotonic() - polled >= PROGRESS_POLL_S:
                    screen.update(progress)
                    polled = time.monotonic()
                time.sleep(EVENTS_POLL_S)
        except KeyboardInterrupt:
            wait_stopping_on_interrupt(proc, interrupted=True)
            raise
        finally:
            screen.close()  # (Ctrl-C too: no progress line left under the prompt)
        rc = proc.wait()
    if rc == 0 and progress.nothing_to_do:
        print("nothing to be done: every result asked for is up to date", flush=True)
    if rc == 0:
        ending = console.summary(experiment, since, progress if progress.total else None)
    else:
        locked = job_events.lock_refused(job_events.read(events))
        ending = console.failed(experiment, since, progress, run_log, _output_lines(run_log),
                                locked_advice(experiment, again) if locked else None)
    for line in ending:
        print(line, flush=True)
    return rc


def wait_stopping_on_interrupt(proc, interrupted: bool = False) -> int:
    """Snakemake's exit status.  On Ctrl-C (KeyboardInterrupt raised: the caller's own, or
    one here), Snakemake, which the terminal interrupted too, is let stop its jobs and remove
    its lock, so that running again resumes at once; told so itself when the interrupt was
    this process's alone (kill -INT); a second Ctrl-C stops waiting."""
    if not interrupted:
        try:
            return proc.wait()
        except KeyboardInterrupt:
            pass
    try:
        proc.wait(timeout=INTERRUPT_GRACE_S)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGINT)
        proc.wait()
    raise KeyboardInterrupt


INTERRUPT_GRACE_S = 10.0  # how long Snakemake may take to stop on the terminal's Ctrl-C itself
PROGRESS_POLL_S = 2.0  # how often the running jobs' logs are read for their progress
EVENTS_POLL_S = 0.25  # how often the job events are looked for (a stat and a short read)


def _output_lines(path: Path) -> list[str]:
    """Snakemake's output (the run's log), line by line."""
    try:
        return path.read_text(errors="replace").splitlines()
    except OSError:
        return []


def _split(argv):
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--" in argv:
        i = argv.index("--")
        return argv[:i], argv[i + 1:]
    return argv, []


def main(argv=None) -> int:
    """hklflow demo"""
    argv, extra = _split(argv)
    in_checkout = PACKAGE.parent.name == "src" and (REPO / "Snakefile").is_file()
    p = argparse.ArgumentParser(
        prog="hklflow demo",
        description="Simulate the demo experiment (if absent) and reduce it with Snakemake. "
                    "Arguments after -- go to snakemake (e.g. -- -n for a dry run).")
    p.add_argument("--dir", type=Path, default=REPO if in_checkout else Path("hklflow-demo"),
                   help="experiment directory (default: the repository root in a source "
                        "checkout, whose config/ is the demo's; else ./hklflow-demo)")
    p.add_argument("--cores", default="all", help="cores for snakemake (default: all)")
    p.add_argument("--verbose", action="store_true",
                   help="show Snakemake's own output instead of the progress lines")
    args = p.parse_args(argv)
    log = steplog.setup("demo")
    exp = args.dir.resolve()
    if not (exp / "truth.json").is_file():
        # (here: the simulation loads numba, and only the demo simulates)
        from ..simulation.experiment import preset, simulate_experiment

        log.info("simulating the demo experiment into %s (about a minute on 2 cores)", exp)
        simulate_experiment(preset("demo"), exp)
    if unlock_refused(exp, extra, log):
        return 1
    unlock_if_killed(exp, log)
    return snakemake(exp, ["--cores", str(args.cores), *extra], log, f"hklflow demo --dir {exp}",
                     args.verbose)


def run_main(argv=None) -> int:
    """hklflow run EXPDIR [-- snakemake args]"""
    argv, extra = _split(argv)
    p = argparse.ArgumentParser(
        prog="hklflow run",
        description="Reduce the experiment in EXPDIR (config/config.yaml and its scans table) "
                    "with the workflow of this installation.  Arguments after -- go to "
                    "snakemake (e.g. -- -n, -- --cores 16, -- --profile PROFILE).")
    p.add_argument("experiment", type=Path, help="the experiment directory")
    p.add_argument("--cores", default=None,
                   help="cores for snakemake (default: all, the workflow's profile)")
    p.add_argument("--verbose", action="store_true",
                   help="show Snakemake's own output instead of the progress lines")
    p.add_argument("--set-aside-gone", action="store_true",
                   help="go on when rows reduced before have no data now (a file moved away, "
                        "a typo in 'data'): their temperatures' results are made again "
                        "without them (by default nothing runs)")
    args = p.parse_args(argv)
    log = steplog.setup("run")
    if args.cores is not None:
        extra = ["--cores", str(args.cores), *extra]
    if not (args.experiment / "config" / "config.yaml").is_file():
        log.error("%s has no config/config.yaml: not an experiment directory",
                  args.experiment)
        return 2
    exp = args.experiment.resolve()
    if unlock_refused(exp, extra, log):
        return 1
    unlock_if_killed(exp, log)
    # (here: `hklflow workflow-path`, in many a shell command, needs no config reader)
    from .set_aside import snakemake_arguments

    # rows whose data do not exist yet: named and left out, so that the others reduce
    extra, set_aside, status = snakemake_arguments(exp, extra, args.set_aside_gone)
    for line in set_aside:
        print(line, flush=True)
    if status:
        return status
    rc = snakemake(exp, extra, log, f"hklflow run {exp}", args.verbose)
    for line in set_aside:  # (again at the end: the start has scrolled away)
        print(line, flush=True)
    return rc


def workflow_path_main(argv=None) -> int:
    """hklflow workflow-path"""
    argparse.ArgumentParser(prog="hklflow workflow-path",
                            description="Print the path of the workflow's Snakefile.").parse_args(argv)
    print(workflow_dir() / "Snakefile")
    return 0
