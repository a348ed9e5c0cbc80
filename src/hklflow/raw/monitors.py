"""Per-frame monitors kept outside the frames' HDF5 files: of scans of single-frame files
(CBF/TIFF/EDF), which have no HDF5 file to hold one, and of HDF5 scans whose monitor another
program recorded (hklflow import nxrefine writes NXRefine's as column files).  On a row of
frame files, ``monitor`` names either

* a column file: text, relative to the experiment directory, one value per frame in frame
  order, or two columns, the frame number and the value, the frame numbers consecutive
  from any first one (0 or 1, as the frame files are numbered); columns separated by
  spaces, tabs or a comma; ``#`` starts a comment; blank lines are skipped; or
* ``cbf:FIELD``: the FIELD line of each frame's Pilatus CBF header, e.g. ``cbf:Flux`` for
  ``# Flux 2.35e+11`` (the lines fabio's PilatusHeader reads, split as it splits them).

On a row of HDF5 data it is the path of a dataset in the data file, or a column file whose
name ends in one of COLUMN_FILE_SUFFIXES.

Values are counts or fluxes: finite and >= 0.  The scans table is checked when it is read
(check_row_monitor, from hklflow.planning.config): the column file whole, the header of one
frame file; ingest reads every frame's header (it opens every frame file to fingerprint it
anyway) and stores the values in scan.nxs as it stores an HDF5 monitor's.
"""
from __future__ import annotations

import glob
import math
import os
import re
from pathlib import Path

import numpy as np

from ..base.errors import ConfigError
from ..files.cbf_header import CbfHeader, CbfHeaderTooLong, NotCbfError, read_cbf_header
from .rawfiles import is_hdf5_path

CBF_HEADER_PREFIX = "cbf:"
# a monitor of an HDF5 row naming a file with one of these endings is a column file (no
# dataset path ends so)
COLUMN_FILE_SUFFIXES = (".txt", ".dat", ".csv", ".tsv")
# what a row's monitor is (monitor_kind)
NO_MONITOR, HDF5_DATASET, CBF_HEADER, COLUMN_FILE = "", "dataset", "cbf header", "column file"

# a column file this much larger than its frames need is some other file (raw data?):
# refused unread (the table's check reads it at every parse)
COLUMN_FILE_BYTES_PER_FRAME = 256
_COLUMN_SEPARATORS = re.compile(r"[\s,]+")


def monitor_kind(data: str, monitor: str) -> str:
    """What a row's monitor names: NO_MONITOR, an HDF5_DATASET of its HDF5 data, a
    CBF_HEADER field (rows of frame files) or a COLUMN_FILE (rows of frame files; rows of HDF5
    data where its name ends in one of COLUMN_FILE_SUFFIXES)."""
    if not monitor:
        return NO_MONITOR
    if is_hdf5_path(data):
        return COLUMN_FILE if monitor.lower().endswith(COLUMN_FILE_SUFFIXES) else HDF5_DATASET
    return CBF_HEADER if monitor.lower().startswith(CBF_HEADER_PREFIX) else COLUMN_FILE


def monitor_norm(monitor, reference) -> tuple[np.ndarray, float]:
    """Which frames a monitor can scale (finite and > 0), and the norm they are scaled to
    (frame scale = norm / monitor): reduction.transform.monitor_reference, else the median
    of the good frames' monitor.  The one rule of the transform and of NXRefine's monitor
    weights."""
    monitor = np.asarray(monitor, dtype=np.float64)
    good = np.isfinite(monitor) & (monitor > 0)
    return good, (float(reference) if reference else float(np.median(monitor[good])))


def monitor_file(row) -> str | None:
    """The column file a row's monitor is read from (an input of its ingest), if it is one
    (row: model.scan.ScanRow)."""
    return row.monitor if monitor_kind(row.data, row.monitor) == COLUMN_FILE else None


def a_frame_file(data: str, base_dir=".") -> str | None:
    """One frame file of a row's data (a path or glob pattern, relative to base_dir), the
    first the directory listing gives (any frame's header has the fields of all), without
    listing them in order; None while there is none."""
    pattern = os.path.join(os.fspath(base_dir), data)
    candidates = glob.iglob(pattern) if glob.has_magic(data) else iter([pattern])
    return next((f for f in candidates if os.path.isfile(f)), None)


def header_field(monitor: str) -> str:
    """The CBF header field of a monitor cbf:FIELD ('cbf:Flux' -> 'Flux')."""
    return monitor[len(CBF_HEADER_PREFIX):].strip()


