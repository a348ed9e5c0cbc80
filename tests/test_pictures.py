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
