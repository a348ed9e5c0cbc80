"""Pictures of the detector: the calibration's rings (calibrate_powder), the peaks
(find_peaks), the orientation's residuals (index_parent, refine_temperature) and the masks
(mask_scan).  Row 0 is drawn at the bottom, as pyFAI draws detectors."""
from __future__ import annotations

import math

import numpy as np
from matplotlib.collections import EllipseCollection
from matplotlib.colors import LogNorm
from matplotlib.patches import Patch

from ..algorithms.calibration import describe, ring_two_theta
from ..files.mask import DEAD, FOUND, GAP, HOT, PREDICTED, REASONS, USER
from .figure import log_colorbar, margins, new_figure, save_tight, with_preview


def _reduction(rows: int, cols: int, pixels: int = 800) -> int:
    """Block size that brings a detector image to at most `pixels` a side: a picture shows
    no more, and matplotlib's resampling of a whole 2M image is slow."""
    return max(1, math.ceil(max(rows, cols) / pixels))


def _block_extent(rows: int, cols: int, s: int) -> tuple:
    """imshow's extent, in detector pixels, of an image reduced by blocks of s (_blocks)."""
    return (-0.5, s * math.ceil(cols / s) - 0.5, -0.5, s * math.ceil(rows / s) - 0.5)


# --------------------------------------------------------------------------------------
# What every detector picture shares
# --------------------------------------------------------------------------------------
def _detector_image(ax, image, extent=None, **style):
    """imshow of a detector image (a frame's array, or one reduced by blocks with its extent
    in pixels) with row 0 at the bottom, as pyFAI draws detectors: its native layout
    (orientation 3, docs/conventions.md) and its own views (pyFAI.gui.jupyter, pyFAI-calib2)
    put the array's origin at the lower left."""
    return ax.imshow(image, origin="lower", interpolation="nearest", extent=extent, **style)


def _detector_axes(ax, shape) -> None:
    """Axes of a detector picture: the whole detector of shape (rows, columns), pixel i
    centred at i, row 0 at the bottom (_detector_image), said in the labels."""
    rows, cols = shape
    ax.set(xlim=(-0.5, cols - 0.5), ylim=(-0.5, rows - 0.5), aspect="equal",
           xlabel="column (pixel)", ylabel="row (pixel, 0 at bottom)")


