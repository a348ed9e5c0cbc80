"""rmc-discord 0.0.4 in a throw-away venv, for tests/test_model_inputs.py, which runs
rmc-discord's own reader (disorder.diffuse.experimental.data and mask) on the file that
hklflow.files.model_inputs writes.

rmc-discord is not a dependency of hklflow. 0.0.4 is PyPI's newest version. It cannot be
installed on Python 3.11, hklflow's Python:
* its only wheels are for CPython 3.6 to 3.9;
* its sdist does not build: setup.py calls setuptools' fetch_build_eggs, which fails under
  pip's build isolation, and with Cython and numpy at hand (--no-build-isolation) cythonize
  stops at "'disorder/correlation/functions.pyx' doesn't match any files", because the sdist
  ships functions.c without the .pyx.
The venv is therefore made with a CPython 3.9, 3.8 or 3.7 found on this machine:
$RMC_DISCORD_PYTHON, python3.9/3.8/3.7 on PATH, or ~/.pyenv/versions/3.9.*/bin/python and
the like. It gets the 0.0.4 wheel with --no-deps, plus what the reader module imports:
nexusformat, pyvista and numpy < 2. The wheel's compiled disorder.diffuse.filters does not
import with numpy 2 ("numpy.dtype size changed"). Its other declared dependencies (PyQt5,
matplotlib, ipython, pycifrw, cython, scipy) belong to the GUI and the refinement.

    python bench/rmc_discord_venv.py [--venv DIR] [--reinstall]   # make it, print its python
"""
from __future__ import annotations

import argparse
import fcntl
import glob
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_VENV = HERE / ".rmc-discord-venv"  # ignored by git (/bench/.rmc-discord-venv*)
RMC = "rmc-discord==0.0.4"
RMC_DEPS = ["numpy<2", "nexusformat", "h5py", "pyvista"]
IMPORT_CHECK = "import disorder.diffuse.experimental"
READY = "hklflow-ready.json"  # written last: a venv without it is half made
PY_VERSIONS = ("3.9", "3.8", "3.7")  # those with a manylinux wheel of rmc-discord 0.0.4


class VenvError(RuntimeError):
    """The venv could not be made (no CPython 3.7-3.9, pip failed, the reader does not
    import)."""


def _python(venv: Path) -> Path:
    return venv / "bin" / "python"


def find_base_python() -> str:
    """A CPython 3.9, 3.8 or 3.7 (the versions rmc-discord 0.0.4 has wheels for)."""
    candidates = []
    if os.environ.get("RMC_DISCORD_PYTHON"):
        candidates.append(os.environ["RMC_DISCORD_PYTHON"])
    for v in PY_VERSIONS:
        if shutil.which(f"python{v}"):
            candidates.append(shutil.which(f"python{v}"))
        pyenv = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
        candidates += sorted(glob.glob(str(pyenv / f"{v}.*" / "bin" / "python")), reverse=True)
    for c in candidates:
        r = subprocess.run([c, "-c", "import sys, venv; print('%d.%d' % sys.version_info[:2])"],
                           capture_output=True, text=True)
        if r.returncode == 0 and r.stdout.strip() in PY_VERSIONS:
            return c
    raise VenvError(
        "rmc-discord 0.0.4 (PyPI's newest) has wheels only for CPython 3.6-3.9 and its sdist "
        "does not build (setup.py cythonizes disorder/correlation/functions.pyx, which the "
        "sdist lacks), so it cannot be installed on Python "
        f"{sys.version_info[0]}.{sys.version_info[1]}; no CPython {', '.join(PY_VERSIONS)} "
        "was found (set RMC_DISCORD_PYTHON, or put python3.9 on PATH)")


def ready(venv: Path = DEFAULT_VENV) -> bool:
    """Whether the venv is complete and rmc-discord's reader imports in it."""
    py = _python(venv)
    return ((venv / READY).is_file() and py.exists()
            and subprocess.run([str(py), "-c", IMPORT_CHECK], capture_output=True).returncode == 0)


def ensure_venv(venv: Path = DEFAULT_VENV, reinstall: bool = False) -> Path:
    """The venv's python, made first if missing, half made or `reinstall` (about a minute
    from PyPI).  Safe between processes (a lock file beside it).  Raises VenvError."""
    venv = Path(venv)
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(venv.parent / f"{venv.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not reinstall and ready(venv):
            return _python(venv)
        shutil.rmtree(venv, ignore_errors=True)
        t0 = time.monotonic()
        base = find_base_python()
        r = subprocess.run([base, "-m", "venv", str(venv)], capture_output=True, text=True)
        if r.returncode:
            raise VenvError(f"{base} -m venv {venv} failed:\n{r.stdout}{r.stderr}")
        logpath = venv / "install.log"
        py = _python(venv)
        pip = [str(py), "-m", "pip", "install", "--disable-pip-version-check"]
        with open(logpath, "w") as log:
            for args in (["--no-deps", "--only-binary", "rmc-discord", RMC], RMC_DEPS):
                log.write("$ " + " ".join(pip + args) + "\n")
                log.flush()
                if subprocess.run(pip + args, stdout=log, stderr=subprocess.STDOUT).returncode:
                    tail = logpath.read_text()[-2000:]
                    raise VenvError(f"pip install {' '.join(args)} failed ({logpath}):\n{tail}")
        r = subprocess.run([str(py), "-c", IMPORT_CHECK], capture_output=True, text=True)
        if r.returncode:
            raise VenvError("rmc-discord installed but its reader does not import:\n"
                            + r.stderr[-2000:])
        freeze = subprocess.run([str(py), "-m", "pip", "freeze"], capture_output=True,
                                text=True).stdout.split()
        (venv / READY).write_text(json.dumps(
            {"base_python": base, "seconds_to_make": round(time.monotonic() - t0, 1),
             "packages": freeze}, indent=1))
        return py


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--venv", type=Path, default=DEFAULT_VENV)
    p.add_argument("--reinstall", action="store_true")
    args = p.parse_args(argv)
    try:
        print(ensure_venv(args.venv, args.reinstall))
    except VenvError as e:
        print(e, file=sys.stderr)
        return 1
    made = json.loads((args.venv / READY).read_text())
    print(f"made in {made['seconds_to_make']} s with {made['base_python']}: "
          f"{' '.join(made['packages'])}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
