"""Peak search (rule find_peaks): one streamed pass over the frames of a scan entry.

Per frame: total sum, maximum and a trimmed sum inside a Q annulus (strong pixels left out:
a transmission/normalisation diagnostic robust to Bragg peaks).  Per scan: 3D Bragg peaks
(spotfinding.py: dispersion test, pixels joined across neighbours and frames) with
first-moment centroids (x = column, y = row, frame; continuous coordinates, pixel centre at
+0.5), widths, summed intensity and its error, pixel count, rotation angle, 2theta and chi.

Masks: detector gaps (pyFAI model), negative values (gaps as Pilatus writes them), values
at or above trusted_max, an optional user mask file, and hot pixels found from the data
(strong in most of the first frames, masked from the start; and strong in more than
hot_pixel_fraction of all frames, reported for the mask step).
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np

from .. import spotfinding as sf
from .. import steplog
from ..geometry import DetectorGeometry, ScanAngles, q_from_directions

HOT_PROBE_FRAMES = 20  # frames looked at to find hot pixels before the pass


@dataclass(frozen=True)
class PeakSearchParams:
    method: str = "dispersion"
    window: tuple = (7, 7)
    sigma_background: float = 6.0
    sigma_strong: float = 3.0
    min_local: int = 2
    global_threshold: float = 0.0
    absolute_threshold: float | None = None
    min_spot_size: int = 3
    max_spot_size: int = 20000
    trusted_max: int | None = None
    mask_file: str | None = None
    mask_dataset: str = "/entry/mask"
    hot_pixel_fraction: float = 0.5
    q_annulus: tuple | None = None
    chunk_frames: int = 16

    def __post_init__(self):
        if self.method not in ("dispersion", "absolute"):
            raise ValueError(f"find_peaks.method must be 'dispersion' or 'absolute', got {self.method!r}")
        if self.method == "absolute" and self.absolute_threshold is None:
            raise ValueError("find_peaks.absolute_threshold is needed with method 'absolute'")
        w = tuple(int(v) for v in self.window)
        if len(w) != 2 or any(v < 3 or v % 2 == 0 for v in w):
            raise ValueError(f"find_peaks.window must be two odd numbers >= 3, got {self.window}")
        object.__setattr__(self, "window", w)
        if self.min_spot_size > self.max_spot_size:
            raise ValueError("find_peaks.min_spot_size is larger than max_spot_size")
        if self.q_annulus is not None:
            lo, hi = (float(v) for v in self.q_annulus)
            if not 0 <= lo < hi:
                raise ValueError(f"find_peaks.q_annulus must be [low, high] with low < high, got {self.q_annulus}")
            object.__setattr__(self, "q_annulus", (lo, hi))

    @classmethod
    def from_config(cls, section: dict) -> "PeakSearchParams":
        names = {f.name for f in fields(cls)}
        return cls(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in section.items() if k in names})


@dataclass
class PeakSearchResult:
    peaks: dict  # column -> array (one row per peak)
    frame_stats: dict  # name -> array (one value per frame)
    hot_pixels: np.ndarray  # (n, 2) rows, cols
    max_projection: np.ndarray  # per-pixel maximum over the scan (for the picture)
    q_annulus: tuple
    nframes: int
    seconds: float
    strong_pixels: int = 0
    notes: list = field(default_factory=list)

    @property
    def scan_max(self) -> float:
        return float(self.frame_stats["max"].max()) if self.nframes else 0.0


# --------------------------------------------------------------------------------------
# Masks
# --------------------------------------------------------------------------------------
def user_mask(path: str, dataset: str, shape) -> np.ndarray:
    """Boolean mask (True = do not use) from a user file: any fabio image or HDF5."""
    from ..imageio import read_image

    m = np.asarray(read_image(path, dataset=dataset)) != 0
    if m.shape != tuple(shape):
        raise ValueError(f"{path}: mask shape {m.shape} differs from the detector's {tuple(shape)}")
    return m


def usable_pixels(geometry: DetectorGeometry, params: PeakSearchParams) -> np.ndarray:
    """Static map of usable pixels (detector gaps and the user mask removed)."""
    bad = geometry.detector_mask().copy()
    if params.mask_file:
        bad |= user_mask(params.mask_file, params.mask_dataset, geometry.shape)
    return ~bad


def annulus_map(geometry: DetectorGeometry, usable: np.ndarray, q_annulus) -> tuple[np.ndarray, tuple]:
    q = np.linalg.norm(q_from_directions(geometry.pixel_directions(), geometry.wavelength), axis=-1)
    if q_annulus is None:
        qmax = float(q[usable].max()) if usable.any() else float(q.max())
        q_annulus = (0.4 * qmax, 0.6 * qmax)
    lo, hi = q_annulus
    return ((q >= lo) & (q < hi) & usable).astype(np.uint8), (float(lo), float(hi))


# --------------------------------------------------------------------------------------
# The pass
# --------------------------------------------------------------------------------------
class _FrameDetector:
    """The compiled per-frame detector with its buffers."""

    def __init__(self, shape, params: PeakSearchParams, trusted_max: int):
        ny, nx = shape
        self.p = params
        self.trusted_max = int(trusted_max)
        self.half_r, self.half_c = params.window[0] // 2, params.window[1] // 2
        self.stats = np.zeros(len(sf.FRAME_STATS))
        self._alloc(max(4096, ny * nx // 200))

    def _alloc(self, cap):
        self.rows = np.empty(cap, dtype=np.int32)
        self.cols = np.empty(cap, dtype=np.int32)
        self.vals = np.empty(cap)
        self.bg = np.empty(cap)

    def __call__(self, frame, usable, annulus):
        p = self.p
        while True:
            n = sf.strong_pixels_frame(
                frame, usable, annulus, self.half_r, self.half_c, p.sigma_background,
                p.sigma_strong, p.min_local, p.global_threshold,
                float(p.absolute_threshold or 0.0), p.method == "absolute", self.trusted_max,
                self.rows, self.cols, self.vals, self.bg, self.stats)
            if n >= 0:
                return n
            self._alloc(2 * len(self.rows))


def _trusted_max(params: PeakSearchParams, dtype) -> int:
    if params.trusted_max is not None:
        return int(params.trusted_max)
    return int(np.iinfo(dtype).max) if np.issubdtype(dtype, np.integer) else 2**62


def hot_pixels_in(frames, usable, annulus, params, trusted_max):
    """Pixels that stand out in EVERY one of `frames` (the first frames of the scan): the
    dispersion test run once on the per-pixel minimum over them (a Bragg peak does not stay
    on one pixel that long, so its minimum is background; a hot pixel's is not).  Masked
    before the pass.  Fewer than 5 frames tell nothing: no pixel is called hot."""
    if len(frames) < 5:
        return np.zeros(usable.shape, dtype=bool)
    low = frames.min(axis=0)
    det = _FrameDetector(usable.shape, params, trusted_max)
    k = det(np.ascontiguousarray(low), usable.astype(np.uint8), annulus)
    hot = np.zeros(usable.shape, dtype=bool)
    hot[det.rows[:k], det.cols[:k]] = True
    return hot


def search(stack, geometry: DetectorGeometry, angles: ScanAngles, params: PeakSearchParams,
           log=None) -> PeakSearchResult:
    """Run the peak search over every frame of `stack` (a frames.FrameStack)."""
    import logging

    log = log or logging.getLogger("hklflow.find_peaks")
    t0 = time.monotonic()
    shape = stack.frame_shape
    if tuple(shape) != tuple(geometry.shape):
        raise ValueError(f"frames are {shape} pixels but the detector {geometry.detector} is {geometry.shape}")
    trusted_max = _trusted_max(params, stack.dtype)
    usable = usable_pixels(geometry, params)
    annulus, q_ann = annulus_map(geometry, usable, params.q_annulus)
    # the first frames are read once: they find the hot pixels, then start the pass; one
    # buffer holds them and then every later block of chunk_frames frames
    nf = stack.nframes
    nprobe = min(HOT_PROBE_FRAMES, nf)
    step = params.chunk_frames
    buf = np.empty((max(nprobe, min(step, nf)),) + tuple(shape), dtype=stack.dtype)
    first = stack.read(0, nprobe, out=buf[:nprobe])
    hot_early = hot_pixels_in(first, usable, annulus, params, trusted_max)
    if hot_early.any():
        log.info("hot pixels found in the first frames (masked): %d", int(hot_early.sum()))
    usable &= ~hot_early
    annulus &= usable.astype(np.uint8)
    u8 = usable.astype(np.uint8)
    det = _FrameDetector(shape, params, trusted_max)
    asm = sf.PeakAssembler(shape)
    stats = np.zeros((nf, len(sf.FRAME_STATS)))
    strong_count = np.zeros(shape, dtype=np.int32)
    integer = np.issubdtype(stack.dtype, np.integer)
    maxproj = np.full(shape, -1, dtype=np.int64 if integer else np.float64)
    progress = steplog.Progress(log, "frames searched", nf)
    total_strong = 0

    def blocks():
        yield 0, first
        for a in range(nprobe, nf, step):
            b = min(a + step, nf)
            yield a, stack.read(a, b, out=buf[:b - a])

    for start, chunk in blocks():
        for i, fr in enumerate(chunk):
            f = start + i
            k = det(fr, u8, annulus)
            stats[f] = det.stats
            rows, cols = det.rows[:k].copy(), det.cols[:k].copy()
            strong_count[rows, cols] += 1
            asm.add_frame(f, rows, cols, det.vals[:k].copy(), det.bg[:k].copy())
            total_strong += k
        # float frames: NaN (unusable) pixels do not hide the maximum
        np.fmax(maxproj, chunk.max(axis=0) if integer else np.fmax.reduce(chunk, axis=0),
                out=maxproj)
        progress.update(start + len(chunk))
    table = asm.finish()
    hot_late = strong_count > max(5, params.hot_pixel_fraction * nf)
    hot = hot_early | hot_late
    peaks = peak_columns(table, geometry, angles)
    keep = (peaks["n_pixels"] >= params.min_spot_size) & (peaks["n_pixels"] <= params.max_spot_size)
    # a peak that is a single hot pixel is no peak
    r0, c0 = peaks["bounding_box"][:, 0], peaks["bounding_box"][:, 2]
    single = (peaks["bounding_box"][:, 1] == r0) & (peaks["bounding_box"][:, 3] == c0)
    keep &= ~(single & hot[r0, c0])
    peaks = {k: v[keep] for k, v in peaks.items()}
    seconds = time.monotonic() - t0
    log.info("%d peaks from %d strong pixels in %d frames; %.1f s, %.1f Mpixel/s",
             len(peaks["n_pixels"]), total_strong, nf, seconds,
             nf * shape[0] * shape[1] / max(seconds, 1e-9) / 1e6)
    frame_stats = {name: stats[:, i] for i, name in enumerate(sf.FRAME_STATS)}
    hot_rc = np.argwhere(hot)
    return PeakSearchResult(peaks, frame_stats, hot_rc, np.where(usable, maxproj, -1), q_ann, nf,
                            seconds, total_strong)


def peak_columns(table: sf.PeakTable, geometry: DetectorGeometry, angles: ScanAngles) -> dict:
    """Peak table -> named columns (centroids, variances, intensity, angles)."""
    a, b = table.acc, table.box
    n = a[:, sf.A_N]
    w = a[:, sf.A_W]
    ok = w > 0
    ws = np.where(ok, w, 1.0)
    # with no weight left after background subtraction, fall back to the box centre
    cx = np.where(ok, a[:, sf.A_WX] / ws, (b[:, sf.B_C0] + b[:, sf.B_C1] + 1) / 2.0)
    cy = np.where(ok, a[:, sf.A_WY] / ws, (b[:, sf.B_R0] + b[:, sf.B_R1] + 1) / 2.0)
    cz = np.where(ok, a[:, sf.A_WZ] / ws, (b[:, sf.B_F0] + b[:, sf.B_F1] + 1) / 2.0)
    var = lambda s2, c: np.where(ok, np.clip(a[:, s2] / ws - c * c, 0, None), 0.0)  # noqa: E731
    intensity = a[:, sf.A_RAW] - a[:, sf.A_BG]
    tth, chi = geometry.two_theta_chi(cy, cx) if len(cy) else (np.zeros(0), np.zeros(0))
    return {
        "observed_px_x": cx, "observed_px_y": cy, "observed_frame": cz,
        "observed_phi": angles.angle(cz),
        "observed_px_x_var": var(sf.A_WXX, cx), "observed_px_y_var": var(sf.A_WYY, cy),
        "observed_frame_var": var(sf.A_WZZ, cz),
        "int_sum": intensity, "int_sum_var": a[:, sf.A_RAW],
        "background_mean": np.where(n > 0, a[:, sf.A_BG] / np.maximum(n, 1), 0.0),
        "max_value": a[:, sf.A_MAX], "n_pixels": n.astype(np.int64),
        "bounding_box": np.stack([b[:, sf.B_R0], b[:, sf.B_R1] + 1, b[:, sf.B_C0], b[:, sf.B_C1] + 1,
                                  b[:, sf.B_F0], b[:, sf.B_F1] + 1], axis=1).astype(np.int64),
        "polar_angle": np.degrees(tth), "azimuthal_angle": np.degrees(chi),
    }


# --------------------------------------------------------------------------------------
# Picture
# --------------------------------------------------------------------------------------
def plot(result: PeakSearchResult, title: str, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    p = result.peaks
    fig, ax = plt.subplots(1, 3, figsize=(16, 5.2), gridspec_kw={"width_ratios": [1.1, 1, 1.2]})
    img = np.where(result.max_projection > 0, result.max_projection, np.nan).astype(float)
    ax[0].imshow(np.log10(img), origin="lower", cmap="gray_r", interpolation="nearest")
    ax[0].scatter(p["observed_px_x"] - 0.5, p["observed_px_y"] - 0.5, s=14, facecolors="none",
                  edgecolors="tab:red", linewidths=0.6)
    ax[0].set(title=f"{len(p['n_pixels'])} peaks on the maximum over frames (log)",
              xlabel="column (pixel)", ylabel="row (pixel)")
    pos = p["int_sum"][p["int_sum"] > 0]
    if len(pos):
        ax[1].hist(np.log10(pos), bins=50, color="tab:blue")
    ax[1].set(title="peak intensities", xlabel="log10 summed intensity (counts)", ylabel="peaks")
    fr = np.arange(result.nframes)
    st = result.frame_stats
    ax[2].plot(fr, st["sum"] / max(st["sum"].max(), 1), label="sum (scaled)")
    ax[2].plot(fr, st["trimmed_sum"] / max(st["trimmed_sum"].max(), 1),
               label=f"trimmed sum, Q {result.q_annulus[0]:.2f}-{result.q_annulus[1]:.2f} 1/Å (scaled)")
    ax2 = ax[2].twinx()
    ax2.plot(fr, st["n_strong"], color="tab:red", lw=0.6, label="strong pixels")
    ax2.set_ylabel("strong pixels per frame", color="tab:red")
    ax[2].set(title="per-frame statistics", xlabel="frame", ylabel="relative")
    ax[2].legend(loc="lower left", fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


# --------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------
def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hklflow find_peaks", description=__doc__.splitlines()[0])
    p.add_argument("--config", action="append", required=True, help="experiment config file(s)")
    p.add_argument("--scan-file", required=True, type=Path, help="the scan entry's scan.nxs (ingest)")
    p.add_argument("--out", required=True, type=Path, help="peaks NeXus file to write")
    p.add_argument("--png", required=True, type=Path, help="picture to write")
    return p


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    log = steplog.setup("find_peaks")
    from .. import provenance
    from ..config import ConfigError, load_experiment
    from ..frames import RawDataError, open_scan_frames
    from ..nexus import read_scan_file, write_peaks_file

    try:
        exp = load_experiment(args.config)
        # the user mask file is shared with the mask step: it lives in reduction.mask
        params = PeakSearchParams.from_config({**exp.reduction["find_peaks"],
                                               "mask_file": exp.reduction["mask"]["mask_file"],
                                               "mask_dataset": exp.reduction["mask"]["mask_dataset"]})
        rec = read_scan_file(args.scan_file)
        log.info("scan %s: %d frames of %s, %s", rec.scan_id, rec.nframes, rec.geometry.shape,
                 params)
        with open_scan_frames(args.scan_file) as stack:
            result = search(stack, rec.geometry, rec.angles, params, log)
        prov = provenance.provenance("hklflow find_peaks", parameters=params.__dict__,
                                     inputs=[args.scan_file, *args.config])
        write_peaks_file(args.out, rec, result, params.__dict__, prov)
        plot(result, f"{rec.scan_id}: peak search", args.png)
    except (ConfigError, RawDataError, ValueError, OSError) as exc:
        return steplog.fail(log, exc, (args.out, args.png))
    log.info("wrote %s and %s", args.out, args.png)
    return 0


if __name__ == "__main__":
    sys.exit(main())
