"""Refinement of one sample at one temperature (rule refine_scan), seeded by its parent.

The parent's orientation file is read, never written: cell, U, detector geometry and offset
corrections start from it, and the peaks of this temperature's entries refine them.  A scan
whose peaks do not index from the parent (a phase transition, a wrong space group) fails
with a message saying so rather than writing a bad orientation.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .. import steplog


def refine_from_parent(entries, parent, params, log):
    from ..refinement import Model, refine

    model = Model(parent.crystal(), parent.U, parent.detector, dict(parent.offset_corrections))
    return refine(entries, model, params, log)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hklflow refine_scan", description=__doc__.splitlines()[0])
    from .index_parent import add_orientation_arguments

    add_orientation_arguments(p)
    p.add_argument("--parent", required=True, type=Path, help="the parent's orientation file (read only)")
    return p


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    log = steplog.setup("refine_scan")
    from .. import provenance
    from ..config import ConfigError, load_experiment
    from ..nexus import read_orientation_file, write_orientation_file
    from ..orientation import load_entries, plot_residuals
    from ..refinement import RefinementError
    from .index_parent import refinement_params

    label = f"{args.sample}/{args.temperature}"
    try:
        exp = load_experiment(args.config)
        params = refinement_params(exp.reduction["refinement"])
        parent = read_orientation_file(args.parent)
        entries, _ = load_entries(args.scan_files, args.peaks_files)
        log.info("%s: %d peaks in %d entries, starting from the parent %s", label,
                 sum(len(e.x) for e in entries), len(entries), parent.parent)
        try:
            result = refine_from_parent(entries, parent, params, log)
        except RefinementError as exc:
            raise RefinementError(f"{label} does not refine from its parent {parent.parent}: {exc}") from None
        prov = provenance.provenance("hklflow refine_scan", parameters=params.__dict__,
                                     inputs=[args.parent, *args.scan_files, *args.peaks_files, *args.config])
        write_orientation_file(args.out, sample=args.sample, temperature=args.temperature,
                               parent=parent.parent, result=result, indexing=None, provenance=prov)
        plot_residuals(result, f"{label} (refined from {parent.parent})", args.png)
    except (ConfigError, RefinementError, ValueError, OSError) as exc:
        return steplog.fail(log, exc, (args.out, args.png))
    log.info("%s: rms %.3f px, %.3f frames, %.1f%% indexed, cell %s", label, result.rms_px,
             result.rms_frames, 100 * result.fraction_indexed, result.model.crystal.cell.parameters)
    return 0


if __name__ == "__main__":
    sys.exit(main())
