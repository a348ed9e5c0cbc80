"""Every picture hklflow draws (one PNG per output that users would rather look at than
read).  Matplotlib's figures are imported when a picture is drawn, with the Agg backend (no
screen), and drawn without pyplot; only the steps that draw import this module."""
from __future__ import annotations

import contextlib
import math
import textwrap
from pathlib import Path

import matplotlib.artist
import numpy as np

from ..algorithms.calibration import describe, ring_two_theta
from ..base.errors import GridError
from ..files.pdf import read_pdf_plane
from ..files.volume import KeptPlanes, Volume, VolumeReader, read_volume_header
from .slices import cell_of, color_limits, plane_matrix, read_slice

# Each Artist class of matplotlib makes the docstring of its `set` method from the
# docstrings of all its setters as it is defined (kwdoc): about half the time of
# importing matplotlib's figures, for help text that no step shows.  kwdoc makes only that
# text (and the property tables interpolated into other docstrings); drawing never calls it.
matplotlib.artist.kwdoc = lambda artist: ""


def _new_figure(figsize):
    """A matplotlib figure of its own, outside pyplot: no screen, nothing to close, and no
    pyplot import (a part of every drawing job's start)."""
    from matplotlib.figure import Figure

    return Figure(figsize=figsize)


# zlib level of the PNGs: 1 encodes a picture in about half the time of Pillow's default 6,
# and the files are hardly larger (smaller for some)
PNG = {"compress_level": 1}


def _save_tight(fig, path, dpi: float, pad_inches: float = 0.1) -> None:
    """fig as a PNG at dpi cropped to what is drawn, with a pad_inches margin: what
    savefig(bbox_inches="tight") writes, from one draw instead of two (savefig draws the
    whole figure once to find the box and again inside it; here the image drawn once is
    cut to the box, rounded out to whole pixels).  When
    something is drawn beyond the figure's edges, savefig, which grows the canvas for it."""
    import matplotlib.image
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    fig.set_dpi(dpi)
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    box = fig.get_tightbbox(canvas.get_renderer()).padded(pad_inches)  # inches
    width, height = canvas.get_width_height()
    x0, x1 = math.floor(box.x0 * dpi), math.ceil(box.x1 * dpi)
    y0, y1 = math.floor(box.y0 * dpi), math.ceil(box.y1 * dpi)
    if x0 < 0 or y0 < 0 or x1 > width or y1 > height:
        fig.savefig(path, dpi=dpi, bbox_inches="tight", pad_inches=pad_inches, pil_kwargs=PNG)
        return
    image = np.asarray(canvas.buffer_rgba())[height - y1:height - y0, x0:x1]
    matplotlib.image.imsave(path, image, format="png", dpi=dpi, pil_kwargs=PNG)


def _with_preview(title: str, preview: str) -> str:
    """A title with the preview's label (hklflow.pictures.preview.preview_label) as its last line;
    unchanged without one."""
    return f"{title}\n{preview}" if preview else title


def _margins(fig, wspace: float, hspace: float = 0.2) -> None:
    """Room around and between the panels of a row of plots, drawn once (fig.tight_layout
    measures every label with a draw of its own); the margins in inches are
    wide enough for the labels and are cut off again by _save_tight."""
    width, height = fig.get_size_inches()
    fig.subplots_adjust(left=1.0 / width, right=1 - 0.9 / width, bottom=0.75 / height,
                        top=1 - 0.75 / height, wspace=wspace, hspace=hspace)


def _reduction(rows: int, cols: int, pixels: int = 800) -> int:
    """Block size that brings a detector image to at most `pixels` a side: a picture shows
    no more, and matplotlib's resampling of a whole 2M image is slow."""
    return max(1, math.ceil(max(rows, cols) / pixels))


def _block_extent(rows: int, cols: int, s: int) -> tuple:
    """imshow's extent, in detector pixels, of an image reduced by blocks of s (_blocks)."""
    return (-0.5, s * math.ceil(cols / s) - 0.5, -0.5, s * math.ceil(rows / s) - 0.5)


# --------------------------------------------------------------------------------------
# What every detector picture and every log colour bar share
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


