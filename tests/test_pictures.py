"""hklflow.pictures: the detector images of the peak and mask pictures, reduced by blocks."""
import math

import numpy as np

from hklflow.pictures import _reduced_log_image


def test_a_2m_image_is_reduced_by_its_block_maxima_and_keeps_its_extent():
    rows, cols = 1679, 1475  # a Pilatus 2M: blocks of 3 x 3 pixels
    image = np.zeros((rows, cols), np.int32)
    image[1000, 700] = 1000  # one bright pixel: kept by the maximum of its block
    image[1001, 701] = 10
    image[200:217, :] = -1  # a gap
    image[rows - 1, cols - 1] = 100  # in the last, partial block
    img, extent = _reduced_log_image(image)
    assert img.shape == (math.ceil(rows / 3), math.ceil(cols / 3))
    np.testing.assert_allclose([img[1000 // 3, 700 // 3], img[-1, -1]], [3.0, 2.0], rtol=1e-6)
    assert np.isnan(img[210 // 3]).all()  # nothing positive: NaN, as before the reduction
    assert np.count_nonzero(np.isfinite(img)) == 2
    # the picture's axes stay in detector pixels: 3 x 492 columns, 3 x 560 rows
    assert extent == (-0.5, 1475.5, -0.5, 1679.5)


def test_a_small_image_is_drawn_pixel_for_pixel():
    image = np.arange(12, dtype=np.float32).reshape(3, 4)
    img, extent = _reduced_log_image(image)
    with np.errstate(divide="ignore"):
        expected = np.where(image > 0, np.log10(image), np.nan)
    np.testing.assert_array_equal(img, expected.astype(np.float32))
    assert extent == (-0.5, 3.5, -0.5, 2.5)


def test_artists_take_their_properties_without_the_set_docstrings():
    """hklflow.pictures leaves out the docstrings matplotlib makes for every Artist's `set`
    as its class is defined (~0.25 CPU-s of each drawing job): help text only; `set` still
    takes every property, and pictures draw (the other tests)."""
    import matplotlib.artist

    import hklflow.pictures  # noqa: F401
    from matplotlib.lines import Line2D

    assert matplotlib.artist.kwdoc(Line2D) == ""
    line = Line2D([0, 1], [0, 1])
    line.set(color="r", linewidth=2.5, alpha=0.5)
    assert (line.get_color(), line.get_linewidth(), line.get_alpha()) == ("r", 2.5, 0.5)


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

    from hklflow.pictures import _new_figure, _save_tight

    for beyond in (False, True):
        fig = _new_figure((3, 2))
        ax = fig.add_subplot()
        ax.imshow(np.arange(64.0).reshape(8, 8))
        if beyond:
            ax.text(5.0, 0.5, "beyond the right edge", transform=ax.transAxes)
        path = tmp_path / f"beyond_{beyond}.png"
        _save_tight(fig, path, 90)
        assert _zlib_levels(path) == [0]
        with Image.open(path) as im:
            assert round(im.info["dpi"][0]) == 90
            # (cropped: inside the figure's 3 x 90 pixels; through savefig: wider)
            assert (im.size[0] > 270) == beyond and im.size[0] > 100


def test_pdf_planes_are_drawn_to_scale_on_a_skewed_cell(tmp_path):
    """A PDF plane is an image mapped by the plane's matrix: voxel edges and points inside
    land where the matrix puts them in Angstrom (a hexagonal cell: x and y at 120 degrees),
    the axes span the skewed plane's corners, and the values are the plane's."""
    from hklflow.crystal import UnitCell
    from hklflow.pictures import _draw_pdf_plane, _new_figure, _real_plane_matrix, _save_tight

    cell = UnitCell(4.0, 4.0, 6.5, 90, 90, 120)
    uu, vv = np.linspace(-5, 5, 41), np.linspace(-4, 4, 33)
    plane = np.cos(np.add.outer(vv, uu))
    fig = _new_figure((6, 5))
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
    _save_tight(fig, tmp_path / "hex.png", 80)
    assert (tmp_path / "hex.png").stat().st_size > 1000
