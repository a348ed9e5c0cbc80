"""PDF files (files.pdf): the PDF and the 3D-DeltaPDF's volumes written as raw chunks; a
plane read alone (what the temperature series reads) is the plane of the whole."""
from __future__ import annotations

import h5py
import numpy as np
import pytest

from hklflow.files import pdf as pdf_files
from hklflow.files.pdf import PDF, read_pdf, read_pdf_plane, write_pdf
from hklflow.model.crystal import UnitCell
from hklflow.model.grid import Axis, Grid


def _stored(dset) -> dict:
    return {dset.id.get_chunk_info(i).chunk_offset: dset.id.read_direct_chunk(
        dset.id.get_chunk_info(i).chunk_offset)[1] for i in range(dset.id.get_num_chunks())}


def test_pdf_volumes_are_stored_as_hdf5_would_without_the_chunks_of_their_fill(
        tmp_path, monkeypatch):
    """write_pdf stores each chunk of the PDF, filled and punched volumes as HDF5's
    bitshuffle filter does, byte for byte, but not the chunks holding their fill value
    alone (0 for the PDF; NaN, nothing measured, for the volumes); every value reads back
    the same as through HDF5's filter (NaN bits too), edge chunks and a last slab of fewer
    than 8 planes included."""
    grid = Grid(Axis(-1, 0.1, 130), Axis(-1, 0.1, 70), Axis(-1, 0.1, 11))  # [l, k, h] 11x70x130
    cell = UnitCell(3.8, 3.8, 13.2, 90, 90, 90)
    rng = np.random.default_rng(7)
    filled = rng.random(grid.shape).astype(np.float32)
    filled[:, :64, :64] = np.nan  # two chunks with nothing measured
    filled[8:, 64:, 64:128] = np.nan  # and an edge chunk
    punched_at = np.sort(rng.choice(filled.size, 500, replace=False))
    values = rng.normal(size=(11, 70, 130)).astype(np.float32)
    values[:8, :64, 64:128] = 0.0  # a chunk of the PDF's fill value
    values[0, 0, 0] = -0.0  # not the fill bit for bit: its chunk is stored
    pdf = PDF(values, np.arange(130.0), np.arange(70.0), np.arange(11.0), cell)
    from hklflow.codec import compiled

    write_pdf(tmp_path / "fast.nxs", pdf, {}, {"program": "test"}, grid=grid, filled=filled,
              punched_at=punched_at, positions=np.zeros((1, 3)), outcome=[0],
              outcome_names=["filled"])  # LZ4's acceleration WRITE_ACCELERATION
    monkeypatch.setattr(compiled, "WRITE_ACCELERATION", 1)  # the filter's bytes
    write_pdf(tmp_path / "raw.nxs", pdf, {}, {"program": "test"}, grid=grid, filled=filled,
              punched_at=punched_at, positions=np.zeros((1, 3)), outcome=[0],
              outcome_names=["filled"])

    class NoLibrary(pdf_files._ChunkWriter):
        @property
        def available(self):
            return False
    monkeypatch.setattr(pdf_files, "_ChunkWriter", NoLibrary)
    write_pdf(tmp_path / "filter.nxs", pdf, {}, {"program": "test"}, grid=grid, filled=filled,
              punched_at=punched_at, positions=np.zeros((1, 3)), outcome=[0],
              outcome_names=["filled"])
    with h5py.File(tmp_path / "raw.nxs") as x, h5py.File(tmp_path / "filter.nxs") as y, \
            h5py.File(tmp_path / "fast.nxs") as z:
        for name, left_out in (("pdf/pdf", 1), ("filled_data/data", 3), ("punched_data/data", 3)):
            a, b = x["entry"][name], y["entry"][name]
            assert np.array_equal(a[()].view(np.uint32), b[()].view(np.uint32))
            assert np.array_equal(z["entry"][name][()].view(np.uint32), b[()].view(np.uint32))
            assert sorted(_stored(z["entry"][name])) == sorted(_stored(a))
            stored, every = _stored(a), _stored(b)
            assert len(every) == 2 * 2 * 3 and len(stored) == len(every) - left_out
            assert all(stored[offset] == every[offset] for offset in stored)
        got = x["entry/punched_data/data"][()].reshape(-1)
        assert np.isnan(got[punched_at]).all()
        assert np.array_equal(x["entry/pdf/pdf"][()][0, 0, 0:1].view(np.uint32),
                              np.float32([-0.0]).view(np.uint32))


