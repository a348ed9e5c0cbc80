"""The (H, K, L) grid of a sample (rule define_grid): one grid for every temperature and
entry of the sample, so that their volumes add and compare voxel by voxel.

Axes given in reduction.transform.grid are kept; the others are derived from the sample's
cell (config) and the detector: limits from the largest Q any of the sample's scans reaches,
steps 1/m no larger than one pixel in Q, coarsened to stay within max_voxels (grid.py).
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from .. import steplog


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hklflow define_grid", description=__doc__.splitlines()[0])
    p.add_argument("--config", action="append", required=True, help="experiment config file(s)")
    p.add_argument("--sample", required=True, help="sample name (config)")
    p.add_argument("--poni", nargs="+", required=True, type=Path,
                   help="calibrated geometries (results/calibration/NAME/geometry.poni) of the sample's scans")
    p.add_argument("--out", required=True, type=Path, help="grid.json to write")
    return p


def sample_q_range(exp, sample: str, poni_files) -> tuple[float, float]:
    """Largest |Q| any scan of the sample reaches and the smallest Q size of one pixel
    (pixel / (distance x wavelength)), both in 1/Angstrom without 2 pi."""
    from ..config import scan_detector_geometry
    from ..geometry import DetectorGeometry

    by_name = {Path(p).parent.name: Path(p) for p in poni_files}
    q_max, q_pixel = 0.0, math.inf
    for scan in exp.scans_of(sample):
        if scan.calibration not in by_name:
            raise ValueError(f"scan {scan.id} uses calibration {scan.calibration!r}, whose "
                             f"geometry.poni is not among --poni {[str(p) for p in poni_files]}")
        cal = DetectorGeometry.from_poni_file(by_name[scan.calibration], exp.instrument.detector)
        g = scan_detector_geometry(cal, scan)
        q_max = max(q_max, 2.0 * math.sin(g.max_two_theta() / 2.0) / g.wavelength)
        q_pixel = min(q_pixel, min(g.pixel_size) / (g.dist * g.wavelength))
    return q_max, q_pixel


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    log = steplog.setup("define_grid")
    from .. import provenance
    from ..config import ConfigError, load_experiment
    from ..grid import default_grid, save_grid

    try:
        exp = load_experiment(args.config)
        if args.sample not in exp.samples:
            raise ConfigError(f"sample {args.sample!r} is not in the config (has {sorted(exp.samples)})")
        spec = exp.samples[args.sample]
        cfg = exp.reduction["transform"]
        cell = spec.crystal.cell
        q_max, q_pixel = sample_q_range(exp, args.sample, args.poni)
        grid, how = default_grid(cell, q_max, q_pixel, int(cfg["max_voxels"]), cfg["grid"])
        prov = provenance.provenance("hklflow define_grid", parameters=dict(cfg),
                                     inputs=[*args.poni, *args.config])
        save_grid(args.out, grid, {"sample": args.sample, "cell": list(cell.parameters),
                                   "q_max": q_max, "q_pixel": q_pixel, "how": how,
                                   "provenance": prov})
    except (ConfigError, ValueError, OSError) as exc:
        return steplog.fail(log, exc, (args.out,))
    log.info("%s: %s", args.sample, grid.describe())
    for axis, text in how.items():
        log.info("  %s: %s", axis, text)
    log.info("memory of a transform job: %.2f GB for signal and weight (float32)", grid.size * 8 / 1e9)
    return 0


if __name__ == "__main__":
    sys.exit(main())
