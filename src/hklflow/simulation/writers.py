"""The writers of simulated raw frames, in the formats detectors write: HDF5 stacks (at once,
or in place with SWMR while they grow), DECTRIS EIGER master and data files, Pilatus miniCBF
files (at once, or in place).  Used by the plain simulation (experiment.py) and the
real-time acquisition (acquisition.py).  `spec` is an experiment.SimulationSpec and `entry`
an experiment.EntryModel (not imported: experiment.py imports this module)."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import fabio.cbfimage
import h5py
import hdf5plugin
import numpy as np

from ..base.atomic import atomic_path
from ..files.h5 import open_h5
from ..model.geometry import DetectorGeometry

RAW_DATASET = "/entry/data/data"
BLOCKS_PER_SECOND = 10  # SWMR flushes per second of the hdf5 format
DEFAULT_FRAMES_PER_FILE = 100
PLAIN_FRAME_TIME_S = 0.1  # the plain mode's exposure (as its CBF headers say)
DEAD_PIXEL_BIT = 2  # NeXus pixel_mask bit of a dead pixel


# --------------------------------------------------------------------------------------
# The detector position a beamline's metadata records
# --------------------------------------------------------------------------------------
def beamline_geometry(spec, geom: DetectorGeometry) -> DetectorGeometry:
    """The detector geometry a beamline's metadata records for a scan whose true geometry is
    `geom`: the calibration moved by the entry's detector shift (what the motors say), i.e.
    `geom` less spec.scan_drift, the small difference between the two that only the
    refinement finds (a header that knew it would need no refinement).  The motors know
    no parallax: the detector's plane, without its sensor."""
    d = spec.scan_drift
    return replace(geom, dist=geom.dist - d[0], poni1=geom.poni1 - d[1], poni2=geom.poni2 - d[2],
                   rot1=geom.rot1 - d[3], rot2=geom.rot2 - d[4], rot3=geom.rot3 - d[5],
                   sensor=None)


def pilatus_sensor_line(geom: DetectorGeometry) -> list[str]:
    """A Pilatus header's sensor line ("# Silicon sensor, thickness 0.000450 m"), none
    without a sensor."""
    sensor = geom.sensor
    if sensor is None:
        return []
    name = "Silicon" if sensor.material == "Si" else sensor.material
    return [f"# {name} sensor, thickness {sensor.thickness:.6f} m"]


def direct_beam(geom: DetectorGeometry) -> tuple[float, float, float]:
    """(distance in m, row, col) of the direct beam as NXmx masters and Pilatus headers give
    it: where the incident beam hits the detector, in continuous pixel coordinates of the
    frames as stored (pixel (i, j) spans [i, i+1) x [j, j+1), whatever the orientation;
    NXmx beam_center_y/x, Pilatus Beam_xy (col, row)), and the distance from the sample to
    that point (NXmx detector distance: "distance from the sample to the beam center";
    imgCIF sample_detector_distance: "along the beam"; pyFAI's Fit2D directDist, which is
    dist / cos(tilt)).  Not the PONI, which is where the detector normal through the sample
    meets the detector: the two differ when the detector is tilted."""
    row, col = geom.direct_beam_pixel()
    return float(np.linalg.norm(geom.lab_positions(row, col))), row, col


# --------------------------------------------------------------------------------------
# Writers
# --------------------------------------------------------------------------------------
class Hdf5StackWriter:
    """int32 (frames, rows, cols), one frame per chunk, bitshuffle-LZ4: as detectors write.
    The file appears whole (the plain simulation's, not a detector's way: the one atomic
    writer).  monitor: per-frame values (float64) written to the dataset monitor_dataset
    (an NXmonitor's data) beside the frames."""

    def __init__(self, path: Path, nframes: int, shape: tuple[int, int], monitor=None,
                 monitor_dataset: str | None = None):
        self.path = path
        self._atomic = atomic_path(path)
        self.tmp = self._atomic.__enter__()
        self.f = open_h5(self.tmp, "w")
        grp = self.f.require_group("entry/data")
        self.f["entry"].attrs["NX_class"] = "NXentry"
        grp.attrs["NX_class"] = "NXdata"
        grp.attrs["signal"] = "data"
        self.dset = grp.create_dataset("data", shape=(nframes,) + tuple(shape), dtype=np.int32,
                                       chunks=(1,) + tuple(shape),
                                       **hdf5plugin.Bitshuffle(cname="lz4"))
        if monitor is not None:
            group_path, _, name = monitor_dataset.strip("/").rpartition("/")
            mon = self.f.require_group(group_path)
            if group_path.endswith("monitor"):
                mon.attrs["NX_class"] = "NXmonitor"
            mon.create_dataset(name, data=np.asarray(monitor, dtype=np.float64))

    def __call__(self, start: int, frames: np.ndarray):
        self.dset[start:start + len(frames)] = frames

    def close(self):
        self.f.close()
        self._atomic.__exit__(None, None, None)  # renamed into place


