"""Previews (hklflow.pictures.preview): the scans in progress a result includes, found in nested
notes as the steps nest them, and the label of its pictures; nothing at all once every
scan is complete."""
from __future__ import annotations

from types import SimpleNamespace

from hklflow.pictures.figure import with_preview
from hklflow.pictures.preview import (landed_in, landed_notes, landed_record, merged_records,
                                      orientation_label, preview_label, preview_notes)


def scan(scan_id, nframes, planned=0):
    """What preview reads of a files.scan.ScanRecord."""
    return SimpleNamespace(scan_id=scan_id, nframes=nframes, planned_frames=planned,
                           in_progress=planned > nframes)


def part(scan_id, frames, planned, provisional=False):
    """A volume part's notes as transform_frames writes them."""
    return {"scan": scan_id, "seconds": 1.0,
            **preview_notes(scan(scan_id, frames, planned),
                            SimpleNamespace(provisional=provisional))}


def summed(*notes):
    """The notes of a sum (merging.sum_volumes): each input's notes nested."""
    return {"operation": "sum", "inputs": [{"path": "p", "notes": n} for n in notes]}


def test_landed_record_only_while_in_progress():
    assert landed_record(scan("s/300K/f1", 50, 100)) == {"scan": "s/300K/f1", "frames": 50,
                                                         "planned": 100}
    assert landed_record(scan("s/300K/f1", 100)) is None
    assert landed_record(scan("s/300K/f1", 100, 100)) is None  # the last frame landed
    assert preview_notes(scan("s/300K/f1", 100), SimpleNamespace(provisional=False)) == {}


def test_nested_notes_of_sums_symmetrisations_and_pdfs():
    entry_f1 = summed(part("s/300K/f1", 50, 100), part("s/300K/f1", 50, 100))
    entry_f2 = summed(part("s/300K/f2", 40, 120, provisional=True))
    entry_f3 = summed({"scan": "s/300K/f3"})  # complete
    merged = summed(entry_f1, entry_f2, entry_f3)
    symmetrized = {"symmetrized": {"operators": 16}, "input_notes": merged}
    found = landed_in(symmetrized)
    assert found == {"s/300K/f1": (50, 100), "s/300K/f2": (40, 120)} and found.provisional
    label = "PREVIEW: f1 50%, f2 33% of their frames; provisional orientation"
    assert preview_label(symmetrized) == label
    # a PDF keeps the volume's preview, flat, and says the same
    pdf = {"q_max": 5.0, **landed_notes(symmetrized)}
    assert pdf["landed"][0] == {"scan": "s/300K/f1", "frames": 50, "planned": 100}
    assert preview_label(pdf) == label
    assert preview_label(entry_f1) == "PREVIEW: f1 50% of its frames"
    # a complete entry made with a provisional orientation
    assert preview_label(summed(part("s/300K/f3", 90, 0, provisional=True))) == \
        "PREVIEW: provisional orientation"


def test_a_series_names_entries_with_their_temperature():
    series = [summed(part("s/100K/f1", 1, 4)), summed({"scan": "s/200K/f1"}),
              summed(part("s/300K/f10", 2, 3), part("s/300K/f2", 1, 2))]
    assert preview_label(series) == \
        "PREVIEW: s/100K/f1 25%, s/300K/f2 50%, s/300K/f10 66% of their frames"
    # one temperature in progress, on a picture of several: named in full all the same
    assert preview_label(series[:2], full_ids=True) == "PREVIEW: s/100K/f1 25% of its frames"


def test_scan_records_and_bare_records():
    assert preview_label(scan("s/300K/f1", 10, 40)) == "PREVIEW: f1 25% of its frames"
    assert preview_label([scan("s/300K/f1", 10, 40), scan("s/300K/f2", 40)]) == \
        "PREVIEW: f1 25% of its frames"
    assert preview_label([{"scan": "s/300K/f1", "frames": 999, "planned": 1000}]) == \
        "PREVIEW: f1 99% of its frames"  # rounded down: never 100% before the end


def test_nothing_in_progress_says_nothing():
    complete = summed(summed({"scan": "s/300K/f1", "seconds": 2.0}), {"scan": "s/300K/f2"})
    for notes in ({}, [], complete, {"input_notes": complete}, [complete, complete],
                  scan("s/300K/f1", 10), {"provisional_orientation": False}):
        assert preview_label(notes) == ""
        assert landed_notes(notes) == {}
    assert orientation_label([]) == "" and merged_records(None, []) == []
    assert with_preview("title", "") == "title"
    assert with_preview("title", "PREVIEW: x") == "title\nPREVIEW: x"


def test_orientation_label_and_records_of_a_parent():
    own = [landed_record(scan("s/300K/f1", 50, 100)), None]
    parent = [{"scan": "s/300K/f1", "frames": 50, "planned": 100},
              {"scan": "s/300K/f2", "frames": 10, "planned": 30}]
    records = merged_records(own, parent)
    assert [r["scan"] for r in records] == ["s/300K/f1", "s/300K/f2"]
    assert orientation_label(records) == \
        "provisional orientation (from f1 50%, f2 33% of their frames)"
    assert orientation_label(records, of="s/300K") == orientation_label(records)
    # a child temperature made from its parent's scans in progress names them in full
    assert orientation_label(records, of="s/100K") == \
        "provisional orientation (from s/300K/f1 50%, s/300K/f2 33% of their frames)"
    assert orientation_label(merged_records([], [{"scan": "s/100K/f1", "frames": 1,
                                                  "planned": 2}, *own])) == \
        "provisional orientation (from s/100K/f1 50%, s/300K/f1 50% of their frames)"


def test_a_preview_made_with_an_earlier_orientation_says_from_which_frames():
    """The previews of a temperature keep the provisional orientation the watcher handed
    them (hklflow.live.orientation) while newer ones move by less than a fraction of a
    voxel: their notes and titles say which frames it was made from."""
    earlier = SimpleNamespace(provisional=True,
                              landed=({"scan": "s/300K/f1", "frames": 20, "planned": 100},))
    notes = preview_notes(scan("s/300K/f1", 50, 100), earlier)
    assert notes["orientation_landed"] == [{"scan": "s/300K/f1", "frames": 20, "planned": 100}]
    merged = summed(summed(notes), summed(part("s/300K/f2", 30, 100)))
    label = ("PREVIEW: f1 50%, f2 30% of their frames; provisional orientation (from f1 20% "
             "of its frames)")
    assert preview_label(merged) == label
    assert preview_label({"q_max": 5.0, **landed_notes(merged)}) == label  # (a PDF's)
