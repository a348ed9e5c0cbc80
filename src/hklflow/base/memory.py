"""What the big arrays of a step take, and whether the job has that much: a step that
would not fit refuses with the figures before it allocates, instead of meeting the kernel's
OOM killer (which may take down other work on the machine).

The bytes per voxel are those workflow/rules/resources.smk asks for (the one model of a
job's memory; measured figures: bench/README.md, "Resources").  The memory a job may use is
the smallest of what bounds this process: the cgroup's limit less what the cgroup uses
already (a SLURM job's --mem, a container's limit), RLIMIT_AS and RLIMIT_DATA less what the
process holds, and the machine's available memory (MemAvailable).

Light on purpose: the Snakefile imports it at parse time.
"""
from __future__ import annotations

import os
import resource
from pathlib import Path

from .errors import HklflowError

BASE_MB = 600  # one step's process: numpy, scipy, h5py, pyFAI and numba loaded
# a transform job's grid: float32 signal and weight (and variance) per kind, in bricks of 8^3
TRANSFORM_VOXEL_BYTES_PER_ARRAY = 4.5
# half set A (CC1/2): signal and weight on the grid binned 2 x 2 x 2, both kinds' parts,
# one per thread (the default job's threads)
HALF_SET_VOXEL_BYTES = 2.0
# total_pdf: its half spectrum holds 4 bytes a voxel, a volume even along each axis only
# its octant (which one is not known at parse time)
PDF_VOXEL_BYTES = 8
# delta_pdf: the filled volume and its spectrum, and the holes' sparse systems on top
DELTA_PDF_VOXEL_BYTES = 16
# the PDF's sigma (hklflow.algorithms.pdf.sigma): the noise (u and three masks), the taper, W whole and
# the spectra of T and C
PDF_SIGMA_VOXEL_BYTES = 20


def padded_voxels(shape, brick: int = 8) -> int:
    """Voxels of a grid with each axis padded to whole bricks (the transform's layout)."""
    out = 1
    for n in shape:
        out *= -(-int(n) // brick) * brick
    return out


def transform_grid_bytes(shape, kinds: int, variance: bool, half_sets: bool) -> float:
    """What a transform job's grid takes (every kind's arrays, half set A)."""
    per_voxel = (kinds * TRANSFORM_VOXEL_BYTES_PER_ARRAY * (3 if variance else 2)
                 + (HALF_SET_VOXEL_BYTES if half_sets else 0.0))
    return per_voxel * padded_voxels(shape)


def whole_volume_bytes(voxels: int, variance: bool) -> float:
    """A volume's float32 signal and weight (and variance) held whole."""
    return 4.0 * (3 if variance else 2) * float(voxels)


def pdf_bytes(voxels: int, delta: bool, sigma: bool) -> float:
    """What total_pdf (delta: delta_pdf) holds for a volume of `voxels`, with its sigma."""
    per_voxel = ((DELTA_PDF_VOXEL_BYTES if delta else PDF_VOXEL_BYTES)
                 + (PDF_SIGMA_VOXEL_BYTES if sigma else 0))
    return per_voxel * float(voxels)


class MemoryNeedError(HklflowError, MemoryError):
    """A step whose arrays would not fit in the memory its job may use."""


def _cgroup_room() -> tuple[int, str] | None:
    """The cgroup's limit less its usage (bytes), v2 or v1; None without a limit."""
    try:
        line = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for entry in line:
        _, controllers, path = entry.split(":", 2)
        if controllers == "":  # v2
            d = Path("/sys/fs/cgroup") / path.lstrip("/")
            limit_file, usage_file = d / "memory.max", d / "memory.current"
        elif "memory" in controllers.split(","):
            d = Path("/sys/fs/cgroup/memory") / path.lstrip("/")
            limit_file, usage_file = d / "memory.limit_in_bytes", d / "memory.usage_in_bytes"
        else:
            continue
        try:
            limit = limit_file.read_text().strip()
            usage = int(usage_file.read_text().strip())
        except (OSError, ValueError):
            continue
        if limit != "max" and int(limit) < 2**60:
            return int(limit) - usage, f"the cgroup's memory limit, {int(limit) / 1e9:.3g} GB"
    return None


def _process_bytes() -> tuple[int, int]:
    """(virtual size, resident size) of this process, bytes."""
    try:
        pages = Path("/proc/self/statm").read_text().split()
        size = os.sysconf("SC_PAGE_SIZE")
        return int(pages[0]) * size, int(pages[1]) * size
    except (OSError, ValueError, IndexError):
        return 0, 0


def memory_room() -> tuple[int, str]:
    """The bytes this process may still allocate, and what bounds them (module docstring)."""
    rooms = []
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                rooms.append((int(line.split()[1]) * 1024, "the machine's available memory"))
    except (OSError, ValueError):
        pass
    cgroup = _cgroup_room()
    if cgroup:
        rooms.append(cgroup)
    virtual, _ = _process_bytes()
    for name in ("RLIMIT_AS", "RLIMIT_DATA"):
        soft, _ = resource.getrlimit(getattr(resource, name))
        if soft != resource.RLIM_INFINITY:
            rooms.append((soft - virtual, f"the process limit {name}, {soft / 1e9:.3g} GB"))
    return min(rooms) if rooms else (2**62, "nothing")


def check_room(needed_bytes: float, what: str, setting: str = "", log=None) -> None:
    """MemoryNeedError, with the figures, when `what` needs more than the job may still
    allocate (memory_room); setting: what the user can change to need less."""
    room, bound = memory_room()
    if log is not None:
        log.info("%s needs about %.3g GB; %.3g GB free (%s)", what, needed_bytes / 1e9,
                 room / 1e9, bound)
    if needed_bytes > room:
        raise MemoryNeedError(
            f"{what} needs about {needed_bytes / 1e9:.3g} GB, more than this job may still use: "
            f"{max(room, 0) / 1e9:.3g} GB ({bound}): give the job more memory"
            + (f" or {setting}" if setting else ""))
