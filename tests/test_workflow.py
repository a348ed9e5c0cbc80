"""The Snakemake workflow: the planned DAG, refusals before any job, and a real run of the
tiny simulated experiment end to end."""
from __future__ import annotations

import re
import shutil

import numpy as np
import pytest

from hklflow.jobs import snakemake_job_counts as job_counts

from conftest import REPO, run_snakemake as snakemake


def test_dry_run_plans_calibration_and_every_scan_entry(tiny_copy):
    r = snakemake(tiny_copy, "-n", "--cores", "1")
    assert r.returncode == 0, r.stderr
    out = r.stdout + r.stderr
    counts = job_counts(out)
    assert counts["calibrate_powder"] == 1
    assert counts["ingest_scan"] == 4  # 2 temperatures x 2 entries
    assert counts["find_peaks"] == 4
    assert counts["index_parent"] == 1 and counts["refine_scan"] == 2
    for t in ("100K", "300K"):
        for e in ("f1", "f2"):
            assert f"results/tiny/{t}/{e}/scan.nxs" in out
            assert f"results/tiny/{t}/{e}/peaks.nxs" in out
    assert not (tiny_copy / "results").exists()


def test_demo_dry_run_lists_every_sample_temperature_and_entry(tmp_path):
    """The committed demo config, planned: a dry run reads no raw data, so empty files at the
    raw paths stand in for the (unsimulated) frames."""
    from hklflow.config import load_experiment

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
    assert counts["index_parent"] == 1 and counts["refine_scan"] == 3
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
    assert f"{ids['index_parent']} -> {ids['refine_scan']}" in dot  # the parent seeds the children


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
    from hklflow.geometry import DetectorGeometry
    from hklflow.nexus import read_peaks_file
    from hklflow.simulation.compare import match_peaks

    tiny_copy, r, before, after = tiny_run
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
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
    from hklflow.nexus import read_orientation_file

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
    for rule in ("define_grid", "mask_scan", "transform_chunk", "sum_chunks", "merge_entries",
                 "symmetrize", "temperature_series"):
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

    from hklflow.nexus import read_provenance

    d, r, _, _ = tiny_run
    assert r.returncode == 0
    res = d / "results"
    # (calibration versions/ and their index.json: the list of accepted calibrations, each
    # version's calibration.nxs holds its record)
    files = sorted(p for p in res.rglob("*") if p.suffix in (".nxs", ".json") and p.is_file()
                   and "versions" not in p.parts and p.name != "index.json")
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
