"""rmc-discord 0.0.4 in a throw-away venv, for tests/files/test_model_inputs.py, which runs
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

import glob
import os
import shutil
import subprocess
import sys
from pathlib import Path

from nxrefine_venv import VenvError, make_venv, venv_command

HERE = Path(__file__).resolve().parent
DEFAULT_VENV = HERE / ".rmc-discord-venv"  # ignored by git (/bench/.rmc-discord-venv*)
RMC = "rmc-discord==0.0.4"
RMC_DEPS = ["numpy<2", "nexusformat", "h5py", "pyvista"]
IMPORT_CHECK = "import disorder.diffuse.experimental"
PY_VERSIONS = ("3.9", "3.8", "3.7")  # those with a manylinux wheel of rmc-discord 0.0.4

__all__ = ["VenvError", "ensure_venv", "find_base_python"]


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


def ensure_venv(venv: Path = DEFAULT_VENV, reinstall: bool = False) -> Path:
    """rmc-discord's venv's python, made first if missing, half made or `reinstall` (about a
    minute from PyPI, with a CPython 3.7-3.9: find_base_python).  Raises VenvError."""
    return make_venv(venv, base=find_base_python,
                     installs=(["--no-deps", "--only-binary", "rmc-discord", RMC], RMC_DEPS),
                     import_check=IMPORT_CHECK, what="rmc-discord's reader",
                     reinstall=reinstall)


def main(argv=None) -> int:
    return venv_command(argv, __doc__.splitlines()[0], DEFAULT_VENV, ensure_venv)


if __name__ == "__main__":
    raise SystemExit(main())
