"""Benchmark of the 3D-DeltaPDF (hklflow.algorithms.pdf): punch-and-fill, Tukey taper and FFT.

    python bench/pdf.py [--repeats 3] [--max-voxels 64481201] [--json FILE]

The volume is synthetic, on the demo's grid: hklflow.model.grid.default_grid for the demo crystal
(I 4/m m m, a = b = 3.7801, c = 13.2305 A) and the demo's detector (Pilatus CdTe 300k at
125 mm, 30 keV, beam near the centre: q_max and q_pixel from hklflow.model.geometry for the
calibration geometry of hklflow.simulation's 'demo' preset).  It holds a smooth diffuse
signal, a Gaussian Bragg spike (sigma 0.8 voxel) at every allowed reflection, and NaN beyond
the detector's reach.  Prints, measured in one run:

  1. punch-and-fill of every allowed reflection within the reach (radius 0.2 1/A, Laplace,
     one core, best of --repeats): reflections, hole voxels, unknowns, seconds, outcomes,
     the fill's error against the diffuse signal alone; the Matern m = 2 fill once;
  2. taper and FFT seconds with workers = 1 and 2, and the memory numpy allocates in the
     FFT (tracemalloc) next to NXRefine's plain fftn expression;
  3. peak memory (ru_maxrss) after each part;
  4. the PDF's sigma (hklflow.algorithms.pdf.sigma) against the PDF alone, alternating, even
     and not (on the whole transform the gathers W((I -+ M) k) of 3-, 4- and 6-fold
     operators miss the cache);
  5. scaling, measured on sub-grids (interior reflections only) and extrapolated by the
     reflection count: the demo crystal on 401^3 (checks the extrapolation against 1.) and
     801^3 grids, and a 20 A cubic cell (P m -3 m) at the same reach on 401^3 and 801^3
     grids, where the 0.2 1/A holes overlap (a* = 0.31 1/A): there with 0.1 1/A too.
Run time: about 2 minutes on the 2-core machine.
"""
from __future__ import annotations

import os

# one core for the fill: no BLAS or OpenMP thread pools (set before numpy is imported)
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import math  # noqa: E402
import resource  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import tracemalloc  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import scipy.fft  # noqa: E402
from scipy import ndimage  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import emit, machine_info  # noqa: E402

from hklflow.algorithms.merge.symmetry import index_maps  # noqa: E402
from hklflow.algorithms.pdf.fft import pdf_fft, pdf_spectrum  # noqa: E402
from hklflow.algorithms.pdf.fill import punch_and_fill, reflections_to_punch  # noqa: E402
from hklflow.algorithms.pdf.q_grid import q_metric  # noqa: E402
from hklflow.algorithms.pdf.sigma import pdf_sigma  # noqa: E402
from hklflow.algorithms.pdf.taper import tukey_taper  # noqa: E402
from hklflow.model.crystal import Crystal, UnitCell  # noqa: E402
from hklflow.model.grid import Axis, Grid, default_grid  # noqa: E402

DEMO = ("I 4/m m m", UnitCell(3.7801, 3.7801, 13.2305))
LARGE = ("P m -3 m", UnitCell(20.0, 20.0, 20.0))
RADIUS = 0.2  # 1/Angstrom, NXRefine's default


def demo_reach() -> tuple[float, float]:
    """q_max and q_pixel (1/Angstrom, no 2 pi) of the demo's detector (hklflow.model.geometry)."""
    from hklflow.simulation.experiment import preset

    geometry = preset("demo").calibration()
    return geometry.q_max(), geometry.q_pixel()


T0 = time.perf_counter()


def note(text: str) -> None:
    """Progress on stderr (the table and JSON come at the end, on stdout)."""
    print(f"[{time.perf_counter() - T0:6.1f} s] {text}", file=sys.stderr, flush=True)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def best_of(fn, repeats: int):
    times, out = [], None
    for _ in range(repeats):
        out = None  # the last run's output is freed before the next: memory as one call
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return min(times), times, out


def diffuse(cell, h, k, l):  # noqa: E741
    """The smooth diffuse signal: a broad |Q| envelope with a slow modulation."""
    g = q_metric(cell)
    q2 = (g[0, 0] * h * h + g[1, 1] * k * k + g[2, 2] * l * l
          + 2 * (g[0, 1] * h * k + g[0, 2] * h * l + g[1, 2] * k * l))
    return 100.0 * np.exp(-q2 / 50.0) * (1.0 + 0.5 * np.cos(np.pi * h) * np.cos(np.pi * k)
                                         * np.cos(2 * np.pi * l / 7.0))


