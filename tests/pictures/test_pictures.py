"""hklflow.pictures: the detector images of the peak and mask pictures, reduced by blocks;
every detector drawn one way, colour bars for every colour, titles of what is drawn; the
slices of volumes (pictures.volumes, pictures.slices: planes read from the file, drawn to
scale); a picture drawn once and cropped as savefig's tight box (pictures.figure)."""
import logging
import math
from types import SimpleNamespace

import numpy as np
import pytest

from hklflow.files.volume import write_volume
from hklflow.model.crystal import UnitCell
from hklflow.pictures.detector import _reduced_image
from hklflow.pictures.slices import plane_matrix, read_slice
from hklflow.pictures.volumes import plot_slices

from volume_helpers import HEX, random_volume, sample, small_grid


def test_a_2m_image_is_reduced_by_its_block_maxima_and_keeps_its_extent():
    rows, cols = 1679, 1475  # a Pilatus 2M: blocks of 3 x 3 pixels
    image = np.zeros((rows, cols), np.int32)
    image[1000, 700] = 1000  # one bright pixel: kept by the maximum of its block
    image[1001, 701] = 10
    image[200:217, :] = -1  # a gap
    image[rows - 1, cols - 1] = 100  # in the last, partial block
    img, extent = _reduced_image(image)
    assert img.shape == (math.ceil(rows / 3), math.ceil(cols / 3))
    np.testing.assert_array_equal([img[1000 // 3, 700 // 3], img[-1, -1]], [1000, 100])
    assert np.isnan(img[210 // 3]).all()  # nothing positive: NaN (off a log scale)
    assert np.count_nonzero(np.isfinite(img)) == 2
    # the picture's axes stay in detector pixels: 3 x 492 columns, 3 x 560 rows
    assert extent == (-0.5, 1475.5, -0.5, 1679.5)


def test_a_small_image_is_drawn_pixel_for_pixel():
    image = np.arange(12, dtype=np.float32).reshape(3, 4)
    img, extent = _reduced_image(image)
    np.testing.assert_array_equal(img, np.where(image > 0, image, np.float32(np.nan)))
    assert img.dtype == np.float32
    assert extent == (-0.5, 3.5, -0.5, 2.5)


def test_artists_take_their_properties_without_the_set_docstrings():
    """hklflow.pictures (its __init__) leaves out the docstrings matplotlib makes for every Artist's `set`
    as its class is defined (~0.25 CPU-s of each drawing job): help text only; `set` still
    takes every property, and pictures draw (the other tests)."""
    import matplotlib.artist
    from matplotlib.lines import Line2D

    import hklflow.pictures.figure  # noqa: F401

    assert matplotlib.artist.kwdoc(Line2D) == ""
    line = Line2D([0, 1], [0, 1])
    line.set(color="r", linewidth=2.5, alpha=0.5)
    assert (line.get_color(), line.get_linewidth(), line.get_alpha()) == ("r", 2.5, 0.5)


def test_artists_lose_the_set_docstrings_when_matplotlib_loads_after_the_pictures():
    """hklflow.pictures imports no matplotlib (a step that only labels previews draws
    nothing); matplotlib loaded later has kwdoc replaced all the same, before its Artist
    classes are made: their `set` docstrings have no property tables."""
    import subprocess
    import sys

    code = ("import sys\n"
            "import hklflow.pictures.preview\n"
            "assert 'matplotlib' not in sys.modules\n"
            "import matplotlib.artist\n"
            "from matplotlib.lines import Line2D\n"
            "assert matplotlib.artist.kwdoc(Line2D) == ''\n"
            "assert 'dash_capstyle' not in Line2D.set.__doc__, Line2D.set.__doc__\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300)


def _zlib_levels(path) -> list[int]:
    """FLEVEL of the zlib stream of each IDAT chunk start: 0 for zlib level 1, 2 for the
    default 6 (the PNG's IDAT chunks are one zlib stream: its header is in the first)."""
    import struct

    data = open(path, "rb").read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, levels = 8, []
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        if kind == b"IDAT" and not levels:
            levels.append(data[pos + 9] >> 6)
        pos += 12 + length
    return levels


def test_pictures_are_written_at_the_fast_zlib_level(tmp_path):
    """Pictures are encoded at zlib level 1 (half the time of the default 6, files of about
    the same size), both when the drawn canvas is cropped and through savefig (something
    drawn beyond the figure's edges); the PNGs read back as drawn, at the dpi asked."""
    from PIL import Image

    from hklflow.pictures.figure import new_figure, save_tight

    for beyond in (False, True):
        fig = new_figure((3, 2))
        ax = fig.add_subplot()
        ax.imshow(np.arange(64.0).reshape(8, 8))
        if beyond:
            ax.text(5.0, 0.5, "beyond the right edge", transform=ax.transAxes)
        path = tmp_path / f"beyond_{beyond}.png"
        save_tight(fig, path, 90)
        assert _zlib_levels(path) == [0]
        with Image.open(path) as im:
            assert round(im.info["dpi"][0]) == 90
            # (cropped: inside the figure's 3 x 90 pixels; through savefig: wider)
            assert (im.size[0] > 270) == beyond and im.size[0] > 100


def test_pdf_planes_are_drawn_to_scale_on_a_skewed_cell(tmp_path):
    """A PDF plane is an image mapped by the plane's matrix: voxel edges and points inside
    land where the matrix puts them in Angstrom (a hexagonal cell: x and y at 120 degrees),
    the axes span the skewed plane's corners, and the values are the plane's."""
    from hklflow.model.crystal import UnitCell
    from hklflow.pictures.figure import new_figure, save_tight
    from hklflow.pictures.pdf import _draw_pdf_plane, _real_plane_matrix

    cell = UnitCell(4.0, 4.0, 6.5, 90, 90, 120)
    uu, vv = np.linspace(-5, 5, 41), np.linspace(-4, 4, 33)
    plane = np.cos(np.add.outer(vv, uu))
    fig = new_figure((6, 5))
    ax, im = _draw_pdf_plane(fig, (1, 1, 1), plane, uu, vv, "x", "y", cell, 1.0, "hex")
    M = _real_plane_matrix(cell, "x", "y")
    assert M[0, 1] < 0  # (the skew)
    ue, ve = (-5.125, 5.125), (-4.125, 4.125)  # the voxels' edges
    np.testing.assert_allclose(im.get_extent(), (*ue, *ve))
    for point in [(ue[0], ve[0]), (ue[1], ve[1]), (2.5, -1.0)]:
        np.testing.assert_allclose(im.get_transform().transform(point),
                                   ax.transData.transform(M @ np.array(point)))
    corners = np.array([[a, b] for a in ue for b in ve]) @ M.T
    np.testing.assert_allclose(ax.get_xlim(), (corners[:, 0].min(), corners[:, 0].max()))
    np.testing.assert_allclose(ax.get_ylim(), (corners[:, 1].min(), corners[:, 1].max()))
    assert np.array_equal(im.get_array(), plane) and im.get_clim() == (-1.0, 1.0)
    save_tight(fig, tmp_path / "hex.png", 80)
    assert (tmp_path / "hex.png").stat().st_size > 1000


# --------------------------------------------------------------------------------------
# Every detector drawn one way, every colour with its colour bar, titles of what is drawn
# --------------------------------------------------------------------------------------
@pytest.fixture
def figures(monkeypatch):
    """Every figure a picture saves, as saved."""
    from hklflow.pictures import detector, figure, pdf, volumes

    drawn, save = [], figure.save_tight

    def recording(fig, path, *args, **kwargs):
        drawn.append(fig)
        return save(fig, path, *args, **kwargs)
    for module in (detector, pdf, volumes):  # (each drawing module's own name of it)
        monkeypatch.setattr(module, "save_tight", recording)
    return drawn


SHAPE = (48, 64)  # rows, columns of the synthetic scans
ROW_LABEL = "row (pixel, 0 at bottom)"


def _scan_maximum():
    image = np.random.default_rng(0).poisson(3.0, SHAPE).astype(np.int32)
    image[10, 20] = 5000  # a peak
    image[:, 30:32] = -1  # a gap
    return image


def _draw_calibration(path, image=True, control_points=True, beam_on_detector=True):
    """plot_calibration of a Pilatus 100k (195 x 487) with CeO2 rings, its direct beam at the
    PONI (no tilts): on the detector or 113 columns beyond its right edge."""
    from hklflow.model.geometry import DetectorGeometry
    from hklflow.pictures.detector import plot_calibration

    px = 172e-6
    g = DetectorGeometry("Pilatus100k", dist=0.05, poni1=97.5 * px,
                         poni2=(240.5 if beam_on_detector else 600.5) * px, wavelength=0.7)
    rng = np.random.default_rng(1)
    points = (np.array([[97.0, 306.0, 0], [31.0, 240.0, 0], [97.0, 150.0, 1]])
              if control_points else np.zeros((0, 3)))
    result = SimpleNamespace(geometry=g, bad_pixels=None, control_points=points,
                             rms_px=0.2 if control_points else None, n_points=len(points),
                             rings=(0, 1) if control_points else ())
    pattern = (np.linspace(2, 40, 200), rng.uniform(1, 2, 200)) if image else None
    plot_calibration(path, result, SimpleNamespace(calibrant="CeO2"),
                     rng.poisson(20.0, g.shape) if image else None, pattern, title="ceo2")


def _draw_peaks(path):
    from hklflow.pictures.detector import plot_peaks

    n, frames = 5, 10
    peaks = {"observed_px_x": np.linspace(3, 60, n), "observed_px_y": np.linspace(2, 45, n),
             "n_pixels": np.full(n, 4), "int_sum": np.geomspace(10, 1e4, n)}
    stats = {"sum": np.linspace(1e4, 2e4, frames), "trimmed_sum": np.linspace(1e3, 2e3, frames),
             "n_strong": np.arange(frames)}
    plot_peaks(SimpleNamespace(peaks=peaks, max_projection=_scan_maximum(), nframes=frames,
                               frame_stats=stats, q_annulus=(0.5, 1.0)), "s: peak search", path)


def _draw_residuals(path):
    from hklflow.pictures.detector import plot_residuals

    rng = np.random.default_rng(2)
    entries, residuals, used = [], [], []
    for name in ("f1", "f2"):
        n = 20
        entries.append(SimpleNamespace(name=name, x=rng.uniform(0, SHAPE[1], n),
                                       y=rng.uniform(0, SHAPE[0], n), z=rng.uniform(0, 90, n)))
        residuals.append(rng.normal(0, 0.3, (n, 3)))
        used.append(np.arange(n) % 4 != 0)
    model = SimpleNamespace(crystal=SimpleNamespace(cell=SimpleNamespace(
        parameters=(4.0, 4.0, 6.5, 90.0, 90.0, 120.0))), detector=SimpleNamespace(shape=SHAPE))
    plot_residuals(SimpleNamespace(entries=entries, residuals=residuals, used=used, rms_px=0.3,
                                   rms_frames=0.1, model=model, n_used=30,
                                   fraction_indexed=0.9), "s (parent)", path)


def _draw_mask(path, scan_maximum=True, max_ellipses=3000):
    from hklflow.algorithms.masks.masking import DEAD, FOUND, GAP, HOT, PREDICTED
    from hklflow.pictures.detector import plot_mask

    frames = 10
    reasons = np.zeros(SHAPE, np.int32)
    reasons[:, 30:32] = GAP
    reasons[5, 5], reasons[40, 50] = DEAD, HOT
    per_pixel = np.zeros(SHAPE, np.int32)
    per_pixel[8:13, 18:23] = 3
    per_pixel[30:34, 40:44] = 7
    table = {"source": np.array([FOUND, PREDICTED]), "row": np.array([10.5, 32.0]),
             "col": np.array([20.5, 42.0]), "radius_row": np.array([2.0, 2.0]),
             "radius_col": np.array([2.0, 2.0])}
    stats = {"pixels_gap": 96, "pixels_hot": 1, "pixels_dead": 1, "pixels_user": 0,
             "regions_found": 1, "regions_predicted": 1, "bragg_fraction": 0.001}
    mask = SimpleNamespace(shape=SHAPE, regions=np.zeros((2, 6)), nframes=frames,
                           hkl_radius=0.1)
    plot_mask(SimpleNamespace(mask=mask, reasons=reasons, table=table, statistics=stats,
                              max_projection=_scan_maximum() if scan_maximum else None,
                              masked_per_frame=np.linspace(10, 40, frames),
                              masked_per_pixel=per_pixel), "s: masks", path, max_ellipses)


def _draw_slices(path):
    from hklflow.files.volume import Volume
    from hklflow.model.grid import Axis, Grid
    from hklflow.pictures.volumes import plot_slices

    grid = Grid(Axis(-2, 0.25, 17), Axis(-2, 0.25, 17), Axis(-1, 0.5, 5))
    rng = np.random.default_rng(3)
    weight = rng.uniform(0.5, 2.0, grid.shape).astype(np.float32)
    signal = (weight * rng.uniform(3, 40, grid.shape)).astype(np.float32)
    sample = {"name": "x", "space_group": "P 1", "unit_cell": np.array((4, 4, 6.5, 90, 90, 90))}
    plot_slices(Volume(grid, signal, weight, sample=sample), [{"l": 0}], path, "slices")


def _draw_pdf(path):
    from hklflow.model.crystal import UnitCell
    from hklflow.pictures.pdf import plot_pdf

    uu, vv = np.linspace(-5, 5, 21), np.linspace(-4, 4, 17)
    plane = np.cos(np.add.outer(vv, uu))
    pdf = SimpleNamespace(plane=lambda axis, value: (plane, uu, vv, value), kind="pdf",
                          cell=UnitCell(4.0, 4.0, 6.5, 90, 90, 120), notes={})
    plot_pdf(pdf, [{"z": 0}], path, "pdf")


# picture: (how to draw it, its detector axes)
DETECTOR_PICTURES = {
    "calibration": (_draw_calibration, 1),
    "calibration without an image": (
        lambda path: _draw_calibration(path, image=False, control_points=False), 1),
    "peaks": (_draw_peaks, 1),
    "residuals": (_draw_residuals, 1),
    "mask": (_draw_mask, 2),
    "mask without the scan maximum": (lambda path: _draw_mask(path, scan_maximum=False), 2),
}
PICTURES = {**{name: draw for name, (draw, _) in DETECTOR_PICTURES.items()},
            "slices": _draw_slices, "pdf": _draw_pdf}


@pytest.mark.parametrize("picture", DETECTOR_PICTURES)
def test_every_detector_picture_draws_row_0_at_the_bottom_and_says_so(picture, figures,
                                                                       tmp_path):
    """Row 0 where pyFAI draws it (its native layout and its own views: origin at the lower
    left), in every detector picture alike: the whole detector, the axis going up, every
    image drawn from the bottom, the label saying so."""
    draw, count = DETECTOR_PICTURES[picture]
    draw(tmp_path / "picture.png")
    fig, = figures
    detector_axes = [ax for ax in fig.axes if ax.get_xlabel() == "column (pixel)"]
    assert len(detector_axes) == count
    rows = 195 if picture.startswith("calibration") else SHAPE[0]
    for ax in detector_axes:
        assert ax.get_ylabel() == ROW_LABEL
        assert ax.get_ylim() == (-0.5, rows - 0.5)  # increasing: row 0 at the bottom
        first, last = ax.transData.transform([(0, 0), (0, rows - 1)])[:, 1]
        assert first < last  # (display y grows upwards)
        assert [image.origin for image in ax.images] == ["lower"] * len(ax.images)
    assert all("row" not in ax.get_ylabel() for ax in fig.axes if ax not in detector_axes)


def _labelled_ticks(colorbar) -> list[float]:
    """The values that the labelled ticks of a drawn colour bar say, inside its range."""
    axis = colorbar.long_axis
    low, high = sorted(axis.get_view_interval())
    return [float(label.get_text().replace("\N{MINUS SIGN}", "-"))
            for tick, label in zip(axis.get_majorticklocs(), axis.get_majorticklabels())
            if label.get_text() and low * (1 - 1e-9) <= tick <= high * (1 + 1e-9)]


@pytest.mark.parametrize("low, high", [(1, 1e6), (3, 40), (11, 9000), (0.02, 7e4), (3, 12),
                                       (3, 4.5), (1, 2)])
def test_log_colour_bars_label_at_least_3_ticks_over_any_range(low, high, tmp_path):
    from matplotlib.colors import LogNorm

    from hklflow.pictures.figure import log_colorbar, new_figure, save_tight

    fig = new_figure((4, 3))
    ax = fig.add_subplot()
    image = ax.imshow(np.geomspace(low, high, 12).reshape(3, 4), norm=LogNorm(low, high))
    colorbar = log_colorbar(fig, image, ax=ax, label="counts")
    save_tight(fig, tmp_path / "bar.png", 80)
    ticks = _labelled_ticks(colorbar)
    assert len(ticks) >= 3 and ticks == sorted(set(ticks))
    assert low <= ticks[0] and ticks[-1] <= high


def _colour_mapped(fig) -> list:
    """The images and collections of fig drawn through a colour map (not RGBA images, not
    lines of one given colour), outside the colour bars."""
    artists = [a for ax in fig.axes for a in (*ax.images, *ax.collections)
               if a.get_array() is not None and np.ndim(a.get_array()) <= 2
               and getattr(a, "colors", None) is None]
    bar_axes = {a.colorbar.ax for a in artists if a.colorbar is not None}
    return [a for a in artists if a.axes not in bar_axes]


def _same_scale(a, b) -> bool:
    return (a.get_cmap().name == b.get_cmap().name and type(a.norm) is type(b.norm)
            and (a.norm.vmin, a.norm.vmax) == (b.norm.vmin, b.norm.vmax))


@pytest.mark.parametrize("picture", PICTURES)
def test_every_colour_has_a_colour_bar_and_log_bars_are_readable(picture, figures, tmp_path):
    """Whatever is drawn through a colour map has a colour bar of its scale (the residuals on
    the detector and the scan maximum had none); every log colour bar has at least 3
    labelled ticks."""
    from matplotlib.colors import LogNorm

    PICTURES[picture](tmp_path / "picture.png")
    fig, = figures
    mapped = _colour_mapped(fig)
    assert mapped or picture == "calibration without an image"
    bars = {a.colorbar for a in mapped} - {None}
    for artist in mapped:
        assert any(_same_scale(artist, bar.mappable) for bar in bars), artist
    for bar in bars:
        if isinstance(bar.norm, LogNorm):
            assert len(_labelled_ticks(bar)) >= 3, (picture, bar.long_axis.get_label_text())


def _title_of(figures) -> str:
    """The title of the last picture's first detector axes, on one line."""
    return next(ax.get_title().replace("\n", " ") for ax in figures[-1].axes
                if ax.get_xlabel() == "column (pixel)")


def _legend_of(figures) -> list[str]:
    legend = figures[-1].axes[0].get_legend()
    return [] if legend is None else [text.get_text() for text in legend.get_texts()]


def test_the_calibration_says_only_what_is_drawn(figures, tmp_path):
    """The control points are drawn where the picture promises them (white circles, seen)
    and the title and legend leave out what is not drawn: no control points of an imported
    PONI, no direct beam off the detector, no image without one."""
    _draw_calibration(tmp_path / "refined.png")
    assert _title_of(figures) == "calibration image (log)"
    assert _legend_of(figures) == ["predicted rings", "control points", "direct beam"]
    circles, = [c for c in figures[-1].axes[0].collections if len(c.get_offsets()) == 3]
    np.testing.assert_array_equal(circles.get_offsets(), [[306, 97], [240, 31], [150, 97]])
    assert circles.get_sizes()[0] >= 10 and tuple(circles.get_edgecolor()[0]) == (1, 1, 1, 1)
    _draw_calibration(tmp_path / "imported.png", control_points=False, beam_on_detector=False)
    assert _legend_of(figures) == ["predicted rings"]
    _draw_calibration(tmp_path / "no_image.png", image=False, control_points=False)
    assert _title_of(figures) == "detector gaps (grey)"
    assert _legend_of(figures) == ["predicted rings", "direct beam"]


def test_the_mask_title_names_the_scan_maximum_only_when_drawn(figures, tmp_path):
    _draw_mask(tmp_path / "with.png")
    assert _title_of(figures) == "pixel mask over the scan maximum (log)"
    _draw_mask(tmp_path / "without.png", scan_maximum=False)
    assert _title_of(figures) == "pixel mask"
    _draw_mask(tmp_path / "crowded.png", max_ellipses=1)
    assert _title_of(figures) == "pixel mask over the scan maximum (log); 2 regions: see middle"
    assert "found peak" not in _legend_of(figures)


def test_plot_slices(tmp_path, caplog):
    grid = small_grid(n=(25, 25, 9))
    vol = random_volume(grid, 2, sample_=sample("P 6/m m m", HEX))
    write_volume(tmp_path / "v.nxs", vol, {})
    log = logging.getLogger("test")
    with caplog.at_level(logging.WARNING):
        drawn = plot_slices(tmp_path / "v.nxs", [{"l": 0}, {"k": 0.5}, {"h": -1}, {"l": 5}],
                            tmp_path / "v.png", "test", log=log)
    assert drawn == ["l = 0", "k = 0.5", "h = -1"]
    assert "l = 5.0 is outside the grid" in caplog.text
    assert (tmp_path / "v.png").stat().st_size > 10_000
    # the plane read from the file is the volume's plane
    sl = read_slice(tmp_path / "v.nxs", {"k": 0.5})
    np.testing.assert_allclose(sl.data, vol.intensity()[:, grid.slice_index("k", 0.5), :],
                               rtol=1e-6, equal_nan=True)
    assert (sl.u, sl.v) == ("h", "l")
    # hexagonal HK0 drawn with the 60 deg between a* and b*, to scale
    M = plane_matrix(UnitCell(*HEX), "h", "k")
    assert np.degrees(np.arctan2(M[1, 1], M[0, 1])) == pytest.approx(60.0)
    assert np.hypot(*M[:, 1]) == pytest.approx(M[0, 0]) == pytest.approx(1 / (4.5 * np.sin(np.pi / 3)))
    # an in-memory volume works too
    assert plot_slices(vol, [{"h": 0}], tmp_path / "m.png", "mem") == ["h = 0"]


@pytest.mark.parametrize("note_at", [0.5, 0.98])
def test_pictures_cropped_from_one_draw_match_savefigs_tight_box(tmp_path, note_at):
    """save_tight cuts the image drawn once to the box savefig(bbox_inches="tight") draws
    again into: the same size to a pixel on each side (rounded out), the content in the
    same place; a note drawn beyond the figure's right edge (0.98) makes it savefig's own
    picture, canvas grown."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    from hklflow.pictures.figure import save_tight

    fig = plt.figure(figsize=(6, 4))
    ax = fig.add_subplot(1, 1, 1)
    ax.imshow(np.arange(400.0).reshape(20, 20))
    ax.set_title("a title")
    fig.suptitle("a suptitle")
    fig.text(note_at, 0.02, "a note near the bottom", ha="left")
    fig.savefig(tmp_path / "two_draws.png", dpi=100, bbox_inches="tight")
    save_tight(fig, tmp_path / "one_draw.png", 100)
    plt.close(fig)
    want = np.asarray(Image.open(tmp_path / "two_draws.png").convert("RGB")).astype(int)
    got = np.asarray(Image.open(tmp_path / "one_draw.png").convert("RGB")).astype(int)
    if note_at > 0.9:
        assert want.shape[1] > 600 and np.array_equal(got, want)  # grown beyond 6 in
        return
    assert 0 <= got.shape[0] - want.shape[0] <= 2 and 0 <= got.shape[1] - want.shape[1] <= 2

    def content(a):  # the box of what is not white
        rows, cols = np.nonzero((a < 250).any(-1))
        return rows.max() - rows.min(), cols.max() - cols.min()
    assert np.abs(np.subtract(content(got), content(want))).max() <= 1
