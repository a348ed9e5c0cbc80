"""What every picture shares: a figure outside pyplot (Agg, no screen), the PNG written from
one draw, the margins, a preview's label in the title, log colour bars with at least three
labelled ticks, the colour map of intensities.  Only the steps that draw import the
pictures, and with them matplotlib (without pyplot)."""
from __future__ import annotations

import math
import textwrap

import matplotlib
import matplotlib.image
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import LogFormatter, LogLocator, MaxNLocator, NullFormatter

from ..base.atomic import atomic_path


def new_figure(figsize):
    """A matplotlib figure of its own, outside pyplot: no screen, nothing to close, and no
    pyplot import (a part of every drawing job's start)."""
    return Figure(figsize=figsize)


# zlib level of the PNGs: 1 encodes a picture in about half the time of Pillow's default 6,
# and the files are hardly larger (smaller for some)
PNG = {"compress_level": 1}


def save_tight(fig, path, dpi: float, pad_inches: float = 0.1) -> None:
    """fig as a PNG at dpi cropped to what is drawn, with a pad_inches margin: what
    savefig(bbox_inches="tight") writes, from one draw instead of two (savefig draws the
    whole figure once to find the box and again inside it; here the image drawn once is
    cut to the box, rounded out to whole pixels).  When
    something is drawn beyond the figure's edges, savefig, which grows the canvas for it."""
    fig.set_dpi(dpi)
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    box = fig.get_tightbbox(canvas.get_renderer()).padded(pad_inches)  # inches
    width, height = canvas.get_width_height()
    x0, x1 = math.floor(box.x0 * dpi), math.ceil(box.x1 * dpi)
    y0, y1 = math.floor(box.y0 * dpi), math.ceil(box.y1 * dpi)
    with atomic_path(path) as tmp:  # whole or not at all, as every output
        if x0 < 0 or y0 < 0 or x1 > width or y1 > height:
            fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight", pad_inches=pad_inches,
                        pil_kwargs=PNG)
            return
        image = np.asarray(canvas.buffer_rgba())[height - y1:height - y0, x0:x1]
        matplotlib.image.imsave(tmp, image, format="png", dpi=dpi, pil_kwargs=PNG)


def plot_left_out(path, title: str, why: str, preview: str = "") -> None:
    """A picture that stands where one was left out: its title and why (e.g. a preview's
    statistics, which only the final results have)."""
    fig = new_figure((8, 1.6))
    fig.suptitle(with_preview(title, preview))
    fig.text(0.5, 0.3, "\n".join(textwrap.wrap(why, 90)), ha="center", va="center")
    save_tight(fig, path, 90)


def with_preview(title: str, preview: str) -> str:
    """A title with the preview's label (hklflow.pictures.preview.preview_label) as its last line;
    unchanged without one."""
    return f"{title}\n{preview}" if preview else title


def margins(fig, wspace: float, hspace: float = 0.2) -> None:
    """Room around and between the panels of a row of plots, drawn once (fig.tight_layout
    measures every label with a draw of its own); the margins in inches are
    wide enough for the labels and are cut off again by save_tight."""
    width, height = fig.get_size_inches()
    fig.subplots_adjust(left=1.0 / width, right=1 - 0.9 / width, bottom=0.75 / height,
                        top=1 - 0.75 / height, wspace=wspace, hspace=hspace)


def log_colorbar(fig, mappable, **colorbar_args):
    """fig.colorbar of a LogNorm mappable with at least 3 labelled ticks over any range
    (matplotlib labels only decades, often a single one): decades where 3 fit, else steps of
    1-2-5, else of 1-9, else linear steps.  Labels are plain numbers: 10^n labels go
    through mathtext, whose parser costs a third of a second per picture."""
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


def volume_cmap():
    """The colour map of intensities: grey where nothing was measured."""
    cmap = matplotlib.colormaps["viridis"]
    # grey: unmeasured; zero or negative intensity: the lowest colour, not grey
    return cmap.with_extremes(bad="0.6", under=cmap(0.0))
