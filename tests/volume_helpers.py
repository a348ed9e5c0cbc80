"""Shared helpers of the volume tests (sum_chunks, merge_entries, symmetrize,
temperature_series, files.volume, algorithms.merge): random volumes on small grids, a
transform's part as transform_frames writes it, a minimal experiment."""
from __future__ import annotations

import math

import numpy as np

from hklflow.algorithms.statistics.shells import VolumeStatistics, array_reader, volume_statistics
from hklflow.files.volume import Volume, VolumeWriter, write_volume
from hklflow.model.crystal import UnitCell
from hklflow.model.grid import Axis, Grid

HEX = (4.5, 4.5, 7.0, 90.0, 90.0, 120.0)
TETRA = (3.8, 3.8, 13.4, 90.0, 90.0, 90.0)
# the Gaussian peaks of lattice_volume: width (r.l.u.) and amplitude
SIGMA = 0.15
AMP = 50.0
# symbol (same for gemmi and cctbx) -> a compatible cell
GROUPS = {
    "P 6/m m m": HEX,
    "P 63/m m c": HEX,
    "P 6/m": HEX,
    "R -3 m:H": HEX,
    "P -3 1 m": HEX,
    "P -3": HEX,
    "R -3 m:R": (6.0, 6.0, 6.0, 75.0, 75.0, 75.0),
    "I 4/m m m": TETRA,
    "C 1 2/c 1": (7.1, 9.3, 11.2, 90.0, 103.4, 90.0),
    "P m m m": (5.3, 7.9, 11.4, 90.0, 90.0, 90.0),
    "F m -3 m": (5.0, 5.0, 5.0, 90.0, 90.0, 90.0),
}


def sample(symbol="I 4/m m m", cell=TETRA, name="xtal"):
    return {"name": name, "space_group": symbol, "unit_cell": np.array(cell, float)}


def random_volume(grid, seed, kind="transform", title="t", sample_=None, gap=0.3):
    rng = np.random.default_rng(seed)
    weight = rng.uniform(0.5, 4.0, grid.shape).astype(np.float32)
    weight[rng.random(grid.shape) < gap] = 0.0
    signal = (rng.uniform(0.5, 1000.0, grid.shape) * weight).astype(np.float32)
    return Volume(grid, signal, weight, kind, title, sample_ if sample_ is not None else sample())


def small_grid(n=(13, 11, 21), step=(0.25, 0.25, 0.5)):
    """h, k, l axes symmetric about 0 (n odd), array shape (nl, nk, nh)."""
    return Grid(*(Axis(-(m - 1) / 2 * s, s, m) for m, s in zip(n, step)))


def complete_part(folder, grid, name="part.nxs", intensity=True):
    """A transform part as transform_frames writes it: its sums in its notes."""
    v = random_volume(grid, 21, title="f1 frames 0-60")
    with VolumeWriter(folder / name, grid, v.kind, v.title, v.sample, {"scan": "f1"},
                      {"program": "transform"}, intensity=intensity) as w:
        w.write(0, v.signal, v.weight)
        w.notes.update(measured_fraction=w.measured / grid.size, weight_sum=w.weight_sum,
                       signal_sum=w.signal_sum)
    return folder / name, v


def write_inputs(folder, grid, n, **kw):
    paths = []
    for i in range(n):
        p = folder / f"in{i}.nxs"
        write_volume(p, random_volume(grid, 10 + i, title=f"part{i}", **kw), {"program": "test"})
        paths.append(p)
    return paths


def make_experiment(root):
    """A minimal experiment directory (config + scans table): a tetragonal sample 'tetra'
    and a hexagonal one 'hexa', each at 100, 200 and 300 K."""
    cfg = root / "config"
    cfg.mkdir()
    rows = ["sample\ttemperature\tentry\tdata\tnframes\tphi_start\tphi_step"]
    for s in ("tetra", "hexa"):
        for t in (100, 200, 300):
            rows.append(f"{s}\t{t}\tf1\traw/{s}_{t}.h5\t10\t0\t0.5")
    (cfg / "scans.tsv").write_text("\n".join(rows) + "\n")
    (cfg / "config.yaml").write_text(f"""
experiment: volumes-test
scans_table: config/scans.tsv
instrument:
  detector: PilatusCdTe300k
  wavelength: 0.41328
  goniometer: {{scan_axis: [0.0, 1.0, 0.0], scan_sense: 1}}
calibrations:
  ceo2:
    image: raw/CeO2.h5
    calibrant: CeO2
    start: {{dist: 0.12, poni1: 0.05, poni2: 0.04, rot1: 0.0, rot2: 0.0, rot3: 0.0}}
samples:
  tetra: {{space_group: I 4/m m m, cell: {list(TETRA)}, parent: {{temperature: 300}}}}
  hexa: {{space_group: P 6/m m m, cell: {list(HEX)}, parent: {{temperature: 300}}}}
reduction:
  transform:
    slices: [{{l: 0}}, {{k: 0}}, {{h: 0.5}}, {{l: 99}}]
  merge:
    series_slice: {{l: 0.5}}
""")
    return root


def run(step, args):
    """A step's main() in this process (the current directory is the experiment)."""
    import importlib

    return importlib.import_module(f"hklflow.steps.{step}").main([str(a) for a in args])


def lattice_volume(grid, title="tetra/100K", missing_beyond=None):
    """Gaussians of amplitude AMP and width SIGMA at every integer (h, k, l) plus 3 of
    background; unmeasured (weight 0) beyond |Q| = missing_beyond (1/A, 2 pi convention)."""
    h, k, ll = np.meshgrid(grid.h.values, grid.k.values, grid.l.values, indexing="xy")
    h, k, ll = (np.moveaxis(a, 2, 0) for a in (h, k, ll))  # [l, k, h]
    d2 = (h - np.rint(h)) ** 2 + (k - np.rint(k)) ** 2 + (ll - np.rint(ll)) ** 2
    inten = (3.0 + AMP * np.exp(-0.5 * d2 / SIGMA ** 2)).astype(np.float32)
    weight = np.ones(grid.shape, np.float32)
    if missing_beyond is not None:
        g = (2 * math.pi) ** 2 * UnitCell(*TETRA).reciprocal_metric
        q2 = g[0, 0] * h * h + g[1, 1] * k * k + g[2, 2] * ll * ll
        weight[q2 > missing_beyond ** 2] = 0.0
    return Volume(grid, inten * weight, weight, "transform", title,
                  sample("I 4/m m m", TETRA, "tetra") | {"temperature_label": title.split("/")[1]})


def statistics_of_arrays(grid: Grid, crystal, signal, weight, variance=None, half_a=None,
                         half_b=None, **kw) -> VolumeStatistics:
    """volume_statistics of arrays held in memory; half_a, half_b: (signal, weight) of the
    two halves, or None."""
    halves = None
    if half_a is not None or half_b is not None:
        if half_a is None or half_b is None:
            raise ValueError("give both halves (half_b = total - half_a) or neither")
        halves = (array_reader(*half_a[:2]), array_reader(*half_b[:2]))
    return volume_statistics(grid, crystal, array_reader(signal, weight, variance), halves,
                             **kw)