def _log_colorbar(fig, mappable, **colorbar_args):
    """fig.colorbar of a LogNorm mappable with at least 3 labelled ticks over any range
    (matplotlib labels only decades, often a single one): decades where 3 fit, else steps of
    1-2-5, else of 1-9, else linear steps.  Labels are plain numbers: 10^n labels go
    through mathtext, whose parser costs a third of a second per picture."""
    from matplotlib.ticker import LogFormatter, LogLocator, MaxNLocator, NullFormatter

    low, high = mappable.norm.vmin, mappable.norm.vmax
    for locator in (LogLocator(), LogLocator(subs=(1, 2, 5)), LogLocator(subs=range(1, 10)),
                    MaxNLocator()):
        ticks = locator.tick_values(low, high)
        if np.count_nonzero((ticks >= low) & (ticks <= high)) >= 3:
            break
    # (inf, inf): every tick labelled, not only decades
    colorbar = fig.colorbar(mappable, ticks=locator,
                            format=LogFormatter(minor_thresholds=(np.inf, np.inf)),
                            **colorbar_args)
    colorbar.minorformatter = NullFormatter()
    return colorbar


# --------------------------------------------------------------------------------------
# Calibration (calibrate_powder)
# --------------------------------------------------------------------------------------
def plot_calibration(path, result, params, image,
                     pattern, *, title: str) -> None:
    from matplotlib.colors import LogNorm

    g = result.geometry
    ai = g.to_pyfai()
    rings_deg = np.degrees(ring_two_theta(params.calibrant, g.wavelength))
    fig = _new_figure((14, 6.5))
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
        _log_colorbar(fig, im, ax=ax0, fraction=0.046, pad=0.02, label="counts")
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
    ax1.set_title(f"{params.calibrant} rings (red) at {g.wavelength:.5f} A")
    ax1.set_ylim(bottom=0, top=1.05 * ymax)
    res = (f"rms {result.rms_px:.3f} px, {result.n_points} points on {len(result.rings)} rings"
           if result.rms_px is not None else "imported PONI")
    fig.suptitle(f"{title}\n{describe(g)}; {res}", fontsize=10)
    _margins(fig, wspace=0.25)
    _save_tight(fig, path, 90)


# --------------------------------------------------------------------------------------
# Peak search (find_peaks)
# --------------------------------------------------------------------------------------
def plot_peaks(result, title: str, path, preview: str = "") -> None:
    p = result.peaks
    fig = _new_figure((16, 5.2))
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
    fig.suptitle(_with_preview(title, preview))
    _margins(fig, wspace=0.4)  # (room for the colour bar's label)
    _save_tight(fig, path, 90)


# --------------------------------------------------------------------------------------
# Orientation (index_parent, refine_temperature)
# --------------------------------------------------------------------------------------
def plot_residuals(result, title: str, path, preview: str = "") -> None:
    fig = _new_figure((16, 5))
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
    fig.suptitle(_with_preview(f"{title}: {result.n_used} peaks, {result.fraction_indexed:.1%} "
                               "indexed; cell " + " ".join(f"{v:.5f}" for v in c.parameters),
                               preview))
    _margins(fig, wspace=0.45)  # (room for the colour bar's label)
    _save_tight(fig, path, 90)


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
    from matplotlib.colors import LogNorm

    image, extent = _reduced_image(max_projection)
    if np.isfinite(image).any():
        shown = _detector_image(ax, image, extent, cmap="gray_r", norm=LogNorm())
        _log_colorbar(fig, shown, ax=ax, fraction=0.046, pad=0.02,
                      label="maximum over frames (counts)")


