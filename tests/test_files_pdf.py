"""PDF files (files.pdf): the PDF and the 3D-DeltaPDF's volumes written as raw chunks."""
from __future__ import annotations

import h5py
import numpy as np

from hklflow.crystal import UnitCell
from hklflow.files import pdf as pdf_files
from hklflow.files.pdf import PDF, write_pdf
from hklflow.grid import Axis, Grid


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
    with h5py.File(tmp_path / "raw.nxs") as x, h5py.File(tmp_path / "filter.nxs") as y:
        for name, left_out in (("pdf/pdf", 1), ("filled_data/data", 3), ("punched_data/data", 3)):
            a, b = x["entry"][name], y["entry"][name]
            assert np.array_equal(a[()].view(np.uint32), b[()].view(np.uint32))
            stored, every = _stored(a), _stored(b)
            assert len(every) == 2 * 2 * 3 and len(stored) == len(every) - left_out
            assert all(stored[offset] == every[offset] for offset in stored)
        got = x["entry/punched_data/data"][()].reshape(-1)
        assert np.isnan(got[punched_at]).all()
        assert np.array_equal(x["entry/pdf/pdf"][()][0, 0, 0:1].view(np.uint32),
                              np.float32([-0.0]).view(np.uint32))
