"""The disk an experiment's results will take, foreseen while the plan is made (before any
job runs: the Snakefile says so in one line and refuses to start, in its `onstart`, when
they would not fit; output.disk_check: false lets it run anyway).

Only the config and the scans table are known then, so the estimate assumes (docs/
outputs.md, "Sizes"; bench/README.md, "Disk use foreseen", compares it with real runs):

* the grid at its bound (jobs.grid_voxels_bound: a derived grid holds at most max_voxels);
* a volume file stores only the chunks where something was measured: a derived grid
  encloses the detector's reach, a sphere in a box, so MEASURED_SHARE of its chunks; of a
  grid given whole, all (no telling how much of it the detector reaches).  An entry's
  volume holds the share of that its rotation sweeps (its turn over half a turn, in which
  every point of the reach crosses the Ewald sphere once; at most all), a merged one the
  share of its longest entry, a symmetrised one all of it.  Its float32
  arrays are compressed by bitshuffle-LZ4 to SIGNAL_RATIO (intensity, sums, variance, sigma)
  and WEIGHT_RATIO (weights) of their size; the half set A of entries and merged volumes
  is two arrays on the grid binned 2 x 2 x 2;
* a PDF is dense (every voxel holds a value), its arrays compressed to PDF_RATIO; the
  3D-DeltaPDF's files hold the filled and punched volume beside it;
* model inputs: each program's module says what its files take per measured voxel
  (BYTES_PER_MEASURED_VOXEL);
* the other files (scans, peaks, masks, orientations, calibrations, pictures) a fixed size,
  per frame or per pixel of the detector;
* the transform's temporary parts of an entry cut into several jobs are together as large
  as its volume, and at worst all there at once (an entry that is one job has one part,
  which becomes its volume).

Results already there are replaced in place by files of about their size, so only those
not there yet are still to write.  Light (no h5py): the Snakefile calls it while it plans.
"""
from __future__ import annotations

import math
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from ..files import model_inputs, outputs
from ..files.outputs import fill
from ..settings.params import GridParams
from .jobs import (delta_pdf_files, grid_voxels_bound, model_input_volumes, scan_pixels,
                   transform_jobs)

# the share of a derived grid's chunks that hold something measured: the sphere inside
# the box the detector's reach is derived into (pi/6)
MEASURED_SHARE = math.pi / 6
HALF_TURN = 180.0  # degrees of rotation that sweep the whole reach
SIGNAL_RATIO = 0.75  # float32 arrays of counts and their sums, through bitshuffle-LZ4
WEIGHT_RATIO = 0.4  # summed weights: smoother, compressed further
PDF_RATIO = 0.85  # a PDF's arrays: dense and noisy
FLOAT32 = 4
PICTURE_BYTES = 0.3e6  # a PNG, whatever the data size
H5_FILE_BYTES = 0.1e6  # an HDF5 file's metadata, notes and provenance
# scan.nxs, peaks.nxs, mask.nxs of an entry: per-frame tables and the peaks, per-pixel
# images (the peak search's maximum projection, the pixel mask), compressed
ENTRY_FILE_BYTES_PER_FRAME = 500
ENTRY_FILE_BYTES_PER_PIXEL = 0.6
CALIBRATION_BYTES_PER_PIXEL = 0.5  # calibration.nxs (kept twice: its version archived)
DEFAULT_MODEL_INPUT_BYTES = 16  # a program's module that does not say (two float64 arrays)

GROUPS = ("volumes", "PDFs", "model inputs", "other files")
LINE_START = "results: "  # how the plan's line begins (commands.console finds it so)


@dataclass(frozen=True)
class Planned:
    """One file of the results as the estimate sees it: its path (relative to the
    experiment directory), its bytes, its group (GROUPS)."""

    path: str
    size: float
    group: str


