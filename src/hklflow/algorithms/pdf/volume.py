"""The total PDF and the 3D-DeltaPDF of a merged (symmetrised) volume: the domain calls of the
steps total_pdf and delta_pdf.  The array algorithms (punch, fill, taper, FFT) are in
hklflow.algorithms.pdf's modules fill, taper and fft; here the volume's Q range decides the taper and
which reflections are punched.

Q is in 1/Angstrom in the 2 pi convention (|Q| = 2 pi / d), as in NXRefine.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np

from ...base.errors import ConfigError, GridError
from ...files.pdf import PDF
from ...files.volume import VolumeReader, read_intensity
from ...model.crystal import Crystal
from ...model.grid import Grid
from ..merge.symmetry import index_maps, operator_of_hkl, stabilizer_counts
from .fft import pdf_spectrum
from .kernels import _largest_measured_q2, _shell_counts
from .q_grid import SLAB_PLANES, octant_boxes, octant_start, q_metric, slab_by_slab
from .sigma import IncompatibleGrid, pdf_sigma
from .taper import taper_statistics


def q_squared_planes(grid: Grid, cell, l0: int, l1: int) -> np.ndarray:
    """|Q|^2 (1/Angstrom^2, 2 pi convention) of the voxel centres of L planes [l0, l1)."""
    g = q_metric(cell)
    h = grid.h.values[None, None, :]
    k = grid.k.values[None, :, None]
    ll = grid.l.values[l0:l1, None, None]
    return (g[0, 0] * h * h + g[1, 1] * k * k + g[2, 2] * ll * ll
            + 2 * (g[0, 1] * h * k + g[0, 2] * h * ll + g[1, 2] * k * ll))


COMPLETE_SHELL = 0.9  # a shell of |Q| at least this measured counts as covered


def _shells(grid: Grid, cell) -> tuple[float, int]:
    """(width, count) of the spherical shells of |Q| one voxel thick that cover the grid (the
    last takes all beyond)."""
    lengths = cell.reciprocal_parameters[:3]
    width = 2 * math.pi * min(ax.step * s for ax, s in zip(grid.axes, lengths))
    corner = math.sqrt(float(max(q_squared_planes(grid, cell, i, i + 1).max()
                                 for i in (0, grid.l.n - 1))))
    return width, int(math.ceil(corner / width)) + 1


def coverage_by_shell(grid: Grid, cell, values, even: bool = False):
    """Measured fraction of the voxels in spherical shells of |Q| (1/Angstrom, 2 pi
    convention) one voxel thick: (shell outer edges, fraction measured, voxels per shell).
    values: the volume [l, k, h], NaN (not finite) where unmeasured, or a function (l0, l1)
    -> its planes (pdf.q_grid.slab_by_slab).  even: values are even along each axis; on a grid
    symmetric about 0 only their octant is read and counted, each voxel for itself and its
    mirror images (pdf.q_grid.octant_boxes)."""
    width, nbins = _shells(grid, cell)
    total = np.zeros(nbins, np.int64)
    seen = np.zeros(nbins, np.int64)
    g = q_metric(cell)
    octant = even and octant_boxes(grid) is not None
    start = octant_start(grid) if octant else 0
    for l0, l1, slab in slab_by_slab(values, grid, start=start):
        ll = grid.l.values[l0:l1]
        if not octant:
            _shell_counts(g, grid.h.values, grid.k.values, ll, width,
                          np.ascontiguousarray(slab), total, seen)
            continue
        for bl, bk, bh, times in octant_boxes(grid, l0, l1):
            part_total, part_seen = np.zeros(nbins, np.int64), np.zeros(nbins, np.int64)
            _shell_counts(g, grid.h.values[bh], grid.k.values[bk], ll[bl], width,
                          slab[bl, bk, bh], part_total, part_seen)
            total += times * part_total
            seen += times * part_seen
    return width * np.arange(1, nbins + 1), seen / np.maximum(total, 1), total


def measured_reach(grid: Grid, cell, values, even: bool = False) -> tuple[float, float]:
    """(the largest |Q| of a measured voxel: the detector's reach in this volume; the |Q|
    up to which the data are complete: where, going out from the best-measured shell, the
    first shell less than COMPLETE_SHELL measured begins).  even: coverage_by_shell's."""
    edges, fraction, total = coverage_by_shell(grid, cell, values, even)
    has = np.flatnonzero(fraction > 0)
    if not len(has):
        return 0.0, 0.0
    reach = float(edges[has[-1]])
    best = int(np.argmax(np.where(total > 0, fraction, -1)))
    short = np.flatnonzero((fraction[best:] < COMPLETE_SHELL) & (total[best:] > 0))
    complete = float(edges[best + short[0] - 1]) if len(short) and best + short[0] > 0 \
        else reach
    return reach, complete


