"""The demo's accuracy figures against the transform's rotation sub-steps.

    hklflow demo --dir DEMO
    python bench/sub_steps_accuracy.py DEMO [--plans auto,1,auto_per_block,4,8]

For each plan, sets `reduction.transform.subdivide` in DEMO/config/config.yaml, reduces
the demo again (`hklflow demo --dir DEMO`: Snakemake reruns the transform and what follows
it, nothing else) and runs bench/accuracy.py on it; prints, per plan, the figures of the
volumes that the sub-steps can move: the Bragg peaks' offsets from their nodes, the
satellites' contrast, the unmeasured fraction and the 3D-DeltaPDF's amplitude.  The config
file is put back as it was afterwards (the results are then those of the last plan: run
`hklflow demo --dir DEMO` once more for the configured one).  ~40 s per plan on 2 cores.
"""
from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

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


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("demo", type=Path, help="a demo experiment (hklflow demo --dir DEMO)")
    p.add_argument("--plans", default="auto,1,auto_per_block,4,8",
                   help="subdivide values, comma separated")
    args = p.parse_args(argv)
    config = args.demo / "config" / "config.yaml"
    original = config.read_text()
    results = {}
    try:
        for plan in args.plans.split(","):
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
    finally:
        config.write_text(original)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