# --------------------------------------------------------------------------------------
# Calibration (calibrate_powder)
# --------------------------------------------------------------------------------------
def plot_calibration(path, result, params, image,
                     pattern, *, title: str) -> None:

    g = result.geometry
    ai = g.to_pyfai()
    rings_deg = (np.degrees(ring_two_theta(params.calibrant, g.wavelength)) if params.calibrant
                 else np.array([]))
    fig = new_figure((14, 6.5))
    ax0, ax1 = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1, 1.25]})
    ny, nx = g.shape
    if image is not None:
        shown = np.asarray(image, dtype=float)
        if result.bad_pixels is not None:
            shown = np.where(result.bad_pixels, np.nan, shown)
        shown = np.where(shown > 0, shown, np.nan)
        finite = shown[np.isfinite(shown)]
        vmin, vmax = (np.percentile(finite, [1, 99.9]) if finite.size else (1, 10))
        im = _detector_image(ax0, shown, cmap="viridis",
                             norm=LogNorm(vmin=max(vmin, 0.5), vmax=max(vmax, vmin * 10, 1)))
        log_colorbar(fig, im, ax=ax0, fraction=0.046, pad=0.02, label="counts")
        ax0.set_title("calibration image (log)")
    else:  # grey where the detector has gaps, transparent elsewhere: no colour scale
        _detector_image(ax0, g.detector_mask()[..., None] * np.float32([0.55, 0.55, 0.55, 1]))
        ax0.set_title("detector gaps (grey)")
    drawn = []  # legend handles of what is drawn over the detector, and only that
    # predicted rings of the refined geometry: contours of pixel 2theta (every 2nd pixel)
    step = 2
    tth = np.degrees(np.asarray(ai.center_array(g.shape, unit="2th_rad", scale=False)))
    sub = tth[::step, ::step]
    levels = rings_deg[(rings_deg > sub.min()) & (rings_deg < sub.max())]
    if levels.size:
        yy, xx = np.mgrid[0:ny:step, 0:nx:step]
        rings = ax0.contour(xx, yy, sub, levels=np.sort(levels), colors="red",
                            linewidths=0.5, alpha=0.8)
        ring_line = rings.legend_elements()[0][0]
        ring_line.set_label("predicted rings")
        drawn.append(ring_line)
    if len(result.control_points):  # (row, column, ring) with pixel i centred at i, as pyFAI's
        cp = result.control_points
        drawn.append(ax0.scatter(cp[:, 1], cp[:, 0], s=10, facecolors="none", edgecolors="w",
                                 linewidths=0.6, label="control points"))
    beam = g.beam_centre()  # continuous pixels: pixel i spans i to i + 1
    if g.on_detector(beam["direct_beam_row"], beam["direct_beam_col"]):
        drawn += ax0.plot([beam["direct_beam_col"] - 0.5], [beam["direct_beam_row"] - 0.5],
                          "+", color="tab:orange", ms=12, label="direct beam")
    if drawn:
        ax0.legend(handles=drawn, loc="upper right", fontsize=8, framealpha=0.8,
                   facecolor="0.85")
    _detector_axes(ax0, g.shape)

    if pattern is not None:
        x, y = pattern
        ax1.plot(x, y, lw=0.8, color="k")
        ymax = np.nanmax(y) if np.isfinite(y).any() else 1
        ax1.set_ylabel("mean intensity (polarization & solid-angle corrected)")
        ax1.set_xlim(x.min(), x.max())
    else:
        ymax = 1
        ax1.set_xlim(0, float(np.degrees(g.max_two_theta())))
        ax1.text(0.5, 0.5, "no image: ring positions only", transform=ax1.transAxes,
                 ha="center")
    lo, hi = ax1.get_xlim()
    for t in rings_deg[(rings_deg >= lo) & (rings_deg <= hi)]:
        ax1.axvline(t, color="red", lw=0.6, alpha=0.6, zorder=0)
    ax1.set_xlabel("2theta / deg")
    ax1.set_title(f"{params.calibrant} rings (red) at {g.wavelength:.5f} A" if params.calibrant
                  else f"no calibrant named: no rings ({g.wavelength:.5f} A)")
    ax1.set_ylim(bottom=0, top=1.05 * ymax)
    res = (f"rms {result.rms_px:.3f} px, {result.n_points} points on {len(result.rings)} rings"
           if result.rms_px is not None else "imported PONI")
    fig.suptitle(f"{title}\n{describe(g)}; {res}", fontsize=10)
    margins(fig, wspace=0.25)
    save_tight(fig, path, 90)


# --------------------------------------------------------------------------------------
# Peak search (find_peaks)
# --------------------------------------------------------------------------------------
def plot_peaks(result, title: str, path, preview: str = "") -> None:
    p = result.peaks
    fig = new_figure((16, 5.2))
    ax = fig.subplots(1, 3, gridspec_kw={"width_ratios": [1.1, 1, 1.2]})
    _draw_scan_maximum(fig, ax[0], result.max_projection)
    ax[0].scatter(p["observed_px_x"] - 0.5, p["observed_px_y"] - 0.5, s=14, facecolors="none",
                  edgecolors="tab:red", linewidths=0.6)
    _detector_axes(ax[0], np.shape(result.max_projection))
    ax[0].set_title(f"{len(p['n_pixels'])} peaks (red)\non the maximum over frames (log)")
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
    fig.suptitle(with_preview(title, preview))
    margins(fig, wspace=0.4)  # (room for the colour bar's label)
    save_tight(fig, path, 90)


