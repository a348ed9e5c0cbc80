"""Reciprocal-space volumes on an (H, K, L) grid: the files of the transform and merge rules.

A volume is two additive arrays on the grid, array[l, k, h] (NXRefine's order):
signal_sum (summed corrected intensity) and weight_sum (summed pixel weights), so volumes
of frame chunks, entries and Laue-equivalent positions add exactly; the intensity users
look at is their ratio.  File layout (NeXus, readable by NeXpy/nexusformat)::

  /entry                        NXentry, @default = KIND; title SAMPLE/TLABEL[/ENTRY]
     KIND                       NXdata (transform, masked_transform, ...), @signal = data,
                                @axes = [Ql, Qk, Qh],
                                @angles = (gamma*, beta*, alpha*) (deg, as NXRefine writes
                                them: NeXpy draws non-orthogonal lattices skewed)
        data                    float32 [l, k, h]: signal_sum / weight_sum, NaN where unmeasured
                                (left out of the temporary parts of a transform that only
                                sums read: there @signal = signal_sum)
        weight_sum              float32: summed pixel weights (files of hklflow 0.x before
                                the NeXpy fix: data_weights, still read)
        data_errors             float32: sigma of data, sqrt(variance_sum) / weight_sum, NaN
                                where unmeasured (NeXpy's error bars: <signal>_errors)
        signal_sum              float32: summed corrected intensity, @weights = weight_sum
        variance_sum            float32: the summed variance of signal_sum (additive like
                                it; data_errors and variance_sum only where the transform
                                summed variances: reduction.transform.variance)
        variance_per_intensity_sum  float32, in the temporary parts of a transform alone
                                (reduction.transform.variance_from expected), in place of
                                variance_sum: gain x the sum of each pixel-frame's factor a
                                (corrections x scale), the variance of signal_sum per unit
                                corrected intensity; the sum of the parts (rule sum_chunks)
                                turns it into variance_sum with a local estimate of the
                                intensity (algorithms.merge.expected_variance)
        Qh, Qk, Ql              float64 voxel centres (r.l.u.), @scaling_factor = |a*| etc. (1/A)
                                (the three arrays: chunks of 8 x 64 x 64, bitshuffle-LZ4; a
                                chunk with nothing measured is not stored, HDF5 reads its
                                fill value: NaN for data, 0 for the others)
     sample                     NXsample: name, temperature_label, space_group, unit_cell,
                                ub_matrix (if known), and NXRefine's fields (hklflow.model.nxrefine.
                                sample_fields): unitcell_a..gamma, laue_group, unit_cell_group,
                                lattice_centring, temperature (K)
     notes                      NXnote (JSON): what was summed (frames, entries, corrections)
     process                    NXprocess: program, version, date, note (JSON provenance record,
                                files.h5.write_provenance_h5)

NeXpy opens it as it is: the @default chain leads to KIND, whose axes carry long_name and
scaling_factor.  Its "weighted" view divides the signal by the field that nexusformat's
NXdata.nxweights finds: `<signal>_weights`, the signal's @weights or a field `weights`.
`data` (already the intensity) has none of them, so both views show the intensity;
signal_sum (NXRefine's v) has @weights = weight_sum (its n), so plotted weighted it is the
intensity too.  The NXRefine wrapper links them as `data` and `weights`
(hklflow.files.nxrefine), NXRefine's own layout.
"""
from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import hdf5plugin
import numpy as np

from ..base.atomic import atomic_path
from ..base.errors import FileFormatError
from ..codec import ChunkReader, ChunkWriter
from ..model.crystal import UnitCell
from ..model.grid import AXES, Axis, Grid
from ..model.nxrefine import sample_fields, transform_angles
from .h5 import open_h5, text, write_provenance_h5
from .volume_planes import KeptPlanes


@functools.cache
def _kernels():
    """hklflow.files.volume_kernels, imported at the first call of one of its loops (it
    loads numba: the steps that only read headers or slices never call one)."""
    from . import volume_kernels

    return volume_kernels


WEIGHT_SUM = "weight_sum"
VARIANCE_SUM = "variance_sum"
# a transform's part with the variance from the expected counts: the variance per unit
# intensity (VolumeWriter.carry_variance_per_intensity), never the variance itself
VARIANCE_PER_INTENSITY = "variance_per_intensity_sum"
OLD_WEIGHT_SUM = "data_weights"  # hklflow's name before it (NeXpy divided `data` by it)


def _weight_sum(group: h5py.Group) -> h5py.Dataset:
    return group[WEIGHT_SUM] if WEIGHT_SUM in group else group[OLD_WEIGHT_SUM]


@dataclass
class Volume:
    grid: Grid
    signal: np.ndarray  # [l, k, h] summed corrected intensity
    weight: np.ndarray  # [l, k, h] summed weight
    kind: str = "transform"
    title: str = ""
    sample: dict = field(default_factory=dict)  # name, space_group, unit_cell, ub_matrix
    notes: dict = field(default_factory=dict)
    variance: np.ndarray | None = None  # [l, k, h] summed variance of signal; None: unknown

    def __post_init__(self):
        arrays = [self.signal, self.weight] + ([self.variance] if self.variance is not None
                                               else [])
        if any(a.shape != self.grid.shape for a in arrays):
            raise ValueError(f"volume arrays {[a.shape for a in arrays]} do not match "
                             f"the grid {self.grid.shape}")

    def errors(self) -> np.ndarray | None:
        """sigma of the intensity, sqrt(variance) / weight (NaN where nothing was
        measured); None without the variance."""
        if self.variance is None:
            return None
        return errors_of(self.variance, self.weight)

    def intensity(self) -> np.ndarray:
        """signal / weight, NaN where nothing was measured."""
        s = np.ascontiguousarray(self.signal, dtype=np.float32)
        w = np.ascontiguousarray(self.weight, dtype=np.float32)
        out = np.empty(s.shape, np.float32)
        _kernels().slab_sums(s, w, out, True, s, w, False)  # one pass (numpy: five)
        return out

    def measured_fraction(self, region: np.ndarray | None = None) -> float:
        w = self.weight if region is None else self.weight[region]
        return float(np.count_nonzero(w > 0)) / max(w.size, 1)