def plot_mask(result, title: str, path, max_ellipses: int = 3000, preview: str = "") -> None:
    """Left: the pixel mask (colours by reason) over the scan's maximum projection (log),
    with the Bragg regions projected on the detector as ellipses (when there are at most
    max_ellipses of them); middle: the Bragg mask seen along the frames (in how many frames
    each pixel is inside a region); right: the usable pixels inside a region per frame."""
    from matplotlib.collections import EllipseCollection
    from matplotlib.colors import LogNorm
    from matplotlib.patches import Patch

    from ..algorithms.masking import (DEAD, FOUND, GAP, HOT, PREDICTED, REASONS,  # numba: only here
                                      USER)

    REASON_COLOURS = {GAP: (0.55, 0.55, 0.55), DEAD: (0.1, 0.3, 1.0), HOT: (1.0, 0.1, 0.1),
                      USER: (1.0, 0.7, 0.0)}
    m, st = result.mask, result.statistics
    rows, cols = m.shape
    fig = _new_figure((19, 6.4))
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
        _log_colorbar(fig, im, ax=ax[1], fraction=0.046, pad=0.02, label="frames")
        _detector_image(ax[1], np.where((reasons & GAP)[..., None] != 0, rgba, 0), extent)
        ax[1].set_title("Bragg mask: frames in which a pixel is masked")
    _detector_axes(ax[1], m.shape)
    usable = max(int(np.count_nonzero(result.reasons == 0)), 1)
    if result.masked_per_frame is not None and len(result.masked_per_frame):
        ax[2].plot(np.arange(m.nframes) + 0.5, 100 * result.masked_per_frame / usable, lw=0.8)
    ax[2].set(xlabel="frame", ylabel="usable pixels inside a Bragg region (%)",
              title="Bragg mask per frame")
    fig.suptitle(_with_preview(
        f"{title}: gaps {st['pixels_gap']}, hot {st['pixels_hot']}, dead {st['pixels_dead']}, "
        f"user {st['pixels_user']} pixels; regions {st['regions_found']} found, "
        f"{st['regions_predicted']} predicted: {100 * st['bragg_fraction']:.3f}% of the usable "
        f"pixel-frames; hkl_radius {m.hkl_radius:g} r.l.u. (applied by the transform)", preview))
    _margins(fig, wspace=0.3)
    _save_tight(fig, path, 80)


# --------------------------------------------------------------------------------------
# Slices of volumes (sum_chunks, merge_entries, symmetrize, temperature_series)
# --------------------------------------------------------------------------------------
def _cmap():
    import matplotlib

    cmap = matplotlib.colormaps["viridis"]
    # grey: unmeasured; zero or negative intensity: the lowest colour, not grey
    return cmap.with_extremes(bad="0.6", under=cmap(0.0))


def draw_slice(fig, spec, sl, cell, norm, title: str | None = None):
    """Draw a Slice in the subplot position spec (e.g. (2, 2, 1)) of fig, to scale in
    Cartesian reciprocal space with grid lines along its r.l.u. axes; returns (ax, image)."""
    from matplotlib.transforms import Affine2D
    from mpl_toolkits.axisartist import Axes as AAAxes
    from mpl_toolkits.axisartist.grid_finder import FormatterPrettyPrint, MaxNLocator
    from mpl_toolkits.axisartist.grid_helper_curvelinear import GridHelperCurveLinear

    M = plane_matrix(cell, sl.u, sl.v)
    aff = Affine2D(np.array([[M[0, 0], M[0, 1], 0.0], [M[1, 0], M[1, 1], 0.0], [0, 0, 1]]))
    # tick labels as plain text: axisartist's default ones go through mathtext, whose parser
    # is a noticeable part of each drawing job
    helper = GridHelperCurveLinear(aff, grid_locator1=MaxNLocator(nbins=8, steps=[1, 2, 2.5, 5, 10]),
                                   grid_locator2=MaxNLocator(nbins=8, steps=[1, 2, 2.5, 5, 10]),
                                   tick_formatter1=FormatterPrettyPrint(useMathText=False),
                                   tick_formatter2=FormatterPrettyPrint(useMathText=False))
    ax = fig.add_subplot(*spec, axes_class=AAAxes, grid_helper=helper)
    data = np.where(np.isfinite(sl.data), np.maximum(sl.data, norm.vmin * 0.5), np.nan)
    im = ax.imshow(np.ma.masked_invalid(data), origin="lower", cmap=_cmap(), norm=norm,
                   extent=(*sl.u_edges, *sl.v_edges), interpolation="nearest",
                   transform=aff + ax.transData)
    corners = np.array([[sl.u_edges[a], sl.v_edges[b]] for a in (0, 1) for b in (0, 1)]) @ M.T
    ax.set_xlim(corners[:, 0].min(), corners[:, 0].max())
    ax.set_ylim(corners[:, 1].min(), corners[:, 1].max())
    ax.set_aspect("equal")
    ax.set_facecolor("white")
    ax.grid(True, color="w", lw=0.3, alpha=0.5)
    ax.axis["bottom"].label.set_text(f"{sl.u.upper()} (r.l.u.)")
    ax.axis["left"].label.set_text(f"{sl.v.upper()} (r.l.u.)")
    for side in ("top", "right"):
        ax.axis[side].major_ticklabels.set_visible(False)
    for side in ("bottom", "left"):
        ax.axis[side].major_ticklabels.set_fontsize(8)
    ax.set_title(title if title is not None else f"{sl.describe()}: {sl.label}", fontsize=10)
    return ax, im