def test_filled_and_punched_volumes_written_in_one_pass_equal_two(tmp_path):
    """write_volumes compresses a chunk of the filled volume without a punched voxel once
    and stores it in both volumes; the files hold what two separate writes store, chunk for
    chunk and byte for byte: chunks with holes, without, one punched whole (not stored in
    the punched volume), one with nothing measured (in neither), edge chunks."""
    from hklflow.files.pdf import PDFWriter, _write_by_planes

    grid = Grid(Axis(-1, 0.1, 130), Axis(-1, 0.1, 70), Axis(-1, 0.1, 19))  # [l, k, h] 19x70x130
    cell = UnitCell(3.8, 3.8, 13.2, 90, 90, 90)
    rng = np.random.default_rng(11)
    filled = rng.random(grid.shape).astype(np.float32)
    filled[8:16, :64, :64] = np.nan  # a chunk with nothing measured
    holes = np.zeros(grid.shape, bool)
    holes[:8, :64, :64] = True  # a chunk punched whole
    holes[3, 66, 129] = holes[17, 5, 70] = True  # in edge chunks
    holes[10, 10:12, 70:90] = True  # inside one chunk
    punched_at = np.flatnonzero(holes)
    with PDFWriter(tmp_path / "one.nxs") as w:
        w.write_volumes(grid, cell, filled, punched_at)
    with PDFWriter(tmp_path / "two.nxs") as w:
        w.write_volumes(grid, cell, np.full_like(filled, np.nan), punched_at[:0])
        for name, nan_at in (("filled_data", None), ("punched_data", punched_at)):
            _write_by_planes(w.entry[f"{name}/data"], filled, nan_at)
    expect = filled.copy()
    expect.reshape(-1)[punched_at] = np.nan
    with h5py.File(tmp_path / "one.nxs") as x, h5py.File(tmp_path / "two.nxs") as y:
        for name, want in (("filled_data", filled), ("punched_data", expect)):
            a, b = x["entry"][f"{name}/data"], y["entry"][f"{name}/data"]
            assert np.array_equal(a[()], want, equal_nan=True)
            assert _stored(a) == _stored(b)
        assert len(_stored(x["entry/filled_data/data"])) == 3 * 2 * 3 - 1
        assert len(_stored(x["entry/punched_data/data"])) == 3 * 2 * 3 - 2


def test_pdf_file_round_trip_and_names(tmp_path):
    """A total PDF and a 3D-DeltaPDF (with its filled volume), written where the rules name
    them, read back: values, axes, cell, notes, kind; one plane read alone."""
    from hklflow.files import outputs
    from hklflow.files.pdf import read_pdf, read_pdf_notes, read_pdf_plane

    at = dict(sample="tiny", temperature="300K")
    total = tmp_path / outputs.fill(outputs.TOTAL_PDF, **at)
    delta = tmp_path / outputs.fill(outputs.DELTA_PDF, pdf="pdf", **at)
    assert (total.name, delta.name) == ("total_pdf.nxs", "pdf.nxs")
    cell = UnitCell(3.8, 3.8, 13.2, 90, 90, 90)
    rng = np.random.default_rng(3)
    x, y, z = (np.linspace(-2, 2, n) for n in (9, 7, 5))
    values = rng.standard_normal((5, 7, 9)).astype(np.float32)
    grid = Grid(Axis(-1, 0.5, 9), Axis(-1, 0.5, 7), Axis(-1, 0.5, 5))
    write_pdf(total, PDF(values, x, y, z, cell, "total_pdf", "t", {"q_max": 5.0}), {"name": "s"},
              {"program": "t"})
    write_pdf(delta, PDF(values, x, y, z, cell, "pdf", "d", {"q_max": 4.0}), {"name": "s"},
              {"program": "t"}, grid=grid, filled=rng.random(grid.shape).astype(np.float32),
              punched_at=np.array([3, 4]))
    for path, kind, q_max in ((total, "total_pdf", 5.0), (delta, "pdf", 4.0)):
        back = read_pdf(path)
        assert back.kind == kind and np.array_equal(back.values, values)
        assert all(np.array_equal(a, b) for a, b in ((back.x, x), (back.y, y), (back.z, z)))
        assert back.cell.parameters == pytest.approx(cell.parameters)
        assert read_pdf_notes(path)["q_max"] == q_max
        _, (plane, *_) = read_pdf_plane(path, "z", z[2])
        assert np.array_equal(plane, values[2])


def test_pdf_plane_read_alone_is_the_plane_of_the_whole(tmp_path):
    """read_pdf_plane (what the series reads) gives PDF.plane of the whole file, every axis;
    a plane outside the PDF is refused the same way."""
    rng = np.random.default_rng(3)
    values = rng.normal(size=(9, 12, 14)).astype(np.float32)
    x, y, z = np.linspace(-3, 3, 14), np.linspace(-2, 2, 12), np.linspace(-4, 4, 9)
    pdf = PDF(values, x, y, z, UnitCell(3.8, 3.8, 13.2, 90, 90, 90))
    write_pdf(tmp_path / "p.nxs", pdf, {"name": "tetra"}, {"program": "test"})
    whole = read_pdf(tmp_path / "p.nxs")
    for axis, value in (("x", 0.9), ("y", -2.0), ("z", 4.0), ("z", -1.1)):
        cell, plane = read_pdf_plane(tmp_path / "p.nxs", axis, value)
        expect = whole.plane(axis, value)
        assert cell.parameters == whole.cell.parameters
        assert plane[3] == expect[3]
        for got, want in zip(plane[:3], expect[:3]):
            np.testing.assert_array_equal(got, want)
    with pytest.raises(ValueError, match="outside the PDF"):
        read_pdf_plane(tmp_path / "p.nxs", "z", 5.0)
