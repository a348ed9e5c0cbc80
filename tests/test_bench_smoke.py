"""Every kept bench script runs on tiny data and exits 0 printing its figures, so that the
scripts do not rot while no one measures; and no import cycle joins them.  The figures are
not checked: a smoke run on a shared machine measures nothing."""
from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys

import pytest

from conftest import REPO

BENCH = REPO / "bench"
# bench scripts retired with a README line (bench/README.md, "Retired")
RETIRED = {"sub_steps.py", "sub_steps_accuracy.py", "transform_split.py"}
HELPERS = {"common.py", "nxrefine_venv.py", "rmc_discord_venv.py"}  # imported, not run alone
SMOKED = {"accuracy.py", "cpu_kernels.py", "disk.py", "dryrun.py", "find_peaks.py",
          "full_rotation.py", "nxrefine_experiment.py",
          "live.py", "nxrefine_compare.py", "nxrefine_pdf_compare.py", "orientation.py",
          "pdf.py", "pipeline.py", "shared_detector.py", "startup.py", "threads.py",
          "transform.py", "thick_sensor.py",
          # (on the experiments of tests/workflow/test_beamline_corrections.py and
          # test_scaling.py: --reduced)
          "beamline.py", "scaling.py"}


def bench(*args, timeout=900, check_json=None) -> subprocess.CompletedProcess:
    """A bench script run as its README says, from the repository root; it must exit 0.
    check_json: a path the script writes its JSON report to, which must parse."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    p = subprocess.run([sys.executable, *map(str, args)], cwd=REPO, capture_output=True,
                       text=True, timeout=timeout, env=env)
    assert p.returncode == 0, f"{args}:\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}"
    assert p.stdout.strip(), f"{args} printed nothing"
    if check_json is not None:
        assert json.loads(check_json.read_text())
    return p


def test_every_bench_script_is_smoked_or_retired():
    scripts = {p.name for p in BENCH.glob("*.py")}
    assert scripts == SMOKED | HELPERS, scripts ^ (SMOKED | HELPERS)
    assert not scripts & RETIRED


def test_no_import_cycle_between_bench_scripts():
    """Each script's imports of other bench files (top level or inside functions) form no
    cycle; common.py and nxrefine_venv.py import no other bench file."""
    names = {p.stem for p in BENCH.glob("*.py")}
    graph = {}
    for p in BENCH.glob("*.py"):
        found = set()
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.Import):
                found |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                found.add(node.module.split(".")[0])
        graph[p.stem] = (found & names) - {p.stem}
    assert graph["common"] == set() and graph["nxrefine_venv"] == set()

    def reach(start):
        seen, todo = set(), [start]
        while todo:
            for nxt in graph[todo.pop()]:
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return seen

    assert [m for m in graph if m in reach(m)] == []


def test_startup(tmp_path):
    """One light step, this checkout against itself as the baseline (a few processes)."""
    p = bench(BENCH / "startup.py", "--steps", "define_grid", "--repeats", 1, "--baseline",
              REPO / "src", "--json", tmp_path / "r.json", check_json=tmp_path / "r.json")
    assert "define_grid" in p.stdout


@pytest.mark.slow
def test_pdf(tmp_path):
    bench(BENCH / "pdf.py", "--max-voxels", 61 ** 3, "--repeats", 1, "--smoke",
          "--json", tmp_path / "r.json", check_json=tmp_path / "r.json")


@pytest.mark.slow
def test_orientation(tmp_path):
    bench(BENCH / "orientation.py", "--frames", 150, "--repeats", 1, "--small", 0,
          "--json", tmp_path / "r.json", check_json=tmp_path / "r.json")


@pytest.mark.slow
def test_find_peaks(tmp_path):
    bench(BENCH / "find_peaks.py", "--frames", 24, "--workdir", tmp_path, "--skip-dials",
          "--skip-memory", "--repeats", 1, "--numpy-frames", 2,
          "--json", tmp_path / "r.json", check_json=tmp_path / "r.json")


@pytest.mark.slow
def test_transform(tmp_path):
    bench(BENCH / "transform.py", "--frames", 24, "--kernel-frames", 4,
          "--max-voxels", 64 ** 3, "--repeats", 1, "--workdir", tmp_path,
          "--json", tmp_path / "r.json", check_json=tmp_path / "r.json")


@pytest.mark.slow
def test_thick_sensor(tmp_path):
    """One calibration, the thick_sensor simulation (40 frames) reduced with and without the
    sensor, the pixel table on a 300k."""
    bench(BENCH / "thick_sensor.py", "--quick", "--frames", 40, "--repeats", 1, "--workdir",
          tmp_path, "--json", tmp_path / "r.json", check_json=tmp_path / "r.json")


@pytest.mark.slow
def test_dryrun(tmp_path):
    """(bench/dryrun.py's own options: the smallest experiment it makes.)"""
    bench(BENCH / "dryrun.py", "--sizes", "1x2x1", "--repeats", 1, "--workdir", tmp_path)


@pytest.mark.slow
def test_live(tmp_path):
    """The tiny experiment acquired fast (every scan complete before the first run ends)."""
    bench(BENCH / "live.py", "--preset", "tiny", "--fps", 200, "--pause", 0, "--workdir",
          tmp_path, "--json", tmp_path / "live.json", "--png", tmp_path / "live.png",
          check_json=tmp_path / "live.json")
    assert (tmp_path / "live.png").stat().st_size > 0


@pytest.mark.slow
def test_accuracy(tiny_run):
    """bench/accuracy.py (unchanged) on the tiny experiment reduced by conftest.tiny_run."""
    d, r, _, _ = tiny_run
    assert r.returncode == 0
    bench(BENCH / "accuracy.py", d)


@pytest.mark.slow
def test_shared_detector(tiny_run, tmp_path):
    """bench/shared_detector.py sigma on the tiny experiment reduced by conftest.tiny_run
    (its orientations made again with detector_from parent and all) and one synthetic 2M case."""
    d, r, _, _ = tiny_run
    assert r.returncode == 0
    bench(BENCH / "shared_detector.py", "sigma", "--demo", d, "--presets", "", "--synthetic", 1,
          "--workdir", tmp_path, "--json", tmp_path / "r.json", check_json=tmp_path / "r.json")


@pytest.mark.slow
def test_scaling_cost(tiny_run, tmp_path):
    """bench/scaling.py --cost on a copy of the tiny experiment reduced by conftest.tiny_run:
    its scale_entries job and both merges with the scales and without, as the workflow runs
    them."""
    d = tmp_path / "experiment"
    shutil.copytree(tiny_run[0], d, symlinks=True)
    bench(BENCH / "scaling.py", "--cost", d, "--temperature", "100K", "--repeats", 1,
          "--json", tmp_path / "r.json", check_json=tmp_path / "r.json")
    cost = json.loads((tmp_path / "r.json").read_text())["cost"]
    merges = cost["merges_cpu_s"]
    assert cost["fit_cpu_s"] > 0 and cost["transform_frames_cpu_s"] > 0
    assert set(merges) == {"transform", "masked_transform"}
    assert all(m["scaled"] > 0 and m["unscaled"] > 0 for m in merges.values())


@pytest.mark.slow
def test_disk(tiny_run, tmp_path):
    """bench/disk.py on the tiny experiment reduced by conftest.tiny_run."""
    d, r, _, _ = tiny_run
    assert r.returncode == 0
    bench(BENCH / "disk.py", d, "--json", tmp_path / "r.json", check_json=tmp_path / "r.json")


@pytest.fixture(scope="module")
def small_pipeline(tmp_path_factory):
    """bench/pipeline.py on a Pilatus 300k, three entries of 24 frames of 5 deg (12 in the
    small runs: enough peaks to index), once, without the full-rotation part: its large run
    feeds the scripts that need one."""
    work = tmp_path_factory.mktemp("bench_pipeline")
    bench(BENCH / "pipeline.py", "--detector", "Pilatus300k", "--frames", 24, "--phi-step", 5,
          "--small-frames", 12, "--fine-voxels", 2_000_000, "--repeats", 1,
          "--no-full-rotation", "--workdir", work, "--json", work / "r.json",
          check_json=work / "r.json")
    yield work / "pipeline_Pilatus300k_24f_step5"
    # (several GB: gone once this file's tests are done, not at the session's end)
    shutil.rmtree(work, ignore_errors=True)


@pytest.mark.slow
def test_pipeline_then_full_rotation(small_pipeline, tmp_path):
    bench(BENCH / "full_rotation.py", "--large-run", small_pipeline, "--frames", 24,
          "--points", 41, "--json", tmp_path / "r.json", check_json=tmp_path / "r.json")


@pytest.mark.slow
def test_threads(small_pipeline, tmp_path):
    cores = sorted(os.sched_getaffinity(0))
    bench(BENCH / "threads.py", "--experiment", small_pipeline, "--repeats", 1,
          "--cores", f"{cores[0]},{cores[-1]}", "--json", tmp_path / "r.json",
          check_json=tmp_path / "r.json")


@pytest.mark.slow
def test_cpu_kernels(small_pipeline, tmp_path):
    bench(BENCH / "cpu_kernels.py", "pack", tmp_path / "pack", "--run", small_pipeline,
          "--frames", 8)
    bench(BENCH / "cpu_kernels.py", "run", tmp_path / "pack", "--rounds", 1, "--turns", 1,
          "--json", tmp_path / "r.json", check_json=tmp_path / "r.json")


@pytest.mark.slow
def test_nxrefine_pdf_compare(tmp_path):
    """NXRefine's taper, FFT and symmetrisation against hklflow's, with the settled answers
    the script checks; needs NXRefine's venv (bench/nxrefine_venv.py)."""
    nx_venv(tmp_path)
    bench(BENCH / "nxrefine_pdf_compare.py", "--no-real", "--json", tmp_path / "r.json",
          check_json=tmp_path / "r.json")


@pytest.mark.slow
def test_nxrefine_compare(tmp_path):
    nx_venv(tmp_path)
    bench(BENCH / "nxrefine_compare.py", "--presets", "tiny_hexagonal", "--repeats", 1,
          "--smoke", "--workdir", tmp_path, "--json", tmp_path / "r.json",
          check_json=tmp_path / "r.json")


def nx_venv(tmp_path):
    """NXRefine's venv made (or found), else a skip that says why."""
    sys.path.insert(0, str(BENCH))
    try:
        from nxrefine_venv import VenvError, ensure_venv
    finally:
        sys.path.remove(str(BENCH))
    try:
        ensure_venv()
    except VenvError as e:
        pytest.skip(f"NXRefine's venv could not be made: {e}")


@pytest.mark.slow
def test_nxrefine_experiment(tmp_path):
    """The importer's proof on one layout (the tests run every layout: tests/commands/
    test_import_nxrefine.py); needs NXRefine's venv."""
    nx_venv(tmp_path)
    sim = tmp_path / "tiny"
    subprocess.run([sys.executable, "-m", "hklflow", "simulate", "--preset", "tiny", str(sim)],
                   check=True, capture_output=True, timeout=600)
    r = bench(BENCH / "nxrefine_experiment.py", sim, tmp_path / "out", "--layout", "link")
    assert "NXRefine's place against hklflow's" in r.stdout