def _angle_note(cell, u, v) -> str:
    if cell is None:
        return "no cell: orthogonal axes, 1 r.l.u. equal lengths"
    M = plane_matrix(cell, u, v)
    ang = math.degrees(math.atan2(M[1, 1], M[0, 1]))
    return f"{u}* ^ {v}* = {ang:.1f} deg, to scale"


def plot_slices(volume_or_path, slices, path, title: str, cell=None, log=None,
                preview: str = "") -> list[str]:
    """PNG of the slices (list of {h|k|l: value}) of a Volume, KeptPlanes or volume file
    (opened once for all of them).  Slices outside the grid are left out with a warning;
    returns the labels of the slices drawn."""
    from matplotlib.colors import LogNorm

    cell = cell_of(volume_or_path, cell)
    drawn = []
    with contextlib.ExitStack() as stack:
        source = volume_or_path
        if not isinstance(source, (Volume, KeptPlanes)):  # a file: opened once for every slice
            source = stack.enter_context(VolumeReader(source))
        for spec in slices:
            try:
                drawn.append(read_slice(source, spec))
            except GridError as exc:
                if log:
                    log.warning("slice %s left out of %s: %s", spec, Path(path).name, exc)
    n = max(len(drawn), 1)
    ncol = min(n, 2) if n <= 4 else 3
    nrow = math.ceil(n / ncol)
    fig = _new_figure((6.2 * ncol, 5.4 * nrow))
    for i, sl in enumerate(drawn):
        vmin, vmax = color_limits([sl.data])
        norm = LogNorm(vmin=vmin, vmax=vmax)
        measured = np.isfinite(sl.data)
        ax, im = draw_slice(fig, (nrow, ncol, i + 1), sl, cell, norm,
                            f"{sl.describe()}: {sl.label}\n{measured.mean():.0%} measured; "
                            f"{_angle_note(cell, sl.u, sl.v)}")
        _log_colorbar(fig, im, ax=ax, extend="both", shrink=0.85, label="intensity (log)")
    if not drawn:
        ax = fig.add_subplot(1, 1, 1)
        ax.text(0.5, 0.5, "no slice inside the grid:\n" + ", ".join(str(s) for s in slices),
                ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
    fig.suptitle(_with_preview(title, preview))
    fig.subplots_adjust(wspace=0.35, hspace=0.35)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _save_tight(fig, path, 110)
    return [sl.label for sl in drawn]


def plot_series(volumes, spec, png, title: str, cell=None, log=None,
                preview: str = "") -> list[str]:
    """PNG of the slice `spec` ({h|k|l: value}) of every volume file, side by side on one
    colour scale; volumes: [(temperature label, path)] in the order drawn.  Returns the
    labels drawn."""
    from matplotlib.colors import LogNorm

    panels, kinds = [], []
    for label, p in volumes:
        head = read_volume_header(p)
        try:
            sl = read_slice(p, spec)
        except GridError as exc:
            if log:
                log.warning("%s: slice %s left out: %s", p, spec, exc)
            sl = None
        panels.append((label, p, sl))
        if head.kind not in kinds:
            kinds.append(head.kind)
    drawn = [sl.data for _, _, sl in panels if sl is not None]
    vmin, vmax = color_limits(drawn)
    norm = LogNorm(vmin=vmin, vmax=vmax)
    n = max(len(panels), 1)
    ncol = min(n, 4)
    nrow = math.ceil(n / ncol)
    fig = _new_figure((5.0 * ncol + 1.2, 4.8 * nrow))
    im, axes = None, []
    for i, (label, p, sl) in enumerate(panels):
        if sl is None:
            ax = fig.add_subplot(nrow, ncol, i + 1)
            ax.text(0.5, 0.5, f"{label}\n{spec} is outside the grid", ha="center",
                    va="center", transform=ax.transAxes)
            ax.set_axis_off()
            continue
        ax, im = draw_slice(fig, (nrow, ncol, i + 1), sl, cell, norm,
                            f"{label.replace('K', ' K') if label.endswith('K') else label}"
                            f" ({np.isfinite(sl.data).mean():.0%} measured)")
        axes.append(ax)
    if im is not None:
        _log_colorbar(fig, im, ax=axes, extend="both", shrink=0.8,
                      label="intensity (log, common scale)")
    first = next((sl for _, _, sl in panels if sl is not None), None)
    fig.suptitle(_with_preview(f"{title} {'/'.join(kinds)}: "
                               f"{first.describe() + ', ' + first.label if first else spec}",
                               preview))
    png = Path(png)
    png.parent.mkdir(parents=True, exist_ok=True)
    _save_tight(fig, png, 100)
    return [label for label, _, sl in panels if sl is not None]


# --------------------------------------------------------------------------------------
# PDFs (total_pdf, delta_pdf, pdf_temperature_series)
# --------------------------------------------------------------------------------------
def _real_plane_matrix(cell, u: str, v: str) -> np.ndarray:
    """2x2 M with (x, y) = M @ (u, v) in Angstrom: lattice axis u along x, v at their angle."""
    lengths = dict(zip("xyz", cell.parameters[:3]))
    angle = {frozenset("yz"): cell.parameters[3], frozenset("xz"): cell.parameters[4],
             frozenset("xy"): cell.parameters[5]}[frozenset((u, v))]
    c, s = math.cos(math.radians(angle)), math.sin(math.radians(angle))
    return np.array([[lengths[u], lengths[v] * c], [0.0, lengths[v] * s]])


def symmetric_limit(arrays, exclude_origin=None, percentile: float = 99.5) -> float:
    """A colour limit symmetric about 0: the percentile of |values| (the origin peak, which
    dwarfs every pair correlation of a PDF, is left out through exclude_origin masks)."""
    vals = []
    for i, a in enumerate(arrays):
        a = np.abs(a[np.isfinite(a)] if exclude_origin is None
                   else a[np.isfinite(a) & ~exclude_origin[i]])
        vals.append(a.ravel())
    vals = np.concatenate(vals) if vals else np.empty(0)
    return float(np.percentile(vals, percentile)) if vals.size and np.any(vals > 0) else 1.0


def _draw_pdf_plane(fig, spec, plane, uu, vv, u, v, cell, vmax, title):
    """A PDF plane [v, u] (uu, vv: its voxel centres, lattice units) in the subplot position
    spec, to scale in Angstrom: an image mapped by the plane's matrix (skewed for
    non-orthogonal cells), each voxel a cell of its colour (a mesh of quads drew the same
    many times slower)."""
    from matplotlib.transforms import Affine2D

    M = _real_plane_matrix(cell, u, v)
    du, dv = (uu[1] - uu[0]) / 2, (vv[1] - vv[0]) / 2
    ue, ve = (uu[0] - du, uu[-1] + du), (vv[0] - dv, vv[-1] + dv)
    ax = fig.add_subplot(*spec)
    aff = Affine2D(np.array([[M[0, 0], M[0, 1], 0.0], [M[1, 0], M[1, 1], 0.0], [0, 0, 1]]))
    im = ax.imshow(plane, origin="lower", cmap="RdBu_r", vmin=-vmax, vmax=vmax,
                   extent=(*ue, *ve), interpolation="nearest", transform=aff + ax.transData)
    corners = np.array([[a, b] for a in ue for b in ve]) @ M.T
    ax.set_xlim(corners[:, 0].min(), corners[:, 0].max())
    ax.set_ylim(corners[:, 1].min(), corners[:, 1].max())
    ax.set_aspect("equal")
    ax.set_xlabel(f"{u} along {'abc'['xyz'.index(u)]} (Angstrom)")
    ax.set_ylabel(f"{v} direction (Angstrom)")
    ax.set_title(title, fontsize=10)
    return ax, im


def _other_axes(axis: str) -> tuple[str, str]:
    return tuple(a for a in "xyz" if a != axis)


def _origin_mask(uu, vv, u, v, w_value, cell, radius_angstrom=1.0):
    M = _real_plane_matrix(cell, u, v)
    U, V = np.meshgrid(uu, vv)
    X, Y = M[0, 0] * U + M[0, 1] * V, M[1, 1] * V
    w_len = cell.parameters["xyz".index(next(a for a in "xyz" if a not in (u, v)))]
    return X * X + Y * Y + (w_value * w_len) ** 2 < radius_angstrom ** 2


def plot_pdf(pdf, slices, path, title: str, log=None, preview: str = "") -> list[str]:
    """PNG of the planes (list of {x|y|z: value}, lattice units) of a PDF, to scale in
    Angstrom (skewed for non-orthogonal cells), each on a colour scale symmetric about 0
    (red positive, blue negative; the origin peak saturates).  Returns the planes drawn."""
    planes = []
    for spec in slices:
        (axis, value), = dict(spec).items()
        try:
            planes.append((axis, *pdf.plane(axis, float(value))))
        except ValueError as exc:
            if log:
                log.warning("plane %s left out of %s: %s", spec, Path(path).name, exc)
    n = max(len(planes), 1)
    ncol = min(n, 2)
    nrow = math.ceil(n / ncol)
    fig = _new_figure((6.4 * ncol, 5.6 * nrow))
    drawn = []
    for i, (axis, plane, uu, vv, w) in enumerate(planes):
        u, v = _other_axes(axis)
        vmax = symmetric_limit([plane], [_origin_mask(uu, vv, u, v, w, pdf.cell)])
        ax, im = _draw_pdf_plane(fig, (nrow, ncol, i + 1), plane, uu, vv, u, v, pdf.cell, vmax,
                                 f"{axis} = {w:g}")
        fig.colorbar(im, ax=ax, extend="both", shrink=0.85,
                     label="DeltaPDF" if pdf.kind == "pdf" else "total PDF")
        drawn.append(f"{axis}={w:g}")
    if not planes:
        ax = fig.add_subplot(1, 1, 1)
        ax.text(0.5, 0.5, "no plane inside the PDF:\n" + ", ".join(str(s) for s in slices),
                ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
    for warning in pdf.notes.get("warnings", ()):  # (the log and the notes say them too)
        title += "\n" + textwrap.fill("WARNING: " + warning, 110)
    fig.suptitle(_with_preview(title, preview), fontsize=11)
    fig.subplots_adjust(wspace=0.3, hspace=0.35)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _save_tight(fig, path, 100)
    return drawn


def plot_pdf_series(pdf_files, spec, png, title: str, log=None,
                    preview: str = "") -> list[str]:
    """PNG of the plane `spec` ({x|y|z: value}) of the PDF of every temperature, side by side
    on one colour scale symmetric about 0; pdf_files: [(temperature label, pdf.nxs)], each
    file's plane read alone (files.pdf.read_pdf_plane)."""
    (axis, value), = dict(spec).items()
    u, v = _other_axes(axis)
    panels = []
    for label, path in pdf_files:
        try:
            cell, plane = read_pdf_plane(path, axis, float(value))
            panels.append((label, cell, *plane))
        except ValueError as exc:
            if log:
                log.warning("%s: plane %s left out: %s", label, spec, exc)
            panels.append((label, None, None, None, None, None))
    shown = [p for p in panels if p[2] is not None]
    vmax = symmetric_limit([p[2] for p in shown],
                           [_origin_mask(p[3], p[4], u, v, p[5], p[1]) for p in shown])
    n = max(len(panels), 1)
    ncol = min(n, 4)
    nrow = math.ceil(n / ncol)
    fig = _new_figure((5.0 * ncol + 1.2, 4.8 * nrow))
    axes, im = [], None
    for i, (label, cell, plane, uu, vv, w) in enumerate(panels):
        if plane is None:
            ax = fig.add_subplot(nrow, ncol, i + 1)
            ax.text(0.5, 0.5, f"{label}\n{spec} is outside the PDF", ha="center", va="center",
                    transform=ax.transAxes)
            ax.set_axis_off()
            continue
        ax, im = _draw_pdf_plane(fig, (nrow, ncol, i + 1), plane, uu, vv, u, v, cell, vmax,
                                 label.replace("K", " K") if label.endswith("K") else label)
        axes.append(ax)
    if im is not None:
        fig.colorbar(im, ax=axes, extend="both", shrink=0.8, label="DeltaPDF (common scale)")
    fig.suptitle(_with_preview(f"{title}: {axis} = {value:g}", preview))
    png = Path(png)
    png.parent.mkdir(parents=True, exist_ok=True)
    _save_tight(fig, png, 90)
    return [p[0] for p in shown]