@dataclass(frozen=True)
class Foreseen:
    """The results' disk, foreseen: what they take when complete, what of it is there,
    what the transform's temporary parts add, and the free space where they go."""

    files: tuple  # Planned, every result
    present: float  # bytes of the planned results already there (replaced in place)
    missing: float  # estimated bytes of the planned results not there yet
    temporary: float  # estimated bytes of the transform's parts, at worst all at once
    free: float  # bytes free on the device holding results/
    device: str  # the folder whose device was asked
    check: bool = True  # output.disk_check
    by_group: dict = field(default_factory=dict)  # group -> estimated bytes

    @property
    def total(self) -> float:
        return sum(f.size for f in self.files)

    @property
    def need(self) -> float:
        """The bytes still to write, the temporary parts included."""
        return self.missing + self.temporary

    @property
    def fits(self) -> bool:
        return self.need <= self.free

    def _figures(self) -> str:
        groups = ", ".join(f"{g} {_size(b)}" for g, b in self.by_group.items() if b > 0)
        parts = (f" (+{_size(self.temporary)} while the transform's temporary parts exist)"
                 if self.temporary else "")
        return (f"about {_size(self.total)} when complete ({groups}), {_size(self.need)} of it "
                f"still to write{parts}")

    def line(self) -> str:
        """The plan's one line on the disk (without `hklflow: `)."""
        where = f"{_size(self.free)} free on the device of {self.device}"
        if self.fits:
            return f"{LINE_START}{self._figures()}; {where}"
        then = ("a run stops before any job (output.disk_check: false runs anyway)"
                if self.check else "running anyway (output.disk_check: false)")
        return f"{LINE_START}{self._figures()}; only {where}: they would not fit: {then}"

    def refusal(self) -> str | None:
        """Why the run stops before any job (None when the results fit, or the check is
        off)."""
        if self.fits or not self.check:
            return None
        return (f"the results would not fit: {self._figures()}, and {_size(self.free)} is "
                f"free on the device of {self.device}: free some space or reduce onto a "
                "larger device (coarser reduction.transform.grid steps, fewer "
                "output.model_input_volumes make less); if you know better (a file system "
                "that compresses, space freed meanwhile), set output.disk_check: false "
                "(docs/outputs.md, \"Sizes\": what the estimate assumes)")


def _size(n: float) -> str:
    for unit, scale in (("TB", 1e12), ("GB", 1e9)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n / 1e6:.3g} MB"


# --------------------------------------------------------------------------------------
# The files of the results
# --------------------------------------------------------------------------------------
def measured_share(exp) -> float:
    """The share of the grid's chunks a volume file stores (module docstring)."""
    given = GridParams.from_config(exp.raw).grid
    return 1.0 if all(a in given for a in "hkl") else MEASURED_SHARE


def swept(scans) -> float:
    """The share of the reach the scans' rotations sweep (module docstring)."""
    turn = max((s.nframes * abs(s.angles.step) for s in scans), default=HALF_TURN)
    return min(1.0, turn / HALF_TURN)


def volume_bytes(exp, *, half_set: bool, share: float = 1.0) -> float:
    """A volume file (files.volume): data, signal_sum, weight_sum (and variance_sum,
    data_errors), with half set A where the file carries one; share: of the measured
    region (swept)."""
    voxels = grid_voxels_bound(exp) * measured_share(exp) * share
    transform = exp.reduction["transform"]
    signals = 4 if transform["variance"] else 2
    size = voxels * FLOAT32 * (signals * SIGNAL_RATIO + WEIGHT_RATIO) + H5_FILE_BYTES
    if half_set and transform["half_sets"]:
        size += voxels / 8 * FLOAT32 * (SIGNAL_RATIO + WEIGHT_RATIO)
    return size


def pdf_bytes(exp, *, delta: bool) -> float:
    """A PDF file (files.pdf): the PDF (and its sigma), dense; a DeltaPDF's the filled and
    punched volume too."""
    voxels = grid_voxels_bound(exp)
    errors = exp.reduction["transform"]["variance"] and exp.reduction["pdf"]["errors"]
    size = voxels * FLOAT32 * PDF_RATIO * (2 if errors else 1) + H5_FILE_BYTES
    if delta:
        size += 2 * voxels * measured_share(exp) * FLOAT32 * SIGNAL_RATIO
    return size


