"""hklflow.files.mask: an entry's masks, written and read back (the transform's record,
the pixel mask alone, the details; a scan's ScanMask painting the same after the round
trip), and its name."""
from __future__ import annotations

import subprocess
import sys
import types

import h5py
import numpy as np
import pytest

from hklflow.algorithms.masks import masking
from hklflow.algorithms.masks.masking import FOUND, HOT, ScanMask
from hklflow.base.errors import FileFormatError
from hklflow.files import outputs
from hklflow.files.mask import (DEAD, GAP, REGION_COLUMNS, USER, read_mask_details, read_mask_file,
                                read_pixel_mask, write_mask_file)

from experiment_helpers import painted, random_regions


def _result(nregions=3):
    rng = np.random.default_rng(4)
    reasons = np.zeros((6, 8), np.int32)
    reasons[0, :] = GAP
    reasons[2, 3] = DEAD | USER
    table = {c: rng.random(nregions) * 5 for c in REGION_COLUMNS}
    table.update(h=rng.random(nregions), k=rng.random(nregions), l=rng.random(nregions),
                 source=np.ones(nregions, np.int8), peak_index=np.arange(nregions),
                 zeta=np.full(nregions, np.nan))
    regions = np.column_stack([table[c] for c in REGION_COLUMNS])
    mask = types.SimpleNamespace(regions=regions, hkl_radius=0.1, nframes=9, shape=(6, 8))
    return types.SimpleNamespace(mask=mask, reasons=reasons, table=table,
                                 masked_per_frame=np.arange(9), statistics={"gap": 8})


def test_mask_file_round_trip(tmp_path):
    result = _result()
    path = tmp_path / outputs.fill(outputs.MASK, sample="tiny", temperature="300K", entry="f1")
    assert str(path.relative_to(tmp_path)) == "results/tiny/300K/f1/mask.nxs"
    write_mask_file(path, result, entry="f1", title="tiny/300K/f1",
                    parameters={"hkl_radius": 0.1, "dilate": [1, 2]},
                    provenance={"program": "test"}, sources={"scan_file": "scan.nxs"})
    rec = read_mask_file(path)
    assert np.array_equal(rec.pixels, result.reasons != 0)
    assert np.array_equal(rec.regions, result.mask.regions)
    assert (rec.hkl_radius, rec.nframes) == (0.1, 9)
    assert np.array_equal(read_pixel_mask(path, "f1"), result.reasons != 0)
    with pytest.raises(FileFormatError, match="not the mask file of entry f2"):
        read_pixel_mask(path, "f2")
    details = read_mask_details(path)
    assert np.array_equal(details["pixel_mask"], result.reasons)
    assert details["statistics"]["gap"] == 8
    assert list(details["parameters"]["dilate"]) == [1, 2]


def test_a_mask_without_regions_reads_as_none(tmp_path):
    write_mask_file(tmp_path / "m.nxs", _result(0), entry="f1", title="t", parameters={},
                    provenance={})
    assert read_mask_file(tmp_path / "m.nxs").regions.shape == (0, 6)


def test_reading_a_mask_loads_no_numba(tmp_path):
    write_mask_file(tmp_path / "m.nxs", _result(), entry="f1", title="t", parameters={},
                    provenance={})
    code = ("import sys\nfrom hklflow.files.mask import read_mask_file, read_pixel_mask\n"
            f"read_mask_file({str(tmp_path / 'm.nxs')!r})\n"
            f"read_pixel_mask({str(tmp_path / 'm.nxs')!r}, 'f1')\n"
            "assert 'numba' not in sys.modules\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_mask_file_round_trip_of_a_scan_mask(tmp_path):
    """A ScanMask (hklflow.algorithms.masks.masking) with regions and without: read back, it
    paints the same pixel-frames; the file's groups as NeXus has them, no temporary file
    left."""
    rng = np.random.default_rng(2)
    shape, nframes = (20, 30), 15
    regions = random_regions(rng, 25, shape, nframes)
    reasons = np.zeros(shape, np.int32)
    reasons[3, :] = GAP
    reasons[5, 7] = HOT
    reasons[6, 8] = DEAD | USER
    table = {k: regions[:, i] for i, k in enumerate(masking.REGION_COLUMNS)}
    table.update(h=np.full(25, np.nan), k=np.zeros(25), l=np.ones(25),
                 source=np.full(25, FOUND, np.int8), peak_index=np.arange(25), zeta=np.full(25, np.nan))
    for regs, tab in ((regions, table), (np.zeros((0, 6)), {k: v[:0] for k, v in table.items()})):
        mask = ScanMask(reasons != 0, regs, 0.15, nframes)
        res = masking.MaskResult(mask, reasons, tab, {"pixels_gap": 30, "bragg_fraction": 0.01})
        write_mask_file(tmp_path / "m.nxs", res, entry="f9", title="s/1K/f9",
                        parameters={"radius_px": 3.0, "mask_file": None}, provenance={"program": "test"})
        back = read_mask_file(tmp_path / "m.nxs")
        np.testing.assert_array_equal(back.pixels, reasons != 0)
        np.testing.assert_array_equal(back.regions, regs)
        assert back.hkl_radius == 0.15 and back.nframes == nframes
        np.testing.assert_array_equal(painted(ScanMask.of(back)), painted(mask))
        det = read_mask_details(tmp_path / "m.nxs")
        np.testing.assert_array_equal(det["pixel_mask"], reasons)
        assert len(det["regions"]["source"]) == len(regs)
    assert not list(tmp_path.glob(".*tmp"))  # the temporary file is gone
    with h5py.File(tmp_path / "m.nxs", "r") as f:
        assert f["f9/bragg_regions"].attrs["NX_class"] == "NXreflections"
        assert f["f9/instrument/detector/pixel_mask"].compression == "gzip"