def synthetic_volume(crystal, grid, q_reach: float, reflections) -> np.ndarray:
    """float32 [l, k, h]: diffuse signal + a Bragg spike at each reflection; NaN beyond
    q_reach (1/A, 2 pi), as a detector's reach leaves the corners of the grid unmeasured."""
    cell = crystal.cell
    g = q_metric(cell)
    h, k = grid.h.values[None, :], grid.k.values[:, None]
    vol = np.empty(grid.shape, np.float32)
    for il, lv in enumerate(grid.l.values):
        vol[il] = diffuse(cell, h, k, lv)
    box = 4
    o = np.arange(-box, box + 1)
    spike = np.exp(-0.5 * (o[:, None, None] ** 2 + o[None, :, None] ** 2 + o[None, None, :] ** 2) / 0.8 ** 2)
    for hkl in reflections:
        ih, ik, il = grid.index(hkl)
        q2 = float(hkl @ g @ hkl)
        sl = tuple(slice(max(c - box, 0), min(c + box + 1, n)) for c, n in zip((il, ik, ih), grid.shape))
        part = spike[tuple(slice(s.start - c + box, s.stop - c + box) for s, c in zip(sl, (il, ik, ih)))]
        vol[sl] += np.float32(1e5 * math.exp(-q2 / 32.0)) * part
    for il, lv in enumerate(grid.l.values):
        q2 = (g[0, 0] * h * h + g[1, 1] * k * k + g[2, 2] * lv * lv
              + 2 * (g[0, 1] * h * k + g[0, 2] * h * lv + g[1, 2] * k * lv))
        vol[il][q2 > q_reach * q_reach] = np.nan
    return vol


def fill_error(result, crystal, grid) -> float:
    """rms(fill - diffuse) / rms(diffuse) over the filled hole voxels."""
    il, ik, ih = np.nonzero(result.hole & np.isfinite(result.filled))
    truth = diffuse(crystal.cell, grid.h.values[ih], grid.k.values[ik], grid.l.values[il])
    err = result.filled[il, ik, ih] - truth
    return float(np.sqrt(np.mean(err ** 2) / np.mean(truth ** 2)))


# --------------------------------------------------------------------------------------
def fill_section(crystal, grid, q_reach, repeats) -> tuple[dict, np.ndarray]:
    reflections = reflections_to_punch(crystal, grid, q_reach)
    note(f"making the volume ({grid.describe()})")
    vol = synthetic_volume(crystal, grid, q_reach, reflections)
    note("punch and fill")
    out = {"grid": grid.describe(), "volume_mb": vol.nbytes / 1e6, "reflections": len(reflections),
           "peak_rss_mb_volume_made": peak_rss_mb()}
    positions = reflections.astype(np.float64)
    best, times, result = best_of(lambda: punch_and_fill(vol, grid, crystal.cell, positions,
                                                             radius=RADIUS), repeats)
    out["laplace"] = {"seconds": best, "all_seconds": times, "hole_voxels": int(result.hole.sum()),
                      "unknowns": result.unknowns, "batches": result.batches, "outcomes": result.counts,
                      "voxels_per_hole": result.hole.sum() / max(len(reflections), 1),
                      "fill_rel_rms_error": fill_error(result, crystal, grid)}
    out["peak_rss_mb_after_fill"] = peak_rss_mb()
    del result
    note("memory numpy allocates in one fill (tracemalloc)")
    out["laplace"]["allocated_mb"] = traced_peak_mb(
        lambda: punch_and_fill(vol, grid, crystal.cell, positions, radius=RADIUS))
    note("Matern m = 2 fill")
    t = time.perf_counter()
    m2 = punch_and_fill(vol, grid, crystal.cell, positions, radius=RADIUS, order=2)
    out["matern2"] = {"seconds": time.perf_counter() - t, "unknowns": m2.unknowns,
                      "batches": m2.batches, "outcomes": m2.counts,
                      "fill_rel_rms_error": fill_error(m2, crystal, grid)}
    out["peak_rss_mb_after_matern2"] = peak_rss_mb()
    return out, vol


