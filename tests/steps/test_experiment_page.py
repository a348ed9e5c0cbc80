"""Step experiment_page: results/report.html, every number from the files: a volume's
statistics and measured fraction (a file changed, the page changes); the tiny experiment's
page as the workflow made it, with its calibration, scans, orientations, volumes, PDFs and
warnings; the page rendered by a real browser (Debian's chromium, when installed)."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from hklflow.files.volume import read_volume_header, update_notes, write_volume
from hklflow.model.crystal import Crystal, UnitCell

from volume_helpers import TETRA, lattice_volume, run, small_grid, statistics_of_arrays


def _volume(folder: Path, label="300K") -> Path:
    """A merged volume with its statistics in its notes (as merge_entries writes them) and
    its picture beside it."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    grid = small_grid(n=(21, 21, 11), step=(0.2, 0.2, 0.4))
    vol = lattice_volume(grid, f"tetra/{label}")
    vol.variance = vol.signal.copy()
    vol.notes = {"measured_fraction": 0.875}
    path = folder / "results" / "tetra" / label / "transform.nxs"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_volume(path, vol, {})
    stats = statistics_of_arrays(grid, Crystal("I 4/m m m", UnitCell(*TETRA)), vol.signal,
                                 vol.weight, vol.variance, shells=3, bragg_exclusion=0.05)
    update_notes(path, {"statistics": stats.to_notes()})
    fig = plt.figure(figsize=(2, 2))
    fig.savefig(path.with_suffix(".png"))
    plt.close(fig)
    return path


def _page(folder: Path, *args) -> str:
    out = folder / "results" / "report.html"
    assert run("experiment_page", [*args, "--out", out]) == 0
    return out.read_text()


def test_the_page_shows_what_the_files_say_and_changes_with_them(experiment):
    path = _volume(experiment)
    log = experiment / "logs" / "merge_entries" / "tetra" / "300K" / "transform.log"
    log.parent.mkdir(parents=True)
    log.write_text("2026-11-29 07:00:00 hklflow.merge_entries WARNING: f2 left out\n"
                   "2026-11-29 07:00:01 hklflow.merge_entries INFO: done\n")
    page = _page(experiment, "--volumes", path.relative_to(experiment))
    stats = read_volume_header(path).notes["statistics"]
    overall = stats["overall"]
    assert "reciprocal space measured: 87.50 % of the grid" in page
    row = re.search(r"<tr><td>overall</td>(.*?)</tr>", page).group(1)
    assert [f"<td>{overall['voxels']}</td>", f"<td>{overall['measured']}</td>",
            f"<td>{overall['excluded']}</td>"] == re.findall(r"<td>[^<]*</td>", row)[:3]
    assert f"<td>{overall['i_over_sigma']:.2f}</td>" in row and overall["excluded"] > 0
    assert len(re.findall(r"<tr><td>[0-9.]+–[0-9.]+</td>", page)) == len(stats["shells"]) == 3
    # the warning with its log; the picture linked relative to the page, opening at full size
    assert "f2 left out" in page
    assert "<a href='../logs/merge_entries/tetra/300K/transform.log'>" in page
    assert "<a href='tetra/300K/transform.png'><img src='tetra/300K/transform.png'" in page
    # a file changed: the page built again says what it says now
    update_notes(path, {"measured_fraction": 0.1234})
    again = _page(experiment, "--volumes", path.relative_to(experiment))
    assert again != page and "reciprocal space measured: 12.34 % of the grid" in again
    assert "87.50 %" not in again


def _copy_results(src: Path, dst: Path) -> None:
    """The files the page reads (not the transform parts nor the entries' volumes)."""
    for path in src.rglob("*"):
        rel = path.relative_to(src)
        if path.is_dir() or rel.parts[0] not in ("results", "logs") or "_parts" in str(rel) \
                or (rel.suffix == ".nxs" and rel.parent.name.startswith("f")
                    and rel.name != "peaks.nxs"):
            continue
        (dst / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, dst / rel)


