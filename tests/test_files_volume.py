"""hklflow.files.volume: volume files written whole or slab by slab, atomically."""
from __future__ import annotations

import numpy as np
import pytest

from hklflow.files.volume import VolumeWriter, write_volume

from volume_helpers import random_volume, sample, small_grid


def test_volume_writer_same_file_as_write_volume(tmp_path):
    import h5py

    grid = small_grid()
    vol = random_volume(grid, 1, title="a/300K", sample_=sample())
    vol.notes = {"x": [1, 2]}
    write_volume(tmp_path / "a.nxs", vol, {"program": "p"})
    with VolumeWriter(tmp_path / "b.nxs", grid, vol.kind, vol.title, vol.sample, {"x": [1]},
                      {"program": "p"}) as w:
        for l0 in range(0, grid.l.n, 8):  # 21 planes: slabs of 8, 8, 5
            w.write(l0, vol.signal[l0:l0 + 8].astype(np.float64), vol.weight[l0:l0 + 8])
        w.notes["x"].append(2)

    def content(path):
        out = {}
        with h5py.File(path, "r") as f:
            def visit(name, obj):
                attrs = {k: (v.tolist() if hasattr(v, "tolist") else v) for k, v in obj.attrs.items()
                         if k != "file_name"}
                if isinstance(obj, h5py.Dataset):
                    if name.endswith(("provenance", "date")):
                        return
                    out[name] = (obj[()].tobytes() if obj.dtype.kind == "f" else obj[()],
                                 obj.dtype.str, obj.chunks, obj.compression, attrs)
                else:
                    out[name] = attrs
            f.visititems(visit)
        return out

    a, b = content(tmp_path / "a.nxs"), content(tmp_path / "b.nxs")
    assert a.keys() == b.keys()
    for k in a:
        assert a[k] == b[k], k
    assert list(tmp_path.glob(".*tmp")) == []


def test_volume_writer_leaves_nothing_on_error(tmp_path):
    grid = small_grid()
    with pytest.raises(ValueError, match="never written"):
        with VolumeWriter(tmp_path / "c.nxs", grid) as w:
            w.write(0, np.zeros((8,) + grid.shape[1:]), np.zeros((8,) + grid.shape[1:]))
    with pytest.raises(RuntimeError):
        with VolumeWriter(tmp_path / "c.nxs", grid):
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
