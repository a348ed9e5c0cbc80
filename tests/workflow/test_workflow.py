"""The Snakemake workflow: the planned DAG, refusals before any job, and a real run of the
tiny simulated experiment end to end."""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO, job_counts
from conftest import run_snakemake as snakemake


def test_dry_run_plans_calibration_and_every_scan_entry(tiny_copy):
    r = snakemake(tiny_copy, "-n", "--cores", "1")
    assert r.returncode == 0, r.stderr
    out = r.stdout + r.stderr
    counts = job_counts(out)
    assert counts["calibrate_powder"] == 1
    assert counts["ingest_scan"] == 4  # 2 temperatures x 2 entries
    assert counts["find_peaks"] == 4
    assert counts["index_parent"] == 1 and counts["refine_temperature"] == 2
    for t in ("100K", "300K"):
        for e in ("f1", "f2"):
            assert f"results/tiny/{t}/{e}/scan.nxs" in out
            assert f"results/tiny/{t}/{e}/peaks.nxs" in out
    assert not (tiny_copy / "results").exists()


def test_demo_dry_run_lists_every_sample_temperature_and_entry(tmp_path):
    """The committed demo config, planned: a dry run reads no raw data, so empty files at the
    raw paths stand in for the (unsimulated) frames."""
    from hklflow.planning.config import load_experiment

    shutil.copytree(REPO / "config", tmp_path / "config")
    exp = load_experiment(tmp_path / "config" / "config.yaml", base_dir=tmp_path)
    for path in [c.image for c in exp.calibrations.values()] + [s.data for s in exp.scans]:
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).touch()
    r = snakemake(tmp_path, "-n", "--cores", "1")
    assert r.returncode == 0, r.stderr[-2000:]
    out = r.stdout + r.stderr
    counts = job_counts(out)
    assert counts["calibrate_powder"] == 1
    assert counts["ingest_scan"] == counts["find_peaks"] == 9  # 3 temperatures x f1, f2, f3
    assert counts["index_parent"] == 1 and counts["refine_temperature"] == 3
    for t in ("100K", "200K", "300K"):
        for e in ("f1", "f2", "f3"):
            assert f"results/lsco/{t}/{e}/scan.nxs" in out
    assert "results/lsco/300K/parent_orientation.nxs" in out


def test_rulegraph_draws_calibration_before_ingest(tiny_copy):
    r = snakemake(tiny_copy, "--rulegraph", "--cores", "1")
    assert r.returncode == 0, r.stderr
    dot = r.stdout
    ids = dict((name, num) for num, name in re.findall(r'(\d+)\[label = "(\w+)"', dot))
    assert {"all", "calibrate_powder", "ingest_scan", "find_peaks"} <= set(ids)
    assert f"{ids['calibrate_powder']} -> {ids['ingest_scan']}" in dot
    assert f"{ids['ingest_scan']} -> {ids['find_peaks']}" in dot
    assert f"{ids['find_peaks']} -> {ids['index_parent']}" in dot
    assert f"{ids['index_parent']} -> {ids['refine_temperature']}" in dot  # the parent seeds the children


def test_invalid_config_stops_before_any_job(tiny_copy):
    p = tiny_copy / "config" / "scans.tsv"
    lines = p.read_text().splitlines()
    lines[2] = lines[2].replace("\t60\t", "\tsixty\t")
    p.write_text("\n".join(lines) + "\n")
    r = snakemake(tiny_copy, "--cores", "1")
    assert r.returncode != 0
    assert "config/scans.tsv: row 2" in r.stderr and "'nframes'" in r.stderr, r.stderr[-2000:]
    assert not (tiny_copy / "results").exists() and not (tiny_copy / "logs").exists()


def test_command_line_config_overrides_are_refused_with_advice(tiny_copy):
    r = snakemake(tiny_copy, "-n", "--cores", "1", "--config", "experiment=other")
    assert r.returncode != 0
    assert "--configfile" in r.stdout + r.stderr