@pytest.mark.slow
def test_the_tiny_experiment_s_page_has_its_numbers(tiny_run, tmp_path, monkeypatch):
    """The page the workflow made (the rule experiment_page, last), and the step on a copy
    with a PDF's notes changed."""
    from hklflow.files.calibration import read_calibration_summary
    from hklflow.files.orientation import orientation_row, read_orientation_file
    from hklflow.files.pdf import read_pdf_notes
    from hklflow.files.peaks import read_peaks_file

    d, r, _, _ = tiny_run
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    assert "the experiment on one page: results/report.html" in r.stdout
    page = (d / "results" / "report.html").read_text()
    res = d / "results"
    cal = read_calibration_summary(res / "calibration/ceo2/calibration.nxs")["residuals"]
    assert f"<td>{cal['rms_residual_px']:.4f}</td>" in page
    assert f"<td>{cal['n_points']}</td>" in page
    for t in ("100K", "300K"):
        rec = read_orientation_file(res / "tiny" / t / "orientation.nxs")
        entries = {e["entry"]: e for e in orientation_row(rec)["entries"]}
        for e in ("f1", "f2"):
            found = len(read_peaks_file(res / "tiny" / t / e / "peaks.nxs").peaks["observed_px_x"])
            used = entries[e]["n_used"]
            assert (f"<tr><td>tiny/{t}/{e}</td><td>{found}</td><td>{used}</td>"
                    f"<td>{entries[e]['rms_x_px']:.3f}</td>") in page
        for kind in ("transform", "masked_transform"):
            notes = read_volume_header(res / "tiny" / t / f"{kind}.nxs").notes
            o = notes["statistics"]["overall"]
            assert f"{100 * notes['measured_fraction']:.2f} % of the grid" in page
            assert (f"<tr><td>overall</td><td>{o['voxels']}</td><td>{o['measured']}</td>"
                    f"<td>{o['excluded']}</td><td>{o['i_over_sigma']:.2f}</td>"
                    f"<td>{o['chi2_nu']:.3f}</td>") in page
        pdf = read_pdf_notes(res / "tiny" / t / "pdf.nxs")
        names = sorted(pdf["outcomes"], key=lambda n: n != "filled")  # (filled first)
        counts = "".join(f"<td>{pdf['outcomes'][n]}</td>" for n in names)
        assert sum(pdf["outcomes"].values()) == pdf["positions"]
        assert (f"<tr><td>results/tiny/{t}/pdf.nxs</td><td>{pdf['positions']}</td>{counts}"
                f"<td>{pdf['positions']}</td></tr>") in page
    # the residuals per module of each temperature (a Pilatus 300k: three modules)
    assert len(re.findall(r"Pilatus\w*300k, orientation \d: 3 × 1 modules", page)) == 2
    for log in sorted((d / "logs").rglob("*.log")):
        for line in log.read_text().splitlines():
            if " WARNING: " in line and "hklflow." in line:
                assert str(log.relative_to(d)) in page
    for picture in re.findall(r"<img src='([^']+)'", page):
        assert (res / picture).is_file(), picture
    # a PDF's outcome counts changed in its file: the page says so
    exp = tmp_path / "exp"
    _copy_results(d, exp)
    monkeypatch.chdir(exp)
    import h5py

    pdf_path = Path("results/tiny/300K/pdf.nxs")
    notes = read_pdf_notes(pdf_path)
    notes["outcomes"]["no_data"] += 1000
    notes["positions"] += 1000
    with h5py.File(pdf_path, "r+") as f:
        for name, item in f.items():
            if "notes" in item:
                del item["notes/data"]
                item["notes/data"] = json.dumps(notes, sort_keys=True)
    args = ["--pdfs", pdf_path, "--volumes", "results/tiny/300K/transform.nxs"]
    again = _page(exp, *args)
    assert f"<td>{notes['positions']}</td>" in again
    assert f"<td>{notes['outcomes']['no_data']}</td>" in again


