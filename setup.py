"""Build hook: a wheel carries the workflow (Snakefile, workflow/, profiles/, envs/) as
package data in hklflow/workflow_files, so that a plain `pip install .` gives working
`hklflow run EXPDIR` and `hklflow demo` without the source tree.  An editable install
(`pip install -e .`) uses the checkout's own files (hklflow.commands.run.workflow_dir)."""
import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

WORKFLOW_FILES = ("Snakefile", "workflow", "profiles", "envs")


class BuildPyWithWorkflow(build_py):
    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            return
        root = Path(__file__).resolve().parent
        target = Path(self.build_lib) / "hklflow" / "workflow_files"
        for name in WORKFLOW_FILES:
            src, dst = root / name, target / name
            if src.is_dir():  # symlinks (workflow/schemas) are copied as files
                shutil.copytree(src, dst, dirs_exist_ok=True,
                                ignore=shutil.ignore_patterns("__pycache__", ".snakemake"))
            else:
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, dst)


setup(cmdclass={"build_py": BuildPyWithWorkflow})
