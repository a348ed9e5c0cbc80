"""The errors hklflow raises on purpose: each message names the file (or config field) and
says what was expected, so that a step can stop with one line the user can act on.

Every step command runs under :func:`hklflow.steps._run.run_step`, which turns any of these
into that one line (and exit status 1) and removes the step's outputs.  Anything else that
escapes a step is a bug: it is logged with its traceback.
"""
from __future__ import annotations


class HklflowError(Exception):
    """Base of the errors a user can act on."""


class ConfigError(HklflowError, ValueError):
    """An invalid configuration, scans table or step setting (names file, row and field)."""


class RawDataError(HklflowError, RuntimeError):
    """Raw data missing, unreadable, not as the scans table says, or changed since ingest
    (names the file and, when known, the frame)."""


class ImageReadError(RawDataError, ValueError):
    """A single image (calibrant image, user mask file) could not be read."""


class FileFormatError(HklflowError, ValueError):
    """A file hklflow reads (an output of another step) lacks what is needed, or is of an
    older layout (names the file and the missing path)."""


class InputMismatchError(HklflowError, ValueError):
    """Input files that do not belong together (peaks of another scan, volumes on different
    grids, an orientation of another sample)."""


class CalibrationError(HklflowError, RuntimeError):
    """A powder calibration that cannot be accepted."""


class IndexingError(HklflowError, RuntimeError):
    """No orientation indexes enough of the observed peaks."""


class RefinementError(HklflowError, RuntimeError):
    """The peaks do not fit the model (too few indexed, diverging fit)."""


class GridError(HklflowError, ValueError):
    """A grid that does not suit the operation (e.g. not mapped onto itself by the Laue
    group); the message names the config keys to change."""
