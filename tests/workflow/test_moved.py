"""A reduced experiment moved or copied elsewhere (another folder, disk or machine) plans
nothing: no absolute path in it matters, and a copy that keeps the files' times (cp -a,
rsync -a, tar) is up to date.  docs/configuration.md, "Moving an experiment"."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest


def _dry_run(experiment):
    r = subprocess.run([sys.executable, "-m", "hklflow", "run", str(experiment), "--", "-n"],
                       capture_output=True, text=True, timeout=600, cwd="/")
    return r.returncode, r.stdout + r.stderr


@pytest.mark.slow
def test_a_reduced_experiment_moved_or_copied_plans_nothing(tiny_run, tmp_path):
    d, r, _, _ = tiny_run
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    copied = tmp_path / "disk2" / "copied"
    shutil.copytree(d, copied, symlinks=True)  # (copy2: times kept, as cp -a or rsync -a)
    rc, out = _dry_run(copied)
    assert rc == 0 and "Nothing to be done" in out, out[-3000:]
    moved = tmp_path / "elsewhere" / "moved"
    moved.parent.mkdir()
    os.rename(copied, moved)  # mv
    rc, out = _dry_run(moved)
    assert rc == 0 and "Nothing to be done" in out, out[-3000:]
