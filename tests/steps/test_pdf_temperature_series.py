"""Step pdf_temperature_series: one plane of the 3D-DeltaPDF of every temperature of a sample
on one picture (the PDFs made by the delta_pdf step from lattice volumes), by the step
command with the settings the Snakefile passes; previews said so; PDFs that do not pair up
with the temperatures refused."""
from __future__ import annotations

from hklflow.files.pdf import read_pdf
from hklflow.files.volume import write_volume

from conftest import record_pictures, step_settings
from volume_helpers import lattice_volume, run, small_grid


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
