"""hklflow.model.scan: how an entry is named (its temperature's label, its scan id, as file
names and wildcards take them) and what part of a scan still being collected its frames are
(ScanSpan).  A row of the scans table read and checked: tests/planning/test_config.py; the
scan file: tests/files/test_scan.py."""
from __future__ import annotations

from dataclasses import dataclass

from hklflow.model.scan import ScanSpan, scan_id, temperature_label


def test_an_entry_is_named_by_its_temperature_label_and_a_scan_in_progress_by_its_part():
    assert temperature_label(300) == temperature_label(300.0) == "300K"
    assert temperature_label(12.5) == "12.5K"
    assert scan_id("lsco", 300.0, "f1") == "lsco/300K/f1"

    @dataclass
    class Span(ScanSpan):
        temperature: float
        nframes: int
        planned_frames: int

    landing = Span(100.0, 30, 120)
    assert landing.temperature_label == "100K"
    assert landing.in_progress and landing.landed_fraction == 0.25
    complete = Span(100.0, 120, 0)  # planned_frames 0 once the scan is complete
    assert not complete.in_progress and complete.landed_fraction == 1.0
