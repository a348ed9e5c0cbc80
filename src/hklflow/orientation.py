"""Shared pieces of the orientation steps (index_parent, refine_scan): peaks of a sample at
one temperature as refinement input, and the residual picture."""
from __future__ import annotations

import numpy as np

from .geometry import ScanGeometry
from .nexus import read_peaks_file, read_scan_file
from .refinement import EntryPeaks, RefinementResult


CENTROID_FLOOR = 0.02  # pixels / frames: centroid error not explained by counting statistics


def centroid_sigmas(peaks: dict):
    """Centroid uncertainties (pixels, frames) of peaks: sqrt(variance / counts) with the
    pixel/frame quantisation (1/12) in the variance and a floor."""
    counts = np.maximum(peaks["int_sum"], 1.0)
    vxy = 0.5 * (peaks["observed_px_x_var"] + peaks["observed_px_y_var"]) + 1.0 / 12
    vz = peaks["observed_frame_var"] + 1.0 / 12
    return (np.sqrt(vxy / counts + CENTROID_FLOOR ** 2), np.sqrt(vz / counts + CENTROID_FLOOR ** 2))


def load_entries(scan_files, peaks_files, min_i_over_sigma: float = 5.0):
    """EntryPeaks of the entries of one temperature and their common detector geometry
    (the calibration: each entry's scan file holds it moved by the entry's translation).

    Peaks weaker than min_i_over_sigma (summed intensity over its Poisson error) are left out.
    """
    entries = []
    common = None
    for sf, pf in zip(scan_files, peaks_files):
        rec = read_scan_file(sf)
        pk = read_peaks_file(pf)
        if pk.scan_id != rec.scan_id:
            raise ValueError(f"{pf} holds peaks of {pk.scan_id}, not of {rec.scan_id} ({sf})")
        shift = tuple(float(v) for v in rec.detector_shift)
        base = rec.geometry.shifted(*(-v for v in shift))
        if common is None:
            common = base
        elif not np.allclose([common.dist, common.poni1, common.poni2, common.rot1, common.rot2,
                              common.rot3], [base.dist, base.poni1, base.poni2, base.rot1,
                                             base.rot2, base.rot3], atol=1e-9):
            raise ValueError(f"{sf}: its entries do not share one calibration; refine them separately")
        sg = ScanGeometry(rec.geometry, rec.goniometer, rec.angles, dict(rec.offsets))
        entries.append(entry_peaks(rec.entry, sg, shift, pk.peaks, min_i_over_sigma))
    return entries, common


def entry_peaks(name, scan: ScanGeometry, shift, peaks: dict, min_i_over_sigma: float = 5.0):
    """EntryPeaks of one entry from a peak table (find_peaks columns): the peaks above
    min_i_over_sigma with their centroid uncertainties and intensities."""
    strong = peaks["int_sum"] > min_i_over_sigma * np.sqrt(np.maximum(peaks["int_sum_var"], 1.0))
    sxy, sz = centroid_sigmas(peaks)
    return EntryPeaks(name, scan, tuple(shift), peaks["observed_px_x"][strong],
                      peaks["observed_px_y"][strong], peaks["observed_frame"][strong],
                      sxy[strong], sz[strong], peaks["int_sum"][strong])


def sample_q(entries) -> np.ndarray:
    """Sample-frame Q (1/Angstrom) of every peak of the entries, concatenated."""
    return np.concatenate([e.scan.sample_q_at(e.y, e.x, e.z) for e in entries])


def plot_residuals(result: RefinementResult, title: str, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 3, figsize=(16, 5))
    for e, res, used in zip(result.entries, result.residuals, result.used):
        ax[0].scatter(e.x[used], e.y[used], c=np.hypot(res[used, 0], res[used, 1]), s=6,
                      cmap="viridis", vmin=0, vmax=max(3 * result.rms_px, 0.1))
        ax[1].scatter(e.z[used], res[used, 2], s=4, label=e.name)
        ax[2].scatter(res[used, 0], res[used, 1], s=4, label=e.name)
    ax[0].set(title=f"|residual| on the detector (colour, 0-{3 * result.rms_px:.2f} px)",
              xlabel="column (pixel)", ylabel="row (pixel)", aspect="equal")
    ax[1].axhline(0, color="k", lw=0.5)
    ax[1].set(title=f"frame residual vs frame (rms {result.rms_frames:.3f})", xlabel="frame",
              ylabel="predicted - observed (frames)")
    ax[1].legend(fontsize=8, markerscale=3)
    ax[2].axhline(0, color="k", lw=0.5)
    ax[2].axvline(0, color="k", lw=0.5)
    ax[2].set(title=f"pixel residuals (rms {result.rms_px:.3f} px)", xlabel="dx (pixel)",
              ylabel="dy (pixel)", aspect="equal")
    c = result.model.crystal.cell
    fig.suptitle(f"{title}: {result.n_used} peaks, {result.fraction_indexed:.1%} indexed; cell "
                 + " ".join(f"{v:.5f}" for v in c.parameters))
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def refined_scan_geometry(scan_record, orientation) -> tuple[ScanGeometry, np.ndarray]:
    """The refined geometry of one scan entry and the UB of its sample at its temperature:
    the orientation file's common detector moved by the entry's scans-table translation,
    the table's offset angles plus the refined offset corrections of the entry.

    scan_record: nexus.ScanRecord (scan.nxs); orientation: nexus.OrientationRecord."""
    rec, ori = scan_record, orientation
    if rec.sample != ori.sample:
        raise ValueError(f"{ori.path} is the orientation of sample {ori.sample!r}, "
                         f"not of {rec.sample!r} ({rec.path})")
    offsets = dict(rec.offsets)
    for axis, v in ori.offset_corrections.get(rec.entry, {}).items():
        offsets[axis] = offsets.get(axis, 0.0) + v
    scan = ScanGeometry(ori.detector.shifted(*rec.detector_shift), rec.goniometer, rec.angles, offsets)
    return scan, np.asarray(ori.UB, dtype=float)