# --------------------------------------------------------------------------------------
# Column files
# --------------------------------------------------------------------------------------
def read_column_file(path, nframes: int, *, more_allowed: bool = False,
                     shown: str | None = None) -> np.ndarray:
    """The nframes values (float64) of a column file (module docstring); ValueError naming
    the file (as `shown`) and the line.  more_allowed: a scan still being collected, whose
    file may already hold the values of frames still to come (the first nframes are taken)."""
    shown = shown or str(path)
    try:
        size = os.path.getsize(path)
    except OSError as exc:
        raise ValueError(f"{shown}: cannot read the monitor's column file: {exc.strerror} "
                         "(expected a text file of one value per frame, relative to the "
                         "experiment directory, or cbf:FIELD)") from None
    if not os.path.isfile(path):
        raise ValueError(f"{shown}: not a file (expected a text file of one value per frame)")
    if size > (1 << 20) + COLUMN_FILE_BYTES_PER_FRAME * nframes and not more_allowed:
        raise ValueError(f"{shown}: {size} bytes, too many for a column file of {nframes} "
                         "values (a raw data file given?): expected a text file of one value "
                         "per frame")
    values, numbers, columns = [], [], None
    try:
        with open(path, encoding="utf-8") as f:
            for line_no, line in enumerate(f, start=1):
                cells = [c for c in _COLUMN_SEPARATORS.split(line.split("#", 1)[0]) if c]
                if not cells:
                    continue
                where = f"{shown}: line {line_no}"
                if columns is None:
                    columns = len(cells)
                if len(cells) > 2:
                    raise ValueError(f"{where}: {len(cells)} columns, expected one (a value) "
                                     "or two (a frame number and a value)")
                if len(cells) != columns:
                    raise ValueError(f"{where}: {len(cells)} column(s), expected {columns} "
                                     "like the first line of values")
                if columns == 2:
                    numbers.append(_frame_number(cells[0], numbers, where))
                values.append(_monitor_value(cells[-1], where))
                if more_allowed and len(values) == nframes:
                    break  # (a scan being collected: the frames still to come are not read)
    except UnicodeDecodeError:
        raise ValueError(f"{shown}: not a text file (expected one value per frame, '#' for "
                         "comments)") from None
    if len(values) < nframes or (len(values) > nframes and not more_allowed):
        layout = " (frame number, value)" if columns == 2 else ""
        raise ValueError(f"{shown}: {len(values)} values{layout}, expected one per frame: the "
                         f"row's nframes is {nframes}")
    return np.asarray(values[:nframes], dtype=np.float64)


def _frame_number(cell: str, before: list, where: str) -> int:
    try:
        number = int(cell)
    except ValueError:
        raise ValueError(f"{where}: frame number {cell!r} is not an integer (two columns: "
                         "frame number and value; comment lines start with '#')") from None
    if before and number != before[-1] + 1:
        raise ValueError(f"{where}: frame number {number} after {before[-1]}: expected "
                         "consecutive frame numbers, one line per frame")
    return number


def _monitor_value(cell: str, where: str) -> float:
    try:
        value = float(cell)
    except ValueError:
        raise ValueError(f"{where}: {cell!r} is not a number (comment lines start with "
                         "'#')") from None
    if not math.isfinite(value):
        raise ValueError(f"{where}: {cell} is not a finite number: expected a count or flux "
                         ">= 0 for every frame")
    if value < 0:
        raise ValueError(f"{where}: {cell} is negative: expected a count or flux >= 0")
    return value


# --------------------------------------------------------------------------------------
# CBF headers (read by hklflow.files.cbf_header)
# --------------------------------------------------------------------------------------
def _header(path: str, shown: str | None = None) -> CbfHeader:
    """read_cbf_header, its messages saying what cbf:FIELD needs."""
    try:
        return read_cbf_header(path, shown)
    except NotCbfError as exc:
        raise ValueError(f"{exc}: cbf:FIELD reads the header of CBF frame files") from None
    except CbfHeaderTooLong:
        raise ValueError(f"{shown or path}: a CBF file without its binary section (truncated "
                         "or corrupt?)") from None


def cbf_header_value(path: str, field: str, shown: str | None = None) -> float | None:
    """The number on the FIELD line of a CBF file's header (case aside), None without such a
    line; ValueError naming the file (as `shown`) when it is no CBF or the value no number."""
    return _header(path, shown).number(field)


