"""Step total_pdf: the total PDF of a volume - tapered FFT of the data as measured - by the
step command, against the analytic transform of a lattice of Gaussian peaks; the taper's
q_max (config or the data's complete shells, one too small refused, one beyond the grid a
warning) and the picture.  hklflow.algorithms.pdf.volume.total_pdf of a file, slab by
slab: tests/algorithms/pdf/test_pdf.py."""
from __future__ import annotations

import math

import numpy as np
import pytest

from hklflow.algorithms.pdf.fft import fft_crop
from hklflow.algorithms.pdf.taper import tukey_taper
from hklflow.files.pdf import read_pdf
from hklflow.files.volume import write_volume
from hklflow.simulation.compare import pdf_peak

from conftest import step_settings
from volume_helpers import AMP, SIGMA, TETRA, lattice_volume, run, small_grid


def _set_q_max(exp, q_max):
    import yaml

    p = exp / "config" / "config.yaml"
    cfg = yaml.safe_load(p.read_text())
    cfg.setdefault("reduction", {})["pdf"] = {"q_max": q_max}
    p.write_text(yaml.safe_dump(cfg))


def test_total_pdf_of_a_gaussian_lattice_is_the_analytic_transform(experiment):
    """Peaks exp(-|q - G|^2 / 2 s^2) at every node G transform to
    AMP (2 pi)^(3/2) s^3 exp(-2 pi^2 s^2 |R|^2) x mean(taper) at every lattice vector R
    (NXRefine's normalisation, FFT / N); the file carries the lattice axes NeXpy draws."""
    # a taper flat far beyond one node spacing (2.7 r.l.u. along a*), inside the grid
    grid = small_grid(n=(129, 129, 161), step=(0.125, 0.125, 0.25))
    write_volume(experiment / "in.nxs", lattice_volume(grid), {})
    _set_q_max(experiment, 9.0)
    settings = step_settings(experiment, "total_pdf", "tetra")
    assert run("total_pdf", ["--settings", settings, "--input", "in.nxs", "--out", "out/total_pdf.nxs",
                             "--png", "out/total_pdf.png"]) == 0
    pdf = read_pdf(experiment / "out" / "total_pdf.nxs")
    assert pdf.notes["q_max"] == 9.0 and pdf.notes["q_max_source"].startswith("config")
    assert pdf.values.shape == (160, 128, 128)
    assert pdf.cell.parameters == pytest.approx(TETRA)
    sh, sk, sl = fft_crop(grid)
    mean_taper = tukey_taper(grid, pdf.cell, 9.0)[sl, sk, sh].mean()
    # sampled every step, a peak's transform repeats every 1/step (aliases: 3% along l here)
    periods = np.array([1 / ax.step for ax in grid.axes])
    images = np.array([(a, b, c) for a in (-1, 0, 1) for b in (-1, 0, 1) for c in (-1, 0, 1)])
    for r in [(1, 0, 0), (1, 1, 0), (0, 0, 1), (2, 1, 1)]:
        at = np.asarray(r, float) + images * periods
        expected = (AMP * (2 * math.pi) ** 1.5 * SIGMA ** 3 * mean_taper
                    * np.exp(-2 * math.pi ** 2 * SIGMA ** 2 * (at ** 2).sum(axis=1)).sum())
        assert pdf_peak(pdf, r) == pytest.approx(expected, rel=0.01), r
    assert (experiment / "out" / "total_pdf.png").stat().st_size > 10_000


def test_the_default_taper_stops_where_the_data_thin_out(experiment):
    """Without q_max in the config the taper reaches zero where the shells of |Q| stop
    being complete: here the data end at 4.0 1/A, inside a grid that reaches further."""
    grid = small_grid(n=(73, 73, 97), step=(0.125, 0.125, 0.25))
    write_volume(experiment / "in.nxs", lattice_volume(grid, missing_beyond=4.0), {})
    settings = step_settings(experiment, "total_pdf", "tetra")
    assert run("total_pdf", ["--settings", settings, "--input", "in.nxs", "--out", "t.nxs",
                             "--png", "t.png"]) == 0
    notes = read_pdf(experiment / "t.nxs").notes
    assert notes["q_inside_grid"] > 4.5
    assert notes["q_max"] == pytest.approx(4.0, abs=0.2)
    assert notes["q_max_source"].startswith("measured shells")
    assert notes["unmeasured_within_q_max"] < 0.01


def test_a_q_max_too_small_stops_the_step_and_one_beyond_the_grid_is_a_warning(experiment,
                                                                              capsys):
    """reduction.pdf.q_max below two voxels of |Q| used to write an all-zero PDF, rc 0
    (issue 71): now the step stops naming the setting and writes nothing.  One beyond the
    largest sphere inside the grid (100 where it reaches 4.5) used to be an INFO line: now a
    warning in the log, the notes and the picture's title."""
    from hklflow.steps import total_pdf

    grid = small_grid(n=(37, 37, 49), step=(0.25, 0.25, 0.5))
    write_volume(experiment / "in.nxs", lattice_volume(grid), {})
    for q_max, rc in ((1.0e-6, 1), (100.0, 0)):
        _set_q_max(experiment, q_max)
        settings = step_settings(experiment, "total_pdf", "tetra")
        got = total_pdf.main(["--settings", settings, "--input", "in.nxs", "--out",
                              f"{q_max}.nxs", "--png", f"{q_max}.png"])
        err = capsys.readouterr().err
        assert got == rc
        if rc:
            assert "reduction.pdf.q_max: 1e-06 1/A is less than two voxels" in err
            assert "bug" not in err
            assert not (experiment / f"{q_max}.nxs").exists()
            continue
        warning = "reduction.pdf.q_max 100 1/A reaches beyond the largest sphere inside the grid"
        assert f"WARNING: {warning}" in err
        assert read_pdf(experiment / f"{q_max}.nxs").notes["warnings"][0].startswith(warning)
