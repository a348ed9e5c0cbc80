"""`hklflow demo`: simulate the demo experiment if it is absent, then run the workflow on it.

The demo experiment lives in the repository root by default: config/ is committed (it is
what `hklflow simulate --preset demo` writes), raw/ and truth.json are simulated on first
use (~1 minute on 2 cores), results/ and logs/ are what the workflow makes.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from . import steplog

REPO = Path(__file__).resolve().parents[2]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="hklflow demo",
        description="Simulate the demo experiment (if absent) and reduce it with Snakemake. "
                    "Arguments after -- go to snakemake (e.g. -- -n for a dry run).")
    p.add_argument("--dir", type=Path, default=REPO,
                   help="experiment directory (default: the repository root, whose config/ is the demo's)")
    p.add_argument("--cores", default="all", help="cores for snakemake (default: all)")
    return p


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = []
    if "--" in argv:
        i = argv.index("--")
        argv, extra = argv[:i], argv[i + 1:]
    args = parser().parse_args(argv)
    log = steplog.setup("demo")
    snakefile = REPO / "Snakefile"
    if not snakefile.is_file():
        log.error("the workflow (Snakefile) is not next to this hklflow installation (%s): run "
                  "the demo from a clone of the repository installed with `pip install -e .`", REPO)
        return 2
    exp = args.dir.resolve()
    if not (exp / "truth.json").is_file():
        from .simulation.experiment import preset, simulate_experiment

        log.info("simulating the demo experiment into %s (about a minute on 2 cores)", exp)
        simulate_experiment(preset("demo"), exp)
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(snakefile), "--directory", str(exp),
           "--cores", str(args.cores)] + extra
    log.info("running: %s", " ".join(cmd))
    env = dict(os.environ, HDF5_USE_FILE_LOCKING="FALSE")
    rc = subprocess.call(cmd, env=env)
    if rc != 0 and locked(exp):
        log.error("the experiment directory %s is locked by another Snakemake run: let that run "
                  "finish (or stop it), then run `hklflow demo` again.  If no other run is going "
                  "on (one was killed, or the machine went down), remove the stale lock with "
                  "`hklflow demo --dir %s -- --unlock` and run `hklflow demo` again: it resumes "
                  "where the killed run stopped.", exp, exp)
    return rc


def locked(exp: Path) -> bool:
    """Whether a Snakemake run holds (or a killed one left) the lock of an experiment."""
    locks = exp / ".snakemake" / "locks"
    return locks.is_dir() and any(locks.iterdir())