def nxrefine_plain_fft(values) -> np.ndarray:
    """NXRefine's expression (nxreduce.py total_pdf) on a grid symmetric about 0."""
    data = np.nan_to_num(values[:-1, :-1, :-1])
    fft = np.real(scipy.fft.fftshift(scipy.fft.fftn(scipy.fft.fftshift(data), workers=1)))
    fft *= 1.0 / np.prod(fft.shape)
    return fft


def traced_peak_mb(fn) -> float:
    """Peak of numpy's allocations (tracemalloc) while fn runs, minus what was there before."""
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    fn()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return (peak - before) / 1e6


def fft_section(vol, crystal, grid, q_reach, repeats) -> dict:
    out = {}
    note("taper and FFT")
    best, _, taper = best_of(lambda: tukey_taper(grid, crystal.cell, q_reach), repeats)
    out["taper_seconds"] = best
    tapered = vol * taper
    del taper
    for workers in (1, 2):
        best, times, _ = best_of(lambda: pdf_fft(tapered, grid, workers=workers), repeats)
        out[f"fft_seconds_workers_{workers}"] = best
    best, _, plain = best_of(lambda: nxrefine_plain_fft(tapered), 1)
    out["nxrefine_plain_fftn_seconds_workers_1"] = best
    ours, _ = pdf_fft(tapered, grid)
    out["max_abs_diff_vs_plain_fftn_over_max"] = float(np.abs(ours - plain).max() / np.abs(plain).max())
    out["shape"] = list(ours.shape)
    del ours
    # the volume is even along each axis (4/mmm, a grid symmetric about 0): the octant's
    # cosine transforms, as the steps do for volumes symmetrised with the axis mirrors
    even = lambda: np.asarray(pdf_spectrum(tapered, grid, even=True)[0])  # noqa: E731
    best, _, cosine = best_of(even, repeats)
    out["cosine_seconds_workers_1"] = best
    out["cosine_max_abs_diff_vs_plain_fftn_over_max"] = float(np.abs(cosine - plain).max()
                                                              / np.abs(plain).max())
    del cosine, plain
    out["fft_allocated_mb"] = traced_peak_mb(lambda: pdf_fft(tapered, grid))
    out["cosine_allocated_mb"] = traced_peak_mb(
        lambda: pdf_spectrum(tapered, grid, even=True)[0])
    out["nxrefine_plain_fftn_allocated_mb"] = traced_peak_mb(lambda: nxrefine_plain_fft(tapered))
    out["volume_mb"] = tapered.nbytes / 1e6
    out["peak_rss_mb_after_fft"] = peak_rss_mb()
    return out


def sigma_section(vol, crystal, grid, q_reach, repeats) -> dict:
    """The PDF's sigma (hklflow.algorithms.pdf.sigma) against the PDF itself, alternating, both whole
    (every voxel computed): the volume as its own variance (u), the demo's 4/mmm maps, the
    mean term; even (octants) and not."""
    note("sigma of the PDF")
    maps = index_maps(grid, crystal.laue_operators)[0]
    finite = np.isfinite(vol)
    u = np.where(finite, np.abs(vol), np.float32(0)).astype(np.float32)
    taper = (crystal.cell, q_reach, 0.0)
    out = {"operators": len(maps)}
    for even in (True, False):
        pdf_times, sigma_times = [], []
        for _ in range(repeats):
            t0 = time.perf_counter()
            np.asarray(pdf_spectrum(vol, grid, taper=taper, even=even)[0])
            pdf_times.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            np.asarray(pdf_sigma(u, finite, finite, grid, crystal.cell, q_reach, maps, True,
                                 even=even))
            sigma_times.append(time.perf_counter() - t0)
        key = "even" if even else "whole"
        out[f"{key}_pdf_seconds"], out[f"{key}_sigma_seconds"] = min(pdf_times), min(sigma_times)
        out[f"{key}_sigma_allocated_mb"] = traced_peak_mb(
            lambda: np.asarray(pdf_sigma(u, finite, finite, grid, crystal.cell, q_reach, maps,
                                         True, even=even)))
    return out


# --------------------------------------------------------------------------------------
def sub_grid(grid: Grid, limits) -> Grid:
    """The grid's steps within +-limits (h, k, l)."""
    return Grid(*(Axis(-float(n), ax.step, int(round(2 * n / ax.step)) + 1)
                  for ax, n in zip(grid.axes, limits)))


