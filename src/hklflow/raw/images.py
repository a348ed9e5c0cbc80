"""Reading single images (a calibrant image, a user mask) and frame files: TIFF, CBF, EDF, ...
through fabio, HDF5 through h5py.  Every failure is an error naming the file (and dataset
and frame): ImageReadError for single images, RawDataError for raw frames.  Apart from the
frame reader (hklflow.raw.frames) so that the domain modules that read one image do not import
the frame reader."""
from __future__ import annotations

import logging
import threading
from pathlib import Path

import h5py
import numpy as np

from ..base.errors import ImageReadError, RawDataError
from ..files.h5 import open_h5
from ..model.scan import DEFAULT_DATASET
from ..settings.params import DetectorParams
from .rawfiles import is_hdf5_path


def open_hdf5(path: str, error=RawDataError, *, swmr: bool = False) -> h5py.File:
    """files.h5.open_h5 (read-only), with `error` naming the file when it cannot open.
    swmr: as a reader of a file a detector may still be writing (SWMR), whose frames so far
    it then sees consistently (a file that is not being written opens the same)."""
    try:
        return open_h5(path, swmr=True) if swmr else open_h5(path)
    except FileNotFoundError:
        what = "raw data file" if error is RawDataError else "file"
        raise error(f"{path}: {what} does not exist") from None
    except Exception as exc:
        raise error(f"{path}: cannot open as HDF5 (truncated or corrupt file?): {exc}") from None


class _FabioErrors(logging.Handler):
    """Collects ERROR records that fabio logs in this thread while reading one file
    (fabio logs, rather than raises, e.g. a CBF checksum mismatch or a short EDF)."""

    def __init__(self):
        super().__init__(level=logging.ERROR)
        self.thread = threading.get_ident()
        self.messages: list[str] = []

    def emit(self, record):
        if record.thread == self.thread:
            self.messages.append(record.getMessage())


def read_fabio(path: str, frame: int = 0, where: str | None = None,
                error=RawDataError) -> tuple[np.ndarray, int]:
    """(frame `frame` of a fabio image file, the file's frame count); `error` (naming the
    file, or `where`) on failure, also when fabio only logs the problem."""
    # (here: fabio only for images that are not HDF5)
    import fabio

    where = where or str(path)
    what = "frame file" if error is RawDataError else "image file"
    logger = logging.getLogger("fabio")
    handler = _FabioErrors()
    old_level = logger.level
    if logger.getEffectiveLevel() > logging.ERROR:
        logger.setLevel(logging.ERROR)
    logger.addHandler(handler)
    try:
        with fabio.open(str(path)) as img:
            nframes = int(getattr(img, "nframes", 1) or 1)
            if frame >= nframes:
                raise error(f"{where}: frame {frame} out of range: the file has {nframes} "
                            "frame(s)")
            data = img.data if frame == 0 else img.getframe(frame).data
            data = None if data is None else np.array(data)  # own the memory
    except RawDataError:
        raise
    except Exception as exc:
        raise error(f"{where}: not a readable {what} (TIFF/CBF/EDF/... via fabio; "
                    f"truncated, corrupt or unknown format?): {type(exc).__name__}: {exc}") from None
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
    if handler.messages:
        raise error(f"{where}: the {what} is corrupt or truncated: "
                    + "; ".join(handler.messages))
    if data is None:
        raise error(f"{where}: no image data in the {what}")
    return data, nframes


# --------------------------------------------------------------------------------------
# Single images (calibrant image, user mask)
# --------------------------------------------------------------------------------------
def _as_image(data, where: str) -> np.ndarray:
    arr = np.asarray(data)
    if arr.ndim != 2:
        raise ImageReadError(f"{where}: expected a 2D image, got an array of shape {arr.shape}")
    if arr.size == 0:
        raise ImageReadError(f"{where}: the image is empty (shape {arr.shape})")
    return arr


