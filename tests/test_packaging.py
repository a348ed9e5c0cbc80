"""The conda environment of the rules (envs/hklflow.yaml, `--sdm conda`) holds every runtime
dependency of pyproject.toml, with the same version bounds: Snakemake installs hklflow into
it with `pip install --no-deps` (envs/hklflow.post-deploy.sh), so a dependency missing there
fails the jobs at import."""
from __future__ import annotations

import re
import tomllib

import yaml

from conftest import REPO

# PyPI name -> conda-forge name, where they differ beyond letter case and - _ . (names are
# compared normalised: PyPI's pyFAI is conda-forge's pyfai).  conda-forge ships matplotlib
# without its Qt/Tk GUI backends as matplotlib-base, which is what a batch job needs
CONDA_FORGE_NAMES = {"matplotlib": "matplotlib-base"}
# in the environment file and not a dependency of the package: the interpreter (pinned to
# a version pyproject's requires-python allows) and pip, which the post-deploy script uses
ENVIRONMENT_ONLY = {"python", "pip"}


def _requirement(text: str) -> tuple[str, frozenset[str]]:
    """(normalised name, its version bounds) of `name>=1,<2` (PEP 508 without extras or
    markers, and conda's spelling of the same)."""
    found = re.fullmatch(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*([<>=!~,.\d\s*]*)\s*", text)
    assert found, f"not a plain requirement: {text!r}"
    name = re.sub(r"[-_.]+", "-", found.group(1)).lower()
    bounds = frozenset(b.replace(" ", "") for b in found.group(2).split(",") if b.strip())
    return name, bounds


def _package_dependencies() -> dict[str, frozenset[str]]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return dict(_requirement(r) for r in project["dependencies"])


def _environment() -> dict[str, frozenset[str]]:
    env = yaml.safe_load((REPO / "envs" / "hklflow.yaml").read_text())
    assert env["channels"][0] == "conda-forge"
    return dict(_requirement(d) for d in env["dependencies"] if isinstance(d, str))


def test_the_conda_environment_has_every_dependency_with_the_same_bounds():
    wanted = {CONDA_FORGE_NAMES.get(name, name): bounds
              for name, bounds in _package_dependencies().items()}
    have = {name: bounds for name, bounds in _environment().items()
            if name not in ENVIRONMENT_ONLY}
    assert "threadpoolctl" in wanted  # what `--sdm conda` jobs once lacked
    assert have == wanted, (f"missing or different in envs/hklflow.yaml: "
                            f"{ {n: sorted(b) for n, b in wanted.items() if have.get(n) != b} }; "
                            f"not in pyproject.toml: {sorted(set(have) - set(wanted))}")


def test_the_conda_environment_pins_a_python_the_package_allows():
    requires = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"]
    pinned = next(d for d in yaml.safe_load((REPO / "envs" / "hklflow.yaml").read_text())
                  ["dependencies"] if isinstance(d, str) and d.startswith("python="))
    version = tuple(int(p) for p in pinned.split("=")[1].split("."))
    lowest = tuple(int(p) for p in re.fullmatch(r">=\s*([\d.]+)", requires).group(1).split("."))
    assert version >= lowest, f"{pinned} but requires-python {requires}"


def test_hklflow_version_is_the_package_version(capsys):
    """`hklflow --version` prints pyproject.toml's version (hklflow.__version__ is kept with it)."""
    from hklflow.commands.cli import main

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"hklflow {project['version']}"


def test_the_license_file_is_the_one_pyproject_names():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert project["license"]["text"] == "BSD-3-Clause"
    assert (REPO / "LICENSE").read_text().startswith("BSD 3-Clause License")


def test_the_wheel_carries_both_snakemake_plugins():
    """Snakemake finds its plugins by their top-level module names (snakemake_executor_plugin_*,
    snakemake_logger_plugin_*): both are packages of their own beside hklflow, which the
    wheel's package search (pyproject's [tool.setuptools.packages.find]) picks up.  (The
    whole wheel, installed, runs `hklflow run`: test_workflow.py's installed-wheel test.)"""
    from setuptools import find_packages

    found = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    packages = set(find_packages(where=str(REPO / found["find"]["where"][0])))
    assert {"hklflow", "snakemake_executor_plugin_hklflow_slurm",
            "snakemake_logger_plugin_hklflow"} <= packages
