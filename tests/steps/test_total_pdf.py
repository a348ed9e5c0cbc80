"""Step total_pdf (and pdf_temperature_series): the total PDF of a volume - tapered FFT of
the data as measured - against the analytic transform of a lattice of Gaussian peaks, the
taper's q_max (config or the data's complete shells), and the pictures."""
from __future__ import annotations

import math

import numpy as np
import pytest

from hklflow.algorithms.pdf.fft import fft_crop
from hklflow.algorithms.pdf.taper import tukey_taper
from hklflow.files.pdf import PDF, read_pdf, read_pdf_plane, write_pdf
from hklflow.files.volume import write_volume
from hklflow.model.crystal import UnitCell
from hklflow.simulation.compare import pdf_peak

from conftest import record_pictures, step_settings
from volume_helpers import AMP, SIGMA, TETRA, lattice_volume, make_experiment, run, small_grid


@pytest.fixture
def experiment(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return make_experiment(tmp_path)


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


def test_pdf_temperature_series(experiment, monkeypatch):
    """One plane of the DeltaPDF of every temperature on one picture; a temperature whose
    volume is a preview (a scan in progress) makes its PDF and the series say so."""
    titles = []
    record_pictures(monkeypatch, lambda fig: titles.append(fig._suptitle.get_text()))
    landed = {"scan": "tetra/200K/f1", "frames": 10, "planned": 40}
    grid = small_grid(n=(41, 41, 21), step=(0.2, 0.2, 0.4))
    paths = []
    for t in ("100K", "200K", "300K"):
        volume = lattice_volume(grid, f"tetra/{t}")
        if t == "200K":  # a merged volume's notes nest its entries'
            volume.notes = {"inputs": [{"notes": {"inputs": [{"notes": {"landed": landed}}]}}]}
        write_volume(experiment / f"{t}.nxs", volume, {})
        out = experiment / "results" / "tetra" / t / "pdf.nxs"
        assert run("delta_pdf", ["--settings", step_settings(experiment, "delta_pdf", "tetra"),
                                 "--input", f"{t}.nxs", "--out", out, "--png", out.with_suffix(".png")]) == 0
        paths.append(out)
    assert ["PREVIEW" in title for title in titles] == [False, True, False]
    assert titles[1].endswith("\nPREVIEW: f1 25% of its frames")
    assert read_pdf(paths[1]).notes["landed"] == [landed]
    assert "landed" not in read_pdf(paths[0]).notes
    settings = step_settings(experiment, "pdf_temperature_series", "tetra")
    assert run("pdf_temperature_series", ["--settings", settings, "--inputs", *paths,
                                          "--png", "series.png"]) == 0
    assert (experiment / "series.png").stat().st_size > 10_000
    assert titles[-1].endswith("\nPREVIEW: tetra/200K/f1 25% of its frames")
    # the temperatures and files must pair up
    assert run("pdf_temperature_series", ["--settings", settings, "--inputs", *paths[:2],
                                          "--png", "series2.png"]) == 1
    assert not (experiment / "series2.png").exists()


def test_pdf_plane_read_alone_is_the_plane_of_the_whole(tmp_path):
    """read_pdf_plane (what the series reads) gives PDF.plane of the whole file, every axis;
    a plane outside the PDF is refused the same way."""
    rng = np.random.default_rng(3)
    values = rng.normal(size=(9, 12, 14)).astype(np.float32)
    x, y, z = np.linspace(-3, 3, 14), np.linspace(-2, 2, 12), np.linspace(-4, 4, 9)
    pdf = PDF(values, x, y, z, UnitCell(3.8, 3.8, 13.2, 90, 90, 90))
    write_pdf(tmp_path / "p.nxs", pdf, {"name": "tetra"}, {"program": "test"})
    whole = read_pdf(tmp_path / "p.nxs")
    for axis, value in (("x", 0.9), ("y", -2.0), ("z", 4.0), ("z", -1.1)):
        cell, plane = read_pdf_plane(tmp_path / "p.nxs", axis, value)
        expect = whole.plane(axis, value)
        assert cell.parameters == whole.cell.parameters
        assert plane[3] == expect[3]
        for got, want in zip(plane[:3], expect[:3]):
            np.testing.assert_array_equal(got, want)
    with pytest.raises(ValueError, match="outside the PDF"):
        read_pdf_plane(tmp_path / "p.nxs", "z", 5.0)


def test_total_pdf_of_a_file_equals_that_of_its_array_and_holds_one_volume(tmp_path):
    """Given the volume file, total_pdf reads it slab by slab for the shells' coverage and
    the taper's statistics, then plane by plane into the spectrum's memory, never whole:
    the same PDF and notes as from the array, bit for bit, with about one volume's memory
    at its peak (the spectrum's; the array and the spectrum together would be two)."""
    import tracemalloc

    from hklflow.algorithms.pdf.volume import total_pdf
    from hklflow.files.volume import read_intensity

    grid = small_grid(n=(65, 49, 81), step=(0.125, 0.125, 0.25))
    vol = lattice_volume(grid, missing_beyond=12.0)
    write_volume(tmp_path / "in.nxs", vol, {})
    cell = UnitCell(*TETRA)
    _, intensity = read_intensity(tmp_path / "in.nxs")
    want = total_pdf(intensity, grid, cell, None, "t")
    total_pdf(tmp_path / "in.nxs", grid, cell, None, "t")  # compiled kernels loaded
    tracemalloc.start()
    got = total_pdf(tmp_path / "in.nxs", grid, cell, None, "t")
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert np.array_equal(np.asarray(got.values), np.asarray(want.values))
    assert {k: v for k, v in got.notes.items() if k != "fft_seconds"} == \
        {k: v for k, v in want.notes.items() if k != "fft_seconds"}
    assert peak < 1.5 * intensity.nbytes  # the volume and its measured mask


def test_an_even_volume_s_total_pdf_is_read_slab_by_slab_and_equals_the_fft_s(tmp_path):
    """A volume even along each axis (a tetragonal lattice of peaks on a grid symmetric
    about 0): its total PDF from the octant's cosine transforms, from the file read slab by
    slab (never whole: the octant, an eighth of the volume, and a few slabs at the peak),
    equals that of the array bit for bit and the FFT's to float32 rounding."""
    import tracemalloc

    from hklflow.algorithms.pdf.volume import total_pdf
    from hklflow.files.volume import read_intensity

    grid = small_grid(n=(65, 49, 81), step=(0.125, 0.125, 0.25))
    write_volume(tmp_path / "in.nxs", lattice_volume(grid, missing_beyond=12.0), {})
    cell = UnitCell(*TETRA)
    _, intensity = read_intensity(tmp_path / "in.nxs")
    assert np.array_equal(intensity, intensity[::-1, ::-1, ::-1], equal_nan=True)
    fft = total_pdf(intensity, grid, cell, None, "t")
    want = total_pdf(intensity, grid, cell, None, "t", even=True)
    total_pdf(tmp_path / "in.nxs", grid, cell, None, "t", even=True)  # compiled kernels loaded
    tracemalloc.start()
    got = total_pdf(tmp_path / "in.nxs", grid, cell, None, "t", even=True)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert got.notes["fft"].startswith("cosine") and fft.notes["fft"].endswith("FFT")
    assert np.array_equal(np.asarray(got.values), np.asarray(want.values))
    seconds = ("fft_seconds", "fft", "fft_shape")
    assert {k: v for k, v in got.notes.items() if k not in seconds} == \
        {k: v for k, v in want.notes.items() if k not in seconds}
    # its statistics counted in the octant (each voxel for its mirror images too): the
    # coverage and q_max the whole volume's, the mean to rounding
    for key in ("q_max", "q_reach", "q_complete", "unmeasured_within_q_max"):
        assert got.notes[key] == fft.notes[key]
    assert got.notes["mean_subtracted"] == pytest.approx(fft.notes["mean_subtracted"], rel=1e-12)
    values, expected = np.asarray(got.values), np.asarray(fft.values)
    assert np.abs(values - expected).max() < 2e-7 * np.abs(expected).max()
    # the octant and slabs of 8 of the 81 planes: 0.66 measured (the whole job at 801^3:
    # 0.55 GB resident, the volume 2.05 GB); the volume read whole made it 1.25
    assert peak < 0.8 * intensity.nbytes
