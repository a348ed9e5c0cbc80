"""Hooks the Snakefile installs in the Snakemake process that runs the workflow.

defer_sigterm_handler: Snakemake 9's scheduler handles SIGTERM (a batch system's time
limit, `kill`) with a function that takes the scheduler's lock, a plain threading.Lock.
Python runs signal handlers in the main thread, which is the thread that holds that lock
while it selects and finishes jobs, so a SIGTERM that arrives then waits for a lock its own
thread holds: Snakemake hangs, the batch system kills it (SIGKILL) after its grace period,
and the directory stays locked until `--unlock` (seen once in tests/test_failures.py, the
SIGTERM landing just as two transform jobs finished).  Run from `onstart`, after the
scheduler has installed its handler, this hands the handler to a thread of its own, which
waits for the lock instead: Snakemake then stops as it means to (running jobs finished or
stopped, the lock removed).
"""
from __future__ import annotations

import signal
import threading


def defer_sigterm_handler() -> bool:
    """Replace the process's SIGTERM handler by one that runs it on a new thread; False
    (nothing changed) when the handler is not a Python function or this is not the main
    thread."""
    handler = signal.getsignal(signal.SIGTERM)
    if not callable(handler) or getattr(handler, "deferred", False):
        return False

    def deferred(signum, frame):
        threading.Thread(target=handler, args=(signum, frame), name="sigterm",
                         daemon=True).start()

    deferred.deferred = True
    try:
        signal.signal(signal.SIGTERM, deferred)
    except ValueError:  # not the main thread
        return False
    return True