def farthest_shell_edge(grid: Grid, cell, values: np.ndarray, even: bool = False) -> float:
    """measured_reach's first figure alone (the outer edge of the shell of the farthest
    measured voxel; 0 when none is), equal to it, from the largest |Q|^2 of a measured voxel:
    a shell's index grows with |Q|.  A pass with no shell counts, a fraction of
    coverage_by_shell's cost.  even: values are even along each axis: their octant alone
    is searched on a grid symmetric about 0."""
    width, nbins = _shells(grid, cell)
    g, values = q_metric(cell), np.ascontiguousarray(values)
    boxes = octant_boxes(grid) if even else None
    if boxes is None:
        q2 = _largest_measured_q2(g, grid.h.values, grid.k.values, grid.l.values, values)
    else:
        q2 = max(_largest_measured_q2(g, grid.h.values[bh], grid.k.values[bk],
                                      grid.l.values[bl], values[bl, bk, bh])
                 for bl, bk, bh, _ in boxes)
    if q2 < 0:
        return 0.0
    shell = min(int(math.sqrt(max(q2, 0.0)) / width), nbins - 1)  # as _shell_counts
    return float(width * (shell + 1))


def inscribed_q(grid: Grid, cell) -> float:
    """|Q| of the largest sphere about Q = 0 inside the grid: the plane h = H lies 2 pi H / a
    from the origin, whatever the cell's angles."""
    lengths = cell.parameters[:3]
    return min(2 * math.pi * min(abs(ax.start), abs(ax.stop)) / length
               for ax, length in zip(grid.axes, lengths))


def taper_q_max(grid: Grid, cell, values, q_max: float | None, even: bool = False) -> dict:
    """The q_max of the taper - the config's, or where the data stop being complete (within
    the grid; values NaN where unmeasured, an array or a function (l0, l1) -> its planes;
    even: coverage_by_shell's) - and where it came from, as notes."""
    reach, complete = measured_reach(grid, cell, values, even)
    inside = inscribed_q(grid, cell)
    # the taper is flat to q_max / 2: below two voxels' |Q| it keeps Q = 0 alone
    least = 2 * _shells(grid, cell)[0]
    warnings = []
    if q_max is None:
        chosen = min(complete, inside)
        source = (f"measured shells >= {COMPLETE_SHELL:.0%} complete" if complete <= inside
                  else "largest sphere inside the grid")
        if chosen < least:
            raise ConfigError(
                f"reduction.pdf.q_max: no shell of |Q| about Q = 0 is {COMPLETE_SHELL:.0%} "
                f"measured beyond {chosen:.3g} 1/A (less than two voxels, {least:.3g} 1/A; "
                f"measured up to {reach:.3g}): the taper would keep Q = 0 alone: set "
                "reduction.pdf.q_max (or smaller holes, reduction.pdf.radius)")
    else:
        chosen, source = float(q_max), "config (reduction.pdf.q_max)"
        if chosen < least:
            raise ConfigError(
                f"reduction.pdf.q_max: {chosen:g} 1/A is less than two voxels of this grid "
                f"({least:.3g} 1/A in |Q|): the taper would keep Q = 0 alone and the PDF would "
                f"be flat: expected at least {least:.3g}")
        if chosen > inside * (1 + 1e-6):
            warnings.append(f"reduction.pdf.q_max {chosen:g} 1/A reaches beyond the largest "
                            f"sphere inside the grid ({inside:.3g} 1/A): the grid's faces cut "
                            "the taper and ring in the PDF")
    notes = {"q_max": chosen, "q_max_source": source, "q_reach": reach, "q_complete": complete,
             "q_inside_grid": inside}
    if warnings:
        notes["warnings"] = warnings
    return notes


