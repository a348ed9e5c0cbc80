"""Draw docs/detector_orientation.png: pyFAI's four detector orientations
(instrument.detector.orientation), as seen from the sample looking downstream, with the lab
frame's L1 up and L2 to the right (docs/conventions.md).

The picture is computed, not drawn by hand: the position of every pixel corner in the
detector plane comes from pyFAI's own detector model of each orientation
(``calc_cartesian_positions``); with zero tilts p1 runs along L1 and p2 along L2.

    python docs/detector_orientation.py            # writes docs/detector_orientation.png
"""
from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pyFAI.detectors  # noqa: E402

ROWS, COLS = 4, 6  # a small detector: every pixel visible
WHERE = {(False, False): "bottom left", (False, True): "bottom right",
         (True, False): "top left", (True, True): "top right"}


def corners(orientation: int):
    """(p1, p2) of the pixel corners (ROWS + 1, COLS + 1) in pixel units, pyFAI's model."""
    det = pyFAI.detectors.Detector(pixel1=1.0, pixel2=1.0, max_shape=(ROWS, COLS),
                                   orientation=orientation)
    r, c = np.meshgrid(np.arange(ROWS + 1.0), np.arange(COLS + 1.0), indexing="ij")
    p1, p2, _ = det.calc_cartesian_positions(r, c, center=False, use_cython=False)
    return np.asarray(p1), np.asarray(p2)


def describe(orientation: int) -> dict:
    """Where pixel (0, 0) lies and which way rows / columns run, seen from the sample."""
    p1, p2 = corners(orientation)
    centre1, centre2 = (p1[0, 0] + p1[1, 1]) / 2, (p2[0, 0] + p2[1, 1]) / 2
    top, right = centre1 > ROWS / 2, centre2 > COLS / 2
    return {"pixel (0, 0)": WHERE[(top, right)],
            "rows run": "up" if p1[1, 0] > p1[0, 0] else "down",
            "columns run": "right" if p2[0, 1] > p2[0, 0] else "left"}


def draw(out: Path) -> None:
    fig, axes = plt.subplots(1, 4, figsize=(13, 3.9))
    for ax, o in zip(axes, (1, 2, 3, 4)):
        p1, p2 = corners(o)
        for i in range(ROWS):
            for j in range(COLS):
                quad = np.array([[p2[i, j], p1[i, j]], [p2[i, j + 1], p1[i, j + 1]],
                                 [p2[i + 1, j + 1], p1[i + 1, j + 1]], [p2[i + 1, j], p1[i + 1, j]]])
                first = i == 0 and j == 0
                ax.fill(quad[:, 0], quad[:, 1], facecolor="tab:red" if first else "whitesmoke",
                        edgecolor="grey", lw=0.8)
                if first or (i, j) == (ROWS - 1, COLS - 1):
                    ax.text(quad[:, 0].mean(), quad[:, 1].mean(), f"({i},{j})", ha="center",
                            va="center", fontsize=8, color="white" if first else "black")
        # arrows from the centre of pixel (0, 0): increasing row and increasing column
        c2, c1 = (p2[0, 0] + p2[1, 1]) / 2, (p1[0, 0] + p1[1, 1]) / 2
        for (d1, d2), label, colour in (((p1[1, 0] - p1[0, 0], p2[1, 0] - p2[0, 0]), "row", "tab:blue"),
                                        ((p1[0, 1] - p1[0, 0], p2[0, 1] - p2[0, 0]), "col", "tab:green")):
            ax.annotate("", xy=(c2 + 2.2 * d2, c1 + 2.2 * d1), xytext=(c2, c1),
                        arrowprops=dict(arrowstyle="->", color=colour, lw=2, shrinkA=14))
            ax.text(c2 + 2.6 * d2, c1 + 2.6 * d1, label, color=colour, ha="center", va="center",
                    fontsize=10, fontweight="bold")
        d = describe(o)
        ax.set_title(f"orientation {o}{' (default)' if o == 3 else ''}\n(0,0) {d['pixel (0, 0)']}, "
                     f"rows {d['rows run']}, cols {d['columns run']}", fontsize=10)
        ax.set_xlim(-1, COLS + 1)
        ax.set_ylim(-1, ROWS + 1)
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_xlabel("L2 (horizontal) →")
        ax.set_ylabel("L1 (up) →")
    fig.suptitle("pyFAI detector orientations (instrument.detector.orientation), seen from the "
                 "sample looking downstream (beam L3 into the page)", fontsize=11)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    args = sys.argv[1:] if argv is None else argv
    out = Path(args[0]) if args else Path(__file__).with_suffix(".png")
    for o in (1, 2, 3, 4):
        print(f"orientation {o}: " + ", ".join(f"{k} {v}" for k, v in describe(o).items()))
    draw(out)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
