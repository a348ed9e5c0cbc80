"""The demo's accuracy figures against the transform's rotation sub-steps.

    hklflow demo --dir DEMO
    python bench/sub_steps_accuracy.py DEMO [--plans auto,1,auto_per_block,4,8]
                                            [--reference 16]

For each plan, sets `reduction.transform.subdivide` in DEMO/config/config.yaml, reduces
the demo again (`hklflow demo --dir DEMO`: Snakemake reruns the transform and what follows
it, nothing else) and runs bench/accuracy.py on it; prints, per plan, the figures of the
volumes that the sub-steps can move: the Bragg peaks' offsets from their nodes, the
satellites' contrast, the unmeasured fraction and the 3D-DeltaPDF's amplitude.  With
--reference PLAN (a plan of --plans, e.g. 16: the rotation sampled finely enough that the
figures no longer move) it also compares each plan's merged volumes (both kinds, every
temperature) voxel by voxel with that plan's: the relative RMS difference of the intensity
over the voxels both measure, and the voxels measured by one of the two only (per voxel
the reference measures).  The frames, their noise and everything before the transform are
the same for every plan, so these differences are the sampling's alone.  The config
file is put back as it was afterwards (the results are then those of the last plan: run
`hklflow demo --dir DEMO` once more for the configured one).  ~40 s per plan on 2 cores.
"""
from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import intensity_difference  # noqa: E402
from pipeline import set_subdivide  # noqa: E402

FIGURES = {  # label: pattern of accuracy.py's lines (sample/temperature first), printed
    "Bragg": r"volumes (\S+) Bragg: .*?within half a voxel ([0-9.]+) .*?RMS offset "
             r"([0-9.]+) voxels",
    "satellites": r"volumes (\S+) diffuse .*?contrast ([+-][0-9.]+ \+- [0-9.]+) "
                  r"\(.*?ratio ([0-9.]+)\)",  # (where the model has satellites: a ratio)
    "unmeasured": r"volumes (\S+) unmeasured .*?merged ([0-9.]+)",
    "DeltaPDF": r"pdf (\S+) DeltaPDF \S+: (\d+) lattice vectors, (\d+) with .*?"
                r"amplitude / analytic ([0-9.]+)",
}


def figures(text: str) -> list[str]:
    lines = []
    for label, pattern in FIGURES.items():
        for m in re.finditer(pattern, text):
            lines.append(f"{label} {m.group(1)}: " + ", ".join(m.groups()[1:]))
    return lines


MERGED_KINDS = ("transform", "masked_transform")


def keep_merged(demo: Path, into: Path) -> None:
    """Copies of the merged volumes of every sample and temperature (results/S/T/KIND.nxs)
    into `into`, under the same relative paths."""
    for kind in MERGED_KINDS:
        for f in (demo / "results").glob(f"*/*/{kind}.nxs"):
            dest = into / f.relative_to(demo / "results")
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(f, dest)


def against_reference(plan_dir: Path, ref_dir: Path) -> list[str]:
    """Per merged volume: the relative RMS difference of the intensity from the reference
    plan's over the voxels both measured, and the voxels measured by one of them only per
    voxel measured by the reference."""
    from hklflow.files.volume import read_intensity

    lines = []
    for ref in sorted(ref_dir.rglob("*.nxs")):
        rel = ref.relative_to(ref_dir)
        s = intensity_difference(read_intensity(plan_dir / rel)[1], read_intensity(ref)[1])
        lines.append(f"{rel.with_suffix('')}: intensity RMS difference "
                     f"{np.sqrt(s[0] / s[1]):.5f} of the reference's; measured by one only "
                     f"{s[2] / max(s[3], 1):.5f}")
    return lines


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("demo", type=Path, help="a demo experiment (hklflow demo --dir DEMO)")
    p.add_argument("--plans", default="auto,1,auto_per_block,4,8",
                   help="subdivide values, comma separated")
    p.add_argument("--reference", default=None,
                   help="a plan of --plans whose merged volumes the others are compared with")
    args = p.parse_args(argv)
    plans = args.plans.split(",")
    if args.reference is not None and args.reference not in plans:
        p.error(f"--reference {args.reference} is not one of --plans {args.plans}")
    config = args.demo / "config" / "config.yaml"
    original = config.read_text()
    kept = Path(tempfile.mkdtemp(prefix="sub_steps_", dir=args.demo))  # each plan's volumes
    results = {}
    try:
        for plan in plans:
            set_subdivide(args.demo, plan)
            run = subprocess.run([sys.executable, "-m", "hklflow", "demo", "--dir",
                                  str(args.demo)], capture_output=True, text=True)
            if run.returncode:
                raise SystemExit(f"hklflow demo with subdivide {plan} failed:\n"
                                 f"{(run.stdout + run.stderr)[-3000:]}")
            acc = subprocess.run([sys.executable, str(HERE / "accuracy.py"), str(args.demo)],
                                 capture_output=True, text=True, check=True)
            results[plan] = figures(acc.stdout)
            print(f"== subdivide {plan}", *results[plan], sep="\n  ", flush=True)
            if args.reference is not None:
                keep_merged(args.demo, kept / plan)
        if args.reference is not None:
            print(f"== merged volumes against those of subdivide {args.reference}")
            for plan in plans:
                if plan != args.reference:
                    print(f"subdivide {plan}",
                          *against_reference(kept / plan, kept / args.reference),
                          sep="\n  ", flush=True)
    finally:
        config.write_text(original)
        shutil.rmtree(kept, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
