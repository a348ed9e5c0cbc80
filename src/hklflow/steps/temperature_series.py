"""One slice of a sample's merged volume at every temperature, side by side on a common log
intensity scale (rule temperature_series): the slice is reduction.merge.series_slice, read
alone from each volume file."""
from __future__ import annotations

import argparse
import math
import re
import sys
from pathlib import Path

import numpy as np

from .. import steplog

_LABEL = re.compile(r"(?<![\w.])(\d+(?:\.\d+)?)K(?![\w])")


def temperature_label(path, title: str = "") -> str:
    """The temperature label (e.g. '300K') of a merged volume: from its title
    (SAMPLE/300K), else from its path (results/SAMPLE/300K/...); '' if neither has one."""
    for text in (title, *reversed(Path(path).parts)):
        m = _LABEL.search(str(text))
        if m:
            return m.group(0)
    return ""


def _kelvin(label: str) -> float:
    try:
        return float(label[:-1])
    except ValueError:
        return math.inf


def plot_series(paths, spec, png, title: str, cell=None, log=None) -> list[str]:
    """PNG of the slice `spec` ({h|k|l: value}) of every volume file, labelled by temperature,
    ordered by temperature, on one colour scale.  Returns the labels drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm

    from ..slices import color_limits, draw_slice, read_slice
    from ..volume import read_volume_header

    panels, kinds = [], []
    for p in paths:
        try:
            head = read_volume_header(p)
        except (OSError, KeyError, ValueError) as exc:
            raise ValueError(f"{p}: cannot read this volume: {exc}") from None
        label = temperature_label(p, head.title) or Path(p).parent.name
        try:
            sl = read_slice(p, spec)
        except ValueError as exc:
            if log:
                log.warning("%s: slice %s left out: %s", p, spec, exc)
            sl = None
        except (OSError, KeyError) as exc:
            raise ValueError(f"{p}: cannot read the slice {spec}: {exc}") from None
        panels.append((label, p, sl))
        if head.kind not in kinds:
            kinds.append(head.kind)
    panels.sort(key=lambda t: _kelvin(t[0]))
    drawn = [sl.data for _, _, sl in panels if sl is not None]
    vmin, vmax = color_limits(drawn)
    norm = LogNorm(vmin=vmin, vmax=vmax)
    n = max(len(panels), 1)
    ncol = min(n, 4)
    nrow = math.ceil(n / ncol)
    fig = plt.figure(figsize=(5.0 * ncol + 1.2, 4.8 * nrow))
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
        fig.colorbar(im, ax=axes, extend="both", shrink=0.8, label="intensity (log, common scale)")
    first = next((sl for _, _, sl in panels if sl is not None), None)
    fig.suptitle(f"{title} {'/'.join(kinds)}: {first.describe() + ', ' + first.label if first else spec}")
    png = Path(png)
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return [label for label, _, sl in panels if sl is not None]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hklflow temperature_series",
                                description=__doc__.splitlines()[0])
    p.add_argument("--config", action="append", required=True, help="experiment config file(s)")
    p.add_argument("--sample", required=True)
    p.add_argument("--inputs", nargs="+", required=True, type=Path,
                   help="merged volume of every temperature")
    p.add_argument("--png", required=True, type=Path, help="picture to write")
    return p


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    log = steplog.setup("temperature_series")
    from ..config import ConfigError, load_experiment

    try:
        exp = load_experiment(args.config)
        if args.sample not in exp.samples:
            raise ConfigError(f"sample {args.sample!r} is not in the config (known: "
                              f"{sorted(exp.samples)})")
        spec = exp.reduction["merge"]["series_slice"]
        crystal = exp.samples[args.sample].crystal
        from ..slices import cell_of

        missing = [str(p) for p in args.inputs if not p.is_file()]
        if missing:
            raise ValueError(f"missing input volume(s): {', '.join(missing)}")
        try:
            cell = cell_of(args.inputs[0]) or crystal.cell
        except (KeyError, ValueError, OSError):
            cell = crystal.cell  # an unreadable input is reported by plot_series
        labels = plot_series(args.inputs, spec, args.png, args.sample, cell=cell, log=log)
        log.info("%s: slice %s at %d temperatures (%s) -> %s", args.sample, spec, len(labels),
                 ", ".join(labels), args.png)
    except (ConfigError, ValueError, OSError) as exc:
        return steplog.fail(log, exc, (args.png,))
    return 0


if __name__ == "__main__":
    sys.exit(main())
