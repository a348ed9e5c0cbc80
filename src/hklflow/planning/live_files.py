"""The files hklflow watch writes for the workflow, by path (docs/map.md): the markers of a
scan in progress and of its blocks of frames, and the provisional orientation and grid its
previews are made with."""
from __future__ import annotations

import re
from pathlib import Path

from ..files.outputs import part_frames


def landed_marker(scan_id: str) -> str:
    """The file hklflow watch rewrites when more frames of a scan in progress (SAMPLE/TLABEL/
    ENTRY) have landed: the input of its ingest job in place of the raw files, which change
    with every frame."""
    return f"live/landed/{scan_id}.json"


def landed_block_marker(scan_id: str, first: int, stop: int) -> str:
    """The file hklflow watch writes once when frames [first, stop) of a scan of a preview
    temperature (in progress, or complete while another is not) go to a preview: the input of
    that block's peak search, mask and transform (rules find_peaks_block, mask_block,
    transform_block), which never run again for it unless a setting they use changes."""
    return f"live/landed/{scan_id}/{part_frames(first, stop)}.json"


_BLOCK_NAME = re.compile(r"^([0-9]+)-([0-9]+)\.json$")


def landed_blocks(scan_id: str, base_dir=".") -> list[tuple[int, int]]:
    """The blocks (first, stop) of a scan whose markers hklflow watch wrote, in frame
    order."""
    folder = Path(base_dir) / f"live/landed/{scan_id}"
    if not folder.is_dir():
        return []
    found = (_BLOCK_NAME.match(p.name) for p in folder.iterdir())
    return sorted((int(m[1]), int(m[2])) for m in found if m)


def provisional_orientation(sample: str, temperature_label: str) -> str:
    """The orientation hklflow watch hands the previews of a temperature in progress
    (hklflow.live.orientation): the input of their masks, transforms and merges in place of
    the temperature's refined orientation, which moves a little at every preview run."""
    return f"live/orientation/{sample}/{temperature_label}.nxs"


def provisional_grid(sample: str) -> str:
    """The grid hklflow watch hands the previews of a sample's temperatures in progress
    (hklflow.live.grid): the input of their transforms in place of the sample's grid, whose
    file define_grid writes again whenever a scan at a new detector position appears."""
    return f"live/grid/{sample}.json"
