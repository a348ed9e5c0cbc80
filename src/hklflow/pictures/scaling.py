"""The picture of a temperature's scales (rule scale_entries): each entry's smooth scale
b(phi), its absorption's range, the detector response, and chi^2/nu and CC1/2 of
equivalents per |Q| shell, before and after."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .figure import margins, new_figure, save_tight


def plot_scales(model, statistics: dict, terms: dict, path, title: str) -> None:
    fig = new_figure((15, 9))
    ax = fig.subplots(2, 2).ravel()
    for name, e in model.entries.items():
        phi = np.linspace(e.knots[0], e.knots[-1], 400)
        ax[0].plot(phi, e.b(phi), label=name)
        ax[0].plot(e.knots, e.scale, "o", ms=3, color=ax[0].lines[-1].get_color())
    ax[0].set(title="smooth scale b(φ) per entry (knots: dots)", xlabel="φ (deg)",
              ylabel="b")
    ax[0].legend(fontsize=8)
    away = statistics["away_from_nodes"]
    for key, style in (("before", "o--"), ("after", "o-")):
        rows = away[key]["shells"]
        q = [(r["q_min"] + r["q_max"]) / 2 for r in rows]
        cc = [np.nan if r["cc_half"] is None else r["cc_half"] for r in rows]
        ax[1].plot(q, cc, style, ms=4, label=f"{key}: overall {_txt(away[key]['cc_half'])}")
    ax[1].set(title="CC½ of equivalents away from the nodes", xlabel="|Q| (1/Å)",
              ylabel="CC½")
    ax[1].legend(fontsize=8)
    names = list(model.entries)
    x = np.arange(len(names) + 1)
    for i, key in enumerate(("before", "after")):
        chi = [away[key]["entries"][n]["chi2_nu"] or np.nan for n in names]
        chi.append(away[key]["chi2_nu"] or np.nan)
        ax[2].bar(x + (i - 0.5) * 0.38, chi, 0.38, label=key)
    ax[2].axhline(1, color="k", lw=0.8)
    ax[2].set_xticks(x, names + ["all"])
    ax[2].set(title="χ²/ν of equivalents away from the nodes", ylabel="χ²/ν")
    ax[2].legend(fontsize=8)
    if model.detector.size > 1:
        im = ax[3].imshow(model.detector, origin="upper", cmap="viridis")
        fig.colorbar(im, ax=ax[3])
        ax[3].set(title="detector response (grid over rows, columns)")
    else:
        ax[3].set_axis_off()
    lines = [f"{k}: {v}" for k, v in terms.items()]
    if "with_nodes" in statistics:
        w = statistics["with_nodes"]
        lines.append(f"with the nodes: χ²/ν {_txt(w['before']['chi2_nu'])} -> "
                     f"{_txt(w['after']['chi2_nu'])}, CC½ {_txt(w['before']['cc_half'])} -> "
                     f"{_txt(w['after']['cc_half'])}")
    ax[3].text(0.0, 0.0 if model.detector.size > 1 else 0.5, "\n".join(lines),
               transform=ax[3].transAxes, fontsize=9, va="center")
    fig.suptitle(title)
    margins(fig, wspace=0.25, hspace=0.35)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_tight(fig, path, 90)


def _txt(v) -> str:
    return "-" if v is None else f"{v:.3f}"
