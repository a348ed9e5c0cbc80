"""sigma of the PDFs (hklflow.algorithms.pdf.sigma) against Monte Carlo through the steps' own code:
noise drawn with each merged voxel's variance, symmetrised (hklflow.algorithms.merge.symmetry), then tapered,
mean-subtracted and transformed (hklflow.algorithms.pdf.volume.total_pdf); the scatter of the PDF over
the draws is the sigma the closed form must give, for a tetragonal group (even along each
axis: cosine transforms), a hexagonal one (operators that are not orthogonal on the grid)
and a volume that was not symmetrised.  The 3D-DeltaPDF's sigma against the scatter of two
simulated noise seeds is in test_uncertainty.py."""
from __future__ import annotations

import numpy as np
import pytest

from hklflow.algorithms.merge.symmetry import index_maps, symmetrize_arrays
from hklflow.algorithms.merge.volumes import symmetrize_file
from hklflow.algorithms.pdf.sigma import IncompatibleGrid, check_maps, pdf_sigma
from hklflow.algorithms.pdf.volume import even_along_axes, total_pdf, volume_noise
from hklflow.files.volume import Volume, read_volume_header, write_volume
from hklflow.model.crystal import Crystal, UnitCell
from hklflow.model.grid import Axis, Grid

DRAWS = 300

CASES = {
    "tetragonal": ("I 41/a m d", UnitCell(5.0, 5.0, 7.0, 90, 90, 90)),
    "hexagonal": ("P 63/m m c", UnitCell(4.0, 4.0, 6.0, 90, 90, 120)),
    "not symmetrised": (None, UnitCell(5.0, 6.0, 7.0, 90, 90, 90)),
}


def _merged(grid, seed=3):
    """A merged volume's weight and variance: every voxel measured a different number of
    times, a measured region with holes, variances spread over two decades."""
    rng = np.random.default_rng(seed)
    weight = rng.integers(1, 6, grid.shape).astype(np.float32)
    weight[rng.random(grid.shape) < 0.15] = 0
    variance = (weight * rng.uniform(0.1, 10.0, grid.shape)).astype(np.float32)
    signal = (weight * 5).astype(np.float32)
    return signal, weight, variance


@pytest.mark.parametrize("case", sorted(CASES))
def test_sigma_of_the_total_pdf_is_the_scatter_over_noise_draws(case, tmp_path):
    group, cell = CASES[case]
    grid = Grid(Axis(-2, 0.2, 21), Axis(-2, 0.2, 21), Axis(-1.5, 0.25, 13))
    signal, weight, variance = _merged(grid)
    merged = tmp_path / "merged.nxs"
    write_volume(merged, Volume(grid, signal, weight, "transform", "t", variance=variance), {})
    path = merged
    if group:
        crystal = Crystal(group, cell)
        path = tmp_path / "symmetrised.nxs"
        symmetrize_file(merged, path, crystal, {})
    head = read_volume_header(path)
    even = even_along_axes(head.notes)
    assert even == (case == "tetragonal")
    noise = volume_noise(path, grid, head.notes)
    intensity = np.where(noise.measured, np.float32(5), np.float32(np.nan))
    pdf = total_pdf(intensity, grid, cell, None, "t", even=even, noise=noise)
    sigma = np.asarray(pdf.errors, np.float64)

    rng = np.random.default_rng(11)
    acc = np.zeros(sigma.shape)
    for _ in range(DRAWS):
        eps = (rng.standard_normal(grid.shape) * np.sqrt(variance)).astype(np.float32)
        if group:
            s, w = symmetrize_arrays(eps, weight, grid, crystal.laue_operators)
        else:
            s, w = eps, weight
        draw = np.where(w > 0, s / np.where(w > 0, w, 1), np.nan).astype(np.float32)
        p = total_pdf(draw, grid, cell, pdf.notes["q_max"], "t", even=even)
        acc += np.asarray(p.values, np.float64) ** 2
    scatter = np.sqrt(acc / DRAWS)
    ratio = sigma / scatter
    # one draw's scatter is known to 1 / sqrt(2 DRAWS) = 4% per voxel: the median of many
    # voxels to well under 1%; a factor wrong by the symmetry (A against A transposed, a
    # missing stabiliser count, the mean term) moves it by tens of percent
    assert abs(np.median(ratio) - 1) < 0.02, (case, np.median(ratio))
    assert np.percentile(ratio, 5) > 0.85 and np.percentile(ratio, 95) < 1.15, \
        (case, np.percentile(ratio, [5, 95]))


