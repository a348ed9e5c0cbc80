"""Pictures of PDFs: planes of the total PDF and the 3D-DeltaPDF (total_pdf, delta_pdf) and
one plane at every temperature (pdf_temperature_series), drawn to scale in real space."""
from __future__ import annotations

import math
import textwrap
from pathlib import Path

import numpy as np
from matplotlib.transforms import Affine2D

from ..files.pdf import read_pdf_plane
from .figure import new_figure, save_tight, with_preview


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
    fig = new_figure((6.4 * ncol, 5.6 * nrow))
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
    fig.suptitle(with_preview(title, preview), fontsize=11)
    fig.subplots_adjust(wspace=0.3, hspace=0.35)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_tight(fig, path, 100)
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
    fig = new_figure((5.0 * ncol + 1.2, 4.8 * nrow))
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
    fig.suptitle(with_preview(f"{title}: {axis} = {value:g}", preview))
    png = Path(png)
    png.parent.mkdir(parents=True, exist_ok=True)
    save_tight(fig, png, 90)
    return [p[0] for p in shown]
