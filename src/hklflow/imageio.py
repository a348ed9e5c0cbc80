"""Reading one 2D detector image: TIFF/CBF/EDF (and other fabio formats) or HDF5.

Only reads: files are opened read-only and never modified (raw data are sacred).

    read_image(path, dataset="/entry/data/data", frame=0) -> numpy.ndarray (rows, cols)

Every failure raises `ImageReadError` (a ValueError) whose message names the file (and the
dataset and frame for HDF5) and says what was expected.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

HDF5_SUFFIXES = (".h5", ".hdf5", ".hdf", ".nxs", ".nx5", ".nx")
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


class ImageReadError(ValueError):
    """An image could not be read; the message names the file and what was expected."""


def _is_hdf5(path: Path) -> bool:
    if path.suffix.lower() in HDF5_SUFFIXES:
        return True
    try:
        with open(path, "rb") as f:
            return f.read(8) == HDF5_SIGNATURE
    except OSError:
        return False


def _check_frame(frame) -> int:
    if isinstance(frame, bool) or not isinstance(frame, (int, np.integer)) or frame < 0:
        raise ImageReadError(f"frame must be a non-negative integer, got {frame!r}")
    return int(frame)


def _as_image(data, where: str) -> np.ndarray:
    arr = np.asarray(data)
    if arr.ndim != 2:
        raise ImageReadError(f"{where}: expected a 2D image, got an array of shape {arr.shape}")
    if arr.size == 0:
        raise ImageReadError(f"{where}: the image is empty (shape {arr.shape})")
    return arr


def _read_hdf5(path: Path, dataset: str, frame: int) -> np.ndarray:
    import hdf5plugin  # noqa: F401  (registers the compression filters: bitshuffle, LZ4, ...)
    import h5py

    where = f"{path}::{dataset}"
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise ImageReadError(f"{path}: not a readable HDF5 file (corrupt or truncated?): "
                             f"{exc}") from None
    with f:
        try:
            obj = f.get(dataset)
        except Exception as exc:  # broken links, bad path syntax
            raise ImageReadError(f"{where}: cannot resolve the dataset path: {exc}") from None
        if obj is None:
            top = sorted(f.keys())
            raise ImageReadError(f"{path}: no dataset {dataset!r} in the file (top-level "
                                 f"entries: {top}); set 'dataset' to the image's path")
        if not isinstance(obj, h5py.Dataset):
            raise ImageReadError(f"{where}: is a group, not a dataset; expected the path of "
                                 f"a 2D image or a 3D (frames, rows, cols) stack "
                                 f"(members: {sorted(obj.keys())[:10]})")
        shape = obj.shape
        try:
            if len(shape) == 3:
                if frame >= shape[0]:
                    raise ImageReadError(f"{where}: frame {frame} out of range: the stack "
                                         f"has {shape[0]} frame(s) (shape {shape})")
                data = obj[frame]
            elif len(shape) == 2:
                if frame != 0:
                    raise ImageReadError(f"{where}: frame {frame} out of range: the dataset "
                                         f"is a single 2D image (shape {shape})")
                data = obj[()]
            else:
                raise ImageReadError(f"{where}: expected a 2D image or a 3D (frames, rows, "
                                     f"cols) stack, got a dataset of shape {shape}")
        except ImageReadError:
            raise
        except Exception as exc:  # decompression failure, truncated chunks, missing filter
            raise ImageReadError(f"{where}: cannot read frame {frame} (corrupt data or "
                                 f"missing compression filter?): {exc}") from None
    return _as_image(data, f"{where} frame {frame}")


def _read_fabio(path: Path, frame: int) -> np.ndarray:
    import fabio

    try:
        img = fabio.open(str(path))
    except Exception as exc:  # fabio raises IOError, ValueError, struct.error, ... on bad files
        raise ImageReadError(f"{path}: not a readable image file (TIFF/CBF/EDF/... via "
                             f"fabio; corrupt or unknown format?): "
                             f"{type(exc).__name__}: {exc}") from None
    try:
        nframes = int(getattr(img, "nframes", 1) or 1)
        if frame >= nframes:
            raise ImageReadError(f"{path}: frame {frame} out of range: the file has "
                                 f"{nframes} frame(s)")
        data = img.data if frame == 0 else img.getframe(frame).data
        if data is None:
            raise ImageReadError(f"{path}: the file holds no image data")
        data = np.array(data)  # own the memory; fabio may keep the file open otherwise
    except ImageReadError:
        raise
    except Exception as exc:
        raise ImageReadError(f"{path}: cannot read frame {frame}: "
                             f"{type(exc).__name__}: {exc}") from None
    finally:
        close = getattr(img, "close", None)
        if close is not None:
            close()
    return _as_image(data, f"{path} frame {frame}")


def read_image(path, dataset: str = "/entry/data/data", frame: int = 0) -> np.ndarray:
    """One 2D image (rows, cols) from a TIFF/CBF/EDF file (fabio) or an HDF5 file (h5py).

    HDF5 files are recognised by their suffix or signature; `dataset` is the path of the
    image inside (a 2D dataset, or a 3D (frames, rows, cols) stack of which `frame` is
    taken).  For fabio formats holding several frames, `frame` selects one.  The dtype of
    the file is kept (Pilatus images are int32, gaps and bad pixels negative).
    """
    p = Path(path)
    frame = _check_frame(frame)
    if not p.exists():
        raise ImageReadError(f"{p}: no such image file")
    if not p.is_file():
        raise ImageReadError(f"{p}: not a regular file (expected an image file)")
    if _is_hdf5(p):
        return _read_hdf5(p, dataset, frame)
    return _read_fabio(p, frame)
