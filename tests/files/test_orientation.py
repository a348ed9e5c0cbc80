"""hklflow.files.orientation: an orientation file, written and read back, and its names."""
from __future__ import annotations

import types

import numpy as np
import pytest

from hklflow.base.errors import FileFormatError
from hklflow.files import outputs
from hklflow.files.orientation import STATISTICS, read_orientation_file, write_orientation_file
from hklflow.model.crystal import Crystal, UnitCell
from hklflow.model.geometry import DetectorGeometry


def _result():
    crystal = Crystal("I 41/a m d", UnitCell(5.17, 5.17, 7.5, 90, 90, 90))
    U = np.eye(3)
    model = types.SimpleNamespace(
        crystal=crystal, U=U, UB=U @ np.asarray(crystal.cell.B),
        detector=DetectorGeometry("Pilatus300k", 0.2, 0.04, 0.03, wavelength=0.41),
        offset_corrections={"f1": {"omega": 0.01}, "f2": {"omega": -0.02}})
    entries = [types.SimpleNamespace(name=n, x=np.array([1.0, 2.0]), y=np.array([3.0, 4.0]),
                                     z=np.array([5.0, 6.0])) for n in ("f1", "f2")]
    return types.SimpleNamespace(
        model=model, cell_esd=(0.001, 0.001, 0.002, 0, 0, 0), parameters={"refine": ["cell"]},
        notes=["a note"], entries=entries, hkl=[np.ones((2, 3)), np.zeros((2, 3))],
        used=[np.array([True, False]), np.array([True, True])],
        residuals=[np.full((2, 3), 0.1), np.full((2, 3), 0.2)],
        **{k: float(i + 1) for i, k in enumerate(STATISTICS)})


@pytest.mark.parametrize("name", ["PARENT_ORIENTATION", "ORIENTATION"])
def test_orientation_file_round_trip(tmp_path, name):
    result = _result()
    path = tmp_path / outputs.fill(getattr(outputs, name), sample="tiny", temperature="300K")
    assert path.parent == tmp_path / "results/tiny/300K"
    write_orientation_file(path, sample="tiny", temperature_label="300K", parent="tiny/300K",
                           result=result, indexing={"found": 2}, provenance={"program": "t"},
                           unusable_entries={"f2": "no peaks"}, landed=[{"scan": "f1"}])
    rec = read_orientation_file(path)
    m = result.model
    assert (rec.sample, rec.temperature_label, rec.parent) == ("tiny", "300K", "tiny/300K")
    assert rec.space_group == m.crystal.hm and rec.cell == pytest.approx(m.crystal.cell.parameters)
    assert np.allclose(rec.U, m.U) and np.allclose(rec.UB, m.UB)
    assert rec.detector == m.detector and rec.offset_corrections == m.offset_corrections
    assert {k: rec.statistics[k] for k in STATISTICS} == {k: getattr(result, k) for k in STATISTICS}
    assert rec.statistics["parameters"] == {"refine": ["cell"]}
    assert rec.unusable_entries == {"f2": "no peaks"} and rec.provisional
    assert rec.crystal().hm == m.crystal.hm


def test_a_file_without_an_orientation_is_refused(tmp_path):
    from hklflow.files.h5 import open_h5

    with open_h5(tmp_path / "x.nxs", "w") as f:
        f.create_group("entry")
    with pytest.raises(FileFormatError, match="not an orientation file"):
        read_orientation_file(tmp_path / "x.nxs")