class CbfFramesWriter:
    """One Pilatus miniCBF per frame, with the header lines DIALS's dxtbx needs."""

    def __init__(self, folder: Path, stem: str, spec, geom: DetectorGeometry, monitor=None):
        """monitor: per-frame values, written as each header's '# Flux' line."""
        self.folder, self.stem, self.spec, self.geom = folder, stem, spec, geom
        self.monitor = monitor
        # the beamline's geometry (beamline_geometry) as a Pilatus header gives it: Beam_xy
        # (fast, slow) where the direct beam hits the frame as stored, Detector_distance to
        # that point (direct_beam).  dxtbx reads frames of orientation 2 as they are laid
        # out; those of orientation 3 it sees mirrored, and the beam with them
        # (docs/conventions.md).  More digits than a Pilatus writes (5 for the distance, 2
        # for the beam): the shifts found from them (hklflow.live.discover) then agree with
        # the scans table's to a small fraction of a micrometre.
        self.beam = direct_beam(beamline_geometry(spec, geom))
        folder.mkdir(parents=True, exist_ok=True)

    def header(self, index: int) -> str:
        g, s = self.geom, self.spec
        p1, p2 = g.pixel_size
        distance, beam_slow, beam_fast = self.beam
        return "\n".join([
            f"# Detector: PILATUS simulated by hklflow ({g.detector})",
            "# 2026-11-21T00:00:00.000",
            f"# Pixel_size {p2:.6g} m x {p1:.6g} m",
            "# Exposure_time 0.1000000 s",
            "# Exposure_period 0.1000000 s",
            "# Count_cutoff 1048575 counts",
            f"# Wavelength {s.wavelength:.5f} A",
            f"# Detector_distance {distance:.8f} m",
            f"# Beam_xy ({beam_fast:.4f}, {beam_slow:.4f}) pixels",
            f"# Start_angle {s.phi_start + index * s.phi_step:.4f} deg.",
            f"# Angle_increment {s.phi_step:.4f} deg.",
            *pilatus_sensor_line(g),
            *([] if self.monitor is None else [f"# Flux {float(self.monitor[index]):.10e}"]),
        ])

    def __call__(self, start: int, frames: np.ndarray):

        for i, fr in enumerate(frames):
            n = start + i
            img = fabio.cbfimage.CbfImage(data=fr.astype(np.int32))
            img.header["_array_data.header_convention"] = "PILATUS_1.2"
            img.header["_array_data.header_contents"] = self.header(n)
            img.write(str(self.folder / f"{self.stem}_{n + 1:05d}.cbf"))

    def close(self):
        pass


# --------------------------------------------------------------------------------------
# NXmx pieces shared by the writers
# --------------------------------------------------------------------------------------
def _field(group, name: str, value, units: str | None = None, **kwargs):
    d = group.create_dataset(name, data=value, **kwargs)
    if units:
        d.attrs["units"] = units
    return d


def _group(parent, name: str, nx_class: str):
    g = parent.require_group(name)
    g.attrs["NX_class"] = nx_class
    return g


def _frame_dataset(group, nframes: int, shape, resizable: bool):
    """int32 frames, one per bitshuffle-LZ4 chunk: the cache's chunks are copied in as they are."""
    rows, cols = shape
    return group.create_dataset(
        "data", shape=(0 if resizable else nframes, rows, cols), dtype=np.int32,
        maxshape=(None if resizable else nframes, rows, cols), chunks=(1, rows, cols),
        **hdf5plugin.Bitshuffle(cname="lz4"))


def scan_angles(spec, start: int, stop: int) -> np.ndarray:
    """The scan angle (deg) at the start of frames start..stop-1."""
    return spec.phi_start + spec.phi_step * np.arange(start, stop, dtype=np.float64)


