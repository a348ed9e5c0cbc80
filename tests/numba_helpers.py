"""What a fresh process compiles: numba's compile events of a script run with an empty
cache (the first jobs after an install), for tests of what a cold start costs."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

_LISTEN = textwrap.dedent("""
    from numba.core import event

    compiled = []

    class Names(event.Listener):
        def on_start(self, ev):
            pass

        def on_end(self, ev):
            f = getattr(ev.data.get("dispatcher"), "py_func", None)
            compiled.append(getattr(f, "__qualname__", ""))

    event.register("numba:compile", Names())
""")


def compiled_in_fresh_process(script: str, cache_dir) -> list[str]:
    """The qualified names of the functions numba compiles while `script` runs in a process
    of its own with an empty cache in cache_dir (nested ones included)."""
    code = _LISTEN + textwrap.dedent(script) + "\nprint(' '.join(compiled))\n"
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache_dir))
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    return run.stdout.split()


def slice_assignment_checks(compiled: list[str]) -> list[str]:
    """Of the names compiled_in_fresh_process lists, numba's shape check of an array-to-array
    slice assignment (`a[i:j] = b[k:l]`; ol_raise_with_shape_context_cpu in numba 0.68),
    whose formatted error message costs 2-3 CPU-s of a cold process."""
    return [name for name in compiled if "shape_context" in name]