@pytest.mark.slow
def test_tiny_experiment_end_to_end(tiny_run, tiny_truth):
    from hklflow.files.peaks import read_peaks_file
    from hklflow.model.geometry import DetectorGeometry
    from hklflow.simulation.compare import match_peaks

    tiny_copy, r, before, after = tiny_run
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    # hklflow run's console: a line per rule, the summary; on one screen (issue 70)
    console = (r.stderr + r.stdout).splitlines()
    assert len(console) <= 40, "\n".join(console)
    assert "open first:" in console, "\n".join(console)
    assert any(line == "no warnings" or line.startswith("warnings (") for line in console)
    assert "44 of 44 jobs done in" in r.stdout, r.stdout  # (the rule `all` not counted)
    # the pictures to open first: every pattern names pictures the run made, in that order
    from hklflow.commands.console import FIRST_PICTURES

    assert all(list(tiny_copy.glob(pattern)) for pattern in FIRST_PICTURES), FIRST_PICTURES
    first = console[console.index("open first:") + 1]
    assert tiny_copy.joinpath(first.strip()).match(FIRST_PICTURES[0]), first
    assert len(list((tiny_copy / "logs/hklflow").glob("run-*.log"))) == 1
    # raw data are opened read-only and never modified
    assert after == before and len(before) >= 5
    res = tiny_copy / "results"
    poni = res / "calibration" / "ceo2" / "geometry.poni"
    for f in (poni, res / "calibration" / "ceo2" / "calibration.nxs",
              res / "calibration" / "ceo2" / "calibration.png"):
        assert f.is_file() and f.stat().st_size > 0
    # the calibration found the simulated calibration geometry
    g = DetectorGeometry.from_poni_file(poni, "Pilatus300k")
    true = tiny_truth["calibration_geometry"]
    assert abs(g.dist / true["dist"] - 1) < 1e-3
    px = 172e-6
    assert abs(g.poni1 - true["poni1"]) / px < 0.3 and abs(g.poni2 - true["poni2"]) / px < 0.3
    for t in ("100K", "300K"):
        for e in ("f1", "f2"):
            scan = res / "tiny" / t / e / "scan.nxs"
            assert scan.is_file()
            assert (tiny_copy / "logs" / "ingest_scan" / "tiny" / t / f"{e}.log").is_file()
            peaks = read_peaks_file(res / "tiny" / t / e / "peaks.nxs")
            m = match_peaks(peaks.peaks, tiny_truth["scans"][f"tiny/{t}/{e}"])
            assert m.recall > 0.97 and m.unmatched_fraction < 0.03, m.summary()
            assert (res / "tiny" / t / e / "peaks.png").stat().st_size > 10000
    # orientation: the parent indexed from scratch, every temperature refined from it
    from hklflow.files.orientation import read_orientation_file

    assert (res / "tiny" / "300K" / "parent_orientation.nxs").is_file()
    for t in ("100K", "300K"):
        o = read_orientation_file(res / "tiny" / t / "orientation.nxs")
        assert o.parent == "tiny/300K"
        assert o.statistics["fraction_indexed"] > 0.95 and o.statistics["rms_px"] < 0.3
        true_cell = np.array(tiny_truth["samples"]["tiny"]["temperatures"][t]["cell"][:3])
        assert np.abs(np.array(o.cell[:3]) / true_cell - 1).max() < 1e-3
        assert (res / "tiny" / t / "orientation.png").stat().st_size > 10000
    # every rule ran: volumes of every entry, merged, symmetrised, the temperature series
    for kind in ("transform", "masked_transform"):
        for t in ("100K", "300K"):
            for e in ("f1", "f2"):
                assert (res / "tiny" / t / e / f"{kind}.nxs").is_file()
                assert (res / "tiny" / t / e / f"{kind}.png").stat().st_size > 10000
                assert not (res / "tiny" / t / e / f"{kind}_parts").exists() or not any(
                    (res / "tiny" / t / e / f"{kind}_parts").iterdir())  # temporary parts removed
                assert (res / "tiny" / t / e / "mask.nxs").is_file()
            for suffix in ("", "_symmetrized"):
                assert (res / "tiny" / t / f"{kind}{suffix}.nxs").is_file()
                assert (res / "tiny" / t / f"{kind}{suffix}.png").stat().st_size > 10000
        assert (res / "tiny" / f"{kind}_temperature_series.png").stat().st_size > 10000
    assert (res / "tiny" / "grid.json").is_file()
    for t in ("100K", "300K"):
        for name in ("total_pdf", "pdf"):
            assert (res / "tiny" / t / f"{name}.nxs").is_file()
            assert (res / "tiny" / t / f"{name}.png").stat().st_size > 10000
    assert (res / "tiny" / "pdf_temperature_series.png").stat().st_size > 10000
    for rule in ("define_grid", "mask_scan", "transform_frames", "sum_chunks", "merge_entries",
                 "symmetrize", "temperature_series", "total_pdf", "delta_pdf",
                 "pdf_temperature_series"):
        assert any((tiny_copy / "logs" / rule).rglob("*.log")), rule
        assert any((tiny_copy / "benchmarks" / rule).rglob("*.tsv")), rule
    # a second run has nothing to do (the files are the state)
    r2 = snakemake(tiny_copy, "-n", "--cores", "1")
    assert r2.returncode == 0 and "Nothing to be done" in (r2.stdout + r2.stderr), r2.stdout[-3000:]


