"""NXRefine 0.1.1 in a throw-away venv: the one helper of the harnesses that run NXRefine's
own code (bench/nxrefine_compare.py, bench/nxrefine_pdf_compare.py and the cross-check in
tests/steps/test_nxrefine_wrapper.py).

NXRefine is not a dependency of hklflow.  `pip install nxrefine` (0.1.1, the only version on
PyPI) pulls nexpy and nexusformat 2.1.0, which no longer defines `NXgoniometer`, so
`import nxrefine.nxrefine` fails.  The venv therefore gets nxrefine with --no-deps plus what
its modules used here import, with nexusformat 2.0.3 (lmfit is imported inside NXRefine's
refinement methods; nxrefine does not declare it).  NXReduce (nxrefine.nxreduce) also needs
qtpy with a Qt binding (its class is a QtCore.QObject; PyQt5, the smallest wheel, about
230 MB), sqlalchemy, psutil and persist-queue, but not nexpy; it runs with
QT_QPA_PLATFORM=offscreen.

    python bench/nxrefine_venv.py [--venv DIR] [--reinstall]   # make it, print its python
"""
from __future__ import annotations

import argparse
import fcntl
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_VENV = HERE / ".nxrefine-venv"  # ignored by git (/bench/.nxrefine-venv*)
NXREFINE = "nxrefine==0.1.1"
NX_DEPS = ["numpy", "scipy", "gemmi", "h5py", "nexusformat==2.0.3", "scikit-image", "lmfit",
           "qtpy", "PyQt5", "sqlalchemy", "psutil", "persist-queue"]
IMPORT_CHECK = "import nxrefine.nxrefine, nxrefine.nxsymmetry, nxrefine.nxreduce, lmfit"
READY = "hklflow-ready.json"  # written last: a venv without it is half made


class VenvError(RuntimeError):
    """The venv could not be made (pip failed, PyPI unreachable, the package does not
    import)."""


def _python(venv: Path) -> Path:
    return venv / "bin" / "python"


def ready(venv: Path = DEFAULT_VENV, import_check: str = IMPORT_CHECK) -> bool:
    """Whether the venv is complete and its package imports in it."""
    py = _python(venv)
    return ((venv / READY).is_file() and py.exists()
            and subprocess.run([str(py), "-c", import_check], capture_output=True).returncode == 0)


def make_venv(venv: Path, *, base, installs, import_check: str, what: str,
              reinstall: bool = False) -> Path:
    """The python of a throw-away venv (this one, bench/rmc_discord_venv.py's), made first if
    missing, half made or `reinstall`: `base()` (the python to make it with, called only
    then) -m venv, one pip install per list of `installs`, then `import_check` must run and
    READY records the packages.  Safe between processes (a lock file beside it).  Raises
    VenvError naming `what`."""
    venv = Path(venv)
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(venv.parent / f"{venv.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not reinstall and ready(venv, import_check):
            return _python(venv)
        shutil.rmtree(venv, ignore_errors=True)
        t0 = time.monotonic()
        python = base()
        r = subprocess.run([python, "-m", "venv", str(venv)], capture_output=True, text=True)
        if r.returncode:
            raise VenvError(f"{python} -m venv {venv} failed:\n{r.stdout}{r.stderr}")
        logpath = venv / "install.log"
        py = _python(venv)
        pip = [str(py), "-m", "pip", "install", "--disable-pip-version-check"]
        with open(logpath, "w") as log:
            for args in installs:
                log.write("$ " + " ".join(pip + list(args)) + "\n")
                log.flush()
                if subprocess.run(pip + list(args), stdout=log,
                                  stderr=subprocess.STDOUT).returncode:
                    tail = logpath.read_text()[-2000:]
                    raise VenvError(f"pip install {' '.join(args)} failed ({logpath}):\n{tail}")
        r = subprocess.run([str(py), "-c", import_check], capture_output=True, text=True)
        if r.returncode:
            raise VenvError(f"{what} installed but does not import:\n" + r.stderr[-2000:])
        freeze = subprocess.run([str(py), "-m", "pip", "freeze"], capture_output=True,
                                text=True).stdout.split()
        (venv / READY).write_text(json.dumps(
            {"base_python": python, "seconds_to_make": round(time.monotonic() - t0, 1),
             "packages": freeze}, indent=1))
        return py


def ensure_venv(venv: Path = DEFAULT_VENV, reinstall: bool = False) -> Path:
    """NXRefine's venv's python, made first if missing, half made or `reinstall` (about a
    minute from PyPI).  Raises VenvError."""
    return make_venv(venv, base=lambda: shutil.which("python3") or sys.executable,
                     installs=(["--no-deps", NXREFINE], NX_DEPS), import_check=IMPORT_CHECK,
                     what="nxrefine", reinstall=reinstall)


def venv_command(argv, description: str, default_venv: Path, ensure) -> int:
    """The command line of a venv maker: make it (--venv, --reinstall), print its python and
    what it holds."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--venv", type=Path, default=default_venv)
    p.add_argument("--reinstall", action="store_true")
    args = p.parse_args(argv)
    try:
        print(ensure(args.venv, args.reinstall))
    except VenvError as e:
        print(e, file=sys.stderr)
        return 1
    made = json.loads((args.venv / READY).read_text())
    print(f"made in {made['seconds_to_make']} s with {made.get('base_python', '?')}: "
          f"{' '.join(made['packages'])}")
    return 0


def main(argv=None) -> int:
    return venv_command(argv, __doc__.splitlines()[0], DEFAULT_VENV, ensure_venv)


if __name__ == "__main__":
    raise SystemExit(main())
