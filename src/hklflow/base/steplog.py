"""Logging of the step commands: messages with time stamps on stderr, which the Snakemake
rule sends to the rule's log file; progress of long loops."""
from __future__ import annotations

import logging
import signal
import sys
import threading
import time


def _terminate(signum, frame):
    raise SystemExit(128 + signum)


def setup(name: str, verbose: bool = False) -> logging.Logger:
    """Logging to stderr, and SIGTERM (a batch system's time limit, snakemake stopping)
    turned into SystemExit so that the step's cleanup runs: temporary files of atomic
    writes are removed and no output that looks complete is left."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminate)
    logging.basicConfig(stream=sys.stderr, level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(name)s %(levelname)s: %(message)s",
                        datefmt="%Y-%m-%d %H:%M:%S", force=True)
    for noisy in ("pyFAI", "fabio", "numba", "matplotlib", "h5py", "numexpr"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # silx warns on every import that pyopencl is missing; hklflow does not use OpenCL
    logging.getLogger("silx").setLevel(logging.ERROR)
    return logging.getLogger(f"hklflow.{name}")


class Progress:
    """Logs 'done/total' at most every `every` seconds (for long loops).  The line, "<date>
    <time> hklflow.<step> INFO: <what>: <done>/<total> (<rate>/s)", is read back from the
    job's log by `hklflow run`'s console (console.job_progress_text): keep its form."""

    def __init__(self, log: logging.Logger, what: str, total: int, every: float = 10.0):
        self.log, self.what, self.total, self.every = log, what, total, every
        self.t0 = self.last = time.monotonic()

    def update(self, done: int) -> None:
        now = time.monotonic()
        if now - self.last >= self.every or done == self.total:
            rate = done / max(now - self.t0, 1e-9)
            self.log.info("%s: %d/%d (%.1f/s)", self.what, done, self.total, rate)
            self.last = now