def test_other_parents_change_the_dag(tiny_copy):
    """A sample with a second parent below a transition: the 100 K refinement starts from
    the 100 K parent, indexed from scratch too."""
    import yaml

    p = tiny_copy / "config" / "config.yaml"
    cfg = yaml.safe_load(p.read_text())
    cfg["samples"]["tiny"]["other_parents"] = [{"temperature": 100, "for_temperatures": [0, 150]}]
    p.write_text(yaml.safe_dump(cfg, sort_keys=False))
    r = snakemake(tiny_copy, "-n", "--cores", "1", "results/tiny/100K/orientation.nxs")
    assert r.returncode == 0, r.stderr[-2000:]
    out = r.stdout + r.stderr
    assert "results/tiny/100K/parent_orientation.nxs" in out
    assert "results/tiny/300K/parent_orientation.nxs" not in out


@pytest.mark.slow
def test_every_output_records_provenance(tiny_run):
    """Every NeXus and JSON output of a full run says how it was made: software versions,
    parameters, input files (with digests), host and time."""
    import json

    from hklflow.files.h5 import read_provenance

    d, r, _, _ = tiny_run
    assert r.returncode == 0
    res = d / "results"
    # (calibration versions/ and their index.json: the list of accepted calibrations, each
    # version's calibration.nxs holds its record; version.json says which version is current)
    files = sorted(p for p in res.rglob("*") if p.suffix in (".nxs", ".json") and p.is_file()
                   and "versions" not in p.parts and p.name not in ("index.json", "version.json"))
    kinds = {p.name for p in files}
    assert {"scan.nxs", "peaks.nxs", "orientation.nxs", "mask.nxs", "transform.nxs",
            "masked_transform_symmetrized.nxs", "grid.json", "calibration.nxs"} <= kinds
    for p in files:
        if p.suffix == ".json":
            record = json.loads(p.read_text()).get("provenance", {})
        else:
            record = read_provenance(p)
        assert {"software", "parameters", "inputs", "host", "time", "program"} <= set(record), p
        assert record["software"].get("hklflow") and record["software"].get("numpy"), p
        assert record["inputs"] and all(v != "missing" for v in record["inputs"].values()), p


# --------------------------------------------------------------------------------------
# The Snakemake contract: a changed setting reruns exactly the jobs that use it
# --------------------------------------------------------------------------------------
ENTRIES = {(t, e) for t in ("300K", "100K") for e in ("f1", "f2")}
KINDS = ("transform", "masked_transform")


