"""The orientation table of a sample (rules orientation_table and refine_detector): every
temperature's cell against temperature with its esd, and the table beside the shared
detector: per temperature and entry, peaks used, RMS residuals in x, y and phi, the cell
with its esd (the cell's own, and with the detector held) and its correlation with the
distance."""
from __future__ import annotations

import re

import numpy as np

from ..files.orientation import shared_detector_text
from .figure import new_figure, save_tight, with_preview


def _kelvin(label: str) -> float:
    m = re.fullmatch(r"([0-9.]+)K", label)
    return float(m.group(1)) if m else float("nan")


def _value(v: float, esd: float) -> str:
    """v(esd) as crystallographers write it: the esd in units of the last digit shown,
    two digits at most."""
    if not np.isfinite(esd) or esd <= 0:
        return f"{v:.6f}"
    digits = max(0, min(8, int(np.ceil(-np.log10(esd))) + 1))
    last = round(esd * 10 ** digits)
    if last >= 100:  # (e.g. esd 0.0099 shown as (10), not (99))
        digits -= 1
        last = round(esd * 10 ** digits)
    return f"{v:.{digits}f}({last})"


def _rows(rows) -> tuple[list[str], list[list[str]], list[bool]]:
    names = rows[0]["names"] if rows else []
    unit = {n: ("°" if n in ("alpha", "beta", "gamma") else "Å") for n in names}
    header = (["T", "entry", "peaks", "rms x (px)", "rms y (px)", "rms φ (frames)", "rms φ (°)"]
              + [f"{n} ({unit[n]}) [σ detector held]" for n in names]
              + [f"corr({n}, dist)" for n in names])
    cells, bold = [], []
    for row in rows:
        ents = row["entries"]
        w = np.array([e["n_used"] for e in ents], dtype=float)

        def rms(key):
            v = np.array([e[key] for e in ents], dtype=float)
            ok = np.isfinite(v) & (w > 0)
            return float(np.sqrt(np.sum(w[ok] * v[ok] ** 2) / np.sum(w[ok]))) if ok.any() else np.nan

        cells.append([row["temperature"], "all", str(row["n_used"]), f"{rms('rms_x_px'):.3f}",
                      f"{rms('rms_y_px'):.3f}", f"{rms('rms_frames'):.3f}",
                      f"{rms('rms_deg'):.4f}"]
                     + [f"{_value(v, e)} [{h:.1e}]" for v, e, h in
                        zip(row["cell"], row["esd"], row["esd_detector_held"])]
                     + [("-" if not np.isfinite(c) else f"{c:+.2f}") for c in row["corr_dist"]])
        bold.append(True)
        for e in ents:
            cells.append(["", e["entry"], str(e["n_used"]), f"{e['rms_x_px']:.3f}",
                          f"{e['rms_y_px']:.3f}", f"{e['rms_frames']:.3f}",
                          f"{e['rms_deg']:.4f}"] + [""] * (2 * len(names)))
            bold.append(False)
    return header, cells, bold


def plot_orientation_table(path, title: str, shared, rows: list[dict],
                           preview: str = "") -> None:
    """PNG of a sample's orientation table: rows (files.orientation.temperature_row or
    orientation_row, one per temperature), shared: the shared detector (or detectors: one
    per parent) they were refined with."""
    shared = [s for s in (shared if isinstance(shared, (list, tuple)) else [shared]) if s]
    names = rows[0]["names"] if rows else []
    header, cells, bold = _rows(rows)
    ncol = max(len(names), 1)
    width = max(12.0, 1.15 * len(header) + 1.6 * len(names))
    table_h = 0.22 * (len(cells) + 1)
    text = "\n".join(shared_detector_text(s) for s in shared)
    text_h = 0.17 * (text.count("\n") + 1) if text else 0.0
    # the cell against temperature; below, with three temperatures or more, each point's
    # distance from a straight line through them, where the bars that matter show: the
    # detector's error moves every point alike (the line absorbs it), so they are the esd
    # with the detector held
    temps = np.array([_kelvin(r["temperature"]) for r in rows])
    line = len(rows) >= 3 and np.isfinite(temps).all() and len(set(temps)) >= 3
    plot_h = 3.0 + (2.4 if line else 0.0)
    fig = new_figure((width, plot_h + table_h + text_h + 1.3))
    grid = fig.add_gridspec(4, ncol, height_ratios=[3.0, 2.4 if line else 0.01, text_h + 0.05,
                                                    table_h], hspace=0.45)
    for i, n in enumerate(names):
        angle = n in ("alpha", "beta", "gamma")
        ax = fig.add_subplot(grid[0, i])
        v = np.array([r["cell"][i] for r in rows])
        e = np.array([r["esd"][i] for r in rows])
        h = np.array([r["esd_detector_held"][i] for r in rows])
        ax.errorbar(temps, v, yerr=np.where(np.isfinite(e), e, 0), fmt="o", ms=4, capsize=5,
                    lw=1.2, label="esd (the cell's own)")
        ax.errorbar(temps, v, yerr=np.where(np.isfinite(h), h, 0), fmt="none", capsize=9,
                    elinewidth=0, capthick=1.5, color="C3", label="esd with the detector held")
        for t, value, esd in zip(temps, v, e):
            ax.annotate(_value(value, esd), (t, value), textcoords="offset points",
                        xytext=(6, -12), fontsize=7.5)
        ax.set(xlabel="temperature (K)", ylabel=f"{n} ({'°' if angle else 'Å'})",
               title=f"{n} against temperature")
        ax.ticklabel_format(axis="y", useOffset=False)
        ax.grid(alpha=0.3)
        if i == 0:
            ax.legend(fontsize=8)
        if line:
            ax2 = fig.add_subplot(grid[1, i])
            fit = np.polyval(np.polyfit(temps, v, 1), temps)
            scale = 1.0 if angle else 1e6 / np.mean(v)
            ax2.axhline(0, color="k", lw=0.5)
            ax2.errorbar(temps, (v - fit) * scale, yerr=np.where(np.isfinite(h), h, 0) * scale,
                         fmt="o", ms=4, capsize=5, color="C3")
            ax2.set(xlabel="temperature (K)",
                    ylabel=f"{n} - line ({'°' if angle else '1e-6 relative'})",
                    title=f"{n} from a straight line through the points (esd, detector held)")
            ax2.grid(alpha=0.3)
    if text:
        tax = fig.add_subplot(grid[2, :])
        tax.set_axis_off()
        tax.text(0.0, 1.0, text, family="monospace", fontsize=8.5, va="top", ha="left",
                 transform=tax.transAxes)
    ax = fig.add_subplot(grid[3, :])
    ax.set_axis_off()
    if cells:
        table = ax.table(cellText=cells, colLabels=header, loc="upper center", cellLoc="right",
                         colLoc="right")
        table.auto_set_font_size(False)
        table.set_fontsize(8.5)
        table.auto_set_column_width(list(range(len(header))))
        for (r, c), cell in table.get_celld().items():
            cell.set_edgecolor("0.8")
            if r == 0:
                cell.set_text_props(weight="bold")
                cell.set_facecolor("0.92")
            elif bold[r - 1]:
                cell.set_facecolor("0.97")
                if c < 3:
                    cell.set_text_props(weight="bold")
    sources = sorted({r.get("correlation_source", "") for r in rows} - {""})
    foot = "; ".join(sources)
    fig.suptitle(with_preview(title + (f"\ncorr(cell, dist): {foot}" if foot else ""), preview),
                 fontsize=11)
    save_tight(fig, path, 100)
