"""Pictures of volumes: slices of a volume (sum_chunks, merge_entries, symmetrize), one
slice at every temperature (temperature_series), drawn to scale in Cartesian reciprocal
space; and the uncertainty statistics of a merged volume against |Q| (merge_entries)."""
from __future__ import annotations

import contextlib
import math
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from matplotlib.colors import LogNorm
from matplotlib.transforms import Affine2D
from mpl_toolkits.axisartist import Axes as AAAxes
from mpl_toolkits.axisartist.grid_finder import FormatterPrettyPrint, MaxNLocator
from mpl_toolkits.axisartist.grid_helper_curvelinear import GridHelperCurveLinear

from ..algorithms.statistics import MEANING
from ..base.errors import GridError
from ..files.volume import Volume, VolumeReader, read_volume_header
from ..files.volume_planes import KeptPlanes
from .figure import log_colorbar, margins, new_figure, save_tight, volume_cmap, with_preview
from .slices import cell_of, color_limits, plane_matrix, read_slice

if TYPE_CHECKING:  # (the statistics load numba; a picture needs only their fields)
    from ..algorithms.statistics.shells import VolumeStatistics


# --------------------------------------------------------------------------------------
# Slices (sum_chunks, merge_entries, symmetrize, temperature_series)
# --------------------------------------------------------------------------------------
def draw_slice(fig, spec, sl, cell, norm, title: str | None = None):
    """Draw a Slice in the subplot position spec (e.g. (2, 2, 1)) of fig, to scale in
    Cartesian reciprocal space with grid lines along its r.l.u. axes; returns (ax, image)."""
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
    im = ax.imshow(np.ma.masked_invalid(data), origin="lower", cmap=volume_cmap(), norm=norm,
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
    fig = new_figure((6.2 * ncol, 5.4 * nrow))
    for i, sl in enumerate(drawn):
        vmin, vmax = color_limits([sl.data])
        norm = LogNorm(vmin=vmin, vmax=vmax)
        measured = np.isfinite(sl.data)
        ax, im = draw_slice(fig, (nrow, ncol, i + 1), sl, cell, norm,
                            f"{sl.describe()}: {sl.label}\n{measured.mean():.0%} measured; "
                            f"{_angle_note(cell, sl.u, sl.v)}")
        log_colorbar(fig, im, ax=ax, extend="both", shrink=0.85, label="intensity (log)")
    if not drawn:
        ax = fig.add_subplot(1, 1, 1)
        ax.text(0.5, 0.5, "no slice inside the grid:\n" + ", ".join(str(s) for s in slices),
                ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
    fig.suptitle(with_preview(title, preview))
    fig.subplots_adjust(wspace=0.35, hspace=0.35)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_tight(fig, path, 110)
    return [sl.label for sl in drawn]


def plot_series(volumes, spec, png, title: str, cell=None, log=None,
                preview: str = "") -> list[str]:
    """PNG of the slice `spec` ({h|k|l: value}) of every volume file, side by side on one
    colour scale; volumes: [(temperature label, path)] in the order drawn.  Returns the
    labels drawn."""
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
    fig = new_figure((5.0 * ncol + 1.2, 4.8 * nrow))
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
        log_colorbar(fig, im, ax=axes, extend="both", shrink=0.8,
                      label="intensity (log, common scale)")
    first = next((sl for _, _, sl in panels if sl is not None), None)
    fig.suptitle(with_preview(f"{title} {'/'.join(kinds)}: "
                               f"{first.describe() + ', ' + first.label if first else spec}",
                               preview))
    png = Path(png)
    png.parent.mkdir(parents=True, exist_ok=True)
    save_tight(fig, png, 100)
    return [label for label, _, sl in panels if sl is not None]


# --------------------------------------------------------------------------------------
# The statistics of a merged volume (merge_entries)
# --------------------------------------------------------------------------------------
def plot_statistics(stats: VolumeStatistics, path, title: str, preview: str = "") -> None:
    """PNG of I/sigma, chi^2/nu (the line at 1, the flag thresholds, the flag), CC1/2 and
    the voxel counts against |Q| (shell centres; horizontal bars span each shell)."""
    rows = stats.shells
    q = np.array([(r.q_min + r.q_max) / 2 for r in rows])
    half = np.array([(r.q_max - r.q_min) / 2 for r in rows])

    def values(name):
        return np.array([np.nan if getattr(r, name) is None else getattr(r, name) for r in rows],
                        float)

    fig = new_figure((15, 9))
    ax = fig.subplots(2, 2).ravel()
    ax[0].errorbar(q, values("i_over_sigma"), xerr=half, fmt="o-", ms=4, color="tab:blue")
    ax[0].set(title=f"mean I/σ (overall {_txt(stats.overall.i_over_sigma, '.2f')})",
              xlabel="|Q| (1/Å)", ylabel="mean I/σ")
    chi = values("chi2_nu")
    ax[1].axhline(1, color="k", lw=0.8)
    ax[1].axhspan(1 / stats.flag_shell, stats.flag_shell, color="tab:green", alpha=0.08)
    for i, t in enumerate((stats.flag_overall, 1 / stats.flag_overall)):
        ax[1].axhline(t, color="tab:orange", lw=0.8, ls="--",
                      label=f"overall flag {1 / stats.flag_overall:.2g} / {stats.flag_overall:g}"
                      if i == 0 else None)
    for i, t in enumerate((stats.flag_shell, 1 / stats.flag_shell)):
        ax[1].axhline(t, color="tab:red", lw=0.8, ls=":",
                      label=f"shell flag (ν ≥ {stats.flag_min_nu}) {1 / stats.flag_shell:.2g} / "
                            f"{stats.flag_shell:g}" if i == 0 else None)
    ax[1].errorbar(q, chi, xerr=half, fmt="o-", ms=4, color="tab:red" if stats.flag else "tab:blue")
    if stats.overall.chi2_nu is not None:
        ax[1].axhline(stats.overall.chi2_nu, color="tab:purple", lw=1.2,
                      label=f"overall {stats.overall.chi2_nu:.3f}")
    ax[1].legend(fontsize=8, loc="upper right")
    finite = chi[np.isfinite(chi)]
    top = max(2.5, float(finite.max()) * 1.5) if finite.size else 2.5  # room for the legend
    ax[1].set_ylim(0, top)
    sampled = ("" if stats.orbit_sample_stride == 1 else
               f"; orbits of a stride-{stats.orbit_sample_stride} sub-lattice")
    ax[1].set(title=f"χ²/ν of symmetry equivalents ({stats.laue_group}{sampled}): "
                    f"overall {_txt(stats.overall.chi2_nu, '.3f')}",
              xlabel="|Q| (1/Å)", ylabel="χ²/ν")
    if stats.flag:
        low = (stats.overall.chi2_nu or 1.0) < 1  # the text where the points are not
        ax[1].text(0.02, 0.97 if low else 0.03, _wrap("FLAG: " + stats.flag_reason, 80),
                   transform=ax[1].transAxes, va="top" if low else "bottom", ha="left",
                   fontsize=8, color="tab:red",
                   bbox={"facecolor": "white", "alpha": 0.85, "edgecolor": "tab:red"})
    if stats.has_halves:
        ax[2].errorbar(q, values("cc_half"), xerr=half, fmt="o-", ms=4, color="tab:blue")
        ax[2].axhline(0, color="k", lw=0.5)
        ax[2].set_ylim(min(-0.05, np.nanmin(values("cc_half"), initial=0) - 0.05), 1.05)
        ax[2].set(title=f"half-dataset CC½ (overall {_txt(stats.overall.cc_half, '.4f')})",
                  xlabel="|Q| (1/Å)", ylabel="CC½")
    else:
        ax[2].text(0.5, 0.5, "no half datasets given", ha="center", va="center",
                   transform=ax[2].transAxes)
        ax[2].set_axis_off()
    drawn = False
    for name, label, style in (("voxels", "grid voxels", "s:"), ("measured", "measured", "o-"),
                               ("observations", "in orbits of ≥ 2", "^-"),
                               ("zero_sigma", "σ = 0", "x--"), ("cc_pairs", "in both halves", "v-.")):
        v = values(name)
        if np.any(v > 0):
            ax[3].plot(q, np.where(v > 0, v, np.nan), style, ms=4, label=label)
            drawn = True
    if drawn:
        ax[3].set_yscale("log")
        ax[3].legend(fontsize=8)
    ax[3].set(title="voxels per shell" + (" (* too few)" if any(r.too_few for r in rows) else ""),
              xlabel="|Q| (1/Å)", ylabel="voxels")
    for r in rows:
        if r.too_few:
            ax[3].annotate("*", ((r.q_min + r.q_max) / 2, max(r.measured, 1)), color="tab:red")
    fig.suptitle(with_preview(f"{title}: uncertainty statistics in {len(rows)} shells of |Q|",
                               preview))
    fig.text(0.5, 0.005, "\n".join(_wrap(MEANING[k], 150) for k in ("chi2_nu", "cc_half")),
             ha="center", va="bottom", fontsize=8, color="0.25")
    margins(fig, wspace=0.25, hspace=0.35)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_tight(fig, path, 90)


def _txt(v, spec) -> str:
    return "-" if v is None else format(v, spec)


def _wrap(text: str, width: int) -> str:
    return "\n".join(textwrap.wrap(text, width))
