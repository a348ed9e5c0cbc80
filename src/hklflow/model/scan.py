"""What a scan entry is, before and after ingest: its row of the scans table (ScanRow, what
the ingest job receives), where its frames live (FrameSource, what the scan file records),
the label of its temperature, and how much of a scan still being collected its frames are
(ScanSpan, shared by ScanRow and files.scan.ScanRecord)."""
from __future__ import annotations

from dataclasses import dataclass

from ..base.errors import ConfigError
from .geometry import ScanAngles

DEFAULT_DATASET = "/entry/data/data"  # where a raw HDF5 file holds its frames


def temperature_label(t: float) -> str:
    """The label of a temperature in file names and wildcards, e.g. 300 -> '300K'."""
    return f"{float(t):g}K"


def scan_id(sample: str, temperature: float, entry: str) -> str:
    """SAMPLE/TLABEL/ENTRY, e.g. 'lsco/300K/f1': how files, logs and messages name an entry."""
    return f"{sample}/{temperature_label(temperature)}/{entry}"


class ScanSpan:
    """The temperature's label and the part of the scan the frames are, for a record with
    `temperature`, `nframes` (the frames to reduce) and `planned_frames` (the frames of the
    whole scan while it is being collected by `hklflow watch`; 0 once it is complete)."""

    @property
    def temperature_label(self) -> str:
        return temperature_label(self.temperature)

    @property
    def in_progress(self) -> bool:
        return self.planned_frames > self.nframes

    @property
    def landed_fraction(self) -> float:
        """The part of the scan these frames are (1 once it is complete)."""
        return self.nframes / self.planned_frames if self.in_progress else 1.0


@dataclass(frozen=True)
class FrameSource:
    """Where the frames of one scan live: what an ingested NeXus scan file records.

    kind is "hdf5" (each file holds a (n, rows, cols) stack at `dataset`) or "files"
    (one frame per file, in the listed order).  files are absolute paths.  fingerprints:
    one hklflow.raw.rawfiles.fingerprint per file as ingest saw it (empty: not recorded).
    growing: the first frames of a scan still being collected (hklflow watch): the files
    may hold more frames than frames_per_file says, and only those are read.
    """

    kind: str
    files: tuple[str, ...]
    dataset: str | None
    frames_per_file: tuple[int, ...]
    frame_shape: tuple[int, int]
    dtype: str
    fingerprints: tuple = ()
    growing: bool = False

    def __post_init__(self):
        if self.kind not in ("hdf5", "files"):
            raise ValueError(f"FrameSource kind must be 'hdf5' or 'files', got {self.kind!r}")
        if len(self.files) != len(self.frames_per_file):
            raise ValueError("FrameSource: one frame count per file is needed")
        if self.fingerprints and len(self.fingerprints) != len(self.files):
            raise ValueError("FrameSource: one fingerprint per file is needed")

    @property
    def nframes(self) -> int:
        return int(sum(self.frames_per_file))


@dataclass(frozen=True)
class ScanRow(ScanSpan):
    """One row of the scans table: one rotation scan entry of a sample at a temperature."""

    sample: str
    temperature: float
    entry: str
    data: str
    dataset: str
    nframes: int
    angles: ScanAngles
    offsets: dict
    detector_shift: tuple[float, float, float]  # (d_dist, d_poni1, d_poni2) in m
    monitor: str
    calibration: str
    row: int = 0  # 1-based data row in the scans table (messages only; not a setting)
    # frames of the whole scan while it is still being collected and only its first nframes
    # are reduced (hklflow watch); 0: complete
    planned_frames: int = 0
    role: str = "sample"  # sample | background (the scans table's role column)
    background: str = ""  # a sample row's background: ENTRY or LABEL/ENTRY (same sample)

    @property
    def id(self) -> str:
        return scan_id(self.sample, self.temperature, self.entry)

    @property
    def is_background(self) -> bool:
        return self.role == "background"

    @property
    def background_key(self) -> tuple[str, str, str] | None:
        """(sample, temperature label, entry) of the background this sample row names."""
        if not self.background:
            return None
        label, _, entry = self.background.rpartition("/")
        return self.sample, label or self.temperature_label, entry

    def settings(self) -> dict:
        """The row as a job receives it (ingest_scan): every field but the row number."""
        return {"sample": self.sample, "temperature": self.temperature, "entry": self.entry,
                "data": self.data, "dataset": self.dataset, "nframes": self.nframes,
                "phi_start": self.angles.start, "phi_step": self.angles.step,
                "offsets": dict(self.offsets), "detector_shift": list(self.detector_shift),
                "monitor": self.monitor, "calibration": self.calibration,
                # only while in progress, so that a completed scan's jobs receive exactly what
                # a batch run's do
                **({"planned_frames": self.planned_frames} if self.in_progress else {}),
                # (a background row's role only: a sample row's settings stay as they were)
                **({"role": self.role} if self.is_background else {})}

    @classmethod
    def from_settings(cls, s: dict) -> "ScanRow":
        try:
            return cls(sample=s["sample"], temperature=float(s["temperature"]), entry=s["entry"],
                       data=s["data"], dataset=s["dataset"], nframes=int(s["nframes"]),
                       angles=ScanAngles(float(s["phi_start"]), float(s["phi_step"]),
                                         int(s["nframes"])),
                       offsets={k: float(v) for k, v in s["offsets"].items()},
                       detector_shift=tuple(float(v) for v in s["detector_shift"]),
                       monitor=s["monitor"], calibration=s["calibration"],
                       planned_frames=int(s.get("planned_frames", 0)),
                       role=str(s.get("role", "sample")))
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"--settings scan: not a scans-table row: {exc!r}") from None
