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
import os
import subprocess
import sys
from pathlib import Path

from . import steplog

PACKAGE = Path(__file__).resolve().parent
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


def snakemake(experiment: Path, args, log, again: str) -> int:
    """Run snakemake with this installation's workflow in an experiment directory; `again`
    is the command that runs it again (for the advice on a locked directory)."""
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(workflow_dir() / "Snakefile"),
           "--directory", str(experiment), *args]
    log.info("running: %s", " ".join(cmd))
    rc = subprocess.call(cmd, env=dict(os.environ, HDF5_USE_FILE_LOCKING="FALSE"))
    if rc != 0 and locked(experiment):
        log.error("the experiment directory %s is locked by another Snakemake run: let that run "
                  "finish (or stop it), then run again.  If no other run is going on (one was "
                  "killed, or the machine went down), remove the stale lock with `%s -- --unlock` "
                  "and run again: it resumes where the killed run stopped.", experiment, again)
    return rc


def locked(exp: Path) -> bool:
    """Whether a Snakemake run holds (or a killed one left) the lock of an experiment."""
    locks = exp / ".snakemake" / "locks"
    return locks.is_dir() and any(locks.iterdir())


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
    args = p.parse_args(argv)
    log = steplog.setup("demo")
    exp = args.dir.resolve()
    if not (exp / "truth.json").is_file():
        from .simulation.experiment import preset, simulate_experiment  # only for the demo

        log.info("simulating the demo experiment into %s (about a minute on 2 cores)", exp)
        simulate_experiment(preset("demo"), exp)
    return snakemake(exp, ["--cores", str(args.cores), *extra], log, f"hklflow demo --dir {exp}")


def run_main(argv=None) -> int:
    """hklflow run EXPDIR [-- snakemake args]"""
    argv, extra = _split(argv)
    p = argparse.ArgumentParser(
        prog="hklflow run",
        description="Reduce the experiment in EXPDIR (config/config.yaml and its scans table) "
                    "with the workflow of this installation.  Arguments after -- go to "
                    "snakemake (e.g. -- -n, -- --cores 16, -- --profile PROFILE).")
    p.add_argument("experiment", type=Path, help="the experiment directory")
    args = p.parse_args(argv)
    log = steplog.setup("run")
    if not (args.experiment / "config" / "config.yaml").is_file():
        log.error("%s has no config/config.yaml: not an experiment directory",
                  args.experiment)
        return 2
    exp = args.experiment.resolve()
    return snakemake(exp, extra, log, f"hklflow run {exp}")


def workflow_path_main(argv=None) -> int:
    """hklflow workflow-path"""
    argparse.ArgumentParser(prog="hklflow workflow-path",
                            description="Print the path of the workflow's Snakefile.").parse_args(argv)
    print(workflow_dir() / "Snakefile")
    return 0
