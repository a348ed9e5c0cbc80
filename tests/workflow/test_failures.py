"""Failure modes of a run, each through Snakemake as a user meets it (issue 6):

1. an invalid config or scans table stops the run before any job, naming file, row, field;
2. a truncated, corrupt or short raw file fails its scan entry with a message naming the
   file (and frame); with --keep-going every other temperature completes, and nothing that
   looks complete is left for the failed entry;
3. raw data are never modified (hashed before and after the runs below);
4. a run killed (SIGTERM, then SIGKILL) in the middle of its transform jobs resumes with the
   next invocation and gives the same volumes as a run that was not interrupted;
5. a second invocation in the same experiment directory is refused while one runs, with a
   message saying how to proceed.

The end-to-end runs share one experiment per module (the tiny simulation, with extra
temperatures made of copies of its raw files) and are marked slow.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml

from conftest import REPO
from conftest import run_snakemake as snakemake

SNAKEFILE = REPO / "Snakefile"
ENV = dict(os.environ, HDF5_USE_FILE_LOCKING="FALSE")
FRAMES_PER_JOB = 30  # the tiny scans (60 frames) become 2 transform jobs per entry and kind
MAX_VOXELS = 10**6  # a small grid: transform jobs take seconds, volumes are small
TIMEOUT = 1500  # s, for one end-to-end run on a busy 2-core machine


def snakemake_cmd(workdir: Path, *args) -> list[str]:
    return [sys.executable, "-m", "snakemake", "--snakefile", str(SNAKEFILE), "--directory",
            str(workdir), *args]


def edit_config(d: Path, change) -> None:
    p = d / "config" / "config.yaml"
    cfg = yaml.safe_load(p.read_text())
    change(cfg)
    p.write_text(yaml.safe_dump(cfg, sort_keys=False))


def small_transform_jobs(cfg) -> None:
    t = cfg.setdefault("reduction", {}).setdefault("transform", {})
    t["frames_per_job"] = FRAMES_PER_JOB
    t["max_voxels"] = MAX_VOXELS


def read_table(d: Path) -> tuple[list[str], list[list[str]]]:
    lines = (d / "config" / "scans.tsv").read_text().splitlines()
    return lines[0].split("\t"), [ln.split("\t") for ln in lines[1:]]


def write_table(d: Path, header, rows) -> None:
    (d / "config" / "scans.tsv").write_text("\n".join("\t".join(r) for r in [header, *rows]) + "\n")


def planned_outputs(d: Path) -> list[str]:
    """Output files of the jobs a dry run plans."""
    r = snakemake(d, "-n", "--cores", "1")
    assert r.returncode == 0, (r.stdout + r.stderr)[-2000:]
    return [f for ln in (r.stdout + r.stderr).splitlines() if ln.startswith("    output: ")
            for f in ln.split(": ", 1)[1].split(", ")]


def raw_digests(d: Path) -> dict:
    """sha256 and mtime of every raw file."""
    return {str(p.relative_to(d)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted((d / "raw").rglob("*")) if p.is_file()}


def final_volumes(d: Path, temperature: str = "*") -> list[Path]:
    res = d / "results"
    return sorted(p for pattern in ("transform.nxs", "masked_transform.nxs", "*_symmetrized.nxs")
                  for p in res.glob(f"*/{temperature}/**/{pattern}"))


def volume_datasets(path: Path) -> dict:
    """Every dataset of a volume file except provenance, times and notes (which record how
    long a job took and when), as numpy arrays."""
    import hdf5plugin  # noqa: F401  (volumes are bitshuffle-LZ4 compressed)

    skip = {"process", "notes"}
    out = {}
    with h5py.File(path, "r") as f:
        def visit(name, obj):
            if isinstance(obj, h5py.Dataset) and not (set(name.split("/")) & skip):
                out[name] = obj[()]
        f.visititems(visit)
    return out


def assert_same_volumes(a: Path, b: Path) -> None:
    da, db = volume_datasets(a), volume_datasets(b)
    assert sorted(da) == sorted(db), (a, sorted(set(da) ^ set(db)))
    for name in da:
        x, y = da[name], db[name]
        if isinstance(x, np.ndarray) and x.dtype.kind == "f":
            assert x.shape == y.shape and np.array_equal(x, y, equal_nan=True), f"{a}: {name} differs"
        else:
            assert np.array_equal(x, y), f"{a}: {name} differs"


# --------------------------------------------------------------------------------------
# 1. Invalid config or scans table: refused before any job
# --------------------------------------------------------------------------------------
@pytest.fixture
def config_only(tiny_experiment, tmp_path) -> Path:
    """The tiny experiment's config and scans table, without raw data (a refused run never
    gets as far as looking for them)."""
    d = tmp_path / "experiment"
    shutil.copytree(tiny_experiment / "config", d / "config")
    return d


def _set_cell(d, row, column, value):
    header, rows = read_table(d)
    rows[row - 1][header.index(column)] = value
    write_table(d, header, rows)


def _extra_config_file(d):
    (d / "config" / "cold.yaml").write_text("instrument:\n  polarization_fraction: 1.5\n")
    # --configfile paths are relative to where snakemake starts, not to --directory
    return ["--configfile", str(d / "config" / "config.yaml"), str(d / "config" / "cold.yaml")]


@pytest.mark.parametrize("case, change, expect", [
    ("config field", lambda d: edit_config(d, lambda c: c["instrument"].__setitem__("wavelength", "short")),
     ["config/config.yaml", "field 'instrument.wavelength'", "not of type 'number'"]),
    ("table field", lambda d: _set_cell(d, 3, "sample", "nosuch"),
     ["config/scans.tsv: row 3", "'sample'", "nosuch"]),
    ("missing table", lambda d: edit_config(d, lambda c: c.__setitem__("scans_table", "config/nope.tsv")),
     ["config/nope.tsv"]),
    ("second config file", _extra_config_file,
     ["config/cold.yaml", "field 'instrument.polarization_fraction'"]),
])
def test_invalid_config_or_table_stops_before_any_job(config_only, case, change, expect):
    """Through Snakemake, a real run (not a dry run): refused at parse time, nothing written.
    Every kind of error and its message are tested on load_experiment in test_config.py;
    these cases show that they reach the user of snakemake unchanged."""
    extra = change(config_only) or []
    r = snakemake(config_only, "--cores", "1", *extra)
    out = r.stdout + r.stderr
    assert r.returncode != 0, out[-2000:]
    for words in expect:
        assert words in out, (case, words, out[-2000:])
    assert "invalid configuration" in out
    assert not (config_only / "results").exists() and not (config_only / "logs").exists()
    assert not (config_only / ".snakemake" / "incomplete").exists() or not any(
        (config_only / ".snakemake" / "incomplete").iterdir())


def test_missing_raw_file_stops_before_any_job_naming_it(tiny_copy):
    """A data path of the scans table that does not exist: the whole run is refused before
    any job starts, naming the table, row, field, file and scan entry."""
    (tiny_copy / "raw" / "tiny" / "100K" / "f2.h5").unlink()
    r = snakemake(tiny_copy, "--cores", "1")
    out = r.stdout + r.stderr
    assert r.returncode != 0
    assert "config/scans.tsv: row 4 (tiny/100K/f2): field 'data': no file matches " \
           "'raw/tiny/100K/f2.h5'" in out, out[-2000:]
    assert not (tiny_copy / "results").exists() and not (tiny_copy / "logs").exists()


# --------------------------------------------------------------------------------------
# 2. Broken raw files: the entry fails, naming file and frame; the rest completes
# --------------------------------------------------------------------------------------
KINDS = ("transform", "masked_transform")
GOOD = ("300K", "150K")  # the parent, and a child temperature made of copies of 100K's files
BROKEN = {  # temperature -> (entry, how it is broken, step that must fail, words of its error)
    "100K": ("f2", "frame 44 cannot be decompressed", "find_peaks", ["raw/tiny/100K/f2.h5", "44"]),
    "200K": ("f1", "60 frames, the table says 61", "ingest_scan", ["raw/tiny/200K/f1.h5", "60", "61"]),
    "250K": ("f2", "truncated to half its size", "ingest_scan", ["raw/tiny/250K/f2.h5"]),
}


def corrupt_frame(path: Path, frame: int) -> None:
    """Overwrite the start of one frame's compressed chunk: the file opens, the frame does
    not decompress."""
    with h5py.File(path, "r+") as f:
        d = f["/entry/data/data"]
        filt, chunk = d.id.read_direct_chunk((frame, 0, 0))
        d.id.write_direct_chunk((frame, 0, 0), b"\x00" * 16 + chunk[16:64], filt)


def make_broken_experiment(tiny_experiment: Path, d: Path) -> None:
    """The tiny experiment (300 K parent, 100 K) plus 150 K (copies of 100 K's frames), 200 K
    and 250 K (copies of 300 K's), with one broken entry at 100, 200 and 250 K."""
    shutil.copytree(tiny_experiment, d)
    edit_config(d, small_transform_jobs)
    header, rows = read_table(d)
    col = {name: i for i, name in enumerate(header)}
    extra = []
    for new, old in (("150", "100"), ("200", "300"), ("250", "300")):
        (d / "raw" / "tiny" / f"{new}K").mkdir()
        for r in rows:
            if r[col["temperature"]] == old:
                src = d / r[col["data"]]
                dst = d / "raw" / "tiny" / f"{new}K" / src.name
                shutil.copyfile(src, dst)
                extra.append([*r[:col["temperature"]], new, *r[col["temperature"] + 1:]])
                extra[-1][col["data"]] = str(dst.relative_to(d))
    rows += extra
    # copies of other entries' files: deliberate repeats (the same data are refused otherwise)
    repeats = [f"tiny/{r[col['temperature']]}K/{r[col['entry']]}" for r in extra]
    edit_config(d, lambda c: c.setdefault("reduction", {}).setdefault("ingest", {})
                .__setitem__("deliberate_repeats", repeats))
    for r in rows:
        if (r[col["temperature"]], r[col["entry"]]) == ("200", "f1"):
            r[col["nframes"]] = "61"
    write_table(d, header, rows)
    corrupt_frame(d / "raw/tiny/100K/f2.h5", 44)
    p = d / "raw/tiny/250K/f2.h5"
    with open(p, "r+b") as f:
        f.truncate(p.stat().st_size // 2)


@pytest.fixture(scope="module")
def keep_going_run(tiny_experiment, tmp_path_factory):
    """The broken experiment run once with --keep-going: (directory, result, raw digests
    before the run)."""
    d = tmp_path_factory.mktemp("keep_going") / "experiment"
    make_broken_experiment(tiny_experiment, d)
    before = raw_digests(d)
    r = snakemake(d, "--cores", "2", "--keep-going", timeout=TIMEOUT)
    return d, r, before


@pytest.mark.slow
def test_broken_raw_files_fail_their_entry_and_the_rest_completes(keep_going_run):
    d, r, _ = keep_going_run
    out = r.stdout + r.stderr
    assert r.returncode != 0, "a run with failed jobs must not report success"
    res = d / "results" / "tiny"
    # every step of the good temperatures ran to the end
    for t in GOOD:
        assert (res / t / "orientation.nxs").is_file(), out[-3000:]
        for kind in KINDS:
            for name in (f"{kind}.nxs", f"{kind}_symmetrized.nxs", f"{kind}.png"):
                assert (res / t / name).is_file(), (t, name, out[-3000:])
            for e in ("f1", "f2"):
                assert (res / t / e / f"{kind}.nxs").is_file()
    for t, (entry, how, step, words) in BROKEN.items():
        # Snakemake reports the failed job, and its log names the file (and the frame)
        assert f"Error in rule {step}" in out
        log = d / "logs" / step / "tiny" / t / f"{entry}.log"
        errors = [ln for ln in log.read_text().splitlines() if " ERROR: " in ln]
        assert errors, (how, log.read_text()[-2000:])
        for w in words:
            assert w in errors[-1], (how, w, errors[-1])
        # nothing that looks complete is left for the failed entry or its temperature
        assert not (res / t / entry / "peaks.nxs").exists(), how
        assert not (res / t / entry / "peaks.png").exists(), how
        if step == "ingest_scan":
            assert not (res / t / entry / "scan.nxs").exists(), how
        assert not (res / t / "orientation.nxs").exists(), how
        assert not list((res / t).rglob("*transform*")), how
        assert not list((res / t).rglob(".*.tmp")), how  # no temporary files left behind
    # the temperature series needs every temperature: not made, and says why in the plan
    assert not list(res.glob("*temperature_series.png"))
    # nothing left half-written anywhere, and the incomplete-job markers are all cleared
    assert not list((d / "results").rglob("*.tmp"))
    inc = d / ".snakemake" / "incomplete"
    assert not inc.exists() or not any(inc.iterdir())
    # what is left to do is exactly the broken temperatures (and the series)
    planned = planned_outputs(d)
    assert not [p for p in planned if any(f"/{t}/" in p for t in GOOD)], planned
    for t in BROKEN:
        assert f"results/tiny/{t}/orientation.nxs" in planned


@pytest.mark.slow
def test_raw_data_are_not_modified_by_a_run(keep_going_run):
    """Failure mode 3: sha256 and mtime of every raw file, before and after the run (whose
    every rule ran for the good temperatures)."""
    d, r, before = keep_going_run
    assert len(before) == 11  # the calibrant image and 5 temperatures x 2 entries
    assert raw_digests(d) == before


# --------------------------------------------------------------------------------------
# 4. A run killed in the middle of its transform jobs resumes and gives the same volumes
# --------------------------------------------------------------------------------------
def start(d: Path, *args, log: Path) -> subprocess.Popen:
    """snakemake in a process group of its own (as a batch system or a terminal sees it)."""
    with open(log, "ab") as out:
        return subprocess.Popen(snakemake_cmd(d, *args), stdout=out, stderr=subprocess.STDOUT,
                                env=ENV, start_new_session=True)


def wait_for(what: str, ready, proc: subprocess.Popen, log: Path, timeout=TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None:
            pytest.fail(f"snakemake ended (status {proc.returncode}) before {what}:\n"
                        + log.read_text()[-3000:])
        if time.monotonic() > deadline:
            kill_group(proc, signal.SIGKILL)
            pytest.fail(f"no {what} after {timeout} s:\n" + log.read_text()[-3000:])
        time.sleep(0.1)


def kill_group(proc: subprocess.Popen, sig) -> None:
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass


def transform_jobs_started(d: Path, since: float):
    """True once a transform_frames job has written to its log after `since` (a job runs)."""
    logs = d / "logs" / "transform_frames"

    def ready():
        return logs.is_dir() and any(p.stat().st_mtime > since and p.stat().st_size > 0
                                     for p in logs.rglob("*.log"))
    return ready


@pytest.mark.slow
def test_killed_run_resumes_and_gives_the_same_volumes(keep_going_run, tmp_path):
    """The keep-going run's 300 K volumes are the uninterrupted reference.  A copy of that
    experiment without them is run again and killed twice in the middle of its transform
    jobs: as a batch system stops a job at its time limit (SIGTERM to the process group, a
    grace period, then SIGKILL), then as a crash (SIGKILL only).  After the first, the next
    invocation simply resumes; after the crash, it is refused with the advice to unlock,
    and after `--unlock` it resumes.  The volumes then equal the reference, dataset by
    dataset (provenance, notes and times aside)."""
    ref, r, before = keep_going_run
    reference = final_volumes(ref, "300K")
    assert len(reference) == 8, (reference, (r.stdout + r.stderr)[-3000:])
    d = tmp_path / "experiment"
    shutil.copytree(ref, d, symlinks=True)  # copy2: times kept, nothing upstream reruns
    for p in sorted((d / "results" / "tiny" / "300K").rglob("*")):
        if p.is_file() and "transform" in p.name:
            p.unlink()
    targets = [f"results/tiny/300K/{kind}{suffix}.nxs" for kind in KINDS
               for suffix in ("", "_symmetrized")]
    log = tmp_path / "snakemake.log"

    # 1. stopped like a batch system stops a job: SIGTERM, a grace period, SIGKILL
    t0 = time.time()
    proc = start(d, "--cores", "2", *targets, log=log)
    wait_for("a transform job", transform_jobs_started(d, t0), proc, log)
    time.sleep(0.5)
    kill_group(proc, signal.SIGTERM)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        pass
    kill_group(proc, signal.SIGKILL)
    proc.wait()
    assert not any((d / t).exists() for t in targets), "the run was not interrupted"

    # the next invocation resumes; 2. it is killed outright in its transform jobs (a crash)
    t1 = time.time()
    proc = start(d, "--cores", "2", *targets, log=log)
    wait_for("a transform job after the restart", transform_jobs_started(d, t1), proc, log)
    time.sleep(0.5)
    kill_group(proc, signal.SIGKILL)
    proc.wait()
    assert not all((d / t).exists() for t in targets), "the second run was not interrupted"

    # the lock the crash left refuses the next invocation, saying how to proceed
    r = snakemake(d, "--cores", "2", *targets)
    out = r.stdout + r.stderr
    assert r.returncode != 0 and "Directory cannot be locked" in out and "--unlock" in out, out[-2000:]
    r = snakemake(d, "--unlock", "--cores", "1")
    assert r.returncode == 0, (r.stdout + r.stderr)[-2000:]

    # 3. and after unlocking, the next invocation finishes the work
    r = snakemake(d, "--cores", "2", *targets, timeout=TIMEOUT)
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    resumed = final_volumes(d, "300K")
    assert [p.relative_to(d) for p in resumed] == [p.relative_to(ref) for p in reference]
    for a, b in zip(resumed, reference):
        assert_same_volumes(a, b)
    # the incomplete markers are gone and nothing else is left to do for 300 K
    inc = d / ".snakemake" / "incomplete"
    assert not inc.exists() or not any(inc.iterdir())
    r = snakemake(d, "-n", "--cores", "1", *targets)
    assert "Nothing to be done" in r.stdout + r.stderr
    assert raw_digests(d) == before  # failure mode 3 again: raw data untouched by kills


# --------------------------------------------------------------------------------------
# 5. A second invocation in the same experiment directory is refused while one runs
# --------------------------------------------------------------------------------------
def test_second_invocation_is_refused_while_one_runs(tiny_copy, tmp_path):
    """Snakemake locks the files a run will write; a second run wanting any of them is
    refused (two whole runs always overlap).  The first run here makes the peak files (a
    minute or so); the second and hklflow demo ask for the same files while it runs."""
    log = tmp_path / "first.log"
    targets = [f"results/tiny/{t}/{e}/peaks.nxs" for t in ("300K", "100K") for e in ("f1", "f2")]
    first = start(tiny_copy, "--cores", "1", *targets, log=log)
    try:
        locks = tiny_copy / ".snakemake" / "locks"
        wait_for("the first run's lock", lambda: locks.is_dir() and any(locks.iterdir()),
                 first, log, timeout=300)
        r = snakemake(tiny_copy, "--cores", "1", *targets)
        out = r.stdout + r.stderr
        assert first.poll() is None, "the first run ended too early for this test"
        assert r.returncode != 0
        assert "Directory cannot be locked" in out, out[-2000:]
        assert "no other Snakemake process" in out and "--unlock" in out, out[-2000:]
        # hklflow demo, whose users do not call snakemake themselves, says it in its terms
        r = subprocess.run([sys.executable, "-m", "hklflow", "demo", "--dir", str(tiny_copy),
                            "--cores", "1", "--", *targets], capture_output=True, text=True,
                           env=ENV, timeout=600)
        assert first.poll() is None, "the first run ended too early for this test"
        assert r.returncode != 0
        # the console ends with FAILED and the reason, not with earlier results
        out = r.stdout.splitlines()  # (stderr: the log's lines, Snakemake's own)
        assert out[-2].startswith("FAILED: the experiment directory") \
            and "locked by another Snakemake run" in out[-2], out[-5:]
        assert f"hklflow demo --dir {tiny_copy} -- --unlock" in out[-2]
        assert out[-1].startswith("Snakemake's output: logs/hklflow/run-")
        assert "open first:" not in out and "no warnings" not in out
    finally:
        kill_group(first, signal.SIGTERM)
        try:
            first.wait(timeout=60)
        except subprocess.TimeoutExpired:
            kill_group(first, signal.SIGKILL)
            first.wait()
    # stopped with SIGTERM, Snakemake released its lock: the next run may start
    assert not any((tiny_copy / ".snakemake" / "locks").glob("*"))