def _read_hdf5_image(path: Path, dataset: str, frame: int) -> np.ndarray:
    where = f"{path}::{dataset}"
    with open_hdf5(str(path), ImageReadError) as f:
        try:
            obj = f.get(dataset)
        except Exception as exc:  # broken links, bad path syntax
            raise ImageReadError(f"{where}: cannot resolve the dataset path: {exc}") from None
        if obj is None:
            raise ImageReadError(f"{path}: no dataset {dataset!r} in the file (top-level "
                                 f"entries: {sorted(f.keys())}); set 'dataset' to the image's path")
        if not isinstance(obj, h5py.Dataset):
            raise ImageReadError(f"{where}: is a group, not a dataset; expected the path of "
                                 f"a 2D image or a 3D (frames, rows, cols) stack "
                                 f"(members: {sorted(obj.keys())[:10]})")
        shape = obj.shape
        if len(shape) not in (2, 3):
            raise ImageReadError(f"{where}: expected a 2D image or a 3D (frames, rows, cols) "
                                 f"stack, got a dataset of shape {shape}")
        count = shape[0] if len(shape) == 3 else 1
        if frame >= count:
            raise ImageReadError(f"{where}: frame {frame} out of range: the stack has "
                                 f"{count} frame(s) (shape {shape})")
        try:
            data = obj[frame] if len(shape) == 3 else obj[()]
        except Exception as exc:  # decompression failure, truncated chunks, missing filter
            raise ImageReadError(f"{where}: cannot read frame {frame} (corrupt data or "
                                 f"missing compression filter?): {exc}") from None
    return _as_image(data, f"{where} frame {frame}")


def read_image(path, dataset: str = DEFAULT_DATASET, frame: int = 0) -> np.ndarray:
    """One 2D image (rows, cols) from a TIFF/CBF/EDF file (fabio) or an HDF5 file (h5py).

    HDF5 files are recognised by their suffix or signature; `dataset` is the path of the
    image inside (a 2D dataset, or a 3D (frames, rows, cols) stack of which `frame` is
    taken).  For fabio formats holding several frames, `frame` selects one.  The dtype of
    the file is kept (Pilatus images are int32, gaps and bad pixels negative).  Every
    failure is an ImageReadError naming the file (and dataset and frame).
    """
    p = Path(path)
    if isinstance(frame, bool) or not isinstance(frame, (int, np.integer)) or frame < 0:
        raise ImageReadError(f"frame must be a non-negative integer, got {frame!r}")
    if not p.exists():
        raise ImageReadError(f"{p}: no such image file")
    if not p.is_file():
        raise ImageReadError(f"{p}: not a regular file (expected an image file)")
    if is_hdf5_path(p) or h5py.is_hdf5(p):
        return _read_hdf5_image(p, dataset, int(frame))
    data, _ = read_fabio(str(p), int(frame), error=ImageReadError)
    return _as_image(data, f"{p} frame {frame}")


# --------------------------------------------------------------------------------------
# Pixel mask
# --------------------------------------------------------------------------------------
def user_mask(detector: DetectorParams, shape) -> np.ndarray:
    """bool (rows, cols), True = not used: the user's mask file (instrument.detector.
    mask_file: any image fabio reads, or HDF5/NeXus; non-zero = masked), all False
    without one."""
    if not detector.mask_file:
        return np.zeros(tuple(shape), dtype=bool)
    image = np.asarray(read_image(detector.mask_file, dataset=detector.mask_dataset))
    m = image != 0
    if m.shape != tuple(shape):
        raise ImageReadError(f"{detector.mask_file}: mask shape {m.shape} differs from the "
                             f"detector's {tuple(shape)} (instrument.detector.mask_file)")
    if m.all():  # nothing could ever be measured: stop before every scan reads as empty
        values = ("NaN everywhere" if np.issubdtype(image.dtype, np.floating)
                  and np.isnan(image).all() else "no pixel is 0")
        raise ImageReadError(f"{detector.mask_file}: the mask leaves no pixel ({values}; "
                             "non-zero = masked): expected 0 at the pixels to use "
                             "(instrument.detector.mask_file)")
    return m
