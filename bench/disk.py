"""The disk foreseen before a run (hklflow.planning.disk) against what the run wrote.

    python bench/disk.py EXPERIMENT_DIR [--json FILE]

Run after the workflow (e.g. `hklflow demo`, `hklflow run`).  Prints, per group of results
(volumes, PDFs, model inputs, other files), the estimate the plan makes from the config and
scans table alone (as before the first job: nothing counted as there) against the bytes of
the same files in results/, and the whole of results/ (what `du` counts, the files the
estimate does not name included: archived calibration versions, NXRefine's scan
directories); the ratio is estimate over real.
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from hklflow.planning import disk
from hklflow.planning.config import load_experiment


def measure(experiment: Path) -> dict:
    cwd = os.getcwd()
    os.chdir(experiment)  # (the experiment's paths are relative to it)
    try:
        exp = load_experiment("config/config.yaml")
        foreseen = disk.foresee(exp, free=0.0, size_of=lambda path: None)
        real = {g: 0.0 for g in disk.GROUPS}
        for f in foreseen.files:
            size = disk.present_size(f.path)
            real[f.group] += size or 0.0
        everything = sum(p.stat().st_blocks * 512 for p in Path("results").rglob("*")
                         if p.is_file() and not p.is_symlink())
    finally:
        os.chdir(cwd)
    rows = {g: {"estimate": foreseen.by_group[g], "real": real[g]} for g in disk.GROUPS}
    rows["named files"] = {"estimate": foreseen.total, "real": sum(real.values())}
    rows["results/ (du)"] = {"estimate": foreseen.total, "real": float(everything)}
    return {"experiment": str(experiment), "rows": rows,
            "temporary_estimate": foreseen.temporary, "line": foreseen.line()}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("experiment", type=Path)
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    report = measure(args.experiment.resolve())
    print(f"{'':16s} {'estimate MB':>12s} {'real MB':>10s} {'ratio':>6s}")
    for name, row in report["rows"].items():
        ratio = row["estimate"] / row["real"] if row["real"] else float("nan")
        print(f"{name:16s} {row['estimate'] / 1e6:12.1f} {row['real'] / 1e6:10.1f} {ratio:6.2f}")
    print(f"the plan's line: {report['line']}")
    print(json.dumps(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