def _taper_notes(values, grid: Grid, cell, q_max: float, notes: dict,
                 subtract_mean: bool, even: bool = False) -> float:
    """notes["unmeasured_within_q_max"], and with subtract_mean notes["mean_subtracted"]
    (the mean subtracted: returned, else 0), in one pass over the volume (an array or a
    function (l0, l1) -> its planes; even: pdf.taper.taper_statistics')."""
    # a constant transforms to the origin peak and the taper's rings around it (which reach
    # the nearest lattice vectors of a short axis): subtracted, unmeasured voxels count as
    # the mean instead of 0.  NaN (unmeasured) stays NaN: the FFT's copy makes it 0
    if not callable(values):
        values = np.ascontiguousarray(values, dtype=np.float32)  # (the steps' arrays: no copy)
    mean, notes["unmeasured_within_q_max"] = taper_statistics(
        values, grid, cell, q_max, q_max, even)
    if not subtract_mean:
        return 0.0
    notes["mean_subtracted"] = mean
    return mean


MIRRORS = ("-h,k,l", "h,-k,l", "h,k,-l")


def even_along_axes(volume_notes: dict) -> bool:
    """Whether a volume was symmetrised (its notes, hklflow.algorithms.merge.volumes.symmetrize_file) by a
    Laue group with the three axis mirrors (every orthorhombic, tetragonal 4/mmm and cubic
    group): then it is even along each axis, and so is its PDF."""
    operators = volume_notes.get("symmetrized", {}).get("operators_hkl", ())
    return set(MIRRORS) <= set(operators)


def _fft(source, grid: Grid, cell, q_max: float, mean: float, kind: str, title: str,
         notes: dict, workers: int, even: bool) -> PDF:
    """The PDF of source (float32 [l, k, h], or a function (l0, l1) -> its planes), tapered
    in the FFT's own copy (source is left as it is), in the memory of its half spectrum, or
    of its octant when the volume is even along each axis (pdf_spectrum): its values are
    computed as they are written."""
    t0 = time.monotonic()
    out, (x, y, z) = pdf_spectrum(source, grid, workers=workers, taper=(cell, q_max, mean),
                                  even=even)
    notes["fft_seconds"] = time.monotonic() - t0
    notes["fft"] = ("cosine transforms of the octant (the volume is even along each axis)"
                    if even else "real-to-complex FFT")
    notes["fft_shape"] = list(out.shape)
    return PDF(out, x, y, z, cell, kind, title, notes)


@dataclass
class Noise:
    """A volume's noise for the PDFs' sigma: u float32 [l, k, h] (variance over stabiliser
    count, 0 where unmeasured; None: the volume has no variance), the measured voxels, the
    symmetrisation's index maps."""
    u: np.ndarray
    measured: np.ndarray
    maps: np.ndarray


