"""hklflow's peak search against DIALS's spot finder (dials.find_spots), on the same frames.

DIALS runs as command lines (Debian's python3-dials; never imported here): see
hklflow.reference.dials_spots.  The whole module is skipped when DIALS is not installed.

Data: the 'tiny' simulation written as Pilatus miniCBF frames (what dxtbx reads), all four
scan entries (60 frames of a Pilatus300k each; the 100 K ones carry satellites).  Per scan
we run our search with default parameters and DIALS with its defaults (threshold
'dispersion_extended') and with threshold 'dispersion' (hklflow's algorithm), pair the two
lists one to one (nearest first, within 2 px and 2 frames), and compare both with the
simulated truth.  Run with ``-s`` (or ``-rA``) to see the report.
"""
from __future__ import annotations

import json
import re

import numpy as np
import pytest

from reference import dials_spots as ds

_why = ds.dials_available()
if _why:
    pytest.skip(f"DIALS not usable: {_why}", allow_module_level=True)

pytestmark = pytest.mark.dials

from hklflow.algorithms.peaks.spotfinding import search  # noqa: E402
from hklflow.model.geometry import DetectorGeometry, ScanAngles  # noqa: E402
from hklflow.raw.frames import open_frames  # noqa: E402
from hklflow.settings.params import DetectorParams, PeakSearchParams  # noqa: E402
from hklflow.simulation.compare import match_peaks  # noqa: E402
from hklflow.simulation.experiment import CbfFramesWriter, preset, simulate_experiment  # noqa: E402

STRONG = 1000.0  # counts: "strong" peaks for the one-to-one comparison
ALGORITHMS = {"dispersion_extended (DIALS default)": (),
              "dispersion": ("spotfinder.threshold.algorithm=dispersion",)}
XYZ = ("observed_px_x", "observed_px_y", "observed_frame")


def frame_pattern(scan_id: str) -> str:
    sample, tl, entry = scan_id.split("/")
    return f"raw/{sample}/{tl}/{entry}/{entry}_*.cbf"


