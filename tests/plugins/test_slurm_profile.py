"""The SLURM profile (profiles/slurm), without a SLURM cluster: it parses, it selects the SLURM
executor (hklflow-slurm, tests/plugins/test_slurm_executor.py) even though profiles/default is picked
up as the workflow profile, and a dry run plans every job with the resources sbatch gets.  A
real cluster run is in .ci/slurm/."""
from __future__ import annotations

import importlib.util
import re
import subprocess
import sys

import pytest
import yaml

from conftest import REPO, run_snakemake

pytest.importorskip("snakemake_executor_plugin_slurm",
                    reason="snakemake-executor-plugin-slurm not installed (pip install -e '.[slurm]')")

PROFILE = REPO / "profiles" / "slurm"


def test_profile_is_commented_line_by_line():
    text = (PROFILE / "config.yaml").read_text()
    settings = yaml.safe_load(text)
    assert settings["executor"] == "hklflow-slurm"
    assert settings["rerun-incomplete"] is True
    assert settings["hklflow-slurm-max-seconds-between-status-checks"] <= 60   # a finished job seen soon
    assert settings["latency-wait"] >= 30            # shared file systems
    assert settings["retries"] >= 1
    # a group job asks for the CPUs of the rules it runs at once, never more than this
    assert isinstance(settings["cores"], int) and 1 <= settings["cores"] <= 64
    assert "HDF5_USE_FILE_LOCKING" in settings["envvars"]
    assert "attempt" in str(settings["default-resources"]["mem_mb"])
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if re.match(r"^[A-Za-z][\w-]*:", line):       # a top-level setting
            assert i > 0 and lines[i - 1].lstrip().startswith("#"), \
                f"profiles/slurm/config.yaml line {i + 1} ({line!r}) has no comment above it"


def test_profile_selects_the_slurm_executor(tmp_path):
    """Snakemake also loads profiles/default (next to the Snakefile) as the *workflow* profile,
    whose keys override --profile's: it must not set the executor (or latency-wait)."""
    code = ("import sys; from snakemake.cli import parse_args; "
            "_, a = parse_args(sys.argv[1:]); print('EXECUTOR', a.executor); "
            "print('LATENCY', a.latency_wait); print('ENVVARS', sorted(a.envvars))")
    r = subprocess.run([sys.executable, "-c", code, "--snakefile", str(REPO / "Snakefile"),
                        "--profile", str(PROFILE), "-n"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "EXECUTOR hklflow-slurm" in r.stdout, (
        "snakemake --profile profiles/slurm would not use the SLURM executor: " + r.stdout + r.stderr)
    settings = yaml.safe_load((PROFILE / "config.yaml").read_text())
    assert f"LATENCY {settings['latency-wait']}" in r.stdout
    assert "HDF5_USE_FILE_LOCKING" in r.stdout


def test_dry_run_plans_every_job_with_slurm_resources(tiny_copy):
    r = run_snakemake(tiny_copy, "--profile", str(PROFILE), "-n", timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    out = r.stdout + r.stderr
    # a job's block, or (indented) a block of a group job's member
    blocks = re.findall(r"^( *)rule (\w+):\n((?:\1    .*\n)+)", out, re.M)
    assert blocks, out[-3000:]
    rules = {name for _, name, _ in blocks}
    assert {"calibrate_powder", "ingest_scan", "find_peaks", "index_parent", "refine_temperature",
            "mask_scan", "transform_frames", "sum_chunks", "merge_entries", "symmetrize",
            "delta_pdf", "temperature_series", "pdf_temperature_series"} <= rules
    # the calibration, the grid (and its copy for hklflow watch's previews), the pictures of a
    # sample's temperature series and the experiment's page run in this Snakemake, nothing
    # else does (what the CI's check of a SLURM run allows to run outside SLURM)
    spec = importlib.util.spec_from_file_location("check_slurm_jobs",
                                                  REPO / ".ci" / "slurm" / "check_slurm_jobs.py")
    checker = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(checker)
    assert checker.declared_local_rules() == {"calibrate_powder", "define_grid",
                                              "provisional_grid",
                                              "temperature_series", "pdf_temperature_series",
                                              "experiment_page", "cut_temperature_series"}
    # the jobs that follow each other ride in one SLURM job (profiles/slurm: groups, and the
    # workflow's peaks_group): the parent temperature's (300K) entries' peak searches with
    # index_parent (1); per temperature (2) its refinement and volumes, with the peak
    # searches of its entries at any temperature but the parent's (a group job's block: from
    # its head to the next group's head or top-level rule)
    heads = re.findall(r"Group job (\w+) .*\n((?:(?!.*Group job |(?:local)?rule ).*\n)*)", out)
    groups = [g for g, _ in heads]
    assert {"parent_orientation": 1, "temperature_volume": 2} == {
        g: groups.count(g) for g in set(groups)}, groups
    members = {g: [] for g in groups}
    for g, body in heads:
        members[g].append(re.findall(r"^    rule (\w+):", body, re.M))
    (parent,) = members["parent_orientation"]
    assert sorted(parent) == ["find_peaks", "find_peaks", "index_parent", "ingest_scan",
                              "ingest_scan"], parent
    peaks_in_volume_jobs = sorted(m.count("find_peaks") for m in members["temperature_volume"])
    assert peaks_in_volume_jobs == [0, 2], members["temperature_volume"]
    for m in members["temperature_volume"]:
        assert m.count("ingest_scan") == m.count("find_peaks") and "refine_temperature" in m, m
    for _, name, body in blocks:
        res = re.search(r"resources: (.*)", body)
        assert res, f"rule {name} planned without resources"
        mem = re.search(r"\bmem_mb=(\d+)", res.group(1))
        runtime = re.search(r"\bruntime=(\d+)", res.group(1))
        # what the plugin turns into sbatch --mem and --time
        assert mem and int(mem.group(1)) > 0, f"{name}: {res.group(1)}"
        assert runtime and int(runtime.group(1)) > 0, f"{name}: {res.group(1)}"