# --------------------------------------------------------------------------------------
# Writers of one scan (acquisition: write(first_frame, [frame bytes...]), close())
# --------------------------------------------------------------------------------------
class SwmrStackWriter:
    """ENTRY.h5 written in place and read while it grows (HDF5 SWMR)."""

    def __init__(self, path: Path, spec, entry, shape, fps: float):
        self.spec = spec
        self.block_frames = max(1, round(fps / BLOCKS_PER_SECOND))
        path.parent.mkdir(parents=True, exist_ok=True)
        # the detector's own writer simulated (HDF5's defaults, file locking too), not
        # files.h5.open_h5: in place, SWMR
        self.f = h5py.File(path, "w", libver="latest")
        data = _group(_group(self.f, "entry", "NXentry"), "data", "NXdata")
        data.attrs["signal"] = "data"
        self.dset = _frame_dataset(data, spec.nframes, shape, resizable=True)
        gonio = _group(_group(self.f["entry"], "sample", "NXsample"), "goniometer",
                       "NXtransformations")
        self.phi = _field(gonio, "phi", np.zeros(0), "deg", maxshape=(None,), chunks=(1024,))
        for name in spec.offset_axes:
            _field(gonio, name, float(entry.offsets.get(name, 0.0)), "deg")
        # every object exists before SWMR starts: a SWMR writer may not create any
        self.f.swmr_mode = True

    def write(self, start: int, frames: list[bytes]) -> None:
        stop = start + len(frames)
        self.dset.resize(stop, axis=0)
        for k, chunk in enumerate(frames):
            self.dset.id.write_direct_chunk((start + k, 0, 0), chunk)
        self.phi.resize((stop,))
        self.phi[start:stop] = scan_angles(self.spec, start, stop)
        self.f.flush()

    def close(self) -> None:
        self.f.close()


