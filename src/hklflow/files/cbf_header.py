"""Headers of CBF frame files (Pilatus miniCBF): hklflow's one reader of them, for a monitor
cbf:FIELD (hklflow.raw.monitors), the NXRefine wrapper's frame time, the angles and direct beam
of scans found by their files (hklflow.live.discover), `hklflow init`, the sensor ingest
compares with the config's, and the check that a frame file being written is whole
(hklflow.live.growing).

A file is read up to its binary section only (plain, .gz or .bz2).  Its '#' lines are split
as fabio's PilatusHeader splits them (its SPACE_LIKE characters ``()#:=,`` are spaces):
``# Beam_xy (1231.00, 1263.00) pixels`` -> ``['Beam_xy', '1231.00', '1263.00', 'pixels']``,
the first word the field's name, compared case aside.  The MIME header of the binary section
(X-Binary-Size, its dimensions) is read as well.  Light: no fabio, no numpy.
"""
from __future__ import annotations

import bz2
import gzip
import math
import os
from dataclasses import dataclass

from ..base.errors import RawDataError

CBF_MAGIC = b"###CBF"  # the first bytes of every CBF file (CBFlib, Pilatus, fabio)
CBF_MIME_BOUNDARY = b"--CIF-BINARY-FORMAT-SECTION--"
CBF_BINARY_MARKER = b"\x0c\x1a\x04\xd5"  # the binary data start after it
CBF_HEADER_LIMIT = 1 << 20  # a file this long without the binary marker is no CBF
_READ_BLOCK = 8192  # a Pilatus header is 1-2 KiB: one read
_PILATUS_SEPARATORS = "()#:=,"  # fabio's PilatusHeader.SPACE_LIKE
_AS_SPACES = str.maketrans(_PILATUS_SEPARATORS, " " * len(_PILATUS_SEPARATORS))

# the quantities of a Pilatus header hklflow reads: field -> (the indices of its numbers
# among the line's words, {index: the units accepted there (case and a final '.' aside)},
# what its numbers are, for messages)
_DEGREES = ("deg", "degree", "degrees")
PILATUS_QUANTITIES = {
    "Wavelength": ((1,), {2: ("a", "angstrom", "angstroms")}, "a wavelength in A"),
    "Start_angle": ((1,), {2: _DEGREES}, "a number of degrees"),
    "Angle_increment": ((1,), {2: _DEGREES}, "a number of degrees"),
    "Detector_distance": ((1,), {2: ("m",)}, "a distance in m"),
    "Beam_xy": ((1, 2), {3: ("pixel", "pixels")}, "(fast, slow) in pixels"),
    "Pixel_size": ((1, 4), {2: ("m",), 3: ("x",), 5: ("m",)}, "pixel sizes in m"),
}


class CbfHeaderError(RawDataError, ValueError):
    """A CBF header that cannot be read (the message names the file); `reason`: the
    message without the file's name."""

    def __init__(self, shown: str, reason: str):
        super().__init__(f"{shown}: {reason}")
        self.reason = reason


class NotCbfError(CbfHeaderError):
    """The file does not start with ###CBF."""


class CbfHeaderUnfinished(CbfHeaderError):
    """The file ends before its binary section: truncated, or still being written."""


class _CbfFileTooShort(NotCbfError, CbfHeaderUnfinished):
    """Shorter than ###CBF (empty, or its first bytes being written): both of the above."""


class CbfHeaderTooLong(CbfHeaderError):
    """No binary section in the first CBF_HEADER_LIMIT bytes."""