def _jobs_from(temperatures, entries=ENTRIES, grid=False, parent=False, calibration=False,
               ingest=(), peaks=()):
    """The (rule, wildcards) set of the tiny experiment's jobs downstream of a change:
    every job of the listed temperatures from the masks on (one transform chunk per
    entry making both kinds, the scales of its entries), the temperature series, the
    experiment's page, and the listed earlier jobs."""
    jobs = {("all", ""), ("experiment_page", "")}
    w = lambda **kw: ", ".join(f"{k}={v}" for k, v in kw.items())  # noqa: E731
    if calibration:
        jobs.add(("calibrate_powder", w(calibration="ceo2")))
    for t, e in ingest:
        jobs.add(("ingest_scan", w(sample="tiny", temperature=t, entry=e)))
    for t, e in peaks:
        jobs.add(("find_peaks", w(sample="tiny", temperature=t, entry=e)))
    if parent:
        jobs.add(("index_parent", w(sample="tiny", temperature="300K")))
    if grid:
        jobs.add(("define_grid", w(sample="tiny")))
    if temperatures and (parent or ingest or peaks):  # (the table of every temperature)
        jobs.add(("orientation_table", w(sample="tiny")))
    for t in temperatures:
        if parent or ingest or peaks:
            jobs.add(("refine_temperature", w(sample="tiny", temperature=t)))
        jobs.add(("scale_entries", w(sample="tiny", temperature=t)))
        for kind in KINDS:
            jobs.add(("merge_entries", w(sample="tiny", temperature=t, kind=kind)))
            jobs.add(("symmetrize", w(sample="tiny", temperature=t, kind=kind)))
        for tt, e in entries:
            if tt != t:
                continue
            if parent or ingest or peaks or not grid:
                jobs.add(("mask_scan", w(sample="tiny", temperature=t, entry=e)))
            jobs.add(("transform_frames", w(sample="tiny", temperature=t, entry=e,
                                            frames="00000-00060")))
            jobs.add(("sum_chunks", w(sample="tiny", temperature=t, entry=e)))
    for kind in KINDS:
        jobs.add(("temperature_series", w(sample="tiny", kind=kind)))
    for t in temperatures:
        jobs.add(("total_pdf", w(sample="tiny", temperature=t)))
        jobs.add(("delta_pdf", w(sample="tiny", temperature=t, pdf="pdf")))
    if temperatures:
        jobs.add(("pdf_temperature_series", w(sample="tiny")))
    return jobs


def _pdf_jobs(total=True, delta=True):
    """The PDF jobs of the tiny experiment (a change to reduction.pdf)."""
    w = lambda **kw: ", ".join(f"{k}={v}" for k, v in kw.items())  # noqa: E731
    jobs = {("all", ""), ("experiment_page", "")}
    if delta:
        jobs.add(("pdf_temperature_series", w(sample="tiny")))
    for t in ("300K", "100K"):
        if total:
            jobs.add(("total_pdf", w(sample="tiny", temperature=t)))
        if delta:
            jobs.add(("delta_pdf", w(sample="tiny", temperature=t, pdf="pdf")))
    return jobs


EVERYTHING = _jobs_from(("300K", "100K"), grid=True, parent=True, calibration=True,
                        ingest=ENTRIES, peaks=ENTRIES)


def _edit_yaml(d, change):
    import yaml

    p = d / "config" / "config.yaml"
    cfg = yaml.safe_load(p.read_text())
    change(cfg)
    p.write_text(yaml.safe_dump(cfg, sort_keys=False))


def _edit_row(d, temperature, entry, column, value):
    p = d / "config" / "scans.tsv"
    lines = p.read_text().splitlines()
    header = lines[0].split("\t")
    for i, line in enumerate(lines[1:], start=1):
        cells = line.split("\t")
        if cells[1] == temperature and cells[2] == entry:
            cells[header.index(column)] = value
            lines[i] = "\t".join(cells)
    p.write_text("\n".join(lines) + "\n")