def scaled_case(name, crystal, full_grid, q_reach, limits, radius, repeats=1) -> dict:
    """Fill of the reflections at least 1 r.l.u. inside a sub-grid of full_grid's steps,
    extrapolated to all reflections of full_grid by their number."""
    note(f"scaling: {name}, radius {radius}")
    grid = sub_grid(full_grid, limits)
    refl = reflections_to_punch(crystal, grid, q_reach)
    inner = refl[np.all(np.abs(refl) <= np.array(limits) - 1, axis=1)]
    vol = synthetic_volume(crystal, grid, q_reach, refl)
    best, _, r = best_of(lambda: punch_and_fill(vol, grid, crystal.cell, inner.astype(float),
                                                radius=radius), repeats)
    n_full = len(reflections_to_punch(crystal, full_grid, q_reach))
    labels, components = ndimage.label(r.hole)  # fewer than the reflections: holes merged
    sizes = np.bincount(labels.ravel())[1:]
    per = best / len(inner)
    return {"case": name, "full_grid": full_grid.describe(), "sub_grid": grid.describe(),
            "radius": radius,
            "reflections_measured": len(inner), "reflections_full": n_full,
            "voxels_per_hole": r.hole.sum() / len(inner), "unknowns": r.unknowns,
            "unknowns_per_reflection": r.unknowns / len(inner), "batches": r.batches,
            "hole_components": components, "largest_hole_component_voxels": int(sizes.max()),
            "outcomes": r.counts, "seconds": best, "seconds_per_reflection": per,
            "extrapolated_seconds": per * n_full,
            "extrapolated_unknowns": r.unknowns / len(inner) * n_full,
            "full_volume_gb": full_grid.size * 4 / 1e9}


