"""hklflow.raw.images: one image read (a calibrant image, a user mask) from CBF, EDF, TIFF or
an HDF5 dataset, read-only; every way a file can fail named with the file, the dataset and
the frame."""
from __future__ import annotations

import fabio
import h5py
import numpy as np
import pytest

from hklflow.base.errors import ImageReadError
from hklflow.raw.frames import read_image

from experiment_helpers import write_h5


def test_read_image_formats(tmp_path):
    img = (np.arange(12 * 10, dtype=np.int32).reshape(12, 10) - 5)
    fabio.cbfimage.CbfImage(data=img).write(str(tmp_path / "a.cbf"))
    fabio.edfimage.EdfImage(data=img).write(str(tmp_path / "a.edf"))
    fabio.tifimage.TifImage(data=img).write(str(tmp_path / "a.tif"))
    for name in ("a.cbf", "a.edf", "a.tif"):
        assert np.array_equal(read_image(tmp_path / name), img), name
    stack = np.stack([img, img + 1, img + 2])
    write_h5(tmp_path / "s.h5", stack)  # bitshuffle-LZ4 compressed
    (tmp_path / "s.h5").chmod(0o444)  # read-only: reading must not need write access
    assert np.array_equal(read_image(tmp_path / "s.h5", frame=2), img + 2)
    with h5py.File(tmp_path / "two.nxs", "w") as f:
        f["entry/img"] = img
        f["entry/line"] = np.arange(5)
        f["entry/cube"] = np.zeros((2, 2, 2, 2))
    assert np.array_equal(read_image(tmp_path / "two.nxs", "/entry/img"), img)

    errors = [
        ((tmp_path / "none.h5",), r"none\.h5: no such image file"),
        ((tmp_path / "s.h5", "/entry/nothing"), r"s\.h5: no dataset '/entry/nothing'"),
        ((tmp_path / "s.h5", "/entry/data/data", 3), r"s\.h5::/entry/data/data: frame 3 out "
                                                    r"of range: the stack has 3 frame"),
        ((tmp_path / "two.nxs", "/entry/img", 1), r"two\.nxs::/entry/img: frame 1 out of range"),
        ((tmp_path / "two.nxs", "/entry/line"), r"two\.nxs::/entry/line: expected a 2D image"),
        ((tmp_path / "two.nxs", "/entry/cube"), r"two\.nxs::/entry/cube: expected a 2D image"),
        ((tmp_path / "two.nxs", "/entry"), r"two\.nxs::/entry: is a group"),
        ((tmp_path / "a.cbf", "/x", 1), r"a\.cbf: frame 1 out of range"),
        ((tmp_path,), r"not a regular file"),
    ]
    for args, pattern in errors:
        with pytest.raises(ImageReadError, match=pattern):
            read_image(*args)
    bad = tmp_path / "bad.edf"
    bad.write_bytes(b"\x00\x01garbage" * 100)
    with pytest.raises(ImageReadError, match=r"bad\.edf: not a readable image file"):
        read_image(bad)
    assert issubclass(ImageReadError, ValueError)