@pytest.fixture(scope="module")
def cbf_experiment(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny_cbf")
    simulate_experiment(preset("tiny"), out, frame_format="cbf")
    return out, json.loads((out / "truth.json").read_text())


@pytest.fixture(scope="module")
def runs(cbf_experiment, tmp_path_factory):
    """Per scan: truth, our result, and DIALS's result per algorithm."""
    exp, truth = cbf_experiment
    work = tmp_path_factory.mktemp("dials_runs")
    out = {}
    for sid, t in truth["scans"].items():
        pattern = str(exp / frame_pattern(sid))
        g = DetectorGeometry(**t["geometry"])
        angles = ScanAngles(t["phi_start"], t["phi_step"], t["nframes"])
        with open_frames(pattern, expected_frames=t["nframes"]) as stack:
            ours = search(stack, g, angles, PeakSearchParams.defaults(), DetectorParams.defaults(name=g.detector))
        dials = {name: ds.run_dials_find_spots(pattern, work / sid.replace("/", "_") / str(i),
                                               nproc=1, extra_phil=extra)
                 for i, (name, extra) in enumerate(ALGORITHMS.items())}
        out[sid] = {"truth": t, "geometry": g, "ours": ours, "dials": dials}
    return out


def compare(ours: dict, dials: dict) -> dict:
    """One-to-one pairing, matched fractions of the strong peaks both ways, centroid
    differences (DIALS - ours) of the pairs that are strong in both lists."""
    ia, ib = ds.match_one_to_one(ours, dials, tol_px=2.0, tol_frames=2.0)
    so, sd = ours["int_sum"] > STRONG, dials["int_sum"] > STRONG
    mo = np.zeros(len(so), bool)
    md = np.zeros(len(sd), bool)
    mo[ia] = True
    md[ib] = True
    both = so[ia] & sd[ib]
    diff = np.stack([dials[c][ib][both] - ours[c][ia][both] for c in XYZ], axis=1)
    return {"ours_strong": int(so.sum()), "ours_strong_matched": int((so & mo).sum()),
            "dials_strong": int(sd.sum()), "dials_strong_matched": int((sd & md).sum()),
            "n_ours": len(so), "n_dials": len(sd), "n_pairs": len(ia), "diff": diff,
            "ours_unmatched": np.flatnonzero(so & ~mo), "dials_unmatched": np.flatnonzero(sd & ~md)}


def pooled(runs, name):
    """Comparison of our peaks with DIALS's (algorithm `name`), pooled over the scans."""
    parts = [compare(r["ours"].peaks, r["dials"][name]["peaks"]) for r in runs.values()]
    tot = {k: sum(p[k] for p in parts) for k in ("ours_strong", "ours_strong_matched", "dials_strong",
                                                  "dials_strong_matched", "n_ours", "n_dials",
                                                  "n_pairs")}
    tot["diff"] = np.concatenate([p["diff"] for p in parts])
    tot["per_scan"] = parts
    return tot


def truth_summary(matches) -> dict:
    n_meas = sum(m.n_truth_measurable for m in matches)
    return {"recall": sum(m.n_found_measurable for m in matches) / max(n_meas, 1),
            "n_measurable": n_meas,
            "unmatched": sum(m.n_peaks_unmatched for m in matches) / max(sum(m.n_peaks for m in matches), 1),
            "median_dx": float(np.median([m.median_dx_px for m in matches])),
            "median_dy": float(np.median([m.median_dy_px for m in matches])),
            "median_dz": float(np.median([m.median_dz_frames for m in matches])),
            "median_abs_dxy": float(np.median([m.median_abs_dxy_px for m in matches])),
            "median_abs_dz": float(np.median([m.median_abs_dz_frames for m in matches]))}


# --------------------------------------------------------------------------------------
# How DIALS reads our miniCBF frames
# --------------------------------------------------------------------------------------
def test_dials_reads_the_cbf_header(runs):
    sid, r = next(iter(runs.items()))
    t, g = r["truth"], r["geometry"]
    d = r["dials"][next(iter(ALGORITHMS))]
    text = ds.show_experiments(d["experiments"])
    ny, nx = g.shape
    p2 = g.pixel_size[1]

    def numbers(label):
        m = re.search(rf"{label}\s*[:=]?\s*[{{(]([^}})]*)[}})]", text)
        assert m, f"dials.show printed no {label!r}:\n{text}"
        return [float(v) for v in m.group(1).split(",")]

    assert numbers("image_size") == [nx, ny]
    assert numbers("pixel_size") == pytest.approx([p2 * 1e3, g.pixel_size[0] * 1e3])
    assert numbers("trusted_range") == pytest.approx([-1, 1048575], rel=1e-5)  # gaps -1, cutoff
    # beam centre as the writer put it in Beam_xy: the direct beam (dxtbx: slow axis -Y,
    # pixel (0,0) top left), and the distance to it
    from hklflow.simulation.writers import beamline_geometry, direct_beam

    distance, row, col = direct_beam(beamline_geometry(preset("tiny"), g))
    assert numbers(r"px:") == pytest.approx([col, row], abs=0.006)
    assert numbers("oscillation") == pytest.approx([t["phi_start"], t["phi_step"]])
    assert numbers("image range") == [1, t["nframes"]]
    assert float(re.search(r"wavelength:\s*([\d.]+)", text).group(1)) == pytest.approx(g.wavelength, abs=1e-5)
    assert float(re.search(r"distance:\s*([\d.]+)", text).group(1)) == pytest.approx(distance * 1e3, abs=0.01)
    # without a "Silicon sensor" header line the panel type is unknown (no parallax correction)
    # and DIALS's automatic min_spot_size is 6 (3 is for pixel-array detectors)
    assert "SENSOR_UNKNOWN" in text
    assert d["parameters"]["spotfinder.filter.min_spot_size"] == "6"
    print(f"\n[dials.show] {d['dials_version']}: image_size {nx}x{ny}, pixel "
          f"{numbers('pixel_size')} mm, trusted_range {numbers('trusted_range')}, beam centre px "
          f"{numbers('px:')}, oscillation {numbers('oscillation')}, SENSOR_UNKNOWN")
    print(f"[find_spots parameters] {d['parameters']}")


def test_dials_masks_gaps_and_hot_pixels(runs, cbf_experiment):
    """dxtbx masks the Pilatus module gaps (and -1 pixels) and pixels at the Count_cutoff:
    no DIALS spot has a pixel in a gap or on a simulated hot pixel."""
    _, truth = cbf_experiment
    hot = np.asarray(truth["detector_defects"]["hot_pixels"])
    for sid, r in runs.items():
        gaps = r["geometry"].detector_mask()
        for name, d in r["dials"].items():
            p = d["peaks"]
            rows = np.floor(p["observed_px_y"]).astype(int)
            cols = np.floor(p["observed_px_x"]).astype(int)
            assert not gaps[rows, cols].any(), (sid, name)
            # a hot pixel strong in every frame would be a 1 x 1 x 60 spot
            bb = p["bounding_box"]
            for hr, hc in hot:
                on = (bb[:, 0] == hr) & (bb[:, 1] == hr + 1) & (bb[:, 2] == hc) & (bb[:, 3] == hc + 1)
                assert not on.any(), (sid, name, hr, hc)


def test_dials_pixel_coordinates_on_a_synthetic_spot(tmp_path):
    """A block spot in otherwise empty frames: DIALS's xyzobs.px.value is (column, row, frame)
    with the pixel centre at +0.5 and frame i covering [i, i+1), exactly like ours."""
    spec = preset("tiny")
    g = spec.calibration()
    ny, nx = g.shape
    frames = np.zeros((4, ny, nx), dtype=np.int32)
    frames[:, g.detector_mask()] = -1
    frames[1, 100:103, 200:204] = 1000  # rows 100-102, columns 200-203
    frames[2, 100:103, 200:204] = 3000
    CbfFramesWriter(tmp_path / "frames", "spot", spec, g)(0, frames)
    expect = (202.0, 101.5, (1.5 * 1000 + 2.5 * 3000) / 4000)  # x (column), y (row), frame
    pattern = str(tmp_path / "frames" / "spot_*.cbf")
    for name, extra in ALGORITHMS.items():
        d = ds.run_dials_find_spots(pattern, tmp_path / f"dials{len(extra)}", extra_phil=extra)
        assert d["n_spots"] == 1, name
        p = d["peaks"]
        got = tuple(float(p[c][0]) for c in XYZ)
        assert got == pytest.approx(expect, abs=1e-9), name
        assert p["bounding_box"][0].tolist() == [100, 103, 200, 204, 1, 3], name
        assert p["int_sum"][0] == pytest.approx(12 * 4000), name  # raw counts, no background
    # a sweep starting at the second file: frames count from the first file given
    files = sorted(str(f) for f in (tmp_path / "frames").glob("spot_*.cbf"))[1:]
    d = ds.run_dials_find_spots(files, tmp_path / "dials_sub")
    assert d["image_range"] == (2, 4) and d["frame_offset"] == 1
    assert d["peaks"]["observed_frame"][0] == pytest.approx(expect[2] - 1, abs=1e-9)
    assert d["peaks"]["bounding_box"][0].tolist() == [100, 103, 200, 204, 0, 2]
    with open_frames(pattern) as stack:
        ours = search(stack, g, ScanAngles(0.0, 1.0, 4), PeakSearchParams.defaults(),
                      DetectorParams.defaults(name=g.detector)).peaks
    assert len(ours["int_sum"]) == 1
    assert tuple(float(ours[c][0]) for c in XYZ) == pytest.approx(expect, abs=1e-9)
    assert ours["bounding_box"][0].tolist() == [100, 103, 200, 204, 1, 3]


# --------------------------------------------------------------------------------------
# The comparison on the simulated scans
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(ALGORITHMS))
def test_find_peaks_matches_dials(runs, name):
    c = pooled(runs, name)
    frac_ours = c["ours_strong_matched"] / c["ours_strong"]
    frac_dials = c["dials_strong_matched"] / c["dials_strong"]
    ad = np.abs(c["diff"])
    med, p95 = np.median(ad, axis=0), np.percentile(ad, 95, axis=0)
    t_ours = sum(r["ours"].seconds for r in runs.values())
    t_dials = sum(r["dials"][name]["seconds"] for r in runs.values())
    lines = [f"\n[ours vs DIALS {name}, {len(runs)} scans pooled]",
             f"  peaks: ours {c['n_ours']}, DIALS {c['n_dials']}, one-to-one pairs {c['n_pairs']}",
             f"  our strong (int_sum > {STRONG:g}) matched by DIALS: {c['ours_strong_matched']}/"
             f"{c['ours_strong']} = {frac_ours:.3f}",
             f"  DIALS strong (intensity > {STRONG:g}) matched by ours: {c['dials_strong_matched']}/"
             f"{c['dials_strong']} = {frac_dials:.3f}",
             f"  |DIALS - ours| over {len(ad)} strong pairs: median x {med[0]:.3f} y {med[1]:.3f} px, "
             f"z {med[2]:.4f} frames; 95th pct x {p95[0]:.3f} y {p95[1]:.3f} px, z {p95[2]:.3f} frames; "
             f"signed median {np.median(c['diff'], axis=0).round(4).tolist()}",
             f"  time: ours search {t_ours:.2f} s, dials.find_spots {t_dials:.2f} s (nproc=1, "
             f"process start included) for {len(runs)} x 60 frames"]
    def where(p, i):
        return (f"x {p['observed_px_x'][i]:.1f} y {p['observed_px_y'][i]:.1f} "
                f"z {p['observed_frame'][i]:.1f}, int {p['int_sum'][i]:.0f}, {p['n_pixels'][i]} px, "
                f"bbox {p['bounding_box'][i].tolist()}")

    for (sid, r), part in zip(runs.items(), c["per_scan"]):
        for i in part["ours_unmatched"]:
            lines.append(f"  {sid}: our strong peak without DIALS partner at {where(r['ours'].peaks, i)}")
        for i in part["dials_unmatched"]:
            lines.append(f"  {sid}: DIALS strong spot without our partner at "
                         f"{where(r['dials'][name]['peaks'], i)}")
    print("\n".join(lines))
    assert c["ours_strong"] >= 100 and c["dials_strong"] >= 100
    assert frac_ours >= 0.95
    assert frac_dials >= 0.95
    assert med[0] < 0.1 and med[1] < 0.1 and med[2] < 0.1