def scaling_section(q_reach_demo, q_max_nat, q_pixel) -> list[dict]:
    out = []
    demo = Crystal(*DEMO)
    large = Crystal(*LARGE)
    for voxels in (401, 801):
        g, _ = default_grid(demo.cell, q_max_nat, q_pixel, voxels ** 3)
        out.append(scaled_case(f"demo cell, {voxels}^3", demo, g, q_reach_demo, (2, 2, 6), RADIUS))
    for voxels in (401, 801):
        g, _ = default_grid(large.cell, q_max_nat, q_pixel, voxels ** 3)
        for radius in (RADIUS, 0.1):
            out.append(scaled_case(f"20 A cubic, {voxels}^3", large, g, q_reach_demo, (3, 3, 3), radius))
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--max-voxels", type=int, default=401 ** 3)
    p.add_argument("--smoke", action="store_true",
                   help="leave out the scaling part (sub-grids up to 801^3)")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    q_max_nat, q_pixel = demo_reach()
    q_reach = 2 * math.pi * q_max_nat  # 2 pi convention, as hklflow.algorithms.pdf
    crystal = Crystal(*DEMO)
    grid, _ = default_grid(crystal.cell, q_max_nat, q_pixel, args.max_voxels)
    report = {"machine": machine_info(), "q_max_detector_2pi": q_reach, "q_pixel_no_2pi": q_pixel,
              "radius": RADIUS}
    report["fill"], vol = fill_section(crystal, grid, q_reach, args.repeats)
    report["fft"] = fft_section(vol, crystal, grid, q_reach, max(1, args.repeats - 1))
    report["sigma"] = sigma_section(vol, crystal, grid, q_reach, max(1, args.repeats - 1))
    del vol
    # (--smoke: the fill, taper and FFT only, for tests/test_bench_smoke.py)
    report["scaling"] = [] if args.smoke else scaling_section(q_reach, q_max_nat, q_pixel)
    f, t, s = report["fill"], report["fft"], report["scaling"]
    lap, m2 = f["laplace"], f["matern2"]
    lines = [
        f"3D-DeltaPDF benchmark: demo crystal {DEMO[0]} {DEMO[1].parameters[:3]}, detector reach "
        f"|Q| <= {q_reach:.3f} 1/A (2 pi; {q_max_nat:.4f} without), q_pixel {q_pixel:.5f} 1/A (no 2 pi)",
        f"grid {f['grid']} ({f['volume_mb']:.0f} MB float32)",
        f"punch-and-fill, radius {RADIUS} 1/A, one core (best of {args.repeats}):",
        f"  reflections punched      {f['reflections']}",
        f"  hole voxels              {lap['hole_voxels']:,} ({lap['voxels_per_hole']:.0f} per reflection)",
        f"  unknowns                 {lap['unknowns']:,} in {lap['batches']} solve(s)",
        f"  Laplace fill             {lap['seconds']:.2f} s (conjugate gradients region by region; runs: "
        + ", ".join(f"{x:.2f}" for x in lap["all_seconds"]) + ")",
        f"  outcomes                 {lap['outcomes']}",
        f"  fill error vs diffuse    {100 * lap['fill_rel_rms_error']:.3f} % rms",
        f"  allocated by numpy       {lap['allocated_mb']:.0f} MB in one fill (tracemalloc; "
        f"input {f['volume_mb']:.0f} MB)",
        f"  Matern m = 2 fill        {m2['seconds']:.2f} s, {m2['batches']} solve(s), error "
        f"{100 * m2['fill_rel_rms_error']:.3f} % rms",
        f"taper and FFT ({' x '.join(map(str, t['shape']))} after cropping):",
        f"  taper                    {t['taper_seconds']:.2f} s",
        f"  FFT workers=1 / 2        {t['fft_seconds_workers_1']:.2f} s / {t['fft_seconds_workers_2']:.2f} s "
        f"(NXRefine's plain fftn, workers=1: {t['nxrefine_plain_fftn_seconds_workers_1']:.2f} s)",
        f"  allocated in the FFT     {t['fft_allocated_mb']:.0f} MB (plain fftn "
        f"{t['nxrefine_plain_fftn_allocated_mb']:.0f} MB; the input is {t['volume_mb']:.0f} MB)",
        f"  max |ours - plain fftn| / max = {t['max_abs_diff_vs_plain_fftn_over_max']:.1e}",
        f"  even volume: octant      {t['cosine_seconds_workers_1']:.2f} s with 1 worker (fold and "
        f"cosine transforms, the whole PDF computed), {t['cosine_allocated_mb']:.0f} MB held; "
        f"max |ours - plain fftn| / max = {t['cosine_max_abs_diff_vs_plain_fftn_over_max']:.1e}",
        f"sigma of the PDF ({report['sigma']['operators']} operators, mean term; best of "
        f"{max(1, args.repeats - 1)}, alternating with the PDF):",
        f"  even volume (octants)    {report['sigma']['even_sigma_seconds']:.2f} s against the "
        f"PDF's {report['sigma']['even_pdf_seconds']:.2f} s, "
        f"{report['sigma']['even_sigma_allocated_mb']:.0f} MB allocated",
        f"  whole transform          {report['sigma']['whole_sigma_seconds']:.2f} s against the "
        f"PDF's {report['sigma']['whole_pdf_seconds']:.2f} s, "
        f"{report['sigma']['whole_sigma_allocated_mb']:.0f} MB allocated",
        f"peak RSS (MB): volume made {f['peak_rss_mb_volume_made']:.0f}, after Laplace fill "
        f"{f['peak_rss_mb_after_fill']:.0f}, after Matern fill {f['peak_rss_mb_after_matern2']:.0f}, "
        f"after FFT {t['peak_rss_mb_after_fft']:.0f}",
        "scaling (fill measured on a sub-grid's interior reflections, extrapolated by the count):",
        f"  {'case':<20} {'radius':>6} {'refl full':>9} {'vox/hole':>8} {'unk/refl':>8} "
        f"{'s/refl':>8} {'extrap. s':>9} {'extrap. unknowns':>16} {'volume GB':>9}",
    ]
    for c in s:
        lines.append(
            f"  {c['case']:<20} {c['radius']:6.2f} {c['reflections_full']:9d} "
            f"{c['voxels_per_hole']:8.0f} {c['unknowns_per_reflection']:8.0f} "
            f"{c['seconds_per_reflection']:8.4f} {c['extrapolated_seconds']:9.1f} "
            f"{c['extrapolated_unknowns']:16,.0f} {c['full_volume_gb']:9.2f}"
            + (f"  (holes merge: {c['hole_components']} regions for {c['reflections_measured']} "
               f"reflections, the largest {c['largest_hole_component_voxels']:,} voxels)"
               if c["hole_components"] < c["reflections_measured"] else ""))
    emit(report, "\n".join(lines), args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