class EigerScanWriter:
    """A Dectris-style scan: FOLDER/STEM_master.h5 and FOLDER/STEM_data_NNNNNN.h5.

    The master (NXmx metadata, external links to every planned data file) is written when
    the writer is made; a data file is created when its first frame comes and closed when
    its last one is in.  Frames come as arrays (__call__, the plain mode) or as compressed
    chunks (write, the acquisition mode).  atomic: data files and master are written under
    a temporary name and renamed when complete (the plain mode); else in place as a
    detector does.
    """

    block_frames = 1

    def __init__(self, folder: Path, stem: str, spec, entry,
                 geom: DetectorGeometry, defects: np.ndarray,
                 frames_per_file: int = DEFAULT_FRAMES_PER_FILE, atomic: bool = False,
                 frame_time: float = PLAIN_FRAME_TIME_S):
        """defects: experiment.detector_defects's map (3: a dead pixel)."""
        if frames_per_file < 1:
            raise ValueError(f"frames per data file must be at least 1, got {frames_per_file}")
        self.folder, self.stem, self.spec, self.geom = Path(folder), stem, spec, geom
        self.per_file, self.atomic = int(frames_per_file), atomic
        self.nfiles = -(-spec.nframes // self.per_file)
        self.current = None  # (file index, h5py.File, dataset, path written)
        self._unfinished = {}  # temporary path -> its atomic_path (atomic)
        self.written = 0
        self.folder.mkdir(parents=True, exist_ok=True)
        # data files of an earlier run (another frames_per_file) would join the scan's glob
        for old in self.folder.glob(f"{stem}_data_*.h5*"):
            old.unlink()
        self._write_master(entry, frame_time, defects)

    def data_name(self, k: int) -> str:
        return f"{self.stem}_data_{k + 1:06d}.h5"

    def _open_path(self, path: Path) -> tuple[Path, h5py.File]:
        if not self.atomic:  # the detector's own writer simulated: in place, HDF5's defaults
            return path, h5py.File(path, "w")
        whole = atomic_path(path)  # the plain simulation's: the one atomic writer
        target = whole.__enter__()
        self._unfinished[target] = whole
        return target, open_h5(target, "w")

    def _finish(self, target: Path, final: Path) -> None:
        whole = self._unfinished.pop(target, None)
        if whole is not None:
            whole.__exit__(None, None, None)  # renamed to `final`

    def _write_master(self, entry, frame_time: float, defects: np.ndarray) -> None:
        s, g, n = self.spec, self.geom, self.spec.nframes
        final = self.folder / f"{self.stem}_master.h5"
        target, f = self._open_path(final)
        with f:
            ent = _group(f, "entry", "NXentry")
            data = _group(ent, "data", "NXdata")
            for k in range(self.nfiles):  # links to files not written yet are normal for Eiger
                data[f"data_{k + 1:06d}"] = h5py.ExternalLink(self.data_name(k), RAW_DATASET)
            inst = _group(ent, "instrument", "NXinstrument")
            _field(_group(inst, "beam", "NXbeam"), "incident_wavelength", s.wavelength, "angstrom")
            det = _group(inst, "detector", "NXdetector")
            p1, p2 = g.pixel_size
            rows, cols = g.shape
            # the beamline's geometry (beamline_geometry), as NXmx gives it (direct_beam):
            # the direct beam's position on the frames (pixels) and the distance from the
            # sample to it, not the PONI and its distance (they differ with tilts)
            distance, beam_row, beam_col = direct_beam(beamline_geometry(s, g))
            _field(det, "detector_distance", distance, "m")
            _field(det, "beam_center_x", beam_col, "pixel")
            _field(det, "beam_center_y", beam_row, "pixel")
            _field(det, "x_pixel_size", p2, "m")
            _field(det, "y_pixel_size", p1, "m")
            _field(det, "count_time", frame_time, "s")
            _field(det, "frame_time", frame_time, "s")
            if g.sensor is not None:  # as DECTRIS writes them
                _field(det, "sensor_material", g.sensor.material)
                _field(det, "sensor_thickness", g.sensor.thickness, "m")
            specific = _group(det, "detectorSpecific", "NXcollection")
            _field(specific, "nimages", n)
            _field(specific, "ntrigger", 1)
            _field(specific, "x_pixels_in_detector", cols)
            _field(specific, "y_pixels_in_detector", rows)
            # dead pixels only: hot pixels are for hklflow to find; gaps are -1 in the frames.
            # Where NXmx puts it, and (the same dataset) where DECTRIS's masters have it
            mask = np.where(defects == 3, DEAD_PIXEL_BIT, 0).astype(np.uint32)
            specific["pixel_mask"] = _field(det, "pixel_mask", mask, compression="gzip")
            _field(det, "pixel_mask_applied", False)
            gonio = _group(_group(ent, "sample", "NXsample"), "goniometer", "NXtransformations")
            _field(gonio, "phi", scan_angles(s, 0, n), "deg")
            _field(gonio, "phi_increment", s.phi_step, "deg")
            _field(gonio, "phi_range_average", s.phi_step, "deg")
            _field(gonio, "phi_range_total", s.phi_step * n, "deg")
            for name in s.offset_axes:
                _field(gonio, name, np.full(n, float(entry.offsets.get(name, 0.0))), "deg")
        self._finish(target, final)

    def _dataset_for(self, i: int):
        k = i // self.per_file
        if self.current is not None and self.current[0] != k:
            self._close_current()
        if self.current is None:
            first = k * self.per_file
            count = min(self.per_file, self.spec.nframes - first)
            final = self.folder / self.data_name(k)
            target, f = self._open_path(final)
            data = _group(_group(f, "entry", "NXentry"), "data", "NXdata")
            data.attrs["signal"] = "data"
            dset = _frame_dataset(data, count, self.geom.shape, resizable=False)
            dset.attrs["image_nr_low"] = first + 1
            dset.attrs["image_nr_high"] = first + count
            self.current = (k, f, dset, target, final, first)
        return self.current[2], i - self.current[5]

    def _close_current(self) -> None:
        k, f, dset, target, final, first = self.current
        self.current = None
        held = self.written - first
        if held < len(dset):  # the scan stopped early: the file holds what was acquired
            dset.resize(held, axis=0)
            dset.attrs["image_nr_high"] = first + held
        f.close()
        self._finish(target, final)

    def write(self, start: int, frames: list[bytes]) -> None:
        for k, chunk in enumerate(frames):
            dset, j = self._dataset_for(start + k)
            dset.id.write_direct_chunk((j, 0, 0), chunk)
            self.written = start + k + 1

    def __call__(self, start: int, frames: np.ndarray) -> None:
        for k, frame in enumerate(frames):
            dset, j = self._dataset_for(start + k)
            dset[j] = frame
            self.written = start + k + 1

    def close(self) -> None:
        if self.current is not None:
            self._close_current()


class CbfInPlaceWriter:
    """FOLDER/STEM_NNNNN.cbf written under its final name, as a Pilatus does: a reader may
    find a file that is still being written."""

    block_frames = 1
    PIECES = 4  # writes per file

    def __init__(self, folder: Path, stem: str):
        self.folder, self.stem = Path(folder), stem
        self.folder.mkdir(parents=True, exist_ok=True)

    def write(self, start: int, frames: list[bytes]) -> None:
        for k, payload in enumerate(frames):
            step = -(-len(payload) // self.PIECES)
            with open(self.folder / f"{self.stem}_{start + k + 1:05d}.cbf", "wb") as fh:
                for at in range(0, len(payload), step):
                    fh.write(payload[at:at + step])
                    fh.flush()

    def close(self) -> None:
        pass