def errors_of(variance: np.ndarray, weight: np.ndarray, out: np.ndarray | None = None
              ) -> np.ndarray:
    """sigma of signal / weight, sqrt(variance) / weight, float32; NaN where the weight is
    0 (nothing measured)."""
    w = np.asarray(weight, np.float32)
    out = np.empty(w.shape, np.float32) if out is None else out
    with np.errstate(invalid="ignore", divide="ignore"):
        np.divide(np.sqrt(np.asarray(variance, np.float32)), w, out=out)
    out[~(w > 0)] = np.nan
    return out


def _compression():
    return dict(hdf5plugin.Bitshuffle(cname="lz4"))


def _chunks(shape):
    return tuple(min(n, c) for n, c in zip(shape, (8, 64, 64)))


def _text_or_none(value):
    return None if value is None else text(value)


def reciprocal_lengths(cell) -> tuple[float, float, float]:
    """|a*|, |b*|, |c*| in 1/Angstrom (no 2 pi) of a UnitCell or parameter list."""
    c = cell if isinstance(cell, UnitCell) else UnitCell(*cell)
    return tuple(float(v) for v in c.reciprocal_parameters[:3])


def write_volume(path, vol: Volume, provenance: dict) -> Path:
    """Write a volume (atomically: a temporary file renamed when complete), slab by slab so
    that no full-size temporary is made."""
    with VolumeWriter(path, vol.grid, vol.kind, vol.title, vol.sample, vol.notes, provenance,
                      variance=vol.variance is not None) as w:
        step = slab_planes(vol.grid)
        for l0 in range(0, vol.grid.l.n, step):
            w.write(l0, vol.signal[l0:l0 + step], vol.weight[l0:l0 + step],
                    None if vol.variance is None else vol.variance[l0:l0 + step])
    return Path(path)


HALF_SET = "half_set_a"  # /entry's group of half set A (write_half_set)


def _find_kind(ent, path):
    """The volume's group: the entry's default, else the first NXdata with signal_sum that
    is not the half set (HALF_SET)."""
    default = text(ent.attrs.get("default", ""))
    candidates = ([default] if default in ent else []) + [k for k in ent if k != HALF_SET]
    for k in candidates:
        if ent[k].attrs.get("NX_class") in ("NXdata", b"NXdata") and "signal_sum" in ent[k]:
            return k
    raise FileFormatError(f"{path}: /entry holds no volume (NXdata with signal_sum): not a "
                          "transform or merge output")


def _entry(f, path):
    if "entry" not in f:
        raise FileFormatError(f"{path}: no /entry: not a volume file")
    return f["entry"]


def read_grid_of(path) -> tuple[Grid, str]:
    """The grid and kind of a volume file, without reading its arrays."""
    with open_h5(path) as f:
        ent = _entry(f, path)
        kind = _find_kind(ent, path)
        d = ent[kind]
        axes = []
        for a in AXES:
            v = d[f"Q{a}"][()]
            step = float(d[f"Q{a}"].attrs.get("step", v[1] - v[0] if len(v) > 1 else 1.0))
            axes.append(Axis(float(v[0]), step, len(v)))
        return Grid(*axes), kind


def read_volume(path, region: tuple | None = None) -> Volume:
    """Read a volume file (all of it, or region = (l-slice, k-slice, h-slice) of the arrays,
    in which case the grid returned is still the whole grid and arrays are the region)."""
    path = os.fspath(path)
    grid, kind = read_grid_of(path)
    with open_h5(path) as f:
        ent = _entry(f, path)
        d = ent[kind]
        sel = region if region is not None else ()
        signal = d["signal_sum"][sel]
        weight = _weight_sum(d)[sel]
        variance = d["variance_sum"][sel] if "variance_sum" in d else None
        sample = {k: (text(v[()]) if v.dtype.kind in "SOU" else v[()]) for k, v in ent["sample"].items()} \
            if "sample" in ent else {}
        notes = json.loads(text(ent["notes/data"][()])) if "notes" in ent else {}
        title = text(ent["title"][()]) if "title" in ent else ""
    if region is not None:
        v = Volume.__new__(Volume)
        v.grid, v.signal, v.weight, v.kind, v.title, v.sample, v.notes, v.variance = (
            grid, signal, weight, kind, title, sample, notes, variance)
        return v
    return Volume(grid, signal, weight, kind, title, sample, notes, variance)


