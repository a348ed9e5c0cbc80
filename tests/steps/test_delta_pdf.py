"""Step delta_pdf: the 3D-DeltaPDF of the tiny experiment (reduced end to end once per
session, conftest.tiny_run) against the one its simulated diffuse model gives analytically
(hklflow.simulation.compare.satellite_delta_pdf), the file NeXpy opens, and the step's
errors.  The punch-and-fill and FFT algorithms, and hklflow.algorithms.pdf.volume's PDFs of
a file: tests/algorithms/pdf/test_pdf.py; the settings the step receives:
tests/planning/test_jobs.py.

Truth: below 150 K the simulation puts Gaussian satellites at (h + 1/2, k + 1/2, l); their
DeltaPDF is nonzero only at lattice vectors (u, v, w), with sign (-1)^(u+v) and amplitude
A (2 pi)^(3/2) s_hk^2 s_l exp(-2 pi^2 (s_hk^2 (u^2 + v^2) + s_l^2 w^2)) times the voxel
binning and the taper's mean.  At 300 K there are none: the DeltaPDF must stay near its noise
there while the total PDF shows the lattice (Patterson) peaks.
"""
from __future__ import annotations

import numpy as np
import pytest

from hklflow.algorithms.pdf.fill import OUTCOMES
from hklflow.files.pdf import read_pdf
from hklflow.files.volume import write_volume
from hklflow.simulation.compare import pdf_against_truth

from conftest import step_settings
from volume_helpers import make_experiment, random_volume, run, sample, small_grid


@pytest.fixture(scope="module")
def pdf_truth(tiny_run, tiny_truth):
    d, r, _, _ = tiny_run
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    return {t: pdf_against_truth(d / "results", tiny_truth, "tiny", t) for t in ("100K", "300K")}


@pytest.mark.slow
def test_satellites_give_the_analytic_delta_pdf(pdf_truth):
    """100 K: at every lattice vector |u|, |v| <= 3, |w| <= 1 the DeltaPDF has the sign
    (-1)^(u+v) of the satellites' and their amplitude (measured on this tiny experiment:
    all 146 signs, amplitude 1.02 of the analytic one, rms residual 3.5% of the largest)."""
    t = pdf_truth["100K"]
    at = lambda r: t.measured[(t.vectors == r).all(1)][0]  # noqa: E731
    assert t.significant.sum() >= 100, t.summary()
    assert t.signs_agree == 1.0, t.summary()
    # alternation (-1)^(u+v): nearest neighbours along a negative, along a+b positive
    assert at([1, 0, 0]) < 0 < at([1, 1, 0])
    # decay along c (s_l = 0.25 r.l.u.: exp(-2 pi^2 s_l^2) = 0.29 per lattice vector)
    assert at([1, 0, 1]) / at([1, 0, 0]) == pytest.approx(np.exp(-2 * np.pi ** 2 * 0.25 ** 2),
                                                          rel=0.15), t.summary()
    assert 0.85 < t.scale < 1.15, t.summary()
    assert t.residual < 0.08, t.summary()


@pytest.mark.slow
def test_no_satellites_no_delta_pdf_but_lattice_peaks_in_the_total_pdf(pdf_truth):
    """300 K (no satellites): the DeltaPDF at lattice vectors stays within a few times its
    noise and under 8% of the 100 K satellites' (measured 4.3x noise, 2.6%), while the
    total PDF has a positive Patterson peak at every lattice vector (its median 36x the
    DeltaPDF's largest there)."""
    hot, cold = pdf_truth["300K"], pdf_truth["100K"]
    assert np.abs(hot.measured).max() < 0.08 * np.abs(cold.measured).max(), hot.summary()
    assert np.abs(hot.measured).max() < 8 * hot.noise, hot.summary()
    assert np.all(hot.total > 0), hot.summary()
    assert np.median(hot.total) > 15 * np.abs(hot.measured).max(), hot.summary()


@pytest.mark.slow
def test_pdf_file_opens_in_nexpy_with_every_outcome_counted(tiny_run):
    """pdf.nxs: the default plot is the DeltaPDF with lattice axes scaled by a, b, c and the
    cell angles; the punched and filled volumes and every reflection's outcome are there,
    and the counts in the notes add up."""
    from nexusformat.nexus import nxload

    d = tiny_run[0] / "results" / "tiny" / "100K"
    root = nxload(str(d / "pdf.nxs"))
    data = root.plottable_data
    assert data.nxname == "pdf" and data.nxsignal.nxname == "pdf"
    assert [a.nxname for a in data.nxaxes] == ["z", "y", "x"]
    pdf = read_pdf(d / "pdf.nxs")
    cell = pdf.cell.parameters
    assert [float(data[a].attrs["scaling_factor"]) for a in "xyz"] == pytest.approx(cell[:3])
    assert list(data.attrs["angles"]) == pytest.approx(cell[3:])
    counts = pdf.notes["outcomes"]
    assert set(counts) == set(OUTCOMES) and sum(counts.values()) == pdf.notes["positions"] > 100
    assert counts["filled"] > 0.9 * pdf.notes["positions"]
    outcome = root["entry/reflections/outcome"].nxvalue
    assert len(outcome) == pdf.notes["positions"]
    assert {OUTCOMES[i]: int((outcome == i).sum()) for i in range(len(OUTCOMES))} == counts
    filled = root["entry/filled_data/data"].nxvalue
    punched = root["entry/punched_data/data"].nxvalue
    holes = np.isnan(punched) & np.isfinite(filled)
    assert holes.sum() > 1000  # punched voxels were filled
    both = np.isfinite(punched)
    assert np.array_equal(filled[both], punched[both])  # elsewhere the data as measured
    assert root["entry/sample/unitcell_a"].nxvalue == pytest.approx(cell[0])
    assert float(root["entry/sample/temperature"].nxvalue) == 100.0
    assert 0 < pdf.notes["q_max"] <= pdf.notes["q_inside_grid"]


def test_a_grid_without_q_zero_is_refused_naming_the_file(tmp_path, monkeypatch):
    """A volume whose grid has no voxel at h = 0 cannot be transformed: the step stops
    naming the input and the axis, and leaves no output."""
    monkeypatch.chdir(tmp_path)
    exp = make_experiment(tmp_path)
    grid = small_grid(n=(13, 13, 9))
    from dataclasses import replace

    shifted = replace(grid, h=replace(grid.h, start=grid.h.start + 0.1))
    vol = random_volume(shifted, 3, title="tetra/100K", sample_=sample("I 4/m m m", name="tetra"),
                        gap=0.0)
    write_volume(tmp_path / "in.nxs", vol, {})
    settings = step_settings(exp, "delta_pdf", "tetra")
    rc = run("delta_pdf", ["--settings", settings, "--input", "in.nxs", "--out", "out/pdf.nxs",
                           "--png", "out/pdf.png"])
    assert rc == 1
    assert not (tmp_path / "out" / "pdf.nxs").exists()
    assert not (tmp_path / "out" / "pdf.png").exists()
