"""The picture of a cut (hklflow cut): a line as intensity with sigma against Q along it
(1/A below, r.l.u. of its direction above); a plane drawn to scale in 1/A, its skewed mesh
(hklflow.algorithms.cuts.Cut.cartesian_edges) coloured on a log scale, with lines of whole
r.l.u. along both directions.  Unmeasured points are grey (plane) or grey bands (line), never
zero."""
from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.colors import LogNorm

from ..algorithms.cuts import Cut, directions_label, point_label
from .figure import log_colorbar, new_figure, save_tight, volume_cmap
from .slices import color_limits


def _runs(mask: np.ndarray):
    """(first, last) index of each run of True."""
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1) - 1)


def plot_cut(cut: Cut, path, title: str) -> None:
    """The PNG of a line or plane cut."""
    inten, errors = cut.intensity(), cut.errors()
    measured = np.isfinite(inten)
    method = cut.method
    if cut.ndim == 1:
        fig = new_figure((7.5, 4.6))
        ax = fig.add_subplot(1, 1, 1)
        (q,) = cut.q_coords
        step = q[1] - q[0] if len(q) > 1 else 1.0
        for a, b in _runs(~measured):
            ax.axvspan(q[a] - step / 2, q[b] + step / 2, color="0.85", lw=0)
        ax.errorbar(q, inten, yerr=errors, fmt="-", lw=0.8, elinewidth=0.6, color="C0",
                    ecolor="C1")
        positive = inten[measured & (inten > 0)]
        if positive.size and positive.max() > 30 * max(positive.min(), 1e-30):
            ax.set_yscale("log")
        d = cut.directions[0]
        ax.set_xlabel(f"Q along {directions_label(d)} from {point_label(cut.origin)} "
                      "(1/A, no 2 pi)")
        ax.set_ylabel("intensity" + (" (bars: sigma)" if errors is not None else ""))
        length = cut.lengths[0]
        top = ax.secondary_xaxis("top", functions=(lambda x: x / length, lambda s: s * length))
        top.set_xlabel(f"r.l.u. along {directions_label(d)}")
        ax.set_title(f"{title}\n{method}; {measured.mean():.0%} measured (grey: not measured)",
                     fontsize=10, pad=30)
    else:
        X, Y = cut.cartesian_edges()
        # the figure shaped as the plane (equal scales), so that the colour bar fits it
        aspect = np.ptp(Y) / max(np.ptp(X), 1e-30)
        fig = new_figure((8.0, min(9.0, max(2.5, 6.4 * aspect)) + 1.4))
        ax = fig.add_subplot(1, 1, 1)
        vmin, vmax = color_limits([inten])
        norm = LogNorm(vmin=vmin, vmax=vmax)
        shown = np.where(measured, np.maximum(inten, vmin * 0.5), np.nan)
        mesh = ax.pcolormesh(X, Y, np.ma.masked_invalid(shown), cmap=volume_cmap(), norm=norm,
                             shading="flat")
        _rlu_lines(ax, cut)
        ax.set_aspect("equal")
        ax.set_facecolor("white")
        u, v = (directions_label(d) for d in cut.directions)
        ax.set_xlabel(f"Q along {u} (1/A, no 2 pi)")
        ax.set_ylabel(f"Q in the plane, normal to {u} (1/A)")
        ax.set_title(f"{title}\n{u} ^ {v} = {cut.angle:.1f} deg, to scale; white lines: whole "
                     f"r.l.u. of both\n{method}; {measured.mean():.0%} measured (grey: not "
                     "measured)", fontsize=9)
        # a colour bar as tall as the plane, however flat (equal scales shrink the axes)
        log_colorbar(fig, mesh, cax=ax.inset_axes([1.03, 0.0, 0.035, 1.0]), extend="both",
                     label="intensity (log)")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_tight(fig, path, 110)


def _rlu_lines(ax, cut: Cut) -> None:
    """Lines of whole s and t (the cut's r.l.u.) over its extent, labelled where they start."""
    (s0, s1), (t0, t1) = ((c[0], c[-1]) for c in cut.coords)
    a, b = cut.lengths
    cos, sin = np.cos(np.radians(cut.angle)), np.sin(np.radians(cut.angle))

    def xy(s, t):
        return s * a + t * b * cos, t * b * sin

    for s in range(int(np.ceil(s0)), int(np.floor(s1)) + 1):
        ax.plot(*zip(xy(s, t0), xy(s, t1)), color="w", lw=0.4, alpha=0.6)
        ax.annotate(f"{s}", xy(s, t0), fontsize=8, ha="center", va="top", color="0.15")
    for t in range(int(np.ceil(t0)), int(np.floor(t1)) + 1):
        ax.plot(*zip(xy(s0, t), xy(s1, t)), color="w", lw=0.4, alpha=0.6)
        ax.annotate(f"{t}", xy(s0, t), fontsize=8, ha="right", va="center", color="0.15")


def plot_cut_series(records, labels, path, title: str) -> None:
    """One picture of a line cut at several temperatures (files.cut.CutRecord each, in the
    order of labels): intensity against Q along the line, a colour per temperature, sigma as
    a band; unmeasured points are gaps."""
    fig = new_figure((8.0, 5.0))
    ax = fig.add_subplot(1, 1, 1)
    # (viridis without its palest yellow, which a white background hides)
    colours = matplotlib.colormaps["viridis"](np.linspace(0, 0.85, max(len(records), 2)))
    logscale = False
    for record, label, colour in zip(records, labels, colours):
        if len(record.directions) != 1:
            raise ValueError(f"{label}: a plane's cut has no series picture (lines only)")
        (q,) = record.q_coords
        inten = record.intensity
        ax.plot(q, inten, "-", lw=1.0, color=colour, label=label)
        if record.errors is not None:
            ax.fill_between(q, inten - record.errors, inten + record.errors, color=colour,
                            alpha=0.25, lw=0)
        positive = inten[np.isfinite(inten) & (inten > 0)]
        logscale |= bool(positive.size and positive.max() > 30 * max(positive.min(), 1e-30))
    if logscale:
        ax.set_yscale("log")
    first = records[0]
    d = directions_label(first.directions[0])
    ax.set_xlabel(f"Q along {d} from {point_label(first.origin)} (1/A, no 2 pi)")
    ax.set_ylabel("intensity (band: sigma)")
    length = first.lengths[0]
    top = ax.secondary_xaxis("top", functions=(lambda x: x / length, lambda s: s * length))
    top.set_xlabel(f"r.l.u. along {d}")
    ax.legend(fontsize=8, title="temperature", title_fontsize=8)
    ax.set_title(f"{title}\n{first.method}; gaps: not measured", fontsize=10, pad=30)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_tight(fig, path, 110)