def _touch(d, path):
    import os
    import time

    p = d / path
    t = time.time() + 5
    os.utime(p, (t, t))


RERUN_CASES = {
    # a peak-search threshold: the peaks and everything made from them; not ingest, not the grid
    "reduction.find_peaks.sigma_strong": (
        lambda d: _edit_yaml(d, lambda c: c.setdefault("reduction", {}).setdefault(
            "find_peaks", {}).update(sigma_strong=3.5)),
        _jobs_from(("300K", "100K"), parent=True, peaks=ENTRIES)),
    # the mask radius: masks, transforms and what sums them; not the peaks nor the orientation
    "reduction.mask.radius_px": (
        lambda d: _edit_yaml(d, lambda c: c.setdefault("reduction", {}).setdefault(
            "mask", {}).update(radius_px=4.0)),
        _jobs_from(("300K", "100K"))),
    # the grid: define_grid and the transforms; not the peak search, not the masks
    "reduction.transform.grid": (
        lambda d: _edit_yaml(d, lambda c: c.setdefault("reduction", {}).setdefault(
            "transform", {}).update(grid={"l": [-8, 8, 0.25]})),
        _jobs_from(("300K", "100K"), grid=True)),
    # the wavelength: the calibration, hence everything
    "instrument.wavelength": (
        lambda d: _edit_yaml(d, lambda c: c["instrument"].update(wavelength=0.41)),
        EVERYTHING),
    # one row's phi_start: that entry's chain, its temperature's refinement, masks and
    # merges; not the other entries' peak searches, not the parent
    "scans.tsv phi_start of tiny/100K/f2": (
        lambda d: _edit_row(d, "100", "f2", "phi_start", "0.5"),
        _jobs_from(("100K",), ingest={("100K", "f2")}, peaks={("100K", "f2")})),
    "scans.tsv omega of tiny/100K/f2": (
        lambda d: _edit_row(d, "100", "f2", "omega", "-1.25"),
        _jobs_from(("100K",), ingest={("100K", "f2")}, peaks={("100K", "f2")})),
    # a raw file rewritten (a newer modification time): that entry's chain
    "raw/tiny/100K/f2.h5 touched": (
        lambda d: _touch(d, "raw/tiny/100K/f2.h5"),
        _jobs_from(("100K",), ingest={("100K", "f2")}, peaks={("100K", "f2")})),
    # the sample's cell: indexing of the parent, the grid and all from them; not the peaks
    "samples.tiny.cell": (
        lambda d: _edit_yaml(d, lambda c: c["samples"]["tiny"].update(
            cell=[5.18, 5.18, 7.51, 90, 90, 90])),
        _jobs_from(("300K", "100K"), grid=True, parent=True)),
    # the hole radius of the DeltaPDF: the DeltaPDFs and their series; not the total PDFs
    "reduction.pdf.radius": (
        lambda d: _edit_yaml(d, lambda c: c.setdefault("reduction", {}).setdefault(
            "pdf", {}).update(radius=0.25)),
        _pdf_jobs(total=False)),
    # the taper: both PDFs of every temperature
    "reduction.pdf.q_max": (
        lambda d: _edit_yaml(d, lambda c: c.setdefault("reduction", {}).setdefault(
            "pdf", {}).update(q_max=5.0)),
        _pdf_jobs()),
    # how raw files are checked: planning's check alone (issue 86), no job while no file changed
    "reduction.ingest.fingerprint full": (
        lambda d: _edit_yaml(d, lambda c: c.setdefault("reduction", {}).setdefault(
            "ingest", {}).update(fingerprint="full")),
        set()),
    # a calibration's start geometry: the calibration, hence everything
    "calibrations.ceo2.start": (
        lambda d: _edit_yaml(d, lambda c: c["calibrations"]["ceo2"]["start"].update(dist=0.119)),
        EVERYTHING),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(RERUN_CASES))