def model_input_bytes(exp, program: str) -> float:
    """The files of one modelling program of one volume."""
    per_voxel = getattr(model_inputs.program(program), "BYTES_PER_MEASURED_VOXEL",
                        DEFAULT_MODEL_INPUT_BYTES)
    return grid_voxels_bound(exp) * measured_share(exp) * per_voxel + H5_FILE_BYTES


def planned_files(exp) -> list[Planned]:
    """Every result the plan makes (the Snakefile's targets and what they are made from),
    each with its estimated bytes (module docstring): the volumes, PDFs and model inputs
    by their paths; the other files by theirs where files.outputs names them."""
    kinds = list(exp.reduction["transform"]["kinds"])
    symmetrize = exp.reduction["merge"]["symmetrize"]
    pdf = exp.reduction["pdf"]
    output = exp.raw["output"]
    pixels = scan_pixels(exp)
    symmetrized_volume = volume_bytes(exp, half_set=False)
    out: list[Planned] = []

    def add(path, size, group="other files"):
        out.append(Planned(path, float(size), group))

    def picture(path):
        add(path, PICTURE_BYTES)

    for name in exp.calibrations:
        at = dict(calibration=name)
        add(fill(outputs.CALIBRATION_NEXUS, **at),
            2 * (H5_FILE_BYTES + CALIBRATION_BYTES_PER_PIXEL * pixels))
        add(fill(outputs.CALIBRATION_PNG, **at), 2 * PICTURE_BYTES)
    for s in exp.scans:
        at = dict(sample=s.sample, temperature=s.temperature_label, entry=s.entry)
        per_entry = (3 * H5_FILE_BYTES + ENTRY_FILE_BYTES_PER_FRAME * s.nframes
                     + ENTRY_FILE_BYTES_PER_PIXEL * pixels)
        add(fill(outputs.SCAN, **at), per_entry)
        picture(fill(outputs.PEAKS_PNG, **at))
        picture(fill(outputs.MASK_PNG, **at))
        entry_volume = volume_bytes(exp, half_set=True, share=swept([s]))
        for kind in kinds:
            add(fill(outputs.ENTRY_VOLUME, kind=kind, **at), entry_volume, "volumes")
            picture(fill(outputs.ENTRY_VOLUME_PNG, kind=kind, **at))
    model_programs = list(output["model_inputs"])
    model_volumes = model_input_volumes(exp)
    pdf_files = delta_pdf_files(exp)
    for sample in exp.samples:
        temperatures = exp.temperatures_of(sample)
        if not temperatures:
            continue
        add(fill(outputs.GRID, sample=sample), 0)
        parents = {exp.samples[sample].parent_for(exp.scans_of(sample, t)[0].temperature)
                   for t in temperatures}
        for t in parents:
            add(fill(outputs.PARENT_ORIENTATION, sample=sample, temperature=t), H5_FILE_BYTES)
            picture(fill(outputs.PARENT_ORIENTATION_PNG, sample=sample, temperature=t))
        for t in temperatures:
            at = dict(sample=sample, temperature=t)
            add(fill(outputs.ORIENTATION, **at), H5_FILE_BYTES)
            picture(fill(outputs.ORIENTATION_PNG, **at))
            merged_volume = volume_bytes(exp, half_set=True,
                                         share=swept(exp.scans_of(sample, t)))
            for kind in kinds:
                add(fill(outputs.MERGED_VOLUME, kind=kind, **at), merged_volume, "volumes")
                picture(fill(outputs.MERGED_VOLUME_PNG, kind=kind, **at))
                picture(fill(outputs.STATISTICS_PNG, kind=kind, **at))
                if symmetrize:
                    add(fill(outputs.SYMMETRIZED_VOLUME, kind=kind, **at), symmetrized_volume,
                        "volumes")
                    picture(fill(outputs.SYMMETRIZED_VOLUME_PNG, kind=kind, **at))
            for volume in model_volumes:
                for program in model_programs:
                    names = model_inputs.file_names(program, volume)
                    size = model_input_bytes(exp, program)
                    for i, name in enumerate(names):  # (the first file stands for them all)
                        add(f"{fill(outputs.MODEL_INPUTS, **at)}/{name}", size if i == 0 else 0,
                            "model inputs")
            if output["nxrefine_wrapper"]:
                # parameters and peaks copied, every array linked
                add(fill(outputs.NXREFINE_WRAPPER, **at),
                    H5_FILE_BYTES * (1 + len(exp.scans_of(sample, t))))
        for kind in kinds:
            picture(fill(outputs.TEMPERATURE_SERIES_PNG, sample=sample, kind=kind))
        pdf_temperatures = exp.pdf_temperatures_of(sample)
        if pdf["enabled"] and pdf_temperatures:
            for t in pdf_temperatures:
                at = dict(sample=sample, temperature=t)
                add(fill(outputs.TOTAL_PDF, **at), pdf_bytes(exp, delta=False), "PDFs")
                picture(fill(outputs.TOTAL_PDF_PNG, **at))
                for name in pdf_files:
                    add(fill(outputs.DELTA_PDF, pdf=name, **at), pdf_bytes(exp, delta=True),
                        "PDFs")
                    picture(fill(outputs.DELTA_PDF_PNG, pdf=name, **at))
            picture(fill(outputs.PDF_SERIES_PNG, sample=sample))
    return out


