"""What the watcher knows about every scan, written to ``live/state.json`` after every change
so that a watcher killed at any moment (kill -9 included) resumes where it was: the frames
landed (and when each count was first seen), reduced and in the latest results, and what
went wrong.  The raw files are looked at again on restart; this file only adds what they
cannot say (when frames landed, what was reduced, what the user asked)."""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..base.atomic import write_json_atomically

STATE_FILE = "live/state.json"
HISTORY_FILE = "live/history.jsonl"  # one line per workflow run: what it reduced, its lags


@dataclass
class ScanState:
    """One scan of the experiment as the watcher follows it."""

    id: str  # SAMPLE/TLABEL/ENTRY
    row: dict  # its scans-table row as given (the user's or discovered), text values
    planned: int  # frames the complete scan has
    phi_step: float
    landed: int = 0  # complete frames on disk now
    landings: list = field(default_factory=list)  # [[time, landed]] when a count was first seen
    reduced: int = 0  # frames in live/scans.tsv (0: not there yet)
    results: int = 0  # frames in the latest results the workflow made (0: none yet)
    last_growth: float = 0.0  # when landed last grew
    reduced_at: float = 0.0  # when reduced last changed
    finish: bool = False  # reduce as far as it went, as if complete (watch --finish, finish_stalled)
    problem: str | None = None  # the raw data changed under us: never merged while it stands
    error: str | None = None  # the last failed job of this scan: rule and log file
    # why its row stopped the workflow's plan (hklflow watch sets it aside: the others go on),
    # and the digest of the scans' rows then (any change of them: tried again)
    set_aside: str | None = None
    set_aside_rows: str = ""
    observation: dict | None = None  # hklflow.live.growing's, for the next look

    @property
    def sample(self) -> str:
        return self.id.split("/")[0]

    @property
    def temperature_label(self) -> str:
        return self.id.split("/")[1]

    @property
    def entry(self) -> str:
        return self.id.split("/")[2]

    @property
    def complete(self) -> bool:
        """Every planned frame landed, or the user finished the scan as far as it went."""
        return self.landed >= self.planned or (self.finish and self.landed > 0)

    @property
    def frames_when_complete(self) -> int:
        return self.planned if self.landed >= self.planned else self.landed

    def landed_at(self, frames: int) -> float | None:
        """When the first `frames` frames had all landed (first seen), None if not yet."""
        for t, n in self.landings:
            if n >= frames:
                return t
        return None

    def saw(self, landed: int, now: float) -> None:
        if landed > self.landed or not self.landings:
            self.landings.append([now, landed])
            self.last_growth = now
        self.landed = landed

    def stalled(self, now: float, stall_seconds: float) -> bool:
        return (not self.complete and self.landed > 0
                and now - self.last_growth >= stall_seconds)


@dataclass
class LiveState:
    scans: dict = field(default_factory=dict)  # id -> ScanState, in the order they appeared
    runs: int = 0  # workflow runs so far
    last_run: dict = field(default_factory=dict)  # start, end, rc, log of the latest run
    started: float = field(default_factory=time.time)
    waiting_for_lock: str = ""  # the other Snakemake run(s) whose lock the watcher waits for
    # why scans may be missing: the scans table cannot be read, discovery's notes ("": none)
    table_error: str = ""
    # SAMPLE/TLABEL of a preview -> the refined orientation last compared with the provisional
    # one its previews are made with (hklflow.live.orientation): {"version", "moved_voxels"}
    orientations: dict = field(default_factory=dict)
    # what the previews in the results were made from: {"config": digest of the config file,
    # "rows": {scan id: digest of its row}} (Watcher.forget_changed_previews)
    preview_inputs: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"scans": [asdict(s) for s in self.scans.values()], "runs": self.runs,
                "last_run": self.last_run, "started": self.started,
                "waiting_for_lock": self.waiting_for_lock, "table_error": self.table_error,
                "orientations": self.orientations, "preview_inputs": self.preview_inputs}

    @classmethod
    def from_dict(cls, d: dict) -> "LiveState":
        scans = {s["id"]: ScanState(**s) for s in d.get("scans", [])}
        return cls(scans, int(d.get("runs", 0)), dict(d.get("last_run", {})),
                   float(d.get("started", time.time())), str(d.get("waiting_for_lock", "")),
                   str(d.get("table_error", "")), dict(d.get("orientations", {})),
                   dict(d.get("preview_inputs", {})))

    def save(self, expdir: Path) -> None:
        write_json_atomically(expdir / STATE_FILE, self.to_dict())

    @classmethod
    def load(cls, expdir: Path) -> "LiveState":
        path = expdir / STATE_FILE
        if not path.is_file():
            return cls()
        return cls.from_dict(json.loads(path.read_text()))


def append_history(expdir: Path, record: dict) -> None:
    path = expdir / HISTORY_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