@pytest.mark.parametrize("name", list(ALGORITHMS))
def test_both_against_truth(runs, name):
    ours = truth_summary([match_peaks(r["ours"].peaks, r["truth"]) for r in runs.values()])
    dials = truth_summary([match_peaks(r["dials"][name]["peaks"], r["truth"]) for r in runs.values()])
    fmt = lambda s: (f"recall {s['recall']:.3f} of {s['n_measurable']} measurable, unmatched "  # noqa: E731
                     f"{s['unmatched']:.3f}, median |dxy| {s['median_abs_dxy']:.3f} px, |dz| "
                     f"{s['median_abs_dz']:.3f} frames, signed median dx {s['median_dx']:+.3f} dy "
                     f"{s['median_dy']:+.3f} dz {s['median_dz']:+.3f}")
    print(f"\n[vs truth, {len(runs)} scans] ours: {fmt(ours)}\n[vs truth] DIALS {name}: {fmt(dials)}")
    assert ours["recall"] >= 0.95 and ours["unmatched"] <= 0.05
    # DIALS on the same frames, read through our column mapping: no coordinate offset
    assert dials["recall"] >= 0.9 and dials["unmatched"] <= 0.05
    for s in (ours, dials):
        assert abs(s["median_dx"]) < 0.05 and abs(s["median_dy"]) < 0.05 and abs(s["median_dz"]) < 0.05
        assert s["median_abs_dxy"] < 0.1 and s["median_abs_dz"] < 0.1


def test_dials_error_names_the_command(tmp_path):
    bad = tmp_path / "junk_00001.cbf"
    bad.write_text("not a CBF\n")
    with pytest.raises(ds.DialsError, match=r"dials\.import"):
        ds.run_dials_find_spots([str(bad)], tmp_path / "w")
    with pytest.raises(ds.DialsError, match="no frame files"):
        ds.run_dials_find_spots(str(tmp_path / "none_*.cbf"), tmp_path / "w2")