def temporary_parts(exp) -> list[Planned]:
    """The transform's temporary parts, an entry's together as large as its volume (module
    docstring): one per entry cut into several jobs, named by its first volume."""
    kinds = exp.reduction["transform"]["kinds"]
    return [Planned(fill(outputs.ENTRY_VOLUME, sample=s.sample, temperature=s.temperature_label,
                         entry=s.entry, kind=kinds[0]),
                    len(kinds) * volume_bytes(exp, half_set=True, share=swept([s])), "temporary")
            for s in exp.scans if transform_jobs(exp, s) > 1]


# --------------------------------------------------------------------------------------
# What is there, what is free, whether they fit
# --------------------------------------------------------------------------------------
def free_space(folder) -> tuple[float, str]:
    """(bytes free, the folder asked) on the device holding `folder`, or its nearest
    existing parent (results/ before the first run)."""
    path = Path(folder).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return float(shutil.disk_usage(path).free), str(path)


def present_size(path: str) -> float | None:
    """The bytes of a result there now, None where there is none."""
    try:
        return float(os.stat(path).st_size)
    except OSError:
        return None


def foresee(exp, *, free: float | None = None, results: str = outputs.RESULTS,
            size_of=present_size) -> Foreseen:
    """The results' disk for the experiment, in the current directory (the experiment's):
    free: the bytes free (default: on the device of `results`, free_space); size_of(path):
    a result's bytes there now, None without (the tests give both)."""
    files = planned_files(exp)
    present = missing = 0.0
    there = set()
    for f in files:
        size = size_of(f.path)
        if size is None:
            missing += f.size
        else:
            present += size
            there.add(f.path)
    # an entry whose volumes are there already is summed again from parts only when its
    # transform reruns; counted as not
    temporary = sum(p.size for p in temporary_parts(exp) if p.path not in there)
    device = f"{results}/"
    if free is None:
        free, asked = free_space(results)
        if Path(asked) != Path(results).absolute():  # (no results/ yet)
            device = asked
    by_group = {g: sum(f.size for f in files if f.group == g) for g in GROUPS}
    return Foreseen(tuple(files), present, missing, temporary, float(free), device,
                    bool(exp.raw["output"]["disk_check"]), by_group)