def test_a_changed_setting_reruns_exactly_what_it_changes(tiny_run, case):
    """After a complete run, each change makes `snakemake -n` plan exactly the jobs that use
    the changed setting (or file) and those downstream of them, and nothing else."""
    from conftest import planned_jobs

    d, r, _, _ = tiny_run
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    change, expected = RERUN_CASES[case]
    saved = {p: p.read_bytes() for p in (d / "config").iterdir()}
    mtime = (d / "raw/tiny/100K/f2.h5").stat().st_mtime_ns
    try:
        change(d)
        out = snakemake(d, "-n", "--cores", "1")
        assert out.returncode == 0, out.stderr[-3000:]
        planned = planned_jobs(out.stdout + out.stderr)
    finally:
        for p, content in saved.items():
            p.write_bytes(content)
        import os

        os.utime(d / "raw/tiny/100K/f2.h5", ns=(mtime, mtime))
    assert planned == expected, (f"planned but not expected: {sorted(planned - expected)}; "
                                 f"expected but not planned: {sorted(expected - planned)}")


@pytest.mark.slow
def test_nothing_to_do_after_the_matrix(tiny_run):
    """The changes above were undone: the run is complete again."""
    d, r, _, _ = tiny_run
    out = snakemake(d, "-n", "--cores", "1")
    assert "Nothing to be done" in out.stdout + out.stderr, out.stdout[-3000:]


@pytest.mark.slow
def test_a_missing_calibration_image_stops_the_plan_naming_it(tiny_run):
    """With the results there, a calibration image moved away used to give "Nothing to be
    done" (issue 70): the plan stops, naming the config field and the path."""
    d, r, _, _ = tiny_run
    image = d / "raw/calibration/CeO2.h5"
    moved = d / "CeO2.h5.away"
    image.rename(moved)
    try:
        out = snakemake(d, "-n", "--cores", "1")
    finally:
        moved.rename(image)
    text = out.stdout + out.stderr
    assert out.returncode != 0
    assert "field 'calibrations.ceo2.image': raw/calibration/CeO2.h5 does not exist" in text, \
        text[-2000:]


def test_every_frame_file_of_a_scan_is_an_input_of_its_ingest(tmp_path):
    """A CBF scan's frame files are inputs one by one (overwriting one reruns its entry)."""
    from hklflow.simulation.experiment import preset, simulate_experiment

    from conftest import planned_jobs  # noqa: F401

    simulate_experiment(preset("tiny"), tmp_path, frame_format="cbf")
    r = snakemake(tmp_path, "-n", "--cores", "1", "results/tiny/100K/f2/scan.nxs")
    assert r.returncode == 0, r.stderr[-3000:]
    out = r.stdout + r.stderr
    block = out[out.index("rule ingest_scan:"):]
    block = block[:block.index("jobid:")]
    cbf = sorted((tmp_path / "raw/tiny/100K/f2").glob("*.cbf"))
    assert len(cbf) == 60
    for f in cbf:
        assert str(f.relative_to(tmp_path)) in block, f