@dataclass(frozen=True)
class CbfHeader:
    """A CBF file's header.  lines: the words of each '#' line, split as fabio's
    PilatusHeader splits them; texts: the same lines as written (stripped); binary: the MIME
    header of the binary section, lower-case names -> values; data_start: the offset of the
    binary data (after CBF_BINARY_MARKER), None where the file ends before them (after the
    MIME boundary: truncated, or being written); shown: the file as messages name it."""

    shown: str
    lines: tuple[tuple[str, ...], ...]
    texts: tuple[str, ...]
    binary: dict
    data_start: int | None

    def line(self, field: str) -> tuple[tuple[str, ...], str] | None:
        """(words, text) of the first '#' line of `field` (case aside), or None."""
        wanted = field.lower()
        return next(((words, text) for words, text in zip(self.lines, self.texts)
                     if words[0].lower() == wanted), None)

    def fields(self) -> dict[str, tuple[str, ...]]:
        """Each field's words after its name (its first line; names as written)."""
        found, seen = {}, set()
        for words in self.lines:
            if words[0].lower() not in seen:
                seen.add(words[0].lower())
                found[words[0]] = words[1:]
        return found

    def number(self, field: str) -> float | None:
        """The number after `field` on its line (case aside), None without such a line;
        CbfHeaderError when it is no number."""
        found = self.line(field)
        if found is None:
            return None
        words = found[0]
        try:
            return float(words[1])
        except (IndexError, ValueError):
            raise CbfHeaderError(self.shown, f"header line '# {' '.join(words)}': expected a "
                                 f"number after {words[0]}") from None

    def numeric_fields(self) -> list[str]:
        """The fields with a number (as written, in the header's order)."""
        fields = []
        for words in self.lines:
            try:
                float(words[1])
            except (IndexError, ValueError):
                continue
            if words[0][0].isalpha():  # (not the time stamp line '# 2012-02-21T16:43:50.328')
                fields.append(words[0])
        return fields

    def text_after(self, field: str) -> str | None:
        """The rest of `field`'s line as written (commas kept: '# Detector: PILATUS 300K,
        S/N 3-0101' -> 'PILATUS 300K, S/N 3-0101'), or None without such a line."""
        found = self.line(field)
        if found is None:
            return None
        (name, *_), text = found
        # (the separators became spaces one for one: the name is at the same place in text)
        end = text.translate(_AS_SPACES).index(name) + len(name)
        return text[end:].lstrip(_PILATUS_SEPARATORS + " \t").rstrip()

    def sensor(self) -> tuple[str, float] | None:
        """The sensor a Pilatus header names ('# Silicon sensor, thickness 0.000450 m',
        '# CdTe sensor, thickness 0.001000 m'): (its material as written, thickness in m),
        None without such a line (or with one in another unit or without a number)."""
        for words in self.lines:
            if (len(words) >= 5 and words[1].lower() == "sensor"
                    and words[2].lower() == "thickness" and words[4].lower() == "m"):
                try:
                    thickness = float(words[3])
                except ValueError:
                    return None
                return (words[0], thickness) if math.isfinite(thickness) else None
        return None

    def quantity(self, field: str) -> tuple[tuple[float, ...], str] | None:
        """(numbers, the field's name as written) of a PILATUS_QUANTITIES line whose units
        are those expected, or None without one; CbfHeaderError when its numbers are not
        finite numbers."""
        indices, units, what = PILATUS_QUANTITIES[field]
        found = self.line(field)
        if found is None:
            return None
        words, text = found
        if any(len(words) <= i or words[i].lower().rstrip(".") not in accepted
               for i, accepted in units.items()):
            return None
        try:
            values = tuple(float(words[i]) for i in indices)
        except (IndexError, ValueError):
            values = ()
        if len(values) != len(indices) or not all(math.isfinite(v) for v in values):
            raise CbfHeaderError(self.shown, f"header line {text!r}: expected {what}")
        return values, words[0]


def _open(path: str):
    lower = path.lower()
    return (gzip.open if lower.endswith(".gz") else bz2.open if lower.endswith(".bz2")
            else open)(path, "rb")


def read_cbf_header(path, shown: str | None = None) -> CbfHeader:
    """The header of a CBF file (module docstring), read up to its binary section; `shown`:
    the file's name in messages (default: path).  NotCbfError when it does not start with
    ###CBF, CbfHeaderUnfinished when it ends before its binary section's MIME boundary (a
    file shorter than ###CBF is both), CbfHeaderTooLong; OSError when it cannot be read."""
    path = os.fspath(path)
    shown = shown or path
    header = b""
    with _open(path) as f:
        while True:
            block = f.read(_READ_BLOCK)
            if not header:
                start = block.lstrip()
                if not start.startswith(CBF_MAGIC):
                    error = (_CbfFileTooShort if len(block) < _READ_BLOCK
                             and CBF_MAGIC.startswith(start) else NotCbfError)
                    raise error(shown, f"not a CBF file (it does not start with "
                                       f"{CBF_MAGIC.decode()})")
            header += block
            marker = header.find(CBF_BINARY_MARKER)
            if marker >= 0:
                break
            if len(header) >= CBF_HEADER_LIMIT:
                raise CbfHeaderTooLong(shown, "not a CBF frame file: no binary section marker "
                                              f"in its first {CBF_HEADER_LIMIT} bytes")
            if not block:
                break
    end = marker if marker >= 0 else len(header)  # (no marker: it ends in the MIME header)
    boundary = header.find(CBF_MIME_BOUNDARY, 0, end)
    if marker < 0 and boundary < 0:
        raise CbfHeaderUnfinished(shown, "a CBF file without its binary section (truncated or "
                                         "corrupt?)")
    texts, lines = [], []
    for text in header[:boundary if boundary >= 0 else end].decode("latin-1").splitlines():
        text = text.strip()
        words = text.translate(_AS_SPACES).split() if text.startswith("#") else []
        if words:
            texts.append(text)
            lines.append(tuple(words))
    binary = {}  # the MIME header: from the last boundary before the binary data
    mime = header[max(0, header.rfind(CBF_MIME_BOUNDARY, 0, end)):end]
    for text in mime.decode("latin-1").splitlines():
        name, colon, value = text.partition(":")
        if colon:
            binary[name.strip().lower()] = value.strip()
    data_start = marker + len(CBF_BINARY_MARKER) if marker >= 0 else None
    return CbfHeader(shown, tuple(lines), tuple(texts), binary, data_start)
