"""Shared fixtures: one tiny simulated experiment per test session (seconds to make), reduced
end to end by Snakemake once (`tiny_run`); step tests run one step command on its outputs
with the settings the Snakefile would pass (`step_settings`)."""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session", autouse=True)
def detector_facts_cache(tmp_path_factory):
    """The detector facts (hklflow.model.geometry.detector_facts) of this session's processes,
    steps and Snakemake runs included, in a folder of the session: the user's cache is
    neither read nor written."""
    folder = tmp_path_factory.mktemp("detector-facts")
    before = os.environ.get("HKLFLOW_CACHE_DIR")
    os.environ["HKLFLOW_CACHE_DIR"] = str(folder)
    yield folder
    if before is None:
        os.environ.pop("HKLFLOW_CACHE_DIR", None)
    else:
        os.environ["HKLFLOW_CACHE_DIR"] = before


@pytest.fixture(scope="session")
def tiny_experiment(tmp_path_factory) -> Path:
    """A simulated 'tiny' experiment directory (read-only for tests: copy before changing)."""
    from hklflow.simulation.experiment import preset, simulate_experiment

    out = tmp_path_factory.mktemp("tiny_experiment")
    simulate_experiment(preset("tiny"), out)
    return out


@pytest.fixture(scope="session")
def tiny_truth(tiny_experiment) -> dict:
    return json.loads((tiny_experiment / "truth.json").read_text())


@pytest.fixture
def tiny_copy(tiny_experiment, tmp_path) -> Path:
    """A private copy of the tiny experiment that a test may modify."""
    dst = tmp_path / "experiment"
    shutil.copytree(tiny_experiment, dst)
    return dst


@pytest.fixture(scope="module")
def image_300k():
    """A simulated CeO2 image of a Pilatus 300k (experiment_helpers.TRUE_300K), once per
    module (0.1 s)."""
    import numpy as np

    from hklflow.simulation.powder import simulate_calibrant_image

    from experiment_helpers import TRUE_300K

    return simulate_calibrant_image(TRUE_300K, "CeO2", np.random.default_rng(3))


def run_snakemake(workdir: Path, *args, timeout=900):
    """snakemake on an experiment directory with the repository's Snakefile."""
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"),
           "--directory", str(workdir), *args]
    env = dict(os.environ, HDF5_USE_FILE_LOCKING="FALSE")
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)


def job_counts(output: str) -> dict:
    """rule -> jobs, from the 'Job stats' table Snakemake prints for a run or dry run."""
    counts = {}
    table = output[output.index("Job stats:"):]
    for line in table.splitlines()[3:]:
        m = re.match(r"^(\w+)\s+(\d+)$", line.strip())
        if not m:
            break
        counts[m.group(1)] = int(m.group(2))
    return counts


def planned_jobs(output: str) -> set[tuple[str, str]]:
    """(rule, wildcards) of every job a dry run plans ('rule X:' blocks of its output)."""
    jobs, rule = set(), None
    for line in output.splitlines():
        m = re.match(r"^(?:local)?rule (\w+):$", line.strip())
        if m:
            rule = m.group(1)
            continue
        m = re.match(r"^wildcards: (.*)$", line.strip())
        if m and rule:
            jobs.add((rule, m.group(1)))
            rule = None
        elif line.strip().startswith("jobid:") and rule in ("all", "experiment_page"):
            # (the rules without wildcards)
            jobs.add((rule, ""))
            rule = None
    return jobs


@contextlib.contextmanager
def _locked(path: Path):
    """An exclusive lock on `path` (made if absent) for the block."""
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def made_once(tmp_path_factory, name: str, make):
    """The JSON-able result of make(folder) for a folder `name` of this test session, made
    once whatever the number of pytest-xdist workers (the first worker to ask makes it while
    the others wait on its lock, then read it)."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # (the session's folder, above every worker's own)
    folder, record = root / name, root / f"{name}.json"
    with _locked(root / f"{name}.lock"):
        if not record.is_file():
            shutil.rmtree(folder, ignore_errors=True)  # (a worker killed while making it)
            folder.mkdir(parents=True)
            record.write_text(json.dumps(make(folder)))
    return folder, json.loads(record.read_text())


@pytest.fixture(scope="session")
def tiny_run(tiny_experiment, tmp_path_factory):
    """The tiny experiment reduced end to end once per session (every rule), by `hklflow
    run`, whatever the number of test workers: (experiment directory, completed process,
    raw-file hashes before, after).  Read-only for tests: copy before changing."""
    import hashlib

    def make(folder):
        dst = folder / "experiment"
        shutil.copytree(tiny_experiment, dst)
        raw = sorted(p for p in (dst / "raw").rglob("*") if p.is_file())

        def hashes():
            return {str(p): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
                    for p in raw}

        before = hashes()
        # as a user runs it: hklflow run's console (Snakemake's own output in logs/hklflow/)
        r = subprocess.run([sys.executable, "-m", "hklflow", "run", str(dst), "--", "--cores",
                            "2"], capture_output=True, text=True, timeout=900,
                           env=dict(os.environ, HDF5_USE_FILE_LOCKING="FALSE"))
        return {"args": r.args, "returncode": r.returncode, "stdout": r.stdout,
                "stderr": r.stderr, "before": before, "after": hashes()}

    folder, made = made_once(tmp_path_factory, "tiny_run", make)
    r = subprocess.CompletedProcess(made["args"], made["returncode"], made["stdout"],
                                    made["stderr"])
    before, after = ({Path(k): tuple(v) for k, v in made[w].items()} for w in ("before", "after"))
    return folder / "experiment", r, before, after


def bench_venv_python(module: str, what: str) -> Path:
    """The python of a throw-away venv of bench/ (`module`: nxrefine_venv, rmc_discord_venv),
    made on first use (about a minute, pip from PyPI) and kept; the test skips, with the
    maker's error as the reason, only where the venv cannot be made."""
    import importlib

    sys.path.insert(0, str(REPO / "bench"))
    try:
        maker = importlib.import_module(module)
    finally:
        sys.path.remove(str(REPO / "bench"))
    try:
        return maker.ensure_venv()
    except maker.VenvError as e:
        pytest.skip(f"{what} could not be made: {e}")