# --------------------------------------------------------------------------------------
# Installed from a wheel, in paths with spaces, with file names a shell would execute
# --------------------------------------------------------------------------------------
@pytest.mark.slow
def test_installed_wheel_reduces_an_experiment_with_awkward_paths(tiny_experiment, tmp_path):
    """`pip install` of a wheel (not editable) into a fresh environment whose path has a space,
    then `hklflow run EXPDIR` reduces the tiny experiment with the workflow packaged in the
    wheel: the experiment directory, a --configfile, a raw file and the user mask file have
    spaces and `$(...)` in their names, which the shell commands must never execute."""
    import os
    import subprocess
    import sys
    import sysconfig

    import fabio.tifimage
    import yaml

    env = tmp_path / "py env"
    subprocess.run([sys.executable, "-m", "venv", str(env)], check=True, timeout=300)
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    "-w", str(wheels), str(REPO)], check=True, timeout=600, capture_output=True)
    py = env / "bin" / "python"
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", "--no-index",
                    *map(str, wheels.glob("hklflow-*.whl"))], check=True, timeout=300)
    # the dependencies: this environment's packages (after the wheel's own site-packages)
    site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                          capture_output=True, text=True, check=True).stdout.strip()
    (Path(site) / "deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    hk = env / "bin" / "hklflow"
    where = subprocess.run([str(hk), "workflow-path"], capture_output=True, text=True, check=True)
    assert where.stdout.strip() == f"{site}/hklflow/workflow_files/Snakefile"

    exp = tmp_path / "my experiment $(touch PWNED)"
    shutil.copytree(tiny_experiment, exp)
    odd = "raw/tiny/300K/f1 $(touch PWNED) 'x'.h5"
    (exp / "raw/tiny/300K/f1.h5").rename(exp / odd)
    table = (exp / "config/scans.tsv").read_text().replace("raw/tiny/300K/f1.h5", odd)
    (exp / "config/scans.tsv").write_text(table)
    mask = np.zeros((619, 487), np.uint8)
    mask[10:20, 30:40] = 1
    (exp / "masks $(touch PWNED)").mkdir()
    fabio.tifimage.TifImage(data=mask).write(str(exp / "masks $(touch PWNED)/user mask.tif"))
    extra = tmp_path / "more settings" / "extra config.yaml"
    extra.parent.mkdir()
    extra.write_text(yaml.safe_dump({"instrument": {"detector": {
        "name": "Pilatus300k", "mask_file": "masks $(touch PWNED)/user mask.tif"}}}))
    r = subprocess.run([str(hk), "run", str(exp), "--", "--cores", "2", "--configfile",
                        str(exp / "config/config.yaml"), str(extra)],
                       capture_output=True, text=True, timeout=1500,
                       env={k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"})
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    assert "workflow_files/Snakefile" in r.stderr  # the packaged workflow ran
    assert not list(tmp_path.rglob("PWNED")) and not Path("PWNED").exists()
    res = exp / "results" / "tiny"
    for t in ("300K", "100K"):
        assert (res / t / "masked_transform_symmetrized.nxs").is_file()
    from hklflow.files.mask import read_mask_details
    from hklflow.files.scan import read_scan_file

    assert read_scan_file(res / "300K/f1/scan.nxs").frames.files == (str(exp / odd),)
    bits = read_mask_details(res / "300K/f1/mask.nxs")["pixel_mask"]
    assert ((bits & 256) != 0).sum() == 100  # the user mask (bit 8), from the file with spaces
    # the packaged demo command works without the source tree too (a dry run here)
    r = subprocess.run([str(hk), "demo", "--dir", str(exp), "--", "-n", "--configfile",
                        str(exp / "config/config.yaml"), str(extra)], capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0 and "Nothing to be done" in r.stdout + r.stderr, r.stderr[-2000:]


def test_snakemake_lint_finds_nothing(tiny_copy):
    """Every rule: settings through params, files through input/output, a log, a conda
    environment; no variables from outside the rule in a shell command."""
    r = snakemake(tiny_copy, "--lint")
    assert "Lints for" not in r.stdout + r.stderr, (r.stdout + r.stderr)[-3000:]


@pytest.mark.slow
def test_every_output_has_a_default_that_nexusformat_can_plot(tiny_run):
    """Every NeXus file of the tiny experiment names a plottable default (issue 70:
    orientation.nxs had none): nexusformat finds it and plots it (a 3D volume's middle
    plane: nexusformat draws one or two dimensions, NeXpy slices the third itself)."""
    import matplotlib

    matplotlib.use("Agg")
    from nexusformat.nexus import nxload

    d, r, _, _ = tiny_run
    files = sorted((d / "results").rglob("*.nxs"))
    assert len(files) >= 30
    for path in files:
        root = nxload(str(path))
        try:
            data = root.plottable_data
            assert data is not None, path
            if data.nxsignal.ndim == 3:
                data = data[data.nxsignal.shape[0] // 2]
            data.plot()
        finally:
            root.nxfile.close()
    orientation = nxload(str(d / "results/tiny/300K/orientation.nxs"))
    assert orientation.plottable_data.nxsignal.nxname == "residual"


@pytest.mark.slow
def test_every_merged_volume_has_cc_half_from_its_half_sets(tiny_run):
    """Issue 69: every merged volume's statistics hold CC1/2 in every shell with enough
    pairs, from the transform's half sets (alternating blocks of 16 frames, every entry in
    both halves), with the split stated."""
    from hklflow.files.volume import read_half_set, read_volume_header

    d, r, _, _ = tiny_run
    for t in ("100K", "300K"):
        for kind in ("transform", "masked_transform"):
            path = d / "results/tiny" / t / f"{kind}.nxs"
            stats = read_volume_header(path).notes["statistics"]
            assert "blocks of 16 frames" in stats["cc_half_split"], stats
            assert stats["overall"]["cc_pairs"] > 1000
            assert 0 < stats["overall"]["cc_half"] <= 1
            assert any(s["cc_half"] is not None for s in stats["shells"])
            grid, signal, weight, how = read_half_set(path)
            assert weight.sum() > 0 and grid.shape == tuple(-(-n // 2) for n in
                                                            read_volume_header(path).grid.shape)


@pytest.mark.slow
def test_scales_that_do_not_matter_are_not_applied(tiny_run):
    """reduction.scaling.apply: auto (the default) on a simulation without decay or
    absorption: scale_entries finds that its scales do not matter, the merges read them and
    merge the entries as they are, and their notes and the experiment's page say why."""
    import json

    from hklflow.files.volume import read_volume_header

    d, _, _, _ = tiny_run
    for t in ("100K", "300K"):
        verdict = json.loads((d / "results/tiny" / t / "scales.json").read_text())["verdict"]
        assert verdict["matter"] is False and "RMS" in verdict["why"], verdict
        for kind in ("transform", "masked_transform"):
            scaling = read_volume_header(d / "results/tiny" / t / f"{kind}.nxs").notes["scaling"]
            assert scaling["applied"] is False and scaling["verdict"] == verdict["why"]
    assert "scales fitted, not applied: they do not matter" in \
        (d / "results/report.html").read_text()


@pytest.mark.slow
def test_the_disk_foreseen_is_near_what_the_tiny_run_wrote(tiny_run, monkeypatch):
    """The plan's estimate (hklflow.planning.disk, from the config alone) against the
    results the run wrote: every file of a megabyte or more is named by it, and its whole
    is within the bounds bench/README.md reports ("Disk use foreseen"); `hklflow run`'s
    console showed its line before the jobs'."""
    from hklflow.planning import disk
    from hklflow.planning.config import load_experiment

    d, r, _, _ = tiny_run
    console = (r.stderr + r.stdout).splitlines()
    shown = [i for i, line in enumerate(console) if line.startswith(disk.LINE_START)]
    jobs = [i for i, line in enumerate(console) if re.match(r"^\d+ jobs of \d+ rules", line)]
    assert len(shown) == 1 and jobs and shown[0] < jobs[0], console
    monkeypatch.chdir(d)
    foreseen = disk.foresee(load_experiment("config/config.yaml"), free=0.0,
                            size_of=lambda path: None)
    named = {f.path for f in foreseen.files}
    written = {str(p.relative_to(d)): p.stat().st_size for p in (d / "results").rglob("*")
               if p.is_file()}
    large = {p for p, size in written.items() if size >= 1e6}
    assert large and large <= named, large - named
    real = sum(written.values())
    assert 0.8 < foreseen.total / real < 2.0, (foreseen.total, real)