def test_sigma_is_the_same_from_the_octant_and_from_the_whole_transform(tmp_path):
    group, cell = CASES["tetragonal"]
    grid = Grid(Axis(-2, 0.2, 21), Axis(-2, 0.2, 21), Axis(-1.5, 0.25, 13))
    signal, weight, variance = _merged(grid)
    write_volume(tmp_path / "m.nxs", Volume(grid, signal, weight, "transform", "t",
                                            variance=variance), {})
    symmetrize_file(tmp_path / "m.nxs", tmp_path / "s.nxs", Crystal(group, cell), {})
    head = read_volume_header(tmp_path / "s.nxs")
    noise = volume_noise(tmp_path / "s.nxs", grid, head.notes)
    args = (noise.u, noise.measured, noise.measured, grid, cell, 4.0, noise.maps, True)
    octant = np.asarray(pdf_sigma(*args, even=True))
    whole = np.asarray(pdf_sigma(*args, even=False))
    np.testing.assert_allclose(octant, whole, rtol=1e-4, atol=1e-6 * whole.max())


def test_a_transform_the_operators_do_not_map_onto_itself_is_named():
    grid = Grid(Axis(-2, 0.2, 21), Axis(-2.4, 0.2, 25), Axis(-1.5, 0.25, 13))
    swap = np.array([[[0, 1, 0], [1, 0, 0], [0, 0, 1]]])
    with pytest.raises(IncompatibleGrid, match="20 voxels along h and 24 along k"):
        check_maps(grid, swap)
    check_maps(grid, index_maps(grid, [np.diag([-1, 1, 1])])[0])  # no axes mixed: fine


def test_the_pdf_steps_write_sigma_beside_the_pdf_and_leave_it_out_when_told(tmp_path,
                                                                             monkeypatch):
    """total_pdf and delta_pdf write pdf_errors (positive, finite, with a note of how)
    for a volume with a variance; reduction.pdf.errors false, or a volume without a
    variance, leaves it out and says why in the notes."""
    import yaml

    from hklflow.files.pdf import read_pdf

    from conftest import step_settings
    from volume_helpers import make_experiment, run, sample, small_grid

    monkeypatch.chdir(tmp_path)
    exp = make_experiment(tmp_path)
    grid = small_grid(n=(17, 17, 13))
    signal, weight, variance = _merged(grid)
    meta = sample("I 4/m m m", name="tetra") | {"temperature_label": "100K"}
    write_volume(tmp_path / "with.nxs", Volume(grid, signal, weight, "transform", "tetra/100K",
                                               meta, variance=variance), {})
    write_volume(tmp_path / "without.nxs", Volume(grid, signal, weight, "transform",
                                                  "tetra/100K", meta), {})
    for errors in (True, False):
        cfg_path = exp / "config" / "config.yaml"
        cfg = yaml.safe_load(cfg_path.read_text())
        cfg.setdefault("reduction", {})["pdf"] = {"errors": errors, "radius": 0.1, "q_max": 1.4}
        cfg_path.write_text(yaml.safe_dump(cfg))
        for step in ("total_pdf", "delta_pdf"):
            for name in ("with", "without"):
                out = tmp_path / f"{step}_{name}_{errors}.nxs"
                rc = run(step, ["--settings", step_settings(exp, step, "tetra"), "--input",
                                f"{name}.nxs", "--out", str(out), "--png", str(out) + ".png"])
                assert rc == 0, (step, name, errors)
                pdf = read_pdf(out)
                if errors and name == "with":
                    assert pdf.errors.shape == pdf.values.shape
                    assert np.isfinite(pdf.errors).all() and (pdf.errors > 0).mean() > 0.99
                    assert pdf.notes["errors"].startswith("sigma from the volume's variance")
                else:
                    assert pdf.errors is None, (step, name, errors)
                    if errors:
                        assert "no variance_sum" in pdf.notes["errors"]