# --------------------------------------------------------------------------------------
# Slab by slab along L (merging: sums and symmetrisation): volumes larger than memory allows twice
# --------------------------------------------------------------------------------------
def slab_planes(grid: Grid, bytes_per_array: float = 64e6, multiple: int = 8) -> int:
    """L planes per slab so that one float32 array of a slab holds about bytes_per_array
    (a multiple of the L chunk size, 8; at least 8, at most 64)."""
    per_plane = 4 * grid.k.n * grid.h.n
    n = int(bytes_per_array // per_plane) // multiple * multiple
    return max(multiple, min(64, n))


class VolumeReader:
    """L planes of one volume file, read slab by slab into arrays the caller may reuse
    (a fresh array per slab costs its page faults again, a large part of a merge's time)::

        with VolumeReader(path) as r:
            for l0 in range(0, r.grid.l.n, planes):
                signal, weight = r.read(l0, l0 + planes, out=(signal_buf, weight_buf))

    variance: read (signal, weight, variance) instead (read, read_chunk; out then holds
    three arrays): None (the default) where the file has variance_sum, False never; True
    where the file lacks it is an error.
    """

    def __init__(self, path, compiled_decompression: bool = False, variance: bool | None = None,
                 per_intensity: bool = False):
        self.path = os.fspath(path)
        # per_intensity: the third array is variance_per_intensity_sum (a transform's part)
        self._variance_name = VARIANCE_PER_INTENSITY if per_intensity else VARIANCE_SUM
        # raw chunks decoded by the active codec (HKLFLOW_CODEC; else the library codec):
        # for the steps that read whole volumes and run compiled kernels anyway
        self.compiled_decompression = compiled_decompression
        self.grid, self.kind = read_grid_of(self.path)
        self._f = open_h5(self.path)
        try:
            d = _entry(self._f, self.path)[self.kind]
            self._signal, self._weight = d["signal_sum"], _weight_sum(d)
            self._intensity = d["data"] if "data" in d else None
            self.has_variance = self._variance_name in d
            if variance and not self.has_variance:
                raise FileFormatError(f"{self.path}: no {self._variance_name} (made with "
                                      "reduction.transform.variance false, or by an older "
                                      "hklflow)")
            self.variance = self.has_variance if variance is None else bool(variance)
            self._arrays = (self._signal, self._weight) + ((d[self._variance_name],)
                                                           if self.variance else ())
        except BaseException:
            self._f.close()
            raise
        self._buffers = None
        # by id() of the reader's own dataset objects: dset.name asks HDF5, a cost twice
        # per chunk read
        self._chunk_readers: dict[int, ChunkReader | None] = {}

    def _chunk_reader(self, dset: h5py.Dataset) -> ChunkReader | None:
        key = id(dset)
        if key not in self._chunk_readers:
            self._chunk_readers[key] = ChunkReader.open(dset, self.compiled_decompression)
        return self._chunk_readers[key]

    def _read(self, dset: h5py.Dataset, l0: int, l1: int, out: np.ndarray) -> None:
        """Planes [l0, l1) of an array into out: from its raw chunks where it can be."""
        reader = self._chunk_reader(dset)
        if reader is None:
            dset.read_direct(out, np.s_[l0:l1], np.s_[0:l1 - l0])
        else:
            reader.read(l0, l1, out)

    @property
    def chunks(self) -> tuple[int, int, int]:
        return tuple(int(c) for c in self._signal.chunks)

    def stored_chunks(self) -> list | None:
        """The corners (l, k, h) of the chunks stored in signal_sum or weight_sum, sorted
        (elsewhere both hold 0 alone); None when they are not read from their raw chunks."""
        readers = [self._chunk_reader(d) for d in (self._signal, self._weight)]
        if any(r is None for r in readers) or readers[0].chunks != readers[1].chunks:
            return None
        return sorted(set(readers[0].stored) | set(readers[1].stored))

    def read_chunk(self, corner: tuple, out: tuple) -> tuple:
        """(signal_sum, weight_sum[, variance_sum]) of the chunk at `corner` whole, into out
        (float32 C-order arrays of the chunks' shape, one per array): 0 where not stored
        and beyond the grid; only when stored_chunks() is not None."""
        if len(out) != len(self._arrays):
            raise ValueError(f"{self.path}: {len(out)} arrays given for {len(self._arrays)}")
        for dset, o in zip(self._arrays, out):
            reader = self._chunk_reader(dset)
            if reader is None or o.shape != reader.chunks or o.dtype != np.float32 \
                    or not o.flags.c_contiguous:
                raise ValueError(f"{self.path}: {dset.name} cannot be read chunk by chunk into "
                                 f"{o.dtype} {o.shape} (float32 C-order {self.chunks} expected)")
            reader.read_chunk(tuple(corner), o)
        return out

    def read_weight_and_variance(self) -> tuple[np.ndarray, np.ndarray]:
        """(weight_sum, variance_sum) float32 of the whole volume, without its signal (the
        PDFs' sigma); only where the file has a variance."""
        if not self.has_variance:
            raise FileFormatError(f"{self.path}: no variance_sum")
        variance = (self._arrays[2] if self.variance
                    else self._weight.parent[self._variance_name])
        out = []
        for dset in (self._weight, variance):
            a = np.empty(self.grid.shape, np.float32)
            if self.grid.l.n:
                self._read(dset, 0, self.grid.l.n, a)
            out.append(a)
        return out[0], out[1]

    def read(self, l0: int, l1: int, out: tuple | None = None) -> tuple:
        """(signal_sum, weight_sum[, variance_sum]) float32 of planes [l0, l1): views of the
        first planes of `out` (float32 C-order arrays [>= l1 - l0, k, h], one per array)
        when given, else new arrays."""
        n = l1 - l0
        if not 0 <= l0 <= l1 <= self.grid.l.n:
            raise ValueError(f"{self.path}: L planes [{l0}, {l1}) are outside the grid's "
                             f"{self.grid.l.n}")
        if out is None:
            out = tuple(np.empty((n,) + self.grid.shape[1:], np.float32) for _ in self._arrays)
        if len(out) != len(self._arrays):
            raise ValueError(f"{self.path}: {len(out)} arrays given for {len(self._arrays)}")
        views = tuple(o[:n] for o in out)
        for dset, view in zip(self._arrays, views):
            if n:
                self._read(dset, l0, l1, view)
        return views

    def read_weight(self, l0: int, l1: int) -> np.ndarray:
        """weight_sum float32 of planes [l0, l1) alone (where a voxel was measured)."""
        if not 0 <= l0 <= l1 <= self.grid.l.n:
            raise ValueError(f"{self.path}: L planes [{l0}, {l1}) are outside the grid's "
                             f"{self.grid.l.n}")
        out = np.empty((l1 - l0,) + self.grid.shape[1:], np.float32)
        if l1 > l0:
            self._read(self._weight, l0, l1, out)
        return out

    @property
    def stores_intensity(self) -> bool:
        """Whether the file holds the intensity `data` (a transform's parts do not)."""
        return self._intensity is not None

    def read_intensity(self, l0: int, l1: int, out: np.ndarray | None = None) -> np.ndarray:
        """The intensity (signal / weight, NaN where unmeasured) float32 of planes [l0, l1),
        into the first planes of `out` when given: the stored `data` array when the file
        has one (one array read, no division), else from signal and weight."""
        n = l1 - l0
        if out is None:
            out = np.empty((n,) + self.grid.shape[1:], np.float32)
        view = out[:n]
        if self._intensity is not None:
            if not 0 <= l0 <= l1 <= self.grid.l.n:
                raise ValueError(f"{self.path}: L planes [{l0}, {l1}) are outside the grid's "
                                 f"{self.grid.l.n}")
            if n:
                self._read(self._intensity, l0, l1, view)
            return view
        if self._buffers is None or self._buffers[0].shape[0] < n:
            self._buffers = tuple(np.empty((n,) + self.grid.shape[1:], np.float32)
                                  for _ in self._arrays)
        signal, weight = self.read(l0, l1, out=self._buffers)[:2]
        _kernels().slab_sums(signal, weight, view, True, signal, weight, False)
        return view

    def read_plane(self, axis: str, index: int) -> np.ndarray:
        """The intensity (NaN where unmeasured) float32 of one plane, the array [l, k, h]
        without `axis` ('h', 'k' or 'l') at `index`: the stored `data` array when the file
        has one, else signal / weight.  An H or K plane runs through one row of chunks:
        only the stored ones are decompressed (whole, the plane copied out of each)."""
        j = 2 - AXES.index(axis)  # array order is [l, k, h]
        if not 0 <= index < self.grid.shape[j]:
            raise ValueError(f"{self.path}: {axis} plane {index} is outside the grid's "
                             f"{self.grid.shape[j]}")
        if j == 0:
            return self.read_intensity(index, index + 1)[0]
        arrays = (self._intensity,) if self._intensity is not None else (self._signal, self._weight)
        readers = [self._chunk_reader(d) for d in arrays]
        region = [slice(None)] * 3
        region[j] = slice(index, index + 1)
        if any(r is None for r in readers):
            planes = [np.squeeze(d[tuple(region)], axis=j) for d in arrays]
        else:
            planes = [self._plane_from_chunks(r, j, index) for r in readers]
        if len(planes) == 1:
            return planes[0]
        signal, weight = (np.ascontiguousarray(p, np.float32) for p in planes)
        out = np.empty_like(signal)
        _kernels().slab_sums(signal, weight, out, True, signal, weight, False)  # as read_intensity
        return out

    @staticmethod
    def _plane_from_chunks(reader: "ChunkReader", j: int, index: int) -> np.ndarray:
        shape = [n for i, n in enumerate(reader.dset.shape) if i != j]
        out = np.full(shape, reader.fill, np.float32)
        first = index - index % reader.chunks[j]  # the chunks' corner along the plane's axis
        chunk = np.empty(reader.chunks, np.float32)
        for corner in reader.stored:
            if corner[j] != first:
                continue
            reader.read_chunk(corner, chunk)
            a, b = (c for i, c in enumerate(corner) if i != j)
            part = np.take(chunk, index - first, axis=j)
            dest = out[a:a + part.shape[0], b:b + part.shape[1]]
            dest[...] = part[:dest.shape[0], :dest.shape[1]]
        return out

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> "VolumeReader":
        return self

    def __exit__(self, *exc) -> bool:
        self.close()
        return False


def read_intensity(path, compiled_decompression: bool = False) -> tuple[Volume, np.ndarray]:
    """The header of a volume file (read_volume_header) and its intensity, float32 [l, k, h]
    (signal / weight, NaN where unmeasured): the stored `data` array when the file has one
    (one array read instead of two, and no division), else from signal and weight slab by
    slab.  compiled_decompression: VolumeReader's."""
    head = read_volume_header(path)
    grid = head.grid
    out = np.empty(grid.shape, np.float32)
    with VolumeReader(path, compiled_decompression) as r:
        planes = grid.l.n if r.stores_intensity else slab_planes(grid)
        for l0 in range(0, grid.l.n, planes):
            l1 = min(l0 + planes, grid.l.n)
            r.read_intensity(l0, l1, out[l0:l1])
    return head, out


def read_volume_header(path) -> Volume:
    """Grid, kind, title, sample and notes of a volume file; signal and weight are empty
    (0 planes) arrays."""
    return read_volume(path, region=(slice(0, 0), slice(None), slice(None)))


def _write_notes(entry, notes: dict) -> None:
    if "notes" in entry:
        del entry["notes"]
    note = entry.create_group("notes")
    note.attrs["NX_class"] = "NXnote"
    note["type"] = "application/json"
    note["data"] = json.dumps(notes, sort_keys=True, default=str)


def update_notes(path, extra: dict) -> None:
    """Add `extra` to a complete volume file's notes (figures made from the file itself, after
    it was written: merge_entries's statistics)."""
    with open_h5(path, "r+") as f:
        ent = _entry(f, path)
        notes = json.loads(text(ent["notes/data"][()])) if "notes" in ent else {}
        _write_notes(ent, {**notes, **extra})


def has_intensity(path) -> bool:
    """Whether a volume file holds the intensity array `data` (complete volumes do; the
    temporary parts of a transform may not)."""
    with open_h5(path) as f:
        ent = _entry(f, path)
        return "data" in ent[_find_kind(ent, path)]


def write_half_set(entry: h5py.Group, grid: Grid, signal, weight, how: str) -> None:
    """/entry/half_set_a: NXdata of half set A's signal_sum and weight_sum on its grid
    (the volume's binned 2 x 2 x 2), `how` the frames it holds."""
    if HALF_SET in entry:
        del entry[HALF_SET]
    g = entry.create_group(HALF_SET)
    g.attrs["NX_class"] = "NXdata"
    g.attrs["signal"] = "signal_sum"
    g.attrs["axes"] = np.array(["Ql", "Qk", "Qh"], dtype=h5py.string_dtype())
    g.attrs["how"] = how
    for name, values in (("signal_sum", signal), (WEIGHT_SUM, weight)):
        if values.shape != grid.shape:
            raise ValueError(f"half set's {name} {values.shape} is not of its grid {grid.shape}")
        g.create_dataset(name, data=np.asarray(values, np.float32),
                         chunks=_chunks(grid.shape), **_compression())
    g["signal_sum"].attrs["weights"] = WEIGHT_SUM  # (NeXpy's weighted view: the intensity)
    for i, (a, ax) in enumerate(zip(AXES, grid.axes)):
        q = g.create_dataset(f"Q{a}", data=ax.values)
        q.attrs["step"] = ax.step
        g.attrs[f"Q{a}_indices"] = 2 - i


def read_half_set(path) -> tuple[Grid, np.ndarray, np.ndarray, str] | None:
    """(grid, signal_sum, weight_sum, how) of a volume file's half set A; None without."""
    with open_h5(path) as f:
        entry = _entry(f, str(path))
        if HALF_SET not in entry:
            return None
        g = entry[HALF_SET]
        axes = [Axis(float(g[f"Q{a}"][0]), float(g[f"Q{a}"].attrs["step"]), len(g[f"Q{a}"]))
                for a in AXES]
        return (Grid(*axes), g["signal_sum"][()], _weight_sum(g)[()],
                text(g.attrs.get("how", "")))


def has_variance(path) -> bool:
    """Whether a volume file holds variance_sum (made with reduction.transform.variance)."""
    with open_h5(path) as f:
        ent = _entry(f, path)
        return "variance_sum" in ent[_find_kind(ent, path)]


def variance_kind(path) -> str | None:
    """What a volume file carries of its signal's variance: 'variance' (variance_sum),
    'per_intensity' (variance_per_intensity_sum: a transform's part with the variance from
    the expected counts, reduction.transform.variance_from) or None."""
    with open_h5(path) as f:
        ent = _entry(f, path)
        d = ent[_find_kind(ent, path)]
        if VARIANCE_PER_INTENSITY in d:
            return "per_intensity"
        return "variance" if VARIANCE_SUM in d else None


def adopt_volume(src, out, title: str, notes: dict, provenance: dict) -> Path:
    """Make the complete volume file `src` the volume `out` without copying its arrays: it
    is moved (a rename: both on one file system), its title, notes and provenance replaced,
    then renamed to `out`.  On any failure it is moved back to `src`, so nothing is lost."""
    src, out = Path(src), Path(out)
    if not has_intensity(src):
        raise FileFormatError(f"{src}: a part without its intensity array cannot become a "
                              "complete volume (sum it instead)")
    with atomic_path(out, moved_from=src) as tmp, open_h5(tmp, "r+") as f:
        f.attrs["file_name"] = str(out.resolve())
        ent = f["entry"]
        del ent["title"]
        ent["title"] = title
        _write_notes(ent, notes)
        if "process" in ent:
            del ent["process"]
        write_provenance_h5(ent, provenance)
    return out


def write_sample_group(entry, sample: dict, cell) -> None:
    """/entry/sample (NXsample): hklflow's sample dict and NXRefine's names beside it,
    derived again on every write (a sum or a symmetrisation passes the sample it read on)."""
    smp = entry.create_group("sample")
    smp.attrs["NX_class"] = "NXsample"
    fields = {**sample, **sample_fields(_text_or_none(sample.get("space_group")), cell,
                                        sample.get("temperature"))}
    for k, v in fields.items():
        smp[k] = np.asarray(v) if not isinstance(v, str) else v
    for k in fields:
        if k.startswith("unitcell_"):
            smp[k].attrs["units"] = "degree" if k[9:] in ("alpha", "beta", "gamma") else "angstrom"
    if "temperature" in fields:
        smp["temperature"].attrs["units"] = "K"


def same_chunk(a: tuple, b: tuple) -> bool:
    """Whether chunks a and b (signal, weight, intensity or None, as write_chunk takes them:
    float32 C order) hold the same bits."""
    same_bits = _kernels().same_bits
    return len(a) == len(b) and all(
        x is y or (x is not None and y is not None and x.shape == y.shape
                   and same_bits(x.reshape(-1).view(np.uint32), y.reshape(-1).view(np.uint32)))
        for x, y in zip(a, b))


class VolumeWriter:
    """Write a volume in write_volume's layout, slab by slab along L, so that a volume is
    never held whole (the intensity, signal/weight, is computed per slab).  Atomic like
    write_volume: a temporary file renamed on a clean exit of the `with` block, removed on
    an exception or when some L plane was never written.  `notes` may be set (replaced)
    until the block ends::

        with VolumeWriter(path, grid, kind, title, sample, notes, provenance) as w:
            for l0 in range(0, grid.l.n, planes):
                w.write(l0, signal_slab, weight_slab)   # [planes, k, h], any float dtype
            w.notes["measured_fraction"] = w.measured / grid.size

    Slabs may come in any order, aligned with the L chunks (8 planes) or not; without
    the bitshuffle package HDF5's filter writes them, and cache_planes > 0 then keeps that
    many L planes of chunks (and one more chunk row) in HDF5's chunk cache, so that
    unaligned slabs do not compress a chunk twice.  The writer counts what it stores: measured
    (voxels with weight > 0), weight_sum and signal_sum (float64 sums of the stored float32
    values).  intensity=False leaves out the `data` array (signal / weight): for parts that
    only a sum reads.  A float64 slab (a sum's) is rounded, counted and divided in one pass.
    Rows of L chunks are stored as raw chunks once all their planes arrived (ChunkWriter),
    and a chunk that holds only the fill value (0; NaN for data) is not stored at all: HDF5
    reads it back as that value (most chunks of a scan's volume hold nothing measured).
    keep: KeptPlanes of this grid, filled with the intensity as it is stored (with
    intensity only).  variance: the volume carries variance_sum (and, with the intensity,
    data_errors): every write and write_chunk then gives the variance too.
    """

    def __init__(self, path, grid: Grid, kind: str = "transform", title: str = "",
                 sample: dict | None = None, notes: dict | None = None,
                 provenance: dict | None = None, intensity: bool = True,
                 cache_planes: int = 0, keep: KeptPlanes | None = None,
                 variance: bool = False):
        if keep is not None:
            if not intensity:
                raise ValueError(f"{path}: planes are kept of the intensity alone")
            keep.bind(grid)
        self.keep = keep
        self.path = Path(path)
        self.cache_planes = int(cache_planes)
        self.grid, self.kind, self.title = grid, kind, title
        self.sample = dict(sample or {})
        self.notes = dict(notes or {})
        self.provenance = dict(provenance or {})
        self.intensity = bool(intensity)
        self.variance = bool(variance)
        self._variance_name = VARIANCE_SUM  # (carry_variance_per_intensity: the other)
        self.measured = 0
        self.weight_sum = 0.0
        self.signal_sum = 0.0
        self._written = np.zeros(grid.l.n, dtype=bool)
        self._buffers: dict[str, np.ndarray] = {}
        self._chunk_writer = ChunkWriter(_chunks(grid.shape))
        self._partial_rows: dict[int, dict] = {}  # first plane -> buffers of a chunk row
        self._free_rows: list[dict] = []
        self._f = None

    def __enter__(self) -> "VolumeWriter":
        self._atomic = atomic_path(self.path)
        tmp = self._atomic.__enter__()
        try:
            self._f = f = open_h5(tmp, "w", **self._chunk_cache())
            f.attrs["default"] = "entry"
            f.attrs["file_name"] = str(self.path.resolve())
            ent = f.create_group("entry")
            ent.attrs["NX_class"] = "NXentry"
            ent.attrs["default"] = self.kind
            ent["title"] = self.title
            d = ent.create_group(self.kind)
            d.attrs["NX_class"] = "NXdata"
            d.attrs["signal"] = "data" if self.intensity else "signal_sum"
            d.attrs["axes"] = np.array(["Ql", "Qk", "Qh"], dtype=h5py.string_dtype())
            for i, name in enumerate(("Ql", "Qk", "Qh")):
                d.attrs[f"{name}_indices"] = i
            shape, chunks, comp = self.grid.shape, _chunks(self.grid.shape), _compression()
            if self.intensity:
                d.create_dataset("data", shape=shape, dtype=np.float32, chunks=chunks,
                                 fillvalue=np.nan, **comp)
                d["data"].attrs["long_name"] = "intensity (corrected counts per pixel weight)"
            d.create_dataset(WEIGHT_SUM, shape=shape, dtype=np.float32, chunks=chunks,
                             fillvalue=0.0, **comp)
            d[WEIGHT_SUM].attrs["long_name"] = "summed pixel weights"
            d.create_dataset("signal_sum", shape=shape, dtype=np.float32, chunks=chunks,
                             fillvalue=0.0, **comp)
            d["signal_sum"].attrs["weights"] = WEIGHT_SUM  # signal_sum / weights = intensity
            d["signal_sum"].attrs["long_name"] = ("summed corrected intensity (plotted "
                                                  "weighted: the intensity)")
            if self.variance:
                d.create_dataset("variance_sum", shape=shape, dtype=np.float32, chunks=chunks,
                                 fillvalue=0.0, **comp)
                d["variance_sum"].attrs["long_name"] = "summed variance of signal_sum"
                if self.intensity:  # (NeXpy pairs <signal>_errors with the signal)
                    d.create_dataset("data_errors", shape=shape, dtype=np.float32,
                                     chunks=chunks, fillvalue=np.nan, **comp)
                    d["data_errors"].attrs["long_name"] = (
                        "standard uncertainty of the intensity (counting statistics)")
            cell = self.sample.get("unit_cell")
            scale = reciprocal_lengths(cell) if cell is not None else (None,) * 3
            if cell is not None:
                d.attrs["angles"] = np.asarray(transform_angles(cell))
            for a, ax, s in zip(AXES, self.grid.axes, scale):
                q = d.create_dataset(f"Q{a}", data=ax.values)
                q.attrs["units"] = "rlu"
                q.attrs["long_name"] = a.upper()
                q.attrs["step"] = ax.step
                if s is not None:
                    q.attrs["scaling_factor"] = s
            write_sample_group(ent, self.sample, cell)
            write_provenance_h5(ent, self.provenance)
            # the arrays' handles, looked up once (an h5py lookup per chunk would be a
            # noticeable part of a volume's write)
            self._data = {name: d[name] for name in ("data", WEIGHT_SUM, "signal_sum",
                                                     "variance_sum", "data_errors")
                          if name in d}
        except BaseException as exc:
            self._close()
            self._atomic.__exit__(type(exc), exc, exc.__traceback__)
            raise
        return self

    @property
    def per_intensity(self) -> bool:
        """Whether the third array is the variance per unit intensity
        (carry_variance_per_intensity), not the variance."""
        return self._variance_name == VARIANCE_PER_INTENSITY

    def carry_variance_per_intensity(self) -> None:
        """The variance given is the signal's variance per unit corrected intensity (a
        transform's part with reduction.transform.variance_from expected: gain x the sum of
        the pixel-frames' factors a), not its variance: stored as
        variance_per_intensity_sum, without data_errors; only a sum of the parts reads it
        (and turns it into variance_sum: algorithms.merge.expected_variance).  Inside the
        `with` block, before any write."""
        if not self.variance or self._f is None:
            raise ValueError(f"{self.path}: a writer with a variance, opened, carries it per "
                             "unit intensity")
        if self._written.any() or self.measured:
            raise ValueError(f"{self.path}: the variance's meaning is set before any write")
        if self.per_intensity:
            return
        d = self._f["entry"][self.kind]
        d.move(VARIANCE_SUM, VARIANCE_PER_INTENSITY)
        d[VARIANCE_PER_INTENSITY].attrs["long_name"] = (
            "summed variance of signal_sum per unit corrected intensity (gain x sum of the "
            "pixel-frames' factors a; the variance where the parts are summed)")
        self._data.pop(VARIANCE_SUM, None)
        self._data[VARIANCE_PER_INTENSITY] = d[VARIANCE_PER_INTENSITY]
        if "data_errors" in d:
            del d["data_errors"]
        self._data.pop("data_errors", None)
        self._variance_name = VARIANCE_PER_INTENSITY

    def _check_variance(self, variance, shape, where: str) -> None:
        if (variance is not None) != self.variance or (variance is not None
                                                        and variance.shape != shape):
            raise ValueError(f"{self.path}: {where}: a variance of {shape} expected "
                             if self.variance else f"{self.path}: {where}: no variance "
                             "expected (the writer was made without)")

    def write(self, l0: int, signal: np.ndarray, weight: np.ndarray,
              variance: np.ndarray | None = None) -> None:
        """Store planes [l0, l0 + len(signal)) (arrays [planes, k, h]; stored float32), with
        their variance when the writer has one."""
        n = signal.shape[0]
        self._check_variance(variance, signal.shape, f"slab at L plane {l0}")
        if signal.shape != weight.shape or signal.shape[1:] != self.grid.shape[1:] \
                or not 0 <= l0 <= l0 + n <= self.grid.l.n:
            raise ValueError(f"slab {signal.shape}/{weight.shape} at L plane {l0} does not fit "
                             f"the grid {self.grid.shape}")
        inten = self._buffer("intensity", signal.shape) if self.intensity \
            else np.empty((0,), np.float32)
        if signal.dtype == np.float64 and weight.dtype == np.float64:
            s32, w32 = self._buffer("signal", signal.shape), self._buffer("weight", signal.shape)
            measured, weight_sum, signal_sum = _kernels().slab_sums(
                np.ascontiguousarray(signal), np.ascontiguousarray(weight), inten,
                self.intensity, s32, w32, True)
        else:
            s32 = np.ascontiguousarray(signal, dtype=np.float32)
            w32 = np.ascontiguousarray(weight, dtype=np.float32)
            measured, weight_sum, signal_sum = _kernels().slab_sums(
                s32, w32, inten, self.intensity, s32, w32, False)
        arrays = [("signal_sum", s32, 0.0), (WEIGHT_SUM, w32, 0.0)]
        if self.intensity:
            arrays.append(("data", inten, np.nan))
        if self.variance:
            v32 = self._buffer("variance", signal.shape)
            v32[...] = variance
            arrays.append((self._variance_name, v32, 0.0))
            if self.intensity and not self.per_intensity:
                arrays.append(("data_errors",
                               errors_of(v32, w32, self._buffer("errors", signal.shape)), np.nan))
        if self.keep is not None:
            self.keep.take(l0, 0, 0, inten)
        if self._chunk_writer.available:
            self._store_chunk_rows(l0, n, arrays)
        else:  # HDF5's filter (its chunk cache completes chunks of unaligned slabs)
            for name, values, _ in arrays:
                self._data[name].write_direct(values, dest_sel=np.s_[l0:l0 + n])
        self.measured += int(measured)
        self.weight_sum += float(weight_sum)
        self.signal_sum += float(signal_sum)
        self._written[l0:l0 + n] = True

    @property
    def chunks(self) -> tuple[int, int, int]:
        """The (l, k, h) shape of the arrays' chunks."""
        return self._chunk_writer.chunks

    @property
    def writes_raw_chunks(self) -> bool:
        """Whether write_chunk can be used (the bitshuffle package found)."""
        return self._chunk_writer.available

    def write_chunk(self, l0: int, k0: int, h0: int, signal: np.ndarray, weight: np.ndarray,
                    intensity: np.ndarray | None, variance: np.ndarray | None = None, *,
                    counts: tuple | None = None, twin: "VolumeWriter | None" = None,
                    tally: bool = True) -> tuple:
        """Store one chunk given whole (float32 C-order [chunks], the fill value beyond the
        grid; intensity None when the writer has none, variance None when it has none):
        of its arrays, those holding a value other than their fill (0; NaN for the
        intensity and its errors) bit for bit; the errors where the intensity is stored.  counts:
        (measured voxels, weight sum, signal sum) of the chunk, counted here when None;
        returned, and added to the writer's (and twin's) totals unless tally is False (the
        caller adds them, with `tally`: chunks stored by several threads, their sums added
        in one order).  A chunk that no call gives holds fill values alone; mark_written
        tells when a row of chunks is complete.  twin: a writer of the same grid and arrays
        whose chunk here is this one bit for bit (same_chunk): it gets the bytes compressed
        once (the two kinds of a transform differ in the chunks of the Bragg regions
        alone).  Chunks may be stored from several threads at once (not the same one)."""
        corner = (l0, k0, h0)
        if twin is not None and (twin is self or twin.grid.shape != self.grid.shape
                                 or twin.intensity != self.intensity
                                 or twin.variance != self.variance
                                 or twin.per_intensity != self.per_intensity):
            raise ValueError(f"{twin.path}: a twin of {self.path} must be another file of the "
                             f"same arrays on the same grid {self.grid.shape}")
        given = ([signal, weight] + ([intensity] if self.intensity else [])
                 + ([variance] if self.variance else []))
        self._check_variance(variance, self.chunks, f"chunk at {corner}")
        if any(a is None or a.shape != self.chunks or a.dtype != np.float32
               or not a.flags.c_contiguous for a in given) \
                or any(c % n for c, n in zip(corner, self.chunks)):
            names = "signal, weight" + (", intensity" if self.intensity else "")
            raise ValueError(f"chunk at {corner}: expected {names} as float32 C-order arrays "
                             f"of the chunks' shape {self.chunks}, at a chunk's corner of the "
                             f"grid {self.grid.shape}")
        inten = intensity if self.intensity else signal  # (not looked at without intensity)
        stored = _kernels().chunk_stored(signal.reshape(-1).view(np.uint32),
                                         weight.reshape(-1).view(np.uint32),
                                         inten.reshape(-1).view(np.uint32), self.intensity)
        arrays = [("signal_sum", signal, 1), (WEIGHT_SUM, weight, 2)]
        if self.intensity:
            arrays.append(("data", intensity, 4))
        if self.variance:
            if variance.reshape(-1).view(np.uint32).any():
                stored |= 8
            arrays.append((self._variance_name, variance, 8))
            if self.intensity and stored & 4 and not self.per_intensity:
                arrays.append(("data_errors", errors_of(variance, weight), 4))
        for name, chunk, bit in arrays:
            if stored & bit:
                self._chunk_writer.store(self._data[name], corner, chunk,
                                         twin._data[name] if twin is not None else None)
        if stored & 4:  # (else all NaN, as kept planes start)
            for w in (self, twin):
                if w is not None and w.keep is not None:
                    w.keep.take(l0, k0, h0, intensity)
        if counts is None:
            counts = _kernels().chunk_counts(signal.reshape(-1), weight.reshape(-1))
        if tally:
            for w in (self,) if twin is None else (self, twin):
                w.tally(counts)
        return counts

    def tally(self, counts: tuple) -> None:
        """Add (measured voxels, weight sum, signal sum) of stored data to the totals."""
        self.measured += int(counts[0])
        self.weight_sum += float(counts[1])
        self.signal_sum += float(counts[2])

    def mark_written(self, l0: int, l1: int) -> None:
        """Planes [l0, l1) are complete: every chunk of theirs holding a value other than the
        fill was given to write_chunk."""
        self._written[l0:l1] = True

    def _store_chunk_rows(self, l0: int, n: int, arrays) -> None:
        """Planes [l0, l0 + n) of each (name, values, fill) through the chunk writer, one row
        of L chunks at a time: a row the slab covers whole is stored at once, the planes of a
        row it covers in part wait in a buffer until the row is complete (slabs not aligned
        with the chunks: symmetrize's mirror slabs)."""
        cl = self._chunk_writer.chunks[0]
        nl = self.grid.l.n
        lo = l0
        while lo < l0 + n:
            r0 = lo - lo % cl
            r1 = min(r0 + cl, nl)
            hi = min(r1, l0 + n)
            if (lo, hi) == (r0, r1):
                rows = {name: values[lo - l0:hi - l0] for name, values, _ in arrays}
            else:
                row = self._partial_rows.get(r0)
                if row is None:
                    row = self._partial_rows[r0] = self._row_buffers(r1 - r0, arrays)
                for name, values, _ in arrays:
                    row["planes"][name][lo - r0:hi - r0] = values[lo - l0:hi - l0]
                row["filled"][lo - r0:hi - r0] = True
                rows = row["planes"] if row["filled"].all() else None
            if rows is not None:
                for name, _, fill in arrays:
                    self._chunk_writer.write(self._data[name], r0, rows[name], fill)
                if (lo, hi) != (r0, r1):
                    self._free_rows.append(self._partial_rows.pop(r0))
            lo = hi

    def _row_buffers(self, planes: int, arrays) -> dict:
        """Buffers of one row of L chunks (planes of every array) and which planes arrived;
        reused once a row is stored (fresh memory costs its page faults)."""
        for i, row in enumerate(self._free_rows):
            if len(row["filled"]) == planes:
                row = self._free_rows.pop(i)
                row["filled"][:] = False
                return row
        shape = (planes,) + self.grid.shape[1:]
        return {"planes": {name: np.empty(shape, np.float32) for name, _, _ in arrays},
                "filled": np.zeros(planes, bool)}

    def _chunk_cache(self) -> dict:
        """h5py.File's chunk cache settings (per array) that hold the chunks of cache_planes
        L planes and one more row of chunks: slabs written out of step with the L chunks then
        complete their chunks in the cache, and each chunk is compressed and written once.
        HDF5's default (1 MB) otherwise (slabs written in order, aligned with the chunks)."""
        if self.cache_planes <= 0:
            return {}
        c = _chunks(self.grid.shape)
        rows = -(-self.cache_planes // c[0]) + 1
        per_row = -(-self.grid.k.n // c[1]) * -(-self.grid.h.n // c[2])
        chunks = rows * per_row
        return {"rdcc_nbytes": chunks * 4 * int(np.prod(c)), "rdcc_nslots": 10 * chunks + 1,
                "rdcc_w0": 1.0}

    def _buffer(self, name: str, shape) -> np.ndarray:
        """A float32 array of `shape` for this writer's own use, kept from slab to slab (the
        page faults of a fresh one cost as much as filling it)."""
        n = int(np.prod(shape))
        buf = self._buffers.get(name)
        if buf is None or buf.size < n:
            buf = self._buffers[name] = np.empty(n, np.float32)
        return buf[:n].reshape(shape)

    def write_half_set(self, grid: Grid, signal: np.ndarray, weight: np.ndarray,
                       how: str) -> None:
        """The half set A of this volume (for CC1/2: hklflow.algorithms.statistics.shells.with_half_sets) on
        its own grid: /entry/half_set_a (HALF_SET)."""
        write_half_set(self._f["entry"], grid, signal, weight, how)

    def _close(self):
        self._data = {}
        self._buffers.clear()
        self._partial_rows.clear()
        self._free_rows.clear()
        if self._f is not None:
            try:
                self._f.close()
            except Exception:  # pragma: no cover - closing a broken file
                pass
            self._f = None

    def __exit__(self, exc_type, exc, tb):
        try:
            if exc_type is None:
                missing = np.flatnonzero(~self._written)
                if len(missing):
                    raise ValueError(f"{self.path}: L planes {missing[0]}..{missing[-1]} "
                                     f"({len(missing)}) were never written")
                _write_notes(self._f["entry"], self.notes)
                if self.keep is not None:
                    self.keep.sample, self.keep.complete = dict(self.sample), True
        except BaseException as err:
            self._close()
            self._atomic.__exit__(type(err), err, err.__traceback__)
            raise
        self._close()
        self._atomic.__exit__(exc_type, exc, tb)  # renames on success, removes on error
        return False
