"""The files through which the watcher hands the workflow what has landed: the live scans
table, the config that names it, and one landed marker per scan in progress.  Each is
rewritten only when its text changes, so that Snakemake sees a new input exactly when a new
block of frames is to be reduced (``snakemake -n`` between two blocks plans nothing)."""
from __future__ import annotations

import json
from pathlib import Path

from ..base.atomic import write_text_atomically
from ..planning.config import (LIVE_CONFIG, LIVE_SCANS_TABLE, LIVE_WAITING, read_scans_table,
                               temperature_label)
from ..planning.live_files import landed_block_marker, landed_blocks, landed_marker

# the columns of the live table, in order, before the goniometer's offset axes
COLUMNS = ("sample", "temperature", "entry", "data", "dataset", "nframes", "planned_frames",
           "phi_start", "phi_step", "det_ddist", "det_dponi1", "det_dponi2", "monitor",
           "calibration", "role", "background")


def user_rows(expdir: Path, table: str, offset_names) -> list[dict]:
    """The rows of the experiment's own scans table (validated, defaults filled); [] while
    it holds its header only (a beamline logger appends a row as each scan starts)."""
    path = expdir / table
    lines = [ln for ln in path.read_text().splitlines()
             if ln.strip() and not ln.lstrip().startswith("#")] if path.is_file() else []
    if len(lines) < 2:
        return []
    return read_scans_table(table, offset_names, expdir)


def _cell(value) -> str:
    if isinstance(value, float):
        return repr(value)  # read back to the same float: the same job settings as batch
    return str(value)


def write_if_changed(path: Path, text: str) -> bool:
    if path.is_file() and path.read_text() == text:
        return False
    write_text_atomically(path, text)
    return True


def live_table_text(rows: list[dict], offset_names) -> str:
    """rows: each a scans-table row with nframes the frames to reduce now and
    planned_frames those of the whole scan (0 once it is complete)."""
    columns = list(COLUMNS) + list(offset_names)
    lines = ["# written by hklflow watch: the scans landed so far (do not edit; the "
             "experiment's own table is its config's scans_table)", "\t".join(columns)]
    for r in rows:
        cells = dict(r, planned_frames=r.get("planned_frames") or "")  # empty: complete
        lines.append("\t".join(_cell(cells.get(c, "")) for c in columns))
    return "\n".join(lines) + "\n"


def write_live_files(expdir: Path, rows: list[dict], markers: dict, offset_names,
                     waiting: list[dict] = ()) -> bool:
    """Write live/config.yaml, live/scans.tsv, the landed markers (id -> text) of the
    scans in progress and the block markers of every scan of a preview temperature; remove
    the markers no longer wanted.  waiting: the scans planned but not yet in the table
    (live/waiting.json, only while there are any).  True when anything changed."""
    changed = write_if_changed(expdir / LIVE_CONFIG,
                               "# written by hklflow watch: the workflow on the scans landed so far\n"
                               f"scans_table: {LIVE_SCANS_TABLE}\n")
    changed |= write_if_changed(expdir / LIVE_SCANS_TABLE, live_table_text(rows, offset_names))
    if waiting:
        changed |= write_if_changed(expdir / LIVE_WAITING,
                                    json.dumps(list(waiting), sort_keys=True, indent=1) + "\n")
    elif (expdir / LIVE_WAITING).is_file():
        (expdir / LIVE_WAITING).unlink()
        changed = True
    wanted = set()
    previews = preview_keys(rows, waiting)
    for r in rows:
        if r.get("planned_frames"):
            path = expdir / landed_marker(row_id(r))
            wanted.add(path)
            changed |= write_if_changed(path, markers[row_id(r)])
        # (a scan complete while its temperature is a preview stays in blocks until the
        # temperature's final run, its only full pass)
        if row_key(r) in previews:
            for first, stop in scan_blocks(expdir, row_id(r), int(r["nframes"])):
                path = expdir / landed_block_marker(row_id(r), first, stop)
                wanted.add(path)
                if not path.is_file():
                    write_text_atomically(path, json.dumps(
                        {"scan": row_id(r), "frames": [first, stop],
                         "planned": int(r.get("planned_frames") or r["nframes"])}) + "\n")
                    changed = True
    landed_dir = expdir / "live" / "landed"
    if landed_dir.is_dir():
        for old in landed_dir.rglob("*.json"):
            if old not in wanted:
                old.unlink()
                changed = True
    return changed


def scan_blocks(expdir: Path, scan_id: str, nframes: int) -> list[tuple[int, int]]:
    """The blocks of a scan of a preview temperature whose first `nframes` frames go to the
    next run: those marked before that follow each other from frame 0 within them, and the
    frames after the last as a new block.  A preview then searches and transforms only its
    new block."""
    blocks, stop = [], 0
    for first, end in landed_blocks(scan_id, expdir):
        if first == stop and end <= nframes:
            blocks.append((first, end))
            stop = end
    if stop < nframes:
        blocks.append((stop, nframes))
    return blocks


def preview_keys(rows: list[dict], waiting=()) -> set:
    """(sample, label) of every temperature whose results are previews: a scan of it in
    progress, or one waited for (planning.config.Experiment.is_preview)."""
    keys = {row_key(r) for r in rows if r.get("planned_frames")}
    return keys | {tuple(w["scan"].split("/")[:2]) for w in waiting}


def row_key(r: dict) -> tuple:
    return r["sample"], temperature_label(r["temperature"])


def row_id(r: dict) -> str:
    return f"{r['sample']}/{temperature_label(r['temperature'])}/{r['entry']}"
