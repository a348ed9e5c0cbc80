"""The corrections real data need, end to end (issue 81): a plate crystal of mu t = 0.8 on
a 1 mm CdTe sensor at 87 keV, in air, its beam decaying by 10% with a ripple that a monitor
records, a holder ring with an empty-holder scan per sample scan (simulate's
absorbing_plate, the crystal's own incoherent background off so that nothing but the
crystal's diffuse scattering and Bragg peaks is left once the holder and air are
subtracted).  The plate's shape reaches the transform through samples.NAME.shape, the empty
scans through the scans table's background rows; the monitor's reference is the simulated
flux of 1 (so intensities are absolute)."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from hklflow.files.volume import read_volume
from hklflow.simulation.compare import diffuse_contrast, satellite_model
from hklflow.simulation.experiment import preset, simulate_experiment

from conftest import run_snakemake
from experiment_helpers import edit_config


@pytest.fixture(scope="module")
def plate_run(tmp_path_factory):
    from hklflow.simulation import beamline

    d = tmp_path_factory.mktemp("absorbing_plate")
    spec = preset("absorbing_plate")
    spec = dataclasses.replace(spec, beam={**spec.beam, "monitor": True}, background=0.0)
    simulate_experiment(spec, d)
    edit_config(d, lambda c: c.setdefault("reduction", {}).setdefault("transform", {}).update(
        monitor_reference=beamline.MONITOR_SCALE))
    targets = [f"results/tiny/{t}/masked_transform.nxs" for t in ("300K", "100K")]
    r = run_snakemake(d, "-c2", *targets, timeout=1500)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return d, json.loads((d / "truth.json").read_text())


@pytest.mark.slow
def test_the_satellites_come_out_at_their_true_absolute_intensity(plate_run):
    """Sensor efficiency, air, the plate's absorption, the beam's decay: the satellites'
    contrast against the simulation's model (the same reduction of the same crystal without
    any of these effects gives 0.980: bench/README.md)."""
    d, truth = plate_run
    volume = read_volume(d / "results/tiny/100K/masked_transform.nxs")
    contrast = diffuse_contrast(volume, satellite_model(truth, "tiny", 100.0, volume.grid))
    print(contrast.summary())
    assert contrast.contrast / contrast.predicted == pytest.approx(1.0, abs=0.03)


@pytest.mark.slow
def test_what_the_crystal_does_not_scatter_is_zero_within_its_sigma(plate_run):
    """At 300 K (no satellites) away from every node (no Bragg peak, no thermal diffuse
    scattering), the holder and air subtracted leave noise: |I| / sigma > 2 about as often
    as for a normal distribution (4.6%)."""
    d, _ = plate_run
    v = read_volume(d / "results/tiny/300K/masked_transform.nxs")
    hkl = np.stack(np.meshgrid(*[ax.values for ax in v.grid.axes], indexing="ij"), -1)
    hkl = np.moveaxis(hkl, (0, 1, 2), (2, 1, 0))  # [l, k, h, 3] as the arrays
    away = np.linalg.norm(hkl - np.round(hkl), axis=-1) > 0.35
    errors = v.errors()
    measured = (v.weight > 0) & np.isfinite(errors) & (errors > 0)
    z = (v.intensity() / errors)[away & measured]
    outside = float(np.mean(np.abs(z) > 2))
    print(f"{z.size} voxels away from the nodes: mean z {z.mean():+.3f}, "
          f"{100 * outside:.2f}% outside 2 sigma (normal: 4.55%)")
    assert z.size > 10000
    assert abs(z.mean()) < 0.05
    assert outside < 0.07


@pytest.mark.slow
def test_the_volumes_say_what_was_corrected_and_subtracted(plate_run):
    d, _ = plate_run
    v = read_volume(d / "results/tiny/100K/f1/masked_transform.nxs")
    background = v.notes["background"]
    assert background["scan"] == "tiny/100K/f1_empty" and background["voxels_left_out"] == 0
    assert background["scale_how"]["by"] == "monitor"
    # (the workflow's file, not sum_chunks' scratch copy of it)
    assert background["subtracted"].endswith("f1/masked_transform_parts/background.nxs"), \
        background
    part = v.notes["inputs"][0]["notes"] if "inputs" in v.notes else v.notes
    applied = part["corrections"]["applied"]
    assert set(applied) == {"solid_angle", "polarization", "efficiency", "air", "absorption"}
    assert applied["absorption"]["mu_t"] == pytest.approx(0.8)
    # a background row is ingested, never reduced on its own
    assert sorted(p.name for p in (d / "results/tiny/100K/f1_empty").iterdir()) == ["scan.nxs"]


@pytest.mark.slow
def test_the_bench_prints_the_figures_of_the_reduced_experiment(plate_run, tmp_path):
    from test_bench_smoke import BENCH, bench

    d, _ = plate_run
    bench(BENCH / "beamline.py", "--reduced", d, "--json", tmp_path / "r.json",
          check_json=tmp_path / "r.json")
