"""The `hklflow` command: one subcommand per step (each a module with main(argv))."""
from __future__ import annotations

import importlib
import sys

# subcommand -> module with main(argv); a Snakemake rule of the same name runs it
COMMANDS = {
    "simulate": ("hklflow.simulation.cli", "write a simulated experiment (config, scans table, raw data, truth)"),
    "demo": ("hklflow.demo", "simulate the demo experiment if absent, then run the workflow on it"),
    "calibrate_powder": ("hklflow.steps.calibrate_powder", "refine detector geometry from a calibrant image, or import a PONI"),
    "ingest_scan": ("hklflow.steps.ingest_scan", "build the NeXus file of one scan entry, linking its raw frames"),
    "find_peaks": ("hklflow.steps.find_peaks", "one streamed pass over a scan: frame statistics and 3D Bragg peaks"),
    "index_parent": ("hklflow.steps.index_parent", "index a sample's parent scan from scratch and refine it"),
    "refine_scan": ("hklflow.steps.refine_scan", "refine a sample at one temperature, starting from its parent"),
    "define_grid": ("hklflow.steps.define_grid", "the (H, K, L) grid of a sample, from the config or the cell and Q range"),
    "mask_scan": ("hklflow.steps.mask_scan", "pixel mask and 3D Bragg-peak mask of a scan entry"),
    "transform": ("hklflow.steps.transform", "map frames of a scan entry to (H, K, L) and accumulate them on the grid"),
    "sum_volumes": ("hklflow.steps.sum_volumes", "add volumes (frame chunks of an entry, or entries of a temperature)"),
    "symmetrize": ("hklflow.steps.symmetrize", "symmetrise a merged volume by the Laue group"),
    "temperature_series": ("hklflow.steps.temperature_series", "one slice of a sample's volume at every temperature"),
}


def usage() -> str:
    lines = ["usage: hklflow COMMAND [ARGS...]   (hklflow COMMAND --help for its arguments)", "",
             "commands:"]
    lines += [f"  {name:<18} {doc}" for name, (_, doc) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    name = argv[0].replace("-", "_")
    if name not in COMMANDS:
        print(f"hklflow: unknown command {argv[0]!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    return int(module.main(argv[1:]) or 0)


if __name__ == "__main__":
    sys.exit(main())
