"""Previews: results made while some of their scans are still being collected (hklflow
watch), from the first frames of those scans.

A result records the scans in progress it includes in its notes, and only then: the notes
of a complete run stay exactly a batch run's.  A volume part's notes hold
``"landed": {"scan": "SAMPLE/TLABEL/ENTRY", "frames": n, "planned": N}`` and, when its
orientation was made from such scans, ``"provisional_orientation": true`` with
``"orientation_landed"``, the records of the frames that orientation was made from (an
earlier preview's, hklflow.live.orientation); sums,
symmetrised volumes and PDFs nest or copy those notes (``inputs[i].notes``,
``input_notes``), which :func:`landed_in` walks.  An orientation file keeps the records
of the scans it was made from (its parent's too) in refinement/preview (files.orientation).
The pictures' titles end with :func:`preview_label`.  No file is read here."""
from __future__ import annotations

import re


class Landed(dict):
    """scan id -> (frames included, frames planned) of every scan in progress found;
    ``provisional``: an orientation made from such scans was used; ``orientation_from``:
    scan id -> (frames, planned) it was made from, where the notes say."""

    provisional = False

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.orientation_from = {}


def landed_record(rec) -> dict | None:
    """What the notes say of a scan (files.scan.ScanRecord) in progress; None once complete."""
    if not rec.in_progress:
        return None
    return {"scan": rec.scan_id, "frames": int(rec.nframes), "planned": int(rec.planned_frames)}


def preview_notes(rec=None, orientation=None) -> dict:
    """The notes a result made from this scan and orientation (files.orientation.
    OrientationRecord) adds: {} when neither is a preview."""
    notes = {}
    landed = landed_record(rec) if rec is not None else None
    if landed:
        notes["landed"] = landed
    if orientation is not None and getattr(orientation, "provisional", False):
        notes["provisional_orientation"] = True
        made_from = [dict(r) for r in getattr(orientation, "landed", ())]
        if made_from:
            notes["orientation_landed"] = made_from
    return notes


def landed_in(notes) -> Landed:
    """Every "landed" record (a record or a list of them) in nested notes (dicts and
    lists), and whether "provisional_orientation": true appears anywhere.  ScanRecords and
    bare records at the top level count too."""
    found = Landed()

    def add(record):
        found.setdefault(record["scan"], (int(record["frames"]), int(record["planned"])))

    def walk(item):
        if isinstance(item, dict):
            landed = item.get("landed")
            for record in landed if isinstance(landed, list) else [landed]:
                if isinstance(record, dict):
                    add(record)
            if item.get("provisional_orientation") is True:
                found.provisional = True
            for record in item.get("orientation_landed") or ():
                if isinstance(record, dict):
                    found.orientation_from.setdefault(
                        record["scan"], (int(record["frames"]), int(record["planned"])))
            for value in item.values():
                walk(value)
        elif isinstance(item, (list, tuple)):
            for value in item:
                walk(value)

    top = notes if isinstance(notes, (list, tuple)) else [notes]
    for item in top:
        if hasattr(item, "planned_frames"):  # a ScanRecord
            item = landed_record(item)
            if item:
                add(item)
        elif isinstance(item, dict) and {"scan", "frames", "planned"} <= item.keys():
            add(item)
        else:
            walk(item)
    return found


def landed_notes(notes) -> dict:
    """The preview of nested notes gathered for a result that keeps no copy of them (a
    PDF keeps only its volume's path): {} when nothing is in progress."""
    landed = landed_in(notes)
    out = {}
    if landed:
        out["landed"] = [{"scan": scan, "frames": frames, "planned": planned}
                         for scan, (frames, planned) in landed.items()]
    if landed.provisional:
        out["provisional_orientation"] = True
    if landed.orientation_from:
        out["orientation_landed"] = [{"scan": scan, "frames": frames, "planned": planned}
                                     for scan, (frames, planned) in
                                     landed.orientation_from.items()]
    return out


def _natural(text: str):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text)]


def _fractions(landed: dict, full_ids: bool = False) -> str:
    """"f1 50%, f2 33% of their frames": entries named alone when they share a sample and
    temperature, else (or with full_ids) as SAMPLE/TLABEL/ENTRY."""
    ids = sorted(landed, key=_natural)
    one_place = not full_ids and len({i.rpartition("/")[0] for i in ids}) == 1
    # rounded down: a preview never reads 100%
    parts = [f"{i.rpartition('/')[2] if one_place else i} "
             f"{100 * landed[i][0] // landed[i][1]}%" for i in ids]
    return f"{', '.join(parts)} of {'its' if len(ids) == 1 else 'their'} frames"


def preview_label(notes_or_records, full_ids: bool = False) -> str:
    """"" when nothing is in progress; else e.g. "PREVIEW: f1 50%, f2 33% of their frames;
    provisional orientation (from f1 20% of its frames)" (where the notes say which frames
    it was made from).  full_ids: scans named SAMPLE/TLABEL/ENTRY even when they share a
    temperature (a picture of several temperatures)."""
    landed = landed_in(notes_or_records)
    made_from = (f" (from {_fractions(landed.orientation_from, full_ids)})"
                 if landed.orientation_from else "")
    what = ([_fractions(landed, full_ids)] if landed else []) + \
        ([f"provisional orientation{made_from}"] if landed.provisional else [])
    return f"PREVIEW: {'; '.join(what)}" if what else ""


def orientation_label(records, of: str = "") -> str:
    """"" for an orientation made from complete scans; else e.g. "provisional orientation
    (from f1 50%, f2 33% of their frames)" (records: its landed records; of: its
    SAMPLE/TLABEL - scans of another temperature, a parent's, are named in full)."""
    landed = landed_in(list(records))
    elsewhere = bool(of) and any(not scan.startswith(f"{of}/") for scan in landed)
    return f"provisional orientation (from {_fractions(landed, elsewhere)})" if landed else ""


def merged_records(*groups) -> list[dict]:
    """The landed records of several groups (lists of records or None), each scan once."""
    seen = {}
    for group in groups:
        for record in group or ():
            if record:
                seen.setdefault(record["scan"], dict(record))
    return list(seen.values())