# --------------------------------------------------------------------------------------
# Orientation (index_parent, refine_temperature)
# --------------------------------------------------------------------------------------
def plot_residuals(result, title: str, path, preview: str = "") -> None:
    fig = new_figure((16, 5))
    ax = fig.subplots(1, 3)
    for e, res, used in zip(result.entries, result.residuals, result.used):
        # (e.x, e.y: continuous pixels, pixel i spanning i to i + 1)
        on_detector = ax[0].scatter(e.x[used] - 0.5, e.y[used] - 0.5,
                                    c=np.hypot(res[used, 0], res[used, 1]), s=6,
                                    cmap="viridis", vmin=0, vmax=max(3 * result.rms_px, 0.1))
        ax[1].scatter(e.z[used], res[used, 2], s=4, label=e.name)
        ax[2].scatter(res[used, 0], res[used, 1], s=4, label=e.name)
    if result.entries:
        fig.colorbar(on_detector, ax=ax[0], fraction=0.046, pad=0.02, extend="max",
                     label="|pixel residual| (pixel)")
    _detector_axes(ax[0], result.model.detector.shape)
    ax[0].set_title("|pixel residual| of the peaks used")
    ax[1].axhline(0, color="k", lw=0.5)
    ax[1].set(title=f"frame residual vs frame (rms {result.rms_frames:.3f})", xlabel="frame",
              ylabel="predicted - observed (frames)")
    ax[1].legend(fontsize=8, markerscale=3)
    ax[2].axhline(0, color="k", lw=0.5)
    ax[2].axvline(0, color="k", lw=0.5)
    ax[2].set(title=f"pixel residuals (rms {result.rms_px:.3f} px)", xlabel="dx (pixel)",
              ylabel="dy (pixel)", aspect="equal")
    c = result.model.crystal.cell
    fig.suptitle(with_preview(f"{title}: {result.n_used} peaks, {result.fraction_indexed:.1%} "
                               "indexed; cell " + " ".join(f"{v:.5f}" for v in c.parameters),
                               preview))
    margins(fig, wspace=0.45)  # (room for the colour bar's label)
    save_tight(fig, path, 90)