def numeric_header_fields(path: str) -> list[str]:
    """The fields of a CBF header with a number (what cbf:FIELD may name), in its order."""
    return _header(path).numeric_fields()


def missing_field_message(path: str, field: str, where: str | None = None) -> str:
    found = numeric_header_fields(path)
    return (f"{where or path}: no {field!r} line in its CBF header: expected cbf:FIELD with "
            f"a field of the header ({', '.join(found) if found else 'none with a number'})")


def check_one_frame_header(data: str, monitor: str, base_dir=".") -> None:
    """ValueError when a row's monitor cbf:FIELD names no field, or one frame file of its data
    (relative to base_dir; any, none while there is none) has no such field in its header or
    a value there that is no count; as named in the row (a path relative to base_dir)."""
    field = header_field(monitor)
    if not field:
        raise ValueError(f"{monitor!r} names no header field: expected cbf:FIELD, e.g. cbf:Flux")
    frame_file = a_frame_file(data, base_dir)
    if frame_file is None:
        return
    shown = os.path.join(os.path.dirname(data), os.path.basename(frame_file))
    value = cbf_header_value(frame_file, field, shown)
    if value is None:
        raise ValueError(missing_field_message(frame_file, field, shown))
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{shown}: {field} {value} in its CBF header: expected a finite "
                         "count or flux >= 0")


def header_monitor(files, field: str) -> np.ndarray:
    """The FIELD value of each frame file's CBF header (float64, in the files' order);
    ValueError naming the file and frame without it, with a value < 0 or not finite, or
    naming the scan where it is 0 in every frame (Pilatus writes 'Flux 0' when the beamline
    gives it no flux)."""
    values = np.empty(len(files), dtype=np.float64)
    for i, path in enumerate(files):
        value = cbf_header_value(path, field)
        if value is None:
            raise ValueError(missing_field_message(path, field, f"{path}: frame {i}"))
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"{path}: frame {i}: {field} {value} in its CBF header: expected "
                             f"a finite count or flux >= 0 (monitor cbf:{field})")
        values[i] = value
    if len(files) and not values.any():
        raise ValueError(f"{files[0]}: {field} is 0 in the CBF header of every frame "
                         f"({len(files)}): the detector was given no {field} (Pilatus writes "
                         "0 then): expected the monitor from a column file (scans table, "
                         "field 'monitor'), or none")
    return values


def check_row_monitor(scan, label: str, base_dir: Path) -> None:
    """A scans-table row's monitor (scan: model.scan.ScanRow; label: 'TABLE: row N'), as far
    as reading the table may check it, ConfigError naming the row and field: its kind fits
    the row's data, a column file is read whole, the CBF header of one frame file has the
    field (ingest reads every frame's: millions of files are not read while planning)."""
    kind = monitor_kind(scan.data, scan.monitor)
    where = f"{label} ({scan.id}): field 'monitor'"
    given = scan.monitor
    if kind == HDF5_DATASET and given.lower().startswith(CBF_HEADER_PREFIX):
        raise ConfigError(f"{where}: {given!r} reads the header of CBF frame files, but the "
                          f"row's data {scan.data} are HDF5: expected the path of a dataset "
                          "in the data file, with one value per frame")
    if kind == HDF5_DATASET and (base_dir / given).is_file():
        raise ConfigError(f"{where}: {given} is a file: on a row of HDF5 data the monitor is "
                          "the path of a dataset in the data file, or a column file whose name "
                          f"ends in {', '.join(COLUMN_FILE_SUFFIXES)}")
    if kind == COLUMN_FILE and not (base_dir / given).exists():
        relative = "" if Path(given).is_absolute() else (
            f" (relative to the experiment directory {base_dir.resolve()})")
        raise ConfigError(f"{where}: {given} does not exist{relative}: expected a text file "
                          "of one value per frame" + (
                              "" if is_hdf5_path(scan.data) else
                              ", or cbf:FIELD for a field of the frames' CBF headers, e.g. "
                              "cbf:Flux (a dataset path is the monitor of rows whose data are "
                              "HDF5 files)"))
    try:
        if kind == COLUMN_FILE:
            read_column_file(base_dir / given, scan.nframes, more_allowed=scan.in_progress,
                             shown=given)
        elif kind == CBF_HEADER:
            check_one_frame_header(scan.data, given, base_dir)
    except OSError as exc:
        raise ConfigError(f"{where}: {exc.filename or given}: cannot be read: "
                          f"{exc.strerror or exc}") from None
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None