def test_the_page_renders_in_a_real_browser(experiment, tmp_path):
    """Headless Chromium (Debian's package) draws the page: a picture of a laptop's width
    with the tables on it (skipped where chromium is not installed)."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("no chromium (apt-get install chromium)")
    path = _volume(experiment)
    _page(experiment, "--volumes", path.relative_to(experiment))
    shot = tmp_path / "page.png"
    r = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu",
                        f"--screenshot={shot}", "--window-size=1366,900",
                        (experiment / "results" / "report.html").as_uri()],
                       capture_output=True, text=True, timeout=120)
    assert shot.is_file(), r.stderr[-2000:]
    import matplotlib.image

    image = matplotlib.image.imread(shot)
    assert image.shape[:2] == (900, 1366)
    # something drawn: not a blank page (text, table rules, the picture)
    assert np.count_nonzero(image[..., :3].min(axis=2) < 0.5) > 2000


def _orientation_with_a_displaced_module(folder: Path, shifted=(5, 2), orientation=1) -> Path:
    """An orientation file of a Pilatus 2M (orientation 1) whose refined peaks, on every
    module and over two entries, have residuals N(0, 0.3); those on module `shifted` moved
    by +0.5 px in y."""
    import types

    from hklflow.files.orientation import STATISTICS, write_orientation_file
    from hklflow.model.detector_modules import ModuleLayout
    from hklflow.model.geometry import DetectorGeometry, detector_facts

    layout = ModuleLayout.of(detector_facts("Pilatus2M", orientation))
    rng = np.random.default_rng(3)
    entries, used, residuals = [], [], []
    for name in ("f1", "f2"):
        x, y, res = [], [], []
        for i, (a, b) in enumerate(layout.rows):
            for j, (c, d) in enumerate(layout.cols):
                x.append(rng.uniform(c, d, 25))
                y.append(rng.uniform(a, b, 25))
                r = rng.normal(0, 0.3, (25, 3))
                r[:, 1] += 0.5 if (i, j) == shifted else 0.0
                res.append(r)
        x, y, res = np.concatenate(x), np.concatenate(y), np.concatenate(res)
        ok = rng.random(len(x)) > 0.1  # some peaks not used: NaN residuals
        res[~ok] = np.nan
        entries.append(types.SimpleNamespace(name=name, x=x, y=y, z=rng.uniform(0, 100, len(x))))
        used.append(ok)
        residuals.append(res)
    crystal = Crystal("I 4/m m m", UnitCell(*TETRA))
    model = types.SimpleNamespace(
        crystal=crystal, U=np.eye(3), UB=np.asarray(crystal.cell.B),
        detector=DetectorGeometry("Pilatus2M", 0.2, 0.12, 0.11, wavelength=0.41,
                                  orientation=orientation),
        offset_corrections={})
    result = types.SimpleNamespace(
        model=model, cell_esd=(0.001,) * 3 + (0,) * 3, parameters={}, notes=[],
        entries=entries, hkl=[np.zeros((len(e.x), 3)) for e in entries], used=used,
        residuals=residuals, **{k: 1.0 for k in STATISTICS})
    path = folder / "results" / "tetra" / "300K" / "orientation.nxs"
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_orientation_file(path, sample="tetra", temperature_label="300K",
                                  parent="tetra/300K", result=result, indexing=None,
                                  provenance={"program": "test"})


def test_the_page_flags_a_displaced_detector_module(experiment):
    """Residuals per detector module, summed over the entries, from the orientation file's
    peaks: the module whose residuals are shifted is flagged, and only it; its row says
    where it lies seen from the sample (orientation 1: module (0, 0) top right)."""
    from hklflow.files.orientation import read_refined_peaks

    path = _orientation_with_a_displaced_module(experiment)
    page = _page(experiment, "--orientations", path.relative_to(experiment))
    assert "Pilatus2M, orientation 1: 8 × 3 modules" in page
    modules = re.findall(r"<tr><td>\((\d), (\d)\)</td><td>([^<]*)</td><td>(\d+)</td>"
                         r"(?:<td>[^<]*</td>){6}<td>([^<]*)</td></tr>", page)
    assert len(modules) == 24
    assert [(m[:2], m[4]) for m in modules if m[4]] == [(("5", "2"), "DISPLACED (y)")]
    assert modules[0][2] == "1/8 from top, 3/3 from left"
    assert modules[5 * 3 + 2][2] == "6/8 from top, 1/3 from left"
    assert "FLAG: modules whose mean residual" in page and "(5, 2) in y" in page
    # the numbers are the file's: its used peaks, both entries together
    p = read_refined_peaks(path)
    assert sum(int(m[3]) for m in modules) == int(p["used"].sum())
    on = (p["observed_px_y"] >= 5 * 212) & (p["observed_px_y"] < 5 * 212 + 195) \
        & (p["observed_px_x"] >= 2 * 494) & p["used"]
    assert int(modules[5 * 3 + 2][3]) == int(on.sum())
    rms_y = np.sqrt(np.mean(p["residual_y"][on] ** 2))
    assert f"<td>{int(on.sum())}</td><td>{np.sqrt(np.mean(p['residual_x'][on] ** 2)):.3f}</td>" \
           f"<td>{rms_y:.3f}</td>" in page


def test_a_volume_says_what_its_entries_were_corrected_for_and_which_background_they_lost():
    from hklflow.steps.experiment_page import corrections_lines

    part = {"corrections": {"applied": {"solid_angle": {}, "air": {}},
                            "not_applied": {"absorption": "the sample has no shape"}}}
    with_bg = {"operation": "sum", "inputs": [{"title": "s/300K/f1 frames 0-60",
                                               "notes": part}],
               "background": {"scan": "s/300K/empty", "scale": 2.0, "voxels_left_out": 3}}
    without = {**part, "background": "none: the scans table names no background"}
    merged = {"inputs": [{"title": "s/300K/f1", "notes": with_bg},
                         {"title": "s/300K/f2", "notes": without}]}
    assert corrections_lines(merged) == [
        "corrections: solid_angle, air (not applied - absorption: the sample has no shape)",
        "s/300K/f1: s/300K/empty subtracted (scale 2, 3 voxels left out)",
        "s/300K/f2: no background"]


def test_a_merged_volume_says_how_its_entries_were_scaled():
    from hklflow.steps.experiment_page import corrections_lines

    merged = {"inputs": [], "scaling": {
        "scales": "results/s/300K/scales.json", "terms": {"absorption": "off"},
        "chi2_nu": {"before": 1.8, "after": 1.02}, "cc_half": {"before": 0.94, "after": 0.97}}}
    assert corrections_lines(merged) == [
        "scaled between entries (results/s/300K/scales.json): chi²/ν of equivalents 1.800 → "
        "1.020, CC½ 0.9400 → 0.9700 (absorption off)"]
    merged["scaling"].update(applied=False, verdict="chi^2/nu of equivalents 1.437 -> 1.434, "
                                                    "within the 0.017 chance and 111 "
                                                    "parameters account for")
    assert corrections_lines(merged) == [
        "scales fitted, not applied: they do not matter (chi^2/nu of equivalents 1.437 -> "
        "1.434, within the 0.017 chance and 111 parameters account for; "
        "reduction.scaling.apply: true applies them)"]


def test_a_merged_volume_says_what_scales_it_was_not_given(tmp_path):
    """reduction.scaling.apply false: the page says what the fitted scales would do, and
    that they matter."""
    from hklflow.files.scales import write_scales
    from hklflow.model.scales import EntryScale, ScaleModel
    from hklflow.steps.experiment_page import fitted_scales_line

    model = ScaleModel({"f1": EntryScale("f1", np.array([0.0, 10.0]), np.ones(2))})
    away = {"before": {"chi2_nu": 1.8, "cc_half": 0.94}, "after": {"chi2_nu": 1.02,
                                                                   "cc_half": 0.97}}
    write_scales(tmp_path / "scales.json", model, terms={}, entries={}, left_out={},
                 statistics={"away_from_nodes": away}, verdict={"matter": True, "why": ""},
                 provenance={})
    volume = tmp_path / "transform.nxs"
    assert fitted_scales_line(volume, {"inputs": []}) == (
        "scales fitted, not applied (reduction.scaling.apply: false) - they matter: chi²/ν of "
        "equivalents 1.800 → 1.020, CC½ 0.9400 → 0.9700")
    assert fitted_scales_line(volume, {"inputs": [], "scaling": {}}) is None