# --------------------------------------------------------------------------------------
# Masks (mask_scan)
# --------------------------------------------------------------------------------------
def _blocks(a: np.ndarray, s: int, ufunc, fill) -> np.ndarray:
    """a reduced over s x s blocks by ufunc (padded with fill)."""
    if s == 1:
        return a
    r, c = a.shape
    p = np.full((s * math.ceil(r / s), s * math.ceil(c / s)), fill, dtype=a.dtype)
    p[:r, :c] = a
    return ufunc.reduce(ufunc.reduce(p.reshape(p.shape[0] // s, s, p.shape[1] // s, s), axis=3), axis=1)


def _reduced_image(image) -> tuple[np.ndarray, tuple]:
    """A detector image reduced by blocks (their maximum, so that single bright pixels stay
    visible), NaN where nothing is positive (off a log scale); with its extent in pixels."""
    a = np.asarray(image, dtype=np.float32)
    rows, cols = a.shape
    s = _reduction(rows, cols)
    mp = _blocks(a, s, np.maximum, np.float32(-1))
    return np.where(mp > 0, mp, np.float32(np.nan)), _block_extent(rows, cols, s)


def _draw_scan_maximum(fig, ax, max_projection) -> None:
    """A scan's maximum over frames of every pixel, in greys on a log scale with its colour
    bar (nothing where no pixel counts)."""
    image, extent = _reduced_image(max_projection)
    if np.isfinite(image).any():
        shown = _detector_image(ax, image, extent, cmap="gray_r", norm=LogNorm())
        log_colorbar(fig, shown, ax=ax, fraction=0.046, pad=0.02,
                      label="maximum over frames (counts)")


def plot_mask(result, title: str, path, max_ellipses: int = 3000, preview: str = "") -> None:
    """Left: the pixel mask (colours by reason) over the scan's maximum projection (log),
    with the Bragg regions projected on the detector as ellipses (when there are at most
    max_ellipses of them); middle: the Bragg mask seen along the frames (in how many frames
    each pixel is inside a region); right: the usable pixels inside a region per frame."""
    REASON_COLOURS = {GAP: (0.55, 0.55, 0.55), DEAD: (0.1, 0.3, 1.0), HOT: (1.0, 0.1, 0.1),
                      USER: (1.0, 0.7, 0.0)}
    m, st = result.mask, result.statistics
    rows, cols = m.shape
    fig = new_figure((19, 6.4))
    ax = fig.subplots(1, 3, gridspec_kw={"width_ratios": [1, 1, 0.9]})
    # images larger than the picture are reduced by blocks (maximum, union of mask bits)
    s = _reduction(rows, cols)
    extent = _block_extent(rows, cols, s)
    if result.max_projection is not None:
        _draw_scan_maximum(fig, ax[0], result.max_projection)
    reasons = _blocks(np.asarray(result.reasons), s, np.bitwise_or, 0)
    rgba = np.zeros(reasons.shape + (4,), np.uint8)
    for bit, colour in REASON_COLOURS.items():  # later reasons drawn over earlier ones
        sel = (reasons & bit) != 0
        rgba[sel, :3] = np.round(255 * np.asarray(colour)).astype(np.uint8)
        rgba[sel, 3] = 217
    _detector_image(ax[0], rgba, extent)
    # hot and dead pixels are single pixels: circle them so they can be seen
    for bit in (DEAD, HOT):
        rc = np.argwhere((result.reasons & bit) != 0)
        if 0 < len(rc) <= 5000:
            ax[0].scatter(rc[:, 1], rc[:, 0], s=30, facecolors="none",
                          edgecolors=[REASON_COLOURS[bit]], linewidths=0.8)
    t = result.table
    drawn = len(m.regions) <= max_ellipses
    for src, colour in ((PREDICTED, "tab:green"), (FOUND, "tab:purple")):
        sel = np.asarray(t["source"]) == src
        if drawn and sel.any():
            ax[0].add_collection(EllipseCollection(
                2 * t["radius_col"][sel], 2 * t["radius_row"][sel], np.zeros(sel.sum()), units="xy",
                offsets=np.column_stack([t["col"][sel] - 0.5, t["row"][sel] - 0.5]),
                offset_transform=ax[0].transData, facecolors="none", edgecolors=colour,
                linewidths=0.5))
    _detector_axes(ax[0], m.shape)
    ax[0].set_title("pixel mask" + (" over the scan maximum (log)" if result.max_projection
                                    is not None else "")
                    + ("" if drawn else f";\n{len(m.regions)} regions: see middle"))
    handles = [Patch(color=REASON_COLOURS[b], label=f"{n} ({st[f'pixels_{n}']})")
               for n, b in REASONS.items()]
    if drawn:
        handles += [Patch(facecolor="none", edgecolor="tab:purple", label="found peak"),
                    Patch(facecolor="none", edgecolor="tab:green", label="predicted reflection")]
    ax[0].legend(handles=handles, loc="upper right", fontsize=7, framealpha=0.8)
    if result.masked_per_pixel is not None:
        pp = _blocks(np.asarray(result.masked_per_pixel), s, np.maximum, 0).astype(np.float32)
        pp[pp == 0] = np.nan
        im = _detector_image(ax[1], pp, extent, cmap="viridis", norm=LogNorm(
            vmin=1, vmax=max(float(np.nanmax(pp)) if np.isfinite(pp).any() else 1, 2)))
        log_colorbar(fig, im, ax=ax[1], fraction=0.046, pad=0.02, label="frames")
        _detector_image(ax[1], np.where((reasons & GAP)[..., None] != 0, rgba, 0), extent)
        ax[1].set_title("Bragg mask: frames in which a pixel is masked")
    _detector_axes(ax[1], m.shape)
    usable = max(int(np.count_nonzero(result.reasons == 0)), 1)
    if result.masked_per_frame is not None and len(result.masked_per_frame):
        ax[2].plot(np.arange(m.nframes) + 0.5, 100 * result.masked_per_frame / usable, lw=0.8)
    ax[2].set(xlabel="frame", ylabel="usable pixels inside a Bragg region (%)",
              title="Bragg mask per frame")
    fig.suptitle(with_preview(
        f"{title}: gaps {st['pixels_gap']}, hot {st['pixels_hot']}, dead {st['pixels_dead']}, "
        f"user {st['pixels_user']} pixels; regions {st['regions_found']} found, "
        f"{st['regions_predicted']} predicted: {100 * st['bragg_fraction']:.3f}% of the usable "
        f"pixel-frames; hkl_radius {m.hkl_radius:g} r.l.u. (applied by the transform)", preview))
    margins(fig, wspace=0.3)
    save_tight(fig, path, 80)