def volume_noise(path, grid: Grid, notes: dict) -> Noise:
    """The noise of a volume file for the PDFs' sigma (hklflow.algorithms.pdf.sigma); its u is None
    when the file has no variance_sum.  notes: the volume's (its symmetrisation's operators,
    if any)."""
    with VolumeReader(path, compiled_decompression=True) as reader:
        if not reader.has_variance:
            return Noise(None, None, None)
        weight, variance = reader.read_weight_and_variance()
    measured = weight > 0
    operators = notes.get("symmetrized", {}).get("operators_hkl")
    if operators:
        maps = index_maps(grid, [operator_of_hkl(o) for o in operators])
        stabilizers = stabilizer_counts(maps, 0, grid.l.n, grid.shape)
        maps = maps[0]
    else:
        maps, stabilizers = np.eye(3, dtype=np.int64)[None], np.uint8(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        u = np.where(measured, variance / (weight * weight * stabilizers), np.float32(0))
    return Noise(u.astype(np.float32, copy=False), measured, maps)


def _attach_sigma(pdf: PDF, noise: Noise, known, finite, grid: Grid, cell,
                  subtract_mean: bool, even: bool, workers: int, log) -> None:
    """pdf.errors = its sigma (hklflow.algorithms.pdf.sigma), with a note of how; a grid whose
    transform the operators do not map onto itself leaves it out, with a warning."""
    if noise.u is None:
        pdf.notes["errors"] = ("none: the volume has no variance_sum (made with "
                               "reduction.transform.variance false, or by an older hklflow)")
        if log:
            log.info("no sigma for the PDF: %s", pdf.notes["errors"][6:])
        return
    t0 = time.monotonic()
    try:
        pdf.errors = pdf_sigma(noise.u, known, finite, grid, cell, pdf.notes["q_max"],
                               noise.maps, subtract_mean, even, workers)
    except IncompatibleGrid as exc:
        pdf.notes["errors"] = f"none: {exc}"
        if log:
            log.warning("no sigma for the PDF: %s", exc)
        return
    pdf.notes["errors"] = ("sigma from the volume's variance through the symmetrisation, "
                           "taper, mean and FFT in closed form (hklflow.algorithms.pdf.sigma); filled "
                           "voxels count as noise-free")
    # (its transforms: the gathers run as the file is written)
    pdf.notes["errors_transforms_seconds"] = time.monotonic() - t0
    if log:
        log.info("sigma of the PDF: %s", pdf.notes["errors"])


def total_pdf(volume, grid: Grid, cell, q_max: float | None, title: str,
              workers: int = 1, subtract_mean: bool = True, even: bool = False,
              noise: Noise | None = None, log=None) -> PDF:
    """The total PDF of a volume: FFT of the tapered volume as measured (unmeasured voxels
    as 0, after the mean is subtracted when subtract_mean).  volume: its intensity (float32
    [l, k, h] on grid, NaN where unmeasured; left unchanged), or its file, which is read
    slab by slab, never whole: once for the shells' coverage (the taper's q_max), once for
    the taper's statistics and once into the FFT's memory (three reads cost less than one
    into a fresh whole array, most of whose cost is page faults: bench/full_rotation.py;
    the same PDF and notes bit for bit).  even: the volume is even along each axis
    (even_along_axes of its notes); then its coverage and taper statistics are counted in
    its octant (half the planes read for them), the transform's octant is an eighth of
    the volume, and the job holds about that at its peak.  noise: the volume's
    (volume_noise): then the PDF's errors are its sigma."""
    if isinstance(volume, np.ndarray):
        pdf = _total_pdf(volume, grid, cell, q_max, title, workers, subtract_mean, even)
    else:
        with VolumeReader(volume, compiled_decompression=True) as reader:
            if not reader.grid.same_as(grid):
                raise GridError(f"{volume}: its grid {reader.grid.describe()} is not "
                                f"{grid.describe()}")
            # one buffer for the statistics' passes (slab_by_slab's slabs)
            slab = np.empty((SLAB_PLANES,) + grid.shape[1:], np.float32)
            pdf = _total_pdf(lambda l0, l1: reader.read_intensity(l0, l1, slab), grid, cell,
                             q_max, title, workers, subtract_mean, even,
                             planes=reader.read_intensity)
    if noise is not None:
        _attach_sigma(pdf, noise, noise.measured, noise.measured, grid, cell, subtract_mean,
                      even, workers, log)
    return pdf


def _total_pdf(values, grid: Grid, cell, q_max, title, workers, subtract_mean, even,
               planes=None) -> PDF:
    """total_pdf of values, an array or a function (l0, l1) -> its planes (a buffer the
    next call reuses: the statistics' passes); planes: a function (l0, l1) -> new arrays of
    them for the FFT's copy (which holds two slabs at once), values itself by default."""
    notes = taper_q_max(grid, cell, values, q_max, even)
    q = notes["q_max"]
    mean = _taper_notes(values, grid, cell, q, notes, subtract_mean, even)
    return _fft(values if planes is None else planes, grid, cell, q, mean, "total_pdf", title,
                notes, workers, even)


def punch_positions(crystal: Crystal, grid: Grid, q_reach: float, extra=()) -> np.ndarray:
    """Every allowed reflection within the measured reach and the grid, then the extra
    positions with all their Laue-equivalent positions (n, 3) float."""
    from .fill import reflections_to_punch  # (here: as in delta_pdf)

    refl = reflections_to_punch(crystal, grid, q_reach).astype(np.float64)
    if len(extra):
        ops = crystal.laue_operators
        more = np.einsum("ni,kij->knj", np.asarray(extra, float).reshape(-1, 3), ops).reshape(-1, 3)
        more = np.unique(np.round(more, 9), axis=0)
        refl = np.concatenate([refl, more]) if len(refl) else more
    return refl


def delta_pdf(volume, grid: Grid, crystal: Crystal, params, title: str, workers: int = 1,
              log=None, store_filled=None, even: bool = False, noise: Noise | None = None):
    """The 3D-DeltaPDF of a volume: every allowed reflection inside the measured reach (and
    params.extra_positions) punched and filled (hklflow.algorithms.pdf.fill.punch_and_fill), then tapered
    and transformed.  Returns (PDF, FillResult).  volume: its intensity (float32 [l, k, h]
    on grid, NaN where unmeasured; punched and filled in place), or its file (read whole).

    store_filled(fill) -> a function (l0, l1) -> planes of fill.filled, read back (the step
    writes the filled volume into its output first): with a file, the filled volume is
    then dropped (fill.filled None) before the FFT takes its memory and read back, so the
    two are never held at once (2 GB less at 801^3).  even: the volume is even along each
    axis (even_along_axes of its notes; the punch and the fill keep it so): the fill
    regions outside its octant take their mirror images' values (pdf.fill.punch_and_fill), its
    coverage and taper statistics are counted in the octant, its transform's octant is an
    eighth of it, and the filled volume stays in memory for it.  noise: the volume's
    (volume_noise): then the PDF's errors are its sigma, the filled voxels noise-free."""
    # (here: the fill loads scipy.sparse and its kernels, which a total PDF does not use)
    from .fill import punch_and_fill

    from_file = not isinstance(volume, np.ndarray)
    intensity = read_intensity(volume, compiled_decompression=True)[1] if from_file else volume
    cell = crystal.cell
    # the reach alone here: the shells' coverage is counted after the fill (for the taper)
    reach = farthest_shell_edge(grid, cell, intensity, even)
    positions = punch_positions(crystal, grid, reach, params.extra_positions)
    spacing = crystal.nearest_reflection_spacing()
    diameter = 2 * params.hole_radius(cell)
    merged = (f"the holes ({diameter:.3f} 1/A across) are wider than the distance between the "
              f"nearest reflections ({spacing:.3f} 1/A): they merge and little diffuse "
              "scattering is left; lower reduction.pdf.radius") if diameter >= spacing else None
    if log:
        log.info("punching %d positions (radius %g %s), fill order %d, eps %g", len(positions),
                 params.radius, params.radius_units, params.fill_order, params.fill_eps)
    fill = punch_and_fill(intensity, grid, cell, positions, radius=params.radius,
                          units=params.radius_units, order=params.fill_order,
                          eps=params.fill_eps, log=log, overwrite_input=True, even=even)
    finite = known = None
    if noise is not None and noise.u is not None:
        finite = np.isfinite(fill.filled)
        known = noise.measured.copy()
        known.reshape(-1)[fill.region] = False
    # the fill completes regions the Bragg mask left empty
    notes = taper_q_max(grid, cell, fill.filled, params.q_max, even)
    q = notes["q_max"]
    if merged:  # (the step logs the notes' warnings and draws them)
        notes.setdefault("warnings", []).insert(0, merged)
    notes.update(outcomes=fill.counts, positions=len(positions), radius=params.radius,
                 radius_units=params.radius_units, fill_order=params.fill_order,
                 fill_eps=params.fill_eps, fill_seconds=fill.seconds, fill_unknowns=fill.unknowns,
                 fill_mirrored=fill.mirrored, fill_batches=fill.batches,
                 extra_positions=[list(p) for p in params.extra_positions])
    mean = _taper_notes(fill.filled, grid, cell, q, notes, params.subtract_mean, even)
    source = fill.filled
    if store_filled is not None:
        stored = store_filled(fill)
        # (the caller's array stays: then reading it back would gain nothing; an even
        # volume's octant is an eighth of it: it stays too, and is not read back)
        if from_file and not even:
            del intensity
            fill.filled = None  # (its memory is the spectrum's, the moment it is freed)
            source = stored
    pdf = _fft(source, grid, cell, q, mean, "pdf", title, notes, workers, even)
    if noise is not None:
        _attach_sigma(pdf, noise, known, finite, grid, cell, params.subtract_mean, even,
                      workers, log)  # (noise without u: a note alone)
    return pdf, fill