def step_settings(experiment: Path, rule: str, *args, config: str = "config/config.yaml") -> str:
    """The settings JSON the Snakefile passes to a job of `rule` in an experiment directory
    (hklflow.planning.jobs.JobSettings; args: the job's wildcards)."""
    from hklflow.planning.config import load_experiment
    from hklflow.planning.jobs import JobSettings

    exp = load_experiment(experiment / config, base_dir=experiment)
    settings = JobSettings(exp)
    if rule == "define_grid":
        return settings.define_grid(*args, lambda name: str(
            experiment / "results" / "calibration" / name / "geometry.poni"))
    return getattr(settings, rule)(*args)


def run_step(experiment: Path, rule: str, *argv, cwd: Path | None = None):
    """Run a step command (`hklflow RULE ...`) in a subprocess, in the experiment directory."""
    cmd = [sys.executable, "-m", "hklflow", rule, *map(str, argv)]
    env = dict(os.environ, HDF5_USE_FILE_LOCKING="FALSE")
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env,
                          cwd=cwd or experiment)


def ingest_with(experiment: Path, scan_id: str, geometry, out: Path) -> Path:
    """Ingest one scan entry of an experiment with a given calibration geometry (e.g. the
    simulation's truth) instead of calibrate_powder's: the ingest_scan step as the rule runs
    it, with its settings, in the experiment directory."""
    from contextlib import chdir

    from hklflow.files.calibration import write_version_file
    from hklflow.steps import ingest_scan

    out = Path(out).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    poni = out.with_name("given.poni")
    geometry.write_poni(poni)
    version = write_version_file(out.with_name("given.version.json"), "given", "v000", poni)
    settings = step_settings(experiment, "ingest_scan", *scan_id.split("/"))
    with chdir(experiment):
        rc = ingest_scan.main(["--settings", settings, "--poni", str(poni), "--version",
                               str(version), "--out", str(out)])
    assert rc == 0, f"ingest of {scan_id} failed"
    return out


@pytest.fixture(scope="session")
def tiny_300k(tiny_experiment, tiny_truth, tmp_path_factory) -> Path:
    """A copy of the tiny experiment whose 300 K entries f1, f2 went through the first steps
    (their commands, with the settings the Snakefile passes): ingested with the simulation's
    true calibration, peaks found, indexed from scratch (results/tiny/300K/orientation.nxs).
    What the mask and transform steps start from."""
    from contextlib import chdir

    from hklflow.model.geometry import DetectorGeometry
    from hklflow.steps import find_peaks, index_parent

    root = tmp_path_factory.mktemp("tiny_300k") / "experiment"
    shutil.copytree(tiny_experiment, root)
    d = root / "results" / "tiny" / "300K"
    true = DetectorGeometry(**tiny_truth["scans"]["tiny/300K/f1"]["geometry"])
    with chdir(root):
        for e in ("f1", "f2"):
            ingest_with(root, f"tiny/300K/{e}", true, d / e / "scan.nxs")
            assert find_peaks.main(["--settings", step_settings(root, "find_peaks"),
                                    "--scan", f"{d}/{e}/scan.nxs", "--out", f"{d}/{e}/peaks.nxs",
                                    "--png", f"{d}/{e}/peaks.png"]) == 0
        assert index_parent.main(["--settings", step_settings(root, "index_parent", "tiny"),
                                  "--scans", f"{d}/f1/scan.nxs", f"{d}/f2/scan.nxs",
                                  "--peaks", f"{d}/f1/peaks.nxs", f"{d}/f2/peaks.nxs",
                                  "--out", f"{d}/orientation.nxs", "--png", f"{d}/orientation.png"]) == 0
    return root


def record_pictures(monkeypatch, record) -> None:
    """record(fig) for every picture saved from now on (by each drawing module of
    hklflow.pictures), before it is saved as usual."""
    from hklflow.pictures import detector, figure, pdf, volumes

    save = figure.save_tight

    def recording(fig, path, *a, **k):
        record(fig)
        return save(fig, path, *a, **k)
    for module in (detector, figure, pdf, volumes):  # (figure: plot_left_out)
        monkeypatch.setattr(module, "save_tight", recording)


@pytest.fixture
def titles(monkeypatch):
    """The title of every picture drawn, as drawn."""
    drawn = []
    record_pictures(monkeypatch, lambda fig: drawn.append(fig._suptitle.get_text()))
    return drawn
